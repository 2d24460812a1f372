//! The set-up rate benchmark (`setup_rate`): short calls offered at a rising rate to the
//! running daemon, behind the same IMS core as the relay benchmark ([`crate::load::Core`]).
//!
//! Each call is a browser of its own: WebSocket, REGISTER, INVITE to `echo@` (200, ACK), ICE
//! nomination, DTLS handshake, one second of SRTP PCMU both ways (the core's media task sends
//! its own stream back), BYE, WebSocket closed (which deregisters it: the daemon's
//! `registrar.on_ws_close` default). A call *completed* when every step succeeded, its BYE was
//! answered 200 and at least [`MEDIA_BACK`] of its packets' worth came back and authenticated.
//!
//! A step offers `rate` calls a second for `step` seconds, started at even intervals, each in
//! its own task (a call lasts about 1.3 s, so a few hundred are in progress at once at the
//! rates of interest); the step ends when its last call has ended and [`SETTLE`] has passed
//! for the work calls leave behind (deregistration, port release). The daemon's CPU time
//! (and Kamailio's, and this generator's) over the step is divided by the calls completed.
//! Steps run from the lowest rate up and stop at the first step with fewer than
//! [`PASS_SHARE`] of its calls completed: the sustained rate is the highest rate of a step
//! that passed, every lower one having passed too.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use estuary_srtp::Certificate;
use tokio::sync::watch;

use crate::load::{self, BrowserCodec, Core, ImsSide, MediaSource, Totals, PTIME};
use crate::sample;

/// Share of a step's calls that must complete for the step to pass.
pub const PASS_SHARE: f64 = 0.99;
/// Share of the packets a browser sent that must come back for its media to count.
pub const MEDIA_BACK: f64 = 0.8;
/// After a step's last call, the daemon's deferred work (deregistrations, ports returning
/// from quarantine) is given this long and counted in the step.
pub const SETTLE: Duration = Duration::from_secs(1);
/// The longest one call may take, every wait included, before it counts as failed.
const CALL_LIMIT: Duration = Duration::from_secs(30);
/// Seconds a released media port rests in the daemon here. The default (30 s) with the
/// default 10,000-port range holds at most 5,000 IMS streams: about 160 calls a second
/// sustained, a sizing limit of the operator's configuration that would end the ramp before
/// the engine's. The quarantine only keeps late packets of a call from the next one.
pub const PORT_QUARANTINE_S: u32 = 2;

/// What a run is asked to do.
#[derive(Clone, Debug)]
pub struct RateConfig {
    /// Offered calls per second, one step each, in order.
    pub rates: Vec<u32>,
    /// How long each step offers calls.
    pub step: Duration,
    /// Media time per call.
    pub media: Duration,
    /// The daemon's media port range.
    pub ports: (u16, u16),
    pub core: Core,
}

/// What one step measured.
#[derive(Clone, Debug)]
pub struct Step {
    /// Offered calls per second.
    pub rate: u32,
    pub launched: u64,
    /// From the first call's start to the last one's: the rate achieved is `launched` over it.
    pub launch_span: Duration,
    pub completed: u64,
    /// Failed calls per step of the call where they failed (`ws`, `register`, `invite`,
    /// `ice`, `dtls`, `media`, `bye`, `client`: the conformance client gave up, `timeout`),
    /// with the first message.
    pub failures: Vec<(&'static str, u64, String)>,
    /// From the first call's start to the step's end ([`SETTLE`] included).
    pub wall: Duration,
    pub daemon_cpu: Duration,
    pub core_cpu: Option<Duration>,
    /// This process: the browsers and the core's media, on one thread.
    pub generator_cpu: Duration,
    /// Most calls in progress at once.
    pub peak_in_progress: u64,
    /// Set-up times of the completed calls (WebSocket open to keys), sorted.
    pub setup_times: Vec<Duration>,
    /// Completed calls whose first ICE check went unanswered (the next one, 250 ms later,
    /// was): a check that reached the gateway before it knew the call.
    pub ice_retried: u64,
}

impl Step {
    pub fn completed_share(&self) -> f64 {
        self.completed as f64 / self.launched.max(1) as f64
    }

    pub fn passed(&self) -> bool {
        self.launched > 0 && self.completed_share() >= PASS_SHARE
    }

    /// Calls started per second, as achieved.
    pub fn launch_rate(&self) -> f64 {
        self.launched.saturating_sub(1) as f64 / self.launch_span.as_secs_f64().max(1e-9)
    }

    /// Daemon CPU per completed call, milliseconds.
    pub fn daemon_ms_per_call(&self) -> Option<f64> {
        (self.completed > 0).then(|| self.daemon_cpu.as_secs_f64() * 1e3 / self.completed as f64)
    }

    pub fn core_ms_per_call(&self) -> Option<f64> {
        Some(self.core_cpu?.as_secs_f64() * 1e3 / self.completed.max(1) as f64)
    }

    /// Share of one core the generator used over the step: near 1, it was the bottleneck.
    pub fn generator_load(&self) -> f64 {
        self.generator_cpu.as_secs_f64() / self.wall.as_secs_f64().max(1e-9)
    }

    /// The `q` quantile (0..=1) of the set-up times, milliseconds.
    pub fn setup_ms(&self, q: f64) -> Option<f64> {
        let i = ((self.setup_times.len() as f64 - 1.0) * q).round() as usize;
        self.setup_times.get(i).map(|d| d.as_secs_f64() * 1e3)
    }
}

/// What the run measured, and what it ran against.
pub struct RateRun {
    pub pid: u32,
    pub steps: Vec<Step>,
}

/// Where the offered calls go: the browsers' WebSocket address (a daemon's, or a load
/// balancer's in front of several) and the daemon processes whose CPU a step counts.
pub struct RateTarget {
    pub ws: std::net::SocketAddr,
    pub pids: Vec<u32>,
}

/// Starts the IMS side and the daemon, then runs the steps of `cfg` (see the module doc).
pub async fn run(cfg: &RateConfig) -> Result<RateRun, String> {
    let ports = cfg.ports;
    let mut pid = 0;
    let steps = run_with(cfg, |next_hop| async move {
        let gw = load::estuary(ports, true, next_hop).set("media.port_quarantine_s", &PORT_QUARANTINE_S.to_string()).start().await;
        Ok((RateTarget { ws: gw.ws_addr, pids: vec![gw.pid()] }, gw))
    }, |target| pid = target.pids[0])
    .await?;
    Ok(RateRun { pid, steps })
}

/// As [`run`], against what `start` starts given the IMS next hop's UDP port: the target,
/// and what must live as long as the run (daemons, a load balancer). `seen` is shown the
/// target once it is up.
pub async fn run_with<F, Fut, K>(cfg: &RateConfig, start: F, seen: impl FnOnce(&RateTarget)) -> Result<Vec<Step>, String>
where
    F: FnOnce(u16) -> Fut,
    Fut: std::future::Future<Output = Result<(RateTarget, K), String>>,
{
    let media = Arc::new(MediaSource::new(BrowserCodec::Pcmu)?);
    let totals = Arc::new(Totals::default());
    let (_stop_tx, stop) = watch::channel(false);
    let ims = ImsSide::start(cfg.core, 0.0, &totals, &stop).await?;
    let (target, _keep) = start(ims.next_hop).await?;
    seen(&target);
    let pids = target.pids.clone();
    let cert = Arc::new(Certificate::generate().map_err(|e| e.to_string())?);
    let packets = (cfg.media.as_millis() / PTIME.as_millis()).max(1) as u32;
    let mut steps = Vec::new();
    let mut first = 0u64;
    for &rate in &cfg.rates {
        if rate == 0 {
            return Err("a rate of 0 calls per second".into());
        }
        let n = (f64::from(rate) * cfg.step.as_secs_f64()).round().max(1.0) as u64;
        let daemons = || pids.iter().filter_map(|&p| sample(p).ok()).map(|s| s.cpu).sum::<Duration>();
        let cpu = || (daemons(), ims.core_cpu(), sample(std::process::id()).map(|s| s.cpu).unwrap_or_default());
        let (d0, c0, g0) = cpu();
        let t0 = tokio::time::Instant::now();
        let gap = Duration::from_secs_f64(1.0 / f64::from(rate));
        let (in_progress, peak) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
        let mut tasks = Vec::with_capacity(n as usize);
        let mut last_launch = t0;
        for i in 0..n {
            tokio::time::sleep_until(t0 + gap.mul_f64(i as f64)).await;
            last_launch = tokio::time::Instant::now();
            let now = in_progress.fetch_add(1, Ordering::Relaxed) + 1;
            peak.fetch_max(now, Ordering::Relaxed);
            let (ws, cert, media, totals, stop, in_progress) = (target.ws, cert.clone(), media.clone(), totals.clone(), stop.clone(), in_progress.clone());
            tasks.push(tokio::spawn(async move {
                let r = match tokio::time::timeout(CALL_LIMIT, short_call(ws, first + i, &cert, &media, &totals, stop, packets)).await {
                    Ok(r) => r,
                    Err(_) => Err(("timeout", format!("not over in {CALL_LIMIT:?}"))),
                };
                in_progress.fetch_sub(1, Ordering::Relaxed);
                r
            }));
        }
        let launch_span = last_launch - t0;
        let mut failures: Vec<(&'static str, u64, String)> = Vec::new();
        let mut setup_times = Vec::new();
        let mut ice_retried = 0;
        for t in tasks {
            match t.await.map_err(|e| ("client", load::task_failure(e))).and_then(|r| r) {
                Ok((d, checks)) => {
                    setup_times.push(d);
                    ice_retried += u64::from(checks > 1);
                }
                Err((stage, why)) => match failures.iter_mut().find(|f| f.0 == stage) {
                    Some(f) => f.1 += 1,
                    None => failures.push((stage, 1, why)),
                },
            }
        }
        tokio::time::sleep(SETTLE).await;
        let (d1, c1, g1) = cpu();
        setup_times.sort();
        let step = Step {
            rate,
            launched: n,
            launch_span,
            completed: setup_times.len() as u64,
            failures,
            wall: t0.elapsed(),
            daemon_cpu: d1.saturating_sub(d0),
            core_cpu: c0.zip(c1).map(|(a, b)| b.saturating_sub(a)),
            generator_cpu: g1.saturating_sub(g0),
            peak_in_progress: peak.load(Ordering::Relaxed),
            setup_times,
            ice_retried,
        };
        println!(
            "step {rate} cps: {} of {} calls completed ({:.1}%), daemon {} ms per call, generator at {:.0}% of a core, {} first ICE checks unanswered",
            step.completed,
            step.launched,
            100.0 * step.completed_share(),
            step.daemon_ms_per_call().map_or("-".into(), |v| format!("{v:.2}")),
            100.0 * step.generator_load(),
            step.ice_retried
        );
        first += n;
        let passed = step.passed();
        steps.push(step);
        if !passed {
            break;
        }
    }
    Ok(steps)
}

/// One short call by browser `n` (see the module doc): how long it took from the WebSocket's
/// opening to the keys and how many ICE checks it sent, or the step where it failed and why.
async fn short_call(
    ws: std::net::SocketAddr,
    n: u64,
    cert: &Certificate,
    media: &MediaSource,
    totals: &Totals,
    mut stop: watch::Receiver<bool>,
    packets: u32,
) -> Result<(Duration, u32), (&'static str, String)> {
    let t = Instant::now();
    let mut b = load::connect(ws, n).await.map_err(|e| ("ws", e))?;
    load::register(&mut b.client).await.map_err(|e| ("register", e))?;
    let mut call = load::invite(&mut b.client, n, media.codec, cert).await.map_err(|e| ("invite", e))?;
    let checks = load::nominate(&call.leg).await.map_err(|e| ("ice", e))?;
    let keys = load::handshake(&call.leg, cert).await.map_err(|e| ("dtls", e))?;
    let keyed = t.elapsed();
    let flow = load::stream(&call.leg, keys, media, totals, &mut stop, Some(packets)).await;
    load::hang_up(&mut b.client, &mut call.dialog).await.map_err(|e| ("bye", e))?;
    b.client.close().await;
    if (flow.received as f64) < MEDIA_BACK * flow.sent as f64 || flow.sent == 0 {
        return Err(("media", format!("{} of the {} packets sent came back", flow.received, flow.sent)));
    }
    Ok((keyed, checks))
}
