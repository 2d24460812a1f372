//! Kamailio (Debian `kamailio` + `kamailio-tls-modules`) as the IMS core's stand-in: a
//! registrar that keeps the Path the gateway inserts (RFC 3327) and routes calls to a
//! registered AoR through it, record-routing INVITE dialogs, listening on UDP and on TLS with
//! a certificate from a CA made for the test (so the gateway can check it against
//! `ims.tls_ca`). Started for real by tests, killed when dropped.

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::net::{free_tcp_port, free_udp_port};

const MODULES: &str = "/usr/lib/x86_64-linux-gnu/kamailio/modules";

/// A running Kamailio.
pub struct Kamailio {
    child: Child,
    pub udp: SocketAddr,
    pub tls: SocketAddr,
    /// The test CA's certificate (PEM): the gateway's `ims.tls_ca`.
    pub ca: PathBuf,
    dir: PathBuf,
    log: Arc<Mutex<String>>,
}

impl Kamailio {
    /// Panics with the reason when Kamailio or its TLS module is not installed (`make deps`
    /// installs both): the tests that need it are never skipped.
    pub fn require() {
        let ok = Command::new("kamailio").arg("-v").output().is_ok_and(|o| o.status.success());
        assert!(ok && Path::new(MODULES).join("tls.so").is_file(), "kamailio with its TLS module is needed: apt-get install kamailio kamailio-tls-modules (make deps)");
    }

    /// Starts Kamailio on free loopback ports; waits (bounded) until its TLS port accepts.
    pub fn start(test: &str) -> Kamailio {
        Kamailio::require();
        let dir = std::env::temp_dir().join(format!("estuary-kamailio-{test}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("kamailio dir");
        make_certificates(&dir);
        let udp = SocketAddr::from(([127, 0, 0, 1], free_udp_port()));
        let tls = SocketAddr::from(([127, 0, 0, 1], free_tcp_port()));
        std::fs::write(dir.join("tls.cfg"), TLS_CFG.replace("DIR", &dir.to_string_lossy())).unwrap();
        let cfg = KAMAILIO_CFG
            .replace("UDP_LISTEN", &udp.to_string())
            .replace("TLS_LISTEN", &tls.to_string())
            .replace("MODULES", MODULES)
            .replace("DIR", &dir.to_string_lossy());
        let (child, log) = run(&dir, &cfg);
        let k = Kamailio { child, udp, tls, ca: dir.join("ca.pem"), dir, log };
        let deadline = Instant::now() + Duration::from_secs(15);
        while TcpStream::connect_timeout(&tls, Duration::from_millis(200)).is_err() {
            assert!(Instant::now() < deadline, "kamailio's TLS port {tls} never opened:\n{}", k.log());
            std::thread::sleep(Duration::from_millis(100));
        }
        k
    }

    /// A CA that did not sign Kamailio's certificate (PEM), for tests of the refusal.
    pub fn unrelated_ca(&self) -> PathBuf {
        openssl(&self.dir, &[&["req", "-x509"][..], &EC, &["-keyout", "other-ca.key", "-out", "other-ca.pem", "-days", "2", "-subj", "/CN=some other CA"]].concat());
        self.dir.join("other-ca.pem")
    }

    /// REGISTERs `user`@ims.test here with Contact 127.0.0.1:`contact_port` (a UE of the
    /// core, such as a sipp UAS), over UDP from a socket of our own; retransmitted, bounded.
    pub fn register_ue(&self, user: &str, contact_port: u16) {
        let sock = std::net::UdpSocket::bind("127.0.0.1:0").expect("UDP socket");
        let local = sock.local_addr().unwrap();
        sock.set_read_timeout(Some(Duration::from_millis(500))).unwrap();
        let request = format!(
            "REGISTER sip:ims.test SIP/2.0\r\n\
             Via: SIP/2.0/UDP {local};branch=z9hG4bK-{user}-reg-{port}\r\n\
             Max-Forwards: 70\r\n\
             From: <sip:{user}@ims.test>;tag={user}-reg\r\n\
             To: <sip:{user}@ims.test>\r\n\
             Call-ID: {user}-reg-{port}@127.0.0.1\r\n\
             CSeq: 1 REGISTER\r\n\
             Contact: <sip:{user}@127.0.0.1:{contact_port};transport=udp>\r\n\
             Expires: 600\r\n\
             Content-Length: 0\r\n\r\n",
            port = local.port()
        );
        let mut buf = [0u8; 4096];
        for _ in 0..10 {
            sock.send_to(request.as_bytes(), self.udp).expect("send REGISTER to Kamailio");
            let Ok(n) = sock.recv(&mut buf) else { continue };
            let text = String::from_utf8_lossy(&buf[..n]).into_owned();
            let response = crate::msg::SipMsg::parse(&text).unwrap_or_else(|e| panic!("Kamailio's answer to REGISTER does not parse ({e}):\n{text}"));
            if response.status() < 200 {
                continue;
            }
            assert_eq!(response.status(), 200, "Kamailio registers {user}:\n{text}\n--- kamailio\n{}", self.log());
            return;
        }
        panic!("Kamailio did not answer {user}'s REGISTER within 5 s:\n{}", self.log());
    }

    /// What Kamailio logged (each request it routed: method, R-URI, source, transport).
    pub fn log(&self) -> String {
        self.log.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

impl Drop for Kamailio {
    fn drop(&mut self) {
        stop(&mut self.child);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A CA and a certificate for 127.0.0.1 (and core.ims.test) it signed, ECDSA P-256, with the
/// system's openssl.
fn make_certificates(dir: &Path) {
    let run = |args: &[&str]| openssl(dir, args);
    run(&[&["req", "-x509"][..], &EC, &["-keyout", "ca.key", "-out", "ca.pem", "-days", "2", "-subj", "/CN=estuary test CA"]].concat());
    run(&[&["req"][..], &EC, &["-keyout", "core.key", "-out", "core.csr", "-subj", "/CN=core.ims.test"]].concat());
    std::fs::write(
        dir.join("ext.cnf"),
        "subjectAltName=DNS:core.ims.test,IP:127.0.0.1\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nextendedKeyUsage=serverAuth,clientAuth\n",
    )
    .unwrap();
    run(&["x509", "-req", "-in", "core.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial", "-out", "core.pem", "-days", "2", "-extfile", "ext.cnf"]);
}

const EC: [&str; 5] = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"];

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl").args(args).current_dir(dir).output().expect("openssl");
    assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

const TLS_CFG: &str = "\
[server:default]
method = TLSv1.2+
verify_certificate = no
require_certificate = no
private_key = DIR/core.key
certificate = DIR/core.pem

[client:default]
method = TLSv1.2+
verify_certificate = no
require_certificate = no
";

/// The S-CSCF's part, as little of it as the tests need: REGISTER saved with its Path,
/// requests to a registered AoR sent through that Path, dialogs record-routed so BYE and ACK
/// come through here too.
const KAMAILIO_CFG: &str = r#"#!KAMAILIO
debug=2
log_stderror=yes
children=2
tcp_children=2
auto_aliases=no
enable_tls=yes
listen=udp:UDP_LISTEN
listen=tls:TLS_LISTEN
alias="ims.test"

mpath="MODULES/"
loadmodule "tls.so"
loadmodule "tm.so"
loadmodule "sl.so"
loadmodule "rr.so"
loadmodule "pv.so"
loadmodule "maxfwd.so"
loadmodule "usrloc.so"
loadmodule "registrar.so"
loadmodule "textops.so"
loadmodule "siputils.so"
loadmodule "xlog.so"

modparam("tls", "config", "DIR/tls.cfg")
modparam("usrloc", "db_mode", 0)
modparam("registrar", "use_path", 1)
modparam("registrar", "path_mode", 0)

request_route {
    xlog("L_NOTICE", "ROUTE $rm $ru from $si:$sp over $pr\n");
    if (!mf_process_maxfwd_header("10")) {
        sl_send_reply("483", "Too Many Hops");
        exit;
    }
    if (has_totag()) {
        if (loose_route()) {
            t_relay();
            exit;
        }
        if (is_method("ACK")) {
            if (t_check_trans()) {
                t_relay();
            }
            exit;
        }
        sl_send_reply("404", "Not here");
        exit;
    }
    if (is_method("CANCEL")) {
        if (t_check_trans()) {
            t_relay();
        }
        exit;
    }
    if (is_method("REGISTER")) {
        if (!save("location")) {
            sl_reply_error();
        }
        exit;
    }
    if (is_method("INVITE")) {
        record_route();
    }
    if (!lookup("location")) {
        sl_send_reply("404", "Not Found");
        exit;
    }
    t_relay();
}
"#;

/// Kamailio as the cluster's dispatcher toward the IMS core, run from the configuration the
/// repository ships (etc/cluster/kamailio-dispatcher.cfg) with its placeholders filled in.
pub struct Dispatcher {
    child: Child,
    /// Where the core sends (UDP).
    pub udp: SocketAddr,
    dir: PathBuf,
    log: Arc<Mutex<String>>,
}

impl Dispatcher {
    /// Starts it in front of `nodes` (their ims.listen addresses, set 1).
    pub fn start(test: &str, nodes: &[SocketAddr]) -> Dispatcher {
        Dispatcher::start_at(test, SocketAddr::from(([127, 0, 0, 1], free_udp_port())), nodes)
    }

    /// As [`Dispatcher::start`], listening on `udp` (for nodes that must name it before it
    /// runs: their `cluster.sip_front`).
    pub fn start_at(test: &str, udp: SocketAddr, nodes: &[SocketAddr]) -> Dispatcher {
        Kamailio::require();
        let dir = std::env::temp_dir().join(format!("estuary-dispatcher-{test}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("dispatcher dir");
        let list: String = nodes.iter().map(|n| format!("1 sip:{n}\n")).collect();
        std::fs::write(dir.join("dispatcher.list"), list).unwrap();
        let cfg = include_str!("../../etc/cluster/kamailio-dispatcher.cfg")
            .replace("LISTEN_UDP", &udp.to_string())
            .replace("DISPATCHER_LIST", &dir.join("dispatcher.list").to_string_lossy())
            .replace("MODULES", MODULES);
        let (child, log) = run(&dir, &cfg);
        let d = Dispatcher { child, udp, dir, log };
        // Ready when it answers an OPTIONS addressed to itself.
        let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        sock.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
        let me = sock.local_addr().unwrap();
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let ping = format!("OPTIONS sip:{udp} SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch=z9hG4bKready{}\r\nMax-Forwards: 70\r\nTo: <sip:{udp}>\r\nFrom: <sip:test@{me}>;tag=r\r\nCall-ID: ready@{me}\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n", me.port());
            let _ = sock.send_to(ping.as_bytes(), udp);
            let mut buf = [0u8; 2048];
            if sock.recv_from(&mut buf).is_ok_and(|(n, _)| buf[..n].starts_with(b"SIP/2.0 200")) {
                return d;
            }
            assert!(Instant::now() < deadline, "the dispatcher never answered on {udp}:\n{}", d.log());
        }
    }

    pub fn log(&self) -> String {
        self.log.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

impl Drop for Dispatcher {
    fn drop(&mut self) {
        stop(&mut self.child);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Checks `cfg` with `kamailio -c`, then runs it from `dir` in the foreground (-DD; children
/// still fork) logging to stderr (-E), which is collected.
fn run(dir: &Path, cfg: &str) -> (Child, Arc<Mutex<String>>) {
    let path = dir.join("kamailio.cfg");
    std::fs::write(&path, cfg).unwrap();
    let check = Command::new("kamailio").arg("-c").arg("-f").arg(&path).output().expect("kamailio -c");
    assert!(check.status.success(), "kamailio refuses {}:\n{}", path.display(), String::from_utf8_lossy(&check.stderr));
    let mut child = Command::new("kamailio")
        .args(["-DD", "-E", "-m", "64", "-M", "8", "-Y"])
        .arg(dir)
        .arg("-f")
        .arg(&path)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start kamailio");
    let log = Arc::new(Mutex::new(String::new()));
    let stderr = child.stderr.take().expect("stderr");
    let sink = log.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            sink.lock().unwrap_or_else(|e| e.into_inner()).push_str(&(line + "\n"));
        }
    });
    (child, log)
}

/// SIGTERM (the main process takes its children down with it), then SIGKILL after 5 s.
fn stop(child: &mut Child) {
    let _ = Command::new("kill").arg(child.id().to_string()).status();
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline && !matches!(child.try_wait(), Ok(Some(_))) {
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
}
