//! The `{ }` and `< >` AVPs of the eight Rx commands (TS 29.214 §5.6.1–§5.6.8), for
//! estuary-diameter's validator.

use estuary_diameter::dictionary::{self as dict, VENDOR_3GPP};
use estuary_diameter::message::{application, command};
use estuary_diameter::{Application, AvpKey, CommandRule, Validator};

/// Rx as advertised in CER/CEA: Auth-Application-Id 16777236 of vendor 3GPP (TS 29.214 §5.1).
pub const RX_APPLICATION: Application = Application::Auth {
    id: application::RX,
    vendor: Some(VENDOR_3GPP),
};

const fn rule(command_code: u32, request: bool, required: &'static [AvpKey]) -> CommandRule {
    CommandRule {
        application_id: application::RX,
        command_code,
        request,
        required,
    }
}

/// Session-Id, Origin-Host and Origin-Realm: what every Rx answer requires.
const ANSWER: &[AvpKey] = &[dict::SESSION_ID, dict::ORIGIN_HOST, dict::ORIGIN_REALM];

/// Required AVPs of AAR/AAA, RAR/RAA, STR/STA and ASR/ASA.
pub static RX_RULES: &[CommandRule] = &[
    // §5.6.1 AA-Request.
    rule(
        command::AA,
        true,
        &[
            dict::SESSION_ID,
            dict::AUTH_APPLICATION_ID,
            dict::ORIGIN_HOST,
            dict::ORIGIN_REALM,
            dict::DESTINATION_REALM,
        ],
    ),
    // §5.6.2 AA-Answer: Result-Code and Experimental-Result are both optional.
    rule(
        command::AA,
        false,
        &[
            dict::SESSION_ID,
            dict::AUTH_APPLICATION_ID,
            dict::ORIGIN_HOST,
            dict::ORIGIN_REALM,
        ],
    ),
    // §5.6.3 Re-Auth-Request: *{ Specific-Action } needs at least one.
    rule(
        command::RE_AUTH,
        true,
        &[
            dict::SESSION_ID,
            dict::ORIGIN_HOST,
            dict::ORIGIN_REALM,
            dict::DESTINATION_REALM,
            dict::DESTINATION_HOST,
            dict::AUTH_APPLICATION_ID,
            dict::SPECIFIC_ACTION,
        ],
    ),
    // §5.6.4 Re-Auth-Answer.
    rule(command::RE_AUTH, false, ANSWER),
    // §5.6.5 Session-Termination-Request.
    rule(
        command::SESSION_TERMINATION,
        true,
        &[
            dict::SESSION_ID,
            dict::ORIGIN_HOST,
            dict::ORIGIN_REALM,
            dict::DESTINATION_REALM,
            dict::AUTH_APPLICATION_ID,
            dict::TERMINATION_CAUSE,
        ],
    ),
    // §5.6.6 Session-Termination-Answer.
    rule(command::SESSION_TERMINATION, false, ANSWER),
    // §5.6.7 Abort-Session-Request.
    rule(
        command::ABORT_SESSION,
        true,
        &[
            dict::SESSION_ID,
            dict::ORIGIN_HOST,
            dict::ORIGIN_REALM,
            dict::DESTINATION_REALM,
            dict::DESTINATION_HOST,
            dict::AUTH_APPLICATION_ID,
            dict::ABORT_CAUSE,
        ],
    ),
    // §5.6.8 Abort-Session-Answer.
    rule(command::ABORT_SESSION, false, ANSWER),
];

/// The standard dictionary with the base rules and [`RX_RULES`]; also what a
/// `PeerConfig::validator` for an Rx peer should be.
pub fn rx_validator() -> Validator {
    Validator::base().with_rules(RX_RULES)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn eight_commands_have_rules() {
        let v = rx_validator();
        for code in [
            command::AA,
            command::RE_AUTH,
            command::SESSION_TERMINATION,
            command::ABORT_SESSION,
        ] {
            for request in [true, false] {
                assert!(
                    v.rule(application::RX, code, request).is_some(),
                    "{code} {request}"
                );
            }
        }
        let rar = v.rule(application::RX, command::RE_AUTH, true).unwrap();
        assert!(rar.required.contains(&dict::SPECIFIC_ACTION));
        let asr = v
            .rule(application::RX, command::ABORT_SESSION, true)
            .unwrap();
        assert!(asr.required.contains(&dict::ABORT_CAUSE));
        let str_rule = v
            .rule(application::RX, command::SESSION_TERMINATION, true)
            .unwrap();
        assert!(str_rule.required.contains(&dict::TERMINATION_CAUSE));
    }
}
