//! Who may talk to the gateway, decided before anything is parsed: the IMS listeners accept
//! only `ims.trusted_peers`, the web listeners only pages from `web.allowed_origins`.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use estuary_config::{IpBlock, LimitsConfig, WebOrigin};
use tracing::warn;

/// The IMS side's source check, with a log that speaks at most once a second however hard
/// it is flooded.
pub struct ImsTrust {
    /// Replaced whole on reload (SIGHUP); read once per datagram or accepted connection, by
    /// the IMS socket tasks only (never the media threads), so a read lock costs nothing.
    blocks: RwLock<Vec<IpBlock>>,
    quiet: QuietLog,
}

/// `configured` (`ims.trusted_peers`) when not empty, else the next hop's addresses.
fn trusted_blocks(configured: &[IpBlock], next_hop: &[IpAddr]) -> Vec<IpBlock> {
    if configured.is_empty() {
        next_hop.iter().map(|ip| IpBlock::host(*ip)).collect()
    } else {
        configured.to_vec()
    }
}

impl ImsTrust {
    /// `configured` (`ims.trusted_peers`) when not empty, else the next hop's addresses.
    pub fn new(configured: &[IpBlock], next_hop: &[IpAddr]) -> ImsTrust {
        ImsTrust { blocks: RwLock::new(trusted_blocks(configured, next_hop)), quiet: QuietLog::new() }
    }

    /// Reload: the same rule as [`ImsTrust::new`].
    pub fn set(&self, configured: &[IpBlock], next_hop: &[IpAddr]) {
        *self.blocks.write().unwrap_or_else(|e| e.into_inner()) = trusted_blocks(configured, next_hop);
    }

    pub fn blocks(&self) -> Vec<IpBlock> {
        self.blocks.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Whether SIP from `remote` may enter. A refusal is logged (rate-limited) with `what`
    /// (e.g. "UDP datagram"); the caller counts it.
    pub fn admits(&self, remote: SocketAddr, what: &str) -> bool {
        if self.blocks.read().unwrap_or_else(|e| e.into_inner()).iter().any(|b| b.contains(remote.ip())) {
            return true;
        }
        if let Some(suppressed) = self.quiet.may_log() {
            warn!(%remote, what, suppressed, "SIP from a source outside ims.trusted_peers dropped");
        }
        false
    }
}

/// The load balancers whose word on a client's address is taken (`web.trusted_proxies`).
pub struct TrustedProxies {
    /// Replaced whole on reload; read once per accepted web connection.
    blocks: RwLock<Vec<IpBlock>>,
}

impl TrustedProxies {
    pub fn new(blocks: &[IpBlock]) -> TrustedProxies {
        TrustedProxies { blocks: RwLock::new(blocks.to_vec()) }
    }

    pub fn set(&self, blocks: &[IpBlock]) {
        *self.blocks.write().unwrap_or_else(|e| e.into_inner()) = blocks.to_vec();
    }

    pub fn trusts(&self, ip: IpAddr) -> bool {
        self.blocks.read().unwrap_or_else(|e| e.into_inner()).iter().any(|b| b.contains(ip))
    }
}

/// The web side's Origin check (RFC 6454, RFC 6455 §10.2).
pub struct OriginPolicy {
    /// Replaced whole on reload; read once per WebSocket handshake.
    allowed: RwLock<Vec<WebOrigin>>,
}

impl OriginPolicy {
    pub fn new(allowed: &[WebOrigin]) -> OriginPolicy {
        OriginPolicy { allowed: RwLock::new(allowed.to_vec()) }
    }

    /// Reload: handshakes from now on are judged against `allowed`.
    pub fn set(&self, allowed: &[WebOrigin]) {
        *self.allowed.write().unwrap_or_else(|e| e.into_inner()) = allowed.to_vec();
    }

    /// Whether a handshake carrying `origin` (the header, if any) may upgrade. `own` is the
    /// origin of the page this listener serves itself (the demo page): `scheme://Host`.
    ///
    /// No list means any origin. A request without Origin comes from a non-browser client,
    /// which could have written any Origin it liked: refusing it would protect nothing.
    pub fn admits(&self, origin: Option<&str>, own: Option<&str>) -> bool {
        let Some(origin) = origin else { return true };
        let allowed = self.allowed.read().unwrap_or_else(|e| e.into_inner());
        if allowed.is_empty() {
            return true;
        }
        let Ok(origin) = origin.parse::<WebOrigin>() else { return false };
        if own.and_then(|o| o.parse::<WebOrigin>().ok()).is_some_and(|own| own == origin) {
            return true;
        }
        allowed.contains(&origin)
    }
}

/// Per-source limits on the web side (`limits.*_per_ip`): WebSocket connections, handshakes
/// in progress, and a token bucket of SIP requests. One small entry per source IP that has a
/// connection or an unfilled bucket; entries go when both are idle, so memory follows the
/// number of live sources, not the number ever seen.
pub struct SourceLimits {
    /// The limits, atomics so a reload (SIGHUP) can change them under running connections.
    connections: AtomicUsize,
    handshakes: AtomicUsize,
    /// Tokens a second, and the bucket's depth (f64 bits).
    rate: AtomicU64,
    burst: AtomicU64,
    epoch: Instant,
    /// Sharded by address so that sources rarely share a lock; the critical sections are a
    /// few arithmetic steps, taken per connection and per SIP request, never per packet.
    shards: [Mutex<HashMap<IpAddr, Source>>; SHARDS],
    /// Refusals by reason, and throttled requests (for /metrics).
    pub refused_connections: AtomicU64,
    pub refused_handshakes: AtomicU64,
    pub throttled: AtomicU64,
}

const SHARDS: usize = 16;

#[derive(Default)]
struct Source {
    /// Upgraded WebSockets.
    open: usize,
    /// Accepted, TLS/HTTP handshake not finished.
    handshaking: usize,
    /// Token bucket: level at `refilled_ms` (ms since `epoch`).
    tokens: f64,
    refilled_ms: u64,
}

/// Why a connection was turned away at accept.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// `limits.ws_connections_per_ip`.
    Connections,
    /// `limits.ws_handshakes_per_ip`.
    Handshakes,
}

impl SourceLimits {
    pub fn new(cfg: &LimitsConfig) -> Arc<SourceLimits> {
        Arc::new(SourceLimits {
            connections: AtomicUsize::new(cfg.ws_connections_per_ip),
            handshakes: AtomicUsize::new(cfg.ws_handshakes_per_ip),
            rate: AtomicU64::new(f64::from(cfg.requests_per_second_per_ip).to_bits()),
            burst: AtomicU64::new(f64::from(cfg.request_burst_per_ip).to_bits()),
            epoch: Instant::now(),
            shards: Default::default(),
            refused_connections: AtomicU64::new(0),
            refused_handshakes: AtomicU64::new(0),
            throttled: AtomicU64::new(0),
        })
    }

    /// Reload: new limits for connections and requests from now on; what sources hold now
    /// is kept (a lowered connection limit closes nothing, it refuses the next one).
    pub fn set_limits(&self, cfg: &LimitsConfig) {
        self.connections.store(cfg.ws_connections_per_ip, Ordering::Relaxed);
        self.handshakes.store(cfg.ws_handshakes_per_ip, Ordering::Relaxed);
        self.rate.store(f64::from(cfg.requests_per_second_per_ip).to_bits(), Ordering::Relaxed);
        self.burst.store(f64::from(cfg.request_burst_per_ip).to_bits(), Ordering::Relaxed);
    }

    fn rate(&self) -> f64 {
        f64::from_bits(self.rate.load(Ordering::Relaxed))
    }

    fn burst(&self) -> f64 {
        f64::from_bits(self.burst.load(Ordering::Relaxed))
    }

    fn shard(&self, ip: IpAddr) -> std::sync::MutexGuard<'_, HashMap<IpAddr, Source>> {
        let h = match ip.to_canonical() {
            IpAddr::V4(v) => u32::from(v) as usize,
            IpAddr::V6(v) => (u128::from(v) ^ (u128::from(v) >> 64)) as usize,
        };
        // A poisoned shard only means a panic elsewhere mid-update of plain counters.
        self.shards[h.wrapping_mul(0x9E37_79B9) % SHARDS].lock().unwrap_or_else(|e| e.into_inner())
    }

    /// TEST: every shard's lock, held until the guards drop (the media threads' no-lock test).
    #[cfg(test)]
    pub fn hold_all(&self) -> Vec<std::sync::MutexGuard<'_, impl Sized>> {
        self.shards.iter().map(|s| s.lock().unwrap_or_else(|e| e.into_inner())).collect()
    }

    /// A new connection from `ip`: a ticket while it handshakes, or why not.
    pub fn admit(self: &Arc<Self>, ip: IpAddr) -> Result<Ticket, Refusal> {
        let ip = ip.to_canonical();
        let mut shard = self.shard(ip);
        let src = shard.entry(ip).or_insert_with(|| Source { tokens: self.burst(), ..Source::default() });
        let refusal = if src.open + src.handshaking >= self.connections.load(Ordering::Relaxed) {
            Some(Refusal::Connections)
        } else if src.handshaking >= self.handshakes.load(Ordering::Relaxed) {
            Some(Refusal::Handshakes)
        } else {
            None
        };
        if let Some(r) = refusal {
            let counter = if r == Refusal::Connections { &self.refused_connections } else { &self.refused_handshakes };
            counter.fetch_add(1, Ordering::Relaxed);
            return Err(r);
        }
        src.handshaking += 1;
        Ok(Ticket { limits: self.clone(), ip, upgraded: false })
    }

    /// Takes one token for a SIP request from `ip` at `now`; false when the source is over
    /// its rate (the caller answers 503 or drops).
    pub fn take_request(&self, ip: IpAddr, now: Instant) -> bool {
        let ip = ip.to_canonical();
        let now_ms = now.saturating_duration_since(self.epoch).as_millis() as u64;
        let mut shard = self.shard(ip);
        let src = shard.entry(ip).or_insert_with(|| Source { tokens: self.burst(), refilled_ms: now_ms, ..Source::default() });
        let elapsed = now_ms.saturating_sub(src.refilled_ms) as f64 / 1000.0;
        src.tokens = (src.tokens + elapsed * self.rate()).min(self.burst());
        src.refilled_ms = now_ms;
        if src.tokens >= 1.0 {
            src.tokens -= 1.0;
            true
        } else {
            self.throttled.fetch_add(1, Ordering::Relaxed);
            false
        }
    }

    /// Seconds until a throttled source has a token again, for Retry-After (at least 1).
    pub fn retry_after(&self) -> u64 {
        (1.0 / self.rate()).ceil().max(1.0) as u64
    }

    /// Forgets sources with no connection whose bucket has refilled (call now and then).
    pub fn sweep(&self, now: Instant) {
        let now_ms = now.saturating_duration_since(self.epoch).as_millis() as u64;
        let full_after_ms = (self.burst() / self.rate() * 1000.0).ceil() as u64;
        for shard in &self.shards {
            shard.lock().unwrap_or_else(|e| e.into_inner()).retain(|_, s| {
                s.open + s.handshaking > 0 || now_ms.saturating_sub(s.refilled_ms) < full_after_ms
            });
        }
    }

    /// The /metrics families of the web side's per-source limits.
    pub fn samples(&self) -> Vec<estuary_b2bua::Sample> {
        use estuary_b2bua::{MetricKind, Sample};
        let refused = |reason: &str, v: &AtomicU64| Sample {
            name: "estuary_ws_refused_total",
            help: "WebSocket connections closed at accept by a per-source limit, by limit.",
            kind: MetricKind::Counter,
            labels: vec![("reason", reason.to_owned())],
            value: v.load(Ordering::Relaxed),
        };
        vec![
            refused("connections_per_ip", &self.refused_connections),
            refused("handshakes_per_ip", &self.refused_handshakes),
            Sample {
                name: "estuary_requests_throttled_total",
                help: "SIP requests over limits.requests_per_second_per_ip: answered 503 with Retry-After, or dropped.",
                kind: MetricKind::Counter,
                labels: Vec::new(),
                value: self.throttled.load(Ordering::Relaxed),
            },
            Sample {
                name: "estuary_web_sources",
                help: "Browser source addresses tracked by the per-source limits.",
                kind: MetricKind::Gauge,
                labels: Vec::new(),
                value: self.sources() as u64,
            },
        ]
    }

    /// Sources tracked now (for tests and /metrics).
    pub fn sources(&self) -> usize {
        self.shards.iter().map(|s| s.lock().unwrap_or_else(|e| e.into_inner()).len()).sum()
    }

    fn release(&self, ip: IpAddr, upgraded: bool) {
        let mut shard = self.shard(ip);
        if let Some(src) = shard.get_mut(&ip) {
            if upgraded {
                src.open = src.open.saturating_sub(1);
            } else {
                src.handshaking = src.handshaking.saturating_sub(1);
            }
        }
    }
}

/// One connection's place in its source's counts: handshaking until [`Ticket::upgraded`],
/// open after; given back on drop.
pub struct Ticket {
    limits: Arc<SourceLimits>,
    ip: IpAddr,
    upgraded: bool,
}

impl Ticket {
    /// The handshake finished: the connection now counts as open.
    pub fn upgraded(&mut self) {
        if !self.upgraded {
            let mut shard = self.limits.shard(self.ip);
            if let Some(src) = shard.get_mut(&self.ip) {
                src.handshaking = src.handshaking.saturating_sub(1);
                src.open += 1;
            }
            self.upgraded = true;
        }
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        self.limits.release(self.ip, self.upgraded);
    }
}

/// How often the web side forgets idle sources.
pub const SWEEP_EVERY: Duration = Duration::from_secs(10);

/// At most one log line a second; says how many were held back since the last one.
struct QuietLog {
    epoch: Instant,
    /// Milliseconds since `epoch` of the last line, +1 (0 = never).
    last_ms: AtomicU64,
    suppressed: AtomicU64,
}

impl QuietLog {
    fn new() -> QuietLog {
        QuietLog { epoch: Instant::now(), last_ms: AtomicU64::new(0), suppressed: AtomicU64::new(0) }
    }

    /// `Some(lines held back)` when a line may be written now.
    fn may_log(&self) -> Option<u64> {
        self.may_log_at(self.epoch.elapsed().as_millis() as u64 + 1)
    }

    fn may_log_at(&self, now: u64) -> Option<u64> {
        let last = self.last_ms.load(Ordering::Relaxed);
        if last != 0 && now < last + 1000 {
            self.suppressed.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        // One writer wins the second; the others count as held back.
        if self.last_ms.compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed).is_err() {
            self.suppressed.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        Some(self.suppressed.swap(0, Ordering::Relaxed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_next_hop_is_trusted_by_default_and_a_list_replaces_it() {
        let hop: IpAddr = "192.0.2.10".parse().unwrap();
        let t = ImsTrust::new(&[], &[hop]);
        assert!(t.admits("192.0.2.10:5060".parse().unwrap(), "test"));
        assert!(!t.admits("192.0.2.11:5060".parse().unwrap(), "test"));
        let t = ImsTrust::new(&["198.51.100.0/28".parse().unwrap()], &[hop]);
        assert!(t.admits("198.51.100.15:5060".parse().unwrap(), "test"));
        assert!(!t.admits("198.51.100.16:5060".parse().unwrap(), "test"));
        assert!(!t.admits("192.0.2.10:5060".parse().unwrap(), "test"), "a configured list replaces the default");
        assert!(t.admits("[::ffff:198.51.100.1]:5060".parse().unwrap(), "test"), "dual-stack sockets report mapped addresses");
    }

    #[test]
    fn origins_are_checked_only_when_listed_and_the_own_page_always_passes() {
        let any = OriginPolicy::new(&[]);
        assert!(any.admits(Some("https://evil.example"), None));
        let p = OriginPolicy::new(&["https://webrtc.example.net".parse().unwrap()]);
        assert!(p.admits(Some("https://WEBRTC.example.net"), None));
        assert!(p.admits(Some("https://webrtc.example.net:443"), None));
        assert!(!p.admits(Some("https://evil.example"), None));
        assert!(!p.admits(Some("http://webrtc.example.net"), None), "scheme matters");
        assert!(!p.admits(Some("null"), None), "opaque origins are not listed origins");
        assert!(p.admits(Some("https://gw.example:8443"), Some("https://gw.example:8443")), "the demo page's own origin");
        assert!(!p.admits(Some("https://evil.example"), Some("https://gw.example:8443")));
        assert!(p.admits(None, None), "non-browser clients send no Origin");
    }

    fn limits(per_ip: usize, handshakes: usize, rate: u32, burst: u32) -> Arc<SourceLimits> {
        SourceLimits::new(&LimitsConfig {
            ws_connections_per_ip: per_ip,
            ws_handshakes_per_ip: handshakes,
            requests_per_second_per_ip: rate,
            request_burst_per_ip: burst,
            ..LimitsConfig::default()
        })
    }

    #[test]
    fn connections_and_handshakes_are_capped_per_source() {
        let l = limits(3, 2, 10, 10);
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        let mut t1 = l.admit(a).unwrap();
        let _t2 = l.admit(a).unwrap();
        assert_eq!(l.admit(a).err(), Some(Refusal::Handshakes), "two half-open already");
        t1.upgraded();
        let mut t3 = l.admit(a).unwrap();
        assert_eq!(l.admit(a).err(), Some(Refusal::Connections), "one open + two handshaking = 3");
        assert!(l.admit(b).is_ok(), "another source is not affected");
        t3.upgraded();
        drop(t1);
        assert!(l.admit(a).is_ok(), "a closed connection gives its place back");
        assert_eq!((l.refused_connections.load(Ordering::Relaxed), l.refused_handshakes.load(Ordering::Relaxed)), (1, 1));
    }

    #[test]
    fn the_request_bucket_allows_a_burst_then_the_rate() {
        let l = limits(10, 10, 10, 20);
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let t0 = l.epoch + Duration::from_secs(1);
        let granted = (0..100).filter(|_| l.take_request(a, t0)).count();
        assert_eq!(granted, 20, "the burst");
        assert!(l.take_request("192.0.2.2".parse().unwrap(), t0), "other sources have their own bucket");
        // One second later: ten more.
        let t1 = t0 + Duration::from_secs(1);
        assert_eq!((0..100).filter(|_| l.take_request(a, t1)).count(), 10);
        assert_eq!(l.throttled.load(Ordering::Relaxed), 170);
        // Refilled and no connection: forgotten by the sweep; a connected source is kept.
        let _t = l.admit("192.0.2.3".parse().unwrap()).unwrap();
        l.sweep(t1 + Duration::from_secs(3));
        assert_eq!(l.sources(), 1);
        assert_eq!(l.retry_after(), 1);
    }

    #[test]
    fn the_quiet_log_speaks_once_a_second_and_counts_the_rest() {
        let q = QuietLog::new();
        assert_eq!(q.may_log_at(1), Some(0));
        assert_eq!(q.may_log_at(2), None);
        assert_eq!(q.may_log_at(1000), None);
        assert_eq!(q.may_log_at(1001), Some(2));
        assert_eq!(q.may_log_at(1500), None);
        assert_eq!(q.may_log_at(9000), Some(1));
    }
}
