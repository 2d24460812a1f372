//! Test harness: an `RxClient` and the `Pcrf` facility wired in memory on a virtual clock.
//! Every message crosses as bytes (encoded, then decoded), gets Hop-by-Hop and End-to-End
//! identifiers like a peer would assign, and is logged with its direction for captures.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use estuary_diameter::Message;
use estuary_rx::media::*;
use estuary_rx::pcrf::Pcrf;
use estuary_rx::{CallKey, RxClient, RxConfig, RxEvent};

/// The origin of virtual time. Tests never read the clock again.
#[allow(clippy::disallowed_methods)]
pub fn t0() -> Instant {
    Instant::now()
}

pub const AF_HOST: &str = "pcscf.estuary.test";
pub const AF_REALM: &str = "estuary.test";
pub const PCRF_HOST: &str = "pcrf.operator.test";
pub const PCRF_REALM: &str = "operator.test";
/// Session-Id counter seed: high half 1700000000, low half 1.
pub const SEED: u64 = (1_700_000_000 << 32) | 1;

pub fn sa(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

pub fn config() -> RxConfig {
    RxConfig::new(AF_HOST, AF_REALM, PCRF_REALM)
}

pub fn audio(direction: Direction) -> MediaComponent {
    MediaComponent {
        number: 1,
        media_type: MediaType::Audio,
        direction,
        bandwidth: Bandwidth {
            ul: Some(64_000),
            dl: Some(64_000),
        },
        codec_data: vec![
            codec_data(
                SdpSource::Uplink,
                SdpRole::Offer,
                [
                    "m=audio 49152 UDP/TLS/RTP/SAVPF 111",
                    "a=rtpmap:111 opus/48000/2",
                ],
            )
            .unwrap(),
            codec_data(
                SdpSource::Downlink,
                SdpRole::Answer,
                [
                    "m=audio 40000 UDP/TLS/RTP/SAVPF 111",
                    "a=rtpmap:111 opus/48000/2",
                ],
            )
            .unwrap(),
        ],
        flows: vec![IpFlow::udp(sa("192.0.2.1:49152"), sa("198.51.100.7:40000"))],
        removed: false,
    }
}

pub fn video(direction: Direction) -> MediaComponent {
    MediaComponent {
        number: 2,
        media_type: MediaType::Video,
        direction,
        bandwidth: Bandwidth {
            ul: Some(1_500_000),
            dl: Some(2_000_000),
        },
        codec_data: Vec::new(),
        flows: vec![IpFlow::udp(sa("192.0.2.1:49154"), sa("198.51.100.7:40002"))],
        removed: false,
    }
}

pub fn params(components: Vec<MediaComponent>) -> SessionParams {
    SessionParams {
        af_charging_id: "icid-0001".to_string(),
        subscription: Some(Subscription {
            kind: SubscriptionKind::SipUri,
            data: "sip:alice@estuary.test".to_string(),
        }),
        framed_ip: "192.0.2.1".parse().unwrap(),
        af_application_id: None,
        components,
        service_urn: None,
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dir {
    /// AF → PCRF.
    ToPcrf,
    /// PCRF → AF.
    ToAf,
}

/// Encodes and decodes, as the wire would.
pub fn over_the_wire(m: &Message) -> (Vec<u8>, Message) {
    let bytes = m.to_bytes().expect("encodable");
    let back = Message::decode(&bytes).expect("decodable");
    (bytes, back)
}

pub struct Wire {
    pub rx: RxClient,
    pub pcrf: Pcrf,
    pub now: Instant,
    pub events: Vec<RxEvent>,
    /// Every message that crossed, encoded, with its direction.
    pub log: Vec<(Dir, Vec<u8>)>,
    /// Requests the PCRF left unanswered.
    pub unanswered: Vec<Message>,
    /// When false, AF requests are dropped on the floor (a black hole).
    pub deliver: bool,
    next_id: u32,
}

impl Wire {
    pub fn new() -> Wire {
        Wire::with(config())
    }

    pub fn with(config: RxConfig) -> Wire {
        Wire {
            rx: RxClient::new(config, SEED),
            pcrf: Pcrf::new(PCRF_HOST, PCRF_REALM),
            now: t0(),
            events: Vec::new(),
            log: Vec::new(),
            unanswered: Vec::new(),
            deliver: true,
            next_id: 0x1000,
        }
    }

    fn cross(&mut self, dir: Dir, mut m: Message) -> Message {
        if m.is_request() {
            self.next_id += 1;
            m.hop_by_hop = self.next_id;
            m.end_to_end = 0x00a0_0000 | self.next_id;
        }
        let (bytes, back) = over_the_wire(&m);
        self.log.push((dir, bytes));
        back
    }

    /// Moves AF requests to the PCRF and answers back until nothing moves.
    pub fn pump(&mut self) {
        while let Some((_, request)) = self.rx.poll_request() {
            if !self.deliver {
                self.unanswered.push(request);
                continue;
            }
            let request = self.cross(Dir::ToPcrf, request);
            match self.pcrf.handle_request(&request) {
                Some(answer) => {
                    let answer = self.cross(Dir::ToAf, answer);
                    let _ = self.rx.handle_answer(self.now, &answer);
                }
                None => self.unanswered.push(request),
            }
        }
        while let Some(e) = self.rx.poll_event() {
            self.events.push(e);
        }
    }

    /// The PCRF sends `request` (RAR, ASR); returns the AF's answer as received.
    pub fn pcrf_sends(&mut self, request: Message) -> Message {
        let request = self.cross(Dir::ToAf, request);
        let answer = self
            .rx
            .handle_request(self.now, &request)
            .expect("a request gets an answer");
        let answer = self.cross(Dir::ToPcrf, answer);
        self.pcrf.handle_answer(&answer);
        self.pump();
        answer
    }

    /// Advances virtual time, firing the client's deadlines in order.
    pub fn advance(&mut self, by: Duration) {
        let target = self.now + by;
        loop {
            self.pump();
            match self.rx.poll_timeout() {
                Some(at) if at <= target => {
                    self.now = self.now.max(at);
                    self.rx.handle_timeout(self.now);
                }
                _ => break,
            }
        }
        self.now = target;
        self.pump();
    }

    pub fn take_events(&mut self) -> Vec<RxEvent> {
        std::mem::take(&mut self.events)
    }

    /// Starts `call` with `components` and pumps.
    pub fn start(&mut self, call: CallKey, components: Vec<MediaComponent>) {
        self.rx.start(self.now, call, params(components)).unwrap();
        self.pump();
    }
}
