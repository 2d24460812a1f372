//! The policy function inside the core, against the TEST FACILITY PCRF behind a real
//! estuary-diameter responder peer, byte for byte, on a virtual clock: the AAR a browser call
//! produces, closed policy holding and refusing the answer, RAR and ASR ending the call, the
//! STR at the end and the record's Rx fields.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use estuary_b2bua::{B2buaConfig, EndReason};
use estuary_diameter::{Peer, PeerConfig, PeerEvent, PeerSet, Transmit};
use estuary_rx::pcrf::{AarAnswer, Pcrf};
use estuary_rx::{rx_validator, AbortCause, RxClient, RxConfig, SpecificAction, RX_APPLICATION};
use estuary_sip::Message;
use rand::SeedableRng;

use super::*;

const CONN: ConnId = ConnId(1);
const WEB_OFFER: &str = include_str!("../../../conformance/sdp/cases/chromium-audio/1-web-offer.sdp");
const IMS_ANSWER: &str = "v=0\r\no=- 1 1 IN IP4 10.9.9.9\r\ns=-\r\nc=IN IP4 10.9.9.9\r\nt=0 0\r\nm=audio 40000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n";
const WEB_MEDIA_IP: &str = "192.0.2.50";

fn browser() -> SocketAddr {
    "127.0.0.1:40000".parse().unwrap()
}

fn next_hop() -> SocketAddr {
    "127.0.0.1:5060".parse().unwrap()
}

fn peer_config(host: &str, ip: &str) -> PeerConfig {
    let mut c = PeerConfig::new(host, "ims.test");
    c.host_ip_addresses.push(ip.parse::<IpAddr>().unwrap());
    c.applications.push(RX_APPLICATION);
    c.validator = rx_validator();
    c
}

struct Harness {
    core: Core<Option<InlineMedia>>,
    now: Instant,
    next_port: u16,
    /// The PCRF's side of the one Diameter connection, once the core opened it.
    pcrf_peer: Option<Peer>,
    pcrf: Pcrf,
    rng: rand::rngs::StdRng,
    ended: Vec<(Box<CallSummary>, Option<PolicyReport>)>,
    sip: Vec<(Side, Vec<u8>)>,
    /// No PCRF listens: every connect fails.
    unreachable: bool,
}

impl Harness {
    fn new(on_failure: OnFailure) -> Harness {
        Harness::build(on_failure, false, false)
    }

    /// As [`Harness::new`], with no PCRF reachable.
    fn without_pcrf(on_failure: OnFailure) -> Harness {
        Harness::build(on_failure, true, false)
    }

    /// As [`Harness::new`], with `rx.signalling`: registrations open AF_SIGNALLING sessions.
    fn with_signalling(on_failure: OnFailure) -> Harness {
        Harness::build(on_failure, false, true)
    }

    fn build(on_failure: OnFailure, unreachable: bool, signalling_policy: bool) -> Harness {
        let now = Instant::now();
        let cfg = B2buaConfig { require_registration: false, policy_gate: on_failure == OnFailure::Closed, signalling_policy, ..B2buaConfig::default() };
        let signalling = B2bua::new(cfg, 7, estuary_keys::KeySource::os());
        let mut rng = rand::rngs::StdRng::seed_from_u64(3);
        let mut rx_config = RxConfig::new("pcscf.ims.test", "ims.test", "ims.test");
        rx_config.timeout = Duration::from_secs(2);
        let peers = PeerSet::new(vec![Peer::new(peer_config("pcscf.ims.test", "192.0.2.10"), 1_700_000_000, &mut rng)], 1_700_000_000, &mut rng);
        let settings = PolicySettings { on_failure, web_media_ip: WEB_MEDIA_IP.parse().unwrap(), peer_names: vec!["pcrf:3868".into()] };
        let policy = Policy::new(now, RxClient::new(rx_config, 1 << 32), peers, settings);
        let core = Core::new(signalling, None, now).with_policy(policy);
        let mut h = Harness { core, now, next_port: 20000, pcrf_peer: None, pcrf: Pcrf::new("pcrf.ims.test", "ims.test"), rng, ended: Vec::new(), sip: Vec::new(), unreachable };
        h.input(Input::ConnectionOpened { conn: CONN, side: Side::Web, transport: Transport::Wss, local: "127.0.0.1:8443".parse().unwrap(), remote: browser() });
        assert!(unreachable || h.pcrf_peer.as_ref().is_some_and(Peer::is_open), "CER/CEA done on the first drain");
        h
    }

    fn input(&mut self, input: Input<'_>) {
        self.core.handle_input(self.now, input);
        self.drain();
    }

    /// Drains the core, carrying Diameter to and from the PCRF until nothing moves.
    fn drain(&mut self) {
        loop {
            let mut moved = false;
            while let Some(o) = self.core.poll_output() {
                moved = true;
                match o {
                    Output::Diameter { peer: 0, transmit: Transmit::Connect } if self.unreachable => {
                        self.core.handle_diameter(self.now, DiameterInput::ConnectFailed { peer: 0 });
                    }
                    Output::Diameter { peer: 0, transmit: Transmit::Connect } => {
                        self.pcrf_peer = Some(Peer::accept(peer_config("pcrf.ims.test", "198.51.100.1"), 1_700_000_000, &mut self.rng, self.now));
                        self.core.handle_diameter(self.now, DiameterInput::Connected { peer: 0 });
                    }
                    Output::Diameter { peer: 0, transmit: Transmit::Bytes(b) } => {
                        let now = self.now;
                        self.pcrf_peer.as_mut().expect("connected").handle_bytes(now, &b);
                    }
                    Output::Diameter { transmit, .. } => panic!("unexpected {transmit:?}"),
                    Output::Transmit { flow: Flow::Web { .. }, data } => self.sip.push((Side::Web, data)),
                    Output::Transmit { flow: Flow::Ims { .. }, data } => self.sip.push((Side::Ims, data)),
                    Output::CallEnded { summary, policy, .. } => self.ended.push((summary, policy)),
                    _ => {}
                }
            }
            if let Some(p) = self.pcrf_peer.as_mut() {
                while let Some(t) = p.poll_transmit() {
                    moved = true;
                    let Transmit::Bytes(b) = t else { panic!("PCRF: {t:?}") };
                    self.core.handle_diameter(self.now, DiameterInput::Bytes { peer: 0, data: &b });
                }
                while let Some(e) = p.poll_event() {
                    moved = true;
                    match e {
                        PeerEvent::Request(r) => {
                            if let Some(a) = self.pcrf.handle_request(&r) {
                                p.send_answer(self.now, a).unwrap();
                            }
                        }
                        PeerEvent::Answer { answer, .. } => self.pcrf.handle_answer(&answer),
                        PeerEvent::Up(_) => {}
                        other => panic!("PCRF peer: {other:?}"),
                    }
                }
            }
            let n = self.core.ports_wanted(self.now) as u16;
            if n > 0 {
                let first = self.next_port;
                self.next_port += 2 * n;
                self.core.grant_ports((0..n).map(|i| first + 2 * i));
            }
            if !moved {
                break;
            }
        }
    }

    fn advance(&mut self, by: Duration) {
        let until = self.now + by;
        while let Some(t) = self.core.poll_timeout().filter(|t| *t <= until) {
            self.now = t.max(self.now);
            if let Some(p) = self.pcrf_peer.as_mut() {
                p.handle_timeout(self.now);
            }
            self.input(Input::Timeout);
        }
        self.now = until;
    }

    fn pcrf_sends(&mut self, request: estuary_diameter::Message) {
        self.pcrf_peer.as_mut().unwrap().send_request(self.now, request).unwrap();
        self.drain();
    }

    fn take_sip(&mut self, side: Side) -> Vec<String> {
        let (mine, rest): (Vec<_>, Vec<_>) = std::mem::take(&mut self.sip).into_iter().partition(|(s, _)| *s == side);
        self.sip = rest;
        mine.into_iter().map(|(_, d)| String::from_utf8(d).unwrap()).collect()
    }

    /// A browser INVITE; the INVITE the core got.
    fn invite(&mut self) -> String {
        let invite = format!(
            "INVITE sip:bob@ims.test SIP/2.0\nVia: SIP/2.0/WSS df7jal23ls0d.invalid;branch=z9hG4bKpcy1\nMax-Forwards: 69\nTo: <sip:bob@ims.test>\nFrom: <sip:alice@ims.test>;tag=a1b2c3\nCall-ID: webcall1\nCSeq: 7 INVITE\nContact: <sip:8r2lhmvo@df7jal23ls0d.invalid;transport=ws;ob>\nContent-Type: application/sdp\nContent-Length: {}\n\n{}",
            WEB_OFFER.len(),
            WEB_OFFER.replace("\r\n", "\n")
        )
        .replace('\n', "\r\n");
        self.input(Input::Receive { flow: Flow::Web { conn: CONN }, conn: Some(CONN), remote: browser(), data: invite.as_bytes() });
        let ims = self.take_sip(Side::Ims);
        self.take_sip(Side::Web);
        ims.into_iter().find(|m| m.starts_with("INVITE ")).expect("INVITE toward the core")
    }

    /// alice registers over the WebSocket and the core accepts; returns the gateway's Contact.
    fn register(&mut self) -> String {
        let register = "REGISTER sip:ims.test SIP/2.0\r\nVia: SIP/2.0/WSS df7jal23ls0d.invalid;branch=z9hG4bKregp\r\nMax-Forwards: 69\r\nTo: <sip:alice@ims.test>\r\nFrom: <sip:alice@ims.test>;tag=regtag\r\nCall-ID: regcall1\r\nCSeq: 1 REGISTER\r\nContact: <sip:8r2lhmvo@df7jal23ls0d.invalid;transport=ws>;expires=600\r\nExpires: 600\r\nContent-Length: 0\r\n\r\n";
        self.input(Input::Receive { flow: Flow::Web { conn: CONN }, conn: Some(CONN), remote: browser(), data: register.as_bytes() });
        let reg = self.take_sip(Side::Ims).into_iter().find(|m| m.starts_with("REGISTER ")).expect("REGISTER toward the core");
        let Message::Request(reg) = Message::parse(reg.as_bytes()).unwrap() else { panic!() };
        let contact = reg.headers.get("Contact").unwrap().to_owned();
        let mut ok = estuary_sip::response_to(&reg, 200, "OK");
        ok.headers.set("To", format!("{};tag=regok", reg.headers.get("To").unwrap()));
        ok.headers.push("Contact", &contact);
        let data = ok.to_bytes();
        self.input(Input::Receive { flow: Flow::Ims { transport: Transport::Udp, remote: next_hop() }, conn: None, remote: next_hop(), data: &data });
        assert_eq!(self.take_sip(Side::Web).iter().map(|m| status(m)).collect::<Vec<_>>(), [200], "registered");
        contact
    }

    fn metric(&self, name: &str) -> u64 {
        self.core.metrics(self.now).into_iter().find(|s| s.name == name).unwrap_or_else(|| panic!("no {name}")).value
    }

    /// The core answers with 200 and PCMU.
    fn answer(&mut self, invite: &str) {
        let Message::Request(inv) = Message::parse(invite.as_bytes()).unwrap() else { panic!() };
        let mut ok = estuary_sip::response_to(&inv, 200, "OK");
        ok.headers.set("To", format!("{};tag=far1", inv.headers.get("To").unwrap()));
        ok.headers.push("Contact", "<sip:bob@10.9.9.9:5070>");
        ok.headers.push("Content-Type", "application/sdp");
        ok.body = IMS_ANSWER.as_bytes().to_vec();
        let data = ok.to_bytes();
        self.input(Input::Receive { flow: Flow::Ims { transport: Transport::Udp, remote: next_hop() }, conn: None, remote: next_hop(), data: &data });
    }
}

fn status(msg: &str) -> u16 {
    msg.get(8..11).and_then(|s| s.parse().ok()).unwrap_or(0)
}

#[test]
fn an_answered_browser_call_is_described_to_the_pcrf_and_its_end_terminates_the_session() {
    let mut h = Harness::new(OnFailure::Closed);
    let invite = h.invite();
    h.answer(&invite);
    let to_web = h.take_sip(Side::Web);
    assert_eq!(to_web.iter().map(|m| status(m)).collect::<Vec<_>>(), [200], "authorized at once, so the 200 went on: {to_web:?}");
    let aars: Vec<_> = h.pcrf.aars().cloned().collect();
    assert_eq!(aars.len(), 1);
    let aar = &aars[0];
    assert_eq!(aar.request_type, Some(0), "INITIAL_REQUEST");
    assert_eq!(aar.framed_ip, Some("127.0.0.1".parse().unwrap()), "the browser's WebSocket peer");
    let icid = invite.lines().find_map(|l| l.strip_prefix("P-Charging-Vector: icid-value=")).map(|v| v.split(';').next().unwrap().trim_matches('"').to_owned());
    assert_eq!(aar.af_charging_id.as_deref(), icid.as_deref(), "the ICID of the call's P-Charging-Vector");
    assert_eq!(aar.components.len(), 1);
    let audio = &aar.components[0];
    assert_eq!((audio.number, audio.media_type, audio.flow_status), (Some(1), Some(0), Some(2)), "audio, ENABLED");
    assert_eq!((audio.max_ul, audio.max_dl), (Some(84_000), Some(84_000)), "PCMU (the core took it) with its headers");
    // The browser's candidate (Chromium's offer: 127.0.0.1:48911) and our browser-facing port.
    let web_ok = &to_web[0];
    let port = web_ok.lines().find_map(|l| l.strip_prefix("m=audio ")).and_then(|m| m.split(' ').next()).unwrap();
    let flows = &audio.sub_components[0].flow_descriptions;
    assert_eq!(
        flows,
        &vec![format!("permit out 17 from {WEB_MEDIA_IP} {port} to 127.0.0.1 48911"), format!("permit in 17 from 127.0.0.1 48911 to {WEB_MEDIA_IP} {port}")]
    );
    assert!(audio.codec_data[0].starts_with("uplink\noffer\nm=audio 48911 UDP/TLS/RTP/SAVPF 0\na=rtpmap:0 PCMU/8000"), "{:?}", audio.codec_data);
    assert!(audio.codec_data[1].starts_with(&format!("downlink\nanswer\nm=audio {port} ")), "{:?}", audio.codec_data);

    let metric = |h: &Harness, name: &str, label: Option<(&str, &str)>| {
        h.core
            .metrics(h.now)
            .into_iter()
            .find(|s| s.name == name && label.is_none_or(|(k, v)| s.labels.iter().any(|(lk, lv)| *lk == k && lv == v)))
            .map(|s| s.value)
    };
    assert_eq!(metric(&h, "estuary_rx_peer_up", Some(("role", "primary"))), Some(1));
    assert_eq!(metric(&h, "estuary_rx_aar_latency_ms_count", None), Some(1));
    assert_eq!(metric(&h, "estuary_rx_answers_total", Some(("result", "success"))), Some(1));

    // ICE selects another browser address: an update AAR describes it.
    h.core.handle_media_path(h.now, 1, "127.0.0.1:51000".parse().unwrap());
    h.drain();
    let aars: Vec<_> = h.pcrf.aars().cloned().collect();
    assert_eq!(aars.len(), 2);
    assert_eq!(aars[1].request_type, Some(1), "UPDATE_REQUEST");
    assert!(aars[1].components[0].sub_components[0].flow_descriptions[0].ends_with("to 127.0.0.1 51000"), "{:?}", aars[1]);

    // The browser hangs up: the STR goes, and the record names the session and its result.
    let Message::Response(ok) = Message::parse(web_ok.as_bytes()).unwrap() else { panic!() };
    let bye = format!(
        "BYE sip:bob@ims.test SIP/2.0\r\nVia: SIP/2.0/WSS df7jal23ls0d.invalid;branch=z9hG4bKpcyb\r\nMax-Forwards: 69\r\nTo: {}\r\nFrom: <sip:alice@ims.test>;tag=a1b2c3\r\nCall-ID: webcall1\r\nCSeq: 8 BYE\r\nContent-Length: 0\r\n\r\n",
        ok.headers.get("To").unwrap()
    );
    h.input(Input::Receive { flow: Flow::Web { conn: CONN }, conn: Some(CONN), remote: browser(), data: bye.as_bytes() });
    let bye_ims = h.take_sip(Side::Ims).into_iter().find(|m| m.starts_with("BYE ")).expect("BYE toward the core");
    let Message::Request(b) = Message::parse(bye_ims.as_bytes()).unwrap() else { panic!() };
    let resp = estuary_sip::response_to(&b, 200, "OK").to_bytes();
    h.input(Input::Receive { flow: Flow::Ims { transport: Transport::Udp, remote: next_hop() }, conn: None, remote: next_hop(), data: &resp });
    assert_eq!(h.pcrf.strs().count(), 1, "STR at the end");
    let (summary, report) = h.ended.last().unwrap();
    assert_eq!(summary.reason, EndReason::Bye(Side::Web));
    let report = report.as_ref().expect("the record carries the Rx session");
    assert_eq!(report.session_id, aars[0].session_id);
    assert_eq!(report.result.as_deref(), Some("2001"));
    assert!(!h.pcrf.has_session(&report.session_id), "the PCRF closed it");
}

#[test]
fn closed_policy_refuses_the_call_when_the_pcrf_refuses() {
    let mut h = Harness::new(OnFailure::Closed);
    h.pcrf.set_aar_answer(AarAnswer::Experimental(5065));
    let invite = h.invite();
    h.answer(&invite);
    let to_web = h.take_sip(Side::Web);
    assert_eq!(to_web.iter().map(|m| status(m)).collect::<Vec<_>>(), [503]);
    assert!(to_web[0].contains("Warning: 399 estuary \"Rx: the PCRF refused the media (5065 (experimental))\""), "{}", to_web[0]);
    let to_ims: Vec<String> = h.take_sip(Side::Ims).iter().map(|m| m.split(' ').next().unwrap().to_owned()).collect();
    assert_eq!(to_ims, ["ACK", "BYE"]);
    let (summary, report) = h.ended.last().unwrap();
    assert_eq!((summary.reason, summary.status), (EndReason::PolicyRefused(Some(503)), Some(503)));
    assert_eq!(report.as_ref().and_then(|r| r.result.as_deref()), Some("5065 (experimental)"));
    assert_eq!(h.pcrf.strs().count(), 0, "a refused session needs no STR");
}

#[test]
fn closed_policy_refuses_when_the_pcrf_is_silent_and_open_policy_goes_on() {
    let mut h = Harness::new(OnFailure::Closed);
    h.pcrf.set_aar_answer(AarAnswer::Silent);
    let invite = h.invite();
    h.answer(&invite);
    assert!(h.take_sip(Side::Web).is_empty(), "the 200 waits for the PCRF");
    h.advance(Duration::from_millis(2100));
    let to_web = h.take_sip(Side::Web);
    assert_eq!(to_web.iter().map(|m| status(m)).collect::<Vec<_>>(), [503], "{to_web:?}");
    assert!(to_web[0].contains("no answer from the PCRF"));
    assert_eq!(h.ended.last().unwrap().1.as_ref().and_then(|r| r.result.as_deref()), Some("timeout"));

    let mut h = Harness::new(OnFailure::Open);
    h.pcrf.set_aar_answer(AarAnswer::Silent);
    let invite = h.invite();
    h.answer(&invite);
    assert_eq!(h.take_sip(Side::Web).iter().map(|m| status(m)).collect::<Vec<_>>(), [200], "open: no wait");
    h.advance(Duration::from_millis(2100));
    assert!(h.ended.is_empty(), "the call goes on");
    let failed_open = h.core.metrics(h.now).into_iter().find(|s| s.name == "estuary_rx_failures_open_total").unwrap().value;
    assert_eq!(failed_open, 1);
}

#[test]
fn a_rar_for_bearer_loss_or_out_of_credit_and_an_asr_end_the_call() {
    #[derive(Clone, Copy, PartialEq)]
    enum From {
        BearerLoss,
        OutOfCredit,
        Abort,
    }
    for (from, reason) in [(From::BearerLoss, "media_bearer_loss"), (From::OutOfCredit, "out_of_credit"), (From::Abort, "policy_aborted")] {
        let mut h = Harness::new(OnFailure::Open);
        let invite = h.invite();
        h.answer(&invite);
        h.take_sip(Side::Web);
        h.take_sip(Side::Ims);
        let session = h.pcrf.aars().next().unwrap().session_id.clone();
        let request = match from {
            From::Abort => h.pcrf.asr(&session, AbortCause::BearerReleased),
            From::BearerLoss => h.pcrf.rar(&session, &[SpecificAction::IndicationOfLossOfBearer], &[1]),
            From::OutOfCredit => h.pcrf.rar_out_of_credit(&session, &[1], 0),
        };
        h.pcrf_sends(request);
        let byes = |msgs: Vec<String>| msgs.into_iter().filter(|m| m.starts_with("BYE ")).collect::<Vec<_>>();
        let (web, ims) = (byes(h.take_sip(Side::Web)), byes(h.take_sip(Side::Ims)));
        assert_eq!((web.len(), ims.len()), (1, 1), "BYE on both legs");
        let release_cause = ims[0].contains("Reason: RELEASE_CAUSE;cause=3;text=\"Media bearer loss\"");
        assert_eq!(release_cause, from != From::OutOfCredit, "RELEASE_CAUSE 3 for a lost bearer only: {}", ims[0]);
        assert_eq!(h.pcrf.answers().len(), 1, "RAA/ASA");
        assert_eq!(h.pcrf.answers()[0].result_code(), Some(2001));
        // The gateway's own BYEs end the call at once; its record has the reason.
        let (summary, _) = h.ended.last().expect("the call ended");
        assert_eq!(summary.reason.as_str(), reason);
        assert_eq!(h.pcrf.strs().count(), 1, "STR after the end (after the ASA for an ASR)");
    }
}

#[test]
fn no_pcrf_at_all_is_not_fatal_in_open_mode_and_refuses_calls_in_closed_mode() {
    let mut h = Harness::without_pcrf(OnFailure::Open);
    let invite = h.invite();
    h.answer(&invite);
    assert_eq!(h.take_sip(Side::Web).iter().map(|m| status(m)).collect::<Vec<_>>(), [200]);
    let failed_open = h.core.metrics(h.now).into_iter().find(|s| s.name == "estuary_rx_failures_open_total").unwrap().value;
    assert_eq!(failed_open, 1, "counted");
    let up = h.core.metrics(h.now).into_iter().find(|s| s.name == "estuary_rx_peer_up").unwrap().value;
    assert_eq!(up, 0);

    let mut h = Harness::without_pcrf(OnFailure::Closed);
    let invite = h.invite();
    h.answer(&invite);
    let to_web = h.take_sip(Side::Web);
    assert_eq!(to_web.iter().map(|m| status(m)).collect::<Vec<_>>(), [503], "{to_web:?}");
    assert!(to_web[0].contains("no answer from the PCRF"), "{}", to_web[0]);
}

#[test]
fn a_call_from_ims_is_described_once_the_browser_answers() {
    let mut h = Harness::new(OnFailure::Closed);
    // alice registers; the core will reach her through the gateway's Contact.
    let contact = h.register();
    let target = contact.trim_start_matches('<').split('>').next().unwrap().to_owned();
    // An INVITE from the core with PCMU; the browser answers with Chromium's SDP shape.
    let offer = IMS_ANSWER;
    let invite = format!(
        "INVITE {target} SIP/2.0\r\nVia: SIP/2.0/UDP 10.9.9.9:5070;branch=z9hG4bKimsp\r\nMax-Forwards: 70\r\nFrom: <sip:bob@ims.test>;tag=bobtag\r\nTo: <sip:alice@ims.test>\r\nCall-ID: imscall-pcy@10.9.9.9\r\nCSeq: 5 INVITE\r\nContact: <sip:bob@10.9.9.9:5070>\r\nP-Charging-Vector: icid-value=core-icid-7\r\nContent-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{offer}",
        offer.len()
    );
    h.input(Input::Receive { flow: Flow::Ims { transport: Transport::Udp, remote: next_hop() }, conn: None, remote: next_hop(), data: invite.as_bytes() });
    let to_web = h.take_sip(Side::Web);
    let web_invite = to_web.iter().find(|m| m.starts_with("INVITE ")).unwrap_or_else(|| panic!("no INVITE to the browser: {to_web:?} {:?}", h.take_sip(Side::Ims)));
    let Message::Request(inv) = Message::parse(web_invite.as_bytes()).unwrap() else { panic!() };
    let answer = WEB_OFFER.replace("a=setup:actpass", "a=setup:active");
    let mut ok = estuary_sip::response_to(&inv, 200, "OK");
    ok.headers.set("To", format!("{};tag=web1", inv.headers.get("To").unwrap()));
    ok.headers.push("Contact", "<sip:8r2lhmvo@df7jal23ls0d.invalid;transport=ws>");
    ok.headers.push("Content-Type", "application/sdp");
    ok.body = answer.into_bytes();
    let data = ok.to_bytes();
    h.input(Input::Receive { flow: Flow::Web { conn: CONN }, conn: Some(CONN), remote: browser(), data: &data });
    let aar = h.pcrf.aars().next().cloned().expect("an AAR once the browser answered");
    assert_eq!(aar.af_charging_id.as_deref(), Some("core-icid-7"), "the core's ICID");
    assert_eq!(aar.subscriptions, [(2, "sip:alice@ims.test".to_owned())], "END_USER_SIP_URI: the registered identity");
    let audio = &aar.components[0];
    assert!(audio.codec_data[0].starts_with("downlink\noffer\n"), "ours was the offer: {:?}", audio.codec_data);
    assert!(audio.codec_data[1].starts_with("uplink\nanswer\nm=audio 48911 "), "the browser's answer: {:?}", audio.codec_data);
    assert_eq!(h.take_sip(Side::Ims).iter().filter(|m| status(m) == 200).count(), 1, "authorized: the 200 reached the core");
}

#[test]
fn a_registration_opens_a_signalling_session_describing_its_websocket() {
    let mut h = Harness::with_signalling(OnFailure::Closed);
    h.register();
    let aars: Vec<_> = h.pcrf.aars().cloned().collect();
    assert_eq!(aars.len(), 1, "one AAR, at the 2xx");
    let aar = &aars[0];
    assert_eq!(aar.request_type, Some(0));
    assert_eq!(aar.af_charging_id, None, "no call to charge");
    assert_eq!(aar.subscriptions, [(2, "sip:alice@ims.test".to_owned())]);
    assert_eq!(aar.framed_ip, Some("127.0.0.1".parse().unwrap()));
    assert_eq!(aar.specific_actions, [2, 4], "loss and release of the signalling bearer (no credit to run out of)");
    let c = &aar.components[0];
    assert_eq!(c.number, Some(0), "Media-Component-Number 0: AF signalling");
    let sub = &c.sub_components[0];
    assert_eq!((sub.flow_usage, sub.signalling_protocol), (Some(2), Some(1)), "AF_SIGNALLING, SIP");
    assert_eq!(
        sub.flow_descriptions,
        ["permit out 6 from 127.0.0.1 8443 to 127.0.0.1 40000", "permit in 6 from 127.0.0.1 40000 to 127.0.0.1 8443"],
        "the WebSocket's TCP connection, browser and listener"
    );
    assert_eq!(h.metric("estuary_rx_signalling_paths"), 1);

    // The socket closes: the STR goes, and the PCRF forgets the session.
    h.input(Input::ConnectionClosed { conn: CONN });
    assert_eq!(h.pcrf.strs().count(), 1);
    assert!(!h.pcrf.has_session(&aar.session_id));
    assert_eq!(h.metric("estuary_rx_signalling_paths"), 0);
    assert_eq!(h.metric("estuary_rx_sessions"), 0);
}

#[test]
fn a_lost_signalling_bearer_ends_the_browsers_call_and_both_sessions() {
    let mut h = Harness::with_signalling(OnFailure::Open);
    h.register();
    let signalling = h.pcrf.aars().next().unwrap().session_id.clone();
    let invite = h.invite();
    h.answer(&invite);
    h.take_sip(Side::Web);
    h.take_sip(Side::Ims);
    assert_eq!(h.pcrf.aars().count(), 2, "the call's own AAR");
    let rar = h.pcrf.rar(&signalling, &[SpecificAction::IndicationOfReleaseOfBearer], &[0]);
    h.pcrf_sends(rar);
    let byes = |msgs: Vec<String>| msgs.into_iter().filter(|m| m.starts_with("BYE ")).collect::<Vec<_>>();
    let (web, ims) = (byes(h.take_sip(Side::Web)), byes(h.take_sip(Side::Ims)));
    assert_eq!((web.len(), ims.len()), (1, 1), "BYE on both legs");
    assert!(ims[0].contains("Reason: RELEASE_CAUSE;cause=3"), "{}", ims[0]);
    let (summary, _) = h.ended.last().expect("the call ended");
    assert_eq!(summary.reason.as_str(), "signalling_bearer_loss");
    assert_eq!(h.pcrf.answers()[0].result_code(), Some(2001), "RAA");
    assert_eq!(h.pcrf.strs().count(), 2, "STR for the call and for the signalling path");
    assert!(!h.pcrf.has_session(&signalling));
    assert_eq!((h.metric("estuary_rx_signalling_lost_total"), h.metric("estuary_rx_signalling_paths")), (1, 0));
}

#[test]
fn a_refused_signalling_aar_is_counted_and_the_registration_stands() {
    let mut h = Harness::with_signalling(OnFailure::Closed);
    h.pcrf.set_aar_answer(AarAnswer::Experimental(5065));
    h.register();
    assert_eq!(h.metric("estuary_rx_signalling_failures_total"), 1);
    assert_eq!(h.metric("estuary_rx_signalling_paths"), 0);
    assert_eq!(h.core.signalling().registrar().active(h.now), 1, "still registered");
    h.input(Input::ConnectionClosed { conn: CONN });
    assert_eq!(h.pcrf.strs().count(), 0, "a refused session needs no STR");
}

#[test]
fn a_session_a_dead_gateway_opened_is_released_by_its_session_id() {
    let mut h = Harness::new(OnFailure::Open);
    let invite = h.invite();
    h.answer(&invite);
    let own = h.pcrf.aars().next().expect("the call's AAR").session_id.clone();
    // A node taking a call over knows the dead node's session by its Session-Id alone.
    let foreign = "pcscf-dead.ims.test;1700000000;7".to_owned();
    h.core.release_foreign_rx(h.now, foreign.clone());
    h.drain();
    let strs: Vec<_> = h.pcrf.strs().cloned().collect();
    assert_eq!(strs.len(), 1);
    assert_eq!(strs[0].session_id, foreign);
    assert_eq!(strs[0].termination_cause, Some(1), "DIAMETER_LOGOUT");
    assert!(h.pcrf.has_session(&own), "this node's own session is untouched");
    assert_eq!(h.metric("estuary_rx_foreign_sessions_released_total"), 1);
    // The STA (the double did not know the session: 5002) found it, and it is forgotten.
    assert_eq!(h.metric("estuary_rx_sessions"), 1, "only the call's own session is left");
}
