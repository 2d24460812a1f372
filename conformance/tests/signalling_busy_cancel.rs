//! Browser-originated calls that do not get answered: the callee is busy (486 relayed), or
//! the browser gives up while it rings (CANCEL: 200 to the browser, CANCEL toward IMS, 487
//! relayed). Both legs are checked, including the ACKs of the non-2xx final responses.
//!
//! Needs `sipp` and `cargo build -p estuary` (see conformance/src/lib.rs).

use estuary_conformance::flows::{finish, Setup};
use estuary_conformance::leak::{assert_no_leaks, ImsSide};
use estuary_conformance::ws_client::{assert_ims_sdp, webrtc_offer, DEFAULT_WAIT};

const CALLEE: &str = "sip:bob@ims.test";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn busy_callee_486_is_relayed_to_the_browser() {
    let records = estuary_conformance::records::temp_dir("busy");
    let s = Setup::start(|b| b.set("records.dir", &records.to_string_lossy())).await;
    let mut reg = s.register().await;
    let sipp = s.uas("uas_busy.xml").await;
    let offer = webrtc_offer(40010);
    let d = reg.client.invite(CALLEE, &offer).await;
    let (prov, busy) = reg.client.wait_final(&d.invite, DEFAULT_WAIT).await;
    // JsSIP's INVITE client transaction ACKs every non-2xx final response.
    reg.client.ack_non2xx(&d.invite, &busy).await;
    let run = finish(sipp, &reg.client, &s.gw).await;

    // Browser leg.
    assert_eq!(
        prov.first().map(|p| p.status()),
        Some(100),
        "{}",
        reg.client.transcript()
    );
    assert_eq!(
        busy.status(),
        486,
        "busy relayed: {}",
        reg.client.transcript()
    );
    assert_eq!(busy.reason(), "Busy Here");
    assert_eq!(busy.call_id(), d.call_id);
    assert_eq!(busy.top_branch(), d.invite.top_branch());
    assert!(busy.to_tag().is_some(), "{busy}");
    assert!(
        busy.contact_uri().is_none_or(|c| !c.contains("sipp@")),
        "{busy}"
    );

    // IMS leg: one INVITE, the 486, and the transaction's ACK for it (RFC 3261 §17.1.1.3).
    let invites = run.received_requests("INVITE");
    assert_eq!(invites.len(), 1, "{}", run.describe());
    let inv = invites[0];
    assert_ims_sdp(&inv.body, "INVITE toward IMS");
    let _ = &offer;
    let sipp_486 = run
        .sent()
        .into_iter()
        .find(|m| m.status() == 486)
        .expect("sipp sent 486");
    let acks = run.received_requests("ACK");
    assert_eq!(acks.len(), 1, "{}", run.describe());
    let ack = acks[0];
    assert_eq!(
        ack.top_branch(),
        inv.top_branch(),
        "non-2xx ACK uses the INVITE's branch: {ack}"
    );
    assert_eq!(
        ack.uri(),
        inv.uri(),
        "non-2xx ACK has the INVITE's Request-URI: {ack}"
    );
    assert_eq!(ack.to_tag(), sipp_486.to_tag(), "{ack}");
    assert_eq!(ack.cseq(), (inv.cseq().0, "ACK".to_owned()));
    assert!(run.received_requests("BYE").is_empty() && run.received_requests("CANCEL").is_empty());
    let registrar = reg.registrar.as_ref().unwrap();
    assert_no_leaks(&reg.client, &ImsSide::new().run(registrar).run(&run));

    // The call's record: refused by the callee, never answered, no media.
    let r = tokio::task::block_in_place(|| estuary_conformance::records::wait_records(&records, 1)).remove(0);
    assert_eq!((r["caller"].as_str(), r["from"].as_str(), r["to"].as_str()), (Some("web"), Some("sip:alice@ims.test"), Some(CALLEE)), "{r}");
    assert_eq!((r["status"].as_u64(), r["reason"].as_str(), r["answer"].is_null()), (Some(486), Some("rejected"), true), "{r}");
    assert_eq!(r["web_call_id"].as_str(), Some(d.call_id.as_str()), "{r}");
    assert_eq!(r["ims_call_id"].as_str(), Some(inv.call_id()), "{r}");
    assert_eq!(r["streams"].as_array().map(Vec::len), Some(0), "{r}");
    let _ = std::fs::remove_dir_all(&records);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_before_answer() {
    let s = Setup::start(|b| b).await;
    let mut reg = s.register().await;
    let sipp = s.uas("uas_ring_cancel.xml").await;
    let offer = webrtc_offer(40012);
    let d = reg.client.invite(CALLEE, &offer).await;
    let trying = reg.client.wait_response(&d.invite, DEFAULT_WAIT).await;
    assert_eq!(trying.status(), 100, "{}", reg.client.transcript());
    let ringing = reg.client.wait_response(&d.invite, DEFAULT_WAIT).await;
    assert_eq!(ringing.status(), 180, "{}", reg.client.transcript());

    let cancel = reg.client.cancel(&d).await;
    let cancel_ok = reg.client.wait_response(&cancel, DEFAULT_WAIT).await;
    let (_, terminated) = reg.client.wait_final(&d.invite, DEFAULT_WAIT).await;
    reg.client.ack_non2xx(&d.invite, &terminated).await;
    let run = finish(sipp, &reg.client, &s.gw).await;

    // Browser leg: 200 for the CANCEL, 487 for the INVITE (RFC 3261 §9.2).
    assert_eq!(cancel_ok.status(), 200, "{}", reg.client.transcript());
    assert_eq!(cancel_ok.cseq(), (d.invite.cseq().0, "CANCEL".to_owned()));
    assert_eq!(cancel_ok.top_branch(), d.invite.top_branch());
    assert_eq!(terminated.status(), 487, "{}", reg.client.transcript());
    assert_eq!(terminated.cseq(), (d.invite.cseq().0, "INVITE".to_owned()));
    assert_eq!(terminated.call_id(), d.call_id);
    assert!(ringing.to_tag().is_some(), "{ringing}");

    // IMS leg: INVITE, then a CANCEL matching it (§9.1), then the ACK of the 487.
    let inv = run.received_requests("INVITE")[0];
    let cancels = run.received_requests("CANCEL");
    assert_eq!(
        cancels.len(),
        1,
        "sipp must see the CANCEL: {}",
        run.describe()
    );
    let c = cancels[0];
    assert_eq!(c.uri(), inv.uri(), "CANCEL Request-URI = INVITE's: {c}");
    assert_eq!(
        c.top_branch(),
        inv.top_branch(),
        "CANCEL top Via = INVITE's: {c}"
    );
    assert_eq!(c.call_id(), inv.call_id());
    assert_eq!(c.from_tag(), inv.from_tag());
    assert_eq!(c.to_tag(), None, "CANCEL To = the INVITE's (no tag): {c}");
    assert_eq!(c.cseq(), (inv.cseq().0, "CANCEL".to_owned()));
    assert_eq!(
        c.header_values("Route"),
        inv.header_values("Route"),
        "CANCEL keeps the INVITE's Route: {c}"
    );
    let order: Vec<String> = run
        .received()
        .iter()
        .filter(|m| m.is_request())
        .map(|m| m.method())
        .collect();
    assert_eq!(order, ["INVITE", "CANCEL", "ACK"], "{}", run.describe());
    let ack = run.received_requests("ACK")[0];
    assert_eq!(ack.top_branch(), inv.top_branch(), "{ack}");
    assert!(run.received_requests("BYE").is_empty());
    let registrar = reg.registrar.as_ref().unwrap();
    assert_no_leaks(&reg.client, &ImsSide::new().run(registrar).run(&run));
}
