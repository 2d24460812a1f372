//! `setup_rate`: how many calls a second the running daemon sets up and tears down, and what
//! each costs it.
//!
//! [`estuary_bench::rate`] offers short calls to the release `estuary` (behind Kamailio as
//! the IMS core, as in the relay benchmark; `BENCH_IMS_CORE=testpeer` leaves it out): each a
//! browser of its own with WebSocket, REGISTER, INVITE, ICE, DTLS, one second of media both
//! ways and BYE, so that only a few hundred are up at once. The offered rate rises in steps;
//! `calls_per_second_sustained` is the highest rate whose step completed at least 99% of its
//! calls (answered, keyed, media back, BYE answered), every lower step having passed too,
//! with the daemon's CPU per call at that rate. The generator runs on one thread of the same
//! two-core machine: its share of a core is printed per step, and a step it saturated says so
//! (the daemon may then sustain more than measured), and a passing step whose median set-up
//! took over a second says its calls queued (the daemon fell behind; they completed because
//! the waits are long). The target is 300 calls a second; what was measured is
//! reported either way.
//!
//! Environment: `BENCH_RATES` (`50,100,200,300,400` calls a second, in order),
//! `BENCH_STEP_SECONDS` (10), `BENCH_MEDIA_SECONDS` (1), `BENCH_IMS_CORE` (`kamailio`),
//! `BENCH_MEDIA_PORTS` (20000-29999), `BENCH_OUT` (`target/bench/setup_rate.json`),
//! `ESTUARY_BIN`. The daemon runs with `media.port_quarantine_s` =
//! [`estuary_bench::rate::PORT_QUARANTINE_S`] (why: there). Exits 1 when not even the first
//! step passes.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use estuary_bench::load::Core;
use estuary_bench::rate::{self, RateConfig, Step, PASS_SHARE, PORT_QUARANTINE_S};
use estuary_bench::{default_release_daemon, env_or, raise_nofile, runtime, write_json};
use serde_json::json;

/// The target on two cores with the generator on the same machine.
const TARGET_CPS: u32 = 300;
/// A generator above this share of its one core was the bottleneck of its step.
const GENERATOR_SATURATED: f64 = 0.9;
/// Panics of call tasks printed (see [`quiet_call_panics`]).
const SHOWN_PANICS: u32 = 3;
/// A median set-up (WebSocket open to keys) above this means the calls of a step queued: it
/// may have completed, but the daemon did not keep up with the rate.
const QUEUED_MS: f64 = 1000.0;

fn main() -> ExitCode {
    raise_nofile();
    default_release_daemon();
    quiet_call_panics();
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("setup_rate: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The conformance client reports a closed WebSocket or a timeout by panicking, in the call's
/// own task, where it is that call's failure (counted in the table); an overloaded step would
/// print one per call, so only the first few are.
fn quiet_call_panics() {
    static SHOWN: AtomicU32 = AtomicU32::new(0);
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if SHOWN.fetch_add(1, Ordering::Relaxed) < SHOWN_PANICS {
            default(info);
        }
    }));
}

fn run() -> Result<(), String> {
    let rates: Vec<u32> = {
        let v = std::env::var("BENCH_RATES").unwrap_or_else(|_| "50,100,200,300,400".into());
        v.split(',').map(|r| r.trim().parse::<u32>().ok().filter(|&r| r > 0)).collect::<Option<_>>().ok_or_else(|| format!("BENCH_RATES={v:?} is not a list of calls per second"))?
    };
    let step_s: u64 = env_or("BENCH_STEP_SECONDS", 10)?;
    let media_s: u64 = env_or("BENCH_MEDIA_SECONDS", 1)?;
    let out: PathBuf = env_or("BENCH_OUT", PathBuf::from("target/bench/setup_rate.json"))?;
    let ports = estuary_bench::load::Load::from_env(0, Duration::ZERO, estuary_bench::load::BrowserCodec::Pcmu)?.ports;
    let cfg = RateConfig { rates, step: Duration::from_secs(step_s), media: Duration::from_secs(media_s), ports, core: Core::from_env()? };
    let r = runtime()?.block_on(rate::run(&cfg))?;

    let title = format!(
        "Call set-up rate on the running daemon (pid {}): {} s steps, calls of {} s media, IMS core {}",
        r.pid,
        step_s,
        media_s,
        cfg.core.name()
    );
    println!("\n{title}\n{}", "-".repeat(title.len()));
    println!(
        "{:>5} {:>9} {:>16} {:>12} {:>12} {:>10} {:>10} {:>6} {:>14}  failures",
        "cps", "achieved", "completed", "daemon ms", "kamailio ms", "daemon %", "generator", "peak", "setup p50/p99"
    );
    for s in &r.steps {
        let failures = s.failures.iter().map(|(stage, n, _)| format!("{stage} {n}")).collect::<Vec<_>>().join(", ");
        println!(
            "{:>5} {:>9.1} {:>9}/{:<6} {:>12} {:>12} {:>10.0} {:>9.0}% {:>6} {:>14}  {}",
            s.rate,
            s.launch_rate(),
            s.completed,
            s.launched,
            s.daemon_ms_per_call().map_or("-".into(), |v| format!("{v:.2}")),
            s.core_ms_per_call().map_or("-".into(), |v| format!("{v:.2}")),
            100.0 * s.daemon_cpu.as_secs_f64() / s.wall.as_secs_f64().max(1e-9),
            100.0 * s.generator_load(),
            s.peak_in_progress,
            format!("{}/{} ms", ms(s.setup_ms(0.5)), ms(s.setup_ms(0.99))),
            if failures.is_empty() { "-".into() } else { failures }
        );
    }
    println!("(daemon ms: its CPU per completed call; daemon %: its CPU over the step as a share of one core; generator: this process's share of its one core)");
    for s in r.steps.iter().filter(|s| !s.passed()) {
        for (stage, n, first) in &s.failures {
            println!("{} cps, {n} failed at {stage}, e.g.: {}", s.rate, first.lines().next().unwrap_or_default());
        }
        if s.generator_load() > GENERATOR_SATURATED {
            println!(
                "WARNING: at {} cps the generator used {:.0}% of its core: it, not the daemon, may have been the limit",
                s.rate,
                100.0 * s.generator_load()
            );
        }
    }
    for s in r.steps.iter().filter(|s| s.passed() && queued(s)) {
        println!(
            "WARNING: at {} cps the calls queued (median set-up {} ms, {} in progress at once): they completed, but the daemon \
             fell behind the rate; a longer step would likely fail",
            s.rate,
            ms(s.setup_ms(0.5)),
            s.peak_in_progress
        );
    }
    let sustained: Option<&Step> = r.steps.iter().take_while(|s| s.passed()).last();
    let cps = sustained.map(|s| s.rate);
    match sustained {
        Some(s) => println!(
            "\ncalls_per_second_sustained: {} ({:.2} ms of daemon CPU per call; {:.1}% completed){}",
            s.rate,
            s.daemon_ms_per_call().unwrap_or(f64::NAN),
            100.0 * s.completed_share(),
            if r.steps.iter().all(|s| s.passed()) { "; every step passed: the daemon may sustain more" } else { "" }
        ),
        None => println!("\ncalls_per_second_sustained: none (the first step did not complete {:.0}% of its calls)", 100.0 * PASS_SHARE),
    }
    println!("target: {TARGET_CPS} cps on 2 cores with the generator on the same machine: {}", if cps.is_some_and(|c| c >= TARGET_CPS) { "met" } else { "NOT met" });

    let steps: Vec<serde_json::Value> = r
        .steps
        .iter()
        .map(|s| {
            json!({
                "rate": s.rate,
                "launched": s.launched,
                "launch_rate": s.launch_rate(),
                "completed": s.completed,
                "completed_share": s.completed_share(),
                "passed": s.passed(),
                "daemon_cpu_ms_per_call": s.daemon_ms_per_call(),
                "daemon_cpu_cores": s.daemon_cpu.as_secs_f64() / s.wall.as_secs_f64().max(1e-9),
                "ims_core_cpu_ms_per_call": s.core_ms_per_call(),
                "generator_cpu_cores": s.generator_load(),
                "peak_calls_in_progress": s.peak_in_progress,
                "setup_ms_p50": s.setup_ms(0.5),
                "setup_ms_p99": s.setup_ms(0.99),
                "ice_first_check_unanswered": s.ice_retried,
                "queued": queued(s),
                "wall_s": s.wall.as_secs_f64(),
                "failures": s.failures.iter().map(|(stage, n, first)| ((*stage).to_owned(), json!({"calls": n, "first": first}))).collect::<serde_json::Map<_, _>>(),
            })
        })
        .collect();
    let json = json!({
        "calls_per_second_sustained": cps,
        "daemon_cpu_ms_per_call": sustained.and_then(|s| s.daemon_ms_per_call()),
        "ims_core_cpu_ms_per_call": sustained.and_then(|s| s.core_ms_per_call()),
        "target_cps": TARGET_CPS,
        "target_met": cps.is_some_and(|c| c >= TARGET_CPS),
        "ims_core": cfg.core.name(),
        "step_s": step_s,
        "media_s": media_s,
        "pass_share": PASS_SHARE,
        "port_quarantine_s": PORT_QUARANTINE_S,
        "steps": steps,
    });
    write_json(&out, &json).map_err(|e| format!("{}: {e}", out.display()))?;
    println!("\nwrote {}", out.display());
    if cps.is_none() {
        return Err("no step passed".into());
    }
    Ok(())
}

fn queued(s: &Step) -> bool {
    s.setup_ms(0.5).is_some_and(|m| m > QUEUED_MS)
}

fn ms(v: Option<f64>) -> String {
    v.map_or("-".into(), |v| format!("{v:.0}"))
}
