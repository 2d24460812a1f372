//! The peer state machine on a virtual clock, against a responder `Peer` or scripted bytes.

mod common;

use std::time::Duration;

use common::*;
use estuary_diameter::dictionary::{self as dict, VENDOR_3GPP};
use estuary_diameter::message::{application, command};
use estuary_diameter::validate::CommandRule;
use estuary_diameter::{
    result_code, Application, Avp, AvpKey, DisconnectCause, DownReason, Message, Peer, PeerConfig,
    PeerEvent, PeerStatus, Transmit, Validator,
};

const TW: Duration = Duration::from_secs(30);

fn net_with(client: PeerConfig, server: PeerConfig) -> Net<Peer> {
    let now = t0();
    let mut peer = Peer::new(client, 1_700_000_000, &mut rng(1));
    peer.connect(now);
    let mut net = Net::new(peer, vec![Link::new(server)], now);
    net.pump();
    net
}

fn open_net() -> Net<Peer> {
    let net = net_with(client_config(), server_config("pcrf.operator.test"));
    assert!(
        net.client.is_open(),
        "handshake did not complete: {:?}",
        net.events
    );
    net
}

fn downs(events: &[PeerEvent]) -> Vec<DownReason> {
    events
        .iter()
        .filter_map(|e| match e {
            PeerEvent::Down(r) => Some(r.clone()),
            _ => None,
        })
        .collect()
}

#[test]
fn cer_cea_opens_both_sides() {
    let mut net = open_net();
    let events = net.take_events();
    let info = match &events[..] {
        [PeerEvent::Up(info)] => info.clone(),
        other => panic!("expected one Up, got {other:?}"),
    };
    assert_eq!(info.host, "pcrf.operator.test");
    assert_eq!(info.realm, "operator.test");
    assert_eq!(info.product_name.as_deref(), Some("TestPCRF"));
    assert!(info.applications.contains(&RX));
    assert!(
        matches!(&net.links[0].server_events[..], [PeerEvent::Up(i)] if i.host == "pcscf.estuary.test")
    );

    let cer = &net.links[0].messages(Dir::ToServer)[0];
    assert_eq!(
        (cer.command_code, cer.application_id),
        (command::CAPABILITIES_EXCHANGE, 0)
    );
    assert!(cer.flags.request && !cer.flags.proxiable);
    assert_eq!(
        cer.find(dict::SUPPORTED_VENDOR_ID).unwrap().as_u32(),
        Ok(VENDOR_3GPP)
    );
    assert_eq!(
        cer.find(dict::HOST_IP_ADDRESS).unwrap().as_address(),
        Ok("192.0.2.10".parse().unwrap())
    );
    let vsai = cer
        .find(dict::VENDOR_SPECIFIC_APPLICATION_ID)
        .unwrap()
        .grouped_avps()
        .unwrap();
    assert_eq!(
        vsai,
        [
            Avp::unsigned32(dict::VENDOR_ID, VENDOR_3GPP),
            Avp::unsigned32(dict::AUTH_APPLICATION_ID, application::RX)
        ]
    );
    let cea = &net.links[0].messages(Dir::ToClient)[0];
    assert_eq!(cea.result_code(), Some(result_code::SUCCESS));
    assert_eq!(
        (cea.hop_by_hop, cea.end_to_end),
        (cer.hop_by_hop, cer.end_to_end)
    );
    assert_eq!(cea.avps[0].key(), dict::RESULT_CODE);
}

#[test]
fn end_to_end_ids_carry_the_start_time() {
    let net = open_net();
    let cer = &net.links[0].messages(Dir::ToServer)[0];
    // RFC 6733 §3: high 12 bits = low 12 bits of the start time (1_700_000_000 & 0xfff).
    assert_eq!(cer.end_to_end >> 20, 1_700_000_000 & 0xfff);
}

#[test]
fn watchdog_sends_dwr_after_tw_of_silence_and_dwa_keeps_it_open() {
    let mut net = open_net();
    net.take_events();
    let dwrs = |net: &Net<Peer>| {
        net.links[0]
            .messages(Dir::ToServer)
            .iter()
            .filter(|m| m.command_code == command::DEVICE_WATCHDOG && m.flags.request)
            .count()
    };
    // Tw is jittered by ±2 s: nothing before Tw - 2 s.
    net.advance(TW - Duration::from_secs(2) - Duration::from_millis(1));
    assert_eq!(dwrs(&net), 0);
    net.advance(Duration::from_secs(4) + Duration::from_millis(2));
    assert_eq!(dwrs(&net), 1);
    let dwa = net.links[0]
        .messages(Dir::ToClient)
        .into_iter()
        .find(|m| m.command_code == command::DEVICE_WATCHDOG)
        .expect("DWA");
    assert_eq!(dwa.result_code(), Some(result_code::SUCCESS));
    assert!(dwa.find(dict::ORIGIN_STATE_ID).is_some());
    // Hours of silence: DWR/DWA keep going, the connection stays up.
    net.advance(Duration::from_secs(3600));
    assert!(net.client.is_open());
    assert!(downs(&net.take_events()).is_empty());
    assert!(dwrs(&net) >= 3600 / 32);
}

#[test]
fn any_received_message_resets_the_watchdog() {
    let mut net = open_net();
    // Something from the server every 20 s: the client never needs a DWR.
    for _ in 0..10 {
        net.advance(Duration::from_secs(20));
        let server = net.links[0].server();
        let request = Message::request(command::RE_AUTH, application::RX)
            .with(Avp::utf8(dict::SESSION_ID, "s;1"))
            .with(Avp::identity(dict::ORIGIN_HOST, "pcrf.operator.test"))
            .with(Avp::identity(dict::ORIGIN_REALM, "operator.test"));
        server.send_request(net.now, request).unwrap();
        net.pump();
    }
    let client_dwrs = net.links[0]
        .messages(Dir::ToServer)
        .iter()
        .filter(|m| m.command_code == command::DEVICE_WATCHDOG && m.flags.request)
        .count();
    assert_eq!(client_dwrs, 0);
}

#[test]
fn missing_dwa_fails_the_link_and_reconnects_after_backoff() {
    let mut net = open_net();
    net.take_events();
    let opened = net.now;
    net.links[0].muted = true;
    // DWR at Tw±2, failure Tw±2 later: step until the Down.
    let mut events = Vec::new();
    for _ in 0..1000 {
        net.advance(Duration::from_millis(100));
        events = net.take_events();
        if !events.is_empty() {
            break;
        }
    }
    assert_eq!(downs(&events), [DownReason::WatchdogExpired]);
    assert_eq!(net.client.status(), PeerStatus::Closed);
    assert!(
        net.links[0].server.is_none(),
        "the client closed the transport"
    );
    let down_at = net.now;
    let elapsed = down_at - opened;
    assert!(elapsed > TW * 2 - Duration::from_secs(4), "{elapsed:?}");
    assert!(
        elapsed <= TW * 2 + Duration::from_secs(4) + Duration::from_millis(100),
        "{elapsed:?}"
    );
    let dwrs = net.links[0]
        .messages(Dir::ToServer)
        .iter()
        .filter(|m| m.command_code == 280)
        .count();
    assert_eq!(dwrs, 1);
    // Reconnect after the 1 s initial back-off.
    net.links[0].muted = false;
    let reconnect_at = net.client.poll_timeout().unwrap();
    assert!(reconnect_at <= down_at + Duration::from_secs(1));
    net.advance(Duration::from_millis(1500));
    assert!(net.client.is_open());
    assert_eq!(net.links[0].accepted, 2);
    assert!(matches!(&net.take_events()[..], [PeerEvent::Up(_)]));
}

#[test]
fn requests_are_answered_and_matched_by_hop_by_hop() {
    let mut net = open_net();
    net.take_events();
    let id = net.client.send_request(net.now, aar("pcscf;1;1")).unwrap();
    net.pump();
    let request = match net.links[0].server_events.last() {
        Some(PeerEvent::Request(r)) => r.clone(),
        other => panic!("server got {other:?}"),
    };
    assert_eq!(request.hop_by_hop, id.0);
    assert_eq!(request.session_id(), Some("pcscf;1;1"));
    let answer = success_answer(&request, "pcrf.operator.test");
    net.links[0]
        .server()
        .send_answer(net.now, answer.clone())
        .unwrap();
    net.pump();
    assert_eq!(net.take_events(), [PeerEvent::Answer { id, answer }]);
    assert_eq!(net.client.pending_requests(), 0);
    // No Tx timeout fires later for it.
    net.advance(Duration::from_secs(10));
    assert!(!net
        .take_events()
        .iter()
        .any(|e| matches!(e, PeerEvent::TimedOut { .. })));
}

#[test]
fn tx_expiry_returns_the_request() {
    let mut net = open_net();
    net.take_events();
    let id = net.client.send_request(net.now, aar("pcscf;1;2")).unwrap();
    net.pump();
    net.advance(Duration::from_millis(4999));
    assert!(net.take_events().is_empty());
    net.advance(Duration::from_millis(2));
    match &net.take_events()[..] {
        [PeerEvent::TimedOut { id: got, request }] => {
            assert_eq!(*got, id);
            assert_eq!(request.session_id(), Some("pcscf;1;2"));
            assert_eq!(request.hop_by_hop, id.0);
        }
        other => panic!("expected TimedOut, got {other:?}"),
    }
    // A late answer is discarded.
    let late = match net.links[0].server_events.last() {
        Some(PeerEvent::Request(r)) => success_answer(r, "pcrf.operator.test"),
        other => panic!("{other:?}"),
    };
    net.links[0].server().send_answer(net.now, late).unwrap();
    net.pump();
    assert!(net.take_events().is_empty());
}

#[test]
fn requests_pending_at_down_are_undelivered() {
    let mut net = open_net();
    net.take_events();
    let a = net.client.send_request(net.now, aar("s;a")).unwrap();
    let b = net.client.send_request(net.now, aar("s;b")).unwrap();
    net.client.handle_closed(net.now);
    net.pump();
    let events = net.take_events();
    assert!(matches!(
        events[0],
        PeerEvent::Down(DownReason::TransportClosed)
    ));
    let mut undelivered: Vec<_> = events
        .iter()
        .filter_map(|e| match e {
            PeerEvent::Undelivered { id, .. } => Some(*id),
            _ => None,
        })
        .collect();
    undelivered.sort();
    let mut want = vec![a, b];
    want.sort();
    assert_eq!(undelivered, want);
}

#[test]
fn send_request_needs_an_open_connection() {
    let mut peer = Peer::new(client_config(), 0, &mut rng(3));
    let err = peer.send_request(t0(), aar("s")).unwrap_err();
    assert!(matches!(err, estuary_diameter::SendError::NotOpen(_)));
    assert_eq!(err.into_message().session_id(), Some("s"));
}

#[test]
fn disconnect_sends_dpr_and_closes_on_dpa_without_reconnecting() {
    let mut net = open_net();
    net.take_events();
    net.client.disconnect(net.now, DisconnectCause::Rebooting);
    assert_eq!(net.client.status(), PeerStatus::Closing);
    net.pump();
    let dpr = net.links[0].messages(Dir::ToServer).pop().unwrap();
    assert_eq!(dpr.command_code, command::DISCONNECT_PEER);
    assert_eq!(dpr.find(dict::DISCONNECT_CAUSE).unwrap().as_u32(), Ok(0));
    let dpa = net.links[0].messages(Dir::ToClient).pop().unwrap();
    assert_eq!(
        (dpa.command_code, dpa.result_code()),
        (command::DISCONNECT_PEER, Some(2001))
    );
    assert_eq!(
        downs(&net.take_events()),
        [DownReason::LocalDisconnect(DisconnectCause::Rebooting)]
    );
    assert!(
        downs(&net.links[0].server_events).contains(&DownReason::PeerDisconnected(Some(
            DisconnectCause::Rebooting
        )))
    );
    assert_eq!(net.client.status(), PeerStatus::Closed);
    assert_eq!(
        net.client.poll_timeout(),
        None,
        "no reconnection after our own DPR"
    );
}

#[test]
fn dpr_without_dpa_closes_after_the_timeout() {
    let mut net = open_net();
    net.take_events();
    net.links[0].muted = true;
    net.client.disconnect(net.now, DisconnectCause::Busy);
    net.pump();
    net.advance(Duration::from_millis(4999));
    assert_eq!(net.client.status(), PeerStatus::Closing);
    net.advance(Duration::from_millis(2));
    assert_eq!(net.client.status(), PeerStatus::Closed);
    assert_eq!(
        downs(&net.take_events()),
        [DownReason::LocalDisconnect(DisconnectCause::Busy)]
    );
}

#[test]
fn peer_dpr_rebooting_reconnects_with_backoff() {
    let mut net = open_net();
    net.take_events();
    net.links[0]
        .server()
        .disconnect(net.now, DisconnectCause::Rebooting);
    net.pump();
    let dpa = net.links[0].messages(Dir::ToServer).pop().unwrap();
    assert_eq!(
        (dpa.command_code, dpa.flags.request, dpa.result_code()),
        (282, false, Some(2001))
    );
    assert_eq!(
        downs(&net.take_events()),
        [DownReason::PeerDisconnected(Some(
            DisconnectCause::Rebooting
        ))]
    );
    assert_eq!(
        net.client.poll_timeout(),
        Some(net.now + Duration::from_secs(1))
    );
    net.advance(Duration::from_secs(1));
    assert!(net.client.is_open());
}

#[test]
fn peer_dpr_do_not_want_to_talk_waits_much_longer() {
    let mut net = open_net();
    net.take_events();
    net.links[0]
        .server()
        .disconnect(net.now, DisconnectCause::DoNotWantToTalkToYou);
    net.pump();
    assert_eq!(
        downs(&net.take_events()),
        [DownReason::PeerDisconnected(Some(
            DisconnectCause::DoNotWantToTalkToYou
        ))]
    );
    assert_eq!(
        net.client.poll_timeout(),
        Some(net.now + Duration::from_secs(300))
    );
    net.advance(Duration::from_secs(299));
    assert_eq!(net.client.status(), PeerStatus::Closed);
    net.advance(Duration::from_secs(1));
    assert!(net.client.is_open());
}

#[test]
fn cea_failure_goes_down_with_the_reason_and_backs_off_doubling() {
    let mut server = server_config("pcrf.operator.test");
    server.applications = vec![Application::Auth {
        id: 4,
        vendor: None,
    }];
    let mut net = net_with(client_config(), server);
    let events = net.take_events();
    assert_eq!(
        downs(&events),
        [DownReason::CapabilitiesRejected {
            result_code: result_code::NO_COMMON_APPLICATION,
            error_message: None
        }]
    );
    let cea = net.links[0].messages(Dir::ToClient).pop().unwrap();
    assert_eq!(cea.result_code(), Some(5010));
    let first = net.now;
    assert_eq!(
        net.client.poll_timeout(),
        Some(first + Duration::from_secs(1))
    );
    net.advance(Duration::from_secs(1));
    assert_eq!(net.links[0].accepted, 2);
    assert_eq!(
        net.client.poll_timeout(),
        Some(net.now + Duration::from_secs(2))
    );
    net.advance(Duration::from_secs(2));
    assert_eq!(
        net.client.poll_timeout(),
        Some(net.now + Duration::from_secs(4))
    );
}

#[test]
fn relay_application_counts_as_common() {
    let mut server = server_config("dra.operator.test");
    server.applications = vec![Application::Auth {
        id: application::RELAY,
        vendor: None,
    }];
    // The responder itself needs our application, so give it both.
    server.applications.push(RX);
    let net = net_with(client_config(), server);
    assert!(net.client.is_open());
}

#[test]
fn connect_failure_backs_off() {
    let now = t0();
    let mut peer = Peer::new(client_config(), 0, &mut rng(2));
    peer.connect(now);
    let mut link = Link::new(server_config("pcrf"));
    link.refuse = true;
    let mut net = Net::new(peer, vec![link], now);
    net.pump();
    assert_eq!(downs(&net.take_events()), [DownReason::ConnectFailed]);
    net.advance(Duration::from_secs(1));
    net.advance(Duration::from_secs(2));
    assert_eq!(downs(&net.take_events()).len(), 2);
    net.links[0].refuse = false;
    net.advance(Duration::from_secs(4));
    assert!(net.client.is_open());
}

#[test]
fn handshake_timeout_when_cea_never_comes() {
    let now = t0();
    let mut peer = Peer::new(client_config(), 0, &mut rng(2));
    peer.connect(now);
    let mut link = Link::new(server_config("pcrf"));
    link.muted = true;
    let mut net = Net::new(peer, vec![link], now);
    net.pump();
    assert_eq!(net.client.status(), PeerStatus::WaitCea);
    net.advance(Duration::from_secs(10));
    assert_eq!(downs(&net.take_events()), [DownReason::HandshakeTimeout]);
}

#[test]
fn byte_by_byte_delivery_reassembles() {
    let now = t0();
    let mut peer = Peer::new(client_config(), 0, &mut rng(5));
    peer.connect(now);
    let mut link = Link::new(server_config("pcrf.operator.test"));
    link.auto_answer = true;
    let mut net = Net::new(peer, vec![link], now);
    net.chunk = 1;
    net.pump();
    assert!(net.client.is_open());
    for i in 0..3 {
        net.client
            .send_request(net.now, aar(&format!("s;{i}")))
            .unwrap();
    }
    net.pump();
    let answers = net
        .take_events()
        .into_iter()
        .filter(|e| matches!(e, PeerEvent::Answer { .. }))
        .count();
    assert_eq!(answers, 3);
    net.advance(TW + Duration::from_secs(3));
    assert!(net.client.is_open());
}

#[test]
fn odd_chunk_sizes_reassemble() {
    for chunk in [2, 3, 5, 7, 13, 64, 1000] {
        let now = t0();
        let mut peer = Peer::new(client_config(), 0, &mut rng(chunk as u64));
        peer.connect(now);
        let mut link = Link::new(server_config("pcrf.operator.test"));
        link.auto_answer = true;
        let mut net = Net::new(peer, vec![link], now);
        net.chunk = chunk;
        net.pump();
        for i in 0..4 {
            net.client
                .send_request(net.now, aar(&format!("s;{i}")))
                .unwrap();
        }
        net.pump();
        let answers = net
            .take_events()
            .iter()
            .filter(|e| matches!(e, PeerEvent::Answer { .. }))
            .count();
        assert_eq!(answers, 4, "chunk {chunk}");
    }
}

/// Opens a client against scripted bytes: returns the peer and the CER it sent.
fn scripted_open(config: PeerConfig) -> (Peer, std::time::Instant) {
    scripted_open_seeded(config, 8)
}

fn scripted_open_seeded(config: PeerConfig, seed: u64) -> (Peer, std::time::Instant) {
    let now = t0();
    let mut peer = Peer::new(config, 0, &mut rng(seed));
    peer.connect(now);
    assert_eq!(peer.poll_transmit(), Some(Transmit::Connect));
    peer.handle_connected(now);
    let Some(Transmit::Bytes(bytes)) = peer.poll_transmit() else {
        panic!("no CER")
    };
    let cer = Message::decode(&bytes).unwrap();
    let mut cea = Message::answer_to(&cer)
        .with(Avp::unsigned32(dict::RESULT_CODE, 2001))
        .with(Avp::identity(dict::ORIGIN_HOST, "pcrf"))
        .with(Avp::identity(dict::ORIGIN_REALM, "operator.test"))
        .with(Avp::address(
            dict::HOST_IP_ADDRESS,
            "198.51.100.1".parse().unwrap(),
        ))
        .with(Avp::unsigned32(dict::VENDOR_ID, 0))
        .with(Avp::utf8(dict::PRODUCT_NAME, "script"))
        .with(Avp::unsigned32(dict::AUTH_APPLICATION_ID, application::RX));
    cea.flags.proxiable = false;
    peer.handle_bytes(now, &cea.to_bytes().unwrap());
    assert!(matches!(peer.poll_event(), Some(PeerEvent::Up(_))));
    (peer, now)
}

fn rar() -> Message {
    let mut m = Message::request(command::RE_AUTH, application::RX)
        .with(Avp::utf8(dict::SESSION_ID, "pcscf.estuary.test;1;7"))
        .with(Avp::identity(dict::ORIGIN_HOST, "pcrf"))
        .with(Avp::identity(dict::ORIGIN_REALM, "operator.test"))
        .with(Avp::identity(dict::DESTINATION_REALM, "estuary.test"))
        .with(Avp::identity(dict::DESTINATION_HOST, "pcscf.estuary.test"))
        .with(Avp::unsigned32(dict::AUTH_APPLICATION_ID, application::RX))
        .with(Avp::integer32(dict::RE_AUTH_REQUEST_TYPE, 0))
        .with(Avp::integer32(dict::SPECIFIC_ACTION, 2));
    m.hop_by_hop = 0x1111;
    m.end_to_end = 0x2222;
    m
}

fn only_answer(peer: &mut Peer) -> Message {
    let Some(Transmit::Bytes(bytes)) = peer.poll_transmit() else {
        panic!("no answer sent")
    };
    assert_eq!(peer.poll_transmit(), None);
    Message::decode(&bytes).unwrap()
}

#[test]
fn incoming_rar_reaches_the_application_and_is_answered() {
    let (mut peer, now) = scripted_open(client_config());
    peer.handle_bytes(now, &rar().to_bytes().unwrap());
    let Some(PeerEvent::Request(request)) = peer.poll_event() else {
        panic!("no request")
    };
    assert_eq!(request, rar());
    assert_eq!(
        peer.poll_transmit(),
        None,
        "the application answers, not the peer"
    );
    let answer = success_answer(&request, "pcscf.estuary.test");
    peer.send_answer(now, answer.clone()).unwrap();
    assert_eq!(only_answer(&mut peer), answer);
}

#[test]
fn rar_with_unknown_mandatory_avp_is_answered_5001() {
    let (mut peer, now) = scripted_open(client_config());
    let odd = Avp::octets(AvpKey::vendor(9_999, VENDOR_3GPP), b"??".to_vec()).with_mandatory(true);
    let request = rar().with(odd.clone());
    peer.handle_bytes(now, &request.to_bytes().unwrap());
    assert_eq!(
        peer.poll_event(),
        None,
        "rejected requests do not reach the application"
    );
    let answer = only_answer(&mut peer);
    assert_eq!(answer.result_code(), Some(result_code::AVP_UNSUPPORTED));
    assert!(!answer.flags.error && !answer.flags.request);
    assert_eq!(
        (answer.command_code, answer.application_id),
        (command::RE_AUTH, application::RX)
    );
    assert_eq!((answer.hop_by_hop, answer.end_to_end), (0x1111, 0x2222));
    assert_eq!(
        answer.avps[0],
        Avp::utf8(dict::SESSION_ID, "pcscf.estuary.test;1;7")
    );
    assert_eq!(answer.origin_host(), Some("pcscf.estuary.test"));
    let failed = answer
        .find(dict::FAILED_AVP)
        .unwrap()
        .grouped_avps()
        .unwrap();
    assert_eq!(failed, [odd]);
}

#[test]
fn unknown_optional_avp_is_kept() {
    let (mut peer, now) = scripted_open(client_config());
    let extra =
        Avp::octets(AvpKey::vendor(9_999, VENDOR_3GPP), b"x".to_vec()).with_mandatory(false);
    let request = rar().with(extra.clone());
    peer.handle_bytes(now, &request.to_bytes().unwrap());
    let Some(PeerEvent::Request(got)) = peer.poll_event() else {
        panic!("not delivered")
    };
    assert_eq!(got.avps.last(), Some(&extra));
}

#[test]
fn request_missing_origin_host_is_answered_5005() {
    // Base rule (DWR) and an application rule table for RAR.
    static RX_RULES: &[CommandRule] = &[CommandRule {
        application_id: application::RX,
        command_code: command::RE_AUTH,
        request: true,
        required: &[
            dict::SESSION_ID,
            dict::ORIGIN_HOST,
            dict::ORIGIN_REALM,
            dict::DESTINATION_REALM,
            dict::DESTINATION_HOST,
            dict::AUTH_APPLICATION_ID,
            dict::SPECIFIC_ACTION,
        ],
    }];
    let mut config = client_config();
    config.validator = Validator::base().with_rules(RX_RULES);
    let (mut peer, now) = scripted_open(config);

    let mut request = rar();
    request.avps.retain(|a| a.key() != dict::ORIGIN_HOST);
    peer.handle_bytes(now, &request.to_bytes().unwrap());
    assert_eq!(peer.poll_event(), None);
    let answer = only_answer(&mut peer);
    assert_eq!(answer.result_code(), Some(result_code::MISSING_AVP));
    let failed = answer
        .find(dict::FAILED_AVP)
        .unwrap()
        .grouped_avps()
        .unwrap();
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0].key(), dict::ORIGIN_HOST);
    assert!(failed[0].data.is_empty());

    let mut dwr =
        Message::request(command::DEVICE_WATCHDOG, 0).with(Avp::identity(dict::ORIGIN_REALM, "r"));
    dwr.hop_by_hop = 5;
    peer.handle_bytes(now, &dwr.to_bytes().unwrap());
    let answer = only_answer(&mut peer);
    assert_eq!(
        (answer.command_code, answer.result_code()),
        (280, Some(5005))
    );
}

#[test]
fn request_for_an_unadvertised_application_is_3007_with_e_bit() {
    let (mut peer, now) = scripted_open(client_config());
    let mut request = rar();
    request.application_id = 16_777_238; // Gx
    peer.handle_bytes(now, &request.to_bytes().unwrap());
    assert_eq!(peer.poll_event(), None);
    let answer = only_answer(&mut peer);
    assert_eq!(
        answer.result_code(),
        Some(result_code::APPLICATION_UNSUPPORTED)
    );
    assert!(answer.flags.error);
    assert_eq!(answer.application_id, 16_777_238);
}

#[test]
fn unknown_base_command_is_3001_with_e_bit() {
    let (mut peer, now) = scripted_open(client_config());
    let mut request = Message::request(999, 0)
        .with(Avp::identity(dict::ORIGIN_HOST, "pcrf"))
        .with(Avp::identity(dict::ORIGIN_REALM, "operator.test"));
    request.hop_by_hop = 77;
    peer.handle_bytes(now, &request.to_bytes().unwrap());
    let answer = only_answer(&mut peer);
    assert_eq!(answer.result_code(), Some(result_code::COMMAND_UNSUPPORTED));
    assert!(answer.flags.error);
    assert_eq!((answer.command_code, answer.hop_by_hop), (999, 77));
}

#[test]
fn malformed_avp_in_request_is_answered_5014_keeping_session_id() {
    let (mut peer, now) = scripted_open(client_config());
    let mut bytes = rar().to_bytes().unwrap();
    // The last AVP (Specific-Action, 16 bytes) claims 200 bytes.
    let at = bytes.len() - 16 + 7;
    bytes[at] = 200;
    peer.handle_bytes(now, &bytes);
    assert_eq!(peer.poll_event(), None);
    let answer = only_answer(&mut peer);
    assert_eq!(answer.result_code(), Some(result_code::INVALID_AVP_LENGTH));
    assert_eq!(answer.session_id(), Some("pcscf.estuary.test;1;7"));
    let failed = answer
        .find(dict::FAILED_AVP)
        .unwrap()
        .grouped_avps()
        .unwrap();
    assert_eq!(failed[0].key(), dict::SPECIFIC_ACTION);
    assert_eq!(failed[0].data, [0, 0, 0, 0]);
    assert!(peer.is_open());
}

#[test]
fn error_bit_on_request_is_3008() {
    let (mut peer, now) = scripted_open(client_config());
    let mut request = rar();
    request.flags.error = true;
    peer.handle_bytes(now, &request.to_bytes().unwrap());
    let answer = only_answer(&mut peer);
    assert_eq!(answer.result_code(), Some(result_code::INVALID_HDR_BITS));
    assert!(answer.flags.error);
}

#[test]
fn garbage_on_the_stream_closes_the_connection() {
    let (mut peer, now) = scripted_open(client_config());
    peer.handle_bytes(now, &[2, 0, 0, 20]);
    assert_eq!(
        peer.poll_event(),
        Some(PeerEvent::Down(DownReason::Framing(
            estuary_diameter::DecodeError::UnsupportedVersion(2)
        )))
    );
    assert_eq!(peer.poll_transmit(), Some(Transmit::Disconnect));
    assert_eq!(peer.status(), PeerStatus::Closed);
}

#[test]
fn dwr_from_the_peer_is_answered_at_once() {
    let (mut peer, now) = scripted_open(client_config());
    let mut dwr = Message::request(command::DEVICE_WATCHDOG, 0)
        .with(Avp::identity(dict::ORIGIN_HOST, "pcrf"))
        .with(Avp::identity(dict::ORIGIN_REALM, "operator.test"));
    dwr.flags.proxiable = false;
    dwr.hop_by_hop = 42;
    dwr.end_to_end = 43;
    peer.handle_bytes(now, &dwr.to_bytes().unwrap());
    let dwa = only_answer(&mut peer);
    assert_eq!(
        (
            dwa.command_code,
            dwa.flags.request,
            dwa.hop_by_hop,
            dwa.end_to_end
        ),
        (280, false, 42, 43)
    );
    assert_eq!(dwa.result_code(), Some(2001));
    assert_eq!(dwa.origin_host(), Some("pcscf.estuary.test"));
    assert_eq!(dwa.origin_realm(), Some("estuary.test"));
    assert_eq!(
        dwa.find(dict::ORIGIN_STATE_ID).unwrap().as_u32(),
        Ok(1_700_000_000)
    );
}

#[test]
fn request_before_cea_is_a_protocol_violation() {
    let now = t0();
    let mut peer = Peer::new(client_config(), 0, &mut rng(8));
    peer.connect(now);
    peer.handle_connected(now);
    while peer.poll_transmit().is_some() {}
    peer.handle_bytes(now, &rar().to_bytes().unwrap());
    assert!(matches!(
        peer.poll_event(),
        Some(PeerEvent::Down(DownReason::ProtocolViolation(_)))
    ));
}

#[test]
fn watchdog_interval_is_at_least_six_seconds() {
    let mut config = client_config();
    config.watchdog_interval = Duration::from_secs(1);
    let (peer, now) = scripted_open(config);
    let fire = peer.poll_timeout().unwrap();
    assert!(
        fire >= now + Duration::from_secs(4),
        "6 s minus 2 s jitter at most"
    );
}

#[test]
fn watchdog_jitter_comes_from_the_injected_rng() {
    // RFC 3539 §3.4.1: Tw ± 2 s. Different seeds give different timers, all in range; the
    // same seed gives the same timer.
    let mut offsets = Vec::new();
    for seed in 0..20 {
        let (peer, now) = scripted_open_seeded(client_config(), seed);
        let wait = peer.poll_timeout().unwrap() - now;
        assert!(
            wait >= TW - Duration::from_secs(2) && wait <= TW + Duration::from_secs(2),
            "{wait:?}"
        );
        offsets.push(wait);
    }
    offsets.sort();
    offsets.dedup();
    assert!(offsets.len() > 10, "jitter barely varies: {offsets:?}");
    let (a, now_a) = scripted_open_seeded(client_config(), 3);
    let (b, now_b) = scripted_open_seeded(client_config(), 3);
    assert_eq!(
        a.poll_timeout().unwrap() - now_a,
        b.poll_timeout().unwrap() - now_b
    );
}
