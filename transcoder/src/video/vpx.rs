//! VP8 encoder and decoder: a small safe wrapper over the system libvpx (`env-libvpx-sys`).
//!
//! # Encoder settings
//!
//! Tuned for interactive video towards a browser or an IMS terminal, after what libwebrtc's
//! own VP8 encoder does:
//!
//! - **Real time.** Every frame is encoded with the `VPX_DL_REALTIME` deadline, one pass, no
//!   look-ahead (`g_lag_in_frames` 0): a frame goes out as soon as it comes in.
//! - **Fixed speed.** `cpu-used` is [`CPU_USED`] (-8). In real-time mode libvpx reads a
//!   positive value as "pick a speed from how long the last frames took", which makes the
//!   output depend on the machine's load; a negative one fixes speed 8 (fast, and at video
//!   call bitrates a fraction of a dB below speed 6).
//! - **CBR.** `rc_end_usage` CBR with libwebrtc's buffer model (0.5 s initial, 0.6 s optimal,
//!   1 s size, 15% overshoot), quantizer 2–56, frame dropping when the buffer runs low: then
//!   [`Vp8Encoder::encode`] returns `Ok(None)`. A keyframe may take up to
//!   [`MAX_KEYFRAME_SECONDS`] of bitrate, so one keyframe does not stall the stream.
//! - **Loss.** Error-resilient mode (a frame's probability updates are not carried into the
//!   next, so after a loss only the reference pictures are wrong, not the entropy decoding
//!   of what follows) and one token partition. Keyframes come on demand ([`EncoderConfig::keyframe_interval`] 0) or at
//!   most that many frames apart, and when forced (`VPX_EFLAG_FORCE_KF`) after a PLI or FIR.
//! - **Run-time bitrate.** [`Vp8Encoder::set_bitrate`] changes the target with
//!   `vpx_codec_enc_config_set`, without a keyframe.
//! - **No noise reduction**: the input is already decoded video, and a denoiser costs time.
//!
//! Timestamps are the RTP timestamps (time base 1/90000), extended past wrap-around and
//! kept strictly increasing (libvpx refuses time going backwards).
//!
//! # Decoder
//!
//! [`Vp8Decoder::decode`] takes one whole VP8 frame (what [`super::vp8::Vp8Depacketizer`]
//! hands out) and copies the picture into the caller's [`Picture`], following size
//! changes. Errors instead of concealment: a frame libvpx refuses (truncated, corrupt, a
//! delta frame before any keyframe), or one it decoded from a reference that itself failed
//! (`VP8D_GET_FRAME_CORRUPTED`), is [`VideoCodecError::Malformed`], so no damaged picture
//! reaches the other encoder. The next keyframe decodes cleanly again. What the decoder
//! cannot see is a frame that never reached it: VP8 frames carry no frame number, so after a
//! silent gap the next delta frame decodes into a wrong picture. The depacketizer's
//! sequence-number check is the guard there (it stops frames until a keyframe). A key frame header declaring a size we
//! would refuse (odd, zero, or above [`super::picture::MAX_DIMENSION`]) is refused before
//! libvpx sees it, so a peer cannot make it allocate frame buffers for 16383x16383.
//!
//! # Safety
//!
//! This is the crate's only module with `unsafe` code. Every call into libvpx is in a small
//! `unsafe` block with a `SAFETY:` comment, and the arguments they rest on are:
//!
//! - The Rust declarations are the ones `env-libvpx-sys` generated for the libvpx version
//!   `pkg-config` reports (its build script picks the file by version and fails if none
//!   matches), so struct layouts and ABI version constants agree with the library.
//! - Config structs are never made with `std::mem::zeroed()` (an all-zero
//!   `vpx_codec_enc_cfg_t` holds an invalid `vpx_bit_depth` enum, and Rust 1.95 aborts on
//!   it): libvpx writes the whole struct (`vpx_codec_enc_config_default`) into a
//!   `MaybeUninit` first. The codec context (`vpx_codec_ctx_t`) starts all-zero, which is
//!   valid for it (pointers, integers, and `vpx_codec_err_t` whose 0 is `VPX_CODEC_OK`), and
//!   lives in a `Box`, so its address never changes while libvpx holds it.
//! - A context is destroyed exactly once, in `Drop`, and only a successfully initialised one
//!   is wrapped (libvpx cleans up after a failed init itself).
//! - Enum fields libvpx writes into memory we read (`vpx_image_t::fmt`,
//!   `vpx_codec_cx_pkt_t::kind`) are read as plain integers, so an unexpected value is an
//!   error, not undefined behaviour.

use std::mem::MaybeUninit;
use std::os::raw::{c_int, c_uint, c_ulong};
use std::ptr;

use vpx_sys as ffi;

use super::picture::{
    EncodedFrame, EncoderConfig, Picture, RtpClock, Scaler, VideoCodecError, VideoDecoder,
    VideoEncoder,
};

/// libvpx `cpu-used` in real-time mode: negative fixes the speed at its absolute value
/// (see the module docs for why not a positive one).
pub const CPU_USED: c_int = -8;

/// The largest keyframe, in seconds of the target bitrate: a keyframe of 0.3 s at 30 fps is
/// 9 frames' worth, enough for a clean picture without a long stall.
pub const MAX_KEYFRAME_SECONDS: f64 = 0.3;

/// RTP's video clock (RFC 3551 §5): the encoder's time base is one tick of it.
const RTP_VIDEO_CLOCK: c_int = 90_000;

/// A libvpx return code as our error: `what` is the libvpx function.
fn check(what: &'static str, err: ffi::vpx_codec_err_t) -> Result<(), VideoCodecError> {
    match err {
        ffi::vpx_codec_err_t::VPX_CODEC_OK => Ok(()),
        e => Err(VideoCodecError::Codec(what, e as i32)),
    }
}

/// An all-zero codec context on the heap: a valid value for it (see the module docs), which
/// libvpx's init functions then fill.
fn new_context() -> Box<ffi::vpx_codec_ctx_t> {
    // SAFETY: vpx_codec_ctx_t is made of raw pointers, integers, a union of raw pointers and
    // vpx_codec_err_t, whose discriminant 0 is VPX_CODEC_OK: all-zero bytes are a valid
    // value of every field.
    Box::new(unsafe { MaybeUninit::<ffi::vpx_codec_ctx_t>::zeroed().assume_init() })
}

/// A VP8 encoder (libvpx), real-time CBR; see the module docs for its settings.
pub struct Vp8Encoder {
    ctx: Box<ffi::vpx_codec_ctx_t>,
    /// The configuration libvpx was given, kept to change the bitrate.
    cfg: ffi::vpx_codec_enc_cfg_t,
    config: EncoderConfig,
    clock: RtpClock,
    scaler: Scaler,
    scaled: Picture,
    out: Vec<u8>,
}

// SAFETY: a libvpx context may be used from any thread, one thread at a time: it keeps no
// thread-local state, and we create it with g_threads = 1 (no worker threads of its own).
// Every method that touches it takes `&mut self`, so Rust rules out concurrent use.
unsafe impl Send for Vp8Encoder {}

impl std::fmt::Debug for Vp8Encoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Vp8Encoder")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl Vp8Encoder {
    /// Creates an encoder for `config`, so a channel towards a VP8 receiver can start.
    pub fn new(config: &EncoderConfig) -> Result<Self, VideoCodecError> {
        config.validate()?;
        // SAFETY: takes nothing, returns a pointer to libvpx's static VP8 encoder interface.
        let iface = unsafe { ffi::vpx_codec_vp8_cx() };
        let mut cfg = MaybeUninit::<ffi::vpx_codec_enc_cfg_t>::uninit();
        // SAFETY: iface is the VP8 encoder interface and cfg points to writable memory of the
        // struct's size; usage 0 is the only one libvpx accepts.
        let err = unsafe { ffi::vpx_codec_enc_config_default(iface, cfg.as_mut_ptr(), 0) };
        check("vpx_codec_enc_config_default", err)?;
        // SAFETY: on success libvpx copied a whole default configuration (`*cfg =
        // map->cfg`) into cfg, with valid enum values (VPX_BITS_8, VPX_RC_ONE_PASS, ...).
        let mut cfg = unsafe { cfg.assume_init() };

        cfg.g_w = config.width;
        cfg.g_h = config.height;
        cfg.g_timebase = ffi::vpx_rational {
            num: 1,
            den: RTP_VIDEO_CLOCK,
        };
        cfg.g_threads = 1;
        cfg.g_error_resilient = ffi::VPX_ERROR_RESILIENT_DEFAULT;
        cfg.g_pass = ffi::vpx_enc_pass::VPX_RC_ONE_PASS;
        cfg.g_lag_in_frames = 0;
        cfg.rc_end_usage = ffi::vpx_rc_mode::VPX_CBR;
        cfg.rc_target_bitrate = kbps(config.bitrate_bps);
        cfg.rc_min_quantizer = 2;
        cfg.rc_max_quantizer = 56;
        cfg.rc_undershoot_pct = 100;
        cfg.rc_overshoot_pct = 15;
        cfg.rc_buf_initial_sz = 500;
        cfg.rc_buf_optimal_sz = 600;
        cfg.rc_buf_sz = 1000;
        cfg.rc_dropframe_thresh = 30;
        cfg.rc_resize_allowed = 0;
        if config.keyframe_interval == 0 {
            cfg.kf_mode = ffi::vpx_kf_mode::VPX_KF_DISABLED;
        } else {
            cfg.kf_mode = ffi::vpx_kf_mode::VPX_KF_AUTO;
            cfg.kf_min_dist = 0;
            cfg.kf_max_dist = config.keyframe_interval;
        }

        let mut ctx = new_context();
        // SAFETY: ctx is a zeroed context at a stable heap address, iface the VP8 encoder,
        // cfg a complete configuration (libvpx copies it), and the ABI version is the one
        // of the declarations in use.
        let err = unsafe {
            ffi::vpx_codec_enc_init_ver(
                &mut *ctx,
                iface,
                &cfg,
                0,
                ffi::VPX_ENCODER_ABI_VERSION as c_int,
            )
        };
        // On failure libvpx has destroyed what it made: nothing to wrap, nothing to free.
        check("vpx_codec_enc_init_ver", err)?;
        let mut encoder = Vp8Encoder {
            ctx,
            cfg,
            config: config.clone(),
            clock: RtpClock::default(),
            scaler: Scaler::new(),
            scaled: Picture::new(config.width, config.height)?,
            out: Vec::new(),
        };
        let max_intra_pct = (MAX_KEYFRAME_SECONDS * f64::from(config.max_fps) * 100.0) as c_uint;
        use ffi::vp8e_enc_control_id::*;
        encoder.control(VP8E_SET_CPUUSED, CPU_USED)?;
        encoder.control(VP8E_SET_NOISE_SENSITIVITY, 0 as c_uint)?;
        encoder.control(VP8E_SET_STATIC_THRESHOLD, 1 as c_uint)?;
        encoder.control(VP8E_SET_TOKEN_PARTITIONS, 0 as c_uint)?;
        encoder.control(VP8E_SET_MAX_INTRA_BITRATE_PCT, max_intra_pct.max(300))?;
        Ok(encoder)
    }

    /// Sets one encoder control. `T` is `c_int` or `c_uint`, as the control's libvpx
    /// declaration says (`VPX_CTRL_USE_TYPE`).
    fn control<T: ControlValue>(
        &mut self,
        id: ffi::vp8e_enc_control_id,
        value: T,
    ) -> Result<(), VideoCodecError> {
        // SAFETY: the context is initialised; `vpx_codec_control_` reads one variadic
        // argument of the control's declared type, which `T` is (both are 32-bit integers
        // passed by value).
        let err = unsafe { ffi::vpx_codec_control_(&mut *self.ctx, id as c_int, value) };
        check("vpx_codec_control_", err)
    }

    /// The settings this encoder runs with, the bitrate as last set.
    pub fn config(&self) -> &EncoderConfig {
        &self.config
    }

    /// Encodes one picture; see [`VideoEncoder::encode`]. A picture of another size than
    /// configured is scaled first.
    pub fn encode(
        &mut self,
        picture: &Picture,
        timestamp_90k: u32,
        force_keyframe: bool,
    ) -> Result<Option<EncodedFrame<'_>>, VideoCodecError> {
        let picture = if (picture.width(), picture.height()) == (self.cfg.g_w, self.cfg.g_h) {
            picture
        } else {
            self.scaler.scale(picture, &mut self.scaled);
            &self.scaled
        };
        let image = wrap(picture);
        let pts = self.clock.extend(timestamp_90k);
        let duration = (RTP_VIDEO_CLOCK as u32 / self.config.max_fps) as c_ulong;
        let flags = if force_keyframe {
            ffi::VPX_EFLAG_FORCE_KF as ffi::vpx_enc_frame_flags_t
        } else {
            0
        };
        // SAFETY: the context is an initialised encoder; `image` describes `picture`'s three
        // planes with their true sizes and strides, and `picture` outlives the call. libvpx
        // only reads the planes and copies them before returning (no look-ahead).
        let err = unsafe {
            ffi::vpx_codec_encode(
                &mut *self.ctx,
                &image,
                pts,
                duration,
                flags,
                ffi::VPX_DL_REALTIME as c_ulong,
            )
        };
        check("vpx_codec_encode", err)?;

        self.out.clear();
        let mut keyframe = None;
        let mut iter: ffi::vpx_codec_iter_t = ptr::null();
        loop {
            // SAFETY: the context is initialised and `iter` is the iterator libvpx keeps
            // between these calls, started at null after the encode call.
            let packet = unsafe { ffi::vpx_codec_get_cx_data(&mut *self.ctx, &mut iter) };
            if packet.is_null() {
                break;
            }
            // SAFETY: `packet` is non-null and valid until the next call on the context;
            // `kind` is read as the u32 it is in C, without asserting it is a known variant.
            let kind = unsafe { ptr::addr_of!((*packet).kind).cast::<u32>().read() };
            if kind != ffi::vpx_codec_cx_pkt_kind::VPX_CODEC_CX_FRAME_PKT as u32
                || keyframe.is_some()
            {
                // Statistics packets, or a second frame packet (none with partitions off
                // and no look-ahead): nothing for us.
                continue;
            }
            // SAFETY: for a frame packet the union holds `frame`, whose `buf` points to `sz`
            // bytes owned by libvpx until the next call on the context; we copy them now.
            let (data, flags) = unsafe {
                let frame = (*packet).data.frame;
                let data = if frame.buf.is_null() {
                    &[][..]
                } else {
                    std::slice::from_raw_parts(frame.buf.cast::<u8>(), frame.sz as usize)
                };
                (data, frame.flags)
            };
            self.out.extend_from_slice(data);
            keyframe = Some(flags & ffi::VPX_FRAME_IS_KEY != 0);
        }
        Ok(match keyframe {
            Some(keyframe) if !self.out.is_empty() => Some(EncodedFrame {
                data: &self.out,
                keyframe,
            }),
            // The rate control dropped the frame.
            _ => None,
        })
    }

    /// Changes the target bitrate (bits/s, at least 1000) from the next frame on, without a
    /// keyframe, as congestion control (REMB, TMMBR, transport-cc) asks.
    pub fn set_bitrate(&mut self, bps: u32) -> Result<(), VideoCodecError> {
        let mut config = self.config.clone();
        config.bitrate_bps = bps;
        config.validate()?;
        let mut cfg = self.cfg;
        cfg.rc_target_bitrate = kbps(bps);
        // SAFETY: the context is an initialised encoder and cfg a complete configuration
        // (a copy of the one it was created with); libvpx copies it.
        let err = unsafe { ffi::vpx_codec_enc_config_set(&mut *self.ctx, &cfg) };
        check("vpx_codec_enc_config_set", err)?;
        self.cfg = cfg;
        self.config = config;
        Ok(())
    }
}

impl Drop for Vp8Encoder {
    fn drop(&mut self) {
        // SAFETY: the context was initialised in `new` (only then is a Vp8Encoder built) and
        // is destroyed here once.
        unsafe {
            ffi::vpx_codec_destroy(&mut *self.ctx);
        }
    }
}

impl VideoEncoder for Vp8Encoder {
    fn encode(
        &mut self,
        picture: &Picture,
        timestamp_90k: u32,
        force_keyframe: bool,
    ) -> Result<Option<EncodedFrame<'_>>, VideoCodecError> {
        Vp8Encoder::encode(self, picture, timestamp_90k, force_keyframe)
    }

    fn set_bitrate(&mut self, bps: u32) -> Result<(), VideoCodecError> {
        Vp8Encoder::set_bitrate(self, bps)
    }
}

/// libvpx takes kbit/s; round to the nearest, at least 1.
fn kbps(bps: u32) -> c_uint {
    ((bps + 500) / 1000).max(1)
}

/// The integer types encoder controls take (`vpx_codec_control_` is variadic).
trait ControlValue: Copy {}
impl ControlValue for c_int {}
impl ControlValue for c_uint {}

/// Describes `picture` to libvpx without copying it: an I420 image over its planes. The
/// pointers are only valid while `picture` is borrowed, which the caller ensures.
fn wrap(picture: &Picture) -> ffi::vpx_image_t {
    let (w, h) = (picture.width(), picture.height());
    ffi::vpx_image_t {
        fmt: ffi::vpx_img_fmt::VPX_IMG_FMT_I420,
        cs: ffi::vpx_color_space::VPX_CS_BT_601,
        range: ffi::vpx_color_range::VPX_CR_STUDIO_RANGE,
        w,
        h,
        bit_depth: 8,
        d_w: w,
        d_h: h,
        r_w: w,
        r_h: h,
        x_chroma_shift: 1,
        y_chroma_shift: 1,
        // libvpx declares the planes mutable but the encoder only reads its input.
        planes: [
            picture.y().as_ptr().cast_mut(),
            picture.u().as_ptr().cast_mut(),
            picture.v().as_ptr().cast_mut(),
            ptr::null_mut(),
        ],
        stride: [
            picture.y_stride() as c_int,
            picture.uv_stride() as c_int,
            picture.uv_stride() as c_int,
            0,
        ],
        bps: 12,
        user_priv: ptr::null_mut(),
        img_data: ptr::null_mut(),
        img_data_owner: 0,
        self_allocd: 0,
        fb_priv: ptr::null_mut(),
    }
}

/// A VP8 decoder (libvpx); see the module docs for how it reports damage.
pub struct Vp8Decoder {
    ctx: Box<ffi::vpx_codec_ctx_t>,
}

// SAFETY: as for Vp8Encoder: one thread at a time (every method takes `&mut self`), and
// the decoder is created with threads = 1.
unsafe impl Send for Vp8Decoder {}

impl std::fmt::Debug for Vp8Decoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Vp8Decoder").finish_non_exhaustive()
    }
}

/// `vpx_image_t::fmt` of 8-bit I420, the only format the VP8 decoder produces.
const I420: u32 = ffi::vpx_img_fmt::VPX_IMG_FMT_I420 as u32;

impl Vp8Decoder {
    /// Creates a decoder, single-threaded, with no post-processing and no error
    /// concealment, so a channel from a VP8 sender can start.
    pub fn new() -> Result<Self, VideoCodecError> {
        let cfg = ffi::vpx_codec_dec_cfg_t {
            threads: 1,
            w: 0,
            h: 0,
        };
        let mut ctx = new_context();
        // SAFETY: ctx is a zeroed context at a stable heap address, the interface is
        // libvpx's static VP8 decoder, cfg a complete configuration that libvpx copies, and
        // the ABI version is the one of the declarations in use.
        let err = unsafe {
            ffi::vpx_codec_dec_init_ver(
                &mut *ctx,
                ffi::vpx_codec_vp8_dx(),
                &cfg,
                0,
                ffi::VPX_DECODER_ABI_VERSION as c_int,
            )
        };
        // On failure libvpx has destroyed what it made: nothing to wrap, nothing to free.
        check("vpx_codec_dec_init_ver", err)?;
        Ok(Vp8Decoder { ctx })
    }

    /// Decodes one whole VP8 frame into `out`; see [`VideoDecoder::decode`].
    pub fn decode(&mut self, frame: &[u8], out: &mut Picture) -> Result<bool, VideoCodecError> {
        if frame.is_empty() {
            // An empty buffer would mean "flush" to libvpx.
            return Err(VideoCodecError::Malformed);
        }
        check_keyframe_header(frame)?;
        let len = c_uint::try_from(frame.len()).map_err(|_| VideoCodecError::Malformed)?;
        // SAFETY: the context is an initialised decoder; `frame` is `len` readable bytes for
        // the duration of the call (libvpx keeps no pointer into it after returning).
        let err = unsafe {
            ffi::vpx_codec_decode(&mut *self.ctx, frame.as_ptr(), len, ptr::null_mut(), 0)
        };
        match err {
            ffi::vpx_codec_err_t::VPX_CODEC_OK => {}
            ffi::vpx_codec_err_t::VPX_CODEC_MEM_ERROR => {
                return Err(VideoCodecError::Codec("vpx_codec_decode", err as i32))
            }
            // Corrupt, truncated, unsupported, or a delta frame without its reference.
            _ => {
                self.drain();
                return Err(VideoCodecError::Malformed);
            }
        }
        let mut corrupted: c_int = 0;
        // SAFETY: the context is an initialised VP8 decoder, for which
        // VP8D_GET_FRAME_CORRUPTED takes one `int *` and writes through it.
        let err = unsafe {
            ffi::vpx_codec_control_(
                &mut *self.ctx,
                ffi::vp8_dec_control_id::VP8D_GET_FRAME_CORRUPTED as c_int,
                &mut corrupted as *mut c_int,
            )
        };
        if err != ffi::vpx_codec_err_t::VPX_CODEC_OK || corrupted != 0 {
            self.drain();
            return Err(VideoCodecError::Malformed);
        }

        let mut iter: ffi::vpx_codec_iter_t = ptr::null();
        // SAFETY: the context is initialised and `iter` starts at null after a decode call.
        let image = unsafe { ffi::vpx_codec_get_frame(&mut *self.ctx, &mut iter) };
        if image.is_null() {
            // An invisible frame (an alt-ref update) shows nothing.
            return Ok(false);
        }
        let result = copy_image(image, out);
        self.drain();
        result.map(|()| true)
    }

    /// Takes any further pictures libvpx holds for the last frame (VP8 has none), so the
    /// next decode starts clean.
    fn drain(&mut self) {
        let mut iter: ffi::vpx_codec_iter_t = ptr::null();
        loop {
            // SAFETY: as in `decode`: an initialised context and libvpx's own iterator.
            let image = unsafe { ffi::vpx_codec_get_frame(&mut *self.ctx, &mut iter) };
            if image.is_null() {
                break;
            }
        }
    }
}

/// The VP8 key frame start code (RFC 6386 §9.1).
const KEYFRAME_START_CODE: [u8; 3] = [0x9d, 0x01, 0x2a];

/// Refuses a key frame whose header is not VP8 or declares a size we would refuse after
/// decoding, before libvpx allocates frame buffers for it (see
/// [`super::picture::MAX_DIMENSION`]). Delta frames pass: they cannot change the size.
fn check_keyframe_header(frame: &[u8]) -> Result<(), VideoCodecError> {
    if !super::vp8::is_keyframe(frame) {
        return Ok(());
    }
    // Frame tag (3 bytes), start code (3), then 14-bit width and height, each with 2 bits
    // of upscaling hint above (RFC 6386 §9.1).
    let header = frame.get(..10).ok_or(VideoCodecError::Malformed)?;
    if header[3..6] != KEYFRAME_START_CODE {
        return Err(VideoCodecError::Malformed);
    }
    let width = u32::from(u16::from_le_bytes([header[6], header[7]]) & 0x3fff);
    let height = u32::from(u16::from_le_bytes([header[8], header[9]]) & 0x3fff);
    super::picture::check_size(width, height)
}

/// Copies a decoded libvpx image into `out`.
fn copy_image(image: *const ffi::vpx_image_t, out: &mut Picture) -> Result<(), VideoCodecError> {
    // SAFETY: `image` is non-null and points to a vpx_image_t libvpx keeps valid until the
    // next call on the decoder; `fmt` is read as the u32 it is in C, and the other fields
    // read here are plain integers and pointers.
    let (fmt, width, height, planes, strides) = unsafe {
        (
            ptr::addr_of!((*image).fmt).cast::<u32>().read(),
            (*image).d_w,
            (*image).d_h,
            (*image).planes,
            (*image).stride,
        )
    };
    if fmt != I420 {
        return Err(VideoCodecError::Codec("vpx_codec_get_frame", fmt as i32));
    }
    super::picture::check_size(width, height)?;
    let rows = [height as usize, height as usize / 2, height as usize / 2];
    let row_len = [width as usize, width as usize / 2, width as usize / 2];
    let mut slices: [(&[u8], usize); 3] = [(&[], 0); 3];
    for p in 0..3 {
        let stride = usize::try_from(strides[p]).map_err(|_| VideoCodecError::Malformed)?;
        if planes[p].is_null() || stride < row_len[p] {
            return Err(VideoCodecError::Malformed);
        }
        let len = stride * (rows[p] - 1) + row_len[p];
        // SAFETY: libvpx's image holds `rows` rows of `stride` bytes for this plane from
        // `planes[p]` (stride >= the row length, checked above), so the `len` bytes up to
        // the end of the last row are inside its frame buffer, which stays valid and
        // unwritten until the next call on the decoder; we copy before that.
        slices[p] = (
            unsafe { std::slice::from_raw_parts(planes[p].cast_const(), len) },
            stride,
        );
    }
    out.copy_from_planes(width, height, slices)
}

impl Drop for Vp8Decoder {
    fn drop(&mut self) {
        // SAFETY: the context was initialised in `new` (only then is a Vp8Decoder built) and
        // is destroyed here once.
        unsafe {
            ffi::vpx_codec_destroy(&mut *self.ctx);
        }
    }
}

impl VideoDecoder for Vp8Decoder {
    fn decode(&mut self, data: &[u8], out: &mut Picture) -> Result<bool, VideoCodecError> {
        Vp8Decoder::decode(self, data, out)
    }
}
