//! The media driver: one task per call owns the call's UDP sockets (the web-side BUNDLE port,
//! one RTP and one RTCP port per IMS stream) and its [`MediaSession`], and relays packets in a
//! buffer it reuses. The engine hands it plans ([`MediaHub::plan`]) and ends
//! ([`MediaHub::end`]); a session that gives up (DTLS failure, lost consent, silence) is
//! reported back as [`Event::MediaFailed`], and the engine ends the call with BYE.
//!
//! Calls share nothing on the packet path: no lock, no allocation per packet (the task waits
//! on all its sockets with `poll_recv_ready` and reads with `try_recv_from`).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::task::Poll;
use std::time::Instant;

use estuary_b2bua::ReleaseCause;
use estuary_media::{FailCause, Forward, MediaConfig, MediaEvent, MediaSession, Output, Transcoded};
use estuary_sdp::MediaPlan;
use estuary_srtp::Certificate;
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

use crate::ctx::Ctx;
use crate::engine::Event;
use crate::metrics::MediaFailure;
use crate::ports::MediaPorts;
use crate::recorder::Lane;
use crate::transcode::CallTranscoding;

/// Plan updates queued per call before the engine's sends start failing (re-offers are rare).
const PLAN_QUEUE: usize = 8;
/// How often a call adds its media counters to the shared /metrics totals.
const METRICS_FLUSH: std::time::Duration = std::time::Duration::from_secs(1);

pub struct MediaHub {
    calls: HashMap<u64, mpsc::Sender<Box<MediaPlan>>>,
    cert: Arc<Certificate>,
    cfg: MediaConfig,
    ctx: Arc<Ctx>,
}

impl MediaHub {
    pub fn new(cert: Certificate, cfg: MediaConfig, ctx: Arc<Ctx>) -> MediaHub {
        MediaHub { calls: HashMap::new(), cert: Arc::new(cert), cfg, ctx }
    }

    /// A call's plan was settled or renegotiated.
    pub fn plan(&mut self, call: u64, plan: Box<MediaPlan>) {
        if let Some(tx) = self.calls.get(&call) {
            if tx.try_send(plan).is_err() {
                warn!(call, "media task not taking plan updates");
            }
            return;
        }
        let (tx, rx) = mpsc::channel(PLAN_QUEUE);
        self.calls.insert(call, tx);
        tokio::spawn(run_call(call, plan, rx, self.cert.clone(), self.cfg.clone(), self.ctx.clone()));
    }

    /// The call ended: dropping its sender ends the task and closes its sockets.
    pub fn end(&mut self, call: u64) {
        self.calls.remove(&call);
    }
}

async fn run_call(
    call: u64,
    first: Box<MediaPlan>,
    mut plans: mpsc::Receiver<Box<MediaPlan>>,
    cert: Arc<Certificate>,
    cfg: MediaConfig,
    ctx: Arc<Ctx>,
) {
    let fail = |failure: MediaFailure, reason: String| {
        let ctx = ctx.clone();
        ctx.stats.media_failed(failure);
        let cause = match failure {
            MediaFailure::Inactivity => ReleaseCause::RtpTimeout,
            _ => ReleaseCause::MediaBearerLoss,
        };
        async move {
            let _ = ctx.events.send(Event::MediaFailed { call, reason, cause }).await;
        }
    };
    let mut session = match MediaSession::new(cfg, &first, &cert, Instant::now(), rand::random()) {
        Ok(s) => s,
        Err(e) => return fail(MediaFailure::Local, format!("media session: {e}")).await,
    };
    let mut socks = Lent { ports: ctx.media_ports.clone(), socks: Vec::new() };
    let addrs = session.local_addresses();
    if let Err(e) = socks.take_missing(addrs) {
        return fail(MediaFailure::Local, e).await;
    }
    info!(call, sockets = socks.len(), "media started");
    let mut buf = Vec::with_capacity(estuary_media::MIN_BUFFER);
    // Transcoded frames are written here (buf may hold a packet being read).
    let mut out = Vec::with_capacity(estuary_media::MIN_BUFFER);
    let mut plan = first;
    let mut transcoding = ctx.transcoder.clone().map(|t| CallTranscoding::new(t, call));
    let mut flushed = estuary_media::MediaCounters::default();
    let mut next_flush = Instant::now() + METRICS_FLUSH;
    let timer = tokio::time::sleep_until(tokio::time::Instant::from_std(next_flush));
    tokio::pin!(timer);
    loop {
        if Instant::now() >= next_flush {
            ctx.stats.media_flush(session.counters(), &flushed);
            flushed = session.counters().clone();
            next_flush = Instant::now() + METRICS_FLUSH;
        }
        while let Some(o) = session.poll_output() {
            match o {
                Output::Transmit { from, to, data } => send(&socks, from, to, &data),
                Output::Event(MediaEvent::Failed { cause, reason }) => {
                    let failure = match cause {
                        FailCause::Inactivity => MediaFailure::Inactivity,
                        FailCause::Ice => MediaFailure::Ice,
                        FailCause::Dtls => MediaFailure::Dtls,
                        FailCause::DtlsClosed => MediaFailure::DtlsClosed,
                    };
                    ctx.stats.media_flush(session.counters(), &flushed);
                    ctx.records.media(call, session.report());
                    return fail(failure, reason).await;
                }
                Output::Event(ev) => debug!(call, ?ev, "media"),
                Output::Tap { leg, from, to, data } => {
                    if let Some(r) = &ctx.recorder {
                        let lane = if leg == estuary_media::Leg::Web { Lane::WebMedia } else { Lane::ImsMedia };
                        r.media(call, lane, from, to, data);
                    }
                }
            }
        }
        // One timer per call, re-armed only when the deadline moves: a fresh Sleep per loop
        // would be a timer-wheel insert and removal for every packet.
        let deadline = tokio::time::Instant::from_std(session.poll_timeout().map_or(next_flush, |t| t.min(next_flush)));
        if timer.deadline() != deadline {
            timer.as_mut().reset(deadline);
        }
        tokio::select! {
            update = plans.recv() => match update {
                Some(new_plan) => {
                    if let Some(t) = transcoding.as_mut() {
                        t.plan_changed(&plan, &new_plan);
                    }
                    plan = new_plan;
                    if let Err(e) = session.update_plan(&plan, Instant::now()) {
                        ctx.stats.media_flush(session.counters(), &flushed);
                        ctx.records.media(call, session.report());
                        return fail(MediaFailure::Local, format!("media plan: {e}")).await;
                    }
                    let addrs = session.local_addresses();
                    if let Err(e) = socks.take_missing(addrs) {
                        return fail(MediaFailure::Local, e).await;
                    }
                }
                None => {
                    // RTCP BYE on both legs, then the sockets close with the task.
                    session.close(Instant::now());
                    while let Some(o) = session.poll_output() {
                        if let Output::Transmit { from, to, data } = o {
                            send(&socks, from, to, &data);
                        }
                    }
                    ctx.stats.media_flush(session.counters(), &flushed);
                    ctx.records.media(call, session.report());
                    info!(
                        call,
                        counters = ?session.counters(),
                        "media ended"
                    );
                    return;
                }
            },
            i = ready_any(&socks) => {
                // Read what is queued on that socket, each datagram through the session.
                loop {
                    buf.resize(estuary_media::MIN_BUFFER, 0);
                    let (local, sock) = &socks[i];
                    match sock.try_recv_from(&mut buf) {
                        Ok((n, source)) => {
                            buf.truncate(n);
                            match session.handle_datagram(Instant::now(), *local, source, &mut buf) {
                                Forward::Send { from, to } => send(&socks, from, to, &buf),
                                Forward::Transcode { stream, to } => {
                                    if let Some(t) = transcoding.as_mut() {
                                        t.push(&plan, stream, to, &buf);
                                    }
                                }
                                Forward::Consumed => {}
                            }
                        }
                        Err(_) => break,
                    }
                }
            }
            Some(f) = next_frame(&mut transcoding) => {
                let frame = Transcoded { stream: f.stream, to: f.to, payload: f.payload(), timestamp: f.timestamp, marker: f.marker };
                if let Forward::Send { from, to } = session.send_transcoded(Instant::now(), frame, &mut out) {
                    send(&socks, from, to, &out);
                }
            }
            () = &mut timer => session.handle_timeout(Instant::now()),
        }
    }
}

/// The next transcoded frame of the call; never, for a call without transcoding.
async fn next_frame(t: &mut Option<CallTranscoding>) -> Option<crate::transcode::TcFrame> {
    match t {
        Some(t) => t.recv().await,
        None => std::future::pending().await,
    }
}

/// The index of a socket with a datagram waiting.
async fn ready_any(socks: &[(SocketAddr, UdpSocket)]) -> usize {
    std::future::poll_fn(|cx| {
        for (i, (_, s)) in socks.iter().enumerate() {
            if let Poll::Ready(r) = s.poll_recv_ready(cx) {
                if r.is_ok() {
                    return Poll::Ready(i);
                }
            }
        }
        Poll::Pending
    })
    .await
}

fn send(socks: &[(SocketAddr, UdpSocket)], from: SocketAddr, to: SocketAddr, data: &[u8]) {
    match socks.iter().find(|(a, _)| *a == from) {
        // UDP: a full socket buffer drops the packet, as the network would.
        Some((_, s)) => {
            let _ = s.try_send_to(data, to);
        }
        None => debug!(%from, "no socket for a media output"),
    }
}

/// A call's sockets, lent by the daemon's [`MediaPorts`] and given back when the call's task
/// ends, however it ends (a panic included).
struct Lent {
    ports: Arc<MediaPorts>,
    socks: Vec<(SocketAddr, UdpSocket)>,
}

impl Lent {
    /// Takes the socket of every local address of the session that has none yet. Each was
    /// bound before the engine could announce it (bind before announce); one that is not
    /// there is a bug, and fails the call rather than binding after the fact.
    fn take_missing(&mut self, addrs: Vec<SocketAddr>) -> Result<(), String> {
        for addr in addrs {
            if addr.port() == 0 || self.socks.iter().any(|(a, _)| *a == addr) {
                continue;
            }
            let std = self.ports.take(addr).ok_or_else(|| format!("media port {addr} was announced but is not bound"))?;
            match UdpSocket::from_std(std) {
                Ok(s) => self.socks.push((addr, s)),
                Err(e) => return Err(format!("media port {addr}: {e}")),
            }
        }
        Ok(())
    }
}

impl std::ops::Deref for Lent {
    type Target = [(SocketAddr, UdpSocket)];
    fn deref(&self) -> &Self::Target {
        &self.socks
    }
}

impl Drop for Lent {
    fn drop(&mut self) {
        for (addr, sock) in self.socks.drain(..) {
            // Leaves the runtime's reactor; the socket stays bound for the next call.
            match sock.into_std() {
                Ok(std) => self.ports.put_back(addr, std),
                Err(e) => warn!(%addr, error = %e, "media socket not returned to the pool"),
            }
        }
    }
}
