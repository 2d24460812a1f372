//! What `make run` gives a Firefox user who presses Video: the demo page calls the built-in
//! IMS test peer's echo (`ims.next_hop = "builtin"`, no sipp), then adds the camera by a
//! re-INVITE. Debian's Firefox ESR has no H.264, and the test peer answers video with H.264
//! only and echoes it, so the picture Firefox decodes went VP8 -> H.264 (gateway, toward the
//! peer) -> echo -> H.264 -> VP8 (gateway, toward Firefox): both video channels of the
//! transcoder are open while it runs. Then the camera goes off (a second re-INVITE) and the
//! call ends cleanly. Browser and daemon share one loopback-only namespace.
//!
//! Needs `cargo build -p estuary` (see conformance/src/lib.rs).

use std::time::Duration;

use estuary_conformance::browser::{Browser, BrowserKind, Netns};
use estuary_conformance::demo_page::*;
use estuary_conformance::gateway::Gateway;
use estuary_conformance::net::in_loopback_netns;
use serde_json::Value;

const TEST: &str = "firefox_demo_page_video_through_the_builtin_h264_echo";

#[test]
fn firefox_demo_page_video_through_the_builtin_h264_echo() {
    let kind = BrowserKind::Firefox;
    Browser::require_kind(kind);
    if !in_loopback_netns(TEST) {
        return;
    }
    estuary_conformance::browser_runtime().block_on(async {
        let records = estuary_conformance::records::temp_dir("demo-video-builtin");
        let gw = Gateway::builder().set("ims.next_hop", "builtin").set("records.dir", &records.to_string_lossy()).start().await;
        let mut b = tokio::task::block_in_place(|| Browser::start_kind_in(kind, Netns::Inherit));
        let state = register_page(&gw, &mut b, "any");
        assert_eq!(state.as_deref(), Ok("registered"), "the test peer accepts every REGISTER\n--- page log\n{}\n--- daemon\n{}", page_log(&mut b), gw.log_tail(40));

        tokio::task::block_in_place(|| {
            b.page_fill(PAGE, "#target", "sip:echo@ims.test").unwrap();
            b.page_click(PAGE, "#dial").unwrap();
        });
        let state = wait_call(&mut b, &["confirmed", "failed", "ended"]);
        assert_eq!(state.as_deref(), Ok("confirmed"), "echo@ not established\n--- page log\n{}\n--- daemon\n{}", page_log(&mut b), gw.log_tail(60));

        let on = toggle_video(&mut b);
        assert_eq!(on.as_deref(), Ok("on"), "video added\n--- page log\n{}\n--- daemon\n{}", page_log(&mut b), gw.log_tail(80));
        // Frames of the echo decoded, and the transcoder's channels seen while they flow
        // (bounded wait).
        let mut stats = Value::Null;
        let mut channels = None;
        for _ in 0..80 {
            tokio::time::sleep(Duration::from_millis(250)).await;
            stats = tokio::task::block_in_place(|| b.page_stats(PAGE)).unwrap_or(Value::Null);
            // The last value read while the echo flows.
            channels = gw.metric("estuary_transcoder_video_channels_open").or(channels);
            if number(video(&stats, "inbound-rtp"), "framesDecoded") >= 30.0 {
                break;
            }
        }
        let frames_in = gw.metric("estuary_transcoder_video_frames_in_total");
        let frames_out = gw.metric("estuary_transcoder_video_frames_out_total");
        let inbound = video(&stats, "inbound-rtp");
        let log = page_log(&mut b);
        let context = || format!("stats {stats:#}\n--- page log\n{log}\n--- daemon\n{}", gw.log_tail(80));
        assert!(number(video(&stats, "outbound-rtp"), "framesEncoded") >= 30.0, "Firefox sent its camera: {}", context());
        assert!(number(inbound, "framesDecoded") >= 30.0, "Firefox decodes its echoed camera: {}", context());
        let codec = inbound.and_then(|r| r["codec"].as_str()).unwrap_or_default();
        assert!(codec.eq_ignore_ascii_case("video/VP8/90000"), "Firefox decodes VP8 (it has no H.264), got {codec:?}: {}", context());
        assert_eq!(channels, Some(2.0), "one video channel each way, VP8 -> H.264 and H.264 -> VP8: {}", context());
        assert!(frames_out.unwrap_or(0.0) >= 60.0, "both channels encoded frames: in {frames_in:?} out {frames_out:?}: {}", context());
        assert!(number(inbound, "bytes") > 0.0, "{}", context());
        // What the page shows of the echo is a picture, not black: its remote <video> against
        // its own camera's preview (Firefox's fake camera).
        let remote = tokio::task::block_in_place(|| b.page_video_frame(PAGE, "#remote-video")).unwrap_or_else(|e| panic!("the page shows no echoed frame: {e}: {}", context()));
        let local = tokio::task::block_in_place(|| b.page_video_frame(PAGE, "#local-video")).unwrap_or_else(|e| panic!("the page shows no camera preview: {e}: {}", context()));
        let (luma, reference) = (number(Some(&remote), "meanLuma"), number(Some(&local), "meanLuma"));
        assert!(luma > 16.0, "the echoed picture is not black: {remote} (camera {local})");
        assert!((luma - reference).abs() < 0.25 * reference, "and about as bright as the camera's: {remote} against {local}");
        assert!(number(inbound, "frameWidth") > 0.0 && number(inbound, "frameHeight") > 0.0, "Firefox's stats give the echo a size: {}", context());
        assert!(number(audio(&stats, "inbound-rtp"), "packets") >= 50.0, "the echoed audio goes on: {}", context());
        let bundled = stats["transports"].as_array().map_or(0, Vec::len);
        assert_eq!(bundled, 1, "video rides the call's one BUNDLE transport: {}", context());

        let off = toggle_video(&mut b);
        assert_eq!(off.as_deref(), Ok("off"), "video removed\n--- page log\n{}\n--- daemon\n{}", page_log(&mut b), gw.log_tail(60));
        tokio::time::sleep(Duration::from_millis(500)).await;
        let after_off = tokio::task::block_in_place(|| b.page_stats(PAGE)).unwrap_or(Value::Null);
        assert_eq!(after_off["connectionState"], "connected", "the call goes on without video: {after_off:#}");
        hang_up(&mut b);

        // Ended cleanly: the call is released with its transcoder channels, and its record
        // says the browser hung up an answered call (bounded wait).
        let mut released = false;
        for _ in 0..50 {
            if gw.metric("estuary_calls_active") == Some(0.0) && gw.metric("estuary_transcoder_video_channels_open") == Some(0.0) {
                released = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(
            released,
            "call and video channels released: calls {:?}, channels {:?}\n--- daemon\n{}",
            gw.metric("estuary_calls_active"),
            gw.metric("estuary_transcoder_video_channels_open"),
            gw.log_tail(60)
        );
        let r = tokio::task::block_in_place(|| estuary_conformance::records::wait_records(&records, 1)).remove(0);
        assert_eq!((r["to"].as_str(), r["status"].as_u64(), r["reason"].as_str()), (Some("sip:echo@ims.test"), Some(200), Some("bye_from_web")), "{r}");
        // The record's video stream: VP8 toward the browser, H.264 toward the peer, and what
        // the peer echoed decoded without an error into pictures of a real size.
        let st = &r["streams"][1];
        assert_eq!(
            (st["kind"].as_str(), st["web_codec"].as_str(), st["ims_codec"].as_str(), st["transcoded"].as_bool()),
            (Some("video"), Some("VP8/90000"), Some("H264/90000"), Some(true)),
            "{r}"
        );
        assert!(st["ims"]["received"].as_u64().unwrap_or(0) >= 30, "the peer echoed the H.264 back: {r}");
        let to_web = &st["video_transcoding"]["to_web"];
        assert_eq!(to_web["decode_errors"].as_u64(), Some(0), "the echoed H.264 decodes: {r}");
        assert!(to_web["frames_out"].as_u64().unwrap_or(0) >= 30, "{r}");
        assert!(to_web["width"].as_u64().unwrap_or(0) > 0 && to_web["height"].as_u64().unwrap_or(0) > 0, "{r}");
        assert!(!gw.log().contains("panicked"), "{}", gw.log_tail(60));
        println!(
            "figures: Firefox demo page -> builtin echo@ with video: encoded {} and decoded {} VP8 frames ({} bytes in), \
             {} video channels open, transcoder frames in {} out {}, echo decoded by the gateway at {}x{}, shown at {}x{} mean luma {luma:.1} (camera {reference:.1})",
            number(video(&stats, "outbound-rtp"), "framesEncoded"),
            number(inbound, "framesDecoded"),
            number(inbound, "bytes"),
            channels.unwrap_or(0.0),
            frames_in.unwrap_or(0.0),
            frames_out.unwrap_or(0.0),
            to_web["width"],
            to_web["height"],
            remote["width"],
            remote["height"]
        );
        println!("- call record: {r}");
        let _ = std::fs::remove_dir_all(&records);
    });
}
