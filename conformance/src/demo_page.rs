//! The demo softphone page driven in headless Chromium: register, dial, answer, hang up,
//! read its log and its RTCPeerConnection's stats. Shared by the browser tests and the
//! capture-corpus recorder.

use std::time::Duration;

use serde_json::Value;

use crate::browser::Browser;
use crate::flows::{Setup, PASSWORD, USER};
use crate::gateway::Gateway;
use crate::msg::addr_uri;
use crate::sipp::SippRun;

pub const PAGE: &str = "phone";
pub const WAIT: Duration = Duration::from_secs(15);

/// A demo page tab in `b`, registered as alice through `s`'s gateway and the sipp registrar,
/// with the microphone's voice processing off. Returns the registrar's run.
pub async fn registered_page(s: &Setup, b: &mut Browser) -> SippRun {
    let registrar = s.uas("registrar.xml").await;
    let state = register_page(&s.gw, b, PASSWORD);
    let run = registrar.wait().await;
    assert_eq!(
        state.as_deref(),
        Ok("registered"),
        "the demo page did not register\n--- page log\n{}\n--- sipp\n{}\n--- daemon\n{}",
        page_log(b),
        run.describe(),
        s.gw.log_tail(40)
    );
    run.assert_success();
    run
}

/// Opens the demo page of `gw` in `b` as alice, turns voice processing off and registers;
/// returns the page's final registration state.
pub fn register_page(gw: &Gateway, b: &mut Browser, password: &str) -> Result<String, String> {
    register_tab(gw, b, PAGE, USER, password)
}

/// As [`register_page`] in the tab named `page`, as `user`.
pub fn register_tab(gw: &Gateway, b: &mut Browser, page: &str, user: &str, password: &str) -> Result<String, String> {
    register_tab_at(gw.wss_addr, b, page, user, password)
}

/// As [`register_tab`], with the page (and so its WebSocket) at `https://{web}/`: a
/// gateway's WSS listener, or a load balancer in front of several.
pub fn register_tab_at(web: std::net::SocketAddr, b: &mut Browser, page: &str, user: &str, password: &str) -> Result<String, String> {
    let url = format!("https://{web}/?user={user}");
    tokio::task::block_in_place(|| {
        let title = b.page_open(page, &url).unwrap_or_else(|e| panic!("opening {url}: {e}"));
        assert!(
            title.contains("softphone"),
            "{url} is not the demo softphone (title {title:?}): the daemon was built without \
             gateway/daemon/demo/dist; `make demo` builds it (`make test` does)"
        );
        b.page_fill(page, "#password", password).unwrap();
        b.page_click(page, "#account summary").unwrap();
        b.page_check(page, "#voice-processing", false).unwrap();
        b.page_click(page, "#register").unwrap();
        b.page_wait(page, "#ua-state", "data-state", &["registered", "registrationFailed"], WAIT)
    })
}

pub fn page_log(b: &mut Browser) -> String {
    tokio::task::block_in_place(|| b.page_text(PAGE, "#log")).unwrap_or_else(|e| format!("(no log: {e})"))
}

pub fn wait_call(b: &mut Browser, states: &[&str]) -> Result<String, String> {
    tokio::task::block_in_place(|| b.page_wait(PAGE, "#call-state", "data-state", states, WAIT))
}

/// The audio stream of `kind` ("inbound-rtp" or "outbound-rtp") in a stats summary.
pub fn audio<'a>(stats: &'a Value, kind: &str) -> Option<&'a Value> {
    stats["rtp"].as_array()?.iter().find(|r| r["type"] == kind && r["kind"] == "audio")
}

/// The video stream of `kind` in a stats summary.
pub fn video<'a>(stats: &'a Value, kind: &str) -> Option<&'a Value> {
    stats["rtp"].as_array()?.iter().find(|r| r["type"] == kind && r["kind"] == "video")
}

/// Clicks the page's Video button (camera on or off by a re-INVITE) and waits until the
/// answer is in: the button's state, "on", "off" or "failed".
pub fn toggle_video(b: &mut Browser) -> Result<String, String> {
    tokio::task::block_in_place(|| {
        // The click handler says "offering" before its first await, so the wait below cannot
        // see the state from before the click.
        b.page_click(PAGE, "#video")?;
        b.page_wait(PAGE, "#video", "data-state", &["on", "off", "failed"], WAIT)
    })
}

pub fn number(v: Option<&Value>, field: &str) -> f64 {
    v.and_then(|r| r[field].as_f64()).unwrap_or(0.0)
}

/// Poll the page's RTCPeerConnection (bounded) until Chromium has sent and received at least
/// 100 packets (2 s of 20 ms audio) and measured energy in what it received; returns the last
/// stats whatever happened, for the assertions to judge.
pub async fn media_stats(b: &mut Browser) -> Value {
    let mut stats = Value::Null;
    for _ in 0..40 {
        tokio::time::sleep(Duration::from_millis(250)).await;
        stats = tokio::task::block_in_place(|| b.page_stats(PAGE)).unwrap_or(Value::Null);
        let inbound = audio(&stats, "inbound-rtp");
        if number(inbound, "packets") >= 100.0
            && number(audio(&stats, "outbound-rtp"), "packets") >= 100.0
            && number(inbound, "totalAudioEnergy") > 0.0
        {
            break;
        }
    }
    stats
}

/// Hang up from the page and require that the call ends there.
pub fn hang_up(b: &mut Browser) {
    tokio::task::block_in_place(|| b.page_click(PAGE, "#hangup")).unwrap();
    let ended = wait_call(b, &["ended", "failed"]);
    assert_eq!(ended.as_deref(), Ok("ended"), "{}", page_log(b));
}

/// The Contact and Path of the last REGISTER the daemon sent on the page's behalf: where the
/// S-CSCF would send a call (Request-URI = that Contact, Route = the Path).
pub fn registration_of_record(registrar: &SippRun) -> (String, String) {
    let regs = registrar.received_requests("REGISTER");
    let last = regs.last().unwrap_or_else(|| panic!("no REGISTER: {}", registrar.describe()));
    let contact = last.header("Contact").map(addr_uri).unwrap_or_else(|| panic!("no Contact: {last}"));
    let path = last.header("Path").unwrap_or_else(|| panic!("no Path: {last}")).to_owned();
    (contact, path)
}

