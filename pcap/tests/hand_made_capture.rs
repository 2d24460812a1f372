//! A classic pcap file written out byte by byte, as tcpdump on a little-endian host would
//! store it, and decoded through the public API.
//!
//! Record 1: a SIP keep-alive (RFC 5626 §4.4.1 double CRLF) over UDP/IPv4 in an Ethernet frame
//! padded to the 60-byte minimum. Record 2: a TCP segment over IPv6 in an 802.1Q-tagged frame.

use std::net::SocketAddr;
use std::time::Duration;

use estuary_pcap::{
    internet_checksum, transport_checksum, CaptureReader, LinkType, PcapReader, Protocol, TcpFlags,
    TcpHeader,
};

#[rustfmt::skip]
fn capture() -> Vec<u8> {
    let mut f: Vec<u8> = Vec::new();

    // ---- Global header (24 bytes) ----
    f.extend([0xd4, 0xc3, 0xb2, 0xa1]); // magic 0xa1b2c3d4 little-endian: microseconds
    f.extend([0x02, 0x00, 0x04, 0x00]); // version 2.4
    f.extend([0x00, 0x00, 0x00, 0x00]); // thiszone 0
    f.extend([0x00, 0x00, 0x00, 0x00]); // sigfigs 0
    f.extend([0xff, 0xff, 0x00, 0x00]); // snaplen 65535
    f.extend([0x01, 0x00, 0x00, 0x00]); // linktype 1: Ethernet

    // ---- Record 1 header (16 bytes) ----
    f.extend([0x00, 0x10, 0x5e, 0x5f]); // ts_sec 0x5f5e1000 = 1 600 000 000
    f.extend([0xf1, 0xfb, 0x09, 0x00]); // ts_usec 0x0009fbf1 = 654 321
    f.extend([0x3c, 0x00, 0x00, 0x00]); // incl_len 60
    f.extend([0x3c, 0x00, 0x00, 0x00]); // orig_len 60
    // Ethernet II (14)
    f.extend([0x00, 0x11, 0x22, 0x33, 0x44, 0x55]); // destination MAC
    f.extend([0x66, 0x77, 0x88, 0x99, 0xaa, 0xbb]); // source MAC
    f.extend([0x08, 0x00]);                         // EtherType IPv4
    // IPv4 (20)
    f.extend([0x45, 0x00]);             // version 4, IHL 5; DSCP/ECN 0
    f.extend([0x00, 0x20]);             // total length 32 = 20 + 8 + 4
    f.extend([0x12, 0x34]);             // identification
    f.extend([0x00, 0x00]);             // flags 0, fragment offset 0
    f.extend([0x40, 0x11]);             // TTL 64, protocol 17 (UDP)
    // 4500 + 0020 + 1234 + 4011 + c0a8 + 010a + c0a8 + 0114 = 21ad3 → 1ad5 → !1ad5 = e52a
    f.extend([0xe5, 0x2a]);             // header checksum
    f.extend([0xc0, 0xa8, 0x01, 0x0a]); // source 192.168.1.10
    f.extend([0xc0, 0xa8, 0x01, 0x14]); // destination 192.168.1.20
    // UDP (8)
    f.extend([0x13, 0xc4]);             // source port 5060
    f.extend([0x13, 0xc4]);             // destination port 5060
    f.extend([0x00, 0x0c]);             // length 12 = 8 + 4
    f.extend([0x3a, 0xcb]);             // checksum (verified below)
    // Payload (4): CRLF CRLF keep-alive
    f.extend(b"\r\n\r\n");
    // Ethernet padding to the 60-byte minimum frame: 14 + 32 = 46, so 14 zero bytes
    f.extend([0x00; 14]);

    // ---- Record 2 header (16 bytes) ----
    f.extend([0x00, 0x10, 0x5e, 0x5f]); // ts_sec 1 600 000 000
    f.extend([0x40, 0xfc, 0x09, 0x00]); // ts_usec 0x0009fc40 = 654 400
    f.extend([0x52, 0x00, 0x00, 0x00]); // incl_len 82 = 18 + 40 + 20 + 4
    f.extend([0x52, 0x00, 0x00, 0x00]); // orig_len 82
    // Ethernet II with an 802.1Q tag (18)
    f.extend([0x66, 0x77, 0x88, 0x99, 0xaa, 0xbb]); // destination MAC
    f.extend([0x00, 0x11, 0x22, 0x33, 0x44, 0x55]); // source MAC
    f.extend([0x81, 0x00]);                         // TPID 802.1Q
    f.extend([0x00, 0x64]);                         // PCP 0, DEI 0, VLAN id 100
    f.extend([0x86, 0xdd]);                         // EtherType IPv6
    // IPv6 (40)
    f.extend([0x60, 0x00, 0x00, 0x00]); // version 6, traffic class 0, flow label 0
    f.extend([0x00, 0x18]);             // payload length 24 = 20 + 4
    f.extend([0x06, 0x40]);             // next header 6 (TCP), hop limit 64
    f.extend([0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x01]); // 2001:db8::1
    f.extend([0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x02]); // 2001:db8::2
    // TCP (20)
    f.extend([0x13, 0xc5]);             // source port 5061 (SIP over TLS)
    f.extend([0xc3, 0x50]);             // destination port 50000
    f.extend([0x12, 0x34, 0x56, 0x78]); // sequence number
    f.extend([0x9a, 0xbc, 0xde, 0xf0]); // acknowledgment number
    f.extend([0x50, 0x18]);             // data offset 5 words; flags PSH|ACK
    f.extend([0xff, 0xff]);             // window 65535
    f.extend([0x3e, 0x8f]);             // checksum (verified below)
    f.extend([0x00, 0x00]);             // urgent pointer
    // Payload (4)
    f.extend(b"OK\r\n");

    f
}

#[test]
fn hand_made_pcap_decodes() {
    let bytes = capture();
    let mut r = PcapReader::new(&bytes[..]).unwrap();
    assert_eq!(r.linktype(), LinkType::ETHERNET);
    assert!(!r.is_nanosecond());
    assert_eq!(r.snaplen(), 65535);

    let rec = r.next_record().unwrap().unwrap();
    assert_eq!(rec.timestamp, Duration::new(1_600_000_000, 654_321_000));
    assert_eq!((rec.original_len, rec.data.len()), (60, 60));
    let p = rec.decode().unwrap();
    assert_eq!(p.src, "192.168.1.10:5060".parse::<SocketAddr>().unwrap());
    assert_eq!(p.dst, "192.168.1.20:5060".parse::<SocketAddr>().unwrap());
    assert_eq!(p.protocol, Protocol::Udp);
    // The Ethernet padding is not part of the payload: IP total length wins.
    assert_eq!(p.payload, b"\r\n\r\n");
    assert_eq!(
        (p.vlan, p.hop_limit, p.fragment, p.truncated),
        (None, 64, None, false)
    );
    // The hand-computed checksums hold.
    let ip = &rec.data[14..34];
    assert_eq!(internet_checksum(ip), 0);
    assert_eq!(
        transport_checksum(p.src.ip(), p.dst.ip(), 17, &rec.data[34..46]),
        0
    );

    let rec = r.next_record().unwrap().unwrap();
    assert_eq!(rec.timestamp, Duration::new(1_600_000_000, 654_400_000));
    let p = rec.decode().unwrap();
    assert_eq!(p.src, "[2001:db8::1]:5061".parse::<SocketAddr>().unwrap());
    assert_eq!(p.dst, "[2001:db8::2]:50000".parse::<SocketAddr>().unwrap());
    assert_eq!(
        p.protocol,
        Protocol::Tcp(TcpHeader {
            seq: 0x1234_5678,
            ack: 0x9abc_def0,
            flags: TcpFlags::PSH | TcpFlags::ACK,
            window: 65535,
        })
    );
    assert_eq!((p.payload, p.vlan), (&b"OK\r\n"[..], Some(100)));
    assert_eq!(
        transport_checksum(p.src.ip(), p.dst.ip(), 6, &rec.data[58..]),
        0
    );

    assert!(r.next_record().unwrap().is_none());
}

#[test]
fn hand_made_pcap_byte_swapped_reads_the_same() {
    // The same file as a big-endian host writes it: swap each header field, keep packet bytes.
    let le = capture();
    let mut be = Vec::new();
    let swap32 = |b: &[u8]| [b[3], b[2], b[1], b[0]];
    be.extend(swap32(&le[0..4]));
    be.extend([le[5], le[4], le[7], le[6]]);
    for i in (8..24).step_by(4) {
        be.extend(swap32(&le[i..i + 4]));
    }
    let mut at = 24;
    while at < le.len() {
        for i in (at..at + 16).step_by(4) {
            be.extend(swap32(&le[i..i + 4]));
        }
        let len = u32::from_le_bytes(le[at + 8..at + 12].try_into().unwrap()) as usize;
        be.extend(&le[at + 16..at + 16 + len]);
        at += 16 + len;
    }
    let mut a = CaptureReader::new(&le[..]).unwrap();
    let mut b = CaptureReader::new(&be[..]).unwrap();
    loop {
        let (x, y) = (a.next_record().unwrap(), b.next_record().unwrap());
        assert_eq!(x, y);
        if x.is_none() {
            break;
        }
    }
}
