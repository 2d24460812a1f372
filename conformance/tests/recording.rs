//! Per-call captures written by the real daemon and read back by tshark: the files exist
//! where `recording.dir` says, every SIP message of a call is in its call's file on the right
//! interface (browser side, IMS side), SIP outside calls in the day's signalling file, no
//! packet is malformed to tshark, and in `full` mode the browser's media is there decrypted
//! (its payloads equal what the IMS side carried, which SRTP ciphertext never would).
//!
//! Needs `cargo build -p estuary`, tshark, and for the media test Chromium and sipp.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use estuary_conformance::browser::Browser;
use estuary_conformance::flows::Setup;
use estuary_conformance::gateway::Gateway;
use estuary_conformance::net::{free_udp_port, in_loopback_netns};
use estuary_conformance::records::captures;
use estuary_conformance::ws_client::{webrtc_offer, WsSipClient, DEFAULT_WAIT};
use estuary_conformance::browser_runtime;

fn temp_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("estuary-rec-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

/// tshark's fields for each packet matching `filter`, tab-separated.
fn tshark(file: &Path, filter: &str, fields: &[&str], extra: &[&str]) -> Vec<String> {
    let mut cmd = Command::new("tshark");
    cmd.arg("-r").arg(file).args(extra).args(["-Y", filter, "-T", "fields"]);
    for f in fields {
        cmd.args(["-e", f]);
    }
    let out = cmd.output().expect("tshark runs (make deps installs it)");
    assert!(out.status.success(), "tshark -r {}: {}", file.display(), String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).lines().map(str::to_owned).collect()
}

fn assert_clean(file: &Path) {
    let bad = tshark(file, "_ws.malformed || _ws.expert.severity >= \"error\"", &["frame.number"], &[]);
    assert!(bad.is_empty(), "{}: tshark finds malformed packets {bad:?}", file.display());
}

/// Waits (bounded) until the recorder flushed `n` files.
async fn wait_files(dir: &Path, n: usize) -> Vec<PathBuf> {
    for _ in 0..50 {
        let f = captures(dir);
        if f.len() >= n && f.iter().all(|p| std::fs::metadata(p).map(|m| m.len() > 200).unwrap_or(false)) {
            return f;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    captures(dir)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signalling_recording_puts_each_call_in_its_own_capture() {
    let dir = temp_dir("sig");
    let gw = Gateway::builder()
        .set("recording.mode", "signalling")
        .set("recording.dir", &dir.to_string_lossy())
        .start()
        .await;
    let mut c = WsSipClient::connect(gw.ws_addr, "alice", "ims.test", "x").await;
    assert_eq!(c.register(600, DEFAULT_WAIT).await.last().map(|r| r.status()), Some(200));
    let (mut d, _) = c.call_answered("sip:echo@ims.test", &webrtc_offer(50_010)).await;
    let bye = c.bye(&mut d).await;
    assert_eq!(c.wait_response(&bye, DEFAULT_WAIT).await.status(), 200);
    tokio::time::sleep(Duration::from_millis(1500)).await;

    let files = wait_files(&dir, 2).await;
    let call = files.iter().find(|p| p.to_string_lossy().ends_with("-call1.pcapng")).unwrap_or_else(|| panic!("no call capture in {files:?}"));
    let general = files.iter().find(|p| p.to_string_lossy().ends_with("signalling.pcapng")).unwrap_or_else(|| panic!("no signalling capture in {files:?}"));
    for f in [call, general] {
        assert_clean(f);
    }
    let regs = tshark(general, "sip.Method == \"REGISTER\"", &["frame.interface_id"], &[]);
    assert!(regs.contains(&"0".to_owned()) && regs.contains(&"1".to_owned()), "REGISTER on both sides: {regs:?}");
    // The call's file: INVITE, 200 and BYE on the browser side (interface 0) and the IMS
    // side (interface 1), and no REGISTER.
    let msgs = tshark(call, "sip", &["frame.interface_id", "sip.Method", "sip.Status-Code", "sip.CSeq.method"], &[]);
    let has = |iface: &str, what: &str| msgs.iter().any(|l| l.starts_with(iface) && l.contains(what));
    for iface in ["0", "1"] {
        for what in ["INVITE\t\t", "\t200\tINVITE", "BYE\t\t", "\t200\tBYE"] {
            assert!(has(iface, what), "interface {iface} lacks {what:?}: {msgs:#?}");
        }
    }
    assert!(!msgs.iter().any(|l| l.contains("REGISTER")), "{msgs:#?}");
    let names = tshark(call, "frame.number == 1", &["frame.interface_name"], &[]);
    assert!(names.first().is_some_and(|n| n.contains("SIP")), "interfaces are named: {names:?}");
    let _ = std::fs::remove_dir_all(&dir);
}

const FULL: &str = "full_recording_holds_the_browser_media_decrypted";

#[test]
fn full_recording_holds_the_browser_media_decrypted() {
    Browser::require();
    if !in_loopback_netns(FULL) {
        return;
    }
    browser_runtime().block_on(async {
        let dir = temp_dir("full");
        let s = Setup::start(|b| b.set("recording.mode", "full").set("recording.dir", &dir.to_string_lossy())).await;
        let mut reg = s.register().await;
        let media_port = free_udp_port();
        let sipp = s.echo_uas("uas_answer_echo.xml", media_port).await;
        let mut b = tokio::task::block_in_place(|| Browser::with_pc("a"));
        let offer = tokio::task::block_in_place(|| b.offer_with_fake_media("a", &["audio"])).expect("offer");
        let (mut d, ok) = reg.client.call_answered("sip:bob@ims.test", &offer).await;
        tokio::task::block_in_place(|| b.remote_answer("a", &ok.body)).unwrap();
        tokio::time::sleep(Duration::from_secs(3)).await;
        let bye = reg.client.bye(&mut d).await;
        let _ = reg.client.wait_response(&bye, DEFAULT_WAIT).await;
        let _ = sipp.wait().await;
        tokio::time::sleep(Duration::from_millis(1500)).await;

        let files = wait_files(&dir, 2).await;
        let call = files.iter().find(|p| p.to_string_lossy().ends_with("-call1.pcapng")).unwrap_or_else(|| panic!("no call capture in {files:?}"));
        assert_clean(call);
        let rtp = ["-o", "rtp.heuristic_rtp:TRUE"];
        // Wireshark learns from the SDP in the capture that the browser's flow is SRTP and
        // labels its payload srtp.enc_payload; the bytes are the decrypted ones all the same.
        let fields = ["rtp.p_type", "rtp.payload", "srtp.enc_payload"];
        let payloads = |iface: u32| -> Vec<(String, String)> {
            tshark(call, &format!("rtp && frame.interface_id == {iface}"), &fields, &rtp)
                .into_iter()
                .map(|l| {
                    let f: Vec<&str> = l.split('\t').collect();
                    let payload = f.iter().skip(1).find(|p| !p.is_empty()).copied().unwrap_or_default();
                    (f[0].to_owned(), payload.to_owned())
                })
                .collect()
        };
        let (web, ims) = (payloads(2), payloads(3));
        assert!(web.len() >= 100 && ims.len() >= 100, "media on both sides: web {} ims {}", web.len(), ims.len());
        assert!(web.iter().all(|(pt, p)| pt == "0" && p.len() == 320), "PCMU as the browser sent it, 160 bytes each");
        // Passthrough: the browser's payloads are what IMS got, byte for byte. Were the web
        // lane still SRTP, no payload would match.
        let ims_payloads: std::collections::HashSet<&str> = ims.iter().map(|(_, p)| p.as_str()).collect();
        let matching = web.iter().filter(|(_, p)| ims_payloads.contains(p.as_str())).count();
        assert!(matching * 10 >= web.len() * 9, "{matching} of {} browser payloads seen on the IMS side", web.len());
        // Each decrypted packet says so (pcapng comment), and only those.
        let comments = |iface: u32| tshark(call, &format!("udp && frame.interface_id == {iface}"), &["frame.comment"], &[]);
        let web_comments = comments(2);
        assert!(
            web_comments.len() >= web.len() && web_comments.iter().all(|c| c.starts_with("plaintext: SRTP decrypted by estuary")),
            "every browser media packet is marked decrypted: {:?}",
            &web_comments[..web_comments.len().min(3)]
        );
        assert!(comments(3).iter().all(String::is_empty), "IMS media is as it crossed the wire, unmarked");
        println!("full recording: {} browser-side and {} IMS-side RTP packets, {matching} payloads identical", web.len(), ims.len());
        tokio::task::block_in_place(|| b.close("a"));
        let _ = std::fs::remove_dir_all(&dir);
    });
}
