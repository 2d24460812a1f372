//! TCP reassembly through the public API: a SIP message cut into three segments, written to a
//! real pcap file, read back and reassembled byte-exact; and hostile segments (random flags,
//! sequence and acknowledgment numbers) that must never panic nor grow memory past the bounds.

mod common;
use common::XorShift;

use std::net::SocketAddr;
use std::time::Duration;

use estuary_pcap::{
    build_tcp, CaptureReader, CloseReason, FlowKey, LinkType, PcapWriter, TcpConfig, TcpEvent,
    TcpFlags, TcpHeader, TcpReassembler,
};

const CLIENT: &str = "192.0.2.10:49152";
const SERVER: &str = "192.0.2.20:5060";

const REGISTER: &[u8] = b"REGISTER sip:ims.example.net SIP/2.0\r\n\
Via: SIP/2.0/TCP 192.0.2.10:49152;branch=z9hG4bK776asdhds\r\n\
Max-Forwards: 70\r\n\
From: <sip:alice@ims.example.net>;tag=1928301774\r\n\
To: <sip:alice@ims.example.net>\r\n\
Call-ID: a84b4c76e66710@192.0.2.10\r\n\
CSeq: 1 REGISTER\r\n\
Contact: <sip:alice@192.0.2.10:49152;transport=tcp>\r\n\
Content-Length: 0\r\n\r\n";

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn segment(src: &str, dst: &str, seq: u32, ack: u32, flags: TcpFlags, payload: &[u8]) -> Vec<u8> {
    let header = TcpHeader {
        seq,
        ack,
        flags,
        window: 65535,
    };
    build_tcp(addr(src), addr(dst), &header, payload).unwrap()
}

#[test]
fn sip_message_in_three_segments_from_a_pcap_file() {
    let (c, s) = (0xFFFF_FF00u32, 0x1000u32);
    let ack = TcpFlags::ACK;
    let push = TcpFlags::PSH | TcpFlags::ACK;
    let (one, rest) = REGISTER.split_at(40);
    let (two, three) = rest.split_at(150);
    let two_seq = c.wrapping_add(1 + 40);
    let three_seq = two_seq.wrapping_add(150);
    let end = three_seq.wrapping_add(three.len() as u32);
    let packets = [
        segment(CLIENT, SERVER, c, 0, TcpFlags::SYN, b""),
        segment(SERVER, CLIENT, s, c + 1, TcpFlags::SYN | ack, b""),
        segment(CLIENT, SERVER, c + 1, s + 1, ack, b""),
        segment(CLIENT, SERVER, c + 1, s + 1, push, one),
        // The third segment overtakes the second, then the second is sent twice.
        segment(CLIENT, SERVER, three_seq, s + 1, push, three),
        segment(CLIENT, SERVER, two_seq, s + 1, push, two),
        segment(CLIENT, SERVER, two_seq, s + 1, push, two),
        segment(SERVER, CLIENT, s + 1, end, ack, b""),
        segment(CLIENT, SERVER, end, s + 1, TcpFlags::FIN | ack, b""),
    ];
    let mut writer = PcapWriter::new(Vec::new(), LinkType::RAW).unwrap();
    for (i, p) in packets.iter().enumerate() {
        let t = Duration::new(1_700_000_000, i as u32 * 1_000_000);
        writer.write_packet(t, p).unwrap();
    }
    let file = writer.into_inner();

    let mut capture = CaptureReader::new(&file[..]).unwrap();
    let mut tcp = TcpReassembler::new();
    let mut events: Vec<TcpEvent> = Vec::new();
    while let Some(record) = capture.next_record().unwrap() {
        tcp.push(record.timestamp, &record.decode().unwrap());
        events.extend(std::iter::from_fn(|| tcp.poll()));
    }
    tcp.finish();
    events.extend(std::iter::from_fn(|| tcp.poll()));

    let flow = FlowKey {
        src: addr(CLIENT),
        dst: addr(SERVER),
    };
    let mut bytes: Vec<u8> = Vec::new();
    let mut chunks = Vec::new();
    for e in &events {
        assert!(!matches!(e, TcpEvent::Gap { .. }), "unexpected {e:?}");
        if let TcpEvent::Data {
            flow: f,
            timestamp,
            data,
        } = e
        {
            assert_eq!(*f, flow);
            bytes.extend(data);
            chunks.push((data.len(), *timestamp));
        }
    }
    assert_eq!(bytes, REGISTER);
    // The second segment completed the rest of the message in one chunk.
    assert_eq!(
        chunks,
        [
            (40, Duration::new(1_700_000_000, 3_000_000)),
            (REGISTER.len() - 40, Duration::new(1_700_000_000, 5_000_000)),
        ]
    );
    assert_eq!(
        events.last(),
        Some(&TcpEvent::Closed {
            flow,
            timestamp: Duration::new(1_700_000_000, 8_000_000),
            reason: CloseReason::Fin
        })
    );
}

#[test]
fn hostile_segments_stay_bounded() {
    let config = TcpConfig {
        max_buffered: 64 * 1024,
        max_flows: 16,
    };
    let limit = config.max_buffered;
    let mut tcp = TcpReassembler::with_config(config);
    let mut rng = XorShift(0xDEAD_BEEF_CAFE_F00D);
    let payload = vec![0x5A; 1460];
    let ends = ["10.0.0.1:1", "10.0.0.2:2", "10.0.0.3:3"];
    let (mut delivered, mut most_buffered) = (0usize, 0usize);
    for i in 0..40_000u64 {
        let r = rng.next();
        let src = ends[(r % 3) as usize];
        let dst = ends[((r >> 2) % 3) as usize];
        // Half the time near a moving base so that data is actually accepted and buffered.
        let seq = if r & 0x100 != 0 {
            (rng.next() as u32) & 0x000F_FFFF
        } else {
            rng.next() as u32
        };
        let ack = if r & 0x200 != 0 {
            seq
        } else {
            rng.next() as u32
        };
        // Every flag combination occurs, but RST and FIN rarely enough that buffers fill.
        let mut flags = rng.next() as u8;
        if r & 63 != 0 {
            flags &= !(TcpFlags::RST.0 | TcpFlags::FIN.0);
        }
        // Random ACKs give up holes in the reverse direction; keep some so that path runs too.
        if r & 7 != 0 {
            flags &= !TcpFlags::ACK.0;
        }
        let flags = TcpFlags(flags);
        let len = (rng.next() % 1461) as usize;
        let ip = segment(src, dst, seq, ack, flags, &payload[..len]);
        // A two-port spread makes a few more flows (18) than the table holds.
        let mut packet = estuary_pcap::decode(LinkType::RAW, &ip).unwrap();
        packet.src.set_port((r >> 8) as u16 % 2);
        tcp.push(Duration::from_micros(i), &packet);
        while let Some(e) = tcp.poll() {
            if let TcpEvent::Data { data, .. } = e {
                delivered += data.len();
            }
        }
        assert!(tcp.flows() <= 16);
        assert!(tcp.buffered() <= tcp.flows() * limit);
        most_buffered = most_buffered.max(tcp.buffered());
    }
    tcp.finish();
    while tcp.poll().is_some() {}
    assert!(tcp.buffered() <= 16 * limit);
    // The generator reaches delivery and buffering, not just rejections.
    assert!(
        delivered > 0 && most_buffered > limit,
        "{delivered} {most_buffered}"
    );
}
