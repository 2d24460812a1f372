//! Media in a replay: a capture recorded with `recording.mode = "full"` holds, beside SIP, the
//! browser's media after SRTP decryption and the core's media as it was on the wire, both ways,
//! RTCP included. The replay plays what reached the gateway through the core's inline plane
//! ([`InlineMedia`]: one shard of plaintext-browser sessions, past the SRTP layer, transcoding
//! inline) on the replay's virtual clock, and [`compare`] checks what came out against what the gateway sent
//! in the recording: per leg, the RTP packet count, the payload types, each outgoing stream's
//! sequence and timestamp progression, the payloads (relayed media is carried byte for byte),
//! and the RTCP compounds (their shapes; reports are timed at random, so their count only
//! within reason).
//!
//! Ports are the engine's choice, so the recorded gateway's media ports are mapped to the
//! replay's by the SDP both sent: the n-th distinct port list the recorded gateway announced
//! on a side pairs with the n-th the replaying engine announced there.

use std::collections::{HashMap, VecDeque};
use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use estuary_b2bua::Side;
use estuary_core::{Core, InlineMedia};
use estuary_media::{Leg, MediaConfig};
use estuary_rtp::rtcp::Compound;
use estuary_rtp::{classify, PacketKind, RtpPacket};

/// One media datagram of a capture.
#[derive(Clone, Debug)]
pub struct MediaPacket {
    pub at: Duration,
    pub leg: Leg,
    pub src: SocketAddr,
    pub dst: SocketAddr,
    pub data: Vec<u8>,
}

/// The m-line ports of a SIP message's SDP body, if it has one.
fn sdp_ports(sip: &[u8]) -> Option<Vec<u16>> {
    let text = std::str::from_utf8(sip).ok()?;
    let (_, body) = text.split_once("\r\n\r\n")?;
    let ports: Vec<u16> = body.lines().filter_map(|l| l.strip_prefix("m=")).filter_map(|m| m.split(' ').nth(1)?.parse().ok()).collect();
    (!ports.is_empty()).then_some(ports)
}

/// Recorded gateway media ports to the replay's, learnt from the SDP both sides announced.
struct PortMap {
    /// Per side (web, IMS): the recorded gateway's distinct successive port lists, not yet
    /// paired.
    recorded: [VecDeque<Vec<u16>>; 2],
    /// Per side: the last port list the replaying engine announced.
    last: [Option<Vec<u16>>; 2],
    map: HashMap<(usize, u16), u16>,
}

fn side_index(side: Side) -> usize {
    match side {
        Side::Web => 0,
        Side::Ims => 1,
    }
}

impl PortMap {
    /// From the SIP the recorded gateway sent, in order.
    fn new<'a>(expected: impl Iterator<Item = (Side, &'a [u8])>) -> PortMap {
        let mut recorded: [VecDeque<Vec<u16>>; 2] = Default::default();
        for (side, sip) in expected {
            let Some(ports) = sdp_ports(sip) else { continue };
            let q = &mut recorded[side_index(side)];
            // A retransmission, or a re-offer that moved nothing, announces nothing new.
            if q.back() != Some(&ports) {
                q.push_back(ports);
            }
        }
        PortMap { recorded, last: Default::default(), map: HashMap::new() }
    }

    /// The replaying engine sent `sip` on `side`.
    fn emitted(&mut self, side: Side, sip: &[u8]) {
        let Some(ports) = sdp_ports(sip) else { return };
        let i = side_index(side);
        if self.last[i].as_ref() == Some(&ports) {
            return;
        }
        let Some(recorded) = self.recorded[i].pop_front() else { return };
        for (r, p) in recorded.iter().zip(&ports).filter(|(r, p)| **r != 0 && **p != 0) {
            self.map.insert((i, *r), *p);
            if side == Side::Ims {
                // RTCP on the next port, where the core's SDP has no rtcp-mux.
                self.map.insert((i, r.wrapping_add(1)), p.wrapping_add(1));
            }
        }
        self.last[i] = Some(ports);
    }

    fn replay_port(&self, leg: Leg, recorded: u16) -> Option<u16> {
        self.map.get(&(leg.index(), recorded)).copied()
    }
}

/// The media side of a replay: which recorded ports are the replay's, what reached no call,
/// and what the core's inline plane ([`InlineMedia`]) sent, on the capture's timeline.
pub struct MediaReplay {
    ports: PortMap,
    web_address: IpAddr,
    ims_address: IpAddr,
    /// The browser media that reached the recorded gateway, to find each call's browser.
    input_web: Vec<(u16, SocketAddr)>,
    pub emitted: Vec<MediaPacket>,
    /// Packets of the input that reached no call: (leg, recorded destination).
    pub unmapped: Vec<(Leg, SocketAddr)>,
    /// Per input leg (web, IMS): packets that arrived after their call ended here. The
    /// recorded gateway's media thread hears of a call's end a moment after the signalling
    /// does, and may have relayed a few more: [`compare`] allows for them.
    pub late: [usize; 2],
}

impl MediaReplay {
    /// For a replay of `input` whose recorded gateway sent `expected_sip` (side, message),
    /// with the media addresses of `cfg`.
    pub fn new<'a>(cfg: &MediaConfig, input: &[MediaPacket], expected_sip: impl Iterator<Item = (Side, &'a [u8])>) -> MediaReplay {
        MediaReplay {
            ports: PortMap::new(expected_sip),
            web_address: cfg.web_address,
            ims_address: cfg.ims_address,
            input_web: input.iter().filter(|p| p.leg == Leg::Web).fold(Vec::new(), |mut seen, p| {
                // The first source seen on a port is that call's browser.
                if !seen.iter().any(|(port, _)| *port == p.dst.port()) {
                    seen.push((p.dst.port(), p.src));
                }
                seen
            }),
            emitted: Vec::new(),
            unmapped: Vec::new(),
            late: [0; 2],
        }
    }

    /// The engine sent `sip` on `side`: its SDP maps ports, and tells the plane where the
    /// browser of a browser-facing port it announced is (whoever sent media to the recorded
    /// gateway's port).
    pub fn sip_emitted(&mut self, side: Side, sip: &[u8], plane: &mut InlineMedia) {
        self.ports.emitted(side, sip);
        if side == Side::Web {
            for &(recorded, browser) in &self.input_web {
                if let Some(port) = self.ports.replay_port(Leg::Web, recorded) {
                    plane.expect_browser(port, browser);
                }
            }
        }
    }

    /// A media packet of the input, at `now` (`at` on the capture's timeline), into `core`.
    pub fn input(&mut self, core: &mut Core<Option<InlineMedia>>, now: Instant, p: &MediaPacket) {
        let Some(port) = self.ports.replay_port(p.leg, p.dst.port()) else {
            self.unmapped.push((p.leg, p.dst));
            return;
        };
        let ip = if p.leg == Leg::Web { self.web_address } else { self.ims_address };
        let local = SocketAddr::new(ip, port);
        if core.handle_datagram(now, local, p.src, &p.data).is_none() {
            if core.media().as_ref().is_some_and(|m| m.ended_at(local)) {
                self.late[p.leg.index()] += 1;
            } else {
                self.unmapped.push((p.leg, p.dst));
            }
        }
    }

    /// The plane sent a datagram at `at`.
    pub fn emitted(&mut self, at: Duration, from: SocketAddr, to: SocketAddr, data: Vec<u8>, plane: &InlineMedia) {
        let leg = if plane.is_web_local(from) { Leg::Web } else { Leg::Ims };
        self.emitted.push(MediaPacket { at, leg, src: from, dst: to, data });
    }
}

/// An RTP packet as compared: its stream (the SSRC numbered by first appearance), payload
/// type, marker, sequence and timestamp relative to the stream's first packet, payload.
type RtpView = (usize, u8, bool, u16, u32, Vec<u8>);

/// A stream that carries transcoded audio. The transcoder's output depends on when frames
/// were due, which a replay reproduces only closely: what must agree is the payload type, the
/// frame size (the usual timestamp step), roughly the frame count, and, byte for byte, the
/// RFC 4733 events that join the stream (rescaled between the legs' clocks).
#[derive(Default, PartialEq)]
struct TranscodedView {
    audio: usize,
    markers: usize,
    pts: Vec<u8>,
    /// The most frequent timestamp step between audio frames.
    step: Option<u32>,
    /// Sequence numbers have no gap (the gateway numbers this stream itself).
    gapless: bool,
    /// Non-audio packets: payload type, marker, payload.
    events: Vec<(u8, bool, Vec<u8>)>,
}

/// One leg's outgoing media, normalised: what must be the same in a recording and its replay.
#[derive(Default)]
struct LegView {
    /// Relayed streams' RTP packets, in order.
    rtp: Vec<RtpView>,
    /// Streams with transcoded audio.
    transcoded: Vec<TranscodedView>,
    /// Per RTCP compound, in order: its packet types.
    rtcp: Vec<Vec<u8>>,
}

impl LegView {
    /// `transcoded_pts`: the payload types the transcoder sends on this leg.
    fn of<'a>(packets: impl Iterator<Item = &'a MediaPacket>, transcoded_pts: &[u8]) -> LegView {
        let mut v = LegView::default();
        let mut streams: Vec<(u32, u16, u32)> = Vec::new();
        let mut all: Vec<RtpView> = Vec::new();
        for p in packets {
            match classify(&p.data) {
                PacketKind::Rtp => {
                    let Ok(r) = RtpPacket::parse(&p.data) else { continue };
                    let ssrc = r.ssrc().0;
                    let i = streams.iter().position(|s| s.0 == ssrc).unwrap_or_else(|| {
                        streams.push((ssrc, r.seq().0, r.timestamp()));
                        streams.len() - 1
                    });
                    let (_, seq0, ts0) = streams[i];
                    all.push((i, r.pt().0, r.marker(), r.seq().0.wrapping_sub(seq0), r.timestamp().wrapping_sub(ts0), r.payload().to_vec()));
                }
                PacketKind::Rtcp => v.rtcp.push(Compound::new(&p.data).filter_map(|c| c.ok().map(|c| c.packet_type().0)).collect()),
                _ => {}
            }
        }
        let is_transcoded: Vec<bool> = (0..streams.len()).map(|i| all.iter().any(|p| p.0 == i && transcoded_pts.contains(&p.1))).collect();
        for (i, _) in is_transcoded.iter().enumerate().filter(|(_, t)| **t) {
            let mut t = TranscodedView { gapless: true, ..TranscodedView::default() };
            let (mut last_seq, mut last_ts) = (None::<u16>, None::<u32>);
            let mut steps: Vec<(u32, usize)> = Vec::new();
            for p in all.iter().filter(|p| p.0 == i) {
                if last_seq.is_some_and(|s| p.3 != s.wrapping_add(1)) {
                    t.gapless = false;
                }
                last_seq = Some(p.3);
                if !transcoded_pts.contains(&p.1) {
                    t.events.push((p.1, p.2, p.5.clone()));
                    continue;
                }
                t.audio += 1;
                t.markers += usize::from(p.2);
                if !t.pts.contains(&p.1) {
                    t.pts.push(p.1);
                }
                if let Some(prev) = last_ts {
                    let step = p.4.wrapping_sub(prev);
                    match steps.iter_mut().find(|s| s.0 == step) {
                        Some(s) => s.1 += 1,
                        None => steps.push((step, 1)),
                    }
                }
                last_ts = Some(p.4);
            }
            t.step = steps.iter().max_by_key(|s| s.1).map(|s| s.0);
            v.transcoded.push(t);
        }
        v.rtp = all.into_iter().filter(|p| !is_transcoded[p.0]).collect();
        v
    }
}

/// What [`compare`] found equal.
pub struct Agreement {
    pub rtp: [usize; 2],
    /// Of `rtp`, the transcoder's frames.
    pub transcoded: [usize; 2],
    pub rtcp: [usize; 2],
}

/// Compares the media the gateway sent in the recording (`expected`) with what the replay
/// emitted, leg by leg; `Err` holds a readable difference. `late` (per input leg) is how many
/// recorded packets may be missing at the end of the other leg's output: packets that arrived
/// after their call ended (see [`MediaReplay::late`]). `transcoded_pts` (per leg) are the
/// payload types the transcoder produced there (see [`TranscodedView`]).
pub fn compare(expected: &[MediaPacket], emitted: &[MediaPacket], late: [usize; 2], transcoded_pts: &[Vec<u8>; 2]) -> Result<Agreement, String> {
    let mut report = String::new();
    let mut agreed = Agreement { rtp: [0; 2], transcoded: [0; 2], rtcp: [0; 2] };
    for leg in [Leg::Web, Leg::Ims] {
        let name = if leg == Leg::Web { "browser leg" } else { "IMS leg" };
        let pts = &transcoded_pts[leg.index()];
        let mut e = LegView::of(expected.iter().filter(|p| p.leg == leg), pts);
        let a = LegView::of(emitted.iter().filter(|p| p.leg == leg), pts);
        let allowance = late[1 - leg.index()];
        if e.rtp.len() > a.rtp.len() && e.rtp.len() - a.rtp.len() <= allowance {
            e.rtp.truncate(a.rtp.len());
        }
        if e.rtp.len() != a.rtp.len() {
            let _ = writeln!(report, "{name}: {} RTP packets expected, {} emitted", e.rtp.len(), a.rtp.len());
        }
        if let Some(i) = (0..e.rtp.len().min(a.rtp.len())).find(|&i| e.rtp[i] != a.rtp[i]) {
            let show = |p: &RtpView| {
                format!("stream {} pt {} marker {} seq +{} ts +{} payload {} bytes {:02x?}", p.0, p.1, p.2, p.3, p.4, p.5.len(), &p.5[..p.5.len().min(8)])
            };
            let _ = writeln!(report, "{name}, RTP packet {} differs:\n- expected {}\n+ emitted  {}", i + 1, show(&e.rtp[i]), show(&a.rtp[i]));
        }
        compare_transcoded(&mut report, name, &mut e.transcoded, &a.transcoded, allowance);
        let shapes = |v: &LegView| {
            let mut s: Vec<Vec<u8>> = v.rtcp.clone();
            s.sort();
            s.dedup();
            s
        };
        if shapes(&e) != shapes(&a) {
            let _ = writeln!(report, "{name}: RTCP compounds of packet types {:?} expected, {:?} emitted", shapes(&e), shapes(&a));
        }
        if e.rtcp.last() != a.rtcp.last() {
            let _ = writeln!(report, "{name}: the last RTCP compound is {:?} in the recording, {:?} in the replay", e.rtcp.last(), a.rtcp.last());
        }
        // Report intervals are drawn at random (RFC 3550 §6.3.1): the counts may differ a little.
        let (n, m) = (e.rtcp.len(), a.rtcp.len());
        if n.abs_diff(m) > 2.max(n / 2) {
            let _ = writeln!(report, "{name}: {n} RTCP compounds expected, {m} emitted");
        }
        let transcoded: usize = a.transcoded.iter().map(|t| t.audio + t.events.len()).sum();
        agreed.rtp[leg.index()] = a.rtp.len() + transcoded;
        agreed.transcoded[leg.index()] = a.transcoded.iter().map(|t| t.audio).sum();
        agreed.rtcp[leg.index()] = m;
    }
    if report.is_empty() {
        Ok(agreed)
    } else {
        Err(report)
    }
}

/// The transcoded streams of one leg (see [`TranscodedView`]); differences go to `report`.
fn compare_transcoded(report: &mut String, name: &str, expected: &mut [TranscodedView], emitted: &[TranscodedView], allowance: usize) {
    if expected.len() != emitted.len() {
        let _ = writeln!(report, "{name}: {} streams with transcoded audio expected, {} emitted", expected.len(), emitted.len());
    }
    for (i, (e, a)) in expected.iter_mut().zip(emitted).enumerate() {
        // Frames are due on the transcoder's clock: a replay may emit a few more or fewer.
        if e.audio.abs_diff(a.audio) > 3.max(e.audio / 10) {
            let _ = writeln!(report, "{name}, transcoded stream {i}: {} audio frames expected, {} emitted", e.audio, a.audio);
        }
        if e.pts != a.pts || e.step != a.step {
            let _ = writeln!(report, "{name}, transcoded stream {i}: payload types {:?} in steps of {:?} ticks expected, {:?} in steps of {:?} emitted", e.pts, e.step, a.pts, a.step);
        }
        if e.markers != a.markers {
            let _ = writeln!(report, "{name}, transcoded stream {i}: {} frames with the marker bit expected, {} emitted", e.markers, a.markers);
        }
        if !a.gapless {
            let _ = writeln!(report, "{name}, transcoded stream {i}: the emitted sequence numbers have gaps");
        }
        if e.events.len() > a.events.len() && e.events.len() - a.events.len() <= allowance {
            e.events.truncate(a.events.len());
        }
        if e.events.len() != a.events.len() {
            let _ = writeln!(report, "{name}, transcoded stream {i}: {} other packets (RFC 4733 events) expected, {} emitted", e.events.len(), a.events.len());
        }
        if let Some(k) = (0..e.events.len().min(a.events.len())).find(|&k| e.events[k] != a.events[k]) {
            let show = |p: &(u8, bool, Vec<u8>)| format!("pt {} marker {} payload {:02x?}", p.0, p.1, p.2);
            let _ = writeln!(report, "{name}, transcoded stream {i}, event packet {} differs:\n- expected {}\n+ emitted  {}", k + 1, show(&e.events[k]), show(&a.events[k]));
        }
    }
}
