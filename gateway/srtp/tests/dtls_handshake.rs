//! A full DTLS-SRTP handshake between two `DtlsEndpoint`s on a virtual clock, in both role
//! assignments and with each profile; then SRTP and SRTCP flow both ways with the exported keys.

mod common;

use std::time::Duration;

use common::{connected, failure, rtcp_sr, rtp, Pair};
use estuary_srtp::{DtlsEvent, DtlsFailure, DtlsRole, SrtpContext, SrtpKeyMaterial, SrtpProfile};

const CM80: SrtpProfile = SrtpProfile::Aes128CmSha1_80;
const GCM: SrtpProfile = SrtpProfile::AeadAes128Gcm;

/// Media from `a` (whose DTLS role is `a_role`) reaches `b`, RTP and RTCP.
fn media_flows(
    a_keys: &SrtpKeyMaterial,
    a_role: DtlsRole,
    b_keys: &SrtpKeyMaterial,
    b_role: DtlsRole,
) {
    let mut tx = SrtpContext::new(a_keys.local(a_role));
    let mut rx = SrtpContext::new(b_keys.remote(b_role));
    for seq in 65_500u16..=65_535 {
        let plain = rtp(seq, 0xA1B2_C3D4, 160);
        let mut pkt = plain.clone();
        tx.protect_rtp(&mut pkt).unwrap();
        assert_ne!(pkt[12..172], plain[12..], "payload must be encrypted");
        rx.unprotect_rtp(&mut pkt).unwrap();
        assert_eq!(pkt, plain);
    }
    for seq in 0u16..40 {
        // Past the sequence-number wrap: ROC 1 on both sides.
        let plain = rtp(seq, 0xA1B2_C3D4, 160);
        let mut pkt = plain.clone();
        tx.protect_rtp(&mut pkt).unwrap();
        rx.unprotect_rtp(&mut pkt).unwrap();
        assert_eq!(pkt, plain);
    }
    for n in 0..10 {
        let plain = rtcp_sr(0xA1B2_C3D4, n);
        let mut pkt = plain.clone();
        tx.protect_rtcp(&mut pkt).unwrap();
        assert_ne!(pkt[8..28], plain[8..]);
        rx.unprotect_rtcp(&mut pkt).unwrap();
        assert_eq!(pkt, plain);
    }
}

fn handshake(
    client_profiles: &[SrtpProfile],
    server_profiles: &[SrtpProfile],
) -> (Pair, SrtpProfile) {
    let mut pair = Pair::new(client_profiles, server_profiles);
    pair.run(Duration::from_secs(60));
    let (cp, ck) = connected(&pair.client_events).expect("client connected");
    let (sp, sk) = connected(&pair.server_events).expect("server connected");
    assert_eq!(cp, sp);
    assert_eq!(ck, sk, "both sides export the same keys");
    assert_ne!(ck.client, ck.server, "each direction has its own key");
    assert!(pair.client.is_connected() && pair.server.is_connected());
    assert_eq!(pair.client.poll_timeout(), None);
    assert_eq!(pair.server.poll_timeout(), None);
    // No loss, no timer fired: the handshake took no virtual time.
    assert_eq!(pair.elapsed(), Duration::ZERO);
    media_flows(&ck, DtlsRole::Client, &sk, DtlsRole::Server);
    media_flows(&sk, DtlsRole::Server, &ck, DtlsRole::Client);
    (pair, cp)
}

#[test]
fn we_are_server_each_profile() {
    // The browser is usually the DTLS client (a=setup:active) and we the server.
    for p in [CM80, GCM, SrtpProfile::Aes128CmSha1_32] {
        let (_, got) = handshake(&[p], &[CM80, GCM, SrtpProfile::Aes128CmSha1_32]);
        assert_eq!(got, p);
    }
}

#[test]
fn we_are_client_each_profile() {
    for p in [CM80, GCM] {
        let (_, got) = handshake(&[CM80, GCM], &[p]);
        assert_eq!(got, p);
    }
}

#[test]
fn the_dtls_clients_order_wins() {
    // Chromium-like client: CM first. Firefox-like client: GCM first. Our server order differs.
    assert_eq!(handshake(&[CM80, GCM], &[GCM, CM80]).1, CM80);
    assert_eq!(handshake(&[GCM, CM80], &[CM80, GCM]).1, GCM);
}

#[test]
fn no_common_profile_fails_both_sides() {
    let mut pair = Pair::new(&[SrtpProfile::Aes128CmSha1_32], &[CM80, GCM]);
    pair.run(Duration::from_secs(60));
    assert_eq!(
        failure(&pair.server_events),
        Some(DtlsFailure::NoSrtpProfile)
    );
    assert!(failure(&pair.client_events).is_some());
    assert!(connected(&pair.client_events).is_none() && connected(&pair.server_events).is_none());
}

#[test]
fn keys_wait_for_a_late_fingerprint() {
    // The ClientHello beats the SDP answer: the server starts without the client's fingerprint.
    let (c, s) = common::certs();
    let client_fp = c.fingerprint();
    let sfp = vec![s.fingerprint()];
    let mut pair = Pair::with(c, s, sfp, vec![], &[CM80, GCM], &[CM80, GCM]);
    pair.run(Duration::from_secs(1));
    assert!(connected(&pair.client_events).is_some());
    assert!(
        pair.server_events.is_empty(),
        "no keys before the fingerprint is known"
    );
    assert!(!pair.server.is_connected());
    assert!(
        pair.server.poll_timeout().is_some(),
        "the handshake deadline still runs"
    );

    let now = pair.now;
    pair.server.set_remote_fingerprints(now, vec![client_fp]);
    pair.run(Duration::from_secs(1));
    let (_, sk) = connected(&pair.server_events).expect("connected once the fingerprint came");
    let (_, ck) = connected(&pair.client_events).unwrap();
    assert_eq!(sk, ck);
}

#[test]
fn close_notify_reaches_the_peer() {
    let (mut pair, _) = handshake(&[CM80], &[CM80]);
    let now = pair.now;
    pair.client.close(now);
    pair.run(Duration::from_secs(1));
    assert!(matches!(pair.server_events.last(), Some(DtlsEvent::Closed)));
    assert!(!pair.server.is_connected());
    // Nothing more is taken once closed.
    assert!(pair.server.handle_input(now, &[22, 0xFE, 0xFD]).is_err());
}
