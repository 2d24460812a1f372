//! `bare_relay`: the floor under any relay on this machine. For each call it forwards every
//! datagram the browser sends to the core and every datagram the core sends to the browser,
//! and does nothing else: no parsing, no crypto, no timers, one thread. What it costs per
//! packet is what the kernel charges for receiving and sending one datagram on loopback
//! (including the receiver's wake-up), which no relay can go below.
//!
//! Two socket structures (`--mode`):
//! - `epoll`: per call one socket toward the browser and one toward the core, as Estuary and
//!   rtpengine have; `epoll_wait`, then one `recvfrom` and one `sendto` per packet.
//! - `mmsg`: one shared socket receives everything with `recvmmsg` (up to 64 datagrams per
//!   call), the flow is found by the source address, and each packet is sent from that
//!   call's own socket toward the other end.
//!
//! Driven over stdin/stdout by `estuary_bench::bare`: it prints `waiting`; reads one line
//! per call, `BROWSER_ADDR CORE_ADDR` (where each end sends from), then `end`; binds, prints
//! `pair FOR_BROWSER FOR_CORE` per call (where each end must send to) and `ready`; relays
//! until SIGTERM or SIGINT, until its stdin closes, or for `--max-seconds` (default 1800),
//! and prints `relayed N` on stderr.

use std::collections::HashMap;
use std::io::{BufRead, Write};
use std::net::{SocketAddrV4, UdpSocket};
use std::os::fd::AsRawFd;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    STOP.store(true, Ordering::Relaxed);
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    Epoll,
    Mmsg,
}

/// One call: where its two ends are and the two sockets facing them.
struct Flow {
    browser: libc::sockaddr_in,
    core: libc::sockaddr_in,
    /// Faces the browser: receives its packets (epoll mode) and sends the core's to it.
    web: UdpSocket,
    /// Faces the core.
    ims: UdpSocket,
}

const BATCH: usize = 64;
const MAX_DATAGRAM: usize = 2048;
/// How often a blocked wait wakes to look at the stop conditions.
const WAKE_MS: i32 = 200;

fn main() -> ExitCode {
    match run() {
        Ok(n) => {
            eprintln!("relayed {n}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("bare_relay: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<u64, String> {
    let mut mode = Mode::Epoll;
    let mut max = Duration::from_secs(1800);
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match (a.as_str(), args.next()) {
            ("--mode", Some(m)) if m == "epoll" => mode = Mode::Epoll,
            ("--mode", Some(m)) if m == "mmsg" => mode = Mode::Mmsg,
            ("--max-seconds", Some(s)) => max = Duration::from_secs(s.parse().map_err(|_| format!("--max-seconds {s}"))?),
            _ => return Err("usage: bare_relay [--mode epoll|mmsg] [--max-seconds N]".into()),
        }
    }
    // SAFETY: installing a handler that only stores to an atomic (async-signal-safe).
    unsafe {
        libc::signal(libc::SIGTERM, on_signal as *const () as libc::sighandler_t);
        libc::signal(libc::SIGINT, on_signal as *const () as libc::sighandler_t);
    }
    let mut out = std::io::stdout().lock();
    writeln!(out, "waiting").and_then(|()| out.flush()).map_err(|e| e.to_string())?;

    let mut lines = std::io::stdin().lock().lines();
    let mut flows = Vec::new();
    for line in lines.by_ref() {
        let line = line.map_err(|e| e.to_string())?;
        if line.trim() == "end" {
            break;
        }
        let mut w = line.split_whitespace();
        let (Some(b), Some(c)) = (w.next().and_then(|a| a.parse().ok()), w.next().and_then(|a| a.parse().ok())) else {
            return Err(format!("not `BROWSER_ADDR CORE_ADDR`: {line:?}"));
        };
        let bind = || UdpSocket::bind("127.0.0.1:0").map_err(|e| format!("bind: {e}"));
        flows.push(Flow { browser: sockaddr(b), core: sockaddr(c), web: bind()?, ims: bind()? });
    }
    let shared = match mode {
        Mode::Mmsg => Some(shared_socket()?),
        Mode::Epoll => None,
    };
    for f in &flows {
        let addr = |s: &UdpSocket| s.local_addr().map_err(|e| e.to_string());
        let (for_browser, for_core) = match &shared {
            Some(s) => (addr(s)?, addr(s)?),
            None => (addr(&f.web)?, addr(&f.ims)?),
        };
        writeln!(out, "pair {for_browser} {for_core}").map_err(|e| e.to_string())?;
    }
    writeln!(out, "ready").and_then(|()| out.flush()).map_err(|e| e.to_string())?;
    drop(out);
    // The driver closing our stdin (or dying) stops us. (The lock is taken again there: the
    // buffer behind it is the process's, so nothing read ahead is lost.)
    drop(lines);
    std::thread::spawn(|| {
        for _ in std::io::stdin().lock().lines() {}
        STOP.store(true, Ordering::Relaxed);
    });

    let deadline = Instant::now() + max;
    match shared {
        None => relay_epoll(&flows, deadline),
        Some(s) => relay_mmsg(&s, &flows, deadline),
    }
}

fn sockaddr(a: SocketAddrV4) -> libc::sockaddr_in {
    libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: a.port().to_be(),
        sin_addr: libc::in_addr { s_addr: u32::from_ne_bytes(a.ip().octets()) },
        sin_zero: [0; 8],
    }
}

/// The shared receiving socket of `mmsg` mode: a large receive buffer (every call's packets
/// queue here), and a receive timeout so the loop sees the stop conditions.
fn shared_socket() -> Result<UdpSocket, String> {
    let s = UdpSocket::bind("127.0.0.1:0").map_err(|e| format!("bind: {e}"))?;
    let fd = s.as_raw_fd();
    let size: libc::c_int = 8 << 20;
    let tv = libc::timeval { tv_sec: 0, tv_usec: libc::suseconds_t::from(WAKE_MS) * 1000 };
    // SAFETY: setsockopt on a socket we own with option values of the sizes passed.
    unsafe {
        let p = &size as *const libc::c_int as *const libc::c_void;
        let n = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
        // Past net.core.rmem_max needs CAP_NET_ADMIN (root here); otherwise the capped size.
        if libc::setsockopt(fd, libc::SOL_SOCKET, libc::SO_RCVBUFFORCE, p, n) != 0 {
            libc::setsockopt(fd, libc::SOL_SOCKET, libc::SO_RCVBUF, p, n);
        }
        let t = &tv as *const libc::timeval as *const libc::c_void;
        if libc::setsockopt(fd, libc::SOL_SOCKET, libc::SO_RCVTIMEO, t, std::mem::size_of::<libc::timeval>() as libc::socklen_t) != 0 {
            return Err("SO_RCVTIMEO".into());
        }
    }
    Ok(s)
}

fn send(fd: libc::c_int, buf: &[u8], to: &libc::sockaddr_in) -> bool {
    // SAFETY: `buf` and `to` are valid for the lengths given.
    let r = unsafe {
        libc::sendto(fd, buf.as_ptr() as *const libc::c_void, buf.len(), 0, to as *const libc::sockaddr_in as *const libc::sockaddr, std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t)
    };
    r >= 0
}

/// Per-flow sockets: each readable socket gives one datagram, sent on from its twin.
fn relay_epoll(flows: &[Flow], deadline: Instant) -> Result<u64, String> {
    // SAFETY: plain system calls on descriptors we own; `events` and `buf` outlive the calls
    // that write into them, with their real lengths passed.
    unsafe {
        let ep = libc::epoll_create1(libc::EPOLL_CLOEXEC);
        if ep < 0 {
            return Err("epoll_create1".into());
        }
        for (i, f) in flows.iter().enumerate() {
            for (side, s) in [(0u64, &f.web), (1, &f.ims)] {
                s.set_nonblocking(true).map_err(|e| e.to_string())?;
                let mut ev = libc::epoll_event { events: libc::EPOLLIN as u32, u64: (i as u64) << 1 | side };
                if libc::epoll_ctl(ep, libc::EPOLL_CTL_ADD, s.as_raw_fd(), &mut ev) != 0 {
                    return Err("epoll_ctl".into());
                }
            }
        }
        let mut events = vec![libc::epoll_event { events: 0, u64: 0 }; 256];
        let mut buf = [0u8; MAX_DATAGRAM];
        let mut relayed = 0u64;
        while !STOP.load(Ordering::Relaxed) && Instant::now() < deadline {
            let n = libc::epoll_wait(ep, events.as_mut_ptr(), events.len() as libc::c_int, WAKE_MS);
            for e in events.iter().take(n.max(0) as usize) {
                let data = e.u64;
                let f = &flows[(data >> 1) as usize];
                let (from, to, dest) = if data & 1 == 0 { (&f.web, &f.ims, &f.core) } else { (&f.ims, &f.web, &f.browser) };
                let mut src: libc::sockaddr_in = std::mem::zeroed();
                let mut len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
                let r = libc::recvfrom(from.as_raw_fd(), buf.as_mut_ptr() as *mut libc::c_void, buf.len(), 0, &mut src as *mut libc::sockaddr_in as *mut libc::sockaddr, &mut len);
                if r > 0 && send(to.as_raw_fd(), &buf[..r as usize], dest) {
                    relayed += 1;
                }
            }
        }
        libc::close(ep);
        Ok(relayed)
    }
}

/// One shared receiving socket drained with recvmmsg; the source address names the flow and
/// the direction, the packet leaves from that flow's socket facing the other end.
fn relay_mmsg(shared: &UdpSocket, flows: &[Flow], deadline: Instant) -> Result<u64, String> {
    let key = |a: &libc::sockaddr_in| (u64::from(a.sin_addr.s_addr) << 16) | u64::from(a.sin_port);
    let mut route: HashMap<u64, (libc::c_int, libc::sockaddr_in)> = HashMap::with_capacity(flows.len() * 2);
    for f in flows {
        route.insert(key(&f.browser), (f.ims.as_raw_fd(), f.core));
        route.insert(key(&f.core), (f.web.as_raw_fd(), f.browser));
    }
    let mut bufs = vec![[0u8; MAX_DATAGRAM]; BATCH];
    // SAFETY: zeroed sockaddr_in, iovec and mmsghdr are valid values (plain C structs).
    let mut names: Vec<libc::sockaddr_in> = vec![unsafe { std::mem::zeroed() }; BATCH];
    let mut iovs: Vec<libc::iovec> = bufs.iter_mut().map(|b| libc::iovec { iov_base: b.as_mut_ptr() as *mut libc::c_void, iov_len: MAX_DATAGRAM }).collect();
    let mut msgs: Vec<libc::mmsghdr> = vec![unsafe { std::mem::zeroed() }; BATCH];
    let mut relayed = 0u64;
    while !STOP.load(Ordering::Relaxed) && Instant::now() < deadline {
        for i in 0..BATCH {
            msgs[i].msg_hdr.msg_name = &mut names[i] as *mut libc::sockaddr_in as *mut libc::c_void;
            msgs[i].msg_hdr.msg_namelen = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
            msgs[i].msg_hdr.msg_iov = &mut iovs[i];
            msgs[i].msg_hdr.msg_iovlen = 1;
            msgs[i].msg_len = 0;
        }
        // SAFETY: every header points into `names`, `iovs` and `bufs`, alive and unmoved for
        // the call; blocks until one datagram (then takes what else is queued) or the timeout.
        let n = unsafe { libc::recvmmsg(shared.as_raw_fd(), msgs.as_mut_ptr(), BATCH as libc::c_uint, libc::MSG_WAITFORONE, std::ptr::null_mut()) };
        for i in 0..n.max(0) as usize {
            if let Some((fd, dest)) = route.get(&key(&names[i])) {
                if send(*fd, &bufs[i][..msgs[i].msg_len as usize], dest) {
                    relayed += 1;
                }
            }
        }
    }
    Ok(relayed)
}
