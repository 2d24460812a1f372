//! Transaction behaviour on a virtual clock: every timer of RFC 3261 §17 (A-K) and RFC 6026
//! (L, M) is made to fire by moving `now`, never by sleeping.

use std::time::{Duration, Instant};

use estuary_sip::{Message, Request, Response};

use super::*;

const UDP: bool = false;
const TCP: bool = true;

pub(crate) fn req(method: &str, branch: &str, cseq: u32) -> Request {
    let text = format!(
        "{method} sip:bob@ims.test SIP/2.0\r\n\
         Via: SIP/2.0/UDP 127.0.0.1:5080;branch={branch}\r\n\
         Max-Forwards: 70\r\n\
         From: <sip:alice@ims.test>;tag=a1\r\n\
         To: <sip:bob@ims.test>\r\n\
         Call-ID: c1@test\r\n\
         CSeq: {cseq} {method}\r\n\
         Content-Length: 0\r\n\r\n"
    );
    match Message::parse(text.as_bytes()) {
        Ok(Message::Request(r)) => r,
        other => panic!("test request did not parse: {other:?}"),
    }
}

pub(crate) fn resp(code: u16, request: &Request) -> Response {
    let mut r = estuary_sip::response_to(request, code, "Test");
    if code > 100 {
        let to = format!("{};tag=b1", request.headers.get("To").unwrap_or_default());
        r.headers.set("To", &to);
    }
    r
}

fn drain(t: &mut Transactions<u8>) -> Vec<Event<u8>> {
    std::iter::from_fn(|| t.poll_event()).collect()
}

fn transmits(events: &[Event<u8>]) -> Vec<String> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::Transmit { data, .. } => Some(String::from_utf8_lossy(data).lines().next().unwrap_or("").to_owned()),
            _ => None,
        })
        .collect()
}

/// Run the clock forward to `until`, jumping from deadline to deadline, collecting events
/// with the time they fired at (in ms since `start`).
fn run_until(t: &mut Transactions<u8>, start: Instant, until: Duration) -> Vec<(u128, Event<u8>)> {
    let mut out = Vec::new();
    while let Some(at) = t.poll_timeout() {
        if at > start + until {
            break;
        }
        t.handle_timeout(at);
        for e in drain(t) {
            out.push(((at - start).as_millis(), e));
        }
    }
    out
}

#[test]
fn non_invite_client_over_udp_retransmits_with_timer_e_and_fails_with_timer_f() {
    let mut t = Transactions::new(TimerConfig::default());
    let now = Instant::now();
    let r = req("OPTIONS", "z9hG4bK1", 1);
    let key = t.send_request(now, &r, 7, UDP).unwrap();
    assert_eq!(transmits(&drain(&mut t)), vec!["OPTIONS sip:bob@ims.test SIP/2.0"]);
    let fired = run_until(&mut t, now, Duration::from_secs(40));
    let retransmit_times: Vec<u128> = fired
        .iter()
        .filter(|(_, e)| matches!(e, Event::Transmit { .. }))
        .map(|(at, _)| *at)
        .collect();
    // T1 doubling to T2 (4 s): 0.5, 1.5, 3.5, 7.5, then every 4 s until F at 32 s.
    assert_eq!(retransmit_times, vec![500, 1500, 3500, 7500, 11500, 15500, 19500, 23500, 27500, 31500]);
    let failed: Vec<_> = fired
        .iter()
        .filter_map(|(at, e)| match e {
            Event::ClientFailed { key: k, cause } => Some((*at, k.clone(), *cause)),
            _ => None,
        })
        .collect();
    assert_eq!(failed, vec![(32000, key, FailureCause::Timeout)]);
    assert_eq!(t.len(), (0, 0));
}

#[test]
fn non_invite_client_in_proceeding_retransmits_every_t2() {
    let mut t = Transactions::new(TimerConfig::default());
    let now = Instant::now();
    let r = req("MESSAGE", "z9hG4bK2", 1);
    t.send_request(now, &r, 7, UDP).unwrap();
    drain(&mut t);
    assert!(matches!(t.receive_response(now, &resp(100, &r)), ResponseOutcome::Deliver(_)));
    let fired = run_until(&mut t, now, Duration::from_secs(10));
    let times: Vec<u128> = fired.iter().map(|(at, _)| *at).collect();
    // The first Timer E was armed at T1 before the 100 arrived; then T2 each time.
    assert_eq!(times, vec![500, 4500, 8500]);
}

#[test]
fn non_invite_client_absorbs_final_retransmissions_until_timer_k() {
    let mut t = Transactions::new(TimerConfig::default());
    let now = Instant::now();
    let r = req("BYE", "z9hG4bK3", 2);
    let key = t.send_request(now, &r, 7, UDP).unwrap();
    let ok = resp(200, &r);
    assert_eq!(t.receive_response(now, &ok), ResponseOutcome::Deliver(key));
    assert_eq!(t.receive_response(now, &ok), ResponseOutcome::Absorb);
    // Timer K = T4 over UDP.
    assert_eq!(t.poll_timeout(), Some(now + Duration::from_secs(5)));
    t.handle_timeout(now + Duration::from_secs(5));
    assert_eq!(t.len(), (0, 0));
    assert_eq!(t.receive_response(now, &ok), ResponseOutcome::Absorb);
}

#[test]
fn invite_client_over_udp_retransmits_with_timer_a_until_timer_b() {
    let mut t = Transactions::new(TimerConfig::default());
    let now = Instant::now();
    let r = req("INVITE", "z9hG4bK4", 1);
    t.send_request(now, &r, 7, UDP).unwrap();
    drain(&mut t);
    let fired = run_until(&mut t, now, Duration::from_secs(40));
    let times: Vec<u128> =
        fired.iter().filter(|(_, e)| matches!(e, Event::Transmit { .. })).map(|(at, _)| *at).collect();
    assert_eq!(times, vec![500, 1500, 3500, 7500, 15500, 31500]);
    assert!(matches!(fired.last(), Some((32000, Event::ClientFailed { cause: FailureCause::Timeout, .. }))));
}

#[test]
fn invite_client_acks_a_non_2xx_and_repeats_the_ack_for_each_retransmission() {
    let mut t = Transactions::new(TimerConfig::default());
    let now = Instant::now();
    let r = req("INVITE", "z9hG4bK5", 1);
    let key = t.send_request(now, &r, 7, UDP).unwrap();
    drain(&mut t);
    assert_eq!(t.receive_response(now, &resp(180, &r)), ResponseOutcome::Deliver(key.clone()));
    // A provisional stops Timer A and Timer B.
    assert_eq!(t.poll_timeout(), None);
    let busy = resp(486, &r);
    assert_eq!(t.receive_response(now, &busy), ResponseOutcome::Deliver(key));
    let ev = drain(&mut t);
    assert_eq!(transmits(&ev), vec!["ACK sip:bob@ims.test SIP/2.0"]);
    let Event::Transmit { data, .. } = &ev[0] else { unreachable!() };
    let ack = String::from_utf8_lossy(data);
    assert!(ack.contains("branch=z9hG4bK5"), "ACK for non-2xx reuses the INVITE branch: {ack}");
    assert!(ack.contains("tag=b1"), "ACK carries the response's To tag: {ack}");
    assert!(ack.contains("CSeq: 1 ACK"));
    assert_eq!(t.receive_response(now, &busy), ResponseOutcome::Absorb);
    assert_eq!(transmits(&drain(&mut t)), vec!["ACK sip:bob@ims.test SIP/2.0"]);
    // Timer D: 32 s over UDP.
    assert_eq!(t.poll_timeout(), Some(now + Duration::from_secs(32)));
}

#[test]
fn invite_client_over_tcp_does_not_retransmit_and_timer_d_is_zero() {
    let mut t = Transactions::new(TimerConfig::default());
    let now = Instant::now();
    let r = req("INVITE", "z9hG4bK6", 1);
    t.send_request(now, &r, 7, TCP).unwrap();
    drain(&mut t);
    assert_eq!(t.poll_timeout(), Some(now + Duration::from_secs(32)), "only Timer B");
    t.receive_response(now, &resp(603, &r));
    drain(&mut t);
    assert_eq!(t.poll_timeout(), Some(now));
    t.handle_timeout(now);
    assert_eq!(t.len(), (0, 0));
}

#[test]
fn invite_client_passes_2xx_retransmissions_up_while_accepted() {
    let mut t = Transactions::new(TimerConfig::default());
    let now = Instant::now();
    let r = req("INVITE", "z9hG4bK7", 1);
    let key = t.send_request(now, &r, 7, UDP).unwrap();
    let ok = resp(200, &r);
    assert_eq!(t.receive_response(now, &ok), ResponseOutcome::Deliver(key.clone()));
    assert!(transmits(&drain(&mut t)).iter().all(|l| !l.starts_with("ACK")), "the TU ACKs a 2xx");
    assert_eq!(t.receive_response(now, &ok), ResponseOutcome::Retransmitted2xx(key));
    // Timer M.
    t.handle_timeout(now + Duration::from_secs(32));
    assert_eq!(t.receive_response(now, &ok), ResponseOutcome::Absorb);
}

#[test]
fn invite_server_retransmits_a_non_2xx_with_timer_g_until_the_ack_then_lingers_for_timer_i() {
    let mut t = Transactions::new(TimerConfig::default());
    let now = Instant::now();
    let r = req("INVITE", "z9hG4bK8", 1);
    let RequestOutcome::New { key, cancels: None } = t.receive_request(now, &r, 3, UDP) else { panic!() };
    t.send_response(now, &key, &resp(100, &r)).unwrap();
    assert_eq!(transmits(&drain(&mut t)), vec!["SIP/2.0 100 Test"]);
    // A retransmitted INVITE gets the last provisional again and is not passed up.
    assert_eq!(t.receive_request(now, &r, 3, UDP), RequestOutcome::Retransmission);
    assert_eq!(transmits(&drain(&mut t)), vec!["SIP/2.0 100 Test"]);
    t.send_response(now, &key, &resp(486, &r)).unwrap();
    drain(&mut t);
    let fired = run_until(&mut t, now, Duration::from_millis(3600));
    let times: Vec<u128> = fired.iter().map(|(at, _)| *at).collect();
    assert_eq!(times, vec![500, 1500, 3500], "Timer G doubles from T1");
    let ack = req("ACK", "z9hG4bK8", 1);
    assert_eq!(t.receive_request(now, &ack, 3, UDP), RequestOutcome::AckAbsorbed);
    assert_eq!(t.receive_request(now, &ack, 3, UDP), RequestOutcome::AckAbsorbed);
    // Timer I = T4 after the ACK; no more retransmissions.
    let later = run_until(&mut t, now, Duration::from_secs(10));
    assert!(later.is_empty(), "{later:?}");
    assert_eq!(t.len(), (0, 0));
}

#[test]
fn invite_server_reports_timer_h_when_no_ack_comes() {
    let mut t = Transactions::new(TimerConfig::default());
    let now = Instant::now();
    let r = req("INVITE", "z9hG4bK9", 1);
    let RequestOutcome::New { key, .. } = t.receive_request(now, &r, 3, TCP) else { panic!() };
    t.send_response(now, &key, &resp(404, &r)).unwrap();
    drain(&mut t);
    let fired = run_until(&mut t, now, Duration::from_secs(40));
    assert!(
        matches!(&fired[..], [(32000, Event::AckTimeout { code: 404, .. })]),
        "TCP: no Timer G, Timer H at 64*T1: {fired:?}"
    );
}

#[test]
fn invite_server_retransmits_2xx_until_the_ack_with_its_own_branch_arrives() {
    let mut t = Transactions::new(TimerConfig::default());
    let now = Instant::now();
    let r = req("INVITE", "z9hG4bK10", 1);
    let RequestOutcome::New { key, .. } = t.receive_request(now, &r, 3, UDP) else { panic!() };
    t.send_response(now, &key, &resp(200, &r)).unwrap();
    drain(&mut t);
    let fired = run_until(&mut t, now, Duration::from_millis(1600));
    assert_eq!(fired.len(), 2, "2xx retransmitted at 0.5 s and 1.5 s");
    // RFC 6026: a retransmitted INVITE in Accepted is absorbed.
    assert_eq!(t.receive_request(now, &r, 3, UDP), RequestOutcome::Retransmission);
    assert!(drain(&mut t).is_empty());
    let ack = req("ACK", "z9hG4bKother", 1);
    assert_eq!(t.receive_request(now, &ack, 3, UDP), RequestOutcome::Ack { accepted: Some(key) });
    let later = run_until(&mut t, now, Duration::from_secs(40));
    assert!(later.is_empty(), "no retransmission or timeout after the ACK: {later:?}");
    assert_eq!(t.len(), (0, 0));
    // A second ACK (retransmitted by the peer) goes to the TU without a transaction.
    assert_eq!(t.receive_request(now, &ack, 3, UDP), RequestOutcome::Ack { accepted: None });
}

#[test]
fn invite_server_reports_timer_l_when_a_2xx_is_never_acknowledged() {
    let mut t = Transactions::new(TimerConfig::default());
    let now = Instant::now();
    let r = req("INVITE", "z9hG4bK11", 1);
    let RequestOutcome::New { key, .. } = t.receive_request(now, &r, 3, UDP) else { panic!() };
    t.send_response(now, &key, &resp(200, &r)).unwrap();
    drain(&mut t);
    let fired = run_until(&mut t, now, Duration::from_secs(40));
    assert!(matches!(fired.last(), Some((32000, Event::AckTimeout { code: 200, .. }))), "{fired:?}");
}

#[test]
fn cancel_finds_the_pending_invite_and_is_its_own_transaction() {
    let mut t = Transactions::new(TimerConfig::default());
    let now = Instant::now();
    let r = req("INVITE", "z9hG4bK12", 1);
    let RequestOutcome::New { key: invite, .. } = t.receive_request(now, &r, 3, UDP) else { panic!() };
    let cancel = req("CANCEL", "z9hG4bK12", 1);
    let RequestOutcome::New { key, cancels } = t.receive_request(now, &cancel, 3, UDP) else { panic!() };
    assert_eq!(cancels, Some(invite.clone()));
    assert_eq!(key.method, Method::Cancel);
    // Once the INVITE is final, a CANCEL finds nothing to cancel.
    t.send_response(now, &invite, &resp(487, &r)).unwrap();
    let late = req("CANCEL", "z9hG4bK12", 1);
    assert_eq!(t.receive_request(now, &late, 3, UDP), RequestOutcome::Retransmission);
}

#[test]
fn non_invite_server_answers_retransmissions_until_timer_j() {
    let mut t = Transactions::new(TimerConfig::default());
    let now = Instant::now();
    let r = req("OPTIONS", "z9hG4bK13", 1);
    let RequestOutcome::New { key, .. } = t.receive_request(now, &r, 3, UDP) else { panic!() };
    // Trying: a retransmission before any response is absorbed silently.
    assert_eq!(t.receive_request(now, &r, 3, UDP), RequestOutcome::Retransmission);
    assert!(drain(&mut t).is_empty());
    t.send_response(now, &key, &resp(200, &r)).unwrap();
    assert_eq!(transmits(&drain(&mut t)), vec!["SIP/2.0 200 Test"]);
    assert_eq!(t.receive_request(now, &r, 3, UDP), RequestOutcome::Retransmission);
    assert_eq!(transmits(&drain(&mut t)), vec!["SIP/2.0 200 Test"]);
    assert_eq!(t.send_response(now, &key, &resp(500, &r)), Err(UsageError::AlreadyFinal));
    assert_eq!(t.poll_timeout(), Some(now + Duration::from_secs(32)), "Timer J = 64*T1 over UDP");
    t.handle_timeout(now + Duration::from_secs(32));
    assert_eq!(t.len(), (0, 0));
}

#[test]
fn a_failed_flow_fails_its_pending_client_transactions_only() {
    let mut t = Transactions::new(TimerConfig::default());
    let now = Instant::now();
    let a = req("INVITE", "z9hG4bK14", 1);
    let b = req("OPTIONS", "z9hG4bK15", 1);
    let ka = t.send_request(now, &a, 1, UDP).unwrap();
    t.send_request(now, &b, 2, UDP).unwrap();
    drain(&mut t);
    t.fail_flow(1);
    let ev = drain(&mut t);
    assert!(matches!(&ev[..], [Event::ClientFailed { key, cause: FailureCause::Transport }] if *key == ka));
    assert_eq!(t.len(), (1, 0));
}

#[test]
fn pre_3261_requests_match_by_their_fields() {
    let mut t = Transactions::new(TimerConfig::default());
    let now = Instant::now();
    let r = req("INVITE", "old1", 1);
    assert!(matches!(t.receive_request(now, &r, 3, UDP), RequestOutcome::New { .. }));
    assert_eq!(t.receive_request(now, &r, 3, UDP), RequestOutcome::Retransmission);
}

/// The client transactions by flow, found by looking at each.
fn grouped(t: &Transactions<u8>) -> HashMap<u8, HashSet<ClientKey>> {
    let mut by_flow: HashMap<u8, HashSet<ClientKey>> = HashMap::new();
    for (k, tx) in &t.clients {
        by_flow.entry(tx.flow()).or_default().insert(k.clone());
    }
    by_flow
}

/// The earliest deadline of every live transaction, found by looking at each.
fn scanned(t: &Transactions<u8>) -> Option<Instant> {
    t.clients.values().filter_map(|tx| tx.deadline()).chain(t.servers.values().filter_map(|tx| tx.deadline())).min()
}

/// The timer heap against a scan of every transaction, through a mixed load on a virtual
/// clock: client INVITEs and non-INVITEs (some answered, provisionally or finally, some left
/// to time out), server transactions answered with 2xx (some ACKed) and non-2xx, and a
/// transport failure. After every call the heap's next deadline is the scan's, and the run
/// ends with no transaction and no deadline left.
#[test]
fn the_timer_heap_always_names_the_earliest_deadline() {
    let start = Instant::now();
    let mut t: Transactions<u8> = Transactions::new(TimerConfig::default());
    let mut now = start;
    let check = |t: &Transactions<u8>, what: &str| {
        assert_eq!(t.poll_timeout(), scanned(t), "after {what}");
        assert_eq!(t.by_flow, grouped(t), "the flow index after {what}");
    };
    let mut clients = Vec::new();
    for i in 0..60u32 {
        now += Duration::from_millis(37);
        let method = if i % 3 == 0 { "INVITE" } else { "OPTIONS" };
        let r = req(method, &format!("z9hG4bKc{i}"), i + 1);
        let flow = (i % 4) as u8;
        t.send_request(now, &r, flow, i % 5 == 0).unwrap();
        check(&t, "send_request");
        clients.push(r);
        // Serve a request from the far side too.
        let s = req(if i % 2 == 0 { "INVITE" } else { "MESSAGE" }, &format!("z9hG4bKs{i}"), 100 + i);
        if let RequestOutcome::New { key, .. } = t.receive_request(now, &s, flow, UDP) {
            check(&t, "receive_request");
            let code = if i % 4 == 0 { 200 } else { 486 };
            t.send_response(now, &key, &resp(code, &s)).unwrap();
            check(&t, "send_response");
            if i % 8 == 0 {
                let mut ack = req("ACK", &format!("z9hG4bKa{i}"), 100 + i);
                ack.headers.set("Call-ID", "c1@test");
                t.receive_request(now + Duration::from_millis(5), &ack, flow, UDP);
                check(&t, "ACK");
            }
        }
        // Answer every other earlier client request: provisionally or finally.
        if i % 2 == 1 {
            let r = &clients[(i / 2) as usize];
            let code = if i % 4 == 1 { 180 } else { 200 };
            t.receive_response(now, &resp(code, r));
            check(&t, "receive_response");
        }
        if i % 7 == 6 {
            t.handle_timeout(now);
            check(&t, "handle_timeout");
        }
        if i == 40 {
            t.fail_flow(3);
            check(&t, "fail_flow");
        }
        drain(&mut t);
    }
    // Let every timer run out.
    for fired in 0.. {
        t.handle_timeout(now);
        check(&t, "handle_timeout");
        drain(&mut t);
        let Some(at) = t.poll_timeout() else { break };
        assert!(at > now, "handle_timeout left a due deadline behind");
        now = at;
        assert!(fired < 10_000, "the timers never ran out");
    }
    // What remains are INVITEs that rang (a provisional stops Timers A and B, §17.1.1.2):
    // they wait for their final response or the TU's CANCEL, with no deadline.
    assert_eq!(t.len().1, 0, "every server transaction ended");
    assert!(t.len().0 > 0 && t.clients.values().all(|tx| tx.deadline().is_none()), "only ringing INVITEs are left");
    assert_eq!(t.due.heap_len(), 0, "no stale deadline kept");
}
