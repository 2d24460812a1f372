//! SIGHUP re-reads the configuration file: a changed codec policy applies to the next call
//! while the call in progress goes on, recording switches on, keys that need a restart are named and keep their
//! running values, and a broken file is refused with its key named while the running
//! configuration stays. Another `rx.peers` moves Rx to another PCRF.
//!
//! Needs `sipp` and `cargo build -p estuary` (see conformance/src/lib.rs).

use std::path::Path;
use std::time::{Duration, Instant};

use estuary_conformance::flows::{Registered, Setup};
use estuary_conformance::pcrf::PcrfServer;
use estuary_conformance::records::temp_dir;
use estuary_conformance::sipp::Sipp;
use estuary_conformance::ws_client::{webrtc_offer, Dialog, DEFAULT_WAIT};

async fn answered_call(reg: &mut Registered, media_port: u16) -> Dialog {
    let mut d = reg.client.invite("sip:bob@ims.test", &webrtc_offer(media_port)).await;
    let (_, ok) = reg.client.wait_final(&d.invite, DEFAULT_WAIT).await;
    assert_eq!(ok.status(), 200, "call not answered:\n{}", reg.client.transcript());
    d.update_from_response(&ok);
    reg.client.ack(&mut d).await;
    d
}

/// The payload types of the audio m-line of an SDP body.
fn audio_formats(sdp: &str) -> Vec<String> {
    let line = sdp.lines().find(|l| l.starts_with("m=audio ")).unwrap_or_else(|| panic!("no audio m-line:\n{sdp}"));
    line.split_whitespace().skip(3).map(str::to_owned).collect()
}

/// Waits for the `n`th log line containing `needle`; returns it.
async fn log_line(s: &Setup, needle: &str, n: usize) -> String {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let log = s.gw.log();
        if let Some(line) = log.lines().filter(|l| l.contains(needle)).nth(n - 1) {
            return line.to_owned();
        }
        assert!(Instant::now() < deadline, "no {needle:?} (#{n}) in the log:\n{}", s.gw.log_tail(30));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Every .pcapng file under `dir`.
fn pcapng_files(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(pcapng_files(&path));
        } else if path.extension().is_some_and(|e| e == "pcapng") {
            out.push(path);
        }
    }
    out
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

fn write(path: &Path, text: &str) {
    std::fs::write(path, text).expect("config file written");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_applies_a_new_codec_policy_to_the_next_call_and_refuses_a_broken_file() {
    let dir = temp_dir("operations_reload");
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("estuary.toml");
    write(&file, "[media]\naudio_codecs = [\"PCMU/8000\"]\n");
    let s = Setup::start(|b| b.config_file(&file)).await;
    let mut reg = s.register().await;
    let sipp = Sipp::uas("uas_answer_wait_bye.xml", s.sipp_port).calls(2).start().await;
    let mut first = answered_call(&mut reg, 40000).await;

    // The policy adds PCMA (sipp's callee answers PCMU, which both offers keep), recording
    // starts, and a key that needs a restart changes too.
    let captures = dir.join("captures");
    write(
        &file,
        &format!(
            "[media]\naudio_codecs = [\"PCMU/8000\", \"PCMA/8000\"]\nweb_address = \"127.0.0.2\"\n[recording]\nmode = \"signalling\"\ndir = \"{}\"\n",
            captures.display()
        ),
    );
    s.gw.signal("HUP");
    let line = log_line(&s, "configuration reloaded", 1).await;
    assert!(line.contains("applied=media.audio_codecs, recording.mode, recording.dir"), "{line}");
    assert!(line.contains("needs_restart=media.web_address"), "{line}");
    let mut second = answered_call(&mut reg, 40002).await;

    // A broken file: refused, the key named, the process and its configuration unchanged.
    write(&file, "[media]\naudio_codecs = 5\n");
    s.gw.signal("HUP");
    let refused = log_line(&s, "reload refused", 1).await;
    assert!(refused.contains("media.audio_codecs"), "the key is named: {refused}");
    assert_eq!(s.gw.http_get("/healthz").map(|r| r.0).ok(), Some(200));

    // Both calls are still up and end normally.
    for d in [&mut first, &mut second] {
        let bye = reg.client.bye(d).await;
        assert_eq!(reg.client.wait_response(&bye, DEFAULT_WAIT).await.status(), 200, "{}", reg.client.transcript());
    }
    let run = sipp.wait().await;
    run.assert_success();
    let invites = run.received_requests("INVITE");
    assert_eq!(invites.len(), 2, "{}", run.describe());
    let (before, after) = (audio_formats(&invites[0].body), audio_formats(&invites[1].body));
    assert!(before.contains(&"0".to_owned()) && !before.contains(&"8".to_owned()), "first call offers PCMU only: {before:?}");
    assert!(after.contains(&"8".to_owned()) && after.contains(&"0".to_owned()), "the call after the reload offers PCMU and PCMA: {after:?}");
    // The restart key kept its running value: the browser-facing address did not move.
    assert!(!s.gw.log().contains("127.0.0.2 "), "media.web_address was not applied live");
    // Recording started with the reload: the second call's SIP is in its capture; the first
    // call's INVITE, from before, is in none.
    // (Captures are flushed every second.)
    let holding = |needle: &str| pcapng_files(&captures).into_iter().filter(|f| std::fs::read(f).is_ok_and(|b| contains(&b, needle.as_bytes()))).collect::<Vec<_>>();
    let deadline = Instant::now() + Duration::from_secs(5);
    while holding(&second.call_id).is_empty() || holding(&first.call_id).is_empty() {
        assert!(Instant::now() < deadline, "the calls recorded after the reload: {:?}", pcapng_files(&captures));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // (The first call's BYE came after it: that call's capture has it, and no INVITE.)
    let first_capture = holding(&first.call_id);
    assert!(first_capture.iter().all(|f| std::fs::read(f).is_ok_and(|b| !contains(&b, b"INVITE sip:"))), "nothing recorded before the reload");
    let _ = std::fs::remove_dir_all(dir);
}

/// SIGHUP with another `rx.peers`: the PCRF no longer named gets a DPR and its connection
/// closes, the new one is connected (CER/CEA) and takes the next AAR (a registration's
/// AF_SIGNALLING session), and /metrics lists the peers in service.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_moves_rx_to_another_pcrf_without_a_restart() {
    let (old, new) = (PcrfServer::start("reload-old"), PcrfServer::start("reload-new"));
    let dir = temp_dir("operations_reload_rx");
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("estuary.toml");
    let rx = |peer: &PcrfServer| format!("[rx]\nenabled = true\nsignalling = true\npeers = [\"{}\"]\n", peer.peer_entry());
    write(&file, &rx(&old));
    let s = Setup::start(|b| b.config_file(&file)).await;
    assert!(tokio::task::block_in_place(|| old.wait_up(Duration::from_secs(10))), "{}", s.gw.log_tail(30));

    write(&file, &rx(&new));
    s.gw.signal("HUP");
    let line = log_line(&s, "configuration reloaded", 1).await;
    assert!(line.contains("applied=rx.peers"), "{line}");
    assert!(tokio::task::block_in_place(|| new.wait_up(Duration::from_secs(10))), "the new PCRF connected: {}", s.gw.log_tail(30));
    let deadline = Instant::now() + Duration::from_secs(10);
    while old.connections_up() > 0 {
        assert!(Instant::now() < deadline, "the old PCRF's connection closed (DPR): {}", s.gw.log_tail(30));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let metrics = s.gw.http_get("/metrics").map(|r| r.1).unwrap_or_default();
    let up = |p: &PcrfServer| metrics.lines().find(|l| l.starts_with("estuary_rx_peer_up") && l.contains(&p.peer_entry())).map(str::to_owned);
    assert_eq!(up(&new).as_deref(), Some(format!("estuary_rx_peer_up{{peer=\"{}\",role=\"primary\"}} 1", new.peer_entry()).as_str()), "{metrics}");
    assert_eq!(up(&old), None, "a retired peer is not listed: {metrics}");

    // The next Rx session goes to the new PCRF.
    let reg = s.register().await;
    let aars = tokio::task::block_in_place(|| new.wait_aars(1, Duration::from_secs(10)));
    assert_eq!(aars.len(), 1, "the registration's AF_SIGNALLING AAR: {}", s.gw.log_tail(30));
    assert!(old.aars().is_empty());
    reg.client.close().await;
    let _ = std::fs::remove_dir_all(dir);
}
