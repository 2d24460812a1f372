//! `cluster`: does a second node double what the cluster carries?
//!
//! The set-up rate benchmark ([`estuary_bench::rate`]: short calls, each a browser of its
//! own with WebSocket, REGISTER, INVITE, ICE, DTLS, one second of media and BYE, offered at a
//! rising rate) run twice through HAProxy (TCP mode, round robin) in front of the nodes'
//! WebSocket listeners, the nodes sharing state in Redis (`cluster.enabled`):
//!
//! 1. one node pinned to CPU 0 (`taskset`, every thread; `media.threads = 1`);
//! 2. two nodes, pinned to CPU 0 and CPU 1.
//!
//! `ratio` is the second run's sustained calls per second over the first's; the issue's
//! target is 2.0 within 10%. The generator, HAProxy, Kamailio and Redis are not pinned: on a
//! two-core machine they share the nodes' CPUs. Each node's CPU share at the first failing
//! step says whether the nodes were the limit at all; when they were not, the ratio measures
//! the machine, and the output says so. Beside it, the nodes' CPU per call, two nodes over
//! one, is compared twice:
//!
//! - at the same rate per node (two nodes at twice the rate of one): what a second node
//!   adds to each call's cost, load for load. Two nodes with CPUs of their own each saturate
//!   at the rate one node does when this is 1, so it gives the capacity ratio projected for
//!   them (two over it), labelled as a projection, not a measurement;
//! - at the same total rate (each of two nodes at half the load): what spreading the load
//!   costs (less batching per node), reported for comparison.
//!
//! What was measured is reported either way.
//!
//! Environment: `BENCH_RATES` (`50,100,150,200,250,300,350,400,500,600`), `BENCH_STEP_SECONDS`
//! (8), `BENCH_MEDIA_SECONDS` (1), `BENCH_IMS_CORE` (`kamailio`), `BENCH_OUT`
//! (`target/bench/cluster.json`), `ESTUARY_BIN`. Needs haproxy, redis-server and taskset.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use estuary_bench::load::Core;
use estuary_bench::rate::{self, RateConfig, RateTarget, Step, PORT_QUARANTINE_S};
use estuary_bench::{default_release_daemon, env_or, raise_nofile, runtime, write_json};
use estuary_conformance::gateway::Gateway;
use estuary_conformance::haproxy::Haproxy;
use estuary_conformance::net::free_tcp_port;
use estuary_conformance::redis::Redis;
use serde_json::json;

/// Nodes whose CPU share (per pinned CPU) stayed below this at their first failing step were
/// not what limited the run.
const NODE_SATURATED: f64 = 0.85;
/// A generator above this share of its one core was the bottleneck of its step.
const GENERATOR_SATURATED: f64 = 0.9;
/// The target: two nodes carry twice what one does, within 10%.
const TARGET_RATIO: f64 = 2.0;
const TOLERANCE: f64 = 0.1;

fn main() -> ExitCode {
    raise_nofile();
    default_release_daemon();
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("cluster: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Pins every thread of `pid` to `cpu`.
fn pin(pid: u32, cpu: usize) -> Result<(), String> {
    let out = std::process::Command::new("taskset")
        .args(["-a", "-p", "-c", &cpu.to_string(), &pid.to_string()])
        .output()
        .map_err(|e| format!("taskset (util-linux) is needed: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!("taskset -a -p -c {cpu} {pid}: {}", String::from_utf8_lossy(&out.stderr)))
    }
}

fn haproxy_config(front: SocketAddr, nodes: &[SocketAddr]) -> String {
    let mut cfg = format!(
        "global\n  maxconn 4000\n\
         defaults\n  mode tcp\n  timeout connect 2s\n  timeout client 60s\n  timeout server 60s\n\
         frontend web\n  bind {front}\n  default_backend nodes\n\
         backend nodes\n  balance roundrobin\n"
    );
    for (i, n) in nodes.iter().enumerate() {
        cfg.push_str(&format!("  server n{i} {n}\n"));
    }
    cfg
}

/// The sustained rate of one run with `n` nodes, each pinned to its own CPU.
fn measure(cfg: &RateConfig, n: usize, redis: &Redis) -> Result<(Vec<Step>, Vec<u32>), String> {
    let (lo, hi) = cfg.ports;
    let share = (hi - lo) / n as u16;
    let url = redis.url();
    let mut pids = Vec::new();
    let steps = runtime()?.block_on(rate::run_with(
        cfg,
        |next_hop| async move {
            let mut nodes: Vec<Gateway> = Vec::new();
            for i in 0..n {
                // Each node its own media ports (even starts: RTP/RTCP pairs).
                let first = (lo + share * i as u16) & !1;
                let gw = estuary_bench::load::estuary((first, first + share - 2), true, next_hop)
                    .set("media.port_quarantine_s", &PORT_QUARANTINE_S.to_string())
                    .set("media.threads", "1")
                    .set("cluster.enabled", "true")
                    .set("cluster.node_id", &format!("bench-{i}"))
                    .set("cluster.redis", &url)
                    .set("registrar.on_ws_close", "keep")
                    .start()
                    .await;
                pin(gw.pid(), i)?;
                nodes.push(gw);
            }
            let front = SocketAddr::from(([127, 0, 0, 1], free_tcp_port()));
            let addrs: Vec<SocketAddr> = nodes.iter().map(|g| g.ws_addr).collect();
            // (Blocks this thread a moment, before any load.)
            let haproxy = Haproxy::start(&format!("bench-cluster-{n}"), &haproxy_config(front, &addrs), &[front]);
            let target = RateTarget { ws: front, pids: nodes.iter().map(Gateway::pid).collect() };
            Ok((target, (nodes, haproxy)))
        },
        |t| pids = t.pids.clone(),
    ))?;
    Ok((steps, pids))
}

fn sustained(steps: &[Step]) -> Option<&Step> {
    steps.iter().take_while(|s| s.passed()).last()
}

fn row(label: &str, steps: &[Step]) -> serde_json::Value {
    let s = sustained(steps);
    println!(
        "{label}: {} calls/s sustained{}",
        s.map_or("none".into(), |s| s.rate.to_string()),
        s.map_or(String::new(), |s| format!(
            " ({:.2} ms of node CPU per call, nodes at {:.0}% of a core together, generator at {:.0}% of its core)",
            s.daemon_ms_per_call().unwrap_or(f64::NAN),
            100.0 * s.daemon_cpu.as_secs_f64() / s.wall.as_secs_f64().max(1e-9),
            100.0 * s.generator_load()
        ))
    );
    for st in steps {
        println!(
            "  step {:>4} cps: {}/{} completed, node CPU {:.0}% of a core, generator {:.0}%",
            st.rate,
            st.completed,
            st.launched,
            100.0 * st.daemon_cpu.as_secs_f64() / st.wall.as_secs_f64().max(1e-9),
            100.0 * st.generator_load()
        );
    }
    json!({
        "calls_per_second_sustained": s.map(|s| s.rate),
        "node_cpu_ms_per_call": s.and_then(Step::daemon_ms_per_call),
        "generator_core_share": s.map(Step::generator_load),
        "steps": steps.iter().map(|st| json!({"rate": st.rate, "launched": st.launched, "completed": st.completed, "node_cpu_ms_per_call": st.daemon_ms_per_call()})).collect::<Vec<_>>(),
    })
}

fn run() -> Result<(), String> {
    let rates: Vec<u32> = {
        let v = std::env::var("BENCH_RATES").unwrap_or_else(|_| "50,100,150,200,250,300,350,400,500,600".into());
        v.split(',').map(|r| r.trim().parse::<u32>().ok().filter(|&r| r > 0)).collect::<Option<_>>().ok_or_else(|| format!("BENCH_RATES={v:?} is not a list of calls per second"))?
    };
    let step_s: u64 = env_or("BENCH_STEP_SECONDS", 8)?;
    let media_s: u64 = env_or("BENCH_MEDIA_SECONDS", 1)?;
    let out: PathBuf = env_or("BENCH_OUT", PathBuf::from("target/bench/cluster.json"))?;
    let ports = estuary_bench::load::Load::from_env(0, Duration::ZERO, estuary_bench::load::BrowserCodec::Pcmu)?.ports;
    let cfg = RateConfig { rates, step: Duration::from_secs(step_s), media: Duration::from_secs(media_s), ports, core: Core::from_env()? };
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    if cpus < 2 {
        return Err(format!("two CPUs are needed to pin two nodes; this machine has {cpus}"));
    }
    Redis::require();
    Haproxy::require();
    let redis = Redis::start();
    println!("one node on CPU 0 behind HAProxy:");
    let (one, _) = measure(&cfg, 1, &redis)?;
    println!("two nodes on CPUs 0 and 1 behind HAProxy:");
    let (two, _) = measure(&cfg, 2, &redis)?;

    let title = format!("Cluster scaling: set-up rate through HAProxy, {step_s} s steps, nodes pinned one CPU each, {cpus} CPUs in all");
    println!("\n{title}\n{}", "-".repeat(title.len()));
    let one_json = row("one node ", &one);
    let two_json = row("two nodes", &two);
    let ratio = sustained(&two).zip(sustained(&one)).map(|(t, o)| f64::from(t.rate) / f64::from(o.rate));
    let within = ratio.map(|r| (r - TARGET_RATIO).abs() <= TARGET_RATIO * TOLERANCE);
    match ratio {
        Some(r) => println!("\nratio: {r:.2} (target {TARGET_RATIO} within {:.0}%: {})", TOLERANCE * 100.0, if within == Some(true) { "met" } else { "NOT met" }),
        None => println!("\nratio: not measured (a run sustained no rate)"),
    }
    // Node CPU per call with two nodes over one, at the highest rates both runs carried with
    // two nodes at `per_node` times the one node's rate: 2 compares load per node alike (a
    // second node's own cost per call), 1 the same offered load.
    let compare = |per_node: u32| {
        let (o, t) = one.iter().rev().filter(|s| s.passed()).find_map(|o| two.iter().find(|t| t.rate == per_node * o.rate && t.passed()).map(|t| (o, t)))?;
        Some((o.rate, t.rate, t.daemon_ms_per_call()? / o.daemon_ms_per_call()?))
    };
    let (per_node, same_total) = (compare(2), compare(1));
    let projected = per_node.map(|(.., r)| 2.0 / r);
    if let (Some((o, t, r)), Some(p)) = (per_node, projected) {
        println!(
            "node CPU per call, two nodes at {t} cps over one at {o} cps (the same rate per node): {r:.2}; \
             the capacity ratio this projects for nodes with CPUs of their own: {p:.2} (a projection, not a measurement)"
        );
    }
    if let Some((o, _, r)) = same_total {
        println!("node CPU per call at {o} cps in both runs (each of two nodes at half the load): {r:.2}");
    }
    for (label, steps) in [("one node", &one), ("two nodes", &two)] {
        if let Some(s) = steps.iter().find(|s| !s.passed()).filter(|s| s.generator_load() > GENERATOR_SATURATED) {
            println!(
                "WARNING: {label}: at {} cps the generator used {:.0}% of its core: it, not the nodes, was the limit",
                s.rate,
                100.0 * s.generator_load()
            );
        }
    }
    // Were the nodes the limit? Their CPU share per pinned CPU at the first step that failed.
    let limit = |steps: &[Step], n: usize| {
        steps.iter().find(|s| !s.passed()).map(|s| s.daemon_cpu.as_secs_f64() / s.wall.as_secs_f64().max(1e-9) / n as f64)
    };
    let (one_limit, two_limit) = (limit(&one, 1), limit(&two, 2));
    let nodes_saturated = one_limit.zip(two_limit).map(|(a, b)| a >= NODE_SATURATED && b >= NODE_SATURATED);
    for (label, share) in [("one node", one_limit), ("two nodes", two_limit)] {
        match share {
            Some(x) => println!("{label}: at the first failing step each node used {:.0}% of its CPU", 100.0 * x),
            None => println!("{label}: no step failed: raise BENCH_RATES to find the limit"),
        }
    }
    if nodes_saturated == Some(false) {
        println!(
            "NOTE: the nodes were not the limit ({cpus} CPUs in all; the generator, HAProxy, Kamailio and Redis share them with the \
             pinned nodes): this ratio measures the machine, not the cluster. Run it where the load has CPUs of its own."
        );
    }
    let result = json!({
        "one_node": one_json,
        "two_nodes": two_json,
        "ratio": ratio,
        "target_ratio": TARGET_RATIO,
        "tolerance": TOLERANCE,
        "target_met": within,
        "node_cpu_per_call_ratio_same_rate_per_node": per_node.map(|(.., r)| r),
        "node_cpu_per_call_ratio_same_rate_per_node_at_cps": per_node.map(|(o, t, _)| json!({"one_node": o, "two_nodes": t})),
        "node_cpu_per_call_ratio_same_total_rate": same_total.map(|(.., r)| r),
        "node_cpu_per_call_ratio_same_total_rate_at_cps": same_total.map(|(o, ..)| o),
        "projected_ratio": projected,
        "node_cpu_share_at_limit": {"one_node": one_limit, "two_nodes": two_limit},
        "nodes_were_the_limit": nodes_saturated,
        "cpus": cpus,
        "step_seconds": step_s,
    });
    write_json(&out, &result).map_err(|e| format!("{}: {e}", out.display()))?;
    println!("wrote {}", out.display());
    Ok(())
}
