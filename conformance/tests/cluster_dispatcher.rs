//! Two Estuary nodes behind Kamailio's dispatcher, run from the configuration the repository
//! ships (etc/cluster/kamailio-dispatcher.cfg): new calls from the core are spread over both;
//! a node that drains answers the dispatcher's probes 503 and is taken out, so new calls go
//! to the other node while its own call goes on; when that call ends it exits 0.
//!
//! Needs kamailio and sipp (make deps) and `cargo build -p estuary`.

use std::net::{SocketAddr, UdpSocket};
use std::time::Duration;

use estuary_conformance::gateway::Gateway;
use estuary_conformance::kamailio::Dispatcher;
use estuary_conformance::net::free_udp_port;
use estuary_conformance::sipp::Sipp;
use estuary_conformance::ws_client::{webrtc_offer, WsSipClient, DEFAULT_WAIT};

async fn node(name: &str, sipp_port: u16) -> Gateway {
    Gateway::builder()
        .next_hop_udp(sipp_port)
        .set("sip.user_agent", &format!("Estuary {name}"))
        .set("registrar.require_registration", "false")
        .set("admin.drain_timeout_s", "60")
        .start()
        .await
}

/// The core places a call through the dispatcher to a user no node has registered: the
/// node that gets it answers 404. Returns (the Server header of the final response, Call-ID).
fn core_call(core: &UdpSocket, dispatcher: SocketAddr, n: u32) -> (String, String) {
    let (m, call_id) = estuary_conformance::uac::invite(core, dispatcher, "nobody", n, None, Duration::from_secs(10));
    (m.header("Server").unwrap_or_default().to_owned(), call_id)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dispatcher_spreads_calls_and_takes_a_draining_node_out_while_its_call_goes_on() {
    let (sipp_a, sipp_b) = (free_udp_port(), free_udp_port());
    let mut a = node("node-a", sipp_a).await;
    let b = node("node-b", sipp_b).await;
    let dispatcher = Dispatcher::start("cluster_dispatcher", &[a.ims_addr, b.ims_addr]);
    let core = UdpSocket::bind("127.0.0.1:0").unwrap();
    core.set_read_timeout(Some(Duration::from_millis(500))).unwrap();

    // Both nodes take new calls (round robin).
    let servers: Vec<String> = (0..4).map(|n| tokio::task::block_in_place(|| core_call(&core, dispatcher.udp, n)).0).collect();
    assert!(servers.iter().any(|s| s.contains("node-a")) && servers.iter().any(|s| s.contains("node-b")), "both nodes answered: {servers:?}\n{}", dispatcher.log());

    // Node A carries a browser's call to its core (sipp) when it starts draining.
    let callee = Sipp::uas("uas_answer_wait_bye.xml", sipp_a).start().await;
    let mut browser = WsSipClient::connect(a.ws_addr, "alice", "ims.test", "x").await;
    let mut d = browser.invite("sip:bob@ims.test", &webrtc_offer(40000)).await;
    let (_, ok) = browser.wait_final(&d.invite, DEFAULT_WAIT).await;
    assert_eq!(ok.status(), 200, "{}", browser.transcript());
    d.update_from_response(&ok);
    browser.ack(&mut d).await;
    a.signal("TERM");
    // Two probe intervals (2 s each) and a margin: the dispatcher has seen A's 503.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let log_before = dispatcher.log().len();
    let after: Vec<(String, String)> = (10..14).map(|n| tokio::task::block_in_place(|| core_call(&core, dispatcher.udp, n))).collect();
    for (server, _) in &after {
        assert!(server.contains("node-b"), "new calls go to node B: {after:?}\n{}", dispatcher.log());
    }
    let log = dispatcher.log()[log_before..].to_owned();
    assert!(
        !log.lines().any(|l| l.contains("DISPATCH INVITE") && l.contains(&a.ims_addr.to_string())),
        "the dispatcher no longer tries node A first (its probes got 503):\n{log}"
    );
    assert!(a.is_running(), "node A still carries its call");
    // The call on A goes on and ends normally; then A exits 0.
    let bye = browser.bye(&mut d).await;
    assert_eq!(browser.wait_response(&bye, DEFAULT_WAIT).await.status(), 200, "{}", browser.transcript());
    callee.wait().await.assert_success();
    let exit = a.wait_exit(Duration::from_secs(10)).await;
    assert!(exit.is_some_and(|e| e.success()), "node A exits 0 once drained: {exit:?}");
    drop(b);
}
