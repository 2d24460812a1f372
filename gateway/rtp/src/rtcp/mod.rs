//! RTCP (RFC 3550 §6) with the feedback messages of RFC 4585 and RFC 5104: zero-copy views over a
//! compound packet, and writers into caller buffers ([`write`](mod@write)).
//!
//! Every RTCP packet starts with the same word (RFC 3550 §6.4.1):
//!
//! ```text
//!  0                   1                   2                   3
//!  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |V=2|P|  RC/FMT |      PT       |    length (words - 1)         |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! ```
//!
//! and a compound packet is such packets back to back (§6.1). [`Compound`] walks them.
//!
//! Reduced-size RTCP (RFC 5506) is a compound packet that need not start with an SR or RR, or a
//! single feedback packet on its own. The iterator imposes no order on the packets, so reduced
//! size parses like any other; [`Compound::is_reduced_size`] tells the two apart for a caller
//! that must check what was negotiated.

pub mod write;

use std::slice::ChunksExact;

use crate::bytes::{u16_at, u32_at};
use crate::error::{need, ParseError};
use crate::id::{NtpTime, SeqNo, Ssrc};

/// An RTCP packet type (RFC 3550 §12.1, RFC 4585 §6.1, RFC 3611).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct PacketType(pub u8);

impl PacketType {
    /// Sender report (RFC 3550 §6.4.1).
    pub const SR: PacketType = PacketType(200);
    /// Receiver report (RFC 3550 §6.4.2).
    pub const RR: PacketType = PacketType(201);
    /// Source description (RFC 3550 §6.5).
    pub const SDES: PacketType = PacketType(202);
    /// Goodbye (RFC 3550 §6.6).
    pub const BYE: PacketType = PacketType(203);
    /// Application-defined (RFC 3550 §6.7).
    pub const APP: PacketType = PacketType(204);
    /// Transport-layer feedback (RFC 4585 §6.2).
    pub const RTPFB: PacketType = PacketType(205);
    /// Payload-specific feedback (RFC 4585 §6.3).
    pub const PSFB: PacketType = PacketType(206);
    /// Extended reports (RFC 3611).
    pub const XR: PacketType = PacketType(207);
}

/// Feedback message types (the FMT field of RTPFB and PSFB, RFC 4585 §6.1).
pub mod fmt {
    /// RTPFB: generic NACK (RFC 4585 §6.2.1).
    pub const NACK: u8 = 1;
    /// RTPFB: temporary maximum media stream bit rate request (RFC 5104 §4.2.1).
    pub const TMMBR: u8 = 3;
    /// RTPFB: temporary maximum media stream bit rate notification (RFC 5104 §4.2.2).
    pub const TMMBN: u8 = 4;
    /// RTPFB: transport-wide congestion control feedback
    /// (draft-holmer-rmcat-transport-wide-cc-extensions-01 §3.1).
    pub const TRANSPORT_CC: u8 = 15;
    /// PSFB: picture loss indication (RFC 4585 §6.3.1).
    pub const PLI: u8 = 1;
    /// PSFB: full intra request (RFC 5104 §4.3.1).
    pub const FIR: u8 = 4;
    /// PSFB: application layer feedback (RFC 4585 §6.4); REMB uses it.
    pub const AFB: u8 = 15;
}

/// Walks the packets of a compound RTCP packet.
///
/// Each item is one packet, typed by its PT (and FMT for feedback). A malformed packet yields one
/// `Err` and ends the walk, because its length field can no longer be trusted to find the next.
#[derive(Clone, Debug)]
pub struct Compound<'a> {
    rest: &'a [u8],
}

impl<'a> Compound<'a> {
    /// Starts a walk over `buf`. Nothing is checked until the first `next`.
    pub fn new(buf: &'a [u8]) -> Compound<'a> {
        Compound { rest: buf }
    }

    /// True if `buf` does not start with an SR or RR, the first rule of a full compound packet
    /// (RFC 3550 §6.1). Such a packet is only legal where RFC 5506 was negotiated
    /// (`a=rtcp-rsize`). WebRTC always negotiates it, IMS peers seldom do.
    pub fn is_reduced_size(buf: &[u8]) -> bool {
        !matches!(buf.get(1), Some(200 | 201))
    }
}

impl<'a> Iterator for Compound<'a> {
    type Item = Result<RtcpPacket<'a>, ParseError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.rest.is_empty() {
            return None;
        }
        match RtcpPacket::parse_one(self.rest) {
            Ok((packet, len)) => {
                self.rest = &self.rest[len..];
                Some(Ok(packet))
            }
            Err(e) => {
                self.rest = &[];
                Some(Err(e))
            }
        }
    }
}

/// One packet of a compound RTCP packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RtcpPacket<'a> {
    /// Sender report, PT 200.
    SenderReport(SenderReport<'a>),
    /// Receiver report, PT 201.
    ReceiverReport(ReceiverReport<'a>),
    /// Source description, PT 202.
    Sdes(Sdes<'a>),
    /// Goodbye, PT 203.
    Bye(Bye<'a>),
    /// Application-defined, PT 204.
    App(App<'a>),
    /// Generic NACK, PT 205 FMT 1.
    Nack(Nack<'a>),
    /// Transport-wide congestion control feedback, PT 205 FMT 15; kept opaque.
    TransportCc(Feedback<'a>),
    /// Temporary maximum media stream bit rate request, PT 205 FMT 3.
    Tmmbr(Tmmb<'a>),
    /// Temporary maximum media stream bit rate notification, PT 205 FMT 4.
    Tmmbn(Tmmb<'a>),
    /// Picture loss indication, PT 206 FMT 1.
    Pli(Pli),
    /// Full intra request, PT 206 FMT 4.
    Fir(Fir<'a>),
    /// Application layer feedback (REMB), PT 206 FMT 15; kept opaque.
    Afb(Feedback<'a>),
    /// Any other packet type or feedback format (XR, SLI, RPSI, ...), unparsed.
    Other(RawPacket<'a>),
}

impl<'a> RtcpPacket<'a> {
    /// Parses the first packet of `buf`; returns it and its length (including padding).
    fn parse_one(buf: &'a [u8]) -> Result<(RtcpPacket<'a>, usize), ParseError> {
        need("RTCP header", buf, 4)?;
        let version = buf[0] >> 6;
        if version != 2 {
            return Err(ParseError::Version(version));
        }
        let len = 4 * (usize::from(u16_at(buf, 2)) + 1);
        need("RTCP packet", buf, len)?;
        let mut body = &buf[4..len];
        if buf[0] & 0x20 != 0 {
            // RFC 3550 §6.4.1: the last octet counts the padding, itself included.
            let count = buf[len - 1];
            let pad = usize::from(count);
            if pad == 0 || pad > body.len() {
                return Err(ParseError::Padding(count));
            }
            body = &body[..body.len() - pad];
        }
        let count = buf[0] & 0x1f;
        let raw = RawPacket {
            pt: PacketType(buf[1]),
            count,
            body,
        };
        let packet = match raw.pt {
            PacketType::SR => RtcpPacket::SenderReport(SenderReport::parse(raw)?),
            PacketType::RR => RtcpPacket::ReceiverReport(ReceiverReport::parse(raw)?),
            PacketType::SDES => RtcpPacket::Sdes(Sdes::parse(raw)?),
            PacketType::BYE => RtcpPacket::Bye(Bye::parse(raw)?),
            PacketType::APP => RtcpPacket::App(App::parse(raw)?),
            PacketType::RTPFB => {
                let fb = Feedback::parse(raw)?;
                match count {
                    fmt::NACK => RtcpPacket::Nack(Nack::parse(fb)?),
                    fmt::TRANSPORT_CC => RtcpPacket::TransportCc(fb),
                    fmt::TMMBR => RtcpPacket::Tmmbr(Tmmb::parse(fb, "TMMBR FCI")?),
                    fmt::TMMBN => RtcpPacket::Tmmbn(Tmmb::parse(fb, "TMMBN FCI")?),
                    _ => RtcpPacket::Other(raw),
                }
            }
            PacketType::PSFB => {
                let fb = Feedback::parse(raw)?;
                match count {
                    fmt::PLI => RtcpPacket::Pli(Pli {
                        sender: fb.sender,
                        media: fb.media,
                    }),
                    fmt::FIR => RtcpPacket::Fir(Fir::parse(fb)?),
                    fmt::AFB => RtcpPacket::Afb(fb),
                    _ => RtcpPacket::Other(raw),
                }
            }
            _ => RtcpPacket::Other(raw),
        };
        Ok((packet, len))
    }

    /// The packet type.
    pub fn packet_type(&self) -> PacketType {
        match self {
            RtcpPacket::SenderReport(_) => PacketType::SR,
            RtcpPacket::ReceiverReport(_) => PacketType::RR,
            RtcpPacket::Sdes(_) => PacketType::SDES,
            RtcpPacket::Bye(_) => PacketType::BYE,
            RtcpPacket::App(_) => PacketType::APP,
            RtcpPacket::Nack(_) | RtcpPacket::TransportCc(_) | RtcpPacket::Tmmbr(_) | RtcpPacket::Tmmbn(_) => PacketType::RTPFB,
            RtcpPacket::Pli(_) | RtcpPacket::Fir(_) | RtcpPacket::Afb(_) => PacketType::PSFB,
            RtcpPacket::Other(raw) => raw.pt,
        }
    }
}

/// An RTCP packet this module does not interpret: type, the five-bit count/FMT field, and the
/// body after the header word with any padding removed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RawPacket<'a> {
    /// Packet type.
    pub pt: PacketType,
    /// The RC, SC or FMT field.
    pub count: u8,
    /// Everything after the first word, padding removed.
    pub body: &'a [u8],
}

/// The sender information block of an SR (RFC 3550 §6.4.1), also the input of
/// [`write::sender_report`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SenderInfo {
    /// SSRC of the sender.
    pub ssrc: Ssrc,
    /// Wall-clock time when the report was sent.
    pub ntp: NtpTime,
    /// The same instant in the RTP timestamp units of the sender's stream.
    pub rtp_ts: u32,
    /// Packets sent since the start of transmission (wraps).
    pub packet_count: u32,
    /// Payload octets sent since the start of transmission (wraps).
    pub octet_count: u32,
}

/// One reception report block (RFC 3550 §6.4.1), 24 bytes on the wire.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReportBlock {
    /// SSRC of the source this block reports on.
    pub ssrc: Ssrc,
    /// Fraction of packets lost since the previous report, in 1/256 units.
    pub fraction_lost: u8,
    /// Cumulative packets lost: a 24-bit signed field, negative when duplicates outnumber losses
    /// (RFC 3550 §6.4.1, A.3). Writers clamp it to -2^23..=2^23-1.
    pub cumulative_lost: i32,
    /// Extended highest sequence number received: cycles in the high 16 bits.
    pub ext_highest_seq: u32,
    /// Interarrival jitter in RTP timestamp units (§6.4.1, A.8).
    pub jitter: u32,
    /// LSR: middle 32 bits of the NTP time of the last SR from this source, or 0.
    pub last_sr: u32,
    /// DLSR: delay since that SR was received, in 1/65536 s, or 0.
    pub delay_since_last_sr: u32,
}

/// Length of a report block on the wire.
pub const REPORT_BLOCK_LEN: usize = 24;

impl ReportBlock {
    /// Decodes a 24-byte block.
    fn decode(b: &[u8]) -> ReportBlock {
        // Sign-extend the 24-bit cumulative loss.
        let lost = (u32_at(b, 4) << 8) as i32 >> 8;
        ReportBlock {
            ssrc: Ssrc(u32_at(b, 0)),
            fraction_lost: b[4],
            cumulative_lost: lost,
            ext_highest_seq: u32_at(b, 8),
            jitter: u32_at(b, 12),
            last_sr: u32_at(b, 16),
            delay_since_last_sr: u32_at(b, 20),
        }
    }
}

/// Iterator over the report blocks of an SR or RR.
#[derive(Clone, Debug)]
pub struct ReportBlocks<'a>(ChunksExact<'a, u8>);

impl Iterator for ReportBlocks<'_> {
    type Item = ReportBlock;

    fn next(&mut self) -> Option<ReportBlock> {
        self.0.next().map(ReportBlock::decode)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.0.size_hint()
    }
}

impl ExactSizeIterator for ReportBlocks<'_> {}

/// Sender report (RFC 3550 §6.4.1): sender info, RC report blocks, then an optional
/// profile-specific extension.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SenderReport<'a> {
    raw: RawPacket<'a>,
}

impl<'a> SenderReport<'a> {
    fn parse(raw: RawPacket<'a>) -> Result<SenderReport<'a>, ParseError> {
        need(
            "SR",
            raw.body,
            24 + REPORT_BLOCK_LEN * usize::from(raw.count),
        )?;
        Ok(SenderReport { raw })
    }

    /// The sender information.
    pub fn info(&self) -> SenderInfo {
        let b = self.raw.body;
        SenderInfo {
            ssrc: Ssrc(u32_at(b, 0)),
            ntp: NtpTime(u64::from(u32_at(b, 4)) << 32 | u64::from(u32_at(b, 8))),
            rtp_ts: u32_at(b, 12),
            packet_count: u32_at(b, 16),
            octet_count: u32_at(b, 20),
        }
    }

    /// SSRC of the sender.
    pub fn ssrc(&self) -> Ssrc {
        Ssrc(u32_at(self.raw.body, 0))
    }

    /// The reception report blocks (RC of them).
    pub fn report_blocks(&self) -> ReportBlocks<'a> {
        let end = 24 + REPORT_BLOCK_LEN * usize::from(self.raw.count);
        ReportBlocks(self.raw.body[24..end].chunks_exact(REPORT_BLOCK_LEN))
    }

    /// The profile-specific extension after the blocks (RFC 3550 §6.4.1), usually empty.
    pub fn profile_extension(&self) -> &'a [u8] {
        &self.raw.body[24 + REPORT_BLOCK_LEN * usize::from(self.raw.count)..]
    }
}

/// Receiver report (RFC 3550 §6.4.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReceiverReport<'a> {
    raw: RawPacket<'a>,
}

impl<'a> ReceiverReport<'a> {
    fn parse(raw: RawPacket<'a>) -> Result<ReceiverReport<'a>, ParseError> {
        need(
            "RR",
            raw.body,
            4 + REPORT_BLOCK_LEN * usize::from(raw.count),
        )?;
        Ok(ReceiverReport { raw })
    }

    /// SSRC of the packet's sender.
    pub fn ssrc(&self) -> Ssrc {
        Ssrc(u32_at(self.raw.body, 0))
    }

    /// The reception report blocks (RC of them).
    pub fn report_blocks(&self) -> ReportBlocks<'a> {
        let end = 4 + REPORT_BLOCK_LEN * usize::from(self.raw.count);
        ReportBlocks(self.raw.body[4..end].chunks_exact(REPORT_BLOCK_LEN))
    }

    /// The profile-specific extension after the blocks, usually empty.
    pub fn profile_extension(&self) -> &'a [u8] {
        &self.raw.body[4 + REPORT_BLOCK_LEN * usize::from(self.raw.count)..]
    }
}

/// An SDES item type (RFC 3550 §6.5, §12.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SdesType(pub u8);

impl SdesType {
    /// Canonical end-point identifier (§6.5.1), the only mandatory item.
    pub const CNAME: SdesType = SdesType(1);
    /// User name.
    pub const NAME: SdesType = SdesType(2);
    /// E-mail address.
    pub const EMAIL: SdesType = SdesType(3);
    /// Phone number.
    pub const PHONE: SdesType = SdesType(4);
    /// Geographic location.
    pub const LOC: SdesType = SdesType(5);
    /// Application or tool name.
    pub const TOOL: SdesType = SdesType(6);
    /// Notice.
    pub const NOTE: SdesType = SdesType(7);
    /// Private extension.
    pub const PRIV: SdesType = SdesType(8);
}

/// Source description (RFC 3550 §6.5): SC chunks, each an SSRC and a list of items ended by a
/// null octet and padded to a word boundary. The whole packet is checked at parse.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sdes<'a> {
    raw: RawPacket<'a>,
}

impl<'a> Sdes<'a> {
    fn parse(raw: RawPacket<'a>) -> Result<Sdes<'a>, ParseError> {
        let mut pos = 0;
        for _ in 0..raw.count {
            pos = sdes_chunk(raw.body, pos)?.1;
        }
        Ok(Sdes { raw })
    }

    /// The chunks (SC of them).
    pub fn chunks(&self) -> SdesChunks<'a> {
        SdesChunks {
            body: self.raw.body,
            pos: 0,
            left: self.raw.count,
        }
    }

    /// The first CNAME of any chunk, with the SSRC it describes.
    pub fn cname(&self) -> Option<(Ssrc, &'a [u8])> {
        self.chunks()
            .find_map(|c| c.item(SdesType::CNAME).map(|v| (c.ssrc, v)))
    }
}

/// Reads the SDES chunk at `pos` of `body`; returns it and where the next chunk starts.
fn sdes_chunk(body: &[u8], pos: usize) -> Result<(SdesChunk<'_>, usize), ParseError> {
    let rest = body.get(pos..).unwrap_or_default();
    need("SDES chunk", rest, 4)?;
    let mut p = 4;
    loop {
        need("SDES item list", rest, p + 1)?;
        if rest[p] == 0 {
            break;
        }
        need("SDES item", rest, p + 2)?;
        p += 2 + usize::from(rest[p + 1]);
        need("SDES item", rest, p)?;
    }
    let items = &rest[4..p];
    // The null octet, then null octets up to the next 32-bit boundary (§6.5).
    let end = (p + 1).next_multiple_of(4);
    need("SDES chunk padding", rest, end)?;
    Ok((
        SdesChunk {
            ssrc: Ssrc(u32_at(rest, 0)),
            items,
        },
        pos + end,
    ))
}

/// Iterator over the chunks of an [`Sdes`].
#[derive(Clone, Debug)]
pub struct SdesChunks<'a> {
    body: &'a [u8],
    pos: usize,
    left: u8,
}

impl<'a> Iterator for SdesChunks<'a> {
    type Item = SdesChunk<'a>;

    fn next(&mut self) -> Option<SdesChunk<'a>> {
        if self.left == 0 {
            return None;
        }
        self.left -= 1;
        // Validated at parse, so this only fails on our own bug; stop rather than panic.
        let (chunk, next) = sdes_chunk(self.body, self.pos).ok()?;
        self.pos = next;
        Some(chunk)
    }
}

/// One SDES chunk: the source it describes and its items.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SdesChunk<'a> {
    /// The SSRC or CSRC described.
    pub ssrc: Ssrc,
    items: &'a [u8],
}

impl<'a> SdesChunk<'a> {
    /// The items in order.
    pub fn items(&self) -> SdesItems<'a> {
        SdesItems { rest: self.items }
    }

    /// The value of the first item of type `kind`.
    pub fn item(&self, kind: SdesType) -> Option<&'a [u8]> {
        self.items().find(|i| i.kind == kind).map(|i| i.value)
    }
}

/// Iterator over the items of an [`SdesChunk`].
#[derive(Clone, Debug)]
pub struct SdesItems<'a> {
    rest: &'a [u8],
}

impl<'a> Iterator for SdesItems<'a> {
    type Item = SdesItem<'a>;

    fn next(&mut self) -> Option<SdesItem<'a>> {
        let (&kind, rest) = self.rest.split_first()?;
        let (&len, rest) = rest.split_first()?;
        let value = rest.get(..usize::from(len))?;
        self.rest = &rest[value.len()..];
        Some(SdesItem {
            kind: SdesType(kind),
            value,
        })
    }
}

/// One SDES item: type and text (UTF-8 by §6.5, but not checked: it is the peer's text).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SdesItem<'a> {
    /// Item type.
    pub kind: SdesType,
    /// Item text.
    pub value: &'a [u8],
}

/// Goodbye (RFC 3550 §6.6): SC sources leaving, and an optional reason.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Bye<'a> {
    ssrcs: &'a [u8],
    reason: Option<&'a [u8]>,
}

impl<'a> Bye<'a> {
    fn parse(raw: RawPacket<'a>) -> Result<Bye<'a>, ParseError> {
        let n = 4 * usize::from(raw.count);
        need("BYE", raw.body, n)?;
        let (ssrcs, rest) = raw.body.split_at(n);
        let reason = match rest.split_first() {
            // Words after the list are the reason: a length octet and text, null-padded.
            Some((&len, text)) => {
                need("BYE reason", text, usize::from(len))?;
                Some(&text[..usize::from(len)])
            }
            None => None,
        };
        Ok(Bye { ssrcs, reason })
    }

    /// The sources leaving.
    pub fn ssrcs(&self) -> impl ExactSizeIterator<Item = Ssrc> + 'a {
        self.ssrcs.chunks_exact(4).map(|c| Ssrc(u32_at(c, 0)))
    }

    /// The reason for leaving, if given.
    pub fn reason(&self) -> Option<&'a [u8]> {
        self.reason
    }
}

/// Application-defined packet (RFC 3550 §6.7).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct App<'a> {
    /// The five-bit subtype.
    pub subtype: u8,
    /// SSRC or CSRC of the sender.
    pub ssrc: Ssrc,
    /// Four ASCII characters naming the application.
    pub name: [u8; 4],
    /// Application-dependent data.
    pub data: &'a [u8],
}

impl<'a> App<'a> {
    fn parse(raw: RawPacket<'a>) -> Result<App<'a>, ParseError> {
        need("APP", raw.body, 8)?;
        Ok(App {
            subtype: raw.count,
            ssrc: Ssrc(u32_at(raw.body, 0)),
            name: [raw.body[4], raw.body[5], raw.body[6], raw.body[7]],
            data: &raw.body[8..],
        })
    }
}

/// The common part of an RTPFB or PSFB message (RFC 4585 §6.1): FMT, the two SSRCs, and the
/// feedback control information. Formats Estuary only relays (TWCC, REMB) stay in this form.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Feedback<'a> {
    /// The FMT field.
    pub fmt: u8,
    /// SSRC of the packet sender.
    pub sender: Ssrc,
    /// SSRC of the media source the feedback is about.
    pub media: Ssrc,
    /// Feedback control information.
    pub fci: &'a [u8],
}

impl<'a> Feedback<'a> {
    fn parse(raw: RawPacket<'a>) -> Result<Feedback<'a>, ParseError> {
        need("feedback message", raw.body, 8)?;
        Ok(Feedback {
            fmt: raw.count,
            sender: Ssrc(u32_at(raw.body, 0)),
            media: Ssrc(u32_at(raw.body, 4)),
            fci: &raw.body[8..],
        })
    }

    /// True if this is an AFB carrying REMB (draft-alvestrand-rmcat-remb-03 §2.2: the FCI
    /// starts with "REMB").
    pub fn is_remb(&self) -> bool {
        self.fmt == fmt::AFB && self.fci.starts_with(b"REMB")
    }

    /// The REMB this AFB carries, if it is one and well formed (draft-alvestrand-rmcat-remb-03
    /// §2.2: "REMB", the SSRC count, a 6-bit exponent and 18-bit mantissa, the SSRCs).
    pub fn remb(&self) -> Option<Remb<'a>> {
        if !self.is_remb() || self.fci.len() < 8 {
            return None;
        }
        let count = usize::from(self.fci[4]);
        let ssrcs = self.fci.get(8..8 + 4 * count)?;
        let exp = self.fci[5] >> 2;
        let mantissa = u32_at(self.fci, 4) & 0x3_ffff;
        Some(Remb { bitrate: u64::from(mantissa).checked_shl(u32::from(exp)).unwrap_or(u64::MAX), ssrcs })
    }
}

/// Receiver estimated maximum bitrate: what the receiver can take of the listed streams in
/// all, bits/s.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Remb<'a> {
    /// The estimate, bits/s (mantissa << exponent; saturates rather than wraps).
    pub bitrate: u64,
    ssrcs: &'a [u8],
}

impl<'a> Remb<'a> {
    /// The media sources the estimate covers.
    pub fn ssrcs(&self) -> impl ExactSizeIterator<Item = Ssrc> + 'a {
        self.ssrcs.chunks_exact(4).map(|c| Ssrc(u32_at(c, 0)))
    }
}

/// TMMBR or TMMBN (RFC 5104 §4.2): tuples of (SSRC, maximum total bitrate, overhead). In a
/// TMMBR the SSRC is the media sender asked to keep below the bitrate; in a TMMBN it is the
/// owner of a tuple of the bounding set. The media-source field of the header is 0.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tmmb<'a> {
    /// SSRC of the packet sender.
    pub sender: Ssrc,
    fci: &'a [u8],
}

impl<'a> Tmmb<'a> {
    fn parse(fb: Feedback<'a>, what: &'static str) -> Result<Tmmb<'a>, ParseError> {
        // A TMMBN may be empty (an empty bounding set); a TMMBR may not, but it is read
        // as a request for nothing rather than refused.
        if fb.fci.len() % 8 != 0 {
            return Err(ParseError::Malformed(what));
        }
        Ok(Tmmb { sender: fb.sender, fci: fb.fci })
    }

    /// The tuples.
    pub fn entries(&self) -> impl ExactSizeIterator<Item = TmmbEntry> + 'a {
        self.fci.chunks_exact(8).map(|c| {
            let word = u32_at(c, 4);
            let exp = word >> 26;
            let mantissa = (word >> 9) & 0x1_ffff;
            TmmbEntry {
                ssrc: Ssrc(u32_at(c, 0)),
                bitrate: u64::from(mantissa).checked_shl(exp).unwrap_or(u64::MAX),
                overhead: (word & 0x1ff) as u16,
            }
        })
    }
}

/// One TMMBR/TMMBN tuple (RFC 5104 §4.2.1.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TmmbEntry {
    /// The media sender (TMMBR) or the tuple's owner (TMMBN).
    pub ssrc: Ssrc,
    /// Maximum total media bitrate, bits/s.
    pub bitrate: u64,
    /// Measured per-packet overhead, bytes (9 bits).
    pub overhead: u16,
}

/// Generic NACK (RFC 4585 §6.2.1): one or more (PID, BLP) pairs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Nack<'a> {
    /// SSRC of the packet sender.
    pub sender: Ssrc,
    /// SSRC of the media source whose packets are missing.
    pub media: Ssrc,
    fci: &'a [u8],
}

impl<'a> Nack<'a> {
    fn parse(fb: Feedback<'a>) -> Result<Nack<'a>, ParseError> {
        if fb.fci.is_empty() || fb.fci.len() % 4 != 0 {
            return Err(ParseError::Malformed("NACK FCI"));
        }
        Ok(Nack {
            sender: fb.sender,
            media: fb.media,
            fci: fb.fci,
        })
    }

    /// The (PID, BLP) pairs as sent.
    pub fn pairs(&self) -> impl ExactSizeIterator<Item = NackPair> + 'a {
        self.fci.chunks_exact(4).map(|c| NackPair {
            pid: SeqNo(u16_at(c, 0)),
            blp: u16_at(c, 2),
        })
    }

    /// Every sequence number reported lost, pair by pair: PID, then PID+i+1 for each set bit i
    /// of BLP.
    pub fn lost(&self) -> NackLost<'a> {
        NackLost {
            pairs: self.fci.chunks_exact(4),
            cur: None,
            bit: 0,
        }
    }
}

/// One NACK FCI entry (RFC 4585 §6.2.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NackPair {
    /// Packet ID: a lost packet's sequence number.
    pub pid: SeqNo,
    /// Bitmask of following lost packets: bit i set means PID+i+1 is lost too.
    pub blp: u16,
}

/// Iterator over the sequence numbers a [`Nack`] reports lost.
#[derive(Clone, Debug)]
pub struct NackLost<'a> {
    pairs: ChunksExact<'a, u8>,
    cur: Option<NackPair>,
    /// 0: PID not yet yielded; 1..=16: next BLP bit to look at.
    bit: u16,
}

impl Iterator for NackLost<'_> {
    type Item = SeqNo;

    fn next(&mut self) -> Option<SeqNo> {
        loop {
            if let Some(pair) = self.cur {
                if self.bit == 0 {
                    self.bit = 1;
                    return Some(pair.pid);
                }
                while self.bit <= 16 {
                    let b = self.bit;
                    self.bit += 1;
                    if pair.blp & (1 << (b - 1)) != 0 {
                        return Some(pair.pid.add(b));
                    }
                }
            }
            let c = self.pairs.next()?;
            self.cur = Some(NackPair {
                pid: SeqNo(u16_at(c, 0)),
                blp: u16_at(c, 2),
            });
            self.bit = 0;
        }
    }
}

/// Picture loss indication (RFC 4585 §6.3.1): no FCI.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pli {
    /// SSRC of the packet sender.
    pub sender: Ssrc,
    /// SSRC of the media source asked for a new picture.
    pub media: Ssrc,
}

/// Full intra request (RFC 5104 §4.3.1): one (SSRC, sequence number) entry per media sender
/// asked for a decoder refresh point. The media-source SSRC of the common header is unused (0).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Fir<'a> {
    /// SSRC of the packet sender.
    pub sender: Ssrc,
    fci: &'a [u8],
}

impl<'a> Fir<'a> {
    fn parse(fb: Feedback<'a>) -> Result<Fir<'a>, ParseError> {
        if fb.fci.is_empty() || fb.fci.len() % 8 != 0 {
            return Err(ParseError::Malformed("FIR FCI"));
        }
        Ok(Fir {
            sender: fb.sender,
            fci: fb.fci,
        })
    }

    /// The FCI entries.
    pub fn entries(&self) -> impl ExactSizeIterator<Item = FirEntry> + 'a {
        self.fci.chunks_exact(8).map(|c| FirEntry {
            ssrc: Ssrc(u32_at(c, 0)),
            seq_nr: c[4],
        })
    }
}

/// One FIR FCI entry (RFC 5104 §4.3.1.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FirEntry {
    /// The media sender that should send a decoder refresh point.
    pub ssrc: Ssrc,
    /// Command sequence number: incremented per new request, repeated on retransmission.
    pub seq_nr: u8,
}

#[cfg(test)]
mod tests;
