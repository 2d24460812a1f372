//! Media ports for the SDP the calls exchange: only ports the driver has already bound.
//!
//! A port may appear in SDP only once its socket exists (bind before announce): the driver
//! binds RTP/RTCP pairs (even port `p` for RTP, `p + 1` for RTCP, RFC 3550 §11) and grants
//! them with [`PortPool::grant`]; the pool never invents one. It asks for more through
//! [`PortPool::wanted`] when its spare ports run low, so the driver binds in batches outside
//! any call's set-up. Replay and tests grant virtual ports the same way.
//!
//! A port an ended call released rests in quarantine before reuse, so late packets of the old
//! call (a far end still sending, a retransmitted 2xx's SDP) never reach the next call on that
//! port. Rested ports are reused before fresh ones, oldest first: the set of bound ports stays
//! as small as the load allows.
//!
//! In shared mode (`media.web_port_mode = "shared"`) the browser-facing port is not the call's
//! own: every call gets one of the media threads' shared ports (the one the driver prefers,
//! see [`PortPool::prefer_web_port`], else each in turn), and the driver routes each
//! browser's packets to its call by ICE username and source address. Such a port is never
//! released or quarantined; IMS-facing ports stay per stream.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use estuary_sdp::PortAllocator;

/// Below this many ready ports the pool asks the driver for more...
const LOW_WATER: usize = 16;
/// ...enough to have this many again: a batch of binds now and then, not one per call.
const HIGH_WATER: usize = 48;

#[derive(Debug)]
pub struct PortPool {
    quarantine: Duration,
    /// Granted and never used, in grant order.
    fresh: VecDeque<u16>,
    /// Released by ended calls: (usable again at, port), in release order; `None`: at once.
    resting: VecDeque<(Option<Instant>, u16)>,
    /// Every port granted so far (held by calls, fresh or resting).
    granted: usize,
    /// The engine's current time (set on every input; the pool reads no clock).
    now: Option<Instant>,
    /// Shared browser-facing ports (one per media thread), handed out in turn; empty in
    /// per-call mode.
    shared_web: Vec<u16>,
    next_shared: usize,
    /// The shared port every new call gets while set (the driver's choice by load).
    preferred_web: Option<u16>,
}

impl PortPool {
    pub fn new(quarantine: Duration) -> PortPool {
        PortPool { quarantine, fresh: VecDeque::new(), resting: VecDeque::new(), granted: 0, now: None, shared_web: Vec::new(), next_shared: 0, preferred_web: None }
    }

    /// Shared mode: the driver's shared browser-facing ports, bound for good.
    pub fn share_web_ports(&mut self, ports: Vec<u16>) {
        self.shared_web = ports;
    }

    /// Shared mode: new calls get `port` (one of the shared ports) until told otherwise;
    /// `None` hands the shared ports out in turn.
    pub fn prefer_web_port(&mut self, port: Option<u16>) {
        self.preferred_web = port.filter(|p| self.shared_web.contains(p));
    }

    /// The preferred shared browser-facing port, else the next in turn; `None` in per-call
    /// mode.
    fn shared_web_port(&mut self) -> Option<u16> {
        if let Some(p) = self.preferred_web {
            return Some(p);
        }
        let p = *self.shared_web.get(self.next_shared % self.shared_web.len().max(1))?;
        self.next_shared = self.next_shared.wrapping_add(1);
        Some(p)
    }

    pub fn set_now(&mut self, now: Instant) {
        self.now = Some(now);
    }

    /// Ports the driver has bound (RTP on each, RTCP on each + 1) and now hands to the pool.
    pub fn grant(&mut self, ports: impl IntoIterator<Item = u16>) {
        let before = self.fresh.len();
        self.fresh.extend(ports);
        self.granted += self.fresh.len() - before;
    }

    /// How many more ports the pool would like granted at `now` (0: enough).
    pub fn wanted(&self, now: Instant) -> usize {
        // Asked after every input: count no further than the mark.
        let spare = self.fresh.len() + self.resting.iter().take(LOW_WATER).take_while(|(at, _)| ready_by(*at, Some(now))).count();
        if spare < LOW_WATER { HIGH_WATER - spare } else { 0 }
    }

    fn take(&mut self) -> Option<u16> {
        match self.resting.front() {
            Some(&(at, port)) if ready_by(at, self.now) => {
                self.resting.pop_front();
                Some(port)
            }
            _ => self.fresh.pop_front(),
        }
    }

    pub fn release(&mut self, ports: impl IntoIterator<Item = u16>) {
        // The engine sets the time on every input, before any call can end.
        let at = self.now.and_then(|n| n.checked_add(self.quarantine));
        self.resting.extend(ports.into_iter().map(|p| (at, p)));
    }

    fn rested(&self, now: Instant) -> usize {
        self.resting.iter().take_while(|(at, _)| ready_by(*at, Some(now))).count()
    }

    /// Ports that can be handed out at `now` (quarantined ones excluded).
    pub fn available(&self, now: Instant) -> usize {
        self.fresh.len() + self.rested(now)
    }

    /// Ports resting in quarantine at `now`.
    pub fn quarantined(&self, now: Instant) -> usize {
        self.resting.len() - self.rested(now)
    }

    /// Ports granted so far: what the driver holds bound.
    pub fn granted(&self) -> usize {
        self.granted
    }
}

fn ready_by(at: Option<Instant>, now: Option<Instant>) -> bool {
    match (at, now) {
        (None, _) => true,
        (Some(at), Some(now)) => at <= now,
        (Some(_), None) => false,
    }
}

/// One call's view of the pool: records what it took so the call can give it back.
pub struct CallPorts<'a> {
    pub pool: &'a mut PortPool,
    pub taken: &'a mut Vec<u16>,
}

impl CallPorts<'_> {
    fn own_port(&mut self) -> Option<u16> {
        let p = self.pool.take()?;
        self.taken.push(p);
        Some(p)
    }
}

impl PortAllocator for CallPorts<'_> {
    fn web_port(&mut self) -> Option<u16> {
        // A shared port is not the call's: it is neither taken nor released.
        self.pool.shared_web_port().or_else(|| self.own_port())
    }

    fn ims_port(&mut self, _index: usize) -> Option<u16> {
        self.own_port()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_granted_ports_then_the_oldest_released_after_quarantine() {
        let t0 = Instant::now();
        let mut pool = PortPool::new(Duration::from_secs(30));
        pool.set_now(t0);
        let mut taken = Vec::new();
        let mut p = CallPorts { pool: &mut pool, taken: &mut taken };
        assert_eq!(p.web_port(), None, "nothing the driver has not bound");
        pool.grant([20002, 20006, 20004]);
        assert_eq!((pool.granted(), pool.wanted(t0)), (3, HIGH_WATER - 3));
        let mut p = CallPorts { pool: &mut pool, taken: &mut taken };
        assert_eq!([p.web_port(), p.ims_port(0), p.ims_port(1), p.ims_port(2)], [Some(20002), Some(20006), Some(20004), None]);
        pool.release([20004, 20002]);
        assert_eq!((pool.available(t0), pool.quarantined(t0)), (0, 2));
        pool.set_now(t0 + Duration::from_secs(29));
        assert_eq!(pool.take(), None, "still in quarantine");
        pool.grant([20008]);
        assert_eq!(pool.take(), Some(20008), "a fresh grant while the others rest");
        let t30 = t0 + Duration::from_secs(30);
        pool.set_now(t30);
        pool.grant([20010]);
        assert_eq!((pool.available(t30), pool.quarantined(t30)), (3, 0));
        // Rested ports first, so the bound set stays small.
        assert_eq!([pool.take(), pool.take(), pool.take(), pool.take()], [Some(20004), Some(20002), Some(20010), None]);
        assert_eq!(pool.granted(), 5);
    }

    #[test]
    fn shared_browser_ports_go_round_and_are_never_released() {
        let t0 = Instant::now();
        let mut pool = PortPool::new(Duration::from_secs(30));
        pool.set_now(t0);
        pool.share_web_ports(vec![20000, 20002]);
        pool.grant([20004, 20006, 20008]);
        let mut taken = Vec::new();
        let mut p = CallPorts { pool: &mut pool, taken: &mut taken };
        assert_eq!([p.web_port(), p.ims_port(0), p.web_port(), p.ims_port(0), p.web_port()], [Some(20000), Some(20004), Some(20002), Some(20006), Some(20000)]);
        assert_eq!(taken, [20004, 20006], "only the call's own ports are its to release");
        assert_eq!(pool.available(t0), 1);
    }

    #[test]
    fn a_preferred_shared_port_takes_every_new_call_until_changed() {
        let mut pool = PortPool::new(Duration::from_secs(30));
        pool.share_web_ports(vec![20000, 20002]);
        let mut taken = Vec::new();
        pool.prefer_web_port(Some(20002));
        let mut p = CallPorts { pool: &mut pool, taken: &mut taken };
        assert_eq!([p.web_port(), p.web_port(), p.web_port()], [Some(20002); 3]);
        pool.prefer_web_port(Some(30000));
        let mut p = CallPorts { pool: &mut pool, taken: &mut taken };
        assert_eq!([p.web_port(), p.web_port()], [Some(20000), Some(20002)], "a port that is not shared is no preference");
        pool.prefer_web_port(Some(20000));
        let mut p = CallPorts { pool: &mut pool, taken: &mut taken };
        assert_eq!(p.web_port(), Some(20000));
    }

    #[test]
    fn asks_for_a_batch_only_when_low() {
        let t0 = Instant::now();
        let mut pool = PortPool::new(Duration::ZERO);
        pool.set_now(t0);
        assert_eq!(pool.wanted(t0), HIGH_WATER);
        pool.grant((0..HIGH_WATER as u16).map(|i| 20000 + 2 * i));
        assert_eq!(pool.wanted(t0), 0);
        for _ in 0..HIGH_WATER - LOW_WATER {
            pool.take().unwrap();
        }
        assert_eq!(pool.wanted(t0), 0, "at the low-water mark");
        pool.take().unwrap();
        assert_eq!(pool.wanted(t0), HIGH_WATER - LOW_WATER + 1);
    }
}
