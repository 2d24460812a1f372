//! What a payload is (SIP, STUN, DTLS, RTP, RTCP) and what each flow of a capture carries.
//!
//! A replay has to find, in a capture, what entered the gateway: the SIP over UDP, TCP or
//! WebSocket from the browsers and the core, and the media beside it. [`classify`] looks at one
//! UDP payload or one message and names its protocol from its first bytes; [`FlowClassifier`]
//! runs a whole capture through it (reassembling TCP and deframing WebSocket on the way) and
//! sums up each 5-tuple in a [`FlowSummary`].
//!
//! ```
//! # use estuary_pcap::{classify, Kind};
//! assert_eq!(classify(b"OPTIONS sip:gw.example.net SIP/2.0\r\n"), Kind::Sip);
//! assert_eq!(classify(b"\r\n\r\n"), Kind::KeepAlive);
//! assert_eq!(classify(&[0x80, 0x6F, 0, 1, 0, 0, 0, 160, 0xDE, 0xAD, 0xBE, 0xEF]), Kind::Rtp);
//! ```
//!
//! # How a payload is recognised
//!
//! 1. Only CRLFs: a SIP keep-alive (RFC 5626 §3.5.1: CRLFCRLF ping, CRLF pong).
//! 2. A SIP start line, after any leading CRLFs (RFC 3261 §7.5 tells receivers to ignore them):
//!    `TOKEN SP Request-URI SP SIP/2.0` or `SIP/2.0 SP 3DIGIT`.
//! 3. Otherwise the first byte, as RFC 7983 §7 demultiplexes one port, each range checked
//!    further so that noise is not taken for a protocol:
//!    - 0–3: STUN, when the magic cookie 0x2112A442 is at bytes 4–8 and the length field
//!      matches (RFC 8489 §5);
//!    - 20–63: DTLS; record types 20–25 must carry a DTLS version (0xFEFF or 0xFEFD) and a full
//!      13-byte header, 26–63 (DTLS 1.3 unified headers, RFC 9147 §4) need two bytes;
//!    - 128–191: RTP version 2, or RTCP when the second byte (packet type, overlapping RTP's
//!      marker bit and payload type) is 192–223 (RFC 5761 §4), each with its fixed header.
//!
//! SIP comes before the byte ranges because they overlap: digits (48–57) fall in the DTLS
//! range. Anything else is [`Kind::Unknown`]: ZRTP, TURN channel data, classic STUN without
//! the cookie.

use std::collections::HashMap;
use std::io::Read;
use std::net::SocketAddr;
use std::time::Duration;

use crate::packet::{Packet, Protocol};
use crate::tcp::{FlowKey, TcpEvent, TcpReassembler};
use crate::websocket::{WsDirection, WsKind, WsStream};
use crate::{CaptureError, CaptureReader};

/// What one payload or message is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    /// A SIP request or response.
    Sip,
    /// A SIP keep-alive: CRLFs only.
    KeepAlive,
    /// A STUN message (RFC 8489), with the magic cookie.
    Stun,
    /// A DTLS record.
    Dtls,
    /// An RTP packet (version 2).
    Rtp,
    /// An RTCP packet (version 2, packet type 192–223).
    Rtcp,
    /// None of the above.
    Unknown,
}

impl Kind {
    /// Every kind, in declaration order.
    pub const ALL: [Kind; 7] = [
        Kind::Sip,
        Kind::KeepAlive,
        Kind::Stun,
        Kind::Dtls,
        Kind::Rtp,
        Kind::Rtcp,
        Kind::Unknown,
    ];

    /// STUN, DTLS, RTP or RTCP: what a media port carries (RFC 7983).
    pub fn is_media(self) -> bool {
        matches!(self, Kind::Stun | Kind::Dtls | Kind::Rtp | Kind::Rtcp)
    }
}

/// Names the protocol of one UDP payload or one message; see the module docs for the rules.
pub fn classify(payload: &[u8]) -> Kind {
    let Some(&first) = payload.first() else {
        return Kind::Unknown;
    };
    let body = strip_crlfs(payload);
    if body.is_empty() {
        return Kind::KeepAlive;
    }
    if is_sip_start_line(body) {
        return Kind::Sip;
    }
    match first {
        0..=3 if is_stun(payload) => Kind::Stun,
        20..=63 if is_dtls(payload) => Kind::Dtls,
        128..=191 => match payload.get(1) {
            Some(192..=223) if is_rtcp(payload) => Kind::Rtcp,
            Some(192..=223) => Kind::Unknown,
            Some(_) if is_rtp(payload) => Kind::Rtp,
            _ => Kind::Unknown,
        },
        _ => Kind::Unknown,
    }
}

/// The transport of a [`FiveTuple`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Transport {
    /// UDP.
    Udp,
    /// TCP.
    Tcp,
}

/// One direction of a flow: transport, source and destination. Directional on purpose: the
/// flows a replay feeds to the gateway are those whose destination is the gateway.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FiveTuple {
    /// UDP or TCP.
    pub transport: Transport,
    /// Sender.
    pub src: SocketAddr,
    /// Receiver.
    pub dst: SocketAddr,
}

/// How a flow carries SIP.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SipTransport {
    /// One message per datagram.
    Udp,
    /// A byte stream framed by Content-Length (RFC 3261 §18.3).
    Tcp,
    /// One message per WebSocket message (RFC 7118).
    WebSocket,
}

/// What a flow carries, summed up.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Carries {
    /// SIP messages (or only SIP keep-alives).
    Sip(SipTransport),
    /// A WebSocket connection that carried no SIP.
    WebSocket,
    /// STUN, DTLS, RTP or RTCP, in any mix (one BUNDLEd port carries them all).
    Media,
    /// Nothing recognised.
    Unknown,
}

/// Counts of messages per [`Kind`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KindCounts([u64; 7]);

impl KindCounts {
    /// How many messages of `kind` were counted.
    pub fn get(&self, kind: Kind) -> u64 {
        self.0[kind as usize]
    }

    /// All messages counted.
    pub fn total(&self) -> u64 {
        self.0.iter().sum()
    }

    /// The kinds seen, with their counts, in [`Kind::ALL`] order.
    pub fn iter(&self) -> impl Iterator<Item = (Kind, u64)> + '_ {
        Kind::ALL
            .into_iter()
            .map(|k| (k, self.get(k)))
            .filter(|&(_, n)| n > 0)
    }

    fn add(&mut self, kind: Kind) {
        let n = &mut self.0[kind as usize];
        *n = n.saturating_add(1);
    }
}

/// What one direction of a flow carried over the capture.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FlowSummary {
    /// The flow.
    pub flow: FiveTuple,
    /// Capture time of its first packet.
    pub first_seen: Duration,
    /// Capture time of its last packet.
    pub last_seen: Duration,
    /// Datagrams or TCP segments (retransmissions included).
    pub packets: u64,
    /// Transport payload bytes over all of them.
    pub bytes: u64,
    /// Messages by kind: one per datagram for UDP; for TCP one per SIP message (framed by
    /// Content-Length) or per WebSocket text/binary message. Control frames are not counted.
    /// Over TCP a run of keep-alive CRLFs counts once, or twice if a segment cuts it.
    pub kinds: KindCounts,
    /// TCP only: the stream began with a WebSocket handshake that succeeded.
    pub websocket: bool,
    /// `Sec-WebSocket-Protocol` of that handshake (`sip` for RFC 7118).
    pub websocket_protocol: Option<String>,
    /// TCP only: why the stream could no longer be followed, if it could not (a WebSocket
    /// error, a SIP framing error, or a TCP gap inside a message).
    pub error: Option<String>,
}

impl FlowSummary {
    fn new(flow: FiveTuple, timestamp: Duration) -> Self {
        FlowSummary {
            flow,
            first_seen: timestamp,
            last_seen: timestamp,
            packets: 0,
            bytes: 0,
            kinds: KindCounts::default(),
            websocket: false,
            websocket_protocol: None,
            error: None,
        }
    }

    /// What the flow carries: SIP if any SIP message (or only keep-alives) was seen, else
    /// media if any STUN/DTLS/RTP/RTCP was, else an empty WebSocket, else unknown.
    pub fn carries(&self) -> Carries {
        let k = &self.kinds;
        let sip = k.get(Kind::Sip) > 0;
        let media = Kind::ALL
            .into_iter()
            .any(|kind| kind.is_media() && k.get(kind) > 0);
        let keepalive_only = k.get(Kind::KeepAlive) > 0 && !media;
        let over = match (self.flow.transport, self.websocket) {
            (Transport::Udp, _) => SipTransport::Udp,
            (Transport::Tcp, false) => SipTransport::Tcp,
            (Transport::Tcp, true) => SipTransport::WebSocket,
        };
        if sip || keepalive_only {
            Carries::Sip(over)
        } else if media {
            Carries::Media
        } else if self.websocket {
            Carries::WebSocket
        } else {
            Carries::Unknown
        }
    }
}

/// Sums up each flow of a capture; see the [module docs](self).
///
/// Feed decoded packets in capture order with [`push`](Self::push), then call
/// [`finish`](Self::finish). TCP is reassembled with a [`TcpReassembler`] and each direction is
/// recognised from its first line: a WebSocket handshake (`GET` or `HTTP/1.1 101`), a SIP start
/// line, or neither.
#[derive(Debug)]
pub struct FlowClassifier {
    max_flows: usize,
    flows: HashMap<FiveTuple, FlowSummary>,
    tcp: TcpReassembler,
    streams: HashMap<FlowKey, StreamMode>,
    untracked: u64,
}

impl Default for FlowClassifier {
    fn default() -> Self {
        Self::new()
    }
}

impl FlowClassifier {
    /// A classifier tracking up to 65 536 flows (and TCP reassembly with its default bounds).
    pub fn new() -> Self {
        FlowClassifier {
            max_flows: 65_536,
            flows: HashMap::new(),
            tcp: TcpReassembler::new(),
            streams: HashMap::new(),
            untracked: 0,
        }
    }

    /// Feeds one decoded packet, in capture order. Packets that are neither UDP nor TCP are
    /// ignored.
    pub fn push(&mut self, timestamp: Duration, packet: &Packet<'_>) {
        let transport = match packet.protocol {
            Protocol::Udp => Transport::Udp,
            Protocol::Tcp(_) => Transport::Tcp,
            Protocol::Other(_) => return,
        };
        let flow = FiveTuple {
            transport,
            src: packet.src,
            dst: packet.dst,
        };
        if !self.flows.contains_key(&flow) && self.flows.len() >= self.max_flows {
            self.untracked += 1;
            return;
        }
        let summary = self
            .flows
            .entry(flow)
            .or_insert_with(|| FlowSummary::new(flow, timestamp));
        summary.last_seen = timestamp;
        summary.packets += 1;
        summary.bytes += packet.payload.len() as u64;
        match transport {
            Transport::Udp => summary.kinds.add(classify(packet.payload)),
            Transport::Tcp => {
                self.tcp.push(timestamp, packet);
                self.drain_tcp();
            }
        }
    }

    /// Packets not counted because the flow table was full.
    pub fn untracked_packets(&self) -> u64 {
        self.untracked
    }

    /// Ends the capture and returns every flow, ordered by first packet (then by flow).
    pub fn finish(&mut self) -> Vec<FlowSummary> {
        self.tcp.finish();
        self.drain_tcp();
        let mut flows: Vec<FlowSummary> = self.flows.drain().map(|(_, s)| s).collect();
        flows.sort_by_key(|f| (f.first_seen, f.flow));
        self.streams.clear();
        flows
    }

    fn drain_tcp(&mut self) {
        while let Some(event) = self.tcp.poll() {
            let key = event.flow();
            let flow = FiveTuple {
                transport: Transport::Tcp,
                src: key.src,
                dst: key.dst,
            };
            let Some(summary) = self.flows.get_mut(&flow) else {
                continue;
            };
            match event {
                TcpEvent::Data { data, .. } => {
                    let mode = self.streams.entry(key).or_default();
                    mode.push(&data, summary);
                }
                TcpEvent::Gap { missing, .. } => {
                    // Framing is lost; the next bytes may start anywhere, so start over.
                    if let Some(mode) = self.streams.get_mut(&key) {
                        mode.gap(missing, summary);
                    }
                }
                TcpEvent::Closed { .. } => {
                    self.streams.remove(&key);
                }
                TcpEvent::Opened { .. } => {}
            }
        }
    }
}

/// Reads a whole capture and sums up its flows. Records that do not decode are skipped.
pub fn classify_capture<R: Read>(
    capture: &mut CaptureReader<R>,
) -> Result<Vec<FlowSummary>, CaptureError> {
    let mut classifier = FlowClassifier::new();
    while let Some(record) = capture.next_record()? {
        if let Ok(packet) = record.decode() {
            classifier.push(record.timestamp, &packet);
        }
    }
    Ok(classifier.finish())
}

/// Bytes held while deciding what a TCP stream is, and for one SIP message's headers.
const MAX_SIP_HEAD: usize = 64 * 1024;
/// Largest SIP body followed over TCP.
const MAX_SIP_BODY: u64 = 16 * 1024 * 1024;

/// What one TCP direction turned out to carry.
#[derive(Debug)]
enum StreamMode {
    /// SIP, or not yet decided (the framer decides on the first line).
    Sip(SipFramer),
    WebSocket(Box<WsStream>),
    /// Neither, or lost: ignored from here on.
    Other,
}

impl Default for StreamMode {
    fn default() -> Self {
        StreamMode::Sip(SipFramer::default())
    }
}

impl StreamMode {
    fn push(&mut self, data: &[u8], summary: &mut FlowSummary) {
        let result = match self {
            StreamMode::Sip(framer) => match framer.push(data, &mut summary.kinds) {
                Ok(Some(direction)) => {
                    // The bytes held so far start the handshake: hand them over.
                    let mut ws = WsStream::new(direction);
                    let r = ws.push(&framer.buf);
                    *self = StreamMode::WebSocket(Box::new(ws));
                    r.map_err(|e| e.to_string())
                }
                Ok(None) => Ok(()),
                Err(e) => Err(e.to_owned()),
            },
            StreamMode::WebSocket(ws) => ws.push(data).map_err(|e| e.to_string()),
            StreamMode::Other => Ok(()),
        };
        if let StreamMode::WebSocket(ws) = self {
            if ws.is_upgraded() && !summary.websocket {
                summary.websocket = true;
                summary.websocket_protocol = ws.protocol().map(str::to_owned);
            }
            while let Some(m) = ws.poll() {
                if matches!(m.kind, WsKind::Text | WsKind::Binary) {
                    summary.kinds.add(classify(&m.payload));
                }
            }
        }
        if let Err(e) = result {
            summary.error.get_or_insert(e);
            *self = StreamMode::Other;
        }
    }

    /// The TCP stream lost bytes. Message boundaries are lost with them, except before the
    /// first line, where there is nothing to lose yet.
    fn gap(&mut self, missing: u32, summary: &mut FlowSummary) {
        let error = match self {
            StreamMode::WebSocket(ws) => ws.gap(missing).to_string(),
            StreamMode::Sip(framer) if framer.decided => {
                format!("TCP gap of {missing} bytes inside a SIP stream")
            }
            StreamMode::Sip(framer) => {
                framer.buf.clear();
                return;
            }
            StreamMode::Other => return,
        };
        summary.error.get_or_insert(error);
        *self = StreamMode::Other;
    }
}

/// SIP over TCP: cuts the stream into messages by Content-Length (RFC 3261 §18.3) and counts
/// them. Before the first start line it also spots a WebSocket handshake.
#[derive(Debug, Default)]
struct SipFramer {
    buf: Vec<u8>,
    /// A SIP start line was seen: this is a SIP stream.
    decided: bool,
}

impl SipFramer {
    /// Takes bytes; returns the direction when the stream turns out to be a WebSocket
    /// handshake (the bytes stay in `buf` for the WebSocket stream).
    fn push(
        &mut self,
        data: &[u8],
        kinds: &mut KindCounts,
    ) -> Result<Option<WsDirection>, &'static str> {
        self.buf.extend_from_slice(data);
        loop {
            // Keep-alives between messages (RFC 5626 §3.5.1), one count per run of CRLFs.
            let body = strip_crlfs(&self.buf);
            let crlfs = self.buf.len() - body.len();
            if crlfs > 0 {
                kinds.add(Kind::KeepAlive);
                self.buf.drain(..crlfs);
            }
            if !self.decided {
                let Some(line_end) = find(&self.buf, b"\r\n") else {
                    if self.buf.len() > MAX_SIP_HEAD {
                        return Err("no line end in the first 64 KiB of a TCP stream");
                    }
                    return Ok(None);
                };
                let line = &self.buf[..line_end];
                if line.starts_with(b"GET ") {
                    return Ok(Some(WsDirection::ClientToServer));
                }
                if line.starts_with(b"HTTP/1.1 ") {
                    return Ok(Some(WsDirection::ServerToClient));
                }
                if !is_sip_start_line(line) {
                    return Err("TCP stream is neither SIP nor a WebSocket");
                }
                self.decided = true;
            }
            let Some(head_end) = find(&self.buf, b"\r\n\r\n") else {
                if self.buf.len() > MAX_SIP_HEAD {
                    return Err("SIP headers longer than 64 KiB");
                }
                return Ok(None);
            };
            let body_len = content_length(&self.buf[..head_end])?;
            if body_len > MAX_SIP_BODY {
                return Err("SIP body longer than 16 MiB");
            }
            // body_len ≤ 16 MiB: fits usize.
            let total = head_end + 4 + body_len as usize;
            let Some(message) = self.buf.get(..total) else {
                return Ok(None);
            };
            kinds.add(classify(message));
            self.buf.drain(..total);
            if self.buf.is_empty() {
                return Ok(None);
            }
        }
    }
}

/// The Content-Length (or compact `l`) header of a SIP message head; 0 when absent.
fn content_length(head: &[u8]) -> Result<u64, &'static str> {
    for line in head.split(|&b| b == b'\n') {
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        let name = line[..colon].trim_ascii();
        if name.eq_ignore_ascii_case(b"content-length") || name.eq_ignore_ascii_case(b"l") {
            let value = line[colon + 1..].trim_ascii();
            if value.is_empty() || !value.iter().all(u8::is_ascii_digit) {
                return Err("Content-Length is not a number");
            }
            // Saturates instead of overflowing; anything that large is refused anyway.
            return Ok(value.iter().fold(0u64, |n, d| {
                n.saturating_mul(10).saturating_add(u64::from(d - b'0'))
            }));
        }
    }
    Ok(0)
}

fn strip_crlfs(mut p: &[u8]) -> &[u8] {
    while let Some(rest) = p.strip_prefix(b"\r\n") {
        p = rest;
    }
    p
}

/// RFC 3261 §7.1 Request-Line or Status-Line, up to the first CRLF (or the end).
fn is_sip_start_line(p: &[u8]) -> bool {
    let line = match find(p, b"\r\n") {
        Some(end) => &p[..end],
        None => p,
    };
    // Status-Line: SIP-Version SP Status-Code SP Reason-Phrase; the version is
    // case-insensitive (§7.1). A bare code without the phrase is let through.
    if line
        .get(..8)
        .is_some_and(|v| v.eq_ignore_ascii_case(b"SIP/2.0 "))
    {
        return match &line[8..] {
            [b'1'..=b'6', d1, d2, tail @ ..] => {
                d1.is_ascii_digit()
                    && d2.is_ascii_digit()
                    && matches!(tail.first(), None | Some(b' '))
            }
            _ => false,
        };
    }
    // Request-Line: Method SP Request-URI SP SIP-Version.
    let mut parts = line.split(|&b| b == b' ');
    let (Some(method), Some(uri), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return false;
    };
    !method.is_empty()
        && method.iter().all(|&b| is_token_char(b))
        && !uri.is_empty()
        && uri.iter().all(|&b| b.is_ascii_graphic())
        && version.eq_ignore_ascii_case(b"SIP/2.0")
}

/// RFC 3261 §25.1 `token`: alphanumerics and `-.!%*_+`'~`.
fn is_token_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-.!%*_+`'~".contains(&b)
}

/// RFC 8489 §5: top two bits zero, magic cookie, length a multiple of 4 covering the rest.
fn is_stun(p: &[u8]) -> bool {
    let [b0, _, l0, l1, c0, c1, c2, c3, ..] = *p else {
        return false;
    };
    let len = usize::from(u16::from_be_bytes([l0, l1]));
    b0 & 0xC0 == 0
        && [c0, c1, c2, c3] == [0x21, 0x12, 0xA4, 0x42]
        && len % 4 == 0
        && p.len() == 20 + len
}

/// DTLS record (RFC 9147 §4 and RFC 6347 §4.1).
fn is_dtls(p: &[u8]) -> bool {
    match p {
        // DTLSPlaintext/DTLSCiphertext with a full header: type, version 0xFEFF (1.0) or
        // 0xFEFD (1.2, and the legacy version of 1.3), epoch, sequence number, length.
        [20..=25, 0xFE, 0xFD | 0xFF, ..] => p.len() >= 13,
        [20..=25, ..] => false,
        // DTLS 1.3 unified header (0b001CSLEE) and the rest of RFC 7983's range.
        [_, _, ..] => true,
        _ => false,
    }
}

/// RTP fixed header (RFC 3550 §5.1): 12 bytes plus the CSRC list.
fn is_rtp(p: &[u8]) -> bool {
    let Some(&b0) = p.first() else {
        return false;
    };
    p.len() >= 12 + 4 * usize::from(b0 & 0x0F)
}

/// RTCP header (RFC 3550 §6.4): the first packet's length (in 32-bit words minus one) fits.
/// Compound and SRTCP packets carry more after it, so it need not fill the datagram.
fn is_rtcp(p: &[u8]) -> bool {
    let [_, _, l0, l1, ..] = *p else {
        return false;
    };
    p.len() >= 8 && (usize::from(u16::from_be_bytes([l0, l1])) + 1) * 4 <= p.len()
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sip_requests_and_responses() {
        for sip in [
            &b"INVITE sip:bob@biloxi.example.com SIP/2.0\r\nVia: x\r\n\r\n"[..],
            b"REGISTER sips:ss2.biloxi.example.com SIP/2.0\r\n",
            b"MESSAGE tel:+15551234567 SIP/2.0\r\n",
            b"NEWMETHOD urn:x-foo:bar sip/2.0\r\n",
            b"SIP/2.0 200 OK\r\n\r\n",
            b"SIP/2.0 180 Ringing\r\n",
            b"sip/2.0 404\r\n",
            b"\r\n\r\nOPTIONS sip:gw SIP/2.0\r\n",
        ] {
            assert_eq!(classify(sip), Kind::Sip, "{}", String::from_utf8_lossy(sip));
        }
        for not_sip in [
            &b"INVITE sip:bob SIP/3.0\r\n"[..],
            b"INVITE  sip:bob SIP/2.0\r\n",
            b"INV@TE sip:bob SIP/2.0\r\n",
            b"SIP/2.0 700 Huh\r\n",
            b"SIP/2.0 20 OK\r\n",
            b"SIP/2.0 2000 OK\r\n",
            b"GET / HTTP/1.1\r\n",
            b"HTTP/1.1 200 OK\r\n",
        ] {
            assert_eq!(
                classify(not_sip),
                Kind::Unknown,
                "{}",
                String::from_utf8_lossy(not_sip)
            );
        }
    }

    #[test]
    fn keepalives() {
        assert_eq!(classify(b"\r\n\r\n"), Kind::KeepAlive);
        assert_eq!(classify(b"\r\n"), Kind::KeepAlive);
        assert_eq!(classify(b"\r"), Kind::Unknown);
        assert_eq!(classify(b"\n"), Kind::Unknown);
    }

    #[test]
    fn first_byte_ranges() {
        let mut rtp = vec![0x80, 0x00, 0x12, 0x34, 0, 0, 0, 160, 1, 2, 3, 4];
        assert_eq!(classify(&rtp), Kind::Rtp);
        rtp[0] = 0x82; // two CSRCs announced, none present
        assert_eq!(classify(&rtp), Kind::Unknown);
        // PT 200 with the marker bit off is RTCP SR (RFC 5761 §4), even if it looks like RTP.
        let sr = [0x80, 200, 0x00, 0x01, 0xDE, 0xAD, 0xBE, 0xEF];
        assert_eq!(classify(&sr), Kind::Rtcp);
        // RTCP length claiming more than there is.
        assert_eq!(
            classify(&[0x80, 201, 0x00, 0x07, 0, 0, 0, 1]),
            Kind::Unknown
        );
        // Version 1 and 3 are not RTP.
        assert_eq!(classify(&[0x40; 12]), Kind::Unknown);
        assert_eq!(classify(&[0xC0; 12]), Kind::Unknown);

        // DTLS 1.2 ClientHello record header.
        let mut dtls = vec![22, 0xFE, 0xFD, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x40];
        assert_eq!(classify(&dtls), Kind::Dtls);
        dtls[1] = 0x03; // TLS, not DTLS
        assert_eq!(classify(&dtls), Kind::Unknown);
        assert_eq!(classify(&[22, 0xFE, 0xFD]), Kind::Unknown);
        // DTLS 1.3 unified header: 0b00101100, sequence, length, ciphertext.
        assert_eq!(classify(&[0x2C, 0x01, 0x00, 0x10, 0xAA]), Kind::Dtls);

        // STUN without the magic cookie (RFC 3489) and with a wrong length.
        let mut stun = vec![0x00, 0x01, 0x00, 0x00, 0x21, 0x12, 0xA4, 0x42];
        stun.extend([7; 12]);
        assert_eq!(classify(&stun), Kind::Stun);
        stun[3] = 4;
        assert_eq!(classify(&stun), Kind::Unknown);
        stun[3] = 0;
        stun[4] = 0;
        assert_eq!(classify(&stun), Kind::Unknown);
    }

    #[test]
    fn tiny_payloads() {
        assert_eq!(classify(b""), Kind::Unknown);
        for b in 0..=255u8 {
            let k = classify(&[b]);
            assert!(matches!(k, Kind::Unknown), "{b}: {k:?}");
        }
    }

    #[test]
    fn content_length_forms() {
        assert_eq!(
            content_length(b"INVITE x SIP/2.0\r\nContent-Length: 12"),
            Ok(12)
        );
        assert_eq!(content_length(b"INVITE x SIP/2.0\r\nl:3\r\nX: y"), Ok(3));
        assert_eq!(content_length(b"SIP/2.0 200 OK\r\nTo: x"), Ok(0));
        assert!(content_length(b"x\r\ncontent-LENGTH: -1").is_err());
        assert_eq!(
            content_length(b"x\r\nContent-Length: 99999999999999999999999"),
            Ok(u64::MAX)
        );
    }

    #[test]
    fn sip_over_tcp_is_framed_by_content_length() {
        let mut kinds = KindCounts::default();
        let mut f = SipFramer::default();
        let invite = b"INVITE sip:b SIP/2.0\r\nContent-Length: 4\r\n\r\nv=0\n";
        let ok = b"SIP/2.0 200 OK\r\nl: 0\r\n\r\n";
        let mut wire = b"\r\n\r\n".to_vec();
        wire.extend(invite);
        wire.extend(b"\r\n");
        wire.extend(ok);
        for chunk in wire.chunks(5) {
            assert_eq!(f.push(chunk, &mut kinds), Ok(None));
        }
        assert_eq!(kinds.get(Kind::Sip), 2);
        assert_eq!(kinds.get(Kind::KeepAlive), 2);
        assert!(f.buf.is_empty());

        let mut f = SipFramer::default();
        assert!(f.push(b"\x16\x03\x01\x02\x00\r\n", &mut kinds).is_err());
        let mut f = SipFramer::default();
        assert_eq!(
            f.push(b"GET /ws HTTP/1.1\r\n", &mut kinds),
            Ok(Some(WsDirection::ClientToServer))
        );
    }
}
