//! Test support for Estuary's conformance and real-peer tests.
//!
//! The real-peer signalling tests (`tests/signalling_*.rs`) start the real `estuary` daemon
//! ([`gateway::Gateway`]), drive its web side with a JsSIP-like WebSocket user agent
//! ([`ws_client::WsSipClient`]) and its IMS side with sipp ([`sipp::Sipp`], scenarios in
//! `conformance/scenarios/`), and assert on the messages both peers saw, including that
//! neither side's addresses reach the other ([`leak`]).
//!
//! Requirements: `sipp` on PATH (Debian package `sip-tester`; or `SIPP_BIN`) and the daemon
//! built first (`cargo build -p estuary`, or `ESTUARY_BIN`); `make test` does both. A missing
//! sipp or daemon fails the tests with a message saying so: they are never skipped.
//!
//! Run them: `cargo build -p estuary && cargo test -p estuary-conformance --test 'signalling_*'`
//! (one `--test NAME` per file). `ESTUARY_TRACE_SIP=1` (with `-- --nocapture`) prints both
//! peers' messages of every call; on a failure the daemon's log tail, sipp's logs (kept under
//! the system temp dir) and both transcripts are printed anyway.

pub mod browser;
pub mod cluster;
pub mod corpus;
pub mod demo_page;
pub mod digest;
pub mod dnsmasq;
pub mod flows;
pub mod gateway;
pub mod haproxy;
pub mod kamailio;
pub mod leak;
pub mod msg;
pub mod net;
pub mod pcrf;
pub mod records;
pub mod redis;
pub mod sipp;
pub mod uac;
pub mod ws_client;

pub use gateway::Gateway;
pub use msg::SipMsg;
pub use sipp::{Sipp, SippRun};
pub use ws_client::{Dialog, WsSipClient};

/// The runtime browser tests drive their async peers on: two workers, so the blocking
/// browser driver calls (`block_in_place`) never starve the daemon's and sipp's tasks.
pub fn browser_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("tokio runtime")
}
