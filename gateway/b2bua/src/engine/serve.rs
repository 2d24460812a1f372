//! Serving what another node of the cluster holds (see [`crate::cluster`]): the requests
//! held while the shared state is asked, a registration adopted from it, and requests from
//! the core proxied to the node whose WebSocket carries their browser.

use std::net::SocketAddr;
use std::time::Instant;

use estuary_sip::{Method, NameAddr, Request, Response};
use estuary_transaction::{ClientKey, ServerKey};

use super::{reliable, B2bua, Owner};
use crate::cluster::{Held, Holder, StateAnswer, StateQuery};
use crate::io::{ConnId, Flow, SharedRegistration};
use crate::registrar::Binding;

/// How far an adopted registration's CSeq toward IMS jumps past the shared copy's: the copy
/// may be a write or two behind what the lost node sent (a write dropped in a Redis outage),
/// and the registrar refuses a CSeq that does not grow (RFC 3261 §10.3 step 7).
const ADOPTED_CSEQ_MARGIN: u32 = 100;

impl B2bua {
    /// Holds `req` and asks the cluster's shared state `query`; a full table answers 503.
    pub(super) fn hold(&mut self, now: Instant, query: StateQuery, flow: Flow, key: ServerKey, req: Request) {
        if req.method == Method::Invite {
            // The answer may take a Redis round trip or two: stop the core's retransmissions.
            self.respond(now, &key, &req, 100, "Trying");
        }
        let ask = query.clone();
        let (k, r) = (key.clone(), req.clone());
        match self.queries.hold(now, Held { query, flow, key, req }) {
            Some(query) => self.outputs.push_back(crate::io::Output::StateQuery { query, ask }),
            None => {
                tracing::warn!("too many requests waiting for the cluster's shared state; refusing");
                self.respond(now, &k, &r, 503, "Service Unavailable");
            }
        }
    }

    /// Goes on with a held request once its answer came (`None`: it did not come in time,
    /// so the node behaves as a node alone would).
    pub(super) fn resume(&mut self, now: Instant, held: Held, answer: Option<StateAnswer>) {
        let Held { query, flow, key, req } = held;
        match (query, flow) {
            (StateQuery::RegisterDialog { .. }, Flow::Web { conn }) => {
                if !self.conns.contains_key(&conn) {
                    return; // The browser left while the question was out.
                }
                if let Some(StateAnswer::Registration { registration, .. }) = answer {
                    self.adopt_registration(conn, *registration);
                }
                self.on_register(now, conn, key, req, true);
            }
            (StateQuery::Token { token }, flow) => {
                if self.registrar.find_token(&token).is_some() {
                    // The browser registered here meanwhile.
                    return self.on_out_of_dialog(now, flow, key, req);
                }
                match answer {
                    Some(StateAnswer::Registration { holder: Holder::Node(node), .. }) if node != self.cfg.ims_advertised => {
                        self.proxy_to_node(now, key, req, node)
                    }
                    // Registered, but its browser's connection went with a node (or with this
                    // node's previous process) and it has not reconnected yet.
                    Some(StateAnswer::Registration { .. }) | None => self.respond(now, &key, &req, 480, "Temporarily Unavailable"),
                    Some(StateAnswer::Unknown) => self.respond(now, &key, &req, 404, "Not Found"),
                }
            }
            (StateQuery::RegisterDialog { .. }, _) => {}
        }
    }

    /// Makes a shared registration this node's own, over the browser's new connection `conn`
    /// (the REGISTER that follows refreshes it toward IMS as the same binding: same token,
    /// Call-ID and a growing CSeq, so the core sees a refresh, not a new contact).
    fn adopt_registration(&mut self, conn: ConnId, r: SharedRegistration) {
        let Some(info) = self.conns.get(&conn).copied() else { return };
        if let Some(id) = self.registrar.find_token(&r.token) {
            // This node already holds it, over the browser's previous connection.
            self.registrar.move_to(id, conn, info.peer.ip());
            tracing::info!(token = %r.token, "registration moved to the browser's new connection");
            return;
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
        });
    }

    /// The binding token a request from the core names (top Route, else Request-URI user)
    /// when no binding here answers to the request.
    pub(super) fn foreign_token(&self, now: Instant, req: &Request) -> Option<String> {
        if self.target_binding(now, req).is_some() {
            return None;
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
