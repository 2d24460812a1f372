//! RFC 4733 telephone-event payloads (DTMF), and their rescaling between clock rates.
//!
//! ```text
//!  0                   1                   2                   3
//!  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |     event     |E|R| volume    |          duration             |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! ```
//!
//! RFC 4733 §2.3. All packets of one event carry the event's start as their RTP timestamp and
//! the duration so far in the same clock's units; the last three repeat with E set.

use crate::bytes::{put_u16, u16_at};
use crate::error::{need, room, ParseError, WriteError};
use crate::rewrite::TimestampScaler;
use crate::rtp::RtpPacketMut;

/// One telephone event (RFC 4733 §2.3).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TelephoneEvent {
    /// The event code (RFC 4733 §3.2: 0–9 digits, 10 `*`, 11 `#`, 12–15 A–D).
    pub event: u8,
    /// E: this packet ends the event.
    pub end: bool,
    /// Power level in −dBm0, 0..=63 (6 bits; writers mask it).
    pub volume: u8,
    /// Duration so far, in RTP timestamp units of the payload's clock.
    pub duration: u16,
}

impl TelephoneEvent {
    /// Length of one event on the wire.
    pub const LEN: usize = 4;

    /// Reads the event at the start of an RTP payload. The R bit is ignored, as §2.3.3 tells
    /// receivers.
    pub fn parse(payload: &[u8]) -> Result<TelephoneEvent, ParseError> {
        need("telephone-event", payload, Self::LEN)?;
        Ok(TelephoneEvent {
            event: payload[0],
            end: payload[1] & 0x80 != 0,
            volume: payload[1] & 0x3f,
            duration: u16_at(payload, 2),
        })
    }

    /// Writes the event to the start of `buf` (R = 0); returns 4.
    pub fn write(&self, buf: &mut [u8]) -> Result<usize, WriteError> {
        room(buf, Self::LEN)?;
        buf[0] = self.event;
        buf[1] = if self.end { 0x80 } else { 0 } | (self.volume & 0x3f);
        put_u16(buf, 2, self.duration);
        Ok(Self::LEN)
    }
}

/// Rescales a telephone-event RTP packet in place from the scaler's source clock to its target
/// clock (e.g. telephone-event/48000 from a browser to telephone-event/8000 for IMS): the RTP
/// timestamp through `scaler` and the duration of every event in the payload. Returns the (first)
/// event as rewritten.
///
/// Use one scaler per stream, so all packets of an event, which share a timestamp, map to the
/// same output timestamp. Durations round to nearest and saturate at 65535 when scaling up; RFC
/// 4733 §2.5.1.3 would split such a long event into segments, which this does not do.
pub fn rescale_telephone_event(
    packet: &mut [u8],
    scaler: &mut TimestampScaler,
) -> Result<TelephoneEvent, ParseError> {
    let mut p = RtpPacketMut::parse(packet)?;
    let ts = p.view().timestamp();
    let payload = p.payload_mut();
    TelephoneEvent::parse(payload)?;
    // A payload may hold several 4-byte events (§2.5.1.5 sends none today, but the layout
    // allows it); any trailing partial word is left alone.
    for ev in payload.chunks_exact_mut(TelephoneEvent::LEN) {
        let d = scaler.scale_duration(u64::from(u16_at(ev, 2)));
        put_u16(ev, 2, u16::try_from(d).unwrap_or(u16::MAX));
    }
    p.set_timestamp(scaler.scale(ts));
    TelephoneEvent::parse(p.payload_mut())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::id::{ClockRate, Pt, SeqNo, Ssrc};
    use crate::rtp::{RtpHeader, RtpPacket};

    /// RFC 4733 §2.3 layout: digit 5, E=1, R=0, volume 10 dBm0, duration 1600 (200 ms at 8 kHz).
    const DIGIT_5_END: [u8; 4] = [0x05, 0x8a, 0x06, 0x40];

    #[test]
    fn rfc4733_layout() {
        let ev = TelephoneEvent::parse(&DIGIT_5_END).unwrap();
        assert_eq!(
            ev,
            TelephoneEvent {
                event: 5,
                end: true,
                volume: 10,
                duration: 1600
            }
        );
        let mut out = [0u8; 4];
        assert_eq!(ev.write(&mut out), Ok(4));
        assert_eq!(out, DIGIT_5_END);
        // R set by a sender is ignored.
        let ev = TelephoneEvent::parse(&[11, 0x40 | 7, 0, 160]).unwrap();
        assert_eq!(
            ev,
            TelephoneEvent {
                event: 11,
                end: false,
                volume: 7,
                duration: 160
            }
        );
        assert!(TelephoneEvent::parse(&[1, 2, 3]).is_err());
        // Volume is masked to 6 bits so it cannot set E or R.
        let mut out = [0u8; 4];
        TelephoneEvent {
            event: 1,
            end: false,
            volume: 0xff,
            duration: 0,
        }
        .write(&mut out)
        .unwrap();
        assert_eq!(out[1], 0x3f);
    }

    fn event_packet(ts: u32, seq: u16, ev: TelephoneEvent) -> [u8; 16] {
        let mut b = [0u8; 16];
        let h = RtpHeader {
            marker: seq == 0,
            pt: Pt(101),
            seq: SeqNo(seq),
            timestamp: ts,
            ssrc: Ssrc(3),
        };
        h.write(&mut b).unwrap();
        ev.write(&mut b[12..]).unwrap();
        b
    }

    #[test]
    fn rescales_48k_to_8k() {
        let mut scaler = TimestampScaler::new(ClockRate::OPUS, ClockRate::NARROWBAND);
        // Audio before the event fixes the mapping: ts 96000 -> 16000.
        assert_eq!(scaler.scale(96_000), 16_000);
        // Digit 1 starting at 48 kHz ts 96960, updates every 50 ms (2400 ticks), then the end.
        let mut outs = Vec::new();
        for (seq, dur, end) in [(0u16, 2400u16, false), (1, 4800, false), (2, 7200, true)] {
            let ev = TelephoneEvent {
                event: 1,
                end,
                volume: 10,
                duration: dur,
            };
            let mut p = event_packet(96_960, seq, ev);
            let got = rescale_telephone_event(&mut p, &mut scaler).unwrap();
            let v = RtpPacket::parse(&p).unwrap();
            outs.push((v.timestamp(), got.duration, got.end));
            assert_eq!(v.seq(), SeqNo(seq));
            assert_eq!(got.event, 1);
            assert_eq!(got.volume, 10);
        }
        assert_eq!(
            outs,
            [
                (16_160, 400, false),
                (16_160, 800, false),
                (16_160, 1200, true)
            ]
        );
    }

    #[test]
    fn rescales_8k_to_48k_saturating() {
        let mut scaler = TimestampScaler::new(ClockRate::NARROWBAND, ClockRate::OPUS);
        let ev = TelephoneEvent {
            event: 9,
            end: false,
            volume: 0,
            duration: 20_000,
        };
        let mut p = event_packet(800, 0, ev);
        let got = rescale_telephone_event(&mut p, &mut scaler).unwrap();
        assert_eq!(got.duration, u16::MAX);
        assert_eq!(RtpPacket::parse(&p).unwrap().timestamp(), 4_800);
    }

    #[test]
    fn short_payload_is_an_error() {
        let mut scaler = TimestampScaler::new(ClockRate::OPUS, ClockRate::NARROWBAND);
        let mut p = event_packet(0, 0, TelephoneEvent::default());
        assert!(rescale_telephone_event(&mut p[..14], &mut scaler).is_err());
    }
}
