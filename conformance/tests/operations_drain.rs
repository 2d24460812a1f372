//! Draining for a graceful stop or upgrade: SIGTERM or `estuary drain` makes the daemon
//! refuse new calls (503 with Retry-After) and the dispatcher's OPTIONS probes, say
//! "draining" on /healthz so the fronts move traffic away, and keep the calls in progress
//! until they end (then it exits 0) or `admin.drain_timeout_s` passes (then it ends them with
//! BYE and exits 0).
//!
//! Needs `sipp` and `cargo build -p estuary` (see conformance/src/lib.rs).

use std::net::UdpSocket;
use std::time::{Duration, Instant};

use estuary_conformance::flows::{Registered, Setup};
use estuary_conformance::msg::SipMsg;
use estuary_conformance::ws_client::{webrtc_offer, Dialog, DEFAULT_WAIT};

/// A browser call to sipp, answered and acknowledged.
async fn answered_call(reg: &mut Registered) -> Dialog {
    let mut d = reg.client.invite("sip:bob@ims.test", &webrtc_offer(40000)).await;
    let (_, ok) = reg.client.wait_final(&d.invite, DEFAULT_WAIT).await;
    assert_eq!(ok.status(), 200, "call not answered:\n{}", reg.client.transcript());
    d.update_from_response(&ok);
    reg.client.ack(&mut d).await;
    d
}

/// /healthz as (status, body).
fn health(s: &Setup) -> (u16, String) {
    s.gw.http_get("/healthz").expect("admin listener answers")
}

async fn wait_health(s: &Setup, status: u16) -> (u16, String) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let h = health(s);
        if h.0 == status || Instant::now() > deadline {
            return h;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// An OPTIONS to the gateway itself on its IMS listener, as Kamailio's dispatcher probes;
/// the response.
fn probe(s: &Setup) -> SipMsg {
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    let local = sock.local_addr().unwrap();
    let ims = s.gw.ims_addr;
    let options = format!(
        "OPTIONS sip:{ims} SIP/2.0\r\nVia: SIP/2.0/UDP {local};branch=z9hG4bKdrainprobe{}\r\nMax-Forwards: 70\r\nTo: <sip:{ims}>\r\nFrom: <sip:dispatcher@ims.test>;tag=d1\r\nCall-ID: probe-{}@{local}\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n",
        local.port(),
        local.port()
    );
    sock.send_to(options.as_bytes(), ims).unwrap();
    let mut buf = [0u8; 4096];
    let (n, _) = sock.recv_from(&mut buf).expect("the gateway answers the probe");
    SipMsg::parse(&String::from_utf8_lossy(&buf[..n])).expect("a SIP response")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_refuses_new_calls_keeps_the_call_in_progress_and_exits_after_it() {
    let mut s = Setup::start(|b| b.set("admin.drain_timeout_s", "60")).await;
    let mut reg = s.register().await;
    let sipp = s.uas("uas_answer_wait_bye.xml").await;
    let mut d = answered_call(&mut reg).await;
    assert_eq!(health(&s).0, 200);
    assert_eq!(probe(&s).status(), 200, "a live node answers the dispatcher's probe");

    s.gw.signal("TERM");
    let (status, body) = wait_health(&s, 503).await;
    assert_eq!((status, body.trim()), (503, "draining"), "/healthz tells the load balancer");
    let refused = probe(&s);
    assert_eq!(refused.status(), 503, "the dispatcher's probe: {refused}");
    // A new call: 503 with Retry-After, and nothing reaches the core.
    let second = reg.client.invite("sip:bob@ims.test", &webrtc_offer(40002)).await;
    let (_, resp) = reg.client.wait_final(&second.invite, DEFAULT_WAIT).await;
    assert_eq!(resp.status(), 503, "{}", reg.client.transcript());
    assert!(resp.header("Retry-After").is_some(), "503 with Retry-After: {resp}");
    reg.client.ack_non2xx(&second.invite, &resp).await;
    // The call in progress goes on: the process waits for it.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(s.gw.is_running(), "still draining while a call is up");

    let bye = reg.client.bye(&mut d).await;
    assert_eq!(reg.client.wait_response(&bye, DEFAULT_WAIT).await.status(), 200, "{}", reg.client.transcript());
    let run = sipp.wait().await;
    run.assert_success();
    assert_eq!(run.received_requests("INVITE").len(), 1, "the refused call never reached the core: {}", run.describe());
    let exit = s.gw.wait_exit(Duration::from_secs(10)).await;
    assert!(exit.is_some_and(|e| e.success()), "exit 0 once the call ended: {exit:?}\n{}", s.gw.log_tail(30));
    assert!(s.gw.log().contains("drained: no call left"), "{}", s.gw.log_tail(30));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn estuary_drain_ends_the_calls_left_at_the_drain_timeout_and_exits_0() {
    let mut s = Setup::start(|b| b.set("admin.drain_timeout_s", "1")).await;
    let mut reg = s.register().await;
    let sipp = s.uas("uas_answer_wait_bye.xml").await;
    let _d = answered_call(&mut reg).await;

    let out = std::process::Command::new(estuary_conformance::gateway::estuary_binary())
        .args(["drain", "--admin", &s.gw.admin_addr.to_string()])
        .output()
        .expect("estuary drain runs");
    assert!(out.status.success(), "estuary drain: {}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("draining"));
    let started = Instant::now();
    let exit = s.gw.wait_exit(Duration::from_secs(15)).await;
    assert!(exit.is_some_and(|e| e.success()), "exit 0 after the drain timeout: {exit:?}\n{}", s.gw.log_tail(30));
    assert!(started.elapsed() >= Duration::from_millis(900), "not before admin.drain_timeout_s: {:?}", started.elapsed());
    assert!(s.gw.log().contains("drain timeout"), "{}", s.gw.log_tail(30));
    // The call left was ended toward the core with BYE.
    let run = sipp.wait().await;
    assert_eq!(run.received_requests("BYE").len(), 1, "{}", run.describe());
}
