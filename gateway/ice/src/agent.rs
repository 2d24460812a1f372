//! The ICE-lite agent: one per BUNDLE transport, always in the controlled role.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::credentials::Credentials;
use crate::stun::{self, Check, DropReason, StunError, Validator, Verdict};

/// Outputs kept while the driver does not drain [`IceLite::poll_output`]. Beyond this, new
/// responses are dropped (and counted); events are always kept. A driver that follows the drain
/// rule never gets near it: one input produces at most one transmit and one event.
const MAX_PENDING_OUTPUTS: usize = 64;

/// Timing and sizing of an agent, the part an operator tunes (`[ice]` in `etc/estuary.toml`).
///
/// The defaults are tuned for browsers: Chromium and Firefox send a consent check on the
/// selected pair every 5 s ± 1 s (RFC 7675 §5.1) and give up themselves after 30 s without
/// answers, so our 30 s matches theirs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IceSettings {
    /// How long after [`IceLite::new`] (or an [`IceLite::restart`] while nothing is selected)
    /// the browser has to nominate a pair before [`IceEvent::Failed`] with
    /// [`FailReason::NoNomination`]. Default 30 s, as RFC 7675's consent timeout: a browser
    /// that has not nominated by then has failed its own checks too.
    pub initial_timeout: Duration,
    /// How long consent lasts after the last valid Binding request on a pair. Default 30 s,
    /// RFC 7675 §5.1. The selected pair's expiry emits [`IceEvent::ConsentExpired`]; any
    /// other remote just stops being [`IceLite::is_consented`].
    pub consent_timeout: Duration,
    /// Grace after [`IceEvent::ConsentExpired`] before [`IceEvent::Failed`] with
    /// [`FailReason::ConsentLost`]. During it the media layer does not send, and a new
    /// nomination (renomination or ICE restart) revives the call. Default 0: by the time our
    /// consent expires the browser has stopped getting answers for 30 s and has declared the
    /// transport failed itself; raise it to leave room for an ICE restart through signalling.
    pub teardown_after: Duration,
    /// How many (local, remote) pairs are remembered as checked for [`IceLite::is_consented`].
    /// A browser checks a handful of pairs (host, srflx and relay, IPv4 and IPv6); beyond the
    /// limit the least recently checked non-selected pair is forgotten. Default 8, minimum 1.
    pub max_checked_pairs: usize,
}

impl Default for IceSettings {
    fn default() -> Self {
        IceSettings {
            initial_timeout: Duration::from_secs(30),
            consent_timeout: Duration::from_secs(30),
            teardown_after: Duration::ZERO,
            max_checked_pairs: 8,
        }
    }
}

/// What one agent needs: its credentials, the browser's if known, and the settings.
#[derive(Clone, Debug)]
pub struct IceConfig {
    /// Our `a=ice-ufrag` / `a=ice-pwd`, usually from [`Credentials::generate`].
    pub local: Credentials,
    /// The browser's credentials from its SDP; `None` until its SDP arrives (see
    /// [`IceLite::set_remote_credentials`]). Only the ufrag is used: a lite agent sends no
    /// checks, so it never signs with the remote password.
    pub remote: Option<Credentials>,
    /// Our ICE tie-breaker (RFC 8445 §16.1). A lite agent never sends it; it is only compared
    /// in role-conflict handling, see [`IceLite`] "Role". Any value works; 0 is the default.
    pub tie_breaker: u64,
    /// Timers and limits.
    pub settings: IceSettings,
}

impl IceConfig {
    /// A config with default settings and no remote credentials yet.
    pub fn new(local: Credentials) -> Self {
        IceConfig {
            local,
            remote: None,
            tie_breaker: 0,
            settings: IceSettings::default(),
        }
    }
}

/// Input to [`IceLite::handle_input`].
#[derive(Clone, Copy, Debug)]
pub enum Input<'a> {
    /// A datagram arrived on the web-side socket `local` from `source`.
    Receive {
        /// Our address it arrived on; responses leave from it.
        local: SocketAddr,
        /// The sender's address as the socket reports it.
        source: SocketAddr,
        /// The datagram.
        data: &'a [u8],
    },
}

/// What the agent asks of its driver, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Output {
    /// Send a STUN response.
    Transmit(Transmit),
    /// Something the media layer must act on.
    Event(IceEvent),
}

/// A datagram to send: from our `from` socket address to `to`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transmit {
    /// The local address the request arrived on: ICE responses are symmetric, sent from where
    /// the request was sent to (RFC 8445 §7.3), or the browser cannot match them to its pair.
    pub from: SocketAddr,
    /// The request's source address.
    pub to: SocketAddr,
    /// The encoded STUN message (under 100 bytes).
    pub data: Vec<u8>,
}

/// Events for the media layer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum IceEvent {
    /// The browser nominated this pair (USE-CANDIDATE, RFC 8445 §7.3.1.5 and §8.2): send media
    /// from `local` to `remote` from now on. Emitted again whenever the selected pair changes
    /// (renomination after a network change, a nomination after an ICE restart) and when a
    /// nomination revives a pair after [`IceEvent::ConsentExpired`].
    Nominated {
        /// Our address of the pair.
        local: SocketAddr,
        /// The browser's address of the pair; peer-reflexive addresses are fine.
        remote: SocketAddr,
    },
    /// No valid Binding request on the selected pair for `consent_timeout` (RFC 7675 §5.1):
    /// stop sending media now. [`IceLite::selected`] is `None` from here on.
    ConsentExpired {
        /// Our address of the pair that lost consent.
        local: SocketAddr,
        /// The browser's address of the pair that lost consent.
        remote: SocketAddr,
    },
    /// The transport is dead; end the call. Terminal: the agent answers nothing afterwards.
    Failed {
        /// What ran out.
        reason: FailReason,
    },
}

/// Why an agent failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FailReason {
    /// No nomination within `initial_timeout`.
    NoNomination,
    /// Consent expired and `teardown_after` passed without a new nomination.
    ConsentLost,
}

/// The agent's timers, in the order they can run (R3 of the style guide: the reason a deadline
/// is what it is). See [`IceLite::next_timer`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Timer {
    /// No nomination yet; fires [`FailReason::NoNomination`].
    Initial,
    /// RFC 7675 §5.1 consent on the selected pair; fires [`IceEvent::ConsentExpired`].
    Consent,
    /// Grace after consent expiry; fires [`FailReason::ConsentLost`].
    Teardown,
    /// Consent of a checked pair other than the selected one; it silently stops being
    /// [`IceLite::is_consented`].
    CheckedPair,
}

/// A data-free view of the agent's state, for logs and metrics.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IceState {
    /// Waiting for the first nomination.
    Checking,
    /// A pair is selected and its consent is fresh.
    Connected,
    /// The selected pair lost consent; waiting for a new nomination or the teardown timer.
    ConsentExpired,
    /// Terminal.
    Failed,
}

/// Counters for the gateway's metrics. All only grow.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IceCounters {
    /// Binding requests answered with a success response.
    pub binding_success: u64,
    /// 400 Bad Request sent: USERNAME or MESSAGE-INTEGRITY missing.
    pub bad_request: u64,
    /// 401 Unauthorized sent: wrong ufrag (including old credentials after a restart) or
    /// wrong integrity.
    pub unauthorized: u64,
    /// 420 Unknown Attribute sent.
    pub unknown_attribute: u64,
    /// 487 Role Conflict sent.
    pub role_conflict: u64,
    /// Of `role_conflict`: requests where RFC 8445 §7.3.1.1 would have had a full agent switch
    /// to controlling (our tie-breaker >= theirs), which a lite agent cannot.
    pub role_switch_refused: u64,
    /// [`IceEvent::Nominated`] events.
    pub nominations: u64,
    /// STUN dropped because header, length or attributes were malformed.
    pub dropped_malformed: u64,
    /// STUN dropped because FINGERPRINT was wrong.
    pub dropped_fingerprint: u64,
    /// Well-formed STUN that is not a Binding request (responses, indications, other methods),
    /// or a request from an unusable source address (port 0, unspecified IP).
    pub dropped_unexpected: u64,
    /// STUN dropped because the agent had failed.
    pub dropped_failed: u64,
    /// Responses dropped because the driver did not drain the output queue.
    pub dropped_backlog: u64,
}

impl IceCounters {
    /// Every STUN datagram that got no answer.
    pub fn dropped(&self) -> u64 {
        self.dropped_malformed
            + self.dropped_fingerprint
            + self.dropped_unexpected
            + self.dropped_failed
            + self.dropped_backlog
    }
}

/// Misuse of [`IceLite::handle_input`]: input that is not for the ICE agent at all.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum IceError {
    /// The datagram is not STUN by RFC 7983 (first byte) and the magic cookie; the caller
    /// should have routed it to DTLS or SRTP. Nothing was counted or changed.
    #[error("not a STUN message (RFC 7983)")]
    NotStun,
}

/// A candidate pair as the lite agent sees it: the 5-tuple of a check (UDP only).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Pair {
    local: SocketAddr,
    remote: SocketAddr,
}

/// A pair from which a valid Binding request arrived, and when the last one did.
#[derive(Clone, Copy, Debug)]
struct CheckedPair {
    pair: Pair,
    last_check: Instant,
}

/// The agent's state; each variant carries only what is valid in it (R4).
#[derive(Clone, Copy, Debug)]
enum State {
    /// No nomination yet, since `since` (creation or restart).
    Checking { since: Instant },
    /// `pair` is selected; `last_check` is its latest valid Binding request.
    Connected { pair: Pair, last_check: Instant },
    /// The selected pair lost consent at `at` (its consent deadline, not when we noticed).
    Expired { at: Instant },
    /// Terminal.
    Failed,
}

/// An ICE-lite agent (RFC 8445 §2.5) for one BUNDLE transport, with consent freshness
/// (RFC 7675) as seen from the side that only answers.
///
/// See the crate docs for the drive loop. In short: feed STUN datagrams to
/// [`handle_input`](Self::handle_input), call [`handle_timeout`](Self::handle_timeout) at
/// [`poll_timeout`](Self::poll_timeout), and after either (or any `&mut self` method) drain
/// [`poll_output`](Self::poll_output) to `None`, then re-read `poll_timeout`.
///
/// # Role
///
/// A lite agent always takes the controlled role (RFC 8445 §6.1.1) and the browser, a full
/// agent, controls. If a request carries ICE-CONTROLLED, both sides think they are controlled
/// and RFC 8445 §7.3.1.1 applies ("agent in the controlled role, ICE-CONTROLLED present"):
///
/// - our tie-breaker < theirs: answer 487 (Role Conflict) and keep the role. This is the
///   branch we take, literally.
/// - our tie-breaker >= theirs: the RFC says switch to controlling. A lite agent cannot: it
///   has no check list and cannot nominate (§2.5, §6.1.1 make lite always controlled), so we
///   answer 487 here too and count it in [`IceCounters::role_switch_refused`].
///
/// Either way the browser, on a 487 to a request that carried ICE-CONTROLLED, switches to
/// controlling (§7.2.5.1) and checks again, which is the outcome lite needs. The rejected
/// request refreshes no consent and nominates nothing. Requests with ICE-CONTROLLING are the
/// normal case; requests with neither (pre-RFC 5245 peers) cannot be checked for a conflict
/// and are served (§7.3.1.1).
///
/// # Credentials
///
/// USERNAME must be `<local ufrag>:<remote ufrag>` and MESSAGE-INTEGRITY must verify with the
/// local password. While the remote ufrag is unknown, any remote half is accepted (our ufrag and
/// password already prove the sender has our SDP). [`restart`](Self::restart) replaces both;
/// requests under the old ones then get 401.
///
/// # Candidates
///
/// A lite agent needs no remote candidates: any source address that passes the checks is a
/// usable remote, peer-reflexive ones included (RFC 8445 §7.3.1.3). The SDP candidates are
/// therefore not an input here.
#[derive(Debug)]
pub struct IceLite {
    local: Credentials,
    remote: Option<Credentials>,
    tie_breaker: u64,
    settings: IceSettings,
    validator: ValidatorBox,
    state: State,
    checked: Vec<CheckedPair>,
    outputs: VecDeque<Output>,
    counters: IceCounters,
}

/// Keeps the validator out of `Debug` output: its stun-rs decoders would print the HMAC key.
struct ValidatorBox(Validator);

impl std::fmt::Debug for ValidatorBox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Validator")
    }
}

impl IceLite {
    /// A new agent, waiting for the browser's checks. The initial timer starts at `now`.
    pub fn new(config: IceConfig, now: Instant) -> Self {
        let IceConfig {
            local,
            remote,
            tie_breaker,
            mut settings,
        } = config;
        settings.max_checked_pairs = settings.max_checked_pairs.max(1);
        IceLite {
            validator: ValidatorBox(Validator::new(&local, remote.as_ref())),
            local,
            remote,
            tie_breaker,
            settings,
            state: State::Checking { since: now },
            checked: Vec::new(),
            outputs: VecDeque::new(),
            counters: IceCounters::default(),
        }
    }

    /// Feeds one datagram. Returns [`IceError::NotStun`] (and changes nothing) for datagrams
    /// that are clearly not STUN; everything else is handled, answered or dropped and counted,
    /// and `Ok` is returned whatever the peer sent.
    ///
    /// Afterwards drain [`poll_output`](Self::poll_output) and re-read
    /// [`poll_timeout`](Self::poll_timeout): a valid request moves the consent deadline.
    pub fn handle_input(&mut self, now: Instant, input: Input<'_>) -> Result<(), IceError> {
        let Input::Receive {
            local,
            source,
            data,
        } = input;
        if !stun::is_stun(data) {
            return Err(IceError::NotStun);
        }
        if matches!(self.state, State::Failed) {
            self.counters.dropped_failed += 1;
            return Ok(());
        }
        if source.port() == 0 || source.ip().is_unspecified() {
            // Not an address anyone can answer to; the socket layer would refuse the send.
            self.counters.dropped_unexpected += 1;
            return Ok(());
        }
        let pair = Pair {
            local,
            remote: source,
        };
        match self.validator.0.check(data) {
            Verdict::Drop(DropReason::Malformed) => self.counters.dropped_malformed += 1,
            Verdict::Drop(DropReason::Fingerprint) => self.counters.dropped_fingerprint += 1,
            Verdict::Drop(DropReason::Unexpected) => self.counters.dropped_unexpected += 1,
            Verdict::Reject { tid, error } => self.reject(pair, tid, error),
            Verdict::Accept(check) => self.on_check(now, pair, check),
        }
        Ok(())
    }

    /// Fires every timer due at `now` (see [`Timer`]). Calling it early or twice is harmless.
    ///
    /// Afterwards drain [`poll_output`](Self::poll_output): this is where
    /// [`IceEvent::ConsentExpired`] and [`IceEvent::Failed`] come from.
    pub fn handle_timeout(&mut self, now: Instant) {
        let consent = self.settings.consent_timeout;
        self.checked.retain(|c| !due(c.last_check, consent, now));
        // Several transitions can be due at once (teardown_after = 0, or a late call); each
        // uses the deadline it was due at, not `now`, so results do not depend on lateness.
        loop {
            match self.state {
                State::Checking { since } if due(since, self.settings.initial_timeout, now) => {
                    self.fail(FailReason::NoNomination);
                }
                State::Connected { pair, last_check } if due(last_check, consent, now) => {
                    let at = after(last_check, consent).unwrap_or(now);
                    self.state = State::Expired { at };
                    self.event(IceEvent::ConsentExpired {
                        local: pair.local,
                        remote: pair.remote,
                    });
                }
                State::Expired { at } if due(at, self.settings.teardown_after, now) => {
                    self.fail(FailReason::ConsentLost);
                }
                _ => break,
            }
        }
    }

    /// The next output, or `None` when there is nothing to do until the next input or timeout.
    ///
    /// Poll again after every [`handle_input`](Self::handle_input),
    /// [`handle_timeout`](Self::handle_timeout), [`restart`](Self::restart) and
    /// [`set_remote_credentials`](Self::set_remote_credentials), until it returns `None`.
    /// Outputs come in the order they arose: the response to a request before the
    /// [`IceEvent::Nominated`] it caused.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.outputs.pop_front()
    }

    /// When [`handle_timeout`](Self::handle_timeout) must next be called, or `None` if no timer
    /// runs (only after [`IceEvent::Failed`]). Re-read it after draining
    /// [`poll_output`](Self::poll_output): inputs move deadlines.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.next_timer().map(|(at, _)| at)
    }

    /// Like [`poll_timeout`](Self::poll_timeout), with the timer that sets the deadline, so a
    /// composite engine can say why it wakes up (R3).
    pub fn next_timer(&self) -> Option<(Instant, Timer)> {
        let s = &self.settings;
        let (state_timer, pair) = match self.state {
            State::Checking { since } => (
                after(since, s.initial_timeout).map(|t| (t, Timer::Initial)),
                None,
            ),
            State::Connected { pair, last_check } => (
                after(last_check, s.consent_timeout).map(|t| (t, Timer::Consent)),
                Some(pair),
            ),
            State::Expired { at } => (
                after(at, s.teardown_after).map(|t| (t, Timer::Teardown)),
                None,
            ),
            State::Failed => return None,
        };
        let checked = self
            .checked
            .iter()
            .filter(|c| Some(c.pair) != pair)
            .filter_map(|c| after(c.last_check, s.consent_timeout))
            .min()
            .map(|t| (t, Timer::CheckedPair));
        [state_timer, checked]
            .into_iter()
            .flatten()
            .min_by_key(|(t, _)| *t)
    }

    /// ICE restart (RFC 8445 §9) from a re-offer or re-answer: new local credentials, and the
    /// browser's new ones if its SDP is already known. Requests under the old credentials get
    /// 401 from now on.
    ///
    /// As §9 says, data keeps flowing on the current pair during the restart: a selected pair
    /// stays selected, and its consent continues to need valid checks, which now must use the
    /// new credentials; a nomination under them selects the new pair. If nothing has been
    /// selected yet, the initial timer starts again at `now`. After [`IceEvent::Failed`] a
    /// restart changes the credentials but does not revive the agent.
    pub fn restart(&mut self, now: Instant, local: Credentials, remote: Option<Credentials>) {
        self.validator = ValidatorBox(Validator::new(&local, remote.as_ref()));
        self.local = local;
        self.remote = remote;
        if let State::Checking { since } = &mut self.state {
            *since = now;
        }
    }

    /// The browser's credentials arrived (its answer to our offer), within the same ICE
    /// session. From now on USERNAME must end in exactly this ufrag.
    pub fn set_remote_credentials(&mut self, remote: Credentials) {
        self.validator.0.set_remote_ufrag(remote.ufrag());
        self.remote = Some(remote);
    }

    /// The pair the media layer may send on: `(local, remote)` of the nominated pair while its
    /// consent is fresh. `None` before the first nomination, after consent expired and after
    /// failure: the media layer must not send then.
    pub fn selected(&self) -> Option<(SocketAddr, SocketAddr)> {
        match self.state {
            State::Connected { pair, .. } => Some((pair.local, pair.remote)),
            _ => None,
        }
    }

    /// Whether `remote` sent a valid Binding request (on any of our local addresses) within
    /// `consent_timeout`, as of the last `handle_*` call. Use it to accept DTLS and SRTP only
    /// from checked addresses (RFC 7675: consent to receive before sending). A checked
    /// remote need not be the selected one: DTLS can start before the browser nominates.
    pub fn is_consented(&self, remote: SocketAddr) -> bool {
        self.checked.iter().any(|c| c.pair.remote == remote)
    }

    /// Our current credentials, for the SDP (`a=ice-ufrag`, `a=ice-pwd`).
    pub fn local_credentials(&self) -> &Credentials {
        &self.local
    }

    /// The browser's credentials, once known.
    pub fn remote_credentials(&self) -> Option<&Credentials> {
        self.remote.as_ref()
    }

    /// A data-free view of the state.
    pub fn state(&self) -> IceState {
        match self.state {
            State::Checking { .. } => IceState::Checking,
            State::Connected { .. } => IceState::Connected,
            State::Expired { .. } => IceState::ConsentExpired,
            State::Failed => IceState::Failed,
        }
    }

    /// The counters so far.
    pub fn counters(&self) -> IceCounters {
        self.counters
    }

    /// An authenticated Binding request: role check, answer, consent, nomination.
    fn on_check(&mut self, now: Instant, pair: Pair, check: Check) {
        // RFC 8445 §7.3.1.1, controlled agent receiving ICE-CONTROLLED (see the type docs).
        if let Some(theirs) = check.ice_controlled {
            if self.tie_breaker >= theirs {
                self.counters.role_switch_refused += 1;
            }
            self.reject(pair, check.tid, StunError::RoleConflict);
            return;
        }
        // ICE-CONTROLLING (the browser's normal role) or neither: no conflict (§7.3.1.1).

        match stun::encode_response(check.tid, Ok(pair.remote), self.validator.0.key()) {
            Some(data) => {
                self.counters.binding_success += 1;
                self.transmit(pair, data);
            }
            // Our encoder refused our own message: a bug, not the peer's fault. Do not let the
            // request count as consent, since the browser gets no answer.
            None => {
                self.counters.dropped_malformed += 1;
                return;
            }
        }
        self.record_check(now, pair);

        // RFC 8445 §7.3.1.5 / §8.2: USE-CANDIDATE from the controlling agent nominates the pair
        // the request arrived on. A lite agent selects it at once. A later nomination of
        // another pair replaces it: browsers renominate after network changes and ICE restarts,
        // and the latest nomination is where they send.
        let refreshes_selected =
            matches!(self.state, State::Connected { pair: p, .. } if p == pair);
        if refreshes_selected {
            self.state = State::Connected {
                pair,
                last_check: now,
            };
        } else if check.use_candidate {
            self.state = State::Connected {
                pair,
                last_check: now,
            };
            self.counters.nominations += 1;
            self.event(IceEvent::Nominated {
                local: pair.local,
                remote: pair.remote,
            });
        }
        // Otherwise a check on a pair that is not selected (or after consent expired) without
        // USE-CANDIDATE only makes that pair consented.
    }

    fn reject(&mut self, pair: Pair, tid: stun_rs::TransactionId, error: StunError) {
        let counter = match &error {
            StunError::BadRequest => &mut self.counters.bad_request,
            StunError::Unauthorized => &mut self.counters.unauthorized,
            StunError::UnknownAttribute(_) => &mut self.counters.unknown_attribute,
            StunError::RoleConflict => &mut self.counters.role_conflict,
        };
        *counter += 1;
        match stun::encode_response(tid, Err(&error), self.validator.0.key()) {
            Some(data) => self.transmit(pair, data),
            None => self.counters.dropped_malformed += 1,
        }
    }

    /// Remembers that `pair` passed a check at `now`, for consent and `is_consented`.
    fn record_check(&mut self, now: Instant, pair: Pair) {
        if let Some(c) = self.checked.iter_mut().find(|c| c.pair == pair) {
            c.last_check = now;
            return;
        }
        let entry = CheckedPair {
            pair,
            last_check: now,
        };
        if self.checked.len() < self.settings.max_checked_pairs {
            self.checked.push(entry);
            return;
        }
        // Full: forget the least recently checked pair that is not the selected one.
        let selected = match self.state {
            State::Connected { pair, .. } => Some(pair),
            _ => None,
        };
        let oldest = self
            .checked
            .iter_mut()
            .filter(|c| Some(c.pair) != selected)
            .min_by_key(|c| c.last_check);
        if let Some(slot) = oldest {
            *slot = entry;
        }
    }

    fn fail(&mut self, reason: FailReason) {
        self.state = State::Failed;
        self.checked.clear();
        self.event(IceEvent::Failed { reason });
    }

    fn transmit(&mut self, pair: Pair, data: Vec<u8>) {
        if self.outputs.len() >= MAX_PENDING_OUTPUTS {
            self.counters.dropped_backlog += 1;
            return;
        }
        self.outputs.push_back(Output::Transmit(Transmit {
            from: pair.local,
            to: pair.remote,
            data,
        }));
    }

    fn event(&mut self, event: IceEvent) {
        self.outputs.push_back(Output::Event(event));
    }
}

/// `start + d`, or `None` if that is beyond what `Instant` can hold (the timer never fires).
fn after(start: Instant, d: Duration) -> Option<Instant> {
    start.checked_add(d)
}

/// Whether the deadline `start + d` has been reached at `now`. Deadlines are inclusive: a timer
/// due at `t` fires when `handle_timeout(t)` is called.
fn due(start: Instant, d: Duration, now: Instant) -> bool {
    after(start, d).is_some_and(|t| t <= now)
}
