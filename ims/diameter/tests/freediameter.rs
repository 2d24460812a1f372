//! Base-protocol interoperability with a real, independent implementation: freeDiameter's
//! daemon (Debian package `freediameter`, binary `freeDiameterd`), driven over real TCP with
//! a real clock.
//!
//! freeDiameterd runs in a fresh network namespace (`unshare --net --pid --fork
//! --kill-child`): it binds whatever it is told to, and a namespace keeps it off the host's
//! port 3868. Only dedicated threads of this test join that namespace (`setns` on a thread
//! affects that thread alone) and open TCP connections there.
//!
//! Two of our peers connect at once, as two Diameter identities with opposite watchdog
//! roles (RFC 3539 timers reset on every received message on both sides, so whichever side
//! has the shorter Tw sends all the DWRs; splitting the roles makes each direction certain):
//!
//! * `alpha` (our Tw 30 s, freeDiameter's Tw 6 s): CER/CEA, an Rx AAR freeDiameter has no
//!   handler for (it must still answer it), freeDiameter's DWRs answered by us, then our
//!   `disconnect(Rebooting)`: DPR/DPA.
//! * `beta` (our Tw 6 s, freeDiameter's Tw 30 s for this identity): our DWRs answered by
//!   freeDiameter, then freeDiameterd is stopped with SIGTERM and sends us DPR: we answer DPA
//!   and report `PeerDisconnected`.
//!
//! `unshare`, `ip`, `openssl` and `freeDiameterd` are required (`make deps` installs them):
//! without them, or without the right to create a namespace, this test fails.

use std::fmt::Write as _;
use std::fs::{self, File};
use std::io::{ErrorKind, Read, Write};
use std::net::{IpAddr, Ipv4Addr, Shutdown, SocketAddr, TcpStream};
use std::os::fd::AsRawFd;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use estuary_diameter::dictionary::{self as dict, VENDOR_3GPP};
use estuary_diameter::message::{application, command};
use estuary_diameter::{
    frame_len, result_code, Application, Avp, DisconnectCause, DownReason, Message, Peer,
    PeerConfig, PeerEvent, PeerInfo, RequestId,
};
use rand::rngs::StdRng;
use rand::SeedableRng;

/// freeDiameterd's address inside its namespace. freeDiameter drops loopback addresses from
/// `ListenOn` (and from the local addresses it discovers), and refuses to start without a
/// non-loopback one for its CER/CEA Host-IP-Address, so the namespace's `lo` gets this
/// link-local address and `ListenOn` names it.
const FD_ADDR: Ipv4Addr = Ipv4Addr::new(169, 254, 77, 1);
const FD_PORT: u16 = 3868;
const FD_HOST: &str = "pcrf.fd.test";
const FD_REALM: &str = "fd.test";
/// freeDiameter's Tw (global; used for `alpha`).
const FD_TW_SECS: u64 = 6;
/// freeDiameter's Tw for `beta`, far above ours so that we send the DWRs.
const FD_TW_BETA_SECS: u64 = 30;

const OUR_REALM: &str = "estuary.test";
/// Receives freeDiameter's DWRs; sends the AAR; disconnects with DPR.
const ALPHA: &str = "alpha.estuary.test";
/// Sends DWRs; receives freeDiameter's DPR when the daemon stops.
const BETA: &str = "beta.estuary.test";

const RX: Application = Application::Auth {
    id: application::RX,
    vendor: Some(VENDOR_3GPP),
};

/// The real clock (the crate itself never reads it; its clippy.toml forbids that).
#[allow(clippy::disallowed_methods)]
fn now() -> Instant {
    Instant::now()
}

#[allow(clippy::disallowed_methods)]
fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(1_700_000_000)
}

// ---- tools and the daemon ----

/// The absolute path of `bin` on PATH (or in the sbin directories a non-login root shell may
/// lack).
fn find_tool(bin: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin", "/usr/bin", "/bin"].map(PathBuf::from))
        .map(|dir| dir.join(bin))
        .find(|p| {
            fs::metadata(p)
                .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
                .unwrap_or(false)
        })
}

struct Tools {
    unshare: PathBuf,
    ip: PathBuf,
    openssl: PathBuf,
    freediameterd: PathBuf,
}

fn require_tools() -> Tools {
    let wanted = [
        ("unshare", "util-linux"),
        ("ip", "iproute2"),
        ("openssl", "openssl"),
        ("freeDiameterd", "freediameter"),
    ];
    let found: Vec<Option<PathBuf>> = wanted.iter().map(|(bin, _)| find_tool(bin)).collect();
    let missing: Vec<String> = wanted
        .iter()
        .zip(&found)
        .filter(|(_, f)| f.is_none())
        .map(|((bin, package), _)| format!("{bin} (Debian package {package})"))
        .collect();
    assert!(
        missing.is_empty(),
        "the freeDiameter interop test needs these programs, which are missing: {}; \
         run `make deps` or `apt-get install -y {}`",
        missing.join(", "),
        wanted
            .iter()
            .zip(&found)
            .filter(|(_, f)| f.is_none())
            .map(|((_, package), _)| *package)
            .collect::<Vec<_>>()
            .join(" ")
    );
    let mut found = found.into_iter().map(Option::unwrap);
    Tools {
        unshare: found.next().unwrap(),
        ip: found.next().unwrap(),
        openssl: found.next().unwrap(),
        freediameterd: found.next().unwrap(),
    }
}

/// freeDiameterd's configuration.
///
/// * Relaying stays enabled (no `NoRelay`): freeDiameter then advertises the Relay
///   application (Auth-Application-Id 0xffffffff) in its CEA and skips its own
///   common-application check (it answers 5010 only with `NoRelay` and no application of ours
///   registered locally). Relay is what makes our Rx (16777236, vendor 10415) "common" on
///   our side too (`Application::is_served_by`, RFC 6733 §2.4). No Debian extension registers
///   an Rx handler (`app_*`/`test_app` are not packaged), so Relay is the only way to a CEA
///   2001 for an Rx-only peer.
/// * `dict_nasreq`, `dict_dcca` and `dict_dcca_3gpp` give freeDiameter the AA-Request command
///   and the 3GPP (Rx) AVPs, so it parses our AAR as a real PCRF-side stack would (a second
///   opinion on our vendor AVP encoding) before finding it has no handler for it.
/// * `TLS_Cred`/`TLS_CA` are mandatory even for plain TCP; `SecPort = 0` closes the TLS port.
///   `No_SCTP`: TCP only. `No_IPv6`: the namespace has no IPv6 address to offer.
/// * Each identity needs a `ConnectPeer` entry (unknown peers are refused with 3010). Such
///   an entry also makes freeDiameter connect out to it: `ConnectTo` our own address on
///   port 9, where nothing listens, so those attempts are refused at once, and `TcTimer`
///   keeps them rare. `No_TLS` allows the plain CER/CEA.
/// * `dbg_msg_dumps.fdx` 0x0080 logs every message in full into the daemon's log.
fn fd_config(dir: &Path) -> String {
    let cert = dir.join("cert.pem");
    let key = dir.join("key.pem");
    format!(
        r#"Identity = "{FD_HOST}";
Realm = "{FD_REALM}";
Port = {FD_PORT};
SecPort = 0;
No_SCTP;
No_IPv6;
ListenOn = "{FD_ADDR}";
TLS_Cred = "{cert}", "{key}";
TLS_CA = "{cert}";
TcTimer = 600;
TwTimer = {FD_TW_SECS};
LoadExtension = "dict_nasreq.fdx";
LoadExtension = "dict_dcca.fdx";
LoadExtension = "dict_dcca_3gpp.fdx";
LoadExtension = "dbg_msg_dumps.fdx" : "0x0080";
ConnectPeer = "{ALPHA}" {{ No_TLS; No_SCTP; ConnectTo = "{FD_ADDR}"; Port = 9; TcTimer = 600; }};
ConnectPeer = "{BETA}" {{ No_TLS; No_SCTP; ConnectTo = "{FD_ADDR}"; Port = 9; TcTimer = 600; TwTimer = {FD_TW_BETA_SECS}; }};
"#,
        cert = cert.display(),
        key = key.display(),
    )
}

/// freeDiameterd in its own network and PID namespace. Dropping it kills `unshare`, and
/// `--kill-child` takes the daemon with it.
struct Daemon {
    unshare: Child,
    /// freeDiameterd, as seen from our PID namespace (the child of `unshare`).
    pid: i32,
    dir: PathBuf,
    log: PathBuf,
}

impl Daemon {
    fn start(tools: &Tools) -> Daemon {
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("freediameter-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        // A throw-away self-signed certificate: freeDiameter insists on one even for TCP.
        let out = Command::new(&tools.openssl)
            .args(["req", "-x509", "-newkey", "ec", "-pkeyopt"])
            .arg("ec_paramgen_curve:P-256")
            .args(["-nodes", "-days", "2", "-subj"])
            .arg(format!("/CN={FD_HOST}"))
            .arg("-keyout")
            .arg(dir.join("key.pem"))
            .arg("-out")
            .arg(dir.join("cert.pem"))
            .output()
            .expect("run openssl");
        assert!(
            out.status.success(),
            "openssl could not make a test certificate: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let conf = dir.join("freeDiameter.conf");
        fs::write(&conf, fd_config(&dir)).unwrap();
        let log = dir.join("freeDiameterd.log");
        let log_file = File::create(&log).unwrap();
        let script = format!(
            "{ip} link set lo up && {ip} addr add {FD_ADDR}/32 dev lo && exec {fdd} -d -c {conf}",
            ip = tools.ip.display(),
            fdd = tools.freediameterd.display(),
            conf = conf.display(),
        );
        let mut cmd = Command::new(&tools.unshare);
        cmd.args(["--net", "--pid", "--fork", "--kill-child", "sh", "-c"])
            .arg(&script)
            .stdin(Stdio::null())
            .stdout(log_file.try_clone().unwrap())
            .stderr(log_file);
        // If this test process dies without running Drop (SIGKILL, abort), `unshare` dies
        // too, and with it the daemon.
        // SAFETY: prctl is async-signal-safe; nothing else runs between fork and exec.
        unsafe {
            cmd.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let unshare = cmd.spawn().expect("spawn unshare");
        let mut daemon = Daemon {
            unshare,
            pid: 0,
            dir,
            log,
        };
        daemon.pid = daemon.wait_listening(Duration::from_secs(15));
        daemon
    }

    /// Waits until the daemon (the child of `unshare`, after its `exec`) listens on
    /// FD_ADDR:FD_PORT, as its namespace's /proc/<pid>/net/tcp shows; returns its pid.
    fn wait_listening(&mut self, limit: Duration) -> i32 {
        let deadline = now() + limit;
        let upid = self.unshare.id();
        // 169.254.77.1:3868 as /proc/net/tcp prints it (address in network byte order read
        // as a little-endian word).
        let local = format!(
            "{:08X}:{:04X}",
            u32::from_le_bytes(FD_ADDR.octets()),
            FD_PORT
        );
        loop {
            if let Ok(Some(status)) = self.unshare.try_wait() {
                panic!(
                    "could not create the network namespace or start freeDiameterd in it \
                     (unshare exited with {status}); is this root (CAP_SYS_ADMIN)?\n{}",
                    self.log_tail(40)
                );
            }
            let children = fs::read_to_string(format!("/proc/{upid}/task/{upid}/children"))
                .unwrap_or_default();
            for child in children.split_whitespace() {
                let comm = fs::read_to_string(format!("/proc/{child}/comm")).unwrap_or_default();
                if comm.trim() != "freeDiameterd" {
                    continue;
                }
                let tcp = fs::read_to_string(format!("/proc/{child}/net/tcp")).unwrap_or_default();
                let listening = tcp.lines().skip(1).any(|line| {
                    let mut fields = line.split_whitespace().skip(1);
                    fields.next() == Some(local.as_str()) && fields.nth(1) == Some("0A")
                });
                if listening {
                    return child.parse().unwrap();
                }
            }
            assert!(
                now() < deadline,
                "freeDiameterd did not listen on {FD_ADDR}:{FD_PORT} within {limit:?}\n{}",
                self.log_tail(40)
            );
            thread::sleep(Duration::from_millis(50));
        }
    }

    fn log_text(&self) -> String {
        fs::read(&self.log)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    }

    fn log_tail(&self, lines: usize) -> String {
        let text = self.log_text();
        let all: Vec<&str> = text.lines().collect();
        let tail = all[all.len().saturating_sub(lines)..].join("\n");
        format!(
            "---- last {lines} lines of {} ----\n{tail}\n---- end of log ----",
            self.log.display()
        )
    }

    /// SIGTERM: freeDiameterd sends DPR to its open peers, then exits.
    fn terminate(&self) {
        // SAFETY: plain kill(2) on a pid we own.
        let rc = unsafe { libc::kill(self.pid, libc::SIGTERM) };
        assert_eq!(
            rc,
            0,
            "kill -TERM freeDiameterd: {}",
            std::io::Error::last_os_error()
        );
    }

    fn wait_exit(&mut self, limit: Duration) -> Option<ExitStatus> {
        let deadline = now() + limit;
        loop {
            if let Ok(Some(status)) = self.unshare.try_wait() {
                return Some(status);
            }
            if now() >= deadline {
                return None;
            }
            thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.unshare.kill();
        let _ = self.unshare.wait();
        if thread::panicking() {
            eprintln!("freeDiameter files kept in {}", self.dir.display());
        } else {
            let _ = fs::remove_dir_all(&self.dir);
        }
    }
}

/// Runs `f` on a new thread inside the network namespace of `pid`.
fn in_namespace<T: Send + 'static>(
    pid: i32,
    name: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> thread::JoinHandle<T> {
    thread::Builder::new()
        .name(name.to_string())
        .spawn(move || {
            let ns = format!("/proc/{pid}/ns/net");
            let file = File::open(&ns).unwrap_or_else(|e| panic!("open {ns}: {e}"));
            // SAFETY: setns on a valid descriptor; CLONE_NEWNET changes only this thread.
            let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
            assert_eq!(rc, 0, "setns({ns}): {}", std::io::Error::last_os_error());
            let mine = fs::read_link("/proc/thread-self/ns/net").unwrap();
            assert_eq!(
                mine,
                fs::read_link(&ns).unwrap(),
                "thread did not join {ns}"
            );
            f()
        })
        .unwrap()
}

// ---- the driver: the crate's run loop over a blocking TcpStream ----

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Dir {
    Out,
    In,
}

/// One message on the wire, as the tap decoded it.
#[derive(Clone, Debug)]
struct Wire {
    dir: Dir,
    at: Duration,
    command: u32,
    request: bool,
    error: bool,
    hop_by_hop: u32,
    result: Option<u32>,
    /// A decode failure, if our codec could not read it.
    fault: Option<String>,
    message: Option<Message>,
}

impl Wire {
    fn is(&self, dir: Dir, command: u32, request: bool) -> bool {
        self.dir == dir && self.command == command && self.request == request
    }

    fn label(&self) -> String {
        let name = match self.command {
            command::CAPABILITIES_EXCHANGE => "CE",
            command::DEVICE_WATCHDOG => "DW",
            command::DISCONNECT_PEER => "DP",
            command::AA => "AA",
            _ => "",
        };
        let mut s = format!(
            "{:.1}s {}{}{}",
            self.at.as_secs_f64(),
            if self.dir == Dir::Out { "→" } else { "←" },
            if name.is_empty() {
                self.command.to_string()
            } else {
                name.to_string()
            },
            if self.request { "R" } else { "A" },
        );
        if let Some(code) = self.result {
            let _ = write!(s, "[{code}]");
        }
        if self.error {
            s.push_str("(E)");
        }
        if let Some(fault) = &self.fault {
            let _ = write!(s, "<undecodable: {fault}>");
        }
        s
    }
}

struct Driver {
    name: &'static str,
    peer: Peer,
    addr: SocketAddr,
    stream: Option<TcpStream>,
    start: Instant,
    wire: Vec<Wire>,
    /// Received bytes not yet cut into whole messages by the tap.
    tap: Vec<u8>,
    events: Vec<(Duration, PeerEvent)>,
}

/// Fails the scenario with the message, the exchange so far and the events.
macro_rules! ensure {
    ($d:expr, $cond:expr, $($msg:tt)+) => {
        if !$cond {
            return Err($d.failure(format!($($msg)+)));
        }
    };
}

impl Driver {
    fn new(name: &'static str, config: PeerConfig, seed: u64) -> Driver {
        let mut rng = StdRng::seed_from_u64(seed);
        Driver {
            name,
            peer: Peer::new(config, unix_now(), &mut rng),
            addr: SocketAddr::new(IpAddr::V4(FD_ADDR), FD_PORT),
            stream: None,
            start: now(),
            wire: Vec::new(),
            tap: Vec::new(),
            events: Vec::new(),
        }
    }

    fn failure(&self, what: String) -> String {
        let mut s = format!("[{}] {what}\n  exchange:", self.name);
        for w in &self.wire {
            let _ = write!(s, " {}", w.label());
        }
        s.push_str("\n  events:");
        for (at, e) in &self.events {
            let _ = write!(s, "\n    {:.1}s {}", at.as_secs_f64(), event_label(e));
        }
        s
    }

    fn record(&mut self, dir: Dir, frame: &[u8]) {
        let at = self.start.elapsed();
        match Message::decode(frame) {
            Ok(m) => self.wire.push(Wire {
                dir,
                at,
                command: m.command_code,
                request: m.flags.request,
                error: m.flags.error,
                hop_by_hop: m.hop_by_hop,
                result: m.result_code(),
                fault: None,
                message: Some(m),
            }),
            Err(e) => self.wire.push(Wire {
                dir,
                at,
                command: frame
                    .get(5..8)
                    .map(|c| u32::from_be_bytes([0, c[0], c[1], c[2]]))
                    .unwrap_or(0),
                request: frame.get(4).is_some_and(|f| f & 0x80 != 0),
                error: frame.get(4).is_some_and(|f| f & 0x20 != 0),
                hop_by_hop: frame
                    .get(12..16)
                    .map(|h| u32::from_be_bytes([h[0], h[1], h[2], h[3]]))
                    .unwrap_or(0),
                result: None,
                fault: Some(e.to_string()),
                message: None,
            }),
        }
    }

    /// Records each whole message of an outgoing write (writes hold whole messages).
    fn tap_out(&mut self, bytes: &[u8]) {
        let mut rest = bytes;
        while let Ok(Some(len)) = frame_len(rest) {
            self.record(Dir::Out, &rest[..len]);
            rest = &rest[len..];
        }
    }

    /// Records each message completed by incoming stream bytes (cut anywhere).
    fn tap_in(&mut self, bytes: &[u8]) {
        self.tap.extend_from_slice(bytes);
        let mut start = 0;
        while let Ok(Some(len)) = frame_len(&self.tap[start..]) {
            let frame = self.tap[start..start + len].to_vec();
            self.record(Dir::In, &frame);
            start += len;
        }
        self.tap.drain(..start);
    }

    fn closed(&mut self) {
        self.stream = None;
        self.tap.clear();
        self.peer.handle_closed(now());
    }

    /// Steps 2 and 3 of the run loop: perform every transmit, collect every event.
    fn pump(&mut self) {
        while let Some(t) = self.peer.poll_transmit() {
            match t {
                estuary_diameter::Transmit::Connect => {
                    match TcpStream::connect_timeout(&self.addr, Duration::from_secs(3)) {
                        Ok(s) => {
                            let _ = s.set_nodelay(true);
                            self.stream = Some(s);
                            self.tap.clear();
                            self.peer.handle_connected(now());
                        }
                        Err(e) => {
                            eprintln!("[{}] connect {}: {e}", self.name, self.addr);
                            self.peer.handle_connect_failed(now());
                        }
                    }
                }
                estuary_diameter::Transmit::Bytes(bytes) => {
                    self.tap_out(&bytes);
                    let written = match &mut self.stream {
                        Some(s) => s.write_all(&bytes).is_ok(),
                        None => false,
                    };
                    if !written {
                        self.closed();
                    }
                }
                estuary_diameter::Transmit::Disconnect => {
                    if let Some(s) = self.stream.take() {
                        let _ = s.shutdown(Shutdown::Both);
                    }
                    self.tap.clear();
                }
            }
        }
        while let Some(e) = self.peer.poll_event() {
            eprintln!("[{}] event: {}", self.name, event_label(&e));
            self.events.push((self.start.elapsed(), e));
        }
    }

    /// Runs the loop until `done` holds (true) or `limit` passes (false).
    fn run_until(&mut self, limit: Duration, mut done: impl FnMut(&Driver) -> bool) -> bool {
        let deadline = now() + limit;
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            self.pump();
            if done(self) {
                return true;
            }
            let t = now();
            if t >= deadline {
                return false;
            }
            let wake = self
                .peer
                .poll_timeout()
                .map_or(deadline, |at| at.min(deadline));
            if wake > t {
                let wait = (wake - t).max(Duration::from_millis(1));
                let read = match &mut self.stream {
                    Some(s) => {
                        s.set_read_timeout(Some(wait)).unwrap();
                        Some(s.read(&mut buf))
                    }
                    None => {
                        thread::sleep(wait);
                        None
                    }
                };
                match read {
                    Some(Ok(0)) => self.closed(),
                    Some(Ok(n)) => {
                        self.tap_in(&buf[..n]);
                        self.peer.handle_bytes(now(), &buf[..n]);
                    }
                    Some(Err(e))
                        if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                    Some(Err(e)) => {
                        eprintln!("[{}] read: {e}", self.name);
                        self.closed();
                    }
                    None => {}
                }
            }
            let t = now();
            if self.peer.poll_timeout().is_some_and(|at| at <= t) {
                self.peer.handle_timeout(t);
            }
        }
    }

    fn down_since(&self, index: usize) -> Option<&DownReason> {
        self.events[index..].iter().find_map(|(_, e)| match e {
            PeerEvent::Down(reason) => Some(reason),
            _ => None,
        })
    }

    fn count(&self, dir: Dir, command: u32, request: bool) -> usize {
        self.wire
            .iter()
            .filter(|w| w.is(dir, command, request))
            .count()
    }

    /// The answer in direction `dir` to the request `request` (matched by Hop-by-Hop id).
    fn answer_to(&self, request: &Wire, dir: Dir) -> Option<&Wire> {
        self.wire
            .iter()
            .find(|w| w.is(dir, request.command, false) && w.hop_by_hop == request.hop_by_hop)
    }

    /// Connects and waits for CER/CEA; returns what freeDiameter advertised.
    fn open(&mut self) -> Result<PeerInfo, String> {
        self.peer.connect(now());
        let ok = self.run_until(Duration::from_secs(10), |d| {
            d.peer.is_open() || d.down_since(0).is_some()
        });
        ensure!(self, ok, "no CER/CEA outcome within 10 s");
        let up = self.events.iter().find_map(|(_, e)| match e {
            PeerEvent::Up(info) => Some(info.clone()),
            _ => None,
        });
        ensure!(self, up.is_some(), "freeDiameter did not accept our CER");
        let cer_first = self
            .wire
            .first()
            .is_some_and(|w| w.is(Dir::Out, command::CAPABILITIES_EXCHANGE, true));
        ensure!(self, cer_first, "the first message is not our CER");
        let cea = self.answer_to(&self.wire[0].clone(), Dir::In);
        ensure!(
            self,
            cea.is_some_and(|w| w.result == Some(result_code::SUCCESS) && w.fault.is_none()),
            "no CEA 2001 matching our CER"
        );
        Ok(up.unwrap())
    }
}

fn event_label(e: &PeerEvent) -> String {
    match e {
        PeerEvent::Up(info) => format!(
            "Up(host {}, realm {}, apps {:?}, ips {:?}, product {:?})",
            info.host, info.realm, info.applications, info.host_ip_addresses, info.product_name
        ),
        PeerEvent::Down(reason) => format!("Down({reason:?})"),
        PeerEvent::Request(m) => format!("Request(command {})", m.command_code),
        PeerEvent::Answer { id, answer } => format!(
            "Answer(id {:#x}, command {}, result {:?})",
            id.0,
            answer.command_code,
            answer.result_code()
        ),
        PeerEvent::TimedOut { id, .. } => format!("TimedOut(id {:#x})", id.0),
        PeerEvent::Undelivered { id, .. } => format!("Undelivered(id {:#x})", id.0),
    }
}

fn our_config(host: &str, watchdog: Duration) -> PeerConfig {
    let mut c = PeerConfig::new(host, OUR_REALM);
    c.host_ip_addresses.push(IpAddr::V4(FD_ADDR));
    c.origin_state_id = unix_now() as u32;
    c.applications.push(RX);
    c.watchdog_interval = watchdog;
    c.request_timeout = Duration::from_secs(5);
    c.connect_timeout = Duration::from_secs(5);
    c.disconnect_timeout = Duration::from_secs(5);
    c
}

/// An Rx AAR (TS 29.214 §5.6.1) for one audio stream, addressed to freeDiameterd itself.
fn aar(origin_host: &str) -> Message {
    let sub_component = Avp::grouped(
        dict::MEDIA_SUB_COMPONENT,
        &[
            Avp::unsigned32(dict::FLOW_NUMBER, 1),
            Avp::utf8(
                dict::FLOW_DESCRIPTION,
                "permit out 17 from 198.51.100.20 40000 to 192.0.2.30 50000",
            ),
            Avp::utf8(
                dict::FLOW_DESCRIPTION,
                "permit in 17 from 192.0.2.30 50000 to 198.51.100.20 40000",
            ),
        ],
    );
    let component = Avp::grouped(
        dict::MEDIA_COMPONENT_DESCRIPTION,
        &[
            Avp::unsigned32(dict::MEDIA_COMPONENT_NUMBER, 1),
            sub_component,
            Avp::integer32(dict::MEDIA_TYPE, 0),
            Avp::unsigned32(dict::MAX_REQUESTED_BANDWIDTH_UL, 80_000),
            Avp::unsigned32(dict::MAX_REQUESTED_BANDWIDTH_DL, 80_000),
            Avp::integer32(dict::FLOW_STATUS, 2),
        ],
    );
    Message::request(command::AA, application::RX)
        .with(Avp::utf8(
            dict::SESSION_ID,
            &format!("{origin_host};{};1", unix_now()),
        ))
        .with(Avp::unsigned32(dict::AUTH_APPLICATION_ID, application::RX))
        .with(Avp::identity(dict::ORIGIN_HOST, origin_host))
        .with(Avp::identity(dict::ORIGIN_REALM, OUR_REALM))
        .with(Avp::identity(dict::DESTINATION_REALM, FD_REALM))
        .with(Avp::identity(dict::DESTINATION_HOST, FD_HOST))
        .with(Avp::octets(
            dict::AF_CHARGING_IDENTIFIER,
            b"estuary-icid-1".to_vec(),
        ))
        .with(component)
        .with(Avp::grouped(
            dict::SUBSCRIPTION_ID,
            &[
                Avp::integer32(dict::SUBSCRIPTION_ID_TYPE, 2),
                Avp::utf8(dict::SUBSCRIPTION_ID_DATA, "sip:alice@estuary.test"),
            ],
        ))
        .with(Avp::octets(dict::FRAMED_IP_ADDRESS, vec![198, 51, 100, 20]))
}

/// Checks what freeDiameter advertised in its CEA.
fn check_capabilities(d: &Driver, info: &PeerInfo) -> Result<(), String> {
    ensure!(
        d,
        info.host == FD_HOST && info.realm == FD_REALM,
        "CEA Origin-Host/Realm {:?}/{:?}, expected {FD_HOST}/{FD_REALM}",
        info.host,
        info.realm
    );
    ensure!(
        d,
        info.applications
            .iter()
            .any(|a| a.id() == application::RELAY),
        "freeDiameter's CEA does not advertise Relay: {:?}",
        info.applications
    );
    ensure!(
        d,
        info.host_ip_addresses.contains(&IpAddr::V4(FD_ADDR)),
        "CEA Host-IP-Address {:?} lacks {FD_ADDR}",
        info.host_ip_addresses
    );
    ensure!(
        d,
        info.product_name.as_deref() == Some("freeDiameter"),
        "CEA Product-Name {:?}",
        info.product_name
    );
    Ok(())
}

/// `alpha`: CER/CEA, the AAR, freeDiameter's DWRs, our DPR.
fn alpha() -> Result<String, String> {
    let mut report = String::new();
    // Our Tw is long: freeDiameter (Tw 6 s) sends every DWR on this connection.
    let mut d = Driver::new(ALPHA, our_config(ALPHA, Duration::from_secs(30)), 1);
    let info = d.open()?;
    check_capabilities(&d, &info)?;
    let _ = writeln!(
        report,
        "alpha: CEA from {} ({}), applications {:?}, vendor {:?}, product {:?}",
        info.host, info.realm, info.applications, info.vendor_id, info.product_name
    );

    // Scenario 3: a request freeDiameter parses but has no handler for.
    let id: RequestId = match d.peer.send_request(now(), aar(ALPHA)) {
        Ok(id) => id,
        Err(e) => return Err(d.failure(format!("send_request(AAR): {e}"))),
    };
    let mark = d.events.len();
    let settled = d.run_until(Duration::from_secs(7), |d| {
        d.events[mark..].iter().any(|(_, e)| {
            matches!(e, PeerEvent::Answer { id: i, .. } | PeerEvent::TimedOut { id: i, .. }
                | PeerEvent::Undelivered { id: i, .. } if *i == id)
        })
    });
    ensure!(d, settled, "nothing became of the AAR within 7 s");
    let answer = d.events[mark..].iter().find_map(|(_, e)| match e {
        PeerEvent::Answer { id: i, answer } if *i == id => Some(answer.clone()),
        _ => None,
    });
    ensure!(
        d,
        answer.is_some(),
        "the AAR got no answer (Tx expired or link lost)"
    );
    let answer = answer.unwrap();
    let code = answer.result_code();
    ensure!(
        d,
        answer.command_code == command::AA
            && !answer.flags.request
            && answer.hop_by_hop == id.0
            && answer.application_id == application::RX,
        "the AAR's answer is not an AAA for our request: command {}, app {}, hbh {:#x}",
        answer.command_code,
        answer.application_id,
        answer.hop_by_hop
    );
    // freeDiameter parses the whole AAR against its dictionaries (dict_dcca_3gpp knows every
    // Rx AVP in it) before routing it: a 5xxx (or 3009 etc.) here would mean it objected to
    // our encoding. Parsed cleanly, the request is for freeDiameterd itself
    // (Destination-Host), which has no Rx handler: 3007 with the E bit (RFC 6733 §7.1.3).
    ensure!(
        d,
        code == Some(result_code::APPLICATION_UNSUPPORTED) && answer.flags.error,
        "AAA Result-Code {code:?} E={}: expected 3007 DIAMETER_APPLICATION_UNSUPPORTED with E \
         from a stack with no Rx handler",
        answer.flags.error
    );
    let error_message = answer
        .find(dict::ERROR_MESSAGE)
        .and_then(|a| a.as_utf8().ok())
        .unwrap_or("")
        .to_string();
    let _ = writeln!(
        report,
        "alpha: AAR answered: Result-Code {} E={} Origin-Host {:?} Error-Message {error_message:?}",
        code.unwrap(),
        answer.flags.error,
        answer.origin_host()
    );

    // Scenario 2 (their side): two DWRs from freeDiameter, each answered by our DWA. After a
    // DWR without DWA freeDiameter goes SUSPECT instead of sending another, so a second DWR
    // proves it took our first DWA.
    let ok = d.run_until(Duration::from_secs(4 * FD_TW_SECS), |d| {
        d.count(Dir::In, command::DEVICE_WATCHDOG, true) >= 2
    });
    ensure!(
        d,
        ok,
        "freeDiameter sent fewer than 2 DWRs in {}s",
        4 * FD_TW_SECS
    );
    let their_dwrs: Vec<Wire> = d
        .wire
        .iter()
        .filter(|w| w.is(Dir::In, command::DEVICE_WATCHDOG, true))
        .cloned()
        .collect();
    for dwr in &their_dwrs {
        let dwa = d.answer_to(dwr, Dir::Out);
        ensure!(
            d,
            dwa.is_some_and(|w| w.result == Some(result_code::SUCCESS)),
            "no DWA 2001 from us for freeDiameter's DWR {:#x}",
            dwr.hop_by_hop
        );
    }
    ensure!(
        d,
        d.peer.is_open(),
        "connection not open after the watchdog exchanges"
    );
    let _ = writeln!(
        report,
        "alpha: answered {} DWRs from freeDiameter (at {:?}), sent {} DWRs",
        their_dwrs.len(),
        their_dwrs.iter().map(|w| w.at).collect::<Vec<_>>(),
        d.count(Dir::Out, command::DEVICE_WATCHDOG, true)
    );

    // Scenario 4: our DPR, freeDiameter's DPA, Down(LocalDisconnect), closed.
    let mark = d.events.len();
    let begun = now();
    d.peer.disconnect(now(), DisconnectCause::Rebooting);
    let ok = d.run_until(Duration::from_secs(8), |d| d.down_since(mark).is_some());
    ensure!(d, ok, "no Down within 8 s of disconnect()");
    let took = begun.elapsed();
    let reason = d.down_since(mark).cloned().unwrap();
    ensure!(
        d,
        reason == DownReason::LocalDisconnect(DisconnectCause::Rebooting),
        "Down({reason:?}) after disconnect(Rebooting)"
    );
    let dpr = d
        .wire
        .iter()
        .rev()
        .find(|w| w.is(Dir::Out, command::DISCONNECT_PEER, true))
        .cloned();
    ensure!(d, dpr.is_some(), "we sent no DPR");
    let dpa = d.answer_to(&dpr.unwrap(), Dir::In);
    ensure!(
        d,
        dpa.is_some_and(|w| w.result == Some(result_code::SUCCESS)),
        "no DPA 2001 from freeDiameter"
    );
    // The DPA ended it, not the disconnect timer (5 s).
    ensure!(
        d,
        took < Duration::from_secs(3),
        "Down took {took:?} after DPR"
    );
    ensure!(
        d,
        d.stream.is_none(),
        "the TCP connection is still open after Down"
    );
    let _ = writeln!(report, "alpha: DPR answered with DPA 2001 in {took:?}");
    let _ = writeln!(report, "alpha: exchange {}", exchange(&d));
    Ok(report)
}

/// `beta`: CER/CEA, our DWRs; after `ready`, freeDiameter's DPR when it stops.
fn beta(ready: mpsc::Sender<()>) -> Result<String, String> {
    let mut report = String::new();
    // Our Tw is the minimum, freeDiameter's is 30 s for this identity: we send the DWRs.
    let mut d = Driver::new(BETA, our_config(BETA, Duration::from_secs(6)), 2);
    let info = d.open()?;
    check_capabilities(&d, &info)?;

    // Scenario 2 (our side): two DWRs, each answered. Our Peer sends a DWR only from its idle
    // watchdog state and closes (WatchdogExpired) if Tw passes without the DWA, so a second
    // DWR on a still-open connection means the first DWA was taken.
    let ok = d.run_until(Duration::from_secs(20), |d| {
        d.count(Dir::Out, command::DEVICE_WATCHDOG, true) >= 2
            && d.count(Dir::In, command::DEVICE_WATCHDOG, false) >= 2
    });
    ensure!(d, ok, "fewer than 2 DWR/DWA exchanges of ours within 20 s");
    let our_dwrs: Vec<Wire> = d
        .wire
        .iter()
        .filter(|w| w.is(Dir::Out, command::DEVICE_WATCHDOG, true))
        .cloned()
        .collect();
    for dwr in &our_dwrs {
        let dwa = d.answer_to(dwr, Dir::In);
        ensure!(
            d,
            dwa.is_some_and(|w| w.result == Some(result_code::SUCCESS)),
            "freeDiameter's DWA to our DWR {:#x} is missing or not 2001",
            dwr.hop_by_hop
        );
    }
    ensure!(
        d,
        d.peer.is_open(),
        "connection not open after our watchdog exchanges"
    );
    ensure!(
        d,
        d.down_since(0).is_none(),
        "the connection went down during the watchdog exchanges"
    );
    let _ = writeln!(
        report,
        "beta: {} DWRs of ours answered with DWA 2001 (at {:?})",
        our_dwrs.len(),
        our_dwrs.iter().map(|w| w.at).collect::<Vec<_>>()
    );

    // Scenario 5: the daemon stops and sends DPR; we answer DPA and go down.
    let _ = ready.send(());
    let mark = d.events.len();
    let ok = d.run_until(Duration::from_secs(25), |d| d.down_since(mark).is_some());
    ensure!(
        d,
        ok,
        "no Down within 25 s of asking for freeDiameterd's stop"
    );
    let reason = d.down_since(mark).cloned().unwrap();
    let dpr = d
        .wire
        .iter()
        .find(|w| w.is(Dir::In, command::DISCONNECT_PEER, true))
        .cloned();
    ensure!(
        d,
        dpr.is_some(),
        "freeDiameter sent no DPR when stopping (Down({reason:?}))"
    );
    let dpr = dpr.unwrap();
    let cause = dpr
        .message
        .as_ref()
        .and_then(|m| m.find(dict::DISCONNECT_CAUSE))
        .and_then(|a| a.as_u32().ok());
    let dpa = d.answer_to(&dpr, Dir::Out);
    ensure!(
        d,
        dpa.is_some_and(|w| w.result == Some(result_code::SUCCESS)),
        "we did not answer freeDiameter's DPR with DPA 2001"
    );
    ensure!(
        d,
        reason == DownReason::PeerDisconnected(cause.and_then(DisconnectCause::from_code)),
        "Down({reason:?}) after freeDiameter's DPR with Disconnect-Cause {cause:?}"
    );
    ensure!(
        d,
        matches!(reason, DownReason::PeerDisconnected(Some(_))),
        "freeDiameter's DPR carried no valid Disconnect-Cause: {cause:?}"
    );
    let _ = writeln!(
        report,
        "beta: freeDiameter's DPR (Disconnect-Cause {cause:?}) answered with DPA; Down({reason:?})"
    );
    let _ = writeln!(report, "beta: exchange {}", exchange(&d));
    Ok(report)
}

fn fail(daemon: &Daemon, what: String) -> ! {
    panic!("{what}\n{}", daemon.log_tail(60));
}

fn exchange(d: &Driver) -> String {
    d.wire.iter().map(Wire::label).collect::<Vec<_>>().join(" ")
}

#[test]
fn interoperates_with_freediameter() {
    let started = now();
    let tools = require_tools();
    let mut daemon = Daemon::start(&tools);
    eprintln!(
        "freeDiameterd pid {} listening on {FD_ADDR}:{FD_PORT} after {:?}",
        daemon.pid,
        started.elapsed()
    );

    let (ready_tx, ready_rx) = mpsc::channel();
    let beta_thread = in_namespace(daemon.pid, "beta", move || beta(ready_tx));
    let alpha_thread = in_namespace(daemon.pid, "alpha", alpha);

    let alpha_report = match alpha_thread.join() {
        Ok(Ok(report)) => report,
        Ok(Err(e)) => fail(&daemon, e),
        Err(_) => fail(&daemon, "the alpha thread panicked".into()),
    };
    eprint!("{alpha_report}");
    if ready_rx.recv_timeout(Duration::from_secs(30)).is_err() {
        // beta failed (or hung) before its DPR phase: its result says why.
        drop(daemon);
        match beta_thread.join() {
            Ok(Err(e)) => panic!("{e}"),
            _ => panic!("beta never became ready for freeDiameter's DPR"),
        }
    }
    daemon.terminate();
    let beta_report = match beta_thread.join() {
        Ok(Ok(report)) => report,
        Ok(Err(e)) => fail(&daemon, e),
        Err(_) => fail(&daemon, "the beta thread panicked".into()),
    };
    eprint!("{beta_report}");
    // With its DPA in hand freeDiameterd finishes at once (it waits up to 16 s for peers
    // that do not answer).
    let status = daemon.wait_exit(Duration::from_secs(10));
    if status.is_none() {
        fail(
            &daemon,
            "freeDiameterd did not exit within 10 s of SIGTERM".into(),
        );
    }
    eprintln!(
        "freeDiameterd exited ({}); total {:?}",
        status.unwrap(),
        started.elapsed()
    );
    // Anything freeDiameter logged as an error, other than its refusal of the AAR, is a
    // complaint about something we sent.
    let complaints = unexpected_errors(&daemon.log_text());
    if !complaints.is_empty() {
        fail(
            &daemon,
            format!("freeDiameterd logged errors:\n{}", complaints.join("\n")),
        );
    }
}

/// freeDiameter's ERROR lines, less the block (the message dump) of the one expected error:
/// the AAR's "Application unsupported".
fn unexpected_errors(log: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut in_expected = false;
    for line in log.lines() {
        if !line.contains("  ERROR  ") {
            in_expected = false;
            continue;
        }
        if line.contains("Parsing error: 'Application unsupported'") {
            in_expected = true;
        }
        if !in_expected {
            out.push(line.to_string());
        }
    }
    out
}
