//! Hostile input against the public API (STYLE R6): truncated, mutated and spliced versions of
//! the RFC 4475 torture messages and of real traffic, plus pathological sizes. Parsing must
//! never panic, must stay linear, and whatever parses must print and reparse to the same message.
//!
//! Mutation is deterministic (xorshift64 with fixed seeds), so a failure names a reproducible
//! case index.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use estuary_sip::{
    response_to, salvage_for_400, salvage_response, Frame, Message, NameAddr, StreamFramer, Uri,
    Via,
};

const JSSIP_REGISTER: &[u8] = b"REGISTER sip:ims.example.net SIP/2.0\r\n\
Via: SIP/2.0/WSS df7jal23ls0d.invalid;branch=z9hG4bK8712341\r\n\
Max-Forwards: 69\r\n\
To: <sip:alice@ims.example.net>\r\n\
From: <sip:alice@ims.example.net>;tag=0p6kqj5dfo\r\n\
Call-ID: 5mfh9jvtq2o3ldr8b2u6\r\n\
CSeq: 1 REGISTER\r\n\
Contact: <sip:abc@df7jal23ls0d.invalid;transport=ws>;+sip.ice;reg-id=1;+sip.instance=\"<urn:uuid:3f8f8c2a-8d1e-4c42-9a3b-2e7b4d2c1f01>\";expires=600\r\n\
Expires: 600\r\n\
Supported: path,gruu,outbound\r\n\
Content-Length: 0\r\n\r\n";

const IMS_200: &[u8] = b"SIP/2.0 200 OK\r\n\
v: SIP/2.0/UDP [2001:db8::9]:5060;branch=z9hG4bK74bf9;rport=5060;received=2001:db8::9\r\n\
Record-Route: <sip:pcscf.ims.example.net;lr>, <sip:scscf.ims.example.net;lr>\r\n\
t: <sip:bob@ims.example.net>;tag=as6b1a7c\r\n\
f: \"A \\\"q\\\"\" <sip:alice@ims.example.net>;tag=9fxced76sl\r\n\
i: a84b4c76e66710\r\n\
CSeq: 314159 INVITE\r\n\
m: <sip:bob@192.0.2.4:5070;transport=tcp>;expires=3600\r\n\
Path: <sip:term@pcscf.ims.example.net;lr>\r\n\
c: application/sdp\r\n\
l: 12\r\n\r\nv=0\r\ns=-\r\n..";

/// Bytes that hit parser decisions: delimiters, quotes, controls, UTF-8 fragments.
const INTERESTING: &[u8] = b"\0\r\n\t \"\\<>;,:@%?=&[]/*.#\x7f\x80\xc3\xff0123456789SIPsip";

struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next() % n as u64) as usize
        }
    }
}

fn seeds() -> Vec<Vec<u8>> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../conformance/data/rfc4475");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "dat"))
        .collect();
    files.sort();
    let mut out: Vec<Vec<u8>> = files.iter().map(|p| std::fs::read(p).unwrap()).collect();
    assert_eq!(out.len(), 49, "the RFC 4475 corpus should hold 49 messages");
    out.push(JSSIP_REGISTER.to_vec());
    out.push(IMS_200.to_vec());
    out
}

/// Drive every public entry point with `bytes`; panics only on a broken invariant.
fn exercise(bytes: &[u8]) {
    let _ = salvage_for_400(bytes);
    if let Some(r) = salvage_response(bytes) {
        assert!((400..=505).contains(&r.code));
        Message::parse(&r.to_bytes()).expect("a salvaged response must parse");
    }
    let mut framer = StreamFramer::new(64 * 1024);
    for chunk in bytes.chunks(97) {
        framer.push(chunk);
        while let Ok(Some(frame)) = framer.next_frame() {
            if let Frame::Message(m) = frame {
                let _ = Message::parse(&m);
            }
        }
    }
    let Ok(msg) = Message::parse(bytes) else {
        return;
    };
    let valid = msg.validate().is_ok();
    let h = msg.headers();
    let _ = (
        h.call_id(),
        h.cseq(),
        h.from(),
        h.to(),
        h.vias(),
        h.top_via(),
        h.max_forwards(),
    );
    let _ = (
        h.contacts(),
        h.record_routes(),
        h.routes(),
        h.paths(),
        h.content_length(),
        h.expires(),
    );
    for name in ["Via", "Contact", "Route", "Supported", "Accept", "X"] {
        for v in h.values(name) {
            let _ = (NameAddr::parse(&v), Via::parse(&v), Uri::parse(&v));
        }
    }
    for header in h.iter() {
        let _ = (NameAddr::parse(&header.value), Uri::parse(&header.value));
    }
    // Whatever parsed prints and reparses to the same message (plus a Content-Length).
    let printed = msg.to_bytes();
    let again = Message::parse(&printed)
        .unwrap_or_else(|e| panic!("printed message does not reparse: {e}"));
    assert_eq!(again.body(), msg.body());
    assert_eq!(
        again.headers().iter().take(h.len()).collect::<Vec<_>>(),
        h.iter().collect::<Vec<_>>()
    );
    match (&msg, &again) {
        (Message::Request(a), Message::Request(b)) => {
            assert_eq!(
                (&a.method, &a.uri, &a.version),
                (&b.method, &b.uri, &b.version)
            );
            let resp = response_to(a, 400, "Bad Request");
            Message::parse(&resp.to_bytes()).expect("response_to output must parse");
        }
        (Message::Response(a), Message::Response(b)) => {
            assert_eq!(
                (&a.version, a.code, &a.reason),
                (&b.version, b.code, &b.reason)
            );
        }
        _ => panic!("message kind changed"),
    }
    assert_eq!(
        again.validate().is_ok(),
        valid,
        "validation changed after a print/parse cycle"
    );
    assert_eq!(again.to_bytes(), printed);
}

fn mutate(rng: &mut XorShift, seed: &[u8], other: &[u8]) -> Vec<u8> {
    let mut v = seed.to_vec();
    for _ in 0..=rng.below(4) {
        let at = rng.below(v.len() + 1);
        match rng.below(7) {
            0 if at < v.len() => v[at] = rng.next() as u8,
            1 if at < v.len() => v[at] = INTERESTING[rng.below(INTERESTING.len())],
            2 => {
                let end = (at + rng.below(16)).min(v.len());
                v.drain(at..end);
            }
            3 => {
                let end = (at + rng.below(32)).min(v.len());
                let dup = v[at..end].to_vec();
                v.splice(at..at, dup);
            }
            4 => {
                let n = rng.below(8);
                let ins: Vec<u8> = (0..n)
                    .map(|_| INTERESTING[rng.below(INTERESTING.len())])
                    .collect();
                v.splice(at..at, ins);
            }
            5 => {
                let from = rng.below(other.len());
                let end = (from + rng.below(64)).min(other.len());
                v.splice(at..at, other[from..end].iter().copied());
            }
            _ => v.truncate(at),
        }
    }
    v
}

#[test]
fn truncations_never_panic() {
    let mut cases = 0;
    for seed in seeds() {
        for len in 0..=seed.len() {
            exercise(&seed[..len]);
            cases += 1;
        }
    }
    eprintln!("truncations: {cases} cases");
    assert!(cases > 20_000);
}

#[test]
fn mutations_never_panic() {
    let seeds = seeds();
    let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
    let mut cases = 0;
    let mut parsed = 0;
    for round in 0..120 {
        for (i, seed) in seeds.iter().enumerate() {
            let other = &seeds[(i + round + 1) % seeds.len()];
            let case = mutate(&mut rng, seed, other);
            if Message::parse(&case).is_ok() {
                parsed += 1;
            }
            exercise(&case);
            cases += 1;
        }
    }
    eprintln!("mutations: {cases} cases, {parsed} still parse");
    assert!(cases > 6_000);
    // The mutations must leave enough messages parseable to exercise the printers.
    assert!(parsed > cases / 10, "{parsed} of {cases}");
}

#[test]
fn random_bytes_never_panic() {
    let mut rng = XorShift(0x2545_f491_4f6c_dd1d);
    for _ in 0..3_000 {
        let n = rng.below(300);
        let case: Vec<u8> = (0..n)
            .map(|_| {
                if rng.below(3) == 0 {
                    rng.next() as u8
                } else {
                    INTERESTING[rng.below(INTERESTING.len())]
                }
            })
            .collect();
        exercise(&case);
        let mut with_start = b"INVITE sip:a@b SIP/2.0\r\n".to_vec();
        with_start.extend_from_slice(&case);
        exercise(&with_start);
    }
}

/// Pathological shapes at a size where anything quadratic would take minutes.
#[test]
fn pathological_sizes_stay_linear() {
    const N: usize = 200_000;
    let head = "OPTIONS sip:a@b SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\n\
                From: <sip:a@b>;tag=1\r\nTo: <sip:a@b>\r\nCall-ID: c\r\nCSeq: 1 OPTIONS\r\n";
    let cases: Vec<(&str, Vec<u8>)> = vec![
        (
            "many params",
            format!("{head}Contact: <sip:a@b>{}\r\n\r\n", ";p=1".repeat(N)).into_bytes(),
        ),
        (
            "many list elements",
            format!("{head}Via: {}\r\n\r\n", "SIP/2.0/UDP h,".repeat(N / 4)).into_bytes(),
        ),
        (
            "empty list elements",
            format!("{head}Supported: {}\r\n\r\n", ",".repeat(N)).into_bytes(),
        ),
        (
            "many header lines",
            format!("{head}{}\r\n", "X: y\r\n".repeat(N / 4)).into_bytes(),
        ),
        (
            "many folds",
            format!("{head}X: a{}\r\n\r\n", "\r\n b".repeat(N / 4)).into_bytes(),
        ),
        (
            "open quote",
            format!("{head}Contact: \"{}\r\n\r\n", "a,".repeat(N)).into_bytes(),
        ),
        (
            "open angle",
            format!("{head}Route: {}\r\n\r\n", "<sip:a,".repeat(N / 4)).into_bytes(),
        ),
        (
            "escapes",
            format!("{head}To: \"{}\" <sip:a@b>\r\n\r\n", "\\\"".repeat(N)).into_bytes(),
        ),
        (
            "huge URI",
            format!("INVITE sip:{}@b SIP/2.0\r\n\r\n", "u;".repeat(N)).into_bytes(),
        ),
        (
            "huge reason",
            format!("SIP/2.0 200 {}\r\n\r\n", "OK ".repeat(N)).into_bytes(),
        ),
        ("CRLF flood", b"\r\n".repeat(N)),
        ("no line end", vec![b'A'; N]),
        (
            "huge Content-Length",
            format!("{head}l: {}\r\n\r\n", "9".repeat(N)).into_bytes(),
        ),
    ];
    for (name, bytes) in cases {
        let t = Instant::now();
        exercise(&bytes);
        let mut framer = StreamFramer::new(usize::MAX);
        for chunk in bytes.chunks(1).take(20_000) {
            framer.push(chunk);
            let _ = framer.next_frame();
        }
        let spent = t.elapsed();
        eprintln!("{name}: {} bytes in {spent:?}", bytes.len());
        assert!(spent < Duration::from_secs(20), "{name} took {spent:?}");
    }
}
