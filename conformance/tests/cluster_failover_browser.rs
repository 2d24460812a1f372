//! Browsers in a cluster. Two tabs register through HAProxy and land on different nodes;
//! each calls the other and sipp's echo. And a call survives the node carrying it. Two Estuary nodes share state in Redis; browsers
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
const TWO_TABS: &str = "two_tabs_on_different_nodes_call_each_other_and_the_echo";

async fn node(name: &str, core: SocketAddr, front: SocketAddr, redis: &str, records: &std::path::Path) -> Gateway {
    estuary_conformance::cluster::node(name, core, front, redis).set("records.dir", &records.to_string_lossy()).start().await
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

/// Two nodes, with Redis, a Kamailio core, the dispatcher as their SIP front and HAProxy in
/// front of their WSS listeners.
struct Cluster {
    redis: Redis,
    core: Kamailio,
    dispatcher: Dispatcher,
    nodes: Vec<Gateway>,
    _haproxy: Haproxy,
    /// HAProxy's front: the page's origin, and so its WebSocket's.
    web: SocketAddr,
    records: [std::path::PathBuf; 2],
}

impl Cluster {
    async fn start(test: &str) -> Cluster {
        let redis = Redis::start();
        let core = Kamailio::start(test);
        let front = SocketAddr::from(([127, 0, 0, 1], free_udp_port()));
        let records = [estuary_conformance::records::temp_dir(&format!("{test}-a")), estuary_conformance::records::temp_dir(&format!("{test}-b"))];
        let nodes = vec![
            node("node-a", core.udp, front, &redis.url(), &records[0]).await,
            node("node-b", core.udp, front, &redis.url(), &records[1]).await,
        ];
        let dispatcher = Dispatcher::start_at(test, front, &[nodes[0].ims_addr, nodes[1].ims_addr]);
        let web = SocketAddr::from(([127, 0, 0, 1], free_tcp_port()));
        let haproxy = Haproxy::start(test, &haproxy_config(web, &[&nodes[0], &nodes[1]]), &[web]);
        Cluster { redis, core, dispatcher, nodes, _haproxy: haproxy, web, records }
    }

    /// Every log a failure needs.
    fn logs(&self) -> String {
        let mut s = format!("--- dispatcher\n{}\n--- core\n{}", self.dispatcher.log(), self.core.log());
        for n in &self.nodes {
            s.push_str(&format!("\n--- node\n{}", n.log_tail(80)));
        }
        s
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for dir in &self.records {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
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
        let mut c = Cluster::start(TEST).await;
        let web = c.web;
        let mut b = tokio::task::block_in_place(|| Browser::start_in(Netns::Inherit));
        let state = register_tab_at(web, &mut b, PAGE, "alice", "secret");
        assert_eq!(state.as_deref(), Ok("registered"), "{}\n{}", page_log(&mut b), c.logs());

        // The core calls alice; the page answers; sipp echoes.
        let media_port = free_udp_port();
        let sipp = Sipp::uac("uac_call_browser_echo_reanchored.xml", free_udp_port(), c.core.udp)
            .key("target", "sip:alice@ims.test")
            .arg("-mp")
            .arg(&media_port.to_string())
            .arg("-rtp_echo")
            .timeout(Duration::from_secs(90))
            .start()
            .await;
        assert_eq!(wait_call(&mut b, &["ringing"]).as_deref(), Ok("ringing"), "{}\n{}", page_log(&mut b), c.logs());
        tokio::task::block_in_place(|| b.page_click(PAGE, "#answer")).unwrap();
        let state = wait_call(&mut b, &["confirmed", "failed", "ended"]);
        assert_eq!(state.as_deref(), Ok("confirmed"), "{}\n{}", page_log(&mut b), c.logs());
        let before = media_stats(&mut b).await;
        let (rx, tx) = (since(&[], &streams(&before, "inbound-rtp")).0, since(&[], &streams(&before, "outbound-rtp")).0);
        assert!(rx >= 100.0 && tx >= 100.0, "media both ways before the kill: {before:#}\n{}", c.logs());

        // Kill the node carrying the call.
        let carrier = c.nodes.iter().position(|n| n.metric("estuary_calls_active") == Some(1.0)).expect("one node carries the call");
        let mut dead = c.nodes.remove(carrier);
        dead.signal("KILL");
        let killed = Instant::now();
        assert!(dead.wait_exit(Duration::from_secs(5)).await.is_some());
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
        let resumed = resumed.unwrap_or_else(|| panic!("media did not resume: {:#}\n--- page\n{}\n{}", stats(&mut b), page_log(&mut b), c.logs()));
        if std::env::var("FAILOVER_TRACE").is_ok() {
            println!("killed at +{:?} before now\n{}\n{}", killed.elapsed(), page_log(&mut b), c.nodes[0].log_tail(60));
        }
        println!("figures: media both ways again {:.1} s after the kill (25 packets of echoed audio received since)", resumed.as_secs_f64());
        let survivor = &c.nodes[0];
        assert_eq!(survivor.metric("estuary_cluster_calls_adopted_total"), Some(1.0));
        assert_eq!(survivor.metric("estuary_cluster_registrations_adopted_total"), Some(1.0));
        // One copy of the call in Redis, the survivor's (the dead node's went with the move).
        let survivor_id = if carrier == 0 { "node-b" } else { "node-a" };
        let copies = || c.redis.cli(&["--scan", "--pattern", "estuary:*:call:*"]);
        let deadline = Instant::now() + Duration::from_secs(5);
        while !(copies().trim().lines().count() == 1 && copies().contains(survivor_id)) {
            assert!(Instant::now() < deadline, "one copy, the survivor's: {}", copies());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }

        // The page hangs up through the survivor; sipp's dialog saw one re-INVITE, no new call.
        hang_up(&mut b);
        let run = sipp.wait().await;
        assert!(run.succeeded(), "sipp: {}\n{}", run.describe(), c.logs());
        assert_eq!(run.received_requests("BYE").len(), 1, "{}", run.describe());
        let reinvites = run.received_requests("INVITE");
        assert_eq!(reinvites.len(), 1, "one re-INVITE: {}", run.describe());
        let survivor_records = if carrier == 0 { &c.records[1] } else { &c.records[0] };
        let r = tokio::task::block_in_place(|| estuary_conformance::records::wait_records(survivor_records, 1)).remove(0);
        assert_eq!(r["reason"].as_str(), Some("bye_from_web"), "the survivor writes the record: {r}");
        assert!(copies().trim().is_empty(), "the call's copy goes with its end: {}", copies());
    });
}

/// Tab `page`'s call state, once it is one of `states`.
fn call_state(b: &mut Browser, page: &str, states: &[&str]) -> Result<String, String> {
    tokio::task::block_in_place(|| b.page_wait(page, "#call-state", "data-state", states, WAIT))
}

/// Tab `caller` dials `target`; tab `callee` (when given) answers. Then both tabs' audio must
/// flow both ways with energy (each hears the other's fake microphone, or the echo of its
/// own), and the caller hangs up.
async fn call_and_hear(b: &mut Browser, c: &Cluster, caller: &str, callee: Option<&str>, target: &str) {
    tokio::task::block_in_place(|| {
        b.page_fill(caller, "#target", target).unwrap();
        b.page_click(caller, "#dial").unwrap();
    });
    if let Some(callee) = callee {
        assert_eq!(call_state(b, callee, &["ringing"]).as_deref(), Ok("ringing"), "{target}\n{}", c.logs());
        tokio::task::block_in_place(|| b.page_click(callee, "#answer")).unwrap();
    }
    assert_eq!(call_state(b, caller, &["confirmed", "failed", "ended"]).as_deref(), Ok("confirmed"), "{caller} -> {target}\n{}", c.logs());
    for page in [Some(caller), callee].into_iter().flatten() {
        let mut heard = (0.0, 0.0, 0.0);
        for _ in 0..40 {
            tokio::time::sleep(Duration::from_millis(250)).await;
            let stats = tokio::task::block_in_place(|| b.page_stats(page)).unwrap_or(Value::Null);
            let ((rx, energy), (tx, _)) = (since(&[], &streams(&stats, "inbound-rtp")), since(&[], &streams(&stats, "outbound-rtp")));
            heard = (rx, energy, tx);
            if rx >= 100.0 && tx >= 100.0 && energy > 0.0 {
                break;
            }
        }
        assert!(heard.0 >= 100.0 && heard.2 >= 100.0 && heard.1 > 0.0, "{page} in {caller} -> {target}: received {}, energy {}, sent {}\n{}", heard.0, heard.1, heard.2, c.logs());
    }
    tokio::task::block_in_place(|| b.page_click(caller, "#hangup")).unwrap();
    for page in [Some(caller), callee].into_iter().flatten() {
        assert_eq!(call_state(b, page, &["ended", "failed"]).as_deref(), Ok("ended"), "{page}\n{}", c.logs());
    }
}

#[test]
fn two_tabs_on_different_nodes_call_each_other_and_the_echo() {
    Browser::require();
    Haproxy::require();
    Redis::require();
    Kamailio::require();
    if !in_loopback_netns(TWO_TABS) {
        return;
    }
    estuary_conformance::browser_runtime().block_on(async {
        let c = Cluster::start(TWO_TABS).await;
        let mut b = tokio::task::block_in_place(|| Browser::start_in(Netns::Inherit));
        for user in ["alice", "bob"] {
            let state = register_tab_at(c.web, &mut b, user, user, "secret");
            assert_eq!(state.as_deref(), Ok("registered"), "{user}\n{}", c.logs());
        }
        // HAProxy (leastconn) put the two WebSockets on different nodes.
        let per_node: Vec<Option<f64>> = c.nodes.iter().map(|n| n.metric("estuary_registrations_active")).collect();
        assert_eq!(per_node, [Some(1.0), Some(1.0)], "one browser on each node\n{}", c.logs());

        // Each calls the other: the core finds the callee by its Path, the front, and the
        // dispatcher's pick proxies to the callee's node when it is not that node.
        call_and_hear(&mut b, &c, "alice", Some("bob"), "sip:bob@ims.test").await;
        call_and_hear(&mut b, &c, "bob", Some("alice"), "sip:alice@ims.test").await;

        // And sipp's echo, a UE of the core, from each.
        let echo_port = free_udp_port();
        c.core.register_ue("echo", echo_port);
        let sipp = Sipp::uas("uas_answer_echo.xml", echo_port)
            .arg("-mp")
            .arg(&free_udp_port().to_string())
            .arg("-rtp_echo")
            .calls(2)
            .timeout(Duration::from_secs(60))
            .start()
            .await;
        call_and_hear(&mut b, &c, "alice", None, "sip:echo@ims.test").await;
        call_and_hear(&mut b, &c, "bob", None, "sip:echo@ims.test").await;
        let run = sipp.wait().await;
        assert!(run.succeeded(), "{}", run.describe());
        let proxied: f64 = c.nodes.iter().filter_map(|n| n.metric("estuary_cluster_proxied_total")).sum();
        println!("figures: two tabs on two nodes; {proxied} of the core's INVITEs to them proxied between nodes");
    });
}
