//! Hostile input: random and mutated datagrams through every parser and in-place rewriter. The
//! assertion is survival (no panic, no out-of-bounds) plus a few invariants that must hold for
//! anything a parser accepts. Deterministic (a fixed-seed PRNG) and bounded.
#![allow(clippy::disallowed_methods)] // the rewriter and statistics need an Instant

use std::time::{Duration, Instant};

use estuary_rtp::rtcp::{write, Compound, FirEntry, ReportBlock, RtcpPacket, SenderInfo};
use estuary_rtp::{
    classify, rescale_telephone_event, strip_extension, ClockRate, ExtId, PacketKind, Pt,
    ReceiverStats, RtpHeader, RtpPacket, RtpPacketMut, SeqNo, Ssrc, StreamRewriter, TelephoneEvent,
    TimestampScaler,
};

/// SplitMix64: tiny, deterministic, good enough to spread mutations.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn byte(&mut self) -> u8 {
        self.next() as u8
    }
}

/// Valid packets of every kind, to mutate.
fn seeds() -> Vec<Vec<u8>> {
    let mut seeds = Vec::new();
    let mut rtp = vec![0u8; 12];
    RtpHeader {
        marker: true,
        pt: Pt(111),
        seq: SeqNo(1),
        timestamp: 2,
        ssrc: Ssrc(3),
    }
    .write(&mut rtp)
    .unwrap();
    rtp[0] |= 0x10 | 0x20 | 1;
    rtp.extend_from_slice(&[0, 0, 0, 9]); // CSRC
    rtp.extend_from_slice(&[0xbe, 0xde, 0, 2, 0x10, 0x9f, 0x42, b'a', b'b', b'c', 0, 0]);
    rtp.extend_from_slice(b"payload");
    rtp.extend_from_slice(&[0, 0, 3]);
    seeds.push(rtp);
    seeds.push(vec![
        0x90, 96, 0, 1, 0, 0, 0, 2, 0, 0, 0, 3, 0x10, 0x00, 0, 2, 1, 0, 2, 1, 0xd1, 0, 200, 3, 1,
        2, 3, 0,
    ]);
    let mut ev = vec![0u8; 16];
    RtpHeader {
        marker: false,
        pt: Pt(101),
        seq: SeqNo(9),
        timestamp: 48_000,
        ssrc: Ssrc(4),
    }
    .write(&mut ev)
    .unwrap();
    TelephoneEvent {
        event: 5,
        end: true,
        volume: 10,
        duration: 9600,
    }
    .write(&mut ev[12..])
    .unwrap();
    seeds.push(ev);

    let mut buf = [0u8; 512];
    let info = SenderInfo {
        ssrc: Ssrc(1),
        ..Default::default()
    };
    let block = ReportBlock {
        ssrc: Ssrc(2),
        cumulative_lost: -5,
        ..Default::default()
    };
    let mut n = write::sender_report(&mut buf, &info, &[block, block]).unwrap();
    n += write::sdes_cname(&mut buf[n..], Ssrc(1), b"cname").unwrap();
    n += write::bye(&mut buf[n..], &[Ssrc(1)], Some(b"reason")).unwrap();
    seeds.push(buf[..n].to_vec());
    let mut n = write::receiver_report(&mut buf, Ssrc(1), &[block]).unwrap();
    n += write::nack(
        &mut buf[n..],
        Ssrc(1),
        Ssrc(2),
        [SeqNo(1), SeqNo(3), SeqNo(40)],
    )
    .unwrap();
    n += write::pli(&mut buf[n..], Ssrc(1), Ssrc(2)).unwrap();
    n += write::fir(
        &mut buf[n..],
        Ssrc(1),
        &[FirEntry {
            ssrc: Ssrc(2),
            seq_nr: 1,
        }],
    )
    .unwrap();
    seeds.push(buf[..n].to_vec());
    seeds.push(vec![
        0x83, 0xcc, 0, 3, 0, 0, 0, 5, b'q', b'o', b'e', b'1', 1, 2, 3, 4, // APP
        0x8f, 0xce, 0, 5, 0, 0, 0, 1, 0, 0, 0, 0, b'R', b'E', b'M', b'B', 1, 0x0b, 0x71, 0x6a, 0,
        0, 0, 2, 0x8f, 0xcd, 0, 4, 0, 0, 0, 1, 0, 0, 0, 2, 0, 1, 0, 1, 0, 0, 1, 0,
    ]);
    seeds
}

fn mutate(rng: &mut Rng, seed: &[u8]) -> Vec<u8> {
    let mut v = seed.to_vec();
    for _ in 0..1 + rng.below(4) {
        match rng.below(6) {
            0 if !v.is_empty() => {
                let i = rng.below(v.len());
                v[i] ^= 1 << rng.below(8);
            }
            1 if !v.is_empty() => {
                let i = rng.below(v.len());
                v[i] = rng.byte();
            }
            2 => v.truncate(rng.below(v.len() + 1)),
            3 => {
                for _ in 0..rng.below(8) {
                    v.push(rng.byte());
                }
            }
            4 if v.len() > 3 => {
                // Length fields are where parsers break: hit the first word hardest.
                let i = rng.below(4);
                v[i] = rng.byte();
            }
            _ if !v.is_empty() => {
                let last = v.len() - 1;
                v[last] = rng.byte(); // padding counts
            }
            _ => {}
        }
    }
    v
}

/// Drives every read path of an RTP view.
fn exercise_rtp(buf: &[u8]) -> bool {
    let Ok(p) = RtpPacket::parse(buf) else {
        return false;
    };
    assert_eq!(p.version(), 2);
    let r = p.payload_range();
    assert!(r.start <= r.end && r.end <= buf.len() && p.header_len() == r.start);
    assert_eq!(r.end + p.padding_len(), buf.len());
    let _ = (
        p.marker(),
        p.pt(),
        p.seq(),
        p.timestamp(),
        p.ssrc(),
        p.has_padding(),
    );
    assert_eq!(p.csrcs().count(), usize::from(p.csrc_count()));
    if let Some(ext) = p.extension() {
        let _ = (ext.profile(), ext.form(), ext.data().len());
        for e in ext.elements().flatten() {
            assert!(e.data.len() <= ext.data().len());
        }
        for id in 0..=255u8 {
            let _ = ext.find(ExtId(id));
        }
    }
    let _ = TelephoneEvent::parse(p.payload());
    true
}

/// Drives every read path of an RTCP compound.
fn exercise_rtcp(buf: &[u8]) -> usize {
    let _ = Compound::is_reduced_size(buf);
    let mut parsed = 0;
    for packet in Compound::new(buf) {
        let Ok(packet) = packet else { break };
        parsed += 1;
        let _ = packet.packet_type();
        match packet {
            RtcpPacket::SenderReport(sr) => {
                let _ = (sr.info(), sr.ssrc(), sr.profile_extension());
                assert!(sr.report_blocks().count() <= 31);
            }
            RtcpPacket::ReceiverReport(rr) => {
                let _ = (
                    rr.ssrc(),
                    rr.report_blocks().count(),
                    rr.profile_extension(),
                );
            }
            RtcpPacket::Sdes(sdes) => {
                let _ = sdes.cname();
                for chunk in sdes.chunks() {
                    let _ = chunk.items().count();
                }
            }
            RtcpPacket::Bye(bye) => {
                let _ = (bye.ssrcs().count(), bye.reason());
            }
            RtcpPacket::App(app) => {
                let _ = app.data.len();
            }
            RtcpPacket::Nack(nack) => {
                let pairs = nack.pairs().count();
                let lost = nack.lost().count();
                assert!(lost >= pairs && lost <= 17 * pairs);
            }
            RtcpPacket::Fir(fir) => {
                let _ = fir.entries().count();
            }
            RtcpPacket::TransportCc(fb) | RtcpPacket::Afb(fb) => {
                let _ = fb.remb().map(|r| r.ssrcs().count());
            }
            RtcpPacket::Tmmbr(t) | RtcpPacket::Tmmbn(t) => {
                let _ = t.entries().count();
            }
            RtcpPacket::Pli(_) | RtcpPacket::Other(_) => {}
        }
    }
    parsed
}

/// Drives every in-place writer over a copy.
fn exercise_mut(buf: &[u8], rw: &mut StreamRewriter, stats: &mut ReceiverStats, now: Instant) {
    let mut copy = buf.to_vec();
    if let Ok(mut p) = RtpPacketMut::parse(&mut copy) {
        p.set_pt(Pt(0xff));
        p.set_marker(true);
        let _ = p.payload_mut().len();
        let v = p.view();
        stats.receive(now, v.seq(), v.timestamp());
    }
    let mut copy = buf.to_vec();
    if let Ok(len) = strip_extension(&mut copy) {
        assert!(len <= copy.len());
        let stripped = RtpPacket::parse(&copy[..len]).expect("a stripped packet parses");
        assert!(!stripped.has_extension());
    }
    let mut copy = buf.to_vec();
    let _ = rw.rewrite(now, &mut copy);
    let mut copy = buf.to_vec();
    let mut scaler = TimestampScaler::new(ClockRate::OPUS, ClockRate::NARROWBAND);
    let _ = rescale_telephone_event(&mut copy, &mut scaler);
}

#[test]
fn random_and_mutated_bytes_never_panic() {
    let mut rng = Rng(0x5eed_0fe5_7a00_u64);
    let seeds = seeds();
    let t0 = Instant::now();
    let mut rw = StreamRewriter::new(Ssrc(1), ClockRate::OPUS, SeqNo(0), 0);
    let mut stats = ReceiverStats::new(Ssrc(1), ClockRate::OPUS);
    let mut kinds = [0usize; 5];
    let (mut valid_rtp, mut valid_rtcp) = (0, 0);
    for i in 0..40_000u64 {
        let buf = if i % 4 == 0 {
            let len = rng.below(96);
            (0..len).map(|_| rng.byte()).collect()
        } else {
            let seed = &seeds[rng.below(seeds.len())];
            mutate(&mut rng, seed)
        };
        let now = t0 + Duration::from_micros(rng.next() % 10_000_000);
        let kind = classify(&buf);
        kinds[kind as usize] += 1;
        // Every parser sees every input, whatever the classifier says.
        valid_rtp += usize::from(exercise_rtp(&buf));
        valid_rtcp += exercise_rtcp(&buf);
        exercise_mut(&buf, &mut rw, &mut stats, now);
        let _ = stats.report_block(now);
    }
    // The mutations reach both RTP and RTCP (and some unknowns).
    assert!(kinds[PacketKind::Rtp as usize] > 1000, "{kinds:?}");
    assert!(kinds[PacketKind::Rtcp as usize] > 1000, "{kinds:?}");
    // Mutations stay close enough to valid that the deep paths run, not only the first check.
    assert!(
        valid_rtp > 5_000 && valid_rtcp > 10_000,
        "{valid_rtp} RTP, {valid_rtcp} RTCP"
    );
}

#[test]
fn writers_with_hostile_arguments() {
    let mut rng = Rng(42);
    let mut big = vec![0u8; 2048];
    for _ in 0..5_000 {
        let cap = rng.below(200);
        let buf = &mut big[..cap];
        let lost: Vec<SeqNo> = (0..rng.below(40))
            .map(|_| SeqNo(rng.next() as u16))
            .collect();
        if let Ok(n) = write::nack(buf, Ssrc(1), Ssrc(2), lost.iter().copied()) {
            assert!(n <= cap);
            if n > 0 {
                // Whatever we write, we read back: every lost number is reported.
                let Some(Ok(RtcpPacket::Nack(nack))) = Compound::new(&buf[..n]).next() else {
                    panic!("unreadable NACK")
                };
                let reported: Vec<SeqNo> = nack.lost().collect();
                assert!(lost.iter().all(|s| reported.contains(s)));
            }
        }
        let blocks = vec![
            ReportBlock {
                cumulative_lost: rng.next() as i32,
                ..Default::default()
            };
            rng.below(40)
        ];
        let _ = write::sender_report(buf, &SenderInfo::default(), &blocks);
        let _ = write::receiver_report(buf, Ssrc(1), &blocks);
        let name: Vec<u8> = (0..rng.below(300)).map(|_| rng.byte()).collect();
        let _ = write::sdes_cname(buf, Ssrc(1), &name);
        let ssrcs = vec![Ssrc(7); rng.below(40)];
        let _ = write::bye(buf, &ssrcs, Some(&name));
        let _ = write::pli(buf, Ssrc(1), Ssrc(2));
        let _ = write::fir(
            buf,
            Ssrc(1),
            &[FirEntry {
                ssrc: Ssrc(1),
                seq_nr: 1,
            }; 3],
        );
        let _ = TelephoneEvent {
            event: rng.byte(),
            end: true,
            volume: rng.byte(),
            duration: 1,
        }
        .write(buf);
        let _ = RtpHeader::default().write_with_payload(&name, buf);
    }
}
