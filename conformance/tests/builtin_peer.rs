//! The built-in IMS test peer (`ims.next_hop = "builtin"`, the embedded default that `make
//! run` uses) seen from the browser side through the real daemon: registration, calls to
//! echo@ and tone@ answered with IMS SDP rewritten into WebRTC form, ring@ ringing until
//! CANCEL, unknown users refused with 404, BYE completing. Media through it is checked with a
//! real browser in call_demo_page.rs.
//!
//! Needs `cargo build -p estuary` (see conformance/src/lib.rs).

use std::time::Duration;

use estuary_conformance::gateway::Gateway;
use estuary_conformance::ws_client::{assert_webrtc_sdp, webrtc_offer, WsSipClient, DEFAULT_WAIT};

async fn registered(gw: &Gateway) -> WsSipClient {
    registered_as(gw, "alice").await
}

async fn registered_as(gw: &Gateway, user: &str) -> WsSipClient {
    let mut c = WsSipClient::connect(gw.ws_addr, user, "ims.test", "any").await;
    let responses = c.register(600, DEFAULT_WAIT).await;
    assert_eq!(
        responses.last().map(|r| r.status()),
        Some(200),
        "the test peer accepts every REGISTER:\n{}",
        c.transcript()
    );
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn echo_and_tone_answer_and_hang_up() {
    let gw = Gateway::builder().start().await;
    assert!(
        gw.log().contains("TEST PEER"),
        "the daemon warns that the test facility is on:\n{}",
        gw.log_tail(20)
    );
    let mut c = registered(&gw).await;
    for user in ["echo", "tone"] {
        let target = format!("sip:{user}@ims.test");
        let mut d = c.invite(&target, &webrtc_offer(50_000)).await;
        let (prov, ok) = c.wait_final(&d.invite, DEFAULT_WAIT).await;
        assert_eq!(ok.status(), 200, "{target} answered:\n{}", c.transcript());
        assert_eq!(prov.first().map(|p| p.status()), Some(100), "{}", c.transcript());
        assert_webrtc_sdp(&ok.body, &format!("200 from {target}"));
        let m = ok.body.lines().find(|l| l.starts_with("m=audio ")).unwrap_or_default();
        assert!(
            m.ends_with(" 0 126") || m.ends_with(" 0"),
            "PCMU (first in the offer that the peer supports) plus telephone-event: {m}\n{}",
            ok.body
        );
        d.update_from_response(&ok);
        c.ack(&mut d).await;
        tokio::time::sleep(Duration::from_millis(200)).await;
        let bye = c.bye(&mut d).await;
        let resp = c.wait_response(&bye, DEFAULT_WAIT).await;
        assert_eq!(resp.status(), 200, "BYE to {target}:\n{}", c.transcript());
    }
    assert!(wait_idle(&gw).await, "calls released: {:?}", gw.metric("estuary_calls_active"));
}

/// Calls may take a moment to be released after the BYE's 200.
async fn wait_idle(gw: &Gateway) -> bool {
    for _ in 0..50 {
        if gw.metric("estuary_calls_active") == Some(0.0) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_users_get_404_and_ring_rings_until_cancel() {
    let gw = Gateway::builder().start().await;
    let mut c = registered(&gw).await;

    let d = c.invite("sip:nobody@ims.test", &webrtc_offer(50_002)).await;
    let (_, fin) = c.wait_final(&d.invite, DEFAULT_WAIT).await;
    assert_eq!(fin.status(), 404, "{}", c.transcript());
    c.ack_non2xx(&d.invite, &fin).await;

    let d = c.invite("sip:ring@ims.test", &webrtc_offer(50_004)).await;
    c.wait_for(DEFAULT_WAIT, "180 from ring@", |m| m.is_response() && m.status() == 180)
        .await;
    let cancel = c.cancel(&d).await;
    let cancel_ok = c.wait_response(&cancel, DEFAULT_WAIT).await;
    assert_eq!(cancel_ok.status(), 200, "{}", c.transcript());
    let (_, fin) = c.wait_final(&d.invite, DEFAULT_WAIT).await;
    assert_eq!(fin.status(), 487, "the INVITE ends 487 after CANCEL:\n{}", c.transcript());
}

/// What `make run` offers two browser tabs: bob registers, alice calls sip:bob@ims.test, the
/// test peer proxies the INVITE back to the gateway through bob's Path (record-routed), bob's
/// browser gets a WebRTC offer and answers, alice's BYE reaches bob through the peer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_browsers_call_each_other_through_the_test_peer() {
    use estuary_conformance::ws_client::webrtc_answer;
    let gw = Gateway::builder().start().await;
    let mut alice = registered_as(&gw, "alice").await;
    let mut bob = registered_as(&gw, "bob").await;
    let mut d = alice.invite("sip:bob@ims.test", &webrtc_offer(50_010)).await;
    let inv = bob.wait_request("INVITE", DEFAULT_WAIT).await;
    assert_webrtc_sdp(&inv.body, "the offer bob gets through the test peer");
    assert!(inv.header("From").is_some_and(|f| f.contains("alice")), "{inv}");
    bob.answer(&inv, &webrtc_answer(&inv.body, 50_020)).await;
    let (_, ok) = alice.wait_final(&d.invite, DEFAULT_WAIT).await;
    assert_eq!(ok.status(), 200, "{}\n--- daemon\n{}", alice.transcript(), gw.log_tail(40));
    assert_webrtc_sdp(&ok.body, "bob's answer at alice");
    d.update_from_response(&ok);
    alice.ack(&mut d).await;
    bob.wait_request("ACK", DEFAULT_WAIT).await;
    let bye = alice.bye(&mut d).await;
    bob.answer_bye(DEFAULT_WAIT).await;
    assert_eq!(alice.wait_response(&bye, DEFAULT_WAIT).await.status(), 200, "{}", alice.transcript());
    assert!(wait_idle(&gw).await, "both calls released: {:?}", gw.metric("estuary_calls_active"));
    // A user nobody registered is still refused.
    let d = alice.invite("sip:carol@ims.test", &webrtc_offer(50_030)).await;
    let (_, nope) = alice.wait_final(&d.invite, DEFAULT_WAIT).await;
    assert_eq!(nope.status(), 404, "{}", alice.transcript());
}
