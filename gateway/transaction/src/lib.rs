//! RFC 3261 §17 transactions, sans-IO.
//!
//! A [`Transactions`] table holds every client and server transaction of one SIP element. The
//! transaction user (the B2BUA) drives it:
//!
//! - outbound: [`Transactions::send_request`], [`Transactions::send_response`];
//! - inbound: [`Transactions::receive_request`], [`Transactions::receive_response`], which say
//!   whether the message is new (pass it up) or a retransmission the table absorbed;
//! - time: after any call, drain [`Transactions::poll_event`] (bytes to transmit, timeouts), and
//!   call [`Transactions::handle_timeout`] at [`Transactions::poll_timeout`].
//!
//! Nothing here reads a clock or touches a socket: `now` comes in with every call, and the flow
//! a message travels on is an opaque `F` chosen by the caller.
//!
//! Beyond RFC 3261 the table implements RFC 6026: an INVITE server transaction that sent a 2xx
//! moves to *Accepted* (Timer L) and absorbs retransmitted INVITEs, and an INVITE client
//! transaction that received a 2xx moves to *Accepted* (Timer M) and passes 2xx retransmissions
//! up so the TU can repeat its ACK. The UAS-core duty of retransmitting a 2xx until the ACK
//! arrives (RFC 3261 §13.3.1.4) is also done here, in the Accepted state, because the table
//! already owns the response bytes and the timer machinery.

mod client;
pub mod deadlines;
mod server;
mod timer;

use std::collections::{HashMap, HashSet, VecDeque};
use std::time::Instant;

use estuary_sip::{Method, Request, Response};

pub use deadlines::Deadlines;
pub use timer::{Timer, TimerConfig};

use client::ClientTx;
use server::ServerTx;

/// RFC 3261 §8.1.1.7: branches of compliant elements start with this cookie.
pub const MAGIC_COOKIE: &str = "z9hG4bK";

/// Identifies a client transaction (RFC 3261 §17.1.3): top Via branch plus CSeq method.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ClientKey {
    pub branch: String,
    pub method: Method,
}

/// Identifies a server transaction (RFC 3261 §17.2.3): branch, sent-by and method, with ACK
/// folded into INVITE. For pre-3261 peers (no magic cookie) the branch holds a digest of the
/// fields §17.2.3 lists instead.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ServerKey {
    pub branch: String,
    pub sent_by: String,
    pub method: Method,
}

/// What the table tells its user, in order.
#[derive(Debug)]
pub enum Event<F> {
    /// Put these bytes on the wire toward `flow`.
    Transmit { flow: F, data: Vec<u8> },
    /// A client transaction ended without a final response: Timer B or F fired, or the transport
    /// failed. The TU acts as if a 408 (or 503 on transport failure) had arrived (§8.1.3.1).
    ClientFailed { key: ClientKey, cause: FailureCause },
    /// An INVITE server transaction saw no ACK for its final response within 64*T1 (Timer H,
    /// or Timer L for a 2xx). For a 2xx the TU should end the dialog with BYE (§13.3.1.4).
    AckTimeout { key: ServerKey, code: u16 },
}

/// Why a client transaction failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FailureCause {
    /// Timer B or F: nobody answered.
    Timeout,
    /// The transport reported the destination unreachable.
    Transport,
}

/// What an inbound request is to the table.
#[derive(Debug, PartialEq, Eq)]
pub enum RequestOutcome {
    /// A new request with its own new server transaction; pass it to the TU.
    New {
        key: ServerKey,
        /// For CANCEL: the INVITE server transaction it targets, if one is pending.
        cancels: Option<ServerKey>,
    },
    /// A retransmission; the table answered it (or ignored it) and the TU must not see it.
    Retransmission,
    /// An ACK that belongs to a non-2xx final response; absorbed by the transaction.
    AckAbsorbed,
    /// An ACK that is not part of any transaction: the ACK for a 2xx, which is its own request
    /// (§17.1.1.3). `accepted` names the INVITE server transaction whose 2xx it acknowledges,
    /// which stops that 2xx's retransmission. The TU routes it by dialog.
    Ack { accepted: Option<ServerKey> },
}

/// What an inbound response is to the table.
#[derive(Debug, PartialEq, Eq)]
pub enum ResponseOutcome {
    /// Pass this response to the TU as a response to the transaction `key`.
    Deliver(ClientKey),
    /// A retransmission of a 2xx to an INVITE in the Accepted state: the TU must re-send its ACK
    /// but must not treat it as a new answer.
    Retransmitted2xx(ClientKey),
    /// Absorbed (a retransmission) or stray (no transaction): drop it.
    Absorb,
}

/// Errors the TU can make when using the table. These are bugs in the caller, not in the peer.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum UsageError {
    #[error("request has no usable top Via branch")]
    NoBranch,
    #[error("request has no CSeq")]
    NoCSeq,
    #[error("no such server transaction")]
    NoTransaction,
    #[error("transaction already sent a final response")]
    AlreadyFinal,
}

/// A transaction in the timer heap.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum TxKey {
    Client(ClientKey),
    Server(ServerKey),
}

/// Every transaction of one SIP element. Their deadlines live in a [`Deadlines`] heap, set
/// after every change to a transaction.
pub struct Transactions<F> {
    timers: TimerConfig,
    clients: HashMap<ClientKey, ClientTx<F>>,
    servers: HashMap<ServerKey, ServerTx<F>>,
    /// INVITE server transactions in Accepted, by (Call-ID, CSeq number), so the ACK for the
    /// 2xx (which carries a new branch) can find the transaction to stop retransmitting.
    accepted: HashMap<(String, u32), ServerKey>,
    events: VecDeque<Event<F>>,
    due: Deadlines<TxKey>,
    /// Client transactions by the flow they were sent on: a connection that closes fails
    /// its own transactions without a scan of all of them.
    by_flow: HashMap<F, HashSet<ClientKey>>,
}

impl<F: Copy + std::fmt::Debug + Eq + std::hash::Hash> Transactions<F> {
    /// An empty table.
    pub fn new(timers: TimerConfig) -> Self {
        Transactions {
            timers,
            clients: HashMap::new(),
            servers: HashMap::new(),
            accepted: HashMap::new(),
            events: VecDeque::new(),
            due: Deadlines::default(),
            by_flow: HashMap::new(),
        }
    }

    /// Removes client transaction `key` from the table and the flow index (its deadline
    /// is the caller's to clear or leave to lapse).
    fn remove_client(&mut self, key: &ClientKey) -> Option<ClientTx<F>> {
        let tx = self.clients.remove(key)?;
        if let Some(keys) = self.by_flow.get_mut(&tx.flow()) {
            keys.remove(key);
            if keys.is_empty() {
                self.by_flow.remove(&tx.flow());
            }
        }
        Some(tx)
    }

    /// Puts client transaction `key`'s deadline in the heap.
    fn schedule_client(&mut self, key: &ClientKey) {
        let deadline = self.clients.get(key).and_then(ClientTx::deadline);
        self.due.set(&TxKey::Client(key.clone()), deadline);
    }

    /// Puts server transaction `key`'s deadline in the heap.
    fn schedule_server(&mut self, key: &ServerKey) {
        let deadline = self.servers.get(key).and_then(ServerTx::deadline);
        self.due.set(&TxKey::Server(key.clone()), deadline);
    }

    /// Number of live client and server transactions.
    pub fn len(&self) -> (usize, usize) {
        (self.clients.len(), self.servers.len())
    }

    /// Start a client transaction: the request is sent now and retransmitted as the RFC says.
    /// The request must carry its final top Via with a unique branch. ACK requests are not
    /// transactions; send them with [`Transactions::send_stateless`].
    pub fn send_request(
        &mut self,
        now: Instant,
        request: &Request,
        flow: F,
        reliable: bool,
    ) -> Result<ClientKey, UsageError> {
        let key = client_key(request)?;
        let tx = ClientTx::start(now, &self.timers, request, flow, reliable);
        self.events.push_back(Event::Transmit { flow, data: tx.request_bytes().to_vec() });
        // A reused key replaces its transaction, and its deadline.
        self.remove_client(&key);
        self.by_flow.entry(flow).or_default().insert(key.clone());
        self.clients.insert(key.clone(), tx);
        self.schedule_client(&key);
        Ok(key)
    }

    /// Send a message outside any transaction (ACK for 2xx, stateless responses).
    pub fn send_stateless(&mut self, flow: F, data: Vec<u8>) {
        self.events.push_back(Event::Transmit { flow, data });
    }

    /// Classify an inbound response.
    pub fn receive_response(&mut self, now: Instant, response: &Response) -> ResponseOutcome {
        let Some(key) = response_key(response) else { return ResponseOutcome::Absorb };
        let Some(tx) = self.clients.get_mut(&key) else { return ResponseOutcome::Absorb };
        let outcome = tx.on_response(now, &self.timers, response);
        if let Some(data) = tx.take_transmit() {
            self.events.push_back(Event::Transmit { flow: tx.flow(), data });
        }
        self.schedule_client(&key);
        match outcome {
            client::Disposition::Deliver => ResponseOutcome::Deliver(key),
            client::Disposition::Retransmitted2xx => ResponseOutcome::Retransmitted2xx(key),
            client::Disposition::Absorb => ResponseOutcome::Absorb,
        }
    }

    /// Classify an inbound request, answering retransmissions from the stored response.
    /// `flow` is where responses to it go (RFC 3261 §18.2.2: the connection it came on, or the
    /// source address for UDP, as with rport).
    pub fn receive_request(
        &mut self,
        now: Instant,
        request: &Request,
        flow: F,
        reliable: bool,
    ) -> RequestOutcome {
        let Some(key) = server_key(request) else {
            // Without Via or CSeq the request cannot be a transaction; the caller has
            // validated it already, so treat it as new with a synthetic key.
            return RequestOutcome::New {
                key: ServerKey { branch: String::new(), sent_by: String::new(), method: request.method.clone() },
                cancels: None,
            };
        };
        if let Some(tx) = self.servers.get_mut(&key) {
            let is_ack = request.method == Method::Ack;
            let outcome = tx.on_request(now, &self.timers, is_ack);
            if let Some(data) = tx.take_transmit() {
                self.events.push_back(Event::Transmit { flow: tx.flow(), data });
            }
            self.schedule_server(&key);
            return outcome;
        }
        if request.method == Method::Ack {
            let accepted = request
                .headers
                .call_id()
                .ok()
                .zip(request.headers.cseq().ok())
                .and_then(|(cid, cseq)| self.accepted.remove(&(cid.to_owned(), cseq.seq)));
            if let Some(k) = &accepted {
                if let Some(tx) = self.servers.get_mut(k) {
                    tx.on_2xx_ack();
                }
                self.schedule_server(k);
            }
            return RequestOutcome::Ack { accepted };
        }
        let cancels = if request.method == Method::Cancel {
            let invite = ServerKey { method: Method::Invite, ..key.clone() };
            self.servers.get(&invite).filter(|tx| !tx.is_final()).map(|_| invite)
        } else {
            None
        };
        let tx = ServerTx::new(request, flow, reliable);
        self.servers.insert(key.clone(), tx);
        self.schedule_server(&key);
        RequestOutcome::New { key, cancels }
    }

    /// Send a response within a server transaction.
    pub fn send_response(
        &mut self,
        now: Instant,
        key: &ServerKey,
        response: &Response,
    ) -> Result<(), UsageError> {
        let tx = self.servers.get_mut(key).ok_or(UsageError::NoTransaction)?;
        tx.send(now, &self.timers, response)?;
        if let Some(data) = tx.take_transmit() {
            self.events.push_back(Event::Transmit { flow: tx.flow(), data });
        }
        if tx.is_accepted() {
            if let (Ok(cid), Ok(cseq)) = (response.headers.call_id(), response.headers.cseq()) {
                self.accepted.insert((cid.to_owned(), cseq.seq), key.clone());
            }
        }
        self.schedule_server(key);
        Ok(())
    }

    /// Whether a client transaction is still alive (in any state).
    pub fn has_client(&self, key: &ClientKey) -> bool {
        self.clients.contains_key(key)
    }

    /// Whether a server transaction still awaits its final response.
    pub fn is_pending(&self, key: &ServerKey) -> bool {
        self.servers.get(key).is_some_and(|tx| !tx.is_final())
    }

    /// The transport toward `flow` failed: every client transaction on it fails now.
    pub fn fail_flow(&mut self, flow: F) {
        let Some(keys) = self.by_flow.get(&flow) else { return };
        let failed: Vec<ClientKey> = keys.iter().filter(|k| self.clients.get(*k).is_some_and(ClientTx::awaiting_final)).cloned().collect();
        for key in failed {
            self.remove_client(&key);
            self.due.set(&TxKey::Client(key.clone()), None);
            self.events.push_back(Event::ClientFailed { key, cause: FailureCause::Transport });
        }
    }

    /// Fire every timer due at `now`, earliest first.
    pub fn handle_timeout(&mut self, now: Instant) {
        let timers = self.timers;
        let mut server_ended = false;
        while let Some(due) = self.due.pop_due(now) {
            match due {
                TxKey::Client(key) => {
                    let Some(tx) = self.clients.get_mut(&key) else { continue };
                    let outcome = tx.on_timeout(now, &timers);
                    if let Some(data) = tx.take_transmit() {
                        self.events.push_back(Event::Transmit { flow: tx.flow(), data });
                    }
                    match outcome {
                        client::TimerOutcome::Continue => self.schedule_client(&key),
                        client::TimerOutcome::Failed => {
                            self.remove_client(&key);
                            self.events.push_back(Event::ClientFailed { key, cause: FailureCause::Timeout });
                        }
                        client::TimerOutcome::Terminated => {
                            self.remove_client(&key);
                        }
                    }
                }
                TxKey::Server(key) => {
                    let Some(tx) = self.servers.get_mut(&key) else { continue };
                    let outcome = tx.on_timeout(now, &timers);
                    if let Some(data) = tx.take_transmit() {
                        self.events.push_back(Event::Transmit { flow: tx.flow(), data });
                    }
                    match outcome {
                        server::TimerOutcome::Continue => self.schedule_server(&key),
                        server::TimerOutcome::AckTimeout(code) => {
                            self.servers.remove(&key);
                            self.events.push_back(Event::AckTimeout { key, code });
                            server_ended = true;
                        }
                        server::TimerOutcome::Terminated => {
                            self.servers.remove(&key);
                            server_ended = true;
                        }
                    }
                }
            }
        }
        if server_ended {
            let servers = &self.servers;
            self.accepted.retain(|_, k| servers.contains_key(k));
        }
    }

    /// The earliest timer, if any.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.due.next()
    }

    /// The next event. Drain after every call into the table.
    pub fn poll_event(&mut self) -> Option<Event<F>> {
        self.events.pop_front()
    }
}

/// Key of the client transaction a request starts.
pub fn client_key(request: &Request) -> Result<ClientKey, UsageError> {
    let via = request.headers.top_via().map_err(|_| UsageError::NoBranch)?;
    let branch = via.branch().filter(|b| !b.is_empty()).ok_or(UsageError::NoBranch)?;
    let cseq = request.headers.cseq().map_err(|_| UsageError::NoCSeq)?;
    Ok(ClientKey { branch: branch.to_owned(), method: cseq.method })
}

/// Key of the client transaction a response belongs to (RFC 3261 §17.1.3).
fn response_key(response: &Response) -> Option<ClientKey> {
    let via = response.headers.top_via().ok()?;
    let branch = via.branch()?.to_owned();
    let cseq = response.headers.cseq().ok()?;
    Some(ClientKey { branch, method: cseq.method })
}

/// Key of the server transaction a request belongs to (RFC 3261 §17.2.3).
pub fn server_key(request: &Request) -> Option<ServerKey> {
    let via = request.headers.top_via().ok()?;
    let cseq = request.headers.cseq().ok()?;
    let method = match request.method {
        Method::Ack => Method::Invite,
        ref m => m.clone(),
    };
    let sent_by = match via.port {
        Some(p) => format!("{}:{p}", via.host.to_ascii_lowercase()),
        None => via.host.to_ascii_lowercase(),
    };
    let branch = match via.branch() {
        Some(b) if b.starts_with(MAGIC_COOKIE) => b.to_owned(),
        // RFC 2543 peers: §17.2.3 matches on Request-URI, tags, Call-ID, CSeq and top Via.
        // ACK's To tag differs from the INVITE's (it gained one), so it is left out here;
        // CANCEL shares the INVITE's fields, so both map to the same synthetic branch.
        _ => {
            let from_tag = request.headers.from().ok().and_then(|f| f.tag().map(str::to_owned));
            format!(
                "2543|{}|{}|{}|{}|{}",
                request.uri,
                from_tag.unwrap_or_default(),
                request.headers.call_id().unwrap_or(""),
                cseq.seq,
                via
            )
        }
    };
    Some(ServerKey { branch, sent_by, method })
}

#[cfg(test)]
mod tests;
