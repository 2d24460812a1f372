//! PeerSet: failover with the T flag, return to the primary, duplicate detection.

mod common;

use std::time::Duration;

use common::*;
use estuary_diameter::dictionary as dict;
use estuary_diameter::message::{application, command};
use estuary_diameter::{
    Avp, DownReason, FailureCause, Message, Peer, PeerEvent, PeerSet, PeerSetEvent, SendError,
    Transmit,
};

fn open_set() -> Net<PeerSet> {
    let now = t0();
    let mut r = rng(11);
    let peers = vec![
        Peer::new(client_config(), 1_700_000_000, &mut r),
        Peer::new(client_config(), 1_700_000_000, &mut r),
    ];
    let mut set = PeerSet::new(peers, 1_700_000_000, &mut r);
    set.connect_all(now);
    let links = vec![
        Link::new(server_config("pcrf1.operator.test")),
        Link::new(server_config("pcrf2.operator.test")),
    ];
    let mut net = Net::new(set, links, now);
    net.pump();
    let ups = net
        .take_events()
        .iter()
        .filter(|e| matches!(e, PeerSetEvent::Up { .. }))
        .count();
    assert_eq!(ups, 2);
    net
}

/// Application requests each server received, in order.
fn requests_at(net: &Net<PeerSet>, link: usize) -> Vec<Message> {
    net.links[link]
        .messages(Dir::ToServer)
        .into_iter()
        .filter(|m| m.flags.request && m.application_id == application::RX)
        .collect()
}

#[test]
fn requests_go_to_the_primary() {
    let mut net = open_set();
    net.links[0].auto_answer = true;
    let id = net.client.send_request(net.now, aar("s;1")).unwrap();
    net.pump();
    assert!(
        matches!(&net.take_events()[..], [PeerSetEvent::Answer { peer: 0, id: got, .. }] if *got == id)
    );
    assert_eq!(requests_at(&net, 0).len(), 1);
    assert!(requests_at(&net, 1).is_empty());
}

#[test]
fn tx_timeout_fails_over_with_t_flag_and_same_end_to_end() {
    let mut net = open_set();
    net.links[1].auto_answer = true;
    let id = net.client.send_request(net.now, aar("s;2")).unwrap();
    net.pump();
    assert!(net.take_events().is_empty());
    net.advance(Duration::from_secs(5));
    let first = &requests_at(&net, 0)[0];
    let retry = &requests_at(&net, 1)[0];
    assert!(!first.flags.retransmitted);
    assert!(retry.flags.retransmitted, "T flag on the failover copy");
    assert_eq!(retry.end_to_end, first.end_to_end);
    assert_ne!((retry.hop_by_hop, 0), (first.hop_by_hop, 1));
    assert_eq!(retry.session_id(), Some("s;2"));
    let events = net.take_events();
    assert!(
        matches!(&events[..], [PeerSetEvent::Answer { peer: 1, id: got, answer }] if *got == id && answer.end_to_end == first.end_to_end),
        "{events:?}"
    );
}

#[test]
fn peer_down_fails_pending_requests_over() {
    let mut net = open_set();
    net.links[1].auto_answer = true;
    let id = net.client.send_request(net.now, aar("s;3")).unwrap();
    net.pump();
    // The primary's transport drops.
    net.links[0].server = None;
    net.client.handle_closed(net.now, 0);
    net.pump();
    let events = net.take_events();
    assert!(matches!(
        events[0],
        PeerSetEvent::Down {
            peer: 0,
            reason: DownReason::TransportClosed
        }
    ));
    assert!(
        matches!(&events[1..], [PeerSetEvent::Answer { peer: 1, id: got, .. }] if *got == id),
        "{events:?}"
    );
    let retry = &requests_at(&net, 1)[0];
    assert!(retry.flags.retransmitted);
    assert_eq!(retry.end_to_end, requests_at(&net, 0)[0].end_to_end);
}

#[test]
fn second_failure_is_reported() {
    let mut net = open_set();
    let id = net.client.send_request(net.now, aar("s;4")).unwrap();
    net.pump();
    net.advance(Duration::from_secs(10));
    let events = net.take_events();
    match &events[..] {
        [PeerSetEvent::Failed {
            id: got,
            request,
            cause: FailureCause::TimedOut,
        }] => {
            assert_eq!(*got, id);
            assert!(request.flags.retransmitted);
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        requests_at(&net, 0).len(),
        1,
        "no second copy to the primary"
    );
    assert_eq!(requests_at(&net, 1).len(), 1);
}

#[test]
fn no_alternative_fails_at_once() {
    let mut net = open_set();
    net.links[1].refuse = true;
    net.links[1].server = None;
    net.client.handle_closed(net.now, 1);
    net.pump();
    net.take_events();
    let id = net.client.send_request(net.now, aar("s;5")).unwrap();
    net.pump();
    net.advance(Duration::from_secs(5));
    assert!(net
        .take_events()
        .iter()
        .any(|e| matches!(e, PeerSetEvent::Failed { id: got, cause: FailureCause::TimedOut, .. } if *got == id)));
}

#[test]
fn traffic_returns_to_the_primary_when_it_is_back() {
    let mut net = open_set();
    net.links[0].auto_answer = true;
    net.links[1].auto_answer = true;
    net.links[0].refuse = true;
    net.links[0].server = None;
    net.client.handle_closed(net.now, 0);
    net.pump();
    assert_eq!(net.client.active_peer(), Some(1));
    net.client.send_request(net.now, aar("s;6")).unwrap();
    net.pump();
    assert_eq!(requests_at(&net, 1).len(), 1);
    // The primary reconnects after its back-off.
    net.links[0].refuse = false;
    net.advance(Duration::from_secs(1));
    assert!(net
        .take_events()
        .iter()
        .any(|e| matches!(e, PeerSetEvent::Up { peer: 0, .. })));
    assert_eq!(net.client.active_peer(), Some(0));
    net.client.send_request(net.now, aar("s;7")).unwrap();
    net.pump();
    assert_eq!(requests_at(&net, 0).len(), 1);
    assert_eq!(requests_at(&net, 1).len(), 1);
}

#[test]
fn nothing_open_is_an_error() {
    let mut r = rng(1);
    let mut set = PeerSet::new(vec![Peer::new(client_config(), 0, &mut r)], 0, &mut r);
    assert!(matches!(
        set.send_request(t0(), aar("s")),
        Err(SendError::NoOpenPeer(_))
    ));
}

fn rar(e2e: u32, hop: u32, retransmitted: bool) -> Message {
    let mut m = Message::request(command::RE_AUTH, application::RX)
        .with(Avp::utf8(dict::SESSION_ID, "pcscf.estuary.test;1;9"))
        .with(Avp::identity(dict::ORIGIN_HOST, "pcrf.operator.test"))
        .with(Avp::identity(dict::ORIGIN_REALM, "operator.test"))
        .with(Avp::unsigned32(dict::AUTH_APPLICATION_ID, application::RX))
        .with(Avp::integer32(dict::RE_AUTH_REQUEST_TYPE, 0));
    m.end_to_end = e2e;
    m.hop_by_hop = hop;
    m.flags.retransmitted = retransmitted;
    m
}

#[test]
fn retransmitted_request_is_answered_from_the_cache() {
    let mut net = open_set();
    net.client
        .handle_bytes(net.now, 0, &rar(0xabc, 1, false).to_bytes().unwrap());
    let request = match &net.client.poll_event() {
        Some(PeerSetEvent::Request { peer: 0, request }) => request.clone(),
        other => panic!("{other:?}"),
    };
    let answer = success_answer(&request, "pcscf.estuary.test");
    net.client.send_answer(net.now, 0, answer.clone()).unwrap();
    let first = match net.client.poll_transmit() {
        Some((0, Transmit::Bytes(b))) => Message::decode(&b).unwrap(),
        other => panic!("{other:?}"),
    };
    assert_eq!(first, answer);

    // The same request (same Origin-Host and End-to-End) arrives over the other peer with T.
    net.client
        .handle_bytes(net.now, 1, &rar(0xabc, 99, true).to_bytes().unwrap());
    assert_eq!(net.client.poll_event(), None, "not delivered twice");
    let repeated = match net.client.poll_transmit() {
        Some((1, Transmit::Bytes(b))) => Message::decode(&b).unwrap(),
        other => panic!("{other:?}"),
    };
    assert_eq!(repeated.hop_by_hop, 99);
    assert_eq!(repeated.end_to_end, 0xabc);
    assert_eq!(repeated.result_code(), Some(2001));

    // A different End-to-End with T set is new.
    net.client
        .handle_bytes(net.now, 1, &rar(0xabd, 100, true).to_bytes().unwrap());
    assert!(matches!(
        net.client.poll_event(),
        Some(PeerSetEvent::Request { peer: 1, .. })
    ));
}

#[test]
fn retransmission_before_the_answer_is_reported_as_duplicate() {
    let mut net = open_set();
    net.client
        .handle_bytes(net.now, 0, &rar(0x55, 1, false).to_bytes().unwrap());
    assert!(matches!(
        net.client.poll_event(),
        Some(PeerSetEvent::Request { .. })
    ));
    net.client
        .handle_bytes(net.now, 1, &rar(0x55, 2, true).to_bytes().unwrap());
    assert!(matches!(
        net.client.poll_event(),
        Some(PeerSetEvent::DuplicateRequest { peer: 1, request }) if request.hop_by_hop == 2
    ));
    assert!(net.client.poll_transmit().is_none());
}

#[test]
fn duplicates_are_forgotten_after_the_window() {
    let mut net = open_set();
    net.client
        .handle_bytes(net.now, 0, &rar(0x77, 1, false).to_bytes().unwrap());
    net.pump();
    net.take_events();
    net.advance(Duration::from_secs(241));
    net.take_events();
    net.client
        .handle_bytes(net.now, 1, &rar(0x77, 2, true).to_bytes().unwrap());
    assert!(matches!(
        net.client.poll_event(),
        Some(PeerSetEvent::Request { peer: 1, .. })
    ));
}

#[test]
fn peer_events_are_tagged_with_the_index() {
    let mut net = open_set();
    net.links[1]
        .server()
        .disconnect(net.now, estuary_diameter::DisconnectCause::Rebooting);
    net.pump();
    assert!(matches!(
        &net.take_events()[..],
        [PeerSetEvent::Down {
            peer: 1,
            reason: DownReason::PeerDisconnected(_)
        }]
    ));
    assert!(net.client.peer(0).unwrap().is_open());
    let _ = PeerEvent::Down(DownReason::TransportClosed);
}

#[test]
fn one_poll_timeout_covers_all_peers() {
    let mut net = open_set();
    let t = net.client.poll_timeout().unwrap();
    let min = net
        .client
        .peers()
        .iter()
        .filter_map(Peer::poll_timeout)
        .min()
        .unwrap();
    assert_eq!(t, min);
    net.client.send_request(net.now, aar("s")).unwrap();
    assert_eq!(
        net.client.poll_timeout(),
        Some(net.now + Duration::from_secs(5))
    );
}

#[test]
fn a_reconfigured_set_retires_adds_and_reorders_its_peers() {
    let mut net = open_set();
    for l in &mut net.links {
        l.auto_answer = true;
    }
    // The primary leaves the configuration: DPR (DO_NOT_WANT_TO_TALK_TO_YOU), and requests go
    // to the other peer.
    net.client.retire(net.now, 0);
    net.pump();
    let dpr = net.links[0].messages(Dir::ToServer).into_iter().find(|m| m.command_code == command::DISCONNECT_PEER);
    assert!(dpr.is_some(), "a DPR to the retired peer");
    assert_eq!(net.client.active_peer(), Some(1));
    assert_eq!(net.client.in_service(), [1]);
    net.client.send_request(net.now, aar("s;r1")).unwrap();
    net.pump();
    assert_eq!(requests_at(&net, 1).len(), 1);
    // It is never connected again.
    net.advance(Duration::from_secs(120));
    assert!(!net.client.peer(0).unwrap().is_open());
    assert!(requests_at(&net, 0).is_empty());

    // A new peer comes in at the end of the order and connects at once.
    net.links.push(Link::new(server_config("pcrf3.operator.test")));
    net.links[2].auto_answer = true;
    let third = net.client.add(net.now, Peer::new(client_config(), 1_700_000_000, &mut rng(12)));
    net.pump();
    assert_eq!(third, 2, "a new index: the driver's connections keep theirs");
    assert!(net.take_events().iter().any(|e| matches!(e, PeerSetEvent::Up { peer: 2, .. })));
    assert_eq!(net.client.active_peer(), Some(1), "behind the peer that stayed");
    // The reload listed it first.
    net.client.set_order(&[2, 1]);
    assert_eq!(net.client.in_service(), [2, 1]);
    net.client.send_request(net.now, aar("s;r2")).unwrap();
    net.pump();
    assert_eq!(requests_at(&net, 2).len(), 1);
    // A retired index cannot come back by the order.
    net.client.set_order(&[0, 1, 2]);
    assert_eq!(net.client.in_service(), [1, 2]);
}
