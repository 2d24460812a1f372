//! The media plane's driver: `media.threads` event loops (one per core by default), each a
//! [`thread::MediaThread`] owning whole calls: the call's sockets, its [`MediaSession`] in the
//! thread's [`estuary_media::shard::MediaShard`], its transcoding channels and its timers. A
//! packet is read, handled and relayed on the thread that owns its call; no lock and no
//! queue lie on its way.
//!
//! The engine task talks to the threads through [`MediaHub`]: a call's settled plan, its
//! re-offers and its end go down a command queue, with a wake-up of the thread's poller. A
//! session that gives up (DTLS failure, lost consent, silence) comes back to the engine as
//! [`crate::engine::Event::MediaFailed`], and the engine ends the call with BYE.
//!
//! [`MediaSession`]: estuary_media::MediaSession

mod batch;
mod thread;

use std::collections::HashMap;
use std::sync::Arc;

use estuary_media::MediaConfig;
use estuary_sdp::MediaPlan;
use estuary_srtp::Certificate;
use tracing::{info, warn};

use crate::ctx::Ctx;
use crate::error::DaemonError;
pub use thread::Wakeup;
use thread::{Command, ThreadHandle};

/// Media threads for `media.threads` (0: one per core).
pub fn thread_count(configured: usize) -> usize {
    match configured {
        0 => std::thread::available_parallelism().map_or(1, usize::from),
        n => n,
    }
}

pub struct MediaHub {
    threads: Vec<ThreadHandle>,
    /// Shared mode: each thread's browser-facing port; a call goes to the thread whose port
    /// its plan names.
    by_shared_port: HashMap<u16, usize>,
    /// Which thread runs each call.
    calls: HashMap<u64, usize>,
    /// Calls per thread: a new call goes to the least loaded.
    load: Vec<usize>,
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
        let by_shared_port = shared.iter().enumerate().map(|(i, p)| (*p, i)).collect();
        Ok(MediaHub { threads, by_shared_port, calls: HashMap::new(), load: vec![0; n] })
    }

    /// A call's plan was settled or renegotiated.
    pub fn plan(&mut self, call: u64, plan: Box<MediaPlan>) {
        let t = match self.calls.get(&call) {
            Some(&t) => t,
            None => {
                // The thread of the shared port the call was given, else the least loaded.
                let least = || (0..self.load.len()).min_by_key(|&i| self.load[i]).unwrap_or(0);
                let t = self.by_shared_port.get(&plan.web.local_port).copied().unwrap_or_else(least);
                self.calls.insert(call, t);
                self.load[t] += 1;
                t
            }
        };
        self.threads[t].send(Command::Plan { call, plan });
    }

    /// The call ended: its thread sends the last RTCP, files its report and keeps its sockets
    /// for the next calls.
    pub fn end(&mut self, call: u64) {
        if let Some(t) = self.calls.remove(&call) {
            self.load[t] -= 1;
            self.threads[t].send(Command::End { call });
        }
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
