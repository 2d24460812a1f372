//! Media codecs and sans-IO transcoding pipelines for Estuary's WebRTC ⇄ IMS calls.
//!
//! A call that cannot pass audio through unchanged (browser Opus, IMS G.711) runs one
//! pipeline per direction: [`OpusToG711`] towards the IMS and [`G711ToOpus`] towards the
//! browser. Each is a deterministic state machine driven by its caller:
//!
//! ```text
//! on packet:   pipeline.push(now, seq, timestamp, payload)
//! on timeout:  while let Some(frame) = pipeline.poll(now, &mut buf) { send(&buf[..frame.len]) }
//! sleep until: pipeline.poll_timeout()
//! ```
//!
//! No threads, no sockets, no clock reads outside [`pool`]: time arrives as `now`. Every buffer is allocated
//! at construction, so building many pipelines and pushing/polling frames in a loop measures
//! codec work alone.
//!
//! # Layout
//!
//! - [`g711`] — µ-law (PCMU) and A-law (PCMA) sample codecs, bit-exact with ITU-T G.191, and
//!   direct µ-law ⇄ A-law transcoding (G.711 Tables 3 and 4). Pure functions over slices.
//! - [`opus`] — a thin safe wrapper over libopus (the `opus` crate): mono encoder and decoder
//!   at 8–48 kHz, PLC, in-band FEC, DTX, packet duration parsing, errors instead of panics.
//! - [`resample`] — a polyphase Kaiser-windowed-sinc resampler (48/16 kHz ⇄ 8 kHz), 75 dB
//!   down from the lower Nyquist frequency.
//! - [`plc`] — G.711 packet loss concealment in the manner of G.711 Appendix I (pitch
//!   repetition with overlap-add, fading to silence by 60 ms).
//! - [`jitter`] — an adaptive jitter buffer keyed by RTP sequence number: reordering,
//!   duplicates, late packets, wrap-around, source restarts; it hands out packets, `Lost`
//!   (with the next packet for FEC) or `Underrun` on a steady playout clock.
//! - [`pipeline`] — [`OpusToG711`] and [`G711ToOpus`], composed from the above.
//! - [`pool`] — the only module with threads and a clock: worker threads that *run*
//!   pipelines fed through bounded queues (never blocking the network side), audio and video
//!   on separate lanes, frames returned through a [`pool::FrameSink`], and
//!   [`pool::calibrate`], the measured cost of a channel.
//!
//! # What it does not do
//!
//! RFC 4733 telephone events (DTMF) are relayed by the media plane, not transcoded here.
//! Comfort noise payloads (RFC 3389) are not generated: DTX silence becomes libopus's
//! concealment output (near silence) in G.711.
// deny, not forbid: `video::vpx` (FFI to libvpx, which has no safe crate) and the one
// setpriority call in `pool` are the only places allowed unsafe code, and only an `allow`
// there can lift a `deny`.
#![deny(unsafe_code)]
#![warn(missing_docs)]

pub mod g711;
pub mod jitter;
pub mod opus;
pub mod pipeline;
pub mod plc;
pub mod pool;
pub mod resample;
pub mod video;

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
pub use pool::{calibrate, Calibration, Channel, ChannelSpec, ChannelStats, Control, FrameSink, OutFrame, Pipeline, Pool, PoolError, PoolStats, Produced};
pub use resample::{ResampleError, Resampler};
