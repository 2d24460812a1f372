//! Golden SDP interworking cases from conformance/sdp/cases/.
//!
//! Each case directory holds numbered steps, one SDP each, named `<n>-<side>-<offer|answer>.sdp`
//! (`side` is who sent it: `web` or `ims`). Step n's output — what the gateway sends to the
//! other side — must equal `<n>-<side>-<offer|answer>.expected.sdp` line by line, and must
//! itself parse. After the last step the settled media plan must equal `plan.expected.txt`.
//! Sessions use a fixed seed and a counting port allocator, so identifiers and ports are
//! stable. Secrets (ICE ufrag/pwd, SDES keys) come from the OS generator whatever the seed:
//! each is checked for its form, then written as a placeholder numbered per case
//! (`<ice-pwd 1>`), so an expectation still says which steps reuse a value and which draw anew.
//!
//! `ESTUARY_UPDATE_GOLDEN=1` writes missing or different expectations instead of failing; the
//! written files must then be reviewed by hand before they are committed.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use estuary_keys::KeySource;
use estuary_sdp::{parse, MediaPlan, PortAllocator, SdpPolicy, SdpSession, Side};

/// Web port 40000; IMS ports 30000, 30002, ... in allocation order.
pub struct CountingPorts {
    pub next_ims: u16,
}

impl PortAllocator for CountingPorts {
    fn web_port(&mut self) -> Option<u16> {
        Some(40000)
    }
    fn ims_port(&mut self, _index: usize) -> Option<u16> {
        let p = self.next_ims;
        self.next_ims += 2;
        Some(p)
    }
}

fn cases_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../conformance/sdp/cases")
}

/// The policy of the golden cases: the defaults with documentation addresses and a fixed
/// fingerprint; a case may switch to SDES toward IMS with a `policy` file naming `sdes`.
fn policy_for(case: &Path) -> SdpPolicy {
    let mut p = SdpPolicy {
        ims_address: "192.0.2.10".parse().unwrap(),
        web_address: "198.51.100.20".parse().unwrap(),
        ..SdpPolicy::default()
    };
    p.fingerprint = estuary_sdp::Fingerprint::parse(
        "sha-256 5C:F6:2A:6B:39:E1:4C:2F:8E:3A:55:C0:9B:7D:11:E2:42:90:6D:8C:AA:13:F7:0E:B4:21:93:5D:7A:66:0C:E8",
    )
    .unwrap();
    let words = std::fs::read_to_string(case.join("policy")).unwrap_or_default();
    for w in words.split_whitespace() {
        match w {
            "sdes" => p.ims.srtp = vec![estuary_sdp::Suite::AesCm128HmacSha1_80, estuary_sdp::Suite::AesCm128HmacSha1_32],
            "avpf" => p.ims.avpf = true,
            "rtcp-mux" => p.ims.rtcp_mux = true,
            "no-transcode" => p.transcode.clear(),
            "video-transcode" => p.transcode.extend(estuary_sdp::TranscodePair::video(&p.video)),
            // A session knob, not policy: see `session_for`.
            "video-withheld" => {}
            other => panic!("{}: unknown policy word {other}", case.display()),
        }
    }
    p
}

/// Secrets seen in one case, numbered in order of appearance per kind.
#[derive(Default)]
struct Secrets(HashMap<(&'static str, String), usize>);

impl Secrets {
    fn placeholder(&mut self, kind: &'static str, value: &str) -> String {
        let next = 1 + self.0.keys().filter(|(k, _)| *k == kind).count();
        let n = *self.0.entry((kind, value.to_owned())).or_insert(next);
        format!("<{kind} {n}>")
    }

    /// `out` with our ICE credentials and SDES keys replaced by placeholders; a value of the
    /// wrong form is a problem (the length and alphabet are what the OS draw must give).
    fn redact(&mut self, out: &str, problems: &mut Vec<String>, step: &str) -> String {
        const ICE_CHARS: &str = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        let mut redacted = String::with_capacity(out.len());
        for line in out.split_inclusive("\r\n") {
            let body = line.trim_end_matches("\r\n");
            let ending = &line[body.len()..];
            let mut ice = |attr: &str, kind: &'static str, len: usize| {
                let v = body.strip_prefix(attr)?;
                if v.len() != len || !v.chars().all(|c| ICE_CHARS.contains(c)) {
                    problems.push(format!("{step}: {attr}{v} is not {len} ice-chars"));
                }
                Some(format!("{attr}{}", self.placeholder(kind, v)))
            };
            let line = if let Some(l) = ice("a=ice-ufrag:", "ice-ufrag", 8) {
                l
            } else if let Some(l) = ice("a=ice-pwd:", "ice-pwd", 24) {
                l
            } else if let Some((before, rest)) = body.split_once("inline:").filter(|(b, _)| b.starts_with("a=crypto:")) {
                let end = rest.find(['|', ' ']).unwrap_or(rest.len());
                let (key, after) = rest.split_at(end);
                match base64::engine::general_purpose::STANDARD.decode(key) {
                    Ok(k) if k.len() == 30 || k.len() == 28 => {}
                    _ => problems.push(format!("{step}: {key} is not a base64 SRTP key and salt")),
                }
                format!("{before}inline:{}{after}", self.placeholder("key", key))
            } else {
                body.to_owned()
            };
            redacted.push_str(&line);
            redacted.push_str(ending);
        }
        redacted
    }
}

impl Secrets {
    /// The plan's `ufrag X` words as the same placeholders as in the SDP.
    fn redact_plan(&mut self, plan: &str) -> String {
        let mut out = String::new();
        for line in plan.split_inclusive('\n') {
            // Our own ufrag (`web port P ufrag U ...`); the browser's is not ours to redact.
            match line.split_once(" ufrag ").filter(|(before, _)| before.starts_with("web port ")) {
                Some((before, rest)) => {
                    let (ufrag, after) = rest.split_once(' ').unwrap_or((rest.trim_end(), "\n"));
                    let after = if rest.ends_with('\n') && !after.ends_with('\n') { format!("{after}\n") } else { after.to_owned() };
                    out.push_str(&format!("{before} ufrag {} {after}", self.placeholder("ice-ufrag", ufrag)));
                }
                None => out.push_str(line),
            }
        }
        out
    }
}

fn describe(plan: &MediaPlan) -> String {
    plan.to_string()
}

fn compare(path: &Path, actual: &str, problems: &mut Vec<String>) {
    let update = std::env::var_os("ESTUARY_UPDATE_GOLDEN").is_some();
    match std::fs::read_to_string(path) {
        Ok(expected) if expected == actual => {}
        Ok(_) | Err(_) if update => std::fs::write(path, actual).unwrap(),
        Ok(expected) => {
            let mut diff = String::new();
            let (e, a): (Vec<&str>, Vec<&str>) = (expected.lines().collect(), actual.lines().collect());
            for i in 0..e.len().max(a.len()) {
                let (x, y) = (e.get(i).copied().unwrap_or("<none>"), a.get(i).copied().unwrap_or("<none>"));
                if x != y {
                    let _ = writeln!(diff, "  line {}: expected {x:?}\n           actual   {y:?}", i + 1);
                }
            }
            problems.push(format!("{} differs:\n{diff}", path.display()));
        }
        Err(_) => problems.push(format!("{} missing; actual:\n{actual}", path.display())),
    }
}

#[test]
fn every_golden_case_produces_its_expected_sdp() {
    let mut cases: Vec<PathBuf> = std::fs::read_dir(cases_dir())
        .expect("conformance/sdp/cases")
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir())
        .collect();
    cases.sort();
    assert!(cases.len() >= 5, "golden cases missing");
    let mut problems = Vec::new();
    for case in &cases {
        let mut steps: Vec<PathBuf> = std::fs::read_dir(case)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| {
                let n = p.file_name().unwrap().to_string_lossy();
                n.ends_with(".sdp") && !n.ends_with(".expected.sdp")
            })
            .collect();
        steps.sort();
        let mut session = SdpSession::new(policy_for(case), 0x5EED, KeySource::os());
        // The transcoder is full: admission control withholds video transcoding.
        let words = std::fs::read_to_string(case.join("policy")).unwrap_or_default();
        if words.split_whitespace().any(|w| w == "video-withheld") {
            session.allow_video_transcoding(false);
        }
        let mut ports = CountingPorts { next_ims: 30000 };
        let mut secrets = Secrets::default();
        for step in &steps {
            let name = step.file_name().unwrap().to_string_lossy().into_owned();
            let parts: Vec<&str> = name.trim_end_matches(".sdp").splitn(3, '-').collect();
            let [_, side, kind] = parts[..] else { panic!("bad step name {name}") };
            let side = if side == "web" { Side::Web } else { Side::Ims };
            let body = std::fs::read(step).unwrap();
            let out = match kind {
                "offer" => session.offer(side, &body, &mut ports),
                "answer" => session.answer(side, &body),
                _ => panic!("bad step name {name}"),
            };
            let out = match out {
                Ok(o) => o,
                Err(e) => format!("ERROR {} {}\n", e.status(), e.reason),
            };
            if !out.starts_with("ERROR") {
                if let Err(e) = parse::parse(out.as_bytes()) {
                    problems.push(format!("{name} in {}: output does not parse: {e}", case.display()));
                }
            }
            let out = secrets.redact(&out, &mut problems, &name);
            compare(&step.with_file_name(name.replace(".sdp", ".expected.sdp")), &out, &mut problems);
        }
        let mut plan = session.plan().map(describe).unwrap_or_else(|| "no plan\n".to_owned());
        if session.video_dropped() {
            plan.push_str("video dropped: transcoding withheld\n");
        }
        let plan = secrets.redact_plan(&plan);
        compare(&case.join("plan.expected.txt"), &plan, &mut problems);
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}
