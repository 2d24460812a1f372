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

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use estuary_sip::Request;
use estuary_transaction::{Deadlines, ServerKey};

use crate::io::{Flow, SharedCall, SharedRegistration};

/// How long a held request waits for its answer.
pub const QUERY_TIMEOUT: Duration = Duration::from_secs(2);
/// Requests held at most; beyond, new ones are answered 503 rather than held.
pub const MAX_HELD: usize = 1024;

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
}

/// The driver's answer to a [`StateQuery`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StateAnswer {
    /// No such registration (or the shared state could not be read).
    Unknown,
    /// The registration, and whose WebSocket carries its browser; for a REGISTER dialog, also
    /// the answered calls of that registration no live node carries (its node died).
    Registration { registration: Box<SharedRegistration>, holder: Holder, calls: Vec<SharedCall> },
    /// The call, and which node carries it.
    Call { call: Box<SharedCall>, holder: Holder },
}

/// Which node holds a shared registration's browser connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Holder {
    /// This node's name (it restarted since; the connection went with the old process).
    Here,
    /// A node that no longer announces itself: its connections died with it.
    Gone,
    /// A live node, at the address it receives the core's requests on.
    Node(SocketAddr),
}

/// A request held for its answer.
#[derive(Debug)]
pub struct Held {
    pub query: StateQuery,
    pub flow: Flow,
    pub key: ServerKey,
    pub req: Request,
}

/// The held requests, by query number.
#[derive(Default)]
pub struct Queries {
    next: u64,
    held: HashMap<u64, Held>,
    deadlines: Deadlines<u64>,
}

impl Queries {
    /// Holds `held` until its answer or [`QUERY_TIMEOUT`]; `None` when [`MAX_HELD`] are held.
    pub fn hold(&mut self, now: Instant, held: Held) -> Option<u64> {
        if self.held.len() >= MAX_HELD {
            return None;
        }
        self.next += 1;
        let id = self.next;
        self.held.insert(id, held);
        self.deadlines.set(&id, Some(now + QUERY_TIMEOUT));
        Some(id)
    }

    /// The request query `id` held, if it is still held.
    pub fn release(&mut self, id: u64) -> Option<Held> {
        self.deadlines.set(&id, None);
        self.held.remove(&id)
    }

    /// The held requests whose answer is overdue at `now`.
    pub fn overdue(&mut self, now: Instant) -> Vec<Held> {
        std::iter::from_fn(|| self.deadlines.pop_due(now)).filter_map(|id| self.held.remove(&id)).collect()
    }

    pub fn next_deadline(&self) -> Option<Instant> {
        self.deadlines.next()
    }

    /// How many requests are held now.
    pub fn held(&self) -> usize {
        self.held.len()
    }
}
