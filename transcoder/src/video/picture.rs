//! Raw pictures, and what the VP8 and H.264 codec wrappers share.
//!
//! # Pictures
//!
//! A [`Picture`] is an owned 8-bit I420 frame: a Y plane at full size, then U and V at half
//! width and half height (4:2:0), each plane a row after another. It is the one format both
//! libvpx's VP8 and OpenH264 take in and give out for real-time video, so nothing converts
//! between codecs but the bitstreams. Samples are in studio range (Y 16–235), as both
//! encoders assume; nothing here converts colour.
//!
//! Width and height are even and non-zero, and at most [`MAX_DIMENSION`]: 4:2:0 chroma of
//! an odd size needs a rounding rule each codec states differently, and a zero-size picture
//! has nothing to code. An odd, zero or oversized size is [`VideoCodecError::InvalidSize`]
//! wherever it appears (a constructor, a resize, an encoder configuration, or a decoded
//! stream that declares one), never a panic.
//!
//! Rows of a plane are `stride` bytes apart. The pictures made here are packed (the stride
//! equals the plane's width), but readers should go by [`Picture::y_stride`] and
//! [`Picture::uv_stride`], which stay the contract if padding is ever added.
//!
//! Decoders write into a picture the caller owns ([`Picture::resize`] keeps the planes'
//! allocations), so a steady stream allocates nothing after its first frame.
//!
//! # Scaling
//!
//! A receiver's H.264 level or its `imageattr` can allow less than the sender sends, so an
//! encoder accepts pictures of any size and scales them to its configured size with a
//! [`Scaler`]: separable, with a tent (triangle) kernel whose width follows the ratio.
//! Enlarging, that is bilinear interpolation; shrinking by `k`, each output sample averages
//! about `2k` source samples per axis with linear weights, which keeps aliasing down without
//! the cost of a windowed sinc. Samples are taken as centred (a sample covers a square, as in
//! JPEG); the MPEG-2 chroma siting (left) shifts chroma by at most a quarter of a chroma
//! sample at a 2:1 ratio, invisible at video bitrates. The aspect ratio is the caller's
//! business: a picture is stretched to the size asked for.
//!
//! # Quality
//!
//! [`psnr_y`] and [`psnr`] compare a decoded picture with its source, for tests and
//! benchmarks.
//!
//! # Shared by the codecs
//!
//! [`VideoCodecError`], [`EncoderConfig`], [`EncodedFrame`], and the [`VideoEncoder`] and
//! [`VideoDecoder`] traits that [`super::vpx`] and [`super::openh264`] implement.

use std::fmt;

/// The largest width or height accepted: room for 4K (3840x2160, OpenH264's limit), beyond
/// any real-time call. It bounds what a peer's keyframe header can make a decoder allocate
/// (VP8 allows 16383x16383: over 1 GB of frame buffers in libvpx).
pub const MAX_DIMENSION: u32 = 4096;

/// Why a video codec call failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum VideoCodecError {
    /// A picture size that is odd, zero or above [`MAX_DIMENSION`], given by the caller or
    /// declared by a decoded stream.
    #[error(
        "invalid picture size {width}x{height}: must be even, non-zero and at most {MAX_DIMENSION}"
    )]
    InvalidSize {
        /// The width asked for.
        width: u32,
        /// The height asked for.
        height: u32,
    },
    /// Two pictures compared by [`psnr`] differ in size.
    #[error("pictures differ in size")]
    SizeMismatch,
    /// An [`EncoderConfig`] field outside what the codec accepts; the field is named.
    #[error("invalid encoder configuration: {0}")]
    InvalidConfig(&'static str),
    /// The data is not a decodable frame of this codec: empty, truncated, corrupt, of another
    /// codec, or predicted from a frame the decoder does not have (a delta frame before the
    /// first keyframe or after a loss). Decoding resumes with the next keyframe.
    #[error("malformed or undecodable frame")]
    Malformed,
    /// Any other codec failure: the library function that reported it and its return code.
    #[error("{0} failed with code {1}")]
    Codec(&'static str, i32),
}

/// Checks a picture size against the rules in the module docs.
pub(crate) fn check_size(width: u32, height: u32) -> Result<(), VideoCodecError> {
    let ok = |d: u32| d != 0 && d & 1 == 0 && d <= MAX_DIMENSION;
    if ok(width) && ok(height) {
        Ok(())
    } else {
        Err(VideoCodecError::InvalidSize { width, height })
    }
}

/// Studio-range black: Y at 16, chroma at the neutral 128.
const BLACK_Y: u8 = 16;
const NEUTRAL_UV: u8 = 128;

/// An owned 8-bit I420 picture with even, non-zero dimensions (see the module docs).
#[derive(Clone, PartialEq, Eq)]
pub struct Picture {
    width: u32,
    height: u32,
    y: Vec<u8>,
    u: Vec<u8>,
    v: Vec<u8>,
}

impl fmt::Debug for Picture {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Picture")
            .field("width", &self.width)
            .field("height", &self.height)
            .finish_non_exhaustive()
    }
}

impl Picture {
    /// A black picture, so a caller can fill it, or hand it to a decoder as the output
    /// buffer it will reuse.
    pub fn new(width: u32, height: u32) -> Result<Self, VideoCodecError> {
        let mut picture = Picture {
            width: 0,
            height: 0,
            y: Vec::new(),
            u: Vec::new(),
            v: Vec::new(),
        };
        picture.resize(width, height)?;
        Ok(picture)
    }

    /// Changes the size, keeping the planes' allocations, so decoders can follow a stream's
    /// size changes without allocating for every frame. At the same size it does nothing;
    /// at a new size the picture turns black. On error the picture is unchanged.
    pub fn resize(&mut self, width: u32, height: u32) -> Result<(), VideoCodecError> {
        check_size(width, height)?;
        if (width, height) == (self.width, self.height) {
            return Ok(());
        }
        self.width = width;
        self.height = height;
        let luma = width as usize * height as usize;
        for (plane, len, value) in [
            (&mut self.y, luma, BLACK_Y),
            (&mut self.u, luma / 4, NEUTRAL_UV),
            (&mut self.v, luma / 4, NEUTRAL_UV),
        ] {
            plane.clear();
            plane.resize(len, value);
        }
        Ok(())
    }

    /// Width in luma samples.
    pub fn width(&self) -> u32 {
        self.width
    }

    /// Height in luma rows.
    pub fn height(&self) -> u32 {
        self.height
    }

    /// Width of the U and V planes (half the width).
    pub fn chroma_width(&self) -> u32 {
        self.width / 2
    }

    /// Height of the U and V planes (half the height).
    pub fn chroma_height(&self) -> u32 {
        self.height / 2
    }

    /// Bytes from one Y row to the next; index rows by it, not by the width.
    pub fn y_stride(&self) -> usize {
        self.width as usize
    }

    /// Bytes from one U (or V) row to the next; index rows by it, not by the width.
    pub fn uv_stride(&self) -> usize {
        self.width as usize / 2
    }

    /// The Y (luma) plane, [`Self::height`] rows of [`Self::y_stride`] bytes.
    pub fn y(&self) -> &[u8] {
        &self.y
    }

    /// The U (Cb) plane, [`Self::chroma_height`] rows of [`Self::uv_stride`] bytes.
    pub fn u(&self) -> &[u8] {
        &self.u
    }

    /// The V (Cr) plane, laid out as [`Self::u`].
    pub fn v(&self) -> &[u8] {
        &self.v
    }

    /// The Y plane, to write into.
    pub fn y_mut(&mut self) -> &mut [u8] {
        &mut self.y
    }

    /// The U plane, to write into.
    pub fn u_mut(&mut self) -> &mut [u8] {
        &mut self.u
    }

    /// The V plane, to write into.
    pub fn v_mut(&mut self) -> &mut [u8] {
        &mut self.v
    }

    /// All three planes at once (Y, U, V), so one loop can fill a picture.
    pub fn planes_mut(&mut self) -> (&mut [u8], &mut [u8], &mut [u8]) {
        (&mut self.y, &mut self.u, &mut self.v)
    }

    /// Copies a decoder's output into this picture, resizing it first. Each plane comes as a
    /// slice starting at its first sample and its stride in bytes; rows shorter than the
    /// plane or a slice too short for its rows are an error (the decoder lied), never a
    /// panic.
    pub(crate) fn copy_from_planes(
        &mut self,
        width: u32,
        height: u32,
        planes: [(&[u8], usize); 3],
    ) -> Result<(), VideoCodecError> {
        self.resize(width, height)?;
        let (cw, ch) = (self.chroma_width() as usize, self.chroma_height() as usize);
        let (w, h) = (width as usize, height as usize);
        let targets = [
            (&mut self.y, w, h),
            (&mut self.u, cw, ch),
            (&mut self.v, cw, ch),
        ];
        for ((src, stride), (dst, row_len, rows)) in planes.into_iter().zip(targets) {
            if stride < row_len {
                return Err(VideoCodecError::Malformed);
            }
            for (row, out) in dst.chunks_exact_mut(row_len).take(rows).enumerate() {
                let start = row * stride;
                let line = src
                    .get(start..start + row_len)
                    .ok_or(VideoCodecError::Malformed)?;
                out.copy_from_slice(line);
            }
        }
        Ok(())
    }
}

// ---- PSNR -----------------------------------------------------------------------------------

/// Sum of squared differences over one plane's `rows` rows of `row_len` samples.
fn plane_sse(a: &[u8], b: &[u8], row_len: usize, stride: usize, rows: usize) -> u64 {
    a.chunks(stride)
        .zip(b.chunks(stride))
        .take(rows)
        .flat_map(|(ra, rb)| ra.iter().zip(rb).take(row_len))
        .map(|(&x, &y)| {
            let d = i64::from(x) - i64::from(y);
            (d * d) as u64
        })
        .sum()
}

fn to_psnr(sse: u64, samples: u64) -> f64 {
    if sse == 0 {
        return f64::INFINITY;
    }
    let mse = sse as f64 / samples as f64;
    10.0 * (255.0 * 255.0 / mse).log10()
}

fn check_same_size(a: &Picture, b: &Picture) -> Result<(), VideoCodecError> {
    if (a.width, a.height) == (b.width, b.height) {
        Ok(())
    } else {
        Err(VideoCodecError::SizeMismatch)
    }
}

/// Peak signal-to-noise ratio of `b` against `a` over the **Y plane only**, in dB:
/// `10·log10(255² / MSE)`; infinite for identical planes. Luma PSNR is what codec papers
/// and encoder logs quote, so figures compare with theirs.
pub fn psnr_y(a: &Picture, b: &Picture) -> Result<f64, VideoCodecError> {
    check_same_size(a, b)?;
    let (w, h) = (a.width as usize, a.height as usize);
    Ok(to_psnr(
        plane_sse(&a.y, &b.y, w, a.y_stride(), h),
        (w * h) as u64,
    ))
}

/// Peak signal-to-noise ratio of `b` against `a` over **all three planes**, in dB: the
/// squared errors of Y, U and V pooled over every sample (so Y weighs 4:1:1 against each
/// chroma plane, as ffmpeg's `psnr` filter averages). Catches colour damage that
/// [`psnr_y`] cannot see.
pub fn psnr(a: &Picture, b: &Picture) -> Result<f64, VideoCodecError> {
    check_same_size(a, b)?;
    let (w, h) = (a.width as usize, a.height as usize);
    let (cw, ch) = (w / 2, h / 2);
    let sse = plane_sse(&a.y, &b.y, w, a.y_stride(), h)
        + plane_sse(&a.u, &b.u, cw, a.uv_stride(), ch)
        + plane_sse(&a.v, &b.v, cw, a.uv_stride(), ch);
    Ok(to_psnr(sse, (w * h + 2 * cw * ch) as u64))
}

// ---- Scaling --------------------------------------------------------------------------------

/// Fixed-point weights: 14 fractional bits.
const WEIGHT_BITS: u32 = 14;
const WEIGHT_ONE: u32 = 1 << WEIGHT_BITS;
/// The horizontal pass keeps 8 fractional bits of its result for the vertical pass.
const MID_SHIFT: u32 = WEIGHT_BITS - 8;

/// The taps for one axis: output `i` reads `taps` consecutive source samples from
/// `starts[i]`, weighted by `weights[i * taps..][..taps]`.
#[derive(Clone, Debug, Default, PartialEq)]
struct AxisFilter {
    src_len: usize,
    dst_len: usize,
    taps: usize,
    starts: Vec<usize>,
    weights: Vec<u32>,
}

impl AxisFilter {
    /// Tent-kernel taps from `src_len` samples to `dst_len` (both non-zero). Invariant, which
    /// the passes index by: `starts[i] + taps <= src_len` for every `i`, and each output's
    /// weights sum to exactly [`WEIGHT_ONE`].
    fn new(src_len: usize, dst_len: usize) -> Self {
        let ratio = src_len as f64 / dst_len as f64;
        // Kernel half-width in source samples: 1 enlarging (bilinear), the ratio shrinking.
        let radius = ratio.max(1.0);
        // Samples strictly inside (centre - radius, centre + radius): at most 2·radius + 1.
        let taps = ((2.0 * radius).ceil() as usize + 1).min(src_len);
        let mut starts = Vec::with_capacity(dst_len);
        let mut weights = vec![0u32; dst_len * taps];
        let mut raw = vec![0f64; taps];
        for (i, out) in weights.chunks_exact_mut(taps).enumerate() {
            // Sample centres: output i sits at source coordinate (i + ½)·ratio − ½.
            let centre = (i as f64 + 0.5) * ratio - 0.5;
            let lo = (centre - radius).floor() as i64 + 1;
            let hi = (centre + radius).ceil() as i64 - 1;
            let first = lo.clamp(0, src_len as i64 - 1) as usize;
            let start = first.min(src_len - taps);
            raw.iter_mut().for_each(|w| *w = 0.0);
            for s in lo..=hi {
                let weight = 1.0 - ((s as f64 - centre).abs() / radius);
                if weight <= 0.0 {
                    continue;
                }
                // Beyond an edge the edge sample repeats.
                let clamped = s.clamp(0, src_len as i64 - 1) as usize;
                if let Some(w) = clamped.checked_sub(start).and_then(|k| raw.get_mut(k)) {
                    *w += weight;
                }
            }
            let total: f64 = raw.iter().sum();
            let mut sum = 0u32;
            for (w, r) in out.iter_mut().zip(&raw) {
                *w = (r / total * f64::from(WEIGHT_ONE)).round() as u32;
                sum += *w;
            }
            // Rounding may miss the unit by a little: the largest tap absorbs it, so flat
            // areas stay exactly flat.
            if let Some(max) = out.iter_mut().max_by_key(|w| **w) {
                *max = (*max + WEIGHT_ONE).saturating_sub(sum);
            }
            starts.push(start);
        }
        AxisFilter {
            src_len,
            dst_len,
            taps,
            starts,
            weights,
        }
    }

    fn fits(&self, src_len: usize, dst_len: usize) -> bool {
        self.src_len == src_len && self.dst_len == dst_len
    }
}

/// The filters for one plane size pair.
#[derive(Clone, Debug, Default)]
struct PlaneScaler {
    horizontal: AxisFilter,
    vertical: AxisFilter,
}

impl PlaneScaler {
    /// Scales one plane (packed: stride = width) from `sw`x`sh` to `dw`x`dh`. `mid` takes
    /// the horizontal pass's output (`sh` rows of `dw` samples, 8.8 fixed point), `acc` one
    /// output row's sums in the vertical pass.
    fn scale(
        &mut self,
        src: &[u8],
        (sw, sh): (usize, usize),
        dst: &mut [u8],
        (dw, dh): (usize, usize),
        (mid, acc): (&mut Vec<u16>, &mut Vec<u32>),
    ) {
        if !self.horizontal.fits(sw, dw) {
            self.horizontal = AxisFilter::new(sw, dw);
        }
        if !self.vertical.fits(sh, dh) {
            self.vertical = AxisFilter::new(sh, dh);
        }
        mid.clear();
        mid.resize(sh * dw, 0);
        let h = &self.horizontal;
        for (src_row, mid_row) in src.chunks_exact(sw).zip(mid.chunks_exact_mut(dw)) {
            for ((m, &start), weights) in mid_row
                .iter_mut()
                .zip(&h.starts)
                .zip(h.weights.chunks_exact(h.taps))
            {
                // AxisFilter invariant: start + taps <= sw.
                let samples = &src_row[start..start + h.taps];
                let acc: u32 = samples
                    .iter()
                    .zip(weights)
                    .map(|(&s, &w)| u32::from(s) * w)
                    .sum();
                // At most 255·2^14 >> 6 = 65280: fits u16.
                *m = ((acc + (1 << (MID_SHIFT - 1))) >> MID_SHIFT) as u16;
            }
        }
        let v = &self.vertical;
        for ((dst_row, &start), weights) in dst
            .chunks_exact_mut(dw)
            .zip(&v.starts)
            .zip(v.weights.chunks_exact(v.taps))
        {
            acc.clear();
            acc.resize(dw, 0);
            for (k, &w) in weights.iter().enumerate() {
                // AxisFilter invariant: start + taps <= sh.
                let row = &mid[(start + k) * dw..(start + k + 1) * dw];
                for (a, &m) in acc.iter_mut().zip(row) {
                    *a += u32::from(m) * w;
                }
            }
            let shift = WEIGHT_BITS + 8;
            for (d, &a) in dst_row.iter_mut().zip(acc.iter()) {
                // At most 65280·2^14 < 2^32; rounding cannot pass 255 since weights sum to one.
                *d = ((a + (1 << (shift - 1))) >> shift).min(255) as u8;
            }
        }
    }
}

/// Scales pictures to another size, keeping its filters and scratch between calls so an
/// encoder scaling every frame builds them once (see the module docs for the filter).
#[derive(Clone, Debug, Default)]
pub struct Scaler {
    luma: PlaneScaler,
    chroma: PlaneScaler,
    mid: Vec<u16>,
    acc: Vec<u32>,
}

impl Scaler {
    /// A scaler with no filters built yet; the first call for a size pair builds them.
    pub fn new() -> Self {
        Scaler::default()
    }

    /// Scales `src` into `dst` at `dst`'s current size. Both are valid pictures, so this
    /// cannot fail: a size the caller wants is checked when `dst` is made or resized.
    pub fn scale(&mut self, src: &Picture, dst: &mut Picture) {
        if (src.width, src.height) == (dst.width, dst.height) {
            dst.y.copy_from_slice(&src.y);
            dst.u.copy_from_slice(&src.u);
            dst.v.copy_from_slice(&src.v);
            return;
        }
        let s = (src.width as usize, src.height as usize);
        let d = (dst.width as usize, dst.height as usize);
        let (sc, dc) = ((s.0 / 2, s.1 / 2), (d.0 / 2, d.1 / 2));
        self.luma
            .scale(&src.y, s, &mut dst.y, d, (&mut self.mid, &mut self.acc));
        self.chroma
            .scale(&src.u, sc, &mut dst.u, dc, (&mut self.mid, &mut self.acc));
        self.chroma
            .scale(&src.v, sc, &mut dst.v, dc, (&mut self.mid, &mut self.acc));
    }
}

/// Scales `src` into `dst` at `dst`'s size, for a one-off; a stream should keep a
/// [`Scaler`].
pub fn scale_into(src: &Picture, dst: &mut Picture) {
    Scaler::new().scale(src, dst);
}

// ---- Shared by the codecs -------------------------------------------------------------------

/// Encoder settings shared by VP8 and H.264. There is no `Default` for the size and
/// bitrate on purpose: they come from the negotiated codec (SDP `imageattr`, H.264 level,
/// `b=AS`, REMB or TMMBR), and a guess would hide a missing negotiation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EncoderConfig {
    /// Width of the coded pictures; even, non-zero. Pictures of another size are scaled.
    pub width: u32,
    /// Height of the coded pictures; even, non-zero.
    pub height: u32,
    /// Target bitrate in bits/s (constant-bitrate rate control), changeable at run time with
    /// `set_bitrate` as congestion control moves.
    pub bitrate_bps: u32,
    /// The frame rate the rate control plans for (frames/s, 1..=120): it sets the bit budget
    /// per frame. Timestamps decide when frames are shown.
    pub max_fps: u32,
    /// A keyframe at least every this many frames; 0 for keyframes only when asked (the
    /// receiver sends PLI or FIR, as browsers and GSMA IR.94 terminals do).
    pub keyframe_interval: u32,
    /// H.264 only: the largest NAL unit the encoder may emit, in bytes without the start
    /// code, for RFC 6184 packetization-mode 0 where every NAL unit must fit one RTP
    /// packet. `None`: one slice per picture (mode 1 fragments it). VP8 ignores it: RFC 7741
    /// can split a frame anywhere.
    pub max_nal_bytes: Option<usize>,
}

impl EncoderConfig {
    /// Checks the fields both codecs share; codecs add their own limits.
    pub(crate) fn validate(&self) -> Result<(), VideoCodecError> {
        check_size(self.width, self.height)?;
        if self.bitrate_bps < 1000 || self.bitrate_bps > i32::MAX as u32 {
            return Err(VideoCodecError::InvalidConfig("bitrate_bps"));
        }
        if !(1..=120).contains(&self.max_fps) {
            return Err(VideoCodecError::InvalidConfig("max_fps"));
        }
        Ok(())
    }
}

/// One encoded frame, borrowed from the encoder's buffer until its next call, so encoding
/// a stream allocates nothing per frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EncodedFrame<'a> {
    /// A VP8 frame as RFC 7741 packetizes it, or an H.264 access unit in Annex B form
    /// (4-byte start codes), as [`super::h264::H264Packetizer`] takes it.
    pub data: &'a [u8],
    /// A decoder can start here: a VP8 key frame, or an access unit with an IDR slice (and,
    /// from our encoder, SPS and PPS before it). Tells the depacketizer's peer it may stop
    /// asking for a keyframe.
    pub keyframe: bool,
}

/// What a transcoding channel needs of an encoder, so it can hold either codec as the SDP
/// codec plan chose at run time.
pub trait VideoEncoder {
    /// Encodes `picture` (scaled first if its size differs from the configured one) shown at
    /// `timestamp_90k` (the RTP timestamp, 90 kHz). `force_keyframe` makes this frame a
    /// keyframe: set it when the receiver asked (PLI, FIR). `Ok(None)` when the rate
    /// control dropped the frame to stay within the bitrate.
    fn encode(
        &mut self,
        picture: &Picture,
        timestamp_90k: u32,
        force_keyframe: bool,
    ) -> Result<Option<EncodedFrame<'_>>, VideoCodecError>;

    /// Changes the target bitrate (bits/s), as congestion control asks. VP8 changes it in
    /// place; H.264 restarts with a keyframe (see [`super::openh264`] for why).
    fn set_bitrate(&mut self, bps: u32) -> Result<(), VideoCodecError>;
}

/// What a transcoding channel needs of a decoder.
pub trait VideoDecoder {
    /// Decodes one whole frame (VP8) or access unit (H.264, Annex B) into `out`, resizing it
    /// to the stream's size. `Ok(true)` when a picture was written, `Ok(false)` when the data
    /// produced none (parameter sets alone, an invisible frame). An error leaves `out`
    /// unspecified; decoding resumes with the next keyframe.
    fn decode(&mut self, data: &[u8], out: &mut Picture) -> Result<bool, VideoCodecError>;
}

/// Extends 32-bit 90 kHz RTP timestamps into a strictly increasing 64-bit count, so a
/// codec's rate control sees time move forward across wrap-around (every 13 hours) and
/// through repeated or reordered timestamps, which it would take as a frame rate jump.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct RtpClock {
    last: Option<(u32, i64)>,
}

impl RtpClock {
    /// The extended tick count for `timestamp`: the first is taken as is, each later one
    /// moves by its signed 32-bit distance from the previous, at least one tick forward.
    pub(crate) fn extend(&mut self, timestamp: u32) -> i64 {
        let ticks = match self.last {
            None => i64::from(timestamp),
            Some((last_ts, last_ticks)) => {
                let delta = i64::from(timestamp.wrapping_sub(last_ts) as i32);
                (last_ticks + delta).max(last_ticks + 1)
            }
        };
        self.last = Some((timestamp, ticks));
        ticks
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_are_checked() {
        assert!(Picture::new(640, 480).is_ok());
        for (w, h) in [(641, 480), (640, 481), (0, 480), (640, 0), (4098, 2)] {
            assert_eq!(
                Picture::new(w, h).unwrap_err(),
                VideoCodecError::InvalidSize {
                    width: w,
                    height: h
                }
            );
        }
        let mut p = Picture::new(4, 2).unwrap();
        assert!(p.resize(5, 2).is_err());
        assert_eq!((p.width(), p.height()), (4, 2));
    }

    #[test]
    fn new_pictures_are_black_and_packed() {
        let p = Picture::new(4, 2).unwrap();
        assert_eq!(p.y(), [16; 8]);
        assert_eq!(p.u(), [128; 2]);
        assert_eq!(p.v(), [128; 2]);
        assert_eq!((p.y_stride(), p.uv_stride()), (4, 2));
    }

    #[test]
    fn resize_keeps_the_allocation() {
        let mut p = Picture::new(64, 64).unwrap();
        let capacity = p.y.capacity();
        p.resize(32, 32).unwrap();
        p.resize(64, 64).unwrap();
        assert_eq!(p.y.capacity(), capacity);
    }

    #[test]
    fn filters_keep_their_invariant() {
        for (s, d) in [
            (640, 360),
            (360, 640),
            (7, 3),
            (3, 7),
            (1, 5),
            (5, 1),
            (1280, 2),
        ] {
            let f = AxisFilter::new(s, d);
            assert_eq!(f.starts.len(), d);
            for (start, w) in f.starts.iter().zip(f.weights.chunks_exact(f.taps)) {
                assert!(start + f.taps <= s, "{s}->{d}");
                assert_eq!(w.iter().sum::<u32>(), WEIGHT_ONE, "{s}->{d}");
            }
        }
    }

    #[test]
    fn flat_stays_flat() {
        let mut src = Picture::new(30, 20).unwrap();
        src.y_mut().fill(200);
        let mut dst = Picture::new(12, 8).unwrap();
        scale_into(&src, &mut dst);
        assert!(dst.y().iter().all(|&v| v == 200));
        assert!(dst.u().iter().all(|&v| v == 128));
    }

    #[test]
    fn clock_moves_forward() {
        let mut c = RtpClock::default();
        assert_eq!(c.extend(u32::MAX - 10), i64::from(u32::MAX - 10));
        assert_eq!(c.extend(5), i64::from(u32::MAX) + 6);
        assert_eq!(c.extend(5), i64::from(u32::MAX) + 7);
        assert_eq!(c.extend(0), i64::from(u32::MAX) + 8);
    }
}
