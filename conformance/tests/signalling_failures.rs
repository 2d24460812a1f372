//! Failures around a call: the IMS next hop is down (503 with Retry-After, over UDP and over
//! TCP) or silent (408 after Timer B), and a browser whose WebSocket drops mid-call (BYE
//! toward IMS).
//!
//! Needs `sipp` and `cargo build -p estuary` (see conformance/src/lib.rs).

use std::time::Duration;

use estuary_conformance::flows::Setup;
use estuary_conformance::leak::{assert_no_leaks, assert_no_leaks_raw, ImsSide};
use estuary_conformance::msg::SipMsg;
use estuary_conformance::net::loopback;
use estuary_conformance::ws_client::{webrtc_offer, WsSipClient};
use tokio::net::UdpSocket;

const CALLEE: &str = "sip:bob@ims.test";

/// A short T1 so that Timer B (64*T1) bounds the no-answer cases to a few seconds.
const T1_MS: &str = "100";
const TIMER_B: Duration = Duration::from_millis(64 * 100);

/// The browser's final response when the IMS next hop cannot be reached: 503 with a
/// Retry-After (RFC 3261 §21.5.4; issue 2 item 7), not the 408 of a silent next hop.
fn check_503(resp: &SipMsg, transcript: &str) {
    assert_eq!(
        resp.status(),
        503,
        "IMS next hop unreachable must give 503 Service Unavailable (RFC 3261 §17.1.4, §18.4), \
         got {} {}:\n{transcript}",
        resp.status(),
        resp.reason()
    );
    let ra = resp
        .header("Retry-After")
        .unwrap_or_else(|| panic!("503 without Retry-After: {resp}"));
    let secs = ra.split([';', '(', ' ']).next().unwrap_or_default().trim();
    assert!(
        secs.parse::<u32>().is_ok(),
        "Retry-After is delta-seconds: {resp}"
    );
}

/// IMS down, UDP: the registrar has exited, so the next hop's UDP port is closed and the
/// kernel answers the INVITE with ICMP port unreachable. RFC 3261 §18.4: that transport error
/// reaches the transaction (the daemon reads it with IP_RECVERR), so the browser gets 503 with
/// Retry-After at once, not 408 after Timer B's 64*T1.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ims_down_udp_invite_gets_503() {
    let s = Setup::start(|b| b.set("sip.t1_ms", T1_MS)).await;
    let mut reg = s.register().await;
    let started = std::time::Instant::now();
    let d = reg
        .client
        .invite(CALLEE, &webrtc_offer(40030))
        .await;
    let (prov, fin) = reg
        .client
        .wait_final(&d.invite, TIMER_B + Duration::from_secs(10))
        .await;
    let elapsed = started.elapsed();
    reg.client.ack_non2xx(&d.invite, &fin).await;

    assert_eq!(
        prov.first().map(|p| p.status()),
        Some(100),
        "{}",
        reg.client.transcript()
    );
    let transcript = format!("(after {elapsed:?}; Timer B is {TIMER_B:?})\n{}", reg.client.transcript());
    check_503(&fin, &transcript);
    // The first transmission draws the ICMP error: well before the first retransmission
    // would have completed its Timer B.
    assert!(elapsed < TIMER_B / 2, "503 only after {elapsed:?}: {transcript}");
    assert!(
        s.gw.metric("estuary_unreachable_total").unwrap_or(0.0) >= 1.0,
        "no ICMP report counted: {}",
        s.gw.log_tail(40)
    );
    assert_eq!(fin.call_id(), d.call_id);
    assert_eq!(fin.top_branch(), d.invite.top_branch());
    // IMS side: what reached IMS before it went down is the registration only.
    let registrar = reg.registrar.as_ref().unwrap();
    assert!(registrar.received_requests("INVITE").is_empty());
    assert_no_leaks(&reg.client, &ImsSide::new().run(registrar));
    assert!(
        matches!(s.gw.http_get("/healthz"), Ok((200, _))),
        "{}",
        s.gw.log_tail(40)
    );
}

/// IMS down, TCP: the registrar (over TCP) has exited; connecting to the next hop is
/// refused, a transport failure -> 503 with Retry-After.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ims_down_tcp_invite_gets_503() {
    let s = Setup::start_tcp(|b| b.set("sip.t1_ms", T1_MS)).await;
    let mut reg = s.register().await;
    let registrar = reg.registrar.as_ref().unwrap();
    assert!(
        registrar.received_requests("REGISTER")[0].header_values("Via")[0]
            .starts_with("SIP/2.0/TCP "),
        "the gateway reaches a transport=tcp next hop over TCP: {}",
        registrar.describe()
    );
    let started = std::time::Instant::now();
    let d = reg
        .client
        .invite(CALLEE, &webrtc_offer(40036))
        .await;
    let (prov, fin) = reg
        .client
        .wait_final(&d.invite, TIMER_B + Duration::from_secs(10))
        .await;
    let elapsed = started.elapsed();
    reg.client.ack_non2xx(&d.invite, &fin).await;

    assert_eq!(
        prov.first().map(|p| p.status()),
        Some(100),
        "{}",
        reg.client.transcript()
    );
    check_503(
        &fin,
        &format!("(after {elapsed:?})\n{}", reg.client.transcript()),
    );
    assert!(
        elapsed < TIMER_B,
        "a refused connection is known at once ({elapsed:?})"
    );
    let registrar = reg.registrar.as_ref().unwrap();
    assert!(registrar.received_requests("INVITE").is_empty());
    assert_no_leaks(&reg.client, &ImsSide::new().run(registrar));
    assert!(
        matches!(s.gw.http_get("/healthz"), Ok((200, _))),
        "{}",
        s.gw.log_tail(40)
    );
}

/// IMS down before the browser registers (TCP next hop, nothing listening): the REGISTER
/// gets 503 with Retry-After.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ims_down_register_gets_503() {
    let s = Setup::start_tcp(|b| b.set("sip.t1_ms", T1_MS)).await;
    let mut client = WsSipClient::connect(s.gw.ws_addr, "alice", "ims.test", "secret").await;
    let req = client.register_request(600);
    client.send(&req).await;
    let (_, fin) = client
        .wait_final(&req, TIMER_B + Duration::from_secs(10))
        .await;
    check_503(&fin, &client.transcript());
    assert_eq!(fin.call_id(), req.call_id());
    assert_eq!(fin.top_branch(), req.top_branch());
    assert!(fin.header("WWW-Authenticate").is_none());
    assert!(
        matches!(s.gw.http_get("/healthz"), Ok((200, _))),
        "{}",
        s.gw.log_tail(40)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ims_silent_invite_gets_408() {
    let s = Setup::start(|b| b.set("sip.t1_ms", T1_MS)).await;
    let mut reg = s.register().await;
    // The next hop now takes datagrams and never answers.
    let hole = UdpSocket::bind(loopback(s.sipp_port))
        .await
        .expect("bind the next-hop port");
    let d = reg
        .client
        .invite(CALLEE, &webrtc_offer(40032))
        .await;
    let (prov, fin) = reg
        .client
        .wait_final(&d.invite, TIMER_B + Duration::from_secs(10))
        .await;
    reg.client.ack_non2xx(&d.invite, &fin).await;

    assert_eq!(
        prov.first().map(|p| p.status()),
        Some(100),
        "{}",
        reg.client.transcript()
    );
    assert_eq!(
        fin.status(),
        408,
        "no answer from IMS -> 408:\n{}",
        reg.client.transcript()
    );
    assert_eq!(fin.call_id(), d.call_id);
    // IMS side: the INVITE arrived and was retransmitted (Timer A) with the same branch.
    let mut seen = Vec::new();
    let mut buf = vec![0u8; 65535];
    while let Ok(Ok(n)) =
        tokio::time::timeout(Duration::from_millis(200), hole.recv(&mut buf)).await
    {
        seen.push(String::from_utf8_lossy(&buf[..n]).into_owned());
    }
    let invites: Vec<SipMsg> = seen
        .iter()
        .filter_map(|t| SipMsg::parse(t).ok())
        .filter(|m| m.method() == "INVITE" && m.is_request())
        .collect();
    assert!(
        invites.len() >= 2,
        "INVITE retransmitted over UDP (Timer A): got {}",
        invites.len()
    );
    assert!(
        invites
            .iter()
            .all(|m| m.top_branch() == invites[0].top_branch()),
        "retransmissions keep the branch"
    );
    let registrar = reg.registrar.as_ref().unwrap();
    let mut ims = ImsSide::new().run(registrar);
    for t in seen {
        ims = ims.received_text(t);
    }
    assert_no_leaks(&reg.client, &ims);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_dropped_mid_call_sends_bye_to_ims() {
    // Keep the binding on close so the IMS callee sees only the call's BYE (the deregister
    // policy has its own test in signalling_register.rs).
    let s = Setup::start(|b| b.set("registrar.on_ws_close", "keep")).await;
    let mut reg = s.register().await;
    let sipp = s.uas("uas_answer_wait_bye.xml").await;
    reg.client.call_answered(CALLEE, &webrtc_offer(40034)).await;
    // Let the ACK reach IMS before the connection goes.
    tokio::time::sleep(Duration::from_millis(300)).await;

    let tokens = reg.client.private_tokens();
    let (_sent, received) = reg.client.drop_connection();
    let run = sipp.wait().await;
    assert!(
        run.succeeded(),
        "IMS never got a BYE after the WebSocket dropped: {}\n--- estuary log ---\n{}",
        run.describe(),
        s.gw.log_tail(60)
    );
    let inv = run.received_requests("INVITE")[0];
    let sipp_200 = run
        .sent()
        .into_iter()
        .find(|m| m.status() == 200 && m.method() == "INVITE")
        .unwrap();
    let byes = run.received_requests("BYE");
    assert_eq!(byes.len(), 1, "{}", run.describe());
    let bye = byes[0];
    assert_eq!(bye.call_id(), inv.call_id(), "{bye}");
    assert_eq!(bye.from_tag(), inv.from_tag(), "{bye}");
    assert_eq!(bye.to_tag(), sipp_200.to_tag(), "{bye}");
    assert_eq!(Some(bye.uri().to_owned()), sipp_200.contact_uri(), "{bye}");
    assert!(
        run.received_requests("ACK").len() == 1,
        "{}",
        run.describe()
    );
    let registrar = reg.registrar.as_ref().unwrap();
    assert_no_leaks_raw(&tokens, &received, &ImsSide::new().run(registrar).run(&run));
    assert!(matches!(s.gw.http_get("/healthz"), Ok((200, _))));
}
