//! Several calls on one media shard sharing one browser-facing port, on a virtual clock:
//! simulated browsers (real STUN checks, real DTLS clients, SRTP) and an IMS peer, routed by
//! ICE ufrag and then by the address each browser's checks came from.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use estuary_alloc_count::allocations;
use estuary_keys::KeySource;
use estuary_media::shard::{MediaShard, ShardError, LENIENT_TICK};
use estuary_media::{Forward, MediaConfig, MediaEvent, MediaSession, Output};
use estuary_rtp::{Pt, RtpHeader, RtpPacket, SeqNo, Ssrc};
use estuary_sdp::{MediaPlan, PortAllocator, SdpPolicy, SdpSession, Side};
use estuary_srtp::{Certificate, DtlsEndpoint, DtlsEvent, DtlsRole, SrtpContext, SrtpProfile};
use stun_rs::attributes::ice::{IceControlling, Priority, UseCandidate};
use stun_rs::attributes::stun::{Fingerprint, MessageIntegrity, UserName};
use stun_rs::methods::BINDING;
use stun_rs::{HMACKey, MessageClass, MessageEncoderBuilder, StunMessageBuilder};

const OFFER: &str = include_str!("../../../conformance/sdp/cases/web-audio-g711/1-web-offer.sdp");
const IMS_ANSWER: &str = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 50000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n";
const SHARED: &str = "127.0.0.1:40000";
const IMS_PEER: &str = "127.0.0.1:50000";

/// Counts the allocations of the calling thread (the hot-path test below).
#[global_allocator]
static GLOBAL: estuary_alloc_count::Counting = estuary_alloc_count::Counting;

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

/// Every call's browser port is the shard's shared one; IMS ports are the call's own.
struct Ports {
    ims: u16,
}
impl PortAllocator for Ports {
    fn web_port(&mut self) -> Option<u16> {
        Some(40000)
    }
    fn ims_port(&mut self, i: usize) -> Option<u16> {
        Some(self.ims + 2 * i as u16)
    }
}

struct Browser {
    call: u64,
    addr: SocketAddr,
    dtls: DtlsEndpoint,
    tx: Option<SrtpContext>,
    rx: Option<SrtpContext>,
    plan: MediaPlan,
    ims_port: u16,
    sdp: SdpSession,
    cert: Certificate,
}

/// The browser's offer with its certificate's fingerprint and, for an ICE restart, new
/// credentials.
fn browser_offer(browser_cert: &Certificate, ice: Option<(&str, &str)>) -> String {
    OFFER
        .lines()
        .map(|l| match ice {
            _ if l.starts_with("a=fingerprint:") => format!("a=fingerprint:{}\r\n", browser_cert.fingerprint()),
            Some((u, _)) if l.starts_with("a=ice-ufrag:") => format!("a=ice-ufrag:{u}\r\n"),
            Some((_, p)) if l.starts_with("a=ice-pwd:") => format!("a=ice-pwd:{p}\r\n"),
            _ => format!("{l}\n"),
        })
        .collect()
}

fn plan_for(gw_cert: &Certificate, browser_cert: &Certificate, ims_port: u16) -> (SdpSession, MediaPlan) {
    let policy = SdpPolicy { fingerprint: estuary_sdp::Fingerprint::parse(&gw_cert.fingerprint().to_string()).unwrap(), ..SdpPolicy::default() };
    let mut sdp = SdpSession::new(policy, 1, KeySource::os());
    sdp.offer(Side::Web, browser_offer(browser_cert, None).as_bytes(), &mut Ports { ims: ims_port }).unwrap();
    sdp.answer(Side::Ims, IMS_ANSWER.as_bytes()).unwrap();
    let plan = sdp.plan().unwrap().clone();
    (sdp, plan)
}

struct World {
    now: Instant,
    shard: MediaShard,
    gw_cert: Certificate,
    browsers: Vec<Browser>,
    events: Vec<(u64, MediaEvent)>,
    /// Binding success responses the shard sent to each browser (by index).
    stun_to: Vec<usize>,
}

impl World {
    fn new() -> World {
        let now = Instant::now();
        World { now, shard: MediaShard::new(now, Some(addr(SHARED))), gw_cert: Certificate::generate().unwrap(), browsers: Vec::new(), events: Vec::new(), stun_to: Vec::new() }
    }

    fn add_call(&mut self, call: u64, browser_port: u16, ims_port: u16) -> Result<(), ShardError> {
        let browser_cert = Certificate::generate().unwrap();
        let (sdp, plan) = plan_for(&self.gw_cert, &browser_cert, ims_port);
        let session = MediaSession::new(MediaConfig::default(), &plan, &self.gw_cert, self.now, call).unwrap();
        self.shard.add_call(self.now, call, session)?;
        let gw_fp = estuary_srtp::Fingerprint::parse(&self.gw_cert.fingerprint().to_string()).unwrap();
        let dtls = DtlsEndpoint::new(DtlsRole::Client, &browser_cert, vec![gw_fp], &[SrtpProfile::Aes128CmSha1_80], self.now).unwrap();
        self.browsers.push(Browser { call, addr: SocketAddr::from(([127, 0, 0, 1], browser_port)), dtls, tx: None, rx: None, plan, ims_port, sdp, cert: browser_cert });
        self.stun_to.push(0);
        Ok(())
    }

    /// Browser `i` re-offers with new ICE credentials (an ICE restart); the settled plan.
    fn restart_ice(&mut self, i: usize) -> MediaPlan {
        let b = &mut self.browsers[i];
        let offer = browser_offer(&b.cert, Some(("Rs7x", "restartedPassword0123456")));
        b.sdp.offer(Side::Web, offer.as_bytes(), &mut Ports { ims: b.ims_port }).unwrap();
        b.sdp.answer(Side::Ims, IMS_ANSWER.as_bytes()).unwrap();
        b.sdp.plan().unwrap().clone()
    }

    /// Delivers the shard's outputs to the browsers.
    fn pump(&mut self) {
        while let Some((call, o)) = self.shard.poll_output() {
            match o {
                Output::Transmit { to, data, .. } => {
                    let Some(i) = self.browsers.iter().position(|b| b.addr == to) else { continue };
                    assert_eq!(self.browsers[i].call, call, "a datagram of call {call} went to another call's browser");
                    if data[..2] == [0x01, 0x01] {
                        // A Binding success response (errors are 0x0111).
                        self.stun_to[i] += 1;
                    } else if (20..64).contains(&data[0]) {
                        let _ = self.browsers[i].dtls.handle_input(self.now, &data);
                    }
                }
                Output::Event(e) => self.events.push((call, e)),
                Output::Tap { .. } | Output::Encoder { .. } => {}
            }
        }
    }

    /// Browser `i` sends a consent check (with USE-CANDIDATE) with credentials `ufrag`/`pwd`.
    fn check(&mut self, i: usize, ufrag: &str, pwd: &str) -> Option<u64> {
        let b = &self.browsers[i];
        let msg = StunMessageBuilder::new(BINDING, MessageClass::Request)
            .with_attribute(UserName::new(format!("{ufrag}:{}", b.plan.web.remote_ufrag.as_deref().unwrap())).unwrap())
            .with_attribute(Priority::new(0x6e00_01ff))
            .with_attribute(IceControlling::new(7))
            .with_attribute(UseCandidate::default())
            .with_attribute(MessageIntegrity::new(HMACKey::new_short_term(pwd).unwrap()))
            .with_attribute(Fingerprint::default())
            .build();
        let mut buf = vec![0u8; 512];
        let n = MessageEncoderBuilder::default().build().encode(&mut buf, &msg).unwrap();
        buf.truncate(n);
        let from = b.addr;
        let routed = self.shard.handle_datagram(self.now, addr(SHARED), from, &mut buf);
        self.pump();
        routed.call
    }

    fn nominate(&mut self, i: usize) {
        let (u, p) = (self.browsers[i].plan.web.local_ufrag.clone(), self.browsers[i].plan.web.local_pwd.clone());
        let before = self.stun_to[i];
        assert_eq!(self.check(i, &u, &p), Some(self.browsers[i].call));
        assert_eq!(self.stun_to[i], before + 1, "a Binding success response to browser {i}");
    }

    fn handshake(&mut self, i: usize) {
        for _ in 0..200 {
            let mut progressed = false;
            while let Some(o) = self.browsers[i].dtls.poll_output() {
                progressed = true;
                match o {
                    estuary_srtp::Output::Transmit(mut d) => {
                        let from = self.browsers[i].addr;
                        let r = self.shard.handle_datagram(self.now, addr(SHARED), from, &mut d);
                        assert_eq!(r.call, Some(self.browsers[i].call), "DTLS routed by the address the checks came from");
                    }
                    estuary_srtp::Output::Event(DtlsEvent::Connected { keys, .. }) => {
                        self.browsers[i].tx = Some(SrtpContext::new(keys.local(DtlsRole::Client)));
                        self.browsers[i].rx = Some(SrtpContext::new(keys.remote(DtlsRole::Client)));
                    }
                    estuary_srtp::Output::Event(_) => {}
                }
            }
            self.pump();
            let call = self.browsers[i].call;
            if self.browsers[i].tx.is_some() && self.events.iter().any(|(c, e)| *c == call && matches!(e, MediaEvent::DtlsConnected { .. })) {
                return;
            }
            if !progressed {
                let next = [self.browsers[i].dtls.poll_timeout(), self.shard.poll_timeout()].into_iter().flatten().min().unwrap();
                self.now = self.now.max(next);
                self.browsers[i].dtls.handle_timeout(self.now);
                self.shard.handle_timeout(self.now);
            }
        }
        panic!("handshake {i} did not finish: {:?}", self.events);
    }

    /// One SRTP packet from browser `i`; returns where the shard forwards it.
    fn browser_sends(&mut self, i: usize, seq: u16) -> (Option<u64>, Forward) {
        let mut pkt = rtp(seq, 0xB0B0_0000 + i as u32);
        pkt.reserve(64);
        self.browsers[i].tx.as_mut().unwrap().protect_rtp(&mut pkt).unwrap();
        let from = self.browsers[i].addr;
        let r = self.shard.handle_datagram(self.now, addr(SHARED), from, &mut pkt);
        (r.call, r.forward)
    }

    /// One RTP packet from the IMS peer to browser `i`'s IMS port; checks that browser `i`
    /// can decrypt what the shard sends on.
    fn ims_sends(&mut self, i: usize, seq: u16) {
        let mut pkt = rtp(seq, 0x1315_0000 + i as u32);
        pkt.reserve(64);
        let local = SocketAddr::from(([127, 0, 0, 1], self.browsers[i].ims_port));
        let r = self.shard.handle_datagram(self.now, local, addr(IMS_PEER), &mut pkt);
        assert_eq!(r.call, Some(self.browsers[i].call));
        assert_eq!(r.forward, Forward::Send { from: addr(SHARED), to: self.browsers[i].addr }, "from the shared port to browser {i}");
        self.browsers[i].rx.as_mut().unwrap().unprotect_rtp(&mut pkt).expect("browser's SRTP key");
        assert_eq!(RtpPacket::parse(&pkt).unwrap().payload(), &[0x55u8; 160][..]);
    }
}

fn rtp(seq: u16, ssrc: u32) -> Vec<u8> {
    let mut buf = vec![0u8; 1600];
    let h = RtpHeader { marker: false, pt: Pt(0), seq: SeqNo(seq), timestamp: u32::from(seq) * 160, ssrc: Ssrc(ssrc) };
    let n = h.write_with_payload(&[0x55; 160], &mut buf).unwrap();
    buf.truncate(n);
    buf
}

fn two_connected_calls() -> World {
    let mut w = World::new();
    w.add_call(1, 61000, 30000).unwrap();
    w.add_call(2, 61002, 30002).unwrap();
    for i in 0..2 {
        w.nominate(i);
        w.handshake(i);
    }
    w
}

#[test]
fn two_calls_share_one_browser_port_and_each_packet_reaches_its_own_call() {
    let mut w = two_connected_calls();
    for seq in 0..5 {
        for i in 0..2 {
            let (call, fwd) = w.browser_sends(i, 100 + seq);
            assert_eq!(call, Some(w.browsers[i].call));
            let ims = SocketAddr::from(([127, 0, 0, 1], w.browsers[i].ims_port));
            assert_eq!(fwd, Forward::Send { from: ims, to: addr(IMS_PEER) }, "browser {i}'s media leaves from its call's IMS port");
            w.ims_sends(i, 7 + seq);
        }
        w.now += Duration::from_millis(20);
    }
    for i in 0..2 {
        let c = w.shard.session(w.browsers[i].call).unwrap().counters();
        assert_eq!((c.web_to_ims, c.ims_to_web), (5, 5), "call {i}");
    }
    assert_eq!(w.shard.counters().unroutable, 0);
}

#[test]
fn what_no_call_owns_is_dropped_and_counted() {
    let mut w = two_connected_calls();
    // A source that never passed a check: its DTLS/SRTP goes nowhere, even if it copies a
    // browser's packet byte for byte.
    let mut pkt = rtp(1, 1);
    let r = w.shard.handle_datagram(w.now, addr(SHARED), addr("127.0.0.1:62000"), &mut pkt);
    assert_eq!((r.call, r.forward), (None, Forward::Consumed));
    // A check for a ufrag no call has.
    let b = &w.browsers[0];
    let (p, from) = (b.plan.web.local_pwd.clone(), b.addr);
    assert_eq!(w.check(0, "nobodys1", &p), None);
    // A check with the right ufrag but the wrong password reaches the call, which refuses it
    // (401): its source is not learned.
    w.browsers[0].addr = addr("127.0.0.1:62002");
    let u = w.browsers[0].plan.web.local_ufrag.clone();
    assert_eq!(w.check(0, &u, "wrong-password-wrong-password"), Some(1));
    w.browsers[0].addr = from;
    let mut pkt = rtp(2, 1);
    let r = w.shard.handle_datagram(w.now, addr(SHARED), addr("127.0.0.1:62002"), &mut pkt);
    assert_eq!(r.call, None, "a source whose check failed is not routed");
    // A datagram on a port no call has.
    let mut pkt = rtp(3, 1);
    assert_eq!(w.shard.handle_datagram(w.now, addr("127.0.0.1:39998"), addr(IMS_PEER), &mut pkt).call, None);
    assert_eq!(w.shard.counters().unroutable, 4);
}

#[test]
fn an_ended_call_leaves_every_route_and_the_other_goes_on() {
    let mut w = two_connected_calls();
    let ended = w.shard.end_call(w.now, 1).expect("call 1's session back, for its report");
    assert_eq!(ended.report().len(), 1);
    w.pump();
    assert_eq!(w.shard.len(), 1);
    let (call, fwd) = w.browser_sends(0, 500);
    assert_eq!((call, fwd), (None, Forward::Consumed), "browser 0's address is no longer routed");
    let mut pkt = rtp(9, 9);
    assert_eq!(w.shard.handle_datagram(w.now, addr("127.0.0.1:30000"), addr(IMS_PEER), &mut pkt).call, None);
    let (call, _) = w.browser_sends(1, 500);
    assert_eq!(call, Some(2));
    w.ims_sends(1, 600);
    // Its ufrag is free again; its ports too.
    let u = w.browsers[0].plan.web.local_ufrag.clone();
    let p = w.browsers[0].plan.web.local_pwd.clone();
    assert_eq!(w.check(0, &u, &p), None);
    w.add_call(3, 61004, 30000).unwrap();
}

/// A bug in one call's session must cost that call only: the driver catches the panic and
/// asks the shard which call it was in; the shard drops that call and every route to it.
#[test]
fn a_call_that_panics_is_abandoned_and_the_other_goes_on() {
    let mut w = two_connected_calls();
    w.shard.inject_faults(true);
    let mut pkt = estuary_media::shard::FAULT_TRIGGER.to_vec();
    let ims1 = SocketAddr::from(([127, 0, 0, 1], w.browsers[0].ims_port));
    let shard = &mut w.shard;
    let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| shard.handle_datagram(w.now, ims1, addr(IMS_PEER), &mut pkt)));
    assert!(caught.is_err(), "the fault hook panics");
    assert_eq!(w.shard.abandon_panicked(), Some(1));
    assert_eq!(w.shard.abandon_panicked(), None, "reported once");
    assert_eq!(w.shard.len(), 1);
    assert!(w.shard.session(1).is_none());
    let (call, fwd) = w.browser_sends(0, 700);
    assert_eq!((call, fwd), (None, Forward::Consumed), "no route to the abandoned call is left");
    let mut pkt = rtp(9, 9);
    assert_eq!(w.shard.handle_datagram(w.now, ims1, addr(IMS_PEER), &mut pkt).call, None);
    let (call, _) = w.browser_sends(1, 700);
    assert_eq!(call, Some(2));
    w.ims_sends(1, 701);
    // Without the hook the trigger is just a datagram.
    w.shard.inject_faults(false);
    let ims2 = SocketAddr::from(([127, 0, 0, 1], w.browsers[1].ims_port));
    let mut pkt = estuary_media::shard::FAULT_TRIGGER.to_vec();
    assert_eq!(w.shard.handle_datagram(w.now, ims2, addr(IMS_PEER), &mut pkt).call, Some(2));
    assert_eq!(w.shard.abandon_panicked(), None);
}

/// An ICE restart (a re-offer with new credentials) gives the call a new ufrag: the shared
/// port routes checks under it to the call, media goes on over the selected pair meanwhile,
/// and the old generation's checks still reach the call (which refuses them) until it ends.
#[test]
fn an_ice_restart_is_routed_by_its_new_ufrag() {
    let mut w = two_connected_calls();
    let old = (w.browsers[0].plan.web.local_ufrag.clone(), w.browsers[0].plan.web.local_pwd.clone());
    let plan = w.restart_ice(0);
    assert_ne!(plan.web.local_ufrag, old.0, "the answerer restarts too");
    w.shard.update_plan(w.now, 1, &plan).unwrap();
    w.pump();
    w.browsers[0].plan = plan;
    let (call, fwd) = w.browser_sends(0, 900);
    assert_eq!(call, Some(1));
    assert!(matches!(fwd, Forward::Send { .. }), "media flows on the selected pair during the restart");
    w.nominate(0);
    let answered = w.stun_to[0];
    assert_eq!(w.check(0, &old.0, &old.1), Some(1), "the old generation's checks reach their call");
    assert_eq!(w.stun_to[0], answered, "which refuses them");
    let (call, _) = w.browser_sends(0, 901);
    assert_eq!(call, Some(1));
    w.ims_sends(0, 902);
    let (u, p) = (w.browsers[0].plan.web.local_ufrag.clone(), w.browsers[0].plan.web.local_pwd.clone());
    w.shard.end_call(w.now, 1).unwrap();
    w.pump();
    assert_eq!(w.check(0, &u, &p), None, "the new ufrag leaves with the call");
    assert_eq!(w.check(0, &old.0, &old.1), None, "and the old one");
    let (call, _) = w.browser_sends(1, 903);
    assert_eq!(call, Some(2));
}

#[test]
fn a_clashing_ufrag_or_address_is_refused() {
    let mut w = World::new();
    w.add_call(1, 61000, 30000).unwrap();
    let plan = w.browsers[0].plan.clone();
    let again = MediaSession::new(MediaConfig::default(), &plan, &w.gw_cert, w.now, 5).unwrap();
    assert!(matches!(w.shard.add_call(w.now, 2, again), Err(ShardError::UfragClash(2))));
    assert!(matches!(w.add_call(1, 61002, 30002), Err(ShardError::Duplicate(1))));
    assert!(matches!(w.add_call(3, 61002, 30000), Err(ShardError::AddressTaken { call: 3, owner: 1, .. })));
    assert_eq!(w.shard.counters().ufrag_clashes, 1);
    assert_eq!(w.shard.len(), 1);
}

/// Idle calls (consent checks only, no media) wake the shard only for the deadlines their
/// protocols set: RTCP reports (about one per leg every 5 s) and the consent and inactivity
/// clocks, never on a polling tick.
#[test]
fn idle_calls_wake_the_shard_only_at_their_protocol_deadlines() {
    let mut w = two_connected_calls();
    let start = w.now;
    let mut wakes = 0;
    let mut next_checks = start + Duration::from_secs(5);
    while w.now < start + Duration::from_secs(30) {
        let due = w.shard.poll_timeout().expect("connected calls always have a deadline");
        assert!(due > w.now, "a deadline in the past was left armed");
        if due <= next_checks {
            w.now = due;
            w.shard.handle_timeout(w.now);
            wakes += 1;
        } else {
            w.now = next_checks;
            for i in 0..2 {
                let (u, p) = (w.browsers[i].plan.web.local_ufrag.clone(), w.browsers[i].plan.web.local_pwd.clone());
                w.check(i, &u, &p);
            }
            next_checks += Duration::from_secs(5);
        }
        w.pump();
    }
    assert!(!w.events.iter().any(|(_, e)| matches!(e, MediaEvent::Failed { .. })), "{:?}", w.events);
    // Two calls, two legs each, a report every 2.5-7.5 s: about 24 in 30 s; a timer that
    // polled every 20 ms would wake 1,500 times.
    eprintln!("{wakes} wakes in 30 s for 2 idle calls");
    assert!((8..=40).contains(&wakes), "{wakes} wakes in 30 s for 2 idle calls");
}

/// Many idle calls: their reports are spread over time, but the shard wakes on the
/// [`LENIENT_TICK`] grid for all of them together, not once per report.
#[test]
fn idle_calls_share_their_wake_ups() {
    const CALLS: usize = 24;
    let mut w = World::new();
    for i in 0..CALLS {
        w.add_call(i as u64 + 1, 61000 + 2 * i as u16, 30000 + 2 * i as u16).unwrap();
        w.nominate(i);
        w.handshake(i);
    }
    while w.shard.poll_output().is_some() {}
    let start = w.now;
    let span = Duration::from_secs(20);
    let (mut wakes, mut reports) = (0u32, 0u32);
    let mut next_checks = start + Duration::from_secs(5);
    while w.now < start + span {
        let due = w.shard.poll_timeout().expect("connected calls always have a deadline");
        if due <= next_checks {
            w.now = due;
            w.shard.handle_timeout(w.now);
            wakes += 1;
            while let Some((_, o)) = w.shard.poll_output() {
                // Only RTCP leaves on a timer once the calls are up.
                if let Output::Transmit { data, .. } = o {
                    assert!((200..=204).contains(&data[1]), "a timer sent something other than RTCP: {:02x?}", &data[..2]);
                    reports += 1;
                }
            }
        } else {
            w.now = next_checks;
            for i in 0..CALLS {
                let (u, p) = (w.browsers[i].plan.web.local_ufrag.clone(), w.browsers[i].plan.web.local_pwd.clone());
                w.check(i, &u, &p);
            }
            next_checks += Duration::from_secs(5);
        }
    }
    assert!(!w.events.iter().any(|(_, e)| matches!(e, MediaEvent::Failed { .. })), "{:?}", w.events);
    eprintln!("{wakes} wakes and {reports} reports in {span:?} for {CALLS} idle calls");
    // 24 calls, 2 legs, a report every 2.5-7.5 s (4.1 s on average): about 230 reports in
    // 20 s; the grid allows at most 80 wake-ups, one per report would be ~230.
    assert!(reports >= 150, "{reports} reports");
    let grid = (span.as_millis() / LENIENT_TICK.as_millis()) as u32;
    assert!(wakes <= grid, "{wakes} wakes for {reports} reports: not coalesced (at most {grid})");
    assert!(2 * wakes < reports, "{wakes} wakes for {reports} reports: not coalesced");
}

/// A wake-up runs a bounded number of due calls; the rest stay due, and run on the next.
#[test]
fn a_wake_up_runs_at_most_its_budget_of_calls() {
    let mut w = two_connected_calls();
    // Far enough that both calls have a report due.
    w.now += Duration::from_secs(10);
    assert!(w.shard.handle_timeout_within(w.now, 1), "one call due is left for the next wake-up");
    assert!(w.shard.poll_timeout().is_some_and(|t| t <= w.now), "the left call is still due");
    assert!(!w.shard.handle_timeout_within(w.now, 1), "the second wake-up runs the last one");
    assert!(w.shard.poll_timeout().is_some_and(|t| t > w.now));
}

/// The per-packet path through the shard (route, SRTP, rewrite, statistics, timer check)
/// allocates nothing once the calls are up (STYLE.md R14).
#[test]
fn relaying_through_the_shard_allocates_nothing_in_steady_state() {
    let mut w = two_connected_calls();
    // The first packets latch the IMS peer and start each stream's statistics.
    for i in 0..2 {
        w.browser_sends(i, 1);
        w.ims_sends(i, 1);
    }
    // Packets made (and protected) before the count starts, each with room for the tag.
    let mut web_in: Vec<(usize, Vec<u8>)> = Vec::new();
    let mut ims_in: Vec<(usize, Vec<u8>)> = Vec::new();
    for seq in 2..102u16 {
        for i in 0..2 {
            let mut p = rtp(seq, 0xB0B0_0000 + i as u32);
            p.reserve(64);
            w.browsers[i].tx.as_mut().unwrap().protect_rtp(&mut p).unwrap();
            web_in.push((i, p));
            let mut p = rtp(seq, 0x1315_0000 + i as u32);
            p.reserve(64);
            ims_in.push((i, p));
        }
    }
    let from: Vec<SocketAddr> = w.browsers.iter().map(|b| b.addr).collect();
    let ims: Vec<SocketAddr> = w.browsers.iter().map(|b| SocketAddr::from(([127, 0, 0, 1], b.ims_port))).collect();
    let (shared, peer) = (addr(SHARED), addr(IMS_PEER));
    let before = allocations();
    let mut sent = 0;
    for ((i, a), (j, b)) in web_in.iter_mut().zip(ims_in.iter_mut()) {
        w.now += Duration::from_millis(10);
        sent += usize::from(matches!(w.shard.handle_datagram(w.now, shared, from[*i], a).forward, Forward::Send { .. }));
        sent += usize::from(matches!(w.shard.handle_datagram(w.now, ims[*j], peer, b).forward, Forward::Send { .. }));
    }
    let allocated = allocations() - before;
    assert_eq!(sent, 400, "every packet relayed");
    assert_eq!(allocated, 0, "allocations while relaying 400 packets through the shard");
}
