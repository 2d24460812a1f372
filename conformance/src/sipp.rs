//! sipp (Debian package `sip-tester`) as the IMS-side user agent.
//!
//! Every run is bounded: `-m` caps the calls, `-timeout ... -timeout_error` makes sipp exit
//! (and fail) on its own, and [`Sipp::wait`] kills it if even that does not happen. Every
//! message sipp sent or received is logged (`-trace_msg -message_file`) and returned, so a
//! test can assert on exactly what the IMS side saw.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use tokio::process::{Child, Command};

use crate::msg::SipMsg;
use crate::net::{scratch_dir, tcp_port_listening, udp_port_in_use};

/// The directory of the sipp scenarios shipped with this crate.
pub fn scenario_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios")
}

/// The sipp binary: `SIPP_BIN` or `sipp` on PATH. A missing sipp fails the test: CI installs
/// it (`make deps`), and a silently skipped real-peer test would prove nothing.
pub fn sipp_binary() -> PathBuf {
    if let Some(p) = std::env::var_os("SIPP_BIN") {
        return PathBuf::from(p);
    }
    let found = std::env::var_os("PATH").map(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join("sipp"))
            .find(|p| p.is_file())
    });
    match found.flatten() {
        Some(p) => p,
        None => panic!(
            "sipp not found on PATH: these tests need a real IMS-side peer. Install the Debian \
             package sip-tester (`apt-get install -y sip-tester`; `make deps`/`make test` do it) \
             or point SIPP_BIN at a sipp binary"
        ),
    }
}

/// Which way a logged message went, from sipp's point of view.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dir {
    Sent,
    Received,
}

/// One message from sipp's message log.
#[derive(Clone, Debug)]
pub struct Logged {
    pub dir: Dir,
    /// The message text exactly as logged.
    pub text: String,
    /// The parsed message; `None` if it did not parse (the text is still checked for leaks).
    pub msg: Option<SipMsg>,
}

/// A sipp run to start.
pub struct SippBuilder {
    scenario: PathBuf,
    label: String,
    port: u16,
    remote: Option<SocketAddr>,
    calls: u32,
    timeout: Duration,
    service: Option<String>,
    keys: Vec<(String, String)>,
    extra: Vec<String>,
    tcp: bool,
}

/// A running sipp.
pub struct Sipp {
    child: Option<Child>,
    pub port: u16,
    label: String,
    dir: PathBuf,
    limit: Duration,
}

/// What a finished sipp run left behind.
#[derive(Debug)]
pub struct SippRun {
    pub label: String,
    pub status: Option<ExitStatus>,
    pub port: u16,
    pub messages: Vec<Logged>,
    pub screen: String,
    pub errors: String,
    pub dir: PathBuf,
}

impl Sipp {
    /// sipp running `scenario` (a file name in conformance/scenarios) on 127.0.0.1:`port`
    /// (UDP unless [`SippBuilder::tcp`]), waiting for the gateway (a UAS scenario).
    pub fn uas(scenario: &str, port: u16) -> SippBuilder {
        SippBuilder::new(scenario, port, None)
    }

    /// sipp running `scenario` on 127.0.0.1:`port`, sending to `remote` (a UAC scenario).
    pub fn uac(scenario: &str, port: u16, remote: SocketAddr) -> SippBuilder {
        SippBuilder::new(scenario, port, Some(remote))
    }

    /// Wait (bounded) for sipp to exit and collect its logs. sipp is killed if it outlives
    /// its own `-timeout` by more than a few seconds.
    pub async fn wait(mut self) -> SippRun {
        let mut child = self.child.take().expect("sipp already waited for");
        let status =
            match tokio::time::timeout(self.limit + Duration::from_secs(5), child.wait()).await {
                Ok(Ok(s)) => Some(s),
                Ok(Err(e)) => panic!("waiting for sipp ({}): {e}", self.label),
                Err(_) => {
                    let _ = child.kill().await;
                    None
                }
            };
        self.collect(status)
    }

    /// Stop sipp now (for runs a test ends early) and collect its logs.
    pub async fn stop(mut self) -> SippRun {
        let mut child = self.child.take().expect("sipp already waited for");
        // An early exit is the most useful thing to report, so keep its status.
        if let Ok(Some(status)) = child.try_wait() {
            return self.collect(Some(status));
        }
        let _ = child.kill().await;
        let _ = tokio::time::timeout(Duration::from_secs(5), child.wait()).await;
        self.collect(None)
    }

    fn collect(&self, status: Option<ExitStatus>) -> SippRun {
        let read = |name: &str| std::fs::read_to_string(self.dir.join(name)).unwrap_or_default();
        let log = read("messages.log");
        SippRun {
            label: self.label.clone(),
            status,
            port: self.port,
            messages: parse_message_log(&log),
            screen: read("screen.txt"),
            errors: read("errors.log"),
            dir: self.dir.clone(),
        }
    }
}

impl Drop for Sipp {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            let _ = child.start_kill();
        }
    }
}

impl SippBuilder {
    fn new(scenario: &str, port: u16, remote: Option<SocketAddr>) -> SippBuilder {
        SippBuilder {
            scenario: scenario_dir().join(scenario),
            label: scenario.trim_end_matches(".xml").to_owned(),
            port,
            remote,
            calls: 1,
            timeout: Duration::from_secs(30),
            service: None,
            keys: Vec::new(),
            extra: Vec::new(),
            tcp: false,
        }
    }

    /// SIP over TCP (`-t t1`, one connection) instead of UDP.
    pub fn tcp(mut self) -> Self {
        self.tcp = true;
        self
    }

    /// Number of calls sipp handles before it exits (`-m`), 1 by default.
    pub fn calls(mut self, n: u32) -> Self {
        self.calls = n;
        self
    }

    /// sipp's global timeout: past it sipp exits with a failure status.
    pub fn timeout(mut self, t: Duration) -> Self {
        self.timeout = t;
        self
    }

    /// `-s`: the `[service]` keyword (user part of a UAC's Request-URI).
    pub fn service(mut self, s: &str) -> Self {
        self.service = Some(s.to_owned());
        self
    }

    /// `-key NAME VALUE`: a `[NAME]` keyword for the scenario.
    pub fn key(mut self, name: &str, value: &str) -> Self {
        self.keys.push((name.to_owned(), value.to_owned()));
        self
    }

    /// Extra raw command-line arguments.
    pub fn arg(mut self, a: &str) -> Self {
        self.extra.push(a.to_owned());
        self
    }

    /// Start sipp and, for a UAS, wait (bounded) until its UDP port is bound.
    pub async fn start(self) -> Sipp {
        let bin = sipp_binary();
        assert!(
            self.scenario.is_file(),
            "sipp scenario {} missing",
            self.scenario.display()
        );
        let dir = scratch_dir(&format!("sipp-{}", self.label));
        let mut cmd = Command::new(&bin);
        if let Some(remote) = self.remote {
            cmd.arg(remote.to_string());
        }
        let secs = self.timeout.as_secs().max(1);
        cmd.arg("-sf")
            .arg(&self.scenario)
            .args(["-i", "127.0.0.1", "-p", &self.port.to_string()])
            .args(["-t", if self.tcp { "t1" } else { "u1" }])
            .args(["-m", &self.calls.to_string()])
            .args(["-timeout", &format!("{secs}s"), "-timeout_error"])
            .args(["-max_retrans", "5"])
            .arg("-trace_msg")
            .arg("-message_file")
            .arg(dir.join("messages.log"))
            .arg("-trace_err")
            .arg("-error_file")
            .arg(dir.join("errors.log"))
            .arg("-nostdin");
        if let Some(s) = &self.service {
            cmd.args(["-s", s]);
        }
        for (k, v) in &self.keys {
            cmd.args(["-key", k, v]);
        }
        cmd.args(&self.extra);
        let screen =
            std::fs::File::create(dir.join("screen.txt")).expect("create sipp screen file");
        let screen_err = screen.try_clone().expect("clone file handle");
        cmd.stdin(Stdio::null())
            .stdout(screen)
            .stderr(screen_err)
            .current_dir(&dir)
            .kill_on_drop(true);
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()));
        let tcp = self.tcp;
        let mut sipp = Sipp {
            child: Some(child),
            port: self.port,
            label: self.label,
            dir,
            limit: self.timeout,
        };
        // Ready once its socket is bound (a UAC over TCP binds nothing until it connects).
        if tcp && self.remote.is_some() {
            return sipp;
        }
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        let bound = |port| {
            if tcp {
                tcp_port_listening(port)
            } else {
                udp_port_in_use(port)
            }
        };
        while !bound(sipp.port) {
            if let Some(Ok(Some(status))) = sipp.child.as_mut().map(|c| c.try_wait()) {
                let screen =
                    std::fs::read_to_string(sipp.dir.join("screen.txt")).unwrap_or_default();
                panic!("sipp {} exited at start ({status}):\n{screen}", sipp.label);
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "sipp {} did not bind port {}",
                sipp.label,
                sipp.port
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        sipp
    }
}

impl Drop for SippRun {
    /// The logs stay on disk only when the test fails (their path is in [`SippRun::describe`]).
    fn drop(&mut self) {
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

impl SippRun {
    /// Whether sipp exited 0: every call of the scenario went as written.
    pub fn succeeded(&self) -> bool {
        self.status.is_some_and(|s| s.success())
    }

    /// Panic with diagnostics unless sipp exited 0.
    pub fn assert_success(&self) {
        assert!(
            self.succeeded(),
            "sipp {} did not succeed: {}",
            self.label,
            self.describe()
        );
    }

    /// Exit status, unexpected-message log, the tail of the screen and the messages.
    pub fn describe(&self) -> String {
        let screen_tail: Vec<&str> = self.screen.lines().rev().take(40).collect();
        let screen_tail: Vec<&str> = screen_tail.into_iter().rev().collect();
        format!(
            "status {:?} (logs in {})\n--- sipp errors ---\n{}\n--- sipp screen (tail) ---\n{}\n--- messages sipp saw ---\n{}",
            self.status,
            self.dir.display(),
            self.errors,
            screen_tail.join("\n"),
            self.transcript()
        )
    }

    /// Every logged message, marked `>>` (sent by sipp) or `<<` (received by sipp).
    pub fn transcript(&self) -> String {
        self.messages
            .iter()
            .map(|m| {
                format!(
                    "{} {}",
                    if m.dir == Dir::Sent { ">>" } else { "<<" },
                    m.text.trim_end()
                )
            })
            .collect::<Vec<_>>()
            .join("\n\n")
    }

    /// Parsed messages sipp received.
    pub fn received(&self) -> Vec<&SipMsg> {
        self.messages
            .iter()
            .filter(|m| m.dir == Dir::Received)
            .filter_map(|m| m.msg.as_ref())
            .collect()
    }

    /// Parsed messages sipp sent.
    pub fn sent(&self) -> Vec<&SipMsg> {
        self.messages
            .iter()
            .filter(|m| m.dir == Dir::Sent)
            .filter_map(|m| m.msg.as_ref())
            .collect()
    }

    /// Requests with `method` that sipp received, in order.
    pub fn received_requests(&self, method: &str) -> Vec<&SipMsg> {
        self.received()
            .into_iter()
            .filter(|m| m.is_request() && m.method() == method)
            .collect()
    }

    /// Responses sipp received to requests of `method`.
    pub fn received_responses(&self, method: &str) -> Vec<&SipMsg> {
        self.received()
            .into_iter()
            .filter(|m| m.is_response() && m.method() == method)
            .collect()
    }

    /// Texts of every message sipp received.
    pub fn received_texts(&self) -> Vec<&str> {
        self.messages
            .iter()
            .filter(|m| m.dir == Dir::Received)
            .map(|m| m.text.as_str())
            .collect()
    }
}

/// Split sipp's `-trace_msg` log into messages. Each entry starts with a line of dashes and a
/// timestamp, then "UDP message sent (N bytes):" or "UDP message received [N] bytes :", a
/// blank line and the message.
pub fn parse_message_log(log: &str) -> Vec<Logged> {
    let mut out = Vec::new();
    for entry in log
        .split("-----------------------------------------------")
        .skip(1)
    {
        let mut lines = entry.splitn(3, '\n');
        let _timestamp = lines.next();
        let what = lines.next().unwrap_or_default();
        let dir = if what.contains("message sent") {
            Dir::Sent
        } else if what.contains("message received") {
            Dir::Received
        } else {
            continue;
        };
        let text = lines
            .next()
            .unwrap_or_default()
            .trim_start_matches(['\r', '\n'])
            .to_owned();
        if text.trim().is_empty() {
            continue;
        }
        let msg = SipMsg::parse(&text).ok();
        out.push(Logged { dir, text, msg });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_log() {
        let log = "----------------------------------------------- 2026-01-01 00:00:00.000\n\
                   UDP message received [20] bytes :\n\nOPTIONS sip:a SIP/2.0\r\nCall-ID: x\r\n\r\n\n\
                   ----------------------------------------------- 2026-01-01 00:00:00.001\n\
                   UDP message sent (20 bytes):\n\nSIP/2.0 200 OK\r\nCall-ID: x\r\nCSeq: 1 OPTIONS\r\n\r\n\n";
        let m = parse_message_log(log);
        assert_eq!(m.len(), 2);
        assert_eq!(m[0].dir, Dir::Received);
        assert_eq!(m[0].msg.as_ref().unwrap().method(), "OPTIONS");
        assert_eq!(m[1].msg.as_ref().unwrap().status(), 200);
    }
}
