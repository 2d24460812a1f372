//! Identifiers and units named as in RFC 3550: [`Ssrc`], [`Pt`], [`SeqNo`], [`ExtSeqNo`],
//! [`ClockRate`], and the wall-clock types [`NtpTime`] and [`WallClock`].

use std::fmt;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Synchronization source identifier (RFC 3550 §5.1), also used for CSRCs and the SSRC fields of
/// RTCP.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Ssrc(pub u32);

/// RTP payload type (RFC 3550 §5.1): 7 bits on the wire. Writers mask the value to 7 bits, so
/// a `Pt` above 127 is a caller bug that cannot touch the marker bit.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Pt(pub u8);

/// The 16-bit RTP sequence number as carried in the header (RFC 3550 §5.1).
///
/// Ordering between two `SeqNo`s is only meaningful modulo 2^16; use [`SeqNo::is_newer_than`]
/// or extend to an [`ExtSeqNo`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct SeqNo(pub u16);

impl SeqNo {
    /// The next sequence number, wrapping 65535 to 0.
    pub const fn next(self) -> SeqNo {
        SeqNo(self.0.wrapping_add(1))
    }

    /// `self + n` modulo 2^16.
    pub const fn add(self, n: u16) -> SeqNo {
        SeqNo(self.0.wrapping_add(n))
    }

    /// Serial-number comparison (RFC 1982 with a 16-bit serial): `self` is newer than `other`
    /// if it lies less than half the number space ahead.
    pub const fn is_newer_than(self, other: SeqNo) -> bool {
        let d = self.0.wrapping_sub(other.0);
        d != 0 && d < 0x8000
    }
}

impl fmt::Display for SeqNo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// An extended sequence number: the 16-bit [`SeqNo`] plus a count of wraparounds in the high
/// bits (RFC 3550 §6.4.1 "extended highest sequence number", kept 64 bits wide here so it never
/// wraps in a call's lifetime). The low 32 bits are what an RTCP report block carries.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ExtSeqNo(pub u64);

impl ExtSeqNo {
    /// The wire sequence number (the low 16 bits).
    pub const fn seq(self) -> SeqNo {
        SeqNo(self.0 as u16)
    }

    /// The number of wraparounds (RFC 3550 A.1 `cycles`, not shifted).
    pub const fn cycles(self) -> u64 {
        self.0 >> 16
    }

    /// Extends `seq` to the extended number closest to `self`, so a packet slightly behind
    /// (reordered) or ahead (after loss) of the reference lands in the right cycle. Never goes
    /// below zero: a packet "before" extended number 0 is placed in cycle 0.
    pub const fn extend(self, seq: SeqNo) -> ExtSeqNo {
        let delta = seq.0.wrapping_sub(self.0 as u16) as i16 as i64;
        let v = self.0 as i64 + delta;
        if v < 0 {
            ExtSeqNo(seq.0 as u64)
        } else {
            ExtSeqNo(v as u64)
        }
    }
}

/// An RTP clock rate in Hz (RFC 3550 §5.1 "timestamp"; the rate comes from the SDP `a=rtpmap`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ClockRate(pub u32);

impl ClockRate {
    /// 8 kHz: G.711, G.722 (by RFC 3551's historical error), AMR, telephone-event/8000.
    pub const NARROWBAND: ClockRate = ClockRate(8000);
    /// 16 kHz: AMR-WB.
    pub const WIDEBAND: ClockRate = ClockRate(16000);
    /// 48 kHz: Opus (RFC 7587 always uses 48000) and telephone-event/48000.
    pub const OPUS: ClockRate = ClockRate(48000);
    /// 90 kHz: video (RFC 3551 §5).
    pub const VIDEO: ClockRate = ClockRate(90000);

    /// Whole clock ticks in `d`, rounded down, modulo nothing (64 bits hold ~6 million years at
    /// 90 kHz).
    pub fn ticks(self, d: Duration) -> u64 {
        (d.as_nanos() * u128::from(self.0) / 1_000_000_000) as u64
    }
}

/// A 64-bit NTP timestamp (RFC 5905 §6, used by RFC 3550 §6.4.1): seconds since 1900 in the high
/// 32 bits, the binary fraction of a second in the low 32. Era wraps (2036) are modulo 2^32
/// seconds, as on the wire.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NtpTime(pub u64);

/// Seconds from 1900-01-01 (NTP era 0) to 1970-01-01 (Unix epoch).
const NTP_UNIX_OFFSET: u64 = 2_208_988_800;

impl NtpTime {
    /// The NTP time of a Unix time given as a duration since 1970.
    pub fn from_unix(since_epoch: Duration) -> NtpTime {
        let secs = since_epoch.as_secs().wrapping_add(NTP_UNIX_OFFSET) as u32;
        let frac = ((u64::from(since_epoch.subsec_nanos()) << 32) / 1_000_000_000) as u32;
        NtpTime(u64::from(secs) << 32 | u64::from(frac))
    }

    /// The NTP time of a wall-clock reading. Times before 1970 map to 1970.
    pub fn from_system_time(t: SystemTime) -> NtpTime {
        NtpTime::from_unix(t.duration_since(UNIX_EPOCH).unwrap_or_default())
    }

    /// Whole seconds since the start of the NTP era.
    pub const fn seconds(self) -> u32 {
        (self.0 >> 32) as u32
    }

    /// Fraction of a second in units of 2^-32 s.
    pub const fn fraction(self) -> u32 {
        self.0 as u32
    }

    /// The middle 32 bits, in units of 1/65536 s: what RTCP report blocks echo as LSR
    /// (RFC 3550 §6.4.1 "last SR timestamp").
    pub const fn middle32(self) -> u32 {
        (self.0 >> 16) as u32
    }
}

/// A wall clock anchored to the monotonic clock: the `(Instant, SystemTime)` epoch pair of
/// STYLE.md R2. The driver reads both clocks once, at start, and engines derive wall time from
/// `now` so they never read a clock themselves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WallClock {
    instant: Instant,
    system: SystemTime,
}

impl WallClock {
    /// Pairs a monotonic instant with the wall-clock reading taken at the same moment.
    pub const fn new(instant: Instant, system: SystemTime) -> WallClock {
        WallClock { instant, system }
    }

    /// The wall-clock time at `now`.
    pub fn system_time(&self, now: Instant) -> SystemTime {
        // Checked arithmetic: a wall clock set near the ends of SystemTime's range must not panic.
        let t = match now.checked_duration_since(self.instant) {
            Some(d) => self.system.checked_add(d),
            None => self.system.checked_sub(self.instant.duration_since(now)),
        };
        t.unwrap_or(self.system)
    }

    /// The NTP time at `now`, for a sender report.
    pub fn ntp(&self, now: Instant) -> NtpTime {
        NtpTime::from_system_time(self.system_time(now))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seq_serial_order_wraps() {
        assert!(SeqNo(0).is_newer_than(SeqNo(65535)));
        assert!(!SeqNo(65535).is_newer_than(SeqNo(0)));
        assert!(!SeqNo(7).is_newer_than(SeqNo(7)));
        assert_eq!(SeqNo(65535).next(), SeqNo(0));
    }

    #[test]
    fn extend_picks_nearest_cycle() {
        let max = ExtSeqNo(65535);
        assert_eq!(max.extend(SeqNo(0)), ExtSeqNo(65536));
        assert_eq!(ExtSeqNo(65537).extend(SeqNo(65534)), ExtSeqNo(65534));
        assert_eq!(ExtSeqNo(3 << 16 | 10).extend(SeqNo(5)).cycles(), 3);
        // Before zero stays in cycle zero.
        assert_eq!(ExtSeqNo(2).extend(SeqNo(65000)), ExtSeqNo(65000));
    }

    #[test]
    fn ntp_from_unix() {
        // 1970-01-01T00:00:00.5 is NTP 2208988800.5.
        let t = NtpTime::from_unix(Duration::from_millis(500));
        assert_eq!(t.seconds(), 2_208_988_800);
        assert_eq!(t.fraction(), 0x8000_0000);
        assert_eq!(t.middle32(), (2_208_988_800u32 & 0xffff) << 16 | 0x8000);
    }

    #[test]
    #[allow(clippy::disallowed_methods)] // a test needs some Instant to anchor to
    fn wall_clock_follows_instant() {
        let i0 = Instant::now();
        let s0 = UNIX_EPOCH + Duration::from_secs(1_000);
        let w = WallClock::new(i0, s0);
        let later = w.ntp(i0 + Duration::from_secs(2));
        assert_eq!(later.seconds(), (1_002 + NTP_UNIX_OFFSET) as u32);
    }
}
