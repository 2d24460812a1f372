//! The Rx client and the Pcrf facility over two estuary-diameter Peers back to back (an
//! initiator and a `Peer::accept` responder) on a virtual clock: CER/CEA, then AAR/AAA,
//! RAR/RAA, ASR/ASA and STR/STA through the peers' framing, identifiers and validation.

mod common;

use std::net::IpAddr;
use std::time::{Duration, Instant};

use common::*;
use estuary_diameter::{Peer, PeerConfig, PeerEvent, Transmit};
use estuary_rx::media::Direction;
use estuary_rx::pcrf::Pcrf;
use estuary_rx::{
    rx_validator, AarKind, AbortCause, CallKey, RxClient, RxEvent, SpecificAction, RX_APPLICATION,
};
use rand::rngs::StdRng;
use rand::SeedableRng;

fn peer_config(host: &str, realm: &str, ip: &str) -> PeerConfig {
    let mut c = PeerConfig::new(host, realm);
    c.host_ip_addresses.push(ip.parse::<IpAddr>().unwrap());
    c.applications.push(RX_APPLICATION);
    c.validator = rx_validator();
    c
}

struct BackToBack {
    now: Instant,
    af_peer: Peer,
    pcrf_peer: Option<Peer>,
    rx: RxClient,
    pcrf: Pcrf,
    events: Vec<RxEvent>,
    pcrf_config: PeerConfig,
    rng: StdRng,
}

impl BackToBack {
    fn new() -> BackToBack {
        let mut rng = StdRng::seed_from_u64(5);
        let mut af_peer = Peer::new(
            peer_config(AF_HOST, AF_REALM, "192.0.2.10"),
            1_700_000_000,
            &mut rng,
        );
        let now = t0();
        af_peer.connect(now);
        let mut b = BackToBack {
            now,
            af_peer,
            pcrf_peer: None,
            rx: RxClient::new(config(), SEED),
            pcrf: Pcrf::new(PCRF_HOST, PCRF_REALM),
            events: Vec::new(),
            pcrf_config: peer_config(PCRF_HOST, PCRF_REALM, "198.51.100.1"),
            rng,
        };
        b.pump();
        assert!(b.af_peer.is_open(), "CER/CEA completed");
        b
    }

    /// Runs peers and applications until nothing moves.
    fn pump(&mut self) {
        let now = self.now;
        loop {
            let mut moved = false;
            while let Some((_, request)) = self.rx.poll_request() {
                moved = true;
                if let Err(e) = self.af_peer.send_request(now, request) {
                    let _ = self.rx.handle_failure(now, &e.into_message());
                }
            }
            while let Some(t) = self.af_peer.poll_transmit() {
                moved = true;
                match t {
                    Transmit::Connect => {
                        let cfg = self.pcrf_config.clone();
                        self.pcrf_peer = Some(Peer::accept(cfg, 1_700_000_000, &mut self.rng, now));
                        self.af_peer.handle_connected(now);
                    }
                    Transmit::Bytes(bytes) => {
                        if let Some(p) = self.pcrf_peer.as_mut() {
                            p.handle_bytes(now, &bytes);
                        }
                    }
                    Transmit::Disconnect => panic!("unexpected disconnect"),
                }
            }
            if let Some(p) = self.pcrf_peer.as_mut() {
                while let Some(t) = p.poll_transmit() {
                    moved = true;
                    match t {
                        Transmit::Bytes(bytes) => self.af_peer.handle_bytes(now, &bytes),
                        other => panic!("unexpected {other:?}"),
                    }
                }
                while let Some(e) = p.poll_event() {
                    moved = true;
                    match e {
                        PeerEvent::Request(request) => {
                            if let Some(answer) = self.pcrf.handle_request(&request) {
                                p.send_answer(now, answer).unwrap();
                            }
                        }
                        PeerEvent::Answer { answer, .. } => self.pcrf.handle_answer(&answer),
                        PeerEvent::Up(_) => {}
                        other => panic!("PCRF peer: {other:?}"),
                    }
                }
            }
            while let Some(e) = self.af_peer.poll_event() {
                moved = true;
                match e {
                    PeerEvent::Answer { answer, .. } => {
                        self.rx.handle_answer(now, &answer).unwrap();
                    }
                    PeerEvent::Request(request) => {
                        let answer = self.rx.handle_request(now, &request).unwrap();
                        self.af_peer.send_answer(now, answer).unwrap();
                    }
                    PeerEvent::TimedOut { request, .. }
                    | PeerEvent::Undelivered { request, .. } => {
                        let _ = self.rx.handle_failure(now, &request);
                    }
                    PeerEvent::Up(_) => {}
                    PeerEvent::Down(reason) => panic!("AF peer down: {reason:?}"),
                }
            }
            while let Some(e) = self.rx.poll_event() {
                moved = true;
                self.events.push(e);
            }
            if !moved {
                break;
            }
        }
    }

    /// The PCRF's peer sends `request` toward the AF.
    fn pcrf_sends(&mut self, request: estuary_diameter::Message) {
        let now = self.now;
        self.pcrf_peer
            .as_mut()
            .unwrap()
            .send_request(now, request)
            .unwrap();
        self.pump();
    }

    fn advance(&mut self, by: Duration) {
        self.now += by;
        self.af_peer.handle_timeout(self.now);
        if let Some(p) = self.pcrf_peer.as_mut() {
            p.handle_timeout(self.now);
        }
        self.rx.handle_timeout(self.now);
        self.pump();
    }
}

#[test]
fn a_whole_session_over_two_peers() {
    let mut b = BackToBack::new();
    let call = CallKey(42);
    b.rx.start(
        b.now,
        call,
        params(vec![audio(Direction::SendRecv), video(Direction::SendRecv)]),
    )
    .unwrap();
    b.pump();
    assert_eq!(
        std::mem::take(&mut b.events),
        [RxEvent::Authorized {
            call,
            kind: AarKind::Initial,
            result_code: 2001
        }]
    );
    let sid = b.rx.session_id(call).unwrap().to_string();
    let aar = b.pcrf.aars().next().unwrap();
    assert_eq!(aar.components.len(), 2);
    assert_eq!(aar.af_charging_id.as_deref(), Some("icid-0001"));

    // Loss of the video bearer.
    let rar = b
        .pcrf
        .rar(&sid, &[SpecificAction::IndicationOfLossOfBearer], &[2]);
    b.pcrf_sends(rar);
    assert_eq!(
        std::mem::take(&mut b.events),
        [RxEvent::BearerLost {
            call,
            action: SpecificAction::IndicationOfLossOfBearer,
            components: vec![2]
        }]
    );
    assert_eq!(b.pcrf.answers().last().unwrap().result_code(), Some(2001));

    // The AF drops video.
    b.rx.update(b.now, call, params(vec![audio(Direction::SendRecv)]))
        .unwrap();
    b.pump();
    assert_eq!(
        std::mem::take(&mut b.events),
        [RxEvent::Authorized {
            call,
            kind: AarKind::Update,
            result_code: 2001
        }]
    );

    // The PCRF aborts; the AF answers, terminates, and is told.
    let asr = b.pcrf.asr(&sid, AbortCause::BearerReleased);
    b.pcrf_sends(asr);
    assert_eq!(
        std::mem::take(&mut b.events),
        [
            RxEvent::Aborted {
                call,
                cause: AbortCause::BearerReleased
            },
            RxEvent::Terminated { call }
        ]
    );
    let last = b.pcrf.answers().last().unwrap();
    assert_eq!((last.command_code, last.result_code()), (274, Some(2001)));
    assert_eq!(b.pcrf.strs().count(), 1);
    assert!(!b.pcrf.has_session(&sid));
    assert!(b.rx.is_empty());

    // A RAR for the finished session: 5002 through the peers.
    let rar = b
        .pcrf
        .rar(&sid, &[SpecificAction::IndicationOfReleaseOfBearer], &[]);
    b.pcrf_sends(rar);
    assert_eq!(b.pcrf.answers().last().unwrap().result_code(), Some(5002));
    assert!(b.events.is_empty());
}

#[test]
fn silent_pcrf_times_out_through_the_peers() {
    let mut b = BackToBack::new();
    b.pcrf.set_aar_answer(estuary_rx::pcrf::AarAnswer::Silent);
    b.rx.start(b.now, CallKey(1), params(vec![audio(Direction::SendRecv)]))
        .unwrap();
    b.pump();
    assert!(b.events.is_empty());
    b.advance(Duration::from_secs(5));
    assert_eq!(
        std::mem::take(&mut b.events),
        [RxEvent::TimedOut {
            call: CallKey(1),
            kind: AarKind::Initial
        }]
    );
    // The clean-up STR was answered (5002: the silent PCRF kept no session).
    assert_eq!(b.pcrf.strs().count(), 1);
    assert!(b.rx.is_empty());
}
