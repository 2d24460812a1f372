//! The per-packet path allocates nothing (STYLE.md R14): protect and unprotect of RTP and RTCP,
//! once an SSRC is known and the caller's buffer has room for the tag. Counted with a global
//! allocator (estuary-alloc-count), per thread.
//! Also reports what `rtc-srtp` allocates for the same work, for the record.

mod common;

use common::{rtcp_sr, rtp};
use estuary_alloc_count::count;
use estuary_srtp::{SrtpContext, SrtpMasterKey, SrtpProfile};
use rtc_srtp::crypto::providers::RingProvider;
use rtc_srtp::crypto::RTCCryptoProvider;

#[global_allocator]
static GLOBAL: estuary_alloc_count::Counting = estuary_alloc_count::Counting;

#[test]
fn protect_and_unprotect_do_not_allocate() {
    const N: u16 = 1000;
    for profile in SrtpProfile::ALL {
        let master =
            SrtpMasterKey::new(profile, &[7; 16], &vec![9; profile.master_salt_len()]).unwrap();
        let mut tx = SrtpContext::new(&master);
        let mut rx = SrtpContext::new(&master);
        let plain: Vec<Vec<u8>> = (0..=N).map(|s| rtp(s, 42, 160)).collect();
        let reports: Vec<Vec<u8>> = (0..100).map(|i| rtcp_sr(42, i)).collect();
        let mut buf = Vec::with_capacity(1500);
        // Warm-up: the first packet of an SSRC creates its state (one allocation, once).
        buf.extend_from_slice(&plain[0]);
        tx.protect_rtp(&mut buf).unwrap();
        rx.unprotect_rtp(&mut buf).unwrap();
        let mut rtcp = Vec::with_capacity(1500);
        rtcp.extend_from_slice(&rtcp_sr(42, 0));
        tx.protect_rtcp(&mut rtcp).unwrap();
        rx.unprotect_rtcp(&mut rtcp).unwrap();

        let n = count(|| {
            for p in &plain[1..] {
                buf.clear();
                buf.extend_from_slice(p);
                tx.protect_rtp(&mut buf).unwrap();
                rx.unprotect_rtp(&mut buf).unwrap();
            }
            for r in &reports[1..] {
                rtcp.clear();
                rtcp.extend_from_slice(r);
                tx.protect_rtcp(&mut rtcp).unwrap();
                rx.unprotect_rtcp(&mut rtcp).unwrap();
            }
        });
        assert_eq!(n, 0, "{profile}: allocations on the hot path");

        // For the record: rtc-srtp on the same packets.
        let provider = RingProvider::new();
        let theirs = match profile {
            SrtpProfile::Aes128CmSha1_80 => {
                rtc_srtp::protection_profile::ProtectionProfile::Aes128CmHmacSha1_80
            }
            SrtpProfile::Aes128CmSha1_32 => {
                rtc_srtp::protection_profile::ProtectionProfile::Aes128CmHmacSha1_32
            }
            SrtpProfile::AeadAes128Gcm => {
                rtc_srtp::protection_profile::ProtectionProfile::AeadAes128Gcm
            }
        };
        let salt = vec![9; profile.master_salt_len()];
        let mut ttx =
            rtc_srtp::context::Context::new(&[7; 16], &salt, theirs, None, None, provider.crypto())
                .unwrap();
        let mut trx =
            rtc_srtp::context::Context::new(&[7; 16], &salt, theirs, None, None, provider.crypto())
                .unwrap();
        let _ = trx.decrypt_rtp(&ttx.encrypt_rtp(&plain[0]).unwrap());
        let theirs_n = count(|| {
            for p in &plain[1..] {
                let e = ttx.encrypt_rtp(p).unwrap();
                let _ = trx.decrypt_rtp(&e).unwrap();
            }
        });
        println!(
            "{profile}: rtc-srtp allocates {:.1} times per protect+unprotect",
            theirs_n as f64 / f64::from(N)
        );
    }
}
