//! The media ports the daemon holds bound: bind before announce.
//!
//! The engine puts in SDP only ports it was granted ([`estuary_b2bua::B2bua::grant_ports`]),
//! and the engine task grants only ports bound here: an RTP socket on each even port `p` and
//! an RTCP socket on `p + 1`, on every media address (`media.web_address`, and
//! `media.ims_address` when it differs). A pair that another process holds is skipped and
//! counted, and tried again only once the rest of the range is used up.
//!
//! The sockets stay here between calls. A call's media thread takes those of its plan when
//! the call starts and puts them back when it ends; while a port rests in the engine's quarantine, what
//! the old far end still sends waits in the socket and is discarded at the next take. Binding
//! and taking lock one mutex, at call set-up and end only; packets never touch it.

use std::collections::HashMap;
use std::io::ErrorKind;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use estuary_b2bua::{MetricKind, Sample};
use tracing::{error, warn};

/// How often pairs found held by another process are tried again once the range is used up.
const RETRY_HELD: Duration = Duration::from_secs(10);

/// Even ports from `min` (rounded up) whose RTCP port `p + 1` is still `<= max`.
pub fn even_ports(min: u16, max: u16) -> std::iter::StepBy<std::ops::RangeInclusive<u16>> {
    let first = min.saturating_add(min % 2);
    let last = if max % 2 == 1 { max - 1 } else { max.saturating_sub(2) };
    // An empty range when first > last.
    (first..=last).step_by(2)
}

pub struct MediaPorts {
    addrs: Vec<IpAddr>,
    inner: Mutex<Inner>,
    skipped: AtomicU64,
}

struct Inner {
    /// Pairs never tried yet.
    untried: std::iter::StepBy<std::ops::RangeInclusive<u16>>,
    /// Pairs another process held when tried, and when they may be tried again.
    held: Vec<u16>,
    /// Held pairs being tried again in this batch.
    retrying: Vec<u16>,
    retry_held_at: Option<Instant>,
    /// Bound and not taken by a call, by local address.
    idle: HashMap<SocketAddr, UdpSocket>,
}

/// A bind that failed for another reason than the port being in use: the configuration is
/// wrong (an address that is not this host's, a privileged port), not the moment.
#[derive(Debug)]
pub struct BindError {
    pub key: &'static str,
    pub addr: SocketAddr,
    pub error: std::io::Error,
}

impl std::fmt::Display for BindError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "cannot bind media port {}: {}", self.addr, self.error)
    }
}

impl MediaPorts {
    pub fn new(media: &estuary_config::MediaConfig) -> MediaPorts {
        let mut addrs = vec![media.web_address];
        if media.ims_address != media.web_address {
            addrs.push(media.ims_address);
        }
        MediaPorts {
            addrs,
            inner: Mutex::new(Inner {
                untried: even_ports(media.ports.min, media.ports.max),
                held: Vec::new(),
                retrying: Vec::new(),
                retry_held_at: None,
                idle: HashMap::new(),
            }),
            skipped: AtomicU64::new(0),
        }
    }

    /// Binds up to `want` more pairs and returns their RTP ports, to grant to the engine.
    /// Fewer when the range is used up; an error only for a bind that failed for another
    /// reason than a port in use, with the pairs bound before it.
    pub fn bind(&self, want: usize, now: Instant) -> (Vec<u16>, Option<BindError>) {
        let mut inner = self.lock();
        let mut out = Vec::with_capacity(want);
        let mut skipped = Vec::new();
        let mut error = None;
        while out.len() < want {
            let (port, first_try) = if let Some(p) = inner.untried.next() {
                (p, true)
            } else if let Some(p) = inner.retrying.pop() {
                (p, false)
            } else if !inner.held.is_empty() && inner.retry_held_at.is_none_or(|t| now >= t) {
                // The range is used up: maybe the holders of the skipped pairs let them go.
                inner.retrying = std::mem::take(&mut inner.held);
                inner.retry_held_at = Some(now + RETRY_HELD);
                continue;
            } else {
                break;
            };
            match self.bind_pair(port) {
                Ok(socks) => {
                    inner.idle.extend(socks);
                    out.push(port);
                }
                Err(e) => {
                    inner.held.push(port);
                    if !held(&e.error) {
                        error = Some(e);
                        break;
                    }
                    if first_try {
                        skipped.push(port);
                    }
                }
            }
        }
        let retrying = std::mem::take(&mut inner.retrying);
        inner.held.extend(retrying);
        drop(inner);
        if !skipped.is_empty() {
            self.skipped.fetch_add(skipped.len() as u64, Ordering::Relaxed);
            warn!(ports = ?skipped, "media ports held by another process: skipped (estuary_media_ports_skipped_total)");
        }
        (out, error)
    }

    /// Both sockets of pair `port` on every media address, or none.
    fn bind_pair(&self, port: u16) -> Result<Vec<(SocketAddr, UdpSocket)>, BindError> {
        let mut socks = Vec::with_capacity(2 * self.addrs.len());
        for (i, ip) in self.addrs.iter().enumerate() {
            let key = if i == 0 { "media.web_address" } else { "media.ims_address" };
            for p in [port, port + 1] {
                let addr = SocketAddr::new(*ip, p);
                let sock = UdpSocket::bind(addr)
                    .and_then(|s| s.set_nonblocking(true).map(|()| s))
                    .map_err(|error| BindError { key, addr, error })?;
                socks.push((addr, sock));
            }
        }
        Ok(socks)
    }

    /// The bound socket for `addr`, emptied of what waited in it since its last call. `None`
    /// when `addr` is not one of the granted ports.
    pub fn take(&self, addr: SocketAddr) -> Option<UdpSocket> {
        let sock = self.lock().idle.remove(&addr)?;
        let mut scratch = [0u8; 64];
        // Late packets of the port's previous call: never the next call's.
        while sock.recv_from(&mut scratch).is_ok() {}
        Some(sock)
    }

    /// A media thread is done with `sock`; the engine will grant its port again.
    pub fn put_back(&self, addr: SocketAddr, sock: UdpSocket) {
        self.lock().idle.insert(addr, sock);
    }

    /// Pairs skipped because another process held them.
    pub fn skipped(&self) -> u64 {
        self.skipped.load(Ordering::Relaxed)
    }

    pub fn samples(&self) -> Vec<Sample> {
        let inner = self.lock();
        vec![
            Sample {
                name: "estuary_media_ports_skipped_total",
                help: "Media port pairs skipped because another process held one of their ports",
                kind: MetricKind::Counter,
                labels: Vec::new(),
                value: self.skipped(),
            },
            Sample {
                name: "estuary_media_ports_unbound",
                help: "Media port pairs in media.port_min..port_max not bound yet (bound as calls need them)",
                kind: MetricKind::Gauge,
                labels: Vec::new(),
                value: (inner.untried.len() + inner.held.len()) as u64,
            },
        ]
    }

    /// TEST: the pool's lock, held until the guard drops (the media threads' no-lock test).
    #[cfg(test)]
    pub fn hold(&self) -> std::sync::MutexGuard<'_, impl Sized> {
        self.lock()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // Nothing panics while holding it; if something did, the map is still consistent.
        self.inner.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// The port is someone else's: skip it.
fn held(e: &std::io::Error) -> bool {
    e.kind() == ErrorKind::AddrInUse
}

/// Logs a bind error at most once a minute (at start-up the caller fails on the first one).
pub fn log_bind_error(e: &BindError, last: &mut Option<Instant>, now: Instant) {
    if last.is_none_or(|t| now >= t + Duration::from_secs(60)) {
        *last = Some(now);
        error!(key = e.key, addr = %e.addr, error = %e.error, "cannot bind media ports; calls will be refused when the bound ones run out");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(min: u16, max: u16) -> estuary_config::MediaConfig {
        let mut m = estuary_config::Config::default().media;
        m.ports = estuary_config::PortRange { min, max };
        m
    }

    #[test]
    fn even_ports_keep_their_rtcp_port_in_range() {
        assert_eq!(even_ports(20001, 20007).collect::<Vec<_>>(), [20002, 20004, 20006]);
        assert_eq!(even_ports(20000, 20006).collect::<Vec<_>>(), [20000, 20002, 20004]);
        assert_eq!(even_ports(20000, 20000).count(), 0);
    }

    #[test]
    fn a_pair_another_process_holds_is_skipped_counted_and_retried_later() {
        // A free stretch of ports: what the kernel hands out for port 0 is free, its
        // neighbours most likely too; retry the test setup until a whole stretch is ours.
        let (base, blocker) = (0..50)
            .find_map(|_| {
                let probe = UdpSocket::bind("127.0.0.1:0").ok()?;
                let p = probe.local_addr().ok()?.port();
                let base = p.checked_add(p % 2)?.checked_add(2)?;
                drop(probe);
                // Hold the RTCP port of the second pair.
                let blocker = UdpSocket::bind(("127.0.0.1", base + 3)).ok()?;
                Some((base, blocker))
            })
            .expect("a free stretch of loopback ports");
        let ports = MediaPorts::new(&settings(base, base + 5));
        let unbound = |p: &MediaPorts| p.samples().iter().find(|s| s.name == "estuary_media_ports_unbound").map(|s| s.value);
        assert_eq!(unbound(&ports), Some(3));
        let t0 = Instant::now();
        let (got, err) = ports.bind(10, t0);
        assert!(err.is_none(), "{err:?}");
        assert_eq!(got, [base, base + 4], "the held pair is skipped");
        assert_eq!(ports.skipped(), 1);
        assert_eq!(unbound(&ports), Some(1), "the held pair is still to be bound");
        let addr = SocketAddr::from(([127, 0, 0, 1], base + 4));
        assert!(UdpSocket::bind(addr).is_err(), "granted ports are bound");
        assert!(UdpSocket::bind(("127.0.0.1", base + 2)).is_ok(), "a skipped pair is not half-held");
        // Taken, used, put back: what waited in it is gone at the next take.
        let sock = ports.take(addr).unwrap();
        UdpSocket::bind("127.0.0.1:0").unwrap().send_to(b"late", addr).unwrap();
        std::thread::sleep(Duration::from_millis(20));
        ports.put_back(addr, sock);
        let sock = ports.take(addr).unwrap();
        let mut b = [0u8; 8];
        assert!(sock.recv_from(&mut b).is_err(), "a late packet of the last call was drained");
        // The range is used up: the held pair was tried again at once, and is again only
        // after RETRY_HELD, by when its holder let go.
        drop(blocker);
        assert_eq!(ports.bind(10, t0).0, Vec::<u16>::new());
        assert_eq!(ports.bind(10, t0 + RETRY_HELD).0, [base + 2]);
        assert_eq!(ports.bind(10, t0 + 2 * RETRY_HELD).0, Vec::<u16>::new());
        assert_eq!(ports.skipped(), 1, "counted once, when first found held");
    }
}
