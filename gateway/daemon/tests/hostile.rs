//! Garbage on every listener: the daemon answers or closes, and keeps running.

mod common;

use std::time::Duration;

use common::{http_get, Daemon};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};

const GARBAGE: &[&[u8]] = &[
    b"\x00\x01\x02\x03\xff\xfe\xfd",
    b"\x16\x03\x01\x00\x05hello",
    b"GET\r\n\r\n",
    b"GET / HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
    b"INVITE sip:x SIP/2.0\r\nContent-Length: 99999999999\r\n\r\n",
    b"\r\n\r\n\r\n\r\n\r\n",
    b"\xc3\x28 not utf-8 \xa0\xa1\r\n\r\n",
];

/// Sends `data` and reads until the peer closes or 2 s pass; never fails on the peer's reaction.
async fn throw(addr: std::net::SocketAddr, data: &[u8]) {
    let Ok(mut s) = TcpStream::connect(addr).await else {
        return;
    };
    let _ = s.write_all(data).await;
    let _ = s.shutdown().await;
    let mut sink = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(2), s.read_to_end(&mut sink)).await;
}

#[tokio::test]
async fn survives_garbage_everywhere() {
    let mut d = Daemon::start().await;
    let udp = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    for g in GARBAGE {
        for addr in [d.ws, d.wss, d.ims, d.admin] {
            throw(addr, g).await;
        }
        udp.send_to(g, d.ims).await.unwrap();
    }
    // A long stream without a message end hits the size limit and is closed.
    throw(d.ims, &vec![b'A'; 200_000]).await;
    throw(d.ws, &vec![b'A'; 200_000]).await;
    // Connections that say nothing and leave.
    for addr in [d.ws, d.wss, d.ims, d.admin] {
        drop(TcpStream::connect(addr).await.unwrap());
    }
    // Garbage inside an upgraded WebSocket: an unmasked frame and a bad opcode.
    let (ws, _) = common::ws_connect(d.ws, Some("sip"))
        .await
        .expect("upgrade");
    let mut raw = ws.into_inner();
    let _ = raw
        .write_all(b"\x83\x05hello\x8f\x80\x00\x00\x00\x00")
        .await;
    let mut sink = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(2), raw.read_to_end(&mut sink)).await;

    d.assert_alive();
    assert_eq!(http_get(d.admin, "/healthz").await.0, 200);
    d.wait_metric("estuary_ws_connections", 0).await;
    d.wait_metric("estuary_tcp_connections", 0).await;
    let (ws, _) = common::ws_connect(d.ws, Some("sip"))
        .await
        .expect("still accepting WebSockets");
    drop(ws);
}
