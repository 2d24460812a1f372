//! The policy function: the P-CSCF's Rx duties toward the PCRF (TS 29.214), composed from the
//! Rx client (`estuary_rx`) and a Diameter peer set (`estuary_diameter`), both sans-IO.
//!
//! The core feeds it what the signalling machine settles (each call's media plan, its end) and
//! what the media plane learns (the pair ICE selected); it turns them into AARs and STRs, and
//! the PCRF's answers and requests into [`PolicyDecision`]s for the signalling machine.
//!
//! # When the AAR goes
//! When an answer first settles the call's media plan: a 183 with SDP or the 2xx, whichever
//! comes first (TS 29.214 §4.4.1 leaves the AF the choice between offer and answer; at the
//! answer the codecs, directions and both addresses are known, so one AAR says it all). With
//! closed policy the 2xx waits for the AAA (see `estuary_b2bua::call::Authorization`). A
//! renegotiated plan (hold, video added or removed) or a newly selected ICE pair sends an
//! update AAR; the call's end sends the STR.
//!
//! # What the AAR describes
//! The browser's access leg, which is what the PCRF polices: one Media-Component-Description
//! per m-line, directions seen from the browser. With BUNDLE and rtcp-mux every m-line shares
//! one 5-tuple; TS 29.214 §5.3.16 lets a flow be described once only, so the flow goes in the
//! first active component and the others carry their type, bandwidth, status and codecs.
//!
//! # The signalling path (`rx.signalling`)
//! While a browser's WebSocket carries an active registration, an Rx session of its own
//! describes that TCP connection as Media-Component-Number 0 with Flow-Usage AF_SIGNALLING
//! (TS 29.214 §4.4.5a), so the PCRF can give SIP its own bearer and tell us when it is lost.
//! It opens when the signalling machine reports the path Up (the first 2xx to a REGISTER over
//! the connection) and ends with an STR when it reports Down (last registration gone, or the
//! socket closed). A refused or unanswered signalling AAR is counted and logged, in open and
//! closed policy alike: the registration has been granted by then, and the PCRF's view of the
//! signalling bearer does not decide it. A loss or release of that bearer, or an abort,
//! reaches the machine as `Input::SignallingLost` (TS 23.228 §5.2.2.6).

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

use estuary_b2bua::{ConnId, Input, PolicyDecision, PolicySubject, Side, SignallingPath};
use estuary_diameter::{PeerSet, PeerSetEvent, PeerStatus, Transmit};
use estuary_rx::{
    AarKind, Bandwidth, CallKey, Direction, IpFlow, MediaComponent, MediaType, RxClient, RxCounters, RxEvent, SdpRole, SdpSource,
    SessionParams, SignallingParams, Subscription, SubscriptionKind, TerminationCause,
};
use estuary_sdp::{CodecMap, MediaPlan, StreamPlan};

use crate::{MetricKind, Sample};

/// What happens to a call when the PCRF refuses its media or does not answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OnFailure {
    /// The call goes on; the failure is counted and logged.
    Open,
    /// The call is refused (503, or 580 with preconditions) or ended.
    Closed,
}

/// How the policy function is set up.
#[derive(Clone, Debug)]
pub struct PolicySettings {
    pub on_failure: OnFailure,
    /// The gateway's browser-facing media address (the `network` end of each flow).
    pub web_media_ip: IpAddr,
    /// Names for the peers' metrics, in the set's order ("host:port").
    pub peer_names: Vec<String>,
}

/// An input from the driver's Diameter connections, by peer index in the set.
#[derive(Debug)]
pub enum DiameterInput<'a> {
    /// The TCP connection the driver opened for `Transmit::Connect` is up.
    Connected { peer: usize },
    /// It could not be opened.
    ConnectFailed { peer: usize },
    /// Bytes read from it, cut anywhere.
    Bytes { peer: usize, data: &'a [u8] },
    /// It closed (by the peer, or an error).
    Closed { peer: usize },
}

/// What the call's record says of its Rx session.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PolicyReport {
    /// The Rx Session-Id.
    pub session_id: String,
    /// How the initial AAR came out: "2001", "5003", "5065 (experimental)", "timeout",
    /// or `None` when still unanswered at the end.
    pub result: Option<String>,
}

/// One call's Rx state on our side.
#[derive(Debug)]
struct Tracked {
    session_id: String,
    /// What the last AAR described, to send an update only when something changed.
    sent: SessionParams,
    /// The browser's address ICE selected, once it did.
    selected: Option<SocketAddr>,
    /// The plan last seen, for an update when the selected pair changes.
    plan: Box<MediaPlan>,
    subject: PolicySubject,
    result: Option<String>,
    /// When the initial AAR left, for its latency.
    asked: Instant,
}

/// The Rx client's sessions are keyed by calls and by signalling paths in one space: a
/// signalling path's key has the top bit set (call and connection ids are counters that start
/// at 1 and never reach it).
const SIGNALLING_KEY: u64 = 1 << 63;
/// Keys of sessions released for a gateway that died (see [`Policy::release_foreign`]).
const FOREIGN_KEY: u64 = 1 << 62;

/// Whose an Rx session is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Owner {
    Call(u64),
    Signalling(ConnId),
    /// A session of a call taken over from a gateway that died, being released.
    Foreign(u64),
}

impl Owner {
    fn of(key: CallKey) -> Owner {
        if key.0 & SIGNALLING_KEY != 0 {
            Owner::Signalling(ConnId(key.0 & !SIGNALLING_KEY))
        } else if key.0 & FOREIGN_KEY != 0 {
            Owner::Foreign(key.0 & !FOREIGN_KEY)
        } else {
            Owner::Call(key.0)
        }
    }

    fn key(self) -> CallKey {
        match self {
            Owner::Call(call) => CallKey(call),
            Owner::Signalling(conn) => CallKey(SIGNALLING_KEY | conn.0),
            Owner::Foreign(n) => CallKey(FOREIGN_KEY | n),
        }
    }
}

/// AAA latency buckets (upper bounds, ms) for /metrics.
const LATENCY_BUCKETS_MS: [u64; 8] = [5, 10, 25, 50, 100, 250, 1000, 5000];

/// Counters kept beside the Rx client's own.
#[derive(Debug, Default)]
struct Stats {
    /// Initial AAR answers (or timeouts) by how long they took: one count per bucket, the last
    /// one for slower answers.
    latency: [u64; LATENCY_BUCKETS_MS.len() + 1],
    latency_sum_ms: u64,
    latency_count: u64,
    /// Calls whose media could not be described (no browser address).
    not_described: u64,
    /// Initial AARs refused or unanswered while policy was open: the call went on.
    failed_open: u64,
    /// Calls refused or ended because of a refusal or timeout (closed policy).
    refused_closed: u64,
    /// Answers, requests or failures the Rx client could not place.
    unplaced: u64,
    /// Signalling AARs refused or unanswered.
    signalling_failed: u64,
    /// Signalling paths the PCRF reported lost (loss or release of bearer, abort).
    signalling_lost: u64,
    /// Sessions of calls taken over from a gateway that died, released with an STR.
    foreign_released: u64,
}

/// The policy function. See the module docs.
pub struct Policy {
    rx: RxClient,
    peers: PeerSet,
    settings: PolicySettings,
    calls: HashMap<u64, Tracked>,
    /// Signalling paths with an Rx session (its Session-Id is the Rx client's).
    paths: HashSet<ConnId>,
    decisions: VecDeque<(Owner, Decision)>,
    stats: Stats,
}

/// A decision for the signalling machine, owned (the machine's input borrows its reason).
#[derive(Debug)]
enum Decision {
    Authorized,
    Refused(String),
    BearerLost,
    Aborted,
    OutOfCredit,
}

impl Policy {
    /// The policy function; it starts connecting to its peers at `now` (the driver sees the
    /// connects on its first drain of the core's outputs).
    pub fn new(now: Instant, rx: RxClient, mut peers: PeerSet, settings: PolicySettings) -> Policy {
        peers.connect_all(now);
        Policy { rx, peers, settings, calls: HashMap::new(), paths: HashSet::new(), decisions: VecDeque::new(), stats: Stats::default() }
    }

    /// Whether a refusal ends calls.
    pub fn is_closed(&self) -> bool {
        self.settings.on_failure == OnFailure::Closed
    }

    /// A call's plan was settled or renegotiated.
    pub fn plan(&mut self, now: Instant, call: u64, plan: &MediaPlan, subject: Option<PolicySubject>) {
        if let Some(t) = self.calls.get_mut(&call) {
            *t.plan = plan.clone();
            self.redescribe(now, call);
            return;
        }
        let Some(subject) = subject else { return };
        let Some(params) = describe(plan, &subject, None, self.settings.web_media_ip) else {
            self.stats.not_described += 1;
            tracing::warn!(call, "no browser address to describe to the PCRF");
            self.fail(call, "Rx: no browser address to describe".to_owned());
            return;
        };
        if let Err(e) = self.rx.start(now, CallKey(call), params.clone()) {
            tracing::warn!(call, error = %e, "Rx session not started");
            self.fail(call, format!("Rx: {e}"));
            return;
        }
        let session_id = self.rx.session_id(CallKey(call)).unwrap_or_default().to_owned();
        tracing::info!(call, session_id, "AAR sent");
        self.calls.insert(call, Tracked { session_id, sent: params, selected: None, plan: Box::new(plan.clone()), subject, result: None, asked: now });
        self.pump(now);
    }

    /// A browser connection's signalling path came up (an AAR describes it) or went down (the
    /// STR goes).
    pub fn signalling_path(&mut self, now: Instant, path: &SignallingPath) {
        match path {
            SignallingPath::Up { conn, identity, browser, local } => {
                let params = SignallingParams {
                    subscription: Some(Subscription { kind: subscription_kind(identity), data: identity.clone() }),
                    framed_ip: browser.ip().to_canonical(),
                    flows: vec![IpFlow::tcp(*browser, *local)],
                };
                let key = Owner::Signalling(*conn).key();
                match self.rx.start_signalling(now, key, params) {
                    Ok(()) => {
                        tracing::info!(conn = conn.0, identity, session_id = self.rx.session_id(key).unwrap_or_default(), "signalling AAR sent");
                        self.paths.insert(*conn);
                    }
                    Err(e) => {
                        self.stats.signalling_failed += 1;
                        tracing::warn!(conn = conn.0, error = %e, "no Rx session for the signalling path");
                    }
                }
            }
            SignallingPath::Down { conn } => {
                self.paths.remove(conn);
                let key = Owner::Signalling(*conn).key();
                if self.rx.session_id(key).is_some() {
                    let _ = self.rx.end(now, key, TerminationCause::Logout);
                }
            }
        }
        self.pump(now);
    }

    /// ICE selected (or moved to) `remote` for the call's browser side.
    pub fn path_selected(&mut self, now: Instant, call: u64, remote: SocketAddr) {
        let Some(t) = self.calls.get_mut(&call) else { return };
        if t.selected == Some(remote) {
            return;
        }
        t.selected = Some(remote);
        if self.redescribe(now, call) {
            tracing::info!(call, %remote, "ICE selected another browser address; the PCRF was updated");
        }
    }

    /// Describes a tracked call again from its plan and selected pair, and sends an update
    /// AAR when the media components differ from the last ones sent. Returns whether it did.
    fn redescribe(&mut self, now: Instant, call: u64) -> bool {
        let Some(t) = self.calls.get_mut(&call) else { return false };
        let params = describe(&t.plan, &t.subject, t.selected, self.settings.web_media_ip);
        let Some(params) = params.filter(|p| p.components != t.sent.components) else { return false };
        t.sent = params.clone();
        if let Err(e) = self.rx.update(now, CallKey(call), params) {
            tracing::debug!(call, error = %e, "no Rx update");
        }
        self.pump(now);
        true
    }

    /// The call ended: what its record says of Rx, and the STR goes.
    pub fn end(&mut self, now: Instant, call: u64) -> Option<PolicyReport> {
        let t = self.calls.remove(&call)?;
        // A session refused or unanswered at the start is already over: no STR (the Rx
        // client sent one after a timeout itself).
        if self.rx.session_id(CallKey(call)).is_some() {
            let _ = self.rx.end(now, CallKey(call), TerminationCause::Logout);
        }
        self.pump(now);
        Some(PolicyReport { session_id: t.session_id, result: t.result })
    }

    /// Releases the Rx session `session_id` that a gateway which died opened for a call this
    /// node took over (the call gets its own session with its new media plan): an STR, so the
    /// PCRF does not keep the old bearer's resources until its own clean-up.
    pub fn release_foreign(&mut self, now: Instant, session_id: String) {
        self.stats.foreign_released += 1;
        let key = Owner::Foreign(self.stats.foreign_released).key();
        tracing::info!(session_id, "releasing the Rx session of a call taken over");
        if let Err(e) = self.rx.end_foreign(now, key, session_id, estuary_rx::TerminationCause::Logout) {
            tracing::warn!(error = %e, "Rx session not released");
        }
        self.pump(now);
    }

    /// A reload changed the policy peers (`rx.peers`): `retire` leave service (DPR, never
    /// again), `add` join at the end, each with its name for /metrics, taking the next
    /// indices; then `order` (indices, the new ones included) is the priority order. Calls
    /// and their sessions go on; requests of a retired peer fail over as it goes down.
    pub fn reconfigure_peers(&mut self, now: Instant, retire: &[usize], add: Vec<(estuary_diameter::Peer, String)>, order: &[usize]) {
        for &i in retire {
            tracing::info!(peer = self.peer_name(i), "Rx peer retired (no longer in rx.peers)");
            self.peers.retire(now, i);
        }
        for (peer, name) in add {
            let index = self.peers.add(now, peer);
            tracing::info!(peer = %name, index, "Rx peer added");
            if self.settings.peer_names.len() <= index {
                self.settings.peer_names.resize(index + 1, String::new());
            }
            self.settings.peer_names[index] = name;
        }
        self.peers.set_order(order);
        self.pump(now);
    }

    pub fn handle_diameter(&mut self, now: Instant, input: DiameterInput<'_>) {
        match input {
            DiameterInput::Connected { peer } => self.peers.handle_connected(now, peer),
            DiameterInput::ConnectFailed { peer } => self.peers.handle_connect_failed(now, peer),
            DiameterInput::Bytes { peer, data } => self.peers.handle_bytes(now, peer, data),
            DiameterInput::Closed { peer } => self.peers.handle_closed(now, peer),
        }
        self.pump(now);
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        match (self.peers.poll_timeout(), self.rx.poll_timeout()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        if self.peers.poll_timeout().is_some_and(|t| t <= now) {
            self.peers.handle_timeout(now);
        }
        if self.rx.poll_timeout().is_some_and(|t| t <= now) {
            self.rx.handle_timeout(now);
        }
        self.pump(now);
    }

    /// The next bytes or connection action for the driver.
    pub fn poll_transmit(&mut self) -> Option<(usize, Transmit)> {
        self.peers.poll_transmit()
    }

    /// The next decision for the signalling machine, as its input, given to `f` (its reason
    /// borrowed).
    pub(crate) fn next_decision<R>(&mut self, f: impl FnOnce(Input<'_>) -> R) -> Option<R> {
        let (owner, d) = self.decisions.pop_front()?;
        let call = match owner {
            // A signalling path's session only ever reports its bearer gone.
            Owner::Signalling(conn) => return Some(f(Input::SignallingLost { conn })),
            // (Never queued: a released session decides nothing.)
            Owner::Foreign(_) => return self.next_decision(f),
            Owner::Call(call) => call,
        };
        let decision = match &d {
            Decision::Authorized => PolicyDecision::Authorized,
            Decision::Refused(reason) => PolicyDecision::Refused { reason },
            Decision::BearerLost => PolicyDecision::BearerLost,
            Decision::Aborted => PolicyDecision::Aborted,
            Decision::OutOfCredit => PolicyDecision::OutOfCredit,
        };
        Some(f(Input::Policy { call, decision }))
    }

    /// The Rx client's counters.
    pub fn counters(&self) -> &RxCounters {
        self.rx.counters()
    }

    /// The Rx Session-Id of a call, while it has one.
    pub fn session_id(&self, call: u64) -> Option<&str> {
        self.calls.get(&call).map(|t| t.session_id.as_str())
    }

    /// Moves requests, answers and events between the Rx client and the peers until both
    /// are quiet.
    fn pump(&mut self, now: Instant) {
        loop {
            let mut busy = false;
            while let Some((_, request)) = self.rx.poll_request() {
                busy = true;
                if let Err(e) = self.peers.send_request(now, request) {
                    let request = e.into_message();
                    if self.rx.handle_failure(now, &request).is_err() {
                        self.stats.unplaced += 1;
                    }
                }
            }
            while let Some(event) = self.peers.poll_event() {
                busy = true;
                self.on_peer_event(now, event);
            }
            while let Some(event) = self.rx.poll_event() {
                busy = true;
                self.on_rx_event(now, event);
            }
            if !busy {
                break;
            }
        }
    }

    fn on_peer_event(&mut self, now: Instant, event: PeerSetEvent) {
        match event {
            PeerSetEvent::Up { peer, info } => {
                tracing::info!(peer = self.peer_name(peer), host = info.host, realm = info.realm, "Diameter peer up")
            }
            PeerSetEvent::Down { peer, reason } => tracing::warn!(peer = self.peer_name(peer), ?reason, "Diameter peer down"),
            PeerSetEvent::Request { peer, request } | PeerSetEvent::DuplicateRequest { peer, request } => {
                if let Some(answer) = self.rx.handle_request(now, &request) {
                    if let Err(e) = self.peers.send_answer(now, peer, answer) {
                        tracing::warn!(peer = self.peer_name(peer), error = ?e, "Rx answer not sent");
                    }
                }
            }
            PeerSetEvent::Answer { answer, .. } => {
                if let Err(e) = self.rx.handle_answer(now, &answer) {
                    self.stats.unplaced += 1;
                    tracing::debug!(error = %e, "Rx answer not placed");
                }
            }
            PeerSetEvent::Failed { request, cause, .. } => {
                tracing::debug!(?cause, "Rx request failed on every peer");
                if self.rx.handle_failure(now, &request).is_err() {
                    self.stats.unplaced += 1;
                }
            }
        }
    }

    fn on_rx_event(&mut self, now: Instant, event: RxEvent) {
        match Owner::of(event.call()) {
            Owner::Signalling(conn) => return self.on_signalling_event(conn, event),
            // Released on a dead gateway's behalf: nothing here depends on it.
            Owner::Foreign(_) => return tracing::debug!(?event, "released Rx session"),
            Owner::Call(_) => {}
        }
        match event {
            RxEvent::Authorized { call: CallKey(call), kind, result_code } => {
                if kind == AarKind::Initial {
                    self.settle(now, call, result_code.to_string());
                    self.decisions.push_back((Owner::Call(call), Decision::Authorized));
                }
            }
            RxEvent::Refused { call: CallKey(call), kind, result_code, experimental } => {
                let code = match (experimental, result_code) {
                    (Some(e), _) => format!("{e} (experimental)"),
                    (None, Some(r)) => r.to_string(),
                    (None, None) => "no result".to_owned(),
                };
                if kind == AarKind::Initial {
                    self.settle(now, call, code.clone());
                    self.fail(call, format!("Rx: the PCRF refused the media ({code})"));
                } else {
                    tracing::warn!(call, code, "PCRF refused an update; the previous authorization stands");
                }
            }
            RxEvent::TimedOut { call: CallKey(call), kind } => {
                if kind == AarKind::Initial {
                    self.settle(now, call, "timeout".to_owned());
                    self.fail(call, "Rx: no answer from the PCRF".to_owned());
                } else {
                    tracing::warn!(call, "PCRF did not answer an update; the previous authorization stands");
                }
            }
            RxEvent::BearerLost { call: CallKey(call), action, .. } => {
                tracing::warn!(call, ?action, "PCRF: bearer lost");
                self.decisions.push_back((Owner::Call(call), Decision::BearerLost));
            }
            RxEvent::Aborted { call: CallKey(call), cause } => {
                tracing::warn!(call, ?cause, "PCRF aborted the session");
                self.decisions.push_back((Owner::Call(call), Decision::Aborted));
            }
            RxEvent::OutOfCredit { call: CallKey(call), action, .. } => {
                tracing::warn!(call, ?action, "PCRF: out of credit");
                self.decisions.push_back((Owner::Call(call), Decision::OutOfCredit));
            }
            RxEvent::Notified { call, actions } => tracing::info!(call = call.0, ?actions, "PCRF notification"),
            RxEvent::Terminated { .. } => {}
        }
    }

    fn on_signalling_event(&mut self, conn: ConnId, event: RxEvent) {
        let c = conn.0;
        match event {
            RxEvent::Authorized { result_code, .. } => tracing::info!(conn = c, result_code, "PCRF authorized the signalling path"),
            RxEvent::Refused { result_code, experimental, .. } => {
                self.stats.signalling_failed += 1;
                self.paths.remove(&conn);
                tracing::warn!(conn = c, ?result_code, ?experimental, "PCRF refused the signalling path; the registration stands");
            }
            RxEvent::TimedOut { .. } => {
                self.stats.signalling_failed += 1;
                self.paths.remove(&conn);
                tracing::warn!(conn = c, "PCRF did not answer the signalling AAR; the registration stands");
            }
            RxEvent::BearerLost { action, .. } => {
                self.stats.signalling_lost += 1;
                tracing::warn!(conn = c, ?action, "PCRF: the signalling bearer is lost");
                self.decisions.push_back((Owner::Signalling(conn), Decision::BearerLost));
            }
            RxEvent::Aborted { cause, .. } => {
                self.stats.signalling_lost += 1;
                self.paths.remove(&conn);
                tracing::warn!(conn = c, ?cause, "PCRF aborted the signalling session");
                self.decisions.push_back((Owner::Signalling(conn), Decision::Aborted));
            }
            RxEvent::Notified { actions, .. } => tracing::info!(conn = c, ?actions, "PCRF notification on the signalling path"),
            // Credit is charged on calls; the signalling path has none to run out of.
            RxEvent::OutOfCredit { action, .. } => tracing::info!(conn = c, ?action, "PCRF: out of credit on the signalling path; ignored"),
            RxEvent::Terminated { .. } => {}
        }
    }

    /// The initial AAR came out as `result`: for the record and the latency histogram.
    fn settle(&mut self, now: Instant, call: u64, result: String) {
        let Some(t) = self.calls.get_mut(&call) else { return };
        t.result = Some(result);
        let ms = now.saturating_duration_since(t.asked).as_millis() as u64;
        let bucket = LATENCY_BUCKETS_MS.iter().position(|b| ms <= *b).unwrap_or(LATENCY_BUCKETS_MS.len());
        self.stats.latency[bucket] += 1;
        self.stats.latency_sum_ms += ms;
        self.stats.latency_count += 1;
    }

    /// The initial authorization failed: closed policy ends the call, open policy counts it.
    fn fail(&mut self, call: u64, reason: String) {
        match self.settings.on_failure {
            OnFailure::Closed => {
                self.stats.refused_closed += 1;
                self.decisions.push_back((Owner::Call(call), Decision::Refused(reason)));
            }
            OnFailure::Open => {
                self.stats.failed_open += 1;
                tracing::warn!(call, reason, "policy is open: the call goes on without the PCRF's authorization");
            }
        }
    }

    fn peer_name(&self, peer: usize) -> &str {
        self.settings.peer_names.get(peer).map_or("?", String::as_str)
    }

    /// Samples for /metrics.
    pub fn metrics(&self, out: &mut Vec<Sample>) {
        // The peers in service, by priority (a retired one is no longer shown).
        for (rank, &i) in self.peers.in_service().iter().enumerate() {
            let Some(p) = self.peers.peer(i) else { continue };
            out.push(Sample {
                name: "estuary_rx_peer_up",
                help: "Diameter Rx peers: 1 when the connection is open (capabilities exchanged), by peer and role",
                kind: MetricKind::Gauge,
                labels: vec![("peer", self.peer_name(i).to_owned()), ("role", if rank == 0 { "primary" } else { "secondary" }.to_owned())],
                value: u64::from(p.status() == PeerStatus::Open),
            });
        }
        let c = self.rx.counters();
        let mut count = |name: &'static str, help: &'static str, labels: Vec<(&'static str, String)>, value: u64| {
            out.push(Sample { name, help, kind: MetricKind::Counter, labels, value })
        };
        const REQ: &str = "Rx requests sent to the PCRF, by command";
        count("estuary_rx_requests_total", REQ, vec![("command", "AAR".into()), ("kind", "initial".into())], c.aar_initial_sent);
        count("estuary_rx_requests_total", REQ, vec![("command", "AAR".into()), ("kind", "update".into())], c.aar_update_sent);
        count("estuary_rx_requests_total", REQ, vec![("command", "STR".into()), ("kind", "".into())], c.str_sent);
        const ANS: &str = "Rx answers from the PCRF by command and result class; timeouts count requests with none";
        for (cmd, r) in [("AAA", c.aaa), ("STA", c.sta)] {
            for (class, v) in [
                ("success", r.success),
                ("protocol_error", r.protocol_error),
                ("transient_failure", r.transient_failure),
                ("permanent_failure", r.permanent_failure),
                ("other", r.other),
            ] {
                count("estuary_rx_answers_total", ANS, vec![("command", cmd.into()), ("result", class.into())], v);
            }
        }
        count("estuary_rx_answers_total", ANS, vec![("command", "AAA".into()), ("result", "timeout".into())], c.aar_timeouts);
        count("estuary_rx_answers_total", ANS, vec![("command", "STA".into()), ("result", "timeout".into())], c.str_timeouts);
        const IN: &str = "Rx requests from the PCRF, by command";
        count("estuary_rx_pcrf_requests_total", IN, vec![("command", "RAR".into())], c.rar_received);
        count("estuary_rx_pcrf_requests_total", IN, vec![("command", "ASR".into())], c.asr_received);
        count("estuary_rx_pcrf_requests_rejected_total", "Requests from the PCRF answered with an error (malformed, unknown session, unsupported)", vec![], c.requests_rejected);
        count("estuary_rx_failures_open_total", "Initial AARs refused or unanswered while rx.on_failure = open: the call went on", vec![], self.stats.failed_open);
        count("estuary_rx_calls_refused_total", "Calls refused or ended because the PCRF refused or did not answer (rx.on_failure = closed)", vec![], self.stats.refused_closed);
        count("estuary_rx_not_described_total", "Calls whose media could not be described to the PCRF (no browser address)", vec![], self.stats.not_described);
        count(
            "estuary_rx_foreign_sessions_released_total",
            "Rx sessions of calls taken over from a gateway that died, released with an STR by this one",
            vec![],
            self.stats.foreign_released,
        );
        let mut cumulative = 0;
        for (i, n) in self.stats.latency.iter().enumerate() {
            cumulative += n;
            let le = LATENCY_BUCKETS_MS.get(i).map_or("+Inf".to_owned(), |b| b.to_string());
            out.push(Sample {
                name: "estuary_rx_aar_latency_ms_bucket",
                help: "Initial AARs by the time to their answer (or timeout), milliseconds, cumulative",
                kind: MetricKind::Counter,
                labels: vec![("le", le)],
                value: cumulative,
            });
        }
        out.push(Sample {
            name: "estuary_rx_aar_latency_ms_count",
            help: "Initial AARs answered or timed out",
            kind: MetricKind::Counter,
            labels: vec![],
            value: self.stats.latency_count,
        });
        out.push(Sample {
            name: "estuary_rx_aar_latency_ms_sum",
            help: "Sum of initial AAR latencies, milliseconds",
            kind: MetricKind::Counter,
            labels: vec![],
            value: self.stats.latency_sum_ms,
        });
        out.push(Sample { name: "estuary_rx_sessions", help: "Rx sessions open or closing (calls and signalling paths)", kind: MetricKind::Gauge, labels: vec![], value: self.rx.len() as u64 });
        out.push(Sample {
            name: "estuary_rx_signalling_paths",
            help: "Browser connections whose signalling path has an Rx session (rx.signalling)",
            kind: MetricKind::Gauge,
            labels: vec![],
            value: self.paths.len() as u64,
        });
        out.push(Sample {
            name: "estuary_rx_signalling_failures_total",
            help: "Signalling-path AARs refused or unanswered (the registration stands)",
            kind: MetricKind::Counter,
            labels: vec![],
            value: self.stats.signalling_failed,
        });
        out.push(Sample {
            name: "estuary_rx_signalling_lost_total",
            help: "Signalling paths the PCRF reported lost or aborted: the browser's calls ended",
            kind: MetricKind::Counter,
            labels: vec![],
            value: self.stats.signalling_lost,
        });
    }
}

/// The AAR's content for a plan: `None` when the browser's address is not known at all.
pub fn describe(plan: &MediaPlan, subject: &PolicySubject, selected: Option<SocketAddr>, web_media_ip: IpAddr) -> Option<SessionParams> {
    let ue = selected.or(plan.web.remote_candidate);
    let framed_ip = subject.browser_ip.or(ue.map(|a| a.ip()))?;
    let network = SocketAddr::new(web_media_ip, plan.web.local_port);
    let first_active = plan.streams.iter().position(|s| s.active);
    let components = plan
        .streams
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let flows = match ue {
                Some(ue) if Some(i) == first_active && plan.web.local_port != 0 => {
                    let flow = IpFlow::udp(ue, network);
                    if flow.is_consistent() {
                        vec![flow]
                    } else {
                        Vec::new()
                    }
                }
                _ => Vec::new(),
            };
            MediaComponent {
                number: i as u32 + 1,
                media_type: MediaType::from_sdp_media(&s.kind),
                direction: browser_direction(s.web_direction),
                bandwidth: bandwidth(s),
                codec_data: codec_data(s, subject.caller, ue, plan.web.local_port),
                flows,
                removed: !s.active,
            }
        })
        .collect();
    Some(SessionParams {
        af_charging_id: subject.charging_id.clone(),
        subscription: subject.identity.as_ref().map(|id| Subscription { kind: subscription_kind(id), data: id.clone() }),
        framed_ip,
        af_application_id: None,
        components,
        service_urn: None,
    })
}

/// tel: identities are E.164 numbers; everything else a SIP URI (RFC 4006 §8.47).
fn subscription_kind(identity: &str) -> SubscriptionKind {
    if identity.get(..4).is_some_and(|s| s.eq_ignore_ascii_case("tel:")) {
        SubscriptionKind::E164
    } else {
        SubscriptionKind::SipUri
    }
}

/// The plan's web direction is the gateway's (what it may send the browser); the browser's is
/// the mirror image.
fn browser_direction(gateway: estuary_sdp::Direction) -> Direction {
    match gateway {
        estuary_sdp::Direction::SendRecv => Direction::SendRecv,
        estuary_sdp::Direction::SendOnly => Direction::RecvOnly,
        estuary_sdp::Direction::RecvOnly => Direction::SendOnly,
        estuary_sdp::Direction::Inactive => Direction::Inactive,
    }
}

/// Max-Requested-Bandwidth-UL/DL, bit/s: the core's limit for the stream when it gave one
/// (b=TIAS or b=AS), else an estimate from the primary codec with RTP/UDP/IP overhead. The
/// browser's own SDP rarely has b=AS.
fn bandwidth(s: &StreamPlan) -> Bandwidth {
    if !s.active {
        return Bandwidth::default();
    }
    let estimate = s.codecs.first().map(codec_rate).unwrap_or(if s.kind == "video" { 2_000_000 } else { 80_000 });
    let rate = s.ims_max_bitrate.unwrap_or(estimate);
    Bandwidth { ul: Some(rate), dl: Some(rate) }
}

/// A codec's rate on the browser leg with 50 packets/s of headers (IPv4 20 + UDP 8 + RTP 12 +
/// SRTP tag 10 bytes: 20 kbit/s) for audio.
fn codec_rate(c: &CodecMap) -> u32 {
    const AUDIO_OVERHEAD: u32 = 20_000;
    let name = c.web.encoding.to_ascii_lowercase();
    match name.as_str() {
        "pcmu" | "pcma" => 64_000 + AUDIO_OVERHEAD,
        // WebRTC's default for mono speech stays under 40 kbit/s; allow fullband music.
        "opus" => 64_000 + AUDIO_OVERHEAD,
        "g722" => 64_000 + AUDIO_OVERHEAD,
        "amr" => 12_200 + AUDIO_OVERHEAD,
        "amr-wb" => 23_850 + AUDIO_OVERHEAD,
        _ if c.is_video() => 2_000_000,
        _ => 64_000 + AUDIO_OVERHEAD,
    }
}

/// Codec-Data for the browser leg (TS 29.214 §5.3.7): the browser's SDP ("uplink") and ours
/// ("downlink"), each with the settled payload types; the caller's was the offer.
fn codec_data(s: &StreamPlan, caller: Side, ue: Option<SocketAddr>, local_port: u16) -> Vec<String> {
    if !s.active || s.codecs.is_empty() {
        return Vec::new();
    }
    let lines = |port: u16| {
        let pts: Vec<String> = s.codecs.iter().map(|c| c.web_pt.to_string()).collect();
        let mut v = vec![format!("m={} {} UDP/TLS/RTP/SAVPF {}", s.kind, port, pts.join(" "))];
        for c in &s.codecs {
            v.push(format!("a=rtpmap:{}", c.web));
            if let Some(f) = &c.web_fmtp {
                v.push(format!("a=fmtp:{} {f}", c.web_pt));
            }
        }
        v
    };
    let (browser_role, ours_role) = match caller {
        Side::Web => (SdpRole::Offer, SdpRole::Answer),
        Side::Ims => (SdpRole::Answer, SdpRole::Offer),
    };
    let uplink = estuary_rx::codec_data(SdpSource::Uplink, browser_role, lines(ue.map_or(9, |a| a.port())));
    let downlink = estuary_rx::codec_data(SdpSource::Downlink, ours_role, lines(local_port));
    let mut out: Vec<String> = [uplink, downlink].into_iter().filter_map(Result::ok).collect();
    // The offer first, as the AF saw them.
    if caller == Side::Ims {
        out.reverse();
    }
    out
}
