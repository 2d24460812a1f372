//! RTCP terminated per leg. Each leg of a stream is its own RTP session (RFC 3550 §7.2: the
//! gateway is an end system toward both sides, not a translator), so each gets reports about
//! what *it* exchanged with the gateway: an SR for the stream the gateway sends on that leg,
//! a report block for the stream it receives there, and an SDES CNAME. What arrives is read
//! (SRs for LSR/DLSR, feedback), never forwarded as is.
//!
//! Feedback is the exception: a key-frame request or a NACK concerns media that crossed the
//! gateway, so it is translated to the other leg (SSRCs and sequence numbers into that leg's
//! space) when that leg negotiated a form of it, and counted as dropped when it did not.

use std::time::{Duration, Instant};

use estuary_rtp::rtcp::{write, FirEntry, ReportBlock, TmmbEntry};
use estuary_rtp::{ClockRate, NtpTime, ReceiverStats, RtpPacket, SenderStats, SeqNo, Ssrc};
use estuary_sdp::Feedback;
use rand::Rng;

/// RFC 3550 §6.2's minimum report interval, which a two-party session keeps (its bandwidth
/// share never lengthens it); randomised per report (§6.3.1) so legs do not synchronise.
pub const REPORT_INTERVAL: Duration = Duration::from_secs(5);

/// The CNAME of every stream the gateway sends; the web SDP announces it in a=ssrc/msid.
pub const CNAME: &[u8] = b"estuary";

/// The largest compound the gateway writes: SR with one block, SDES, one feedback message.
pub const MAX_COMPOUND: usize = 256;

/// RTCP state of one leg of one stream.
pub struct LegRtcp {
    /// The SSRC the gateway sends with on this leg (also the sender of its RTCP).
    ssrc: Ssrc,
    clock: ClockRate,
    send: SenderStats,
    /// The far end's stream on this leg; replaced when its SSRC changes.
    recv: Option<ReceiverStats>,
    /// Media packets received on this leg, every SSRC (for the call's record).
    packets_in: u64,
    next_report: Instant,
    /// RFC 5104 §4.3.1.2: incremented per new FIR the gateway sends on this leg.
    fir_seq: u8,
    /// The last FIR sequence number received on this leg, so repeats are not new requests.
    last_fir_in: Option<u8>,
}

impl LegRtcp {
    pub fn new(ssrc: Ssrc, clock: ClockRate, now: Instant, rng: &mut impl Rng) -> LegRtcp {
        LegRtcp {
            ssrc,
            clock,
            send: SenderStats::new(ssrc, clock),
            recv: None,
            packets_in: 0,
            // §6.2: the first report after half the minimum interval.
            next_report: now + jittered(REPORT_INTERVAL / 2, rng),
            fir_seq: 0,
            last_fir_in: None,
        }
    }

    pub fn ssrc(&self) -> Ssrc {
        self.ssrc
    }

    /// The far end's SSRC on this leg, once it sent media.
    pub fn remote_ssrc(&self) -> Option<Ssrc> {
        self.recv.as_ref().map(ReceiverStats::ssrc)
    }

    /// Per packet: media from this leg's far end (plaintext, before any rewriting).
    pub fn on_media_received(&mut self, now: Instant, p: &RtpPacket<'_>) {
        self.packets_in += 1;
        let stats = match &mut self.recv {
            Some(r) if r.ssrc() == p.ssrc() => r,
            slot => slot.insert(ReceiverStats::new(p.ssrc(), self.clock)),
        };
        stats.receive(now, p.seq(), p.timestamp());
    }

    /// Per packet: media the gateway sent on this leg (plaintext, after rewriting).
    pub fn on_media_sent(&mut self, now: Instant, p: &RtpPacket<'_>) {
        self.send.send(now, p.timestamp(), p.payload().len());
    }

    /// What this leg exchanged, for the call's record.
    pub fn report(&self) -> crate::LegReport {
        let (lost, jitter) = self.recv.as_ref().map_or((0, 0), |r| (r.lost(), r.jitter()));
        crate::LegReport {
            received: self.packets_in,
            lost,
            jitter_ms: f64::from(jitter) * 1000.0 / f64::from(self.clock.0.max(1)),
            sent: u64::from(self.send.packet_count()),
            sent_octets: u64::from(self.send.octet_count()),
        }
    }

    /// An SR from the far end, for the LSR/DLSR of our next report block.
    pub fn on_sender_report(&mut self, now: Instant, ssrc: Ssrc, ntp: NtpTime) {
        if let Some(r) = self.recv.as_mut().filter(|r| r.ssrc() == ssrc) {
            r.receive_sender_report(now, ntp);
        }
    }

    /// A FIR entry for our stream arrived: true if it is a new request, false for a repeat.
    pub fn on_fir(&mut self, seq_nr: u8) -> bool {
        let new = self.last_fir_in != Some(seq_nr);
        self.last_fir_in = Some(seq_nr);
        new
    }

    pub fn next_report(&self) -> Instant {
        self.next_report
    }

    /// Whether a report is due at `now`; if so the next one is scheduled.
    pub fn take_due(&mut self, now: Instant, rng: &mut impl Rng) -> bool {
        if now < self.next_report {
            return false;
        }
        self.next_report = now + jittered(REPORT_INTERVAL, rng);
        true
    }

    /// Writes this leg's regular compound report at the start of `buf`: SR if the gateway
    /// sent media on this leg (else RR), with a block about the far end's stream once valid,
    /// then SDES CNAME. Starts a new loss interval for the block.
    pub fn write_report(&mut self, now: Instant, ntp: NtpTime, buf: &mut [u8]) -> usize {
        let block: Option<ReportBlock> = self.recv.as_mut().and_then(|r| r.report_block(now));
        let blocks = block.as_slice();
        let len = match self.send.sender_info(now, ntp) {
            Some(info) => write::sender_report(buf, &info, blocks),
            None => write::receiver_report(buf, self.ssrc, blocks),
        }
        .unwrap_or(0);
        len + write::sdes_cname(&mut buf[len..], self.ssrc, CNAME).unwrap_or(0)
    }

    /// The minimal compound that carries feedback (RFC 4585 §3.1: RR and SDES first).
    fn write_feedback_prefix(&self, buf: &mut [u8]) -> usize {
        let len = write::receiver_report(buf, self.ssrc, &[]).unwrap_or(0);
        len + write::sdes_cname(&mut buf[len..], self.ssrc, CNAME).unwrap_or(0)
    }

    /// A key-frame request to `media` on this leg in the form it negotiated: PLI, else FIR.
    /// `None` when the leg negotiated neither.
    pub fn write_keyframe_request(&mut self, fb: Feedback, media: Ssrc, buf: &mut [u8]) -> Option<usize> {
        let len = self.write_feedback_prefix(buf);
        let n = if fb.pli {
            write::pli(&mut buf[len..], self.ssrc, media).ok()?
        } else if fb.fir {
            self.fir_seq = self.fir_seq.wrapping_add(1);
            let entry = FirEntry { ssrc: media, seq_nr: self.fir_seq };
            write::fir(&mut buf[len..], self.ssrc, &[entry]).ok()?
        } else {
            return None;
        };
        Some(len + n)
    }

    /// A TMMBN (RFC 5104 §4.2.2) answering `owner`'s TMMBR: the gateway, as the media sender
    /// on this leg, now keeps to `tuple` (the bounding set is the one request there is).
    pub fn write_tmmbn(&self, tuple: TmmbEntry, buf: &mut [u8]) -> Option<usize> {
        let len = self.write_feedback_prefix(buf);
        let n = write::tmmbn(&mut buf[len..], self.ssrc, &[tuple]).ok()?;
        Some(len + n)
    }

    /// A generic NACK to `media` on this leg for `lost` (already in that leg's sequence
    /// space). `None` when the leg did not negotiate NACK or nothing maps.
    pub fn write_nack(&self, fb: Feedback, media: Ssrc, lost: impl IntoIterator<Item = SeqNo>, buf: &mut [u8]) -> Option<usize> {
        if !fb.nack {
            return None;
        }
        let len = self.write_feedback_prefix(buf);
        // A NACK that would overflow our compound is cut short: the sender retransmits less.
        let room = buf.len().min(MAX_COMPOUND);
        match write::nack(&mut buf[len..room], self.ssrc, media, lost.into_iter().take(32)) {
            Ok(0) | Err(_) => None,
            Ok(n) => Some(len + n),
        }
    }
}

/// `base` scaled by a uniform factor in [0.5, 1.5] and divided by e - 3/2 (RFC 3550 §6.3.1,
/// A.7: the compensation for the timer reconsideration bias).
fn jittered(base: Duration, rng: &mut impl Rng) -> Duration {
    let factor: f64 = rng.random_range(0.5..1.5);
    base.mul_f64(factor / (std::f64::consts::E - 1.5))
}

#[cfg(test)]
mod tests {
    use super::*;
    use estuary_rtp::rtcp::{Compound, RtcpPacket};
    use estuary_rtp::{Pt, RtpHeader};
    use rand::SeedableRng;

    fn packet(seq: u16, ts: u32, ssrc: u32) -> Vec<u8> {
        let mut buf = vec![0u8; 200];
        let h = RtpHeader { marker: false, pt: Pt(0), seq: SeqNo(seq), timestamp: ts, ssrc: Ssrc(ssrc) };
        let n = h.write_with_payload(&[0u8; 160], &mut buf).unwrap();
        buf.truncate(n);
        buf
    }

    #[test]
    fn reports_are_rr_until_the_gateway_sends_then_sr_with_a_block() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        let t0 = Instant::now();
        let mut leg = LegRtcp::new(Ssrc(7), ClockRate::NARROWBAND, t0, &mut rng);
        assert!(leg.next_report() >= t0 + Duration::from_millis(1000) && leg.next_report() <= t0 + Duration::from_millis(3100));
        let mut buf = [0u8; MAX_COMPOUND];
        let n = leg.write_report(t0, NtpTime::default(), &mut buf);
        let kinds: Vec<_> = Compound::new(&buf[..n]).map(|p| p.unwrap().packet_type()).collect();
        assert_eq!(kinds, [estuary_rtp::rtcp::PacketType::RR, estuary_rtp::rtcp::PacketType::SDES]);

        for i in 0..50u16 {
            let t = t0 + Duration::from_millis(20 * u64::from(i));
            // Every fifth packet lost.
            if i % 5 != 4 {
                leg.on_media_received(t, &RtpPacket::parse(&packet(1000 + i, 160 * u32::from(i), 99)).unwrap());
            }
            leg.on_media_sent(t, &RtpPacket::parse(&packet(i, 160 * u32::from(i), 7)).unwrap());
        }
        let n = leg.write_report(t0 + Duration::from_secs(1), NtpTime::default(), &mut buf);
        let mut it = Compound::new(&buf[..n]);
        let Some(Ok(RtcpPacket::SenderReport(sr))) = it.next() else { panic!("SR first") };
        assert_eq!((sr.ssrc(), sr.info().packet_count, sr.info().octet_count), (Ssrc(7), 50, 50 * 160));
        let b: Vec<ReportBlock> = sr.report_blocks().collect();
        assert_eq!(b.len(), 1);
        assert_eq!(b[0].ssrc, Ssrc(99));
        assert_eq!(b[0].ext_highest_seq, 1048, "the last received, 1049 was lost");
        assert_eq!(b[0].cumulative_lost, 9);
        assert!(b[0].fraction_lost > 40 && b[0].fraction_lost < 60, "{} / 256 close to 20%", b[0].fraction_lost);
        let Some(Ok(RtcpPacket::Sdes(sdes))) = it.next() else { panic!("SDES second") };
        assert_eq!(sdes.cname(), Some((Ssrc(7), CNAME)));
    }

    #[test]
    fn keyframe_requests_take_the_negotiated_form() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(2);
        let mut leg = LegRtcp::new(Ssrc(7), ClockRate(90_000), Instant::now(), &mut rng);
        let mut buf = [0u8; MAX_COMPOUND];
        let pli = Feedback { pli: true, ..Feedback::default() };
        let n = leg.write_keyframe_request(pli, Ssrc(42), &mut buf).unwrap();
        let last = Compound::new(&buf[..n]).last().unwrap().unwrap();
        assert_eq!(last, RtcpPacket::Pli(estuary_rtp::rtcp::Pli { sender: Ssrc(7), media: Ssrc(42) }));

        let fir = Feedback { fir: true, ..Feedback::default() };
        for want in 1..=2u8 {
            let n = leg.write_keyframe_request(fir, Ssrc(42), &mut buf).unwrap();
            let Some(Ok(RtcpPacket::Fir(f))) = Compound::new(&buf[..n]).last() else { panic!("FIR") };
            assert_eq!(f.entries().collect::<Vec<_>>(), [FirEntry { ssrc: Ssrc(42), seq_nr: want }]);
        }
        assert_eq!(leg.write_keyframe_request(Feedback::default(), Ssrc(42), &mut buf), None);
        assert!(leg.on_fir(5) && !leg.on_fir(5) && leg.on_fir(6), "repeats of one FIR are one request");
    }

    #[test]
    fn nack_only_where_negotiated() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(3);
        let leg = LegRtcp::new(Ssrc(7), ClockRate(90_000), Instant::now(), &mut rng);
        let mut buf = [0u8; MAX_COMPOUND];
        assert_eq!(leg.write_nack(Feedback::default(), Ssrc(42), [SeqNo(1)], &mut buf), None);
        let nack = Feedback { nack: true, ..Feedback::default() };
        let n = leg.write_nack(nack, Ssrc(42), [SeqNo(10), SeqNo(12)], &mut buf).unwrap();
        let Some(Ok(RtcpPacket::Nack(k))) = Compound::new(&buf[..n]).last() else { panic!("NACK") };
        assert_eq!(k.lost().collect::<Vec<_>>(), [SeqNo(10), SeqNo(12)]);
        assert_eq!(k.media, Ssrc(42));
    }
}
