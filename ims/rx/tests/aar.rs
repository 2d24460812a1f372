//! The AAR and STR on the wire: every AVP, its place, its flags and its value.

mod common;

use common::*;
use estuary_diameter::dictionary::{self as dict, MBit, VENDOR_3GPP};
use estuary_diameter::message::{application, command};
use estuary_diameter::{Avp, AvpKey, Message};
use estuary_rx::media::*;
use estuary_rx::{CallKey, RxClient, RxConfig, SpecificAction, TerminationCause};

/// Starts a call and returns its AAR as decoded from the bytes the client produced.
fn aar_for(config: RxConfig, params: SessionParams) -> Message {
    let mut rx = RxClient::new(config, SEED);
    rx.start(t0(), CallKey(1), params).unwrap();
    let (call, aar) = rx.poll_request().unwrap();
    assert_eq!(call, CallKey(1));
    assert!(rx.poll_request().is_none());
    over_the_wire(&aar).1
}

fn keys(avps: &[Avp]) -> Vec<AvpKey> {
    avps.iter().map(Avp::key).collect()
}

fn members(avp: &Avp) -> Vec<Avp> {
    avp.grouped_avps().unwrap()
}

fn u32_of(avps: &[Avp], key: AvpKey) -> Vec<u32> {
    avps.iter()
        .filter(|a| a.key() == key)
        .map(|a| a.as_u32().unwrap())
        .collect()
}

fn text_of(avps: &[Avp], key: AvpKey) -> Vec<String> {
    avps.iter()
        .filter(|a| a.key() == key)
        .map(|a| String::from_utf8(a.data.clone()).unwrap())
        .collect()
}

/// V set exactly for 3GPP AVPs (vendor 10415), M as the estuary-diameter dictionary says,
/// P clear; recursively.
fn assert_flags(avps: &[Avp]) {
    for avp in avps {
        let def = dict::lookup(avp.key()).unwrap_or_else(|| panic!("unknown AVP {:?}", avp.key()));
        assert_eq!(avp.vendor, def.key.vendor, "{}: vendor", def.name);
        if def.key.vendor == Some(VENDOR_3GPP) {
            assert_eq!(avp.flags() & 0x80, 0x80, "{}: V", def.name);
        }
        assert_eq!(avp.mandatory, def.m_bit == MBit::Must, "{}: M", def.name);
        assert!(!avp.protected, "{}: P", def.name);
        if def.data_type == dict::DataType::Grouped {
            assert_flags(&members(avp));
        }
    }
}

#[test]
fn initial_aar_header_order_and_values() {
    let mut p = params(vec![audio(Direction::SendRecv), video(Direction::RecvOnly)]);
    p.af_application_id = Some("urn:estuary:webrtc".into());
    p.service_urn = Some("sos".into());
    let mut cfg = config();
    cfg.destination_host = Some(PCRF_HOST.into());
    let aar = aar_for(cfg, p);

    assert_eq!(aar.command_code, command::AA);
    assert_eq!(aar.application_id, application::RX);
    assert!(aar.flags.request && aar.flags.proxiable && !aar.flags.error);
    // TS 29.214 §5.6.1 order.
    assert_eq!(
        keys(&aar.avps),
        [
            dict::SESSION_ID,
            dict::AUTH_APPLICATION_ID,
            dict::ORIGIN_HOST,
            dict::ORIGIN_REALM,
            dict::DESTINATION_REALM,
            dict::DESTINATION_HOST,
            dict::AF_APPLICATION_IDENTIFIER,
            dict::MEDIA_COMPONENT_DESCRIPTION,
            dict::MEDIA_COMPONENT_DESCRIPTION,
            dict::AF_CHARGING_IDENTIFIER,
            dict::SPECIFIC_ACTION,
            dict::SPECIFIC_ACTION,
            dict::SPECIFIC_ACTION,
            dict::SUBSCRIPTION_ID,
            dict::SUPPORTED_FEATURES,
            dict::FRAMED_IP_ADDRESS,
            dict::SERVICE_URN,
            dict::RX_REQUEST_TYPE,
        ]
    );
    assert_flags(&aar.avps);
    assert_eq!(aar.session_id(), Some("pcscf.estuary.test;1700000000;1"));
    assert_eq!(u32_of(&aar.avps, dict::AUTH_APPLICATION_ID), [16_777_236]);
    assert_eq!(aar.origin_host(), Some(AF_HOST));
    assert_eq!(aar.origin_realm(), Some(AF_REALM));
    assert_eq!(text_of(&aar.avps, dict::DESTINATION_REALM), [PCRF_REALM]);
    assert_eq!(text_of(&aar.avps, dict::DESTINATION_HOST), [PCRF_HOST]);
    assert_eq!(
        text_of(&aar.avps, dict::AF_APPLICATION_IDENTIFIER),
        ["urn:estuary:webrtc"]
    );
    assert_eq!(
        text_of(&aar.avps, dict::AF_CHARGING_IDENTIFIER),
        ["icid-0001"]
    );
    assert_eq!(u32_of(&aar.avps, dict::SPECIFIC_ACTION), [2, 4, 7]);
    // INDICATION_OF_OUT_OF_CREDIT is the Rel8 feature: advertised (TS 29.214 §5.4.1).
    let features = members(aar.find(dict::SUPPORTED_FEATURES).unwrap());
    assert_eq!(keys(&features), [dict::VENDOR_ID, dict::FEATURE_LIST_ID, dict::FEATURE_LIST]);
    assert_eq!(u32_of(&features, dict::VENDOR_ID), [10_415]);
    assert_eq!(u32_of(&features, dict::FEATURE_LIST_ID), [1]);
    assert_eq!(u32_of(&features, dict::FEATURE_LIST), [1], "bit 0: Rel8");
    assert_eq!(
        aar.find(dict::FRAMED_IP_ADDRESS).unwrap().data,
        [192, 0, 2, 1],
        "Framed-IP-Address is the four octets (RFC 7155 §4.4.10.5.1)"
    );
    assert_eq!(text_of(&aar.avps, dict::SERVICE_URN), ["sos"]);
    assert_eq!(u32_of(&aar.avps, dict::RX_REQUEST_TYPE), [0]);
    assert!(
        !aar.find(dict::RX_REQUEST_TYPE).unwrap().mandatory,
        "Rx-Request-Type has M clear (TS 29.214 §5.3 table 5.3.1)"
    );

    let sub = members(aar.find(dict::SUBSCRIPTION_ID).unwrap());
    assert_eq!(
        keys(&sub),
        [dict::SUBSCRIPTION_ID_TYPE, dict::SUBSCRIPTION_ID_DATA]
    );
    assert_eq!(
        u32_of(&sub, dict::SUBSCRIPTION_ID_TYPE),
        [2],
        "END_USER_SIP_URI"
    );
    assert_eq!(
        text_of(&sub, dict::SUBSCRIPTION_ID_DATA),
        ["sip:alice@estuary.test"]
    );
}

#[test]
fn media_component_description_nesting_and_flows() {
    let aar = aar_for(
        config(),
        params(vec![audio(Direction::SendRecv), video(Direction::RecvOnly)]),
    );
    let mcds: Vec<Vec<Avp>> = aar
        .find_all(dict::MEDIA_COMPONENT_DESCRIPTION)
        .map(members)
        .collect();
    assert_eq!(mcds.len(), 2);

    let audio = &mcds[0];
    assert_eq!(
        keys(audio),
        [
            dict::MEDIA_COMPONENT_NUMBER,
            dict::MEDIA_SUB_COMPONENT,
            dict::MEDIA_TYPE,
            dict::MAX_REQUESTED_BANDWIDTH_UL,
            dict::MAX_REQUESTED_BANDWIDTH_DL,
            dict::FLOW_STATUS,
            dict::CODEC_DATA,
            dict::CODEC_DATA,
        ],
        "TS 29.214 §5.3.16 order"
    );
    assert_eq!(u32_of(audio, dict::MEDIA_COMPONENT_NUMBER), [1]);
    assert_eq!(u32_of(audio, dict::MEDIA_TYPE), [0]);
    assert_eq!(u32_of(audio, dict::MAX_REQUESTED_BANDWIDTH_UL), [64_000]);
    assert_eq!(u32_of(audio, dict::MAX_REQUESTED_BANDWIDTH_DL), [64_000]);
    assert_eq!(u32_of(audio, dict::FLOW_STATUS), [2]);
    assert_eq!(
        text_of(audio, dict::CODEC_DATA),
        [
            "uplink\noffer\nm=audio 49152 UDP/TLS/RTP/SAVPF 111\na=rtpmap:111 opus/48000/2",
            "downlink\nanswer\nm=audio 40000 UDP/TLS/RTP/SAVPF 111\na=rtpmap:111 opus/48000/2",
        ]
    );
    let msc = members(
        audio
            .iter()
            .find(|a| a.key() == dict::MEDIA_SUB_COMPONENT)
            .unwrap(),
    );
    assert_eq!(
        keys(&msc),
        [
            dict::FLOW_NUMBER,
            dict::FLOW_DESCRIPTION,
            dict::FLOW_DESCRIPTION,
            dict::FLOW_USAGE
        ],
        "TS 29.214 §5.3.18 order"
    );
    assert_eq!(u32_of(&msc, dict::FLOW_NUMBER), [1]);
    assert_eq!(
        text_of(&msc, dict::FLOW_DESCRIPTION),
        [
            "permit out 17 from 198.51.100.7 40000 to 192.0.2.1 49152",
            "permit in 17 from 192.0.2.1 49152 to 198.51.100.7 40000",
        ]
    );
    assert_eq!(u32_of(&msc, dict::FLOW_USAGE), [0], "NO_INFORMATION");

    let video = &mcds[1];
    assert_eq!(u32_of(video, dict::MEDIA_COMPONENT_NUMBER), [2]);
    assert_eq!(u32_of(video, dict::MEDIA_TYPE), [1]);
    assert_eq!(u32_of(video, dict::MAX_REQUESTED_BANDWIDTH_UL), [1_500_000]);
    assert_eq!(u32_of(video, dict::MAX_REQUESTED_BANDWIDTH_DL), [2_000_000]);
    assert_eq!(
        u32_of(video, dict::FLOW_STATUS),
        [1],
        "recvonly → ENABLED-DOWNLINK"
    );
    assert!(text_of(video, dict::CODEC_DATA).is_empty());
    let vmsc = members(
        video
            .iter()
            .find(|a| a.key() == dict::MEDIA_SUB_COMPONENT)
            .unwrap(),
    );
    assert_eq!(
        text_of(&vmsc, dict::FLOW_DESCRIPTION),
        [
            "permit out 17 from 198.51.100.7 40002 to 192.0.2.1 49154",
            "permit in 17 from 192.0.2.1 49154 to 198.51.100.7 40002",
        ]
    );
}

#[test]
fn flow_status_for_all_five_cases() {
    let mut components = Vec::new();
    for (i, direction) in [
        Direction::SendRecv,
        Direction::SendOnly,
        Direction::RecvOnly,
        Direction::Inactive,
        Direction::SendRecv,
    ]
    .into_iter()
    .enumerate()
    {
        let mut c = audio(direction);
        c.number = i as u32 + 1;
        c.removed = i == 4;
        components.push(c);
    }
    let aar = aar_for(config(), params(components));
    let statuses: Vec<u32> = aar
        .find_all(dict::MEDIA_COMPONENT_DESCRIPTION)
        .map(|m| u32_of(&members(m), dict::FLOW_STATUS)[0])
        .collect();
    // sendrecv ENABLED, sendonly ENABLED-UPLINK, recvonly ENABLED-DOWNLINK, inactive
    // DISABLED, port 0 REMOVED (TS 29.214 §5.3.11, TS 29.213 §6.2).
    assert_eq!(statuses, [2, 0, 1, 3, 4]);
    let removed = members(
        aar.find_all(dict::MEDIA_COMPONENT_DESCRIPTION)
            .nth(4)
            .unwrap(),
    );
    assert_eq!(
        keys(&removed),
        [
            dict::MEDIA_COMPONENT_NUMBER,
            dict::MEDIA_TYPE,
            dict::FLOW_STATUS
        ]
    );
}

#[test]
fn ipv6_framed_prefix_and_flows() {
    let mut p = params(vec![audio(Direction::SendRecv)]);
    p.framed_ip = "2001:db8::1".parse().unwrap();
    p.components[0].flows = vec![IpFlow::udp(
        sa("[2001:db8::1]:49152"),
        sa("[2001:db8:ffff::7]:40000"),
    )];
    p.subscription = Some(Subscription {
        kind: SubscriptionKind::E164,
        data: "+15551234567".into(),
    });
    let aar = aar_for(config(), p);
    assert!(aar.find(dict::FRAMED_IP_ADDRESS).is_none());
    let prefix = aar.find(dict::FRAMED_IPV6_PREFIX).unwrap();
    let mut expected = vec![0, 128];
    expected.extend_from_slice(
        &"2001:db8::1"
            .parse::<std::net::Ipv6Addr>()
            .unwrap()
            .octets(),
    );
    assert_eq!(
        prefix.data, expected,
        "RFC 3162 §2.3: reserved, length, prefix"
    );
    assert!(prefix.mandatory && prefix.vendor.is_none());
    let msc = members(
        members(aar.find(dict::MEDIA_COMPONENT_DESCRIPTION).unwrap())
            .iter()
            .find(|a| a.key() == dict::MEDIA_SUB_COMPONENT)
            .unwrap(),
    );
    assert_eq!(
        text_of(&msc, dict::FLOW_DESCRIPTION),
        [
            "permit out 17 from 2001:db8:ffff::7 40000 to 2001:db8::1 49152",
            "permit in 17 from 2001:db8::1 49152 to 2001:db8:ffff::7 40000",
        ]
    );
    let sub = members(aar.find(dict::SUBSCRIPTION_ID).unwrap());
    assert_eq!(
        u32_of(&sub, dict::SUBSCRIPTION_ID_TYPE),
        [0],
        "END_USER_E164"
    );
}

#[test]
fn legacy_uplink_filter_and_configured_actions() {
    let mut cfg = config();
    cfg.uplink_filter = UplinkFilter::Out;
    cfg.specific_actions = vec![
        SpecificAction::IndicationOfLossOfBearer,
        SpecificAction::IndicationOfReleaseOfBearer,
        SpecificAction::IndicationOfOutOfCredit,
    ];
    let aar = aar_for(cfg, params(vec![audio(Direction::SendRecv)]));
    assert_eq!(u32_of(&aar.avps, dict::SPECIFIC_ACTION), [2, 4, 7]);
    let msc = members(
        members(aar.find(dict::MEDIA_COMPONENT_DESCRIPTION).unwrap())
            .iter()
            .find(|a| a.key() == dict::MEDIA_SUB_COMPONENT)
            .unwrap(),
    );
    assert_eq!(
        text_of(&msc, dict::FLOW_DESCRIPTION)[1],
        "permit out 17 from 192.0.2.1 49152 to 198.51.100.7 40000"
    );
}

#[test]
fn optional_parts_are_left_out() {
    let mut p = params(vec![]);
    p.subscription = None;
    // Without a Rel8 action there is no feature to advertise: no Supported-Features.
    let mut cfg = config();
    cfg.specific_actions.retain(|a| !a.is_rel8());
    let aar = aar_for(cfg, p);
    assert_eq!(
        keys(&aar.avps),
        [
            dict::SESSION_ID,
            dict::AUTH_APPLICATION_ID,
            dict::ORIGIN_HOST,
            dict::ORIGIN_REALM,
            dict::DESTINATION_REALM,
            dict::AF_CHARGING_IDENTIFIER,
            dict::SPECIFIC_ACTION,
            dict::SPECIFIC_ACTION,
            dict::FRAMED_IP_ADDRESS,
            dict::RX_REQUEST_TYPE,
        ]
    );
}

#[test]
fn update_aar_and_str_contents() {
    let mut w = Wire::new();
    w.start(CallKey(1), vec![audio(Direction::SendRecv)]);
    w.rx.update(w.now, CallKey(1), params(vec![audio(Direction::Inactive)]))
        .unwrap();
    let (_, update) = w.rx.poll_request().unwrap();
    let update = over_the_wire(&update).1;
    assert_eq!(
        keys(&update.avps),
        [
            dict::SESSION_ID,
            dict::AUTH_APPLICATION_ID,
            dict::ORIGIN_HOST,
            dict::ORIGIN_REALM,
            dict::DESTINATION_REALM,
            dict::DESTINATION_HOST,
            dict::MEDIA_COMPONENT_DESCRIPTION,
            dict::AF_CHARGING_IDENTIFIER,
            dict::RX_REQUEST_TYPE,
        ]
    );
    assert_eq!(u32_of(&update.avps, dict::RX_REQUEST_TYPE), [1]);
    assert_eq!(text_of(&update.avps, dict::DESTINATION_HOST), [PCRF_HOST]);
    assert_flags(&update.avps);

    w.rx.end(w.now, CallKey(1), TerminationCause::Logout)
        .unwrap();
    let (_, str) = w.rx.poll_request().unwrap();
    let str = over_the_wire(&str).1;
    assert_eq!(str.command_code, command::SESSION_TERMINATION);
    assert_eq!(str.application_id, application::RX);
    assert!(str.flags.request && str.flags.proxiable);
    // TS 29.214 §5.6.5 order.
    assert_eq!(
        keys(&str.avps),
        [
            dict::SESSION_ID,
            dict::ORIGIN_HOST,
            dict::ORIGIN_REALM,
            dict::DESTINATION_REALM,
            dict::AUTH_APPLICATION_ID,
            dict::TERMINATION_CAUSE,
            dict::DESTINATION_HOST,
        ]
    );
    assert_eq!(str.session_id(), update.session_id());
    assert_eq!(
        u32_of(&str.avps, dict::TERMINATION_CAUSE),
        [1],
        "DIAMETER_LOGOUT"
    );
    assert_flags(&str.avps);
}

#[test]
fn our_requests_pass_the_rx_validator() {
    let validator = estuary_rx::rx_validator();
    let aar = aar_for(
        config(),
        params(vec![audio(Direction::SendRecv), video(Direction::SendOnly)]),
    );
    assert_eq!(validator.validate(&aar).map(|a| a.unknown_avps), Ok(vec![]));
}

#[test]
fn signalling_aar_describes_the_sip_connection_as_component_zero() {
    let mut rx = RxClient::new(config(), SEED);
    let params = SignallingParams {
        subscription: Some(Subscription {
            kind: SubscriptionKind::SipUri,
            data: "sip:alice@estuary.test".into(),
        }),
        framed_ip: "192.0.2.1".parse().unwrap(),
        flows: vec![IpFlow::tcp(sa("192.0.2.1:51000"), sa("198.51.100.7:8443"))],
    };
    rx.start_signalling(t0(), CallKey(9), params).unwrap();
    let (key, aar) = rx.poll_request().unwrap();
    assert_eq!(key, CallKey(9));
    let aar = over_the_wire(&aar).1;
    // TS 29.214 §5.6.1 order; no AF-Charging-Identifier, no Codec-Data: no call is charged.
    assert_eq!(
        keys(&aar.avps),
        [
            dict::SESSION_ID,
            dict::AUTH_APPLICATION_ID,
            dict::ORIGIN_HOST,
            dict::ORIGIN_REALM,
            dict::DESTINATION_REALM,
            dict::MEDIA_COMPONENT_DESCRIPTION,
            dict::SPECIFIC_ACTION,
            dict::SPECIFIC_ACTION,
            dict::SUBSCRIPTION_ID,
            dict::FRAMED_IP_ADDRESS,
            dict::RX_REQUEST_TYPE,
        ]
    );
    assert_flags(&aar.avps);
    assert_eq!(u32_of(&aar.avps, dict::SPECIFIC_ACTION), [2, 4], "no out-of-credit: nothing is charged");
    assert_eq!(u32_of(&aar.avps, dict::RX_REQUEST_TYPE), [0]);
    let mcd = members(aar.find(dict::MEDIA_COMPONENT_DESCRIPTION).unwrap());
    assert_eq!(keys(&mcd), [dict::MEDIA_COMPONENT_NUMBER, dict::MEDIA_SUB_COMPONENT]);
    assert_eq!(u32_of(&mcd, dict::MEDIA_COMPONENT_NUMBER), [0], "0 is AF signalling (§5.3.17)");
    let msc = members(&mcd[1]);
    assert_eq!(
        keys(&msc),
        [
            dict::FLOW_NUMBER,
            dict::FLOW_DESCRIPTION,
            dict::FLOW_DESCRIPTION,
            dict::FLOW_USAGE,
            dict::AF_SIGNALLING_PROTOCOL,
        ],
        "TS 29.214 §5.3.18 order"
    );
    assert_eq!(u32_of(&msc, dict::FLOW_USAGE), [2], "AF_SIGNALLING");
    assert_eq!(u32_of(&msc, dict::AF_SIGNALLING_PROTOCOL), [1], "SIP");
    assert_eq!(
        text_of(&msc, dict::FLOW_DESCRIPTION),
        [
            "permit out 6 from 198.51.100.7 8443 to 192.0.2.1 51000",
            "permit in 6 from 192.0.2.1 51000 to 198.51.100.7 8443",
        ]
    );

    // The PCRF facility reads it back; the session then ends like a call's.
    let summary = estuary_rx::pcrf::AarSummary::decode(&aar).unwrap();
    assert_eq!(summary.components[0].number, Some(0));
    assert_eq!(summary.components[0].sub_components[0].signalling_protocol, Some(1));
    assert!(rx.start_signalling(t0(), CallKey(9), SignallingParams { subscription: None, framed_ip: "192.0.2.1".parse().unwrap(), flows: vec![] }).is_err());
    let empty = SignallingParams { subscription: None, framed_ip: "192.0.2.1".parse().unwrap(), flows: vec![] };
    assert_eq!(
        rx.start_signalling(t0(), CallKey(10), empty),
        Err(estuary_rx::RxError::InvalidParams(estuary_rx::ParamError::NoSignallingFlow))
    );
    rx.end(t0(), CallKey(9), TerminationCause::Logout).unwrap();
    let (_, str) = rx.poll_request().unwrap();
    assert_eq!(str.command_code, command::SESSION_TERMINATION);
}
