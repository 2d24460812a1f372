//! What a receiver can take: picture size, frame rate and bitrate from its SDP, and the
//! largest encoding of a source that fits.
//!
//! A transcoder's encoder must never send more than the far side declared. For H.264 that is
//! the level of `profile-level-id` (Table A-1 of ITU-T H.264) raised by the optional
//! `max-fs`, `max-mbps` and `max-br` parameters (RFC 6184 §8.1); for VP8 the optional
//! `max-fs` and `max-fr` (RFC 7741 §6.1). A browser's 640×480 camera toward an IR.94 core at
//! level 1.2 (42e00c, CIF at 15 frames/s) must be scaled down and slowed down; the same camera
//! toward level 3.1 (1280×720 at 30) passes at its own size.
//!
//! Sizes are counted in 16×16 macroblocks as the levels count them: a frame of `w`×`h`
//! pixels is `ceil(w/16) * ceil(h/16)` macroblocks (A.3.1 a: the frame size bound, and
//! h) / i): neither dimension above `sqrt(8 * MaxFS)` macroblocks).

use std::fmt;

/// Limits of one receiver, in the units the standards use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VideoLimits {
    /// Largest frame, in macroblocks; `None` when the SDP sets no bound (VP8 without max-fs).
    pub max_fs: Option<u32>,
    /// Largest macroblock rate (macroblocks per second), H.264 only.
    pub max_mbps: Option<u32>,
    /// Largest frame rate, VP8's `max-fr`.
    pub max_fr: Option<u32>,
    /// Largest bitrate of the video coding layer, bits per second.
    pub max_bitrate: Option<u32>,
}

/// Why an fmtp line gives no limits.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LevelError {
    /// `profile-level-id` is not six hex digits.
    BadProfileLevelId(String),
    /// `level_idc` is not in Table A-1.
    UnknownLevel(u8),
    /// A numeric parameter that does not parse or is zero.
    BadParameter(&'static str),
}

impl fmt::Display for LevelError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LevelError::BadProfileLevelId(v) => write!(f, "profile-level-id {v:?} is not six hex digits"),
            LevelError::UnknownLevel(l) => write!(f, "H.264 level_idc {l} is not in Table A-1"),
            LevelError::BadParameter(k) => write!(f, "fmtp {k} is not a positive number"),
        }
    }
}

impl std::error::Error for LevelError {}

/// ITU-T H.264 Table A-1: level_idc, MaxMBPS, MaxFS, MaxBR (1000 bit/s for the Baseline
/// profile's VCL, cpbBrVclFactor 1000). Level 1b is handled apart (it shares level_idc 11).
const LEVELS: [(u8, u32, u32, u32); 16] = [
    (10, 1_485, 99, 64),
    (11, 3_000, 396, 192),
    (12, 6_000, 396, 384),
    (13, 11_880, 396, 768),
    (20, 11_880, 396, 2_000),
    (21, 19_800, 792, 4_000),
    (22, 20_250, 1_620, 4_000),
    (30, 40_500, 1_620, 10_000),
    (31, 108_000, 3_600, 14_000),
    (32, 216_000, 5_120, 20_000),
    (40, 245_760, 8_192, 20_000),
    (41, 245_760, 8_192, 50_000),
    (42, 522_240, 8_704, 50_000),
    (50, 589_824, 22_080, 135_000),
    (51, 983_040, 36_864, 240_000),
    (52, 2_073_600, 36_864, 240_000),
];
const LEVEL_1B: (u32, u32, u32) = (1_485, 99, 128);

/// RFC 6184 §8.1: without profile-level-id the default is Baseline level 1.0.
const DEFAULT_PROFILE_LEVEL_ID: &str = "42000a";

impl VideoLimits {
    /// No bound at all (a VP8 receiver that said nothing).
    pub const UNBOUNDED: VideoLimits = VideoLimits { max_fs: None, max_mbps: None, max_fr: None, max_bitrate: None };

    /// The limits an H.264 receiver declared in its fmtp (`None`: no fmtp line).
    pub fn h264(fmtp: Option<&str>) -> Result<VideoLimits, LevelError> {
        let plid = param(fmtp, "profile-level-id").unwrap_or(DEFAULT_PROFILE_LEVEL_ID);
        let bytes = hex3(plid).ok_or_else(|| LevelError::BadProfileLevelId(plid.to_owned()))?;
        let [profile_idc, constraints, level_idc] = bytes;
        // Level 1b: level_idc 11 with constraint_set3 in the Baseline, Main and Extended
        // profiles (A.3.1, 7.4.2.1.1), or level_idc 9 in the others.
        let one_b = (level_idc == 11 && matches!(profile_idc, 66 | 77 | 88) && constraints & 0x10 != 0) || level_idc == 9;
        let (mbps, fs, br) = if one_b {
            LEVEL_1B
        } else {
            let l = LEVELS.iter().find(|l| l.0 == level_idc).ok_or(LevelError::UnknownLevel(level_idc))?;
            (l.1, l.2, l.3)
        };
        // max-fs and max-mbps only raise what the level allows (RFC 6184 §8.1); max-br is in
        // units of 1000 bit/s for the VCL (cpbBrVclFactor), like MaxBR.
        let max_fs = number(fmtp, "max-fs")?.map_or(fs, |v| v.max(fs));
        let max_mbps = number(fmtp, "max-mbps")?.map_or(mbps, |v| v.max(mbps));
        let max_br = number(fmtp, "max-br")?.map_or(br, |v| v.max(br));
        Ok(VideoLimits {
            max_fs: Some(max_fs),
            max_mbps: Some(max_mbps),
            max_fr: None,
            max_bitrate: Some(max_br.saturating_mul(1000)),
        })
    }

    /// The limits a VP8 receiver declared (RFC 7741 §6.1: max-fr and max-fs, both optional).
    pub fn vp8(fmtp: Option<&str>) -> Result<VideoLimits, LevelError> {
        Ok(VideoLimits {
            max_fs: number(fmtp, "max-fs")?,
            max_mbps: None,
            max_fr: number(fmtp, "max-fr")?,
            max_bitrate: None,
        })
    }

    /// The largest encoding of a `width`×`height` source at `fps` that fits: the same aspect
    /// ratio (to within rounding to even pixels), never larger than the source, and a frame
    /// rate no higher than the source's or the limits'. `None` only for a zero-sized source.
    pub fn fit(&self, width: u32, height: u32, fps: u32) -> Option<Fit> {
        if width < 2 || height < 2 || fps == 0 {
            return None;
        }
        let (mut w, mut h) = (even(width), even(height));
        if let Some(max_fs) = self.max_fs {
            // The side bound of A.3.1 h) and i): sqrt(8 * MaxFS) macroblocks.
            let side = ((8.0 * f64::from(max_fs)).sqrt().floor() as u32).max(1);
            let fits = |w: u32, h: u32| {
                let (mw, mh) = (w.div_ceil(16), h.div_ceil(16));
                mw * mh <= max_fs && mw <= side && mh <= side
            };
            if !fits(w, h) {
                // Start from the continuous estimate and step down two pixels of width at a
                // time: a few dozen steps at most.
                let scale = (f64::from(max_fs) * 256.0 / (f64::from(w) * f64::from(h))).sqrt().min(1.0);
                w = even((f64::from(w) * scale) as u32 + 2).min(w);
                loop {
                    h = even((u64::from(w) * u64::from(height) / u64::from(width)) as u32);
                    if w < 2 || h < 2 {
                        return Some(Fit { width: 16, height: 16, fps: 1 }.capped(self));
                    }
                    if fits(w, h) {
                        break;
                    }
                    w -= 2;
                }
            }
        }
        Some(Fit { width: w, height: h, fps }.capped(self))
    }
}

/// An encoding that fits a receiver's limits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Fit {
    /// Even width in pixels.
    pub width: u32,
    /// Even height in pixels.
    pub height: u32,
    /// Frames per second, at least 1.
    pub fps: u32,
}

impl Fit {
    /// Lowers the frame rate to what the macroblock rate and max-fr allow (at least 1).
    fn capped(mut self, limits: &VideoLimits) -> Fit {
        let mbs = self.width.div_ceil(16) * self.height.div_ceil(16);
        if let Some(mbps) = limits.max_mbps {
            self.fps = self.fps.min(mbps / mbs.max(1));
        }
        if let Some(fr) = limits.max_fr {
            self.fps = self.fps.min(fr);
        }
        self.fps = self.fps.max(1);
        self
    }
}

fn even(v: u32) -> u32 {
    v & !1
}

fn param<'a>(fmtp: Option<&'a str>, key: &str) -> Option<&'a str> {
    fmtp?.split(';').find_map(|kv| {
        let (k, v) = kv.split_once('=')?;
        k.trim().eq_ignore_ascii_case(key).then_some(v.trim())
    })
}

fn number(fmtp: Option<&str>, key: &'static str) -> Result<Option<u32>, LevelError> {
    match param(fmtp, key) {
        None => Ok(None),
        Some(v) => v.parse().ok().filter(|&n| n > 0).map(Some).ok_or(LevelError::BadParameter(key)),
    }
}

fn hex3(s: &str) -> Option<[u8; 3]> {
    if s.len() != 6 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let b = |i: usize| u8::from_str_radix(&s[i..i + 2], 16).ok();
    Some([b(0)?, b(2)?, b(4)?])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn h264_levels_come_from_table_a1_and_sdp_parameters_only_raise_them() {
        let l31 = VideoLimits::h264(Some("level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f")).unwrap();
        assert_eq!((l31.max_fs, l31.max_mbps, l31.max_bitrate), (Some(3600), Some(108_000), Some(14_000_000)));
        let l12 = VideoLimits::h264(Some("profile-level-id=42E00C")).unwrap();
        assert_eq!((l12.max_fs, l12.max_mbps), (Some(396), Some(6000)));
        // constraint_set3 with level_idc 11 in Baseline is level 1b, not 1.1.
        assert_eq!(VideoLimits::h264(Some("profile-level-id=42f00b")).unwrap().max_bitrate, Some(128_000));
        assert_eq!(VideoLimits::h264(Some("profile-level-id=42e00b")).unwrap().max_bitrate, Some(192_000));
        // No profile-level-id: Baseline level 1.0 (RFC 6184 §8.1).
        assert_eq!(VideoLimits::h264(None).unwrap().max_fs, Some(99));
        let raised = VideoLimits::h264(Some("profile-level-id=42e00c;max-fs=1200;max-mbps=36000;max-br=1000")).unwrap();
        assert_eq!((raised.max_fs, raised.max_mbps, raised.max_bitrate), (Some(1200), Some(36000), Some(1_000_000)));
        let lowered = VideoLimits::h264(Some("profile-level-id=42e01f;max-fs=99")).unwrap();
        assert_eq!(lowered.max_fs, Some(3600), "max-fs never lowers the level");
        assert_eq!(VideoLimits::h264(Some("profile-level-id=42e0")), Err(LevelError::BadProfileLevelId("42e0".into())));
        assert_eq!(VideoLimits::h264(Some("profile-level-id=42e017")), Err(LevelError::UnknownLevel(0x17)));
        assert_eq!(VideoLimits::h264(Some("profile-level-id=42e01f;max-fs=x")), Err(LevelError::BadParameter("max-fs")));
    }

    #[test]
    fn a_source_is_kept_when_it_fits_and_scaled_with_its_aspect_when_not() {
        let l31 = VideoLimits::h264(Some("profile-level-id=42e01f")).unwrap();
        assert_eq!(l31.fit(1280, 720, 30), Some(Fit { width: 1280, height: 720, fps: 30 }), "3.1 is 720p30");
        assert_eq!(l31.fit(640, 480, 30), Some(Fit { width: 640, height: 480, fps: 30 }));
        let f = l31.fit(1920, 1080, 30).unwrap();
        assert!(f.width.div_ceil(16) * f.height.div_ceil(16) <= 3600 && f.width >= 1260, "{f:?}");
        assert!((f64::from(f.width) / f64::from(f.height) - 16.0 / 9.0).abs() < 0.02, "{f:?}");

        // IR.94's level 1.2: 396 macroblocks at 6000 per second.
        let l12 = VideoLimits::h264(Some("profile-level-id=42e00c")).unwrap();
        let f = l12.fit(640, 480, 30).unwrap();
        let mbs = f.width.div_ceil(16) * f.height.div_ceil(16);
        assert!(mbs <= 396 && mbs > 350, "{f:?} is {mbs} macroblocks");
        assert!((f64::from(f.width) / f64::from(f.height) - 4.0 / 3.0).abs() < 0.02, "{f:?}");
        assert_eq!(f.fps, 6000 / mbs, "the macroblock rate caps the frame rate");
        assert!(f.width & 1 == 0 && f.height & 1 == 0);

        // A frame within MaxFS can still break the side bound: level 1.0 allows 99
        // macroblocks but no side above sqrt(792) = 28 macroblocks.
        let l10 = VideoLimits::h264(Some("profile-level-id=42e00a")).unwrap();
        let f = l10.fit(1600, 64, 30).unwrap();
        assert!(f.width.div_ceil(16) <= 28, "{f:?}");
    }

    #[test]
    fn vp8_limits_are_optional_and_bound_size_and_rate() {
        assert_eq!(VideoLimits::vp8(None).unwrap(), VideoLimits::UNBOUNDED);
        assert_eq!(VideoLimits::UNBOUNDED.fit(1920, 1080, 60), Some(Fit { width: 1920, height: 1080, fps: 60 }));
        let firefox = VideoLimits::vp8(Some("max-fs=12288;max-fr=60")).unwrap();
        assert_eq!(firefox.fit(1280, 720, 30), Some(Fit { width: 1280, height: 720, fps: 30 }));
        let small = VideoLimits::vp8(Some("max-fs=300;max-fr=15")).unwrap();
        let f = small.fit(640, 480, 30).unwrap();
        assert!(f.width.div_ceil(16) * f.height.div_ceil(16) <= 300 && f.fps == 15, "{f:?}");
        assert_eq!(VideoLimits::vp8(Some("max-fr=0")), Err(LevelError::BadParameter("max-fr")));
        assert_eq!(small.fit(0, 480, 30), None);
        assert_eq!(small.fit(640, 480, 0), None);
    }
}
