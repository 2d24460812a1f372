//! Checks of the harness itself against sipp, without the gateway: the digest the test
//! browser computes is the one sipp's registrar verifies, and a wrong one is refused. If
//! these fail, the gateway tests' verdicts mean nothing.

use std::time::Duration;

use estuary_conformance::digest;
use estuary_conformance::msg::SipMsg;
use estuary_conformance::net::free_udp_port;
use estuary_conformance::sipp::Sipp;
use estuary_conformance::ws_client::random_token;
use tokio::net::UdpSocket;

/// Send `msg` and wait for a final answer, retransmitting as a UDP client transaction does
/// (RFC 3261 Timer E: 500 ms doubling to 4 s) for up to 8 s. A lost datagram or a slow sipp
/// start on a loaded machine must not decide the verdict; sipp absorbs the retransmissions.
async fn transact(sock: &UdpSocket, target: &str, msg: &SipMsg) -> Option<SipMsg> {
    let wire = msg.to_wire();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(8);
    let mut interval = Duration::from_millis(500);
    let mut buf = vec![0u8; 65535];
    while tokio::time::Instant::now() < deadline {
        sock.send_to(wire.as_bytes(), target).await.unwrap();
        let until = (tokio::time::Instant::now() + interval).min(deadline);
        while let Ok(r) = tokio::time::timeout_at(until, sock.recv(&mut buf)).await {
            let n = r.unwrap();
            let m = SipMsg::parse(&String::from_utf8_lossy(&buf[..n])).unwrap();
            if m.status() >= 200 {
                return Some(m);
            }
        }
        interval = (interval * 2).min(Duration::from_secs(4));
    }
    None
}

async fn register_over_udp(password: &str) -> (SipMsg, SipMsg, estuary_conformance::SippRun) {
    let port = free_udp_port();
    let sipp = Sipp::uas("registrar.xml", port)
        .timeout(Duration::from_secs(15))
        .start()
        .await;
    let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let me = sock.local_addr().unwrap();
    let call_id = random_token(16);
    let make = |cseq: u32, auth: Option<String>| {
        let mut m = SipMsg::request("REGISTER", "sip:ims.test");
        m.push_header(
            "Via",
            format!("SIP/2.0/UDP {me};branch=z9hG4bK{}", random_token(10)),
        );
        m.push_header("Max-Forwards", "70");
        m.push_header("From", "<sip:alice@ims.test>;tag=harness1");
        m.push_header("To", "<sip:alice@ims.test>");
        m.push_header("Call-ID", call_id.clone());
        m.push_header("CSeq", format!("{cseq} REGISTER"));
        m.push_header("Contact", format!("<sip:harness@{me}>;expires=600"));
        m.push_header("Path", "<sip:harness@127.0.0.1;lr>");
        if let Some(a) = auth {
            m.push_header("Authorization", a);
        }
        m
    };
    let target = format!("127.0.0.1:{port}");
    let Some(challenge) = transact(&sock, &target, &make(1, None)).await else {
        panic!("no answer from sipp registrar\n{}", sipp.stop().await.describe());
    };
    assert_eq!(challenge.status(), 401, "{challenge}");
    let www = challenge
        .header("WWW-Authenticate")
        .expect("WWW-Authenticate")
        .to_owned();
    let auth = digest::authorization(
        &www,
        "REGISTER",
        "sip:ims.test",
        "alice",
        password,
        "0a4f113b",
        1,
    )
    .unwrap();
    let Some(fin) = transact(&sock, &target, &make(2, Some(auth))).await else {
        panic!("no answer to the credentials\n{}", sipp.stop().await.describe());
    };
    let run = sipp.wait().await;
    (challenge, fin, run)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn harness_digest_is_accepted_by_sipp_registrar() {
    let (challenge, fin, run) = register_over_udp("secret").await;
    let www = challenge.header("WWW-Authenticate").unwrap();
    assert!(
        www.contains("qop=\"auth\"") && www.contains("realm=\"ims.test\""),
        "{www}"
    );
    assert_eq!(
        fin.status(),
        200,
        "sipp refused our digest: {fin}\n{}",
        run.describe()
    );
    assert!(
        fin.header("Contact")
            .is_some_and(|c| c.contains("sip:harness@")),
        "{fin}"
    );
    assert!(fin.header("Service-Route").is_some(), "{fin}");
    run.assert_success();
    // The log holds all four messages, in order.
    let kinds: Vec<String> = run
        .messages
        .iter()
        .filter_map(|m| m.msg.as_ref())
        .map(|m| {
            if m.is_request() {
                m.method()
            } else {
                m.status().to_string()
            }
        })
        .collect();
    assert_eq!(
        kinds,
        ["REGISTER", "401", "REGISTER", "200"],
        "{}",
        run.describe()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn harness_wrong_digest_is_refused_by_sipp_registrar() {
    let (_, fin, _run) = register_over_udp("not-the-password").await;
    assert_eq!(fin.status(), 403, "{fin}");
}
