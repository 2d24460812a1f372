//! **TEST FACILITY — not an IMS core.** The built-in IMS peer that answers for the core when
//! `ims.next_hop = "builtin"`, so `make run` works on a laptop with nothing else installed and
//! an operator can hear the whole WebRTC -> IMS path in a minute.
//!
//! It is a SIP user agent server on the IMS side of the gateway, sans-IO like every Estuary
//! engine (datagrams and `now` in; datagrams, media work and deadlines out):
//!
//! - REGISTER: 200 with the Contact(s) and their expiry, no authentication. OPTIONS, MESSAGE,
//!   INFO, PRACK: 200.
//! - INVITE to `sip:echo@…`: 100, 180, 200 with PCMU or PCMA (the first the offer lists) and
//!   telephone-event if offered; every RTP packet is sent back as the peer's own stream. A
//!   plain-RTP video m-line listing H264/90000 is answered with H.264 only (packetization-mode
//!   1 preferred) on a second port, and its RTP is echoed the same way, so a gateway that
//!   transcodes a browser's VP8 gets its own H.264 back. Video is refused (port 0) when H.264
//!   is not offered, and on every other kind of call.
//! - INVITE to `sip:tone@…`: the same answer, and a 1 kHz tone at -10 dBFS is played.
//! - INVITE to `sip:ring@…`: 180 and nothing more until CANCEL (487) or 3 minutes (480).
//! - A user registered through the gateway (any other name): the INVITE, MESSAGE, CANCEL...
//!   is proxied to its Contact through the gateway's Path and record-routed (see `proxy`),
//!   so two browsers on one gateway can call each other.
//! - Any other user: 404. No plain-RTP G.711 in the offer (e.g. SDES-SRTP only, or Opus only):
//!   488 with a Warning. A delayed offer gets the peer's offer in the 200 and its answer in ACK.
//! - re-INVITE and UPDATE: the same ports, directions mirrored (hold works); video can be
//!   added (a new port) or removed (its echo stopped, its socket closed) by a re-offer. BYE: 200.
//!   2xx retransmitted over UDP until ACK (RFC 3261 §13.3.1.4), then the call is ended with BYE;
//!   any call ends with BYE after one hour.
//!
//! Media runs per call in [`CallMedia`] (and [`VideoEcho`] for its video), handed to the driver
//! in [`Output::MediaStart`] with the ports it opened through [`MediaPorts`]: a call's sockets
//! (one, or two with video) and its media state belong to one task, and the SIP engine never
//! sees RTP.
#![forbid(unsafe_code)]

mod media;
mod proxy;
pub mod sdp;

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use estuary_sip::{response_to, salvage_for_400, Message, Method, NameAddr, Request, Response, Uri};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

pub use media::{Behaviour, CallMedia, Stream, VideoEcho, VideoStream};

/// What the peer is told by its driver.
#[derive(Clone, Debug)]
pub struct PeerConfig {
    /// The peer's SIP address (its UDP socket): Via, Contact.
    pub sip: SocketAddr,
    /// The address of its media sockets (SDP c=).
    pub media_ip: IpAddr,
    /// RFC 3261 T1 and T2 for 2xx and BYE retransmission.
    pub t1: Duration,
    pub t2: Duration,
    /// Longest call before the peer hangs up itself.
    pub max_call: Duration,
    /// How long `ring@` rings before 480.
    pub ring_timeout: Duration,
}

impl PeerConfig {
    pub fn new(sip: SocketAddr) -> PeerConfig {
        PeerConfig {
            sip,
            media_ip: sip.ip(),
            t1: Duration::from_millis(500),
            t2: Duration::from_secs(4),
            max_call: Duration::from_secs(3600),
            ring_timeout: Duration::from_secs(180),
        }
    }
}

/// The driver opens a media socket (port 0 is fine) and says which port it got.
pub trait MediaPorts {
    fn open(&mut self) -> Option<u16>;
}

/// What the driver must do. A call is known by its audio port; its video port, when it has
/// one, belongs to the same call (and the same task).
#[derive(Debug)]
pub enum Output {
    /// Send a SIP message from the peer's SIP socket.
    Transmit { to: SocketAddr, data: Vec<u8> },
    /// A call was answered: run `media` on the socket `port` (opened through [`MediaPorts`]),
    /// and `video`, if the call has video, on its own socket, both owned by the call.
    MediaStart { port: u16, media: Box<CallMedia>, video: Option<VideoStart> },
    /// A re-offer (or the ACK's answer) changed the call's audio stream and maybe its video.
    MediaUpdate { port: u16, stream: Stream, video: VideoUpdate },
    /// The call is over, or never started: close its sockets (audio and video).
    MediaStop { port: u16 },
}

/// A call's video echo and the port of its socket (opened through [`MediaPorts`]).
#[derive(Debug)]
pub struct VideoStart {
    pub port: u16,
    pub echo: Box<VideoEcho>,
}

/// What an offer/answer did to a call's video.
#[derive(Debug)]
pub enum VideoUpdate {
    /// The call had no video and still has none.
    Unchanged,
    /// Video was added: run `echo` on the socket `port`, alongside the call's audio.
    Start(VideoStart),
    /// The video goes on, with this address, payload type or direction.
    Stream(VideoStream),
    /// Video was removed: stop its echo and close the socket `port`.
    Stop { port: u16 },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Echo,
    Tone,
    Ring,
}

#[derive(Debug)]
enum State {
    /// `ring@`: 180 sent; waiting for CANCEL or the ring timeout.
    Ringing { until: Instant },
    /// 200 sent, no ACK yet: retransmit it.
    Answered { next: Instant, interval: Duration, give_up: Instant },
    Confirmed,
}

#[derive(Debug)]
struct Call {
    kind: Kind,
    state: State,
    /// The gateway, where requests came from and where ours go.
    peer: SocketAddr,
    invite: Request,
    /// The last response to the INVITE, for retransmissions of the INVITE and of the 200.
    last_response: Vec<u8>,
    local_tag: String,
    port: Option<u16>,
    /// The video socket's port while the call has video (echo calls only).
    video_port: Option<u16>,
    /// We offered in the 200 (delayed offer): the answer comes in the ACK.
    awaiting_answer: bool,
    session_id: u64,
    sdp_version: u64,
    ends_at: Instant,
    /// Our next CSeq in this dialog (for BYE).
    cseq: u32,
}

/// A request the peer sent (BYE), retransmitted until answered.
#[derive(Debug)]
struct Pending {
    call_id: String,
    to: SocketAddr,
    data: Vec<u8>,
    next: Instant,
    interval: Duration,
    give_up: Instant,
}

/// A non-INVITE (or rejected INVITE) response kept to answer retransmissions (RFC 3261
/// §17.2.2, Timer J = 64*T1).
struct Cached {
    data: Vec<u8>,
    until: Instant,
}

/// Most cached responses kept: a flood of distinct requests cannot grow memory without bound.
const MAX_CACHED: usize = 1024;
/// Most concurrent calls: beyond it INVITEs get 486.
const MAX_CALLS: usize = 2000;

/// The built-in IMS test peer.
pub struct TestPeer {
    cfg: PeerConfig,
    calls: HashMap<String, Call>,
    cache: HashMap<(String, String), Cached>,
    pending: Vec<Pending>,
    outputs: VecDeque<Output>,
    rng: StdRng,
    /// Registered users (lower-case user part) and where to reach them.
    bindings: HashMap<String, proxy::Binding>,
}

impl TestPeer {
    pub fn new(cfg: PeerConfig, seed: u64) -> TestPeer {
        TestPeer {
            cfg,
            calls: HashMap::new(),
            cache: HashMap::new(),
            pending: Vec::new(),
            outputs: VecDeque::new(),
            rng: StdRng::seed_from_u64(seed),
            bindings: HashMap::new(),
        }
    }

    /// Calls in progress (ringing, answered or confirmed).
    pub fn active_calls(&self) -> usize {
        self.calls.len()
    }

    pub fn poll_output(&mut self) -> Option<Output> {
        self.outputs.pop_front()
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        let calls = self.calls.values().map(|c| match c.state {
            State::Ringing { until } => until,
            State::Answered { next, give_up, .. } => next.min(give_up),
            State::Confirmed => c.ends_at,
        });
        let pending = self.pending.iter().map(|p| p.next.min(p.give_up));
        let cache = self.cache.values().map(|c| c.until);
        calls.chain(pending).chain(cache).min()
    }

    /// A datagram on the peer's SIP socket.
    pub fn handle_sip(&mut self, now: Instant, from: SocketAddr, data: &[u8], ports: &mut dyn MediaPorts) {
        let msg = match Message::parse(data) {
            Ok(m) => m,
            Err(_) => {
                if let Some(r) = salvage_for_400(data) {
                    self.send(from, r.to_bytes());
                }
                return;
            }
        };
        match msg {
            Message::Request(req) => {
                if req.validate().is_err() {
                    if let Some(r) = salvage_for_400(data) {
                        self.send(from, r.to_bytes());
                    }
                    return;
                }
                self.on_request(now, from, req, ports);
            }
            Message::Response(resp) => {
                if let Err(resp) = self.proxy_response(resp) {
                    self.on_response(resp);
                }
            }
        }
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        self.cache.retain(|_, c| c.until > now);
        let mut retransmit = Vec::new();
        self.pending.retain_mut(|p| {
            if now >= p.give_up {
                return false;
            }
            if now >= p.next {
                retransmit.push((p.to, p.data.clone()));
                p.interval = (p.interval * 2).min(self.cfg.t2);
                p.next = now + p.interval;
            }
            true
        });
        for (to, data) in retransmit {
            self.send(to, data);
        }
        let mut ring_out = Vec::new();
        let mut unacked = Vec::new();
        let mut too_long = Vec::new();
        for (id, c) in &mut self.calls {
            match &mut c.state {
                State::Ringing { until } if now >= *until => ring_out.push(id.clone()),
                State::Answered { give_up, .. } if now >= *give_up => unacked.push(id.clone()),
                State::Answered { next, interval, .. } if now >= *next => {
                    *interval = (*interval * 2).min(self.cfg.t2);
                    *next = now + *interval;
                    self.outputs.push_back(Output::Transmit { to: c.peer, data: c.last_response.clone() });
                }
                State::Confirmed if now >= c.ends_at => too_long.push(id.clone()),
                _ => {}
            }
        }
        for id in ring_out {
            if let Some(c) = self.calls.remove(&id) {
                let mut r = response_to(&c.invite, 480, "Temporarily Unavailable");
                add_tag(&mut r, &c.local_tag);
                self.cache_response(now, &c.invite, r.to_bytes());
                self.send(c.peer, r.to_bytes());
            }
        }
        // RFC 3261 §13.3.1.4: no ACK within 64*T1 ends the session with BYE.
        for id in unacked.into_iter().chain(too_long) {
            self.hang_up(now, &id);
        }
    }

    fn send(&mut self, to: SocketAddr, data: Vec<u8>) {
        self.outputs.push_back(Output::Transmit { to, data });
    }

    fn token(&mut self) -> String {
        format!("{:016x}", self.rng.random::<u64>())
    }

    fn cache_response(&mut self, now: Instant, req: &Request, data: Vec<u8>) {
        if self.cache.len() >= MAX_CACHED {
            return;
        }
        if let Some(key) = tx_key(req) {
            self.cache.insert(key, Cached { data, until: now + 64 * self.cfg.t1 });
        }
    }

    /// Answer a request outside the INVITE machinery (and remember it for retransmissions).
    fn reply(&mut self, now: Instant, from: SocketAddr, req: &Request, r: Response) {
        let data = r.to_bytes();
        self.cache_response(now, req, data.clone());
        self.send(from, data);
    }

    fn simple(&mut self, now: Instant, from: SocketAddr, req: &Request, code: u16, reason: &str) {
        let mut r = response_to(req, code, reason);
        let tag = self.token();
        add_tag(&mut r, &tag);
        self.reply(now, from, req, r);
    }

    fn on_request(&mut self, now: Instant, from: SocketAddr, req: Request, ports: &mut dyn MediaPorts) {
        // A retransmission of a request already answered gets the same answer again.
        if req.method != Method::Ack {
            if let Some(c) = tx_key(&req).and_then(|k| self.cache.get(&k)) {
                let data = c.data.clone();
                self.send(from, data);
                return;
            }
        }
        if self.is_proxied(now, &req) {
            return self.proxy_request(from, req);
        }
        let call_id = req.headers.call_id().unwrap_or_default().to_owned();
        let in_dialog = req.headers.to().ok().and_then(|t| t.tag().map(str::to_owned));
        match req.method {
            Method::Register => self.register(now, from, &req),
            Method::Invite if in_dialog.is_none() => self.invite(now, from, req, call_id, ports),
            Method::Invite | Method::Update => self.reoffer(now, from, &req, &call_id, ports),
            Method::Ack => self.ack(&req, &call_id),
            Method::Cancel => self.cancel(now, from, &req, &call_id, ports),
            Method::Bye => {
                if let Some(c) = self.calls.remove(&call_id) {
                    self.stop_media(&c);
                    self.pending.retain(|p| p.call_id != call_id);
                    self.simple(now, from, &req, 200, "OK");
                } else {
                    self.simple(now, from, &req, 481, "Call/Transaction Does Not Exist");
                }
            }
            Method::Options | Method::Message | Method::Info | Method::Prack => {
                let mut r = response_to(&req, 200, "OK");
                let tag = self.token();
                add_tag(&mut r, &tag);
                if req.method == Method::Options {
                    r.headers.push("Allow", ALLOW);
                    r.headers.push("Accept", "application/sdp");
                }
                self.reply(now, from, &req, r);
            }
            _ => {
                let mut r = response_to(&req, 405, "Method Not Allowed");
                let tag = self.token();
                add_tag(&mut r, &tag);
                r.headers.push("Allow", ALLOW);
                self.reply(now, from, &req, r);
            }
        }
    }

    fn on_response(&mut self, resp: Response) {
        // Only our BYEs are answered to us: any final response ends their retransmission.
        if resp.code >= 200 {
            if let Ok(id) = resp.headers.call_id() {
                self.pending.retain(|p| p.call_id != id);
            }
        }
    }

    fn register(&mut self, now: Instant, from: SocketAddr, req: &Request) {
        let mut r = response_to(req, 200, "OK");
        let tag = self.token();
        add_tag(&mut r, &tag);
        let default = req.headers.expires().ok().flatten().unwrap_or(3600);
        for contact in req.headers.get_all("Contact").flat_map(split_contacts) {
            if contact.trim() == "*" {
                if let Ok(star) = NameAddr::parse("<sip:unregister@invalid>") {
                    self.remember(now, req, &star, 0);
                }
                continue;
            }
            let Ok(mut na) = NameAddr::parse(contact.trim()) else { continue };
            let expires = na.param("expires").flatten().and_then(|e| e.parse().ok()).unwrap_or(default).min(3600);
            self.remember(now, req, &na, expires);
            if expires == 0 {
                continue;
            }
            na.set_param("expires", Some(&expires.to_string()));
            r.headers.push("Contact", na.to_string());
        }
        if let Some(to) = req.headers.get("To") {
            r.headers.push("P-Associated-URI", strip_tag(to));
        }
        self.reply(now, from, req, r);
    }

    fn invite(&mut self, now: Instant, from: SocketAddr, req: Request, call_id: String, ports: &mut dyn MediaPorts) {
        if self.calls.contains_key(&call_id) {
            // A retransmitted INVITE whose answer is still being retransmitted: send it again.
            let c = &self.calls[&call_id];
            let data = c.last_response.clone();
            self.send(from, data);
            return;
        }
        self.send(from, response_to(&req, 100, "Trying").to_bytes());
        let kind = match req.uri.user.as_deref().map(str::to_ascii_lowercase).as_deref() {
            Some("echo") => Kind::Echo,
            Some("tone") => Kind::Tone,
            Some("ring") => Kind::Ring,
            _ => return self.simple(now, from, &req, 404, "Not Found"),
        };
        if self.calls.len() >= MAX_CALLS {
            return self.simple(now, from, &req, 486, "Busy Here");
        }
        let local_tag = self.token();
        let mut call = Call {
            kind,
            state: State::Confirmed,
            peer: from,
            invite: req,
            last_response: Vec::new(),
            local_tag,
            port: None,
            video_port: None,
            awaiting_answer: false,
            session_id: self.rng.random::<u32>().into(),
            sdp_version: 1,
            ends_at: now + self.cfg.max_call,
            cseq: 1,
        };
        let mut ringing = response_to(&call.invite, 180, "Ringing");
        add_tag(&mut ringing, &call.local_tag);
        self.contact(&mut ringing, kind);
        call.last_response = ringing.to_bytes();
        self.send(from, call.last_response.clone());
        if kind == Kind::Ring {
            call.state = State::Ringing { until: now + self.cfg.ring_timeout };
            self.calls.insert(call_id, call);
            return;
        }
        match self.answer_body(&mut call, ports) {
            Ok((body, stream, video)) => {
                let behaviour = if kind == Kind::Tone { Behaviour::Tone } else { Behaviour::Echo };
                if let (Some(port), Some(stream)) = (call.port, stream) {
                    let media = CallMedia::new(behaviour, stream, self.rng.random(), now);
                    self.outputs.push_back(Output::MediaStart { port, media: Box::new(media), video });
                } else if let Some(port) = call.port {
                    // Delayed offer: media starts with the ACK's answer; until then echo
                    // nowhere (a tone waits for a destination).
                    let stream = Stream { remote: None, pt: 0, law: estuary_transcoder::Law::Mu, send: true };
                    let media = CallMedia::new(behaviour, stream, self.rng.random(), now);
                    self.outputs.push_back(Output::MediaStart { port, media: Box::new(media), video });
                }
                let mut ok = response_to(&call.invite, 200, "OK");
                add_tag(&mut ok, &call.local_tag);
                self.contact(&mut ok, kind);
                ok.headers.push("Content-Type", "application/sdp");
                ok.body = body.into_bytes();
                call.last_response = ok.to_bytes();
                call.state = State::Answered { next: now + self.cfg.t1, interval: self.cfg.t1, give_up: now + 64 * self.cfg.t1 };
                self.send(from, call.last_response.clone());
                self.calls.insert(call_id, call);
            }
            Err((code, reason, warning)) => {
                let mut r = response_to(&call.invite, code, reason);
                add_tag(&mut r, &call.local_tag);
                if let Some(w) = warning {
                    r.headers.push("Warning", format!("399 estuary-testpeer \"{w}\""));
                }
                self.cache_response(now, &call.invite, r.to_bytes());
                self.send(from, r.to_bytes());
            }
        }
    }

    /// The 200's SDP for the INVITE in `call`: the answer to its offer, or our offer when it
    /// had none. Opens the media port, and the video port when video is taken. The stream is
    /// `None` for a delayed offer.
    fn answer_body(&mut self, call: &mut Call, ports: &mut dyn MediaPorts) -> Result<(String, Option<Stream>, Option<VideoStart>), Refusal> {
        let offer = if call.invite.body.is_empty() { None } else { Some(sdp::parse(&call.invite.body).ok_or((400, "Bad Request", Some("unreadable SDP")))?) };
        let picked = match &offer {
            Some(lines) => Some(sdp::pick(lines).ok_or((488, "Not Acceptable Here", Some("the test peer speaks plain RTP with PCMU or PCMA only")))?),
            None => None,
        };
        let port = ports.open().ok_or((503, "Service Unavailable", Some("no media port")))?;
        call.port = Some(port);
        let local = sdp::Local { ip: self.cfg.media_ip, port, session_id: call.session_id, version: call.sdp_version, name: "Estuary built-in IMS test peer" };
        Ok(match (offer, picked) {
            (Some(lines), Some((i, pt, law))) => {
                let video = if call.kind == Kind::Echo { sdp::pick_video(&lines) } else { None };
                // No port for video is no reason to refuse the call: its video is refused.
                let video = video.and_then(|(v, codec)| Some((v, codec, ports.open()?)));
                let start = video.as_ref().map(|(v, codec, vport)| {
                    call.video_port = Some(*vport);
                    let echo = VideoEcho::new(lines[*v].video_stream(codec.pt), self.rng.random());
                    VideoStart { port: *vport, echo: Box::new(echo) }
                });
                let answer = video.as_ref().map(|(v, codec, vport)| sdp::VideoAnswer { line: *v, codec, port: *vport });
                (sdp::answer(&lines, i, pt, law, answer, &local), Some(lines[i].stream(pt, law)), start)
            }
            _ => {
                call.awaiting_answer = true;
                (sdp::offer(&local), None, None)
            }
        })
    }

    fn contact(&self, r: &mut Response, kind: Kind) {
        let user = match kind {
            Kind::Echo => "echo",
            Kind::Tone => "tone",
            Kind::Ring => "ring",
        };
        r.headers.push("Contact", format!("<sip:{user}@{}>", self.cfg.sip));
        r.headers.push("Allow", ALLOW);
        r.headers.push("Server", "Estuary built-in IMS test peer (test facility)");
    }

    fn ack(&mut self, req: &Request, call_id: &str) {
        let Some(c) = self.calls.get_mut(call_id) else { return };
        if !matches!(c.state, State::Answered { .. }) {
            return;
        }
        c.state = State::Confirmed;
        if c.awaiting_answer {
            c.awaiting_answer = false;
            let stream = sdp::parse(&req.body).and_then(|lines| {
                let (i, pt, law) = sdp::pick(&lines)?;
                Some(lines[i].stream(pt, law))
            });
            if let (Some(port), Some(stream)) = (c.port, stream) {
                // Our offer had no video, so its answer has none either.
                self.outputs.push_back(Output::MediaUpdate { port, stream, video: VideoUpdate::Unchanged });
            }
        }
    }

    fn reoffer(&mut self, now: Instant, from: SocketAddr, req: &Request, call_id: &str, ports: &mut dyn MediaPorts) {
        let Some(c) = self.calls.get_mut(call_id) else {
            return self.simple(now, from, req, 481, "Call/Transaction Does Not Exist");
        };
        let (Some(port), Some(lines)) = (c.port, sdp::parse(&req.body)) else {
            // No SDP (a session refresh): 200 without a body.
            let mut r = response_to(req, 200, "OK");
            add_tag(&mut r, &c.local_tag.clone());
            return self.reply(now, from, req, r);
        };
        let Some((i, pt, law)) = sdp::pick(&lines) else {
            let tag = c.local_tag.clone();
            let mut r = response_to(req, 488, "Not Acceptable Here");
            add_tag(&mut r, &tag);
            return self.reply(now, from, req, r);
        };
        c.sdp_version += 1;
        let local = sdp::Local { ip: self.cfg.media_ip, port, session_id: c.session_id, version: c.sdp_version, name: "Estuary built-in IMS test peer" };
        let offered = if c.kind == Kind::Echo { sdp::pick_video(&lines) } else { None };
        let (accepted, video) = match (offered, c.video_port) {
            // The video goes on on its port, with what this offer says.
            (Some((v, codec)), Some(vport)) => {
                let stream = lines[v].video_stream(codec.pt);
                (Some((v, codec, vport)), VideoUpdate::Stream(stream))
            }
            // Video added: a socket for it, or (none to be had) it is refused.
            (Some((v, codec)), None) => match ports.open() {
                Some(vport) => {
                    c.video_port = Some(vport);
                    let echo = VideoEcho::new(lines[v].video_stream(codec.pt), self.rng.random());
                    (Some((v, codec, vport)), VideoUpdate::Start(VideoStart { port: vport, echo: Box::new(echo) }))
                }
                None => (None, VideoUpdate::Unchanged),
            },
            // Video removed (port 0), no longer H.264, or the line gone: its echo stops.
            (None, Some(vport)) => {
                c.video_port = None;
                (None, VideoUpdate::Stop { port: vport })
            }
            (None, None) => (None, VideoUpdate::Unchanged),
        };
        let answer = accepted.as_ref().map(|(v, codec, vport)| sdp::VideoAnswer { line: *v, codec, port: *vport });
        let body = sdp::answer(&lines, i, pt, law, answer, &local);
        let kind = c.kind;
        let tag = c.local_tag.clone();
        let is_invite = req.method == Method::Invite;
        let mut ok = response_to(req, 200, "OK");
        add_tag(&mut ok, &tag);
        self.contact(&mut ok, kind);
        ok.headers.push("Content-Type", "application/sdp");
        ok.body = body.into_bytes();
        self.outputs.push_back(Output::MediaUpdate { port, stream: lines[i].stream(pt, law), video });
        if is_invite {
            // A re-INVITE's 200 is retransmitted until its ACK, like the first one.
            let data = ok.to_bytes();
            if let Some(c) = self.calls.get_mut(call_id) {
                c.last_response = data.clone();
                c.state = State::Answered { next: now + self.cfg.t1, interval: self.cfg.t1, give_up: now + 64 * self.cfg.t1 };
            }
            self.send(from, data);
        } else {
            self.reply(now, from, req, ok);
        }
    }

    fn cancel(&mut self, now: Instant, from: SocketAddr, req: &Request, call_id: &str, _ports: &mut dyn MediaPorts) {
        let branch = |r: &Request| r.headers.top_via().ok().and_then(|v| v.params.iter().find(|p| p.name.eq_ignore_ascii_case("branch")).and_then(|p| p.value.clone()));
        let matches = self.calls.get(call_id).is_some_and(|c| branch(&c.invite) == branch(req));
        if !matches {
            return self.simple(now, from, req, 481, "Call/Transaction Does Not Exist");
        }
        let ringing = self.calls.get(call_id).is_some_and(|c| matches!(c.state, State::Ringing { .. }));
        self.simple(now, from, req, 200, "OK");
        if ringing {
            // RFC 3261 §9.2: the INVITE is answered 487.
            if let Some(c) = self.calls.remove(call_id) {
                let mut r = response_to(&c.invite, 487, "Request Terminated");
                add_tag(&mut r, &c.local_tag);
                self.cache_response(now, &c.invite, r.to_bytes());
                self.send(c.peer, r.to_bytes());
                self.stop_media(&c);
            }
        }
    }

    fn stop_media(&mut self, c: &Call) {
        if let Some(port) = c.port {
            self.outputs.push_back(Output::MediaStop { port });
        }
    }

    /// The peer ends a call itself: BYE in the dialog (retransmitted until answered).
    fn hang_up(&mut self, now: Instant, call_id: &str) {
        let Some(mut c) = self.calls.remove(call_id) else { return };
        self.stop_media(&c);
        c.cseq += 1;
        let target = c
            .invite
            .headers
            .contacts()
            .ok()
            .and_then(|cs| cs.into_iter().find_map(|cv| match cv {
                estuary_sip::ContactValue::Addr(na) => Some(na.uri),
                _ => None,
            }))
            .unwrap_or_else(|| c.invite.uri.clone());
        let mut bye = Request::new(Method::Bye, target);
        let branch = format!("z9hG4bK{}", self.token());
        bye.headers.push("Via", format!("SIP/2.0/UDP {};branch={branch};rport", self.cfg.sip));
        bye.headers.push("Max-Forwards", "70");
        // The INVITE's Record-Route, in order, is the UAS's route set (RFC 3261 §12.1.1).
        for rr in c.invite.headers.get_all("Record-Route") {
            bye.headers.push("Route", rr);
        }
        if let Some(to) = c.invite.headers.get("To") {
            bye.headers.push("From", format!("{};tag={}", strip_tag(to), c.local_tag));
        }
        if let Some(from) = c.invite.headers.get("From") {
            bye.headers.push("To", from);
        }
        bye.headers.push("Call-ID", call_id);
        bye.headers.push("CSeq", format!("{} BYE", c.cseq));
        bye.headers.push("Reason", "SIP;cause=200;text=\"test peer call limit\"");
        let data = bye.to_bytes();
        self.send(c.peer, data.clone());
        self.pending.push(Pending {
            call_id: call_id.to_owned(),
            to: c.peer,
            data,
            next: now + self.cfg.t1,
            interval: self.cfg.t1,
            give_up: now + 64 * self.cfg.t1,
        });
    }
}

/// A refused INVITE: status, reason phrase, Warning text.
type Refusal = (u16, &'static str, Option<&'static str>);

const ALLOW: &str = "INVITE, ACK, CANCEL, BYE, OPTIONS, REGISTER, MESSAGE, INFO, UPDATE, PRACK";

/// Transaction key of a request for the response cache: top Via branch and method (ACK and
/// CANCEL share the INVITE's branch, so the method keeps them apart).
fn tx_key(req: &Request) -> Option<(String, String)> {
    let via = req.headers.top_via().ok()?;
    let branch = via.params.iter().find(|p| p.name.eq_ignore_ascii_case("branch"))?.value.clone()?;
    Some((branch, req.method.as_str().to_owned()))
}

fn add_tag(r: &mut Response, tag: &str) {
    for h in r.headers.iter_mut() {
        if h.is("To") && !h.value.contains(";tag=") {
            h.value = format!("{};tag={tag}", h.value);
        }
    }
}

fn strip_tag(value: &str) -> String {
    match value.find(";tag=") {
        Some(i) => value[..i].to_owned(),
        None => value.to_owned(),
    }
}

/// Contact header values split at top-level commas (not inside <> or quotes).
fn split_contacts(value: &str) -> Vec<&str> {
    let (mut out, mut start, mut angle, mut quote) = (Vec::new(), 0, false, false);
    for (i, ch) in value.char_indices() {
        match ch {
            '"' => quote = !quote,
            '<' if !quote => angle = true,
            '>' if !quote => angle = false,
            ',' if !quote && !angle => {
                out.push(&value[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(&value[start..]);
    out
}

/// The URI type the peer parses Request-URIs with (re-exported for drivers' tests).
pub type SipUri = Uri;
