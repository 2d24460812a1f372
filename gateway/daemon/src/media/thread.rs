//! One media thread: a mio poller over the sockets of the calls it owns, one
//! [`MediaShard`] holding their sessions and their timers, and the thread's queue of
//! transcoded frames.
//!
//! A wake-up is a readable socket (each is read with `recvmmsg` until empty, at most
//! [`BURST`] datagrams at a time so one flooded socket cannot starve the others), the wake-up of a command or a
//! transcoded frame, or the shard's earliest deadline. An idle call costs nothing between the
//! deadlines its protocols set; the metrics flush runs only after packets moved.
//!
//! A panic while a call's session handles an input (a bug) is caught here: the shard drops
//! that call, the engine is told to end it, and the thread goes on with the others.

use std::collections::{HashMap, VecDeque};
use std::io::ErrorKind;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, RawFd};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, Sender, TryRecvError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use estuary_b2bua::ReleaseCause;
use estuary_media::shard::{MediaShard, ShardCounters};
use estuary_media::{FailCause, Forward, Leg, MediaConfig, MediaCounters, MediaEvent, MediaSession, Output, Transcoded};
use estuary_sdp::MediaPlan;
use estuary_srtp::Certificate;
use mio::net::UdpSocket;
use mio::{Events, Interest, Poll, Token, Waker};
use tracing::{debug, error, info, warn};

use crate::ctx::Ctx;
use crate::events::Event;
use crate::metrics::{MediaFailure, Metric};
use crate::recorder::Lane;
use crate::transcode::{CallTranscoding, FrameQueue, FromWorker};

use super::batch::{Batch, BATCH};

/// Datagrams read from one socket before the others get their turn.
const BURST: usize = 32;
/// Datagrams asked for per read on a call's own socket: one waits at 50 pps, a few after a
/// scheduling delay.
const CALL_BATCH: usize = 4;
/// Readiness events taken per poll.
const EVENTS: usize = 256;
/// Transcoded frames queued toward the thread (all its calls); a full queue drops frames.
/// Room for a few video keyframes (tens of packets each) beside the audio frames.
const FRAME_QUEUE: usize = 1024;
/// How often the thread adds its calls' counters to /metrics, while packets move.
const METRICS_FLUSH: Duration = Duration::from_secs(1);
/// How soon a failure report that found the engine's inbox full is offered again.
const EVENT_RETRY: Duration = Duration::from_millis(10);
const WAKE: Token = Token(0);

pub enum Command {
    Plan { call: u64, plan: Box<MediaPlan> },
    End { call: u64 },
    /// The call's leg asked in SIP for a keyframe (RFC 5168).
    PictureFastUpdate { call: u64, from: Leg },
    Stop,
}

/// Wakes a media thread, once per batch: senders that find a wake-up pending do not issue
/// another (a transcoded frame every few ms per call would otherwise be a syscall each).
pub struct Wakeup {
    waker: Waker,
    pending: AtomicBool,
}

impl Wakeup {
    pub fn wake(&self) {
        if !self.pending.swap(true, Ordering::SeqCst) {
            if let Err(e) = self.waker.wake() {
                error!(error = %e, "cannot wake a media thread");
            }
        }
    }

    /// Called by the thread before it drains its queues: what arrives later wakes it again.
    fn rearm(&self) {
        self.pending.store(false, Ordering::SeqCst);
    }
}

pub struct ThreadHandle {
    commands: Sender<Command>,
    wakeup: Arc<Wakeup>,
    /// The thread's CPU-time clock, to judge its load; `None` for a thread never spawned
    /// (tests) or whose clock could not be had.
    pub cpu_clock: Option<libc::clockid_t>,
}

impl ThreadHandle {
    /// Whether the command reached the thread: a closed queue means the thread is gone (its
    /// exit was logged, and its calls failed).
    pub fn send(&self, c: Command) -> bool {
        let sent = self.commands.send(c).is_ok();
        if sent {
            self.wakeup.wake();
        }
        sent
    }
}

/// Starts media thread `index`; `shared_web` is its shared browser-facing address (bound in
/// the daemon's [`crate::ports::MediaPorts`], taken here for good), in shared mode.
pub fn spawn(index: usize, shared_web: Option<SocketAddr>, cert: Arc<Certificate>, cfg: MediaConfig, ctx: Arc<Ctx>) -> std::io::Result<ThreadHandle> {
    let (t, mut handle) = MediaThread::new(index, shared_web, cert, cfg, ctx)?;
    let join = std::thread::Builder::new().name(format!("media-{index}")).spawn(move || t.run())?;
    handle.cpu_clock = cpu_clock(std::os::unix::thread::JoinHandleExt::as_pthread_t(&join));
    Ok(handle)
}

/// The CPU-time clock of a running thread.
fn cpu_clock(thread: libc::pthread_t) -> Option<libc::clockid_t> {
    let mut clock: libc::clockid_t = 0;
    // SAFETY: `thread` is a live thread (its JoinHandle is held by the caller) and `clock` a
    // valid out-pointer.
    (unsafe { libc::pthread_getcpuclockid(thread, &mut clock) } == 0).then_some(clock)
}

/// CPU time consumed so far on `clock`; `None` once the thread is gone.
pub fn cpu_time(clock: libc::clockid_t) -> Option<Duration> {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: a valid out-pointer; an invalid clock is reported as an error, not UB.
    (unsafe { libc::clock_gettime(clock, &mut ts) } == 0).then(|| Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32))
}

impl MediaThread {
    /// The thread's state, not yet running (the tests drive it turn by turn).
    fn new(index: usize, shared_web: Option<SocketAddr>, cert: Arc<Certificate>, cfg: MediaConfig, ctx: Arc<Ctx>) -> std::io::Result<(MediaThread, ThreadHandle)> {
        let poll = Poll::new()?;
        let wakeup = Arc::new(Wakeup { waker: Waker::new(poll.registry(), WAKE)?, pending: AtomicBool::new(false) });
        let (commands, commands_rx) = mpsc::channel();
        let (frames_tx, frames) = mpsc::sync_channel(FRAME_QUEUE);
        let mut shard = MediaShard::new(Instant::now(), shared_web);
        shard.inject_faults(ctx.test_hooks);
        let mut io = Sockets { socks: Vec::new(), by_addr: HashMap::new(), shared: None, inbound: Batch::new() };
        if let Some(addr) = shared_web {
            let std = ctx.media_ports.take(addr).ok_or_else(|| std::io::Error::other(format!("shared media port {addr} is not bound")))?;
            let mut sock = UdpSocket::from_std(std);
            poll.registry().register(&mut sock, Token(SHARED_SLOT + 1), Interest::READABLE)?;
            io.shared = Some(Shared { fd: sock.as_raw_fd(), out: Batch::new() });
            io.socks.push(Some(Sock { addr, sock }));
            io.by_addr.insert(addr, SHARED_SLOT);
        }
        let t = MediaThread {
            index,
            poll,
            shard,
            io,
            free: Vec::new(),
            reported: ShardCounters::default(),
            calls: HashMap::new(),
            ended: Vec::new(),
            commands: commands_rx,
            frames,
            frame_queue: FrameQueue::new(frames_tx, wakeup.clone()),
            wakeup: wakeup.clone(),
            cert,
            cfg,
            ctx,
            buf: Vec::with_capacity(estuary_media::MIN_BUFFER),
            out: Vec::with_capacity(estuary_media::MIN_BUFFER),
            again: Vec::new(),
            again_next: Vec::new(),
            unsent: VecDeque::new(),
            flush_at: None,
        };
        Ok((t, ThreadHandle { commands, wakeup, cpu_clock: None }))
    }
}

struct Sock {
    addr: SocketAddr,
    sock: UdpSocket,
}

/// The slot of the shared browser-facing socket, in shared mode: the first one bound.
const SHARED_SLOT: usize = 0;

/// The thread's sockets by slot (slot `i` is token `i + 1`).
struct Sockets {
    socks: Vec<Option<Sock>>,
    by_addr: HashMap<SocketAddr, usize>,
    /// The shared browser-facing socket's batched sending, in shared mode.
    shared: Option<Shared>,
    /// What the last `recvmmsg` on any socket took.
    inbound: Box<Batch>,
}

/// The shared socket's descriptor and its batched I/O.
struct Shared {
    fd: RawFd,
    /// What leaves from it during this wake-up (one `sendmmsg`).
    out: Box<Batch>,
}

impl Sockets {
    fn send(&mut self, from: SocketAddr, to: SocketAddr, data: &[u8]) {
        let Some(&slot) = self.by_addr.get(&from) else {
            return debug!(%from, "no socket for a media output");
        };
        if let Some(sh) = self.shared.as_mut().filter(|_| slot == SHARED_SLOT) {
            if !sh.out.queue(to, data) {
                sh.out.flush(sh.fd);
                sh.out.queue(to, data);
            }
            return;
        }
        if let Some(s) = &self.socks[slot] {
            // UDP: a full socket buffer drops the packet, as the network would.
            let _ = s.sock.send_to(data, to);
        }
    }

    /// Sends what the shared socket queued.
    fn flush(&mut self) {
        if let Some(sh) = self.shared.as_mut().filter(|sh| sh.out.len() > 0) {
            sh.out.flush(sh.fd);
        }
    }
}

/// What the thread keeps of a call beside its session.
struct CallIo {
    /// Its sockets' slots.
    slots: Vec<usize>,
    plan: Box<MediaPlan>,
    transcoding: Option<CallTranscoding>,
    /// Its counters as last added to /metrics.
    flushed: MediaCounters,
}

struct MediaThread {
    index: usize,
    poll: Poll,
    shard: MediaShard,
    /// The shard's counters as last added to /metrics.
    reported: ShardCounters,
    io: Sockets,
    /// Free socket slots.
    free: Vec<usize>,
    calls: HashMap<u64, CallIo>,
    /// Calls ended this round, whose sockets go back once their last packets are sent.
    ended: Vec<u64>,
    commands: Receiver<Command>,
    frames: Receiver<FromWorker>,
    frame_queue: FrameQueue,
    wakeup: Arc<Wakeup>,
    cert: Arc<Certificate>,
    cfg: MediaConfig,
    ctx: Arc<Ctx>,
    /// The datagram being handled (relayed in place).
    buf: Vec<u8>,
    /// A transcoded frame being sent.
    out: Vec<u8>,
    /// Slots whose socket may hold more datagrams than one burst took (edge-triggered).
    again: Vec<usize>,
    again_next: Vec<usize>,
    /// Failure reports the engine's inbox had no room for.
    unsent: VecDeque<Event>,
    /// When counters go to /metrics next; `None` while nothing moved since the last flush.
    flush_at: Option<Instant>,
}

impl MediaThread {
    fn run(mut self) {
        let mut events = Events::with_capacity(EVENTS);
        loop {
            match self.turn(&mut events, None) {
                Ok(true) => {}
                Ok(false) => return info!(thread = self.index, "media thread stopped"),
                Err(e) => {
                    error!(thread = self.index, error = %e, "media thread cannot poll; its calls end");
                    return self.abandon(&format!("media thread {} stopped: {e}", self.index));
                }
            }
        }
    }

    /// The thread cannot go on: every call it owns ends (the engine sends BYE on both legs),
    /// its sockets go back to the pool, and the failures reach the engine before the thread
    /// leaves, waiting for room in the engine's queue if need be.
    fn abandon(&mut self, reason: &str) {
        let calls: Vec<u64> = self.calls.keys().copied().collect();
        for call in calls {
            self.end(call);
            self.fail(call, MediaFailure::Internal, reason.to_owned());
        }
        self.release_ended();
        while let Some(ev) = self.unsent.pop_front() {
            // A plain thread, not a runtime's: blocking here is allowed.
            if self.ctx.events.blocking_send(ev).is_err() {
                break;
            }
        }
    }

    /// One wake-up: waits for readiness or the next deadline (at most `cap`), then handles
    /// what is due. False once the engine said Stop (or is gone).
    fn turn(&mut self, events: &mut Events, cap: Option<Duration>) -> std::io::Result<bool> {
        let timeout = if self.again.is_empty() { self.deadline().map(|t| t.saturating_duration_since(Instant::now())) } else { Some(Duration::ZERO) };
        let timeout = match (timeout, cap) {
            (Some(t), Some(c)) => Some(t.min(c)),
            (t, c) => t.or(c),
        };
        if let Err(e) = self.poll.poll(events, timeout) {
            return if e.kind() == ErrorKind::Interrupted { Ok(true) } else { Err(e) };
        }
        // Commands first: a plan the engine sent before its answer reached the browser must
        // be in place before the browser's first ICE check, which may wait in the same batch.
        if events.iter().any(|ev| ev.token() == WAKE) {
            self.wakeup.rearm();
            if !self.commands() {
                return Ok(false);
            }
            self.frames();
        }
        for ev in events.iter() {
            if let Token(t @ 1..) = ev.token() {
                self.read(t - 1);
            }
        }
        std::mem::swap(&mut self.again, &mut self.again_next);
        for i in 0..self.again_next.len() {
            self.read(self.again_next[i]);
        }
        self.again_next.clear();
        let now = Instant::now();
        if self.shard.poll_timeout().is_some_and(|t| t <= now) {
            // Calls left due wait for the next turn, which polls without sleeping: the
            // packets that arrived meanwhile go first.
            self.guarded(|s| s.handle_timeout_within(now, estuary_media::shard::TIMER_BUDGET));
        }
        self.outputs();
        self.io.flush();
        self.release_ended();
        self.housekeeping(now);
        Ok(true)
    }

    /// The next moment the thread has something to do without input.
    fn deadline(&self) -> Option<Instant> {
        let retry = (!self.unsent.is_empty()).then(|| Instant::now() + EVENT_RETRY);
        [self.shard.poll_timeout(), self.flush_at, retry].into_iter().flatten().min()
    }

    /// Reads up to a burst from the socket in `slot`, each datagram through the shard.
    ///
    /// Every read is one `recvmmsg`: fewer datagrams than asked for means the socket is
    /// empty, so a call's own socket, where one datagram waits per wake-up at 50 pps, costs
    /// one system call instead of a `recvfrom` and the one that says it would block. A
    /// datagram that arrives after the read raises a new edge, so none is left behind.
    fn read(&mut self, slot: usize) {
        let per_read = if slot == SHARED_SLOT && self.io.shared.is_some() { BATCH } else { CALL_BATCH };
        for _ in 0..BURST.div_ceil(per_read) {
            let Some(Some(s)) = self.io.socks.get(slot) else { return };
            let (local, fd) = (s.addr, s.sock.as_raw_fd());
            let n = match self.io.inbound.recv(fd, per_read) {
                Ok(n) => n,
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                // An ICMP error reported on the socket, or the like: the next read goes on.
                Err(e) => {
                    debug!(slot, error = %e, "media socket read");
                    continue;
                }
            };
            for i in 0..n {
                let Some((data, source)) = self.io.inbound.received(i) else { continue };
                self.buf.clear();
                // Within capacity (MIN_BUFFER): never reallocates.
                self.buf.extend_from_slice(data);
                self.datagram(local, source);
            }
            if n < per_read {
                return;
            }
        }
        self.again.push(slot);
    }

    fn datagram(&mut self, local: SocketAddr, source: SocketAddr) {
        let now = Instant::now();
        let (shard, buf) = (&mut self.shard, &mut self.buf);
        let Some(routed) = guard(shard, |s| s.handle_datagram(now, local, source, buf)) else {
            return self.abandon_panicked();
        };
        match routed.forward {
            Forward::Send { from, to } => self.io.send(from, to, &self.buf),
            Forward::Transcode { stream, to } => {
                let Some(io) = routed.call.and_then(|c| self.calls.get_mut(&c)) else { return };
                if let Some(t) = io.transcoding.as_mut() {
                    t.push(&io.plan, stream, to, &self.buf);
                }
            }
            Forward::Consumed => {}
        }
        if self.flush_at.is_none() {
            self.flush_at = Some(now + METRICS_FLUSH);
        }
    }

    /// Runs `f` on the shard, catching a panic: the call it happened in is dropped.
    fn guarded<R>(&mut self, f: impl FnOnce(&mut MediaShard) -> R) -> Option<R> {
        let r = guard(&mut self.shard, f);
        if r.is_none() {
            self.abandon_panicked();
        }
        r
    }

    fn abandon_panicked(&mut self) {
        match self.shard.abandon_panicked() {
            Some(call) => {
                error!(call, thread = self.index, "media plane panicked on this call's input; the call is ended, the others go on");
                self.release(call);
                self.fail(call, MediaFailure::Internal, "internal error in the media plane".into());
            }
            None => error!(thread = self.index, "media plane panicked outside any call"),
        }
    }

    /// Takes the engine's commands; false on Stop (or when the engine is gone).
    fn commands(&mut self) -> bool {
        loop {
            match self.commands.try_recv() {
                Ok(Command::Plan { call, plan }) => self.plan(call, plan),
                Ok(Command::End { call }) => self.end(call),
                Ok(Command::PictureFastUpdate { call, from }) => self.shard.picture_fast_update(Instant::now(), call, from),
                Ok(Command::Stop) | Err(TryRecvError::Disconnected) => return false,
                Err(TryRecvError::Empty) => return true,
            }
        }
    }

    fn plan(&mut self, call: u64, plan: Box<MediaPlan>) {
        let now = Instant::now();
        if self.calls.contains_key(&call) {
            return self.update(call, plan, now);
        }
        // Not a secret: SSRCs and sequence starts (keys come from the OS CSPRNG inside).
        // Media is copied for the recorder as `recording.mode` says when the call starts
        // (a SIGHUP that changes it applies from the next call).
        let cfg = MediaConfig { tap: self.ctx.recorder.records_media(), ..self.cfg.clone() };
        let session = match MediaSession::new(cfg, &plan, &self.cert, now, rand::random()) {
            Ok(s) => s,
            Err(e) => return self.fail(call, MediaFailure::Local, format!("media session: {e}")),
        };
        let addrs = session.local_addresses();
        let transcoding = self.ctx.transcoder.clone().map(|t| CallTranscoding::new(t, call, self.frame_queue.clone()));
        self.calls.insert(call, CallIo { slots: Vec::new(), plan, transcoding, flushed: MediaCounters::default() });
        if let Err(e) = self.take_sockets(call, addrs) {
            self.release(call);
            return self.fail(call, MediaFailure::Local, e);
        }
        match self.guarded(|s| s.add_call(now, call, session)) {
            Some(Ok(())) => info!(call, thread = self.index, sockets = self.calls.get(&call).map_or(0, |c| c.slots.len()), "media started"),
            Some(Err(e)) => {
                self.release(call);
                self.fail(call, MediaFailure::Local, format!("media: {e}"));
            }
            None => {}
        }
    }

    fn update(&mut self, call: u64, plan: Box<MediaPlan>, now: Instant) {
        let Some(io) = self.calls.get_mut(&call) else { return };
        if let Some(t) = io.transcoding.as_mut() {
            t.plan_changed(&io.plan, &plan);
        }
        let result = match self.guarded(|s| s.update_plan(now, call, &plan)) {
            Some(r) => r,
            None => return,
        };
        if let Some(io) = self.calls.get_mut(&call) {
            io.plan = plan;
        }
        let addrs = self.shard.session(call).map(MediaSession::local_addresses).unwrap_or_default();
        let taken = self.take_sockets(call, addrs);
        if let Err(e) = result.map_err(|e| format!("media plan: {e}")).and(taken) {
            self.end(call);
            self.fail(call, MediaFailure::Local, e);
        }
    }

    /// Takes the socket of every local address of `call` that has none yet. Each was bound
    /// before the engine could announce it (bind before announce); one that is not there is a
    /// bug, and fails the call rather than binding after the fact.
    fn take_sockets(&mut self, call: u64, addrs: Vec<SocketAddr>) -> Result<(), String> {
        for addr in addrs {
            if addr.port() == 0 || self.io.by_addr.contains_key(&addr) {
                continue;
            }
            let std = self.ctx.media_ports.take(addr).ok_or_else(|| format!("media port {addr} was announced but is not bound"))?;
            let mut sock = UdpSocket::from_std(std);
            let slot = self.free.pop().unwrap_or_else(|| {
                self.io.socks.push(None);
                self.io.socks.len() - 1
            });
            if let Err(e) = self.poll.registry().register(&mut sock, Token(slot + 1), Interest::READABLE) {
                self.ctx.media_ports.put_back(addr, sock.into());
                self.free.push(slot);
                return Err(format!("media port {addr}: {e}"));
            }
            self.io.socks[slot] = Some(Sock { addr, sock });
            self.io.by_addr.insert(addr, slot);
            if let Some(io) = self.calls.get_mut(&call) {
                io.slots.push(slot);
            }
        }
        Ok(())
    }

    /// The call is over: RTCP BYE on both legs, its report filed; its sockets go back once
    /// that is sent (`release_ended`).
    fn end(&mut self, call: u64) {
        let now = Instant::now();
        if let Some(Some(session)) = self.guarded(|s| s.end_call(now, call)) {
            self.flush_call(call, session.counters());
            let video = self.calls.get(&call).and_then(|io| io.transcoding.as_ref()).map(|t| t.video_stats()).unwrap_or_default();
            self.ctx.records.media(call, crate::records::MediaHalf { streams: session.report(), video });
            info!(call, counters = ?session.counters(), "media ended");
        }
        self.ended.push(call);
    }

    fn release_ended(&mut self) {
        while let Some(call) = self.ended.pop() {
            self.release(call);
        }
    }

    /// Gives `call`'s sockets back to the daemon's pool, bound, for the next calls.
    fn release(&mut self, call: u64) {
        let Some(io) = self.calls.remove(&call) else { return };
        for slot in io.slots {
            let Some(Sock { addr, mut sock }) = self.io.socks.get_mut(slot).and_then(Option::take) else { continue };
            if let Err(e) = self.poll.registry().deregister(&mut sock) {
                warn!(%addr, error = %e, "media socket deregister");
            }
            self.io.by_addr.remove(&addr);
            self.again.retain(|s| *s != slot);
            self.free.push(slot);
            self.ctx.media_ports.put_back(addr, sock.into());
        }
        // Dropping `io.transcoding` closes its channels on the workers.
    }

    /// Transcoded frames from the workers, each sent on its call's leg.
    fn frames(&mut self) {
        loop {
            let f = match self.frames.try_recv() {
                Ok(f) => f,
                Err(_) => return,
            };
            let now = Instant::now();
            let f = match f {
                FromWorker::Frame(f) => f,
                FromWorker::KeyframeNeeded { call, stream, from } => {
                    if guard(&mut self.shard, |s| s.request_keyframe(now, call, stream, from)).is_none() {
                        self.abandon_panicked();
                    }
                    continue;
                }
            };
            let frame = Transcoded { stream: f.stream, to: f.to, payload: f.payload(), timestamp: f.timestamp, marker: f.marker };
            let (shard, out) = (&mut self.shard, &mut self.out);
            match guard(shard, |s| s.send_transcoded(now, f.call, frame, out)) {
                Some(Forward::Send { from, to }) => self.io.send(from, to, &self.out),
                Some(_) => {}
                None => self.abandon_panicked(),
            }
        }
    }

    /// Control traffic, events and recorder copies of every call.
    fn outputs(&mut self) {
        while let Some((call, o)) = self.shard.poll_output() {
            match o {
                Output::Transmit { from, to, data } => self.io.send(from, to, &data),
                Output::Event(MediaEvent::Failed { cause, reason }) => {
                    let failure = match cause {
                        FailCause::Inactivity => MediaFailure::Inactivity,
                        FailCause::Ice => MediaFailure::Ice,
                        FailCause::Dtls => MediaFailure::Dtls,
                        FailCause::DtlsClosed => MediaFailure::DtlsClosed,
                    };
                    self.end(call);
                    self.fail_with(call, failure, estuary_core::release_cause(cause), reason);
                }
                Output::Event(MediaEvent::PictureFastUpdate) => {
                    self.unsent.push_back(Event::PictureFastUpdate { call });
                    self.offer_events();
                }
                Output::Event(MediaEvent::IceConnected { remote }) => {
                    // For policy (Rx): the flow the access network carries.
                    self.unsent.push_back(Event::MediaPath { call, remote });
                    self.offer_events();
                }
                Output::Event(ev) => debug!(call, ?ev, "media"),
                Output::Encoder { stream, to, request } => {
                    if let Some(t) = self.calls.get(&call).and_then(|io| io.transcoding.as_ref()) {
                        t.control(stream, to, request);
                    }
                }
                Output::Tap { leg, from, to, data } => {
                    let lane = if leg == Leg::Web { Lane::WebMedia } else { Lane::ImsMedia };
                    self.ctx.recorder.media(call, lane, from, to, data);
                }
            }
        }
    }

    /// Tells the engine the daemon could not run the call's media (ports, a plan it cannot
    /// apply, a panic): to the far ends that is a lost bearer.
    fn fail(&mut self, call: u64, failure: MediaFailure, reason: String) {
        self.fail_with(call, failure, ReleaseCause::MediaBearerLoss, reason)
    }

    /// Tells the engine the call's media gave up; it ends the call with BYE on both legs,
    /// each carrying `cause`.
    fn fail_with(&mut self, call: u64, failure: MediaFailure, cause: ReleaseCause, reason: String) {
        warn!(call, ?failure, %reason, "media failed");
        self.ctx.stats.media_failed(failure);
        self.unsent.push_back(Event::MediaFailed { call, reason, cause });
        self.offer_events();
    }

    fn offer_events(&mut self) {
        while let Some(ev) = self.unsent.pop_front() {
            match self.ctx.events.try_send(ev) {
                Ok(()) => {}
                Err(tokio::sync::mpsc::error::TrySendError::Full(ev)) => {
                    self.unsent.push_front(ev);
                    return;
                }
                Err(tokio::sync::mpsc::error::TrySendError::Closed(_)) => {
                    self.unsent.clear();
                    return;
                }
            }
        }
    }

    /// Retried failure reports, and the metrics flush once a second while packets move.
    fn housekeeping(&mut self, now: Instant) {
        if !self.unsent.is_empty() {
            self.offer_events();
        }
        if self.flush_at.is_some_and(|t| t <= now) {
            self.flush_at = None;
            let c = self.shard.counters();
            self.ctx.stats.add(Metric::MediaUnroutable, c.unroutable - self.reported.unroutable);
            self.ctx.stats.add(Metric::MediaUfragClashes, c.ufrag_clashes - self.reported.ufrag_clashes);
            self.reported = c;
            let Self { shard, calls, ctx, .. } = self;
            for (call, io) in calls.iter_mut() {
                if let Some(s) = shard.session(*call) {
                    ctx.stats.media_flush(s.counters(), &io.flushed);
                    io.flushed.clone_from(s.counters());
                }
            }
        }
    }

    fn flush_call(&mut self, call: u64, counters: &MediaCounters) {
        if let Some(io) = self.calls.get_mut(&call) {
            self.ctx.stats.media_flush(counters, &io.flushed);
            io.flushed.clone_from(counters);
        }
    }
}

/// `f` on the shard; `None` if it panicked (the shard knows in which call).
fn guard<R>(shard: &mut MediaShard, f: impl FnOnce(&mut MediaShard) -> R) -> Option<R> {
    catch_unwind(AssertUnwindSafe(|| f(shard))).ok()
}

#[cfg(test)]
#[path = "thread_tests.rs"]
mod tests;
