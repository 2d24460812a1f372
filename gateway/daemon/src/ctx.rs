//! What every task shares: the engine's inbox, counters, limits and the shutdown signal.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use estuary_b2bua::ConnId;
use tokio::sync::{mpsc, watch, Semaphore};

use crate::access::{ImsTrust, OriginPolicy, SourceLimits, TrustedProxies};
use crate::events::Event;
use crate::metrics::Stats;
use crate::ports::MediaPorts;
use crate::recorder::Recorder;
use crate::records::CallRecords;
use crate::transcode::Transcoder;

/// What an outbound TLS connection to the core needs.
pub struct ImsTlsClient {
    pub connector: tokio_rustls::TlsConnector,
    /// The next hop's address and the name its certificate must carry (`ims.next_hop`'s
    /// host); other destinations (a Via to answer) are checked by IP address.
    pub next_hop: SocketAddr,
    pub next_hop_name: String,
}

pub struct Ctx {
    /// The engine task's inbox. Bounded: a flood slows the readers instead of growing memory.
    pub events: mpsc::Sender<Event>,
    pub stats: Stats,
    /// Becomes `true` once on SIGINT/SIGTERM.
    pub shutdown: watch::Receiver<bool>,
    /// One permit per open WS/WSS connection (`limits.max_ws_connections`).
    pub web_slots: Arc<Semaphore>,
    /// One permit per open IMS TCP connection (`limits.max_tcp_connections`).
    pub tcp_slots: Arc<Semaphore>,
    pub max_message_size: usize,
    pub ws_ping_interval: Option<Duration>,
    /// `ims.domain`, reported to the demo page by `/demo/config.json`.
    pub ims_domain: String,
    /// The transcoder pool, unless `transcoder.enabled = false`.
    pub transcoder: Option<Arc<Transcoder>>,
    /// Per-call captures, unless `recording.mode = "off"`.
    /// Per-call captures (`[recording]`; idle while off, switched by SIGHUP).
    pub recorder: Arc<Recorder>,
    /// Per-call records (always logged; files with `records.dir`).
    pub records: CallRecords,
    /// Outbound SIP over TLS to the core, when `ims.tls_ca` is set.
    pub ims_tls: Option<ImsTlsClient>,
    /// Sources the IMS listeners accept (`ims.trusted_peers`, else the next hop's addresses:
    /// set once the next hop is resolved).
    pub ims_trust: ImsTrust,
    /// Pages that may open a WebSocket (`web.allowed_origins`).
    pub origins: OriginPolicy,
    /// Load balancers that may name the client (`web.trusted_proxies`).
    pub proxies: TrustedProxies,
    /// The cluster's shared state, when `cluster.enabled`.
    pub cluster: Option<crate::cluster::SharedState>,
    /// Per-source limits on the web side (`limits.*_per_ip`).
    pub sources: Arc<SourceLimits>,
    /// The media ports the daemon holds bound, granted to the engine and lent to calls.
    pub media_ports: Arc<MediaPorts>,
    /// Whether each listener's accept loop is running, for /healthz.
    listeners: Vec<(&'static str, AtomicBool)>,
    /// ESTUARY_TEST_HOOKS=1: the admin listener takes test-only requests (pausing the engine).
    pub test_hooks: bool,
    next_conn: AtomicU64,
    /// A drain was asked for (POST /drain); the main task waits on it beside the signals.
    drain_requested: tokio::sync::Notify,
    /// Draining: /healthz says so with 503.
    draining: AtomicBool,
}

impl Ctx {
    pub fn new(
        events: mpsc::Sender<Event>,
        shutdown: watch::Receiver<bool>,
        cfg: &estuary_config::Config,
        transcoder: Option<Arc<Transcoder>>,
        recorder: Arc<Recorder>,
        records: CallRecords,
    ) -> Self {
        Ctx {
            events,
            stats: Stats::new(),
            shutdown,
            web_slots: Arc::new(Semaphore::new(cfg.limits.max_ws_connections)),
            tcp_slots: Arc::new(Semaphore::new(cfg.limits.max_tcp_connections)),
            max_message_size: cfg.limits.max_message_size,
            ws_ping_interval: cfg.web.ws_ping_interval,
            ims_domain: cfg.ims.domain.clone(),
            transcoder,
            recorder,
            records,
            ims_tls: None,
            ims_trust: ImsTrust::new(&cfg.ims.trusted_peers, &[]),
            origins: OriginPolicy::new(&cfg.web.allowed_origins),
            proxies: TrustedProxies::new(&cfg.web.trusted_proxies),
            cluster: None,
            sources: SourceLimits::new(&cfg.limits),
            media_ports: Arc::new(MediaPorts::new(&cfg.media)),
            listeners: LISTENERS
                .iter()
                .filter(|l| **l != "ims.tls_listen" || cfg.ims.tls.listen.is_some())
                .map(|l| (*l, AtomicBool::new(false)))
                .collect(),
            test_hooks: std::env::var("ESTUARY_TEST_HOOKS").is_ok_and(|v| v == "1"),
            next_conn: AtomicU64::new(1),
            drain_requested: tokio::sync::Notify::new(),
            draining: AtomicBool::new(false),
        }
    }

    /// Asks the main task to drain (as SIGTERM does).
    pub fn request_drain(&self) {
        self.drain_requested.notify_one();
    }

    /// Resolves once a drain was asked for (a request made before the wait counts).
    pub async fn drain_requested(&self) {
        self.drain_requested.notified().await;
    }

    /// From now on /healthz answers 503 "draining".
    pub fn set_draining(&self) {
        self.draining.store(true, Ordering::Relaxed);
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }

    /// Marks listener `name` up until the returned guard drops. Taken before its accept loop
    /// is spawned and moved into it, so /healthz never sees a gap between `ready` and the
    /// loop's first poll, and sees the listener down once the loop ends or panics.
    pub fn serving(self: &Arc<Self>, name: &'static str) -> Serving {
        let idx = self.listeners.iter().position(|(n, _)| *n == name);
        if let Some(i) = idx {
            self.listeners[i].1.store(true, Ordering::Relaxed);
        }
        Serving { ctx: self.clone(), idx }
    }

    /// The first listener whose accept loop is not running.
    pub fn listener_down(&self) -> Option<&'static str> {
        self.listeners.iter().find(|(_, up)| !up.load(Ordering::Relaxed)).map(|(n, _)| *n)
    }

    /// A connection id never used before in this process (io.rs: ids are not reused).
    pub fn next_conn(&self) -> ConnId {
        ConnId(self.next_conn.fetch_add(1, Ordering::Relaxed))
    }

    /// Resolves when shutdown has been requested.
    pub async fn shutting_down(&self) {
        let mut rx = self.shutdown.clone();
        // An error means the sender is gone, which also means shutdown.
        let _ = rx.wait_for(|&stop| stop).await;
    }
}

/// The listeners /healthz watches, by their configuration keys.
const LISTENERS: &[&str] = &["web.ws_listen", "web.wss_listen", "ims.listen udp", "ims.listen tcp", "ims.tls_listen"];

/// A running accept loop; see [`Ctx::serving`].
pub struct Serving {
    ctx: Arc<Ctx>,
    idx: Option<usize>,
}

impl Drop for Serving {
    fn drop(&mut self) {
        if let Some(i) = self.idx {
            self.ctx.listeners[i].1.store(false, Ordering::Relaxed);
        }
    }
}
