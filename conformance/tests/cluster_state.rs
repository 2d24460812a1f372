//! The cluster's shared state in a real Redis: a browser's registration is stored, marked
//! with the node's name, with the registration's lifetime as its TTL, and removed when it
//! goes; the node announces itself; an answered call's two dialogs are stored while it is
//! up; with Redis killed mid-call the call
//! goes on to its end, a new call sets up, browsers still register, and /metrics says so.
//!
//! Needs redis-server and sipp (make deps) and `cargo build -p estuary`.

use std::time::{Duration, Instant};

use estuary_conformance::flows::Setup;
use estuary_conformance::redis::Redis;
use estuary_conformance::sipp::Sipp;
use estuary_conformance::ws_client::{webrtc_offer, DEFAULT_WAIT};

async fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !cond() {
        assert!(Instant::now() < deadline, "{what}: not within 5 s");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registrations_are_shared_in_redis_and_a_redis_outage_only_costs_the_copies() {
    let mut redis = Redis::start();
    let url = redis.url();
    let s = Setup::start(|b| b.set("cluster.enabled", "true").set("registrar.on_ws_close", "keep").set("cluster.node_id", "node-a").set("cluster.redis", &url)).await;
    let reg = s.register().await;

    let keys = || redis.cli(&["--scan", "--pattern", "estuary:reg:*"]);
    wait_for("the registration in Redis", || !keys().trim().is_empty()).await;
    let key = keys().trim().to_owned();
    let token = key.rsplit(':').next().unwrap().to_owned();
    assert!(reg.gateway_contact.contains(&token), "the key names the binding's token ({token}) of the gateway's Contact {}", reg.gateway_contact);
    let value = redis.cli(&["GET", &key]);
    assert!(value.contains("\"node\":\"node-a\"") && value.contains("\"aor\":\"sip:alice@ims.test\"") && value.contains("\"ims_call_id\""), "{value}");
    // Named by the browser's REGISTER dialog too (a browser that reconnects elsewhere is
    // found by it), and the node announces where it takes the core's requests.
    let dialog = redis.cli(&["GET", &format!("estuary:regdialog:{}", reg.client.register_call_id())]);
    assert_eq!(dialog.trim(), token);
    let presence = redis.cli(&["GET", "estuary:node:node-a"]);
    assert_eq!(presence.trim(), format!("{{\"sip\":\"{}\"}}", s.gw.ims_addr), "{presence}");
    let ttl: i64 = redis.cli(&["TTL", "estuary:node:node-a"]).trim().parse().unwrap();
    assert!((1..=2).contains(&ttl), "presence lasts 2 s unless renewed: {ttl}");
    let ttl: i64 = redis.cli(&["TTL", &key]).trim().parse().unwrap();
    assert!(ttl > 0 && ttl <= 3600, "the registration's lifetime as TTL: {ttl}");
    assert_eq!(s.gw.metric("estuary_cluster_redis_up"), Some(1.0));
    wait_for("the hand-over channel heard", || s.gw.metric("estuary_cluster_handover_listening") == Some(1.0)).await;
    let subscribers = redis.cli(&["PUBSUB", "NUMSUB", "estuary:handover"]);
    assert_eq!(subscribers.lines().nth(1).map(str::trim), Some("1"), "{subscribers}");

    // A call: both dialogs are shared while it is up, and removed at its end.
    let mut reg = reg;
    let sipp = s.uas("uas_answer_wait_bye.xml").await;
    let mut d = reg.client.invite("sip:bob@ims.test", &webrtc_offer(40000)).await;
    let (_, ok) = reg.client.wait_final(&d.invite, DEFAULT_WAIT).await;
    assert_eq!(ok.status(), 200, "{}", reg.client.transcript());
    d.update_from_response(&ok);
    reg.client.ack(&mut d).await;
    let calls = || redis.cli(&["--scan", "--pattern", "estuary:node-a:call:*"]);
    wait_for("the call in Redis", || !calls().trim().is_empty()).await;
    let stored = redis.cli(&["GET", calls().trim()]);
    assert!(stored.contains(&format!("\"call_id\":\"{}\"", d.call_id)), "the browser's dialog: {stored}");
    let bye = reg.client.bye(&mut d).await;
    assert_eq!(reg.client.wait_response(&bye, DEFAULT_WAIT).await.status(), 200);
    wait_for("the call removed at its end", || calls().trim().is_empty()).await;
    let run = sipp.wait().await;
    let ims_call_id = run.received_requests("INVITE")[0].call_id().to_owned();
    assert!(stored.contains(&format!("\"call_id\":\"{ims_call_id}\"")), "the IMS dialog: {stored}");
    assert!(!stored.contains("crypto") && !stored.contains("inline:"), "no key material: {stored}");

    // The browser deregisters: its registration goes from Redis too.
    let registrar = s.uas("registrar.xml").await;
    let gone = reg.client.register(0, DEFAULT_WAIT).await;
    assert_eq!(gone.last().map(|r| r.status()), Some(200), "{}", reg.client.transcript());
    registrar.wait().await.assert_success();
    reg.client.close().await;
    wait_for("the key removed", || keys().trim().is_empty()).await;

    // Redis dies mid-call: the call goes on, a new call sets up, registrations go on, and
    // the outage shows; the node is healthy all along.
    let mut again = s.register().await;
    let sipp = Sipp::uas("uas_answer_wait_bye.xml", s.sipp_port).calls(2).start().await;
    let (mut before, _) = again.client.call_answered("sip:bob@ims.test", &webrtc_offer(40000)).await;
    redis.kill();
    let (mut during, _) = again.client.call_answered("sip:bob@ims.test", &webrtc_offer(40002)).await;
    for d in [&mut during, &mut before] {
        let bye = again.client.bye(d).await;
        assert_eq!(again.client.wait_response(&bye, DEFAULT_WAIT).await.status(), 200, "{}", again.client.transcript());
    }
    let run = sipp.wait().await;
    assert!(run.succeeded() && run.received_requests("BYE").len() == 2, "both calls ended at the core: {}", run.describe());
    again.client.close().await;
    let third = s.register().await;
    assert_eq!(third.responses.last().map(|r| r.status()), Some(200));
    third.client.close().await;
    wait_for("the outage in /metrics", || s.gw.metric("estuary_cluster_redis_up") == Some(0.0)).await;
    wait_for("the hand-over channel lost", || s.gw.metric("estuary_cluster_handover_listening") == Some(0.0)).await;
    assert!(s.gw.metric("estuary_cluster_writes_total{result=\"deferred\"}").is_some_and(|v| v >= 1.0), "writes kept for later: {}", s.gw.log_tail(20));
    assert_eq!(s.gw.http_get("/healthz").map(|r| r.0).ok(), Some(200), "a Redis outage is not a node failure");
}


/// `cluster.redis` naming a master that Redis Sentinel watches: the node writes to the master
/// the sentinel names, and after the master dies and the sentinel promotes its replica, the
/// node's next writes reach the new master.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn through_redis_sentinel_the_node_follows_a_promoted_replica() {
    let mut master = Redis::start();
    let replica = Redis::replica_of(&master);
    let sentinel = tokio::task::block_in_place(|| estuary_conformance::redis::Sentinel::start(&master, "estuary"));
    let s = Setup::start(|b| {
        b.set("cluster.enabled", "true").set("registrar.on_ws_close", "keep").set("cluster.node_id", "node-s").set("cluster.redis", &sentinel.url())
    })
    .await;
    let first = s.register().await;
    let registrations = |r: &Redis| r.cli(&["--scan", "--pattern", "estuary:reg:*"]).lines().count();
    wait_for("the registration in the master", || registrations(&master) == 1).await;

    // The master dies; the sentinel promotes the replica (down after 1 s).
    master.kill();
    let deadline = Instant::now() + Duration::from_secs(20);
    while sentinel.master_port() != Some(replica.port) {
        assert!(Instant::now() < deadline, "the sentinel did not promote the replica");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Writes made while the node had no master are kept and replayed: both land.
    let second = s.register().await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while registrations(&replica) < 2 {
        assert!(Instant::now() < deadline, "the node writes to the promoted replica: {}", s.gw.log_tail(20));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(s.gw.metric("estuary_cluster_redis_up"), Some(1.0));
    // The hand-over channel is heard on the new master too.
    wait_for("subscribed at the promoted replica", || replica.cli(&["PUBSUB", "NUMSUB", "estuary:handover"]).lines().nth(1).map(str::trim) == Some("1")).await;
    assert_eq!(s.gw.metric("estuary_cluster_handover_listening"), Some(1.0));
    first.client.close().await;
    second.client.close().await;
}
