//! The core's side of a call in its simplest form, for tests that only look at the final
//! response: one INVITE over UDP, answered or refused, and ACKed.

use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use crate::msg::SipMsg;

/// Sends bob's INVITE for `sip:{user}@ims.test` from `sock` to `to` (`sdp` its body, when
/// given), waits at most `limit` for its final response, and ACKs that with the INVITE's
/// branch, to the same place (hop by hop: the tests' calls end there). `n` tells a test's
/// calls apart. Returns the final response and the call's Call-ID. `sock` needs a read
/// timeout, so a lost response is waited for again.
pub fn invite(sock: &UdpSocket, to: SocketAddr, user: &str, n: u32, sdp: Option<&str>, limit: Duration) -> (SipMsg, String) {
    let me = sock.local_addr().expect("the caller's address");
    let pid = std::process::id();
    let call_id = format!("{user}-{n}-{pid}@{me}");
    let branch = format!("z9hG4bK{user}{n}x{pid}");
    let body = sdp.unwrap_or_default();
    let content_type = if sdp.is_some() { "Content-Type: application/sdp\r\n" } else { "" };
    let invite = format!(
        "INVITE sip:{user}@ims.test SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch={branch}\r\nMax-Forwards: 70\r\nFrom: <sip:bob@ims.test>;tag=b{n}\r\nTo: <sip:{user}@ims.test>\r\nCall-ID: {call_id}\r\nCSeq: 1 INVITE\r\nContact: <sip:bob@{me}>\r\n{content_type}Content-Length: {}\r\n\r\n{body}",
        body.len()
    );
    sock.send_to(invite.as_bytes(), to).expect("INVITE sent");
    let deadline = Instant::now() + limit;
    loop {
        assert!(Instant::now() < deadline, "no final response to call {n} ({call_id})");
        let mut buf = [0u8; 8192];
        let Ok((len, _)) = sock.recv_from(&mut buf) else { continue };
        let Ok(m) = SipMsg::parse(&String::from_utf8_lossy(&buf[..len])) else { continue };
        if m.call_id() != call_id || m.status() < 200 {
            continue;
        }
        let to_header = m.header("To").unwrap_or_default().to_owned();
        let ack = format!(
            "ACK sip:{user}@ims.test SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch={branch}\r\nMax-Forwards: 70\r\nFrom: <sip:bob@ims.test>;tag=b{n}\r\nTo: {to_header}\r\nCall-ID: {call_id}\r\nCSeq: 1 ACK\r\nContent-Length: 0\r\n\r\n"
        );
        sock.send_to(ack.as_bytes(), to).expect("ACK sent");
        return (m, call_id);
    }
}
