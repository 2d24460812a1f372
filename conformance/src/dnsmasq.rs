//! dnsmasq (Debian `dnsmasq`) started for real as the authoritative name server of the test's
//! IMS domain: NAPTR, SRV and A records from the command line, on a free loopback port.

use std::net::{SocketAddr, UdpSocket};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running dnsmasq, stopped when dropped.
pub struct Dnsmasq {
    child: Child,
    /// Where it answers (UDP and TCP).
    pub addr: SocketAddr,
    /// Its log (stderr), for a start that fails.
    log: std::path::PathBuf,
}

impl Dnsmasq {
    /// Fails loudly when dnsmasq is missing.
    pub fn require() {
        let ok = Command::new("dnsmasq").arg("--version").output().is_ok_and(|o| o.status.success());
        assert!(ok, "dnsmasq is needed: apt-get install dnsmasq-base (make deps installs it)");
    }

    /// Starts it with `records` (dnsmasq options such as "--srv-host=..."), answering only
    /// from them (no upstream, no /etc/hosts).
    pub fn start(records: &[String]) -> Dnsmasq {
        Dnsmasq::require();
        // dnsmasq listens on UDP and TCP: a port taken for either (another test's connection
        // may hold it between the probe and the start) makes it exit at once; so try again.
        let mut last = String::new();
        for _ in 0..5 {
            match Dnsmasq::start_on(crate::net::free_udp_tcp_port(), records) {
                Ok(d) => return d,
                Err(why) => last = why,
            }
        }
        panic!("dnsmasq did not start: {last}");
    }

    fn start_on(port: u16, records: &[String]) -> Result<Dnsmasq, String> {
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let mut cmd = Command::new("dnsmasq");
        cmd.args(["--keep-in-foreground", "--no-resolv", "--no-hosts", "--bind-interfaces", "--listen-address=127.0.0.1", "--pid-file=", "--log-facility=-"])
            .arg(format!("--port={port}"));
        // As root it would switch to "nobody", which cannot always read what it needs here.
        if std::env::var("USER").is_ok_and(|u| u == "root") || uid_is_root() {
            cmd.arg("--user=root");
        }
        let log = std::env::temp_dir().join(format!("estuary-dnsmasq-{port}-{}.log", std::process::id()));
        let err = std::fs::File::create(&log).expect("dnsmasq log file");
        let child = cmd.args(records).stdout(Stdio::null()).stderr(Stdio::from(err)).spawn().expect("dnsmasq starts");
        let mut d = Dnsmasq { child, addr, log };
        // Ready when it answers a query on its port: any well-formed reply will do.
        let deadline = Instant::now() + Duration::from_secs(10);
        let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
        sock.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
        // A query for "a." type A, id 0x4242.
        let query = [0x42, 0x42, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 1, b'a', 0, 0, 1, 0, 1];
        loop {
            let _ = sock.send_to(&query, addr);
            let mut buf = [0u8; 512];
            if sock.recv_from(&mut buf).is_ok_and(|(n, _)| n >= 12 && buf[0] == 0x42) {
                return Ok(d);
            }
            if let Ok(Some(status)) = d.child.try_wait() {
                let err = std::fs::read_to_string(&d.log).unwrap_or_default();
                return Err(format!("on port {port} it exited ({status}): {}", err.trim()));
            }
            assert!(Instant::now() < deadline, "dnsmasq did not answer on {addr} within 10 s");
        }
    }
}

/// Whether this process runs as root (dnsmasq then needs --user=root).
fn uid_is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("Uid:")).map(|l| l.split_whitespace().nth(1) == Some("0")))
        .unwrap_or(false)
}

impl Drop for Dnsmasq {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.log);
    }
}
