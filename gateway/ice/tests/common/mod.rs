//! Shared harness: a "browser" that builds Binding requests with stun-rs, a raw STUN builder for
//! what stun-rs cannot encode, and an agent driven on a virtual clock.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use estuary_ice::{Credentials, IceConfig, IceEvent, IceLite, Input, Output, Transmit};
use stun_rs::attributes::ice::{IceControlled, IceControlling, Priority, UseCandidate};
use stun_rs::attributes::stun::{
    ErrorCode, Fingerprint, MessageIntegrity, UserName, XorMappedAddress,
};
use stun_rs::methods::BINDING;
use stun_rs::{
    DecoderContextBuilder, HMACKey, MessageClass, MessageDecoderBuilder, MessageEncoderBuilder,
    StunMessage, StunMessageBuilder, TransactionId,
};

pub const GW_UFRAG: &str = "gWuf";
pub const GW_PWD: &str = "gatewayPasswordOf24chars";
pub const BROWSER_UFRAG: &str = "bRow";
pub const BROWSER_PWD: &str = "browserPasswordOf24+/abc";

pub fn addr(s: &str) -> SocketAddr {
    s.parse().expect("test address")
}

/// The gateway's host candidate and two browser addresses.
pub fn gw() -> SocketAddr {
    addr("203.0.113.10:40000")
}
pub fn browser_a() -> SocketAddr {
    addr("198.51.100.7:50000")
}
pub fn browser_b() -> SocketAddr {
    addr("198.51.100.99:50123")
}

/// Any fixed origin will do: tests only use offsets from it.
#[allow(clippy::disallowed_methods)]
pub fn epoch() -> Instant {
    Instant::now()
}

pub fn gw_credentials() -> Credentials {
    Credentials::new(GW_UFRAG, GW_PWD).expect("valid")
}

pub fn browser_credentials() -> Credentials {
    Credentials::new(BROWSER_UFRAG, BROWSER_PWD).expect("valid")
}

/// What a request should (not) carry.
#[derive(Clone, Debug)]
pub struct Req {
    pub username: Option<String>,
    /// Password for MESSAGE-INTEGRITY, `None` to leave it out.
    pub integrity_pwd: Option<String>,
    pub use_candidate: bool,
    /// ICE-CONTROLLED (role conflict) instead of ICE-CONTROLLING.
    pub controlled: bool,
    pub tie_breaker: u64,
    pub fingerprint: bool,
}

/// A browser that checks the gateway: USERNAME `<gateway ufrag>:<browser ufrag>`, signed with
/// the gateway's password, ICE-CONTROLLING, PRIORITY, FINGERPRINT (RFC 8445 §7.2.2).
pub struct Browser {
    pub ufrag: String,
    pub gw_ufrag: String,
    pub gw_pwd: String,
    next_tid: u64,
}

impl Browser {
    pub fn new() -> Self {
        Browser {
            ufrag: BROWSER_UFRAG.into(),
            gw_ufrag: GW_UFRAG.into(),
            gw_pwd: GW_PWD.into(),
            next_tid: 1,
        }
    }

    pub fn req(&self) -> Req {
        Req {
            username: Some(format!("{}:{}", self.gw_ufrag, self.ufrag)),
            integrity_pwd: Some(self.gw_pwd.clone()),
            use_candidate: false,
            controlled: false,
            tie_breaker: 0x1122_3344_5566_7788,
            fingerprint: true,
        }
    }

    pub fn tid(&mut self) -> TransactionId {
        let n = self.next_tid;
        self.next_tid += 1;
        let mut b = [0u8; 12];
        b[4..].copy_from_slice(&n.to_be_bytes());
        TransactionId::from(b)
    }

    /// A plain consent check.
    pub fn check(&mut self) -> (TransactionId, Vec<u8>) {
        let r = self.req();
        self.build(&r)
    }

    /// A nominating check.
    pub fn nominate(&mut self) -> (TransactionId, Vec<u8>) {
        let r = Req {
            use_candidate: true,
            ..self.req()
        };
        self.build(&r)
    }

    pub fn build(&mut self, req: &Req) -> (TransactionId, Vec<u8>) {
        let tid = self.tid();
        let mut b =
            StunMessageBuilder::new(BINDING, MessageClass::Request).with_transaction_id(tid);
        if let Some(u) = &req.username {
            b = b.with_attribute(UserName::new(u).expect("username"));
        }
        b = b.with_attribute(Priority::new(0x6e00_01ff));
        b = if req.controlled {
            b.with_attribute(IceControlled::new(req.tie_breaker))
        } else {
            b.with_attribute(IceControlling::new(req.tie_breaker))
        };
        if req.use_candidate {
            b = b.with_attribute(UseCandidate::default());
        }
        if let Some(pwd) = &req.integrity_pwd {
            b = b.with_attribute(MessageIntegrity::new(
                HMACKey::new_short_term(pwd).expect("key"),
            ));
        }
        if req.fingerprint {
            b = b.with_attribute(Fingerprint::default());
        }
        let mut buf = vec![0u8; 512];
        let n = MessageEncoderBuilder::default()
            .build()
            .encode(&mut buf, &b.build())
            .expect("encode");
        buf.truncate(n);
        (tid, buf)
    }
}

/// Decodes a response and verifies its MESSAGE-INTEGRITY (if any) and FINGERPRINT with `pwd`.
pub fn decode_verified(data: &[u8], pwd: &str) -> StunMessage {
    try_decode_verified(data, pwd).expect("valid response")
}

/// `None` if the message does not decode or does not verify with `pwd`.
pub fn try_decode_verified(data: &[u8], pwd: &str) -> Option<StunMessage> {
    let ctx = DecoderContextBuilder::default()
        .with_key(HMACKey::new_short_term(pwd).expect("key"))
        .with_validation()
        .build();
    let (msg, n) = MessageDecoderBuilder::default()
        .with_context(ctx)
        .build()
        .decode(data)
        .ok()?;
    (n == data.len()).then_some(msg)
}

pub fn error_code(msg: &StunMessage) -> Option<u16> {
    msg.get::<ErrorCode>()
        .map(|a| a.expect_error_code().error_code().error_code())
}

pub fn mapped(msg: &StunMessage) -> Option<SocketAddr> {
    msg.get::<XorMappedAddress>()
        .map(|a| *a.expect_xor_mapped_address().socket_address())
}

pub fn has_integrity(msg: &StunMessage) -> bool {
    msg.get::<MessageIntegrity>().is_some()
}

/// Builds STUN by hand: header, `attrs` (padded with zeros), then MESSAGE-INTEGRITY keyed with
/// `key` and FINGERPRINT if asked (RFC 8489 §14.5, §14.7).
pub fn raw_message(
    msg_type: u16,
    tid: [u8; 12],
    attrs: &[(u16, Vec<u8>)],
    key: Option<&[u8]>,
    fingerprint: bool,
) -> Vec<u8> {
    let mut m = Vec::with_capacity(256);
    m.extend_from_slice(&msg_type.to_be_bytes());
    m.extend_from_slice(&[0, 0, 0x21, 0x12, 0xA4, 0x42]);
    m.extend_from_slice(&tid);
    for (t, v) in attrs {
        push_attr(&mut m, *t, v);
    }
    if let Some(key) = key {
        set_len(&mut m, 24);
        let mac = hmac_sha1::hmac_sha1(key, &m);
        push_attr(&mut m, 0x0008, &mac);
    }
    if fingerprint {
        set_len(&mut m, 8);
        let crc = crc::Crc::<u32>::new(&crc::CRC_32_ISO_HDLC).checksum(&m) ^ 0x5354_554e;
        push_attr(&mut m, 0x8028, &crc.to_be_bytes());
    }
    set_len(&mut m, 0);
    m
}

/// Recomputes a trailing FINGERPRINT after the test changed earlier bytes.
pub fn refingerprint(m: &mut [u8]) {
    let at = m.len() - 8;
    let crc = crc::Crc::<u32>::new(&crc::CRC_32_ISO_HDLC).checksum(&m[..at]) ^ 0x5354_554e;
    m[at + 4..].copy_from_slice(&crc.to_be_bytes());
}

fn push_attr(m: &mut Vec<u8>, t: u16, v: &[u8]) {
    m.extend_from_slice(&t.to_be_bytes());
    m.extend_from_slice(&(v.len() as u16).to_be_bytes());
    m.extend_from_slice(v);
    m.resize(m.len() + (4 - v.len() % 4) % 4, 0);
}

/// Sets the header length to the attributes so far plus `extra` bytes still to come.
fn set_len(m: &mut [u8], extra: usize) {
    let len = (m.len() - 20 + extra) as u16;
    m[2..4].copy_from_slice(&len.to_be_bytes());
}

/// An agent on a virtual clock.
pub struct Harness {
    pub ice: IceLite,
    pub start: Instant,
    pub now: Instant,
}

impl Harness {
    /// Gateway credentials, browser credentials known, default settings.
    pub fn new() -> Self {
        let mut config = IceConfig::new(gw_credentials());
        config.remote = Some(browser_credentials());
        Self::with_config(config)
    }

    pub fn with_config(config: IceConfig) -> Self {
        let start = epoch();
        Harness {
            ice: IceLite::new(config, start),
            start,
            now: start,
        }
    }

    pub fn at(&self, secs: f64) -> Instant {
        self.start + Duration::from_secs_f64(secs)
    }

    /// Delivers a datagram at the current time and drains the outputs.
    pub fn receive(&mut self, local: SocketAddr, source: SocketAddr, data: &[u8]) -> Vec<Output> {
        self.ice
            .handle_input(
                self.now,
                Input::Receive {
                    local,
                    source,
                    data,
                },
            )
            .expect("STUN");
        self.drain()
    }

    /// Delivers a request and returns the single transmit it caused (plus any events).
    pub fn exchange(
        &mut self,
        local: SocketAddr,
        source: SocketAddr,
        data: &[u8],
    ) -> (Transmit, Vec<IceEvent>) {
        let outs = self.receive(local, source, data);
        let mut transmit = None;
        let mut events = Vec::new();
        for o in outs {
            match o {
                Output::Transmit(t) => {
                    assert!(transmit.is_none(), "one response per request");
                    transmit = Some(t);
                }
                Output::Event(e) => events.push(e),
            }
        }
        let t = transmit.expect("a response");
        assert_eq!(
            (t.from, t.to),
            (local, source),
            "response goes back the way the request came"
        );
        (t, events)
    }

    /// Moves the clock to `t`, firing every deadline on the way at its own instant (quinn's
    /// `Pair::drive`). Returns the events in order with the time each fired.
    pub fn advance_to(&mut self, t: Instant) -> Vec<(Instant, IceEvent)> {
        let mut events = Vec::new();
        let mut rounds = 0;
        while let Some(deadline) = self.ice.poll_timeout() {
            if deadline > t {
                break;
            }
            rounds += 1;
            assert!(rounds < 10_000, "handle_timeout does not move the deadline");
            self.now = deadline.max(self.now);
            self.ice.handle_timeout(self.now);
            for o in self.drain() {
                match o {
                    Output::Event(e) => events.push((self.now, e)),
                    Output::Transmit(_) => panic!("timers send nothing in a lite agent"),
                }
            }
        }
        self.now = t.max(self.now);
        events
    }

    pub fn drain(&mut self) -> Vec<Output> {
        std::iter::from_fn(|| self.ice.poll_output()).collect()
    }
}
