//! A browser's WebSocket drops mid-call and the browser comes back over a new one (JsSIP's
//! connection recovery): with `registrar.reconnect_grace_s`, the call waits for it instead of
//! ending, goes on over the new connection, and the browser's BYE ends it at the core; its
//! record says the browser hung up. Without the grace the call ends when the socket closes.
//!
//! Needs sipp and `cargo build -p estuary`.

use std::time::Duration;

use estuary_conformance::flows::Setup;
use estuary_conformance::records::{temp_dir, wait_records};
use estuary_conformance::ws_client::{webrtc_offer, DEFAULT_WAIT};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_waits_for_its_browser_to_reconnect_and_goes_on() {
    let records = temp_dir("signalling_reconnect");
    let s = Setup::start(|b| {
        b.set("registrar.on_ws_close", "keep").set("registrar.reconnect_grace_s", "10").set("records.dir", &records.to_string_lossy())
    })
    .await;
    let mut reg = s.register().await;
    let sipp = s.uas("uas_answer_wait_bye.xml").await;
    let (mut d, _) = reg.client.call_answered("sip:bob@ims.test", &webrtc_offer(40000)).await;

    // The WebSocket drops (no close frame); the browser is back a moment later.
    let mut client = reg.client.reconnect(s.gw.ws_addr).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(s.gw.metric("estuary_calls_active"), Some(1.0), "the call waits: {}", s.gw.log_tail(20));

    let bye = client.bye(&mut d).await;
    assert_eq!(client.wait_response(&bye, DEFAULT_WAIT).await.status(), 200, "{}", client.transcript());
    let run = sipp.wait().await;
    run.assert_success();
    assert_eq!(run.received_requests("BYE").len(), 1, "the core got the browser's BYE: {}", run.describe());
    let r = tokio::task::block_in_place(|| wait_records(&records, 1)).remove(0);
    assert_eq!(r["reason"].as_str(), Some("bye_from_web"), "{r}");
    let _ = std::fs::remove_dir_all(&records);
}
