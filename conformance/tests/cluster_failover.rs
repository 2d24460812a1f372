//! Registrations outlive the node that made them. Two Estuary nodes share state in a real
//! Redis behind Kamailio's dispatcher (etc/cluster/kamailio-dispatcher.cfg), in front of a
//! Kamailio IMS core that keeps the Path the nodes register. A browser registers on node A;
//! the core's calls to it reach it whichever node the dispatcher picks (node B proxies to A).
//! Node A is killed with SIGKILL: until the browser reconnects the core's calls get 480;
//! once it reconnects to node B and sends its REGISTER refresh (JsSIP's same dialog), node B
//! takes the registration over (same binding at the core, now held by node B in Redis) and
//! the core's next call reaches the browser there.
//!
//! Needs kamailio and redis-server (make deps) and `cargo build -p estuary`.

use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use estuary_conformance::gateway::Gateway;
use estuary_conformance::kamailio::{Dispatcher, Kamailio};
use estuary_conformance::net::free_udp_port;
use estuary_conformance::redis::Redis;
use estuary_conformance::ws_client::{WsSipClient, DEFAULT_WAIT};

async fn node(name: &str, core: SocketAddr, front: SocketAddr, redis: &str) -> Gateway {
    estuary_conformance::cluster::node(name, core, front, redis).start().await
}

/// The core's side of a call to alice: an INVITE through the Kamailio core (which finds
/// her binding and sends the INVITE through its Path, the dispatcher). Returns the final
/// status, once it is ACKed.
fn call_alice(caller: &UdpSocket, core: SocketAddr, n: u32) -> u16 {
    let sdp = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 40000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n";
    estuary_conformance::uac::invite(caller, core, "alice", n, Some(sdp), Duration::from_secs(15)).0.status()
}

/// Calls alice from the core while the browser refuses the INVITE it gets with 486: returns
/// the status the core's caller saw.
async fn busy_call(caller: &UdpSocket, core: SocketAddr, browser: &mut WsSipClient, n: u32, logs: impl Fn() -> String) -> u16 {
    let caller = caller.try_clone().unwrap();
    let call = tokio::task::spawn_blocking(move || call_alice(&caller, core, n));
    let invite = browser.maybe_wait_for(Duration::from_secs(10), |m| m.is_request() && m.method() == "INVITE").await;
    let invite = invite.unwrap_or_else(|| panic!("call {n}: no INVITE reached the browser:\n{}\n{}", browser.transcript_received(), logs()));
    browser.respond(&invite, 486, "Busy Here", Some("busy"), None).await;
    call.await.unwrap()
}

fn registration(redis: &Redis, token: &str) -> String {
    redis.cli(&["GET", &format!("estuary:reg:{token}")])
}

async fn wait_for(what: &str, limit: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !cond() {
        assert!(Instant::now() < deadline, "{what}: not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registration_survives_its_node_and_the_core_reaches_the_browser_through_any_node() {
    let redis = Redis::start();
    let core = Kamailio::start("cluster_failover");
    let front = SocketAddr::from(([127, 0, 0, 1], free_udp_port()));
    let mut a = node("node-a", core.udp, front, &redis.url()).await;
    let b = node("node-b", core.udp, front, &redis.url()).await;
    let dispatcher = Dispatcher::start_at("cluster_failover", front, &[a.ims_addr, b.ims_addr]);
    let logs = || format!("--- core ---\n{}\n--- dispatcher ---\n{}\n--- node B ---\n{}", core.log(), dispatcher.log(), b.log());
    let caller = UdpSocket::bind("127.0.0.1:0").unwrap();
    caller.set_read_timeout(Some(Duration::from_millis(500))).unwrap();

    // Alice registers on node A; the core holds the front in her binding's Path and Contact.
    let mut browser = WsSipClient::connect(a.ws_addr, "alice", "ims.test", "x").await;
    let fin = browser.register(600, DEFAULT_WAIT).await.pop().unwrap();
    assert_eq!(fin.status(), 200, "{}", browser.transcript());
    let registered = core.log();
    assert!(registered.contains("ROUTE REGISTER"), "{registered}");
    let keys = redis.cli(&["--scan", "--pattern", "estuary:reg:*"]);
    let token = keys.trim().rsplit(':').next().unwrap_or_default().to_owned();
    assert!(!token.is_empty(), "the registration is in Redis: {keys:?}");
    wait_for("node A's registration in Redis", DEFAULT_WAIT, || registration(&redis, &token).contains("\"node\":\"node-a\"")).await;

    // The core's calls reach alice on A whichever node the dispatcher picks (round robin):
    // node B proxies its share to node A.
    for n in 0..2 {
        assert_eq!(busy_call(&caller, core.udp, &mut browser, n, logs).await, 486, "call {n}:\n{}", dispatcher.log());
    }
    assert_eq!(b.metric("estuary_cluster_proxied_total"), Some(1.0), "one of the two went through node B:\n{}", dispatcher.log());
    assert_eq!(a.metric("estuary_cluster_proxied_total"), Some(0.0));

    // Node A dies. Once its presence runs out (2 s) the core's calls get 480: the browser
    // is registered but holds no connection to a live node.
    a.signal("KILL");
    assert!(a.wait_exit(Duration::from_secs(5)).await.is_some());
    wait_for("node A's presence gone", Duration::from_secs(6), || redis.cli(&["EXISTS", "estuary:node:node-a"]).trim() == "0").await;
    // (The dispatcher may try dead A first; its failure route then moves the INVITE on.)
    let status = tokio::task::block_in_place(|| call_alice(&caller, core.udp, 10));
    assert_eq!(status, 480, "{}", b.log());

    // The browser reconnects to node B and refreshes its registration (JsSIP's same REGISTER
    // dialog): node B takes it over as the same binding.
    let mut browser = browser.reconnect(b.ws_addr).await;
    let fin = browser.register(600, DEFAULT_WAIT).await.pop().unwrap();
    assert_eq!(fin.status(), 200, "{}", browser.transcript());
    assert_eq!(b.metric("estuary_cluster_registrations_adopted_total"), Some(1.0), "{}", b.log());
    wait_for("the registration now node B's, same token", DEFAULT_WAIT, || registration(&redis, &token).contains("\"node\":\"node-b\"")).await;
    assert_eq!(redis.cli(&["--scan", "--pattern", "estuary:reg:*"]).trim().lines().count(), 1, "one binding, not a second");

    // The core's next call reaches alice on node B.
    assert_eq!(busy_call(&caller, core.udp, &mut browser, 11, logs).await, 486, "{}\n{}", b.log(), dispatcher.log());
}
