//! A real browser call with media through the running daemon: headless Chromium's offer goes
//! in the INVITE of the JsSIP-like WebSocket client, sipp answers as the IMS callee and echoes
//! RTP (-rtp_echo), and Chromium must hear its own microphone back: ICE-lite, DTLS-SRTP and the
//! relay all in the daemon. Browser, daemon and sipp share one loopback-only namespace.

use std::time::Duration;

use estuary_conformance::browser::Browser;
use estuary_conformance::flows::Setup;
use estuary_conformance::net::{free_udp_port, in_loopback_netns};
use estuary_conformance::ws_client::DEFAULT_WAIT;
use estuary_conformance::browser_runtime;

const TEST: &str = "chromium_call_through_the_daemon_hears_its_echo";

#[test]
fn chromium_call_through_the_daemon_hears_its_echo() {
    Browser::require();
    if !in_loopback_netns(TEST) {
        return;
    }
    browser_runtime().block_on(async {
        let s = Setup::start(|b| b).await;
        let mut reg = s.register().await;
        let media_port = free_udp_port();
        let sipp = s.echo_uas("uas_answer_echo.xml", media_port).await;
        let mut b = tokio::task::block_in_place(|| Browser::with_pc("a"));
        let offer = tokio::task::block_in_place(|| b.offer_with_fake_media("a", &["audio"])).expect("Chromium offer");
        let (mut d, ok) = reg.client.call_answered("sip:bob@ims.test", &offer).await;
        tokio::task::block_in_place(|| b.remote_answer("a", &ok.body)).unwrap_or_else(|e| panic!("Chromium refused the answer: {e}\n{}", ok.body));
        // Let media flow, then read Chromium's view.
        let mut inbound = 0.0;
        let mut stats = serde_json::Value::Null;
        for _ in 0..40 {
            tokio::time::sleep(Duration::from_millis(250)).await;
            stats = tokio::task::block_in_place(|| b.stats("a")).unwrap();
            inbound = stats["rtp"]
                .as_array()
                .and_then(|r| r.iter().find(|x| x["type"] == "inbound-rtp"))
                .and_then(|x| x["packets"].as_f64())
                .unwrap_or(0.0);
            if inbound >= 50.0 {
                break;
            }
        }
        println!("Chromium received {inbound} echoed packets; transports {}", stats["transports"]);
        let bye = reg.client.bye(&mut d).await;
        let _ = reg.client.wait_response(&bye, DEFAULT_WAIT).await;
        let run = sipp.wait().await;
        assert!(
            inbound >= 50.0,
            "Chromium received {inbound} echoed packets\nstats {stats:#}\n--- daemon log\n{}\n--- sipp\n{}",
            s.gw.log_tail(60),
            run.describe()
        );
        assert_eq!(stats["transports"][0]["dtlsState"], "connected", "{stats:#}");
        tokio::task::block_in_place(|| b.close("a"));
    });
}
