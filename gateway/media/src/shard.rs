//! Many calls' media on one thread: a shard.
//!
//! A media thread owns whole calls. Their sessions live here with one timer queue for all of
//! them, and every datagram the thread reads is routed to its call here, so the driver (an
//! event loop per core) only reads sockets, calls [`MediaShard::handle_datagram`], sends what
//! it is told to and sleeps until [`MediaShard::poll_timeout`]. Still sans-IO: no sockets, no
//! clock.
//!
//! Routing, per datagram:
//! - on a call's own socket (IMS ports, or the browser port in per-call mode): by the local
//!   address;
//! - on the shard's shared browser-facing port (`media.web_port_mode = "shared"`, as WebRTC
//!   SFUs do): a STUN request by the first half of its USERNAME, our ICE ufrag, which is
//!   unique per call; anything else by its source address, learned from the checks that call's
//!   ICE agent accepted. DTLS and SRTP from an address that never passed a check go nowhere.
//!
//! Timers: each call is armed at most once in one heap. A call's deadline that moves later
//! (inactivity after every packet) leaves the earlier entry in place: when it fires the call
//! finds nothing due and is re-armed at its new deadline, so a packet never costs a heap
//! operation. Deadlines are rounded up to a grid so that calls due together wake the thread
//! once: [`TICK`] for the ones that must run on time (DTLS retransmissions), [`LENIENT_TICK`]
//! for those that tolerate a fraction of a second (RTCP reports, consent expiry, inactivity;
//! see [`crate::Due`]). An idle call costs nothing between the deadlines its protocols
//! require, and the thread wakes a few times a second for all its idle calls' reports
//! together rather than once per report. A wake-up runs at most [`TIMER_BUDGET`] calls, so a
//! grid point where thousands of calls are due never holds the packets behind it for long.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use estuary_sdp::MediaPlan;

use crate::{Forward, Leg, MediaError, MediaSession, Output, Transcoded};

/// Timer granularity: exact deadlines are rounded up to a multiple of this since the shard
/// began.
pub const TICK: Duration = Duration::from_millis(4);

/// The grid of lenient deadlines ([`crate::Due::lenient`]). At a 5 s RTCP interval a call's
/// reports are then at most 5% late, and an idle thread wakes at most 4 times a second for
/// all its calls' reports and expiries.
pub const LENIENT_TICK: Duration = Duration::from_millis(250);

/// Calls one [`MediaShard::handle_timeout_within`] runs at most; the rest stay due for the
/// next wake-up, after the packets that arrived meanwhile.
pub const TIMER_BUDGET: usize = 256;

/// A call's id, as the signalling plane numbers calls.
pub type CallKey = u64;

/// Where [`MediaShard::handle_datagram`] sent a datagram, and what to do with it.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Routed {
    /// The call it belonged to; `None`: no call (counted in [`ShardCounters::unroutable`]).
    pub call: Option<CallKey>,
    pub forward: Forward,
}

/// What the shard dropped before any call saw it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ShardCounters {
    /// Datagrams for no call: an unknown local address, an unknown ufrag, or a source on the
    /// shared port that never passed an ICE check.
    pub unroutable: u64,
    /// Calls refused because their ICE ufrag was already another call's on the shared port.
    pub ufrag_clashes: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum ShardError {
    #[error("call {0} is already on this shard")]
    Duplicate(CallKey),
    #[error("ICE ufrag of call {0} is already another call's on the shared port")]
    UfragClash(CallKey),
    #[error("local address {addr} of call {call} is already call {owner}'s")]
    AddressTaken { call: CallKey, addr: SocketAddr, owner: CallKey },
    #[error("no call {0} on this shard")]
    Unknown(CallKey),
    #[error(transparent)]
    Media(#[from] MediaError),
}

struct Entry {
    /// Boxed: a session is 5 KiB, and inline in the table every call would also pay for the
    /// table's spare slots, and each growth would copy every session.
    session: Box<MediaSession>,
    /// The deadline this call is in the heap for (rounded), if any.
    armed: Option<Instant>,
    /// Local addresses routed to this call (all but the shared port).
    locals: Vec<SocketAddr>,
    /// Browser addresses on the shared port routed to this call.
    remotes: Vec<SocketAddr>,
    /// The ICE ufrags this call is routed by on the shared port, the current one last (an ICE
    /// restart adds one; the old stay routed while checks of their generation may be in
    /// flight, RFC 8445 §9). Empty off the shared port.
    ufrags: Vec<String>,
}

pub struct MediaShard {
    /// The shared browser-facing address, in shared mode.
    shared_web: Option<SocketAddr>,
    calls: HashMap<CallKey, Entry>,
    by_local: HashMap<SocketAddr, CallKey>,
    by_ufrag: HashMap<String, CallKey>,
    by_remote: HashMap<SocketAddr, CallKey>,
    timers: BinaryHeap<Reverse<(Instant, CallKey)>>,
    outputs: VecDeque<(CallKey, Output)>,
    counters: ShardCounters,
    epoch: Instant,
    /// The call whose session is running, set around every call into a session: after a
    /// panic the driver caught, [`MediaShard::abandon_panicked`] knows which call to drop.
    in_call: Option<CallKey>,
    /// Test-only fault injection ([`MediaShard::inject_faults`]).
    faults: bool,
}

/// A datagram starting with this makes a shard with [`MediaShard::inject_faults`] on panic
/// inside the call it is routed to, as a bug in a session would.
pub const FAULT_TRIGGER: &[u8] = b"estuary-fault-injection:panic";

impl MediaShard {
    /// A shard that began at `now`; `shared_web` is its browser-facing address in shared
    /// mode (every session added must then receive on it), `None` in per-call mode.
    pub fn new(now: Instant, shared_web: Option<SocketAddr>) -> MediaShard {
        MediaShard {
            shared_web,
            calls: HashMap::new(),
            by_local: HashMap::new(),
            by_ufrag: HashMap::new(),
            by_remote: HashMap::new(),
            timers: BinaryHeap::new(),
            outputs: VecDeque::new(),
            counters: ShardCounters::default(),
            epoch: now,
            in_call: None,
            faults: false,
        }
    }

    /// Test hook: a datagram starting with [`FAULT_TRIGGER`] panics in its call's handling.
    /// Only the daemon's `ESTUARY_TEST_HOOKS=1` turns it on.
    pub fn inject_faults(&mut self, on: bool) {
        self.faults = on;
    }

    /// After the driver caught a panic out of this shard: drops the call whose session was
    /// running (its state may be half-updated) with every route to it, without the RTCP BYE
    /// a clean end sends. The other calls are untouched.
    pub fn abandon_panicked(&mut self) -> Option<CallKey> {
        let call = self.in_call.take()?;
        self.calls.remove(&call);
        self.by_local.retain(|_, c| *c != call);
        self.by_remote.retain(|_, c| *c != call);
        self.by_ufrag.retain(|_, c| *c != call);
        self.outputs.retain(|(c, _)| *c != call);
        Some(call)
    }

    /// Takes `session` for `call`. Its local addresses must be no other call's.
    pub fn add_call(&mut self, now: Instant, call: CallKey, session: MediaSession) -> Result<(), ShardError> {
        if self.calls.contains_key(&call) {
            return Err(ShardError::Duplicate(call));
        }
        let shared = Some(session.web_local()) == self.shared_web;
        if shared && self.by_ufrag.contains_key(session.local_ufrag()) {
            self.counters.ufrag_clashes += 1;
            return Err(ShardError::UfragClash(call));
        }
        let mut entry = Entry { session: Box::new(session), armed: None, locals: Vec::new(), remotes: Vec::new(), ufrags: Vec::new() };
        self.route_locals(call, &mut entry)?;
        if shared {
            let u = entry.session.local_ufrag().to_owned();
            self.by_ufrag.insert(u.clone(), call);
            entry.ufrags.push(u);
        }
        self.calls.insert(call, entry);
        self.in_call = Some(call);
        self.after_input(now, call);
        self.in_call = None;
        Ok(())
    }

    /// Routes every local address of the entry's session that is not routed yet.
    fn route_locals(&mut self, call: CallKey, entry: &mut Entry) -> Result<(), ShardError> {
        for addr in entry.session.local_addresses() {
            if Some(addr) == self.shared_web || entry.locals.contains(&addr) {
                continue;
            }
            if let Some(&owner) = self.by_local.get(&addr) {
                return Err(ShardError::AddressTaken { call, addr, owner });
            }
            self.by_local.insert(addr, call);
            entry.locals.push(addr);
        }
        Ok(())
    }

    /// A new plan for `call` (a re-offer settled); routes the addresses of any new stream.
    pub fn update_plan(&mut self, now: Instant, call: CallKey, plan: &MediaPlan) -> Result<(), ShardError> {
        let mut entry = self.calls.remove(&call).ok_or(ShardError::Unknown(call))?;
        self.in_call = Some(call);
        let result = entry
            .session
            .update_plan(plan, now)
            .map_err(ShardError::from)
            .and_then(|()| self.route_locals(call, &mut entry))
            .and_then(|()| self.reroute_ufrag(call, &mut entry));
        self.calls.insert(call, entry);
        self.after_input(now, call);
        self.in_call = None;
        result
    }

    /// An ICE restart gave the call a new ufrag: route the shared port's checks by it.
    fn reroute_ufrag(&mut self, call: CallKey, entry: &mut Entry) -> Result<(), ShardError> {
        let Some(old) = entry.ufrags.last() else { return Ok(()) };
        let new = entry.session.local_ufrag();
        if old == new {
            return Ok(());
        }
        if self.by_ufrag.get(new).is_some_and(|c| *c != call) {
            self.counters.ufrag_clashes += 1;
            return Err(ShardError::UfragClash(call));
        }
        self.by_ufrag.insert(new.to_owned(), call);
        entry.ufrags.push(new.to_owned());
        Ok(())
    }

    /// The call is over: its session sends its last reports and RTCP BYE (drain
    /// [`Self::poll_output`]), leaves every route, and is handed back for its report.
    pub fn end_call(&mut self, now: Instant, call: CallKey) -> Option<MediaSession> {
        let mut entry = self.calls.remove(&call)?;
        self.in_call = Some(call);
        entry.session.close(now);
        while let Some(o) = entry.session.poll_output() {
            self.outputs.push_back((call, o));
        }
        self.in_call = None;
        for addr in &entry.locals {
            self.by_local.remove(addr);
        }
        for addr in &entry.remotes {
            if self.by_remote.get(addr) == Some(&call) {
                self.by_remote.remove(addr);
            }
        }
        for u in &entry.ufrags {
            if self.by_ufrag.get(u) == Some(&call) {
                self.by_ufrag.remove(u);
            }
        }
        // Its heap entry, if any, is found stale when it comes due.
        Some(*entry.session)
    }

    /// A datagram arrived on `local` from `source`. As [`MediaSession::handle_datagram`]:
    /// media is rewritten in `buf`, and [`Routed::forward`] says where it goes.
    pub fn handle_datagram(&mut self, now: Instant, local: SocketAddr, source: SocketAddr, buf: &mut Vec<u8>) -> Routed {
        let shared = Some(local) == self.shared_web;
        let ufrag = if shared { estuary_ice::username_ufrag(buf) } else { None };
        let is_check = ufrag.is_some();
        let call = match ufrag {
            Some(u) => std::str::from_utf8(u).ok().and_then(|u| self.by_ufrag.get(u)),
            None if shared => self.by_remote.get(&source),
            None => self.by_local.get(&local),
        }
        .copied();
        let Some(call) = call else {
            self.counters.unroutable += 1;
            return Routed { call: None, forward: Forward::Consumed };
        };
        let Some(entry) = self.calls.get_mut(&call) else {
            self.counters.unroutable += 1;
            return Routed { call: None, forward: Forward::Consumed };
        };
        self.in_call = Some(call);
        if self.faults && buf.starts_with(FAULT_TRIGGER) {
            panic!("fault injected into call {call}");
        }
        let forward = entry.session.handle_datagram(now, local, source, buf);
        // A check the call's agent accepted: what else comes from there is this call's.
        if is_check && entry.session.web_consented(source) && !entry.remotes.contains(&source) {
            entry.remotes.push(source);
            if let Some(previous) = self.by_remote.insert(source, call) {
                if previous != call {
                    if let Some(p) = self.calls.get_mut(&previous) {
                        p.remotes.retain(|a| *a != source);
                    }
                }
            }
        }
        self.after_input(now, call);
        self.in_call = None;
        Routed { call: Some(call), forward }
    }

    /// A transcoded frame for `call`; as [`MediaSession::send_transcoded`].
    pub fn send_transcoded(&mut self, now: Instant, call: CallKey, frame: Transcoded<'_>, buf: &mut Vec<u8>) -> Forward {
        let Some(entry) = self.calls.get_mut(&call) else { return Forward::Consumed };
        self.in_call = Some(call);
        let forward = entry.session.send_transcoded(now, frame, buf);
        self.after_input(now, call);
        self.in_call = None;
        forward
    }

    /// The transcoder's decoder of `call`'s stream `stream` from leg `from` needs a keyframe:
    /// the session asks that leg's sender.
    pub fn request_keyframe(&mut self, now: Instant, call: CallKey, stream: usize, from: Leg) {
        let Some(entry) = self.calls.get_mut(&call) else { return };
        self.in_call = Some(call);
        entry.session.request_keyframe(stream, from);
        self.after_input(now, call);
        self.in_call = None;
    }

    /// Leg `from` of `call` asked in signalling for a keyframe (RFC 5168).
    pub fn picture_fast_update(&mut self, now: Instant, call: CallKey, from: Leg) {
        let Some(entry) = self.calls.get_mut(&call) else { return };
        self.in_call = Some(call);
        entry.session.picture_fast_update(from);
        self.after_input(now, call);
        self.in_call = None;
    }

    /// Runs every call whose deadline has come.
    pub fn handle_timeout(&mut self, now: Instant) {
        while self.handle_timeout_within(now, usize::MAX) {}
    }

    /// Runs up to `budget` calls whose deadline has come; true if more are due (then
    /// [`Self::poll_timeout`] is already past).
    pub fn handle_timeout_within(&mut self, now: Instant, budget: usize) -> bool {
        let mut ran = 0;
        while let Some(&Reverse((at, call))) = self.timers.peek() {
            if at > now {
                return false;
            }
            // An entry superseded by an earlier one that already ran, or of an ended call.
            let Some(entry) = self.calls.get_mut(&call).filter(|e| e.armed == Some(at)) else {
                self.timers.pop();
                continue;
            };
            if ran == budget {
                return true;
            }
            self.timers.pop();
            entry.armed = None;
            ran += 1;
            self.in_call = Some(call);
            entry.session.handle_timeout(now);
            self.after_input(now, call);
            self.in_call = None;
        }
        false
    }

    /// The earliest deadline of any call (rounded up to its grid).
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.timers.peek().map(|Reverse((at, _))| *at)
    }

    /// Control traffic, events and recorder copies, each with its call.
    pub fn poll_output(&mut self) -> Option<(CallKey, Output)> {
        self.outputs.pop_front()
    }

    pub fn counters(&self) -> ShardCounters {
        self.counters
    }

    pub fn len(&self) -> usize {
        self.calls.len()
    }

    pub fn is_empty(&self) -> bool {
        self.calls.is_empty()
    }

    pub fn session(&self, call: CallKey) -> Option<&MediaSession> {
        self.calls.get(&call).map(|e| &*e.session)
    }

    pub fn sessions(&self) -> impl Iterator<Item = (CallKey, &MediaSession)> {
        self.calls.iter().map(|(k, e)| (*k, &*e.session))
    }

    /// Collects the call's outputs and arms its timer if its deadline moved earlier.
    fn after_input(&mut self, now: Instant, call: CallKey) {
        let Some(entry) = self.calls.get_mut(&call) else { return };
        while let Some(o) = entry.session.poll_output() {
            self.outputs.push_back((call, o));
        }
        let due = entry.session.poll_due();
        let exact = due.exact.map(|t| round_up(self.epoch, t.max(now), TICK));
        let lenient = due.lenient.map(|t| round_up(self.epoch, t.max(now), LENIENT_TICK));
        let Some(at) = exact.into_iter().chain(lenient).min() else { return };
        if entry.armed.is_none_or(|armed| at < armed) {
            entry.armed = Some(at);
            self.timers.push(Reverse((at, call)));
        }
    }
}

/// `at` rounded up to the next multiple of `tick` after `epoch`.
fn round_up(epoch: Instant, at: Instant, tick: Duration) -> Instant {
    let since = at.saturating_duration_since(epoch).as_nanos();
    let tick = tick.as_nanos();
    let ticks = since.div_ceil(tick);
    epoch + Duration::from_nanos((ticks * tick) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deadlines_round_up_to_the_tick() {
        let e = Instant::now();
        assert_eq!(round_up(e, e, TICK), e);
        assert_eq!(round_up(e, e + Duration::from_nanos(1), TICK), e + TICK);
        assert_eq!(round_up(e, e + TICK, TICK), e + TICK);
        assert_eq!(round_up(e, e + TICK + Duration::from_micros(1), TICK), e + 2 * TICK);
        assert_eq!(round_up(e, e + Duration::from_millis(1), LENIENT_TICK), e + LENIENT_TICK);
    }
}
