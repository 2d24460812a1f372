//! Registration through the gateway with a real IMS-side registrar (sipp): the digest
//! challenge and credentials pass unchanged, the gateway registers its own Contact and a
//! Path (RFC 3327) toward IMS, and the browser sees its own Contact in the 200.
//!
//! Needs `sipp` and `cargo build -p estuary` (see conformance/src/lib.rs).

use std::time::Duration;

use estuary_conformance::flows::Setup;
use estuary_conformance::leak::{assert_no_leaks, assert_no_leaks_raw, ImsSide};
use estuary_conformance::msg::{addr_uri, param, uri_hostport, uri_param, uri_user};
use estuary_conformance::ws_client::JSSIP_VIA_HOST;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn register_with_digest_challenge() {
    let s = Setup::start(|b| b).await;
    let reg = s.register().await;
    let run = reg.registrar.as_ref().expect("registrar run");
    let ims = s.gw.ims_addr.to_string();

    // ---- browser side: 401 with the registrar's challenge verbatim, then 200 ----
    let finals: Vec<_> = reg.responses.iter().filter(|r| r.status() >= 200).collect();
    assert_eq!(
        finals.iter().map(|r| r.status()).collect::<Vec<_>>(),
        [401, 200],
        "{}",
        reg.client.transcript()
    );
    let sipp_401 = run
        .sent()
        .into_iter()
        .find(|m| m.status() == 401)
        .expect("sipp sent 401");
    assert_eq!(
        finals[0].header("WWW-Authenticate"),
        sipp_401.header("WWW-Authenticate"),
        "the digest challenge must reach the browser unchanged"
    );
    let sent_regs: Vec<_> = reg
        .client
        .sent
        .iter()
        .filter(|m| m.method() == "REGISTER")
        .collect();
    assert_eq!(sent_regs.len(), 2);
    for (req, resp) in sent_regs.iter().zip(&finals) {
        assert_eq!(
            resp.call_id(),
            req.call_id(),
            "responses keep the browser's Call-ID"
        );
        assert_eq!(
            resp.top_branch(),
            req.top_branch(),
            "responses keep the browser's Via"
        );
        assert_eq!(resp.cseq(), req.cseq());
        assert_eq!(resp.from_tag(), req.from_tag());
    }
    let ok = finals[1];
    let contacts = ok.header_values("Contact");
    assert_eq!(
        contacts.len(),
        1,
        "the 200 lists the browser's binding: {ok}"
    );
    assert_eq!(
        addr_uri(&contacts[0]),
        reg.client.contact_uri(),
        "the browser sees its own Contact: {ok}"
    );
    let expires: u32 = param(&contacts[0], "expires")
        .or_else(|| ok.header("Expires").map(str::to_owned))
        .and_then(|e| e.parse().ok())
        .unwrap_or_else(|| panic!("200 without expiry for the binding: {ok}"));
    assert!(expires > 0 && expires <= 600, "expires {expires}");

    // ---- IMS side: the gateway's REGISTERs ----
    let regs = run.received_requests("REGISTER");
    assert_eq!(regs.len(), 2, "{}", run.describe());
    let (first, second) = (regs[0], regs[1]);
    for r in [first, second] {
        assert_eq!(
            r.uri(),
            "sip:ims.test",
            "Request-URI is the home domain: {r}"
        );
        assert!(
            r.header("To")
                .is_some_and(|t| t.contains("sip:alice@ims.test")),
            "{r}"
        );
        assert!(
            r.header("From")
                .is_some_and(|t| t.contains("sip:alice@ims.test")),
            "{r}"
        );
        let via = r.header_values("Via");
        assert_eq!(via.len(), 1, "one Via, the gateway's: {r}");
        assert!(
            via[0].starts_with("SIP/2.0/UDP ") && via[0].contains(&ims),
            "Via sent-by is ims.listen: {r}"
        );
        let contact = r.header("Contact").expect("Contact");
        let curi = addr_uri(contact);
        assert_eq!(
            uri_hostport(&curi),
            ims,
            "Contact points at the gateway: {r}"
        );
        assert_eq!(uri_param(&curi, "transport").as_deref(), Some("udp"), "{r}");
        assert_eq!(
            param(contact, "expires").as_deref(),
            Some("600"),
            "requested expiry kept: {r}"
        );
        let token = uri_user(&curi).expect("Contact user is the binding token");
        let path = r.header("Path").expect("Path (RFC 3327)");
        assert_eq!(
            addr_uri(path),
            format!("sip:{token}@{ims};lr"),
            "Path names the binding: {r}"
        );
        assert!(
            r.header_values("Supported")
                .iter()
                .any(|v| v.eq_ignore_ascii_case("path")),
            "Supported: path (RFC 3327 §4): {r}"
        );
    }
    assert!(first.header("Authorization").is_none(), "{first}");
    let browser_auth = sent_regs[1]
        .header("Authorization")
        .expect("browser sent credentials");
    assert_eq!(
        second.header("Authorization"),
        Some(browser_auth),
        "credentials must pass unchanged"
    );
    assert_eq!(
        first.call_id(),
        second.call_id(),
        "one registration dialog toward IMS"
    );
    assert!(second.cseq().0 > first.cseq().0, "CSeq increases");
    assert_ne!(
        first.call_id(),
        reg.client.sent[0].call_id(),
        "new Call-ID toward IMS"
    );
    assert_eq!(
        first.header("Contact").map(addr_uri),
        second.header("Contact").map(addr_uri)
    );
    // sipp's registrar verified the digest (else it would have answered 403).
    assert!(run
        .sent()
        .iter()
        .any(|m| m.status() == 200 && m.method() == "REGISTER"));
    for text in run.received_texts() {
        assert!(!text.contains(JSSIP_VIA_HOST), "{text}");
    }
    assert_no_leaks(&reg.client, &ImsSide::new().run(run));
}

/// With the default policy (`registrar.on_ws_close = "deregister"`), a browser that closes
/// its WebSocket is deregistered at IMS at once: REGISTER with Contact expires=0 in the same
/// registration dialog.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_close_deregisters_at_ims() {
    let s = Setup::start(|b| b.set("registrar.on_ws_close", "deregister")).await;
    let mut reg = s
        .register_keep_running("registrar_then_deregister.xml")
        .await;
    let sipp = reg
        .registrar_running
        .take()
        .expect("registrar still running");
    let tokens = reg.client.private_tokens();
    let received = reg.client.received.clone();
    reg.client.close().await;
    let run = tokio::time::timeout(Duration::from_secs(20), sipp.wait())
        .await
        .expect("bounded");
    assert!(
        run.succeeded(),
        "no deregistration reached IMS: {}\n{}",
        run.describe(),
        s.gw.log_tail(60)
    );
    let regs = run.received_requests("REGISTER");
    assert_eq!(regs.len(), 3, "{}", run.describe());
    let (bound, dereg) = (regs[1], regs[2]);
    assert_eq!(
        dereg.call_id(),
        bound.call_id(),
        "same registration dialog: {dereg}"
    );
    assert!(dereg.cseq().0 > bound.cseq().0, "{dereg}");
    let contact = dereg.header("Contact").expect("Contact");
    assert_eq!(
        addr_uri(contact),
        addr_uri(bound.header("Contact").unwrap()),
        "the same binding is removed"
    );
    let expires0 =
        param(contact, "expires").as_deref() == Some("0") || dereg.header("Expires") == Some("0");
    assert!(expires0, "deregistration must carry expires=0: {dereg}");
    assert_no_leaks_raw(&tokens, &received, &ImsSide::new().run(&run));
}
