//! redis-server (Debian `redis-server`) started for real on a free loopback port, with no
//! persistence, as the cluster's shared state; redis-cli reads what the daemon wrote.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running redis-server, stopped when dropped.
pub struct Redis {
    child: Option<Child>,
    pub port: u16,
}

impl Redis {
    /// Fails loudly when redis-server or redis-cli is missing.
    pub fn require() {
        let ok = |bin: &str| Command::new(bin).arg("--version").output().is_ok_and(|o| o.status.success());
        assert!(ok("redis-server") && ok("redis-cli"), "redis-server and redis-cli are needed: apt-get install redis-server (make deps installs it)");
    }

    pub fn start() -> Redis {
        Redis::require();
        let port = crate::net::free_tcp_port();
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--daemonize", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server starts");
        let r = Redis { child: Some(child), port };
        let deadline = Instant::now() + Duration::from_secs(10);
        while r.cli(&["PING"]).trim() != "PONG" {
            assert!(Instant::now() < deadline, "redis-server did not answer on port {port}");
            std::thread::sleep(Duration::from_millis(50));
        }
        r
    }

    /// The URL the daemon's cluster.redis takes.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// One redis-cli command; its output.
    pub fn cli(&self, args: &[&str]) -> String {
        let out = Command::new("redis-cli").args(["-p", &self.port.to_string()]).args(args).output().expect("redis-cli runs");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Stops it now (an outage).
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.kill();
    }
}
