//! Media ports for the SDP the calls exchange, until the media plane owns them.
//!
//! The pool hands out even ports from the configured range (RTP on even ports, RTCP on the
//! next, RFC 3550 §11) and takes them back when a call ends. A released port rests in
//! quarantine before reuse, so late packets of the old call (a far end still sending, a
//! retransmitted 2xx's SDP) never reach the next call on that port; reuse is oldest first.
//! The media plane will bind these ports; it replaces this pool with one that also knows which
//! are bound.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use estuary_sdp::PortAllocator;

#[derive(Debug)]
pub struct PortPool {
    next: u32,
    max: u32,
    quarantine: Duration,
    /// (usable again at, port), in release order; `None`: at once.
    released: VecDeque<(Option<Instant>, u16)>,
    /// The engine's current time (set on every input; the pool reads no clock).
    now: Option<Instant>,
}

impl PortPool {
    /// Even ports in `min..=max` (`min` rounded up to even; `max` is the last RTCP port).
    pub fn new(min: u16, max: u16, quarantine: Duration) -> PortPool {
        PortPool {
            next: u32::from(min.next_multiple_of(2)),
            max: u32::from(max),
            quarantine,
            released: VecDeque::new(),
            now: None,
        }
    }

    pub fn set_now(&mut self, now: Instant) {
        self.now = Some(now);
    }

    fn ready(&self, at: Option<Instant>) -> bool {
        ready_by(at, self.now)
    }

    fn take(&mut self) -> Option<u16> {
        if self.next < self.max {
            let p = self.next as u16;
            self.next += 2;
            return Some(p);
        }
        let &(at, port) = self.released.front()?;
        if !self.ready(at) {
            return None;
        }
        self.released.pop_front();
        Some(port)
    }

    pub fn release(&mut self, ports: impl IntoIterator<Item = u16>) {
        // The engine sets the time on every input, before any call can end.
        let at = self.now.and_then(|n| n.checked_add(self.quarantine));
        self.released.extend(ports.into_iter().map(|p| (at, p)));
    }

    fn ready_count(&self, now: Instant) -> usize {
        self.released.iter().take_while(|(at, _)| ready_by(*at, Some(now))).count()
    }

    /// Ports that can be handed out at `now` (quarantined ones excluded).
    pub fn available(&self, now: Instant) -> usize {
        (self.max.saturating_sub(self.next) / 2) as usize + self.ready_count(now)
    }

    /// Ports resting in quarantine at `now`.
    pub fn quarantined(&self, now: Instant) -> usize {
        self.released.len() - self.ready_count(now)
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

impl PortAllocator for CallPorts<'_> {
    fn web_port(&mut self) -> Option<u16> {
        let p = self.pool.take()?;
        self.taken.push(p);
        Some(p)
    }

    fn ims_port(&mut self, _index: usize) -> Option<u16> {
        self.web_port()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn even_ports_then_the_oldest_released_after_quarantine() {
        // 20001 rounds up to 20002; 20006 still has its RTCP port 20007 in range.
        let t0 = Instant::now();
        let mut pool = PortPool::new(20001, 20007, Duration::from_secs(30));
        pool.set_now(t0);
        let mut taken = Vec::new();
        let mut p = CallPorts { pool: &mut pool, taken: &mut taken };
        assert_eq!([p.web_port(), p.ims_port(0), p.ims_port(1), p.ims_port(2)], [Some(20002), Some(20004), Some(20006), None]);
        pool.release([20004, 20002]);
        assert_eq!((pool.available(t0), pool.quarantined(t0)), (0, 2));
        pool.set_now(t0 + Duration::from_secs(29));
        assert_eq!(pool.take(), None, "still in quarantine");
        pool.set_now(t0 + Duration::from_secs(30));
        let t30 = t0 + Duration::from_secs(30);
        assert_eq!((pool.available(t30), pool.quarantined(t30)), (2, 0));
        assert_eq!([pool.take(), pool.take(), pool.take()], [Some(20004), Some(20002), None]);
    }
}
