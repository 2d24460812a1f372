//! The IMS next hop as RFC 3263 gives it: several targets with SRV priorities and weights
//! (resolved by the driver). A request outside a dialog goes to a target that is up among
//! those of the best priority, chosen by weight (RFC 2782: load sharing among equal
//! priorities); a target that times out, is unreachable or answers 503 is marked down and the
//! request moves to the next one (RFC 3263 §4.3); a down target is probed with OPTIONS until
//! it answers, then it takes its share again (Kamailio dispatcher's probing of inactive
//! destinations). Requests inside a dialog follow the dialog, not this table.

use std::net::SocketAddr;
use std::time::Instant;

/// One target: an address with its SRV priority (lower first) and weight (its share among
/// the targets of its priority).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HopTarget {
    pub addr: SocketAddr,
    pub priority: u16,
    pub weight: u16,
}

impl HopTarget {
    /// Targets tried strictly in the order given (no SRV: one priority each).
    pub fn in_order(addrs: impl IntoIterator<Item = SocketAddr>) -> Vec<HopTarget> {
        addrs.into_iter().enumerate().map(|(i, addr)| HopTarget { addr, priority: u16::try_from(i).unwrap_or(u16::MAX), weight: 0 }).collect()
    }

    /// The configured targets: `targets`, or `first` alone when there are none.
    pub fn configured(first: SocketAddr, targets: &[HopTarget]) -> Vec<HopTarget> {
        if targets.is_empty() {
            HopTarget::in_order([first])
        } else {
            targets.to_vec()
        }
    }
}

#[derive(Clone, Debug)]
struct Target {
    hop: HopTarget,
    /// When it was marked down; `None`: up.
    down_since: Option<Instant>,
}

/// The targets, best priority first, with their state.
#[derive(Clone, Debug)]
pub struct NextHops {
    targets: Vec<Target>,
}

impl NextHops {
    /// `targets`; an empty list is taken as `first` alone.
    pub fn new(first: SocketAddr, targets: &[HopTarget]) -> NextHops {
        let mut hops = NextHops { targets: Vec::new() };
        hops.set(HopTarget::configured(first, targets));
        hops
    }

    /// New targets (the driver resolved the name again): a target kept keeps its state.
    pub fn set(&mut self, mut hops: Vec<HopTarget>) {
        if hops.is_empty() {
            return;
        }
        hops.sort_by_key(|h| h.priority);
        let mut targets: Vec<Target> = Vec::with_capacity(hops.len());
        for hop in hops {
            if targets.iter().any(|t| t.hop.addr == hop.addr) {
                continue;
            }
            let down_since = self.targets.iter().find(|t| t.hop.addr == hop.addr).and_then(|t| t.down_since);
            targets.push(Target { hop, down_since });
        }
        self.targets = targets;
    }

    /// Where a new request goes, `r` a random draw: among the targets up of the best
    /// priority, one chosen by weight (all of weight 0: equally); all down, the first.
    pub fn pick(&self, r: u32) -> SocketAddr {
        let (count, total) = self.best().fold((0u32, 0u32), |(n, w), h| (n + 1, w + u32::from(h.weight)));
        if count == 0 {
            return self.targets[0].hop.addr;
        }
        let fallback = self.best().next().map_or(self.targets[0].hop.addr, |h| h.addr);
        if total == 0 {
            return self.best().nth((r % count) as usize).map_or(fallback, |h| h.addr);
        }
        let mut point = r % total;
        for h in self.best() {
            let w = u32::from(h.weight);
            if point < w {
                return h.addr;
            }
            point -= w;
        }
        fallback
    }

    /// Whether the next request has several targets to choose from (a draw is needed).
    pub fn shared(&self) -> bool {
        self.best().nth(1).is_some()
    }

    /// The targets up of the best priority among those up: where new requests go.
    fn best(&self) -> impl Iterator<Item = &HopTarget> + '_ {
        let best = self.targets.iter().find(|t| t.down_since.is_none()).map(|t| t.hop.priority);
        self.targets.iter().filter(move |t| t.down_since.is_none() && Some(t.hop.priority) == best).map(|t| &t.hop)
    }

    /// The first target (best priority), for what needs one address (trust, metrics).
    pub fn first(&self) -> SocketAddr {
        self.targets.iter().find(|t| t.down_since.is_none()).unwrap_or(&self.targets[0]).hop.addr
    }

    /// The next target up that `tried` does not hold, best priority first, for a request
    /// that failed on those.
    pub fn next_untried(&self, tried: &[SocketAddr]) -> Option<SocketAddr> {
        self.targets.iter().find(|t| t.down_since.is_none() && !tried.contains(&t.hop.addr)).map(|t| t.hop.addr)
    }

    /// Whether `addr` is one of the targets.
    pub fn contains(&self, addr: SocketAddr) -> bool {
        self.targets.iter().any(|t| t.hop.addr == addr)
    }

    /// `addr` failed: skipped until a probe finds it answering. Returns whether it was up.
    pub fn mark_down(&mut self, addr: SocketAddr, now: Instant) -> bool {
        match self.targets.iter_mut().find(|t| t.hop.addr == addr) {
            Some(t) if t.down_since.is_none() => {
                t.down_since = Some(now);
                true
            }
            _ => false,
        }
    }

    /// `addr` answered a probe. Returns whether it was down.
    pub fn mark_up(&mut self, addr: SocketAddr) -> bool {
        match self.targets.iter_mut().find(|t| t.hop.addr == addr) {
            Some(t) if t.down_since.is_some() => {
                t.down_since = None;
                true
            }
            _ => false,
        }
    }

    /// The targets marked down, to probe.
    pub fn down(&self) -> Vec<SocketAddr> {
        self.targets.iter().filter(|t| t.down_since.is_some()).map(|t| t.hop.addr).collect()
    }

    /// (target, up) in order, for metrics.
    pub fn states(&self) -> impl Iterator<Item = (SocketAddr, bool)> + '_ {
        self.targets.iter().map(|t| (t.hop.addr, t.down_since.is_none()))
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
        let mut h = NextHops::new(a, &HopTarget::in_order([a, b, c]));
        assert_eq!(h.first(), a);
        assert!(h.mark_down(a, now));
        assert!(!h.mark_down(a, now), "once");
        assert_eq!(h.first(), b);
        assert_eq!(h.next_untried(&[a, b]), Some(c));
        assert_eq!(h.down(), [a]);
        // Resolved again (same targets, another order): the state stays with the address.
        h.set(vec![b, a, c, b].into_iter().map(|addr| HopTarget { addr, priority: 0, weight: 0 }).collect());
        assert_eq!(h.down(), [a]);
        assert_eq!(h.states().count(), 3, "duplicates dropped");
        h.set(HopTarget::in_order([a, b, c]));
        assert!(h.mark_up(a));
        assert_eq!(h.first(), a, "the primary is back");
        for t in [a, b, c] {
            h.mark_down(t, now);
        }
        assert_eq!(h.first(), a, "all down: still somewhere to send");
        assert_eq!(h.next_untried(&[a]), None);
    }

    #[test]
    fn equal_priorities_share_requests_by_weight_and_a_down_target_gives_its_share_away() {
        let (a, b, c) = (sa("192.0.2.1:5060"), sa("192.0.2.2:5060"), sa("192.0.2.3:5060"));
        let hops = vec![
            HopTarget { addr: a, priority: 10, weight: 1 },
            HopTarget { addr: b, priority: 10, weight: 3 },
            HopTarget { addr: c, priority: 20, weight: 100 },
        ];
        let mut h = NextHops::new(a, &hops);
        let count = |h: &NextHops, addr| (0..4000u32).map(|r| h.pick(r.wrapping_mul(2_654_435_761))).filter(|x| *x == addr).count();
        assert_eq!((count(&h, a), count(&h, b), count(&h, c)), (1000, 3000, 0), "1:3 within the best priority");
        h.mark_down(b, Instant::now());
        assert_eq!(count(&h, a), 4000, "the other target of the priority takes it all");
        h.mark_down(a, Instant::now());
        assert_eq!(count(&h, c), 4000, "then the next priority");
        // All of weight 0: equal shares.
        let h = NextHops::new(a, &[HopTarget { addr: a, priority: 0, weight: 0 }, HopTarget { addr: b, priority: 0, weight: 0 }]);
        assert_eq!((count(&h, a), count(&h, b)), (2000, 2000));
    }
}
