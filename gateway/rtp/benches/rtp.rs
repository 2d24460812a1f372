//! Per-packet costs of the relay path, and RTCP compound parsing.
//!
//! `cargo bench -p estuary-rtp` prints criterion's estimates; a final summary line per benchmark
//! gives ns/op and packets/s/core from a plain timed loop, for the PR description.
#![allow(clippy::disallowed_methods)] // benchmarks time themselves

use std::hint::black_box;
use std::time::Instant;

use criterion::{criterion_group, Criterion, Throughput};
use estuary_rtp::rtcp::{write, Compound, ReportBlock, RtcpPacket, SenderInfo};
use estuary_rtp::{
    ClockRate, ExtId, NtpTime, Pt, ReceiverStats, RtpHeader, RtpPacket, SeqNo, Ssrc, StreamRewriter,
};

/// A 172-byte RTP packet: 12-byte header + 160 bytes of G.711 (20 ms at 8 kHz), the classic
/// relay packet size.
fn rtp_172() -> [u8; 172] {
    let mut p = [0u8; 172];
    RtpHeader {
        marker: false,
        pt: Pt(0),
        seq: SeqNo(1),
        timestamp: 160,
        ssrc: Ssrc(0xabcd),
    }
    .write(&mut p)
    .unwrap();
    p[12..].fill(0xd5);
    p
}

/// A 172-byte Opus packet as a browser sends it: header, one-byte extensions (audio level, MID),
/// 152 bytes of payload.
fn rtp_172_ext() -> [u8; 172] {
    let mut p = rtp_172();
    p[0] |= 0x10;
    p[1] = 111;
    p[12..20].copy_from_slice(&[0xbe, 0xde, 0, 1, 0x10, 0x9f, 0x40, b'0']);
    p
}

/// SR with one report block, SDES CNAME, then a NACK and a PLI: a typical browser compound.
fn compound() -> Vec<u8> {
    let mut buf = [0u8; 256];
    let info = SenderInfo {
        ssrc: Ssrc(1),
        ntp: NtpTime(1 << 40),
        rtp_ts: 9,
        packet_count: 1,
        octet_count: 2,
    };
    let block = ReportBlock {
        ssrc: Ssrc(2),
        ..Default::default()
    };
    let mut n = write::sender_report(&mut buf, &info, &[block]).unwrap();
    n += write::sdes_cname(&mut buf[n..], Ssrc(1), b"W0ZWMxAxvd/bvHq6").unwrap();
    n += write::nack(
        &mut buf[n..],
        Ssrc(1),
        Ssrc(2),
        [SeqNo(5), SeqNo(7), SeqNo(30)],
    )
    .unwrap();
    n += write::pli(&mut buf[n..], Ssrc(1), Ssrc(2)).unwrap();
    buf[..n].to_vec()
}

/// Parse, then rewrite SSRC/seq/ts through the relay's rewriter.
fn parse_rewrite(rw: &mut StreamRewriter, now: Instant, pkt: &mut [u8; 172]) -> u32 {
    let p = RtpPacket::parse(pkt).unwrap();
    let seq = p.seq();
    let ts = p.timestamp();
    let mid = p
        .extension()
        .and_then(|e| e.find(ExtId(4)))
        .map_or(0, <[u8]>::len);
    let _ = rw.rewrite(now, pkt).unwrap();
    // Advance the input for the next round so the rewriter sees a live stream.
    pkt[2..4].copy_from_slice(&seq.next().0.to_be_bytes());
    pkt[4..8].copy_from_slice(&ts.wrapping_add(160).to_be_bytes());
    pkt[8..12].copy_from_slice(&0xabcdu32.to_be_bytes());
    mid as u32
}

fn parse_compound(buf: &[u8]) -> usize {
    let mut n = 0;
    for p in Compound::new(buf) {
        n += match p.unwrap() {
            RtcpPacket::SenderReport(sr) => {
                sr.report_blocks().count() + sr.info().packet_count as usize
            }
            RtcpPacket::Sdes(s) => s.cname().map_or(0, |c| c.1.len()),
            RtcpPacket::Nack(nack) => nack.lost().count(),
            _ => 1,
        };
    }
    n
}

fn benches(c: &mut Criterion) {
    let t0 = Instant::now();
    let mut g = c.benchmark_group("rtp");
    g.throughput(Throughput::Elements(1));
    for (name, mut pkt) in [
        ("parse_rewrite_172", rtp_172()),
        ("parse_rewrite_172_ext", rtp_172_ext()),
    ] {
        let mut rw = StreamRewriter::new(Ssrc(1), ClockRate::NARROWBAND, SeqNo(0), 0);
        g.bench_function(name, |b| {
            b.iter(|| parse_rewrite(&mut rw, t0, black_box(&mut pkt)))
        });
    }
    let pkt = rtp_172();
    g.bench_function("parse_only_172", |b| {
        b.iter(|| RtpPacket::parse(black_box(&pkt)).unwrap().payload().len())
    });
    let mut stats = ReceiverStats::new(Ssrc(0xabcd), ClockRate::NARROWBAND);
    let mut seq = 0u16;
    g.bench_function("receiver_stats_update", |b| {
        b.iter(|| {
            seq = seq.wrapping_add(1);
            stats.receive(t0, SeqNo(seq), u32::from(seq) * 160)
        })
    });
    let cmp = compound();
    g.bench_function("rtcp_compound_parse", |b| {
        b.iter(|| parse_compound(black_box(&cmp)))
    });
    let mut out = [0u8; 256];
    g.bench_function("rtcp_sr_sdes_write", |b| {
        b.iter(|| {
            let info = SenderInfo {
                ssrc: Ssrc(1),
                ..Default::default()
            };
            let n = write::sender_report(&mut out, &info, &[ReportBlock::default()]).unwrap();
            n + write::sdes_cname(&mut out[n..], Ssrc(1), black_box(b"W0ZWMxAxvd/bvHq6")).unwrap()
        })
    });
    g.finish();
}

/// A plain timed loop per operation, printed as one summary line each.
fn summary() {
    fn time(name: &str, iters: u32, mut f: impl FnMut() -> usize) {
        let mut sink = 0usize;
        for _ in 0..iters / 10 {
            sink = sink.wrapping_add(f());
        }
        let start = Instant::now();
        for _ in 0..iters {
            sink = sink.wrapping_add(f());
        }
        let ns = start.elapsed().as_nanos() as f64 / f64::from(iters);
        black_box(sink);
        println!(
            "summary: {name:<26} {ns:>8.1} ns/op {:>12.0} ops/s/core",
            1e9 / ns
        );
    }
    let t0 = Instant::now();
    let mut rw = StreamRewriter::new(Ssrc(1), ClockRate::NARROWBAND, SeqNo(0), 0);
    let mut pkt = rtp_172();
    time("parse+rewrite 172 B", 2_000_000, || {
        parse_rewrite(&mut rw, t0, black_box(&mut pkt)) as usize
    });
    let mut rw = StreamRewriter::new(Ssrc(1), ClockRate::NARROWBAND, SeqNo(0), 0);
    let mut pkt = rtp_172_ext();
    time("parse+rewrite 172 B ext", 2_000_000, || {
        parse_rewrite(&mut rw, t0, black_box(&mut pkt)) as usize
    });
    let cmp = compound();
    time("RTCP compound parse", 2_000_000, || {
        parse_compound(black_box(&cmp))
    });
}

criterion_group!(group, benches);

fn main() {
    group();
    Criterion::default().configure_from_args().final_summary();
    // Only under `cargo bench` (which passes --bench): `cargo test --benches` runs a quick check.
    if std::env::args().any(|a| a == "--bench") {
        summary();
    }
}
