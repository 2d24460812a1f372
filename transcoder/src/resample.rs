//! Band-limited sample-rate conversion by a polyphase windowed-sinc FIR.
//!
//! # Design
//!
//! A rational conversion `L/M` (after dividing both rates by their gcd) is, in principle,
//! "insert L−1 zeros, low-pass, keep every M-th sample". The polyphase form computes only the
//! kept samples: output `k` sits at `k·M` on the upsampled grid, which is input sample
//! `⌊k·M/L⌋` and phase `k·M mod L`, and needs only the taps of that phase, `K = N/L` of them.
//!
//! The prototype low-pass is a Kaiser-windowed sinc designed at the upsampled rate. It passes
//! up to 85% of the lower Nyquist frequency (3.4 kHz for an 8 kHz side, the telephony band)
//! and reaches its full stopband attenuation at the lower Nyquist frequency itself (4 kHz),
//! so nothing that would fold back into the output band survives: this is what naive
//! decimation (dropping samples) gets wrong. Kaiser's formulas give the length for a 75 dB
//! stopband: 48 kHz ⇄ 8 kHz uses 348 taps, 58 per phase.
//!
//! # Streaming
//!
//! [`Resampler::process`] takes any number of input samples (up to the block size given at
//! construction) and returns how many outputs it wrote. The last `K−1` inputs stay in the
//! history buffer and the fractional position carries over, so feeding a signal in pieces
//! gives exactly the output of feeding it whole. All buffers are allocated by
//! [`Resampler::new`]; `process` does not allocate.

use std::f64::consts::PI;
use std::fmt;

/// Stopband attenuation the filter is designed for, in dB. The requirement is 50 dB for
/// anything that would alias into the output band; 75 leaves margin for the 16-bit rounding.
const STOPBAND_DB: f64 = 75.0;

/// Passband edge as a fraction of the lower Nyquist frequency.
const PASSBAND_FRACTION: f64 = 0.85;

/// Why a resampler could not be built.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResampleError {
    /// A rate was zero, or the reduced ratio has more than 64 phases (e.g. 44100 ⇄ 8000),
    /// which this telephony resampler does not need.
    UnsupportedRatio {
        /// Input rate in Hz.
        from: u32,
        /// Output rate in Hz.
        to: u32,
    },
}

impl fmt::Display for ResampleError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ResampleError::UnsupportedRatio { from, to } => {
                write!(f, "unsupported resampling ratio {from} Hz -> {to} Hz")
            }
        }
    }
}

impl std::error::Error for ResampleError {}

/// A streaming polyphase resampler for mono 16-bit PCM.
#[derive(Clone)]
pub struct Resampler {
    from: u32,
    to: u32,
    /// Upsampling factor L.
    up: usize,
    /// Downsampling factor M.
    down: usize,
    /// Taps per phase K.
    taps_per_phase: usize,
    /// Polyphase taps, phase-major: `phases[p*K + j]` = prototype tap `p + j*L`, scaled by L.
    phases: Vec<f32>,
    /// `K−1` samples of history followed by up to `max_block` new samples.
    buf: Vec<f32>,
    /// Valid samples in `buf`.
    filled: usize,
    /// Position of the next output on the upsampled grid, relative to `buf[0]`.
    pos: usize,
    max_block: usize,
}

impl fmt::Debug for Resampler {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Resampler")
            .field("from", &self.from)
            .field("to", &self.to)
            .field("taps_per_phase", &self.taps_per_phase)
            .finish()
    }
}

impl Resampler {
    /// Builds a converter from `from` Hz to `to` Hz that accepts up to `max_block` input
    /// samples per [`Self::process`] call.
    pub fn new(from: u32, to: u32, max_block: usize) -> Result<Self, ResampleError> {
        if from == 0 || to == 0 {
            return Err(ResampleError::UnsupportedRatio { from, to });
        }
        let g = gcd(from, to);
        let (up, down) = ((to / g) as usize, (from / g) as usize);
        if up > 64 || down > 64 {
            return Err(ResampleError::UnsupportedRatio { from, to });
        }
        let upsampled = f64::from(from) * up as f64;
        let nyquist = f64::from(from.min(to)) / 2.0;
        let stop = nyquist / upsampled;
        let pass = PASSBAND_FRACTION * nyquist / upsampled;
        // Kaiser (1974): length and β for the wanted attenuation over the transition width.
        let transition = 2.0 * PI * (stop - pass);
        let min_len = ((STOPBAND_DB - 8.0) / (2.285 * transition)).ceil() as usize + 1;
        let taps_per_phase = min_len.div_ceil(up).max(1);
        let len = taps_per_phase * up;
        let beta = 0.1102 * (STOPBAND_DB - 8.7);
        // Cut off midway through the transition band: the windowed sinc is 6 dB down there
        // and reaches the full attenuation at `stop`.
        let cutoff = (pass + stop) / 2.0;
        let centre = (len - 1) as f64 / 2.0;
        let i0_beta = bessel_i0(beta);
        let mut proto = vec![0f64; len];
        for (n, tap) in proto.iter_mut().enumerate() {
            let x = n as f64 - centre;
            let sinc = if x == 0.0 {
                2.0 * cutoff
            } else {
                (2.0 * PI * cutoff * x).sin() / (PI * x)
            };
            let r = x / centre.max(1.0);
            let window = bessel_i0(beta * (1.0 - r * r).max(0.0).sqrt()) / i0_beta;
            *tap = sinc * window;
        }
        // Unity DC gain at the output: each phase of an upsampler sees 1/L of the taps.
        let dc: f64 = proto.iter().sum();
        let scale = up as f64 / dc;
        let mut phases = vec![0f32; len];
        for p in 0..up {
            for j in 0..taps_per_phase {
                phases[p * taps_per_phase + j] = (proto[p + j * up] * scale) as f32;
            }
        }
        let history = taps_per_phase - 1;
        Ok(Resampler {
            from,
            to,
            up,
            down,
            taps_per_phase,
            phases,
            buf: vec![0.0; history + max_block],
            filled: history,
            pos: history * up,
            max_block,
        })
    }

    /// Input rate in Hz.
    pub fn from_rate(&self) -> u32 {
        self.from
    }

    /// Output rate in Hz.
    pub fn to_rate(&self) -> u32 {
        self.to
    }

    /// The filter's group delay in output samples (rounded down): an impulse at input time 0
    /// comes out centred this many output samples later.
    pub fn delay(&self) -> usize {
        (self.taps_per_phase * self.up - 1) / 2 / self.down
    }

    /// The most outputs one call with `input_len` inputs can produce: size `output` for it.
    pub fn max_output(&self, input_len: usize) -> usize {
        (input_len * self.up).div_ceil(self.down) + 1
    }

    /// Converts `input` (at most `max_block` samples; any extra is ignored) into `output`;
    /// returns the number of samples written. `output` must hold
    /// [`Self::max_output`]`(input.len())` samples: if it is shorter the call converts nothing
    /// and returns 0, so a sizing bug shows up as silence in tests rather than a panic.
    pub fn process(&mut self, input: &[i16], output: &mut [i16]) -> usize {
        let input = &input[..input.len().min(self.max_block)];
        if output.len() < self.max_output(input.len()) {
            return 0;
        }
        let input = &input[..input.len().min(self.max_block)];
        for (slot, &s) in self.buf[self.filled..].iter_mut().zip(input) {
            *slot = f32::from(s);
        }
        self.filled += input.len();
        let k = self.taps_per_phase;
        let mut written = 0;
        // Output at grid position `pos` uses inputs base-K+1 ..= base, base = pos / L.
        loop {
            let base = self.pos / self.up;
            if base >= self.filled {
                break;
            }
            let phase = self.pos % self.up;
            let taps = &self.phases[phase * k..(phase + 1) * k];
            let window = &self.buf[base + 1 - k..=base];
            // taps[j] multiplies x[base - j]: walk the window backwards.
            let acc: f32 = taps
                .iter()
                .zip(window.iter().rev())
                .map(|(&t, &x)| t * x)
                .sum();
            // Cannot run out given the check above; stopping is the safe answer if it did.
            let Some(slot) = output.get_mut(written) else {
                break;
            };
            *slot = acc.round().clamp(-32768.0, 32767.0) as i16;
            written += 1;
            self.pos += self.down;
        }
        // Drop the inputs no future output reaches (normally all but the last K−1) and rebase
        // the position onto what is kept.
        let consumed = (self.pos / self.up).min(self.filled) + 1 - k;
        self.buf.copy_within(consumed..self.filled, 0);
        self.filled = k - 1;
        self.pos -= consumed * self.up;
        written
    }

    /// Forgets all history, as if newly built.
    pub fn reset(&mut self) {
        let history = self.taps_per_phase - 1;
        self.buf.fill(0.0);
        self.filled = history;
        self.pos = history * self.up;
    }
}

fn gcd(mut a: u32, mut b: u32) -> u32 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

/// Modified Bessel function of the first kind, order 0, by its power series (converges fast
/// for the β ≤ 10 a Kaiser window uses).
fn bessel_i0(x: f64) -> f64 {
    let mut sum = 1.0;
    let mut term = 1.0;
    let half = x / 2.0;
    for k in 1..50 {
        term *= (half / k as f64) * (half / k as f64);
        sum += term;
        if term < sum * 1e-17 {
            break;
        }
    }
    sum
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tone(freq: f64, rate: u32, n: usize, amp: f64) -> Vec<i16> {
        (0..n)
            .map(|i| (amp * (2.0 * PI * freq * i as f64 / f64::from(rate)).sin()).round() as i16)
            .collect()
    }

    fn run(r: &mut Resampler, input: &[i16], block: usize) -> Vec<i16> {
        let mut out = Vec::new();
        let mut buf = vec![0i16; r.max_output(block)];
        for chunk in input.chunks(block) {
            let n = r.process(chunk, &mut buf);
            out.extend_from_slice(&buf[..n]);
        }
        out
    }

    fn rms(x: &[i16]) -> f64 {
        (x.iter().map(|&s| f64::from(s).powi(2)).sum::<f64>() / x.len() as f64).sqrt()
    }

    #[test]
    fn rejects_odd_ratios() {
        assert!(Resampler::new(44100, 8000, 160).is_err());
        assert!(Resampler::new(0, 8000, 160).is_err());
        assert!(Resampler::new(48000, 8000, 960).is_ok());
        assert!(Resampler::new(16000, 8000, 320).is_ok());
    }

    #[test]
    fn output_count_follows_the_ratio() {
        for (from, to, block) in [(48000, 8000, 960), (8000, 48000, 160), (16000, 8000, 320)] {
            let mut r = Resampler::new(from, to, block).unwrap();
            let input = vec![0i16; from as usize];
            let out = run(&mut r, &input, block);
            assert_eq!(out.len(), to as usize, "{from} -> {to}");
        }
    }

    #[test]
    fn pieces_match_whole() {
        let input = tone(700.0, 48000, 4800, 9000.0);
        let mut a = Resampler::new(48000, 8000, 4800).unwrap();
        let whole = run(&mut a, &input, 4800);
        let mut b = Resampler::new(48000, 8000, 4800).unwrap();
        // Uneven pieces, including ones that produce no output at all.
        let mut out = Vec::new();
        let mut buf = [0i16; 1000];
        let mut i = 0;
        for step in [1usize, 2, 5, 7, 333, 960, 1, 3000].iter().cycle() {
            if i >= input.len() {
                break;
            }
            let end = (i + step).min(input.len());
            let n = b.process(&input[i..end], &mut buf);
            out.extend_from_slice(&buf[..n]);
            i = end;
        }
        assert_eq!(out, whole);
    }

    #[test]
    fn passband_tone_keeps_its_level() {
        for (from, to, block) in [(48000, 8000, 960), (8000, 48000, 160), (16000, 8000, 320)] {
            let mut r = Resampler::new(from, to, block).unwrap();
            let input = tone(1000.0, from, from as usize, 10000.0);
            let out = run(&mut r, &input, block);
            let skip = to as usize / 10;
            let loss_db = 20.0 * (rms(&input) / rms(&out[skip..])).log10();
            assert!(loss_db.abs() < 0.5, "{from}->{to}: {loss_db:.3} dB");
        }
    }

    #[test]
    fn delay_is_the_group_delay() {
        let mut r = Resampler::new(8000, 48000, 160).unwrap();
        let mut input = vec![0i16; 160];
        input[0] = 30000;
        let mut out = vec![0i16; r.max_output(160)];
        let n = r.process(&input, &mut out);
        let peak = (0..n).max_by_key(|&i| out[i].unsigned_abs()).unwrap();
        assert!(
            peak.abs_diff(r.delay()) <= 1,
            "peak {peak} delay {}",
            r.delay()
        );
    }
}
