//! SDES (RFC 4568): the RFC's example lines parse and print back unchanged; generated keys work
//! end to end; MKI, unknown suites and unsupported session parameters are refused by type.

mod common;

use common::{rtcp_sr, rtp};
use estuary_srtp::{CryptoAttribute, CryptoSuite, Lifetime, Mki, SdesError, SrtpProfile};

/// RFC 4568 §4, the example crypto attribute.
const RFC4568_S4: &str =
    "1 AES_CM_128_HMAC_SHA1_80 inline:PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR|2^20|1:32";
/// RFC 4568 §5.1, the offer's two crypto attributes and the answer's.
const RFC4568_S51_OFFER_1: &str =
    "1 AES_CM_128_HMAC_SHA1_80 inline:WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz|2^20|1:4 FEC_ORDER=FEC_SRTP";
const RFC4568_S51_OFFER_2: &str = "2 F8_128_HMAC_SHA1_80 \
    inline:MTIzNDU2Nzg5QUJDREUwMTIzNDU2Nzg5QUJjZGVm|2^20|1:4;\
    inline:QUJjZGVmMTIzNDU2Nzg5QUJDREUwMTIzNDU2Nzg5|2^20|2:4 FEC_ORDER=FEC_SRTP";
const RFC4568_S51_ANSWER: &str =
    "1 AES_CM_128_HMAC_SHA1_80 inline:PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR|2^20|1:4";

#[test]
fn rfc4568_section_4_example() {
    let a = CryptoAttribute::parse(&format!("a=crypto:{RFC4568_S4}")).unwrap();
    assert_eq!(a.tag, 1);
    assert_eq!(a.suite, CryptoSuite::Srtp(SrtpProfile::Aes128CmSha1_80));
    assert_eq!(a.keys.len(), 1);
    assert_eq!(a.keys[0].key_salt.len(), 30);
    assert_eq!(a.keys[0].lifetime, Some(Lifetime::PowerOfTwo(20)));
    assert_eq!(
        a.keys[0].mki,
        Some(Mki {
            value: 1,
            length: 32
        })
    );
    assert!(a.session_params.is_empty());
    assert_eq!(a.to_string(), RFC4568_S4);
    // Parsed faithfully, but not usable: the key has an MKI.
    assert_eq!(a.master_key().unwrap_err(), SdesError::Mki);
    assert_eq!(
        a.master_key().unwrap_err().to_string(),
        "MKI is not supported"
    );
}

#[test]
fn rfc4568_section_5_1_example() {
    let o1 = CryptoAttribute::parse(RFC4568_S51_OFFER_1).unwrap();
    assert_eq!(o1.session_params, vec!["FEC_ORDER=FEC_SRTP".to_owned()]);
    assert_eq!(o1.to_string(), RFC4568_S51_OFFER_1);

    let o2 = CryptoAttribute::parse(RFC4568_S51_OFFER_2).unwrap();
    assert_eq!(o2.tag, 2);
    assert_eq!(o2.suite, CryptoSuite::Unknown("F8_128_HMAC_SHA1_80".into()));
    assert_eq!(o2.keys.len(), 2);
    assert_eq!(
        o2.keys[1].mki,
        Some(Mki {
            value: 2,
            length: 4
        })
    );
    assert_eq!(o2.to_string(), RFC4568_S51_OFFER_2);
    assert_eq!(
        o2.master_key().unwrap_err(),
        SdesError::UnknownSuite("F8_128_HMAC_SHA1_80".into())
    );

    let answer = CryptoAttribute::parse(RFC4568_S51_ANSWER).unwrap();
    assert_eq!(answer.to_string(), RFC4568_S51_ANSWER);

    // Every line of that offer needs MKI or F8: nothing for us, so the caller answers 488.
    assert!(CryptoAttribute::select(&[o1, o2], &SrtpProfile::ALL).is_err());
}

#[test]
fn generated_keys_round_trip_between_offerer_and_answerer() {
    let mut keys = estuary_keys::KeySource::os();
    for profile in SrtpProfile::ALL {
        // The IMS side offers; we answer with our own key under the same tag and suite.
        let offer = CryptoAttribute::generate(3, profile, &mut keys);
        let offer_line = offer.to_string();
        assert!(offer_line.starts_with(&format!("3 {} inline:", profile.sdes_name())));
        let seen = vec![CryptoAttribute::parse(&offer_line).unwrap()];
        assert_eq!(seen[0], offer);
        let (chosen, _) = CryptoAttribute::select(&seen, &SrtpProfile::ALL).unwrap();
        let answer = CryptoAttribute::answer(chosen, &mut keys).unwrap();
        assert_eq!((answer.tag, &answer.suite), (3, &offer.suite));
        assert_ne!(
            answer.keys[0].key_salt, offer.keys[0].key_salt,
            "each direction has its own key"
        );
        let answer_seen = CryptoAttribute::parse(&answer.to_string()).unwrap();

        // Each line keys what its sender protects.
        let mut offerer_tx = offer.context().unwrap();
        let mut answerer_rx = seen[0].context().unwrap();
        let mut answerer_tx = answer.context().unwrap();
        let mut offerer_rx = answer_seen.context().unwrap();
        for seq in 0..20u16 {
            let mut p = rtp(seq, 11, 160);
            offerer_tx.protect_rtp(&mut p).unwrap();
            answerer_rx.unprotect_rtp(&mut p).unwrap();
            assert_eq!(p, rtp(seq, 11, 160));
            let mut q = rtp(seq, 22, 160);
            answerer_tx.protect_rtp(&mut q).unwrap();
            offerer_rx.unprotect_rtp(&mut q).unwrap();
            assert_eq!(q, rtp(seq, 22, 160));
        }
        let mut r = rtcp_sr(11, 1);
        offerer_tx.protect_rtcp(&mut r).unwrap();
        answerer_rx.unprotect_rtcp(&mut r).unwrap();
        assert_eq!(r, rtcp_sr(11, 1));
    }
}

#[test]
fn select_skips_unusable_lines() {
    let mut keys = estuary_keys::KeySource::os();
    let good = CryptoAttribute::generate(2, SrtpProfile::Aes128CmSha1_32, &mut keys);
    let offered = vec![
        CryptoAttribute::parse(RFC4568_S51_OFFER_1).unwrap(),
        good.clone(),
    ];
    let (line, key) = CryptoAttribute::select(&offered, &SrtpProfile::ALL).unwrap();
    assert_eq!(line.tag, 2);
    assert_eq!(key.profile(), SrtpProfile::Aes128CmSha1_32);
    // A suite we run but the caller's policy excludes.
    assert!(matches!(
        CryptoAttribute::select(&[good], &[SrtpProfile::Aes128CmSha1_80]),
        Err(SdesError::UnknownSuite(_))
    ));
}

#[test]
fn refusals_are_typed() {
    let key = "inline:PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR";
    let usable = |line: &str| CryptoAttribute::parse(line).and_then(|a| a.master_key());
    assert!(usable(&format!("1 AES_CM_128_HMAC_SHA1_80 {key}")).is_ok());
    assert!(usable(&format!("1 AES_CM_128_HMAC_SHA1_80 {key}|2^31")).is_ok());
    assert_eq!(
        usable(&format!("1 AES_CM_128_HMAC_SHA1_80 {key}|7:1")),
        Err(SdesError::Mki)
    );
    assert_eq!(
        usable(&format!("1 AES_CM_128_HMAC_SHA1_80 {key};{key}")),
        Err(SdesError::MultipleKeys)
    );
    assert_eq!(
        usable(&format!("1 AES_256_CM_HMAC_SHA1_80 {key}")),
        Err(SdesError::UnknownSuite("AES_256_CM_HMAC_SHA1_80".into()))
    );
    for p in [
        "KDR=1",
        "UNENCRYPTED_SRTCP",
        "UNENCRYPTED_SRTP",
        "UNAUTHENTICATED_SRTP",
        "FEC_KEY=inline:x",
        "FOO",
    ] {
        assert_eq!(
            usable(&format!("1 AES_CM_128_HMAC_SHA1_80 {key} {p}")),
            Err(SdesError::UnsupportedSessionParam(p.into()))
        );
    }
    for p in ["WSH=128", "FEC_ORDER=SRTP_FEC", "-EXPERIMENTAL=1"] {
        assert!(
            usable(&format!("1 AES_CM_128_HMAC_SHA1_80 {key} {p}")).is_ok(),
            "{p}"
        );
    }
    // A GCM key is 28 bytes; a CM key is 30.
    assert!(matches!(
        usable(&format!("1 AEAD_AES_128_GCM {key}")),
        Err(SdesError::BadKeyLength {
            want: 28,
            got: 30,
            ..
        })
    ));
    assert_eq!(
        CryptoAttribute::parse("1 AES_CM_128_HMAC_SHA1_80 uri:http://x/"),
        Err(SdesError::UnsupportedKeyMethod("uri".into()))
    );
}

#[test]
fn malformed_lines_are_refused() {
    let key = "inline:PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR";
    for bad in [
        String::new(),
        "1".into(),
        "1 AES_CM_128_HMAC_SHA1_80".into(),
        format!("x AES_CM_128_HMAC_SHA1_80 {key}"),
        format!("1234567890 AES_CM_128_HMAC_SHA1_80 {key}"),
        format!("1 AES-CM {key}"),
        "1 AES_CM_128_HMAC_SHA1_80 inline:".into(),
        "1 AES_CM_128_HMAC_SHA1_80 inline:!!!!".into(),
        format!("1 AES_CM_128_HMAC_SHA1_80 {key}|2^x"),
        format!("1 AES_CM_128_HMAC_SHA1_80 {key}|2^99"),
        format!("1 AES_CM_128_HMAC_SHA1_80 {key}|1:4|2^20"),
        format!("1 AES_CM_128_HMAC_SHA1_80 {key}|1:0"),
        format!("1 AES_CM_128_HMAC_SHA1_80 {key}|1:1000"),
        format!("1 AES_CM_128_HMAC_SHA1_80 {key}|99999999999999999999999:4"),
        "1 AES_CM_128_HMAC_SHA1_80 nocolon".into(),
    ] {
        assert!(
            matches!(CryptoAttribute::parse(&bad), Err(SdesError::Malformed(_))),
            "{bad:?}"
        );
    }
}

#[test]
fn unpadded_base64_is_accepted_padded_is_written() {
    let mut keys = estuary_keys::KeySource::os();
    let gcm = CryptoAttribute::generate(1, SrtpProfile::AeadAes128Gcm, &mut keys);
    let line = gcm.to_string();
    assert!(
        line.ends_with("=="),
        "28 bytes of key||salt need padding: {line}"
    );
    let unpadded = line.trim_end_matches('=');
    assert_eq!(CryptoAttribute::parse(unpadded).unwrap(), gcm);
}
