//! TEST FACILITY: a small PCRF, sans-IO, for tests of the AF side. It answers AARs as told
//! (2001, a refusal, an Experimental-Result, or silence), answers STRs with 2001, records what
//! it received in decoded form, and builds RARs and ASRs on command. It keeps no policy and
//! no Gx side. The daemon's end-to-end tests run it behind an estuary-diameter responder
//! `Peer` on a TCP socket.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use estuary_diameter::dictionary::{self as dict, VENDOR_3GPP};
use estuary_diameter::message::{application, command};
use estuary_diameter::{result_code, Avp, Message, Rejection, Validator, ValueError};

use crate::rules::rx_validator;
use crate::values::{AbortCause, SpecificAction};

/// TEST FACILITY: how the [`Pcrf`] answers AARs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum AarAnswer {
    /// Result-Code 2001.
    #[default]
    Success,
    /// This Result-Code (3xxx with the E bit).
    ResultCode(u32),
    /// Experimental-Result { Vendor-Id 10415, Experimental-Result-Code } (TS 29.214 §5.5).
    Experimental(u32),
    /// No answer at all.
    Silent,
}

/// TEST FACILITY: one Media-Sub-Component as received.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SubComponentSummary {
    /// Flow-Number.
    pub flow_number: Option<u32>,
    /// Flow-Description values, in order.
    pub flow_descriptions: Vec<String>,
    /// Flow-Usage.
    pub flow_usage: Option<u32>,
    /// AF-Signalling-Protocol (signalling flows only).
    pub signalling_protocol: Option<u32>,
}

/// TEST FACILITY: one Media-Component-Description as received.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ComponentSummary {
    /// Media-Component-Number.
    pub number: Option<u32>,
    /// Media-Type.
    pub media_type: Option<u32>,
    /// Max-Requested-Bandwidth-UL.
    pub max_ul: Option<u32>,
    /// Max-Requested-Bandwidth-DL.
    pub max_dl: Option<u32>,
    /// Flow-Status.
    pub flow_status: Option<u32>,
    /// Codec-Data values, as text.
    pub codec_data: Vec<String>,
    /// Media-Sub-Components.
    pub sub_components: Vec<SubComponentSummary>,
}

/// TEST FACILITY: an AAR as received.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AarSummary {
    /// Session-Id.
    pub session_id: String,
    /// Destination-Host, if any.
    pub destination_host: Option<String>,
    /// Rx-Request-Type.
    pub request_type: Option<u32>,
    /// AF-Charging-Identifier, as text.
    pub af_charging_id: Option<String>,
    /// AF-Application-Identifier, as text.
    pub af_application_id: Option<String>,
    /// Framed-IP-Address, or the address of a /128 Framed-IPv6-Prefix.
    pub framed_ip: Option<IpAddr>,
    /// Subscription-Id (type, data) pairs.
    pub subscriptions: Vec<(u32, String)>,
    /// Specific-Action values.
    pub specific_actions: Vec<u32>,
    /// Service-URN, as text.
    pub service_urn: Option<String>,
    /// Media-Component-Descriptions.
    pub components: Vec<ComponentSummary>,
}

fn text(avp: &Avp) -> String {
    String::from_utf8_lossy(avp.as_octets()).into_owned()
}

fn u32_in(members: &[Avp], key: estuary_diameter::AvpKey) -> Option<u32> {
    members
        .iter()
        .find(|a| a.key() == key)
        .and_then(|a| a.as_u32().ok())
}

impl SubComponentSummary {
    fn decode(avp: &Avp) -> Result<SubComponentSummary, ValueError> {
        let members = avp.grouped_avps()?;
        Ok(SubComponentSummary {
            flow_number: u32_in(&members, dict::FLOW_NUMBER),
            flow_descriptions: members
                .iter()
                .filter(|a| a.key() == dict::FLOW_DESCRIPTION)
                .map(text)
                .collect(),
            flow_usage: u32_in(&members, dict::FLOW_USAGE),
            signalling_protocol: u32_in(&members, dict::AF_SIGNALLING_PROTOCOL),
        })
    }
}

impl ComponentSummary {
    fn decode(avp: &Avp) -> Result<ComponentSummary, ValueError> {
        let members = avp.grouped_avps()?;
        Ok(ComponentSummary {
            number: u32_in(&members, dict::MEDIA_COMPONENT_NUMBER),
            media_type: u32_in(&members, dict::MEDIA_TYPE),
            max_ul: u32_in(&members, dict::MAX_REQUESTED_BANDWIDTH_UL),
            max_dl: u32_in(&members, dict::MAX_REQUESTED_BANDWIDTH_DL),
            flow_status: u32_in(&members, dict::FLOW_STATUS),
            codec_data: members
                .iter()
                .filter(|a| a.key() == dict::CODEC_DATA)
                .map(text)
                .collect(),
            sub_components: members
                .iter()
                .filter(|a| a.key() == dict::MEDIA_SUB_COMPONENT)
                .map(SubComponentSummary::decode)
                .collect::<Result<_, _>>()?,
        })
    }
}

/// Framed-IP-Address (4 octets) or Framed-IPv6-Prefix (reserved, 128, 16 octets).
fn framed_ip(message: &Message) -> Option<IpAddr> {
    if let Some(avp) = message.find(dict::FRAMED_IP_ADDRESS) {
        let octets: [u8; 4] = avp.as_octets().try_into().ok()?;
        return Some(IpAddr::V4(Ipv4Addr::from(octets)));
    }
    let data = message.find(dict::FRAMED_IPV6_PREFIX)?.as_octets();
    match data {
        [_, 128, rest @ ..] => {
            let octets: [u8; 16] = rest.try_into().ok()?;
            Some(IpAddr::V6(Ipv6Addr::from(octets)))
        }
        _ => None,
    }
}

impl AarSummary {
    /// Decodes the Rx content of an AAR.
    pub fn decode(message: &Message) -> Result<AarSummary, ValueError> {
        let subscriptions = message
            .find_all(dict::SUBSCRIPTION_ID)
            .map(|s| {
                let members = s.grouped_avps()?;
                let kind = u32_in(&members, dict::SUBSCRIPTION_ID_TYPE).unwrap_or(u32::MAX);
                let data = members
                    .iter()
                    .find(|a| a.key() == dict::SUBSCRIPTION_ID_DATA)
                    .map(text)
                    .unwrap_or_default();
                Ok((kind, data))
            })
            .collect::<Result<_, ValueError>>()?;
        Ok(AarSummary {
            session_id: message.session_id().unwrap_or_default().to_string(),
            destination_host: message.find(dict::DESTINATION_HOST).map(text),
            request_type: message
                .find(dict::RX_REQUEST_TYPE)
                .and_then(|a| a.as_u32().ok()),
            af_charging_id: message.find(dict::AF_CHARGING_IDENTIFIER).map(text),
            af_application_id: message.find(dict::AF_APPLICATION_IDENTIFIER).map(text),
            framed_ip: framed_ip(message),
            subscriptions,
            specific_actions: message
                .find_all(dict::SPECIFIC_ACTION)
                .filter_map(|a| a.as_u32().ok())
                .collect(),
            service_urn: message.find(dict::SERVICE_URN).map(text),
            components: message
                .find_all(dict::MEDIA_COMPONENT_DESCRIPTION)
                .map(ComponentSummary::decode)
                .collect::<Result<_, _>>()?,
        })
    }
}

/// TEST FACILITY: an STR as received.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StrSummary {
    /// Session-Id.
    pub session_id: String,
    /// Termination-Cause.
    pub termination_cause: Option<u32>,
}

/// TEST FACILITY: a request the [`Pcrf`] accepted, in order of arrival.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Received {
    /// An AAR.
    Aar(AarSummary),
    /// An STR.
    Str(StrSummary),
}

/// The AF side of an Rx session, where RAR and ASR go.
#[derive(Clone, Debug, PartialEq, Eq)]
struct AfPeer {
    host: String,
    realm: String,
}

/// TEST FACILITY: a PCRF for tests. See the module docs.
#[derive(Debug)]
pub struct Pcrf {
    origin_host: String,
    origin_realm: String,
    aar_answer: AarAnswer,
    validator: Validator,
    sessions: BTreeMap<String, AfPeer>,
    last_af: Option<AfPeer>,
    received: Vec<Received>,
    answers: Vec<Message>,
}

impl Pcrf {
    /// A PCRF answering every AAR with 2001.
    pub fn new(origin_host: impl Into<String>, origin_realm: impl Into<String>) -> Pcrf {
        Pcrf {
            origin_host: origin_host.into(),
            origin_realm: origin_realm.into(),
            aar_answer: AarAnswer::Success,
            validator: rx_validator(),
            sessions: BTreeMap::new(),
            last_af: None,
            received: Vec::new(),
            answers: Vec::new(),
        }
    }

    /// How later AARs are answered.
    pub fn set_aar_answer(&mut self, answer: AarAnswer) {
        self.aar_answer = answer;
    }

    /// Accepted requests, in order.
    pub fn received(&self) -> &[Received] {
        &self.received
    }

    /// Accepted AARs, in order.
    pub fn aars(&self) -> impl Iterator<Item = &AarSummary> {
        self.received.iter().filter_map(|r| match r {
            Received::Aar(a) => Some(a),
            Received::Str(_) => None,
        })
    }

    /// Accepted STRs, in order.
    pub fn strs(&self) -> impl Iterator<Item = &StrSummary> {
        self.received.iter().filter_map(|r| match r {
            Received::Str(s) => Some(s),
            Received::Aar(_) => None,
        })
    }

    /// Answers (RAA, ASA) given to [`Pcrf::handle_answer`], in order.
    pub fn answers(&self) -> &[Message] {
        &self.answers
    }

    /// Whether an Rx session with this Session-Id is open here.
    pub fn has_session(&self, session_id: &str) -> bool {
        self.sessions.contains_key(session_id)
    }

    /// Open Rx sessions.
    pub fn session_ids(&self) -> impl Iterator<Item = &str> {
        self.sessions.keys().map(String::as_str)
    }

    /// An AAR or STR from the AF; returns the answer, or `None` for silence (or a message
    /// that is not a request).
    pub fn handle_request(&mut self, request: &Message) -> Option<Message> {
        if !request.is_request() {
            return None;
        }
        if let Err(rejection) = self.validator.validate(request) {
            return Some(self.reject(request, &rejection));
        }
        match (request.application_id, request.command_code) {
            (application::RX, command::AA) => self.on_aar(request),
            (application::RX, command::SESSION_TERMINATION) => Some(self.on_str(request)),
            _ => Some(self.reject(
                request,
                &Rejection::new(result_code::COMMAND_UNSUPPORTED, "not an AAR or STR"),
            )),
        }
    }

    /// An answer (RAA, ASA) to a request built by [`Pcrf::rar`] or [`Pcrf::asr`].
    pub fn handle_answer(&mut self, answer: &Message) {
        self.answers.push(answer.clone());
    }

    /// A RAR for `session_id` (TS 29.214 §5.6.3) with these Specific-Actions and one Flows AVP
    /// per media component number. Hop-by-Hop and End-to-End are zero until sent.
    pub fn rar(&self, session_id: &str, actions: &[SpecificAction], components: &[u32]) -> Message {
        let mut m = self.request_to(command::RE_AUTH, session_id);
        for action in actions {
            m.push(Avp::unsigned32(dict::SPECIFIC_ACTION, action.code()));
        }
        for number in components {
            m.push(Avp::grouped(
                dict::FLOWS,
                &[Avp::unsigned32(dict::MEDIA_COMPONENT_NUMBER, *number)],
            ));
        }
        m
    }

    /// A RAR for `session_id` reporting INDICATION_OF_OUT_OF_CREDIT (TS 29.214 §4.4.6.3) for
    /// these components, each Flows AVP carrying Final-Unit-Action `final_unit_action`
    /// (RFC 4006 §8.35: 0 TERMINATE, 1 REDIRECT, 2 RESTRICT_ACCESS).
    pub fn rar_out_of_credit(&self, session_id: &str, components: &[u32], final_unit_action: u32) -> Message {
        let mut m = self.request_to(command::RE_AUTH, session_id);
        m.push(Avp::unsigned32(
            dict::SPECIFIC_ACTION,
            SpecificAction::IndicationOfOutOfCredit.code(),
        ));
        for number in components {
            m.push(Avp::grouped(
                dict::FLOWS,
                &[
                    Avp::unsigned32(dict::MEDIA_COMPONENT_NUMBER, *number),
                    Avp::unsigned32(dict::FINAL_UNIT_ACTION, final_unit_action),
                ],
            ));
        }
        m
    }

    /// An ASR for `session_id` (TS 29.214 §5.6.7).
    pub fn asr(&self, session_id: &str, cause: AbortCause) -> Message {
        self.request_to(command::ABORT_SESSION, session_id)
            .with(Avp::unsigned32(dict::ABORT_CAUSE, cause.code()))
    }

    // ---- internals ----

    /// The common head of RAR and ASR, addressed to the session's AF.
    fn request_to(&self, command_code: u32, session_id: &str) -> Message {
        let fallback = AfPeer {
            host: "af.invalid".to_string(),
            realm: self.origin_realm.clone(),
        };
        let af = self
            .sessions
            .get(session_id)
            .or(self.last_af.as_ref())
            .unwrap_or(&fallback);
        Message::request(command_code, application::RX)
            .with(Avp::utf8(dict::SESSION_ID, session_id))
            .with(Avp::identity(dict::ORIGIN_HOST, &self.origin_host))
            .with(Avp::identity(dict::ORIGIN_REALM, &self.origin_realm))
            .with(Avp::identity(dict::DESTINATION_REALM, &af.realm))
            .with(Avp::identity(dict::DESTINATION_HOST, &af.host))
            .with(Avp::unsigned32(dict::AUTH_APPLICATION_ID, application::RX))
    }

    fn reject(&self, request: &Message, rejection: &Rejection) -> Message {
        rejection.answer(request, &self.origin_host, &self.origin_realm)
    }

    fn on_aar(&mut self, request: &Message) -> Option<Message> {
        let summary = match AarSummary::decode(request) {
            Ok(summary) => summary,
            Err(e) => {
                return Some(self.reject(
                    request,
                    &Rejection::new(result_code::INVALID_AVP_VALUE, e.to_string()),
                ))
            }
        };
        let session_id = summary.session_id.clone();
        let initial = summary.request_type != Some(1);
        self.received.push(Received::Aar(summary));
        if !initial && !self.sessions.contains_key(&session_id) {
            return Some(self.reject(
                request,
                &Rejection::new(result_code::UNKNOWN_SESSION_ID, "no such Rx session"),
            ));
        }
        let mut aaa = Message::answer_to(request)
            .with(Avp::unsigned32(dict::AUTH_APPLICATION_ID, application::RX))
            .with(Avp::identity(dict::ORIGIN_HOST, &self.origin_host))
            .with(Avp::identity(dict::ORIGIN_REALM, &self.origin_realm));
        match self.aar_answer {
            AarAnswer::Silent => return None,
            AarAnswer::Success => {
                aaa.push(Avp::unsigned32(dict::RESULT_CODE, result_code::SUCCESS));
                let af = AfPeer {
                    host: request.origin_host().unwrap_or_default().to_string(),
                    realm: request.origin_realm().unwrap_or_default().to_string(),
                };
                self.last_af = Some(af.clone());
                self.sessions.insert(session_id, af);
            }
            AarAnswer::ResultCode(code) => {
                aaa.flags.error = result_code::is_protocol_error(code);
                aaa.push(Avp::unsigned32(dict::RESULT_CODE, code));
            }
            AarAnswer::Experimental(code) => aaa.push(Avp::grouped(
                dict::EXPERIMENTAL_RESULT,
                &[
                    Avp::unsigned32(dict::VENDOR_ID, VENDOR_3GPP),
                    Avp::unsigned32(dict::EXPERIMENTAL_RESULT_CODE, code),
                ],
            )),
        }
        Some(aaa)
    }

    fn on_str(&mut self, request: &Message) -> Message {
        let session_id = request.session_id().unwrap_or_default().to_string();
        self.received.push(Received::Str(StrSummary {
            session_id: session_id.clone(),
            termination_cause: request
                .find(dict::TERMINATION_CAUSE)
                .and_then(|a| a.as_u32().ok()),
        }));
        let code = if self.sessions.remove(&session_id).is_some() {
            result_code::SUCCESS
        } else {
            result_code::UNKNOWN_SESSION_ID
        };
        Message::answer_to(request)
            .with(Avp::identity(dict::ORIGIN_HOST, &self.origin_host))
            .with(Avp::identity(dict::ORIGIN_REALM, &self.origin_realm))
            .with(Avp::unsigned32(dict::RESULT_CODE, code))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn aar(session_id: &str, request_type: u32) -> Message {
        Message::request(command::AA, application::RX)
            .with(Avp::utf8(dict::SESSION_ID, session_id))
            .with(Avp::unsigned32(dict::AUTH_APPLICATION_ID, application::RX))
            .with(Avp::identity(dict::ORIGIN_HOST, "af.test"))
            .with(Avp::identity(dict::ORIGIN_REALM, "test"))
            .with(Avp::identity(dict::DESTINATION_REALM, "test"))
            .with(Avp::octets(dict::FRAMED_IP_ADDRESS, vec![192, 0, 2, 1]))
            .with(Avp::unsigned32(dict::RX_REQUEST_TYPE, request_type))
    }

    #[test]
    fn answers_aar_and_addresses_rar_to_the_af() {
        let mut pcrf = Pcrf::new("pcrf.test", "test");
        let aaa = pcrf.handle_request(&aar("af.test;1;1", 0)).unwrap();
        assert_eq!(aaa.result_code(), Some(2001));
        assert_eq!(aaa.session_id(), Some("af.test;1;1"));
        assert!(pcrf.has_session("af.test;1;1"));
        let summary = pcrf.aars().next().unwrap();
        assert_eq!(summary.framed_ip, Some("192.0.2.1".parse().unwrap()));
        let rar = pcrf.rar(
            "af.test;1;1",
            &[SpecificAction::IndicationOfLossOfBearer],
            &[3],
        );
        assert_eq!(
            rar.find(dict::DESTINATION_HOST).map(|a| a.data.clone()),
            Some(b"af.test".to_vec())
        );
        assert_eq!(rar_validates(&rar), Ok(()));
        let asr = pcrf.asr("af.test;1;1", AbortCause::PsToCsHandover);
        assert_eq!(rar_validates(&asr), Ok(()));
        assert_eq!(asr.find(dict::ABORT_CAUSE).unwrap().as_u32(), Ok(3));
    }

    fn rar_validates(m: &Message) -> Result<(), u32> {
        rx_validator()
            .validate(m)
            .map(|_| ())
            .map_err(|r| r.result_code)
    }

    #[test]
    fn refusals_and_unknown_sessions() {
        let mut pcrf = Pcrf::new("pcrf.test", "test");
        let mut broken = aar("af.test;1;2", 0);
        broken.avps.retain(|a| a.key() != dict::DESTINATION_REALM);
        assert_eq!(
            pcrf.handle_request(&broken).unwrap().result_code(),
            Some(5005)
        );
        assert_eq!(
            pcrf.received().len(),
            0,
            "invalid requests are not recorded"
        );
        assert_eq!(
            pcrf.handle_request(&aar("af.test;1;3", 1))
                .unwrap()
                .result_code(),
            Some(5002),
            "an update for no session"
        );
        pcrf.set_aar_answer(AarAnswer::ResultCode(3004));
        let busy = pcrf.handle_request(&aar("af.test;1;4", 0)).unwrap();
        assert!(busy.flags.error);
        assert!(!pcrf.has_session("af.test;1;4"));
        pcrf.set_aar_answer(AarAnswer::Silent);
        assert_eq!(pcrf.handle_request(&aar("af.test;1;5", 0)), None);
        assert_eq!(pcrf.aars().count(), 3);
    }
}
