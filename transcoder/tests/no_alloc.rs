//! The hot path allocates nothing: after construction and warm-up, pushing packets into and
//! polling frames out of both pipelines makes no heap allocation. A counting global
//! allocator (estuary-alloc-count, per thread) proves it. libopus itself uses no heap after
//! creation.

mod common;

use std::time::{Duration, Instant};

use common::*;
use estuary_transcoder::{
    G711ToOpus, G711ToOpusConfig, Law, OpusConfig, OpusEncoder, OpusToG711, OpusToG711Config,
};

#[global_allocator]
static GLOBAL: estuary_alloc_count::Counting = estuary_alloc_count::Counting;

#[test]
fn push_and_poll_do_not_allocate() {
    // Inputs prepared up front (this allocates, before counting starts).
    let pcm = speech_like(8000, 8000 * 4, 10000.0);
    let g711: Vec<Vec<u8>> = pcm
        .chunks(160)
        .map(|c| {
            let mut b = vec![0u8; 160];
            Law::A.encode(c, &mut b);
            b
        })
        .collect();
    let mut browser = OpusEncoder::new(48000, &OpusConfig::default()).unwrap();
    let pcm48 = speech_like(48000, 48000 * 4, 10000.0);
    let opus: Vec<Vec<u8>> = pcm48
        .chunks(960)
        .map(|c| {
            let mut b = vec![0u8; 1500];
            let n = browser.encode(c, &mut b).unwrap();
            b.truncate(n);
            b
        })
        .collect();

    let mut up = G711ToOpus::new(G711ToOpusConfig::default()).unwrap();
    let mut down = OpusToG711::new(OpusToG711Config::default()).unwrap();
    let t0 = Instant::now();
    let mut out = [0u8; 1500];
    let mut frames = 0;
    let mut step = |k: usize| {
        let now = t0 + Duration::from_millis(20 * k as u64);
        // Some loss and reordering so the concealment paths run too.
        if k % 17 != 3 {
            up.push(now, k as u16, 160 * k as u32, &g711[k]);
        }
        if k % 13 != 5 {
            down.push(now, k as u16, 960 * k as u32, &opus[k]);
        }
        while up.poll(now, &mut out).is_some() {
            frames += 1;
        }
        while down.poll(now, &mut out).is_some() {
            frames += 1;
        }
    };
    (0..50).for_each(&mut step);
    // Warmed up: every later call must be allocation-free.
    let allocs = estuary_alloc_count::count(|| (50..200).for_each(&mut step));
    assert!(frames > 350, "{frames}");
    assert!(up.stats().concealed > 0 && down.stats().concealed + down.stats().fec_recovered > 0);
    assert_eq!(allocs, 0, "{allocs} allocations on the hot path");
}
