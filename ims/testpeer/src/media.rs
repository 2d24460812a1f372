//! One call's media at the test peer: echo (every RTP packet back to its source, as the peer's
//! own stream) or a 1 kHz tone, and for echo calls with video the video echo ([`VideoEcho`]).
//! Owned by whoever runs the call's sockets; no shared state.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use estuary_rtp::{Pt, RtpHeader, RtpPacket, SeqNo, Ssrc};
use estuary_transcoder::Law;

/// What the call does with media.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Behaviour {
    /// Sends back what it receives.
    Echo,
    /// Plays a 1 kHz tone at -10 dBFS, 20 ms packets, whatever it receives.
    Tone,
}

/// The negotiated stream: where to send before anything arrives, and in which codec.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stream {
    /// The address in the offer or answer (c= and m= port); `None` for c=0.0.0.0 or port 0.
    pub remote: Option<SocketAddr>,
    /// Payload type and law of the G.711 codec in use.
    pub pt: u8,
    pub law: Law,
    /// Whether the far end wants media from us (its direction is sendrecv or recvonly).
    pub send: bool,
}

/// 20 ms at 8 kHz.
const SAMPLES: usize = 160;
const PTIME: Duration = Duration::from_millis(20);
/// -10 dBFS peak: loud enough to hear and to measure, far from clipping after any gain.
const TONE_PEAK: f64 = 32767.0 * 0.316_227_766;

/// RTCP packet types 192..=223 share the port when RTCP lands on the RTP port (RFC 5761 §4).
fn is_rtcp(buf: &[u8]) -> bool {
    buf.len() >= 2 && (192..=223).contains(&(buf[1] & 0x7f | 0x80))
}

/// Where a stream's media goes: nowhere unless the far end receives, else symmetric RTP (where
/// its media came from) before the SDP address.
fn destination(send: bool, latched: Option<SocketAddr>, remote: Option<SocketAddr>) -> Option<SocketAddr> {
    send.then_some(latched.or(remote)).flatten()
}

/// The RTP packet a datagram carries; `None` for RTCP (which the peer neither echoes nor
/// answers) and for anything that is not RTP.
fn rtp_in(data: &[u8]) -> Option<RtpPacket<'_>> {
    if is_rtcp(data) {
        return None;
    }
    RtpPacket::parse(data).ok()
}

/// Rewrites the received packet in `buf` into ours in place: `header`, then their payload
/// (`payload`, padding left out). Their CSRCs and extensions are theirs, so only our fixed
/// header goes in front. Returns the new length.
fn write_echo(buf: &mut [u8], payload: std::ops::Range<usize>, header: &RtpHeader) -> Option<usize> {
    let len = payload.len();
    buf.copy_within(payload, 12);
    header.write(buf).ok()?;
    Some(12 + len)
}

/// One call's media state.
#[derive(Debug)]
pub struct CallMedia {
    behaviour: Behaviour,
    stream: Stream,
    /// Symmetric RTP: once the gateway's media arrives, answer where it comes from.
    latched: Option<SocketAddr>,
    ssrc: Ssrc,
    seq: u16,
    /// Echo: our timestamp for their first packet, so spacing is kept and our clock is ours.
    ts_offset: Option<u32>,
    ts: u32,
    next_tone: Option<Instant>,
    tone: [u8; SAMPLES],
    /// Packets received and sent (for tests and logs).
    pub received: u64,
    pub sent: u64,
}

impl CallMedia {
    /// A call answered at `now`: a tone's first packet is due then.
    pub fn new(behaviour: Behaviour, stream: Stream, seed: u64, now: Instant) -> CallMedia {
        let mut m = CallMedia {
            behaviour,
            stream,
            latched: None,
            ssrc: Ssrc(seed as u32 | 1),
            seq: (seed >> 32) as u16,
            ts_offset: None,
            ts: (seed >> 16) as u32,
            next_tone: (behaviour == Behaviour::Tone).then_some(now),
            tone: [0; SAMPLES],
            received: 0,
            sent: 0,
        };
        m.set_stream(stream);
        m
    }

    /// A re-offer changed the address, codec or direction.
    pub fn set_stream(&mut self, stream: Stream) {
        self.stream = stream;
        // 1 kHz at 8 kHz is exactly 8 samples per period, so every 20 ms packet is the same.
        let pcm: Vec<i16> = (0..SAMPLES)
            .map(|n| (TONE_PEAK * (std::f64::consts::FRAC_PI_4 * n as f64).sin()).round() as i16)
            .collect();
        stream.law.encode(&pcm, &mut self.tone);
    }

    pub fn behaviour(&self) -> Behaviour {
        self.behaviour
    }

    fn destination(&self) -> Option<SocketAddr> {
        destination(self.stream.send, self.latched, self.stream.remote)
    }

    /// A datagram arrived on the call's port (`len` bytes at the start of `buf`). For echo it
    /// is rewritten in place into our packet: returns where to send `buf[..len]`.
    pub fn handle_datagram(&mut self, from: SocketAddr, buf: &mut [u8], len: usize) -> Option<(SocketAddr, usize)> {
        let pkt = rtp_in(buf.get(..len)?)?;
        self.received += 1;
        self.latched = Some(from);
        if self.behaviour != Behaviour::Echo {
            return None;
        }
        let to = self.destination()?;
        let offset = *self.ts_offset.get_or_insert(self.ts.wrapping_sub(pkt.timestamp()));
        let header = RtpHeader {
            marker: pkt.marker(),
            pt: pkt.pt(),
            seq: SeqNo(self.seq),
            timestamp: pkt.timestamp().wrapping_add(offset),
            ssrc: self.ssrc,
        };
        let range = pkt.payload_range();
        let len = write_echo(buf, range, &header)?;
        self.seq = self.seq.wrapping_add(1);
        self.sent += 1;
        Some((to, len))
    }

    /// When the next tone packet is due (tone calls that may send).
    pub fn poll_timeout(&self) -> Option<Instant> {
        (self.behaviour == Behaviour::Tone && self.destination().is_some()).then_some(self.next_tone).flatten()
    }

    /// The tone packet due at `now`, written into `buf` (at least 172 bytes).
    pub fn poll_transmit(&mut self, now: Instant, buf: &mut [u8]) -> Option<(SocketAddr, usize)> {
        if self.behaviour != Behaviour::Tone {
            return None;
        }
        let to = self.destination()?;
        let due = *self.next_tone.get_or_insert(now);
        if now < due {
            return None;
        }
        // Late by more than a few packets (a stalled driver): restart the cadence rather than
        // sending a burst.
        self.next_tone = Some(if now.duration_since(due) > 5 * PTIME { now + PTIME } else { due + PTIME });
        let header = RtpHeader {
            marker: self.sent == 0,
            pt: Pt(self.stream.pt),
            seq: SeqNo(self.seq),
            timestamp: self.ts,
            ssrc: self.ssrc,
        };
        let len = header.write_with_payload(&self.tone, buf).ok()?;
        self.seq = self.seq.wrapping_add(1);
        self.ts = self.ts.wrapping_add(SAMPLES as u32);
        self.sent += 1;
        Some((to, len))
    }
}

/// The negotiated video stream of an echo call (H.264 at `pt`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VideoStream {
    /// The address in the offer (c= and m= port); `None` for c=0.0.0.0 or port 0.
    pub remote: Option<SocketAddr>,
    pub pt: u8,
    /// Whether the far end wants video from us.
    pub send: bool,
}

/// 90 kHz ticks between the last packet of one source and the first of the next: one frame
/// at 30 fps, so a restarted source goes on without a jump or a step back in our timeline.
const VIDEO_SOURCE_GAP: u32 = 3000;

/// An echo call's video on its own socket: every RTP packet back to where it came from, as
/// the peer's own stream (own SSRC, own sequence numbers, timestamps offset to our clock).
/// The payload is not looked at: the gateway gets back exactly the H.264 it encoded. RTCP is
/// dropped; the peer sends no reports or feedback.
#[derive(Debug)]
pub struct VideoEcho {
    stream: VideoStream,
    latched: Option<SocketAddr>,
    ssrc: Ssrc,
    seq: u16,
    /// Their SSRC and the offset from their timestamps to ours.
    source: Option<(Ssrc, u32)>,
    /// Our timestamp for the next source's first packet.
    next_ts: u32,
    /// Packets received and sent (for tests and logs).
    pub received: u64,
    pub sent: u64,
}

impl VideoEcho {
    pub fn new(stream: VideoStream, seed: u64) -> VideoEcho {
        VideoEcho {
            stream,
            latched: None,
            ssrc: Ssrc(seed as u32 | 1),
            seq: (seed >> 32) as u16,
            source: None,
            next_ts: (seed >> 16) as u32,
            received: 0,
            sent: 0,
        }
    }

    pub fn stream(&self) -> VideoStream {
        self.stream
    }

    /// A re-offer changed the address, payload type or direction.
    pub fn set_stream(&mut self, stream: VideoStream) {
        self.stream = stream;
    }

    /// Our SSRC (for tests).
    pub fn ssrc(&self) -> Ssrc {
        self.ssrc
    }

    /// A datagram arrived on the video port (`len` bytes at the start of `buf`): rewritten in
    /// place into our packet, returns where to send `buf[..len]`.
    pub fn handle_datagram(&mut self, from: SocketAddr, buf: &mut [u8], len: usize) -> Option<(SocketAddr, usize)> {
        let pkt = rtp_in(buf.get(..len)?)?;
        self.received += 1;
        self.latched = Some(from);
        let to = destination(self.stream.send, self.latched, self.stream.remote)?;
        let offset = match self.source {
            Some((ssrc, offset)) if ssrc == pkt.ssrc() => offset,
            _ => {
                // A new source (the first, or the gateway's encoder restarted): our timeline
                // goes on from where it was.
                let offset = self.next_ts.wrapping_sub(pkt.timestamp());
                self.source = Some((pkt.ssrc(), offset));
                offset
            }
        };
        let timestamp = pkt.timestamp().wrapping_add(offset);
        let header = RtpHeader { marker: pkt.marker(), pt: pkt.pt(), seq: SeqNo(self.seq), timestamp, ssrc: self.ssrc };
        let range = pkt.payload_range();
        let n = write_echo(buf, range, &header)?;
        self.next_ts = timestamp.wrapping_add(VIDEO_SOURCE_GAP);
        self.seq = self.seq.wrapping_add(1);
        self.sent += 1;
        Some((to, n))
    }
}
