//! Hostile datagrams through the public API (STYLE R6): random bytes, mutated valid requests and
//! authenticated requests with random attributes. Deterministic (xorshift seeded by constants),
//! bounded, and the only assertion that matters is that nothing panics and every answer goes
//! back where its request came from.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::*;
use estuary_ice::{is_stun, IceConfig, IceCounters, IceError, IceLite, Input, Output};

/// xorshift64*: small, deterministic, good enough to shake a parser.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn byte(&mut self) -> u8 {
        self.next() as u8
    }
    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.byte()).collect()
    }
}

/// Feeds one datagram, drains, checks the invariants; returns how many responses it produced.
fn feed(h: &mut Harness, source: SocketAddr, data: &[u8]) -> usize {
    let input = Input::Receive {
        local: gw(),
        source,
        data,
    };
    match h.ice.handle_input(h.now, input) {
        Ok(()) => assert!(is_stun(data)),
        Err(IceError::NotStun) => assert!(!is_stun(data)),
    }
    let mut responses = 0;
    for out in h.drain() {
        if let Output::Transmit(t) = out {
            assert_eq!((t.from, t.to), (gw(), source));
            assert!(is_stun(&t.data));
            assert_eq!(t.data[8..20], data[8..20], "same transaction id");
            responses += 1;
        }
    }
    assert!(responses <= 1);
    responses
}

/// Moves the clock a little now and then so timers, expiry and failure are exercised too; a
/// failed agent is replaced (its counters added to `totals`) so later cases still reach the
/// checks.
fn tick(h: &mut Harness, rng: &mut Rng, totals: &mut IceCounters) {
    if rng.below(50) == 0 {
        let t = h.now + Duration::from_millis(rng.below(20_000) as u64);
        h.advance_to(t);
    }
    if h.ice.poll_timeout().is_none() {
        add(totals, h.ice.counters());
        let mut config = IceConfig::new(gw_credentials());
        config.remote = Some(browser_credentials());
        h.ice = IceLite::new(config, h.now);
    }
}

fn add(t: &mut IceCounters, c: IceCounters) {
    t.binding_success += c.binding_success;
    t.bad_request += c.bad_request;
    t.unauthorized += c.unauthorized;
    t.unknown_attribute += c.unknown_attribute;
    t.role_conflict += c.role_conflict;
    t.nominations += c.nominations;
    t.dropped_malformed += c.dropped_malformed;
    t.dropped_fingerprint += c.dropped_fingerprint;
    t.dropped_unexpected += c.dropped_unexpected;
}

fn source(rng: &mut Rng) -> SocketAddr {
    match rng.below(4) {
        0 => browser_a(),
        1 => browser_b(),
        2 => addr("[2001:db8::7]:6000"),
        _ => SocketAddr::from(([198, 51, 100, rng.byte()], 1 + rng.below(65535) as u16)),
    }
}

#[test]
fn random_bytes_never_panic() {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let mut h = Harness::new();
    let mut totals = IceCounters::default();
    for _ in 0..20_000 {
        let len = rng.below(160);
        let mut data = rng.bytes(len);
        // Most cases look like STUN so they get past the demux: first byte 0..=3, the cookie,
        // and half of them a header length that matches the datagram.
        if len >= 20 && rng.below(4) != 0 {
            data[0] &= 0x03;
            data[4..8].copy_from_slice(&[0x21, 0x12, 0xA4, 0x42]);
            if rng.below(2) == 0 {
                let body = ((len - 20) & !3) as u16;
                data.truncate(20 + body as usize);
                data[2..4].copy_from_slice(&body.to_be_bytes());
            }
        }
        let src = source(&mut rng);
        feed(&mut h, src, &data);
        tick(&mut h, &mut rng, &mut totals);
    }
    add(&mut totals, h.ice.counters());
    assert!(totals.dropped_malformed > 10_000, "{totals:?}");
}

#[test]
fn mutated_valid_requests_never_panic() {
    let mut rng = Rng(0xD1B5_4A32_D192_ED03);
    let mut h = Harness::new();
    let mut totals = IceCounters::default();
    let mut b = Browser::new();
    let mut answered = 0;
    for i in 0..20_000 {
        let (_, mut data) = if i % 3 == 0 { b.nominate() } else { b.check() };
        match rng.below(6) {
            // flip a few bits
            0 => {
                for _ in 0..1 + rng.below(4) {
                    let at = rng.below(data.len());
                    data[at] ^= 1 << rng.below(8);
                }
            }
            // overwrite a byte, then repair FINGERPRINT so the corruption reaches the checks
            1 => {
                let at = 20 + rng.below(data.len() - 28);
                data[at] = rng.byte();
                refingerprint(&mut data);
            }
            // truncate or extend, keeping or fixing the header length
            2 => {
                let keep = rng.below(data.len() + 1);
                data.truncate(keep);
                if rng.below(2) == 0 && data.len() >= 20 {
                    let body = (data.len() - 20) as u16;
                    data[2..4].copy_from_slice(&body.to_be_bytes());
                }
            }
            3 => {
                let n = 1 + rng.below(40);
                let extra = rng.bytes(n);
                data.extend_from_slice(&extra);
                let body = (data.len() - 20) as u16;
                data[2..4].copy_from_slice(&body.to_be_bytes());
            }
            // an attribute length field set to anything
            4 => {
                let at = 22 + 4 * rng.below((data.len() - 22) / 4);
                data[at..at + 2].copy_from_slice(&(rng.next() as u16).to_be_bytes());
                refingerprint(&mut data);
            }
            // unchanged: must still be answered
            _ => {}
        }
        let src = source(&mut rng);
        answered += feed(&mut h, src, &data);
        tick(&mut h, &mut rng, &mut totals);
    }
    add(&mut totals, h.ice.counters());
    assert!(
        answered > 3_000,
        "the unchanged and harmless cases are answered ({answered})"
    );
    // Every way of not answering was reached.
    let t = totals;
    assert!(
        t.bad_request > 0 && t.unauthorized > 0 && t.nominations > 0,
        "{t:?}"
    );
    assert!(
        t.dropped_malformed > 0 && t.dropped_fingerprint > 0 && t.dropped_unexpected > 0,
        "{t:?}"
    );
}

/// Authenticated requests (valid USERNAME, MESSAGE-INTEGRITY and FINGERPRINT) whose other
/// attributes are random TLVs: known types with garbage values, unknown types, duplicates.
/// These reach everything after authentication.
#[test]
fn authenticated_random_attributes_never_panic() {
    const TYPES: [u16; 22] = [
        0x0001, 0x0006, 0x0008, 0x0009, 0x000A, 0x0014, 0x0015, 0x001C, 0x001D, 0x001E, 0x0020,
        0x0024, 0x0025, 0x8002, 0x8003, 0x8022, 0x8023, 0x8028, 0x8029, 0x802A, 0x7F00, 0xC057,
    ];
    let mut rng = Rng(0x0123_4567_89AB_CDEF);
    let mut h = Harness::new();
    let mut totals = IceCounters::default();
    let username = format!("{GW_UFRAG}:{BROWSER_UFRAG}").into_bytes();
    let mut answered = 0;
    for _ in 0..10_000 {
        let mut attrs = vec![(0x0006, username.clone())];
        for _ in 0..rng.below(6) {
            let t = if rng.below(5) == 0 {
                rng.next() as u16
            } else {
                TYPES[rng.below(TYPES.len())]
            };
            let len = match rng.below(3) {
                0 => rng.below(4) * 4,
                1 => rng.below(40),
                _ => [0, 4, 8, 20][rng.below(4)],
            };
            attrs.push((t, rng.bytes(len)));
        }
        let tid: [u8; 12] = rng.bytes(12).try_into().unwrap();
        let fingerprint = rng.below(4) != 0;
        let data = raw_message(0x0001, tid, &attrs, Some(GW_PWD.as_bytes()), fingerprint);
        let src = source(&mut rng);
        answered += feed(&mut h, src, &data);
        tick(&mut h, &mut rng, &mut totals);
    }
    add(&mut totals, h.ice.counters());
    assert!(
        answered > 1_000,
        "many are authenticated and answered ({answered})"
    );
    let t = totals;
    assert!(
        t.binding_success > 0 && t.unknown_attribute > 0 && t.role_conflict > 0,
        "{t:?}"
    );
    assert!(t.nominations > 0 && t.dropped_malformed > 0, "{t:?}");
}
