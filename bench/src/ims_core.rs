//! The IMS core `make bench` puts behind the daemon: Debian's Kamailio (configuration in
//! `bench/ims-core/kamailio.cfg`) on the daemon's `ims.next_hop` as registrar and
//! record-routing stateful proxy, forwarding every INVITE to the in-process test peer engine
//! of [`crate::load`], which answers and whose media tasks exchange RTP with the daemon
//! directly (Kamailio carries signalling only).
//!
//! A real proxy there means the gateway's IMS-side signalling meets what a deployment's
//! P/S-CSCF does to it (its Via and Record-Route, its transaction timers and retransmission
//! absorption, a registrar's 200) instead of a peer that answers in the same process; its
//! own CPU is measured apart and never counted in Estuary's figures.
//!
//! The conformance crate's Kamailio (`estuary_conformance::kamailio`) is the other core's
//! part: it routes calls to registered users back through the gateway's Path, listens on TLS,
//! and panics when something is wrong, as a test helper may; this one forwards to an
//! application server on UDP and reports errors.
//!
//! [`ImsCore::start`] writes the configuration into a temporary directory, has Kamailio
//! check it (`kamailio -c`), starts it in the foreground on a free 127.0.0.1 UDP port and
//! waits until it answers an OPTIONS; it is stopped by its PID (workers included) when the
//! [`ImsCore`] is dropped.

use std::net::{SocketAddr, UdpSocket};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use estuary_conformance::net::free_udp_port;

use crate::reference::{check_kamailio_cfg, spawn, wait_ready, Log, TempDir, MODULES};
use crate::{process_tree, ChildGuard};

const KAMAILIO_CFG: &str = include_str!("../ims-core/kamailio.cfg");

/// A running Kamailio acting as the IMS core.
pub struct ImsCore {
    /// Its UDP address: the daemon's `ims.next_hop`.
    pub sip: SocketAddr,
    // Field order is drop order: Kamailio, then its directory.
    kamailio: ChildGuard,
    _dir: TempDir,
    log: Log,
}

impl ImsCore {
    /// Starts Kamailio forwarding to the test peer on UDP 127.0.0.1:`app_port`.
    pub fn start(app_port: u16) -> Result<ImsCore, String> {
        let found = Command::new("kamailio").arg("-v").stdout(Stdio::null()).stderr(Stdio::null()).status().is_ok_and(|s| s.success());
        if !found || !Path::new(MODULES).join("registrar.so").is_file() {
            return Err("the benchmark's IMS core is Debian's kamailio, which is not installed: make bench installs it \
                        (or apt-get install kamailio); BENCH_IMS_CORE=testpeer runs without it"
                .into());
        }
        let dir = TempDir::new("ims-core")?;
        let sip = SocketAddr::from(([127, 0, 0, 1], free_udp_port()));
        let cfg_path = dir.0.join("kamailio.cfg");
        let cfg = KAMAILIO_CFG
            .replace("@SIP@", &sip.to_string())
            .replace("@CORE@", &format!("127.0.0.1:{app_port}"))
            .replace("@MODULES@", MODULES);
        std::fs::write(&cfg_path, cfg).map_err(|e| format!("{}: {e}", cfg_path.display()))?;
        check_kamailio_cfg(&cfg_path)?;
        let mut cmd = Command::new("kamailio");
        // -DD: the main process stays in the foreground (its workers fork from it); -E: log to
        // stderr; -Y: runtime files in our directory; -m: 128 MB of shared memory, room for
        // thousands of bindings and the transactions of a few hundred calls a second.
        cmd.args(["-DD", "-E", "-m", "128", "-M", "16", "-Y"]).arg(&dir.0).arg("-f").arg(&cfg_path);
        let (mut kamailio, log) = spawn(cmd, "kamailio")?;
        let never = format!("kamailio (IMS core) never answered OPTIONS on {sip}");
        wait_ready(&mut kamailio, &log, "kamailio (IMS core)", &never, || options_ping(sip))?;
        Ok(ImsCore { sip, kamailio, _dir: dir, log })
    }

    /// Kamailio's processes (the main one and its workers), now.
    pub fn pids(&self) -> Vec<u32> {
        process_tree(self.kamailio.pid())
    }

    /// The last `n` lines Kamailio printed.
    pub fn log_tail(&self, n: usize) -> String {
        self.log.tail(n)
    }
}

/// Whether a SIP OPTIONS to `to` is answered 200 within 300 ms.
fn options_ping(to: SocketAddr) -> bool {
    let Ok(s) = UdpSocket::bind("127.0.0.1:0") else { return false };
    let Ok(me) = s.local_addr() else { return false };
    let _ = s.set_read_timeout(Some(Duration::from_millis(300)));
    let req = format!(
        "OPTIONS sip:{to} SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch=z9hG4bK-bench-{}\r\nMax-Forwards: 70\r\n\
         From: <sip:bench@127.0.0.1>;tag=bench\r\nTo: <sip:{to}>\r\nCall-ID: bench-probe-{}\r\nCSeq: 1 OPTIONS\r\n\
         Content-Length: 0\r\n\r\n",
        rand::random::<u32>(),
        rand::random::<u32>()
    );
    if s.send_to(req.as_bytes(), to).is_err() {
        return false;
    }
    let mut buf = [0u8; 2048];
    matches!(s.recv_from(&mut buf), Ok((n, _)) if buf[..n].starts_with(b"SIP/2.0 200"))
}
