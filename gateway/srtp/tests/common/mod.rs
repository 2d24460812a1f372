//! Shared harness: two `DtlsEndpoint`s wired back to back on a virtual clock, and packet
//! builders. Datagrams are delivered at once and in order; a filter can drop them.

#![allow(dead_code)]

use std::time::{Duration, Instant};

use estuary_srtp::{
    Certificate, DtlsConfig, DtlsEndpoint, DtlsEvent, DtlsRole, Fingerprint, Output,
    SrtpKeyMaterial, SrtpProfile,
};

/// Which endpoint sent a datagram.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    Client,
    Server,
}

/// Decides whether the `n`th datagram (counting from 0 per side) from `side` is delivered.
pub type Filter = Box<dyn FnMut(Side, usize, &[u8]) -> bool>;

pub struct Pair {
    pub client: DtlsEndpoint,
    pub server: DtlsEndpoint,
    pub client_cert: Certificate,
    pub server_cert: Certificate,
    pub start: Instant,
    pub now: Instant,
    pub client_events: Vec<DtlsEvent>,
    pub server_events: Vec<DtlsEvent>,
    /// Datagrams each side has produced: [client, server].
    pub sent: [usize; 2],
    pub filter: Filter,
}

pub fn certs() -> (Certificate, Certificate) {
    (
        Certificate::generate().unwrap(),
        Certificate::generate().unwrap(),
    )
}

impl Pair {
    /// A pair where each side expects the other's real fingerprint.
    pub fn new(client_profiles: &[SrtpProfile], server_profiles: &[SrtpProfile]) -> Pair {
        let (c, s) = certs();
        let cfp = vec![c.fingerprint()];
        let sfp = vec![s.fingerprint()];
        Pair::with(c, s, sfp, cfp, client_profiles, server_profiles)
    }

    /// Full control over what each side expects: `client_expects` is the server fingerprint
    /// list the client checks, and vice versa.
    pub fn with(
        client_cert: Certificate,
        server_cert: Certificate,
        client_expects: Vec<Fingerprint>,
        server_expects: Vec<Fingerprint>,
        client_profiles: &[SrtpProfile],
        server_profiles: &[SrtpProfile],
    ) -> Pair {
        let config = |p: &[SrtpProfile]| DtlsConfig {
            profiles: p.to_vec(),
            ..DtlsConfig::default()
        };
        Pair::with_configs(
            client_cert,
            server_cert,
            client_expects,
            server_expects,
            &config(client_profiles),
            &config(server_profiles),
        )
    }

    /// A pair with the real fingerprints and explicit configurations.
    pub fn with_config(client: &DtlsConfig, server: &DtlsConfig) -> Pair {
        let (c, s) = certs();
        let cfp = vec![c.fingerprint()];
        let sfp = vec![s.fingerprint()];
        Pair::with_configs(c, s, sfp, cfp, client, server)
    }

    pub fn with_configs(
        client_cert: Certificate,
        server_cert: Certificate,
        client_expects: Vec<Fingerprint>,
        server_expects: Vec<Fingerprint>,
        client_config: &DtlsConfig,
        server_config: &DtlsConfig,
    ) -> Pair {
        // The virtual clock starts at an arbitrary real instant and only moves by `run`.
        #[allow(clippy::disallowed_methods)]
        let start = Instant::now();
        let client = DtlsEndpoint::with_config(
            DtlsRole::Client,
            &client_cert,
            client_expects,
            client_config,
            start,
        )
        .unwrap();
        let server = DtlsEndpoint::with_config(
            DtlsRole::Server,
            &server_cert,
            server_expects,
            server_config,
            start,
        )
        .unwrap();
        Pair {
            client,
            server,
            client_cert,
            server_cert,
            start,
            now: start,
            client_events: Vec::new(),
            server_events: Vec::new(),
            sent: [0, 0],
            filter: Box::new(|_, _, _| true),
        }
    }

    /// Move datagrams until neither side has output, then jump the clock to the next deadline
    /// and fire timers; repeat until no deadline is left or `limit` of virtual time passed.
    pub fn run(&mut self, limit: Duration) {
        loop {
            if self.step() {
                continue;
            }
            let next = match (self.client.poll_timeout(), self.server.poll_timeout()) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            let Some(t) = next else { break };
            if t.duration_since(self.start) > limit {
                break;
            }
            self.now = self.now.max(t);
            self.client.handle_timeout(self.now);
            self.server.handle_timeout(self.now);
        }
    }

    /// Drain both sides once; true if any datagram was delivered.
    pub fn step(&mut self) -> bool {
        let mut moved = false;
        while let Some(out) = self.client.poll_output() {
            match out {
                Output::Transmit(d) => {
                    let n = self.sent[0];
                    self.sent[0] += 1;
                    if (self.filter)(Side::Client, n, &d) {
                        let _ = self.server.handle_input(self.now, &d);
                        moved = true;
                    }
                }
                Output::Event(e) => self.client_events.push(e),
            }
        }
        while let Some(out) = self.server.poll_output() {
            match out {
                Output::Transmit(d) => {
                    let n = self.sent[1];
                    self.sent[1] += 1;
                    if (self.filter)(Side::Server, n, &d) {
                        let _ = self.client.handle_input(self.now, &d);
                        moved = true;
                    }
                }
                Output::Event(e) => self.server_events.push(e),
            }
        }
        moved
    }

    pub fn elapsed(&self) -> Duration {
        self.now - self.start
    }
}

/// The `Connected` event in `events`, if any.
pub fn connected(events: &[DtlsEvent]) -> Option<(SrtpProfile, SrtpKeyMaterial)> {
    events.iter().find_map(|e| match e {
        DtlsEvent::Connected { profile, keys } => Some((*profile, keys.clone())),
        _ => None,
    })
}

/// The failure reason in `events`, if any.
pub fn failure(events: &[DtlsEvent]) -> Option<estuary_srtp::DtlsFailure> {
    events.iter().find_map(|e| match e {
        DtlsEvent::Failed(f) => Some(f.clone()),
        _ => None,
    })
}

/// An RTP packet: V=2, PT 111, the given sequence number and SSRC, `payload_len` bytes of
/// payload derived from `seq`.
pub fn rtp(seq: u16, ssrc: u32, payload_len: usize) -> Vec<u8> {
    let mut p = Vec::with_capacity(12 + payload_len + 16);
    p.extend_from_slice(&[0x80, 111]);
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(&(u32::from(seq) * 960).to_be_bytes());
    p.extend_from_slice(&ssrc.to_be_bytes());
    p.extend((0..payload_len).map(|i| (i as u8) ^ (seq as u8)));
    p
}

/// An RTP packet with two CSRCs and a one-byte-header extension (RFC 8285).
pub fn rtp_with_extension(seq: u16, ssrc: u32, payload_len: usize) -> Vec<u8> {
    let base = rtp(seq, ssrc, payload_len);
    let mut p = Vec::with_capacity(base.len() + 32);
    p.push(0x80 | 0x10 | 2);
    p.extend_from_slice(&base[1..12]);
    p.extend_from_slice(&0x1111_1111u32.to_be_bytes());
    p.extend_from_slice(&0x2222_2222u32.to_be_bytes());
    p.extend_from_slice(&[0xBE, 0xDE, 0x00, 0x01, 0x10, 0xAA, 0x00, 0x00]);
    p.extend_from_slice(&base[12..]);
    p
}

/// An RTCP sender report (RFC 3550 §6.4.1) with no report blocks, 28 bytes.
pub fn rtcp_sr(ssrc: u32, n: u32) -> Vec<u8> {
    let mut p = vec![0x80, 200, 0, 6];
    p.extend_from_slice(&ssrc.to_be_bytes());
    p.extend_from_slice(&[0xE0, 0, 0, 0, 0, 0, 0, n as u8]); // NTP timestamp
    p.extend_from_slice(&(n * 960).to_be_bytes());
    p.extend_from_slice(&n.to_be_bytes());
    p.extend_from_slice(&(n * 160).to_be_bytes());
    p
}
