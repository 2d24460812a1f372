//! The B2BUA engine driven on a virtual clock: a scripted browser on one side, a scripted IMS
//! core on the other, every byte that crosses inspected. Real peers (sipp, WebSocket clients)
//! exercise the same paths in the conformance crate.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use estuary_b2bua::{
    B2bua, B2buaConfig, CallSummary, ConnId, EndReason, Flow, Holder, Input, Output, PolicyDecision, SharedCall, SharedRegistration, Side, SignallingPath, StateAnswer,
    StateQuery, Transport, VideoOverload,
};
use estuary_sip::{Message, Request, Response};

const CONN: ConnId = ConnId(1);
const BROWSER_HOST: &str = "df7jal23ls0d.invalid";

fn next_hop() -> SocketAddr {
    "127.0.0.1:5060".parse().unwrap()
}

fn ims_flow() -> Flow {
    Flow::Ims { transport: Transport::Udp, remote: next_hop() }
}

struct Harness {
    gw: B2bua,
    now: Instant,
    start: Instant,
    /// Outputs for the media plane (plans, ends), in order.
    media: Vec<Output>,
    /// Call start and end reports, in order.
    calls: Vec<Output>,
    /// The next media port this driver "binds" when the engine asks for more.
    next_port: u16,
    /// Signalling path reports, in order.
    paths: Vec<SignallingPath>,
    /// Shared-registration reports, in order.
    shared: Vec<Output>,
    /// What the cluster's shared state answers to the engine's questions (Unknown when not
    /// listed); `None`: the driver does not answer at all.
    state: Option<Vec<(StateQuery, StateAnswer)>>,
    /// The questions the engine asked, in order.
    asked: Vec<StateQuery>,
}

#[derive(Debug)]
struct Sent {
    flow: Flow,
    msg: Message,
    text: String,
}

impl Harness {
    fn new() -> Self {
        Self::with(B2buaConfig::default())
    }

    fn with(cfg: B2buaConfig) -> Self {
        let now = Instant::now();
        let mut gw = B2bua::new(cfg, 7, estuary_keys::KeySource::os());
        gw.handle_input(
            now,
            Input::ConnectionOpened {
                conn: CONN,
                side: Side::Web,
                transport: Transport::Wss,
                local: "127.0.0.1:8443".parse().unwrap(),
                remote: "127.0.0.1:40000".parse().unwrap(),
            },
        );
        let mut h = Harness { gw, now, start: now, media: Vec::new(), calls: Vec::new(), next_port: 20000, paths: Vec::new(), shared: Vec::new(), state: Some(Vec::new()), asked: Vec::new() };
        h.grant_wanted();
        h
    }

    /// What the daemon does after its inputs: bind (here: count) the ports the engine wants.
    fn grant_wanted(&mut self) {
        let n = self.gw.ports_wanted(self.now) as u16;
        let first = self.next_port;
        self.next_port += 2 * n;
        self.gw.grant_ports((0..n).map(|i| first + 2 * i));
    }

    fn web(&mut self, text: &str) -> Vec<Sent> {
        let data = text.replace('\n', "\r\n");
        self.gw.handle_input(
            self.now,
            Input::Receive { flow: Flow::Web { conn: CONN }, conn: Some(CONN), remote: "127.0.0.1:40000".parse().unwrap(), data: data.as_bytes() },
        );
        self.drain()
    }

    fn ims(&mut self, text: &str) -> Vec<Sent> {
        let data = text.replace('\n', "\r\n");
        self.gw.handle_input(self.now, Input::Receive { flow: ims_flow(), conn: None, remote: next_hop(), data: data.as_bytes() });
        self.drain()
    }

    fn ims_raw(&mut self, data: &[u8]) -> Vec<Sent> {
        self.gw.handle_input(self.now, Input::Receive { flow: ims_flow(), conn: None, remote: next_hop(), data });
        self.drain()
    }

    fn input(&mut self, input: Input<'_>) -> Vec<Sent> {
        self.gw.handle_input(self.now, input);
        self.drain()
    }

    /// Move the clock to `at` (relative to start), firing every deadline on the way.
    fn advance_to(&mut self, at: Duration) -> Vec<Sent> {
        let end = self.start + at;
        let mut out = Vec::new();
        while let Some(t) = self.gw.poll_timeout() {
            if t > end {
                break;
            }
            self.now = t.max(self.now);
            self.gw.handle_input(self.now, Input::Timeout);
            out.extend(self.drain());
        }
        self.now = end;
        out
    }

    fn drain(&mut self) -> Vec<Sent> {
        self.grant_wanted();
        let mut out = Vec::new();
        while let Some(o) = self.gw.poll_output() {
            match o {
                Output::Transmit { flow, data } => {
                    let text = String::from_utf8_lossy(&data).into_owned();
                    let msg = Message::parse(&data).unwrap_or_else(|e| panic!("gateway sent unparseable SIP ({e}):\n{text}"));
                    out.push(Sent { flow, msg, text });
                }
                Output::Media { .. } | Output::MediaEnd { .. } | Output::KeyframeRequested { .. } => self.media.push(o),
                Output::CallStarted { .. } | Output::CallEnded { .. } => self.calls.push(o),
                Output::Close { .. } => {}
                Output::SignallingPath(p) => self.paths.push(p),
                Output::RegistrationShared(_)
                | Output::RegistrationRemoved { .. }
                | Output::CallShared(_)
                | Output::CallAdopted { .. }
                | Output::CallUnshared { .. }
                | Output::HandOverWanted { .. } => self.shared.push(o),
                Output::StateQuery { query, ask } => {
                    self.asked.push(ask.clone());
                    if let Some(state) = &self.state {
                        let answer = state.iter().find(|(q, _)| *q == ask).map_or(StateAnswer::Unknown, |(_, a)| a.clone());
                        self.gw.handle_input(self.now, Input::StateAnswer { query, answer });
                    }
                }
            }
        }
        out
    }

    /// The summary of the last call that ended.
    fn ended(&self) -> &CallSummary {
        self.calls
            .iter()
            .rev()
            .find_map(|o| match o {
                Output::CallEnded { summary, .. } => Some(&**summary),
                _ => None,
            })
            .unwrap_or_else(|| panic!("no call ended: {:?}", self.calls))
    }

    /// Browser registration through a 401 challenge; returns the gateway's contact toward IMS.
    fn register(&mut self) -> String {
        let out = self.web(REGISTER);
        let reg = only_ims(&out);
        let resp = response(reg, 401, "Unauthorized", &[("WWW-Authenticate", r#"Digest realm="ims.test", nonce="abc", qop="auth", algorithm=MD5"#)]);
        let to_web = self.ims(&resp);
        assert_eq!(status(only_web(&to_web)), 401);
        let out = self.web(&REGISTER.replace("CSeq: 1 REGISTER", "CSeq: 2 REGISTER").replace("z9hG4bK56sdasks", "z9hG4bK56sdask2").replace(
            "Expires: 600",
            "Expires: 600\nAuthorization: Digest username=\"alice\", realm=\"ims.test\", nonce=\"abc\", uri=\"sip:ims.test\", response=\"0123456789abcdef0123456789abcdef\", qop=auth, nc=00000001, cnonce=\"xyz\"",
        ));
        let reg = only_ims(&out);
        assert!(reg.text.contains("Authorization: Digest username=\"alice\""), "credentials pass unchanged:\n{}", reg.text);
        let contact = reg.msg.headers().get("Contact").unwrap().to_owned();
        let ok = response(reg, 200, "OK", &[("Contact", &contact), ("Service-Route", "<sip:scscf.ims.test;lr>")]);
        let to_web = self.ims(&ok);
        assert_eq!(status(only_web(&to_web)), 200);
        contact
    }
}

const REGISTER: &str = "REGISTER sip:ims.test SIP/2.0
Via: SIP/2.0/WSS df7jal23ls0d.invalid;branch=z9hG4bK56sdasks
Max-Forwards: 69
To: <sip:alice@ims.test>
From: \"Alice\" <sip:alice@ims.test>;tag=10pu6ej9ts
Call-ID: 9ulsqbbhl9hd3hpbm1jf
CSeq: 1 REGISTER
Contact: <sip:8r2lhmvo@df7jal23ls0d.invalid;transport=ws>;+sip.ice;reg-id=1;+sip.instance=\"<urn:uuid:3f8f8c2a-8d1e-4c42-9a3b-2e7b4d2c1f01>\";expires=600
Expires: 600
Allow: INVITE,ACK,CANCEL,BYE,UPDATE,MESSAGE,OPTIONS,REFER,INFO,NOTIFY
Supported: path,gruu,outbound
User-Agent: JsSIP 3.10.0
Content-Length: 0

";

/// An IMS-side body: what a core or terminal sends (RTP/AVP, G.711).
const SDP: &str = "v=0\r\no=- 1 1 IN IP4 10.9.9.9\r\ns=-\r\nc=IN IP4 10.9.9.9\r\nt=0 0\r\nm=audio 40000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n";
/// A browser's offer, in Chromium's exact format (from the SDP golden corpus).
const WEB_OFFER: &str = include_str!("../../../conformance/sdp/cases/web-audio-g711/1-web-offer.sdp");

fn invite_from_web(branch: &str) -> String {
    format!(
        "INVITE sip:bob@ims.test SIP/2.0
Via: SIP/2.0/WSS df7jal23ls0d.invalid;branch={branch}
Max-Forwards: 69
To: <sip:bob@ims.test>
From: \"Alice\" <sip:alice@ims.test>;tag=a1b2c3
Call-ID: webcall1
CSeq: 7 INVITE
Contact: <sip:8r2lhmvo@df7jal23ls0d.invalid;transport=ws;ob>
Allow: INVITE,ACK,CANCEL,BYE,UPDATE,MESSAGE,OPTIONS,REFER,INFO,NOTIFY
Supported: 100rel,timer
P-Asserted-Identity: <sip:ceo@ims.test>
Content-Type: application/sdp
Content-Length: {}

{WEB_OFFER}",
        WEB_OFFER.len()
    )
    .replace("\r\n", "\n")
}

fn only_ims(out: &[Sent]) -> &Sent {
    let v: Vec<_> = out.iter().filter(|s| matches!(s.flow, Flow::Ims { .. })).collect();
    assert_eq!(v.len(), 1, "expected one message toward IMS, got {:#?}", out);
    v[0]
}

fn only_web(out: &[Sent]) -> &Sent {
    let v: Vec<_> = out.iter().filter(|s| matches!(s.flow, Flow::Web { .. })).collect();
    assert_eq!(v.len(), 1, "expected one message toward the browser, got {:#?}", out);
    v[0]
}

fn to_web(out: &[Sent]) -> Vec<&Sent> {
    out.iter().filter(|s| matches!(s.flow, Flow::Web { .. })).collect()
}

fn to_ims(out: &[Sent]) -> Vec<&Sent> {
    out.iter().filter(|s| matches!(s.flow, Flow::Ims { .. })).collect()
}

fn req(s: &Sent) -> &Request {
    match &s.msg {
        Message::Request(r) => r,
        Message::Response(r) => panic!("expected a request, got {} {}", r.code, r.reason),
    }
}

fn resp(s: &Sent) -> &Response {
    match &s.msg {
        Message::Response(r) => r,
        Message::Request(r) => panic!("expected a response, got {}", r.method.as_str()),
    }
}

fn status(s: &Sent) -> u16 {
    resp(s).code
}

/// A response the far end would send to `to`, with a To tag, `extra` headers and no body.
fn response(to: &Sent, code: u16, reason: &str, extra: &[(&str, &str)]) -> String {
    response_with_body(to, code, reason, extra, "")
}

fn response_with_body(to: &Sent, code: u16, reason: &str, extra: &[(&str, &str)], body: &str) -> String {
    let r = req(to);
    let mut out = estuary_sip::response_to(r, code, reason);
    if code > 100 && r.headers.to().unwrap().tag().is_none() {
        let to = format!("{};tag=far1", r.headers.get("To").unwrap());
        out.headers.set("To", &to);
    }
    for (k, v) in extra {
        out.headers.push(*k, *v);
    }
    if !body.is_empty() {
        out.headers.push("Content-Type", "application/sdp");
        out.body = body.as_bytes().to_vec();
    }
    String::from_utf8(out.to_bytes()).unwrap().replace("\r\n", "\n")
}

fn assert_no_web_leak(s: &Sent) {
    for needle in [BROWSER_HOST, "8r2lhmvo", "webcall1", "a1b2c3", "9ulsqbbhl9hd3hpbm1jf", "sip:ceo@"] {
        assert!(!s.text.contains(needle), "web-side detail {needle:?} leaked to IMS:\n{}", s.text);
    }
}

/// A browser call answered by IMS; returns (IMS INVITE, the 200 sent to the browser).
fn answered_call(h: &mut Harness) -> (Sent, Sent) {
    answered_call_with(h, &[])
}

/// As [`answered_call`], IMS's 200 carrying `extra` headers too.
fn answered_call_with(h: &mut Harness, extra: &[(&str, &str)]) -> (Sent, Sent) {
    h.register();
    let out = h.web(&invite_from_web("z9hG4bKinv1"));
    assert_eq!(status(only_web(&out)), 100);
    let inv = out.into_iter().find(|s| matches!(s.flow, Flow::Ims { .. })).unwrap();
    let mut headers = vec![("Contact", "<sip:bob@10.9.9.9:5070>"), ("Record-Route", "<sip:scscf.internal.ims;lr>")];
    headers.extend_from_slice(extra);
    let ok = response_with_body(&inv, 200, "OK", &headers, SDP);
    let out = h.ims(&ok);
    let web_ok = out.into_iter().next().unwrap();
    (inv, web_ok)
}

#[test]
fn register_goes_to_ims_with_path_and_a_gateway_contact() {
    let mut h = Harness::new();
    let out = h.web(REGISTER);
    let reg = only_ims(&out);
    assert_no_web_leak(reg);
    assert_eq!(reg.flow, ims_flow());
    let r = req(reg);
    assert_eq!(r.uri.to_string(), "sip:ims.test");
    let path = r.headers.get("Path").expect("Path");
    let contact = r.headers.get("Contact").expect("Contact");
    assert!(path.starts_with("<sip:") && path.ends_with("@127.0.0.1:5080;lr>"), "{path}");
    assert!(contact.contains("@127.0.0.1:5080;transport=udp>;expires=600"), "{contact}");
    assert!(contact.contains("+sip.instance=\"<urn:uuid:3f8f8c2a-8d1e-4c42-9a3b-2e7b4d2c1f01>\""), "{contact}");
    assert!(r.headers.values("Supported").iter().any(|s| s == "path"));
    assert_eq!(r.headers.vias().unwrap().len(), 1, "only the gateway's Via");
}

#[test]
fn register_challenge_and_success_are_relayed_with_the_browsers_contact() {
    let mut h = Harness::new();
    let out = h.web(REGISTER);
    let reg = only_ims(&out);
    let ims_call_id = req(reg).headers.call_id().unwrap().to_owned();
    let chall = response(reg, 401, "Unauthorized", &[("WWW-Authenticate", r#"Digest realm="ims.test", nonce="n1""#)]);
    let out = h.ims(&chall);
    let w = resp(only_web(&out));
    assert_eq!((w.code, w.reason.as_str()), (401, "Unauthorized"));
    assert_eq!(w.headers.get("WWW-Authenticate"), Some(r#"Digest realm="ims.test", nonce="n1""#));
    assert_eq!(w.headers.call_id().unwrap(), "9ulsqbbhl9hd3hpbm1jf");
    // The refresh keeps the IMS-side Call-ID and raises CSeq (RFC 3261 §10.2.4).
    let out = h.web(&REGISTER.replace("CSeq: 1 REGISTER", "CSeq: 2 REGISTER").replace("z9hG4bK56sdasks", "z9hG4bK56sdask2"));
    let reg2 = only_ims(&out);
    assert_eq!(req(reg2).headers.call_id().unwrap(), ims_call_id);
    assert_eq!(req(reg2).headers.cseq().unwrap().seq, 2);
    let contact = req(reg2).headers.get("Contact").unwrap().to_owned();
    let ok = response(reg2, 200, "OK", &[("Contact", &contact), ("Service-Route", "<sip:orig@scscf.ims.test;lr>"), ("Path", req(reg2).headers.get("Path").unwrap())]);
    let out = h.ims(&ok);
    let w = only_web(&out);
    assert_eq!(status(w), 200);
    let c = resp(w).headers.get("Contact").unwrap();
    assert!(c.starts_with("<sip:8r2lhmvo@df7jal23ls0d.invalid;transport=ws>"), "browser sees its own contact: {c}");
    assert!(c.ends_with(";expires=600"), "{c}");
    assert!(!w.text.contains("scscf") && !w.text.contains("127.0.0.1:5080"), "no IMS routing toward the browser:\n{}", w.text);
    assert_eq!(h.gw.registrar().active(h.now), 1);
}

#[test]
fn unregistered_browsers_cannot_call() {
    let mut h = Harness::new();
    let out = h.web(&invite_from_web("z9hG4bKx"));
    let w = only_web(&out);
    assert_eq!((status(w), resp(w).reason.as_str()), (403, "Not Registered"));
    assert!(to_ims(&out).is_empty());
}

#[test]
fn browser_call_is_re_originated_with_new_identifiers_and_relayed_both_ways() {
    let mut h = Harness::new();
    h.register();
    let out = h.web(&invite_from_web("z9hG4bKinv1"));
    assert_eq!(status(only_web(&out)), 100);
    let inv = only_ims(&out);
    assert_no_web_leak(inv);
    let r = req(inv);
    assert_eq!(r.uri.to_string(), "sip:bob@ims.test");
    assert_eq!(r.headers.get("Max-Forwards"), Some("68"));
    // The P-CSCF's charging correlation (TS 24.229 §5.2.6.3.3): a fresh ICID, made here.
    let pcv = r.headers.get("P-Charging-Vector").expect("P-Charging-Vector toward IMS");
    assert!(pcv.starts_with("icid-value=") && pcv.ends_with(";icid-generated-at=127.0.0.1"), "{pcv}");
    assert_eq!(r.headers.get("P-Asserted-Identity"), Some("<sip:alice@ims.test>"), "asserted from the registration, not from the browser");
    assert_eq!(r.headers.get_all("Route").collect::<Vec<_>>(), vec!["<sip:scscf.ims.test;lr>"], "Service-Route preloaded");
    // The offer is in IMS form: plain RTP on a gateway port, G.711, no WebRTC attributes.
    let body = String::from_utf8_lossy(&r.body);
    assert!(body.contains("m=audio 20002 RTP/AVP 0 8 126\r\n") && body.contains("c=IN IP4 127.0.0.1\r\n"), "{body}");
    for webrtc in ["ice-", "fingerprint", "setup:", "mid:", "BUNDLE", "extmap", "msid", "ssrc", "opus", "SAVPF"] {
        assert!(!body.contains(webrtc), "{webrtc} reached IMS:\n{body}");
    }
    assert_eq!(r.headers.get("Supported"), Some("100rel,timer"));

    let ringing = response(inv, 180, "Ringing", &[("Contact", "<sip:bob@10.9.9.9:5070>")]);
    let out = h.ims(&ringing);
    let w = only_web(&out);
    assert_eq!((status(w), resp(w).reason.as_str()), (180, "Ringing"));
    assert!(!w.text.contains("10.9.9.9"), "IMS-internal contact hidden:\n{}", w.text);
    let web_tag = resp(w).headers.to().unwrap().tag().unwrap().to_owned();

    let ok = response_with_body(inv, 200, "OK", &[("Contact", "<sip:bob@10.9.9.9:5070>"), ("Record-Route", "<sip:scscf.internal.ims;lr>")], SDP);
    let out = h.ims(&ok);
    let w = only_web(&out);
    assert_eq!(status(w), 200);
    assert_eq!(resp(w).headers.to().unwrap().tag(), Some(web_tag.as_str()), "same dialog as the 180");
    assert!(!w.text.contains("10.9.9.9") && !w.text.contains("scscf"), "{}", w.text);
    // The answer is in WebRTC form: ICE-lite, DTLS (passive toward the actpass offer), BUNDLE.
    let body = String::from_utf8_lossy(&resp(w).body);
    for want in ["a=ice-lite", "a=group:BUNDLE 0", "m=audio 20000 UDP/TLS/RTP/SAVPF 0\r\n", "a=setup:passive", "a=rtcp-mux", "a=fingerprint:sha-256 "] {
        assert!(body.contains(want), "{want} missing:\n{body}");
    }
    assert!(!body.contains("10.9.9.9"), "{body}");
    assert!(to_ims(&out).is_empty(), "the gateway waits for the browser's ACK");

    let ack = format!(
        "ACK sip:estuary@127.0.0.1;transport=wss SIP/2.0\nVia: SIP/2.0/WSS df7jal23ls0d.invalid;branch=z9hG4bKack1\nMax-Forwards: 69\nTo: <sip:bob@ims.test>;tag={web_tag}\nFrom: \"Alice\" <sip:alice@ims.test>;tag=a1b2c3\nCall-ID: webcall1\nCSeq: 7 ACK\nContent-Length: 0\n\n"
    );
    let out = h.web(&ack);
    let a = only_ims(&out);
    let ar = req(a);
    assert_eq!(ar.method.as_str(), "ACK");
    assert_eq!(ar.uri.to_string(), "sip:bob@10.9.9.9:5070", "ACK to the remote target");
    assert_eq!(ar.headers.get_all("Route").collect::<Vec<_>>(), vec!["<sip:scscf.internal.ims;lr>"]);
    assert_eq!(ar.headers.cseq().unwrap().seq, 1);
    assert_no_web_leak(a);

    let bye = ack.replace("ACK sip", "BYE sip").replace("7 ACK", "8 BYE").replace("z9hG4bKack1", "z9hG4bKbye1");
    let out = h.web(&bye);
    assert_eq!(status(only_web(&out)), 200);
    let b = only_ims(&out);
    assert_eq!(req(b).method.as_str(), "BYE");
    assert_eq!(req(b).headers.cseq().unwrap().seq, 2);
    assert_eq!(req(b).headers.call_id().unwrap(), req(inv).headers.call_id().unwrap());
    assert_eq!(h.gw.active_calls(), 0);
}

/// A forked INVITE: two early dialogs from IMS (two To tags), one answers, the call ends.
/// Every dialog key the call held goes with it, and the other calls' stay.
#[test]
fn a_forked_call_leaves_no_dialog_behind() {
    let mut h = Harness::new();
    h.register();
    let out = h.web(&invite_from_web("z9hG4bKinv1"));
    let inv = out.into_iter().find(|s| matches!(s.flow, Flow::Ims { .. })).unwrap();
    for tag in ["fork1", "fork2"] {
        let mut ringing = response(&inv, 180, "Ringing", &[("Contact", "<sip:bob@10.9.9.9:5070>")]);
        ringing = ringing.replace(";tag=far1", &format!(";tag={tag}"));
        let out = h.ims(&ringing);
        assert_eq!(status(only_web(&out)), 180, "{tag}");
    }
    assert_eq!(h.gw.dialogs(), 3, "both legs, and the second early dialog under a new tag toward the browser");
    let ok = response_with_body(&inv, 200, "OK", &[("Contact", "<sip:bob@10.9.9.9:5070>")], SDP).replace(";tag=far1", ";tag=fork2");
    let web_ok = h.ims(&ok).into_iter().next().unwrap();
    let tag = resp(&web_ok).headers.to().unwrap().tag().unwrap().to_owned();
    let bye = format!("BYE sip:estuary@127.0.0.1 SIP/2.0\nVia: SIP/2.0/WSS df7jal23ls0d.invalid;branch=z9hG4bKbye9\nMax-Forwards: 70\nTo: <sip:bob@ims.test>;tag={tag}\nFrom: <sip:alice@ims.test>;tag=a1b2c3\nCall-ID: webcall1\nCSeq: 8 BYE\nContent-Length: 0\n\n");
    h.web(&bye);
    assert_eq!(h.gw.active_calls(), 0);
    assert_eq!(h.gw.dialogs(), 0, "the ended call's dialogs, early ones included, are gone");
}

#[test]
fn bye_from_ims_reaches_the_browser() {
    let mut h = Harness::new();
    let (inv, web_ok) = answered_call(&mut h);
    let tag = resp(&web_ok).headers.to().unwrap().tag().unwrap().to_owned();
    let ack = format!("ACK sip:estuary@127.0.0.1 SIP/2.0\nVia: SIP/2.0/WSS df7jal23ls0d.invalid;branch=z9hG4bKack2\nTo: <sip:bob@ims.test>;tag={tag}\nFrom: <sip:alice@ims.test>;tag=a1b2c3\nCall-ID: webcall1\nCSeq: 7 ACK\nContent-Length: 0\n\n");
    h.web(&ack);
    let r = req(&inv);
    let bye = format!(
        "BYE sip:estuary@127.0.0.1:5080 SIP/2.0\nVia: SIP/2.0/UDP 10.9.9.9:5070;branch=z9hG4bKimsbye\nMax-Forwards: 70\nFrom: {};tag=far1\nTo: {}\nCall-ID: {}\nCSeq: 1 BYE\nContent-Length: 0\n\n",
        r.headers.get("To").unwrap(),
        r.headers.get("From").unwrap(),
        r.headers.call_id().unwrap()
    );
    let out = h.ims(&bye);
    assert_eq!(status(only_ims(&out)), 200);
    let b = only_web(&out);
    let br = req(b);
    assert_eq!(br.method.as_str(), "BYE");
    assert_eq!(br.uri.to_string(), "sip:8r2lhmvo@df7jal23ls0d.invalid;transport=ws;ob");
    assert_eq!(br.headers.call_id().unwrap(), "webcall1");
    assert_eq!(br.headers.to().unwrap().tag(), Some("a1b2c3"));
    assert!(!b.text.contains("10.9.9.9"), "{}", b.text);
    let e = h.ended();
    assert_eq!((e.reason, e.status, e.caller), (EndReason::Bye(Side::Ims), Some(200), Side::Web));
    assert!(e.answered.is_some() && e.media, "{e:?}");
}

#[test]
fn busy_is_relayed_and_acked_on_the_ims_side() {
    let mut h = Harness::new();
    h.register();
    let out = h.web(&invite_from_web("z9hG4bKbusy"));
    let inv = to_ims(&out)[0];
    let out = h.ims(&response(inv, 486, "Busy Here", &[]));
    let ack = only_ims(&out);
    assert_eq!(req(ack).method.as_str(), "ACK");
    let w = only_web(&out);
    assert_eq!((status(w), resp(w).reason.as_str()), (486, "Busy Here"));
    assert_eq!(h.gw.active_calls(), 0);
    let e = h.ended();
    assert_eq!((e.reason, e.status, e.answered, e.media), (EndReason::Rejected(486), Some(486), None, false));
    assert_eq!((e.from.as_str(), e.to.as_str()), ("sip:alice@ims.test", "sip:bob@ims.test"));
}

#[test]
fn cancel_waits_for_a_provisional_and_relays_the_487() {
    let mut h = Harness::new();
    h.register();
    let out = h.web(&invite_from_web("z9hG4bKc1"));
    let inv = to_ims(&out)[0];
    let cancel = "CANCEL sip:bob@ims.test SIP/2.0\nVia: SIP/2.0/WSS df7jal23ls0d.invalid;branch=z9hG4bKc1\nMax-Forwards: 69\nTo: <sip:bob@ims.test>\nFrom: \"Alice\" <sip:alice@ims.test>;tag=a1b2c3\nCall-ID: webcall1\nCSeq: 7 CANCEL\nContent-Length: 0\n\n";
    let out = h.web(cancel);
    assert_eq!(status(only_web(&out)), 200);
    assert!(to_ims(&out).is_empty(), "no CANCEL before a provisional (RFC 3261 §9.1)");
    let out = h.ims(&response(inv, 180, "Ringing", &[]));
    assert!(to_web(&out).is_empty(), "no 180 after the caller cancelled");
    let c = only_ims(&out);
    assert_eq!(req(c).method.as_str(), "CANCEL");
    assert_eq!(req(c).headers.get("Via"), req(inv).headers.get("Via"), "CANCEL reuses the INVITE's Via");
    let out = h.ims(&response(c, 200, "OK", &[]));
    assert!(out.is_empty());
    let out = h.ims(&response(inv, 487, "Request Terminated", &[]));
    assert_eq!(req(only_ims(&out)).method.as_str(), "ACK");
    assert_eq!(status(only_web(&out)), 487);
    assert_eq!(h.gw.active_calls(), 0);
    // The caller's CANCEL is why, not the callee's 487 that followed.
    assert_eq!((h.ended().reason, h.ended().status), (EndReason::Cancelled, Some(487)));
}

#[test]
fn a_200_crossing_the_cancel_is_acked_and_hung_up() {
    let mut h = Harness::new();
    h.register();
    let out = h.web(&invite_from_web("z9hG4bKc2"));
    let inv = to_ims(&out)[0];
    h.ims(&response(inv, 180, "Ringing", &[]));
    let cancel = "CANCEL sip:bob@ims.test SIP/2.0\nVia: SIP/2.0/WSS df7jal23ls0d.invalid;branch=z9hG4bKc2\nTo: <sip:bob@ims.test>\nFrom: \"Alice\" <sip:alice@ims.test>;tag=a1b2c3\nCall-ID: webcall1\nCSeq: 7 CANCEL\nContent-Length: 0\n\n";
    let out = h.web(cancel);
    assert_eq!(status(only_web(&out)), 200);
    assert_eq!(req(only_ims(&out)).method.as_str(), "CANCEL");
    // The callee answered before the CANCEL arrived.
    let out = h.ims(&response_with_body(inv, 200, "OK", &[("Contact", "<sip:bob@10.9.9.9:5070>")], SDP));
    let methods: Vec<_> = to_ims(&out).iter().map(|s| req(s).method.as_str().to_owned()).collect();
    assert_eq!(methods, vec!["ACK", "BYE"]);
    let w = only_web(&out);
    assert_eq!(status(w), 487, "the caller cancelled, so it gets 487, not the 200");
    assert_eq!(h.gw.active_calls(), 0);
    assert_eq!((h.ended().reason, h.ended().status, h.ended().answered), (EndReason::Cancelled, Some(487), None));
}

#[test]
fn unreachable_next_hop_gives_503_with_retry_after() {
    let mut h = Harness::new();
    let out = h.web(REGISTER);
    assert_eq!(to_ims(&out).len(), 1);
    let out = h.input(Input::Unreachable { flow: ims_flow() });
    let w = only_web(&out);
    assert_eq!(status(w), 503);
    assert_eq!(resp(w).headers.get("Retry-After"), Some("30"));
}

#[test]
fn silent_next_hop_gives_408_after_timer_f() {
    let mut h = Harness::new();
    h.web(REGISTER);
    let out = h.advance_to(Duration::from_millis(31_900));
    assert!(to_web(&out).is_empty());
    assert_eq!(to_ims(&out).len(), 10, "REGISTER retransmitted by Timer E over UDP");
    let out = h.advance_to(Duration::from_secs(33));
    assert_eq!(status(only_web(&out)), 408);
}

#[test]
fn ims_originated_call_reaches_the_browser_by_path_token() {
    let mut h = Harness::new();
    let contact = h.register();
    let token = contact.trim_start_matches("<sip:").split('@').next().unwrap().to_owned();
    let inv = format!(
        "INVITE sip:{token}@127.0.0.1:5080;transport=udp SIP/2.0\nVia: SIP/2.0/UDP 10.9.9.9:5070;branch=z9hG4bKimsinv\nMax-Forwards: 66\nRoute: <sip:{token}@127.0.0.1:5080;lr>\nRecord-Route: <sip:scscf.internal.ims;lr>\nFrom: <sip:bob@ims.test>;tag=bobtag\nTo: <sip:alice@ims.test>\nCall-ID: imscall1@10.9.9.9\nCSeq: 5 INVITE\nContact: <sip:bob@10.9.9.9:5070>\nP-Charging-Vector: icid-value=abc\nContent-Type: application/sdp\nContent-Length: {}\n\n{}",
        SDP.len(),
        SDP.replace("\r\n", "\n")
    );
    let out = h.ims(&inv);
    assert_eq!(status(only_ims(&out)), 100);
    let w = only_web(&out);
    assert_eq!(w.flow, Flow::Web { conn: CONN });
    let r = req(w);
    assert_eq!(r.uri.to_string(), "sip:8r2lhmvo@df7jal23ls0d.invalid;transport=ws");
    assert!(r.headers.get("Via").unwrap().starts_with("SIP/2.0/WSS "));
    for leak in ["10.9.9.9", "scscf", "imscall1", "bobtag", "icid-value", "P-Charging"] {
        assert!(!w.text.contains(leak), "{leak} leaked to the browser:\n{}", w.text);
    }
    let ringing = response(w, 180, "Ringing", &[("Contact", "<sip:8r2lhmvo@df7jal23ls0d.invalid;transport=ws>")]);
    let out = h.web(&ringing);
    let i = only_ims(&out);
    assert_eq!(status(i), 180);
    assert_no_web_leak(i);
    assert_eq!(
        resp(i).headers.get_all("Record-Route").collect::<Vec<_>>(),
        vec!["<sip:scscf.internal.ims;lr>"],
        "RFC 3261 §12.1.1: the IMS side's Record-Route is echoed in dialog-creating responses"
    );
}

#[test]
fn dropping_the_websocket_mid_call_sends_bye_and_deregisters() {
    let mut h = Harness::new();
    let (_inv, web_ok) = answered_call(&mut h);
    let tag = resp(&web_ok).headers.to().unwrap().tag().unwrap().to_owned();
    let ack = format!("ACK sip:estuary@127.0.0.1 SIP/2.0\nVia: SIP/2.0/WSS df7jal23ls0d.invalid;branch=z9hG4bKack3\nTo: <sip:bob@ims.test>;tag={tag}\nFrom: <sip:alice@ims.test>;tag=a1b2c3\nCall-ID: webcall1\nCSeq: 7 ACK\nContent-Length: 0\n\n");
    h.web(&ack);
    let out = h.input(Input::ConnectionClosed { conn: CONN });
    let mut methods: Vec<_> = to_ims(&out).iter().map(|s| req(s).method.as_str().to_owned()).collect();
    methods.sort();
    assert_eq!(methods, vec!["BYE", "REGISTER"]);
    let reg = to_ims(&out).into_iter().find(|s| req(s).method.as_str() == "REGISTER").unwrap();
    assert!(req(reg).headers.get("Contact").unwrap().ends_with(";expires=0"));
    // The BYE is the gateway's own: it names the gateway, not the browser's JsSIP.
    let bye = to_ims(&out).into_iter().find(|s| req(s).method.as_str() == "BYE").unwrap();
    assert_eq!(req(bye).headers.get_all("User-Agent").collect::<Vec<_>>(), ["Estuary/0.1"]);
    assert!(to_web(&out).is_empty());
    assert_eq!(h.gw.active_calls(), 0);
    assert_eq!((h.ended().reason, h.ended().status), (EndReason::ConnectionLost, Some(200)));
}

#[test]
fn one_source_holds_at_most_its_registration_quota() {
    let mut h = Harness::with(B2buaConfig { registrations_per_source: 2, ..B2buaConfig::default() });
    let register = |i: usize| REGISTER.replace("Call-ID: 9ulsqbbhl9hd3hpbm1jf", &format!("Call-ID: reg{i}")).replace("z9hG4bK56sdasks", &format!("z9hG4bKquota{i}"));
    // Two new bindings from 127.0.0.1 go to IMS (pending ones count: a storm cannot outrun it).
    for i in 0..2 {
        let out = h.web(&register(i));
        assert_eq!(req(only_ims(&out)).method.as_str(), "REGISTER");
    }
    let out = h.web(&register(2));
    let refused = only_web(&out);
    assert_eq!((status(refused), resp(refused).reason.as_str()), (403, "Too Many Registrations From This Address"));
    // A refresh of an existing binding is not a new one.
    let out = h.web(&register(0).replace("CSeq: 1 REGISTER", "CSeq: 2 REGISTER").replace("z9hG4bKquota0", "z9hG4bKquota0b"));
    assert_eq!(req(only_ims(&out)).method.as_str(), "REGISTER");
    // Another source has its own quota.
    let other = ConnId(2);
    h.input(Input::ConnectionOpened { conn: other, side: Side::Web, transport: Transport::Wss, local: "127.0.0.1:8443".parse().unwrap(), remote: "192.0.2.9:41000".parse().unwrap() });
    let data = register(3).replace('\n', "\r\n");
    h.gw.handle_input(h.now, Input::Receive { flow: Flow::Web { conn: other }, conn: Some(other), remote: "192.0.2.9:41000".parse().unwrap(), data: data.as_bytes() });
    let out = h.drain();
    assert_eq!(req(only_ims(&out)).method.as_str(), "REGISTER");
}

#[test]
fn registrations_shorter_than_the_minimum_get_423_with_min_expires() {
    let mut h = Harness::new();
    let short = REGISTER.replace(";expires=600", ";expires=30").replace("Expires: 600", "Expires: 30");
    let out = h.web(&short);
    let w = only_web(&out);
    assert_eq!((status(w), resp(w).reason.as_str()), (423, "Interval Too Brief"));
    assert_eq!(resp(w).headers.get("Min-Expires"), Some("60"));
    assert!(to_ims(&out).is_empty(), "nothing reaches IMS");
    // At the minimum it passes; removal (expires=0) is never too brief.
    let at_min = REGISTER.replace(";expires=600", ";expires=60").replace("Expires: 600", "Expires: 60").replace("z9hG4bK56sdasks", "z9hG4bKatmin");
    assert_eq!(req(only_ims(&h.web(&at_min))).method.as_str(), "REGISTER");
    let mut h = Harness::new();
    let removal = REGISTER.replace(";expires=600", ";expires=0").replace("Expires: 600", "Expires: 0");
    assert_eq!(req(only_ims(&h.web(&removal))).method.as_str(), "REGISTER");
}

#[test]
fn local_responses_carry_server_and_the_header_can_be_switched_off() {
    let mut h = Harness::new();
    let out = h.web(&invite_from_web("z9hG4bKsrv"));
    assert_eq!(resp(only_web(&out)).headers.get("Server"), Some("Estuary/0.1"));
    let mut h = Harness::with(B2buaConfig { user_agent: None, ..B2buaConfig::default() });
    let out = h.web(&invite_from_web("z9hG4bKsrv"));
    assert_eq!(status(only_web(&out)), 403);
    assert_eq!(resp(only_web(&out)).headers.get("Server"), None);
}

#[test]
fn without_required_registration_an_unregistered_browser_can_call() {
    let mut h = Harness::with(B2buaConfig { require_registration: false, ..B2buaConfig::default() });
    let out = h.web(&invite_from_web("z9hG4bKlab"));
    assert_eq!(status(to_web(&out)[0]), 100);
    let inv = only_ims(&out);
    assert_eq!(req(inv).method.as_str(), "INVITE");
    assert_no_web_leak(inv);
}

#[test]
fn malformed_requests_get_400_with_a_reason_and_garbage_is_dropped() {
    let mut h = Harness::new();
    let bad = "OPTIONS sip:bob@ims.test SIP/2.0\nVia: SIP/2.0/UDP 10.0.0.1;branch=z9hG4bKbad\nTo: <sip:bob@ims.test>\nFrom: <sip:a@ims.test>;tag=1\nCall-ID: bad1\nCSeq: 1 INVITE\nContent-Length: 0\n\n";
    let out = h.ims(bad);
    let r = resp(only_ims(&out));
    assert_eq!(r.code, 400);
    assert!(r.reason.to_ascii_lowercase().contains("cseq"), "the reason says what is wrong: {}", r.reason);
    let out = h.ims_raw(b"\x00\x01garbage\xff");
    assert!(out.is_empty());
    let samples = h.gw.metrics(h.now);
    let parse_errors: u64 = samples.iter().filter(|s| s.name == "estuary_sip_parse_errors_total").map(|s| s.value).sum();
    assert_eq!(parse_errors, 2);
}

#[test]
fn options_to_the_gateway_itself_is_answered_locally() {
    let mut h = Harness::new();
    let out = h.ims("OPTIONS sip:127.0.0.1:5080 SIP/2.0\nVia: SIP/2.0/UDP 10.9.9.9:5070;branch=z9hG4bKopt\nMax-Forwards: 70\nTo: <sip:127.0.0.1:5080>\nFrom: <sip:ping@ims.test>;tag=p\nCall-ID: opt1\nCSeq: 1 OPTIONS\nContent-Length: 0\n\n");
    let r = resp(only_ims(&out));
    assert_eq!(r.code, 200);
    assert!(r.headers.get("Allow").unwrap().contains("INVITE"));
}

#[test]
fn a_request_that_looped_back_is_refused() {
    let mut h = Harness::new();
    let out = h.ims("MESSAGE sip:alice@ims.test SIP/2.0\nVia: SIP/2.0/UDP 10.9.9.9:5070;branch=z9hG4bKl2\nVia: SIP/2.0/UDP 127.0.0.1:5080;branch=z9hG4bKl1\nMax-Forwards: 60\nTo: <sip:alice@ims.test>\nFrom: <sip:bob@ims.test>;tag=p\nCall-ID: loop1\nCSeq: 1 MESSAGE\nContent-Length: 0\n\n");
    assert_eq!(status(only_ims(&out)), 482);
}

/// A browser calling another browser of the same gateway: the INVITE leaves through the core
/// and comes back with the gateway's own Via in it, now addressed to the callee's binding by
/// its Path token. That is a spiral (RFC 3261 §16.3 item 4): deliver it, do not answer 482.
#[test]
fn a_request_that_spirals_back_to_a_binding_is_delivered() {
    let mut h = Harness::new();
    let contact = h.register();
    let token = contact.trim_start_matches("<sip:").split('@').next().unwrap().to_owned();
    let out = h.web(&invite_from_web("z9hG4bKspiral"));
    let inv = to_ims(&out).into_iter().find(|s| matches!(s.msg, Message::Request(_))).expect("INVITE toward IMS").text.clone();
    let our_via = inv.lines().find(|l| l.starts_with("Via: ")).unwrap().trim_start_matches("Via: ").to_owned();
    let call_id = inv.lines().find(|l| l.starts_with("Call-ID: ")).unwrap().trim_start_matches("Call-ID: ").to_owned();
    let from = inv.lines().find(|l| l.starts_with("From: ")).unwrap().trim_start_matches("From: ").to_owned();
    let spiral = format!(
        "INVITE sip:{token}@127.0.0.1:5080 SIP/2.0\nVia: SIP/2.0/UDP 10.9.9.9:5070;branch=z9hG4bKcore1\nVia: {our_via}\nMax-Forwards: 65\nRoute: <sip:{token}@127.0.0.1:5080;lr>\nRecord-Route: <sip:scscf.internal.ims;lr>\nFrom: {from}\nTo: <sip:alice@ims.test>\nCall-ID: {call_id}\nCSeq: 1 INVITE\nContact: <sip:estuary@127.0.0.1:5080;transport=udp>\nContent-Type: application/sdp\nContent-Length: {}\n\n{}",
        SDP.len(),
        SDP.replace("\r\n", "\n")
    );
    let out = h.ims(&spiral);
    assert!(to_ims(&out).iter().all(|s| status(s) != 482), "{out:#?}");
    let w = to_web(&out).into_iter().find(|s| matches!(s.msg, Message::Request(_))).expect("the INVITE reaches the browser");
    assert_eq!(req(w).method.as_str(), "INVITE");
}

/// Every RFC 4475 torture message, sent from the IMS side over UDP: the engine answers exactly
/// as conformance/data/rfc4475/EXPECTATIONS.tsv says and never panics. (The same corpus goes to
/// the running daemon over a real socket in the conformance crate.)
#[test]
fn rfc4475_messages_get_the_expected_answers_from_the_engine() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../conformance/data/rfc4475");
    let table = std::fs::read_to_string(dir.join("EXPECTATIONS.tsv")).expect("expectations table");
    let mut checked = 0;
    for line in table.lines().filter(|l| !l.starts_with('#') && !l.starts_with("file\t")) {
        let cols: Vec<&str> = line.split('\t').collect();
        let (file, expected) = (cols[0], cols[3]);
        let data = std::fs::read(dir.join(file)).unwrap_or_else(|e| panic!("{file}: {e}"));
        let mut h = Harness::new();
        let out = h.ims_raw(&data);
        let answers: Vec<u16> = out.iter().filter_map(|s| match &s.msg {
            Message::Response(r) if matches!(s.flow, Flow::Ims { .. }) => Some(r.code),
            _ => None,
        }).collect();
        match expected {
            "drop" => assert!(out.is_empty(), "{file}: expected silence, got {out:#?}"),
            "handled" => assert!(
                answers.iter().all(|c| ![400, 416, 420, 505].contains(c)),
                "{file}: a valid message was refused: {answers:?}"
            ),
            code => {
                let code: u16 = code.parse().unwrap_or_else(|_| panic!("{file}: bad expectation {code}"));
                assert_eq!(answers, vec![code], "{file}: {out:#?}");
            }
        }
        checked += 1;
    }
    assert_eq!(checked, 49, "every RFC 4475 message is covered");
}

/// The same messages from a browser (a WebSocket flow): requests get a final answer of their
/// own, never 400 when valid, at once (no far end is involved in refusing them).
#[test]
fn rfc4475_messages_from_a_browser_get_the_expected_answers() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../conformance/data/rfc4475");
    let table = std::fs::read_to_string(dir.join("EXPECTATIONS.tsv")).expect("expectations table");
    let mut wrong = Vec::new();
    for line in table.lines().filter(|l| !l.starts_with('#') && !l.starts_with("file\t")) {
        let cols: Vec<&str> = line.split('\t').collect();
        let (file, expected) = (cols[0], cols[3]);
        let data = std::fs::read(dir.join(file)).unwrap_or_else(|e| panic!("{file}: {e}"));
        let mut h = Harness::new();
        let out = h.input(Input::Receive { flow: Flow::Web { conn: CONN }, conn: Some(CONN), remote: "127.0.0.1:40000".parse().unwrap(), data: &data });
        let answers: Vec<u16> = out.iter().filter_map(|s| match &s.msg {
            Message::Response(r) if matches!(s.flow, Flow::Web { .. }) => Some(r.code),
            _ => None,
        }).collect();
        let ok = match expected {
            "drop" => answers.is_empty(),
            "handled" if data.starts_with(b"SIP/") => answers.is_empty(),
            // REGISTER goes on to IMS; everything else is settled here.
            "handled" => answers.iter().all(|c| ![400, 416, 420, 505].contains(c)) && (answers.iter().any(|c| *c >= 200) || to_ims(&out).len() == 1),
            code => answers.first().map(u16::to_string).as_deref() == Some(code),
        };
        if !ok {
            wrong.push(format!("{file}: expected {expected}, got {answers:?}"));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

/// Chromium's answer to the gateway's offer for an IMS-originated call (golden corpus).
const WEB_ANSWER: &str = include_str!("../../../conformance/sdp/cases/ims-offer-volte/2-web-answer.sdp");

fn ims_invite(token: &str, branch: &str, body: &str) -> String {
    let ct = if body.is_empty() { String::new() } else { "Content-Type: application/sdp\n".to_owned() };
    format!(
        "INVITE sip:{token}@127.0.0.1:5080;transport=udp SIP/2.0\nVia: SIP/2.0/UDP 10.9.9.9:5070;branch={branch}\nMax-Forwards: 66\nRoute: <sip:{token}@127.0.0.1:5080;lr>\nFrom: <sip:bob@ims.test>;tag=bobtag\nTo: <sip:alice@ims.test>\nCall-ID: imscall1@10.9.9.9\nCSeq: 5 INVITE\nContact: <sip:bob@10.9.9.9:5070>\n{ct}Content-Length: {}\n\n{}",
        body.len(),
        body.replace("\r\n", "\n")
    )
}

fn token_of(contact: &str) -> String {
    contact.trim_start_matches("<sip:").split('@').next().unwrap().to_owned()
}

fn ports_left(h: &Harness) -> u64 {
    h.gw.metrics(h.now).iter().find(|s| s.name == "estuary_media_ports_available").unwrap().value
}

#[test]
fn a_browser_offer_the_engine_refuses_gets_488_with_a_warning_and_holds_no_ports() {
    let mut h = Harness::new();
    h.register();
    let before = ports_left(&h);
    let no_fp: String = WEB_OFFER.lines().filter(|l| !l.starts_with("a=fingerprint")).map(|l| format!("{l}\n")).collect();
    let inv = invite_from_web("z9hG4bKnofp").replace(&WEB_OFFER.replace("\r\n", "\n"), &no_fp.replace('\r', ""));
    let inv = inv.replace(&format!("Content-Length: {}", WEB_OFFER.len()), &format!("Content-Length: {}", no_fp.len()));
    let out = h.web(&inv);
    assert!(to_ims(&out).is_empty(), "nothing reaches IMS");
    let w = to_web(&out).into_iter().find(|s| status(s) >= 200).expect("final response");
    assert_eq!((status(w), resp(w).reason.as_str()), (488, "Not Acceptable Here"));
    assert_eq!(resp(w).headers.get("Warning"), Some("399 estuary \"browser SDP without DTLS fingerprint\""));
    assert_eq!(h.gw.active_calls(), 0);
    assert_eq!(ports_left(&h), before);
}

#[test]
fn an_ims_offer_reaches_the_browser_in_webrtc_form_and_its_answer_returns_in_ims_form() {
    let mut h = Harness::new();
    let token = token_of(&h.register());
    let before = ports_left(&h);
    let out = h.ims(&ims_invite(&token, "z9hG4bKimsoffer", SDP));
    let w = only_web(&out);
    let offer = String::from_utf8_lossy(&req(w).body).into_owned();
    for want in ["UDP/TLS/RTP/SAVPF 0", "a=ice-lite", "a=setup:actpass", "a=fingerprint:", "a=mid:0", "a=rtcp-mux", "a=candidate:"] {
        assert!(offer.contains(want), "{want}:\n{offer}");
    }
    assert!(!offer.contains("10.9.9.9"), "{offer}");
    // Chromium answers: active, its own fingerprint and ICE credentials.
    let answer = WEB_ANSWER.replace("m=audio 9 UDP/TLS/RTP/SAVPF 0 8 105", "m=audio 9 UDP/TLS/RTP/SAVPF 0");
    let ok = response_with_body(w, 200, "OK", &[("Contact", "<sip:8r2lhmvo@df7jal23ls0d.invalid;transport=ws>")], &answer);
    let out = h.web(&ok);
    let i = only_ims(&out);
    assert_eq!(status(i), 200);
    let ims_answer = String::from_utf8_lossy(&resp(i).body).into_owned();
    assert!(ims_answer.contains("m=audio 20002 RTP/AVP 0\r\n") && ims_answer.contains("c=IN IP4 127.0.0.1"), "{ims_answer}");
    for webrtc in ["ice-", "fingerprint", "setup", "mid", "SAVPF", "ssrc"] {
        assert!(!ims_answer.contains(webrtc), "{webrtc} reached IMS:\n{ims_answer}");
    }
    assert_eq!(ports_left(&h), before - 2, "one web and one IMS port held by the call");
    // BYE from IMS ends the call and gives the ports back.
    let bye = format!(
        "BYE sip:x@127.0.0.1:5080 SIP/2.0\nVia: SIP/2.0/UDP 10.9.9.9:5070;branch=z9hG4bKbye9\nMax-Forwards: 70\nFrom: <sip:bob@ims.test>;tag=bobtag\nTo: <sip:alice@ims.test>;tag={}\nCall-ID: imscall1@10.9.9.9\nCSeq: 6 BYE\nContent-Length: 0\n\n",
        resp(i).headers.to().unwrap().tag().unwrap()
    );
    h.ims(&bye);
    assert_eq!(h.gw.active_calls(), 0);
    // Released ports rest in quarantine (30 s by default) before reuse.
    assert_eq!(ports_left(&h), before - 2);
    let at = h.now - h.start + Duration::from_secs(30);
    h.advance_to(at);
    assert_eq!(ports_left(&h), before);
}

#[test]
fn a_delayed_offer_comes_back_in_the_2xx_and_its_answer_in_the_ack() {
    let mut h = Harness::new();
    let token = token_of(&h.register());
    // INVITE without SDP (RFC 3261 §13.2.1): the browser makes the offer in its 200.
    let out = h.ims(&ims_invite(&token, "z9hG4bKdelayed", ""));
    let w = only_web(&out);
    assert!(req(w).body.is_empty() && req(w).headers.get("Content-Type").is_none());
    let browser_offer = WEB_OFFER;
    let ok = response_with_body(w, 200, "OK", &[("Contact", "<sip:8r2lhmvo@df7jal23ls0d.invalid;transport=ws>")], browser_offer);
    let out = h.web(&ok);
    let i = only_ims(&out);
    let ims_offer = String::from_utf8_lossy(&resp(i).body).into_owned();
    assert!(ims_offer.contains("RTP/AVP 0 8 126"), "{ims_offer}");
    // The core's answer rides in its ACK; the browser's ACK gets the WebRTC answer.
    let web_tag = resp(i).headers.to().unwrap().tag().unwrap().to_owned();
    let ack = format!(
        "ACK sip:x@127.0.0.1:5080 SIP/2.0\nVia: SIP/2.0/UDP 10.9.9.9:5070;branch=z9hG4bKack9\nMax-Forwards: 70\nFrom: <sip:bob@ims.test>;tag=bobtag\nTo: <sip:alice@ims.test>;tag={web_tag}\nCall-ID: imscall1@10.9.9.9\nCSeq: 5 ACK\nContent-Type: application/sdp\nContent-Length: {}\n\n{}",
        SDP.len(),
        SDP.replace("\r\n", "\n")
    );
    let out = h.ims(&ack);
    let a = only_web(&out);
    assert_eq!(req(a).method.as_str(), "ACK");
    let web_answer = String::from_utf8_lossy(&req(a).body).into_owned();
    for want in ["a=ice-lite", "a=setup:passive", "UDP/TLS/RTP/SAVPF 0\r\n", "a=mid:0"] {
        assert!(web_answer.contains(want), "{want}:\n{web_answer}");
    }
    assert_eq!(req(a).headers.get("Content-Type"), Some("application/sdp"));
}

#[test]
fn a_hold_re_invite_is_rewritten_both_ways() {
    let mut h = Harness::new();
    let (inv, web_ok) = answered_call(&mut h);
    let tag = resp(&web_ok).headers.to().unwrap().tag().unwrap().to_owned();
    h.web(&format!("ACK sip:estuary@127.0.0.1 SIP/2.0\nVia: SIP/2.0/WSS df7jal23ls0d.invalid;branch=z9hG4bKack5\nTo: <sip:bob@ims.test>;tag={tag}\nFrom: <sip:alice@ims.test>;tag=a1b2c3\nCall-ID: webcall1\nCSeq: 7 ACK\nContent-Length: 0\n\n"));
    let hold = WEB_OFFER.replace("a=sendrecv", "a=sendonly").replace("6052466429178389532 2", "6052466429178389532 3");
    let reinv = format!(
        "INVITE sip:estuary@127.0.0.1 SIP/2.0\nVia: SIP/2.0/WSS df7jal23ls0d.invalid;branch=z9hG4bKhold\nMax-Forwards: 70\nTo: <sip:bob@ims.test>;tag={tag}\nFrom: <sip:alice@ims.test>;tag=a1b2c3\nCall-ID: webcall1\nCSeq: 8 INVITE\nContact: <sip:8r2lhmvo@df7jal23ls0d.invalid;transport=ws;ob>\nContent-Type: application/sdp\nContent-Length: {}\n\n{}",
        hold.len(),
        hold.replace("\r\n", "\n")
    );
    let out = h.web(&reinv);
    let i = to_ims(&out).into_iter().find(|s| matches!(s.msg, Message::Request(_))).expect("re-INVITE toward IMS");
    let body = String::from_utf8_lossy(&req(i).body).into_owned();
    assert!(body.contains("a=sendonly") && body.contains("m=audio 20002 RTP/AVP"), "same port, held:\n{body}");
    assert!(body.contains(" 2 IN IP4 "), "o= version went up (RFC 3264 §8):\n{body}");
    let _ = inv;
    let ok = response_with_body(i, 200, "OK", &[("Contact", "<sip:bob@10.9.9.9:5070>")], &SDP.replace("m=audio 40000 RTP/AVP 0\r\n", "m=audio 40000 RTP/AVP 0\r\na=recvonly\r\n"));
    let out = h.ims(&ok);
    let w = only_web(&out);
    let answer = String::from_utf8_lossy(&resp(w).body).into_owned();
    assert!(answer.contains("a=recvonly") && answer.contains("a=setup:passive"), "{answer}");
}

#[test]
fn early_media_answer_in_183_then_a_bodiless_200() {
    let mut h = Harness::new();
    h.register();
    let out = h.web(&invite_from_web("z9hG4bKearly"));
    let inv = only_ims(&out);
    let early = response_with_body(inv, 183, "Session Progress", &[("Contact", "<sip:bob@10.9.9.9:5070>")], SDP);
    let out = h.ims(&early);
    let w = only_web(&out);
    assert_eq!(status(w), 183);
    let answer = String::from_utf8_lossy(&resp(w).body).into_owned();
    assert!(answer.contains("a=ice-lite") && answer.contains("UDP/TLS/RTP/SAVPF 0\r\n"), "{answer}");
    // The 200 repeats no SDP (the 183 carried the answer): relayed without a body.
    let ok = response(inv, 200, "OK", &[("Contact", "<sip:bob@10.9.9.9:5070>")]);
    let out = h.ims(&ok);
    let w = only_web(&out);
    assert_eq!(status(w), 200);
    assert!(resp(w).body.is_empty() && resp(w).headers.get("Content-Type").is_none(), "{}", w.text);
}

#[test]
fn an_update_offer_and_its_answer_are_rewritten() {
    let mut h = Harness::new();
    let (_inv, web_ok) = answered_call(&mut h);
    let tag = resp(&web_ok).headers.to().unwrap().tag().unwrap().to_owned();
    h.web(&format!("ACK sip:estuary@127.0.0.1 SIP/2.0\nVia: SIP/2.0/WSS df7jal23ls0d.invalid;branch=z9hG4bKack6\nTo: <sip:bob@ims.test>;tag={tag}\nFrom: <sip:alice@ims.test>;tag=a1b2c3\nCall-ID: webcall1\nCSeq: 7 ACK\nContent-Length: 0\n\n"));
    let offer = WEB_OFFER.replace("a=sendrecv", "a=inactive");
    let update = format!(
        "UPDATE sip:estuary@127.0.0.1 SIP/2.0\nVia: SIP/2.0/WSS df7jal23ls0d.invalid;branch=z9hG4bKupd\nMax-Forwards: 70\nTo: <sip:bob@ims.test>;tag={tag}\nFrom: <sip:alice@ims.test>;tag=a1b2c3\nCall-ID: webcall1\nCSeq: 8 UPDATE\nContact: <sip:8r2lhmvo@df7jal23ls0d.invalid;transport=ws;ob>\nContent-Type: application/sdp\nContent-Length: {}\n\n{}",
        offer.len(),
        offer.replace("\r\n", "\n")
    );
    let out = h.web(&update);
    let u = only_ims(&out);
    assert_eq!(req(u).method.as_str(), "UPDATE");
    let ims_offer = String::from_utf8_lossy(&req(u).body).into_owned();
    assert!(ims_offer.contains("a=inactive") && ims_offer.contains("RTP/AVP"), "{ims_offer}");
    let ok = response_with_body(u, 200, "OK", &[("Contact", "<sip:bob@10.9.9.9:5070>")], &SDP.replace("RTP/AVP 0\r\n", "RTP/AVP 0\r\na=inactive\r\n"));
    let out = h.ims(&ok);
    let w = only_web(&out);
    let answer = String::from_utf8_lossy(&resp(w).body).into_owned();
    assert!(answer.contains("a=inactive") && answer.contains("a=ice-lite"), "{answer}");
    // A second UPDATE that IMS refuses keeps the old session: the next offer is a new offer.
    let out = h.web(&update.replace("z9hG4bKupd", "z9hG4bKupd2").replace("CSeq: 8 UPDATE", "CSeq: 9 UPDATE"));
    let u2 = only_ims(&out);
    let out = h.ims(&response(u2, 488, "Not Acceptable Here", &[]));
    assert_eq!(status(only_web(&out)), 488);
    let out = h.web(&update.replace("z9hG4bKupd", "z9hG4bKupd3").replace("CSeq: 8 UPDATE", "CSeq: 10 UPDATE"));
    assert_eq!(req(only_ims(&out)).method.as_str(), "UPDATE", "an offer again, not taken for an answer");
}

#[test]
fn the_media_plane_gets_each_settled_plan_and_the_end_and_can_end_the_call() {
    let mut h = Harness::new();
    let (_inv, web_ok) = answered_call(&mut h);
    // The 200's answer settled the first plan: one active audio stream, ports from the pool.
    let plans: Vec<&estuary_sdp::MediaPlan> = h
        .media
        .iter()
        .filter_map(|o| match o {
            Output::Media { plan, .. } => Some(&**plan),
            _ => None,
        })
        .collect();
    assert_eq!(plans.len(), 1, "{:?}", h.media);
    let plan = plans[0];
    assert_eq!((plan.web.local_port, plan.streams.len()), (20000, 1));
    assert!(plan.streams[0].active && plan.streams[0].ims_local_port == 20002);
    assert_eq!(plan.streams[0].ims_remote_rtp, Some("10.9.9.9:40000".parse().unwrap()));
    let Output::Media { call, .. } = h.media[0] else { unreachable!() };
    let tag = resp(&web_ok).headers.to().unwrap().tag().unwrap().to_owned();
    h.web(&format!("ACK sip:estuary@127.0.0.1 SIP/2.0\nVia: SIP/2.0/WSS df7jal23ls0d.invalid;branch=z9hG4bKack7\nTo: <sip:bob@ims.test>;tag={tag}\nFrom: <sip:alice@ims.test>;tag=a1b2c3\nCall-ID: webcall1\nCSeq: 7 ACK\nContent-Length: 0\n\n"));
    assert_eq!(h.media.len(), 1, "an ACK without SDP settles nothing new");
    // The media plane gives up (e.g. DTLS fingerprint mismatch): BYE on both legs, then MediaEnd.
    let out = h.input(Input::MediaFailed {
        call,
        reason: "DTLS: fingerprint mismatch",
        cause: estuary_b2bua::ReleaseCause::MediaBearerLoss,
    });
    let byes: Vec<Side> = out
        .iter()
        .filter(|s| matches!(&s.msg, Message::Request(r) if r.method.as_str() == "BYE"))
        .map(|s| if matches!(s.flow, Flow::Web { .. }) { Side::Web } else { Side::Ims })
        .collect();
    assert_eq!(byes.len(), 2, "{out:?}");
    // Each BYE says why, in the form IMS cores log (TS 24.229 §7.2A.18).
    for s in &out {
        if let Message::Request(r) = &s.msg {
            let reasons: Vec<&str> = r.headers.get_all("Reason").collect();
            assert_eq!(reasons, ["RELEASE_CAUSE;cause=3;text=\"Media bearer loss\""], "{r:?}");
        }
    }
    assert_eq!(h.gw.active_calls(), 0);
    assert_eq!(h.media.last(), Some(&Output::MediaEnd { call }));
    assert_eq!(h.ended().reason, EndReason::Media(estuary_b2bua::ReleaseCause::MediaBearerLoss));
    assert_eq!(h.ended().reason.as_str(), "media_bearer_loss");
}

const OPUS_OFFER: &str = include_str!("../../../conformance/sdp/cases/web-audio-opus-transcode/1-web-offer.sdp");

/// A browser INVITE with its own Call-ID, From tag and branch, carrying `body`.
fn web_invite(n: u32, body: &str) -> String {
    invite_from_web(&format!("z9hG4bKtc{n}"))
        .replace("Call-ID: webcall1", &format!("Call-ID: webcall-tc{n}"))
        .replace("tag=a1b2c3", &format!("tag=tc{n}"))
        .replace(&WEB_OFFER.replace("\r\n", "\n"), &body.replace("\r\n", "\n"))
        .replace(&format!("Content-Length: {}", WEB_OFFER.len()), &format!("Content-Length: {}", body.replace("\r\n", "\n").replace('\n', "\r\n").len()))
}

fn metric(h: &Harness, name: &str) -> u64 {
    h.gw.metrics(h.now).iter().find(|s| s.name == name).unwrap_or_else(|| panic!("{name}")).value
}

#[test]
fn transcoding_capacity_refuses_the_offer_that_would_exceed_it() {
    let mut h = Harness::with(B2buaConfig { transcode_channels: Some(1), ..B2buaConfig::default() });
    h.register();
    // The first Opus-only call takes the one channel at its offer.
    let out = h.web(&web_invite(1, OPUS_OFFER));
    let first = to_ims(&out).into_iter().next().expect("relayed toward IMS").text.clone();
    assert!(first.contains("PCMU"), "an Opus-only browser is offered G.711 toward IMS:\n{first}");
    assert_eq!(metric(&h, "estuary_transcoding_channels_active"), 1);
    // A second one is refused before anything reaches IMS: 503 with Retry-After, the reason
    // in a Warning, the refusal counted.
    let out = h.web(&web_invite(2, OPUS_OFFER));
    assert!(to_ims(&out).is_empty(), "{out:#?}");
    let w = to_web(&out).into_iter().find(|s| status(s) >= 200).expect("final response");
    assert_eq!(status(w), 503);
    assert!(resp(w).headers.get("Retry-After").is_some());
    assert_eq!(
        resp(w).headers.get("Warning"),
        Some("399 estuary \"transcoding capacity exhausted (1 of 1 channels in use)\"")
    );
    assert_eq!(metric(&h, "estuary_transcoding_refused_total"), 1);
    // A call that needs no transcoding is not limited by it.
    let out = h.web(&web_invite(3, WEB_OFFER));
    assert_eq!(to_ims(&out).len(), 1, "a G.711 call goes through: {out:#?}");
    assert_eq!(metric(&h, "estuary_transcoding_channels_active"), 1);
}

#[test]
fn a_refused_or_ended_transcoding_call_frees_its_channel_and_488_can_be_chosen() {
    let mut h = Harness::with(B2buaConfig { transcode_channels: Some(1), transcode_refusal: 488, ..B2buaConfig::default() });
    h.register();
    let out = h.web(&web_invite(1, OPUS_OFFER));
    let inv = clone_sent(to_ims(&out).into_iter().next().expect("relayed"));
    let out = h.web(&web_invite(2, OPUS_OFFER));
    let w = to_web(&out).into_iter().find(|s| status(s) >= 200).expect("final response");
    assert_eq!(status(w), 488, "the operator chose 488");
    // IMS refuses the first call: its reservation goes with it.
    h.ims(&response(&inv, 486, "Busy Here", &[]));
    assert_eq!(metric(&h, "estuary_transcoding_channels_active"), 0);
    let out = h.web(&web_invite(3, OPUS_OFFER));
    assert_eq!(to_ims(&out).len(), 1, "the channel is free again: {out:#?}");
}

fn clone_sent(s: &Sent) -> Sent {
    Sent { flow: s.flow, msg: Message::parse(s.text.as_bytes()).unwrap(), text: s.text.clone() }
}

#[test]
fn the_driver_learns_both_call_ids_of_a_call_and_its_end() {
    let mut h = Harness::new();
    let (inv, _ok) = answered_call(&mut h);
    let ims_call_id = req(&inv).headers.get("Call-ID").unwrap().to_owned();
    let Some(Output::CallStarted { call, web_call_id, ims_call_id: ims }) = h.calls.first() else { panic!("{:?}", h.calls) };
    assert_eq!((web_call_id.as_str(), ims.as_str()), ("webcall1", ims_call_id.as_str()));
    let call = *call;
    let bye = "BYE sip:gw SIP/2.0\nVia: SIP/2.0/UDP 10.9.9.9:5070;branch=z9hG4bKbye9\nMax-Forwards: 70\nFrom: <sip:bob@ims.test>;tag=far1\nTo: <sip:alice@ims.test>;tag=TAG\nCall-ID: CID\nCSeq: 9 BYE\nContent-Length: 0\n\n";
    let from_tag = req(&inv).headers.from().unwrap().tag().unwrap().to_owned();
    let bye = bye.replace("TAG", &from_tag).replace("CID", &ims_call_id);
    let started = h.now;
    h.now += Duration::from_secs(30);
    let out = h.ims(&bye);
    let web_bye = only_web(&out);
    h.web(&response(web_bye, 200, "OK", &[]));
    let Some(Output::CallEnded { call: ended, summary }) = h.calls.last() else { panic!("{:?}", h.calls) };
    assert_eq!(*ended, call);
    assert_eq!((summary.web_call_id.as_str(), summary.ims_call_id.as_str()), ("webcall1", ims_call_id.as_str()));
    assert_eq!((summary.started, summary.answered, summary.ended), (started, Some(started), started + Duration::from_secs(30)));
    assert_eq!(summary.reason, EndReason::Bye(Side::Ims));
    let pcv = req(&inv).headers.get("P-Charging-Vector").unwrap();
    assert_eq!(summary.icid.as_deref(), estuary_ims_profile::icid_of(pcv).as_deref(), "the record carries the ICID the core got");
}

#[test]
fn a_call_the_core_never_answers_ends_with_408_in_its_record() {
    let mut h = Harness::new();
    h.register();
    let start = h.now;
    h.web(&invite_from_web("z9hG4bKsilent"));
    let out = h.advance_to(h.now - h.start + Duration::from_secs(33));
    assert!(to_web(&out).iter().any(|s| status(s) == 408), "{out:#?}");
    let e = h.ended();
    assert_eq!((e.reason, e.status, e.answered, e.started), (EndReason::NoAnswer(408), Some(408), None, start));
    assert_eq!(e.reason.as_str(), "no_answer");
    assert!(e.ended >= start + Duration::from_secs(32), "Timer B: 64*T1");
}

/// RFC 4028: the endpoints negotiate the session timer end to end; the gateway watches it.
/// A refresh (here an UPDATE answered 2xx) restarts it; when none comes in time the gateway
/// ends the call on both legs and records why.
#[test]
fn a_session_timer_that_runs_out_without_a_refresh_ends_the_call() {
    let mut h = Harness::new();
    let (_inv, web_ok) = answered_call_with(&mut h, &[("Session-Expires", "120;refresher=uac"), ("Require", "timer")]);
    assert_eq!(resp(&web_ok).headers.get("Session-Expires"), Some("120;refresher=uac"), "negotiated end to end:\n{}", web_ok.text);
    let t0 = h.now - h.start;
    let tag = resp(&web_ok).headers.to().unwrap().tag().unwrap().to_owned();
    h.web(&format!("ACK sip:estuary@127.0.0.1 SIP/2.0\nVia: SIP/2.0/WSS df7jal23ls0d.invalid;branch=z9hG4bKackst\nTo: <sip:bob@ims.test>;tag={tag}\nFrom: <sip:alice@ims.test>;tag=a1b2c3\nCall-ID: webcall1\nCSeq: 7 ACK\nContent-Length: 0\n\n"));
    // Distinct BYEs (UDP retransmissions folded).
    let byes = |out: &[Sent]| {
        let mut b: Vec<&str> = out.iter().filter(|s| matches!(&s.msg, Message::Request(r) if r.method.as_str() == "BYE")).map(|s| s.text.as_str()).collect();
        b.dedup();
        b.len()
    };
    // The browser (refresher=uac) refreshes at half the interval with an UPDATE.
    let out = h.advance_to(t0 + Duration::from_secs(60));
    assert_eq!(byes(&out), 0);
    let update = format!("UPDATE sip:estuary@127.0.0.1 SIP/2.0\nVia: SIP/2.0/WSS df7jal23ls0d.invalid;branch=z9hG4bKupd1\nMax-Forwards: 70\nTo: <sip:bob@ims.test>;tag={tag}\nFrom: <sip:alice@ims.test>;tag=a1b2c3\nCall-ID: webcall1\nCSeq: 8 UPDATE\nSession-Expires: 120;refresher=uac\nContact: <sip:8r2lhmvo@df7jal23ls0d.invalid;transport=ws;ob>\nContent-Length: 0\n\n");
    let out = h.web(&update);
    let u = to_ims(&out).into_iter().find(|s| matches!(s.msg, Message::Request(_))).expect("UPDATE relayed");
    let out = h.ims(&response(u, 200, "OK", &[("Session-Expires", "120;refresher=uac"), ("Contact", "<sip:bob@10.9.9.9:5070>")]));
    assert_eq!(status(only_web(&out)), 200);
    // 120 s after the first answer the call would have expired; the refresh moved that to 180.
    let out = h.advance_to(t0 + Duration::from_secs(179));
    assert_eq!(byes(&out), 0, "the refresh restarted the timer: {out:#?}");
    assert_eq!(h.gw.active_calls(), 1);
    let out = h.advance_to(t0 + Duration::from_secs(181));
    assert_eq!(byes(&out), 2, "no refresh came: BYE on both legs: {out:#?}");
    assert_eq!(h.gw.active_calls(), 0);
    assert_eq!((h.ended().reason, h.ended().reason.as_str()), (EndReason::SessionExpired, "session_expired"));
}

#[test]
fn without_a_session_timer_a_quiet_call_stays_up() {
    let mut h = Harness::new();
    let (_inv, web_ok) = answered_call(&mut h);
    let tag = resp(&web_ok).headers.to().unwrap().tag().unwrap().to_owned();
    h.web(&format!("ACK sip:estuary@127.0.0.1 SIP/2.0\nVia: SIP/2.0/WSS df7jal23ls0d.invalid;branch=z9hG4bKackq\nTo: <sip:bob@ims.test>;tag={tag}\nFrom: <sip:alice@ims.test>;tag=a1b2c3\nCall-ID: webcall1\nCSeq: 7 ACK\nContent-Length: 0\n\n"));
    let out = h.advance_to(Duration::from_secs(4 * 3600));
    assert!(out.iter().all(|s| !matches!(&s.msg, Message::Request(r) if r.method.as_str() == "BYE")), "{out:#?}");
    assert_eq!(h.gw.active_calls(), 1);
}

/// A registration lives as long as the core granted (600 s here) and no longer: until then a
/// call from the core reaches the browser, after it the core gets 404 and the browser nothing.
#[test]
fn a_registration_that_is_not_refreshed_expires() {
    let mut h = Harness::new();
    let token = token_of(&h.register());
    h.advance_to(Duration::from_secs(599));
    let out = h.ims(&ims_invite(&token, "z9hG4bKbefore", SDP));
    assert!(!to_web(&out).is_empty(), "registered for 600 s: the INVITE reaches the browser: {out:#?}");
    h.advance_to(Duration::from_secs(601));
    let out = h.ims(&ims_invite(&token, "z9hG4bKafter", SDP).replace("imscall1@", "imscall2@"));
    assert!(to_web(&out).is_empty(), "expired: nothing for the browser: {out:#?}");
    assert_eq!(status(only_ims(&out)), 404);
}

/// A caller's CANCEL whose INVITE the far end never finishes (no 487, no final response at
/// all) ends the call by the guard timer: the caller gets its 487 after Timer B's 64*T1.
#[test]
fn a_cancel_the_far_end_never_finishes_ends_the_call_by_the_guard() {
    let mut h = Harness::new();
    h.register();
    let out = h.web(&invite_from_web("z9hG4bKg1"));
    let inv = to_ims(&out)[0];
    h.ims(&response(inv, 180, "Ringing", &[]));
    let cancel = "CANCEL sip:bob@ims.test SIP/2.0\nVia: SIP/2.0/WSS df7jal23ls0d.invalid;branch=z9hG4bKg1\nTo: <sip:bob@ims.test>\nFrom: \"Alice\" <sip:alice@ims.test>;tag=a1b2c3\nCall-ID: webcall1\nCSeq: 7 CANCEL\nContent-Length: 0\n\n";
    let t0 = h.now - h.start;
    let out = h.web(cancel);
    let c = only_ims(&out);
    assert_eq!(req(c).method.as_str(), "CANCEL");
    h.ims(&response(c, 200, "OK", &[]));
    let out = h.advance_to(t0 + Duration::from_secs(31));
    assert!(to_web(&out).iter().all(|s| !matches!(s.msg, Message::Response(_))), "still waiting for the far end: {out:#?}");
    assert_eq!(h.gw.active_calls(), 1);
    let out = h.advance_to(t0 + Duration::from_secs(33));
    assert_eq!(status(only_web(&out)), 487);
    assert_eq!(h.gw.active_calls(), 0);
    assert_eq!(h.ended().reason, EndReason::Cancelled);
}

const VP8_OFFER: &str = include_str!("../../../conformance/sdp/cases/web-firefox-vp8-video-transcode/1-web-offer.sdp");
const H264_ANSWER: &str = include_str!("../../../conformance/sdp/cases/web-firefox-vp8-video-transcode/2-ims-answer.sdp");
const NO_VIDEO_ANSWER: &str = include_str!("../../../conformance/sdp/cases/web-firefox-vp8-video-withheld/2-ims-answer.sdp");

/// Room for 10 audio channels; a transcoded video stream starts at 6.
fn video_harness(overload: VideoOverload) -> Harness {
    let mut sdp = estuary_sdp::SdpPolicy::default();
    sdp.transcode.extend(estuary_sdp::TranscodePair::video(&sdp.video));
    Harness::with(B2buaConfig { transcode_channels: Some(10), video_channel_cost: 6, video_overload: overload, sdp, ..B2buaConfig::default() })
}

/// The IMS INVITE a VP8-only browser's call `n` produced, or the browser's final refusal.
fn vp8_call(h: &mut Harness, n: u32) -> Result<Sent, Box<Sent>> {
    let out = h.web(&web_invite(n, VP8_OFFER));
    match to_ims(&out).into_iter().next() {
        Some(inv) => Ok(clone_sent(inv)),
        None => Err(Box::new(clone_sent(to_web(&out).into_iter().find(|s| status(s) >= 200).expect("a final response")))),
    }
}

/// A corpus body as it goes on the wire (the harness's Content-Length counts CRLF lines).
fn crlf(sdp: &str) -> String {
    sdp.replace("\r\n", "\n").replace('\n', "\r\n")
}

fn video_port(sdp: &str) -> u16 {
    let line = sdp.lines().find(|l| l.starts_with("m=video")).expect("a video m-line");
    line.split(' ').nth(1).unwrap().parse().unwrap()
}

#[test]
fn drop_video_sends_the_call_on_with_audio_when_the_transcoder_has_no_room_for_its_video() {
    let mut h = video_harness(VideoOverload::DropVideo);
    h.register();
    // The first VP8-only call gets H.264 toward IMS: video (6) and nothing else transcoded.
    let first = vp8_call(&mut h, 1).expect("relayed");
    assert!(first.text.contains("H264/90000") && video_port(&first.text) != 0, "{}", first.text);
    assert_eq!(metric(&h, "estuary_transcoding_channels_active"), 6);
    // The second would need 6 more (and room for audio): its video m-line goes with port 0,
    // its audio passes through, and nothing is refused.
    let second = vp8_call(&mut h, 2).expect("the call goes on");
    assert_eq!(video_port(&second.text), 0, "video refused toward IMS:\n{}", second.text);
    assert!(second.text.contains("m=audio ") && !second.text.contains("H264"), "{}", second.text);
    assert_eq!(metric(&h, "estuary_transcoding_channels_active"), 6, "the audio-only call holds no channel");
    assert_eq!(metric(&h, "estuary_transcoding_refused_total"), 0);
    // The core answers without video; the browser hears port 0 for its video.
    let ok = response_with_body(&second, 200, "OK", &[("Contact", "<sip:bob@10.9.9.9:5070>")], &crlf(NO_VIDEO_ANSWER));
    let out = h.ims(&ok);
    let web_ok = to_web(&out).into_iter().find(|s| status(s) == 200).unwrap_or_else(|| panic!("200 to the browser: {out:#?}"));
    assert_eq!(video_port(&String::from_utf8_lossy(&resp(web_ok).body)), 0);
    // The core hangs up; the record says the video was dropped.
    let from_tag = req(&second).headers.from().unwrap().tag().unwrap().to_owned();
    let call_id = req(&second).headers.get("Call-ID").unwrap().to_owned();
    let bye = format!("BYE sip:gw SIP/2.0\nVia: SIP/2.0/UDP 10.9.9.9:5070;branch=z9hG4bKbyev\nMax-Forwards: 70\nFrom: <sip:bob@ims.test>;tag=far1\nTo: <sip:alice@ims.test>;tag={from_tag}\nCall-ID: {call_id}\nCSeq: 9 BYE\nContent-Length: 0\n\n");
    let out = h.ims(&bye);
    h.web(&response(only_web(&out), 200, "OK", &[]));
    assert!(h.ended().video_dropped, "{:?}", h.ended());

    // The pool measured video cheaper than first thought: a third call's video fits again.
    h.gw.set_video_channel_cost(2);
    let third = vp8_call(&mut h, 3).expect("relayed");
    assert_ne!(video_port(&third.text), 0, "{}", third.text);
    assert_eq!(metric(&h, "estuary_transcoding_channels_active"), 6 + 2);
}

#[test]
fn refuse_call_refuses_a_browser_call_whose_video_does_not_fit_and_a_call_with_room_is_not_marked() {
    let mut h = video_harness(VideoOverload::RefuseCall);
    h.register();
    let first = vp8_call(&mut h, 1).expect("relayed");
    assert_ne!(video_port(&first.text), 0);
    let refused = vp8_call(&mut h, 2).expect_err("no room for a second video");
    assert_eq!(status(&refused), 503);
    assert_eq!(
        resp(&refused).headers.get("Warning"),
        Some("399 estuary \"transcoding capacity exhausted (6 of 10 channels in use)\"")
    );
    assert_eq!(metric(&h, "estuary_transcoding_refused_total"), 1);
    // The first call, answered with H.264 and ended, was never marked.
    let ok = response_with_body(&first, 200, "OK", &[("Contact", "<sip:bob@10.9.9.9:5070>")], &crlf(H264_ANSWER));
    h.ims(&ok);
    assert_eq!(metric(&h, "estuary_transcoding_channels_active"), 6, "the settled plan holds the video's cost");
    let out = h.ims(&format!(
        "BYE sip:gw SIP/2.0\nVia: SIP/2.0/UDP 10.9.9.9:5070;branch=z9hG4bKbyer\nMax-Forwards: 70\nFrom: <sip:bob@ims.test>;tag=far1\nTo: <sip:alice@ims.test>;tag={}\nCall-ID: {}\nCSeq: 9 BYE\nContent-Length: 0\n\n",
        req(&first).headers.from().unwrap().tag().unwrap(),
        req(&first).headers.get("Call-ID").unwrap()
    ));
    h.web(&response(only_web(&out), 200, "OK", &[]));
    assert!(!h.ended().video_dropped);
    assert_eq!(metric(&h, "estuary_transcoding_channels_active"), 0);
}

const FAST_UPDATE: &str = "<?xml version=\"1.0\" encoding=\"utf-8\"?>\n<media_control><vc_primitive><to_encoder><picture_fast_update/></to_encoder></vc_primitive></media_control>\n";

#[test]
fn an_info_picture_fast_update_from_the_core_is_answered_here_and_asks_the_media_plane_for_a_keyframe() {
    let mut h = Harness::new();
    let (inv, _ok) = answered_call(&mut h);
    let r = req(&inv);
    let info = format!(
        "INFO sip:gw SIP/2.0\nVia: SIP/2.0/UDP 10.9.9.9:5070;branch=z9hG4bKinfo1\nMax-Forwards: 70\nFrom: <sip:bob@ims.test>;tag=far1\nTo: <sip:alice@ims.test>;tag={}\nCall-ID: {}\nCSeq: 11 INFO\nContent-Type: application/media_control+xml\nContent-Length: {}\n\n{FAST_UPDATE}",
        r.headers.from().unwrap().tag().unwrap(),
        r.headers.get("Call-ID").unwrap(),
        FAST_UPDATE.len() + FAST_UPDATE.matches('\n').count(),
    );
    let media_before = h.media.len();
    let out = h.ims(&info);
    assert!(to_web(&out).is_empty(), "the INFO is not relayed to the browser: {out:#?}");
    assert_eq!(status(only_ims(&out)), 200);
    assert!(
        matches!(h.media[media_before..], [Output::KeyframeRequested { from: Side::Ims, .. }]),
        "{:?}",
        &h.media[media_before..]
    );
}

#[test]
fn the_media_plane_asks_the_core_for_a_keyframe_by_info_at_most_once_a_second() {
    let mut h = Harness::new();
    let (inv, _ok) = answered_call(&mut h);
    let Some(Output::CallStarted { call, .. }) = h.calls.first() else { panic!("{:?}", h.calls) };
    let call = *call;
    h.gw.handle_input(h.now, Input::PictureFastUpdate { call });
    let out = h.drain();
    let info = only_ims(&out);
    let r = req(info);
    assert_eq!(r.method.as_str(), "INFO");
    assert_eq!(r.headers.get("Call-ID"), req(&inv).headers.get("Call-ID"), "in the IMS dialog");
    assert_eq!(r.headers.get("Content-Type"), Some("application/media_control+xml"));
    let body = String::from_utf8_lossy(&r.body);
    assert!(body.contains("<media_control>") && body.contains("<to_encoder>") && body.contains("<picture_fast_update/>"), "{body}");
    // The decoder keeps asking while it waits: one INFO a second at most.
    h.now += Duration::from_millis(400);
    h.gw.handle_input(h.now, Input::PictureFastUpdate { call });
    assert!(to_ims(&h.drain()).iter().all(|s| !s.text.starts_with("INFO")), "a second INFO within the second");
    h.now += Duration::from_millis(700);
    h.gw.handle_input(h.now, Input::PictureFastUpdate { call });
    assert!(to_ims(&h.drain()).iter().any(|s| s.text.starts_with("INFO")), "another after a second");
    assert_eq!(metric(&h, "estuary_picture_fast_update_sent_total"), 2);
}

// ----- policy (Rx toward the PCRF) -------------------------------------------------------

fn gated() -> Harness {
    Harness::with(B2buaConfig { policy_gate: true, ..B2buaConfig::default() })
}

/// A registered browser's call whose IMS 200 (with the answer) arrived under closed policy;
/// returns (the IMS INVITE, the IMS 200 text, what the gateway sent on the 200).
fn call_answered_under_gate(h: &mut Harness) -> (Sent, String, Vec<Sent>) {
    h.register();
    let out = h.web(&invite_from_web("z9hG4bKpol1"));
    let inv = out.into_iter().find(|s| matches!(s.flow, Flow::Ims { .. })).unwrap();
    let ok = response_with_body(&inv, 200, "OK", &[("Contact", "<sip:bob@10.9.9.9:5070>")], SDP);
    let out = h.ims(&ok);
    (inv, ok, out)
}

fn the_call(h: &Harness) -> u64 {
    h.media
        .iter()
        .find_map(|o| match o {
            Output::Media { call, .. } => Some(*call),
            _ => None,
        })
        .expect("a plan was settled")
}

#[test]
fn under_closed_policy_the_answer_waits_for_the_pcrf_then_goes_on() {
    let mut h = gated();
    let (_inv, ok, out) = call_answered_under_gate(&mut h);
    assert!(out.is_empty(), "the 200 waits for the PCRF: nothing relayed, nothing acknowledged: {out:#?}");
    let call = the_call(&h);
    // What the AAR needs: the ICID we generated, the registered identity, the browser's address.
    let subject = h.gw.policy_subject(call).unwrap();
    assert_eq!(subject.identity.as_deref(), Some("sip:alice@ims.test"));
    assert_eq!(subject.browser_ip, Some("127.0.0.1".parse().unwrap()));
    assert_eq!(subject.caller, Side::Web);
    assert!(!subject.charging_id.is_empty());
    // The callee retransmits its 200 meanwhile: still nothing, no ACK yet.
    let out = h.ims(&ok);
    assert!(to_web(&out).is_empty() && to_ims(&out).iter().all(|s| req(s).method.as_str() != "ACK"), "{out:#?}");
    let out = h.input(Input::Policy { call, decision: PolicyDecision::Authorized });
    let w = only_web(&out);
    assert_eq!(status(w), 200);
    assert!(String::from_utf8_lossy(&resp(w).body).contains("a=ice-lite"), "the interworked answer: {}", w.text);
    assert_eq!(h.gw.active_calls(), 1);
}

#[test]
fn a_pcrf_refusal_gives_the_browser_503_with_a_warning_and_acks_and_ends_the_ims_dialog() {
    let mut h = gated();
    let (_inv, _ok, _out) = call_answered_under_gate(&mut h);
    let call = the_call(&h);
    let out = h.input(Input::Policy { call, decision: PolicyDecision::Refused { reason: "Rx: AAA 5003" } });
    let w = only_web(&out);
    assert_eq!(status(w), 503);
    assert_eq!(resp(w).headers.get("Warning"), Some("399 estuary \"Rx: AAA 5003\""));
    let methods: Vec<_> = to_ims(&out).iter().map(|s| req(s).method.as_str().to_owned()).collect();
    assert_eq!(methods, ["ACK", "BYE"]);
    assert_eq!(h.gw.active_calls(), 0);
    assert_eq!((h.ended().reason, h.ended().status, h.ended().answered), (EndReason::PolicyRefused(Some(503)), Some(503), None));
    assert_eq!(h.ended().reason.as_str(), "policy_refused");
}

#[test]
fn a_caller_using_preconditions_gets_580() {
    let mut h = gated();
    h.register();
    let invite = invite_from_web("z9hG4bKpre").replace("Supported: 100rel,timer", "Supported: 100rel,timer, precondition");
    let out = h.web(&invite);
    let inv = out.into_iter().find(|s| matches!(s.flow, Flow::Ims { .. })).unwrap();
    h.ims(&response_with_body(&inv, 200, "OK", &[("Contact", "<sip:bob@10.9.9.9:5070>")], SDP));
    let call = the_call(&h);
    let out = h.input(Input::Policy { call, decision: PolicyDecision::Refused { reason: "Rx: no answer" } });
    assert_eq!(status(only_web(&out)), 580);
    assert_eq!(h.ended().status, Some(580));
}

#[test]
fn a_cancel_while_the_answer_waits_gets_487_and_ends_the_answered_ims_dialog() {
    let mut h = gated();
    let (_inv, _ok, _out) = call_answered_under_gate(&mut h);
    let cancel = "CANCEL sip:bob@ims.test SIP/2.0\nVia: SIP/2.0/WSS df7jal23ls0d.invalid;branch=z9hG4bKpol1\nTo: <sip:bob@ims.test>\nFrom: \"Alice\" <sip:alice@ims.test>;tag=a1b2c3\nCall-ID: webcall1\nCSeq: 7 CANCEL\nContent-Length: 0\n\n";
    let out = h.web(cancel);
    let web: Vec<u16> = to_web(&out).iter().map(|s| status(s)).collect();
    assert_eq!(web, [200, 487]);
    let methods: Vec<_> = to_ims(&out).iter().map(|s| req(s).method.as_str().to_owned()).collect();
    assert_eq!(methods, ["ACK", "BYE"]);
    assert_eq!((h.ended().reason, h.ended().status), (EndReason::Cancelled, Some(487)));
    // A decision arriving afterwards finds no call.
    let call = the_call(&h);
    assert!(h.input(Input::Policy { call, decision: PolicyDecision::Authorized }).is_empty());
}

#[test]
fn an_authorization_before_the_answer_lets_the_200_through_at_once() {
    let mut h = gated();
    h.register();
    let out = h.web(&invite_from_web("z9hG4bKpol2"));
    let inv = out.into_iter().find(|s| matches!(s.flow, Flow::Ims { .. })).unwrap();
    // Early media settles the plan: the AAR goes now and is answered before the 200.
    let out = h.ims(&response_with_body(&inv, 183, "Session Progress", &[("Contact", "<sip:bob@10.9.9.9:5070>")], SDP));
    assert_eq!(status(only_web(&out)), 183);
    let call = the_call(&h);
    assert!(h.input(Input::Policy { call, decision: PolicyDecision::Authorized }).is_empty());
    let out = h.ims(&response(&inv, 200, "OK", &[("Contact", "<sip:bob@10.9.9.9:5070>")]));
    assert_eq!(status(only_web(&out)), 200);
}

#[test]
fn a_refusal_after_early_media_cancels_the_callee() {
    let mut h = gated();
    h.register();
    let out = h.web(&invite_from_web("z9hG4bKpol3"));
    let inv = out.into_iter().find(|s| matches!(s.flow, Flow::Ims { .. })).unwrap();
    h.ims(&response_with_body(&inv, 183, "Session Progress", &[("Contact", "<sip:bob@10.9.9.9:5070>")], SDP));
    let call = the_call(&h);
    let out = h.input(Input::Policy { call, decision: PolicyDecision::Refused { reason: "Rx: AAA 5065" } });
    assert_eq!(status(only_web(&out)), 503);
    let c = only_ims(&out);
    assert_eq!(req(c).method.as_str(), "CANCEL");
    h.ims(&response(c, 200, "OK", &[]));
    let out = h.ims(&response(&inv, 487, "Request Terminated", &[]));
    assert!(to_web(&out).is_empty(), "the caller already has its final answer: {out:#?}");
    assert_eq!(h.gw.active_calls(), 0);
    assert_eq!((h.ended().reason, h.ended().status), (EndReason::PolicyRefused(Some(503)), Some(503)));
}

#[test]
fn bearer_loss_and_abort_from_the_pcrf_end_an_answered_call_with_release_cause_3() {
    for (decision, reason) in [
        (PolicyDecision::BearerLost, EndReason::Media(estuary_b2bua::ReleaseCause::MediaBearerLoss)),
        (PolicyDecision::Aborted, EndReason::PolicyAborted),
    ] {
        let mut h = Harness::new();
        answered_call(&mut h);
        let call = the_call(&h);
        let out = h.input(Input::Policy { call, decision });
        let byes: Vec<&Sent> = out.iter().filter(|s| matches!(&s.msg, Message::Request(r) if r.method.as_str() == "BYE")).collect();
        assert_eq!(byes.len(), 2, "{out:#?}");
        for b in byes {
            assert_eq!(req(b).headers.get("Reason"), Some("RELEASE_CAUSE;cause=3;text=\"Media bearer loss\""));
        }
        assert_eq!(h.ended().reason, reason);
    }
    let mut h = Harness::new();
    answered_call(&mut h);
    let call = the_call(&h);
    h.input(Input::Policy { call, decision: PolicyDecision::Aborted });
    assert_eq!(h.ended().reason.as_str(), "policy_aborted");
}

#[test]
fn open_policy_never_holds_the_answer() {
    let mut h = Harness::new();
    let (_inv, web_ok) = answered_call(&mut h);
    assert_eq!(status(&web_ok), 200);
}

#[test]
fn a_2xx_that_carries_the_offer_is_not_held_and_a_later_refusal_ends_the_call() {
    let mut h = gated();
    let token = token_of(&h.register());
    // Delayed offer: nothing is settled until the ACK, so the 200 cannot wait for the PCRF.
    let out = h.ims(&ims_invite(&token, "z9hG4bKdelgate", ""));
    let w = only_web(&out);
    let ok = response_with_body(w, 200, "OK", &[("Contact", "<sip:8r2lhmvo@df7jal23ls0d.invalid;transport=ws>")], WEB_OFFER);
    let out = h.web(&ok);
    let i = only_ims(&out);
    assert_eq!(status(i), 200, "relayed at once");
    let web_tag = resp(i).headers.to().unwrap().tag().unwrap().to_owned();
    let ack = format!(
        "ACK sip:x@127.0.0.1:5080 SIP/2.0\nVia: SIP/2.0/UDP 10.9.9.9:5070;branch=z9hG4bKackg\nMax-Forwards: 70\nFrom: <sip:bob@ims.test>;tag=bobtag\nTo: <sip:alice@ims.test>;tag={web_tag}\nCall-ID: imscall1@10.9.9.9\nCSeq: 5 ACK\nContent-Type: application/sdp\nContent-Length: {}\n\n{}",
        SDP.len(),
        SDP.replace("\r\n", "\n")
    );
    h.ims(&ack);
    // The ACK's answer settled the plan; the PCRF refuses it: the answered call ends by BYE.
    let call = the_call(&h);
    let out = h.input(Input::Policy { call, decision: PolicyDecision::Refused { reason: "Rx: AAA 5003" } });
    let byes = out.iter().filter(|s| matches!(&s.msg, Message::Request(r) if r.method.as_str() == "BYE")).count();
    assert_eq!(byes, 2, "{out:#?}");
    assert_eq!((h.ended().reason, h.ended().status), (EndReason::PolicyRefused(None), Some(200)));
}

// ----- the signalling path (Rx AF_SIGNALLING) -------------------------------------------

fn signalling_policy() -> Harness {
    Harness::with(B2buaConfig { signalling_policy: true, ..B2buaConfig::default() })
}

fn up() -> SignallingPath {
    SignallingPath::Up {
        conn: CONN,
        identity: "sip:alice@ims.test".into(),
        browser: "127.0.0.1:40000".parse().unwrap(),
        local: "127.0.0.1:8443".parse().unwrap(),
    }
}

#[test]
fn the_signalling_path_is_up_from_the_registration_until_it_expires_or_the_socket_closes() {
    let mut h = Harness::new();
    h.register();
    assert!(h.paths.is_empty(), "reported only when the policy function wants it");

    let mut h = signalling_policy();
    h.register();
    assert_eq!(h.paths, [up()], "Up at the 2xx (not at the 401), with both ends of the WebSocket");
    // A refresh changes nothing.
    let out = h.web(&REGISTER.replace("CSeq: 1 REGISTER", "CSeq: 3 REGISTER").replace("z9hG4bK56sdasks", "z9hG4bKrefresh"));
    let reg = only_ims(&out);
    let contact = reg.msg.headers().get("Contact").unwrap().to_owned();
    h.ims(&response(reg, 200, "OK", &[("Contact", &contact)]));
    assert_eq!(h.paths.len(), 1);
    // Expiry.
    h.advance_to(Duration::from_secs(601));
    assert_eq!(h.paths, [up(), SignallingPath::Down { conn: CONN }]);

    let mut h = signalling_policy();
    h.register();
    h.input(Input::ConnectionClosed { conn: CONN });
    assert_eq!(h.paths, [up(), SignallingPath::Down { conn: CONN }], "Down once, where the socket closed");
}

#[test]
fn a_lost_signalling_path_ends_the_browsers_calls_and_makes_it_unreachable_until_it_registers_again() {
    let mut h = signalling_policy();
    let (_inv, web_ok) = answered_call(&mut h);
    let binding = h.gw.registrar().find_aor("sip:alice@ims.test", h.now).unwrap();
    let token = h.gw.registrar().get(binding).unwrap().token.clone();
    let tag = resp(&web_ok).headers.to().unwrap().tag().unwrap().to_owned();
    h.web(&format!("ACK sip:estuary@127.0.0.1 SIP/2.0\nVia: SIP/2.0/WSS df7jal23ls0d.invalid;branch=z9hG4bKack9\nTo: <sip:bob@ims.test>;tag={tag}\nFrom: <sip:alice@ims.test>;tag=a1b2c3\nCall-ID: webcall1\nCSeq: 7 ACK\nContent-Length: 0\n\n"));

    let out = h.input(Input::SignallingLost { conn: CONN });
    let byes: Vec<&Sent> = out.iter().filter(|s| matches!(&s.msg, Message::Request(r) if r.method.as_str() == "BYE")).collect();
    assert_eq!(byes.len(), 2, "BYE on both legs (the browser's may still get through): {out:#?}");
    for b in byes {
        assert_eq!(req(b).headers.get("Reason"), Some("RELEASE_CAUSE;cause=3;text=\"Media bearer loss\""));
    }
    assert_eq!(h.ended().reason.as_str(), "signalling_bearer_loss");
    assert_eq!(h.paths.last(), Some(&SignallingPath::Down { conn: CONN }));
    assert!(to_ims(&out).iter().all(|s| req(s).method.as_str() != "REGISTER"), "the registration stays at the core");

    // TS 23.228 §5.2.2.6: requests toward the browser are refused meanwhile.
    let out = h.ims(&ims_invite(&token, "z9hG4bKlost1", SDP));
    assert_eq!(to_ims(&out).iter().map(|s| status(s)).collect::<Vec<_>>(), [480]);
    assert!(to_web(&out).is_empty());

    // A REGISTER over the connection makes it reachable again, with a new signalling session.
    let out = h.web(&REGISTER.replace("CSeq: 1 REGISTER", "CSeq: 3 REGISTER").replace("z9hG4bK56sdasks", "z9hG4bKagain"));
    let reg = only_ims(&out);
    let ours = reg.msg.headers().get("Contact").unwrap().to_owned();
    h.ims(&response(reg, 200, "OK", &[("Contact", &ours)]));
    assert_eq!(h.paths.last(), Some(&up()));
    let out = h.ims(&ims_invite(&token, "z9hG4bKlost2", SDP));
    assert_eq!(to_web(&out).len(), 1, "the INVITE reaches the browser again: {out:#?}");
}

// ----- draining --------------------------------------------------------------------------

#[test]
fn a_draining_gateway_refuses_new_calls_and_probes_and_lets_its_calls_finish() {
    let mut h = Harness::new();
    let (inv, web_ok) = answered_call(&mut h);
    let tag = resp(&web_ok).headers.to().unwrap().tag().unwrap().to_owned();
    h.web(&format!("ACK sip:estuary@127.0.0.1 SIP/2.0\nVia: SIP/2.0/WSS df7jal23ls0d.invalid;branch=z9hG4bKackd\nTo: <sip:bob@ims.test>;tag={tag}\nFrom: <sip:alice@ims.test>;tag=a1b2c3\nCall-ID: webcall1\nCSeq: 7 ACK\nContent-Length: 0\n\n"));
    h.gw.drain();
    assert!(h.gw.is_draining());

    // A new browser call: 503 with Retry-After, nothing toward the core.
    let out = h.web(&invite_from_web("z9hG4bKdrain1").replace("Call-ID: webcall1", "Call-ID: webcall2"));
    let r = resp(only_web(&out));
    assert_eq!(r.code, 503);
    assert_eq!(r.headers.get("Retry-After"), Some("30"));
    assert_eq!(r.headers.get("Warning"), Some("399 estuary \"draining: try another node\""));
    // A new call from the core and the dispatcher's probe: 503.
    let binding = h.gw.registrar().find_aor("sip:alice@ims.test", h.now).unwrap();
    let token = h.gw.registrar().get(binding).unwrap().token.clone();
    let out = h.ims(&ims_invite(&token, "z9hG4bKdrain2", SDP));
    assert_eq!(to_ims(&out).iter().map(|s| status(s)).collect::<Vec<_>>(), [503]);
    assert!(to_web(&out).is_empty());
    let out = h.ims("OPTIONS sip:127.0.0.1:5080 SIP/2.0\nVia: SIP/2.0/UDP 10.9.9.9:5070;branch=z9hG4bKoptd\nMax-Forwards: 70\nTo: <sip:127.0.0.1:5080>\nFrom: <sip:ping@ims.test>;tag=p\nCall-ID: optd\nCSeq: 1 OPTIONS\nContent-Length: 0\n\n");
    assert_eq!(status(only_ims(&out)), 503);

    // A registration refresh is still served.
    let out = h.web(&REGISTER.replace("CSeq: 1 REGISTER", "CSeq: 3 REGISTER").replace("z9hG4bK56sdasks", "z9hG4bKregd"));
    assert_eq!(req(only_ims(&out)).method.as_str(), "REGISTER");

    // The call in progress ends normally.
    let r = req(&inv);
    let bye = format!(
        "BYE sip:estuary@127.0.0.1:5080 SIP/2.0\nVia: SIP/2.0/UDP 10.9.9.9:5070;branch=z9hG4bKbyed\nMax-Forwards: 70\nFrom: {};tag=far1\nTo: {}\nCall-ID: {}\nCSeq: 1 BYE\nContent-Length: 0\n\n",
        r.headers.get("To").unwrap(),
        r.headers.get("From").unwrap(),
        r.headers.call_id().unwrap()
    );
    let out = h.ims(&bye);
    assert_eq!(status(only_ims(&out)), 200);
    assert_eq!(req(only_web(&out)).method.as_str(), "BYE");
    assert_eq!(h.gw.active_calls(), 0);
}

#[test]
fn shutdown_ends_every_call_with_bye_on_both_legs() {
    let mut h = Harness::new();
    answered_call(&mut h);
    let out = h.input(Input::Shutdown);
    let byes: Vec<&Sent> = out.iter().filter(|s| matches!(&s.msg, Message::Request(r) if r.method.as_str() == "BYE")).collect();
    assert_eq!(byes.len(), 2, "{out:#?}");
    assert_eq!(h.gw.active_calls(), 0);
    assert_eq!(h.ended().reason.as_str(), "gateway_shutdown");
}

#[test]
fn a_browser_named_without_a_port_has_no_signalling_path_to_describe() {
    let mut h = signalling_policy();
    h.input(Input::ConnectionClosed { conn: CONN });
    // Behind an HTTP proxy the browser is known by X-Forwarded-For only: no port.
    h.input(Input::ConnectionOpened {
        conn: CONN,
        side: Side::Web,
        transport: Transport::Ws,
        local: "127.0.0.1:8080".parse().unwrap(),
        remote: "192.0.2.9:0".parse().unwrap(),
    });
    h.register();
    assert!(h.paths.is_empty(), "{:?}", h.paths);
}

// ----- next-hop targets (RFC 3263) -------------------------------------------------------

fn second_hop() -> SocketAddr {
    "127.0.0.1:5062".parse().unwrap()
}

fn two_hops() -> Harness {
    Harness::with(B2buaConfig { next_hop_targets: estuary_b2bua::next_hops::HopTarget::in_order([next_hop(), second_hop()]), next_hop_probe: Some(Duration::from_secs(5)), ..B2buaConfig::default() })
}

fn dest(s: &Sent) -> SocketAddr {
    match s.flow {
        Flow::Ims { remote, .. } => remote,
        Flow::Web { .. } => panic!("not toward IMS: {}", s.text),
    }
}

fn hop_up(h: &Harness, target: SocketAddr) -> u64 {
    h.gw.metrics(h.now).into_iter().find(|s| s.name == "estuary_ims_next_hop_up" && s.labels.iter().any(|(_, v)| *v == target.to_string())).unwrap().value
}

#[test]
fn an_unreachable_target_moves_the_invite_to_the_next_and_stays_skipped() {
    let mut h = two_hops();
    h.register();
    let out = h.web(&invite_from_web("z9hG4bKhop1"));
    let first = out.into_iter().find(|s| matches!(s.flow, Flow::Ims { .. })).unwrap();
    assert_eq!(dest(&first), next_hop());
    let out = h.input(Input::Unreachable { flow: first.flow });
    let again = only_ims(&out);
    assert_eq!(dest(again), second_hop(), "RFC 3263 §4.3: the next target");
    assert_eq!(req(again).headers.call_id().unwrap(), req(&first).headers.call_id().unwrap(), "the same request");
    assert_ne!(req(again).headers.get("Via"), req(&first).headers.get("Via"), "a new transaction (branch)");
    assert_eq!((hop_up(&h, next_hop()), hop_up(&h, second_hop())), (0, 1));
    let out = h.ims(&response_with_body(again, 200, "OK", &[("Contact", "<sip:bob@10.9.9.9:5070>")], SDP));
    assert_eq!(status(&out.into_iter().find(|s| matches!(s.flow, Flow::Web { .. })).unwrap()), 200);
    // The next request goes to the second target at once.
    let out = h.web(&REGISTER.replace("CSeq: 1 REGISTER", "CSeq: 5 REGISTER").replace("z9hG4bK56sdasks", "z9hG4bKhopreg"));
    assert_eq!(dest(only_ims(&out)), second_hop());
    let failures = h.gw.metrics(h.now).into_iter().find(|s| s.name == "estuary_ims_next_hop_failures_total").unwrap().value;
    assert_eq!(failures, 1);
}

#[test]
fn a_503_moves_the_invite_and_a_probe_brings_the_target_back() {
    let mut h = two_hops();
    h.register();
    let out = h.web(&invite_from_web("z9hG4bKhop2"));
    let first = out.into_iter().find(|s| matches!(s.flow, Flow::Ims { .. })).unwrap();
    let out = h.ims(&response(&first, 503, "Service Unavailable", &[]));
    let moved: Vec<&Sent> = to_ims(&out).into_iter().filter(|s| matches!(&s.msg, Message::Request(r) if r.method.as_str() == "INVITE")).collect();
    assert_eq!(moved.len(), 1, "{out:#?}");
    assert_eq!(dest(moved[0]), second_hop());
    assert!(to_web(&out).is_empty(), "the browser sees no 503");
    // The probe: an OPTIONS to the failed target after next_hop_probe.
    let out = h.advance_to(Duration::from_secs(6));
    // (UDP retransmissions of the moved INVITE and of the probe come too.)
    let probes: Vec<&Sent> = out.iter().filter(|s| matches!(&s.msg, Message::Request(r) if r.method.as_str() == "OPTIONS")).collect();
    let mut branches: Vec<&str> = probes.iter().filter_map(|p| req(p).headers.get("Via")).collect();
    branches.dedup();
    assert_eq!(branches.len(), 1, "one probe: {out:#?}");
    assert!(probes.iter().all(|p| dest(p) == next_hop()), "only the failed target is probed");
    h.ims(&response(probes[0], 200, "OK", &[]));
    assert_eq!(hop_up(&h, next_hop()), 1, "answering again, it is up");
    let out = h.web(&invite_from_web("z9hG4bKhop3").replace("Call-ID: webcall1", "Call-ID: webcall3"));
    let third = out.into_iter().find(|s| matches!(s.flow, Flow::Ims { .. })).unwrap();
    assert_eq!(dest(&third), next_hop(), "the primary takes new requests again");
}

#[test]
fn when_every_target_fails_the_browser_gets_503_as_before() {
    let mut h = two_hops();
    h.register();
    let out = h.web(&invite_from_web("z9hG4bKhop4"));
    let first = out.into_iter().find(|s| matches!(s.flow, Flow::Ims { .. })).unwrap();
    let out = h.input(Input::Unreachable { flow: first.flow });
    let again = only_ims(&out).flow;
    let out = h.input(Input::Unreachable { flow: again });
    assert_eq!(status(only_web(&out)), 503);
    assert_eq!(h.gw.active_calls(), 0);
}

#[test]
fn registrations_are_reported_for_the_cluster_when_shared() {
    let mut h = Harness::new();
    h.register();
    assert!(h.shared.is_empty(), "only with share_state");

    let mut h = Harness::with(B2buaConfig { share_state: true, ..B2buaConfig::default() });
    let contact = h.register();
    let shared = match h.shared.as_slice() {
        [Output::RegistrationShared(r)] => r.clone(),
        other => panic!("one registration shared at the 2xx (not at the 401): {other:?}"),
    };
    assert!(contact.contains(&shared.token), "{contact} / {}", shared.token);
    assert_eq!(shared.aor, "sip:alice@ims.test");
    assert!(shared.expires_in > 0 && !shared.ims_call_id.is_empty());
    assert_eq!(shared.service_route, ["<sip:scscf.ims.test;lr>"]);
    h.input(Input::ConnectionClosed { conn: CONN });
    assert_eq!(
        h.shared.last(),
        Some(&Output::RegistrationRemoved { token: shared.token.clone(), web_call_id: shared.web_call_id.clone() }),
        "removed with the binding"
    );
}

#[test]
fn an_answered_call_is_shared_with_both_dialogs_and_unshared_at_its_end() {
    let mut h = Harness::with(B2buaConfig { share_state: true, ..B2buaConfig::default() });
    let (inv, web_ok) = answered_call(&mut h);
    let call = shared_call(&h);
    let [web, ims] = &call.legs;
    assert_eq!((web.side, ims.side), (Side::Web, Side::Ims));
    assert_eq!(web.call_id, "webcall1");
    assert_eq!(ims.call_id, req(&inv).headers.call_id().unwrap());
    assert_eq!(ims.remote_tag.as_deref(), Some("far1"), "the callee's tag");
    assert_eq!(web.local_tag, resp(&web_ok).headers.to().unwrap().tag().unwrap(), "our tag toward the browser");
    assert_eq!(ims.route_set, ["<sip:scscf.internal.ims;lr>"], "the core's Record-Route");
    assert!(!call.ports.is_empty() && call.icid.is_some());
    h.input(Input::Shutdown);
    assert_eq!(
        h.shared.last(),
        Some(&Output::CallUnshared { call: call.call, dialogs: [web.call_id.clone(), ims.call_id.clone()], binding: call.binding.clone() })
    );
    assert!(call.binding.is_some(), "the browser's registration");
    assert!(call.ims_sdp.as_deref().is_some_and(|s| s.contains("m=audio 40000 RTP/AVP 0")), "the core's SDP: {:?}", call.ims_sdp);
}

// ----- serving another node's state (cluster) ----------------------------------------------

const FRONT: &str = "192.0.2.50:5060";

fn cluster_harness() -> Harness {
    Harness::with(B2buaConfig { share_state: true, sip_front: Some(FRONT.to_owned()), ..B2buaConfig::default() })
}

/// Alice's registration as node B shared it before it died.
fn shared_alice() -> SharedRegistration {
    SharedRegistration {
        token: "tokfromb".into(),
        aor: "sip:alice@ims.test".into(),
        instance: Some("\"<urn:uuid:3f8f8c2a-8d1e-4c42-9a3b-2e7b4d2c1f01>\"".into()),
        reg_id: Some("1".into()),
        web_contact: "<sip:8r2lhmvo@df7jal23ls0d.invalid;transport=ws>;+sip.ice;reg-id=1".into(),
        web_call_id: "9ulsqbbhl9hd3hpbm1jf".into(),
        service_route: vec!["<sip:scscf.ims.test;lr>".into()],
        ims_call_id: "regb@192.0.2.12".into(),
        ims_cseq: 7,
        source: "127.0.0.1".parse().unwrap(),
        expires_in: 600,
    }
}

/// The call a harness shared at its answer.
fn shared_call(h: &Harness) -> SharedCall {
    h.shared
        .iter()
        .find_map(|o| match o {
            Output::CallShared(c) => Some((**c).clone()),
            _ => None,
        })
        .expect("a call shared at its answer")
}

/// The registration a harness shared last.
fn shared_registration(h: &Harness) -> SharedRegistration {
    h.shared
        .iter()
        .rev()
        .find_map(|o| match o {
            Output::RegistrationShared(r) => Some((**r).clone()),
            _ => None,
        })
        .expect("a registration shared")
}

/// The core accepts the REGISTER the gateway sent it in `out`; what the gateway sends then.
fn accept_register(h: &mut Harness, out: &[Sent]) -> Vec<Sent> {
    let reg = out.iter().find(|s| matches!(&s.msg, Message::Request(r) if r.method.as_str() == "REGISTER")).expect("a REGISTER to the core");
    let contact = req(reg).headers.get("Contact").unwrap().to_owned();
    h.ims(&response(reg, 200, "OK", &[("Contact", &contact), ("Service-Route", "<sip:scscf.ims.test;lr>")]))
}

/// The token of the registration the harness holds (as last shared).
fn registration_token(h: &Harness) -> String {
    shared_registration(h).token
}

fn dialog_query() -> StateQuery {
    StateQuery::RegisterDialog { web_call_id: "9ulsqbbhl9hd3hpbm1jf".into() }
}

#[test]
fn with_a_cluster_front_the_core_registers_the_front_in_contact_and_path() {
    let mut h = cluster_harness();
    let out = h.web(REGISTER);
    let reg = req(only_ims(&out));
    assert_eq!(h.asked, [dialog_query()], "an unknown dialog is looked up first");
    let contact = reg.headers.get("Contact").unwrap();
    let path = reg.headers.get("Path").unwrap();
    assert!(contact.contains(&format!("@{FRONT};transport=udp>")), "{contact}");
    assert!(path.contains(&format!("@{FRONT};lr>")), "{path}");
    assert_eq!(token_of(contact), token_of(path), "one token names the binding in both");
    assert!(reg.headers.get("Via").unwrap().contains("127.0.0.1:5080"), "responses still come to this node");
}

#[test]
fn a_browser_reconnecting_here_goes_on_with_the_registration_another_node_made() {
    let mut h = cluster_harness();
    h.state = Some(vec![(dialog_query(), StateAnswer::Registration { registration: Box::new(shared_alice()), holder: Holder::Gone })]);
    // JsSIP after its reconnect: the same REGISTER dialog, the next CSeq.
    let out = h.web(&REGISTER.replace("CSeq: 1 REGISTER", "CSeq: 9 REGISTER"));
    let reg = req(only_ims(&out));
    assert_eq!(reg.headers.call_id().unwrap(), "regb@192.0.2.12", "the core sees the same REGISTER dialog");
    assert_eq!(reg.headers.cseq().unwrap().seq, 7 + 100 + 1, "its CSeq grows past anything the lost node sent");
    let contact = reg.headers.get("Contact").unwrap().to_owned();
    assert_eq!(token_of(&contact), "tokfromb", "and the same contact: a refresh, not a new binding");
    assert!(contact.contains(FRONT), "{contact}");
    assert!(reg.headers.get("From").unwrap().contains("tag=tokfromb"));
    assert_eq!(metric(&h, "estuary_cluster_registrations_adopted_total"), 1);
    assert_eq!(h.asked, [dialog_query()], "its calls wait for the core to accept the refresh");
    let ok = response(only_ims(&out), 200, "OK", &[("Contact", &contact), ("Service-Route", "<sip:scscf.ims.test;lr>")]);
    let out = h.ims(&ok);
    assert_eq!(status(only_web(&out)), 200);
    let r = shared_registration(&h);
    assert_eq!((r.token.as_str(), r.web_call_id.as_str()), ("tokfromb", "9ulsqbbhl9hd3hpbm1jf"), "shared again, now as this node's");
    assert_eq!(h.shared.last(), Some(&Output::HandOverWanted { token: "tokfromb".into() }), "and the nodes asked for its calls");
    // The core's requests for it reach the browser here.
    let out = h.ims(&ims_invite("tokfromb", "z9hG4bKadopt1", SDP));
    assert_eq!(to_web(&out).len(), 1, "{out:#?}");
    assert_eq!(
        h.asked,
        [dialog_query(), StateQuery::CallsOf { token: "tokfromb".into() }],
        "its calls are asked for; a binding held here is not looked up"
    );
}

#[test]
fn an_unknown_or_unanswered_dialog_registers_as_a_node_alone_would() {
    let mut h = cluster_harness();
    let out = h.web(REGISTER);
    assert_eq!(req(only_ims(&out)).headers.cseq().unwrap().seq, 1, "unknown: a new binding");

    let mut h = cluster_harness();
    h.state = None;
    let out = h.web(REGISTER);
    assert!(out.is_empty(), "held while the question is out: {out:#?}");
    let out = h.advance_to(Duration::from_secs(3));
    let reg = out.iter().find(|s| matches!(&s.msg, Message::Request(r) if r.method.as_str() == "REGISTER")).expect("sent after the timeout");
    assert_eq!(req(reg).headers.cseq().unwrap().seq, 1);
}

#[test]
fn a_request_from_the_core_for_a_browser_on_another_node_is_proxied_there() {
    let mut h = cluster_harness();
    let node_b: SocketAddr = "127.0.0.12:5060".parse().unwrap();
    let token = StateQuery::Token { token: "tokfromb".into() };
    h.state = Some(vec![(token.clone(), StateAnswer::Registration { registration: Box::new(shared_alice()), holder: Holder::Node(node_b) })]);
    let out = h.ims(&ims_invite("tokfromb", "z9hG4bKprox1", SDP));
    assert_eq!(h.asked, [token]);
    assert_eq!(status(only_ims(&to_ims(&out).into_iter().filter(|s| s.flow == ims_flow()).map(clone_sent).collect::<Vec<_>>())), 100);
    let fwd = out.iter().find(|s| s.flow == Flow::Ims { transport: Transport::Udp, remote: node_b }).expect("proxied to node B");
    let r = req(fwd);
    let vias = r.headers.values("Via");
    assert_eq!(vias.len(), 2, "ours on top of the core's: {vias:?}");
    assert!(vias[0].contains("127.0.0.1:5080") && vias[1].contains("z9hG4bKprox1"));
    assert_eq!(r.headers.max_forwards().unwrap(), Some(65));
    assert_eq!(r.uri.to_string(), "sip:tokfromb@127.0.0.1:5080;transport=udp", "the request is otherwise untouched");
    assert_eq!(String::from_utf8_lossy(&r.body), SDP, "the offer goes as it came: node B interworks it");
    assert_eq!(metric(&h, "estuary_cluster_proxied_total"), 1);

    // Node B's answers come back to the core without our Via.
    for (code, reason) in [(180, "Ringing"), (200, "OK")] {
        let out = h.ims(&response(fwd, code, reason, &[("Contact", "<sip:estuary@127.0.0.12:5060>")]));
        let back = only_ims(&out);
        assert_eq!(back.flow, ims_flow());
        assert_eq!(status(back), code);
        let vias = resp(back).headers.values("Via");
        assert_eq!(vias.len(), 1, "{vias:?}");
        assert!(vias[0].contains("z9hG4bKprox1"));
    }
    assert_eq!(h.gw.active_calls(), 0, "the call is node B's, not ours");
}

#[test]
fn a_cancel_follows_a_proxied_invite_and_a_browser_nobody_holds_gets_480_or_404() {
    let mut h = cluster_harness();
    let node_b: SocketAddr = "127.0.0.12:5060".parse().unwrap();
    let alice = || Box::new(shared_alice());
    h.state = Some(vec![
        (StateQuery::Token { token: "tokfromb".into() }, StateAnswer::Registration { registration: alice(), holder: Holder::Node(node_b) }),
        (StateQuery::Token { token: "tokgone".into() }, StateAnswer::Registration { registration: alice(), holder: Holder::Gone }),
    ]);
    let out = h.ims(&ims_invite("tokfromb", "z9hG4bKprox2", SDP));
    let fwd = clone_sent(out.iter().find(|s| s.flow != ims_flow()).unwrap());
    h.ims(&response(&fwd, 180, "Ringing", &[]));
    let cancel = "CANCEL sip:tokfromb@127.0.0.1:5080;transport=udp SIP/2.0\nVia: SIP/2.0/UDP 10.9.9.9:5070;branch=z9hG4bKprox2\nMax-Forwards: 70\nRoute: <sip:tokfromb@127.0.0.1:5080;lr>\nFrom: <sip:bob@ims.test>;tag=bobtag\nTo: <sip:alice@ims.test>\nCall-ID: imscall1@10.9.9.9\nCSeq: 5 CANCEL\nContent-Length: 0\n\n";
    let out = h.ims(cancel);
    assert!(out.iter().any(|s| s.flow == ims_flow() && status(s) == 200), "the CANCEL is answered here");
    let c = out.iter().find(|s| s.flow == fwd.flow).expect("and sent on to node B");
    assert_eq!(req(c).method.as_str(), "CANCEL");
    assert_eq!(req(c).headers.get("Via"), req(&fwd).headers.values("Via").first().map(String::as_str), "the INVITE's branch (RFC 3261 §9.1)");

    let out = h.ims(&ims_invite("tokgone", "z9hG4bKgone", SDP).replace("imscall1", "imscall2"));
    assert_eq!(out.iter().map(status).collect::<Vec<_>>(), [100, 480], "registered, browser not back yet");
    let out = h.ims(&ims_invite("toknobody", "z9hG4bKnone", SDP).replace("imscall1", "imscall3"));
    assert_eq!(out.iter().map(status).collect::<Vec<_>>(), [100, 404], "no such binding anywhere");
}

#[test]
fn a_browser_reconnecting_here_ends_a_call_its_dead_node_carried_through_this_node() {
    // Node A answers a call and shares it.
    let mut a = Harness::with(B2buaConfig { share_state: true, ..B2buaConfig::default() });
    let (_inv, web_ok) = answered_call(&mut a);
    let shared = Box::new(shared_call(&a));
    let our_tag = resp(&web_ok).headers.to().unwrap().tag().unwrap().to_owned();
    let ims_leg = shared.legs[1].clone();

    // Node A dies; the browser reconnects to node B and hangs up.
    let mut b = cluster_harness();
    let query = StateQuery::Dialog { call_id: "webcall1".into() };
    b.state = Some(vec![(query.clone(), StateAnswer::Call { call: shared.clone(), holder: Holder::Gone })]);
    let bye = format!("BYE sip:estuary@127.0.0.1;transport=ws SIP/2.0\nVia: SIP/2.0/WSS df7jal23ls0d.invalid;branch=z9hG4bKbyeb\nMax-Forwards: 70\nTo: <sip:bob@ims.test>;tag={our_tag}\nFrom: <sip:alice@ims.test>;tag=a1b2c3\nCall-ID: webcall1\nCSeq: 9 BYE\nContent-Length: 0\n\n");
    let out = b.web(&bye);
    assert_eq!(b.asked, [query]);
    assert_eq!(status(only_web(&out)), 200, "the browser's BYE is answered");
    let ims_bye = req(only_ims(&out));
    assert_eq!(ims_bye.method.as_str(), "BYE");
    assert_eq!(ims_bye.headers.call_id().unwrap(), ims_leg.call_id, "on the IMS dialog node A made");
    assert_eq!(ims_bye.headers.to().unwrap().tag(), Some("far1"));
    assert_eq!(ims_bye.headers.from().unwrap().tag(), Some(ims_leg.local_tag.as_str()));
    assert_eq!(ims_bye.headers.get("Route"), Some("<sip:scscf.internal.ims;lr>"), "through its route set");
    assert_eq!(ims_bye.uri.to_string(), "sip:bob@10.9.9.9:5070");
    assert_eq!(ims_bye.headers.cseq().unwrap().seq, ims_leg.local_cseq + 100 + 1, "a CSeq past anything node A sent");
    assert!(ims_bye.headers.get("Via").unwrap().contains("127.0.0.1:5080"), "from this node");
    assert_eq!(metric(&b, "estuary_cluster_calls_adopted_total"), 1);
    assert!(shared_call(&b).claim, "the take-over claims the call");
    b.ims(&response(only_ims(&out), 200, "OK", &[]));
    assert_eq!(b.ended().reason, EndReason::Bye(Side::Web), "this node writes the call's record");
    assert_eq!((b.ended().started, b.ended().answered), (shared.started, Some(shared.answered)), "of the whole call, from its set-up on node A");
    assert_eq!(b.gw.active_calls(), 0);

    // A dialog the shared state does not know is still 481.
    let out = b.web(&bye.replace("webcall1", "webcall9").replace("z9hG4bKbyeb", "z9hG4bKbyec"));
    assert_eq!(status(only_web(&out)), 481);
}

#[test]
fn a_browser_back_after_its_node_died_gets_its_call_and_media_moved_here_by_two_re_invites() {
    // Node A registers alice, answers her call to bob, and shares both.
    let mut a = Harness::with(B2buaConfig { share_state: true, ..B2buaConfig::default() });
    let (_inv, web_ok) = answered_call(&mut a);
    let (registration, call) = (Box::new(shared_registration(&a)), Box::new(shared_call(&a)));
    let browser_tag = "a1b2c3";
    let our_web_tag = resp(&web_ok).headers.to().unwrap().tag().unwrap().to_owned();
    let [web_leg, ims_leg] = call.legs.clone();

    // Node A dies; alice's browser reconnects to node B and refreshes its registration.
    let mut b = cluster_harness();
    let token = registration.token.clone();
    let mut taken = *call.clone();
    taken.rx_session = Some("pcrf-session;node-a;7".into());
    b.state = Some(vec![
        (dialog_query(), StateAnswer::Registration { registration, holder: Holder::Gone }),
        (StateQuery::CallsOf { token }, StateAnswer::Calls(vec![(taken, Holder::Gone)])),
    ]);
    let out = b.web(&REGISTER.replace("CSeq: 1 REGISTER", "CSeq: 3 REGISTER"));
    assert_eq!(metric(&b, "estuary_cluster_calls_adopted_total"), 0, "not before the core accepts the refresh");
    let out = accept_register(&mut b, &out);
    assert_eq!(metric(&b, "estuary_cluster_calls_adopted_total"), 1);
    assert!(
        b.shared.iter().any(|o| matches!(o, Output::CallAdopted { rx_session: Some(s), .. } if s == "pcrf-session;node-a;7")),
        "the dead node's Rx session, for the policy function to release"
    );
    let reinvite = to_web(&out).into_iter().find(|s| matches!(&s.msg, Message::Request(r) if r.method.as_str() == "INVITE")).expect("a re-INVITE to the browser");
    let r = req(reinvite);
    assert_eq!(r.headers.call_id().unwrap(), "webcall1", "on the browser's own dialog");
    assert_eq!(r.headers.from().unwrap().tag(), Some(our_web_tag.as_str()));
    assert_eq!(r.headers.to().unwrap().tag(), Some(browser_tag));
    assert_eq!(r.headers.cseq().unwrap().seq, web_leg.local_cseq + 101);
    let offer = String::from_utf8_lossy(&r.body).into_owned();
    for want in ["UDP/TLS/RTP/SAVPF 0", "a=setup:actpass", "a=fingerprint:", "a=ice-ufrag:", "a=candidate:", "a=mid:0"] {
        assert!(offer.contains(want), "{want}: an ICE restart with this node's certificate:\n{offer}");
    }
    assert!(b.media.is_empty(), "nothing for the media plane before the browser answers");

    // The browser answers; node B ACKs it and moves the IMS leg with its own offer.
    let answer = WEB_ANSWER.replace("m=audio 9 UDP/TLS/RTP/SAVPF 0 8 105", "m=audio 9 UDP/TLS/RTP/SAVPF 0");
    let out = b.web(&response_with_body(reinvite, 200, "OK", &[("Contact", "<sip:8r2lhmvo@df7jal23ls0d.invalid;transport=ws>")], &answer));
    let ack = to_web(&out).into_iter().find(|s| matches!(&s.msg, Message::Request(r) if r.method.as_str() == "ACK")).expect("the browser's 2xx ACKed");
    assert_eq!(req(ack).headers.cseq().unwrap().seq, web_leg.local_cseq + 101);
    assert!(matches!(b.media.last(), Some(Output::Media { .. })), "the browser side starts at once");
    let ims_reinvite = only_ims(&out);
    let r = req(ims_reinvite);
    assert_eq!(r.method.as_str(), "INVITE");
    assert_eq!(r.headers.call_id().unwrap(), ims_leg.call_id, "the core sees a re-INVITE on its dialog, not a new call");
    assert_eq!(r.headers.to().unwrap().tag(), Some("far1"));
    assert_eq!(r.headers.get("Route"), Some("<sip:scscf.internal.ims;lr>"));
    assert_eq!(r.headers.cseq().unwrap().seq, ims_leg.local_cseq + 101);
    let ims_offer = String::from_utf8_lossy(&r.body).into_owned();
    assert!(ims_offer.contains("RTP/AVP 0") && ims_offer.contains("c=IN IP4 127.0.0.1"), "{ims_offer}");
    for webrtc in ["ice-", "fingerprint", "setup", "SAVPF"] {
        assert!(!ims_offer.contains(webrtc), "{webrtc} reached IMS:\n{ims_offer}");
    }

    // The core answers; node B ACKs and the plan settles with the core's (new) address.
    let moved = SDP.replace("10.9.9.9", "10.9.9.10");
    let out = b.ims(&response_with_body(ims_reinvite, 200, "OK", &[("Contact", "<sip:bob@10.9.9.9:5070>")], &moved));
    let ack = req(only_ims(&out));
    assert_eq!((ack.method.as_str(), ack.headers.cseq().unwrap().seq), ("ACK", ims_leg.local_cseq + 101));
    match b.media.last() {
        Some(Output::Media { plan, .. }) => assert_eq!(plan.streams[0].ims_remote_rtp.map(|a| a.ip().to_string()).as_deref(), Some("10.9.9.10"), "{plan:?}"),
        other => panic!("a settled plan for the media plane: {other:?}"),
    }
    assert_eq!(b.gw.active_calls(), 1);
    // A BYE from the core on its dialog ends it here.
    let bye = format!(
        "BYE sip:estuary@127.0.0.1:5080 SIP/2.0\nVia: SIP/2.0/UDP 10.9.9.9:5070;branch=z9hG4bKbyefo\nMax-Forwards: 70\nFrom: <sip:bob@ims.test>;tag=far1\nTo: <sip:alice@ims.test>;tag={}\nCall-ID: {}\nCSeq: 99 BYE\nContent-Length: 0\n\n",
        ims_leg.local_tag, ims_leg.call_id
    );
    let out = b.ims(&bye);
    assert!(to_web(&out).iter().any(|s| matches!(&s.msg, Message::Request(r) if r.method.as_str() == "BYE")), "{out:#?}");
}

#[test]
fn calls_whose_node_still_shows_as_alive_are_asked_for_again_until_it_is_gone() {
    let mut a = Harness::with(B2buaConfig { share_state: true, ..B2buaConfig::default() });
    answered_call(&mut a);
    let (registration, call) = (Box::new(shared_registration(&a)), Box::new(shared_call(&a)));
    let calls_of = StateQuery::CallsOf { token: registration.token.clone() };
    let node_a: SocketAddr = "127.0.0.11:5060".parse().unwrap();

    // The browser is back before node A's presence ran out: its call is left where it is.
    let mut b = cluster_harness();
    b.state = Some(vec![
        (dialog_query(), StateAnswer::Registration { registration, holder: Holder::Gone }),
        (calls_of.clone(), StateAnswer::Calls(vec![(*call.clone(), Holder::Node(node_a))])),
    ]);
    let out = b.web(REGISTER);
    let out = accept_register(&mut b, &out);
    assert!(to_web(&out).iter().all(|s| !matches!(&s.msg, Message::Request(_))), "no re-INVITE yet: {out:#?}");
    assert_eq!(b.asked.iter().filter(|q| **q == calls_of).count(), 1);
    let hand_over = Output::HandOverWanted { token: registration_token(&b) };
    // Asked again every 500 ms while node A shows as alive, and node A asked to hand it over.
    b.advance_to(Duration::from_millis(1100));
    assert_eq!(b.asked.iter().filter(|q| **q == calls_of).count(), 3);
    assert_eq!(b.shared.iter().filter(|o| **o == hand_over).count(), 1 + 3, "once at the refresh, then with each answer");
    assert_eq!(metric(&b, "estuary_cluster_calls_adopted_total"), 0);
    // Node A's presence runs out: the next answer brings the call here.
    b.state.as_mut().unwrap()[1].1 = StateAnswer::Calls(vec![(*call, Holder::Gone)]);
    let out = b.advance_to(Duration::from_millis(1700));
    assert_eq!(metric(&b, "estuary_cluster_calls_adopted_total"), 1);
    assert!(to_web(&out).iter().any(|s| matches!(&s.msg, Message::Request(r) if r.method.as_str() == "INVITE")), "{out:#?}");
    // And it is not asked for any more.
    let asked = b.asked.len();
    b.advance_to(Duration::from_secs(5));
    assert_eq!(b.asked.len(), asked);
}

#[test]
fn a_browser_to_browser_call_spiralling_back_through_the_front_is_no_loop() {
    let mut h = cluster_harness();
    let node_b: SocketAddr = "127.0.0.12:5060".parse().unwrap();
    let token = StateQuery::Token { token: "tokfromb".into() };
    h.state = Some(vec![(token, StateAnswer::Registration { registration: Box::new(shared_alice()), holder: Holder::Node(node_b) })]);
    // This node sent the INVITE to the core (its Via is in it); the core sent it back through
    // the front by bob's Path, and the front picked this node.
    let spiral = ims_invite("tokfromb", "z9hG4bKspiral", SDP)
        .replace("Route: <sip:tokfromb@127.0.0.1:5080;lr>", &format!("Route: <sip:tokfromb@{FRONT};lr>"))
        .replace("Via: SIP/2.0/UDP 10.9.9.9:5070;branch=z9hG4bKspiral", "Via: SIP/2.0/UDP 10.9.9.9:5070;branch=z9hG4bKspiral\nVia: SIP/2.0/UDP 127.0.0.1:5080;branch=z9hG4bKours;rport");
    let out = h.ims(&spiral);
    assert!(out.iter().all(|s| !matches!(&s.msg, Message::Response(r) if r.code == 482)), "{out:#?}");
    assert!(out.iter().any(|s| s.flow == Flow::Ims { transport: Transport::Udp, remote: node_b }), "proxied to bob's node: {out:#?}");

    // Without the front in its route it is a loop as before.
    let looped = ims_invite("tokother", "z9hG4bKloop", SDP)
        .replace("imscall1", "imscall2")
        .replace("Via: SIP/2.0/UDP 10.9.9.9:5070;branch=z9hG4bKloop", "Via: SIP/2.0/UDP 10.9.9.9:5070;branch=z9hG4bKloop\nVia: SIP/2.0/UDP 127.0.0.1:5080;branch=z9hG4bKours2;rport");
    let out = h.ims(&looped);
    assert_eq!(status(only_ims(&out)), 482);
}

// ----- a browser back over a new WebSocket ----------------------------------------------

const CONN2: ConnId = ConnId(2);

fn grace_harness() -> Harness {
    Harness::with(B2buaConfig { on_ws_close: estuary_b2bua::OnWsClose::Keep, reconnect_grace: Duration::from_secs(10), ..B2buaConfig::default() })
}

fn web_on(h: &mut Harness, conn: ConnId, text: &str) -> Vec<Sent> {
    let data = text.replace('\n', "\r\n");
    h.gw.handle_input(h.now, Input::Receive { flow: Flow::Web { conn }, conn: Some(conn), remote: "127.0.0.1:40001".parse().unwrap(), data: data.as_bytes() });
    h.drain()
}

fn bye_from_ims(h: &Harness, inv: &Sent) -> String {
    let ims_tag = req(inv).headers.from().unwrap().tag().unwrap().to_owned();
    let _ = h;
    format!(
        "BYE sip:estuary@127.0.0.1:5080 SIP/2.0\nVia: SIP/2.0/UDP 10.9.9.9:5070;branch=z9hG4bKgraceb\nMax-Forwards: 70\nFrom: <sip:bob@ims.test>;tag=far1\nTo: <sip:alice@ims.test>;tag={ims_tag}\nCall-ID: {}\nCSeq: 9 BYE\nContent-Length: 0\n\n",
        req(inv).headers.call_id().unwrap()
    )
}

#[test]
fn a_call_waits_for_its_browser_to_come_back_over_a_new_websocket() {
    let mut h = grace_harness();
    let (inv, _) = answered_call(&mut h);
    let out = h.input(Input::ConnectionClosed { conn: CONN });
    assert!(out.is_empty(), "no BYE while the call waits: {out:#?}");
    assert_eq!(h.gw.active_calls(), 1);

    // JsSIP reconnects and refreshes its registration (same dialog): the same binding.
    h.input(Input::ConnectionOpened { conn: CONN2, side: Side::Web, transport: Transport::Wss, local: "127.0.0.1:8443".parse().unwrap(), remote: "127.0.0.1:40001".parse().unwrap() });
    let out = web_on(&mut h, CONN2, &REGISTER.replace("CSeq: 1 REGISTER", "CSeq: 5 REGISTER").replace("z9hG4bK56sdasks", "z9hG4bKback1"));
    let reg = req(only_ims(&out));
    assert_eq!(reg.headers.cseq().unwrap().seq, 3, "a refresh of the binding (its third REGISTER toward IMS)");

    // The call goes on over the new connection: a BYE from the core reaches the browser there.
    let out = h.ims(&bye_from_ims(&h, &inv));
    let to_browser = to_web(&out);
    assert_eq!(to_browser.len(), 1, "{out:#?}");
    assert_eq!(to_browser[0].flow, Flow::Web { conn: CONN2 });
    // And the grace timer no longer ends anything.
    h.advance_to(Duration::from_secs(60));
}

#[test]
fn a_browser_that_does_not_come_back_in_time_loses_its_call() {
    let mut h = grace_harness();
    answered_call(&mut h);
    h.input(Input::ConnectionClosed { conn: CONN });
    let out = h.advance_to(Duration::from_secs(9));
    assert!(to_ims(&out).is_empty(), "still waiting at 9 s");
    let out = h.advance_to(Duration::from_secs(11));
    let mut byes: Vec<&str> = to_ims(&out).into_iter().filter(|s| matches!(&s.msg, Message::Request(r) if r.method.as_str() == "BYE")).filter_map(|s| req(s).headers.get("Via")).collect();
    byes.dedup();
    assert_eq!(byes.len(), 1, "one BYE to the core (retransmissions aside): {out:#?}");
    assert!(to_web(&out).is_empty(), "none to the browser's dead connection: {out:#?}");
    assert_eq!(h.ended().reason, EndReason::ConnectionLost);
}

#[test]
fn without_a_grace_the_call_ends_with_its_websocket_as_before() {
    let mut h = Harness::with(B2buaConfig { on_ws_close: estuary_b2bua::OnWsClose::Keep, ..B2buaConfig::default() });
    answered_call(&mut h);
    let out = h.input(Input::ConnectionClosed { conn: CONN });
    assert!(to_ims(&out).iter().any(|s| matches!(&s.msg, Message::Request(r) if r.method.as_str() == "BYE")));
}

#[test]
fn the_shared_copy_of_a_call_follows_its_cseqs() {
    let mut h = Harness::with(B2buaConfig { share_state: true, ..B2buaConfig::default() });
    let (_inv, web_ok) = answered_call(&mut h);
    let before = shared_call(&h);
    let tag = resp(&web_ok).headers.to().unwrap().tag().unwrap().to_owned();
    let info = format!("INFO sip:estuary@127.0.0.1 SIP/2.0\nVia: SIP/2.0/WSS df7jal23ls0d.invalid;branch=z9hG4bKinfo1\nMax-Forwards: 70\nTo: <sip:bob@ims.test>;tag={tag}\nFrom: <sip:alice@ims.test>;tag=a1b2c3\nCall-ID: webcall1\nCSeq: 9 INFO\nContent-Type: application/dtmf-relay\nContent-Length: 10\n\nSignal=5\r\n");
    let out = h.web(&info);
    assert_eq!(to_ims(&out).len(), 1, "relayed: {out:#?}");
    let after = h
        .shared
        .iter()
        .rev()
        .find_map(|o| match o {
            Output::CallShared(c) => Some(c.clone()),
            _ => None,
        })
        .unwrap();
    assert_eq!(after.legs[1].local_cseq, before.legs[1].local_cseq + 1, "the IMS leg's CSeq as sent");
    assert!(before.claim && !after.claim, "the answer claims the call; later copies only refresh this node's");
}

// ----- handing calls over to another node -------------------------------------------------

/// Node A, sharing state, with alice registered and her call to bob answered.
fn node_a_with_a_call() -> (Harness, Sent, String) {
    let (a, inv, token, _) = node_a_with_a_shared_call();
    (a, inv, token)
}

/// As [`node_a_with_a_call`], with the call's copy as shared at its answer.
fn node_a_with_a_shared_call() -> (Harness, Sent, String, SharedCall) {
    let mut a = Harness::with(B2buaConfig { share_state: true, on_ws_close: estuary_b2bua::OnWsClose::Keep, reconnect_grace: Duration::from_secs(30), ..B2buaConfig::default() });
    let (inv, web_ok) = answered_call(&mut a);
    let tag = resp(&web_ok).headers.to().unwrap().tag().unwrap().to_owned();
    a.web(&format!("ACK sip:estuary@127.0.0.1 SIP/2.0\nVia: SIP/2.0/WSS df7jal23ls0d.invalid;branch=z9hG4bKacka\nTo: <sip:bob@ims.test>;tag={tag}\nFrom: <sip:alice@ims.test>;tag=a1b2c3\nCall-ID: webcall1\nCSeq: 7 ACK\nContent-Length: 0\n\n"));
    let token = registration_token(&a);
    let copy = shared_call(&a);
    a.shared.clear();
    a.asked.clear();
    (a, inv, token, copy)
}

#[test]
fn a_node_whose_browser_came_back_at_another_node_hands_its_call_over_without_a_bye() {
    let (mut a, inv, token) = node_a_with_a_call();
    let node_b: SocketAddr = "127.0.0.12:5060".parse().unwrap();
    let owner = StateQuery::Token { token: token.clone() };
    // Node B's REGISTER refresh is not in yet: the registration is still A's.
    a.state = Some(vec![(owner.clone(), StateAnswer::Registration { registration: Box::new(shared_alice()), holder: Holder::Here })]);
    let out = a.input(Input::HandOverWanted { token: &token });
    assert_eq!(a.asked, std::slice::from_ref(&owner), "whose the registration is, asked first");
    assert!(out.is_empty() && a.gw.active_calls() == 1, "still here: {out:#?}");
    // A token this node does not hold is not asked about.
    a.input(Input::HandOverWanted { token: "someoneelse" });
    assert_eq!(a.asked.len(), 1);

    // Node B holds it now: the call goes, the browser's old connection still open.
    a.state = Some(vec![(owner.clone(), StateAnswer::Registration { registration: Box::new(shared_alice()), holder: Holder::Node(node_b) })]);
    let out = a.input(Input::HandOverWanted { token: &token });
    assert!(out.is_empty(), "no BYE on either leg, nothing at all sent: {out:#?}");
    assert_eq!(a.gw.active_calls(), 0);
    assert_eq!(a.ended().reason, EndReason::HandedOver);
    assert!(matches!(a.media.last(), Some(Output::MediaEnd { .. })), "its media stops here");
    let copies: Vec<&SharedCall> = a.shared.iter().filter_map(|o| if let Output::CallShared(c) = o { Some(&**c) } else { None }).collect();
    assert_eq!(copies.len(), 1, "{:?}", a.shared);
    assert!(copies[0].handed_over && !copies[0].claim, "the last copy is marked for any node to take");
    assert_eq!(copies[0].legs[1].call_id, req(&inv).headers.call_id().unwrap());
    assert!(a.shared.iter().all(|o| !matches!(o, Output::CallUnshared { .. } | Output::RegistrationRemoved { .. })), "the copies stay: {:?}", a.shared);
    assert_eq!(metric(&a, "estuary_cluster_calls_handed_over_total"), 1);

    // The binding went with the browser: the core's next request for it that reaches this
    // node is proxied to node B.
    let out = a.ims(&ims_invite(&token, "z9hG4bKafter", SDP));
    assert!(out.iter().any(|s| s.flow == Flow::Ims { transport: Transport::Udp, remote: node_b }), "{out:#?}");
    // A second question for the same token finds nothing left to hand over.
    let asked = a.asked.len();
    a.input(Input::HandOverWanted { token: &token });
    assert_eq!(a.asked.len(), asked);
}

#[test]
fn a_binding_whose_browser_left_is_looked_up_before_the_core_gets_480() {
    let (mut a, _inv, token) = node_a_with_a_call();
    a.input(Input::ConnectionClosed { conn: CONN });
    let node_b: SocketAddr = "127.0.0.12:5060".parse().unwrap();
    let owner = StateQuery::Token { token: token.clone() };
    // Still this node's registration: 480 as before.
    a.state = Some(vec![(owner.clone(), StateAnswer::Registration { registration: Box::new(shared_alice()), holder: Holder::Here })]);
    let out = a.ims(&ims_invite(&token, "z9hG4bKleft1", SDP).replace("imscall1", "imscall7"));
    assert_eq!(a.asked.last(), Some(&owner));
    assert_eq!(out.iter().map(status).collect::<Vec<_>>(), [100, 480]);
    // Unknown to the shared state (Redis away): 480 too, never 404 for a binding held here.
    a.state = Some(Vec::new());
    let out = a.ims(&ims_invite(&token, "z9hG4bKleft2", SDP).replace("imscall1", "imscall8"));
    assert_eq!(out.iter().map(status).collect::<Vec<_>>(), [100, 480]);
    // The browser is at node B: proxied there.
    a.state = Some(vec![(owner, StateAnswer::Registration { registration: Box::new(shared_alice()), holder: Holder::Node(node_b) })]);
    let out = a.ims(&ims_invite(&token, "z9hG4bKleft3", SDP).replace("imscall1", "imscall9"));
    assert!(out.iter().any(|s| s.flow == Flow::Ims { transport: Transport::Udp, remote: node_b }), "{out:#?}");
}

#[test]
fn a_drain_that_runs_out_hands_the_answered_calls_over_and_leaves_the_rest_to_shutdown() {
    let (mut a, _inv, _token) = node_a_with_a_call();
    // A second call, still ringing.
    let out = a.web(&invite_from_web("z9hG4bKinv2").replace("webcall1", "webcall2"));
    let ringing = out.into_iter().find(|s| matches!(s.flow, Flow::Ims { .. })).unwrap();
    a.ims(&response(&ringing, 180, "Ringing", &[]));
    assert_eq!(a.gw.active_calls(), 2);
    let out = a.input(Input::HandOver);
    assert!(out.is_empty(), "{out:#?}");
    assert_eq!(a.gw.active_calls(), 1, "the ringing call is not handed over");
    assert_eq!(metric(&a, "estuary_cluster_calls_handed_over_total"), 1);
    assert!(a.shared.iter().any(|o| matches!(o, Output::CallShared(c) if c.handed_over)));
    let out = a.input(Input::Shutdown);
    assert!(to_ims(&out).iter().any(|s| matches!(&s.msg, Message::Request(r) if r.method.as_str() == "CANCEL")), "{out:#?}");

    // Without a cluster nothing is handed over: the shutdown ends the call.
    let mut alone = Harness::new();
    answered_call(&mut alone);
    alone.input(Input::HandOver);
    assert_eq!(alone.gw.active_calls(), 1);
}

#[test]
fn a_call_another_node_took_over_while_this_one_was_cut_off_is_let_go_without_a_bye() {
    let (mut a, inv, _token, mut taken) = node_a_with_a_shared_call();
    let whose = StateQuery::Dialog { call_id: req(&inv).headers.call_id().unwrap().to_owned() };
    taken.call = 99;
    let node_b: SocketAddr = "127.0.0.12:5060".parse().unwrap();
    a.state = Some(vec![(whose.clone(), StateAnswer::Call { call: Box::new(taken), holder: Holder::Node(node_b) })]);
    // Its media stops (node B re-anchored it): this node would end the call with BYE.
    let out = a.input(Input::MediaFailed { call: 1, reason: "no media", cause: estuary_b2bua::ReleaseCause::RtpTimeout });
    assert_eq!(a.asked, std::slice::from_ref(&whose), "whose the call is, asked first");
    assert!(out.is_empty(), "no BYE to either side: {out:#?}");
    assert_eq!(a.gw.active_calls(), 0);
    assert_eq!(a.ended().reason, EndReason::HandedOver);
    assert!(a.shared.iter().all(|o| !matches!(o, Output::CallUnshared { .. })), "node B's copy stays: {:?}", a.shared);
}

#[test]
fn a_call_still_this_nodes_or_unknown_ends_with_its_byes_after_the_question() {
    // Still this node's: the BYEs go, with the media's Reason.
    let (mut a, inv, _token, mine) = node_a_with_a_shared_call();
    let whose = StateQuery::Dialog { call_id: req(&inv).headers.call_id().unwrap().to_owned() };
    a.state = Some(vec![(whose, StateAnswer::Call { call: Box::new(mine), holder: Holder::Here })]);
    let out = a.input(Input::MediaFailed { call: 1, reason: "no media", cause: estuary_b2bua::ReleaseCause::RtpTimeout });
    let byes: Vec<&Sent> = out.iter().filter(|s| matches!(&s.msg, Message::Request(r) if r.method.as_str() == "BYE")).collect();
    assert_eq!(byes.len(), 2, "{out:#?}");
    assert!(byes.iter().all(|b| b.text.contains("RELEASE_CAUSE;cause=2")));

    // Redis does not answer: after the question's time limit, as a node alone.
    let (mut a, _inv, _token) = node_a_with_a_call();
    a.state = None;
    let out = a.input(Input::MediaFailed { call: 1, reason: "no media", cause: estuary_b2bua::ReleaseCause::RtpTimeout });
    assert!(out.is_empty());
    let again = a.input(Input::MediaFailed { call: 1, reason: "no media", cause: estuary_b2bua::ReleaseCause::RtpTimeout });
    assert!(again.is_empty() && a.asked.len() == 1, "asked once");
    let out = a.advance_to(Duration::from_secs(3));
    let legs: std::collections::HashSet<String> = out
        .iter()
        .filter(|s| matches!(&s.msg, Message::Request(r) if r.method.as_str() == "BYE"))
        .map(|s| req(s).headers.call_id().unwrap().to_owned())
        .collect();
    assert_eq!(legs.len(), 2, "a BYE on each leg (retransmissions aside): {out:#?}");

    // The browser back before the answer: its call goes on.
    let (mut a, _inv, _token) = node_a_with_a_call();
    a.state = None;
    a.input(Input::ConnectionClosed { conn: CONN });
    a.advance_to(Duration::from_secs(31));
    assert_eq!(a.asked.len(), 1, "the grace ran out: whose is it?");
    a.input(Input::ConnectionOpened { conn: CONN2, side: Side::Web, transport: Transport::Wss, local: "127.0.0.1:8443".parse().unwrap(), remote: "127.0.0.1:40001".parse().unwrap() });
    web_on(&mut a, CONN2, &REGISTER.replace("CSeq: 1 REGISTER", "CSeq: 5 REGISTER").replace("z9hG4bK56sdasks", "z9hG4bKback2"));
    let out = a.advance_to(Duration::from_secs(40));
    assert!(out.iter().all(|s| !matches!(&s.msg, Message::Request(r) if r.method.as_str() == "BYE")), "{out:#?}");
    assert_eq!(a.gw.active_calls(), 1);
}
