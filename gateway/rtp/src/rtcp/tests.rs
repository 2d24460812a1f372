use super::write;
use super::*;

/// A compound packet as Chrome sends it for an audio sender that also receives: SR with one report
/// block, then SDES with its CNAME (16 random base64 characters). Built by hand from RFC 3550
/// §6.4.1 and §6.5; every field is listed.
#[rustfmt::skip]
const CHROME_SR_SDES: [u8; 80] = [
    // SR header: V=2 P=0 RC=1, PT=200, length 12 words-1 -> 52 bytes.
    0x81, 0xc8, 0x00, 0x0c,
    0x5f, 0x1b, 0x2c, 0x3d, // SSRC of sender
    0xe9, 0xa1, 0xb2, 0xc3, // NTP seconds
    0x40, 0x00, 0x00, 0x00, // NTP fraction: 0.25 s
    0x00, 0x01, 0xe2, 0x40, // RTP timestamp 123456
    0x00, 0x00, 0x00, 0xfa, // sender's packet count 250
    0x00, 0x00, 0x9c, 0x40, // sender's octet count 40000
    // report block 1
    0x0a, 0x0b, 0x0c, 0x0d, // SSRC of source
    0x19,                   // fraction lost 25/256
    0xff, 0xff, 0xfe,       // cumulative lost -2 (24-bit two's complement)
    0x00, 0x01, 0x00, 0x05, // extended highest seq: cycle 1, seq 5
    0x00, 0x00, 0x00, 0x2a, // jitter 42
    0xb2, 0xc3, 0x80, 0x00, // LSR
    0x00, 0x01, 0x80, 0x00, // DLSR 1.5 s
    // SDES header: V=2 P=0 SC=1, PT=202, length 6 -> 28 bytes.
    0x81, 0xca, 0x00, 0x06,
    0x5f, 0x1b, 0x2c, 0x3d, // chunk SSRC
    0x01, 0x10,             // CNAME, 16 bytes
    b'W', b'0', b'Z', b'W', b'M', b'x', b'A', b'x',
    b'v', b'd', b'/', b'b', b'v', b'H', b'q', b'6',
    0x00, 0x00,             // end of list, pad to the word
];

fn all(buf: &[u8]) -> Vec<RtcpPacket<'_>> {
    Compound::new(buf).map(Result::unwrap).collect()
}

#[test]
fn chrome_sr_sdes_compound() {
    let packets = all(&CHROME_SR_SDES);
    assert_eq!(packets.len(), 2);
    let RtcpPacket::SenderReport(sr) = packets[0] else {
        panic!("{:?}", packets[0])
    };
    assert_eq!(
        sr.info(),
        SenderInfo {
            ssrc: Ssrc(0x5f1b_2c3d),
            ntp: NtpTime(0xe9a1_b2c3_4000_0000),
            rtp_ts: 123_456,
            packet_count: 250,
            octet_count: 40_000,
        }
    );
    let blocks: Vec<_> = sr.report_blocks().collect();
    assert_eq!(
        blocks,
        [ReportBlock {
            ssrc: Ssrc(0x0a0b_0c0d),
            fraction_lost: 25,
            cumulative_lost: -2,
            ext_highest_seq: 0x1_0005,
            jitter: 42,
            last_sr: 0xb2c3_8000,
            delay_since_last_sr: 0x1_8000,
        }]
    );
    assert!(sr.profile_extension().is_empty());
    let RtcpPacket::Sdes(sdes) = packets[1] else {
        panic!()
    };
    assert_eq!(
        sdes.cname(),
        Some((Ssrc(0x5f1b_2c3d), &b"W0ZWMxAxvd/bvHq6"[..]))
    );
    assert!(!Compound::is_reduced_size(&CHROME_SR_SDES));

    // The writers produce the same bytes from the parsed values.
    let mut out = [0u8; 80];
    let mut n = write::sender_report(&mut out, &sr.info(), &blocks).unwrap();
    n += write::sdes_cname(&mut out[n..], Ssrc(0x5f1b_2c3d), b"W0ZWMxAxvd/bvHq6").unwrap();
    assert_eq!(n, 80);
    assert_eq!(out, CHROME_SR_SDES);
}

#[test]
fn rr_sdes_bye_round_trip() {
    let mut buf = [0u8; 256];
    let b = ReportBlock {
        ssrc: Ssrc(7),
        fraction_lost: 255,
        cumulative_lost: 0x7f_ffff,
        ext_highest_seq: 65_536 * 3 + 17,
        jitter: 1,
        last_sr: 2,
        delay_since_last_sr: 3,
    };
    let mut n = write::receiver_report(&mut buf, Ssrc(9), &[b, b]).unwrap();
    assert_eq!(n, 8 + 48);
    n += write::sdes_cname(&mut buf[n..], Ssrc(9), b"abcd").unwrap();
    n += write::bye(&mut buf[n..], &[Ssrc(9), Ssrc(10)], Some(b"hangup")).unwrap();
    let packets = all(&buf[..n]);
    let RtcpPacket::ReceiverReport(rr) = packets[0] else {
        panic!()
    };
    assert_eq!(rr.ssrc(), Ssrc(9));
    assert_eq!(rr.report_blocks().collect::<Vec<_>>(), [b, b]);
    let RtcpPacket::Sdes(sdes) = packets[1] else {
        panic!()
    };
    // "abcd": 4 + 2 + 4 = 10 bytes, +1 null -> 12: a 4-byte item needs two null octets.
    assert_eq!(sdes.cname(), Some((Ssrc(9), &b"abcd"[..])));
    let chunk = sdes.chunks().next().unwrap();
    assert_eq!(chunk.items().count(), 1);
    let RtcpPacket::Bye(bye) = packets[2] else {
        panic!()
    };
    assert_eq!(bye.ssrcs().collect::<Vec<_>>(), [Ssrc(9), Ssrc(10)]);
    assert_eq!(bye.reason(), Some(&b"hangup"[..]));
    assert_eq!(packets.len(), 3);
}

#[test]
fn clamps_cumulative_loss() {
    let mut buf = [0u8; 32];
    let b = ReportBlock {
        cumulative_lost: -10_000_000,
        ..Default::default()
    };
    write::receiver_report(&mut buf, Ssrc(1), &[b]).unwrap();
    let Some(Ok(RtcpPacket::ReceiverReport(rr))) = Compound::new(&buf).next() else {
        panic!()
    };
    assert_eq!(
        rr.report_blocks().next().unwrap().cumulative_lost,
        -0x80_0000
    );
}

#[test]
fn sdes_with_several_items_and_chunks() {
    #[rustfmt::skip]
    let buf = [
        0x82, 0xca, 0x00, 0x08, // SC=2, 36 bytes
        0, 0, 0, 1,
        6, 3, b'e', b's', b't', // TOOL "est"
        1, 2, b'c', b'n',       // CNAME "cn"
        0, 0, 0,                // end + pad (chunk: 4 + 5 + 4 + 1 = 14 -> 16)
        0, 0, 0, 2,
        2, 5, b'n', b'a', b'm', b'e', b'2', // NAME "name2"
        0,                      // end (4 + 7 + 1 = 12: already on the word boundary)
        0, 0, 0, 0,             // a stray trailing word
    ];
    // SC chunks are parsed; bytes after the last one are ignored.
    let RtcpPacket::Sdes(sdes) = all(&buf)[0] else {
        panic!()
    };
    let chunks: Vec<_> = sdes.chunks().collect();
    assert_eq!(chunks.len(), 2);
    assert_eq!(chunks[0].item(SdesType::TOOL), Some(&b"est"[..]));
    assert_eq!(chunks[0].item(SdesType::CNAME), Some(&b"cn"[..]));
    assert_eq!(chunks[1].ssrc, Ssrc(2));
    assert_eq!(chunks[1].item(SdesType::NAME), Some(&b"name2"[..]));
    assert_eq!(sdes.cname(), Some((Ssrc(1), &b"cn"[..])));
}

#[test]
fn sdes_item_overrunning_the_packet_is_malformed() {
    let buf = [0x81, 0xca, 0x00, 0x02, 0, 0, 0, 1, 1, 9, b'x', 0];
    assert!(matches!(
        Compound::new(&buf).next(),
        Some(Err(ParseError::Truncated { .. }))
    ));
    // No null terminator before the end.
    let buf = [0x81, 0xca, 0x00, 0x02, 0, 0, 0, 1, 1, 2, b'x', b'y'];
    assert!(Compound::new(&buf).next().unwrap().is_err());
}

#[test]
fn nack_expands_pid_and_blp() {
    let mut buf = [0u8; 64];
    let lost = [
        SeqNo(65530),
        SeqNo(65531),
        SeqNo(65535),
        SeqNo(4),
        SeqNo(100),
        SeqNo(116),
    ];
    let n = write::nack(&mut buf, Ssrc(1), Ssrc(2), lost).unwrap();
    // 65530 + {1, 5, 10} in one pair (crossing the wrap), 100 + 16 in another.
    assert_eq!(n, 12 + 8);
    let RtcpPacket::Nack(nack) = all(&buf[..n])[0] else {
        panic!()
    };
    assert_eq!((nack.sender, nack.media), (Ssrc(1), Ssrc(2)));
    let pairs: Vec<_> = nack.pairs().collect();
    assert_eq!(
        pairs,
        [
            NackPair {
                pid: SeqNo(65530),
                blp: 1 << 0 | 1 << 4 | 1 << 9
            },
            NackPair {
                pid: SeqNo(100),
                blp: 1 << 15
            },
        ]
    );
    assert_eq!(nack.lost().collect::<Vec<_>>(), lost);
}

#[test]
fn nack_rfc4585_example() {
    // RFC 4585 §6.2.1: PID 0x0010 with BLP 0x0005 reports 16, 17 and 19 lost.
    let buf = [
        0x81, 0xcd, 0x00, 0x03, 0, 0, 0, 1, 0, 0, 0, 2, 0x00, 0x10, 0x00, 0x05,
    ];
    let RtcpPacket::Nack(nack) = all(&buf)[0] else {
        panic!()
    };
    assert_eq!(
        nack.lost().collect::<Vec<_>>(),
        [SeqNo(16), SeqNo(17), SeqNo(19)]
    );
}

#[test]
fn pli_fir_and_opaque_feedback() {
    let mut buf = [0u8; 128];
    let mut n = write::pli(&mut buf, Ssrc(1), Ssrc(2)).unwrap();
    let entries = [
        FirEntry {
            ssrc: Ssrc(2),
            seq_nr: 7,
        },
        FirEntry {
            ssrc: Ssrc(3),
            seq_nr: 255,
        },
    ];
    n += write::fir(&mut buf[n..], Ssrc(1), &entries).unwrap();
    #[rustfmt::skip]
    let remb_bytes = [
        0x8f, 0xce, 0x00, 0x05, 0, 0, 0, 1, 0, 0, 0, 0,
        b'R', b'E', b'M', b'B', 1, 0x0b, 0x71, 0x6a, 0, 0, 0, 2,
    ];
    buf[n..n + remb_bytes.len()].copy_from_slice(&remb_bytes);
    n += remb_bytes.len();
    // TWCC: RTPFB FMT 15 with base seq 1, status count 1, ref time, fb count, one chunk, delta.
    let twcc = [
        0x8f, 0xcd, 0x00, 0x05, 0, 0, 0, 1, 0, 0, 0, 2, 0, 1, 0, 1, 0, 0, 1, 0, 0x20, 1, 4, 0,
    ];
    buf[n..n + twcc.len()].copy_from_slice(&twcc);
    n += twcc.len();

    let packets = all(&buf[..n]);
    assert_eq!(
        packets[0],
        RtcpPacket::Pli(Pli {
            sender: Ssrc(1),
            media: Ssrc(2)
        })
    );
    let RtcpPacket::Fir(fir) = packets[1] else {
        panic!()
    };
    assert_eq!(fir.sender, Ssrc(1));
    assert_eq!(fir.entries().collect::<Vec<_>>(), entries);
    let RtcpPacket::Afb(afb) = packets[2] else {
        panic!()
    };
    assert!(afb.is_remb());
    assert_eq!(afb.fci.len(), 12);
    // Exponent 2, mantissa 0x3716a: 225,642 x 4.
    let remb = afb.remb().expect("a well-formed REMB");
    assert_eq!(remb.bitrate, 902_568);
    assert_eq!(remb.ssrcs().collect::<Vec<_>>(), [Ssrc(2)]);
    let mut again = [0u8; 24];
    assert_eq!(write::remb(&mut again, Ssrc(1), 902_568, &[Ssrc(2)]), Ok(24));
    assert_eq!(&again[..], &remb_bytes[..], "the writer gives the same bytes back");
    let RtcpPacket::TransportCc(tcc) = packets[3] else {
        panic!()
    };
    assert_eq!((tcc.fmt, tcc.media, tcc.fci.len()), (15, Ssrc(2), 12));
    assert_eq!(packets[3].packet_type(), PacketType::RTPFB);
    // Reduced size: a compound that starts with feedback (RFC 5506 §3.4.2).
    assert!(Compound::is_reduced_size(&buf[..n]));
}

#[test]
fn tmmbr_and_tmmbn_tuples_and_a_truncated_remb() {
    // RFC 5104 §4.2.1.1 by hand: SSRC 0x01020304, exponent 10, mantissa 1000, overhead 40.
    #[rustfmt::skip]
    let tmmbr = [
        0x83, 0xcd, 0x00, 0x04, 0, 0, 0, 9, 0, 0, 0, 0,
        1, 2, 3, 4, 0x28, 0x07, 0xd0, 0x28,
    ];
    let packets = all(&tmmbr);
    let RtcpPacket::Tmmbr(t) = packets[0] else { panic!("{:?}", packets[0]) };
    assert_eq!(t.sender, Ssrc(9));
    let entries: Vec<_> = t.entries().collect();
    assert_eq!(entries, [TmmbEntry { ssrc: Ssrc(0x0102_0304), bitrate: 1_024_000, overhead: 40 }]);
    let mut out = [0u8; 20];
    assert_eq!(write::tmmbr(&mut out, Ssrc(9), &entries), Ok(20));
    // The writer picks the smallest exponent (exponent 3, mantissa 128,000): other bytes,
    // the same request.
    assert_eq!(out[..16], tmmbr[..16]);
    assert_eq!(out[16..], [0x0f, 0xe8, 0x00, 0x28]);
    let RtcpPacket::Tmmbr(back) = all(&out)[0] else { panic!() };
    assert_eq!(back.entries().collect::<Vec<_>>(), entries);
    // The notification echoes the tuple; an empty one (no bounding set) is legal.
    let n = write::tmmbn(&mut out, Ssrc(7), &entries).unwrap();
    let RtcpPacket::Tmmbn(t) = all(&out[..n])[0] else { panic!() };
    assert_eq!((t.sender, t.entries().collect::<Vec<_>>()), (Ssrc(7), entries.clone()));
    let n = write::tmmbn(&mut out, Ssrc(7), &[]).unwrap();
    let RtcpPacket::Tmmbn(t) = all(&out[..n])[0] else { panic!() };
    assert_eq!(t.entries().count(), 0);
    // A bitrate beyond 17 bits of mantissa keeps its top bits: rounded down, never up.
    write::tmmbr(&mut out, Ssrc(9), &[TmmbEntry { ssrc: Ssrc(1), bitrate: 2_000_001, overhead: 0 }]).unwrap();
    let RtcpPacket::Tmmbr(t) = all(&out[..20])[0] else { panic!() };
    let b = t.entries().next().unwrap().bitrate;
    assert!(b <= 2_000_001 && b > 1_999_000, "{b}");
    // A REMB whose SSRC count runs past its end is not one.
    #[rustfmt::skip]
    let short = [
        0x8f, 0xce, 0x00, 0x04, 0, 0, 0, 1, 0, 0, 0, 0,
        b'R', b'E', b'M', b'B', 2, 0x0b, 0x71, 0x6a,
    ];
    let RtcpPacket::Afb(afb) = all(&short)[0] else { panic!() };
    assert!(afb.is_remb() && afb.remb().is_none());
}

#[test]
fn app_and_unknown_types() {
    let buf = [
        0x83, 0xcc, 0x00, 0x03, 0, 0, 0, 5, b'q', b'o', b'e', b'1', 1, 2, 3, 4, // APP
        0x80, 0xcf, 0x00, 0x01, 0, 0, 0, 5, // XR, no blocks
        0x82, 0xce, 0x00, 0x02, 0, 0, 0, 5, 0, 0, 0, 6, // PSFB FMT 2 (SLI) without FCI
    ];
    let packets = all(&buf);
    assert_eq!(
        packets[0],
        RtcpPacket::App(App {
            subtype: 3,
            ssrc: Ssrc(5),
            name: *b"qoe1",
            data: &[1, 2, 3, 4]
        })
    );
    assert_eq!(packets[1].packet_type(), PacketType::XR);
    let RtcpPacket::Other(raw) = packets[2] else {
        panic!()
    };
    assert_eq!(
        (raw.pt, raw.count, raw.body.len()),
        (PacketType::PSFB, 2, 8)
    );
}

#[test]
fn padding_on_the_last_packet() {
    // An empty RR with 4 bytes of padding (P=1, length 2 -> 12 bytes, count in the last octet).
    let buf = [0xa0, 0xc9, 0x00, 0x02, 0, 0, 0, 9, 0, 0, 0, 4];
    let RtcpPacket::ReceiverReport(rr) = all(&buf)[0] else {
        panic!()
    };
    assert_eq!(rr.ssrc(), Ssrc(9));
    assert!(rr.profile_extension().is_empty());
    let mut bad = buf;
    bad[11] = 0;
    assert_eq!(
        Compound::new(&bad).next(),
        Some(Err(ParseError::Padding(0)))
    );
    bad[11] = 9;
    assert_eq!(
        Compound::new(&bad).next(),
        Some(Err(ParseError::Padding(9)))
    );
}

#[test]
fn reduced_size_single_pli() {
    let mut buf = [0u8; 12];
    write::pli(&mut buf, Ssrc(1), Ssrc(2)).unwrap();
    assert!(Compound::is_reduced_size(&buf));
    assert_eq!(all(&buf).len(), 1);
}

#[test]
fn malformed_packet_ends_the_walk() {
    let mut buf = CHROME_SR_SDES.to_vec();
    // SDES length claims more than is there.
    buf[55] = 0x20;
    let mut it = Compound::new(&buf);
    assert!(matches!(it.next(), Some(Ok(RtcpPacket::SenderReport(_)))));
    assert!(matches!(it.next(), Some(Err(ParseError::Truncated { .. }))));
    assert_eq!(it.next(), None);
    // Version 1.
    assert_eq!(
        Compound::new(&[0x40, 200, 0, 0]).next(),
        Some(Err(ParseError::Version(1)))
    );
    // SR with RC=1 but no room for the block.
    let mut sr = CHROME_SR_SDES[..52].to_vec();
    sr[0] = 0x82;
    assert!(Compound::new(&sr).next().unwrap().is_err());
    // NACK with an FCI that is not whole pairs, FIR with half an entry.
    let nack = [0x81, 0xcd, 0x00, 0x02, 0, 0, 0, 1, 0, 0, 0, 2];
    assert_eq!(
        Compound::new(&nack).next(),
        Some(Err(ParseError::Malformed("NACK FCI")))
    );
    let fir = [0x84, 0xce, 0x00, 0x03, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 2];
    assert_eq!(
        Compound::new(&fir).next(),
        Some(Err(ParseError::Malformed("FIR FCI")))
    );
}
