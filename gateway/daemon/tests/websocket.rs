//! SIP over WebSocket (RFC 7118) on the plain listener: the `sip` subprotocol is required and
//! echoed, messages reach the engine, pings are answered, plain GET gets a page.

mod common;

use std::time::Duration;

use common::{http_get, ws_connect, Daemon, OPTIONS};
use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::{Error, Message};

#[tokio::test]
async fn upgrade_without_sip_subprotocol_is_refused() {
    let d = Daemon::start().await;
    match ws_connect(d.ws, None).await {
        Err(Error::Http(resp)) => assert_eq!(resp.status().as_u16(), 400),
        other => panic!(
            "expected an HTTP refusal, got {:?}",
            other.map(|(_, r)| r.status())
        ),
    }
    match ws_connect(d.ws, Some("chat")).await {
        Err(Error::Http(resp)) => assert_eq!(resp.status().as_u16(), 400),
        other => panic!(
            "expected an HTTP refusal, got {:?}",
            other.map(|(_, r)| r.status())
        ),
    }
    assert_eq!(d.metric("estuary_ws_connections").await, 0);
}

#[tokio::test]
async fn upgrade_with_sip_echoes_it_and_carries_messages() {
    let d = Daemon::start().await;
    let (mut ws, resp) = ws_connect(d.ws, Some("sip")).await.expect("upgrade");
    assert_eq!(
        resp.headers()
            .get("sec-websocket-protocol")
            .map(|v| v.as_bytes()),
        Some(&b"sip"[..])
    );
    d.wait_metric("estuary_ws_connections", 1).await;

    ws.send(Message::text(OPTIONS)).await.unwrap();
    ws.send(Message::binary(OPTIONS.as_bytes().to_vec()))
        .await
        .unwrap();
    d.wait_metric("estuary_web_messages_received_total", 2)
        .await;

    // A ping is answered with a pong carrying the same payload (RFC 6455 §5.5.3).
    ws.send(Message::Ping(b"hi".to_vec().into())).await.unwrap();
    let pong = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match ws.next().await {
                Some(Ok(Message::Pong(p))) => return p,
                Some(Ok(_)) => continue,
                other => panic!("connection ended: {other:?}"),
            }
        }
    })
    .await
    .expect("pong in time");
    assert_eq!(&pong[..], b"hi");

    ws.close(None).await.unwrap();
    d.wait_metric("estuary_ws_connections", 0).await;
}

#[tokio::test]
async fn oversize_messages_close_the_connection() {
    let d = Daemon::start_with(&["limits.max_message_size=2048"]).await;
    let (mut ws, _) = ws_connect(d.ws, Some("sip")).await.expect("upgrade");
    let _ = ws.send(Message::text("x".repeat(4096))).await;
    let ended = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match ws.next().await {
                Some(Ok(Message::Close(frame))) => return frame.map(|f| u16::from(f.code)),
                Some(Ok(_)) => continue,
                _ => return None,
            }
        }
    })
    .await
    .expect("closed in time");
    assert_eq!(ended, Some(1009), "close code 1009 (message too big)");
    d.wait_metric("estuary_ws_connections", 0).await;
}

#[tokio::test]
async fn connection_limit_refuses_extra_websockets() {
    let d = Daemon::start_with(&["limits.max_ws_connections=1"]).await;
    let (_first, _) = ws_connect(d.ws, Some("sip")).await.expect("first upgrade");
    assert!(
        ws_connect(d.ws, Some("sip")).await.is_err(),
        "second connection must be refused"
    );
    assert_eq!(d.metric("estuary_connections_refused_total").await, 1);
}

#[tokio::test]
async fn plain_get_gets_a_page() {
    let d = Daemon::start().await;
    let (status, body) = http_get(d.ws, "/").await;
    assert_eq!(status, 200);
    // The demo softphone (or, before `make demo`, the page saying how to build it).
    assert!(body.to_ascii_lowercase().starts_with("<!doctype html>"), "{body}");
}

#[tokio::test]
async fn server_pings_and_drops_a_silent_peer() {
    let d = Daemon::start_with(&["web.ws_ping_interval_s=1"]).await;
    let (mut ws, _) = ws_connect(d.ws, Some("sip")).await.expect("upgrade");
    // Not reading means not answering pings: after 2.5 silent periods the server gives up.
    tokio::time::sleep(Duration::from_millis(3200)).await;
    let (mut pings, mut close) = (0, None);
    let _ = tokio::time::timeout(Duration::from_secs(5), async {
        while let Some(Ok(msg)) = ws.next().await {
            match msg {
                Message::Ping(_) => pings += 1,
                Message::Close(f) => {
                    close = f.map(|f| u16::from(f.code));
                    break;
                }
                _ => {}
            }
        }
    })
    .await;
    assert!(pings >= 2, "expected pings, saw {pings}");
    assert_eq!(close, Some(1001));
    d.wait_metric("estuary_ws_connections", 0).await;
}
