//! Building AAR and STR from the input model, AVPs in the order of the TS 29.214 §5.6 ABNF.

use std::net::IpAddr;

use estuary_diameter::dictionary as dict;
use estuary_diameter::message::{application, command};
use estuary_diameter::{Avp, Message};

use crate::client::RxConfig;
use crate::media::{IpFlow, MediaComponent, SessionParams, SignallingParams, Subscription, UplinkFilter};
use crate::values::{AarKind, SpecificAction, TerminationCause};

/// Flow-Usage NO_INFORMATION (TS 29.214 §5.3.12): RTP and RTCP share the flow (rtcp-mux).
const FLOW_USAGE_NO_INFORMATION: u32 = 0;
/// Flow-Usage AF_SIGNALLING (TS 29.214 §5.3.12): the flow carries the AF's signalling.
const FLOW_USAGE_AF_SIGNALLING: u32 = 2;
/// AF-Signalling-Protocol SIP (TS 29.214 §5.3.26).
const AF_SIGNALLING_PROTOCOL_SIP: u32 = 1;
/// Media-Component-Number of the signalling flows (TS 29.214 §5.3.17: 0 is for AF signalling).
const SIGNALLING_COMPONENT: u32 = 0;

/// Where a request of one session goes.
pub(crate) struct Route<'a> {
    pub session_id: &'a str,
    /// Destination-Host: the PCRF that answered the session's first AAA, else the configured
    /// one (RFC 6733 §6.5: later requests of a session go to the same server).
    pub destination_host: Option<&'a str>,
}

/// The AAR (TS 29.214 §5.6.1):
///
/// ```text
/// < Session-Id > { Auth-Application-Id } { Origin-Host } { Origin-Realm }
/// { Destination-Realm } [ Destination-Host ] [ AF-Application-Identifier ]
/// *[ Media-Component-Description ] [ AF-Charging-Identifier ] *[ Specific-Action ]
/// *[ Subscription-Id ] [ Framed-IP-Address ] [ Framed-IPv6-Prefix ] [ Service-URN ]
/// [ Rx-Request-Type ]
/// ```
///
/// The initial AAR also carries the binding and subscription information (Specific-Action,
/// Subscription-Id, the framed address, Service-URN); an update carries only what may change
/// (§5.3.13: non-one-time Specific-Actions "may only be provided in the initial AA-Request").
pub(crate) fn aar(
    config: &RxConfig,
    route: &Route<'_>,
    params: &SessionParams,
    kind: AarKind,
) -> Message {
    let mut m = aar_head(config, route);
    if let Some(app) = &params.af_application_id {
        m.push(Avp::octets(dict::AF_APPLICATION_IDENTIFIER, app.as_bytes()));
    }
    for component in &params.components {
        m.push(media_component_description(component, config.uplink_filter));
    }
    m.push(Avp::octets(
        dict::AF_CHARGING_IDENTIFIER,
        params.af_charging_id.as_bytes(),
    ));
    if kind == AarKind::Initial {
        for action in &config.specific_actions {
            m.push(Avp::unsigned32(dict::SPECIFIC_ACTION, action.code()));
        }
        if let Some(subscription) = &params.subscription {
            m.push(subscription_id(subscription));
        }
        if let Some(features) = supported_features(&config.specific_actions) {
            m.push(features);
        }
        m.push(framed_address(params.framed_ip));
        if let Some(urn) = &params.service_urn {
            m.push(Avp::octets(dict::SERVICE_URN, urn.as_bytes()));
        }
    }
    m.push(Avp::unsigned32(dict::RX_REQUEST_TYPE, kind.code()));
    m
}

/// An AAR's fixed head: Session-Id, Auth-Application-Id, Origin-Host, Origin-Realm,
/// Destination-Realm and, when the session has one, Destination-Host (§5.6.1 order).
fn aar_head(config: &RxConfig, route: &Route<'_>) -> Message {
    let mut m = Message::request(command::AA, application::RX);
    m.push(Avp::utf8(dict::SESSION_ID, route.session_id));
    m.push(Avp::unsigned32(dict::AUTH_APPLICATION_ID, application::RX));
    m.push(Avp::identity(dict::ORIGIN_HOST, &config.origin_host));
    m.push(Avp::identity(dict::ORIGIN_REALM, &config.origin_realm));
    m.push(Avp::identity(
        dict::DESTINATION_REALM,
        &config.destination_realm,
    ));
    if let Some(host) = route.destination_host {
        m.push(Avp::identity(dict::DESTINATION_HOST, host));
    }
    m
}

/// The AAR that provisions a registered UE's signalling flows (TS 29.214 §4.4.5a), an initial
/// request of its own Rx session: the common header AVPs, one Media-Component-Description
/// numbered 0 whose sub-components carry Flow-Usage AF_SIGNALLING and AF-Signalling-Protocol
/// SIP, the Specific-Action subscriptions (§5.3.13: here they report the signalling bearer's loss),
/// Subscription-Id and the framed address. No AF-Charging-Identifier: no call is charged.
pub(crate) fn signalling_aar(config: &RxConfig, route: &Route<'_>, params: &SignallingParams) -> Message {
    let mut m = aar_head(config, route);
    let mut members = Vec::with_capacity(1 + params.flows.len());
    members.push(Avp::unsigned32(
        dict::MEDIA_COMPONENT_NUMBER,
        SIGNALLING_COMPONENT,
    ));
    for (i, flow) in params.flows.iter().enumerate() {
        members.push(sub_component(i, flow, config.uplink_filter, FLOW_USAGE_AF_SIGNALLING, true));
    }
    m.push(Avp::grouped(dict::MEDIA_COMPONENT_DESCRIPTION, &members));
    // No call is charged on the signalling path: nothing to run out of credit for.
    let actions: Vec<SpecificAction> = config
        .specific_actions
        .iter()
        .copied()
        .filter(|a| *a != SpecificAction::IndicationOfOutOfCredit)
        .collect();
    for action in &actions {
        m.push(Avp::unsigned32(dict::SPECIFIC_ACTION, action.code()));
    }
    if let Some(subscription) = &params.subscription {
        m.push(subscription_id(subscription));
    }
    if let Some(features) = supported_features(&actions) {
        m.push(features);
    }
    m.push(framed_address(params.framed_ip));
    m.push(Avp::unsigned32(dict::RX_REQUEST_TYPE, AarKind::Initial.code()));
    m
}

/// Media-Sub-Component (TS 29.214 §5.3.18) for the `index`th flow of a component:
///
/// ```text
/// { Flow-Number } 0*2[ Flow-Description ] [ Flow-Status ] [ Flow-Usage ]
/// [ Max-Requested-Bandwidth-UL ] [ Max-Requested-Bandwidth-DL ] [ AF-Signalling-Protocol ]
/// ```
fn sub_component(index: usize, flow: &IpFlow, uplink: UplinkFilter, usage: u32, sip: bool) -> Avp {
    // Flow-Number is the flow's ordinal within the component (TS 29.214 Annex B).
    let flow_number = u32::try_from(index + 1).unwrap_or(u32::MAX);
    let mut members = vec![
        Avp::unsigned32(dict::FLOW_NUMBER, flow_number),
        Avp::utf8(dict::FLOW_DESCRIPTION, &flow.downlink_description()),
        Avp::utf8(dict::FLOW_DESCRIPTION, &flow.uplink_description(uplink)),
        Avp::unsigned32(dict::FLOW_USAGE, usage),
    ];
    if sip {
        members.push(Avp::unsigned32(dict::AF_SIGNALLING_PROTOCOL, AF_SIGNALLING_PROTOCOL_SIP));
    }
    Avp::grouped(dict::MEDIA_SUB_COMPONENT, &members)
}

/// The STR (TS 29.214 §5.6.5):
///
/// ```text
/// < Session-Id > { Origin-Host } { Origin-Realm } { Destination-Realm }
/// { Auth-Application-Id } { Termination-Cause } [ Destination-Host ]
/// ```
pub(crate) fn str(config: &RxConfig, route: &Route<'_>, cause: TerminationCause) -> Message {
    let mut m = Message::request(command::SESSION_TERMINATION, application::RX);
    m.push(Avp::utf8(dict::SESSION_ID, route.session_id));
    m.push(Avp::identity(dict::ORIGIN_HOST, &config.origin_host));
    m.push(Avp::identity(dict::ORIGIN_REALM, &config.origin_realm));
    m.push(Avp::identity(
        dict::DESTINATION_REALM,
        &config.destination_realm,
    ));
    m.push(Avp::unsigned32(dict::AUTH_APPLICATION_ID, application::RX));
    m.push(Avp::unsigned32(dict::TERMINATION_CAUSE, cause.code()));
    if let Some(host) = route.destination_host {
        m.push(Avp::identity(dict::DESTINATION_HOST, host));
    }
    m
}

/// Media-Component-Description (TS 29.214 §5.3.16):
///
/// ```text
/// { Media-Component-Number } *[ Media-Sub-Component ] [ Media-Type ]
/// [ Max-Requested-Bandwidth-UL ] [ Max-Requested-Bandwidth-DL ] [ Flow-Status ]
/// 0*2[ Codec-Data ]
/// ```
///
/// A removed component (port 0) carries only its number, type and Flow-Status REMOVED: the
/// PCRF drops all its flows (§5.3.16, "permanently disabled").
pub(crate) fn media_component_description(component: &MediaComponent, uplink: UplinkFilter) -> Avp {
    let mut members = Vec::with_capacity(6 + component.flows.len() + component.codec_data.len());
    members.push(Avp::unsigned32(
        dict::MEDIA_COMPONENT_NUMBER,
        component.number,
    ));
    if !component.removed {
        for (i, flow) in component.flows.iter().enumerate() {
            members.push(sub_component(i, flow, uplink, FLOW_USAGE_NO_INFORMATION, false));
        }
    }
    members.push(Avp::unsigned32(
        dict::MEDIA_TYPE,
        component.media_type.code(),
    ));
    if !component.removed {
        if let Some(ul) = component.bandwidth.ul {
            members.push(Avp::unsigned32(dict::MAX_REQUESTED_BANDWIDTH_UL, ul));
        }
        if let Some(dl) = component.bandwidth.dl {
            members.push(Avp::unsigned32(dict::MAX_REQUESTED_BANDWIDTH_DL, dl));
        }
    }
    members.push(Avp::unsigned32(
        dict::FLOW_STATUS,
        component.flow_status().code(),
    ));
    if !component.removed {
        for value in &component.codec_data {
            members.push(Avp::octets(dict::CODEC_DATA, value.as_bytes()));
        }
    }
    Avp::grouped(dict::MEDIA_COMPONENT_DESCRIPTION, &members)
}

/// Supported-Features (TS 29.229 §6.3.29) advertising the Rx Rel8 feature (TS 29.214 §5.4.1:
/// Feature-List-ID 1, bit 0) when a subscribed Specific-Action needs it.
fn supported_features(actions: &[SpecificAction]) -> Option<Avp> {
    const REL8: u32 = 1;
    actions.iter().any(|a| a.is_rel8()).then(|| {
        Avp::grouped(
            dict::SUPPORTED_FEATURES,
            &[
                Avp::unsigned32(dict::VENDOR_ID, dict::VENDOR_3GPP),
                Avp::unsigned32(dict::FEATURE_LIST_ID, 1),
                Avp::unsigned32(dict::FEATURE_LIST, REL8),
            ],
        )
    })
}

/// Subscription-Id (RFC 4006 §8.46): { Subscription-Id-Type } { Subscription-Id-Data }.
fn subscription_id(subscription: &Subscription) -> Avp {
    Avp::grouped(
        dict::SUBSCRIPTION_ID,
        &[
            Avp::unsigned32(dict::SUBSCRIPTION_ID_TYPE, subscription.kind.code()),
            Avp::utf8(dict::SUBSCRIPTION_ID_DATA, &subscription.data),
        ],
    )
}

/// Framed-IP-Address, the four octets of an IPv4 address (RFC 7155 §4.4.10.5.1), or
/// Framed-IPv6-Prefix (RFC 7155 §4.4.10.5.3, layout of RFC 3162 §2.3: reserved octet,
/// prefix length, prefix) carrying the whole address as a /128.
fn framed_address(ip: IpAddr) -> Avp {
    match ip.to_canonical() {
        IpAddr::V4(v4) => Avp::octets(dict::FRAMED_IP_ADDRESS, v4.octets().to_vec()),
        IpAddr::V6(v6) => {
            let mut data = Vec::with_capacity(18);
            data.push(0);
            data.push(128);
            data.extend_from_slice(&v6.octets());
            Avp::octets(dict::FRAMED_IPV6_PREFIX, data)
        }
    }
}
