//! Server transactions: INVITE (RFC 3261 §17.2.1, Figure 7, with RFC 6026's Accepted state)
//! and non-INVITE (§17.2.2, Figure 8).

use std::time::{Duration, Instant};

use estuary_sip::{Method, Request, Response};

use crate::timer::TimerConfig;
use crate::{RequestOutcome, UsageError};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// Request received; no response yet (non-INVITE "Trying") or provisionals sent.
    Proceeding,
    /// A final (non-2xx for INVITE) was sent; retransmitting it (INVITE) or absorbing
    /// request retransmissions (non-INVITE).
    Completed,
    /// INVITE only: the ACK for the non-2xx arrived; absorbing ACK retransmissions (Timer I).
    Confirmed,
    /// INVITE only: a 2xx was sent; retransmitting it until the ACK arrives (Timer L bounds it).
    Accepted,
}

pub(crate) enum TimerOutcome {
    Continue,
    AckTimeout(u16),
    Terminated,
}

pub(crate) struct ServerTx<F> {
    flow: F,
    reliable: bool,
    invite: bool,
    state: State,
    /// The last response sent (provisional or final) and its status.
    last: Option<(u16, Vec<u8>)>,
    /// Timer G (non-2xx) or the 2xx retransmission timer in Accepted.
    retransmit: Option<(Instant, Duration)>,
    /// Timer H, or Timer L in Accepted.
    ack_deadline: Option<Instant>,
    /// Timer I or J: when the transaction disappears.
    linger: Option<Instant>,
    /// Whether the 2xx in Accepted has been acknowledged.
    acked: bool,
    transmit: Option<Vec<u8>>,
}

impl<F: Copy> ServerTx<F> {
    pub(crate) fn new(request: &Request, flow: F, reliable: bool) -> Self {
        ServerTx {
            flow,
            reliable,
            invite: request.method == Method::Invite,
            state: State::Proceeding,
            last: None,
            retransmit: None,
            ack_deadline: None,
            linger: None,
            acked: false,
            transmit: None,
        }
    }

    pub(crate) fn flow(&self) -> F {
        self.flow
    }

    pub(crate) fn take_transmit(&mut self) -> Option<Vec<u8>> {
        self.transmit.take()
    }

    pub(crate) fn is_final(&self) -> bool {
        self.state != State::Proceeding
    }

    pub(crate) fn is_accepted(&self) -> bool {
        self.state == State::Accepted
    }

    pub(crate) fn deadline(&self) -> Option<Instant> {
        [self.retransmit.map(|(at, _)| at), self.ack_deadline, self.linger].into_iter().flatten().min()
    }

    /// A request matched this transaction: a retransmission, or the ACK of a non-2xx.
    pub(crate) fn on_request(&mut self, now: Instant, timers: &TimerConfig, is_ack: bool) -> RequestOutcome {
        if is_ack {
            if self.invite && self.state == State::Completed {
                self.state = State::Confirmed;
                self.retransmit = None;
                self.ack_deadline = None;
                self.linger = Some(now + timers.t4_or_zero(self.reliable)); // Timer I
            }
            return RequestOutcome::AckAbsorbed;
        }
        // §17.2.1 / §17.2.2: a retransmitted request gets the most recent response again,
        // except in Accepted (RFC 6026 §7.1: absorbed; the 2xx is retransmitted on its timer).
        if matches!(self.state, State::Proceeding | State::Completed) {
            self.transmit = self.last.as_ref().map(|(_, b)| b.clone());
        }
        RequestOutcome::Retransmission
    }

    /// The ACK for our 2xx arrived (matched by Call-ID and CSeq, since it has its own branch).
    pub(crate) fn on_2xx_ack(&mut self) {
        self.acked = true;
        self.retransmit = None;
        // Nothing re-sends the 2xx now (retransmitted INVITEs are absorbed in Accepted), so
        // its bytes, SDP and all, need not wait for Timer L.
        self.last = None;
    }

    pub(crate) fn send(&mut self, now: Instant, timers: &TimerConfig, response: &Response) -> Result<(), UsageError> {
        if self.state != State::Proceeding {
            return Err(UsageError::AlreadyFinal);
        }
        let code = response.code;
        let bytes = response.to_bytes();
        self.transmit = Some(bytes.clone());
        self.last = Some((code, bytes));
        if code < 200 {
            return Ok(());
        }
        if !self.invite {
            self.state = State::Completed;
            self.linger = Some(now + timers.timer_j(self.reliable));
            return Ok(());
        }
        self.state = if code < 300 { State::Accepted } else { State::Completed };
        // Timer G for a non-2xx, and the §13.3.1.4 2xx retransmission, both start at T1
        // and only over unreliable transports. A 2xx is retransmitted even over TCP by some
        // cores; RFC 3261 says the UAS core does it regardless of transport for 2xx, since an
        // intermediate hop may be unreliable.
        let retransmit_2xx = code < 300;
        if !self.reliable || retransmit_2xx {
            self.retransmit = Some((now + timers.t1, timers.t1));
        }
        self.ack_deadline = Some(now + timers.timeout()); // Timer H, or L for a 2xx
        Ok(())
    }

    pub(crate) fn on_timeout(&mut self, now: Instant, timers: &TimerConfig) -> TimerOutcome {
        if self.linger.is_some_and(|t| t <= now) {
            return TimerOutcome::Terminated;
        }
        if self.ack_deadline.is_some_and(|t| t <= now) {
            let code = self.last.as_ref().map_or(0, |(c, _)| *c);
            return match self.state {
                State::Accepted if self.acked => TimerOutcome::Terminated,
                _ => TimerOutcome::AckTimeout(code),
            };
        }
        if let Some((at, interval)) = self.retransmit {
            if at <= now {
                self.transmit = self.last.as_ref().map(|(_, b)| b.clone());
                let next = (interval * 2).min(timers.t2);
                self.retransmit = Some((now + next, next));
            }
        }
        TimerOutcome::Continue
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tests::{req, resp};

    /// An acknowledged 2xx lingers until Timer L without its bytes: nothing re-sends it.
    #[test]
    fn an_acknowledged_2xx_is_not_kept_for_timer_l() {
        let (now, timers) = (Instant::now(), TimerConfig::default());
        let req = req("INVITE", "z9hG4bK1", 1);
        let mut tx = ServerTx::new(&req, 0u8, true);
        tx.send(now, &timers, &resp(200, &req)).unwrap();
        assert!(tx.take_transmit().is_some() && tx.last.is_some(), "sent, and retransmitted until the ACK");
        tx.on_2xx_ack();
        assert!(tx.last.is_none());
        assert!(matches!(tx.on_request(now, &timers, false), RequestOutcome::Retransmission) && tx.take_transmit().is_none());
    }
}
