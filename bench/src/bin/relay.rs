//! `relay`: what the DTLS-SRTP <-> RTP relay and the call set-up cost on the running daemon.
//!
//! [`estuary_bench::load`] plays N G.711 browsers and an IMS core against the release
//! `estuary`. The core is Kamailio on the daemon's `ims.next_hop` (registrar and
//! record-routing proxy, signalling only: [`estuary_bench::ims_core`]) in front of the
//! in-process test peer, whose media tasks exchange RTP with the daemon directly;
//! `BENCH_IMS_CORE=testpeer` leaves Kamailio out. Kamailio's CPU is reported apart, never in
//! Estuary's figures. Each browser has its own WebSocket and registration, and the calls are
//! set up in phases, all of them through one phase before the next (WebSocket, REGISTER,
//! INVITE to 200 and ACK, ICE nomination, DTLS handshake), with the daemon's CPU time read
//! between phases. Then, with every call up, the media pauses for `BENCH_IDLE_SECONDS` (only
//! consent checks flow), runs 2 s of warm-up, and the window opens.
//!
//! Figures per run (only the daemon is measured; the generator's CPU is not):
//! - `relay_cpu_us_per_packet`: the daemon's CPU time over the window divided by the packets
//!   it delivered (counted where they arrive, both sides);
//! - `idle_cpu_fraction`: its CPU over the idle pause, as a share of one core;
//! - `pss_bytes_per_call`: its PSS growth (smaps_rollup) from before the first call to the
//!   window's end, per call (`relay_bytes_per_call` is the same for RSS);
//! - `setup_cpu_ms_per_call_by_phase` (`ws`, `register`, `invite`, `ice`, `dtls`) and their sum
//!   `setup_cpu_ms_per_call`: the daemon's CPU over each phase divided by the calls that came
//!   up (each thread's time from /proc/PID/task/TID/schedstat: phases last tens of
//!   milliseconds, below /proc/PID/stat's 10 ms ticks); `ims_core_setup_cpu_ms_per_call`
//!   likewise for Kamailio; `pss_bytes_per_call_by_phase`: the daemon's PSS growth over each
//!   phase per call (what a call's WebSocket, registration, dialogs, ICE and DTLS hold);
//! - `calls`, `loss_ratio` and the rest of the table.
//!
//! Environment: `BENCH_CALLS` (`200,500,1000`: one run per count, each with a fresh daemon,
//! in order), `BENCH_SECONDS` (15), `BENCH_IDLE_SECONDS` (10), `BENCH_IMS_CORE` (`kamailio`),
//! `BENCH_MEDIA_PORTS` (20000-29999), `BENCH_SET` (`key=value;...`: daemon settings to compare), `BENCH_OUT` (`target/bench/relay.json`; not written in
//! reference mode unless set), `ESTUARY_BIN`. The first count's figures go to `BENCH_OUT`,
//! each further count N's beside it as `relay-N.json` (`make bench`: relay.json for 200 calls,
//! relay-500.json, relay-1000.json). A run with loss above 0.5% prints a WARNING (the figures
//! are still written); runs above 500 calls are labelled indicative (`"indicative": true`):
//! the generator shares the machine's two cores with the daemon and saturates first.
//!
//! Time limit: the browsers read nothing on their WebSocket once their calls are up, so they
//! answer no WebSocket ping: at its first 30 s ping tick after 75 s of silence Estuary closes
//! the connection and ends its calls. The idle pause, the warm-up and the window together must
//! stay under 60 s (the rest of the 75 s is for the ICE and DTLS phases after the last ACK);
//! a run checks it before it starts and, after the window, that no call was ended.
//!
//! **Reference mode** (`BENCH_REFERENCE=1`, `make bench-reference`): in the same invocation and
//! with the same load (`BENCH_CALLS`, here one count, 200 by default; `BENCH_SECONDS`, 15),
//! Estuary, then Kamailio + rtpengine ([`estuary_bench::reference`]), then the bare relay in both socket
//! structures ([`estuary_bench::bare`]), each with an idle pause of `BENCH_IDLE_SECONDS` (10)
//! before its window. Here the calls are set up as before phases existed (ten WebSockets,
//! calls one after another on each) with the test peer as Estuary's core, as the reference
//! systems get them. It prints per system the CPU per packet, the idle CPU, PSS per call, the
//! CPU over the whole set-up per call (`setup_cpu_ms_per_call`: from the first connection to the
//! last call keyed, with the media held back until then; consent checks go on) and loss, and
//! Estuary's ratios to the others, and writes them to `BENCH_REFERENCE_OUT`
//! (`target/bench/reference.json`). On a shared, noisy machine the ratios are the figures.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use estuary_bench::bare::{self, Structure};
use estuary_bench::load::{self, BrowserCodec, Core, Load, Measured, Target, WARMUP};
use estuary_bench::{default_release_daemon, env_or, print_table, raise_nofile, runtime, write_json};
use serde_json::json;

/// Loss above this prints a warning: a relay on an unloaded loopback should not lose packets.
const LOSS_WARNING: f64 = 0.005;
/// Runs with more calls are labelled indicative: the generator saturates the machine first.
const INDICATIVE_ABOVE: u64 = 500;
/// Longest idle pause + warm-up + window (see the module doc).
const SPAN_LIMIT: Duration = Duration::from_secs(60);
/// What each call offers: 50 packets a second each way.
const PPS_PER_CALL: f64 = 100.0;
/// Below this share of the offered packets sent, the generator was the bottleneck.
const SENT_WARNING: f64 = 0.95;

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
    let counts: Vec<u64> = {
        let v = std::env::var("BENCH_CALLS").unwrap_or_else(|_| if reference { "200" } else { "200,500,1000" }.into());
        v.split(',').map(|c| c.trim().parse::<u64>().ok().filter(|&n| n > 0)).collect::<Option<_>>().ok_or_else(|| format!("BENCH_CALLS={v:?} is not a list of call counts"))?
    };
    if reference && counts.len() != 1 {
        return Err("the reference mode runs one load: set BENCH_CALLS to one count".into());
    }
    let seconds: u64 = env_or("BENCH_SECONDS", 15)?;
    let idle = Duration::from_secs(env_or("BENCH_IDLE_SECONDS", 10)?);
    // The reference mode leaves relay.json (`make bench`'s figures) alone unless told.
    let out: Option<PathBuf> = match std::env::var_os("BENCH_OUT") {
        Some(p) => Some(PathBuf::from(p)),
        None => (!reference).then(|| PathBuf::from("target/bench/relay.json")),
    };
    let span = idle + Duration::from_secs(seconds) + WARMUP;
    if span > SPAN_LIMIT {
        return Err(format!(
            "BENCH_SECONDS + BENCH_IDLE_SECONDS + {} s of warm-up = {} s: keep it under {} s, or Estuary closes the \
             browsers' WebSockets for not answering its pings and ends the calls mid-window",
            WARMUP.as_secs(),
            span.as_secs(),
            SPAN_LIMIT.as_secs()
        ));
    }
    let core = if reference { Core::Testpeer } else { Core::from_env()? };
    let rt = runtime()?;
    let mut summary = Vec::new();
    for (i, &calls) in counts.iter().enumerate() {
        let load = Load::from_env(calls, Duration::from_secs(seconds), BrowserCodec::Pcmu)?;
        let target = Target { reference: false, idle: Some(idle), core, phased: !reference };
        let m = rt.block_on(load::run_on(&load, &target))?;
        let json = report(&m, core, calls > INDICATIVE_ABOVE)?;
        if let Some(out) = &out {
            let path = if i == 0 { out.clone() } else { sibling(out, calls) };
            write_json(&path, &json).map_err(|e| format!("{}: {e}", path.display()))?;
            println!("\nwrote {}", path.display());
        }
        if reference {
            let out: PathBuf = env_or("BENCH_REFERENCE_OUT", PathBuf::from("target/bench/reference.json"))?;
            return compare(&rt, &load, Some(idle), m, &out);
        }
        summary.push(json);
    }
    if summary.len() > 1 {
        let title = "relay runs";
        println!("\n{title}\n{}", "-".repeat(title.len()));
        println!("{:>6} {:>10} {:>10} {:>14} {:>14} {:>8}", "calls", "us/packet", "idle CPU %", "PSS/call KiB", "setup ms/call", "loss %");
        for j in &summary {
            let f = |k: &str| j[k].as_f64().unwrap_or(f64::NAN);
            println!(
                "{:>6} {:>10.2} {:>10.2} {:>14.1} {:>14.2} {:>8.2}{}",
                j["calls"],
                f("relay_cpu_us_per_packet"),
                100.0 * f("idle_cpu_fraction"),
                f("pss_bytes_per_call") / 1024.0,
                f("setup_cpu_ms_per_call"),
                100.0 * f("loss_ratio"),
                if j["indicative"] == true { "  (indicative)" } else { "" }
            );
        }
    }
    Ok(())
}

/// `relay.json` -> `relay-N.json` beside it.
fn sibling(out: &Path, calls: u64) -> PathBuf {
    let stem = out.file_stem().and_then(|s| s.to_str()).unwrap_or("relay");
    let ext = out.extension().and_then(|s| s.to_str()).map_or(String::new(), |e| format!(".{e}"));
    out.with_file_name(format!("{stem}-{calls}{ext}"))
}

/// One run's table, warnings and JSON; an error when the run's figures cannot stand.
fn report(m: &Measured, core: Core, indicative: bool) -> Result<serde_json::Value, String> {
    if m.delivered == 0 {
        return Err(format!("no packet came through the daemon\n--- daemon log ---\n{}", m.log_tail));
    }
    // Calls the daemon ended before the window closed (WebSocket ping timeout, session timer,
    // consent) would make the window's figures those of fewer calls.
    let active = m.counters.iter().find(|(n, _)| *n == "estuary_calls_active").map(|(_, v)| *v);
    if let Some(a) = active.filter(|&a| a >= 0.0 && a < m.calls_up as f64) {
        return Err(format!("only {a} of the {} calls were still up at the window's end\n--- log ---\n{}", m.calls_up, m.log_tail));
    }
    let cpu = m.daemon_cpu.as_secs_f64();
    let wall = m.window.as_secs_f64();
    let us_per_packet = cpu * 1e6 / m.delivered as f64;
    let pps_per_core = m.delivered as f64 / cpu.max(1e-9);
    let bytes_per_call = m.rss_loaded.saturating_sub(m.rss_idle) / m.calls_up;
    let loss = 1.0 - m.delivered as f64 / m.sent.max(1) as f64;
    let offered_pps = m.calls_up as f64 * PPS_PER_CALL;
    let sent_pps = m.sent as f64 / wall.max(1e-9);
    let estuary = m.parts.first().ok_or("no measured process")?;
    let idle_fraction = estuary.idle_fraction(m.idle_window);
    let pss_per_call = estuary.pss_per_call(m.calls_up);
    let per_call = |d: Duration| d.as_secs_f64() * 1e3 / m.calls_up as f64;
    let by_phase: serde_json::Map<String, serde_json::Value> = m.phases.iter().map(|p| (p.name.to_owned(), json!(per_call(p.cpu)))).collect();
    let setup_ms = (!m.phases.is_empty()).then(|| m.phases.iter().map(|p| per_call(p.cpu)).sum::<f64>());
    let core_by_phase: Option<serde_json::Map<String, serde_json::Value>> = m.phases.iter().map(|p| Some((p.name.to_owned(), json!(per_call(p.core_cpu?))))).collect();
    let core_setup_ms = core_by_phase.as_ref().filter(|p| !p.is_empty()).map(|p| p.values().filter_map(|v| v.as_f64()).sum::<f64>());

    let mut rows = vec![
        ("calls up / asked", format!("{} / {} (set up in {:.1} s)", m.calls_up, m.calls_asked, m.setup.as_secs_f64())),
        ("IMS core", core.name().to_owned()),
        ("window", format!("{wall:.1} s after {} s warm-up", WARMUP.as_secs())),
        ("packets relayed", format!("{} ({:.0} pps; {:.2}% of sent lost)", m.delivered, m.delivered as f64 / wall, 100.0 * loss)),
        ("packets sent / offered", format!("{sent_pps:.0} / {offered_pps:.0} pps")),
        ("daemon CPU", format!("{cpu:.2} s ({:.0}% of one core)", 100.0 * cpu / wall)),
        ("relay_cpu_us_per_packet", format!("{us_per_packet:.2}")),
        ("relay_pps_per_core", format!("{pps_per_core:.0}")),
        (
            "idle_cpu_fraction",
            idle_fraction.map_or("-".into(), |f| format!("{f:.4} ({:.2}% of one core over {:.1} s paused)", 100.0 * f, m.idle_window.unwrap_or_default().as_secs_f64())),
        ),
        ("daemon RSS idle / loaded", format!("{} / {} KiB", m.rss_idle / 1024, m.rss_loaded / 1024)),
        ("relay_bytes_per_call", format!("{bytes_per_call} (RSS)")),
        ("pss_bytes_per_call", format!("{pss_per_call}")),
    ];
    if let Some(total) = setup_ms {
        rows.push(("setup_cpu_ms_per_call", format!("{total:.3}")));
        for p in &m.phases {
            let core = p.core_cpu.map_or(String::new(), |c| format!(", kamailio {:.3} ms", per_call(c)));
            let grew = p.pss_growth as f64 / m.calls_up as f64 / 1024.0;
            rows.push((p.name, format!("  {:.3} ms ({} calls in {:.2} s{core}), PSS {grew:+.1} KiB/call", per_call(p.cpu), p.calls, p.wall.as_secs_f64())));
        }
    }
    if let Some(c) = core_setup_ms {
        rows.push(("ims_core_setup_cpu_ms_per_call", format!("{c:.3} (kamailio, not in Estuary's figures)")));
    }
    rows.push(("SRTP failures at browsers", format!("{}", m.srtp_failures)));
    let title = format!("DTLS-SRTP <-> RTP relay on the running daemon (pid {}), {} calls{}", m.pid, m.calls_asked, if indicative { " (indicative)" } else { "" });
    print_table(&title, &rows);
    if loss > LOSS_WARNING && !indicative {
        println!("\nWARNING: {:.2}% of the packets were lost at {} calls (expected at most {:.1}%)", 100.0 * loss, m.calls_up, 100.0 * LOSS_WARNING);
    }
    if sent_pps < SENT_WARNING * offered_pps {
        println!(
            "\nWARNING: the generator sent {sent_pps:.0} pps of the {offered_pps:.0} its {} calls offer: it (one thread, on the daemon's \
             cores) was saturated, and the figures are for that load, not the offered one",
            m.calls_up
        );
    }
    Ok(json!({
        "relay_cpu_us_per_packet": us_per_packet,
        "relay_pps_per_core": pps_per_core,
        "relay_bytes_per_call": bytes_per_call,
        "idle_cpu_fraction": idle_fraction,
        "pss_bytes_per_call": pss_per_call,
        "setup_cpu_ms_per_call": setup_ms,
        "setup_cpu_ms_per_call_by_phase": by_phase,
        "pss_bytes_per_call_by_phase": m.phases.iter().map(|p| (p.name.to_owned(), json!(p.pss_growth / m.calls_up as i64))).collect::<serde_json::Map<_, _>>(),
        "setup_phase_wall_s": m.phases.iter().map(|p| (p.name.to_owned(), json!(p.wall.as_secs_f64()))).collect::<serde_json::Map<_, _>>(),
        "ims_core": core.name(),
        "ims_core_setup_cpu_ms_per_call": core_setup_ms,
        "ims_core_setup_cpu_ms_per_call_by_phase": core_by_phase.filter(|p| !p.is_empty()),
        "calls": m.calls_up,
        "calls_asked": m.calls_asked,
        "indicative": indicative,
        "window_s": wall,
        "idle_s": m.idle_window.map(|d| d.as_secs_f64()),
        "packets_relayed": m.delivered,
        "sent_pps": sent_pps,
        "offered_pps": offered_pps,
        "loss_ratio": loss,
        "daemon_cpu_s": cpu,
        "daemon_rss_idle_bytes": m.rss_idle,
        "daemon_rss_loaded_bytes": m.rss_loaded,
        "daemon_pss_idle_bytes": estuary.pss_idle,
        "daemon_pss_loaded_bytes": estuary.pss_loaded,
        "setup_s": m.setup.as_secs_f64(),
    }))
}

/// One system's figures in the reference table.
struct Figures {
    name: &'static str,
    calls_up: u64,
    us_per_packet: f64,
    idle_fraction: Option<f64>,
    pss_per_call: u64,
    /// CPU over the set-up per call (non-phased set-up only, media held back until its end).
    setup_ms_per_call: Option<f64>,
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
            setup_ms_per_call: parts.iter().map(|p| p.setup_cpu).sum::<Option<Duration>>().map(|d| d.as_secs_f64() * 1e3 / m.calls_up.max(1) as f64),
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
            "setup_cpu_ms_per_call": self.setup_ms_per_call,
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
    match rt.block_on(load::run_on(load, &Target { reference: true, idle, ..Target::default() })) {
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
    println!("{:<20} {:>10} {:>12} {:>14} {:>14} {:>8} {:>9} {:>6}", "system", "us/packet", "idle CPU %", "PSS/call KiB", "setup ms/call", "loss %", "pps", "calls");
    for f in &figures {
        let idle = f.idle_fraction.map_or("-".into(), |x| format!("{:.2}", 100.0 * x));
        let setup = f.setup_ms_per_call.map_or("-".into(), |x| format!("{x:.3}"));
        println!(
            "{:<20} {:>10.2} {:>12} {:>14.1} {:>14} {:>8.2} {:>9.0} {:>6}",
            f.name,
            f.us_per_packet,
            idle,
            f.pss_per_call as f64 / 1024.0,
            setup,
            100.0 * f.loss,
            f.pps,
            f.calls_up
        );
    }
    let est = &figures[0];
    let mut ratios = serde_json::Map::new();
    println!("\nEstuary as a ratio to   {:>10} {:>12} {:>14} {:>14}", "us/packet", "idle CPU", "PSS/call", "setup/call");
    for f in figures.iter().skip(1).filter(|f| f.name != "kamailio") {
        let r = json!({
            "cpu_us_per_packet": ratio(Some(est.us_per_packet), Some(f.us_per_packet)),
            "idle_cpu_fraction": ratio(est.idle_fraction, f.idle_fraction),
            "pss_bytes_per_call": ratio(Some(est.pss_per_call as f64), Some(f.pss_per_call as f64)),
            "setup_cpu_ms_per_call": ratio(est.setup_ms_per_call, f.setup_ms_per_call),
        });
        let show = |k: &str| r[k].as_f64().map_or("-".into(), |x| format!("{x:.2}"));
        println!(
            "{:<22} {:>10} {:>12} {:>14} {:>14}",
            f.name,
            show("cpu_us_per_packet"),
            show("idle_cpu_fraction"),
            show("pss_bytes_per_call"),
            show("setup_cpu_ms_per_call")
        );
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
