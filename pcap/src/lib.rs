//! Packet captures for Estuary: pcap and pcapng read and write, and packet decode and build.
//!
//! Estuary records calls to captures and replays captures for conformance testing. This crate
//! is the pure-library half of both: it has never heard of calls, does no I/O of its own beyond
//! the `Read`/`Write` it is handed, and reads no clock.
//!
//! # Reading
//!
//! [`CaptureReader::new`] sniffs the format ([`PcapReader`] or [`PcapNgReader`]) and yields
//! [`Record`]s: a timestamp as a [`Duration`] since the Unix epoch (nanosecond precision), the
//! link type, and the captured bytes. [`Record::decode`] (or [`decode`]) takes the bytes down
//! through the link layer (Ethernet with 802.1Q tags, Linux SLL/SLL2, BSD loopback, raw IP), IPv4
//! or IPv6 (extension headers skipped), to UDP or TCP, giving addresses, ports, TCP sequence
//! numbers and flags, and the payload as a slice of the record.
//!
//! ```
//! # use estuary_pcap::{CaptureReader, Protocol};
//! # fn run(bytes: &[u8]) -> Result<(), Box<dyn std::error::Error>> {
//! let mut capture = CaptureReader::new(bytes)?;
//! while let Some(record) = capture.next_record()? {
//!     let Ok(packet) = record.decode() else { continue };
//!     if packet.protocol == Protocol::Udp {
//!         println!("{:?} {} -> {}: {} bytes", record.timestamp, packet.src, packet.dst,
//!                  packet.payload.len());
//!     }
//! }
//! # Ok(()) }
//! ```
//!
//! Records borrow the reader's buffer, so reading allocates only when a record is larger than
//! any before it. Length fields are never trusted for allocation: a buffer grows only as bytes
//! arrive.
//!
//! # Writing
//!
//! [`build_udp`] and [`build_tcp`] produce raw IP packets with correct IPv4 header, UDP and TCP
//! checksums; [`wrap_ethernet`] adds an Ethernet header. [`PcapWriter`] and [`PcapNgWriter`]
//! store them with nanosecond timestamps (pcap nanosecond magic, pcapng `if_tsresol = 9`).
//!
//! # Above the packets: streams, WebSocket, classification
//!
//! Three sans-IO layers turn decoded packets into what a replay needs, each fed in capture
//! order and drained by `poll` (no clock, no I/O):
//!
//! - [`tcp`]: [`TcpReassembler`] rebuilds each direction of each TCP connection from
//!   [`Packet`]'s sequence numbers and flags, and reports [`TcpEvent`]s: opened, in-order data,
//!   gaps the capture cannot fill, closed.
//! - [`websocket`]: [`WsStream`] deframes one direction's bytes (RFC 6455) after its HTTP
//!   upgrade into [`WsMessage`]s; [`WsConnection`] runs both directions from [`TcpEvent`]s.
//! - [`classify`](mod@classify): [`classify()`] names a payload (SIP, keep-alive, STUN, DTLS,
//!   RTP, RTCP); [`FlowClassifier`] and [`classify_capture`] sum up what each 5-tuple of a
//!   capture carries: SIP over UDP, TCP or WebSocket, or media.
//!
//! # Hostile input
//!
//! Captures come from the field. No byte sequence makes a reader or [`decode`] panic; every
//! failure is a [`CaptureError`] or [`DecodeError`] (see `tests/hostile_input.rs`). The layers
//! above hold the same line: TCP reassembly bounds its buffer per half-stream and its flow
//! table, WebSocket lengths are checked before bytes are buffered, and random segments,
//! frames and payloads are thrown at all three (`tests/tcp_reassembly.rs`,
//! `tests/websocket.rs`, `tests/classify.rs`).
//!
//! # What it does not do (yet)
//!
//! - IP fragments are flagged ([`Packet::fragment`]), not reassembled.
//! - Checksums are computed on write but not verified on read: captures taken on the sending
//!   host carry offloaded, unfilled checksums. [`transport_checksum`] verifies on demand.
//! - TCP reassembly ignores options (SACK, timestamps); a mid-stream capture drops bytes older
//!   than its first segment.
//! - WebSocket extensions (permessage-deflate) are refused, not inflated; TLS (WSS, SIP over
//!   TLS) is not decrypted, so such flows classify as unknown.
//! - Flow classification does not follow STUN/DTLS/RTP over TCP (RFC 4571 framing), TURN
//!   channel data or ZRTP.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod build;
mod bytes;
mod checksum;
mod classic;
pub mod classify;
mod error;
mod packet;
mod pcapng;
mod stream;
pub mod tcp;
pub mod websocket;

use std::io::Read;
use std::time::Duration;

pub use build::{build_tcp, build_udp, wrap_ethernet, write_tcp, write_udp, MacAddr, TcpConversation};
pub use checksum::{internet_checksum, transport_checksum};
pub use classic::{PcapReader, PcapWriter};
pub use classify::{
    classify, classify_capture, Carries, FiveTuple, FlowClassifier, FlowSummary, Kind, KindCounts,
    SipTransport, Transport,
};
pub use error::{BuildError, CaptureError, DecodeError, Layer};
pub use packet::{decode, Fragment, Packet, Protocol, TcpFlags, TcpHeader};
pub use pcapng::{Interface, PcapNgReader, PcapNgWriter, TsResolution, MAX_BLOCK_LEN};
pub use tcp::{CloseReason, FlowKey, TcpConfig, TcpEvent, TcpReassembler};
pub use websocket::{
    WsConnection, WsDirection, WsError, WsEvent, WsKind, WsMessage, WsStream, MAX_HANDSHAKE_LEN,
    MAX_MESSAGE_LEN,
};

/// Largest packet a reader accepts and the snapshot length writers declare (256 KiB, as
/// libpcap and Wireshark use by default).
pub const MAX_PACKET_LEN: u32 = 256 * 1024;

/// A link-layer header type (the `LINKTYPE_` registry of tcpdump.org, used by pcap and pcapng).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct LinkType(pub u16);

impl LinkType {
    /// BSD loopback: a 4-byte address family in the capturing host's byte order.
    pub const NULL: LinkType = LinkType(0);
    /// Ethernet II (with optional 802.1Q / 802.1ad tags).
    pub const ETHERNET: LinkType = LinkType(1);
    /// Raw IP: the packet starts with an IPv4 or IPv6 header.
    pub const RAW: LinkType = LinkType(101);
    /// OpenBSD loopback: like [`Self::NULL`] with the family in network byte order.
    pub const LOOP: LinkType = LinkType(108);
    /// Linux "cooked" capture, version 1 (16-byte header, `tcpdump -i any`).
    pub const LINUX_SLL: LinkType = LinkType(113);
    /// Raw IPv4.
    pub const IPV4: LinkType = LinkType(228);
    /// Raw IPv6.
    pub const IPV6: LinkType = LinkType(229);
    /// Linux "cooked" capture, version 2 (20-byte header).
    pub const LINUX_SLL2: LinkType = LinkType(276);
}

/// One captured packet as stored in a capture file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Record<'a> {
    /// Capture time since the Unix epoch.
    pub timestamp: Duration,
    /// How to read `data`.
    pub linktype: LinkType,
    /// The pcapng interface id; always 0 in classic pcap.
    pub interface: u32,
    /// Length of the packet on the wire; more than `data.len()` if the capture cut it.
    pub original_len: u32,
    /// The captured bytes.
    pub data: &'a [u8],
    /// The packet's comment (pcapng opt_comment, when UTF-8); always `None` in classic pcap.
    pub comment: Option<&'a str>,
}

impl<'a> Record<'a> {
    /// Decodes the captured bytes; see [`decode`].
    pub fn decode(&self) -> Result<Packet<'a>, DecodeError> {
        decode(self.linktype, self.data)
    }
}

/// A reader for either capture format, chosen by the file's first four bytes.
#[derive(Debug)]
pub enum CaptureReader<R> {
    /// A classic pcap file.
    Pcap(PcapReader<R>),
    /// A pcapng file.
    PcapNg(PcapNgReader<R>),
}

impl<R: Read> CaptureReader<R> {
    /// Sniffs the format and reads the file header.
    pub fn new(mut reader: R) -> Result<Self, CaptureError> {
        let mut magic = [0u8; 4];
        if !stream::read_full(&mut reader, &mut magic, "capture header")? {
            return Err(CaptureError::Truncated {
                what: "capture header",
            });
        }
        if magic == [0x0A, 0x0D, 0x0D, 0x0A] {
            PcapNgReader::after_first_word(reader, magic).map(CaptureReader::PcapNg)
        } else {
            PcapReader::after_magic(reader, magic).map(CaptureReader::Pcap)
        }
    }

    /// The name (pcapng `if_name`) of interface `id` as declared so far in the file; `None`
    /// for classic pcap, an unnamed interface, or one not declared yet.
    pub fn interface_name(&self, id: u32) -> Option<&str> {
        match self {
            CaptureReader::Pcap(_) => None,
            CaptureReader::PcapNg(r) => r.interfaces().get(id as usize).and_then(|i| i.name.as_deref()),
        }
    }

    /// The next packet record, or `None` at a clean end of file.
    pub fn next_record(&mut self) -> Result<Option<Record<'_>>, CaptureError> {
        match self {
            CaptureReader::Pcap(r) => r.next_record(),
            CaptureReader::PcapNg(r) => r.next_record(),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use super::*;

    #[test]
    fn sniffs_both_formats() {
        let src: SocketAddr = "192.0.2.1:5060".parse().unwrap();
        let dst: SocketAddr = "198.51.100.7:5062".parse().unwrap();
        let ip = build_udp(src, dst, b"OPTIONS").unwrap();
        let t = Duration::new(1_000, 5);

        let mut pcap = PcapWriter::new(Vec::new(), LinkType::RAW).unwrap();
        pcap.write_packet(t, &ip).unwrap();
        let mut ng = PcapNgWriter::new(Vec::new(), LinkType::ETHERNET).unwrap();
        let frame = wrap_ethernet(&ip, MacAddr::LOCAL_A, MacAddr::LOCAL_B).unwrap();
        ng.write_packet(t, &frame).unwrap();

        for bytes in [pcap.into_inner(), ng.into_inner()] {
            let mut r = CaptureReader::new(&bytes[..]).unwrap();
            let rec = r.next_record().unwrap().unwrap();
            assert_eq!(rec.timestamp, t);
            let p = rec.decode().unwrap();
            assert_eq!((p.src, p.dst, p.payload), (src, dst, &b"OPTIONS"[..]));
            assert!(r.next_record().unwrap().is_none());
        }
        assert!(matches!(
            CaptureReader::new(&[0u8; 3][..]),
            Err(CaptureError::Truncated { .. })
        ));
    }
}
