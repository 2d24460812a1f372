//! One direction of a transcoded video stream, sans-IO: RTP payloads of one codec in, RTP
//! payloads of the other out, keyframe requests both ways.
//!
//! ```text
//! from the sender:   channel.push(now, seq, timestamp, marker, payload)
//! from the receiver: channel.request_keyframe(now)   (its PLI or FIR)
//!                    channel.set_bitrate(now, bps)    (its REMB or TMMBR)
//! then:              while let Some(out) = channel.poll_output() { ... }
//!                    Rtp { timestamp, payload }  -> to the receiver
//!                    RequestKeyframe             -> a PLI (or FIR) to the sender
//! on a timer:        channel.handle_timeout(now) at channel.poll_timeout()
//! ```
//!
//! Work happens inside `push`: a frame completes, is decoded, scaled to what the receiver's
//! limits allow ([`VideoLimits::fit`]), encoded and packetized. The encoder is built at the
//! first picture, when the source size is known, and rebuilt when the source changes size
//! (browsers scale their camera under load); the rebuilt encoder's first frame is a keyframe.
//!
//! Loss: the depacketizer drops damaged frames and asks once; a decoder error does the same
//! here. While no keyframe has come, the request is repeated every
//! [`VideoChannelConfig::keyframe_retry`] (a PLI can be lost too). Frames keep their
//! timestamps' spacing: the output timestamp is the input's moved by a constant, so the
//! receiver's playout follows the sender's clock.
//!
//! Rate: frames arriving faster than the fit's frame rate are decoded (later frames refer to
//! them) but not encoded. The encoder's target moves within `[MIN_BITRATE, max_bitrate]`; H.264 restarts with a
//! keyframe on each change (see [`super::openh264`]), so changes smaller than
//! [`BITRATE_STEP`] are not applied.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use super::h264::{H264Depacketizer, H264Packetizer, PacketizationMode};
use super::level::{Fit, VideoLimits};
use super::openh264::{H264Decoder, H264Encoder};
use super::picture::{EncoderConfig, Picture, VideoCodecError, VideoDecoder, VideoEncoder};
use super::vp8::{Vp8Depacketizer, Vp8Packetizer};
use super::vpx::{Vp8Decoder, Vp8Encoder};
use super::{Depacketized, RtpPayload};

/// The lowest target an encoder is given, whatever the receiver's estimate: below it a
/// picture is not worth sending.
pub const MIN_BITRATE: u32 = 50_000;

/// A bitrate change smaller than this fraction of the current target is ignored.
pub const BITRATE_STEP: f64 = 0.15;

/// A codec and, for H.264, its packetization mode.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VideoCodec {
    /// VP8 (RFC 7741).
    Vp8,
    /// H.264 constrained baseline (RFC 6184) in a packetization mode.
    H264(PacketizationMode),
}

/// What one direction converts, and toward what receiver.
#[derive(Clone, Debug)]
pub struct VideoChannelConfig {
    /// The sender's codec.
    pub from: VideoCodec,
    /// The receiver's codec.
    pub to: VideoCodec,
    /// The receiver's declared limits (from its fmtp).
    pub limits: VideoLimits,
    /// The largest RTP payload written (bytes): the path MTU less IP, UDP, RTP and SRTP.
    pub max_payload: usize,
    /// The encoder's first target (bits/s).
    pub start_bitrate: u32,
    /// The ceiling: the receiver's b=AS or b=TIAS and its level's bitrate, whichever is lower.
    pub max_bitrate: u32,
    /// The frame rate never exceeded, whatever the sender sends.
    pub max_fps: u32,
    /// The first output RTP timestamp (random, RFC 3550 §5.1).
    pub initial_timestamp: u32,
    /// The first VP8 PictureID (random, RFC 7741 §4.2).
    pub first_picture_id: u16,
    /// How often a keyframe request is repeated while none has come.
    pub keyframe_retry: Duration,
}

impl VideoChannelConfig {
    /// A channel with the defaults for browser and IMS video: 1200-byte payloads, 30
    /// frames/s, 600 kbit/s to start, a request repeated every 500 ms.
    pub fn new(from: VideoCodec, to: VideoCodec, limits: VideoLimits, max_bitrate: u32) -> Self {
        let max_bitrate = limits.max_bitrate.map_or(max_bitrate, |l| l.min(max_bitrate)).max(MIN_BITRATE);
        VideoChannelConfig {
            from,
            to,
            limits,
            max_payload: 1200,
            start_bitrate: 600_000.min(max_bitrate),
            max_bitrate,
            max_fps: 30,
            initial_timestamp: 0,
            first_picture_id: 0,
            keyframe_retry: Duration::from_millis(500),
        }
    }
}

/// What the channel has for its driver.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum VideoOutput {
    /// A packet for the receiver, with its RTP timestamp (90 kHz) and marker.
    Rtp {
        /// RTP timestamp, 90 kHz, continuous per channel.
        timestamp: u32,
        /// The payload and its marker.
        payload: RtpPayload,
    },
    /// Ask the sender for a keyframe (RTCP PLI, or FIR where only that was negotiated).
    RequestKeyframe,
}

/// Counters for the call record and /metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VideoStats {
    /// Whole frames the depacketizer handed out.
    pub frames_in: u64,
    /// Frames encoded and sent.
    pub frames_out: u64,
    /// Frames skipped to keep to the receiver's frame rate, or dropped by the rate control.
    pub frames_skipped: u64,
    /// Keyframe requests sent toward the sender.
    pub keyframes_requested: u64,
    /// Keyframes the receiver asked for and got.
    pub keyframes_forced: u64,
    /// Frames the decoder refused.
    pub decode_errors: u64,
    /// Packets the depacketizer refused.
    pub packets_rejected: u64,
    /// The encoder's current target (bits/s).
    pub bitrate: u32,
    /// The width being encoded (0 before the first picture).
    pub width: u32,
    /// The height being encoded.
    pub height: u32,
}

enum Depacketizer {
    Vp8(Vp8Depacketizer),
    H264(H264Depacketizer),
}

impl Depacketizer {
    fn push(&mut self, seq: u16, timestamp: u32, marker: bool, payload: &[u8]) -> Depacketized {
        match self {
            Depacketizer::Vp8(d) => d.push(seq, timestamp, marker, payload),
            Depacketizer::H264(d) => d.push(seq, timestamp, marker, payload),
        }
    }

    fn awaiting_keyframe(&self) -> bool {
        match self {
            Depacketizer::Vp8(d) => d.awaiting_keyframe(),
            Depacketizer::H264(d) => d.awaiting_keyframe(),
        }
    }
}

/// The encoder and the source size it was built for.
struct Encoding {
    encoder: Box<dyn VideoEncoder + Send>,
    fit: Fit,
    source: (u32, u32),
}

enum Packetizer {
    Vp8(Vp8Packetizer),
    H264(H264Packetizer),
}

/// One direction of one transcoded video stream.
pub struct VideoChannel {
    config: VideoChannelConfig,
    depacketizer: Depacketizer,
    decoder: Box<dyn VideoDecoder + Send>,
    /// Built at the first picture, for the fit of that picture's size.
    encoder: Option<Encoding>,
    packetizer: Packetizer,
    picture: Picture,
    payloads: Vec<RtpPayload>,
    out: VecDeque<VideoOutput>,
    /// The decoder failed: frames are dropped until a keyframe.
    decoder_lost: bool,
    /// When the next repeated keyframe request is due, while one is outstanding.
    retry_at: Option<Instant>,
    force_keyframe: bool,
    /// Input timestamp of the first frame, which maps to `initial_timestamp`.
    first_input: Option<u32>,
    /// Output timestamp of the last encoded frame, for frame rate capping.
    last_sent: Option<u32>,
    bitrate: u32,
    stats: VideoStats,
}

impl std::fmt::Debug for VideoChannel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VideoChannel").field("from", &self.config.from).field("to", &self.config.to).field("stats", &self.stats).finish()
    }
}

impl VideoChannel {
    /// A channel for `config`; the decoder is set up here, the encoder at the first picture.
    pub fn new(config: VideoChannelConfig) -> Result<Self, VideoCodecError> {
        if config.from == config.to {
            return Err(VideoCodecError::InvalidConfig("from and to are the same codec"));
        }
        let (depacketizer, decoder): (Depacketizer, Box<dyn VideoDecoder + Send>) = match config.from {
            VideoCodec::Vp8 => (Depacketizer::Vp8(Vp8Depacketizer::new()), Box::new(Vp8Decoder::new()?)),
            VideoCodec::H264(_) => (Depacketizer::H264(H264Depacketizer::new()), Box::new(H264Decoder::new()?)),
        };
        let packetizer = match config.to {
            VideoCodec::Vp8 => Packetizer::Vp8(Vp8Packetizer::new(config.max_payload, config.first_picture_id)),
            VideoCodec::H264(mode) => Packetizer::H264(H264Packetizer::new(mode, config.max_payload)),
        };
        let bitrate = config.start_bitrate.clamp(MIN_BITRATE, config.max_bitrate.max(MIN_BITRATE));
        Ok(VideoChannel {
            depacketizer,
            decoder,
            encoder: None,
            packetizer,
            picture: Picture::new(16, 16)?,
            payloads: Vec::new(),
            out: VecDeque::new(),
            decoder_lost: false,
            retry_at: None,
            force_keyframe: false,
            first_input: None,
            last_sent: None,
            bitrate,
            stats: VideoStats { bitrate, ..VideoStats::default() },
            config,
        })
    }

    /// An RTP packet from the sender, in sequence order (after a jitter buffer, if any).
    pub fn push(&mut self, now: Instant, seq: u16, timestamp: u32, marker: bool, payload: &[u8]) {
        match self.depacketizer.push(seq, timestamp, marker, payload) {
            Depacketized::Pending => {}
            Depacketized::Rejected(_) => self.stats.packets_rejected += 1,
            Depacketized::KeyframeNeeded => self.ask_for_keyframe(now),
            Depacketized::Frame(frame) => {
                self.stats.frames_in += 1;
                if self.decoder_lost && !frame.keyframe {
                    return;
                }
                match self.decoder.decode(&frame.data, &mut self.picture) {
                    Ok(true) => {
                        self.decoder_lost = false;
                        if !self.depacketizer.awaiting_keyframe() {
                            self.retry_at = None;
                        }
                        self.encode(frame.timestamp);
                    }
                    Ok(false) => {}
                    Err(_) => {
                        self.stats.decode_errors += 1;
                        self.decoder_lost = true;
                        self.ask_for_keyframe(now);
                    }
                }
            }
        }
    }

    /// The receiver asked for a keyframe (PLI, FIR, SIP INFO picture_fast_update): the next
    /// encoded frame is one.
    pub fn request_keyframe(&mut self, _now: Instant) {
        self.force_keyframe = true;
    }

    /// The receiver's estimate or limit (REMB, TMMBR), bits/s; kept within
    /// `[MIN_BITRATE, max_bitrate]`, applied when it moves the target by more than
    /// [`BITRATE_STEP`].
    pub fn set_bitrate(&mut self, _now: Instant, bps: u32) {
        let target = bps.clamp(MIN_BITRATE, self.config.max_bitrate.max(MIN_BITRATE));
        let change = (f64::from(target) - f64::from(self.bitrate)).abs() / f64::from(self.bitrate);
        if change < BITRATE_STEP {
            return;
        }
        self.bitrate = target;
        self.stats.bitrate = target;
        if let Some(Encoding { encoder, .. }) = &mut self.encoder {
            // A refused target keeps the old one; the encoder goes on.
            let _ = encoder.set_bitrate(target);
        }
    }

    /// The next output, in order.
    pub fn poll_output(&mut self) -> Option<VideoOutput> {
        self.out.pop_front()
    }

    /// When [`VideoChannel::handle_timeout`] has something to do: a repeated keyframe request.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.retry_at
    }

    /// Repeats an outstanding keyframe request when due.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.retry_at.is_some_and(|at| at <= now) {
            if self.depacketizer.awaiting_keyframe() || self.decoder_lost {
                self.ask_for_keyframe(now);
            } else {
                self.retry_at = None;
            }
        }
    }

    /// Counters so far.
    pub fn stats(&self) -> VideoStats {
        self.stats
    }

    fn ask_for_keyframe(&mut self, now: Instant) {
        self.out.push_back(VideoOutput::RequestKeyframe);
        self.stats.keyframes_requested += 1;
        self.retry_at = Some(now + self.config.keyframe_retry);
    }

    fn encode(&mut self, input_ts: u32) {
        let first = *self.first_input.get_or_insert(input_ts);
        let timestamp = self.config.initial_timestamp.wrapping_add(input_ts.wrapping_sub(first));
        let source = (self.picture.width(), self.picture.height());
        if self.encoder.as_ref().is_none_or(|e| e.source != source) {
            // A new encoder's first frame is a keyframe (libvpx and OpenH264 both start so).
            match self.build_encoder(source) {
                Ok(e) => self.encoder = Some(e),
                Err(_) => return,
            }
        }
        let Some(Encoding { encoder, fit, .. }) = &mut self.encoder else { return };
        // Keep to the fit's frame rate: a frame closer than 90% of the interval to the last
        // one sent is skipped (it was decoded: later frames refer to it).
        let interval = 90_000 / fit.fps.max(1);
        if let Some(last) = self.last_sent {
            let since = timestamp.wrapping_sub(last);
            if since < interval * 9 / 10 && !self.force_keyframe {
                self.stats.frames_skipped += 1;
                return;
            }
        }
        let forced = self.force_keyframe;
        let frame = match encoder.encode(&self.picture, timestamp, forced) {
            Ok(Some(f)) => f,
            Ok(None) => {
                self.stats.frames_skipped += 1;
                return;
            }
            Err(_) => return,
        };
        if forced && frame.keyframe {
            self.force_keyframe = false;
            self.stats.keyframes_forced += 1;
        }
        self.payloads.clear();
        let packed = match &mut self.packetizer {
            Packetizer::Vp8(p) => p.packetize(frame.data, &mut self.payloads),
            Packetizer::H264(p) => p.packetize(frame.data, &mut self.payloads),
        };
        if packed.is_err() {
            // Our own encoder's output did not packetize (a NAL unit over the mode-0 limit):
            // the receiver would see a broken frame, so send the next one as a keyframe.
            self.force_keyframe = true;
            return;
        }
        self.last_sent = Some(timestamp);
        self.stats.frames_out += 1;
        for payload in self.payloads.drain(..) {
            self.out.push_back(VideoOutput::Rtp { timestamp, payload });
        }
    }

    fn build_encoder(&mut self, (width, height): (u32, u32)) -> Result<Encoding, VideoCodecError> {
        let fit = self.config.limits.fit(width, height, self.config.max_fps).ok_or(VideoCodecError::InvalidSize { width, height })?;
        let config = EncoderConfig {
            width: fit.width,
            height: fit.height,
            bitrate_bps: self.bitrate,
            max_fps: fit.fps,
            keyframe_interval: 0,
            // Mode 0 needs every NAL unit in one packet; the encoder cuts slices to fit.
            max_nal_bytes: matches!(self.config.to, VideoCodec::H264(PacketizationMode::SingleNal)).then_some(self.config.max_payload),
        };
        let encoder: Box<dyn VideoEncoder + Send> = match self.config.to {
            VideoCodec::Vp8 => Box::new(Vp8Encoder::new(&config)?),
            VideoCodec::H264(_) => Box::new(H264Encoder::new(&config)?),
        };
        self.stats.width = fit.width;
        self.stats.height = fit.height;
        Ok(Encoding { encoder, fit, source: (width, height) })
    }
}
