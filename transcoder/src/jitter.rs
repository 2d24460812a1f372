//! An adaptive jitter buffer keyed by RTP sequence number, sans-IO.
//!
//! # Model
//!
//! Packets go in with [`JitterBuffer::push`] as they arrive; frames come out with
//! [`JitterBuffer::pop`] at a steady cadence set by the buffer's own playout clock: each
//! frame is due when the previous one has played out (its duration in RTP ticks), so the
//! output never speeds up or stalls whatever the network does. `pop` always has an answer
//! once the stream has started:
//!
//! - [`Frame::Packet`]: the next packet in sequence order.
//! - [`Frame::Lost`]: the next sequence number is missing but later ones are here, so it is
//!   lost (or too late to matter). The packet after it is handed along, when present, for
//!   Opus in-band FEC.
//! - [`Frame::Underrun`]: nothing is buffered at all: the packet is late, the sender paused,
//!   or an Opus sender is in DTX. The expected sequence number is kept, so a late packet
//!   still plays when it comes. After an underrun the buffer refills to its target delay
//!   before playing again, so one late packet does not start a run of them.
//!
//! The caller conceals for `Lost` and `Underrun` (codec PLC, FEC, comfort noise) and keeps its
//! own output timestamps running; this buffer never makes it jump.
//!
//! # Delay adaptation
//!
//! Interarrival jitter is estimated as in RFC 3550 §6.4.1 / A.8 (`J += (|D| − J)/16`). The
//! target delay is `min_delay + 4·J`, clamped to `max_delay`: four mean deviations cover
//! nearly all of a roughly normal delay spread. The estimate starts where the initial delay
//! puts it and decays towards what arrivals show. The delay grows when an underrun refills
//! the buffer to a target raised by jitter, and shrinks by discarding one packet after every
//! half second throughout which the buffer held a frame or more beyond the target (the window
//! minimum, so an early reordered packet or a burst never triggers it).
//!
//! # Sequence space
//!
//! Sequence numbers and timestamps are compared modulo 2^16 and 2^32 (RFC 3550 §A.1), so
//! wrap-around is ordinary. A jump of more than [`RESTART_SEQ_JUMP`] sequence numbers or
//! [`RESTART_TS_JUMP`] of timestamp, either way, is a source restart: the buffer is flushed
//! and starts over from that packet (its playout clock does not jump). Packets older than the
//! playout point are late and duplicates are dropped; both are counted.
//!
//! # Memory
//!
//! [`JitterConfig::capacity`] slots of [`JitterConfig::max_payload`] bytes are allocated once;
//! payloads are copied into them. Nothing allocates per packet.

use std::fmt;
use std::time::{Duration, Instant};

/// A sequence number jump (either way) beyond this is a source restart, not loss.
pub const RESTART_SEQ_JUMP: u16 = 1000;
/// A timestamp jump (either way) beyond this, in seconds of media, is a source restart.
pub const RESTART_TS_JUMP: Duration = Duration::from_secs(30);

/// Frames per level window for the shrink decision: half a second of 20 ms frames.
const LEVEL_WINDOW: u32 = 25;

/// Jitter buffer settings.
#[derive(Clone, Debug)]
pub struct JitterConfig {
    /// RTP clock rate in Hz: 48000 for Opus (RFC 7587), 8000 for G.711 (RFC 3551).
    pub clock_rate: u32,
    /// Lowest target delay. Default 20 ms: one packet of slack.
    pub min_delay: Duration,
    /// Highest target delay. Default 200 ms: beyond that conversation suffers more from the
    /// delay than from the loss it would prevent (ITU-T G.114 puts 150 ms mouth-to-ear as
    /// the comfortable limit).
    pub max_delay: Duration,
    /// Target delay before any jitter has been seen. Default 40 ms.
    pub initial_delay: Duration,
    /// Packet slots. Default 64: 200 ms of 10 ms packets with room for a burst.
    pub capacity: usize,
    /// Largest payload kept; larger ones are dropped and counted. Default 1500 bytes.
    pub max_payload: usize,
    /// Duration of a payload in RTP ticks, or `None` if it cannot tell (then the last known
    /// duration is assumed).
    pub packet_ticks: fn(&[u8]) -> Option<u32>,
    /// Duration assumed until a packet says otherwise, in ticks. Default 20 ms.
    pub default_ticks: u32,
}

impl JitterConfig {
    /// Settings for Opus: 48 kHz RTP clock, durations from the TOC byte.
    pub fn opus() -> Self {
        JitterConfig {
            clock_rate: 48_000,
            packet_ticks: opus_ticks,
            default_ticks: 960,
            ..Self::defaults()
        }
    }

    /// Settings for G.711: 8 kHz RTP clock, one byte per tick.
    pub fn g711() -> Self {
        JitterConfig {
            clock_rate: 8000,
            packet_ticks: g711_ticks,
            default_ticks: 160,
            ..Self::defaults()
        }
    }

    fn defaults() -> Self {
        JitterConfig {
            clock_rate: 8000,
            min_delay: Duration::from_millis(20),
            max_delay: Duration::from_millis(200),
            initial_delay: Duration::from_millis(40),
            capacity: 64,
            max_payload: 1500,
            packet_ticks: g711_ticks,
            default_ticks: 160,
        }
    }
}

fn opus_ticks(payload: &[u8]) -> Option<u32> {
    crate::opus::packet_samples(payload, 48_000)
        .ok()
        .and_then(|n| u32::try_from(n).ok())
}

fn g711_ticks(payload: &[u8]) -> Option<u32> {
    u32::try_from(payload.len()).ok().filter(|&n| n > 0)
}

/// What [`JitterBuffer::pop`] hands out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Frame<'a> {
    /// The next packet in sequence.
    Packet {
        /// RTP sequence number.
        seq: u16,
        /// RTP timestamp.
        timestamp: u32,
        /// Duration in RTP ticks.
        ticks: u32,
        /// The payload.
        payload: &'a [u8],
    },
    /// Sequence number `seq` is missing while later packets are here: conceal `ticks`.
    Lost {
        /// The missing sequence number.
        seq: u16,
        /// Its expected RTP timestamp.
        timestamp: u32,
        /// Its expected duration in RTP ticks.
        ticks: u32,
        /// The payload of `seq + 1`, if buffered: Opus can recover `seq` from its in-band FEC.
        next: Option<&'a [u8]>,
    },
    /// Nothing to play (late packet, sender pause, DTX, refilling): conceal `ticks`.
    Underrun {
        /// Duration to conceal in RTP ticks.
        ticks: u32,
    },
}

impl Frame<'_> {
    /// Duration of this frame in RTP ticks.
    pub fn ticks(&self) -> u32 {
        match *self {
            Frame::Packet { ticks, .. } | Frame::Lost { ticks, .. } | Frame::Underrun { ticks } => {
                ticks
            }
        }
    }
}

/// What became of a pushed packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Push {
    /// Buffered.
    Accept,
    /// Its playout time has passed (or it was declared lost): dropped.
    Late,
    /// Already buffered: dropped.
    Duplicate,
    /// Payload empty or larger than [`JitterConfig::max_payload`]: dropped.
    Reject,
    /// A sequence or timestamp jump: the buffer restarted from this packet.
    Restart,
}

/// Counters since construction (not cleared by restarts).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct JitterStats {
    /// Packets accepted.
    pub accepted: u64,
    /// Packets handed out by `pop`.
    pub played: u64,
    /// Sequence numbers declared lost.
    pub lost: u64,
    /// Packets that arrived after their playout point.
    pub late: u64,
    /// Duplicate packets.
    pub duplicate: u64,
    /// Empty or oversized payloads.
    pub rejected: u64,
    /// Underrun frames handed out.
    pub underruns: u64,
    /// Packets discarded to shrink the delay.
    pub discarded: u64,
    /// Restarts after a sequence/timestamp jump or a burst beyond capacity.
    pub restarts: u64,
}

#[derive(Clone, Copy, Debug)]
struct Slot {
    used: bool,
    seq: u16,
    timestamp: u32,
    ticks: u32,
    len: usize,
}

const EMPTY: Slot = Slot {
    used: false,
    seq: 0,
    timestamp: 0,
    ticks: 0,
    len: 0,
};

/// The adaptive jitter buffer. See the module docs.
pub struct JitterBuffer {
    config: JitterConfig,
    slots: Vec<Slot>,
    payloads: Vec<u8>,
    buffered: usize,
    /// `Some` once the first packet has arrived.
    playout: Option<Playout>,
    /// RFC 3550 interarrival jitter, in ticks.
    jitter: f64,
    /// Arrival (ticks since `epoch`) and timestamp of the previous packet, for `jitter`.
    last_arrival: Option<(f64, u32)>,
    epoch: Option<Instant>,
    target: Duration,
    stats: JitterStats,
}

#[derive(Clone, Copy, Debug)]
struct Playout {
    next_seq: u16,
    /// Expected timestamp of `next_seq`.
    next_ts: u32,
    /// End timestamp (ts + ticks) of the newest buffered packet by sequence number.
    newest_end: u32,
    newest_seq: u16,
    /// The playout clock: frame due times are `base + ticks_played / clock`.
    base: Instant,
    ticks_played: u64,
    /// Duration of the last packet played, the guess for frames we know nothing about.
    frame_ticks: u32,
    /// After an underrun, nothing plays before this: the buffer refills to its target.
    resume_at: Option<Instant>,
    in_underrun: bool,
    /// Frames observed in the current level window and the least excess over target seen.
    window_frames: u32,
    window_min_excess: f64,
    /// The last window was a frame or more above target throughout: discard one packet.
    discard_pending: bool,
}

impl fmt::Debug for JitterBuffer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JitterBuffer")
            .field("clock_rate", &self.config.clock_rate)
            .field("buffered", &self.buffered)
            .field("target", &self.target)
            .field("stats", &self.stats)
            .finish()
    }
}

impl JitterBuffer {
    /// Allocates a buffer of `config.capacity` slots of `config.max_payload` bytes.
    pub fn new(config: JitterConfig) -> Self {
        let mut config = config;
        config.capacity = config.capacity.clamp(2, 4096);
        config.clock_rate = config.clock_rate.max(1);
        // Bounded so that instant arithmetic cannot overflow on a silly configuration.
        config.min_delay = config.min_delay.min(Duration::from_secs(10));
        config.max_delay = config
            .max_delay
            .clamp(config.min_delay, Duration::from_secs(10));
        config.default_ticks = config.default_ticks.max(1);
        let target = config
            .initial_delay
            .clamp(config.min_delay, config.max_delay);
        JitterBuffer {
            slots: vec![EMPTY; config.capacity],
            payloads: vec![0; config.capacity * config.max_payload],
            buffered: 0,
            playout: None,
            // Seeded so that the target starts at the initial delay and decays from there as
            // real arrivals come in (J moves 1/16 of the way per packet).
            jitter: (target - config.min_delay).as_secs_f64() * f64::from(config.clock_rate) / 4.0,
            last_arrival: None,
            epoch: None,
            target,
            stats: JitterStats::default(),
            config,
        }
    }

    /// The settings in force.
    pub fn config(&self) -> &JitterConfig {
        &self.config
    }

    /// Counters since construction.
    pub fn stats(&self) -> JitterStats {
        self.stats
    }

    /// The current target delay.
    pub fn target_delay(&self) -> Duration {
        self.target
    }

    /// Media buffered ahead of the playout point, from the next frame to the end of the newest
    /// packet, holes included.
    pub fn buffered_delay(&self) -> Duration {
        match &self.playout {
            Some(p) if self.buffered > 0 => {
                let ticks = p.newest_end.wrapping_sub(p.next_ts) as i32;
                self.ticks_to_duration(u64::try_from(ticks).unwrap_or(0))
            }
            _ => Duration::ZERO,
        }
    }

    /// RFC 3550 interarrival jitter estimate.
    pub fn jitter(&self) -> Duration {
        Duration::from_secs_f64(self.jitter / f64::from(self.config.clock_rate))
    }

    /// Packets currently held.
    pub fn len(&self) -> usize {
        self.buffered
    }

    /// Whether no packet is held.
    pub fn is_empty(&self) -> bool {
        self.buffered == 0
    }

    /// When the next frame is due: call [`Self::pop`] then. `None` before the first packet.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.playout.as_ref().map(|p| self.due(p))
    }

    /// Forgets every packet and the playout clock, keeping counters and the jitter estimate.
    pub fn reset(&mut self) {
        self.clear_slots();
        self.playout = None;
        self.last_arrival = None;
    }

    /// Takes a packet that arrived at `now`.
    pub fn push(&mut self, now: Instant, seq: u16, timestamp: u32, payload: &[u8]) -> Push {
        if payload.is_empty() || payload.len() > self.config.max_payload {
            self.stats.rejected += 1;
            return Push::Reject;
        }
        let ticks = (self.config.packet_ticks)(payload)
            .filter(|&t| t > 0)
            .or(self.playout.map(|p| p.frame_ticks))
            .unwrap_or(self.config.default_ticks);
        self.update_jitter(now, timestamp);

        let Some(p) = self.playout else {
            self.start(now, seq, timestamp, ticks);
            self.store(seq, timestamp, ticks, payload);
            return Push::Accept;
        };
        let seq_ahead = seq.wrapping_sub(p.next_seq) as i16;
        let ts_ahead = i64::from(timestamp.wrapping_sub(p.next_ts) as i32);
        let ts_limit = RESTART_TS_JUMP.as_secs() as i64 * i64::from(self.config.clock_rate);
        // A burst beyond the slots (a long outage's worth lost) also starts over.
        let beyond_capacity = seq_ahead > 0 && seq_ahead as usize >= self.config.capacity;
        let restart = seq_ahead.unsigned_abs() > RESTART_SEQ_JUMP
            || ts_ahead.abs() > ts_limit
            || beyond_capacity;
        if restart {
            self.stats.restarts += 1;
            self.clear_slots();
            self.restart(now, seq, timestamp, ticks);
            self.store(seq, timestamp, ticks, payload);
            return Push::Restart;
        }
        if seq_ahead < 0 {
            self.stats.late += 1;
            return Push::Late;
        }
        let slot = &self.slots[self.index(seq)];
        if slot.used && slot.seq == seq {
            self.stats.duplicate += 1;
            return Push::Duplicate;
        }
        self.store(seq, timestamp, ticks, payload);
        let Some(p) = self.playout.as_mut() else {
            return Push::Accept;
        };
        if p.in_underrun && p.resume_at.is_none() {
            // First packet after running dry: refill to the target before playing again.
            p.resume_at = Some(now + self.target);
        }
        Push::Accept
    }

    /// The next frame if it is due at `now`; call again until `None` to catch up. Pass a later
    /// instant to take frames early, e.g. the end of the output frame being built.
    pub fn pop(&mut self, now: Instant) -> Option<Frame<'_>> {
        let p = self.playout?;
        let due = self.due(&p);
        if now < due {
            return None;
        }
        if let Some(resume) = p.resume_at {
            if due < resume {
                return Some(self.underrun());
            }
        }
        let Some(mut slot) = self.slot(p.next_seq) else {
            return Some(self.lost_or_underrun());
        };
        if p.discard_pending && self.buffered > 1 {
            // Consistently more delay than the target: skip this packet to shrink by a frame.
            self.take(slot.seq, slot.timestamp, slot.ticks);
            self.stats.discarded += 1;
            if let Some(pm) = self.playout.as_mut() {
                pm.discard_pending = false;
            }
            let next_seq = slot.seq.wrapping_add(1);
            match self.slot(next_seq) {
                Some(next) => slot = next,
                None => return Some(self.lost_or_underrun()),
            }
        }
        self.take(slot.seq, slot.timestamp, slot.ticks);
        self.observe_level(slot.timestamp.wrapping_add(slot.ticks));
        self.advance_clock(slot.ticks);
        self.stats.played += 1;
        let start = self.index(slot.seq) * self.config.max_payload;
        Some(Frame::Packet {
            seq: slot.seq,
            timestamp: slot.timestamp,
            ticks: slot.ticks,
            payload: &self.payloads[start..start + slot.len],
        })
    }

    /// The buffered packet with sequence number `seq`, if any.
    fn slot(&self, seq: u16) -> Option<Slot> {
        let slot = self.slots[self.index(seq)];
        (slot.used && slot.seq == seq).then_some(slot)
    }

    /// Tracks the smallest excess of buffered media over the target across a window of
    /// frames; a whole window a frame or more above target asks for one discard. Using the
    /// minimum means a burst or a reordered early packet never triggers it.
    fn observe_level(&mut self, played_end: u32) {
        let target = self.target.as_secs_f64() * f64::from(self.config.clock_rate);
        let Some(p) = self.playout.as_mut() else {
            return;
        };
        let level = if self.buffered > 0 {
            f64::from(p.newest_end.wrapping_sub(played_end) as i32)
        } else {
            0.0
        };
        p.window_min_excess = p.window_min_excess.min(level - target);
        p.window_frames += 1;
        if p.window_frames >= LEVEL_WINDOW {
            if p.window_min_excess >= f64::from(p.frame_ticks) {
                p.discard_pending = true;
            }
            p.window_frames = 0;
            p.window_min_excess = f64::INFINITY;
        }
    }

    fn lost_or_underrun(&mut self) -> Frame<'_> {
        if self.buffered == 0 {
            return self.underrun();
        }
        let Some(p) = self.playout else {
            return self.underrun();
        };
        // Something later is here, so `next_seq` is lost.
        let after = p.next_seq.wrapping_add(1);
        let next = self.slots[self.index(after)];
        let next_present = next.used && next.seq == after;
        let ticks = if next_present {
            // The gap in timestamps is the lost packet's duration, within reason.
            let gap = next.timestamp.wrapping_sub(p.next_ts);
            let max = self.config.clock_rate / 8; // 125 ms, above Opus's 120 ms packets
            if gap > 0 && gap <= max {
                gap
            } else {
                p.frame_ticks
            }
        } else {
            p.frame_ticks
        };
        let (seq, timestamp) = (p.next_seq, p.next_ts);
        if let Some(pm) = self.playout.as_mut() {
            pm.next_seq = after;
            pm.next_ts = timestamp.wrapping_add(ticks);
        }
        self.advance_clock(ticks);
        if let Some(pm) = self.playout.as_mut() {
            // A loss in the window: no discard from this window.
            pm.window_min_excess = f64::NEG_INFINITY;
        }
        self.stats.lost += 1;
        let next = next_present.then(|| {
            let start = self.index(after) * self.config.max_payload;
            &self.payloads[start..start + next.len]
        });
        Frame::Lost {
            seq,
            timestamp,
            ticks,
            next,
        }
    }

    fn underrun(&mut self) -> Frame<'static> {
        let ticks = self
            .playout
            .map_or(self.config.default_ticks, |p| p.frame_ticks);
        if let Some(p) = self.playout.as_mut() {
            p.in_underrun = true;
        }
        self.advance_clock(ticks);
        if let Some(p) = self.playout.as_mut() {
            p.window_min_excess = f64::NEG_INFINITY;
        }
        self.stats.underruns += 1;
        Frame::Underrun { ticks }
    }

    fn start(&mut self, now: Instant, seq: u16, timestamp: u32, ticks: u32) {
        self.playout = Some(Playout {
            next_seq: seq,
            next_ts: timestamp,
            newest_end: timestamp.wrapping_add(ticks),
            newest_seq: seq,
            base: now + self.target,
            ticks_played: 0,
            frame_ticks: ticks,
            resume_at: None,
            in_underrun: false,
            window_frames: 0,
            window_min_excess: f64::INFINITY,
            discard_pending: false,
        });
    }

    /// Starts again from a new packet without moving the playout clock.
    fn restart(&mut self, now: Instant, seq: u16, timestamp: u32, ticks: u32) {
        if let Some(p) = self.playout.as_mut() {
            p.next_seq = seq;
            p.next_ts = timestamp;
            p.newest_end = timestamp.wrapping_add(ticks);
            p.newest_seq = seq;
            p.frame_ticks = ticks;
            p.in_underrun = true;
            p.resume_at = Some(now + self.target);
        }
        self.last_arrival = None;
    }

    fn store(&mut self, seq: u16, timestamp: u32, ticks: u32, payload: &[u8]) {
        let idx = self.index(seq);
        let start = idx * self.config.max_payload;
        self.payloads[start..start + payload.len()].copy_from_slice(payload);
        if !self.slots[idx].used {
            self.buffered += 1;
        }
        self.slots[idx] = Slot {
            used: true,
            seq,
            timestamp,
            ticks,
            len: payload.len(),
        };
        self.stats.accepted += 1;
        if let Some(p) = self.playout.as_mut() {
            if (seq.wrapping_sub(p.newest_seq) as i16) >= 0 {
                p.newest_seq = seq;
                p.newest_end = timestamp.wrapping_add(ticks);
            }
        }
    }

    /// Removes `seq` (played or discarded) and moves the playout point past it.
    fn take(&mut self, seq: u16, timestamp: u32, ticks: u32) {
        let idx = self.index(seq);
        if self.slots[idx].used {
            self.slots[idx].used = false;
            self.buffered -= 1;
        }
        if let Some(p) = self.playout.as_mut() {
            p.next_seq = seq.wrapping_add(1);
            p.next_ts = timestamp.wrapping_add(ticks);
            p.frame_ticks = ticks;
        }
    }

    fn advance_clock(&mut self, ticks: u32) {
        let Some(p) = self.playout.as_mut() else {
            return;
        };
        p.ticks_played += u64::from(ticks);
        if let Some(resume) = p.resume_at {
            // The refill is over once the clock has reached the resume time.
            let due = p.base + ticks_to_duration(p.ticks_played, self.config.clock_rate);
            if due >= resume {
                p.resume_at = None;
                p.in_underrun = false;
            }
        } else if !matches!(self.buffered, 0) {
            p.in_underrun = false;
        }
    }

    fn clear_slots(&mut self) {
        for s in &mut self.slots {
            s.used = false;
        }
        self.buffered = 0;
    }

    fn update_jitter(&mut self, now: Instant, timestamp: u32) {
        let epoch = *self.epoch.get_or_insert(now);
        let clock = f64::from(self.config.clock_rate);
        let arrival = now.saturating_duration_since(epoch).as_secs_f64() * clock;
        if let Some((prev_arrival, prev_ts)) = self.last_arrival {
            // RFC 3550 §6.4.1: D = (Rj − Ri) − (Sj − Si), in timestamp units.
            let d = (arrival - prev_arrival) - f64::from(timestamp.wrapping_sub(prev_ts) as i32);
            // A restart-sized jump is not jitter.
            if d.abs() < clock {
                self.jitter += (d.abs() - self.jitter) / 16.0;
            }
        }
        self.last_arrival = Some((arrival, timestamp));
        let spread = Duration::from_secs_f64(4.0 * self.jitter / clock);
        self.target = (self.config.min_delay + spread).min(self.config.max_delay);
    }

    fn due(&self, p: &Playout) -> Instant {
        p.base + self.ticks_to_duration(p.ticks_played)
    }

    fn index(&self, seq: u16) -> usize {
        usize::from(seq) % self.config.capacity
    }

    fn ticks_to_duration(&self, ticks: u64) -> Duration {
        ticks_to_duration(ticks, self.config.clock_rate)
    }
}

/// Exact conversion of RTP ticks to time (no accumulated rounding).
pub(crate) fn ticks_to_duration(ticks: u64, clock_rate: u32) -> Duration {
    let rate = u64::from(clock_rate.max(1));
    let secs = ticks / rate;
    let nanos = (ticks % rate) * 1_000_000_000 / rate;
    Duration::new(secs, nanos as u32)
}
