//! The fuzz targets on stable, without libFuzzer: every target function over its seeds (read
//! where they already live in the repository), over every saved crash input under
//! `fuzz/regressions/NAME/`, and over a bounded deterministic mutation pass of the seeds (bit
//! flips, byte changes, truncations, insertions, duplications and splices of two seeds, from a
//! fixed-seed xorshift; 200 per seed, at least 4000 per target), so `make test` catches a
//! regression without nightly.
//!
//! A failure names the target and the case; the case's bytes are written to
//! `target/fuzz-seed-failure-NAME` (under the target directory) for `cargo fuzz run NAME FILE`.
//!
//! With `ESTUARY_FUZZ_SEEDS_OUT=DIR` set, `write_seed_corpus` writes each target's seeds to
//! `DIR/NAME/` instead, which is where `make fuzz` starts libFuzzer from.

#[path = "../../conformance/data/rfc5769.rs"]
mod rfc5769;

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::time::Instant;

use estuary_pcap::{classify, CaptureReader, Kind};

/// Mutations per seed, and at least per target (targets with a handful of seeds get more per
/// seed). With the seed counts of today the whole test takes about 5 s in a debug build on a
/// 2-core machine.
const MUTATIONS: usize = 200;
const MIN_MUTANTS_PER_TARGET: usize = 4000;

type Target = fn(&[u8]);

const TARGETS: [(&str, Target); 7] = [
    ("sip_message", estuary_fuzz::sip_message),
    ("sdp", estuary_fuzz::sdp),
    ("stun", estuary_fuzz::stun),
    ("rtp_rtcp", estuary_fuzz::rtp_rtcp),
    ("sdes_fingerprint", estuary_fuzz::sdes_fingerprint),
    ("pcap", estuary_fuzz::pcap),
    ("b2bua", estuary_fuzz::b2bua),
];

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Files under `dir` (recursively) whose name ends with `suffix`, sorted.
fn files(dir: &Path, suffix: &str) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(files(&p, suffix));
        } else if p.to_string_lossy().ends_with(suffix) {
            out.push(p);
        }
    }
    out.sort();
    out
}

fn read_all(paths: &[PathBuf]) -> Vec<Vec<u8>> {
    paths
        .iter()
        .map(|p| std::fs::read(p).unwrap_or_else(|e| panic!("{}: {e}", p.display())))
        .collect()
}

/// What the conformance captures hold: the files themselves, and their UDP payloads by kind,
/// with the SIP of each capture also as one b2bua script (web or IMS side by interface name).
#[derive(Default)]
struct Captures {
    files: Vec<Vec<u8>>,
    sip: Vec<Vec<u8>>,
    stun: Vec<Vec<u8>>,
    rtp: Vec<Vec<u8>>,
    scripts: Vec<Vec<u8>>,
}

fn captures() -> Captures {
    let mut c = Captures::default();
    let paths = files(&repo().join("conformance/captures"), ".pcapng");
    assert!(!paths.is_empty(), "no capture in conformance/captures");
    for bytes in read_all(&paths) {
        let mut reader = CaptureReader::new(&bytes[..]).expect("a corpus capture reads");
        let mut script: Vec<u8> = Vec::new();
        while let Ok(Some(r)) = reader.next_record() {
            let (iface, data) = (r.interface, r.data.to_vec());
            let linktype = estuary_pcap::LinkType::RAW;
            let Ok(p) = estuary_pcap::decode(linktype, &data)
                .or_else(|_| estuary_pcap::decode(estuary_pcap::LinkType::ETHERNET, &data))
            else {
                continue;
            };
            let payload = p.payload.to_vec();
            match classify(&payload) {
                Kind::Sip => {
                    let side = match reader.interface_name(iface) {
                        Some(n) if n.starts_with("ims") => b'I',
                        _ => b'W',
                    };
                    if !script.is_empty() {
                        script.push(0);
                    }
                    script.push(side);
                    script.extend_from_slice(&payload);
                    c.sip.push(payload);
                }
                Kind::Stun => c.stun.push(payload),
                Kind::Rtp | Kind::Rtcp => c.rtp.push(payload),
                _ => {}
            }
        }
        if !script.is_empty() {
            c.scripts.push(script);
        }
        c.files.push(bytes);
    }
    c
}

/// Hand-made RTP and RTCP: the shapes the captures may lack (extensions of both forms, CSRCs,
/// padding, telephone events, every RTCP type the parser knows).
fn rtp_packets() -> Vec<Vec<u8>> {
    vec![
        // RTP, PT 0, one-byte extension (audio level id 1, mid id 4), 4 payload bytes.
        vec![
            0x90, 0x00, 0x12, 0x34, 0, 0, 0x03, 0x20, 0xde, 0xad, 0xbe, 0xef, 0xbe, 0xde, 0, 2,
            0x10, 0x85, 0x40, b'0', 0, 0, 0, 0, 1, 2, 3, 4,
        ],
        // RTP with two CSRCs, padding (3 bytes) and the two-byte extension form.
        vec![
            0xa2, 0x6f, 0, 1, 0, 0, 0, 9, 0, 0, 0, 1, 0, 0, 0, 2, 0, 0, 0, 3, 0xb2, 0x10, 0, 1,
            0x05, 0x02, 0xaa, 0xbb, 9, 9, 0, 0, 3,
        ],
        // RTP telephone-event (PT 101, marker): digit 5, end, volume 10, duration 1600.
        vec![
            0x80, 0xe5, 0, 7, 0, 0, 0x1f, 0x40, 0, 0, 0, 5, 0x05, 0x8a, 0x06, 0x40,
        ],
        // RTCP compound: SR with one report block, SDES with a CNAME.
        vec![
            0x81, 200, 0, 12, 0, 0, 0, 1, 0xe8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x03, 0x20, 0, 0, 0, 10,
            0, 0, 0x0f, 0xa0, 0, 0, 0, 2, 0x01, 0, 0, 3, 0, 0, 0x12, 0x34, 0, 0, 0, 5, 0, 0, 0, 0,
            0, 0, 0, 0, 0x81, 202, 0, 3, 0, 0, 0, 1, 1, 5, b'a', b'b', b'c', b'd', b'e', 0, 0, 0,
        ],
        // RR without blocks, BYE with a reason, generic NACK, PLI, FIR, APP.
        vec![
            0x80, 201, 0, 1, 0, 0, 0, 1, 0x81, 203, 0, 2, 0, 0, 0, 1, 3, b'b', b'y', b'e', 0x81,
            205, 0, 3, 0, 0, 0, 1, 0, 0, 0, 2, 0, 10, 0, 5, 0x81, 206, 0, 2, 0, 0, 0, 1, 0, 0, 0,
            2, 0x84, 206, 0, 4, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 2, 7, 0, 0, 0, 0x80, 204, 0, 2, 0,
            0, 0, 1, b'n', b'a', b'm', b'e',
        ],
    ]
}

/// `a=crypto` and `a=fingerprint` lines of the SDP corpus, one per seed, plus some of our own.
fn sdes_lines(sdps: &[Vec<u8>]) -> Vec<Vec<u8>> {
    let mut out: Vec<Vec<u8>> = vec![
        b"a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:d0RmdmcmVCspeEc3QGZiNWpVLFJhQX1cfHAwJSoj|2^20|1:32".to_vec(),
        b"1 AES_CM_128_HMAC_SHA1_32 inline:NzB4d1BINUAvLEw6UzF3WSJ+PSdFcGdUJShpX1Zj;inline:QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVpbXF1e|2^31|2:4 KDR=1 UNENCRYPTED_SRTCP".to_vec(),
        b"2 AEAD_AES_128_GCM inline:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGw== FEC_ORDER=FEC_SRTP".to_vec(),
        b"a=fingerprint:sha-1 4A:AD:B9:B1:3F:82:18:3B:54:02:12:DF:3E:5D:49:6B:19:E5:7C:AB".to_vec(),
    ];
    for sdp in sdps {
        for line in sdp.split(|&b| b == b'\n') {
            if line.starts_with(b"a=crypto:") || line.starts_with(b"a=fingerprint:") {
                let line = line.strip_suffix(b"\r").unwrap_or(line).to_vec();
                if !out.contains(&line) {
                    out.push(line);
                }
            }
        }
    }
    out
}

/// Every target's seeds, in a fixed order.
fn seeds() -> Vec<(&'static str, Vec<Vec<u8>>)> {
    let root = repo();
    let rfc4475 = read_all(&files(&root.join("conformance/data/rfc4475"), ".dat"));
    assert_eq!(rfc4475.len(), 49, "the RFC 4475 corpus holds 49 messages");
    let mut sdps = read_all(&files(&root.join("conformance/sdp/cases"), ".sdp"));
    sdps.extend(read_all(&files(
        &root.join("conformance/sdp/chromium"),
        ".sdp",
    )));
    assert!(sdps.len() > 50, "the SDP corpus went missing");
    let caps = captures();
    let stun_vectors = vec![
        rfc5769::SAMPLE_REQUEST.to_vec(),
        rfc5769::SAMPLE_IPV4_RESPONSE.to_vec(),
        rfc5769::SAMPLE_IPV6_RESPONSE.to_vec(),
    ];

    let mut sip = rfc4475.clone();
    sip.extend(caps.sip.iter().cloned());

    let mut stun = stun_vectors.clone();
    stun.extend(caps.stun.iter().cloned());
    // Two datagrams in one input: the request, then the same again (a retransmission).
    stun.push(
        [
            &rfc5769::SAMPLE_REQUEST[..],
            &[0xFE],
            &rfc5769::SAMPLE_REQUEST[..],
        ]
        .concat(),
    );

    let mut rtp = rtp_packets();
    rtp.extend(caps.rtp.iter().take(64).cloned());

    let mut sdes = sdes_lines(&sdps);
    sdes.extend(rtp_packets());

    let mut b2bua = read_all(&files(&root.join("fuzz/seeds/b2bua"), ""));
    b2bua.extend(caps.scripts.iter().cloned());
    // Each torture message once as it comes from a browser, and from IMS.
    for m in &rfc4475 {
        b2bua.push([&b"W"[..], m].concat());
        b2bua.push([&b"I"[..], m].concat());
    }

    vec![
        ("sip_message", sip),
        ("sdp", sdps),
        ("stun", stun),
        ("rtp_rtcp", rtp),
        ("sdes_fingerprint", sdes),
        ("pcap", caps.files),
        ("b2bua", b2bua),
    ]
}

fn regressions(name: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let paths = files(&repo().join("fuzz/regressions").join(name), "");
    let bytes = read_all(&paths);
    paths.into_iter().zip(bytes).collect()
}

fn target(name: &str) -> Target {
    TARGETS
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, f)| *f)
        .expect("known target")
}

/// Runs `f` on `data`; on a panic saves the input and fails with `what`.
fn run(name: &str, f: Target, data: &[u8], what: &dyn Fn() -> String) {
    if catch_unwind(AssertUnwindSafe(|| f(data))).is_err() {
        let dir = std::env::var_os("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| repo().join("target"));
        let path = dir.join(format!("fuzz-seed-failure-{name}"));
        let _ = std::fs::create_dir_all(&dir);
        let _ = std::fs::write(&path, data);
        panic!(
            "{name}: {} panicked; input saved to {}",
            what(),
            path.display()
        );
    }
}

/// xorshift64: a fixed sequence, so every run tests the same mutants.
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

/// Bytes that steer parsers: delimiters, the b2bua script's separator and quotes, lengths.
const INTERESTING: &[u8] = b"\0\r\n\t \"\\<>;,:@%=/$VFTCUB\x7f\x80\xfe\xff\x01\x02\x0401239SIP";

fn mutate(rng: &mut XorShift, seed: &[u8], other: &[u8]) -> Vec<u8> {
    let mut v = seed.to_vec();
    for _ in 0..=rng.below(3) {
        let at = rng.below(v.len() + 1);
        match rng.below(8) {
            0 if at < v.len() => v[at] ^= 1 << rng.below(8),
            1 if at < v.len() => v[at] = INTERESTING[rng.below(INTERESTING.len())],
            2 if at < v.len() => v[at] = rng.next() as u8,
            3 => {
                let end = (at + 1 + rng.below(32)).min(v.len());
                v.drain(at.min(end)..end);
            }
            4 => {
                let end = (at + rng.below(64)).min(v.len());
                let dup = v[at..end].to_vec();
                v.splice(at..at, dup);
            }
            5 => {
                let n = 1 + rng.below(8);
                let ins: Vec<u8> = (0..n)
                    .map(|_| INTERESTING[rng.below(INTERESTING.len())])
                    .collect();
                v.splice(at..at, ins);
            }
            6 if !other.is_empty() => {
                // Splice: our head, then the other seed's tail.
                let from = rng.below(other.len());
                v.truncate(at);
                v.extend_from_slice(&other[from..]);
            }
            _ => v.truncate(at),
        }
    }
    v
}

#[test]
fn seeds_regressions_and_mutants() {
    let started = Instant::now();
    let mut report = Vec::new();
    for (name, seeds) in seeds() {
        let t0 = Instant::now();
        let f = target(name);
        assert!(!seeds.is_empty(), "{name}: no seeds");
        for (i, s) in seeds.iter().enumerate() {
            run(name, f, s, &|| format!("seed {i}"));
        }
        let regs = regressions(name);
        for (path, bytes) in &regs {
            run(name, f, bytes, &|| format!("regression {}", path.display()));
        }
        let mut rng = XorShift(0x9E37_79B9_7F4A_7C15 ^ name.len() as u64);
        let mut cases = 0;
        let per_seed = MUTATIONS.max(MIN_MUTANTS_PER_TARGET / seeds.len());
        for (i, s) in seeds.iter().enumerate() {
            for m in 0..per_seed {
                let other = &seeds[rng.below(seeds.len())];
                let input = mutate(&mut rng, s, other);
                run(name, f, &input, &|| format!("mutant {m} of seed {i}"));
                cases += 1;
            }
        }
        report.push(format!(
            "{name}: {} seeds, {} regressions, {cases} mutants in {:.1} s",
            seeds.len(),
            regs.len(),
            t0.elapsed().as_secs_f64()
        ));
    }
    for line in &report {
        eprintln!("{line}");
    }
    eprintln!("total {:.1} s", started.elapsed().as_secs_f64());
}

/// `ESTUARY_FUZZ_SEEDS_OUT=DIR`: writes every target's seeds to `DIR/NAME/` for libFuzzer
/// (`make fuzz`). Without the variable it only checks that the seeds load.
#[test]
fn write_seed_corpus() {
    let all = seeds();
    let Some(out) = std::env::var_os("ESTUARY_FUZZ_SEEDS_OUT") else {
        return;
    };
    let out = PathBuf::from(out);
    for (name, seeds) in all {
        let dir = out.join(name);
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
        for (i, s) in seeds.iter().enumerate() {
            std::fs::write(dir.join(format!("seed-{i:04}")), s).expect("write seed");
        }
    }
}
