//! tshark as an oracle: packets built by this crate's writers and rewriters go into a pcap (via
//! estuary-pcap, UDP on 127.0.0.1), Wireshark's RTP, RTCP and RTP-event dissectors read them back,
//! and each field must match what was written, with no malformed packet or expert error.
//!
//! Skipped with a notice when `/usr/bin/tshark` is not installed.
#![allow(clippy::disallowed_methods)] // the capture needs a time base

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use estuary_pcap::{build_udp, LinkType, PcapWriter};
use estuary_rtp::rtcp::{write, FirEntry, ReportBlock, TmmbEntry};
use estuary_rtp::{
    rescale_telephone_event, strip_extension, ClockRate, NtpTime, Pt, ReceiverStats, RtpHeader,
    SenderStats, SeqConfig, SeqNo, Ssrc, StreamRewriter, TelephoneEvent, TimestampScaler,
    WallClock,
};

const TSHARK: &str = "/usr/bin/tshark";
const RTP_PORT: u16 = 5004;
const RTCP_PORT: u16 = 5005;

fn tshark() -> Option<&'static str> {
    if Path::new(TSHARK).exists() {
        Some(TSHARK)
    } else {
        println!("NOTICE: {TSHARK} not found; skipping the tshark oracle test");
        None
    }
}

/// One packet to capture and the fields tshark must report for it.
struct Case {
    port: u16,
    bytes: Vec<u8>,
    /// (tshark field, expected value as tshark prints it).
    expect: Vec<(&'static str, String)>,
}

/// The fields asked of tshark, in column order.
const FIELDS: &[&str] = &[
    "frame.number",
    "rtp.seq",
    "rtp.timestamp",
    "rtp.ssrc",
    "rtp.p_type",
    "rtp.marker",
    "rtp.ext",
    "rtp.ext.rfc5285.id",
    "rtp.ext.rfc5285.data",
    "rtp.csrc.item",
    "rtp.padding.count",
    "rtp.payload",
    "rtpevent.event_id",
    "rtpevent.end_of_event",
    "rtpevent.volume",
    "rtpevent.duration",
    "rtcp.pt",
    "rtcp.rc",
    "rtcp.senderssrc",
    "rtcp.timestamp.ntp.msw",
    "rtcp.timestamp.ntp.lsw",
    "rtcp.timestamp.rtp",
    "rtcp.sender.packetcount",
    "rtcp.sender.octetcount",
    "rtcp.ssrc.identifier",
    "rtcp.ssrc.fraction",
    "rtcp.ssrc.cum_nr",
    "rtcp.ssrc.ext_high",
    "rtcp.ssrc.jitter",
    "rtcp.ssrc.lsr",
    "rtcp.ssrc.dlsr",
    "rtcp.sdes.type",
    "rtcp.sdes.text",
    "rtcp.rtpfb.fmt",
    "rtcp.psfb.fmt",
    "rtcp.mediassrc",
    "rtcp.rtpfb.nack_pid",
    "rtcp.rtpfb.nack_blp",
    "rtcp.psfb.fir.fci.ssrc",
    "rtcp.psfb.fir.fci.csn",
    "rtcp.rtpfb.tmmbr.fci.ssrc",
    "rtcp.rtpfb.tmmbr.fci.exp",
    "rtcp.rtpfb.tmmbr.fci.mantissa",
    "rtcp.rtpfb.tmmbr.fci.measuredoverhead",
    "rtcp.psfb.remb.fci.number_ssrcs",
    "rtcp.psfb.remb.fci.br_exp",
    "rtcp.psfb.remb.fci.br_mantissa",
    "rtcp.psfb.remb.fci.ssrc",
    "_ws.malformed",
    "_ws.expert.severity",
];

fn hex32(v: u32) -> String {
    format!("0x{v:08x}")
}

fn s(v: impl ToString) -> String {
    v.to_string()
}

fn cases() -> Vec<Case> {
    let t0 = Instant::now();
    let at = |ms: u64| t0 + Duration::from_millis(ms);
    let mut out = Vec::new();

    // 1. A browser's Opus packet: marker, one-byte extensions (audio level id 1, MID id 4), then
    //    a 160-byte payload. Sequence number 65535 so the rewrite below wraps.
    let mut opus = vec![0u8; 12];
    RtpHeader {
        marker: true,
        pt: Pt(111),
        seq: SeqNo(65535),
        timestamp: 0xffff_ff00,
        ssrc: Ssrc(0x1122_3344),
    }
    .write(&mut opus)
    .unwrap();
    opus[0] |= 0x10;
    opus.extend_from_slice(&[0xbe, 0xde, 0x00, 0x01, 0x10, 0x9f, 0x40, b'0']);
    opus.extend((0..160).map(|i| i as u8));
    out.push(Case {
        port: RTP_PORT,
        bytes: opus.clone(),
        expect: vec![
            ("rtp.seq", s(65535)),
            ("rtp.timestamp", s(0xffff_ff00u32)),
            ("rtp.ssrc", hex32(0x1122_3344)),
            ("rtp.p_type", s(111)),
            ("rtp.marker", s(1)),
            ("rtp.ext", s(1)),
            ("rtp.ext.rfc5285.id", s("1,4")),
            ("rtp.ext.rfc5285.data", s("9f,30")),
        ],
    });

    // 2. The same packet relayed: extension stripped, rewritten into the outgoing stream.
    let mut rw = StreamRewriter::new(
        Ssrc(0xe57a_0001),
        ClockRate::OPUS,
        SeqNo(65535),
        4_000_000_000,
    );
    let mut relayed = opus.clone();
    let len = strip_extension(&mut relayed).unwrap();
    relayed.truncate(len);
    rw.rewrite(at(0), &mut relayed).unwrap();
    out.push(Case {
        port: RTP_PORT,
        bytes: relayed,
        expect: vec![
            ("rtp.seq", s(65535)),
            ("rtp.timestamp", s(4_000_000_000u32)),
            ("rtp.ssrc", hex32(0xe57a_0001)),
            ("rtp.ext", s(0)),
            ("rtp.marker", s(1)),
        ],
    });

    // 3. A new far-end source 60 ms later: sequence wraps to 0, timestamp advances 60 ms at
    //    48 kHz, marker set although the source did not set it.
    let mut b = vec![0u8; 12 + 80];
    RtpHeader {
        marker: false,
        pt: Pt(111),
        seq: SeqNo(1234),
        timestamp: 777,
        ssrc: Ssrc(0x0bbb_0002),
    }
    .write_with_payload(&[0x55; 80], &mut b)
    .unwrap();
    rw.rewrite(at(60), &mut b).unwrap();
    out.push(Case {
        port: RTP_PORT,
        bytes: b,
        expect: vec![
            ("rtp.seq", s(0)),
            ("rtp.timestamp", s(4_000_000_000u32 + 2880)),
            ("rtp.ssrc", hex32(0xe57a_0001)),
            ("rtp.marker", s(1)),
        ],
    });

    // 4. CSRCs and padding: CC=2, P=1 with 3 padding octets after a 4-byte payload.
    let mut b = vec![0u8; 12];
    RtpHeader {
        marker: false,
        pt: Pt(0),
        seq: SeqNo(42),
        timestamp: 160,
        ssrc: Ssrc(9),
    }
    .write(&mut b)
    .unwrap();
    b[0] |= 0x20 | 2;
    b.extend_from_slice(&[0, 0, 0, 7, 0, 0, 0, 8, 0xd5, 0xd5, 0xd5, 0xd5, 0, 0, 3]);
    out.push(Case {
        port: RTP_PORT,
        bytes: b,
        expect: vec![
            ("rtp.seq", s(42)),
            ("rtp.p_type", s(0)),
            ("rtp.csrc.item", s("0x00000007,0x00000008")),
            ("rtp.padding.count", s(3)),
            ("rtp.payload", s("d5d5d5d5")),
        ],
    });

    // 5. A telephone event from the browser at 48 kHz, rescaled for an 8 kHz IMS leg: digit 5,
    //    end, volume 10, 200 ms.
    let mut scaler = TimestampScaler::new(ClockRate::OPUS, ClockRate::NARROWBAND);
    scaler.scale(48_000);
    let mut b = vec![0u8; 16];
    RtpHeader {
        marker: false,
        pt: Pt(101),
        seq: SeqNo(7),
        timestamp: 96_000,
        ssrc: Ssrc(0xd7f),
    }
    .write(&mut b)
    .unwrap();
    TelephoneEvent {
        event: 5,
        end: true,
        volume: 10,
        duration: 9600,
    }
    .write(&mut b[12..])
    .unwrap();
    rescale_telephone_event(&mut b, &mut scaler).unwrap();
    out.push(Case {
        port: RTP_PORT,
        bytes: b,
        expect: vec![
            ("rtp.p_type", s(101)),
            ("rtp.timestamp", s(16_000)),
            ("rtpevent.event_id", s(5)),
            ("rtpevent.end_of_event", s(1)),
            ("rtpevent.volume", s(10)),
            ("rtpevent.duration", s(1600)),
        ],
    });

    // 6. SR + SDES, with a report block from receiver statistics (10 packets expected, 2 lost,
    //    one SR heard 250 ms earlier) and sender info from sender statistics.
    let config = SeqConfig {
        min_sequential: 1,
        ..Default::default()
    };
    let mut rx = ReceiverStats::with_config(Ssrc(0x0a0b_0c0d), ClockRate::OPUS, config);
    for i in (0u16..10).filter(|i| *i != 3 && *i != 6) {
        rx.receive(
            at(20 * u64::from(i)),
            SeqNo(65530u16.wrapping_add(i)),
            960 * u32::from(i),
        );
    }
    rx.receive_sender_report(at(0), NtpTime(0x0000_1234_5678_0000));
    let block = rx.report_block(at(250)).unwrap();
    let mut tx = SenderStats::new(Ssrc(0x5f1b_2c3d), ClockRate::OPUS);
    for i in 0..50u32 {
        tx.send(at(20 * u64::from(i)), 1_000 + 960 * i, 100);
    }
    let wall = WallClock::new(t0, UNIX_EPOCH + Duration::from_secs(1_700_000_000));
    let info = tx.sender_info(at(1000), wall.ntp(at(1000))).unwrap();
    let mut buf = [0u8; 200];
    let mut n = write::sender_report(&mut buf, &info, &[block]).unwrap();
    n += write::sdes_cname(&mut buf[n..], Ssrc(0x5f1b_2c3d), b"W0ZWMxAxvd/bvHq6").unwrap();
    out.push(Case {
        port: RTCP_PORT,
        bytes: buf[..n].to_vec(),
        expect: vec![
            ("rtcp.pt", s("200,202")),
            ("rtcp.rc", s(1)),
            ("rtcp.senderssrc", hex32(0x5f1b_2c3d)),
            (
                "rtcp.timestamp.ntp.msw",
                s(1_700_000_001u64 + 2_208_988_800),
            ),
            ("rtcp.timestamp.ntp.lsw", s(0)),
            ("rtcp.timestamp.rtp", s(1_000 + 960 * 50)),
            ("rtcp.sender.packetcount", s(50)),
            ("rtcp.sender.octetcount", s(5000)),
            // The report block's source, then the SDES chunk's.
            (
                "rtcp.ssrc.identifier",
                format!("{},{}", hex32(0x0a0b_0c0d), hex32(0x5f1b_2c3d)),
            ),
            ("rtcp.ssrc.fraction", s(2 * 256 / 10)),
            ("rtcp.ssrc.cum_nr", s(2)),
            ("rtcp.ssrc.ext_high", s(65536 + 3)),
            ("rtcp.ssrc.jitter", s(0)),
            ("rtcp.ssrc.lsr", s(0x1234_5678u32)),
            ("rtcp.ssrc.dlsr", s(65536 / 4)),
            // CNAME, then the end-of-list item.
            ("rtcp.sdes.type", s("1,0")),
            ("rtcp.sdes.text", s("W0ZWMxAxvd/bvHq6")),
        ],
    });

    // 7. RR + SDES + BYE: what the gateway sends when its leg only receives, then hangs up.
    let rb = ReportBlock {
        ssrc: Ssrc(0x1111),
        fraction_lost: 0,
        cumulative_lost: -3,
        ext_highest_seq: 99,
        jitter: 17,
        last_sr: 0,
        delay_since_last_sr: 0,
    };
    let mut n = write::receiver_report(&mut buf, Ssrc(0x2222), &[rb]).unwrap();
    n += write::sdes_cname(&mut buf[n..], Ssrc(0x2222), b"estuary@gw").unwrap();
    n += write::bye(&mut buf[n..], &[Ssrc(0x2222)], Some(b"bye")).unwrap();
    out.push(Case {
        port: RTCP_PORT,
        bytes: buf[..n].to_vec(),
        expect: vec![
            ("rtcp.pt", s("201,202,203")),
            ("rtcp.senderssrc", hex32(0x2222)),
            // Report block source, SDES chunk, BYE source.
            (
                "rtcp.ssrc.identifier",
                format!("{},{},{}", hex32(0x1111), hex32(0x2222), hex32(0x2222)),
            ),
            ("rtcp.ssrc.cum_nr", s(-3)),
            ("rtcp.ssrc.ext_high", s(99)),
            ("rtcp.ssrc.jitter", s(17)),
            // tshark files the BYE reason under the SDES text field.
            ("rtcp.sdes.text", s("estuary@gw,bye")),
        ],
    });

    // 8. NACK: 100, 101, 104 and 200.
    let lost = [SeqNo(100), SeqNo(101), SeqNo(104), SeqNo(200)];
    let n = write::nack(&mut buf, Ssrc(0x3333), Ssrc(0x4444), lost).unwrap();
    out.push(Case {
        port: RTCP_PORT,
        bytes: buf[..n].to_vec(),
        expect: vec![
            ("rtcp.pt", s(205)),
            ("rtcp.rtpfb.fmt", s(1)),
            ("rtcp.senderssrc", hex32(0x3333)),
            ("rtcp.mediassrc", hex32(0x4444)),
            // tshark lists every lost number it derives from PID and BLP: our packing agrees.
            ("rtcp.rtpfb.nack_pid", s("100,101,104,200")),
            ("rtcp.rtpfb.nack_blp", s("0x0009,0x0000")),
        ],
    });

    // 9. PLI.
    let n = write::pli(&mut buf, Ssrc(0x3333), Ssrc(0x4444)).unwrap();
    out.push(Case {
        port: RTCP_PORT,
        bytes: buf[..n].to_vec(),
        expect: vec![
            ("rtcp.pt", s(206)),
            ("rtcp.psfb.fmt", s(1)),
            ("rtcp.mediassrc", hex32(0x4444)),
        ],
    });

    // 10. FIR for two media senders.
    let entries = [
        FirEntry {
            ssrc: Ssrc(0x4444),
            seq_nr: 3,
        },
        FirEntry {
            ssrc: Ssrc(0x5555),
            seq_nr: 200,
        },
    ];
    let n = write::fir(&mut buf, Ssrc(0x3333), &entries).unwrap();
    out.push(Case {
        port: RTCP_PORT,
        bytes: buf[..n].to_vec(),
        expect: vec![
            ("rtcp.pt", s(206)),
            ("rtcp.psfb.fmt", s(4)),
            ("rtcp.mediassrc", hex32(0)),
            ("rtcp.psfb.fir.fci.ssrc", s("0x00004444,0x00005555")),
            ("rtcp.psfb.fir.fci.csn", s("3,200")),
        ],
    });

    // 11. TMMBN answering a TMMBR of 1,024,000 bit/s with 40 bytes overhead.
    let tuple = TmmbEntry {
        ssrc: Ssrc(0x6666),
        bitrate: 1_024_000,
        overhead: 40,
    };
    let n = write::tmmbn(&mut buf, Ssrc(0x3333), &[tuple]).unwrap();
    out.push(Case {
        port: RTCP_PORT,
        bytes: buf[..n].to_vec(),
        expect: vec![
            ("rtcp.pt", s(205)),
            ("rtcp.rtpfb.fmt", s(4)),
            ("rtcp.mediassrc", hex32(0)),
            ("rtcp.rtpfb.tmmbr.fci.ssrc", hex32(0x6666)),
            // tshark 4.0 fills no bitrate field for TMMBN: 128,000 x 2^3 = 1,024,000.
            ("rtcp.rtpfb.tmmbr.fci.exp", s(3)),
            ("rtcp.rtpfb.tmmbr.fci.mantissa", s(128_000)),
            ("rtcp.rtpfb.tmmbr.fci.measuredoverhead", s(40)),
        ],
    });

    // 12. REMB of 2,500,000 bit/s for two streams: 18 bits of mantissa keep it exact.
    let n = write::remb(&mut buf, Ssrc(0x3333), 2_500_000, &[Ssrc(0x4444), Ssrc(0x5555)]).unwrap();
    out.push(Case {
        port: RTCP_PORT,
        bytes: buf[..n].to_vec(),
        expect: vec![
            ("rtcp.pt", s(206)),
            ("rtcp.psfb.fmt", s(15)),
            ("rtcp.psfb.remb.fci.number_ssrcs", s(2)),
            // No bitrate field either: 156,250 x 2^4.
            ("rtcp.psfb.remb.fci.br_exp", s(4)),
            ("rtcp.psfb.remb.fci.br_mantissa", s(156_250)),
            ("rtcp.psfb.remb.fci.ssrc", s("0x00004444,0x00005555")),
        ],
    });
    out
}

fn write_capture(cases: &[Case]) -> PathBuf {
    let mut pcap = PcapWriter::new(Vec::new(), LinkType::RAW).unwrap();
    for (i, c) in cases.iter().enumerate() {
        let src: SocketAddr = format!("127.0.0.1:{}", c.port).parse().unwrap();
        let dst: SocketAddr = format!("127.0.0.1:{}", c.port + 1000).parse().unwrap();
        let ip = build_udp(src, dst, &c.bytes).unwrap();
        pcap.write_packet(
            Duration::from_millis(1_700_000_000_000 + 20 * i as u64),
            &ip,
        )
        .unwrap();
    }
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos();
    let path =
        std::env::temp_dir().join(format!("estuary-rtp-{}-{nanos}.pcap", std::process::id()));
    std::fs::write(&path, pcap.into_inner()).unwrap();
    path
}

#[test]
fn tshark_reads_back_what_we_wrote() {
    let Some(tshark) = tshark() else { return };
    let cases = cases();
    let path = write_capture(&cases);
    let mut cmd = Command::new(tshark);
    cmd.arg("-n")
        .arg("-r")
        .arg(&path)
        .args(["-d", &format!("udp.port=={RTP_PORT},rtp")])
        .args(["-d", &format!("udp.port=={RTCP_PORT},rtcp")])
        .args([
            "-T",
            "fields",
            "-E",
            "separator=|",
            "-E",
            "occurrence=a",
            "-E",
            "aggregator=,",
        ]);
    for f in FIELDS {
        cmd.args(["-e", f]);
    }
    let output = cmd.output().expect("run tshark");
    let _ = std::fs::remove_file(&path);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "tshark failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let rows: Vec<Vec<&str>> = stdout.lines().map(|l| l.split('|').collect()).collect();
    assert_eq!(rows.len(), cases.len(), "tshark output:\n{stdout}");
    let col = |name: &str| FIELDS.iter().position(|f| *f == name).unwrap();
    for (i, (case, row)) in cases.iter().zip(&rows).enumerate() {
        assert_eq!(row.len(), FIELDS.len(), "frame {}: {row:?}", i + 1);
        assert_eq!(row[col("frame.number")], (i + 1).to_string());
        for (field, want) in &case.expect {
            assert_eq!(
                row[col(field)],
                want,
                "frame {} field {field}; row {row:?}",
                i + 1
            );
        }
        assert_eq!(
            row[col("_ws.malformed")],
            "",
            "frame {} malformed: {row:?}",
            i + 1
        );
        // Expert severity 0x00800000 is an error; notes and warnings are allowed.
        for sev in row[col("_ws.expert.severity")]
            .split(',')
            .filter(|s| !s.is_empty())
        {
            // tshark 4.0 prints it in decimal (8388608); accept hex too.
            let v = match sev.strip_prefix("0x") {
                Some(hex) => u32::from_str_radix(hex, 16),
                None => sev.parse(),
            }
            .unwrap_or(u32::MAX);
            assert!(
                v < 0x0080_0000,
                "frame {} expert error {sev}: {row:?}",
                i + 1
            );
        }
    }
}
