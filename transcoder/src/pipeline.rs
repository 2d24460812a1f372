//! Sans-IO transcoding pipelines, one per direction of a call: the unit a worker runs.
//!
//! - [`OpusToG711`] (browser → IMS): RTP Opus in, jitter buffer, Opus decode (at 16 kHz,
//!   band-limited to 8 kHz by [`Resampler`]) with libopus PLC or in-band FEC for the gaps,
//!   G.711 out.
//! - [`G711ToOpus`] (IMS → browser): RTP G.711 in, jitter buffer, G.711 decode with
//!   [`Plc`] concealment, Opus encode from 8 kHz, Opus out.
//!
//! # Drive loop
//!
//! ```text
//! on packet:   pipeline.push(now, seq, timestamp, payload)
//! on timeout:  while let Some(frame) = pipeline.poll(now, &mut buf) { send(&buf[..frame.len]) }
//! sleep until: pipeline.poll_timeout()
//! ```
//!
//! `poll` emits one frame per call once its time has come, so a caller that woke late loops
//! until `None`. Time comes only from the `now` arguments; nothing reads a clock.
//!
//! # Timing and timestamps
//!
//! Output frames follow the jitter buffer's playout clock, which starts at the first packet
//! plus the target delay and then advances by exactly one output frame per frame, whatever
//! the input does: loss, reordering, DTX and different packet durations (ptime adaptation)
//! only change what fills the frame. Output RTP timestamps are therefore continuous: +ptime
//! in the output clock (8 kHz for G.711; 48 kHz for Opus per RFC 7587 §4.1, even though it is
//! encoded from 8 kHz, so 20 ms = 960 ticks) on every frame. Two things break that on
//! purpose, both flagged with `marker` (RFC 3551 §4.1): after `idle_after` with no packet at
//! all the pipeline stops emitting (a held or dead leg gets no stream of silence) and on the
//! next packet resumes with the timestamp advanced by the real time elapsed; and [`reset`]
//! (codec change) resumes the same way.
//!
//! [`reset`]: OpusToG711::reset
//!
//! # Memory
//!
//! Every buffer is allocated in `new`; `push` and `poll` do not allocate, so constructing
//! many pipelines and driving them in a loop measures only codec work.

use std::fmt;
use std::time::{Duration, Instant};

use crate::g711::Law;
use crate::jitter::{ticks_to_duration, Frame, JitterBuffer, JitterConfig};
use crate::opus::{self as opus_codec, OpusConfig, OpusDecoder, OpusEncoder, OpusError};
use crate::plc::Plc;
use crate::resample::Resampler;

/// PCM rate inside both pipelines: G.711's, and one libopus codes natively.
const RATE: u32 = 8000;
/// 2.5 ms at 8 kHz: the granularity of Opus concealment.
const OPUS_STEP: usize = 20;
/// Largest Opus packet in 8 kHz samples (120 ms).
const MAX_OPUS_SAMPLES: usize = 960;
/// Samples of PCM a pipeline can hold: the largest output frame plus the largest input.
const FIFO: usize = 480 + 1500;

/// Why a pipeline could not be built.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PipelineError {
    /// The output packet time is not one this direction can produce.
    Ptime(Duration),
    /// libopus refused the codec setup.
    Opus(OpusError),
}

impl fmt::Display for PipelineError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PipelineError::Ptime(d) => write!(f, "unsupported output ptime {d:?}"),
            PipelineError::Opus(e) => write!(f, "opus: {e}"),
        }
    }
}

impl std::error::Error for PipelineError {}

impl From<OpusError> for PipelineError {
    fn from(e: OpusError) -> Self {
        PipelineError::Opus(e)
    }
}

/// Counters of one pipeline since construction.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PipelineStats {
    /// Packets accepted by the jitter buffer.
    pub packets_in: u64,
    /// Frames emitted by `poll`.
    pub frames_out: u64,
    /// Lost packets filled by concealment (codec PLC or [`Plc`]).
    pub concealed: u64,
    /// Lost packets recovered from Opus in-band FEC instead.
    pub fec_recovered: u64,
    /// Frames filled because nothing was buffered (late packets, pauses, Opus DTX).
    pub underruns: u64,
    /// Packets that arrived after their playout point.
    pub late: u64,
    /// Packets dropped otherwise: duplicates, empty or oversized, discarded to cut delay.
    pub dropped: u64,
    /// Packets the decoder refused (concealed instead).
    pub malformed: u64,
    /// Jitter buffer restarts (sequence/timestamp jumps).
    pub restarts: u64,
}

/// A G.711 frame written by [`OpusToG711::poll`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct G711Frame {
    /// RTP timestamp (8 kHz clock).
    pub timestamp: u32,
    /// Bytes written to the output buffer (= samples).
    pub len: usize,
    /// Set on the first frame after a start, an idle period or a reset (RFC 3551 §4.1).
    pub marker: bool,
}

/// An Opus packet written by [`G711ToOpus::poll`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpusFrame {
    /// RTP timestamp (48 kHz clock, RFC 7587).
    pub timestamp: u32,
    /// Bytes written to the output buffer.
    pub len: usize,
    /// Set on the first frame after a start, an idle period or a reset.
    pub marker: bool,
}

/// Settings of [`OpusToG711`].
#[derive(Clone, Debug)]
pub struct OpusToG711Config {
    /// The G.711 law of the IMS leg. Default A-law (most IMS networks).
    pub law: Law,
    /// Output packet time: a multiple of 10 ms up to 60 ms. Default 20 ms (RFC 3551).
    pub ptime: Duration,
    /// Use Opus in-band FEC for single lost packets. Default on.
    pub fec: bool,
    /// Rate libopus decodes at: 8000 decodes straight to G.711's rate (cheapest), 16000 or
    /// 48000 decode wider and band-limit with [`Resampler`]. Default 16000: libopus's own
    /// 16 → 8 kHz step (hybrid and SILK wideband streams, what browsers send) lets a
    /// 4.5 kHz tone through at only -39 dB, folded to 3.5 kHz; decoding at 16 kHz and our
    /// filter (75 dB down from 4 kHz, about 1 M multiply-adds per second) measure -56 dB.
    /// 48000 is worse, not better: CELT's full-band coding noise then reaches 0–4 kHz
    /// (-44 dB on a 4–20 kHz sweep).
    pub decode_rate: u32,
    /// Jitter buffer settings; the clock must be 48 kHz. Default [`JitterConfig::opus`].
    pub jitter: JitterConfig,
    /// Stop emitting after this long without any packet. Default 1 s: longer than Opus DTX's
    /// 400 ms keep-alive, so DTX silence is filled, a hold is not.
    pub idle_after: Duration,
    /// RTP timestamp of the first output frame (pick it at random, RFC 3550 §5.1).
    pub initial_timestamp: u32,
}

impl Default for OpusToG711Config {
    fn default() -> Self {
        OpusToG711Config {
            law: Law::A,
            ptime: Duration::from_millis(20),
            fec: true,
            decode_rate: 16_000,
            jitter: JitterConfig::opus(),
            idle_after: Duration::from_secs(1),
            initial_timestamp: 0,
        }
    }
}

/// Settings of [`G711ToOpus`].
#[derive(Clone, Debug)]
pub struct G711ToOpusConfig {
    /// The G.711 law of the IMS leg. Default A-law.
    pub law: Law,
    /// Output packet time: 10, 20, 40 or 60 ms. Default 20 ms (what browsers send).
    pub ptime: Duration,
    /// Opus encoder settings.
    pub opus: OpusConfig,
    /// Jitter buffer settings; the clock must be 8 kHz. Default [`JitterConfig::g711`].
    pub jitter: JitterConfig,
    /// Stop emitting after this long without any packet. Default 1 s.
    pub idle_after: Duration,
    /// RTP timestamp of the first output frame.
    pub initial_timestamp: u32,
}

impl Default for G711ToOpusConfig {
    fn default() -> Self {
        G711ToOpusConfig {
            law: Law::A,
            ptime: Duration::from_millis(20),
            opus: OpusConfig::default(),
            jitter: JitterConfig::g711(),
            idle_after: Duration::from_secs(1),
            initial_timestamp: 0,
        }
    }
}

/// The output clock shared by both directions: when the next frame is due, its timestamp,
/// idling and the marker bit.
#[derive(Debug)]
struct Clock {
    /// Due time of the next output frame; `None` before the first packet and while idle.
    next: Option<Instant>,
    /// End of the last frame emitted, to advance the timestamp across an idle period.
    last_end: Option<Instant>,
    timestamp: u32,
    /// Output RTP ticks per output frame.
    ticks: u32,
    ptime: Duration,
    marker: bool,
    /// RTP ticks per second of the output clock.
    rate: u32,
    /// Time filled by underruns in a row.
    underrun_run: Duration,
}

impl Clock {
    fn new(ptime: Duration, rate: u32, initial_timestamp: u32) -> Self {
        let ticks = (ptime.as_micros() * u128::from(rate) / 1_000_000) as u32;
        Clock {
            next: None,
            last_end: None,
            timestamp: initial_timestamp,
            ticks,
            ptime,
            marker: true,
            rate,
            underrun_run: Duration::ZERO,
        }
    }

    /// The jitter buffer has (re)started: output follows its playout clock from now on.
    fn start(&mut self, first_due: Option<Instant>) {
        if self.next.is_some() {
            return;
        }
        let Some(due) = first_due else {
            return;
        };
        if let Some(end) = self.last_end {
            // RTP timestamps keep real time across a silence (RFC 3550 §5.1): advance them
            // by the time not sent, on top of the last frame's own duration.
            let gap = due.saturating_duration_since(end);
            let ticks = gap.as_nanos() * u128::from(self.rate) / 1_000_000_000;
            self.timestamp = self.timestamp.wrapping_add(ticks as u32);
        }
        self.next = Some(due);
        self.marker = true;
        self.underrun_run = Duration::ZERO;
    }

    /// Emits one frame's header and moves on.
    fn emit(&mut self, due: Instant) -> (u32, bool) {
        let ts = self.timestamp;
        let marker = self.marker;
        self.timestamp = self.timestamp.wrapping_add(self.ticks);
        self.marker = false;
        let end = due + self.ptime;
        self.next = Some(end);
        self.last_end = Some(end);
        (ts, marker)
    }

    fn stop(&mut self) {
        self.next = None;
    }
}

fn check_ptime(ptime: Duration, allowed: &[u64]) -> Result<(), PipelineError> {
    let ms = ptime.as_millis() as u64;
    if Duration::from_millis(ms) != ptime || !allowed.contains(&ms) {
        return Err(PipelineError::Ptime(ptime));
    }
    Ok(())
}

/// 48 kHz RTP ticks to a whole number of 2.5 ms steps at 8 kHz, 2.5..=120 ms: what libopus
/// can conceal.
fn opus_conceal_samples(ticks: u32) -> usize {
    let samples = (ticks as usize / 6).div_ceil(OPUS_STEP) * OPUS_STEP;
    samples.clamp(OPUS_STEP, MAX_OPUS_SAMPLES)
}

/// A linear PCM FIFO with a fixed capacity: appended at the tail, consumed from the head.
#[derive(Debug)]
struct Fifo {
    buf: Vec<i16>,
    len: usize,
}

impl Fifo {
    fn new() -> Self {
        Fifo {
            buf: vec![0; FIFO],
            len: 0,
        }
    }

    /// Free space at the tail, at most `n` samples.
    fn tail(&mut self, n: usize) -> &mut [i16] {
        let end = (self.len + n).min(self.buf.len());
        &mut self.buf[self.len..end]
    }

    fn commit(&mut self, n: usize) {
        self.len = (self.len + n).min(self.buf.len());
    }

    /// Fills the tail with silence up to `n` samples in all.
    fn pad_to(&mut self, n: usize) {
        let n = n.min(self.buf.len());
        if self.len < n {
            self.buf[self.len..n].fill(0);
            self.len = n;
        }
    }

    fn head(&self, n: usize) -> &[i16] {
        &self.buf[..n.min(self.len)]
    }

    fn consume(&mut self, n: usize) {
        let n = n.min(self.len);
        self.buf.copy_within(n..self.len, 0);
        self.len -= n;
    }

    fn clear(&mut self) {
        self.len = 0;
    }
}

/// The Opus decoder of [`OpusToG711`], producing 8 kHz PCM either directly or by decoding
/// at a higher rate and band-limiting with [`Resampler`].
struct OpusStage {
    decoder: OpusDecoder,
    /// `Some` when decoding above 8 kHz, with the decode buffer it reads from.
    resampler: Option<(Resampler, Vec<i16>)>,
    /// Decode rate / 8000.
    factor: usize,
}

impl OpusStage {
    fn new(rate: u32) -> Result<Self, PipelineError> {
        // Whole multiples of 8 kHz only, so that PLC durations map exactly.
        if !matches!(rate, 8000 | 16000 | 24000 | 48000) {
            return Err(PipelineError::Opus(OpusError::UnsupportedRate(rate)));
        }
        let decoder = OpusDecoder::new(rate)?;
        let factor = (rate / RATE) as usize;
        let resampler = if rate == RATE {
            None
        } else {
            let max = MAX_OPUS_SAMPLES * factor;
            let r = Resampler::new(rate, RATE, max)
                .map_err(|_| PipelineError::Opus(OpusError::UnsupportedRate(rate)))?;
            Some((r, vec![0; max]))
        };
        Ok(OpusStage {
            decoder,
            resampler,
            factor,
        })
    }

    fn decode(&mut self, packet: &[u8], out: &mut [i16]) -> Result<usize, OpusError> {
        match &mut self.resampler {
            None => self.decoder.decode(packet, out),
            Some((r, buf)) => {
                let n = self.decoder.decode(packet, buf)?;
                Ok(r.process(&buf[..n], out))
            }
        }
    }

    fn conceal(&mut self, samples: usize, out: &mut [i16]) -> Result<usize, OpusError> {
        match &mut self.resampler {
            None => self.decoder.conceal(samples, out),
            Some((r, buf)) => {
                let n = self.decoder.conceal(samples * self.factor, buf)?;
                Ok(r.process(&buf[..n], out))
            }
        }
    }

    fn decode_fec(
        &mut self,
        next: &[u8],
        samples: usize,
        out: &mut [i16],
    ) -> Result<usize, OpusError> {
        match &mut self.resampler {
            None => self.decoder.decode_fec(next, samples, out),
            Some((r, buf)) => {
                let n = self.decoder.decode_fec(next, samples * self.factor, buf)?;
                Ok(r.process(&buf[..n], out))
            }
        }
    }

    fn reset(&mut self) {
        let _ = self.decoder.reset();
        if let Some((r, _)) = &mut self.resampler {
            r.reset();
        }
    }
}

/// Browser → IMS: Opus RTP in, G.711 RTP out. See the module docs for the drive loop.
pub struct OpusToG711 {
    config: OpusToG711Config,
    jitter: JitterBuffer,
    opus: OpusStage,
    pcm: Fifo,
    clock: Clock,
    samples: usize,
    stats: PipelineStats,
}

impl fmt::Debug for OpusToG711 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OpusToG711")
            .field("law", &self.config.law)
            .field("ptime", &self.config.ptime)
            .field("stats", &self.stats)
            .finish()
    }
}

impl OpusToG711 {
    /// Builds the pipeline and allocates all its buffers.
    pub fn new(config: OpusToG711Config) -> Result<Self, PipelineError> {
        check_ptime(config.ptime, &[10, 20, 30, 40, 50, 60])?;
        let mut jitter_config = config.jitter.clone();
        jitter_config.clock_rate = opus_codec::RTP_CLOCK;
        let clock = Clock::new(config.ptime, RATE, config.initial_timestamp);
        Ok(OpusToG711 {
            jitter: JitterBuffer::new(jitter_config),
            opus: OpusStage::new(config.decode_rate)?,
            pcm: Fifo::new(),
            samples: clock.ticks as usize,
            clock,
            stats: PipelineStats::default(),
            config,
        })
    }

    /// Takes an Opus RTP payload that arrived at `now`.
    pub fn push(&mut self, now: Instant, seq: u16, timestamp: u32, payload: &[u8]) {
        self.jitter.push(now, seq, timestamp, payload);
        self.clock.start(self.jitter.poll_timeout());
    }

    /// When the next frame is due: call [`Self::poll`] then. `None` until the first packet
    /// and while idle.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.clock.next
    }

    /// Writes the next G.711 frame into `out` if one is due at `now`. `out` must hold one
    /// frame (8 bytes per ms of ptime); with a shorter buffer nothing is emitted.
    pub fn poll(&mut self, now: Instant, out: &mut [u8]) -> Option<G711Frame> {
        let due = self.clock.next?;
        if now < due || out.len() < self.samples {
            return None;
        }
        let frame_end = due + self.config.ptime;
        while self.pcm.len < self.samples {
            // Frames that start before this output frame ends are needed for it.
            let Some(frame) = self.jitter.pop(frame_end - Duration::from_nanos(1)) else {
                // Only if the buffer's clock ran ahead (rounded concealment): pad.
                self.pcm.pad_to(self.samples);
                break;
            };
            match frame {
                Frame::Packet { payload, ticks, .. } => {
                    self.clock.underrun_run = Duration::ZERO;
                    let tail = self.pcm.tail(MAX_OPUS_SAMPLES + 1);
                    match self.opus.decode(payload, tail) {
                        Ok(n) => self.pcm.commit(n),
                        Err(_) => {
                            self.stats.malformed += 1;
                            let n = opus_conceal_samples(ticks);
                            let tail = self.pcm.tail(n + 1);
                            let n = self.opus.conceal(n, tail).unwrap_or(0);
                            self.pcm.commit(n);
                        }
                    }
                }
                Frame::Lost { ticks, next, .. } => {
                    let n = opus_conceal_samples(ticks);
                    let tail = self.pcm.tail(n + 1);
                    let recovered = match next {
                        Some(next) if self.config.fec && opus_codec::has_fec(next) => {
                            self.opus.decode_fec(next, n, tail).ok()
                        }
                        _ => None,
                    };
                    let n = match recovered {
                        Some(n) => {
                            self.stats.fec_recovered += 1;
                            n
                        }
                        None => {
                            self.stats.concealed += 1;
                            let tail = self.pcm.tail(n + 1);
                            self.opus.conceal(n, tail).unwrap_or(0)
                        }
                    };
                    self.pcm.commit(n);
                }
                Frame::Underrun { ticks } => {
                    self.stats.underruns += 1;
                    self.clock.underrun_run += ticks_to_duration(u64::from(ticks), 48_000);
                    // libopus PLC: continues comfort noise through DTX, fades out a stall.
                    let n = opus_conceal_samples(ticks);
                    let tail = self.pcm.tail(n + 1);
                    let n = self.opus.conceal(n, tail).unwrap_or(0);
                    self.pcm.commit(n);
                    if n == 0 {
                        self.pcm.pad_to(self.samples);
                    }
                }
            }
        }
        let written = self.config.law.encode(self.pcm.head(self.samples), out);
        self.pcm.consume(self.samples);
        let (timestamp, marker) = self.clock.emit(due);
        self.stats.frames_out += 1;
        if self.clock.underrun_run >= self.config.idle_after {
            self.go_idle();
        }
        Some(G711Frame {
            timestamp,
            len: written,
            marker,
        })
    }

    /// Counters since construction.
    pub fn stats(&self) -> PipelineStats {
        merge(self.stats, &self.jitter)
    }

    /// The jitter buffer's current target delay.
    pub fn target_delay(&self) -> Duration {
        self.jitter.target_delay()
    }

    /// Drops all buffered media and codec state (e.g. the Opus stream changed); the next
    /// packet starts a new playout with the marker bit set and the timestamp advanced by the
    /// real time that passed.
    pub fn reset(&mut self) {
        self.go_idle();
        self.opus.reset();
    }

    fn go_idle(&mut self) {
        self.jitter.reset();
        self.pcm.clear();
        self.clock.stop();
    }
}

/// IMS → browser: G.711 RTP in, Opus RTP out. See the module docs for the drive loop.
pub struct G711ToOpus {
    config: G711ToOpusConfig,
    jitter: JitterBuffer,
    plc: Plc,
    encoder: OpusEncoder,
    pcm: Fifo,
    clock: Clock,
    samples: usize,
    stats: PipelineStats,
}

impl fmt::Debug for G711ToOpus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("G711ToOpus")
            .field("law", &self.config.law)
            .field("ptime", &self.config.ptime)
            .field("stats", &self.stats)
            .finish()
    }
}

impl G711ToOpus {
    /// Builds the pipeline and allocates all its buffers.
    pub fn new(config: G711ToOpusConfig) -> Result<Self, PipelineError> {
        check_ptime(config.ptime, &[10, 20, 40, 60])?;
        let mut jitter_config = config.jitter.clone();
        jitter_config.clock_rate = RATE;
        // G.711 payloads become PCM in the FIFO one byte per sample.
        jitter_config.max_payload = jitter_config.max_payload.min(FIFO - 480);
        let clock = Clock::new(
            config.ptime,
            opus_codec::RTP_CLOCK,
            config.initial_timestamp,
        );
        Ok(G711ToOpus {
            jitter: JitterBuffer::new(jitter_config),
            plc: Plc::new(),
            encoder: OpusEncoder::new(RATE, &config.opus)?,
            pcm: Fifo::new(),
            samples: (config.ptime.as_millis() as usize) * 8,
            clock,
            stats: PipelineStats::default(),
            config,
        })
    }

    /// Takes a G.711 RTP payload that arrived at `now`.
    pub fn push(&mut self, now: Instant, seq: u16, timestamp: u32, payload: &[u8]) {
        self.jitter.push(now, seq, timestamp, payload);
        self.clock.start(self.jitter.poll_timeout());
    }

    /// When the next packet is due: call [`Self::poll`] then.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.clock.next
    }

    /// Writes the next Opus packet into `out` if one is due at `now`. `out` should hold
    /// [`opus_codec::MAX_ENCODED_BYTES`]; if libopus cannot fit the packet the frame is still
    /// consumed (the clock moves on) and `None` is returned.
    pub fn poll(&mut self, now: Instant, out: &mut [u8]) -> Option<OpusFrame> {
        let due = self.clock.next?;
        if now < due {
            return None;
        }
        let frame_end = due + self.config.ptime;
        while self.pcm.len < self.samples {
            let Some(frame) = self.jitter.pop(frame_end - Duration::from_nanos(1)) else {
                self.pcm.pad_to(self.samples);
                break;
            };
            match frame {
                Frame::Packet { payload, .. } => {
                    self.clock.underrun_run = Duration::ZERO;
                    let tail = self.pcm.tail(payload.len());
                    let n = self.config.law.decode(payload, tail);
                    self.plc.good(&mut tail[..n]);
                    self.pcm.commit(n);
                }
                Frame::Lost { ticks, .. } => {
                    self.stats.concealed += 1;
                    let tail = self.pcm.tail(ticks as usize);
                    let n = tail.len();
                    self.plc.conceal(tail);
                    self.pcm.commit(n);
                }
                Frame::Underrun { ticks } => {
                    self.stats.underruns += 1;
                    self.clock.underrun_run += ticks_to_duration(u64::from(ticks), RATE);
                    let tail = self.pcm.tail(ticks as usize);
                    let n = tail.len();
                    self.plc.conceal(tail);
                    self.pcm.commit(n);
                }
            }
        }
        let encoded = self.encoder.encode(self.pcm.head(self.samples), out);
        self.pcm.consume(self.samples);
        let (timestamp, marker) = self.clock.emit(due);
        if self.clock.underrun_run >= self.config.idle_after {
            self.go_idle();
        }
        let len = encoded.ok()?;
        self.stats.frames_out += 1;
        Some(OpusFrame {
            timestamp,
            len,
            marker,
        })
    }

    /// Counters since construction.
    pub fn stats(&self) -> PipelineStats {
        merge(self.stats, &self.jitter)
    }

    /// The jitter buffer's current target delay.
    pub fn target_delay(&self) -> Duration {
        self.jitter.target_delay()
    }

    /// Drops all buffered media and codec state; the next packet starts a new playout with the
    /// marker bit set.
    pub fn reset(&mut self) {
        self.go_idle();
        self.plc.reset();
        let _ = self.encoder.reset();
    }

    fn go_idle(&mut self) {
        self.jitter.reset();
        self.pcm.clear();
        self.clock.stop();
    }
}

fn merge(mut stats: PipelineStats, jitter: &JitterBuffer) -> PipelineStats {
    let j = jitter.stats();
    stats.packets_in = j.accepted;
    stats.late = j.late;
    stats.dropped = j.duplicate + j.rejected + j.discarded;
    stats.restarts = j.restarts;
    stats
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn configuration_is_checked() {
        let bad = |ms| OpusToG711Config {
            ptime: Duration::from_millis(ms),
            ..OpusToG711Config::default()
        };
        assert!(OpusToG711::new(bad(20)).is_ok());
        assert!(OpusToG711::new(bad(30)).is_ok());
        assert_eq!(
            OpusToG711::new(bad(25)).unwrap_err(),
            PipelineError::Ptime(Duration::from_millis(25))
        );
        assert!(OpusToG711::new(bad(0)).is_err());
        assert!(OpusToG711::new(OpusToG711Config {
            ptime: Duration::from_micros(20_500),
            ..OpusToG711Config::default()
        })
        .is_err());
        for rate in [8000, 16000, 48000] {
            let c = OpusToG711Config {
                decode_rate: rate,
                ..OpusToG711Config::default()
            };
            assert!(OpusToG711::new(c).is_ok(), "{rate}");
        }
        for rate in [12000, 44100, 0] {
            let c = OpusToG711Config {
                decode_rate: rate,
                ..OpusToG711Config::default()
            };
            assert!(OpusToG711::new(c).is_err(), "{rate}");
        }
        let opus_out = |ms| G711ToOpusConfig {
            ptime: Duration::from_millis(ms),
            ..G711ToOpusConfig::default()
        };
        assert!(G711ToOpus::new(opus_out(20)).is_ok());
        assert!(G711ToOpus::new(opus_out(60)).is_ok());
        assert!(
            G711ToOpus::new(opus_out(30)).is_err(),
            "not an Opus frame size"
        );
    }

    #[test]
    fn nothing_happens_before_the_first_packet_and_short_buffers_are_refused() {
        let mut leg = OpusToG711::new(OpusToG711Config::default()).unwrap();
        assert_eq!(leg.poll_timeout(), None);
        let t0 = Instant::now();
        let mut out = [0u8; 160];
        assert_eq!(leg.poll(t0, &mut out), None);
        leg.push(t0, 1, 0, &[0x08, 0x00]);
        let due = leg.poll_timeout().unwrap();
        assert!(due > t0);
        assert_eq!(leg.poll(due, &mut out[..100]), None, "buffer too short");
        let frame = leg.poll(due, &mut out).unwrap();
        assert_eq!((frame.len, frame.marker), (160, true));
    }
}
