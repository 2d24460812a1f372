//! Stream rewriting for the relay: one outgoing RTP stream whose SSRC, sequence numbers and
//! timestamps stay continuous while the incoming source behind it changes, and a timestamp
//! scaler for clock-rate changes.

use std::time::Instant;

use crate::error::ParseError;
use crate::id::{ClockRate, SeqNo, Ssrc};
use crate::rtp::RtpPacketMut;

/// What [`StreamRewriter::rewrite`] did with a packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rewrite {
    /// The header was rewritten; send the packet. `switched` is true for the first packet of a
    /// new incoming source (its marker bit has been set).
    Forward {
        /// A new incoming source starts with this packet.
        switched: bool,
    },
    /// Drop the packet: it belongs to a source the stream has already moved away from, or
    /// precedes the first packet of the current source so it has no place in the outgoing
    /// sequence, or is the first half of an unconfirmed sequence jump.
    Drop,
}

/// Maps one incoming RTP stream onto one outgoing SSRC, sequence and timestamp space.
///
/// The browser and the IMS peer each see one stream per m= line, with one SSRC whose sequence
/// numbers go up by one and whose timestamps follow its clock. Behind the relay the source can
/// change: the far end answers a re-INVITE with a new SSRC, restarts its counters, or the web leg
/// comes back after a DTLS restart. The rewriter hides that:
///
/// - the outgoing SSRC never changes;
/// - the first packet of a new source gets the sequence number after the last one sent, and a
///   timestamp advanced from the last one sent by the wall time elapsed since (`now`) at the
///   stream's clock rate, so a receiver's jitter buffer sees a gap of the right length;
/// - that packet gets the marker bit, which for audio starts a talkspurt (RFC 3551 §4.1) and lets
///   the receiver resynchronise its playout;
/// - later packets of the source keep their spacing (offsets are fixed per source), so loss and
///   reordering pass through unchanged and NACKs can be mapped back ([`Self::incoming_seq`]).
///
/// A new source is detected by a new SSRC, by [`Self::restart_source`] (the caller knows about
/// re-INVITEs and DTLS restarts), or by a sequence jump confirmed as in RFC 3550 A.1: a jump of
/// `MAX_DROPOUT` (3000) or more, or back beyond `MAX_MISORDER` (100), is dropped, and if the next
/// packet follows it in sequence the source is taken as restarted. Packets of the source just
/// left are dropped until the new one has been silent for [`SWITCH_BACK_HOLDOFF`].
///
/// Initial sequence number and timestamp are the caller's (RFC 3550 §5.1 wants them random; the
/// engine draws no randomness itself).
#[derive(Clone, Debug)]
pub struct StreamRewriter {
    out_ssrc: Ssrc,
    clock_rate: ClockRate,
    initial_seq: SeqNo,
    initial_ts: u32,
    source: Option<Source>,
    /// The source before the current one; its late packets are dropped, not taken for a switch.
    previous: Option<Ssrc>,
    /// The newest packet sent: sequence number, timestamp, and when.
    last_out: Option<(SeqNo, u32, Instant)>,
    restart: bool,
}

/// A.1's thresholds, in packets.
const MAX_DROPOUT: u16 = 3000;
const MAX_MISORDER: u16 = 100;

/// How long the current source must be silent before packets from the previous one are taken as
/// a switch back rather than stragglers. Longer than any jitter-buffer reordering, shorter than a
/// hold/resume pause (and [`StreamRewriter::restart_source`] lifts it at once).
pub const SWITCH_BACK_HOLDOFF: std::time::Duration = std::time::Duration::from_millis(500);

/// The mapping for one incoming source.
#[derive(Clone, Copy, Debug)]
struct Source {
    ssrc: Ssrc,
    /// out seq = in seq + seq_offset (mod 2^16).
    seq_offset: u16,
    /// out ts = in ts + ts_offset (mod 2^32).
    ts_offset: u32,
    /// First outgoing sequence number of this source; anything older is dropped.
    first_out: SeqNo,
    /// Highest incoming sequence number seen.
    max_in: SeqNo,
    /// The packet after an unconfirmed jump, which would confirm it (A.1 `bad_seq`).
    bad_seq: Option<SeqNo>,
    /// When the source's latest packet arrived.
    last_in: Instant,
}

impl StreamRewriter {
    /// A rewriter sending as `out_ssrc`, starting at `initial_seq` and `initial_ts`, for a
    /// payload clock of `clock_rate`.
    pub fn new(out_ssrc: Ssrc, clock_rate: ClockRate, initial_seq: SeqNo, initial_ts: u32) -> Self {
        StreamRewriter {
            out_ssrc,
            clock_rate,
            initial_seq,
            initial_ts,
            source: None,
            previous: None,
            last_out: None,
            restart: false,
        }
    }

    /// The outgoing SSRC.
    pub fn out_ssrc(&self) -> Ssrc {
        self.out_ssrc
    }

    /// The incoming SSRC currently mapped.
    pub fn in_ssrc(&self) -> Option<Ssrc> {
        self.source.map(|s| s.ssrc)
    }

    /// Treats the next packet as the start of a new source even if its SSRC is unchanged: call it
    /// after a re-INVITE that changed the far end's media, or a DTLS restart.
    pub fn restart_source(&mut self) {
        self.restart = true;
        self.previous = None;
    }

    /// The incoming sequence number that `out` was rewritten from, for the current source, so a
    /// NACK from the receiver can be forwarded to the sender. `None` if `out` precedes the
    /// current source.
    pub fn incoming_seq(&self, out: SeqNo) -> Option<SeqNo> {
        let s = self.source?;
        if s.first_out.is_newer_than(out) {
            return None;
        }
        Some(SeqNo(out.0.wrapping_sub(s.seq_offset)))
    }

    /// Rewrites the RTP packet in `buf` in place (SSRC, sequence number, timestamp and, on a
    /// switch, the marker bit), arrived at `now`. The packet must be plaintext: rewrite after
    /// SRTP unprotect, protect after.
    pub fn rewrite(&mut self, now: Instant, buf: &mut [u8]) -> Result<Rewrite, ParseError> {
        let mut packet = RtpPacketMut::parse(buf)?;
        let v = packet.view();
        let (ssrc, seq, ts) = (v.ssrc(), v.seq(), v.timestamp());
        let Some(out) = self.map(now, ssrc, seq, ts) else {
            return Ok(Rewrite::Drop);
        };
        packet.set_ssrc(self.out_ssrc);
        packet.set_seq(out.seq);
        packet.set_timestamp(out.ts);
        if out.switched {
            packet.set_marker(true);
        }
        Ok(Rewrite::Forward {
            switched: out.switched,
        })
    }

    /// The mapping decision, separate from the bytes.
    fn map(&mut self, now: Instant, ssrc: Ssrc, seq: SeqNo, ts: u32) -> Option<Mapped> {
        let switch = match self.source {
            None => true,
            Some(_) if self.restart => true,
            Some(s) if s.ssrc == ssrc => {
                let delta = seq.0.wrapping_sub(s.max_in.0);
                if (MAX_DROPOUT..=u16::MAX - MAX_MISORDER).contains(&delta) {
                    // A.1: a large jump restarts the source only if the next packet confirms it.
                    if s.bad_seq != Some(seq) {
                        if let Some(src) = self.source.as_mut() {
                            src.bad_seq = Some(seq.next());
                        }
                        return None;
                    }
                    true
                } else {
                    false
                }
            }
            Some(s) => {
                // A packet from the source we just left, while the new one is live, is a
                // straggler (or the two overlap during a re-INVITE): its sequence space is gone,
                // and switching back and forth would mark every packet.
                let live = now.saturating_duration_since(s.last_in) < SWITCH_BACK_HOLDOFF;
                if self.previous == Some(ssrc) && live {
                    return None;
                }
                true
            }
        };
        let switched = switch && self.last_out.is_some();
        if switch {
            self.switch(now, ssrc, seq, ts);
        }
        // Invariant: `switch` has run if there was no source, so this is always `Some`.
        let src = self.source.as_mut()?;
        let out_seq = SeqNo(seq.0.wrapping_add(src.seq_offset));
        if src.first_out.is_newer_than(out_seq) {
            // Reordered from before the first packet we mapped: it would collide with the
            // previous source's numbers.
            return None;
        }
        if seq.is_newer_than(src.max_in) {
            src.max_in = seq;
        }
        src.last_in = now;
        let out_ts = ts.wrapping_add(src.ts_offset);
        let newest = match self.last_out {
            Some((last, _, _)) => out_seq.is_newer_than(last),
            None => true,
        };
        if newest {
            self.last_out = Some((out_seq, out_ts, now));
        }
        Some(Mapped {
            seq: out_seq,
            ts: out_ts,
            switched,
        })
    }

    /// Starts mapping a new source whose first packet is (`seq`, `ts`), arrived at `now`.
    fn switch(&mut self, now: Instant, ssrc: Ssrc, seq: SeqNo, ts: u32) {
        let (out_seq, out_ts) = match self.last_out {
            None => (self.initial_seq, self.initial_ts),
            Some((last_seq, last_ts, at)) => {
                // At least one tick: the new source's first packet is a new frame, and equal
                // timestamps would say it is part of the previous one.
                let elapsed = self
                    .clock_rate
                    .ticks(now.saturating_duration_since(at))
                    .max(1);
                (last_seq.next(), last_ts.wrapping_add(elapsed as u32))
            }
        };
        if let Some(old) = self.source {
            if old.ssrc != ssrc {
                self.previous = Some(old.ssrc);
            }
        }
        self.source = Some(Source {
            ssrc,
            seq_offset: out_seq.0.wrapping_sub(seq.0),
            ts_offset: out_ts.wrapping_sub(ts),
            first_out: out_seq,
            max_in: seq,
            bad_seq: None,
            last_in: now,
        });
        self.restart = false;
    }
}

/// Outgoing fields for one packet.
#[derive(Clone, Copy, Debug)]
struct Mapped {
    seq: SeqNo,
    ts: u32,
    switched: bool,
}

/// Maps timestamps from one clock rate to another, e.g. telephone-event/48000 on the web leg to
/// telephone-event/8000 on the IMS leg.
///
/// Scaling the raw 32-bit value would break at its wrap (2^32 is not a multiple of 6), so the
/// scaler anchors at the first timestamp it sees and scales the signed distance from there,
/// tracking wraps of the input. The output starts at the first input scaled, modulo 2^32.
#[derive(Clone, Debug)]
pub struct TimestampScaler {
    from: ClockRate,
    to: ClockRate,
    /// First input (as an extended value) and its output.
    anchor: Option<(i64, u32)>,
    /// Newest input seen, extended past 32 bits.
    newest: i64,
}

impl TimestampScaler {
    /// A scaler from clock `from` to clock `to`.
    pub fn new(from: ClockRate, to: ClockRate) -> TimestampScaler {
        TimestampScaler {
            from,
            to,
            anchor: None,
            newest: 0,
        }
    }

    /// The source clock rate.
    pub fn from_rate(&self) -> ClockRate {
        self.from
    }

    /// The target clock rate.
    pub fn to_rate(&self) -> ClockRate {
        self.to
    }

    /// Scales a duration in ticks (e.g. an RFC 4733 event duration), rounding to nearest.
    pub fn scale_duration(&self, ticks: u64) -> u64 {
        let (num, den) = (u128::from(self.to.0), u128::from(self.from.0.max(1)));
        ((u128::from(ticks) * num + den / 2) / den) as u64
    }

    /// Maps an input timestamp to the output clock. Inputs may go backwards (reordering, or
    /// packets of one RFC 4733 event sharing a timestamp) by up to 2^31 ticks.
    pub fn scale(&mut self, ts: u32) -> u32 {
        let (anchor_in, anchor_out) = match self.anchor {
            Some(a) => a,
            None => {
                let a = (i64::from(ts), self.scale_duration(u64::from(ts)) as u32);
                self.anchor = Some(a);
                self.newest = a.0;
                a
            }
        };
        // Extend `ts` to the value nearest the newest input.
        let delta = i64::from(ts.wrapping_sub(self.newest as u32) as i32);
        let ext = self.newest + delta;
        if delta > 0 {
            self.newest = ext;
        }
        let d = ext - anchor_in;
        let (num, den) = (i128::from(self.to.0), i128::from(self.from.0.max(1)));
        // Round to nearest, symmetric for negative distances.
        let scaled = (i128::from(d) * num * 2 + den * i128::from(d.signum())) / (2 * den);
        anchor_out.wrapping_add(scaled as i64 as u32)
    }
}

#[cfg(test)]
#[allow(clippy::disallowed_methods)] // tests need an Instant to start from
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::rtp::{RtpHeader, RtpPacket};
    use crate::Pt;

    fn packet(ssrc: u32, seq: u16, ts: u32, marker: bool) -> [u8; 14] {
        let mut b = [0u8; 14];
        let h = RtpHeader {
            marker,
            pt: Pt(111),
            seq: SeqNo(seq),
            timestamp: ts,
            ssrc: Ssrc(ssrc),
        };
        h.write_with_payload(b"op", &mut b).unwrap();
        b
    }

    /// Rewrites and returns (outcome, seq, ts, ssrc, marker).
    fn run(
        rw: &mut StreamRewriter,
        now: Instant,
        ssrc: u32,
        seq: u16,
        ts: u32,
    ) -> (Rewrite, u16, u32, u32, bool) {
        let mut b = packet(ssrc, seq, ts, false);
        let r = rw.rewrite(now, &mut b).unwrap();
        let p = RtpPacket::parse(&b).unwrap();
        (r, p.seq().0, p.timestamp(), p.ssrc().0, p.marker())
    }

    const FWD: Rewrite = Rewrite::Forward { switched: false };
    const SWITCH: Rewrite = Rewrite::Forward { switched: true };

    #[test]
    fn ssrc_switch_keeps_stream_continuous() {
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let mut rw = StreamRewriter::new(Ssrc(0xe57), ClockRate::OPUS, SeqNo(65534), 1_000);
        // Source A: 20 ms Opus packets.
        assert_eq!(
            run(&mut rw, at(0), 0xa, 500, 90_000),
            (FWD, 65534, 1_000, 0xe57, false)
        );
        assert_eq!(
            run(&mut rw, at(20), 0xa, 501, 90_960),
            (FWD, 65535, 1_960, 0xe57, false)
        );
        assert_eq!(
            run(&mut rw, at(40), 0xa, 502, 91_920),
            (FWD, 0, 2_920, 0xe57, false)
        );
        // Re-INVITE: source B starts 100 ms after A's last packet, with unrelated numbers.
        let r = run(&mut rw, at(140), 0xb, 7, 5);
        assert_eq!(r, (SWITCH, 1, 2_920 + 4_800, 0xe57, true));
        assert_eq!(rw.in_ssrc(), Some(Ssrc(0xb)));
        // B's spacing is kept and the marker is not repeated.
        assert_eq!(
            run(&mut rw, at(160), 0xb, 8, 965),
            (FWD, 2, 7_720 + 960, 0xe57, false)
        );
        // A late packet from A is dropped, not taken for a switch back.
        assert_eq!(run(&mut rw, at(161), 0xa, 503, 92_880).0, Rewrite::Drop);
        // Loss in B passes through as a gap.
        assert_eq!(run(&mut rw, at(220), 0xb, 11, 3_845).1, 5);
        // NACKs map back to B's numbers.
        assert_eq!(rw.incoming_seq(SeqNo(5)), Some(SeqNo(11)));
        assert_eq!(rw.incoming_seq(SeqNo(0)), None);
    }

    #[test]
    fn switch_back_after_holdoff() {
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let mut rw = StreamRewriter::new(Ssrc(1), ClockRate::NARROWBAND, SeqNo(0), 0);
        run(&mut rw, at(0), 0xa, 10, 0);
        assert_eq!(run(&mut rw, at(20), 0xb, 50, 0).0, SWITCH);
        // A and B overlap: A is dropped while B is live.
        assert_eq!(run(&mut rw, at(40), 0xa, 11, 160).0, Rewrite::Drop);
        assert_eq!(run(&mut rw, at(40), 0xb, 51, 160).1, 2);
        // B falls silent; after the hold-off A takes the stream back.
        let r = run(&mut rw, at(40 + 600), 0xa, 40, 4_800);
        assert_eq!((r.0, r.1, r.2, r.4), (SWITCH, 3, 160 + 160 + 4_800, true));
        // After restart_source, a previous source may switch back at once.
        rw.restart_source();
        assert_eq!(run(&mut rw, at(660), 0xb, 52, 320).0, SWITCH);
    }

    #[test]
    fn first_packet_is_not_marked() {
        let t0 = Instant::now();
        let mut rw = StreamRewriter::new(Ssrc(1), ClockRate::OPUS, SeqNo(10), 0);
        let mut b = packet(9, 100, 0, false);
        assert_eq!(rw.rewrite(t0, &mut b), Ok(FWD));
        assert!(!RtpPacket::parse(&b).unwrap().marker());
        // A marker the source set survives.
        let mut b = packet(9, 101, 960, true);
        rw.rewrite(t0, &mut b).unwrap();
        assert!(RtpPacket::parse(&b).unwrap().marker());
    }

    #[test]
    fn restart_with_same_ssrc() {
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let mut rw = StreamRewriter::new(Ssrc(1), ClockRate::NARROWBAND, SeqNo(0), 0);
        run(&mut rw, at(0), 5, 100, 800);
        run(&mut rw, at(20), 5, 101, 960);
        rw.restart_source();
        // DTLS restart: same SSRC, counters reset; a 1 s pause.
        assert_eq!(
            run(&mut rw, at(1020), 5, 0, 0),
            (SWITCH, 2, 160 + 8000, 1, true)
        );
        assert_eq!(run(&mut rw, at(1040), 5, 1, 160).1, 3);
    }

    #[test]
    fn confirmed_jump_restarts_source() {
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let mut rw = StreamRewriter::new(Ssrc(1), ClockRate::NARROWBAND, SeqNo(0), 0);
        run(&mut rw, at(0), 5, 100, 0);
        run(&mut rw, at(20), 5, 101, 160);
        // Jump by 20000: dropped until the next packet confirms it.
        assert_eq!(run(&mut rw, at(40), 5, 20_101, 999).0, Rewrite::Drop);
        assert_eq!(
            run(&mut rw, at(60), 5, 20_102, 1_159),
            (SWITCH, 2, 160 + 320, 1, true)
        );
        // A small forward gap is loss, not a restart.
        assert_eq!(
            run(&mut rw, at(100), 5, 20_105, 1_639),
            (FWD, 5, 480 + 480, 1, false)
        );
        // A stray far-off packet alone does not restart.
        assert_eq!(run(&mut rw, at(120), 5, 50_000, 0).0, Rewrite::Drop);
        assert_eq!(run(&mut rw, at(140), 5, 20_106, 1_799).1, 6);
    }

    #[test]
    fn reordering_within_a_source() {
        let t0 = Instant::now();
        let mut rw = StreamRewriter::new(Ssrc(1), ClockRate::OPUS, SeqNo(65535), 0);
        assert_eq!(run(&mut rw, t0, 5, 10, 0).1, 65535);
        assert_eq!(run(&mut rw, t0, 5, 12, 1920).1, 1);
        assert_eq!(run(&mut rw, t0, 5, 11, 960), (FWD, 0, 960, 1, false));
        // Older than the source's first packet: no place in the outgoing numbering.
        assert_eq!(run(&mut rw, t0, 5, 9, 0).0, Rewrite::Drop);
        // A switch after reordering continues after the newest, not the last processed.
        let r = run(&mut rw, t0 + Duration::from_millis(20), 6, 1, 1);
        assert_eq!((r.0, r.1, r.2), (SWITCH, 2, 1920 + 960));
    }

    #[test]
    fn scaler_48k_to_8k() {
        let mut s = TimestampScaler::new(ClockRate::OPUS, ClockRate::NARROWBAND);
        let base = s.scale(48_000);
        assert_eq!(base, 8_000);
        assert_eq!(s.scale(48_960), 8_160);
        assert_eq!(s.scale(48_000), 8_000); // backwards is fine
        assert_eq!(s.scale_duration(960), 160);
        assert_eq!(s.scale_duration(1_000), 167); // rounded
                                                  // Across the 32-bit wrap of the input.
        let mut s = TimestampScaler::new(ClockRate::OPUS, ClockRate::NARROWBAND);
        let a = s.scale(u32::MAX - 959);
        let b = s.scale(0); // 960 ticks later
        assert_eq!(b.wrapping_sub(a), 160);
        let c = s.scale(960 * 5 - 960);
        assert_eq!(c.wrapping_sub(a), 160 * 5);
    }

    #[test]
    fn scaler_8k_to_48k() {
        let mut s = TimestampScaler::new(ClockRate::NARROWBAND, ClockRate::OPUS);
        let a = s.scale(100);
        assert_eq!(s.scale(260).wrapping_sub(a), 960);
        assert_eq!(s.scale(20).wrapping_sub(a) as i32, -480);
    }
}
