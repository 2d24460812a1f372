//! The Estuary signalling machine: a B2BUA between browsers (SIP over WebSocket, RFC 7118) and
//! an IMS core (SIP over UDP/TCP), sans-IO.
//!
//! # Driving it
//! The driver feeds every transport event to [`B2bua::handle_input`] with the current time,
//! then drains [`B2bua::poll_output`] until `None`, then waits for the next input or for
//! [`B2bua::poll_timeout`], at which it feeds [`Input::Timeout`]. The engine never reads a
//! clock, opens a socket or spawns a thread, so the same code runs under tokio and under the
//! replay harness's virtual clock.
//!
//! # What it does
//! - Registrations: browser REGISTERs are re-originated toward IMS with a gateway Contact and a
//!   Path (RFC 3327) carrying a per-binding token; challenges and credentials pass unchanged.
//! - Calls in both directions: two dialogs per call with their own Call-ID, tags, Via and
//!   Contact; end-to-end headers and bodies are relayed (see [`relay`]); provisional responses,
//!   forking, CANCEL races, re-INVITE, UPDATE, PRACK, INFO, MESSAGE, OPTIONS and BYE.
//! - Failures: unreachable or silent next hop -> 503/408 toward the browser; malformed input ->
//!   400 with a reason, or dropped and counted when no response can be formed.
//!
//! Bodies (SDP) pass unchanged in this version; the SDP interworking engine slots in where
//! [`B2bua`] copies bodies between legs.

pub mod call;
pub mod cluster;
pub mod io;
pub mod next_hops;
mod ports;
mod metrics;
pub mod registrar;
pub mod relay;

mod engine;

use std::net::SocketAddr;
use std::time::Duration;

pub use engine::B2bua;
pub use io::{CallSummary, ConnId, EndReason, Flow, Input, MetricKind, Output, PolicyDecision, PolicySubject, ReleaseCause, Sample, SharedCall, SharedRegistration, Side, SignallingPath, Transport};
pub use cluster::{Holder, StateAnswer, StateQuery};
pub use registrar::OnWsClose;

/// Configuration of the signalling engine, built by the daemon from operator TOML.
#[derive(Clone, Debug)]
pub struct B2buaConfig {
    /// Address the gateway writes into Via, Contact and Path toward IMS.
    pub ims_advertised: SocketAddr,
    /// Transport toward the IMS next hop.
    pub ims_transport: Transport,
    /// Every request toward IMS goes here (the gateway's outbound proxy, e.g. the S-CSCF).
    pub next_hop: SocketAddr,
    /// Every target for requests outside a dialog, with SRV priorities and weights (RFC 3263
    /// §4.2, RFC 2782): load shared by weight among the best priority, failing over to the
    /// others; empty: `next_hop` alone. See [`next_hops`].
    pub next_hop_targets: Vec<next_hops::HopTarget>,
    /// How often a failed target is probed with OPTIONS; `None`: never (it stays down until
    /// the targets are set again).
    pub next_hop_probe: Option<Duration>,
    /// The IMS home domain.
    pub domain: String,
    /// Host written in Via and Contact toward browsers.
    pub web_advertised_host: String,
    /// RFC 3261 timer values.
    pub timers: estuary_transaction::TimerConfig,
    /// Max-Forwards on requests the gateway originates.
    pub max_forwards: u32,
    /// What happens to registrations when their WebSocket closes.
    pub on_ws_close: OnWsClose,
    /// How long a browser's calls outlive its closed WebSocket, waiting for the browser to
    /// come back over a new one (its REGISTER dialog again, or a request of the call); zero:
    /// they end at once. Meant with [`OnWsClose::Keep`].
    pub reconnect_grace: Duration,
    /// Upper bound on the expiry the gateway requests toward IMS.
    pub max_expires: u32,
    /// Browsers must register before they can call or message (the P-CSCF rule, TS 24.229
    /// §5.2.6.3); disable only for labs without a registrar.
    pub require_registration: bool,
    /// Retry-After sent with a 503 when the IMS next hop is unreachable.
    pub retry_after: Duration,
    /// User-Agent on requests and Server on responses the gateway itself originates (BYE,
    /// CANCEL, local errors); relayed messages keep the endpoints' own. `None`: no header.
    pub user_agent: Option<String>,
    /// Shortest registration accepted from a browser, in seconds; shorter ones get 423 with
    /// Min-Expires (RFC 3261 §10.3 step 7).
    pub min_expires: u32,
    /// How SDP is rewritten between the legs (every SDP body goes through it).
    pub sdp: estuary_sdp::SdpPolicy,
    /// How long a released media port rests before reuse.
    pub port_quarantine: Duration,
    /// Transcoding channels (one per transcoded stream, both directions) the media plane can
    /// carry; an offer that would need more is refused. `None`: no limit.
    pub transcode_channels: Option<usize>,
    /// The status of that refusal: 503 (with Retry-After: overload, try again) or 488.
    pub transcode_refusal: u16,
    /// What a transcoded video stream costs, in audio channels (`transcode_channels` counts
    /// audio channels): the starting figure, replaced by the pool's measurement through
    /// [`B2bua::set_video_channel_cost`].
    pub video_channel_cost: usize,
    /// What happens to a call whose video the transcoder has no room for.
    pub video_overload: VideoOverload,
    /// Registrations (bindings, pending or active) one source IP may hold; a REGISTER for a
    /// new binding beyond it is refused with 403. 0: no limit.
    pub registrations_per_source: usize,
    /// Closed policy (`rx.on_failure = "closed"`): a callee's 2xx that settles a media plan
    /// waits for the PCRF's decision ([`Input::Policy`]) before it reaches the caller.
    pub policy_gate: bool,
    /// Report each browser connection's signalling path ([`Output::SignallingPath`]) for the
    /// policy function's AF_SIGNALLING sessions (`rx.signalling`).
    pub signalling_policy: bool,
    /// Report registrations as they become active, are refreshed and go
    /// ([`Output::RegistrationShared`], [`Output::RegistrationRemoved`]), and calls as they
    /// are answered and end ([`Output::CallShared`], [`Output::CallUnshared`]), for a
    /// cluster's shared state (`cluster.enabled`).
    pub share_state: bool,
    /// The cluster's SIP front (`cluster.sip_front`, e.g. the Kamailio dispatcher), written
    /// as host:port into the Path and Contact the gateway registers toward IMS, so the core's
    /// requests for a registration reach whichever node is alive. `None`: this node's own
    /// `ims_advertised`.
    pub sip_front: Option<String>,
}

/// `transcoder.video_overload`: a call whose video only the transcoder could carry, when the
/// pool has no room for another video channel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VideoOverload {
    /// Refuse the call (the transcoding refusal status), as for audio.
    RefuseCall,
    /// Refuse only the video m-line (port 0); the call goes on with audio, and its record
    /// says the video was dropped. An IMS offer gets no transcoded video alternative.
    DropVideo,
}

impl Default for B2buaConfig {
    fn default() -> Self {
        B2buaConfig {
            ims_advertised: SocketAddr::from(([127, 0, 0, 1], 5080)),
            ims_transport: Transport::Udp,
            next_hop: SocketAddr::from(([127, 0, 0, 1], 5060)),
            next_hop_targets: Vec::new(),
            next_hop_probe: Some(Duration::from_secs(30)),
            domain: "ims.test".to_owned(),
            web_advertised_host: "127.0.0.1".to_owned(),
            timers: Default::default(),
            max_forwards: 70,
            on_ws_close: OnWsClose::Deregister,
            reconnect_grace: Duration::ZERO,
            max_expires: 3600,
            require_registration: true,
            retry_after: Duration::from_secs(30),
            user_agent: Some("Estuary/0.1".to_owned()),
            min_expires: 60,
            sdp: estuary_sdp::SdpPolicy::default(),
            port_quarantine: Duration::from_secs(30),
            transcode_channels: None,
            transcode_refusal: 503,
            video_channel_cost: 1,
            video_overload: VideoOverload::DropVideo,
            registrations_per_source: 0,
            policy_gate: false,
            signalling_policy: false,
            share_state: false,
            sip_front: None,
        }
    }
}
