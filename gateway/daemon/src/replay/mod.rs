//! `estuary replay INPUT [--expect EXPECTED]`: plays a capture of what entered the gateway
//! through the same signalling engine the daemon runs (the sans-IO [`B2bua`]), on a virtual
//! clock at the recorded timestamps, and compares what it emits with a capture of what the
//! gateway should emit.
//!
//! Two capture layouts are read:
//! - the recorder's (see `recorder.rs`): SIP toward browsers on an interface whose name starts
//!   with `web:`, SIP toward IMS on one starting with `ims:`, each message one UDP datagram;
//!   `INPUT` holds what reached the gateway, `EXPECTED` what it sent, and the gateway's own
//!   addresses are where the input was sent to;
//! - any other capture (tcpdump on the gateway host): SIP over WebSocket on TCP connections to
//!   `web.ws_listen` (reassembled and deframed: WSS cannot be read) and SIP over UDP to and
//!   from `ims.listen`, as set with `--set`; one capture can then be both `INPUT` and
//!   `EXPECTED`, the direction telling them apart.
//!
//! The rest of the engine's configuration comes from `--config`/`--set` as for `estuary run`.
//!
//! The comparison is semantic ([`normalize`]): per side, the sequence of messages (UDP
//! retransmissions folded) with their start lines, the headers that carry meaning and the SDP
//! after normalisation; values the engine draws at random (tags, branches, Call-IDs, tokens,
//! ICE credentials, keys, ports) are matched by consistency: the first one seen is `<1>`
//! wherever it recurs, in both captures alike.
//!
//! A recorder-layout capture recorded with `recording.mode = "full"` also has media; with an
//! expectation, it is played too, past the SRTP layer, and compared per leg ([`media`]).
//!
//! Identifiers the gateway drew and the far ends echo (a To tag, a branch in a response from
//! IMS, a Path token) must be the ones the engine draws again: record with
//! `ESTUARY_ENGINE_SEED=N` and replay with `--seed N` (the corpus uses 4242). The engine's
//! only source of randomness is that seed, so the same inputs at the same times give the
//! same identifiers.
//!
//! `--live` ([`live`]) plays the capture against a running daemon instead, over loopback,
//! and compares the same way.

mod live;
mod media;
mod normalize;

use std::collections::HashMap;
use std::fmt::Write as _;
use std::fs::File;
use std::io::BufReader;
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use estuary_b2bua::B2bua;
use estuary_core::{ConnId, Core, Flow, InlineMedia, Input, Output, Side, Transport};
use estuary_config::Config;
use estuary_keys::KeySource;
use estuary_media::Leg;
use estuary_pcap::{classify, CaptureReader, Kind, Protocol, TcpReassembler, WsConnection, WsKind};

use crate::engine_config::{self, Bound, ResolvedNextHop};

/// How long the virtual clock runs past the last input: timers that fire right after it
/// (a retransmission, a 2xx resent) belong to the exchange; a minute later they would not.
const SETTLE: Duration = Duration::from_secs(2);

/// One SIP message of a capture.
#[derive(Clone, Debug)]
pub struct Message {
    pub at: Duration,
    pub side: Side,
    pub src: SocketAddr,
    pub dst: SocketAddr,
    pub data: Vec<u8>,
}

/// A capture's SIP messages, and the gateway's (web, IMS) addresses when the layout says;
/// its media, in the recorder's layout when recorded with `recording.mode = "full"`.
pub struct Capture {
    pub messages: Vec<Message>,
    pub gateway: Option<(SocketAddr, SocketAddr)>,
    pub media: Vec<media::MediaPacket>,
}

impl Capture {
    /// Messages that reached the gateway (all of them in a recorder-layout input).
    fn inbound(&self) -> Vec<Message> {
        match self.gateway {
            Some((web, ims)) => self.messages.iter().filter(|m| m.dst == web || m.dst == ims).cloned().collect(),
            None => self.messages.clone(),
        }
    }

    /// Messages the gateway sent (all of them in a recorder-layout expectation).
    fn outbound(&self) -> Vec<Message> {
        match self.gateway {
            Some((web, ims)) => self.messages.iter().filter(|m| m.src == web || m.src == ims).cloned().collect(),
            None => self.messages.clone(),
        }
    }
}

/// Reads a capture in either layout (see the module documentation).
pub fn read(path: &Path, cfg: &Config) -> Result<Capture, String> {
    let (messages, media) = read_recorder(path)?;
    if !messages.is_empty() {
        return Ok(Capture { messages, gateway: None, media });
    }
    let messages = read_plain(path, cfg.web.ws_listen, cfg.ims.listen)?;
    Ok(Capture { messages, gateway: Some((cfg.web.ws_listen, cfg.ims.listen)), media: Vec::new() })
}

/// SIP over WebSocket to `ws` and SIP over UDP to or from `ims`, from a plain capture.
fn read_plain(path: &Path, ws: SocketAddr, ims: SocketAddr) -> Result<Vec<Message>, String> {
    let file = File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut reader = CaptureReader::new(BufReader::new(file)).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut tcp = TcpReassembler::new();
    let mut conns: HashMap<SocketAddr, WsConnection> = HashMap::new();
    let mut out = Vec::new();
    let matches = |a: SocketAddr, b: SocketAddr| a.port() == b.port() && (b.ip().is_unspecified() || a.ip() == b.ip());
    let take_ws = |tcp: &mut TcpReassembler, conns: &mut HashMap<SocketAddr, WsConnection>, out: &mut Vec<Message>| {
        while let Some(ev) = tcp.poll() {
            let flow = ev.flow();
            let client = if matches(flow.dst, ws) { flow.src } else { flow.dst };
            let server = if matches(flow.dst, ws) { flow.dst } else { flow.src };
            let conn = conns.entry(client).or_insert_with(|| WsConnection::new(client, server));
            // A connection that breaks WebSocket framing yields no more messages.
            let _ = conn.push(&ev);
            while let Some(m) = conn.poll() {
                if matches!(m.message.kind, WsKind::Text | WsKind::Binary) {
                    out.push(Message { at: m.timestamp, side: Side::Web, src: m.flow.src, dst: m.flow.dst, data: m.message.payload });
                }
            }
        }
    };
    while let Some(rec) = reader.next_record().map_err(|e| format!("{}: {e}", path.display()))? {
        let Ok(p) = rec.decode() else { continue };
        match p.protocol {
            Protocol::Tcp(_) if matches(p.src, ws) || matches(p.dst, ws) => {
                tcp.push(rec.timestamp, &p);
                take_ws(&mut tcp, &mut conns, &mut out);
            }
            Protocol::Udp if (matches(p.src, ims) || matches(p.dst, ims)) && classify(p.payload) == Kind::Sip => {
                out.push(Message { at: rec.timestamp, side: Side::Ims, src: p.src, dst: p.dst, data: p.payload.to_vec() });
            }
            _ => {}
        }
    }
    tcp.finish();
    take_ws(&mut tcp, &mut conns, &mut out);
    out.sort_by_key(|m| m.at);
    Ok(out)
}

/// Reads the SIP messages and the media of a capture in the recorder's layout (none for
/// another layout).
fn read_recorder(path: &Path) -> Result<(Vec<Message>, Vec<media::MediaPacket>), String> {
    let file = File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut reader = CaptureReader::new(BufReader::new(file)).map_err(|e| format!("{}: {e}", path.display()))?;
    let (mut messages, mut media) = (Vec::new(), Vec::new());
    loop {
        let (interface, at, packet) = {
            let Some(rec) = reader.next_record().map_err(|e| format!("{}: {e}", path.display()))? else { break };
            let packet = rec.decode().ok().filter(|p| p.protocol == Protocol::Udp && !p.payload.is_empty()).map(|p| (p.src, p.dst, p.payload.to_vec()));
            (rec.interface, rec.timestamp, packet)
        };
        let Some((src, dst, data)) = packet else { continue };
        // Interfaces are declared as the file goes, so look the name up per record.
        match reader.interface_name(interface) {
            Some(n) if n.starts_with("web: media") => media.push(media::MediaPacket { at, leg: Leg::Web, src, dst, data }),
            Some(n) if n.starts_with("ims: media") => media.push(media::MediaPacket { at, leg: Leg::Ims, src, dst, data }),
            Some(n) if n.starts_with("web:") && n.contains("SIP") => messages.push(Message { at, side: Side::Web, src, dst, data }),
            Some(n) if n.starts_with("ims:") && n.contains("SIP") => messages.push(Message { at, side: Side::Ims, src, dst, data }),
            _ => {}
        }
    }
    Ok((messages, media))
}

/// The media of a replay: what reached the recorded gateway, and the SIP it sent (whose SDP
/// maps its media ports to the replay's).
pub struct MediaInput<'a> {
    pub packets: &'a [media::MediaPacket],
    pub expected_sip: &'a [Message],
}

/// What a replay emitted: SIP, and the media with the plane that sent it.
pub type Replayed = (Vec<Message>, Option<(media::MediaReplay, InlineMedia)>);

/// Replays `input` and `media` through a [`Core`]: a [`B2bua`] configured from `cfg` and the
/// addresses the input was sent to, with an inline media plane when there is media; returns
/// the messages it emitted, stamped on the input's timeline, and the media it emitted with
/// the plane that did.
pub fn replay(cfg: &Config, input: &[Message], seed: u64, media: Option<MediaInput<'_>>) -> Result<Replayed, String> {
    let web = input.iter().find(|m| m.side == Side::Web).map(|m| m.dst);
    let ims_in = input.iter().find(|m| m.side == Side::Ims);
    let web_addr = web.unwrap_or(cfg.web.wss_listen);
    let bound = Bound { ws: web_addr, wss: web_addr, ims: ims_in.map_or(cfg.ims.listen, |m| m.dst), ims_tls: None, admin: cfg.admin.listen };
    // The core's address: where its messages came from, else the configured next hop.
    let next_hop = match (ims_in, &cfg.ims.next_hop) {
        (Some(m), _) => m.src,
        (None, estuary_config::NextHop::Uri { host, port, .. }) => {
            format!("{host}:{port}").parse().map_err(|_| format!("ims.next_hop {host}:{port} is not an address; give the core's address"))?
        }
        (None, estuary_config::NextHop::Builtin) => SocketAddr::from(([127, 0, 0, 1], 5060)),
    };
    let fingerprint = estuary_sdp::SdpPolicy::default().fingerprint;
    let b2bua_cfg = engine_config::b2bua_config(cfg, &bound, ResolvedNextHop { addr: next_hop, transport: Transport::Udp, host: next_hop.ip().to_string(), resolved: vec![next_hop.ip()], targets: estuary_b2bua::next_hops::HopTarget::in_order([next_hop]) }, fingerprint, None);
    let t0 = input.first().map_or(Duration::ZERO, |m| m.at);
    // The engine reads no clock: any base works, and this one keeps timestamps exact.
    let base = Instant::now();
    let ports = crate::ports::even_ports(cfg.media.ports.min, cfg.media.ports.max);
    let (plane, recording) = match &media {
        Some(m) => {
            let media_cfg = engine_config::media_config(cfg, None, false);
            let recording = media::MediaReplay::new(&media_cfg, m.packets, m.expected_sip.iter().map(|e| (e.side, &e.data[..])));
            // The browser leg is plaintext: no handshake will use the certificate.
            let cert = estuary_srtp::Certificate::generate().map_err(|e| format!("certificate: {e}"))?;
            (Some(InlineMedia::plaintext(base, media_cfg, cert)), Some(recording))
        }
        None => (None, None),
    };
    let mut d = Driver {
        core: Core::new(B2bua::new(b2bua_cfg, seed, KeySource::os()), plane, base),
        base,
        t0,
        now: base,
        web: web_addr,
        ims: bound.ims,
        conns: HashMap::new(),
        out: Vec::new(),
        ports,
        media: recording,
    };
    d.grant_ports();
    // SIP and media in time order (SIP first at equal times: a packet follows its signalling).
    let packets: &[media::MediaPacket] = media.as_ref().map_or(&[], |m| m.packets);
    let mut packets = packets.iter().peekable();
    for m in input {
        while let Some(p) = packets.next_if(|p| p.at < m.at) {
            d.media_input(p);
        }
        let t = base + m.at.saturating_sub(t0);
        d.run_timers(t);
        d.now = t.max(d.now);
        match m.side {
            Side::Web => {
                let next = ConnId(d.conns.len() as u64 + 1);
                let conn = *d.conns.entry(m.src).or_insert(next);
                if conn == next {
                    let transport = if String::from_utf8_lossy(&m.data).contains("SIP/2.0/WS ") { Transport::Ws } else { Transport::Wss };
                    d.input(Input::ConnectionOpened { conn, side: Side::Web, transport, local: m.dst, remote: m.src });
                }
                d.input(Input::Receive { flow: Flow::Web { conn }, conn: Some(conn), remote: m.src, data: &m.data });
            }
            Side::Ims => {
                let flow = Flow::Ims { transport: Transport::Udp, remote: m.src };
                d.input(Input::Receive { flow, conn: None, remote: m.src, data: &m.data });
            }
        }
    }
    for p in packets {
        d.media_input(p);
    }
    let end = d.now + SETTLE;
    d.run_timers(end);
    let plane = d.core.into_media();
    // A plan the recorded gateway took and the replay's plane could not is a failed replay.
    if let Some((when, e)) = plane.as_ref().and_then(|p| p.refused().first()) {
        let at = t0 + when.saturating_duration_since(base);
        return Err(format!("media plan at {:.3} s: {e}", at.as_secs_f64()));
    }
    Ok((d.out, d.media.zip(plane)))
}

/// The core on a virtual clock, and what it sent.
struct Driver {
    core: Core<Option<InlineMedia>>,
    base: Instant,
    t0: Duration,
    now: Instant,
    web: SocketAddr,
    ims: SocketAddr,
    conns: HashMap<SocketAddr, ConnId>,
    out: Vec<Message>,
    /// Virtual media ports, granted as the engine asks (nothing is bound in a replay).
    ports: std::iter::StepBy<std::ops::RangeInclusive<u16>>,
    /// The media side, when the capture has media.
    media: Option<media::MediaReplay>,
}

impl Driver {
    fn input(&mut self, input: Input<'_>) {
        self.core.handle_input(self.now, input);
        self.drain();
        self.grant_ports();
    }

    fn grant_ports(&mut self) {
        let n = self.core.ports_wanted(self.now);
        self.core.grant_ports(self.ports.by_ref().take(n));
    }

    /// Fires every signalling and media deadline up to `until`, in order.
    fn run_timers(&mut self, until: Instant) {
        while let Some(t) = self.core.poll_timeout().filter(|t| *t <= until) {
            self.now = t.max(self.now);
            self.input(Input::Timeout);
        }
    }

    /// The capture's time of the virtual clock's now.
    fn at(&self) -> Duration {
        self.t0 + self.now.saturating_duration_since(self.base)
    }

    fn media_input(&mut self, p: &media::MediaPacket) {
        let t = self.base + p.at.saturating_sub(self.t0);
        self.run_timers(t);
        self.now = t.max(self.now);
        if let Some(m) = self.media.as_mut() {
            m.input(&mut self.core, self.now, p);
        }
        self.drain();
    }

    fn drain(&mut self) {
        while let Some(o) = self.core.poll_output() {
            let at = self.at();
            match o {
                Output::Transmit { flow, data } => {
                    let (side, src, dst) = match flow {
                        Flow::Web { conn } => {
                            let browser = self.conns.iter().find(|(_, c)| **c == conn).map_or(self.web, |(a, _)| *a);
                            (Side::Web, self.web, browser)
                        }
                        Flow::Ims { remote, .. } => (Side::Ims, self.ims, remote),
                    };
                    if let (Some(m), Some(plane)) = (self.media.as_mut(), self.core.media_mut().as_mut()) {
                        m.sip_emitted(side, &data, plane);
                    }
                    self.out.push(Message { at, side, src, dst, data });
                }
                Output::Datagram { from, to, data } => {
                    if let (Some(m), Some(plane)) = (self.media.as_mut(), self.core.media().as_ref()) {
                        m.emitted(at, from, to, data, plane);
                    }
                }
                Output::Close { .. }
                | Output::CallStarted { .. }
                | Output::CallEnded { .. }
                | Output::Diameter { .. }
                | Output::RegistrationShared(_)
                | Output::RegistrationRemoved { .. }
                | Output::CallShared(_)
                | Output::CallUnshared { .. }
                | Output::HandOverWanted { .. }
                // (Replay runs one node: no shared state to ask; a held request times out as alone.)
                | Output::StateQuery { .. } => {}
            }
        }
    }
}

/// Compares what the engine emitted with what it should have, side by side; `Err` holds a
/// readable difference.
pub fn compare(expected: &[Message], actual: &[Message]) -> Result<usize, String> {
    let mut report = String::new();
    let mut compared = 0;
    for side in [Side::Web, Side::Ims] {
        let e = normalize::sequence(expected.iter().filter(|m| m.side == side).map(|m| &m.data[..]));
        let a = normalize::sequence(actual.iter().filter(|m| m.side == side).map(|m| &m.data[..]));
        let name = if side == Side::Web { "browser side" } else { "IMS side" };
        compared += e.len().max(a.len());
        for i in 0..e.len().max(a.len()) {
            match (e.get(i), a.get(i)) {
                (Some(x), Some(y)) if x == y => {}
                (x, y) => {
                    let _ = writeln!(report, "{name}, message {} differs ({} expected, {} emitted):", i + 1, e.len(), a.len());
                    report.push_str(&normalize::diff(x.map_or("", String::as_str), y.map_or("", String::as_str)));
                    break;
                }
            }
        }
    }
    if report.is_empty() {
        Ok(compared)
    } else {
        Err(report)
    }
}

/// How the captured input is played.
pub enum Mode {
    /// Through the engine on a virtual clock, identifiers drawn from this seed.
    Virtual { seed: u64 },
    /// Against the running daemon that `--config`/`--set` describe, waiting at most this long
    /// for each message it should send (see [`live`]).
    Live { wait: Duration },
}

/// The `replay` command: exit 0 when the emitted messages match `expect` (or, without it,
/// after printing them), 1 on a difference, 2 on unusable input.
pub fn run(cfg: &Config, input: &Path, expect: Option<&Path>, mode: Mode) -> Result<bool, String> {
    let capture = read(input, cfg)?;
    let msgs = capture.inbound();
    if msgs.is_empty() {
        return Err(format!(
            "{}: no SIP message reached the gateway (recorder layout: web:/ims: interfaces; else WebSocket to web.ws_listen {} or UDP to ims.listen {})",
            input.display(),
            cfg.web.ws_listen,
            cfg.ims.listen
        ));
    }
    let seed = match mode {
        Mode::Virtual { seed } => seed,
        Mode::Live { wait } => {
            // Pacing and identifier mapping follow what the gateway sent in the recording: the
            // expectation, or the input itself when it is a plain capture of both directions.
            let expected = match expect {
                Some(path) => read(path, cfg)?.outbound(),
                None if capture.gateway.is_some() => capture.outbound(),
                None => return Err("--live needs what the gateway sent in the recording: --expect EXPECTED".into()),
            };
            let targets = live::Targets::from_config(cfg)?;
            let outcome = live::play(&targets, &msgs, &expected, wait)?;
            if let Some(note) = &outcome.stalled {
                println!("{note}");
            }
            return Ok(report(&expected, &outcome.emitted, msgs.len()));
        }
    };
    // Media is replayed when the input has some and there is an expectation to map its ports.
    let media_in = &capture.media;
    let (expected, expected_media) = match expect {
        Some(path) => {
            let e = read(path, cfg)?;
            (Some(e.outbound()), e.media)
        }
        None => (None, Vec::new()),
    };
    let media = expected.as_deref().filter(|_| !media_in.is_empty()).map(|e| MediaInput { packets: media_in, expected_sip: e });
    let (emitted, media_out) = replay(cfg, &msgs, seed, media)?;
    let Some(expected) = expected else {
        for m in &emitted {
            let first = String::from_utf8_lossy(&m.data).lines().next().unwrap_or_default().to_owned();
            println!("{:>10.6} {:?} -> {} {first}", m.at.as_secs_f64(), m.side, m.dst);
        }
        return Ok(true);
    };
    let sip_ok = report(&expected, &emitted, msgs.len());
    let Some((replayed, plane)) = media_out else { return Ok(sip_ok) };
    Ok(report_media(&expected_media, &replayed, &plane, media_in.len()) && sip_ok)
}

/// Prints the verdict on the media; whether it was as expected.
fn report_media(expected: &[media::MediaPacket], replay: &media::MediaReplay, plane: &InlineMedia, inputs: usize) -> bool {
    let mut problems = String::new();
    if !replay.unmapped.is_empty() {
        let _ = writeln!(problems, "{} media packets of the input reached no call (first to {:?})", replay.unmapped.len(), replay.unmapped[0]);
    }
    let counters = plane.counters();
    if counters.untranscodable > 0 {
        let _ = writeln!(problems, "{} packets needed transcoding between codecs the transcoder does not convert", counters.untranscodable);
    }
    let transcoded_pts = [Leg::Web, Leg::Ims].map(|leg| plane.transcoded_payload_types(leg).to_vec());
    match media::compare(expected, &replay.emitted, replay.late, &transcoded_pts) {
        Ok(a) if problems.is_empty() => {
            let late = replay.late[0] + replay.late[1];
            let leg = |i: usize| match a.transcoded[i] {
                0 => format!("{} RTP and {} RTCP", a.rtp[i], a.rtcp[i]),
                t => format!("{} RTP ({t} transcoded) and {} RTCP", a.rtp[i], a.rtcp[i]),
            };
            let transcoding = match counters.to_transcoder {
                0 => String::new(),
                n => format!(", {n} transcoded inline into {} frames", counters.transcoded),
            };
            println!(
                "ok: media as expected ({inputs} packets in, {} out, {late} after their call ended{transcoding}): browser leg {}, IMS leg {}",
                replay.emitted.len(),
                leg(0),
                leg(1)
            );
            true
        }
        Ok(_) => {
            println!("media: {problems}");
            false
        }
        Err(diff) => {
            println!("media: {problems}{diff}");
            false
        }
    }
}

/// Prints the verdict of [`compare`]; whether the output was as expected.
fn report(expected: &[Message], emitted: &[Message], inputs: usize) -> bool {
    match compare(expected, emitted) {
        Ok(n) => {
            println!("ok: {n} messages as expected ({inputs} in, {} out)", emitted.len());
            true
        }
        Err(diff) => {
            println!("{diff}");
            false
        }
    }
}
