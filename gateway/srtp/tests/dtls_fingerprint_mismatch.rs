//! MITM protection: a peer whose certificate matches no signalled fingerprint never yields keys.
//! The side that checks reports `Failed(FingerprintMismatch)`; neither side reports `Connected`.

mod common;

use std::time::Duration;

use common::{certs, connected, failure, Pair};
use estuary_srtp::{Certificate, DtlsEvent, DtlsFailure, SrtpProfile};

const BOTH: &[SrtpProfile] = &[SrtpProfile::Aes128CmSha1_80, SrtpProfile::AeadAes128Gcm];

#[test]
fn server_rejects_an_impostor_client() {
    let (c, s) = certs();
    let impostor = Certificate::generate().unwrap();
    // The server was told the fingerprint of some other certificate.
    let mut pair = Pair::with(
        c,
        s.clone(),
        vec![s.fingerprint()],
        vec![impostor.fingerprint()],
        BOTH,
        BOTH,
    );
    pair.run(Duration::from_secs(60));
    assert_eq!(
        failure(&pair.server_events),
        Some(DtlsFailure::FingerprintMismatch)
    );
    assert!(connected(&pair.server_events).is_none());
    assert!(
        connected(&pair.client_events).is_none(),
        "the client never gets the server Finished"
    );
    // The server's fatal alert ends the client too, at once rather than by timeout.
    assert_eq!(failure(&pair.client_events), Some(DtlsFailure::Alert));
    assert!(pair.elapsed() < Duration::from_secs(1));
}

#[test]
fn client_rejects_an_impostor_server() {
    let (c, s) = certs();
    let impostor = Certificate::generate().unwrap();
    let mut pair = Pair::with(
        c.clone(),
        s,
        vec![impostor.fingerprint()],
        vec![c.fingerprint()],
        BOTH,
        BOTH,
    );
    pair.run(Duration::from_secs(60));
    assert_eq!(
        failure(&pair.client_events),
        Some(DtlsFailure::FingerprintMismatch)
    );
    assert!(connected(&pair.client_events).is_none());
    assert!(connected(&pair.server_events).is_none());
    assert_eq!(failure(&pair.server_events), Some(DtlsFailure::Alert));
}

#[test]
fn late_fingerprint_that_does_not_match_fails() {
    // The server learns the fingerprint only after the handshake: still no keys for a mismatch.
    let (c, s) = certs();
    let impostor = Certificate::generate().unwrap();
    let mut pair = Pair::with(c, s.clone(), vec![s.fingerprint()], vec![], BOTH, BOTH);
    pair.run(Duration::from_secs(1));
    assert!(pair.server_events.is_empty());
    let now = pair.now;
    pair.server
        .set_remote_fingerprints(now, vec![impostor.fingerprint()]);
    pair.run(Duration::from_secs(1));
    assert_eq!(
        failure(&pair.server_events),
        Some(DtlsFailure::FingerprintMismatch)
    );
    assert!(connected(&pair.server_events).is_none());
    // The client, whose handshake had finished, is told with close_notify.
    assert!(matches!(pair.client_events.last(), Some(DtlsEvent::Closed)));
}

#[test]
fn any_matching_fingerprint_of_several_is_enough() {
    // RFC 8122 §5: several a=fingerprint lines, one of which matches.
    let (c, s) = certs();
    let other = Certificate::generate().unwrap();
    let sha1 = estuary_srtp::Fingerprint::of_certificate(estuary_srtp::HashFunction::Sha1, c.der());
    let mut pair = Pair::with(
        c,
        s.clone(),
        vec![other.fingerprint(), s.fingerprint()],
        vec![other.fingerprint(), sha1],
        BOTH,
        BOTH,
    );
    pair.run(Duration::from_secs(60));
    assert!(connected(&pair.client_events).is_some());
    assert!(connected(&pair.server_events).is_some());
}

#[test]
fn late_fingerprint_never_arriving_times_out() {
    let (c, s) = certs();
    let mut pair = Pair::with(c, s.clone(), vec![s.fingerprint()], vec![], BOTH, BOTH);
    pair.run(Duration::from_secs(120));
    assert_eq!(failure(&pair.server_events), Some(DtlsFailure::Timeout));
    assert!(connected(&pair.server_events).is_none());
    assert_eq!(
        pair.elapsed(),
        Duration::from_secs(30),
        "the default handshake timeout"
    );
    assert!(matches!(pair.client_events.last(), Some(DtlsEvent::Closed)));
}
