//! SDP interworking between WebRTC browsers and an IMS core, as pure functions.
//!
//! A browser speaks JSEP SDP: one BUNDLE transport (ICE-lite on our side, DTLS-SRTP,
//! rtcp-mux), `UDP/TLS/RTP/SAVPF`, Opus and VP8 first. An IMS core speaks RTP/AVP or SDES
//! RTP/SAVP (RFC 4568 `a=crypto`), one port per stream, G.711/AMR and H.264. The gateway
//! presents each side with SDP it fully understands and keeps both offer/answer exchanges of a
//! call consistent:
//!
//! - [`SdpSession::offer`] turns an offer from one side into the offer for the other, asking
//!   the media plane for ports through [`PortAllocator`];
//! - [`SdpSession::answer`] turns the answer back and settles the [`MediaPlan`]: which payload
//!   types map to which, where transcoding is needed, SDES keys, ICE credentials, DTLS role;
//! - [`SdpPolicy`] is the operator's choice of addresses, IMS media profile, codecs and what
//!   the transcoder can bridge. Passthrough is always preferred to transcoding.
//!
//! Parse and print are faithful (the `sdp` crate keeps unknown attributes and order); the
//! typed helpers in [`attr`] and [`crypto`] are ours. Errors carry the SIP status to answer with
//! ([`SdpError::status`]): 400 for malformed SDP, 488 for SDP we cannot serve, 503 when ports
//! run out. Nothing here reads a clock, touches a socket or panics on input.

pub mod attr;
pub mod codec;
pub mod crypto;
mod error;
pub mod parse;
mod plan;
mod policy;
mod session;

pub use attr::{Direction, Fingerprint, Rtpmap, Setup};
pub use codec::CodecSpec;
pub use crypto::{Crypto, Suite};
pub use error::{ErrorKind, SdpError};
pub use plan::{CodecMap, DtlsRole, DtmfMap, Feedback, MediaPlan, SdesKeys, Side, StreamPlan, WebTransport};
pub use policy::{ImsProfile, SdpPolicy, TranscodePair};
pub use session::{PortAllocator, SdpSession};
