//! Whole messages: parse one buffer (RFC 3261 §7, §18.3), validate requests (§8.2), print
//! faithfully, and build the answers to malformed requests (§8.2.6.2).

use crate::error::{ParseError, ParseErrorKind};
use crate::header::{
    names_match, next_line, parse_content_length, Header, HeaderLines, Headers, RawField, RawLine,
};
use crate::method::Method;
use crate::scan::is_token;
use crate::uri::{Scheme, Uri};
use crate::via::BRANCH_MAGIC_COOKIE;

/// A SIP request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// Method from the Request-Line.
    pub method: Method,
    /// Request-URI.
    pub uri: Uri,
    /// SIP-Version as received (`SIP/2.0`, any case).
    pub version: String,
    /// Headers in order.
    pub headers: Headers,
    /// Body bytes, exactly Content-Length of them.
    pub body: Vec<u8>,
}

/// A SIP response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// SIP-Version as received.
    pub version: String,
    /// Status code, 100-699.
    pub code: u16,
    /// Reason phrase exactly as received (UTF-8, possibly empty, RFC 4475 §3.1.1.12-13).
    pub reason: String,
    /// Headers in order.
    pub headers: Headers,
    /// Body bytes.
    pub body: Vec<u8>,
}

/// A request or a response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// A request.
    Request(Request),
    /// A response.
    Response(Response),
}

impl Message {
    /// Parse one whole message: a UDP datagram, one WebSocket message (RFC 7118 §5: one SIP
    /// message per WebSocket message) or one frame cut by [`crate::StreamFramer`].
    ///
    /// Syntax only: start line, header lines (names are tokens, values UTF-8 without control
    /// characters outside quoted-pairs, folding undone) and Content-Length framing per
    /// RFC 3261 §18.3: bytes beyond Content-Length are discarded (RFC 4475 §3.1.1.8), fewer
    /// bytes than Content-Length is an error (§3.1.2.2), no Content-Length means the rest of
    /// the buffer is the body (§3.4.1). Header values are not parsed here; call
    /// [`Request::validate`] for the mandatory ones.
    pub fn parse(buf: &[u8]) -> Result<Message, ParseError> {
        parse_message(buf)
    }

    /// Serialize: start line, headers as stored, a correct Content-Length (see
    /// [`Request::to_bytes`]), the body.
    pub fn to_bytes(&self) -> Vec<u8> {
        match self {
            Message::Request(r) => r.to_bytes(),
            Message::Response(r) => r.to_bytes(),
        }
    }

    /// The headers.
    pub fn headers(&self) -> &Headers {
        match self {
            Message::Request(r) => &r.headers,
            Message::Response(r) => &r.headers,
        }
    }

    /// The headers, mutably.
    pub fn headers_mut(&mut self) -> &mut Headers {
        match self {
            Message::Request(r) => &mut r.headers,
            Message::Response(r) => &mut r.headers,
        }
    }

    /// The body.
    pub fn body(&self) -> &[u8] {
        match self {
            Message::Request(r) => &r.body,
            Message::Response(r) => &r.body,
        }
    }

    /// True for a request.
    pub fn is_request(&self) -> bool {
        matches!(self, Message::Request(_))
    }

    /// [`Request::validate`] or [`Response::validate`].
    pub fn validate(&self) -> Result<(), ParseError> {
        match self {
            Message::Request(r) => r.validate(),
            Message::Response(r) => r.validate(),
        }
    }
}

impl Request {
    /// A `SIP/2.0` request with no headers and no body.
    pub fn new(method: Method, uri: Uri) -> Request {
        Request {
            method,
            uri,
            version: "SIP/2.0".to_owned(),
            headers: Headers::new(),
            body: Vec::new(),
        }
    }

    /// Serialize. Header names, values and order are written as stored; Content-Length (or
    /// `l`) is always rewritten in place to the body length, or appended if absent, so the
    /// output is always framed correctly for stream transports (RFC 3261 §18.3, §20.14).
    pub fn to_bytes(&self) -> Vec<u8> {
        let start = format!("{} {} {}\r\n", self.method, self.uri, self.version);
        finish(start, &self.headers, &self.body)
    }

    /// Check what a UAS must check before processing (RFC 3261 §8.2, §20): Via, From, To,
    /// Call-ID and CSeq present once each (Via at least once) and parseable; CSeq method equal to
    /// the request method (§8.1.1.5, RFC 4475 §3.1.2.17-18); a top branch that is not the bare
    /// magic cookie (RFC 4475 §3.2.1); Max-Forwards, Content-Length at most once and parseable;
    /// Contact, Route and Record-Route parseable; no headers in a SIP Request-URI (§19.1.1,
    /// RFC 4475 §3.1.2.11); Date in RFC 1123 GMT form (§20.17, RFC 4475 §3.1.2.12).
    ///
    /// Not checked here: Expires, whose out-of-range values RFC 4475 §3.1.2.4 lets the
    /// registrar treat as the default, and everything the layer above decides (416, 420, 415).
    pub fn validate(&self) -> Result<(), ParseError> {
        let h = &self.headers;
        let vias = h.vias()?;
        let top = vias
            .first()
            .ok_or_else(|| ParseError::malformed("Missing Via header"))?;
        if top.branch() == Some(BRANCH_MAGIC_COOKIE) {
            return Err(ParseError::malformed("Bad Via branch"));
        }
        check_dialog_headers(h)?;
        if h.cseq()?.method != self.method {
            return Err(ParseError::malformed("CSeq method does not match"));
        }
        at_most_once(h, "Max-Forwards")?;
        h.max_forwards()?;
        h.contacts()?;
        h.routes()?;
        h.record_routes()?;
        if self.uri.is_sip() && !self.uri.headers.is_empty() {
            return Err(ParseError::malformed("Bad Request-URI"));
        }
        if h.get("Date").is_some_and(|d| !is_sip_date(d)) {
            return Err(ParseError::malformed("Bad Date header"));
        }
        Ok(())
    }

    /// True if the Request-URI scheme is one the gateway routes: sip, sips or tel.
    pub fn uri_scheme_supported(&self) -> bool {
        matches!(self.uri.scheme, Scheme::Sip | Scheme::Sips | Scheme::Tel)
    }

    /// [`ParseErrorKind::UnsupportedUriScheme`] (answer 416, RFC 3261 §8.2.2.1) unless
    /// [`Request::uri_scheme_supported`].
    pub fn check_uri_scheme(&self) -> Result<(), ParseError> {
        if self.uri_scheme_supported() {
            Ok(())
        } else {
            Err(ParseError {
                kind: ParseErrorKind::UnsupportedUriScheme,
                reason: "Unsupported URI Scheme".to_owned(),
            })
        }
    }
}

impl Response {
    /// A `SIP/2.0` response with no headers and no body.
    pub fn new(code: u16, reason: &str) -> Response {
        Response {
            version: "SIP/2.0".to_owned(),
            code,
            reason: reason.to_owned(),
            headers: Headers::new(),
            body: Vec::new(),
        }
    }

    /// Serialize, reason phrase exactly as stored; Content-Length as for
    /// [`Request::to_bytes`].
    pub fn to_bytes(&self) -> Vec<u8> {
        // Status-Line = SIP-Version SP Status-Code SP Reason-Phrase: the second SP is written
        // even for an empty phrase (RFC 4475 §3.1.1.13).
        let start = format!("{} {} {}\r\n", self.version, self.code, self.reason);
        finish(start, &self.headers, &self.body)
    }

    /// The checks a UAC or proxy makes before matching a response to a transaction: Via,
    /// From, To, Call-ID and CSeq present and parseable (RFC 4475 §3.1.2.5: such a response is
    /// discarded). A failing response is dropped, never answered.
    pub fn validate(&self) -> Result<(), ParseError> {
        let h = &self.headers;
        if h.vias()?.is_empty() {
            return Err(ParseError::malformed("Missing Via header"));
        }
        check_dialog_headers(h)?;
        h.contacts()?;
        h.record_routes()?;
        Ok(())
    }
}

/// Build a response to `req` as RFC 3261 §8.2.6.2 says: all Via headers in order, From, To,
/// Call-ID and CSeq copied as received, nothing else. No To tag is added; the caller adds one
/// (except to a 100). Content-Length is added by `to_bytes`.
pub fn response_to(req: &Request, code: u16, reason: &str) -> Response {
    let mut r = Response::new(code, reason);
    r.headers
        .0
        .extend(req.headers.iter().filter(|h| h.is("Via")).cloned());
    for name in ["From", "To", "Call-ID", "CSeq"] {
        if let Some(h) = req.headers.iter().find(|h| h.is(name)) {
            r.headers.0.push(h.clone());
        }
    }
    r
}

/// The 400 to send for a request that fails [`Message::parse`] with
/// [`ParseErrorKind::Malformed`] or fails [`Request::validate`], with the error's reason phrase.
/// Via, From, To, Call-ID and CSeq are lifted from the raw lines, so it works even when the
/// start line or other headers are broken.
///
/// `None` when there is nothing to answer: the bytes are a response (never answered), an ACK
/// (RFC 3261 §17.1.1.3: ACK gets no response), unparseable, not a 400 case, fine, or carry no
/// Via to route an answer with.
pub fn salvage_for_400(bytes: &[u8]) -> Option<Response> {
    let err = rejection(bytes)?;
    if err.kind != ParseErrorKind::Malformed {
        return None;
    }
    salvage_with(bytes, 400, &err.reason)
}

/// Like [`salvage_for_400`] for every answerable failure: 400 for malformed requests, 505 for
/// an unsupported SIP-Version (RFC 4475 §3.1.2.16).
pub fn salvage_response(bytes: &[u8]) -> Option<Response> {
    let err = rejection(bytes)?;
    salvage_with(bytes, err.status_code()?, &err.reason)
}

// ---- parsing -------------------------------------------------------------------------------

enum StartLine {
    Request {
        method: Method,
        uri: Uri,
        version: String,
    },
    Response {
        version: String,
        code: u16,
        reason: String,
    },
}

fn parse_message(buf: &[u8]) -> Result<Message, ParseError> {
    // RFC 3261 §7.5: CRLFs before the start line are ignored.
    let start = buf
        .iter()
        .position(|&b| b != b'\r' && b != b'\n')
        .ok_or_else(|| ParseError::unparseable("Empty message"))?;
    let (line, after_start) =
        next_line(buf, start).ok_or_else(|| ParseError::unparseable("No start line"))?;
    let start_line = parse_start_line(line)?;

    let mut lines = HeaderLines::new(buf, after_start);
    let mut headers = Vec::new();
    for raw in lines.by_ref() {
        match raw {
            RawLine::Field(f) => headers.push(header_from_raw(&f)?),
            RawLine::Bad => return Err(ParseError::malformed("Bad header line")),
        }
    }
    let body_start = lines
        .body_start()
        .ok_or_else(|| ParseError::malformed("Missing empty line after headers"))?;
    let headers = Headers(headers);
    let rest = buf.get(body_start..).unwrap_or_default();
    let body = match headers.content_length()? {
        None => rest,
        Some(n) => rest
            .get(..n)
            .ok_or_else(|| ParseError::malformed("Content-Length larger than message"))?,
    };
    let body = body.to_vec();
    Ok(match start_line {
        StartLine::Request {
            method,
            uri,
            version,
        } => Message::Request(Request {
            method,
            uri,
            version,
            headers,
            body,
        }),
        StartLine::Response {
            version,
            code,
            reason,
        } => Message::Response(Response {
            version,
            code,
            reason,
            headers,
            body,
        }),
    })
}

fn parse_start_line(line: &[u8]) -> Result<StartLine, ParseError> {
    if line
        .get(..4)
        .is_some_and(|p| p.eq_ignore_ascii_case(b"SIP/"))
    {
        parse_status_line(line)
    } else {
        parse_request_line(line)
    }
}

/// `Request-Line = Method SP Request-URI SP SIP-Version CRLF` with exactly one SP between the
/// elements: extra or trailing whitespace and embedded LWS are errors (RFC 4475 §3.1.2.8-10),
/// and so is a Request-URI in `<>` (§3.1.2.7).
fn parse_request_line(line: &[u8]) -> Result<StartLine, ParseError> {
    let unparseable = || ParseError::unparseable("Bad start line");
    let text = std::str::from_utf8(line).map_err(|_| unparseable())?;
    let mut parts = text.split(' ');
    let method = parts.next().unwrap_or_default();
    // Only call it a request line (worth a 400) if it starts with a method and names a SIP
    // version somewhere; anything else is not SIP and is dropped.
    if !is_token(method) || !contains_ignore_case(line, b"SIP/") {
        return Err(unparseable());
    }
    let bad_line = || ParseError::malformed("Bad Request-Line");
    let (Some(uri), Some(version), None) = (parts.next(), parts.next(), parts.next()) else {
        return Err(bad_line());
    };
    check_version(version)?;
    let uri = Uri::parse(uri).map_err(|_| ParseError::malformed("Bad Request-URI"))?;
    let method = method.parse().map_err(|_| bad_line())?;
    Ok(StartLine::Request {
        method,
        uri,
        version: version.to_owned(),
    })
}

/// `Status-Line = SIP-Version SP Status-Code SP Reason-Phrase CRLF`; Status-Code is exactly
/// three digits, 100-699 (RFC 3261 §7.2, RFC 4475 §3.1.2.19). A missing second SP is tolerated
/// as an empty phrase.
fn parse_status_line(line: &[u8]) -> Result<StartLine, ParseError> {
    let bad = || ParseError::malformed("Bad Status-Line");
    let sp = line.iter().position(|&b| b == b' ').ok_or_else(bad)?;
    let (version, rest) = line.split_at(sp); // sp < line.len(): found by position()
    let version = std::str::from_utf8(version).map_err(|_| bad())?;
    check_version(version)?;
    let rest = rest.get(1..).unwrap_or_default();
    let digits = rest
        .get(..3)
        .filter(|d| d.iter().all(u8::is_ascii_digit))
        .ok_or_else(bad)?;
    if !matches!(rest.get(3), None | Some(b' ')) {
        return Err(bad());
    }
    let code = digits
        .iter()
        .fold(0u16, |n, d| n * 10 + u16::from(d - b'0')); // 3 digits < 1000
    if !(100..=699).contains(&code) {
        return Err(bad());
    }
    let reason = rest.get(4..).unwrap_or_default();
    if reason
        .iter()
        .any(|&b| (b < 0x20 && b != b'\t') || b == 0x7f)
    {
        return Err(ParseError::malformed("Bad Reason-Phrase"));
    }
    let reason = String::from_utf8(reason.to_vec())
        .map_err(|_| ParseError::malformed("Bad Reason-Phrase"))?;
    Ok(StartLine::Response {
        version: version.to_owned(),
        code,
        reason,
    })
}

/// `SIP-Version = "SIP" "/" 1*DIGIT "." 1*DIGIT`; only 2.0 is supported (RFC 3261 §7.1), any
/// other well-formed version is [`ParseErrorKind::VersionNotSupported`].
fn check_version(v: &str) -> Result<(), ParseError> {
    if v.eq_ignore_ascii_case("SIP/2.0") {
        return Ok(());
    }
    let well_formed = v
        .get(..4)
        .filter(|p| p.eq_ignore_ascii_case("SIP/"))
        .and_then(|_| v.get(4..))
        .and_then(|n| n.split_once('.'))
        .is_some_and(|(major, minor)| {
            [major, minor]
                .iter()
                .all(|d| !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit()))
        });
    if well_formed {
        Err(ParseError {
            kind: ParseErrorKind::VersionNotSupported,
            reason: "Version Not Supported".to_owned(),
        })
    } else {
        Err(ParseError::malformed("Bad SIP-Version"))
    }
}

/// A header from its raw field: the name must be a token, the value UTF-8 with no control
/// characters except HTAB and quoted-pairs inside quoted strings (RFC 3261 §25.1 allows
/// `\` NUL in a quoted-string, RFC 4475 §3.1.1.2; a bare NUL anywhere is an error).
fn header_from_raw(f: &RawField<'_>) -> Result<Header, ParseError> {
    let name = std::str::from_utf8(f.name)
        .ok()
        .filter(|n| is_token(n))
        .ok_or_else(|| ParseError::malformed("Bad header name"))?;
    let value = f.value();
    if !value_bytes_ok(&value) {
        return Err(ParseError::malformed("Bad header value"));
    }
    let value =
        String::from_utf8(value).map_err(|_| ParseError::malformed("Header value not UTF-8"))?;
    Ok(Header {
        name: name.to_owned(),
        value,
    })
}

fn value_bytes_ok(v: &[u8]) -> bool {
    let mut in_quote = false;
    let mut i = 0;
    while let Some(&b) = v.get(i) {
        if in_quote && b == b'\\' {
            // quoted-pair: any ASCII but CR and LF may follow, control characters included.
            match v.get(i + 1) {
                Some(&n) if n != b'\r' && n != b'\n' => {
                    i += 2;
                    continue;
                }
                _ => return false,
            }
        }
        if b == b'"' {
            in_quote = !in_quote;
        } else if (b < 0x20 && b != b'\t') || b == 0x7f {
            return false;
        }
        i += 1;
    }
    true
}

fn contains_ignore_case(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len())
        .any(|w| w.eq_ignore_ascii_case(needle))
}

// ---- validation helpers --------------------------------------------------------------------

/// From, To, Call-ID, CSeq exactly once each and parseable; Content-Length at most once
/// (RFC 3261 §7.3.1: single-valued headers appear once; RFC 4475 §3.3.8-9).
fn check_dialog_headers(h: &Headers) -> Result<(), ParseError> {
    for name in ["From", "To", "Call-ID", "CSeq"] {
        match h.count(name) {
            0 => return Err(ParseError::malformed(&format!("Missing {name} header"))),
            1 => {}
            _ => return Err(ParseError::malformed(&format!("Multiple {name} headers"))),
        }
    }
    h.from()?;
    h.to()?;
    h.call_id()?;
    h.cseq()?;
    at_most_once(h, "Content-Length")?;
    h.content_length()?;
    Ok(())
}

fn at_most_once(h: &Headers, name: &str) -> Result<(), ParseError> {
    if h.count(name) > 1 {
        return Err(ParseError::malformed(&format!("Multiple {name} headers")));
    }
    Ok(())
}

/// `SIP-date = wkday "," SP date1 SP time SP "GMT"`, date1 = `2DIGIT SP month SP 4DIGIT`,
/// time = `2DIGIT ":" 2DIGIT ":" 2DIGIT` (RFC 3261 §25.1; §20.17: GMT only, case-sensitive).
fn is_sip_date(s: &str) -> bool {
    const SHAPE: &[u8; 29] = b"aaa, dd aaa dddd dd:dd:dd GMT";
    const WKDAYS: [&str; 7] = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let b = s.as_bytes();
    b.len() == SHAPE.len()
        && b.iter().zip(SHAPE).all(|(&c, &p)| match p {
            b'a' => c.is_ascii_alphabetic(),
            b'd' => c.is_ascii_digit(),
            _ => c == p,
        })
        && s.get(0..3).is_some_and(|w| WKDAYS.contains(&w))
        && s.get(8..11).is_some_and(|m| MONTHS.contains(&m))
}

// ---- printing ------------------------------------------------------------------------------

fn finish(start: String, headers: &Headers, body: &[u8]) -> Vec<u8> {
    let len = body.len().to_string();
    let mut out = start.into_bytes();
    let mut wrote_length = false;
    for h in headers {
        out.extend_from_slice(h.name.as_bytes());
        out.push(b':');
        let value = if h.is("Content-Length") {
            wrote_length = true;
            len.as_str()
        } else {
            h.value.as_str()
        };
        if !value.is_empty() {
            out.push(b' ');
            out.extend_from_slice(value.as_bytes());
        }
        out.extend_from_slice(b"\r\n");
    }
    if !wrote_length {
        out.extend_from_slice(format!("Content-Length: {len}\r\n").as_bytes());
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(body);
    out
}

// ---- salvage -------------------------------------------------------------------------------

/// Why a request would be rejected, `None` if it is a response, an ACK, or fine.
fn rejection(bytes: &[u8]) -> Option<ParseError> {
    let start = bytes.iter().position(|&b| b != b'\r' && b != b'\n')?;
    let first = bytes.get(start..)?;
    if first
        .get(..4)
        .is_some_and(|p| p.eq_ignore_ascii_case(b"SIP/"))
        || first.starts_with(b"ACK ")
    {
        return None;
    }
    match Message::parse(bytes) {
        Ok(Message::Request(r)) => r.validate().err(),
        Ok(Message::Response(_)) => None,
        Err(e) => Some(e),
    }
}

/// A response carrying the raw Via/From/To/Call-ID/CSeq lines of a broken request.
fn salvage_with(bytes: &[u8], code: u16, reason: &str) -> Option<Response> {
    const COPIED: [&str; 4] = ["From", "To", "Call-ID", "CSeq"];
    let start = bytes.iter().position(|&b| b != b'\r' && b != b'\n')?;
    let (_, after_start) = next_line(bytes, start)?;
    let mut vias = Vec::new();
    let mut copied: [Option<Header>; 4] = Default::default();
    for raw in HeaderLines::new(bytes, after_start) {
        let RawLine::Field(f) = raw else { continue };
        let Ok(h) = header_from_raw(&f) else { continue };
        if h.is("Via") {
            vias.push(h);
        } else if let Some(i) = COPIED.iter().position(|n| names_match(n, &h.name)) {
            if let Some(slot) = copied.get_mut(i) {
                slot.get_or_insert(h);
            }
        }
    }
    if vias.is_empty() {
        return None;
    }
    let mut r = Response::new(code, reason);
    r.headers.0 = vias;
    r.headers.0.extend(copied.into_iter().flatten());
    Some(r)
}

/// Lets the framing code read Content-Length with exactly the parser's rules.
pub(crate) fn content_length_of_head(head: &[u8]) -> Result<Option<usize>, ()> {
    let start = head
        .iter()
        .position(|&b| b != b'\r' && b != b'\n')
        .unwrap_or(head.len());
    let Some((_, after_start)) = next_line(head, start) else {
        return Ok(None);
    };
    let mut found = None;
    for raw in HeaderLines::new(head, after_start) {
        let RawLine::Field(f) = raw else { continue };
        if std::str::from_utf8(f.name).is_ok_and(|n| names_match(n, "Content-Length")) {
            let n = parse_content_length(&f.value()).ok_or(())?;
            if found.is_some_and(|prev| prev != n) {
                return Err(());
            }
            found = Some(n);
        }
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    const REGISTER: &str = "REGISTER sip:example.com SIP/2.0\r\n\
        Via: SIP/2.0/WSS df7jal23ls0d.invalid;branch=z9hG4bK1\r\n\
        Max-Forwards: 69\r\n\
        To: <sip:alice@example.com>\r\n\
        From: <sip:alice@example.com>;tag=abc\r\n\
        Call-ID: c1\r\n\
        CSeq: 1 REGISTER\r\n\
        Contact: <sip:abc@df7jal23ls0d.invalid;transport=ws>;expires=600\r\n\
        Content-Length: 0\r\n\r\n";

    fn request(s: &str) -> Request {
        match Message::parse(s.as_bytes()) {
            Ok(Message::Request(r)) => r,
            other => panic!("{other:?}"),
        }
    }

    fn err(s: &[u8]) -> ParseError {
        Message::parse(s).unwrap_err()
    }

    #[test]
    fn parses_validates_and_prints_byte_exact() {
        let r = request(REGISTER);
        assert_eq!(r.method, Method::Register);
        assert_eq!(r.uri.to_string(), "sip:example.com");
        r.validate().unwrap();
        assert_eq!(r.to_bytes(), REGISTER.as_bytes());
        assert!(r.uri_scheme_supported());
    }

    #[test]
    fn content_length_is_rewritten_or_added() {
        let mut r = request(REGISTER);
        r.body = b"hello".to_vec();
        let text = String::from_utf8(r.to_bytes()).unwrap();
        assert!(text.contains("\r\nContent-Length: 5\r\n\r\nhello"));
        r.headers.remove("Content-Length");
        let text = String::from_utf8(r.to_bytes()).unwrap();
        assert!(text.ends_with(";expires=600\r\nContent-Length: 5\r\n\r\nhello"));
        let mut compact = request("OPTIONS sip:a@b SIP/2.0\r\nl: 9\r\n\r\n123456789");
        compact.body.truncate(2);
        assert_eq!(
            compact.to_bytes(),
            b"OPTIONS sip:a@b SIP/2.0\r\nl: 2\r\n\r\n12"
        );
    }

    #[test]
    fn content_length_framing_rules() {
        // Extra bytes are discarded; missing bytes are an error; absent means rest of buffer.
        let r = request("OPTIONS sip:a@b SIP/2.0\r\nl: 2\r\n\r\n12345");
        assert_eq!(r.body, b"12");
        assert_eq!(
            err(b"OPTIONS sip:a@b SIP/2.0\r\nl: 9\r\n\r\n12").reason,
            "Content-Length larger than message"
        );
        let binary = Message::parse(b"OPTIONS sip:a@b SIP/2.0\r\nX: y\r\n\r\n\x00\xff").unwrap();
        assert_eq!(binary.body(), b"\x00\xff");
        assert_eq!(
            err(b"OPTIONS sip:a@b SIP/2.0\r\nl: -1\r\n\r\n").reason,
            "Bad Content-Length header"
        );
        assert_eq!(
            err(b"OPTIONS sip:a@b SIP/2.0\r\nl: 99999999999999999999999\r\n\r\n").reason,
            "Bad Content-Length header"
        );
        assert_eq!(
            err(b"OPTIONS sip:a@b SIP/2.0\r\nl: 1\r\nContent-Length: 2\r\n\r\n12").reason,
            "Conflicting Content-Length headers"
        );
    }

    #[test]
    fn start_line_rules() {
        use ParseErrorKind::*;
        let cases: &[(&[u8], ParseErrorKind)] = &[
            (b"INVITE  sip:a@b SIP/2.0\r\n\r\n", Malformed),
            (b"INVITE sip:a@b SIP/2.0 \r\n\r\n", Malformed),
            (b"INVITE sip:a@b; lr SIP/2.0\r\n\r\n", Malformed),
            (b"INVITE <sip:a@b> SIP/2.0\r\n\r\n", Malformed),
            (b"INVITE sip:a@b SIP/7.0\r\n\r\n", VersionNotSupported),
            (b"INVITE sip:a@b SIP/2\r\n\r\n", Malformed),
            (b"SIP/3.0 200 OK\r\n\r\n", VersionNotSupported),
            (b"SIP/2.0 4294967301 x\r\n\r\n", Malformed),
            (b"SIP/2.0 099 x\r\n\r\n", Malformed),
            (b"SIP/2.0 700 x\r\n\r\n", Malformed),
            (b"SIP/2.0 20 x\r\n\r\n", Malformed),
            (b"SIP/2.0 200 a\x00b\r\n\r\n", Malformed),
            (b"SIP/2.0 200 \xff\r\n\r\n", Malformed),
            (b"GET / HTTP/1.1\r\n\r\n", Unparseable),
            (b"\x16\x03\x01\x00", Unparseable),
            (b"", Unparseable),
            (b"\r\n\r\n", Unparseable),
        ];
        for (bytes, kind) in cases {
            assert_eq!(
                Message::parse(bytes).map(|_| ()).map_err(|e| e.kind),
                Err(*kind),
                "{:?}",
                String::from_utf8_lossy(bytes)
            );
        }
    }

    #[test]
    fn responses_keep_their_phrase() {
        let raw = b"SIP/2.0 480 Temporarily Unavailable\r\nContent-Length: 0\r\n\r\n";
        let Ok(Message::Response(r)) = Message::parse(raw) else {
            panic!()
        };
        assert_eq!(
            (r.code, r.reason.as_str()),
            (480, "Temporarily Unavailable")
        );
        assert_eq!(r.to_bytes(), raw);
        let Ok(Message::Response(r)) = Message::parse(b"SIP/2.0 100\r\n\r\n") else {
            panic!()
        };
        assert_eq!(r.reason, "");
    }

    #[test]
    fn header_lines_are_checked() {
        assert_eq!(
            err(b"OPTIONS sip:a@b SIP/2.0\r\nNo colon here\r\n\r\n").reason,
            "Bad header line"
        );
        assert_eq!(
            err(b"OPTIONS sip:a@b SIP/2.0\r\n folded first\r\n\r\n").reason,
            "Bad header line"
        );
        assert_eq!(
            err(b"OPTIONS sip:a@b SIP/2.0\r\nBad Name: x\r\n\r\n").reason,
            "Bad header name"
        );
        assert_eq!(
            err(b"OPTIONS sip:a@b SIP/2.0\r\nX: a\x00b\r\n\r\n").reason,
            "Bad header value"
        );
        assert_eq!(
            err(b"OPTIONS sip:a@b SIP/2.0\r\nX: a\rb\r\n\r\n").reason,
            "Bad header value"
        );
        assert_eq!(
            err(b"OPTIONS sip:a@b SIP/2.0\r\nX: \xc3\x28\r\n\r\n").reason,
            "Header value not UTF-8"
        );
        assert_eq!(
            err(b"OPTIONS sip:a@b SIP/2.0\r\nX: y\r\n").reason,
            "Missing empty line after headers"
        );
        // An escaped NUL inside a quoted string is legal (RFC 4475 §3.1.1.2).
        let r = request("OPTIONS sip:a@b SIP/2.0\r\nTo: \"a\\\x00b\" <sip:c@d>\r\n\r\n");
        assert_eq!(
            r.headers.to().unwrap().display_name.as_deref(),
            Some("\"a\\\x00b\"")
        );
    }

    #[test]
    fn bare_lf_and_leading_crlf_are_tolerated() {
        let r =
            request("\r\n\r\nOPTIONS sip:a@b SIP/2.0\nVia: SIP/2.0/UDP h;branch=z9hG4bKx\n\nbody");
        assert_eq!(r.body, b"body");
        assert_eq!(r.headers.len(), 1);
    }

    #[test]
    fn validate_rules() {
        let ok = request(REGISTER);
        let with = |from: &str, to: &str| {
            request(&REGISTER.replacen(from, to, 1))
                .validate()
                .unwrap_err()
                .reason
        };
        assert_eq!(
            with("CSeq: 1 REGISTER", "CSeq: 1 INVITE"),
            "CSeq method does not match"
        );
        assert_eq!(with("branch=z9hG4bK1", "branch=z9hG4bK"), "Bad Via branch");
        assert_eq!(with("Call-ID: c1\r\n", ""), "Missing Call-ID header");
        assert_eq!(
            with("Call-ID: c1\r\n", "Call-ID: c1\r\ni: c2\r\n"),
            "Multiple Call-ID headers"
        );
        assert_eq!(
            with("Max-Forwards: 69", "Max-Forwards: 300"),
            "Bad Max-Forwards header"
        );
        assert_eq!(
            with("sip:example.com SIP", "sip:example.com?Route=x SIP"),
            "Bad Request-URI"
        );
        assert_eq!(
            with(
                "Content-Length: 0",
                "Date: Fri, 01 Jan 2010 16:00:00 EST\r\nl: 0"
            ),
            "Bad Date header"
        );
        let dated = REGISTER.replacen(
            "Content-Length: 0",
            "Date: Sat, 13 Nov 2010 23:29:00 GMT\r\nl: 0",
            1,
        );
        request(&dated).validate().unwrap();
        let mut no_via = ok.clone();
        no_via.headers.remove("Via");
        assert_eq!(no_via.validate().unwrap_err().reason, "Missing Via header");
    }

    #[test]
    fn uri_scheme_check_maps_to_416() {
        let r = request(&REGISTER.replacen(
            "sip:example.com SIP",
            "nobodyKnowsThisScheme:opaque SIP",
            1,
        ));
        r.validate().unwrap();
        assert!(!r.uri_scheme_supported());
        assert_eq!(r.check_uri_scheme().unwrap_err().status_code(), Some(416));
    }

    #[test]
    fn response_to_copies_exactly_the_rfc_headers() {
        let raw = "INVITE sip:bob@b SIP/2.0\r\nv: SIP/2.0/WS x.invalid;branch=z9hG4bK1\r\n\
                   Via: SIP/2.0/UDP p;branch=z9hG4bK0\r\nf: <sip:a@a>;tag=1\r\nt: <sip:bob@b>\r\n\
                   Subject: hi\r\ni: c\r\nCSeq: 2 INVITE\r\nl: 0\r\n\r\n";
        let resp = response_to(&request(raw), 486, "Busy Here");
        assert_eq!(
            String::from_utf8(resp.to_bytes()).unwrap(),
            "SIP/2.0 486 Busy Here\r\nv: SIP/2.0/WS x.invalid;branch=z9hG4bK1\r\n\
             Via: SIP/2.0/UDP p;branch=z9hG4bK0\r\nf: <sip:a@a>;tag=1\r\nt: <sip:bob@b>\r\n\
             i: c\r\nCSeq: 2 INVITE\r\nContent-Length: 0\r\n\r\n"
        );
    }

    #[test]
    fn salvage_builds_400_and_505_but_never_answers_responses_or_acks() {
        let broken = REGISTER.replacen(
            "REGISTER sip:example.com SIP/2.0",
            "REGISTER <sip:example.com> SIP/2.0",
            1,
        );
        let r = salvage_for_400(broken.as_bytes()).unwrap();
        assert_eq!((r.code, r.reason.as_str()), (400, "Bad Request-URI"));
        assert_eq!(r.headers.len(), 5);
        assert_eq!(r.headers.cseq().unwrap().seq, 1);
        let v7 = REGISTER.replacen("SIP/2.0\r\n", "SIP/7.0\r\n", 1);
        assert!(salvage_for_400(v7.as_bytes()).is_none());
        assert_eq!(salvage_response(v7.as_bytes()).map(|r| r.code), Some(505));
        assert!(salvage_for_400(REGISTER.as_bytes()).is_none());
        let mismatch = REGISTER.replacen("CSeq: 1 REGISTER", "CSeq: 1 INVITE", 1);
        assert_eq!(
            salvage_for_400(mismatch.as_bytes()).map(|r| r.reason),
            Some("CSeq method does not match".into())
        );
        assert!(salvage_for_400(b"SIP/2.0 4294967301 x\r\nVia: SIP/2.0/UDP h\r\n\r\n").is_none());
        assert!(salvage_for_400(b"ACK <sip:a@b> SIP/2.0\r\nVia: SIP/2.0/UDP h\r\n\r\n").is_none());
        assert!(salvage_for_400(b"INVITE <sip:a@b> SIP/2.0\r\nTo: x\r\n\r\n").is_none());
        assert!(salvage_for_400(b"garbage").is_none());
    }

    #[test]
    fn sip_dates() {
        assert!(is_sip_date("Sat, 15 Oct 2005 04:44:56 GMT"));
        assert!(!is_sip_date("Fri, 01 Jan 2010 16:00:00 EST"));
        assert!(!is_sip_date("Xyz, 15 Oct 2005 04:44:56 GMT"));
        assert!(!is_sip_date("Sat, 15 Oct 2005 04:44:56 gmt"));
        assert!(!is_sip_date("Sat, 15 Oct 2005"));
    }

    #[test]
    fn framing_sees_content_length_like_the_parser() {
        assert_eq!(
            content_length_of_head(b"INVITE x SIP/2.0\r\nContent-Length  :\r\n  12\r\n\r\n"),
            Ok(Some(12))
        );
        assert_eq!(
            content_length_of_head(b"INVITE x SIP/2.0\r\nL: 3\r\nl: 4\r\n\r\n"),
            Err(())
        );
        assert_eq!(
            content_length_of_head(b"INVITE x SIP/2.0\r\nX: 3\r\n\r\n"),
            Ok(None)
        );
    }
}
