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

/// RFC 5769 §2.1 Sample Request: USERNAME "evtj:h6vY", SOFTWARE "STUN test client",
/// PRIORITY, ICE-CONTROLLED, MESSAGE-INTEGRITY, FINGERPRINT (0x20 padding in USERNAME).
const SAMPLE_REQUEST: [u8; 108] = [
    0x00, 0x01, 0x00, 0x58, // Request type and message length
    0x21, 0x12, 0xa4, 0x42, // Magic cookie
    0xb7, 0xe7, 0xa7, 0x01, // }
    0xbc, 0x34, 0xd6, 0x86, // }  Transaction ID
    0xfa, 0x87, 0xdf, 0xae, // }
    0x80, 0x22, 0x00, 0x10, // SOFTWARE attribute header
    0x53, 0x54, 0x55, 0x4e, // }
    0x20, 0x74, 0x65, 0x73, // }  User-agent...
    0x74, 0x20, 0x63, 0x6c, // }  ...name
    0x69, 0x65, 0x6e, 0x74, // }
    0x00, 0x24, 0x00, 0x04, // PRIORITY attribute header
    0x6e, 0x00, 0x01, 0xff, // ICE priority value
    0x80, 0x29, 0x00, 0x08, // ICE-CONTROLLED attribute header
    0x93, 0x2f, 0xf9, 0xb1, // }  Pseudo-random tie breaker...
    0x51, 0x26, 0x3b, 0x36, // }   ...for ICE control
    0x00, 0x06, 0x00, 0x09, // USERNAME attribute header
    0x65, 0x76, 0x74, 0x6a, // }
    0x3a, 0x68, 0x36, 0x76, // }  Username (9 bytes) and padding (3 bytes)
    0x59, 0x20, 0x20, 0x20, // }
    0x00, 0x08, 0x00, 0x14, // MESSAGE-INTEGRITY attribute header
    0x9a, 0xea, 0xa7, 0x0c, // }
    0xbf, 0xd8, 0xcb, 0x56, // }
    0x78, 0x1e, 0xf2, 0xb5, // }  HMAC-SHA1 fingerprint
    0xb2, 0xd3, 0xf2, 0x49, // }
    0xc1, 0xb5, 0x71, 0xa2, // }
    0x80, 0x28, 0x00, 0x04, // FINGERPRINT attribute header
    0xe5, 0x7a, 0x3b, 0xcf, // CRC32 fingerprint
];

/// RFC 5769 §2.2 Sample IPv4 Response: XOR-MAPPED-ADDRESS 192.0.2.1:32853.
const SAMPLE_IPV4_RESPONSE: [u8; 80] = [
    0x01, 0x01, 0x00, 0x3c, // Response type and message length
    0x21, 0x12, 0xa4, 0x42, // Magic cookie
    0xb7, 0xe7, 0xa7, 0x01, // }
    0xbc, 0x34, 0xd6, 0x86, // }  Transaction ID
    0xfa, 0x87, 0xdf, 0xae, // }
    0x80, 0x22, 0x00, 0x0b, // SOFTWARE attribute header
    0x74, 0x65, 0x73, 0x74, // }
    0x20, 0x76, 0x65, 0x63, // }  UTF-8 server name
    0x74, 0x6f, 0x72, 0x20, // }
    0x00, 0x20, 0x00, 0x08, // XOR-MAPPED-ADDRESS attribute header
    0x00, 0x01, 0xa1, 0x47, // Address family (IPv4) and xor'd mapped port number
    0xe1, 0x12, 0xa6, 0x43, // Xor'd mapped IPv4 address
    0x00, 0x08, 0x00, 0x14, // MESSAGE-INTEGRITY attribute header
    0x2b, 0x91, 0xf5, 0x99, // }
    0xfd, 0x9e, 0x90, 0xc3, // }
    0x8c, 0x74, 0x89, 0xf9, // }  HMAC-SHA1 fingerprint
    0x2a, 0xf9, 0xba, 0x53, // }
    0xf0, 0x6b, 0xe7, 0xd7, // }
    0x80, 0x28, 0x00, 0x04, // FINGERPRINT attribute header
    0xc0, 0x7d, 0x4c, 0x96, // CRC32 fingerprint
];

/// RFC 5769 §2.3 Sample IPv6 Response: XOR-MAPPED-ADDRESS
/// [2001:db8:1234:5678:11:2233:4455:6677]:32853.
const SAMPLE_IPV6_RESPONSE: [u8; 92] = [
    0x01, 0x01, 0x00, 0x48, // Response type and message length
    0x21, 0x12, 0xa4, 0x42, // Magic cookie
    0xb7, 0xe7, 0xa7, 0x01, // }
    0xbc, 0x34, 0xd6, 0x86, // }  Transaction ID
    0xfa, 0x87, 0xdf, 0xae, // }
    0x80, 0x22, 0x00, 0x0b, // SOFTWARE attribute header
    0x74, 0x65, 0x73, 0x74, // }
    0x20, 0x76, 0x65, 0x63, // }  UTF-8 server name
    0x74, 0x6f, 0x72, 0x20, // }
    0x00, 0x20, 0x00, 0x14, // XOR-MAPPED-ADDRESS attribute header
    0x00, 0x02, 0xa1, 0x47, // Address family (IPv6) and xor'd mapped port number
    0x01, 0x13, 0xa9, 0xfa, // }
    0xa5, 0xd3, 0xf1, 0x79, // }  Xor'd mapped IPv6 address
    0xbc, 0x25, 0xf4, 0xb5, // }
    0xbe, 0xd2, 0xb9, 0xd9, // }
    0x00, 0x08, 0x00, 0x14, // MESSAGE-INTEGRITY attribute header
    0xa3, 0x82, 0x95, 0x4e, // }
    0x4b, 0xe6, 0x7b, 0xf1, // }
    0x17, 0x84, 0xc9, 0x7c, // }  HMAC-SHA1 fingerprint
    0x82, 0x92, 0xc2, 0x75, // }
    0xbf, 0xe3, 0xed, 0x41, // }
    0x80, 0x28, 0x00, 0x04, // FINGERPRINT attribute header
    0xc8, 0xfb, 0x0b, 0x4c, // CRC32 fingerprint
];

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
