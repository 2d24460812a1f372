//! Properties over generated input (deterministic PRNG, bounded case counts):
//! - random valid offers from either side, answered by a random valid far end, always give an
//!   answer with the offer's m-line count and media order, and a plan with one stream each;
//! - arbitrary and mutated bytes never panic the parser or the session.

use estuary_keys::KeySource;
use estuary_sdp::{PortAllocator, SdpPolicy, SdpSession, Side};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

struct Ports(u16);

impl PortAllocator for Ports {
    fn web_port(&mut self) -> Option<u16> {
        Some(40000)
    }
    fn ims_port(&mut self, _: usize) -> Option<u16> {
        self.0 += 2;
        Some(self.0)
    }
}

const AUDIO: &[(&str, u8)] = &[
    ("opus/48000/2", 111),
    ("PCMU/8000", 0),
    ("PCMA/8000", 8),
    ("G722/8000", 9),
    ("AMR-WB/16000", 104),
    ("AMR/8000", 97),
    ("telephone-event/8000", 101),
    ("telephone-event/48000", 110),
    ("CN/8000", 13),
];
const VIDEO: &[(&str, u8)] = &[("VP8/90000", 96), ("H264/90000", 106), ("VP9/90000", 98), ("rtx/90000", 97)];

fn pick<'a>(rng: &mut StdRng, from: &'a [(&'a str, u8)]) -> Vec<(&'a str, u8)> {
    let mut v: Vec<_> = from.iter().copied().filter(|_| rng.random_bool(0.5)).collect();
    if v.is_empty() {
        v.push(from[rng.random_range(0..from.len())]);
    }
    v
}

/// A syntactically valid offer as `side` would write it.
fn random_offer(rng: &mut StdRng, side: Side) -> String {
    let n = rng.random_range(1..=4);
    let mut s = format!("v=0\r\no=- {} 1 IN IP4 10.0.0.1\r\ns=-\r\n", rng.random::<u32>());
    if side == Side::Ims {
        s.push_str("c=IN IP4 10.0.0.1\r\n");
    }
    s.push_str("t=0 0\r\n");
    if side == Side::Web {
        let mids: Vec<String> = (0..n).map(|i| i.to_string()).collect();
        s.push_str(&format!("a=group:BUNDLE {}\r\n", mids.join(" ")));
    }
    for i in 0..n {
        let kind = match rng.random_range(0..10) {
            0..=5 => "audio",
            6..=8 => "video",
            _ => "application",
        };
        let port = if rng.random_bool(0.15) { 0 } else { 1024 + 2 * rng.random_range(0..1000) };
        if kind == "application" {
            s.push_str(&format!("m=application {port} UDP/DTLS/SCTP webrtc-datachannel\r\nc=IN IP4 10.0.0.1\r\na=mid:{i}\r\n"));
            continue;
        }
        let codecs = pick(rng, if kind == "audio" { AUDIO } else { VIDEO });
        let proto = match side {
            Side::Web => "UDP/TLS/RTP/SAVPF",
            Side::Ims if rng.random_bool(0.3) => "RTP/SAVP",
            Side::Ims => "RTP/AVP",
        };
        let pts: Vec<String> = codecs.iter().map(|c| c.1.to_string()).collect();
        s.push_str(&format!("m={kind} {port} {proto} {}\r\nc=IN IP4 10.0.0.1\r\n", pts.join(" ")));
        if side == Side::Web {
            s.push_str(&format!("a=mid:{i}\r\na=ice-ufrag:abcd\r\na=ice-pwd:abcdefghijklmnopqrstuvwx\r\na=fingerprint:sha-256 AB:CD:EF:01\r\na=setup:actpass\r\na=rtcp-mux\r\n"));
        }
        if proto == "RTP/SAVP" {
            s.push_str("a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR\r\n");
        }
        for d in ["sendrecv", "sendonly", "recvonly", "inactive"] {
            if rng.random_bool(0.2) {
                s.push_str(&format!("a={d}\r\n"));
                break;
            }
        }
        for (name, pt) in &codecs {
            s.push_str(&format!("a=rtpmap:{pt} {name}\r\n"));
        }
    }
    s
}

/// A far end's answer to `offer`: same m-lines, a random subset of each offered format list
/// (at least one), sometimes port 0.
fn random_answer(rng: &mut StdRng, offer: &str, answerer: Side) -> String {
    let sd = estuary_sdp::parse::parse(offer.as_bytes()).unwrap();
    let mut s = "v=0\r\no=- 77 1 IN IP4 10.9.9.9\r\ns=-\r\nc=IN IP4 10.9.9.9\r\nt=0 0\r\n".to_owned();
    for m in &sd.media_descriptions {
        let kind = &m.media_name.media;
        let offered_port = m.media_name.port.value;
        let port = if offered_port == 0 || rng.random_bool(0.1) { 0 } else { 3000 + 2 * rng.random_range(0..100) };
        let mut fmts: Vec<&String> = m.media_name.formats.iter().filter(|_| rng.random_bool(0.6)).collect();
        if fmts.is_empty() {
            fmts.push(&m.media_name.formats[0]);
        }
        let fmts: Vec<&str> = fmts.iter().map(|f| f.as_str()).collect();
        s.push_str(&format!("m={kind} {port} {} {}\r\n", m.media_name.protos.join("/"), fmts.join(" ")));
        for a in &m.attributes {
            let keep = match a.key.as_str() {
                "rtpmap" | "fmtp" => a.value.as_deref().and_then(|v| v.split(' ').next()).is_some_and(|pt| fmts.contains(&pt)),
                "mid" | "rtcp-mux" => true,
                "crypto" => true,
                _ => false,
            };
            if keep {
                s.push_str(&format!("a={a}\r\n"));
            }
        }
        if answerer == Side::Web && port != 0 {
            s.push_str("a=ice-ufrag:wxyz\r\na=ice-pwd:zyxwvutsrqponmlkjihgfedc\r\na=fingerprint:sha-256 01:02:03\r\na=setup:active\r\n");
        }
    }
    s
}

fn kinds(sdp: &str) -> Vec<String> {
    sdp.lines().filter_map(|l| l.strip_prefix("m=")).map(|l| l.split(' ').next().unwrap_or_default().to_owned()).collect()
}

#[test]
fn random_exchanges_keep_m_line_count_and_order() {
    let mut rng = StdRng::seed_from_u64(4566);
    let (mut completed, mut refused) = (0, 0);
    for case in 0..3000 {
        let from = if case % 2 == 0 { Side::Web } else { Side::Ims };
        let offer = random_offer(&mut rng, from);
        let mut session = SdpSession::new(SdpPolicy::default(), case, KeySource::os());
        let mut ports = Ports(30000);
        let far_offer = match session.offer(from, offer.as_bytes(), &mut ports) {
            Ok(o) => o,
            Err(e) => {
                assert!(matches!(e.status(), 488 | 400), "case {case}: {e}\n{offer}");
                refused += 1;
                continue;
            }
        };
        assert_eq!(kinds(&far_offer), kinds(&offer), "case {case}: offer order\n{offer}\n---\n{far_offer}");
        let answer = random_answer(&mut rng, &far_offer, from.other());
        match session.answer(from.other(), answer.as_bytes()) {
            Ok(back) => {
                assert_eq!(kinds(&back), kinds(&offer), "case {case}: answer order\n{offer}\n---\n{far_offer}\n---\n{answer}\n---\n{back}");
                estuary_sdp::parse::parse(back.as_bytes()).unwrap_or_else(|e| panic!("case {case}: answer does not parse: {e}\n{back}"));
                assert_eq!(session.plan().unwrap().streams.len(), kinds(&offer).len());
                completed += 1;
            }
            Err(e) => {
                assert!(matches!(e.status(), 488), "case {case}: {e}");
                refused += 1;
            }
        }
    }
    println!("{completed} exchanges completed, {refused} refused");
    assert!(completed > 1000, "only {completed} exchanges completed ({refused} refused)");
}

#[test]
fn arbitrary_and_mutated_bytes_never_panic() {
    let mut rng = StdRng::seed_from_u64(7983);
    let seeds: Vec<String> = (0..20).map(|i| random_offer(&mut rng, if i % 2 == 0 { Side::Web } else { Side::Ims })).collect();
    for case in 0..20_000u64 {
        let mut bytes = if case % 5 == 0 {
            (0..rng.random_range(0..300)).map(|_| rng.random::<u8>()).collect::<Vec<u8>>()
        } else {
            seeds[case as usize % seeds.len()].clone().into_bytes()
        };
        for _ in 0..rng.random_range(1..6) {
            if bytes.is_empty() {
                break;
            }
            let i = rng.random_range(0..bytes.len());
            match rng.random_range(0..4) {
                0 => bytes[i] = rng.random(),
                1 => {
                    bytes.remove(i);
                }
                2 => bytes.insert(i, b"0123456789 :/=\r\n-"[rng.random_range(0..17)]),
                _ => bytes.truncate(i),
            }
        }
        let mut session = SdpSession::new(SdpPolicy::default(), case, KeySource::os());
        let side = if case % 2 == 0 { Side::Web } else { Side::Ims };
        let _ = session.offer(side, &bytes, &mut Ports(30000));
        let _ = session.answer(side.other(), &bytes);
    }
}
