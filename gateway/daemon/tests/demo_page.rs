//! The demo softphone page on the web listeners: `GET /`, its files under `/demo/` and
//! `/demo/config.json`, over TLS (WSS port) and plain (WS port), with the security headers.
//! Passes with and without a built page: with `demo/dist/` present the daemon must serve its
//! files byte for byte; without it, the fallback page saying how to build it.

mod common;

use std::path::PathBuf;
use std::time::Duration;

use common::{pinned_tls, ws_connect, Daemon};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::rustls::pki_types::ServerName;

fn dist() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("demo/dist")
}

/// Whether the page was built; cargo rebuilt the daemon if dist/ changed since (build.rs).
fn built() -> bool {
    dist().join("index.html").is_file()
}

#[derive(Debug)]
struct Resp {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Resp {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn text(&self) -> &str {
        std::str::from_utf8(&self.body).expect("UTF-8 body")
    }
}

fn parse(raw: &[u8]) -> Resp {
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no end of head in {:?}", String::from_utf8_lossy(raw)));
    let head = std::str::from_utf8(&raw[..split]).expect("ASCII head");
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no status in {head:?}"));
    let headers = lines
        .map(|l| {
            let (n, v) = l.split_once(':').expect("header line");
            (n.trim().to_owned(), v.trim().to_owned())
        })
        .collect();
    Resp {
        status,
        headers,
        body: raw[split + 4..].to_vec(),
    }
}

async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(mut s: S, request: &str) -> Resp {
    s.write_all(request.as_bytes()).await.expect("write");
    let mut raw = Vec::new();
    // The daemon closes after one response; over TLS a missing close_notify is not our test.
    let _ = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut raw))
        .await
        .expect("response in time");
    parse(&raw)
}

async fn over_tls(d: &Daemon, method: &str, path: &str) -> Resp {
    let tcp = TcpStream::connect(d.wss).await.expect("connect");
    let tls = pinned_tls(&d.fingerprint)
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .expect("TLS handshake");
    let host = format!("127.0.0.1:{}", d.wss.port());
    exchange(
        tls,
        &format!("{method} {path} HTTP/1.1\r\nHost: {host}\r\n\r\n"),
    )
    .await
}

async fn over_plain(d: &Daemon, method: &str, path: &str) -> Resp {
    let tcp = TcpStream::connect(d.ws).await.expect("connect");
    let host = format!("127.0.0.1:{}", d.ws.port());
    exchange(
        tcp,
        &format!("{method} {path} HTTP/1.1\r\nHost: {host}\r\n\r\n"),
    )
    .await
}

/// Cache-Control, nosniff and a policy limited to the page's own origin and its WebSocket.
fn assert_security_headers(r: &Resp, ws_origin: &str) {
    assert_eq!(r.header("cache-control"), Some("no-store"), "{r:?}");
    assert_eq!(r.header("x-content-type-options"), Some("nosniff"), "{r:?}");
    let csp = r
        .header("content-security-policy")
        .expect("Content-Security-Policy");
    for directive in [
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        &format!("connect-src 'self' {ws_origin}"),
        "frame-ancestors 'none'",
    ] {
        assert!(
            csp.split(';').any(|d| d.trim() == directive),
            "{directive:?} not in {csp:?}"
        );
    }
    assert!(!csp.contains('*') && !csp.contains("unsafe"), "{csp}");
}

fn assert_ok(r: &Resp, content_type: &str) {
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.header("content-type"), Some(content_type), "{r:?}");
    assert_eq!(
        r.header("content-length").and_then(|v| v.parse().ok()),
        Some(r.body.len()),
        "{r:?}"
    );
}

/// The page itself: the built index.html byte for byte, or the fallback.
fn assert_is_the_page(r: &Resp) {
    assert_ok(r, "text/html; charset=utf-8");
    let page = r.text();
    if built() {
        let expected = std::fs::read(dist().join("index.html")).unwrap();
        assert_eq!(
            r.body, expected,
            "the served page is not demo/dist/index.html"
        );
        assert!(page.contains("src=\"/demo/app.js\""), "{page}");
        assert!(page.contains("href=\"/demo/style.css\""), "{page}");
    } else {
        assert!(page.contains("demo page not built"), "{page}");
        assert!(page.contains("make demo"), "{page}");
    }
}

#[tokio::test]
async fn the_page_over_wss() {
    let d = Daemon::start().await;
    let origin = format!("wss://127.0.0.1:{}", d.wss.port());
    for path in [
        "/",
        "/demo/",
        "/demo/index.html",
        "/?domain=x&target=sip:tone@x",
    ] {
        let r = over_tls(&d, "GET", path).await;
        assert_is_the_page(&r);
        assert_security_headers(&r, &origin);
    }
}

#[tokio::test]
async fn every_built_file_over_wss() {
    let d = Daemon::start().await;
    let origin = format!("wss://127.0.0.1:{}", d.wss.port());
    if !built() {
        eprintln!("demo/dist not built: checking the fallback only");
        assert_eq!(over_tls(&d, "GET", "/demo/app.js").await.status, 404);
        return;
    }
    let mut seen = 0;
    for entry in std::fs::read_dir(dist()).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_str().unwrap().to_owned();
        let content_type = match name.rsplit_once('.').map(|(_, e)| e) {
            Some("html") => "text/html; charset=utf-8",
            Some("js") => "text/javascript; charset=utf-8",
            Some("css") => "text/css; charset=utf-8",
            _ => continue,
        };
        let r = over_tls(&d, "GET", &format!("/demo/{name}")).await;
        assert_ok(&r, content_type);
        assert_security_headers(&r, &origin);
        assert_eq!(r.body, std::fs::read(&path).unwrap(), "/demo/{name}");
        seen += 1;
    }
    assert!(
        seen >= 3,
        "index.html, app.js and style.css expected in {:?}",
        dist()
    );
    // The bundle carries JsSIP (bundled: it ships CommonJS only).
    let bundle = over_tls(&d, "GET", "/demo/app.js").await;
    assert!(
        bundle.text().contains("JsSIP"),
        "app.js does not contain JsSIP"
    );
}

#[tokio::test]
async fn config_json_reports_the_ims_domain() {
    let d = Daemon::start_with(&["ims.domain=example.org"]).await;
    let want = "{\"domain\": \"example.org\", \"ws_path\": \"/\"}\n";
    let r = over_tls(&d, "GET", "/demo/config.json").await;
    assert_ok(&r, "application/json");
    assert_eq!(r.text(), want);
    assert_security_headers(&r, &format!("wss://127.0.0.1:{}", d.wss.port()));
    let r = over_plain(&d, "GET", "/demo/config.json").await;
    assert_ok(&r, "application/json");
    assert_eq!(r.text(), want);
}

#[tokio::test]
async fn the_page_over_plain_ws_and_the_upgrade_still_works() {
    let d = Daemon::start().await;
    let r = over_plain(&d, "GET", "/").await;
    assert_is_the_page(&r);
    assert_security_headers(&r, &format!("ws://127.0.0.1:{}", d.ws.port()));
    // Same port, same path: a WebSocket upgrade offering "sip" is still SIP.
    let (_ws, resp) = ws_connect(d.ws, Some("sip"))
        .await
        .expect("upgrade after a page load");
    assert_eq!(
        resp.headers()
            .get("sec-websocket-protocol")
            .map(|v| v.as_bytes()),
        Some(&b"sip"[..])
    );
}

#[tokio::test]
async fn unknown_paths_head_and_other_methods() {
    let d = Daemon::start().await;
    for path in [
        "/nope",
        "/demo/nope.js",
        "/demo/../Cargo.toml",
        "/demo//index.html",
        "/favicon.ico",
    ] {
        for r in [
            over_tls(&d, "GET", path).await,
            over_plain(&d, "GET", path).await,
        ] {
            assert_eq!(r.status, 404, "{path}: {r:?}");
            assert_eq!(r.header("x-content-type-options"), Some("nosniff"));
        }
    }
    // HEAD: the GET's headers and length, no body.
    let get = over_tls(&d, "GET", "/").await;
    let head = over_tls(&d, "HEAD", "/").await;
    assert_eq!(head.status, 200);
    assert_eq!(head.header("content-length"), get.header("content-length"));
    assert!(head.body.is_empty());
    let post = over_plain(&d, "POST", "/").await;
    assert_eq!(post.status, 405);
    assert_eq!(post.header("allow"), Some("GET, HEAD"));
}
