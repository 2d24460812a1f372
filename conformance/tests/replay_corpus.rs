//! `estuary replay` over the capture corpus (conformance/captures/<scenario>/, recorded from
//! real Chromium + JsSIP <-> daemon <-> sipp sessions by `make corpus`): every scenario's
//! input must reproduce its expected output, and an expectation altered by one status code
//! must fail with a diff that names it.
//!
//! Needs `cargo build -p estuary`.

use std::path::{Path, PathBuf};
use std::process::Command;

use estuary_conformance::corpus;
use estuary_conformance::gateway::estuary_binary;

fn scenarios() -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("captures");
    let mut v: Vec<PathBuf> = std::fs::read_dir(&root)
        .unwrap_or_else(|e| panic!("{}: {e}", root.display()))
        .flatten()
        .map(|d| d.path())
        .filter(|p| p.join("input.pcapng").is_file())
        .collect();
    v.sort();
    v
}

fn replay(input: &Path, expected: &Path) -> (bool, String) {
    let out = Command::new(estuary_binary())
        .arg("replay")
        .arg(input)
        .arg("--expect")
        .arg(expected)
        .output()
        .expect("run estuary replay");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(matches!(out.status.code(), Some(0 | 1)), "replay could not run: {text}");
    (out.status.success(), text)
}

#[test]
fn every_recorded_scenario_replays_to_its_expected_output() {
    let all = scenarios();
    // Each scenario and what makes it that scenario (on the browser side or toward IMS).
    let want: &[(&str, &[&str])] = &[
        ("register-digest", &["SIP/2.0 401 Unauthorized", "REGISTER sip:"]),
        ("call-web-to-ims", &["INVITE sip:bob@ims.test", "BYE sip:"]),
        ("call-ims-to-web", &["INVITE sip:", "SIP/2.0 180 Ringing"]),
        ("cancel", &["CANCEL sip:", "SIP/2.0 487"]),
        ("hold-resume", &["a=sendonly", "a=recvonly"]),
        ("dtmf-info", &["INFO sip:"]),
        ("early-media", &["SIP/2.0 183 Session Progress"]),
    ];
    let names: Vec<String> = all.iter().map(|d| d.file_name().unwrap().to_string_lossy().into_owned()).collect();
    for (name, needles) in want {
        assert!(names.iter().any(|n| n == name), "the corpus lacks {name}: {names:?}");
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("captures").join(name);
        let text: String = ["input.pcapng", "expected.pcapng"]
            .iter()
            .flat_map(|f| corpus::read_capture(&dir.join(f)))
            .map(|d| String::from_utf8_lossy(&d.4).into_owned())
            .collect();
        for n in *needles {
            assert!(text.contains(n), "{name} has no {n:?}");
        }
    }
    for dir in all {
        assert!(dir.join("README.md").is_file(), "{} says how it was recorded", dir.display());
        let (ok, text) = replay(&dir.join("input.pcapng"), &dir.join("expected.pcapng"));
        assert!(ok && text.starts_with("ok: "), "{}:\n{text}", dir.display());
        println!("{}: {}", dir.file_name().unwrap().to_string_lossy(), text.trim());
    }
}

#[test]
fn an_altered_expectation_fails_with_a_diff_naming_it() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("captures/call-web-to-ims");
    let mut expected = corpus::read_capture(&dir.join("expected.pcapng"));
    // The gateway's 200 to the browser's INVITE becomes a 486.
    let ok = expected
        .iter_mut()
        .find(|d| d.1 == 0 && d.4.starts_with(b"SIP/2.0 200") && String::from_utf8_lossy(&d.4).contains(" INVITE\r\n"))
        .expect("a 200 to the INVITE on the browser side");
    let text = String::from_utf8_lossy(&ok.4).replacen("SIP/2.0 200 OK", "SIP/2.0 486 Busy Here", 1);
    ok.4 = text.into_bytes();
    let altered = std::env::temp_dir().join(format!("estuary-altered-{}.pcapng", std::process::id()));
    corpus::write_capture(&altered, &expected.iter().collect::<Vec<_>>());
    let (ok, text) = replay(&dir.join("input.pcapng"), &altered);
    let _ = std::fs::remove_file(&altered);
    assert!(!ok, "the altered expectation must fail:\n{text}");
    assert!(text.contains("browser side"), "{text}");
    assert!(text.contains("- SIP/2.0 486 Busy Here") && text.contains("+ SIP/2.0 200 OK"), "the diff names the difference:\n{text}");
}
