//! The IMS side: UDP datagrams and framed TCP reach the engine; CRLF keep-alives are answered.

mod common;

use std::time::Duration;

use common::{Daemon, OPTIONS};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};

#[tokio::test]
async fn tcp_accepts_framed_messages_and_answers_keepalives() {
    let d = Daemon::start().await;
    let mut s = TcpStream::connect(d.ims).await.unwrap();
    d.wait_metric("estuary_tcp_connections", 1).await;
    // RFC 5626 §4.4.1: CRLFCRLF ping, CRLF pong. First, before the engine has anything
    // of its own to say on this connection.
    s.write_all(b"\r\n\r\n").await.unwrap();
    let mut pong = [0u8; 2];
    tokio::time::timeout(Duration::from_secs(5), s.read_exact(&mut pong))
        .await
        .expect("pong in time")
        .unwrap();
    assert_eq!(&pong, b"\r\n");

    // Two messages in one write, the second split across writes.
    let (a, b) = OPTIONS.split_at(40);
    s.write_all(format!("{OPTIONS}{a}").as_bytes())
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    s.write_all(b.as_bytes()).await.unwrap();
    d.wait_metric("estuary_ims_messages_received_total", 2)
        .await;

    drop(s);
    d.wait_metric("estuary_tcp_connections", 0).await;
}

#[tokio::test]
async fn tcp_framing_error_closes_the_connection() {
    let mut d = Daemon::start().await;
    let mut s = TcpStream::connect(d.ims).await.unwrap();
    s.write_all(b"OPTIONS sip:a SIP/2.0\r\nVia: x\r\n\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 16];
    let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
        .await
        .expect("closed in time");
    assert!(matches!(n, Ok(0) | Err(_)), "connection must be closed");
    d.wait_metric("estuary_framing_errors_total", 1).await;
    d.assert_alive();
}

#[tokio::test]
async fn udp_datagrams_reach_the_engine() {
    let d = Daemon::start().await;
    let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    sock.send_to(OPTIONS.as_bytes(), d.ims).await.unwrap();
    d.wait_metric("estuary_ims_messages_received_total", 1)
        .await;
}
