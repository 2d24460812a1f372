//! Client transactions: INVITE (RFC 3261 §17.1.1, Figure 5, with RFC 6026's Accepted state)
//! and non-INVITE (§17.1.2, Figure 6).

use std::time::{Duration, Instant};

use estuary_sip::{Method, Request, Response};

use crate::timer::TimerConfig;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// INVITE sent, nothing heard (INVITE "Calling", non-INVITE "Trying").
    Calling,
    /// A provisional response arrived.
    Proceeding,
    /// A non-2xx final arrived (INVITE) or any final arrived (non-INVITE); absorbing
    /// retransmissions until Timer D or K.
    Completed,
    /// A 2xx to INVITE arrived; passing 2xx retransmissions up until Timer M.
    Accepted,
}

pub(crate) enum Disposition {
    Deliver,
    Retransmitted2xx,
    Absorb,
}

pub(crate) enum TimerOutcome {
    Continue,
    Failed,
    Terminated,
}

pub(crate) struct ClientTx<F> {
    flow: F,
    reliable: bool,
    invite: bool,
    state: State,
    /// The request as sent, for Timer A/E retransmissions; emptied once a response makes
    /// them stop, so a call's INVITE is not held for Timer M's 32 s.
    request: Vec<u8>,
    /// The INVITE's headers, to build the ACK for a non-2xx (§17.1.1.3); dropped once a
    /// final response has come (and its ACK, if any, is built).
    ack_base: Option<Request>,
    /// The ACK sent for the non-2xx, repeated for each response retransmission.
    ack: Option<Vec<u8>>,
    /// Timer A or E: next retransmission and the current interval.
    retransmit: Option<(Instant, Duration)>,
    /// Timer B or F.
    timeout: Option<Instant>,
    /// Timer D, K or M: when the transaction disappears.
    linger: Option<Instant>,
    transmit: Option<Vec<u8>>,
}

impl<F: Copy> ClientTx<F> {
    pub(crate) fn start(now: Instant, timers: &TimerConfig, request: &Request, flow: F, reliable: bool) -> Self {
        let invite = request.method == Method::Invite;
        ClientTx {
            flow,
            reliable,
            invite,
            state: State::Calling,
            request: request.to_bytes(),
            ack_base: invite.then(|| Request {
                method: request.method.clone(),
                uri: request.uri.clone(),
                version: request.version.clone(),
                headers: request.headers.clone(),
                body: Vec::new(),
            }),
            ack: None,
            // Timer A / E start at T1, only over unreliable transports (§17.1.1.2, §17.1.2.2).
            retransmit: (!reliable).then(|| (now + timers.t1, timers.t1)),
            timeout: Some(now + timers.timeout()),
            linger: None,
            transmit: None,
        }
    }

    pub(crate) fn flow(&self) -> F {
        self.flow
    }

    pub(crate) fn request_bytes(&self) -> &[u8] {
        &self.request
    }

    pub(crate) fn take_transmit(&mut self) -> Option<Vec<u8>> {
        self.transmit.take()
    }

    pub(crate) fn awaiting_final(&self) -> bool {
        matches!(self.state, State::Calling | State::Proceeding)
    }

    pub(crate) fn deadline(&self) -> Option<Instant> {
        [self.retransmit.map(|(at, _)| at), self.timeout, self.linger].into_iter().flatten().min()
    }

    pub(crate) fn on_response(&mut self, now: Instant, timers: &TimerConfig, response: &Response) -> Disposition {
        let code = response.code;
        match (self.invite, self.state) {
            (_, State::Calling | State::Proceeding) if code < 200 => {
                self.state = State::Proceeding;
                if self.invite {
                    // §17.1.1.2: a provisional stops Timer A (and B: the INVITE may ring long).
                    self.retransmit = None;
                    self.timeout = None;
                    self.request = Vec::new();
                } else if let Some((at, _)) = self.retransmit {
                    // §17.1.2.2: in Proceeding, Timer E continues at T2.
                    self.retransmit = Some((at, timers.t2));
                }
                Disposition::Deliver
            }
            (true, State::Calling | State::Proceeding) if code < 300 => {
                self.state = State::Accepted;
                self.stop_timers();
                self.ack_base = None;
                self.linger = Some(now + timers.timeout()); // Timer M
                Disposition::Deliver
            }
            (true, State::Calling | State::Proceeding) => {
                self.state = State::Completed;
                self.stop_timers();
                self.linger = Some(now + timers.timer_d(self.reliable));
                let ack = self.build_ack(response);
                self.ack_base = None;
                self.transmit = ack.clone();
                self.ack = ack;
                Disposition::Deliver
            }
            (false, State::Calling | State::Proceeding) => {
                self.state = State::Completed;
                self.stop_timers();
                self.linger = Some(now + timers.t4_or_zero(self.reliable)); // Timer K
                Disposition::Deliver
            }
            (true, State::Accepted) if (200..300).contains(&code) => Disposition::Retransmitted2xx,
            (true, State::Completed) if code >= 300 => {
                self.transmit = self.ack.clone();
                Disposition::Absorb
            }
            _ => Disposition::Absorb,
        }
    }

    pub(crate) fn on_timeout(&mut self, now: Instant, timers: &TimerConfig) -> TimerOutcome {
        if self.linger.is_some_and(|t| t <= now) {
            return TimerOutcome::Terminated;
        }
        if self.timeout.is_some_and(|t| t <= now) {
            return TimerOutcome::Failed;
        }
        if let Some((at, interval)) = self.retransmit {
            if at <= now {
                self.transmit = Some(self.request.clone());
                // Timer A doubles without bound (B ends it); E doubles up to T2 (§17.1.2.2).
                let next = if self.invite {
                    interval * 2
                } else if self.state == State::Proceeding {
                    timers.t2
                } else {
                    (interval * 2).min(timers.t2)
                };
                self.retransmit = Some((now + next, next));
            }
        }
        TimerOutcome::Continue
    }

    /// A final response: no more retransmissions, so the request and the ACK's template go.
    fn stop_timers(&mut self) {
        self.retransmit = None;
        self.timeout = None;
        self.request = Vec::new();
    }

    /// RFC 3261 §17.1.1.3: the ACK for a non-2xx repeats the INVITE's Request-URI, Call-ID,
    /// From, CSeq number, top Via and Route set, and takes To from the response.
    fn build_ack(&self, response: &Response) -> Option<Vec<u8>> {
        let invite = self.ack_base.as_ref()?;
        let mut ack = Request {
            method: Method::Ack,
            uri: invite.uri.clone(),
            version: invite.version.clone(),
            headers: Default::default(),
            body: Vec::new(),
        };
        let top_via = invite.headers.values("Via").into_iter().next()?;
        ack.headers.push("Via", &top_via);
        for route in invite.headers.get_all("Route") {
            ack.headers.push("Route", route);
        }
        ack.headers.push("Max-Forwards", "70");
        ack.headers.push("From", invite.headers.get("From")?);
        ack.headers.push("To", response.headers.get("To")?);
        ack.headers.push("Call-ID", invite.headers.get("Call-ID")?);
        let seq = invite.headers.cseq().ok()?.seq;
        ack.headers.push("CSeq", format!("{seq} ACK"));
        ack.headers.push("Content-Length", "0");
        Some(ack.to_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tests::{req, resp};

    /// A call's INVITE transaction lingers in Accepted for Timer M (32 s) after the answer;
    /// what it holds then is memory every new call pays for that long.
    #[test]
    fn a_transaction_past_its_answer_holds_neither_request_nor_ack_template() {
        let (now, timers) = (Instant::now(), TimerConfig::default());
        let mut req = req("INVITE", "z9hG4bK1", 1);
        req.body = b"v=0\n".to_vec();
        let mut tx = ClientTx::start(now, &timers, &req, 0u8, false);
        assert!(!tx.request.is_empty() && tx.ack_base.as_ref().is_some_and(|r| r.body.is_empty()));
        tx.on_response(now, &timers, &resp(180, &req));
        assert!(tx.request.is_empty(), "no Timer A after a provisional");
        assert!(tx.ack_base.is_some(), "a non-2xx may still need its ACK");
        tx.on_response(now, &timers, &resp(200, &req));
        assert!(tx.request.is_empty() && tx.ack_base.is_none());

        let mut refused = ClientTx::start(now, &timers, &req, 0u8, false);
        refused.on_response(now, &timers, &resp(486, &req));
        assert!(refused.ack.is_some(), "the ACK for a non-2xx is built before its template goes");
        assert!(refused.request.is_empty() && refused.ack_base.is_none());
    }
}
