//! A call survives the node carrying it. Two Estuary nodes share state in Redis; browsers
//! reach them through HAProxy (TCP mode, WSS passed through, /healthz checks, redispatch),
//! the core through Kamailio's dispatcher (etc/cluster/), in front of a Kamailio IMS core.
//! The core calls the demo page (JsSIP, headless Chromium) and sipp echoes its audio. The
//! node carrying the call is killed with SIGKILL. JsSIP reconnects through HAProxy with its
//! default recovery (first retry 2 s after the close) to the other node and refreshes its
//! registration; that node takes the registration and the call over from Redis and
//! re-INVITEs the browser (ICE restart, its own certificate) and then the core's leg (its own
//! RTP port). Media flows both ways again (getStats), sipp's dialog took one re-INVITE and no
//! new INVITE, the page's hang-up reaches sipp as a BYE, and the survivor writes the record.
//!
//! Needs chromium, haproxy, kamailio, redis-server and sipp (make deps), and
//! `cargo build -p estuary`.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use estuary_conformance::browser::{Browser, Netns};
use estuary_conformance::demo_page::*;
use estuary_conformance::gateway::Gateway;
use estuary_conformance::haproxy::Haproxy;
use estuary_conformance::kamailio::{Dispatcher, Kamailio};
use estuary_conformance::net::{free_tcp_port, free_udp_port, in_loopback_netns};
use estuary_conformance::redis::Redis;
use estuary_conformance::sipp::Sipp;
use serde_json::Value;

const TEST: &str = "a_browser_call_survives_the_node_carrying_it";

async fn node(name: &str, core: SocketAddr, front: SocketAddr, redis: &str, records: &std::path::Path) -> Gateway {
    Gateway::builder()
        .next_hop_udp(core.port())
        .set("sip.user_agent", &format!("Estuary {name}"))
        .set("cluster.enabled", "true")
        .set("registrar.on_ws_close", "keep")
        .set("cluster.node_id", name)
        .set("cluster.redis", redis)
        .set("cluster.sip_front", &front.to_string())
        .set("records.dir", &records.to_string_lossy())
        .start()
        .await
}

fn haproxy_config(front: SocketAddr, nodes: &[&Gateway]) -> String {
    let mut cfg = format!(
        "global\n  maxconn 200\n\
         defaults\n  mode tcp\n  timeout connect 1s\n  timeout client 120s\n  timeout server 120s\n  timeout tunnel 120s\n  retries 2\n  option redispatch\n\
         frontend web\n  bind {front}\n  default_backend nodes\n\
         backend nodes\n  balance leastconn\n  option httpchk GET /healthz\n"
    );
    for (i, n) in nodes.iter().enumerate() {
        cfg.push_str(&format!("  server n{i} {} check port {} inter 300 fall 1 rise 1\n", n.wss_addr, n.admin_addr.port()));
    }
    cfg
}

/// Chromium's audio RTP streams of `kind` ("inbound-rtp", "outbound-rtp"): (SSRC, packets,
/// total audio energy). The move brings new SSRCs, which getStats shows as new streams.
fn streams(stats: &Value, kind: &str) -> Vec<(u64, f64, f64)> {
    stats["rtp"].as_array().map_or(Vec::new(), |rtp| {
        rtp.iter()
            .filter(|r| r["type"] == kind && r["kind"] == "audio")
            .map(|r| (r["ssrc"].as_u64().unwrap_or(0), r["packets"].as_f64().unwrap_or(0.0), r["totalAudioEnergy"].as_f64().unwrap_or(0.0)))
            .collect()
    })
}

/// Packets (and energy) of `kind` counted since `before`, stream by stream (a stream new
/// since then counts from zero).
fn since(before: &[(u64, f64, f64)], now: &[(u64, f64, f64)]) -> (f64, f64) {
    now.iter().fold((0.0, 0.0), |(p, e), (ssrc, packets, energy)| {
        let (p0, e0) = before.iter().find(|(s, ..)| s == ssrc).map_or((0.0, 0.0), |(_, p, e)| (*p, *e));
        (p + (packets - p0).max(0.0), e + (energy - e0).max(0.0))
    })
}

fn stats(b: &mut Browser) -> Value {
    tokio::task::block_in_place(|| b.page_stats(PAGE)).unwrap_or(Value::Null)
}

#[test]
fn a_browser_call_survives_the_node_carrying_it() {
    Browser::require();
    Haproxy::require();
    Redis::require();
    Kamailio::require();
    if !in_loopback_netns(TEST) {
        return;
    }
    estuary_conformance::browser_runtime().block_on(async {
        let redis = Redis::start();
        let core = Kamailio::start(TEST);
        let front = SocketAddr::from(([127, 0, 0, 1], free_udp_port()));
        let records = [estuary_conformance::records::temp_dir("failover-a"), estuary_conformance::records::temp_dir("failover-b")];
        let mut nodes = vec![
            node("node-a", core.udp, front, &redis.url(), &records[0]).await,
            node("node-b", core.udp, front, &redis.url(), &records[1]).await,
        ];
        let dispatcher = Dispatcher::start_at(TEST, front, &[nodes[0].ims_addr, nodes[1].ims_addr]);
        let web = SocketAddr::from(([127, 0, 0, 1], free_tcp_port()));
        let _haproxy = Haproxy::start(TEST, &haproxy_config(web, &[&nodes[0], &nodes[1]]), &[web]);
        let logs = |nodes: &[Gateway]| {
            let mut s = format!("--- dispatcher\n{}\n--- core\n{}", dispatcher.log(), core.log());
            for n in nodes {
                s.push_str(&format!("\n--- node\n{}", n.log_tail(80)));
            }
            s
        };

        let mut b = tokio::task::block_in_place(|| Browser::start_in(Netns::Inherit));
        let state = register_tab_at(web, &mut b, PAGE, "alice", "secret");
        assert_eq!(state.as_deref(), Ok("registered"), "{}\n{}", page_log(&mut b), logs(&nodes));

        // The core calls alice; the page answers; sipp echoes.
        let media_port = free_udp_port();
        let sipp = Sipp::uac("uac_call_browser_echo_reanchored.xml", free_udp_port(), core.udp)
            .key("target", "sip:alice@ims.test")
            .arg("-mp")
            .arg(&media_port.to_string())
            .arg("-rtp_echo")
            .timeout(Duration::from_secs(90))
            .start()
            .await;
        assert_eq!(wait_call(&mut b, &["ringing"]).as_deref(), Ok("ringing"), "{}\n{}", page_log(&mut b), logs(&nodes));
        tokio::task::block_in_place(|| b.page_click(PAGE, "#answer")).unwrap();
        let state = wait_call(&mut b, &["confirmed", "failed", "ended"]);
        assert_eq!(state.as_deref(), Ok("confirmed"), "{}\n{}", page_log(&mut b), logs(&nodes));
        let before = media_stats(&mut b).await;
        let (rx, tx) = (since(&[], &streams(&before, "inbound-rtp")).0, since(&[], &streams(&before, "outbound-rtp")).0);
        assert!(rx >= 100.0 && tx >= 100.0, "media both ways before the kill: {before:#}\n{}", logs(&nodes));

        // Kill the node carrying the call.
        let carrier = nodes.iter().position(|n| n.metric("estuary_calls_active") == Some(1.0)).expect("one node carries the call");
        let mut dead = nodes.remove(carrier);
        dead.signal("KILL");
        let killed = Instant::now();
        assert!(dead.wait_exit(Duration::from_secs(5)).await.is_some());
        let survivor = &nodes[0];
        // What Chromium had received once the dead node's last packets were in.
        tokio::time::sleep(Duration::from_millis(200)).await;
        let at_kill = stats(&mut b);
        let (rx0, tx0) = (streams(&at_kill, "inbound-rtp"), streams(&at_kill, "outbound-rtp"));

        // Media resumes both ways through the survivor: Chromium receives again, and what it
        // receives is sipp's echo of what it sends (energy), so its sending reaches sipp too.
        let mut resumed = None;
        while killed.elapsed() < Duration::from_secs(20) {
            tokio::time::sleep(Duration::from_millis(100)).await;
            let now = stats(&mut b);
            let ((rx, energy), (tx, _)) = (since(&rx0, &streams(&now, "inbound-rtp")), since(&tx0, &streams(&now, "outbound-rtp")));
            if std::env::var("FAILOVER_TRACE").is_ok() {
                println!("+{:.1}s received {rx} (energy {energy:.3}) sent {tx} since the kill", killed.elapsed().as_secs_f64());
            }
            if rx >= 25.0 && energy > 0.0 && tx >= 25.0 {
                resumed = Some(killed.elapsed());
                break;
            }
        }
        let resumed = resumed.unwrap_or_else(|| panic!("media did not resume: {:#}\n--- page\n{}\n{}", stats(&mut b), page_log(&mut b), logs(&nodes)));
        if std::env::var("FAILOVER_TRACE").is_ok() {
            println!("killed at +{:?} before now\n{}\n{}", killed.elapsed(), page_log(&mut b), survivor.log_tail(60));
        }
        println!("figures: media both ways again {:.1} s after the kill (25 packets of echoed audio received since)", resumed.as_secs_f64());
        assert_eq!(survivor.metric("estuary_cluster_calls_adopted_total"), Some(1.0));
        assert_eq!(survivor.metric("estuary_cluster_registrations_adopted_total"), Some(1.0));
        // One copy of the call in Redis, the survivor's (the dead node's went with the move).
        let survivor_id = if carrier == 0 { "node-b" } else { "node-a" };
        let copies = || redis.cli(&["--scan", "--pattern", "estuary:*:call:*"]);
        let deadline = Instant::now() + Duration::from_secs(5);
        while !(copies().trim().lines().count() == 1 && copies().contains(survivor_id)) {
            assert!(Instant::now() < deadline, "one copy, the survivor's: {}", copies());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }

        // The page hangs up through the survivor; sipp's dialog saw one re-INVITE, no new call.
        hang_up(&mut b);
        let run = sipp.wait().await;
        assert!(run.succeeded(), "sipp: {}\n{}", run.describe(), logs(&nodes));
        assert_eq!(run.received_requests("BYE").len(), 1, "{}", run.describe());
        let reinvites = run.received_requests("INVITE");
        assert_eq!(reinvites.len(), 1, "one re-INVITE: {}", run.describe());
        let survivor_records = if carrier == 0 { &records[1] } else { &records[0] };
        let r = tokio::task::block_in_place(|| estuary_conformance::records::wait_records(survivor_records, 1)).remove(0);
        assert_eq!(r["reason"].as_str(), Some("bye_from_web"), "the survivor writes the record: {r}");
        assert!(copies().trim().is_empty(), "the call's copy goes with its end: {}", copies());
        for dir in &records {
            let _ = std::fs::remove_dir_all(dir);
        }
    });
}
