//! Named interfaces survive a write and read (the recorder names its lanes; replay finds them
//! by name).

use std::time::Duration;

use estuary_pcap::{build_udp, CaptureReader, LinkType, PcapNgWriter};

#[test]
fn interface_names_round_trip() {
    let mut w = PcapNgWriter::new_named(Vec::new(), LinkType::RAW, "web: SIP").unwrap();
    assert_eq!(w.add_named_interface(LinkType::RAW, "ims: media, odd length").unwrap(), 1);
    assert_eq!(w.add_interface(LinkType::RAW).unwrap(), 2);
    let ip = build_udp("127.0.0.1:1".parse().unwrap(), "127.0.0.1:2".parse().unwrap(), b"x").unwrap();
    w.write_packet_on(1, Duration::from_secs(5), &ip).unwrap();
    let bytes = w.into_inner();
    let mut r = CaptureReader::new(&bytes[..]).unwrap();
    assert_eq!(r.next_record().unwrap().unwrap().interface, 1);
    assert_eq!((r.interface_name(0), r.interface_name(1), r.interface_name(2), r.interface_name(3)), (Some("web: SIP"), Some("ims: media, odd length"), None, None));
    let CaptureReader::PcapNg(ng) = r else { panic!("pcapng") };
    let names: Vec<Option<String>> = ng.interfaces().iter().map(|i| i.name.clone()).collect();
    assert_eq!(names, [Some("web: SIP".to_owned()), Some("ims: media, odd length".to_owned()), None]);
}

/// Packet comments (opt_comment) survive a write and read, on packets of every padding,
/// next to uncommented ones; the recorder marks decrypted browser media with one.
#[test]
fn packet_comments_round_trip() {
    let mut w = PcapNgWriter::new_named(Vec::new(), LinkType::RAW, "web: media").unwrap();
    let comments = ["", "a", "plaintext, SRTP decrypted by estuary", "éé", "abcd"];
    for (i, c) in comments.iter().enumerate() {
        let ip = build_udp("127.0.0.1:1".parse().unwrap(), "127.0.0.1:2".parse().unwrap(), &vec![i as u8; i]).unwrap();
        if c.is_empty() {
            w.write_packet_on(0, Duration::from_secs(i as u64), &ip).unwrap();
        } else {
            w.write_commented_packet_on(0, Duration::from_secs(i as u64), &ip, c).unwrap();
        }
    }
    let bytes = w.into_inner();
    let mut r = CaptureReader::new(&bytes[..]).unwrap();
    for (i, c) in comments.iter().enumerate() {
        let rec = r.next_record().unwrap().unwrap();
        assert_eq!(rec.decode().unwrap().payload, &vec![i as u8; i][..]);
        assert_eq!(rec.comment, (!c.is_empty()).then_some(*c), "packet {i}");
    }
    assert!(r.next_record().unwrap().is_none());
}
