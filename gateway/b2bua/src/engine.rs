//! The B2BUA engine: routes each message to its transaction, registration or call, and builds
//! what goes out on the other side.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use estuary_sip::{
    response_to, salvage_response, ContactValue, Message, Method, NameAddr, Request,
    Response, Scheme, Uri,
};
use estuary_transaction::{
    ClientKey, Event, FailureCause, RequestOutcome, ResponseOutcome, ServerKey, Transactions,
};
use estuary_keys::KeySource;
use rand::rngs::StdRng;
use estuary_sdp::{SdpError, SdpSession};
use rand::{Rng, SeedableRng};

use estuary_transaction::Deadlines;
use crate::call::{with_tag, AckDuty, Authorization, Call, CallId, CallState, HeldAnswer, Leg, LegIdx, Relayed};
use crate::io::{CallSummary, ConnId, EndReason, Flow, Input, Output, PolicyDecision, PolicySubject, ReleaseCause, Sample, SharedCall, SharedRegistration, Side, SignallingPath, Transport};
use crate::metrics::Counters;
use crate::ports::{CallPorts, PortPool};
use crate::registrar::{Binding, BindingId, OnWsClose, Registrar};
use crate::relay::copy_end_to_end;
use crate::next_hops::{HopTarget, NextHops};
use crate::cluster::StateQuery;
use crate::B2buaConfig;

mod reanchor;
mod serve;

/// Methods the gateway handles, for Allow headers.
const ALLOW: &str = "INVITE, ACK, CANCEL, BYE, OPTIONS, MESSAGE, INFO, UPDATE, PRACK, REGISTER";

/// Who waits for the responses of a client transaction.
#[derive(Debug)]
enum Owner {
    /// A browser REGISTER re-originated toward IMS.
    Register { binding: BindingId, web: ServerKey, web_req: Request },
    /// The initial INVITE of a call on leg B.
    Invite { call: CallId },
    /// An in-dialog request relayed from one leg to the other.
    Relay(Relayed),
    /// An out-of-dialog request (MESSAGE, OPTIONS, INFO) relayed to the other side.
    NonDialog { server: ServerKey, request: Request, from: Side },
    /// Requests the gateway sends on its own account (BYE, CANCEL, deregistration): the
    /// response is only logged.
    Own,
    /// An OPTIONS probing a next-hop target marked down.
    Probe(std::net::SocketAddr),
    /// A request from the core for a browser another node of the cluster holds, proxied to
    /// that node (see `cluster`): its responses go back less our Via. `forwarded` is the
    /// request as sent, for a CANCEL.
    Proxied { server: ServerKey, forwarded: Request, node: std::net::SocketAddr },
    /// A re-INVITE moving an adopted call's media here (see `reanchor`).
    Reanchor { call: CallId, leg: LegIdx, step: reanchor::Step },
}

/// A request sent outside a dialog to a next-hop target, kept so that it can move to the
/// next target when this one fails (RFC 3263 §4.3).
#[derive(Debug)]
struct Failover {
    request: Request,
    tried: Vec<std::net::SocketAddr>,
}

#[derive(Debug, Clone, Copy)]
struct ConnInfo {
    transport: Transport,
    /// Both ends of the connection: the browser (its address counts for per-source limits)
    /// and ours, for the policy function's signalling flow.
    peer: std::net::SocketAddr,
    local: std::net::SocketAddr,
    /// `SignallingPath::Up` was reported and `Down` not yet.
    signalling_up: bool,
}

/// A call's timers (see `call_timers`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum CallTimer {
    /// Guard: a CANCEL whose INVITE the far end never finished.
    Guard,
    /// The session timer the endpoints negotiated (RFC 4028 §10) ran out without a refresh.
    SessionExpires,
    /// The browser's WebSocket closed and it did not come back within the reconnection grace.
    Reconnect,
}

/// The signalling engine. Sans-IO: see the crate documentation for the drive loop.
pub struct B2bua {
    cfg: B2buaConfig,
    /// Identifiers (tags, branches, Call-IDs, tokens, ICIDs): seeded, so replay can fix them.
    rng: StdRng,
    /// Secrets (each call's SDES keys and ICE credentials): the OS generator only.
    keys: KeySource,
    tx: Transactions<Flow>,
    registrar: Registrar,
    /// Boxed: a call is over 2 KiB, and inline every call would also pay for the table's spare
    /// slots (up to half of them), and each growth would copy every call.
    calls: HashMap<CallId, Box<Call>>,
    /// Transcoding channels each call holds: its settled plan's, or what an offer of it
    /// reserved (admission is decided at the offer, before the far side can answer).
    transcoding: HashMap<CallId, usize>,
    /// A transcoded video stream's cost in audio channels (see `set_video_channel_cost`).
    video_cost: usize,
    /// Each call's guard (an unanswered CANCEL) and session timer, by when they fire.
    call_timers: Deadlines<(CallId, CallTimer)>,
    next_call: u64,
    /// (side, Call-ID, our tag) -> the call and leg of that dialog.
    dialogs: HashMap<(Side, String, String), (CallId, LegIdx)>,
    /// Leg A's initial INVITE server transaction -> call (for CANCEL).
    invites: HashMap<ServerKey, CallId>,
    owners: HashMap<ClientKey, Owner>,
    conns: HashMap<ConnId, ConnInfo>,
    outputs: VecDeque<Output>,
    counters: Counters,
    next_sweep: Option<Instant>,
    ports: PortPool,
    /// Draining (`B2bua::drain`): no new calls, the fronts are told to go elsewhere.
    draining: bool,
    /// The IMS next hop's targets and which are down.
    hops: NextHops,
    /// Requests outside a dialog that may still move to another target.
    failover: HashMap<ClientKey, Failover>,
    /// When the targets marked down are probed next.
    next_probe: Option<Instant>,
    /// Requests held while the cluster's shared state is asked about them.
    queries: crate::cluster::Queries,
    /// INVITEs proxied to the node holding their browser: server -> client transaction (for
    /// a CANCEL).
    proxied: HashMap<ServerKey, ClientKey>,
    /// Answered calls the gateway is ending on its own account, once the cluster's shared
    /// state says they are still this node's (see `end_unless_taken`).
    ending: std::collections::HashSet<CallId>,
}

impl B2bua {
    /// A new engine. `seed` drives every random identifier (tags, branches, Call-IDs); the
    /// daemon passes OS randomness, the replay harness a fixed value. Key material never
    /// comes from the seed: it is drawn from `keys`, which only the OS generator can be.
    pub fn new(cfg: B2buaConfig, seed: u64, keys: KeySource) -> Self {
        let ports = PortPool::new(cfg.port_quarantine);
        let video_cost = cfg.video_channel_cost.max(1);
        let hops = NextHops::new(cfg.next_hop, &cfg.next_hop_targets);
        B2bua {
            tx: Transactions::new(cfg.timers),
            cfg,
            rng: StdRng::seed_from_u64(seed),
            keys,
            registrar: Registrar::default(),
            calls: HashMap::new(),
            transcoding: HashMap::new(),
            video_cost,
            call_timers: Deadlines::default(),
            next_call: 0,
            dialogs: HashMap::new(),
            invites: HashMap::new(),
            owners: HashMap::new(),
            conns: HashMap::new(),
            outputs: VecDeque::new(),
            counters: Counters::default(),
            next_sweep: None,
            ports,
            draining: false,
            hops,
            failover: HashMap::new(),
            next_probe: None,
            queries: Default::default(),
            proxied: HashMap::new(),
            ending: Default::default(),
        }
    }

    /// Media ports the driver has bound (RTP on each, RTCP on each + 1): only these ever
    /// appear in SDP. Grant what [`B2bua::ports_wanted`] asks for.
    pub fn grant_ports(&mut self, ports: impl IntoIterator<Item = u16>) {
        self.ports.grant(ports);
    }

    /// Shared mode (`media.web_port_mode = "shared"`): the browser-facing ports of the media
    /// threads, bound for good by the driver; each call gets one of them in turn instead of a
    /// port of its own.
    pub fn share_web_ports(&mut self, ports: Vec<u16>) {
        self.ports.share_web_ports(ports);
    }

    /// Shared mode: the media thread (by its shared port) new calls should go to, as the
    /// driver judges their load; `None` hands the shared ports out in turn.
    pub fn prefer_web_port(&mut self, port: Option<u16>) {
        self.ports.prefer_web_port(port);
    }

    /// How many more media ports the engine would like bound and granted at `now` (0: it has
    /// enough spare). The driver asks after its inputs and binds in batches.
    pub fn ports_wanted(&self, now: Instant) -> usize {
        self.ports.wanted(now)
    }

    /// Feed one event. Afterwards drain [`B2bua::poll_output`] and re-read
    /// [`B2bua::poll_timeout`].
    pub fn handle_input(&mut self, now: Instant, input: Input<'_>) {
        self.ports.set_now(now);
        match input {
            Input::ConnectionOpened { conn, side: Side::Web, transport, local, remote } => {
                self.conns.insert(conn, ConnInfo { transport, peer: remote, local, signalling_up: false });
            }
            Input::ConnectionOpened { .. } => {}
            Input::Receive { flow, data, .. } => self.on_receive(now, flow, data),
            Input::ConnectionClosed { conn } => self.on_conn_closed(now, conn),
            Input::Unreachable { flow } => self.tx.fail_flow(flow),
            Input::Timeout => self.on_timeout(now),
            Input::MediaFailed { call, reason, cause } => {
                if self.calls.contains_key(&CallId(call)) {
                    tracing::warn!(call, reason, ?cause, "media failed; ending the call");
                    self.end_unless_taken(now, CallId(call), None, EndReason::Media(cause));
                }
            }
            Input::PictureFastUpdate { call } => self.send_picture_fast_update(now, CallId(call)),
            Input::Policy { call, decision } => self.on_policy(now, CallId(call), decision),
            Input::SignallingLost { conn } => self.on_signalling_lost(now, conn),
            Input::StateAnswer { query, answer } => {
                if let Some(held) = self.queries.release(query) {
                    self.resume(now, held, Some(answer));
                }
            }
            Input::HandOverWanted { token } => self.hand_over_wanted(now, token),
            Input::HandOver => self.hand_over_all(now),
            Input::Shutdown => {
                let calls: Vec<CallId> = self.calls.keys().copied().collect();
                if !calls.is_empty() {
                    tracing::warn!(calls = calls.len(), "stopping: ending the calls left");
                }
                for id in calls {
                    self.hangup(now, id, EndReason::Shutdown);
                }
            }
        }
        self.pump(now);
    }

    /// The next action for the driver, if any.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.outputs.pop_front()
    }

    /// When to feed [`Input::Timeout`] next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        [
            self.tx.poll_timeout(),
            self.registrar.next_expiry(),
            self.call_timers.next(),
            self.next_sweep,
            self.next_probe,
            self.queries.next_deadline(),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Current metric values. `now` decides which registrations are still active.
    pub fn metrics(&self, now: Instant) -> Vec<Sample> {
        let mut out = Vec::new();
        // WebSocket connection counts are the daemon's (it owns the sockets).
        self.counters.samples(self.calls.len(), self.registrar.active(now), self.transcoding.values().sum(), &mut out);
        out.push(Sample {
            name: "estuary_cluster_held_requests",
            help: "Requests waiting for the cluster's shared state (a registration or binding this node does not hold)",
            kind: crate::io::MetricKind::Gauge,
            labels: Vec::new(),
            value: self.queries.held() as u64,
        });
        for (target, up) in self.hops.states() {
            out.push(Sample {
                name: "estuary_ims_next_hop_up",
                help: "IMS next-hop targets (RFC 3263): 1 when requests may go there, 0 while it is down and probed",
                kind: crate::io::MetricKind::Gauge,
                labels: vec![("target", target.to_string())],
                value: u64::from(up),
            });
        }
        out.push(Sample {
            name: "estuary_media_ports_available",
            help: "Media ports (RTP/RTCP pairs) bound and ready for the next calls",
            kind: crate::io::MetricKind::Gauge,
            labels: Vec::new(),
            value: self.ports.available(now) as u64,
        });
        out.push(Sample {
            name: "estuary_media_ports_quarantined",
            help: "Media ports released by ended calls and not yet reusable (media.port_quarantine_s)",
            kind: crate::io::MetricKind::Gauge,
            labels: Vec::new(),
            value: self.ports.quarantined(now) as u64,
        });
        out.push(Sample {
            name: "estuary_media_ports_bound",
            help: "Media ports (RTP/RTCP pairs) the gateway holds bound: in calls, ready or quarantined",
            kind: crate::io::MetricKind::Gauge,
            labels: Vec::new(),
            value: self.ports.granted() as u64,
        });
        out
    }

    /// Number of calls in progress.
    pub fn active_calls(&self) -> usize {
        self.calls.len()
    }

    /// Number of dialogs the engine routes in-dialog requests by (each call's two legs, and
    /// the early dialogs of a forked INVITE).
    pub fn dialogs(&self) -> usize {
        self.dialogs.len()
    }

    /// The registration table, for inspection.
    pub fn registrar(&self) -> &Registrar {
        &self.registrar
    }

    /// Who and what a call's media belongs to, for the policy function's requests (Rx AAR):
    /// its charging id, the browser's registered identity and address.
    pub fn policy_subject(&self, call: u64) -> Option<PolicySubject> {
        let call = self.calls.get(&CallId(call))?;
        let web = call.leg(call.web_leg());
        let ims = call.leg(call.web_leg().other());
        let binding = call.binding.and_then(|b| self.registrar.get(b));
        let conn_ip = match web.flow {
            Flow::Web { conn } => self.conns.get(&conn).map(|c| c.peer.ip()),
            Flow::Ims { .. } => None,
        };
        Some(PolicySubject {
            // Without a P-Charging-Vector from the core, the IMS dialog's Call-ID still ties
            // the Rx session to the core's records.
            charging_id: call.icid.clone().unwrap_or_else(|| ims.call_id.clone()),
            identity: binding.map(|b| b.aor.clone()),
            browser_ip: binding.map(|b| b.source).or(conn_ip),
            caller: call.a.side,
        })
    }

    // ----- input dispatch -----------------------------------------------------------------

    fn on_receive(&mut self, now: Instant, flow: Flow, data: &[u8]) {
        let side = side_of(flow);
        match Message::parse(data) {
            Err(e) => {
                self.counters.parse_error(side);
                // The answer (400 with the reason, 505, 416) is built from the raw lines; when
                // none can be formed the message is dropped and counted.
                match salvage_response(data) {
                    Some(resp) => self.tx.send_stateless(flow, resp.to_bytes()),
                    None => {
                        tracing::debug!(error = %e, "unanswerable SIP message dropped");
                        self.counters.dropped(side);
                    }
                }
            }
            Ok(Message::Request(req)) => {
                self.counters.request(side, req.method.as_str());
                if let Err(e) = req.validate() {
                    self.counters.parse_error(side);
                    if req.method != Method::Ack {
                        let resp = self.local_response(&req, 400, &e.reason);
                        self.tx.send_stateless(flow, resp.to_bytes());
                    }
                    return;
                }
                self.on_request(now, flow, req);
            }
            Ok(Message::Response(resp)) => {
                self.counters.response(side, resp.code);
                if resp.validate().is_err() {
                    // Responses are never answered (RFC 3261 §8.1.3.3); a broken one is dropped.
                    self.counters.parse_error(side);
                    self.counters.dropped(side);
                    return;
                }
                self.on_response(now, resp);
            }
        }
    }

    fn on_request(&mut self, now: Instant, flow: Flow, req: Request) {
        let side = side_of(flow);
        let outcome = self.tx.receive_request(now, &req, flow, reliable(flow));
        let (key, cancels) = match outcome {
            RequestOutcome::Retransmission | RequestOutcome::AckAbsorbed => return,
            RequestOutcome::Ack { .. } => return self.on_ack(now, side, req),
            RequestOutcome::New { key, cancels } => (key, cancels),
        };
        // Checks every request passes before routing (RFC 3261 §8.2, §16.3).
        // Within a dialog a request names its dialog: one that came back through the core
        // (a browser calling a browser of this gateway) belongs to the other call's leg.
        let in_dialog = req.headers.to().ok().is_some_and(|t| t.tag().is_some());
        if side == Side::Ims && !in_dialog && self.is_looped(&req) && !self.names_binding_token(&req) && !self.through_front(&req) {
            return self.respond(now, &key, &req, 482, "Loop Detected");
        }
        // RFC 3261 §16.3 item 3: only an OPTIONS addressed to this element may be answered.
        let for_us = req.method == Method::Options && req.uri.user.is_none();
        if req.headers.max_forwards().ok().flatten() == Some(0) && !for_us {
            return self.respond(now, &key, &req, 483, "Too Many Hops");
        }
        if !req.uri_scheme_supported() {
            return self.respond(now, &key, &req, 416, "Unsupported URI Scheme");
        }
        if let Some(Refusal { code, reason, header }) = self.refusal(&req) {
            let mut resp = self.local_response(&req, code, reason);
            if let Some((name, value)) = header {
                resp.headers.push(name, &value);
            }
            let _ = self.tx.send_response(now, &key, &resp);
            return;
        }
        let proxy_require = req.headers.values("Proxy-Require");
        if !proxy_require.is_empty() {
            // The gateway supports no proxy extensions (RFC 3261 §16.3 item 5).
            let mut resp = self.local_response(&req, 420, "Bad Extension");
            resp.headers.push("Unsupported", proxy_require.join(", "));
            let _ = self.tx.send_response(now, &key, &resp);
            return;
        }
        if req.method == Method::Cancel {
            return self.on_cancel(now, key, cancels, &req);
        }
        if in_dialog {
            self.on_in_dialog(now, flow, key, req, false)
        } else {
            self.on_out_of_dialog(now, flow, key, req)
        }
    }

    /// What the gateway itself cannot accept, whichever leg the request would go to: unknown
    /// required extensions (RFC 3261 §8.2.2.3), bodies other than SDP on session requests
    /// (§8.2.3; the SDP engine must read every offer), an Accept that excludes SDP, and
    /// registrations of non-SIP AoRs.
    fn refusal(&self, req: &Request) -> Option<Refusal> {
        const UNDERSTOOD: &[&str] =
            &["100rel", "timer", "path", "outbound", "gruu", "replaces", "precondition", "norefersub", "histinfo", "199"];
        if req.method != Method::Ack && req.method != Method::Cancel {
            let unknown: Vec<String> = req
                .headers
                .values("Require")
                .into_iter()
                .filter(|t| !UNDERSTOOD.iter().any(|u| u.eq_ignore_ascii_case(t)))
                .collect();
            if !unknown.is_empty() {
                return Some(Refusal::new(420, "Bad Extension", Some(("Unsupported", unknown.join(", ")))));
            }
        }
        let session = matches!(req.method, Method::Invite | Method::Update | Method::Prack | Method::Ack);
        if session && !req.body.is_empty() {
            let ct = req.headers.get("Content-Type").unwrap_or("").to_ascii_lowercase();
            let media = ct.split(';').next().unwrap_or("").trim().to_owned();
            if media != "application/sdp" {
                return Some(Refusal::new(415, "Unsupported Media Type", Some(("Accept", "application/sdp".to_owned()))));
            }
        }
        if req.method == Method::Invite {
            let accept = req.headers.values("Accept");
            let takes_sdp = accept.iter().any(|a| {
                let m = a.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
                m == "application/sdp" || m == "application/*" || m == "*/*"
            });
            if !accept.is_empty() && !takes_sdp {
                return Some(Refusal::new(406, "Not Acceptable", None));
            }
        }
        if req.method == Method::Register {
            let to_is_sip = req.headers.to().is_ok_and(|t| matches!(t.uri.scheme, Scheme::Sip | Scheme::Sips));
            if !to_is_sip {
                return Some(Refusal::new(400, "To Must Be a SIP URI", None));
            }
        }
        None
    }

    fn on_out_of_dialog(&mut self, now: Instant, flow: Flow, key: ServerKey, req: Request) {
        let side = side_of(flow);
        let probe = req.method == Method::Options && req.uri.user.is_none();
        if self.draining && (req.method == Method::Invite || probe) {
            let mut resp = self.local_response(&req, 503, "Service Unavailable");
            resp.headers.push("Retry-After", self.cfg.retry_after.as_secs().to_string());
            resp.headers.push("Warning", warning("draining: try another node"));
            if let Err(e) = self.tx.send_response(now, &key, &resp) {
                tracing::debug!(error = %e, "503 not sent");
            }
            if req.method == Method::Invite {
                self.counters.call_failed(503);
            }
            return;
        }
        if side == Side::Ims && self.cfg.share_state && matches!(req.method, Method::Invite | Method::Message | Method::Info | Method::Options) {
            if let Some(token) = self.foreign_token(now, &req) {
                return self.hold(now, StateQuery::Token { token }, flow, key, req);
            }
        }
        match (&req.method, side, flow) {
            (Method::Register, _, Flow::Web { conn }) => self.on_register(now, conn, key, req, false),
            (Method::Register, _, _) => {
                let mut resp = self.local_response(&req, 405, "Method Not Allowed");
                resp.headers.push("Allow", ALLOW);
                let _ = self.tx.send_response(now, &key, &resp);
            }
            (Method::Invite, Side::Web, _) => self.on_web_invite(now, flow, key, req),
            (Method::Invite, Side::Ims, _) => self.on_ims_invite(now, flow, key, req),
            (Method::Options, ..) if req.uri.user.is_none() => {
                // Addressed to the gateway itself (keep-alive, capability query).
                let mut resp = self.local_response(&req, 200, "OK");
                resp.headers.push("Allow", ALLOW);
                resp.headers.push("Accept", "application/sdp");
                resp.headers.push("Supported", "path, 100rel, timer");
                let _ = self.tx.send_response(now, &key, &resp);
            }
            (Method::Message | Method::Options | Method::Info, ..) => self.relay_non_dialog(now, flow, key, req),
            (Method::Bye | Method::Prack | Method::Update, ..) => {
                self.respond(now, &key, &req, 481, "Call/Transaction Does Not Exist")
            }
            _ => self.respond(now, &key, &req, 501, "Not Implemented"),
        }
    }

    fn on_response(&mut self, now: Instant, resp: Response) {
        match self.tx.receive_response(now, &resp) {
            ResponseOutcome::Absorb => {}
            ResponseOutcome::Retransmitted2xx(key) => self.on_2xx_retransmission(&key),
            ResponseOutcome::Deliver(key) => {
                if self.failover.contains_key(&key) {
                    if resp.code == 503 && self.fail_over(now, &key) {
                        return;
                    }
                    // A target that answers more than 100 Trying handled the request.
                    if resp.code > 100 {
                        self.failover.remove(&key);
                    }
                }
                let owner = if resp.code >= 200 && !is_invite_owner(self.owners.get(&key)) {
                    self.owners.remove(&key)
                } else {
                    self.owners.get(&key).map(Owner::shallow)
                };
                match owner {
                    Some(Owner::Register { binding, web, web_req }) => {
                        self.on_register_response(now, binding, &web, &web_req, &resp)
                    }
                    Some(Owner::Invite { call }) => self.on_invite_response(now, call, &resp),
                    Some(Owner::Relay(r)) => self.on_relay_response(now, r, &resp),
                    Some(Owner::NonDialog { server, request, from }) => {
                        let tag = (resp.code > 100).then(|| self.token());
                        let body = resp.body.clone();
                        self.forward_response(now, &server, &request, &resp, from.other(), tag, None, body);
                    }
                    Some(Owner::Proxied { server, .. }) => self.relay_proxied_response(now, &server, &resp),
                    Some(Owner::Reanchor { call, leg, step }) => self.on_reanchor_response(now, call, leg, step, &resp),
                    Some(Owner::Probe(addr)) => {
                        if resp.code >= 200 && resp.code != 503 && self.hops.mark_up(addr) {
                            tracing::info!(target = %addr, code = resp.code, "IMS next-hop target answers again");
                        }
                    }
                    Some(Owner::Own) | None => {}
                }
            }
        }
    }

    fn on_timeout(&mut self, now: Instant) {
        self.tx.handle_timeout(now);
        for id in self.registrar.expired(now) {
            if let Some(b) = self.registrar.remove(id) {
                tracing::info!(aor = %b.aor, "registration expired");
                self.unshare_registration(&b);
                self.sync_signalling(now, b.conn);
            }
        }
        while let Some((id, timer)) = self.call_timers.pop_due(now) {
            match timer {
                CallTimer::Guard => {
                    // Only CANCELs arm the guard: the far end never finished the INVITE.
                    if let Some((key, req)) = self.calls.get(&id).and_then(|c| c.caller_invite()) {
                        if self.tx.is_pending(&key) {
                            self.respond(now, &key, &req, 487, "Request Terminated");
                        }
                    }
                    self.end_call(now, id, EndReason::Cancelled);
                }
                CallTimer::Reconnect => {
                    let Some(c) = self.calls.get(&id) else { continue };
                    let web = c.web_leg();
                    let gone = matches!(c.leg(web).flow, Flow::Web { conn } if !self.conns.contains_key(&conn));
                    if gone {
                        tracing::info!(call = id.0, "the browser did not come back; ending the call");
                        self.end_unless_taken(now, id, Some(web), EndReason::ConnectionLost);
                    }
                }
                CallTimer::SessionExpires => {
                    if !self.calls.contains_key(&id) {
                        continue;
                    }
                    tracing::info!(call = id.0, "session timer ran out without a refresh; ending the call");
                    self.end_unless_taken(now, id, None, EndReason::SessionExpired);
                }
            }
        }
        if self.next_probe.is_some_and(|t| t <= now) {
            self.probe_next_hops(now);
        }
        let (ask, overdue) = self.queries.due(now);
        for (query, ask) in ask {
            self.outputs.push_back(Output::StateQuery { query, ask });
        }
        for held in overdue {
            tracing::warn!(query = ?held.query, "the cluster's shared state did not answer in time");
            self.resume(now, held, None);
        }
        if self.next_sweep.is_some_and(|t| t <= now) {
            let tx = &self.tx;
            let failover = &mut self.failover;
            failover.retain(|k, _| tx.has_client(k));
            self.owners.retain(|k, o| !matches!(o, Owner::Own | Owner::Relay(_) | Owner::Proxied { .. } | Owner::Reanchor { .. }) || tx.has_client(k));
            let owners = &self.owners;
            self.proxied.retain(|_, c| owners.contains_key(c));
            self.next_sweep = None;
        }
    }

    /// Move transaction-layer events to the driver, reacting to failures.
    fn pump(&mut self, now: Instant) {
        while let Some(ev) = self.tx.poll_event() {
            match ev {
                Event::Transmit { flow, data } => self.outputs.push_back(Output::Transmit { flow, data }),
                Event::ClientFailed { key, cause } => self.on_client_failed(now, key, cause),
                Event::AckTimeout { key, code } => {
                    if (200..300).contains(&code) {
                        if let Some(&id) = self.invites.get(&key) {
                            tracing::warn!(call = id.0, "no ACK for 2xx; ending call");
                            self.hangup(now, id, EndReason::NoAck);
                        }
                    }
                }
            }
        }
        if self.next_sweep.is_none() && !self.owners.is_empty() {
            self.next_sweep = Some(now + Duration::from_secs(5));
        }
    }

    fn on_client_failed(&mut self, now: Instant, key: ClientKey, cause: FailureCause) {
        if self.fail_over(now, &key) {
            return;
        }
        let (code, reason) = match cause {
            FailureCause::Timeout => (408, "Request Timeout"),
            FailureCause::Transport => (503, "Service Unavailable"),
        };
        match self.owners.remove(&key) {
            Some(Owner::Register { web, web_req, .. }) => self.respond(now, &web, &web_req, code, reason),
            Some(Owner::Invite { call }) => {
                if let Some((k, r)) = self.calls.get(&call).and_then(|c| c.caller_invite()) {
                    self.respond(now, &k, &r, code, reason);
                    self.counters.call_failed(code);
                }
                self.end_call(now, call, EndReason::NoAnswer(code));
            }
            Some(Owner::Relay(r)) => {
                if let Some(c) = self.calls.get_mut(&r.call) {
                    if r.request.method == Method::Invite {
                        c.invite_pending = false;
                    }
                }
                self.respond(now, &r.server, &r.request, code, reason);
            }
            Some(Owner::NonDialog { server, request, .. }) => self.respond(now, &server, &request, code, reason),
            Some(Owner::Probe(addr)) => tracing::debug!(target = %addr, "next-hop probe unanswered; still down"),
            Some(Owner::Reanchor { call, .. }) => {
                tracing::warn!(call = call.0, code, "adopted call: a leg did not answer its re-INVITE; ending it");
                if let Some(c) = self.calls.get_mut(&call) {
                    c.invite_pending = false;
                }
                self.hangup(now, call, EndReason::ReanchorFailed(code));
            }
            Some(Owner::Proxied { server, forwarded, .. }) => {
                // The node holding the browser went between its last announcement and now.
                self.proxied.remove(&server);
                tracing::warn!(method = %forwarded.method.as_str(), "the node holding the browser did not take the request");
                let mut original = forwarded;
                original.headers.pop_front_value("Via");
                self.respond(now, &server, &original, 480, "Temporarily Unavailable");
            }
            Some(Owner::Own) | None => {}
        }
    }

    /// Moves a request outside a dialog whose target failed (timeout, unreachable, 503) to
    /// the next target that is up, as a new transaction (new branch, same request). The
    /// failed target is marked down until a probe finds it answering. Returns whether the
    /// request went again; `false` leaves the failure to the caller.
    fn fail_over(&mut self, now: Instant, key: &ClientKey) -> bool {
        let Some(mut f) = self.failover.remove(key) else { return false };
        if let Some(&failed) = f.tried.last() {
            if self.hops.mark_down(failed, now) {
                tracing::warn!(target = %failed, "IMS next-hop target failed; skipped until it answers a probe");
                self.counters.next_hop_down();
                if let Some(every) = self.cfg.next_hop_probe {
                    self.next_probe.get_or_insert(now + every);
                }
            }
        }
        // A caller who cancelled wants no second attempt.
        let cancelled = match self.owners.get(key) {
            Some(Owner::Invite { call }) => self.calls.get(call).is_none_or(|c| c.cancel_requested),
            _ => false,
        };
        let Some(next) = self.hops.next_untried(&f.tried).filter(|_| !cancelled) else { return false };
        let via = self.via_ims();
        f.request.headers.set("Via", &via);
        let flow = Flow::Ims { transport: self.cfg.ims_transport, remote: next };
        let Ok(new_key) = self.tx.send_request(now, &f.request, flow, reliable(flow)) else { return false };
        tracing::info!(target = %next, method = f.request.method.as_str(), "request moved to the next IMS next-hop target");
        f.tried.push(next);
        if let Some(owner) = self.owners.remove(key) {
            if let Owner::Invite { call } = &owner {
                if let Some(c) = self.calls.get_mut(call) {
                    c.b_invite_key = new_key.clone();
                    c.b.flow = flow;
                    if let CallState::Early { b_invite, .. } = &mut c.state {
                        *b_invite = Arc::new(f.request.clone());
                    }
                }
            }
            self.owners.insert(new_key.clone(), owner);
        }
        self.failover.insert(new_key, f);
        true
    }

    /// Remembers a request outside a dialog sent to a next-hop target, so that it can fail
    /// over (see [`B2bua::fail_over`]).
    fn track_failover(&mut self, key: &ClientKey, request: &Request, flow: Flow) {
        if let Flow::Ims { remote, .. } = flow {
            if self.hops.contains(remote) && self.hops.states().count() > 1 {
                self.failover.insert(key.clone(), Failover { request: request.clone(), tried: vec![remote] });
            }
        }
    }

    /// Sends an OPTIONS to every target marked down; one that answers (other than 503) is up
    /// again.
    fn probe_next_hops(&mut self, now: Instant) {
        self.next_probe = None;
        let down = self.hops.down();
        for addr in &down {
            let mut req = Request {
                method: Method::Options,
                uri: match Uri::parse(&format!("sip:{addr}")) {
                    Ok(u) => u,
                    Err(_) => continue,
                },
                version: "SIP/2.0".to_owned(),
                headers: Default::default(),
                body: Vec::new(),
            };
            let via = self.via_ims();
            req.headers.push("Via", &via);
            req.headers.push("Max-Forwards", "70");
            let tag = self.token();
            req.headers.push("From", format!("<sip:estuary@{}>;tag={tag}", self.cfg.ims_advertised));
            req.headers.push("To", format!("<sip:{addr}>"));
            req.headers.push("Call-ID", format!("{}@estuary", self.token()));
            req.headers.push("CSeq", "1 OPTIONS");
            let flow = Flow::Ims { transport: self.cfg.ims_transport, remote: *addr };
            if let Ok(k) = self.tx.send_request(now, &req, flow, reliable(flow)) {
                self.owners.insert(k, Owner::Probe(*addr));
            }
        }
        if let (false, Some(every)) = (down.is_empty(), self.cfg.next_hop_probe) {
            self.next_probe = Some(now + every);
        }
    }

    // ----- registration -------------------------------------------------------------------

    /// Whether `conn`'s source address already holds `registrations_per_source` bindings.
    fn source_registrations_full(&self, conn: ConnId) -> bool {
        let limit = self.cfg.registrations_per_source;
        let Some(ip) = self.conns.get(&conn).map(|c| c.peer.ip()) else { return false };
        limit > 0 && self.registrar.count_from(ip) >= limit
    }

    /// `looked_up`: the cluster's shared state was already asked about this REGISTER's dialog.
    fn on_register(&mut self, now: Instant, conn: ConnId, key: ServerKey, req: Request, looked_up: bool) {
        // validate() guarantees To, From and Call-ID.
        let (Ok(to), Ok(from), Ok(call_id)) = (req.headers.to(), req.headers.from(), req.headers.call_id()) else {
            return self.respond(now, &key, &req, 400, "Bad Request");
        };
        let contacts = match req.headers.contacts() {
            Ok(c) => c,
            Err(e) => return self.respond(now, &key, &req, 400, &e.reason),
        };
        let header_expires = req.headers.expires().ok().flatten();
        let mut web_contact = None;
        let mut star = false;
        for c in &contacts {
            match c {
                ContactValue::Star => star = true,
                ContactValue::Addr(na) if web_contact.is_none() => web_contact = Some(na.clone()),
                ContactValue::Addr(_) => {}
            }
        }
        if contacts.len() > 1 {
            // One browser registers one contact; several would need several gateway contacts.
            // The request is well formed (RFC 4475 §3.1.1.4 sends two), so this is policy: 403.
            return self.respond(now, &key, &req, 403, "One Contact Per REGISTER");
        }
        let asked = web_contact
            .as_ref()
            .and_then(|c| c.param("expires").flatten().and_then(|v| v.parse::<u32>().ok()))
            .or(header_expires)
            .unwrap_or(3600);
        // RFC 3261 §10.3 step 7: a non-zero expiry below our minimum is refused with 423 and
        // the minimum; zero (removal) is always allowed.
        if asked != 0 && asked < self.cfg.min_expires && web_contact.is_some() {
            let mut resp = self.local_response(&req, 423, "Interval Too Brief");
            resp.headers.push("Min-Expires", self.cfg.min_expires.to_string());
            if let Err(e) = self.tx.send_response(now, &key, &resp) {
                tracing::debug!(error = %e, "423 not sent");
            }
            return;
        }
        let requested = asked.min(self.cfg.max_expires);
        if self.registrar.find_dialog(conn, call_id).is_none() {
            let conns = &self.conns;
            if let Some(id) = self.registrar.find_left_behind(call_id, |c| conns.contains_key(&c)) {
                self.rebind(id, conn);
            }
        }
        let id = match self.registrar.find_dialog(conn, call_id) {
            Some(id) => id,
            // A dialog this connection has not registered: the browser may have made it over
            // a connection another node held (or this node before a restart).
            None if self.cfg.share_state && !looked_up => {
                let query = StateQuery::RegisterDialog { web_call_id: call_id.to_owned() };
                return self.hold(now, query, Flow::Web { conn }, key, req);
            }
            None if self.source_registrations_full(conn) => {
                return self.respond(now, &key, &req, 403, "Too Many Registrations From This Address");
            }
            None => {
                let token = self.token();
                let ims_call_id = format!("{}@{}", self.token(), self.cfg.ims_advertised.ip());
                let aor = to.uri.to_string();
                let contact = web_contact.clone();
                self.registrar.insert(|id| Binding {
                    id,
                    aor,
                    instance: None,
                    reg_id: None,
                    conn,
                    source: self.conns.get(&conn).map_or(std::net::Ipv4Addr::UNSPECIFIED.into(), |c| c.peer.ip()),
                    connected: true,
                    web_call_id: call_id.to_owned(),
                    web_contact: String::new(),
                    web_contact_uri: contact.map(|c| c.uri).unwrap_or_else(|| to.uri.clone()),
                    token,
                    ims_call_id,
                    ims_cseq: 0,
                    expires_at: None,
                    service_route: Vec::new(),
                    last_register: None,
                    adopted: false,
                })
            }
        };
        let via = self.via_ims();
        let ims = self.registered_host();
        let transport = self.cfg.ims_transport.via_token().to_ascii_lowercase();
        let Some(b) = self.registrar.get_mut(id) else { return };
        if let Some(c) = &web_contact {
            let mut shown = c.clone();
            shown.remove_param("expires");
            b.web_contact = shown.to_string();
            b.web_contact_uri = c.uri.clone();
            b.instance = c.param("+sip.instance").flatten().map(str::to_owned);
            b.reg_id = c.param("reg-id").flatten().map(str::to_owned);
        }
        b.ims_cseq += 1;
        let mut out = Request {
            method: Method::Register,
            uri: req.uri.clone(),
            version: "SIP/2.0".to_owned(),
            headers: Default::default(),
            body: Vec::new(),
        };
        let mut from_ims = from.clone();
        from_ims.set_tag(&b.token);
        out.headers.push("Via", &via);
        out.headers.push("Max-Forwards", self.cfg.max_forwards.to_string());
        out.headers.push("From", from_ims.to_string());
        out.headers.push("To", req.headers.get("To").unwrap_or_default().to_owned());
        out.headers.push("Call-ID", &b.ims_call_id);
        out.headers.push("CSeq", format!("{} REGISTER", b.ims_cseq));
        if star {
            out.headers.push("Contact", "*");
        } else if web_contact.is_some() {
            let mut c = format!("<sip:{}@{};transport={}>;expires={}", b.token, ims, transport, requested);
            if let Some(inst) = &b.instance {
                c.push_str(&format!(";+sip.instance={inst}"));
            }
            out.headers.push("Contact", &c);
        }
        // RFC 3327: terminating requests for this AoR come back through us, naming the binding
        // (over the transport the gateway uses toward the core, when it is not UDP).
        let path = match self.cfg.ims_transport {
            Transport::Udp => format!("<sip:{}@{};lr>", b.token, ims),
            _ => format!("<sip:{}@{};transport={};lr>", b.token, ims, transport),
        };
        out.headers.push("Path", path);
        copy_end_to_end(&req.headers, &mut out.headers, Side::Web);
        let supported = out.headers.values("Supported");
        if !supported.iter().any(|s| s.eq_ignore_ascii_case("path")) {
            out.headers.push("Supported", "path");
        }
        out.body = req.body.clone();
        b.last_register = Some(out.clone());
        let flow = self.ims_flow();
        match self.tx.send_request(now, &out, flow, reliable(flow)) {
            Ok(ckey) => {
                self.track_failover(&ckey, &out, flow);
                self.owners.insert(ckey, Owner::Register { binding: id, web: key, web_req: req });
            }
            Err(e) => {
                tracing::error!(error = %e, "REGISTER not sent");
                self.respond(now, &key, &req, 500, "Server Internal Error");
            }
        }
    }

    fn on_register_response(&mut self, now: Instant, id: BindingId, web: &ServerKey, web_req: &Request, resp: &Response) {
        if resp.code < 200 {
            return;
        }
        let conn = self.registrar.get(id).map(|b| b.conn);
        let mut contacts_for_web = Vec::new();
        if (200..300).contains(&resp.code) {
            let header_expires = resp.headers.expires().ok().flatten();
            let mut ours = None;
            for c in resp.headers.contacts().unwrap_or_default() {
                let ContactValue::Addr(na) = c else { continue };
                let Some(token) = na.uri.user.as_deref() else { continue };
                let Some(bid) = self.registrar.find_token(token) else { continue };
                let expires = na.param("expires").flatten().and_then(|v| v.parse::<u32>().ok()).or(header_expires);
                if bid == id {
                    ours = Some(expires.unwrap_or(0));
                }
                if let (Some(b), Some(e)) = (self.registrar.get(bid), expires) {
                    if e > 0 && !b.web_contact.is_empty() {
                        contacts_for_web.push(format!("{};expires={e}", b.web_contact));
                    }
                }
            }
            let service_route = resp.headers.values("Service-Route");
            match ours {
                Some(e) if e > 0 => {
                    self.registrar.set_expiry(id, now + Duration::from_secs(u64::from(e)));
                    if let Some(b) = self.registrar.get_mut(id) {
                        b.service_route = service_route;
                        // A refresh over a live connection makes the binding reachable again
                        // after the PCRF reported its signalling path lost.
                        b.connected = self.conns.contains_key(&b.conn);
                        tracing::info!(aor = %b.aor, expires = e, "registered");
                    }
                    self.share_registration(id, e);
                    self.adoption_accepted(now, id);
                }
                // Not listed (or expires=0): the binding is gone at the registrar.
                _ => {
                    if let Some(b) = self.registrar.get(id) {
                        if b.expires_at.is_some() || web_req.headers.contacts().is_ok_and(|c| !c.is_empty()) {
                            tracing::info!(aor = %b.aor, "deregistered");
                            if let Some(gone) = self.registrar.remove(id) {
                                self.unshare_registration(&gone);
                            }
                        }
                    }
                }
            }
            if let Some(conn) = conn {
                self.sync_signalling(now, conn);
            }
        }
        let tag = resp.headers.to().ok().and_then(|t| t.tag().map(str::to_owned));
        let mut out = response_to(web_req, resp.code, &resp.reason);
        if let Some(t) = tag {
            set_to_tag(&mut out, &t);
        }
        for c in &contacts_for_web {
            out.headers.push("Contact", c);
        }
        copy_end_to_end(&resp.headers, &mut out.headers, Side::Ims);
        out.body = resp.body.clone();
        let _ = self.tx.send_response(now, web, &out);
    }

    fn deregister(&mut self, now: Instant, id: BindingId) {
        let Some(b) = self.registrar.remove(id) else { return };
        self.unshare_registration(&b);
        self.sync_signalling(now, b.conn);
        let Some(mut reg) = b.last_register else { return };
        if b.expires_at.is_none() {
            return;
        }
        let via = self.via_ims();
        reg.headers.set("Via", &via);
        reg.headers.set("CSeq", format!("{} REGISTER", b.ims_cseq + 1));
        let contact = format!(
            "<sip:{}@{};transport={}>;expires=0",
            b.token,
            self.registered_host(),
            self.cfg.ims_transport.via_token().to_ascii_lowercase()
        );
        reg.headers.set("Contact", &contact);
        reg.headers.remove("Expires");
        tracing::info!(aor = %b.aor, "WebSocket closed; deregistering");
        let flow = self.ims_flow();
        if let Ok(k) = self.tx.send_request(now, &reg, flow, reliable(flow)) {
            self.owners.insert(k, Owner::Own);
        }
    }

    // ----- calls: setup -------------------------------------------------------------------

    fn on_web_invite(&mut self, now: Instant, flow: Flow, key: ServerKey, req: Request) {
        let Flow::Web { conn } = flow else { return };
        let binding = self.registrar_binding_for(now, conn, &req);
        if self.cfg.require_registration && binding.is_none() {
            self.counters.call_failed(403);
            return self.respond(now, &key, &req, 403, "Not Registered");
        }
        let (service_route, aor) = binding
            .and_then(|id| self.registrar.get(id))
            .map(|b| (b.service_route.clone(), Some(b.aor.clone())))
            .unwrap_or_default();
        self.respond(now, &key, &req, 100, "Trying");
        let Some(a) = self.uas_leg(&req, flow, Side::Web) else {
            return self.respond(now, &key, &req, 400, "Bad Dialog Headers");
        };
        let b = Leg {
            side: Side::Ims,
            flow: self.ims_flow(),
            transport: self.cfg.ims_transport,
            call_id: format!("{}@{}", self.token(), self.cfg.ims_advertised.ip()),
            local_tag: self.token(),
            remote_tag: None,
            local: a.remote.clone(),
            remote: a.local.clone(),
            remote_target: req.uri.to_string(),
            route_set: service_route,
            local_cseq: 0,
            invite_cseq: 1,
            contact: self.ims_contact(),
        };
        let mut extra = Vec::new();
        if let Some(aor) = aor {
            // TS 24.229 §5.2.6.3.3: the P-CSCF asserts the registered identity.
            extra.push(("P-Asserted-Identity", estuary_ims_profile::asserted_identity(&aor)));
        }
        // ... and starts the session's charging correlation: a fresh ICID.
        let icid = self.token();
        extra.push(("P-Charging-Vector", estuary_ims_profile::charging_vector(&icid, self.cfg.ims_advertised.ip())));
        self.start_call(now, key, req, a, b, binding, extra, Some(icid));
    }

    fn on_ims_invite(&mut self, now: Instant, flow: Flow, key: ServerKey, req: Request) {
        let Some(id) = self.target_binding(now, &req) else {
            return self.respond(now, &key, &req, 404, "Not Found");
        };
        let Some(binding) = self.registrar.get(id).cloned() else { return };
        let Some(info) = self.conns.get(&binding.conn).copied().filter(|_| binding.connected) else {
            return self.respond(now, &key, &req, 480, "Temporarily Unavailable");
        };
        self.respond(now, &key, &req, 100, "Trying");
        let Some(a) = self.uas_leg(&req, flow, Side::Ims) else {
            return self.respond(now, &key, &req, 400, "Bad Dialog Headers");
        };
        let b = Leg {
            side: Side::Web,
            flow: Flow::Web { conn: binding.conn },
            transport: info.transport,
            call_id: self.token(),
            local_tag: self.token(),
            remote_tag: None,
            local: a.remote.clone(),
            remote: a.local.clone(),
            remote_target: binding.web_contact_uri.to_string(),
            route_set: Vec::new(),
            local_cseq: 0,
            invite_cseq: 1,
            contact: self.web_contact(info.transport),
        };
        // The core's ICID, for the call's record (the header itself stays in the core).
        let icid = req.headers.get("P-Charging-Vector").and_then(estuary_ims_profile::icid_of);
        self.start_call(now, key, req, a, b, Some(id), Vec::new(), icid);
    }

    /// Leg A of a call from the INVITE that created it (RFC 3261 §12.1.1, UAS side).
    fn uas_leg(&mut self, req: &Request, flow: Flow, side: Side) -> Option<Leg> {
        let from = req.headers.from().ok()?;
        let to = req.headers.to().ok()?;
        let target = req
            .headers
            .contacts()
            .ok()
            .and_then(|cs| cs.into_iter().find_map(|c| match c {
                ContactValue::Addr(na) => Some(na.uri.to_string()),
                ContactValue::Star => None,
            }))
            .unwrap_or_else(|| from.uri.to_string());
        let transport = match flow {
            Flow::Web { conn } => self.conns.get(&conn).map_or(Transport::Ws, |c| c.transport),
            Flow::Ims { transport, .. } => transport,
        };
        let contact = match side {
            Side::Web => self.web_contact(transport),
            Side::Ims => self.ims_contact(),
        };
        Some(Leg {
            side,
            flow,
            transport,
            call_id: req.headers.call_id().ok()?.to_owned(),
            local_tag: self.token(),
            remote_tag: from.tag().map(str::to_owned),
            local: untagged(&to),
            remote: untagged(&from),
            remote_target: target,
            route_set: req.headers.values("Record-Route"),
            local_cseq: 0,
            invite_cseq: req.headers.cseq().ok()?.seq,
            contact,
        })
    }

    #[allow(clippy::too_many_arguments)]
    fn start_call(
        &mut self,
        now: Instant,
        key: ServerKey,
        req: Request,
        a: Leg,
        mut b: Leg,
        binding: Option<BindingId>,
        extra: Vec<(&str, String)>,
        icid: Option<String>,
    ) {
        let via = self.via_for(b.hop());
        let mut out = b.request(Method::Invite, &via, Some(1));
        if b.side == Side::Ims {
            // The browser addressed the callee; keep its Request-URI toward IMS.
            out.uri = req.uri.clone();
        }
        let mf = req.headers.max_forwards().ok().flatten().unwrap_or(70).saturating_sub(1).min(self.cfg.max_forwards);
        out.headers.set("Max-Forwards", mf.to_string());
        copy_end_to_end(&req.headers, &mut out.headers, a.side);
        for (name, value) in extra {
            out.headers.push(name, &value);
        }
        let mut sdp = SdpSession::new(self.cfg.sdp.clone(), self.rng.random(), self.keys.clone());
        if self.cfg.share_state {
            sdp.keep_ims_remote();
        }
        sdp.allow_video_transcoding(self.video_admissible(None, a.side));
        let mut ports = Vec::new();
        let admitted = rewrite_sdp(&mut sdp, &mut ports, &mut self.ports, a.side, &req.body, false)
            .and_then(|body| self.admit_transcoding(None, self.transcoding_needed(&sdp)).map(|channels| (body, channels)));
        let reserved = match admitted {
            Ok((body, channels)) => {
                out.body = body;
                channels
            }
            Err(e) => {
                self.ports.release(ports);
                tracing::info!(reason = %e.reason, status = e.status(), "offer refused");
                return self.refuse_sdp(now, &key, &req, &e);
            }
        };
        b.local_cseq = 1;
        let ckey = match self.tx.send_request(now, &out, b.flow, reliable(b.flow)) {
            Ok(k) => k,
            Err(e) => {
                tracing::error!(error = %e, "INVITE not sent");
                self.ports.release(ports);
                return self.respond(now, &key, &req, 500, "Server Internal Error");
            }
        };
        self.next_call += 1;
        let id = CallId(self.next_call);
        tracing::info!(call = id.0, from = ?a.side, "call started");
        self.dialogs.insert((a.side, a.call_id.clone(), a.local_tag.clone()), (id, LegIdx::A));
        self.dialogs.insert((b.side, b.call_id.clone(), b.local_tag.clone()), (id, LegIdx::B));
        self.invites.insert(key.clone(), id);
        if b.side == Side::Ims {
            self.track_failover(&ckey, &out, b.flow);
        }
        self.owners.insert(ckey.clone(), Owner::Invite { call: id });
        self.counters.call_started();
        let (web, ims) = if a.side == Side::Web { (&a, &b) } else { (&b, &a) };
        self.outputs.push_back(Output::CallStarted { call: id.0, web_call_id: web.call_id.clone(), ims_call_id: ims.call_id.clone() });
        if reserved > 0 {
            self.transcoding.insert(id, reserved);
        }
        let state = CallState::Early { a_invite: Arc::new(req), b_invite: Arc::new(out) };
        let mut call = Call::new(id, (a, b), state, (key, ckey), sdp, now);
        call.binding = binding;
        call.ports = ports;
        call.icid = icid;
        if self.cfg.policy_gate {
            call.authorization = Authorization::Awaiting;
        }
        self.calls.insert(id, Box::new(call));
    }

    fn on_invite_response(&mut self, now: Instant, id: CallId, resp: &Response) {
        let Some(call) = self.calls.get_mut(&id) else { return };
        let code = resp.code;
        if code < 200 {
            call.b_provisional = true;
        }
        let b_tag = resp.headers.to().ok().and_then(|t| t.tag().map(str::to_owned));
        let mut fresh = || token(&mut self.rng);
        let a_tag = b_tag.as_deref().map(|t| call.fork_tag(t, &mut fresh));
        if let (Some(t), Some(a_tag)) = (&b_tag, &a_tag) {
            if code < 300 && !(call.state.is_confirmed() && call.b.remote_tag.as_ref() != Some(t)) {
                call.b.remote_tag = Some(t.clone());
                if let Some(target) = contact_uri(&resp.headers) {
                    call.b.remote_target = target;
                }
                let mut rr = resp.headers.values("Record-Route");
                rr.reverse();
                call.b.route_set = rr;
                let key = (call.a.side, call.a.call_id.clone(), a_tag.clone());
                self.dialogs.insert(key, (id, LegIdx::A));
            }
        }
        let Some(call) = self.calls.get_mut(&id) else { return };
        if code < 200 {
            // A provisional answer after the call was answered (another fork's) is not relayed:
            // the caller's INVITE transaction has its final answer.
            if let Some((k, r)) = call.caller_invite().filter(|_| code > 100 && !call.cancel_requested) {
                let contact = call.a.contact.clone();
                let from = call_side(call, LegIdx::B);
                // Early media SDP (RFC 3960); a body we cannot use is dropped, not the 18x.
                let body = self.sdp_body(id, from, &resp.body, false).unwrap_or_else(|e| {
                    tracing::warn!(call = id.0, code, reason = %e.reason, "provisional SDP dropped");
                    Vec::new()
                });
                self.forward_response(now, &k, &r, resp, from, a_tag, Some(&contact), body);
            }
            if let Some(call) = self.calls.get(&id) {
                if call.cancel_requested && !call.cancel_sent {
                    self.send_cancel(now, id);
                }
            }
            return;
        }
        if code < 300 {
            let tag = b_tag.unwrap_or_default();
            if call.state.is_confirmed() || call.cancel_requested {
                // A second fork answered, or the caller cancelled as the callee answered
                // (the CANCEL/200 race of RFC 3261 §9.2): ACK this dialog, then end it.
                let first_answer = call.state.is_early();
                self.ack_and_bye(now, id, &tag, resp);
                if first_answer {
                    if let Some((k, r)) = self.calls.get(&id).and_then(|c| c.caller_invite()) {
                        if self.tx.is_pending(&k) {
                            self.respond(now, &k, &r, 487, "Request Terminated");
                        }
                    }
                    self.end_call(now, id, EndReason::Cancelled);
                }
                return;
            }
            let from = call_side(call, LegIdx::B);
            let body = match self.sdp_body(id, from, &resp.body, true) {
                Ok(b) => b,
                Err(e) => {
                    // The callee's SDP is unusable: end its dialog, refuse the caller's INVITE.
                    tracing::warn!(call = id.0, reason = %e.reason, "2xx SDP refused; ending the call");
                    self.ack_and_bye(now, id, &tag, resp);
                    if let Some((k, r)) = self.calls.get(&id).and_then(|c| c.caller_invite()) {
                        self.refuse_sdp(now, &k, &r, &e);
                    }
                    self.counters.call_failed(e.status());
                    self.end_call(now, id, EndReason::SdpRefused(e.status()));
                    return;
                }
            };
            let Some(call) = self.calls.get_mut(&id) else { return };
            // Closed policy: the answer waits for the PCRF, when there is a plan to authorize
            // (a 2xx carrying an offer settles none until the ACK, so it cannot wait).
            if matches!(call.authorization, Authorization::Awaiting) && call.media_version > 0 {
                tracing::info!(call = id.0, "answer held for the PCRF's decision");
                call.authorization = Authorization::Held(Box::new(HeldAnswer { response: resp.clone(), a_tag, body }));
                return;
            }
            self.relay_answer(now, id, resp, a_tag, body);
            return;
        }
        // 3xx-6xx: the transaction has ACKed it; relay and end the call.
        if let Some((k, r)) = call.caller_invite() {
            let from = call_side(call, LegIdx::B);
            let tag = a_tag.unwrap_or_else(|| call.a.local_tag.clone());
            self.counters.call_failed(code);
            call.sdp.reject_pending();
            self.forward_response(now, &k, &r, resp, from, Some(tag), None, Vec::new());
            self.end_call(now, id, EndReason::Rejected(code));
        }
    }

    /// Relay the callee's 2xx to the caller: the call is answered. Both INVITEs go, after this
    /// last answer to the caller.
    fn relay_answer(&mut self, now: Instant, id: CallId, resp: &Response, a_tag: Option<String>, body: Vec<u8>) {
        let Some(call) = self.calls.get_mut(&id) else { return };
        let from = call_side(call, LegIdx::B);
        let CallState::Early { a_invite: r, .. } = std::mem::replace(&mut call.state, CallState::Confirmed) else { return };
        call.answered = Some(now);
        self.call_timers.set(&(id, CallTimer::SessionExpires), session_expiry(now, &resp.headers));
        if let Some(t) = &a_tag {
            call.a.local_tag = t.clone();
        }
        call.ack_duty = Some(AckDuty { leg: LegIdx::B, cseq: call.b.invite_cseq });
        let k = call.a_invite_key.clone();
        let contact = call.a.contact.clone();
        tracing::info!(call = id.0, "call answered");
        self.forward_response(now, &k, &r, resp, from, a_tag, Some(&contact), body);
        self.share_call(id, true);
    }

    /// Reports an answered call for the cluster's shared state (`share_state`); `claim`: it
    /// was answered or taken over here just now (see `SharedCall::claim`).
    fn share_call(&mut self, id: CallId, claim: bool) {
        if !self.cfg.share_state {
            return;
        }
        if let Some(shared) = self.shared_call(id) {
            self.outputs.push_back(Output::CallShared(Box::new(SharedCall { claim, ..shared })));
        }
    }

    /// The token of binding `id`: how the shared state names it.
    fn binding_token(&self, id: Option<BindingId>) -> Option<String> {
        id.and_then(|b| self.registrar.get(b)).map(|b| b.token.clone())
    }

    /// Call `id` as the cluster's shared state keeps it.
    fn shared_call(&self, id: CallId) -> Option<SharedCall> {
        let c = self.calls.get(&id)?;
        Some(SharedCall {
            call: id.0,
            legs: [c.a.clone(), c.b.clone()],
            ports: c.ports.clone(),
            icid: c.icid.clone(),
            binding: self.binding_token(c.binding),
            ims_sdp: c.sdp.ims_remote_without_keys(),
            rx_session: None,
            started: c.started,
            answered: c.answered.unwrap_or(c.started),
            claim: false,
            handed_over: false,
        })
    }

    /// The policy function's word on a call (see [`PolicyDecision`]).
    fn on_policy(&mut self, now: Instant, id: CallId, decision: PolicyDecision<'_>) {
        let Some(call) = self.calls.get_mut(&id) else { return };
        match decision {
            PolicyDecision::Authorized => {
                if let Authorization::Held(held) = std::mem::replace(&mut call.authorization, Authorization::Granted) {
                    tracing::info!(call = id.0, "PCRF authorized; relaying the held answer");
                    let HeldAnswer { response, a_tag, body } = *held;
                    self.relay_answer(now, id, &response, a_tag, body);
                }
            }
            PolicyDecision::Refused { reason } => {
                let held = match std::mem::take(&mut call.authorization) {
                    Authorization::Held(h) => Some(h),
                    _ => None,
                };
                tracing::warn!(call = id.0, reason, "PCRF refused the media; ending the call");
                if let Some(held) = &held {
                    self.ack_and_bye(now, id, &held.callee_tag(), &held.response);
                }
                let status = match self.calls.get(&id).and_then(|c| c.caller_invite()) {
                    Some((k, r)) if self.tx.is_pending(&k) => {
                        let status = self.refuse_for_policy(now, &k, &r, reason);
                        self.counters.call_failed(status);
                        Some(status)
                    }
                    _ => None,
                };
                if held.is_some() {
                    self.end_call(now, id, EndReason::PolicyRefused(status));
                } else {
                    // Early (a 183 settled the plan): cancel the callee; its final response
                    // ends the call. Answered (open until now, or a 2xx offer): BYE both.
                    self.hangup(now, id, EndReason::PolicyRefused(status));
                }
            }
            PolicyDecision::BearerLost => {
                tracing::warn!(call = id.0, "PCRF reported the bearer lost; ending the call");
                self.hangup(now, id, EndReason::Media(ReleaseCause::MediaBearerLoss));
            }
            PolicyDecision::Aborted => {
                tracing::warn!(call = id.0, "PCRF aborted the session; ending the call");
                self.hangup(now, id, EndReason::PolicyAborted);
            }
            PolicyDecision::OutOfCredit => {
                tracing::warn!(call = id.0, "PCRF reported the subscriber out of credit; ending the call");
                self.hangup(now, id, EndReason::OutOfCredit);
            }
        }
    }

    /// Refuse the caller's INVITE because the PCRF did not authorize its media: 580
    /// Precondition Failure when the caller uses preconditions (RFC 3312 §5.1.1; TS 24.229
    /// §5.2.7.2), else 503; with a Warning giving the reason. Returns the status sent.
    fn refuse_for_policy(&mut self, now: Instant, key: &ServerKey, req: &Request, reason: &str) -> u16 {
        let preconditions = ["Require", "Supported"]
            .iter()
            .flat_map(|h| req.headers.values(h))
            .flat_map(|v| v.split(',').map(|t| t.trim().to_ascii_lowercase()).collect::<Vec<_>>())
            .any(|t| t == "precondition");
        let (status, phrase) = if preconditions { (580, "Precondition Failure") } else { (503, "Service Unavailable") };
        let mut resp = self.local_response(req, status, phrase);
        resp.headers.push("Warning", warning(reason));
        if let Err(err) = self.tx.send_response(now, key, &resp) {
            tracing::debug!(error = %err, "policy refusal not sent");
        }
        status
    }

    fn on_2xx_retransmission(&mut self, key: &ClientKey) {
        let call = match self.owners.get(key) {
            Some(Owner::Invite { call }) => *call,
            Some(Owner::Relay(r)) => r.call,
            Some(Owner::Reanchor { call, .. }) => *call,
            _ => return,
        };
        if let Some((leg, bytes)) = self.calls.get(&call).and_then(|c| c.last_ack.clone()) {
            let flow = self.calls.get(&call).map(|c| c.leg(leg).flow);
            if let Some(flow) = flow {
                self.tx.send_stateless(flow, bytes);
            }
        }
    }

    // ----- calls: CANCEL, ACK, in-dialog ----------------------------------------------

    fn on_cancel(&mut self, now: Instant, key: ServerKey, cancels: Option<ServerKey>, req: &Request) {
        let Some(invite) = cancels else {
            return self.respond(now, &key, req, 481, "Call/Transaction Does Not Exist");
        };
        self.respond(now, &key, req, 200, "OK");
        if let Some(&id) = self.invites.get(&invite) {
            self.cancel_call(now, id);
        } else if let Some(client) = self.proxied.remove(&invite) {
            self.cancel_proxied(now, &client);
        }
    }

    /// Leg A gave up before the answer: cancel leg B once a provisional allows it (RFC 3261
    /// §9.1), and guard against a far end that never finishes the INVITE.
    fn cancel_call(&mut self, now: Instant, id: CallId) {
        let timeout = self.cfg.timers.timeout();
        let Some(call) = self.calls.get_mut(&id) else { return };
        if !call.state.is_early() || call.cancel_requested {
            return;
        }
        if let Authorization::Held(held) = std::mem::take(&mut call.authorization) {
            // The callee answered and the answer waits for the PCRF: too late to cancel, so
            // acknowledge and end its dialog, and the caller's INVITE gets its 487 here.
            let reason = *call.end_reason.get_or_insert(EndReason::Cancelled);
            self.ack_and_bye(now, id, &held.callee_tag(), &held.response);
            if let Some((k, r)) = self.calls.get(&id).and_then(|c| c.caller_invite()) {
                if self.tx.is_pending(&k) {
                    self.respond(now, &k, &r, 487, "Request Terminated");
                }
            }
            return self.end_call(now, id, reason);
        }
        call.end_reason.get_or_insert(EndReason::Cancelled);
        call.cancel_requested = true;
        self.call_timers.set(&(id, CallTimer::Guard), Some(now + timeout));
        if call.b_provisional {
            self.send_cancel(now, id);
        }
    }

    fn send_cancel(&mut self, now: Instant, id: CallId) {
        let Some(call) = self.calls.get_mut(&id) else { return };
        call.cancel_sent = true;
        // RFC 3261 §9.1: same Request-URI, Call-ID, From, To, CSeq number and top Via as the
        // INVITE, and the same Route set.
        let CallState::Early { b_invite: inv, .. } = &call.state else { return };
        let cancel = cancel_for(inv, call.b.invite_cseq, self.cfg.user_agent.as_deref());
        let flow = call.b.flow;
        if let Ok(k) = self.tx.send_request(now, &cancel, flow, reliable(flow)) {
            self.owners.insert(k, Owner::Own);
        }
    }

    fn on_ack(&mut self, now: Instant, side: Side, req: Request) {
        let _ = now;
        let Some((id, idx)) = self.dialog_of(side, &req) else {
            self.counters.dropped(side);
            return;
        };
        let hop = match self.calls.get(&id) {
            Some(call) => match &call.ack_duty {
                Some(duty) if duty.leg == idx.other() => call.leg(duty.leg).hop(),
                _ => return,
            },
            None => return,
        };
        let via = self.via_for(hop);
        let Some(call) = self.calls.get_mut(&id) else { return };
        let Some(duty) = call.ack_duty.take() else { return };
        let leg = call.leg_mut(duty.leg);
        let mut ack = leg.request(Method::Ack, &via, Some(duty.cseq));
        // The answer to a 2xx offer (delayed offer, RFC 3261 §13.2.1) rides in the ACK.
        let body = match rewrite_sdp(&mut call.sdp, &mut call.ports, &mut self.ports, side, &req.body, true) {
            Ok(b) => b,
            Err(e) => {
                tracing::warn!(call = id.0, reason = %e.reason, "ACK SDP refused; ending the call");
                let leg = call.leg_mut(duty.leg);
                self.tx.send_stateless(leg.flow, ack.to_bytes());
                return self.hangup(now, id, EndReason::SdpRefused(e.status()));
            }
        };
        let leg = call.leg_mut(duty.leg);
        if !body.is_empty() {
            ack.headers.push("Content-Type", "application/sdp");
            ack.body = body;
        }
        let bytes = ack.to_bytes();
        let flow = leg.flow;
        call.last_ack = Some((duty.leg, bytes.clone()));
        self.tx.send_stateless(flow, bytes);
        self.sync_media(id);
    }

    /// `looked_up`: the cluster's shared state was already asked about this dialog.
    fn on_in_dialog(&mut self, now: Instant, flow: Flow, key: ServerKey, req: Request, looked_up: bool) {
        let side = side_of(flow);
        let Some((id, idx)) = self.dialog_of(side, &req) else {
            // A browser that reconnected here after its node died goes on with its call.
            if let (Flow::Web { .. }, true, false, Ok(call_id)) = (flow, self.cfg.share_state, looked_up, req.headers.call_id()) {
                let query = StateQuery::Dialog { call_id: call_id.to_owned() };
                return self.hold(now, query, flow, key, req);
            }
            return self.respond(now, &key, &req, 481, "Call/Transaction Does Not Exist");
        };
        if let Flow::Web { conn } = flow {
            self.follow_browser(id, idx, conn);
        }
        if req.method == Method::Bye {
            self.respond(now, &key, &req, 200, "OK");
            tracing::info!(call = id.0, by = ?side, "BYE");
            return self.hangup_with(now, id, Some(idx), EndReason::Bye(side));
        }
        if req.method == Method::Info && is_picture_fast_update(&req) {
            // RFC 5168 asks the video sender toward this leg for a keyframe: that sender is
            // the gateway (its encoder, or its relay of the other leg's video, which it asks
            // in that leg's own terms), so the INFO ends here.
            self.respond(now, &key, &req, 200, "OK");
            self.outputs.push_back(Output::KeyframeRequested { call: id.0, from: side });
            return;
        }
        let Some(call) = self.calls.get_mut(&id) else { return };
        if req.method == Method::Invite {
            if call.invite_pending {
                return self.respond(now, &key, &req, 491, "Request Pending");
            }
            call.invite_pending = true;
        }
        if matches!(req.method, Method::Invite | Method::Update) {
            if let Some(target) = contact_uri(&req.headers) {
                call.leg_mut(idx).remote_target = target;
            }
        }
        // Offers (and PRACK answers) are rewritten for the other leg; a body the SDP engine
        // refuses is answered here and goes no further (RFC 3261 §14.2: 488 keeps the old
        // session). INFO and MESSAGE bodies are not SDP and cross unchanged.
        let session = matches!(req.method, Method::Invite | Method::Update | Method::Prack);
        let body = if session {
            let video = self.video_admissible(Some(id), side);
            let call = self.calls.get_mut(&id).expect("looked up above");
            call.sdp.allow_video_transcoding(video);
            let rewritten = rewrite_sdp(&mut call.sdp, &mut call.ports, &mut self.ports, side, &req.body, false);
            let admitted = match rewritten {
                Ok(b) => {
                    let needed = self.transcoding_needed(&self.calls.get(&id).expect("looked up above").sdp);
                    match self.admit_transcoding(Some(id), needed) {
                        Ok(channels) => {
                            self.reserve_transcoding(id, channels);
                            Ok(b)
                        }
                        Err(e) => {
                            self.calls.get_mut(&id).expect("looked up above").sdp.reject_pending();
                            Err(e)
                        }
                    }
                }
                Err(e) => Err(e),
            };
            match admitted {
                Ok(b) => b,
                Err(e) => {
                    let call = self.calls.get_mut(&id).expect("looked up above");
                    if req.method == Method::Invite {
                        call.invite_pending = false;
                    }
                    tracing::info!(call = id.0, reason = %e.reason, "in-dialog SDP refused");
                    return self.refuse_sdp(now, &key, &req, &e);
                }
            }
        } else {
            req.body.clone()
        };
        self.sync_media(id);
        let other = idx.other();
        let Some(hop) = self.calls.get(&id).map(|c| c.leg(other).hop()) else { return };
        let via = self.via_for(hop);
        let Some(call) = self.calls.get_mut(&id) else { return };
        let leg = call.leg_mut(other);
        let mut out = leg.request(req.method.clone(), &via, None);
        if req.method == Method::Invite {
            leg.invite_cseq = leg.local_cseq;
        }
        copy_end_to_end(&req.headers, &mut out.headers, side);
        if req.method == Method::Prack {
            // RFC 3262 §7.2: RAck names the INVITE by its CSeq on this leg.
            if let Some(rack) = req.headers.get("RAck") {
                let rseq = rack.split_whitespace().next().unwrap_or("1");
                out.headers.push("RAck", format!("{rseq} {} INVITE", leg.invite_cseq));
            }
        }
        set_body(&mut out.headers, &mut out.body, body);
        let flow = leg.flow;
        match self.tx.send_request(now, &out, flow, reliable(flow)) {
            Ok(k) => {
                self.owners.insert(k, Owner::Relay(Relayed { call: id, from: idx, server: key, request: req }));
                // The shared copy follows the leg's CSeq (a node taking the call over goes on
                // from it); in-dialog requests are rare next to packets.
                if self.calls.get(&id).is_some_and(|c| c.state.is_confirmed()) {
                    self.share_call(id, false);
                }
            }
            Err(_) => self.respond(now, &key, &req, 500, "Server Internal Error"),
        }
    }

    fn on_relay_response(&mut self, now: Instant, r: Relayed, resp: &Response) {
        let Some(call) = self.calls.get_mut(&r.call) else {
            return;
        };
        let other = r.from.other();
        let is_invite = r.request.method == Method::Invite;
        if resp.code >= 200 && is_invite {
            call.invite_pending = false;
            if resp.code < 300 {
                call.ack_duty = Some(AckDuty { leg: other, cseq: call.leg(other).invite_cseq });
            }
        }
        if (200..300).contains(&resp.code) && matches!(r.request.method, Method::Invite | Method::Update) {
            if let Some(target) = contact_uri(&resp.headers) {
                call.leg_mut(other).remote_target = target;
            }
            // A re-INVITE or UPDATE answered with 2xx refreshes the session (RFC 4028 §10);
            // its Session-Expires sets the next interval, its absence turns the timer off.
            self.call_timers.set(&(r.call, CallTimer::SessionExpires), session_expiry(now, &resp.headers));
        }
        let dialog_response = matches!(r.request.method, Method::Invite | Method::Update) && resp.code > 100;
        let contact = dialog_response.then(|| call.leg(r.from).contact.clone());
        let from = call.leg(other).side;
        let session = matches!(r.request.method, Method::Invite | Method::Update | Method::Prack);
        let body = if !session {
            resp.body.clone()
        } else if resp.code >= 300 {
            // The offer this request carried was refused: the old session stays (RFC 3264 §8).
            if call.sdp.pending_offer() == Some(sdp_side(call.leg(r.from).side)) {
                call.sdp.reject_pending();
                // A reservation for the refused offer goes; the old plan's channels stay.
                let held = call.sdp.plan().map_or(0, |p| transcoded_streams(p, self.video_cost));
                self.set_transcoding(r.call, held);
            }
            Vec::new()
        } else if resp.code > 100 {
            let completes = resp.code >= 200;
            // A 2xx may carry an offer (to an INVITE without one).
            let video = self.video_admissible(Some(r.call), from);
            let Some(call) = self.calls.get_mut(&r.call) else { return };
            call.sdp.allow_video_transcoding(video);
            match rewrite_sdp(&mut call.sdp, &mut call.ports, &mut self.ports, from, &resp.body, completes) {
                Ok(b) => b,
                Err(e) if completes => {
                    tracing::warn!(call = r.call.0, reason = %e.reason, "SDP in a mid-call 2xx refused; ending the call");
                    self.refuse_sdp(now, &r.server, &r.request, &e);
                    return self.hangup(now, r.call, EndReason::SdpRefused(e.status()));
                }
                Err(e) => {
                    tracing::warn!(call = r.call.0, reason = %e.reason, "provisional SDP dropped");
                    Vec::new()
                }
            }
        } else {
            Vec::new()
        };
        self.sync_media(r.call);
        self.forward_response(now, &r.server, &r.request, resp, from, None, contact.as_deref(), body);
    }

    // ----- calls: teardown ----------------------------------------------------------------

    /// End a call from inside: BYE (or CANCEL) every leg that is up, then forget it.
    fn hangup(&mut self, now: Instant, id: CallId, reason: EndReason) {
        self.hangup_with(now, id, None, reason)
    }

    /// End a call for `reason`; `except` is the leg that already ended its side (it sent BYE
    /// or vanished). BYEs carry the release cause as their Reason when the media plane made
    /// the gateway end the call.
    fn hangup_with(&mut self, now: Instant, id: CallId, except: Option<LegIdx>, reason: EndReason) {
        let cause = match reason {
            EndReason::Media(cause) => Some(cause),
            // An aborted Rx session means the IP-CAN session, so every bearer, is gone. A lost
            // signalling bearer has no cause of its own in TS 24.229 §7.2A.18: the bearer is.
            EndReason::PolicyAborted | EndReason::SignallingLost => Some(ReleaseCause::MediaBearerLoss),
            _ => None,
        };
        let Some(call) = self.calls.get_mut(&id) else { return };
        call.end_reason.get_or_insert(reason);
        let confirmed = call.state.is_confirmed();
        for idx in [LegIdx::A, LegIdx::B] {
            if Some(idx) == except {
                continue;
            }
            let Some(call) = self.calls.get(&id) else { return };
            let leg = call.leg(idx);
            if confirmed && leg.remote_tag.is_some() {
                self.send_bye(now, id, idx, cause);
            } else if !confirmed && idx == LegIdx::B {
                // Early: the caller's side is gone; cancel the callee's side and wait for the
                // INVITE to finish (its final response ends the call).
                self.cancel_call(now, id);
                return;
            } else if let Some((k, r)) = call.caller_invite().filter(|_| idx == LegIdx::A) {
                if self.tx.is_pending(&k) {
                    self.respond(now, &k, &r, 487, "Request Terminated");
                }
            }
        }
        self.end_call(now, id, reason);
    }

    /// Binding `id`'s browser is back over connection `conn`: the binding moves there, and
    /// the calls it left waiting follow it.
    fn rebind(&mut self, id: BindingId, conn: ConnId) {
        let Some(info) = self.conns.get(&conn).copied() else { return };
        let Some(old) = self.registrar.get(id).map(|b| b.conn) else { return };
        self.registrar.move_to(id, conn, info.peer.ip());
        let waiting: Vec<(CallId, LegIdx)> = self
            .calls
            .values()
            .filter(|c| c.binding == Some(id))
            .filter_map(|c| [LegIdx::A, LegIdx::B].into_iter().find(|&i| c.leg(i).flow == Flow::Web { conn: old }).map(|i| (c.id, i)))
            .collect();
        for (call, idx) in waiting {
            self.follow_browser(call, idx, conn);
        }
        tracing::info!(binding = id.0, "the browser is back over a new connection");
    }

    /// Leg `idx` of call `id` faces a browser now on `conn`: when its connection is gone, the
    /// leg moves there and the call stops waiting.
    fn follow_browser(&mut self, id: CallId, idx: LegIdx, conn: ConnId) {
        let Some(info) = self.conns.get(&conn).copied() else { return };
        let conns = &self.conns;
        let Some(call) = self.calls.get_mut(&id) else { return };
        let leg = call.leg_mut(idx);
        let Flow::Web { conn: old } = leg.flow else { return };
        if old == conn || conns.contains_key(&old) {
            return;
        }
        leg.flow = Flow::Web { conn };
        leg.transport = info.transport;
        self.call_timers.set(&(id, CallTimer::Reconnect), None);
        tracing::info!(call = id.0, "the call follows its browser to a new connection");
    }

    /// Reports an active registration for the cluster's shared state (`share_state`).
    fn share_registration(&mut self, id: BindingId, expires_in: u32) {
        if !self.cfg.share_state {
            return;
        }
        let Some(b) = self.registrar.get(id) else { return };
        let shared = SharedRegistration {
            token: b.token.clone(),
            aor: b.aor.clone(),
            instance: b.instance.clone(),
            reg_id: b.reg_id.clone(),
            web_contact: b.web_contact.clone(),
            service_route: b.service_route.clone(),
            web_call_id: b.web_call_id.clone(),
            ims_call_id: b.ims_call_id.clone(),
            ims_cseq: b.ims_cseq,
            source: b.source,
            expires_in,
        };
        self.outputs.push_back(Output::RegistrationShared(Box::new(shared)));
    }

    /// Reports a shared registration gone (one that was never active was never shared).
    fn unshare_registration(&mut self, b: &Binding) {
        if self.cfg.share_state && b.expires_at.is_some() {
            self.outputs.push_back(Output::RegistrationRemoved { token: b.token.clone(), web_call_id: b.web_call_id.clone() });
        }
    }

    /// Reports the connection's signalling path Up when it first carries an active, reachable
    /// registration and Down when it no longer does (`signalling_policy` only). A closed
    /// connection reports Down where it closes.
    fn sync_signalling(&mut self, now: Instant, conn: ConnId) {
        if !self.cfg.signalling_policy {
            return;
        }
        let Some(info) = self.conns.get(&conn).copied() else { return };
        // A browser named only by X-Forwarded-For has no port: its connection cannot be
        // described as a 5-tuple.
        if info.peer.port() == 0 {
            return;
        }
        let identity = self
            .registrar
            .on_conn(conn)
            .into_iter()
            .filter_map(|id| self.registrar.get(id))
            .find(|b| b.connected && b.is_active(now))
            .map(|b| b.aor.clone());
        let event = match (info.signalling_up, identity) {
            (false, Some(identity)) => SignallingPath::Up { conn, identity, browser: info.peer, local: info.local },
            (true, None) => SignallingPath::Down { conn },
            _ => return,
        };
        if let Some(c) = self.conns.get_mut(&conn) {
            c.signalling_up = matches!(event, SignallingPath::Up { .. });
        }
        self.outputs.push_back(Output::SignallingPath(event));
    }

    /// The PCRF says the connection's signalling bearer is gone (TS 23.228 §5.2.2.6): its
    /// calls end, and its bindings stay registered but answer 480 until refreshed.
    fn on_signalling_lost(&mut self, now: Instant, conn: ConnId) {
        for id in self.registrar.on_conn(conn) {
            if let Some(b) = self.registrar.get_mut(id) {
                b.connected = false;
            }
        }
        let flow = Flow::Web { conn };
        let calls: Vec<CallId> = self.calls.values().filter(|c| c.a.flow == flow || c.b.flow == flow).map(|c| c.id).collect();
        for id in calls {
            tracing::warn!(call = id.0, "PCRF reported the signalling path lost; ending the call");
            self.hangup(now, id, EndReason::SignallingLost);
        }
        self.sync_signalling(now, conn);
    }

    /// Ask the IMS leg's video sender for a keyframe with an INFO (RFC 5168 §3), once the
    /// dialog is confirmed and at most once a second; the answer is not waited for.
    fn send_picture_fast_update(&mut self, now: Instant, id: CallId) {
        let Some(call) = self.calls.get(&id) else { return };
        let idx = call.web_leg().other();
        let due = call.fast_update_sent.is_none_or(|t| now.saturating_duration_since(t) >= FAST_UPDATE_INTERVAL);
        if !call.state.is_confirmed() || call.leg(idx).remote_tag.is_none() || !due {
            return;
        }
        let hop = call.leg(idx).hop();
        let via = self.via_for(hop);
        let Some(call) = self.calls.get_mut(&id) else { return };
        call.fast_update_sent = Some(now);
        let leg = call.leg_mut(idx);
        let mut info = leg.request(Method::Info, &via, None);
        let flow = leg.flow;
        if let Some(ua) = &self.cfg.user_agent {
            info.headers.push("User-Agent", ua);
        }
        info.headers.push("Content-Type", MEDIA_CONTROL);
        info.body = PICTURE_FAST_UPDATE.as_bytes().to_vec();
        if let Ok(k) = self.tx.send_request(now, &info, flow, reliable(flow)) {
            self.counters.fast_update_sent();
            self.owners.insert(k, Owner::Own);
        }
    }

    fn send_bye(&mut self, now: Instant, id: CallId, idx: LegIdx, cause: Option<ReleaseCause>) {
        let Some(hop) = self.calls.get(&id).map(|c| c.leg(idx).hop()) else { return };
        let via = self.via_for(hop);
        let Some(call) = self.calls.get_mut(&id) else { return };
        let leg = call.leg_mut(idx);
        let mut bye = leg.request(Method::Bye, &via, None);
        let flow = leg.flow;
        if let Some(ua) = &self.cfg.user_agent {
            bye.headers.push("User-Agent", ua);
        }
        if let Some(cause) = cause {
            bye.headers.push("Reason", cause.reason_value());
        }
        if let Ok(k) = self.tx.send_request(now, &bye, flow, reliable(flow)) {
            self.owners.insert(k, Owner::Own);
        }
    }

    /// ACK a 2xx on leg B for the dialog with B's tag `b_tag`, then BYE it.
    fn ack_and_bye(&mut self, now: Instant, id: CallId, b_tag: &str, resp: &Response) {
        let Some(call) = self.calls.get(&id) else { return };
        let mut leg = call.b.clone();
        leg.remote_tag = Some(b_tag.to_owned());
        if let Some(t) = contact_uri(&resp.headers) {
            leg.remote_target = t;
        }
        let mut rr = resp.headers.values("Record-Route");
        rr.reverse();
        leg.route_set = rr;
        let cseq = leg.invite_cseq;
        let via = self.via_for(leg.hop());
        let mut ack = leg.request(Method::Ack, &via, Some(cseq));
        self.stamp(&mut ack.headers, "User-Agent");
        self.tx.send_stateless(leg.flow, ack.to_bytes());
        let via = self.via_for(leg.hop());
        let mut bye = leg.request(Method::Bye, &via, None);
        self.stamp(&mut bye.headers, "User-Agent");
        if let Ok(k) = self.tx.send_request(now, &bye, leg.flow, reliable(leg.flow)) {
            self.owners.insert(k, Owner::Own);
        }
    }

    /// Forgets a call and reports it ended; `reason` unless an earlier one was recorded.
    fn end_call(&mut self, now: Instant, id: CallId, reason: EndReason) {
        self.transcoding.remove(&id);
        let Some(call) = self.calls.remove(&id) else { return };
        self.call_timers.set(&(id, CallTimer::Guard), None);
        self.call_timers.set(&(id, CallTimer::SessionExpires), None);
        self.call_timers.set(&(id, CallTimer::Reconnect), None);
        if call.media_version > 0 {
            self.outputs.push_back(Output::MediaEnd { call: id.0 });
        }
        let reason = call.end_reason.unwrap_or(reason);
        let (web, ims) = if call.a.side == Side::Web { (&call.a, &call.b) } else { (&call.b, &call.a) };
        let summary = CallSummary {
            caller: call.a.side,
            from: name_addr_uri(&call.a.remote),
            to: name_addr_uri(&call.a.local),
            web_call_id: web.call_id.clone(),
            ims_call_id: ims.call_id.clone(),
            started: call.started,
            answered: call.answered,
            ended: now,
            status: if call.answered.is_some() { Some(200) } else { reason.status() },
            reason,
            media: call.media_version > 0,
            icid: call.icid.clone(),
            video_dropped: call.sdp.video_dropped(),
        };
        tracing::info!(call = id.0, reason = reason.as_str(), "call ended");
        // A call handed over stays shared: its copy is the next node's to take.
        if self.cfg.share_state && summary.answered.is_some() && reason != EndReason::HandedOver {
            let binding = self.binding_token(call.binding);
            self.outputs.push_back(Output::CallUnshared { call: id.0, dialogs: [call.a.call_id.clone(), call.b.call_id.clone()], binding });
        }
        self.outputs.push_back(Output::CallEnded { call: id.0, summary: Box::new(summary) });
        self.ports.release(call.ports);
        // The call's dialog keys: each leg's own tag, and the tags early dialogs (forks)
        // got toward leg A.
        let a_tags = std::iter::once(&call.a.local_tag).chain(call.forks.iter().map(|(_, a)| a));
        let keys = a_tags.map(|t| (call.a.side, call.a.call_id.clone(), t.clone())).chain(std::iter::once((call.b.side, call.b.call_id.clone(), call.b.local_tag.clone())));
        for key in keys {
            if self.dialogs.get(&key).is_some_and(|(c, _)| *c == id) {
                self.dialogs.remove(&key);
            }
        }
        self.invites.remove(&call.a_invite_key);
        self.owners.remove(&call.b_invite_key);
    }

    fn on_conn_closed(&mut self, now: Instant, conn: ConnId) {
        if self.conns.remove(&conn).is_some_and(|c| c.signalling_up) {
            self.outputs.push_back(Output::SignallingPath(SignallingPath::Down { conn }));
        }
        for id in self.registrar.on_conn(conn) {
            match self.cfg.on_ws_close {
                OnWsClose::Deregister => self.deregister(now, id),
                OnWsClose::Keep => {
                    if let Some(b) = self.registrar.get_mut(id) {
                        b.connected = false;
                    }
                }
            }
        }
        let gone = Flow::Web { conn };
        let calls: Vec<(CallId, LegIdx)> = self
            .calls
            .values()
            .filter_map(|c| {
                [LegIdx::A, LegIdx::B].into_iter().find(|&i| c.leg(i).flow == gone).map(|i| (c.id, i))
            })
            .collect();
        let grace = self.cfg.reconnect_grace;
        for (id, idx) in calls {
            // Answered calls may wait for the browser to come back; media goes on meanwhile.
            if !grace.is_zero() && self.calls.get(&id).is_some_and(|c| c.state.is_confirmed()) {
                tracing::info!(call = id.0, grace_s = grace.as_secs(), "WebSocket closed; the call waits for the browser to come back");
                self.call_timers.set(&(id, CallTimer::Reconnect), Some(now + grace));
                continue;
            }
            tracing::info!(call = id.0, "WebSocket closed; ending call");
            self.hangup_with(now, id, Some(idx), EndReason::ConnectionLost);
        }
        self.tx.fail_flow(gone);
    }

    // ----- out-of-dialog relay ------------------------------------------------------------

    fn relay_non_dialog(&mut self, now: Instant, flow: Flow, key: ServerKey, req: Request) {
        let side = side_of(flow);
        let (to_flow, uri, via, route, extra) = match flow {
            Flow::Web { conn } => {
                let binding = self.registrar_binding_for(now, conn, &req);
                if self.cfg.require_registration && binding.is_none() {
                    return self.respond(now, &key, &req, 403, "Not Registered");
                }
                let b = binding.and_then(|id| self.registrar.get(id));
                let route = b.map(|b| b.service_route.clone()).unwrap_or_default();
                let pai = b.map(|b| estuary_ims_profile::asserted_identity(&b.aor));
                (self.ims_flow(), req.uri.clone(), self.via_ims(), route, pai)
            }
            Flow::Ims { .. } => {
                let Some(id) = self.target_binding(now, &req) else {
                    return self.respond(now, &key, &req, 404, "Not Found");
                };
                let Some(b) = self.registrar.get(id).filter(|b| b.connected) else {
                    return self.respond(now, &key, &req, 480, "Temporarily Unavailable");
                };
                let (conn, uri) = (b.conn, b.web_contact_uri.clone());
                let transport = self.conns.get(&conn).map_or(Transport::Ws, |c| c.transport);
                (Flow::Web { conn }, uri, self.via_web(transport), Vec::new(), None)
            }
        };
        let (Ok(from), Ok(to)) = (req.headers.from(), req.headers.to()) else { return };
        let mut out = Request {
            method: req.method.clone(),
            uri,
            version: "SIP/2.0".to_owned(),
            headers: Default::default(),
            body: req.body.clone(),
        };
        out.headers.push("Via", &via);
        let mf = req.headers.max_forwards().ok().flatten().unwrap_or(70).saturating_sub(1);
        out.headers.push("Max-Forwards", mf.to_string());
        for r in &route {
            out.headers.push("Route", r);
        }
        let tag = self.token();
        out.headers.push("From", with_tag(&untagged(&from), Some(&tag)));
        out.headers.push("To", untagged(&to));
        out.headers.push("Call-ID", format!("{}@estuary", self.token()));
        out.headers.push("CSeq", format!("1 {}", req.method.as_str()));
        copy_end_to_end(&req.headers, &mut out.headers, side);
        if let Some(pai) = extra {
            out.headers.push("P-Asserted-Identity", &pai);
        }
        match self.tx.send_request(now, &out, to_flow, reliable(to_flow)) {
            Ok(k) => {
                self.track_failover(&k, &out, to_flow);
                self.owners.insert(k, Owner::NonDialog { server: key, request: req, from: side });
            }
            Err(_) => self.respond(now, &key, &req, 500, "Server Internal Error"),
        }
    }

    // ----- helpers ------------------------------------------------------------------------

    /// Relay `resp` (received from `from`) as the response to `orig` in server transaction `key`.
    #[allow(clippy::too_many_arguments)]
    fn forward_response(
        &mut self,
        now: Instant,
        key: &ServerKey,
        orig: &Request,
        resp: &Response,
        from: Side,
        to_tag: Option<String>,
        contact: Option<&str>,
        body: Vec<u8>,
    ) {
        let mut out = response_to(orig, resp.code, &resp.reason);
        if let Some(t) = to_tag {
            set_to_tag(&mut out, &t);
        }
        if let Some(c) = contact {
            // RFC 3261 §12.1.1: a dialog-creating response copies the request's Record-Route,
            // so the proxies that asked to stay on the path (e.g. the S-CSCF) see the ACK/BYE.
            for rr in orig.headers.get_all("Record-Route") {
                out.headers.push("Record-Route", rr);
            }
            out.headers.push("Contact", c);
        }
        copy_end_to_end(&resp.headers, &mut out.headers, from);
        set_body(&mut out.headers, &mut out.body, body);
        if let Err(e) = self.tx.send_response(now, key, &out) {
            tracing::debug!(error = %e, code = resp.code, "response not relayed");
        }
    }

    /// Refuse a request whose SDP the engine cannot use: its status (400, 488, 503) and a
    /// Warning with the reason (RFC 3261 §20.43, code 399: miscellaneous).
    fn refuse_sdp(&mut self, now: Instant, key: &ServerKey, req: &Request, e: &SdpError) {
        let reason = match e.status() {
            400 => "Bad Request",
            503 => "Service Unavailable",
            _ => "Not Acceptable Here",
        };
        let mut resp = self.local_response(req, e.status(), reason);
        if e.status() == 503 {
            resp.headers.push("Retry-After", self.cfg.retry_after.as_secs().to_string());
        }
        resp.headers.push("Warning", warning(&e.reason));
        if let Err(err) = self.tx.send_response(now, key, &resp) {
            tracing::debug!(error = %err, "SDP refusal not sent");
        }
    }

    /// Rewrite an SDP body of call `id` arriving from `from` (see [`rewrite_sdp`]).
    fn sdp_body(&mut self, id: CallId, from: Side, body: &[u8], completes: bool) -> Result<Vec<u8>, SdpError> {
        let video = self.video_admissible(Some(id), from);
        let Some(call) = self.calls.get_mut(&id) else { return Ok(Vec::new()) };
        call.sdp.allow_video_transcoding(video);
        let out = rewrite_sdp(&mut call.sdp, &mut call.ports, &mut self.ports, from, body, completes);
        self.sync_media(id);
        out
    }

    /// Hand the call's plan to the media plane when an answer settled a new one.
    fn sync_media(&mut self, id: CallId) {
        let Some(call) = self.calls.get_mut(&id) else { return };
        let version = call.sdp.plan_version();
        if version == call.media_version {
            return;
        }
        call.media_version = version;
        if let Some(plan) = call.sdp.plan() {
            let channels = transcoded_streams(plan, self.video_cost);
            self.outputs.push_back(Output::Media { call: id.0, plan: Box::new(plan.clone()) });
            self.set_transcoding(id, channels);
        }
    }

    /// A reloaded configuration (SIGHUP): requests, offers and registrations from now on
    /// follow `cfg` (codec policy, registrar bounds, next hop, headers, limits); calls and
    /// transactions in progress keep what they settled. The SIP timers and the port
    /// quarantine were fixed when the engine was built and stay as they were (the daemon
    /// reports those keys as needing a restart).
    pub fn reconfigure(&mut self, cfg: B2buaConfig) {
        let (timers, quarantine) = (self.cfg.timers, self.cfg.port_quarantine);
        self.hops.set(HopTarget::configured(cfg.next_hop, &cfg.next_hop_targets));
        self.cfg = B2buaConfig { timers, port_quarantine: quarantine, ..cfg };
    }

    /// The next hop's targets as the driver resolved them again (RFC 3263: SRV records may
    /// change); a target kept keeps its up or down state.
    pub fn set_next_hops(&mut self, targets: Vec<HopTarget>) {
        if targets.is_empty() {
            return;
        }
        self.hops.set(targets.clone());
        self.cfg.next_hop = self.hops.first();
        self.cfg.next_hop_targets = targets;
    }

    /// Each next-hop target and whether it is up.
    pub fn next_hop_states(&self) -> Vec<(std::net::SocketAddr, bool)> {
        self.hops.states().collect()
    }

    /// The configuration in force.
    pub fn config(&self) -> &B2buaConfig {
        &self.cfg
    }

    /// Starts draining for a graceful stop or upgrade: new INVITEs from either side get 503
    /// with Retry-After, and an OPTIONS addressed to the gateway (a dispatcher's probe) gets
    /// 503, so the fronts move traffic to other nodes; calls in progress, their in-dialog
    /// requests and registrations go on. It cannot be undone: a drained process exits.
    pub fn drain(&mut self) {
        self.draining = true;
    }

    /// Whether [`B2bua::drain`] was called.
    pub fn is_draining(&self) -> bool {
        self.draining
    }

    /// What the transcoder's measurements say a transcoded video stream costs, in audio
    /// channels (the unit of `transcode_channels`). The driver feeds it as the pool learns;
    /// calls admitted before keep what they were charged until their next offer.
    pub fn set_video_channel_cost(&mut self, units: usize) {
        self.video_cost = units.max(1);
    }

    /// Whether an offer from `from` for `call` may bridge video through the transcoder:
    /// always without a limit; otherwise when one more video stream, and the call's audio
    /// channel beside it, fit on top of what the other calls hold. A browser's offer under
    /// `refuse_call` keeps it and faces admission whole; an IMS offer never gets a transcoded
    /// alternative the pool cannot carry, since the browser's answer is not admitted again.
    fn video_admissible(&self, call: Option<CallId>, from: Side) -> bool {
        let Some(capacity) = self.cfg.transcode_channels else { return true };
        if from == Side::Web && self.cfg.video_overload == crate::VideoOverload::RefuseCall {
            return true;
        }
        // Room is kept for the call's audio channel beside its video.
        const AUDIO_BESIDE: usize = 1;
        self.transcoding_held_by_others(call) + self.video_cost + AUDIO_BESIDE <= capacity
    }

    /// Transcoding capacity held by every call but `call` (a re-offer keeps its own).
    fn transcoding_held_by_others(&self, call: Option<CallId>) -> usize {
        let held = call.and_then(|c| self.transcoding.get(&c)).copied().unwrap_or(0);
        self.transcoding.values().sum::<usize>() - held
    }

    /// Transcoding capacity the pending offer of `sdp` needs whatever the answer: one audio
    /// channel per audio stream offered only with transcoded codecs, the video cost per such
    /// video stream.
    fn transcoding_needed(&self, sdp: &SdpSession) -> usize {
        sdp.offered_codecs()
            .iter()
            .filter(|(maps, _)| !maps.is_empty() && maps.iter().all(|m| m.transcode))
            .map(|(maps, _)| if maps[0].is_video() { self.video_cost } else { 1 })
            .sum()
    }

    /// Whether an offer needing `needed` channels (see [`B2bua::transcoding_needed`]) fits the
    /// transcoding capacity on top of what other calls hold (`call` may already hold some: a re-offer keeps its own).
    /// Returns the channels to reserve for it.
    fn admit_transcoding(&mut self, call: Option<CallId>, needed: usize) -> Result<usize, SdpError> {
        let Some(capacity) = self.cfg.transcode_channels else { return Ok(needed) };
        if needed == 0 {
            return Ok(0);
        }
        let in_use = self.transcoding_held_by_others(call);
        if in_use + needed <= capacity {
            return Ok(needed);
        }
        self.counters.transcoding_refused();
        let reason = format!("transcoding capacity exhausted ({in_use} of {capacity} channels in use)");
        Err(if self.cfg.transcode_refusal == 503 { SdpError::exhausted(reason) } else { SdpError::not_acceptable(reason) })
    }

    /// An admitted offer's reservation: the call holds at least that until the answer.
    fn reserve_transcoding(&mut self, id: CallId, channels: usize) {
        let held = self.transcoding.get(&id).copied().unwrap_or(0);
        self.set_transcoding(id, held.max(channels));
    }

    fn set_transcoding(&mut self, id: CallId, channels: usize) {
        if channels == 0 {
            self.transcoding.remove(&id);
        } else {
            self.transcoding.insert(id, channels);
        }
    }

    /// Answer a request locally within its server transaction.
    fn respond(&mut self, now: Instant, key: &ServerKey, req: &Request, code: u16, reason: &str) {
        let mut resp = self.local_response(req, code, reason);
        if code == 503 {
            resp.headers.push("Retry-After", self.cfg.retry_after.as_secs().to_string());
        }
        if let Err(e) = self.tx.send_response(now, key, &resp) {
            tracing::debug!(error = %e, code, "local response not sent");
        }
    }

    /// A response generated by the gateway (RFC 3261 §8.2.6): the request's Via, From, To,
    /// Call-ID and CSeq, with a To tag of ours on anything but 100.
    fn local_response(&mut self, req: &Request, code: u16, reason: &str) -> Response {
        let mut resp = response_to(req, code, reason);
        let has_tag = req.headers.to().ok().is_some_and(|t| t.tag().is_some());
        if code > 100 && !has_tag {
            let tag = self.token();
            set_to_tag(&mut resp, &tag);
        }
        self.stamp(&mut resp.headers, "Server");
        resp
    }

    /// Name the gateway as the originator (`User-Agent` or `Server`) when so configured.
    fn stamp(&self, headers: &mut estuary_sip::Headers, name: &str) {
        if let Some(ua) = &self.cfg.user_agent {
            headers.push(name, ua);
        }
    }

    /// The dialog an in-dialog request belongs to: by side, Call-ID and our tag (the To tag).
    fn dialog_of(&self, side: Side, req: &Request) -> Option<(CallId, LegIdx)> {
        let call_id = req.headers.call_id().ok()?;
        let to = req.headers.to().ok()?;
        let tag = to.tag()?;
        self.dialogs.get(&(side, call_id.to_owned(), tag.to_owned())).copied()
    }

    /// The browser registration a request from `conn` runs under: the binding whose AoR is the
    /// From URI, else any active binding on that connection.
    fn registrar_binding_for(&self, now: Instant, conn: ConnId, req: &Request) -> Option<BindingId> {
        let ids = self.registrar.on_conn(conn);
        let active: Vec<&Binding> = ids.iter().filter_map(|i| self.registrar.get(*i)).filter(|b| b.is_active(now)).collect();
        let from = req.headers.from().ok().map(|f| crate::registrar::aor_key(&f.uri.to_string()));
        active
            .iter()
            .find(|b| Some(crate::registrar::aor_key(&b.aor)) == from)
            .or_else(|| active.first())
            .map(|b| b.id)
    }

    /// The binding an IMS-originated request targets: by the token in our Path (top Route) or
    /// Contact (Request-URI user), else by AoR.
    fn target_binding(&self, now: Instant, req: &Request) -> Option<BindingId> {
        if let Ok(routes) = req.headers.routes() {
            if let Some(token) = routes.first().and_then(|r| r.uri.user.as_deref()) {
                if let Some(id) = self.registrar.find_token(token) {
                    return Some(id);
                }
            }
        }
        if let Some(id) = req.uri.user.as_deref().and_then(|u| self.registrar.find_token(u)) {
            return Some(id);
        }
        self.registrar.find_aor(&req.uri.to_string(), now)
    }

    /// Whether a request from IMS addresses a browser binding by the token the gateway gave
    /// the core (its Path in the top Route, or its Contact as Request-URI). One carrying our
    /// own Via is then a spiral, not a loop (RFC 3261 §16.3 item 4): a browser calling another
    /// browser of the same gateway leaves through the core and comes back by that Path.
    fn names_binding_token(&self, req: &Request) -> bool {
        let top_route = req.headers.routes().ok().and_then(|r| r.first().and_then(|r| r.uri.user.clone()));
        let named = [top_route.as_deref(), req.uri.user.as_deref()].into_iter().flatten().any(|t| self.registrar.find_token(t).is_some());
        named
    }

    /// Whether a request from IMS came back by a Path or Contact the cluster registered at
    /// the core (its top Route or Request-URI names `sip_front`): a browser calling a browser
    /// held by another node spirals through the core and the front, and may reach this node
    /// again on its way there.
    fn through_front(&self, req: &Request) -> bool {
        let Some(front) = &self.cfg.sip_front else { return false };
        let names_front = |u: &estuary_sip::Uri| u.user.is_some() && host_port(u).eq_ignore_ascii_case(front);
        let top_route = req.headers.routes().ok().and_then(|r| r.into_iter().next());
        top_route.is_some_and(|r| names_front(&r.uri)) || names_front(&req.uri)
    }

    /// RFC 3261 §16.3 item 4, for a B2BUA: a request from IMS that already passed through our
    /// IMS interface (our sent-by in its Via) has looped, unless it spiralled back to a binding
    /// (see [`Self::names_binding_token`]).
    fn is_looped(&self, req: &Request) -> bool {
        let ours = self.cfg.ims_advertised;
        req.headers.vias().unwrap_or_default().iter().any(|v| {
            v.host.trim_matches(|c| c == '[' || c == ']').parse::<std::net::IpAddr>().ok() == Some(ours.ip())
                && v.port.unwrap_or(5060) == ours.port()
        })
    }

    /// Where a new request outside a dialog goes: a next-hop target by priority and weight.
    fn ims_flow(&mut self) -> Flow {
        // (Drawn only when there is a choice: a single target leaves the identifiers that
        // follow from the seed as they were.)
        let r: u32 = if self.hops.shared() { self.rng.random() } else { 0 };
        Flow::Ims { transport: self.cfg.ims_transport, remote: self.hops.pick(r) }
    }

    fn via_for(&mut self, (side, transport): (Side, Transport)) -> String {
        match side {
            Side::Web => self.via_web(transport),
            Side::Ims => self.via_ims_transport(transport),
        }
    }

    fn via_ims(&mut self) -> String {
        self.via_ims_transport(self.cfg.ims_transport)
    }

    fn via_ims_transport(&mut self, t: Transport) -> String {
        let branch = self.token();
        format!("SIP/2.0/{} {};branch=z9hG4bK{};rport", t.via_token(), self.cfg.ims_advertised, branch)
    }

    fn via_web(&mut self, t: Transport) -> String {
        let branch = self.token();
        format!("SIP/2.0/{} {};branch=z9hG4bK{}", t.via_token(), self.cfg.web_advertised_host, branch)
    }

    /// The host:port of the Contact and Path the gateway registers toward IMS: the cluster's
    /// front when there is one, so the core's requests for a browser reach a live node.
    fn registered_host(&self) -> String {
        match &self.cfg.sip_front {
            Some(front) => front.clone(),
            None => self.cfg.ims_advertised.to_string(),
        }
    }

    fn ims_contact(&self) -> String {
        format!(
            "<sip:estuary@{};transport={}>",
            self.cfg.ims_advertised,
            self.cfg.ims_transport.via_token().to_ascii_lowercase()
        )
    }

    fn web_contact(&self, t: Transport) -> String {
        format!("<sip:estuary@{};transport={}>", self.cfg.web_advertised_host, t.via_token().to_ascii_lowercase())
    }

    fn token(&mut self) -> String {
        token(&mut self.rng)
    }
}

impl Owner {
    /// A copy for dispatch of owners that stay registered (INVITEs live until the call ends).
    fn shallow(&self) -> Owner {
        match self {
            Owner::Invite { call } => Owner::Invite { call: *call },
            Owner::Relay(r) => Owner::Relay(r.clone()),
            Owner::Register { binding, web, web_req } => {
                Owner::Register { binding: *binding, web: web.clone(), web_req: web_req.clone() }
            }
            Owner::NonDialog { server, request, from } => {
                Owner::NonDialog { server: server.clone(), request: request.clone(), from: *from }
            }
            Owner::Own => Owner::Own,
            Owner::Probe(addr) => Owner::Probe(*addr),
            Owner::Proxied { server, forwarded, node } => {
                Owner::Proxied { server: server.clone(), forwarded: forwarded.clone(), node: *node }
            }
            Owner::Reanchor { call, leg, step } => Owner::Reanchor { call: *call, leg: *leg, step: step.clone() },
        }
    }
}

/// The CANCEL of INVITE `inv` (RFC 3261 §9.1): same Request-URI, Call-ID, From, To, CSeq
/// number and top Via as the INVITE, and the same Route set.
fn cancel_for(inv: &Request, cseq: u32, user_agent: Option<&str>) -> Request {
    let mut cancel = Request {
        method: Method::Cancel,
        uri: inv.uri.clone(),
        version: "SIP/2.0".to_owned(),
        headers: Default::default(),
        body: Vec::new(),
    };
    if let Some(v) = inv.headers.values("Via").into_iter().next() {
        cancel.headers.push("Via", &v);
    }
    for r in inv.headers.get_all("Route") {
        cancel.headers.push("Route", r);
    }
    cancel.headers.push("Max-Forwards", "70");
    for h in ["From", "To", "Call-ID"] {
        if let Some(v) = inv.headers.get(h) {
            cancel.headers.push(h, v);
        }
    }
    cancel.headers.push("CSeq", format!("{cseq} CANCEL"));
    if let Some(ua) = user_agent {
        cancel.headers.push("User-Agent", ua);
    }
    cancel
}

/// Owners that must outlive the final response: the INVITE's, whose 2xx may be retransmitted
/// and must be re-ACKed.
/// Turn an SDP body from `from` into the one for the other leg. RFC 3264 roles follow the
/// exchange in progress: an answer when the other side has an offer outstanding, else an offer
/// (which asks the pool for ports). `completes` marks the message that closes an exchange (a
/// 2xx, an ACK): after an answer there, or with no body, the exchange is settled. An empty body
/// stays empty.
fn rewrite_sdp(
    sdp: &mut SdpSession,
    taken: &mut Vec<u16>,
    pool: &mut PortPool,
    from: Side,
    body: &[u8],
    completes: bool,
) -> Result<Vec<u8>, SdpError> {
    let side = sdp_side(from);
    if body.is_empty() {
        if completes {
            sdp.settle();
        }
        return Ok(Vec::new());
    }
    let answer = sdp.pending_offer() == Some(side.other());
    let out = if answer {
        sdp.answer(side, body)?
    } else {
        sdp.offer(side, body, &mut CallPorts { pool, taken })?
    };
    if answer && completes {
        sdp.settle();
    }
    Ok(out.into_bytes())
}

/// Transcoding capacity a settled plan uses: an audio channel per transcoded audio stream,
/// `video_cost` per transcoded video stream.
fn transcoded_streams(plan: &estuary_sdp::MediaPlan, video_cost: usize) -> usize {
    plan.streams
        .iter()
        .filter(|s| s.active && s.transcodes())
        .map(|s| if s.kind == "video" { video_cost } else { 1 })
        .sum()
}

/// RFC 5168's content type and its one request.
const MEDIA_CONTROL: &str = "application/media_control+xml";
const PICTURE_FAST_UPDATE: &str = "<?xml version=\"1.0\" encoding=\"utf-8\" ?>\r\n<media_control>\r\n  <vc_primitive>\r\n    <to_encoder>\r\n      <picture_fast_update/>\r\n    </to_encoder>\r\n  </vc_primitive>\r\n</media_control>\r\n";

/// The least time between two INFO keyframe requests on one call.
const FAST_UPDATE_INTERVAL: Duration = Duration::from_secs(1);

/// An INFO asking for a keyframe (RFC 5168 §3): its body is media control XML with a
/// picture_fast_update. Matched on the element name, as the schema has no other use for it.
/// A Warning value of the gateway's own (RFC 3261 §20.43, code 399: miscellaneous) with
/// `reason` made safe for a quoted-string.
fn warning(reason: &str) -> String {
    let text: String = reason.chars().filter(|c| *c != '"' && *c != '\\' && !c.is_control()).collect();
    format!("399 estuary \"{text}\"")
}

fn is_picture_fast_update(req: &Request) -> bool {
    let media_control = req
        .headers
        .get("Content-Type")
        .is_some_and(|ct| ct.split(';').next().unwrap_or("").trim().eq_ignore_ascii_case(MEDIA_CONTROL));
    media_control && std::str::from_utf8(&req.body).is_ok_and(|b| b.contains("<picture_fast_update"))
}

fn sdp_side(side: Side) -> estuary_sdp::Side {
    match side {
        Side::Web => estuary_sdp::Side::Web,
        Side::Ims => estuary_sdp::Side::Ims,
    }
}

/// Put `body` into a message being built; an empty one also loses its Content-Type.
fn set_body(headers: &mut estuary_sip::Headers, dst: &mut Vec<u8>, body: Vec<u8>) {
    if body.is_empty() {
        headers.remove("Content-Type");
    }
    *dst = body;
}

/// A request the gateway answers itself: status, reason and an optional header to explain.
struct Refusal {
    code: u16,
    reason: &'static str,
    header: Option<(&'static str, String)>,
}

impl Refusal {
    fn new(code: u16, reason: &'static str, header: Option<(&'static str, String)>) -> Self {
        Refusal { code, reason, header }
    }
}

fn is_invite_owner(owner: Option<&Owner>) -> bool {
    match owner {
        Some(Owner::Invite { .. }) => true,
        Some(Owner::Relay(r)) => r.request.method == Method::Invite,
        Some(Owner::Reanchor { .. }) => true,
        _ => false,
    }
}

fn call_side(call: &Call, idx: LegIdx) -> Side {
    call.leg(idx).side
}

fn side_of(flow: Flow) -> Side {
    match flow {
        Flow::Web { .. } => Side::Web,
        Flow::Ims { .. } => Side::Ims,
    }
}

fn reliable(flow: Flow) -> bool {
    match flow {
        Flow::Web { .. } => true,
        Flow::Ims { transport, .. } => transport.is_reliable(),
    }
}

impl Side {
    fn other(self) -> Side {
        match self {
            Side::Web => Side::Ims,
            Side::Ims => Side::Web,
        }
    }
}

/// When a session whose 2xx carries `headers` expires (RFC 4028 §4: `Session-Expires:
/// delta-seconds[;refresher=...]`; `get` also finds the compact form `x`); `None` without one. Intervals under
/// the RFC's 90 s minimum (Min-SE floor) are taken as 90 s: the gateway only supervises, it
/// never ends a call sooner than a compliant endpoint could have refreshed it.
fn session_expiry(now: Instant, headers: &estuary_sip::Headers) -> Option<Instant> {
    let value = headers.get("Session-Expires")?;
    let delta: u64 = value.split(';').next()?.trim().parse().ok()?;
    Some(now + Duration::from_secs(delta.clamp(90, 86_400)))
}

/// The URI of a name-addr written as text (the legs keep theirs so), for records.
/// `host:port` of a URI as the gateway writes its own addresses (5060 when no port).
fn host_port(uri: &estuary_sip::Uri) -> String {
    format!("{}:{}", uri.host, uri.port.unwrap_or(5060))
}

fn name_addr_uri(text: &str) -> String {
    text.parse::<NameAddr>().map_or_else(|_| text.to_owned(), |na| na.uri.to_string())
}

/// A name-addr without its tag, as text.
fn untagged(na: &NameAddr) -> String {
    let mut n = na.clone();
    n.remove_param("tag");
    n.to_string()
}

fn set_to_tag(resp: &mut Response, tag: &str) {
    if let Ok(mut to) = resp.headers.to() {
        if to.tag().is_none() {
            to.set_tag(tag);
            resp.headers.set("To", to.to_string());
        }
    }
}

/// The first Contact URI of a message, as text.
fn contact_uri(headers: &estuary_sip::Headers) -> Option<String> {
    headers.contacts().ok()?.into_iter().find_map(|c| match c {
        ContactValue::Addr(na) => Some(na.uri.to_string()),
        ContactValue::Star => None,
    })
}

/// 16 characters of [a-z0-9]: tags, branches, Call-IDs and binding tokens (RFC 3261 §19.3
/// asks for at least 32 bits of randomness; this carries about 82).
fn token(rng: &mut StdRng) -> String {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    (0..16).map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char).collect()
}
