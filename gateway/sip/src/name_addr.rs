//! `name-addr` / `addr-spec` values of From, To, Contact, Route, Record-Route, Path,
//! Refer-To... (RFC 3261 §20.10, §25.1).

use std::fmt;
use std::str::FromStr;

use crate::error::ParseError;
use crate::param::{self, Param};
use crate::scan::{is_token_byte, is_wsp, trim_wsp, Cursor};
use crate::uri::Uri;

/// An address with optional display name and header parameters.
///
/// The display name is kept raw: `"J Rosenberg \\\""` keeps its quotes and escapes, a token
/// sequence (`Bob Smith`) is kept as written.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct NameAddr {
    /// Raw display name, including quotes if quoted.
    pub display_name: Option<String>,
    /// The address.
    pub uri: Uri,
    /// Header parameters after the address (`tag`, `expires`, `+sip.instance`, ...), raw.
    pub params: Vec<Param>,
}

/// One element of a Contact header: `*` (RFC 3261 §10.2.2, only in a REGISTER removing all
/// bindings) or an address.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ContactValue {
    /// `Contact: *`.
    Star,
    /// An address.
    Addr(NameAddr),
}

impl NameAddr {
    /// An address with no display name and no parameters.
    pub fn new(uri: Uri) -> NameAddr {
        NameAddr {
            display_name: None,
            uri,
            params: Vec::new(),
        }
    }

    /// Parse one element (already split from a comma list).
    ///
    /// Accepts `[display-name] <URI> *(;param)` and the bare `addr-spec *(;param)` form. In the
    /// bare form the URI ends at the first `;` or whitespace: what follows are header
    /// parameters, not URI parameters (RFC 3261 §20.10, RFC 4475 §3.3.12); a `?` makes it an
    /// error, since a URI with headers must be enclosed in `<>` (RFC 4475 §3.1.2.13).
    pub fn parse(s: &str) -> Result<NameAddr, ParseError> {
        parse_inner(s)
            .map(|(na, _)| na)
            .ok_or_else(|| ParseError::malformed("Bad address"))
    }

    /// The `tag` parameter (RFC 3261 §19.3).
    pub fn tag(&self) -> Option<&str> {
        self.param("tag").flatten()
    }

    /// Set (or replace) the `tag` parameter.
    pub fn set_tag(&mut self, tag: &str) {
        self.set_param("tag", Some(tag))
    }

    /// The value of header parameter `name` (case-insensitive): `Some(None)` for a flag.
    pub fn param(&self, name: &str) -> Option<Option<&str>> {
        param::find(&self.params, name)
    }

    /// Set header parameter `name` to a raw `value`, replacing it in place if present.
    pub fn set_param(&mut self, name: &str, value: Option<&str>) {
        param::set(&mut self.params, name, value)
    }

    /// Remove header parameter `name`; true if it was present.
    pub fn remove_param(&mut self, name: &str) -> bool {
        param::remove(&mut self.params, name)
    }
}

impl FromStr for NameAddr {
    type Err = ParseError;

    fn from_str(s: &str) -> Result<NameAddr, ParseError> {
        NameAddr::parse(s)
    }
}

impl fmt::Display for NameAddr {
    /// Always the `<URI>` form, which is never ambiguous (RFC 3261 §20.10).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(dn) = &self.display_name {
            write!(f, "{dn} ")?;
        }
        write!(f, "<{}>", self.uri)?;
        param::write_all(f, &self.params)
    }
}

impl fmt::Display for ContactValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ContactValue::Star => f.write_str("*"),
            ContactValue::Addr(a) => a.fmt(f),
        }
    }
}

/// Parse a name-addr or addr-spec; the flag says whether the URI was in `<>` (Route and
/// Record-Route require it).
pub(crate) fn parse_inner(s: &str) -> Option<(NameAddr, bool)> {
    let s = trim_wsp(s);
    let mut cur = Cursor::new(s);
    // Find `<` outside quoted strings: everything before it is the display name.
    let mut display_end = None;
    loop {
        match cur.peek() {
            None => break,
            Some(b'"') => {
                cur.quoted_string()?;
            }
            Some(b'<') => {
                display_end = Some(s.len() - cur.rest().len());
                break;
            }
            Some(_) => {
                cur.take_while(|b| b != b'"' && b != b'<');
            }
        }
    }
    match display_end {
        Some(lt) => {
            let display = trim_wsp(s.get(..lt)?);
            if !display.is_empty() && !is_display_name(display) {
                return None;
            }
            let after_lt = s.get(lt + 1..)?;
            let (uri, rest) = after_lt.split_once('>')?;
            // RAQUOT/LAQUOT allow whitespace only outside the brackets (RFC 4475 §3.1.2.14).
            if uri.bytes().any(is_wsp) {
                return None;
            }
            let uri = Uri::parse(uri).ok()?;
            let params = param::parse_header_params(&mut Cursor::new(rest))?;
            let display_name = (!display.is_empty()).then(|| display.to_owned());
            Some((
                NameAddr {
                    display_name,
                    uri,
                    params,
                },
                true,
            ))
        }
        None => {
            let end = s
                .find([';', ' ', '\t'])
                .unwrap_or(s.len());
            let (uri, rest) = s.split_at_checked(end)?;
            if uri.contains('?') {
                return None;
            }
            let uri = Uri::parse(uri).ok()?;
            let params = param::parse_header_params(&mut Cursor::new(rest))?;
            Some((
                NameAddr {
                    display_name: None,
                    uri,
                    params,
                },
                false,
            ))
        }
    }
}

/// `display-name = *(token LWS) / quoted-string` (RFC 3261 §25.1). Unquoted names with
/// non-token characters such as `Bell, Alexander` are errors (RFC 4475 §3.1.2.15).
fn is_display_name(s: &str) -> bool {
    if s.starts_with('"') {
        let mut cur = Cursor::new(s);
        return cur.quoted_string().is_some() && cur.at_end();
    }
    s.bytes().all(|b| is_token_byte(b) || is_wsp(b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn name_addr_with_quoted_display_and_lws_params() {
        let na = NameAddr::parse(
            r#""J Rosenberg \\\""       <sip:jdrosen@example.com> ; tag = 98asjd8"#,
        )
        .unwrap();
        assert_eq!(na.display_name.as_deref(), Some(r#""J Rosenberg \\\"""#));
        assert_eq!(na.uri.to_string(), "sip:jdrosen@example.com");
        assert_eq!(na.tag(), Some("98asjd8"));
        assert_eq!(
            na.to_string(),
            r#""J Rosenberg \\\"" <sip:jdrosen@example.com>;tag=98asjd8"#
        );
    }

    #[test]
    fn addr_spec_params_belong_to_the_header() {
        // RFC 4475 §3.3.12 vs §3.3.13.
        let a = NameAddr::parse("sip:+19725552222@gw1.example.net;unknownparam").unwrap();
        assert!(a.uri.params.is_empty());
        assert_eq!(a.param("unknownparam"), Some(None));
        let b = NameAddr::parse("<sip:+19725552222@gw1.example.net;unknownparam>").unwrap();
        assert_eq!(b.uri.param("unknownparam"), Some(None));
        assert!(b.params.is_empty());
        let c =
            NameAddr::parse("sip:vivekg@chair-dnrc.example.com ;   tag    = 1918181833n").unwrap();
        assert_eq!(c.tag(), Some("1918181833n"));
    }

    #[test]
    fn token_display_names() {
        let a = NameAddr::parse("caller<sip:caller@example.com>;tag=323").unwrap();
        assert_eq!(a.display_name.as_deref(), Some("caller"));
        let b =
            NameAddr::parse("token1~` token2'+_ token3*%!.- <sip:mundane@example.com>").unwrap();
        assert_eq!(
            b.display_name.as_deref(),
            Some("token1~` token2'+_ token3*%!.-")
        );
    }

    #[test]
    fn jssip_contact_round_trips() {
        let s = concat!(
            "<sip:abc@df7jal23ls0d.invalid;transport=ws>;+sip.ice;reg-id=1;",
            r#"+sip.instance="<urn:uuid:3f8f8c2a-8d1e-4c42-9a3b-2e7b4d2c1f01>";expires=600"#,
        );
        let a = NameAddr::parse(s).unwrap();
        assert_eq!(a.to_string(), s);
        assert_eq!(a.uri.transport(), Some("ws"));
        assert_eq!(a.param("+sip.ice"), Some(None));
        assert_eq!(
            a.params
                .iter()
                .find(|p| p.name == "+sip.instance")
                .and_then(|p| p.unquoted_value())
                .as_deref(),
            Some("<urn:uuid:3f8f8c2a-8d1e-4c42-9a3b-2e7b4d2c1f01>")
        );
    }

    #[test]
    fn torture_rejections() {
        for bad in [
            r#""Mr. J. User <sip:j.user@example.com>"#, // quotbal
            r#""Watson, Thomas" < sip:t.watson@example.org >"#, // badaspec
            "Bell, Alexander <sip:a.g.bell@example.com>;tag=43", // baddn
            "sip:user@example.com?Route=%3Csip:sip.example.com%3E", // regbadct
            r#""Joe" <sip:joe@example.org>;;;;"#,       // badinv01
            "<sip:x@y",
            "",
            "<>",
            "\"a\" b <sip:x@y>",
        ] {
            assert!(NameAddr::parse(bad).is_err(), "{bad:?} parsed");
        }
    }

    #[test]
    fn unknown_schemes_and_escaped_headers_in_brackets() {
        let a = NameAddr::parse("<sip:user@example.com?Route=%3Csip:sip.example.com%3E>").unwrap();
        assert_eq!(
            a.uri.headers,
            [("Route".into(), "%3Csip:sip.example.com%3E".into())]
        );
        assert!(!NameAddr::parse("isbn:2983792873").unwrap().uri.is_sip());
        assert!(!NameAddr::parse("<http://www.example.com>;tag=3234233")
            .unwrap()
            .uri
            .is_sip());
    }

    #[test]
    fn tag_editing() {
        let mut a = NameAddr::parse("<sip:bob@example.com>").unwrap();
        assert_eq!(a.tag(), None);
        a.set_tag("x1");
        a.set_tag("x2");
        assert_eq!(a.to_string(), "<sip:bob@example.com>;tag=x2");
        assert!(a.remove_param("TAG"));
        assert_eq!(ContactValue::Addr(a).to_string(), "<sip:bob@example.com>");
        assert_eq!(ContactValue::Star.to_string(), "*");
    }
}
