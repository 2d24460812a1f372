//! Checking a received message against the dictionary and per-command required AVPs
//! (RFC 6733 §4.1, §6.2, §7), producing the error answer to send when it fails.
//!
//! Rules are tables of [`CommandRule`]: the base protocol's are [`BASE_RULES`]; an application
//! crate (Rx) adds its own with [`Validator::with_rules`]. Checks, in order:
//!
//! 1. every AVP, recursing into known Grouped AVPs: unknown with M set → 5001
//!    DIAMETER_AVP_UNSUPPORTED; known with a length wrong for its type → 5014
//!    DIAMETER_INVALID_AVP_LENGTH; known text type that is not UTF-8 → 5004
//!    DIAMETER_INVALID_AVP_VALUE. Unknown AVPs without M are kept and listed.
//! 2. every AVP the command requires is present at top level → else 5005
//!    DIAMETER_MISSING_AVP with an example of the missing AVP.
//!
//! The M-bit "must not" rule is not enforced on receipt: peers disagree on it for newer 3GPP
//! AVPs, and rejecting would break calls for no gain.

use crate::avp::{Avp, AvpKey};
use crate::dictionary::{self as dict, DataFault, DataType, Dictionary};
use crate::error::DecodeError;
use crate::message::{application, command, Message};
use crate::result_code;

/// How deep the validator follows nested Grouped AVPs; deeper content is not checked (it
/// stays opaque, as unknown content would).
pub const MAX_GROUP_DEPTH: usize = 8;

/// The AVPs one command requires at top level.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CommandRule {
    /// Application-Id of the command.
    pub application_id: u32,
    /// Command Code.
    pub command_code: u32,
    /// Whether this is the request (true) or answer (false) rule.
    pub request: bool,
    /// AVPs that must be present (the `{ }` and `< >` entries of the command's ABNF).
    pub required: &'static [AvpKey],
}

const fn base_rule(command_code: u32, request: bool, required: &'static [AvpKey]) -> CommandRule {
    CommandRule {
        application_id: application::COMMON,
        command_code,
        request,
        required,
    }
}

/// The base protocol's commands (RFC 6733 §5.3.1, §5.3.2, §5.4.1, §5.4.2, §5.5.1, §5.5.2).
pub static BASE_RULES: &[CommandRule] = &[
    base_rule(
        command::CAPABILITIES_EXCHANGE,
        true,
        &[
            dict::ORIGIN_HOST,
            dict::ORIGIN_REALM,
            dict::HOST_IP_ADDRESS,
            dict::VENDOR_ID,
            dict::PRODUCT_NAME,
        ],
    ),
    base_rule(
        command::CAPABILITIES_EXCHANGE,
        false,
        &[
            dict::RESULT_CODE,
            dict::ORIGIN_HOST,
            dict::ORIGIN_REALM,
            dict::HOST_IP_ADDRESS,
            dict::VENDOR_ID,
            dict::PRODUCT_NAME,
        ],
    ),
    base_rule(
        command::DEVICE_WATCHDOG,
        true,
        &[dict::ORIGIN_HOST, dict::ORIGIN_REALM],
    ),
    base_rule(
        command::DEVICE_WATCHDOG,
        false,
        &[dict::RESULT_CODE, dict::ORIGIN_HOST, dict::ORIGIN_REALM],
    ),
    base_rule(
        command::DISCONNECT_PEER,
        true,
        &[
            dict::ORIGIN_HOST,
            dict::ORIGIN_REALM,
            dict::DISCONNECT_CAUSE,
        ],
    ),
    base_rule(
        command::DISCONNECT_PEER,
        false,
        &[dict::RESULT_CODE, dict::ORIGIN_HOST, dict::ORIGIN_REALM],
    ),
];

/// What an answer with the E bit set must carry, whatever its command (RFC 6733 §7.2).
const ERROR_ANSWER_REQUIRED: &[AvpKey] =
    &[dict::RESULT_CODE, dict::ORIGIN_HOST, dict::ORIGIN_REALM];

/// A message that passed: the unknown, non-mandatory AVPs it carried (for logging).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Accepted {
    /// Keys of AVPs the dictionary does not know and whose M bit was clear.
    pub unknown_avps: Vec<AvpKey>,
}

/// Why a message is refused, and what goes into the error answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rejection {
    /// The Result-Code of the answer.
    pub result_code: u32,
    /// The Failed-AVP content: the offending AVP, or an example of the missing one.
    pub failed_avp: Option<Avp>,
    /// Human-readable detail for Error-Message.
    pub error_message: String,
}

impl Rejection {
    /// A rejection without Failed-AVP (e.g. 3001, 3007).
    pub fn new(result_code: u32, error_message: impl Into<String>) -> Rejection {
        Rejection {
            result_code,
            failed_avp: None,
            error_message: error_message.into(),
        }
    }

    /// The rejection for a decode fault found by [`Message::decode_partial`].
    pub fn from_decode_error(error: &DecodeError, dictionary: &Dictionary) -> Rejection {
        Rejection {
            result_code: error.result_code(),
            failed_avp: error.failed_avp(dictionary),
            error_message: error.to_string(),
        }
    }

    /// Whether the answer is a protocol error and carries the E bit (RFC 6733 §7.1.3).
    pub fn is_protocol_error(&self) -> bool {
        result_code::is_protocol_error(self.result_code)
    }

    /// The answer to `request` (RFC 6733 §7.2): Session-Id and Proxy-Info copied, then
    /// Origin-Host, Origin-Realm, Result-Code, Error-Message and Failed-AVP; E set for 3xxx.
    pub fn answer(&self, request: &Message, origin_host: &str, origin_realm: &str) -> Message {
        let mut answer = Message::answer_to(request);
        answer.flags.error = self.is_protocol_error();
        answer.push(Avp::identity(dict::ORIGIN_HOST, origin_host));
        answer.push(Avp::identity(dict::ORIGIN_REALM, origin_realm));
        answer.push(Avp::unsigned32(dict::RESULT_CODE, self.result_code));
        if !self.error_message.is_empty() {
            answer.push(Avp::utf8(dict::ERROR_MESSAGE, &self.error_message));
        }
        if let Some(failed) = &self.failed_avp {
            answer.push(Avp::grouped(dict::FAILED_AVP, std::slice::from_ref(failed)));
        }
        answer
    }
}

/// A dictionary plus command rules.
#[derive(Clone, Debug)]
pub struct Validator {
    dictionary: Dictionary,
    rules: Vec<&'static [CommandRule]>,
}

impl Default for Validator {
    fn default() -> Self {
        Validator::base()
    }
}

impl Validator {
    /// The standard dictionary and [`BASE_RULES`].
    pub fn base() -> Validator {
        Validator {
            dictionary: Dictionary::standard().clone(),
            rules: vec![BASE_RULES],
        }
    }

    /// Adds a rule table; later tables take precedence for the same command.
    #[must_use]
    pub fn with_rules(mut self, rules: &'static [CommandRule]) -> Validator {
        self.rules.push(rules);
        self
    }

    /// Replaces the dictionary (e.g. one extended with [`Dictionary::with_table`]).
    #[must_use]
    pub fn with_dictionary(mut self, dictionary: Dictionary) -> Validator {
        self.dictionary = dictionary;
        self
    }

    /// The dictionary in use.
    pub fn dictionary(&self) -> &Dictionary {
        &self.dictionary
    }

    /// The rule for a command, if any table has one.
    pub fn rule(
        &self,
        application_id: u32,
        command_code: u32,
        request: bool,
    ) -> Option<&CommandRule> {
        self.rules.iter().rev().find_map(|table| {
            table.iter().find(|r| {
                r.application_id == application_id
                    && r.command_code == command_code
                    && r.request == request
            })
        })
    }

    /// Checks `message` (see the module docs for the order of checks).
    pub fn validate(&self, message: &Message) -> Result<Accepted, Rejection> {
        let mut accepted = Accepted::default();
        for avp in &message.avps {
            self.check_avp(avp, 0, &mut accepted.unknown_avps)?;
        }
        let required = if !message.flags.request && message.flags.error {
            ERROR_ANSWER_REQUIRED
        } else {
            match self.rule(
                message.application_id,
                message.command_code,
                message.flags.request,
            ) {
                Some(rule) => rule.required,
                None => &[],
            }
        };
        if let Some(missing) = required.iter().find(|key| message.find(**key).is_none()) {
            let example = match self.dictionary.lookup(*missing) {
                Some(def) => def.example(),
                None => Avp::new(*missing, Vec::new()),
            };
            let name = self.dictionary.lookup(*missing).map_or("AVP", |d| d.name);
            return Err(Rejection {
                result_code: result_code::MISSING_AVP,
                failed_avp: Some(example),
                error_message: format!("missing {name} ({})", missing.code),
            });
        }
        Ok(accepted)
    }

    fn check_avp(
        &self,
        avp: &Avp,
        depth: usize,
        unknown: &mut Vec<AvpKey>,
    ) -> Result<(), Rejection> {
        let Some(def) = self.dictionary.lookup(avp.key()) else {
            if avp.mandatory {
                return Err(Rejection {
                    result_code: result_code::AVP_UNSUPPORTED,
                    failed_avp: Some(avp.clone()),
                    error_message: format!(
                        "AVP {} (vendor {}) is not supported",
                        avp.code,
                        avp.vendor.unwrap_or(0)
                    ),
                });
            }
            unknown.push(avp.key());
            return Ok(());
        };
        if def.data_type == DataType::Grouped {
            // Failed-AVP holds whatever another node could not handle: never judge it.
            if depth >= MAX_GROUP_DEPTH || def.key == dict::FAILED_AVP {
                return Ok(());
            }
            for member in avp.iter_grouped() {
                let checked = match member {
                    Ok(member) => self.check_avp(&member, depth + 1, unknown),
                    Err(e) => Err(Rejection::from_decode_error(&e, &self.dictionary)),
                };
                if let Err(mut rejection) = checked {
                    // RFC 6733 §7.5: the Failed-AVP may hold the grouped AVP wrapping only the
                    // offending member.
                    rejection.failed_avp = rejection.failed_avp.map(|inner| wrap_in(avp, inner));
                    return Err(rejection);
                }
            }
            return Ok(());
        }
        match def.data_type.check(&avp.data) {
            Ok(()) => Ok(()),
            Err(DataFault::Length) => Err(Rejection {
                result_code: result_code::INVALID_AVP_LENGTH,
                failed_avp: Some(avp.clone()),
                error_message: format!(
                    "{} has {} bytes of data, expected {}",
                    def.name,
                    avp.data.len(),
                    def.data_type.length_rule()
                ),
            }),
            Err(DataFault::Value) => Err(Rejection {
                result_code: result_code::INVALID_AVP_VALUE,
                failed_avp: Some(avp.clone()),
                error_message: format!("{} is not valid UTF-8", def.name),
            }),
        }
    }
}

/// `parent`'s header around `inner` alone.
fn wrap_in(parent: &Avp, inner: Avp) -> Avp {
    let mut data = Vec::with_capacity(inner.padded_len());
    inner.encode(&mut data);
    Avp {
        code: parent.code,
        vendor: parent.vendor,
        mandatory: parent.mandatory,
        protected: parent.protected,
        data,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dictionary::VENDOR_3GPP;

    fn dwr() -> Message {
        Message::request(command::DEVICE_WATCHDOG, application::COMMON)
            .with(Avp::identity(dict::ORIGIN_HOST, "pcrf.example"))
            .with(Avp::identity(dict::ORIGIN_REALM, "example"))
    }

    #[test]
    fn valid_dwr_passes_and_unknown_optional_avps_are_listed() {
        let m = dwr().with(Avp::octets(AvpKey::vendor(9999, 1), vec![1]).with_mandatory(false));
        let accepted = Validator::base().validate(&m).unwrap();
        assert_eq!(accepted.unknown_avps, [AvpKey::vendor(9999, 1)]);
    }

    #[test]
    fn unknown_mandatory_avp_is_5001_with_failed_avp() {
        let odd = Avp::octets(AvpKey::vendor(9999, 1), vec![1, 2]).with_mandatory(true);
        let m = dwr().with(odd.clone());
        let r = Validator::base().validate(&m).unwrap_err();
        assert_eq!(r.result_code, result_code::AVP_UNSUPPORTED);
        assert_eq!(r.failed_avp, Some(odd));
        assert!(!r.is_protocol_error());
    }

    #[test]
    fn missing_origin_host_is_5005_with_an_example() {
        let m = Message::request(command::DEVICE_WATCHDOG, application::COMMON)
            .with(Avp::identity(dict::ORIGIN_REALM, "example"));
        let r = Validator::base().validate(&m).unwrap_err();
        assert_eq!(r.result_code, result_code::MISSING_AVP);
        let failed = r.failed_avp.clone().unwrap();
        assert_eq!(failed.key(), dict::ORIGIN_HOST);
        assert!(failed.mandatory);
        let answer = r.answer(&m, "us", "realm");
        assert!(!answer.flags.error);
        assert_eq!(answer.result_code(), Some(5005));
        let inner = answer
            .find(dict::FAILED_AVP)
            .unwrap()
            .grouped_avps()
            .unwrap();
        assert_eq!(inner, [failed]);
    }

    #[test]
    fn missing_disconnect_cause_example_is_four_zero_bytes() {
        let m = Message::request(command::DISCONNECT_PEER, application::COMMON)
            .with(Avp::identity(dict::ORIGIN_HOST, "h"))
            .with(Avp::identity(dict::ORIGIN_REALM, "r"));
        let r = Validator::base().validate(&m).unwrap_err();
        assert_eq!(r.failed_avp.unwrap().data, [0, 0, 0, 0]);
    }

    #[test]
    fn wrong_length_is_5014() {
        let bad = Avp::octets(dict::ORIGIN_STATE_ID, vec![0, 0, 1]);
        let r = Validator::base()
            .validate(&dwr().with(bad.clone()))
            .unwrap_err();
        assert_eq!(r.result_code, result_code::INVALID_AVP_LENGTH);
        assert_eq!(r.failed_avp, Some(bad));
    }

    #[test]
    fn nested_faults_are_reported_inside_their_group() {
        let odd = Avp::octets(AvpKey::vendor(4444, VENDOR_3GPP), vec![]).with_mandatory(true);
        let sub = Avp::grouped(
            dict::MEDIA_SUB_COMPONENT,
            &[Avp::unsigned32(dict::FLOW_NUMBER, 1), odd.clone()],
        );
        let mcd = Avp::grouped(
            dict::MEDIA_COMPONENT_DESCRIPTION,
            &[Avp::unsigned32(dict::MEDIA_COMPONENT_NUMBER, 1), sub],
        );
        let r = Validator::base().validate(&dwr().with(mcd)).unwrap_err();
        assert_eq!(r.result_code, result_code::AVP_UNSUPPORTED);
        let outer = r.failed_avp.unwrap();
        assert_eq!(outer.key(), dict::MEDIA_COMPONENT_DESCRIPTION);
        let middle = outer.grouped_avps().unwrap();
        assert_eq!(middle.len(), 1);
        assert_eq!(middle[0].key(), dict::MEDIA_SUB_COMPONENT);
        assert_eq!(middle[0].grouped_avps().unwrap(), [odd]);
    }

    #[test]
    fn malformed_group_content_is_5014() {
        let broken = Avp::octets(dict::PROXY_INFO, vec![0, 0, 1, 0x18, 0x40, 0, 0, 3]);
        let r = Validator::base().validate(&dwr().with(broken)).unwrap_err();
        assert_eq!(r.result_code, result_code::INVALID_AVP_LENGTH);
        assert_eq!(r.failed_avp.unwrap().key(), dict::PROXY_INFO);
    }

    #[test]
    fn protocol_errors_set_the_e_bit() {
        let r = Rejection::new(result_code::COMMAND_UNSUPPORTED, "no");
        let answer = r.answer(&dwr(), "us", "realm");
        assert!(answer.flags.error && !answer.flags.request);
        assert_eq!(answer.result_code(), Some(3001));
        assert_eq!(answer.find(dict::FAILED_AVP), None);
    }

    #[test]
    fn application_rules_extend_the_table() {
        static RX_RULES: &[CommandRule] = &[CommandRule {
            application_id: application::RX,
            command_code: command::RE_AUTH,
            request: true,
            required: &[dict::SESSION_ID, dict::SPECIFIC_ACTION],
        }];
        let v = Validator::base().with_rules(RX_RULES);
        let rar = Message::request(command::RE_AUTH, application::RX)
            .with(Avp::utf8(dict::SESSION_ID, "s"));
        let r = v.validate(&rar).unwrap_err();
        assert_eq!(r.failed_avp.unwrap().key(), dict::SPECIFIC_ACTION);
        assert!(Validator::base().validate(&rar).is_ok());
    }

    #[test]
    fn error_answers_need_only_the_generic_avps() {
        let mut cea = Message::request(command::CAPABILITIES_EXCHANGE, application::COMMON);
        cea.flags.request = false;
        cea.flags.error = true;
        let cea = cea
            .with(Avp::identity(dict::ORIGIN_HOST, "h"))
            .with(Avp::identity(dict::ORIGIN_REALM, "r"))
            .with(Avp::unsigned32(dict::RESULT_CODE, 3010));
        assert!(Validator::base().validate(&cea).is_ok());
        let mut plain = cea;
        plain.flags.error = false;
        assert_eq!(
            Validator::base()
                .validate(&plain)
                .unwrap_err()
                .failed_avp
                .unwrap()
                .key(),
            dict::HOST_IP_ADDRESS
        );
    }
}
