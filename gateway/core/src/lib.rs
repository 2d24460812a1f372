//! The composed gateway: the signalling machine ([`B2bua`]) and a media plane behind one
//! sans-IO surface, [`Core`]. Its inputs are SIP messages, connection and reachability
//! reports, media datagrams (with an inline plane) and time; its outputs are SIP to send,
//! datagrams to send, connections to close and the calls' start and end for records. No
//! sockets, no clock: the daemon and `estuary replay` drive the same `Core`.
//!
//! The seam between the planes lives here. The signalling machine settles a call's media
//! plan from each offer/answer exchange and ends calls; the core hands both to its
//! [`MediaPlane`] in the order the machine produced them, among the SIP that caused them. A
//! plane that gives up on a call (lost consent, DTLS failure, silence, a plan it cannot take)
//! reports it, and the core ends the call with BYE on both legs.
//!
//! Two planes exist, because media is sharded per core while signalling has one owner:
//! - [`InlineMedia`]: one [`estuary_media::shard::MediaShard`] on the caller's thread, with
//!   transcoding run inline. `estuary replay` uses it, so the replay is deterministic.
//! - the daemon's media hub: one shard per media thread, each owning whole calls (sockets,
//!   timers, transcoding channels), the plans and ends sent down a queue per thread, and
//!   failures coming back as [`Input::MediaFailed`].

mod inline;
pub mod policy;
pub mod transcode;

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::Instant;

pub use estuary_b2bua::{B2bua, CallSummary, ConnId, Flow, Input, MetricKind, PolicyDecision, ReleaseCause, Sample, Side, Transport};
pub use estuary_diameter::Transmit as DiameterTransmit;
use estuary_media::FailCause;
use estuary_sdp::MediaPlan;
pub use inline::{InlineMedia, InlineCounters};
pub use policy::{DiameterInput, OnFailure, Policy, PolicyReport, PolicySettings};

/// What the [`Core`] asks of the media plane.
pub trait MediaPlane {
    /// A call's plan was settled or renegotiated. A plan the plane cannot take is reported
    /// through [`MediaPlane::poll_event`] (or, from another thread, [`Input::MediaFailed`]).
    fn plan(&mut self, now: Instant, call: u64, plan: Box<MediaPlan>);
    /// The call ended: its media goes (after its last RTCP).
    fn end(&mut self, now: Instant, call: u64);
    /// The call's leg `from` asked in SIP (RFC 5168) for a keyframe of the video it receives.
    fn picture_fast_update(&mut self, now: Instant, call: u64, from: Side);
    /// Where media ports are shared: the shared browser-facing port new calls should get.
    fn preferred_web_port(&mut self, _now: Instant) -> Option<u16> {
        None
    }
    /// The plane's next deadline, when it runs on the core's clock.
    fn poll_timeout(&self) -> Option<Instant> {
        None
    }
    fn handle_timeout(&mut self, _now: Instant) {}
    /// A media datagram that reached `local` from `source`, when the plane runs on the core's
    /// thread: the call it belonged to, if any.
    fn handle_datagram(&mut self, _now: Instant, _local: SocketAddr, _source: SocketAddr, _data: &[u8]) -> Option<u64> {
        None
    }
    /// What the plane did, when it runs on the core's clock.
    fn poll_event(&mut self) -> Option<MediaPlaneEvent> {
        None
    }
}

/// No plane at all: signalling only (a replay of a capture without media, tests). Plans and
/// ends go nowhere, so no call ever fails for its media.
impl<P: MediaPlane> MediaPlane for Option<P> {
    fn plan(&mut self, now: Instant, call: u64, plan: Box<MediaPlan>) {
        if let Some(p) = self {
            p.plan(now, call, plan)
        }
    }
    fn end(&mut self, now: Instant, call: u64) {
        if let Some(p) = self {
            p.end(now, call)
        }
    }
    fn picture_fast_update(&mut self, now: Instant, call: u64, from: Side) {
        if let Some(p) = self {
            p.picture_fast_update(now, call, from)
        }
    }
    fn preferred_web_port(&mut self, now: Instant) -> Option<u16> {
        self.as_mut()?.preferred_web_port(now)
    }
    fn poll_timeout(&self) -> Option<Instant> {
        self.as_ref()?.poll_timeout()
    }
    fn handle_timeout(&mut self, now: Instant) {
        if let Some(p) = self {
            p.handle_timeout(now)
        }
    }
    fn handle_datagram(&mut self, now: Instant, local: SocketAddr, source: SocketAddr, data: &[u8]) -> Option<u64> {
        self.as_mut()?.handle_datagram(now, local, source, data)
    }
    fn poll_event(&mut self) -> Option<MediaPlaneEvent> {
        self.as_mut()?.poll_event()
    }
}

/// What an inline media plane reports.
#[derive(Debug, PartialEq, Eq)]
pub enum MediaPlaneEvent {
    /// Send a datagram.
    Transmit { from: SocketAddr, to: SocketAddr, data: Vec<u8> },
    /// The plane gave up on a call: the core ends it.
    Failed { call: u64, cause: ReleaseCause, reason: String },
    /// The call's IMS video sender must send a keyframe and can only be asked in SIP.
    PictureFastUpdate { call: u64 },
    /// ICE selected the browser's address `remote` (first, or a new one).
    PathSelected { call: u64, remote: SocketAddr },
}

/// What the core asks its driver to do.
#[derive(Debug, PartialEq, Eq)]
pub enum Output {
    /// Send one SIP message (one text frame on WebSocket).
    Transmit { flow: Flow, data: Vec<u8> },
    /// Close a connection.
    Close { conn: ConnId },
    /// Send a media datagram (inline planes only: threaded planes send their own).
    Datagram { from: SocketAddr, to: SocketAddr, data: Vec<u8> },
    /// A call was created: its two dialogs' Call-IDs (browser leg, IMS leg).
    CallStarted { call: u64, web_call_id: String, ims_call_id: String },
    /// The call is gone. Reported after every message of the same step, so the message that
    /// ended it (a BYE's 200) belongs to the call. `policy`: its Rx session, if it had one.
    CallEnded { call: u64, summary: Box<CallSummary>, policy: Option<PolicyReport> },
    /// Carry out a Diameter transmit on the connection to policy peer `peer` (its index in
    /// the configured list): open it, write bytes, or close it after what came before.
    Diameter { peer: usize, transmit: DiameterTransmit },
    /// Store a registration in the cluster's shared state (see
    /// `estuary_b2bua::B2buaConfig::share_state`).
    RegistrationShared(Box<estuary_b2bua::SharedRegistration>),
    /// Remove it (unless another node adopted it since).
    RegistrationRemoved { token: String, web_call_id: String },
    /// Ask the cluster's shared state about a registration this node does not hold; answer
    /// with `Input::StateAnswer` (see `estuary_b2bua::cluster`).
    StateQuery { query: u64, ask: estuary_b2bua::StateQuery },
    /// Store an answered call in the cluster's shared state.
    CallShared(Box<estuary_b2bua::SharedCall>),
    /// Remove it (the call ended).
    CallUnshared { call: u64, dialogs: [String; 2], binding: Option<String> },
    /// Ask the cluster's nodes to hand over the calls of this registration (see
    /// `estuary_b2bua::Output::HandOverWanted`).
    HandOverWanted { token: String },
}

/// The Release-Cause a media failure ends its call with (TS 24.229 §7.2A.18): silence is an
/// RTP time-out, everything else a lost bearer.
pub fn release_cause(cause: FailCause) -> ReleaseCause {
    match cause {
        FailCause::Inactivity => ReleaseCause::RtpTimeout,
        FailCause::Ice | FailCause::Dtls | FailCause::DtlsClosed => ReleaseCause::MediaBearerLoss,
    }
}

/// The media plane's name for a signalling side.
pub fn leg_of(side: Side) -> estuary_media::Leg {
    match side {
        Side::Web => estuary_media::Leg::Web,
        Side::Ims => estuary_media::Leg::Ims,
    }
}

/// The signalling machine and a media plane, composed.
pub struct Core<P> {
    signalling: B2bua,
    media: P,
    /// The Rx policy function, when `rx.enabled`.
    policy: Option<Policy>,
    /// The time of the latest input: outputs taken after it act at that time.
    now: Instant,
    /// Calls ended in this step, reported once nothing else is left.
    ended: VecDeque<(u64, Box<CallSummary>, Option<PolicyReport>)>,
}

impl<P: MediaPlane> Core<P> {
    pub fn new(signalling: B2bua, media: P, now: Instant) -> Core<P> {
        Core { signalling, media, policy: None, now, ended: VecDeque::new() }
    }

    /// Adds the Rx policy function: every settled plan is described to the PCRF, and its
    /// decisions reach the signalling machine (whose `policy_gate` must match
    /// [`Policy::is_closed`]).
    pub fn with_policy(mut self, policy: Policy) -> Core<P> {
        self.policy = Some(policy);
        self
    }

    pub fn policy(&self) -> Option<&Policy> {
        self.policy.as_ref()
    }

    /// Releases an Rx session another gateway opened (see [`Policy::release_foreign`]); the
    /// engine reports one for each call it takes over.
    pub fn release_foreign_rx(&mut self, now: Instant, session_id: String) {
        self.now = now.max(self.now);
        if let Some(p) = &mut self.policy {
            p.release_foreign(now, session_id);
        }
    }

    /// See [`Policy::reconfigure_peers`]; `false` when there is no policy function.
    pub fn reconfigure_rx_peers(&mut self, now: Instant, retire: &[usize], add: Vec<(estuary_diameter::Peer, String)>, order: &[usize]) -> bool {
        self.now = now.max(self.now);
        match &mut self.policy {
            Some(p) => {
                p.reconfigure_peers(now, retire, add, order);
                true
            }
            None => false,
        }
    }

    /// Input from a policy peer's connection.
    pub fn handle_diameter(&mut self, now: Instant, input: DiameterInput<'_>) {
        self.now = now.max(self.now);
        if let Some(p) = &mut self.policy {
            p.handle_diameter(now, input);
        }
    }

    /// A media thread's ICE agent selected the browser's address `remote` for `call` (planes
    /// off the core's thread; inline planes report it as [`MediaPlaneEvent::PathSelected`]).
    pub fn handle_media_path(&mut self, now: Instant, call: u64, remote: SocketAddr) {
        self.now = now.max(self.now);
        if let Some(p) = &mut self.policy {
            p.path_selected(now, call, remote);
        }
    }

    pub fn handle_input(&mut self, now: Instant, input: Input<'_>) {
        self.now = now.max(self.now);
        if let Some(port) = self.media.preferred_web_port(now) {
            self.signalling.prefer_web_port(Some(port));
        }
        if matches!(input, Input::Timeout) && self.media.poll_timeout().is_some_and(|t| t <= now) {
            self.media.handle_timeout(now);
        }
        if let Some(p) = self.policy.as_mut().filter(|p| matches!(input, Input::Timeout) && p.poll_timeout().is_some_and(|t| t <= now)) {
            p.handle_timeout(now);
        }
        self.signalling.handle_input(now, input);
    }

    /// The next output. Plans and ends are handed to the media plane on the way, in the
    /// order the signalling machine produced them; media failures go back into it.
    pub fn poll_output(&mut self) -> Option<Output> {
        use estuary_b2bua::Output as S;
        loop {
            if let Some(policy) = &mut self.policy {
                if let Some((peer, transmit)) = policy.poll_transmit() {
                    return Some(Output::Diameter { peer, transmit });
                }
                let (signalling, now) = (&mut self.signalling, self.now);
                if policy.next_decision(|input| signalling.handle_input(now, input)).is_some() {
                    continue;
                }
            }
            if let Some(event) = self.media.poll_event() {
                match event {
                    MediaPlaneEvent::Transmit { from, to, data } => return Some(Output::Datagram { from, to, data }),
                    MediaPlaneEvent::Failed { call, cause, reason } => {
                        self.signalling.handle_input(self.now, Input::MediaFailed { call, reason: &reason, cause });
                        continue;
                    }
                    MediaPlaneEvent::PictureFastUpdate { call } => {
                        self.signalling.handle_input(self.now, Input::PictureFastUpdate { call });
                        continue;
                    }
                    MediaPlaneEvent::PathSelected { call, remote } => {
                        if let Some(p) = &mut self.policy {
                            p.path_selected(self.now, call, remote);
                        }
                        continue;
                    }
                }
            }
            match self.signalling.poll_output() {
                Some(S::Media { call, plan }) => {
                    if let Some(p) = &mut self.policy {
                        p.plan(self.now, call, &plan, self.signalling.policy_subject(call));
                    }
                    self.media.plan(self.now, call, plan)
                }
                Some(S::MediaEnd { call }) => self.media.end(self.now, call),
                Some(S::CallEnded { call, summary }) => {
                    let report = self.policy.as_mut().and_then(|p| p.end(self.now, call));
                    self.ended.push_back((call, summary, report))
                }
                Some(S::Transmit { flow, data }) => return Some(Output::Transmit { flow, data }),
                Some(S::Close { conn }) => return Some(Output::Close { conn }),
                Some(S::CallStarted { call, web_call_id, ims_call_id }) => return Some(Output::CallStarted { call, web_call_id, ims_call_id }),
                Some(S::RegistrationShared(r)) => return Some(Output::RegistrationShared(r)),
                Some(S::RegistrationRemoved { token, web_call_id }) => return Some(Output::RegistrationRemoved { token, web_call_id }),
                Some(S::StateQuery { query, ask }) => return Some(Output::StateQuery { query, ask }),
                Some(S::CallShared(mut c)) => {
                    // A call handed over ends here next, and its Rx session with it: the next
                    // node opens its own.
                    if !c.handed_over {
                        c.rx_session = self.policy.as_ref().and_then(|p| p.session_id(c.call)).map(str::to_owned);
                    }
                    return Some(Output::CallShared(c));
                }
                Some(S::HandOverWanted { token }) => return Some(Output::HandOverWanted { token }),
                Some(S::CallAdopted { rx_session: Some(session), .. }) => self.release_foreign_rx(self.now, session),
                Some(S::CallAdopted { rx_session: None, .. }) => {}
                Some(S::CallUnshared { call, dialogs, binding }) => return Some(Output::CallUnshared { call, dialogs, binding }),
                Some(S::KeyframeRequested { call, from }) => self.media.picture_fast_update(self.now, call, from),
                Some(S::SignallingPath(path)) => {
                    if let Some(p) = &mut self.policy {
                        p.signalling_path(self.now, &path);
                    }
                }
                // (An STR that ending a call queued went out at the top of the loop.)
                None => return self.ended.pop_front().map(|(call, summary, policy)| Output::CallEnded { call, summary, policy }),
            }
        }
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        [self.signalling.poll_timeout(), self.media.poll_timeout(), self.policy.as_ref().and_then(Policy::poll_timeout)]
            .into_iter()
            .flatten()
            .min()
    }

    /// How many more bound media ports the signalling machine wants (bind before announce).
    pub fn ports_wanted(&self, now: Instant) -> usize {
        self.signalling.ports_wanted(now)
    }

    pub fn grant_ports(&mut self, ports: impl IntoIterator<Item = u16>) {
        self.signalling.grant_ports(ports)
    }

    pub fn metrics(&self, now: Instant) -> Vec<Sample> {
        let mut out = self.signalling.metrics(now);
        if let Some(p) = &self.policy {
            p.metrics(&mut out);
        }
        out
    }

    /// The next hop's targets, resolved again (see [`B2bua::set_next_hops`]).
    pub fn set_next_hops(&mut self, targets: Vec<estuary_b2bua::next_hops::HopTarget>) {
        self.signalling.set_next_hops(targets);
    }

    /// A reloaded signalling configuration (see [`B2bua::reconfigure`]).
    pub fn reconfigure(&mut self, cfg: estuary_b2bua::B2buaConfig) {
        self.signalling.reconfigure(cfg);
    }

    /// Drains the signalling machine (see [`B2bua::drain`]).
    pub fn drain(&mut self) {
        self.signalling.drain();
    }

    pub fn signalling(&self) -> &B2bua {
        &self.signalling
    }

    /// What a transcoded video stream costs in audio channels, as the pool measured it (see
    /// [`B2bua::set_video_channel_cost`]).
    pub fn set_video_channel_cost(&mut self, units: usize) {
        self.signalling.set_video_channel_cost(units);
    }

    pub fn media(&self) -> &P {
        &self.media
    }

    pub fn media_mut(&mut self) -> &mut P {
        &mut self.media
    }

    pub fn into_media(self) -> P {
        self.media
    }

    /// A media datagram that reached `local` from `source` (planes on the core's thread):
    /// the call it belonged to, if any.
    pub fn handle_datagram(&mut self, now: Instant, local: SocketAddr, source: SocketAddr, data: &[u8]) -> Option<u64> {
        self.now = now.max(self.now);
        self.media.handle_datagram(now, local, source, data)
    }
}

#[cfg(test)]
mod tests;
#[cfg(test)]
mod policy_tests;
