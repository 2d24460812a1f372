//! Transaction timer values (RFC 3261 §17, Table 4; RFC 6026 §8 for L and M).

use std::time::Duration;

/// Base timer values. The defaults are RFC 3261's, tuned for a LAN-to-core RTT well under
/// 500 ms; raise T1 for satellite or long-haul links.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TimerConfig {
    /// RTT estimate (RFC 3261 §17.1.1.1), default 500 ms.
    pub t1: Duration,
    /// Maximum retransmit interval for non-INVITE requests and INVITE responses, default 4 s.
    pub t2: Duration,
    /// Maximum time a message stays in the network, default 5 s.
    pub t4: Duration,
}

impl Default for TimerConfig {
    fn default() -> Self {
        TimerConfig {
            t1: Duration::from_millis(500),
            t2: Duration::from_secs(4),
            t4: Duration::from_secs(5),
        }
    }
}

impl TimerConfig {
    /// 64*T1: Timers B, F, H, J (unreliable), L and M.
    pub fn timeout(&self) -> Duration {
        self.t1 * 64
    }

    /// Timer D: at least 32 s over unreliable transports, zero over reliable ones.
    pub fn timer_d(&self, reliable: bool) -> Duration {
        if reliable {
            Duration::ZERO
        } else {
            Duration::from_secs(32).max(self.timeout())
        }
    }

    /// Timers I and K: T4 over unreliable transports, zero over reliable ones.
    pub fn t4_or_zero(&self, reliable: bool) -> Duration {
        if reliable {
            Duration::ZERO
        } else {
            self.t4
        }
    }

    /// Timer J: 64*T1 over unreliable transports, zero over reliable ones.
    pub fn timer_j(&self, reliable: bool) -> Duration {
        if reliable {
            Duration::ZERO
        } else {
            self.timeout()
        }
    }
}

/// The RFC's timer names, so a trace says which rule fired.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Timer {
    /// INVITE client retransmit.
    A,
    /// INVITE client timeout.
    B,
    /// INVITE client wait for response retransmits after a non-2xx final.
    D,
    /// Non-INVITE client retransmit.
    E,
    /// Non-INVITE client timeout.
    F,
    /// INVITE server final response retransmit.
    G,
    /// INVITE server wait for ACK.
    H,
    /// INVITE server wait for ACK retransmits.
    I,
    /// Non-INVITE server wait for request retransmits.
    J,
    /// Non-INVITE client wait for response retransmits.
    K,
    /// INVITE server in Accepted: absorb INVITE retransmits (RFC 6026).
    L,
    /// INVITE client in Accepted: pass 2xx retransmits to the TU (RFC 6026).
    M,
}
