//! The IMS next hop as RFC 3263 gives it: several targets in order (SRV priority and weight,
//! resolved by the driver). Requests outside a dialog go to the first target that is up; a
//! target that times out, is unreachable or answers 503 is marked down and the request moves
//! to the next one (RFC 3263 §4.3); a down target is probed with OPTIONS until it answers,
//! then it is first again if it was first (Kamailio dispatcher's probing of inactive
//! destinations). Requests inside a dialog follow the dialog, not this table.

use std::net::SocketAddr;
use std::time::Instant;

#[derive(Clone, Debug)]
struct Target {
    addr: SocketAddr,
    /// When it was marked down; `None`: up.
    down_since: Option<Instant>,
}

/// The targets, in order, with their state.
#[derive(Clone, Debug)]
pub struct NextHops {
    targets: Vec<Target>,
}

impl NextHops {
    /// `targets` in order; at least the one next hop.
    pub fn new(first: SocketAddr, more: &[SocketAddr]) -> NextHops {
        let mut hops = NextHops { targets: Vec::new() };
        hops.set(std::iter::once(first).chain(more.iter().copied()).collect());
        hops
    }

    /// New targets (the driver resolved the name again): a target kept keeps its state.
    pub fn set(&mut self, addrs: Vec<SocketAddr>) {
        if addrs.is_empty() {
            return;
        }
        let mut targets: Vec<Target> = Vec::with_capacity(addrs.len());
        for addr in addrs {
            if targets.iter().any(|t| t.addr == addr) {
                continue;
            }
            let down_since = self.targets.iter().find(|t| t.addr == addr).and_then(|t| t.down_since);
            targets.push(Target { addr, down_since });
        }
        self.targets = targets;
    }

    /// Where a new request goes: the first target up, else (all down) the first.
    pub fn first(&self) -> SocketAddr {
        self.targets.iter().find(|t| t.down_since.is_none()).unwrap_or(&self.targets[0]).addr
    }

    /// The next target up that `tried` does not hold, for a request that failed on those.
    pub fn next_untried(&self, tried: &[SocketAddr]) -> Option<SocketAddr> {
        self.targets.iter().find(|t| t.down_since.is_none() && !tried.contains(&t.addr)).map(|t| t.addr)
    }

    /// Whether `addr` is one of the targets.
    pub fn contains(&self, addr: SocketAddr) -> bool {
        self.targets.iter().any(|t| t.addr == addr)
    }

    /// `addr` failed: skipped until a probe finds it answering. Returns whether it was up.
    pub fn mark_down(&mut self, addr: SocketAddr, now: Instant) -> bool {
        match self.targets.iter_mut().find(|t| t.addr == addr) {
            Some(t) if t.down_since.is_none() => {
                t.down_since = Some(now);
                true
            }
            _ => false,
        }
    }

    /// `addr` answered a probe. Returns whether it was down.
    pub fn mark_up(&mut self, addr: SocketAddr) -> bool {
        match self.targets.iter_mut().find(|t| t.addr == addr) {
            Some(t) if t.down_since.is_some() => {
                t.down_since = None;
                true
            }
            _ => false,
        }
    }

    /// The targets marked down, to probe.
    pub fn down(&self) -> Vec<SocketAddr> {
        self.targets.iter().filter(|t| t.down_since.is_some()).map(|t| t.addr).collect()
    }

    /// (target, up) in order, for metrics.
    pub fn states(&self) -> impl Iterator<Item = (SocketAddr, bool)> + '_ {
        self.targets.iter().map(|t| (t.addr, t.down_since.is_none()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sa(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn the_first_target_up_takes_requests_and_a_recovered_primary_is_first_again() {
        let now = Instant::now();
        let (a, b, c) = (sa("192.0.2.1:5060"), sa("192.0.2.2:5060"), sa("192.0.2.3:5060"));
        let mut h = NextHops::new(a, &[b, c]);
        assert_eq!(h.first(), a);
        assert!(h.mark_down(a, now));
        assert!(!h.mark_down(a, now), "once");
        assert_eq!(h.first(), b);
        assert_eq!(h.next_untried(&[a, b]), Some(c));
        assert_eq!(h.down(), [a]);
        // Resolved again (same targets, another order): the state stays with the address.
        h.set(vec![b, a, c, b]);
        assert_eq!(h.down(), [a]);
        assert_eq!(h.states().count(), 3, "duplicates dropped");
        h.set(vec![a, b, c]);
        assert!(h.mark_up(a));
        assert_eq!(h.first(), a, "the primary is back");
        for t in [a, b, c] {
            h.mark_down(t, now);
        }
        assert_eq!(h.first(), a, "all down: still somewhere to send");
        assert_eq!(h.next_untried(&[a]), None);
    }
}
