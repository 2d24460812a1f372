//! Browser-originated calls through the gateway to a real IMS-side callee (sipp): answered
//! and ended by either side, and modified with a re-INVITE. Each test checks both legs and
//! that no identifier crosses from one to the other.
//!
//! Needs `sipp` and `cargo build -p estuary` (see conformance/src/lib.rs).

use estuary_conformance::flows::{finish, Setup};
use estuary_conformance::leak::{assert_no_leaks, ImsSide};
use estuary_conformance::msg::{addr_uri, uri_hostport, SipMsg};
use estuary_conformance::net::udp_port_in_use;
use estuary_conformance::ws_client::{assert_ims_sdp, assert_webrtc_sdp, media_port, webrtc_offer, Dialog, WsSipClient, DEFAULT_WAIT};
use estuary_conformance::SippRun;

const CALLEE: &str = "sip:bob@ims.test";

/// Place a call and complete it (INVITE, 100, 180?, 200, ACK). Returns the dialog, the
/// provisional responses and the 200.
async fn call_answered(client: &mut WsSipClient, offer: &str) -> (Dialog, Vec<SipMsg>, SipMsg) {
    let mut d = client.invite(CALLEE, offer).await;
    let (prov, ok) = client.wait_final(&d.invite, DEFAULT_WAIT).await;
    assert_eq!(
        ok.status(),
        200,
        "call not answered:\n{}",
        client.transcript()
    );
    d.update_from_response(&ok);
    client.ack(&mut d).await;
    (d, prov, ok)
}

/// What every answered browser-originated call must show on both legs.
fn check_call_setup(
    s: &Setup,
    client: &WsSipClient,
    d: &Dialog,
    prov: &[SipMsg],
    ok: &SipMsg,
    offer: &str,
    run: &SippRun,
) {
    let ims = s.gw.ims_addr.to_string();
    // Browser leg.
    assert_eq!(
        prov.first().map(SipMsg::status),
        Some(100),
        "100 Trying first: {}",
        client.transcript()
    );
    let sipp_200 = run
        .sent()
        .into_iter()
        .find(|m| m.status() == 200 && m.method() == "INVITE")
        .expect("sipp 200");
    assert_ne!(ok.body, sipp_200.body, "the answer is rewritten");
    assert_webrtc_sdp(&ok.body, "200 to the browser");
    assert_eq!(ok.header("Content-Type"), Some("application/sdp"));
    assert_eq!(
        ok.call_id(),
        d.call_id,
        "the browser's dialog keeps its Call-ID"
    );
    assert_eq!(ok.top_branch(), d.invite.top_branch());
    assert!(ok.to_tag().is_some(), "200 with a To tag: {ok}");
    let target = ok.contact_uri().expect("200 has a Contact");
    assert!(
        !target.contains("sipp@"),
        "the gateway's Contact, not the callee's: {ok}"
    );
    for p in prov.iter().filter(|p| p.status() == 180) {
        assert_eq!(
            p.to_tag(),
            ok.to_tag(),
            "180 and 200 belong to one early/confirmed dialog"
        );
    }

    // IMS leg.
    let invites = run.received_requests("INVITE");
    let inv = invites
        .first()
        .unwrap_or_else(|| panic!("sipp saw no INVITE: {}", run.describe()));
    assert_eq!(inv.uri(), CALLEE, "Request-URI kept: {inv}");
    assert_ims_sdp(&inv.body, "INVITE toward IMS");
    let _ = offer;
    assert_ne!(inv.call_id(), d.call_id, "new Call-ID on the IMS leg");
    assert_ne!(
        inv.from_tag().as_deref(),
        Some(d.local_tag.as_str()),
        "new From tag on the IMS leg"
    );
    assert!(
        inv.header("From")
            .is_some_and(|f| f.contains("sip:alice@ims.test")),
        "{inv}"
    );
    assert!(
        inv.header("To").is_some_and(|f| f.contains(CALLEE)),
        "{inv}"
    );
    let via = inv.header_values("Via");
    assert_eq!(via.len(), 1, "only the gateway's Via: {inv}");
    assert!(
        via[0].starts_with("SIP/2.0/UDP ") && via[0].contains(&ims),
        "{inv}"
    );
    let contact = inv.contact_uri().expect("INVITE Contact");
    assert_eq!(
        uri_hostport(&contact),
        ims,
        "Contact is the gateway's IMS address: {inv}"
    );
    assert!(
        inv.header("P-Asserted-Identity")
            .is_some_and(|p| p.contains("sip:alice@ims.test")),
        "the P-CSCF asserts the registered identity (TS 24.229 §5.2.6.3.3): {inv}"
    );
    assert!(
        inv.header_values("Route")
            .first()
            .map(|r| addr_uri(r))
            .as_deref()
            == Some("sip:orig@scscf.ims.test;lr"),
        "the Service-Route learned at registration is the route set (RFC 3608): {inv}"
    );
    let mf: u32 = inv
        .header("Max-Forwards")
        .and_then(|v| v.parse().ok())
        .expect("Max-Forwards");
    assert!(mf > 0 && mf <= 70, "{inv}");
    // The ACK of the 2xx, in the IMS dialog.
    let acks = run.received_requests("ACK");
    let ack = acks
        .first()
        .unwrap_or_else(|| panic!("sipp saw no ACK: {}", run.describe()));
    assert_eq!(ack.call_id(), inv.call_id());
    assert_eq!(ack.from_tag(), inv.from_tag());
    assert_eq!(
        ack.to_tag(),
        sipp_200.to_tag(),
        "ACK in the callee's dialog: {ack}"
    );
    assert_eq!(ack.cseq(), (inv.cseq().0, "ACK".to_owned()));
}

/// An in-dialog request the gateway sent to sipp's UAS (RFC 3261 §12.2.1.1): to the callee's
/// Contact, through its Record-Route, in the IMS dialog.
fn check_ims_in_dialog(req: &SipMsg, run: &SippRun) {
    let inv = run.received_requests("INVITE")[0];
    let sipp_200 = run
        .sent()
        .into_iter()
        .find(|m| m.status() == 200 && m.method() == "INVITE")
        .expect("sipp 200");
    assert_eq!(req.call_id(), inv.call_id(), "{req}");
    assert_eq!(req.from_tag(), inv.from_tag(), "{req}");
    assert_eq!(req.to_tag(), sipp_200.to_tag(), "{req}");
    assert_eq!(
        Some(req.uri().to_owned()),
        sipp_200.contact_uri(),
        "Request-URI is the remote target: {req}"
    );
    if sipp_200.has_header("Record-Route") {
        let rr: Vec<String> = sipp_200.header_values("Record-Route");
        assert_eq!(
            req.header_values("Route"),
            rr,
            "route set from the 2xx Record-Route: {req}"
        );
    }
}

async fn wait_until(cond: impl Fn() -> bool, what: &str) {
    for _ in 0..100 {
        if cond() {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    panic!("{what}: not within 2 s");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browser_call_answered_then_browser_hangs_up() {
    let s = Setup::start(|b| b).await;
    let mut reg = s.register().await;
    let sipp = s.uas("uas_answer_wait_bye.xml").await;
    let offer = webrtc_offer(40000);
    let (mut d, prov, ok) = call_answered(&mut reg.client, &offer).await;
    // The ports the answer announces were bound before it was sent (bind before announce).
    let web_port = media_port(&ok.body);
    let bound = |port: u16| udp_port_in_use(port);
    assert!(bound(web_port), "web media port {web_port} announced but not bound");
    let quarantined = || s.gw.metric("estuary_media_ports_quarantined");
    assert_eq!(quarantined(), Some(0.0));
    let bye = reg.client.bye(&mut d).await;
    let bye_resp = reg.client.wait_response(&bye, DEFAULT_WAIT).await;
    assert_eq!(bye_resp.status(), 200, "{}", reg.client.transcript());
    // When the call ends its IMS port rests in quarantine, still bound by the daemon: no
    // other process can take it, and the old far end's late packets reach no one. The web
    // port is the media thread's shared one (media.web_port_mode = "shared"): it stays.
    wait_until(|| quarantined() == Some(1.0), "the IMS port quarantined").await;
    wait_until(|| s.gw.log().contains("media ended"), "the call's media task ended").await;
    let run = finish(sipp, &reg.client, &s.gw).await;
    let ims_port = media_port(&run.received_requests("INVITE")[0].body);
    assert!(bound(web_port) && bound(ims_port) && bound(ims_port + 1), "quarantined ports stay bound");

    check_call_setup(&s, &reg.client, &d, &prov, &ok, &offer, &run);
    assert!(
        prov.iter().any(|p| p.status() == 180),
        "180 relayed: {}",
        reg.client.transcript()
    );
    let byes = run.received_requests("BYE");
    assert_eq!(byes.len(), 1, "{}", run.describe());
    check_ims_in_dialog(byes[0], &run);
    let ack = run.received_requests("ACK")[0];
    check_ims_in_dialog(ack, &run);
    let registrar = reg.registrar.as_ref().unwrap();
    assert_no_leaks(&reg.client, &ImsSide::new().run(registrar).run(&run));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browser_call_answered_then_ims_hangs_up() {
    let s = Setup::start(|b| b).await;
    let mut reg = s.register().await;
    let sipp = s.uas("uas_answer_then_bye.xml").await;
    let offer = webrtc_offer(40002);
    let (d, prov, ok) = call_answered(&mut reg.client, &offer).await;
    let bye = reg.client.answer_bye(DEFAULT_WAIT).await;
    let run = finish(sipp, &reg.client, &s.gw).await;

    check_call_setup(&s, &reg.client, &d, &prov, &ok, &offer, &run);
    // The BYE the browser got belongs to its dialog, From/To swapped (RFC 3261 §12.2.1.1).
    assert_eq!(bye.call_id(), d.call_id, "{bye}");
    assert_eq!(bye.to_tag().as_deref(), Some(d.local_tag.as_str()), "{bye}");
    assert_eq!(bye.from_tag(), d.remote_tag, "{bye}");
    assert_eq!(
        bye.uri(),
        d.invite.contact_uri().unwrap(),
        "BYE goes to the browser's Contact: {bye}"
    );
    assert!(
        bye.header_values("Via")[0].starts_with("SIP/2.0/WS"),
        "{bye}"
    );
    // sipp's BYE was answered 200 by the gateway.
    let bye_200 = run.received_responses("BYE");
    assert_eq!(
        bye_200.first().map(|r| r.status()),
        Some(200),
        "{}",
        run.describe()
    );
    let registrar = reg.registrar.as_ref().unwrap();
    assert_no_leaks(&reg.client, &ImsSide::new().run(registrar).run(&run));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browser_reinvite_is_relayed_and_answered() {
    let s = Setup::start(|b| b).await;
    let mut reg = s.register().await;
    let sipp = s.uas("uas_reinvite.xml").await;
    let offer = webrtc_offer(40004);
    let (mut d, prov, ok) = call_answered(&mut reg.client, &offer).await;

    let offer2 = webrtc_offer(40006).replace("a=sendrecv", "a=recvonly");
    let reinvite = reg.client.reinvite(&mut d, &offer2).await;
    let (_, re_ok) = reg.client.wait_final(&reinvite, DEFAULT_WAIT).await;
    assert_eq!(
        re_ok.status(),
        200,
        "re-INVITE not answered:\n{}",
        reg.client.transcript()
    );
    assert_eq!(
        re_ok.to_tag(),
        d.remote_tag,
        "re-INVITE answered in the same dialog: {re_ok}"
    );
    // sipp re-answers sendonly to the recvonly re-offer: the browser hears it as sendonly
    // from the gateway, in WebRTC form.
    assert!(
        re_ok.body.contains("a=sendonly") && re_ok.body.contains("a=ice-lite") && !re_ok.body.contains("sipp-reanswer"),
        "the new answer is rewritten for the browser: {re_ok}"
    );
    d.update_from_response(&re_ok);
    reg.client.ack(&mut d).await;
    let bye = reg.client.bye(&mut d).await;
    assert_eq!(
        reg.client.wait_response(&bye, DEFAULT_WAIT).await.status(),
        200
    );
    let run = finish(sipp, &reg.client, &s.gw).await;

    check_call_setup(&s, &reg.client, &d, &prov, &ok, &offer, &run);
    let invites = run.received_requests("INVITE");
    assert_eq!(invites.len(), 2, "{}", run.describe());
    let (first, re) = (invites[0], invites[1]);
    assert_eq!(
        re.call_id(),
        first.call_id(),
        "re-INVITE in the IMS dialog: {re}"
    );
    assert_eq!(re.from_tag(), first.from_tag());
    assert!(
        re.to_tag().is_some(),
        "re-INVITE carries the callee's tag: {re}"
    );
    assert!(
        re.cseq().0 > first.cseq().0,
        "CSeq increases in the dialog: {re}"
    );
    assert_ims_sdp(&re.body, "re-INVITE toward IMS");
    assert!(re.body.contains("a=recvonly"), "the browser's hold direction is kept: {re}");
    let _ = offer2;
    let sipp_reanswer = run
        .sent()
        .into_iter()
        .filter(|m| m.status() == 200 && m.method() == "INVITE")
        .nth(1)
        .unwrap();
    assert_ne!(re_ok.body, sipp_reanswer.body);
    let acks = run.received_requests("ACK");
    assert_eq!(
        acks.len(),
        2,
        "the re-INVITE's 200 is ACKed too: {}",
        run.describe()
    );
    assert_eq!(
        acks[1].cseq(),
        (re.cseq().0, "ACK".to_owned()),
        "{}",
        acks[1]
    );
    check_ims_in_dialog(acks[1], &run);
    check_ims_in_dialog(run.received_requests("BYE")[0], &run);
    let registrar = reg.registrar.as_ref().unwrap();
    assert_no_leaks(&reg.client, &ImsSide::new().run(registrar).run(&run));
}
