//! Per-stream RTP statistics: what a receiver reports in report blocks (RFC 3550 §6.4.1 with the
//! algorithms of A.1, A.3 and A.8) and what a sender reports in the sender info of an SR.
//!
//! Both are fed by the caller, per packet, with the arrival or send time as `now`. Neither reads
//! a clock: the SR's wall-clock time is a parameter too (see [`crate::WallClock`]).

use std::time::{Duration, Instant};

use crate::id::{ClockRate, ExtSeqNo, NtpTime, SeqNo, Ssrc};
use crate::rtcp::{ReportBlock, SenderInfo};

/// Sequence-number validation parameters of RFC 3550 A.1.
///
/// The defaults are the RFC's: a source must send two sequential packets before it counts, a
/// forward jump under 3000 is loss, a backward step under 100 is reordering, and anything else is
/// a restart that takes two sequential packets to accept.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SeqConfig {
    /// Sequential packets needed before a source is valid (A.1 `MIN_SEQUENTIAL`). 1 accepts the
    /// first packet at once, which suits an SRTP-authenticated source; 0 is treated as 1.
    pub min_sequential: u8,
    /// Largest forward jump treated as loss (A.1 `MAX_DROPOUT`).
    pub max_dropout: u16,
    /// Largest backward step treated as reordering (A.1 `MAX_MISORDER`).
    pub max_misorder: u16,
}

impl Default for SeqConfig {
    fn default() -> SeqConfig {
        SeqConfig {
            min_sequential: 2,
            max_dropout: 3000,
            max_misorder: 100,
        }
    }
}

/// What the receiver side knows about one incoming source: the state of RFC 3550 A.1 (sequence
/// validation and extension), A.3 (loss) and A.8 (jitter), and the last SR heard from it.
#[derive(Clone, Debug)]
pub struct ReceiverStats {
    ssrc: Ssrc,
    clock_rate: ClockRate,
    config: SeqConfig,
    /// Whether any packet has been seen (the A.1 "new source" step has run).
    started: bool,
    // RFC 3550 A.1 `source` fields. `cycles` is the count of wraps shifted left by 16, so
    // `cycles + max_seq` is the extended highest sequence number.
    max_seq: u16,
    cycles: u64,
    base_seq: u64,
    /// The sequence number that would confirm a restart; `None` is A.1's `RTP_SEQ_MOD + 1`.
    bad_seq: Option<u16>,
    probation: u8,
    received: u64,
    expected_prior: u64,
    received_prior: u64,
    // RFC 3550 A.8: arrival times are measured in RTP units from `epoch`.
    epoch: Option<Instant>,
    transit: Option<u32>,
    /// The jitter estimate times 16, as in A.8's integer version.
    jitter_q4: u64,
    /// Middle 32 bits of the last SR's NTP time, and when it arrived.
    last_sr: Option<(u32, Instant)>,
}

impl ReceiverStats {
    /// Statistics for source `ssrc` whose payload clock runs at `clock_rate`, with the RFC's
    /// validation parameters.
    pub fn new(ssrc: Ssrc, clock_rate: ClockRate) -> ReceiverStats {
        ReceiverStats::with_config(ssrc, clock_rate, SeqConfig::default())
    }

    /// As [`ReceiverStats::new`], with other validation parameters.
    pub fn with_config(ssrc: Ssrc, clock_rate: ClockRate, config: SeqConfig) -> ReceiverStats {
        ReceiverStats {
            ssrc,
            clock_rate,
            config,
            started: false,
            max_seq: 0,
            cycles: 0,
            base_seq: 0,
            bad_seq: None,
            probation: 0,
            received: 0,
            expected_prior: 0,
            received_prior: 0,
            epoch: None,
            transit: None,
            jitter_q4: 0,
            last_sr: None,
        }
    }

    /// The source these statistics are about.
    pub fn ssrc(&self) -> Ssrc {
        self.ssrc
    }

    /// Counts one RTP packet from the source, which arrived at `now`.
    ///
    /// Returns the packet's extended sequence number, or `None` if RFC 3550 A.1 does not count
    /// it: the source is still on probation, or the packet is an unconfirmed large jump (a
    /// restart is confirmed by the next packet in sequence after it). Reordered and duplicate
    /// packets are counted, as in A.1, and get the extended number of their own cycle.
    pub fn receive(&mut self, now: Instant, seq: SeqNo, timestamp: u32) -> Option<ExtSeqNo> {
        let ext = self.update_seq(seq.0)?;
        self.update_jitter(now, timestamp);
        Some(ext)
    }

    /// RFC 3550 A.1 `init_seq`.
    fn init_seq(&mut self, seq: u16) {
        self.base_seq = u64::from(seq);
        self.max_seq = seq;
        self.bad_seq = None;
        self.cycles = 0;
        self.received = 0;
        self.received_prior = 0;
        self.expected_prior = 0;
        // Not in A.1: a restarted source has a new timestamp base, so the jitter estimate
        // restarts from its next packet instead of absorbing one huge transit step.
        self.transit = None;
    }

    /// RFC 3550 A.1 `update_seq`, returning the extended sequence number of a valid packet.
    fn update_seq(&mut self, seq: u16) -> Option<ExtSeqNo> {
        if !self.started {
            self.started = true;
            self.init_seq(seq);
            self.max_seq = seq.wrapping_sub(1);
            self.probation = self.config.min_sequential.max(1);
        }
        let udelta = seq.wrapping_sub(self.max_seq);
        if self.probation > 0 {
            // Packets must be in sequence for the source to become valid.
            if seq == self.max_seq.wrapping_add(1) {
                self.probation -= 1;
                self.max_seq = seq;
                if self.probation == 0 {
                    self.init_seq(seq);
                    self.received += 1;
                    return Some(self.extended_max());
                }
            } else {
                self.probation = self.config.min_sequential.max(1) - 1;
                self.max_seq = seq;
            }
            return None;
        }
        let ext = if udelta < self.config.max_dropout {
            // In order, with a permissible gap.
            if seq < self.max_seq {
                self.cycles += 1 << 16;
            }
            self.max_seq = seq;
            self.extended_max()
        } else if udelta <= u16::MAX - self.config.max_misorder {
            // A very large jump: accept it only if the next packet follows it in sequence.
            if Some(seq) == self.bad_seq {
                self.init_seq(seq);
                self.extended_max()
            } else {
                self.bad_seq = Some(seq.wrapping_add(1));
                return None;
            }
        } else {
            // Duplicate or reordered: place it behind the maximum, in its own cycle.
            let back = u64::from(self.max_seq.wrapping_sub(seq));
            ExtSeqNo(self.extended_max().0.saturating_sub(back))
        };
        self.received += 1;
        Some(ext)
    }

    /// RFC 3550 A.8, integer version: `J += |D| - J/16`, kept scaled by 16.
    fn update_jitter(&mut self, now: Instant, timestamp: u32) {
        let epoch = *self.epoch.get_or_insert(now);
        let arrival = self.clock_rate.ticks(now.saturating_duration_since(epoch)) as u32;
        let transit = arrival.wrapping_sub(timestamp);
        if let Some(prev) = self.transit {
            let d = u64::from((transit.wrapping_sub(prev) as i32).unsigned_abs());
            self.jitter_q4 = self.jitter_q4 + d - ((self.jitter_q4 + 8) >> 4);
        }
        self.transit = Some(transit);
    }

    /// Records an SR from this source, received at `now`, for LSR and DLSR (RFC 3550 §6.4.1).
    pub fn receive_sender_report(&mut self, now: Instant, ntp: NtpTime) {
        self.last_sr = Some((ntp.middle32(), now));
    }

    /// The extended highest sequence number received (A.3 `extended_max`).
    pub fn extended_max(&self) -> ExtSeqNo {
        ExtSeqNo(self.cycles + u64::from(self.max_seq))
    }

    /// Packets expected since the source became valid (A.3 `expected`).
    pub fn expected(&self) -> u64 {
        if !self.is_valid() {
            return 0;
        }
        (self.extended_max().0 + 1).saturating_sub(self.base_seq)
    }

    /// Packets counted, duplicates included (A.1 `received`).
    pub fn received(&self) -> u64 {
        self.received
    }

    /// Cumulative packets lost (A.3): expected minus received, negative if duplicates outnumber
    /// losses.
    pub fn lost(&self) -> i64 {
        self.expected() as i64 - self.received as i64
    }

    /// The interarrival jitter estimate in RTP timestamp units (A.8).
    pub fn jitter(&self) -> u32 {
        u32::try_from(self.jitter_q4 >> 4).unwrap_or(u32::MAX)
    }

    /// True once the source has passed probation.
    pub fn is_valid(&self) -> bool {
        self.started && self.probation == 0
    }

    /// The report block for this source at `now`, or `None` before the source is valid.
    ///
    /// Computing the fraction lost starts a new reporting interval (A.3 `expected_prior`,
    /// `received_prior`), so call this once per report sent.
    pub fn report_block(&mut self, now: Instant) -> Option<ReportBlock> {
        if !self.is_valid() {
            return None;
        }
        let expected = self.expected();
        let expected_interval = expected - self.expected_prior;
        self.expected_prior = expected;
        let received_interval = self.received - self.received_prior;
        self.received_prior = self.received;
        let lost_interval = expected_interval as i64 - received_interval as i64;
        let fraction_lost = if expected_interval == 0 || lost_interval <= 0 {
            0
        } else {
            // lost_interval <= expected_interval, so the quotient is at most 256; 256 only if
            // nothing arrived, which cannot happen once valid, but clamp rather than wrap.
            ((lost_interval << 8) / expected_interval as i64).min(255) as u8
        };
        let (last_sr, delay_since_last_sr) = match self.last_sr {
            Some((lsr, at)) => (lsr, dlsr(now.saturating_duration_since(at))),
            None => (0, 0),
        };
        Some(ReportBlock {
            ssrc: self.ssrc,
            fraction_lost,
            cumulative_lost: self.lost().clamp(-0x80_0000, 0x7f_ffff) as i32,
            ext_highest_seq: self.extended_max().0 as u32,
            jitter: self.jitter(),
            last_sr,
            delay_since_last_sr,
        })
    }
}

/// A duration in the 1/65536 s units of DLSR, saturating.
fn dlsr(d: Duration) -> u32 {
    let units =
        d.as_secs().saturating_mul(65_536) + (u64::from(d.subsec_nanos()) << 16) / 1_000_000_000;
    u32::try_from(units).unwrap_or(u32::MAX)
}

/// What the sender side knows about one outgoing stream: counts for the SR sender info and the
/// RTP timestamp of the last packet with its send time, to map wall-clock time to RTP time.
#[derive(Clone, Debug)]
pub struct SenderStats {
    ssrc: Ssrc,
    clock_rate: ClockRate,
    packet_count: u32,
    octet_count: u32,
    last: Option<(u32, Instant)>,
}

impl SenderStats {
    /// Statistics for the outgoing stream `ssrc` whose clock runs at `clock_rate`.
    pub fn new(ssrc: Ssrc, clock_rate: ClockRate) -> SenderStats {
        SenderStats {
            ssrc,
            clock_rate,
            packet_count: 0,
            octet_count: 0,
            last: None,
        }
    }

    /// Counts a packet sent at `now` with RTP timestamp `timestamp` and `payload_len` payload
    /// octets (RFC 3550 §6.4.1: header and padding are not counted).
    pub fn send(&mut self, now: Instant, timestamp: u32, payload_len: usize) {
        self.packet_count = self.packet_count.wrapping_add(1);
        self.octet_count = self.octet_count.wrapping_add(payload_len as u32);
        self.last = Some((timestamp, now));
    }

    /// Packets sent.
    pub fn packet_count(&self) -> u32 {
        self.packet_count
    }

    /// Payload octets sent.
    pub fn octet_count(&self) -> u32 {
        self.octet_count
    }

    /// The sender info for an SR sent at `now`, when the wall clock reads `ntp`; `None` if
    /// nothing was sent yet (only active senders send SRs, §6.4).
    ///
    /// RFC 3550 §6.4.1: the RTP timestamp is the same instant as `ntp` in RTP units, which need
    /// not equal any packet's timestamp. It is extrapolated from the last packet sent: its
    /// timestamp plus the time since it was sent at the clock rate.
    pub fn sender_info(&self, now: Instant, ntp: NtpTime) -> Option<SenderInfo> {
        let (ts, at) = self.last?;
        let elapsed = self.clock_rate.ticks(now.saturating_duration_since(at)) as u32;
        Some(SenderInfo {
            ssrc: self.ssrc,
            ntp,
            rtp_ts: ts.wrapping_add(elapsed),
            packet_count: self.packet_count,
            octet_count: self.octet_count,
        })
    }
}

#[cfg(test)]
#[allow(clippy::disallowed_methods)] // tests need an Instant to start from
mod tests {
    use super::*;

    fn ms(t0: Instant, ms: u64) -> Instant {
        t0 + Duration::from_millis(ms)
    }

    fn immediate(ssrc: u32) -> ReceiverStats {
        let config = SeqConfig {
            min_sequential: 1,
            ..Default::default()
        };
        ReceiverStats::with_config(Ssrc(ssrc), ClockRate::NARROWBAND, config)
    }

    #[test]
    fn probation_needs_two_in_sequence() {
        let t0 = Instant::now();
        let mut s = ReceiverStats::new(Ssrc(1), ClockRate::NARROWBAND);
        assert_eq!(s.receive(t0, SeqNo(10), 0), None);
        assert!(s.report_block(t0).is_none());
        // Out of sequence: probation restarts.
        assert_eq!(s.receive(t0, SeqNo(20), 0), None);
        assert_eq!(s.receive(t0, SeqNo(21), 160), Some(ExtSeqNo(21)));
        assert!(s.is_valid());
        assert_eq!((s.expected(), s.received(), s.lost()), (1, 1, 0));
    }

    #[test]
    fn wraparound_extends_sequence() {
        let t0 = Instant::now();
        let mut s = immediate(1);
        let mut got = Vec::new();
        for seq in [65533u16, 65534, 65535, 0, 1, 2] {
            got.push(s.receive(t0, SeqNo(seq), 0).unwrap().0);
        }
        assert_eq!(got, [65533, 65534, 65535, 65536, 65537, 65538]);
        assert_eq!(s.extended_max(), ExtSeqNo(65538));
        assert_eq!(s.extended_max().cycles(), 1);
        assert_eq!((s.expected(), s.lost()), (6, 0));
        let rb = s.report_block(t0).unwrap();
        assert_eq!(rb.ext_highest_seq, 0x0001_0002);
    }

    #[test]
    fn reordering_across_the_wrap() {
        let t0 = Instant::now();
        let mut s = immediate(1);
        assert_eq!(s.receive(t0, SeqNo(65534), 0), Some(ExtSeqNo(65534)));
        assert_eq!(s.receive(t0, SeqNo(0), 0), Some(ExtSeqNo(65536)));
        // 65535 arrives late: it belongs to cycle 0, and the maximum stays put.
        assert_eq!(s.receive(t0, SeqNo(65535), 0), Some(ExtSeqNo(65535)));
        assert_eq!(s.extended_max(), ExtSeqNo(65536));
        assert_eq!(s.receive(t0, SeqNo(1), 0), Some(ExtSeqNo(65537)));
        assert_eq!((s.expected(), s.received(), s.lost()), (4, 4, 0));
    }

    #[test]
    fn duplicates_make_loss_negative() {
        let t0 = Instant::now();
        let mut s = immediate(1);
        for seq in [1u16, 2, 2, 3, 3, 3] {
            s.receive(t0, SeqNo(seq), 0).unwrap();
        }
        assert_eq!((s.expected(), s.received(), s.lost()), (3, 6, -3));
        let rb = s.report_block(t0).unwrap();
        assert_eq!((rb.cumulative_lost, rb.fraction_lost), (-3, 0));
    }

    #[test]
    fn loss_fraction_per_interval() {
        let t0 = Instant::now();
        let mut s = immediate(1);
        // Interval 1: 1..=10 expected, 3, 4 and 8 missing -> 3/10 lost.
        for seq in (1u16..=10).filter(|s| ![3, 4, 8].contains(s)) {
            s.receive(t0, SeqNo(seq), 0);
        }
        let rb = s.report_block(t0).unwrap();
        assert_eq!(rb.cumulative_lost, 3);
        assert_eq!(rb.fraction_lost, (3 * 256 / 10) as u8); // 76
                                                            // Interval 2: 11..=14 all arrive, plus late 8 (a duplicate-like late arrival): more
                                                            // received than expected in the interval, so the fraction is 0.
        for seq in [11u16, 12, 8, 13, 14] {
            s.receive(t0, SeqNo(seq), 0);
        }
        let rb = s.report_block(t0).unwrap();
        assert_eq!((rb.fraction_lost, rb.cumulative_lost), (0, 2));
        // Interval 3: 15..=22 with one lost -> 1/8 = 32/256.
        for seq in (15u16..=22).filter(|&s| s != 20) {
            s.receive(t0, SeqNo(seq), 0);
        }
        assert_eq!(s.report_block(t0).unwrap().fraction_lost, 32);
        // Interval 4: nothing new -> 0.
        assert_eq!(s.report_block(t0).unwrap().fraction_lost, 0);
    }

    #[test]
    fn restart_needs_confirmation() {
        let t0 = Instant::now();
        let mut s = immediate(1);
        s.receive(t0, SeqNo(100), 0).unwrap();
        s.receive(t0, SeqNo(101), 0).unwrap();
        // A jump of 30000: not counted until confirmed by 30102.
        assert_eq!(s.receive(t0, SeqNo(30101), 0), None);
        assert_eq!(s.receive(t0, SeqNo(30102), 0), Some(ExtSeqNo(30102)));
        assert_eq!(s.receive(t0, SeqNo(30103), 0), Some(ExtSeqNo(30103)));
        // Counting restarted at the confirmation: 30102 and 30103.
        assert_eq!((s.expected(), s.received()), (2, 2));
    }

    /// RFC 3550 A.8 by hand. 8 kHz, 20 ms packets (ts += 160); arrivals at 0, 20, 45, 60, 80 ms,
    /// i.e. 0, 160, 360, 480, 640 ticks. Transit: 0, 0, 40, 0, 0, so |D| = 0, 40, 40, 0.
    /// J (x16, integer form): 0 -> 0 + 0 - 0 = 0 -> 0 + 40 - (8 >> 4) = 40
    ///   -> 40 + 40 - (48 >> 4) = 77 -> 77 + 0 - (85 >> 4) = 72; reported 72 >> 4 = 4.
    /// (The floating form gives 2.5, 4.84, 4.54: the same 4.)
    #[test]
    fn jitter_matches_hand_computation() {
        let t0 = Instant::now();
        let mut s = immediate(1);
        for (i, at) in [0u64, 20, 45, 60, 80].into_iter().enumerate() {
            s.receive(ms(t0, at), SeqNo(i as u16), 160 * i as u32);
        }
        assert_eq!(s.jitter_q4, 72);
        assert_eq!(s.jitter(), 4);
        assert_eq!(s.report_block(ms(t0, 80)).unwrap().jitter, 4);
    }

    #[test]
    fn steady_stream_has_no_jitter() {
        let t0 = Instant::now();
        let mut s = ReceiverStats::new(Ssrc(1), ClockRate::OPUS);
        for i in 0..500u32 {
            s.receive(ms(t0, 20 * u64::from(i)), SeqNo(i as u16), 7 + 960 * i);
        }
        assert_eq!(s.jitter(), 0);
    }

    #[test]
    fn lsr_and_dlsr() {
        let t0 = Instant::now();
        let mut s = immediate(1);
        s.receive(t0, SeqNo(1), 0);
        s.receive_sender_report(t0, NtpTime(0x1234_5678_9abc_def0));
        let rb = s.report_block(t0 + Duration::from_millis(1500)).unwrap();
        assert_eq!(rb.last_sr, 0x5678_9abc);
        assert_eq!(rb.delay_since_last_sr, 0x1_8000);
    }

    #[test]
    fn sender_info_extrapolates_rtp_time() {
        let t0 = Instant::now();
        let mut s = SenderStats::new(Ssrc(5), ClockRate::OPUS);
        assert!(s.sender_info(t0, NtpTime(1)).is_none());
        for i in 0..50u32 {
            s.send(ms(t0, 20 * u64::from(i)), 1000 + 960 * i, 80);
        }
        // The last packet (ts 1000 + 960*49 = 48040) left at 980 ms; the SR goes at 1000 ms.
        let info = s.sender_info(ms(t0, 1000), NtpTime(42)).unwrap();
        assert_eq!(info.rtp_ts, 48_040 + 960);
        assert_eq!((info.packet_count, info.octet_count), (50, 4000));
        assert_eq!((info.ssrc, info.ntp), (Ssrc(5), NtpTime(42)));
    }
}
