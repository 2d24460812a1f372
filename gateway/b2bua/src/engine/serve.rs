//! Serving what another node of the cluster holds (see [`crate::cluster`]): the requests
//! held while the shared state is asked, a registration adopted from it, and requests from
//! the core proxied to the node whose WebSocket carries their browser.

use std::net::SocketAddr;
use std::time::Instant;

use estuary_sip::{Method, NameAddr, Request, Response};
use estuary_transaction::{ClientKey, ServerKey};

use estuary_sdp::SdpSession;
use rand::Rng;

use super::{reliable, B2bua, Owner};
use crate::call::{Call, CallId, CallState, LegIdx};
use crate::cluster::{Held, Holder, StateAnswer, StateQuery, Waiting, CALLS_ATTEMPTS, CALLS_RETRY};
use crate::io::{ConnId, EndReason, Flow, Output, SharedCall, SharedRegistration, Side};
use crate::registrar::Binding;

/// How far an adopted registration's or call's CSeqs jump past the shared copy's: the copy
/// may be a write or two behind what the lost node sent (a write dropped in a Redis outage,
/// in-dialog requests since the answer), and the far end refuses a CSeq that does not grow
/// (RFC 3261 §10.3 step 7, §12.2.2).
const ADOPTED_CSEQ_MARGIN: u32 = 100;

impl B2bua {
    /// Holds `req` and asks the cluster's shared state `query`; a full table answers 503.
    pub(super) fn hold(&mut self, now: Instant, query: StateQuery, flow: Flow, key: ServerKey, req: Request) {
        if req.method == Method::Invite {
            // The answer may take a Redis round trip or two: stop the core's retransmissions.
            self.respond(now, &key, &req, 100, "Trying");
        }
        if self.queries.is_full() {
            tracing::warn!("too many requests waiting for the cluster's shared state; refusing");
            return self.respond(now, &key, &req, 503, "Service Unavailable");
        }
        self.ask(now, query, Waiting::Request { flow, key, req: Box::new(req) });
    }

    /// Asks the cluster's shared state `query` now, for `waiting`; whether it went out (not
    /// when [`MAX_HELD`](crate::cluster::MAX_HELD) are held).
    fn ask(&mut self, now: Instant, query: StateQuery, waiting: Waiting) -> bool {
        let ask = query.clone();
        let Some(id) = self.queries.hold(now, Held::new(query, waiting)) else { return false };
        self.outputs.push_back(Output::StateQuery { query: id, ask });
        true
    }

    /// Asks for the calls of registration `token`, taken over for the browser on `conn`:
    /// now for the first attempt, after [`CALLS_RETRY`] for the next ones.
    fn ask_calls(&mut self, now: Instant, conn: ConnId, token: String, attempt: u32) {
        let (query, waiting) = (StateQuery::CallsOf { token }, Waiting::Calls { conn, attempt });
        if attempt == 1 {
            self.ask(now, query, waiting);
        } else {
            let _ = self.queries.ask_at(now + CALLS_RETRY, Held::new(query, waiting));
        }
    }

    /// Goes on with what waited for an answer (`None`: it did not come in time, so the node
    /// behaves as a node alone would).
    pub(super) fn resume(&mut self, now: Instant, held: Held, answer: Option<StateAnswer>) {
        let Held { query, waiting, .. } = held;
        match (query, waiting) {
            (StateQuery::RegisterDialog { .. }, Waiting::Request { flow: Flow::Web { conn }, key, req }) => {
                if !self.conns.contains_key(&conn) {
                    return; // The browser left while the question was out.
                }
                if let Some(StateAnswer::Registration { registration, .. }) = answer {
                    self.adopt_registration(conn, *registration);
                }
                // The calls follow once the core accepts the refresh (`adoption_accepted`).
                self.on_register(now, conn, key, *req, true);
            }
            (StateQuery::CallsOf { token }, Waiting::Calls { conn, attempt }) => {
                if !self.conns.contains_key(&conn) {
                    return;
                }
                let calls = match answer {
                    Some(StateAnswer::Calls(calls)) => calls,
                    _ => Vec::new(),
                };
                // A call a node still carries: that node may be dead with its presence not yet
                // run out, or alive with the browser's media; ask again until it is known.
                let elsewhere = calls.iter().any(|(_, h)| matches!(h, Holder::Node(_)));
                if elsewhere {
                    self.outputs.push_back(Output::HandOverWanted { token: token.clone() });
                }
                for (call, holder) in calls {
                    if !matches!(holder, Holder::Gone | Holder::Here) {
                        continue;
                    }
                    let web = call.legs.iter().find(|l| l.side == Side::Web).map(|l| (l.call_id.clone(), l.local_tag.clone()));
                    if web.is_some_and(|(c, t)| self.dialogs.contains_key(&(Side::Web, c, t))) {
                        continue; // Carried here already.
                    }
                    let ims_sdp = call.ims_sdp.clone();
                    let Some(id) = self.adopt_call(now, conn, call) else { continue };
                    match ims_sdp {
                        Some(sdp) => self.reanchor(now, id, &sdp),
                        None => {
                            // Its media cannot be offered again: end it cleanly on both sides.
                            tracing::warn!(call = id.0, "a call taken over without the core's SDP; ending it");
                            self.hangup(now, id, EndReason::ReanchorFailed(500));
                        }
                    }
                }
                if elsewhere && attempt < CALLS_ATTEMPTS {
                    self.ask_calls(now, conn, token, attempt + 1);
                }
            }
            (StateQuery::Token { token }, Waiting::Request { flow, key, req }) => {
                let here = self.registrar.find_token(&token);
                if here.and_then(|id| self.registrar.get(id)).is_some_and(|b| b.connected) {
                    // The browser registered (or came back) here meanwhile.
                    return self.on_out_of_dialog(now, flow, key, *req);
                }
                match answer {
                    Some(StateAnswer::Registration { holder: Holder::Node(node), .. }) if node != self.cfg.ims_advertised => {
                        self.proxy_to_node(now, key, *req, node)
                    }
                    // Registered, but its browser's connection went with a node (or with this
                    // node's previous process, or left this one) and it has not come back.
                    Some(StateAnswer::Registration { .. }) | None => self.respond(now, &key, &req, 480, "Temporarily Unavailable"),
                    _ if here.is_some() => self.respond(now, &key, &req, 480, "Temporarily Unavailable"),
                    Some(_) => self.respond(now, &key, &req, 404, "Not Found"),
                }
            }
            (StateQuery::Token { token }, Waiting::HandOver) => {
                let Some(StateAnswer::Registration { holder: Holder::Node(node), .. }) = answer else {
                    return; // Still this node's (or nobody's): nothing to hand over.
                };
                if node == self.cfg.ims_advertised {
                    return;
                }
                let Some(binding) = self.registrar.find_token(&token) else { return };
                let calls: Vec<CallId> = self.calls.values().filter(|c| c.binding == Some(binding) && c.is_up()).map(|c| c.id).collect();
                for id in calls {
                    self.hand_over(now, id);
                }
                // Its browser is the other node's now: requests from the core for it that
                // reach this node are proxied there (see `foreign_token`).
                if let Some(b) = self.registrar.remove(binding) {
                    tracing::info!(aor = %b.aor, %node, "the browser is back at another node; its registration goes with it");
                    self.sync_signalling(now, b.conn);
                }
            }
            (StateQuery::Dialog { .. }, Waiting::Request { flow: Flow::Web { conn }, key, req }) => {
                if !self.conns.contains_key(&conn) {
                    return;
                }
                match answer {
                    // Its node is gone (or was this node's previous process): carry it here.
                    Some(StateAnswer::Call { call, holder: Holder::Gone | Holder::Here }) if self.dialog_of(Side::Web, &req).is_none() => {
                        self.adopt_call(now, conn, *call);
                        self.on_in_dialog(now, Flow::Web { conn }, key, *req, true)
                    }
                    _ => self.respond(now, &key, &req, 481, "Call/Transaction Does Not Exist"),
                }
            }
            (StateQuery::Dialog { .. }, Waiting::Ending { call, except, reason }) => {
                self.ending.remove(&call);
                let Some(c) = self.calls.get(&call) else {
                    return; // Ended meanwhile (a BYE came).
                };
                if reason == EndReason::ConnectionLost && matches!(c.leg(c.web_leg()).flow, Flow::Web { conn } if self.conns.contains_key(&conn)) {
                    return; // Its browser came back meanwhile.
                }
                match answer {
                    // Another node's copy names it: that node took the call over while this one
                    // was cut off; a BYE from here would end it at both far ends.
                    Some(StateAnswer::Call { holder: Holder::Node(_) | Holder::Gone, .. }) => {
                        tracing::warn!(call = call.0, reason = reason.as_str(), "the call is another node's now; letting it go without BYE");
                        self.end_call(now, call, EndReason::HandedOver);
                    }
                    // Still this node's, or nobody can say (Redis away): as a node alone.
                    _ => self.hangup_with(now, call, except, reason),
                }
            }
            (query, waiting) => tracing::debug!(?query, ?waiting, "answer for a question not asked this way"),
        }
    }

    /// Carries on a call another node answered, over the browser's new connection `conn`:
    /// both dialogs as they were shared (Call-IDs, tags, route sets, targets), our CSeqs
    /// grown by a margin (the shared copy may be behind), our Contact and flows this node's.
    /// Signalling only: the media follows by `reanchor` (a browser back after its REGISTER),
    /// or by the browser's own re-INVITE.
    fn adopt_call(&mut self, now: Instant, conn: ConnId, shared: SharedCall) -> Option<CallId> {
        let info = self.conns.get(&conn).copied()?;
        let [mut a, mut b] = shared.legs;
        for leg in [&mut a, &mut b] {
            match leg.side {
                Side::Web => {
                    leg.flow = Flow::Web { conn };
                    leg.transport = info.transport;
                    leg.contact = self.web_contact(info.transport);
                }
                Side::Ims => {
                    leg.flow = self.ims_flow();
                    leg.transport = self.cfg.ims_transport;
                    leg.contact = self.ims_contact();
                }
            }
            leg.local_cseq = leg.local_cseq.saturating_add(ADOPTED_CSEQ_MARGIN);
            leg.invite_cseq = leg.local_cseq;
        }
        self.next_call += 1;
        let id = CallId(self.next_call);
        tracing::info!(call = id.0, shared = shared.call, "call adopted from the cluster's shared state");
        self.counters.adopted_call();
        self.dialogs.insert((a.side, a.call_id.clone(), a.local_tag.clone()), (id, LegIdx::A));
        self.dialogs.insert((b.side, b.call_id.clone(), b.local_tag.clone()), (id, LegIdx::B));
        let (web, ims) = if a.side == Side::Web { (&a, &b) } else { (&b, &a) };
        self.outputs.push_back(Output::CallStarted { call: id.0, web_call_id: web.call_id.clone(), ims_call_id: ims.call_id.clone() });
        let binding = shared.binding.as_deref().and_then(|t| self.registrar.find_token(t)).or_else(|| self.registrar.on_conn(conn).into_iter().next());
        let mut sdp = SdpSession::new(self.cfg.sdp.clone(), self.rng.random(), self.keys.clone());
        sdp.keep_ims_remote();
        // No transaction of the initial INVITE exists here: empty keys, never looked up (the
        // call is confirmed, so nothing CANCELs it).
        let a_invite_key = ServerKey { branch: String::new(), sent_by: String::new(), method: Method::Invite };
        let b_invite_key = ClientKey { branch: String::new(), method: Method::Invite };
        let mut call = Call::new(id, (a, b), CallState::Confirmed, (a_invite_key, b_invite_key), sdp, now);
        // A provisional came long ago: the call is answered.
        call.b_provisional = true;
        call.binding = binding;
        // The call's record here covers it from its set-up on the first node.
        call.started = shared.started;
        call.answered = Some(shared.answered);
        call.icid = shared.icid;
        self.calls.insert(id, Box::new(call));
        self.outputs.push_back(Output::CallAdopted { call: id.0, rx_session: shared.rx_session });
        self.share_call(id, true);
        Some(id)
    }

    /// Ends answered call `id` on the gateway's own account (its media failed, its browser did
    /// not come back, its session timer ran out). In a cluster another node may have taken it
    /// over meanwhile (this node was cut off from Redis and from the browser for a while, and
    /// the browser came back there): the shared state is asked first whose copy names it, and
    /// only a call still this node's (or one nobody can say of) gets its BYEs.
    pub(super) fn end_unless_taken(&mut self, now: Instant, id: CallId, except: Option<LegIdx>, reason: EndReason) {
        let Some(c) = self.calls.get(&id) else { return };
        if !self.cfg.share_state || c.answered.is_none() || c.end_reason.is_some() {
            return self.hangup_with(now, id, except, reason);
        }
        if self.ending.contains(&id) {
            return; // Asked already.
        }
        let query = StateQuery::Dialog { call_id: c.leg(c.web_leg().other()).call_id.clone() };
        if self.ask(now, query, Waiting::Ending { call: id, except, reason }) {
            self.ending.insert(id);
        } else {
            self.hangup_with(now, id, except, reason);
        }
    }

    /// The core accepted the refresh of binding `id`: when it was taken over from the shared
    /// state, the calls its browser had elsewhere are asked for now, and the nodes asked to
    /// hand them over (a node still alive may carry them: the browser left it, whatever its
    /// old connection there looks like).
    pub(super) fn adoption_accepted(&mut self, now: Instant, id: crate::registrar::BindingId) {
        let Some(b) = self.registrar.get_mut(id).filter(|b| b.adopted) else { return };
        b.adopted = false;
        let (conn, token) = (b.conn, b.token.clone());
        self.outputs.push_back(Output::HandOverWanted { token: token.clone() });
        self.ask_calls(now, conn, token, 1);
    }

    /// Another node took over registration `token` and asks for its calls: once the shared
    /// state confirms that a live node other than this one holds it, they are handed over.
    pub(super) fn hand_over_wanted(&mut self, now: Instant, token: &str) {
        if !self.cfg.share_state || self.registrar.find_token(token).is_none() {
            return; // Not this node's (every node hears the question).
        }
        self.ask(now, StateQuery::Token { token: token.to_owned() }, Waiting::HandOver);
    }

    /// Hands every answered call over (see [`crate::Input::HandOver`]).
    pub(super) fn hand_over_all(&mut self, now: Instant) {
        if !self.cfg.share_state {
            return;
        }
        let calls: Vec<CallId> = self.calls.values().filter(|c| c.is_up()).map(|c| c.id).collect();
        if !calls.is_empty() {
            tracing::warn!(calls = calls.len(), "stopping: handing the answered calls over to the cluster");
        }
        for id in calls {
            self.hand_over(now, id);
        }
    }

    /// Hands call `id` over to whichever node its browser reaches: its last copy shared and
    /// marked for any node to take, its media stopped, and it is forgotten here without BYE:
    /// both far ends keep their dialogs, which the next node carries on.
    fn hand_over(&mut self, now: Instant, id: CallId) {
        let Some(mut shared) = self.shared_call(id) else { return };
        shared.handed_over = true;
        self.outputs.push_back(Output::CallShared(Box::new(shared)));
        self.counters.handed_over();
        tracing::info!(call = id.0, "call handed over to the cluster");
        self.end_call(now, id, EndReason::HandedOver);
    }

    /// Makes a shared registration this node's own, over the browser's new connection `conn`
    /// (the REGISTER that follows refreshes it toward IMS as the same binding: same token,
    /// Call-ID and a growing CSeq, so the core sees a refresh, not a new contact).
    fn adopt_registration(&mut self, conn: ConnId, r: SharedRegistration) {
        let Some(info) = self.conns.get(&conn).copied() else { return };
        if let Some(id) = self.registrar.find_token(&r.token) {
            // This node already holds it, over the browser's previous connection.
            return self.rebind(id, conn);
        }
        if self.source_registrations_full(conn) {
            return; // The REGISTER gets the per-source refusal.
        }
        let web_contact_uri = match NameAddr::parse(&r.web_contact).or_else(|_| NameAddr::parse(&r.aor)) {
            Ok(na) => na.uri,
            Err(_) => {
                tracing::warn!(token = %r.token, "shared registration with an unreadable contact; not adopted");
                return;
            }
        };
        tracing::info!(aor = %r.aor, token = %r.token, "registration adopted from the cluster's shared state");
        self.counters.adopted_registration();
        self.registrar.insert(|id| Binding {
            id,
            aor: r.aor,
            instance: r.instance,
            reg_id: r.reg_id,
            conn,
            source: info.peer.ip(),
            connected: true,
            web_call_id: r.web_call_id,
            web_contact: r.web_contact,
            web_contact_uri,
            token: r.token,
            ims_call_id: r.ims_call_id,
            ims_cseq: r.ims_cseq.saturating_add(ADOPTED_CSEQ_MARGIN),
            expires_at: None,
            service_route: r.service_route,
            last_register: None,
            adopted: true,
        });
    }

    /// The binding token a request from the core names (top Route, else Request-URI user)
    /// when no binding here answers to the request, or the one that does lost its browser
    /// (which may be back at another node).
    pub(super) fn foreign_token(&self, now: Instant, req: &Request) -> Option<String> {
        if let Some(id) = self.target_binding(now, req) {
            return self.registrar.get(id).filter(|b| !b.connected).map(|b| b.token.clone());
        }
        let routes = req.headers.routes().unwrap_or_default();
        let top_route = routes.first().and_then(|r| r.uri.user.clone());
        top_route.or_else(|| req.uri.user.clone())
    }

    /// Proxies a request from the core to the node that holds its browser (RFC 3261 §16.6:
    /// our Via on top, Max-Forwards less one, nothing else touched); that node answers as if
    /// the front had sent the request to it.
    fn proxy_to_node(&mut self, now: Instant, key: ServerKey, req: Request, node: SocketAddr) {
        let mf = req.headers.max_forwards().ok().flatten().unwrap_or(70);
        if mf == 0 {
            return self.respond(now, &key, &req, 483, "Too Many Hops");
        }
        let transport = self.cfg.ims_transport;
        let mut out = req.clone();
        let via = self.via_ims_transport(transport);
        out.headers.push_front("Via", via);
        out.headers.set("Max-Forwards", (mf - 1).to_string());
        let flow = Flow::Ims { transport, remote: node };
        match self.tx.send_request(now, &out, flow, reliable(flow)) {
            Ok(client) => {
                tracing::debug!(method = %req.method.as_str(), %node, "proxied to the node holding the browser");
                self.counters.proxied_to_node();
                if req.method == Method::Invite {
                    self.proxied.insert(key.clone(), client.clone());
                }
                self.owners.insert(client, Owner::Proxied { server: key, forwarded: out, node });
            }
            Err(e) => {
                tracing::error!(error = %e, "request not proxied");
                self.respond(now, &key, &req, 500, "Server Internal Error");
            }
        }
    }

    /// A response from the node a request was proxied to, back to the core without our Via.
    pub(super) fn relay_proxied_response(&mut self, now: Instant, server: &ServerKey, resp: &Response) {
        if resp.code == 100 {
            return; // Hop by hop: ours went already.
        }
        if resp.code >= 200 {
            self.proxied.remove(server);
        }
        let mut out = resp.clone();
        out.headers.pop_front_value("Via");
        if let Err(e) = self.tx.send_response(now, server, &out) {
            tracing::debug!(error = %e, code = resp.code, "proxied response not relayed");
        }
    }

    /// The core cancelled an INVITE proxied to another node: cancel it there (RFC 3261
    /// §16.10).
    pub(super) fn cancel_proxied(&mut self, now: Instant, client: &ClientKey) {
        let Some(Owner::Proxied { forwarded, node, .. }) = self.owners.get(client) else { return };
        let cseq = forwarded.headers.cseq().map(|c| c.seq).unwrap_or(1);
        let cancel = super::cancel_for(forwarded, cseq, self.cfg.user_agent.as_deref());
        let flow = Flow::Ims { transport: self.cfg.ims_transport, remote: *node };
        if let Ok(k) = self.tx.send_request(now, &cancel, flow, reliable(flow)) {
            self.owners.insert(k, Owner::Own);
        }
    }
}
