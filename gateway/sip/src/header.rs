//! Header fields: the ordered list, compact-form-aware lookup (RFC 3261 §7.3.3), comma lists
//! (§7.3.1) and typed accessors for the headers the transaction and dialog layers need.
//!
//! Values are stored raw (WSP-trimmed, folding replaced by one SP) and parsed on demand, so a
//! header nobody asks about can never make a message fail, and every header prints back as it
//! came in.

use crate::cseq::CSeq;
use crate::error::ParseError;
use crate::name_addr::{parse_inner, ContactValue, NameAddr};
use crate::scan::{is_wsp, parse_digits, split_list, trim_wsp, trim_wsp_bytes};
use crate::via::Via;

/// Compact forms (RFC 3261 §7.3.3 and the RFCs that define each header, listed in the IANA
/// SIP parameters registry).
const COMPACT_FORMS: [(u8, &str); 20] = [
    (b'a', "Accept-Contact"),
    (b'b', "Referred-By"),
    (b'c', "Content-Type"),
    (b'd', "Request-Disposition"),
    (b'e', "Content-Encoding"),
    (b'f', "From"),
    (b'i', "Call-ID"),
    (b'j', "Reject-Contact"),
    (b'k', "Supported"),
    (b'l', "Content-Length"),
    (b'm', "Contact"),
    (b'n', "Identity-Info"),
    (b'o', "Event"),
    (b'r', "Refer-To"),
    (b's', "Subject"),
    (b't', "To"),
    (b'u', "Allow-Events"),
    (b'v', "Via"),
    (b'x', "Session-Expires"),
    (b'y', "Identity"),
];

/// The long form of a header name: `"v"` and `"V"` give `"Via"`, anything that is not a known
/// compact form is returned unchanged.
pub fn canonical_name(name: &str) -> &str {
    match name.as_bytes() {
        [c] => {
            let c = c.to_ascii_lowercase();
            COMPACT_FORMS
                .iter()
                .find(|(k, _)| *k == c)
                .map_or(name, |(_, long)| long)
        }
        _ => name,
    }
}

/// True if two header names denote the same header: case-insensitive, compact-form-aware.
pub fn names_match(a: &str, b: &str) -> bool {
    canonical_name(a).eq_ignore_ascii_case(canonical_name(b))
}

/// One header line as received.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Header {
    /// Name as received (`v`, `Via`, `VIA`), WSP-trimmed.
    pub name: String,
    /// Raw value: WSP-trimmed, folded continuation lines joined with a single space.
    pub value: String,
}

impl Header {
    /// A header from a name and a raw value.
    pub fn new(name: impl Into<String>, value: impl Into<String>) -> Header {
        Header {
            name: name.into(),
            value: value.into(),
        }
    }

    /// True if this header is `name` (case-insensitive, compact-form-aware).
    pub fn is(&self, name: &str) -> bool {
        names_match(&self.name, name)
    }
}

/// The header fields of a message, in order.
///
/// Order matters: Via and Route order is routing state, and RFC 3261 §7.3.1 lets a proxy rely
/// on the relative order of same-named fields. Values written by [`Headers::push`] and friends
/// must not contain CR or LF; they are written to the wire as given.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct Headers(pub Vec<Header>);

impl Headers {
    /// No headers.
    pub fn new() -> Headers {
        Headers(Vec::new())
    }

    /// The value of the first header called `name`.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.iter().find(|h| h.is(name)).map(|h| h.value.as_str())
    }

    /// The values of every header line called `name`, in order.
    pub fn get_all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.0
            .iter()
            .filter(move |h| h.is(name))
            .map(|h| h.value.as_str())
    }

    /// Every comma-separated element across all lines called `name`, split on commas outside
    /// quoted strings and `<>`, WSP-trimmed, empty elements skipped. For list headers only
    /// (Via, Contact, Route, Record-Route, Path, Supported, Require, Allow...): Date or
    /// WWW-Authenticate contain commas that are not separators. A line with an unbalanced
    /// quote or `<` is returned whole.
    pub fn values(&self, name: &str) -> Vec<String> {
        let mut out = Vec::new();
        for v in self.get_all(name) {
            match split_list(v) {
                Some(parts) => out.extend(
                    parts
                        .into_iter()
                        .filter(|p| !p.is_empty())
                        .map(str::to_owned),
                ),
                None => out.push(v.to_owned()),
            }
        }
        out
    }

    /// True if a header called `name` is present.
    pub fn contains(&self, name: &str) -> bool {
        self.0.iter().any(|h| h.is(name))
    }

    /// How many header lines are called `name`.
    pub fn count(&self, name: &str) -> usize {
        self.0.iter().filter(|h| h.is(name)).count()
    }

    /// Append a header at the end.
    pub fn push(&mut self, name: impl Into<String>, value: impl Into<String>) {
        self.0.push(Header::new(name, value));
    }

    /// Insert a header before the first header of the same name, or at the very top if there
    /// is none: a proxy or B2BUA adds its Via this way (RFC 3261 §16.6 step 8).
    pub fn push_front(&mut self, name: impl Into<String>, value: impl Into<String>) {
        let h = Header::new(name, value);
        let at = self.0.iter().position(|x| x.is(&h.name)).unwrap_or(0);
        self.0.insert(at, h);
    }

    /// Remove the first element of the list header `name` (a proxy takes its own Via off a
    /// response this way, RFC 3261 §16.7 step 3): the first line loses its first
    /// comma-separated element, or goes when that was its only one. Returns the element.
    pub fn pop_front_value(&mut self, name: &str) -> Option<String> {
        let at = self.0.iter().position(|h| h.is(name))?;
        let parts = split_list(&self.0[at].value).unwrap_or_else(|| vec![self.0[at].value.as_str()]);
        let rest: Vec<&str> = parts.iter().skip(1).copied().filter(|p| !p.is_empty()).collect();
        let first = parts.first().map(|p| p.to_string()).unwrap_or_default();
        if rest.is_empty() {
            self.0.remove(at);
        } else {
            self.0[at].value = rest.join(", ");
        }
        Some(first)
    }

    /// Remove every header called `name`; returns how many were removed.
    pub fn remove(&mut self, name: &str) -> usize {
        let before = self.0.len();
        self.0.retain(|h| !h.is(name));
        before - self.0.len()
    }

    /// Replace the value of the first header called `name` in place (its name spelling is
    /// kept), remove the others, or append the header if there is none.
    pub fn set(&mut self, name: impl Into<String>, value: impl Into<String>) {
        let name = name.into();
        let mut value = Some(value.into());
        self.0.retain_mut(|h| {
            if !h.is(&name) {
                return true;
            }
            match value.take() {
                Some(v) => {
                    h.value = v;
                    true
                }
                None => false,
            }
        });
        if let Some(v) = value {
            self.0.push(Header::new(name, v));
        }
    }

    /// Iterate over all headers in order.
    pub fn iter(&self) -> std::slice::Iter<'_, Header> {
        self.0.iter()
    }

    /// Iterate mutably over all headers in order.
    pub fn iter_mut(&mut self) -> std::slice::IterMut<'_, Header> {
        self.0.iter_mut()
    }

    /// Number of header lines.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// True if there are no headers.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    // ---- typed accessors -------------------------------------------------------------------

    /// Call-ID (RFC 3261 §20.8): present, non-empty, visible ASCII without whitespace.
    pub fn call_id(&self) -> Result<&str, ParseError> {
        let v = self.required("Call-ID")?;
        // callid = word ["@" word]; we accept any visible ASCII: '=' and '#' appear in real
        // Call-IDs and are harmless to us, only whitespace and non-ASCII break matching.
        if !v.is_empty() && v.bytes().all(|b| b.is_ascii_graphic()) {
            Ok(v)
        } else {
            Err(bad("Call-ID"))
        }
    }

    /// CSeq (RFC 3261 §20.16).
    pub fn cseq(&self) -> Result<CSeq, ParseError> {
        CSeq::parse(self.required("CSeq")?).map_err(|_| bad("CSeq"))
    }

    /// From (RFC 3261 §20.20).
    pub fn from(&self) -> Result<NameAddr, ParseError> {
        NameAddr::parse(self.required("From")?).map_err(|_| bad("From"))
    }

    /// To (RFC 3261 §20.39).
    pub fn to(&self) -> Result<NameAddr, ParseError> {
        NameAddr::parse(self.required("To")?).map_err(|_| bad("To"))
    }

    /// Every Via entry, top first, across all Via lines; empty if there is none.
    pub fn vias(&self) -> Result<Vec<Via>, ParseError> {
        let mut out = Vec::new();
        for line in self.get_all("Via") {
            for el in split_strict(line).ok_or_else(|| bad("Via"))? {
                out.push(Via::parse(el).map_err(|_| bad("Via"))?);
            }
        }
        Ok(out)
    }

    /// The topmost Via entry.
    pub fn top_via(&self) -> Result<Via, ParseError> {
        let line = self.required("Via")?;
        let first = split_strict(line)
            .and_then(|v| v.into_iter().next())
            .ok_or_else(|| bad("Via"))?;
        Via::parse(first).map_err(|_| bad("Via"))
    }

    /// Max-Forwards (RFC 3261 §20.22): `None` if absent, an error unless 0-255.
    pub fn max_forwards(&self) -> Result<Option<u32>, ParseError> {
        match self.get("Max-Forwards") {
            None => Ok(None),
            Some(v) => match parse_digits(v) {
                Some(n) if n <= 255 => Ok(Some(n as u32)), // n <= 255 fits
                _ => Err(bad("Max-Forwards")),
            },
        }
    }

    /// Every Contact element across all Contact lines. `*` is [`ContactValue::Star`] and must
    /// stand alone (RFC 3261 §10.2.2, §20.10).
    pub fn contacts(&self) -> Result<Vec<ContactValue>, ParseError> {
        let mut out = Vec::new();
        for line in self.get_all("Contact") {
            if trim_wsp(line) == "*" {
                out.push(ContactValue::Star);
                continue;
            }
            for el in split_strict(line).ok_or_else(|| bad("Contact"))? {
                let addr = parse_inner(el).ok_or_else(|| bad("Contact"))?.0;
                out.push(ContactValue::Addr(addr));
            }
        }
        if out.len() > 1 && out.contains(&ContactValue::Star) {
            return Err(bad("Contact"));
        }
        Ok(out)
    }

    /// Record-Route entries in order; each must be a name-addr in `<>` (RFC 3261 §20.30).
    pub fn record_routes(&self) -> Result<Vec<NameAddr>, ParseError> {
        self.bracketed_list("Record-Route")
    }

    /// Route entries in order; each must be a name-addr in `<>` (RFC 3261 §20.34).
    pub fn routes(&self) -> Result<Vec<NameAddr>, ParseError> {
        self.bracketed_list("Route")
    }

    /// Path entries in order (RFC 3327 §4); each must be a name-addr in `<>`.
    pub fn paths(&self) -> Result<Vec<NameAddr>, ParseError> {
        self.bracketed_list("Path")
    }

    /// Content-Length (RFC 3261 §20.14): `None` if absent. Every Content-Length line must hold
    /// the same decimal value (RFC 4475 §3.3.9); negative or overflowing values are errors
    /// (§3.1.2.3).
    pub fn content_length(&self) -> Result<Option<usize>, ParseError> {
        let mut found = None;
        for v in self.get_all("Content-Length") {
            let n = parse_content_length(v.as_bytes()).ok_or_else(|| bad("Content-Length"))?;
            if found.is_some_and(|f| f != n) {
                return Err(ParseError::malformed("Conflicting Content-Length headers"));
            }
            found = Some(n);
        }
        Ok(found)
    }

    /// Expires as delta-seconds (RFC 3261 §20.19): `None` if absent, an error if not a
    /// number within 32 bits.
    pub fn expires(&self) -> Result<Option<u32>, ParseError> {
        match self.get("Expires") {
            None => Ok(None),
            Some(v) => parse_digits(v)
                .and_then(|n| u32::try_from(n).ok())
                .map(Some)
                .ok_or_else(|| bad("Expires")),
        }
    }

    /// The raw Content-Type value, if any (compact `c` included).
    pub fn content_type(&self) -> Option<&str> {
        self.get("Content-Type")
    }

    fn required(&self, name: &str) -> Result<&str, ParseError> {
        self.get(name)
            .ok_or_else(|| ParseError::malformed(&format!("Missing {name} header")))
    }

    fn bracketed_list(&self, name: &str) -> Result<Vec<NameAddr>, ParseError> {
        let mut out = Vec::new();
        for line in self.get_all(name) {
            for el in split_strict(line).ok_or_else(|| bad(name))? {
                match parse_inner(el) {
                    Some((addr, true)) => out.push(addr),
                    _ => return Err(bad(name)),
                }
            }
        }
        Ok(out)
    }
}

impl<'a> IntoIterator for &'a Headers {
    type Item = &'a Header;
    type IntoIter = std::slice::Iter<'a, Header>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

impl From<Vec<Header>> for Headers {
    fn from(v: Vec<Header>) -> Headers {
        Headers(v)
    }
}

fn bad(name: &str) -> ParseError {
    ParseError::malformed(&format!("Bad {name} header"))
}

/// A comma list in which every element is non-empty (`a,,b` is an error, RFC 4475 §3.1.2.1).
fn split_strict(v: &str) -> Option<Vec<&str>> {
    let parts = split_list(v)?;
    (!parts.iter().any(|p| p.is_empty())).then_some(parts)
}

/// A Content-Length value: `1*DIGIT` within usize, surrounding WSP ignored.
pub(crate) fn parse_content_length(v: &[u8]) -> Option<usize> {
    let v = std::str::from_utf8(trim_wsp_bytes(v)).ok()?;
    parse_digits(v).and_then(|n| usize::try_from(n).ok())
}

// ---- raw header lines ----------------------------------------------------------------------

/// The next line of `buf` from `pos`: its bytes without the LF and an optional CR before it,
/// and the position after the LF. `None` if no LF follows `pos`.
pub(crate) fn next_line(buf: &[u8], pos: usize) -> Option<(&[u8], usize)> {
    let rest = buf.get(pos..)?;
    let nl = rest.iter().position(|&b| b == b'\n')?;
    let line = rest.get(..nl)?;
    Some((line.strip_suffix(b"\r").unwrap_or(line), pos + nl + 1))
}

/// A header field as it sits in the bytes.
pub(crate) struct RawField<'a> {
    /// Name, WSP-trimmed (`Via  :` gives `Via`).
    pub(crate) name: &'a [u8],
    /// The rest of the first line after the colon, then each continuation line.
    pub(crate) segments: Vec<&'a [u8]>,
}

impl RawField<'_> {
    /// The unfolded value: each segment WSP-trimmed, non-empty segments joined by one SP
    /// (RFC 3261 §7.3.1: folding is equivalent to a single SP).
    pub(crate) fn value(&self) -> Vec<u8> {
        let mut out = Vec::new();
        for seg in self
            .segments
            .iter()
            .map(|s| trim_wsp_bytes(s))
            .filter(|s| !s.is_empty())
        {
            if !out.is_empty() {
                out.push(b' ');
            }
            out.extend_from_slice(seg);
        }
        out
    }
}

/// One logical line of a header section.
pub(crate) enum RawLine<'a> {
    /// `name: value` with its continuation lines.
    Field(RawField<'a>),
    /// A line without a colon, or a continuation line with no header before it.
    Bad,
}

/// Iterator over the header fields from `pos` (just after the start line) to the empty line.
/// Linear in the input: each byte is visited a bounded number of times.
pub(crate) struct HeaderLines<'a> {
    buf: &'a [u8],
    pos: usize,
    body_start: Option<usize>,
}

impl<'a> HeaderLines<'a> {
    pub(crate) fn new(buf: &'a [u8], pos: usize) -> HeaderLines<'a> {
        HeaderLines {
            buf,
            pos,
            body_start: None,
        }
    }

    /// Where the body starts, once the iterator has reached the empty line; `None` while
    /// iterating and if the input ended without one.
    pub(crate) fn body_start(&self) -> Option<usize> {
        self.body_start
    }
}

impl<'a> Iterator for HeaderLines<'a> {
    type Item = RawLine<'a>;

    fn next(&mut self) -> Option<RawLine<'a>> {
        if self.body_start.is_some() {
            return None;
        }
        let (line, next) = next_line(self.buf, self.pos)?;
        if line.is_empty() {
            self.body_start = Some(next);
            return None;
        }
        self.pos = next;
        if line.first().copied().is_some_and(is_wsp) {
            return Some(RawLine::Bad);
        }
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            return Some(RawLine::Bad);
        };
        let (name, first) = line.split_at(colon); // colon < line.len(): found by position()
        let mut segments = vec![first.get(1..).unwrap_or_default()];
        while let Some((cont, after)) = next_line(self.buf, self.pos) {
            if !cont.first().copied().is_some_and(is_wsp) {
                break;
            }
            segments.push(cont);
            self.pos = after;
        }
        Some(RawLine::Field(RawField {
            name: trim_wsp_bytes(name),
            segments,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(list: &[(&str, &str)]) -> Headers {
        Headers(list.iter().map(|(n, v)| Header::new(*n, *v)).collect())
    }

    #[test]
    fn the_top_via_comes_off_a_combined_line_or_takes_its_line() {
        let mut h = headers(&[("Via", "SIP/2.0/UDP a;branch=z9hG4bK1, SIP/2.0/UDP b;branch=z9hG4bK2"), ("v", "SIP/2.0/TCP c")]);
        assert_eq!(h.pop_front_value("Via").as_deref(), Some("SIP/2.0/UDP a;branch=z9hG4bK1"));
        assert_eq!(h.values("Via"), ["SIP/2.0/UDP b;branch=z9hG4bK2", "SIP/2.0/TCP c"]);
        assert_eq!(h.pop_front_value("via").as_deref(), Some("SIP/2.0/UDP b;branch=z9hG4bK2"));
        assert_eq!(h.len(), 1);
        assert_eq!(h.pop_front_value("Via").as_deref(), Some("SIP/2.0/TCP c"));
        assert!(h.is_empty() && h.pop_front_value("Via").is_none());
    }

    #[test]
    fn compact_forms_match_both_ways() {
        let h = headers(&[
            ("v", "SIP/2.0/UDP a"),
            ("I", "x@y"),
            ("l", "0"),
            ("Via", "SIP/2.0/UDP b"),
        ]);
        assert_eq!(h.get("Via"), Some("SIP/2.0/UDP a"));
        assert_eq!(h.get("call-id"), Some("x@y"));
        assert_eq!(h.get("i"), Some("x@y"));
        assert_eq!(h.get("Content-Length"), Some("0"));
        assert_eq!(h.get_all("V").count(), 2);
        assert_eq!(canonical_name("K"), "Supported");
        assert_eq!(canonical_name("q"), "q");
        assert!(names_match("x", "Session-Expires"));
        assert!(!names_match("Via", "Vias"));
    }

    #[test]
    fn values_split_lists() {
        let h = headers(&[
            ("Supported", "path, gruu,outbound"),
            ("k", "timer"),
            ("Contact", r#""A, B" <sip:a@b;x=1,2>, <sip:c@d>"#),
            ("Odd", "\"unbalanced, x"),
        ]);
        assert_eq!(h.values("Supported"), ["path", "gruu", "outbound", "timer"]);
        assert_eq!(h.values("m"), [r#""A, B" <sip:a@b;x=1,2>"#, "<sip:c@d>"]);
        assert_eq!(h.values("Odd"), ["\"unbalanced, x"]);
    }

    #[test]
    fn editing_keeps_order() {
        let mut h = headers(&[("To", "a"), ("Via", "1"), ("From", "b"), ("v", "2")]);
        h.push_front("Via", "0");
        assert_eq!(h.get_all("Via").collect::<Vec<_>>(), ["0", "1", "2"]);
        assert_eq!(h.iter().next().map(|x| x.name.as_str()), Some("To"));
        h.push_front("Record-Route", "<sip:rr>");
        assert_eq!(
            h.iter().next().map(|x| x.name.as_str()),
            Some("Record-Route")
        );
        h.set("Via", "only");
        assert_eq!(h.get_all("Via").collect::<Vec<_>>(), ["only"]);
        assert_eq!(h.iter().nth(2).map(|x| x.value.as_str()), Some("only"));
        h.set("X-New", "1");
        assert_eq!(h.iter().last().map(|x| x.name.as_str()), Some("X-New"));
        assert_eq!(h.remove("From"), 1);
        assert_eq!(h.remove("From"), 0);
        assert_eq!(h.len(), 4);
        assert!(!h.is_empty());
    }

    #[test]
    fn typed_accessors() {
        let h = headers(&[
            (
                "Via",
                "SIP/2.0/WSS a.invalid;branch=z9hG4bK1, SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bK2",
            ),
            ("v", "SIP/2.0/TCP b;branch=z9hG4bK3"),
            ("f", "<sip:a@b>;tag=1"),
            ("t", "sip:c@d"),
            ("i", "abc"),
            ("CSeq", "7 INVITE"),
            ("Max-Forwards", "70"),
            ("m", "<sip:a@c;transport=ws>;expires=600, <sip:b@c>"),
            ("Record-Route", "<sip:p1;lr>, <sip:p2;lr>"),
            ("Route", "<sip:p3;lr>"),
            ("l", "12"),
            ("Expires", "3600"),
        ]);
        assert_eq!(h.vias().unwrap().len(), 3);
        assert_eq!(h.top_via().unwrap().branch(), Some("z9hG4bK1"));
        assert_eq!(h.from().unwrap().tag(), Some("1"));
        assert_eq!(h.to().unwrap().tag(), None);
        assert_eq!(h.call_id().unwrap(), "abc");
        assert_eq!(h.cseq().unwrap().seq, 7);
        assert_eq!(h.max_forwards().unwrap(), Some(70));
        assert_eq!(h.contacts().unwrap().len(), 2);
        assert_eq!(h.record_routes().unwrap().len(), 2);
        assert_eq!(h.routes().unwrap()[0].uri.param("lr"), Some(None));
        assert_eq!(h.content_length().unwrap(), Some(12));
        assert_eq!(h.expires().unwrap(), Some(3600));
        assert_eq!(Headers::new().max_forwards().unwrap(), None);
        assert_eq!(
            Headers::new().call_id().unwrap_err().reason,
            "Missing Call-ID header"
        );
    }

    #[test]
    fn typed_accessor_errors_name_the_header() {
        let h = headers(&[
            ("Via", "SIP/2.0/UDP 192.0.2.15;;,;,,"),
            ("Max-Forwards", "300"),
            ("Expires", "10000000000000000000000000"),
            ("Contact", "*, <sip:a@b>"),
            ("Route", "sip:p1"),
            ("Content-Length", "13"),
            ("l", "5"),
            ("Call-ID", "a b"),
        ]);
        assert_eq!(h.vias().unwrap_err().reason, "Bad Via header");
        assert_eq!(h.top_via().unwrap_err().reason, "Bad Via header");
        assert_eq!(
            h.max_forwards().unwrap_err().reason,
            "Bad Max-Forwards header"
        );
        assert_eq!(h.expires().unwrap_err().reason, "Bad Expires header");
        assert_eq!(h.contacts().unwrap_err().reason, "Bad Contact header");
        assert_eq!(h.routes().unwrap_err().reason, "Bad Route header");
        assert!(h.content_length().is_err());
        assert_eq!(h.call_id().unwrap_err().reason, "Bad Call-ID header");
        let star = headers(&[("Contact", " * ")]);
        assert_eq!(star.contacts().unwrap(), [ContactValue::Star]);
    }

    #[test]
    fn raw_lines_unfold() {
        let buf = b"X: a  \r\n  b\r\n\t c\r\nV :  SIP/2.0/UDP h\r\nNo colon\r\n\r\nbody";
        let mut it = HeaderLines::new(buf, 0);
        let Some(RawLine::Field(f)) = it.next() else {
            panic!()
        };
        assert_eq!((f.name, f.value().as_slice()), (&b"X"[..], &b"a b c"[..]));
        let Some(RawLine::Field(f)) = it.next() else {
            panic!()
        };
        assert_eq!(
            (f.name, f.value().as_slice()),
            (&b"V"[..], &b"SIP/2.0/UDP h"[..])
        );
        assert!(matches!(it.next(), Some(RawLine::Bad)));
        assert!(it.next().is_none());
        assert_eq!(it.body_start(), Some(buf.len() - 4));
        let mut unterminated = HeaderLines::new(b"X: a\r\n", 0);
        assert!(unterminated.next().is_some());
        assert!(unterminated.next().is_none());
        assert_eq!(unterminated.body_start(), None);
    }
}
