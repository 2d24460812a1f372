//! Key material never comes from the engine seed (issue 12, item 1). Two daemons started with
//! the same ESTUARY_ENGINE_SEED and SDES toward IMS carry the same call: the seed fixes their
//! identifiers (the IMS leg's From tag is the same in both, which shows the seed took effect),
//! but the SDES keys they offer the core and the ICE passwords they give the browser differ.
//!
//! Needs `sipp` and `cargo build -p estuary` (see conformance/src/lib.rs).

use estuary_conformance::flows::{finish, Setup};
use estuary_conformance::msg::SipMsg;
use estuary_conformance::ws_client::webrtc_offer;

const CALLEE: &str = "sip:bob@ims.test";

/// What one daemon showed of a call: the `a=crypto` lines it offered the core, the ice-pwd
/// and ice-ufrag it answered the browser with, the IMS leg's From tag.
struct Seen {
    crypto: Vec<String>,
    ice_pwd: String,
    ice_ufrag: String,
    ims_from_tag: String,
}

fn sdp_values(body: &str, prefix: &str) -> Vec<String> {
    body.lines().filter_map(|l| l.trim_end().strip_prefix(prefix)).map(str::to_owned).collect()
}

async fn call_through_seeded_daemon(seed: &str) -> Seen {
    let s = Setup::start(|b| b.env("ESTUARY_ENGINE_SEED", seed).set("media.ims_profile", "RTP/SAVP")).await;
    let mut reg = s.register().await;
    let sipp = s.uas("uas_answer_sdes.xml").await;
    let (mut d, ok) = reg.client.call_answered(CALLEE, &webrtc_offer(9)).await;
    reg.client.bye(&mut d).await;
    let run = finish(sipp, &reg.client, &s.gw).await;
    let invites = run.received_requests("INVITE");
    let inv: &SipMsg = invites.first().unwrap_or_else(|| panic!("sipp saw no INVITE: {}", run.describe()));
    assert!(inv.body.contains("RTP/SAVP"), "SDES offered toward IMS: {inv}");
    let crypto = sdp_values(&inv.body, "a=crypto:");
    assert!(!crypto.is_empty(), "a=crypto in the INVITE toward IMS: {inv}");
    let one = |prefix: &str| {
        let v = sdp_values(&ok.body, prefix);
        assert_eq!(v.len(), 1, "one {prefix} in the browser's answer: {ok}");
        v[0].clone()
    };
    Seen {
        crypto,
        ice_pwd: one("a=ice-pwd:"),
        ice_ufrag: one("a=ice-ufrag:"),
        ims_from_tag: inv.from_tag().expect("From tag toward IMS"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn same_engine_seed_gives_the_same_identifiers_but_independent_keys() {
    let a = call_through_seeded_daemon("4242").await;
    let b = call_through_seeded_daemon("4242").await;
    assert_eq!(
        a.ims_from_tag, b.ims_from_tag,
        "the seed fixes identifiers (otherwise this test proves nothing)"
    );
    assert_eq!(a.crypto.len(), b.crypto.len());
    for (x, y) in a.crypto.iter().zip(&b.crypto) {
        let key = |c: &str| c.split_once("inline:").map(|(_, k)| k.split('|').next().unwrap_or(k).to_owned());
        assert!(key(x).is_some(), "an inline key: {x}");
        assert_ne!(key(x), key(y), "two daemons with one seed offered the core the same SDES key");
    }
    let keys: Vec<_> = a.crypto.iter().chain(&b.crypto).collect();
    for (i, k) in keys.iter().enumerate() {
        assert!(!keys[i + 1..].contains(k), "a key repeats across suites or daemons: {k}");
    }
    assert_ne!(a.ice_pwd, b.ice_pwd, "two daemons with one seed gave the browser the same ice-pwd");
    assert_ne!(a.ice_ufrag, b.ice_ufrag, "two daemons with one seed gave the browser the same ice-ufrag");
    assert_eq!((a.ice_pwd.len(), a.ice_ufrag.len()), (24, 8));
}
