//! Message framing on stream transports (RFC 3261 §18.3): a message ends after the blank line
//! that closes its headers plus exactly Content-Length body bytes. Content-Length is mandatory
//! on streams. CRLF keep-alives between messages (RFC 5626 §4.4.1) are skipped and reported
//! so the driver can answer a double-CRLF ping with a single-CRLF pong.
//!
//! Content-Length is read with the message parser's own rules (compact `l`, folded values,
//! several lines that must agree, RFC 4475 §3.3.9), so framing and parsing never disagree on
//! where a message ends.

use std::fmt;

/// Why a stream can no longer be framed. The connection must be closed: after a framing error
/// the position of the next message is unknown.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FramingError {
    /// Headers or headers+body exceed the configured maximum.
    TooLarge {
        /// The configured maximum message size in bytes.
        limit: usize,
    },
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
    /// How far `buf` has been searched for the end of the header section without finding it,
    /// so bytes arriving in small pieces are scanned once, not once per piece.
    scanned: usize,
    /// Total length of the message at the front of `buf` once its header section is complete,
    /// so a body trickling in byte by byte does not re-read the headers each time.
    expected: Option<usize>,
}

impl StreamFramer {
    /// `max_message_size` bounds headers plus body; larger messages are a [`FramingError`].
    pub fn new(max_message_size: usize) -> Self {
        StreamFramer {
            buf: Vec::new(),
            max_message_size,
            scanned: 0,
            expected: None,
        }
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
        if let Some(total) = self.expected {
            return Ok(self.take_message(total));
        }
        // Leading CRLFs: a double CRLF is a keep-alive ping, a lone CRLF is a pong or
        // padding (RFC 3261 §7.5 allows CRLFs before a start line). One drain per call keeps
        // this linear however many CRLFs a peer sends.
        let lead = self
            .buf
            .iter()
            .take_while(|&&b| b == b'\r' || b == b'\n')
            .count();
        if lead > 0 {
            let crlfs = self.buf.get(..lead).unwrap_or_default();
            if let Some(p) = find(crlfs, b"\r\n\r\n") {
                // p + 4 <= lead <= len: the ping was found inside the CR/LF prefix.
                self.buf.drain(..p + 4);
                self.scanned = 0;
                return Ok(Some(Frame::Ping));
            }
            if lead == self.buf.len() {
                // Only CR/LF so far: keep a tail that may be the start of a split ping.
                let keep = (1..=lead.min(3))
                    .rev()
                    .find(|&k| {
                        self.buf
                            .get(lead - k..)
                            .is_some_and(|t| b"\r\n\r\n".starts_with(t))
                    })
                    .unwrap_or(0);
                // keep <= min(lead, 3), so the subtraction cannot wrap.
                self.buf.drain(..lead - keep);
                self.scanned = 0;
                return Ok(None);
            }
            self.buf.drain(..lead);
            self.scanned = 0;
        }
        let from = self.scanned.saturating_sub(3);
        let Some(head_end) = self
            .buf
            .get(from..)
            .and_then(|b| find(b, b"\r\n\r\n"))
            .map(|p| p + from)
        else {
            self.scanned = self.buf.len();
            if self.buf.len() > self.max_message_size {
                return Err(FramingError::TooLarge {
                    limit: self.max_message_size,
                });
            }
            return Ok(None);
        };
        let body_start = head_end + 4;
        let head = self.buf.get(..body_start).unwrap_or_default();
        let body_len = match crate::message::content_length_of_head(head) {
            Ok(Some(n)) => n,
            Ok(None) => return Err(FramingError::MissingContentLength),
            Err(()) => return Err(FramingError::BadContentLength),
        };
        let total = body_start
            .checked_add(body_len)
            .ok_or(FramingError::BadContentLength)?;
        if total > self.max_message_size {
            return Err(FramingError::TooLarge {
                limit: self.max_message_size,
            });
        }
        Ok(self.take_message(total))
    }

    /// Cut the first `total` bytes off as a message if they are all there, else remember
    /// `total` and wait.
    fn take_message(&mut self, total: usize) -> Option<Frame> {
        if self.buf.len() < total {
            self.expected = Some(total);
            return None;
        }
        let rest = self.buf.split_off(total);
        let msg = std::mem::replace(&mut self.buf, rest);
        self.scanned = 0;
        self.expected = None;
        Some(Frame::Message(msg))
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
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
        assert_eq!(
            frames,
            vec![
                Frame::Ping,
                Frame::Message(OPTIONS.to_vec()),
                Frame::Message(OPTIONS.to_vec())
            ]
        );
        assert_eq!(f.pending(), 0);
    }

    #[test]
    fn lone_crlf_is_skipped() {
        let mut f = StreamFramer::new(1000);
        f.push(b"\r\n");
        f.push(OPTIONS);
        assert_eq!(
            f.next_frame().unwrap(),
            Some(Frame::Message(OPTIONS.to_vec()))
        );
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
    fn a_ping_split_across_reads_is_still_a_ping() {
        let mut f = StreamFramer::new(1000);
        f.push(b"\r\n");
        assert_eq!(f.next_frame().unwrap(), None);
        f.push(b"\r");
        assert_eq!(f.next_frame().unwrap(), None);
        f.push(b"\n");
        assert_eq!(f.next_frame().unwrap(), Some(Frame::Ping));
        assert_eq!(f.pending(), 0);
    }

    #[test]
    fn a_flood_of_line_feeds_costs_one_pass() {
        // Used to recurse once per two bytes: a megabyte of LFs overflowed the stack.
        let mut f = StreamFramer::new(100);
        f.push(&b"\n".repeat(1 << 20));
        assert_eq!(f.next_frame().unwrap(), None);
        assert!(f.pending() <= 3);
        f.push(OPTIONS);
        assert_eq!(
            f.next_frame().unwrap(),
            Some(Frame::Message(OPTIONS.to_vec()))
        );
    }

    #[test]
    fn content_length_follows_the_parser_rules() {
        let folded = b"OPTIONS sip:a@b SIP/2.0\r\nContent-Length:\r\n 2\r\n\r\nok";
        let mut f = StreamFramer::new(1000);
        f.push(folded);
        assert_eq!(
            f.next_frame().unwrap(),
            Some(Frame::Message(folded.to_vec()))
        );
        let mut g = StreamFramer::new(1000);
        g.push(b"OPTIONS sip:a@b SIP/2.0\r\nContent-Length: 13\r\nl: 5\r\n\r\n");
        assert_eq!(g.next_frame(), Err(FramingError::BadContentLength));
    }

    #[test]
    fn byte_by_byte_delivery_frames_correctly() {
        let mut f = StreamFramer::new(1000);
        let mut frames = Vec::new();
        for b in OPTIONS.iter().chain(OPTIONS) {
            f.push(std::slice::from_ref(b));
            while let Some(fr) = f.next_frame().unwrap() {
                frames.push(fr);
            }
        }
        assert_eq!(
            frames,
            vec![
                Frame::Message(OPTIONS.to_vec()),
                Frame::Message(OPTIONS.to_vec())
            ]
        );
    }

    #[test]
    fn a_trickling_body_does_not_rescan_the_headers() {
        let head = format!(
            "OPTIONS sip:a@b SIP/2.0\r\n{}Content-Length: 20000\r\n\r\n",
            "X: y\r\n".repeat(5000)
        );
        let mut f = StreamFramer::new(1 << 20);
        f.push(head.as_bytes());
        let t = std::time::Instant::now();
        for _ in 0..19_999 {
            f.push(b"b");
            assert_eq!(f.next_frame().unwrap(), None);
        }
        f.push(b"b");
        assert!(
            matches!(f.next_frame().unwrap(), Some(Frame::Message(m)) if m.len() == head.len() + 20000)
        );
        // Re-reading 30 KB of headers per byte would take seconds even optimised.
        assert!(
            t.elapsed() < std::time::Duration::from_secs(2),
            "{:?}",
            t.elapsed()
        );
        assert_eq!(f.pending(), 0);
    }

    #[test]
    fn bad_content_length_is_an_error() {
        let mut f = StreamFramer::new(1000);
        f.push(b"OPTIONS sip:a@b SIP/2.0\r\nContent-Length: -3\r\n\r\n");
        assert_eq!(f.next_frame(), Err(FramingError::BadContentLength));
    }
}
