//! RTP packets (RFC 3550 §5.1): a zero-copy view, an in-place rewriter and a header writer.
//!
//! ```text
//!  0                   1                   2                   3
//!  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |V=2|P|X|  CC   |M|     PT      |       sequence number         |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                           timestamp                           |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |           synchronization source (SSRC) identifier            |
//! +=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+
//! |            contributing source (CSRC) identifiers             |
//! |                             ....                              |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |      defined by profile       |           length              |  if X (§5.3.1)
//! |                        header extension                       |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                 payload ...   | padding ... | padding count   |  if P
//! ```

use std::ops::Range;

use crate::bytes::{put_u16, put_u32, u16_at, u32_at};
use crate::error::{need, room, ParseError, WriteError};
use crate::ext::HeaderExtension;
use crate::id::{Pt, SeqNo, Ssrc};

/// Length of the fixed RTP header (RFC 3550 §5.1).
pub const FIXED_HEADER_LEN: usize = 12;

/// A validated RTP packet borrowed from a datagram.
///
/// [`RtpPacket::parse`] checks the whole layout once: version 2, the CSRC list, the extension
/// header and its declared length, and the padding count. Every accessor after that is a plain
/// read of a field whose bounds were proved at parse time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RtpPacket<'a> {
    buf: &'a [u8],
    layout: Layout,
}

/// Offsets proved valid by [`Layout::of`]: `12 <= csrc_end <= header_len <= payload_end <= len`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Layout {
    /// End of the CSRC list (12 + 4·CC).
    csrc_end: usize,
    /// End of the header, extension included: where the payload starts.
    header_len: usize,
    /// Where the padding starts (the packet length if P is clear).
    payload_end: usize,
}

impl Layout {
    fn of(buf: &[u8]) -> Result<Layout, ParseError> {
        need("RTP header", buf, FIXED_HEADER_LEN)?;
        let version = buf[0] >> 6;
        if version != 2 {
            return Err(ParseError::Version(version));
        }
        let csrc_end = FIXED_HEADER_LEN + 4 * usize::from(buf[0] & 0x0f);
        need("RTP CSRC list", buf, csrc_end)?;
        let mut header_len = csrc_end;
        if buf[0] & 0x10 != 0 {
            // RFC 3550 §5.3.1: 16 bits profile, 16 bits length in 32-bit words, then the words.
            need("RTP header extension", buf, csrc_end + 4)?;
            let words = usize::from(u16_at(buf, csrc_end + 2));
            header_len = csrc_end + 4 + 4 * words;
            need("RTP header extension", buf, header_len)?;
        }
        let mut payload_end = buf.len();
        if buf[0] & 0x20 != 0 {
            // RFC 3550 §5.1: the last octet counts the padding, itself included, so 0 is invalid
            // and the padding cannot reach into the header.
            let count = buf[buf.len() - 1];
            let pad = usize::from(count);
            if pad == 0 || pad > buf.len() - header_len {
                return Err(ParseError::Padding(count));
            }
            payload_end -= pad;
        }
        Ok(Layout {
            csrc_end,
            header_len,
            payload_end,
        })
    }
}

impl<'a> RtpPacket<'a> {
    /// Validates `buf` as an RTP packet (RFC 3550 §5.1, A.1 header validity checks minus the
    /// payload-type check, which needs the SDP).
    pub fn parse(buf: &'a [u8]) -> Result<RtpPacket<'a>, ParseError> {
        Ok(RtpPacket {
            buf,
            layout: Layout::of(buf)?,
        })
    }

    /// The version field; always 2 for a parsed packet.
    pub fn version(&self) -> u8 {
        self.buf[0] >> 6
    }

    /// The P bit: the packet ends in padding.
    pub fn has_padding(&self) -> bool {
        self.buf[0] & 0x20 != 0
    }

    /// The X bit: a header extension follows the CSRCs.
    pub fn has_extension(&self) -> bool {
        self.buf[0] & 0x10 != 0
    }

    /// The CC field: how many CSRCs follow the fixed header.
    pub fn csrc_count(&self) -> u8 {
        self.buf[0] & 0x0f
    }

    /// The M bit. For audio it marks the first packet of a talkspurt (RFC 3551 §4.1).
    pub fn marker(&self) -> bool {
        self.buf[1] & 0x80 != 0
    }

    /// The payload type.
    pub fn pt(&self) -> Pt {
        Pt(self.buf[1] & 0x7f)
    }

    /// The sequence number.
    pub fn seq(&self) -> SeqNo {
        SeqNo(u16_at(self.buf, 2))
    }

    /// The media timestamp, in units of the payload format's clock.
    pub fn timestamp(&self) -> u32 {
        u32_at(self.buf, 4)
    }

    /// The synchronization source.
    pub fn ssrc(&self) -> Ssrc {
        Ssrc(u32_at(self.buf, 8))
    }

    /// The contributing sources (RFC 3550 §5.1, CC of them).
    pub fn csrcs(&self) -> Csrcs<'a> {
        Csrcs(self.buf[FIXED_HEADER_LEN..self.layout.csrc_end].chunks_exact(4))
    }

    /// The header extension, if X is set (RFC 3550 §5.3.1; RFC 8285 elements inside).
    pub fn extension(&self) -> Option<HeaderExtension<'a>> {
        if !self.has_extension() {
            return None;
        }
        let at = self.layout.csrc_end;
        Some(HeaderExtension::new(
            u16_at(self.buf, at),
            &self.buf[at + 4..self.layout.header_len],
        ))
    }

    /// Header length: fixed header, CSRCs and extension. The payload starts here.
    pub fn header_len(&self) -> usize {
        self.layout.header_len
    }

    /// The payload without padding.
    pub fn payload(&self) -> &'a [u8] {
        &self.buf[self.payload_range()]
    }

    /// Where the payload lies in the packet, for callers that rewrite it in place.
    pub fn payload_range(&self) -> Range<usize> {
        self.layout.header_len..self.layout.payload_end
    }

    /// Number of padding octets at the end, the count octet included (0 if P is clear).
    pub fn padding_len(&self) -> usize {
        self.buf.len() - self.layout.payload_end
    }

    /// The whole packet.
    pub fn as_bytes(&self) -> &'a [u8] {
        self.buf
    }
}

/// Iterator over the CSRC list of an [`RtpPacket`].
#[derive(Clone, Debug)]
pub struct Csrcs<'a>(std::slice::ChunksExact<'a, u8>);

impl Iterator for Csrcs<'_> {
    type Item = Ssrc;

    fn next(&mut self) -> Option<Ssrc> {
        self.0.next().map(|c| Ssrc(u32_at(c, 0)))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.0.size_hint()
    }
}

impl ExactSizeIterator for Csrcs<'_> {}

/// A validated RTP packet in a mutable buffer, for rewriting header fields in place (the relay
/// path: no copy, no allocation). The layout cannot change through it, so the offsets proved at
/// parse stay valid.
#[derive(Debug)]
pub struct RtpPacketMut<'a> {
    buf: &'a mut [u8],
    layout: Layout,
}

impl<'a> RtpPacketMut<'a> {
    /// Validates `buf` exactly as [`RtpPacket::parse`] does.
    pub fn parse(buf: &'a mut [u8]) -> Result<RtpPacketMut<'a>, ParseError> {
        let layout = Layout::of(buf)?;
        Ok(RtpPacketMut { buf, layout })
    }

    /// A read-only view of the packet as it is now.
    pub fn view(&self) -> RtpPacket<'_> {
        RtpPacket {
            buf: self.buf,
            layout: self.layout,
        }
    }

    /// Sets or clears the marker bit.
    pub fn set_marker(&mut self, marker: bool) {
        self.buf[1] = (self.buf[1] & 0x7f) | if marker { 0x80 } else { 0 };
    }

    /// Sets the payload type (low 7 bits of `pt`).
    pub fn set_pt(&mut self, pt: Pt) {
        self.buf[1] = (self.buf[1] & 0x80) | (pt.0 & 0x7f);
    }

    /// Sets the sequence number.
    pub fn set_seq(&mut self, seq: SeqNo) {
        put_u16(self.buf, 2, seq.0);
    }

    /// Sets the timestamp.
    pub fn set_timestamp(&mut self, ts: u32) {
        put_u32(self.buf, 4, ts);
    }

    /// Sets the SSRC.
    pub fn set_ssrc(&mut self, ssrc: Ssrc) {
        put_u32(self.buf, 8, ssrc.0);
    }

    /// The payload, for in-place payload rewriting (e.g. RFC 4733 durations).
    pub fn payload_mut(&mut self) -> &mut [u8] {
        &mut self.buf[self.layout.header_len..self.layout.payload_end]
    }
}

/// Removes the header extension from the RTP packet in `buf`, in place: the payload and padding
/// move down over it and X is cleared. Returns the new packet length (the old one if there was no
/// extension); bytes of `buf` past it are left as they were.
///
/// The IMS leg negotiates no RFC 8285 extensions, so the relay strips what the browser adds
/// (MID, audio level, transport-wide sequence numbers) before forwarding. This works on the
/// plaintext: strip after SRTP unprotect and before protect.
pub fn strip_extension(buf: &mut [u8]) -> Result<usize, ParseError> {
    let layout = Layout::of(buf)?;
    if buf[0] & 0x10 == 0 {
        return Ok(buf.len());
    }
    let removed = layout.header_len - layout.csrc_end;
    buf.copy_within(layout.header_len.., layout.csrc_end);
    buf[0] &= !0x10;
    Ok(buf.len() - removed)
}

/// The fixed header fields, for writing a new packet (RFC 3550 §5.1). CC, X and P are written as
/// zero: packets Estuary originates (DTMF, comfort noise, transcoded audio) carry none of them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RtpHeader {
    /// The M bit.
    pub marker: bool,
    /// Payload type.
    pub pt: Pt,
    /// Sequence number.
    pub seq: SeqNo,
    /// Timestamp.
    pub timestamp: u32,
    /// Synchronization source.
    pub ssrc: Ssrc,
}

impl RtpHeader {
    /// The fixed-header fields of a parsed packet.
    pub fn of(p: &RtpPacket<'_>) -> RtpHeader {
        RtpHeader {
            marker: p.marker(),
            pt: p.pt(),
            seq: p.seq(),
            timestamp: p.timestamp(),
            ssrc: p.ssrc(),
        }
    }

    /// Writes the 12-byte header to the start of `buf`; returns 12.
    pub fn write(&self, buf: &mut [u8]) -> Result<usize, WriteError> {
        room(buf, FIXED_HEADER_LEN)?;
        buf[0] = 0x80;
        buf[1] = (self.pt.0 & 0x7f) | if self.marker { 0x80 } else { 0 };
        put_u16(buf, 2, self.seq.0);
        put_u32(buf, 4, self.timestamp);
        put_u32(buf, 8, self.ssrc.0);
        Ok(FIXED_HEADER_LEN)
    }

    /// Writes the header followed by `payload`; returns the packet length.
    pub fn write_with_payload(&self, payload: &[u8], buf: &mut [u8]) -> Result<usize, WriteError> {
        let len = FIXED_HEADER_LEN + payload.len();
        room(buf, len)?;
        self.write(buf)?;
        buf[FIXED_HEADER_LEN..len].copy_from_slice(payload);
        Ok(len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// V=2 P=1 X=1 CC=2, M=1 PT=111, seq 0x1234, ts 0xdeadbeef, SSRC 0x11223344, two CSRCs, a
    /// one-word extension, a 3-byte payload and 4 bytes of padding.
    const FULL: [u8; 35] = [
        0b1011_0010,
        0x80 | 111,
        0x12,
        0x34, //
        0xde,
        0xad,
        0xbe,
        0xef, //
        0x11,
        0x22,
        0x33,
        0x44, //
        0,
        0,
        0,
        1, // CSRC 1
        0,
        0,
        0,
        2, // CSRC 2
        0xbe,
        0xde,
        0x00,
        0x01, // one-byte extension, 1 word
        0x10,
        0xaa,
        0x00,
        0x00, // id 1, len 1: 0xaa; two padding bytes
        b'a',
        b'b',
        b'c', // payload
        0,
        0,
        0,
        4, // padding, count 4
    ];

    fn full() -> Vec<u8> {
        FULL.to_vec()
    }

    #[test]
    fn parses_every_field() {
        let buf = full();
        let p = RtpPacket::parse(&buf).unwrap();
        assert_eq!(p.version(), 2);
        assert!(p.has_padding() && p.has_extension() && p.marker());
        assert_eq!(p.csrc_count(), 2);
        assert_eq!(p.pt(), Pt(111));
        assert_eq!(p.seq(), SeqNo(0x1234));
        assert_eq!(p.timestamp(), 0xdead_beef);
        assert_eq!(p.ssrc(), Ssrc(0x1122_3344));
        assert_eq!(p.csrcs().collect::<Vec<_>>(), [Ssrc(1), Ssrc(2)]);
        assert_eq!(p.header_len(), 28);
        assert_eq!(p.payload(), b"abc");
        assert_eq!(p.payload_range(), 28..31);
        assert_eq!(p.padding_len(), 4);
        let ext = p.extension().unwrap();
        assert_eq!(ext.profile(), 0xbede);
        assert_eq!(ext.find(crate::ExtId(1)), Some(&[0xaa][..]));
    }

    #[test]
    fn minimal_packet() {
        let mut buf = [0u8; 12];
        let h = RtpHeader {
            marker: false,
            pt: Pt(0),
            seq: SeqNo(1),
            timestamp: 160,
            ssrc: Ssrc(9),
        };
        assert_eq!(h.write(&mut buf), Ok(12));
        let p = RtpPacket::parse(&buf).unwrap();
        assert_eq!(RtpHeader::of(&p), h);
        assert!(p.payload().is_empty());
        assert_eq!(p.csrcs().len(), 0);
        assert!(p.extension().is_none());
    }

    #[test]
    fn rejects_bad_layouts() {
        let good = full();
        assert!(matches!(
            RtpPacket::parse(&good[..11]),
            Err(ParseError::Truncated { .. })
        ));
        let mut v1 = good.clone();
        v1[0] = (v1[0] & 0x3f) | 0x40;
        assert_eq!(RtpPacket::parse(&v1), Err(ParseError::Version(1)));
        // CC=15 needs 72 bytes of header.
        let mut cc = good.clone();
        cc[0] |= 0x0f;
        assert!(matches!(
            RtpPacket::parse(&cc),
            Err(ParseError::Truncated { .. })
        ));
        // Extension length beyond the packet.
        let mut ext = good.clone();
        ext[23] = 9;
        assert!(matches!(
            RtpPacket::parse(&ext),
            Err(ParseError::Truncated { .. })
        ));
        // Padding count 0, and padding reaching into the header.
        let mut pad = good.clone();
        *pad.last_mut().unwrap() = 0;
        assert_eq!(RtpPacket::parse(&pad), Err(ParseError::Padding(0)));
        *pad.last_mut().unwrap() = 8;
        assert_eq!(RtpPacket::parse(&pad), Err(ParseError::Padding(8)));
        // Padding exactly filling the space after the header is fine (an empty payload).
        *pad.last_mut().unwrap() = 7;
        assert_eq!(RtpPacket::parse(&pad).unwrap().payload(), b"");
    }

    #[test]
    fn rewrites_in_place() {
        let mut buf = full();
        let mut p = RtpPacketMut::parse(&mut buf).unwrap();
        p.set_marker(false);
        p.set_pt(Pt(0x80 | 8)); // high bit must not leak into M
        p.set_seq(SeqNo(7));
        p.set_timestamp(8000);
        p.set_ssrc(Ssrc(0xcafe));
        p.payload_mut().copy_from_slice(b"xyz");
        let v = p.view();
        assert!(!v.marker());
        assert_eq!(
            (v.pt(), v.seq(), v.timestamp(), v.ssrc()),
            (Pt(8), SeqNo(7), 8000, Ssrc(0xcafe))
        );
        assert_eq!(v.payload(), b"xyz");
        assert_eq!(v.csrcs().len(), 2);
        p.set_marker(true);
        assert!(p.view().marker());
        assert_eq!(p.view().pt(), Pt(8));
    }

    #[test]
    fn strips_extension() {
        let mut buf = full();
        let len = strip_extension(&mut buf).unwrap();
        assert_eq!(len, 35 - 8);
        let p = RtpPacket::parse(&buf[..len]).unwrap();
        assert!(!p.has_extension());
        assert_eq!(p.csrcs().len(), 2);
        assert_eq!(p.payload(), b"abc");
        assert_eq!(p.padding_len(), 4);
        // Idempotent on a packet without extension.
        assert_eq!(strip_extension(&mut buf[..len]), Ok(len));
    }
}
