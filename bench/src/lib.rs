//! Shared parts of the daemon benchmarks: reading a process's CPU time and resident memory
//! from /proc, and reporting figures as a table and as JSON under target/bench/.
//!
//! The benchmarks measure the real `estuary` process through its sockets: the load
//! generator's own CPU is not counted, and what is divided by packets is the daemon's user +
//! system time over the measured window.

pub mod flood;
pub mod load;

use std::path::{Path, PathBuf};
use std::time::Duration;

/// CPU time (user + system) and resident memory of a process at one moment.
#[derive(Clone, Copy, Debug)]
pub struct ProcSample {
    pub cpu: Duration,
    pub rss_bytes: u64,
}

/// Reads /proc/PID/stat (utime, stime in clock ticks) and /proc/PID/status (VmRSS).
pub fn sample(pid: u32) -> std::io::Result<ProcSample> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // The command name may hold spaces and parentheses: fields start after the last ')'.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or_default();
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After ')' the first field is the state (field 3 of proc(5)); utime is 14, stime 15.
    let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<u64>().ok()).unwrap_or(0);
    let total = ticks(11) + ticks(12);
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    let cpu = Duration::from_secs_f64(total as f64 / hz as f64);
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let rss_kb = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(0);
    Ok(ProcSample { cpu, rss_bytes: rss_kb * 1024 })
}

/// Raises this process's open-file soft limit to the hard limit (a load generator holds
/// sockets for hundreds of calls).
pub fn raise_nofile() {
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit/setrlimit read and write one struct we own.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
}

/// Prints `rows` as an aligned two-column table under `title`.
pub fn print_table(title: &str, rows: &[(&str, String)]) {
    let width = rows.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    println!("\n{title}");
    println!("{}", "-".repeat(title.len()));
    for (k, v) in rows {
        println!("{k:<width$}  {v}");
    }
}

/// Writes `value` as pretty JSON to `path`, creating the directory.
pub fn write_json(path: &Path, value: &serde_json::Value) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(path, serde_json::to_string_pretty(value).unwrap_or_default() + "\n")
}

/// Points `ESTUARY_BIN` at the release daemon of this workspace unless it is set: figures
/// are for the optimised build.
pub fn default_release_daemon() {
    if std::env::var_os("ESTUARY_BIN").is_none() {
        let target = std::env::var_os("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target"));
        std::env::set_var("ESTUARY_BIN", target.join("release/estuary"));
    }
}

/// A current-thread tokio runtime for a load generator (one core for the generator, the
/// rest for the daemon).
pub fn runtime() -> Result<tokio::runtime::Runtime, String> {
    tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|e| e.to_string())
}

/// An environment variable parsed as `T`, or `default`; a value that does not parse is an
/// error naming the variable.
pub fn env_or<T: std::str::FromStr>(name: &str, default: T) -> Result<T, String> {
    match std::env::var(name) {
        Ok(v) => v.parse().map_err(|_| format!("{name}={v:?} is not a valid value")),
        Err(_) => Ok(default),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_its_own_process() {
        let s = sample(std::process::id()).unwrap();
        assert!(s.rss_bytes > 1024 * 1024, "{s:?}");
        // Burn a little CPU and see it counted (ticks are 10 ms).
        let t = std::time::Instant::now();
        let mut x = 0u64;
        while t.elapsed() < Duration::from_millis(100) {
            x = x.wrapping_mul(31).wrapping_add(7);
        }
        std::hint::black_box(x);
        assert!(sample(std::process::id()).unwrap().cpu > s.cpu);
    }
}
