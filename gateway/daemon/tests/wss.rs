//! Secure WebSocket with the self-signed certificate generated at start.

mod common;

use common::{pinned_tls, ws_request, Daemon, OPTIONS};
use futures_util::SinkExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::rustls::pki_types::ServerName;
use tokio_tungstenite::tungstenite::Message;

#[tokio::test]
async fn wss_with_the_generated_certificate() {
    let d = Daemon::start().await;
    let tcp = TcpStream::connect(d.wss).await.unwrap();
    let tls = pinned_tls(&d.fingerprint)
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .expect("TLS handshake with the reported certificate");
    let url = format!("wss://localhost:{}/", d.wss.port());
    let (mut ws, resp) = tokio_tungstenite::client_async(ws_request(&url, Some("sip")), tls)
        .await
        .expect("upgrade");
    assert_eq!(
        resp.headers()
            .get("sec-websocket-protocol")
            .map(|v| v.as_bytes()),
        Some(&b"sip"[..])
    );
    ws.send(Message::text(OPTIONS)).await.unwrap();
    d.wait_metric("estuary_web_messages_received_total", 1)
        .await;
    d.wait_metric("estuary_ws_connections", 1).await;
    ws.close(None).await.unwrap();
    d.wait_metric("estuary_ws_connections", 0).await;
}

#[tokio::test]
async fn plain_get_over_tls_gets_a_page() {
    let d = Daemon::start().await;
    let tcp = TcpStream::connect(d.wss).await.unwrap();
    let mut tls = pinned_tls(&d.fingerprint)
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .unwrap();
    tls.write_all(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .unwrap();
    let mut raw = Vec::new();
    let _ = tls.read_to_end(&mut raw).await;
    let (status, body) = common::parse_response(&raw);
    assert_eq!(status, 200);
    assert!(body.to_ascii_lowercase().starts_with("<!doctype html>"), "{body}");
}

#[tokio::test]
async fn wss_with_operator_pem_files() {
    let generated = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let dir = std::env::temp_dir().join(format!("estuary-pem-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert, generated.cert.pem()).unwrap();
    std::fs::write(&key, generated.signing_key.serialize_pem()).unwrap();
    let digest = ring::digest::digest(&ring::digest::SHA256, generated.cert.der());
    let expected: Vec<String> = digest.as_ref().iter().map(|b| format!("{b:02X}")).collect();

    let d = Daemon::start_with(&[
        &format!("web.tls_cert={}", cert.display()),
        &format!("web.tls_key={}", key.display()),
    ])
    .await;
    assert_eq!(d.fingerprint, expected.join(":"));
    let tcp = TcpStream::connect(d.wss).await.unwrap();
    let tls = pinned_tls(&d.fingerprint)
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .unwrap();
    let url = format!("wss://localhost:{}/", d.wss.port());
    tokio_tungstenite::client_async(ws_request(&url, Some("sip")), tls)
        .await
        .expect("upgrade");
}

#[test]
fn a_missing_certificate_file_names_the_key() {
    let out = std::process::Command::new(common::BIN)
        .args([
            "run",
            "--set",
            "web.tls_cert=/nonexistent/cert.pem",
            "--set",
            "web.tls_key=/nonexistent/key.pem",
        ])
        .args(common::PORT_ZERO.iter().flat_map(|s| ["--set", s]))
        .stdout(std::process::Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("web.tls_cert: /nonexistent/cert.pem: "),
        "{err}"
    );
}
