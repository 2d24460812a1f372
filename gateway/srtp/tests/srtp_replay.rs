//! RFC 3711 §3.3.2 replay protection on unprotect: a packet seen before, or older than the
//! window, is refused; a forged packet moves nothing.

mod common;

use common::{rtcp_sr, rtp};
use estuary_srtp::{SrtpContext, SrtpError, SrtpMasterKey, SrtpProfile, REPLAY_WINDOW};

fn pair(profile: SrtpProfile) -> (SrtpContext, SrtpContext) {
    let key: Vec<u8> = (0..16).collect();
    let salt: Vec<u8> = (100..100 + profile.master_salt_len() as u8).collect();
    let master = SrtpMasterKey::new(profile, &key, &salt).unwrap();
    (SrtpContext::new(&master), SrtpContext::new(&master))
}

fn protected(tx: &mut SrtpContext, seq: u16) -> Vec<u8> {
    let mut p = rtp(seq, 0x1234_5678, 160);
    tx.protect_rtp(&mut p).unwrap();
    p
}

#[test]
fn the_same_packet_twice_is_refused() {
    for profile in SrtpProfile::ALL {
        let (mut tx, mut rx) = pair(profile);
        let pkt = protected(&mut tx, 1000);
        let mut first = pkt.clone();
        rx.unprotect_rtp(&mut first).unwrap();
        assert_eq!(first, rtp(1000, 0x1234_5678, 160));
        let mut again = pkt.clone();
        assert_eq!(
            rx.unprotect_rtp(&mut again),
            Err(SrtpError::Replayed),
            "{profile}"
        );
        assert_eq!(again, pkt, "{profile}: a refused packet is left as it was");
    }
}

#[test]
fn a_packet_older_than_the_window_is_refused() {
    for profile in SrtpProfile::ALL {
        let (mut tx, mut rx) = pair(profile);
        let old: Vec<Vec<u8>> = (0..300u16).map(|s| protected(&mut tx, s)).collect();
        let mut newest = old[299].clone();
        rx.unprotect_rtp(&mut newest).unwrap();
        // 299 - 171 = 128 packets back: just outside a 128-packet window.
        let outside = 299 - REPLAY_WINDOW as usize;
        assert_eq!(
            rx.unprotect_rtp(&mut old[outside].clone()),
            Err(SrtpError::TooOld),
            "{profile}"
        );
        // One newer is inside the window, never seen: accepted (reordering), then a replay.
        rx.unprotect_rtp(&mut old[outside + 1].clone()).unwrap();
        assert_eq!(
            rx.unprotect_rtp(&mut old[outside + 1].clone()),
            Err(SrtpError::Replayed)
        );
        // Reordered packets within the window are all accepted once.
        for i in (outside + 2..299).rev() {
            rx.unprotect_rtp(&mut old[i].clone()).unwrap();
        }
    }
}

#[test]
fn a_forged_packet_does_not_move_the_window() {
    for profile in SrtpProfile::ALL {
        let (mut tx, mut rx) = pair(profile);
        let pkts: Vec<Vec<u8>> = (0..20u16).map(|s| protected(&mut tx, s)).collect();
        rx.unprotect_rtp(&mut pkts[10].clone()).unwrap();
        // A far-ahead sequence number with a bad tag must not slide the window past 0..10.
        let mut forged = protected(&mut tx, 30_000);
        let last = forged.len() - 1;
        forged[last] ^= 0x01;
        assert_eq!(
            rx.unprotect_rtp(&mut forged),
            Err(SrtpError::AuthenticationFailed)
        );
        rx.unprotect_rtp(&mut pkts[3].clone()).unwrap();
        // Nor may a forged packet for an unknown SSRC create state.
        let mut stranger = rtp(5, 0xDEAD_BEEF, 40);
        stranger.extend_from_slice(&[0u8; 16][..profile.rtp_overhead()]);
        assert_eq!(
            rx.unprotect_rtp(&mut stranger),
            Err(SrtpError::AuthenticationFailed)
        );
    }
}

#[test]
fn rollover_counter_follows_the_sequence_wrap() {
    // RFC 3711 §3.3.1: the receiver infers the ROC. Step 61 at a time through two full wraps of
    // the 16-bit sequence number, delivering each pair swapped (reordering across the wrap
    // points included); every packet must decrypt to what was sent.
    for profile in SrtpProfile::ALL {
        let (mut tx, mut rx) = pair(profile);
        let mut seq = 65_000u16;
        for _ in 0..(2 * 65_536 / 122) {
            let (a, b) = (seq, seq.wrapping_add(61));
            let (pa, pb) = (protected(&mut tx, a), protected(&mut tx, b));
            for (s, mut p) in [(b, pb), (a, pa)] {
                rx.unprotect_rtp(&mut p)
                    .unwrap_or_else(|e| panic!("{profile} seq {s}: {e}"));
                assert_eq!(p, rtp(s, 0x1234_5678, 160));
            }
            seq = seq.wrapping_add(122);
        }
    }
}

#[test]
fn srtcp_replay_is_refused() {
    for profile in SrtpProfile::ALL {
        let (mut tx, mut rx) = pair(profile);
        let mut first = rtcp_sr(7, 1);
        tx.protect_rtcp(&mut first).unwrap();
        let copy = first.clone();
        rx.unprotect_rtcp(&mut first).unwrap();
        assert_eq!(first, rtcp_sr(7, 1));
        assert_eq!(
            rx.unprotect_rtcp(&mut copy.clone()),
            Err(SrtpError::Replayed),
            "{profile}"
        );
        // An SRTCP packet that claims to be unencrypted (E = 0) is refused.
        let mut clear = copy.clone();
        let e_at = if profile == SrtpProfile::AeadAes128Gcm {
            clear.len() - 4
        } else {
            clear.len() - 14
        };
        clear[e_at] &= 0x7F;
        assert_eq!(
            rx.unprotect_rtcp(&mut clear),
            Err(SrtpError::UnencryptedSrtcp)
        );
    }
}

#[test]
fn protect_needs_room_and_keeps_the_packet_on_error() {
    let (mut tx, _) = pair(SrtpProfile::Aes128CmSha1_80);
    let plain = rtp(1, 2, 160);
    let mut buf = plain.clone();
    let len = buf.len();
    assert_eq!(
        tx.protect_rtp_in_place(&mut buf, len),
        Err(SrtpError::BufferTooSmall)
    );
    assert_eq!(buf, plain);
    let mut short = vec![0x80, 0, 0];
    assert_eq!(tx.protect_rtp(&mut short), Err(SrtpError::TooShort));
    assert_eq!(short, vec![0x80, 0, 0]);
    let mut v1 = rtp(1, 2, 10);
    v1[0] = 0x40;
    assert_eq!(tx.protect_rtp(&mut v1), Err(SrtpError::BadVersion));
}
