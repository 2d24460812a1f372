//! Serving state another node of the cluster created (`B2buaConfig::share_state`).
//!
//! Registrations outlive the node that made them: the core holds the binding under the
//! cluster's front address (`B2buaConfig::sip_front`), so after a node dies its browsers
//! reconnect to another node, and the core's requests for them reach any node. When a
//! message names a registration this node does not hold (a browser's REGISTER over a new
//! connection, a request from the core naming an unknown binding token) the engine asks the
//! driver ([`Output::StateQuery`](crate::Output::StateQuery)), holds the request, and goes
//! on when the answer comes ([`Input::StateAnswer`](crate::Input::StateAnswer)). The driver
//! reads Redis; the engine never waits on it: a query left unanswered for
//! [`QUERY_TIMEOUT`] is taken as [`StateAnswer::Unknown`].
//!
//! A browser whose registration this node took over may have had calls on its old node.
//! Those are asked for next ([`StateQuery::CallsOf`]) and taken over once that node is
//! known to be gone: while its presence has not yet run out, the question is asked again
//! every [`CALLS_RETRY`], and the nodes are asked to hand them over
//! ([`Output::HandOverWanted`](crate::Output::HandOverWanted)): a node that still carries
//! them while the registration is shown held elsewhere hands them over (their browser left
//! it, even if its connection there looks open), and they are taken over at the next
//! question. A node that stops after a drain hands its calls over too.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use estuary_sip::Request;
use estuary_transaction::{Deadlines, ServerKey};

use crate::call::{CallId, LegIdx};
use crate::io::{ConnId, EndReason, Flow, SharedCall, SharedRegistration};

/// How long a held request waits for its answer.
pub const QUERY_TIMEOUT: Duration = Duration::from_secs(2);
/// Requests held at most; beyond, new ones are answered 503 rather than held.
pub const MAX_HELD: usize = 1024;
/// Between questions about a registration's calls while their node still shows as alive.
pub const CALLS_RETRY: Duration = Duration::from_millis(500);
/// How often that question is asked at most (a node's presence lasts 2 s).
pub const CALLS_ATTEMPTS: u32 = 12;

/// What the engine asks of the cluster's shared state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StateQuery {
    /// The registration a browser's REGISTER dialog (its Call-ID) made on another node, or
    /// on this node before a restart.
    RegisterDialog { web_call_id: String },
    /// The registration named by the token of the gateway's Path and Contact.
    Token { token: String },
    /// The answered call one of whose dialogs has this Call-ID: a browser that reconnected
    /// here goes on with a call another node carried.
    Dialog { call_id: String },
    /// The answered calls of the registration with this token, wherever they are.
    CallsOf { token: String },
}

/// The driver's answer to a [`StateQuery`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StateAnswer {
    /// No such registration (or the shared state could not be read).
    Unknown,
    /// The registration, and whose WebSocket carries its browser.
    Registration { registration: Box<SharedRegistration>, holder: Holder },
    /// The call, and which node carries it.
    Call { call: Box<SharedCall>, holder: Holder },
    /// A registration's calls, each with the node that carries it.
    Calls(Vec<(SharedCall, Holder)>),
}

/// Which node holds a shared registration's browser connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Holder {
    /// This node's name (it restarted since; the connection went with the old process).
    Here,
    /// No node carries it: the one that did no longer announces itself (its connections
    /// died with it), or handed it over (`SharedCall::handed_over`).
    Gone,
    /// A live node, at the address it receives the core's requests on.
    Node(SocketAddr),
}

/// What waits for an answer.
#[derive(Debug)]
pub enum Waiting {
    /// A request, held.
    Request { flow: Flow, key: ServerKey, req: Box<Request> },
    /// The calls of a registration taken over for the browser on `conn`; `attempt` counts
    /// the questions asked.
    Calls { conn: ConnId, attempt: u32 },
    /// Another node asked for the calls of this node's registration (the question is whose
    /// it is now).
    HandOver,
    /// The gateway is about to end answered call `call` on its own account (`except`,
    /// `reason` as `hangup_with` takes them), unless another node took it over meanwhile (the
    /// question is whose copy names it).
    Ending { call: CallId, except: Option<LegIdx>, reason: EndReason },
}

/// A question and what waits for its answer.
#[derive(Debug)]
pub struct Held {
    pub query: StateQuery,
    pub waiting: Waiting,
    /// Whether the question went out (a later retry waits for its time first).
    asked: bool,
}

impl Held {
    pub fn new(query: StateQuery, waiting: Waiting) -> Held {
        Held { query, waiting, asked: true }
    }
}

/// The questions out or due, by number.
#[derive(Default)]
pub struct Queries {
    next: u64,
    held: HashMap<u64, Held>,
    deadlines: Deadlines<u64>,
}

impl Queries {
    /// Holds `held`, asked now, until its answer or [`QUERY_TIMEOUT`]; `None` (and `held`
    /// dropped) when [`MAX_HELD`] are held: see [`Queries::is_full`].
    pub fn hold(&mut self, now: Instant, held: Held) -> Option<u64> {
        self.insert(now + QUERY_TIMEOUT, held)
    }

    /// Holds `held`, to be asked at `at` (see [`Queries::due`]).
    pub fn ask_at(&mut self, at: Instant, mut held: Held) -> Option<u64> {
        held.asked = false;
        self.insert(at, held)
    }

    fn insert(&mut self, at: Instant, held: Held) -> Option<u64> {
        if self.is_full() {
            return None;
        }
        self.next += 1;
        let id = self.next;
        self.held.insert(id, held);
        self.deadlines.set(&id, Some(at));
        Some(id)
    }

    /// What question `id` held, if it is still held.
    pub fn release(&mut self, id: u64) -> Option<Held> {
        self.deadlines.set(&id, None);
        self.held.remove(&id)
    }

    /// At `now`: the questions whose time to be asked came (asked now, and held until their
    /// answer or [`QUERY_TIMEOUT`]), and the held ones whose answer is overdue.
    pub fn due(&mut self, now: Instant) -> (Vec<(u64, StateQuery)>, Vec<Held>) {
        let (mut ask, mut overdue) = (Vec::new(), Vec::new());
        while let Some(id) = self.deadlines.pop_due(now) {
            match self.held.get_mut(&id) {
                Some(h) if !h.asked => {
                    h.asked = true;
                    ask.push((id, h.query.clone()));
                    self.deadlines.set(&id, Some(now + QUERY_TIMEOUT));
                }
                Some(_) => overdue.extend(self.held.remove(&id)),
                None => {}
            }
        }
        (ask, overdue)
    }

    pub fn next_deadline(&self) -> Option<Instant> {
        self.deadlines.next()
    }

    /// Whether [`MAX_HELD`] are held: no more can be.
    pub fn is_full(&self) -> bool {
        self.held.len() >= MAX_HELD
    }

    /// How many questions are held now.
    pub fn held(&self) -> usize {
        self.held.len()
    }
}
