//! The input model: what the gateway knows about one call's media, in plain types the Rx
//! encoder maps onto Media-Component-Description AVPs (TS 29.214 §5.3.16, TS 29.213 §6.2).
//!
//! "UE" throughout is the browser: directions are seen from it, "uplink" is browser → network
//! and "downlink" network → browser.

use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddr};

use crate::error::ParamError;

/// Media-Type values (TS 29.214 §5.3.19).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MediaType {
    /// AUDIO (0).
    Audio,
    /// VIDEO (1).
    Video,
    /// DATA (2).
    Data,
    /// APPLICATION (3).
    Application,
    /// CONTROL (4).
    Control,
    /// TEXT (5).
    Text,
    /// MESSAGE (6).
    Message,
    /// OTHER (0xFFFFFFFF).
    Other,
}

impl MediaType {
    /// The enumerated value on the wire.
    pub fn code(self) -> u32 {
        match self {
            MediaType::Audio => 0,
            MediaType::Video => 1,
            MediaType::Data => 2,
            MediaType::Application => 3,
            MediaType::Control => 4,
            MediaType::Text => 5,
            MediaType::Message => 6,
            MediaType::Other => 0xffff_ffff,
        }
    }

    /// From the SDP media name of an "m=" line (TS 29.213 §6.2: "audio", "video", ...).
    pub fn from_sdp_media(media: &str) -> MediaType {
        match media.to_ascii_lowercase().as_str() {
            "audio" => MediaType::Audio,
            "video" => MediaType::Video,
            "data" => MediaType::Data,
            "application" => MediaType::Application,
            "control" => MediaType::Control,
            "text" => MediaType::Text,
            "message" => MediaType::Message,
            _ => MediaType::Other,
        }
    }
}

/// The SDP direction attribute of a media line, as seen from the UE (the browser).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Direction {
    /// a=sendrecv (or none).
    #[default]
    SendRecv,
    /// a=sendonly: the UE sends, receives nothing.
    SendOnly,
    /// a=recvonly: the UE receives, sends nothing.
    RecvOnly,
    /// a=inactive (hold).
    Inactive,
}

/// Flow-Status values (TS 29.214 §5.3.11).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FlowStatus {
    /// ENABLED-UPLINK (0): uplink enabled, downlink disabled.
    EnabledUplink,
    /// ENABLED-DOWNLINK (1): downlink enabled, uplink disabled.
    EnabledDownlink,
    /// ENABLED (2): both directions.
    Enabled,
    /// DISABLED (3): neither direction.
    Disabled,
    /// REMOVED (4): filters removed, no longer counted for the authorized QoS.
    Removed,
}

impl FlowStatus {
    /// The enumerated value on the wire.
    pub fn code(self) -> u32 {
        match self {
            FlowStatus::EnabledUplink => 0,
            FlowStatus::EnabledDownlink => 1,
            FlowStatus::Enabled => 2,
            FlowStatus::Disabled => 3,
            FlowStatus::Removed => 4,
        }
    }
}

/// Requested bandwidth in bit/s (Max-Requested-Bandwidth-UL/DL, TS 29.214 §5.3.14/15).
/// TS 29.213 §6.2 derives it from b=AS (kbit/s × 1000); otherwise the caller estimates it
/// from the codec. `None` leaves the AVP out.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Bandwidth {
    /// Uplink (UE → network), bit/s.
    pub ul: Option<u32>,
    /// Downlink (network → UE), bit/s.
    pub dl: Option<u32>,
}

/// How the uplink Flow-Description is written (TS 29.214 §5.3.8).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum UplinkFilter {
    /// "permit in ... from UE to network": §5.3.8 from Rel-8 on ("The direction "in" refers
    /// to uplink IP flows, and the direction "out" refers to downlink IP flows").
    #[default]
    In,
    /// "permit out ... from UE to network": the Rel-6/7 convention (TS 29.209 Gq) where only
    /// "out" was used and source and destination told the direction. For old PCRFs only.
    Out,
}

/// One 5-tuple between the browser and the gateway. With BUNDLE and rtcp-mux, RTP and RTCP
/// of every m-line share it, so a component has one flow and one Media-Sub-Component.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct IpFlow {
    /// The browser's address:port as the gateway sees it (ICE-selected).
    pub ue: SocketAddr,
    /// The gateway's browser-facing media address:port.
    pub network: SocketAddr,
    /// IP protocol number: 17 (UDP) for RTP.
    pub protocol: u8,
}

/// IPv4-mapped IPv6 addresses as plain IPv4, so a dual-stack socket's view matches.
fn canonical(addr: SocketAddr) -> (IpAddr, u16) {
    (addr.ip().to_canonical(), addr.port())
}

impl IpFlow {
    /// A UDP flow.
    pub fn udp(ue: SocketAddr, network: SocketAddr) -> IpFlow {
        IpFlow {
            ue,
            network,
            protocol: 17,
        }
    }

    /// A TCP flow: the signalling connection of a registered UE (SIP over WebSocket).
    pub fn tcp(ue: SocketAddr, network: SocketAddr) -> IpFlow {
        IpFlow {
            ue,
            network,
            protocol: 6,
        }
    }

    /// Whether both ends are of the same address family (after unmapping IPv4-mapped IPv6).
    pub fn is_consistent(&self) -> bool {
        canonical(self.ue).0.is_ipv4() == canonical(self.network).0.is_ipv4()
    }

    /// The downlink filter (network → UE): "permit out P from NET NPORT to UE UPORT".
    ///
    /// RFC 6733 §4.3.1 IPFilterRule: addresses are bare dotted-quad or canonical IPv6 text
    /// (no brackets), each followed by its port.
    pub fn downlink_description(&self) -> String {
        rule("out", self.protocol, self.network, self.ue)
    }

    /// The uplink filter (UE → network): "permit in P from UE UPORT to NET NPORT", or with
    /// "out" for [`UplinkFilter::Out`].
    pub fn uplink_description(&self, style: UplinkFilter) -> String {
        let dir = match style {
            UplinkFilter::In => "in",
            UplinkFilter::Out => "out",
        };
        rule(dir, self.protocol, self.ue, self.network)
    }
}

fn rule(dir: &str, protocol: u8, from: SocketAddr, to: SocketAddr) -> String {
    let (from_ip, from_port) = canonical(from);
    let (to_ip, to_port) = canonical(to);
    let mut s = String::with_capacity(64);
    // Writing to a String cannot fail.
    let _ = write!(
        s,
        "permit {dir} {protocol} from {from_ip} {from_port} to {to_ip} {to_port}"
    );
    s
}

/// One media component: one SDP m-line (TS 29.214 §5.3.16).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MediaComponent {
    /// Media-Component-Number: the m-line's index + 1 (TS 29.214 Annex B; 0 is reserved for
    /// AF signalling).
    pub number: u32,
    /// Media-Type.
    pub media_type: MediaType,
    /// The direction, seen from the UE.
    pub direction: Direction,
    /// Max-Requested-Bandwidth-UL/DL.
    pub bandwidth: Bandwidth,
    /// Codec-Data values, at most two (offer and answer, TS 29.214 §5.3.16); build them with
    /// [`codec_data`].
    pub codec_data: Vec<String>,
    /// The flows; each becomes a Media-Sub-Component numbered from 1.
    pub flows: Vec<IpFlow>,
    /// The m-line has port 0: Flow-Status REMOVED (TS 29.213 §6.2).
    pub removed: bool,
}

impl MediaComponent {
    /// Flow-Status for this component (TS 29.213 §6.2, TS 29.214 §5.3.11): port 0 → REMOVED;
    /// otherwise from the UE's direction attribute: sendrecv → ENABLED, sendonly (the UE
    /// sends) → ENABLED-UPLINK, recvonly → ENABLED-DOWNLINK, inactive → DISABLED.
    pub fn flow_status(&self) -> FlowStatus {
        if self.removed {
            return FlowStatus::Removed;
        }
        match self.direction {
            Direction::SendRecv => FlowStatus::Enabled,
            Direction::SendOnly => FlowStatus::EnabledUplink,
            Direction::RecvOnly => FlowStatus::EnabledDownlink,
            Direction::Inactive => FlowStatus::Disabled,
        }
    }
}

/// Subscription-Id-Type values (RFC 4006 §8.47).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SubscriptionKind {
    /// END_USER_E164 (0): a tel: number in international form.
    E164,
    /// END_USER_IMSI (1).
    Imsi,
    /// END_USER_SIP_URI (2): the registered public identity.
    SipUri,
    /// END_USER_NAI (3).
    Nai,
    /// END_USER_PRIVATE (4).
    Private,
}

impl SubscriptionKind {
    /// The enumerated value on the wire.
    pub fn code(self) -> u32 {
        match self {
            SubscriptionKind::E164 => 0,
            SubscriptionKind::Imsi => 1,
            SubscriptionKind::SipUri => 2,
            SubscriptionKind::Nai => 3,
            SubscriptionKind::Private => 4,
        }
    }
}

/// The subscriber (Subscription-Id, RFC 4006 §8.46, used by TS 29.214 §5.6.1).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Subscription {
    /// Subscription-Id-Type.
    pub kind: SubscriptionKind,
    /// Subscription-Id-Data, e.g. "sip:alice@ims.example".
    pub data: String,
}

/// Everything one AAR describes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SessionParams {
    /// AF-Charging-Identifier: the ICID of the P-Charging-Vector (TS 29.214 §5.3.6).
    pub af_charging_id: String,
    /// The registered public identity.
    pub subscription: Option<Subscription>,
    /// The browser's address as the gateway saw it: Framed-IP-Address (IPv4) or
    /// Framed-IPv6-Prefix (IPv6, sent as a /128). Only the initial AAR carries it.
    pub framed_ip: IpAddr,
    /// AF-Application-Identifier (TS 29.214 §5.3.5), if the operator wants one.
    pub af_application_id: Option<String>,
    /// The media components, one per m-line.
    pub components: Vec<MediaComponent>,
    /// Service-URN (TS 29.214 §5.3.23) for emergency sessions. Only the initial AAR carries it.
    pub service_urn: Option<String>,
}

impl SessionParams {
    /// Checks what the encoder relies on.
    pub fn validate(&self) -> Result<(), ParamError> {
        if self.af_charging_id.is_empty() {
            return Err(ParamError::EmptyChargingId);
        }
        for (i, component) in self.components.iter().enumerate() {
            if component.number == 0 {
                return Err(ParamError::ZeroComponentNumber);
            }
            if self.components[..i]
                .iter()
                .any(|c| c.number == component.number)
            {
                return Err(ParamError::DuplicateComponentNumber(component.number));
            }
            if component.codec_data.len() > 2 {
                return Err(ParamError::TooManyCodecData {
                    component: component.number,
                    count: component.codec_data.len(),
                });
            }
            if component.flows.iter().any(|f| !f.is_consistent()) {
                return Err(ParamError::MixedAddressFamilies {
                    component: component.number,
                });
            }
        }
        Ok(())
    }
}

/// The signalling path of a registered UE (TS 29.214 §4.4.5a, provisioning of AF signalling
/// flow information): sent as Media-Component-Number 0 whose sub-components have Flow-Usage
/// AF_SIGNALLING, so the PCRF can give the SIP connection its own QoS and report its loss.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SignallingParams {
    /// The registered public identity.
    pub subscription: Option<Subscription>,
    /// The UE's address as the AF saw it (Framed-IP-Address or Framed-IPv6-Prefix).
    pub framed_ip: IpAddr,
    /// The signalling flows, UE ⇄ AF; for SIP over WebSocket one TCP connection.
    pub flows: Vec<IpFlow>,
}

impl SignallingParams {
    /// Checks what the encoder relies on: at least one flow, each of one address family.
    pub fn validate(&self) -> Result<(), ParamError> {
        if self.flows.is_empty() {
            return Err(ParamError::NoSignallingFlow);
        }
        if self.flows.iter().any(|f| !f.is_consistent()) {
            return Err(ParamError::MixedAddressFamilies { component: 0 });
        }
        Ok(())
    }
}

/// Whose SDP a Codec-Data value carries (its first line, TS 29.214 §5.3.7).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SdpSource {
    /// "uplink": the SDP was received from the UE and sent to the network.
    Uplink,
    /// "downlink": the SDP was received from the network and sent to the UE.
    Downlink,
}

/// Which SDP a Codec-Data value carries (its second line, TS 29.214 §5.3.7).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SdpRole {
    /// "offer" (RFC 3264).
    Offer,
    /// "answer" (RFC 3264).
    Answer,
    /// "description": SDP outside offer/answer.
    Description,
}

/// Builds a Codec-Data value (TS 29.214 §5.3.7): "uplink"/"downlink", then
/// "offer"/"answer"/"description", then the m-line and its "a=" and "b=" lines, separated by
/// new-line characters.
///
/// `media_lines` are one media section as it appears in the SDP, m-line first; line endings
/// are stripped. Lines other than "a=" and "b=" (c=, i=, k=) are left out, and so are those
/// the clause says need not be repeated: a=sendrecv, a=sendonly, a=recvonly, a=inactive,
/// a=bw-info, b=AS, b=RS and b=RR.
pub fn codec_data<I, S>(
    source: SdpSource,
    role: SdpRole,
    media_lines: I,
) -> Result<String, ParamError>
where
    I: IntoIterator<Item = S>,
    S: AsRef<str>,
{
    let mut out = String::from(match source {
        SdpSource::Uplink => "uplink\n",
        SdpSource::Downlink => "downlink\n",
    });
    out.push_str(match role {
        SdpRole::Offer => "offer\n",
        SdpRole::Answer => "answer\n",
        SdpRole::Description => "description\n",
    });
    let mut lines = media_lines
        .into_iter()
        .map(|l| l.as_ref().trim_end_matches(['\r', '\n']).to_string())
        .filter(|l| !l.is_empty());
    match lines.next() {
        Some(m) if m.starts_with("m=") => out.push_str(&m),
        _ => return Err(ParamError::CodecDataWithoutMLine),
    }
    for line in lines {
        if is_codec_line(&line) {
            out.push('\n');
            out.push_str(&line);
        }
    }
    Ok(out)
}

fn is_codec_line(line: &str) -> bool {
    const REDUNDANT: [&str; 8] = [
        "a=sendrecv",
        "a=sendonly",
        "a=recvonly",
        "a=inactive",
        "a=bw-info",
        "b=AS:",
        "b=RS:",
        "b=RR:",
    ];
    (line.starts_with("a=") || line.starts_with("b="))
        && !REDUNDANT.iter().any(|r| line.starts_with(r))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sa(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn flow_descriptions_follow_ts_29_214_5_3_8() {
        let flow = IpFlow::udp(sa("192.0.2.1:49152"), sa("198.51.100.7:40000"));
        assert_eq!(
            flow.downlink_description(),
            "permit out 17 from 198.51.100.7 40000 to 192.0.2.1 49152"
        );
        assert_eq!(
            flow.uplink_description(UplinkFilter::In),
            "permit in 17 from 192.0.2.1 49152 to 198.51.100.7 40000"
        );
        assert_eq!(
            flow.uplink_description(UplinkFilter::Out),
            "permit out 17 from 192.0.2.1 49152 to 198.51.100.7 40000"
        );
    }

    #[test]
    fn ipv6_rules_are_bare_canonical_text_and_mapped_v4_is_unmapped() {
        let flow = IpFlow::udp(sa("[2001:db8:0:0::1]:5000"), sa("[2001:DB8::a]:6000"));
        assert_eq!(
            flow.downlink_description(),
            "permit out 17 from 2001:db8::a 6000 to 2001:db8::1 5000"
        );
        let mapped = IpFlow::udp(sa("[::ffff:192.0.2.1]:5000"), sa("198.51.100.7:6000"));
        assert!(mapped.is_consistent());
        assert_eq!(
            mapped.uplink_description(UplinkFilter::In),
            "permit in 17 from 192.0.2.1 5000 to 198.51.100.7 6000"
        );
        let mixed = IpFlow::udp(sa("[2001:db8::1]:5000"), sa("198.51.100.7:6000"));
        assert!(!mixed.is_consistent());
    }

    #[test]
    fn flow_status_per_direction() {
        let mut c = MediaComponent {
            number: 1,
            media_type: MediaType::Audio,
            direction: Direction::SendRecv,
            bandwidth: Bandwidth::default(),
            codec_data: Vec::new(),
            flows: Vec::new(),
            removed: false,
        };
        let cases = [
            (Direction::SendRecv, FlowStatus::Enabled, 2),
            (Direction::SendOnly, FlowStatus::EnabledUplink, 0),
            (Direction::RecvOnly, FlowStatus::EnabledDownlink, 1),
            (Direction::Inactive, FlowStatus::Disabled, 3),
        ];
        for (direction, status, code) in cases {
            c.direction = direction;
            assert_eq!(c.flow_status(), status);
            assert_eq!(status.code(), code);
        }
        c.removed = true;
        assert_eq!(c.flow_status(), FlowStatus::Removed);
        assert_eq!(FlowStatus::Removed.code(), 4);
    }

    #[test]
    fn codec_data_lines() {
        let section = "m=audio 49152 UDP/TLS/RTP/SAVPF 111 0\r\nc=IN IP4 192.0.2.1\r\nb=AS:64\r\nb=TIAS:64000\r\na=rtpmap:111 opus/48000/2\r\na=sendrecv\r\na=fmtp:111 minptime=10\r\n";
        let value = codec_data(SdpSource::Uplink, SdpRole::Offer, section.lines()).unwrap();
        assert_eq!(
            value,
            "uplink\noffer\nm=audio 49152 UDP/TLS/RTP/SAVPF 111 0\nb=TIAS:64000\na=rtpmap:111 opus/48000/2\na=fmtp:111 minptime=10"
        );
        let answer = codec_data(
            SdpSource::Downlink,
            SdpRole::Answer,
            ["m=audio 0 RTP/AVP 0"],
        );
        assert_eq!(answer.unwrap(), "downlink\nanswer\nm=audio 0 RTP/AVP 0");
        let described = codec_data(
            SdpSource::Downlink,
            SdpRole::Description,
            ["m=text 1 RTP/AVP 98"],
        );
        assert!(described.unwrap().starts_with("downlink\ndescription\n"));
        assert_eq!(
            codec_data(SdpSource::Uplink, SdpRole::Offer, ["a=rtpmap:0 PCMU/8000"]),
            Err(ParamError::CodecDataWithoutMLine)
        );
        assert_eq!(
            codec_data(SdpSource::Uplink, SdpRole::Offer, Vec::<String>::new()),
            Err(ParamError::CodecDataWithoutMLine)
        );
    }

    #[test]
    fn media_types_from_sdp() {
        assert_eq!(MediaType::from_sdp_media("audio").code(), 0);
        assert_eq!(MediaType::from_sdp_media("VIDEO").code(), 1);
        assert_eq!(
            MediaType::from_sdp_media("application"),
            MediaType::Application
        );
        assert_eq!(MediaType::from_sdp_media("image"), MediaType::Other);
        assert_eq!(MediaType::Other.code(), u32::MAX);
    }
}
