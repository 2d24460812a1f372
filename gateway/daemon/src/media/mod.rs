//! The media plane's driver: `media.threads` event loops (one per core by default), each a
//! [`thread::MediaThread`] owning whole calls: the call's sockets, its [`MediaSession`] in the
//! thread's [`estuary_media::shard::MediaShard`], its transcoding channels and its timers. A
//! packet is read, handled and relayed on the thread that owns its call; no lock and no
//! queue lie on its way.
//!
//! New calls fill one thread before the next ([`pick`]): a thread below [`SPILL`] of a core
//! takes them, so at light load one thread relays everything and the others sleep. Spreading
//! 200 calls over two threads on a 2-core machine cost 18.5 µs per relayed packet against
//! 15.3 µs on one (cross-core wake-ups, and two threads each waking for fewer packets);
//! past [`SPILL`] the next thread takes the new calls, so the load still uses every core.
//!
//! The engine task talks to the threads through [`MediaHub`]: a call's settled plan, its
//! re-offers and its end go down a command queue, with a wake-up of the thread's poller. A
//! session that gives up (DTLS failure, lost consent, silence) comes back to the engine as
//! [`crate::events::Event::MediaFailed`], and the engine ends the call with BYE.
//!
//! [`MediaSession`]: estuary_media::MediaSession

mod batch;
mod thread;

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use estuary_core::{MediaPlane, MediaPlaneEvent, ReleaseCause};
use estuary_media::MediaConfig;
use estuary_sdp::MediaPlan;
use estuary_srtp::Certificate;
use tracing::{debug, info, warn};

use crate::ctx::Ctx;
use crate::error::DaemonError;
use crate::metrics::Metric;
pub use thread::Wakeup;
use thread::{Command, ThreadHandle};

/// Media threads for `media.threads` (0: one per core).
pub fn thread_count(configured: usize) -> usize {
    match configured {
        0 => std::thread::available_parallelism().map_or(1, usize::from),
        n => n,
    }
}

/// A thread busier than this share of a core takes no new calls while another is below it.
pub const SPILL: f64 = 0.5;
/// How often the threads' CPU clocks are read.
const SAMPLE: Duration = Duration::from_millis(250);
/// The share of a core a call is assumed to cost at least (100 packets a second at ~15 µs
/// each): calls are placed at set-up, before their media flows, so a thread that has just
/// taken many calls measures almost nothing yet.
const CALL_SHARE: f64 = 0.0015;

pub struct MediaHub {
    threads: Vec<ThreadHandle>,
    /// Shared mode: thread `i`'s browser-facing port is `shared[i]`; a call goes to the
    /// thread whose port its plan names. Empty in per-call mode.
    shared: Vec<u16>,
    /// Which thread runs each call.
    calls: HashMap<u64, usize>,
    /// Calls per thread.
    load: Vec<usize>,
    /// The threads' measured load, for placing new calls.
    busy: Busy,
    ctx: Arc<Ctx>,
    /// Plans no thread could take, reported to the core.
    failed: VecDeque<MediaPlaneEvent>,
}

/// Each thread's share of a core over the last [`SAMPLE`], and its calls then.
struct Busy {
    at: Instant,
    cpu: Vec<Option<Duration>>,
    share: Vec<f64>,
    calls: Vec<usize>,
}

impl MediaHub {
    /// Starts `n` media threads. In shared mode `shared` holds one bound browser-facing port
    /// per thread (on `media.web_address`), which the thread keeps for good; empty in per-call
    /// mode.
    pub fn start(n: usize, shared: &[u16], cert: Certificate, cfg: MediaConfig, ctx: Arc<Ctx>) -> Result<MediaHub, DaemonError> {
        let cert = Arc::new(cert);
        let threads = (0..n)
            .map(|i| {
                let web = shared.get(i).map(|p| std::net::SocketAddr::new(cfg.web_address, *p));
                thread::spawn(i, web, cert.clone(), cfg.clone(), ctx.clone())
            })
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| DaemonError::setup("media.threads", format!("cannot start a media thread: {e}")))?;
        info!(threads = n, shared_web_ports = ?shared, "media threads started");
        let cpu = threads.iter().map(|t| t.cpu_clock.and_then(thread::cpu_time)).collect();
        let busy = Busy { at: Instant::now(), cpu, share: vec![0.0; n], calls: vec![0; n] };
        Ok(MediaHub { threads, shared: shared.to_vec(), calls: HashMap::new(), load: vec![0; n], busy, ctx, failed: VecDeque::new() })
    }

    /// The thread for a new call: the first one with room ([`pick`]), by the load last read
    /// from the threads' CPU clocks.
    fn place(&mut self, now: Instant) -> usize {
        let b = &mut self.busy;
        let elapsed = now.saturating_duration_since(b.at);
        if elapsed >= SAMPLE {
            for (i, t) in self.threads.iter().enumerate() {
                let cpu = t.cpu_clock.and_then(thread::cpu_time);
                b.share[i] = match (cpu, b.cpu[i]) {
                    (Some(c), Some(before)) => c.saturating_sub(before).as_secs_f64() / elapsed.as_secs_f64(),
                    // A thread whose clock cannot be read (gone, or never spawned) takes no
                    // calls while another can.
                    _ => f64::INFINITY,
                };
                b.cpu[i] = cpu;
                b.calls[i] = self.load[i];
            }
            b.at = now;
        }
        pick(&b.share, &b.calls, &self.load)
    }

}

/// The core's media plane in the daemon: plans and ends go to the thread that owns the call;
/// failures come back as [`estuary_core::Input::MediaFailed`] through the engine's events.
impl MediaPlane for MediaHub {
    /// Shared mode: the shared port of the thread new calls should go to now.
    fn preferred_web_port(&mut self, now: Instant) -> Option<u16> {
        if self.shared.is_empty() {
            return None;
        }
        let t = self.place(now);
        self.shared.get(t).copied()
    }

    /// A call's plan was settled or renegotiated.
    fn plan(&mut self, now: Instant, call: u64, plan: Box<MediaPlan>) {
        self.ctx.stats.inc(Metric::MediaPlans);
        debug!(call, streams = plan.streams.len(), web_port = plan.web.local_port, "media plan settled");
        let t = match self.calls.get(&call) {
            Some(&t) => t,
            None => {
                // The thread of the shared port the call was given, else the one with room.
                let t = match self.shared.iter().position(|p| *p == plan.web.local_port) {
                    Some(t) => t,
                    None => self.place(now),
                };
                self.calls.insert(call, t);
                self.load[t] += 1;
                t
            }
        };
        if !self.threads[t].send(Command::Plan { call, plan }) {
            // The thread is gone: this call fails now, and no new call goes there.
            self.calls.remove(&call);
            self.load[t] -= 1;
            self.busy.share[t] = f64::INFINITY;
            self.busy.cpu[t] = None;
            let reason = format!("media thread {t} is gone");
            self.failed.push_back(MediaPlaneEvent::Failed { call, cause: ReleaseCause::MediaBearerLoss, reason });
        }
    }

    fn poll_event(&mut self) -> Option<MediaPlaneEvent> {
        self.failed.pop_front()
    }

    fn picture_fast_update(&mut self, _now: Instant, call: u64, from: estuary_core::Side) {
        if let Some(&t) = self.calls.get(&call) {
            self.threads[t].send(Command::PictureFastUpdate { call, from: estuary_core::leg_of(from) });
        }
    }

    /// The call ended: its thread sends the last RTCP, files its report and keeps its sockets
    /// for the next calls.
    fn end(&mut self, _now: Instant, call: u64) {
        if let Some(t) = self.calls.remove(&call) {
            self.load[t] -= 1;
            self.threads[t].send(Command::End { call });
        }
    }
}

impl MediaHub {
    /// TEST HOOK: stops thread `t` as a fatal poll error would.
    #[cfg(test)]
    pub fn stop_thread(&self, t: usize) {
        self.threads[t].send(Command::Stop);
    }

    /// TEST HOOK: whether thread `t` still takes commands.
    #[cfg(test)]
    pub fn thread_alive(&self, t: usize) -> bool {
        self.threads[t].send(Command::End { call: 0 })
    }
}

impl Drop for MediaHub {
    fn drop(&mut self) {
        for t in &self.threads {
            t.send(Command::Stop);
        }
        if !self.calls.is_empty() {
            warn!(calls = self.calls.len(), "media stopped with calls up");
        }
    }
}

/// The thread a new call goes to: the first whose estimated load is below [`SPILL`], else
/// the least loaded. A thread's estimate is the larger of its measured share of a core
/// (`share`, when it had `calls_then` calls) and [`CALL_SHARE`] per call, plus what the calls
/// it got since are likely to add, so a burst of new calls spills over before the next
/// reading shows them.
pub fn pick(share: &[f64], calls_then: &[usize], calls_now: &[usize]) -> usize {
    let estimate = |i: usize| {
        let then = calls_then[i] as f64;
        let per_call = if calls_then[i] > 0 { (share[i] / then).max(CALL_SHARE) } else { CALL_SHARE };
        share[i].max(then * CALL_SHARE) + (calls_now[i] as f64 - then) * per_call
    };
    (0..share.len())
        .find(|&i| estimate(i) < SPILL)
        .or_else(|| (0..share.len()).min_by(|&a, &b| estimate(a).total_cmp(&estimate(b))))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_calls_fill_the_first_thread_with_room() {
        // Light load: everything on thread 0, the others sleep.
        assert_eq!(pick(&[0.1, 0.0], &[100, 0], &[120, 0]), 0);
        // Thread 0 is past the spill point: thread 1 takes the new calls.
        assert_eq!(pick(&[0.55, 0.0], &[300, 0], &[300, 0]), 1);
        // Below the spill point when read, but the calls added since (at 0.225% each) push
        // it over: the estimate spills before the next reading would.
        assert_eq!(pick(&[0.45, 0.0], &[200, 0], &[215, 0]), 0);
        assert_eq!(pick(&[0.45, 0.0], &[200, 0], &[230, 0]), 1);
        // Calls that ended since bring a thread back under.
        assert_eq!(pick(&[0.55, 0.2], &[250, 100], &[150, 100]), 0);
        // Every thread full: the least loaded.
        assert_eq!(pick(&[0.9, 0.7, 0.8], &[900, 700, 800], &[900, 700, 800]), 1);
        // A thread whose clock cannot be read takes calls only when none other can.
        assert_eq!(pick(&[f64::INFINITY, 0.3], &[0, 10], &[0, 10]), 1);
        // Calls whose media has not started yet count at the least a call costs: 300 just
        // placed calls fill a thread that measured nothing yet.
        assert_eq!(pick(&[0.01, 0.0], &[300, 0], &[300, 0]), 0);
        assert_eq!(pick(&[0.01, 0.0], &[300, 0], &[340, 0]), 1);
        assert_eq!(pick(&[0.0, 0.0], &[0, 0], &[340, 0]), 1);
    }
}
