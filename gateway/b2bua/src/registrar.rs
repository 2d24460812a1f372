//! Registration bindings: which browser connection stands behind which registered contact.
//!
//! Toward IMS the gateway registers a contact of its own, `sip:<token>@<ims address>`, and adds
//! a Path `sip:<token>@<ims address>;lr` (RFC 3327), so the core routes terminating requests for
//! the AoR back through the gateway with the token in the Request-URI or the top Route. The
//! token names one binding; the binding names the WebSocket connection and the browser's own
//! contact. One binding exists per browser REGISTER dialog (connection plus Call-ID), which is
//! also the unit RFC 3261 §10.2.4 refreshes.

use std::collections::HashMap;
use std::net::IpAddr;

use estuary_transaction::Deadlines;
use std::time::Instant;

use estuary_sip::{Request, Uri};

use crate::io::ConnId;

/// Handle of one binding.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BindingId(pub u64);

/// What to do with a browser's registrations when its WebSocket goes away.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum OnWsClose {
    /// Keep the binding until it expires; terminating requests meanwhile get 480.
    Keep,
    /// Send REGISTER with Expires: 0 toward IMS and drop the binding now.
    Deregister,
}

/// One registered (or registering) browser contact.
#[derive(Clone, Debug)]
pub struct Binding {
    pub id: BindingId,
    /// Address-of-record from the To header, as written (e.g. `sip:alice@ims.test`).
    pub aor: String,
    /// `+sip.instance` of the browser's Contact, if any (RFC 5626).
    pub instance: Option<String>,
    /// `reg-id` of the browser's Contact, if any.
    pub reg_id: Option<String>,
    /// The WebSocket connection the browser registered over.
    pub conn: ConnId,
    /// Where that connection came from: the per-source registration quota counts by it.
    pub source: IpAddr,
    /// Whether that connection is still open.
    pub connected: bool,
    /// The browser's Call-ID for its REGISTER dialog.
    pub web_call_id: String,
    /// The browser's own Contact value, exactly as sent (minus expires), for responses to it.
    pub web_contact: String,
    /// The browser's contact URI: the Request-URI of requests toward it.
    pub web_contact_uri: Uri,
    /// Token in the gateway's contact and Path toward IMS.
    pub token: String,
    /// The Call-ID the gateway uses toward IMS for this registration.
    pub ims_call_id: String,
    /// CSeq of the last REGISTER sent toward IMS.
    pub ims_cseq: u32,
    /// When the registrar's granted expiry runs out; `None` until a 2xx is seen. Set it
    /// through [`Registrar::set_expiry`], which keeps the table's deadlines.
    pub expires_at: Option<Instant>,
    /// Service-Route from the last 2xx (RFC 3608): the preloaded route for originating requests.
    pub service_route: Vec<String>,
    /// The last REGISTER sent toward IMS, for a deregistration on connection loss.
    pub last_register: Option<Request>,
    /// Taken over from the cluster's shared state and not yet refreshed at the core: the
    /// calls its browser had elsewhere are asked for once the core accepts the refresh (the
    /// core authenticates the browser; a REGISTER naming a known Call-ID is not enough).
    pub adopted: bool,
}

impl Binding {
    /// Registered and not expired at `now`.
    pub fn is_active(&self, now: Instant) -> bool {
        self.expires_at.is_some_and(|t| t > now)
    }
}

/// The binding table.
#[derive(Default)]
pub struct Registrar {
    next_id: u64,
    bindings: HashMap<BindingId, Binding>,
    by_dialog: HashMap<(ConnId, String), BindingId>,
    by_token: HashMap<String, BindingId>,
    /// Bindings by the connection they registered over, in the order they were made.
    by_conn: HashMap<ConnId, Vec<BindingId>>,
    /// How many bindings each source address holds.
    by_source: HashMap<IpAddr, usize>,
    /// Bindings by the Call-ID of their browser's REGISTER dialog: a browser back over a new
    /// connection goes on with it.
    by_web_call_id: HashMap<String, Vec<BindingId>>,
    /// Bindings by the comparison form of their AoR ([`aor_key`]): a call from the core
    /// finds its browser without parsing every binding's AoR.
    by_aor: HashMap<String, Vec<BindingId>>,
    expiries: Deadlines<BindingId>,
}

impl Registrar {
    /// The binding for a browser REGISTER dialog, if one exists.
    pub fn find_dialog(&self, conn: ConnId, web_call_id: &str) -> Option<BindingId> {
        self.by_dialog.get(&(conn, web_call_id.to_owned())).copied()
    }

    /// The binding of REGISTER dialog `web_call_id` made over a connection that is gone
    /// (`is_open` says which are not): a browser back over a new one.
    pub fn find_left_behind(&self, web_call_id: &str, is_open: impl Fn(ConnId) -> bool) -> Option<BindingId> {
        self.by_web_call_id.get(web_call_id)?.iter().copied().find(|id| self.bindings.get(id).is_some_and(|b| !is_open(b.conn)))
    }

    /// The binding whose token is `token`.
    pub fn find_token(&self, token: &str) -> Option<BindingId> {
        self.by_token.get(token).copied()
    }

    /// The most recently refreshed active binding of an AoR (compared without parameters,
    /// host case-insensitively).
    pub fn find_aor(&self, aor: &str, now: Instant) -> Option<BindingId> {
        self.by_aor
            .get(&aor_key(aor))?
            .iter()
            .filter_map(|id| self.bindings.get(id))
            .filter(|b| b.is_active(now))
            .max_by_key(|b| b.expires_at)
            .map(|b| b.id)
    }

    /// Bindings that registered over `conn`, oldest first.
    pub fn on_conn(&self, conn: ConnId) -> Vec<BindingId> {
        self.by_conn.get(&conn).cloned().unwrap_or_default()
    }

    /// How many bindings the connections from `source` hold.
    pub fn count_from(&self, source: IpAddr) -> usize {
        self.by_source.get(&source).copied().unwrap_or(0)
    }

    /// How many bindings satisfy `pred`.
    pub fn count(&self, pred: impl Fn(&Binding) -> bool) -> usize {
        self.bindings.values().filter(|b| pred(b)).count()
    }

    pub fn get(&self, id: BindingId) -> Option<&Binding> {
        self.bindings.get(&id)
    }

    pub fn get_mut(&mut self, id: BindingId) -> Option<&mut Binding> {
        self.bindings.get_mut(&id)
    }

    /// Insert a new binding built by `make` from its fresh id.
    pub fn insert(&mut self, make: impl FnOnce(BindingId) -> Binding) -> BindingId {
        self.next_id += 1;
        let id = BindingId(self.next_id);
        let b = make(id);
        self.by_dialog.insert((b.conn, b.web_call_id.clone()), id);
        self.by_token.insert(b.token.clone(), id);
        self.by_conn.entry(b.conn).or_default().push(id);
        *self.by_source.entry(b.source).or_default() += 1;
        self.by_aor.entry(aor_key(&b.aor)).or_default().push(id);
        self.by_web_call_id.entry(b.web_call_id.clone()).or_default().push(id);
        self.bindings.insert(id, b);
        id
    }

    /// Binding `id`'s browser came back over connection `conn` (from `source`): the binding
    /// keeps its id, token and expiry, and is reachable again.
    pub fn move_to(&mut self, id: BindingId, conn: ConnId, source: IpAddr) {
        let Some(b) = self.bindings.get_mut(&id) else { return };
        let (old_conn, old_source) = (b.conn, b.source);
        b.conn = conn;
        b.source = source;
        b.connected = true;
        let dialog = b.web_call_id.clone();
        self.by_dialog.remove(&(old_conn, dialog.clone()));
        self.by_dialog.insert((conn, dialog), id);
        unindex(&mut self.by_conn, &old_conn, id);
        self.by_conn.entry(conn).or_default().push(id);
        uncount(&mut self.by_source, &old_source);
        *self.by_source.entry(source).or_default() += 1;
    }

    /// Binding `id` is registered until `at`.
    pub fn set_expiry(&mut self, id: BindingId, at: Instant) {
        if let Some(b) = self.bindings.get_mut(&id) {
            b.expires_at = Some(at);
            self.expiries.set(&id, Some(at));
        }
    }

    pub fn remove(&mut self, id: BindingId) -> Option<Binding> {
        let b = self.bindings.remove(&id)?;
        self.expiries.set(&id, None);
        self.by_dialog.remove(&(b.conn, b.web_call_id.clone()));
        self.by_token.remove(&b.token);
        unindex(&mut self.by_conn, &b.conn, id);
        uncount(&mut self.by_source, &b.source);
        unindex(&mut self.by_aor, &aor_key(&b.aor), id);
        unindex(&mut self.by_web_call_id, &b.web_call_id, id);
        Some(b)
    }

    /// Number of active bindings.
    pub fn active(&self, now: Instant) -> usize {
        self.bindings.values().filter(|b| b.is_active(now)).count()
    }

    /// Bindings whose registration ran out by `now`; the caller removes them.
    pub fn expired(&mut self, now: Instant) -> Vec<BindingId> {
        std::iter::from_fn(|| self.expiries.pop_due(now)).collect()
    }

    /// The next expiry, for `poll_timeout`.
    pub fn next_expiry(&self) -> Option<Instant> {
        self.expiries.next()
    }
}

/// One binding fewer from `source`, and the source forgotten at none.
fn uncount(by_source: &mut HashMap<IpAddr, usize>, source: &IpAddr) {
    if let Some(n) = by_source.get_mut(source) {
        *n -= 1;
        if *n == 0 {
            by_source.remove(source);
        }
    }
}

/// Takes `id` out of `index[key]`, and the key with it once no binding is left under it.
fn unindex<K: std::hash::Hash + Eq>(index: &mut HashMap<K, Vec<BindingId>>, key: &K, id: BindingId) {
    if let Some(ids) = index.get_mut(key) {
        ids.retain(|i| *i != id);
        if ids.is_empty() {
            index.remove(key);
        }
    }
}

/// Comparison form of an AoR: scheme, user and lower-cased host; parameters dropped.
pub fn aor_key(aor: &str) -> String {
    match Uri::parse(aor.trim().trim_start_matches('<').trim_end_matches('>')) {
        Ok(u) => format!(
            "{}:{}@{}",
            u.scheme,
            u.user.as_deref().unwrap_or(""),
            u.host.to_ascii_lowercase()
        ),
        Err(_) => aor.to_ascii_lowercase(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn binding(id: BindingId, conn: u64, source: &str, call_id: &str) -> Binding {
        Binding {
            id,
            aor: "sip:alice@ims.test".into(),
            instance: None,
            reg_id: None,
            conn: ConnId(conn),
            source: source.parse().unwrap(),
            connected: true,
            web_call_id: call_id.into(),
            web_contact: String::new(),
            web_contact_uri: Uri::parse("sip:a@b.invalid").unwrap(),
            token: format!("tok-{call_id}"),
            ims_call_id: format!("ims-{call_id}"),
            ims_cseq: 1,
            expires_at: None,
            service_route: Vec::new(),
            last_register: None,
            adopted: false,
        }
    }

    #[test]
    fn bindings_are_counted_by_source_as_they_come_and_go() {
        let mut r = Registrar::default();
        let a = r.insert(|id| binding(id, 1, "192.0.2.1", "c1"));
        r.insert(|id| binding(id, 2, "192.0.2.1", "c2"));
        let c = r.insert(|id| binding(id, 3, "198.51.100.7", "c3"));
        assert_eq!((r.count_from("192.0.2.1".parse().unwrap()), r.count_from("198.51.100.7".parse().unwrap())), (2, 1));
        r.remove(a);
        r.remove(c);
        assert_eq!((r.count_from("192.0.2.1".parse().unwrap()), r.count_from("198.51.100.7".parse().unwrap())), (1, 0));
        assert!(r.remove(c).is_none(), "a binding goes once");
        assert_eq!(r.count_from("192.0.2.1".parse().unwrap()), 1);
        assert_eq!(r.by_source.len(), 1, "a source with none left is forgotten");
    }

    #[test]
    fn an_aor_finds_its_freshest_active_binding_whatever_its_spelling() {
        let now = Instant::now();
        let mut r = Registrar::default();
        fn with_aor(aor: &'static str) -> impl FnOnce(BindingId) -> Binding {
            move |id| Binding { aor: aor.into(), ..binding(id, id.0, "192.0.2.1", &format!("c{}", id.0)) }
        }
        let old = r.insert(with_aor("sip:alice@ims.test"));
        let fresh = r.insert(with_aor("<sip:alice@IMS.test;transport=ws>"));
        let pending = r.insert(with_aor("sip:alice@ims.test"));
        let bob = r.insert(with_aor("sip:bob@ims.test"));
        r.set_expiry(old, now + std::time::Duration::from_secs(60));
        r.set_expiry(fresh, now + std::time::Duration::from_secs(600));
        r.set_expiry(bob, now + std::time::Duration::from_secs(600));
        assert_eq!(r.find_aor("sip:Alice@ims.test", now), None, "the user part is case-sensitive");
        assert_eq!(r.find_aor("sip:alice@ims.TEST", now), Some(fresh));
        r.remove(fresh);
        assert_eq!(r.find_aor("sip:alice@ims.test", now), Some(old), "a pending binding ({pending:?}) is not active");
        r.remove(old);
        r.remove(pending);
        assert_eq!(r.find_aor("sip:alice@ims.test", now), None);
        assert_eq!(r.by_aor.len(), 1, "only bob's AoR is left in the index");
        assert_eq!(r.find_aor("sip:bob@ims.test", now), Some(bob));
    }
}
