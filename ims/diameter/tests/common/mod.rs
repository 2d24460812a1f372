//! Test harness: a client (a `Peer` or a `PeerSet`) wired to responder `Peer`s on a virtual
//! clock. Every byte the client writes reaches its link's responder and vice versa, cut into
//! chunks of `chunk` bytes (0 = whole writes), so stream reassembly is exercised.
#![allow(dead_code)]

use std::net::IpAddr;
use std::time::{Duration, Instant};

use estuary_diameter::dictionary::{self as dict, VENDOR_3GPP};
use estuary_diameter::message::{application, command};
use estuary_diameter::{
    result_code, Application, Avp, Message, Peer, PeerConfig, PeerEvent, PeerSet, PeerSetEvent,
    Transmit,
};
use rand::rngs::StdRng;
use rand::SeedableRng;

pub const RX: Application = Application::Auth {
    id: application::RX,
    vendor: Some(VENDOR_3GPP),
};

/// The origin of virtual time. Tests never read the clock again.
#[allow(clippy::disallowed_methods)]
pub fn t0() -> Instant {
    Instant::now()
}

pub fn client_config() -> PeerConfig {
    let mut c = PeerConfig::new("pcscf.estuary.test", "estuary.test");
    c.host_ip_addresses
        .push("192.0.2.10".parse::<IpAddr>().unwrap());
    c.applications.push(RX);
    c.origin_state_id = 1_700_000_000;
    c
}

pub fn server_config(host: &str) -> PeerConfig {
    let mut c = PeerConfig::new(host, "operator.test");
    c.host_ip_addresses
        .push("198.51.100.1".parse::<IpAddr>().unwrap());
    c.vendor_id = 10_415;
    c.product_name = "TestPCRF".into();
    c.applications.push(RX);
    // Longer than the client's so the client's watchdog fires first.
    c.watchdog_interval = Duration::from_secs(120);
    c
}

/// An Rx AAR-shaped request (TS 29.214 §5.6.1) with the media description of one audio
/// stream.
pub fn aar(session: &str) -> Message {
    let flow = |text: &str| Avp::utf8(dict::FLOW_DESCRIPTION, text);
    let sub = Avp::grouped(
        dict::MEDIA_SUB_COMPONENT,
        &[
            Avp::unsigned32(dict::FLOW_NUMBER, 1),
            flow("permit out 17 from 192.0.2.1 49152 to 198.51.100.7 5004"),
            flow("permit in 17 from 198.51.100.7 5004 to 192.0.2.1 49152"),
        ],
    );
    let mcd = Avp::grouped(
        dict::MEDIA_COMPONENT_DESCRIPTION,
        &[
            Avp::unsigned32(dict::MEDIA_COMPONENT_NUMBER, 1),
            sub,
            Avp::integer32(dict::MEDIA_TYPE, 0),
            Avp::unsigned32(dict::MAX_REQUESTED_BANDWIDTH_UL, 64_000),
            Avp::unsigned32(dict::MAX_REQUESTED_BANDWIDTH_DL, 64_000),
            Avp::integer32(dict::FLOW_STATUS, 2),
            Avp::octets(
                dict::CODEC_DATA,
                b"uplink\noffer\nm=audio 49152 RTP/AVP 0\n".to_vec(),
            ),
        ],
    );
    let subscription = Avp::grouped(
        dict::SUBSCRIPTION_ID,
        &[
            Avp::integer32(dict::SUBSCRIPTION_ID_TYPE, 2),
            Avp::utf8(dict::SUBSCRIPTION_ID_DATA, "sip:alice@estuary.test"),
        ],
    );
    Message::request(command::AA, application::RX)
        .with(Avp::utf8(dict::SESSION_ID, session))
        .with(Avp::unsigned32(dict::AUTH_APPLICATION_ID, application::RX))
        .with(Avp::identity(dict::ORIGIN_HOST, "pcscf.estuary.test"))
        .with(Avp::identity(dict::ORIGIN_REALM, "estuary.test"))
        .with(Avp::identity(dict::DESTINATION_REALM, "operator.test"))
        .with(Avp::octets(
            dict::AF_CHARGING_IDENTIFIER,
            b"icid-0001".to_vec(),
        ))
        .with(mcd)
        .with(Avp::integer32(dict::SPECIFIC_ACTION, 1))
        .with(subscription)
        .with(Avp::octets(dict::FRAMED_IP_ADDRESS, vec![192, 0, 2, 1]))
}

/// A success answer to `request` from `host`.
pub fn success_answer(request: &Message, host: &str) -> Message {
    let mut a = Message::answer_to(request);
    a.push(Avp::unsigned32(dict::RESULT_CODE, result_code::SUCCESS));
    a.push(Avp::identity(dict::ORIGIN_HOST, host));
    a.push(Avp::identity(dict::ORIGIN_REALM, "operator.test"));
    a
}

/// The client side under test, with transmits and inputs indexed by link.
pub trait Client {
    type Event: std::fmt::Debug;
    fn poll_transmit(&mut self) -> Option<(usize, Transmit)>;
    fn poll_event(&mut self) -> Option<Self::Event>;
    fn poll_timeout(&self) -> Option<Instant>;
    fn handle_connected(&mut self, now: Instant, link: usize);
    fn handle_connect_failed(&mut self, now: Instant, link: usize);
    fn handle_bytes(&mut self, now: Instant, link: usize, data: &[u8]);
    fn handle_closed(&mut self, now: Instant, link: usize);
    fn handle_timeout(&mut self, now: Instant);
}

impl Client for Peer {
    type Event = PeerEvent;
    fn poll_transmit(&mut self) -> Option<(usize, Transmit)> {
        Peer::poll_transmit(self).map(|t| (0, t))
    }
    fn poll_event(&mut self) -> Option<PeerEvent> {
        Peer::poll_event(self)
    }
    fn poll_timeout(&self) -> Option<Instant> {
        Peer::poll_timeout(self)
    }
    fn handle_connected(&mut self, now: Instant, _: usize) {
        Peer::handle_connected(self, now)
    }
    fn handle_connect_failed(&mut self, now: Instant, _: usize) {
        Peer::handle_connect_failed(self, now)
    }
    fn handle_bytes(&mut self, now: Instant, _: usize, data: &[u8]) {
        Peer::handle_bytes(self, now, data)
    }
    fn handle_closed(&mut self, now: Instant, _: usize) {
        Peer::handle_closed(self, now)
    }
    fn handle_timeout(&mut self, now: Instant) {
        Peer::handle_timeout(self, now)
    }
}

impl Client for PeerSet {
    type Event = PeerSetEvent;
    fn poll_transmit(&mut self) -> Option<(usize, Transmit)> {
        PeerSet::poll_transmit(self)
    }
    fn poll_event(&mut self) -> Option<PeerSetEvent> {
        PeerSet::poll_event(self)
    }
    fn poll_timeout(&self) -> Option<Instant> {
        PeerSet::poll_timeout(self)
    }
    fn handle_connected(&mut self, now: Instant, link: usize) {
        PeerSet::handle_connected(self, now, link)
    }
    fn handle_connect_failed(&mut self, now: Instant, link: usize) {
        PeerSet::handle_connect_failed(self, now, link)
    }
    fn handle_bytes(&mut self, now: Instant, link: usize, data: &[u8]) {
        PeerSet::handle_bytes(self, now, link, data)
    }
    fn handle_closed(&mut self, now: Instant, link: usize) {
        PeerSet::handle_closed(self, now, link)
    }
    fn handle_timeout(&mut self, now: Instant) {
        PeerSet::handle_timeout(self, now)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dir {
    ToServer,
    ToClient,
}

/// One transport path: the responder serving the current connection, if any.
pub struct Link {
    pub server: Option<Peer>,
    pub config: PeerConfig,
    pub server_events: Vec<PeerEvent>,
    /// Drop bytes in both directions (a black hole; TCP stays "up").
    pub muted: bool,
    /// Fail connection attempts.
    pub refuse: bool,
    /// Answer application requests with 2001 at once.
    pub auto_answer: bool,
    /// Every write, in order, with its direction.
    pub wire: Vec<(Dir, Vec<u8>)>,
    /// Connections accepted so far.
    pub accepted: usize,
}

impl Link {
    pub fn new(config: PeerConfig) -> Link {
        Link {
            server: None,
            config,
            server_events: Vec::new(),
            muted: false,
            refuse: false,
            auto_answer: false,
            wire: Vec::new(),
            accepted: 0,
        }
    }

    pub fn server(&mut self) -> &mut Peer {
        self.server.as_mut().expect("no server connection")
    }

    /// Messages written towards `dir`, decoded.
    pub fn messages(&self, dir: Dir) -> Vec<Message> {
        let mut stream = Vec::new();
        for (d, bytes) in &self.wire {
            if *d == dir {
                stream.extend_from_slice(bytes);
            }
        }
        let mut out = Vec::new();
        let mut rest = &stream[..];
        while let Ok(Some(len)) = estuary_diameter::frame_len(rest) {
            out.push(Message::decode(&rest[..len]).expect("harness decodes what peers wrote"));
            rest = &rest[len..];
        }
        out
    }
}

pub struct Net<C: Client> {
    pub client: C,
    pub links: Vec<Link>,
    pub now: Instant,
    pub events: Vec<C::Event>,
    /// Deliver stream bytes in chunks of this size (0: whole writes).
    pub chunk: usize,
    rng: StdRng,
}

impl<C: Client> Net<C> {
    pub fn new(client: C, links: Vec<Link>, now: Instant) -> Net<C> {
        Net {
            client,
            links,
            now,
            events: Vec::new(),
            chunk: 0,
            rng: StdRng::seed_from_u64(99),
        }
    }

    fn deliver_to_client(&mut self, link: usize, bytes: &[u8]) {
        let size = if self.chunk == 0 {
            bytes.len().max(1)
        } else {
            self.chunk
        };
        for piece in bytes.chunks(size) {
            self.client.handle_bytes(self.now, link, piece);
        }
    }

    /// Runs every queue until nothing moves.
    pub fn pump(&mut self) {
        loop {
            let mut moved = false;
            while let Some((i, t)) = self.client.poll_transmit() {
                moved = true;
                match t {
                    Transmit::Connect => {
                        if self.links[i].refuse {
                            self.client.handle_connect_failed(self.now, i);
                        } else {
                            let cfg = self.links[i].config.clone();
                            self.links[i].server =
                                Some(Peer::accept(cfg, 1_700_000_000, &mut self.rng, self.now));
                            self.links[i].accepted += 1;
                            self.client.handle_connected(self.now, i);
                        }
                    }
                    Transmit::Bytes(bytes) => {
                        let link = &mut self.links[i];
                        link.wire.push((Dir::ToServer, bytes.clone()));
                        if link.muted {
                            continue;
                        }
                        if let Some(server) = link.server.as_mut() {
                            let size = if self.chunk == 0 {
                                bytes.len().max(1)
                            } else {
                                self.chunk
                            };
                            for piece in bytes.chunks(size) {
                                server.handle_bytes(self.now, piece);
                            }
                        }
                    }
                    Transmit::Disconnect => {
                        if let Some(mut server) = self.links[i].server.take() {
                            server.handle_closed(self.now);
                            // Flush its final events; its transmits go nowhere.
                            while server.poll_transmit().is_some() {}
                            while let Some(e) = server.poll_event() {
                                self.links[i].server_events.push(e);
                            }
                        }
                    }
                }
            }
            for i in 0..self.links.len() {
                let Some(mut server) = self.links[i].server.take() else {
                    continue;
                };
                let mut keep = true;
                while let Some(t) = server.poll_transmit() {
                    moved = true;
                    match t {
                        Transmit::Bytes(bytes) => {
                            self.links[i].wire.push((Dir::ToClient, bytes.clone()));
                            if !self.links[i].muted && keep {
                                self.deliver_to_client(i, &bytes);
                            }
                        }
                        Transmit::Disconnect => {
                            keep = false;
                            self.client.handle_closed(self.now, i);
                        }
                        Transmit::Connect => panic!("responders never connect"),
                    }
                }
                while let Some(e) = server.poll_event() {
                    moved = true;
                    if let PeerEvent::Request(request) = &e {
                        if self.links[i].auto_answer {
                            let host = self.links[i].config.origin_host.clone();
                            server
                                .send_answer(self.now, success_answer(request, &host))
                                .unwrap();
                        }
                    }
                    self.links[i].server_events.push(e);
                }
                if keep {
                    self.links[i].server = Some(server);
                }
            }
            while let Some(e) = self.client.poll_event() {
                moved = true;
                self.events.push(e);
            }
            if !moved {
                break;
            }
        }
    }

    /// Advances virtual time by `by`, firing every deadline on the way in order.
    pub fn advance(&mut self, by: Duration) {
        let target = self.now + by;
        loop {
            self.pump();
            let mut next = self.client.poll_timeout();
            for link in &self.links {
                if let Some(t) = link.server.as_ref().and_then(Peer::poll_timeout) {
                    next = Some(next.map_or(t, |n| n.min(t)));
                }
            }
            match next {
                Some(t) if t <= target => {
                    self.now = self.now.max(t);
                    self.client.handle_timeout(self.now);
                    for link in &mut self.links {
                        if let Some(server) = link.server.as_mut() {
                            server.handle_timeout(self.now);
                        }
                    }
                }
                _ => break,
            }
        }
        self.now = target;
        self.pump();
    }

    pub fn take_events(&mut self) -> Vec<C::Event> {
        std::mem::take(&mut self.events)
    }
}

pub fn rng(seed: u64) -> StdRng {
    StdRng::seed_from_u64(seed)
}
