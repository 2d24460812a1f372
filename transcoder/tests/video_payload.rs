//! RTP payload formats for video: VP8 (RFC 7741) and H.264 (RFC 6184). Header bytes checked
//! against the RFCs' layouts by hand, round trips through packetizer and depacketizer, the
//! loss rules (one keyframe request, then nothing until a keyframe), random bytes thrown at
//! the parsers, and tshark's dissectors reading a capture of what we send.

mod common;

use std::net::SocketAddr;

use common::XorShift;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use estuary_pcap::{build_udp, wrap_ethernet, LinkType, MacAddr, PcapWriter};
use estuary_transcoder::video::h264::{self, H264Depacketizer, H264Packetizer, PacketizationMode};
use estuary_transcoder::video::vp8::{
    self, PictureId, TemporalLayer, Vp8Depacketizer, Vp8Descriptor, Vp8Packetizer,
};
use estuary_transcoder::video::{
    Depacketized, PacketizeError, PayloadError, RtpPayload, VideoFrame, MAX_FRAME_LEN,
};

// ---- Helpers --------------------------------------------------------------------------------


/// A synthetic VP8 frame of `len` bytes (at least 10). The frame tag (RFC 6386 §9.1) is
/// real: P = 0 on key frames, which also get the start code and a 640x480 size; the first
/// partition takes half of the rest, as if token partitions followed.
fn vp8_frame(len: usize, keyframe: bool, seed: u64) -> Vec<u8> {
    let mut rng = XorShift(seed | 1);
    let mut frame: Vec<u8> = (0..len).map(|_| rng.byte()).collect();
    let header_len = if keyframe { 10 } else { 3 };
    let first_partition = ((len - header_len) / 2) as u32;
    // P (bit 0), version 0 (bits 1-3), show_frame (bit 4), first_part_size (bits 5-23).
    let tag = u32::from(!keyframe) | 1 << 4 | first_partition << 5;
    frame[..3].copy_from_slice(&tag.to_le_bytes()[..3]);
    if keyframe {
        frame[3..6].copy_from_slice(&[0x9d, 0x01, 0x2a]);
        frame[6..8].copy_from_slice(&640u16.to_le_bytes());
        frame[8..10].copy_from_slice(&480u16.to_le_bytes());
    }
    frame
}

/// An H.264 NAL unit: `header`, then `len - 1` bytes with no zero byte.
fn nal(header: u8, len: usize, seed: u64) -> Vec<u8> {
    let mut n = vec![header];
    n.extend(XorShift(seed | 1).nonzero_bytes(len - 1));
    n
}

/// An Annex B access unit with 4-byte start codes (the form the depacketizer writes).
fn annex_b(nals: &[&[u8]]) -> Vec<u8> {
    nals.iter()
        .flat_map(|n| [&[0, 0, 0, 1][..], n].concat())
        .collect()
}

/// A constrained baseline SPS, level 3.1, 640x480, written bit by bit: profile_idc 66,
/// constraint_set0/1, level_idc 31, then ue(v) fields sps_id 0, log2_max_frame_num_minus4 0,
/// pic_order_cnt_type 2, max_num_ref_frames 1, gaps 0, width_in_mbs_minus1 39,
/// height_in_map_units_minus1 29, frame_mbs_only 1, direct_8x8 1, cropping 0, vui 0, stop bit.
const SPS: [u8; 9] = [0x67, 0x42, 0xc0, 0x1f, 0xda, 0x02, 0x80, 0xf6, 0x40];
/// pps_id 0, sps_id 0, CAVLC, no slice groups, one reference index, QP 26, deblocking control.
const PPS: [u8; 4] = [0x68, 0xce, 0x3c, 0x80];

/// An IDR slice: header 0x65 (NRI 3, type 5), then first_mb_in_slice 0, slice_type 7,
/// pps_id 0 (0x88 0x84 ...), then filler.
fn idr_slice(len: usize, seed: u64) -> Vec<u8> {
    let mut n = nal(0x65, len, seed);
    n[1..3].copy_from_slice(&[0x88, 0x84]);
    n
}

/// A non-IDR slice: header 0x41 (NRI 2, type 1), first_mb_in_slice 0, slice_type 5 (P).
fn p_slice(len: usize, seed: u64) -> Vec<u8> {
    let mut n = nal(0x41, len, seed);
    n[1] = 0x9a;
    n
}

/// Either depacketizer, for the helpers below.
trait Depacketizer {
    fn push(&mut self, seq: u16, timestamp: u32, marker: bool, payload: &[u8]) -> Depacketized;
}

impl Depacketizer for Vp8Depacketizer {
    fn push(&mut self, seq: u16, timestamp: u32, marker: bool, payload: &[u8]) -> Depacketized {
        Vp8Depacketizer::push(self, seq, timestamp, marker, payload)
    }
}

impl Depacketizer for H264Depacketizer {
    fn push(&mut self, seq: u16, timestamp: u32, marker: bool, payload: &[u8]) -> Depacketized {
        H264Depacketizer::push(self, seq, timestamp, marker, payload)
    }
}

/// Pushes `payloads` into `d` with consecutive sequence numbers from `*seq`, skipping the
/// indices in `drop`. Returns what each push said.
fn push_all(
    d: &mut impl Depacketizer,
    payloads: &[RtpPayload],
    seq: &mut u16,
    timestamp: u32,
    drop: &[usize],
) -> Vec<Depacketized> {
    let mut results = Vec::new();
    for (i, p) in payloads.iter().enumerate() {
        if !drop.contains(&i) {
            results.push(d.push(*seq, timestamp, p.marker, &p.data));
        }
        *seq = seq.wrapping_add(1);
    }
    results
}

fn frames(results: &[Depacketized]) -> Vec<&VideoFrame> {
    results
        .iter()
        .filter_map(|r| match r {
            Depacketized::Frame(f) => Some(f),
            _ => None,
        })
        .collect()
}

fn count_keyframe_requests(results: &[Depacketized]) -> usize {
    results
        .iter()
        .filter(|r| **r == Depacketized::KeyframeNeeded)
        .count()
}

fn frame(data: Vec<u8>, timestamp: u32, keyframe: bool) -> Depacketized {
    Depacketized::Frame(VideoFrame {
        data,
        timestamp,
        keyframe,
    })
}

// ---- 1. VP8 payload descriptor --------------------------------------------------------------

#[test]
fn vp8_descriptor_matches_rfc7741_layout() {
    // X=1, S=1, PID=0 | I=1 | M=1 PictureID=0x1234 (15 bits: 0x12 high, 0x34 low):
    //   1 0 0 1 0 000 = 0x90,  1 0 0 0 0000 = 0x80,  1 0010010 = 0x92,  0x34.
    let start = Vp8Descriptor {
        start_of_partition: true,
        picture_id: Some(PictureId::Long(0x1234)),
        ..Vp8Descriptor::default()
    };
    let mut out = Vec::new();
    start.write(&mut out);
    assert_eq!(out, [0x90, 0x80, 0x92, 0x34]);
    assert_eq!(start.encoded_len(), 4);
    // Continuation: S=0 clears bit 4 of the first byte only.
    let mut out = Vec::new();
    Vp8Descriptor {
        start_of_partition: false,
        ..start
    }
    .write(&mut out);
    assert_eq!(out, [0x80, 0x80, 0x92, 0x34]);

    // Every optional field: N=1, S=1, PID=3, a 7-bit PictureID 0x55, TL0PICIDX 0xab, TID 2
    // with Y, KEYIDX 17.
    //   X N S PID:   1 0 1 1 0 011 = 0xb3
    //   I L T K RSV: 1 1 1 1 0000  = 0xf0
    //   M PictureID: 0 1010101     = 0x55
    //   TL0PICIDX:                   0xab
    //   TID Y KEYIDX: 10 1 10001   = 0xb1
    let full = Vp8Descriptor {
        non_reference: true,
        start_of_partition: true,
        partition_index: 3,
        picture_id: Some(PictureId::Short(0x55)),
        tl0_pic_idx: Some(0xab),
        temporal_layer: Some(TemporalLayer {
            index: 2,
            sync: true,
        }),
        key_index: Some(17),
    };
    let mut out = Vec::new();
    full.write(&mut out);
    assert_eq!(out, [0xb3, 0xf0, 0x55, 0xab, 0xb1]);
    assert_eq!(full.encoded_len(), 5);
    out.extend_from_slice(&[0xde, 0xad]);
    assert_eq!(Vp8Descriptor::parse(&out), Ok((full, &[0xde, 0xad][..])));

    // Hand-written descriptors with L, T, K in other combinations, read back field by field.
    let cases: [(&[u8], Vp8Descriptor); 5] = [
        // No X: the one required byte (S=1, PID=0).
        (
            &[0x10, 0xee],
            Vp8Descriptor {
                start_of_partition: true,
                ..Vp8Descriptor::default()
            },
        ),
        // X, I with a 7-bit PictureID 0x7f, K only: T/K byte present, TID/Y bits ignored.
        (
            &[0x80, 0x90, 0x7f, 0xe7, 0xee],
            Vp8Descriptor {
                picture_id: Some(PictureId::Short(0x7f)),
                key_index: Some(7),
                ..Vp8Descriptor::default()
            },
        ),
        // T only: TID 1, Y=0; KEYIDX bits ignored.
        (
            &[0x81, 0x20, 0x5f, 0xee],
            Vp8Descriptor {
                partition_index: 1,
                temporal_layer: Some(TemporalLayer {
                    index: 1,
                    sync: false,
                }),
                ..Vp8Descriptor::default()
            },
        ),
        // L and T with a 15-bit PictureID 0x7fff.
        (
            &[0x90, 0xe0, 0xff, 0xff, 0x09, 0xc0, 0xee],
            Vp8Descriptor {
                start_of_partition: true,
                picture_id: Some(PictureId::Long(0x7fff)),
                tl0_pic_idx: Some(9),
                temporal_layer: Some(TemporalLayer {
                    index: 3,
                    sync: false,
                }),
                ..Vp8Descriptor::default()
            },
        ),
        // L without T (RFC 7741 asks senders to set T too; unambiguous, so read as written).
        (
            &[0x80, 0x40, 0x2a, 0xee],
            Vp8Descriptor {
                tl0_pic_idx: Some(0x2a),
                ..Vp8Descriptor::default()
            },
        ),
    ];
    for (bytes, expected) in cases {
        assert_eq!(
            Vp8Descriptor::parse(bytes),
            Ok((expected, &[0xee][..])),
            "{bytes:02x?}"
        );
        assert_eq!(expected.encoded_len(), bytes.len() - 1, "{bytes:02x?}");
    }
    assert_eq!(
        Vp8Descriptor::parse(&[0x80, 0x90, 0x7f, 0xe7, 0xee])
            .unwrap()
            .0
            .picture_id
            .map(PictureId::value),
        Some(0x7f)
    );

    // The R bits and RSV are ignored on reception (RFC 7741 §4.2: "MUST be ignored by the
    // receiver"), so a future use of them does not break us.
    assert_eq!(
        Vp8Descriptor::parse(&[0x80 | 0x40 | 0x08 | 0x10, 0x80 | 0x0f, 0x92, 0x34, 0xee]),
        Ok((start, &[0xee][..]))
    );

    // Malformed: too short for what the bits announce, or nothing after the descriptor.
    let truncated = PayloadError::Truncated {
        what: "VP8 payload descriptor",
    };
    for bytes in [
        &[][..],
        &[0x80],             // X without its byte
        &[0x80, 0x80],       // I without PictureID
        &[0x80, 0x80, 0x92], // M=1 without the second PictureID byte
        &[0x80, 0x40],       // L without TL0PICIDX
        &[0x80, 0x60, 0x01], // L and T: the T/K byte is missing
        &[0x80, 0x10],       // K without the T/K byte
    ] {
        assert_eq!(Vp8Descriptor::parse(bytes), Err(truncated), "{bytes:02x?}");
    }
    assert_eq!(
        Vp8Descriptor::parse(&[0x90, 0x80, 0x92, 0x34]),
        Err(PayloadError::NoData)
    );
    assert_eq!(Vp8Descriptor::parse(&[0x10]), Err(PayloadError::NoData));

    // The packetizer writes exactly the descriptor above.
    let mut out = Vec::new();
    Vp8Packetizer::new(1200, 0x1234)
        .packetize(&vp8_frame(100, true, 1), &mut out)
        .unwrap();
    assert_eq!(out[0].data[..4], [0x90, 0x80, 0x92, 0x34]);

    // Key frames by the frame tag's P bit.
    assert!(vp8::is_keyframe(&vp8_frame(20, true, 2)));
    assert!(!vp8::is_keyframe(&vp8_frame(20, false, 2)));
    assert!(vp8::is_keyframe(&[0x10]));
    assert!(!vp8::is_keyframe(&[0x11]));
    assert!(!vp8::is_keyframe(&[]));
}

// ---- 2. VP8 round trip ----------------------------------------------------------------------

#[test]
fn vp8_round_trip_with_picture_id_wrap() {
    let mut packetizer = Vp8Packetizer::new(1200, 0x7ffe);
    let mut depacketizer = Vp8Depacketizer::new();
    let sent = [
        vp8_frame(5000, true, 1),
        vp8_frame(5000, false, 2),
        vp8_frame(37, false, 3),
        vp8_frame(2393, false, 4),
    ];
    let expected_ids = [0x7ffe, 0x7fff, 0x0000, 0x0001];
    let expected_counts = [5, 5, 1, 3];
    let mut seq = 65_533; // the sequence number wraps too
    for (i, sent_frame) in sent.iter().enumerate() {
        let timestamp = 90_000u32.wrapping_mul(i as u32).wrapping_sub(3000);
        let mut payloads = Vec::new();
        let n = packetizer.packetize(sent_frame, &mut payloads).unwrap();
        assert_eq!(
            (n, payloads.len()),
            (expected_counts[i], expected_counts[i])
        );

        let mut body = Vec::new();
        for (j, p) in payloads.iter().enumerate() {
            assert!(p.data.len() <= 1200, "packet {j} is {} bytes", p.data.len());
            assert_eq!(p.marker, j == n - 1, "marker on the last packet only");
            let (d, data) = Vp8Descriptor::parse(&p.data).unwrap();
            assert_eq!(d.start_of_partition, j == 0, "S on the first packet only");
            assert_eq!(d.partition_index, 0);
            assert!(!d.non_reference);
            assert_eq!(d.picture_id, Some(PictureId::Long(expected_ids[i])));
            assert_eq!(
                (d.tl0_pic_idx, d.temporal_layer, d.key_index),
                (None, None, None)
            );
            body.extend_from_slice(data);
        }
        assert_eq!(&body, sent_frame);
        if i == 0 {
            // 5000 bytes over 1196-byte chunks: five packets of 1000 bytes, none a runt.
            assert!(payloads.iter().all(|p| p.data.len() == 1004));
        }

        let results = push_all(&mut depacketizer, &payloads, &mut seq, timestamp, &[]);
        let (last, before) = results.split_last().unwrap();
        assert!(
            before.iter().all(|r| *r == Depacketized::Pending),
            "{before:?}"
        );
        assert_eq!(*last, frame(sent_frame.clone(), timestamp, i == 0));
    }
    assert_eq!(packetizer.next_picture_id(), 2);
    assert!(!depacketizer.awaiting_keyframe());

    // Caller errors leave the PictureID alone.
    let mut out = Vec::new();
    assert_eq!(
        packetizer.packetize(&[], &mut out),
        Err(PacketizeError::Empty)
    );
    assert_eq!(
        Vp8Packetizer::new(4, 0).packetize(&[1], &mut out),
        Err(PacketizeError::MaxPayloadTooSmall { max: 4, min: 5 })
    );
    assert!(out.is_empty());
    assert_eq!(packetizer.next_picture_id(), 2);
    // The smallest packet that carries anything.
    assert_eq!(Vp8Packetizer::new(5, 0).packetize(&[1, 2], &mut out), Ok(2));
}

// ---- 3. VP8 loss ----------------------------------------------------------------------------

/// Packetizes `frames` (key or not) into per-frame payload lists.
fn vp8_stream(keyframes: &[bool]) -> Vec<(Vec<u8>, Vec<RtpPayload>)> {
    let mut packetizer = Vp8Packetizer::new(1200, 100);
    keyframes
        .iter()
        .enumerate()
        .map(|(i, &key)| {
            let f = vp8_frame(3000, key, i as u64 + 10);
            let mut payloads = Vec::new();
            packetizer.packetize(&f, &mut payloads).unwrap();
            (f, payloads)
        })
        .collect()
}

#[test]
fn vp8_loss_asks_for_one_keyframe_and_drops_until_it() {
    //             1     2      3      4      5      6     7      8
    let stream = vp8_stream(&[true, false, false, false, false, true, false, false]);
    let mut d = Vp8Depacketizer::new();
    let mut seq = 1000;
    let mut all = Vec::new();
    for (i, (sent, payloads)) in stream.iter().enumerate() {
        let ts = 3000 * i as u32;
        // Frame 2 (index 1) loses its middle packet (of three).
        let drop: &[usize] = if i == 1 { &[1] } else { &[] };
        let results = push_all(&mut d, payloads, &mut seq, ts, drop);
        match i {
            0 | 5 | 6 | 7 => assert_eq!(
                results.last(),
                Some(&frame(sent.clone(), ts, i % 5 == 0)),
                "frame {}",
                i + 1
            ),
            1 => {
                assert_eq!(
                    results,
                    [Depacketized::Pending, Depacketized::KeyframeNeeded]
                );
                assert!(d.awaiting_keyframe());
            }
            _ => assert!(
                results.iter().all(|r| *r == Depacketized::Pending),
                "frame {} {results:?}",
                i + 1
            ),
        }
        all.extend(results);
    }
    assert_eq!(count_keyframe_requests(&all), 1);
    assert_eq!(frames(&all).len(), 4);
    assert!(!d.awaiting_keyframe());
}

#[test]
fn vp8_loss_rules_each_trigger_one_request() {
    let stream = vp8_stream(&[true, false, false, true]);
    let ts = |i: usize| 3000 * i as u32;

    // A frame's first packet (S=1, PID=0) missing: the gap and the orphaned continuation.
    let mut d = Vp8Depacketizer::new();
    let mut seq = 0;
    let mut all = Vec::new();
    for (i, (_, payloads)) in stream.iter().enumerate() {
        let drop: &[usize] = if i == 1 { &[0] } else { &[] };
        all.extend(push_all(&mut d, payloads, &mut seq, ts(i), drop));
    }
    assert_eq!(count_keyframe_requests(&all), 1);
    let got: Vec<u32> = frames(&all).iter().map(|f| f.timestamp).collect();
    assert_eq!(got, [ts(0), ts(3)]);

    // The same with no sequence gap: the stream begins mid-frame (joined late).
    let mut d = Vp8Depacketizer::new();
    let mut seq = 0;
    let mut all = Vec::new();
    all.extend(push_all(&mut d, &stream[1].1[1..], &mut seq, ts(1), &[]));
    assert_eq!(all[0], Depacketized::KeyframeNeeded);
    for (i, (_, payloads)) in stream.iter().enumerate().skip(2) {
        all.extend(push_all(&mut d, payloads, &mut seq, ts(i), &[]));
    }
    assert_eq!(count_keyframe_requests(&all), 1);
    assert_eq!(frames(&all).len(), 1);
    assert!(frames(&all)[0].keyframe);

    // A frame that never ends: the timestamp changes with no marker and no sequence gap.
    let mut d = Vp8Depacketizer::new();
    let mut seq = 0;
    let mut all = Vec::new();
    for (i, (_, payloads)) in stream.iter().enumerate() {
        let mut payloads = payloads.clone();
        if i == 1 {
            payloads.last_mut().unwrap().marker = false;
        }
        let results = push_all(&mut d, &payloads, &mut seq, ts(i), &[]);
        if i == 2 {
            assert_eq!(results[0], Depacketized::KeyframeNeeded);
        }
        all.extend(results);
    }
    assert_eq!(count_keyframe_requests(&all), 1);
    let got: Vec<u32> = frames(&all).iter().map(|f| f.timestamp).collect();
    assert_eq!(got, [ts(0), ts(3)]);

    // A stream that starts on a delta frame asks once, then starts at the keyframe; padding
    // (empty payloads) and duplicates do not count as loss.
    let mut d = Vp8Depacketizer::new();
    let mut seq = 0;
    let mut all = Vec::new();
    for (i, (_, payloads)) in stream.iter().enumerate().skip(1) {
        all.extend(push_all(&mut d, payloads, &mut seq, ts(i), &[]));
        assert_eq!(d.push(seq, ts(i), false, &[]), Depacketized::Pending);
        assert_eq!(d.push(seq, ts(i), false, &[]), Depacketized::Pending);
        seq += 1;
    }
    assert_eq!(all[2], Depacketized::KeyframeNeeded, "{all:?}");
    assert_eq!(count_keyframe_requests(&all), 1);
    assert_eq!(frames(&all).len(), 1);

    // A frame that never ends is given up once it outgrows MAX_FRAME_LEN: the packet that
    // would take it past the limit finds it lost.
    let mut d = Vp8Depacketizer::new();
    let start = [&[0x10][..], &[0; 1199]].concat(); // S=1, a key frame tag (P=0)
    let more = [&[0x00][..], &[0; 1199]].concat();
    assert_eq!(d.push(0, 0, false, &start), Depacketized::Pending);
    let given_up = (1..=u16::MAX)
        .find(|&seq| d.push(seq, 0, false, &more) != Depacketized::Pending)
        .unwrap();
    assert_eq!(usize::from(given_up), MAX_FRAME_LEN / 1199);
    assert!(d.awaiting_keyframe());

    // A malformed packet is rejected and leaves no trace: the next one shows the gap.
    let mut d = Vp8Depacketizer::new();
    let mut seq = 0;
    push_all(&mut d, &stream[0].1, &mut seq, 0, &[]);
    assert_eq!(
        d.push(seq, 3000, false, &[0x80]),
        Depacketized::Rejected(PayloadError::Truncated {
            what: "VP8 payload descriptor"
        })
    );
    let results = push_all(&mut d, &stream[1].1, &mut seq, 3000, &[0]);
    assert_eq!(results[0], Depacketized::KeyframeNeeded);
}

// ---- 4. H.264 STAP-A ------------------------------------------------------------------------

#[test]
fn h264_stap_a_matches_rfc6184_layout() {
    let idr = idr_slice(20, 7);
    // Mixed start codes, as encoders write them.
    let au = [
        &[0, 0, 0, 1][..],
        &SPS,
        &[0, 0, 0, 1],
        &PPS,
        &[0, 0, 1],
        &idr,
    ]
    .concat();
    let mut out = Vec::new();
    let n = H264Packetizer::new(PacketizationMode::NonInterleaved, 1200)
        .packetize(&au, &mut out)
        .unwrap();
    assert_eq!(n, 1);
    assert!(out[0].marker);

    // RFC 6184 §5.7.1: STAP-A NAL header (F=0, NRI = max(3, 3, 3) = 3, type 24):
    // 0 11 11000 = 0x78, then for each unit a 16-bit size and the unit.
    let mut expected = vec![0x78];
    expected.extend_from_slice(&[0x00, 0x09]);
    expected.extend_from_slice(&SPS);
    expected.extend_from_slice(&[0x00, 0x04, 0x68, 0xce, 0x3c, 0x80]);
    expected.extend_from_slice(&[0x00, 0x14]);
    expected.extend_from_slice(&idr);
    assert_eq!(out[0].data, expected);
    assert_eq!(out[0].data.len(), 1 + 2 + 9 + 2 + 4 + 2 + 20);

    let mut d = H264Depacketizer::new();
    assert_eq!(
        d.push(7, 90_000, true, &out[0].data),
        frame(annex_b(&[&SPS, &PPS, &idr]), 90_000, true)
    );

    // NRI is the highest of the units' and F their OR, wherever that unit sits: a slice of
    // NRI 2 between two SEIs (NRI 0) gives 0 10 11000 = 0x58; a unit with F set and NRI 1,
    // 1 01 11000 = 0xb8.
    let sei = [0x06, 0x06, 0x01, 0xc4, 0x80]; // recovery point, exact match
    let slice = p_slice(10, 3);
    let flagged = [0xa1, 0x9a, 0x01];
    let packetizer = H264Packetizer::new(PacketizationMode::NonInterleaved, 100);
    for (middle, header) in [(&slice[..], 0x58), (&flagged[..], 0xb8)] {
        let mut out = Vec::new();
        packetizer
            .packetize(&annex_b(&[&sei, middle, &sei]), &mut out)
            .unwrap();
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].data[0], header);
    }

    // Aggregation stops at max_payload: SPS + PPS as a STAP-A is 1 + 11 + 6 = 18 bytes.
    let au = annex_b(&[&SPS, &PPS]);
    let mut out = Vec::new();
    H264Packetizer::new(PacketizationMode::NonInterleaved, 18)
        .packetize(&au, &mut out)
        .unwrap();
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].data.len(), 18);
    let mut out = Vec::new();
    H264Packetizer::new(PacketizationMode::NonInterleaved, 17)
        .packetize(&au, &mut out)
        .unwrap();
    let singles: Vec<(&[u8], bool)> = out.iter().map(|p| (&p.data[..], p.marker)).collect();
    assert_eq!(singles, [(&SPS[..], false), (&PPS[..], true)]);

    // Annex B helpers: leading bytes, trailing zeros and empty units are not NAL units.
    let stream = [
        &[0xff, 0x00][..],
        &[0, 0, 0, 1],
        &SPS,
        &[0, 0, 0, 0, 1],
        &[0, 0, 1],
        &PPS,
        &[0, 0],
    ]
    .concat();
    let units: Vec<&[u8]> = h264::nal_units(&stream).collect();
    assert_eq!(units, [&SPS[..], &PPS[..]]);
    assert_eq!(
        units.iter().map(|u| h264::nal_type(u)).collect::<Vec<_>>(),
        [7, 8]
    );
    assert_eq!(h264::nal_type(&idr), 5);
    assert_eq!(h264::nal_type(&[]), 0);
    assert_eq!(
        h264::nal_units(&SPS).count(),
        0,
        "no start code, no NAL unit"
    );
    assert_eq!(
        H264Packetizer::new(PacketizationMode::NonInterleaved, 1200).packetize(&SPS, &mut out),
        Err(PacketizeError::Empty)
    );
}

// ---- 5. H.264 FU-A --------------------------------------------------------------------------

#[test]
fn h264_fu_a_matches_rfc6184_layout() {
    for (nal_unit, indicator) in [(idr_slice(4000, 1), 0x7c), (p_slice(4000, 2), 0x5c)] {
        let nal_type = nal_unit[0] & 0x1f;
        let mut out = Vec::new();
        let n = H264Packetizer::new(PacketizationMode::NonInterleaved, 1200)
            .packetize(&annex_b(&[&nal_unit]), &mut out)
            .unwrap();
        // 3999 bytes after the NAL header, 1198 per FU-A: four fragments of 1000, 1000,
        // 1000, 999 bytes.
        assert_eq!(n, 4);
        let sizes: Vec<usize> = out.iter().map(|p| p.data.len()).collect();
        assert_eq!(sizes, [1002, 1002, 1002, 1001]);
        let mut body = Vec::new();
        for (i, p) in out.iter().enumerate() {
            // FU indicator: the NAL unit's F and NRI, type 28 (IDR: 0 11 11100 = 0x7c; the
            // NRI-2 slice: 0 10 11100 = 0x5c). FU header: S E R, then the NAL unit's type.
            assert_eq!(p.data[0], indicator);
            let s = if i == 0 { 0x80 } else { 0 };
            let e = if i == 3 { 0x40 } else { 0 };
            assert_eq!(p.data[1], s | e | nal_type, "fragment {i}");
            assert_eq!(p.marker, i == 3);
            body.extend_from_slice(&p.data[2..]);
        }
        assert_eq!(body, nal_unit[1..]);

        let mut d = H264Depacketizer::new();
        if nal_type == 1 {
            // A depacketizer starts on an IDR: give it one.
            let idr = idr_slice(50, 9);
            assert!(matches!(d.push(99, 0, true, &idr), Depacketized::Frame(_)));
        }
        let mut seq = 100;
        let results = push_all(&mut d, &out, &mut seq, 3000, &[]);
        assert_eq!(
            results[..3],
            [
                Depacketized::Pending,
                Depacketized::Pending,
                Depacketized::Pending
            ]
        );
        assert_eq!(
            results[3],
            frame(annex_b(&[&nal_unit]), 3000, nal_type == 5)
        );
    }

    // Mode 0 cannot fragment: the encoder has to make smaller slices. Nothing is appended.
    let nal_unit = idr_slice(4000, 1);
    let mut out = vec![RtpPayload {
        data: vec![1],
        marker: true,
    }];
    let mode0 = H264Packetizer::new(PacketizationMode::SingleNal, 1200);
    let au = annex_b(&[&SPS, &PPS, &nal_unit]);
    assert_eq!(
        mode0.packetize(&au, &mut out),
        Err(PacketizeError::NalTooLarge {
            size: 4000,
            max: 1200
        })
    );
    assert_eq!(out.len(), 1);
    // Units that fit go one per packet, never aggregated.
    let idr = idr_slice(1200, 4);
    assert_eq!(
        mode0.packetize(&annex_b(&[&SPS, &PPS, &idr]), &mut out),
        Ok(3)
    );
    let sent: Vec<(&[u8], bool)> = out[1..].iter().map(|p| (&p.data[..], p.marker)).collect();
    assert_eq!(
        sent,
        [(&SPS[..], false), (&PPS[..], false), (&idr[..], true)]
    );
    assert_eq!(
        H264Packetizer::new(PacketizationMode::NonInterleaved, 2).packetize(&au, &mut out),
        Err(PacketizeError::MaxPayloadTooSmall { max: 2, min: 3 })
    );
}

// ---- 6. H.264 loss --------------------------------------------------------------------------

/// A keyframe access unit (SPS, PPS, a large IDR slice) or a delta one (one large P slice).
fn h264_au(keyframe: bool, seed: u64) -> Vec<u8> {
    if keyframe {
        annex_b(&[&SPS, &PPS, &idr_slice(4000, seed)])
    } else {
        annex_b(&[&p_slice(3000, seed)])
    }
}

fn h264_stream(keyframes: &[bool]) -> Vec<(Vec<u8>, Vec<RtpPayload>)> {
    let packetizer = H264Packetizer::new(PacketizationMode::NonInterleaved, 1200);
    keyframes
        .iter()
        .enumerate()
        .map(|(i, &key)| {
            let au = h264_au(key, i as u64 + 20);
            let mut payloads = Vec::new();
            packetizer.packetize(&au, &mut payloads).unwrap();
            (au, payloads)
        })
        .collect()
}

#[test]
fn h264_loss_asks_for_one_keyframe_and_drops_until_an_idr() {
    //                1     2      3      4      5     6
    let stream = h264_stream(&[true, false, false, false, true, false]);
    // A keyframe: STAP-A(SPS, PPS) then four FU-As; a delta: three FU-As.
    assert_eq!(stream[0].1.len(), 5);
    assert_eq!(stream[0].1[0].data[0] & 0x1f, 24);
    assert_eq!(stream[1].1.len(), 3);

    let mut d = H264Depacketizer::new();
    let mut seq = 40_000;
    let mut all = Vec::new();
    for (i, (au, payloads)) in stream.iter().enumerate() {
        let ts = 3000 * i as u32;
        // AU 2 loses its middle FU-A.
        let drop: &[usize] = if i == 1 { &[1] } else { &[] };
        let results = push_all(&mut d, payloads, &mut seq, ts, drop);
        match i {
            0 | 4 | 5 => assert_eq!(
                results.last(),
                Some(&frame(au.clone(), ts, i != 5)),
                "AU {}",
                i + 1
            ),
            1 => assert_eq!(
                results,
                [Depacketized::Pending, Depacketized::KeyframeNeeded]
            ),
            _ => assert!(
                results.iter().all(|r| *r == Depacketized::Pending),
                "AU {} {results:?}",
                i + 1
            ),
        }
        all.extend(results);
    }
    assert_eq!(count_keyframe_requests(&all), 1);
    assert_eq!(frames(&all).len(), 3);
}

#[test]
fn h264_loss_rules_fragments_gaps_and_unsupported_packets() {
    let stream = h264_stream(&[true, false, false, true]);
    let ts = |i: usize| 3000 * i as u32;

    // An FU-A without its start, with no sequence gap (the S bit cleared in transit).
    let mut d = H264Depacketizer::new();
    let mut seq = 0;
    let mut all = Vec::new();
    for (i, (_, payloads)) in stream.iter().enumerate() {
        let mut payloads = payloads.clone();
        if i == 1 {
            payloads[0].data[1] &= !0x80;
        }
        let results = push_all(&mut d, &payloads, &mut seq, ts(i), &[]);
        if i == 1 {
            assert_eq!(results[0], Depacketized::KeyframeNeeded);
        }
        all.extend(results);
    }
    assert_eq!(count_keyframe_requests(&all), 1);
    let got: Vec<u32> = frames(&all).iter().map(|f| f.timestamp).collect();
    assert_eq!(got, [ts(0), ts(3)]);

    // An FU whose end never came: the marker on a middle fragment, then the next AU.
    let mut d = H264Depacketizer::new();
    let mut seq = 0;
    push_all(&mut d, &stream[0].1, &mut seq, ts(0), &[]);
    let mut cut = stream[1].1[..2].to_vec();
    cut[1].marker = true;
    let results = push_all(&mut d, &cut, &mut seq, ts(1), &[]);
    assert_eq!(
        results,
        [Depacketized::Pending, Depacketized::KeyframeNeeded]
    );
    // Also when a new timestamp shows the fragment was never finished.
    let mut d = H264Depacketizer::new();
    let mut seq = 0;
    push_all(&mut d, &stream[0].1, &mut seq, ts(0), &[]);
    push_all(&mut d, &stream[1].1[..2], &mut seq, ts(1), &[]);
    let results = push_all(&mut d, &stream[2].1, &mut seq, ts(2), &[]);
    assert_eq!(
        results,
        [
            Depacketized::KeyframeNeeded,
            Depacketized::Pending,
            Depacketized::Pending
        ]
    );
    let results = push_all(&mut d, &stream[3].1, &mut seq, ts(3), &[]);
    assert_eq!(
        results.last(),
        Some(&frame(stream[3].0.clone(), ts(3), true))
    );

    // After a gap, a packet that does not open an access unit is not taken for one: the
    // first slice of a two-slice IDR picture is lost, the second is not passed on as whole.
    let first = idr_slice(500, 5);
    let mut second = idr_slice(500, 6);
    second[1] = 0x3f; // first_mb_in_slice = 1: ue(v) 010
    let mut d = H264Depacketizer::new();
    assert!(matches!(d.push(0, 0, true, &first), Depacketized::Frame(_)));
    assert_eq!(d.push(2, 3000, true, &second), Depacketized::KeyframeNeeded);
    assert!(d.awaiting_keyframe());
    assert_eq!(d.push(3, 6000, false, &first), Depacketized::Pending);
    assert_eq!(
        d.push(4, 6000, true, &second),
        frame(annex_b(&[&first, &second]), 6000, true)
    );

    // Interleaved-mode packet types are refused, and so are reserved ones and broken
    // headers; the next packet then shows the gap.
    let mut d = H264Depacketizer::new();
    let mut seq = 0;
    push_all(&mut d, &stream[0].1, &mut seq, ts(0), &[]);
    for t in [25u8, 26, 27, 29, 0, 30, 31] {
        assert_eq!(
            d.push(seq, ts(1), false, &[0x60 | t, 0, 1, 2, 3]),
            Depacketized::Rejected(PayloadError::UnsupportedPacketType(t)),
            "type {t}"
        );
    }
    let broken: [(&[u8], PayloadError); 6] = [
        (&[0x78], PayloadError::Truncated { what: "STAP-A" }),
        (
            &[0x78, 0x00],
            PayloadError::Truncated {
                what: "STAP-A NAL unit size",
            },
        ),
        (
            &[0x78, 0x00, 0x03, 0x67, 0x42],
            PayloadError::Truncated {
                what: "STAP-A NAL unit",
            },
        ),
        (
            &[0x78, 0x00, 0x00],
            PayloadError::Malformed("empty NAL unit in STAP-A"),
        ),
        (
            &[0x7c],
            PayloadError::Truncated {
                what: "FU-A header",
            },
        ),
        (
            &[0x7c, 0xc5, 1],
            PayloadError::Malformed("FU-A with both start and end bits"),
        ),
    ];
    for (bytes, e) in broken {
        assert_eq!(
            d.push(seq, ts(1), false, bytes),
            Depacketized::Rejected(e),
            "{bytes:02x?}"
        );
    }
    assert_eq!(
        d.push(seq, ts(1), false, &[0x7c, 0x98, 1]),
        Depacketized::Rejected(PayloadError::Malformed("FU-A NAL unit type"))
    );
    let results = push_all(&mut d, &stream[1].1, &mut seq, ts(1), &[0]);
    assert_eq!(results[0], Depacketized::KeyframeNeeded);
}

#[test]
fn h264_access_unit_ends_on_marker_or_timestamp_change() {
    let idr = idr_slice(100, 1);
    let p1 = p_slice(100, 2);
    let p2 = p_slice(100, 3);
    let mut d = H264Depacketizer::new();
    // No marker on the IDR: the next timestamp ends it.
    assert_eq!(d.push(0, 0, false, &idr), Depacketized::Pending);
    assert_eq!(
        d.push(1, 3000, false, &p1),
        frame(annex_b(&[&idr]), 0, true)
    );
    // p1 ended by p2's timestamp, and p2 whole by its marker: two from one packet, the
    // second held for the next push.
    assert_eq!(
        d.push(2, 6000, true, &p2),
        frame(annex_b(&[&p1]), 3000, false)
    );
    assert_eq!(
        d.push(3, 9000, false, &[]),
        frame(annex_b(&[&p2]), 6000, false)
    );
    assert_eq!(
        d.push(4, 9000, true, &p1),
        frame(annex_b(&[&p1]), 9000, false)
    );
    // Duplicates and late packets are ignored.
    assert_eq!(d.push(4, 9000, true, &p1), Depacketized::Pending);
    assert_eq!(d.push(1, 3000, true, &p1), Depacketized::Pending);
    assert!(!d.awaiting_keyframe());
}

// ---- 7. Random bytes ------------------------------------------------------------------------

#[test]
fn random_payloads_never_panic() {
    let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
    let mut vp8 = Vp8Depacketizer::new();
    let mut h264 = H264Depacketizer::new();
    let (mut seq, mut ts) = (0u16, 0u32);
    // Per depacketizer: pending, frame, keyframe needed, rejected.
    let (mut seen_vp8, mut seen_h264) = ([0usize; 4], [0usize; 4]);
    let tally = |r: &Depacketized, seen: &mut [usize; 4]| match r {
        Depacketized::Pending => seen[0] += 1,
        Depacketized::Frame(f) => {
            assert!(!f.data.is_empty());
            seen[1] += 1
        }
        Depacketized::KeyframeNeeded => seen[2] += 1,
        Depacketized::Rejected(_) => seen[3] += 1,
    };
    for i in 0..10_000 {
        let len = match rng.below(4) {
            0 => rng.below(4),
            1 => rng.below(16),
            _ => rng.below(200),
        } as usize;
        let mut payload: Vec<u8> = (0..len).map(|_| rng.byte()).collect();
        // Bias the first bytes towards the interesting headers so the parsers go deep.
        if let Some(first) = payload.first_mut() {
            if i % 2 == 0 {
                *first = (*first & 0xe0) | [1, 5, 7, 24, 28, 28, 25, 29][rng.below(8) as usize];
            }
        }
        // Mostly in order, sometimes a jump or a step back.
        seq = match rng.below(10) {
            0 => rng.next() as u16,
            1 => seq.wrapping_sub(rng.below(3) as u16),
            _ => seq.wrapping_add(1),
        };
        if rng.below(3) == 0 {
            ts = ts.wrapping_add(3000);
        }
        let marker = rng.below(3) == 0;
        tally(&vp8.push(seq, ts, marker, &payload), &mut seen_vp8);
        let r = h264.push(seq, ts, marker, &payload);
        if let Depacketized::Frame(f) = &r {
            assert_eq!(f.data[..4], [0, 0, 0, 1]);
        }
        tally(&r, &mut seen_h264);
        // The Annex B side and the packetizers take arbitrary bytes too, with start codes
        // sprinkled in so that there are NAL units to cut.
        let mut annex_b = Vec::new();
        for &b in &payload {
            if rng.below(20) == 0 {
                annex_b.extend_from_slice(&[0, 0, 1]);
            }
            annex_b.push(b);
        }
        let _ = h264::nal_units(&annex_b).count();
        let mut out = Vec::new();
        let max_payload = len % 40;
        for mode in [
            PacketizationMode::NonInterleaved,
            PacketizationMode::SingleNal,
        ] {
            let _ = H264Packetizer::new(mode, max_payload).packetize(&annex_b, &mut out);
        }
        let _ = Vp8Packetizer::new(max_payload, 0).packetize(&payload, &mut out);
        assert!(out.iter().all(|p| p.data.len() <= max_payload));
    }
    // Every outcome came up on both sides, so the parsers went deep.
    println!("vp8 {seen_vp8:?}, h264 {seen_h264:?}");
    assert!(seen_vp8.iter().all(|&n| n > 0), "{seen_vp8:?}");
    assert!(seen_h264.iter().all(|&n| n > 0), "{seen_h264:?}");
}

#[test]
fn random_frames_round_trip() {
    let mut rng = XorShift(0x0123_4567_89ab_cdef);
    let mut vp8 = Vp8Depacketizer::new();
    let mut h264 = H264Depacketizer::new();
    let (mut vp8_seq, mut h264_seq) = (0, 0);
    for i in 0..300u32 {
        let max_payload = 5 + rng.below(1500) as usize;
        let timestamp = i.wrapping_mul(3000);

        // VP8: any size, any packet size; a key frame first.
        let mut sent = vp8_frame(10 + rng.below(20_000) as usize, i == 0, rng.next());
        sent.truncate(1 + rng.below(sent.len() as u64) as usize);
        let mut payloads = Vec::new();
        Vp8Packetizer::new(max_payload, rng.next() as u16)
            .packetize(&sent, &mut payloads)
            .unwrap();
        assert!(payloads.iter().all(|p| p.data.len() <= max_payload));
        let results = push_all(&mut vp8, &payloads, &mut vp8_seq, timestamp, &[]);
        assert_eq!(results.last(), Some(&frame(sent, timestamp, i == 0)));

        // H.264: up to six NAL units of assorted types and sizes; SPS, PPS, IDR first.
        let nals: Vec<Vec<u8>> = if i == 0 {
            vec![SPS.to_vec(), PPS.to_vec(), idr_slice(3000, 1)]
        } else {
            (0..1 + rng.below(6))
                .map(|_| {
                    let header = [0x06, 0x09, 0x41, 0x61, 0x01, 0x65][rng.below(6) as usize];
                    nal(header, 1 + rng.below(3000) as usize, rng.next())
                })
                .collect()
        };
        let nals: Vec<&[u8]> = nals.iter().map(Vec::as_slice).collect();
        let mut payloads = Vec::new();
        H264Packetizer::new(PacketizationMode::NonInterleaved, max_payload)
            .packetize(&annex_b(&nals), &mut payloads)
            .unwrap();
        assert!(payloads.iter().all(|p| p.data.len() <= max_payload));
        let idr = nals.iter().any(|n| h264::nal_type(n) == 5);
        let results = push_all(&mut h264, &payloads, &mut h264_seq, timestamp, &[]);
        assert_eq!(results.last(), Some(&frame(annex_b(&nals), timestamp, idr)));
        assert!(results
            .iter()
            .rev()
            .skip(1)
            .all(|r| *r == Depacketized::Pending));
    }
}

// ---- 8. tshark ------------------------------------------------------------------------------

const H264_PT: u8 = 96;
const VP8_PT: u8 = 97;

/// A 12-byte RTP header (RFC 3550 §5.1: V=2, no padding, extension or CSRC) and the payload.
fn rtp(pt: u8, seq: u16, timestamp: u32, marker: bool, payload: &[u8]) -> Vec<u8> {
    let mut packet = vec![0x80, u8::from(marker) << 7 | pt];
    packet.extend_from_slice(&seq.to_be_bytes());
    packet.extend_from_slice(&timestamp.to_be_bytes());
    packet.extend_from_slice(&0x1234_5678u32.to_be_bytes());
    packet.extend_from_slice(payload);
    packet
}

/// Writes RTP packets (from 127.0.0.1:5004 to 127.0.0.1:5006) to a pcap at `path`.
fn write_capture(path: &Path, packets: &[Vec<u8>]) {
    let src: SocketAddr = "127.0.0.1:5004".parse().unwrap();
    let dst: SocketAddr = "127.0.0.1:5006".parse().unwrap();
    let mut pcap = PcapWriter::new(Vec::new(), LinkType::ETHERNET).unwrap();
    for (i, packet) in packets.iter().enumerate() {
        let ip = build_udp(src, dst, packet).unwrap();
        let frame = wrap_ethernet(&ip, MacAddr::LOCAL_A, MacAddr::LOCAL_B).unwrap();
        let t = Duration::from_secs(1_700_000_000) + Duration::from_millis(i as u64);
        pcap.write_packet(t, &frame).unwrap();
    }
    std::fs::write(path, pcap.into_inner()).unwrap();
}

/// Runs tshark on `path`, RTP on UDP port 5006 and its payload type `decode_as`
/// (`rtp.pt==96,h264`), printing `fields` one line per packet, `|` between fields and `,`
/// between repeats. Fails the test, with a way forward, if tshark cannot run: this check
/// must not pass by being skipped.
fn tshark(path: &Path, decode_as: &str, fields: &[&str]) -> Vec<String> {
    let mut args = vec![
        "-r",
        path.to_str().unwrap(),
        "-d",
        "udp.port==5006,rtp",
        "-d",
        decode_as,
    ];
    args.extend(["-T", "fields", "-E", "separator=|"]);
    args.extend(fields.iter().flat_map(|f| ["-e", f]));
    println!("tshark {}", args.join(" "));
    let output = Command::new("tshark")
        .args(&args)
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "tshark could not run ({e}): this test checks our payloads against Wireshark's \
             dissectors; install it (Debian: apt-get install tshark) and run again"
            )
        });
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "tshark {args:?} failed: {}\n{stdout}",
        String::from_utf8_lossy(&output.stderr)
    );
    println!("{stdout}");
    stdout.lines().map(str::to_owned).collect()
}

#[test]
fn tshark_dissects_our_packets() {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"));

    // H.264: a keyframe (STAP-A with SPS and PPS, FU-As with the IDR), then a small delta
    // access unit (a single NAL unit packet).
    let packetizer = H264Packetizer::new(PacketizationMode::NonInterleaved, 1200);
    let mut payloads = Vec::new();
    packetizer
        .packetize(&annex_b(&[&SPS, &PPS, &idr_slice(4000, 1)]), &mut payloads)
        .unwrap();
    let first_au = payloads.len();
    packetizer
        .packetize(&annex_b(&[&p_slice(300, 2)]), &mut payloads)
        .unwrap();
    let packets: Vec<Vec<u8>> = payloads
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let ts = if i < first_au { 0 } else { 3000 };
            rtp(H264_PT, 100 + i as u16, ts, p.marker, &p.data)
        })
        .collect();
    let h264_pcap = dir.join("video_payload_h264.pcap");
    write_capture(&h264_pcap, &packets);
    let lines = tshark(
        &h264_pcap,
        "rtp.pt==96,h264",
        &[
            "rtp.seq",
            "rtp.marker",
            "h264.nal_unit_hdr",
            "h264.start.bit",
            "h264.end.bit",
            "h264.nal_nri",
            "h264.nalu_size",
            "h264.nal_unit_type",
            "h264.profile_idc",
            "h264.pic_width_in_mbs_minus1",
            "h264.pic_height_in_map_units_minus1",
            "_ws.malformed",
        ],
    );
    // tshark lists the STAP-A's header and then each unit's in h264.nal_unit_hdr, with the
    // NRI of each; an FU-A's fragmented type is h264.nal_unit_type.
    let expected = [
        // seq|M|NAL header types|S|E|NRIs|STAP-A sizes|FU type|SPS profile, w, h|malformed
        "100|0|24,7,8|||3,3,3|9,4||66|39|29|",
        "101|0|28|1|0|3||5||||",
        "102|0|28|0|0|3||5||||",
        "103|0|28|0|0|3||5||||",
        "104|1|28|0|1|3||5||||",
        "105|1|1|||2||||||",
    ];
    assert_eq!(lines, expected);

    // VP8: a key frame over three packets, then two one-packet delta frames, PictureIDs
    // across the 15-bit wrap.
    let mut packetizer = Vp8Packetizer::new(1200, 0x7fff);
    let mut packets = Vec::new();
    let mut seq = 200;
    for (i, (len, key)) in [(3000, true), (500, false), (400, false)]
        .into_iter()
        .enumerate()
    {
        let mut payloads = Vec::new();
        packetizer
            .packetize(&vp8_frame(len, key, i as u64), &mut payloads)
            .unwrap();
        for p in payloads {
            packets.push(rtp(VP8_PT, seq, 3000 * i as u32, p.marker, &p.data));
            seq += 1;
        }
    }
    let vp8_pcap = dir.join("video_payload_vp8.pcap");
    write_capture(&vp8_pcap, &packets);
    let lines = tshark(
        &vp8_pcap,
        "rtp.pt==97,vp8",
        &[
            "rtp.seq",
            "rtp.marker",
            "vp8.pld.x",
            "vp8.pld.s",
            "vp8.pld.partid",
            "vp8.pld.i",
            "vp8.pld.pictureid",
            "vp8.hdr.frametype",
            "vp8.keyframe.width",
            "vp8.keyframe.height",
            "_ws.malformed",
        ],
    );
    // Frame type 0 is a key frame (tshark reads the P bit); its size comes from the key frame
    // header after the start code.
    let expected = [
        // seq|M|X|S|PID|I|PictureID|frame type|width|height|malformed
        "200|0|1|1|0|1|32767|0|640|480|",
        "201|0|1|0|0|1|32767||||",
        "202|1|1|0|0|1|32767||||",
        "203|1|1|1|0|1|0|1|||",
        "204|1|1|1|0|1|1|1|||",
    ];
    assert_eq!(lines, expected);
}
