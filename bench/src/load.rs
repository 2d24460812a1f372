//! The load generator behind the daemon benchmarks: N browsers and an IMS core on loopback
//! against the real `estuary` binary (`ESTUARY_BIN`).
//!
//! Each browser registers over WebSocket (the calls share a few connections, as tabs of a
//! busy site would), calls `sip:echo@ims.test` with its own ICE credentials and socket,
//! nominates its pair with a STUN USE-CANDIDATE check, completes DTLS as client against the
//! fingerprint in the answer, then sends 20 ms of audio in SRTP (G.711, or Opus packets encoded
//! once at start and replayed) and checks that what comes back authenticates; it repeats
//! consent checks every 5 s as Chromium does. The IMS side answers with the `estuary-testpeer`
//! SIP engine (G.711 only) and, per call, sends 20 ms PCMU from the port it answered with once
//! the daemon's first packet arrived there (symmetric RTP).
//!
//! [`run`] returns what was delivered and the daemon's CPU time and memory over the window;
//! the binaries turn that into their figures. [`run_on`] points the same browsers and core at
//! the reference stack instead (Kamailio + rtpengine, [`crate::reference`]) and can pause the
//! media with every call up to measure what the system costs when idle. It can also put
//! Kamailio in front of the core as a real IMS proxy ([`Core::Kamailio`],
//! [`crate::ims_core`]), and set the calls up in phases, one browser per WebSocket, to measure
//! what each step of a call set-up costs the daemon ([`Target::phased`]).
//!
//! Nothing here is specific to Estuary's side of the wire: the browsers answer the ICE checks
//! a full ICE agent sends them (Estuary is ICE-lite and sends none) and take the DTLS role the
//! answer's `a=setup` leaves them, as Chromium does.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use estuary_conformance::gateway::GatewayBuilder;
use estuary_conformance::ws_client::DEFAULT_WAIT;
use estuary_conformance::{Dialog, Gateway, SipMsg, WsSipClient};
use estuary_rtp::{classify, PacketKind, Pt, RtpHeader, SeqNo, Ssrc};
use estuary_srtp::{Certificate, DtlsEndpoint, DtlsEvent, DtlsRole, Fingerprint, SrtpContext, SrtpKeyMaterial, SrtpProfile};
use estuary_testpeer::{MediaPorts, Output, PeerConfig, TestPeer};
use rand::Rng;
use stun_rs::attributes::ice::{IceControlling, Priority, UseCandidate};
use stun_rs::attributes::stun::{Fingerprint as StunFingerprint, MessageIntegrity, UserName, XorMappedAddress};
use stun_rs::methods::BINDING;
use stun_rs::{HMACKey, MessageClass, MessageDecoderBuilder, MessageEncoderBuilder, StunMessageBuilder};
use tokio::net::UdpSocket;
use tokio::sync::{oneshot, watch, Semaphore};
use tokio::time::MissedTickBehavior;

use crate::flood::{Flood, FloodReport};
use crate::ims_core::ImsCore;
use crate::reference::Stack;
use crate::{cpu_since, sample, sample_all, thread_cpu, ThreadCpu};

/// WebSocket connections the calls are spread over.
const CONNECTIONS: usize = 10;
pub(crate) const PTIME: Duration = Duration::from_millis(20);
const CONSENT_EVERY: u32 = 250; // packets: 5 s at 20 ms
/// Time every call runs before the window opens.
pub const WARMUP: Duration = Duration::from_secs(2);
/// How long every call may take to be answered and keyed before the run counts it failed.
const SETUP_LIMIT: Duration = Duration::from_secs(120);
/// After the media is paused, how long in-flight packets get before the idle window opens.
const SETTLE: Duration = Duration::from_secs(1);
const MAX_PACKET: usize = 1400;
/// After a browser's last packet of a short call, how long it keeps reading what comes back.
const DRAIN: Duration = Duration::from_millis(200);
/// Browsers of a phased set-up in the same step at once: all of them together, but never so
/// many that a listen backlog or a socket buffer overflows and the phase measures
/// retransmissions instead of work.
const IN_FLIGHT: usize = 64;
/// Failures of one phase printed (the rest are counted).
const SHOWN_FAILURES: usize = 3;

/// The steps of a phased set-up ([`Target::phased`]), in order: the browser's WebSocket
/// (TCP and HTTP upgrade), its REGISTER, its INVITE up to the 200 and the ACK, its ICE
/// nomination (a STUN check with USE-CANDIDATE, answered), its DTLS handshake (keys).
pub const PHASES: [&str; 5] = ["ws", "register", "invite", "ice", "dtls"];

/// What the browsers send.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BrowserCodec {
    /// PCMU, which the core shares: relayed.
    Pcmu,
    /// Opus only: the daemon transcodes both ways.
    Opus,
}

/// One run's shape.
#[derive(Clone, Debug)]
pub struct Load {
    pub calls: u64,
    pub window: Duration,
    pub codec: BrowserCodec,
    /// The daemon's media port range (`media.port_min`, `media.port_max`): three ports per call.
    pub ports: (u16, u16),
    /// Share of the core's packets lost on the way (dropped at random before sending), to
    /// exercise concealment.
    pub ims_loss: f64,
    /// Lift the daemon's per-source limits (every browser here is 127.0.0.1), as a load test
    /// must; off to run with the defaults (the flood test).
    pub lift_limits: bool,
    /// A hostile source flooding the daemon from the moment it is up (see [`crate::flood`]).
    pub flood: Option<Flood>,
}

impl Load {
    /// `calls` calls of `codec` for `window`; media ports from `BENCH_MEDIA_PORTS`
    /// ("MIN-MAX", default 20000-29999) so runs side by side do not collide.
    pub fn from_env(calls: u64, window: Duration, codec: BrowserCodec) -> Result<Load, String> {
        let ports = match std::env::var("BENCH_MEDIA_PORTS") {
            Ok(v) => v
                .split_once('-')
                .and_then(|(a, b)| Some((a.trim().parse().ok()?, b.trim().parse().ok()?)))
                .ok_or_else(|| format!("BENCH_MEDIA_PORTS={v:?} is not MIN-MAX"))?,
            Err(_) => (20000, 29999),
        };
        Ok(Load { calls, window, codec, ports, ims_loss: 0.0, lift_limits: true, flood: None })
    }
}

/// What a run is pointed at and what it measures besides the window. The default is
/// Estuary with the test peer as its core, calls set up a connection at a time, the window
/// only (the tests and the transcoding benchmark).
#[derive(Clone, Debug, Default)]
pub struct Target {
    /// Kamailio + rtpengine ([`crate::reference::Stack`]) in Estuary's place.
    pub reference: bool,
    /// With every call up, pause the media (browsers and core send nothing but consent
    /// checks) for this long before the warm-up, and measure the CPU it costs.
    pub idle: Option<Duration>,
    /// What answers on Estuary's `ims.next_hop` (the reference stack's Kamailio always
    /// forwards to the test peer itself).
    pub core: Core,
    /// Set Estuary's calls up in [`PHASES`], each browser with its own WebSocket and
    /// registration, and measure the CPU of each phase; otherwise a few connections each
    /// register once and set their calls up one after another.
    pub phased: bool,
}

/// The IMS core behind Estuary.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Core {
    /// The test peer engine on the daemon's next hop: nothing between them.
    #[default]
    Testpeer,
    /// Kamailio on the next hop, registrar and record-routing proxy in front of the test
    /// peer ([`crate::ims_core`]).
    Kamailio,
}

impl Core {
    /// `BENCH_IMS_CORE`: `kamailio` (the default) or `testpeer`.
    pub fn from_env() -> Result<Core, String> {
        match std::env::var("BENCH_IMS_CORE").as_deref() {
            Err(_) | Ok("kamailio") => Ok(Core::Kamailio),
            Ok("testpeer") => Ok(Core::Testpeer),
            Ok(v) => Err(format!("BENCH_IMS_CORE={v:?}: kamailio or testpeer")),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Core::Testpeer => "testpeer",
            Core::Kamailio => "kamailio",
        }
    }
}

/// One phase of a phased set-up: every call went through it before the next one began.
#[derive(Clone, Debug)]
pub struct Phase {
    pub name: &'static str,
    pub wall: Duration,
    /// The daemon's CPU time over the phase.
    pub cpu: Duration,
    /// The IMS core's (Kamailio's), when it is there.
    pub core_cpu: Option<Duration>,
    /// Calls that came through it; the others were dropped and counted failed.
    pub calls: u64,
    /// The daemon's PSS growth over the phase, bytes (negative when it shrank).
    pub pss_growth: i64,
}

/// One group of processes of the system measured (Estuary; or Kamailio and rtpengine; or
/// the bare relay): CPU over the window and over the idle pause, proportional memory.
#[derive(Clone, Debug)]
pub struct Part {
    pub name: &'static str,
    pub cpu: Duration,
    /// CPU over [`Measured::idle_window`], when there was one.
    pub idle_cpu: Option<Duration>,
    /// PSS summed over the group's processes, before the first call and at the window's end.
    pub pss_idle: u64,
    pub pss_loaded: u64,
    /// CPU over the whole set-up, from the first connection to the last call keyed, when the
    /// calls were set up as the reference systems get them (not phased). The media waits
    /// until the set-up ends; consent checks do not.
    pub setup_cpu: Option<Duration>,
}

impl Part {
    /// CPU time per packet delivered in the window, microseconds.
    pub fn us_per_packet(&self, delivered: u64) -> f64 {
        self.cpu.as_secs_f64() * 1e6 / delivered.max(1) as f64
    }

    /// Share of one core used while the media was paused.
    pub fn idle_fraction(&self, idle_window: Option<Duration>) -> Option<f64> {
        Some(self.idle_cpu?.as_secs_f64() / idle_window?.as_secs_f64().max(1e-9))
    }

    /// PSS growth per call from before the first call to the loaded window.
    pub fn pss_per_call(&self, calls: u64) -> u64 {
        self.pss_loaded.saturating_sub(self.pss_idle) / calls.max(1)
    }
}

/// What one run measured.
#[derive(Clone, Debug)]
pub struct Measured {
    pub pid: u32,
    pub calls_up: u64,
    pub calls_asked: u64,
    pub setup: Duration,
    pub window: Duration,
    /// Packets that reached the browsers and the core during the window.
    pub delivered: u64,
    /// Packets they sent during the window.
    pub sent: u64,
    pub daemon_cpu: Duration,
    pub rss_idle: u64,
    pub rss_loaded: u64,
    pub srtp_failures: u64,
    /// Packets the browsers received during the window.
    pub web_delivered: u64,
    /// Packets the core did not send on purpose (`ims_loss`), whole run.
    pub ims_dropped: u64,
    /// Browser-side discontinuities, whole run: a sequence number skipped, or a timestamp that
    /// did not advance by one packet time with the sequence number.
    pub web_seq_gaps: u64,
    pub web_ts_jumps: u64,
    /// The daemon's `estuary_transcoder_concealed_total` after the calls ended.
    pub concealed: Option<f64>,
    /// The daemon's `estuary_transcoder_frames_total` at the end.
    pub transcoded_frames: Option<f64>,
    /// The daemon's largest resident memory seen (sampled every 100 ms over the whole run).
    pub rss_peak: u64,
    /// What the flooder saw, when there was one.
    pub flood: Option<FloodReport>,
    /// Daemon counters read at the end: (metric, value).
    pub counters: Vec<(&'static str, f64)>,
    /// /healthz status at the end, and whether the log shows a panic.
    pub healthz: u16,
    pub panicked: bool,
    pub log_tail: String,
    /// Per process group: Estuary alone, or Kamailio and rtpengine; `daemon_cpu` is their sum.
    pub parts: Vec<Part>,
    /// How long the media was paused with every call up ([`Target::idle`]), as measured.
    pub idle_window: Option<Duration>,
    /// The set-up phase by phase ([`Target::phased`]); empty otherwise.
    pub phases: Vec<Phase>,
}

/// The browsers' payloads, made once: one G.711 frame, or a second of Opus packets of a
/// voiced test signal (encoding per packet in this process would cost more than it measures).
pub(crate) struct MediaSource {
    pub codec: BrowserCodec,
    pt: u8,
    ticks: u32,
    packets: Vec<Vec<u8>>,
}

impl MediaSource {
    pub(crate) fn new(codec: BrowserCodec) -> Result<MediaSource, String> {
        Ok(match codec {
            BrowserCodec::Pcmu => MediaSource { codec, pt: 0, ticks: 160, packets: vec![vec![0xff; 160]] },
            BrowserCodec::Opus => {
                let cfg = estuary_transcoder::OpusConfig { bitrate: Some(32_000), ..Default::default() };
                let mut enc = estuary_transcoder::OpusEncoder::new(48_000, &cfg).map_err(|e| format!("opus: {e:?}"))?;
                let mut packets = Vec::new();
                let mut out = [0u8; MAX_PACKET];
                for f in 0..50 {
                    let pcm: Vec<i16> = (0..960)
                        .map(|i| {
                            let t = (f * 960 + i) as f64 / 48_000.0;
                            let env = 0.5 + 0.5 * (2.0 * std::f64::consts::PI * 3.0 * t).sin();
                            (env * 6000.0 * ((2.0 * std::f64::consts::PI * 220.0 * t).sin() + 0.5 * (2.0 * std::f64::consts::PI * 660.0 * t).sin())) as i16
                        })
                        .collect();
                    let n = enc.encode(&pcm, &mut out).map_err(|e| format!("opus: {e:?}"))?;
                    packets.push(out[..n].to_vec());
                }
                MediaSource { codec, pt: 111, ticks: 960, packets }
            }
        })
    }
}

/// Counters every task adds to (relaxed: only totals are read, after the window).
#[derive(Default)]
pub(crate) struct Totals {
    pub web_tx: AtomicU64,
    pub web_rx: AtomicU64,
    web_bad: AtomicU64,
    pub ims_tx: AtomicU64,
    pub ims_rx: AtomicU64,
    pub ready: AtomicU64,
    failed: AtomicU64,
    ims_dropped: AtomicU64,
    web_gaps: AtomicU64,
    web_ts_jumps: AtomicU64,
    /// Media paused ([`Target::idle`]): every sender skips its packets, consent goes on.
    pub paused: std::sync::atomic::AtomicBool,
}

#[derive(Clone, Copy, Debug)]
struct Snapshot {
    web_tx: u64,
    web_rx: u64,
    ims_tx: u64,
    ims_rx: u64,
}

impl Totals {
    fn snapshot(&self) -> Snapshot {
        Snapshot {
            web_tx: self.web_tx.load(Ordering::Relaxed),
            web_rx: self.web_rx.load(Ordering::Relaxed),
            ims_tx: self.ims_tx.load(Ordering::Relaxed),
            ims_rx: self.ims_rx.load(Ordering::Relaxed),
        }
    }
}

/// Brings `load.calls` calls up through a daemon started for it, lets them run, and measures
/// the daemon over `load.window`.
pub async fn run(load: &Load) -> Result<Measured, String> {
    run_on(load, &Target::default()).await
}

/// The system under test, started for one run.
enum System {
    Estuary(Gateway),
    Reference(Stack),
}

impl System {
    fn ws_addr(&self) -> SocketAddr {
        match self {
            System::Estuary(gw) => gw.ws_addr,
            System::Reference(s) => s.ws_addr,
        }
    }

    /// The process whose RSS the run follows (the media relay).
    fn pid(&self) -> u32 {
        match self {
            System::Estuary(gw) => gw.pid(),
            System::Reference(s) => s.rtpengine_pid(),
        }
    }

    /// The process groups measured, each with its PIDs now.
    fn groups(&self) -> Vec<(&'static str, Vec<u32>)> {
        match self {
            System::Estuary(gw) => vec![("estuary", vec![gw.pid()])],
            System::Reference(s) => s.groups(),
        }
    }

    fn log_tail(&self, n: usize) -> String {
        match self {
            System::Estuary(gw) => gw.log_tail(n),
            System::Reference(s) => s.log_tail(n),
        }
    }
}

/// CPU and PSS of each group, in the order of `groups`.
pub(crate) fn sample_groups(groups: &[(&'static str, Vec<u32>)]) -> Vec<(Duration, u64)> {
    groups.iter().map(|(_, pids)| sample_all(pids)).collect()
}

/// Each group's threads' on-CPU time, to the nanosecond ([`thread_cpu`]).
fn group_threads(groups: &[(&'static str, Vec<u32>)]) -> Vec<ThreadCpu> {
    groups.iter().map(|(_, pids)| thread_cpu(pids)).collect()
}

/// Each group's CPU from reading `a` to reading `b`.
fn groups_since(a: &[ThreadCpu], b: &[ThreadCpu]) -> Vec<Duration> {
    a.iter().zip(b).map(|(a, b)| cpu_since(a, b)).collect()
}

/// What [`measure`] saw: per group CPU over the window and PSS at its end, CPU over the idle
/// pause, and the packets counted by the far ends.
pub(crate) struct Window {
    pub wall: Duration,
    pub cpu: Vec<Duration>,
    pub pss: Vec<u64>,
    pub idle: Option<(Duration, Vec<Duration>)>,
    pub delivered: u64,
    pub sent: u64,
    pub web_delivered: u64,
}

/// The measuring sequence every system goes through once its calls are up: the idle pause
/// (media off for `idle` after [`SETTLE`]), then [`WARMUP`] of media, then `window`.
/// `groups` is asked for the PIDs at each sample (a forking server's workers included).
/// CPU is read per thread from schedstat: clock ticks (10 ms) cannot tell 0.5% of a core
/// from 0.6% over a 10 s idle pause, and miss wake-ups shorter than a tick.
pub(crate) async fn measure(groups: &dyn Fn() -> Vec<(&'static str, Vec<u32>)>, totals: &Totals, idle: Option<Duration>, window: Duration) -> Window {
    let idle = match idle {
        Some(d) => {
            totals.paused.store(true, Ordering::Relaxed);
            tokio::time::sleep(SETTLE).await;
            let a = group_threads(&groups());
            let t0 = Instant::now();
            tokio::time::sleep(d).await;
            let b = group_threads(&groups());
            let wall = t0.elapsed();
            totals.paused.store(false, Ordering::Relaxed);
            Some((wall, groups_since(&a, &b)))
        }
        None => None,
    };
    tokio::time::sleep(WARMUP).await;
    let a = group_threads(&groups());
    let ca = totals.snapshot();
    let t0 = Instant::now();
    tokio::time::sleep(window).await;
    let b = group_threads(&groups());
    let cb = totals.snapshot();
    let pss = sample_groups(&groups());
    Window {
        wall: t0.elapsed(),
        cpu: groups_since(&a, &b),
        pss: pss.iter().map(|s| s.1).collect(),
        idle,
        delivered: (cb.web_rx - ca.web_rx) + (cb.ims_rx - ca.ims_rx),
        sent: (cb.web_tx - ca.web_tx) + (cb.ims_tx - ca.ims_tx),
        web_delivered: cb.web_rx - ca.web_rx,
    }
}

/// Per group figures from the PSS before the first call and a [`Window`].
pub(crate) fn parts(groups: &[(&'static str, Vec<u32>)], pss_idle: &[(Duration, u64)], w: &Window, setup: Option<&[Duration]>) -> Vec<Part> {
    groups
        .iter()
        .enumerate()
        .map(|(i, (name, _))| Part {
            name,
            cpu: w.cpu[i],
            idle_cpu: w.idle.as_ref().map(|(_, c)| c[i]),
            pss_idle: pss_idle[i].1,
            pss_loaded: w.pss[i],
            setup_cpu: setup.and_then(|s| s.get(i).copied()),
        })
        .collect()
}

/// The IMS side of a run: the test peer engine answering on its own UDP socket and, with
/// [`Core::Kamailio`], Kamailio in front of it.
pub(crate) struct ImsSide {
    /// Where the system under test sends its IMS-bound requests.
    pub next_hop: u16,
    /// The test peer's own SIP port (the reference stack's Kamailio forwards there).
    app_port: u16,
    kamailio: Option<ImsCore>,
}

impl ImsSide {
    /// Starts the test peer (its media tasks count into `totals`, dropping `loss` of their
    /// packets) and, for `core`, Kamailio in front of it.
    pub(crate) async fn start(core: Core, loss: f64, totals: &Arc<Totals>, stop: &watch::Receiver<bool>) -> Result<ImsSide, String> {
        let sip = UdpSocket::bind("127.0.0.1:0").await.map_err(|e| e.to_string())?;
        let app_port = sip.local_addr().map_err(|e| e.to_string())?.port();
        tokio::spawn(ims_core(sip, loss, totals.clone(), stop.clone()));
        let kamailio = match core {
            Core::Testpeer => None,
            Core::Kamailio => Some(ImsCore::start(app_port)?),
        };
        Ok(ImsSide { next_hop: kamailio.as_ref().map_or(app_port, |k| k.sip.port()), app_port, kamailio })
    }

    /// Kamailio's CPU time now (its workers included, read per thread: a few calls cost it
    /// less than a clock tick), when it is there.
    pub(crate) fn core_cpu(&self) -> Option<Duration> {
        self.core_threads().map(|t| Duration::from_nanos(t.values().sum()))
    }

    /// Kamailio's threads' CPU times now, when it is there.
    fn core_threads(&self) -> Option<ThreadCpu> {
        self.kamailio.as_ref().map(|k| thread_cpu(&k.pids()))
    }

    pub(crate) fn log_tail(&self, n: usize) -> String {
        self.kamailio.as_ref().map_or(String::new(), |k| format!("\n--- kamailio (IMS core) ---\n{}", k.log_tail(n)))
    }
}

/// The daemon under test, not started yet: media ports `ports`, IMS next hop UDP
/// 127.0.0.1:`next_hop`, warnings only in its log and, with `lift_limits`, the per-source
/// limits lifted. Callers add their own `--set`s.
pub fn estuary(ports: (u16, u16), lift_limits: bool, next_hop: u16) -> GatewayBuilder {
    let mut builder = Gateway::builder()
        .next_hop_udp(next_hop)
        .set("log.level", "warn")
        .set("media.port_min", &ports.0.to_string())
        .set("media.port_max", &ports.1.to_string());
    if lift_limits {
        // Every browser here shares 127.0.0.1: lift the per-source limits (sized for an
        // office behind one NAT), as an operator would for a load test.
        builder = builder
            .set("limits.ws_connections_per_ip", "1000000")
            .set("limits.ws_handshakes_per_ip", "1000000")
            .set("limits.requests_per_second_per_ip", "1000000")
            .set("limits.request_burst_per_ip", "1000000")
            .set("limits.registrations_per_ip", "10000000");
    }
    // BENCH_SET="key=value;key=value": settings to compare (media.threads, web_port_mode).
    for kv in std::env::var("BENCH_SET").unwrap_or_default().split(';').filter(|s| !s.is_empty()) {
        match kv.split_once('=') {
            Some((k, v)) => builder = builder.set(k.trim(), v.trim()),
            None => eprintln!("BENCH_SET: ignoring {kv:?}, which is not key=value"),
        }
    }
    builder
}

/// [`run`] against the system `target` names, with its extra measurements.
pub async fn run_on(load: &Load, target: &Target) -> Result<Measured, String> {
    let (calls, window) = (load.calls, load.window);
    let media = Arc::new(MediaSource::new(load.codec)?);
    let totals = Arc::new(Totals::default());
    let (stop_tx, stop) = watch::channel(false);

    let core = if target.reference { Core::Testpeer } else { target.core };
    let ims = ImsSide::start(core, load.ims_loss, &totals, &stop).await?;
    let system = if target.reference {
        if load.flood.is_some() {
            return Err("the flood runs against Estuary only".into());
        }
        System::Reference(Stack::start(ims.app_port, load.ports, calls)?)
    } else {
        System::Estuary(estuary(load.ports, load.lift_limits, ims.next_hop).start().await)
    };
    let log_tail = |n: usize| format!("{}{}", system.log_tail(n), ims.log_tail(n));
    let pid = system.pid();
    let pss_idle = sample_groups(&system.groups());
    let idle = sample(pid).map_err(|e| format!("reading /proc/{pid}: {e}"))?;
    let rss_peak = Arc::new(AtomicU64::new(idle.rss_bytes));
    {
        let (peak, mut stop) = (rss_peak.clone(), stop.clone());
        tokio::spawn(async move {
            while !*stop.borrow() {
                if let Ok(s) = sample(pid) {
                    peak.fetch_max(s.rss_bytes, Ordering::Relaxed);
                }
                let _ = tokio::time::timeout(Duration::from_millis(100), stop.changed()).await;
            }
        });
    }
    let flood = match (&system, load.flood.clone()) {
        (System::Estuary(gw), Some(f)) => Some(tokio::spawn(crate::flood::run(f, gw.ws_addr, gw.wss_addr, gw.ims_addr))),
        _ => None,
    };

    let cert = Arc::new(Certificate::generate().map_err(|e| e.to_string())?);
    let started = Instant::now();
    let mut setup_cpu = None;
    let (clients, phases) = if target.phased && !target.reference {
        // The daemon's threads' CPU, the IMS core's, and the daemon's PSS.
        let reading = || (thread_cpu(&[pid]), ims.core_threads(), crate::pss(pid).unwrap_or(0));
        phased_setup(system.ws_addr(), calls, &cert, &media, &totals, &stop, &reading).await
    } else {
        // Calls, spread over the connections; each connection's calls are set up in sequence,
        // with the media paused until the last is keyed (consent checks go on), so the set-up's
        // CPU is the set-up's alone, for every system alike.
        totals.paused.store(true, Ordering::Relaxed);
        let setup_mark = group_threads(&system.groups());
        let mut setups = Vec::new();
        for c in 0..CONNECTIONS as u64 {
            let n = calls / CONNECTIONS as u64 + u64::from(c < calls % CONNECTIONS as u64);
            if n > 0 {
                setups.push(tokio::spawn(connection(system.ws_addr(), c, n, cert.clone(), media.clone(), totals.clone(), stop.clone())));
            }
        }
        let mut clients = Vec::new();
        for s in setups {
            clients.push(s.await.map_err(|e| format!("call setup: {e}"))?);
        }
        while totals.ready.load(Ordering::Relaxed) + totals.failed.load(Ordering::Relaxed) < calls {
            if started.elapsed() > SETUP_LIMIT {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        setup_cpu = Some(groups_since(&setup_mark, &group_threads(&system.groups())));
        totals.paused.store(false, Ordering::Relaxed);
        (clients, Vec::new())
    };
    let ready = totals.ready.load(Ordering::Relaxed);
    let setup_time = started.elapsed();
    if ready == 0 || ready * 100 < calls * 95 {
        return Err(format!("only {ready} of {calls} calls came up in {setup_time:?}\n--- system log ---\n{}", log_tail(30)));
    }

    let groups = || system.groups();
    let w = measure(&groups, &totals, target.idle, window).await;
    let b = sample(pid).map_err(|e| e.to_string())?;
    let parts = parts(&system.groups(), &pss_idle, &w, setup_cpu.as_deref());
    let flood = match flood {
        Some(f) => Some(f.await.map_err(|e| format!("flood: {e}"))?),
        None => None,
    };
    let _ = stop_tx.send(true);
    let (mut counters, mut healthz, mut panicked, mut frames, mut concealed) = (Vec::new(), 0, false, None, None);
    if let System::Estuary(gw) = &system {
        counters = ["estuary_requests_throttled_total", "estuary_untrusted_ims_messages_total", "estuary_ws_refused_total", "estuary_registrations_active", "estuary_calls_active"]
            .into_iter()
            .map(|m| (m, gw.metric(m).unwrap_or(-1.0)))
            .collect();
        healthz = gw.http_get("/healthz").map(|(s, _)| s).unwrap_or(0);
        panicked = gw.log().contains("panic");
        frames = gw.metric("estuary_transcoder_frames_total");
    }
    drop(clients);
    if let System::Estuary(gw) = &system {
        // Channels report their concealment when they close, with the calls.
        for _ in 0..20 {
            tokio::time::sleep(Duration::from_millis(100)).await;
            if gw.metric("estuary_transcoder_channels_open") == Some(0.0) {
                concealed = gw.metric("estuary_transcoder_concealed_total");
                break;
            }
        }
    }
    Ok(Measured {
        pid,
        calls_up: ready,
        calls_asked: calls,
        setup: setup_time,
        window: w.wall,
        delivered: w.delivered,
        sent: w.sent,
        daemon_cpu: w.cpu.iter().sum(),
        rss_idle: idle.rss_bytes,
        rss_loaded: b.rss_bytes,
        srtp_failures: totals.web_bad.load(Ordering::Relaxed),
        web_delivered: w.web_delivered,
        ims_dropped: totals.ims_dropped.load(Ordering::Relaxed),
        web_seq_gaps: totals.web_gaps.load(Ordering::Relaxed),
        web_ts_jumps: totals.web_ts_jumps.load(Ordering::Relaxed),
        concealed,
        transcoded_frames: frames,
        rss_peak: rss_peak.load(Ordering::Relaxed).max(b.rss_bytes),
        flood,
        counters,
        healthz,
        panicked,
        log_tail: log_tail(30),
        parts,
        idle_window: w.idle.as_ref().map(|(d, _)| *d),
        phases,
    })
}

/// Sets `calls` browsers up in [`PHASES`], every browser through one phase before the next
/// begins, and takes a `reading` (the daemon's threads' CPU times, the IMS core's when it is
/// there, and the daemon's PSS) between phases. Each browser has its own WebSocket and
/// registration, as each tab of a real browser does. Browsers that fail a phase are dropped
/// (counted in `totals.failed`); the keyed ones start their media and count in
/// `totals.ready`. Returns the clients, which must live as long as their calls, and the
/// phases.
async fn phased_setup(
    ws: SocketAddr,
    calls: u64,
    cert: &Arc<Certificate>,
    media: &Arc<MediaSource>,
    totals: &Arc<Totals>,
    stop: &watch::Receiver<bool>,
    reading: &dyn Fn() -> (ThreadCpu, Option<ThreadCpu>, u64),
) -> (Vec<WsSipClient>, Vec<Phase>) {
    let mut phases = Vec::new();
    let mut mark = (Instant::now(), reading());
    let mut close = |name: &'static str, survivors: usize| {
        let now = (Instant::now(), reading());
        let (t0, (d0, c0, m0)) = &mark;
        let (t1, (d1, c1, m1)) = &now;
        let core_cpu = match (c0, c1) {
            (Some(a), Some(b)) => Some(cpu_since(a, b)),
            _ => None,
        };
        let pss_growth = *m1 as i64 - *m0 as i64;
        phases.push(Phase { name, wall: *t1 - *t0, cpu: cpu_since(d0, d1), core_cpu, calls: survivors as u64, pss_growth });
        mark = now;
    };
    let browsers = each("ws", (0..calls).collect(), totals, move |n| connect(ws, n)).await;
    close(PHASES[0], browsers.len());
    let browsers = each("register", browsers, totals, |mut b| async move { register(&mut b.client).await.map(|()| b) }).await;
    close(PHASES[1], browsers.len());
    let browsers = each("invite", browsers, totals, |mut b| {
        let (cert, codec) = (cert.clone(), media.codec);
        async move {
            let call = invite(&mut b.client, b.n, codec, &cert).await?;
            b.call = Some(call);
            Ok(b)
        }
    })
    .await;
    close(PHASES[2], browsers.len());
    let browsers = each("ice", browsers, totals, |b| async move {
        let c = b.call.as_ref().ok_or("no call")?;
        nominate(&c.leg).await.map(|_| b)
    })
    .await;
    close(PHASES[3], browsers.len());
    let browsers = each("dtls", browsers, totals, |mut b| {
        let cert = cert.clone();
        async move {
            let c = b.call.as_mut().ok_or("no call")?;
            c.keyed = Some(handshake(&c.leg, &cert).await?);
            Ok(b)
        }
    })
    .await;
    close(PHASES[4], browsers.len());
    let mut clients = Vec::new();
    for b in browsers {
        let Some(Call { leg, keyed: Some(keyed), .. }) = b.call else { continue };
        totals.ready.fetch_add(1, Ordering::Relaxed);
        let (media, totals, mut stop) = (media.clone(), totals.clone(), stop.clone());
        tokio::spawn(async move { stream(&leg, keyed, &media, &totals, &mut stop, None).await });
        clients.push(b.client);
    }
    (clients, phases)
}

/// Runs `step` on every item, each in its own task and at most [`IN_FLIGHT`] at once, and
/// returns the browsers it succeeded for, in order. A failure (an error, or a panic of the
/// conformance client, which reports timeouts that way) drops that item and is counted in
/// `totals.failed`; the first few are printed with the phase's `name`. Bounded because each
/// step is.
async fn each<T, F, Fut>(name: &str, items: Vec<T>, totals: &Totals, step: F) -> Vec<Browser>
where
    T: Send + 'static,
    F: Fn(T) -> Fut,
    Fut: std::future::Future<Output = Result<Browser, String>> + Send + 'static,
{
    let slots = Arc::new(Semaphore::new(IN_FLIGHT));
    let mut tasks = Vec::with_capacity(items.len());
    for item in items {
        let Ok(slot) = slots.clone().acquire_owned().await else { break };
        let fut = step(item);
        tasks.push(tokio::spawn(async move {
            let r = fut.await;
            drop(slot);
            r
        }));
    }
    let (mut done, mut failed) = (Vec::with_capacity(tasks.len()), 0);
    for t in tasks {
        match t.await.map_err(task_failure).and_then(|r| r) {
            Ok(b) => done.push(b),
            Err(e) => {
                if failed < SHOWN_FAILURES {
                    eprintln!("{name}: {e}");
                }
                failed += 1;
                totals.failed.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
    if failed > SHOWN_FAILURES {
        eprintln!("{name}: {} more failures", failed - SHOWN_FAILURES);
    }
    done
}

/// What a call's task that did not finish left: the conformance client's panic message
/// (how it reports a timeout or a closed WebSocket), or the cancellation.
pub(crate) fn task_failure(e: tokio::task::JoinError) -> String {
    if !e.is_panic() {
        return e.to_string();
    }
    let p = e.into_panic();
    p.downcast_ref::<String>().cloned().or_else(|| p.downcast_ref::<&str>().map(|s| (*s).to_owned())).unwrap_or_else(|| "panicked".into())
}

// ----- browsers ------------------------------------------------------------------------------

/// One WebSocket connection: register, then place `n` calls one after another, each handed
/// to its own media task. The client is returned and must live as long as its calls (the
/// daemon ends a connection's calls when it closes).
async fn connection(ws: SocketAddr, idx: u64, n: u64, cert: Arc<Certificate>, media: Arc<MediaSource>, totals: Arc<Totals>, stop: watch::Receiver<bool>) -> WsSipClient {
    let mut client = WsSipClient::connect(ws, &format!("bench{idx}"), "ims.test", "bench").await;
    let reg = client.register(600, DEFAULT_WAIT).await;
    assert_eq!(reg.last().map(|r| r.status()), Some(200), "REGISTER through the daemon: {}", client.transcript());
    for k in 0..n {
        let sock = match UdpSocket::bind("127.0.0.1:0").await {
            Ok(s) => s,
            Err(_) => {
                totals.failed.fetch_add(1, Ordering::Relaxed);
                continue;
            }
        };
        let port = sock.local_addr().map(|a| a.port()).unwrap_or(0);
        let (ufrag, pwd) = (token(8), token(24));
        let offer = offer(media.codec, port, &ufrag, &pwd, &cert.fingerprint(), idx * 1000 + k);
        let mut d = client.invite("sip:echo@ims.test", &offer).await;
        let (_, ok) = client.wait_final(&d.invite, DEFAULT_WAIT).await;
        if ok.status() != 200 {
            eprintln!("call {idx}/{k}: {} {}", ok.status(), ok.reason());
            totals.failed.fetch_add(1, Ordering::Relaxed);
            continue;
        }
        d.update_from_response(&ok);
        client.ack(&mut d).await;
        match Answer::parse(&ok.body) {
            Some(a) => {
                let leg = Leg { sock, local: Local { ufrag, pwd }, answer: a };
                tokio::spawn(browser(leg, cert.clone(), media.clone(), totals.clone(), stop.clone()));
            }
            None => {
                eprintln!("call {idx}/{k}: unusable answer\n{}", ok.body);
                totals.failed.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
    client
}

/// A browser with its own WebSocket ([`Target::phased`] and the set-up rate benchmark), and
/// its call once there is one.
pub(crate) struct Browser {
    pub n: u64,
    pub client: WsSipClient,
    pub call: Option<Call>,
}

/// A browser's answered call: its dialog, its media and, once the handshake is done, its
/// DTLS association and keys.
pub(crate) struct Call {
    pub dialog: Dialog,
    pub leg: Leg,
    pub keyed: Option<(DtlsEndpoint, SrtpKeyMaterial)>,
}

/// A browser's media end of one call: its socket, its own ICE credentials (from its offer)
/// and what the answer said.
pub(crate) struct Leg {
    sock: UdpSocket,
    local: Local,
    answer: Answer,
}

/// Browser `n` opens its WebSocket to `ws` as user `benchN`. The conformance client panics
/// when it cannot (after its 10 s wait): in a task of its own, that is this browser's error.
pub(crate) async fn connect(ws: SocketAddr, n: u64) -> Result<Browser, String> {
    let client = tokio::spawn(async move { WsSipClient::connect(ws, &format!("bench{n}"), "ims.test", "bench").await })
        .await
        .map_err(|e| format!("WebSocket: {}", task_failure(e)))?;
    Ok(Browser { n, client, call: None })
}

/// The final response to `req` within `limit`, provisional ones dropped; `None` when none
/// came or the WebSocket closed.
async fn final_response(client: &mut WsSipClient, req: &SipMsg, limit: Duration) -> Option<SipMsg> {
    let (branch, method) = (req.top_branch(), req.method());
    let deadline = tokio::time::Instant::now() + limit;
    // Each turn takes one response off the connection or the queue, or ends at the deadline.
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let r = client.maybe_wait_for(left, |m| m.is_response() && m.top_branch() == branch && m.method() == method).await?;
        if r.status() >= 200 {
            return Some(r);
        }
    }
}

/// REGISTER for 600 s, answered 200 (the cores here do not challenge).
pub(crate) async fn register(client: &mut WsSipClient) -> Result<(), String> {
    let req = client.register_request(600);
    client.send(&req).await;
    match final_response(client, &req, DEFAULT_WAIT).await {
        Some(r) if r.status() == 200 => Ok(()),
        Some(r) => Err(format!("REGISTER: {} {}", r.status(), r.reason())),
        None => Err(format!("REGISTER: no final response in {DEFAULT_WAIT:?}")),
    }
}

/// Calls `sip:echo@ims.test` from a fresh media socket with a `codec` offer: INVITE, its
/// 200, ACK; the call with what the answer says.
pub(crate) async fn invite(client: &mut WsSipClient, n: u64, codec: BrowserCodec, cert: &Certificate) -> Result<Call, String> {
    let sock = UdpSocket::bind("127.0.0.1:0").await.map_err(|e| format!("media socket: {e}"))?;
    let port = sock.local_addr().map_err(|e| e.to_string())?.port();
    let local = Local { ufrag: token(8), pwd: token(24) };
    let mut dialog = client.invite("sip:echo@ims.test", &offer(codec, port, &local.ufrag, &local.pwd, &cert.fingerprint(), n)).await;
    let ok = match final_response(client, &dialog.invite, DEFAULT_WAIT).await {
        Some(r) if r.status() == 200 => r,
        Some(r) => return Err(format!("INVITE: {} {}", r.status(), r.reason())),
        None => return Err(format!("INVITE: no final response in {DEFAULT_WAIT:?}")),
    };
    dialog.update_from_response(&ok);
    client.ack(&mut dialog).await;
    let answer = Answer::parse(&ok.body).ok_or_else(|| format!("unusable answer\n{}", ok.body))?;
    Ok(Call { dialog, leg: Leg { sock, local, answer }, keyed: None })
}

/// BYE in `dialog`, answered 200.
pub(crate) async fn hang_up(client: &mut WsSipClient, dialog: &mut Dialog) -> Result<(), String> {
    let req = client.bye(dialog).await;
    match final_response(client, &req, DEFAULT_WAIT).await {
        Some(r) if r.status() == 200 => Ok(()),
        Some(r) => Err(format!("BYE: {} {}", r.status(), r.reason())),
        None => Err(format!("BYE: no final response in {DEFAULT_WAIT:?}")),
    }
}

fn token(n: usize) -> String {
    const CHARS: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
    let mut rng = rand::rng();
    (0..n).map(|_| CHARS[rng.random_range(0..CHARS.len())] as char).collect()
}

/// A Chromium-shaped audio offer: G.711 only (the relay is measured, not the transcoder), or
/// Opus only (every call needs the transcoder).
fn offer(codec: BrowserCodec, port: u16, ufrag: &str, pwd: &str, fp: &Fingerprint, n: u64) -> String {
    let (pts, maps) = match codec {
        BrowserCodec::Pcmu => ("0 126", "a=rtpmap:0 PCMU/8000\r\na=rtpmap:126 telephone-event/8000\r\n"),
        BrowserCodec::Opus => (
            "111 110",
            "a=rtpmap:111 opus/48000/2\r\na=fmtp:111 minptime=10;useinbandfec=1\r\na=rtpmap:110 telephone-event/48000\r\n",
        ),
    };
    format!(
        "v=0\r\no=- {} 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\na=group:BUNDLE 0\r\na=msid-semantic: WMS\r\n\
         m=audio {port} UDP/TLS/RTP/SAVPF {pts}\r\nc=IN IP4 127.0.0.1\r\na=rtcp:9 IN IP4 0.0.0.0\r\n\
         a=candidate:1 1 udp 2122260223 127.0.0.1 {port} typ host generation 0\r\n\
         a=ice-ufrag:{ufrag}\r\na=ice-pwd:{pwd}\r\na=ice-options:trickle\r\na=fingerprint:{fp}\r\n\
         a=setup:actpass\r\na=mid:0\r\na=sendrecv\r\na=msid:- bench{n}\r\na=rtcp-mux\r\n\
         {maps}a=ssrc:{} cname:bench{n}\r\n",
        1_000_000 + n,
        0x1000_0000 + n
    )
}

/// What a browser needs from the answer.
struct Answer {
    candidate: SocketAddr,
    ufrag: String,
    pwd: String,
    fingerprint: Fingerprint,
    /// Our DTLS role: the answerer took `a=setup:passive` (Estuary), so we connect; `active`
    /// (rtpengine by default), so we wait for its ClientHello.
    role: DtlsRole,
}

impl Answer {
    fn parse(sdp: &str) -> Option<Answer> {
        let attr = |name: &str| sdp.lines().find_map(|l| l.strip_prefix(name)).map(str::trim);
        // The first UDP host candidate of component 1 (RTP; a full ICE agent may list RTCP's).
        let cand: Vec<&str> = sdp
            .lines()
            .filter_map(|l| l.strip_prefix("a=candidate:"))
            .map(|c| c.split_whitespace().collect::<Vec<&str>>())
            .find(|c| c.get(1) == Some(&"1") && c.get(2).is_some_and(|t| t.eq_ignore_ascii_case("udp")))?;
        let candidate = format!("{}:{}", cand.get(4)?, cand.get(5)?).parse().ok()?;
        let role = match attr("a=setup:") {
            Some("active") => DtlsRole::Server,
            _ => DtlsRole::Client,
        };
        Some(Answer {
            candidate,
            ufrag: attr("a=ice-ufrag:")?.to_owned(),
            pwd: attr("a=ice-pwd:")?.to_owned(),
            fingerprint: Fingerprint::parse(attr("a=fingerprint:")?).ok()?,
            role,
        })
    }
}

/// The browser's own ICE credentials (from its offer).
struct Local {
    ufrag: String,
    pwd: String,
}

/// The success response to a Binding request `req` from `from` (RFC 8445 §7.3: the far end is
/// a full ICE agent checking our candidate), signed with our password; `None` when `req` is not
/// a Binding request. The request's own integrity is not checked: only the system's CPU is
/// measured, and it sends nothing else on this socket.
fn binding_response(req: &[u8], from: SocketAddr, local: &Local) -> Option<Vec<u8>> {
    let (msg, _) = MessageDecoderBuilder::default().build().decode(req).ok()?;
    if msg.method() != BINDING || msg.class() != MessageClass::Request {
        return None;
    }
    let resp = StunMessageBuilder::new(BINDING, MessageClass::SuccessResponse)
        .with_transaction_id(*msg.transaction_id())
        .with_attribute(XorMappedAddress::from(from))
        .with_attribute(MessageIntegrity::new(HMACKey::new_short_term(&local.pwd).ok()?))
        .with_attribute(StunFingerprint::default())
        .build();
    let mut buf = vec![0u8; 512];
    let n = MessageEncoderBuilder::default().build().encode(&mut buf, &resp).ok()?;
    buf.truncate(n);
    Some(buf)
}

/// Whether `pkt` is a STUN success response (the answer to our check).
fn is_binding_success(pkt: &[u8]) -> bool {
    // RFC 5389 §6: the message type's class bits C1 C0 = 1 0 for a success response.
    pkt.len() >= 20 && u16::from_be_bytes([pkt[0], pkt[1]]) == 0x0101
}

/// A Binding request from the controlling browser (RFC 8445 §7.1), nominating with
/// USE-CANDIDATE on the first.
fn binding_request(a: &Answer, local: &Local, nominate: bool) -> Option<Vec<u8>> {
    let mut b = StunMessageBuilder::new(BINDING, MessageClass::Request)
        .with_attribute(UserName::new(format!("{}:{}", a.ufrag, local.ufrag)).ok()?)
        .with_attribute(Priority::new(0x6e00_01ff))
        .with_attribute(IceControlling::new(rand::random()));
    if nominate {
        b = b.with_attribute(UseCandidate::default());
    }
    let b = b
        .with_attribute(MessageIntegrity::new(HMACKey::new_short_term(&a.pwd).ok()?))
        .with_attribute(StunFingerprint::default());
    let mut buf = vec![0u8; 512];
    let n = MessageEncoderBuilder::default().build().encode(&mut buf, &b.build()).ok()?;
    buf.truncate(n);
    Some(buf)
}

/// One browser's media: ICE, DTLS, then SRTP both ways until stopped. Binding requests from
/// the far end are answered throughout.
async fn browser(leg: Leg, cert: Arc<Certificate>, media: Arc<MediaSource>, totals: Arc<Totals>, mut stop: watch::Receiver<bool>) {
    let keyed = match nominate(&leg).await {
        Ok(_) => handshake(&leg, &cert).await,
        Err(e) => Err(e),
    };
    match keyed {
        Ok(keyed) => {
            totals.ready.fetch_add(1, Ordering::Relaxed);
            stream(&leg, keyed, &media, &totals, &mut stop, None).await;
        }
        Err(e) => {
            eprintln!("browser: {e}");
            totals.failed.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// ICE: the nominating check, retransmitted until answered (40 tries, 250 ms apart).
/// Binding requests from the far end are answered meanwhile.
pub(crate) async fn nominate(leg: &Leg) -> Result<u32, String> {
    let Leg { sock, local, answer: a } = leg;
    let mut buf = vec![0u8; 2048];
    let check = binding_request(a, local, true).ok_or("cannot build a STUN check")?;
    for sent in 1..=40 {
        let _ = sock.send_to(&check, a.candidate).await;
        let next = tokio::time::Instant::now() + Duration::from_millis(250);
        while let Ok(Ok((n, from))) = tokio::time::timeout_at(next, sock.recv_from(&mut buf)).await {
            if classify(&buf[..n]) != PacketKind::Stun {
                continue;
            }
            if is_binding_success(&buf[..n]) {
                return Ok(sent);
            }
            if let Some(r) = binding_response(&buf[..n], from, local) {
                let _ = sock.send_to(&r, from).await;
            }
        }
    }
    Err("no STUN answer".into())
}

/// DTLS in the role the answer's a=setup leaves us, within 60 s: the association and the
/// SRTP keys.
pub(crate) async fn handshake(leg: &Leg, cert: &Certificate) -> Result<(DtlsEndpoint, SrtpKeyMaterial), String> {
    let Leg { sock, local, answer: a } = leg;
    let mut buf = vec![0u8; 2048];
    let mut dtls = DtlsEndpoint::new(a.role, cert, vec![a.fingerprint.clone()], &[SrtpProfile::Aes128CmSha1_80], Instant::now()).map_err(|e| format!("DTLS setup: {e:?}"))?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        while let Some(o) = dtls.poll_output() {
            match o {
                estuary_srtp::Output::Transmit(d) => {
                    let _ = sock.send_to(&d, a.candidate).await;
                }
                estuary_srtp::Output::Event(DtlsEvent::Connected { keys, .. }) => return Ok((dtls, keys)),
                estuary_srtp::Output::Event(e) => return Err(format!("DTLS: {e:?}")),
            }
        }
        let timer = dtls.poll_timeout().map(tokio::time::Instant::from_std).unwrap_or(deadline).min(deadline);
        tokio::select! {
            r = sock.recv_from(&mut buf) => if let Ok((n, from)) = r {
                match classify(&buf[..n]) {
                    PacketKind::Dtls => { let _ = dtls.handle_input(Instant::now(), &buf[..n]); }
                    PacketKind::Stun => if let Some(r) = binding_response(&buf[..n], from, local) {
                        let _ = sock.send_to(&r, from).await;
                    },
                    _ => {}
                }
            },
            () = tokio::time::sleep_until(timer) => {
                if tokio::time::Instant::now() >= deadline {
                    return Err("DTLS handshake timed out".into());
                }
                dtls.handle_timeout(Instant::now());
            }
        }
    }
}

/// What one browser's media saw: SRTP packets it sent, and received back that authenticated.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Flow {
    pub sent: u64,
    pub received: u64,
}

/// SRTP both ways on a keyed call until `stop` or, with `packets`, until that many were sent
/// and [`DRAIN`] more has passed for what is still on its way back. Consent checks every 5 s,
/// as Chromium; DTLS and Binding requests from the far end are handled throughout.
pub(crate) async fn stream(
    leg: &Leg,
    (mut dtls, keys): (DtlsEndpoint, SrtpKeyMaterial),
    media: &MediaSource,
    totals: &Totals,
    stop: &mut watch::Receiver<bool>,
    packets: Option<u32>,
) -> Flow {
    let Leg { sock, local, answer: a } = leg;
    let role = a.role;
    let mut tx = SrtpContext::new(keys.local(role));
    let mut rx = SrtpContext::new(keys.remote(role));
    let mut buf = vec![0u8; 2048];
    let (ssrc, mut seq, mut ts) = (Ssrc(rand::random()), SeqNo(rand::random()), rand::random::<u32>());
    let mut out: Vec<u8> = Vec::with_capacity(256);
    let mut tick = tokio::time::interval(PTIME);
    tick.set_missed_tick_behavior(MissedTickBehavior::Skip);
    let mut n = 0u32;
    let mut flow = Flow::default();
    // Set once the last packet of `packets` is out.
    let mut until: Option<tokio::time::Instant> = None;
    // What the daemon sends back is in the browser's codec, at its packet time.
    let mut last_in: Option<(u16, u32)> = None;
    loop {
        let drained = async {
            match until {
                Some(t) => tokio::time::sleep_until(t).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            r = sock.recv_from(&mut buf) => if let Ok((len, from)) = r {
                match classify(&buf[..len]) {
                    PacketKind::Rtp => match rx.unprotect_rtp_in_place(&mut buf[..len]) {
                        Ok(n) => {
                            flow.received += 1;
                            totals.web_rx.fetch_add(1, Ordering::Relaxed);
                            if let Ok(p) = estuary_rtp::RtpPacket::parse(&buf[..n]) {
                                if let Some((s, t)) = last_in {
                                    let steps = p.seq().0.wrapping_sub(s);
                                    if steps != 1 {
                                        totals.web_gaps.fetch_add(1, Ordering::Relaxed);
                                    } else if p.timestamp().wrapping_sub(t) != media.ticks {
                                        totals.web_ts_jumps.fetch_add(1, Ordering::Relaxed);
                                    }
                                }
                                last_in = Some((p.seq().0, p.timestamp()));
                            }
                        }
                        Err(_) => { totals.web_bad.fetch_add(1, Ordering::Relaxed); }
                    },
                    PacketKind::Dtls => { let _ = dtls.handle_input(Instant::now(), &buf[..len]); }
                    PacketKind::Stun => if let Some(r) = binding_response(&buf[..len], from, local) {
                        let _ = sock.send_to(&r, from).await;
                    },
                    _ => {}
                }
            },
            _ = tick.tick(), if until.is_none() => {
                n += 1;
                if n.is_multiple_of(CONSENT_EVERY) {
                    if let Some(c) = binding_request(a, local, false) {
                        let _ = sock.send_to(&c, a.candidate).await;
                    }
                }
                if totals.paused.load(Ordering::Relaxed) {
                    // Silence without DTX: the clock runs on, no packet is sent.
                    ts = ts.wrapping_add(media.ticks);
                    continue;
                }
                out.resize(MAX_PACKET, 0);
                let h = RtpHeader { marker: false, pt: Pt(media.pt), seq, timestamp: ts, ssrc };
                let payload = &media.packets[(n - 1) as usize % media.packets.len()];
                let Ok(len) = h.write_with_payload(payload, &mut out) else { continue };
                out.truncate(len);
                if tx.protect_rtp(&mut out).is_ok() {
                    let _ = sock.send_to(&out, a.candidate).await;
                    flow.sent += 1;
                    totals.web_tx.fetch_add(1, Ordering::Relaxed);
                }
                seq = seq.next();
                ts = ts.wrapping_add(media.ticks);
                if packets.is_some_and(|p| n >= p) {
                    until = Some(tokio::time::Instant::now() + DRAIN);
                }
            }
            () = drained => return flow,
            _ = stop.changed() => return flow,
        }
    }
}

// ----- the IMS core --------------------------------------------------------------------------

/// Media ports the test peer's SDP answers name, bound here and taken by each call's task.
#[derive(Default)]
struct Binder {
    bound: HashMap<u16, std::net::UdpSocket>,
}

impl MediaPorts for Binder {
    fn open(&mut self) -> Option<u16> {
        let s = std::net::UdpSocket::bind("127.0.0.1:0").ok()?;
        s.set_nonblocking(true).ok()?;
        let port = s.local_addr().ok()?.port();
        self.bound.insert(port, s);
        Some(port)
    }
}

/// The SIP side of the core: the test peer's engine answers REGISTER and INVITE; each
/// answered call's port gets a media task, which ends with the call.
async fn ims_core(sip: UdpSocket, loss: f64, totals: Arc<Totals>, mut stop: watch::Receiver<bool>) {
    let Ok(addr) = sip.local_addr() else { return };
    let mut peer = TestPeer::new(PeerConfig::new(addr), rand::random());
    let mut ports = Binder::default();
    // Per running media task, dropped to end it.
    let mut running: HashMap<u16, oneshot::Sender<()>> = HashMap::new();
    let mut buf = vec![0u8; 65_535];
    loop {
        while let Some(o) = peer.poll_output() {
            match o {
                Output::Transmit { to, data } => {
                    let _ = sip.send_to(&data, to).await;
                }
                Output::MediaStart { port, .. } => {
                    if let Some(Ok(s)) = ports.bound.remove(&port).map(UdpSocket::from_std) {
                        let (end, ended) = oneshot::channel();
                        running.insert(port, end);
                        tokio::spawn(ims_media(s, loss, totals.clone(), stop.clone(), ended));
                    }
                }
                Output::MediaStop { port } => {
                    running.remove(&port);
                    ports.bound.remove(&port);
                }
                Output::MediaUpdate { .. } => {}
            }
        }
        let timer = peer.poll_timeout().map(tokio::time::Instant::from_std);
        tokio::select! {
            r = sip.recv_from(&mut buf) => if let Ok((n, from)) = r {
                peer.handle_sip(Instant::now(), from, &buf[..n], &mut ports);
            },
            () = async { match timer { Some(t) => tokio::time::sleep_until(t).await, None => std::future::pending().await } } => {
                peer.handle_timeout(Instant::now());
            }
            _ = stop.changed() => return,
        }
    }
}

/// One call at the core: counts the daemon's RTP, and once it knows where that comes from
/// sends its own 20 ms PCMU there, until the run stops or the call ends (`ended`).
async fn ims_media(sock: UdpSocket, loss: f64, totals: Arc<Totals>, mut stop: watch::Receiver<bool>, mut ended: oneshot::Receiver<()>) {
    let (ssrc, mut seq, mut ts) = (Ssrc(rand::random()), SeqNo(rand::random()), rand::random::<u32>());
    let payload = [0x7fu8; 160];
    let mut buf = [0u8; 2048];
    let mut out = [0u8; 200];
    let mut peer = None;
    let mut tick = tokio::time::interval(PTIME);
    tick.set_missed_tick_behavior(MissedTickBehavior::Skip);
    loop {
        tokio::select! {
            r = sock.recv_from(&mut buf) => if let Ok((n, from)) = r {
                if classify(&buf[..n]) == PacketKind::Rtp {
                    totals.ims_rx.fetch_add(1, Ordering::Relaxed);
                    peer.get_or_insert(from);
                }
            },
            _ = tick.tick() => if let Some(to) = peer {
                if totals.paused.load(Ordering::Relaxed) {
                    ts = ts.wrapping_add(160);
                    continue;
                }
                let h = RtpHeader { marker: false, pt: Pt(0), seq, timestamp: ts, ssrc };
                if loss > 0.0 && rand::random::<f64>() < loss {
                    totals.ims_dropped.fetch_add(1, Ordering::Relaxed);
                } else if let Ok(len) = h.write_with_payload(&payload, &mut out) {
                    let _ = sock.send_to(&out[..len], to).await;
                    totals.ims_tx.fetch_add(1, Ordering::Relaxed);
                }
                seq = seq.next();
                ts = ts.wrapping_add(160);
            },
            _ = &mut ended => return,
            _ = stop.changed() => return,
        }
    }
}
