//! The peer's S-CSCF stand-in, so two browsers on one gateway can call each other under
//! `make run`: REGISTER bindings are kept with the Path the gateway inserted (RFC 3327), and
//! a request for a registered user is proxied statelessly (RFC 3261 §16.11) to the bound
//! Contact through that Path, record-routed, so the dialog's later requests come through here
//! too. Responses to what was proxied go back by the Via the request arrived with.
//!
//! Stateless means the branch added to a proxied request is a function of the branch it
//! arrived with (§16.11), so a retransmission, the CANCEL and the non-2xx ACK of an INVITE
//! all leave with the branch the INVITE left with.

use std::net::SocketAddr;
use std::time::Instant;

use estuary_sip::{response_to, NameAddr, Request, Response, Uri};

use crate::{add_tag, Output, TestPeer};

/// Branches of proxied requests start with this, after the RFC 3261 magic cookie.
const PROXY_BRANCH: &str = "z9hG4bKpx";

/// A registered browser: where its requests go and the route there.
#[derive(Clone, Debug)]
pub(crate) struct Binding {
    pub contact: String,
    pub path: Vec<String>,
    pub expires: Instant,
}

impl TestPeer {
    /// Keeps (or drops, with expires 0) the binding of a REGISTER's AoR.
    pub(crate) fn remember(&mut self, now: Instant, req: &Request, contact: &NameAddr, expires: u32) {
        let Some(user) = req.headers.to().ok().and_then(|t| t.uri.user.clone()) else { return };
        let user = user.to_ascii_lowercase();
        if expires == 0 {
            self.bindings.remove(&user);
            return;
        }
        let path = req.headers.get_all("Path").map(str::to_owned).collect();
        self.bindings.insert(user, Binding { contact: contact.uri.to_string(), path, expires: now + std::time::Duration::from_secs(expires.into()) });
    }

    /// Whether `req` is for another hop: it is routed through us (our Record-Route on top),
    /// or addressed to a registered user that is not one of the peer's own services.
    pub(crate) fn is_proxied(&self, now: Instant, req: &Request) -> bool {
        if self.top_route_is_us(req) {
            return true;
        }
        let in_dialog = req.headers.to().ok().is_some_and(|t| t.tag().is_some());
        let user = req.uri.user.as_deref().map(str::to_ascii_lowercase);
        !in_dialog
            && req.method != estuary_sip::Method::Register
            && !matches!(user.as_deref(), Some("echo" | "tone" | "ring"))
            && user.is_some_and(|u| self.bindings.get(&u).is_some_and(|b| b.expires > now))
    }

    fn top_route_is_us(&self, req: &Request) -> bool {
        let Ok(routes) = req.headers.routes() else { return false };
        routes.first().is_some_and(|r| self.is_us(&r.uri))
    }

    fn is_us(&self, uri: &Uri) -> bool {
        uri.host.trim_matches(|c| c == '[' || c == ']').parse::<std::net::IpAddr>().ok() == Some(self.cfg.sip.ip())
            && uri.port.unwrap_or(5060) == self.cfg.sip.port()
    }

    /// Forwards a request (RFC 3261 §16.6, statelessly): Max-Forwards down, our Route off or
    /// the binding's Contact and Path on, a Record-Route for dialogs, our Via on top.
    pub(crate) fn proxy_request(&mut self, from: SocketAddr, mut req: Request) {
        let mf = req.headers.max_forwards().ok().flatten().unwrap_or(70);
        if mf == 0 {
            let mut r = response_to(&req, 483, "Too Many Hops");
            let tag = self.token();
            add_tag(&mut r, &tag);
            return self.send(from, r.to_bytes());
        }
        req.headers.set("Max-Forwards", (mf - 1).to_string());
        if self.top_route_is_us(&req) {
            let routes = req.headers.routes().unwrap_or_default();
            req.headers.remove("Route");
            for r in &routes[1..] {
                req.headers.push("Route", r.to_string());
            }
        } else {
            let user = req.uri.user.as_deref().map(str::to_ascii_lowercase).unwrap_or_default();
            let Some(b) = self.bindings.get(&user).cloned() else { return };
            let Ok(contact) = b.contact.parse::<Uri>() else { return };
            req.uri = contact;
            req.headers.remove("Route");
            for p in &b.path {
                req.headers.push("Route", p);
            }
            if req.method == estuary_sip::Method::Invite {
                req.headers.push_front("Record-Route", format!("<sip:{};lr>", self.cfg.sip));
            }
        }
        let arrived = req.headers.top_via().ok().and_then(|v| v.param("branch").flatten().map(str::to_owned)).unwrap_or_default();
        req.headers.push_front("Via", format!("SIP/2.0/UDP {};branch={PROXY_BRANCH}{:016x}", self.cfg.sip, fnv(&arrived)));
        // Loose routing: the next Route, else the Request-URI, names where it goes.
        let next = req.headers.routes().ok().and_then(|r| r.first().map(|r| r.uri.clone())).unwrap_or_else(|| req.uri.clone());
        let to = address(&next).unwrap_or(from);
        self.outputs.push_back(Output::Transmit { to, data: req.to_bytes() });
    }

    /// A response to something we proxied: our Via off, on to the one below (its received
    /// and rport when the hop gave them). The response comes back as `Err` when it is not
    /// ours to forward.
    pub(crate) fn proxy_response(&mut self, mut resp: Response) -> Result<(), Response> {
        let Ok(vias) = resp.headers.vias() else { return Err(resp) };
        let ours = vias.first().is_some_and(|v| {
            v.param("branch").flatten().is_some_and(|b| b.starts_with(PROXY_BRANCH))
                && v.host.parse::<std::net::IpAddr>().ok() == Some(self.cfg.sip.ip())
                && v.port.unwrap_or(5060) == self.cfg.sip.port()
        });
        if !ours {
            return Err(resp);
        }
        let Some(next) = vias.get(1) else { return Ok(()) };
        let host = next.param("received").flatten().unwrap_or(&next.host).trim_matches(|c| c == '[' || c == ']').to_owned();
        let port = next.param("rport").flatten().and_then(|p| p.parse().ok()).or(next.port).unwrap_or(5060);
        let Ok(ip) = host.parse::<std::net::IpAddr>() else { return Ok(()) };
        resp.headers.remove("Via");
        for v in vias[1..].iter().rev() {
            resp.headers.push_front("Via", v.to_string());
        }
        self.outputs.push_back(Output::Transmit { to: SocketAddr::new(ip, port), data: resp.to_bytes() });
        Ok(())
    }
}

/// An IP-literal URI's address (the peer resolves no names).
fn address(uri: &Uri) -> Option<SocketAddr> {
    let ip = uri.host.trim_matches(|c| c == '[' || c == ']').parse().ok()?;
    Some(SocketAddr::new(ip, uri.port.unwrap_or(5060)))
}

/// FNV-1a: the proxied branch as a function of the arriving one.
fn fnv(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3))
}
