//! The core driven on a virtual clock: a browser call answered by a scripted core, its media
//! through the inline plane, and the seam's two duties: plans reach the plane, and a plane's
//! failure ends the call on both legs before the call's end is reported.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use estuary_b2bua::B2buaConfig;
use estuary_media::MediaConfig;
use estuary_sip::Message;
use estuary_srtp::Certificate;

use super::*;

const CONN: ConnId = ConnId(1);
const WEB_OFFER: &str = include_str!("../../../conformance/sdp/cases/web-audio-g711/1-web-offer.sdp");
/// The far end's answer: PCMU from 10.9.9.9:40000.
const IMS_ANSWER: &str = "v=0\r\no=- 1 1 IN IP4 10.9.9.9\r\ns=-\r\nc=IN IP4 10.9.9.9\r\nt=0 0\r\nm=audio 40000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n";

fn browser() -> SocketAddr {
    "127.0.0.1:40000".parse().unwrap()
}

fn next_hop() -> SocketAddr {
    "127.0.0.1:5060".parse().unwrap()
}

fn far_media() -> SocketAddr {
    "10.9.9.9:40000".parse().unwrap()
}

/// A plane that records what it is told and refuses every plan.
#[derive(Default)]
struct Refusing {
    told: Vec<String>,
    events: VecDeque<MediaPlaneEvent>,
}

impl MediaPlane for Refusing {
    fn plan(&mut self, _now: Instant, call: u64, _plan: Box<MediaPlan>) {
        self.told.push(format!("plan {call}"));
        self.events.push_back(MediaPlaneEvent::Failed { call, cause: ReleaseCause::MediaBearerLoss, reason: "no sockets".into() });
    }
    fn end(&mut self, _now: Instant, call: u64) {
        self.told.push(format!("end {call}"));
    }
    fn picture_fast_update(&mut self, _now: Instant, call: u64, from: Side) {
        self.told.push(format!("fast update {call} from {from:?}"));
    }
    fn poll_event(&mut self) -> Option<MediaPlaneEvent> {
        self.events.pop_front()
    }
}

struct Harness<P> {
    core: Core<P>,
    now: Instant,
    next_port: u16,
}

impl<P: MediaPlane> Harness<P> {
    fn new(plane: P, now: Instant) -> Self {
        let cfg = B2buaConfig { require_registration: false, ..B2buaConfig::default() };
        let signalling = B2bua::new(cfg, 7, estuary_keys::KeySource::os());
        let mut h = Harness { core: Core::new(signalling, plane, now), now, next_port: 20000 };
        h.input(Input::ConnectionOpened { conn: CONN, side: Side::Web, transport: Transport::Wss, local: "127.0.0.1:8443".parse().unwrap(), remote: browser() });
        h
    }

    fn input(&mut self, input: Input<'_>) -> Vec<Output> {
        self.core.handle_input(self.now, input);
        self.drain()
    }

    fn drain(&mut self) -> Vec<Output> {
        let out = std::iter::from_fn(|| self.core.poll_output()).collect();
        let n = self.core.ports_wanted(self.now) as u16;
        let first = self.next_port;
        self.next_port += 2 * n;
        self.core.grant_ports((0..n).map(|i| first + 2 * i));
        out
    }

    fn web(&mut self, text: &str) -> Vec<Output> {
        let data = text.replace('\n', "\r\n");
        self.input(Input::Receive { flow: Flow::Web { conn: CONN }, conn: Some(CONN), remote: browser(), data: data.as_bytes() })
    }

    fn ims(&mut self, data: &[u8]) -> Vec<Output> {
        self.input(Input::Receive { flow: Flow::Ims { transport: Transport::Udp, remote: next_hop() }, conn: None, remote: next_hop(), data })
    }

    /// Moves the clock to `until`, firing every deadline on the way.
    fn advance(&mut self, until: Instant) -> Vec<Output> {
        let mut out = Vec::new();
        while let Some(t) = self.core.poll_timeout().filter(|t| *t <= until) {
            self.now = t.max(self.now);
            out.extend(self.input(Input::Timeout));
        }
        self.now = until;
        out
    }

    /// A browser's INVITE; returns the INVITE sent to the core.
    fn invite(&mut self) -> Vec<u8> {
        let invite = format!(
            "INVITE sip:bob@ims.test SIP/2.0\nVia: SIP/2.0/WSS df7jal23ls0d.invalid;branch=z9hG4bKcore1\nMax-Forwards: 69\nTo: <sip:bob@ims.test>\nFrom: <sip:alice@ims.test>;tag=a1b2c3\nCall-ID: webcall1\nCSeq: 7 INVITE\nContact: <sip:8r2lhmvo@df7jal23ls0d.invalid;transport=ws;ob>\nContent-Type: application/sdp\nContent-Length: {}\n\n",
            WEB_OFFER.len()
        );
        let out = self.web(&(invite + &WEB_OFFER.replace("\r\n", "\n")));
        let mut sent = sip(&out, Side::Ims);
        assert_eq!(sent.len(), 1, "one INVITE toward the core: {sent:?}");
        sent.remove(0)
    }

    /// The core answers `invite` with 200 and PCMU.
    fn answer(&mut self, invite: &[u8]) -> Vec<Output> {
        let Message::Request(inv) = Message::parse(invite).unwrap() else { panic!("not a request") };
        let mut ok = estuary_sip::response_to(&inv, 200, "OK");
        ok.headers.set("To", format!("{};tag=far1", inv.headers.get("To").unwrap()));
        ok.headers.push("Contact", "<sip:bob@10.9.9.9:5070>");
        ok.headers.push("Content-Type", "application/sdp");
        ok.body = IMS_ANSWER.as_bytes().to_vec();
        self.ims(&ok.to_bytes())
    }

    /// A browser's INVITE answered by the core with PCMU and acknowledged; returns the INVITE
    /// sent to the core and the 200 sent to the browser.
    fn answered_call(&mut self) -> (Vec<u8>, Vec<u8>) {
        let invite = self.invite();
        let out = self.answer(&invite);
        let ok = sip(&out, Side::Web).into_iter().find(|m| m.starts_with(b"SIP/2.0 200")).expect("the answer reaches the browser");
        let Message::Response(r) = Message::parse(&ok).unwrap() else { panic!("not a response") };
        let ack = format!(
            "ACK sip:bob@ims.test SIP/2.0\nVia: SIP/2.0/WSS df7jal23ls0d.invalid;branch=z9hG4bKcore1a\nMax-Forwards: 69\nTo: {}\nFrom: <sip:alice@ims.test>;tag=a1b2c3\nCall-ID: webcall1\nCSeq: 7 ACK\nContent-Length: 0\n\n",
            r.headers.get("To").unwrap()
        );
        self.web(&ack);
        (invite, ok)
    }
}

/// The SIP messages of `out` sent toward `side`.
fn sip(out: &[Output], side: Side) -> Vec<Vec<u8>> {
    out.iter()
        .filter_map(|o| match o {
            Output::Transmit { flow: Flow::Web { .. }, data } if side == Side::Web => Some(data.clone()),
            Output::Transmit { flow: Flow::Ims { .. }, data } if side == Side::Ims => Some(data.clone()),
            _ => None,
        })
        .collect()
}

/// The m-line port and connection address of a SIP message's SDP.
fn media_address(sip: &[u8]) -> SocketAddr {
    let text = String::from_utf8_lossy(sip);
    let body = text.split_once("\r\n\r\n").unwrap().1;
    let ip = body.lines().find_map(|l| l.strip_prefix("c=IN IP4 ")).unwrap();
    let port = body.lines().find_map(|l| l.strip_prefix("m=audio ")).and_then(|m| m.split(' ').next()).unwrap();
    format!("{ip}:{port}").parse().unwrap()
}

fn pcmu(seq: u16) -> Vec<u8> {
    let mut p = vec![0x80, 0, 0, 0, 0, 0, 0, 0, 0x12, 0x34, 0x56, 0x78];
    p[2..4].copy_from_slice(&seq.to_be_bytes());
    p[4..8].copy_from_slice(&(u32::from(seq) * 160).to_be_bytes());
    p.extend(std::iter::repeat_n(0xff, 160));
    p
}

#[test]
fn media_of_an_answered_call_flows_and_silence_ends_it_on_both_legs() {
    let now = Instant::now();
    let cfg = MediaConfig { inactivity_timeout: Duration::from_secs(5), ..MediaConfig::default() };
    let plane = InlineMedia::plaintext(now, cfg, Certificate::generate().unwrap());
    let mut h = Harness::new(plane, now);
    let (invite, answer) = h.answered_call();
    assert_eq!(h.core.media().calls(), 1, "the settled plan reached the plane");
    let ims_local = media_address(&invite);
    let web_local = media_address(&answer);

    // Browser to core: plaintext past SRTP, relayed to the address the core answered with.
    let call = h.core.handle_datagram(h.now, web_local, browser(), &pcmu(1));
    assert!(call.is_some(), "the browser's packet belongs to the call");
    let out = h.drain();
    assert!(matches!(&out[..], [Output::Datagram { from, to, .. }] if *from == ims_local && *to == far_media()), "{out:?}");
    // And back, to where the browser's media came from.
    h.core.handle_datagram(h.now, ims_local, far_media(), &pcmu(1));
    let out = h.drain();
    assert!(matches!(&out[..], [Output::Datagram { from, to, .. }] if *from == web_local && *to == browser()), "{out:?}");

    // Then silence: the plane gives up, and the core ends the call with BYE on both legs,
    // each with the RTP time-out cause, before it reports the call's end.
    let out = h.advance(now + Duration::from_secs(8));
    let bye = |o: &Output, web: bool| matches!(o, Output::Transmit { flow, data } if data.starts_with(b"BYE ") && matches!(flow, Flow::Web { .. }) == web);
    let (to_web, to_ims) = (out.iter().position(|o| bye(o, true)), out.iter().position(|o| bye(o, false)));
    assert!(to_web.is_some() && to_ims.is_some(), "a BYE on each leg: {out:?}");
    for o in out.iter().filter(|o| bye(o, true) || bye(o, false)) {
        let Output::Transmit { data, .. } = o else { unreachable!() };
        assert!(String::from_utf8_lossy(data).contains("RELEASE_CAUSE;cause=2"), "RTP time-out in every Reason");
    }
    let ended = out.iter().position(|o| matches!(o, Output::CallEnded { .. })).expect("the call's end is reported");
    assert!(ended > to_web.max(to_ims).unwrap(), "the end is reported after the messages that ended it: {out:?}");
    assert_eq!(h.core.media().calls(), 0, "the plane dropped the session with the call");
}

#[test]
fn a_plan_the_plane_refuses_ends_the_call_with_a_bearer_loss() {
    let now = Instant::now();
    let mut h = Harness::new(Refusing::default(), now);
    let invite = h.invite();
    let out = h.answer(&invite);
    assert_eq!(h.core.media().told.first().map(String::as_str), Some("plan 1"), "{:?}", h.core.media().told);
    let bye_ims = sip(&out, Side::Ims).into_iter().find(|m| m.starts_with(b"BYE "));
    let bye = String::from_utf8(bye_ims.expect("a BYE toward the core")).unwrap();
    assert!(bye.contains("cause=3"), "media bearer loss: {bye}");
}
