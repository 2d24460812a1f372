//! A call: two independent dialogs (legs) joined by the B2BUA.
//!
//! Leg A received the initial INVITE (the gateway is its UAS); leg B sent it (the gateway is its
//! UAC). Either may face the browser or the IMS core. Each leg has its own Call-ID, tags, CSeq
//! space, route set and remote target (RFC 3261 §12); nothing but end-to-end headers and bodies
//! crosses between them.

use std::sync::Arc;
use std::time::Instant;

use estuary_sip::{Headers, Method, Request};
use estuary_transaction::{ClientKey, ServerKey};

use crate::io::{Flow, Side, Transport};
use crate::registrar::BindingId;

/// Handle of one call.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CallId(pub u64);

/// Index of a leg within its call.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub enum LegIdx {
    A,
    B,
}

impl LegIdx {
    pub fn other(self) -> LegIdx {
        match self {
            LegIdx::A => LegIdx::B,
            LegIdx::B => LegIdx::A,
        }
    }
}

/// Where the call is in its life.
#[derive(Clone, Debug)]
pub enum CallState {
    /// INVITE relayed, no 2xx yet. The caller's INVITE is what our answers to it are built
    /// from, and the callee's is what a CANCEL copies (RFC 3261 §9.1). Neither is needed once
    /// the call is answered, so they live here and go with the state: an established call
    /// keeps no copy of either (each is a few KiB with its SDP). Shared, because answering
    /// needs the request while the engine is borrowed.
    Early { a_invite: Arc<Request>, b_invite: Arc<Request> },
    /// 2xx relayed; waiting for or past the ACK.
    Confirmed,
}

impl CallState {
    pub fn is_early(&self) -> bool {
        matches!(self, CallState::Early { .. })
    }

    pub fn is_confirmed(&self) -> bool {
        matches!(self, CallState::Confirmed)
    }
}

/// Where a call stands with the policy function (Rx toward the PCRF), when policy is closed
/// (`B2buaConfig::policy_gate`). The AAR goes out when an answer first settles the media
/// plan (a 183 with SDP or the 2xx); the 2xx that settles it, or that arrives before the
/// PCRF's answer, waits here until the decision comes.
#[derive(Debug, Default)]
pub enum Authorization {
    /// Policy is open (or off): nothing waits for the PCRF.
    #[default]
    NotRequired,
    /// Closed policy, no decision yet; nothing held.
    Awaiting,
    /// Closed policy, no decision yet, and the callee's 2xx is held: not relayed to the
    /// caller and not acknowledged (the callee retransmits it, RFC 3261 §13.3.1.4).
    Held(Box<HeldAnswer>),
    /// The PCRF authorized the media.
    Granted,
}

/// The callee's 2xx, held for the PCRF's decision, with what relaying it needs.
#[derive(Debug)]
pub struct HeldAnswer {
    pub response: estuary_sip::Response,
    /// The To tag toward the caller that stands for the callee's dialog.
    pub a_tag: Option<String>,
    /// The SDP for the caller, already interworked.
    pub body: Vec<u8>,
}

impl HeldAnswer {
    /// The callee's To tag: the dialog an ACK and BYE must name when the answer is dropped.
    pub fn callee_tag(&self) -> String {
        self.response.headers.to().ok().and_then(|t| t.tag().map(str::to_owned)).unwrap_or_default()
    }
}

/// One dialog of a call, as seen by the gateway.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Leg {
    pub side: Side,
    /// Where requests on this leg are sent.
    pub flow: Flow,
    /// Transport token for our Via on this leg.
    pub transport: Transport,
    pub call_id: String,
    pub local_tag: String,
    pub remote_tag: Option<String>,
    /// Our name-addr (From when we are UAC, To when UAS), without tag.
    pub local: String,
    /// The peer's name-addr, without tag.
    pub remote: String,
    /// Request-URI of requests to the peer (its Contact).
    pub remote_target: String,
    /// Route set (RFC 3261 §12.1), in the order Route headers are written.
    pub route_set: Vec<String>,
    /// Our CSeq counter for requests we send on this leg.
    pub local_cseq: u32,
    /// CSeq number of the INVITE that created (or last re-INVITEd) this leg, for ACK and RAck.
    pub invite_cseq: u32,
    /// Our Contact toward this leg.
    pub contact: String,
}

/// A request relayed from one leg to the other, waiting for its response.
#[derive(Clone, Debug)]
pub struct Relayed {
    pub call: CallId,
    /// The leg the request arrived on; its response goes back there.
    pub from: LegIdx,
    pub server: ServerKey,
    pub request: Request,
}

/// A pending ACK duty: the 2xx to an INVITE on `leg` was relayed; when the ACK arrives from
/// the other leg, ACK `leg` with CSeq `cseq`.
#[derive(Clone, Debug)]
pub struct AckDuty {
    pub leg: LegIdx,
    pub cseq: u32,
}

/// A call.
#[derive(Debug)]
pub struct Call {
    pub id: CallId,
    pub a: Leg,
    pub b: Leg,
    pub state: CallState,
    /// The server transaction of the initial INVITE on leg A (the request is in the state).
    pub a_invite_key: ServerKey,
    /// The client transaction of the initial INVITE sent on leg B.
    pub b_invite_key: ClientKey,
    /// A provisional arrived on leg B, so a CANCEL may be sent (RFC 3261 §9.1).
    pub b_provisional: bool,
    /// Leg A asked to cancel (CANCEL, or the browser left).
    pub cancel_requested: bool,
    pub cancel_sent: bool,
    /// Early dialogs seen on leg B (forking): B's To tag -> the To tag used toward A.
    pub forks: Vec<(String, String)>,
    /// ACK to send on the other leg when the next ACK arrives.
    pub ack_duty: Option<AckDuty>,
    /// The last ACK sent for a 2xx, repeated when that 2xx is retransmitted.
    pub last_ack: Option<(LegIdx, Vec<u8>)>,
    /// An INVITE (initial or re-) relayed and not yet answered: a second one is refused with 491.
    pub invite_pending: bool,
    /// The browser's registration this call runs under.
    pub binding: Option<BindingId>,
    /// The two offer/answer exchanges and the media plan they settle.
    pub sdp: estuary_sdp::SdpSession,
    /// Media ports this call holds (released when it ends).
    pub ports: Vec<u16>,
    /// The plan version last handed to the media plane (0: none).
    pub media_version: u64,
    /// When the caller's INVITE arrived and the answer was relayed (for the call's record).
    pub started: Instant,
    pub answered: Option<Instant>,
    /// The first reason the call started ending for.
    pub end_reason: Option<crate::EndReason>,
    /// The IMS Charging Identifier of the session (ours for browser calls, the core's for
    /// calls from IMS), for the call's record.
    pub icid: Option<String>,
    /// When the gateway last asked the IMS leg for a keyframe by SIP INFO (RFC 5168): at
    /// most one a second, whatever the decoder's losses.
    pub fast_update_sent: Option<Instant>,
    /// The PCRF's decision, when policy is closed.
    pub authorization: Authorization,
}

impl Call {
    /// A call of legs `a` (the caller's) and `b`, in `state`, whose initial INVITE was the
    /// server and client transactions `invite`, negotiating through `sdp`, set up from `now`;
    /// nothing else known yet.
    pub fn new(id: CallId, (a, b): (Leg, Leg), state: CallState, invite: (ServerKey, ClientKey), sdp: estuary_sdp::SdpSession, now: Instant) -> Call {
        Call {
            id,
            a,
            b,
            state,
            a_invite_key: invite.0,
            b_invite_key: invite.1,
            b_provisional: false,
            cancel_requested: false,
            cancel_sent: false,
            forks: Vec::new(),
            ack_duty: None,
            last_ack: None,
            invite_pending: false,
            binding: None,
            sdp,
            ports: Vec::new(),
            media_version: 0,
            started: now,
            answered: None,
            end_reason: None,
            icid: None,
            fast_update_sent: None,
            authorization: Authorization::NotRequired,
        }
    }

    /// Answered (confirmed) and not being ended: a call that can go on elsewhere.
    pub fn is_up(&self) -> bool {
        self.state.is_confirmed() && self.end_reason.is_none()
    }

    /// The caller's INVITE and its server transaction, while the call is early: what a final
    /// answer to the caller is built from. `None` once answered.
    pub fn caller_invite(&self) -> Option<(ServerKey, Arc<Request>)> {
        match &self.state {
            CallState::Early { a_invite, .. } => Some((self.a_invite_key.clone(), a_invite.clone())),
            CallState::Confirmed => None,
        }
    }

    pub fn leg(&self, idx: LegIdx) -> &Leg {
        match idx {
            LegIdx::A => &self.a,
            LegIdx::B => &self.b,
        }
    }

    pub fn leg_mut(&mut self, idx: LegIdx) -> &mut Leg {
        match idx {
            LegIdx::A => &mut self.a,
            LegIdx::B => &mut self.b,
        }
    }

    /// The leg that faces the browser.
    pub fn web_leg(&self) -> LegIdx {
        if self.a.side == Side::Web {
            LegIdx::A
        } else {
            LegIdx::B
        }
    }

    /// The To tag toward A that stands for B's early dialog `b_tag`, creating one if new.
    pub fn fork_tag(&mut self, b_tag: &str, fresh: impl FnOnce() -> String) -> String {
        if let Some((_, a)) = self.forks.iter().find(|(b, _)| b == b_tag) {
            return a.clone();
        }
        // The first early dialog uses the leg's own tag; later forks get new ones.
        let a_tag = if self.forks.is_empty() { self.a.local_tag.clone() } else { fresh() };
        self.forks.push((b_tag.to_owned(), a_tag.clone()));
        a_tag
    }
}

impl Leg {
    /// The side and transport of this leg's next hop, which decide its Via.
    pub fn hop(&self) -> (Side, Transport) {
        (self.side, self.transport)
    }

    /// A request within this leg's dialog (RFC 3261 §12.2.1.1), without body. `via` is the
    /// complete top Via value; `cseq` overrides the counter (ACK, CANCEL).
    pub fn request(&mut self, method: Method, via: &str, cseq: Option<u32>) -> Request {
        let seq = match cseq {
            Some(n) => n,
            None => {
                self.local_cseq += 1;
                self.local_cseq
            }
        };
        let uri = match estuary_sip::Uri::parse(&self.remote_target) {
            Ok(u) => u,
            // Invariant: remote_target was taken from a parsed Contact or Request-URI.
            Err(_) => estuary_sip::Uri::parse("sip:invalid").expect("literal URI parses"),
        };
        let mut headers = Headers::default();
        headers.push("Via", via);
        headers.push("Max-Forwards", "70");
        for r in &self.route_set {
            headers.push("Route", r);
        }
        headers.push("From", with_tag(&self.local, Some(&self.local_tag)));
        headers.push("To", with_tag(&self.remote, self.remote_tag.as_deref()));
        headers.push("Call-ID", &self.call_id);
        headers.push("CSeq", format!("{seq} {}", method.as_str()));
        if matches!(method, Method::Invite | Method::Update | Method::Subscribe | Method::Notify | Method::Refer) {
            headers.push("Contact", &self.contact);
        }
        Request { method, uri, version: "SIP/2.0".to_owned(), headers, body: Vec::new() }
    }
}

/// `name-addr;tag=x` from a tagless name-addr.
pub fn with_tag(name_addr: &str, tag: Option<&str>) -> String {
    match tag {
        Some(t) => format!("{name_addr};tag={t}"),
        None => name_addr.to_owned(),
    }
}
