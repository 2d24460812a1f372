//! Browsers behind a real HAProxy: with `web.trusted_proxies`, the daemon takes the browser's
//! address from the PROXY protocol v2 header (TCP mode, as for WSS passed through) or from
//! X-Forwarded-For (HTTP mode), so per-source limits and everything else keyed on the
//! browser see the browser, not the proxy. From anyone else a PROXY header is refused.
//!
//! Needs haproxy (make deps) and `cargo build -p estuary`: a missing tool fails the test.

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::time::Duration;

use estuary_conformance::gateway::Gateway;
use estuary_conformance::haproxy::Haproxy;
use estuary_conformance::net::free_tcp_port;
use estuary_conformance::ws_client::WsSipClient;

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// HAProxy's addresses toward the daemon, one per front, each a trusted proxy.
const TCP_PROXY: &str = "127.0.0.5";
const HTTP_PROXY: &str = "127.0.0.6";

fn haproxy_config(tcp_front: SocketAddr, http_front: SocketAddr, gw: SocketAddr) -> String {
    format!(
        "global\n  maxconn 200\n\
         defaults\n  timeout connect 2s\n  timeout client 30s\n  timeout server 30s\n  timeout tunnel 60s\n\
         frontend tcp_front\n  mode tcp\n  bind {tcp_front}\n  default_backend gw_tcp\n\
         backend gw_tcp\n  mode tcp\n  server gw {gw} source {TCP_PROXY} send-proxy-v2\n\
         frontend http_front\n  mode http\n  bind {http_front}\n  default_backend gw_http\n\
         backend gw_http\n  mode http\n  option forwardfor\n  server gw {gw} source {HTTP_PROXY}\n"
    )
}

/// The daemon's "WebSocket open" debug lines.
fn opened(gw: &Gateway) -> Vec<String> {
    gw.log().lines().filter(|l| l.contains("WebSocket open")).map(str::to_owned).collect()
}

async fn wait_opened(gw: &Gateway, n: usize) -> Vec<String> {
    for _ in 0..250 {
        let lines = opened(gw);
        if lines.len() >= n {
            return lines;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("fewer than {n} WebSocket opens in the log:\n{}", gw.log_tail(30));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn behind_haproxy_the_daemon_sees_the_browser_by_proxy_v2_and_x_forwarded_for() {
    Haproxy::require();
    let gw = Gateway::builder()
        .set("web.trusted_proxies", &format!("{TCP_PROXY},{HTTP_PROXY}"))
        .set("limits.ws_connections_per_ip", "1")
        .set("limits.ws_handshakes_per_ip", "1")
        .start()
        .await;
    let tcp_front: SocketAddr = format!("127.0.0.1:{}", free_tcp_port()).parse().unwrap();
    let http_front: SocketAddr = format!("127.0.0.1:{}", free_tcp_port()).parse().unwrap();
    let _haproxy = Haproxy::start("edge_proxies", &haproxy_config(tcp_front, http_front, gw.ws_addr), &[tcp_front, http_front]);

    // TCP mode, PROXY v2: the daemon names the browser by its own address and port.
    let (_a, a_addr) = WsSipClient::connect_from(ip("127.0.0.21"), tcp_front, "alice", "ims.test", "x")
        .await
        .unwrap_or_else(|e| panic!("through HAProxy (TCP, PROXY v2): {e}\n{}", gw.log_tail(30)));
    let lines = wait_opened(&gw, 1).await;
    assert!(lines[0].contains(&format!("remote={a_addr}")), "the browser {a_addr}, not the proxy {TCP_PROXY}: {}", lines[0]);

    // The per-source limit (1) counts browsers, not the proxy: a second browser gets in, a
    // second connection of the first does not.
    let (_b, b_addr) = WsSipClient::connect_from(ip("127.0.0.22"), tcp_front, "bob", "ims.test", "x")
        .await
        .unwrap_or_else(|e| panic!("a second browser behind the same proxy: {e}\n{}", gw.log_tail(30)));
    let lines = wait_opened(&gw, 2).await;
    assert!(lines[1].contains(&format!("remote={b_addr}")), "{}", lines[1]);
    let again = WsSipClient::connect_from(ip("127.0.0.21"), tcp_front, "alice", "ims.test", "x").await;
    assert!(again.is_err(), "a second connection from 127.0.0.21 is over its share");
    let refused = |gw: &Gateway, n: usize| gw.log().matches("per-source WebSocket limit reached (behind a proxy)").count() >= n;
    assert!(refused(&gw, 1), "refused by the per-source limit, not anything else:\n{}", gw.log_tail(20));

    // HTTP mode, X-Forwarded-For: the browser's address (its port is not forwarded).
    let (_c, c_addr) = WsSipClient::connect_from(ip("127.0.0.23"), http_front, "carol", "ims.test", "x")
        .await
        .unwrap_or_else(|e| panic!("through HAProxy (HTTP, X-Forwarded-For): {e}\n{}", gw.log_tail(30)));
    assert_eq!(c_addr.ip(), ip("127.0.0.23"));
    let lines = wait_opened(&gw, 3).await;
    assert!(lines[2].contains("remote=127.0.0.23:0"), "the browser named by X-Forwarded-For: {}", lines[2]);
    let again = WsSipClient::connect_from(ip("127.0.0.23"), http_front, "carol", "ims.test", "x").await;
    assert!(again.is_err(), "a second connection from 127.0.0.23 (by X-Forwarded-For) is over its share");
    assert!(refused(&gw, 2), "refused by the per-source limit:\n{}", gw.log_tail(20));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proxy_header_from_an_untrusted_source_is_not_believed() {
    let gw = Gateway::builder().start().await;
    // A PROXY v1 line claiming to relay 192.0.2.1, sent straight to the daemon: it is the
    // client's own bytes, not an HTTP request, so the daemon answers 400 and closes.
    let mut s = TcpStream::connect(gw.ws_addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(b"PROXY TCP4 192.0.2.1 127.0.0.1 5555 80\r\nGET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n\r\n").unwrap();
    let mut answer = String::new();
    let _ = s.read_to_string(&mut answer);
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer:?}");
    assert!(!gw.log().contains("192.0.2.1"), "the claimed address is used nowhere");
}

#[test]
fn the_shipped_haproxy_configuration_is_valid() {
    Haproxy::require();
    let cfg = include_str!("../../etc/cluster/haproxy.cfg")
        .replace("FRONT_WSS", "127.0.0.1:18443")
        .replace("NODE1_WSS", "127.0.0.11:8443")
        .replace("NODE1_ADMIN_IP", "127.0.0.11")
        .replace("NODE1_ADMIN_PORT", "9090")
        .replace("NODE2_WSS", "127.0.0.12:8443")
        .replace("NODE2_ADMIN_IP", "127.0.0.12")
        .replace("NODE2_ADMIN_PORT", "9090");
    let dir = std::env::temp_dir().join(format!("estuary-haproxy-shipped-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("haproxy.cfg");
    std::fs::write(&path, cfg).unwrap();
    let out = std::process::Command::new("haproxy").arg("-c").arg("-f").arg(&path).output().expect("haproxy -c runs");
    let _ = std::fs::remove_dir_all(&dir);
    assert!(out.status.success(), "etc/cluster/haproxy.cfg: {}", String::from_utf8_lossy(&out.stderr));
}
