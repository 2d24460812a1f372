//! The media thread's per-packet path as the daemon runs it: real loopback sockets, the mio
//! poller, `recvmmsg`/`sendmmsg` on the shared browser-facing port, `recvfrom`/`sendto` on the
//! call's IMS port, the shard, SRTP. A simulated browser (real STUN check, real DTLS client,
//! SRTP) and an IMS peer (plain RTP) on their own sockets.
//!
//! - No heap allocation per relayed packet once a call is up, in either direction.
//! - No lock shared between media threads: two threads keep relaying while this test holds
//!   every mutex their shared context has (the port pool, the per-source limits).

use std::net::UdpSocket as StdUdp;

use estuary_alloc_count::count;
use estuary_keys::KeySource;
use estuary_rtp::{Pt, RtpHeader, RtpPacket, SeqNo, Ssrc};
use estuary_sdp::{PortAllocator, SdpPolicy, SdpSession, Side};
use estuary_srtp::{DtlsEndpoint, DtlsEvent, DtlsRole, SrtpContext, SrtpProfile};
use stun_rs::attributes::ice::{IceControlling, Priority, UseCandidate};
use stun_rs::attributes::stun::{Fingerprint, MessageIntegrity, UserName};
use stun_rs::methods::BINDING;
use stun_rs::{HMACKey, MessageClass, MessageEncoderBuilder, StunMessageBuilder};

use super::*;
use crate::media::MediaHub;
use estuary_b2bua::ReleaseCause;
use estuary_core::{MediaPlane, MediaPlaneEvent};

const OFFER: &str = include_str!("../../../../conformance/sdp/cases/web-audio-g711/1-web-offer.sdp");
const PAYLOAD: [u8; 160] = [0x55; 160];
/// How long any one exchange may take before the test fails.
const LIMIT: Duration = Duration::from_secs(10);

/// The shared context of `threads` media threads, their ports from `first` up.
fn context(first: u16) -> Arc<Ctx> {
    context_with_events(first).0
}

/// As [`context`], with the engine's end of the event queue.
fn context_with_events(first: u16) -> (Arc<Ctx>, tokio::sync::mpsc::Receiver<Event>) {
    let mut cfg = estuary_config::Config::default();
    cfg.media.ports = estuary_config::PortRange { min: first, max: first + 199 };
    let (events, rx) = tokio::sync::mpsc::channel(64);
    let (_, shutdown) = tokio::sync::watch::channel(false);
    let records = crate::records::CallRecords::start(&Default::default()).unwrap();
    (Arc::new(Ctx::new(events, shutdown, &cfg, None, crate::recorder::Recorder::off(), records)), rx)
}

struct Ports {
    web: u16,
    ims: u16,
}

impl PortAllocator for Ports {
    fn web_port(&mut self) -> Option<u16> {
        Some(self.web)
    }
    fn ims_port(&mut self, i: usize) -> Option<u16> {
        Some(self.ims + 2 * i as u16)
    }
}

/// One call's far ends: a browser on the thread's shared port (or the call's own browser-facing
/// port), an IMS peer on the call's IMS port.
struct Call {
    id: u64,
    plan: MediaPlan,
    shared: SocketAddr,
    ims_local: SocketAddr,
    browser: StdUdp,
    dtls: DtlsEndpoint,
    tx: Option<SrtpContext>,
    rx: Option<SrtpContext>,
    ims: StdUdp,
    seq: u16,
    buf: Vec<u8>,
}

impl Call {
    /// Call `id` on the thread whose shared port is `shared`, with IMS port `ims_port`.
    fn new(id: u64, shared: SocketAddr, ims_port: u16, gw_cert: &Certificate) -> Call {
        let browser = StdUdp::bind("127.0.0.1:0").unwrap();
        let ims = StdUdp::bind("127.0.0.1:0").unwrap();
        for s in [&browser, &ims] {
            s.set_read_timeout(Some(Duration::from_millis(5))).unwrap();
        }
        let cert = Certificate::generate().unwrap();
        let offer: String = OFFER
            .lines()
            .map(|l| if l.starts_with("a=fingerprint:") { format!("a=fingerprint:{}\r\n", cert.fingerprint()) } else { format!("{l}\n") })
            .collect();
        let answer = format!(
            "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio {} RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n",
            ims.local_addr().unwrap().port()
        );
        let policy = SdpPolicy { fingerprint: estuary_sdp::Fingerprint::parse(&gw_cert.fingerprint().to_string()).unwrap(), ..SdpPolicy::default() };
        let mut sdp = SdpSession::new(policy, id, KeySource::os());
        sdp.offer(Side::Web, offer.as_bytes(), &mut Ports { web: shared.port(), ims: ims_port }).unwrap();
        sdp.answer(Side::Ims, answer.as_bytes()).unwrap();
        let plan = sdp.plan().unwrap().clone();
        let gw_fp = estuary_srtp::Fingerprint::parse(&gw_cert.fingerprint().to_string()).unwrap();
        let dtls = DtlsEndpoint::new(DtlsRole::Client, &cert, vec![gw_fp], &[SrtpProfile::Aes128CmSha1_80], Instant::now()).unwrap();
        let ims_local = SocketAddr::new(shared.ip(), ims_port);
        Call { id, plan, shared, ims_local, browser, dtls, tx: None, rx: None, ims, seq: 0, buf: vec![0; 2048] }
    }

    /// The browser's check with USE-CANDIDATE, until it is answered; `pump` runs the thread.
    fn nominate(&mut self, pump: &mut dyn FnMut()) {
        let web = &self.plan.web;
        let user = format!("{}:{}", web.local_ufrag, web.remote_ufrag.as_deref().unwrap());
        let msg = StunMessageBuilder::new(BINDING, MessageClass::Request)
            .with_attribute(UserName::new(user).unwrap())
            .with_attribute(Priority::new(0x6e00_01ff))
            .with_attribute(IceControlling::new(7))
            .with_attribute(UseCandidate::default())
            .with_attribute(MessageIntegrity::new(HMACKey::new_short_term(&web.local_pwd).unwrap()))
            .with_attribute(Fingerprint::default())
            .build();
        let mut check = vec![0u8; 512];
        let n = MessageEncoderBuilder::default().build().encode(&mut check, &msg).unwrap();
        let start = Instant::now();
        while start.elapsed() < LIMIT {
            self.browser.send_to(&check[..n], self.shared).unwrap();
            pump();
            if let Ok((m, _)) = self.browser.recv_from(&mut self.buf) {
                assert_eq!(self.buf[..2], [0x01, 0x01], "a Binding success response, got {:02x?}", &self.buf[..m.min(20)]);
                return;
            }
        }
        panic!("call {}: no answer to the browser's ICE check", self.id);
    }

    /// The browser's DTLS client handshake, until both ends have keys.
    fn handshake(&mut self, pump: &mut dyn FnMut()) {
        let start = Instant::now();
        while start.elapsed() < LIMIT {
            while let Some(o) = self.dtls.poll_output() {
                match o {
                    estuary_srtp::Output::Transmit(d) => {
                        self.browser.send_to(&d, self.shared).unwrap();
                    }
                    estuary_srtp::Output::Event(DtlsEvent::Connected { keys, .. }) => {
                        self.tx = Some(SrtpContext::new(keys.local(DtlsRole::Client)));
                        self.rx = Some(SrtpContext::new(keys.remote(DtlsRole::Client)));
                    }
                    estuary_srtp::Output::Event(_) => {}
                }
            }
            pump();
            if let Ok((n, _)) = self.browser.recv_from(&mut self.buf) {
                let _ = self.dtls.handle_input(Instant::now(), &self.buf[..n]);
            } else if self.tx.is_some() {
                // The gateway's last flight went out; it has its keys too.
                return;
            }
            if self.dtls.poll_timeout().is_some_and(|t| t <= Instant::now()) {
                self.dtls.handle_timeout(Instant::now());
            }
        }
        panic!("call {}: DTLS handshake did not finish", self.id);
    }

    /// Brings the call up on its thread: the plan (through `plan`), ICE, DTLS, and a first
    /// packet from the core so the gateway learns where to send.
    fn connect(&mut self, pump: &mut dyn FnMut()) {
        self.nominate(pump);
        self.handshake(pump);
        self.exchange(pump);
    }

    /// One packet each way: SRTP from the browser to the core, RTP from the core to the
    /// browser; both must come out right.
    fn send_both(&mut self) {
        self.seq = self.seq.wrapping_add(1);
        let mut pkt = rtp(self.seq, 0xB0B0_0000 + self.id as u32);
        self.tx.as_mut().unwrap().protect_rtp(&mut pkt).unwrap();
        self.browser.send_to(&pkt, self.shared).unwrap();
        let pkt = rtp(self.seq, 0x1315_0000 + self.id as u32);
        self.ims.send_to(&pkt, self.ims_local).unwrap();
    }

    /// Takes what arrived at both ends; whether each got its packet. A browser packet is
    /// decrypted and checked, a core packet parsed and checked.
    fn receive_both(&mut self, got: &mut [bool; 2]) {
        while let Ok((n, from)) = self.ims.recv_from(&mut self.buf) {
            assert_eq!(from, self.ims_local, "media to the core leaves from the call's IMS port");
            let p = RtpPacket::parse(&self.buf[..n]).expect("RTP toward the core");
            if p.pt() == Pt(0) {
                assert_eq!(p.payload(), &PAYLOAD[..]);
                got[0] = true;
            }
        }
        while let Ok((n, from)) = self.browser.recv_from(&mut self.buf) {
            assert_eq!(from, self.shared, "media to the browser leaves from the port the browser's checks went to");
            let mut pkt = self.buf[..n].to_vec();
            if estuary_rtp::classify(&pkt) != estuary_rtp::PacketKind::Rtp {
                continue;
            }
            self.rx.as_mut().unwrap().unprotect_rtp(&mut pkt).expect("the browser's SRTP key");
            assert_eq!(RtpPacket::parse(&pkt).unwrap().payload(), &PAYLOAD[..]);
            got[1] = true;
        }
    }

    /// One packet each way, both delivered; `pump` runs the thread.
    fn exchange(&mut self, pump: &mut dyn FnMut()) {
        self.send_both();
        let mut got = [false; 2];
        let start = Instant::now();
        while got != [true, true] {
            assert!(start.elapsed() < LIMIT, "call {}: packet {} not relayed both ways: {got:?}", self.id, self.seq);
            pump();
            self.receive_both(&mut got);
        }
    }
}

fn rtp(seq: u16, ssrc: u32) -> Vec<u8> {
    let mut buf = vec![0u8; 256];
    let h = RtpHeader { marker: false, pt: Pt(0), seq: SeqNo(seq), timestamp: u32::from(seq) * 160, ssrc: Ssrc(ssrc) };
    let n = h.write_with_payload(&PAYLOAD, &mut buf).unwrap();
    buf.truncate(n);
    buf
}

/// Two pairs from the pool: the thread's shared port and one call's IMS port.
fn two_ports(ctx: &Ctx) -> (SocketAddr, u16) {
    let (ports, err) = ctx.media_ports.bind(2, Instant::now());
    assert!(err.is_none() && ports.len() == 2, "media ports: {ports:?} {err:?}");
    (SocketAddr::from(([127, 0, 0, 1], ports[0])), ports[1])
}

#[test]
fn a_relayed_packet_allocates_nothing_on_the_media_thread() {
    relay_allocates_nothing(43000, WebPort::Shared);
}

#[test]
fn a_relayed_packet_allocates_nothing_with_per_call_ports() {
    relay_allocates_nothing(43200, WebPort::PerCall);
}

enum WebPort {
    Shared,
    PerCall,
}

/// Relays 300 packets each way through a media thread driven turn by turn on this thread,
/// counting this thread's allocations. `web`: the browser's port is the thread's shared one
/// (`recvmmsg`/`sendmmsg`), or the call's own (`recvfrom`/`sendto`).
fn relay_allocates_nothing(first_port: u16, web: WebPort) {
    let ctx = context(first_port);
    let (web_addr, ims_port) = two_ports(&ctx);
    let cert = Certificate::generate().unwrap();
    let mut call = Call::new(1, web_addr, ims_port, &cert);
    let shared = match web {
        WebPort::Shared => Some(web_addr),
        WebPort::PerCall => None,
    };
    let (mut thread, _handle) = MediaThread::new(0, shared, Arc::new(cert), MediaConfig::default(), ctx).unwrap();
    thread.plan(call.id, Box::new(call.plan.clone()));
    assert_eq!(thread.shard.len(), 1, "the call started on the thread");
    let mut events = Events::with_capacity(EVENTS);
    let mut turns = 0u64;
    {
        let mut pump = || {
            thread.turn(&mut events, Some(Duration::from_millis(2))).unwrap();
            turns += 1;
        };
        call.connect(&mut pump);
        // Warm-up: SRTP replay windows, rewriters and batches settle.
        for _ in 0..50 {
            call.exchange(&mut pump);
        }
    }
    // The measured packets: every turn's allocations, except a turn in which a timer or the
    // metrics flush was due (RTCP reports, consent: a few per second per call, not per packet).
    let (mut counted, mut allocations, mut skipped) = (0u32, 0usize, 0u32);
    for _ in 0..300 {
        call.send_both();
        let mut got = [false; 2];
        let start = Instant::now();
        while got != [true, true] {
            assert!(start.elapsed() < LIMIT, "packet {} not relayed both ways: {got:?}", call.seq);
            let due = thread.deadline();
            let n = count(|| {
                thread.turn(&mut events, Some(Duration::from_millis(2))).unwrap();
            });
            if due.is_some_and(|t| t <= Instant::now()) {
                skipped += 1;
            } else {
                allocations += n;
            }
            call.receive_both(&mut got);
        }
        counted += 1;
    }
    assert!(turns > 0 && skipped < 30, "{skipped} of the turns had a timer due: the measurement saw too little");
    assert_eq!(allocations, 0, "heap allocations while relaying {counted} packets each way ({skipped} timer turns not counted)");
}

/// Runs a media thread as the daemon does and passes `call`'s plan to it.
fn start(index: usize, ctx: &Arc<Ctx>, cert: &Arc<Certificate>) -> (ThreadHandle, Call) {
    let (shared, ims_port) = two_ports(ctx);
    let call = Call::new(index as u64 + 1, shared, ims_port, cert);
    let handle = spawn(index, Some(shared), cert.clone(), MediaConfig::default(), ctx.clone()).unwrap();
    handle.send(Command::Plan { call: call.id, plan: Box::new(call.plan.clone()) });
    (handle, call)
}

#[test]
fn media_threads_relay_while_every_shared_lock_is_held() {
    let ctx = context(43400);
    let cert = Arc::new(Certificate::generate().unwrap());
    let (a, mut call_a) = start(0, &ctx, &cert);
    let (b, mut call_b) = start(1, &ctx, &cert);
    let mut wait = || std::thread::sleep(Duration::from_millis(1));
    call_a.connect(&mut wait);
    call_b.connect(&mut wait);

    // From here on, nothing a media thread does per packet may need these.
    let ports = ctx.media_ports.hold();
    let sources = ctx.sources.hold_all();
    // Both threads at once: each call's far ends run on their own thread here.
    std::thread::scope(|s| {
        for call in [&mut call_a, &mut call_b] {
            s.spawn(move || {
                let mut wait = || std::thread::sleep(Duration::from_millis(1));
                for _ in 0..200 {
                    call.exchange(&mut wait);
                }
            });
        }
    });
    drop((ports, sources));
    for h in [a, b] {
        h.send(Command::Stop);
    }
}

#[test]
fn a_thread_that_cannot_go_on_fails_its_calls_and_returns_their_ports() {
    let (ctx, mut events) = context_with_events(43600);
    let (web_addr, ims_port) = two_ports(&ctx);
    let cert = Certificate::generate().unwrap();
    let call = Call::new(1, web_addr, ims_port, &cert);
    let (mut thread, _handle) = MediaThread::new(0, Some(web_addr), Arc::new(cert), MediaConfig::default(), ctx.clone()).unwrap();
    thread.plan(call.id, Box::new(call.plan.clone()));
    assert_eq!(thread.shard.len(), 1);
    thread.abandon("media thread 0 stopped: test");
    match events.try_recv() {
        Ok(Event::MediaFailed { call: 1, reason, cause: ReleaseCause::MediaBearerLoss }) => assert!(reason.contains("stopped"), "{reason}"),
        Ok(_) => panic!("another event than the call's failure"),
        Err(e) => panic!("the engine heard nothing: {e}"),
    }
    assert!(thread.shard.is_empty() && thread.calls.is_empty(), "the thread keeps nothing of the call");
    assert!(ctx.media_ports.take(call.ims_local).is_some(), "the call's IMS socket went back to the pool");
}

#[test]
fn a_plan_for_a_thread_that_is_gone_fails_the_call_and_the_next_calls_go_elsewhere() {
    let ctx = context(43800);
    let (web_addr, ims_port) = two_ports(&ctx);
    let cert = Certificate::generate().unwrap();
    let call = Call::new(1, web_addr, ims_port, &cert);
    let mut hub = MediaHub::start(2, &[], cert, MediaConfig::default(), ctx).unwrap();
    hub.stop_thread(0);
    let start = Instant::now();
    while hub.thread_alive(0) {
        assert!(start.elapsed() < LIMIT, "media thread 0 did not stop");
        std::thread::sleep(Duration::from_millis(1));
    }
    let now = Instant::now();
    hub.plan(now, 1, Box::new(call.plan.clone()));
    match hub.poll_event() {
        Some(MediaPlaneEvent::Failed { call: 1, cause: ReleaseCause::MediaBearerLoss, .. }) => {}
        other => panic!("the call should fail at once, got {other:?}"),
    }
    hub.plan(now, 2, Box::new(call.plan.clone()));
    assert_eq!(hub.poll_event(), None, "the next call went to the live thread");
    hub.end(now, 2);
}
