//! Loss on the IMS leg of transcoded calls, through the real daemon: the core drops 5% of its
//! G.711 packets at random; the browsers must still receive a continuous Opus stream (every
//! packet one sequence number and 960 ticks after the last: concealment fills the gaps, the
//! timeline never jumps), and the daemon must report the concealment.
//!
//! Needs `cargo build -p estuary` (make test does it).

use std::time::Duration;

use estuary_bench::load::{self, BrowserCodec, Load};

#[test]
fn five_percent_loss_on_the_ims_leg_leaves_the_browser_stream_continuous() {
    std::env::set_var("ESTUARY_BIN", estuary_conformance::gateway::estuary_binary());
    let load = Load { calls: 3, window: Duration::from_secs(3), codec: BrowserCodec::Opus, ports: (19200, 19299), ims_loss: 0.05, lift_limits: true, flood: None };
    let m = estuary_bench::runtime().unwrap().block_on(load::run(&load)).unwrap_or_else(|e| panic!("{e}"));
    let context = format!("{m:#?}");
    println!(
        "5% loss on the IMS leg: core dropped {}, browsers received {} in the window, gaps {}, jumps {}, concealed {:?}",
        m.ims_dropped, m.web_delivered, m.web_seq_gaps, m.web_ts_jumps, m.concealed
    );
    assert_eq!(m.calls_up, 3, "{context}");
    assert!(m.ims_dropped >= 5, "the core lost packets on purpose: {context}");
    // 3 calls x 50 pps x 3 s = 450 in the window; the pipelines fill every lost frame.
    assert!(m.web_delivered >= 420, "the browsers kept receiving: {context}");
    assert_eq!(m.web_seq_gaps, 0, "no sequence gap toward the browsers: {context}");
    assert_eq!(m.web_ts_jumps, 0, "no timestamp jump toward the browsers: {context}");
    assert!(m.concealed.is_some_and(|c| c >= m.ims_dropped as f64 * 0.5), "the daemon concealed the losses: {context}");
}
