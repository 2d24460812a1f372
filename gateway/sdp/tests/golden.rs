//! Golden SDP interworking cases from conformance/sdp/cases/.
//!
//! Each case directory holds numbered steps, one SDP each, named `<n>-<side>-<offer|answer>.sdp`
//! (`side` is who sent it: `web` or `ims`). Step n's output — what the gateway sends to the
//! other side — must equal `<n>-<side>-<offer|answer>.expected.sdp` line by line, and must
//! itself parse. After the last step the settled media plan must equal `plan.expected.txt`.
//! Sessions use a fixed seed and a counting port allocator, so keys and ports are stable.
//!
//! `ESTUARY_UPDATE_GOLDEN=1` writes missing or different expectations instead of failing; the
//! written files must then be reviewed by hand before they are committed.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

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
            other => panic!("{}: unknown policy word {other}", case.display()),
        }
    }
    p
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
        let mut session = SdpSession::new(policy_for(case), 0x5EED);
        let mut ports = CountingPorts { next_ims: 30000 };
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
            compare(&step.with_file_name(name.replace(".sdp", ".expected.sdp")), &out, &mut problems);
        }
        let plan = session.plan().map(describe).unwrap_or_else(|| "no plan\n".to_owned());
        compare(&case.join("plan.expected.txt"), &plan, &mut problems);
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}
