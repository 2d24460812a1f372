//! The media plane ends calls nobody can hear, on both legs: a browser that vanishes without
//! a word (killed, so ICE consent is never refreshed, RFC 7675), a browser that closes its
//! RTCPeerConnection (DTLS close_notify) and a call in which nobody sends media
//! (`media.inactivity_timeout_s`) are all ended by the daemon with BYE to the browser and BYE
//! to IMS. Real Chromium for ICE/DTLS, the JsSIP-like WebSocket
//! client for signalling, sipp as the IMS callee; one loopback-only namespace per test.

use std::time::{Duration, Instant};

use estuary_conformance::browser::Browser;
use estuary_conformance::flows::Setup;
use estuary_conformance::net::{free_udp_port, in_loopback_netns};

use serde_json::Value;

fn inbound_packets(stats: &Value) -> f64 {
    stats["rtp"]
        .as_array()
        .and_then(|r| r.iter().find(|x| x["type"] == "inbound-rtp"))
        .and_then(|x| x["packets"].as_f64())
        .unwrap_or(0.0)
}

/// One call from Chromium (`fake_media`: its fake microphone, else no track at all) to a sipp
/// callee echoing RTP, through a daemon with `settings`; then `after_connect` runs, and the
/// daemon must end the call on both legs within `limit`, with `log_reason` in its log.
async fn call_ended_by_the_daemon(
    settings: &[(&str, &str)],
    fake_media: bool,
    after_connect: impl FnOnce(&mut Browser),
    window: std::ops::Range<Duration>,
    log_reason: &str,
    (release_cause, metric_cause): (&str, &str),
) {
    let s = Setup::start(|mut b| {
        for (k, v) in settings {
            b = b.set(k, v);
        }
        b
    })
    .await;
    let mut reg = s.register().await;
    let media_port = free_udp_port();
    let sipp = s.echo_uas("uas_answer_echo.xml", media_port).await;
    let mut b = tokio::task::block_in_place(|| Browser::with_pc("a"));
    let offer = tokio::task::block_in_place(|| {
        if fake_media {
            b.offer_with_fake_media("a", &["audio"])
        } else {
            b.offer("a", &["audio"], None)
        }
    })
    .expect("Chromium offer");
    let (d, ok) = reg.client.call_answered("sip:bob@ims.test", &offer).await;
    tokio::task::block_in_place(|| b.remote_answer("a", &ok.body)).expect("Chromium takes the answer");

    // Connected first (ICE and DTLS), with media when there is any: the timeout must be what
    // ends the call, not a failed setup.
    let mut stats = Value::Null;
    for _ in 0..40 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        stats = tokio::task::block_in_place(|| b.stats("a")).unwrap();
        let connected = stats["transports"][0]["dtlsState"] == "connected";
        if connected && (!fake_media || inbound_packets(&stats) >= 10.0) {
            break;
        }
    }
    assert_eq!(stats["transports"][0]["dtlsState"], "connected", "{stats:#}\n{}", s.gw.log_tail(40));
    if fake_media {
        assert!(inbound_packets(&stats) >= 10.0, "media flowed first: {stats:#}");
    }
    let started = Instant::now();
    tokio::task::block_in_place(|| after_connect(&mut b));

    // The daemon's BYE toward the browser...
    let bye = reg.client.wait_request("BYE", window.end).await;
    let elapsed = started.elapsed();
    assert!(
        elapsed >= window.start,
        "ended {elapsed:?} after the trigger, before {:?}: not by the timeout under test\n{}",
        window.start,
        s.gw.log_tail(30)
    );
    let ok = reg.client.response(&bye, 200, "OK", None);
    reg.client.send(&ok).await;
    // ...and toward IMS: uas_answer_echo.xml ends (and succeeds) only on a BYE.
    let run = sipp.wait().await;
    assert!(
        run.succeeded() && run.received_requests("BYE").len() == 1,
        "sipp must get the daemon's BYE: {}\n--- daemon\n{}",
        run.describe(),
        s.gw.log_tail(60)
    );
    // Both BYEs say why, as TS 24.229 §7.2A.18 RELEASE_CAUSE (2 RTP time-out, 3 bearer loss).
    let want = format!("RELEASE_CAUSE;cause={release_cause}");
    let ims_bye = run.received_requests("BYE")[0];
    for (leg, reason) in [("browser", bye.header("Reason")), ("IMS", ims_bye.header("Reason"))] {
        assert!(reason.is_some_and(|r| r.starts_with(&want)), "{leg} BYE Reason {reason:?}, want {want}");
    }
    let counted = s.gw.metric(&format!("estuary_media_failures_total{{cause=\"{metric_cause}\"}}"));
    assert_eq!(counted, Some(1.0), "estuary_media_failures_total{{cause={metric_cause}}}");
    assert!(
        s.gw.log().contains(log_reason),
        "the daemon logs why ({log_reason:?}):\n{}",
        s.gw.log().lines().filter(|l| !l.contains("rtc_dtls")).collect::<Vec<_>>().join("\n")
    );
    println!("call ended by the daemon {elapsed:?} after the trigger ({log_reason})");
    let _ = d;
}

const CONSENT: &str = "a_browser_that_vanishes_loses_consent_and_its_call";

#[test]
fn a_browser_that_vanishes_loses_consent_and_its_call() {
    if let Err(why) = Browser::available() {
        panic!("headless Chromium is needed (make deps installs it): {why}");
    }
    if !in_loopback_netns(CONSENT) {
        return;
    }
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    rt.block_on(call_ended_by_the_daemon(
        // Consent lapses 3 s after the last check; inactivity stays far away so it cannot be
        // what ends the call (sipp's echo stops with the browser's media).
        &[("media.consent_timeout_s", "3"), ("media.inactivity_timeout_s", "120")],
        true,
        // Gone without a BYE or close_notify, as a crashed browser or a lost network: no more
        // checks, no media.
        |b| assert!(b.kill_chromium() > 0, "no Chromium process to kill"),
        Duration::from_secs(2)..Duration::from_secs(10),
        "ConsentLost",
        ("3", "ice"),
    ));
}

const CLOSED: &str = "a_browser_that_closes_its_peer_connection_ends_the_call";

#[test]
fn a_browser_that_closes_its_peer_connection_ends_the_call() {
    if let Err(why) = Browser::available() {
        panic!("headless Chromium is needed (make deps installs it): {why}");
    }
    if !in_loopback_netns(CLOSED) {
        return;
    }
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    rt.block_on(call_ended_by_the_daemon(
        &[],
        true,
        // pc.close() sends DTLS close_notify (RFC 8827 §6.5 asks for it): with no BYE after it,
        // the call ends when the grace for one (DTLS_CLOSE_GRACE, 1 s) runs out, well before
        // any consent or media timeout.
        |b| b.close("a"),
        Duration::ZERO..Duration::from_secs(3),
        "DTLS closed by the browser",
        ("3", "dtls_closed"),
    ));
}

const INACTIVITY: &str = "a_call_without_media_ends_after_the_inactivity_timeout";

#[test]
fn a_call_without_media_ends_after_the_inactivity_timeout() {
    if let Err(why) = Browser::available() {
        panic!("headless Chromium is needed (make deps installs it): {why}");
    }
    if !in_loopback_netns(INACTIVITY) {
        return;
    }
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    rt.block_on(call_ended_by_the_daemon(
        // Chromium offers a transceiver without a track: ICE consent goes on (so the call is
        // alive) but no RTP flows either way.
        &[("media.inactivity_timeout_s", "3")],
        false,
        |_| {},
        Duration::from_secs(1)..Duration::from_secs(10),
        "no media for 3 s",
        ("2", "inactivity"),
    ));
}
