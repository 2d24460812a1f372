//! An ordered set of peers with failover (RFC 6733 §5.5.4) and duplicate detection of
//! retransmitted requests we receive.
//!
//! The first peer is the primary. A request goes to the first open peer in order, so traffic
//! returns to the primary as soon as it is open again. When a request's Tx timer expires, or
//! its connection goes down before the answer, it is sent once more to the first *other* open
//! peer with the T flag set, the same End-to-End Identifier and a new Hop-by-Hop Identifier.
//! A second failure is reported as [`PeerSetEvent::Failed`].
//!
//! Receiving side: for each request, (Origin-Host, End-to-End Identifier) is remembered for
//! [`DUPLICATE_WINDOW`] (RFC 6733 §3: identifiers stay unique for at least 4 minutes), with
//! the answer once the application sends it. A request with T set whose key was seen is a
//! duplicate: it is answered with the stored answer when there is one, and otherwise reported
//! as [`PeerSetEvent::DuplicateRequest`] instead of [`PeerSetEvent::Request`].

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use rand::RngCore;

use crate::message::Message;
use crate::peer::{
    DisconnectCause, DownReason, EndToEndIds, Peer, PeerEvent, PeerInfo, RequestId, SendError,
    Transmit,
};

/// How long a received request's (Origin-Host, End-to-End) is remembered.
pub const DUPLICATE_WINDOW: Duration = Duration::from_secs(240);
/// At most this many remembered requests; the oldest go first.
pub const DUPLICATE_CAPACITY: usize = 4096;

/// Identifies a request sent through the set, across its retransmission.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SetRequestId(pub u64);

/// Why a request sent through the set got no answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FailureCause {
    /// The last attempt's Tx timer expired.
    TimedOut,
    /// The last attempt's connection went down.
    Undelivered,
}

/// Events of the set; peer-scoped ones carry the peer's index.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PeerSetEvent {
    /// Peer `peer` is open.
    Up {
        /// Index in the set.
        peer: usize,
        /// Its capabilities.
        info: PeerInfo,
    },
    /// Peer `peer`'s connection, or attempt at one, ended.
    Down {
        /// Index in the set.
        peer: usize,
        /// Why.
        reason: DownReason,
    },
    /// A validated request from peer `peer`; answer with [`PeerSet::send_answer`].
    Request {
        /// Index in the set.
        peer: usize,
        /// The request.
        request: Message,
    },
    /// A retransmitted (T) request already seen whose answer is not known yet.
    DuplicateRequest {
        /// Index in the set.
        peer: usize,
        /// The request.
        request: Message,
    },
    /// The answer to request `id`, received from peer `peer`.
    Answer {
        /// Index of the peer that answered.
        peer: usize,
        /// The request.
        id: SetRequestId,
        /// The answer.
        answer: Message,
    },
    /// Request `id` failed on every attempt.
    Failed {
        /// The request.
        id: SetRequestId,
        /// The request as last sent.
        request: Message,
        /// How the last attempt failed.
        cause: FailureCause,
    },
}

#[derive(Clone, Copy, Debug)]
struct Attempt {
    peer: usize,
    retransmitted: bool,
}

type DuplicateKey = (String, u32);

#[derive(Clone, Debug)]
struct Seen {
    at: Instant,
    answer: Option<Message>,
}

/// Recently received requests, bounded in time and count.
#[derive(Debug, Default)]
struct DuplicateCache {
    entries: HashMap<DuplicateKey, Seen>,
    order: VecDeque<(DuplicateKey, Instant)>,
}

impl DuplicateCache {
    fn evict(&mut self, now: Instant) {
        while let Some((key, at)) = self.order.front() {
            let expired = now.saturating_duration_since(*at) >= DUPLICATE_WINDOW;
            if !expired && self.order.len() <= DUPLICATE_CAPACITY {
                break;
            }
            if self.entries.get(key).is_some_and(|seen| seen.at == *at) {
                self.entries.remove(key);
            }
            self.order.pop_front();
        }
    }

    fn insert(&mut self, now: Instant, key: DuplicateKey) {
        if self.entries.contains_key(&key) {
            return;
        }
        self.order.push_back((key.clone(), now));
        self.entries.insert(
            key,
            Seen {
                at: now,
                answer: None,
            },
        );
        self.evict(now);
    }
}

/// Peers in priority order with failover. See the module docs.
#[derive(Debug)]
pub struct PeerSet {
    peers: Vec<Peer>,
    /// The peers in service, by priority (index 0 of `peers` first, until a reconfiguration
    /// changes it). A peer not listed was retired: it is never connected again and takes no
    /// request, but keeps its index (the driver's connections are named by it).
    order: Vec<usize>,
    end_to_end: EndToEndIds,
    next_id: u64,
    outstanding: HashMap<SetRequestId, Attempt>,
    by_attempt: HashMap<(usize, RequestId), SetRequestId>,
    duplicates: DuplicateCache,
    /// Requests delivered to the application and not yet answered: where to store the answer.
    unanswered: HashMap<(usize, u32), DuplicateKey>,
    events: VecDeque<PeerSetEvent>,
}

impl PeerSet {
    /// A set over `peers` (index 0 is the primary). End-to-End Identifiers are numbered by
    /// the set, so a failed-over request keeps its identifier across peers.
    pub fn new(peers: Vec<Peer>, start_time_secs: u64, rng: &mut impl RngCore) -> PeerSet {
        PeerSet {
            order: (0..peers.len()).collect(),
            peers,
            end_to_end: EndToEndIds::new(start_time_secs, rng.next_u32()),
            next_id: 0,
            outstanding: HashMap::new(),
            by_attempt: HashMap::new(),
            duplicates: DuplicateCache::default(),
            unanswered: HashMap::new(),
            events: VecDeque::new(),
        }
    }

    /// The peers, in priority order.
    pub fn peers(&self) -> &[Peer] {
        &self.peers
    }

    /// Peer `index`.
    pub fn peer(&self, index: usize) -> Option<&Peer> {
        self.peers.get(index)
    }

    /// The open peer new requests go to: the first in service that is open.
    pub fn active_peer(&self) -> Option<usize> {
        self.order.iter().copied().find(|&i| self.peers[i].is_open())
    }

    /// The peers in service, by priority.
    pub fn in_service(&self) -> &[usize] {
        &self.order
    }

    /// Starts every closed peer in service connecting.
    pub fn connect_all(&mut self, now: Instant) {
        for i in self.order.clone() {
            self.peers[i].connect(now);
            self.pump(now, i);
        }
    }

    /// Adds a peer at the end of the priority order and starts it connecting; returns its
    /// index (a reload that names a new peer).
    pub fn add(&mut self, now: Instant, peer: Peer) -> usize {
        let index = self.peers.len();
        self.peers.push(peer);
        self.order.push(index);
        self.peers[index].connect(now);
        self.pump(now, index);
        index
    }

    /// Takes peer `index` out of service (a reload that no longer names it): DPR with
    /// DO_NOT_WANT_TO_TALK_TO_YOU when open, never connected again. Its outstanding requests
    /// fail over to the peers in service as it goes down.
    pub fn retire(&mut self, now: Instant, index: usize) {
        if index >= self.peers.len() {
            return;
        }
        self.order.retain(|&i| i != index);
        self.peers[index].disconnect(now, DisconnectCause::DoNotWantToTalkToYou);
        self.pump(now, index);
    }

    /// Sets the priority order of the peers in service (indices of peers not retired; others
    /// are ignored, and peers in service left out keep their place at the end).
    pub fn set_order(&mut self, order: &[usize]) {
        let mut next: Vec<usize> = order.iter().copied().filter(|i| self.order.contains(i)).collect();
        next.dedup();
        for i in &self.order {
            if !next.contains(i) {
                next.push(*i);
            }
        }
        self.order = next;
    }

    /// Disconnects every peer with `cause`.
    pub fn disconnect_all(&mut self, now: Instant, cause: DisconnectCause) {
        for i in 0..self.peers.len() {
            self.peers[i].disconnect(now, cause);
            self.pump(now, i);
        }
    }

    /// [`Peer::handle_connected`] for peer `peer`.
    pub fn handle_connected(&mut self, now: Instant, peer: usize) {
        self.with_peer(now, peer, |p| p.handle_connected(now));
    }

    /// [`Peer::handle_connect_failed`] for peer `peer`.
    pub fn handle_connect_failed(&mut self, now: Instant, peer: usize) {
        self.with_peer(now, peer, |p| p.handle_connect_failed(now));
    }

    /// [`Peer::handle_closed`] for peer `peer`.
    pub fn handle_closed(&mut self, now: Instant, peer: usize) {
        self.with_peer(now, peer, |p| p.handle_closed(now));
    }

    /// [`Peer::handle_bytes`] for peer `peer`.
    pub fn handle_bytes(&mut self, now: Instant, peer: usize, data: &[u8]) {
        self.with_peer(now, peer, |p| p.handle_bytes(now, data));
    }

    /// [`Peer::disconnect`] for peer `peer`.
    pub fn disconnect(&mut self, now: Instant, peer: usize, cause: DisconnectCause) {
        self.with_peer(now, peer, |p| p.disconnect(now, cause));
    }

    /// Timers of every peer.
    pub fn handle_timeout(&mut self, now: Instant) {
        for i in 0..self.peers.len() {
            self.peers[i].handle_timeout(now);
            self.pump(now, i);
        }
        self.duplicates.evict(now);
    }

    /// Sends a request to the first open peer, numbering its End-to-End Identifier.
    pub fn send_request(
        &mut self,
        now: Instant,
        mut request: Message,
    ) -> Result<SetRequestId, SendError> {
        let Some(peer) = self.active_peer() else {
            return Err(SendError::NoOpenPeer(request));
        };
        request.end_to_end = self.end_to_end.next_id();
        request.flags.retransmitted = false;
        let request_id = self.peers[peer].forward_request(now, request)?;
        let id = SetRequestId(self.next_id);
        self.next_id += 1;
        self.outstanding.insert(
            id,
            Attempt {
                peer,
                retransmitted: false,
            },
        );
        self.by_attempt.insert((peer, request_id), id);
        Ok(id)
    }

    /// Sends the answer to a request from [`PeerSetEvent::Request`] through the peer it came
    /// from, remembering it for duplicates.
    pub fn send_answer(
        &mut self,
        now: Instant,
        peer: usize,
        answer: Message,
    ) -> Result<(), SendError> {
        let Some(p) = self.peers.get_mut(peer) else {
            return Err(SendError::NoSuchPeer(answer));
        };
        if let Some(key) = self.unanswered.remove(&(peer, answer.hop_by_hop)) {
            if let Some(seen) = self.duplicates.entries.get_mut(&key) {
                seen.answer = Some(answer.clone());
            }
        }
        p.send_answer(now, answer)
    }

    /// The next transmit, tagged with its peer's index. Drain until `None` after every input.
    pub fn poll_transmit(&mut self) -> Option<(usize, Transmit)> {
        self.peers
            .iter_mut()
            .enumerate()
            .find_map(|(i, p)| p.poll_transmit().map(|t| (i, t)))
    }

    /// The next event. Drain until `None` after every input.
    pub fn poll_event(&mut self) -> Option<PeerSetEvent> {
        self.events.pop_front()
    }

    /// The earliest deadline over all peers.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.peers.iter().filter_map(Peer::poll_timeout).min()
    }

    fn with_peer(&mut self, now: Instant, peer: usize, f: impl FnOnce(&mut Peer)) {
        match self.peers.get_mut(peer) {
            Some(p) => {
                f(p);
                self.pump(now, peer);
            }
            None => tracing::warn!(peer, "input for an unknown peer index"),
        }
    }

    /// Moves peer `index`'s events into the set's, acting on failures and duplicates.
    fn pump(&mut self, now: Instant, index: usize) {
        while let Some(event) = self.peers[index].poll_event() {
            match event {
                PeerEvent::Up(info) => self
                    .events
                    .push_back(PeerSetEvent::Up { peer: index, info }),
                PeerEvent::Down(reason) => {
                    self.unanswered.retain(|(p, _), _| *p != index);
                    self.events.push_back(PeerSetEvent::Down {
                        peer: index,
                        reason,
                    });
                }
                PeerEvent::Request(request) => self.on_request(now, index, request),
                PeerEvent::Answer { id, answer } => match self.by_attempt.remove(&(index, id)) {
                    Some(set_id) => {
                        self.outstanding.remove(&set_id);
                        self.events.push_back(PeerSetEvent::Answer {
                            peer: index,
                            id: set_id,
                            answer,
                        });
                    }
                    None => tracing::debug!(
                        peer = index,
                        "answer to a request not sent through the set"
                    ),
                },
                PeerEvent::TimedOut { id, request } => {
                    self.on_attempt_failed(now, index, id, request, FailureCause::TimedOut)
                }
                PeerEvent::Undelivered { id, request } => {
                    self.on_attempt_failed(now, index, id, request, FailureCause::Undelivered)
                }
            }
        }
    }

    fn on_request(&mut self, now: Instant, index: usize, request: Message) {
        let key = request
            .origin_host()
            .map(|host| (host.to_string(), request.end_to_end));
        if let Some(key) = key {
            self.duplicates.evict(now);
            if request.flags.retransmitted {
                if let Some(seen) = self.duplicates.entries.get(&key) {
                    match seen.answer.clone() {
                        Some(mut answer) => {
                            answer.hop_by_hop = request.hop_by_hop;
                            if let Err(e) = self.peers[index].send_answer(now, answer) {
                                tracing::debug!(error = %e, "cannot repeat the stored answer");
                            }
                        }
                        None => self.events.push_back(PeerSetEvent::DuplicateRequest {
                            peer: index,
                            request,
                        }),
                    }
                    return;
                }
            }
            self.duplicates.insert(now, key.clone());
            if self.unanswered.len() < DUPLICATE_CAPACITY {
                self.unanswered.insert((index, request.hop_by_hop), key);
            }
        }
        self.events.push_back(PeerSetEvent::Request {
            peer: index,
            request,
        });
    }

    fn on_attempt_failed(
        &mut self,
        now: Instant,
        index: usize,
        request_id: RequestId,
        mut request: Message,
        cause: FailureCause,
    ) {
        let Some(id) = self.by_attempt.remove(&(index, request_id)) else {
            return;
        };
        let Some(attempt) = self.outstanding.remove(&id) else {
            return;
        };
        if !attempt.retransmitted {
            let other = self.order.iter().copied().find(|&i| i != attempt.peer && self.peers[i].is_open());
            if let Some(other) = other {
                // RFC 6733 §5.5.4: same End-to-End Identifier, T set, new Hop-by-Hop.
                request.flags.retransmitted = true;
                match self.peers[other].forward_request(now, request) {
                    Ok(request_id) => {
                        self.outstanding.insert(
                            id,
                            Attempt {
                                peer: other,
                                retransmitted: true,
                            },
                        );
                        self.by_attempt.insert((other, request_id), id);
                        return;
                    }
                    Err(e) => request = e.into_message(),
                }
            }
        }
        self.events
            .push_back(PeerSetEvent::Failed { id, request, cause });
    }
}
