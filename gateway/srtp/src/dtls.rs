//! The DTLS-SRTP handshake (RFC 5764) as a sans-IO endpoint over `rtc-dtls`.
//!
//! [`DtlsEndpoint`] wraps one `rtc_dtls::endpoint::Endpoint` that holds exactly one
//! association. `rtc-dtls` multiplexes associations by socket address; we have one peer per
//! endpoint (the ICE-selected pair, addressed by our caller), so a fixed placeholder address
//! stands for it and never leaves this module.
//!
//! The peer is authenticated by fingerprint, twice over: `rtc-dtls` calls our verifier with
//! the peer's certificate during the handshake (so a mismatch aborts it with a
//! `bad_certificate` alert before any key is derived), and on completion we check the
//! certificate again before releasing the SRTP keys. If the remote fingerprint is not known yet
//! (the DTLS ClientHello can beat the SDP answer), the handshake runs to completion and the keys
//! are held back until [`DtlsEndpoint::set_remote_fingerprints`] brings the fingerprints.
//!
//! # Retransmission guard
//!
//! `rtc-dtls` 0.21.1 clears its retransmission timer whenever a handshake record arrives while
//! it waits for the peer's next flight, and re-arms it only when it sends a new flight. When
//! what arrived is the peer *retransmitting its previous flight* (because ours was lost), RFC
//! 6347 §4.2.4 says to retransmit ours; `rtc-dtls` instead goes silent, and both sides wait for
//! each other until the handshake times out. One lost flight toward a peer whose timer is
//! shorter than ours (browsers start far below 1 s) is enough. So during the handshake:
//!
//! 1. A datagram that only repeats handshake messages `rtc-dtls` already has (every record an
//!    unfragmented epoch-0 handshake message whose `message_seq` was received whole before) is
//!    not passed on, so `rtc-dtls` keeps its timer and later retransmits with fresh record
//!    sequence numbers. We answer it at once with a verbatim copy of our last flight: the peer
//!    repeats because it lacks those records, so its replay window (RFC 6347 §4.1.2.6) lets
//!    them through; if the flights merely crossed, the copies are dropped as duplicates.
//! 2. If `rtc-dtls` is nevertheless left waiting without a timer (a fragmented repeat went
//!    through), we resend that copy on our own timer.
//!
//! Both are bounded by a budget, so a peer (or a spoofer) cannot make us amplify without limit.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rtc_dtls::config::{
    ClientAuthType, ConfigBuilder, ExtendedMasterSecretType, VerifyPeerCertificateFn,
};
use rtc_dtls::endpoint::{Endpoint, EndpointEvent};
use rtc_dtls::extension::extension_use_srtp::SrtpProtectionProfile;
use rtc_shared::error::Error as RtcError;
use rtc_shared::TransportProtocol;

use crate::cert::Certificate;
use crate::fingerprint::Fingerprint;
use crate::key::{DtlsRole, SrtpKeyMaterial};
use crate::profile::SrtpProfile;

/// Tuning for a [`DtlsEndpoint`]. `Default` is tuned for browsers over the public Internet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DtlsConfig {
    /// SRTP profiles we accept, in our order of preference (used when we are the DTLS client;
    /// as server we take the client's most preferred one among these, RFC 5764 §4.1.1).
    /// Default: AES_CM_128_HMAC_SHA1_80 then AEAD_AES_128_GCM.
    pub profiles: Vec<SrtpProfile>,
    /// Handshake retransmission interval. Default 1 s, the initial timer of RFC 6347 §4.2.4.1.
    /// `rtc-dtls` keeps it constant (no back-off) and gives up after 7 retransmissions of one
    /// flight.
    pub retransmit_interval: Duration,
    /// The whole handshake, from creation to `Connected`, must finish within this; otherwise
    /// `Failed(Timeout)`. Covers a server that never hears a ClientHello and a handshake stuck
    /// waiting for the SDP fingerprint. Default 30 s.
    pub handshake_timeout: Duration,
    /// Largest datagram we send; handshake messages are fragmented to fit (RFC 6347 §4.1.1).
    /// Default 1200 bytes, safe under any IPv6 path plus TURN and ICE overhead.
    pub mtu: usize,
}

impl Default for DtlsConfig {
    fn default() -> Self {
        DtlsConfig {
            profiles: vec![SrtpProfile::Aes128CmSha1_80, SrtpProfile::AeadAes128Gcm],
            retransmit_interval: Duration::from_secs(1),
            handshake_timeout: Duration::from_secs(30),
            mtu: 1200,
        }
    }
}

/// What the endpoint asks of its caller, in order.
#[derive(Debug)]
pub enum Output {
    /// Send this datagram to the peer (the caller knows its address: the ICE-selected pair).
    Transmit(Vec<u8>),
    /// Something happened.
    Event(DtlsEvent),
}

/// The outcome of the handshake, reported once (then possibly `Closed` or `Failed` later).
#[derive(Debug)]
pub enum DtlsEvent {
    /// The handshake completed and the peer's certificate matches a signalled fingerprint.
    /// Build the SRTP contexts from `keys`: `keys.local(role)` protects, `keys.remote(role)`
    /// unprotects.
    Connected {
        /// The profile the handshake negotiated.
        profile: SrtpProfile,
        /// The exported master keys, split per RFC 5764 §4.2.
        keys: SrtpKeyMaterial,
    },
    /// The association is dead; no keys were (or will be) released by it after this.
    Failed(DtlsFailure),
    /// The peer closed the association with `close_notify` (RFC 5246 §7.2.1). Our
    /// `close_notify` reply has been queued.
    Closed,
}

/// Why the handshake or association failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DtlsFailure {
    /// The peer's certificate matches none of the SDP fingerprints: a man in the middle, or a
    /// signalling mix-up (RFC 5763 §5). Treat as an attack.
    #[error("peer certificate does not match the signalled fingerprint")]
    FingerprintMismatch,
    /// The handshake did not finish in time, or a flight was retransmitted to exhaustion.
    #[error("DTLS handshake timed out")]
    Timeout,
    /// A fatal alert was received, or sent in reply to a bad record.
    #[error("fatal DTLS alert")]
    Alert,
    /// No SRTP profile in common, or the peer did not negotiate `use_srtp` at all.
    #[error("no common SRTP protection profile")]
    NoSrtpProfile,
    /// Any other handshake error, as `rtc-dtls` reported it.
    #[error("DTLS handshake failed: {0}")]
    Handshake(String),
}

/// Why a datagram was not taken. The endpoint is unaffected; count and drop.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DtlsInputError {
    /// The first byte is outside 20..=63, so RFC 7983 says this is not DTLS.
    #[error("not a DTLS datagram")]
    NotDtls,
    /// Record framing is broken (RFC 6347 §4.1.2.7: silently discard).
    #[error("malformed DTLS record framing")]
    Malformed,
    /// The association already failed or closed.
    #[error("DTLS association is finished")]
    Finished,
}

/// Setting up an endpoint failed: a bug or a bad configuration, not the peer's doing.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DtlsSetupError {
    /// `profiles` was empty.
    #[error("no SRTP profile configured")]
    NoProfiles,
    /// `rtc-dtls` refused the configuration.
    #[error("DTLS configuration rejected: {0}")]
    Config(String),
}

/// Where the endpoint is. Each state carries only what is valid in it (STYLE.md R4).
enum State {
    /// Flights are being exchanged; fail at `deadline`.
    Handshaking { deadline: Instant },
    /// The handshake is done but no fingerprint has been signalled yet: keys held back.
    AwaitingFingerprint {
        deadline: Instant,
        profile: SrtpProfile,
        keys: SrtpKeyMaterial,
        peer_certificate: Vec<u8>,
    },
    /// Keys released. The association stays up to answer retransmitted final flights
    /// (RFC 6347 §4.2.4) and to notice `close_notify`.
    Connected { profile: SrtpProfile },
    /// Terminal.
    Failed,
    /// Terminal.
    Closed,
}

/// What the endpoint shares with the verifier callback it hands to `rtc-dtls`. The callback
/// runs synchronously inside our own `handle_input`, so the lock is never contended; it exists
/// only because `rtc-dtls` wants a `Fn + Send + Sync` closure.
#[derive(Default)]
struct Verifier {
    expected: Vec<Fingerprint>,
    mismatch: bool,
}

/// One DTLS-SRTP association, sans-IO.
///
/// # Driving it
///
/// ```text
/// let mut dtls = DtlsEndpoint::new(role, &cert, remote_fingerprints, &profiles, now)?;
/// loop {
///     // 1. drain: send every Transmit to the peer, act on every Event
///     while let Some(out) = dtls.poll_output() { ... }
///     // 2. wait for a datagram or the deadline
///     match wait(dtls.poll_timeout()) {
///         Datagram(d) => { let _ = dtls.handle_input(now, &d); }
///         Timeout => dtls.handle_timeout(now),
///     }
/// }
/// ```
///
/// After any call that takes `now` (and after `new`), drain [`poll_output`] to `None`, then
/// re-read [`poll_timeout`]. Nothing here reads a clock or touches a socket.
///
/// [`poll_output`]: DtlsEndpoint::poll_output
/// [`poll_timeout`]: DtlsEndpoint::poll_timeout
pub struct DtlsEndpoint {
    role: DtlsRole,
    endpoint: Endpoint,
    state: State,
    verifier: Arc<Mutex<Verifier>>,
    profiles: Vec<SrtpProfile>,
    outputs: VecDeque<Output>,
    guard: RetransmitGuard,
}

/// Our retransmission of the last flight while `rtc-dtls` has no timer (see the module docs).
struct RetransmitGuard {
    /// The datagrams of the last flight `rtc-dtls` sent.
    flight: Vec<Vec<u8>>,
    /// When to retransmit `flight`, if `rtc-dtls` is waiting without a timer.
    at: Option<Instant>,
    interval: Duration,
    /// Retransmissions we may still send, against amplification by a peer (or an off-path
    /// sender) that keeps poking us with handshake records.
    budget: u32,
    /// Bit `n` set: the peer's epoch-0 handshake message with `message_seq` n reached
    /// `rtc-dtls` whole.
    seen: u64,
}

/// Retransmissions the guard may send in one handshake. `rtc-dtls` allows 7 per flight; a
/// handshake has at most three flights of ours, and the handshake deadline bounds it anyway.
const GUARD_BUDGET: u32 = 21;

/// Stands for the one peer inside `rtc-dtls`; never used for I/O.
const PEER: SocketAddr = SocketAddr::V4(std::net::SocketAddrV4::new(
    std::net::Ipv4Addr::LOCALHOST,
    9,
));

impl DtlsEndpoint {
    /// An endpoint with default tuning and the given SRTP profiles. As client it queues the
    /// ClientHello at once; as server it waits for one.
    ///
    /// `expected_remote` are the peer's `a=fingerprint` values. Pass an empty list if the
    /// SDP has not arrived yet and call [`Self::set_remote_fingerprints`] later.
    pub fn new(
        role: DtlsRole,
        cert: &Certificate,
        expected_remote: Vec<Fingerprint>,
        profiles: &[SrtpProfile],
        now: Instant,
    ) -> Result<Self, DtlsSetupError> {
        let config = DtlsConfig {
            profiles: profiles.to_vec(),
            ..DtlsConfig::default()
        };
        Self::with_config(role, cert, expected_remote, &config, now)
    }

    /// An endpoint with explicit tuning.
    pub fn with_config(
        role: DtlsRole,
        cert: &Certificate,
        expected_remote: Vec<Fingerprint>,
        config: &DtlsConfig,
        now: Instant,
    ) -> Result<Self, DtlsSetupError> {
        if config.profiles.is_empty() {
            return Err(DtlsSetupError::NoProfiles);
        }
        let verifier = Arc::new(Mutex::new(Verifier {
            expected: expected_remote,
            mismatch: false,
        }));
        let shared = verifier.clone();
        let verify: VerifyPeerCertificateFn = Arc::new(move |certs: &[Vec<u8>], _| {
            let mut v = shared
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            // No fingerprint signalled yet: let the handshake finish and check on completion,
            // before any key leaves the endpoint.
            if v.expected.is_empty() {
                return Ok(());
            }
            match certs.first() {
                Some(der) if v.expected.iter().any(|f| f.matches(der)) => Ok(()),
                _ => {
                    v.mismatch = true;
                    Err(RtcError::Other(
                        "certificate does not match the SDP fingerprint".into(),
                    ))
                }
            }
        });
        let is_client = role == DtlsRole::Client;
        let handshake = ConfigBuilder::default()
            .with_crypto_provider(cert.provider())
            .with_certificates(vec![cert.dtls().clone()])
            .with_srtp_protection_profiles(
                config.profiles.iter().map(|p| to_rtc_profile(*p)).collect(),
            )
            // No CA chain in WebRTC: the fingerprint callback is the authentication.
            .with_insecure_skip_verify(true)
            .with_verify_peer_certificate(Some(verify))
            // Both sides must present a certificate (RFC 5763 §5); as server, demand it.
            .with_client_auth(if is_client {
                ClientAuthType::NoClientCert
            } else {
                ClientAuthType::RequireAnyClientCert
            })
            .with_extended_master_secret(ExtendedMasterSecretType::Request)
            .with_flight_interval(config.retransmit_interval)
            .with_mtu(config.mtu)
            // rtc-dtls always sends SNI as client; a host name is what RFC 6066 §3 allows.
            .with_server_name("localhost".into())
            .build(is_client, None)
            .map_err(|e| DtlsSetupError::Config(e.to_string()))?;
        let handshake = Arc::new(handshake);

        let mut endpoint = if is_client {
            Endpoint::new(PEER, TransportProtocol::UDP, None)
        } else {
            Endpoint::new(PEER, TransportProtocol::UDP, Some(handshake.clone()))
        };
        if is_client {
            endpoint
                .connect(now, PEER, handshake, None)
                .map_err(|e| DtlsSetupError::Config(e.to_string()))?;
        }
        let mut this = DtlsEndpoint {
            role,
            endpoint,
            state: State::Handshaking {
                deadline: now + config.handshake_timeout,
            },
            verifier,
            profiles: config.profiles.clone(),
            outputs: VecDeque::new(),
            guard: RetransmitGuard {
                flight: Vec::new(),
                at: None,
                interval: config.retransmit_interval,
                budget: GUARD_BUDGET,
                seen: 0,
            },
        };
        let sent = this.drain_transmits();
        this.reconcile_guard(now, sent);
        Ok(this)
    }

    /// Our DTLS role.
    pub fn role(&self) -> DtlsRole {
        self.role
    }

    /// Whether keys have been released and the association is up.
    pub fn is_connected(&self) -> bool {
        matches!(self.state, State::Connected { .. })
    }

    /// The negotiated profile, once connected.
    pub fn profile(&self) -> Option<SrtpProfile> {
        match self.state {
            State::Connected { profile } => Some(profile),
            _ => None,
        }
    }

    /// Give (or replace) the peer's SDP fingerprints. If the handshake already finished and was
    /// waiting for them, this verifies the peer now and queues `Connected` or `Failed`.
    ///
    /// Drain [`Self::poll_output`] afterwards.
    pub fn set_remote_fingerprints(&mut self, now: Instant, fingerprints: Vec<Fingerprint>) {
        self.lock_verifier().expected = fingerprints;
        let State::AwaitingFingerprint { .. } = self.state else {
            return;
        };
        if self.lock_verifier().expected.is_empty() {
            return;
        }
        let old = std::mem::replace(&mut self.state, State::Failed);
        if let State::AwaitingFingerprint {
            profile,
            keys,
            peer_certificate,
            ..
        } = old
        {
            self.release_keys(now, profile, keys, &peer_certificate);
        }
    }

    /// Feed one datagram the caller demultiplexed as DTLS (RFC 7983: first byte 20..=63).
    ///
    /// `Err` means the datagram was dropped and nothing changed. Protocol failures are not
    /// errors here: they arrive as `Event(Failed(..))` from [`Self::poll_output`], which must be
    /// drained afterwards.
    pub fn handle_input(&mut self, now: Instant, datagram: &[u8]) -> Result<(), DtlsInputError> {
        if matches!(self.state, State::Failed | State::Closed) {
            return Err(DtlsInputError::Finished);
        }
        match datagram.first() {
            Some(20..=63) => {}
            _ => return Err(DtlsInputError::NotDtls),
        }
        if !framing_ok(datagram) {
            return Err(DtlsInputError::Malformed);
        }
        let (repeat, whole) = handshake_messages(datagram, self.guard.seen);
        if repeat && matches!(self.state, State::Handshaking { .. }) {
            // The peer repeats a flight we already have: it lacks ours (module docs, point 1).
            self.resend_last_flight();
            return Ok(());
        }
        self.guard.seen |= whole;
        let result = self.endpoint.read(now, PEER, None, datagram.into());
        // Whatever happened, what rtc-dtls queued (a flight, an alert) goes out first.
        let sent = self.drain_transmits();
        match result {
            Ok(events) => {
                for event in events {
                    match event {
                        EndpointEvent::HandshakeComplete => self.on_handshake_complete(now),
                        EndpointEvent::PeerClosed => {
                            self.state = State::Closed;
                            self.outputs.push_back(Output::Event(DtlsEvent::Closed));
                        }
                        // DTLS-SRTP carries no application data (RFC 5764 §4.1): drop it.
                        EndpointEvent::ApplicationData(_) => {}
                        _ => {}
                    }
                }
            }
            Err(err) => self.on_error(err),
        }
        // After the state has moved: a completed handshake needs no guard.
        self.reconcile_guard(now, sent);
        Ok(())
    }

    /// Drive retransmission and the handshake deadline. Call at [`Self::poll_timeout`]; early or
    /// repeated calls are harmless. Drain [`Self::poll_output`] afterwards.
    pub fn handle_timeout(&mut self, now: Instant) {
        let deadline = match self.state {
            State::Handshaking { deadline } | State::AwaitingFingerprint { deadline, .. } => {
                Some(deadline)
            }
            State::Connected { .. } => None,
            State::Failed | State::Closed => return,
        };
        if deadline.is_some_and(|d| now >= d) {
            self.abort(now, DtlsFailure::Timeout);
            return;
        }
        if matches!(self.state, State::Handshaking { .. })
            && self.guard.at.is_some_and(|at| now >= at)
        {
            self.guard.at = None;
            self.resend_last_flight();
        }
        let result = self.endpoint.handle_timeout(PEER, now);
        let sent = self.drain_transmits();
        self.reconcile_guard(now, sent);
        match result {
            Ok(()) => {}
            // Before the server has heard a ClientHello there is no association to time out.
            Err(RtcError::InvalidRemoteAddress(_)) => {}
            // rtc-dtls moves to Errored once a flight was retransmitted to exhaustion, and
            // reports the next step as an invalid FSM transition.
            Err(RtcError::ErrInvalidFsmTransition) => self.fail(DtlsFailure::Timeout),
            Err(e) => self.on_error(e),
        }
    }

    /// The next thing to do. Drain to `None` after `new` and after every call taking `now`.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.outputs.pop_front()
    }

    /// When [`Self::handle_timeout`] is next due: the retransmission timer or the handshake
    /// deadline, whichever is sooner. `None` once connected (nothing is timed then) or finished.
    /// Re-read after every call taking `now`.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let guard = self
            .guard
            .at
            .filter(|_| matches!(self.state, State::Handshaking { .. }));
        let retransmit = match (self.endpoint.poll_timeout(&PEER), guard) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let deadline = match self.state {
            State::Handshaking { deadline } | State::AwaitingFingerprint { deadline, .. } => {
                Some(deadline)
            }
            State::Connected { .. } => None,
            State::Failed | State::Closed => return None,
        };
        match (retransmit, deadline) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Close the association: queues `close_notify` (RFC 5246 §7.2.1). No event follows.
    pub fn close(&mut self, now: Instant) {
        if matches!(self.state, State::Failed | State::Closed) {
            return;
        }
        self.close_association(now);
        self.state = State::Closed;
    }

    fn on_handshake_complete(&mut self, now: Instant) {
        let Some(conn) = self.endpoint.get_connection_state(PEER) else {
            self.abort(
                now,
                DtlsFailure::Handshake("no association state after handshake".into()),
            );
            return;
        };
        let Some(peer_certificate) = conn.peer_certificates.first().cloned() else {
            self.abort(
                now,
                DtlsFailure::Handshake("peer presented no certificate".into()),
            );
            return;
        };
        let Some(profile) =
            from_rtc_profile(conn.srtp_protection_profile()).filter(|p| self.profiles.contains(p))
        else {
            self.abort(now, DtlsFailure::NoSrtpProfile);
            return;
        };
        let len = SrtpKeyMaterial::exporter_len(profile);
        let keys = match conn.export_keying_material(SrtpKeyMaterial::EXPORTER_LABEL, &[], len) {
            Ok(secret) => SrtpKeyMaterial::from_exporter(profile, secret.as_ref()),
            Err(e) => {
                self.abort(
                    now,
                    DtlsFailure::Handshake(format!("keying material export: {e}")),
                );
                return;
            }
        };
        let keys = match keys {
            Ok(k) => k,
            Err(e) => {
                self.abort(now, DtlsFailure::Handshake(e.to_string()));
                return;
            }
        };
        if self.lock_verifier().expected.is_empty() {
            let deadline = match self.state {
                State::Handshaking { deadline } => deadline,
                _ => now,
            };
            self.state = State::AwaitingFingerprint {
                deadline,
                profile,
                keys,
                peer_certificate,
            };
        } else {
            self.release_keys(now, profile, keys, &peer_certificate);
        }
    }

    /// The second fingerprint check, on the certificate the handshake authenticated.
    fn release_keys(
        &mut self,
        now: Instant,
        profile: SrtpProfile,
        keys: SrtpKeyMaterial,
        peer: &[u8],
    ) {
        if self
            .lock_verifier()
            .expected
            .iter()
            .any(|f| f.matches(peer))
        {
            self.state = State::Connected { profile };
            self.outputs
                .push_back(Output::Event(DtlsEvent::Connected { profile, keys }));
        } else {
            // Not `abort`: the caller has already moved the state out of its live variant.
            self.close_association(now);
            self.enter_failed(DtlsFailure::FingerprintMismatch);
        }
    }

    fn on_error(&mut self, err: RtcError) {
        if self.lock_verifier().mismatch {
            self.fail(DtlsFailure::FingerprintMismatch);
            return;
        }
        let connected = matches!(
            self.state,
            State::Connected { .. } | State::AwaitingFingerprint { .. }
        );
        match err {
            RtcError::ErrAlertFatalOrClose => self.fail(DtlsFailure::Alert),
            // After the handshake, a record that failed to decode or decrypt was dropped by
            // rtc-dtls and changes nothing (RFC 6347 §4.1.2.7).
            _ if connected => {}
            RtcError::ErrClientNoMatchingSrtpProfile | RtcError::ErrServerNoMatchingSrtpProfile => {
                self.fail(DtlsFailure::NoSrtpProfile)
            }
            e => self.fail(DtlsFailure::Handshake(e.to_string())),
        }
    }

    /// Fail where `rtc-dtls` has sent no alert: tell the peer with `close_notify` (it may believe
    /// the handshake succeeded; `rtc-dtls` has no API to send a fatal alert of our choosing).
    fn abort(&mut self, now: Instant, reason: DtlsFailure) {
        if matches!(self.state, State::Failed | State::Closed) {
            return;
        }
        self.close_association(now);
        self.enter_failed(reason);
    }

    fn close_association(&mut self, now: Instant) {
        let _ = self.endpoint.stop(now, PEER);
        self.drain_transmits();
    }

    fn fail(&mut self, reason: DtlsFailure) {
        if matches!(self.state, State::Failed | State::Closed) {
            return;
        }
        self.enter_failed(reason);
    }

    fn enter_failed(&mut self, reason: DtlsFailure) {
        self.state = State::Failed;
        self.outputs
            .push_back(Output::Event(DtlsEvent::Failed(reason)));
    }

    /// Queue what `rtc-dtls` wants sent; returns a copy for the retransmission guard.
    fn drain_transmits(&mut self) -> Vec<Vec<u8>> {
        let mut sent = Vec::new();
        while let Some(t) = self.endpoint.poll_transmit() {
            let d = t.message.to_vec();
            sent.push(d.clone());
            self.outputs.push_back(Output::Transmit(d));
        }
        sent
    }

    /// After every call into `rtc-dtls`: remember a flight it sent, and take over its
    /// retransmission if it is left waiting without a timer (module docs, point 2).
    fn reconcile_guard(&mut self, now: Instant, sent: Vec<Vec<u8>>) {
        if !matches!(self.state, State::Handshaking { .. }) {
            self.guard.at = None;
            self.guard.flight.clear();
            return;
        }
        if !sent.is_empty() {
            self.guard.flight = sent;
        }
        let rtc_waits_without_timer = self.endpoint.poll_timeout(&PEER).is_none()
            && self.endpoint.get_connection_state(PEER).is_some()
            && !self.guard.flight.is_empty();
        if !rtc_waits_without_timer {
            self.guard.at = None;
        } else if self.guard.at.is_none() {
            self.guard.at = Some(now + self.guard.interval);
        }
    }

    fn resend_last_flight(&mut self) {
        if self.guard.budget == 0 {
            return;
        }
        self.guard.budget -= 1;
        for d in &self.guard.flight {
            self.outputs.push_back(Output::Transmit(d.clone()));
        }
    }

    fn lock_verifier(&self) -> std::sync::MutexGuard<'_, Verifier> {
        self.verifier
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// The record framing `rtc-dtls` insists on, checked before it sees the datagram so framing
/// garbage is dropped (RFC 6347 §4.1.2.7) instead of surfacing as a handshake error: every
/// record is a 13-byte header plus the body length it declares, and records fill the datagram.
///
/// Also refused: a ChangeCipherSpec record that is not the 1-byte epoch-0 record DTLS 1.2 sends
/// (RFC 5246 §7.1; we do no renegotiation, so no CCS is ever protected). `rtc-dtls` 0.21.1
/// passes CCS records of any epoch through its record decryption unauthenticated, and answers a
/// malformed one with a fatal `decode_error`: one spoofed datagram would otherwise tear down an
/// established association.
fn framing_ok(datagram: &[u8]) -> bool {
    const HEADER: usize = 13;
    let mut rest = datagram;
    while !rest.is_empty() {
        if rest.len() <= HEADER {
            return false;
        }
        let body = usize::from(u16::from_be_bytes([rest[11], rest[12]]));
        if rest.len() < HEADER + body {
            return false;
        }
        let epoch = u16::from_be_bytes([rest[3], rest[4]]);
        if rest[0] == 20 && (epoch != 0 || body != 1) {
            return false;
        }
        rest = &rest[HEADER + body..];
    }
    true
}

/// Looks at the epoch-0 handshake records of a well-framed datagram (RFC 6347 §4.2.2 header:
/// type, length(3), message_seq(2), fragment_offset(3), fragment_length(3)). Returns whether
/// the datagram only repeats messages in `seen`, and the set of messages it carries whole.
fn handshake_messages(datagram: &[u8], seen: u64) -> (bool, u64) {
    const HEADER: usize = 13;
    let be24 = |b: &[u8]| (usize::from(b[0]) << 16) | (usize::from(b[1]) << 8) | usize::from(b[2]);
    let mut whole = 0u64;
    let mut only_repeats = true;
    let mut any = false;
    let mut rest = datagram;
    while rest.len() > HEADER {
        let body_len = usize::from(u16::from_be_bytes([rest[11], rest[12]]));
        let Some(body) = rest.get(HEADER..HEADER + body_len) else {
            break;
        };
        let epoch = u16::from_be_bytes([rest[3], rest[4]]);
        let mut repeat = false;
        if rest[0] == 22 && epoch == 0 && body.len() >= 12 {
            let length = be24(&body[1..4]);
            let seq = u16::from_be_bytes([body[4], body[5]]);
            let unfragmented = be24(&body[6..9]) == 0 && be24(&body[9..12]) == length;
            if unfragmented && body.len() == 12 + length && seq < 64 {
                any = true;
                whole |= 1 << seq;
                repeat = seen & (1 << seq) != 0;
            }
        }
        only_repeats &= repeat;
        rest = &rest[HEADER + body_len..];
    }
    (any && only_repeats, whole)
}

fn to_rtc_profile(p: SrtpProfile) -> SrtpProtectionProfile {
    match p {
        SrtpProfile::Aes128CmSha1_80 => SrtpProtectionProfile::Srtp_Aes128_Cm_Hmac_Sha1_80,
        SrtpProfile::Aes128CmSha1_32 => SrtpProtectionProfile::Srtp_Aes128_Cm_Hmac_Sha1_32,
        SrtpProfile::AeadAes128Gcm => SrtpProtectionProfile::Srtp_Aead_Aes_128_Gcm,
    }
}

fn from_rtc_profile(p: SrtpProtectionProfile) -> Option<SrtpProfile> {
    match p {
        SrtpProtectionProfile::Srtp_Aes128_Cm_Hmac_Sha1_80 => Some(SrtpProfile::Aes128CmSha1_80),
        SrtpProtectionProfile::Srtp_Aes128_Cm_Hmac_Sha1_32 => Some(SrtpProfile::Aes128CmSha1_32),
        SrtpProtectionProfile::Srtp_Aead_Aes_128_Gcm => Some(SrtpProfile::AeadAes128Gcm),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn framing_check_matches_record_layout() {
        let mut rec = vec![22, 0xFE, 0xFD, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2, 1, 2];
        assert!(framing_ok(&rec));
        rec.extend_from_slice(&rec.clone());
        assert!(framing_ok(&rec));
        assert!(!framing_ok(&rec[..rec.len() - 1]));
        assert!(!framing_ok(&rec[..13]));
        for p in SrtpProfile::ALL {
            assert_eq!(from_rtc_profile(to_rtc_profile(p)), Some(p));
            assert_eq!(to_rtc_profile(p) as u16, p.dtls_id());
        }
        // A ChangeCipherSpec is one byte at epoch 0, or the datagram is refused.
        let ccs = |epoch: u8, body: &[u8]| {
            let mut r = vec![
                20,
                0xFE,
                0xFD,
                0,
                epoch,
                0,
                0,
                0,
                0,
                0,
                1,
                0,
                body.len() as u8,
            ];
            r.extend_from_slice(body);
            r
        };
        assert!(framing_ok(&ccs(0, &[1])));
        assert!(!framing_ok(&ccs(1, &[1])));
        assert!(!framing_ok(&ccs(0, &[1, 2, 3])));
    }

    /// An epoch-0 handshake record carrying one whole message.
    fn handshake_record(
        epoch: u8,
        msg_seq: u8,
        len: usize,
        frag: Option<(usize, usize)>,
    ) -> Vec<u8> {
        let (off, flen) = frag.unwrap_or((0, len));
        let mut body = vec![
            1, 0, 0, len as u8, 0, msg_seq, 0, 0, off as u8, 0, 0, flen as u8,
        ];
        body.extend(std::iter::repeat_n(0xAA, flen));
        let mut r = vec![
            22,
            0xFE,
            0xFD,
            0,
            epoch,
            0,
            0,
            0,
            0,
            0,
            7,
            0,
            body.len() as u8,
        ];
        r.extend_from_slice(&body);
        r
    }

    #[test]
    fn repeats_are_told_from_new_messages() {
        let m0 = handshake_record(0, 0, 10, None);
        assert_eq!(handshake_messages(&m0, 0), (false, 1));
        assert_eq!(handshake_messages(&m0, 1), (true, 1));
        // Two whole messages, one new: not a pure repeat.
        let both = [
            handshake_record(0, 0, 10, None),
            handshake_record(0, 1, 4, None),
        ]
        .concat();
        assert_eq!(handshake_messages(&both, 1), (false, 0b11));
        assert_eq!(handshake_messages(&both, 0b11), (true, 0b11));
        // A fragment is never taken for a repeat, nor is an encrypted (epoch 1) record.
        let frag = handshake_record(0, 0, 10, Some((0, 5)));
        assert_eq!(handshake_messages(&frag, 1), (false, 0));
        let with_finished = [m0.clone(), handshake_record(1, 5, 4, None)].concat();
        assert_eq!(handshake_messages(&with_finished, 1), (false, 1));
        let with_ccs = [m0, vec![20, 0xFE, 0xFD, 0, 0, 0, 0, 0, 0, 0, 9, 0, 1, 1]].concat();
        assert_eq!(handshake_messages(&with_ccs, 1), (false, 1));
    }
}
