//! The Estuary signalling machine (work in progress: see issue 2).

pub mod io;

use std::time::Instant;

pub use io::{ConnId, Flow, Input, MetricKind, Output, Sample, Side, Transport};

/// Configuration of the signalling engine. Built by the daemon from operator TOML.
#[derive(Clone, Debug)]
pub struct B2buaConfig {
    /// Address the gateway writes into Via/Contact/Record-Route/Path toward IMS.
    pub ims_advertised: std::net::SocketAddr,
    /// Transport used toward the next hop.
    pub ims_transport: Transport,
    /// Every out-of-dialog request toward IMS is sent here.
    pub next_hop: std::net::SocketAddr,
    /// The IMS home domain (Request-URI of REGISTER, default domain of AoRs).
    pub domain: String,
    /// Host written into Via/Contact/Record-Route toward browsers.
    pub web_advertised_host: String,
}

/// The signalling engine. Sans-IO: no sockets, no clock.
pub struct B2bua {
    #[allow(dead_code)]
    config: B2buaConfig,
    outputs: std::collections::VecDeque<Output>,
}

impl B2bua {
    /// A new engine. `seed` drives every random token (tags, branches, Call-IDs) so that
    /// replays are deterministic.
    pub fn new(config: B2buaConfig, _seed: u64) -> Self {
        B2bua { config, outputs: Default::default() }
    }

    /// Feed one event. Afterwards drain `poll_output` and re-read `poll_timeout`.
    pub fn handle_input(&mut self, _now: Instant, _input: Input<'_>) {}

    /// The next action for the driver, if any.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.outputs.pop_front()
    }

    /// When to feed `Input::Timeout` next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        None
    }

    /// Current metric values.
    pub fn metrics(&self) -> Vec<Sample> {
        Vec::new()
    }
}
