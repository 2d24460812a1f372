//! Who may talk to the running daemon (issue 12, items 2 and 3): SIP on the IMS listeners
//! only from `ims.trusted_peers` (default: the next hop's addresses), WebSocket handshakes
//! only from pages of `web.allowed_origins` (and the demo page's own origin).
//!
//! Sources other than 127.0.0.1 are other loopback addresses (127.0.0.2, ...): Linux routes
//! all of 127/8 to `lo`, so no namespace is needed and nothing leaves the machine.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::time::Duration;

use estuary_conformance::{Gateway, SipMsg};

/// An OPTIONS from `from` to the daemon's IMS UDP listener; the status of its answer, if
/// one came within 700 ms.
fn options_over_udp(from: &str, gw: SocketAddr) -> Option<u16> {
    let sock = UdpSocket::bind(format!("{from}:0")).expect("bind a loopback source");
    sock.set_read_timeout(Some(Duration::from_millis(700))).unwrap();
    let me = sock.local_addr().unwrap();
    let branch = format!("z9hG4bK{}", estuary_conformance::ws_client::random_token(12));
    let msg = format!(
        "OPTIONS sip:{gw} SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch={branch}\r\nMax-Forwards: 70\r\n\
         From: <sip:probe@core.ims.test>;tag=p1\r\nTo: <sip:{gw}>\r\nCall-ID: {branch}@probe\r\n\
         CSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
    );
    sock.send_to(msg.as_bytes(), gw).unwrap();
    let mut buf = [0u8; 65536];
    let (n, _) = sock.recv_from(&mut buf).ok()?;
    Some(SipMsg::parse(&String::from_utf8_lossy(&buf[..n])).expect("a SIP answer").status())
}

/// A TCP connection from `from` to the IMS listener that sends an OPTIONS: whether any byte
/// came back before the daemon closed it (or 700 ms passed).
async fn options_over_tcp_answered(from: &str, gw: SocketAddr) -> bool {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let sock = tokio::net::TcpSocket::new_v4().unwrap();
    sock.bind(format!("{from}:0").parse().unwrap()).expect("bind a loopback source");
    let mut s = sock.connect(gw).await.expect("the kernel accepts the connection");
    let me = s.local_addr().unwrap();
    let msg = format!(
        "OPTIONS sip:{gw};transport=tcp SIP/2.0\r\nVia: SIP/2.0/TCP {me};branch=z9hG4bKtcpprobe{p}\r\n\
         Max-Forwards: 70\r\nFrom: <sip:probe@core.ims.test>;tag=t1\r\nTo: <sip:{gw}>\r\n\
         Call-ID: tcp-probe-{p}\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n",
        p = me.port()
    );
    let _ = s.write_all(msg.as_bytes()).await;
    let mut buf = [0u8; 4096];
    matches!(tokio::time::timeout(Duration::from_millis(700), s.read(&mut buf)).await, Ok(Ok(n)) if n > 0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ims_side_answers_the_next_hop_and_ignores_everyone_else() {
    // The next hop is 127.0.0.1 (port 9: nothing listens, nothing is sent there here).
    let gw = Gateway::builder().next_hop_udp(9).start().await;
    assert_eq!(gw.metric("estuary_untrusted_ims_messages_total"), Some(0.0));
    assert_eq!(options_over_udp("127.0.0.1", gw.ims_addr), Some(200), "the core is answered");
    assert_eq!(options_over_udp("127.0.0.2", gw.ims_addr), None, "an untrusted source gets nothing");
    assert!(options_over_tcp_answered("127.0.0.1", gw.ims_addr).await, "the core is answered over TCP");
    assert!(!options_over_tcp_answered("127.0.0.3", gw.ims_addr).await, "an untrusted TCP peer gets nothing");
    // A small flood from one untrusted source: counted, logged at most once a second.
    let flood = UdpSocket::bind("127.0.0.2:0").unwrap();
    for i in 0..200 {
        flood.send_to(format!("OPTIONS sip:x SIP/2.0\r\nX: {i}\r\n\r\n").as_bytes(), gw.ims_addr).unwrap();
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while gw.metric("estuary_untrusted_ims_messages_total") < Some(202.0) && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(gw.metric("estuary_untrusted_ims_messages_total"), Some(202.0), "1 + 200 datagrams + 1 connection");
    let log = gw.log();
    let lines = log.matches("outside ims.trusted_peers dropped").count();
    assert!((1..=3).contains(&lines), "rate-limited log, {lines} lines for 202 drops");
    assert!(log.contains("trusted_peers=127.0.0.1"), "the start-up log names the trusted sources");
    assert_eq!(options_over_udp("127.0.0.1", gw.ims_addr), Some(200), "the core is still answered");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_configured_trusted_list_replaces_the_next_hop() {
    let gw = Gateway::builder().next_hop_udp(9).set("ims.trusted_peers", "127.0.0.2, 127.0.1.0/24").start().await;
    assert_eq!(options_over_udp("127.0.0.2", gw.ims_addr), Some(200));
    assert_eq!(options_over_udp("127.0.1.77", gw.ims_addr), Some(200));
    assert_eq!(options_over_udp("127.0.0.1", gw.ims_addr), None, "the list replaces the next hop's address");
    assert_eq!(gw.metric("estuary_untrusted_ims_messages_total"), Some(1.0));
}

/// A WebSocket handshake with `origin` (if any) on `addr`: the HTTP status of the answer.
fn handshake(addr: SocketAddr, origin: Option<&str>) -> u16 {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let origin = origin.map(|o| format!("Origin: {o}\r\n")).unwrap_or_default();
    let req = format!(
        "GET / HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\
         Sec-WebSocket-Protocol: sip\r\n{origin}\r\n"
    );
    s.write_all(req.as_bytes()).unwrap();
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n") && head.len() < 200 && matches!(s.read(&mut b), Ok(1)) {
        head.push(b[0]);
    }
    let line = String::from_utf8_lossy(&head);
    line.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or_else(|| panic!("no HTTP status line: {line:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_origins_outside_the_list_get_403() {
    let gw = Gateway::builder().next_hop_udp(9).set("web.allowed_origins", "https://app.example.net").start().await;
    assert_eq!(handshake(gw.ws_addr, Some("https://app.example.net")), 101);
    assert_eq!(handshake(gw.ws_addr, Some("https://APP.example.net:443")), 101, "normalised as browsers do");
    assert_eq!(handshake(gw.ws_addr, Some("https://evil.example")), 403);
    assert_eq!(handshake(gw.ws_addr, Some("http://app.example.net")), 403, "another scheme is another origin");
    assert_eq!(handshake(gw.ws_addr, Some("null")), 403);
    let own = format!("http://{}", gw.ws_addr);
    assert_eq!(handshake(gw.ws_addr, Some(&own)), 101, "the demo page served here is always allowed");
    assert_eq!(handshake(gw.ws_addr, None), 101, "non-browser clients send no Origin");
    assert_eq!(gw.metric("estuary_ws_origin_refused_total"), Some(3.0));

    // No list: any origin, and no warning on loopback listeners.
    let open = Gateway::builder().next_hop_udp(9).start().await;
    assert_eq!(handshake(open.ws_addr, Some("https://evil.example")), 101);
    assert!(!open.log().contains("web.allowed_origins is empty"), "no warning for loopback listeners");
}

/// A WebSocket with subprotocol sip from `addr`'s loopback default source; `None` when the
/// daemon closes it before or during the upgrade.
async fn sip_websocket(addr: SocketAddr) -> Option<tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>> {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let mut req = format!("ws://{addr}/").into_client_request().unwrap();
    req.headers_mut().insert("Sec-WebSocket-Protocol", "sip".parse().unwrap());
    tokio::time::timeout(Duration::from_secs(3), tokio_tungstenite::connect_async(req)).await.ok()?.ok().map(|(w, _)| w)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_source_is_held_to_its_request_rate_and_connection_share() {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    let gw = Gateway::builder()
        .next_hop_udp(9)
        .set("limits.requests_per_second_per_ip", "2")
        .set("limits.request_burst_per_ip", "5")
        .set("limits.ws_connections_per_ip", "3")
        .set("limits.ws_handshakes_per_ip", "3")
        .start()
        .await;
    let mut ws = sip_websocket(gw.ws_addr).await.expect("first connection");
    // Ten OPTIONS at once: the burst of five is served, the rest get 503 with Retry-After.
    for i in 0..10 {
        let msg = format!(
            "OPTIONS sip:{gw} SIP/2.0\r\nVia: SIP/2.0/WS probe.invalid;branch=z9hG4bKrate{i}\r\nMax-Forwards: 70\r\n\
             From: <sip:alice@ims.test>;tag=r{i}\r\nTo: <sip:{gw}>\r\nCall-ID: rate-{i}\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n",
            gw = gw.ws_addr
        );
        ws.send(Message::text(msg)).await.unwrap();
    }
    let mut statuses = Vec::new();
    while statuses.len() < 10 {
        let Ok(Some(Ok(Message::Text(t)))) = tokio::time::timeout(Duration::from_secs(5), ws.next()).await else { break };
        let m = SipMsg::parse_frame(&t).expect("SIP");
        if m.status() == 503 {
            assert_eq!(m.header("Retry-After"), Some("1"), "{m}");
        }
        statuses.push(m.status());
    }
    let throttled = statuses.iter().filter(|s| **s == 503).count();
    assert_eq!((statuses.len(), throttled), (10, 5), "five served, five throttled: {statuses:?}");
    assert_eq!(gw.metric("estuary_requests_throttled_total"), Some(5.0));
    // Connections: three per source; the fourth is closed at accept and counted.
    let _b = sip_websocket(gw.ws_addr).await.expect("second");
    let _c = sip_websocket(gw.ws_addr).await.expect("third");
    assert!(sip_websocket(gw.ws_addr).await.is_none(), "a fourth connection from one source is refused");
    assert_eq!(gw.metric("estuary_ws_refused_total"), Some(1.0));
    // A second later the bucket has refilled by the rate: requests are served again.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let again = format!(
        "OPTIONS sip:{a} SIP/2.0\r\nVia: SIP/2.0/WS probe.invalid;branch=z9hG4bKrateagain\r\nMax-Forwards: 70\r\n\
         From: <sip:alice@ims.test>;tag=ra\r\nTo: <sip:{a}>\r\nCall-ID: rate-again\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n",
        a = gw.ws_addr
    );
    ws.send(Message::text(again)).await.unwrap();
    let Ok(Some(Ok(Message::Text(t)))) = tokio::time::timeout(Duration::from_secs(5), ws.next()).await else { panic!("no answer") };
    assert_ne!(SipMsg::parse_frame(&t).unwrap().status(), 503, "refilled");
    drop(_c);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(sip_websocket(gw.ws_addr).await.is_some(), "a closed connection gives its place back");
}
