//! Media codecs for Estuary's transcoding path.
//!
//! Today this crate holds only G.711 ([`g711`]): µ-law (PCMU, RTP payload type 0) and A-law
//! (PCMA, payload type 8), bit-exact with the ITU-T G.191 Software Tool Library reference, plus
//! the direct µ-law ⇄ A-law transcoding of G.711 Tables 3 and 4.
//!
//! # Layout and what comes next
//!
//! - `g711` — sample codecs as pure functions over caller-supplied slices.
//! - `opus` (later) — the Opus leg of WebRTC ⇄ IMS calls.
//! - `pipeline` (later) — a sans-IO per-leg `Pipeline` (`push(now, pkt)` / `pop()`): decode,
//!   resample, jitter buffer, PLC, encode. No threads, no clock reads.
//! - `pool` (later) — the only module with threads: a bounded worker pool that *runs*
//!   pipelines; it does not define them.
//!
//! # Hot path
//!
//! Every per-sample function here is allocation-free. Decoding is a lookup into a 256-entry table
//! built at compile time by a `const fn`; encoding is a few shifts and one `leading_zeros`. The
//! slice APIs write into buffers the caller owns and return how many samples they converted, so
//! a length mismatch is never a panic.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod g711;
pub mod jitter;
pub mod opus;
pub mod pipeline;
pub mod plc;
pub mod resample;

pub use g711::{
    alaw_to_linear, alaw_to_ulaw, alaw_to_ulaw_code, decode_alaw, decode_ulaw, encode_alaw,
    encode_ulaw, linear_to_alaw, linear_to_ulaw, ulaw_to_alaw, ulaw_to_alaw_code, ulaw_to_linear,
    Law,
};
pub use jitter::{Frame, JitterBuffer, JitterConfig, JitterStats, Push};
pub use opus::{OpusConfig, OpusDecoder, OpusEncoder, OpusError};
pub use pipeline::{
    G711Frame, G711ToOpus, G711ToOpusConfig, OpusFrame, OpusToG711, OpusToG711Config,
    PipelineError, PipelineStats,
};
pub use plc::Plc;
pub use resample::{ResampleError, Resampler};
