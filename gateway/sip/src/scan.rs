//! Character classes of RFC 3261 §25.1 and a bounds-checked cursor over header values.
//!
//! Every reader in this crate goes through [`Cursor`], which never indexes: slicing uses
//! `str::get`, so a logic slip yields an empty slice and a parse error, never a panic (STYLE R5).
//! The cursor only stops on ASCII bytes, which are always UTF-8 character boundaries.

/// `token` characters: alphanum / "-" / "." / "!" / "%" / "*" / "_" / "+" / "`" / "'" / "~".
pub(crate) fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric()
        || matches!(
            b,
            b'-' | b'.' | b'!' | b'%' | b'*' | b'_' | b'+' | b'`' | b'\'' | b'~'
        )
}

/// A non-empty `token`.
pub(crate) fn is_token(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(is_token_byte)
}

/// `WSP` = SP / HTAB. Header values reach the typed parsers already unfolded (RFC 3261 §7.3.1),
/// so LWS and SWS are runs of WSP.
pub(crate) fn is_wsp(b: u8) -> bool {
    b == b' ' || b == b'\t'
}

/// Strip WSP on both sides.
pub(crate) fn trim_wsp(s: &str) -> &str {
    s.trim_matches([' ', '\t'])
}

/// Strip WSP on both sides of a byte slice.
pub(crate) fn trim_wsp_bytes(s: &[u8]) -> &[u8] {
    let start = s.iter().position(|&b| !is_wsp(b)).unwrap_or(s.len());
    let end = s.iter().rposition(|&b| !is_wsp(b)).map_or(start, |e| e + 1);
    s.get(start..end).unwrap_or_default()
}

/// The numeric value of a `1*DIGIT` string, `None` if it is empty, has a non-digit, or does not
/// fit in `u64` (overflow is checked, so a thousand digits cost a thousand steps, no more).
pub(crate) fn parse_digits(s: &str) -> Option<u64> {
    if s.is_empty() {
        return None;
    }
    let mut n: u64 = 0;
    for b in s.bytes() {
        if !b.is_ascii_digit() {
            return None;
        }
        n = n.checked_mul(10)?.checked_add(u64::from(b - b'0'))?;
    }
    Some(n)
}

/// Bounds-checked reader over a `&str`.
pub(crate) struct Cursor<'a> {
    s: &'a str,
    pos: usize,
}

impl<'a> Cursor<'a> {
    pub(crate) fn new(s: &'a str) -> Cursor<'a> {
        Cursor { s, pos: 0 }
    }

    pub(crate) fn peek(&self) -> Option<u8> {
        self.s.as_bytes().get(self.pos).copied()
    }

    pub(crate) fn at_end(&self) -> bool {
        self.pos >= self.s.len()
    }

    /// Consume `b` if it is next.
    pub(crate) fn eat(&mut self, b: u8) -> bool {
        if self.peek() == Some(b) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    /// Skip WSP; true if any was skipped.
    pub(crate) fn skip_wsp(&mut self) -> bool {
        let start = self.pos;
        while self.peek().is_some_and(is_wsp) {
            self.pos += 1;
        }
        self.pos > start
    }

    /// Consume bytes while `f` holds. Callers pass predicates that are false for every byte
    /// >= 0x80 or true for all of them, so the cursor stays on a character boundary.
    pub(crate) fn take_while(&mut self, f: impl Fn(u8) -> bool) -> &'a str {
        let start = self.pos;
        while self.peek().is_some_and(&f) {
            self.pos += 1;
        }
        self.slice(start, self.pos)
    }

    /// A `quoted-string` starting at the cursor (which must be on `"`), returned raw with its
    /// quotes. `None` if unterminated or if a quoted-pair escapes a non-ASCII byte
    /// (RFC 3261 §25.1: quoted-pair = "\" (%x00-09 / %x0B-0C / %x0E-7F)).
    pub(crate) fn quoted_string(&mut self) -> Option<&'a str> {
        let start = self.pos;
        if !self.eat(b'"') {
            return None;
        }
        loop {
            match self.peek()? {
                b'"' => {
                    self.pos += 1;
                    return Some(self.slice(start, self.pos));
                }
                b'\\' => {
                    self.pos += 1;
                    let escaped = self.peek()?;
                    if escaped >= 0x80 || escaped == b'\r' || escaped == b'\n' {
                        return None;
                    }
                    self.pos += 1;
                }
                _ => self.pos += 1,
            }
        }
    }

    /// Everything not consumed yet.
    pub(crate) fn rest(&self) -> &'a str {
        self.s.get(self.pos..).unwrap_or_default()
    }

    fn slice(&self, from: usize, to: usize) -> &'a str {
        self.s.get(from..to).unwrap_or_default()
    }
}

/// Split a header value on commas that are outside quoted strings and `<...>`
/// (RFC 3261 §7.3.1: a list header may be written as one line with comma-separated values).
/// Elements are WSP-trimmed and may be empty. `None` if a quote or angle bracket is unbalanced.
pub(crate) fn split_list(value: &str) -> Option<Vec<&str>> {
    let bytes = value.as_bytes();
    let mut out = Vec::new();
    let mut start = 0;
    let mut in_quote = false;
    let mut in_angle = false;
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        if in_quote {
            match b {
                b'\\' => i += 1,
                b'"' => in_quote = false,
                _ => {}
            }
        } else {
            match b {
                b'"' => in_quote = true,
                b'<' if !in_angle => in_angle = true,
                b'>' if in_angle => in_angle = false,
                b',' if !in_angle => {
                    out.push(trim_wsp(value.get(start..i)?));
                    start = i + 1;
                }
                _ => {}
            }
        }
        i += 1;
    }
    if in_quote || in_angle {
        return None;
    }
    out.push(trim_wsp(value.get(start..)?));
    Some(out)
}

/// Remove the quotes and quoted-pair escapes of a raw `quoted-string`; other input is returned
/// unchanged.
pub(crate) fn unquote(raw: &str) -> String {
    let Some(inner) = raw.strip_prefix('"').and_then(|r| r.strip_suffix('"')) else {
        return raw.to_owned();
    };
    let mut out = String::with_capacity(inner.len());
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            if let Some(next) = chars.next() {
                out.push(next);
            }
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_class_matches_rfc3261() {
        assert!(is_token("!interesting-Method0123456789_*+`.%indeed'~"));
        assert!(!is_token(""));
        assert!(!is_token("a b"));
        assert!(!is_token("a,b"));
        assert!(!is_token("a\"b"));
    }

    #[test]
    fn digits_overflow_is_none() {
        assert_eq!(parse_digits("0068"), Some(68));
        assert_eq!(parse_digits("36893488147419103232"), None);
        assert_eq!(parse_digits("-1"), None);
        assert_eq!(parse_digits(""), None);
    }

    #[test]
    fn quoted_string_handles_escapes_and_utf8() {
        let mut c = Cursor::new(r#""J Rosenberg \\\"" <sip:x>"#);
        assert_eq!(c.quoted_string(), Some(r#""J Rosenberg \\\"""#));
        assert_eq!(c.rest(), " <sip:x>");
        let mut c = Cursor::new("\"работающий\";x");
        assert_eq!(c.quoted_string(), Some("\"работающий\""));
        assert_eq!(Cursor::new("\"open").quoted_string(), None);
        assert_eq!(Cursor::new("\"a\\").quoted_string(), None);
    }

    #[test]
    fn list_split_respects_quotes_and_angles() {
        let v = split_list(r#""a, b" <sip:x;p=1,2>;q=1 , <sip:y>,,"#).unwrap();
        assert_eq!(v, [r#""a, b" <sip:x;p=1,2>;q=1"#, "<sip:y>", "", ""]);
        assert_eq!(split_list("\"open, x"), None);
        assert_eq!(split_list("<sip:x, y"), None);
    }

    #[test]
    fn unquote_removes_escapes() {
        assert_eq!(unquote(r#""<urn:uuid:1>""#), "<urn:uuid:1>");
        assert_eq!(unquote(r#""a\"b""#), "a\"b");
        assert_eq!(unquote("token"), "token");
        assert_eq!(unquote("\""), "\"");
    }

    #[test]
    fn trim_helpers() {
        assert_eq!(trim_wsp(" \ta b\t "), "a b");
        assert_eq!(trim_wsp_bytes(b"  x "), b"x");
        assert_eq!(trim_wsp_bytes(b"   "), b"");
    }
}
