//! The per-packet path allocates nothing (STYLE.md R14): a counting global allocator watches one
//! relay step (classify, parse, strip, rewrite, statistics, RTCP parse and write, DTMF rescale).
#![allow(clippy::disallowed_methods)] // needs an Instant

use std::time::{Duration, Instant};

use estuary_alloc_count::allocations;
use estuary_rtp::rtcp::{write, Compound, RtcpPacket};
use estuary_rtp::{
    classify, rescale_telephone_event, strip_extension, ClockRate, ExtId, Pt, ReceiverStats,
    RtpHeader, RtpPacket, SenderStats, SeqNo, Ssrc, StreamRewriter, TelephoneEvent,
    TimestampScaler,
};

#[global_allocator]
static GLOBAL: estuary_alloc_count::Counting = estuary_alloc_count::Counting;

#[test]
fn relay_path_allocates_nothing() {
    let t0 = Instant::now();
    // Set-up may allocate; the loop below must not.
    let mut template = [0u8; 200];
    RtpHeader {
        marker: false,
        pt: Pt(111),
        seq: SeqNo(0),
        timestamp: 0,
        ssrc: Ssrc(0xabc),
    }
    .write(&mut template)
    .unwrap();
    template[0] |= 0x10;
    template[12..20].copy_from_slice(&[0xbe, 0xde, 0, 1, 0x10, 0x9f, 0x40, b'0']);
    let mut ev = [0u8; 16];
    RtpHeader {
        marker: false,
        pt: Pt(101),
        seq: SeqNo(0),
        timestamp: 0,
        ssrc: Ssrc(0xabc),
    }
    .write(&mut ev)
    .unwrap();
    let mut rw = StreamRewriter::new(Ssrc(1), ClockRate::OPUS, SeqNo(0), 0);
    let mut rx = ReceiverStats::new(Ssrc(0xabc), ClockRate::OPUS);
    let mut tx = SenderStats::new(Ssrc(1), ClockRate::OPUS);
    let mut scaler = TimestampScaler::new(ClockRate::OPUS, ClockRate::NARROWBAND);
    let mut rtcp = [0u8; 256];
    let mut pkt = [0u8; 200];

    // The counter works: one box, one allocation.
    let probe = allocations();
    drop(std::hint::black_box(Box::new(1u64)));
    assert_eq!(allocations() - probe, 1);

    let before = allocations();
    let mut checksum = 0u64;
    for i in 0..1_000u16 {
        let now = t0 + Duration::from_millis(20 * u64::from(i));
        pkt.copy_from_slice(&template);
        pkt[2..4].copy_from_slice(&i.to_be_bytes());
        pkt[4..8].copy_from_slice(&(960 * u32::from(i)).to_be_bytes());
        let _ = classify(&pkt);
        let p = RtpPacket::parse(&pkt).unwrap();
        checksum += p
            .extension()
            .and_then(|e| e.find(ExtId(4)))
            .map_or(0, |m| m.len() as u64);
        rx.receive(now, p.seq(), p.timestamp());
        let len = strip_extension(&mut pkt).unwrap();
        rw.rewrite(now, &mut pkt[..len]).unwrap();
        let out = RtpPacket::parse(&pkt[..len]).unwrap();
        tx.send(now, out.timestamp(), out.payload().len());

        TelephoneEvent {
            event: 1,
            end: false,
            volume: 10,
            duration: 960,
        }
        .write(&mut ev[12..])
        .unwrap();
        rescale_telephone_event(&mut ev, &mut scaler).unwrap();

        if i % 50 == 0 {
            let info = tx
                .sender_info(now, estuary_rtp::NtpTime(u64::from(i)))
                .unwrap_or_default();
            let block = rx.report_block(now);
            let blocks = block.as_slice();
            let mut n = write::sender_report(&mut rtcp, &info, blocks).unwrap();
            n += write::sdes_cname(&mut rtcp[n..], Ssrc(1), b"estuary").unwrap();
            n += write::nack(&mut rtcp[n..], Ssrc(1), Ssrc(2), [SeqNo(i), SeqNo(i + 2)]).unwrap();
            for packet in Compound::new(&rtcp[..n]) {
                match packet.unwrap() {
                    RtcpPacket::SenderReport(sr) => checksum += sr.report_blocks().count() as u64,
                    RtcpPacket::Sdes(sdes) => {
                        checksum += sdes.cname().map_or(0, |c| c.1.len() as u64)
                    }
                    RtcpPacket::Nack(nack) => checksum += nack.lost().count() as u64,
                    _ => {}
                }
            }
        }
    }
    let after = allocations();
    assert!(checksum > 0);
    assert_eq!(after - before, 0, "the per-packet path allocated");
}
