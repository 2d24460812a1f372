//! redis-server (Debian `redis-server`) started for real on a free loopback port, with no
//! persistence, as the cluster's shared state; redis-cli reads what the daemon wrote.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running redis-server, stopped when dropped.
pub struct Redis {
    child: Option<Child>,
    pub port: u16,
    /// Its working directory: a replication's full sync writes an RDB file even without
    /// persistence, and it must not land in the test's own directory.
    dir: std::path::PathBuf,
}

impl Redis {
    /// Fails loudly when redis-server or redis-cli is missing.
    pub fn require() {
        let ok = |bin: &str| Command::new(bin).arg("--version").output().is_ok_and(|o| o.status.success());
        assert!(ok("redis-server") && ok("redis-cli"), "redis-server and redis-cli are needed: apt-get install redis-server (make deps installs it)");
    }

    pub fn start() -> Redis {
        Redis::spawn(&[], |r| r.cli(&["PING"]).trim() == "PONG")
    }

    /// A replica of `master` on a free port, once linked to it.
    pub fn replica_of(master: &Redis) -> Redis {
        let of = master.port.to_string();
        Redis::spawn(&["--replicaof", "127.0.0.1", &of], |r| r.cli(&["INFO", "replication"]).contains("master_link_status:up"))
    }

    /// redis-server on a free port with `extra` arguments, once `ready` holds (10 s at most).
    fn spawn(extra: &[&str], ready: impl Fn(&Redis) -> bool) -> Redis {
        Redis::require();
        let port = crate::net::free_tcp_port();
        let dir = std::env::temp_dir().join(format!("estuary-redis-{port}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("redis dir");
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--daemonize", "no"])
            .arg("--dir")
            .arg(&dir)
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server starts");
        let r = Redis { child: Some(child), port, dir };
        let deadline = Instant::now() + Duration::from_secs(10);
        while !ready(&r) {
            assert!(Instant::now() < deadline, "redis-server on port {port} not ready within 10 s");
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
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A Redis Sentinel (redis-server --sentinel) watching one master under a name, with a quorum
/// of one and fast failure detection, on a free loopback port; stopped when dropped.
pub struct Sentinel {
    child: Option<Child>,
    pub port: u16,
    pub master_name: String,
    dir: std::path::PathBuf,
}

impl Sentinel {
    pub fn start(master: &Redis, master_name: &str) -> Sentinel {
        Redis::require();
        let port = crate::net::free_tcp_port();
        let dir = std::env::temp_dir().join(format!("estuary-sentinel-{port}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("sentinel dir");
        let conf = dir.join("sentinel.conf");
        std::fs::write(
            &conf,
            format!(
                "port {port}\nbind 127.0.0.1\ndir {}\nsentinel monitor {master_name} 127.0.0.1 {} 1\nsentinel down-after-milliseconds {master_name} 1000\nsentinel failover-timeout {master_name} 5000\n",
                dir.display(),
                master.port
            ),
        )
        .expect("sentinel.conf written");
        let child = Command::new("redis-server").arg(&conf).arg("--sentinel").stdout(Stdio::null()).stderr(Stdio::null()).spawn().expect("redis-server --sentinel starts");
        let s = Sentinel { child: Some(child), port, master_name: master_name.to_owned(), dir };
        let deadline = Instant::now() + Duration::from_secs(10);
        while s.master_port().is_none() {
            assert!(Instant::now() < deadline, "the sentinel on port {port} did not name the master");
            std::thread::sleep(Duration::from_millis(50));
        }
        s
    }

    /// The master's port as the sentinel names it now.
    pub fn master_port(&self) -> Option<u16> {
        let out = Command::new("redis-cli")
            .args(["-p", &self.port.to_string(), "SENTINEL", "get-master-addr-by-name", &self.master_name])
            .output()
            .ok()?;
        String::from_utf8_lossy(&out.stdout).lines().nth(1)?.trim().parse().ok()
    }

    /// The URL the daemon's cluster.redis takes.
    pub fn url(&self) -> String {
        format!("redis-sentinel://127.0.0.1:{}/{}", self.port, self.master_name)
    }
}

impl Drop for Sentinel {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
