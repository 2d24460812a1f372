//! `estuary sdp web-to-ims|ims-to-web FILE`: the engine's output for an offer, the codec plan,
//! and a reason with exit 1 for an offer the gateway would refuse.

use std::io::Write;
use std::process::{Command, Stdio};

const BIN: &str = env!("CARGO_BIN_EXE_estuary");
const CASES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../conformance/sdp/cases");

fn sdp(args: &[&str], stdin: Option<&[u8]>) -> (i32, String, String) {
    let mut child = Command::new(BIN)
        .arg("sdp")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run estuary");
    if let Some(b) = stdin {
        child.stdin.take().unwrap().write_all(b).unwrap();
    }
    drop(child.stdin.take());
    let out = child.wait_with_output().unwrap();
    (
        out.status.code().expect("exit code"),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn a_browser_offer_becomes_an_ims_offer_with_its_plan() {
    let file = format!("{CASES}/web-audio-opus-transcode/1-web-offer.sdp");
    let (code, out, err) = sdp(&["web-to-ims", &file], None);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("m=audio 50002 RTP/AVP 0 8 101"), "{out}");
    assert!(!out.contains("ice-ufrag") && !out.contains("fingerprint"), "{out}");
    assert!(out.contains("m-line 0: web 111 opus/48000/2 <-> ims 0 PCMU/8000 (transcode)"), "{out}");
    assert!(out.contains("m-line 0: dtmf web 110/48000 <-> ims 101/8000"), "{out}");
}

#[test]
fn stdin_and_overrides_select_sdes_with_masked_keys() {
    let body = std::fs::read(format!("{CASES}/web-audio-g711/1-web-offer.sdp")).unwrap();
    let (code, out, err) = sdp(&["web-to-ims", "-", "--set", "media.ims_profile=RTP/SAVP"], Some(&body));
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("m=audio 50002 RTP/SAVP 0 8 126"), "{out}");
    assert!(out.contains("a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:<key>"), "{out}");
}

#[test]
fn an_ims_offer_becomes_a_webrtc_offer() {
    let file = format!("{CASES}/ims-offer-volte/1-ims-offer.sdp");
    let (code, out, err) = sdp(&["ims-to-web", &file], None);
    assert_eq!(code, 0, "{err}");
    for want in ["UDP/TLS/RTP/SAVPF 0 8 105", "a=ice-lite", "a=setup:actpass", "a=group:BUNDLE 0", "a=rtcp-mux"] {
        assert!(out.contains(want), "{want}: {out}");
    }
}

#[test]
fn refusals_exit_1_with_the_reason() {
    let file = format!("{CASES}/ims-offer-amr-only/1-ims-offer.sdp");
    let (code, out, err) = sdp(&["ims-to-web", &file], None);
    assert_eq!((code, out.as_str()), (1, ""));
    assert!(err.contains("488") && err.contains("no codec a browser can take"), "{err}");
    let (code, _, err) = sdp(&["web-to-ims", "-"], Some(b"not sdp"));
    assert_eq!(code, 1);
    assert!(err.contains("400") && err.contains("v="), "{err}");
    let (code, _, err) = sdp(&["web-to-ims", "/nonexistent.sdp"], None);
    assert_eq!(code, 1);
    assert!(err.contains("/nonexistent.sdp"), "{err}");
}
