//! What socket tasks, media threads and the admin endpoint tell the engine task, and the
//! engine's handle on a connection. Its own module so that the tasks that send events need
//! nothing of the engine itself.

use std::net::SocketAddr;
use std::sync::Arc;

use estuary_core::{ConnId, Flow, ReleaseCause, Sample, Side, Transport};
use tokio::sync::{mpsc, oneshot, Notify};

/// Queue depth per connection writer: enough for a burst of forked responses; a connection
/// that lets it fill is stuck and gets closed rather than stalling the engine.
pub const WRITER_QUEUE: usize = 256;

/// Something a socket task reports to the engine task.
pub enum Event {
    /// A connection is ready to carry SIP (WebSocket upgraded, TCP accepted or connected).
    Opened {
        conn: ConnId,
        side: Side,
        transport: Transport,
        local: SocketAddr,
        remote: SocketAddr,
        writer: Writer,
    },
    /// One whole SIP message.
    Received {
        flow: Flow,
        conn: Option<ConnId>,
        remote: SocketAddr,
        data: Vec<u8>,
    },
    /// The connection is gone.
    Closed { conn: ConnId },
    /// An outbound TCP or TLS connect to an IMS destination failed or was refused by the
    /// limit.
    ConnectFailed { remote: SocketAddr, transport: Transport },
    /// ICMP said an IMS UDP destination is unreachable (see `icmp`).
    UdpUnreachable { remote: SocketAddr },
    /// The admin endpoint asks for the engine's metric samples.
    Metrics(oneshot::Sender<Vec<Sample>>),
    /// A call's media session gave up (see `media`).
    MediaFailed { call: u64, reason: String, cause: ReleaseCause },
    /// A call's IMS video sender must be asked for a keyframe in SIP (RFC 5168).
    PictureFastUpdate { call: u64 },
    /// A call's ICE agent selected the browser's address `remote` (first, or a new one).
    MediaPath { call: u64, remote: SocketAddr },
    /// A Diameter connection toward policy peer `peer` (see `diameter`); `generation` tells
    /// its current connection from older ones.
    Diameter { peer: usize, generation: u64, event: crate::diameter::LinkEvent },
    /// Drain: refuse new calls and the dispatcher's probes, let calls in progress go on.
    Drain,
    /// Stopping: end every call left (BYE both ways).
    EndCalls,
    /// The IMS next hop's targets, looked up again in DNS.
    NextHops(Vec<estuary_b2bua::next_hops::HopTarget>),
    /// Another node asks for the calls of registration `token` (see `cluster`).
    HandOverWanted { token: String },
    /// A drain ran out and another node is up: hand the answered calls over.
    HandOver,
    /// The cluster's shared state answered the engine's question `query` (see `cluster`).
    StateAnswer { query: u64, answer: estuary_b2bua::StateAnswer },
    /// A reloaded `rx.peers` (SIGHUP).
    RxPeers(Vec<estuary_config::RxPeer>),
    /// A reloaded signalling configuration (SIGHUP).
    Reconfigure(Box<estuary_b2bua::B2buaConfig>),
    /// TEST HOOK (ESTUARY_TEST_HOOKS=1 only): block the engine task this long, as a stuck
    /// engine would, so tests can see /healthz notice.
    Stall(std::time::Duration),
}

/// The engine's handle on one connection task.
pub struct Writer {
    pub data: mpsc::Sender<Vec<u8>>,
    /// Ask the connection task to close (cleanly where the protocol allows it).
    pub close: Arc<Notify>,
}

