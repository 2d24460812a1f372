//! Admin HTTP: /healthz and /metrics in Prometheus text format.

mod common;

use common::{http_get, Daemon};

#[tokio::test]
async fn healthz_answers_ok() {
    let d = Daemon::start().await;
    assert_eq!(
        http_get(d.admin, "/healthz").await,
        (200, "ok\n".to_string())
    );
    assert_eq!(http_get(d.admin, "/nope").await.0, 404);
}

#[tokio::test]
async fn metrics_lists_the_daemon_families() {
    let d = Daemon::start().await;
    let text = d.metrics().await;
    for (name, kind) in [
        ("estuary_ws_connections", "gauge"),
        ("estuary_tcp_connections", "gauge"),
        ("estuary_engine_panics_total", "counter"),
        ("estuary_uptime_seconds", "gauge"),
        ("estuary_web_messages_received_total", "counter"),
        ("estuary_ims_messages_received_total", "counter"),
    ] {
        assert!(
            text.contains(&format!("# TYPE {name} {kind}\n")),
            "{name} {kind} missing:\n{text}"
        );
        assert!(
            text.contains(&format!("# HELP {name} ")),
            "{name} help missing"
        );
    }
    // Exposition format: every non-comment line is `name[{labels}] value`, each series
    // once, each family declared once.
    let mut series = std::collections::HashSet::new();
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let (id, value) = line.rsplit_once(' ').expect("name value");
        assert!(value.parse::<f64>().is_ok(), "bad sample line {line:?}");
        assert!(series.insert(id.to_string()), "duplicate series {id}");
    }
    let mut types = std::collections::HashSet::new();
    for line in text.lines().filter(|l| l.starts_with("# TYPE ")) {
        assert!(
            types.insert(line.to_string()),
            "family declared twice: {line}"
        );
    }
    assert_eq!(d.metric("estuary_engine_panics_total").await, 0);
}

#[tokio::test]
async fn other_methods_are_refused() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let d = Daemon::start().await;
    let mut s = tokio::net::TcpStream::connect(d.admin).await.unwrap();
    s.write_all(b"POST /metrics HTTP/1.1\r\nContent-Length: 0\r\n\r\n")
        .await
        .unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).await.unwrap();
    assert_eq!(common::parse_response(&raw).0, 405);
}
