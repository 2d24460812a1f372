//! Records the replay corpus (`conformance/captures/<scenario>/`): real sessions of the demo
//! softphone (JsSIP from npm in headless Chromium) through the daemon to sipp, recorded by the
//! daemon itself (`recording.mode = "signalling"`, `"full"` for the scenarios with media) and
//! split into what entered the gateway
//! and what it sent. Run with `make corpus` when the gateway's behaviour changes on purpose,
//! then review the new captures (`estuary replay ... --expect ...` says what differs) and
//! commit them. They do nothing unless ESTUARY_RECORD_CORPUS is set (`make corpus` sets
//! it): `make test` replays the committed captures instead (replay_corpus.rs).

use std::path::{Path, PathBuf};
use std::time::Duration;

use estuary_conformance::browser::{Browser, Netns};
use estuary_conformance::demo_page::*;
use estuary_conformance::flows::Setup;
use estuary_conformance::net::{free_udp_port, in_loopback_netns};
use estuary_conformance::sipp::Sipp;
use estuary_conformance::{browser_runtime, corpus};

/// Only `make corpus` records (the recording tests overwrite committed files).
fn recording() -> bool {
    std::env::var_os("ESTUARY_RECORD_CORPUS").is_some()
}

fn corpus_dir(scenario: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("captures").join(scenario)
}

/// Runs `flow` against a daemon recording signalling, then splits its captures into the
/// corpus.
async fn record<F>(scenario: &str, flow: F)
where
    F: AsyncFnOnce(&Setup, &mut Browser),
{
    record_as(scenario, "signalling", flow).await
}

/// As [`record`], with `recording.mode = mode`. What the flow returns lives until the capture
/// is split (a client's WebSocket, whose close would end its registration in the recording).
async fn record_as<F, T>(scenario: &str, mode: &str, flow: F)
where
    F: AsyncFnOnce(&Setup, &mut Browser) -> T,
{
    let dir = std::env::temp_dir().join(format!("estuary-corpus-{scenario}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    // A fixed engine seed: replay (--seed 4242) draws the same identifiers again.
    let s = Setup::start(|b| b.set("recording.mode", mode).set("recording.dir", &dir.to_string_lossy()).env("ESTUARY_ENGINE_SEED", "4242")).await;
    let mut b = tokio::task::block_in_place(|| Browser::start_in(Netns::Inherit));
    let kept = flow(&s, &mut b).await;
    // The recorder flushes every second. The capture is taken before the page closes: its
    // un-REGISTER would meet a registrar that has exited, a network event a replay cannot
    // reproduce.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (inputs, outputs) = corpus::split(&dir, &[s.gw.ws_addr, s.gw.wss_addr, s.gw.ims_addr], &corpus_dir(scenario));
    // Flows driving a bare peer connection open no page.
    let _ = tokio::task::block_in_place(|| b.try_request(serde_json::json!({"cmd": "page-close", "page": PAGE})));
    drop(kept);
    println!("{scenario}: {inputs} messages in, {outputs} out");
    assert!(inputs > 0 && outputs > 0);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn record_register_with_digest() {
    if !recording() || !in_loopback_netns("record_register_with_digest") {
        return;
    }
    browser_runtime().block_on(record("register-digest", async |s, b| {
        registered_page(s, b).await;
    }));
}

#[test]
fn record_call_from_the_browser() {
    if !recording() || !in_loopback_netns("record_call_from_the_browser") {
        return;
    }
    browser_runtime().block_on(record("call-web-to-ims", async |s, b| {
        registered_page(s, b).await;
        let sipp = s.echo_uas("uas_answer_echo.xml", free_udp_port()).await;
        tokio::task::block_in_place(|| {
            b.page_fill(PAGE, "#target", "sip:bob@ims.test").unwrap();
            b.page_click(PAGE, "#dial").unwrap();
        });
        assert_eq!(wait_call(b, &["confirmed", "failed", "ended"]).as_deref(), Ok("confirmed"), "{}", page_log(b));
        tokio::time::sleep(Duration::from_secs(1)).await;
        hang_up(b);
        sipp.wait().await.assert_success();
    }));
}

/// A G.711 call with its media (`recording.mode = "full"`): the browser's audio relayed to
/// sipp, which echoes it, for three seconds; replay plays the media too.
#[test]
fn record_call_with_media() {
    if !recording() || !in_loopback_netns("record_call_with_media") {
        return;
    }
    browser_runtime().block_on(record_as("media-pcmu", "full", async |s, b| {
        registered_page(s, b).await;
        let sipp = s.echo_uas("uas_answer_echo.xml", free_udp_port()).await;
        assert_eq!(dial(b, &["confirmed", "failed", "ended"]).as_deref(), Ok("confirmed"), "{}", page_log(b));
        tokio::time::sleep(Duration::from_secs(3)).await;
        hang_up(b);
        sipp.wait().await.assert_success();
    }));
}

/// An Opus-only Chromium (setCodecPreferences: Opus and telephone-event/48000, signalled by
/// the test's SIP-over-WebSocket client) calls a PCMU-only core: the daemon transcodes both
/// ways, and the digits 1 5 # go out as telephone-event/8000 with their durations rescaled,
/// come back in sipp's echo and reach the browser at 48 kHz again. Replay runs the
/// transcoding pipelines inline.
#[test]
fn record_transcoded_call_with_dtmf() {
    if !recording() || !in_loopback_netns("record_transcoded_call_with_dtmf") {
        return;
    }
    browser_runtime().block_on(record_as("media-opus-dtmf", "full", async |s, b| {
        let mut reg = s.register().await;
        let sipp = s.echo_uas("uas_answer_echo_dtmf.xml", free_udp_port()).await;
        let offer = tokio::task::block_in_place(|| {
            b.new_pc("a");
            b.offer_with_fake_media_codecs("a", &["audio"], &["opus", "telephone-event/48000"])
        })
        .expect("Chromium offer");
        assert!(offer.contains("telephone-event/48000") && !offer.contains("PCMU"), "Opus only: {offer}");
        let (mut d, ok) = reg.client.call_answered("sip:bob@ims.test", &offer).await;
        tokio::task::block_in_place(|| b.remote_answer("a", &ok.body)).unwrap_or_else(|e| panic!("answer refused: {e}\n{}", ok.body));
        tokio::time::sleep(Duration::from_millis(1500)).await;
        tokio::task::block_in_place(|| b.insert_dtmf("a", "15#", 100, 70)).expect("insertDTMF");
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let bye = reg.client.bye(&mut d).await;
        let _ = reg.client.wait_response(&bye, estuary_conformance::ws_client::DEFAULT_WAIT).await;
        sipp.wait().await.assert_success();
        tokio::task::block_in_place(|| b.close("a"));
        reg
    }));
}

#[test]
fn record_call_to_the_browser() {
    if !recording() || !in_loopback_netns("record_call_to_the_browser") {
        return;
    }
    browser_runtime().block_on(record("call-ims-to-web", async |s, b| {
        let registrar = registered_page(s, b).await;
        let (contact, path) = registration_of_record(&registrar);
        let sipp = Sipp::uac("uac_call_browser_echo.xml", free_udp_port(), s.gw.ims_addr)
            .key("target", &contact)
            .key("route", &path)
            .arg("-mp")
            .arg(&free_udp_port().to_string())
            .arg("-rtp_echo")
            .timeout(Duration::from_secs(40))
            .start()
            .await;
        assert_eq!(wait_call(b, &["ringing"]).as_deref(), Ok("ringing"), "{}", page_log(b));
        tokio::task::block_in_place(|| b.page_click(PAGE, "#answer")).unwrap();
        assert_eq!(wait_call(b, &["confirmed", "failed", "ended"]).as_deref(), Ok("confirmed"), "{}", page_log(b));
        tokio::time::sleep(Duration::from_secs(1)).await;
        hang_up(b);
        sipp.wait().await.assert_success();
    }));
}

/// Dials sip:bob@ims.test from the registered page and waits for `state`.
fn dial(b: &mut Browser, states: &[&str]) -> Result<String, String> {
    tokio::task::block_in_place(|| {
        b.page_fill(PAGE, "#target", "sip:bob@ims.test").unwrap();
        b.page_click(PAGE, "#dial").unwrap();
    });
    wait_call(b, states)
}

#[test]
fn record_cancel() {
    if !recording() || !in_loopback_netns("record_cancel") {
        return;
    }
    browser_runtime().block_on(record("cancel", async |s, b| {
        registered_page(s, b).await;
        let sipp = s.uas("uas_ring_cancel.xml").await;
        assert_eq!(dial(b, &["progress", "ringing", "confirmed", "failed"]).as_deref(), Ok("progress"), "{}", page_log(b));
        tokio::time::sleep(Duration::from_millis(500)).await;
        // Hanging up before the answer is a CANCEL; the core ends the INVITE with 487.
        tokio::task::block_in_place(|| b.page_click(PAGE, "#hangup")).unwrap();
        assert!(wait_call(b, &["ended", "failed"]).is_ok(), "{}", page_log(b));
        sipp.wait().await.assert_success();
    }));
}

#[test]
fn record_hold_and_resume() {
    if !recording() || !in_loopback_netns("record_hold_and_resume") {
        return;
    }
    browser_runtime().block_on(record("hold-resume", async |s, b| {
        registered_page(s, b).await;
        let sipp = s.echo_uas("uas_hold_resume.xml", free_udp_port()).await;
        assert_eq!(dial(b, &["confirmed", "failed", "ended"]).as_deref(), Ok("confirmed"), "{}", page_log(b));
        for label in ["Resume", "Hold"] {
            tokio::time::sleep(Duration::from_millis(700)).await;
            tokio::task::block_in_place(|| b.page_click(PAGE, "#hold")).unwrap();
            let shows = tokio::task::block_in_place(|| {
                for _ in 0..50 {
                    if b.page_text(PAGE, "#hold").is_ok_and(|t| t.trim() == label) {
                        return true;
                    }
                    std::thread::sleep(Duration::from_millis(100));
                }
                false
            });
            assert!(shows, "the hold button says {label}: {}", page_log(b));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        hang_up(b);
        sipp.wait().await.assert_success();
    }));
}

#[test]
fn record_dtmf_by_info() {
    if !recording() || !in_loopback_netns("record_dtmf_by_info") {
        return;
    }
    browser_runtime().block_on(record("dtmf-info", async |s, b| {
        registered_page(s, b).await;
        // The account details are open since registration (register_page opened them).
        tokio::task::block_in_place(|| b.page_select(PAGE, "#dtmf-mode", "INFO")).unwrap();
        let sipp = s.echo_uas("uas_answer_info.xml", free_udp_port()).await;
        assert_eq!(dial(b, &["confirmed", "failed", "ended"]).as_deref(), Ok("confirmed"), "{}", page_log(b));
        tokio::time::sleep(Duration::from_millis(500)).await;
        tokio::task::block_in_place(|| b.page_click(PAGE, "#keypad button:nth-child(5)")).unwrap();
        tokio::time::sleep(Duration::from_millis(700)).await;
        hang_up(b);
        sipp.wait().await.assert_success();
    }));
}

#[test]
fn record_early_media() {
    if !recording() || !in_loopback_netns("record_early_media") {
        return;
    }
    browser_runtime().block_on(record("early-media", async |s, b| {
        registered_page(s, b).await;
        let sipp = s.echo_uas("uas_early_media.xml", free_udp_port()).await;
        assert_eq!(dial(b, &["confirmed", "failed", "ended"]).as_deref(), Ok("confirmed"), "{}", page_log(b));
        tokio::time::sleep(Duration::from_millis(700)).await;
        hang_up(b);
        sipp.wait().await.assert_success();
    }));
}

#[test]
fn record_add_video() {
    if !recording() || !in_loopback_netns("record_add_video") {
        return;
    }
    browser_runtime().block_on(record("add-video", async |s, b| {
        registered_page(s, b).await;
        let sipp = s.echo_uas("uas_add_video.xml", free_udp_port()).await;
        assert_eq!(dial(b, &["confirmed", "failed", "ended"]).as_deref(), Ok("confirmed"), "{}", page_log(b));
        tokio::time::sleep(Duration::from_millis(500)).await;
        // Camera on (re-INVITE adding m=video), a second of echoed video, camera off.
        for state in ["on", "off"] {
            assert_eq!(toggle_video(b).as_deref(), Ok(state), "{}", page_log(b));
            tokio::time::sleep(Duration::from_millis(1000)).await;
        }
        hang_up(b);
        sipp.wait().await.assert_success();
    }));
}

/// A VP8-only Chromium (setCodecPreferences, signalled by the test's SIP-over-WebSocket
/// client) calls an H.264-only core: the gateway offers the core H.264 (modes 1 and 0) in
/// place of VP8 and transcodes; the core's SIP INFO picture_fast_update (RFC 5168) is answered
/// by the gateway itself. Signalling only: the replay checks the offer rewriting, the answer
/// toward the browser in VP8 and the INFO's local 200.
#[test]
fn record_video_transcoded() {
    if !recording() || !in_loopback_netns("record_video_transcoded") {
        return;
    }
    browser_runtime().block_on(record_as("video-transcoded", "signalling", async |s, b| {
        let mut reg = s.register().await;
        let sipp = s.echo_uas("uas_answer_echo_h264.xml", free_udp_port() & !1).await;
        let codecs = serde_json::json!({"audio": ["PCMU/8000"], "video": ["VP8"]});
        let offer = tokio::task::block_in_place(|| {
            b.new_pc("a");
            b.offer_with_fake_media_restricted("a", &["audio", "video"], codecs)
        })
        .expect("Chromium offer");
        assert!(offer.contains("VP8/90000") && !offer.contains("H264"), "VP8 only: {offer}");
        let (mut d, ok) = reg.client.call_answered("sip:bob@ims.test", &offer).await;
        tokio::task::block_in_place(|| b.remote_answer("a", &ok.body)).unwrap_or_else(|e| panic!("answer refused: {e}\n{}", ok.body));
        // sipp sends its INFO 2 s after the ACK; hang up once it was answered.
        tokio::time::sleep(Duration::from_millis(3000)).await;
        let bye = reg.client.bye(&mut d).await;
        let _ = reg.client.wait_response(&bye, estuary_conformance::ws_client::DEFAULT_WAIT).await;
        sipp.wait().await.assert_success();
        tokio::task::block_in_place(|| b.close("a"));
        reg
    }));
}
