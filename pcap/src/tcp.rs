//! TCP stream reassembly: decoded segments in, in-order byte chunks per direction out.
//!
//! SIP over TCP and SIP over WebSocket cross segment boundaries freely, so a capture has to be
//! turned back into the two byte streams each connection carried before anything above TCP can
//! be parsed. [`TcpReassembler`] does that without I/O or a clock: the caller feeds it decoded
//! packets in capture order with their capture timestamps, then drains events.
//!
//! ```
//! # use std::time::Duration;
//! # use estuary_pcap::{Packet, TcpEvent, TcpReassembler};
//! # fn run(packets: &[(Duration, Packet<'_>)]) {
//! let mut tcp = TcpReassembler::new();
//! for (timestamp, packet) in packets {
//!     tcp.push(*timestamp, packet);
//!     // Drain after every push: events are queued, not dropped, until polled.
//!     while let Some(event) = tcp.poll() {
//!         if let TcpEvent::Data { flow, data, .. } = event {
//!             println!("{} -> {}: {} bytes", flow.src, flow.dst, data.len());
//!         }
//!     }
//! }
//! tcp.finish(); // end of capture: deliver what waited behind holes
//! while let Some(_event) = tcp.poll() {}
//! # }
//! ```
//!
//! # Model
//!
//! Each direction of a connection (a *half-stream*, keyed by [`FlowKey`]) is reassembled on its
//! own. Its sequence space starts at the SYN's ISN, or at the first segment seen when the
//! capture began mid-stream. Sequence numbers are compared by 32-bit wrapping difference (RFC
//! 9293 §3.4), and positions are kept internally as 64-bit stream offsets, so the out-of-order
//! buffer never has to reason about wrap.
//!
//! - In-order bytes are delivered at once, together with whatever buffered bytes they make
//!   contiguous, as one [`TcpEvent::Data`] stamped with the segment that completed it.
//! - Bytes already delivered or already buffered are dropped: **the first copy wins**, as a
//!   receiving stack would keep it.
//! - Out-of-order bytes wait in a buffer bounded per half-stream ([`TcpConfig::max_buffered`]).
//!   Past the bound the oldest hole is given up as a [`TcpEvent::Gap`] and delivery resumes.
//! - A hole is also given up when the peer acknowledges beyond it (the receiver has those bytes,
//!   so the capture lost them and no retransmission will come), on RST, and at
//!   [`TcpReassembler::finish`]. A FIN is honoured once the bytes before it are delivered.
//!
//! Segments are never trusted for allocation: the buffer only holds payload bytes that arrived,
//! and the number of half-streams is bounded too ([`TcpConfig::max_flows`]).
//!
//! # Limits
//!
//! - Segments that arrive before the first segment of a mid-stream capture are taken for
//!   retransmissions and dropped.
//! - A SYN with a new ISN on a half-stream that is still open is ignored (it is either an
//!   attack or a connection whose close the capture missed); after FIN or RST it opens a new one.
//! - TCP options (SACK, timestamps, window scale) are not used.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::Duration;

use crate::packet::{Packet, Protocol, TcpFlags};

/// One direction of a TCP connection: bytes flow from `src` to `dst`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FlowKey {
    /// Sender address and port.
    pub src: SocketAddr,
    /// Receiver address and port.
    pub dst: SocketAddr,
}

impl FlowKey {
    /// The other direction of the same connection.
    pub fn reverse(self) -> FlowKey {
        FlowKey {
            src: self.dst,
            dst: self.src,
        }
    }
}

/// Why a half-stream ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CloseReason {
    /// The sender's FIN was reached in sequence order.
    Fin,
    /// Either side sent RST.
    Rst,
    /// The flow table was full and this was the least recently active half-stream.
    Evicted,
}

/// What the reassembler reports; each event belongs to one half-stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TcpEvent {
    /// A half-stream was seen for the first time (or again after it closed).
    Opened {
        /// The direction.
        flow: FlowKey,
        /// Capture time of the segment that opened it.
        timestamp: Duration,
        /// No SYN was seen: the capture started after the connection did, and the stream is
        /// taken to start at this segment.
        mid_stream: bool,
    },
    /// The next in-order bytes of the stream.
    Data {
        /// The direction.
        flow: FlowKey,
        /// Capture time of the segment that completed this chunk.
        timestamp: Duration,
        /// The bytes, exactly as sent, without duplicates.
        data: Vec<u8>,
    },
    /// Bytes were skipped: the capture does not hold them and never will. The next
    /// [`TcpEvent::Data`] of this flow starts `missing` bytes after the previous one ended.
    Gap {
        /// The direction.
        flow: FlowKey,
        /// Capture time of the segment that made the hole final.
        timestamp: Duration,
        /// How many bytes are missing (saturating at `u32::MAX`).
        missing: u32,
    },
    /// The half-stream ended; no further events come for it unless a new SYN reopens it.
    Closed {
        /// The direction.
        flow: FlowKey,
        /// Capture time of the segment that closed it.
        timestamp: Duration,
        /// FIN, RST or eviction.
        reason: CloseReason,
    },
}

impl TcpEvent {
    /// The half-stream the event belongs to.
    pub fn flow(&self) -> FlowKey {
        match self {
            TcpEvent::Opened { flow, .. }
            | TcpEvent::Data { flow, .. }
            | TcpEvent::Gap { flow, .. }
            | TcpEvent::Closed { flow, .. } => *flow,
        }
    }

    /// The capture time the event is stamped with.
    pub fn timestamp(&self) -> Duration {
        match self {
            TcpEvent::Opened { timestamp, .. }
            | TcpEvent::Data { timestamp, .. }
            | TcpEvent::Gap { timestamp, .. }
            | TcpEvent::Closed { timestamp, .. } => *timestamp,
        }
    }
}

/// Memory bounds of a [`TcpReassembler`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TcpConfig {
    /// Out-of-order bytes kept per half-stream before the oldest hole is given up. The default,
    /// 1 MiB, holds several seconds of signalling behind a lost segment; a half-stream can
    /// exceed it by at most one segment before the limit applies.
    pub max_buffered: usize,
    /// Half-streams tracked at once. The default, 65 536, is far above the connections of a
    /// gateway capture; when full, closed half-streams are forgotten first, then the least
    /// recently active open one is closed with [`CloseReason::Evicted`].
    pub max_flows: usize,
}

impl Default for TcpConfig {
    fn default() -> Self {
        TcpConfig {
            max_buffered: 1024 * 1024,
            max_flows: 65_536,
        }
    }
}

/// Reassembles the TCP byte streams of a capture; see the [module docs](self).
#[derive(Debug, Default)]
pub struct TcpReassembler {
    config: TcpConfig,
    flows: HashMap<FlowKey, Half>,
    events: VecDeque<TcpEvent>,
}

impl TcpReassembler {
    /// A reassembler with the default bounds.
    pub fn new() -> Self {
        Self::default()
    }

    /// A reassembler with the given bounds.
    pub fn with_config(config: TcpConfig) -> Self {
        TcpReassembler {
            config,
            ..Self::default()
        }
    }

    /// Feeds one decoded packet, in capture order. Packets that are not TCP are ignored.
    /// Poll until `None` afterwards.
    pub fn push(&mut self, timestamp: Duration, packet: &Packet<'_>) {
        let Protocol::Tcp(tcp) = packet.protocol else {
            return;
        };
        let flow = FlowKey {
            src: packet.src,
            dst: packet.dst,
        };
        if tcp.flags.contains(TcpFlags::RST) {
            // An RST ends both directions at once (RFC 9293 §3.5.3); data on it is ignored.
            self.reset(flow, timestamp);
            self.reset(flow.reverse(), timestamp);
            return;
        }
        self.segment(flow, timestamp, tcp.seq, tcp.flags, packet.payload);
        if tcp.flags.contains(TcpFlags::ACK) {
            self.acknowledge(flow.reverse(), timestamp, tcp.ack);
        }
    }

    /// The next event, oldest first. Must be called until `None` after every
    /// [`push`](Self::push) and [`finish`](Self::finish).
    pub fn poll(&mut self) -> Option<TcpEvent> {
        self.events.pop_front()
    }

    /// End of capture: every open half-stream gives up its holes, delivering the bytes that
    /// waited behind them (with a [`TcpEvent::Gap`] for each hole). A half-stream whose FIN
    /// was seen is then closed; others stay open.
    pub fn finish(&mut self) {
        // Sorted so that the event order does not depend on hash order.
        let mut keys: Vec<FlowKey> = self.flows.keys().copied().collect();
        keys.sort_unstable();
        for flow in keys {
            let Some(Half::Open(stream)) = self.flows.get_mut(&flow) else {
                continue;
            };
            let mut sink = Sink {
                flow,
                timestamp: stream.last_seen,
                events: &mut self.events,
            };
            stream.skip_holes(u64::MAX, &mut sink);
            if stream.fin_reached() {
                self.close(flow, None, CloseReason::Fin);
            }
        }
    }

    /// Half-streams currently tracked, open or recently closed.
    pub fn flows(&self) -> usize {
        self.flows.len()
    }

    /// Out-of-order bytes currently held, over all half-streams.
    pub fn buffered(&self) -> usize {
        self.flows
            .values()
            .map(|h| match h {
                Half::Open(s) => s.pending_bytes,
                Half::Closed(_) => 0,
            })
            .sum()
    }

    /// One segment's SYN, payload and FIN for its own half-stream.
    fn segment(
        &mut self,
        flow: FlowKey,
        timestamp: Duration,
        seq: u32,
        flags: TcpFlags,
        payload: &[u8],
    ) {
        let syn = flags.contains(TcpFlags::SYN);
        let reopen = match self.flows.get_mut(&flow) {
            Some(Half::Open(_)) => false,
            Some(Half::Closed(closed)) => {
                // After a close only a SYN with a new ISN means anything: a new connection
                // on the same ports. Anything else is a retransmission of the old one.
                if !syn || closed.isn == Some(seq) {
                    return;
                }
                true
            }
            None => {
                if !self.make_room(timestamp) {
                    return;
                }
                true
            }
        };
        if reopen {
            let stream = Stream::new(seq, syn, timestamp);
            self.flows.insert(flow, Half::Open(stream));
            self.events.push_back(TcpEvent::Opened {
                flow,
                timestamp,
                mid_stream: !syn,
            });
        }
        let Some(Half::Open(stream)) = self.flows.get_mut(&flow) else {
            return;
        };
        stream.last_seen = timestamp;
        // The SYN occupies one sequence number before the first data byte (RFC 9293 §3.4).
        let data_seq = if syn { seq.wrapping_add(1) } else { seq };
        let fin = flags.contains(TcpFlags::FIN);
        let mut sink = Sink {
            flow,
            timestamp,
            events: &mut self.events,
        };
        stream.receive(data_seq, payload, fin, self.config.max_buffered, &mut sink);
        if stream.fin_reached() {
            self.close(flow, Some(timestamp), CloseReason::Fin);
        }
    }

    /// An acknowledgment from the peer of `flow`: bytes it covers that the capture has not
    /// shown were received but not captured, so a hole below it is final.
    fn acknowledge(&mut self, flow: FlowKey, timestamp: Duration, ack: u32) {
        let Some(Half::Open(stream)) = self.flows.get_mut(&flow) else {
            return;
        };
        // Only a known hole (bytes or a FIN waiting beyond it) is given up. An ACK beyond
        // everything seen with nothing waiting is left alone: the capture may merely show the
        // ACK before the data (merged interfaces), and nothing is blocked meanwhile.
        if !stream.has_hole() {
            return;
        }
        let ahead = ack.wrapping_sub(stream.next_seq) as i32;
        if ahead <= 0 {
            return;
        }
        let acked = stream.next_off + u64::from(ahead.unsigned_abs());
        let mut sink = Sink {
            flow,
            timestamp,
            events: &mut self.events,
        };
        stream.skip_holes(acked, &mut sink);
        if stream.fin_reached() {
            self.close(flow, Some(timestamp), CloseReason::Fin);
        }
    }

    /// RST: deliver what waited behind holes, then close.
    fn reset(&mut self, flow: FlowKey, timestamp: Duration) {
        let Some(Half::Open(stream)) = self.flows.get_mut(&flow) else {
            return;
        };
        let mut sink = Sink {
            flow,
            timestamp,
            events: &mut self.events,
        };
        stream.skip_holes(u64::MAX, &mut sink);
        self.close(flow, Some(timestamp), CloseReason::Rst);
    }

    /// Turns an open half-stream into a closed one (forgetting its buffer) and reports it.
    fn close(&mut self, flow: FlowKey, timestamp: Option<Duration>, reason: CloseReason) {
        let Some(half) = self.flows.get_mut(&flow) else {
            return;
        };
        let Half::Open(stream) = half else {
            return;
        };
        let timestamp = timestamp.unwrap_or(stream.last_seen);
        *half = Half::Closed(Closed {
            isn: stream.isn,
            last_seen: timestamp,
        });
        self.events.push_back(TcpEvent::Closed {
            flow,
            timestamp,
            reason,
        });
    }

    /// Makes space for one more half-stream; false if the table holds none at all.
    fn make_room(&mut self, timestamp: Duration) -> bool {
        if self.config.max_flows == 0 {
            return false;
        }
        if self.flows.len() < self.config.max_flows {
            return true;
        }
        self.flows.retain(|_, h| matches!(h, Half::Open(_)));
        if self.flows.len() < self.config.max_flows {
            return true;
        }
        // Least recently active, ties broken by key so the choice does not depend on hash order.
        let victim = self
            .flows
            .iter()
            .map(|(k, h)| (h.last_seen(), *k))
            .min()
            .map(|(_, k)| k);
        if let Some(flow) = victim {
            self.close(flow, Some(timestamp), CloseReason::Evicted);
            self.flows.remove(&flow);
        }
        true
    }
}

/// The state of one half-stream.
#[derive(Debug)]
enum Half {
    Open(Stream),
    /// Kept after FIN or RST so that retransmissions of the old connection do not open a
    /// phantom mid-stream one.
    Closed(Closed),
}

impl Half {
    fn last_seen(&self) -> Duration {
        match self {
            Half::Open(s) => s.last_seen,
            Half::Closed(c) => c.last_seen,
        }
    }
}

#[derive(Debug)]
struct Closed {
    /// The ISN of the connection that closed, to tell its retransmitted SYN from a new one.
    isn: Option<u32>,
    last_seen: Duration,
}

/// An open half-stream. Offsets count sequence space from the stream's start (the byte after
/// the SYN, or the first segment seen), in 64 bits so that they never wrap.
#[derive(Debug)]
struct Stream {
    /// The SYN's sequence number, when a SYN was seen.
    isn: Option<u32>,
    /// Sequence number of the next byte to deliver.
    next_seq: u32,
    /// Offset of the next byte to deliver; moves together with `next_seq`.
    next_off: u64,
    /// Offset of the FIN, once one was seen: the stream's end.
    fin_off: Option<u64>,
    /// Out-of-order bytes by offset; entries never overlap and all start after `next_off`.
    pending: BTreeMap<u64, Vec<u8>>,
    pending_bytes: usize,
    last_seen: Duration,
}

/// Where a half-stream's events go.
struct Sink<'a> {
    flow: FlowKey,
    timestamp: Duration,
    events: &'a mut VecDeque<TcpEvent>,
}

impl Sink<'_> {
    /// Emits the chunk gathered so far, if any, leaving `chunk` empty for reuse.
    fn data(&mut self, chunk: &mut Vec<u8>) {
        if !chunk.is_empty() {
            self.events.push_back(TcpEvent::Data {
                flow: self.flow,
                timestamp: self.timestamp,
                data: std::mem::take(chunk),
            });
        }
    }

    fn gap(&mut self, missing: u64) {
        self.events.push_back(TcpEvent::Gap {
            flow: self.flow,
            timestamp: self.timestamp,
            missing: u32::try_from(missing).unwrap_or(u32::MAX),
        });
    }
}

impl Stream {
    fn new(seq: u32, syn: bool, timestamp: Duration) -> Self {
        Stream {
            isn: syn.then_some(seq),
            next_seq: if syn { seq.wrapping_add(1) } else { seq },
            next_off: 0,
            fin_off: None,
            pending: BTreeMap::new(),
            pending_bytes: 0,
            last_seen: timestamp,
        }
    }

    fn fin_reached(&self) -> bool {
        self.fin_off.is_some_and(|f| self.next_off >= f)
    }

    /// Bytes or a FIN wait beyond bytes the capture has not shown.
    fn has_hole(&self) -> bool {
        !self.pending.is_empty() || self.fin_off.is_some_and(|f| f > self.next_off)
    }

    /// Takes in one segment's payload starting at sequence number `seq`.
    fn receive(&mut self, seq: u32, payload: &[u8], fin: bool, limit: usize, sink: &mut Sink) {
        // Signed distance from the next expected byte: negative is old (retransmitted) data,
        // positive is ahead of a hole. Half the sequence space either way (RFC 9293 §3.4).
        let ahead = i128::from(seq.wrapping_sub(self.next_seq) as i32);
        let start = i128::from(self.next_off) + ahead;
        let end = start + payload.len() as i128;
        if fin && self.fin_off.is_none() {
            // A FIN older than what was delivered can only be hostile; end the stream here.
            self.fin_off = Some(u64::try_from(end).unwrap_or(0).max(self.next_off));
        }
        // Bytes before `next_off` were delivered; bytes from the FIN on do not exist.
        let lo = start.max(i128::from(self.next_off));
        let hi = end.min(self.fin_off.map_or(i128::MAX, i128::from));
        let mut chunk = Vec::new();
        if lo < hi {
            // lo ≥ start ≥ … and hi ≤ end: both are inside the payload, so these convert.
            let from = usize::try_from(lo - start).unwrap_or(0);
            let to = usize::try_from(hi - start).unwrap_or(0);
            let bytes = payload.get(from..to).unwrap_or_default();
            let at = u64::try_from(lo).unwrap_or(0);
            if at == self.next_off && self.pending.is_empty() {
                // The common case: in order with nothing waiting.
                chunk.extend_from_slice(bytes);
                self.advance(at + bytes.len() as u64);
            } else {
                self.insert(at, bytes);
                self.drain(&mut chunk);
            }
        }
        // Over the bound: give up the oldest holes until the buffer fits again.
        while self.pending_bytes > limit {
            let Some(&first) = self.pending.keys().next() else {
                break;
            };
            sink.data(&mut chunk);
            sink.gap(first - self.next_off);
            self.advance(first);
            self.drain(&mut chunk);
        }
        sink.data(&mut chunk);
    }

    /// Gives up every hole below offset `upto`: reports each as a gap and delivers the bytes
    /// behind it. Stops at the FIN.
    fn skip_holes(&mut self, upto: u64, sink: &mut Sink) {
        let mut chunk = Vec::new();
        loop {
            let target = match (self.pending.keys().next(), self.fin_off) {
                (Some(&first), _) => first,
                (None, Some(fin)) if fin > self.next_off => fin,
                _ => break,
            };
            let target = target.min(upto);
            if target <= self.next_off {
                break;
            }
            sink.data(&mut chunk);
            sink.gap(target - self.next_off);
            self.advance(target);
            self.drain(&mut chunk);
        }
        sink.data(&mut chunk);
    }

    /// Buffers bytes at offset `at`, keeping only those no earlier copy covers.
    fn insert(&mut self, at: u64, bytes: &[u8]) {
        let end = at + bytes.len() as u64;
        let mut lo = at;
        // An entry starting before `at` may reach into it.
        if let Some((&k, v)) = self.pending.range(..=at).next_back() {
            lo = lo.max(k + v.len() as u64);
        }
        while lo < end {
            let next = self
                .pending
                .range(lo..end)
                .next()
                .map(|(&k, v)| (k, k + v.len() as u64));
            let (piece_end, resume) = match next {
                Some((k, k_end)) => (k, k_end),
                None => (end, end),
            };
            if piece_end > lo {
                // Offsets are within `at..end`, i.e. within `bytes`.
                let piece = &bytes[(lo - at) as usize..(piece_end - at) as usize];
                self.pending_bytes += piece.len();
                self.pending.insert(lo, piece.to_vec());
            }
            lo = resume;
        }
    }

    /// Moves buffered bytes that are now contiguous onto `chunk`.
    fn drain(&mut self, chunk: &mut Vec<u8>) {
        while let Some(entry) = self.pending.first_entry() {
            let at = *entry.key();
            if at > self.next_off {
                break;
            }
            let bytes = entry.remove();
            self.pending_bytes -= bytes.len();
            let end = at + bytes.len() as u64;
            if end > self.next_off {
                chunk.extend_from_slice(&bytes[(self.next_off - at) as usize..]);
                self.advance(end);
            }
        }
    }

    fn advance(&mut self, to: u64) {
        // Truncation is the point: sequence numbers are the offset modulo 2^32.
        self.next_seq = self.next_seq.wrapping_add((to - self.next_off) as u32);
        self.next_off = to;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{build_tcp, LinkType};
    use crate::{decode, TcpHeader};

    const A: &str = "10.0.0.1:50000";
    const B: &str = "10.0.0.2:5060";

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    fn ab() -> FlowKey {
        FlowKey {
            src: addr(A),
            dst: addr(B),
        }
    }

    /// Builds, decodes and pushes one segment from `src` to `dst`.
    fn push(
        r: &mut TcpReassembler,
        ms: u64,
        (src, dst): (&str, &str),
        seq: u32,
        ack: Option<u32>,
        flags: TcpFlags,
        payload: &[u8],
    ) {
        let flags = if ack.is_some() {
            flags | TcpFlags::ACK
        } else {
            flags
        };
        let header = TcpHeader {
            seq,
            ack: ack.unwrap_or(0),
            flags,
            window: 65535,
        };
        let ip = build_tcp(addr(src), addr(dst), &header, payload).unwrap();
        let packet = decode(LinkType::RAW, &ip).unwrap();
        r.push(Duration::from_millis(ms), &packet);
    }

    fn data(r: &mut TcpReassembler, seq: u32, payload: &[u8]) {
        push(r, seq.into(), (A, B), seq, None, TcpFlags::PSH, payload);
    }

    fn events(r: &mut TcpReassembler) -> Vec<TcpEvent> {
        std::iter::from_fn(|| r.poll()).collect()
    }

    /// All delivered bytes of one flow, with gaps shown as `<gap n>`.
    fn stream(events: &[TcpEvent], flow: FlowKey) -> Vec<u8> {
        let mut out = Vec::new();
        for e in events.iter().filter(|e| e.flow() == flow) {
            match e {
                TcpEvent::Data { data, .. } => out.extend(data),
                TcpEvent::Gap { missing, .. } => out.extend(format!("<gap {missing}>").bytes()),
                _ => {}
            }
        }
        out
    }

    fn handshake(r: &mut TcpReassembler, isn_a: u32, isn_b: u32) {
        push(r, 0, (A, B), isn_a, None, TcpFlags::SYN, b"");
        push(
            r,
            1,
            (B, A),
            isn_b,
            Some(isn_a.wrapping_add(1)),
            TcpFlags::SYN,
            b"",
        );
        push(
            r,
            2,
            (A, B),
            isn_a.wrapping_add(1),
            Some(isn_b.wrapping_add(1)),
            TcpFlags(0),
            b"",
        );
    }

    #[test]
    fn in_order_segments() {
        let mut r = TcpReassembler::new();
        handshake(&mut r, 1000, 9000);
        data(&mut r, 1001, b"REGISTER ");
        data(&mut r, 1010, b"sip:x SIP/2.0\r\n");
        let ev = events(&mut r);
        assert_eq!(
            ev[0],
            TcpEvent::Opened {
                flow: ab(),
                timestamp: Duration::ZERO,
                mid_stream: false
            }
        );
        assert!(matches!(
            ev[1],
            TcpEvent::Opened {
                mid_stream: false,
                ..
            }
        ));
        assert_eq!(ev[1].flow(), ab().reverse());
        assert_eq!(stream(&ev, ab()), b"REGISTER sip:x SIP/2.0\r\n");
        // One chunk per segment, stamped with its segment.
        let stamps: Vec<_> = ev
            .iter()
            .filter(|e| matches!(e, TcpEvent::Data { .. }))
            .map(TcpEvent::timestamp)
            .collect();
        assert_eq!(
            stamps,
            [Duration::from_millis(1001), Duration::from_millis(1010)]
        );
    }

    #[test]
    fn out_of_order_segments_wait_for_the_hole() {
        let mut r = TcpReassembler::new();
        handshake(&mut r, 0, 0);
        data(&mut r, 7, b"ghi");
        data(&mut r, 4, b"def");
        assert_eq!(stream(&events(&mut r), ab()), b"");
        assert_eq!(r.buffered(), 6);
        data(&mut r, 1, b"abc");
        let ev = events(&mut r);
        // One chunk completed by the segment that filled the hole.
        assert_eq!(
            ev,
            [TcpEvent::Data {
                flow: ab(),
                timestamp: Duration::from_millis(1),
                data: b"abcdefghi".to_vec()
            }]
        );
        assert_eq!(r.buffered(), 0);
    }

    #[test]
    fn retransmissions_and_overlaps_keep_the_first_copy() {
        let mut r = TcpReassembler::new();
        handshake(&mut r, 0, 0);
        data(&mut r, 1, b"abcd");
        // Exact duplicate and a partial overlap that changes delivered bytes.
        data(&mut r, 1, b"abcd");
        data(&mut r, 3, b"XXef");
        // Behind a hole at 7: a segment, then one overlapping it on both sides.
        data(&mut r, 9, b"ij");
        data(&mut r, 8, b"hYYkl");
        assert_eq!(r.buffered(), 5);
        // An old segment straddling the delivered edge fills the hole.
        data(&mut r, 5, b"ZZg");
        let ev = events(&mut r);
        assert_eq!(stream(&ev, ab()), b"abcdefghijkl");
        assert_eq!(r.buffered(), 0);
    }

    #[test]
    fn sequence_numbers_wrap() {
        let mut r = TcpReassembler::new();
        // ISN 2^32 - 3: the data crosses 2^32 in the middle of a segment and between segments.
        let isn = u32::MAX - 2;
        handshake(&mut r, isn, 5);
        data(&mut r, u32::MAX - 1, b"01");
        data(&mut r, 4, b"6789");
        data(&mut r, 0, b"2345");
        // A retransmission from before the wrap is still old data.
        data(&mut r, u32::MAX, b"1X");
        data(&mut r, 8, b"ab");
        let ev = events(&mut r);
        assert_eq!(stream(&ev, ab()), b"0123456789ab");
        assert!(!ev.iter().any(|e| matches!(e, TcpEvent::Gap { .. })));
    }

    #[test]
    fn fin_closes_each_direction_after_its_data() {
        let mut r = TcpReassembler::new();
        handshake(&mut r, 100, 200);
        // FIN arrives before the segment it follows.
        push(&mut r, 10, (A, B), 104, Some(201), TcpFlags::FIN, b"def");
        push(&mut r, 11, (A, B), 101, Some(201), TcpFlags(0), b"abc");
        push(&mut r, 12, (B, A), 201, Some(108), TcpFlags::FIN, b"OK");
        // A retransmitted FIN after the close opens nothing.
        push(&mut r, 13, (A, B), 104, Some(204), TcpFlags::FIN, b"def");
        let ev = events(&mut r);
        let tail: Vec<_> = ev.iter().skip(2).cloned().collect();
        assert_eq!(
            tail,
            [
                TcpEvent::Data {
                    flow: ab(),
                    timestamp: Duration::from_millis(11),
                    data: b"abcdef".to_vec()
                },
                TcpEvent::Closed {
                    flow: ab(),
                    timestamp: Duration::from_millis(11),
                    reason: CloseReason::Fin
                },
                TcpEvent::Data {
                    flow: ab().reverse(),
                    timestamp: Duration::from_millis(12),
                    data: b"OK".to_vec()
                },
                TcpEvent::Closed {
                    flow: ab().reverse(),
                    timestamp: Duration::from_millis(12),
                    reason: CloseReason::Fin
                },
            ]
        );
        // A new SYN on the same ports opens a new connection.
        push(&mut r, 20, (A, B), 7000, None, TcpFlags::SYN, b"");
        assert!(matches!(
            r.poll(),
            Some(TcpEvent::Opened {
                mid_stream: false,
                ..
            })
        ));
    }

    #[test]
    fn rst_closes_both_directions_and_releases_waiting_bytes() {
        let mut r = TcpReassembler::new();
        handshake(&mut r, 0, 0);
        data(&mut r, 1, b"ab");
        data(&mut r, 6, b"fg");
        push(&mut r, 9, (B, A), 1, Some(3), TcpFlags::RST, b"ignored");
        let ev = events(&mut r);
        assert_eq!(stream(&ev, ab()), b"ab<gap 3>fg");
        let closes: Vec<_> = ev
            .iter()
            .filter_map(|e| match e {
                TcpEvent::Closed { flow, reason, .. } => Some((*flow, *reason)),
                _ => None,
            })
            .collect();
        // The sender's direction first, then its peer's.
        assert_eq!(
            closes,
            [(ab().reverse(), CloseReason::Rst), (ab(), CloseReason::Rst)]
        );
        assert!(stream(&ev, ab().reverse()).is_empty());
    }

    #[test]
    fn capture_started_mid_stream() {
        let mut r = TcpReassembler::new();
        data(&mut r, 5_000_000, b"tail of INVITE");
        data(&mut r, 5_000_014, b"\r\n");
        // Older than the first segment seen: taken for a retransmission.
        data(&mut r, 4_999_990, b"0123456789");
        let ev = events(&mut r);
        assert!(matches!(
            ev[0],
            TcpEvent::Opened {
                mid_stream: true,
                ..
            }
        ));
        assert_eq!(stream(&ev, ab()), b"tail of INVITE\r\n");
    }

    #[test]
    fn peer_ack_beyond_a_hole_makes_it_final() {
        let mut r = TcpReassembler::new();
        handshake(&mut r, 0, 0);
        data(&mut r, 1, b"abc");
        data(&mut r, 8, b"hij");
        // The receiver acknowledges up to 8: it holds "defg", which the capture lost.
        push(&mut r, 9, (B, A), 1, Some(8), TcpFlags(0), b"");
        assert_eq!(stream(&events(&mut r), ab()), b"abc<gap 4>hij");
        // A duplicate ACK at the edge does nothing.
        data(&mut r, 20, b"late");
        push(&mut r, 10, (B, A), 1, Some(11), TcpFlags(0), b"");
        assert!(stream(&events(&mut r), ab()).is_empty());
    }

    #[test]
    fn fin_behind_a_hole_waits_for_the_ack_or_the_end() {
        let mut r = TcpReassembler::new();
        handshake(&mut r, 0, 0);
        data(&mut r, 1, b"ab");
        push(&mut r, 5, (A, B), 5, None, TcpFlags::FIN, b"ef");
        assert!(!events(&mut r)
            .iter()
            .any(|e| matches!(e, TcpEvent::Closed { .. })));
        r.finish();
        let ev = events(&mut r);
        assert_eq!(stream(&ev, ab()), b"<gap 2>ef");
        assert!(matches!(
            ev.last(),
            Some(TcpEvent::Closed {
                reason: CloseReason::Fin,
                ..
            })
        ));

        // And with the FIN's own ACK from the peer.
        let mut r = TcpReassembler::new();
        handshake(&mut r, 0, 0);
        push(&mut r, 5, (A, B), 5, None, TcpFlags::FIN, b"");
        push(&mut r, 6, (B, A), 1, Some(6), TcpFlags(0), b"");
        let ev = events(&mut r);
        assert_eq!(stream(&ev, ab()), b"<gap 4>");
        assert!(matches!(
            ev.last(),
            Some(TcpEvent::Closed {
                reason: CloseReason::Fin,
                ..
            })
        ));
    }

    #[test]
    fn buffer_limit_gives_up_the_oldest_hole() {
        let mut r = TcpReassembler::with_config(TcpConfig {
            max_buffered: 8,
            ..TcpConfig::default()
        });
        handshake(&mut r, 0, 0);
        data(&mut r, 1, b"a");
        data(&mut r, 3, b"cdef");
        data(&mut r, 10, b"jk");
        assert_eq!(r.buffered(), 6);
        data(&mut r, 13, b"mnop");
        // 10 bytes wait: the hole before "cdef" is given up, and that is enough.
        assert_eq!(stream(&events(&mut r), ab()), b"a<gap 1>cdef");
        assert_eq!(r.buffered(), 6);
        // 11 bytes wait: two more holes go.
        data(&mut r, 18, b"qrstu");
        assert_eq!(stream(&events(&mut r), ab()), b"<gap 3>jk<gap 1>mnop");
        assert_eq!(r.buffered(), 5);
    }

    #[test]
    fn flow_table_is_bounded() {
        let mut r = TcpReassembler::with_config(TcpConfig {
            max_flows: 2,
            ..TcpConfig::default()
        });
        for port in 1..=3u16 {
            let src = format!("10.0.0.9:{port}");
            push(&mut r, port.into(), (&src, B), 0, None, TcpFlags::SYN, b"");
        }
        assert_eq!(r.flows(), 2);
        let ev = events(&mut r);
        assert!(ev.contains(&TcpEvent::Closed {
            flow: FlowKey {
                src: addr("10.0.0.9:1"),
                dst: addr(B)
            },
            timestamp: Duration::from_millis(3),
            reason: CloseReason::Evicted
        }));
    }

    #[test]
    fn non_tcp_is_ignored() {
        let mut r = TcpReassembler::new();
        let ip = crate::build_udp(addr(A), addr(B), b"x").unwrap();
        r.push(Duration::ZERO, &decode(LinkType::RAW, &ip).unwrap());
        assert_eq!((r.poll(), r.flows()), (None, 0));
    }
}
