//! RTP and RTCP for the Estuary media relay: the per-packet layer, sans-IO.
//!
//! Every datagram of a call's media passes through this crate, so its per-packet path allocates
//! nothing: parsers are views over the caller's bytes, rewriters work in place, and writers fill
//! caller buffers. Nothing here reads a clock or a socket; arrival and send times come in as
//! `now: Instant`, wall-clock time as an [`NtpTime`] the caller derives from a [`WallClock`].
//!
//! # The layers, in the order a datagram meets them
//!
//! 1. [`classify`] splits a multiplexed port into STUN, DTLS, RTP and RTCP (RFC 7983, RFC 5761
//!    §4). After SRTP unprotect:
//! 2. [`RtpPacket::parse`] validates an RTP header (RFC 3550 §5.1) and exposes its fields, CSRCs,
//!    payload and [`HeaderExtension`] with its RFC 8285 elements. [`RtpPacketMut`] rewrites PT,
//!    sequence number, timestamp, SSRC and marker in place; [`strip_extension`] removes the
//!    extension the IMS side did not negotiate.
//! 3. [`rtcp::Compound`] walks a compound RTCP packet (RFC 3550 §6, feedback of RFC 4585 and
//!    RFC 5104, reduced size of RFC 5506); [`rtcp::write`](mod@rtcp::write) builds SR, RR, SDES, BYE, PLI, FIR and
//!    NACK.
//! 4. [`ReceiverStats`] and [`SenderStats`] keep the per-stream counters RTCP reports (RFC 3550
//!    A.1, A.3, A.8, §6.4.1), so each leg can terminate RTCP itself.
//! 5. [`StreamRewriter`] keeps an outgoing stream continuous while the incoming source changes,
//!    and [`TimestampScaler`] with [`rescale_telephone_event`] carries DTMF (RFC 4733) across a
//!    clock-rate change.
//!
//! ```
//! use estuary_rtp::{classify, PacketKind, RtpPacket, StreamRewriter, Rewrite, ClockRate, SeqNo, Ssrc};
//! # #[allow(clippy::disallowed_methods)]
//! # let now = std::time::Instant::now();
//! let mut rewriter = StreamRewriter::new(Ssrc(0x1234), ClockRate::OPUS, SeqNo(1), 0);
//! let mut datagram = [0x80, 111, 0, 7, 0, 0, 3, 192, 0, 0, 0, 42, 0xfc];
//! assert_eq!(classify(&datagram), PacketKind::Rtp);
//! assert_eq!(rewriter.rewrite(now, &mut datagram), Ok(Rewrite::Forward { switched: false }));
//! let p = RtpPacket::parse(&datagram).unwrap();
//! assert_eq!((p.ssrc(), p.seq()), (Ssrc(0x1234), SeqNo(1)));
//! ```
//!
//! # Errors and hostile input
//!
//! Every parser returns a [`ParseError`] for bytes that are not what they claim; the answer to
//! any of them is to drop the datagram and count it. No input makes this crate panic
//! (`tests/hostile_input.rs` feeds it random and mutated packets). Writers return a
//! [`WriteError`] when the caller's buffer or list does not fit.
//!
//! # What it does not do
//!
//! - SRTP: `estuary-srtp` protects and unprotects; this crate sees plaintext.
//! - Payload-type checks against the SDP, and RTCP's rule that a full compound starts with SR
//!   or RR (RFC 3550 A.2): the media session knows what was negotiated.
//! - Transport-wide congestion control and REMB contents, XR, SLI, RPSI, TMMBR: parsed only as
//!   far as their headers, for relaying.
//! - Splitting RFC 4733 events longer than 65535 ticks when scaling up (§2.5.1.3).
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod bytes;
mod demux;
mod error;
mod ext;
mod id;
mod rewrite;
pub mod rtcp;
mod rtp;
mod stats;
mod telephone_event;

pub use demux::{classify, PacketKind};
pub use error::{ParseError, WriteError};
pub use ext::{
    ExtElement, ExtElements, ExtForm, ExtId, HeaderExtension, MID_URI, ONE_BYTE_PROFILE,
    TWO_BYTE_PROFILE,
};
pub use id::{ClockRate, ExtSeqNo, NtpTime, Pt, SeqNo, Ssrc, WallClock};
pub use rewrite::{Rewrite, StreamRewriter, TimestampScaler, SWITCH_BACK_HOLDOFF};
pub use rtp::{strip_extension, Csrcs, RtpHeader, RtpPacket, RtpPacketMut, FIXED_HEADER_LEN};
pub use stats::{ReceiverStats, SenderStats, SeqConfig};
pub use telephone_event::{rescale_telephone_event, TelephoneEvent};
