//! Hostile bytes through the public API never panic (STYLE.md R6). Deterministic PRNG,
//! bounded iterations.

mod common;

use std::time::Duration;

use common::{connected, rtcp_sr, rtp, Pair};
use estuary_srtp::{
    Certificate, CryptoAttribute, DtlsEndpoint, DtlsRole, Fingerprint, SrtpContext, SrtpMasterKey,
    SrtpProfile,
};
use rand::rngs::StdRng;
use rand::{Rng, RngCore, SeedableRng};

const ROUNDS: usize = 3000;
const FRESH: usize = 40;
const HANDSHAKES: usize = 30;

const BOTH: &[SrtpProfile] = &[SrtpProfile::Aes128CmSha1_80, SrtpProfile::AeadAes128Gcm];

/// A datagram that looks like DTLS to a varying degree: raw noise, a noisy first byte in the
/// DTLS range, or well-framed records with random type, version, epoch, sequence and body
/// (often a handshake header with random lengths and offsets).
fn hostile_datagram(rng: &mut StdRng) -> Vec<u8> {
    match rng.random_range(0..4) {
        0 => {
            let mut d = vec![0u8; rng.random_range(0..1500)];
            rng.fill_bytes(&mut d);
            d
        }
        1 => {
            let mut d = vec![0u8; rng.random_range(1..200)];
            rng.fill_bytes(&mut d);
            d[0] = rng.random_range(20..=63);
            d
        }
        _ => {
            let mut d = Vec::new();
            for _ in 0..rng.random_range(1..4) {
                let body_len = rng.random_range(0..300usize);
                d.push([20u8, 21, 22, 23, 25][rng.random_range(0..5)]);
                d.extend_from_slice(&[0xFE, [0xFD, 0xFF, 0x00][rng.random_range(0..3)]]);
                d.extend_from_slice(&[0, rng.random_range(0..3)]); // epoch 0..2
                let mut seq = [0u8; 6];
                rng.fill_bytes(&mut seq);
                d.extend_from_slice(&seq);
                d.extend_from_slice(&(body_len as u16).to_be_bytes());
                let mut body = vec![0u8; body_len];
                rng.fill_bytes(&mut body);
                if body_len >= 12 && rng.random_bool(0.5) {
                    body[0] = rng.random_range(0..25); // handshake type
                    body[1] = 0;
                    body[4] = 0;
                    body[5] = rng.random_range(0..8); // message_seq
                }
                d.extend_from_slice(&body);
            }
            d
        }
    }
}

fn drain(e: &mut DtlsEndpoint) {
    while e.poll_output().is_some() {}
}

#[test]
fn random_datagrams_into_a_fresh_endpoint() {
    let cert = Certificate::generate().unwrap();
    let other = Certificate::generate().unwrap();
    let mut rng = StdRng::seed_from_u64(0xD7_15);
    // Fresh endpoints each round: garbage may legitimately fail a handshake (a plaintext fatal
    // alert is enough before keys exist), but nothing may panic.
    for round in 0..FRESH {
        let role = if round % 2 == 0 {
            DtlsRole::Server
        } else {
            DtlsRole::Client
        };
        let expected: Vec<Fingerprint> = if round % 3 == 0 {
            vec![]
        } else {
            vec![other.fingerprint()]
        };
        #[allow(clippy::disallowed_methods)]
        let mut now = std::time::Instant::now();
        let mut e = DtlsEndpoint::new(role, &cert, expected, BOTH, now).unwrap();
        for _ in 0..100 {
            let d = hostile_datagram(&mut rng);
            let _ = e.handle_input(now, &d);
            drain(&mut e);
            if rng.random_bool(0.1) {
                now += Duration::from_millis(rng.random_range(0..3000));
                e.handle_timeout(now);
                drain(&mut e);
            }
            let _ = e.poll_timeout();
        }
    }
}

#[test]
fn random_records_interleaved_with_a_handshake() {
    // Spoofed records between the real flights: the handshake may fail (a plaintext fatal
    // alert is valid before keys exist) but nothing may panic, and it must end one way or the
    // other within the handshake timeout.
    let mut rng = StdRng::seed_from_u64(0x1234);
    for _ in 0..HANDSHAKES {
        let mut pair = Pair::new(BOTH, BOTH);
        for _ in 0..10 {
            pair.step();
            let now = pair.now;
            for _ in 0..rng.random_range(0..4) {
                let d = hostile_datagram(&mut rng);
                let _ = pair.client.handle_input(now, &d);
                let d = hostile_datagram(&mut rng);
                let _ = pair.server.handle_input(now, &d);
            }
        }
        pair.run(Duration::from_secs(120));
        assert_eq!(pair.client.poll_timeout(), None);
        assert_eq!(pair.server.poll_timeout(), None);
    }
}

#[test]
fn garbage_that_is_not_dtls_does_not_disturb_a_handshake() {
    // Non-DTLS or badly framed datagrams are dropped before rtc-dtls sees them.
    let mut rng = StdRng::seed_from_u64(7);
    let mut pair = Pair::new(BOTH, BOTH);
    for _ in 0..3 {
        pair.step();
        let now = pair.now;
        for _ in 0..200 {
            let mut d = vec![0u8; rng.random_range(0..400)];
            rng.fill_bytes(&mut d);
            if !d.is_empty() && rng.random_bool(0.5) {
                d[0] = rng.random_range(0..20); // STUN/RTP territory (RFC 7983)
            } else if d.len() > 13 {
                d[0] = 22;
                let claimed = d.len() as u16 + 1; // one byte longer than what follows
                d[11..13].copy_from_slice(&(claimed - 13).to_be_bytes());
            }
            let _ = pair.client.handle_input(now, &d);
            let _ = pair.server.handle_input(now, &d);
        }
    }
    pair.run(Duration::from_secs(60));
    assert!(connected(&pair.client_events).is_some() && connected(&pair.server_events).is_some());
}

#[test]
fn random_records_after_the_handshake_leave_it_connected() {
    let mut rng = StdRng::seed_from_u64(99);
    let mut pair = Pair::new(BOTH, BOTH);
    pair.run(Duration::from_secs(10));
    assert!(pair.client.is_connected() && pair.server.is_connected());
    let now = pair.now;
    for _ in 0..ROUNDS {
        let d = hostile_datagram(&mut rng);
        let _ = pair.client.handle_input(now, &d);
        let _ = pair.server.handle_input(now, &d);
        drain(&mut pair.client);
        drain(&mut pair.server);
    }
    // Unauthenticated records cannot tear down an established association.
    assert!(pair.client.is_connected() && pair.server.is_connected());
}

#[test]
fn random_bytes_into_unprotect_never_panic_and_never_pass() {
    let mut rng = StdRng::seed_from_u64(0x5A7B);
    for profile in SrtpProfile::ALL {
        let master = SrtpMasterKey::generate(profile, &mut estuary_keys::KeySource::os());
        let mut tx = SrtpContext::new(&master);
        let mut rx = SrtpContext::new(&master);
        for _ in 0..3000 {
            let mut d = vec![0u8; rng.random_range(0..400)];
            rng.fill_bytes(&mut d);
            if !d.is_empty() && rng.random_bool(0.7) {
                d[0] = 0x80 | (d[0] & 0x3F); // version 2, random P/X/CC
            }
            assert!(rx.unprotect_rtp(&mut d.clone()).is_err());
            assert!(rx.unprotect_rtcp(&mut d.clone()).is_err());
            let mut slice = d.clone();
            assert!(rx.unprotect_rtp_in_place(&mut slice).is_err());
            // Protecting random bytes must not panic either (it may succeed: any V=2 header is
            // protectable).
            let mut p = d.clone();
            let _ = tx.protect_rtp(&mut p);
            let mut p = d;
            let _ = tx.protect_rtcp(&mut p);
        }
        // Every single-bit flip of a valid packet fails authentication (or parsing).
        let mut tx = SrtpContext::new(&master);
        let mut good = rtp(7, 0xABCD, 60);
        tx.protect_rtp(&mut good).unwrap();
        let mut good_rtcp = rtcp_sr(0xABCD, 1);
        tx.protect_rtcp(&mut good_rtcp).unwrap();
        for (pkt, rtcp) in [(good, false), (good_rtcp, true)] {
            for bit in 0..pkt.len() * 8 {
                let mut rx = SrtpContext::new(&master);
                let mut m = pkt.clone();
                m[bit / 8] ^= 1 << (bit % 8);
                let r = if rtcp {
                    rx.unprotect_rtcp(&mut m)
                } else {
                    rx.unprotect_rtp(&mut m)
                };
                assert!(
                    r.is_err(),
                    "{profile} rtcp={rtcp} bit {bit} flipped yet accepted"
                );
            }
            // Truncations too.
            for len in 0..pkt.len() {
                let mut rx = SrtpContext::new(&master);
                let mut m = pkt[..len].to_vec();
                let r = if rtcp {
                    rx.unprotect_rtcp(&mut m)
                } else {
                    rx.unprotect_rtp(&mut m)
                };
                assert!(r.is_err());
            }
        }
    }
}

#[test]
fn random_text_into_the_sdp_parsers_never_panics() {
    let mut rng = StdRng::seed_from_u64(4568);
    let alphabet =
        b"0123456789 :;|^=-_/+ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefinlshaAES_CM_128_HMAC_SHA1_80inline";
    for _ in 0..5000 {
        let s: String = (0..rng.random_range(0..120))
            .map(|_| alphabet[rng.random_range(0..alphabet.len())] as char)
            .collect();
        if let Ok(a) = CryptoAttribute::parse(&s) {
            let _ = a.master_key();
            let _ = CryptoAttribute::parse(&a.to_string());
        }
        let _ = Fingerprint::parse(&s);
    }
}
