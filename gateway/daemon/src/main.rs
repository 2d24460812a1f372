//! `estuary`: the gateway daemon. It owns every socket, the clock and the threads; the
//! composed gateway ([`estuary_core::Core`]: the sans-IO signalling machine with the media
//! threads' hub as its media plane) runs on one task (`engine`).
//!
//! Tasks, all on one thread (a current-thread runtime): one engine task; per listener an
//! accept task; per connection one task (WS, WSS or IMS TCP); one UDP receive task. Socket tasks send [`events::Event`]s
//! to the engine over a bounded channel; the engine sends bytes back over per-connection
//! channels or straight to the UDP socket.
//!
//! On stdout the daemon prints one `listening KEY ADDR` line per bound listener (the real port
//! when the config asked for port 0), `certificate sha256 FP` for the WSS certificate and
//! `ready`; logs go to stderr.

/// Counts each thread's heap allocations in the unit tests (the media thread's hot-path test).
#[cfg(test)]
#[global_allocator]
static GLOBAL: estuary_alloc_count::Counting = estuary_alloc_count::Counting;

mod access;
mod admin;
mod builtin_peer;
mod civil;
mod cluster;
mod ctx;
mod demo;
mod engine;
mod events;
mod engine_config;
mod diameter;
mod dns;
mod error;
mod http;
mod icmp;
mod json;
mod ims;
mod media;
mod metrics;
mod ports;
mod proxy_protocol;
mod recorder;
mod records;
mod replay;
mod reload;
mod rlimit;
mod sdp_tool;
mod server;
mod tls;
mod transcode;
mod web;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use estuary_config::{Config, LogConfig, LogFormat};

/// The operator's reference config; also the defaults of `estuary run` without --config.
const DEFAULT_CONFIG: &str = include_str!("../../../etc/estuary.toml");

/// Exit status for a configuration the daemon refuses (usage errors share it, as clap does).
const EXIT_CONFIG: u8 = 2;

#[derive(Parser)]
#[command(name = "estuary", version, about = "WebRTC-to-IMS gateway")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway.
    Run {
        /// Configuration file; without it the built-in defaults (etc/estuary.toml) apply.
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
        /// Override one key, e.g. --set media.port_min=30000 (repeatable).
        #[arg(long = "set", value_name = "SECTION.KEY=VALUE")]
        set: Vec<String>,
    },
    /// Drain a running gateway (as SIGTERM does): new calls get 503 and /healthz says
    /// "draining" while the calls in progress go on; the daemon exits when they have ended
    /// or admin.drain_timeout_s has passed. Talks to the daemon's admin.listen, read from
    /// the same configuration the daemon runs with, or given with --admin.
    Drain {
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
        #[arg(long = "set", value_name = "SECTION.KEY=VALUE")]
        set: Vec<String>,
        /// The daemon's admin address (HOST:PORT), instead of the configuration's.
        #[arg(long, value_name = "ADDR")]
        admin: Option<std::net::SocketAddr>,
    },
    /// Validate a configuration file: prints "ok: <summary>" or the error naming the key.
    CheckConfig {
        /// Configuration file.
        file: PathBuf,
        /// Override one key before checking (repeatable).
        #[arg(long = "set", value_name = "SECTION.KEY=VALUE")]
        set: Vec<String>,
    },
    /// Show what the SDP engine makes of an offer: `web-to-ims` for a browser's offer,
    /// `ims-to-web` for a core's; FILE may be `-` for stdin.
    Sdp {
        #[arg(value_enum)]
        direction: SdpDirection,
        file: PathBuf,
        /// Configuration whose [media] policy applies; default the built-in one.
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
        #[arg(long = "set", value_name = "SECTION.KEY=VALUE")]
        set: Vec<String>,
    },
    /// Replay a capture of what entered the gateway through its signalling engine on a
    /// virtual clock, and compare what it emits with EXPECTED (exit 1 and a diff on a
    /// difference). Captures are in the recorder's layout (recording.mode) or plain
    /// tcpdump captures of web.ws_listen and ims.listen. With --live the capture is played
    /// against a running daemon instead, over loopback: give the daemon's settings
    /// (--config/--set: web.ws_listen or web.wss_listen, ims.listen, and ims.next_hop, where
    /// the replay plays the core on UDP).
    Replay {
        input: PathBuf,
        #[arg(long, value_name = "EXPECTED")]
        expect: Option<PathBuf>,
        /// The configuration the recording daemon ran with; default the built-in one.
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
        #[arg(long = "set", value_name = "SECTION.KEY=VALUE")]
        set: Vec<String>,
        /// The engine seed the recording daemon ran with (ESTUARY_ENGINE_SEED).
        #[arg(long, default_value_t = 4242)]
        seed: u64,
        /// Play against the running daemon the configuration describes.
        #[arg(long)]
        live: bool,
        /// With --live: how long to wait for each message the daemon should send.
        #[arg(long, value_name = "SECONDS", default_value_t = 5.0)]
        wait: f64,
    },
}

#[derive(Copy, Clone, clap::ValueEnum)]
enum SdpDirection {
    WebToIms,
    ImsToWeb,
}

fn main() -> ExitCode {
    match Cli::parse().command {
        Command::Sdp { direction, file, config, set } => {
            let cfg = match load(config.as_deref(), &set) {
                Ok(c) => c,
                Err(code) => return code,
            };
            let from = match direction {
                SdpDirection::WebToIms => estuary_sdp::Side::Web,
                SdpDirection::ImsToWeb => estuary_sdp::Side::Ims,
            };
            match sdp_tool::run(&cfg, from, &file) {
                Ok(report) => {
                    print!("{report}");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("estuary: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Replay { input, expect, config, set, seed, live, wait } => {
            let cfg = match load(config.as_deref(), &set) {
                Ok(c) => c,
                Err(code) => return code,
            };
            let mode = if live {
                match std::time::Duration::try_from_secs_f64(wait) {
                    Ok(wait) => replay::Mode::Live { wait },
                    Err(_) => {
                        eprintln!("estuary: --wait {wait}: expected a number of seconds");
                        return ExitCode::from(EXIT_CONFIG);
                    }
                }
            } else {
                replay::Mode::Virtual { seed }
            };
            match replay::run(&cfg, &input, expect.as_deref(), mode) {
                Ok(true) => ExitCode::SUCCESS,
                Ok(false) => ExitCode::FAILURE,
                Err(e) => {
                    eprintln!("estuary: {e}");
                    ExitCode::from(EXIT_CONFIG)
                }
            }
        }
        Command::Drain { config, set, admin } => {
            let addr = match admin {
                Some(a) => a,
                None => match load(config.as_deref(), &set) {
                    Ok(c) => c.admin.listen,
                    Err(code) => return code,
                },
            };
            match request_drain(addr) {
                Ok(()) => {
                    println!("draining: {addr} refuses new calls and exits once its calls have ended");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("estuary: drain via {addr}: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::CheckConfig { file, set } => match Config::load(&file, &set) {
            Ok(cfg) => {
                println!("ok: {}", cfg.summary());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("estuary: {}: {e}", file.display());
                ExitCode::from(EXIT_CONFIG)
            }
        },
        Command::Run { config, set } => {
            let cfg = match load(config.as_deref(), &set) {
                Ok(c) => c,
                Err(code) => return code,
            };
            let log_level = init_logging(&cfg.log);
            let source = reload::Source { path: config.clone(), overrides: set.clone(), builtin: DEFAULT_CONFIG };
            // Signalling has one owner (the engine), so its sockets live on one thread with it:
            // a multi-thread runtime moved every SIP message between workers (a task wake-up
            // and a futex each way) and cost about 11% more CPU per call set-up in alternating
            // bench runs (1.50 against 1.33 ms). Media has its own threads; records and the
            // recorder write from theirs, the admin HTTP server answers from its own.
            let runtime = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    eprintln!("estuary: cannot start the runtime: {e}");
                    return ExitCode::FAILURE;
                }
            };
            match runtime.block_on(server::run(cfg, source, log_level)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    tracing::error!("{e}");
                    eprintln!("estuary: {e}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

/// The config file, or the built-in defaults, with overrides; a refusal is printed with its
/// source and turns into the config exit status.
fn load(config: Option<&std::path::Path>, set: &[String]) -> Result<Config, ExitCode> {
    let loaded = match config {
        Some(path) => Config::load(path, set),
        None => Config::from_toml_str_with_overrides(DEFAULT_CONFIG, set),
    };
    loaded.map_err(|e| {
        let source = config.map_or("built-in defaults".into(), |p| p.display().to_string());
        eprintln!("estuary: {source}: {e}");
        ExitCode::from(EXIT_CONFIG)
    })
}

/// Targets that log at WARN on every call in normal operation, held to ERROR unless the
/// operator runs at debug or names the target: rtc_dtls warns "Unsupported Extension Type"
/// for every extension it does not know in each ClientHello (three per Chromium handshake).
const NOISY_TARGETS: &[&str] = &["rtc_dtls"];

/// `level` with the noisy targets quietened, as described at [`NOISY_TARGETS`].
fn quiet_filter(level: &str) -> String {
    let global_verbose = level.split(',').any(|d| !d.contains('=') && matches!(d.trim().to_ascii_lowercase().as_str(), "debug" | "trace"));
    let mut filter = level.to_owned();
    for target in NOISY_TARGETS {
        let named = level.split(',').any(|d| d.split('=').next().is_some_and(|t| t.trim().starts_with(target)));
        if !global_verbose && !named {
            filter.push_str(&format!(",{target}=error"));
        }
    }
    filter
}

/// Logs to stderr (stdout carries the listening report). RUST_LOG, when set, wins over
/// `log.level` so an operator can raise one target without editing the file.
/// Starts logging; returns how to change `log.level` later (SIGHUP), unless RUST_LOG
/// decides the filter.
fn init_logging(log: &LogConfig) -> Option<reload::LogLevel> {
    use std::io::IsTerminal;
    use tracing_subscriber::EnvFilter;
    let from_env = EnvFilter::try_from_default_env().ok();
    let env_set = from_env.is_some();
    let filter = from_env.unwrap_or_else(|| EnvFilter::new(quiet_filter(&log.level)));
    let ansi = std::io::stderr().is_terminal();
    let set: reload::LogLevel = match log.format {
        LogFormat::Text => {
            let builder = tracing_subscriber::fmt().with_writer(std::io::stderr).with_ansi(ansi).with_env_filter(filter).with_filter_reloading();
            let handle = builder.reload_handle();
            builder.init();
            Box::new(move |level: &str| handle.reload(EnvFilter::new(quiet_filter(level))).map_err(|e| e.to_string()))
        }
        LogFormat::Json => {
            let builder = tracing_subscriber::fmt().json().with_writer(std::io::stderr).with_ansi(ansi).with_env_filter(filter).with_filter_reloading();
            let handle = builder.reload_handle();
            builder.init();
            Box::new(move |level: &str| handle.reload(EnvFilter::new(quiet_filter(level))).map_err(|e| e.to_string()))
        }
    };
    // A panic inside the engine is caught and counted; route its message through the log
    // rather than raw stderr so JSON log collectors see it.
    std::panic::set_hook(Box::new(|info| tracing::error!(panic = %info, "panic")));
    (!env_set).then_some(set)
}

/// POST /drain to a daemon's admin listener; Ok on its 202.
fn request_drain(addr: std::net::SocketAddr) -> Result<(), String> {
    use std::io::{Read, Write};
    let timeout = std::time::Duration::from_secs(5);
    let mut stream = std::net::TcpStream::connect_timeout(&addr, timeout).map_err(|e| e.to_string())?;
    stream.set_read_timeout(Some(timeout)).map_err(|e| e.to_string())?;
    let request = format!("POST /drain HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).map_err(|e| e.to_string())?;
    let mut response = String::new();
    stream.take(4096).read_to_string(&mut response).map_err(|e| e.to_string())?;
    let status = response.lines().next().unwrap_or_default();
    if status.split_whitespace().nth(1) == Some("202") {
        Ok(())
    } else {
        Err(format!("unexpected answer {status:?}"))
    }
}

#[cfg(test)]
mod tests {
    use super::quiet_filter;

    #[test]
    fn noisy_targets_are_quiet_unless_asked_for() {
        assert_eq!(quiet_filter("info"), "info,rtc_dtls=error");
        assert_eq!(quiet_filter("warn,estuary=debug"), "warn,estuary=debug,rtc_dtls=error");
        assert_eq!(quiet_filter("debug"), "debug");
        assert_eq!(quiet_filter("info,rtc_dtls=warn"), "info,rtc_dtls=warn");
    }
}
