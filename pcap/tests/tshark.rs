//! Interoperability: captures we write must read correctly in Wireshark's tshark, timestamps to
//! the nanosecond. Skipped, with a message, where tshark is not installed
//! (Debian: `apt-get install tshark`).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use estuary_pcap::{build_udp, wrap_ethernet, LinkType, MacAddr, PcapNgWriter, PcapWriter};

/// 2023-11-14T22:13:20.123456789Z: every nanosecond digit distinct and non-zero-padded.
const TIMESTAMP: Duration = Duration::new(1_700_000_000, 123_456_789);

fn tshark_available() -> bool {
    Command::new("tshark")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

fn temp_path(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("estuary-pcap-{}-{name}", std::process::id()))
}

/// Runs `tshark -r path -T fields -e ...` and returns its standard output.
fn tshark_fields(path: &PathBuf, fields: &[&str]) -> String {
    let mut cmd = Command::new("tshark");
    cmd.arg("-r").arg(path).args(["-T", "fields"]);
    for f in fields {
        cmd.args(["-e", f]);
    }
    let out = cmd.output().expect("run tshark");
    assert!(
        out.status.success(),
        "tshark failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("tshark prints UTF-8")
}

fn check(name: &str, bytes: Vec<u8>) {
    let path = temp_path(name);
    std::fs::write(&path, bytes).expect("write capture");
    let fields = [
        "udp.srcport",
        "udp.dstport",
        "frame.time_epoch",
        "udp.checksum.status",
        "ip.checksum.status",
    ];
    let out = tshark_fields(&path, &fields);
    let _ = std::fs::remove_file(&path);
    let line = out.lines().next().unwrap_or_default();
    let cols: Vec<&str> = line.split('\t').collect();
    assert_eq!(cols.first().copied(), Some("5060"), "{name}: {out:?}");
    assert_eq!(cols.get(1).copied(), Some("5080"), "{name}: {out:?}");
    assert_eq!(
        cols.get(2).copied(),
        Some("1700000000.123456789"),
        "{name}: {out:?}"
    );
    // Checksum status is 2 ("Unverified") unless validation is enabled; 0 would be "Bad".
    for status in cols.iter().skip(3) {
        assert_ne!(
            *status, "0",
            "{name}: tshark reports a bad checksum: {out:?}"
        );
    }
}

fn udp_packet() -> Vec<u8> {
    let src: SocketAddr = "192.0.2.10:5060".parse().unwrap();
    let dst: SocketAddr = "192.0.2.20:5080".parse().unwrap();
    build_udp(src, dst, b"OPTIONS sip:estuary.invalid SIP/2.0\r\n\r\n").unwrap()
}

#[test]
fn tshark_reads_our_pcapng_with_nanoseconds() {
    if !tshark_available() {
        println!("skipped: tshark not installed (apt-get install tshark)");
        return;
    }
    let mut w = PcapNgWriter::new(Vec::new(), LinkType::RAW).unwrap();
    w.write_packet(TIMESTAMP, &udp_packet()).unwrap();
    check("raw.pcapng", w.into_inner());

    let mut w = PcapNgWriter::new(Vec::new(), LinkType::ETHERNET).unwrap();
    let frame = wrap_ethernet(&udp_packet(), MacAddr::LOCAL_A, MacAddr::LOCAL_B).unwrap();
    w.write_packet(TIMESTAMP, &frame).unwrap();
    check("ethernet.pcapng", w.into_inner());
}

#[test]
fn tshark_reads_our_pcap_with_nanoseconds() {
    if !tshark_available() {
        println!("skipped: tshark not installed (apt-get install tshark)");
        return;
    }
    let mut w = PcapWriter::new(Vec::new(), LinkType::RAW).unwrap();
    w.write_packet(TIMESTAMP, &udp_packet()).unwrap();
    check("raw.pcap", w.into_inner());
}

#[test]
fn tshark_validates_our_checksums() {
    if !tshark_available() {
        println!("skipped: tshark not installed (apt-get install tshark)");
        return;
    }
    let mut w = PcapNgWriter::new(Vec::new(), LinkType::RAW).unwrap();
    w.write_packet(TIMESTAMP, &udp_packet()).unwrap();
    let v6 = build_udp(
        "[2001:db8::1]:5060".parse().unwrap(),
        "[2001:db8::2]:5080".parse().unwrap(),
        b"odd-length payload",
    )
    .unwrap();
    w.write_packet(TIMESTAMP, &v6).unwrap();
    let path = temp_path("checksums.pcapng");
    std::fs::write(&path, w.into_inner()).unwrap();
    let out = Command::new("tshark")
        .arg("-r")
        .arg(&path)
        .args([
            "-o",
            "udp.check_checksum:TRUE",
            "-o",
            "ip.check_checksum:TRUE",
        ])
        .args([
            "-T",
            "fields",
            "-e",
            "udp.checksum.status",
            "-e",
            "ip.checksum.status",
        ])
        .output()
        .expect("run tshark");
    let _ = std::fs::remove_file(&path);
    let out = String::from_utf8_lossy(&out.stdout).into_owned();
    // 1 = Good. IPv6 has no header checksum, so its second column is empty.
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines, ["1\t1", "1\t"], "{out:?}");
}

#[test]
fn tshark_shows_our_packet_comments() {
    if !tshark_available() {
        println!("skipped: tshark not installed (apt-get install tshark)");
        return;
    }
    let mut w = PcapNgWriter::new(Vec::new(), LinkType::RAW).unwrap();
    w.write_commented_packet_on(0, TIMESTAMP, &udp_packet(), "plaintext RTP, SRTP decrypted by estuary").unwrap();
    w.write_packet(TIMESTAMP, &udp_packet()).unwrap();
    let path = temp_path("comments.pcapng");
    std::fs::write(&path, w.into_inner()).expect("write capture");
    let out = tshark_fields(&path, &["frame.number", "frame.comment", "udp.dstport"]);
    let _ = std::fs::remove_file(&path);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines, ["1\tplaintext RTP, SRTP decrypted by estuary\t5080", "2\t\t5080"], "{out:?}");
}
