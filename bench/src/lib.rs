//! Shared parts of the daemon benchmarks: reading a process's CPU time and resident memory
//! from /proc, and reporting figures as a table and as JSON under target/bench/.
//!
//! The benchmarks measure the real `estuary` process through its sockets: the load
//! generator's own CPU is not counted, and what is divided by packets is the daemon's user +
//! system time over the measured window.

pub mod bare;
pub mod flood;
pub mod ims_core;
pub mod load;
pub mod rate;
pub mod reference;

use std::collections::HashMap;
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
    let rss_kb = kb_line(&status, "VmRSS:").unwrap_or(0);
    Ok(ProcSample { cpu, rss_bytes: rss_kb * 1024 })
}

/// The number of the first `KEY   N kB` line of a /proc file (status, smaps_rollup).
fn kb_line(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|l| l.strip_prefix(key))?.split_whitespace().next()?.parse().ok()
}

/// Proportional set size (the `Pss:` line of /proc/PID/smaps_rollup, in bytes): resident
/// memory with each shared page divided among the processes sharing it, so the PSS of a
/// process tree can be summed without counting shared memory twice.
pub fn pss(pid: u32) -> std::io::Result<u64> {
    let rollup = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup"))?;
    let kb = kb_line(&rollup, "Pss:").ok_or_else(|| std::io::Error::other(format!("no Pss line in /proc/{pid}/smaps_rollup")))?;
    Ok(kb * 1024)
}

/// `pid` and every process below it (children, their children...), from the parent field of
/// /proc/*/stat: a forking server's workers (Kamailio's) are measured with it.
pub fn process_tree(pid: u32) -> Vec<u32> {
    let mut parents = Vec::new();
    if let Ok(dir) = std::fs::read_dir("/proc") {
        for entry in dir.flatten() {
            let Some(child) = entry.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else { continue };
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{child}/stat")) else { continue };
            // After the command name's last ')': state, then the parent's PID.
            let ppid = stat.rsplit_once(')').and_then(|(_, r)| r.split_whitespace().nth(1)?.parse::<u32>().ok());
            if let Some(ppid) = ppid {
                parents.push((child, ppid));
            }
        }
    }
    let mut tree = vec![pid];
    let mut i = 0;
    // Each pass adds the children of one member; a process appears once, so this ends.
    while i < tree.len() {
        let p = tree[i];
        tree.extend(parents.iter().filter(|(c, pp)| *pp == p && !tree.contains(c)).map(|(c, _)| *c).collect::<Vec<_>>());
        i += 1;
    }
    tree
}

/// CPU time and PSS summed over `pids`; a process that has gone counts nothing.
pub fn sample_all(pids: &[u32]) -> (Duration, u64) {
    pids.iter().fold((Duration::ZERO, 0), |(cpu, mem), &p| {
        (cpu + sample(p).map(|s| s.cpu).unwrap_or_default(), mem + pss(p).unwrap_or(0))
    })
}

/// On-CPU time of every live thread of `pids` (nanoseconds, by thread id).
pub type ThreadCpu = HashMap<u32, u64>;

/// Reads [`ThreadCpu`] from the first field of /proc/PID/task/TID/schedstat. [`sample`]
/// counts a whole process in clock ticks (10 ms): right for windows of seconds, too coarse
/// for a set-up phase of tens of milliseconds, which this measures to the microsecond. A
/// thread that exits between two readings takes its time with it (the daemon's threads live
/// as long as it does); a process that has gone counts nothing.
pub fn thread_cpu(pids: &[u32]) -> ThreadCpu {
    let mut times = ThreadCpu::new();
    for pid in pids {
        let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/task")) else { continue };
        for entry in dir.flatten() {
            let Some(tid) = entry.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else { continue };
            let ns = std::fs::read_to_string(entry.path().join("schedstat")).ok().and_then(|s| s.split_whitespace().next()?.parse::<u64>().ok());
            if let Some(ns) = ns {
                times.insert(tid, ns);
            }
        }
    }
    times
}

/// CPU time from reading `a` to reading `b`: each thread's growth, a thread born in between
/// counted whole.
pub fn cpu_since(a: &ThreadCpu, b: &ThreadCpu) -> Duration {
    Duration::from_nanos(b.iter().map(|(tid, ns)| ns.saturating_sub(a.get(tid).copied().unwrap_or(0))).sum())
}

/// When `pid` started (field 22 of /proc/PID/stat, clock ticks since boot).
fn start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(')')?.1.split_whitespace().nth(19)?.parse().ok()
}

/// Makes the process `cmd` starts receive SIGTERM when the benchmark dies (killed by a signal
/// no destructor sees, e.g. a `timeout`), so that no daemon outlives it.
pub fn die_with_parent(cmd: &mut std::process::Command) {
    use std::os::unix::process::CommandExt;
    // SAFETY: prctl(2) is async-signal-safe and touches only the new process.
    unsafe {
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
            Ok(())
        });
    }
}

/// A child process the benchmark started, stopped when dropped (also on an error or a
/// panic): SIGTERM to it, at most `grace` to exit, then SIGKILL to it and to whatever it
/// had forked that is still there. Only the PIDs of this tree are signalled.
pub struct ChildGuard {
    pub child: std::process::Child,
    pub grace: Duration,
}

impl ChildGuard {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Whether the process has exited (and how), without waiting.
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if self.exited().is_some() {
            return;
        }
        // With each process's start time, so that a PID reused meanwhile is left alone.
        let tree: Vec<(u32, Option<u64>)> = process_tree(self.pid()).into_iter().map(|p| (p, start_time(p))).collect();
        // SAFETY: kill(2) with a PID this process started (or one of that child's own
        // children) and a constant signal number.
        unsafe { libc::kill(self.pid() as libc::pid_t, libc::SIGTERM) };
        let deadline = std::time::Instant::now() + self.grace;
        while std::time::Instant::now() < deadline && self.exited().is_none() {
            std::thread::sleep(Duration::from_millis(20));
        }
        for (p, started) in tree.into_iter().rev() {
            if started.is_some() && start_time(p) == started {
                // SAFETY: as above; the tree was read while the child was still running.
                unsafe { libc::kill(p as libc::pid_t, libc::SIGKILL) };
            }
        }
        let _ = self.child.wait();
    }
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

    #[test]
    fn counts_its_own_threads_to_the_microsecond() {
        let me = [std::process::id()];
        let a = thread_cpu(&me);
        assert!(!a.is_empty());
        // Spin for 5 ms of this thread's own CPU time (the kernel's per-thread clock), not of
        // wall time: on a loaded machine the thread may wait for a core meanwhile.
        let own = || {
            let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
            // SAFETY: a valid clock id and a valid pointer to a timespec we own.
            let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
            assert_eq!(rc, 0, "clock_gettime(CLOCK_THREAD_CPUTIME_ID)");
            Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
        };
        let start = own();
        let mut x = 0u64;
        while own() - start < Duration::from_millis(5) {
            x = x.wrapping_mul(31).wrapping_add(7);
        }
        std::hint::black_box(x);
        // 5 ms of spinning is below one clock tick, and still seen.
        assert!(cpu_since(&a, &thread_cpu(&me)) >= Duration::from_millis(4));
    }
}
