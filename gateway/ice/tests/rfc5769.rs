//! RFC 5769 STUN test vectors, as exact bytes, through stun-rs and through the agent's own
//! validation path.

mod common;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use common::{addr, decode_verified, error_code, has_integrity, mapped, refingerprint, Harness};
use estuary_ice::{Credentials, IceConfig, Output};
use stun_rs::attributes::ice::{IceControlled, Priority};
use stun_rs::attributes::stun::{Software, UserName};
use stun_rs::MessageClass;

/// RFC 5769 §2: the password of every sample.
const PWD: &str = "VOkJxbRl1RmTxUk/WvJxBt";

#[path = "../../../conformance/data/rfc5769.rs"]
mod rfc5769_vectors;
use rfc5769_vectors::{SAMPLE_IPV4_RESPONSE, SAMPLE_IPV6_RESPONSE, SAMPLE_REQUEST};

const TID: [u8; 12] = [
    0xb7, 0xe7, 0xa7, 0x01, 0xbc, 0x34, 0xd6, 0x86, 0xfa, 0x87, 0xdf, 0xae,
];

/// An agent configured as the receiver of the §2.1 request: local ufrag "evtj", remote "h6vY".
fn rfc_agent(local_ufrag: &str) -> Harness {
    let mut config = IceConfig::new(Credentials::new(local_ufrag, PWD).expect("RFC credentials"));
    config.remote = Some(Credentials::new("h6vY", "remotePasswordNotUsedHere").expect("valid"));
    Harness::with_config(config)
}

#[test]
fn sample_request_decodes_and_verifies_with_stun_rs() {
    let msg = decode_verified(&SAMPLE_REQUEST, PWD);
    assert_eq!(msg.class(), MessageClass::Request);
    assert_eq!(msg.transaction_id().as_bytes(), &TID);
    assert_eq!(
        msg.get::<UserName>().unwrap().expect_user_name().as_str(),
        "evtj:h6vY"
    );
    assert_eq!(
        msg.get::<Software>().unwrap().expect_software().as_str(),
        "STUN test client"
    );
    assert_eq!(
        *msg.get::<Priority>().unwrap().expect_priority().as_ref(),
        0x6e00_01ff
    );
    assert_eq!(
        *msg.get::<IceControlled>()
            .unwrap()
            .expect_ice_controlled()
            .as_ref(),
        0x932f_f9b1_5126_3b36
    );
}

/// The §2.1 request passes the agent's USERNAME, MESSAGE-INTEGRITY and FINGERPRINT checks.
/// It carries ICE-CONTROLLED, and a lite agent is controlled too, so the authenticated answer
/// is 487 Role Conflict (RFC 8445 §7.3.1.1), integrity-protected with the same password. A
/// request that failed authentication would have got a 400 or 401 without integrity instead.
#[test]
fn sample_request_authenticates_through_the_agent() {
    let mut h = rfc_agent("evtj");
    let (local, source) = (addr("192.0.2.10:3478"), addr("192.0.2.1:32853"));
    let (t, events) = h.exchange(local, source, &SAMPLE_REQUEST);
    assert!(events.is_empty());
    let resp = decode_verified(&t.data, PWD);
    assert_eq!(resp.class(), MessageClass::ErrorResponse);
    assert_eq!(resp.transaction_id().as_bytes(), &TID);
    assert_eq!(error_code(&resp), Some(487));
    assert!(has_integrity(&resp));
    let c = h.ice.counters();
    assert_eq!(
        (c.role_conflict, c.unauthorized, c.bad_request, c.dropped()),
        (1, 0, 0, 0)
    );
    // Tie-breakers: ours (0) < theirs, so this is the literal "487, keep role" branch.
    assert_eq!(c.role_switch_refused, 0);
    assert_eq!(h.ice.selected(), None);
}

/// Same bytes to an agent whose ufrag is not "evtj": 401, without MESSAGE-INTEGRITY.
#[test]
fn sample_request_with_other_local_ufrag_is_unauthorized() {
    let mut h = rfc_agent("evtX");
    let (t, _) = h.exchange(
        addr("192.0.2.10:3478"),
        addr("192.0.2.1:32853"),
        &SAMPLE_REQUEST,
    );
    let resp = decode_verified(&t.data, PWD);
    assert_eq!(error_code(&resp), Some(401));
    assert!(!has_integrity(&resp));
}

/// One HMAC byte changed (FINGERPRINT recomputed so the message stays well-formed): 401.
/// One SOFTWARE byte changed without recomputing FINGERPRINT: dropped silently.
#[test]
fn sample_request_tampering() {
    let mut h = rfc_agent("evtj");
    let (local, source) = (addr("192.0.2.10:3478"), addr("192.0.2.1:32853"));

    let mut bad_mac = SAMPLE_REQUEST;
    bad_mac[84] ^= 0x01;
    refingerprint(&mut bad_mac);
    let (t, _) = h.exchange(local, source, &bad_mac);
    assert_eq!(error_code(&decode_verified(&t.data, PWD)), Some(401));

    let mut bad_crc = SAMPLE_REQUEST;
    bad_crc[30] ^= 0x01;
    assert!(h.receive(local, source, &bad_crc).is_empty());
    assert_eq!(h.ice.counters().dropped_fingerprint, 1);
}

#[test]
fn sample_ipv4_response_xor_mapped_address() {
    let msg = decode_verified(&SAMPLE_IPV4_RESPONSE, PWD);
    assert_eq!(msg.class(), MessageClass::SuccessResponse);
    assert_eq!(msg.transaction_id().as_bytes(), &TID);
    assert_eq!(
        mapped(&msg),
        Some(SocketAddr::new(
            IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)),
            32853
        ))
    );
}

#[test]
fn sample_ipv6_response_xor_mapped_address() {
    let msg = decode_verified(&SAMPLE_IPV6_RESPONSE, PWD);
    assert_eq!(msg.class(), MessageClass::SuccessResponse);
    let ip = Ipv6Addr::new(0x2001, 0xdb8, 0x1234, 0x5678, 0x11, 0x2233, 0x4455, 0x6677);
    assert_eq!(mapped(&msg), Some(SocketAddr::new(IpAddr::V6(ip), 32853)));
}

/// The sample responses are not requests: the agent drops them (a lite agent sent nothing they
/// could answer) and counts them.
#[test]
fn sample_responses_are_dropped_by_the_agent() {
    let mut h = rfc_agent("evtj");
    let (local, source) = (addr("192.0.2.10:3478"), addr("192.0.2.1:32853"));
    assert!(h.receive(local, source, &SAMPLE_IPV4_RESPONSE).is_empty());
    assert!(h.receive(local, source, &SAMPLE_IPV6_RESPONSE).is_empty());
    assert_eq!(h.ice.counters().dropped_unexpected, 2);
    assert!(h.drain().iter().all(|o| !matches!(o, Output::Transmit(_))));
}

/// A shared media port routes by the receiver's ufrag, read without verifying: "evtj" in the
/// §2.1 request; nothing from responses (no USERNAME), truncated or garbled datagrams.
#[test]
fn the_receivers_ufrag_is_read_from_the_sample_request_for_routing() {
    assert_eq!(estuary_ice::username_ufrag(&SAMPLE_REQUEST), Some(&b"evtj"[..]));
    assert_eq!(estuary_ice::username_ufrag(&SAMPLE_IPV4_RESPONSE), None);
    assert_eq!(estuary_ice::username_ufrag(&SAMPLE_IPV6_RESPONSE), None);
    for cut in 0..SAMPLE_REQUEST.len() {
        // Truncated: the header declares more than is there, so nothing is read.
        assert_eq!(estuary_ice::username_ufrag(&SAMPLE_REQUEST[..cut]), None, "cut at {cut}");
    }
    let mut bad_len = SAMPLE_REQUEST.to_vec();
    bad_len[20 + 2] = 0xff; // the first attribute claims more than the message holds
    assert_eq!(estuary_ice::username_ufrag(&bad_len), None);
}
