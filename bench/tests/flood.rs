//! Flood survival with the default limits (issue 12, item 4), in a loopback-only network
//! namespace this test creates. One source (127.0.0.66) sends about ten times a busy node's
//! signalling for 10 s: 2,000 SIP requests/s over WebSocket (REGISTER and INVITE storms),
//! 2,000 garbage datagrams/s to `ims.listen` (it is not a trusted peer), 200 upgraded idle
//! WebSockets and 200 TCP connections to the WSS listener that never start their handshake.
//! Meanwhile 50 browser-like clients from 127.0.0.1 register and set up calls with ICE,
//! DTLS-SRTP and media (the benchmark's load generator, with the daemon's default limits).
//!
//! Every legitimate call must come up, the flooder must be throttled (the daemon's counters),
//! the daemon's peak RSS must stay below twice its loaded RSS in the same run without the
//! flood, and nothing may panic. The figures are printed. Bounded: the flood stops by itself.
//!
//! Needs `cargo build -p estuary` (make test does it) and unshare/ip (util-linux, iproute2).

use std::io::Write as _;
use std::time::Duration;

use estuary_bench::flood::Flood;
use estuary_bench::load::{run, BrowserCodec, Load, Measured};
use estuary_conformance::net::in_loopback_netns;

const TEST: &str = "fifty_legitimate_calls_survive_a_tenfold_flood_from_one_source";

fn counter(m: &Measured, name: &str) -> f64 {
    m.counters.iter().find(|(n, _)| *n == name).map_or(-1.0, |(_, v)| *v)
}

#[test]
fn fifty_legitimate_calls_survive_a_tenfold_flood_from_one_source() {
    if !in_loopback_netns(TEST) {
        return;
    }
    estuary_bench::raise_nofile();
    let rt = estuary_bench::runtime().expect("runtime");
    let base = Load {
        calls: 50,
        window: Duration::from_secs(3),
        codec: BrowserCodec::Pcmu,
        ports: (19300, 19599),
        ims_loss: 0.0,
        lift_limits: false,
        flood: None,
    };
    let quiet = rt.block_on(run(&base)).unwrap_or_else(|e| panic!("without the flood: {e}"));
    let flooded = Load { window: Duration::from_secs(10), flood: Some(Flood::tenfold("127.0.0.66".parse().unwrap())), ..base.clone() };
    let f = rt.block_on(run(&flooded)).unwrap_or_else(|e| panic!("under the flood: {e}"));
    let r = f.flood.clone().expect("the flood ran");
    let delivery = |m: &Measured| 100.0 * m.delivered as f64 / m.sent.max(1) as f64;
    // Straight to the stream, not println!: libtest hides a passing test's printed output, and
    // these figures are meant to be read in every `make test` log.
    let figures = format!(
        "flood figures:\n\
         - legitimate calls up: {} / {} without the flood, {} / {} under it (set up in {:.1} s / {:.1} s)\n\
         - legitimate media delivered in the window: {:.1}% without, {:.1}% under the flood ({} packets)\n\
         - flooder: {} SIP requests sent over {} WebSockets ({} answered 503, {} other finals), {} garbage datagrams, \
         {} half-open connections, {} WebSockets refused\n\
         - daemon: estuary_requests_throttled_total {}, estuary_untrusted_ims_messages_total {}, \
         estuary_ws_refused_total {}, registrations {}\n\
         - daemon RSS: {} KiB loaded without the flood, {} KiB peak under it ({:.2}x)",
        quiet.calls_up,
        quiet.calls_asked,
        f.calls_up,
        f.calls_asked,
        quiet.setup.as_secs_f64(),
        f.setup.as_secs_f64(),
        delivery(&quiet),
        delivery(&f),
        f.delivered,
        r.requests_sent,
        r.ws_upgraded,
        r.answered_503,
        r.answered_other,
        r.garbage_sent,
        r.half_open_connected,
        r.ws_refused,
        counter(&f, "estuary_requests_throttled_total"),
        counter(&f, "estuary_untrusted_ims_messages_total"),
        counter(&f, "estuary_ws_refused_total"),
        counter(&f, "estuary_registrations_active"),
        quiet.rss_loaded / 1024,
        f.rss_peak / 1024,
        f.rss_peak as f64 / quiet.rss_loaded.max(1) as f64,
    );
    let _ = writeln!(std::io::stderr(), "{figures}");
    assert_eq!((quiet.calls_up, f.calls_up), (50, 50), "every legitimate call set up, with and without the flood\n{}", f.log_tail);
    assert!(r.requests_sent >= 10_000, "the storm ran at its rate: {r:?}");
    assert!(counter(&f, "estuary_requests_throttled_total") >= r.requests_sent as f64 * 0.8, "the storm was throttled: {r:?}");
    assert!(r.answered_503 > 0, "throttled requests are answered 503: {r:?}");
    assert!(counter(&f, "estuary_untrusted_ims_messages_total") >= r.garbage_sent as f64 * 0.9, "garbage from an untrusted source counted: {r:?}");
    assert!(counter(&f, "estuary_ws_refused_total") >= 100.0, "half-open connections beyond the cap refused: {r:?}");
    assert!(delivery(&f) > 90.0, "legitimate media kept flowing under the flood");
    assert!(f.rss_peak < 2 * quiet.rss_loaded, "peak RSS under the flood below twice the loaded RSS without it");
    assert_eq!(f.healthz, 200, "healthy after the flood");
    assert!(!f.panicked && !quiet.panicked, "no panic in the daemon's log");
}
