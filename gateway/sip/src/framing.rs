//! Message framing on stream transports (RFC 3261 §18.3): a message ends after the blank line
//! that closes its headers plus exactly Content-Length body bytes. Content-Length is mandatory
//! on streams. CRLF keep-alives between messages (RFC 5626 §4.4.1) are skipped and reported
//! so the driver can answer a double-CRLF ping with a single-CRLF pong.

use std::fmt;

/// Why a stream can no longer be framed. The connection must be closed: after a framing error
/// the position of the next message is unknown.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FramingError {
    /// Headers or headers+body exceed the configured maximum.
    TooLarge { limit: usize },
    /// No parseable Content-Length header on a stream transport.
    MissingContentLength,
    /// Content-Length present but not a decimal number.
    BadContentLength,
}

impl fmt::Display for FramingError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FramingError::TooLarge { limit } => write!(f, "message exceeds {limit} bytes"),
            FramingError::MissingContentLength => f.write_str("missing Content-Length on stream"),
            FramingError::BadContentLength => f.write_str("malformed Content-Length"),
        }
    }
}

impl std::error::Error for FramingError {}

/// One item taken out of a stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// A complete message: headers, blank line and body.
    Message(Vec<u8>),
    /// A CRLFCRLF keep-alive ping (RFC 5626 §4.4.1); answer with CRLF.
    Ping,
}

/// Accumulates stream bytes and cuts them into messages.
#[derive(Debug)]
pub struct StreamFramer {
    buf: Vec<u8>,
    max_message_size: usize,
}

impl StreamFramer {
    /// `max_message_size` bounds headers plus body; larger messages are a [`FramingError`].
    pub fn new(max_message_size: usize) -> Self {
        StreamFramer { buf: Vec::new(), max_message_size }
    }

    /// Append bytes read from the stream.
    pub fn push(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
    }

    /// Bytes buffered but not yet returned as a frame.
    pub fn pending(&self) -> usize {
        self.buf.len()
    }

    /// The next complete frame, `Ok(None)` if more bytes are needed.
    pub fn next_frame(&mut self) -> Result<Option<Frame>, FramingError> {
        // Leading CRLFs: a double CRLF is a keep-alive ping, a lone CRLF is a pong or
        // padding (RFC 3261 §7.5 allows CRLFs before a start line).
        let lead = self.buf.iter().take_while(|&&b| b == b'\r' || b == b'\n').count();
        if lead > 0 {
            if self.buf.starts_with(b"\r\n\r\n") {
                self.buf.drain(..4);
                return Ok(Some(Frame::Ping));
            }
            if lead == self.buf.len() && lead < 4 && self.buf.starts_with(b"\r\n\r") {
                return Ok(None); // maybe the rest of a ping
            }
            self.buf.drain(..lead.min(2));
            return self.next_frame();
        }
        let Some(head_end) = find(&self.buf, b"\r\n\r\n") else {
            if self.buf.len() > self.max_message_size {
                return Err(FramingError::TooLarge { limit: self.max_message_size });
            }
            return Ok(None);
        };
        let body_start = head_end + 4;
        let body_len = content_length(&self.buf[..head_end])?;
        let total = body_start.checked_add(body_len).ok_or(FramingError::BadContentLength)?;
        if total > self.max_message_size {
            return Err(FramingError::TooLarge { limit: self.max_message_size });
        }
        if self.buf.len() < total {
            return Ok(None);
        }
        let rest = self.buf.split_off(total);
        let msg = std::mem::replace(&mut self.buf, rest);
        Ok(Some(Frame::Message(msg)))
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Content-Length (or compact `l`) from a header block; folded lines are not expected here.
fn content_length(head: &[u8]) -> Result<usize, FramingError> {
    for line in head.split(|&b| b == b'\n').skip(1) {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let Some(colon) = line.iter().position(|&b| b == b':') else { continue };
        let name = trim(&line[..colon]);
        if name.eq_ignore_ascii_case(b"content-length") || name.eq_ignore_ascii_case(b"l") {
            let value = trim(&line[colon + 1..]);
            if value.is_empty() || !value.iter().all(u8::is_ascii_digit) || value.len() > 9 {
                return Err(FramingError::BadContentLength);
            }
            // Invariant: at most 9 ASCII digits, always fits usize.
            return Ok(std::str::from_utf8(value).ok().and_then(|s| s.parse().ok()).unwrap_or(0));
        }
    }
    Err(FramingError::MissingContentLength)
}

fn trim(s: &[u8]) -> &[u8] {
    let start = s.iter().position(|b| !b.is_ascii_whitespace()).unwrap_or(s.len());
    let end = s.iter().rposition(|b| !b.is_ascii_whitespace()).map_or(start, |e| e + 1);
    &s[start..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    const OPTIONS: &[u8] = b"OPTIONS sip:a@b SIP/2.0\r\nl: 4\r\n\r\nbody";

    #[test]
    fn splits_two_messages_and_a_ping_across_pushes() {
        let mut f = StreamFramer::new(1000);
        let mut all = Vec::new();
        all.extend_from_slice(b"\r\n\r\n");
        all.extend_from_slice(OPTIONS);
        all.extend_from_slice(OPTIONS);
        let mut frames = Vec::new();
        for chunk in all.chunks(7) {
            f.push(chunk);
            while let Some(fr) = f.next_frame().unwrap() {
                frames.push(fr);
            }
        }
        assert_eq!(frames, vec![Frame::Ping, Frame::Message(OPTIONS.to_vec()), Frame::Message(OPTIONS.to_vec())]);
        assert_eq!(f.pending(), 0);
    }

    #[test]
    fn lone_crlf_is_skipped() {
        let mut f = StreamFramer::new(1000);
        f.push(b"\r\n");
        f.push(OPTIONS);
        assert_eq!(f.next_frame().unwrap(), Some(Frame::Message(OPTIONS.to_vec())));
    }

    #[test]
    fn stream_without_content_length_is_an_error() {
        let mut f = StreamFramer::new(1000);
        f.push(b"OPTIONS sip:a@b SIP/2.0\r\nVia: x\r\n\r\n");
        assert_eq!(f.next_frame(), Err(FramingError::MissingContentLength));
    }

    #[test]
    fn oversized_messages_are_refused_before_buffering_the_body() {
        let mut f = StreamFramer::new(100);
        f.push(b"OPTIONS sip:a@b SIP/2.0\r\nContent-Length: 5000\r\n\r\n");
        assert_eq!(f.next_frame(), Err(FramingError::TooLarge { limit: 100 }));
        let mut g = StreamFramer::new(10);
        g.push(&[b'A'; 11]);
        assert_eq!(g.next_frame(), Err(FramingError::TooLarge { limit: 10 }));
    }

    #[test]
    fn bad_content_length_is_an_error() {
        let mut f = StreamFramer::new(1000);
        f.push(b"OPTIONS sip:a@b SIP/2.0\r\nContent-Length: -3\r\n\r\n");
        assert_eq!(f.next_frame(), Err(FramingError::BadContentLength));
    }
}
