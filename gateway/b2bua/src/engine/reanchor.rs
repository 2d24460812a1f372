//! Getting an adopted call's media back (issue: a node died mid-call). The call's dialogs
//! came from the shared state; its media went with the dead node. This node re-INVITEs the
//! browser first, with an offer made as if the IMS side had offered its last SDP again: the
//! browser gets this node's address, certificate and new ICE credentials (an ICE restart,
//! new DTLS). The browser's answer, in IMS form, then goes to the IMS leg as this node's
//! offer in a re-INVITE (its new RTP ports). The IMS side's answer settles the plan. Both
//! legs keep their dialogs: the core sees a re-INVITE, never a new call.

use std::time::Instant;

use estuary_sip::{Method, Response};

use super::{contact_uri, reliable, rewrite_sdp, set_body, B2bua, Owner};
use crate::call::{CallId, LegIdx};
use crate::io::{EndReason, Side};

/// Which leg's re-INVITE a response answers.
#[derive(Clone, Debug)]
pub(super) enum Step {
    /// The browser's: its answer goes on to the IMS leg.
    Browser,
    /// The IMS leg's; `browser_answer` is what the browser answered, to settle the plan again
    /// with the IMS side's answer.
    Core { browser_answer: Vec<u8> },
}

impl B2bua {
    /// Starts moving adopted call `id`'s media here, from the IMS side's last SDP.
    pub(super) fn reanchor(&mut self, now: Instant, id: CallId, ims_sdp: &str) {
        let Some(call) = self.calls.get_mut(&id) else { return };
        let offer = rewrite_sdp(&mut call.sdp, &mut call.ports, &mut self.ports, Side::Ims, ims_sdp.as_bytes(), false);
        let body = match offer {
            Ok(b) => b,
            Err(e) => {
                tracing::warn!(call = id.0, reason = %e.reason, "adopted call: its media cannot be re-offered; ending it");
                return self.hangup(now, id, EndReason::ReanchorFailed(e.status()));
            }
        };
        let idx = call.web_leg();
        self.send_reanchor(now, id, idx, body, Step::Browser);
    }

    fn send_reanchor(&mut self, now: Instant, id: CallId, idx: LegIdx, body: Vec<u8>, step: Step) {
        let Some(hop) = self.calls.get(&id).map(|c| c.leg(idx).hop()) else { return };
        let via = self.via_for(hop);
        let Some(call) = self.calls.get_mut(&id) else { return };
        call.invite_pending = true;
        let leg = call.leg_mut(idx);
        let mut invite = leg.request(Method::Invite, &via, None);
        leg.invite_cseq = leg.local_cseq;
        invite.headers.push("Content-Type", "application/sdp");
        set_body(&mut invite.headers, &mut invite.body, body);
        let flow = leg.flow;
        self.stamp(&mut invite.headers, "User-Agent");
        match self.tx.send_request(now, &invite, flow, reliable(flow)) {
            Ok(k) => {
                self.owners.insert(k, Owner::Reanchor { call: id, leg: idx, step });
            }
            Err(e) => {
                tracing::warn!(call = id.0, error = %e, "adopted call: re-INVITE not sent; ending it");
                self.hangup(now, id, EndReason::ReanchorFailed(500));
            }
        }
    }

    /// A response to one of the re-INVITEs that move a call here.
    pub(super) fn on_reanchor_response(&mut self, now: Instant, id: CallId, idx: LegIdx, step: Step, resp: &Response) {
        if resp.code < 200 {
            return;
        }
        let Some(call) = self.calls.get_mut(&id) else { return };
        if !call.invite_pending {
            return; // Handled already (retransmitted 2xx are ACKed again by the caller).
        }
        call.invite_pending = false;
        if resp.code >= 300 {
            tracing::warn!(call = id.0, code = resp.code, leg = ?call.leg(idx).side, "adopted call: a leg refused its re-INVITE; ending it");
            call.sdp.reject_pending();
            return self.hangup(now, id, EndReason::ReanchorFailed(resp.code));
        }
        if let Some(target) = contact_uri(&resp.headers) {
            call.leg_mut(idx).remote_target = target;
        }
        // ACK the 2xx (RFC 3261 §13.2.2.4), and again for each retransmission.
        let leg_hop = call.leg(idx).hop();
        let via = self.via_for(leg_hop);
        let Some(call) = self.calls.get_mut(&id) else { return };
        let leg = call.leg_mut(idx);
        let cseq = leg.invite_cseq;
        let ack = leg.request(Method::Ack, &via, Some(cseq));
        let (flow, bytes) = (leg.flow, ack.to_bytes());
        call.last_ack = Some((idx, bytes.clone()));
        self.tx.send_stateless(flow, bytes);
        let settled = match &step {
            Step::Browser => {
                let answer = rewrite_sdp(&mut call.sdp, &mut call.ports, &mut self.ports, Side::Web, &resp.body, true);
                answer.map(|ims_offer| Some((ims_offer, resp.body.clone())))
            }
            // The IMS side answered this node's offer: settle the plan with its answer, by
            // replaying it as the IMS side's offer and the browser's answer to it.
            Step::Core { browser_answer } => rewrite_sdp(&mut call.sdp, &mut call.ports, &mut self.ports, Side::Ims, &resp.body, false)
                .and_then(|_| rewrite_sdp(&mut call.sdp, &mut call.ports, &mut self.ports, Side::Web, browser_answer, true))
                .map(|_| None),
        };
        match settled {
            Ok(next) => {
                // The browser side can start at once (ICE, DTLS) while the IMS leg moves.
                self.sync_media(id);
                match next {
                    Some((ims_offer, browser_answer)) => {
                        let Some(ims) = self.calls.get(&id).map(|c| c.web_leg().other()) else { return };
                        self.send_reanchor(now, id, ims, ims_offer, Step::Core { browser_answer });
                    }
                    None => {
                        tracing::info!(call = id.0, "adopted call: media moved here");
                        self.share_call(id, false);
                    }
                }
            }
            Err(e) => {
                tracing::warn!(call = id.0, reason = %e.reason, "adopted call: an answer to its re-INVITE is unusable; ending it");
                self.hangup(now, id, EndReason::ReanchorFailed(e.status()));
            }
        }
    }
}
