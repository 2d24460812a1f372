//! The cluster's shared state in Redis: this node's registrations, under
//! `estuary:<node_id>:reg:<token>` with the registration's own lifetime as TTL, and its
//! answered calls' dialogs under `estuary:<node_id>:call:<id>` until they end, so another
//! node can serve them. Writes go through a bounded queue to one task: the engine never waits
//! on Redis, a full queue drops the write (counted), and while Redis is unreachable writes
//! fail fast and are counted, with `estuary_cluster_redis_up` at 0 and one warning per outage.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use estuary_b2bua::call::Leg;
use estuary_b2bua::{SharedCall, SharedRegistration};
use estuary_core::{MetricKind, Sample};
use tokio::sync::mpsc;
use tracing::{info, warn};

use crate::json::string;

/// How long a call's entry outlives a node that died without removing it.
const CALL_TTL_S: u64 = 24 * 3600;

/// Writes queued at most; beyond, new writes are dropped (and counted) rather than wait.
const QUEUE: usize = 4096;
/// One Redis command's time limit: a slow Redis costs writes, never the engine.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(1);
/// Between connection attempts while Redis is down.
const RECONNECT: Duration = Duration::from_secs(1);

enum Write {
    Put { key: String, value: String, ttl_s: u64 },
    Delete { key: String },
}

#[derive(Default)]
struct Counters {
    up: AtomicBool,
    ok: AtomicU64,
    failed: AtomicU64,
    dropped: AtomicU64,
}

/// The engine's handle on the shared state.
pub struct SharedState {
    node_id: String,
    queue: mpsc::Sender<Write>,
    counters: Arc<Counters>,
}

impl SharedState {
    /// Starts the writer toward `url` (it connects in the background, and again after an
    /// outage).
    pub fn start(url: &str, node_id: &str) -> Result<SharedState, String> {
        let client = redis::Client::open(url).map_err(|e| format!("{url}: {e}"))?;
        let (queue, rx) = mpsc::channel(QUEUE);
        let counters = Arc::new(Counters::default());
        tokio::spawn(writer(client, rx, counters.clone()));
        Ok(SharedState { node_id: node_id.to_owned(), queue, counters })
    }

    fn key(&self, token: &str) -> String {
        format!("estuary:{}:reg:{token}", self.node_id)
    }

    fn enqueue(&self, write: Write) {
        if self.queue.try_send(write).is_err() {
            self.counters.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Stores (or refreshes) a registration until it expires.
    pub fn put_registration(&self, r: &SharedRegistration) {
        let value = registration_json(r);
        self.enqueue(Write::Put { key: self.key(&r.token), value, ttl_s: u64::from(r.expires_in.max(1)) });
    }

    pub fn remove_registration(&self, token: &str) {
        self.enqueue(Write::Delete { key: self.key(token) });
    }

    fn call_key(&self, call: u64) -> String {
        format!("estuary:{}:call:{call}", self.node_id)
    }

    /// Stores an answered call's dialogs until it ends.
    pub fn put_call(&self, c: &SharedCall) {
        self.enqueue(Write::Put { key: self.call_key(c.call), value: call_json(c), ttl_s: CALL_TTL_S });
    }

    pub fn remove_call(&self, call: u64) {
        self.enqueue(Write::Delete { key: self.call_key(call) });
    }

    /// Samples for /metrics.
    pub fn samples(&self) -> Vec<Sample> {
        let c = &self.counters;
        let mut out = vec![Sample {
            name: "estuary_cluster_redis_up",
            help: "1 while the cluster's Redis accepts this node's writes",
            kind: MetricKind::Gauge,
            labels: vec![],
            value: u64::from(c.up.load(Ordering::Relaxed)),
        }];
        for (result, n) in [("ok", &c.ok), ("failed", &c.failed), ("dropped", &c.dropped)] {
            out.push(Sample {
                name: "estuary_cluster_writes_total",
                help: "Shared-state writes to Redis by result (dropped: the queue was full)",
                kind: MetricKind::Counter,
                labels: vec![("result", result.to_owned())],
                value: n.load(Ordering::Relaxed),
            });
        }
        out
    }
}

/// The registration as a JSON object (no secrets in it).
fn registration_json(r: &SharedRegistration) -> String {
    let opt = |v: &Option<String>| v.as_deref().map_or("null".to_owned(), string);
    let routes: Vec<String> = r.service_route.iter().map(|s| string(s)).collect();
    format!(
        "{{\"token\":{},\"aor\":{},\"instance\":{},\"reg_id\":{},\"web_contact\":{},\"service_route\":[{}],\"ims_call_id\":{},\"ims_cseq\":{},\"source\":{},\"expires_in\":{}}}",
        string(&r.token),
        string(&r.aor),
        opt(&r.instance),
        opt(&r.reg_id),
        string(&r.web_contact),
        routes.join(","),
        string(&r.ims_call_id),
        r.ims_cseq,
        string(&r.source.to_string()),
        r.expires_in
    )
}

/// A call as a JSON object: both dialogs, its ports and ICID (no keys).
fn call_json(c: &SharedCall) -> String {
    let leg = |l: &Leg| {
        let routes: Vec<String> = l.route_set.iter().map(|s| string(s)).collect();
        format!(
            "{{\"side\":{},\"call_id\":{},\"local_tag\":{},\"remote_tag\":{},\"local\":{},\"remote\":{},\"remote_target\":{},\"route_set\":[{}],\"local_cseq\":{},\"contact\":{}}}",
            string(match l.side {
                estuary_core::Side::Web => "web",
                estuary_core::Side::Ims => "ims",
            }),
            string(&l.call_id),
            string(&l.local_tag),
            l.remote_tag.as_deref().map_or("null".to_owned(), string),
            string(&l.local),
            string(&l.remote),
            string(&l.remote_target),
            routes.join(","),
            l.local_cseq,
            string(&l.contact)
        )
    };
    let ports: Vec<String> = c.ports.iter().map(u16::to_string).collect();
    format!(
        "{{\"call\":{},\"legs\":[{},{}],\"ports\":[{}],\"icid\":{}}}",
        c.call,
        leg(&c.legs[0]),
        leg(&c.legs[1]),
        ports.join(","),
        c.icid.as_deref().map_or("null".to_owned(), string)
    )
}

async fn writer(client: redis::Client, mut rx: mpsc::Receiver<Write>, counters: Arc<Counters>) {
    let mut connection: Option<redis::aio::MultiplexedConnection> = None;
    let mut next_attempt = tokio::time::Instant::now();
    let mut warned = false;
    while let Some(write) = rx.recv().await {
        if connection.is_none() && tokio::time::Instant::now() >= next_attempt {
            match tokio::time::timeout(COMMAND_TIMEOUT, client.get_multiplexed_async_connection()).await {
                Ok(Ok(c)) => {
                    connection = Some(c);
                    if warned {
                        info!("cluster Redis reachable again");
                    }
                    warned = false;
                }
                _ => next_attempt = tokio::time::Instant::now() + RECONNECT,
            }
        }
        let Some(con) = connection.as_mut() else {
            counters.up.store(false, Ordering::Relaxed);
            counters.failed.fetch_add(1, Ordering::Relaxed);
            if !warned {
                warn!("cluster Redis unreachable: this node's state is not shared until it is back");
                warned = true;
            }
            continue;
        };
        let cmd = match &write {
            Write::Put { key, value, ttl_s } => {
                let mut c = redis::cmd("SET");
                c.arg(key).arg(value).arg("EX").arg(*ttl_s);
                c
            }
            Write::Delete { key } => {
                let mut c = redis::cmd("DEL");
                c.arg(key);
                c
            }
        };
        match tokio::time::timeout(COMMAND_TIMEOUT, cmd.query_async::<redis::Value>(con)).await {
            Ok(Ok(_)) => {
                counters.up.store(true, Ordering::Relaxed);
                counters.ok.fetch_add(1, Ordering::Relaxed);
            }
            _ => {
                counters.up.store(false, Ordering::Relaxed);
                counters.failed.fetch_add(1, Ordering::Relaxed);
                connection = None;
                next_attempt = tokio::time::Instant::now() + RECONNECT;
                if !warned {
                    warn!("cluster Redis write failed: this node's state is not shared until it is back");
                    warned = true;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_registration_is_plain_json_without_secrets() {
        let r = SharedRegistration {
            token: "tok1".into(),
            aor: "sip:alice@ims.test".into(),
            instance: Some("<urn:uuid:1>".into()),
            reg_id: None,
            web_contact: "<sip:a@b.invalid;transport=ws>".into(),
            service_route: vec!["<sip:scscf.ims.test;lr>".into()],
            ims_call_id: "c1@127.0.0.1".into(),
            ims_cseq: 2,
            source: "192.0.2.1".parse().unwrap(),
            expires_in: 600,
        };
        assert_eq!(
            registration_json(&r),
            // (json::string escapes < and >, so the text embeds anywhere.)
            r#"{"token":"tok1","aor":"sip:alice@ims.test","instance":"\u003curn:uuid:1\u003e","reg_id":null,"web_contact":"\u003csip:a@b.invalid;transport=ws\u003e","service_route":["\u003csip:scscf.ims.test;lr\u003e"],"ims_call_id":"c1@127.0.0.1","ims_cseq":2,"source":"192.0.2.1","expires_in":600}"#
        );
    }
}
