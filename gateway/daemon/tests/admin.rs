//! Admin HTTP: /healthz and /metrics in Prometheus text format.

mod common;

use common::{http_get, http_post, Daemon};

#[tokio::test]
async fn healthz_answers_ok_with_a_summary() {
    let d = Daemon::start().await;
    let (status, body) = http_get(d.admin, "/healthz").await;
    assert_eq!(status, 200, "{body}");
    assert!(body.starts_with("{\"status\":\"ok\",\"uptime_s\":"), "{body}");
    for key in ["\"calls\":0", "\"registrations\":0", "\"ws_connections\":0", "\"transcoding_channels\":0"] {
        assert!(body.contains(key), "{key} in {body}");
    }
    assert_eq!(http_get(d.admin, "/nope").await.0, 404);
    // Without ESTUARY_TEST_HOOKS the test hook does not exist.
    assert_eq!(http_post(d.admin, "/test/stall-engine/100").await.0, 405);
}

/// A stuck engine (the test hook blocks it) turns /healthz to 503 with a reason while the
/// stall lasts, and back to 200 after it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthz_says_503_while_the_engine_is_stalled() {
    let d = Daemon::start_with_env(&[], &[("ESTUARY_TEST_HOOKS", "1")]).await;
    assert_eq!(http_get(d.admin, "/healthz").await.0, 200);
    assert_eq!(http_post(d.admin, "/test/stall-engine/3000").await.0, 202);
    let started = std::time::Instant::now();
    let (status, body) = http_get(d.admin, "/healthz").await;
    assert_eq!((status, body.as_str()), (503, "engine loop has not turned for 1000 ms\n"));
    assert!(started.elapsed() < std::time::Duration::from_millis(2900), "answered within the probe's second, not after the stall");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let (status, _) = http_get(d.admin, "/healthz").await;
        if status == 200 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "healthz did not recover after the stall");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(started.elapsed() >= std::time::Duration::from_millis(2500), "recovered only once the stall ended");
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
