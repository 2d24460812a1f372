//! Media ports for the SDP the calls exchange, until the media plane owns them.
//!
//! The pool hands out even ports from the configured range (RTP on even ports, RTCP on the
//! next, RFC 3550 §11) and takes them back when a call ends, oldest-released first, so a port
//! is reused as late as possible (stray packets of the old call fade first). The media plane
//! will bind these ports; it replaces this pool with one that also knows which are bound.

use std::collections::VecDeque;

use estuary_sdp::PortAllocator;

#[derive(Debug)]
pub struct PortPool {
    next: u32,
    max: u32,
    released: VecDeque<u16>,
}

impl PortPool {
    /// Even ports in `min..=max` (`min` rounded up to even; `max` is the last RTCP port).
    pub fn new(min: u16, max: u16) -> PortPool {
        PortPool { next: u32::from(min.next_multiple_of(2)), max: u32::from(max), released: VecDeque::new() }
    }

    fn take(&mut self) -> Option<u16> {
        if self.next < self.max {
            let p = self.next as u16;
            self.next += 2;
            return Some(p);
        }
        self.released.pop_front()
    }

    pub fn release(&mut self, ports: impl IntoIterator<Item = u16>) {
        self.released.extend(ports);
    }

    /// Ports still available.
    pub fn available(&self) -> usize {
        (self.max.saturating_sub(self.next) / 2) as usize + self.released.len()
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
    fn even_ports_then_the_oldest_released() {
        // 20001 rounds up to 20002; 20006 still has its RTCP port 20007 in range.
        let mut pool = PortPool::new(20001, 20007);
        let mut taken = Vec::new();
        let mut p = CallPorts { pool: &mut pool, taken: &mut taken };
        assert_eq!([p.web_port(), p.ims_port(0), p.ims_port(1), p.ims_port(2)], [Some(20002), Some(20004), Some(20006), None]);
        pool.release([20004, 20002]);
        assert_eq!(pool.available(), 2);
        assert_eq!([pool.take(), pool.take(), pool.take()], [Some(20004), Some(20002), None]);
    }
}
