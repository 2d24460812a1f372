//! Media in a replay: a capture recorded with `recording.mode = "full"` holds, beside SIP, the
//! browser's media after SRTP decryption and the core's media as it was on the wire, both ways,
//! RTCP included. [`MediaPlane`] plays what reached the gateway through a [`MediaShard`] of
//! [`MediaSession::replay`] sessions (past the SRTP layer: the browser leg is plaintext) on the
//! replay's virtual clock, and [`compare`] checks what came out against what the gateway sent
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
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use estuary_b2bua::Side;
use estuary_media::shard::MediaShard;
use estuary_media::{Forward, Leg, MediaConfig, MediaSession, Output};
use estuary_rtp::rtcp::Compound;
use estuary_rtp::{classify, PacketKind, RtpPacket};
use estuary_sdp::MediaPlan;
use estuary_srtp::Certificate;

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

fn leg_index(leg: Leg) -> usize {
    match leg {
        Leg::Web => 0,
        Leg::Ims => 1,
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
        self.map.get(&(leg_index(leg), recorded)).copied()
    }

    fn recorded_port(&self, leg: Leg, replay: u16) -> Option<u16> {
        self.map.iter().find(|((l, _), p)| *l == leg_index(leg) && **p == replay).map(|((_, r), _)| *r)
    }
}

/// The media plane of a replay: every call's [`MediaSession::replay`] in one shard.
pub struct MediaPlane {
    shard: MediaShard,
    cfg: MediaConfig,
    cert: Certificate,
    ports: PortMap,
    /// The browser media that reached the recorded gateway, to find each call's browser.
    input_web: Vec<(u16, SocketAddr)>,
    /// Browser-facing local ports of the calls, to tell the legs of what goes out.
    web_ports: Vec<u16>,
    pub emitted: Vec<MediaPacket>,
    /// Packets of the input that reached no call: (leg, recorded destination).
    pub unmapped: Vec<(Leg, SocketAddr)>,
    /// Per input leg (web, IMS): packets that arrived after their call ended here. The
    /// recorded gateway's media thread hears of a call's end a moment after the signalling
    /// does, and may have relayed a few more: [`compare`] allows for them.
    pub late: [usize; 2],
    /// Local ports of calls that ended: (leg, port).
    ended: Vec<(Leg, u16)>,
    /// Packets a session handed to transcoding, which replay does not run yet.
    pub to_transcoder: u64,
    buf: Vec<u8>,
}

impl MediaPlane {
    /// For a replay of `input` whose recorded gateway sent `expected_sip` (side, message).
    pub fn new<'a>(now: Instant, cfg: &estuary_config::Config, input: &[MediaPacket], expected_sip: impl Iterator<Item = (Side, &'a [u8])>) -> Result<MediaPlane, String> {
        let cfg = crate::engine_config::media_config(cfg, None, false);
        Ok(MediaPlane {
            shard: MediaShard::new(now, None),
            cfg,
            // The browser leg is plaintext: no handshake will use it.
            cert: Certificate::generate().map_err(|e| format!("certificate: {e}"))?,
            ports: PortMap::new(expected_sip),
            input_web: input.iter().filter(|p| p.leg == Leg::Web).map(|p| (p.dst.port(), p.src)).collect(),
            web_ports: Vec::new(),
            emitted: Vec::new(),
            unmapped: Vec::new(),
            late: [0; 2],
            ended: Vec::new(),
            to_transcoder: 0,
            buf: Vec::with_capacity(estuary_media::MIN_BUFFER),
        })
    }

    /// The engine sent `sip` on `side` (its SDP maps ports).
    pub fn sip_emitted(&mut self, side: Side, sip: &[u8]) {
        self.ports.emitted(side, sip);
    }

    /// A call's plan was settled or renegotiated.
    pub fn plan(&mut self, now: Instant, at: Duration, call: u64, plan: &MediaPlan) -> Result<(), String> {
        if self.shard.session(call).is_some() {
            self.shard.update_plan(now, call, plan).map_err(|e| format!("call {call}: {e}"))?;
        } else {
            // The browser is whoever sent media to the recorded gateway's port for this call;
            // when the engine has not announced that port yet, the first browser packet says.
            let recorded = self.ports.recorded_port(Leg::Web, plan.web.local_port);
            let browser = self.input_web.iter().find(|(port, _)| Some(*port) == recorded).map(|(_, src)| *src);
            let session = MediaSession::replay(self.cfg.clone(), plan, &self.cert, now, call, browser).map_err(|e| format!("call {call}: {e}"))?;
            self.shard.add_call(now, call, session).map_err(|e| format!("call {call}: {e}"))?;
            self.web_ports.push(plan.web.local_port);
        }
        self.drain(at);
        Ok(())
    }

    pub fn end(&mut self, now: Instant, at: Duration, call: u64) {
        if let Some(s) = self.shard.end_call(now, call) {
            let web = s.web_local();
            for a in s.local_addresses() {
                self.ended.push((if a == web { Leg::Web } else { Leg::Ims }, a.port()));
            }
        }
        self.drain(at);
    }

    /// A media packet of the input, at `now` (`at` on the capture's timeline).
    pub fn input(&mut self, now: Instant, at: Duration, p: &MediaPacket) {
        let Some(port) = self.ports.replay_port(p.leg, p.dst.port()) else {
            self.unmapped.push((p.leg, p.dst));
            return;
        };
        let ip = if p.leg == Leg::Web { self.cfg.web_address } else { self.cfg.ims_address };
        let local = SocketAddr::new(ip, port);
        self.buf.clear();
        self.buf.extend_from_slice(&p.data);
        let routed = self.shard.handle_datagram(now, local, p.src, &mut self.buf);
        match routed.forward {
            Forward::Send { from, to } => {
                let data = self.buf.clone();
                self.push(at, from, to, data);
            }
            Forward::Transcode { .. } => self.to_transcoder += 1,
            Forward::Consumed => {}
        }
        if routed.call.is_none() {
            if self.ended.contains(&(p.leg, port)) {
                self.late[leg_index(p.leg)] += 1;
            } else {
                self.unmapped.push((p.leg, p.dst));
            }
        }
        self.drain(at);
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        self.shard.poll_timeout()
    }

    pub fn timeout(&mut self, now: Instant, at: Duration) {
        self.shard.handle_timeout(now);
        self.drain(at);
    }

    fn drain(&mut self, at: Duration) {
        while let Some((_, o)) = self.shard.poll_output() {
            if let Output::Transmit { from, to, data } = o {
                self.push(at, from, to, data);
            }
        }
    }

    fn push(&mut self, at: Duration, from: SocketAddr, to: SocketAddr, data: Vec<u8>) {
        let leg = if from.ip() == self.cfg.web_address && self.web_ports.contains(&from.port()) { Leg::Web } else { Leg::Ims };
        self.emitted.push(MediaPacket { at, leg, src: from, dst: to, data });
    }
}

/// One leg's outgoing media, normalised: what must be the same in a recording and its replay.
#[derive(Default)]
struct LegView {
    /// Per RTP packet, in order: the stream (its SSRC numbered by first appearance), payload
    /// type, marker, sequence and timestamp relative to the stream's first packet, payload.
    rtp: Vec<(usize, u8, bool, u16, u32, Vec<u8>)>,
    /// Per RTCP compound, in order: its packet types.
    rtcp: Vec<Vec<u8>>,
}

impl LegView {
    fn of<'a>(packets: impl Iterator<Item = &'a MediaPacket>) -> LegView {
        let mut v = LegView::default();
        let mut streams: Vec<(u32, u16, u32)> = Vec::new();
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
                    v.rtp.push((i, r.pt().0, r.marker(), r.seq().0.wrapping_sub(seq0), r.timestamp().wrapping_sub(ts0), r.payload().to_vec()));
                }
                PacketKind::Rtcp => v.rtcp.push(Compound::new(&p.data).filter_map(|c| c.ok().map(|c| c.packet_type().0)).collect()),
                _ => {}
            }
        }
        v
    }
}

/// What [`compare`] found equal.
pub struct Agreement {
    pub rtp: [usize; 2],
    pub rtcp: [usize; 2],
}

/// Compares the media the gateway sent in the recording (`expected`) with what the replay
/// emitted, leg by leg; `Err` holds a readable difference. `late` (per input leg) is how many
/// recorded packets may be missing at the end of the other leg's output: packets that arrived
/// after their call ended (see [`MediaPlane::late`]).
pub fn compare(expected: &[MediaPacket], emitted: &[MediaPacket], late: [usize; 2]) -> Result<Agreement, String> {
    let mut report = String::new();
    let mut agreed = Agreement { rtp: [0; 2], rtcp: [0; 2] };
    for leg in [Leg::Web, Leg::Ims] {
        let name = if leg == Leg::Web { "browser leg" } else { "IMS leg" };
        let mut e = LegView::of(expected.iter().filter(|p| p.leg == leg));
        let a = LegView::of(emitted.iter().filter(|p| p.leg == leg));
        let allowance = late[1 - leg_index(leg)];
        if e.rtp.len() > a.rtp.len() && e.rtp.len() - a.rtp.len() <= allowance {
            e.rtp.truncate(a.rtp.len());
        }
        if e.rtp.len() != a.rtp.len() {
            let _ = writeln!(report, "{name}: {} RTP packets expected, {} emitted", e.rtp.len(), a.rtp.len());
        }
        if let Some(i) = (0..e.rtp.len().min(a.rtp.len())).find(|&i| e.rtp[i] != a.rtp[i]) {
            let show = |p: &(usize, u8, bool, u16, u32, Vec<u8>)| {
                format!("stream {} pt {} marker {} seq +{} ts +{} payload {} bytes {:02x?}", p.0, p.1, p.2, p.3, p.4, p.5.len(), &p.5[..p.5.len().min(8)])
            };
            let _ = writeln!(report, "{name}, RTP packet {} differs:\n- expected {}\n+ emitted  {}", i + 1, show(&e.rtp[i]), show(&a.rtp[i]));
        }
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
        agreed.rtp[leg_index(leg)] = a.rtp.len();
        agreed.rtcp[leg_index(leg)] = m;
    }
    if report.is_empty() {
        Ok(agreed)
    } else {
        Err(report)
    }
}
