//! `transcode`: what Opus <-> G.711 transcoding costs, in isolation and on the running daemon.
//!
//! 1. The pipelines alone: an `OpusToG711` and a `G711ToOpus` (one channel, both directions)
//!    run flat out over `BENCH_AUDIO_SECONDS` of a voiced signal on a simulated clock
//!    ([`estuary_transcoder::calibrate`], the daemon's own admission measurement) give
//!    channels per core; raw libopus encode + decode of the same frames, timed in the same run,
//!    gives the codec's share, so the pipeline's overhead (jitter buffer, resampler, PLC,
//!    G.711) shows as a ratio.
//! 2. Memory: resident growth of this process while 200 channels are built.
//! 3. The daemon: [`estuary_bench::load`] with Opus-only browsers and a G.711 core, so every
//!    call is transcoded both ways through the daemon's sockets and worker pool; its CPU time
//!    over the window gives transcoded channels per core end to end.
//!
//! Environment: `BENCH_CALLS` (100), `BENCH_SECONDS` (10), `BENCH_AUDIO_SECONDS` (20),
//! `BENCH_MEDIA_PORTS` (20000-29999), `BENCH_OUT` (`target/bench/transcode.json`), `ESTUARY_BIN`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use estuary_bench::load::{self, BrowserCodec, Load};
use estuary_bench::{default_release_daemon, env_or, print_table, raise_nofile, runtime, sample, write_json};
use estuary_transcoder::{G711ToOpus, G711ToOpusConfig, Law, OpusConfig, OpusDecoder, OpusEncoder, OpusToG711, OpusToG711Config};

fn main() -> ExitCode {
    raise_nofile();
    default_release_daemon();
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("transcode: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Raw libopus as the pipelines use it: encode 20 ms at 8 kHz, decode that packet at 16 kHz.
/// Returns the time per second of audio, timed on this thread as calibrate() times the
/// pipelines (wall time: run it on an otherwise idle core).
fn raw_opus_cost(audio: Duration) -> Result<Duration, String> {
    let mut enc = OpusEncoder::new(8000, &OpusConfig::default()).map_err(|e| format!("{e:?}"))?;
    let mut dec = OpusDecoder::new(16_000).map_err(|e| format!("{e:?}"))?;
    let frames = (audio.as_millis() / 20) as usize;
    let pcm: Vec<[i16; 160]> = (0..50).map(estuary_transcoder::pool::voiced_frame).collect();
    let mut packet = [0u8; 1500];
    let mut out = [0i16; 320 * 6];
    let t0 = Instant::now();
    for k in 0..frames {
        let n = enc.encode(&pcm[k % 50], &mut packet).map_err(|e| format!("{e:?}"))?;
        dec.decode(&packet[..n], &mut out).map_err(|e| format!("{e:?}"))?;
    }
    Ok(t0.elapsed().div_f64(frames as f64 * 0.02))
}

fn run() -> Result<(), String> {
    let calls: u64 = env_or("BENCH_CALLS", 100)?;
    let seconds: u64 = env_or("BENCH_SECONDS", 10)?;
    let audio: u64 = env_or("BENCH_AUDIO_SECONDS", 20)?;
    let out: PathBuf = env_or("BENCH_OUT", PathBuf::from("target/bench/transcode.json"))?;

    // 1. Pipelines and raw codec, same machine, same run.
    let cal = estuary_transcoder::calibrate(Duration::from_secs(audio)).map_err(|e| e.to_string())?;
    let raw = raw_opus_cost(Duration::from_secs(audio))?;
    let pipeline_per_core = cal.pairs_per_core;
    let raw_per_core = 1.0 / raw.as_secs_f64().max(1e-12);

    // 2. Memory per channel: both pipelines of 200 channels, built and held.
    let me = std::process::id();
    let before = sample(me).map_err(|e| e.to_string())?.rss_bytes;
    let mut held = Vec::new();
    for _ in 0..200 {
        let a = OpusToG711::new(OpusToG711Config { law: Law::A, ..Default::default() }).map_err(|e| e.to_string())?;
        let b = G711ToOpus::new(G711ToOpusConfig { law: Law::A, ..Default::default() }).map_err(|e| e.to_string())?;
        held.push((a, b));
    }
    let bytes_per_channel = sample(me).map_err(|e| e.to_string())?.rss_bytes.saturating_sub(before) / 200;
    drop(held);

    // 3. The daemon, end to end.
    let load = Load::from_env(calls, Duration::from_secs(seconds), BrowserCodec::Opus)?;
    let m = runtime()?.block_on(load::run(&load))?;
    if m.delivered == 0 || m.transcoded_frames.unwrap_or(0.0) == 0.0 {
        return Err(format!("nothing was transcoded through the daemon\n--- daemon log ---\n{}", m.log_tail));
    }
    let cpu = m.daemon_cpu.as_secs_f64();
    let wall = m.window.as_secs_f64();
    // Channel-seconds carried per CPU-second: channels per core.
    let daemon_per_core = m.calls_up as f64 * wall / cpu.max(1e-9);
    let daemon_bytes_per_call = m.rss_loaded.saturating_sub(m.rss_idle) / m.calls_up;
    let loss = 1.0 - m.delivered as f64 / m.sent.max(1) as f64;

    print_table(
        "Opus <-> G.711 transcoding (a channel = one call's audio, both directions)",
        &[
            ("transcode_channels_per_core", format!("{pipeline_per_core:.0} (pipelines alone, {:.3} ms CPU per channel-second)", cal.cost_per_second.as_secs_f64() * 1e3)),
            ("raw_opus_channels_per_core", format!("{raw_per_core:.0} (libopus encode 8 kHz + decode 16 kHz alone)")),
            ("pipeline / raw cost", format!("{:.2}x", raw_per_core / pipeline_per_core.max(1e-9))),
            ("transcode_bytes_per_channel", format!("{bytes_per_channel} (both pipelines, resident)")),
            ("daemon: calls up / asked", format!("{} / {} (set up in {:.1} s)", m.calls_up, m.calls_asked, m.setup.as_secs_f64())),
            ("daemon: CPU", format!("{cpu:.2} s over {wall:.1} s ({:.0}% of one core)", 100.0 * cpu / wall)),
            ("daemon_transcode_channels_per_core", format!("{daemon_per_core:.0} (sockets, SRTP, relay and transcoding)")),
            ("daemon: RSS per transcoded call", format!("{daemon_bytes_per_call}")),
            ("daemon: packets delivered", format!("{} ({:.2}% of sent lost)", m.delivered, 100.0 * loss)),
        ],
    );
    let json = serde_json::json!({
        "transcode_channels_per_core": pipeline_per_core,
        "raw_opus_channels_per_core": raw_per_core,
        "daemon_transcode_channels_per_core": daemon_per_core,
        "transcode_bytes_per_channel": bytes_per_channel,
        "pipeline_cost_us_per_channel_second": cal.cost_per_second.as_secs_f64() * 1e6,
        "raw_opus_cost_us_per_channel_second": raw.as_secs_f64() * 1e6,
        "daemon_calls": m.calls_up,
        "daemon_cpu_s": cpu,
        "daemon_window_s": wall,
        "daemon_bytes_per_call": daemon_bytes_per_call,
        "daemon_loss_ratio": loss,
    });
    write_json(&out, &json).map_err(|e| format!("{}: {e}", out.display()))?;
    println!("\nwrote {}", out.display());
    Ok(())
}
