//! The daemon benchmarks kept working: short runs (a few calls, 1 s) against the debug daemon
//! must bring every call up, see packets through (transcoded for `transcode`), and write every
//! figure `make bench` promises. The figures themselves are not judged here (debug build, tiny load).
//! The relay and set-up rate runs go through Kamailio as the IMS core, as `make bench` does.
//!
//! Needs `cargo build -p estuary` (make test does it) and Kamailio (make deps installs it).

use std::process::Command;

#[test]
fn a_short_relay_run_reports_every_figure() {
    let out = std::env::temp_dir().join(format!("estuary-relay-smoke-{}.json", std::process::id()));
    let run = Command::new(env!("CARGO_BIN_EXE_relay"))
        .env("ESTUARY_BIN", estuary_conformance::gateway::estuary_binary())
        .env("BENCH_CALLS", "3")
        .env("BENCH_MEDIA_PORTS", "19000-19099")
        .env("BENCH_SECONDS", "1")
        .env("BENCH_IDLE_SECONDS", "1")
        .env("BENCH_OUT", &out)
        .output()
        .expect("run the relay benchmark");
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(run.status.success(), "relay failed:\n{stdout}\n{}", String::from_utf8_lossy(&run.stderr));
    let json: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&out).expect("JSON written")).expect("valid JSON");
    let _ = std::fs::remove_file(&out);
    assert_eq!(json["calls"], 3, "{json}");
    assert_eq!(json["ims_core"], "kamailio", "{json}");
    for key in ["relay_cpu_us_per_packet", "relay_pps_per_core", "relay_bytes_per_call", "pss_bytes_per_call", "setup_cpu_ms_per_call", "ims_core_setup_cpu_ms_per_call"] {
        assert!(json[key].as_f64().is_some_and(|v| v > 0.0), "{key} in {json}");
    }
    assert!(json["idle_cpu_fraction"].as_f64().is_some_and(|v| v >= 0.0), "{json}");
    assert!(json["loss_ratio"].as_f64().is_some(), "{json}");
    let phases = json["setup_cpu_ms_per_call_by_phase"].as_object().expect("phases");
    assert_eq!(phases.keys().map(String::as_str).collect::<Vec<_>>().len(), estuary_bench::load::PHASES.len(), "{json}");
    let sum: f64 = estuary_bench::load::PHASES.iter().map(|p| phases[*p].as_f64().expect("phase figure")).sum();
    assert!((sum - json["setup_cpu_ms_per_call"].as_f64().unwrap()).abs() < 1e-9, "the phases add up: {json}");
    // 3 calls x 2 directions x 50 pps x 1 s, give or take timer slack.
    assert!(json["packets_relayed"].as_u64().is_some_and(|n| n >= 200), "{json}");
    assert!(stdout.contains("relay_cpu_us_per_packet"), "the table is printed:\n{stdout}");
}

#[test]
fn a_short_setup_rate_run_reports_every_figure() {
    let out = std::env::temp_dir().join(format!("estuary-setup-rate-smoke-{}.json", std::process::id()));
    let run = Command::new(env!("CARGO_BIN_EXE_setup_rate"))
        .env("ESTUARY_BIN", estuary_conformance::gateway::estuary_binary())
        .env("BENCH_RATES", "4")
        .env("BENCH_STEP_SECONDS", "1")
        .env("BENCH_MEDIA_PORTS", "19600-19699")
        .env("BENCH_OUT", &out)
        .output()
        .expect("run the set-up rate benchmark");
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(run.status.success(), "setup_rate failed:\n{stdout}\n{}", String::from_utf8_lossy(&run.stderr));
    let json: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&out).expect("JSON written")).expect("valid JSON");
    let _ = std::fs::remove_file(&out);
    assert_eq!(json["calls_per_second_sustained"], 4, "{json}");
    assert_eq!(json["steps"][0]["completed"], 4, "every short call completed: {json}");
    for key in ["daemon_cpu_ms_per_call", "ims_core_cpu_ms_per_call"] {
        assert!(json[key].as_f64().is_some_and(|v| v > 0.0), "{key} in {json}");
    }
    assert!(stdout.contains("calls_per_second_sustained"), "the table is printed:\n{stdout}");
}

#[test]
fn a_short_transcode_run_reports_every_figure() {
    let out = std::env::temp_dir().join(format!("estuary-transcode-smoke-{}.json", std::process::id()));
    let run = Command::new(env!("CARGO_BIN_EXE_transcode"))
        .env("ESTUARY_BIN", estuary_conformance::gateway::estuary_binary())
        .env("BENCH_CALLS", "2")
        .env("BENCH_MEDIA_PORTS", "19100-19199")
        .env("BENCH_SECONDS", "1")
        .env("BENCH_AUDIO_SECONDS", "1")
        .env("BENCH_OUT", &out)
        .output()
        .expect("run the transcode benchmark");
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(run.status.success(), "transcode failed:\n{stdout}\n{}", String::from_utf8_lossy(&run.stderr));
    let json: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&out).expect("JSON written")).expect("valid JSON");
    let _ = std::fs::remove_file(&out);
    for key in ["transcode_channels_per_core", "raw_opus_channels_per_core", "daemon_transcode_channels_per_core", "transcode_bytes_per_channel"] {
        assert!(json[key].as_f64().is_some_and(|v| v > 0.0), "{key} in {json}");
    }
    assert_eq!(json["daemon_calls"], 2, "{json}");
}
