//! The headless-Chromium driver itself ([`estuary_conformance::browser`]), proven against a
//! real Chromium: offers carry what WebRTC requires, codec restriction works, two Chromium
//! peers complete an offer/answer, and refusals come back with Chromium's own words.
//!
//! Needs node >= 20, npm (first run) and /usr/bin/chromium; a missing one fails the tests with
//! the reason (`make deps` installs them). One browser serves the whole file except
//! `own_browser_starts_and_leaves_nothing_running`, which proves the cleanup.
//!
//! `ESTUARY_CAPTURE_SDP=1 cargo test -p estuary-conformance --test browser_driver -- capture`
//! rewrites conformance/sdp/chromium/*.offer.sdp from the running Chromium.

use std::path::Path;
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use estuary_conformance::browser::{live_processes_with, Browser};
use serde_json::json;

/// The file's shared browser. Its driver ends when this test process exits (stdin closes).
fn browser() -> MutexGuard<'static, Browser> {
    static B: OnceLock<Mutex<Browser>> = OnceLock::new();
    B.get_or_init(|| {
        if let Err(why) = Browser::available() {
            panic!("headless Chromium unavailable: {why}");
        }
        let b = Browser::start();
        eprintln!(
            "Chromium {} up in {:?}, network namespace: {}",
            b.version(),
            b.startup_time(),
            b.netns()
        );
        Mutex::new(b)
    })
    .lock()
    .unwrap_or_else(|e| e.into_inner())
}

/// The lines of the first m-section of `kind` (its m= line first).
fn m_section<'a>(sdp: &'a str, kind: &str) -> Vec<&'a str> {
    let mut out = Vec::new();
    let mut inside = false;
    for line in sdp.split("\r\n") {
        if line.starts_with("m=") {
            if inside {
                break;
            }
            inside = line.starts_with(&format!("m={kind} "));
        }
        if inside {
            out.push(line);
        }
    }
    out
}

fn assert_webrtc_offer(sdp: &str) {
    assert!(sdp.starts_with("v=0\r\n"), "{sdp}");
    assert!(sdp.ends_with("\r\n"), "CRLF line endings: {sdp:?}");
    for needle in [
        "a=fingerprint:sha-256 ",
        "a=ice-ufrag:",
        "a=ice-pwd:",
        "a=setup:actpass",
    ] {
        assert!(sdp.contains(needle), "offer lacks {needle}:\n{sdp}");
    }
}

/// Every candidate is on loopback when the browser runs in its private namespace.
fn assert_loopback_candidates(b: &Browser, sdp: &str) {
    let candidates: Vec<&str> = sdp
        .split("\r\n")
        .filter(|l| l.starts_with("a=candidate:"))
        .collect();
    assert!(
        !candidates.is_empty(),
        "ICE gathering put no candidate in:\n{sdp}"
    );
    if b.netns().starts_with("private") {
        for c in &candidates {
            assert!(
                c.contains(" 127.0.0.1 "),
                "non-loopback candidate {c:?} in a private namespace"
            );
        }
    }
}

#[test]
fn audio_offer_carries_dtls_ice_and_opus() {
    let mut b = browser();
    b.new_pc("audio-offer");
    let sdp = b
        .offer("audio-offer", &["audio"], None)
        .expect("Chromium creates an audio offer");
    b.close("audio-offer");
    assert_webrtc_offer(&sdp);
    assert_loopback_candidates(&b, &sdp);
    let audio = m_section(&sdp, "audio");
    assert!(
        audio[0].starts_with("m=audio ") && audio[0].contains(" UDP/TLS/RTP/SAVPF "),
        "{sdp}"
    );
    assert!(audio.iter().any(|l| l.ends_with(" opus/48000/2")), "{sdp}");
    assert!(sdp.contains("a=rtcp-mux\r\n"), "{sdp}");
}

#[test]
fn audio_codecs_restricted_to_opus() {
    let mut b = browser();
    b.new_pc("opus-only");
    let sdp = b
        .offer("opus-only", &["audio"], Some(&["opus"]))
        .expect("Chromium creates an opus-only offer");
    b.close("opus-only");
    assert_webrtc_offer(&sdp);
    let audio = m_section(&sdp, "audio");
    let rtpmaps: Vec<&str> = audio
        .iter()
        .copied()
        .filter(|l| l.starts_with("a=rtpmap:"))
        .collect();
    eprintln!("opus-only offer: {}\n  {}", audio[0], rtpmaps.join("\n  "));
    assert!(
        rtpmaps.iter().any(|l| l.ends_with(" opus/48000/2")),
        "{sdp}"
    );
    for absent in ["PCMU/", "PCMA/", "G722/"] {
        assert!(
            !audio.iter().any(|l| l.contains(absent)),
            "{absent} offered despite the restriction:\n{sdp}"
        );
    }
    // The m-line lists exactly the payload types that have an rtpmap.
    let pts: Vec<&str> = audio[0].split(' ').skip(3).collect();
    assert_eq!(pts.len(), rtpmaps.len(), "{sdp}");

    // A codec Chromium lacks is refused as an error reply; the driver carries on.
    b.new_pc("bogus-codec");
    let err = b
        .offer("bogus-codec", &["audio"], Some(&["NOPE"]))
        .expect_err("no such codec");
    assert!(err.contains("NOPE"), "{err}");
    b.close("bogus-codec");
}

#[test]
fn two_chromium_peers_complete_offer_answer() {
    let mut b = browser();
    b.new_pc("caller");
    b.new_pc("callee");
    let offer = b
        .offer("caller", &["audio", "video", "data"], None)
        .expect("offer");
    let answer = b
        .remote_offer("callee", &offer)
        .expect("Chromium answers Chromium's offer");
    assert!(answer.contains("a=fingerprint:sha-256 "), "{answer}");
    assert!(
        answer.contains("a=setup:active"),
        "Chromium answers actpass with active:\n{answer}"
    );
    for kind in ["audio", "video", "application"] {
        assert!(
            !m_section(&answer, kind).is_empty(),
            "answer lacks m={kind}:\n{answer}"
        );
    }
    b.remote_answer("caller", &answer)
        .expect("caller accepts the answer");
    let stats = b.stats("caller").expect("stats");
    assert_eq!(stats["signalingState"], json!("stable"), "{stats}");
    b.close("caller");
    b.close("callee");
}

#[test]
fn garbage_answer_is_refused_verbatim() {
    let mut b = browser();
    b.new_pc("garbage");
    b.offer("garbage", &["audio"], None).expect("offer");
    let err = b
        .remote_answer("garbage", "this is not SDP")
        .expect_err("garbage refused");
    eprintln!("Chromium on a garbage answer: {err}");
    assert!(err.contains("setRemoteDescription"), "{err}");
    assert!(err.contains("Failed to parse SessionDescription"), "{err}");
    // The refusal left the driver and the connection usable.
    let reply = b.request(json!({"cmd": "ping"}));
    assert_eq!(reply["ok"], json!(true), "{reply}");
    let stats = b.stats("garbage").expect("stats after a refusal");
    assert_eq!(
        stats["signalingState"],
        json!("have-local-offer"),
        "{stats}"
    );
    b.close("garbage");
}

#[test]
fn ims_style_offer_without_fingerprint_is_refused() {
    let ims_offer = "v=0\r\n\
        o=ims-core 4711 4711 IN IP4 192.0.2.10\r\n\
        s=-\r\n\
        c=IN IP4 192.0.2.10\r\n\
        t=0 0\r\n\
        m=audio 49170 RTP/AVP 0 8 101\r\n\
        a=rtpmap:0 PCMU/8000\r\n\
        a=rtpmap:8 PCMA/8000\r\n\
        a=rtpmap:101 telephone-event/8000\r\n\
        a=fmtp:101 0-15\r\n\
        a=ptime:20\r\n\
        a=sendrecv\r\n";
    let mut b = browser();
    b.new_pc("ims-offer");
    let err = b
        .remote_offer("ims-offer", ims_offer)
        .expect_err("Chromium refuses RTP/AVP without DTLS");
    eprintln!("Chromium on an IMS-style RTP/AVP offer: {err}");
    assert!(err.contains("setRemoteDescription"), "{err}");
    assert!(err.to_lowercase().contains("fingerprint"), "{err}");
    b.close("ims-offer");
}

/// The offers Chromium makes, with the fake devices' tracks as a calling web app would send
/// them; written to conformance/sdp/chromium/ with ESTUARY_CAPTURE_SDP=1.
#[test]
fn capture_chromium_offers() {
    let capture = std::env::var_os("ESTUARY_CAPTURE_SDP").is_some_and(|v| v == "1");
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("sdp/chromium");
    let mut b = browser();
    for (file, media) in [
        ("audio", &["audio"][..]),
        ("audio-video", &["audio", "video"][..]),
        ("audio-video-data", &["audio", "video", "data"][..]),
    ] {
        let pc = format!("capture-{file}");
        b.new_pc(&pc);
        let sdp = b
            .offer_with_fake_media(&pc, media)
            .expect("offer with fake media");
        b.close(&pc);
        assert_webrtc_offer(&sdp);
        assert_loopback_candidates(&b, &sdp);
        let kinds: Vec<&str> = sdp
            .split("\r\n")
            .filter_map(|l| l.strip_prefix("m="))
            .map(|l| l.split(' ').next().unwrap_or_default())
            .collect();
        let want: Vec<&str> = media
            .iter()
            .map(|m| if *m == "data" { "application" } else { m })
            .collect();
        assert_eq!(kinds, want, "{sdp}");
        if capture {
            std::fs::create_dir_all(&dir).expect("create sdp/chromium");
            let path = dir.join(format!("{file}.offer.sdp"));
            std::fs::write(&path, sdp.as_bytes()).expect("write the captured offer");
            eprintln!("captured {} ({} bytes)", path.display(), sdp.len());
        }
    }
}

/// A browser of its own: it starts quickly, and dropping it leaves no Chromium process and no
/// profile behind.
#[test]
fn own_browser_starts_and_leaves_nothing_running() {
    if let Err(why) = Browser::available() {
        panic!("headless Chromium unavailable: {why}");
    }
    let t = Instant::now();
    let mut b = Browser::start();
    let up = t.elapsed();
    eprintln!("own Chromium {} up in {up:?} ({})", b.version(), b.netns());
    assert!(
        up < Duration::from_secs(30),
        "Chromium took {up:?} to start"
    );
    b.new_pc("x");
    b.offer("x", &["audio"], None).expect("offer");

    // Calls are bounded: one that overruns is a driver failure (a panic in the plain
    // methods, never a refusal), and its late reply is skipped by the next call.
    b.set_timeout(Duration::from_millis(1));
    let overrun = b.try_request(json!({"cmd": "offer", "pc": "x", "media": ["video"]}));
    let msg = overrun.expect_err("a 1 ms limit is overrun");
    assert!(msg.contains("no reply within the time limit"), "{msg}");
    b.set_timeout(Duration::from_secs(20));
    let stats = b.stats("x").expect("stats after an overrun");
    assert_eq!(
        stats["signalingState"],
        json!("have-local-offer"),
        "{stats}"
    );

    let profile = b.profile_dir().to_path_buf();
    let marker = profile.to_str().expect("utf-8 profile path").to_string();
    assert!(
        !marker.is_empty() && profile.is_dir(),
        "profile dir {profile:?}"
    );
    assert!(
        !live_processes_with(&marker).is_empty(),
        "no Chromium process found with {marker}"
    );

    let t = Instant::now();
    drop(b);
    eprintln!("own Chromium shut down in {:?}", t.elapsed());
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let left = live_processes_with(&marker);
        if left.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "Chromium processes left running: {left:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(!profile.exists(), "profile {profile:?} left behind");
}
