//! `relay`: what the DTLS-SRTP <-> RTP relay costs on the running daemon.
//!
//! [`estuary_bench::load`] plays N G.711 browsers and an IMS core against the release
//! `estuary`; the daemon's CPU time over the window is divided by the packets it delivered
//! (counted where they arrive, both sides), and its resident memory growth since before the
//! first call by the calls. Only the daemon is measured; the generator's own CPU is not.
//!
//! Environment: `BENCH_CALLS` (500), `BENCH_SECONDS` (10), `BENCH_MEDIA_PORTS` (20000-29999), `BENCH_OUT`
//! (`target/bench/relay.json`; not written in reference mode unless set), `ESTUARY_BIN`.
//!
//! **Reference mode** (`BENCH_REFERENCE=1`, `make bench-reference`): in the same invocation and
//! with the same load (`BENCH_CALLS`, here 200 by default; `BENCH_SECONDS`, here 15), Estuary,
//! then Kamailio + rtpengine ([`estuary_bench::reference`]), then the bare relay in both socket
//! structures ([`estuary_bench::bare`]), each with an idle pause of `BENCH_IDLE_SECONDS` (10)
//! before its window. It prints per system the CPU per packet, the idle CPU, PSS per call and
//! loss, and Estuary's ratios to the others, and writes them to `BENCH_REFERENCE_OUT`
//! (`target/bench/reference.json`). On a shared, noisy machine the ratios are the figures.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use estuary_bench::bare::{self, Structure};
use estuary_bench::load::{self, BrowserCodec, Load, Measured, Target, WARMUP};
use estuary_bench::{default_release_daemon, env_or, print_table, raise_nofile, runtime, write_json};
use serde_json::json;

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
    let reference = env_or("BENCH_REFERENCE", 0u8)? != 0;
    let calls: u64 = env_or("BENCH_CALLS", if reference { 200 } else { 500 })?;
    let seconds: u64 = env_or("BENCH_SECONDS", if reference { 15 } else { 10 })?;
    // The reference mode leaves relay.json (`make bench`'s figures) alone unless told.
    let out: Option<PathBuf> = match std::env::var_os("BENCH_OUT") {
        Some(p) => Some(PathBuf::from(p)),
        None => (!reference).then(|| PathBuf::from("target/bench/relay.json")),
    };
    let load = Load::from_env(calls, Duration::from_secs(seconds), BrowserCodec::Pcmu)?;
    let idle = if reference { Some(Duration::from_secs(env_or("BENCH_IDLE_SECONDS", 10)?)) } else { None };
    // The generator's browsers read nothing on their WebSocket once their calls are up, so
    // they answer no WebSocket ping: at its first 30 s ping tick after 75 s of silence Estuary
    // closes the connection and ends its calls. Every measurement must be over before.
    let span = idle.unwrap_or_default() + Duration::from_secs(seconds) + WARMUP;
    if reference && span > Duration::from_secs(60) {
        return Err(format!(
            "BENCH_SECONDS + BENCH_IDLE_SECONDS + {} s of warm-up = {} s: keep it under 60 s, or Estuary closes the \
             browsers' WebSockets for not answering its pings and ends the calls mid-window",
            WARMUP.as_secs(),
            span.as_secs()
        ));
    }
    let rt = runtime()?;
    let m = rt.block_on(load::run_on(&load, &Target { reference: false, idle }))?;
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
    if let Some(out) = out {
        write_json(&out, &json).map_err(|e| format!("{}: {e}", out.display()))?;
        println!("\nwrote {}", out.display());
    }
    if reference {
        let out: PathBuf = env_or("BENCH_REFERENCE_OUT", PathBuf::from("target/bench/reference.json"))?;
        return compare(&rt, &load, idle, m, &out);
    }
    Ok(())
}

/// One system's figures in the reference table.
struct Figures {
    name: &'static str,
    calls_up: u64,
    us_per_packet: f64,
    idle_fraction: Option<f64>,
    pss_per_call: u64,
    loss: f64,
    pps: f64,
}

impl Figures {
    /// The figures of the process groups of `m` named in `only` (all when empty), summed.
    fn of(name: &'static str, m: &Measured, only: &[&str]) -> Figures {
        let parts: Vec<_> = m.parts.iter().filter(|p| only.is_empty() || only.contains(&p.name)).collect();
        let cpu: f64 = parts.iter().map(|p| p.cpu.as_secs_f64()).sum();
        let idle: Option<f64> = parts.iter().map(|p| p.idle_fraction(m.idle_window)).sum();
        Figures {
            name,
            calls_up: m.calls_up,
            us_per_packet: cpu * 1e6 / m.delivered.max(1) as f64,
            idle_fraction: idle,
            pss_per_call: parts.iter().map(|p| p.pss_per_call(m.calls_up)).sum(),
            loss: 1.0 - m.delivered as f64 / m.sent.max(1) as f64,
            pps: m.delivered as f64 / m.window.as_secs_f64().max(1e-9),
        }
    }

    /// What the calls offer: 50 packets per second each way.
    fn offered_pps(&self) -> f64 {
        self.calls_up as f64 * 100.0
    }

    fn json(&self) -> serde_json::Value {
        json!({
            "cpu_us_per_packet": self.us_per_packet,
            "offered_pps": self.offered_pps(),
            "idle_cpu_fraction": self.idle_fraction,
            "pss_bytes_per_call": self.pss_per_call,
            "loss_ratio": self.loss,
            "pps": self.pps,
            "calls_up": self.calls_up,
        })
    }
}

/// `a / b`, when both are there and `b` is not zero.
fn ratio(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => Some(a / b),
        _ => None,
    }
}

/// The reference mode: the same load through Kamailio + rtpengine and the bare relay in both
/// structures, after Estuary's run `estuary`; the table and `out`.
fn compare(rt: &tokio::runtime::Runtime, load: &Load, idle: Option<Duration>, estuary: Measured, out: &std::path::Path) -> Result<(), String> {
    let mut figures = vec![Figures::of("estuary", &estuary, &[])];
    let mut errors = Vec::new();
    println!("\nreference: Kamailio + rtpengine, {} calls", load.calls);
    match rt.block_on(load::run_on(load, &Target { reference: true, idle })) {
        Ok(m) => {
            figures.push(Figures::of("kamailio_rtpengine", &m, &[]));
            figures.push(Figures::of("rtpengine", &m, &["rtpengine"]));
            figures.push(Figures::of("kamailio", &m, &["kamailio"]));
        }
        Err(e) => errors.push(("kamailio_rtpengine", e)),
    }
    for s in [Structure::Epoll, Structure::Mmsg] {
        println!("reference: {}, {} calls", s.name(), load.calls);
        match rt.block_on(bare::run(load, s, idle)) {
            Ok(m) => figures.push(Figures::of(s.name(), &m, &[])),
            Err(e) => errors.push((s.name(), e)),
        }
    }

    let idle_s = idle.map(|d| d.as_secs_f64());
    let title = format!("Estuary against the references: {} calls, {} s window, {} s idle pause", load.calls, load.window.as_secs(), idle_s.unwrap_or(0.0));
    println!("\n{title}\n{}", "-".repeat(title.len()));
    println!("{:<20} {:>10} {:>12} {:>14} {:>8} {:>9} {:>6}", "system", "us/packet", "idle CPU %", "PSS/call KiB", "loss %", "pps", "calls");
    for f in &figures {
        let idle = f.idle_fraction.map_or("-".into(), |x| format!("{:.2}", 100.0 * x));
        println!(
            "{:<20} {:>10.2} {:>12} {:>14.1} {:>8.2} {:>9.0} {:>6}",
            f.name,
            f.us_per_packet,
            idle,
            f.pss_per_call as f64 / 1024.0,
            100.0 * f.loss,
            f.pps,
            f.calls_up
        );
    }
    let est = &figures[0];
    let mut ratios = serde_json::Map::new();
    println!("\nEstuary as a ratio to   {:>10} {:>12} {:>14}", "us/packet", "idle CPU", "PSS/call");
    for f in figures.iter().skip(1).filter(|f| f.name != "kamailio") {
        let r = json!({
            "cpu_us_per_packet": ratio(Some(est.us_per_packet), Some(f.us_per_packet)),
            "idle_cpu_fraction": ratio(est.idle_fraction, f.idle_fraction),
            "pss_bytes_per_call": ratio(Some(est.pss_per_call as f64), Some(f.pss_per_call as f64)),
        });
        let show = |k: &str| r[k].as_f64().map_or("-".into(), |x| format!("{x:.2}"));
        println!("{:<22} {:>10} {:>12} {:>14}", f.name, show("cpu_us_per_packet"), show("idle_cpu_fraction"), show("pss_bytes_per_call"));
        ratios.insert(format!("estuary_to_{}", f.name), r);
    }
    for f in figures.iter().filter(|f| f.pps < 0.95 * f.offered_pps()) {
        println!(
            "\nWARNING: {} carried {:.0} pps of the {:.0} its calls offer: the machine (load generator included) was \
             saturated, and its CPU per packet is not comparable with the others'. Use fewer calls.",
            f.name,
            f.pps,
            f.offered_pps()
        );
    }
    for (name, e) in &errors {
        println!("\n{name} FAILED: {e}");
    }
    let systems: serde_json::Map<String, serde_json::Value> = figures.iter().map(|f| (f.name.to_owned(), f.json())).collect();
    let get = |k: &str| ratios.get(k).and_then(|r| r["cpu_us_per_packet"].as_f64());
    let json = json!({
        "calls_asked": load.calls,
        "window_s": load.window.as_secs_f64(),
        "idle_s": idle_s,
        "systems": systems,
        "ratios": ratios,
        // The two headline figures: Estuary's CPU per packet over Kamailio + rtpengine's,
        // and over the floor with Estuary's own socket structure (a socket per flow).
        "estuary_cpu_ratio_to_kamailio_rtpengine": get("estuary_to_kamailio_rtpengine"),
        "estuary_cpu_ratio_to_floor": get("estuary_to_bare_epoll"),
        "errors": errors.iter().map(|(n, e)| ((*n).to_owned(), serde_json::Value::from(e.as_str()))).collect::<serde_json::Map<_, _>>(),
    });
    write_json(out, &json).map_err(|e| format!("{}: {e}", out.display()))?;
    println!("\nwrote {}", out.display());
    if errors.is_empty() {
        Ok(())
    } else {
        Err(format!("{} of the reference runs failed", errors.len()))
    }
}
