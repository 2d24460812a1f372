//! Shared test harness: signals, a virtual-clock driver for the pipelines, and the
//! measurements (alignment by cross-correlation, normalised correlation, SNR, Goertzel).
#![allow(dead_code)]

use std::f64::consts::PI;
use std::time::{Duration, Instant};

use estuary_transcoder::{G711ToOpus, Law, OpusEncoder, OpusToG711};

// ---- Signals --------------------------------------------------------------------------------

/// A sine at `freq` Hz.
pub fn tone(freq: f64, rate: u32, n: usize, amp: f64) -> Vec<i16> {
    tone_delayed(freq, rate, n, amp, 0.0)
}

/// [`tone`] delayed by `delay` seconds (sample i is the tone at i/rate − delay).
pub fn tone_delayed(freq: f64, rate: u32, n: usize, amp: f64, delay: f64) -> Vec<i16> {
    (0..n)
        .map(|i| {
            let t = i as f64 / f64::from(rate) - delay;
            (amp * (2.0 * PI * freq * t).sin()).round() as i16
        })
        .collect()
}

/// A speech-like voiced signal: f0 gliding 120–180 Hz (a 2 Hz intonation contour), 18
/// harmonics (up to 3.24 kHz, inside telephony's 300–3400 Hz and below 4 kHz at any rate)
/// shaped by two formant-like peaks near 500 Hz and 1500 Hz, amplitude-modulated at a 4 Hz
/// syllable rate. The same continuous signal at any `rate`.
pub fn speech_like(rate: u32, n: usize, amp: f64) -> Vec<i16> {
    speech_like_delayed(rate, n, amp, 0.0)
}

/// [`speech_like`] delayed by `delay` seconds.
pub fn speech_like_delayed(rate: u32, n: usize, amp: f64, delay: f64) -> Vec<i16> {
    let fs = f64::from(rate);
    (0..n)
        .map(|i| {
            let t = i as f64 / fs - delay;
            // Closed form of the phase integral of f0(t) = 150 + 30·sin(2π·2t), so that
            // every rate samples the very same waveform.
            let phase =
                2.0 * PI * (150.0 * t + 30.0 * (1.0 - (2.0 * PI * 2.0 * t).cos()) / (4.0 * PI));
            let f0 = 150.0 + 30.0 * (2.0 * PI * 2.0 * t).sin();
            let mut v = 0.0;
            for h in 1..=18 {
                let f = f0 * h as f64;
                let formant = 1.0 / (1.0 + ((f - 500.0) / 300.0).powi(2))
                    + 0.6 / (1.0 + ((f - 1500.0) / 400.0).powi(2))
                    + 0.05;
                v += formant * (phase * h as f64).sin();
            }
            let syllable = 0.55 - 0.45 * (2.0 * PI * 4.0 * t).cos();
            (amp * syllable * v / 2.5).round().clamp(-32768.0, 32767.0) as i16
        })
        .collect()
}

/// A linear sweep from `f0` to `f1` Hz.
pub fn sweep(f0: f64, f1: f64, rate: u32, n: usize, amp: f64) -> Vec<i16> {
    let dur = n as f64 / f64::from(rate);
    (0..n)
        .map(|i| {
            let t = i as f64 / f64::from(rate);
            (amp * (2.0 * PI * (f0 * t + (f1 - f0) * t * t / (2.0 * dur))).sin()).round() as i16
        })
        .collect()
}

/// Deterministic xorshift RNG for seeded loss and jitter.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// True with probability `p`.
    pub fn chance(&mut self, p: f64) -> bool {
        (self.next() % 1_000_000) as f64 / 1_000_000.0 < p
    }
}

// ---- Driving --------------------------------------------------------------------------------

/// An RTP packet on the virtual wire.
#[derive(Clone, Debug)]
pub struct Packet {
    /// Arrival time after the test's t0.
    pub at: Duration,
    pub seq: u16,
    pub timestamp: u32,
    pub marker: bool,
    pub payload: Vec<u8>,
}

/// Either pipeline, for the driver.
pub trait Leg {
    fn push(&mut self, now: Instant, seq: u16, ts: u32, payload: &[u8]);
    fn poll(&mut self, now: Instant, out: &mut [u8]) -> Option<(u32, usize, bool)>;
    fn poll_timeout(&self) -> Option<Instant>;
}

impl Leg for OpusToG711 {
    fn push(&mut self, now: Instant, seq: u16, ts: u32, payload: &[u8]) {
        OpusToG711::push(self, now, seq, ts, payload)
    }
    fn poll(&mut self, now: Instant, out: &mut [u8]) -> Option<(u32, usize, bool)> {
        OpusToG711::poll(self, now, out).map(|f| (f.timestamp, f.len, f.marker))
    }
    fn poll_timeout(&self) -> Option<Instant> {
        OpusToG711::poll_timeout(self)
    }
}

impl Leg for G711ToOpus {
    fn push(&mut self, now: Instant, seq: u16, ts: u32, payload: &[u8]) {
        G711ToOpus::push(self, now, seq, ts, payload)
    }
    fn poll(&mut self, now: Instant, out: &mut [u8]) -> Option<(u32, usize, bool)> {
        G711ToOpus::poll(self, now, out).map(|f| (f.timestamp, f.len, f.marker))
    }
    fn poll_timeout(&self) -> Option<Instant> {
        G711ToOpus::poll_timeout(self)
    }
}

/// Runs `leg` on a virtual clock from `t0`: packets arrive at their times (sorted here),
/// output is polled whenever due, until `end`. Returns the output packets with the time they
/// were emitted (sequence numbers assigned 0, 1, ...).
pub fn drive(leg: &mut dyn Leg, t0: Instant, input: &[Packet], end: Duration) -> Vec<Packet> {
    let mut input = input.to_vec();
    input.sort_by_key(|p| p.at);
    let mut out = Vec::new();
    let mut buf = [0u8; 1500];
    let mut i = 0;
    let mut seq = 0u16;
    loop {
        let next_in = input.get(i).map(|p| t0 + p.at);
        let now = match (next_in, leg.poll_timeout()) {
            (Some(a), Some(b)) => a.min(b),
            (Some(a), None) => a,
            (None, Some(b)) => b,
            (None, None) => break,
        };
        if now > t0 + end {
            break;
        }
        while let Some(p) = input.get(i) {
            if t0 + p.at > now {
                break;
            }
            leg.push(now, p.seq, p.timestamp, &p.payload);
            i += 1;
        }
        while let Some((ts, len, marker)) = leg.poll(now, &mut buf) {
            out.push(Packet {
                at: now - t0,
                seq,
                timestamp: ts,
                marker,
                payload: buf[..len].to_vec(),
            });
            seq = seq.wrapping_add(1);
        }
    }
    out
}

/// Packetises `pcm` into `frame`-sample packets `ptime` apart, starting at `start`.
pub fn packetize(
    pcm: &[i16],
    frame: usize,
    ptime: Duration,
    encode: &mut dyn FnMut(&[i16]) -> Vec<u8>,
    ticks_per_frame: u32,
) -> Vec<Packet> {
    pcm.chunks_exact(frame)
        .enumerate()
        .map(|(k, chunk)| Packet {
            at: ptime * k as u32,
            seq: 1000u16.wrapping_add(k as u16),
            timestamp: 77_777u32.wrapping_add(k as u32 * ticks_per_frame),
            marker: k == 0,
            payload: encode(chunk),
        })
        .collect()
}

/// 48 kHz `pcm` as a browser sends it: 20 ms Opus packets from `encoder`, 960 ticks apart.
pub fn opus_packets(pcm: &[i16], encoder: &mut OpusEncoder) -> Vec<Packet> {
    packetize(
        pcm,
        960,
        Duration::from_millis(20),
        &mut |c| {
            let mut b = vec![0u8; 1500];
            let n = encoder.encode(c, &mut b).unwrap();
            b.truncate(n);
            b
        },
        960,
    )
}

/// 8 kHz `pcm` as a core sends it: A-law packets of `frame` samples, as many ticks apart.
pub fn alaw_packets(pcm: &[i16], frame: usize) -> Vec<Packet> {
    packetize(
        pcm,
        frame,
        Duration::from_micros(frame as u64 * 125),
        &mut |c| {
            let mut b = vec![0u8; c.len()];
            Law::A.encode(c, &mut b);
            b
        },
        frame as u32,
    )
}

// ---- Measurements ---------------------------------------------------------------------------

/// Normalised cross-correlation of two equal-length slices.
pub fn ncc(a: &[i16], b: &[i16]) -> f64 {
    let (mut ab, mut aa, mut bb) = (0.0, 0.0, 0.0);
    for (&x, &y) in a.iter().zip(b) {
        let (x, y) = (f64::from(x), f64::from(y));
        ab += x * y;
        aa += x * x;
        bb += y * y;
    }
    if aa == 0.0 || bb == 0.0 {
        return 0.0;
    }
    ab / (aa * bb).sqrt()
}

/// The delay (in samples) of `output` relative to `reference` in 0..max_lag that maximises
/// the normalised correlation of `reference[start..start+len]` with the delayed output.
pub fn align(reference: &[i16], output: &[i16], start: usize, len: usize, max_lag: usize) -> usize {
    let r = &reference[start..start + len];
    (0..max_lag)
        .filter(|lag| start + lag + len <= output.len())
        .max_by(|&a, &b| {
            let ca = ncc(r, &output[start + a..start + a + len]);
            let cb = ncc(r, &output[start + b..start + b + len]);
            ca.total_cmp(&cb)
        })
        .unwrap_or(0)
}

/// SNR in dB of `output` against `reference`, after scaling `output` by the least-squares
/// gain (codecs may change the level slightly; that is not noise).
pub fn snr_db(reference: &[i16], output: &[i16]) -> f64 {
    let (mut ro, mut oo, mut rr) = (0.0, 0.0, 0.0);
    for (&r, &o) in reference.iter().zip(output) {
        let (r, o) = (f64::from(r), f64::from(o));
        ro += r * o;
        oo += o * o;
        rr += r * r;
    }
    let g = if oo > 0.0 { ro / oo } else { 0.0 };
    let err: f64 = reference
        .iter()
        .zip(output)
        .map(|(&r, &o)| (f64::from(r) - g * f64::from(o)).powi(2))
        .sum();
    10.0 * (rr / err.max(1e-9)).log10()
}

/// Power of `x` at `freq` Hz by the Goertzel algorithm, normalised per sample².
pub fn goertzel(x: &[i16], freq: f64, rate: u32) -> f64 {
    let w = 2.0 * PI * freq / f64::from(rate);
    let coeff = 2.0 * w.cos();
    let (mut s1, mut s2) = (0.0, 0.0);
    for &v in x {
        let s = f64::from(v) + coeff * s1 - s2;
        s2 = s1;
        s1 = s;
    }
    (s1 * s1 + s2 * s2 - coeff * s1 * s2) / (x.len() as f64).powi(2)
}

/// The frequency (on a `step` Hz grid from `lo` to `hi`) with the most power.
pub fn spectral_peak(x: &[i16], rate: u32, lo: f64, hi: f64, step: f64) -> f64 {
    let mut best = (lo, 0.0);
    let mut f = lo;
    while f <= hi {
        let p = goertzel(x, f, rate);
        if p > best.1 {
            best = (f, p);
        }
        f += step;
    }
    best.0
}

pub fn rms(x: &[i16]) -> f64 {
    (x.iter().map(|&s| f64::from(s).powi(2)).sum::<f64>() / x.len().max(1) as f64).sqrt()
}

// ---- Random bytes ---------------------------------------------------------------------------

/// xorshift64*: deterministic bytes without a dependency.
pub struct XorShift(pub u64);

impl XorShift {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    pub fn byte(&mut self) -> u8 {
        (self.next() >> 56) as u8
    }

    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.byte()).collect()
    }

    /// Bytes that never form a start code inside an H.264 NAL unit.
    pub fn nonzero_bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.byte().max(1)).collect()
    }
}
