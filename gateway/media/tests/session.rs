//! A whole call's media on a virtual clock: a simulated browser (real STUN checks, a real DTLS
//! client with its own certificate, SRTP) and a simulated IMS peer, through one MediaSession
//! built from the plan the SDP engine settled.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use estuary_keys::KeySource;
use estuary_media::{EncoderRequest, Forward, Leg, MediaConfig, MediaEvent, MediaSession, Output, Transcoded};
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
    /// RTCP the gateway sent toward IMS: (destination, datagram as sent).
    rtcp_to_ims: Vec<(SocketAddr, Vec<u8>)>,
    /// RTCP the gateway sent toward the browser, SRTCP-unprotected by the browser.
    rtcp_to_web: Vec<Vec<u8>>,
    /// Plaintext copies for the recorder (MediaConfig::tap).
    taps: Vec<(Leg, Vec<u8>)>,
    /// Requests for the transcoder's encoders.
    encoder: Vec<(usize, Leg, EncoderRequest)>,
}

const AUDIO_ANSWER: &str = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 50000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n";

/// The browser offers with `declared` as its fingerprint but runs DTLS with `actual`.
fn call(sdes: bool, declared: &Certificate, actual: &Certificate) -> Call {
    call_with(OFFER, AUDIO_ANSWER, sdes, declared, actual)
}

/// A call from the browser `offer` (its fingerprint replaced by `declared`'s) that IMS
/// answers with `ims_answer`.
fn call_with(offer: &str, ims_answer: &str, sdes: bool, declared: &Certificate, actual: &Certificate) -> Call {
    call_with_cfg(MediaConfig::default(), offer, ims_answer, sdes, declared, actual)
}

fn call_with_cfg(cfg: MediaConfig, offer: &str, ims_answer: &str, sdes: bool, declared: &Certificate, actual: &Certificate) -> Call {
    call_with_policy(cfg, |_| {}, offer, ims_answer, sdes, declared, actual)
}

fn call_with_policy(
    cfg: MediaConfig,
    adjust: impl FnOnce(&mut SdpPolicy),
    offer: &str,
    ims_answer: &str,
    sdes: bool,
    declared: &Certificate,
    actual: &Certificate,
) -> Call {
    let gw_cert = Certificate::generate().unwrap();
    let mut policy = SdpPolicy {
        fingerprint: estuary_sdp::Fingerprint::parse(&gw_cert.fingerprint().to_string()).unwrap(),
        ..SdpPolicy::default()
    };
    adjust(&mut policy);
    if sdes {
        policy.ims.srtp = vec![Suite::AesCm128HmacSha1_80];
    }
    let offer: String = offer
        .lines()
        .map(|l| if l.starts_with("a=fingerprint:") { format!("a=fingerprint:{}\r\n", declared.fingerprint()) } else { format!("{l}\n") })
        .collect();
    let mut sdp = SdpSession::new(policy, 1, KeySource::os());
    let ims_offer = sdp.offer(Side::Web, offer.as_bytes(), &mut Ports).unwrap();
    let mut answer = ims_answer.to_owned();
    let mut ims_keys = None;
    if sdes {
        answer = answer.replace("RTP/AVP", "RTP/SAVP");
        let theirs = estuary_sdp::Crypto::generate(1, Suite::AesCm128HmacSha1_80, &mut KeySource::os());
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
    let session = MediaSession::new(cfg, &plan, &gw_cert, now, 9).unwrap();
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
        rtcp_to_ims: Vec::new(),
        rtcp_to_web: Vec::new(),
        taps: Vec::new(),
        encoder: Vec::new(),
    }
}

impl Call {
    fn web(&self) -> SocketAddr {
        addr("127.0.0.1:40000")
    }

    /// Deliver the session's outputs: DTLS to the browser goes into its DTLS endpoint, STUN
    /// answers are only counted, RTCP is collected per leg, events too.
    fn pump(&mut self) -> usize {
        let mut stun = 0;
        while let Some(o) = self.session.poll_output() {
            stun += usize::from(self.deliver(o));
        }
        stun
    }

    /// One output; true if it was a STUN message to the browser.
    fn deliver(&mut self, o: Output) -> bool {
        match o {
            Output::Transmit { from, to, mut data } => {
                if to != addr(BROWSER) {
                    assert_ne!(from, self.web(), "toward IMS from an IMS port");
                    self.rtcp_to_ims.push((to, data));
                } else if data[0] < 4 {
                    return true;
                } else if (128..192).contains(&data[0]) {
                    let rx = self.browser_rx.as_mut().expect("RTCP to the browser only after DTLS");
                    rx.unprotect_rtcp(&mut data).expect("SRTCP the browser can authenticate");
                    self.rtcp_to_web.push(data);
                } else {
                    let _ = self.browser_dtls.handle_input(self.now, &data);
                }
            }
            Output::Event(e) => self.events.push(e),
            Output::Tap { leg, data, .. } => self.taps.push((leg, data)),
            Output::Encoder { stream, to, request } => self.encoder.push((stream, to, request)),
        }
        false
    }

    fn nominate(&mut self) {
        self.check(true);
    }

    /// A connectivity check from the browser, nominating or not (regular nomination, as
    /// browsers use toward a lite agent, checks first and nominates after).
    fn check(&mut self, use_candidate: bool) {
        let mut b = StunMessageBuilder::new(BINDING, MessageClass::Request)
            .with_attribute(UserName::new(format!("{}:{}", self.gw_ufrag, self.plan.web.remote_ufrag.as_deref().unwrap())).unwrap())
            .with_attribute(Priority::new(0x6e00_01ff))
            .with_attribute(IceControlling::new(7));
        if use_candidate {
            b = b.with_attribute(UseCandidate::default());
        }
        let b = b
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
        let mut any = false;
        while let Some(o) = self.session.poll_output() {
            any = true;
            self.deliver(o);
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

/// Five packets each way; returns the SSRC the gateway uses toward IMS.
fn relay_both_ways(c: &mut Call) -> Ssrc {
    let mut gw_ims_ssrc = Ssrc(0);
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
        gw_ims_ssrc = p.ssrc();
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
    gw_ims_ssrc
}

#[test]
fn media_flows_both_ways_after_ice_and_dtls() {
    let mut c = connected(false);
    relay_both_ways(&mut c);
    // The call's record: each leg's packets in and out, no loss, the codec on each side.
    let report = c.session.report();
    assert_eq!(report.len(), 1, "{report:?}");
    let r = &report[0];
    assert_eq!((r.kind.as_str(), r.web_codec.as_str(), r.ims_codec.as_str(), r.transcoded), ("audio", "PCMU/8000", "PCMU/8000", false));
    for leg in [&r.web, &r.ims] {
        assert_eq!((leg.received, leg.lost, leg.sent, leg.sent_octets), (5, 0, 5, 800), "{r:?}");
    }
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

/// RFC 8445 §12.1: data may flow on a valid pair before one is nominated. A browser whose
/// check succeeded starts DTLS at once; its handshake must be answered on that pair, not
/// after a retransmission once it nominates.
#[test]
fn dtls_is_answered_on_a_checked_pair_before_nomination() {
    let cert = Certificate::generate().unwrap();
    let mut c = call(false, &cert, &cert);
    c.check(false);
    assert!(!c.events.iter().any(|e| matches!(e, MediaEvent::IceConnected { .. })), "not nominated yet");
    let start = c.now;
    c.handshake();
    assert!(c.browser_tx.is_some(), "{:?}", c.events);
    assert_eq!(c.now, start, "the handshake needed no retransmission");
    // Nomination then selects the pair media flows on.
    c.nominate();
    assert!(c.events.contains(&MediaEvent::IceConnected { remote: addr(BROWSER) }), "{:?}", c.events);
    relay_both_ways(&mut c);
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

// ----- RTCP per leg ---------------------------------------------------------------------------

use estuary_rtp::rtcp::{write, Compound, FirEntry, RtcpPacket, SenderInfo};
use estuary_rtp::NtpTime;

impl Call {
    /// Run the clock for `d` in 250 ms steps (timers only; consent lasts 30 s by default).
    fn run_for(&mut self, d: Duration) {
        let end = self.now + d;
        while self.now < end {
            self.now += Duration::from_millis(250);
            self.session.handle_timeout(self.now);
            self.pump();
        }
    }

    /// An RTCP compound from the browser, SRTCP-protected, into the session.
    fn browser_rtcp(&mut self, mut plain: Vec<u8>) {
        plain.reserve(64);
        self.browser_tx.as_mut().unwrap().protect_rtcp(&mut plain).unwrap();
        let web = self.web();
        assert_eq!(self.session.handle_datagram(self.now, web, addr(BROWSER), &mut plain), Forward::Consumed);
        self.pump();
    }

    /// An RTCP compound from the IMS peer at `from` to our port `local` (plain RTCP).
    fn ims_rtcp(&mut self, local: &str, from: &str, mut plain: Vec<u8>) {
        plain.reserve(64);
        assert_eq!(self.session.handle_datagram(self.now, addr(local), addr(from), &mut plain), Forward::Consumed);
        self.pump();
    }
}

/// The packets of a plaintext compound, in order.
fn packets(buf: &[u8]) -> Vec<RtcpPacket<'_>> {
    Compound::new(buf).map(|p| p.expect("well-formed RTCP from the gateway")).collect()
}

/// Every SSRC a compound mentions: senders, report block subjects, SDES chunks, feedback
/// targets.
fn ssrcs_in(buf: &[u8]) -> Vec<Ssrc> {
    let mut v = Vec::new();
    for p in packets(buf) {
        match p {
            RtcpPacket::SenderReport(sr) => {
                v.push(sr.ssrc());
                v.extend(sr.report_blocks().map(|b| b.ssrc));
            }
            RtcpPacket::ReceiverReport(rr) => {
                v.push(rr.ssrc());
                v.extend(rr.report_blocks().map(|b| b.ssrc));
            }
            RtcpPacket::Sdes(sdes) => v.extend(sdes.cname().map(|c| c.0)),
            RtcpPacket::Pli(p) => v.extend([p.sender, p.media]),
            RtcpPacket::Fir(f) => {
                v.push(f.sender);
                v.extend(f.entries().map(|e| e.ssrc));
            }
            RtcpPacket::Nack(n) => v.extend([n.sender, n.media]),
            _ => {}
        }
    }
    v
}

/// The last compound in `list` that starts with an SR.
fn last_sr(list: &[Vec<u8>]) -> Option<&Vec<u8>> {
    list.iter().rev().find(|b| matches!(packets(b).first(), Some(RtcpPacket::SenderReport(_))))
}

fn each_leg_reports_what_it_exchanged(sdes: bool) {
    let mut c = connected(sdes);
    let gw_ims_ssrc = relay_both_ways(&mut c);
    c.run_for(Duration::from_secs(8));

    // IMS leg: to RTP port + 1 (no rtcp-mux), SRTCP with the gateway's SDES key if SRTP.
    let mut to_ims = Vec::new();
    for (to, data) in &c.rtcp_to_ims {
        assert_eq!(*to, addr("127.0.0.1:50001"), "RTCP to the IMS RTP port + 1");
        let mut data = data.clone();
        if let Some((_, rx)) = c.ims_sdes.as_mut() {
            rx.unprotect_rtcp(&mut data).expect("SRTCP with the gateway's SDES key");
        }
        to_ims.push(data);
    }
    let sr = last_sr(&to_ims).unwrap_or_else(|| panic!("an SR toward IMS: {:?}", c.session.counters()));
    let p = packets(sr);
    let RtcpPacket::SenderReport(r) = p[0] else { unreachable!() };
    assert_eq!((r.ssrc(), r.info().packet_count, r.info().octet_count), (gw_ims_ssrc, 5, 5 * 160));
    let blocks: Vec<_> = r.report_blocks().collect();
    assert_eq!(blocks.len(), 1, "one block, about the IMS peer's stream");
    assert_eq!((blocks[0].ssrc, blocks[0].ext_highest_seq, blocks[0].cumulative_lost), (Ssrc(0x1315_0001), 11, 0));
    assert!(matches!(p[1], RtcpPacket::Sdes(sd) if sd.cname() == Some((gw_ims_ssrc, &b"estuary"[..]))), "{p:?}");
    for b in &to_ims {
        assert!(!ssrcs_in(b).contains(&Ssrc(0xB0B0_0001)), "the browser's SSRC never reaches IMS: {:?}", packets(b));
    }

    // Web leg: SRTCP the browser authenticates, about the browser's stream.
    let sr = last_sr(&c.rtcp_to_web).unwrap_or_else(|| panic!("an SR toward the browser: {:?}", c.session.counters()));
    let p = packets(sr);
    let RtcpPacket::SenderReport(r) = p[0] else { unreachable!() };
    assert_eq!((r.ssrc(), r.info().packet_count), (Ssrc(c.web_ssrc), 5));
    let blocks: Vec<_> = r.report_blocks().collect();
    assert_eq!((blocks[0].ssrc, blocks[0].ext_highest_seq), (Ssrc(0xB0B0_0001), 104));
    assert!(matches!(p[1], RtcpPacket::Sdes(sd) if sd.cname() == Some((Ssrc(c.web_ssrc), &b"estuary"[..]))), "the CNAME our SDP announced");
    for b in &c.rtcp_to_web {
        assert!(!ssrcs_in(b).contains(&Ssrc(0x1315_0001)), "the IMS peer's SSRC never reaches the browser");
    }
    // Two or three reports per leg in 8 s (5 s mean interval, randomised), not a flood.
    let n = c.rtcp_to_web.len();
    assert!((1..=4).contains(&n), "{n} reports to the browser in 8 s");
}

#[test]
fn each_leg_gets_reports_about_its_own_streams() {
    each_leg_reports_what_it_exchanged(false);
}

#[test]
fn reports_toward_an_sdes_core_are_srtcp() {
    each_leg_reports_what_it_exchanged(true);
}

#[test]
fn a_senders_report_is_acknowledged_in_the_next_block() {
    let mut c = connected(false);
    relay_both_ways(&mut c);
    let ntp = NtpTime::from_unix(Duration::from_secs(1_700_000_000) + Duration::from_millis(250));
    let info = SenderInfo { ssrc: Ssrc(0xB0B0_0001), ntp, rtp_ts: 1, packet_count: 5, octet_count: 800 };
    let mut buf = vec![0u8; 200];
    let n = write::sender_report(&mut buf, &info, &[]).unwrap();
    let n = n + write::sdes_cname(&mut buf[n..], Ssrc(0xB0B0_0001), b"browser").unwrap();
    buf.truncate(n);
    c.browser_rtcp(buf);
    assert_eq!(c.session.counters().rtcp_in, 1);
    let received = c.now;
    c.rtcp_to_web.clear();
    c.run_for(Duration::from_secs(8));
    let (sr, sent_at) = (last_sr(&c.rtcp_to_web).expect("a report to the browser"), c.now);
    let RtcpPacket::SenderReport(r) = packets(sr)[0] else { unreachable!() };
    let b = r.report_blocks().next().expect("a block about the browser's stream");
    assert_eq!(b.last_sr, ntp.middle32(), "LSR: the middle 32 bits of the browser's SR");
    let dlsr = Duration::from_secs_f64(f64::from(b.delay_since_last_sr) / 65536.0);
    assert!(dlsr > Duration::ZERO && dlsr <= sent_at - received, "DLSR {dlsr:?}");
}

#[test]
fn the_end_of_a_call_sends_rtcp_bye_on_both_legs() {
    let mut c = connected(false);
    let gw_ims_ssrc = relay_both_ways(&mut c);
    c.rtcp_to_ims.clear();
    c.session.close(c.now);
    c.pump();
    let bye_of = |b: &[u8]| packets(b).iter().find_map(|p| match p {
        RtcpPacket::Bye(bye) => Some(bye.ssrcs().collect::<Vec<_>>()),
        _ => None,
    });
    assert_eq!(c.rtcp_to_ims.iter().filter_map(|(_, b)| bye_of(b)).collect::<Vec<_>>(), [vec![gw_ims_ssrc]]);
    assert_eq!(c.rtcp_to_web.iter().filter_map(|b| bye_of(b)).collect::<Vec<_>>(), [vec![Ssrc(c.web_ssrc)]]);
    let mut pkt = rtp(0, 200, 0xB0B0_0001, &[0; 160]);
    let web = c.web();
    assert_eq!(c.session.handle_datagram(c.now, web, addr(BROWSER), &mut pkt), Forward::Consumed, "nothing relayed after close");
}

#[test]
fn a_browser_close_notify_ends_the_call_only_if_no_bye_follows_within_the_grace() {
    let mut c = connected(false);
    relay_both_ways(&mut c);
    let closed_at = c.now;
    c.browser_dtls.close(c.now);
    while let Some(o) = c.browser_dtls.poll_output() {
        if let estuary_srtp::Output::Transmit(mut d) = o {
            let web = c.web();
            assert_eq!(c.session.handle_datagram(c.now, web, addr(BROWSER), &mut d), Forward::Consumed);
        }
    }
    c.pump();
    let failed = |c: &Call| c.events.iter().any(|e| matches!(e, MediaEvent::Failed { cause: estuary_media::FailCause::DtlsClosed, .. }));
    // Not at once: the browser's BYE, sent at the same moment over the WebSocket, may be
    // a little behind, and it must be what ends the call.
    assert!(!failed(&c), "{:?}", c.events);
    let deadline = closed_at + estuary_media::DTLS_CLOSE_GRACE;
    assert!(c.session.poll_timeout().is_some_and(|t| t <= deadline), "the grace's end is a deadline");
    // Nothing reaches a browser that closed DTLS.
    let mut pkt = rtp(0, 300, 0x1315_0001, &[0; 160]);
    assert_eq!(c.session.handle_datagram(c.now, addr("127.0.0.1:30000"), addr(IMS_PEER), &mut pkt), Forward::Consumed);
    c.now = deadline - Duration::from_millis(1);
    c.session.handle_timeout(c.now);
    c.pump();
    assert!(!failed(&c), "failed before the grace ended: {:?}", c.events);
    c.now = deadline;
    c.session.handle_timeout(c.now);
    c.pump();
    assert!(failed(&c), "no failure once the grace ended: {:?}", c.events);
}

const AV_OFFER: &str = include_str!("../../../conformance/sdp/cases/chromium-audio-video-data/1-web-offer.sdp");
/// Audio and H.264 video; the core takes only FIR as key-frame request (no PLI, no NACK), as
/// many IMS video endpoints do (RFC 5104 ccm fir).
const AV_ANSWER: &str = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
m=audio 50000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n\
m=video 50002 RTP/AVP 108\r\na=rtpmap:108 H264/90000\r\na=fmtp:108 profile-level-id=42e01f;packetization-mode=1\r\na=rtcp-fb:108 ccm fir\r\n\
m=application 0 UDP/DTLS/SCTP webrtc-datachannel\r\n";
const BROWSER_VIDEO: u32 = 920_960_304;
const IMS_VIDEO: u32 = 0x1315_0002;

#[test]
fn key_frame_requests_and_nacks_cross_in_the_form_each_leg_negotiated() {
    let cert = Certificate::generate().unwrap();
    let mut c = call_with(AV_OFFER, AV_ANSWER, false, &cert, &cert);
    let video = &c.plan.streams[1];
    assert_eq!(video.kind, "video");
    assert!(video.web_feedback.pli && video.web_feedback.nack && video.web_feedback.fir, "{video:?}");
    assert_eq!(video.ims_feedback, estuary_sdp::Feedback { fir: true, ..Default::default() });
    let web_video_ssrc = Ssrc(video.web_ssrc);
    c.nominate();
    c.handshake();
    assert!(c.browser_tx.is_some(), "{:?}", c.events);

    // Video both ways, so each side's sender is known.
    let mut gw_ims_video = Ssrc(0);
    let mut sent_to_ims = Vec::new();
    for seq in 500..510u16 {
        let mut pkt = rtp(108, seq, BROWSER_VIDEO, &[0x41; 300]);
        pkt.reserve(64);
        c.browser_tx.as_mut().unwrap().protect_rtp(&mut pkt).unwrap();
        let web = c.web();
        let f = c.session.handle_datagram(c.now, web, addr(BROWSER), &mut pkt);
        assert_eq!(f, Forward::Send { from: addr("127.0.0.1:30002"), to: addr("127.0.0.1:50002") }, "{:?}", c.session.counters());
        let p = RtpPacket::parse(&pkt).unwrap();
        gw_ims_video = p.ssrc();
        sent_to_ims.push(p.seq());
    }
    let mut sent_to_web = Vec::new();
    for seq in 9000..9010u16 {
        let mut pkt = rtp(108, seq, IMS_VIDEO, &[0x65; 300]);
        pkt.reserve(64);
        let f = c.session.handle_datagram(c.now, addr("127.0.0.1:30002"), addr("127.0.0.1:50002"), &mut pkt);
        assert_eq!(f, Forward::Send { from: addr("127.0.0.1:40000"), to: addr(BROWSER) });
        c.browser_rx.as_mut().unwrap().unprotect_rtp(&mut pkt).unwrap();
        sent_to_web.push(RtpPacket::parse(&pkt).unwrap().seq());
    }
    c.rtcp_to_ims.clear();
    c.rtcp_to_web.clear();

    // Browser PLI about our video -> FIR to the core's video sender, on the video RTCP port.
    let mut buf = vec![0u8; 64];
    let n = write::receiver_report(&mut buf, Ssrc(BROWSER_VIDEO), &[]).unwrap();
    let n = n + write::pli(&mut buf[n..], Ssrc(BROWSER_VIDEO), web_video_ssrc).unwrap();
    buf.truncate(n);
    c.browser_rtcp(buf.clone());
    let (to, fir) = c.rtcp_to_ims.last().cloned().expect("a FIR toward IMS");
    assert_eq!(to, addr("127.0.0.1:50003"));
    let Some(RtcpPacket::Fir(f)) = packets(&fir).last().copied() else { panic!("{:?}", packets(&fir)) };
    assert_eq!((f.sender, f.entries().collect::<Vec<_>>()), (gw_ims_video, vec![FirEntry { ssrc: Ssrc(IMS_VIDEO), seq_nr: 1 }]));
    assert!(matches!(packets(&fir)[0], RtcpPacket::ReceiverReport(_)), "a compound starts with a report");
    // A FIR repeated by the browser with the same sequence number is one request.
    let mut buf = vec![0u8; 64];
    let n = write::receiver_report(&mut buf, Ssrc(BROWSER_VIDEO), &[]).unwrap();
    let entry = FirEntry { ssrc: web_video_ssrc, seq_nr: 7 };
    let n = n + write::fir(&mut buf[n..], Ssrc(BROWSER_VIDEO), &[entry]).unwrap();
    buf.truncate(n);
    c.browser_rtcp(buf.clone());
    c.browser_rtcp(buf);
    assert_eq!(c.session.counters().feedback_relayed, 2, "PLI and one FIR: {:?}", c.session.counters());
    let Some(RtcpPacket::Fir(f)) = packets(&c.rtcp_to_ims.last().unwrap().1).last().copied() else { panic!() };
    assert_eq!(f.entries().next().map(|e| e.seq_nr), Some(2), "our own FIR counter");

    // Browser NACK: the core negotiated no NACK, so it stops here, counted.
    let mut buf = vec![0u8; 64];
    let n = write::receiver_report(&mut buf, Ssrc(BROWSER_VIDEO), &[]).unwrap();
    let n = n + write::nack(&mut buf[n..], Ssrc(BROWSER_VIDEO), web_video_ssrc, [sent_to_web[3]]).unwrap();
    buf.truncate(n);
    let before = c.rtcp_to_ims.len();
    c.browser_rtcp(buf);
    assert_eq!((c.rtcp_to_ims.len(), c.session.counters().feedback_dropped), (before, 1));

    // Core PLI about our video toward it -> PLI to the browser's video sender (SRTCP).
    let mut buf = vec![0u8; 64];
    let n = write::receiver_report(&mut buf, Ssrc(IMS_VIDEO), &[]).unwrap();
    let n = n + write::pli(&mut buf[n..], Ssrc(IMS_VIDEO), gw_ims_video).unwrap();
    buf.truncate(n);
    c.ims_rtcp("127.0.0.1:30003", "127.0.0.1:50003", buf);
    let to_web = c.rtcp_to_web.last().expect("a PLI toward the browser");
    assert_eq!(
        packets(to_web).last().copied(),
        Some(RtcpPacket::Pli(estuary_rtp::rtcp::Pli { sender: web_video_ssrc, media: Ssrc(BROWSER_VIDEO) }))
    );
    // Core NACK for two packets we sent it -> NACK to the browser with the browser's own
    // sequence numbers (the browser negotiated nack).
    let mut buf = vec![0u8; 64];
    let n = write::receiver_report(&mut buf, Ssrc(IMS_VIDEO), &[]).unwrap();
    let n = n + write::nack(&mut buf[n..], Ssrc(IMS_VIDEO), gw_ims_video, [sent_to_ims[2], sent_to_ims[5]]).unwrap();
    buf.truncate(n);
    c.ims_rtcp("127.0.0.1:30003", "127.0.0.1:50003", buf);
    let Some(RtcpPacket::Nack(k)) = packets(c.rtcp_to_web.last().unwrap()).last().copied() else { panic!() };
    assert_eq!((k.sender, k.media), (web_video_ssrc, Ssrc(BROWSER_VIDEO)));
    assert_eq!(k.lost().collect::<Vec<_>>(), [SeqNo(502), SeqNo(505)]);
    assert_eq!(c.session.counters().feedback_relayed, 4, "{:?}", c.session.counters());
}

// ----- transcoded streams ---------------------------------------------------------------------

const OPUS_OFFER: &str = include_str!("../../../conformance/sdp/cases/web-audio-opus-transcode/1-web-offer.sdp");
const PCMA_ANSWER: &str = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 50000 RTP/AVP 8 101\r\na=rtpmap:8 PCMA/8000\r\na=rtpmap:101 telephone-event/8000\r\n";

#[test]
fn transcoded_streams_go_to_the_transcoder_and_its_frames_leave_as_one_stream_per_leg() {
    let cert = Certificate::generate().unwrap();
    let mut c = call_with(OPUS_OFFER, PCMA_ANSWER, false, &cert, &cert);
    assert!(c.plan.streams[0].codecs[0].transcode, "{}", c.plan);
    c.nominate();
    c.handshake();
    assert!(c.browser_tx.is_some(), "{:?}", c.events);

    // Browser Opus in: not relayed, handed over in plaintext.
    let mut pkt = rtp(111, 40, 0xB0B0_0001, &[0xfc, 0xff, 0xfe]);
    pkt.reserve(64);
    c.browser_tx.as_mut().unwrap().protect_rtp(&mut pkt).unwrap();
    let web = c.web();
    assert_eq!(c.session.handle_datagram(c.now, web, addr(BROWSER), &mut pkt), Forward::Transcode { stream: 0, to: Leg::Ims });
    let p = RtpPacket::parse(&pkt).expect("plaintext RTP left in the buffer");
    assert_eq!((p.pt(), p.seq(), p.payload()), (Pt(111), SeqNo(40), &[0xfc, 0xff, 0xfe][..]));

    // The transcoder's PCMA frames toward IMS: PT 8, one SSRC, timestamps and sequence
    // numbers continuous.
    let mut buf = Vec::with_capacity(estuary_media::MIN_BUFFER);
    let mut seen = Vec::new();
    for k in 0..3u32 {
        let f = c.session.send_transcoded(c.now, Transcoded { stream: 0, to: Leg::Ims, payload: &[0xd5; 160], timestamp: 7000 + 160 * k, marker: k == 0 }, &mut buf);
        assert_eq!(f, Forward::Send { from: addr("127.0.0.1:30000"), to: addr(IMS_PEER) });
        let p = RtpPacket::parse(&buf).unwrap();
        assert_eq!((p.pt(), p.payload().len(), p.marker()), (Pt(8), 160, k == 0));
        seen.push((p.ssrc(), p.seq(), p.timestamp()));
        c.now += Duration::from_millis(20);
    }
    assert!(seen.windows(2).all(|w| w[0].0 == w[1].0 && w[1].1 == w[0].1.next() && w[1].2 == w[0].2.wrapping_add(160)), "{seen:?}");

    // IMS PCMA in -> handed over; Opus frames toward the browser leave in SRTP as PT 111
    // with the SSRC our SDP announced.
    let mut pkt = rtp(8, 9, 0x1315_0001, &[0xd5; 160]);
    pkt.reserve(64);
    let f = c.session.handle_datagram(c.now, addr("127.0.0.1:30000"), addr(IMS_PEER), &mut pkt);
    assert_eq!(f, Forward::Transcode { stream: 0, to: Leg::Web });
    let f = c.session.send_transcoded(c.now, Transcoded { stream: 0, to: Leg::Web, payload: &[0x78, 0x01, 0x02], timestamp: 96_000, marker: true }, &mut buf);
    assert_eq!(f, Forward::Send { from: addr("127.0.0.1:40000"), to: addr(BROWSER) });
    c.browser_rx.as_mut().unwrap().unprotect_rtp(&mut buf).expect("DTLS-SRTP toward the browser");
    let p = RtpPacket::parse(&buf).unwrap();
    assert_eq!((p.pt(), p.ssrc(), p.payload()), (Pt(111), Ssrc(c.web_ssrc), &[0x78, 0x01, 0x02][..]));
    let n = c.session.counters();
    assert_eq!((n.to_transcoder, n.from_transcoder, n.web_to_ims, n.ims_to_web), (2, 4, 0, 0), "{n:?}");

    // On hold toward IMS, frames for it have nowhere to go.
    let mut held = c.plan.clone();
    held.streams[0].ims_direction = estuary_sdp::Direction::RecvOnly;
    c.session.update_plan(&held, c.now).unwrap();
    assert_eq!(c.session.send_transcoded(c.now, Transcoded { stream: 0, to: Leg::Ims, payload: &[0xd5; 160], timestamp: 7480, marker: false }, &mut buf), Forward::Consumed);
    assert_eq!(c.session.counters().dropped_transcoded, 1);
}

const FIREFOX_VP8: &str = include_str!("../../../conformance/sdp/cases/web-firefox-vp8-video-transcode/1-web-offer.sdp");
const H264_AVPF_ANSWER: &str = include_str!("../../../conformance/sdp/cases/web-firefox-vp8-video-transcode/2-ims-answer.sdp");

#[test]
fn on_a_transcoded_video_stream_feedback_is_for_our_encoders_and_our_decoders_ask_each_sender() {
    let cert = Certificate::generate().unwrap();
    let video_transcode = |p: &mut SdpPolicy| {
        p.ims.avpf = true;
        p.transcode.extend(estuary_sdp::TranscodePair::video(&p.video));
    };
    let mut c = call_with_policy(MediaConfig::default(), video_transcode, FIREFOX_VP8, H264_AVPF_ANSWER, false, &cert, &cert);
    let video = c.plan.streams[1].clone();
    assert!(video.transcodes(), "{}", c.plan);
    assert_eq!(video.ims_feedback, estuary_sdp::Feedback { pli: true, fir: true, tmmbr: true, ..Default::default() });
    c.nominate();
    c.handshake();
    assert!(c.browser_tx.is_some(), "{:?}", c.events);
    let (ims_rtp, ims_rtcp) = ("10.20.30.60:49172", "10.20.30.60:49173");

    // VP8 from the browser and H.264 from the core both go to the transcoder.
    let mut pkt = rtp(120, 700, BROWSER_VIDEO, &[0x90, 0x80, 0x01, 0x10]);
    pkt.reserve(64);
    c.browser_tx.as_mut().unwrap().protect_rtp(&mut pkt).unwrap();
    let web = c.web();
    assert_eq!(c.session.handle_datagram(c.now, web, addr(BROWSER), &mut pkt), Forward::Transcode { stream: 1, to: Leg::Ims });
    let mut pkt = rtp(96, 8000, IMS_VIDEO, &[0x65, 0x88]);
    pkt.reserve(64);
    assert_eq!(c.session.handle_datagram(c.now, addr("127.0.0.1:30002"), addr(ims_rtp), &mut pkt), Forward::Transcode { stream: 1, to: Leg::Web });
    // Our H.264 toward the core: its SSRC is the one the core's TMMBR will name.
    let mut buf = Vec::with_capacity(estuary_media::MIN_BUFFER);
    let f = c.session.send_transcoded(c.now, Transcoded { stream: 1, to: Leg::Ims, payload: &[0x65, 0x01], timestamp: 90_000, marker: true }, &mut buf);
    assert_eq!(f, Forward::Send { from: addr("127.0.0.1:30002"), to: addr(ims_rtp) });
    let gw_ims_video = RtpPacket::parse(&buf).unwrap().ssrc();
    c.rtcp_to_ims.clear();
    c.rtcp_to_web.clear();

    // The browser's PLI and REMB about our VP8: for the encoder toward it, nothing to IMS.
    let mut buf = vec![0u8; 96];
    let n = write::receiver_report(&mut buf, Ssrc(BROWSER_VIDEO), &[]).unwrap();
    let n = n + write::pli(&mut buf[n..], Ssrc(BROWSER_VIDEO), Ssrc(video.web_ssrc)).unwrap();
    let n = n + write::remb(&mut buf[n..], Ssrc(BROWSER_VIDEO), 800_000, &[Ssrc(video.web_ssrc)]).unwrap();
    buf.truncate(n);
    c.browser_rtcp(buf);
    assert_eq!(c.encoder, [(1, Leg::Web, EncoderRequest::Keyframe), (1, Leg::Web, EncoderRequest::MaxBitrate(800_000))]);
    assert!(c.rtcp_to_ims.is_empty(), "a transcoded stream's feedback does not cross: {:?}", c.rtcp_to_ims);

    // The core's FIR and TMMBR about our H.264: for the encoder toward it, and the TMMBR is
    // answered with a TMMBN naming the core as the owner of the bound.
    c.encoder.clear();
    let mut buf = vec![0u8; 96];
    let n = write::receiver_report(&mut buf, Ssrc(IMS_VIDEO), &[]).unwrap();
    let n = n + write::fir(&mut buf[n..], Ssrc(IMS_VIDEO), &[FirEntry { ssrc: gw_ims_video, seq_nr: 1 }]).unwrap();
    let tuple = estuary_rtp::rtcp::TmmbEntry { ssrc: gw_ims_video, bitrate: 384_000, overhead: 40 };
    let n = n + write::tmmbr(&mut buf[n..], Ssrc(IMS_VIDEO), &[tuple]).unwrap();
    buf.truncate(n);
    c.ims_rtcp("127.0.0.1:30003", ims_rtcp, buf);
    assert_eq!(c.encoder, [(1, Leg::Ims, EncoderRequest::Keyframe), (1, Leg::Ims, EncoderRequest::MaxBitrate(384_000))]);
    let (to, tmmbn) = c.rtcp_to_ims.last().cloned().expect("a TMMBN");
    assert_eq!(to, addr(ims_rtcp));
    let Some(RtcpPacket::Tmmbn(t)) = packets(&tmmbn).last().copied() else { panic!("{:?}", packets(&tmmbn)) };
    assert_eq!(t.sender, gw_ims_video);
    assert_eq!(t.entries().collect::<Vec<_>>(), [estuary_rtp::rtcp::TmmbEntry { ssrc: Ssrc(IMS_VIDEO), ..tuple }]);
    assert!(c.rtcp_to_web.is_empty());

    // Our decoders lost their reference: each sender is asked, in its leg's form (PLI).
    c.session.request_keyframe(1, Leg::Web);
    c.pump();
    let to_web = c.rtcp_to_web.last().expect("a PLI toward the browser");
    assert_eq!(
        packets(to_web).last().copied(),
        Some(RtcpPacket::Pli(estuary_rtp::rtcp::Pli { sender: Ssrc(video.web_ssrc), media: Ssrc(BROWSER_VIDEO) }))
    );
    c.session.request_keyframe(1, Leg::Ims);
    c.pump();
    let (to, pli) = c.rtcp_to_ims.last().cloned().expect("a PLI toward the core");
    assert_eq!(to, addr(ims_rtcp));
    assert_eq!(packets(&pli).last().copied(), Some(RtcpPacket::Pli(estuary_rtp::rtcp::Pli { sender: gw_ims_video, media: Ssrc(IMS_VIDEO) })));
    c.session.request_keyframe(9, Leg::Ims);
    c.pump();
    assert_eq!(c.session.counters().feedback_dropped, 0, "an unknown stream is ignored, nothing is sent");

    // The core asked by SIP INFO (RFC 5168), which names no stream: our encoder toward it.
    c.encoder.clear();
    c.session.picture_fast_update(Leg::Ims);
    c.pump();
    assert_eq!(c.encoder, [(1, Leg::Ims, EncoderRequest::Keyframe)], "only the video stream");

    // A core that negotiated no RTCP feedback (plain RTP/AVP) can only be asked in SIP.
    let mut plain = c.plan.clone();
    plain.streams[1].ims_feedback = estuary_sdp::Feedback::default();
    c.session.update_plan(&plain, c.now).unwrap();
    c.events.clear();
    let sent = c.rtcp_to_ims.len();
    c.session.request_keyframe(1, Leg::Ims);
    c.pump();
    assert_eq!(c.events, [MediaEvent::PictureFastUpdate], "signalling asks");
    assert_eq!(c.rtcp_to_ims.len(), sent, "no RTCP the core did not negotiate");
}

/// A telephone-event packet: `event` with `duration` ticks so far, E set if `end`.
fn event_packet(pt: u8, seq: u16, ts: u32, event: u8, end: bool, duration: u16) -> Vec<u8> {
    let mut buf = vec![0u8; 64];
    let h = RtpHeader { marker: false, pt: Pt(pt), seq: SeqNo(seq), timestamp: ts, ssrc: Ssrc(0xB0B0_0001) };
    let ev = estuary_rtp::TelephoneEvent { event, end, volume: 10, duration };
    let mut payload = [0u8; 4];
    ev.write(&mut payload).unwrap();
    let n = h.write_with_payload(&payload, &mut buf).unwrap();
    buf.truncate(n);
    buf
}

#[test]
fn dtmf_crosses_from_the_48k_clock_to_8k_on_the_transcoded_audio_timeline() {
    let cert = Certificate::generate().unwrap();
    let mut c = call_with(OPUS_OFFER, PCMA_ANSWER, false, &cert, &cert);
    let d = c.plan.streams[0].dtmf.clone().expect("telephone-event mapped");
    assert_eq!((d.web_pt, d.web_clock, d.ims_pt, d.ims_clock), (110, 48_000, 101, 8000));
    c.nominate();
    c.handshake();
    let mut buf = Vec::with_capacity(estuary_media::MIN_BUFFER);
    // Transcoded audio toward IMS sets the timeline: last frame ts 7320 at `t_audio`.
    let mut audio = Vec::new();
    for k in 0..3u32 {
        let frame = Transcoded { stream: 0, to: Leg::Ims, payload: &[0xd5; 160], timestamp: 7000 + 160 * k, marker: false };
        assert!(matches!(c.session.send_transcoded(c.now, frame, &mut buf), Forward::Send { .. }));
        let p = RtpPacket::parse(&buf).unwrap();
        audio.push((p.ssrc(), p.seq(), p.timestamp()));
        c.now += Duration::from_millis(20);
    }
    // Digit 5 from the browser, 60 ms, then three end packets: durations in 48 kHz ticks.
    c.now += Duration::from_millis(20);
    let mut sent = Vec::new();
    for (k, (end, dur)) in [(false, 960u16), (false, 1920), (false, 2880), (true, 2880), (true, 2880), (true, 2880)].into_iter().enumerate() {
        let mut pkt = event_packet(110, 300 + k as u16, 5_000_000, 5, end, dur);
        pkt.reserve(64);
        c.browser_tx.as_mut().unwrap().protect_rtp(&mut pkt).unwrap();
        let web = c.web();
        let f = c.session.handle_datagram(c.now, web, addr(BROWSER), &mut pkt);
        assert_eq!(f, Forward::Send { from: addr("127.0.0.1:30000"), to: addr(IMS_PEER) }, "{:?}", c.session.counters());
        let p = RtpPacket::parse(&pkt).unwrap();
        let ev = estuary_rtp::TelephoneEvent::parse(p.payload()).unwrap();
        sent.push((p.pt(), p.ssrc(), p.seq(), p.timestamp(), ev));
        c.now += Duration::from_millis(20);
    }
    let (ssrc, last_seq, last_ts) = *audio.last().unwrap();
    for (k, (pt, s, seq, ts, ev)) in sent.iter().enumerate() {
        assert_eq!(*pt, Pt(101), "telephone-event/8000's payload type");
        assert_eq!(*s, ssrc, "one source with the transcoded audio");
        assert_eq!(*seq, last_seq.add(k as u16 + 1), "sequence numbers continue the audio's");
        assert_eq!(*ts, sent[0].3, "every packet of the event keeps its start timestamp");
        assert_eq!(ev.event, 5);
    }
    // The event starts where the audio timeline is: 40 ms after the last frame (320 ticks).
    assert_eq!(sent[0].3, last_ts.wrapping_add(320));
    let durations: Vec<(bool, u16)> = sent.iter().map(|s| (s.4.end, s.4.duration)).collect();
    assert_eq!(durations, [(false, 160), (false, 320), (false, 480), (true, 480), (true, 480), (true, 480)], "durations in 8 kHz ticks");
}

#[test]
fn dtmf_from_the_core_reaches_the_browser_on_its_48k_clock() {
    let cert = Certificate::generate().unwrap();
    let answer = PCMA_ANSWER.to_owned() + "a=ptime:30\r\n";
    let mut c = call_with(OPUS_OFFER, &answer, false, &cert, &cert);
    assert_eq!(c.plan.streams[0].ims_ptime, Some(30), "the core's a=ptime reaches the plan");
    c.nominate();
    c.handshake();
    let mut buf = Vec::with_capacity(estuary_media::MIN_BUFFER);
    let frame = Transcoded { stream: 0, to: Leg::Web, payload: &[0x78, 1, 2], timestamp: 96_000, marker: true };
    assert!(matches!(c.session.send_transcoded(c.now, frame, &mut buf), Forward::Send { .. }));
    c.browser_rx.as_mut().unwrap().unprotect_rtp(&mut buf).unwrap();
    let audio = RtpPacket::parse(&buf).unwrap();
    let (audio_ssrc, audio_seq, audio_ts) = (audio.ssrc(), audio.seq(), audio.timestamp());
    c.now += Duration::from_millis(10);
    let mut got = Vec::new();
    for (k, (end, dur)) in [(false, 160u16), (false, 320), (true, 400)].into_iter().enumerate() {
        let mut pkt = event_packet(101, 70 + k as u16, 123_456, 11, end, dur);
        pkt.reserve(64);
        let f = c.session.handle_datagram(c.now, addr("127.0.0.1:30000"), addr(IMS_PEER), &mut pkt);
        assert_eq!(f, Forward::Send { from: addr("127.0.0.1:40000"), to: addr(BROWSER) }, "{:?}", c.session.counters());
        c.browser_rx.as_mut().unwrap().unprotect_rtp(&mut pkt).unwrap();
        let p = RtpPacket::parse(&pkt).unwrap();
        got.push((p.pt(), p.ssrc(), p.seq(), p.timestamp(), estuary_rtp::TelephoneEvent::parse(p.payload()).unwrap()));
        c.now += Duration::from_millis(20);
    }
    for (k, (pt, ssrc, seq, ts, ev)) in got.iter().enumerate() {
        assert_eq!((*pt, *ssrc, *seq), (Pt(110), audio_ssrc, audio_seq.add(k as u16 + 1)), "telephone-event/48000 in the audio's stream");
        assert_eq!(*ts, audio_ts.wrapping_add(480), "10 ms after the last frame, in 48 kHz ticks");
        assert_eq!(ev.event, 11);
    }
    let durations: Vec<u16> = got.iter().map(|g| g.4.duration).collect();
    assert_eq!(durations, [960, 1920, 2400]);
}

#[test]
fn a_re_offer_with_a_common_codec_turns_transcoding_into_relay_within_one_stream() {
    let cert = Certificate::generate().unwrap();
    let mut c = call_with(OPUS_OFFER, PCMA_ANSWER, false, &cert, &cert);
    c.nominate();
    c.handshake();
    let mut buf = Vec::with_capacity(estuary_media::MIN_BUFFER);
    let frame = Transcoded { stream: 0, to: Leg::Ims, payload: &[0xd5; 160], timestamp: 7000, marker: true };
    assert!(matches!(c.session.send_transcoded(c.now, frame, &mut buf), Forward::Send { .. }));
    let before = RtpPacket::parse(&buf).unwrap();
    let (ssrc, seq) = (before.ssrc(), before.seq());
    // The browser re-offers with PCMA as well and the core keeps PCMA: no transcoding.
    let mut relay = c.plan.clone();
    let pcma = estuary_sdp::Rtpmap::parse("8 PCMA/8000").unwrap();
    relay.streams[0].codecs = vec![estuary_sdp::CodecMap { web_pt: 8, web: pcma.clone(), ims_pt: 8, ims: pcma, transcode: false, web_fmtp: None, ims_fmtp: None }];
    c.session.update_plan(&relay, c.now).unwrap();
    c.now += Duration::from_millis(20);
    let mut pkt = rtp(8, 500, 0xB0B0_0001, &[0xd5; 160]);
    pkt.reserve(64);
    c.browser_tx.as_mut().unwrap().protect_rtp(&mut pkt).unwrap();
    let web = c.web();
    assert_eq!(c.session.handle_datagram(c.now, web, addr(BROWSER), &mut pkt), Forward::Send { from: addr("127.0.0.1:30000"), to: addr(IMS_PEER) });
    let p = RtpPacket::parse(&pkt).unwrap();
    assert_eq!((p.pt(), p.ssrc(), p.seq()), (Pt(8), ssrc, seq.next()), "the core sees one stream continue");
    assert!(p.marker(), "a source switch is marked");
    // Late frames from the closed transcoding channel have no place.
    let late = Transcoded { stream: 0, to: Leg::Ims, payload: &[0xd5; 160], timestamp: 7160, marker: false };
    assert_eq!(c.session.send_transcoded(c.now, late, &mut buf), Forward::Consumed);
}

#[test]
fn the_recorder_tap_sees_browser_media_decrypted_and_ims_media_as_sent() {
    let cert = Certificate::generate().unwrap();
    let cfg = MediaConfig { tap: true, ..MediaConfig::default() };
    let mut c = call_with_cfg(cfg, OFFER, AUDIO_ANSWER, true, &cert, &cert);
    c.nominate();
    c.handshake();
    relay_both_ways(&mut c);
    c.pump();
    let voice = [0x55u8; 160];
    let of = |leg: Leg| c.taps.iter().filter(move |(l, _)| *l == leg).map(|(_, d)| RtpPacket::parse(d).expect("plaintext RTP")).collect::<Vec<_>>();
    let (web, ims) = (of(Leg::Web), of(Leg::Ims));
    // Each leg: 5 packets in and 5 out, all plaintext (SRTP toward the browser and SDES
    // toward IMS are both removed), payloads as carried.
    assert_eq!((web.len(), ims.len()), (10, 10));
    assert!(web.iter().chain(ims.iter()).all(|p| p.payload() == voice), "decrypted payloads");
    assert!(web.iter().any(|p| p.ssrc() == Ssrc(0xB0B0_0001)) && web.iter().any(|p| p.ssrc() == Ssrc(c.web_ssrc)));
    // Without the tap, nothing is copied.
    let mut plain = connected(false);
    relay_both_ways(&mut plain);
    plain.pump();
    assert!(plain.taps.is_empty());
}

/// A replay session (`estuary replay`): the browser leg carries the recording's plaintext
/// without ICE or DTLS, from the recorded browser's address only; everything past SRTP is the
/// same relay, and RTCP reaches the browser in plaintext too.
#[test]
fn a_replay_session_relays_the_recorded_plaintext_both_ways() {
    let c = call(false, &Certificate::generate().unwrap(), &Certificate::generate().unwrap());
    let gw_cert = Certificate::generate().unwrap();
    let browser = addr(BROWSER);
    let now = Instant::now();
    let mut s = MediaSession::replay(MediaConfig::default(), &c.plan, &gw_cert, now, 9, Some(browser)).unwrap();
    assert!(s.poll_output().is_none(), "a replay sends no STUN or DTLS");

    let header = |seq: u16, ssrc: u32| RtpHeader { marker: false, pt: Pt(0), seq: SeqNo(seq), timestamp: u32::from(seq) * 160, ssrc: Ssrc(ssrc) };
    let packet = |h: RtpHeader| {
        let mut buf = vec![0u8; 1600];
        let n = h.write_with_payload(&[0x55; 160], &mut buf).unwrap();
        buf.truncate(n);
        buf
    };
    // Browser -> IMS: the plaintext goes on as RTP toward the core.
    let mut buf = packet(header(1, 0xB0B0));
    let f = s.handle_datagram(now, c.web(), browser, &mut buf);
    assert_eq!(f, Forward::Send { from: addr("127.0.0.1:30000"), to: addr(IMS_PEER) });
    assert_eq!(RtpPacket::parse(&buf).unwrap().payload(), &[0x55; 160][..]);
    // From anywhere else on the browser side: dropped, as a source without consent is.
    let mut buf = packet(header(2, 0xB0B0));
    assert_eq!(s.handle_datagram(now, c.web(), addr("127.0.0.1:61002"), &mut buf), Forward::Consumed);
    assert_eq!(s.counters().dropped_no_consent, 1);
    // IMS -> browser: plaintext toward the recorded browser, in the browser leg's SSRC.
    let mut buf = packet(header(7, 0x1315));
    let f = s.handle_datagram(now, addr("127.0.0.1:30000"), addr(IMS_PEER), &mut buf);
    assert_eq!(f, Forward::Send { from: c.web(), to: browser });
    let p = RtpPacket::parse(&buf).unwrap();
    assert_eq!((p.ssrc(), p.payload()), (Ssrc(c.plan.streams[0].web_ssrc), &[0x55; 160][..]));
    // Reports are due later; at the end, a plaintext compound with a BYE reaches the browser.
    s.close(now + Duration::from_secs(1));
    let to_browser: Vec<Vec<u8>> = std::iter::from_fn(|| s.poll_output())
        .filter_map(|o| match o {
            Output::Transmit { to, data, .. } if to == browser => Some(data),
            _ => None,
        })
        .collect();
    assert_eq!(to_browser.len(), 1, "one compound RTCP toward the browser");
    let kinds: Vec<u8> = estuary_rtp::rtcp::Compound::new(&to_browser[0]).map(|p| p.unwrap().packet_type().0).collect();
    assert!(kinds.contains(&200) && kinds.contains(&203), "an SR and a BYE in plaintext: {kinds:?}");
}
