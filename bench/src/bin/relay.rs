//! `relay`: what the DTLS-SRTP <-> RTP relay costs on the running daemon.
//!
//! [`estuary_bench::load`] plays N G.711 browsers and an IMS core against the release
//! `estuary`; the daemon's CPU time over the window is divided by the packets it delivered
//! (counted where they arrive, both sides), and its resident memory growth since before the
//! first call by the calls. Only the daemon is measured; the generator's own CPU is not.
//!
//! Environment: `BENCH_CALLS` (500), `BENCH_SECONDS` (10), `BENCH_MEDIA_PORTS` (20000-29999), `BENCH_OUT`
//! (`target/bench/relay.json`), `ESTUARY_BIN`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use estuary_bench::load::{self, BrowserCodec, Load, WARMUP};
use estuary_bench::{default_release_daemon, env_or, print_table, raise_nofile, runtime, write_json};

fn main() -> ExitCode {
    raise_nofile();
    default_release_daemon();
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("relay: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<(), String> {
    let calls: u64 = env_or("BENCH_CALLS", 500)?;
    let seconds: u64 = env_or("BENCH_SECONDS", 10)?;
    let out: PathBuf = env_or("BENCH_OUT", PathBuf::from("target/bench/relay.json"))?;
    let load = Load::from_env(calls, Duration::from_secs(seconds), BrowserCodec::Pcmu)?;
    let m = runtime()?.block_on(load::run(&load))?;
    if m.delivered == 0 {
        return Err(format!("no packet came through the daemon\n--- daemon log ---\n{}", m.log_tail));
    }
    let cpu = m.daemon_cpu.as_secs_f64();
    let wall = m.window.as_secs_f64();
    let us_per_packet = cpu * 1e6 / m.delivered as f64;
    let pps_per_core = m.delivered as f64 / cpu.max(1e-9);
    let bytes_per_call = m.rss_loaded.saturating_sub(m.rss_idle) / m.calls_up;
    let loss = 1.0 - m.delivered as f64 / m.sent.max(1) as f64;
    print_table(
        &format!("DTLS-SRTP <-> RTP relay on the running daemon (pid {})", m.pid),
        &[
            ("calls up / asked", format!("{} / {} (set up in {:.1} s)", m.calls_up, m.calls_asked, m.setup.as_secs_f64())),
            ("window", format!("{wall:.1} s after {} s warm-up", WARMUP.as_secs())),
            ("packets relayed", format!("{} ({:.0} pps; {:.2}% of sent lost)", m.delivered, m.delivered as f64 / wall, 100.0 * loss)),
            ("daemon CPU", format!("{cpu:.2} s ({:.0}% of one core)", 100.0 * cpu / wall)),
            ("relay_cpu_us_per_packet", format!("{us_per_packet:.2}")),
            ("relay_pps_per_core", format!("{pps_per_core:.0}")),
            ("daemon RSS idle / loaded", format!("{} / {} KiB", m.rss_idle / 1024, m.rss_loaded / 1024)),
            ("relay_bytes_per_call", format!("{bytes_per_call}")),
            ("SRTP failures at browsers", format!("{}", m.srtp_failures)),
        ],
    );
    let json = serde_json::json!({
        "relay_cpu_us_per_packet": us_per_packet,
        "relay_pps_per_core": pps_per_core,
        "relay_bytes_per_call": bytes_per_call,
        "calls": m.calls_up,
        "calls_asked": m.calls_asked,
        "window_s": wall,
        "packets_relayed": m.delivered,
        "loss_ratio": loss,
        "daemon_cpu_s": cpu,
        "daemon_rss_idle_bytes": m.rss_idle,
        "daemon_rss_loaded_bytes": m.rss_loaded,
        "setup_s": m.setup.as_secs_f64(),
    });
    write_json(&out, &json).map_err(|e| format!("{}: {e}", out.display()))?;
    println!("\nwrote {}", out.display());
    Ok(())
}
