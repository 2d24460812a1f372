//! A whole call's media on a virtual clock: a simulated browser (real STUN checks, a real DTLS
//! client with its own certificate, SRTP) and a simulated IMS peer, through one MediaSession
//! built from the plan the SDP engine settled.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use estuary_media::{Forward, MediaConfig, MediaEvent, MediaSession, Output};
use estuary_rtp::{Pt, RtpHeader, RtpPacket, SeqNo, Ssrc};
use estuary_sdp::{PortAllocator, SdpPolicy, SdpSession, Side, Suite};
use estuary_srtp::{Certificate, DtlsEndpoint, DtlsEvent, DtlsRole, SrtpContext, SrtpMasterKey, SrtpProfile};
use stun_rs::attributes::ice::{IceControlling, Priority, UseCandidate};
use stun_rs::attributes::stun::{Fingerprint, MessageIntegrity, UserName};
use stun_rs::methods::BINDING;
use stun_rs::{HMACKey, MessageClass, MessageEncoderBuilder, StunMessageBuilder};

const OFFER: &str = include_str!("../../../conformance/sdp/cases/web-audio-g711/1-web-offer.sdp");
const BROWSER: &str = "127.0.0.1:61000";
const IMS_PEER: &str = "127.0.0.1:50000";

struct Ports;
impl PortAllocator for Ports {
    fn web_port(&mut self) -> Option<u16> {
        Some(40000)
    }
    fn ims_port(&mut self, i: usize) -> Option<u16> {
        Some(30000 + 2 * i as u16)
    }
}

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

struct Call {
    now: Instant,
    session: MediaSession,
    browser_dtls: DtlsEndpoint,
    browser_tx: Option<SrtpContext>,
    browser_rx: Option<SrtpContext>,
    gw_ufrag: String,
    gw_pwd: String,
    web_ssrc: u32,
    ims_sdes: Option<(SrtpContext, SrtpContext)>,
    events: Vec<MediaEvent>,
    plan: estuary_sdp::MediaPlan,
}

/// The browser offers with `declared` as its fingerprint but runs DTLS with `actual`.
fn call(sdes: bool, declared: &Certificate, actual: &Certificate) -> Call {
    let gw_cert = Certificate::generate().unwrap();
    let mut policy = SdpPolicy {
        fingerprint: estuary_sdp::Fingerprint::parse(&gw_cert.fingerprint().to_string()).unwrap(),
        ..SdpPolicy::default()
    };
    if sdes {
        policy.ims.srtp = vec![Suite::AesCm128HmacSha1_80];
    }
    let offer: String = OFFER
        .lines()
        .map(|l| if l.starts_with("a=fingerprint:") { format!("a=fingerprint:{}\r\n", declared.fingerprint()) } else { format!("{l}\n") })
        .collect();
    let mut sdp = SdpSession::new(policy, 1);
    let ims_offer = sdp.offer(Side::Web, offer.as_bytes(), &mut Ports).unwrap();
    let mut answer = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 50000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n".to_owned();
    let mut ims_keys = None;
    if sdes {
        answer = answer.replace("RTP/AVP", "RTP/SAVP");
        let mut rng = rand::rng();
        let theirs = estuary_sdp::Crypto::generate(1, Suite::AesCm128HmacSha1_80, &mut rng);
        answer.push_str(&format!("a=crypto:{theirs}\r\n"));
        let ours = ims_offer.lines().find_map(|l| l.strip_prefix("a=crypto:")).unwrap();
        let ours = estuary_sdp::Crypto::parse(ours).unwrap();
        let p = SrtpProfile::Aes128CmSha1_80;
        // The IMS peer protects with its key and unprotects with ours.
        ims_keys = Some((
            SrtpContext::new(&SrtpMasterKey::from_concatenated(p, &theirs.keys[0].key_salt).unwrap()),
            SrtpContext::new(&SrtpMasterKey::from_concatenated(p, &ours.keys[0].key_salt).unwrap()),
        ));
    }
    sdp.answer(Side::Ims, answer.as_bytes()).unwrap();
    let plan = sdp.plan().unwrap().clone();
    let now = Instant::now();
    let session = MediaSession::new(MediaConfig::default(), &plan, &gw_cert, now, 9).unwrap();
    let gw_fp = estuary_srtp::Fingerprint::parse(&gw_cert.fingerprint().to_string()).unwrap();
    let browser_dtls = DtlsEndpoint::new(DtlsRole::Client, actual, vec![gw_fp], &[SrtpProfile::Aes128CmSha1_80], now).unwrap();
    Call {
        now,
        session,
        browser_dtls,
        browser_tx: None,
        browser_rx: None,
        gw_ufrag: plan.web.local_ufrag.clone(),
        gw_pwd: plan.web.local_pwd.clone(),
        web_ssrc: plan.streams[0].web_ssrc,
        ims_sdes: ims_keys,
        events: Vec::new(),
        plan,
    }
}

impl Call {
    fn web(&self) -> SocketAddr {
        addr("127.0.0.1:40000")
    }

    /// Deliver the session's outputs: datagrams to the browser go into its DTLS endpoint (STUN
    /// answers are only counted), events are collected.
    fn pump(&mut self) -> usize {
        let mut stun = 0;
        while let Some(o) = self.session.poll_output() {
            match o {
                Output::Transmit { to, data, .. } => {
                    assert_eq!(to, addr(BROWSER));
                    if data[0] < 4 {
                        stun += 1;
                    } else {
                        let _ = self.browser_dtls.handle_input(self.now, &data);
                    }
                }
                Output::Event(e) => self.events.push(e),
            }
        }
        stun
    }

    fn nominate(&mut self) {
        let b = StunMessageBuilder::new(BINDING, MessageClass::Request)
            .with_attribute(UserName::new(format!("{}:Qk8c", self.gw_ufrag)).unwrap())
            .with_attribute(Priority::new(0x6e00_01ff))
            .with_attribute(IceControlling::new(7))
            .with_attribute(UseCandidate::default())
            .with_attribute(MessageIntegrity::new(HMACKey::new_short_term(&self.gw_pwd).unwrap()))
            .with_attribute(Fingerprint::default());
        let mut buf = vec![0u8; 512];
        let n = MessageEncoderBuilder::default().build().encode(&mut buf, &b.build()).unwrap();
        buf.truncate(n);
        let web = self.web();
        assert_eq!(self.session.handle_datagram(self.now, web, addr(BROWSER), &mut buf), Forward::Consumed);
        assert_eq!(self.pump(), 1, "one Binding success response");
    }

    fn session_has_output(&mut self) -> bool {
        // Outputs are drained by pump(); whether any exist is what matters here.
        let mut held = Vec::new();
        while let Some(o) = self.session.poll_output() {
            held.push(o);
        }
        let any = !held.is_empty();
        for o in held {
            match o {
                Output::Transmit { to, data, .. } => {
                    assert_eq!(to, addr(BROWSER));
                    if data[0] >= 4 {
                        let _ = self.browser_dtls.handle_input(self.now, &data);
                    }
                }
                Output::Event(e) => self.events.push(e),
            }
        }
        any
    }

    /// Run the DTLS handshake (browser as client) to completion or failure.
    fn handshake(&mut self) {
        for _ in 0..200 {
            let mut progressed = false;
            while let Some(o) = self.browser_dtls.poll_output() {
                progressed = true;
                match o {
                    estuary_srtp::Output::Transmit(d) => {
                        let mut buf = d;
                        let web = self.web();
                        self.session.handle_datagram(self.now, web, addr(BROWSER), &mut buf);
                    }
                    estuary_srtp::Output::Event(DtlsEvent::Connected { keys, .. }) => {
                        self.browser_tx = Some(SrtpContext::new(keys.local(DtlsRole::Client)));
                        self.browser_rx = Some(SrtpContext::new(keys.remote(DtlsRole::Client)));
                    }
                    estuary_srtp::Output::Event(_) => {}
                }
            }
            progressed |= self.session_has_output();
            self.pump();
            if self.browser_tx.is_some() && self.events.iter().any(|e| matches!(e, MediaEvent::DtlsConnected { .. })) {
                return;
            }
            if self.events.iter().any(|e| matches!(e, MediaEvent::Failed { .. })) {
                return;
            }
            if progressed {
                continue;
            }
            let next = [self.browser_dtls.poll_timeout(), self.session.poll_timeout()].into_iter().flatten().min().unwrap();
            self.now = self.now.max(next);
            self.browser_dtls.handle_timeout(self.now);
            self.session.handle_timeout(self.now);
        }
        panic!("handshake did not finish: {:?}", self.events);
    }
}

fn rtp(pt: u8, seq: u16, ssrc: u32, payload: &[u8]) -> Vec<u8> {
    let mut buf = vec![0u8; 1600];
    let h = RtpHeader { marker: false, pt: Pt(pt), seq: SeqNo(seq), timestamp: u32::from(seq) * 160, ssrc: Ssrc(ssrc) };
    let n = h.write_with_payload(payload, &mut buf).unwrap();
    buf.truncate(n);
    buf
}

fn connected(sdes: bool) -> Call {
    let cert = Certificate::generate().unwrap();
    let mut c = call(sdes, &cert, &cert);
    c.nominate();
    assert!(c.events.contains(&MediaEvent::IceConnected { remote: addr(BROWSER) }), "{:?}", c.events);
    c.handshake();
    assert!(c.browser_tx.is_some(), "{:?}", c.events);
    c
}

fn relay_both_ways(c: &mut Call) {
    let voice = [0x55u8; 160];
    // Browser -> IMS: SRTP in, RTP (or SDES-SRTP) out, PT kept (PCMU passthrough), SSRC ours.
    for seq in 100..105u16 {
        let mut pkt = rtp(0, seq, 0xB0B0_0001, &voice);
        pkt.reserve(64);
        c.browser_tx.as_mut().unwrap().protect_rtp(&mut pkt).unwrap();
        let web = c.web();
        let f = c.session.handle_datagram(c.now, web, addr(BROWSER), &mut pkt);
        assert_eq!(f, Forward::Send { from: addr("127.0.0.1:30000"), to: addr(IMS_PEER) }, "{:?} {:?}", c.session.counters(), c.events);
        if let Some((_, rx)) = c.ims_sdes.as_mut() {
            rx.unprotect_rtp(&mut pkt).expect("SDES-protected toward IMS with the gateway's key");
        }
        let p = RtpPacket::parse(&pkt).unwrap();
        assert_eq!((p.pt(), p.payload()), (Pt(0), &voice[..]));
        assert_ne!(p.ssrc(), Ssrc(0xB0B0_0001), "the IMS leg sees the gateway's SSRC");
        c.now += Duration::from_millis(20);
    }
    // IMS -> browser.
    for seq in 7..12u16 {
        let mut pkt = rtp(0, seq, 0x1315_0001, &voice);
        if let Some((tx, _)) = c.ims_sdes.as_mut() {
            pkt.reserve(64);
            tx.protect_rtp(&mut pkt).unwrap();
        }
        pkt.reserve(64);
        let f = c.session.handle_datagram(c.now, addr("127.0.0.1:30000"), addr(IMS_PEER), &mut pkt);
        assert_eq!(f, Forward::Send { from: addr("127.0.0.1:40000"), to: addr(BROWSER) }, "{:?}", c.session.counters());
        c.browser_rx.as_mut().unwrap().unprotect_rtp(&mut pkt).expect("DTLS-SRTP toward the browser");
        let p = RtpPacket::parse(&pkt).unwrap();
        assert_eq!((p.pt(), p.ssrc(), p.payload()), (Pt(0), Ssrc(c.web_ssrc), &voice[..]));
        c.now += Duration::from_millis(20);
    }
    assert_eq!((c.session.counters().web_to_ims, c.session.counters().ims_to_web), (5, 5));
}

#[test]
fn media_flows_both_ways_after_ice_and_dtls() {
    let mut c = connected(false);
    relay_both_ways(&mut c);
}

#[test]
fn sdes_srtp_toward_ims() {
    let mut c = connected(true);
    relay_both_ways(&mut c);
}

#[test]
fn nothing_is_taken_before_consent_and_keys() {
    let cert = Certificate::generate().unwrap();
    let mut c = call(false, &cert, &cert);
    let mut pkt = rtp(0, 1, 1, &[0; 160]);
    let web = c.web();
    assert_eq!(c.session.handle_datagram(c.now, web, addr(BROWSER), &mut pkt), Forward::Consumed);
    assert_eq!(c.session.counters().dropped_no_consent, 1);
    // IMS media before the browser is reachable is not sent anywhere.
    let mut pkt = rtp(0, 1, 1, &[0; 160]);
    assert_eq!(c.session.handle_datagram(c.now, addr("127.0.0.1:30000"), addr(IMS_PEER), &mut pkt), Forward::Consumed);
    assert_eq!(c.session.counters().dropped_no_keys, 1);
}

#[test]
fn a_certificate_that_does_not_match_the_sdp_fingerprint_ends_the_call() {
    let declared = Certificate::generate().unwrap();
    let impostor = Certificate::generate().unwrap();
    let mut c = call(false, &declared, &impostor);
    c.nominate();
    c.handshake();
    let failed = c.events.iter().find_map(|e| match e {
        MediaEvent::Failed { reason, .. } => Some(reason.clone()),
        _ => None,
    });
    assert!(failed.as_deref().is_some_and(|r| r.contains("fingerprint")), "{:?}", c.events);
    assert!(!c.events.iter().any(|e| matches!(e, MediaEvent::DtlsConnected { .. })));
}

#[test]
fn silence_beyond_the_inactivity_timeout_ends_the_call() {
    let mut c = connected(false);
    relay_both_ways(&mut c);
    // Consent checks keep ICE alive; no media flows. The call ends at 60 s of silence, not
    // before.
    let last_media = c.now - Duration::from_millis(20);
    let failed = |c: &Call| c.events.iter().any(|e| matches!(e, MediaEvent::Failed { cause: estuary_media::FailCause::Inactivity, reason } if reason.contains("no media")));
    while !failed(&c) {
        assert!(c.now < last_media + Duration::from_secs(61), "no failure after 60 s: {:?}", c.events);
        c.now += Duration::from_secs(5);
        c.nominate();
        c.session.handle_timeout(c.now);
        c.pump();
    }
    assert!(c.now >= last_media + Duration::from_secs(60), "failed too early: {:?}", c.events);
}

#[test]
fn hold_suspends_the_inactivity_timeout_and_resume_restarts_it() {
    let mut c = connected(false);
    relay_both_ways(&mut c);
    let mut held = c.plan.clone();
    for st in &mut held.streams {
        st.web_direction = estuary_sdp::Direction::Inactive;
        st.ims_direction = estuary_sdp::Direction::Inactive;
    }
    c.session.update_plan(&held, c.now).unwrap();
    // Ten minutes on hold with consent kept: no failure, and no deadline in the past (a
    // driver would spin on one).
    for _ in 0..120 {
        c.now += Duration::from_secs(5);
        c.nominate();
        c.session.handle_timeout(c.now);
        c.pump();
        assert!(c.session.poll_timeout().is_none_or(|t| t > c.now), "deadline in the past on hold");
    }
    assert!(!c.events.iter().any(|e| matches!(e, MediaEvent::Failed { .. })), "{:?}", c.events);
    // Resumed: the silence counts from the resume, so the call ends 60 s later, not at once.
    let resumed = c.now;
    c.session.update_plan(&c.plan.clone(), c.now).unwrap();
    let failed = |c: &Call| c.events.iter().any(|e| matches!(e, MediaEvent::Failed { cause: estuary_media::FailCause::Inactivity, reason } if reason.contains("no media")));
    while !failed(&c) {
        assert!(c.now < resumed + Duration::from_secs(61), "no failure after resume: {:?}", c.events);
        c.now += Duration::from_secs(5);
        c.nominate();
        c.session.handle_timeout(c.now);
        c.pump();
    }
    assert!(c.now >= resumed + Duration::from_secs(60), "failed too early after resume: {:?}", c.events);
}
