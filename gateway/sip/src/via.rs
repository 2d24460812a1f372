//! One `via-parm` of a Via header (RFC 3261 §20.42, §25.1).

use std::fmt;
use std::str::FromStr;

use crate::error::ParseError;
use crate::param::{self, Param};
use crate::scan::{is_token_byte, Cursor};
use crate::uri::{is_valid_host, parse_port};

/// The RFC 3261 branch magic cookie (§8.1.1.7).
pub const BRANCH_MAGIC_COOKIE: &str = "z9hG4bK";

/// One Via entry: `SIP/2.0/<transport> host[:port];params`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Via {
    /// Transport as written: `UDP`, `TCP`, `TLS`, `SCTP`, `WS`, `WSS`, or any token
    /// (RFC 4475 §3.1.1.10).
    pub transport: String,
    /// sent-by host; IPv6 references keep their brackets.
    pub host: String,
    /// sent-by port, if written.
    pub port: Option<u16>,
    /// Parameters (`branch`, `received`, `rport`, `maddr`, ...), raw.
    pub params: Vec<Param>,
}

impl Via {
    /// Parse one via-parm. LWS is allowed around the `/` of sent-protocol, around the `:` of
    /// sent-by and around `;` and `=` (RFC 3261 §25.1, RFC 4475 §3.1.1.1). The protocol must be
    /// `SIP/2.0`.
    pub fn parse(s: &str) -> Result<Via, ParseError> {
        parse_via(s).ok_or_else(|| ParseError::malformed("Bad Via header"))
    }

    /// The `branch` parameter.
    pub fn branch(&self) -> Option<&str> {
        self.param("branch").flatten()
    }

    /// The `received` parameter (RFC 3261 §18.2.1).
    pub fn received(&self) -> Option<&str> {
        self.param("received").flatten()
    }

    /// The `rport` parameter (RFC 3581): `Some(None)` when requested without a value,
    /// `Some(Some(port))` once filled in.
    pub fn rport(&self) -> Option<Option<&str>> {
        self.param("rport")
    }

    /// True if the branch starts with the RFC 3261 magic cookie and has something after it
    /// (RFC 4475 §3.2.1 shows a bare cookie).
    pub fn has_rfc3261_branch(&self) -> bool {
        self.branch().is_some_and(|b| {
            b.len() > BRANCH_MAGIC_COOKIE.len() && b.starts_with(BRANCH_MAGIC_COOKIE)
        })
    }

    /// The value of parameter `name` (case-insensitive): `Some(None)` for a flag.
    pub fn param(&self, name: &str) -> Option<Option<&str>> {
        param::find(&self.params, name)
    }

    /// Set parameter `name` to a raw `value`, replacing it in place if present.
    pub fn set_param(&mut self, name: &str, value: Option<&str>) {
        param::set(&mut self.params, name, value)
    }

    /// Remove parameter `name`; true if it was present.
    pub fn remove_param(&mut self, name: &str) -> bool {
        param::remove(&mut self.params, name)
    }
}

impl FromStr for Via {
    type Err = ParseError;

    fn from_str(s: &str) -> Result<Via, ParseError> {
        Via::parse(s)
    }
}

impl fmt::Display for Via {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SIP/2.0/{} {}", self.transport, self.host)?;
        if let Some(port) = self.port {
            write!(f, ":{port}")?;
        }
        param::write_all(f, &self.params)
    }
}

fn parse_via(s: &str) -> Option<Via> {
    let mut cur = Cursor::new(s);
    cur.skip_wsp();
    // sent-protocol = protocol-name SLASH protocol-version SLASH transport, SLASH = SWS "/" SWS
    let name = cur.take_while(is_token_byte);
    cur.skip_wsp();
    if !name.eq_ignore_ascii_case("SIP") || !cur.eat(b'/') {
        return None;
    }
    cur.skip_wsp();
    let version = cur.take_while(is_token_byte);
    cur.skip_wsp();
    if version != "2.0" || !cur.eat(b'/') {
        return None;
    }
    cur.skip_wsp();
    let transport = cur.take_while(is_token_byte);
    if transport.is_empty() || !cur.skip_wsp() {
        return None;
    }
    // sent-by = host [ COLON port ], COLON = SWS ":" SWS. An IPv6 reference contains colons.
    let host = if cur.peek() == Some(b'[') {
        let h = cur.take_while(|b| b != b']' && b != b';' && b != b' ' && b != b'\t');
        if !cur.eat(b']') {
            return None;
        }
        format!("{h}]")
    } else {
        cur.take_while(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'))
            .to_owned()
    };
    if !is_valid_host(&host) {
        return None;
    }
    cur.skip_wsp();
    let port = if cur.eat(b':') {
        cur.skip_wsp();
        Some(parse_port(cur.take_while(|b| b.is_ascii_digit()))?)
    } else {
        None
    };
    let params = param::parse_header_params(&mut cur)?;
    Some(Via {
        transport: transport.to_owned(),
        host,
        port,
        params,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_via() {
        let v = Via::parse("SIP/2.0/WSS df7jal23ls0d.invalid;branch=z9hG4bK56786;rport").unwrap();
        assert_eq!(v.transport, "WSS");
        assert_eq!(v.host, "df7jal23ls0d.invalid");
        assert_eq!(v.port, None);
        assert_eq!(v.branch(), Some("z9hG4bK56786"));
        assert_eq!(v.rport(), Some(None));
        assert!(v.has_rfc3261_branch());
        assert_eq!(
            v.to_string(),
            "SIP/2.0/WSS df7jal23ls0d.invalid;branch=z9hG4bK56786;rport"
        );
    }

    #[test]
    fn torture_lws_everywhere() {
        // RFC 4475 §3.1.1.1, after unfolding.
        let v = Via::parse("SIP  /   2.0 /UDP 192.0.2.2;branch=390skdjuw").unwrap();
        assert_eq!(
            (v.transport.as_str(), v.host.as_str()),
            ("UDP", "192.0.2.2")
        );
        let v =
            Via::parse("SIP  / 2.0  / TCP     spindle.example.com   ; branch  =   z9hG4bK9ikj8")
                .unwrap();
        assert_eq!(v.branch(), Some("z9hG4bK9ikj8"));
        let v = Via::parse("SIP/2.0/TCP host : 5060 ;received=192.0.2.1").unwrap();
        assert_eq!(v.port, Some(5060));
        assert_eq!(v.received(), Some("192.0.2.1"));
    }

    #[test]
    fn ipv6_sent_by() {
        let v = Via::parse(
            "SIP/2.0/UDP [2001:db8::9:1]:5070;branch=z9hG4bKas3;received=[2001:db8::9:255]",
        )
        .unwrap();
        assert_eq!(v.host, "[2001:db8::9:1]");
        assert_eq!(v.port, Some(5070));
        assert_eq!(v.received(), Some("[2001:db8::9:255]"));
    }

    #[test]
    fn bad_vias() {
        for bad in [
            "SIP/2.0/UDP 192.0.2.15;;",
            "SIP/7.0/UDP c.example.com;branch=z9hG4bKkdjuw",
            "SIP/2.0/UDP",
            "SIP/2.0/UDPhost",
            "SIP/2.0/UDP host:",
            "SIP/2.0/UDP host:70000",
            "SIP/2.0/UDP [::1",
            "SIP/2.0/UDP host junk",
            "",
        ] {
            assert!(Via::parse(bad).is_err(), "{bad:?} parsed");
        }
    }

    #[test]
    fn bare_magic_cookie_is_not_an_rfc3261_branch() {
        let mut v = Via::parse("SIP/2.0/UDP 192.0.2.1;branch=z9hG4bK").unwrap();
        assert!(!v.has_rfc3261_branch());
        v.set_param("received", Some("192.0.2.9"));
        v.set_param("rport", Some("5062"));
        assert_eq!(
            v.to_string(),
            "SIP/2.0/UDP 192.0.2.1;branch=z9hG4bK;received=192.0.2.9;rport=5062"
        );
    }
}
