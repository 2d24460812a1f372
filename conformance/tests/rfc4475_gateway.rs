//! RFC 4475 against the running daemon: every torture message goes to `ims.listen` over a real
//! UDP socket; answers must match conformance/data/rfc4475/EXPECTATIONS.tsv and the daemon
//! must stay up (healthz) and keep answering after the whole corpus.

use std::net::UdpSocket;
use std::time::Duration;

use estuary_conformance::{Gateway, SipMsg};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_torture_message_over_udp_gets_its_answer_and_the_daemon_stays_up() {
    let gw = Gateway::builder().next_hop_udp(9).start().await;
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("data/rfc4475");
    let table = std::fs::read_to_string(dir.join("EXPECTATIONS.tsv")).expect("expectations");
    let mut checked = 0;
    for line in table.lines().filter(|l| !l.starts_with('#') && !l.starts_with("file\t")) {
        let cols: Vec<&str> = line.split('\t').collect();
        let (file, expected) = (cols[0], cols[3]);
        let data = unique_branches(&std::fs::read(dir.join(file)).expect(file), file);
        // A fresh socket per message: answers cannot be confused between messages.
        let sock = UdpSocket::bind("127.0.0.1:0").expect("bind");
        sock.set_read_timeout(Some(Duration::from_millis(400))).expect("timeout");
        sock.send_to(&data, gw.ims_addr).expect("send");
        let mut answers = Vec::new();
        let mut buf = [0u8; 65536];
        while let Ok((n, _)) = sock.recv_from(&mut buf) {
            let msg = SipMsg::parse(&String::from_utf8_lossy(&buf[..n]))
                .unwrap_or_else(|e| panic!("{file}: daemon sent unparseable bytes: {e}"));
            answers.push(msg.status());
        }
        match expected {
            "drop" => assert!(answers.is_empty(), "{file}: expected silence, got {answers:?}"),
            "handled" => assert!(
                answers.iter().all(|c| ![400, 416, 420, 505].contains(c)),
                "{file}: a valid message was refused: {answers:?}"
            ),
            code => {
                let code: u16 = code.parse().expect("numeric expectation");
                assert_eq!(answers.first(), Some(&code), "{file}: got {answers:?}");
            }
        }
        checked += 1;
    }
    assert_eq!(checked, 49, "all 49 RFC 4475 messages");
    let (status, body) = gw.http_get("/healthz").expect("healthz after the corpus");
    assert_eq!((status, body.trim()), (200, "ok"));
}

/// Many torture messages share one Via branch and sent-by, so to one running daemon the later
/// ones are retransmissions of the earlier (RFC 3261 §17.2.3) and their answers go to the first
/// sender. Each message's non-empty branches get the file name appended; a bare magic cookie
/// (badbranch.dat's point) is left as it is.
fn unique_branches(data: &[u8], file: &str) -> Vec<u8> {
    const COOKIE: &[u8] = b"branch=z9hG4bK";
    let mut out = Vec::with_capacity(data.len() + 64);
    let mut i = 0;
    while i < data.len() {
        if data[i..].starts_with(COOKIE) {
            out.extend_from_slice(COOKIE);
            i += COOKIE.len();
            if data.get(i).is_some_and(|b| b.is_ascii_alphanumeric()) {
                out.extend_from_slice(file.trim_end_matches(".dat").as_bytes());
                out.push(b'.');
            }
        } else {
            out.push(data[i]);
            i += 1;
        }
    }
    out
}
