//! URIs: `sip:`/`sips:` (RFC 3261 §19.1), `tel:` (RFC 3966) and any other scheme kept opaque.
//!
//! Parsing is faithful: the user part keeps its %-escapes exactly as received (RFC 4475
//! §3.1.1.3, §3.1.1.4), parameter and header values stay raw, IPv6 hosts keep their brackets,
//! so [`Uri`]'s `Display` writes back what came in. The only normalisation is the scheme name,
//! which is case-insensitive (RFC 3261 §19.1.4) and printed in lower case for sip, sips and tel.

use std::fmt;
use std::str::FromStr;

use crate::error::ParseError;
use crate::param::{self, Param};
use crate::scan::parse_digits;

/// URI scheme.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Scheme {
    /// `sip`.
    Sip,
    /// `sips`.
    Sips,
    /// `tel` (RFC 3966).
    Tel,
    /// Any other scheme, as written. The Request-URI layer answers these with 416
    /// (RFC 3261 §8.2.2.1, RFC 4475 §3.3.2).
    Other(String),
}

impl Scheme {
    /// The scheme name without the colon.
    pub fn as_str(&self) -> &str {
        match self {
            Scheme::Sip => "sip",
            Scheme::Sips => "sips",
            Scheme::Tel => "tel",
            Scheme::Other(s) => s,
        }
    }

    fn from_name(name: &str) -> Scheme {
        if name.eq_ignore_ascii_case("sip") {
            Scheme::Sip
        } else if name.eq_ignore_ascii_case("sips") {
            Scheme::Sips
        } else if name.eq_ignore_ascii_case("tel") {
            Scheme::Tel
        } else {
            Scheme::Other(name.to_owned())
        }
    }
}

impl fmt::Display for Scheme {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A parsed URI.
///
/// For `sip:`/`sips:` every field has its RFC 3261 §19.1.1 meaning. For `tel:` the number is in
/// `user`, its parameters in `params`, and `host` is empty. For any other scheme the whole
/// opaque part after the colon is in `user` and `host` is empty.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Uri {
    /// The scheme.
    pub scheme: Scheme,
    /// User part, %-escapes kept as received; the opaque part for unknown schemes.
    pub user: Option<String>,
    /// Password after `user:` (deprecated by RFC 3261 §19.1.1 but parsed).
    pub password: Option<String>,
    /// Host: a name, an IPv4 address, or an IPv6 reference with its brackets. Empty for
    /// `tel:` and opaque URIs.
    pub host: String,
    /// Port, if written.
    pub port: Option<u16>,
    /// `;name[=value]` URI parameters, raw.
    pub params: Vec<Param>,
    /// `?name=value&...` headers, raw (still %-escaped).
    pub headers: Vec<(String, String)>,
}

impl Uri {
    /// Parse a URI with nothing around it (no `<>`, no whitespace).
    pub fn parse(s: &str) -> Result<Uri, ParseError> {
        parse_uri(s).ok_or_else(|| ParseError::malformed("Bad URI"))
    }

    /// The value of URI parameter `name` (case-insensitive): `Some(None)` for a flag like `lr`.
    pub fn param(&self, name: &str) -> Option<Option<&str>> {
        param::find(&self.params, name)
    }

    /// Set URI parameter `name` to a raw `value` (`None` for a flag), replacing it in place if
    /// present.
    pub fn set_param(&mut self, name: &str, value: Option<&str>) {
        param::set(&mut self.params, name, value)
    }

    /// Remove URI parameter `name`; true if it was present.
    pub fn remove_param(&mut self, name: &str) -> bool {
        param::remove(&mut self.params, name)
    }

    /// The `transport` parameter value (`ws`, `tcp`, ...), if any.
    pub fn transport(&self) -> Option<&str> {
        self.param("transport").flatten()
    }

    /// True for `sip:` and `sips:`.
    pub fn is_sip(&self) -> bool {
        matches!(self.scheme, Scheme::Sip | Scheme::Sips)
    }
}

impl FromStr for Uri {
    type Err = ParseError;

    fn from_str(s: &str) -> Result<Uri, ParseError> {
        Uri::parse(s)
    }
}

impl fmt::Display for Uri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:", self.scheme)?;
        match self.scheme {
            Scheme::Sip | Scheme::Sips => {
                if let Some(user) = &self.user {
                    f.write_str(user)?;
                    if let Some(pw) = &self.password {
                        write!(f, ":{pw}")?;
                    }
                    f.write_str("@")?;
                }
                f.write_str(&self.host)?;
                if let Some(port) = self.port {
                    write!(f, ":{port}")?;
                }
                param::write_all(f, &self.params)?;
                for (i, (name, value)) in self.headers.iter().enumerate() {
                    let sep = if i == 0 { '?' } else { '&' };
                    write!(f, "{sep}{name}={value}")?;
                }
                Ok(())
            }
            Scheme::Tel => {
                f.write_str(self.user.as_deref().unwrap_or_default())?;
                param::write_all(f, &self.params)
            }
            Scheme::Other(_) => f.write_str(self.user.as_deref().unwrap_or(&self.host)),
        }
    }
}

fn parse_uri(s: &str) -> Option<Uri> {
    // Everything in a URI is ASCII (RFC 3261 §25.1, RFC 3986 §2); non-ASCII must be escaped.
    if !s.is_ascii() {
        return None;
    }
    let (scheme, rest) = s.split_once(':')?;
    let mut first = scheme.bytes();
    if !first.next()?.is_ascii_alphabetic()
        || !first.all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.'))
    {
        return None;
    }
    match Scheme::from_name(scheme) {
        scheme @ (Scheme::Sip | Scheme::Sips) => parse_sip(scheme, rest),
        Scheme::Tel => parse_tel(rest),
        scheme @ Scheme::Other(_) => {
            // absoluteURI: anything visible except the delimiters that end a URI in a header.
            if rest.is_empty() || !rest.bytes().all(is_opaque_byte) {
                return None;
            }
            Some(Uri {
                user: Some(rest.to_owned()),
                ..empty(scheme)
            })
        }
    }
}

fn empty(scheme: Scheme) -> Uri {
    Uri {
        scheme,
        user: None,
        password: None,
        host: String::new(),
        port: None,
        params: Vec::new(),
        headers: Vec::new(),
    }
}

/// `SIP-URI = "sip:" [ userinfo ] hostport uri-parameters [ headers ]` (RFC 3261 §25.1).
fn parse_sip(scheme: Scheme, rest: &str) -> Option<Uri> {
    // `@` can appear nowhere but after the userinfo (user and password must escape it, and
    // hostport, parameters and headers cannot contain it), so the first `@` ends the
    // userinfo even when the user part contains `;`, `?` or `/` (RFC 4475 §3.1.1.2, §3.1.1.9).
    let (userinfo, after) = match rest.split_once('@') {
        Some((ui, after)) => (Some(ui), after),
        None => (None, rest),
    };
    let mut uri = empty(scheme);
    if let Some(ui) = userinfo {
        let (user, password) = match ui.split_once(':') {
            Some((u, p)) => (u, Some(p)),
            None => (ui, None),
        };
        if user.is_empty() || !user.bytes().all(is_user_byte) {
            return None;
        }
        if !password
            .unwrap_or_default()
            .bytes()
            .all(|b| is_user_byte(b) || b == b':')
        {
            return None;
        }
        uri.user = Some(user.to_owned());
        uri.password = password.map(str::to_owned);
    }
    let (before_headers, headers) = match after.split_once('?') {
        Some((b, h)) => (b, Some(h)),
        None => (after, None),
    };
    let (hostport, params) = match before_headers.split_once(';') {
        Some((hp, p)) => (hp, Some(p)),
        None => (before_headers, None),
    };
    let (host, port) = parse_hostport(hostport)?;
    uri.host = host.to_owned();
    uri.port = port;
    if let Some(params) = params {
        uri.params = parse_uri_params(params)?;
    }
    if let Some(headers) = headers {
        for h in headers.split('&') {
            let (name, value) = h.split_once('=')?;
            if name.is_empty() || !name.bytes().all(is_hnv_byte) || !value.bytes().all(is_hnv_byte)
            {
                return None;
            }
            uri.headers.push((name.to_owned(), value.to_owned()));
        }
    }
    Some(uri)
}

/// `telephone-uri = "tel:" telephone-subscriber` (RFC 3966 §3): the number, then parameters.
fn parse_tel(rest: &str) -> Option<Uri> {
    let (number, params) = match rest.split_once(';') {
        Some((n, p)) => (n, Some(p)),
        None => (rest, None),
    };
    if number.is_empty() || !number.bytes().all(is_opaque_byte) {
        return None;
    }
    let mut uri = empty(Scheme::Tel);
    uri.user = Some(number.to_owned());
    if let Some(params) = params {
        uri.params = parse_uri_params(params)?;
    }
    Some(uri)
}

/// `*( ";" uri-parameter )` after the first `;` has been consumed: every parameter needs a
/// name (`;;` is an error).
fn parse_uri_params(s: &str) -> Option<Vec<Param>> {
    s.split(';')
        .map(|p| {
            let (name, value) = match p.split_once('=') {
                Some((n, v)) => (n, Some(v)),
                None => (p, None),
            };
            let ok = !name.is_empty()
                && name.bytes().all(is_paramchar)
                && value.unwrap_or_default().bytes().all(is_paramchar);
            ok.then(|| Param::new(name, value))
        })
        .collect()
}

/// `host [ ":" port ]` where host is a hostname, IPv4 address or bracketed IPv6 reference.
pub(crate) fn parse_hostport(s: &str) -> Option<(&str, Option<u16>)> {
    let (host, port) = if s.starts_with('[') {
        let close = s.find(']')?;
        let (host, after) = s.split_at_checked(close + 1)?;
        match after {
            "" => (host, None),
            _ => (host, Some(after.strip_prefix(':')?)),
        }
    } else {
        match s.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (s, None),
        }
    };
    if !is_valid_host(host) {
        return None;
    }
    let port = match port {
        Some(p) => Some(parse_port(p)?),
        None => None,
    };
    Some((host, port))
}

/// `port = 1*DIGIT`, within u16.
pub(crate) fn parse_port(s: &str) -> Option<u16> {
    parse_digits(s).and_then(|n| u16::try_from(n).ok())
}

/// A hostname (alphanumerics, `-`, `.`, and `_` which real deployments use), an IPv4 address
/// (a subset of the former) or an IPv6 reference `[...]` (RFC 3261 §25.1, RFC 5118).
pub(crate) fn is_valid_host(h: &str) -> bool {
    if let Some(inner) = h.strip_prefix('[') {
        return inner.strip_suffix(']').is_some_and(|v6| {
            !v6.is_empty()
                && v6
                    .bytes()
                    .all(|b| b.is_ascii_hexdigit() || b == b':' || b == b'.')
        });
    }
    !h.is_empty()
        && h.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'))
}

/// `unreserved` (alphanum / mark).
fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric()
        || matches!(
            b,
            b'-' | b'_' | b'.' | b'!' | b'~' | b'*' | b'\'' | b'(' | b')'
        )
}

/// User part: unreserved / escaped / user-unreserved (`& = + $ , ; ? /`). `#` is accepted too:
/// it is not in the grammar but dialled strings like `*31#123` arrive unescaped from real phones.
/// Escapes are not decoded or checked, only kept (RFC 4475 §3.1.1.3).
fn is_user_byte(b: u8) -> bool {
    is_unreserved(b)
        || matches!(
            b,
            b'%' | b'&' | b'=' | b'+' | b'$' | b',' | b';' | b'?' | b'/' | b'#'
        )
}

/// `paramchar = param-unreserved / unreserved / escaped`, param-unreserved = `[ ] / : & + $`.
fn is_paramchar(b: u8) -> bool {
    is_unreserved(b) || matches!(b, b'%' | b'[' | b']' | b'/' | b':' | b'&' | b'+' | b'$')
}

/// `hname`/`hvalue` characters: hnv-unreserved (`[ ] / ? : + $`) / unreserved / escaped.
fn is_hnv_byte(b: u8) -> bool {
    is_unreserved(b) || matches!(b, b'%' | b'[' | b']' | b'/' | b'?' | b':' | b'+' | b'$')
}

/// Opaque parts of tel: and unknown-scheme URIs: visible ASCII except the characters that
/// delimit a URI inside a header (`<`, `>`, `"`) and whitespace.
fn is_opaque_byte(b: u8) -> bool {
    b.is_ascii_graphic() && !matches!(b, b'<' | b'>' | b'"')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(s: &str) -> Uri {
        let u = Uri::parse(s).unwrap_or_else(|e| panic!("{s}: {e}"));
        assert_eq!(u.to_string(), s);
        u
    }

    #[test]
    fn sip_uri_fields() {
        let u = round_trip("sip:alice:secret@[2001:db8::1]:5061;transport=ws;lr?Subject=hi&X=%20");
        assert_eq!(u.scheme, Scheme::Sip);
        assert_eq!(u.user.as_deref(), Some("alice"));
        assert_eq!(u.password.as_deref(), Some("secret"));
        assert_eq!(u.host, "[2001:db8::1]");
        assert_eq!(u.port, Some(5061));
        assert_eq!(u.transport(), Some("ws"));
        assert_eq!(u.param("LR"), Some(None));
        assert_eq!(
            u.headers,
            [("Subject".into(), "hi".into()), ("X".into(), "%20".into())]
        );
    }

    #[test]
    fn torture_user_parts_round_trip() {
        // RFC 4475 §3.1.1.2: user and password full of user-unreserved characters.
        let u = round_trip(
            "sip:1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*:&it+has=1,weird!*pas$wo~d_too.(doesn't-it)@example.com",
        );
        assert_eq!(
            u.user.as_deref(),
            Some("1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*")
        );
        assert_eq!(
            u.password.as_deref(),
            Some("&it+has=1,weird!*pas$wo~d_too.(doesn't-it)")
        );
        assert_eq!(u.host, "example.com");
        // §3.1.1.9: a `;` in the user part; §3.1.1.3/4: escapes kept.
        let u = round_trip("sip:user;par=u%40example.net@example.com");
        assert_eq!(u.user.as_deref(), Some("user;par=u%40example.net"));
        assert!(u.params.is_empty());
        round_trip("sip:sips%3Auser%40example.com@example.net");
        round_trip("sip:%00@host5.example.com");
        round_trip("sip:cal%6Cer@host5.example.net;%6C%72;n%61me=v%61lue%25%34%31");
    }

    #[test]
    fn tel_and_unknown_schemes_are_kept() {
        let u = round_trip("tel:+1-201-555-0123;phone-context=example.com");
        assert_eq!(u.scheme, Scheme::Tel);
        assert_eq!(u.user.as_deref(), Some("+1-201-555-0123"));
        assert_eq!(u.param("phone-context"), Some(Some("example.com")));
        let u = round_trip("soap.beep://192.0.2.103:3002");
        assert_eq!(u.scheme, Scheme::Other("soap.beep".into()));
        assert_eq!(u.host, "");
        let u = round_trip("nobodyKnowsThisScheme:totallyopaquecontent");
        assert!(!u.is_sip());
        round_trip("isbn:2983792873");
        round_trip("http://www.example.com");
    }

    #[test]
    fn scheme_is_case_insensitive() {
        let u = Uri::parse("SIP:bob@Example.COM").unwrap();
        assert_eq!(u.scheme, Scheme::Sip);
        assert_eq!(u.host, "Example.COM");
        assert_eq!(u.to_string(), "sip:bob@Example.COM");
    }

    #[test]
    fn malformed_uris_are_rejected() {
        for bad in [
            "<sip:user@example.com>",
            "sip:user@example.com; lr",
            "sip:",
            "sip:@host",
            "sip:host:",
            "sip:host:99999",
            "sip:host;;lr",
            "sip:host?Route",
            "sip:[::1",
            "sip:[]",
            "sip:ho st",
            "sip:h\u{e9}",
            ":x",
            "1sip:x",
            "tel:",
            "foo:",
            "foo:a<b",
            "sip:a@b@c",
        ] {
            assert!(Uri::parse(bad).is_err(), "{bad:?} parsed");
        }
    }

    #[test]
    fn params_can_be_edited() {
        let mut u = Uri::parse("sip:abc@df7jal23ls0d.invalid;transport=ws").unwrap();
        u.set_param("ob", None);
        u.set_param("TRANSPORT", Some("tcp"));
        assert_eq!(
            u.to_string(),
            "sip:abc@df7jal23ls0d.invalid;transport=tcp;ob"
        );
        assert!(u.remove_param("ob"));
        assert!(!u.remove_param("ob"));
        assert_eq!(u.to_string(), "sip:abc@df7jal23ls0d.invalid;transport=tcp");
    }
}
