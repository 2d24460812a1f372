//! Diameter Rx toward a PCRF, end to end: headless Chromium's demo page calls through the
//! daemon and Kamailio (the core: registrar and proxy) to a sipp callee that echoes RTP, while
//! the daemon talks Rx over real TCP to the conformance PCRF ([`PcrfServer`]).
//!
//! * a call is authorized (initial AAR: the browser's address, one Media-Component per m-line,
//!   flows naming the ICE pair the browser really uses, the call's ICID), media flows, and the
//!   hang-up sends STR; the call record and /metrics say so; Wireshark's dissector reads the
//!   PCRF's capture without error;
//! * a RAR reporting the loss of the bearer ends the call with BYE on both sides within 1 s;
//! * with `rx.on_failure = "closed"` a refusing PCRF gives the browser 503, and the callee, who
//!   had answered, gets ACK then BYE;
//! * when the primary PCRF dies, the next call's AAR goes to the secondary;
//! * with `rx.signalling = true` the registration's AAR describes the page's WebSocket (a TCP
//!   connection `ss` sees), and a RAR reporting that bearer lost ends the page's call on both
//!   sides (`signalling_bearer_loss`).
//!
//! Browser, daemon, Kamailio, sipp and the PCRF share one loopback-only network namespace per
//! test. Needs Chromium, sipp, kamailio and tshark (make deps) and `cargo build -p estuary`:
//! a missing tool fails the test, none is skipped.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use estuary_conformance::browser::{Browser, Netns};
use estuary_conformance::demo_page::*;
use estuary_conformance::flows::{Setup, PASSWORD};
use estuary_conformance::gateway::Gateway;
use estuary_conformance::kamailio::Kamailio;
use estuary_conformance::net::{free_udp_port, in_loopback_netns, scratch_dir};
use estuary_conformance::pcrf::{AarAnswer, AarSummary, PcrfServer};
use estuary_conformance::records::{temp_dir, wait_records};
use estuary_conformance::sipp::{Sipp, SippRun};
use serde_json::Value;

/// Upper bound of every wait on the PCRF's side.
const RX_WAIT: Duration = Duration::from_secs(10);
/// Rx-Request-Type (TS 29.214 §5.3.31).
const INITIAL_REQUEST: u32 = 0;
const UPDATE_REQUEST: u32 = 1;
/// How soon after start the daemon must have done CER/CEA with every peer, traffic or not.
const STARTUP_CER: Duration = Duration::from_secs(3);

/// Fails loudly without tshark (and, through the other requires, without the rest).
fn require_tools() {
    Browser::require();
    Kamailio::require();
    let ok = Command::new("tshark").arg("-v").output().is_ok_and(|o| o.status.success());
    assert!(ok, "tshark is needed to check the PCRF's capture: apt-get install tshark (make deps installs it)");
}

/// Everything one test runs, dropped browser first.
struct Lab {
    b: Browser,
    s: Setup,
    k: Kamailio,
    records: PathBuf,
    /// How long after the daemon's start every PCRF had an open connection (before any SIP
    /// traffic), or why not.
    startup: Result<Duration, String>,
}

impl Lab {
    /// Kamailio as the core, bob registered there (contact: sipp's port, where the echo UAS
    /// will answer), a daemon with Rx toward `pcrfs` in order, Chromium's demo page
    /// registered as alice through the daemon and Kamailio.
    async fn start(test: &str, pcrfs: &[&PcrfServer], on_failure: &str) -> Lab {
        Lab::start_with(test, pcrfs, on_failure, &[]).await
    }

    /// As [`Lab::start`], with more daemon settings.
    async fn start_with(test: &str, pcrfs: &[&PcrfServer], on_failure: &str, extra: &[(&str, &str)]) -> Lab {
        let k = tokio::task::block_in_place(|| Kamailio::start(test));
        let records = temp_dir(test);
        let peers: Vec<String> = pcrfs.iter().map(|p| p.peer_entry()).collect();
        let mut builder = Gateway::builder()
            .set("ims.next_hop", &format!("sip:{};transport=udp", k.udp))
            .set("records.dir", &records.to_string_lossy())
            .set("rx.enabled", "true")
            .set("rx.peers", &peers.join(","))
            .set("rx.on_failure", on_failure);
        for (key, value) in extra {
            builder = builder.set(key, value);
        }
        let gw = builder.start().await;
        // At start, before any SIP traffic, the daemon connects to every peer (CER/CEA).
        let started = Instant::now();
        let all_up = || pcrfs.iter().all(|p| p.connections_up() > 0);
        while !all_up() && started.elapsed() < STARTUP_CER {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let startup = if all_up() {
            Ok(started.elapsed())
        } else {
            Err(format!(
                "with no SIP traffic yet, the daemon had not opened every Rx peer within {STARTUP_CER:?} of start \
                 (connections accepted per PCRF: {:?}, up: {:?})\n--- daemon\n{}",
                pcrfs.iter().map(|p| p.connections_accepted()).collect::<Vec<_>>(),
                pcrfs.iter().map(|p| p.connections_up()).collect::<Vec<_>>(),
                gw.log_tail(30)
            ))
        };
        let bob_port = free_udp_port();
        tokio::task::block_in_place(|| k.register_ue("bob", bob_port));
        let s = Setup { gw, sipp_port: bob_port, tcp: false };
        let mut b = tokio::task::block_in_place(|| Browser::start_in(Netns::Inherit));
        let state = register_page(&s.gw, &mut b, PASSWORD);
        assert_eq!(
            state.as_deref(),
            Ok("registered"),
            "the demo page registers through the daemon at Kamailio\n--- page log\n{}\n--- kamailio\n{}\n--- daemon\n{}",
            page_log(&mut b),
            k.log(),
            s.gw.log_tail(40)
        );
        for (i, p) in pcrfs.iter().enumerate() {
            let series = peer_up(p, i);
            let up = wait_metric(&s.gw, &series, |v| v == 1.0).await;
            assert_eq!(up, Some(1.0), "{series} after CER/CEA\n--- daemon\n{}", s.gw.log_tail(60));
            assert!(p.connections_up() >= 1, "the PCRF saw the CER");
        }
        Lab { b, s, k, records, startup }
    }

    /// The echo callee on bob's contact port (ACK, then a BYE from either side).
    async fn callee(&self) -> Sipp {
        self.s.echo_uas("uas_answer_echo.xml", free_udp_port()).await
    }

    /// Dials bob from the page; the call's final state there.
    fn dial(&mut self) -> Result<String, String> {
        tokio::task::block_in_place(|| {
            self.b.page_fill(PAGE, "#target", "sip:bob@ims.test").unwrap();
            self.b.page_click(PAGE, "#dial").unwrap();
        });
        wait_call(&mut self.b, &["confirmed", "failed", "ended"])
    }

    fn context(&mut self) -> String {
        format!("--- page log\n{}\n--- kamailio\n{}\n--- daemon\n{}", page_log(&mut self.b), self.k.log(), self.s.gw.log_tail(80))
    }

    fn assert_confirmed(&mut self, state: Result<String, String>) {
        if state.as_deref() != Ok("confirmed") {
            panic!("call not established: {state:?}\n{}", self.context());
        }
    }

    /// Kamailio's log lines for requests of `method` it routed.
    fn routed(&self, method: &str) -> Vec<String> {
        self.k.log().lines().filter(|l| l.contains(&format!("ROUTE {method} "))).map(str::to_owned).collect()
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.records);
        }
    }
}

/// The /metrics series of a PCRF's `estuary_rx_peer_up` (index in `rx.peers`).
fn peer_up(p: &PcrfServer, index: usize) -> String {
    let role = if index == 0 { "primary" } else { "secondary" };
    format!("estuary_rx_peer_up{{peer=\"{}\",role=\"{role}\"}}", p.peer_entry())
}

/// Polls /metrics (every 50 ms, 10 s at most) until `series` satisfies `done`; its last value.
async fn wait_metric(gw: &Gateway, series: &str, done: impl Fn(f64) -> bool) -> Option<f64> {
    let deadline = Instant::now() + RX_WAIT;
    loop {
        let v = gw.metric(series);
        if v.is_some_and(&done) || Instant::now() >= deadline {
            return v;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The page's nominated ICE pair: (browser's address, gateway's address).
fn selected_pair(stats: &Value) -> (SocketAddr, SocketAddr) {
    let pair = &stats["pairs"][0];
    let addr = |side: &str| {
        pair[side]
            .as_str()
            .and_then(|a| a.parse::<SocketAddr>().ok())
            .unwrap_or_else(|| panic!("the nominated pair's {side} address: {stats:#}"))
    };
    (addr("local"), addr("remote"))
}

/// The two Flow-Descriptions TS 29.214 §5.3.8 wants for a UDP flow between the gateway's
/// browser-facing address `gw` and the browser `ue`: downlink "out", uplink "in".
fn expected_flows(gw: SocketAddr, ue: SocketAddr) -> Vec<String> {
    vec![
        format!("permit out 17 from {} {} to {} {}", gw.ip(), gw.port(), ue.ip(), ue.port()),
        format!("permit in 17 from {} {} to {} {}", ue.ip(), ue.port(), gw.ip(), gw.port()),
    ]
}

/// The Flow-Descriptions of the first component's first sub-component.
fn first_flows(aar: &AarSummary) -> Vec<String> {
    aar.components
        .first()
        .and_then(|c| c.sub_components.first())
        .map(|s| s.flow_descriptions.clone())
        .unwrap_or_default()
}

/// "permit DIR PROTO from A PA to B PB" -> the four addresses and ports.
fn flow_ends(flow: &str) -> Option<(String, u16, String, u16)> {
    let w: Vec<&str> = flow.split_whitespace().collect();
    match w.as_slice() {
        ["permit", _, _, "from", a, pa, "to", b, pb] => Some((a.to_string(), pa.parse().ok()?, b.to_string(), pb.parse().ok()?)),
        _ => None,
    }
}

/// The page's RTP both ways (loosely: at least 50 packets each way) over DTLS.
fn assert_media(stats: &Value, context: impl Fn() -> String) {
    let (inbound, outbound) = (audio(stats, "inbound-rtp"), audio(stats, "outbound-rtp"));
    assert!(
        number(outbound, "packets") >= 50.0 && number(inbound, "packets") >= 50.0,
        "RTP both ways through the daemon: stats {stats:#}\n{}",
        context()
    );
    assert_eq!(stats["transports"][0]["dtlsState"], "connected", "{stats:#}");
}

fn assert_bye_seen(run: &SippRun, context: impl Fn() -> String) {
    assert!(run.succeeded(), "sipp failed: {}\n{}", run.describe(), context());
    assert_eq!(run.received_requests("BYE").len(), 1, "sipp saw the BYE: {}", run.describe());
}

fn tshark(args: &[&str]) -> String {
    let out = Command::new("tshark")
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("tshark could not be run ({e}): apt-get install tshark (make deps)"));
    assert!(out.status.success(), "tshark {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Wireshark's Diameter dissector on the PCRF's capture: AAR and STR present, no malformed
/// packet or expert error, the Rx AVPs named.
fn assert_tshark_reads(pcrf: &PcrfServer) {
    let dir = scratch_dir("rx_policy");
    let path = dir.join("pcrf.pcap");
    pcrf.write_pcap(&path);
    let file = path.to_str().unwrap();
    let decode_as = format!("tcp.port=={},diameter", pcrf.addr().port());
    let fields = tshark(&["-r", file, "-d", &decode_as, "-Y", "diameter", "-T", "fields", "-e", "diameter.cmd.code", "-e", "diameter.flags.request", "-e", "_ws.expert"]);
    let codes: Vec<&str> = fields.lines().filter_map(|l| l.split('\t').next()).collect();
    for (code, name) in [("257", "CER/CEA"), ("265", "AAR/AAA"), ("275", "STR/STA")] {
        assert!(codes.iter().any(|c| c.split(',').any(|c| c == code)), "{name} ({code}) in the capture {}:\n{fields}", path.display());
    }
    let verbose = tshark(&["-r", file, "-d", &decode_as, "-V", "-Y", "diameter"]);
    assert!(!verbose.contains("Malformed"), "malformed packet in {}:\n{verbose}", path.display());
    assert!(!verbose.contains("Expert Info (Error"), "expert error in {}:\n{verbose}", path.display());
    for needle in [
        "Command Code: AA (265)",
        "Command Code: Session-Termination (275)",
        "ApplicationId: 3GPP Rx (16777236)",
        "Media-Component-Description",
        "Media-Sub-Component",
        "Flow-Description",
        "AF-Charging-Identifier",
        "Framed-IP-Address",
    ] {
        assert!(verbose.contains(needle), "tshark names {needle:?} in {}:\n{verbose}", path.display());
    }
    println!("tshark read {} Diameter messages from the PCRF's capture without error: {}", codes.len(), codes.join(" "));
    let _ = std::fs::remove_dir_all(&dir);
}

/// The last AAR of `session` once its flows are `want` (an update follows ICE's choice when it
/// differs from the browser's best SDP candidate), else the last one after `RX_WAIT`.
fn settled_aar(pcrf: &PcrfServer, session: &str, want: &[String]) -> AarSummary {
    let deadline = Instant::now() + RX_WAIT;
    loop {
        let last = pcrf.aars().into_iter().rev().find(|a| a.session_id == session).expect("the session's AAR");
        if first_flows(&last) == want || Instant::now() >= deadline {
            return last;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

const AUTHORIZED: &str = "a_browser_call_is_authorized_described_and_terminated";

#[test]
fn a_browser_call_is_authorized_described_and_terminated() {
    require_tools();
    if !in_loopback_netns(AUTHORIZED) {
        return;
    }
    estuary_conformance::browser_runtime().block_on(async {
        let pcrf = PcrfServer::start("primary");
        let mut l = Lab::start(AUTHORIZED, &[&pcrf], "closed").await;
        let sipp = l.callee().await;
        let state = l.dial();
        l.assert_confirmed(state);
        let stats = media_stats(&mut l.b).await;
        assert_media(&stats, || format!("--- daemon\n{}", l.s.gw.log_tail(60)));
        let (ue, gw_media) = selected_pair(&stats);

        // The initial AAR: the browser's WebSocket address, one component per m-line, its flows
        // between the gateway's browser-facing port and the browser.
        let aars = pcrf.wait_aars(1, RX_WAIT);
        let initial = aars.first().unwrap_or_else(|| panic!("no AAR at the PCRF\n{}", l.context())).clone();
        assert_eq!(initial.request_type, Some(INITIAL_REQUEST), "{initial:#?}");
        assert_eq!(initial.framed_ip, Some("127.0.0.1".parse().unwrap()), "Framed-IP-Address = the browser's WebSocket peer: {initial:#?}");
        assert_eq!(initial.components.len(), 1, "one Media-Component-Description for the one m-line: {initial:#?}");
        let flows = first_flows(&initial);
        assert_eq!(flows.len(), 2, "a downlink and an uplink Flow-Description: {initial:#?}");
        let ends: Vec<_> = flows.iter().map(|f| flow_ends(f).unwrap_or_else(|| panic!("Flow-Description {f:?}"))).collect();
        assert!(flows[0].starts_with("permit out 17 ") && flows[1].starts_with("permit in 17 "), "{flows:?}");
        assert_eq!((ends[0].0.as_str(), ends[0].1), ("127.0.0.1", gw_media.port()), "downlink from media.web_address and the gateway's browser-facing port {gw_media}: {flows:?}");
        assert_eq!((ends[1].2.as_str(), ends[1].3), ("127.0.0.1", gw_media.port()), "uplink to the gateway's browser-facing port {gw_media}: {flows:?}");
        assert_eq!(ends[0].2, "127.0.0.1", "the browser's address: {flows:?}");
        // Once ICE has chosen, the session describes the pair in use (an update AAR if it
        // differs from the SDP candidate the initial AAR named).
        let want = expected_flows(gw_media, ue);
        let settled = settled_aar(&pcrf, &initial.session_id, &want);
        assert_eq!(first_flows(&settled), want, "the flows of the ICE pair in use ({ue} <-> {gw_media}); AARs {:#?}", pcrf.aars());
        for update in pcrf.aars().iter().skip(1) {
            assert_eq!((update.session_id.as_str(), update.request_type), (initial.session_id.as_str(), Some(UPDATE_REQUEST)), "only updates of the one session follow: {update:#?}");
        }
        println!("AARs: {} (initial flows {flows:?}, settled {want:?})", pcrf.aars().len());

        hang_up(&mut l.b);
        let run = sipp.wait().await;
        assert_bye_seen(&run, || l.s.gw.log_tail(60));
        let strs = pcrf.wait_strs(1, RX_WAIT);
        assert_eq!(strs.iter().map(|s| s.session_id.as_str()).collect::<Vec<_>>(), [initial.session_id.as_str()], "one STR for the session at hang-up\n{}", l.s.gw.log_tail(60));

        // The record: the ICID the PCRF got, the Rx session and its result.
        let r = tokio::task::block_in_place(|| wait_records(&l.records, 1)).remove(0);
        assert_eq!((r["status"].as_u64(), r["reason"].as_str()), (Some(200), Some("bye_from_web")), "{r}");
        let icid = r["icid"].as_str().unwrap_or_default();
        assert!(!icid.is_empty(), "{r}");
        assert_eq!(initial.af_charging_id.as_deref(), Some(icid), "AF-Charging-Identifier = the call's ICID: {r}");
        assert!(run.received_requests("INVITE")[0].header("P-Charging-Vector").is_some_and(|v| v.contains(icid)), "the same ICID toward the core");
        assert_eq!(r["rx"]["session_id"].as_str(), Some(initial.session_id.as_str()), "{r}");
        assert_eq!(r["rx"]["result"].as_str(), Some("2001"), "{r}");

        // /metrics.
        let gw = &l.s.gw;
        assert_eq!(gw.metric(&peer_up(&pcrf, 0)), Some(1.0), "the primary stays up");
        let success = gw.metric("estuary_rx_answers_total{command=\"AAA\",result=\"success\"}");
        assert!(success.is_some_and(|v| v >= 1.0), "AAA success counted: {success:?}");
        let initial_sent = gw.metric("estuary_rx_requests_total{command=\"AAR\",kind=\"initial\"}");
        assert_eq!(initial_sent, Some(1.0), "one initial AAR counted");
        let str_ok = wait_metric(gw, "estuary_rx_answers_total{command=\"STA\",result=\"success\"}", |v| v >= 1.0).await;
        assert_eq!(str_ok, Some(1.0), "STA success counted");

        // Kamailio carried the dialog: INVITE, ACK and BYE.
        for method in ["INVITE", "ACK", "BYE"] {
            assert!(!l.routed(method).is_empty(), "{method} through Kamailio:\n{}", l.k.log());
        }
        assert_tshark_reads(&pcrf);
        // Last, so that everything above is checked whatever this says.
        match &l.startup {
            Ok(after) => println!("the daemon did CER/CEA {after:?} after its start, before any SIP traffic"),
            Err(why) => panic!("{why}"),
        }
    });
}

const BEARER_LOST: &str = "a_rar_for_lost_bearer_ends_the_call_on_both_sides_within_a_second";

#[test]
fn a_rar_for_lost_bearer_ends_the_call_on_both_sides_within_a_second() {
    require_tools();
    if !in_loopback_netns(BEARER_LOST) {
        return;
    }
    estuary_conformance::browser_runtime().block_on(async {
        let pcrf = PcrfServer::start("primary");
        let mut l = Lab::start(BEARER_LOST, &[&pcrf], "open").await;
        let sipp = l.callee().await;
        let state = l.dial();
        l.assert_confirmed(state);
        let aars = pcrf.wait_aars(1, RX_WAIT);
        let session = aars.first().unwrap_or_else(|| panic!("no AAR\n{}", l.context())).session_id.clone();
        // Let the call settle (ICE, DTLS, the update AAR if any) before the bearer goes.
        let stats = media_stats(&mut l.b).await;
        assert_media(&stats, || format!("--- daemon\n{}", l.s.gw.log_tail(60)));
        assert!(l.routed("BYE").is_empty(), "no BYE yet");

        let sent = Instant::now();
        pcrf.send_rar_loss_of_bearer(&session);
        let ended = wait_call(&mut l.b, &["ended", "failed"]);
        let page_after = sent.elapsed();
        let mut ims_after = None;
        while sent.elapsed() < Duration::from_secs(5) {
            if !l.routed("BYE").is_empty() {
                ims_after = Some(sent.elapsed());
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(ended.as_deref(), Ok("ended"), "the page's call ends (BYE from the gateway)\n{}", l.context());
        println!("RAR (loss of bearer) -> page ended after {page_after:?}, BYE at the core after {ims_after:?}");
        assert!(page_after < Duration::from_secs(1), "the browser's call ended {page_after:?} after the RAR (want < 1 s)");
        let ims_after = ims_after.unwrap_or_else(|| panic!("no BYE toward the core within 5 s of the RAR\n{}", l.context()));
        assert!(ims_after < Duration::from_secs(1), "the core got the BYE {ims_after:?} after the RAR (want < 1 s)");

        let run = sipp.wait().await;
        assert_bye_seen(&run, || l.s.gw.log_tail(60));
        let bye = run.received_requests("BYE")[0].clone();
        let reason = bye.header("Reason").unwrap_or_default().to_owned();
        assert!(reason.contains("RELEASE_CAUSE") && reason.contains("cause=3"), "the BYE toward the core says why (Reason: RELEASE_CAUSE;cause=3): {bye}");
        let log = page_log(&mut l.b);
        assert!(log.contains("ended by the far end"), "the page saw the gateway's BYE:\n{log}");

        let answers = pcrf.wait_answers(1, RX_WAIT);
        let raa = answers.first().unwrap_or_else(|| panic!("no RAA\n{}", l.context()));
        assert_eq!((raa.command_code, raa.result_code()), (258, Some(2001)), "RAA 2001: {raa:?}");
        let strs = pcrf.wait_strs(1, RX_WAIT);
        assert_eq!(strs.iter().map(|s| s.session_id.as_str()).collect::<Vec<_>>(), [session.as_str()], "the session ends with STR");

        let r = tokio::task::block_in_place(|| wait_records(&l.records, 1)).remove(0);
        assert_eq!(r["reason"].as_str(), Some("media_bearer_loss"), "{r}");
        assert_eq!(r["rx"]["session_id"].as_str(), Some(session.as_str()), "{r}");
        let rar = l.s.gw.metric("estuary_rx_pcrf_requests_total{command=\"RAR\"}");
        assert_eq!(rar, Some(1.0), "the RAR counted");
    });
}

const REFUSED: &str = "closed_policy_and_a_refusing_pcrf_give_the_browser_503";

#[test]
fn closed_policy_and_a_refusing_pcrf_give_the_browser_503() {
    require_tools();
    if !in_loopback_netns(REFUSED) {
        return;
    }
    estuary_conformance::browser_runtime().block_on(async {
        let pcrf = PcrfServer::start("primary");
        pcrf.set_aar_answer(AarAnswer::ResultCode(5003));
        let mut l = Lab::start(REFUSED, &[&pcrf], "closed").await;
        let sipp = l.s.echo_uas("uas_answer_then_ack_bye_any_order.xml", free_udp_port()).await;
        let state = l.dial();
        let log = page_log(&mut l.b);
        assert_eq!(state.as_deref(), Ok("failed"), "the refused call fails at the page\n{}", l.context());
        assert!(log.contains("503"), "the page got 503:\n{log}");

        let run = sipp.wait().await;
        assert!(run.succeeded(), "the callee, who answered, gets ACK then BYE: {}\n{}", run.describe(), l.context());
        assert_eq!((run.received_requests("ACK").len(), run.received_requests("BYE").len()), (1, 1), "{}", run.describe());
        for method in ["ACK", "BYE"] {
            assert!(!l.routed(method).is_empty(), "the {method} went through Kamailio:\n{}", l.k.log());
        }

        let aars = pcrf.aars();
        assert_eq!(aars.len(), 1, "one AAR, refused: {aars:#?}");
        let r = tokio::task::block_in_place(|| wait_records(&l.records, 1)).remove(0);
        assert_eq!((r["status"].as_u64(), r["reason"].as_str()), (Some(503), Some("policy_refused")), "{r}");
        assert_eq!(r["rx"]["session_id"].as_str(), Some(aars[0].session_id.as_str()), "{r}");
        assert_eq!(r["rx"]["result"].as_str(), Some("5003"), "{r}");
        let refused = l.s.gw.metric("estuary_rx_calls_refused_total");
        assert_eq!(refused, Some(1.0), "the refusal counted");
        println!("refused call: page log\n{log}");
    });
}

const FAILOVER: &str = "new_calls_fail_over_to_the_secondary_pcrf_when_the_primary_dies";

#[test]
fn new_calls_fail_over_to_the_secondary_pcrf_when_the_primary_dies() {
    require_tools();
    if !in_loopback_netns(FAILOVER) {
        return;
    }
    estuary_conformance::browser_runtime().block_on(async {
        let mut primary = PcrfServer::start("primary");
        let secondary = PcrfServer::start("secondary");
        let mut l = Lab::start(FAILOVER, &[&primary, &secondary], "closed").await;

        let sipp = l.callee().await;
        let state = l.dial();
        l.assert_confirmed(state);
        let first = primary.wait_aars(1, RX_WAIT);
        assert_eq!(first.len(), 1, "the first call's AAR at the primary\n{}", l.context());
        assert!(secondary.aars().is_empty(), "nothing at the secondary while the primary is up");
        hang_up(&mut l.b);
        assert_bye_seen(&sipp.wait().await, || l.s.gw.log_tail(60));
        assert_eq!(primary.wait_strs(1, RX_WAIT).len(), 1, "the first call's STR at the primary");

        let connections = primary.connections_accepted();
        tokio::task::block_in_place(|| primary.kill());
        let down = wait_metric(&l.s.gw, &peer_up(&primary, 0), |v| v == 0.0).await;
        assert_eq!(down, Some(0.0), "the primary is seen down\n{}", l.s.gw.log_tail(60));
        assert_eq!(l.s.gw.metric(&peer_up(&secondary, 1)), Some(1.0), "the secondary is up");

        let sipp = l.callee().await;
        let state = l.dial();
        l.assert_confirmed(state);
        let second = secondary.wait_aars(1, RX_WAIT);
        assert_eq!(second.len(), 1, "the second call's AAR at the secondary\n{}", l.context());
        assert_eq!(second[0].request_type, Some(INITIAL_REQUEST));
        assert_ne!(second[0].session_id, first[0].session_id);
        assert_eq!(primary.aars().len(), 1, "nothing more at the dead primary");
        assert_eq!(primary.connections_accepted(), connections, "the dead primary accepts nothing");
        hang_up(&mut l.b);
        assert_bye_seen(&sipp.wait().await, || l.s.gw.log_tail(60));
        let strs = secondary.wait_strs(1, RX_WAIT);
        assert_eq!(strs.iter().map(|s| s.session_id.as_str()).collect::<Vec<_>>(), [second[0].session_id.as_str()], "the second call's STR at the secondary");

        let records = tokio::task::block_in_place(|| wait_records(&l.records, 2));
        for (r, aar) in records.iter().zip([&first[0], &second[0]]) {
            assert_eq!(r["status"].as_u64(), Some(200), "{r}");
            assert_eq!((r["rx"]["session_id"].as_str(), r["rx"]["result"].as_str()), (Some(aar.session_id.as_str()), Some("2001")), "{r}");
        }
    });
}

const SIGNALLING: &str = "the_signalling_path_is_described_at_registration_and_its_loss_ends_the_call";

/// The established TCP connections `ss` lists in this namespace, as (local, peer).
fn tcp_connections() -> Vec<(SocketAddr, SocketAddr)> {
    let out = Command::new("ss").args(["-tnH", "state", "established"]).output().expect("ss (iproute2) runs");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let cols: Vec<&str> = l.split_whitespace().collect();
            let n = cols.len();
            (n >= 2).then(|| Some((cols[n - 2].parse().ok()?, cols[n - 1].parse().ok()?))).flatten()
        })
        .collect()
}

#[test]
fn the_signalling_path_is_described_at_registration_and_its_loss_ends_the_call() {
    require_tools();
    if !in_loopback_netns(SIGNALLING) {
        return;
    }
    estuary_conformance::browser_runtime().block_on(async {
        let pcrf = PcrfServer::start("primary");
        let mut l = Lab::start_with(SIGNALLING, &[&pcrf], "open", &[("rx.signalling", "true")]).await;
        // The registration's AAR: component 0, the page's WebSocket connection.
        let aars = pcrf.wait_aars(1, RX_WAIT);
        let reg = aars.first().unwrap_or_else(|| panic!("no AAR at registration\n{}", l.context())).clone();
        assert_eq!(reg.request_type, Some(INITIAL_REQUEST));
        assert_eq!(reg.components.len(), 1, "{reg:?}");
        let c = &reg.components[0];
        assert_eq!(c.number, Some(0), "Media-Component-Number 0 (AF signalling): {reg:?}");
        let sub = &c.sub_components[0];
        assert_eq!((sub.flow_usage, sub.signalling_protocol), (Some(2), Some(1)), "AF_SIGNALLING over SIP: {reg:?}");
        assert!(reg.subscriptions.iter().any(|(_, id)| id.contains("alice")), "the registered identity: {reg:?}");
        let (gw_ip, gw_port, ue_ip, ue_port) = flow_ends(&sub.flow_descriptions[0]).unwrap_or_else(|| panic!("{reg:?}"));
        let wss = l.s.gw.wss_addr;
        assert_eq!((gw_ip.as_str(), gw_port), (wss.ip().to_string().as_str(), wss.port()), "the network end is the WSS listener: {reg:?}");
        assert!(sub.flow_descriptions[0].starts_with("permit out 6 "), "TCP: {reg:?}");
        let browser: SocketAddr = format!("{ue_ip}:{ue_port}").parse().unwrap();
        let conns = tcp_connections();
        assert!(
            conns.contains(&(browser, wss)),
            "the described browser end {browser} is a live TCP connection to {wss} (ss: {conns:?})"
        );
        assert_eq!(wait_metric(&l.s.gw, "estuary_rx_signalling_paths", |v| v == 1.0).await, Some(1.0));

        // A call over it has its own session.
        let sipp = l.callee().await;
        let state = l.dial();
        l.assert_confirmed(state);
        let aars = pcrf.wait_aars(2, RX_WAIT);
        let call = aars.iter().find(|a| a.session_id != reg.session_id).unwrap_or_else(|| panic!("no call AAR\n{}", l.context())).clone();
        assert_eq!(call.components[0].number, Some(1));
        let stats = media_stats(&mut l.b).await;
        assert_media(&stats, || format!("--- daemon\n{}", l.s.gw.log_tail(60)));

        // The PCRF reports the signalling bearer lost: the call ends on both sides.
        pcrf.send_rar_loss_of_bearer(&reg.session_id);
        let ended = wait_call(&mut l.b, &["ended", "failed"]);
        assert_eq!(ended.as_deref(), Ok("ended"), "the page's call ends\n{}", l.context());
        let run = sipp.wait().await;
        assert_bye_seen(&run, || l.s.gw.log_tail(60));
        let bye = run.received_requests("BYE")[0].clone();
        assert!(bye.header("Reason").unwrap_or_default().contains("cause=3"), "RELEASE_CAUSE 3: {bye}");
        let strs = pcrf.wait_strs(2, RX_WAIT);
        let mut ended_sessions: Vec<&str> = strs.iter().map(|s| s.session_id.as_str()).collect();
        ended_sessions.sort();
        let mut want = vec![reg.session_id.as_str(), call.session_id.as_str()];
        want.sort();
        assert_eq!(ended_sessions, want, "STR for the call and for the signalling path");
        let r = tokio::task::block_in_place(|| wait_records(&l.records, 1)).remove(0);
        assert_eq!(r["reason"].as_str(), Some("signalling_bearer_loss"), "{r}");
        assert_eq!(l.s.gw.metric("estuary_rx_signalling_lost_total"), Some(1.0));
        assert_eq!(l.s.gw.metric("estuary_rx_signalling_paths"), Some(0.0));
    });
}
