//! RTCP writers. Each writes one packet at the start of a caller-provided buffer and returns its
//! length, so a compound packet is written by advancing through one buffer:
//!
//! ```
//! # use estuary_rtp::{rtcp::{write, SenderInfo}, Ssrc};
//! let mut buf = [0u8; 1500];
//! let info = SenderInfo { ssrc: Ssrc(1), ..Default::default() };
//! let mut len = write::sender_report(&mut buf, &info, &[])?;
//! len += write::sdes_cname(&mut buf[len..], Ssrc(1), b"estuary")?;
//! # assert_eq!(len, 28 + 20);
//! # Ok::<(), estuary_rtp::WriteError>(())
//! ```
//!
//! Nothing here allocates. Writers never set the padding bit: SRTCP needs none, and RFC 3550
//! §6.4.1 allows it only on the last packet of a compound.

use crate::bytes::{put_u16, put_u32};
use crate::error::{at_most, room, WriteError};
use crate::id::{SeqNo, Ssrc};
use crate::rtcp::{fmt, FirEntry, PacketType, ReportBlock, SdesType, SenderInfo, TmmbEntry, REPORT_BLOCK_LEN};

/// The most report blocks or BYE sources the five-bit count field can hold.
pub const MAX_COUNT: usize = 31;

/// Writes the common header word for a packet of `len` bytes (a multiple of 4).
fn header(buf: &mut [u8], count: u8, pt: PacketType, len: usize) {
    buf[0] = 0x80 | (count & 0x1f);
    buf[1] = pt.0;
    put_u16(buf, 2, (len / 4 - 1) as u16);
}

fn block(buf: &mut [u8], b: &ReportBlock) {
    put_u32(buf, 0, b.ssrc.0);
    // RFC 3550 A.3 clamps the cumulative loss to the 24-bit signed range.
    let lost = b.cumulative_lost.clamp(-0x80_0000, 0x7f_ffff) as u32 & 0x00ff_ffff;
    put_u32(buf, 4, u32::from(b.fraction_lost) << 24 | lost);
    put_u32(buf, 8, b.ext_highest_seq);
    put_u32(buf, 12, b.jitter);
    put_u32(buf, 16, b.last_sr);
    put_u32(buf, 20, b.delay_since_last_sr);
}

/// Sender report (RFC 3550 §6.4.1) with up to 31 report blocks.
pub fn sender_report(
    buf: &mut [u8],
    info: &SenderInfo,
    blocks: &[ReportBlock],
) -> Result<usize, WriteError> {
    at_most("report blocks", blocks.len(), MAX_COUNT)?;
    let len = 28 + REPORT_BLOCK_LEN * blocks.len();
    room(buf, len)?;
    header(buf, blocks.len() as u8, PacketType::SR, len);
    put_u32(buf, 4, info.ssrc.0);
    put_u32(buf, 8, info.ntp.seconds());
    put_u32(buf, 12, info.ntp.fraction());
    put_u32(buf, 16, info.rtp_ts);
    put_u32(buf, 20, info.packet_count);
    put_u32(buf, 24, info.octet_count);
    for (i, b) in blocks.iter().enumerate() {
        block(&mut buf[28 + REPORT_BLOCK_LEN * i..], b);
    }
    Ok(len)
}

/// Receiver report (RFC 3550 §6.4.2) with up to 31 report blocks. With none it is the empty RR
/// that starts a compound packet from a participant that has received nothing (§6.1).
pub fn receiver_report(
    buf: &mut [u8],
    ssrc: Ssrc,
    blocks: &[ReportBlock],
) -> Result<usize, WriteError> {
    at_most("report blocks", blocks.len(), MAX_COUNT)?;
    let len = 8 + REPORT_BLOCK_LEN * blocks.len();
    room(buf, len)?;
    header(buf, blocks.len() as u8, PacketType::RR, len);
    put_u32(buf, 4, ssrc.0);
    for (i, b) in blocks.iter().enumerate() {
        block(&mut buf[8 + REPORT_BLOCK_LEN * i..], b);
    }
    Ok(len)
}

/// SDES with one chunk holding one CNAME item (RFC 3550 §6.5.1), the item every compound packet
/// must carry.
pub fn sdes_cname(buf: &mut [u8], ssrc: Ssrc, cname: &[u8]) -> Result<usize, WriteError> {
    at_most("CNAME bytes", cname.len(), 255)?;
    // SSRC, type, length, text, then at least one null octet up to a word boundary.
    let chunk = (4 + 2 + cname.len() + 1).next_multiple_of(4);
    let len = 4 + chunk;
    room(buf, len)?;
    header(buf, 1, PacketType::SDES, len);
    put_u32(buf, 4, ssrc.0);
    buf[8] = SdesType::CNAME.0;
    buf[9] = cname.len() as u8;
    buf[10..10 + cname.len()].copy_from_slice(cname);
    buf[10 + cname.len()..len].fill(0);
    Ok(len)
}

/// Goodbye (RFC 3550 §6.6) for up to 31 sources, with an optional reason of up to 255 bytes.
pub fn bye(buf: &mut [u8], ssrcs: &[Ssrc], reason: Option<&[u8]>) -> Result<usize, WriteError> {
    at_most("BYE sources", ssrcs.len(), MAX_COUNT)?;
    let list_end = 4 + 4 * ssrcs.len();
    let len = match reason {
        Some(r) => {
            at_most("BYE reason bytes", r.len(), 255)?;
            (list_end + 1 + r.len()).next_multiple_of(4)
        }
        None => list_end,
    };
    room(buf, len)?;
    header(buf, ssrcs.len() as u8, PacketType::BYE, len);
    for (i, s) in ssrcs.iter().enumerate() {
        put_u32(buf, 4 + 4 * i, s.0);
    }
    if let Some(r) = reason {
        buf[list_end] = r.len() as u8;
        buf[list_end + 1..list_end + 1 + r.len()].copy_from_slice(r);
        buf[list_end + 1 + r.len()..len].fill(0);
    }
    Ok(len)
}

/// Writes the RFC 4585 §6.1 feedback header: common word, sender and media SSRCs.
fn feedback_header(buf: &mut [u8], fmt: u8, pt: PacketType, len: usize, sender: Ssrc, media: Ssrc) {
    header(buf, fmt, pt, len);
    put_u32(buf, 4, sender.0);
    put_u32(buf, 8, media.0);
}

/// Picture loss indication (RFC 4585 §6.3.1): asks `media` for a new picture.
pub fn pli(buf: &mut [u8], sender: Ssrc, media: Ssrc) -> Result<usize, WriteError> {
    room(buf, 12)?;
    feedback_header(buf, fmt::PLI, PacketType::PSFB, 12, sender, media);
    Ok(12)
}

/// Full intra request (RFC 5104 §4.3.1). The media-source field is 0 as §4.3.1.2 requires; the
/// targets are in the entries.
pub fn fir(buf: &mut [u8], sender: Ssrc, entries: &[FirEntry]) -> Result<usize, WriteError> {
    // The 16-bit length field bounds the entries: (3 + 2n) words - 1 <= 65535.
    at_most("FIR entries", entries.len(), 32_766)?;
    let len = 12 + 8 * entries.len();
    room(buf, len)?;
    feedback_header(buf, fmt::FIR, PacketType::PSFB, len, sender, Ssrc(0));
    for (i, e) in entries.iter().enumerate() {
        let at = 12 + 8 * i;
        put_u32(buf, at, e.ssrc.0);
        put_u32(buf, at + 4, u32::from(e.seq_nr) << 24);
    }
    Ok(len)
}

/// `value` as a mantissa of `bits` bits and a 6-bit exponent, rounded down: the form REMB and
/// TMMBR/TMMBN carry bitrates in.
fn exp_mantissa(value: u64, bits: u32) -> (u32, u32) {
    let mut exp = 0u32;
    while value >> exp >= 1 << bits && exp < 63 {
        exp += 1;
    }
    (exp, (value >> exp) as u32 & ((1 << bits) - 1))
}

fn tmmb(buf: &mut [u8], fmt: u8, sender: Ssrc, entries: &[TmmbEntry]) -> Result<usize, WriteError> {
    at_most("TMMB entries", entries.len(), 32_766)?;
    let len = 12 + 8 * entries.len();
    room(buf, len)?;
    feedback_header(buf, fmt, PacketType::RTPFB, len, sender, Ssrc(0));
    for (i, e) in entries.iter().enumerate() {
        let at = 12 + 8 * i;
        let (exp, mantissa) = exp_mantissa(e.bitrate, 17);
        put_u32(buf, at, e.ssrc.0);
        put_u32(buf, at + 4, exp << 26 | mantissa << 9 | u32::from(e.overhead & 0x1ff));
    }
    Ok(len)
}

/// Temporary maximum media stream bit rate request (RFC 5104 §4.2.1): asks each entry's
/// media sender to keep below its bitrate.
pub fn tmmbr(buf: &mut [u8], sender: Ssrc, entries: &[TmmbEntry]) -> Result<usize, WriteError> {
    tmmb(buf, fmt::TMMBR, sender, entries)
}

/// Temporary maximum media stream bit rate notification (RFC 5104 §4.2.2): the bounding set
/// the media sender now keeps to (entries owned by the requesters), or none.
pub fn tmmbn(buf: &mut [u8], sender: Ssrc, entries: &[TmmbEntry]) -> Result<usize, WriteError> {
    tmmb(buf, fmt::TMMBN, sender, entries)
}

/// Receiver estimated maximum bitrate (draft-alvestrand-rmcat-remb-03 §2.2) for `ssrcs`.
pub fn remb(buf: &mut [u8], sender: Ssrc, bitrate: u64, ssrcs: &[Ssrc]) -> Result<usize, WriteError> {
    at_most("REMB sources", ssrcs.len(), 255)?;
    let len = 20 + 4 * ssrcs.len();
    room(buf, len)?;
    feedback_header(buf, fmt::AFB, PacketType::PSFB, len, sender, Ssrc(0));
    buf[12..16].copy_from_slice(b"REMB");
    let (exp, mantissa) = exp_mantissa(bitrate, 18);
    put_u32(buf, 16, (ssrcs.len() as u32) << 24 | exp << 18 | mantissa);
    for (i, s) in ssrcs.iter().enumerate() {
        put_u32(buf, 20 + 4 * i, s.0);
    }
    Ok(len)
}

/// Generic NACK (RFC 4585 §6.2.1) for the sequence numbers in `lost`, packed into (PID, BLP)
/// pairs: each number within 16 after the current PID sets a bit, any other starts a new pair.
/// Give them in ascending order (modulo 2^16) for the tightest packing; repeats are folded into
/// their pair. Writes nothing and returns `Ok(0)` if `lost` is empty, since a NACK must carry at
/// least one pair.
pub fn nack(
    buf: &mut [u8],
    sender: Ssrc,
    media: Ssrc,
    lost: impl IntoIterator<Item = SeqNo>,
) -> Result<usize, WriteError> {
    let mut len = 12;
    let mut pid: Option<SeqNo> = None;
    for seq in lost {
        if let Some(p) = pid {
            let d = seq.0.wrapping_sub(p.0);
            if d == 0 {
                continue;
            }
            if (1..=16).contains(&d) {
                let at = len - 2;
                let blp = u16::from_be_bytes([buf[at], buf[at + 1]]) | 1 << (d - 1);
                put_u16(buf, at, blp);
                continue;
            }
        }
        room(buf, len + 4)?;
        put_u16(buf, len, seq.0);
        put_u16(buf, len + 2, 0);
        len += 4;
        pid = Some(seq);
    }
    if pid.is_none() {
        return Ok(0);
    }
    at_most("NACK bytes", len, 4 * 65_536)?;
    feedback_header(buf, fmt::NACK, PacketType::RTPFB, len, sender, media);
    Ok(len)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_too_small_are_refused() {
        let mut small = [0u8; 11];
        assert_eq!(
            pli(&mut small, Ssrc(1), Ssrc(2)),
            Err(WriteError::BufferTooSmall { need: 12, have: 11 })
        );
        assert!(sender_report(&mut [0u8; 27], &SenderInfo::default(), &[]).is_err());
        assert!(sdes_cname(&mut [0u8; 19], Ssrc(1), b"estuary").is_err());
        assert!(nack(&mut [0u8; 15], Ssrc(1), Ssrc(2), [SeqNo(1)]).is_err());
        let blocks = [ReportBlock::default(); 32];
        assert!(matches!(
            receiver_report(&mut [0u8; 2000], Ssrc(1), &blocks),
            Err(WriteError::TooLong { .. })
        ));
        assert!(sdes_cname(&mut [0u8; 400], Ssrc(1), &[b'x'; 256]).is_err());
    }

    #[test]
    fn empty_nack_writes_nothing() {
        assert_eq!(nack(&mut [0u8; 64], Ssrc(1), Ssrc(2), []), Ok(0));
    }
}
