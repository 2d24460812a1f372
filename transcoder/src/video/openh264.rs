//! H.264 encoder and decoder over the `openh264` crate (Cisco's OpenH264, built from source).
//!
//! # Encoder settings
//!
//! - **Constrained baseline, level 3.1**: `profile-level-id` 42c01f (profile_idc 66 with
//!   constraint_set0 and constraint_set1), which every browser and IMS core decodes: they
//!   offer 42e01f or 42801f, and constrained baseline is the common subset (RFC 6184 §8.1,
//!   RFC 7742 §6.2). No B-frames, CAVLC, one reference.
//! - **Real time**: camera real-time usage, one thread (the pool gives each channel a core,
//!   not each encoder), bitrate rate control with frame skipping when the budget runs out:
//!   then [`H264Encoder::encode`] returns `Ok(None)`. [`EncoderConfig::max_fps`] is the frame
//!   rate the rate control plans for.
//! - **Keyframes** are IDR pictures, each behind its own SPS and PPS (OpenH264 writes them
//!   before every IDR, with constant ids), so a receiver can join at any keyframe. They come
//!   on demand (`force_keyframe`, OpenH264's `ForceIntraFrame`), every
//!   [`EncoderConfig::keyframe_interval`] frames if non-zero, and never from scene-change
//!   detection, which is off so that "0" means on demand only.
//! - **Output** is one Annex B access unit per picture, 4-byte start codes, as
//!   [`super::h264::H264Packetizer`] takes it.
//!
//! # Packetization mode 0: size-limited slices
//!
//! RFC 6184 mode 0 sends every NAL unit in one RTP packet, so the encoder must cut a picture
//! into slices small enough. The `openh264` crate exposes that:
//! `EncoderConfig::max_slice_len(n)` sets OpenH264's `SM_SIZELIMITED_SLICE` slice mode with
//! `uiSliceSizeConstraint = n` and `uiMaxNalSize = n`, and [`EncoderConfig::max_nal_bytes`]
//! is passed to it as is. OpenH264 (2.x, `encoder_ext.cpp` `ParamValidationExt` and
//! `svc_encode_slice.cpp` `DynSlcJudgeSliceBoundaryStepBack`) lowers the constraint to
//! `n - 40` and, after coding each macroblock, ends the slice before that macroblock once the
//! slice data passed `n - 140`; a slice's first macroblock always stays (at most 400 bytes,
//! the H.264 Annex A limit). So a NAL unit is at most about `n - 130` bytes: the rest is
//! headroom for the slice header and emulation prevention bytes. Measured at 640x480 with
//! `n` = 1200: largest NAL unit 1065 bytes, on 1.5 Mbit/s keyframes (19 slices) and on
//! 5 Mbit/s noise (over 130 slices per picture). Two costs: packets are about 11% smaller
//! than they could be, and OpenH264 prints a warning about the two equal values to stderr
//! each time an encoder starts (its log level can be lowered only after that point).
//!
//! # Bitrate changes cost a keyframe
//!
//! The `openh264` crate has no safe call to change the bitrate of a running encoder:
//! OpenH264's `SetOption(ENCODER_OPTION_BITRATE, SBitrateInfo)` is reachable only through
//! `unsafe { Encoder::raw_api() }.set_option(..)`, and this crate keeps unsafe code to
//! [`super::vpx`]. [`H264Encoder::set_bitrate`] therefore replaces the encoder: the next
//! picture is an IDR (with SPS and PPS, the same ids and profile, so the receiver just
//! decodes on). Congestion control should change the H.264 bitrate in steps, not per
//! report.
//!
//! # Decoder
//!
//! [`H264Decoder::decode`] takes one access unit in Annex B form (what
//! [`super::h264::H264Depacketizer`] hands out) and copies the picture into the caller's
//! [`Picture`]. OpenH264's error concealment is off, so a damaged or orphaned access unit
//! is [`VideoCodecError::Malformed`] rather than a concealed picture; decoding resumes at the
//! next IDR. Parameter sets alone produce no picture (`Ok(false)`).
//!
//! # Licensing
//!
//! OpenH264 is built from the source the crate bundles, not Cisco's binary, so Cisco's
//! H.264 patent licence does not cover the product: whoever ships it carries the H.264
//! licensing (see shared/DEPENDENCIES.md).

use ::openh264::decoder::Decoder;
use ::openh264::encoder::{
    BitRate, Encoder, EncoderConfig as OpenH264Config, FrameRate, FrameType, IntraFramePeriod,
    Level, Profile, RateControlMode, UsageType,
};
use ::openh264::formats::YUVSource;
use ::openh264::{OpenH264API, Timestamp};

use super::h264::{nal_type, nal_units, NAL_IDR};
use super::picture::{
    EncodedFrame, EncoderConfig, Picture, RtpClock, Scaler, VideoCodecError, VideoDecoder,
    VideoEncoder,
};

/// The smallest [`EncoderConfig::max_nal_bytes`] accepted. OpenH264 refuses less than 420
/// (its 20-byte reserve plus the 400-byte largest macroblock); from 500 on, a slice of one
/// maximal macroblock still fits with its header.
pub const MIN_MAX_NAL_BYTES: usize = 500;

/// The picture as OpenH264 reads it: our planes and strides, no copy.
struct Source<'a>(&'a Picture);

impl YUVSource for Source<'_> {
    fn dimensions(&self) -> (usize, usize) {
        (self.0.width() as usize, self.0.height() as usize)
    }

    fn strides(&self) -> (usize, usize, usize) {
        let uv = self.0.uv_stride();
        (self.0.y_stride(), uv, uv)
    }

    fn y(&self) -> &[u8] {
        self.0.y()
    }

    fn u(&self) -> &[u8] {
        self.0.u()
    }

    fn v(&self) -> &[u8] {
        self.0.v()
    }
}

/// An `openh264` error as ours: `what` names the call; OpenH264's native code when it gave
/// one.
fn codec_error(what: &'static str, e: &::openh264::Error) -> VideoCodecError {
    let code = i32::try_from(e.native_code()).unwrap_or(i32::MAX);
    VideoCodecError::Codec(what, code)
}

/// An H.264 constrained baseline encoder (OpenH264); see the module docs for its settings.
pub struct H264Encoder {
    inner: Encoder,
    config: EncoderConfig,
    /// Pictures given to `inner`: it initialises itself on its first picture, before which
    /// it cannot be forced to an IDR (that one is an IDR anyway).
    frames: u64,
    clock: RtpClock,
    last_ms: Option<u64>,
    scaler: Scaler,
    scaled: Picture,
    out: Vec<u8>,
}

impl std::fmt::Debug for H264Encoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("H264Encoder")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl H264Encoder {
    /// Creates an encoder for `config`, so a channel towards an H.264 receiver can start.
    /// OpenH264 initialises itself on the first picture; its errors surface there.
    pub fn new(config: &EncoderConfig) -> Result<Self, VideoCodecError> {
        config.validate()?;
        // OpenH264 stops at 3840x2160 (either orientation).
        let (long, short) = (
            config.width.max(config.height),
            config.width.min(config.height),
        );
        if long > 3840 || short > 2160 {
            return Err(VideoCodecError::InvalidSize {
                width: config.width,
                height: config.height,
            });
        }
        if let Some(max) = config.max_nal_bytes {
            if !(MIN_MAX_NAL_BYTES..=u16::MAX as usize).contains(&max) {
                return Err(VideoCodecError::InvalidConfig("max_nal_bytes"));
            }
        }
        Ok(H264Encoder {
            inner: new_encoder(config)?,
            config: config.clone(),
            frames: 0,
            clock: RtpClock::default(),
            last_ms: None,
            scaler: Scaler::new(),
            scaled: Picture::new(config.width, config.height)?,
            out: Vec::new(),
        })
    }

    /// The settings this encoder runs with, the bitrate as last set.
    pub fn config(&self) -> &EncoderConfig {
        &self.config
    }

    /// Encodes one picture into an Annex B access unit; see [`VideoEncoder::encode`]. A
    /// picture of another size than configured is scaled first.
    pub fn encode(
        &mut self,
        picture: &Picture,
        timestamp_90k: u32,
        force_keyframe: bool,
    ) -> Result<Option<EncodedFrame<'_>>, VideoCodecError> {
        let picture =
            if (picture.width(), picture.height()) == (self.config.width, self.config.height) {
                picture
            } else {
                self.scaler.scale(picture, &mut self.scaled);
                &self.scaled
            };
        // OpenH264 counts time in milliseconds; keep it strictly increasing too.
        let ms = u64::try_from(self.clock.extend(timestamp_90k) / 90).unwrap_or(0);
        let ms = match self.last_ms {
            Some(last) if ms <= last => last + 1,
            _ => ms,
        };
        self.last_ms = Some(ms);
        if force_keyframe && self.frames > 0 {
            self.inner.force_intra_frame();
        }
        self.frames += 1;
        let stream = self
            .inner
            .encode_at(&Source(picture), Timestamp::from_millis(ms))
            .map_err(|e| codec_error("openh264 Encoder::encode_at", &e))?;
        let frame_type = stream.frame_type();
        self.out.clear();
        if matches!(frame_type, FrameType::Skip | FrameType::Invalid) {
            // The rate control skipped the picture.
            return Ok(None);
        }
        stream.write_vec(&mut self.out);
        if self.out.is_empty() {
            return Ok(None);
        }
        let keyframe = nal_units(&self.out).any(|nal| nal_type(nal) == NAL_IDR);
        Ok(Some(EncodedFrame {
            data: &self.out,
            keyframe,
        }))
    }

    /// Changes the target bitrate (bits/s, at least 1000). This replaces the OpenH264
    /// encoder, so the next picture is an IDR (see the module docs for why); setting the
    /// bitrate it already has does nothing.
    pub fn set_bitrate(&mut self, bps: u32) -> Result<(), VideoCodecError> {
        if bps == self.config.bitrate_bps {
            return Ok(());
        }
        let mut config = self.config.clone();
        config.bitrate_bps = bps;
        config.validate()?;
        self.inner = new_encoder(&config)?;
        self.frames = 0;
        self.config = config;
        Ok(())
    }
}

/// An OpenH264 encoder for `config` (already validated).
fn new_encoder(config: &EncoderConfig) -> Result<Encoder, VideoCodecError> {
    let mut settings = OpenH264Config::new()
        .usage_type(UsageType::CameraVideoRealTime)
        .profile(Profile::Baseline)
        .level(Level::Level_3_1)
        .rate_control_mode(RateControlMode::Bitrate)
        .bitrate(BitRate::from_bps(config.bitrate_bps))
        .max_frame_rate(FrameRate::from_hz(config.max_fps as f32))
        .skip_frames(true)
        .intra_frame_period(IntraFramePeriod::from_num_frames(config.keyframe_interval))
        .scene_change_detect(false)
        .num_threads(1);
    if let Some(max) = config.max_nal_bytes {
        // new() bounds it to MIN_MAX_NAL_BYTES..=65535.
        settings = settings.max_slice_len(max as u32);
    }
    Encoder::with_api_config(OpenH264API::from_source(), settings)
        .map_err(|e| codec_error("openh264 Encoder::with_api_config", &e))
}

impl VideoEncoder for H264Encoder {
    fn encode(
        &mut self,
        picture: &Picture,
        timestamp_90k: u32,
        force_keyframe: bool,
    ) -> Result<Option<EncodedFrame<'_>>, VideoCodecError> {
        H264Encoder::encode(self, picture, timestamp_90k, force_keyframe)
    }

    fn set_bitrate(&mut self, bps: u32) -> Result<(), VideoCodecError> {
        H264Encoder::set_bitrate(self, bps)
    }
}

/// An H.264 decoder (OpenH264, any profile it supports); see the module docs.
pub struct H264Decoder {
    inner: Decoder,
}

impl std::fmt::Debug for H264Decoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("H264Decoder").finish_non_exhaustive()
    }
}

impl H264Decoder {
    /// Creates a decoder (error concealment off), so a channel from an H.264 sender can
    /// start.
    pub fn new() -> Result<Self, VideoCodecError> {
        let inner = Decoder::new().map_err(|e| codec_error("openh264 Decoder::new", &e))?;
        Ok(H264Decoder { inner })
    }

    /// Decodes one Annex B access unit into `out`; see [`VideoDecoder::decode`].
    pub fn decode(
        &mut self,
        access_unit: &[u8],
        out: &mut Picture,
    ) -> Result<bool, VideoCodecError> {
        if access_unit.is_empty() || i32::try_from(access_unit.len()).is_err() {
            return Err(VideoCodecError::Malformed);
        }
        let decoded = match self.inner.decode(access_unit) {
            Ok(Some(decoded)) => decoded,
            Ok(None) => return Ok(false),
            Err(_) => return Err(VideoCodecError::Malformed),
        };
        let (width, height) = decoded.dimensions();
        let (ys, us, vs) = decoded.strides();
        let width = u32::try_from(width).map_err(|_| VideoCodecError::Malformed)?;
        let height = u32::try_from(height).map_err(|_| VideoCodecError::Malformed)?;
        out.copy_from_planes(
            width,
            height,
            [(decoded.y(), ys), (decoded.u(), us), (decoded.v(), vs)],
        )?;
        Ok(true)
    }
}

impl VideoDecoder for H264Decoder {
    fn decode(&mut self, data: &[u8], out: &mut Picture) -> Result<bool, VideoCodecError> {
        H264Decoder::decode(self, data, out)
    }
}
