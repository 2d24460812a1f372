//! A deliberately small SIP message reader for the test side.
//!
//! The harness does not parse with the gateway's own parser: a test that judges the system
//! with the system's code can agree with a bug. This reader only splits a message into its
//! start line, header fields and body, and offers the few lookups the tests assert on.

use std::fmt;

/// One SIP message as text: start line, header fields in order, body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SipMsg {
    pub start_line: String,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

/// Compact header forms (RFC 3261 §7.3.3 and later RFCs) and their long names.
const COMPACT: &[(&str, &str)] = &[
    ("i", "call-id"),
    ("m", "contact"),
    ("e", "content-encoding"),
    ("l", "content-length"),
    ("c", "content-type"),
    ("f", "from"),
    ("s", "subject"),
    ("k", "supported"),
    ("t", "to"),
    ("v", "via"),
    ("o", "event"),
    ("r", "refer-to"),
    ("u", "allow-events"),
    ("b", "referred-by"),
    ("x", "session-expires"),
];

fn long_name(name: &str) -> String {
    let lower = name.trim().to_ascii_lowercase();
    COMPACT
        .iter()
        .find(|(c, _)| *c == lower)
        .map_or(lower, |(_, l)| (*l).to_owned())
}

impl SipMsg {
    /// Split `text` into start line, headers (folded lines joined) and body. The body is
    /// what follows the blank line, cut to Content-Length when that is present.
    pub fn parse(text: &str) -> Result<SipMsg, String> {
        let (head, rest) = match text.find("\r\n\r\n") {
            Some(i) => (&text[..i], &text[i + 4..]),
            None => match text.find("\n\n") {
                Some(i) => (&text[..i], &text[i + 2..]),
                None => (text.trim_end_matches(['\r', '\n']), ""),
            },
        };
        let mut lines = head.split('\n').map(|l| l.trim_end_matches('\r'));
        let start_line = lines
            .next()
            .filter(|l| !l.is_empty())
            .ok_or("empty message")?
            .to_owned();
        if !start_line.starts_with("SIP/2.0 ") && !start_line.ends_with(" SIP/2.0") {
            return Err(format!("not a SIP start line: {start_line:?}"));
        }
        let mut headers: Vec<(String, String)> = Vec::new();
        for line in lines {
            if line.starts_with([' ', '\t']) {
                let last = headers
                    .last_mut()
                    .ok_or("continuation line before any header")?;
                last.1.push(' ');
                last.1.push_str(line.trim());
                continue;
            }
            let (name, value) = line
                .split_once(':')
                .ok_or_else(|| format!("header without colon: {line:?}"))?;
            headers.push((name.trim().to_owned(), value.trim().to_owned()));
        }
        let mut msg = SipMsg {
            start_line,
            headers,
            body: String::new(),
        };
        let body = match msg
            .header("Content-Length")
            .and_then(|v| v.trim().parse::<usize>().ok())
        {
            Some(n) if n <= rest.len() => &rest[..n],
            _ => rest,
        };
        msg.body = body.to_owned();
        Ok(msg)
    }

    /// Parse one WebSocket frame's text (RFC 7118 §5: exactly one SIP message per frame):
    /// as [`SipMsg::parse`], but bytes beyond the Content-Length body are an error.
    pub fn parse_frame(text: &str) -> Result<SipMsg, String> {
        let msg = SipMsg::parse(text)?;
        if let Some(n) = msg
            .header("Content-Length")
            .and_then(|v| v.trim().parse::<usize>().ok())
        {
            let body_start = text
                .find("\r\n\r\n")
                .map(|i| i + 4)
                .or_else(|| text.find("\n\n").map(|i| i + 2));
            if let Some(start) = body_start {
                let rest = &text[start..];
                if rest.len() < n {
                    return Err(format!(
                        "body shorter ({}) than Content-Length {n}",
                        rest.len()
                    ));
                }
                if !rest[n..].trim().is_empty() {
                    return Err(format!(
                        "{} bytes after the message: more than one message in a frame?",
                        rest.len() - n
                    ));
                }
            }
        }
        Ok(msg)
    }

    /// A new request with no headers.
    pub fn request(method: &str, uri: &str) -> SipMsg {
        SipMsg {
            start_line: format!("{method} {uri} SIP/2.0"),
            headers: Vec::new(),
            body: String::new(),
        }
    }

    pub fn is_request(&self) -> bool {
        !self.start_line.starts_with("SIP/2.0 ")
    }

    pub fn is_response(&self) -> bool {
        !self.is_request()
    }

    /// The method of a request, or the CSeq method of a response.
    pub fn method(&self) -> String {
        if self.is_request() {
            self.start_line
                .split(' ')
                .next()
                .unwrap_or_default()
                .to_owned()
        } else {
            self.cseq().1
        }
    }

    /// Request-URI of a request ("" for responses).
    pub fn uri(&self) -> &str {
        if self.is_request() {
            self.start_line.split(' ').nth(1).unwrap_or_default()
        } else {
            ""
        }
    }

    /// Status code of a response (0 for requests).
    pub fn status(&self) -> u16 {
        if self.is_response() {
            self.start_line
                .split(' ')
                .nth(1)
                .and_then(|c| c.parse().ok())
                .unwrap_or(0)
        } else {
            0
        }
    }

    pub fn reason(&self) -> &str {
        if self.is_response() {
            self.start_line.splitn(3, ' ').nth(2).unwrap_or_default()
        } else {
            ""
        }
    }

    /// First field named `name` (long or compact form, any case).
    pub fn header(&self, name: &str) -> Option<&str> {
        let want = long_name(name);
        self.headers
            .iter()
            .find(|(n, _)| long_name(n) == want)
            .map(|(_, v)| v.as_str())
    }

    /// Every field named `name`, in order, one entry per header line.
    pub fn header_lines(&self, name: &str) -> Vec<&str> {
        let want = long_name(name);
        self.headers
            .iter()
            .filter(|(n, _)| long_name(n) == want)
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// Every value of `name`, comma-separated lists split (outside quotes and <>).
    pub fn header_values(&self, name: &str) -> Vec<String> {
        self.header_lines(name)
            .into_iter()
            .flat_map(split_list)
            .collect()
    }

    pub fn has_header(&self, name: &str) -> bool {
        self.header(name).is_some()
    }

    pub fn push_header(&mut self, name: &str, value: impl Into<String>) {
        self.headers.push((name.to_owned(), value.into()));
    }

    /// Replace every field named `name` by one with `value` (at the first one's place).
    pub fn set_header(&mut self, name: &str, value: impl Into<String>) {
        let want = long_name(name);
        let value = value.into();
        match self.headers.iter().position(|(n, _)| long_name(n) == want) {
            Some(i) => {
                self.headers[i].1 = value;
                let mut j = 0;
                self.headers.retain(|(n, _)| {
                    j += 1;
                    j - 1 == i || long_name(n) != want
                });
            }
            None => self.push_header(name, value),
        }
    }

    pub fn remove_header(&mut self, name: &str) {
        let want = long_name(name);
        self.headers.retain(|(n, _)| long_name(n) != want);
    }

    pub fn call_id(&self) -> &str {
        self.header("Call-ID").unwrap_or_default()
    }

    /// (sequence number, method) of CSeq.
    pub fn cseq(&self) -> (u32, String) {
        let v = self.header("CSeq").unwrap_or_default();
        let mut it = v.split_whitespace();
        let n = it.next().and_then(|n| n.parse().ok()).unwrap_or(0);
        (n, it.next().unwrap_or_default().to_owned())
    }

    pub fn from_tag(&self) -> Option<String> {
        self.header("From").and_then(|v| param(v, "tag"))
    }

    pub fn to_tag(&self) -> Option<String> {
        self.header("To").and_then(|v| param(v, "tag"))
    }

    /// Branch of the top Via.
    pub fn top_branch(&self) -> Option<String> {
        self.header_values("Via")
            .first()
            .and_then(|v| param(v, "branch"))
    }

    /// URI of the first Contact.
    pub fn contact_uri(&self) -> Option<String> {
        self.header_values("Contact").first().map(|c| addr_uri(c))
    }

    /// The message on the wire: CRLF line ends, Content-Length set from the body.
    pub fn to_wire(&self) -> String {
        let mut s = String::with_capacity(256 + self.body.len());
        s.push_str(&self.start_line);
        s.push_str("\r\n");
        for (n, v) in &self.headers {
            if long_name(n) == "content-length" {
                continue;
            }
            s.push_str(n);
            s.push_str(": ");
            s.push_str(v);
            s.push_str("\r\n");
        }
        s.push_str(&format!("Content-Length: {}\r\n\r\n", self.body.len()));
        s.push_str(&self.body);
        s
    }
}

impl fmt::Display for SipMsg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_wire())
    }
}

/// Split a header value at top-level commas (not inside quotes or <...>).
pub fn split_list(value: &str) -> Vec<String> {
    let mut out = Vec::new();
    let (mut quoted, mut angle, mut escaped) = (false, false, false);
    let mut cur = String::new();
    for ch in value.chars() {
        if escaped {
            escaped = false;
            cur.push(ch);
            continue;
        }
        match ch {
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            '<' if !quoted => angle = true,
            '>' if !quoted => angle = false,
            ',' if !quoted && !angle => {
                out.push(cur.trim().to_owned());
                cur.clear();
                continue;
            }
            _ => {}
        }
        cur.push(ch);
    }
    if !cur.trim().is_empty() {
        out.push(cur.trim().to_owned());
    }
    out
}

/// The URI of a name-addr or addr-spec header value: inside <...> if present, else up to
/// the first ';'.
pub fn addr_uri(value: &str) -> String {
    match (value.find('<'), value.find('>')) {
        (Some(a), Some(b)) if a < b => value[a + 1..b].to_owned(),
        _ => value
            .split(';')
            .next()
            .unwrap_or_default()
            .trim()
            .to_owned(),
    }
}

/// A header parameter (`;name=value` after the URI of a name-addr, or in a Via), unquoted.
/// `Some("")` for a parameter without value.
pub fn param(value: &str, name: &str) -> Option<String> {
    let (after, skip) = match value.find('<') {
        Some(a) => (value[a..].find('>').map_or("", |b| &value[a + b + 1..]), 0),
        None => (value, 1),
    };
    after.split(';').skip(skip).find_map(|p| {
        let (n, v) = p.split_once('=').map_or((p, ""), |(n, v)| (n, v));
        n.trim()
            .eq_ignore_ascii_case(name)
            .then(|| v.trim().trim_matches('"').to_owned())
    })
}

/// A URI parameter (`;name=value` inside the URI, before any headers part).
pub fn uri_param(uri: &str, name: &str) -> Option<String> {
    let uri = uri.split('?').next().unwrap_or_default();
    uri.split(';').skip(1).find_map(|p| {
        let (n, v) = p.split_once('=').map_or((p, ""), |(n, v)| (n, v));
        n.trim()
            .eq_ignore_ascii_case(name)
            .then(|| v.trim().to_owned())
    })
}

/// The user part of a sip: URI.
pub fn uri_user(uri: &str) -> Option<String> {
    let rest = uri.split_once(':')?.1;
    let (user, _) = rest.split_once('@')?;
    Some(user.split(':').next().unwrap_or(user).to_owned())
}

/// The host[:port] part of a sip: URI.
pub fn uri_hostport(uri: &str) -> String {
    let rest = uri.split_once(':').map_or(uri, |(_, r)| r);
    let rest = rest.rsplit_once('@').map_or(rest, |(_, r)| r);
    rest.split([';', '?', '>'])
        .next()
        .unwrap_or_default()
        .to_owned()
}

/// Parameters of a digest challenge or credentials (`Digest a="b", c=d`).
pub fn auth_params(value: &str) -> Vec<(String, String)> {
    let rest = value.trim();
    let rest = match rest.split_once(char::is_whitespace) {
        Some((scheme, r)) if !scheme.contains('=') => r,
        _ => rest,
    };
    split_list(rest)
        .into_iter()
        .filter_map(|p| {
            let (n, v) = p.split_once('=')?;
            Some((
                n.trim().to_ascii_lowercase(),
                v.trim().trim_matches('"').to_owned(),
            ))
        })
        .collect()
}

/// One parameter of a digest challenge or credentials.
pub fn auth_param(value: &str, name: &str) -> Option<String> {
    auth_params(value)
        .into_iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_looks_up() {
        let m = SipMsg::parse(
            "SIP/2.0 200 OK\r\nv: SIP/2.0/WS a.invalid;branch=z9hG4bK1, SIP/2.0/UDP b\r\n\
             To: <sip:a@b>;tag=x1\r\nCSeq: 2 REGISTER\r\nContact: <sip:u@h;transport=ws>;expires=60\r\n\
             l: 3\r\n\r\nabcdef",
        )
        .unwrap();
        assert_eq!(m.status(), 200);
        assert_eq!(m.reason(), "OK");
        assert_eq!(m.method(), "REGISTER");
        assert_eq!(m.header_values("Via").len(), 2);
        assert_eq!(m.top_branch().as_deref(), Some("z9hG4bK1"));
        assert_eq!(m.to_tag().as_deref(), Some("x1"));
        assert_eq!(m.body, "abc");
        assert_eq!(m.contact_uri().as_deref(), Some("sip:u@h;transport=ws"));
        assert_eq!(
            param(m.header("Contact").unwrap(), "expires").as_deref(),
            Some("60")
        );
        assert_eq!(
            uri_param("sip:u@h;transport=ws", "transport").as_deref(),
            Some("ws")
        );
        assert_eq!(uri_user("sip:u@h:5060").as_deref(), Some("u"));
        assert_eq!(uri_hostport("sip:u@h:5060;lr"), "h:5060");
    }

    #[test]
    fn one_message_per_frame() {
        let one = "OPTIONS sip:a SIP/2.0\r\nContent-Length: 2\r\n\r\nab";
        assert!(SipMsg::parse_frame(one).is_ok());
        assert!(SipMsg::parse_frame(&format!("{one}{one}")).is_err());
        assert!(
            SipMsg::parse_frame("OPTIONS sip:a SIP/2.0\r\nContent-Length: 5\r\n\r\nab").is_err()
        );
    }

    #[test]
    fn digest_params() {
        let v = r#"Digest realm="ims.test", nonce="a,b", qop="auth,auth-int", algorithm=MD5"#;
        assert_eq!(auth_param(v, "nonce").as_deref(), Some("a,b"));
        assert_eq!(auth_param(v, "qop").as_deref(), Some("auth,auth-int"));
        assert_eq!(auth_param(v, "algorithm").as_deref(), Some("MD5"));
    }
}
