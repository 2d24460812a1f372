//! The real `estuary` daemon, started as a separate process for a test.
//!
//! The binary is `ESTUARY_BIN` when set, else `target/debug/estuary` of this workspace
//! (`CARGO_TARGET_DIR` honoured). Build it first with `cargo build -p estuary`; `make test`
//! does. Every listener binds port 0 (the daemon reports the real ports on stdout), so tests
//! run side by side without port races; the daemon is killed when the [`Gateway`] is
//! dropped, and its stderr (the log) is kept for failure messages.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::net::loopback;

/// The daemon binary to test.
pub fn estuary_binary() -> PathBuf {
    if let Some(p) = std::env::var_os("ESTUARY_BIN") {
        return PathBuf::from(p);
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("..")
                .join("target")
        });
    let bin = target
        .join("debug")
        .join(format!("estuary{}", std::env::consts::EXE_SUFFIX));
    assert!(
        bin.is_file(),
        "the estuary daemon binary {} does not exist: build it with `cargo build -p estuary` \
         (`make test` does), or set ESTUARY_BIN",
        bin.display()
    );
    bin
}

/// Options for one daemon.
pub struct GatewayBuilder {
    sets: Vec<(String, String)>,
    next_hop: Option<String>,
    envs: Vec<(String, String)>,
    config: Option<PathBuf>,
}

/// A running daemon.
pub struct Gateway {
    child: Child,
    /// Plain WebSocket listener (`web.ws_listen`).
    pub ws_addr: SocketAddr,
    /// Secure WebSocket listener (`web.wss_listen`, self-signed certificate): also serves the
    /// demo page.
    pub wss_addr: SocketAddr,
    /// IMS-side UDP/TCP listener (`ims.listen`).
    pub ims_addr: SocketAddr,
    /// Admin HTTP listener (`admin.listen`).
    pub admin_addr: SocketAddr,
    /// SIP over TLS listener toward IMS (`ims.tls_listen`), when configured.
    pub ims_tls_addr: Option<SocketAddr>,
    stdout: Arc<Mutex<String>>,
    stderr: Arc<Mutex<String>>,
}

impl Gateway {
    /// The daemon's process id (benchmarks read its CPU time and memory from /proc).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn builder() -> GatewayBuilder {
        GatewayBuilder {
            sets: Vec::new(),
            next_hop: None,
            envs: Vec::new(),
            config: None,
        }
    }

    /// The daemon's log so far.
    pub fn log(&self) -> String {
        self.stderr
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// What the daemon printed on stdout (its listening report).
    pub fn stdout(&self) -> String {
        self.stdout
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Sends the process a signal (e.g. "TERM", "INT") with kill(1).
    pub fn signal(&self, name: &str) {
        let ok = std::process::Command::new("kill")
            .args([format!("-{name}"), self.child.id().to_string()])
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "kill -{name} {} failed", self.child.id());
    }

    /// Its exit status once it has exited, polling up to `limit`; `None` if still running.
    pub async fn wait_exit(&mut self, limit: std::time::Duration) -> Option<std::process::ExitStatus> {
        let deadline = std::time::Instant::now() + limit;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            if std::time::Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }

    /// GET `path` on the admin listener: (status, body).
    pub fn http_get(&self, path: &str) -> std::io::Result<(u16, String)> {
        http_get(self.admin_addr, path)
    }

    /// The value of metric `name` from /metrics, summed over its label sets (or the one series
    /// `name{label="value"}` names); `None` when the endpoint does not answer or the metric is
    /// absent.
    pub fn metric(&self, name: &str) -> Option<f64> {
        let (status, body) = self.http_get("/metrics").ok()?;
        if status != 200 {
            return None;
        }
        let mut found = None;
        for line in body.lines().filter(|l| !l.starts_with('#')) {
            let (series, value) = line.rsplit_once(' ')?;
            let metric = series.split('{').next().unwrap_or(series);
            if metric == name || series == name {
                *found.get_or_insert(0.0) += value.parse::<f64>().ok()?;
            }
        }
        found
    }

    /// The last `n` lines of the daemon's log, for failure messages.
    pub fn log_tail(&self, n: usize) -> String {
        let log = self.log();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!(
                "--- estuary log (tail) ---\n{}\n--- end of estuary log ---",
                self.log_tail(200)
            );
        }
    }
}

impl GatewayBuilder {
    /// `--set KEY=VALUE`.
    pub fn set(mut self, key: &str, value: &str) -> Self {
        self.sets.push((key.to_owned(), value.to_owned()));
        self
    }

    /// `--config FILE`: the daemon reads it (and re-reads it on SIGHUP); the `--set`
    /// overrides apply on top.
    pub fn config_file(mut self, path: &Path) -> Self {
        self.config = Some(path.to_owned());
        self
    }

    /// An environment variable for the daemon (e.g. ESTUARY_ENGINE_SEED).
    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.envs.push((key.to_owned(), value.to_owned()));
        self
    }

    pub fn next_hop_udp(mut self, port: u16) -> Self {
        self.next_hop = Some(format!("sip:127.0.0.1:{port};transport=udp"));
        self
    }

    /// Send every IMS-bound request over TCP to 127.0.0.1:`port`.
    pub fn next_hop_tcp(mut self, port: u16) -> Self {
        self.next_hop = Some(format!("sip:127.0.0.1:{port};transport=tcp"));
        self
    }

    /// Start the daemon on port 0 everywhere, read the real ports from its `listening KEY
    /// ADDR` report, and wait (bounded) until it printed `ready` and /healthz answers 200.
    pub async fn start(self) -> Gateway {
        let bin = estuary_binary();
        let any = "127.0.0.1:0".to_owned();
        let mut sets: Vec<(String, String)> = vec![
            ("web.ws_listen".into(), any.clone()),
            ("web.wss_listen".into(), any.clone()),
            ("ims.listen".into(), any.clone()),
            ("admin.listen".into(), any),
            ("log.level".into(), "debug".into()),
        ];
        // Daemons of parallel tests bind media ports: each gets its own window.
        let (min, max) = crate::net::media_port_window();
        sets.push(("media.port_min".into(), min.to_string()));
        sets.push(("media.port_max".into(), max.to_string()));
        if let Some(nh) = &self.next_hop {
            sets.push(("ims.next_hop".into(), nh.clone()));
        }
        // Later --set wins for the same key: the test's own settings go last.
        sets.extend(self.sets);
        let mut cmd = Command::new(&bin);
        cmd.envs(self.envs.iter().map(|(k, v)| (k, v)));
        cmd.arg("run");
        if let Some(path) = &self.config {
            cmd.arg("--config").arg(path);
        }
        for (k, v) in &sets {
            cmd.arg("--set").arg(format!("{k}={v}"));
        }
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()));
        let stdout = Arc::new(Mutex::new(String::new()));
        let stderr = Arc::new(Mutex::new(String::new()));
        pump_lines(child.stdout.take().expect("stdout piped"), stdout.clone());
        pump_lines(child.stderr.take().expect("stderr piped"), stderr.clone());
        let unset = loopback(0);
        let mut gw = Gateway {
            child,
            ws_addr: unset,
            wss_addr: unset,
            ims_addr: unset,
            admin_addr: unset,
            ims_tls_addr: None,
            stdout,
            stderr,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(Some(status)) = gw.child.try_wait() {
                // Give the readers a moment to drain the pipes before reporting.
                tokio::time::sleep(Duration::from_millis(100)).await;
                panic!(
                    "estuary exited at start ({status}); args {sets:?}\n--- stdout ---\n{}\n--- stderr ---\n{}",
                    gw.stdout(),
                    gw.log()
                );
            }
            if gw.stdout().lines().any(|l| l.trim() == "ready") {
                gw.apply_listening_report();
                if gw.admin_addr.port() != 0 && matches!(gw.http_get("/healthz"), Ok((200, _))) {
                    break;
                }
            }
            assert!(
                Instant::now() < deadline,
                "estuary not ready (stdout `ready`, listening report, /healthz 200) within 20 s\n\
                 --- stdout ---\n{}\n--- stderr ---\n{}",
                gw.stdout(),
                gw.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(
            gw.ws_addr.port() != 0 && gw.ims_addr.port() != 0,
            "estuary's listening report lacks web.ws_listen or ims.listen:\n{}",
            gw.stdout()
        );
        gw
    }
}

impl Gateway {
    /// Read the `listening KEY ADDR` lines the daemon prints on stdout for each listener.
    fn apply_listening_report(&mut self) {
        let out = self.stdout();
        for line in out.lines() {
            let mut parts = line.split_whitespace();
            if parts.next() != Some("listening") {
                continue;
            }
            let (Some(key), Some(addr)) = (parts.next(), parts.next()) else {
                continue;
            };
            let Ok(addr) = addr.parse::<SocketAddr>() else {
                continue;
            };
            match key {
                "web.ws_listen" => self.ws_addr = addr,
                "web.wss_listen" => self.wss_addr = addr,
                "ims.listen" => self.ims_addr = addr,
                "admin.listen" => self.admin_addr = addr,
                "ims.tls_listen" => self.ims_tls_addr = Some(addr),
                _ => {}
            }
        }
    }
}

fn pump_lines(src: impl Read + Send + 'static, into: Arc<Mutex<String>>) {
    std::thread::spawn(move || {
        let mut reader = BufReader::new(src);
        let mut line = String::new();
        loop {
            line.clear();
            match reader.read_line(&mut line) {
                Ok(0) | Err(_) => break,
                Ok(_) => into
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push_str(&line),
            }
        }
    });
}

/// A minimal HTTP/1.0 GET (the admin endpoint is plain HTTP on loopback).
pub fn http_get(addr: SocketAddr, path: &str) -> std::io::Result<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    s.set_read_timeout(Some(Duration::from_secs(3)))?;
    s.set_write_timeout(Some(Duration::from_secs(3)))?;
    write!(
        s,
        "GET {path} HTTP/1.0\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf)?;
    let text = String::from_utf8_lossy(&buf).into_owned();
    let status = text
        .lines()
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("bad HTTP response: {text:?}")))?;
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    Ok((status, body))
}
