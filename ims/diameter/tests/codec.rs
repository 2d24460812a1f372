//! Codec against hand-computed RFC 6733 layouts, and robustness against damaged input.

mod common;

use common::*;
use estuary_diameter::dictionary as dict;
use estuary_diameter::{
    frame_len, Application, Avp, DecodeError, Message, Peer, PeerConfig, Transmit, Validator,
};
use rand::{Rng, RngCore};

/// The CER a peer sends, byte for byte (RFC 6733 §3, §4.1, §5.3.1).
#[test]
fn cer_bytes_match_the_rfc_layout() {
    let mut config = PeerConfig::new("a.example", "example");
    config.host_ip_addresses.push("192.0.2.1".parse().unwrap());
    config.origin_state_id = 1;
    config.applications.push(Application::Auth {
        id: 16_777_236,
        vendor: Some(10_415),
    });
    let mut peer = Peer::new(config, 0, &mut rng(1));
    peer.connect(t0());
    assert_eq!(peer.poll_transmit(), Some(Transmit::Connect));
    peer.handle_connected(t0());
    let Some(Transmit::Bytes(bytes)) = peer.poll_transmit() else {
        panic!("no CER")
    };

    #[rustfmt::skip]
    let body: &[u8] = &[
        // Origin-Host (264), M, length 8 + 9 = 17, 3 bytes padding.
        0, 0, 0x01, 0x08, 0x40, 0, 0, 17, b'a', b'.', b'e', b'x', b'a', b'm', b'p', b'l', b'e', 0, 0, 0,
        // Origin-Realm (296), M, length 15, 1 byte padding.
        0, 0, 0x01, 0x28, 0x40, 0, 0, 15, b'e', b'x', b'a', b'm', b'p', b'l', b'e', 0,
        // Host-IP-Address (257), M, length 14: family 1, 192.0.2.1, 2 bytes padding.
        0, 0, 0x01, 0x01, 0x40, 0, 0, 14, 0, 1, 192, 0, 2, 1, 0, 0,
        // Vendor-Id (266), M, 0.
        0, 0, 0x01, 0x0a, 0x40, 0, 0, 12, 0, 0, 0, 0,
        // Product-Name (269), M clear (RFC 6733 §4.5: must not), length 15.
        0, 0, 0x01, 0x0d, 0x00, 0, 0, 15, b'E', b's', b't', b'u', b'a', b'r', b'y', 0,
        // Origin-State-Id (278), M, 1.
        0, 0, 0x01, 0x16, 0x40, 0, 0, 12, 0, 0, 0, 1,
        // Supported-Vendor-Id (265), M, 10415.
        0, 0, 0x01, 0x09, 0x40, 0, 0, 12, 0, 0, 0x28, 0xaf,
        // Vendor-Specific-Application-Id (260), M, length 8 + 24 = 32:
        0, 0, 0x01, 0x04, 0x40, 0, 0, 32,
        //   Vendor-Id 10415
        0, 0, 0x01, 0x0a, 0x40, 0, 0, 12, 0, 0, 0x28, 0xaf,
        //   Auth-Application-Id (258) 16777236 = 0x01000014
        0, 0, 0x01, 0x02, 0x40, 0, 0, 12, 0x01, 0, 0, 0x14,
    ];
    assert_eq!(body.len(), 136);
    #[rustfmt::skip]
    let header: &[u8] = &[
        1, 0, 0, 156,       // version 1, length 20 + 136
        0x80, 0, 0x01, 0x01, // R only (CER is not proxiable), command 257
        0, 0, 0, 0,         // Application-Id 0
    ];
    assert_eq!(&bytes[..12], header);
    assert_eq!(&bytes[20..], body);
    let cer = Message::decode(&bytes).unwrap();
    assert_eq!(cer.encoded_len(), 156);
    assert_eq!(cer.to_bytes().unwrap(), bytes);
}

#[test]
fn aar_round_trips_and_grouped_content_reads_back() {
    let mut m = aar("pcscf;1;1");
    m.hop_by_hop = 1;
    m.end_to_end = 2;
    let bytes = m.to_bytes().unwrap();
    assert_eq!(bytes.len() % 4, 0);
    assert_eq!(frame_len(&bytes), Ok(Some(bytes.len())));
    let back = Message::decode(&bytes).unwrap();
    assert_eq!(back, m);
    let mcd = back.find(dict::MEDIA_COMPONENT_DESCRIPTION).unwrap();
    assert!(mcd.vendor == Some(10_415) && mcd.mandatory);
    let sub = mcd
        .find_in_group(dict::MEDIA_SUB_COMPONENT)
        .unwrap()
        .unwrap();
    let flows: Vec<String> = sub
        .grouped_avps()
        .unwrap()
        .iter()
        .filter(|a| a.key() == dict::FLOW_DESCRIPTION)
        .map(|a| a.as_utf8().unwrap().to_string())
        .collect();
    assert_eq!(
        flows[0],
        "permit out 17 from 192.0.2.1 49152 to 198.51.100.7 5004"
    );
    assert_eq!(flows.len(), 2);
    assert!(Validator::base().validate(&back).is_ok());
}

#[test]
fn every_truncation_is_an_error() {
    let mut m = aar("pcscf;1;1");
    m.hop_by_hop = 1;
    let bytes = m.to_bytes().unwrap();
    for cut in 0..bytes.len() {
        let prefix = &bytes[..cut];
        assert_eq!(frame_len(prefix), Ok(None), "cut {cut}");
        assert!(Message::decode(prefix).is_err(), "cut {cut}");
    }
}

#[test]
fn damaged_lengths_are_typed_errors() {
    let mut m = aar("s");
    m.hop_by_hop = 1;
    let good = m.to_bytes().unwrap();

    // Message length larger than the buffer, then not a multiple of 4, then below the header.
    let mut long = good.clone();
    long[3] = long[3].wrapping_add(4);
    assert!(matches!(
        Message::decode(&long),
        Err(DecodeError::Truncated { .. })
    ));
    let mut odd = good.clone();
    odd[3] = odd[3].wrapping_add(1);
    assert!(matches!(
        Message::decode(&odd),
        Err(DecodeError::InvalidMessageLength(_))
    ));
    let tiny = [1, 0, 0, 12, 0x80, 0, 1, 1, 0, 0, 0, 0];
    assert_eq!(
        Message::decode(&tiny),
        Err(DecodeError::InvalidMessageLength(12))
    );
    assert_eq!(DecodeError::InvalidMessageLength(12).result_code(), 5015);

    // Version 2.
    let mut v2 = good.clone();
    v2[0] = 2;
    assert_eq!(
        Message::decode(&v2),
        Err(DecodeError::UnsupportedVersion(2))
    );
    assert_eq!(DecodeError::UnsupportedVersion(2).result_code(), 5011);

    // First AVP (Session-Id, 9 bytes + 3 padding) length 7: below its header.
    let mut short = good.clone();
    short[27] = 7;
    let err = Message::decode(&short).unwrap_err();
    assert!(matches!(err, DecodeError::InvalidAvpLength(h) if h.code == 263 && h.length == 7));
    assert_eq!(err.result_code(), 5014);
    assert!(!err.is_protocol_error());

    // An AVP running past the end of the message.
    let mut past = good.clone();
    let last = past.len() - 12; // Framed-IP-Address: 8 + 4 bytes
    past[last + 7] = 100;
    assert!(matches!(Message::decode(&past), Err(DecodeError::InvalidAvpLength(h)) if h.code == 8));

    // A reserved AVP flag bit: 3009 DIAMETER_INVALID_AVP_BITS, a protocol error.
    let mut bits = good;
    bits[24] |= 0x01;
    let err = Message::decode(&bits).unwrap_err();
    assert_eq!(err.result_code(), 3009);
    assert!(err.is_protocol_error());
}

/// Walks every AVP the way an application would, through every accessor.
fn exercise(avps: &[Avp], depth: usize) {
    for avp in avps {
        let _ = avp.as_u32();
        let _ = avp.as_u64();
        let _ = avp.as_i32();
        let _ = avp.as_i64();
        let _ = avp.as_f32();
        let _ = avp.as_f64();
        let _ = avp.as_utf8();
        let _ = avp.as_address();
        let _ = avp.as_time();
        if depth < 4 {
            if let Ok(inner) = avp.grouped_avps() {
                exercise(&inner, depth + 1);
            }
        }
    }
}

/// Seeded mutations of a valid message through every decode path and a live peer: errors
/// are fine, panics are not, and whatever decodes re-encodes to the same bytes.
#[test]
fn mutated_messages_never_panic() {
    let mut m = aar("pcscf.estuary.test;1;1");
    m.hop_by_hop = 7;
    m.end_to_end = 9;
    let good = m.to_bytes().unwrap();
    let mut rng = rng(0x5eed);
    let (mut ok, mut failed) = (0u32, 0u32);

    let (mut peer, now) = {
        let now = t0();
        let mut peer = Peer::accept(server_config("pcrf"), 0, &mut rng, now);
        let mut cer = Message::request(257, 0)
            .with(Avp::identity(dict::ORIGIN_HOST, "c"))
            .with(Avp::identity(dict::ORIGIN_REALM, "r"))
            .with(Avp::address(
                dict::HOST_IP_ADDRESS,
                "192.0.2.1".parse().unwrap(),
            ))
            .with(Avp::unsigned32(dict::VENDOR_ID, 0))
            .with(Avp::utf8(dict::PRODUCT_NAME, "x"))
            .with(Avp::unsigned32(dict::AUTH_APPLICATION_ID, 16_777_236));
        cer.flags.proxiable = false;
        peer.handle_bytes(now, &cer.to_bytes().unwrap());
        assert!(peer.is_open());
        (peer, now)
    };

    for round in 0..20_000u32 {
        let mut bytes = good.clone();
        match rng.random_range(0..4) {
            0 => {
                for _ in 0..rng.random_range(1..5) {
                    let i = rng.random_range(0..bytes.len());
                    bytes[i] = rng.next_u32() as u8;
                }
            }
            1 => {
                let i = rng.random_range(0..bytes.len());
                bytes[i] ^= 1 << rng.random_range(0..8);
            }
            2 => bytes.truncate(rng.random_range(0..bytes.len())),
            _ => {
                let i = rng.random_range(0..bytes.len());
                let extra: Vec<u8> = (0..rng.random_range(1..9))
                    .map(|_| rng.next_u32() as u8)
                    .collect();
                bytes.splice(i..i, extra);
            }
        }
        let _ = frame_len(&bytes);
        if let Ok((partial, _)) = Message::decode_partial(&bytes) {
            exercise(&partial.avps, 0);
            let _ = Validator::base().validate(&partial);
        }
        match Message::decode(&bytes) {
            Ok(message) => {
                ok += 1;
                exercise(&message.avps, 0);
                let _ = Validator::base().validate(&message);
                // Re-encoding is canonical except where padding bytes were mutated.
                let again = message.to_bytes().unwrap();
                assert_eq!(Message::decode(&again).unwrap(), message, "round {round}");
            }
            Err(e) => {
                failed += 1;
                let _ = e.result_code();
                let _ = e.failed_avp(estuary_diameter::Dictionary::standard());
            }
        }
        if peer.is_open() {
            peer.handle_bytes(now, &bytes);
            while peer.poll_transmit().is_some() {}
            while peer.poll_event().is_some() {}
        }
    }
    // Both outcomes occur, so the loop really covers decode and error paths.
    assert!(ok > 1_000 && failed > 1_000, "ok {ok}, failed {failed}");
}

#[test]
fn random_bytes_never_panic() {
    let mut rng = rng(42);
    let mut buf = vec![0u8; 256];
    for _ in 0..20_000 {
        let len = rng.random_range(0..buf.len());
        rng.fill_bytes(&mut buf[..len]);
        // Make the header plausible half the time so decoding reaches the AVPs.
        if len >= 4 && rng.random_bool(0.5) {
            buf[0] = 1;
            buf[1] = 0;
            buf[2] = 0;
            buf[3] = (len as u8) & 0xfc;
        }
        let _ = frame_len(&buf[..len]);
        if let Ok(m) = Message::decode(&buf[..len]) {
            exercise(&m.avps, 0);
        }
        let _ = estuary_diameter::avp::decode_avps(&buf[..len]);
    }
}

#[test]
fn unknown_commands_and_applications_decode() {
    let mut m = Message::request(0x00ff_fffe, 0x0123_4567).with(
        Avp::octets(
            estuary_diameter::AvpKey::vendor(70_000, 99_999),
            vec![1, 2, 3],
        )
        .with_mandatory(true),
    );
    m.hop_by_hop = 3;
    let back = Message::decode(&m.to_bytes().unwrap()).unwrap();
    assert_eq!(back, m);
}
