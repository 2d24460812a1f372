//! RFC 4475 against the running daemon: every torture message goes to `ims.listen` over a real
//! UDP socket; answers must match conformance/data/rfc4475/EXPECTATIONS.tsv and the daemon
//! must stay up (healthz) and keep answering after the whole corpus.

use std::net::UdpSocket;
use std::time::Duration;

use estuary_conformance::{Gateway, SipMsg};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_torture_message_over_udp_gets_its_answer_and_the_daemon_stays_up() {
    let gw = Gateway::builder().next_hop_udp(9).start().await;
    let mut checked = 0;
    for (file, expected, data) in corpus() {
        let (file, expected) = (file.as_str(), expected.as_str());
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
    assert_eq!(status, 200, "{body}");
    assert!(body.starts_with("{\"status\":\"ok\""), "{body}");
}

/// Every RFC 4475 message with its expected outcome (EXPECTATIONS.tsv): file name, expectation,
/// and the bytes with their branches made unique (see `unique_branches`).
fn corpus() -> Vec<(String, String, Vec<u8>)> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("data/rfc4475");
    let table = std::fs::read_to_string(dir.join("EXPECTATIONS.tsv")).expect("expectations");
    table
        .lines()
        .filter(|l| !l.starts_with('#') && !l.starts_with("file\t"))
        .map(|line| {
            let cols: Vec<&str> = line.split('\t').collect();
            let (file, expected) = (cols[0], cols[3]);
            let data = unique_branches(&std::fs::read(dir.join(file)).expect(file), file);
            (file.to_owned(), expected.to_owned(), data)
        })
        .collect()
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

/// The same 49 messages over SIP over WebSocket (RFC 7118), each alone on its own connection
/// as a browser would send it (text frame when UTF-8, binary otherwise). `handled` requests get
/// a final answer other than 400 without waiting for a far end (the daemon refuses them or
/// fails them fast: nothing listens at the next hop), invalid ones their status, responses
/// and drops nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_torture_message_over_websocket_gets_its_answer() {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    use tokio_tungstenite::tungstenite::http::HeaderValue;
    use tokio_tungstenite::tungstenite::Message;

    let gw = Gateway::builder().next_hop_udp(9).start().await;
    let mut checked = 0;
    let mut wrong = Vec::new();
    for (file, expected, data) in corpus() {
        let (file, expected) = (file.as_str(), expected.as_str());
        let mut req = format!("ws://{}/", gw.ws_addr).into_client_request().unwrap();
        req.headers_mut().insert("Sec-WebSocket-Protocol", HeaderValue::from_static("sip"));
        let (mut ws, _) = tokio_tungstenite::connect_async(req).await.unwrap_or_else(|e| panic!("{file}: connect: {e}"));
        let frame = match String::from_utf8(data) {
            Ok(text) => Message::text(text),
            Err(e) => Message::binary(e.into_bytes()),
        };
        let is_response = data_is_response(&frame);
        ws.send(frame).await.unwrap_or_else(|e| panic!("{file}: send: {e}"));
        // Answers until a final one, the connection's end, or a quiet second (drops).
        let mut answers = Vec::new();
        let wait = if expected == "drop" || is_response { 1 } else { 5 };
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(wait);
        while let Ok(Some(Ok(msg))) = tokio::time::timeout_at(deadline, ws.next()).await {
            let text = match msg {
                Message::Text(t) => t.to_string(),
                Message::Binary(b) => String::from_utf8_lossy(&b).into_owned(),
                Message::Close(_) => break,
                _ => continue,
            };
            let code = SipMsg::parse_frame(&text).unwrap_or_else(|e| panic!("{file}: daemon sent unparseable bytes: {e}")).status();
            answers.push(code);
            if code >= 200 {
                break;
            }
        }
        let finals: Vec<u16> = answers.iter().copied().filter(|c| *c >= 200).collect();
        let ok = match expected {
            "drop" => answers.is_empty(),
            "handled" if is_response => answers.is_empty(),
            "handled" => finals.len() == 1 && ![400, 416, 420, 505].contains(&finals[0]),
            code => finals.first().map(u16::to_string).as_deref() == Some(code),
        };
        if !ok {
            wrong.push(format!("{file}: expected {expected}, got {answers:?}"));
        }
        let _ = ws.close(None).await;
        checked += 1;
    }
    assert!(wrong.is_empty(), "over WebSocket:\n{}\n--- log ---\n{}", wrong.join("\n"), gw.log_tail(60));
    assert_eq!(checked, 49, "all 49 RFC 4475 messages");
    let (status, _) = gw.http_get("/healthz").expect("healthz after the corpus");
    assert_eq!(status, 200);
}

/// A SIP response (a status line) rather than a request: nothing answers it.
fn data_is_response(frame: &tokio_tungstenite::tungstenite::Message) -> bool {
    frame.clone().into_data().starts_with(b"SIP/")
}
