//! `estuary replay --live`: every corpus scenario played against a running daemon over
//! loopback (the replayer is the browser on a real WSS connection and the core on the daemon's
//! next-hop UDP port), with the daemon drawing its own identifiers (no engine seed): the
//! replayer must map what the far ends echo to the live values and still find the output as
//! recorded. A daemon configured to behave differently must fail with a diff.
//!
//! Needs `cargo build -p estuary`.

use std::path::{Path, PathBuf};
use std::process::Command;

use estuary_conformance::gateway::{estuary_binary, Gateway};
use estuary_conformance::net::free_udp_port;

fn captures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("captures")
}

/// A daemon whose next hop is a free UDP port (where the replay will play the core), started
/// with the extra settings.
async fn daemon(sets: &[(&str, &str)]) -> (Gateway, u16) {
    let core = free_udp_port();
    let mut b = Gateway::builder().next_hop_udp(core);
    for (k, v) in sets {
        b = b.set(k, v);
    }
    (b.start().await, core)
}

/// `estuary replay SCENARIO --live` against `gw`: (passed, what it printed).
fn replay_live(gw: &Gateway, core: u16, scenario: &str) -> (bool, String) {
    replay_live_with(gw, core, scenario, &[])
}

fn replay_live_with(gw: &Gateway, core: u16, scenario: &str, extra: &[&str]) -> (bool, String) {
    let dir = captures().join(scenario);
    let out = Command::new(estuary_binary())
        .arg("replay")
        .arg(dir.join("input.pcapng"))
        .arg("--expect")
        .arg(dir.join("expected.pcapng"))
        .arg("--live")
        .args(["--set", &format!("web.ws_listen={}", gw.ws_addr)])
        .args(["--set", &format!("web.wss_listen={}", gw.wss_addr)])
        .args(["--set", &format!("ims.listen={}", gw.ims_addr)])
        .args(["--set", &format!("ims.next_hop=sip:127.0.0.1:{core}")])
        .args(extra)
        .output()
        .expect("run estuary replay --live");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(matches!(out.status.code(), Some(0 | 1)), "replay --live could not run: {text}");
    (out.status.success(), text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_scenario_replays_live_against_a_running_daemon() {
    let mut names: Vec<String> = std::fs::read_dir(captures())
        .unwrap()
        .flatten()
        .filter(|d| d.path().join("input.pcapng").is_file())
        .map(|d| d.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert!(names.len() >= 8, "{names:?}");
    for name in names {
        // A fresh daemon per scenario: a finished one deregisters its browser toward a core
        // that is gone, and those retransmissions must not reach the next scenario's core.
        let (gw, core) = daemon(&[]).await;
        let (ok, text) = tokio::task::block_in_place(|| replay_live(&gw, core, &name));
        assert!(ok && text.starts_with("ok: "), "{name} live:\n{text}\n--- daemon\n{}", gw.log_tail(60));
        println!("{name} (live): {}", text.trim());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_daemon_that_behaves_differently_fails_the_live_replay() {
    // Recorded with PCMU and PCMA offered toward IMS; this daemon offers PCMA only, so its
    // INVITE (third message toward IMS, after the two REGISTERs) differs, and the recorded
    // PCMU answer then fails the call toward the browser.
    let (gw, core) = daemon(&[("media.audio_codecs", "[\"PCMA/8000\"]")]).await;
    let (ok, text) = tokio::task::block_in_place(|| replay_live(&gw, core, "call-web-to-ims"));
    assert!(!ok, "a different offer toward IMS must fail:\n{text}");
    assert!(text.contains("IMS side, message 3 differs"), "{text}");
    assert!(
        text.lines().any(|l| l.starts_with("  -") && l.ends_with("a=rtpmap:0 PCMU/8000")),
        "the diff names the missing codec:\n{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_daemon_that_sends_nothing_stops_the_live_replay_in_bounded_time() {
    // The daemon's next hop is not where the replay plays the core: the REGISTER never
    // arrives, so the recorded 401 is never due.
    let (gw, _) = daemon(&[]).await;
    let elsewhere = free_udp_port();
    let started = std::time::Instant::now();
    let (ok, text) = tokio::task::block_in_place(|| replay_live_with(&gw, elsewhere, "register-digest", &["--wait", "1"]));
    assert!(!ok, "{text}");
    assert!(text.contains("stopped before input 2 (SIP/2.0 401 Unauthorized)"), "{text}");
    assert!(text.contains("IMS side, message 1 differs (2 expected, 0 emitted)"), "{text}");
    assert!(started.elapsed() < std::time::Duration::from_secs(10), "bounded by --wait: {:?}", started.elapsed());
}
