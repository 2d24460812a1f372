//! Start-up and shutdown: bind every listener first (so a bad address fails before anything
//! runs), build the engine, spawn the tasks, wait for SIGINT/SIGTERM.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use estuary_b2bua::B2bua;
use estuary_config::Config;
use estuary_keys::KeySource;
use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::{mpsc, watch};
use tracing::{info, warn};

use crate::ctx::Ctx;
use crate::engine::Engine;
use crate::events::Event;
use crate::engine_config::{self, Bound};
use crate::error::DaemonError;
use crate::metrics::Metric;
use crate::{admin, icmp, ims, media, recorder, rlimit, tls, transcode, web};

/// Depth of the engine's inbox.
const EVENT_QUEUE: usize = 4096;
/// How long open connections get to say goodbye at shutdown.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(3);

pub async fn run(cfg: Config, source: crate::reload::Source, log_level: Option<crate::reload::LogLevel>) -> Result<(), DaemonError> {
    let ws = bind_tcp("web.ws_listen", cfg.web.ws_listen).await?;
    let wss = bind_tcp("web.wss_listen", cfg.web.wss_listen).await?;
    let (udp, ims_tcp) = bind_ims(cfg.ims.listen).await?;
    let admin_listener = bind_tcp("admin.listen", cfg.admin.listen).await?;
    let ims_tls_listener = match cfg.ims.tls.listen {
        Some(addr) => Some(bind_tcp("ims.tls_listen", addr).await?),
        None => None,
    };
    let bound = Bound {
        ws: local(&ws, "web.ws_listen")?,
        wss: local(&wss, "web.wss_listen")?,
        ims: local(&ims_tcp, "ims.listen")?,
        ims_tls: ims_tls_listener.as_ref().map(|l| local(l, "ims.tls_listen")).transpose()?,
        admin: local(&admin_listener, "admin.listen")?,
    };
    match rlimit::raise_nofile() {
        // Three sockets per call: below ~3000 descriptors an operator should know the ceiling.
        Ok(n) if n < 3000 => warn!(open_files = n, calls_at_most = n / 3, "low open-file limit"),
        Ok(n) => info!(open_files = n, "open-file limit"),
        Err(e) => warn!(error = %e, "cannot read or raise the open-file limit"),
    }
    let tls = tls::load(&cfg.web, bound.wss)?;
    let ims_tls = match bound.ims_tls {
        Some(addr) => Some(tls::load_ims(&cfg.ims, addr)?),
        None => None,
    };
    let next_hop = engine_config::resolve_next_hop(&cfg).await?;
    let dtls = tls::dtls_identity()?;
    info!(fingerprint = %dtls.fingerprint, "DTLS certificate generated");
    let transcoder = transcode::Transcoder::start(&cfg)?;
    let transcode_capacity = transcoder.as_ref().map(|t| t.capacity);
    let mut b2bua = B2bua::new(
        engine_config::b2bua_config(&cfg, &bound, next_hop.clone(), dtls.fingerprint.clone(), transcode_capacity),
        engine_seed(),
        KeySource::os(),
    );

    let (events_tx, events_rx) = mpsc::channel(EVENT_QUEUE);
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let recorder = recorder::Recorder::start(&cfg.recording)?;
    let tap = recorder.records_media();
    let records = crate::records::CallRecords::start(&cfg.records)?;
    let mut ctx = Ctx::new(events_tx, shutdown_rx, &cfg, transcoder, recorder, records);
    ctx.ims_tls = ims_tls.as_ref().and_then(|t| t.connector.clone()).map(|connector| crate::ctx::ImsTlsClient {
        connector,
        next_hop: next_hop.addr,
        next_hop_name: next_hop.host.clone(),
    });
    ctx.ims_trust = crate::access::ImsTrust::new(&cfg.ims.trusted_peers, &next_hop.resolved);
    if cfg.cluster.enabled {
        let sip = b2bua.config().ims_advertised;
        let shared = crate::cluster::SharedState::start(&cfg.cluster.redis, &cfg.cluster.node_id, sip, ctx.events.clone()).map_err(|e| DaemonError::setup("cluster.redis", e))?;
        info!(node_id = %cfg.cluster.node_id, redis = %cfg.cluster.redis, "cluster: registrations are shared in Redis");
        ctx.cluster = Some(shared);
    }
    let ctx = Arc::new(ctx);
    // The first media ports are bound before anything can announce one.
    let now = std::time::Instant::now();
    let media_threads = media::thread_count(cfg.media.threads);
    // Shared mode: one browser-facing port per media thread, bound now and never released.
    let shared_web = match cfg.media.web_port_mode {
        estuary_config::WebPortMode::PerCall => Vec::new(),
        estuary_config::WebPortMode::Shared => {
            let (ports, err) = ctx.media_ports.bind(media_threads, now);
            if let Some(e) = err {
                return Err(DaemonError::setup(e.key, e.to_string()));
            }
            if ports.len() < media_threads {
                return Err(DaemonError::setup("media.port_min", format!("cannot bind {media_threads} shared browser-facing ports in {}..{}", cfg.media.ports.min, cfg.media.ports.max)));
            }
            b2bua.share_web_ports(ports.clone());
            ports
        }
    };
    let (ports, err) = ctx.media_ports.bind(b2bua.ports_wanted(now), now);
    if let Some(e) = err {
        return Err(DaemonError::setup(e.key, e.to_string()));
    }
    if ports.is_empty() {
        return Err(DaemonError::setup(
            "media.port_min",
            format!("no media port in {}..{} can be bound (all held by other processes)", cfg.media.ports.min, cfg.media.ports.max),
        ));
    }
    b2bua.grant_ports(ports);
    // The engine sends on a dup of the socket the receive task reads (see Engine::udp).
    let udp_std = udp
        .into_std()
        .map_err(|e| DaemonError::setup("ims.listen", e.to_string()))?;
    if let Err(e) = icmp::enable(&udp_std) {
        // Not fatal: without it an unreachable next hop is found by Timer B (408), not 503.
        warn!(error = %e, "cannot enable ICMP error reports on the IMS UDP socket");
    }
    let udp_send = udp_std
        .try_clone()
        .map_err(|e| DaemonError::setup("ims.listen", e.to_string()))?;
    let udp = Arc::new(
        UdpSocket::from_std(udp_std)
            .map_err(|e| DaemonError::setup("ims.listen", e.to_string()))?,
    );

    let media = media::MediaHub::start(
        media_threads,
        &shared_web,
        dtls.cert,
        // The wall clock is read once here: the engines derive SR wall-clock time from `now`.
        engine_config::media_config(
            &cfg,
            Some(estuary_rtp::WallClock::new(std::time::Instant::now(), std::time::SystemTime::now())),
            tap,
        ),
        ctx.clone(),
    )?;
    let now = std::time::Instant::now();
    let mut core = estuary_core::Core::new(b2bua, media, now);
    if let Some(policy) = crate::diameter::policy(&cfg.rx, now, cfg.media.ims_address, cfg.media.web_address) {
        core = core.with_policy(policy);
    }
    let links = match cfg.rx.enabled {
        true => crate::diameter::DiameterLinks::new(ctx.clone(), &cfg.rx.peers, Some(crate::diameter::PeerMaker::new(&cfg.rx, cfg.media.ims_address))),
        false => crate::diameter::DiameterLinks::new(ctx.clone(), &[], None),
    };
    let engine = tokio::spawn(Engine::new(core, ctx.clone(), udp_send, links).run(events_rx));
    tokio::spawn(web::accept_loop(ws, None, ctx.clone(), ctx.serving("web.ws_listen")));
    tokio::spawn(web::accept_loop(wss, Some(tls.acceptor), ctx.clone(), ctx.serving("web.wss_listen")));
    tokio::spawn(ims::udp_loop(udp, ctx.clone(), ctx.serving("ims.listen udp")));
    tokio::spawn(ims::tcp_accept_loop(ims_tcp, ctx.clone(), ctx.serving("ims.listen tcp")));
    if let (Some(listener), Some(t)) = (ims_tls_listener, &ims_tls) {
        tokio::spawn(ims::tls_accept_loop(listener, t.acceptor.clone(), ctx.clone(), ctx.serving("ims.tls_listen")));
    }
    admin::spawn_thread(admin_listener, ctx.clone())?;
    let sweeper = ctx.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(crate::access::SWEEP_EVERY);
        loop {
            tokio::select! {
                () = sweeper.shutting_down() => return,
                _ = tick.tick() => sweeper.sources.sweep(std::time::Instant::now()),
            }
        }
    });

    info!(summary = %cfg.summary(), "estuary started");
    let trusted: Vec<String> = ctx.ims_trust.blocks().iter().map(ToString::to_string).collect();
    info!(trusted_peers = %trusted.join(", "), "SIP accepted on the IMS listeners only from these sources");
    if cfg.web.allowed_origins.is_empty() {
        for (key, addr) in [("web.ws_listen", bound.ws), ("web.wss_listen", bound.wss)] {
            if !addr.ip().is_loopback() {
                warn!(listener = key, %addr, "web.allowed_origins is empty: pages from any site may open WebSockets here; list your web application's origins");
            }
        }
    }
    if tls.self_signed {
        info!(sha256 = %tls.fingerprint, "WSS uses a generated self-signed certificate");
    }
    // A domain next hop is looked up again every probe interval: SRV records may change.
    if let (estuary_config::NextHop::Uri { host, lookup, .. }, Some(every)) = (&cfg.ims.next_hop, cfg.ims.next_hop_probe) {
        if *lookup != estuary_config::NextHopLookup::Address {
            let (ctx, host, started) = (ctx.clone(), host.clone(), cfg.clone());
            let mut known = next_hop.clone();
            tokio::spawn(async move {
                loop {
                    tokio::select! {
                        () = ctx.shutting_down() => return,
                        () = tokio::time::sleep(every) => {}
                    }
                    match engine_config::resolve_next_hop(&started).await {
                        Ok(hop) if hop.transport == known.transport && hop.targets != known.targets => {
                            info!(next_hop = %host, targets = ?hop.targets, "next-hop targets changed in DNS");
                            ctx.ims_trust.set(&started.ims.trusted_peers, &hop.resolved);
                            let _ = ctx.events.send(Event::NextHops(hop.targets.clone())).await;
                            known = hop;
                        }
                        Ok(_) => {}
                        Err(e) => warn!(next_hop = %host, error = %e, "next-hop lookup failed; keeping the targets known"),
                    }
                }
            });
        }
    }
    // SIGHUP re-reads the configuration. The handler is in place before "ready": a SIGHUP
    // without one would end the process.
    let reloader = Arc::new(tokio::sync::Mutex::new(crate::reload::Reloader {
        source,
        current: cfg.clone(),
        bound,
        next_hop: next_hop.clone(),
        fingerprint: dtls.fingerprint.clone(),
        transcode_capacity,
        log_level,
        ctx: ctx.clone(),
    }));
    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
        Ok(mut hup) => {
            let reloader = reloader.clone();
            tokio::spawn(async move {
                while hup.recv().await.is_some() {
                    info!("SIGHUP: reloading the configuration");
                    reloader.lock().await.reload().await;
                }
            });
        }
        Err(e) => warn!(error = %e, "no SIGHUP handler: the configuration cannot be reloaded"),
    }
    if let Some(t) = ims_tls.as_ref().filter(|t| t.self_signed) {
        info!(sha256 = %t.fingerprint, "SIP over TLS toward IMS uses a generated self-signed certificate");
    }
    // The machine-readable start report (tests and scripts read it; ports may have been 0).
    println!("listening web.ws_listen {}", bound.ws);
    println!("listening web.wss_listen {}", bound.wss);
    println!("listening ims.listen {}", bound.ims);
    if let Some(addr) = bound.ims_tls {
        println!("listening ims.tls_listen {addr}");
    }
    println!("listening admin.listen {}", bound.admin);
    println!("certificate sha256 {}", tls.fingerprint);
    println!("ready");

    if wait_for_stop(&ctx).await == Stop::Drain {
        let limit = reloader.lock().await.drain_timeout();
        drain(&ctx, limit).await;
    }
    info!("shutting down");
    end_calls(&ctx).await;
    // Out of the cluster before the browsers' connections close: they reconnect to other
    // nodes, which must not take this one for alive, and must find its last writes.
    if let Some(cluster) = &ctx.cluster {
        cluster.leave().await;
    }
    let _ = shutdown_tx.send(true);
    // Connection tasks send their close frames; wait for them to finish, within reason.
    let drained = tokio::time::timeout(DRAIN_TIMEOUT, async {
        while ctx.stats.get(Metric::WsConnections) + ctx.stats.get(Metric::TcpConnections) > 0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    if drained.is_err() {
        warn!("some connections did not close in time");
    }
    let _ = tokio::time::timeout(DRAIN_TIMEOUT, engine).await;
    info!("stopped");
    Ok(())
}

async fn bind_tcp(key: &'static str, addr: SocketAddr) -> Result<TcpListener, DaemonError> {
    TcpListener::bind(addr)
        .await
        .map_err(|e| DaemonError::bind(key, addr, &e))
}

/// UDP and TCP on the same address. With port 0 the kernel picks the UDP port and TCP must
/// follow it; that port may be taken for TCP, so retry a few times.
async fn bind_ims(addr: SocketAddr) -> Result<(UdpSocket, TcpListener), DaemonError> {
    const KEY: &str = "ims.listen";
    let attempts = if addr.port() == 0 { 10 } else { 1 };
    let mut last = None;
    for _ in 0..attempts {
        let udp = UdpSocket::bind(addr)
            .await
            .map_err(|e| DaemonError::bind(KEY, addr, &e))?;
        let udp_addr = udp
            .local_addr()
            .map_err(|e| DaemonError::bind(KEY, addr, &e))?;
        match TcpListener::bind(udp_addr).await {
            Ok(tcp) => return Ok((udp, tcp)),
            Err(e) => last = Some(DaemonError::bind(KEY, udp_addr, &e)),
        }
    }
    // Invariant: attempts >= 1 and every failed attempt set `last`.
    Err(last.unwrap_or_else(|| DaemonError::setup(KEY, "cannot bind")))
}

fn local(listener: &TcpListener, key: &'static str) -> Result<SocketAddr, DaemonError> {
    listener
        .local_addr()
        .map_err(|e| DaemonError::setup(key, e.to_string()))
}

/// Ends the calls left with BYE on both legs, and gives the engine a moment to send them
/// before the sockets close.
async fn end_calls(ctx: &Ctx) {
    if active_calls(ctx).await == 0 {
        return;
    }
    let _ = ctx.events.send(Event::EndCalls).await;
    let _ = tokio::time::timeout(Duration::from_secs(2), async {
        while active_calls(ctx).await > 0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
}

/// Calls the engine holds (0 when it does not answer).
async fn active_calls(ctx: &Ctx) -> u64 {
    let samples = crate::admin::engine_samples(ctx, Duration::from_secs(2)).await.unwrap_or_default();
    samples.iter().find(|s| s.name == "estuary_calls_active" && s.labels.is_empty()).map_or(0, |s| s.value)
}

/// How the process was asked to stop.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stop {
    /// SIGINT: at once.
    Now,
    /// SIGTERM or `estuary drain` (POST /drain): after the calls in progress.
    Drain,
}

async fn wait_for_stop(ctx: &Ctx) -> Stop {
    use tokio::signal::unix::{signal, SignalKind};
    match (signal(SignalKind::interrupt()), signal(SignalKind::terminate())) {
        (Ok(mut int), Ok(mut term)) => {
            tokio::select! {
                _ = int.recv() => Stop::Now,
                _ = term.recv() => Stop::Drain,
                () = ctx.drain_requested() => Stop::Drain,
            }
        }
        // Without signal handlers only ctrl-c can stop us; keep that much.
        _ => {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => Stop::Now,
                () = ctx.drain_requested() => Stop::Drain,
            }
        }
    }
}

/// Drains: the engine refuses new calls and probes, /healthz says "draining", and the calls
/// in progress go on until none is left, `limit` passes, or SIGINT comes. When `limit`
/// passes in a cluster with another node up, the answered calls are handed over to it (their
/// browsers reconnect there as the connections here close); what remains is ended by the
/// shutdown that follows.
async fn drain(ctx: &Ctx, limit: Duration) {
    ctx.set_draining();
    let _ = ctx.events.send(Event::Drain).await;
    info!(timeout_s = limit.as_secs(), "draining: waiting for the calls in progress to end");
    let interrupt = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt()) {
            Ok(mut int) => {
                int.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    let settled = async {
        loop {
            if active_calls(ctx).await == 0 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    };
    tokio::select! {
        () = settled => info!("drained: no call left"),
        () = tokio::time::sleep(limit) => {
            let left = active_calls(ctx).await;
            match &ctx.cluster {
                Some(cluster) if left > 0 && cluster.others_alive().await => {
                    warn!(left, "drain timeout: handing the answered calls over to the cluster");
                    let _ = ctx.events.send(Event::HandOver).await;
                }
                _ => warn!(left, "drain timeout: ending the calls left"),
            }
        }
        () = interrupt => warn!("SIGINT while draining: stopping now"),
    }
}

/// The signalling engine's seed: random, unless ESTUARY_ENGINE_SEED fixes it so that a
/// recorded session can be replayed (`estuary replay --seed`): the engine draws tags,
/// branches, Call-IDs, tokens and SDP origin ids from it. Keys and ICE credentials never
/// depend on it (they come from `KeySource`); replay matches those by consistency.
fn engine_seed() -> u64 {
    match std::env::var("ESTUARY_ENGINE_SEED").ok().and_then(|v| v.trim().parse().ok()) {
        Some(seed) => {
            warn!(seed, "ESTUARY_ENGINE_SEED fixes the engine's random identifiers: for recording test sessions only");
            seed
        }
        None => rand::random(),
    }
}
