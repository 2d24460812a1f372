//! `name[=value]` parameters of URIs, name-addrs and Vias (RFC 3261 §19.1.1, §25.1).
//!
//! Values are kept raw: a quoted value keeps its quotes and escapes, so
//! `+sip.instance="<urn:uuid:...>"` prints back exactly as received. Names compare
//! case-insensitively (RFC 3261 §7.3.1, §19.1.4).

use std::fmt;

use crate::scan::{is_token_byte, Cursor};

/// One parameter. `value` is `None` for a flag parameter (`;lr`, `;rport`) and raw otherwise,
/// including surrounding quotes if it was a quoted-string.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Param {
    /// Parameter name as written.
    pub name: String,
    /// Raw value, `None` for a flag parameter.
    pub value: Option<String>,
}

impl Param {
    /// A parameter from a name and an optional raw value.
    pub fn new(name: &str, value: Option<&str>) -> Param {
        Param {
            name: name.to_owned(),
            value: value.map(str::to_owned),
        }
    }

    /// The value with quotes and quoted-pair escapes removed (`"<urn:x>"` gives `<urn:x>`);
    /// unquoted values are returned as they are.
    pub fn unquoted_value(&self) -> Option<String> {
        self.value.as_deref().map(crate::scan::unquote)
    }
}

impl fmt::Display for Param {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name)?;
        if let Some(v) = &self.value {
            write!(f, "={v}")?;
        }
        Ok(())
    }
}

/// The value of the first parameter called `name` (case-insensitive): `Some(None)` for a flag.
pub(crate) fn find<'a>(params: &'a [Param], name: &str) -> Option<Option<&'a str>> {
    params
        .iter()
        .find(|p| p.name.eq_ignore_ascii_case(name))
        .map(|p| p.value.as_deref())
}

/// Replace the value of the first parameter called `name` in place, or append it.
pub(crate) fn set(params: &mut Vec<Param>, name: &str, value: Option<&str>) {
    match params
        .iter_mut()
        .find(|p| p.name.eq_ignore_ascii_case(name))
    {
        Some(p) => p.value = value.map(str::to_owned),
        None => params.push(Param::new(name, value)),
    }
}

/// Remove every parameter called `name`; true if one was there.
pub(crate) fn remove(params: &mut Vec<Param>, name: &str) -> bool {
    let before = params.len();
    params.retain(|p| !p.name.eq_ignore_ascii_case(name));
    params.len() != before
}

/// Write `;name[=value]` for each parameter.
pub(crate) fn write_all(f: &mut fmt::Formatter<'_>, params: &[Param]) -> fmt::Result {
    params.iter().try_for_each(|p| write!(f, ";{p}"))
}

/// Characters of an unquoted `gen-value` (token / host): token characters plus the `:[]` of
/// IPv6 references (RFC 3261 §25.1 `gen-value`, RFC 5118 §4.5 for `received`).
fn is_gen_value_byte(b: u8) -> bool {
    is_token_byte(b) || matches!(b, b':' | b'[' | b']')
}

/// Header parameters up to the end of the input: `*( SEMI generic-param )` with
/// `SEMI = SWS ";" SWS` and `EQUAL = SWS "=" SWS` (RFC 3261 §25.1). Empty names (`;;`),
/// empty values (`a=`) and trailing garbage are errors (RFC 4475 §3.1.2.1).
pub(crate) fn parse_header_params(cur: &mut Cursor<'_>) -> Option<Vec<Param>> {
    let mut params = Vec::new();
    loop {
        cur.skip_wsp();
        if cur.at_end() {
            return Some(params);
        }
        if !cur.eat(b';') {
            return None;
        }
        cur.skip_wsp();
        let name = cur.take_while(is_token_byte);
        if name.is_empty() {
            return None;
        }
        cur.skip_wsp();
        let value = if cur.eat(b'=') {
            cur.skip_wsp();
            let v = if cur.peek() == Some(b'"') {
                cur.quoted_string()?
            } else {
                cur.take_while(is_gen_value_byte)
            };
            if v.is_empty() {
                return None;
            }
            Some(v.to_owned())
        } else {
            None
        };
        params.push(Param {
            name: name.to_owned(),
            value,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Option<Vec<Param>> {
        parse_header_params(&mut Cursor::new(s))
    }

    #[test]
    fn header_params_with_lws_and_quotes() {
        let p = parse(
            r#" ; newparam = newvalue ;  secondparam ; q = 0.33;+sip.instance="<urn:uuid:1;x>""#,
        )
        .unwrap();
        assert_eq!(p[0], Param::new("newparam", Some("newvalue")));
        assert_eq!(p[1], Param::new("secondparam", None));
        assert_eq!(p[2], Param::new("q", Some("0.33")));
        assert_eq!(p[3].value.as_deref(), Some(r#""<urn:uuid:1;x>""#));
        assert_eq!(p[3].unquoted_value().as_deref(), Some("<urn:uuid:1;x>"));
    }

    #[test]
    fn empty_params_and_garbage_are_rejected() {
        assert_eq!(parse(";;"), None);
        assert_eq!(parse(";a="), None);
        assert_eq!(parse(";a=\"open"), None);
        assert_eq!(parse(";a b"), None);
        assert_eq!(parse(""), Some(vec![]));
        assert_eq!(
            parse(";received=[2001:db8::1]").unwrap()[0]
                .value
                .as_deref(),
            Some("[2001:db8::1]")
        );
    }

    #[test]
    fn find_set_remove_are_case_insensitive() {
        let mut v = vec![Param::new("Tag", Some("1")), Param::new("lr", None)];
        assert_eq!(find(&v, "tag"), Some(Some("1")));
        assert_eq!(find(&v, "LR"), Some(None));
        assert_eq!(find(&v, "x"), None);
        set(&mut v, "TAG", Some("2"));
        assert_eq!(v[0], Param::new("Tag", Some("2")));
        set(&mut v, "x", None);
        assert_eq!(v.len(), 3);
        assert!(remove(&mut v, "lR"));
        assert!(!remove(&mut v, "lr"));
        assert_eq!(
            v.iter().map(|p| p.to_string()).collect::<Vec<_>>(),
            ["Tag=2", "x"]
        );
    }
}
