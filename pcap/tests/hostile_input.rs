//! Hostile bytes thrown at every public entry point that reads them: the capture readers and
//! the packet decoder must return errors, never panic, never loop, never allocate what the
//! input does not hold.
//!
//! The mutations come from a fixed-seed xorshift generator, so every run tests the same cases
//! and a failure names a reproducible case number.

mod common;
use common::XorShift;

use std::net::SocketAddr;
use std::time::Duration;

use estuary_pcap::{
    build_tcp, build_udp, decode, wrap_ethernet, CaptureReader, LinkType, MacAddr, PcapNgWriter,
    PcapWriter, TcpFlags, TcpHeader,
};

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

/// Valid packets of several shapes: UDP and TCP over IPv4 and IPv6.
fn packets() -> Vec<Vec<u8>> {
    let tcp = TcpHeader {
        seq: 1,
        ack: 2,
        flags: TcpFlags::SYN | TcpFlags::ACK,
        window: 3,
    };
    vec![
        build_udp(
            addr("10.0.0.1:5060"),
            addr("10.0.0.2:5060"),
            b"INVITE sip:a@b SIP/2.0",
        )
        .unwrap(),
        build_udp(
            addr("[2001:db8::1]:3478"),
            addr("[2001:db8::2]:3479"),
            &[0x00, 0x01, 0, 0],
        )
        .unwrap(),
        build_tcp(
            addr("10.0.0.1:443"),
            addr("10.0.0.2:50000"),
            &tcp,
            b"GET / HTTP/1.1",
        )
        .unwrap(),
        build_tcp(addr("[::1]:5061"), addr("[::2]:5062"), &tcp, b"").unwrap(),
    ]
}

/// Valid captures in every format and byte order the readers accept.
fn corpus() -> Vec<Vec<u8>> {
    let mut files = Vec::new();
    let t = Duration::new(1_700_000_000, 999);

    let mut w = PcapWriter::new(Vec::new(), LinkType::RAW).unwrap();
    for p in packets() {
        w.write_packet(t, &p).unwrap();
    }
    files.push(w.into_inner());

    let mut w = PcapNgWriter::new(Vec::new(), LinkType::ETHERNET).unwrap();
    let raw = w.add_interface(LinkType::RAW).unwrap();
    for p in packets() {
        w.write_packet(
            t,
            &wrap_ethernet(&p, MacAddr::LOCAL_A, MacAddr::LOCAL_B).unwrap(),
        )
        .unwrap();
        w.write_packet_on(raw, t, &p).unwrap();
    }
    files.push(w.into_inner());

    // A big-endian pcapng with options, a simple packet block and an unknown block, by hand.
    let mut be = Vec::new();
    let block = |out: &mut Vec<u8>, kind: u32, body: &[u8]| {
        let total = (body.len() + 12) as u32;
        out.extend(kind.to_be_bytes());
        out.extend(total.to_be_bytes());
        out.extend(body);
        out.extend(total.to_be_bytes());
    };
    let mut shb = 0x1A2B_3C4Du32.to_be_bytes().to_vec();
    shb.extend([0, 1, 0, 0]);
    shb.extend([0xFF; 8]);
    block(&mut be, 0x0A0D_0D0A, &shb);
    let mut idb = vec![0, 101, 0, 0, 0, 0, 0x10, 0];
    idb.extend([
        0, 9, 0, 1, 6, 0, 0, 0, 0, 14, 0, 8, 0, 0, 0, 0, 0, 0, 0, 5, 0, 0, 0, 0,
    ]);
    block(&mut be, 1, &idb);
    block(&mut be, 0x0BAD_0BAD, &[1, 2, 3, 4]);
    let p = &packets()[0];
    let mut spb = (p.len() as u32).to_be_bytes().to_vec();
    spb.extend(p);
    while spb.len() & 3 != 0 {
        spb.push(0);
    }
    block(&mut be, 3, &spb);
    files.push(be);
    files
}

/// Reads a whole capture, decoding every record under every link type. Only panics fail.
fn exercise(bytes: &[u8]) {
    let Ok(mut reader) = CaptureReader::new(bytes) else {
        return;
    };
    // Each record consumes at least 8 bytes, so this bound is never reached unless we loop.
    for _ in 0..=bytes.len() {
        match reader.next_record() {
            Ok(Some(record)) => {
                assert!(record.data.len() <= bytes.len());
                let _ = record.decode();
                exercise_decode(record.data);
            }
            Ok(None) | Err(_) => return,
        }
    }
    panic!("reader did not finish within {} records", bytes.len() + 1);
}

fn exercise_decode(frame: &[u8]) {
    for linktype in [0, 1, 101, 108, 113, 228, 229, 276, 999] {
        if let Ok(p) = decode(LinkType(linktype), frame) {
            // The payload is a slice of the frame, never more.
            assert!(p.payload.len() <= frame.len());
        }
    }
}

#[test]
fn every_truncation_of_valid_captures() {
    for file in corpus() {
        for cut in 0..=file.len() {
            exercise(&file[..cut]);
        }
    }
}

#[test]
fn mutated_captures_never_panic() {
    let corpus = corpus();
    let mut rng = XorShift(0x9E37_79B9_7F4A_7C15);
    for case in 0..6000 {
        let mut bytes = corpus[case % corpus.len()].clone();
        for _ in 0..=rng.below(8) {
            let at = rng.below(bytes.len());
            match rng.below(6) {
                // Flip a byte.
                0 | 1 => bytes[at] ^= 1 << rng.below(8),
                // Overwrite with an interesting value (0, 0xFF, 0x7F, 0x80).
                2 => bytes[at] = [0x00, 0xFF, 0x7F, 0x80][rng.below(4)],
                // Overwrite a 32-bit word with a hostile length.
                3 => {
                    let word = [0u32, 1, 12, 0xFFFF, 0x0100_0000, u32::MAX][rng.below(6)];
                    let end = (at + 4).min(bytes.len());
                    bytes[at..end].copy_from_slice(&word.to_le_bytes()[..end - at]);
                }
                // Cut the tail.
                4 => bytes.truncate(at),
                // Insert a random byte.
                _ => bytes.insert(at, rng.next() as u8),
            }
            if bytes.is_empty() {
                break;
            }
        }
        exercise(&bytes);
    }
}

#[test]
fn mutated_packets_never_panic() {
    let mut frames: Vec<Vec<u8>> = packets();
    frames.extend(
        packets()
            .iter()
            .map(|p| wrap_ethernet(p, MacAddr::LOCAL_A, MacAddr::LOCAL_B).unwrap()),
    );
    let mut rng = XorShift(0x2545_F491_4F6C_DD1D);
    for case in 0..20_000 {
        let mut frame = frames[case % frames.len()].clone();
        for _ in 0..=rng.below(4) {
            if frame.is_empty() {
                break;
            }
            let at = rng.below(frame.len());
            match rng.below(4) {
                0 => frame[at] = rng.next() as u8,
                1 => frame.truncate(at),
                _ => frame[at] ^= 1 << rng.below(8),
            }
        }
        exercise_decode(&frame);
    }
    for frame in &frames {
        for cut in 0..=frame.len() {
            exercise_decode(&frame[..cut]);
        }
    }
}

#[test]
fn random_bytes_never_panic() {
    let mut rng = XorShift(42);
    for _ in 0..3000 {
        let len = rng.below(200);
        let mut bytes: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
        // Give half of them a valid magic so the record parsers are reached.
        match rng.below(4) {
            0 if len >= 4 => bytes[..4].copy_from_slice(&[0xd4, 0xc3, 0xb2, 0xa1]),
            1 if len >= 12 => {
                bytes[..4].copy_from_slice(&[0x0A, 0x0D, 0x0D, 0x0A]);
                bytes[8..12].copy_from_slice(&[0x4D, 0x3C, 0x2B, 0x1A]);
            }
            _ => {}
        }
        exercise(&bytes);
        exercise_decode(&bytes);
    }
}
