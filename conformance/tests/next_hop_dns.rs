//! The IMS next hop as a domain (RFC 3263): a real name server (dnsmasq) serves NAPTR and SRV
//! records for ims.test with two targets, each a sipp callee. Calls go to the first by
//! priority; once it is gone, the next call fails over to the second at once (its INVITE
//! moves when the first is unreachable) and the first is marked down.
//!
//! Needs dnsmasq and sipp (make deps) and `cargo build -p estuary`: a missing tool fails.

use estuary_conformance::dnsmasq::Dnsmasq;
use estuary_conformance::gateway::Gateway;
use estuary_conformance::net::free_udp_port;
use estuary_conformance::sipp::Sipp;
use estuary_conformance::ws_client::{webrtc_offer, WsSipClient, DEFAULT_WAIT};

async fn call(client: &mut WsSipClient, port: u16) -> u16 {
    let mut d = client.invite("sip:bob@ims.test", &webrtc_offer(port)).await;
    let (_, resp) = client.wait_final(&d.invite, DEFAULT_WAIT).await;
    if resp.status() == 200 {
        d.update_from_response(&resp);
        client.ack(&mut d).await;
        let bye = client.bye(&mut d).await;
        assert_eq!(client.wait_response(&bye, DEFAULT_WAIT).await.status(), 200, "{}", client.transcript());
    }
    resp.status()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_follow_naptr_and_srv_and_fail_over_when_the_first_target_goes() {
    Dnsmasq::require();
    let (first, second) = (free_udp_port(), free_udp_port());
    let dns = Dnsmasq::start(&[
        "--naptr-record=ims.test,10,50,S,SIP+D2U,,_sip._udp.ims.test".into(),
        format!("--srv-host=_sip._udp.ims.test,core1.ims.test,{first},10,50"),
        format!("--srv-host=_sip._udp.ims.test,core2.ims.test,{second},20,50"),
        "--host-record=core1.ims.test,127.0.0.1".into(),
        "--host-record=core2.ims.test,127.0.0.1".into(),
    ]);
    let gw = Gateway::builder()
        .set("ims.next_hop", "sip:ims.test")
        .set("ims.dns_servers", &dns.addr.to_string())
        .set("ims.next_hop_probe_s", "1")
        .set("registrar.require_registration", "false")
        .start()
        .await;
    let up = |gw: &Gateway, port: u16| gw.metric(&format!("estuary_ims_next_hop_up{{target=\"127.0.0.1:{port}\"}}"));
    assert_eq!((up(&gw, first), up(&gw, second)), (Some(1.0), Some(1.0)), "both SRV targets known:\n{}", gw.log_tail(20));

    // The first target by priority takes the first call.
    let core1 = Sipp::uas("uas_answer_wait_bye.xml", first).start().await;
    let mut client = WsSipClient::connect(gw.ws_addr, "alice", "ims.test", "x").await;
    assert_eq!(call(&mut client, 40000).await, 200, "{}", client.transcript());
    let run = core1.wait().await;
    run.assert_success();
    // core1 is gone now. The next call still gets through, to core2.
    let core2 = Sipp::uas("uas_answer_wait_bye.xml", second).start().await;
    assert_eq!(call(&mut client, 40002).await, 200, "the call fails over to the second target\n{}\n{}", client.transcript(), gw.log_tail(30));
    let run2 = core2.wait().await;
    run2.assert_success();
    assert_eq!(run2.received_requests("INVITE").len(), 1, "{}", run2.describe());
    assert_eq!(up(&gw, first), Some(0.0), "the first target is down until it answers a probe");
    assert!(gw.metric("estuary_ims_next_hop_failures_total").is_some_and(|v| v >= 1.0));
    drop(dns);
}

