//! End to end through the driver: a browser REGISTER over WebSocket leaves toward the IMS
//! next hop over UDP, or over a TCP connection the daemon opens on demand. Only arrival is
//! asserted; what the engine writes is the engine's tests' business.

mod common;

use std::time::Duration;

use common::{ws_connect, Daemon};
use futures_util::SinkExt;
use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, UdpSocket};
use tokio_tungstenite::tungstenite::Message;

const REGISTER: &str = "REGISTER sip:ims.test SIP/2.0\r\n\
Via: SIP/2.0/WSS df7jal23ls0d.invalid;branch=z9hG4bKrelay1\r\n\
Max-Forwards: 70\r\n\
To: <sip:alice@ims.test>\r\n\
From: <sip:alice@ims.test>;tag=relay1\r\n\
Call-ID: relay-path-1\r\n\
CSeq: 1 REGISTER\r\n\
Contact: <sip:alice@df7jal23ls0d.invalid;transport=ws>;expires=600\r\n\
Expires: 600\r\n\
Content-Length: 0\r\n\r\n";

#[tokio::test]
async fn register_reaches_the_next_hop_over_udp() {
    let ims = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let hop = format!(
        "ims.next_hop=sip:{};transport=udp",
        ims.local_addr().unwrap()
    );
    let d = Daemon::start_with(&[&hop]).await;
    let (mut ws, _) = ws_connect(d.ws, Some("sip")).await.expect("upgrade");
    ws.send(Message::text(REGISTER)).await.unwrap();
    let mut buf = vec![0u8; 65536];
    let (n, from) = tokio::time::timeout(Duration::from_secs(5), ims.recv_from(&mut buf))
        .await
        .expect("REGISTER relayed in time")
        .unwrap();
    assert_eq!(from, d.ims, "sent from the ims.listen socket");
    assert!(
        buf[..n].starts_with(b"REGISTER "),
        "{}",
        String::from_utf8_lossy(&buf[..n])
    );
}

#[tokio::test]
async fn register_reaches_the_next_hop_over_a_new_tcp_connection() {
    let ims = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hop = format!(
        "ims.next_hop=sip:{};transport=tcp",
        ims.local_addr().unwrap()
    );
    let d = Daemon::start_with(&[&hop]).await;
    let (mut ws, _) = ws_connect(d.ws, Some("sip")).await.expect("upgrade");
    ws.send(Message::text(REGISTER)).await.unwrap();
    let (mut conn, _) = tokio::time::timeout(Duration::from_secs(5), ims.accept())
        .await
        .expect("connect in time")
        .unwrap();
    let mut buf = vec![0u8; 9];
    tokio::time::timeout(Duration::from_secs(5), conn.read_exact(&mut buf))
        .await
        .expect("data in time")
        .unwrap();
    assert_eq!(&buf, b"REGISTER ");
    d.wait_metric("estuary_tcp_connections", 1).await;
}

#[tokio::test]
async fn a_refused_tcp_connect_is_reported_unreachable() {
    // A port nobody listens on: bound, then released.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let d = Daemon::start_with(&[&format!("ims.next_hop=sip:{closed};transport=tcp")]).await;
    let (mut ws, _) = ws_connect(d.ws, Some("sip")).await.expect("upgrade");
    ws.send(Message::text(REGISTER)).await.unwrap();
    d.wait_metric("estuary_unreachable_total", 1).await;
    // The engine's answer to the browser (a 503 today) is the engine's to test; the
    // connection must survive it.
    d.wait_metric("estuary_ws_connections", 1).await;
}
