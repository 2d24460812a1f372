//! Per-packet cost of SRTP protect and unprotect for a 172-byte RTP packet (12-byte header,
//! 160-byte payload: 20 ms of G.711), for each profile, ours against `rtc-srtp` 0.21.
//!
//! `cargo bench -p estuary-srtp --bench srtp` prints criterion's figures, then a one-line-per-case
//! summary in ns per packet.
//!
//! Notes on fairness: our protect reuses one buffer (as the hot path will) and includes copying
//! the 172-byte plaintext into it; our unprotect needs a fresh sequence number per call (replay
//! protection is on), so its packets are made in criterion's untimed setup. `rtc-srtp` runs with
//! its default of no replay protection, so the same packet is decrypted over and over.

#![allow(clippy::disallowed_methods)] // benches read the clock; the engine never does

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{criterion_group, BatchSize, Criterion};
use estuary_srtp::{SrtpContext, SrtpMasterKey, SrtpProfile};
use rtc_srtp::crypto::providers::RingProvider;
use rtc_srtp::crypto::RTCCryptoProvider;
use rtc_srtp::protection_profile::ProtectionProfile;

const PAYLOAD: usize = 160;

fn packet(seq: u16) -> Vec<u8> {
    let mut p = Vec::with_capacity(12 + PAYLOAD + 16);
    p.extend_from_slice(&[0x80, 0]);
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(&(u32::from(seq) * 160).to_be_bytes());
    p.extend_from_slice(&0x1234_5678u32.to_be_bytes());
    p.extend((0..PAYLOAD).map(|i| i as u8));
    p
}

fn theirs(profile: SrtpProfile) -> ProtectionProfile {
    match profile {
        SrtpProfile::Aes128CmSha1_80 => ProtectionProfile::Aes128CmHmacSha1_80,
        SrtpProfile::Aes128CmSha1_32 => ProtectionProfile::Aes128CmHmacSha1_32,
        SrtpProfile::AeadAes128Gcm => ProtectionProfile::AeadAes128Gcm,
    }
}

struct Setup {
    master: SrtpMasterKey,
    theirs: ProtectionProfile,
}

impl Setup {
    fn new(profile: SrtpProfile) -> Self {
        let salt: Vec<u8> = (0..profile.master_salt_len() as u8).collect();
        Setup {
            master: SrtpMasterKey::new(profile, &[0x42; 16], &salt).unwrap(),
            theirs: theirs(profile),
        }
    }

    fn rtc(&self) -> rtc_srtp::context::Context {
        let provider = RingProvider::new();
        rtc_srtp::context::Context::new(
            self.master.key(),
            self.master.salt(),
            self.theirs,
            None,
            None,
            provider.crypto(),
        )
        .unwrap()
    }
}

fn bench(c: &mut Criterion) {
    for profile in [
        SrtpProfile::Aes128CmSha1_80,
        SrtpProfile::Aes128CmSha1_32,
        SrtpProfile::AeadAes128Gcm,
    ] {
        let s = Setup::new(profile);
        let mut group = c.benchmark_group(profile.sdes_name());

        let mut tx = SrtpContext::new(&s.master);
        let plain = packet(0);
        let mut buf = Vec::with_capacity(1500);
        let mut seq = 0u16;
        group.bench_function("ours/protect", |b| {
            b.iter(|| {
                buf.clear();
                buf.extend_from_slice(&plain);
                seq = seq.wrapping_add(1);
                buf[2..4].copy_from_slice(&seq.to_be_bytes());
                tx.protect_rtp(black_box(&mut buf)).unwrap();
            })
        });

        let mut sender = SrtpContext::new(&s.master);
        let mut rx = SrtpContext::new(&s.master);
        let mut seq = 0u16;
        group.bench_function("ours/unprotect", |b| {
            b.iter_batched_ref(
                || {
                    seq = seq.wrapping_add(1);
                    let mut p = packet(seq);
                    sender.protect_rtp(&mut p).unwrap();
                    p
                },
                |p| rx.unprotect_rtp(black_box(p)).unwrap(),
                BatchSize::SmallInput,
            )
        });

        let mut their_tx = s.rtc();
        let mut p = packet(0);
        let mut seq = 0u16;
        group.bench_function("rtc-srtp/protect", |b| {
            b.iter(|| {
                seq = seq.wrapping_add(1);
                p[2..4].copy_from_slice(&seq.to_be_bytes());
                black_box(their_tx.encrypt_rtp(black_box(&p)).unwrap());
            })
        });

        let mut their_rx = s.rtc();
        let protected = s.rtc().encrypt_rtp(&packet(1)).unwrap();
        group.bench_function("rtc-srtp/unprotect", |b| {
            b.iter(|| black_box(their_rx.decrypt_rtp(black_box(&protected)).unwrap()))
        });
        group.finish();
    }
}

/// A plain timing loop per case, printed as one table at the end.
fn summary() {
    const N: u32 = 200_000;
    println!("\nSRTP per-packet cost, 172-byte RTP packet, {N} packets per case (ns/packet):");
    println!(
        "{:<26} {:>10} {:>10} {:>10} {:>10}",
        "profile", "protect", "unprotect", "rtc prot.", "rtc unpr."
    );
    for profile in [
        SrtpProfile::Aes128CmSha1_80,
        SrtpProfile::Aes128CmSha1_32,
        SrtpProfile::AeadAes128Gcm,
    ] {
        let s = Setup::new(profile);
        let ns = |d: Duration| d.as_nanos() as f64 / f64::from(N);

        // Ours: protect N packets into one reused buffer, keeping them for unprotect.
        let mut tx = SrtpContext::new(&s.master);
        let mut rx = SrtpContext::new(&s.master);
        let plain: Vec<Vec<u8>> = (0..N).map(|i| packet(i as u16)).collect();
        let mut protected: Vec<Vec<u8>> = plain
            .iter()
            .map(|p| Vec::with_capacity(p.len() + 16))
            .collect();
        let t = Instant::now();
        for (p, out) in plain.iter().zip(protected.iter_mut()) {
            out.extend_from_slice(p);
            tx.protect_rtp(out).unwrap();
        }
        let protect = ns(t.elapsed());
        // Index order restarts each 65536 packets; unprotect in the same order (ROC follows).
        let t = Instant::now();
        for p in protected.iter_mut() {
            rx.unprotect_rtp(p).unwrap();
        }
        let unprotect = ns(t.elapsed());

        let mut their_tx = s.rtc();
        let mut their_rx = s.rtc();
        let t = Instant::now();
        let theirs: Vec<_> = plain
            .iter()
            .map(|p| their_tx.encrypt_rtp(p).unwrap())
            .collect();
        let their_protect = ns(t.elapsed());
        let t = Instant::now();
        for p in &theirs {
            black_box(their_rx.decrypt_rtp(p).unwrap());
        }
        let their_unprotect = ns(t.elapsed());
        println!(
            "{:<26} {:>10.0} {:>10.0} {:>10.0} {:>10.0}",
            profile.sdes_name(),
            protect,
            unprotect,
            their_protect,
            their_unprotect
        );
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .sample_size(30);
    targets = bench
}

fn main() {
    benches();
    Criterion::default().configure_from_args().final_summary();
    summary();
}
