//! The kernel floor of the relay benchmark: the same calls, packet sizes and rate as
//! [`crate::load`] through `bare_relay` (src/bin/bare_relay.rs), which only receives and sends
//! datagrams.
//!
//! There is no signalling and no ICE, DTLS or SRTP: the generator binds each call's browser
//! and core sockets, tells the relay where they are (as SDP would tell a relay where the core
//! is), learns from it where to send, and each end then sends 20 ms packets of the size it
//! sends to Estuary (a browser's SRTP G.711 packet is 182 bytes, the core's RTP 172), at 50
//! packets per second, each call starting at a random point of the 20 ms period as calls set
//! up one after another do. The relay's CPU time and memory come from /proc exactly as the
//! daemon's do, over the same warm-up, idle pause and window ([`crate::load::measure`]).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::Ordering;
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use rand::Rng;
use tokio::net::UdpSocket;
use tokio::sync::watch;
use tokio::time::MissedTickBehavior;

use crate::load::{measure, parts, sample_groups, Load, Measured, Totals, PTIME};
use crate::{die_with_parent, sample, ChildGuard};

/// Bytes per packet: a browser's SRTP PCMU packet (12 header + 160 payload + 10 tag) and the
/// core's RTP one.
const WEB_PACKET: usize = 182;
const IMS_PACKET: usize = 172;
/// How long the relay gets to answer each step of its start.
const START_LIMIT: Duration = Duration::from_secs(20);

/// How `bare_relay` holds its sockets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Structure {
    /// A socket per call and side, epoll, recvfrom + sendto per packet.
    Epoll,
    /// One shared receiving socket read with recvmmsg, sending from each call's own sockets.
    Mmsg,
}

impl Structure {
    /// The name used in tables and JSON.
    pub fn name(self) -> &'static str {
        match self {
            Structure::Epoll => "bare_epoll",
            Structure::Mmsg => "bare_recvmmsg",
        }
    }

    fn arg(self) -> &'static str {
        match self {
            Structure::Epoll => "epoll",
            Structure::Mmsg => "mmsg",
        }
    }
}

/// `bare_relay` beside this executable, or `BARE_RELAY_BIN`.
fn binary() -> PathBuf {
    if let Some(p) = std::env::var_os("BARE_RELAY_BIN") {
        return PathBuf::from(p);
    }
    std::env::current_exe().ok().and_then(|e| Some(e.parent()?.join("bare_relay"))).unwrap_or_else(|| PathBuf::from("bare_relay"))
}

/// The relay's stdout, line by line, with a deadline per line.
struct Lines(mpsc::Receiver<String>);

impl Lines {
    fn follow(src: impl Read + Send + 'static) -> Lines {
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(src).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Lines(rx)
    }

    fn next(&self, what: &str) -> Result<String, String> {
        self.0.recv_timeout(START_LIMIT).map_err(|_| format!("bare_relay: no {what} within {START_LIMIT:?}"))
    }
}

/// `load.calls` calls through a `bare_relay` started for it with `structure`; the same
/// measuring sequence as [`crate::load::run_on`] (the idle pause when `idle` is set).
pub async fn run(load: &Load, structure: Structure, idle: Option<Duration>) -> Result<Measured, String> {
    let calls = load.calls;
    let bin = binary();
    let mut cmd = Command::new(&bin);
    die_with_parent(&mut cmd);
    let mut child = cmd
        .args(["--mode", structure.arg()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", bin.display()))?;
    let lines = Lines::follow(child.stdout.take().ok_or("bare_relay stdout")?);
    let errors = Lines::follow(child.stderr.take().ok_or("bare_relay stderr")?);
    let mut stdin = child.stdin.take().ok_or("bare_relay stdin")?;
    let guard = ChildGuard { child, grace: Duration::from_secs(2) };
    let pid = guard.pid();
    let expect = |want: &str| -> Result<(), String> {
        let l = lines.next(want)?;
        if l == want {
            Ok(())
        } else {
            Err(format!("bare_relay said {l:?} instead of {want:?}; stderr: {:?}", errors.0.try_iter().collect::<Vec<_>>()))
        }
    };
    expect("waiting")?;
    let groups = vec![(structure.name(), vec![pid])];
    let pss_idle = sample_groups(&groups);
    let rss_idle = sample(pid).map_err(|e| e.to_string())?.rss_bytes;

    // Each call's two ends, then where the relay wants them to send.
    let mut ends = Vec::new();
    let mut wire = String::new();
    for _ in 0..calls {
        let bind = || std::net::UdpSocket::bind("127.0.0.1:0").map_err(|e| format!("bind: {e}"));
        let (web, ims) = (bind()?, bind()?);
        let addr = |s: &std::net::UdpSocket| s.local_addr().map_err(|e| e.to_string());
        wire.push_str(&format!("{} {}\n", addr(&web)?, addr(&ims)?));
        ends.push((web, ims));
    }
    wire.push_str("end\n");
    stdin.write_all(wire.as_bytes()).and_then(|()| stdin.flush()).map_err(|e| format!("bare_relay stdin: {e}"))?;
    let mut targets = Vec::new();
    for _ in 0..calls {
        let l = lines.next("pair")?;
        let mut w = l.split_whitespace();
        let (Some("pair"), Some(b), Some(c)) = (w.next(), w.next().and_then(|a| a.parse::<SocketAddr>().ok()), w.next().and_then(|a| a.parse::<SocketAddr>().ok())) else {
            return Err(format!("bare_relay said {l:?} instead of a pair"));
        };
        targets.push((b, c));
    }
    expect("ready")?;

    let totals = Arc::new(Totals::default());
    let (stop_tx, stop) = watch::channel(false);
    let started = Instant::now();
    for ((web, ims), (to_relay_web, to_relay_ims)) in ends.into_iter().zip(targets) {
        for (sock, to, side) in [(web, to_relay_web, Side::Web), (ims, to_relay_ims, Side::Ims)] {
            sock.set_nonblocking(true).map_err(|e| e.to_string())?;
            let sock = UdpSocket::from_std(sock).map_err(|e| e.to_string())?;
            tokio::spawn(end(sock, to, side, totals.clone(), stop.clone()));
        }
        totals.ready.fetch_add(1, Ordering::Relaxed);
    }
    let setup = started.elapsed();
    let w = measure(&|| groups.clone(), &totals, idle, load.window).await;
    let loaded = sample(pid).map_err(|e| e.to_string())?;
    let parts = parts(&groups, &pss_idle, &w, None);
    let _ = stop_tx.send(true);
    drop(stdin);
    drop(guard);
    let log_tail = errors.0.try_iter().collect::<Vec<_>>().join("\n");
    Ok(Measured {
        pid,
        calls_up: calls,
        calls_asked: calls,
        setup,
        window: w.wall,
        delivered: w.delivered,
        sent: w.sent,
        daemon_cpu: w.cpu.iter().sum(),
        rss_idle,
        rss_loaded: loaded.rss_bytes,
        srtp_failures: 0,
        web_delivered: w.web_delivered,
        ims_dropped: 0,
        web_seq_gaps: 0,
        web_ts_jumps: 0,
        concealed: None,
        transcoded_frames: None,
        rss_peak: loaded.rss_bytes,
        flood: None,
        counters: Vec::new(),
        healthz: 0,
        panicked: false,
        log_tail,
        parts,
        idle_window: w.idle.as_ref().map(|(d, _)| *d),
        phases: Vec::new(),
    })
}

#[derive(Clone, Copy)]
enum Side {
    Web,
    Ims,
}

/// One end of one call: a packet every 20 ms (none while paused) from a random phase, and
/// counts what comes back.
async fn end(sock: UdpSocket, to: SocketAddr, side: Side, totals: Arc<Totals>, mut stop: watch::Receiver<bool>) {
    let size = match side {
        Side::Web => WEB_PACKET,
        Side::Ims => IMS_PACKET,
    };
    let phase = Duration::from_micros(rand::rng().random_range(0..PTIME.as_micros() as u64));
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + phase, PTIME);
    tick.set_missed_tick_behavior(MissedTickBehavior::Skip);
    // An RTP-shaped packet (version 2, PCMU); the relay never looks at it.
    let mut out = vec![0u8; size];
    out[0] = 0x80;
    let mut seq = rand::random::<u16>();
    let mut buf = [0u8; 2048];
    let (tx, rx) = match side {
        Side::Web => (&totals.web_tx, &totals.web_rx),
        Side::Ims => (&totals.ims_tx, &totals.ims_rx),
    };
    loop {
        tokio::select! {
            r = sock.recv_from(&mut buf) => if r.is_ok() {
                rx.fetch_add(1, Ordering::Relaxed);
            },
            _ = tick.tick() => {
                if totals.paused.load(Ordering::Relaxed) {
                    continue;
                }
                out[2..4].copy_from_slice(&seq.to_be_bytes());
                seq = seq.wrapping_add(1);
                if sock.send_to(&out, to).await.is_ok() {
                    tx.fetch_add(1, Ordering::Relaxed);
                }
            }
            _ = stop.changed() => return,
        }
    }
}
