//! HAProxy (Debian `haproxy`) started for real in front of the daemon's web listener, from a
//! configuration the test writes: the load balancer of a clustered deployment.

use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running HAProxy, stopped when dropped.
pub struct Haproxy {
    child: Child,
    dir: PathBuf,
    /// The admin socket: short, for the 108 bytes a Unix socket path may take.
    admin: PathBuf,
}

impl Haproxy {
    /// Fails loudly when haproxy is missing.
    pub fn require() {
        let ok = Command::new("haproxy").arg("-v").output().is_ok_and(|o| o.status.success());
        assert!(ok, "haproxy is needed: apt-get install haproxy (make deps installs it)");
    }

    /// Starts `haproxy -db` (foreground) on `config`; waits (bounded) until every address in
    /// `listens` accepts. `{admin_socket}` in `config` becomes the path [`Haproxy::command`]
    /// talks to (`stats socket {admin_socket} level admin` in its global section).
    pub fn start(label: &str, config: &str, listens: &[SocketAddr]) -> Haproxy {
        Haproxy::require();
        let dir = std::env::temp_dir().join(format!("estuary-haproxy-{label}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("haproxy dir");
        let admin = std::env::temp_dir().join(format!("hap-{}-{:x}.sock", std::process::id(), label.bytes().fold(0u32, |h, b| h.wrapping_mul(31).wrapping_add(u32::from(b)))));
        let _ = std::fs::remove_file(&admin);
        let config = config.replace("{admin_socket}", &admin.to_string_lossy());
        let config = config.as_str();
        let cfg = dir.join("haproxy.cfg");
        std::fs::write(&cfg, config).expect("haproxy.cfg written");
        let check = Command::new("haproxy").arg("-c").arg("-f").arg(&cfg).output().expect("haproxy -c runs");
        assert!(check.status.success(), "haproxy rejects the test's configuration:\n{}\n{config}", String::from_utf8_lossy(&check.stderr));
        let child = Command::new("haproxy")
            .arg("-db")
            .arg("-f")
            .arg(&cfg)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("haproxy starts");
        let h = Haproxy { child, dir, admin };
        let deadline = Instant::now() + Duration::from_secs(10);
        for addr in listens {
            while TcpStream::connect_timeout(addr, Duration::from_millis(200)).is_err() {
                assert!(Instant::now() < deadline, "haproxy did not listen on {addr} within 10 s");
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        h
    }
}

impl Haproxy {
    /// Runs one command on the admin socket (see [`Haproxy::start`]); its answer.
    pub fn command(&self, command: &str) -> String {
        use std::io::{Read, Write};
        let path = &self.admin;
        let mut s = std::os::unix::net::UnixStream::connect(path).unwrap_or_else(|e| panic!("haproxy admin socket {}: {e}", path.display()));
        s.set_read_timeout(Some(Duration::from_secs(5))).expect("timeout set");
        s.write_all(format!("{command}\n").as_bytes()).expect("command written");
        let mut answer = String::new();
        let _ = s.read_to_string(&mut answer);
        answer
    }
}

impl Drop for Haproxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
        let _ = std::fs::remove_file(&self.admin);
    }
}
