//! The reference stack of the relay benchmark: Debian's Kamailio 5.6 (with its WebSocket
//! modules) as the browsers' SIP front and Debian's rtpengine 10.5, userspace only, as the
//! media relay between WebRTC and plain RTP: the usual open-source build of what Estuary is.
//!
//! [`Stack::start`] writes both configurations (templates in `bench/reference/`) into a
//! temporary directory, starts rtpengine and waits until its ng control socket answers a
//! ping, checks Kamailio's configuration (`kamailio -c`), starts it and waits until its
//! WebSocket port accepts. Both run in the foreground as children of the benchmark, on
//! 127.0.0.1 ports found free, and are stopped by their PIDs when the [`Stack`] is dropped
//! (also on an error), Kamailio's forked workers with it. What they print goes to a bounded
//! log kept for error messages.
//!
//! The browsers see the same thing as from Estuary (register, call `sip:echo@ims.test`, an
//! answer with one ICE candidate, a DTLS fingerprint and rtcp-mux); the core sees an RTP/AVP
//! offer from Kamailio's address. The difference the generator copes with is that rtpengine
//! is a full ICE agent that checks the browsers' candidates (the browsers answer, as
//! Chromium does).

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use estuary_conformance::net::{free_tcp_port, free_udp_port};

use crate::{die_with_parent, process_tree, ChildGuard};

const KAMAILIO_CFG: &str = include_str!("../reference/kamailio.cfg");
const RTPENGINE_CONF: &str = include_str!("../reference/rtpengine.conf");
pub(crate) const MODULES: &str = "/usr/lib/x86_64-linux-gnu/kamailio/modules";
/// How long each daemon gets to come up.
pub(crate) const START_LIMIT: Duration = Duration::from_secs(20);
/// Lines of each daemon's output kept for error messages.
const LOG_LINES: usize = 400;

/// A running Kamailio + rtpengine.
pub struct Stack {
    /// Plain ws:// for the browsers.
    pub ws_addr: SocketAddr,
    // Field order is drop order: Kamailio goes first (it talks to rtpengine), then
    // rtpengine, then the directory.
    kamailio: ChildGuard,
    rtpengine: ChildGuard,
    _dir: TempDir,
    kamailio_log: Log,
    rtpengine_log: Log,
}

impl Stack {
    /// Starts rtpengine on `media_ports` and Kamailio forwarding the browsers' INVITEs to UDP
    /// 127.0.0.1:`core_sip_port`. `calls` sizes Kamailio's shared memory.
    pub fn start(core_sip_port: u16, media_ports: (u16, u16), calls: u64) -> Result<Stack, String> {
        require()?;
        let dir = TempDir::new("reference")?;
        let ng = SocketAddr::from(([127, 0, 0, 1], free_udp_port()));
        let sip = SocketAddr::from(([127, 0, 0, 1], free_udp_port()));
        let ws_addr = SocketAddr::from(([127, 0, 0, 1], free_tcp_port()));
        let rtpengine_conf = dir.0.join("rtpengine.conf");
        let conf = RTPENGINE_CONF
            .replace("@NG@", &ng.to_string())
            .replace("@PORT_MIN@", &media_ports.0.to_string())
            .replace("@PORT_MAX@", &media_ports.1.to_string());
        std::fs::write(&rtpengine_conf, conf).map_err(|e| format!("{}: {e}", rtpengine_conf.display()))?;
        let kamailio_cfg = dir.0.join("kamailio.cfg");
        let cfg = KAMAILIO_CFG
            .replace("@SIP@", &sip.to_string())
            .replace("@WS@", &ws_addr.to_string())
            .replace("@CORE@", &format!("127.0.0.1:{core_sip_port}"))
            .replace("@NG@", &ng.to_string())
            .replace("@MODULES@", MODULES);
        std::fs::write(&kamailio_cfg, cfg).map_err(|e| format!("{}: {e}", kamailio_cfg.display()))?;

        let mut cmd = Command::new("rtpengine");
        cmd.arg(format!("--config-file={}", rtpengine_conf.display())).arg("--config-section=rtpengine");
        let (mut rtpengine, rtpengine_log) = spawn(cmd, "rtpengine")?;
        wait_ready(&mut rtpengine, &rtpengine_log, "rtpengine", &format!("rtpengine's ng socket {ng} never answered"), || ng_ping(ng))?;

        check_kamailio_cfg(&kamailio_cfg)?;
        // Shared memory: the default 64 MB, more for loads past a few hundred calls.
        let shm_mb = (64 + calls / 4).to_string();
        let mut cmd = Command::new("kamailio");
        // -DD: the main process stays in the foreground (its workers fork from it); -E: log to
        // stderr; -Y: runtime files in our directory.
        cmd.args(["-DD", "-E", "-m", &shm_mb, "-M", "16", "-Y"]).arg(&dir.0).arg("-f").arg(&kamailio_cfg);
        let (mut kamailio, kamailio_log) = spawn(cmd, "kamailio")?;
        let never = format!("kamailio's WebSocket port {ws_addr} never opened");
        wait_ready(&mut kamailio, &kamailio_log, "kamailio", &never, || TcpStream::connect_timeout(&ws_addr, Duration::from_millis(200)).is_ok())?;
        Ok(Stack { ws_addr, kamailio, rtpengine, _dir: dir, kamailio_log, rtpengine_log })
    }

    pub fn rtpengine_pid(&self) -> u32 {
        self.rtpengine.pid()
    }

    /// Kamailio's processes (the main one and its workers) and rtpengine's, now.
    pub fn groups(&self) -> Vec<(&'static str, Vec<u32>)> {
        vec![("kamailio", process_tree(self.kamailio.pid())), ("rtpengine", process_tree(self.rtpengine.pid()))]
    }

    /// The last `n` lines each daemon printed.
    pub fn log_tail(&self, n: usize) -> String {
        format!("--- kamailio ---\n{}\n--- rtpengine ---\n{}", self.kamailio_log.tail(n), self.rtpengine_log.tail(n))
    }
}

/// Both daemons and the Kamailio WebSocket modules must be installed (`make bench-deps`).
fn require() -> Result<(), String> {
    let found = |cmd: &str, arg: &str| Command::new(cmd).arg(arg).stdout(Stdio::null()).stderr(Stdio::null()).status().is_ok_and(|s| s.success());
    let ws = Path::new(MODULES).join("websocket.so").is_file() && Path::new(MODULES).join("rtpengine.so").is_file();
    if found("kamailio", "-v") && found("rtpengine", "--version") && ws {
        Ok(())
    } else {
        Err("the reference needs Debian's kamailio, kamailio-websocket-modules and rtpengine-daemon: make bench-deps".into())
    }
}

/// Polls `ready` every 100 ms until it holds, for at most [`START_LIMIT`]: an error with the
/// log's tail when the daemon `name` exits first, or `never` when the time runs out.
pub(crate) fn wait_ready(child: &mut ChildGuard, log: &Log, name: &str, never: &str, ready: impl Fn() -> bool) -> Result<(), String> {
    let deadline = Instant::now() + START_LIMIT;
    while !ready() {
        if let Some(status) = child.exited() {
            return Err(format!("{name} exited at start ({status}):\n{}", log.tail(30)));
        }
        if Instant::now() > deadline {
            return Err(format!("{never}:\n{}", log.tail(30)));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(())
}

/// `kamailio -c`: the configuration at `cfg` parses and its modules load.
pub(crate) fn check_kamailio_cfg(cfg: &Path) -> Result<(), String> {
    let check = Command::new("kamailio").arg("-c").arg("-f").arg(cfg).output().map_err(|e| format!("kamailio -c: {e}"))?;
    if check.status.success() {
        Ok(())
    } else {
        Err(format!("kamailio refuses its configuration {}:\n{}", cfg.display(), String::from_utf8_lossy(&check.stderr)))
    }
}

/// A daemon's merged output, last [`LOG_LINES`] lines.
#[derive(Clone, Default)]
pub(crate) struct Log(Arc<Mutex<VecDeque<String>>>);

impl Log {
    fn follow(&self, src: impl Read + Send + 'static) {
        let lines = self.0.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(src).lines().map_while(Result::ok) {
                let mut l = lines.lock().unwrap_or_else(|e| e.into_inner());
                if l.len() == LOG_LINES {
                    l.pop_front();
                }
                l.push_back(line);
            }
        });
    }

    pub(crate) fn tail(&self, n: usize) -> String {
        let l = self.0.lock().unwrap_or_else(|e| e.into_inner());
        l.iter().skip(l.len().saturating_sub(n)).cloned().collect::<Vec<_>>().join("\n")
    }
}

/// Starts `cmd` as a child that dies with the benchmark, its output followed into a [`Log`].
pub(crate) fn spawn(mut cmd: Command, name: &'static str) -> Result<(ChildGuard, Log), String> {
    die_with_parent(&mut cmd);
    let mut child = cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().map_err(|e| format!("cannot start {name}: {e}"))?;
    let log = Log::default();
    if let Some(out) = child.stdout.take() {
        log.follow(out);
    }
    if let Some(err) = child.stderr.take() {
        log.follow(err);
    }
    Ok((ChildGuard { child, grace: Duration::from_secs(5) }, log))
}

/// Whether rtpengine answers an ng `ping` (a cookie, then a bencoded dictionary, over UDP)
/// within 300 ms.
fn ng_ping(ng: SocketAddr) -> bool {
    let Ok(s) = UdpSocket::bind("127.0.0.1:0") else { return false };
    let _ = s.set_read_timeout(Some(Duration::from_millis(300)));
    if s.send_to(b"bench d7:command4:pinge", ng).is_err() {
        return false;
    }
    let mut buf = [0u8; 256];
    matches!(s.recv_from(&mut buf), Ok((n, _)) if buf[..n].windows(4).any(|w| w == b"pong"))
}

/// A directory of our own under the system temp dir, removed when dropped.
pub(crate) struct TempDir(pub(crate) PathBuf);

impl TempDir {
    /// `estuary-bench-LABEL-PID`: one per system a benchmark process starts.
    pub(crate) fn new(label: &str) -> Result<TempDir, String> {
        let dir = std::env::temp_dir().join(format!("estuary-bench-{label}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        Ok(TempDir(dir))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
