//! A real headless browser (Chromium or Firefox) as the web peer's WebRTC stack.
//!
//! [`Browser`] runs `conformance/browser/sdp-driver.mjs` (Node + `playwright-core`, which
//! launches Debian's `/usr/bin/chromium`, or `puppeteer-core` over WebDriver BiDi, which launches
//! Debian's `/usr/bin/firefox-esr`: see [`BrowserKind`]) and talks to it one JSON line at a
//! time: named `RTCPeerConnection`s create offers, take the gateway's SDP through
//! `setRemoteDescription`, and answer the gateway's offers. A refusal comes back as `Err`
//! carrying the browser's exception message verbatim; a driver failure (no reply within the
//! timeout, the driver died, a garbled line) panics with the driver's stderr tail, so it can
//! never pass for a refusal. The constructors without a kind ([`Browser::start`],
//! [`Browser::start_in`], [`Browser::with_pc`]...) start Chromium.
//!
//! By default the driver runs in a network namespace of its own with only `lo` up
//! (`unshare --net --pid --fork --kill-child`), so the browser's candidates are loopback only
//! (127.0.0.1; Firefox adds ::1) and everything it started dies with it. Where namespaces
//! cannot be made (not root, no CAP_SYS_ADMIN) it runs without one and says so on stderr.
//! [`Netns::Inherit`] and [`Netns::Join`] put it where a gateway under test can be reached.
//!
//! Requirements: `node` (>= 20) on PATH (or `NODE_BIN`), Chromium at `/usr/bin/chromium` (or
//! `CHROMIUM_BIN`) or Firefox at `/usr/bin/firefox-esr` (or `FIREFOX_BIN`), `unshare`/`ip` for
//! the namespace, and `npm` for the one-time `npm ci` in `conformance/browser` (run here,
//! under a lock, when `node_modules` does not hold the versions `package-lock.json` pins; it
//! never downloads a browser). A missing piece fails the test with
//! [`Browser::available_kind`]'s reason: never skipped. Calls block the calling thread (at most
//! [`Browser::set_timeout`], 20 s by default); from async code use
//! `tokio::task::block_in_place` or `spawn_blocking`. `ESTUARY_TRACE_BROWSER=1` echoes the
//! driver's protocol lines and the page console on stderr.

use std::collections::VecDeque;
use std::fmt;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

/// How long [`Browser::start`] waits for the browser to come up (the first start on a cold
/// disk is the slow one).
const START_TIMEOUT: Duration = Duration::from_secs(45);
/// How long one command may take by default.
const CALL_TIMEOUT: Duration = Duration::from_secs(20);
/// Driver stderr lines kept for failure messages.
const STDERR_TAIL: usize = 200;

/// The folder of the Node driver package.
pub fn driver_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("browser")
}

/// The Chromium binary the driver launches: `CHROMIUM_BIN` or `/usr/bin/chromium`.
pub fn chromium_binary() -> PathBuf {
    BrowserKind::Chromium.binary()
}

/// The Firefox binary the driver launches: `FIREFOX_BIN` or `/usr/bin/firefox-esr`.
pub fn firefox_binary() -> PathBuf {
    BrowserKind::Firefox.binary()
}

/// Which browser the driver launches (its `ESTUARY_BROWSER`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BrowserKind {
    /// Debian's Chromium (`/usr/bin/chromium`, or `CHROMIUM_BIN`), through `playwright-core`.
    Chromium,
    /// Debian's Firefox ESR (`/usr/bin/firefox-esr`, or `FIREFOX_BIN`), through
    /// `puppeteer-core` over WebDriver BiDi.
    Firefox,
}

impl BrowserKind {
    /// Both, Chromium first.
    pub const ALL: [BrowserKind; 2] = [BrowserKind::Chromium, BrowserKind::Firefox];

    /// The driver's name for it (`ESTUARY_BROWSER`, the ready line's `browser`): "chromium" or
    /// "firefox".
    pub fn id(self) -> &'static str {
        match self {
            BrowserKind::Chromium => "chromium",
            BrowserKind::Firefox => "firefox",
        }
    }

    /// "Chromium" or "Firefox".
    pub fn name(self) -> &'static str {
        match self {
            BrowserKind::Chromium => "Chromium",
            BrowserKind::Firefox => "Firefox",
        }
    }

    /// The variable that overrides where the binary is.
    fn binary_env(self) -> &'static str {
        match self {
            BrowserKind::Chromium => "CHROMIUM_BIN",
            BrowserKind::Firefox => "FIREFOX_BIN",
        }
    }

    /// The binary the driver launches: `CHROMIUM_BIN`/`FIREFOX_BIN`, else Debian's.
    pub fn binary(self) -> PathBuf {
        let default = match self {
            BrowserKind::Chromium => "/usr/bin/chromium",
            BrowserKind::Firefox => "/usr/bin/firefox-esr",
        };
        std::env::var_os(self.binary_env())
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(default))
    }

    /// The Debian package with the binary.
    fn debian_package(self) -> &'static str {
        match self {
            BrowserKind::Chromium => "chromium",
            BrowserKind::Firefox => "firefox-esr",
        }
    }

    /// The npm package (in `conformance/browser`) that drives it.
    pub fn npm_package(self) -> &'static str {
        match self {
            BrowserKind::Chromium => "playwright-core",
            BrowserKind::Firefox => "puppeteer-core",
        }
    }
}

impl fmt::Display for BrowserKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

fn on_path(name: &str) -> Option<PathBuf> {
    let paths = std::env::var_os("PATH")?;
    std::env::split_paths(&paths)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

fn node_binary() -> Option<PathBuf> {
    match std::env::var_os("NODE_BIN") {
        Some(p) => Some(PathBuf::from(p)),
        None => on_path("node"),
    }
}

/// Which network namespace the driver (and so the browser) runs in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Netns {
    /// A fresh namespace with only `lo` up (falls back to none, with a notice, where it
    /// cannot be made).
    Private,
    /// The caller's own namespace (e.g. a test process already inside one with the gateway).
    Inherit,
    /// An existing namespace, entered with `nsenter --net=PATH` (e.g. `/proc/PID/ns/net` of
    /// the process holding the gateway's namespace, or `/run/netns/NAME`).
    Join(PathBuf),
}

/// How a private namespace can be made on this machine; probed once per process.
#[derive(Clone, Debug)]
enum Isolation {
    /// `unshare --net --pid --fork --kill-child`: loopback only, and killing the child kills
    /// every process in the namespace.
    NetPid,
    /// `unshare --net`: loopback only.
    Net,
    /// No namespace; the reason why.
    None(String),
}

fn isolation() -> &'static Isolation {
    static PROBED: OnceLock<Isolation> = OnceLock::new();
    PROBED.get_or_init(|| {
        let try_it = |args: &[&str]| -> Result<(), String> {
            let out = Command::new("unshare")
                .args(args)
                .args(["sh", "-c", "ip link set lo up"])
                .stdin(Stdio::null())
                .output()
                .map_err(|e| format!("running unshare: {e}"))?;
            if out.status.success() {
                Ok(())
            } else {
                Err(format!(
                    "unshare {} sh -c 'ip link set lo up': {}: {}",
                    args.join(" "),
                    out.status,
                    String::from_utf8_lossy(&out.stderr).trim()
                ))
            }
        };
        match try_it(&["--net", "--pid", "--fork", "--kill-child"]) {
            Ok(()) => Isolation::NetPid,
            Err(first) => match try_it(&["--net"]) {
                Ok(()) => Isolation::Net,
                Err(second) => Isolation::None(format!("{first}; {second}")),
            },
        }
    })
}

/// The driver's `node_modules` is current when every package `package-lock.json` pins is
/// installed at the pinned version (whoever ran `npm ci`).
fn node_modules_current(dir: &Path) -> bool {
    let Ok(lock) = std::fs::read(dir.join("package-lock.json")) else {
        return false;
    };
    let Ok(lock) = serde_json::from_slice::<Value>(&lock) else {
        return false;
    };
    let Some(packages) = lock["packages"].as_object() else {
        return false;
    };
    packages
        .iter()
        .filter(|(path, _)| !path.is_empty())
        .all(|(path, pinned)| {
            std::fs::read(dir.join(path).join("package.json"))
                .ok()
                .and_then(|m| serde_json::from_slice::<Value>(&m).ok())
                .is_some_and(|m| m["version"] == pinned["version"])
        })
}

/// An exclusive lock across processes, held by a `flock(1)` child until dropped (or until
/// this process dies and the child's stdin closes).
struct InstallLock(Child);

impl InstallLock {
    fn acquire(path: &Path) -> Option<InstallLock> {
        let flock = on_path("flock")?;
        let mut child = Command::new(flock)
            .args(["-w", "600"])
            .arg(path)
            .args(["sh", "-c", "echo locked; read _ || true"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .ok()?;
        let mut line = String::new();
        let stdout = child.stdout.take()?;
        let _ = BufReader::new(stdout).read_line(&mut line);
        if line.trim() == "locked" {
            Some(InstallLock(child))
        } else {
            let _ = child.kill();
            let _ = child.wait();
            None
        }
    }
}

impl Drop for InstallLock {
    fn drop(&mut self) {
        drop(self.0.stdin.take());
        let _ = self.0.wait();
    }
}

/// `npm ci` in the driver folder unless `node_modules` is current, under a lock so parallel
/// test processes install once.
fn ensure_node_modules() -> Result<(), String> {
    let dir = driver_dir();
    if node_modules_current(&dir) {
        return Ok(());
    }
    let npm = on_path("npm").ok_or_else(|| {
        format!(
            "{}/node_modules is missing or stale and npm is not on PATH: install npm, or run \
             `npm ci` there (`make deps` does)",
            dir.display()
        )
    })?;
    let lock = InstallLock::acquire(&std::env::temp_dir().join("estuary-browser-npm.lock"));
    if lock.is_none() {
        eprintln!("browser: could not take the npm lock (flock(1) missing?); installing anyway");
    }
    if node_modules_current(&dir) {
        return Ok(()); // another process installed while we waited
    }
    eprintln!("browser: npm ci in {}", dir.display());
    let out = Command::new(&npm)
        .args(["ci", "--no-audit", "--no-fund", "--loglevel=error"])
        .current_dir(&dir)
        .env("PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD", "1")
        .env("PUPPETEER_SKIP_DOWNLOAD", "1")
        .env("npm_config_update_notifier", "false")
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("running npm ci in {}: {e}", dir.display()))?;
    drop(lock);
    if out.status.success() && node_modules_current(&dir) {
        Ok(())
    } else {
        Err(format!(
            "npm ci in {} failed ({}):\n{}{}",
            dir.display(),
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

/// Whether the driver's `package-lock.json` pins `package` (as a top-level dependency).
fn lock_pins(dir: &Path, package: &str) -> bool {
    std::fs::read(dir.join("package-lock.json"))
        .ok()
        .and_then(|lock| serde_json::from_slice::<Value>(&lock).ok())
        .is_some_and(|lock| lock["packages"][format!("node_modules/{package}")].is_object())
}

/// Non-zombie processes whose command line or environment contains `marker` (e.g. a browser's
/// [`Browser::profile_dir`]): what a test checks to prove nothing was left running. Every
/// process a browser starts has its profile in its environment (the driver sets
/// `ESTUARY_BROWSER_PROFILE`), which finds the Firefox and Chromium helper processes whose
/// command lines do not name the profile. (Another user's processes' environments are not
/// readable; the tests run as the browsers' user.)
pub fn live_processes_with(marker: &str) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            let state = stat.rsplit_once(')').map(|(_, r)| r.trim_start());
            if state.is_none_or(|s| s.starts_with('Z') || s.starts_with('X')) {
                return false;
            }
            let has = |file: &str| {
                let bytes = std::fs::read(format!("/proc/{pid}/{file}")).unwrap_or_default();
                String::from_utf8_lossy(&bytes).contains(marker)
            };
            has("cmdline") || has("environ")
        })
        .collect()
}

/// One line from the driver's stdout.
type Line = Result<Value, String>;

/// A running headless browser (Chromium or Firefox, [`Browser::kind`]) behind the Node driver.
/// Killed (with everything it started) on drop.
pub struct Browser {
    kind: BrowserKind,
    child: Child,
    stdin: Option<ChildStdin>,
    replies: Receiver<Line>,
    stderr: Arc<Mutex<VecDeque<String>>>,
    next_id: u64,
    timeout: Duration,
    version: String,
    profile_dir: PathBuf,
    netns: String,
    startup: Duration,
}

impl Browser {
    /// `Ok` if everything the driver needs to run Chromium is installed, else what is missing
    /// and how to install it: [`Browser::available_kind`] for Chromium.
    pub fn available() -> Result<(), String> {
        Self::available_kind(BrowserKind::Chromium)
    }

    /// `Ok` if everything the driver needs to run `kind` is installed (node, the browser's
    /// binary, the driver's files, its npm package pinned in `package-lock.json` and installed
    /// or installable), else what is missing and how to install it.
    pub fn available_kind(kind: BrowserKind) -> Result<(), String> {
        let node = node_binary().ok_or(
            "node not found on PATH (or NODE_BIN): the browser tests need Node.js >= 20 \
             (`apt-get install -y nodejs npm`; `make deps` does it)",
        )?;
        let out = Command::new(&node)
            .arg("--version")
            .output()
            .map_err(|e| format!("running {} --version: {e}", node.display()))?;
        let version = String::from_utf8_lossy(&out.stdout).trim().to_string();
        let major: u32 = version
            .trim_start_matches('v')
            .split('.')
            .next()
            .and_then(|m| m.parse().ok())
            .unwrap_or(0);
        if major < 20 {
            return Err(format!(
                "{} is {version:?}: the browser driver needs Node.js >= 20",
                node.display()
            ));
        }
        let binary = kind.binary();
        if !binary.is_file() {
            return Err(format!(
                "{} not found: the {kind} tests need a real {kind} (`apt-get install -y {}`; \
                 `make deps` does it) or {} pointing at one",
                binary.display(),
                kind.debian_package(),
                kind.binary_env()
            ));
        }
        let dir = driver_dir();
        for file in ["sdp-driver.mjs".to_string(), format!("{}.mjs", kind.id())] {
            if !dir.join(&file).is_file() {
                return Err(format!("{}/{file} is missing", dir.display()));
            }
        }
        let package = kind.npm_package();
        if !lock_pins(&dir, package) {
            return Err(format!(
                "{package} (which drives {kind}) is not in {}/package-lock.json: add it to \
                 package.json and run `npm install` there",
                dir.display()
            ));
        }
        if !node_modules_current(&dir) && on_path("npm").is_none() {
            return Err(format!(
                "{}/node_modules is missing or stale ({package} among others) and npm is not \
                 on PATH (install npm, then `npm ci` there; `make deps` does it)",
                dir.display()
            ));
        }
        Ok(())
    }

    /// Panics with how to get one unless a headless Chromium can run here: the browser
    /// tests must fail, not skip, on a machine without it.
    pub fn require() {
        Self::require_kind(BrowserKind::Chromium)
    }

    /// Panics with [`Browser::available_kind`]'s reason unless a headless `kind` can run here.
    pub fn require_kind(kind: BrowserKind) {
        if let Err(why) = Browser::available_kind(kind) {
            panic!("headless {kind} is needed (make deps installs it): {why}");
        }
    }

    /// A browser in the calling test's network namespace with one peer connection `pc`.
    pub fn with_pc(pc: &str) -> Browser {
        let mut b = Browser::start_in(Netns::Inherit);
        b.new_pc(pc);
        b
    }

    /// Chromium in a private loopback-only network namespace (see [`Netns::Private`]).
    /// Panics with [`Browser::available`]'s reason if something is missing.
    pub fn start() -> Browser {
        Self::start_in(Netns::Private)
    }

    /// Chromium in the given network namespace.
    pub fn start_in(netns: Netns) -> Browser {
        Self::start_kind_in(BrowserKind::Chromium, netns)
    }

    /// Like [`Browser::start_in`], returning what went wrong instead of panicking.
    pub fn try_start_in(netns: Netns) -> Result<Browser, String> {
        Self::try_start_kind_in(BrowserKind::Chromium, netns)
    }

    /// Firefox in a private loopback-only network namespace (see [`Netns::Private`]).
    pub fn start_firefox() -> Browser {
        Self::start_kind_in(BrowserKind::Firefox, Netns::Private)
    }

    /// Firefox in the given network namespace.
    pub fn start_firefox_in(netns: Netns) -> Browser {
        Self::start_kind_in(BrowserKind::Firefox, netns)
    }

    /// `kind` in a private loopback-only network namespace.
    pub fn start_kind(kind: BrowserKind) -> Browser {
        Self::start_kind_in(kind, Netns::Private)
    }

    /// `kind` in the given network namespace; panics with the reason if it cannot start.
    pub fn start_kind_in(kind: BrowserKind, netns: Netns) -> Browser {
        Self::try_start_kind_in(kind, netns).unwrap_or_else(|e| panic!("headless {kind}: {e}"))
    }

    /// Like [`Browser::start_kind_in`], returning what went wrong instead of panicking.
    pub fn try_start_kind_in(kind: BrowserKind, netns: Netns) -> Result<Browser, String> {
        let began = Instant::now();
        Self::available_kind(kind)?;
        ensure_node_modules()?;
        let package = driver_dir()
            .join("node_modules")
            .join(kind.npm_package())
            .join("package.json");
        if !package.is_file() {
            return Err(format!(
                "{} is missing after npm ci: {} cannot be driven",
                package.display(),
                kind
            ));
        }
        let node = node_binary().expect("checked by available_kind()");
        let script = driver_dir().join("sdp-driver.mjs");

        let (mut cmd, netns_desc) = match &netns {
            Netns::Inherit => (Command::new(&node), "inherited".to_string()),
            Netns::Join(path) => {
                let mut c = Command::new("nsenter");
                c.arg(format!("--net={}", path.display())).arg(&node);
                (c, format!("joined {}", path.display()))
            }
            Netns::Private => match isolation() {
                Isolation::NetPid | Isolation::Net => {
                    let mut c = Command::new("unshare");
                    if matches!(isolation(), Isolation::NetPid) {
                        c.args(["--net", "--pid", "--fork", "--kill-child"]);
                    } else {
                        c.arg("--net");
                    }
                    c.args(["sh", "-c", "ip link set lo up && exec \"$0\" \"$@\""])
                        .arg(&node);
                    (c, "private (loopback only)".to_string())
                }
                Isolation::None(why) => {
                    eprintln!(
                        "browser: NOTICE: no private network namespace ({why}); {kind} runs \
                         in this one and gathers candidates on every interface"
                    );
                    (Command::new(&node), format!("none ({why})"))
                }
            },
        };
        cmd.arg(&script)
            .current_dir(driver_dir())
            .env("ESTUARY_BROWSER", kind.id())
            .env("PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD", "1")
            .env("PUPPETEER_SKIP_DOWNLOAD", "1")
            .env("CHROMIUM_BIN", chromium_binary())
            .env("FIREFOX_BIN", firefox_binary())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd
            .spawn()
            .map_err(|e| format!("spawning the driver ({cmd:?}): {e}"))?;

        let trace = std::env::var_os("ESTUARY_TRACE_BROWSER").is_some_and(|v| v == "1");
        let stderr = Arc::new(Mutex::new(VecDeque::new()));
        {
            let pipe = child.stderr.take().expect("piped stderr");
            let tail = Arc::clone(&stderr);
            std::thread::spawn(move || {
                for line in BufReader::new(pipe).lines() {
                    let Ok(line) = line else { break };
                    if trace {
                        eprintln!("browser: {line}");
                    }
                    let mut t = tail.lock().unwrap_or_else(|e| e.into_inner());
                    if t.len() == STDERR_TAIL {
                        t.pop_front();
                    }
                    t.push_back(line);
                }
            });
        }
        let (tx, replies) = mpsc::channel::<Line>();
        {
            let pipe = child.stdout.take().expect("piped stdout");
            std::thread::spawn(move || {
                for line in BufReader::new(pipe).lines() {
                    let Ok(line) = line else { break };
                    let parsed = serde_json::from_str::<Value>(&line).map_err(|_| line);
                    if tx.send(parsed).is_err() {
                        break;
                    }
                }
            });
        }
        let stdin = child.stdin.take();
        let mut b = Browser {
            kind,
            child,
            stdin,
            replies,
            stderr,
            next_id: 1,
            timeout: CALL_TIMEOUT,
            version: String::new(),
            profile_dir: PathBuf::new(),
            netns: netns_desc,
            startup: Duration::ZERO,
        };
        let ready = b
            .recv_until(Instant::now() + START_TIMEOUT, |v| v.get("ready").is_some())
            .map_err(|e| format!("waiting for the driver to start: {e}"))?;
        if ready["ready"] != json!(true) {
            return Err(format!(
                "the driver could not start {kind}: {}{}",
                ready["error"].as_str().unwrap_or("(no reason given)"),
                b.stderr_tail()
            ));
        }
        if ready["browser"] != json!(kind.id()) {
            return Err(format!(
                "asked for {kind}, the driver started {}{}",
                ready["browser"],
                b.stderr_tail()
            ));
        }
        b.version = ready["version"].as_str().unwrap_or_default().to_string();
        b.profile_dir = PathBuf::from(ready["profile"].as_str().unwrap_or_default());
        b.startup = began.elapsed();
        Ok(b)
    }

    /// Which browser this is.
    pub fn kind(&self) -> BrowserKind {
        self.kind
    }

    /// The browser's version: Chromium's, e.g. "156.0.8078.79", or "Firefox/153.8.0".
    pub fn version(&self) -> &str {
        &self.version
    }

    /// The fresh profile the browser runs with (Chromium's `--user-data-dir`, Firefox's
    /// `--profile`; removed when it exits). Every process of this browser has it in its
    /// environment, the main one also on its command line: [`live_processes_with`] finds them.
    pub fn profile_dir(&self) -> &Path {
        &self.profile_dir
    }

    /// The live processes of this browser (all of them, helpers included; not the driver).
    pub fn processes(&self) -> Vec<u32> {
        let marker = self.profile_dir.to_string_lossy();
        if marker.is_empty() {
            return Vec::new();
        }
        live_processes_with(&marker)
    }

    /// Which network namespace the browser runs in, in words.
    pub fn netns(&self) -> &str {
        &self.netns
    }

    /// How long [`Browser::start`] took, npm install included.
    pub fn startup_time(&self) -> Duration {
        self.startup
    }

    /// The limit for each later call (20 s by default).
    pub fn set_timeout(&mut self, timeout: Duration) {
        self.timeout = timeout;
    }

    fn stderr_tail(&self) -> String {
        let t = self.stderr.lock().unwrap_or_else(|e| e.into_inner());
        if t.is_empty() {
            String::new()
        } else {
            let lines: Vec<&str> = t.iter().map(String::as_str).collect();
            format!("\n--- driver stderr (tail) ---\n{}", lines.join("\n"))
        }
    }

    /// The next stdout line satisfying `want`, skipping others (late replies to calls that
    /// timed out).
    fn recv_until(
        &mut self,
        deadline: Instant,
        want: impl Fn(&Value) -> bool,
    ) -> Result<Value, String> {
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.replies.recv_timeout(left) {
                Ok(Ok(v)) if want(&v) => return Ok(v),
                Ok(Ok(_)) => continue,
                Ok(Err(raw)) => {
                    return Err(format!("garbled driver line {raw:?}{}", self.stderr_tail()))
                }
                Err(RecvTimeoutError::Timeout) => {
                    return Err(format!(
                        "no reply within the time limit{}",
                        self.stderr_tail()
                    ))
                }
                Err(RecvTimeoutError::Disconnected) => {
                    let status = self.child.wait().map(|s| s.to_string()).unwrap_or_default();
                    return Err(format!(
                        "the driver exited ({status}){}",
                        self.stderr_tail()
                    ));
                }
            }
        }
    }

    /// Send one command (an `id` is added) and return the driver's reply as is: `{"ok":true,
    /// ...}` or `{"ok":false,"error":...,"name":...}`. Panics if the driver does not answer
    /// within the timeout, has exited, or writes something that is not JSON.
    pub fn request(&mut self, cmd: Value) -> Value {
        self.try_request(cmd).unwrap_or_else(|e| panic!("{e}"))
    }

    /// Like [`Browser::request`], with a driver failure (timeout, exit, garbled or rejected
    /// command line) as `Err` instead of a panic. A late reply to a timed-out call is skipped
    /// by the next call.
    pub fn try_request(&mut self, mut cmd: Value) -> Result<Value, String> {
        let id = self.next_id;
        self.next_id += 1;
        cmd["id"] = json!(id);
        let what = cmd["cmd"].as_str().unwrap_or("?").to_string();
        let line = format!("{cmd}\n");
        let written = match self.stdin.as_mut() {
            Some(w) => w.write_all(line.as_bytes()).and_then(|()| w.flush()),
            None => Err(std::io::Error::other("stdin already closed")),
        };
        if let Err(e) = written {
            return Err(format!(
                "browser driver: sending {what}: {e}{}",
                self.stderr_tail()
            ));
        }
        let deadline = Instant::now() + self.timeout;
        match self.recv_until(deadline, |v| v.get("id") == Some(&json!(id))) {
            Ok(v) if v["name"] == "DriverError" || v["name"] == "ProtocolError" => Err(format!(
                "browser driver failed {what}: {}{}",
                v["error"].as_str().unwrap_or_default(),
                self.stderr_tail()
            )),
            Ok(v) => Ok(v),
            Err(e) => Err(format!(
                "browser driver, {what} ({:?} limit): {e}",
                self.timeout
            )),
        }
    }

    /// A reply's `sdp` on success, the browser's error message verbatim on refusal.
    fn sdp_reply(reply: Value) -> Result<String, String> {
        if reply["ok"] == json!(true) {
            Ok(reply["sdp"]
                .as_str()
                .expect("reply carries sdp")
                .to_string())
        } else {
            Err(reply["error"].as_str().unwrap_or_default().to_string())
        }
    }

    fn expect_ok(&mut self, cmd: Value) {
        let what = cmd.to_string();
        let reply = self.request(cmd);
        assert_eq!(
            reply["ok"],
            json!(true),
            "browser: {what} failed: {}",
            reply["error"]
        );
    }

    /// A new RTCPeerConnection named `name` with the browser's defaults and no ICE servers.
    pub fn new_pc(&mut self, name: &str) {
        self.expect_ok(json!({"cmd": "new", "pc": name}));
    }

    /// A new RTCPeerConnection with the given RTCConfiguration (e.g.
    /// `json!({"bundlePolicy": "max-bundle"})`).
    pub fn new_pc_with(&mut self, name: &str, config: Value) {
        self.expect_ok(json!({"cmd": "new", "pc": name, "config": config}));
    }

    /// One transceiver (sendrecv, no track) per "audio"/"video" and a data channel per "data",
    /// then createOffer + setLocalDescription; the SDP after ICE gathering (3 s at most).
    /// `audio_codecs` restricts the audio transceivers with setCodecPreferences ("opus",
    /// "PCMU/8000", "telephone-event/8000"...).
    pub fn offer(
        &mut self,
        pc: &str,
        media: &[&str],
        audio_codecs: Option<&[&str]>,
    ) -> Result<String, String> {
        let mut cmd = json!({"cmd": "offer", "pc": pc, "media": media});
        if let Some(codecs) = audio_codecs {
            cmd["codecs"] = json!({ "audio": codecs });
        }
        Self::sdp_reply(self.request(cmd))
    }

    /// Like [`Browser::offer`], but sending the fake devices' getUserMedia tracks (a beep and
    /// a test pattern), as a calling web app would.
    pub fn offer_with_fake_media(&mut self, pc: &str, media: &[&str]) -> Result<String, String> {
        let cmd = json!({"cmd": "offer", "pc": pc, "media": media, "tracks": "fake"});
        Self::sdp_reply(self.request(cmd))
    }

    /// [`Browser::offer_with_fake_media`] with the audio codecs restricted as in
    /// [`Browser::offer`] (e.g. `["opus"]` for a browser that offers nothing else).
    pub fn offer_with_fake_media_codecs(
        &mut self,
        pc: &str,
        media: &[&str],
        audio_codecs: &[&str],
    ) -> Result<String, String> {
        let cmd = json!({"cmd": "offer", "pc": pc, "media": media, "tracks": "fake", "codecs": { "audio": audio_codecs }});
        Self::sdp_reply(self.request(cmd))
    }

    /// [`Browser::offer_with_fake_media`] with each kind's codecs restricted, e.g.
    /// `{"audio": ["opus"], "video": ["VP8"]}` for a browser without H.264.
    pub fn offer_with_fake_media_restricted(
        &mut self,
        pc: &str,
        media: &[&str],
        codecs: Value,
    ) -> Result<String, String> {
        let cmd =
            json!({"cmd": "offer", "pc": pc, "media": media, "tracks": "fake", "codecs": codecs});
        Self::sdp_reply(self.request(cmd))
    }

    /// One frame of `pc`'s received (`remote`) or sent (`local`) video track, drawn on a
    /// canvas: `{"width", "height", "meanLuma"}` (BT.601, 0-255). An error when no frame was
    /// rendered within 5 s.
    pub fn video_frame(&mut self, pc: &str, track: &str) -> Result<Value, String> {
        let reply = self.request(json!({"cmd": "video-frame", "pc": pc, "track": track}));
        if reply["ok"] == true {
            Ok(reply)
        } else {
            Err(reply["error"]
                .as_str()
                .unwrap_or("video-frame failed")
                .to_owned())
        }
    }

    /// RTCDTMFSender.insertDTMF(tones, duration_ms, gap_ms) on the audio sender of `pc`: RFC
    /// 4733 telephone events, as a web app's dial pad sends them.
    pub fn insert_dtmf(
        &mut self,
        pc: &str,
        tones: &str,
        duration_ms: u32,
        gap_ms: u32,
    ) -> Result<(), String> {
        let reply = self.request(json!({"cmd": "dtmf", "pc": pc, "tones": tones, "duration": duration_ms, "gap": gap_ms}));
        if reply["ok"] == true {
            Ok(())
        } else {
            Err(reply["error"].as_str().unwrap_or("dtmf failed").to_owned())
        }
    }

    /// setRemoteDescription({type: "answer", sdp}).
    pub fn remote_answer(&mut self, pc: &str, sdp: &str) -> Result<(), String> {
        let reply = self.request(json!({"cmd": "remote-answer", "pc": pc, "sdp": sdp}));
        if reply["ok"] == json!(true) {
            Ok(())
        } else {
            Err(reply["error"].as_str().unwrap_or_default().to_string())
        }
    }

    /// setRemoteDescription({type: "offer", sdp}), createAnswer, setLocalDescription; the
    /// answer after ICE gathering (3 s at most).
    pub fn remote_offer(&mut self, pc: &str, sdp: &str) -> Result<String, String> {
        Self::sdp_reply(self.request(json!({"cmd": "remote-offer", "pc": pc, "sdp": sdp})))
    }

    /// Like [`Browser::remote_offer`], answering with the fake devices' getUserMedia tracks on
    /// every audio and video m-line (sendrecv), as a called web app would.
    pub fn remote_offer_with_fake_media(&mut self, pc: &str, sdp: &str) -> Result<String, String> {
        let cmd = json!({"cmd": "remote-offer", "pc": pc, "sdp": sdp, "tracks": "fake"});
        Self::sdp_reply(self.request(cmd))
    }

    /// A summary of getStats: the connection's states, RTP streams, nominated candidate pairs,
    /// DTLS transports and data channels.
    pub fn stats(&mut self, pc: &str) -> Result<Value, String> {
        let reply = self.request(json!({"cmd": "stats", "pc": pc}));
        if reply["ok"] == json!(true) {
            Ok(reply["stats"].clone())
        } else {
            Err(reply["error"].as_str().unwrap_or_default().to_string())
        }
    }

    /// Close and forget the RTCPeerConnection `pc`.
    pub fn close(&mut self, pc: &str) {
        self.expect_ok(json!({"cmd": "close", "pc": pc}));
    }

    /// SIGKILL every process of this browser ([`Browser::processes`]; the driver stays): a
    /// crashed browser or a lost network, gone without DTLS close_notify, BYE or anything
    /// else. Returns how many processes were killed; later page and peer-connection calls
    /// fail.
    pub fn kill_browser(&mut self) -> usize {
        let pids = self.processes();
        for pid in &pids {
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
        }
        pids.len()
    }

    /// [`Browser::kill_browser`], by its older name (whichever browser this is).
    pub fn kill_chromium(&mut self) -> usize {
        self.kill_browser()
    }

    // ---- web pages (a softphone under test) ----

    /// The reply's `field` on success, the page's or the automation library's reason on
    /// failure.
    fn page_reply(reply: Value, field: &str) -> Result<Value, String> {
        if reply["ok"] == json!(true) {
            Ok(reply[field].clone())
        } else {
            Err(reply["error"].as_str().unwrap_or_default().to_string())
        }
    }

    /// Open `url` in a new tab named `page` (certificate errors ignored; every
    /// RTCPeerConnection the page makes is tracked for [`Browser::page_stats`]). Returns the
    /// page's title.
    pub fn page_open(&mut self, page: &str, url: &str) -> Result<String, String> {
        let reply = self.request(json!({"cmd": "page-open", "page": page, "url": url}));
        Self::page_reply(reply, "title").map(|v| v.as_str().unwrap_or_default().to_string())
    }

    /// Type `value` into the input `selector`.
    pub fn page_fill(&mut self, page: &str, selector: &str, value: &str) -> Result<(), String> {
        let cmd = json!({"cmd": "page-fill", "page": page, "selector": selector, "value": value});
        Self::page_reply(self.request(cmd), "ok").map(drop)
    }

    /// Choose the option with `value` in the `<select>` `selector`.
    pub fn page_select(&mut self, page: &str, selector: &str, value: &str) -> Result<(), String> {
        let cmd = json!({"cmd": "page-select", "page": page, "selector": selector, "value": value});
        Self::page_reply(self.request(cmd), "ok").map(drop)
    }

    /// Tick or untick the checkbox `selector`.
    pub fn page_check(&mut self, page: &str, selector: &str, checked: bool) -> Result<(), String> {
        let cmd =
            json!({"cmd": "page-check", "page": page, "selector": selector, "checked": checked});
        Self::page_reply(self.request(cmd), "ok").map(drop)
    }

    /// Click `selector` (waiting until it is enabled).
    pub fn page_click(&mut self, page: &str, selector: &str) -> Result<(), String> {
        let cmd = json!({"cmd": "page-click", "page": page, "selector": selector});
        Self::page_reply(self.request(cmd), "ok").map(drop)
    }

    /// Wait until `selector`'s attribute `attr` is one of `values`; returns which, or the
    /// last value seen when `limit` (at most the call timeout) passed.
    pub fn page_wait(
        &mut self,
        page: &str,
        selector: &str,
        attr: &str,
        values: &[&str],
        limit: Duration,
    ) -> Result<String, String> {
        let limit = limit.min(self.timeout.saturating_sub(Duration::from_secs(1)));
        let cmd = json!({"cmd": "page-wait", "page": page, "selector": selector, "attr": attr,
                         "values": values, "timeoutMs": limit.as_millis() as u64});
        Self::page_reply(self.request(cmd), "value")
            .map(|v| v.as_str().unwrap_or_default().to_string())
    }

    /// The visible text of `selector` (e.g. the page's own log).
    pub fn page_text(&mut self, page: &str, selector: &str) -> Result<String, String> {
        let cmd = json!({"cmd": "page-text", "page": page, "selector": selector});
        Self::page_reply(self.request(cmd), "text")
            .map(|v| v.as_str().unwrap_or_default().to_string())
    }

    /// [`Browser::stats`] of the newest RTCPeerConnection the page made.
    pub fn page_stats(&mut self, page: &str) -> Result<Value, String> {
        Self::page_reply(
            self.request(json!({"cmd": "page-stats", "page": page})),
            "stats",
        )
    }

    /// One frame of the page's own `<video>` element `selector` (e.g. the demo page's
    /// `#remote-video`), as [`Browser::video_frame`] samples a peer connection's track.
    pub fn page_video_frame(&mut self, page: &str, selector: &str) -> Result<Value, String> {
        let reply = self.request(json!({"cmd": "page-video-frame", "page": page, "selector": selector}));
        if reply["ok"] == true {
            Ok(reply)
        } else {
            Err(reply["error"].as_str().unwrap_or("page-video-frame failed").to_owned())
        }
    }

    /// Close the tab.
    pub fn page_close(&mut self, page: &str) {
        self.expect_ok(json!({"cmd": "page-close", "page": page}));
    }
}

impl Drop for Browser {
    /// Closing stdin makes the driver close the browser and remove its profile; if that takes
    /// more than a few seconds the driver is killed (in a private namespace that kills every
    /// process in it, the browser included).
    fn drop(&mut self) {
        drop(self.stdin.take());
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            match self.child.try_wait() {
                Ok(Some(_)) => break,
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20))
                }
                _ => {
                    let _ = self.child.kill();
                    let _ = self.child.wait();
                    break;
                }
            }
        }
        if !self.profile_dir.as_os_str().is_empty() {
            let _ = std::fs::remove_dir_all(&self.profile_dir);
        }
    }
}

// Tests may keep a browser in a static or move it across await points.
const _: fn() = || {
    fn is_send<T: Send>() {}
    is_send::<Browser>();
};
