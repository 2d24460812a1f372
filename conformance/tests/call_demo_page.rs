//! End to end with the softphone an operator would use: headless Chromium opens the demo page
//! the daemon serves on its WSS listener (JsSIP from npm, bundled into the binary), registers
//! through the daemon with the sipp registrar (digest), and calls or is called by a sipp user
//! agent that answers with PCMU and echoes RTP (-rtp_echo). Chromium's own getStats must show
//! RTP both ways and non-zero audio energy in what it received (its fake microphone's beep,
//! echoed), with the page's echo cancellation off so the echo is not suppressed; the page hangs
//! up and sipp must see the BYE. Browser, daemon and sipp share one loopback-only namespace.

use std::time::Duration;

use estuary_conformance::browser::{Browser, Netns};
use estuary_conformance::demo_page::*;
use estuary_conformance::flows::Setup;
use estuary_conformance::gateway::Gateway;
use estuary_conformance::net::{free_udp_port, in_loopback_netns};
use estuary_conformance::sipp::{Sipp, SippRun};
use serde_json::Value;

fn assert_media(stats: &Value, context: impl Fn() -> String) {
    let inbound = audio(stats, "inbound-rtp");
    let outbound = audio(stats, "outbound-rtp");
    assert!(
        number(outbound, "packets") >= 100.0 && number(inbound, "packets") >= 100.0,
        "RTP both ways through the daemon: stats {stats:#}\n{}",
        context()
    );
    assert!(
        number(inbound, "totalAudioEnergy") > 0.0 && number(inbound, "audioLevel") > 0.0,
        "the echoed audio carries energy: stats {stats:#}\n{}",
        context()
    );
    let codec = inbound.and_then(|r| r["codec"].as_str()).unwrap_or_default();
    assert!(codec.eq_ignore_ascii_case("audio/PCMU/8000"), "passthrough PCMU, got {codec:?}");
    assert_eq!(stats["transports"][0]["dtlsState"], "connected", "{stats:#}");
}

fn assert_bye_seen(run: &SippRun, context: impl Fn() -> String) {
    assert!(run.succeeded(), "sipp failed: {}\n{}", run.describe(), context());
    assert_eq!(run.received_requests("BYE").len(), 1, "sipp saw the BYE: {}", run.describe());
}


const WEB_TO_IMS: &str = "demo_page_calls_ims_and_hears_the_echo";

#[test]
fn demo_page_calls_ims_and_hears_the_echo() {
    Browser::require();
    if !in_loopback_netns(WEB_TO_IMS) {
        return;
    }
    estuary_conformance::browser_runtime().block_on(async {
        let records = estuary_conformance::records::temp_dir("echo");
        let s = Setup::start(|b| b.set("records.dir", &records.to_string_lossy())).await;
        let mut b = tokio::task::block_in_place(|| Browser::start_in(Netns::Inherit));
        registered_page(&s, &mut b).await;

        let media_port = free_udp_port();
        let sipp = s.echo_uas("uas_answer_echo.xml", media_port).await;
        tokio::task::block_in_place(|| {
            b.page_fill(PAGE, "#target", "sip:bob@ims.test").unwrap();
            b.page_click(PAGE, "#dial").unwrap();
        });
        let state = wait_call(&mut b, &["confirmed", "failed", "ended"]);
        assert_eq!(
            state.as_deref(),
            Ok("confirmed"),
            "call not established\n--- page log\n{}\n--- daemon\n{}",
            page_log(&mut b),
            s.gw.log_tail(60)
        );
        let stats = media_stats(&mut b).await;
        let log = page_log(&mut b);
        assert_media(&stats, || format!("--- page log\n{log}\n--- daemon\n{}", s.gw.log_tail(60)));

        hang_up(&mut b);
        let run = sipp.wait().await;
        assert_bye_seen(&run, || format!("--- daemon\n{}", s.gw.log_tail(60)));
        println!(
            "demo page -> IMS: Chromium sent {} and received {} packets, audio energy {}",
            number(audio(&stats, "outbound-rtp"), "packets"),
            number(audio(&stats, "inbound-rtp"), "packets"),
            number(audio(&stats, "inbound-rtp"), "totalAudioEnergy")
        );

        // The call's record: answered, hung up by the browser, and per leg what crossed
        // (the browser sent until the BYE, so the counts reach at least what getStats saw).
        let r = tokio::task::block_in_place(|| estuary_conformance::records::wait_records(&records, 1)).remove(0);
        assert_eq!((r["caller"].as_str(), r["to"].as_str(), r["status"].as_u64(), r["reason"].as_str()), (Some("web"), Some("sip:bob@ims.test"), Some(200), Some("bye_from_web")), "{r}");
        assert!(r["duration_s"].as_f64().is_some_and(|d| d >= 2.0) && r["setup_ms"].as_u64().is_some(), "{r}");
        let icid = r["icid"].as_str().unwrap_or_default();
        let invite = run.received_requests("INVITE");
        assert!(!icid.is_empty() && invite[0].header("P-Charging-Vector").is_some_and(|v| v.contains(icid)), "the record's ICID is the one the core got: {r}");
        let st = &r["streams"][0];
        assert_eq!((st["kind"].as_str(), st["web_codec"].as_str(), st["ims_codec"].as_str(), st["transcoded"].as_bool()), (Some("audio"), Some("PCMU/8000"), Some("PCMU/8000"), Some(false)), "{r}");
        let sent_by_chromium = number(audio(&stats, "outbound-rtp"), "packets") as u64;
        for leg in ["web", "ims"] {
            let l = &st[leg];
            assert!(l["received"].as_u64().is_some_and(|n| n >= sent_by_chromium.min(100)) && l["sent"].as_u64().is_some_and(|n| n >= 100), "{leg}: {r}");
            assert_eq!(l["lost"].as_i64(), Some(0), "no loss on loopback, {leg}: {r}");
        }
        println!("call record: {r}");
        let _ = std::fs::remove_dir_all(&records);
    });
}

const IMS_TO_WEB: &str = "ims_calls_the_demo_page_which_answers";

#[test]
fn ims_calls_the_demo_page_which_answers() {
    Browser::require();
    if !in_loopback_netns(IMS_TO_WEB) {
        return;
    }
    estuary_conformance::browser_runtime().block_on(async {
        let s = Setup::start(|b| b).await;
        let mut b = tokio::task::block_in_place(|| Browser::start_in(Netns::Inherit));
        let registrar = registered_page(&s, &mut b).await;
        let (contact, path) = registration_of_record(&registrar);

        let media_port = free_udp_port();
        let sipp = Sipp::uac("uac_call_browser_echo.xml", free_udp_port(), s.gw.ims_addr)
            .key("target", &contact)
            .key("route", &path)
            .arg("-mp")
            .arg(&media_port.to_string())
            .arg("-rtp_echo")
            .timeout(Duration::from_secs(40))
            .start()
            .await;
        let ringing = wait_call(&mut b, &["ringing"]);
        assert_eq!(
            ringing.as_deref(),
            Ok("ringing"),
            "the page did not ring\n--- page log\n{}\n--- daemon\n{}",
            page_log(&mut b),
            s.gw.log_tail(60)
        );
        tokio::task::block_in_place(|| b.page_click(PAGE, "#answer")).unwrap();
        let state = wait_call(&mut b, &["confirmed", "failed", "ended"]);
        assert_eq!(
            state.as_deref(),
            Ok("confirmed"),
            "call not established\n--- page log\n{}\n--- daemon\n{}",
            page_log(&mut b),
            s.gw.log_tail(60)
        );
        let stats = media_stats(&mut b).await;
        let log = page_log(&mut b);
        assert_media(&stats, || format!("--- page log\n{log}\n--- daemon\n{}", s.gw.log_tail(60)));

        hang_up(&mut b);
        let run = sipp.wait().await;
        assert_bye_seen(&run, || format!("--- daemon\n{}", s.gw.log_tail(60)));
        println!(
            "IMS -> demo page: Chromium sent {} and received {} packets, audio energy {}",
            number(audio(&stats, "outbound-rtp"), "packets"),
            number(audio(&stats, "inbound-rtp"), "packets"),
            number(audio(&stats, "inbound-rtp"), "totalAudioEnergy")
        );
    });
}

/// Poll (bounded) until Chromium has our RTCP on the audio stream: a sender report
/// (remote-outbound-rtp) and a report block about its own stream with a round-trip time
/// (remote-inbound-rtp), which needs our LSR/DLSR echoing its sender reports.
async fn rtcp_stats(b: &mut Browser) -> Value {
    let mut stats = Value::Null;
    for _ in 0..40 {
        stats = tokio::task::block_in_place(|| b.page_stats(PAGE)).unwrap_or(Value::Null);
        let rtt = audio(&stats, "remote-inbound-rtp").and_then(|r| r["roundTripTime"].as_f64());
        if rtt.is_some() && audio(&stats, "remote-outbound-rtp").is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    stats
}

/// The gateway's RTCP toward the browser as Chromium read it.
fn assert_rtcp_understood(stats: &Value) {
    let sr = audio(stats, "remote-outbound-rtp");
    assert!(number(sr, "packets") > 0.0, "Chromium took our SR (remote-outbound-rtp): {stats:#}");
    let rb = audio(stats, "remote-inbound-rtp");
    let rtt = rb.and_then(|r| r["roundTripTime"].as_f64());
    assert!(
        rtt.is_some_and(|t| (0.0..0.5).contains(&t)),
        "Chromium measured a loopback round trip from our report block (LSR/DLSR): {stats:#}"
    );
    assert_eq!(number(rb, "packetsLost"), 0.0, "no loss on loopback: {stats:#}");
}

const BUILTIN: &str = "demo_page_hears_the_builtin_echo_and_tone";

/// What `make run` offers an operator: the embedded defaults (next hop = the built-in test
/// peer), the demo page, a call to echo@ that returns the browser's own audio and one to tone@
/// that plays a 1 kHz tone. No sipp: the peer inside the daemon is the far end.
#[test]
fn demo_page_hears_the_builtin_echo_and_tone() {
    Browser::require();
    if !in_loopback_netns(BUILTIN) {
        return;
    }
    estuary_conformance::browser_runtime().block_on(async {
        let gw = Gateway::builder().start().await;
        let mut b = tokio::task::block_in_place(|| Browser::start_in(Netns::Inherit));
        let state = register_page(&gw, &mut b, "anything");
        assert_eq!(
            state.as_deref(),
            Ok("registered"),
            "the test peer accepts every REGISTER\n--- page log\n{}\n--- daemon\n{}",
            page_log(&mut b),
            gw.log_tail(40)
        );
        for user in ["echo", "tone"] {
            tokio::task::block_in_place(|| {
                b.page_fill(PAGE, "#target", &format!("sip:{user}@ims.test")).unwrap();
                b.page_click(PAGE, "#dial").unwrap();
            });
            let state = wait_call(&mut b, &["confirmed", "failed", "ended"]);
            assert_eq!(
                state.as_deref(),
                Ok("confirmed"),
                "{user}@ not established\n--- page log\n{}\n--- daemon\n{}",
                page_log(&mut b),
                gw.log_tail(60)
            );
            let stats = media_stats(&mut b).await;
            let log = page_log(&mut b);
            assert_media(&stats, || format!("{user}@\n--- page log\n{log}\n--- daemon\n{}", gw.log_tail(60)));
            let rtcp = rtcp_stats(&mut b).await;
            assert_rtcp_understood(&rtcp);
            hang_up(&mut b);
            println!(
                "demo page -> builtin {user}@: Chromium sent {} and received {} packets, audio energy {}, \
                 RTT from our RTCP {} s",
                number(audio(&stats, "outbound-rtp"), "packets"),
                number(audio(&stats, "inbound-rtp"), "packets"),
                number(audio(&stats, "inbound-rtp"), "totalAudioEnergy"),
                number(audio(&rtcp, "remote-inbound-rtp"), "roundTripTime")
            );
        }
        // The two calls' media counters reach /metrics once their tasks end (bounded wait).
        let relayed = |dir: &str| gw.metric(&format!("estuary_media_packets_total{{direction=\"{dir}\"}}")).unwrap_or(0.0);
        for _ in 0..50 {
            if relayed("web_to_ims") >= 200.0 && relayed("ims_to_web") >= 200.0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(
            relayed("web_to_ims") >= 200.0 && relayed("ims_to_web") >= 200.0,
            "two calls of 2 s or more both ways in /metrics: {} / {}",
            relayed("web_to_ims"),
            relayed("ims_to_web")
        );
        let rtcp_out = gw.metric("estuary_media_rtcp_packets_total{direction=\"out\"}").unwrap_or(0.0);
        assert!(rtcp_out >= 4.0, "reports and BYEs on both legs of two calls: {rtcp_out}");
    });
}

const ADD_VIDEO: &str = "demo_page_adds_video_to_a_call_and_sees_it_echoed";

/// An audio call to which the page adds its camera by a re-INVITE (the Video button): the
/// gateway re-offers toward IMS with a new m=video in RTP/AVP, sipp answers it with the offered
/// H.264 payload type on its second port and echoes the video; Chromium must decode H.264
/// frames that crossed the gateway both ways on the BUNDLE transport it already had. Then the
/// camera goes off again (a second re-INVITE) and the call still ends cleanly.
#[test]
fn demo_page_adds_video_to_a_call_and_sees_it_echoed() {
    Browser::require();
    if !in_loopback_netns(ADD_VIDEO) {
        return;
    }
    estuary_conformance::browser_runtime().block_on(async {
        let s = Setup::start(|b| b).await;
        let mut b = tokio::task::block_in_place(|| Browser::start_in(Netns::Inherit));
        registered_page(&s, &mut b).await;
        let sipp = s.echo_uas("uas_add_video.xml", free_udp_port()).await;
        tokio::task::block_in_place(|| {
            b.page_fill(PAGE, "#target", "sip:bob@ims.test").unwrap();
            b.page_click(PAGE, "#dial").unwrap();
        });
        let state = wait_call(&mut b, &["confirmed", "failed", "ended"]);
        assert_eq!(state.as_deref(), Ok("confirmed"), "{}\n--- daemon\n{}", page_log(&mut b), s.gw.log_tail(60));

        let on = toggle_video(&mut b);
        assert_eq!(on.as_deref(), Ok("on"), "video added\n--- page log\n{}\n--- daemon\n{}", page_log(&mut b), s.gw.log_tail(60));
        let mut stats = Value::Null;
        for _ in 0..40 {
            tokio::time::sleep(Duration::from_millis(250)).await;
            stats = tokio::task::block_in_place(|| b.page_stats(PAGE)).unwrap_or(Value::Null);
            if number(video(&stats, "inbound-rtp"), "framesDecoded") >= 20.0 {
                break;
            }
        }
        let inbound = video(&stats, "inbound-rtp");
        let context = || format!("stats {stats:#}\n--- daemon\n{}", s.gw.log_tail(60));
        assert!(number(inbound, "framesDecoded") >= 20.0, "Chromium decodes its echoed camera: {}", context());
        let codec = inbound.and_then(|r| r["codec"].as_str()).unwrap_or_default();
        assert!(codec.eq_ignore_ascii_case("video/H264/90000"), "H.264 end to end, got {codec:?}: {}", context());
        assert!(number(audio(&stats, "inbound-rtp"), "packets") >= 50.0, "audio goes on: {}", context());
        let bundled: Vec<_> = stats["transports"].as_array().map(|t| t.iter().collect()).unwrap_or_default();
        assert_eq!(bundled.len(), 1, "video rides the call's one BUNDLE transport: {}", context());

        let off = toggle_video(&mut b);
        assert_eq!(off.as_deref(), Ok("off"), "video removed\n--- page log\n{}", page_log(&mut b));
        hang_up(&mut b);
        let run = sipp.wait().await;
        assert_bye_seen(&run, || format!("--- daemon\n{}", s.gw.log_tail(60)));
        let reinvites = run.received_requests("INVITE");
        assert_eq!(reinvites.len(), 3, "initial INVITE and two re-INVITEs: {}", run.describe());
        assert!(reinvites[1].body.contains("m=video") && reinvites[1].body.contains("RTP/AVP"), "{}", reinvites[1]);
        println!(
            "demo page adds video: {} H.264 frames decoded after the echo through the gateway, {} sent",
            number(inbound, "framesDecoded"),
            number(video(&stats, "outbound-rtp"), "framesEncoded")
        );
    });
}

const TWO_TABS: &str = "two_demo_tabs_call_each_other_through_the_builtin_peer";

/// `make run` with two tabs: alice's page calls bob's page through the gateway and the
/// built-in peer (which proxies back through bob's Path); bob answers; each page hears the
/// other's fake microphone, i.e. media went browser -> gateway (SRTP -> RTP) -> gateway's
/// other call (RTP -> SRTP) -> browser both ways.
#[test]
fn two_demo_tabs_call_each_other_through_the_builtin_peer() {
    Browser::require();
    if !in_loopback_netns(TWO_TABS) {
        return;
    }
    estuary_conformance::browser_runtime().block_on(async {
        let gw = Gateway::builder().start().await;
        let mut b = tokio::task::block_in_place(|| Browser::start_in(Netns::Inherit));
        for user in ["alice", "bob"] {
            assert_eq!(register_tab(&gw, &mut b, user, user, "any").as_deref(), Ok("registered"));
        }
        let state = |b: &mut Browser, page: &str, states: &[&str]| tokio::task::block_in_place(|| b.page_wait(page, "#call-state", "data-state", states, WAIT));
        tokio::task::block_in_place(|| {
            b.page_fill("alice", "#target", "sip:bob@ims.test").unwrap();
            b.page_click("alice", "#dial").unwrap();
        });
        let log = |b: &mut Browser, page: &str| tokio::task::block_in_place(|| b.page_text(page, "#log")).unwrap_or_default();
        let ringing = state(&mut b, "bob", &["ringing"]);
        assert_eq!(ringing.as_deref(), Ok("ringing"), "bob's tab rings\n{}\n--- daemon\n{}", log(&mut b, "alice"), gw.log_tail(40));
        tokio::task::block_in_place(|| b.page_click("bob", "#answer")).unwrap();
        for page in ["alice", "bob"] {
            let s = state(&mut b, page, &["confirmed", "failed", "ended"]);
            assert_eq!(s.as_deref(), Ok("confirmed"), "{page}: {}", log(&mut b, page));
        }
        // Each tab receives the other's beep.
        for page in ["alice", "bob"] {
            let mut stats = Value::Null;
            for _ in 0..40 {
                tokio::time::sleep(Duration::from_millis(250)).await;
                stats = tokio::task::block_in_place(|| b.page_stats(page)).unwrap_or(Value::Null);
                if number(audio(&stats, "inbound-rtp"), "packets") >= 100.0 && number(audio(&stats, "inbound-rtp"), "totalAudioEnergy") > 0.0 {
                    break;
                }
            }
            let inbound = audio(&stats, "inbound-rtp");
            assert!(number(inbound, "packets") >= 100.0 && number(inbound, "totalAudioEnergy") > 0.0, "{page} hears the other tab: {stats:#}\n--- daemon\n{}", gw.log_tail(40));
            println!("{page}: received {} packets, energy {}", number(inbound, "packets"), number(inbound, "totalAudioEnergy"));
        }
        tokio::task::block_in_place(|| b.page_click("alice", "#hangup")).unwrap();
        for page in ["alice", "bob"] {
            assert_eq!(state(&mut b, page, &["ended", "failed"]).as_deref(), Ok("ended"), "{page}: {}", log(&mut b, page));
        }
    });
}
