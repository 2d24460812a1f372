//! WebSocket deframing (RFC 6455) on top of reassembled TCP byte streams.
//!
//! Browsers reach the gateway with SIP over WebSocket (RFC 7118): each SIP message is one text
//! or binary WebSocket message, possibly fragmented over several frames, which themselves cross
//! TCP segment boundaries freely. A [`WsStream`] takes one direction's bytes (the
//! [`TcpEvent::Data`] chunks of a [`TcpReassembler`](crate::TcpReassembler)) in any cut and
//! yields whole [`WsMessage`]s. It does no I/O and keeps no clock.
//!
//! ```
//! # use estuary_pcap::{WsDirection, WsStream, WsKind};
//! let mut from_client = WsStream::without_handshake(WsDirection::ClientToServer);
//! // RFC 6455 §5.7: a masked text frame "Hello", delivered in two TCP chunks.
//! from_client.push(&[0x81, 0x85, 0x37, 0xfa, 0x21]).unwrap();
//! from_client.push(&[0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58]).unwrap();
//! let message = from_client.poll().unwrap();
//! assert_eq!((message.kind, &message.payload[..], message.masked),
//!            (WsKind::Text, &b"Hello"[..], true));
//! ```
//!
//! # Model
//!
//! A stream first consumes the opening handshake of its direction (RFC 6455 §4): the HTTP/1.1
//! `GET` with `Upgrade: websocket` from the client, or the `101 Switching Protocols` answer from
//! the server, up to the blank line. It remembers `Sec-WebSocket-Protocol` (`sip` for RFC 7118).
//! [`WsStream::without_handshake`] starts directly at frames, for captures that begin after
//! the upgrade.
//!
//! Then frames (§5.2) are parsed as bytes arrive: FIN, RSV, opcode, mask bit, 7/16/64-bit
//! payload length, masking key. Masked payloads are unmasked (§5.3). Client frames must be
//! masked; an unmasked one is accepted, as a capture should show what was sent, and
//! [`WsMessage::masked`] flags it. Text and binary messages fragmented over continuation frames
//! (§5.4) come out as one message; control frames interleaved between fragments come out on
//! their own, in wire order. A close frame's status code and reason are parsed (§5.5.1).
//!
//! # Errors
//!
//! A framing error leaves no way to find the next frame boundary, so every error is final:
//! [`WsStream::push`] returns it and keeps returning it, while messages completed before it can
//! still be polled. Lengths are checked before any byte is buffered for them: a frame or message
//! above [`MAX_MESSAGE_LEN`] is [`WsError::TooLarge`], and buffering only ever holds bytes that
//! arrived.
//!
//! # Limits
//!
//! - Extensions are not supported: a frame with an RSV bit set (permessage-deflate, RFC 7692)
//!   is [`WsError::Unsupported`].
//! - Text payloads are not checked for UTF-8; the bytes are handed on as sent.
//! - `Sec-WebSocket-Accept` is not verified against the key (it would need SHA-1).

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::Duration;

use crate::tcp::{FlowKey, TcpEvent};

/// Largest frame payload and reassembled message accepted: 16 MiB, far above any SIP message
/// (RFC 7118 messages are bounded by SIP's own practice of a few kilobytes).
pub const MAX_MESSAGE_LEN: u64 = 16 * 1024 * 1024;

/// Largest opening handshake accepted, up to and including its blank line.
pub const MAX_HANDSHAKE_LEN: usize = 16 * 1024;

/// Which side of the connection wrote a stream: decides the handshake expected.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum WsDirection {
    /// From the client: starts with the HTTP `GET` upgrade request; frames are masked.
    ClientToServer,
    /// From the server: starts with the `101` response; frames are not masked.
    ServerToClient,
}

/// What a message is (its opcode, RFC 6455 §5.2 and §11.8).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WsKind {
    /// Opcode 1: text (SIP per RFC 7118 usually travels in these).
    Text,
    /// Opcode 2: binary.
    Binary,
    /// Opcode 9: ping.
    Ping,
    /// Opcode 10: pong.
    Pong,
    /// Opcode 8: close, with its status code and reason if the payload carries them (§5.5.1).
    Close {
        /// The status code (§7.4), absent when the payload is empty.
        code: Option<u16>,
        /// The UTF-8 reason after the code, possibly empty.
        reason: String,
    },
}

/// One complete WebSocket message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WsMessage {
    /// Its opcode, and for a close its code and reason.
    pub kind: WsKind,
    /// The unmasked application data (of all fragments, for a fragmented message; the whole
    /// close payload, code included, for a close).
    pub payload: Vec<u8>,
    /// Every frame of the message was masked. Client frames must be (RFC 6455 §5.1), server
    /// frames must not be; a mismatch is reported here rather than refused.
    pub masked: bool,
}

/// Why a stream could not be deframed. Every error ends the stream.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum WsError {
    /// The handshake did not end (blank line) within [`MAX_HANDSHAKE_LEN`] bytes.
    #[error("WebSocket handshake longer than {MAX_HANDSHAKE_LEN} bytes")]
    HandshakeTooLong,
    /// The handshake is not an HTTP/1.1 WebSocket upgrade.
    #[error("bad WebSocket handshake: {0}")]
    BadHandshake(&'static str),
    /// The server answered the upgrade with another status than 101.
    #[error("WebSocket upgrade refused with HTTP status {status}")]
    NotUpgraded {
        /// The status code of the response.
        status: u16,
    },
    /// A frame or a reassembled message is larger than [`MAX_MESSAGE_LEN`].
    #[error("WebSocket frame or message of {len} bytes exceeds the limit of {MAX_MESSAGE_LEN}")]
    TooLarge {
        /// The announced (or accumulated) length.
        len: u64,
    },
    /// A frame breaks RFC 6455 (reserved opcode, fragmented or long control frame,
    /// continuation without a message, bad close payload).
    #[error("malformed WebSocket frame: {0}")]
    Malformed(&'static str),
    /// A well-formed feature this deframer does not implement (extensions).
    #[error("unsupported WebSocket feature: {0}")]
    Unsupported(&'static str),
    /// The TCP stream under it lost bytes, so frame boundaries are lost too.
    #[error("TCP gap of {missing} bytes inside the WebSocket stream")]
    Gap {
        /// Bytes missing, as the reassembler reported.
        missing: u32,
    },
}

/// Deframes one direction of a WebSocket connection; see the [module docs](self).
#[derive(Debug)]
pub struct WsStream {
    direction: WsDirection,
    state: State,
    /// Bytes received and not yet consumed: part of the handshake or of one frame.
    buf: Vec<u8>,
    /// How much of `buf` was searched for the handshake's end, so that a handshake arriving
    /// byte by byte is not searched again from the start each time.
    scanned: usize,
    protocol: Option<String>,
    /// The handshake is behind us (a failed handshake leaves this false).
    upgraded: bool,
    /// A text or binary message whose final fragment has not arrived.
    partial: Option<Partial>,
    messages: VecDeque<WsMessage>,
}

#[derive(Debug)]
enum State {
    Handshake,
    Frames,
    Failed(WsError),
}

#[derive(Debug)]
struct Partial {
    kind: WsKind,
    payload: Vec<u8>,
    masked: bool,
}

impl WsStream {
    /// A stream that starts with the opening handshake of `direction`.
    pub fn new(direction: WsDirection) -> Self {
        WsStream {
            direction,
            state: State::Handshake,
            buf: Vec::new(),
            scanned: 0,
            protocol: None,
            upgraded: false,
            partial: None,
            messages: VecDeque::new(),
        }
    }

    /// A stream that starts directly with frames (the capture missed the handshake).
    pub fn without_handshake(direction: WsDirection) -> Self {
        WsStream {
            state: State::Frames,
            upgraded: true,
            ..Self::new(direction)
        }
    }

    /// The direction given at creation.
    pub fn direction(&self) -> WsDirection {
        self.direction
    }

    /// The `Sec-WebSocket-Protocol` header value of the handshake, trimmed (for a client, the
    /// list it offered; for a server, the one it chose).
    pub fn protocol(&self) -> Option<&str> {
        self.protocol.as_deref()
    }

    /// The handshake completed (or was skipped): frames are being parsed, or were until an
    /// error ended the stream.
    pub fn is_upgraded(&self) -> bool {
        self.upgraded
    }

    /// Takes the next bytes of the stream, in any cut. Complete messages become available to
    /// [`poll`](Self::poll), also when an error follows them in the same bytes.
    pub fn push(&mut self, bytes: &[u8]) -> Result<(), WsError> {
        if let State::Failed(e) = &self.state {
            return Err(e.clone());
        }
        self.buf.extend_from_slice(bytes);
        match self.process() {
            Ok(()) => Ok(()),
            Err(e) => {
                self.buf = Vec::new();
                self.partial = None;
                self.state = State::Failed(e.clone());
                Err(e)
            }
        }
    }

    /// Ends the stream because the TCP layer lost bytes (a [`TcpEvent::Gap`]).
    pub fn gap(&mut self, missing: u32) -> WsError {
        let e = WsError::Gap { missing };
        if let State::Failed(earlier) = &self.state {
            return earlier.clone();
        }
        self.buf = Vec::new();
        self.partial = None;
        self.state = State::Failed(e.clone());
        e
    }

    /// The next complete message, oldest first. Poll until `None` after every push.
    pub fn poll(&mut self) -> Option<WsMessage> {
        self.messages.pop_front()
    }

    /// Consumes what `buf` holds: the handshake, then as many whole frames as there are.
    fn process(&mut self) -> Result<(), WsError> {
        if let State::Handshake = self.state {
            // The terminator may straddle the previous push: back up three bytes.
            let from = self.scanned.saturating_sub(3);
            let Some(end) = find(&self.buf[from..], b"\r\n\r\n").map(|i| i + from) else {
                if self.buf.len() > MAX_HANDSHAKE_LEN {
                    return Err(WsError::HandshakeTooLong);
                }
                self.scanned = self.buf.len();
                return Ok(());
            };
            let head_len = end + 4;
            if head_len > MAX_HANDSHAKE_LEN {
                return Err(WsError::HandshakeTooLong);
            }
            self.protocol = handshake(self.direction, &self.buf[..end])?;
            self.buf.drain(..head_len);
            self.state = State::Frames;
            self.upgraded = true;
        }
        let mut at = 0;
        while let Some((frame, len)) = Frame::parse(&self.buf[at..])? {
            at += len;
            self.frame(frame)?;
        }
        self.buf.drain(..at);
        Ok(())
    }

    /// Applies one complete frame: a message, a fragment, or a control frame.
    fn frame(&mut self, frame: Frame) -> Result<(), WsError> {
        let Frame {
            fin,
            opcode,
            masked,
            payload,
        } = frame;
        match opcode {
            OP_CONTINUATION => {
                let Some(partial) = self.partial.as_mut() else {
                    return Err(WsError::Malformed("continuation frame outside a message"));
                };
                let len = (partial.payload.len() + payload.len()) as u64;
                if len > MAX_MESSAGE_LEN {
                    return Err(WsError::TooLarge { len });
                }
                partial.payload.extend_from_slice(&payload);
                partial.masked &= masked;
                if fin {
                    // Checked just above: a partial message is there.
                    if let Some(p) = self.partial.take() {
                        self.messages.push_back(WsMessage {
                            kind: p.kind,
                            payload: p.payload,
                            masked: p.masked,
                        });
                    }
                }
            }
            OP_TEXT | OP_BINARY => {
                if self.partial.is_some() {
                    // §5.4: fragments of one message may only be interleaved with control frames.
                    return Err(WsError::Malformed("new message inside a fragmented one"));
                }
                let kind = if opcode == OP_TEXT {
                    WsKind::Text
                } else {
                    WsKind::Binary
                };
                if fin {
                    self.messages.push_back(WsMessage {
                        kind,
                        payload,
                        masked,
                    });
                } else {
                    self.partial = Some(Partial {
                        kind,
                        payload,
                        masked,
                    });
                }
            }
            OP_CLOSE | OP_PING | OP_PONG => {
                // FIN and length were checked by the frame parser.
                let kind = match opcode {
                    OP_PING => WsKind::Ping,
                    OP_PONG => WsKind::Pong,
                    _ => close(&payload)?,
                };
                self.messages.push_back(WsMessage {
                    kind,
                    payload,
                    masked,
                });
            }
            _ => return Err(WsError::Malformed("reserved opcode")),
        }
        Ok(())
    }
}

/// Event of a [`WsConnection`]: one message and where and when it was completed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WsEvent {
    /// The TCP direction that carried it.
    pub flow: FlowKey,
    /// Client to server or server to client.
    pub direction: WsDirection,
    /// Capture time of the TCP segment that completed the message.
    pub timestamp: Duration,
    /// The message.
    pub message: WsMessage,
}

/// Both directions of one WebSocket connection, fed from [`TcpEvent`]s.
///
/// A helper over two [`WsStream`]s: it routes each reassembled chunk to the stream of its
/// direction, turns TCP gaps into [`WsError::Gap`], and interleaves the messages of both
/// directions in the order their last byte was captured.
#[derive(Debug)]
pub struct WsConnection {
    client: SocketAddr,
    server: SocketAddr,
    to_server: WsStream,
    to_client: WsStream,
    events: VecDeque<WsEvent>,
}

impl WsConnection {
    /// A connection from `client` to `server`, both directions starting with the handshake.
    pub fn new(client: SocketAddr, server: SocketAddr) -> Self {
        WsConnection {
            client,
            server,
            to_server: WsStream::new(WsDirection::ClientToServer),
            to_client: WsStream::new(WsDirection::ServerToClient),
            events: VecDeque::new(),
        }
    }

    /// Feeds one reassembler event. Events of other connections are ignored (`Ok(false)`).
    /// An error concerns the direction of the event only; the other one carries on.
    pub fn push(&mut self, event: &TcpEvent) -> Result<bool, WsError> {
        let flow = event.flow();
        let direction = if (flow.src, flow.dst) == (self.client, self.server) {
            WsDirection::ClientToServer
        } else if (flow.src, flow.dst) == (self.server, self.client) {
            WsDirection::ServerToClient
        } else {
            return Ok(false);
        };
        let stream = match direction {
            WsDirection::ClientToServer => &mut self.to_server,
            WsDirection::ServerToClient => &mut self.to_client,
        };
        let result = match event {
            TcpEvent::Data { data, .. } => stream.push(data),
            TcpEvent::Gap { missing, .. } => Err(stream.gap(*missing)),
            TcpEvent::Opened { .. } | TcpEvent::Closed { .. } => Ok(()),
        };
        // Messages completed before an error are delivered all the same.
        while let Some(message) = stream.poll() {
            self.events.push_back(WsEvent {
                flow,
                direction,
                timestamp: event.timestamp(),
                message,
            });
        }
        result.map(|()| true)
    }

    /// The stream of one direction (for its protocol or state).
    pub fn stream(&self, direction: WsDirection) -> &WsStream {
        match direction {
            WsDirection::ClientToServer => &self.to_server,
            WsDirection::ServerToClient => &self.to_client,
        }
    }

    /// The next message of either direction. Poll until `None` after every push.
    pub fn poll(&mut self) -> Option<WsEvent> {
        self.events.pop_front()
    }
}

const OP_CONTINUATION: u8 = 0x0;
const OP_TEXT: u8 = 0x1;
const OP_BINARY: u8 = 0x2;
const OP_CLOSE: u8 = 0x8;
const OP_PING: u8 = 0x9;
const OP_PONG: u8 = 0xA;

/// One complete frame, payload unmasked.
struct Frame {
    fin: bool,
    opcode: u8,
    masked: bool,
    payload: Vec<u8>,
}

impl Frame {
    /// Parses a frame from the start of `buf`: `None` while it is incomplete, else the frame
    /// and the bytes it took. The length is checked before the payload is looked for, so an
    /// oversized claim fails at once instead of waiting for 2^63 bytes.
    fn parse(buf: &[u8]) -> Result<Option<(Frame, usize)>, WsError> {
        let [b0, b1, ..] = *buf else {
            return Ok(None);
        };
        if b0 & 0x70 != 0 {
            return Err(WsError::Unsupported(
                "RSV bit set: no extension (e.g. permessage-deflate) is supported",
            ));
        }
        let fin = b0 & 0x80 != 0;
        let opcode = b0 & 0x0F;
        let masked = b1 & 0x80 != 0;
        let (len, mut at) = match b1 & 0x7F {
            126 => match buf.get(2..4) {
                Some(b) => (u64::from(u16::from_be_bytes([b[0], b[1]])), 4),
                None => return Ok(None),
            },
            127 => match buf.get(2..10).and_then(|b| <[u8; 8]>::try_from(b).ok()) {
                Some(b) => {
                    let len = u64::from_be_bytes(b);
                    // §5.2: the most significant bit MUST be 0.
                    if len >> 63 != 0 {
                        return Err(WsError::Malformed("64-bit length with the top bit set"));
                    }
                    (len, 10)
                }
                None => return Ok(None),
            },
            n => (u64::from(n), 2),
        };
        if len > MAX_MESSAGE_LEN {
            return Err(WsError::TooLarge { len });
        }
        // §5.5: control frames (opcodes 8 and up) are never fragmented and carry at most 125
        // bytes. Checked here, on the header, so a bad one fails before its payload arrives.
        if opcode & 0x08 != 0 {
            if !fin {
                return Err(WsError::Malformed("fragmented control frame"));
            }
            if len > 125 {
                return Err(WsError::Malformed("control frame longer than 125 bytes"));
            }
        }
        let key = if masked {
            let Some(key) = buf.get(at..at + 4) else {
                return Ok(None);
            };
            at += 4;
            Some([key[0], key[1], key[2], key[3]])
        } else {
            None
        };
        // len ≤ 16 MiB, so it fits usize on every target this builds for.
        let end = at + len as usize;
        let Some(data) = buf.get(at..end) else {
            return Ok(None);
        };
        let mut payload = data.to_vec();
        if let Some(key) = key {
            // §5.3: octet i is XORed with key octet i mod 4.
            for (byte, k) in payload.iter_mut().zip(key.iter().cycle()) {
                *byte ^= k;
            }
        }
        let frame = Frame {
            fin,
            opcode,
            masked,
            payload,
        };
        Ok(Some((frame, end)))
    }
}

/// The body of a close frame (§5.5.1): empty, or a 2-byte status code and a UTF-8 reason.
fn close(payload: &[u8]) -> Result<WsKind, WsError> {
    match payload {
        [] => Ok(WsKind::Close {
            code: None,
            reason: String::new(),
        }),
        [_] => Err(WsError::Malformed("close payload of one byte")),
        [hi, lo, reason @ ..] => {
            let reason = std::str::from_utf8(reason)
                .map_err(|_| WsError::Malformed("close reason is not UTF-8"))?;
            Ok(WsKind::Close {
                code: Some(u16::from_be_bytes([*hi, *lo])),
                reason: reason.to_owned(),
            })
        }
    }
}

/// Checks the opening handshake of `direction` (without its blank line) and returns its
/// `Sec-WebSocket-Protocol` value.
fn handshake(direction: WsDirection, head: &[u8]) -> Result<Option<String>, WsError> {
    let head =
        std::str::from_utf8(head).map_err(|_| WsError::BadHandshake("handshake is not UTF-8"))?;
    let mut lines = head.split("\r\n");
    let start = lines.next().unwrap_or_default();
    match direction {
        // §4.1: "GET /path HTTP/1.1"; HTTP/1.0 cannot upgrade.
        WsDirection::ClientToServer => {
            let mut parts = start.split(' ');
            let (Some("GET"), Some(target), Some(version), None) =
                (parts.next(), parts.next(), parts.next(), parts.next())
            else {
                return Err(WsError::BadHandshake(
                    "request line is not GET <target> <version>",
                ));
            };
            if target.is_empty() || !version.eq_ignore_ascii_case("HTTP/1.1") {
                return Err(WsError::BadHandshake(
                    "request line is not GET <target> HTTP/1.1",
                ));
            }
        }
        // §4.2.2: "HTTP/1.1 101 Switching Protocols"; any other status means no WebSocket.
        WsDirection::ServerToClient => {
            let mut parts = start.splitn(3, ' ');
            let (Some(version), Some(status)) = (parts.next(), parts.next()) else {
                return Err(WsError::BadHandshake("status line is not HTTP/1.1 <code>"));
            };
            let status = match status.as_bytes() {
                [a, b, c] if [a, b, c].iter().all(|d| d.is_ascii_digit()) => {
                    u16::from(a - b'0') * 100 + u16::from(b - b'0') * 10 + u16::from(c - b'0')
                }
                _ => return Err(WsError::BadHandshake("status code is not three digits")),
            };
            if !version.eq_ignore_ascii_case("HTTP/1.1") {
                return Err(WsError::BadHandshake("status line is not HTTP/1.1"));
            }
            if status != 101 {
                return Err(WsError::NotUpgraded { status });
            }
        }
    }
    let mut upgrade = false;
    let mut protocol = None;
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            return Err(WsError::BadHandshake("header line without a colon"));
        };
        let (name, value) = (name.trim(), value.trim());
        if name.eq_ignore_ascii_case("Upgrade") {
            // The value is a token list (RFC 9110 §7.8); "websocket" must be among them.
            upgrade |= value
                .split(',')
                .any(|t| t.trim().eq_ignore_ascii_case("websocket"));
        } else if name.eq_ignore_ascii_case("Sec-WebSocket-Protocol") {
            protocol = Some(value.to_owned());
        }
    }
    if !upgrade {
        return Err(WsError::BadHandshake("no Upgrade: websocket header"));
    }
    Ok(protocol)
}

/// Position of the first occurrence of `needle` in `haystack`.
fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deframe(bytes: &[u8]) -> Vec<WsMessage> {
        let mut s = WsStream::without_handshake(WsDirection::ClientToServer);
        s.push(bytes).unwrap();
        std::iter::from_fn(|| s.poll()).collect()
    }

    fn text(payload: &[u8], masked: bool) -> WsMessage {
        WsMessage {
            kind: WsKind::Text,
            payload: payload.to_vec(),
            masked,
        }
    }

    // RFC 6455 §5.7 examples, byte for byte.

    #[test]
    fn rfc6455_unmasked_text() {
        let frame = [0x81, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f];
        assert_eq!(deframe(&frame), [text(b"Hello", false)]);
    }

    #[test]
    fn rfc6455_masked_text() {
        let frame = [
            0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58,
        ];
        assert_eq!(deframe(&frame), [text(b"Hello", true)]);
    }

    #[test]
    fn rfc6455_fragmented_text() {
        let frames = [0x01, 0x03, 0x48, 0x65, 0x6c, 0x80, 0x02, 0x6c, 0x6f];
        assert_eq!(deframe(&frames), [text(b"Hello", false)]);
    }

    #[test]
    fn rfc6455_ping_and_masked_pong() {
        let ping = [0x89, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f];
        let pong = [
            0x8a, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58,
        ];
        let both: Vec<u8> = ping.iter().chain(&pong).copied().collect();
        let got = deframe(&both);
        assert_eq!(
            got,
            [
                WsMessage {
                    kind: WsKind::Ping,
                    payload: b"Hello".to_vec(),
                    masked: false
                },
                WsMessage {
                    kind: WsKind::Pong,
                    payload: b"Hello".to_vec(),
                    masked: true
                },
            ]
        );
    }

    #[test]
    fn rfc6455_256_byte_and_64_kib_binary() {
        let body: Vec<u8> = (0..65536u32).map(|i| (i * 7) as u8).collect();
        let mut frames = vec![0x82, 0x7E, 0x01, 0x00];
        frames.extend(&body[..256]);
        frames.extend([0x82, 0x7F, 0, 0, 0, 0, 0, 0x01, 0x00, 0x00]);
        frames.extend(&body);
        let got = deframe(&frames);
        assert_eq!(got.len(), 2);
        assert_eq!(
            (&got[0].kind, &got[0].payload[..]),
            (&WsKind::Binary, &body[..256])
        );
        assert_eq!(
            (&got[1].kind, &got[1].payload[..]),
            (&WsKind::Binary, &body[..])
        );
    }

    #[test]
    fn every_cut_gives_the_same_messages() {
        let mut wire = vec![0x01, 0x83, 1, 2, 3, 4, b'H' ^ 1, b'e' ^ 2, b'l' ^ 3];
        wire.extend([0x89, 0x00]); // ping between fragments
        wire.extend([0x80, 0x82, 9, 9, 9, 9, b'l' ^ 9, b'o' ^ 9]);
        wire.extend([0x88, 0x05, 0x03, 0xE8, b'b', b'y', b'e']);
        let whole = deframe(&wire);
        assert_eq!(whole.len(), 3);
        assert_eq!(whole[0].kind, WsKind::Ping);
        assert_eq!(whole[1], text(b"Hello", true));
        assert_eq!(
            whole[2].kind,
            WsKind::Close {
                code: Some(1000),
                reason: "bye".into()
            }
        );
        for cut in 0..wire.len() {
            for second in cut..wire.len() {
                let mut s = WsStream::without_handshake(WsDirection::ClientToServer);
                for part in [&wire[..cut], &wire[cut..second], &wire[second..]] {
                    s.push(part).unwrap();
                }
                let got: Vec<_> = std::iter::from_fn(|| s.poll()).collect();
                assert_eq!(got, whole, "cut at {cut} and {second}");
            }
        }
    }

    #[test]
    fn handshakes_are_consumed_and_the_protocol_kept() {
        let mut client = WsStream::new(WsDirection::ClientToServer);
        let request = b"GET /ws HTTP/1.1\r\nHost: gw.example.net\r\nUpgrade: websocket\r\n\
Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
Sec-WebSocket-Protocol: sip\r\nSec-WebSocket-Version: 13\r\n\r\n";
        // The handshake arrives in pieces, the first frame in the same chunk as its end.
        client.push(&request[..30]).unwrap();
        assert!(!client.is_upgraded());
        let mut rest = request[30..].to_vec();
        rest.extend([0x81, 0x80, 1, 2, 3, 4]);
        client.push(&rest).unwrap();
        assert_eq!(client.protocol(), Some("sip"));
        assert_eq!(client.poll(), Some(text(b"", true)));

        let mut server = WsStream::new(WsDirection::ServerToClient);
        server
            .push(
                b"HTTP/1.1 101 Switching Protocols\r\nupgrade: WebSocket\r\n\
connection: upgrade\r\nsec-websocket-protocol:  sip \r\n\r\n\x81\x02OK",
            )
            .unwrap();
        assert_eq!(server.protocol(), Some("sip"));
        assert_eq!(server.poll(), Some(text(b"OK", false)));
    }

    #[test]
    fn refused_and_bad_handshakes() {
        let mut s = WsStream::new(WsDirection::ServerToClient);
        let e = s.push(b"HTTP/1.1 403 Forbidden\r\n\r\n").unwrap_err();
        assert_eq!(e, WsError::NotUpgraded { status: 403 });
        // Failure is final, and a refused handshake is no upgrade.
        assert_eq!(s.push(b"\x81\x00"), Err(e));
        assert!(!s.is_upgraded());

        for (direction, head) in [
            (
                WsDirection::ClientToServer,
                &b"POST / HTTP/1.1\r\nUpgrade: websocket\r\n\r\n"[..],
            ),
            (
                WsDirection::ClientToServer,
                b"GET / HTTP/1.0\r\nUpgrade: websocket\r\n\r\n",
            ),
            (
                WsDirection::ClientToServer,
                b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
            ),
            (
                WsDirection::ServerToClient,
                b"HTTP/1.1 1x1 Hm\r\nUpgrade: websocket\r\n\r\n",
            ),
            (
                WsDirection::ServerToClient,
                b"HTTP/1.1 101\r\nno colon\r\n\r\n",
            ),
            (WsDirection::ServerToClient, b"\xff\r\n\r\n"),
        ] {
            let mut s = WsStream::new(direction);
            assert!(
                matches!(s.push(head), Err(WsError::BadHandshake(_))),
                "{}",
                String::from_utf8_lossy(head)
            );
        }
        let mut s = WsStream::new(WsDirection::ClientToServer);
        let endless = vec![b'a'; MAX_HANDSHAKE_LEN + 1];
        assert_eq!(s.push(&endless), Err(WsError::HandshakeTooLong));
    }

    #[test]
    fn frame_errors() {
        let cases: [(&[u8], WsError); 8] = [
            (&[0x83, 0x00], WsError::Malformed("reserved opcode")),
            (
                &[0x80, 0x00],
                WsError::Malformed("continuation frame outside a message"),
            ),
            (
                &[0x01, 0x00, 0x81, 0x00],
                WsError::Malformed("new message inside a fragmented one"),
            ),
            (
                &[0x09, 0x00],
                WsError::Malformed("fragmented control frame"),
            ),
            (
                &[0x89, 0x7E, 0x00, 0x7E],
                WsError::Malformed("control frame longer than 125 bytes"),
            ),
            (
                &[0x88, 0x01, 0x03],
                WsError::Malformed("close payload of one byte"),
            ),
            (
                &[0x88, 0x03, 0x03, 0xE8, 0xFF],
                WsError::Malformed("close reason is not UTF-8"),
            ),
            (
                &[0xC1, 0x00],
                WsError::Unsupported(
                    "RSV bit set: no extension (e.g. permessage-deflate) is supported",
                ),
            ),
        ];
        for (bytes, error) in cases {
            let mut s = WsStream::without_handshake(WsDirection::ServerToClient);
            assert_eq!(s.push(bytes), Err(error), "{bytes:02x?}");
        }
    }

    #[test]
    fn oversized_lengths_fail_before_buffering() {
        // 2^24 + 1 bytes announced; only the header arrives.
        let mut s = WsStream::without_handshake(WsDirection::ServerToClient);
        let header = [0x82, 0x7F, 0, 0, 0, 0, 0x01, 0x00, 0x00, 0x01];
        assert_eq!(
            s.push(&header),
            Err(WsError::TooLarge { len: (1 << 24) + 1 })
        );
        let mut s = WsStream::without_handshake(WsDirection::ServerToClient);
        let header = [0x82, 0x7F, 0x80, 0, 0, 0, 0, 0, 0, 0];
        assert!(matches!(s.push(&header), Err(WsError::Malformed(_))));
        // Exactly the limit is accepted and waits for its bytes.
        let mut s = WsStream::without_handshake(WsDirection::ServerToClient);
        let header = [0x82, 0x7F, 0, 0, 0, 0, 0x01, 0x00, 0x00, 0x00];
        assert_eq!(s.push(&header), Ok(()));
        assert!(s.buf.capacity() < 1024);
    }

    #[test]
    fn messages_before_an_error_are_kept() {
        let mut s = WsStream::without_handshake(WsDirection::ServerToClient);
        assert!(s.push(&[0x81, 0x01, b'a', 0x83, 0x00]).is_err());
        assert_eq!(s.poll(), Some(text(b"a", false)));
        assert_eq!(s.poll(), None);
    }
}
