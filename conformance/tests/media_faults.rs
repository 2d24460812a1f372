//! A bug in the media plane costs one call, never the process (issue 13). With the daemon's
//! test hooks on, a datagram that starts with `estuary_media::shard::FAULT_TRIGGER` makes the
//! media thread panic inside the call it is routed to, as a bug in a session would. That call
//! must end with BYE on both legs (RELEASE_CAUSE 3, counted as an internal media failure);
//! the other call on the same daemon, and the daemon, go on.
//!
//! Runs in its own loopback-only network namespace. Needs `sipp` and `cargo build -p estuary`
//! (see conformance/src/lib.rs).

use std::net::UdpSocket;
use std::time::Duration;

use estuary_conformance::flows::{finish, Setup};
use estuary_conformance::net::in_loopback_netns;
use estuary_conformance::sipp::Sipp;
use estuary_conformance::ws_client::{media_port, webrtc_offer, DEFAULT_WAIT};

const CALLEE: &str = "sip:bob@ims.test";
const TEST: &str = "a_media_thread_panic_ends_that_call_only";

#[test]
fn a_media_thread_panic_ends_that_call_only() {
    if !in_loopback_netns(TEST) {
        return;
    }
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    rt.block_on(async {
        // One media thread: both calls share it, so the survivor proves the thread lived on.
        // Per-call browser ports: the trigger can then reach a call without an ICE check (on
        // a shared port only a source that passed one is routed).
        let s = Setup::start(|b| b.set("media.threads", "1").set("media.web_port_mode", "per_call").env("ESTUARY_TEST_HOOKS", "1")).await;
        let mut reg = s.register().await;
        let sipp = Sipp::uas("uas_answer_wait_bye.xml", s.sipp_port).calls(2).timeout(Duration::from_secs(30)).start().await;
        let (_victim, ok1) = reg.client.call_answered(CALLEE, &webrtc_offer(11)).await;
        let (mut survivor, ok2) = reg.client.call_answered(CALLEE, &webrtc_offer(12)).await;
        let victim_call_id = ok1.call_id().to_owned();

        // The browser-facing port of the first call: what arrives there is routed to it.
        let poke = UdpSocket::bind("127.0.0.1:0").unwrap();
        poke.send_to(estuary_media::shard::FAULT_TRIGGER, ("127.0.0.1", media_port(&ok1.body))).unwrap();

        let bye = reg.client.wait_request("BYE", Duration::from_secs(5)).await;
        assert_eq!(bye.call_id(), victim_call_id, "the BYE ends the call that panicked:\n{}", s.gw.log_tail(40));
        assert!(
            bye.header("Reason").is_some_and(|r| r.starts_with("RELEASE_CAUSE;cause=3")),
            "bearer loss as the reason: {bye}"
        );
        let ok = reg.client.response(&bye, 200, "OK", None);
        reg.client.send(&ok).await;

        // The daemon is alive and the other call on the same thread too: its BYE is answered
        // end to end by sipp.
        assert_eq!(s.gw.metric("estuary_media_failures_total{cause=\"internal\"}"), Some(1.0));
        let bye2 = reg.client.bye(&mut survivor).await;
        let (_, fin) = reg.client.wait_final(&bye2, DEFAULT_WAIT).await;
        assert_eq!(fin.status(), 200, "the surviving call's BYE: {}", reg.client.transcript());
        let run = finish(sipp, &reg.client, &s.gw).await;
        assert_eq!(run.received_requests("BYE").len(), 2, "sipp saw both calls end: {}", run.describe());
        let _ = ok2;

        let log = s.gw.log();
        assert!(log.contains("media plane panicked on this call's input"), "{}", s.gw.log_tail(40));
        assert_eq!(s.gw.metric("estuary_media_failures_total{cause=\"internal\"}"), Some(1.0), "one call, counted once");
        // A call after the fault still gets media ports and is answered.
        let sipp = s.uas("uas_answer_wait_bye.xml").await;
        let (mut d, _) = reg.client.call_answered(CALLEE, &webrtc_offer(13)).await;
        reg.client.bye(&mut d).await;
        finish(sipp, &reg.client, &s.gw).await.assert_success();
    });
}
