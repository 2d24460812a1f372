//! RTP payload formats for video: VP8 (RFC 7741) and H.264 (RFC 6184), sans-IO.
//!
//! A video transcoding channel (VP8 <-> H.264) takes RTP in one payload format, hands whole
//! frames to a decoder, and puts the encoder's frames back into RTP in the other. Around the
//! codecs that needs two halves per payload format, both pure functions of their input:
//!
//! - a **packetizer** cuts one encoded frame into RTP payloads no larger than `max_payload`
//!   and says which one carries the RTP marker bit (the last of the frame);
//! - a **depacketizer** takes RTP payloads in sequence order (after the jitter buffer) and
//!   hands back whole frames, or tells its caller to ask the sender for a keyframe (RTCP PLI
//!   or FIR) because something was lost.
//!
//! The caller owns the RTP header: it passes sequence number, timestamp and marker in and
//! sets the marker from [`RtpPayload::marker`] on the way out.
//!
//! ```text
//! sending:    packetizer.packetize(frame, &mut payloads)?   // marker on the last one
//! receiving:  match depacketizer.push(seq, timestamp, marker, payload) {
//!                 Depacketized::Frame(frame)  => decode or re-packetize frame.data,
//!                 Depacketized::KeyframeNeeded => send a PLI,
//!                 Depacketized::Pending        => nothing yet,
//!                 Depacketized::Rejected(e)    => count the malformed packet,
//!             }
//! ```
//!
//! # Loss
//!
//! A frame that lost a packet cannot be decoded, and neither can any frame predicted from
//! it, so a depacketizer does not hand out damaged or orphaned frames. On a sequence gap, a
//! frame whose first packet never came, or a frame that never ended, it drops what it holds,
//! reports [`Depacketized::KeyframeNeeded`] once, and drops every frame until one is a
//! keyframe. A stream also starts that way: frames before the first keyframe are dropped,
//! and the first one dropped asks for a keyframe. [`Vp8Depacketizer::awaiting_keyframe`]
//! (and the H.264 one) tells a caller whether to repeat its request on a timer, since a PLI
//! can be lost too.
//!
//! Packets at or behind the newest one seen (duplicates, or reordered past the jitter
//! buffer) are ignored: a late packet's place was already counted as a gap. A jump back of
//! more than [`RESTART_SEQ_JUMP`] is a restarted sender and counts as a gap. Empty payloads
//! are padding (libwebrtc sends them on the media stream for bandwidth probing when RTX is
//! not negotiated): they keep the sequence unbroken and carry nothing.
//!
//! A packet that cannot be parsed is [`Depacketized::Rejected`] and leaves no trace, so
//! the packet after it shows a gap and the frame it belonged to is treated as lost.
//!
//! # One packet, two results
//!
//! H.264 ends an access unit on the marker bit or, for senders that omit the marker, when
//! the timestamp changes. A packet can then end one access unit by its timestamp and
//! complete the next by its marker. `push` returns one [`Depacketized`], so the second frame
//! is held and returned by the next `push` that is not rejected, ahead of anything that push
//! produces; a keyframe request that coincides with a frame likewise comes with the next
//! `push`. Both happen only with senders that omit markers (or break FU-A rules).
//!
//! # Layout
//!
//! - [`vp8`]: the RFC 7741 payload descriptor, [`Vp8Packetizer`], [`Vp8Depacketizer`],
//!   [`vp8::is_keyframe`].
//! - [`h264`]: [`H264Packetizer`] for packetization modes 0 and 1 (single NAL unit, STAP-A,
//!   FU-A), [`H264Depacketizer`], and Annex B helpers [`h264::nal_units`] and
//!   [`h264::nal_type`].
//!
//! # Codecs
//!
//! Between a depacketizer and a packetizer sit a decoder and an encoder, exchanging raw
//! [`picture::Picture`]s (8-bit I420, even sizes), scaled when the receiver allows less than
//! the sender sends:
//!
//! - [`picture`]: [`picture::Picture`], the [`picture::Scaler`], PSNR, and what both codecs
//!   share: [`picture::VideoCodecError`], [`picture::EncoderConfig`],
//!   [`picture::EncodedFrame`] and the [`picture::VideoEncoder`] and
//!   [`picture::VideoDecoder`] traits.
//! - [`vpx`]: VP8 through the system libvpx, real-time CBR, keyframes on demand. The one
//!   module of the crate with `unsafe` code (FFI), each block with its argument.
//! - [`level`]: what a receiver's fmtp allows (H.264 levels, VP8 max-fs/max-fr) and the
//!   largest encoding of a source that fits.
//! - [`channel`]: [`channel::VideoChannel`], one direction of a transcoded stream:
//!   depacketizer, decoder, fit, encoder, packetizer, keyframe requests both ways.
//! - [`openh264`]: H.264 constrained baseline through OpenH264 built from source, Annex B
//!   access units, size-limited slices for packetization mode 0.
//!
//! # What it does not do
//!
//! - H.264 interleaved mode (packetization-mode 2: STAP-B, MTAP, FU-B) is refused.
//! - No decoding: keyframes are recognised from headers (the VP8 frame tag's P bit, the
//!   H.264 IDR NAL unit type), not from the bitstream.
//! - No RTX, FEC or NACK: recovering lost packets is the RTP layer's business; what reaches
//!   a depacketizer is what it has to work with.
//!
//! [`Vp8Packetizer`]: vp8::Vp8Packetizer
//! [`Vp8Depacketizer`]: vp8::Vp8Depacketizer
//! [`Vp8Depacketizer::awaiting_keyframe`]: vp8::Vp8Depacketizer::awaiting_keyframe
//! [`H264Packetizer`]: h264::H264Packetizer
//! [`H264Depacketizer`]: h264::H264Depacketizer
//! [`RESTART_SEQ_JUMP`]: crate::jitter::RESTART_SEQ_JUMP

pub mod channel;
pub mod h264;
pub mod level;
pub mod openh264;
pub mod picture;
pub mod vp8;
// FFI to libvpx: the crate denies unsafe code everywhere else.
#[allow(unsafe_code)]
pub mod vpx;

use std::collections::VecDeque;
use std::ops::Range;

use crate::jitter::RESTART_SEQ_JUMP;

/// Largest frame a depacketizer assembles (4 MiB, beyond any keyframe a real-time encoder
/// sends). A frame that grows past it is treated as lost, so a sender that never sets the
/// marker cannot make the gateway buffer without bound.
pub const MAX_FRAME_LEN: usize = 4 << 20;

/// One RTP payload produced by a packetizer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RtpPayload {
    /// The payload: everything after the RTP header.
    pub data: Vec<u8>,
    /// Set the RTP marker bit: this is the last packet of the frame (RFC 7741 §4.1, RFC
    /// 6184 §5.1).
    pub marker: bool,
}

/// A whole frame reassembled by a depacketizer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VideoFrame {
    /// The encoded frame: a VP8 frame as the encoder wrote it, or an H.264 access unit in
    /// Annex B byte-stream form with 4-byte start codes.
    pub data: Vec<u8>,
    /// The RTP timestamp all of its packets carried.
    pub timestamp: u32,
    /// A decoder can start here: a VP8 key frame, or an access unit with an IDR slice.
    pub keyframe: bool,
}

/// What one pushed packet produced. See the module docs for the caller's loop.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Depacketized {
    /// Nothing to hand out: the frame is incomplete, or it was dropped while waiting for a
    /// keyframe.
    Pending,
    /// A complete frame.
    Frame(VideoFrame),
    /// Data was lost: ask the sender for a keyframe. Reported once per loss; frames are
    /// dropped until a keyframe arrives.
    KeyframeNeeded,
    /// The payload is malformed or of a kind this depacketizer does not accept; it was
    /// ignored.
    Rejected(PayloadError),
}

/// A packetizer could not packetize what it was given (the caller's fault).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PacketizeError {
    /// An empty frame, or an H.264 access unit without a single start code.
    #[error("nothing to packetize")]
    Empty,
    /// `max_payload` leaves no room for media after the payload headers.
    #[error("max payload {max} bytes is below the minimum of {min}")]
    MaxPayloadTooSmall {
        /// The packetizer's `max_payload`.
        max: usize,
        /// The least it needs.
        min: usize,
    },
    /// H.264 single NAL unit mode cannot fragment: the encoder must limit its slice size.
    #[error(
        "NAL unit of {size} bytes exceeds the {max}-byte payload limit (single NAL unit mode)"
    )]
    NalTooLarge {
        /// The NAL unit's size, header included.
        size: usize,
        /// The packetizer's `max_payload`.
        max: usize,
    },
}

/// A payload a depacketizer refused (the peer's fault). Media has no error response: the
/// answer to every variant is to drop the packet and count it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PayloadError {
    /// The payload ends before a header or a length it declares.
    #[error("{what} truncated")]
    Truncated {
        /// What was being read.
        what: &'static str,
    },
    /// A VP8 payload descriptor with no frame data after it.
    #[error("no VP8 data after the payload descriptor")]
    NoData,
    /// An H.264 packet type other than single NAL unit, STAP-A and FU-A: the interleaved
    /// mode's STAP-B, MTAP16, MTAP24, FU-B, or a reserved type.
    #[error("H.264 packet type {0} is not supported")]
    UnsupportedPacketType(u8),
    /// A field has a value the format does not allow.
    #[error("malformed {0}")]
    Malformed(&'static str),
}

/// Splits `len` bytes into the fewest chunks of at most `cap` bytes, sizes differing by at
/// most one: the same packet count as filling greedily, without a runt at the end.
pub(crate) fn split_evenly(len: usize, cap: usize) -> impl Iterator<Item = Range<usize>> {
    let count = match cap {
        0 => 0,
        cap => len.div_ceil(cap),
    };
    let base = len.checked_div(count).unwrap_or(0);
    let longer = len.checked_rem(count).unwrap_or(0);
    (0..count).scan(0, move |start, i| {
        let size = base + usize::from(i < longer);
        let range = *start..*start + size;
        *start += size;
        Some(range)
    })
}

/// Where a packet's sequence number stands against the newest one seen.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum SeqStep {
    /// The first packet of the stream.
    First,
    /// The next one in order.
    Next,
    /// Packets are missing before this one (or the sender restarted).
    Gap,
    /// Already seen, or older than the newest: to be ignored.
    Stale,
}

/// Sequence continuity, the only loss signal RTP gives.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct SeqTracker {
    newest: Option<u16>,
}

impl SeqTracker {
    /// Classifies `seq` and, unless it is stale, makes it the newest.
    pub(crate) fn step(&mut self, seq: u16) -> SeqStep {
        let Some(newest) = self.newest else {
            self.newest = Some(seq);
            return SeqStep::First;
        };
        let ahead = seq.wrapping_sub(newest) as i16;
        let step = match ahead {
            1 => SeqStep::Next,
            a if a <= 0 && a.unsigned_abs() <= RESTART_SEQ_JUMP => return SeqStep::Stale,
            _ => SeqStep::Gap,
        };
        self.newest = Some(seq);
        step
    }
}

/// Whether frames can reach a decoder.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Decodable {
    /// Every frame since the last keyframe arrived whole.
    Yes,
    /// Frames are dropped until a keyframe arrives.
    AwaitingKeyframe(Request),
}

/// The keyframe request while [`Decodable::AwaitingKeyframe`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Request {
    /// Not asked for yet: the stream has just started and nothing had to be dropped.
    NotYet,
    /// To be reported by the next `push` that has nothing else to say.
    Due,
    /// Reported; not repeated until a keyframe ends the wait.
    Sent,
}

/// The part of a depacketizer that decides what leaves it: drops frames while a keyframe is
/// awaited, raises the keyframe request once, and holds a second result of one packet for
/// the next `push` (see the module docs).
#[derive(Debug)]
pub(crate) struct FrameGate {
    decodable: Decodable,
    ready: VecDeque<VideoFrame>,
}

impl Default for FrameGate {
    fn default() -> Self {
        FrameGate {
            // A decoder cannot start on a delta frame.
            decodable: Decodable::AwaitingKeyframe(Request::NotYet),
            ready: VecDeque::new(),
        }
    }
}

impl FrameGate {
    /// Something was lost: frames stop until a keyframe, and one is asked for.
    pub(crate) fn lost(&mut self) {
        self.decodable = match self.decodable {
            Decodable::AwaitingKeyframe(Request::Sent) => {
                Decodable::AwaitingKeyframe(Request::Sent)
            }
            _ => Decodable::AwaitingKeyframe(Request::Due),
        };
    }

    /// A frame arrived whole: passed on, or dropped while a keyframe is awaited.
    pub(crate) fn finished(&mut self, frame: VideoFrame) {
        match self.decodable {
            Decodable::Yes => self.ready.push_back(frame),
            Decodable::AwaitingKeyframe(_) if frame.keyframe => {
                self.decodable = Decodable::Yes;
                self.ready.push_back(frame);
            }
            Decodable::AwaitingKeyframe(Request::NotYet) => {
                self.decodable = Decodable::AwaitingKeyframe(Request::Due);
            }
            Decodable::AwaitingKeyframe(_) => {}
        }
    }

    /// What `push` returns: a frame first, then a due keyframe request, else nothing.
    pub(crate) fn outcome(&mut self) -> Depacketized {
        if let Some(frame) = self.ready.pop_front() {
            return Depacketized::Frame(frame);
        }
        if self.decodable == Decodable::AwaitingKeyframe(Request::Due) {
            self.decodable = Decodable::AwaitingKeyframe(Request::Sent);
            return Depacketized::KeyframeNeeded;
        }
        Depacketized::Pending
    }

    pub(crate) fn awaiting_keyframe(&self) -> bool {
        matches!(self.decodable, Decodable::AwaitingKeyframe(_))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_evenly_without_runts() {
        let sizes = |len, cap| split_evenly(len, cap).map(|r| r.len()).collect::<Vec<_>>();
        assert_eq!(sizes(5000, 1196), [1000; 5]);
        assert_eq!(sizes(3999, 1198), [1000, 1000, 1000, 999]);
        assert_eq!(sizes(10, 10), [10]);
        assert_eq!(sizes(11, 10), [6, 5]);
        assert_eq!(sizes(0, 10), Vec::<usize>::new());
        assert_eq!(sizes(10, 0), Vec::<usize>::new());
        let ranges: Vec<_> = split_evenly(7, 3).collect();
        assert_eq!(ranges, [0..3, 3..5, 5..7]);
    }

    #[test]
    fn sequence_steps() {
        let mut t = SeqTracker::default();
        assert_eq!(t.step(65_534), SeqStep::First);
        assert_eq!(t.step(65_535), SeqStep::Next);
        assert_eq!(t.step(0), SeqStep::Next);
        assert_eq!(t.step(0), SeqStep::Stale);
        assert_eq!(t.step(65_535), SeqStep::Stale);
        assert_eq!(t.step(2), SeqStep::Gap);
        assert_eq!(t.step(3), SeqStep::Next);
        // A jump back beyond the restart limit is a new sender position.
        assert_eq!(
            t.step(3u16.wrapping_sub(RESTART_SEQ_JUMP + 1)),
            SeqStep::Gap
        );
        assert_eq!(t.step(3u16.wrapping_sub(RESTART_SEQ_JUMP)), SeqStep::Next);
    }

    fn frame(keyframe: bool) -> VideoFrame {
        VideoFrame {
            data: vec![1],
            timestamp: 0,
            keyframe,
        }
    }

    #[test]
    fn gate_starts_on_a_keyframe_and_asks_once() {
        let mut g = FrameGate::default();
        assert!(g.awaiting_keyframe());
        assert_eq!(g.outcome(), Depacketized::Pending);
        g.finished(frame(false));
        assert_eq!(g.outcome(), Depacketized::KeyframeNeeded);
        g.finished(frame(false));
        g.lost();
        assert_eq!(g.outcome(), Depacketized::Pending);
        g.finished(frame(true));
        assert!(!g.awaiting_keyframe());
        assert_eq!(g.outcome(), Depacketized::Frame(frame(true)));
        g.finished(frame(false));
        g.lost();
        // The frame that came before the loss still goes out; the request follows.
        assert_eq!(g.outcome(), Depacketized::Frame(frame(false)));
        assert_eq!(g.outcome(), Depacketized::KeyframeNeeded);
        assert_eq!(g.outcome(), Depacketized::Pending);
    }
}
