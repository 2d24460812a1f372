//! SIP over WebSocket (RFC 7118) from a capture: handshake, a REGISTER in three masked frames
//! whose boundaries fall inside TCP segments, and the answer; then truncated and garbage frame
//! streams, which must give errors, never panics.

mod common;
use common::XorShift;

use std::net::SocketAddr;
use std::time::Duration;

use estuary_pcap::{
    build_tcp, CaptureReader, LinkType, PcapNgWriter, TcpEvent, TcpFlags, TcpHeader,
    TcpReassembler, WsConnection, WsDirection, WsKind, WsStream,
};

const BROWSER: &str = "[2001:db8::10]:52000";
const GATEWAY: &str = "[2001:db8::1]:443";

const UPGRADE: &[u8] = b"GET /sip HTTP/1.1\r\nHost: gw.example.net\r\nUpgrade: websocket\r\n\
Connection: Upgrade\r\nSec-WebSocket-Key: AAECAwQFBgcICQoLDA0ODw==\r\n\
Origin: https://app.example.net\r\nSec-WebSocket-Protocol: sip\r\nSec-WebSocket-Version: 13\r\n\r\n";

const SWITCHING: &[u8] = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\
Connection: Upgrade\r\nSec-WebSocket-Accept: 3c6ANr6wsOMXGwScDSPGJzwjRuk=\r\n\
Sec-WebSocket-Protocol: sip\r\n\r\n";

const REGISTER: &[u8] = b"REGISTER sip:ims.example.net SIP/2.0\r\n\
Via: SIP/2.0/WSS df7jal23ls0d.invalid;branch=z9hG4bKasudf;rport\r\n\
From: <sip:alice@ims.example.net>;tag=65bnmj.34asd\r\n\
To: <sip:alice@ims.example.net>\r\n\
Call-ID: aiuy7k9njasd\r\n\
CSeq: 1 REGISTER\r\n\
Max-Forwards: 70\r\n\
Supported: path, outbound, gruu\r\n\
Contact: <sip:alice@df7jal23ls0d.invalid;transport=ws>;reg-id=1;+sip.instance=\"<urn:uuid:f81-7dec-14a06cf1>\"\r\n\
Content-Length: 0\r\n\r\n";

const OK: &[u8] = b"SIP/2.0 200 OK\r\nCSeq: 1 REGISTER\r\nContent-Length: 0\r\n\r\n";

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

/// One WebSocket frame, masked with `key` when given.
fn frame(fin: bool, opcode: u8, key: Option<[u8; 4]>, payload: &[u8]) -> Vec<u8> {
    let mut f = vec![u8::from(fin) << 7 | opcode];
    let mask_bit = if key.is_some() { 0x80 } else { 0 };
    match payload.len() {
        n @ 0..=125 => f.push(mask_bit | n as u8),
        n @ 126..=0xFFFF => {
            f.push(mask_bit | 126);
            f.extend((n as u16).to_be_bytes());
        }
        n => {
            f.push(mask_bit | 127);
            f.extend((n as u64).to_be_bytes());
        }
    }
    match key {
        Some(key) => {
            f.extend(key);
            f.extend(payload.iter().zip(key.iter().cycle()).map(|(b, k)| b ^ k));
        }
        None => f.extend(payload),
    }
    f
}

/// The whole browser-to-gateway byte stream: upgrade, REGISTER in three frames with a ping
/// between the second and third.
fn browser_stream() -> Vec<u8> {
    let mut s = UPGRADE.to_vec();
    let (a, rest) = REGISTER.split_at(100);
    let (b, c) = rest.split_at(200);
    s.extend(frame(false, 0x1, Some([0x11, 0x22, 0x33, 0x44]), a));
    s.extend(frame(false, 0x0, Some([0xA5, 0x5A, 0x00, 0xFF]), b));
    s.extend(frame(true, 0x9, Some([1, 2, 3, 4]), b"keep"));
    s.extend(frame(true, 0x0, Some([0xDE, 0xAD, 0xBE, 0xEF]), c));
    s
}

#[test]
fn sip_register_over_websocket_from_a_capture() {
    let up = browser_stream();
    let mut down = SWITCHING.to_vec();
    down.extend(frame(true, 0x1, None, OK));
    down.extend(frame(true, 0x8, None, b"\x03\xe8done"));

    // Segment the browser's stream at fixed sizes that ignore frame boundaries, and send the
    // second and third segments in the wrong order.
    let seg = 97;
    let (isn_up, isn_down) = (7_000u32, 900_000u32);
    let pieces: Vec<(u32, &[u8])> = up
        .chunks(seg)
        .enumerate()
        .map(|(i, c)| (isn_up + 1 + (i * seg) as u32, c))
        .collect();
    assert!(pieces.len() > 5);
    let mut order: Vec<usize> = (0..pieces.len()).collect();
    order.swap(1, 2);

    let tcp = |src, dst, seq, ack, flags, payload: &[u8]| {
        let h = TcpHeader {
            seq,
            ack,
            flags,
            window: 1000,
        };
        build_tcp(addr(src), addr(dst), &h, payload).unwrap()
    };
    let ack = TcpFlags::ACK;
    let mut packets = vec![
        tcp(BROWSER, GATEWAY, isn_up, 0, TcpFlags::SYN, b""),
        tcp(
            GATEWAY,
            BROWSER,
            isn_down,
            isn_up + 1,
            TcpFlags::SYN | ack,
            b"",
        ),
    ];
    // The upgrade goes first; the answer after it, before the frames.
    let up_end = isn_up + 1 + up.len() as u32;
    for (n, &i) in order.iter().enumerate() {
        let (seq, payload) = pieces[i];
        packets.push(tcp(BROWSER, GATEWAY, seq, isn_down + 1, ack, payload));
        if n == 0 {
            packets.push(tcp(
                GATEWAY,
                BROWSER,
                isn_down + 1,
                seq,
                ack,
                &down[..SWITCHING.len()],
            ));
        }
    }
    let down_seq = isn_down + 1 + SWITCHING.len() as u32;
    packets.push(tcp(
        GATEWAY,
        BROWSER,
        down_seq,
        up_end,
        ack,
        &down[SWITCHING.len()..],
    ));

    let mut writer = PcapNgWriter::new(Vec::new(), LinkType::RAW).unwrap();
    for (i, p) in packets.iter().enumerate() {
        writer
            .write_packet(Duration::from_millis(1_000 + i as u64), p)
            .unwrap();
    }
    let file = writer.into_inner();

    let mut capture = CaptureReader::new(&file[..]).unwrap();
    let mut reassembler = TcpReassembler::new();
    let mut ws = WsConnection::new(addr(BROWSER), addr(GATEWAY));
    let mut messages = Vec::new();
    while let Some(record) = capture.next_record().unwrap() {
        reassembler.push(record.timestamp, &record.decode().unwrap());
        while let Some(event) = reassembler.poll() {
            assert!(!matches!(event, TcpEvent::Gap { .. }));
            assert!(ws.push(&event).unwrap());
            messages.extend(std::iter::from_fn(|| ws.poll()));
        }
    }

    for direction in [WsDirection::ClientToServer, WsDirection::ServerToClient] {
        assert_eq!(ws.stream(direction).protocol(), Some("sip"));
    }
    let summary: Vec<_> = messages
        .iter()
        .map(|e| (e.direction, e.message.kind.clone(), e.message.masked))
        .collect();
    assert_eq!(
        summary,
        [
            (WsDirection::ClientToServer, WsKind::Ping, true),
            (WsDirection::ClientToServer, WsKind::Text, true),
            (WsDirection::ServerToClient, WsKind::Text, false),
            (
                WsDirection::ServerToClient,
                WsKind::Close {
                    code: Some(1000),
                    reason: "done".into()
                },
                false
            ),
        ]
    );
    assert_eq!(messages[0].message.payload, b"keep");
    assert_eq!(messages[1].message.payload, REGISTER);
    assert_eq!(messages[2].message.payload, OK);
    assert_eq!(messages[1].flow.src, addr(BROWSER));
    assert_eq!(messages[2].flow.src, addr(GATEWAY));
}

/// Pushes `bytes` in random cuts; only panics and runaway buffers fail.
fn exercise(bytes: &[u8], handshake: bool, rng: &mut XorShift) {
    for direction in [WsDirection::ClientToServer, WsDirection::ServerToClient] {
        let mut s = if handshake {
            WsStream::new(direction)
        } else {
            WsStream::without_handshake(direction)
        };
        let mut at = 0;
        while at < bytes.len() {
            let n = 1 + rng.below(64);
            let end = (at + n).min(bytes.len());
            let result = s.push(&bytes[at..end]);
            while let Some(m) = s.poll() {
                assert!(m.payload.len() <= bytes.len());
            }
            if result.is_err() {
                // Final: the same error again, and nothing more comes out.
                assert_eq!(s.push(b"\x81\x00"), result);
                assert_eq!(s.poll(), None);
                break;
            }
            at = end;
        }
    }
}

#[test]
fn truncated_and_garbage_streams_never_panic() {
    let mut rng = XorShift(0x0123_4567_89AB_CDEF);
    let valid = browser_stream();
    // Every truncation: the stream simply waits for more.
    for cut in 0..=valid.len() {
        let mut s = WsStream::new(WsDirection::ClientToServer);
        assert_eq!(s.push(&valid[..cut]), Ok(()));
    }
    // Mutations of the frames (handshake stripped) and of the whole stream.
    let frames = &valid[UPGRADE.len()..];
    for case in 0..5000 {
        let (base, handshake) = if case % 2 == 0 {
            (frames, false)
        } else {
            (&valid[..], true)
        };
        let mut bytes = base.to_vec();
        for _ in 0..=rng.below(6) {
            let at = rng.below(bytes.len());
            match rng.below(4) {
                0 => bytes[at] = rng.next() as u8,
                1 => bytes[at] ^= 1 << rng.below(8),
                2 => bytes.truncate(at.max(1)),
                // A 64-bit length claim of every size class.
                _ => {
                    let len = [
                        0u64,
                        125,
                        126,
                        65_535,
                        65_536,
                        1 << 24,
                        (1 << 24) + 1,
                        u64::MAX,
                    ][rng.below(8)];
                    let end = (at + 8).min(bytes.len());
                    bytes[at..end].copy_from_slice(&len.to_be_bytes()[..end - at]);
                }
            }
        }
        exercise(&bytes, handshake, &mut rng);
    }
    // Pure noise.
    for _ in 0..2000 {
        let bytes: Vec<u8> = (0..rng.below(300)).map(|_| rng.next() as u8).collect();
        exercise(&bytes, false, &mut rng);
        exercise(&bytes, true, &mut rng);
    }
}
