//! The cluster's shared state in Redis.
//!
//! - `estuary:reg:<token>`: a registration (JSON, with the `node` that holds its browser),
//!   with the registration's own lifetime as TTL; `estuary:regdialog:<Call-ID>` names it by
//!   the browser's REGISTER dialog, so a browser that reconnects to another node is found.
//! - `estuary:<node_id>:call:<id>`: an answered call's two dialogs, until it ends; named by
//!   either Call-ID under `estuary:calldialog:<Call-ID>`, and listed in the set
//!   `estuary:regcalls:<token>` of its browser's registration.
//! - `estuary:node:<node_id>`: the node's presence and the address it takes the core's
//!   requests on, refreshed every 500 ms with a 2 s TTL: a node that dies drops out of it,
//!   and one that stops removes it.
//! - Channel `estuary:handover`: a node that took over a browser's registration publishes
//!   its token there; the node that carried its calls hands them over (their copies then
//!   say `"handed_over":true`, which any node may take while their old node lives on).
//!
//! Writes go through a bounded queue to one task: the engine never waits on Redis, a full
//! queue drops the write (counted). While Redis is unreachable, writes are kept (bounded) and
//! replayed in order once it is back, with `estuary_cluster_redis_up` at 0 and one warning
//! per outage meanwhile. Late writes never undo a take-over: only a node that answered or
//! took a call over replaces another node's copy (see [`PUT_CALL`], [`DELETE_CALL`]), and a
//! registration is the newest node's (see [`PUT_REGISTRATION`]). The engine's
//! questions ([`estuary_b2bua::StateQuery`]) go to a second task, whose answers come back as
//! events; an unreachable Redis answers "unknown".

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use estuary_b2bua::call::Leg;
use estuary_b2bua::{Holder, SharedCall, SharedRegistration, StateAnswer, StateQuery};
use estuary_core::{MetricKind, Sample};
use tokio::sync::mpsc;
use tracing::{info, warn};

use crate::events::Event;
use crate::json::string;

/// How long a call's entry outlives a node that died without removing it.
const CALL_TTL_S: u64 = 24 * 3600;

/// Writes queued at most; beyond, new writes are dropped (and counted) rather than wait.
const QUEUE: usize = 4096;
/// One Redis command's time limit: a slow Redis costs writes, never the engine.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(1);
/// Between connection attempts while Redis is down.
const RECONNECT: Duration = Duration::from_secs(1);
/// How often a node announces itself, and how long an announcement lasts.
/// A killed node drops out 1.5 to 2 s later: before its browsers come back (JsSIP's first
/// reconnection is 2 s after the close), so their calls move at once. A Redis that stalls
/// this long makes a live node look gone only to a browser that already left it.
const PRESENCE_EVERY: Duration = Duration::from_millis(500);
const PRESENCE_TTL_S: u64 = 2;
/// Questions waiting for Redis at most; beyond, they are answered "unknown" at once.
const QUERIES: usize = 1024;
/// Where nodes ask each other to hand calls over (the message: a registration's token).
const HAND_OVER_CHANNEL: &str = "estuary:handover";
/// How long a stopping node waits for its last writes to reach Redis.
const LEAVE_TIMEOUT: Duration = Duration::from_secs(2);

/// Deletes the keys when the first one is still this node's (its JSON `node` is ARGV[1]): a
/// registration another node adopted since is not this node's to remove.
const DELETE_IF_OWNED: &str = r"
local v = redis.call('GET', KEYS[1])
if v and cjson.decode(v).node == ARGV[1] then return redis.call('DEL', unpack(KEYS)) end
return 0";

/// Stores a call (KEYS[1] = its key, ARGV[1] = its JSON, ARGV[2] = TTL), names it by its two
/// Call-IDs (KEYS[2], KEYS[3]) and lists it under its registration (KEYS[4], when given).
/// A claim (ARGV[3] = 'claim': the call was answered or taken over by the writing node)
/// removes a copy those Call-IDs named before (the node that carried the call until then):
/// one call, one copy. Any other write only refreshes a copy the Call-IDs still name: one
/// that reaches Redis late (kept through an outage) never takes back a call another node
/// took over meanwhile, nor brings back one that ended.
const PUT_CALL: &str = r"
if ARGV[3] ~= 'claim' then
  for i = 2, 3 do
    if redis.call('GET', KEYS[i]) ~= KEYS[1] then return 0 end
  end
end
for i = 2, 3 do
  local old = redis.call('GET', KEYS[i])
  if old and old ~= KEYS[1] then
    redis.call('DEL', old)
    if KEYS[4] then redis.call('SREM', KEYS[4], old) end
  end
  redis.call('SET', KEYS[i], KEYS[1], 'EX', ARGV[2])
end
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
if KEYS[4] then
  redis.call('SADD', KEYS[4], KEYS[1])
  redis.call('EXPIRE', KEYS[4], ARGV[2])
end
return 1";

/// Stores a registration (KEYS[1], ARGV[1] its JSON) and names it by its REGISTER dialog
/// (KEYS[2] = ARGV[2], its token), for ARGV[3] seconds, as node ARGV[4]'s at ARGV[4]'s time
/// ARGV[5] (Unix ms, when the node took the browser's REGISTER): unless another node's
/// entry is newer (the browser moved there since; this write reached Redis late).
const PUT_REGISTRATION: &str = r"
local v = redis.call('GET', KEYS[1])
if v then
  local old = cjson.decode(v)
  if old.node ~= ARGV[4] and (tonumber(old.at) or 0) > tonumber(ARGV[5]) then return 0 end
end
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[3])
redis.call('SET', KEYS[2], ARGV[2], 'EX', ARGV[3])
return 1";

/// Removes a call's copy (KEYS[1]), its names by Call-ID (KEYS[2], KEYS[3]) while they still
/// name it (another node may have taken the call over), and its listing under its
/// registration (KEYS[4], when given).
const DELETE_CALL: &str = r"
redis.call('DEL', KEYS[1])
for i = 2, 3 do
  if redis.call('GET', KEYS[i]) == KEYS[1] then redis.call('DEL', KEYS[i]) end
end
if KEYS[4] then redis.call('SREM', KEYS[4], KEYS[1]) end
return 1";

enum Write {
    /// A registration (see [`PUT_REGISTRATION`]): its key and its dialog's, its JSON and
    /// token, its lifetime, and when it was made.
    PutRegistration { keys: [String; 2], json: String, token: String, ttl_s: u64, at_ms: u64 },
    /// The node's presence: as Put, but never replayed late (a stale one would lie).
    Announce { key: String, value: String, ttl_s: u64 },
    /// A call (see [`PUT_CALL`]): its key and the keys naming it, its JSON, and whether it
    /// claims the call.
    PutCall { keys: Vec<String>, json: String, claim: bool },
    /// A call gone (see [`DELETE_CALL`]): the same keys.
    DeleteCall { keys: Vec<String> },
    Delete { key: String },
    DeleteIfOwned { keys: Vec<String> },
    /// PUBLISH `message` on `channel` (never replayed late: a late question is stale).
    Publish { channel: &'static str, message: String },
    /// Not a write: answered once everything queued before it was tried.
    Flush(tokio::sync::oneshot::Sender<()>),
}

#[derive(Default)]
struct Counters {
    up: AtomicBool,
    /// Whether the hand-over channel is subscribed (see [`listen`]).
    listening: AtomicBool,
    ok: AtomicU64,
    failed: AtomicU64,
    dropped: AtomicU64,
    deferred: AtomicU64,
}

/// Writes kept while Redis is unreachable, replayed in order once it is back; beyond, the
/// oldest are lost (counted as failed).
const BACKLOG: usize = 16_384;

/// Where the shared state's connections come from: one server, or the master a set of Redis
/// Sentinels names (asked again at each reconnection, so a promoted replica takes over).
#[derive(Clone)]
enum Source {
    Server(redis::Client),
    Sentinel(Arc<tokio::sync::Mutex<redis::sentinel::SentinelClient>>),
}

impl Source {
    /// `url` as `cluster.redis` takes it (config validation checked its form).
    fn open(url: &str) -> Result<Source, String> {
        match url.strip_prefix("redis-sentinel://") {
            None => redis::Client::open(url).map(Source::Server).map_err(|e| format!("{url}: {e}")),
            Some(rest) => {
                let (hosts, master) = rest.split_once('/').ok_or_else(|| format!("{url}: no master name"))?;
                let sentinels: Vec<String> = hosts.split(',').map(|h| format!("redis://{}", h.trim())).collect();
                redis::sentinel::SentinelClient::build(sentinels, master.to_owned(), None, redis::sentinel::SentinelServerType::Master)
                    .map(|c| Source::Sentinel(Arc::new(tokio::sync::Mutex::new(c))))
                    .map_err(|e| format!("{url}: {e}"))
            }
        }
    }

    async fn connect(&self) -> redis::RedisResult<redis::aio::MultiplexedConnection> {
        match self {
            Source::Server(c) => c.get_multiplexed_async_connection().await,
            Source::Sentinel(s) => s.lock().await.get_async_connection().await,
        }
    }

    /// A connection for SUBSCRIBE (RESP2 takes one of its own).
    async fn pubsub(&self) -> redis::RedisResult<redis::aio::PubSub> {
        match self {
            Source::Server(c) => c.get_async_pubsub().await,
            Source::Sentinel(s) => {
                let client = s.lock().await.async_get_client().await?;
                client.get_async_pubsub().await
            }
        }
    }
}

/// The engine's handle on the shared state.
pub struct SharedState {
    node_id: String,
    queue: mpsc::Sender<Write>,
    queries: mpsc::Sender<(u64, StateQuery)>,
    events: mpsc::Sender<Event>,
    counters: Arc<Counters>,
    source: Source,
    announcer: tokio::task::AbortHandle,
}

impl SharedState {
    /// Starts the writer and the reader toward `url` (they connect in the background, and
    /// again after an outage) and the node's presence under `node_id`, announcing `sip` as
    /// the address other nodes proxy the core's requests to. Answers go to `events`.
    pub fn start(url: &str, node_id: &str, sip: std::net::SocketAddr, events: mpsc::Sender<Event>) -> Result<SharedState, String> {
        let client = Source::open(url)?;
        let (queue, rx) = mpsc::channel(QUEUE);
        let (queries, questions) = mpsc::channel(QUERIES);
        let counters = Arc::new(Counters::default());
        tokio::spawn(writer(client.clone(), node_id.to_owned(), rx, counters.clone()));
        tokio::spawn(reader(client.clone(), node_id.to_owned(), questions, events.clone()));
        tokio::spawn(listen(client.clone(), events.clone(), counters.clone()));
        let announcer = tokio::spawn(announce(queue.clone(), node_id.to_owned(), sip)).abort_handle();
        Ok(SharedState { node_id: node_id.to_owned(), queue, queries, events, counters, source: client, announcer })
    }

    /// Asks the cluster's nodes to hand over the calls of registration `token`.
    pub fn want_hand_over(&self, token: &str) {
        self.enqueue(Write::Publish { channel: HAND_OVER_CHANNEL, message: token.to_owned() });
    }

    /// Whether another node announces itself now (a stopping node hands its calls over only
    /// then); `false` when Redis does not answer.
    pub async fn others_alive(&self) -> bool {
        let own = presence_key(&self.node_id);
        let scan = async {
            let mut con = self.source.connect().await?;
            let mut cursor = 0u64;
            loop {
                let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN").arg(cursor).arg("MATCH").arg(presence_key("*")).arg("COUNT").arg(100).query_async(&mut con).await?;
                if keys.iter().any(|k| *k != own) {
                    return Ok(true);
                }
                if next == 0 {
                    return Ok::<bool, redis::RedisError>(false);
                }
                cursor = next;
            }
        };
        matches!(tokio::time::timeout(LEAVE_TIMEOUT, scan).await, Ok(Ok(true)))
    }

    /// The node stops: it no longer announces itself, its presence is removed, and the
    /// writes queued so far get their chance to reach Redis (within [`LEAVE_TIMEOUT`]).
    pub async fn leave(&self) {
        self.announcer.abort();
        self.enqueue(Write::Delete { key: presence_key(&self.node_id) });
        let (done, flushed) = tokio::sync::oneshot::channel();
        if self.queue.send(Write::Flush(done)).await.is_ok() && tokio::time::timeout(LEAVE_TIMEOUT, flushed).await.is_err() {
            warn!("cluster Redis: this node's last writes did not all go through before it stopped");
        }
    }

    /// Asks the shared state `ask` for the engine's held request `query`; the answer comes
    /// back as [`Event::StateAnswer`].
    pub fn query(&self, query: u64, ask: StateQuery) {
        if let Err(e) = self.queries.try_send((query, ask)) {
            // Too many questions out: answer now rather than hold the request longer.
            let (query, _) = e.into_inner();
            let _ = self.events.try_send(Event::StateAnswer { query, answer: StateAnswer::Unknown });
        }
    }

    fn enqueue(&self, write: Write) {
        if self.queue.try_send(write).is_err() {
            self.counters.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Stores (or refreshes) a registration, as this node's, until it expires.
    pub fn put_registration(&self, r: &SharedRegistration) {
        let at_ms = unix_ms(Instant::now());
        self.enqueue(Write::PutRegistration {
            keys: [registration_key(&r.token), dialog_key(&r.web_call_id)],
            json: registration_json(r, &self.node_id, at_ms),
            token: r.token.clone(),
            ttl_s: u64::from(r.expires_in.max(1)),
            at_ms,
        });
    }

    /// Removes a registration (and its dialog's name) unless another node holds it now.
    pub fn remove_registration(&self, token: &str, web_call_id: &str) {
        self.enqueue(Write::DeleteIfOwned { keys: vec![registration_key(token), dialog_key(web_call_id)] });
    }

    fn call_key(&self, call: u64) -> String {
        format!("estuary:{}:call:{call}", self.node_id)
    }

    /// The keys of call `call`: its copy, its names by Call-ID, its registration's listing.
    fn call_keys(&self, call: u64, dialogs: [&str; 2], binding: Option<&str>) -> Vec<String> {
        let mut keys = vec![self.call_key(call), call_dialog_key(dialogs[0]), call_dialog_key(dialogs[1])];
        keys.extend(binding.map(registration_calls_key));
        keys
    }

    /// Stores an answered call's dialogs until it ends, named by both Call-IDs too.
    pub fn put_call(&self, c: &SharedCall) {
        let keys = self.call_keys(c.call, [&c.legs[0].call_id, &c.legs[1].call_id], c.binding.as_deref());
        self.enqueue(Write::PutCall { keys, json: call_json(c), claim: c.claim });
    }

    pub fn remove_call(&self, call: u64, dialogs: &[String; 2], binding: Option<&str>) {
        let keys = self.call_keys(call, [&dialogs[0], &dialogs[1]], binding);
        self.enqueue(Write::DeleteCall { keys });
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
        out.push(Sample {
            name: "estuary_cluster_handover_listening",
            help: "1 while this node hears the other nodes' requests to hand calls over (Redis channel estuary:handover)",
            kind: MetricKind::Gauge,
            labels: vec![],
            value: u64::from(c.listening.load(Ordering::Relaxed)),
        });
        for (result, n) in [("ok", &c.ok), ("deferred", &c.deferred), ("failed", &c.failed), ("dropped", &c.dropped)] {
            out.push(Sample {
                name: "estuary_cluster_writes_total",
                help: "Shared-state writes to Redis by result (deferred: kept while Redis was unreachable and replayed after; failed: lost; dropped: the queue was full)",
                kind: MetricKind::Counter,
                labels: vec![("result", result.to_owned())],
                value: n.load(Ordering::Relaxed),
            });
        }
        out
    }
}

fn registration_key(token: &str) -> String {
    format!("estuary:reg:{token}")
}

fn dialog_key(web_call_id: &str) -> String {
    format!("estuary:regdialog:{web_call_id}")
}

fn registration_calls_key(token: &str) -> String {
    format!("estuary:regcalls:{token}")
}

fn call_dialog_key(call_id: &str) -> String {
    format!("estuary:calldialog:{call_id}")
}

fn presence_key(node_id: &str) -> String {
    format!("estuary:node:{node_id}")
}

/// The registration as a JSON object, held by `node` (no secrets in it).
fn registration_json(r: &SharedRegistration, node: &str, at_ms: u64) -> String {
    let opt = |v: &Option<String>| v.as_deref().map_or("null".to_owned(), string);
    let routes: Vec<String> = r.service_route.iter().map(|s| string(s)).collect();
    format!(
        "{{\"node\":{},\"at\":{},\"token\":{},\"aor\":{},\"instance\":{},\"reg_id\":{},\"web_contact\":{},\"web_call_id\":{},\"service_route\":[{}],\"ims_call_id\":{},\"ims_cseq\":{},\"source\":{},\"expires_in\":{}}}",
        string(node),
        at_ms,
        string(&r.token),
        string(&r.aor),
        opt(&r.instance),
        opt(&r.reg_id),
        string(&r.web_contact),
        string(&r.web_call_id),
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
        "{{\"call\":{},\"legs\":[{},{}],\"ports\":[{}],\"icid\":{},\"binding\":{},\"ims_sdp\":{},\"rx_session\":{},\"started_ms\":{},\"answered_ms\":{},\"handed_over\":{}}}",
        c.call,
        leg(&c.legs[0]),
        leg(&c.legs[1]),
        ports.join(","),
        c.icid.as_deref().map_or("null".to_owned(), string),
        c.binding.as_deref().map_or("null".to_owned(), string),
        c.ims_sdp.as_deref().map_or("null".to_owned(), string),
        c.rx_session.as_deref().map_or("null".to_owned(), string),
        unix_ms(c.started),
        unix_ms(c.answered),
        c.handed_over
    )
}

/// An instant of this process as milliseconds since the Unix epoch, for another node (the
/// nodes' clocks are assumed in step, as NTP keeps them).
fn unix_ms(t: Instant) -> u64 {
    let wall = SystemTime::now().checked_sub(Instant::now().saturating_duration_since(t)).unwrap_or(UNIX_EPOCH);
    wall.duration_since(UNIX_EPOCH).map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Milliseconds since the Unix epoch as an instant of this process; a time ahead of this
/// node's clock is now.
fn instant_of(ms: u64) -> Instant {
    let ago = SystemTime::now().duration_since(UNIX_EPOCH + Duration::from_millis(ms)).unwrap_or(Duration::ZERO);
    Instant::now().checked_sub(ago).unwrap_or_else(Instant::now)
}

/// One connection to Redis, made again after it fails: while Redis is unreachable at most
/// one attempt every [`RECONNECT`], so that its users fail fast meanwhile.
struct Link {
    source: Source,
    connection: Option<redis::aio::MultiplexedConnection>,
    next_attempt: tokio::time::Instant,
}

impl Link {
    fn new(source: Source) -> Link {
        Link { source, connection: None, next_attempt: tokio::time::Instant::now() }
    }

    /// The connection, made now if there is none and an attempt is due (or `at_once`).
    async fn get(&mut self, at_once: bool) -> Option<&mut redis::aio::MultiplexedConnection> {
        if self.connection.is_none() && (at_once || tokio::time::Instant::now() >= self.next_attempt) {
            match tokio::time::timeout(COMMAND_TIMEOUT, self.source.connect()).await {
                Ok(Ok(c)) => self.connection = Some(c),
                Ok(Err(e)) => {
                    tracing::debug!(error = %e, "cluster Redis connection failed");
                    self.next_attempt = tokio::time::Instant::now() + RECONNECT;
                }
                Err(_) => {
                    tracing::debug!("cluster Redis connection timed out");
                    self.next_attempt = tokio::time::Instant::now() + RECONNECT;
                }
            }
        }
        self.connection.as_mut()
    }

    /// The connection failed: made again by the next `get`.
    fn lost(&mut self) {
        self.connection = None;
    }
}

async fn writer(client: Source, node_id: String, mut rx: mpsc::Receiver<Write>, counters: Arc<Counters>) {
    let mut link = Link::new(client);
    let mut warned = false;
    let mut backlog: std::collections::VecDeque<Write> = std::collections::VecDeque::new();
    while let Some(write) = rx.recv().await {
        if let Write::Flush(done) = write {
            let _ = done.send(());
            continue;
        }
        if link.get(false).await.is_some() && warned {
            info!(backlog = backlog.len(), "cluster Redis reachable again; replaying the writes kept meanwhile");
            warned = false;
        }
        // What was kept during an outage goes first, in order.
        while let (Some(con), Some(kept)) = (link.connection.as_mut(), backlog.front()) {
            if run(con, kept, &node_id).await {
                backlog.pop_front();
                counters.ok.fetch_add(1, Ordering::Relaxed);
            } else {
                link.lost();
            }
        }
        // A write that fails on a connection that worked is tried once more on a new one at
        // once (every write is idempotent): the server may have moved (a Sentinel failover)
        // or dropped idle connections.
        let mut done = false;
        for attempt in 0..2 {
            let Some(con) = link.get(attempt == 1).await else { break };
            done = run(con, &write, &node_id).await;
            if done {
                break;
            }
            link.lost();
        }
        if done {
            counters.up.store(true, Ordering::Relaxed);
            counters.ok.fetch_add(1, Ordering::Relaxed);
            continue;
        }
        counters.up.store(false, Ordering::Relaxed);
        if !warned {
            warn!("cluster Redis unreachable: this node's writes are kept and replayed when it is back");
            warned = true;
        }
        // Kept for later, but the node's presence and questions to the nodes: late, they
        // would lie.
        if matches!(write, Write::Announce { .. } | Write::Publish { .. }) {
            counters.failed.fetch_add(1, Ordering::Relaxed);
            continue;
        }
        if backlog.len() >= BACKLOG {
            backlog.pop_front();
            counters.failed.fetch_add(1, Ordering::Relaxed);
        }
        backlog.push_back(write);
        counters.deferred.fetch_add(1, Ordering::Relaxed);
    }
}

/// Runs one write on `con`; whether it went through.
async fn run(con: &mut redis::aio::MultiplexedConnection, write: &Write, node_id: &str) -> bool {
    let pipe = command(write, node_id);
    matches!(tokio::time::timeout(COMMAND_TIMEOUT, pipe.query_async::<redis::Value>(con)).await, Ok(Ok(_)))
}

/// The Redis commands of one write.
fn command(write: &Write, node_id: &str) -> redis::Pipeline {
    let mut pipe = redis::pipe();
    match write {
        Write::PutRegistration { keys, json, token, ttl_s, at_ms } => {
            pipe.cmd("EVAL").arg(PUT_REGISTRATION).arg(2).arg(&keys[..]).arg(json).arg(token).arg(*ttl_s).arg(node_id).arg(*at_ms).ignore();
        }
        Write::Announce { key, value, ttl_s } => {
            pipe.cmd("SET").arg(key).arg(value).arg("EX").arg(*ttl_s).ignore();
        }
        Write::PutCall { keys, json, claim } => {
            let how = if *claim { "claim" } else { "refresh" };
            pipe.cmd("EVAL").arg(PUT_CALL).arg(keys.len()).arg(keys).arg(json).arg(CALL_TTL_S).arg(how).ignore();
        }
        Write::DeleteCall { keys } => {
            pipe.cmd("EVAL").arg(DELETE_CALL).arg(keys.len()).arg(keys).ignore();
        }
        Write::Delete { key } => {
            pipe.cmd("DEL").arg(key).ignore();
        }
        Write::DeleteIfOwned { keys } => {
            pipe.cmd("EVAL").arg(DELETE_IF_OWNED).arg(keys.len()).arg(keys).arg(node_id).ignore();
        }
        Write::Publish { channel, message } => {
            pipe.cmd("PUBLISH").arg(*channel).arg(message).ignore();
        }
        Write::Flush(_) => {}
    }
    pipe
}

/// Announces the node every [`PRESENCE_EVERY`] (through the writer, so an outage costs
/// announcements, never a wait).
async fn announce(queue: mpsc::Sender<Write>, node_id: String, sip: std::net::SocketAddr) {
    let value = format!("{{\"sip\":{}}}", string(&sip.to_string()));
    let mut every = tokio::time::interval(PRESENCE_EVERY);
    loop {
        every.tick().await;
        let put = Write::Announce { key: presence_key(&node_id), value: value.clone(), ttl_s: PRESENCE_TTL_S };
        if queue.send(put).await.is_err() {
            return; // The writer is gone: the process is stopping.
        }
    }
}

/// Hears the nodes' hand-over questions (see [`HAND_OVER_CHANNEL`]) and passes them to the
/// engine; subscribes again after Redis goes away. A question lost meanwhile is asked again
/// (the asking node repeats it while the calls stay where they are).
async fn listen(source: Source, events: mpsc::Sender<Event>, counters: Arc<Counters>) {
    use futures_util::StreamExt;
    loop {
        counters.listening.store(false, Ordering::Relaxed);
        let subscribed = async {
            let mut pubsub = source.pubsub().await?;
            pubsub.subscribe(HAND_OVER_CHANNEL).await?;
            Ok::<_, redis::RedisError>(pubsub)
        };
        match tokio::time::timeout(COMMAND_TIMEOUT, subscribed).await {
            Ok(Ok(pubsub)) => {
                counters.listening.store(true, Ordering::Relaxed);
                let mut messages = pubsub.into_on_message();
                while let Some(msg) = messages.next().await {
                    let Ok(token) = msg.get_payload::<String>() else { continue };
                    if events.send(Event::HandOverWanted { token }).await.is_err() {
                        return; // The engine is gone: the process is stopping.
                    }
                }
                tracing::debug!("cluster Redis subscription ended; subscribing again");
            }
            Ok(Err(e)) => tracing::debug!(error = %e, "cluster Redis subscription failed"),
            Err(_) => tracing::debug!("cluster Redis subscription timed out"),
        }
        tokio::time::sleep(RECONNECT).await;
    }
}

/// Answers the engine's questions, one at a time, from Redis.
async fn reader(client: Source, node_id: String, mut questions: mpsc::Receiver<(u64, StateQuery)>, events: mpsc::Sender<Event>) {
    // As the writer's writes: a lookup that fails on a connection that worked is tried once
    // more on a new one (a failover costs no adoption), and while Redis is unreachable
    // questions are answered "unknown" at once.
    let mut link = Link::new(client);
    while let Some((query, ask)) = questions.recv().await {
        let mut answer = StateAnswer::Unknown;
        for attempt in 0..2 {
            let Some(con) = link.get(attempt == 1).await else { break };
            if let Ok(Ok(found)) = tokio::time::timeout(COMMAND_TIMEOUT, lookup(con, &node_id, &ask)).await {
                answer = found;
                break;
            }
            link.lost();
        }
        tracing::debug!(?ask, found = !matches!(answer, StateAnswer::Unknown), "cluster state looked up");
        if events.send(Event::StateAnswer { query, answer }).await.is_err() {
            return;
        }
    }
}

/// Whose `node` is: this node, a live one (its address), or one gone.
async fn holder(con: &mut redis::aio::MultiplexedConnection, node_id: &str, node: &str) -> redis::RedisResult<Holder> {
    if node == node_id {
        return Ok(Holder::Here);
    }
    let presence: Option<String> = redis::cmd("GET").arg(presence_key(node)).query_async(con).await?;
    Ok(match presence.as_deref().and_then(parse_presence) {
        Some(addr) => Holder::Node(addr),
        None => Holder::Gone,
    })
}

/// Who carries `call`, stored under `key` (`estuary:<node>:call:<id>`): nobody when its node
/// handed it over, else the node that wrote it.
async fn call_holder(con: &mut redis::aio::MultiplexedConnection, node_id: &str, key: &str, call: &SharedCall) -> redis::RedisResult<Holder> {
    if call.handed_over {
        return Ok(Holder::Gone);
    }
    holder(con, node_id, key.split(':').nth(1).unwrap_or_default()).await
}

async fn lookup(con: &mut redis::aio::MultiplexedConnection, node_id: &str, ask: &StateQuery) -> redis::RedisResult<StateAnswer> {
    let token = match ask {
        StateQuery::Dialog { call_id } => {
            let key: Option<String> = redis::cmd("GET").arg(call_dialog_key(call_id)).query_async(con).await?;
            let Some(key) = key else { return Ok(StateAnswer::Unknown) };
            let json: Option<String> = redis::cmd("GET").arg(&key).query_async(con).await?;
            let Some(call) = json.as_deref().and_then(parse_call) else { return Ok(StateAnswer::Unknown) };
            let holder = call_holder(con, node_id, &key, &call).await?;
            return Ok(StateAnswer::Call { call: Box::new(call), holder });
        }
        StateQuery::CallsOf { token } => {
            let keys: Vec<String> = redis::cmd("SMEMBERS").arg(registration_calls_key(token)).query_async(con).await?;
            let mut calls = Vec::new();
            for key in keys {
                let json: Option<String> = redis::cmd("GET").arg(&key).query_async(con).await?;
                let Some(call) = json.as_deref().and_then(parse_call) else {
                    let _: redis::Value = redis::cmd("SREM").arg(registration_calls_key(token)).arg(&key).query_async(con).await?;
                    continue;
                };
                // The call's current copy is the one its dialog names: a node that took it
                // over wrote its own, and the dead node's is stale.
                let named: Option<String> = redis::cmd("GET").arg(call_dialog_key(&call.legs[0].call_id)).query_async(con).await?;
                if named.as_deref() != Some(key.as_str()) {
                    let _: redis::Value = redis::cmd("SREM").arg(registration_calls_key(token)).arg(&key).query_async(con).await?;
                    let _: redis::Value = redis::cmd("DEL").arg(&key).query_async(con).await?;
                    continue;
                }
                let holder = call_holder(con, node_id, &key, &call).await?;
                calls.push((call, holder));
            }
            return Ok(StateAnswer::Calls(calls));
        }
        StateQuery::Token { token } => token.clone(),
        StateQuery::RegisterDialog { web_call_id } => {
            let token: Option<String> = redis::cmd("GET").arg(dialog_key(web_call_id)).query_async(con).await?;
            match token {
                Some(t) => t,
                None => return Ok(StateAnswer::Unknown),
            }
        }
    };
    let json: Option<String> = redis::cmd("GET").arg(registration_key(&token)).query_async(con).await?;
    let Some((registration, node)) = json.as_deref().and_then(parse_registration) else { return Ok(StateAnswer::Unknown) };
    let holder = holder(con, node_id, &node).await?;
    Ok(StateAnswer::Registration { registration: Box::new(registration), holder })
}

/// A stored registration and the node holding it; `None` when the JSON is not one.
fn parse_registration(json: &str) -> Option<(SharedRegistration, String)> {
    let v: serde_json::Value = serde_json::from_str(json).ok()?;
    let text = |k: &str| v.get(k).and_then(serde_json::Value::as_str).map(str::to_owned);
    let r = SharedRegistration {
        token: text("token")?,
        aor: text("aor")?,
        instance: text("instance"),
        reg_id: text("reg_id"),
        web_contact: text("web_contact")?,
        web_call_id: text("web_call_id")?,
        service_route: v.get("service_route")?.as_array()?.iter().filter_map(|r| r.as_str().map(str::to_owned)).collect(),
        ims_call_id: text("ims_call_id")?,
        ims_cseq: u32::try_from(v.get("ims_cseq")?.as_u64()?).ok()?,
        source: text("source")?.parse().ok()?,
        expires_in: u32::try_from(v.get("expires_in")?.as_u64()?).ok()?,
    };
    Some((r, text("node")?))
}

/// A stored call; `None` when the JSON is not one. Flows and transports are not stored (they
/// are the carrying node's own): the legs come back with placeholders the adopting engine
/// replaces.
fn parse_call(json: &str) -> Option<SharedCall> {
    let v: serde_json::Value = serde_json::from_str(json).ok()?;
    let leg = |l: &serde_json::Value| -> Option<Leg> {
        let text = |k: &str| l.get(k).and_then(serde_json::Value::as_str).map(str::to_owned);
        let side = match text("side")?.as_str() {
            "web" => estuary_core::Side::Web,
            "ims" => estuary_core::Side::Ims,
            _ => return None,
        };
        let local_cseq = u32::try_from(l.get("local_cseq")?.as_u64()?).ok()?;
        Some(Leg {
            side,
            flow: match side {
                estuary_core::Side::Web => estuary_b2bua::Flow::Web { conn: estuary_b2bua::ConnId(0) },
                estuary_core::Side::Ims => estuary_b2bua::Flow::Ims {
                    transport: estuary_b2bua::Transport::Udp,
                    remote: std::net::SocketAddr::from(([0, 0, 0, 0], 0)),
                },
            },
            transport: estuary_b2bua::Transport::Udp,
            call_id: text("call_id")?,
            local_tag: text("local_tag")?,
            remote_tag: text("remote_tag"),
            local: text("local")?,
            remote: text("remote")?,
            remote_target: text("remote_target")?,
            route_set: l.get("route_set")?.as_array()?.iter().filter_map(|r| r.as_str().map(str::to_owned)).collect(),
            local_cseq,
            invite_cseq: local_cseq,
            contact: text("contact")?,
        })
    };
    let legs = v.get("legs")?.as_array()?;
    let [a, b] = legs.as_slice() else { return None };
    Some(SharedCall {
        call: v.get("call")?.as_u64()?,
        legs: [leg(a)?, leg(b)?],
        ports: v.get("ports")?.as_array()?.iter().filter_map(|p| p.as_u64().and_then(|p| u16::try_from(p).ok())).collect(),
        icid: v.get("icid").and_then(serde_json::Value::as_str).map(str::to_owned),
        binding: v.get("binding").and_then(serde_json::Value::as_str).map(str::to_owned),
        ims_sdp: v.get("ims_sdp").and_then(serde_json::Value::as_str).map(str::to_owned),
        rx_session: v.get("rx_session").and_then(serde_json::Value::as_str).map(str::to_owned),
        // (A copy written before these were shared: the call counts from its take-over.)
        started: v.get("started_ms").and_then(serde_json::Value::as_u64).map_or_else(Instant::now, instant_of),
        answered: v.get("answered_ms").and_then(serde_json::Value::as_u64).map_or_else(Instant::now, instant_of),
        claim: false,
        handed_over: v.get("handed_over").and_then(serde_json::Value::as_bool).unwrap_or(false),
    })
}

fn parse_presence(json: &str) -> Option<std::net::SocketAddr> {
    let v: serde_json::Value = serde_json::from_str(json).ok()?;
    v.get("sip")?.as_str()?.parse().ok()
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
            web_call_id: "reg-dialog-1".into(),
            ims_call_id: "c1@127.0.0.1".into(),
            ims_cseq: 2,
            source: "192.0.2.1".parse().unwrap(),
            expires_in: 600,
        };
        let json = registration_json(&r, "node-a", 1_796_533_276_000);
        assert_eq!(
            json,
            // (json::string escapes < and >, so the text embeds anywhere.)
            r#"{"node":"node-a","at":1796533276000,"token":"tok1","aor":"sip:alice@ims.test","instance":"\u003curn:uuid:1\u003e","reg_id":null,"web_contact":"\u003csip:a@b.invalid;transport=ws\u003e","web_call_id":"reg-dialog-1","service_route":["\u003csip:scscf.ims.test;lr\u003e"],"ims_call_id":"c1@127.0.0.1","ims_cseq":2,"source":"192.0.2.1","expires_in":600}"#
        );
        // What another node reads back is what was shared, and whose it is.
        assert_eq!(parse_registration(&json), Some((r, "node-a".to_owned())));
        assert_eq!(parse_registration(r#"{"node":"x","token":"t"}"#), None, "an incomplete entry is no registration");
        assert_eq!(parse_presence(r#"{"sip":"127.0.0.12:5060"}"#), Some("127.0.0.12:5060".parse().unwrap()));
        assert_eq!(parse_presence("garbage"), None);
    }

    #[test]
    fn a_call_reads_back_as_it_was_shared_but_for_this_nodes_flows() {
        let leg = |side, call_id: &str, flow| Leg {
            side,
            flow,
            transport: estuary_b2bua::Transport::Udp,
            call_id: call_id.into(),
            local_tag: "lt".into(),
            remote_tag: Some("rt".into()),
            local: "<sip:alice@ims.test>".into(),
            remote: "<sip:bob@ims.test>".into(),
            remote_target: "sip:bob@10.0.0.9:5060".into(),
            route_set: vec!["<sip:scscf.ims.test;lr>".into()],
            local_cseq: 4,
            invite_cseq: 4,
            contact: "<sip:estuary@127.0.0.1:5080;transport=udp>".into(),
        };
        let web = leg(estuary_core::Side::Web, "w1", estuary_b2bua::Flow::Web { conn: estuary_b2bua::ConnId(0) });
        let ims = leg(
            estuary_core::Side::Ims,
            "i1",
            estuary_b2bua::Flow::Ims { transport: estuary_b2bua::Transport::Udp, remote: std::net::SocketAddr::from(([0, 0, 0, 0], 0)) },
        );
        let call = SharedCall {
            call: 9,
            legs: [web, ims],
            ports: vec![30000, 30002],
            icid: Some("icid-1".into()),
            binding: Some("tok1".into()),
            ims_sdp: Some("v=0\r\nm=audio 4000 RTP/AVP 0\r\n".into()),
            rx_session: Some("pcscf.ims.test;1;2".into()),
            started: Instant::now() - Duration::from_secs(90),
            answered: Instant::now() - Duration::from_secs(80),
            claim: false,
            handed_over: false,
        };
        // The times come back to the millisecond, through the wall clock.
        let close = |a: Instant, b: Instant| a.max(b).duration_since(a.min(b)) < Duration::from_millis(5);
        let back = parse_call(&call_json(&call)).expect("read back");
        assert!(close(back.started, call.started) && close(back.answered, call.answered), "{back:?}");
        assert_eq!(SharedCall { started: call.started, answered: call.answered, ..back }, call);
        let handed = SharedCall { handed_over: true, ..call.clone() };
        assert!(parse_call(&call_json(&handed)).is_some_and(|c| c.handed_over));
        // A copy without times (an older node's) counts from now.
        let old = call_json(&call).replace("\"started_ms\"", "\"x\"").replace("\"answered_ms\"", "\"y\"");
        assert!(parse_call(&old).is_some_and(|c| c.started.elapsed() < Duration::from_secs(5)));
        assert_eq!(parse_call(r#"{"call":1,"legs":[]}"#), None);
    }

    /// A real redis-server (as `make deps` installs it) on a free port, for the scripts.
    struct TestRedis {
        child: std::process::Child,
        port: u16,
        dir: std::path::PathBuf,
    }

    impl TestRedis {
        fn start() -> TestRedis {
            let port = std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("a free port").port();
            let dir = std::env::temp_dir().join(format!("estuary-cluster-unit-{port}-{}", std::process::id()));
            std::fs::create_dir_all(&dir).expect("redis dir");
            let child = std::process::Command::new("redis-server")
                .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
                .arg("--dir")
                .arg(&dir)
                .stdout(std::process::Stdio::null())
                .spawn()
                .expect("redis-server is needed for this test: apt-get install redis-server (make deps installs it)");
            let deadline = std::time::Instant::now() + Duration::from_secs(10);
            while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
                assert!(std::time::Instant::now() < deadline, "redis-server did not start");
                std::thread::sleep(Duration::from_millis(20));
            }
            TestRedis { child, port, dir }
        }
    }

    impl Drop for TestRedis {
        fn drop(&mut self) {
            let _ = self.child.kill();
            let _ = self.child.wait();
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }

    #[test]
    fn a_late_write_never_takes_back_a_call_or_a_registration_another_node_took_over() {
        let redis = TestRedis::start();
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            let client = redis::Client::open(format!("redis://127.0.0.1:{}", redis.port)).unwrap();
            let mut con = client.get_multiplexed_async_connection().await.unwrap();
            let keys = |node: &str| vec![format!("estuary:{node}:call:1"), "estuary:calldialog:w1".to_owned(), "estuary:calldialog:i1".to_owned(), "estuary:regcalls:tok".to_owned()];
            let put = |node: &str, claim: bool| Write::PutCall { keys: keys(node), json: format!("{{\"from\":\"{node}\"}}"), claim };
            let reader = con.clone();
            let get = |key: &'static str| {
                let mut con = reader.clone();
                async move { redis::cmd("GET").arg(key).query_async::<Option<String>>(&mut con).await.unwrap() }
            };
            // Node A answers the call, then refreshes its copy.
            assert!(run(&mut con, &put("node-a", true), "node-a").await);
            assert!(run(&mut con, &put("node-a", false), "node-a").await);
            assert_eq!(get("estuary:calldialog:w1").await.as_deref(), Some("estuary:node-a:call:1"));
            // Node B takes it over: A's copy goes.
            assert!(run(&mut con, &put("node-b", true), "node-b").await);
            assert_eq!(get("estuary:node-a:call:1").await, None);
            // A's refresh, kept through an outage, reaches Redis late: refused.
            assert!(run(&mut con, &put("node-a", false), "node-a").await);
            assert_eq!(get("estuary:node-a:call:1").await, None, "A's copy not back");
            assert_eq!(get("estuary:calldialog:i1").await.as_deref(), Some("estuary:node-b:call:1"), "the call still B's");
            // A's end of the call, late too: B's names stay.
            assert!(run(&mut con, &Write::DeleteCall { keys: keys("node-a") }, "node-a").await);
            assert_eq!(get("estuary:calldialog:w1").await.as_deref(), Some("estuary:node-b:call:1"));
            assert!(get("estuary:node-b:call:1").await.is_some());
            // B ends it: everything goes, and no late refresh brings it back.
            assert!(run(&mut con, &Write::DeleteCall { keys: keys("node-b") }, "node-b").await);
            assert!(run(&mut con, &put("node-b", false), "node-b").await);
            for key in ["estuary:node-b:call:1", "estuary:calldialog:w1", "estuary:calldialog:i1"] {
                assert_eq!(get(key).await, None, "{key}");
            }
            let listed: Vec<String> = redis::cmd("SMEMBERS").arg("estuary:regcalls:tok").query_async(&mut con).await.unwrap();
            assert!(listed.is_empty(), "{listed:?}");

            // Registrations: the newest node's entry wins, however late a write arrives.
            let reg = |node: &str, at_ms: u64| Write::PutRegistration {
                keys: ["estuary:reg:tok".into(), "estuary:regdialog:r1".into()],
                json: format!("{{\"node\":\"{node}\",\"at\":{at_ms}}}"),
                token: "tok".into(),
                ttl_s: 60,
                at_ms,
            };
            let holder = || async { get("estuary:reg:tok").await.map(|j| parse_json_node(&j)) };
            assert!(run(&mut con, &reg("node-a", 1_000), "node-a").await);
            assert!(run(&mut con, &reg("node-a", 2_000), "node-a").await, "A's own refresh");
            assert!(run(&mut con, &reg("node-b", 3_000), "node-b").await, "the browser moved to B");
            assert_eq!(holder().await.as_deref(), Some("node-b"));
            assert!(run(&mut con, &reg("node-a", 2_500), "node-a").await);
            assert_eq!(holder().await.as_deref(), Some("node-b"), "A's refresh from before the move, arriving late, is refused");
            assert!(run(&mut con, &reg("node-a", 4_000), "node-a").await);
            assert_eq!(holder().await.as_deref(), Some("node-a"), "the browser back at A later: A's again");
            assert_eq!(get("estuary:regdialog:r1").await.as_deref(), Some("tok"));
        });
    }

    fn parse_json_node(json: &str) -> String {
        let v: serde_json::Value = serde_json::from_str(json).unwrap();
        v["node"].as_str().unwrap().to_owned()
    }
}
