//! Free loopback ports and scratch directories for tests that run side by side.

use std::collections::HashSet;
use std::io::Write as _;
use std::net::{Ipv4Addr, SocketAddr, TcpListener, UdpSocket};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Mutex;

/// Ports this process already handed out: never hand one out twice, even once released.
static HANDED_OUT: Mutex<Option<HashSet<u16>>> = Mutex::new(None);

fn claim(port: u16) -> bool {
    let mut g = HANDED_OUT.lock().unwrap_or_else(|e| e.into_inner());
    g.get_or_insert_with(HashSet::new).insert(port)
}

/// Test ports come from below the kernel's ephemeral range (32768-60999 by default), so a
/// socket some process binds to port 0 (the daemon under test, a client socket, sipp's
/// outgoing side) can never be handed the port a test just picked and released. sipp's own
/// fixed ports (media 6000+, control 8888+) lie below this window and the gateway's default
/// media range (20000-29999) above it.
const TEST_PORTS: std::ops::Range<u16> = 11000..19000;

/// A 127.0.0.1 port from [`TEST_PORTS`] that `probe` finds free now, never handed out
/// before by this process; the start is random so parallel test processes spread out.
fn free_port(probe: impl Fn(u16) -> bool) -> u16 {
    let span = (TEST_PORTS.end - TEST_PORTS.start) as u32;
    let seed = std::process::id().wrapping_mul(2654435761) ^ rand::random::<u32>();
    for i in 0..span {
        let port = TEST_PORTS.start + ((seed.wrapping_add(i.wrapping_mul(7919))) % span) as u16;
        if probe(port) && claim(port) {
            return port;
        }
    }
    panic!("no free port in {TEST_PORTS:?}");
}

/// A 127.0.0.1 port that is free for UDP now (released before returning).
pub fn free_udp_port() -> u16 {
    free_port(|p| UdpSocket::bind((Ipv4Addr::LOCALHOST, p)).is_ok())
}

/// A 127.0.0.1 port that is free for both UDP and TCP now (released before returning): for a
/// server that listens on both, as a DNS server does.
pub fn free_udp_tcp_port() -> u16 {
    free_port(|p| UdpSocket::bind((Ipv4Addr::LOCALHOST, p)).is_ok() && TcpListener::bind((Ipv4Addr::LOCALHOST, p)).is_ok())
}

/// A 127.0.0.1 port that is free for TCP now (released before returning).
pub fn free_tcp_port() -> u16 {
    free_port(|p| TcpListener::bind((Ipv4Addr::LOCALHOST, p)).is_ok())
}

/// Whether some process has bound UDP `port` on 127.0.0.1 or the wildcard address. Read from
/// /proc/net/udp, so asking does not itself occupy the port; elsewhere, a bind attempt.
pub fn udp_port_in_use(port: u16) -> bool {
    match std::fs::read_to_string("/proc/net/udp") {
        Ok(table) => table.lines().skip(1).any(|l| {
            let local = l.split_whitespace().nth(1).unwrap_or_default();
            let (ip, p) = local.split_once(':').unwrap_or_default();
            u16::from_str_radix(p, 16).ok() == Some(port) && (ip == "0100007F" || ip == "00000000")
        }),
        Err(_) => UdpSocket::bind((Ipv4Addr::LOCALHOST, port)).is_err(),
    }
}

/// Whether some process listens on TCP `port` on 127.0.0.1 or the wildcard address.
pub fn tcp_port_listening(port: u16) -> bool {
    match std::fs::read_to_string("/proc/net/tcp") {
        Ok(table) => table.lines().skip(1).any(|l| {
            let cols: Vec<&str> = l.split_whitespace().collect();
            let (ip, p) = cols
                .get(1)
                .and_then(|c| c.split_once(':'))
                .unwrap_or_default();
            cols.get(3) == Some(&"0A")
                && u16::from_str_radix(p, 16).ok() == Some(port)
                && (ip == "0100007F" || ip == "00000000")
        }),
        Err(_) => std::net::TcpStream::connect((Ipv4Addr::LOCALHOST, port)).is_ok(),
    }
}

pub fn loopback(port: u16) -> SocketAddr {
    SocketAddr::from((Ipv4Addr::LOCALHOST, port))
}

/// A media port range for one test daemon: 100 ports from 30000-32699 (below the kernel's
/// ephemeral range, above the default media range and [`TEST_PORTS`]), a different window for
/// each daemon this process starts (test binaries run one after the other).
pub fn media_port_window() -> (u16, u16) {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed) % 27;
    let min = 30000 + 100 * n as u16;
    (min, min + 99)
}

/// Run the calling test inside a fresh network namespace whose only interface is loopback,
/// so a browser's candidates and every packet stay on 127.0.0.0/8 (TESTING.md). The test
/// binary re-executes itself for just `test` under `unshare -n`; the child gets `true` and
/// runs the test body, the parent gets `false` after asserting the child passed.
///
/// ```ignore
/// if !in_loopback_netns("my_test") { return; }
/// ```
pub fn in_loopback_netns(test: &str) -> bool {
    const MARK: &str = "ESTUARY_IN_LOOPBACK_NETNS";
    if std::env::var_os(MARK).is_some() {
        return true;
    }
    let exe = std::env::current_exe().expect("test binary path");
    let out = std::process::Command::new("unshare")
        .args(["-n", "sh", "-c", "ip link set lo up && exec \"$0\" --exact \"$1\" --nocapture --test-threads=1"])
        .arg(&exe)
        .arg(test)
        .env(MARK, "1")
        .output()
        .expect("run unshare (util-linux) for a loopback-only network namespace");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(
        out.status.success() && text.contains("1 passed"),
        "{test} in a loopback-only network namespace failed ({}):\n{text}",
        out.status
    );
    // Shown by libtest with --nocapture: the figures the test body printed.
    println!("{text}");
    // Lines the body meant for every log (not only --nocapture): passed straight through.
    for line in text.lines().skip_while(|l| !l.contains("figures:")).take_while(|l| l.contains("figures:") || l.starts_with("- ")) {
        let _ = writeln!(std::io::stderr(), "{line}");
    }
    false
}

/// A new empty directory under the system temp dir, named after `label`.
pub fn scratch_dir(label: &str) -> PathBuf {
    static N: AtomicU32 = AtomicU32::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    let clean: String = label
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    let dir = std::env::temp_dir().join(format!(
        "estuary-conformance-{}-{n}-{clean}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("create {}: {e}", dir.display()));
    dir
}

/// Whether `text` contains `:PORT` not followed by another digit (a port in a URI or Via).
pub fn contains_port(text: &str, port: u16) -> bool {
    let needle = format!(":{port}");
    let mut from = 0;
    while let Some(i) = text[from..].find(&needle) {
        let end = from + i + needle.len();
        if !text[end..].starts_with(|c: char| c.is_ascii_digit()) {
            return true;
        }
        from = end;
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_match_is_exact() {
        assert!(contains_port(
            "Via: SIP/2.0/UDP 127.0.0.1:5060;branch=x",
            5060
        ));
        assert!(!contains_port(
            "Via: SIP/2.0/UDP 127.0.0.1:50601;branch=x",
            5060
        ));
        assert!(contains_port("x:50601 y:5060", 5060));
        assert!(!contains_port("Content-Length: 5060", 5060));
    }
}
