//! IMS-originated calls to a registered browser: sipp plays the S-CSCF delivering a call
//! to the Contact the gateway registered, through the Path it inserted (RFC 3327). The
//! browser answers (180, 200); then IMS or the browser hangs up.
//!
//! Needs `sipp` and `cargo build -p estuary` (see conformance/src/lib.rs).

use std::time::Duration;

use estuary_conformance::flows::{finish, Registered, Setup};
use estuary_conformance::leak::{assert_no_leaks, ImsSide};
use estuary_conformance::msg::{addr_uri, uri_hostport, SipMsg};
use estuary_conformance::net::free_udp_port;
use estuary_conformance::sipp::{Sipp, SippRun};
use estuary_conformance::ws_client::{webrtc_answer, Dialog, DEFAULT_WAIT};

async fn start_caller(s: &Setup, reg: &Registered, scenario: &str) -> Sipp {
    Sipp::uac(scenario, free_udp_port(), s.gw.ims_addr)
        .key("target", &reg.gateway_contact)
        .key("route", &reg.path)
        .timeout(Duration::from_secs(30))
        .start()
        .await
}

/// Wait for the incoming INVITE, check it, answer it (180, 200) and wait for the ACK.
/// The browser answers the gateway's WebRTC offer (setup:active, G.711); returns the INVITE,
/// the dialog, the ACK and the answer it sent (its host candidate on `port`).
async fn answer_incoming(reg: &mut Registered, port: u16) -> (SipMsg, Dialog, SipMsg, String) {
    let inv = reg.client.wait_request("INVITE", DEFAULT_WAIT).await;
    assert_eq!(
        inv.uri(),
        reg.client.contact_uri(),
        "Request-URI is the browser's registered Contact: {inv}"
    );
    let via = inv.header_values("Via");
    assert_eq!(
        via.len(),
        1,
        "only the gateway's Via toward the browser: {inv}"
    );
    assert!(via[0].starts_with("SIP/2.0/WS"), "{inv}");
    assert!(
        inv.header("From")
            .is_some_and(|f| f.contains("sip:bob@ims.test")),
        "caller identity kept: {inv}"
    );
    assert!(
        inv.header("To")
            .is_some_and(|f| f.contains("sip:alice@ims.test")),
        "{inv}"
    );
    assert!(inv.to_tag().is_none(), "{inv}");
    // sipp's RTP/AVP offer arrives in WebRTC form (the SDP engine's golden cases pin the
    // details): ICE-lite, DTLS actpass, BUNDLE, rtcp-mux, its G.711 codecs.
    for want in ["a=ice-lite", "a=setup:actpass", "a=fingerprint:sha-256 ", "a=group:BUNDLE 0", "UDP/TLS/RTP/SAVPF 0 8"] {
        assert!(inv.body.contains(want), "{want} missing in the offer to the browser: {inv}");
    }
    assert!(!inv.body.contains("sipp-offer"), "the IMS SDP is not passed through: {inv}");
    let answer = webrtc_answer(&inv.body, port);
    let d = reg.client.answer(&inv, &answer).await;
    let ack = reg.client.wait_request("ACK", DEFAULT_WAIT).await;
    assert_eq!(ack.call_id(), inv.call_id(), "{ack}");
    assert_eq!(
        ack.to_tag().as_deref(),
        Some(d.local_tag.as_str()),
        "ACK in the browser's dialog: {ack}"
    );
    assert_eq!(ack.from_tag(), inv.from_tag(), "{ack}");
    (inv, d, ack, answer)
}

/// Both legs of an IMS-originated call that was answered.
fn check_ims_leg(s: &Setup, run: &SippRun, inv_at_browser: &SipMsg, answer: &str) {
    let ims = s.gw.ims_addr.to_string();
    let sipp_inv = run
        .sent()
        .into_iter()
        .find(|m| m.method() == "INVITE" && m.is_request())
        .expect("sipp INVITE");
    assert_ne!(inv_at_browser.body, sipp_inv.body, "offer rewritten for the browser");
    assert_ne!(
        inv_at_browser.call_id(),
        sipp_inv.call_id(),
        "new Call-ID on the web leg"
    );
    assert_ne!(
        inv_at_browser.from_tag(),
        sipp_inv.from_tag(),
        "new From tag on the web leg"
    );
    let ok = run
        .received_responses("INVITE")
        .into_iter()
        .find(|r| r.status() == 200)
        .unwrap_or_else(|| panic!("sipp got no 200: {}", run.describe()));
    // The browser's answer reaches IMS in IMS form: RTP/AVP on a gateway port, no WebRTC.
    assert!(ok.body.contains("RTP/AVP 0"), "answer in IMS form: {ok}");
    for webrtc in ["ice-", "fingerprint", "setup:", "candidate", "SAVPF", "BUNDLE"] {
        assert!(!ok.body.contains(webrtc), "{webrtc} reached IMS: {ok}");
    }
    let port = answer
        .lines()
        .find_map(|l| l.strip_prefix("m=audio "))
        .and_then(|m| m.split(' ').next())
        .unwrap_or_default();
    assert!(!ok.body.contains(&format!(" {port} ")), "the browser's port reached IMS: {ok}");
    assert_eq!(ok.call_id(), sipp_inv.call_id());
    assert!(ok.to_tag().is_some(), "{ok}");
    let contact = ok.contact_uri().expect("200 Contact");
    assert_eq!(
        uri_hostport(&contact),
        ims,
        "IMS sees the gateway's Contact: {ok}"
    );
    assert_eq!(ok.header_values("Via").len(), 1, "{ok}");
    let rings: Vec<_> = run
        .received_responses("INVITE")
        .into_iter()
        .filter(|r| r.status() == 180)
        .collect();
    assert_eq!(rings.len(), 1, "180 relayed to IMS: {}", run.describe());
    assert_eq!(rings[0].to_tag(), ok.to_tag(), "180 and 200 in one dialog");
}

/// RFC 3261 §12.1.1: the UAS of the IMS dialog (the gateway) MUST copy the INVITE's
/// Record-Route values, in order, into its 18x/2xx, or the caller's route set misses the
/// proxies (S-CSCF) that asked to stay on the path. Checked last in each test, so that a
/// failure here does not hide the other checks.
fn check_record_route_echoed(run: &SippRun) {
    let sipp_inv = run
        .sent()
        .into_iter()
        .find(|m| m.method() == "INVITE" && m.is_request())
        .expect("sipp INVITE");
    let rr = sipp_inv.header_values("Record-Route");
    assert!(
        !rr.is_empty(),
        "the scenario's INVITE carries a Record-Route"
    );
    for resp in run
        .received_responses("INVITE")
        .into_iter()
        .filter(|r| r.status() > 100 && r.status() < 300)
    {
        assert_eq!(
            resp.header_values("Record-Route"),
            rr,
            "the gateway's {} to the IMS caller must echo the INVITE's Record-Route \
             (RFC 3261 §12.1.1):\n{resp}",
            resp.status()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ims_calls_browser_then_ims_hangs_up() {
    let s = Setup::start(|b| b).await;
    let mut reg = s.register().await;
    assert!(
        addr_uri(&reg.path).contains(&s.gw.ims_addr.to_string()),
        "{}",
        reg.path
    );
    let sipp = start_caller(&s, &reg, "uac_call_browser.xml").await;
    let (inv, d, _ack, answer) = answer_incoming(&mut reg, 40020).await;
    let bye = reg.client.answer_bye(DEFAULT_WAIT).await;
    let run = finish(sipp, &reg.client, &s.gw).await;

    check_ims_leg(&s, &run, &inv, &answer);
    assert_eq!(bye.call_id(), d.call_id, "{bye}");
    assert_eq!(bye.to_tag().as_deref(), Some(d.local_tag.as_str()), "{bye}");
    assert_eq!(bye.from_tag(), d.remote_tag, "{bye}");
    assert_eq!(
        bye.uri(),
        reg.client.contact_uri(),
        "BYE to the browser's Contact: {bye}"
    );
    let bye_ok = run.received_responses("BYE");
    assert_eq!(
        bye_ok.first().map(|r| r.status()),
        Some(200),
        "{}",
        run.describe()
    );
    let registrar = reg.registrar.as_ref().unwrap();
    assert_no_leaks(&reg.client, &ImsSide::new().run(registrar).run(&run));
    check_record_route_echoed(&run);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ims_calls_browser_then_browser_hangs_up() {
    let s = Setup::start(|b| b).await;
    let mut reg = s.register().await;
    let sipp = start_caller(&s, &reg, "uac_call_browser_wait_bye.xml").await;
    let (inv, mut d, _ack, answer) = answer_incoming(&mut reg, 40022).await;
    let bye = reg.client.bye(&mut d).await;
    assert_eq!(
        bye.uri(),
        inv.contact_uri().unwrap(),
        "in-dialog requests go to the gateway's Contact"
    );
    let bye_ok = reg.client.wait_response(&bye, DEFAULT_WAIT).await;
    assert_eq!(bye_ok.status(), 200, "{}", reg.client.transcript());
    let run = finish(sipp, &reg.client, &s.gw).await;

    check_ims_leg(&s, &run, &inv, &answer);
    let byes = run.received_requests("BYE");
    assert_eq!(byes.len(), 1, "{}", run.describe());
    let b = byes[0];
    let sipp_inv = run
        .sent()
        .into_iter()
        .find(|m| m.method() == "INVITE" && m.is_request())
        .unwrap();
    let ok = run
        .received_responses("INVITE")
        .into_iter()
        .find(|r| r.status() == 200)
        .unwrap();
    assert_eq!(
        b.call_id(),
        sipp_inv.call_id(),
        "BYE in the IMS dialog: {b}"
    );
    assert_eq!(
        b.to_tag(),
        sipp_inv.from_tag(),
        "From/To swapped for the callee's BYE: {b}"
    );
    assert_eq!(b.from_tag(), ok.to_tag(), "{b}");
    assert_eq!(
        Some(b.uri().to_owned()),
        sipp_inv.contact_uri(),
        "BYE to the caller's Contact: {b}"
    );
    assert_eq!(
        b.header_values("Route"),
        sipp_inv.header_values("Record-Route"),
        "the callee's route set is the INVITE's Record-Route: {b}"
    );
    let registrar = reg.registrar.as_ref().unwrap();
    assert_no_leaks(&reg.client, &ImsSide::new().run(registrar).run(&run));
    check_record_route_echoed(&run);
}
