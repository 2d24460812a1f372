//! Video transcoding with real browsers: headless Chromium restricted to VP8 (and PCMU) with
//! setCodecPreferences, and Debian's Firefox ESR (which has no H.264 at all: no OpenH264
//! plug-in), call an IMS callee (sipp) that answers H.264 only and echoes the video RTP it
//! gets. The daemon must encode the browser's VP8 into H.264 toward sipp and the echoed H.264
//! back into VP8: the browser decodes frames of VP8 it never sent as such, sipp was offered
//! H.264 only, and the workers' counters show both directions. What reached sipp, taken from
//! the daemon's full recording, must decode in ffmpeg without an error. Browser, daemon and
//! sipp share one loopback-only namespace.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use estuary_conformance::browser::{Browser, BrowserKind, Netns};
use estuary_conformance::browser_runtime;
use estuary_conformance::demo_page::{audio, number, video};
use estuary_conformance::flows::Setup;
use estuary_conformance::net::{free_udp_port, in_loopback_netns};
use estuary_conformance::records::captures;
use estuary_conformance::ws_client::{m_section, DEFAULT_WAIT};
use estuary_conformance::Sipp;
use serde_json::{json, Value};

#[test]
fn a_vp8_only_browser_has_two_way_video_with_an_h264_only_core() {
    vp8_browser_calls_h264_echo(BrowserKind::Chromium, Mode::One, "a_vp8_only_browser_has_two_way_video_with_an_h264_only_core");
}

#[test]
fn firefox_without_h264_has_two_way_video_with_an_h264_only_core() {
    vp8_browser_calls_h264_echo(BrowserKind::Firefox, Mode::One, "firefox_without_h264_has_two_way_video_with_an_h264_only_core");
}

/// A core that takes only packetization-mode 0 (RFC 6184 §6.2: one NAL unit per packet, no
/// fragments): the encoder toward it cuts its pictures into slices that each fit a packet.
#[test]
fn a_vp8_only_browser_has_two_way_video_with_a_packetization_mode_0_core() {
    vp8_browser_calls_h264_echo(BrowserKind::Chromium, Mode::Zero, "a_vp8_only_browser_has_two_way_video_with_a_packetization_mode_0_core");
}

/// The H.264 packetization mode the IMS callee answers.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Non-interleaved (FU-A fragments allowed): uas_answer_echo_h264.xml.
    One,
    /// Single NAL unit: uas_answer_echo_h264_mode0.xml.
    Zero,
}

/// `kind` offers VP8 video (and PCMU audio, so that only video is transcoded) to sipp's H.264
/// echo in `mode` through the daemon; `test` names the calling test for its namespace.
fn vp8_browser_calls_h264_echo(kind: BrowserKind, mode: Mode, test: &str) {
    Browser::require_kind(kind);
    if !in_loopback_netns(test) {
        return;
    }
    browser_runtime().block_on(async {
        let (s, dir, records) = recording_gateway("video-transcoded").await;
        let mut reg = s.register().await;
        // Even, so that sipp's video echo port (+2) is the next even port.
        let media_port = free_udp_port() & !1;
        let scenario = if mode == Mode::Zero { "uas_answer_echo_h264_mode0.xml" } else { "uas_answer_echo_h264.xml" };
        let sipp = s.echo_uas(scenario, media_port).await;
        let mut b = tokio::task::block_in_place(|| browser_with_pc(kind));
        let codecs = json!({"audio": ["PCMU/8000"], "video": ["VP8"]});
        let offer = tokio::task::block_in_place(|| b.offer_with_fake_media_restricted("a", &["audio", "video"], codecs)).unwrap_or_else(|e| panic!("{kind} offer: {e}"));
        let m = m_section(&offer, "video").join("\n");
        assert!(offer.contains("VP8/90000") && !offer.contains("H264"), "{kind} offers VP8 video only:\n{m}");
        let (mut d, ok) = reg.client.call_answered("sip:bob@ims.test", &offer).await;
        assert!(ok.body.contains("VP8/90000"), "the browser is answered in VP8:\n{}", ok.body);
        tokio::task::block_in_place(|| b.remote_answer("a", &ok.body)).unwrap_or_else(|e| panic!("{kind} refused the answer: {e}\n{}", ok.body));

        // Frames decoded from the echo, VP8 -> H.264 -> sipp -> H.264 -> VP8 (bounded wait).
        let stats = echo_decoded(&mut b).await;
        // What the browser shows of the echo is a picture, not black: compared with its own
        // camera's frames (the fake device's test pattern).
        let remote = tokio::task::block_in_place(|| b.video_frame("a", "remote"));
        let local = tokio::task::block_in_place(|| b.video_frame("a", "local"));
        let channels = s.gw.metric("estuary_transcoder_video_channels_open");
        let frames_in = s.gw.metric("estuary_transcoder_video_frames_in_total");
        let frames_out = s.gw.metric("estuary_transcoder_video_frames_out_total");
        // sipp asks for a keyframe by SIP INFO (RFC 5168) 2 s after its ACK: wait for it to be
        // answered before hanging up (bounded: 10 s, as a loaded machine can be slow).
        let info = r#"estuary_sip_requests_total{side="ims",method="INFO"}"#;
        for _ in 0..100 {
            if s.gw.metric(info).unwrap_or(0.0) >= 1.0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        let bye = reg.client.bye(&mut d).await;
        let _ = reg.client.wait_response(&bye, DEFAULT_WAIT).await;
        let run = sipp.wait().await;
        let inbound = video(&stats, "inbound-rtp");
        let context = || format!("stats {stats:#}\n--- daemon log\n{}\n--- sipp\n{}", s.gw.log_tail(80), run.describe());
        assert!(run.succeeded(), "sipp's INFO picture_fast_update was answered 200: {}", context());
        assert!(number(video(&stats, "outbound-rtp"), "framesEncoded") >= 30.0, "{kind} sent VP8: {}", context());
        assert!(number(inbound, "framesDecoded") >= 30.0, "{kind} decoded the transcoded echo: {}", context());
        let codec = inbound.and_then(|r| r["codec"].as_str()).unwrap_or_default();
        assert!(codec.eq_ignore_ascii_case("video/VP8/90000"), "{kind} decodes VP8, got {codec:?}");
        assert_eq!(channels, Some(2.0), "one video channel each way while the call ran: {}", context());
        assert!(frames_out.unwrap_or(0.0) >= 60.0, "both channels encoded frames: in {frames_in:?} out {frames_out:?}");
        let remote = remote.unwrap_or_else(|e| panic!("the echoed video track shows no frame: {e}: {}", context()));
        let local = local.unwrap_or_else(|e| panic!("{kind}'s own camera frame: {e}"));
        let (luma, reference) = assert_picture(&remote, &local);
        // The core was offered H.264 only for video.
        let invites = run.received_requests("INVITE");
        let ims_offer = &invites.first().unwrap_or_else(|| panic!("no INVITE at sipp: {}", run.describe())).body;
        let ims_video = ims_offer.split("m=video").nth(1).unwrap_or_else(|| panic!("no video toward IMS:\n{ims_offer}"));
        assert!(ims_video.contains("H264/90000") && !ims_video.contains("VP8"), "H.264 only toward IMS:\n{ims_offer}");
        println!(
            "VP8-only {kind} <-> H.264 sipp echo: it encoded {} and decoded {} frames; workers took {} frames and sent {}; echo {}x{} mean luma {luma:.1} (camera {reference:.1})",
            number(video(&stats, "outbound-rtp"), "framesEncoded"),
            number(inbound, "framesDecoded"),
            frames_in.unwrap_or(0.0),
            frames_out.unwrap_or(0.0),
            remote["width"],
            remote["height"]
        );

        // The H.264 sipp received, from the recording's IMS lane, through ffmpeg.
        let (packets, frames, fragmented) = h264_toward_core_decodes(&dir, media_port + 2).await;
        if mode == Mode::Zero {
            assert_eq!(fragmented, 0, "mode 0: single NAL unit packets only, no FU-A or STAP-A");
        }
        println!("toward the core: {packets} RTP packets ({fragmented} FU-A/STAP-A), {frames} H.264 access units, all decoded by ffmpeg");
        // The INFO reached the encoder toward the core: it sent a keyframe on request (the
        // core negotiated no RTCP feedback, so nothing else could have asked it).
        let r = tokio::task::block_in_place(|| estuary_conformance::records::wait_records(&records, 1)).remove(0);
        let to_ims = &r["streams"][1]["video_transcoding"]["to_ims"];
        assert!(to_ims["keyframes_forced"].as_u64().unwrap_or(0) >= 1, "the H.264 encoder sent an IDR for the INFO: {r}");
        let _ = std::fs::remove_dir_all(&records);
        tokio::task::block_in_place(|| b.close("a"));
        let _ = std::fs::remove_dir_all(&dir);
    });
}

/// The transcoder has room for a few audio channels only, so a VP8-only browser's video (which
/// costs far more, see `transcoder.video_overload`) cannot be carried: with the default
/// `drop_video`, the core is offered the video m-line with port 0 (its sipp scenario fails the
/// call otherwise), the browser is answered video port 0, the call's audio flows both ways
/// through sipp's echo, no video channel opens, and the call record says why.
#[test]
fn a_browser_call_whose_video_the_full_transcoder_cannot_carry_goes_on_with_audio() {
    Browser::require();
    if !in_loopback_netns("a_browser_call_whose_video_the_full_transcoder_cannot_carry_goes_on_with_audio") {
        return;
    }
    browser_runtime().block_on(async {
        let records = estuary_conformance::records::temp_dir("video-dropped");
        let s = Setup::start(|b| b.set("transcoder.max_channels", "4").set("records.dir", &records.to_string_lossy())).await;
        let cost = s.gw.metric("estuary_transcoder_video_cost_channels").expect("the video cost is published");
        assert!(cost > 3.0, "a video stream costs more than 4 audio channels leave: {cost}");
        let mut reg = s.register().await;
        let media_port = free_udp_port() & !1;
        let sipp = s.echo_uas("uas_answer_video_refused.xml", media_port).await;
        let mut b = tokio::task::block_in_place(|| Browser::with_pc("a"));
        let codecs = json!({"audio": ["PCMU/8000"], "video": ["VP8"]});
        let offer = tokio::task::block_in_place(|| b.offer_with_fake_media_restricted("a", &["audio", "video"], codecs)).expect("Chromium offer");
        let (mut d, ok) = reg.client.call_answered("sip:bob@ims.test", &offer).await;
        assert!(ok.body.contains("m=video 0 "), "the browser's video is refused:\n{}", ok.body);
        tokio::task::block_in_place(|| b.remote_answer("a", &ok.body)).unwrap_or_else(|e| panic!("Chromium refused the answer: {e}\n{}", ok.body));
        let mut stats = Value::Null;
        for _ in 0..40 {
            tokio::time::sleep(Duration::from_millis(250)).await;
            stats = tokio::task::block_in_place(|| b.stats("a")).unwrap_or(Value::Null);
            if number(audio(&stats, "inbound-rtp"), "packets") >= 50.0 {
                break;
            }
        }
        let channels = s.gw.metric("estuary_transcoder_video_channels_open");
        let bye = reg.client.bye(&mut d).await;
        let _ = reg.client.wait_response(&bye, DEFAULT_WAIT).await;
        let run = sipp.wait().await;
        assert!(run.succeeded(), "sipp saw video refused toward the core and answered: {}\n--- daemon log\n{}", run.describe(), s.gw.log_tail(60));
        assert!(number(audio(&stats, "inbound-rtp"), "packets") >= 50.0, "the echoed audio reached Chromium: {stats:#}");
        assert_eq!(channels, Some(0.0), "no video channel opened");
        let r = tokio::task::block_in_place(|| estuary_conformance::records::wait_records(&records, 1)).remove(0);
        assert_eq!(r["video_dropped"], "transcoding_capacity", "{r}");
        assert_eq!(r["status"], 200, "{r}");
        println!("video dropped at a cost of {cost} audio channels against 4; audio echoed: {} packets", number(audio(&stats, "inbound-rtp"), "packets"));
        tokio::task::block_in_place(|| b.close("a"));
        let _ = std::fs::remove_dir_all(&records);
    });
}

/// The reverse direction: an H.264-only core calls a registered Firefox, which has no H.264.
/// The gateway offers the browser the core's H.264 and a VP8 alternative it would transcode;
/// Firefox answers VP8, the core is answered H.264 only, and the core's echo comes back to
/// Firefox as pictures: VP8 -> H.264 -> sipp -> H.264 -> VP8 through both video channels.
/// What reached sipp decodes in ffmpeg, and the call record says the stream was transcoded.
#[test]
fn an_h264_only_core_calls_firefox_which_answers_in_vp8() {
    const TEST: &str = "an_h264_only_core_calls_firefox_which_answers_in_vp8";
    let kind = BrowserKind::Firefox;
    Browser::require_kind(kind);
    if !in_loopback_netns(TEST) {
        return;
    }
    browser_runtime().block_on(async {
        let (s, dir, records) = recording_gateway("video-ims-offer").await;
        let mut reg = s.register().await;
        let mut b = tokio::task::block_in_place(|| browser_with_pc(kind));
        // Even, so that sipp's video echo port (+2) is the next even port.
        let media_port = free_udp_port() & !1;
        let sipp = Sipp::uac("uac_call_browser_h264_echo.xml", free_udp_port(), s.gw.ims_addr)
            .key("target", &reg.gateway_contact)
            .key("route", &reg.path)
            .arg("-mp")
            .arg(&media_port.to_string())
            .arg("-rtp_echo")
            .timeout(Duration::from_secs(60))
            .start()
            .await;
        let invite = reg.client.wait_request("INVITE", DEFAULT_WAIT).await;
        let offer_video = m_section(&invite.body, "video").join("\n");
        assert!(offer_video.contains("H264/90000") && offer_video.contains("VP8/90000"), "the browser is offered the core's H.264 and a VP8 to transcode:\n{}", invite.body);
        let answer = tokio::task::block_in_place(|| b.remote_offer_with_fake_media("a", &invite.body)).unwrap_or_else(|e| panic!("{kind} refused the offer: {e}\n{}", invite.body));
        let answer_video = m_section(&answer, "video").join("\n");
        assert!(answer_video.contains("VP8/90000") && !answer_video.contains("H264"), "{kind} answers VP8:\n{answer}");
        let mut d = reg.client.answer(&invite, &answer).await;

        let stats = echo_decoded(&mut b).await;
        let remote = tokio::task::block_in_place(|| b.video_frame("a", "remote"));
        let local = tokio::task::block_in_place(|| b.video_frame("a", "local"));
        let channels = s.gw.metric("estuary_transcoder_video_channels_open");
        let bye = reg.client.bye(&mut d).await;
        let _ = reg.client.wait_response(&bye, DEFAULT_WAIT).await;
        let run = sipp.wait().await;
        let inbound = video(&stats, "inbound-rtp");
        let context = || format!("stats {stats:#}\n--- daemon log\n{}\n--- sipp\n{}", s.gw.log_tail(80), run.describe());
        assert!(run.succeeded(), "sipp's call ended with the browser's BYE: {}", context());
        let ok = run.received_responses("INVITE").into_iter().find(|r| r.status() == 200).unwrap_or_else(|| panic!("no 200 at sipp: {}", context()));
        let ims_video = m_section(&ok.body, "video").join("\n");
        assert!(ims_video.contains("H264/90000") && !ims_video.contains("VP8"), "the core is answered H.264 only:\n{}", ok.body);
        assert!(number(inbound, "framesDecoded") >= 30.0, "{kind} decoded the transcoded echo: {}", context());
        let codec = inbound.and_then(|r| r["codec"].as_str()).unwrap_or_default();
        assert!(codec.eq_ignore_ascii_case("video/VP8/90000"), "{kind} decodes VP8, got {codec:?}");
        assert_eq!(channels, Some(2.0), "one video channel each way while the call ran: {}", context());
        let remote = remote.unwrap_or_else(|e| panic!("the echoed video track shows no frame: {e}: {}", context()));
        let local = local.unwrap_or_else(|e| panic!("{kind}'s own camera frame: {e}"));
        let (luma, reference) = assert_picture(&remote, &local);

        let (packets, frames, _) = h264_toward_core_decodes(&dir, media_port + 2).await;
        let r = tokio::task::block_in_place(|| estuary_conformance::records::wait_records(&records, 1)).remove(0);
        let st = &r["streams"][1];
        assert_eq!((st["kind"].as_str(), st["transcoded"].as_bool()), (Some("video"), Some(true)), "{r}");
        assert!(st["video_transcoding"]["to_web"]["frames_out"].as_u64().unwrap_or(0) >= 30, "{r}");
        println!(
            "H.264 core -> {kind} (VP8): it decoded {} frames of the echo, {}x{} mean luma {luma:.1} (camera {reference:.1}); toward the core {packets} RTP packets, {frames} access units, all decoded by ffmpeg",
            number(inbound, "framesDecoded"),
            remote["width"],
            remote["height"]
        );
        tokio::task::block_in_place(|| b.close("a"));
        let _ = std::fs::remove_dir_all(&records);
        let _ = std::fs::remove_dir_all(&dir);
    });
}

/// `kind` in the test's namespace with one peer connection, "a".
fn browser_with_pc(kind: BrowserKind) -> Browser {
    let mut b = Browser::start_kind_in(kind, Netns::Inherit);
    b.new_pc("a");
    b
}

/// Polls "a"'s stats (bounded, 15 s) until it decoded 30 frames of video; the last stats.
async fn echo_decoded(b: &mut Browser) -> Value {
    let mut stats = Value::Null;
    for _ in 0..60 {
        tokio::time::sleep(Duration::from_millis(250)).await;
        stats = tokio::task::block_in_place(|| b.stats("a")).unwrap_or(Value::Null);
        if number(video(&stats, "inbound-rtp"), "framesDecoded") >= 30.0 {
            break;
        }
    }
    stats
}

/// The echoed frame is a picture, not black, and about as bright as the camera's own frame
/// (the fake device's test pattern): (its mean luma, the camera's).
fn assert_picture(remote: &Value, local: &Value) -> (f64, f64) {
    let (luma, reference) = (number(Some(remote), "meanLuma"), number(Some(local), "meanLuma"));
    assert!(luma > 16.0, "the echoed picture is not black: {remote} (camera {local})");
    assert!((luma - reference).abs() < 0.25 * reference, "and about as bright as the camera's: {remote} against {local}");
    (luma, reference)
}

/// A gateway recording every call in full into a fresh directory and writing call records
/// into another, both named after `name`: (its setup, the recording dir, the records dir).
async fn recording_gateway(name: &str) -> (Setup, PathBuf, PathBuf) {
    let dir = estuary_conformance::records::temp_dir(name);
    let records = estuary_conformance::records::temp_dir(&format!("{name}-records"));
    let s = Setup::start(|b| b.set("recording.mode", "full").set("recording.dir", &dir.to_string_lossy()).set("records.dir", &records.to_string_lossy())).await;
    (s, dir, records)
}

/// What the first call in `dir`'s recording sent toward the core's video port `port`: at least
/// 30 H.264 access units, every one but the two at the edges decoded by ffmpeg. Waits for the
/// recorder's flush first. (packets, access units, FU-A/STAP-A packets).
async fn h264_toward_core_decodes(dir: &Path, port: u16) -> (usize, usize, usize) {
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let capture = captures(dir).into_iter().find(|p| p.to_string_lossy().ends_with("-call1.pcapng")).expect("the call's capture");
    let stream = dir.join("to-ims.h264");
    let (packets, frames, fragmented) = h264_elementary_stream(&capture, port, &stream);
    assert!(frames >= 30, "{frames} H.264 access units in {packets} packets toward sipp");
    let decoded = ffmpeg_decode(&stream);
    assert!(decoded >= frames - 2, "ffmpeg decoded {decoded} of {frames} frames");
    (packets, frames, fragmented)
}

/// The RTP toward UDP port `port` on the capture's IMS media lane (interface 3), reassembled
/// into an Annex B stream at `out` by the transcoder's RFC 6184 depacketizer: (packets, access
/// units, packets that were FU-A or STAP-A). Any loss fails the test: the capture is of
/// loopback traffic.
fn h264_elementary_stream(capture: &Path, port: u16, out: &Path) -> (usize, usize, usize) {
    use estuary_transcoder::video::h264::H264Depacketizer;
    use estuary_transcoder::video::Depacketized;
    let tshark = Command::new("tshark")
        .arg("-r")
        .arg(capture)
        .args(["-Y", &format!("frame.interface_id == 3 && udp.dstport == {port}"), "-T", "fields", "-e", "udp.payload"])
        .output()
        .expect("tshark runs (make deps installs it)");
    assert!(tshark.status.success(), "tshark: {}", String::from_utf8_lossy(&tshark.stderr));
    let mut depacketizer = H264Depacketizer::new();
    let mut annexb = Vec::new();
    let (mut packets, mut frames, mut fragmented) = (0, 0, 0);
    for line in String::from_utf8_lossy(&tshark.stdout).lines() {
        let rtp: Vec<u8> = (0..line.len() / 2).map(|i| u8::from_str_radix(&line[2 * i..2 * i + 2], 16).expect("hex")).collect();
        assert!(rtp.len() > 12 && rtp[0] >> 6 == 2, "RTP toward sipp: {line}");
        // No CSRCs or extensions toward IMS: the payload follows the fixed header.
        assert_eq!(rtp[0] & 0x1f, 0, "plain RTP header toward IMS");
        let marker = rtp[1] & 0x80 != 0;
        let seq = u16::from_be_bytes([rtp[2], rtp[3]]);
        let ts = u32::from_be_bytes([rtp[4], rtp[5], rtp[6], rtp[7]]);
        packets += 1;
        // NAL unit types 24 (STAP-A) and 28 (FU-A) are what packetization-mode 0 forbids.
        if matches!(rtp.get(12).map(|b| b & 0x1f), Some(24 | 28)) {
            fragmented += 1;
        }
        match depacketizer.push(seq, ts, marker, &rtp[12..]) {
            Depacketized::Frame(f) => {
                annexb.extend_from_slice(&f.data);
                frames += 1;
            }
            Depacketized::Pending => {}
            other => panic!("packet {packets} toward sipp: {other:?}"),
        }
    }
    std::fs::write(out, &annexb).expect("write the stream");
    (packets, frames, fragmented)
}

/// Decodes the Annex B stream at `path` with ffmpeg, failing on any decoder error; the number
/// of frames decoded.
fn ffmpeg_decode(path: &Path) -> usize {
    let out = Command::new("ffmpeg")
        .args(["-hide_banner", "-v", "error", "-xerror", "-f", "h264", "-i"])
        .arg(path)
        .args(["-f", "framemd5", "-"])
        .output()
        .expect("ffmpeg runs (make deps installs it)");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && stderr.trim().is_empty(), "ffmpeg decoding what sipp received: {stderr}");
    // One framemd5 line per decoded frame; comments start with #.
    String::from_utf8_lossy(&out.stdout).lines().filter(|l| !l.starts_with('#') && !l.trim().is_empty()).count()
}
