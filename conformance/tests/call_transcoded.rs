//! Transcoding with a real browser: headless Chromium is restricted to Opus
//! (setCodecPreferences), the IMS callee (sipp) takes only PCMU and echoes RTP, so the daemon
//! must transcode Opus -> PCMU toward sipp and PCMU -> Opus back. Chromium must receive Opus
//! with audio energy (its fake microphone's beep, transcoded twice and echoed) and sipp must
//! have been offered and sent G.711 only. Browser, daemon and sipp share one loopback-only
//! namespace.

use std::time::Duration;

use estuary_conformance::browser::Browser;
use estuary_conformance::demo_page::{audio, number};
use estuary_conformance::flows::Setup;
use estuary_conformance::net::{free_udp_port, in_loopback_netns};
use estuary_conformance::ws_client::DEFAULT_WAIT;
use estuary_conformance::browser_runtime;
use serde_json::Value;

const TEST: &str = "an_opus_only_browser_talks_to_a_pcmu_only_core_through_the_transcoder";

#[test]
fn an_opus_only_browser_talks_to_a_pcmu_only_core_through_the_transcoder() {
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
        let offer = tokio::task::block_in_place(|| b.offer_with_fake_media_codecs("a", &["audio"], &["opus"])).expect("Chromium offer");
        let m = offer.lines().find(|l| l.starts_with("m=audio")).unwrap_or_default();
        assert!(
            offer.contains("opus/48000") && !offer.contains("PCMU") && !offer.contains("PCMA"),
            "Chromium offers Opus only: {m}"
        );
        let (mut d, ok) = reg.client.call_answered("sip:bob@ims.test", &offer).await;
        tokio::task::block_in_place(|| b.remote_answer("a", &ok.body)).unwrap_or_else(|e| panic!("Chromium refused the answer: {e}\n{}", ok.body));

        // Media both ways, with energy in what Chromium hears (bounded wait).
        let mut stats = Value::Null;
        for _ in 0..60 {
            tokio::time::sleep(Duration::from_millis(250)).await;
            stats = tokio::task::block_in_place(|| b.stats("a")).unwrap_or(Value::Null);
            let inbound = audio(&stats, "inbound-rtp");
            if number(inbound, "packets") >= 100.0 && number(inbound, "totalAudioEnergy") > 0.0 {
                break;
            }
        }
        let channels = s.gw.metric("estuary_transcoder_channels_open");
        let frames = s.gw.metric("estuary_transcoder_frames_total");
        let bye = reg.client.bye(&mut d).await;
        let _ = reg.client.wait_response(&bye, DEFAULT_WAIT).await;
        let run = sipp.wait().await;
        let inbound = audio(&stats, "inbound-rtp");
        let context = || format!("stats {stats:#}\n--- daemon log\n{}\n--- sipp\n{}", s.gw.log_tail(60), run.describe());
        assert!(number(audio(&stats, "outbound-rtp"), "packets") >= 100.0, "Chromium sent Opus: {}", context());
        assert!(number(inbound, "packets") >= 100.0, "Chromium received the transcoded echo: {}", context());
        assert!(number(inbound, "totalAudioEnergy") > 0.0, "with audio energy: {}", context());
        let codec = inbound.and_then(|r| r["codec"].as_str()).unwrap_or_default();
        assert!(codec.eq_ignore_ascii_case("audio/opus/48000"), "Chromium decodes Opus, got {codec:?}");
        assert_eq!(channels, Some(2.0), "one channel each way while the call ran");
        assert!(frames.unwrap_or(0.0) >= 200.0, "the pool produced the frames: {frames:?}");
        // The core saw G.711 only.
        let invites = run.received_requests("INVITE");
        let ims_offer = &invites.first().unwrap_or_else(|| panic!("no INVITE at sipp: {}", run.describe())).body;
        assert!(!ims_offer.to_ascii_lowercase().contains("opus"), "no Opus toward IMS:\n{ims_offer}");
        assert!(ims_offer.contains("PCMU/8000"), "{ims_offer}");
        println!(
            "Opus-only Chromium <-> PCMU sipp: sent {} received {} packets, energy {}, {} transcoded frames",
            number(audio(&stats, "outbound-rtp"), "packets"),
            number(inbound, "packets"),
            number(inbound, "totalAudioEnergy"),
            frames.unwrap_or(0.0)
        );
        tokio::task::block_in_place(|| b.close("a"));
    });
}

const DTMF: &str = "dtmf_from_an_opus_browser_reaches_the_core_as_telephone_event_8000";

/// RFC 4733 events as tshark decoded them: (event, end, duration, rtp timestamp).
fn events_in(pcap: &std::path::Path, port: u16) -> Vec<(u32, bool, u32, u32)> {
    let out = std::process::Command::new("tshark")
        .arg("-r")
        .arg(pcap)
        .args(["-d", &format!("udp.port=={port},rtp"), "-o", "rtpevent.event_payload_type_value:101", "-Y", "rtpevent"])
        .args(["-T", "fields", "-e", "rtpevent.event_id", "-e", "rtpevent.end_of_event", "-e", "rtpevent.duration", "-e", "rtp.timestamp"])
        .output()
        .expect("tshark runs (make deps installs it)");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            let end = matches!(f.get(1)?.trim(), "1" | "True" | "true");
            Some((f.first()?.trim().parse().ok()?, end, f.get(2)?.trim().parse().ok()?, f.get(3)?.trim().parse().ok()?))
        })
        .collect()
}

/// RTCDTMFSender on an Opus-only Chromium (telephone-event/48000) toward a G.711 core: the
/// core must get telephone-event/8000 (PT 101) with the digits in order and durations rescaled
/// to 8 kHz ticks. What reached sipp's media port is captured with tshark and decoded by it.
#[test]
fn dtmf_from_an_opus_browser_reaches_the_core_as_telephone_event_8000() {
    Browser::require();
    if !in_loopback_netns(DTMF) {
        return;
    }
    browser_runtime().block_on(async {
        let s = Setup::start(|b| b).await;
        let mut reg = s.register().await;
        let media_port = free_udp_port();
        let pcap = std::env::temp_dir().join(format!("estuary-dtmf-{}.pcap", std::process::id()));
        let mut capture = std::process::Command::new("tshark")
            .args(["-i", "lo", "-f", &format!("udp dst port {media_port}"), "-w"])
            .arg(&pcap)
            .arg("-q")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("tshark starts");
        let sipp = s.echo_uas("uas_answer_echo_dtmf.xml", media_port).await;
        let mut b = tokio::task::block_in_place(|| Browser::with_pc("a"));
        let offer = tokio::task::block_in_place(|| b.offer_with_fake_media_codecs("a", &["audio"], &["opus", "telephone-event/48000"]))
            .expect("Chromium offer");
        assert!(offer.contains("telephone-event/48000") && !offer.contains("PCMU"), "{offer}");
        let (mut d, ok) = reg.client.call_answered("sip:bob@ims.test", &offer).await;
        tokio::task::block_in_place(|| b.remote_answer("a", &ok.body)).unwrap_or_else(|e| panic!("answer refused: {e}\n{}", ok.body));
        // Media up (DTLS done and audio flowing), then the digits: 100 ms each, 70 ms apart.
        for _ in 0..40 {
            tokio::time::sleep(Duration::from_millis(250)).await;
            let stats = tokio::task::block_in_place(|| b.stats("a")).unwrap_or(Value::Null);
            if number(audio(&stats, "inbound-rtp"), "packets") >= 25.0 {
                break;
            }
        }
        tokio::task::block_in_place(|| b.insert_dtmf("a", "159#", 100, 70)).expect("insertDTMF");
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let bye = reg.client.bye(&mut d).await;
        let _ = reg.client.wait_response(&bye, DEFAULT_WAIT).await;
        let run = sipp.wait().await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        let _ = capture.kill();
        let _ = capture.wait();
        let events = events_in(&pcap, media_port);
        let _ = std::fs::remove_file(&pcap);
        let context = || format!("events {events:?}\n--- daemon\n{}\n--- sipp\n{}", s.gw.log_tail(40), run.describe());
        // One final duration per event (the last of its end packets); digits in order.
        let mut finals: Vec<(u32, u32, u32)> = Vec::new();
        for &(ev, _, dur, ts) in &events {
            match finals.last_mut() {
                Some(last) if last.2 == ts => last.1 = last.1.max(dur),
                _ => finals.push((ev, dur, ts)),
            }
        }
        let digits: Vec<u32> = finals.iter().map(|f| f.0).collect();
        assert_eq!(digits, [1, 5, 9, 11], "digits 1 5 9 # as RFC 4733 events: {}", context());
        for (ev, dur, _) in &finals {
            assert!((640..=960).contains(dur), "event {ev}: 100 ms is 800 ticks at 8 kHz, got {dur}: {}", context());
        }
        assert!(events.iter().any(|e| e.1), "end-of-event packets: {}", context());
        assert!(finals.windows(2).all(|w| w[1].2 > w[0].2), "each event starts later on the timeline: {}", context());
        println!("DTMF through the transcoder: {finals:?} (event, duration in 8 kHz ticks, timestamp)");
        tokio::task::block_in_place(|| b.close("a"));
    });
}
