//! SIP over TLS toward the core, with Kamailio as the core (its registrar keeps the Path the
//! gateway inserts and routes calls through it): two browsers register through the gateway,
//! whose every request reaches Kamailio over TLS after checking its certificate against
//! `ims.tls_ca`; alice calls bob, Kamailio sends the INVITE back through bob's Path to the
//! gateway's own TLS listener, bob answers, alice hangs up. A gateway that does not trust the
//! core's certificate must refuse to talk to it.
//!
//! Needs `kamailio` and `kamailio-tls-modules` (make deps), openssl, and `cargo build -p estuary`.

use estuary_conformance::gateway::Gateway;
use estuary_conformance::kamailio::Kamailio;
use estuary_conformance::ws_client::{assert_webrtc_sdp, webrtc_answer, webrtc_offer, WsSipClient, DEFAULT_WAIT};

async fn gateway(k: &Kamailio, ca: &std::path::Path) -> Gateway {
    Gateway::builder()
        .set("ims.next_hop", &format!("sip:{};transport=tls", k.tls))
        .set("ims.tls_listen", "127.0.0.1:0")
        .set("ims.tls_ca", &ca.to_string_lossy())
        .start()
        .await
}

async fn registered(gw: &Gateway, user: &str) -> WsSipClient {
    let mut c = WsSipClient::connect(gw.ws_addr, user, "ims.test", "secret").await;
    let responses = c.register(600, DEFAULT_WAIT).await;
    assert_eq!(responses.last().map(|r| r.status()), Some(200), "{user} registers through Kamailio:\n{}\n--- daemon\n{}", c.transcript(), gw.log_tail(40));
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_browsers_call_each_other_through_kamailio_over_tls() {
    let k = tokio::task::block_in_place(|| Kamailio::start("calls"));
    let gw = gateway(&k, &k.ca).await;
    let tls_listener = gw.ims_tls_addr.expect("the daemon reports ims.tls_listen");
    let mut alice = registered(&gw, "alice").await;
    let mut bob = registered(&gw, "bob").await;

    let mut d = alice.invite("sip:bob@ims.test", &webrtc_offer(40010)).await;
    let inv = bob.wait_request("INVITE", DEFAULT_WAIT).await;
    assert_webrtc_sdp(&inv.body, "the offer bob gets, back from the core");
    let _bob_dialog = bob.answer(&inv, &webrtc_answer(&inv.body, 40020)).await;
    let (_, ok) = alice.wait_final(&d.invite, DEFAULT_WAIT).await;
    assert_eq!(ok.status(), 200, "{}\n--- kamailio\n{}\n--- daemon\n{}", alice.transcript(), k.log(), gw.log_tail(60));
    assert_webrtc_sdp(&ok.body, "bob's answer, back at alice");
    d.update_from_response(&ok);
    alice.ack(&mut d).await;
    bob.wait_request("ACK", DEFAULT_WAIT).await;
    let bye = alice.bye(&mut d).await;
    bob.answer_bye(DEFAULT_WAIT).await;
    assert_eq!(alice.wait_response(&bye, DEFAULT_WAIT).await.status(), 200);

    // Kamailio saw every request over TLS: both REGISTERs, the INVITE from alice's side
    // (record-routed, so the ACK and BYE came through it too), and it sent the INVITE to
    // bob through the Path, i.e. to the gateway's TLS listener.
    let log = k.log();
    let routed = |method: &str| log.lines().filter(|l| l.contains(&format!("ROUTE {method} "))).map(str::to_owned).collect::<Vec<_>>();
    assert_eq!(routed("REGISTER").len(), 2, "{log}");
    for method in ["REGISTER", "INVITE", "ACK", "BYE"] {
        let lines = routed(method);
        assert!(!lines.is_empty() && lines.iter().all(|l| l.ends_with("over tls")), "{method} over TLS: {lines:?}\n{log}");
    }
    assert!(routed("INVITE").iter().any(|l| l.contains("sip:bob@ims.test")), "{log}");
    // Bob sees the gateway only: neither Kamailio's address nor its Record-Route.
    let kamailio_port = k.tls.port().to_string();
    assert!(!inv.to_string().contains(&kamailio_port) && inv.header("Record-Route").is_none(), "topology hidden from bob: {inv}");
    assert_ne!(tls_listener.port(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_core_certificate_from_an_untrusted_ca_is_refused() {
    let k = tokio::task::block_in_place(|| Kamailio::start("untrusted"));
    let other = tokio::task::block_in_place(|| k.unrelated_ca());
    let gw = gateway(&k, &other).await;
    let mut alice = WsSipClient::connect(gw.ws_addr, "alice", "ims.test", "secret").await;
    let responses = alice.register(600, DEFAULT_WAIT).await;
    let last = responses.last().expect("a response");
    assert_eq!(last.status(), 503, "the core is unreachable when its certificate is not trusted:\n{}", alice.transcript());
    assert!(!k.log().contains("ROUTE REGISTER"), "no request reached Kamailio:\n{}", k.log());
    // The daemon says why (its log arrives through a pipe: give it a moment).
    let mut said = false;
    for _ in 0..40 {
        said = gw.log().contains("IMS TLS handshake failed");
        if said {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(said, "{}", gw.log_tail(30));
}
