//! The AF application: one Rx session per call, sans-IO.
//!
//! # Run loop
//!
//! The caller owns the Diameter transport (an estuary-diameter `PeerSet` whose peers advertise
//! [`crate::RX_APPLICATION`] and validate with [`crate::rx_validator`]) and a timer:
//!
//! 1. call [`RxClient::start`], [`RxClient::update`] or [`RxClient::end`] as the call goes;
//! 2. drain [`RxClient::poll_request`] and give each request to `PeerSet::send_request`; if
//!    that fails, hand the message back with [`RxClient::handle_failure`];
//! 3. on `PeerSetEvent::Answer` for application 16777236, call [`RxClient::handle_answer`];
//!    on `PeerSetEvent::Failed`, [`RxClient::handle_failure`] with the request it returns;
//! 4. on `PeerSetEvent::Request` for Rx (RAR, ASR), send what [`RxClient::handle_request`]
//!    returns with `PeerSet::send_answer`;
//! 5. drain [`RxClient::poll_event`] and [`RxClient::poll_request`] again, then arm the timer
//!    at [`RxClient::poll_timeout`] and call [`RxClient::handle_timeout`] when it fires.
//!
//! Answers and failures are matched to calls by their Session-Id: a session has at most one
//! request outstanding (an `update` during an AAR is queued, the latest one wins), so the
//! caller keeps no map from Diameter identifiers to calls.
//!
//! # Session lifetime
//!
//! `start` → Pending → (AAA 2xxx) Open ⇄ Updating → `end`/ASR → Terminating → (STA or its
//! deadline) forgotten, with [`RxEvent::Terminated`].
//!
//! A refused or unanswered *initial* AAR ends the Rx session at once: [`RxEvent::Refused`] or
//! [`RxEvent::TimedOut`] is its last event and `end` is not needed (after a timeout an STR
//! still goes out, DIAMETER_SERVICE_NOT_PROVIDED, in case the PCRF did create state; its
//! outcome is not reported). A refused or unanswered *update* leaves the session Open with
//! its previous authorization.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::time::{Duration, Instant};

use estuary_diameter::dictionary as dict;
use estuary_diameter::message::{application, command};
use estuary_diameter::{result_code, Avp, Message, Rejection, Validator};

use crate::encode::{self, Route};
use crate::error::RxError;
use crate::media::{SessionParams, SignallingParams, UplinkFilter};
use crate::rules::rx_validator;
use crate::values::{AarKind, AbortCause, FinalUnitAction, SpecificAction, TerminationCause};

/// The caller's identifier for a call.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CallKey(pub u64);

/// Identity, destination and behaviour of the AF.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RxConfig {
    /// Our Origin-Host (the P-CSCF's DiameterIdentity); also the first part of Session-Ids.
    pub origin_host: String,
    /// Our Origin-Realm.
    pub origin_realm: String,
    /// The PCRF's realm (Destination-Realm).
    pub destination_realm: String,
    /// The PCRF host, if requests must name it; once a session's first AAA arrives, its
    /// Origin-Host is used for the rest of that session.
    pub destination_host: Option<String>,
    /// How long an AAR or STR waits for its answer. Default 5 s.
    pub timeout: Duration,
    /// Specific-Action values subscribed to in every initial AAR (TS 29.214 §5.3.13).
    /// Default: INDICATION_OF_LOSS_OF_BEARER (2), INDICATION_OF_RELEASE_OF_BEARER (4) and
    /// INDICATION_OF_OUT_OF_CREDIT (7). A Rel8 action (7, 8, 9) makes the initial AAR
    /// advertise the Rel8 feature in Supported-Features (§5.4.1); leave them out for a PCRF
    /// older than Rel-8, which would not know the value.
    pub specific_actions: Vec<SpecificAction>,
    /// Direction keyword of the uplink Flow-Description; see [`UplinkFilter`].
    pub uplink_filter: UplinkFilter,
}

impl RxConfig {
    /// The defaults above for this identity and PCRF realm.
    pub fn new(
        origin_host: impl Into<String>,
        origin_realm: impl Into<String>,
        destination_realm: impl Into<String>,
    ) -> RxConfig {
        RxConfig {
            origin_host: origin_host.into(),
            origin_realm: origin_realm.into(),
            destination_realm: destination_realm.into(),
            destination_host: None,
            timeout: Duration::from_secs(5),
            specific_actions: vec![
                SpecificAction::IndicationOfLossOfBearer,
                SpecificAction::IndicationOfReleaseOfBearer,
                SpecificAction::IndicationOfOutOfCredit,
            ],
            uplink_filter: UplinkFilter::In,
        }
    }
}

/// What happened to a call's Rx session.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RxEvent {
    /// An AAA with a 2xxx result: the PCRF accepted the service information.
    Authorized {
        /// The call.
        call: CallKey,
        /// Which AAR.
        kind: AarKind,
        /// Result-Code (or the Experimental-Result-Code when only that came).
        result_code: u32,
    },
    /// An AAA with any other result. After an initial AAR the session is over.
    Refused {
        /// The call.
        call: CallKey,
        /// Which AAR.
        kind: AarKind,
        /// Result-Code, if the answer had one.
        result_code: Option<u32>,
        /// Experimental-Result-Code (TS 29.214 §5.5, e.g. 5065), if the answer had one.
        experimental: Option<u32>,
    },
    /// No AAA within [`RxConfig::timeout`] (or the transport gave up on the AAR). After an
    /// initial AAR the session is over.
    TimedOut {
        /// The call.
        call: CallKey,
        /// Which AAR.
        kind: AarKind,
    },
    /// A RAR reported that media can no longer flow (TS 29.214 §4.4.6.2 service data flow
    /// deactivation, §5.3.13: loss or release of bearer, failed resource allocation). The RAA
    /// was 2001.
    BearerLost {
        /// The call.
        call: CallKey,
        /// The reporting Specific-Action.
        action: SpecificAction,
        /// Media-Component-Numbers from the RAR's Flows AVPs; empty means not said.
        components: Vec<u32>,
    },
    /// A RAR reported that the subscriber's credit for the flows ran out
    /// (INDICATION_OF_OUT_OF_CREDIT, TS 29.214 §4.4.6.3 / §5.3.13). The RAA was 2001.
    OutOfCredit {
        /// The call.
        call: CallKey,
        /// Media-Component-Numbers from the RAR's Flows AVPs; empty means not said.
        components: Vec<u32>,
        /// The first Final-Unit-Action in those Flows, if any.
        action: Option<FinalUnitAction>,
    },
    /// A RAR with other Specific-Actions (recovery of bearer, charging correlation...). The
    /// RAA was 2001.
    Notified {
        /// The call.
        call: CallKey,
        /// The actions, in order.
        actions: Vec<SpecificAction>,
    },
    /// The PCRF aborted the session (ASR, TS 29.214 §4.4.6.1); the ASA was 2001 and the STR
    /// of §4.4.4 is on its way. [`RxEvent::Terminated`] follows.
    Aborted {
        /// The call.
        call: CallKey,
        /// Abort-Cause.
        cause: AbortCause,
    },
    /// The Rx session is over (STA received, or the STR went unanswered).
    Terminated {
        /// The call.
        call: CallKey,
    },
}

impl RxEvent {
    /// The call (or other owner) whose session the event is about.
    pub fn call(&self) -> CallKey {
        match self {
            RxEvent::Authorized { call, .. }
            | RxEvent::Refused { call, .. }
            | RxEvent::TimedOut { call, .. }
            | RxEvent::BearerLost { call, .. }
            | RxEvent::Notified { call, .. }
            | RxEvent::OutOfCredit { call, .. }
            | RxEvent::Aborted { call, .. }
            | RxEvent::Terminated { call } => *call,
        }
    }
}

/// A session's state, without its data.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SessionStatus {
    /// Initial AAR outstanding.
    Pending,
    /// Authorized, nothing outstanding.
    Open,
    /// Update AAR outstanding.
    Updating,
    /// STR outstanding.
    Terminating,
}

/// Answers counted by result class (RFC 6733 §7.1).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ResultCounts {
    /// 2xxx.
    pub success: u64,
    /// 3xxx (protocol errors, E bit).
    pub protocol_error: u64,
    /// 4xxx (transient failures), Experimental-Result included.
    pub transient_failure: u64,
    /// 5xxx (permanent failures), Experimental-Result included.
    pub permanent_failure: u64,
    /// No usable Result-Code or Experimental-Result-Code, or another range.
    pub other: u64,
}

impl ResultCounts {
    fn record(&mut self, code: Option<u32>) {
        match code.map(|c| c / 1000) {
            Some(2) => self.success += 1,
            Some(3) => self.protocol_error += 1,
            Some(4) => self.transient_failure += 1,
            Some(5) => self.permanent_failure += 1,
            _ => self.other += 1,
        }
    }
}

/// Message counters for metrics. They only grow.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RxCounters {
    /// Initial AARs queued.
    pub aar_initial_sent: u64,
    /// Update AARs queued.
    pub aar_update_sent: u64,
    /// AAAs by result.
    pub aaa: ResultCounts,
    /// AARs that got no answer in time (or whose transport failed).
    pub aar_timeouts: u64,
    /// STRs queued.
    pub str_sent: u64,
    /// STAs by result.
    pub sta: ResultCounts,
    /// STRs that got no answer in time.
    pub str_timeouts: u64,
    /// RARs received (valid ones, before the session lookup).
    pub rar_received: u64,
    /// ASRs received (valid ones, before the session lookup).
    pub asr_received: u64,
    /// Requests answered with an error: malformed (5001, 5005...), unknown session (5002),
    /// unsupported command or application.
    pub requests_rejected: u64,
    /// Answers that failed validation and were dropped.
    pub malformed_answers: u64,
    /// Answers for no outstanding request (late, after a timeout or the session's end).
    pub stale_answers: u64,
}

#[derive(Clone, Debug)]
enum State {
    /// The initial AAR is outstanding.
    Pending {
        since: Instant,
        deadline: Instant,
        next_update: Option<Box<SessionParams>>,
    },
    /// Authorized; nothing outstanding.
    Open { since: Instant },
    /// An update AAR is outstanding.
    Updating {
        since: Instant,
        deadline: Instant,
        next_update: Option<Box<SessionParams>>,
    },
    /// The STR is outstanding. `report`: whether its end is an [`RxEvent::Terminated`].
    Terminating {
        since: Instant,
        deadline: Instant,
        cause: TerminationCause,
        report: bool,
    },
}

impl State {
    fn deadline(&self) -> Option<Instant> {
        match self {
            State::Pending { deadline, .. }
            | State::Updating { deadline, .. }
            | State::Terminating { deadline, .. } => Some(*deadline),
            State::Open { .. } => None,
        }
    }

    fn status(&self) -> SessionStatus {
        match self {
            State::Pending { .. } => SessionStatus::Pending,
            State::Open { .. } => SessionStatus::Open,
            State::Updating { .. } => SessionStatus::Updating,
            State::Terminating { .. } => SessionStatus::Terminating,
        }
    }

    fn since(&self) -> Instant {
        match self {
            State::Pending { since, .. }
            | State::Open { since }
            | State::Updating { since, .. }
            | State::Terminating { since, .. } => *since,
        }
    }
}

#[derive(Clone, Debug)]
struct Session {
    session_id: String,
    /// Origin-Host of the first AAA: Destination-Host of the session's later requests.
    pcrf_host: Option<String>,
    state: State,
}

/// How an AAA came out.
enum Outcome {
    Success(u32),
    Failure {
        result_code: Option<u32>,
        experimental: Option<u32>,
    },
}

fn outcome(answer: &Message) -> Outcome {
    let result_code = answer.result_code();
    let experimental = answer.experimental_result_code();
    let code = result_code.or(experimental);
    match code {
        Some(c) if !answer.flags.error && result_code::is_success(c) => Outcome::Success(c),
        _ => Outcome::Failure {
            result_code,
            experimental,
        },
    }
}

/// The Rx AF: one per node. See the module docs for the run loop.
#[derive(Debug)]
pub struct RxClient {
    config: RxConfig,
    validator: Validator,
    next_session: u64,
    sessions: HashMap<CallKey, Session>,
    by_session_id: HashMap<String, CallKey>,
    deadlines: BTreeSet<(Instant, CallKey)>,
    requests: VecDeque<(CallKey, Message)>,
    events: VecDeque<RxEvent>,
    counters: RxCounters,
}

impl RxClient {
    /// A client. `session_id_seed` starts the 64-bit counter whose high and low halves form
    /// Session-Ids `<origin_host>;<high32>;<low32>` (RFC 6733 §8.8); seed it so Session-Ids
    /// differ across restarts, e.g. boot Unix seconds << 32.
    pub fn new(config: RxConfig, session_id_seed: u64) -> RxClient {
        RxClient {
            config,
            validator: rx_validator(),
            next_session: session_id_seed,
            sessions: HashMap::new(),
            by_session_id: HashMap::new(),
            deadlines: BTreeSet::new(),
            requests: VecDeque::new(),
            events: VecDeque::new(),
            counters: RxCounters::default(),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &RxConfig {
        &self.config
    }

    /// Opens the call's Rx session: queues the initial AAR.
    pub fn start(
        &mut self,
        now: Instant,
        call: CallKey,
        params: SessionParams,
    ) -> Result<(), RxError> {
        if self.sessions.contains_key(&call) {
            return Err(RxError::CallExists(call));
        }
        params.validate()?;
        self.open(now, call, |config, route| {
            encode::aar(config, route, &params, AarKind::Initial)
        });
        Ok(())
    }

    /// Opens an Rx session for a registered UE's signalling path (TS 29.214 §4.4.5a): queues
    /// an AAR whose Media-Component-Number 0 describes the SIP flows with Flow-Usage
    /// AF_SIGNALLING. The session then behaves as a call's: [`RxEvent::Authorized`] or a
    /// refusal, [`RxEvent::BearerLost`] when the PCRF reports the signalling bearer gone, and
    /// [`RxClient::end`] when the registration ends. It takes no updates.
    pub fn start_signalling(
        &mut self,
        now: Instant,
        key: CallKey,
        params: SignallingParams,
    ) -> Result<(), RxError> {
        if self.sessions.contains_key(&key) {
            return Err(RxError::CallExists(key));
        }
        params.validate()?;
        self.open(now, key, |config, route| {
            encode::signalling_aar(config, route, &params)
        });
        Ok(())
    }

    /// A new session in Pending with its initial AAR, built by `aar`, queued.
    fn open(
        &mut self,
        now: Instant,
        call: CallKey,
        aar: impl FnOnce(&RxConfig, &Route<'_>) -> Message,
    ) {
        let session_id = self.allocate_session_id();
        let route = Route {
            session_id: &session_id,
            destination_host: self.config.destination_host.as_deref(),
        };
        let aar = aar(&self.config, &route);
        let deadline = now + self.config.timeout;
        self.deadlines.insert((deadline, call));
        self.by_session_id.insert(session_id.clone(), call);
        self.sessions.insert(
            call,
            Session {
                session_id,
                pcrf_host: None,
                state: State::Pending {
                    since: now,
                    deadline,
                    next_update: None,
                },
            },
        );
        self.requests.push_back((call, aar));
        self.counters.aar_initial_sent += 1;
    }

    /// New service information for an open session: an AAR with UPDATE_REQUEST on the same
    /// Session-Id. While an AAR is outstanding the parameters wait (the latest replaces
    /// earlier ones) and go out once it is answered.
    pub fn update(
        &mut self,
        now: Instant,
        call: CallKey,
        params: SessionParams,
    ) -> Result<(), RxError> {
        let Some(session) = self.sessions.get_mut(&call) else {
            return Err(RxError::UnknownCall(call));
        };
        params.validate()?;
        match &mut session.state {
            State::Pending { next_update, .. } | State::Updating { next_update, .. } => {
                *next_update = Some(Box::new(params));
                Ok(())
            }
            State::Open { .. } => {
                self.send_update(now, call, &params);
                Ok(())
            }
            State::Terminating { .. } => Err(RxError::Terminating(call)),
        }
    }

    /// Ends the call's Rx session: queues an STR (TS 29.214 §4.4.4 AF-initiated termination),
    /// normally with [`TerminationCause::Logout`]. [`RxEvent::Terminated`] follows. Ending a
    /// session already terminating does nothing.
    pub fn end(
        &mut self,
        now: Instant,
        call: CallKey,
        cause: TerminationCause,
    ) -> Result<(), RxError> {
        let Some(session) = self.sessions.get(&call) else {
            return Err(RxError::UnknownCall(call));
        };
        if matches!(session.state, State::Terminating { .. }) {
            return Ok(());
        }
        self.send_str(now, call, cause, true);
        Ok(())
    }

    /// Ends a session this client did not open (its Session-Id from elsewhere: a call taken
    /// over from a gateway that died), under `call`, a key of the caller's not in use: an STR
    /// with `cause`, and the session is forgotten once its STA comes or the STR times out (no
    /// event). A Session-Id this client knows is its own session's, ended as usual.
    pub fn end_foreign(&mut self, now: Instant, call: CallKey, session_id: String, cause: TerminationCause) -> Result<(), RxError> {
        if let Some(&own) = self.by_session_id.get(&session_id) {
            return self.end(now, own, cause);
        }
        if self.sessions.contains_key(&call) {
            return Err(RxError::CallExists(call));
        }
        // Indexed like any session, so its STA finds it.
        self.by_session_id.insert(session_id.clone(), call);
        self.sessions.insert(call, Session { session_id, pcrf_host: None, state: State::Open { since: now } });
        self.send_str(now, call, cause, false);
        Ok(())
    }

    /// The next request to send, with its call. Drain until `None` after every input.
    pub fn poll_request(&mut self) -> Option<(CallKey, Message)> {
        self.requests.pop_front()
    }

    /// The next event. Drain until `None` after every input.
    pub fn poll_event(&mut self) -> Option<RxEvent> {
        self.events.pop_front()
    }

    /// When to call [`RxClient::handle_timeout`] next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.deadlines.first().map(|(at, _)| *at)
    }

    /// The Rx Session-Id of a call, for call records.
    pub fn session_id(&self, call: CallKey) -> Option<&str> {
        self.sessions.get(&call).map(|s| s.session_id.as_str())
    }

    /// The state of a call's Rx session and when it was entered.
    pub fn status(&self, call: CallKey) -> Option<(SessionStatus, Instant)> {
        self.sessions
            .get(&call)
            .map(|s| (s.state.status(), s.state.since()))
    }

    /// Sessions held.
    pub fn len(&self) -> usize {
        self.sessions.len()
    }

    /// Whether no session is held.
    pub fn is_empty(&self) -> bool {
        self.sessions.is_empty()
    }

    /// Counters for metrics.
    pub fn counters(&self) -> &RxCounters {
        &self.counters
    }

    /// An answer (AAA, STA) the transport delivered; returns the call it belonged to.
    /// Answers that fail validation are dropped (the request's deadline still runs).
    pub fn handle_answer(&mut self, now: Instant, answer: &Message) -> Result<CallKey, RxError> {
        if answer.is_request() {
            return Err(RxError::NotAnAnswer(answer.command_code));
        }
        let call = self.call_of(answer)?;
        if let Err(rejection) = self.validator.validate(answer) {
            self.counters.malformed_answers += 1;
            tracing::debug!(?call, detail = %rejection.error_message, "malformed Rx answer dropped");
            return Err(RxError::MalformedAnswer {
                result_code: rejection.result_code,
                detail: rejection.error_message,
            });
        }
        let Some(session) = self.sessions.get_mut(&call) else {
            return Err(RxError::UnknownCall(call));
        };
        match (&mut session.state, answer.command_code) {
            (State::Pending { next_update, .. }, command::AA) => {
                let next = next_update.take();
                self.counters
                    .aaa
                    .record(answer.result_code().or(answer.experimental_result_code()));
                match outcome(answer) {
                    Outcome::Success(result_code) => {
                        session.pcrf_host = answer.origin_host().map(str::to_string);
                        self.events.push_back(RxEvent::Authorized {
                            call,
                            kind: AarKind::Initial,
                            result_code,
                        });
                        self.after_aar(now, call, next);
                    }
                    Outcome::Failure {
                        result_code,
                        experimental,
                    } => {
                        self.events.push_back(RxEvent::Refused {
                            call,
                            kind: AarKind::Initial,
                            result_code,
                            experimental,
                        });
                        self.forget(call);
                    }
                }
                Ok(call)
            }
            (State::Updating { next_update, .. }, command::AA) => {
                let next = next_update.take();
                self.counters
                    .aaa
                    .record(answer.result_code().or(answer.experimental_result_code()));
                self.events.push_back(match outcome(answer) {
                    Outcome::Success(result_code) => RxEvent::Authorized {
                        call,
                        kind: AarKind::Update,
                        result_code,
                    },
                    Outcome::Failure {
                        result_code,
                        experimental,
                    } => RxEvent::Refused {
                        call,
                        kind: AarKind::Update,
                        result_code,
                        experimental,
                    },
                });
                self.after_aar(now, call, next);
                Ok(call)
            }
            (State::Terminating { report, .. }, command::SESSION_TERMINATION) => {
                let report = *report;
                self.counters.sta.record(answer.result_code());
                self.forget(call);
                if report {
                    self.events.push_back(RxEvent::Terminated { call });
                }
                Ok(call)
            }
            _ => {
                self.counters.stale_answers += 1;
                Err(RxError::NotOutstanding {
                    call,
                    command_code: answer.command_code,
                })
            }
        }
    }

    /// A request of ours that will get no answer: the transport gave up on it
    /// (`PeerSetEvent::Failed`) or could not send it (`SendError`). Handled as its deadline.
    pub fn handle_failure(&mut self, now: Instant, request: &Message) -> Result<CallKey, RxError> {
        if !request.is_request() {
            return Err(RxError::NotARequest(request.command_code));
        }
        let call = self.call_of(request)?;
        let outstanding = match self.sessions.get(&call).map(|s| &s.state) {
            Some(State::Pending { .. } | State::Updating { .. }) => {
                request.command_code == command::AA
            }
            Some(State::Terminating { .. }) => request.command_code == command::SESSION_TERMINATION,
            _ => false,
        };
        if !outstanding {
            return Err(RxError::NotOutstanding {
                call,
                command_code: request.command_code,
            });
        }
        self.expire(now, call);
        Ok(call)
    }

    /// A request from the PCRF (RAR, ASR); returns the answer to send. `None` only when the
    /// message is not a request.
    ///
    /// Malformed requests get the RFC 6733 §7 error answer (5001, 5005, 5014...), requests
    /// for an unknown Session-Id 5002 DIAMETER_UNKNOWN_SESSION_ID, other commands 3001 and
    /// other applications 3007.
    pub fn handle_request(&mut self, now: Instant, request: &Message) -> Option<Message> {
        if !request.is_request() {
            return None;
        }
        if request.application_id != application::RX {
            return Some(self.reject(
                request,
                &Rejection::new(
                    result_code::APPLICATION_UNSUPPORTED,
                    format!("application {} is not Rx", request.application_id),
                ),
            ));
        }
        if let Err(rejection) = self.validator.validate(request) {
            return Some(self.reject(request, &rejection));
        }
        match request.command_code {
            command::RE_AUTH => {
                self.counters.rar_received += 1;
                Some(self.on_rar(request))
            }
            command::ABORT_SESSION => {
                self.counters.asr_received += 1;
                Some(self.on_asr(now, request))
            }
            other => Some(self.reject(
                request,
                &Rejection::new(
                    result_code::COMMAND_UNSUPPORTED,
                    format!("command {other} is not an Rx request to the AF"),
                ),
            )),
        }
    }

    /// Expires every deadline at or before `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        while let Some(&(at, call)) = self.deadlines.first() {
            if at > now {
                break;
            }
            self.deadlines.pop_first();
            let current = self.sessions.get(&call).and_then(|s| s.state.deadline());
            if current == Some(at) {
                self.expire(now, call);
            }
        }
    }

    // ---- internals ----

    fn allocate_session_id(&mut self) -> String {
        let n = self.next_session;
        self.next_session = n.wrapping_add(1);
        format!(
            "{};{};{}",
            self.config.origin_host,
            n >> 32,
            n & 0xffff_ffff
        )
    }

    fn call_of(&mut self, message: &Message) -> Result<CallKey, RxError> {
        let Some(session_id) = message.session_id() else {
            return Err(RxError::MissingSessionId);
        };
        match self.by_session_id.get(session_id) {
            Some(call) => Ok(*call),
            None => {
                if !message.is_request() {
                    self.counters.stale_answers += 1;
                }
                Err(RxError::UnknownSession(session_id.to_string()))
            }
        }
    }

    /// Moves `call` to `state`, keeping the deadline index in step.
    fn set_state(&mut self, call: CallKey, state: State) {
        let Some(session) = self.sessions.get_mut(&call) else {
            return;
        };
        if let Some(old) = session.state.deadline() {
            self.deadlines.remove(&(old, call));
        }
        if let Some(new) = state.deadline() {
            self.deadlines.insert((new, call));
        }
        session.state = state;
    }

    fn forget(&mut self, call: CallKey) {
        if let Some(session) = self.sessions.remove(&call) {
            if let Some(at) = session.state.deadline() {
                self.deadlines.remove(&(at, call));
            }
            self.by_session_id.remove(&session.session_id);
        }
    }

    fn route_of(&self, call: CallKey) -> Option<Route<'_>> {
        let session = self.sessions.get(&call)?;
        Some(Route {
            session_id: &session.session_id,
            destination_host: session
                .pcrf_host
                .as_deref()
                .or(self.config.destination_host.as_deref()),
        })
    }

    fn send_update(&mut self, now: Instant, call: CallKey, params: &SessionParams) {
        let Some(route) = self.route_of(call) else {
            return;
        };
        let aar = encode::aar(&self.config, &route, params, AarKind::Update);
        self.requests.push_back((call, aar));
        self.counters.aar_update_sent += 1;
        self.set_state(
            call,
            State::Updating {
                since: now,
                deadline: now + self.config.timeout,
                next_update: None,
            },
        );
    }

    fn send_str(&mut self, now: Instant, call: CallKey, cause: TerminationCause, report: bool) {
        let Some(route) = self.route_of(call) else {
            return;
        };
        let str = encode::str(&self.config, &route, cause);
        self.requests.push_back((call, str));
        self.counters.str_sent += 1;
        self.set_state(
            call,
            State::Terminating {
                since: now,
                deadline: now + self.config.timeout,
                cause,
                report,
            },
        );
    }

    /// After an AAR's answer or its expiry: the waiting update goes out, else the session rests.
    fn after_aar(&mut self, now: Instant, call: CallKey, next: Option<Box<SessionParams>>) {
        match next {
            Some(params) => self.send_update(now, call, &params),
            None => self.set_state(call, State::Open { since: now }),
        }
    }

    /// The outstanding request of `call` will not be answered.
    fn expire(&mut self, now: Instant, call: CallKey) {
        let Some(session) = self.sessions.get_mut(&call) else {
            return;
        };
        match &mut session.state {
            State::Pending { .. } => {
                self.counters.aar_timeouts += 1;
                self.events.push_back(RxEvent::TimedOut {
                    call,
                    kind: AarKind::Initial,
                });
                // RFC 6733 §8.15: "disconnected prior to the receipt of the authorization
                // answer". The PCRF may hold state for the AAR it did receive.
                self.send_str(now, call, TerminationCause::ServiceNotProvided, false);
            }
            State::Updating { next_update, .. } => {
                let next = next_update.take();
                self.counters.aar_timeouts += 1;
                self.events.push_back(RxEvent::TimedOut {
                    call,
                    kind: AarKind::Update,
                });
                self.after_aar(now, call, next);
            }
            State::Terminating { report, cause, .. } => {
                let report = *report;
                tracing::debug!(?call, ?cause, "STR unanswered; Rx session forgotten");
                self.counters.str_timeouts += 1;
                self.forget(call);
                if report {
                    self.events.push_back(RxEvent::Terminated { call });
                }
            }
            State::Open { .. } => {}
        }
    }

    fn reject(&mut self, request: &Message, rejection: &Rejection) -> Message {
        self.counters.requests_rejected += 1;
        tracing::debug!(
            command = request.command_code,
            result_code = rejection.result_code,
            detail = %rejection.error_message,
            "rejecting Rx request"
        );
        rejection.answer(request, &self.config.origin_host, &self.config.origin_realm)
    }

    /// RAA/ASA with DIAMETER_SUCCESS (TS 29.214 §5.6.4, §5.6.8).
    fn success_answer(&self, request: &Message) -> Message {
        Message::answer_to(request)
            .with(Avp::identity(dict::ORIGIN_HOST, &self.config.origin_host))
            .with(Avp::identity(dict::ORIGIN_REALM, &self.config.origin_realm))
            .with(Avp::unsigned32(dict::RESULT_CODE, result_code::SUCCESS))
    }

    fn session_of_request(&mut self, request: &Message) -> Result<CallKey, Message> {
        match self.call_of(request) {
            Ok(call) => Ok(call),
            Err(e) => Err(self.reject(
                request,
                &Rejection::new(result_code::UNKNOWN_SESSION_ID, e.to_string()),
            )),
        }
    }

    /// RAR (TS 29.214 §4.4.6.2 and the other §4.4.6 traffic plane events): answer 2001,
    /// report the actions.
    fn on_rar(&mut self, request: &Message) -> Message {
        let call = match self.session_of_request(request) {
            Ok(call) => call,
            Err(answer) => return answer,
        };
        let actions: Vec<SpecificAction> = request
            .find_all(dict::SPECIFIC_ACTION)
            .filter_map(|a| a.as_u32().ok())
            .map(SpecificAction::from_code)
            .collect();
        let terminating = matches!(
            self.sessions.get(&call).map(|s| &s.state),
            Some(State::Terminating { .. })
        );
        if !terminating {
            let components: Vec<u32> = request
                .find_all(dict::FLOWS)
                .filter_map(|flows| {
                    flows
                        .find_in_group(dict::MEDIA_COMPONENT_NUMBER)
                        .ok()
                        .flatten()
                })
                .filter_map(|number| number.as_u32().ok())
                .collect();
            let (lost, others): (Vec<SpecificAction>, Vec<SpecificAction>) =
                actions.into_iter().partition(|a| a.is_bearer_loss());
            let (credit, others): (Vec<SpecificAction>, Vec<SpecificAction>) = others
                .into_iter()
                .partition(|a| *a == SpecificAction::IndicationOfOutOfCredit);
            if let Some(&action) = lost.first() {
                self.events.push_back(RxEvent::BearerLost {
                    call,
                    action,
                    components: components.clone(),
                });
            } else if !credit.is_empty() {
                let action = request
                    .find_all(dict::FLOWS)
                    .find_map(|flows| flows.find_in_group(dict::FINAL_UNIT_ACTION).ok().flatten())
                    .and_then(|a| a.as_u32().ok())
                    .map(FinalUnitAction::from_code);
                self.events.push_back(RxEvent::OutOfCredit {
                    call,
                    components,
                    action,
                });
            }
            if !others.is_empty() {
                self.events.push_back(RxEvent::Notified {
                    call,
                    actions: others,
                });
            }
        }
        self.success_answer(request)
    }

    /// ASR (TS 29.214 §4.4.6.1): answer 2001, report, then end the session with an STR
    /// (§4.4.4).
    fn on_asr(&mut self, now: Instant, request: &Message) -> Message {
        let call = match self.session_of_request(request) {
            Ok(call) => call,
            Err(answer) => return answer,
        };
        let terminating = matches!(
            self.sessions.get(&call).map(|s| &s.state),
            Some(State::Terminating { .. })
        );
        let answer = self.success_answer(request);
        if !terminating {
            let cause = request
                .find(dict::ABORT_CAUSE)
                .and_then(|a| a.as_u32().ok())
                .map_or(AbortCause::Other(u32::MAX), AbortCause::from_code);
            self.events.push_back(RxEvent::Aborted { call, cause });
            // RFC 6733 §8.15: DIAMETER_ADMINISTRATIVE, "such as the receipt of an
            // Abort-Session-Request message".
            self.send_str(now, call, TerminationCause::Administrative, true);
        }
        answer
    }
}
