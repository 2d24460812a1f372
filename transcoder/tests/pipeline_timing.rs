//! Timing behaviour of the pipelines: Opus DTX gaps are filled without timestamp jumps,
//! ptime adaptation in both directions, idling on a silent leg and resuming with the marker
//! bit and real-time timestamps, and reset().

mod common;

use std::time::{Duration, Instant};

use common::*;
use estuary_transcoder::{
    G711ToOpus, G711ToOpusConfig, Law, OpusConfig, OpusDecoder, OpusEncoder, OpusToG711,
    OpusToG711Config,
};

const PTIME: Duration = Duration::from_millis(20);


/// `b`'s 48 kHz timestamp is `a`'s plus the time between them (to the tick).
fn assert_real_time(a: &Packet, b: &Packet) {
    let dt = b.at - a.at;
    let ticks = b.timestamp.wrapping_sub(a.timestamp);
    let expect = (dt.as_nanos() * 48_000 / 1_000_000_000) as u32;
    assert!(ticks.abs_diff(expect) <= 1, "{ticks} ticks over {dt:?}");
    assert!(dt > Duration::from_millis(20));
}

fn continuous(out: &[Packet], ticks: u32, ptime: Duration) -> bool {
    out.windows(2)
        .all(|w| w[1].timestamp.wrapping_sub(w[0].timestamp) == ticks && w[1].at - w[0].at == ptime)
}

#[test]
fn opus_dtx_gaps_become_comfort_silence_not_timestamp_jumps() {
    // 1 s of speech, 2 s of digital silence, 1 s of speech, from a browser with DTX on. As
    // browsers do, DTX frames (1-2 bytes) are not sent except one every 400 ms.
    let config = OpusConfig {
        dtx: true,
        ..OpusConfig::default()
    };
    let mut browser = OpusEncoder::new(48000, &config).unwrap();
    let mut pcm48 = speech_like(48000, 48000 * 4, 10000.0);
    pcm48[48000..48000 * 3].fill(0);
    let mut packets = Vec::new();
    let mut seq = 500u16;
    let mut since_sent = 0;
    let mut buf = [0u8; 1500];
    for (k, frame) in pcm48.chunks(960).enumerate() {
        let n = browser.encode(frame, &mut buf).unwrap();
        since_sent += 1;
        if n <= 2 && since_sent < 20 {
            continue;
        }
        since_sent = 0;
        packets.push(Packet {
            at: PTIME * k as u32,
            seq,
            timestamp: 960 * k as u32,
            marker: false,
            payload: buf[..n].to_vec(),
        });
        seq = seq.wrapping_add(1);
    }
    let sent = packets.len();
    eprintln!("{sent} packets sent for 200 frames");
    assert!(sent < 160, "DTX was on");
    let t0 = Instant::now();
    let mut leg = OpusToG711::new(OpusToG711Config {
        law: Law::Mu,
        ..OpusToG711Config::default()
    })
    .unwrap();
    let out = drive(&mut leg, t0, &packets, Duration::from_millis(4000));
    let stats = leg.stats();
    eprintln!("{stats:?}");
    // One frame per 20 ms from the first due time to the end, no jump, no marker after the
    // first: the silence was filled.
    assert!(out.len() >= 195, "{}", out.len());
    assert!(continuous(&out, 160, PTIME));
    assert!(out[1..].iter().all(|p| !p.marker));
    assert!(stats.underruns > 50);
    assert_eq!(stats.concealed, 0, "DTX is not loss");
    // The silence is quiet: well under the speech level.
    let decode = |p: &Packet| {
        let mut s = vec![0i16; p.payload.len()];
        Law::Mu.decode(&p.payload, &mut s);
        rms(&s)
    };
    let speech: f64 = out[10..40].iter().map(decode).sum::<f64>() / 30.0;
    let silence: f64 = out[80..130].iter().map(decode).sum::<f64>() / 50.0;
    eprintln!("speech rms {speech:.0}, DTX silence rms {silence:.1}");
    assert!(silence < speech / 100.0);
}

#[test]
fn g711_at_30_and_10_ms_becomes_20_ms_opus() {
    for frame in [240usize, 80] {
        let pcm = speech_like(8000, 8000 * 3, 10000.0);
        let packets = alaw_packets(&pcm, frame);
        let t0 = Instant::now();
        let mut leg = G711ToOpus::new(G711ToOpusConfig::default()).unwrap();
        let out = drive(&mut leg, t0, &packets, Duration::from_millis(3500));
        let stats = leg.stats();
        eprintln!("{} ms in: {stats:?}", frame / 8);
        assert!(out.len() >= 150);
        assert!(continuous(&out, 960, PTIME));
        assert_eq!(stats.concealed, 0);
        let mut dec = OpusDecoder::new(8000).unwrap();
        let mut pcm_out = Vec::new();
        let mut buf = [0i16; 960];
        for p in &out {
            let n = dec.decode(&p.payload, &mut buf).unwrap();
            assert_eq!(n, 160);
            pcm_out.extend_from_slice(&buf[..n]);
        }
        let d = align(&pcm, &pcm_out, 6000, 12000, 2000);
        let c = ncc(&pcm[6000..18000], &pcm_out[6000 + d..18000 + d]);
        eprintln!("{} ms in: correlation {c:.3}", frame / 8);
        // Same bar as the 20 ms quality test: repacketising must not cost quality.
        assert!(c > 0.95, "{c}");
    }
}

#[test]
fn opus_20_ms_becomes_g711_at_30_ms() {
    let mut browser = OpusEncoder::new(48000, &OpusConfig::default()).unwrap();
    let pcm48 = tone(1000.0, 48000, 48000 * 2, 8000.0);
    let packets = opus_packets(&pcm48, &mut browser);
    let t0 = Instant::now();
    let ptime = Duration::from_millis(30);
    let mut leg = OpusToG711::new(OpusToG711Config {
        ptime,
        initial_timestamp: u32::MAX - 500,
        ..OpusToG711Config::default()
    })
    .unwrap();
    let out = drive(&mut leg, t0, &packets, Duration::from_millis(2000));
    assert!(out.len() >= 60);
    assert!(out.iter().all(|p| p.payload.len() == 240));
    // Continuous across the 2^32 timestamp wrap too.
    assert!(continuous(&out, 240, ptime));
    assert_eq!(out[0].timestamp, u32::MAX - 500);
}

#[test]
fn a_silent_leg_goes_idle_and_resumes_with_marker_and_real_time_timestamp() {
    let pcm = tone(500.0, 8000, 8000, 8000.0);
    let mut packets = alaw_packets(&pcm, 160);
    // The same second again after 3 s of nothing, new sequence numbers continuing.
    let second: Vec<Packet> = alaw_packets(&pcm, 160)
        .into_iter()
        .enumerate()
        .map(|(k, mut p)| {
            p.at += Duration::from_secs(4);
            p.seq = 1050 + k as u16;
            p.timestamp = p.timestamp.wrapping_add(4 * 8000);
            p
        })
        .collect();
    packets.extend(second);
    let t0 = Instant::now();
    let mut leg = G711ToOpus::new(G711ToOpusConfig::default()).unwrap();
    let out = drive(&mut leg, t0, &packets, Duration::from_secs(7));
    let resume = out
        .iter()
        .position(|p| p.at > Duration::from_secs(3))
        .unwrap();
    // Idle: 1 s of underrun after the first second of media, then nothing until the resume.
    assert!(
        out[resume - 1].at <= Duration::from_millis(2100),
        "{:?}",
        out[resume - 1].at
    );
    assert!(continuous(&out[..resume], 960, PTIME));
    assert!(out[resume].marker);
    assert!(continuous(&out[resume..], 960, PTIME));
    // The timestamp advanced by the real time between the two frames.
    assert_real_time(&out[resume - 1], &out[resume]);
}

#[test]
fn reset_restarts_with_marker() {
    let pcm = tone(500.0, 8000, 8000, 8000.0);
    let packets = alaw_packets(&pcm, 160);
    let t0 = Instant::now();
    let mut leg = G711ToOpus::new(G711ToOpusConfig::default()).unwrap();
    let first = drive(&mut leg, t0, &packets[..25], Duration::from_millis(500));
    assert!(first[0].marker);
    leg.reset();
    assert_eq!(leg.poll_timeout(), None);
    let rest = drive(&mut leg, t0, &packets[25..], Duration::from_millis(1500));
    assert!(rest[0].marker);
    assert!(continuous(&rest[..40], 960, PTIME));
    assert_real_time(first.last().unwrap(), &rest[0]);
}
