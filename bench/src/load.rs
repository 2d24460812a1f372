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
//! media with every call up to measure what the system costs when idle.
//!
//! Nothing here is specific to Estuary's side of the wire: the browsers answer the ICE checks
//! a full ICE agent sends them (Estuary is ICE-lite and sends none) and take the DTLS role the
//! answer's `a=setup` leaves them, as Chromium does.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use estuary_conformance::ws_client::DEFAULT_WAIT;
use estuary_conformance::{Gateway, WsSipClient};
use estuary_rtp::{classify, PacketKind, Pt, RtpHeader, SeqNo, Ssrc};
use estuary_srtp::{Certificate, DtlsEndpoint, DtlsEvent, DtlsRole, Fingerprint, SrtpContext, SrtpProfile};
use estuary_testpeer::{MediaPorts, Output, PeerConfig, TestPeer};
use rand::Rng;
use stun_rs::attributes::ice::{IceControlling, Priority, UseCandidate};
use stun_rs::attributes::stun::{Fingerprint as StunFingerprint, MessageIntegrity, UserName, XorMappedAddress};
use stun_rs::methods::BINDING;
use stun_rs::{HMACKey, MessageClass, MessageDecoderBuilder, MessageEncoderBuilder, StunMessageBuilder};
use tokio::net::UdpSocket;
use tokio::sync::watch;
use tokio::time::MissedTickBehavior;

use crate::flood::{Flood, FloodReport};
use crate::reference::Stack;
use crate::{sample, sample_all};

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

/// What a run is pointed at and what it measures besides the window. The default is what
/// `make bench` runs: Estuary, the window only.
#[derive(Clone, Debug, Default)]
pub struct Target {
    /// Kamailio + rtpengine ([`crate::reference::Stack`]) in Estuary's place.
    pub reference: bool,
    /// With every call up, pause the media (browsers and core send nothing but consent
    /// checks) for this long before the warm-up, and measure the CPU it costs.
    pub idle: Option<Duration>,
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
}

/// The browsers' payloads, made once: one G.711 frame, or a second of Opus packets of a
/// voiced test signal (encoding per packet in this process would cost more than it measures).
struct MediaSource {
    codec: BrowserCodec,
    pt: u8,
    ticks: u32,
    packets: Vec<Vec<u8>>,
}

impl MediaSource {
    fn new(codec: BrowserCodec) -> Result<MediaSource, String> {
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
pub(crate) async fn measure(groups: &dyn Fn() -> Vec<(&'static str, Vec<u32>)>, totals: &Totals, idle: Option<Duration>, window: Duration) -> Window {
    let idle = match idle {
        Some(d) => {
            totals.paused.store(true, Ordering::Relaxed);
            tokio::time::sleep(SETTLE).await;
            let a = sample_groups(&groups());
            let t0 = Instant::now();
            tokio::time::sleep(d).await;
            let b = sample_groups(&groups());
            let wall = t0.elapsed();
            totals.paused.store(false, Ordering::Relaxed);
            Some((wall, a.iter().zip(&b).map(|(a, b)| b.0.saturating_sub(a.0)).collect()))
        }
        None => None,
    };
    tokio::time::sleep(WARMUP).await;
    let a = sample_groups(&groups());
    let ca = totals.snapshot();
    let t0 = Instant::now();
    tokio::time::sleep(window).await;
    let b = sample_groups(&groups());
    let cb = totals.snapshot();
    Window {
        wall: t0.elapsed(),
        cpu: a.iter().zip(&b).map(|(a, b)| b.0.saturating_sub(a.0)).collect(),
        pss: b.iter().map(|s| s.1).collect(),
        idle,
        delivered: (cb.web_rx - ca.web_rx) + (cb.ims_rx - ca.ims_rx),
        sent: (cb.web_tx - ca.web_tx) + (cb.ims_tx - ca.ims_tx),
        web_delivered: cb.web_rx - ca.web_rx,
    }
}

/// Per group figures from the PSS before the first call and a [`Window`].
pub(crate) fn parts(groups: &[(&'static str, Vec<u32>)], pss_idle: &[(Duration, u64)], w: &Window) -> Vec<Part> {
    groups
        .iter()
        .enumerate()
        .map(|(i, (name, _))| Part {
            name,
            cpu: w.cpu[i],
            idle_cpu: w.idle.as_ref().map(|(_, c)| c[i]),
            pss_idle: pss_idle[i].1,
            pss_loaded: w.pss[i],
        })
        .collect()
}

/// [`run`] against the system `target` names, with its extra measurements.
pub async fn run_on(load: &Load, target: &Target) -> Result<Measured, String> {
    let (calls, window) = (load.calls, load.window);
    let media = Arc::new(MediaSource::new(load.codec)?);
    let totals = Arc::new(Totals::default());
    let (stop_tx, stop) = watch::channel(false);

    let sip = UdpSocket::bind("127.0.0.1:0").await.map_err(|e| e.to_string())?;
    let sip_port = sip.local_addr().map_err(|e| e.to_string())?.port();
    tokio::spawn(ims_core(sip, load.ims_loss, totals.clone(), stop.clone()));
    let system = if target.reference {
        if load.flood.is_some() {
            return Err("the flood runs against Estuary only".into());
        }
        System::Reference(Stack::start(sip_port, load.ports, calls)?)
    } else {
        let mut builder = Gateway::builder()
            .next_hop_udp(sip_port)
            .set("log.level", "warn")
            .set("media.port_min", &load.ports.0.to_string())
            .set("media.port_max", &load.ports.1.to_string());
        if load.lift_limits {
            // Every browser here shares 127.0.0.1: lift the per-source limits (sized for an
            // office behind one NAT), as an operator would for a load test.
            builder = builder
                .set("limits.requests_per_second_per_ip", "1000000")
                .set("limits.request_burst_per_ip", "1000000")
                .set("limits.registrations_per_ip", "10000000");
        }
        System::Estuary(builder.start().await)
    };
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

    // Calls, spread over the connections; each connection's calls are set up in sequence.
    let cert = Arc::new(Certificate::generate().map_err(|e| e.to_string())?);
    let started = Instant::now();
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
    let ready = totals.ready.load(Ordering::Relaxed);
    let setup_time = started.elapsed();
    if ready == 0 || ready * 100 < calls * 95 {
        return Err(format!(
            "only {ready} of {calls} calls came up in {setup_time:?}\n--- system log ---\n{}",
            system.log_tail(30)
        ));
    }

    let groups = || system.groups();
    let w = measure(&groups, &totals, target.idle, window).await;
    let b = sample(pid).map_err(|e| e.to_string())?;
    let parts = parts(&system.groups(), &pss_idle, &w);
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
        log_tail: system.log_tail(30),
        parts,
        idle_window: w.idle.as_ref().map(|(d, _)| *d),
    })
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
                tokio::spawn(browser(sock, Local { ufrag, pwd }, a, cert.clone(), media.clone(), totals.clone(), stop.clone()));
            }
            None => {
                eprintln!("call {idx}/{k}: unusable answer\n{}", ok.body);
                totals.failed.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
    client
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
async fn browser(sock: UdpSocket, local: Local, a: Answer, cert: Arc<Certificate>, media: Arc<MediaSource>, totals: Arc<Totals>, mut stop: watch::Receiver<bool>) {
    let fail = |why: &str| {
        eprintln!("browser: {why}");
        totals.failed.fetch_add(1, Ordering::Relaxed);
    };
    let mut buf = vec![0u8; 2048];
    // ICE: retransmit the nominating check until answered (40 tries, 250 ms apart).
    let Some(check) = binding_request(&a, &local, true) else { return fail("cannot build a STUN check") };
    let mut answered = false;
    'ice: for _ in 0..40 {
        let _ = sock.send_to(&check, a.candidate).await;
        let next = tokio::time::Instant::now() + Duration::from_millis(250);
        while let Ok(Ok((n, from))) = tokio::time::timeout_at(next, sock.recv_from(&mut buf)).await {
            if classify(&buf[..n]) != PacketKind::Stun {
                continue;
            }
            if is_binding_success(&buf[..n]) {
                answered = true;
                break 'ice;
            }
            if let Some(r) = binding_response(&buf[..n], from, &local) {
                let _ = sock.send_to(&r, from).await;
            }
        }
    }
    if !answered {
        return fail("no STUN answer");
    }
    // DTLS in the role the answer's a=setup leaves us.
    let role = a.role;
    let Ok(mut dtls) = DtlsEndpoint::new(role, &cert, vec![a.fingerprint.clone()], &[SrtpProfile::Aes128CmSha1_80], Instant::now()) else {
        return fail("DTLS setup");
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let keys = 'handshake: loop {
        while let Some(o) = dtls.poll_output() {
            match o {
                estuary_srtp::Output::Transmit(d) => {
                    let _ = sock.send_to(&d, a.candidate).await;
                }
                estuary_srtp::Output::Event(DtlsEvent::Connected { keys, .. }) => break 'handshake keys,
                estuary_srtp::Output::Event(e) => return fail(&format!("DTLS: {e:?}")),
            }
        }
        let timer = dtls.poll_timeout().map(tokio::time::Instant::from_std).unwrap_or(deadline).min(deadline);
        tokio::select! {
            r = sock.recv_from(&mut buf) => if let Ok((n, from)) = r {
                match classify(&buf[..n]) {
                    PacketKind::Dtls => { let _ = dtls.handle_input(Instant::now(), &buf[..n]); }
                    PacketKind::Stun => if let Some(r) = binding_response(&buf[..n], from, &local) {
                        let _ = sock.send_to(&r, from).await;
                    },
                    _ => {}
                }
            },
            () = tokio::time::sleep_until(timer) => {
                if tokio::time::Instant::now() >= deadline {
                    return fail("DTLS handshake timed out");
                }
                dtls.handle_timeout(Instant::now());
            }
        }
    };
    let mut tx = SrtpContext::new(keys.local(role));
    let mut rx = SrtpContext::new(keys.remote(role));
    totals.ready.fetch_add(1, Ordering::Relaxed);

    let (ssrc, mut seq, mut ts) = (Ssrc(rand::random()), SeqNo(rand::random()), rand::random::<u32>());
    let mut out: Vec<u8> = Vec::with_capacity(256);
    let mut tick = tokio::time::interval(PTIME);
    tick.set_missed_tick_behavior(MissedTickBehavior::Skip);
    let mut n = 0u32;
    // What the daemon sends back is in the browser's codec, at its packet time.
    let mut last_in: Option<(u16, u32)> = None;
    loop {
        tokio::select! {
            r = sock.recv_from(&mut buf) => if let Ok((len, from)) = r {
                match classify(&buf[..len]) {
                    PacketKind::Rtp => match rx.unprotect_rtp_in_place(&mut buf[..len]) {
                        Ok(n) => {
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
                    PacketKind::Stun => if let Some(r) = binding_response(&buf[..len], from, &local) {
                        let _ = sock.send_to(&r, from).await;
                    },
                    _ => {}
                }
            },
            _ = tick.tick() => {
                n += 1;
                if n.is_multiple_of(CONSENT_EVERY) {
                    if let Some(c) = binding_request(&a, &local, false) {
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
                    totals.web_tx.fetch_add(1, Ordering::Relaxed);
                }
                seq = seq.next();
                ts = ts.wrapping_add(media.ticks);
            }
            _ = stop.changed() => return,
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
/// answered call's port gets a media task.
async fn ims_core(sip: UdpSocket, loss: f64, totals: Arc<Totals>, mut stop: watch::Receiver<bool>) {
    let Ok(addr) = sip.local_addr() else { return };
    let mut peer = TestPeer::new(PeerConfig::new(addr), rand::random());
    let mut ports = Binder::default();
    let mut buf = vec![0u8; 65_535];
    loop {
        while let Some(o) = peer.poll_output() {
            match o {
                Output::Transmit { to, data } => {
                    let _ = sip.send_to(&data, to).await;
                }
                Output::MediaStart { port, .. } => {
                    if let Some(Ok(s)) = ports.bound.remove(&port).map(UdpSocket::from_std) {
                        tokio::spawn(ims_media(s, loss, totals.clone(), stop.clone()));
                    }
                }
                _ => {}
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
/// sends its own 20 ms PCMU there.
async fn ims_media(sock: UdpSocket, loss: f64, totals: Arc<Totals>, mut stop: watch::Receiver<bool>) {
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
            _ = stop.changed() => return,
        }
    }
}
