//! Topology-hiding assertions: what identifies one side must never be seen on the other.
//!
//! A B2BUA rebuilds Via, Contact, Call-ID, tags and route sets per leg (RFC 3261 §6 "B2BUA",
//! issue 2 item 5), so:
//! - nothing IMS received may contain the browser's `.invalid` host, its Contact user, or any
//!   Call-ID, tag or Via branch the browser generated;
//! - nothing the browser received may contain an IMS peer's SIP port, or any Call-ID, Via
//!   branch or dialog tag seen on the IMS side.

use crate::msg::SipMsg;
use crate::net::contains_port;
use crate::sipp::SippRun;
use crate::ws_client::WsSipClient;

/// Everything seen on the IMS side of one test: the sipp runs (and any other raw IMS-side
/// captures).
#[derive(Default)]
pub struct ImsSide<'a> {
    runs: Vec<&'a SippRun>,
    extra_received: Vec<String>,
}

impl<'a> ImsSide<'a> {
    pub fn new() -> Self {
        ImsSide::default()
    }

    pub fn run(mut self, r: &'a SippRun) -> Self {
        self.runs.push(r);
        self
    }

    pub fn runs(mut self, rs: impl IntoIterator<Item = &'a SippRun>) -> Self {
        self.runs.extend(rs);
        self
    }

    /// A message an IMS-side peer other than sipp received (raw text).
    pub fn received_text(mut self, t: impl Into<String>) -> Self {
        self.extra_received.push(t.into());
        self
    }

    /// Texts of every message the IMS side received.
    fn received_texts(&self) -> Vec<&str> {
        let mut v: Vec<&str> = self.runs.iter().flat_map(|r| r.received_texts()).collect();
        v.extend(self.extra_received.iter().map(String::as_str));
        v
    }

    /// Call-IDs, Via branches and dialog tags seen on the IMS side. Tags of REGISTER
    /// transactions are left out: a registrar's To tag creates no dialog and a B2BUA may
    /// relay it.
    fn tokens(&self) -> Vec<String> {
        let mut t = Vec::new();
        for r in &self.runs {
            for l in &r.messages {
                let Some(m) = &l.msg else { continue };
                t.push(m.call_id().to_owned());
                for v in m.header_values("Via") {
                    t.extend(crate::msg::param(&v, "branch"));
                }
                if m.method() != "REGISTER" {
                    t.extend(m.from_tag());
                    t.extend(m.to_tag());
                }
            }
        }
        for text in &self.extra_received {
            if let Ok(m) = SipMsg::parse(text) {
                t.push(m.call_id().to_owned());
                t.extend(m.top_branch());
            }
        }
        t.sort();
        t.dedup();
        t.retain(|s| s.len() >= 4);
        t
    }
}

/// Assert both directions of topology hiding for one browser and the IMS side.
pub fn assert_no_leaks(browser: &WsSipClient, ims: &ImsSide<'_>) {
    assert_no_leaks_raw(&browser.private_tokens(), &browser.received, ims);
}

/// As [`assert_no_leaks`], from the browser's saved tokens and received messages (for a
/// browser whose connection was already dropped).
pub fn assert_no_leaks_raw(
    browser_tokens: &[String],
    browser_received: &[SipMsg],
    ims: &ImsSide<'_>,
) {
    let mut problems = Vec::new();
    // Browser -> IMS.
    for text in ims.received_texts() {
        for tok in browser_tokens {
            if text.contains(tok.as_str()) {
                problems.push(format!(
                    "IMS side received browser token {tok:?} in:\n{}",
                    text.trim_end()
                ));
            }
        }
    }
    // IMS -> browser.
    let ims_tokens = ims.tokens();
    let ports: Vec<u16> = ims.runs.iter().map(|r| r.port).collect();
    for m in browser_received {
        let text = m.to_wire();
        for p in &ports {
            if contains_port(&text, *p) {
                problems.push(format!(
                    "browser received IMS peer port :{p} in:\n{}",
                    text.trim_end()
                ));
            }
        }
        for tok in &ims_tokens {
            if text.contains(tok.as_str()) {
                problems.push(format!(
                    "browser received IMS-side token {tok:?} in:\n{}",
                    text.trim_end()
                ));
            }
        }
    }
    assert!(
        problems.is_empty(),
        "topology hiding violated:\n{}",
        problems.join("\n\n")
    );
}
