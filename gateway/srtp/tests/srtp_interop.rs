//! Byte-identical output with `rtc-srtp` 0.21 (the webrtc-rs implementation that interoperates
//! with browsers and libsrtp), for every profile, across a sequence-number wrap, with CSRCs and
//! header extensions, and both ways for SRTCP.

mod common;

use common::{rtcp_sr, rtp, rtp_with_extension};
use estuary_srtp::{SrtpContext, SrtpMasterKey, SrtpProfile};
use rand::{RngCore, SeedableRng};
use rtc_srtp::context::Context;
use rtc_srtp::crypto::providers::RingProvider;
use rtc_srtp::crypto::RTCCryptoProvider;
use rtc_srtp::protection_profile::ProtectionProfile;

fn theirs(profile: SrtpProfile) -> ProtectionProfile {
    match profile {
        SrtpProfile::Aes128CmSha1_80 => ProtectionProfile::Aes128CmHmacSha1_80,
        SrtpProfile::Aes128CmSha1_32 => ProtectionProfile::Aes128CmHmacSha1_32,
        SrtpProfile::AeadAes128Gcm => ProtectionProfile::AeadAes128Gcm,
    }
}

fn contexts(profile: SrtpProfile, seed: u64) -> (SrtpContext, SrtpContext, Context, Context) {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut key = [0u8; 16];
    let mut salt = vec![0u8; profile.master_salt_len()];
    rng.fill_bytes(&mut key);
    rng.fill_bytes(&mut salt);
    let master = SrtpMasterKey::new(profile, &key, &salt).unwrap();
    let provider = RingProvider::new();
    let ctx = || Context::new(&key, &salt, theirs(profile), None, None, provider.crypto()).unwrap();
    (
        SrtpContext::new(&master),
        SrtpContext::new(&master),
        ctx(),
        ctx(),
    )
}

#[test]
fn srtp_is_byte_identical_with_rtc_srtp() {
    for (i, profile) in SrtpProfile::ALL.into_iter().enumerate() {
        let (mut our_tx, mut our_rx, mut their_tx, mut their_rx) = contexts(profile, i as u64);
        let mut seq = 65_520u16;
        for n in 0..64usize {
            let plain = if n % 3 == 0 {
                rtp_with_extension(seq, 0xCAFE_BABE, 20 + n * 7)
            } else {
                rtp(seq, 0xCAFE_BABE, 172 - 12 + n)
            };
            let mut ours = plain.clone();
            our_tx.protect_rtp(&mut ours).unwrap();
            let expected = their_tx.encrypt_rtp(&plain).unwrap();
            assert_eq!(ours, expected.to_vec(), "{profile} seq {seq}");
            // And each unprotects the other's.
            assert_eq!(
                their_rx.decrypt_rtp(&ours).unwrap().to_vec(),
                plain,
                "{profile} seq {seq}"
            );
            let mut back = expected.to_vec();
            our_rx.unprotect_rtp(&mut back).unwrap();
            assert_eq!(back, plain);
            seq = seq.wrapping_add(1);
        }
    }
}

#[test]
fn srtcp_is_byte_identical_with_rtc_srtp() {
    for (i, profile) in SrtpProfile::ALL.into_iter().enumerate() {
        let (mut our_tx, mut our_rx, mut their_tx, mut their_rx) =
            contexts(profile, 100 + i as u64);
        for n in 0..20 {
            let plain = rtcp_sr(0x0102_0304, n);
            let mut ours = plain.clone();
            our_tx.protect_rtcp(&mut ours).unwrap();
            // The _32 profile still carries an 80-bit SRTCP tag (RFC 5764 §4.1.2).
            assert_eq!(ours.len(), plain.len() + profile.rtcp_overhead());
            let expected = their_tx.encrypt_rtcp(&plain).unwrap();
            assert_eq!(ours, expected.to_vec(), "{profile} packet {n}");
            assert_eq!(their_rx.decrypt_rtcp(&ours).unwrap().to_vec(), plain);
            let mut back = expected.to_vec();
            our_rx.unprotect_rtcp(&mut back).unwrap();
            assert_eq!(back, plain);
        }
    }
}
