//! Request methods (RFC 3261 §7.1, §27.4 and the extension RFCs).

use std::fmt;
use std::str::FromStr;

use crate::error::ParseError;
use crate::scan::is_token;

/// A SIP method. Method names are case-sensitive (RFC 3261 §7.1): `invite` is not INVITE but
/// an extension method, kept as [`Method::Other`].
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Method {
    /// INVITE (RFC 3261).
    Invite,
    /// ACK (RFC 3261).
    Ack,
    /// BYE (RFC 3261).
    Bye,
    /// CANCEL (RFC 3261).
    Cancel,
    /// REGISTER (RFC 3261).
    Register,
    /// OPTIONS (RFC 3261).
    Options,
    /// INFO (RFC 6086).
    Info,
    /// UPDATE (RFC 3311).
    Update,
    /// PRACK (RFC 3262).
    Prack,
    /// MESSAGE (RFC 3428).
    Message,
    /// SUBSCRIBE (RFC 6665).
    Subscribe,
    /// NOTIFY (RFC 6665).
    Notify,
    /// REFER (RFC 3515).
    Refer,
    /// PUBLISH (RFC 3903).
    Publish,
    /// Any other token, exactly as written.
    Other(String),
}

impl Method {
    /// The method name as it goes on the wire.
    pub fn as_str(&self) -> &str {
        match self {
            Method::Invite => "INVITE",
            Method::Ack => "ACK",
            Method::Bye => "BYE",
            Method::Cancel => "CANCEL",
            Method::Register => "REGISTER",
            Method::Options => "OPTIONS",
            Method::Info => "INFO",
            Method::Update => "UPDATE",
            Method::Prack => "PRACK",
            Method::Message => "MESSAGE",
            Method::Subscribe => "SUBSCRIBE",
            Method::Notify => "NOTIFY",
            Method::Refer => "REFER",
            Method::Publish => "PUBLISH",
            Method::Other(s) => s,
        }
    }
}

impl FromStr for Method {
    type Err = ParseError;

    /// Any `token` is a method (RFC 3261 §25.1 `extension-method = token`); matching of the
    /// known names is exact and case-sensitive.
    fn from_str(s: &str) -> Result<Method, ParseError> {
        Ok(match s {
            "INVITE" => Method::Invite,
            "ACK" => Method::Ack,
            "BYE" => Method::Bye,
            "CANCEL" => Method::Cancel,
            "REGISTER" => Method::Register,
            "OPTIONS" => Method::Options,
            "INFO" => Method::Info,
            "UPDATE" => Method::Update,
            "PRACK" => Method::Prack,
            "MESSAGE" => Method::Message,
            "SUBSCRIBE" => Method::Subscribe,
            "NOTIFY" => Method::Notify,
            "REFER" => Method::Refer,
            "PUBLISH" => Method::Publish,
            other if is_token(other) => Method::Other(other.to_owned()),
            _ => return Err(ParseError::malformed("Bad method")),
        })
    }
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_methods_round_trip() {
        for name in [
            "INVITE",
            "ACK",
            "BYE",
            "CANCEL",
            "REGISTER",
            "OPTIONS",
            "INFO",
            "UPDATE",
            "PRACK",
            "MESSAGE",
            "SUBSCRIBE",
            "NOTIFY",
            "REFER",
            "PUBLISH",
        ] {
            let m: Method = name.parse().unwrap();
            assert!(!matches!(m, Method::Other(_)), "{name}");
            assert_eq!(m.to_string(), name);
        }
    }

    #[test]
    fn methods_are_case_sensitive_tokens() {
        assert_eq!(
            "invite".parse::<Method>().unwrap(),
            Method::Other("invite".into())
        );
        assert_eq!(
            "RE%47IST%45R".parse::<Method>().unwrap().as_str(),
            "RE%47IST%45R"
        );
        assert!("".parse::<Method>().is_err());
        assert!("IN VITE".parse::<Method>().is_err());
        assert!("<INVITE>".parse::<Method>().is_err());
    }
}
