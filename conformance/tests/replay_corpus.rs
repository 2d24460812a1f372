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
        ("add-video", &["m=video ", "H264/90000", "a=recvonly"]),
        ("media-pcmu", &["m=audio ", "PCMU/8000"]),
        ("media-opus-dtmf", &["opus/48000", "telephone-event/48000", "telephone-event/8000"]),
        ("video-transcoded", &["VP8/90000", "H264/90000", "packetization-mode=0", "picture_fast_update"]),
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
        let has_media = corpus::read_capture(&dir.join("input.pcapng")).iter().any(|d| d.1 >= corpus::WEB_MEDIA);
        if has_media {
            assert!(text.contains("ok: media as expected"), "{}: the media was replayed and compared:\n{text}", dir.display());
        }
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

/// The media scenario's expectation with one relayed payload byte changed on the IMS leg, and
/// with one payload type changed on the browser leg: each replay fails naming the packet.
#[test]
fn an_altered_media_expectation_fails_naming_the_packet() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("captures/media-pcmu");
    let original = corpus::read_capture(&dir.join("expected.pcapng"));
    // RTP on a media lane: version 2, not an RTCP packet type (RFC 5761 §4).
    let is_rtp = |d: &corpus::Datagram| d.1 >= corpus::WEB_MEDIA && d.4.len() > 12 && d.4[0] >> 6 == 2 && !(192..=223).contains(&d.4[1]);
    for (lane, leg, what) in [(3u32, "IMS leg", "payload"), (2, "browser leg", "payload type")] {
        let mut expected = original.clone();
        let pkt = expected.iter_mut().filter(|d| d.1 == lane && is_rtp(d)).nth(20).unwrap_or_else(|| panic!("RTP on lane {lane}"));
        if what == "payload" {
            pkt.4[12] ^= 0x40;
        } else {
            pkt.4[1] = (pkt.4[1] & 0x80) | 8;
        }
        let altered = std::env::temp_dir().join(format!("estuary-altered-media-{lane}-{}.pcapng", std::process::id()));
        corpus::write_capture(&altered, &expected.iter().collect::<Vec<_>>());
        let (ok, text) = replay(&dir.join("input.pcapng"), &altered);
        let _ = std::fs::remove_file(&altered);
        assert!(!ok, "the altered {what} must fail:\n{text}");
        assert!(text.contains(&format!("{leg}, RTP packet 21 differs")), "the diff names the packet ({what}):\n{text}");
    }
}

/// The transcoded scenario's expectation altered in what replay must reproduce exactly, and
/// in what it must reproduce closely: a rescaled RFC 4733 duration toward the core changed,
/// and a fifth of the transcoded frames toward the browser dropped. Each replay fails saying
/// which.
#[test]
fn an_altered_transcoded_expectation_fails_naming_what() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("captures/media-opus-dtmf");
    let original = corpus::read_capture(&dir.join("expected.pcapng"));
    let pt = |d: &corpus::Datagram| d.4[1] & 0x7f;
    let is_rtp = |d: &corpus::Datagram| d.1 >= corpus::WEB_MEDIA && d.4.len() > 12 && d.4[0] >> 6 == 2 && !(192..=223).contains(&d.4[1]);
    // Toward the core: telephone-event/8000 is PT 101 in sipp's answer; its duration is the
    // payload's bytes 2-3 (RFC 4733 §2.3).
    let mut expected = original.clone();
    let events: Vec<&mut corpus::Datagram> = expected.iter_mut().filter(|d| d.1 == 3 && is_rtp(d) && pt(d) == 101).collect();
    assert!(events.len() >= 6, "the digits reached the core as telephone-event/8000: {} packets", events.len());
    let event = events.into_iter().nth(3).unwrap();
    event.4[12 + 3] ^= 0x08;
    let altered = std::env::temp_dir().join(format!("estuary-altered-dtmf-{}.pcapng", std::process::id()));
    corpus::write_capture(&altered, &expected.iter().collect::<Vec<_>>());
    let (ok, text) = replay(&dir.join("input.pcapng"), &altered);
    assert!(!ok, "the altered event duration must fail:\n{text}");
    assert!(text.contains("IMS leg, transcoded stream 0, event packet 4 differs"), "the diff names the event packet:\n{text}");

    // Toward the browser: drop every fifth Opus frame the transcoder produced (PT 111).
    let mut n = 0;
    let expected: Vec<corpus::Datagram> = original
        .iter()
        .filter(|d| {
            let opus = d.1 == 2 && is_rtp(d) && pt(d) == 111;
            n += usize::from(opus);
            !(opus && n % 5 == 0)
        })
        .cloned()
        .collect();
    corpus::write_capture(&altered, &expected.iter().collect::<Vec<_>>());
    let (ok, text) = replay(&dir.join("input.pcapng"), &altered);
    let _ = std::fs::remove_file(&altered);
    assert!(!ok, "a fifth fewer transcoded frames must fail:\n{text}");
    assert!(text.contains("browser leg, transcoded stream 0:") && text.contains("audio frames expected"), "the diff names the frame count:\n{text}");
}

/// One WebSocket text frame (RFC 6455 §5.2): masked from the client, as browsers send.
fn ws_frame(payload: &[u8], masked: bool) -> Vec<u8> {
    let mut f = vec![0x81];
    let mask_bit = if masked { 0x80 } else { 0 };
    match payload.len() {
        n if n < 126 => f.push(mask_bit | n as u8),
        n if n <= 0xffff => {
            f.push(mask_bit | 126);
            f.extend((n as u16).to_be_bytes());
        }
        n => {
            f.push(mask_bit | 127);
            f.extend((n as u64).to_be_bytes());
        }
    }
    if masked {
        let key = [0x37, 0xfa, 0x21, 0x3d];
        f.extend(key);
        f.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
    } else {
        f.extend(payload);
    }
    f
}

/// A tcpdump-style capture of a corpus scenario: both directions in one file, the browser's
/// SIP as WebSocket frames on a TCP connection (handshake included, segments cut at 300
/// bytes so frames straddle them), the core's as UDP. `estuary replay` must read it with
/// its TCP reassembly and WebSocket deframing and reproduce the same exchange.
#[test]
fn a_plain_capture_with_sip_over_websocket_on_tcp_replays_too() {
    use estuary_pcap::{build_tcp, build_udp, LinkType, PcapWriter, TcpFlags, TcpHeader};
    use std::collections::HashMap;
    use std::net::SocketAddr;

    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("captures/call-web-to-ims");
    let input = corpus::read_capture(&dir.join("input.pcapng"));
    let web_gw = input.iter().find(|d| d.1 == 0).expect("browser input").3;
    let ims_gw = input.iter().find(|d| d.1 == 1).expect("IMS input").3;
    let mut all = input.clone();
    all.extend(corpus::read_capture(&dir.join("expected.pcapng")));
    all.sort_by_key(|d| d.0);

    let mut w = PcapWriter::new(Vec::new(), LinkType::RAW).unwrap();
    // Per browser connection: next sequence number each way.
    let mut tcp: HashMap<SocketAddr, (u32, u32)> = HashMap::new();
    let ack = |seq: u32, ack: u32, flags: TcpFlags| TcpHeader { seq, ack, flags, window: 65535 };
    let psh_ack = TcpFlags(TcpFlags::PSH.0 | TcpFlags::ACK.0);
    for (at, lane, src, dst, data) in &all {
        if *lane == 1 {
            w.write_packet(*at, &build_udp(*src, *dst, data).unwrap()).unwrap();
            continue;
        }
        let to_gw = *dst == web_gw;
        let client = if to_gw { *src } else { *dst };
        let (c, s) = tcp.entry(client).or_insert_with(|| {
            // Handshake: SYN, SYN-ACK, ACK, then the HTTP upgrade and its 101.
            let (mut c, mut s) = (1_000u32, 900_000u32);
            w.write_packet(*at, &build_tcp(client, web_gw, &ack(c, 0, TcpFlags::SYN), &[]).unwrap()).unwrap();
            w.write_packet(*at, &build_tcp(web_gw, client, &ack(s, c + 1, TcpFlags(TcpFlags::SYN.0 | TcpFlags::ACK.0)), &[]).unwrap()).unwrap();
            c += 1;
            s += 1;
            let req = b"GET / HTTP/1.1\r\nHost: gw\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: sip\r\n\r\n";
            w.write_packet(*at, &build_tcp(client, web_gw, &ack(c, s, psh_ack), req).unwrap()).unwrap();
            c += req.len() as u32;
            let resp = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\nSec-WebSocket-Protocol: sip\r\n\r\n";
            w.write_packet(*at, &build_tcp(web_gw, client, &ack(s, c, psh_ack), resp).unwrap()).unwrap();
            s += resp.len() as u32;
            (c, s)
        });
        let frame = ws_frame(data, to_gw);
        for chunk in frame.chunks(300) {
            let (from, to, seq, their) = if to_gw { (client, web_gw, &mut *c, *s) } else { (web_gw, client, &mut *s, *c) };
            w.write_packet(*at, &build_tcp(from, to, &ack(*seq, their, psh_ack), chunk).unwrap()).unwrap();
            *seq = seq.wrapping_add(chunk.len() as u32);
        }
    }
    let plain = std::env::temp_dir().join(format!("estuary-plain-{}.pcap", std::process::id()));
    std::fs::write(&plain, w.into_inner()).unwrap();
    let out = Command::new(estuary_binary())
        .arg("replay")
        .arg(&plain)
        .arg("--expect")
        .arg(&plain)
        .args(["--set", &format!("web.ws_listen={web_gw}"), "--set", &format!("ims.listen={ims_gw}")])
        .output()
        .expect("run estuary replay");
    let _ = std::fs::remove_file(&plain);
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{text}");
    // The same exchange as the recorder-layout files of the scenario.
    assert!(text.starts_with("ok: 11 messages as expected (10 in, 11 out)"), "{text}");
}
