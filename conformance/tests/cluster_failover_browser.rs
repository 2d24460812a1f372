//! Browsers in a cluster. Two tabs register through HAProxy and land on different nodes;
//! each calls the other and sipp's echo. And a call survives the node carrying it, whether
//! that node is killed, drained for an upgrade, or taken out of HAProxy while it lives on.
//! Two Estuary nodes share state in Redis; browsers
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
//! Drained (SIGTERM, `admin.drain_timeout_s = 1`): the call outlives the drain, so the node
//! hands it over to the cluster as it stops (no BYE, its copy marked for any node), leaves
//! Redis and closes its WebSockets; the browser comes back at the other node as above. There
//! the core's side hangs up: sipp's BYE goes to the target the re-INVITE refreshed, and the
//! page's call ends.
//! Moved: the operator puts the node in maintenance in HAProxy and cuts its sessions; the
//! node lives on, keeping the call for its browser (`registrar.reconnect_grace_s`) until the
//! other node, which the browser reached, asks for it over Redis: it hands the call over and
//! the other node takes it.
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
const DRAINED: &str = "a_browser_call_survives_a_drain_of_the_node_carrying_it";
const MOVED: &str = "a_browser_call_follows_its_browser_moved_to_another_live_node";
const TWO_TABS: &str = "two_tabs_on_different_nodes_call_each_other_and_the_echo";

async fn node(name: &str, core: SocketAddr, front: SocketAddr, redis: &str, records: &std::path::Path) -> Gateway {
    estuary_conformance::cluster::node(name, core, front, redis)
        .set("records.dir", &records.to_string_lossy())
        .set("registrar.reconnect_grace_s", "30")
        .set("admin.drain_timeout_s", "1")
        .start()
        .await
}

fn haproxy_config(front: SocketAddr, nodes: &[&Gateway]) -> String {
    let mut cfg = format!(
        "global\n  maxconn 200\n  stats socket {{admin_socket}} level admin\n\
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
    haproxy: Haproxy,
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
        Cluster { redis, core, dispatcher, nodes, haproxy, web, records }
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

/// How the node carrying the call leaves it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Leave {
    /// SIGKILL.
    Killed,
    /// SIGTERM: a drain that runs out (1 s) and hands the call over.
    Drained,
    /// Out of HAProxy (maintenance, its sessions cut) while it lives on.
    Moved,
}

#[test]
fn a_browser_call_survives_the_node_carrying_it() {
    survives(TEST, Leave::Killed);
}

#[test]
fn a_browser_call_survives_a_drain_of_the_node_carrying_it() {
    survives(DRAINED, Leave::Drained);
}

#[test]
fn a_browser_call_follows_its_browser_moved_to_another_live_node() {
    survives(MOVED, Leave::Moved);
}

fn survives(test: &str, leave: Leave) {
    Browser::require();
    Haproxy::require();
    Redis::require();
    Kamailio::require();
    if !in_loopback_netns(test) {
        return;
    }
    estuary_conformance::browser_runtime().block_on(async {
        let mut c = Cluster::start(test).await;
        let web = c.web;
        let mut b = tokio::task::block_in_place(|| Browser::start_in(Netns::Inherit));
        let state = register_tab_at(web, &mut b, PAGE, "alice", "secret");
        assert_eq!(state.as_deref(), Ok("registered"), "{}\n{}", page_log(&mut b), c.logs());

        // The core calls alice; the page answers; sipp echoes.
        let media_port = free_udp_port();
        // After a drain the core's side hangs up (to the target the re-INVITE refreshed); the
        // page does otherwise: BYE from either side.
        let scenario = if leave == Leave::Drained { "uac_call_browser_echo_reanchored_hangs_up.xml" } else { "uac_call_browser_echo_reanchored.xml" };
        let sipp = Sipp::uac(scenario, free_udp_port(), c.core.udp)
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
        let answered = Instant::now();
        let before = media_stats(&mut b).await;
        let (rx, tx) = (since(&[], &streams(&before, "inbound-rtp")).0, since(&[], &streams(&before, "outbound-rtp")).0);
        assert!(rx >= 100.0 && tx >= 100.0, "media both ways before the node left: {before:#}\n{}", c.logs());

        // The node carrying the call leaves it.
        let carrier = c.nodes.iter().position(|n| n.metric("estuary_calls_active") == Some(1.0)).expect("one node carries the call");
        let survivor = 1 - carrier;
        let (carrier_id, survivor_id) = if carrier == 0 { ("node-a", "node-b") } else { ("node-b", "node-a") };
        let event = Instant::now();
        match leave {
            Leave::Killed => {
                c.nodes[carrier].signal("KILL");
                assert!(c.nodes[carrier].wait_exit(Duration::from_secs(5)).await.is_some());
            }
            Leave::Drained => {
                c.nodes[carrier].signal("TERM");
                let status = c.nodes[carrier].wait_exit(Duration::from_secs(10)).await;
                assert!(status.is_some_and(|s| s.success()), "the drained node exits 0 once its call is handed over: {status:?}\n{}", c.logs());
                assert!(c.nodes[carrier].log().contains("handing the answered calls over"), "{}", c.nodes[carrier].log_tail(40));
            }
            Leave::Moved => {
                let server = format!("nodes/n{carrier}");
                let answer = c.haproxy.command(&format!("set server {server} state maint"));
                assert!(answer.trim().is_empty(), "haproxy: {answer}");
                c.haproxy.command(&format!("shutdown sessions server {server}"));
                // The carrier keeps the call (and its media) until the other node asks for it.
                let deadline = Instant::now() + Duration::from_secs(15);
                while c.nodes[carrier].metric("estuary_cluster_calls_handed_over_total") != Some(1.0) {
                    assert!(Instant::now() < deadline, "the live node did not hand the call over\n{}\n{}", page_log(&mut b), c.logs());
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
        let left = event.elapsed();
        // What Chromium had received once the carrier's last packets were in.
        tokio::time::sleep(Duration::from_millis(200)).await;
        let at_leave = stats(&mut b);
        let (rx0, tx0) = (streams(&at_leave, "inbound-rtp"), streams(&at_leave, "outbound-rtp"));

        // Media resumes both ways through the survivor: Chromium receives again, and what it
        // receives is sipp's echo of what it sends (energy), so its sending reaches sipp too.
        let mut resumed = None;
        while event.elapsed() < Duration::from_secs(25) {
            tokio::time::sleep(Duration::from_millis(100)).await;
            let now = stats(&mut b);
            let ((rx, energy), (tx, _)) = (since(&rx0, &streams(&now, "inbound-rtp")), since(&tx0, &streams(&now, "outbound-rtp")));
            if std::env::var("FAILOVER_TRACE").is_ok() {
                println!("+{:.1}s received {rx} (energy {energy:.3}) sent {tx} since the carrier left", event.elapsed().as_secs_f64());
            }
            if rx >= 25.0 && energy > 0.0 && tx >= 25.0 {
                resumed = Some(event.elapsed());
                break;
            }
        }
        let resumed = resumed.unwrap_or_else(|| panic!("media did not resume: {:#}\n--- page\n{}\n{}", stats(&mut b), page_log(&mut b), c.logs()));
        if std::env::var("FAILOVER_TRACE").is_ok() {
            println!("{}\n{}", page_log(&mut b), c.nodes[survivor].log_tail(60));
        }
        let what = match leave {
            Leave::Killed => "SIGKILL",
            Leave::Drained => "SIGTERM (drain timeout 1 s)",
            Leave::Moved => "HAProxy cut the node's sessions",
        };
        println!(
            "figures: {what}: the carrier was out of the call {:.1} s after, media both ways again through the other node {:.1} s after (25 packets of echoed audio)",
            left.as_secs_f64(),
            resumed.as_secs_f64()
        );
        let s = &c.nodes[survivor];
        assert_eq!(s.metric("estuary_cluster_calls_adopted_total"), Some(1.0));
        assert_eq!(s.metric("estuary_cluster_registrations_adopted_total"), Some(1.0));
        if leave == Leave::Moved {
            assert_eq!(c.nodes[carrier].metric("estuary_calls_active"), Some(0.0), "the live node let the call go");
            assert_eq!(c.nodes[carrier].metric("estuary_registrations_active"), Some(0.0), "and the registration with it");
        }
        // One copy of the call in Redis, the survivor's (the carrier's went with the move).
        let copies = || c.redis.cli(&["--scan", "--pattern", "estuary:*:call:*"]);
        let deadline = Instant::now() + Duration::from_secs(5);
        while !(copies().trim().lines().count() == 1 && copies().contains(survivor_id)) {
            assert!(Instant::now() < deadline, "one copy, the survivor's: {}", copies());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        if leave == Leave::Drained {
            let presence = c.redis.cli(&["EXISTS", &format!("estuary:node:{carrier_id}")]);
            assert_eq!(presence.trim(), "0", "a stopped node is out of the cluster at once");
        }

        // One side hangs up through the survivor; sipp's dialog saw one re-INVITE, no new call.
        let ending = if leave == Leave::Drained {
            let ended = wait_call(&mut b, &["ended", "failed"]);
            assert_eq!(ended.as_deref(), Ok("ended"), "the core's BYE reaches the page: {}\n{}", page_log(&mut b), c.logs());
            "bye_from_ims"
        } else {
            hang_up(&mut b);
            "bye_from_web"
        };
        let lasted = answered.elapsed().as_secs_f64();
        let run = sipp.wait().await;
        assert!(run.succeeded(), "sipp: {}\n{}", run.describe(), c.logs());
        let byes_to_sipp = if ending == "bye_from_web" { 1 } else { 0 };
        assert_eq!(run.received_requests("BYE").len(), byes_to_sipp, "{}", run.describe());
        let reinvites = run.received_requests("INVITE");
        assert_eq!(reinvites.len(), 1, "one re-INVITE: {}", run.describe());
        let r = tokio::task::block_in_place(|| estuary_conformance::records::wait_records(&c.records[survivor], 1)).remove(0);
        assert_eq!(r["reason"].as_str(), Some(ending), "the survivor writes the record: {r}");
        // Of the whole call: from its answer on the first node, not from the take-over.
        let duration = r["duration_s"].as_f64().unwrap_or(0.0);
        assert!((duration - lasted).abs() < 1.5, "the record's duration {duration} s, the call's about {lasted:.1} s: {r}");
        if leave != Leave::Killed {
            let r = tokio::task::block_in_place(|| estuary_conformance::records::wait_records(&c.records[carrier], 1)).remove(0);
            assert_eq!(r["reason"].as_str(), Some("handed_over"), "the carrier's record says where its part ended: {r}");
            assert_eq!(r["icid"], tokio::task::block_in_place(|| estuary_conformance::records::wait_records(&c.records[survivor], 1)).remove(0)["icid"], "one ICID across both");
        }
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
