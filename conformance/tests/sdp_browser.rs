//! Issue 3's acceptance by a real browser: every browser-facing SDP the interworking engine
//! produces is accepted by headless Chromium (setRemoteDescription succeeds), and what
//! Chromium answers goes back through the engine into valid IMS SDP.
//!
//! Browser offers come from Chromium itself (one real offer per media mix); the IMS side is
//! played by a far end that accepts every active stream with the first codec the gateway
//! offered. IMS offers are the corpus's (conformance/sdp/cases) plus SDES and video ones.

use estuary_conformance::browser::Browser;
use estuary_keys::KeySource;
use estuary_sdp::{parse, PortAllocator, SdpPolicy, SdpSession, Side};

struct Ports(u16);

impl PortAllocator for Ports {
    fn web_port(&mut self) -> Option<u16> {
        Some(41000)
    }
    fn ims_port(&mut self, _: usize) -> Option<u16> {
        self.0 += 2;
        Some(self.0)
    }
}

fn policy() -> SdpPolicy {
    SdpPolicy {
        // A real certificate's fingerprint form; Chromium checks syntax, not the certificate,
        // at setRemoteDescription.
        fingerprint: estuary_sdp::Fingerprint::parse(
            "sha-256 5C:F6:2A:6B:39:E1:4C:2F:8E:3A:55:C0:9B:7D:11:E2:42:90:6D:8C:AA:13:F7:0E:B4:21:93:5D:7A:66:0C:E8",
        )
        .unwrap(),
        ..SdpPolicy::default()
    }
}

/// The IMS far end: accepts every active m-line of `offer` with its first format (plus
/// telephone-event when offered), answering SDES with a key of the first offered suite.
fn ims_answer(offer: &str) -> String {
    let sd = parse::parse(offer.as_bytes()).unwrap();
    let mut s = "v=0\r\no=- 1 1 IN IP4 10.1.1.1\r\ns=-\r\nc=IN IP4 10.1.1.1\r\nt=0 0\r\n".to_owned();
    for (i, m) in sd.media_descriptions.iter().enumerate() {
        let n = &m.media_name;
        if n.port.value == 0 {
            s.push_str(&format!("m={} 0 {} {}\r\n", n.media, n.protos.join("/"), n.formats[0]));
            continue;
        }
        let mut fmts = vec![n.formats[0].clone()];
        let mut attrs = Vec::new();
        for a in &m.attributes {
            let v = a.value.clone().unwrap_or_default();
            if a.key == "rtpmap" && (v.starts_with(&format!("{} ", n.formats[0])) || v.contains("telephone-event")) {
                if v.contains("telephone-event") {
                    fmts.push(v.split(' ').next().unwrap().to_owned());
                }
                attrs.push(format!("a=rtpmap:{v}\r\n"));
            }
        }
        if let Some(c) = m.attributes.iter().find(|a| a.key == "crypto") {
            let offered = estuary_sdp::Crypto::parse(c.value.as_deref().unwrap()).unwrap();
            let key = estuary_sdp::Crypto::generate(offered.tag, offered.suite().unwrap(), &mut KeySource::os());
            attrs.push(format!("a=crypto:{key}\r\n"));
        }
        s.push_str(&format!("m={} {} {} {}\r\n", n.media, 50000 + 2 * i, n.protos.join("/"), fmts.join(" ")));
        for a in attrs {
            s.push_str(&a);
        }
    }
    s
}

fn browser() -> Browser {
    if let Err(why) = Browser::available() {
        panic!("headless Chromium is needed (make deps installs it): {why}");
    }
    Browser::start()
}

/// Chromium offers, the engine turns it into an IMS offer, the far end answers, and the
/// engine's browser answer must be accepted.
fn browser_offer_round_trip(b: &mut Browser, pc: &str, media: &[&str], audio_codecs: Option<&[&str]>) -> String {
    b.new_pc(pc);
    let offer = b.offer(pc, media, audio_codecs).unwrap_or_else(|e| panic!("{pc}: Chromium made no offer: {e}"));
    let mut session = SdpSession::new(policy(), 7, KeySource::os());
    let ims_offer = session.offer(Side::Web, offer.as_bytes(), &mut Ports(30000)).unwrap_or_else(|e| panic!("{pc}: {e}\n{offer}"));
    let answer = session.answer(Side::Ims, ims_answer(&ims_offer).as_bytes()).unwrap_or_else(|e| panic!("{pc}: {e}\n{ims_offer}"));
    if let Err(e) = b.remote_answer(pc, &answer) {
        panic!("{pc}: Chromium refused the gateway's answer: {e}\n--- Chromium's offer\n{offer}\n--- gateway's answer\n{answer}");
    }
    b.close(pc);
    answer
}

#[test]
fn chromium_accepts_the_gateways_answers_to_its_offers() {
    let mut b = browser();
    let audio = browser_offer_round_trip(&mut b, "audio", &["audio"], None);
    assert!(audio.contains("a=ice-lite") && audio.contains("RTP/SAVPF 0"), "{audio}");
    // Opus only: the engine plans transcoding and answers Opus.
    let opus = browser_offer_round_trip(&mut b, "opus", &["audio"], Some(&["opus"]));
    assert!(opus.contains("opus/48000/2"), "{opus}");
    // Video: Chromium's H.264 passes to IMS; data channel refused with port 0.
    let av = browser_offer_round_trip(&mut b, "av", &["audio", "video"], None);
    assert!(av.contains("H264/90000"), "{av}");
    let avd = browser_offer_round_trip(&mut b, "avd", &["audio", "video", "data"], None);
    assert!(avd.contains("m=application 0 "), "{avd}");
}

#[test]
fn chromium_accepts_the_gateways_offers_and_its_answers_go_back_to_ims_form() {
    let cases = concat!(env!("CARGO_MANIFEST_DIR"), "/sdp/cases");
    let read = |p: &str| std::fs::read_to_string(format!("{cases}/{p}")).unwrap();
    let volte = read("ims-offer-volte/1-ims-offer.sdp");
    let hold = read("ims-offer-legacy-hold/3-ims-offer.sdp");
    let sdes_video = "v=0\r\no=- 9 9 IN IP4 10.2.2.2\r\ns=-\r\nc=IN IP4 10.2.2.2\r\nt=0 0\r\n\
        m=audio 52000 RTP/SAVP 8 101\r\na=rtpmap:8 PCMA/8000\r\na=rtpmap:101 telephone-event/8000\r\n\
        a=crypto:1 AES_CM_128_HMAC_SHA1_32 inline:NzB4d1BINUAvLEw6UzF3WSJ+PSdFcGdUJShpX1Zj|2^31\r\n\
        m=video 52002 RTP/AVP 98\r\na=rtpmap:98 H264/90000\r\na=fmtp:98 profile-level-id=42e01f;packetization-mode=1\r\n";
    let mut b = browser();
    // (pc, offers in sequence on one connection: initial, then re-offers)
    let flows: [(&str, Vec<&str>); 2] = [("volte", vec![&volte, &hold, &volte]), ("sdes-video", vec![sdes_video])];
    for (pc, offers) in flows {
        b.new_pc(pc);
        let mut session = SdpSession::new(policy(), 11, KeySource::os());
        let mut ports = Ports(30000);
        for (n, ims_offer) in offers.iter().enumerate() {
            let web_offer = session.offer(Side::Ims, ims_offer.as_bytes(), &mut ports).unwrap_or_else(|e| panic!("{pc} #{n}: {e}"));
            let answer = b.remote_offer(pc, &web_offer).unwrap_or_else(|e| {
                panic!("{pc} #{n}: Chromium refused the gateway's offer: {e}\n{web_offer}")
            });
            assert!(answer.contains("a=setup:active"), "{pc} #{n}: {answer}");
            let back = session.answer(Side::Web, answer.as_bytes()).unwrap_or_else(|e| panic!("{pc} #{n}: {e}\n{answer}"));
            let sd = parse::parse(back.as_bytes()).unwrap();
            assert_eq!(sd.media_descriptions.len(), parse::parse(ims_offer.as_bytes()).unwrap().media_descriptions.len());
            assert!(!back.contains("fingerprint") && !back.contains("ice-"), "{pc} #{n}: {back}");
            if pc == "sdes-video" {
                assert!(back.contains("a=crypto:1 AES_CM_128_HMAC_SHA1_32 inline:"), "{back}");
                assert!(back.contains("m=video 30004 RTP/AVP 98"), "{back}");
            }
        }
        b.close(pc);
    }
}
