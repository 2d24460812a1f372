//! Packet loss concealment for G.711 at 8 kHz, in the manner of ITU-T G.711 Appendix I.
//!
//! # How it conceals
//!
//! Voiced speech is nearly periodic over a few tens of milliseconds, so the best guess for a
//! lost stretch is the last pitch period played again. On the first lost sample:
//!
//! 1. **Pitch.** The last 20 ms of history are correlated against the same window 40..=120
//!    samples earlier (66–200 Hz, the range G.711 Appendix I searches; higher voices repeat
//!    at a multiple of their period, which is just as periodic). The smallest lag within 3% of
//!    the best normalised correlation wins, so a 2× multiple does not beat the true period
//!    by a rounding error.
//! 2. **Loop.** The last period is looped. Its last quarter period is cross-faded into the
//!    samples that preceded the period, so the jump from the loop's end back to its start is
//!    smooth; the same cross-fade replaces the last quarter period of real signal before the
//!    loss, so the switch into the loop is smooth too.
//! 3. **Less buzz.** One period repeated for long sounds mechanical: after 10 ms the loop
//!    grows to two periods and after 20 ms to three (a quarter-period cross-fade each time).
//! 4. **Fade.** Full level for the first 10 ms, then 20% less every 10 ms: silence from 60 ms.
//!
//! On the first good sample after a loss the real signal is faded in over the still-running
//! synthetic one, over a quarter period plus 4 ms for every 10 ms lost beyond the first
//! (at most 10 ms): the longer the loss, the less alike the two are.
//!
//! # Delay
//!
//! Step 2 rewrites the last quarter period (up to 30 samples) before the loss, so those
//! samples must not have left yet: the concealer delays everything it passes by [`DELAY`]
//! samples (3.75 ms), as Appendix I does. Good frames are therefore also run through
//! [`Plc::good`], which applies the delay in place.
//!
//! # Cost
//!
//! All state is fixed-size arrays; the pitch search (81 lags × 160 samples) runs once per
//! loss, not per frame. Nothing allocates.

/// Samples of history kept: three periods of the longest pitch plus a quarter period for the
/// loop cross-fade.
const HISTORY: usize = 3 * PITCH_MAX + PITCH_MAX / 4;
/// Shortest pitch period searched, 5 ms (200 Hz).
const PITCH_MIN: usize = 40;
/// Longest pitch period searched, 15 ms (66.7 Hz).
const PITCH_MAX: usize = 120;
/// Correlation window for the pitch search: 20 ms.
const CORR_WINDOW: usize = 160;
/// 10 ms at 8 kHz: the unit of the loop growth and of the fade.
const BLOCK: usize = 80;
/// Concealed samples at full level before the fade starts.
const FADE_START: usize = BLOCK;
/// Samples over which the level falls from full to silence (20% per 10 ms).
const FADE_LEN: usize = 5 * BLOCK;
/// Most periods the loop grows to.
const MAX_PERIODS: usize = 3;

/// Delay in samples that the concealer adds to everything it outputs (3.75 ms at 8 kHz).
pub const DELAY: usize = PITCH_MAX / 4;

/// G.711 Appendix I-style packet loss concealer for 8 kHz mono PCM.
#[derive(Clone, Debug)]
pub struct Plc {
    /// What was played (real or concealed), before the delay line: the newest `HISTORY`
    /// samples end at `history_end`. Twice the size so that pushing is a store, with one
    /// `HISTORY`-sample move every `HISTORY` samples.
    history: [f32; 2 * HISTORY],
    history_end: usize,
    /// The last `DELAY` samples not yet output; `delay_pos` is the oldest.
    delay: [f32; DELAY],
    delay_pos: usize,
    /// Snapshot of `history` at the start of the current loss: the loop reads from it.
    pitch_buf: [f32; HISTORY],
    /// Samples concealed in the current loss; 0 when not concealing.
    lost: usize,
    pitch: usize,
    periods: usize,
    /// Read position inside the loop of `periods` periods.
    offset: usize,
    /// Remaining samples of a cross-fade from a shorter loop, and that loop's state.
    switch_left: usize,
    old_periods: usize,
    old_offset: usize,
    /// Remaining and total samples of the fade from synthetic into real signal after a loss.
    recover_left: usize,
    recover_len: usize,
    /// A good frame has arrived and the fade from synthetic to real is running.
    recovering: bool,
}

impl Default for Plc {
    fn default() -> Self {
        Self::new()
    }
}

impl Plc {
    /// A concealer with empty (silent) history.
    pub fn new() -> Self {
        Plc {
            history: [0.0; 2 * HISTORY],
            history_end: HISTORY,
            delay: [0.0; DELAY],
            delay_pos: 0,
            pitch_buf: [0.0; HISTORY],
            lost: 0,
            pitch: PITCH_MAX,
            periods: 1,
            offset: 0,
            switch_left: 0,
            old_periods: 1,
            old_offset: 0,
            recover_left: 0,
            recover_len: 0,
            recovering: false,
        }
    }

    /// Forgets all history (new stream or codec change).
    pub fn reset(&mut self) {
        *self = Self::new();
    }

    /// Whether the last call concealed (a loss is in progress).
    pub fn is_concealing(&self) -> bool {
        self.lost > 0 && !self.recovering
    }

    /// Passes a received frame through: `pcm` is replaced, in place, by the output delayed by
    /// [`DELAY`] samples, faded in over the concealment if a loss just ended.
    pub fn good(&mut self, pcm: &mut [i16]) {
        if self.lost > 0 && !self.recovering {
            self.recovering = true;
            // Appendix I: fade in over a quarter period, plus 4 ms per extra 10 ms lost.
            let extra = (self.lost - 1) / BLOCK * 32;
            self.recover_len = (self.pitch / 4 + extra).min(BLOCK);
            self.recover_left = self.recover_len;
        }
        for s in pcm.iter_mut() {
            let mut x = f32::from(*s);
            if self.recover_left > 0 {
                let w = (self.recover_len - self.recover_left + 1) as f32
                    / (self.recover_len + 1) as f32;
                x = w * x + (1.0 - w) * self.next_synthetic();
                self.recover_left -= 1;
            }
            *s = self.push(x);
        }
        // The fade can outlast a short frame; the loss ends when the fade does.
        if self.recover_left == 0 {
            self.recovering = false;
            self.lost = 0;
        }
    }

    /// Fills `out` with concealment for that many missing samples, continuing any loss already
    /// in progress.
    pub fn conceal(&mut self, out: &mut [i16]) {
        if self.lost == 0 {
            self.start_loss();
        } else if self.recovering {
            // Lost again while fading in: carry on with the loop where it is.
            self.recovering = false;
            self.recover_left = 0;
        }
        for s in out.iter_mut() {
            let x = self.next_synthetic();
            *s = self.push(x);
        }
    }

    /// Sets up the loop at the first lost sample.
    fn start_loss(&mut self) {
        self.recover_left = 0;
        self.pitch_buf
            .copy_from_slice(&self.history[self.history_end - HISTORY..self.history_end]);
        self.pitch = estimate_pitch(&self.pitch_buf);
        self.periods = 1;
        self.offset = 0;
        self.switch_left = 0;
        // The undelivered last quarter period becomes the start of the cross-faded loop.
        let ola = self.pitch / 4;
        for i in 0..ola {
            let idx = (self.delay_pos + DELAY - ola + i) % DELAY;
            self.delay[idx] = self.looped(1, self.pitch - ola + i);
        }
    }

    /// The next concealment sample: loop, loop growth and fade.
    fn next_synthetic(&mut self) -> f32 {
        let t = self.lost;
        // Grow the loop at 10 and 20 ms, keeping the phase within the period.
        if (t == BLOCK || t == 2 * BLOCK) && self.periods < MAX_PERIODS {
            self.old_periods = self.periods;
            self.old_offset = self.offset;
            self.periods += 1;
            self.offset %= self.pitch;
            self.switch_left = self.pitch / 4;
        }
        let mut x = self.looped(self.periods, self.offset);
        self.offset = (self.offset + 1) % (self.periods * self.pitch);
        if self.switch_left > 0 {
            let len = self.pitch / 4;
            let w = (len - self.switch_left + 1) as f32 / (len + 1) as f32;
            let old = self.looped(self.old_periods, self.old_offset);
            self.old_offset = (self.old_offset + 1) % (self.old_periods * self.pitch);
            x = w * x + (1.0 - w) * old;
            self.switch_left -= 1;
        }
        let gain = if t < FADE_START {
            1.0
        } else {
            1.0 - ((t - FADE_START) as f32 / FADE_LEN as f32).min(1.0)
        };
        self.lost = t.saturating_add(1);
        x * gain
    }

    /// Sample `j` of a loop of `periods` pitch periods taken from the end of `pitch_buf`,
    /// with its last quarter period cross-faded into the samples before the loop's start.
    fn looped(&self, periods: usize, j: usize) -> f32 {
        let len = periods * self.pitch;
        let end = HISTORY;
        // len ≤ 3·120 and j < len, so end − len + j ≥ 30 and end − 2·len + j ≥ 0 below.
        let x = self.pitch_buf[end - len + j];
        let ola = self.pitch / 4;
        if j + ola >= len {
            let i = j + ola - len;
            let w = (i + 1) as f32 / (ola + 1) as f32;
            let before = self.pitch_buf[end + j - 2 * len];
            (1.0 - w) * x + w * before
        } else {
            x
        }
    }

    /// Puts one sample into history and the delay line; returns the sample leaving it.
    fn push(&mut self, x: f32) -> i16 {
        let out = self.delay[self.delay_pos];
        self.delay[self.delay_pos] = x;
        self.delay_pos = (self.delay_pos + 1) % DELAY;
        if self.history_end == self.history.len() {
            self.history.copy_within(HISTORY.., 0);
            self.history_end = HISTORY;
        }
        self.history[self.history_end] = x;
        self.history_end += 1;
        out.round().clamp(-32768.0, 32767.0) as i16
    }
}

/// Pitch period in samples from the end of `x`: the lag in `PITCH_MIN..=PITCH_MAX` with the
/// highest normalised cross-correlation over the last `CORR_WINDOW` samples, preferring the
/// peak of the shortest lag within 3% of it.
fn estimate_pitch(x: &[f32; HISTORY]) -> usize {
    let end = HISTORY;
    let recent = &x[end - CORR_WINDOW..];
    let energy_recent: f32 = recent.iter().map(|v| v * v).sum();
    let mut scores = [0f32; PITCH_MAX + 1];
    let mut best = 0f32;
    for lag in PITCH_MIN..=PITCH_MAX {
        let past = &x[end - CORR_WINDOW - lag..end - lag];
        let (mut cross, mut energy) = (0f32, 0f32);
        for (a, b) in recent.iter().zip(past) {
            cross += a * b;
            energy += b * b;
        }
        let denom = (energy * energy_recent).sqrt();
        let score = if denom > 0.0 { cross / denom } else { 0.0 };
        scores[lag] = score;
        best = best.max(score);
    }
    if best <= 0.0 {
        // Silence or noise: any period will do; the longest repeats least audibly.
        return PITCH_MAX;
    }
    let mut lag = (PITCH_MIN..=PITCH_MAX)
        .find(|&lag| scores[lag] >= 0.97 * best)
        .unwrap_or(PITCH_MAX);
    // The first lag over the bar sits on the rising side of its peak: climb to the top.
    while lag < PITCH_MAX && scores[lag + 1] > scores[lag] {
        lag += 1;
    }
    lag
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::f64::consts::PI;

    /// Harmonics of `f0` up to 1 kHz with 1/h amplitudes.
    fn voiced(f0: f64, n: usize) -> Vec<i16> {
        let harmonics = (1000.0 / f0) as usize;
        (0..n)
            .map(|i| {
                let t = i as f64 / 8000.0;
                let v: f64 = (1..=harmonics)
                    .map(|h| (2.0 * PI * f0 * h as f64 * t + h as f64).sin() / h as f64)
                    .sum();
                (v * 6000.0) as i16
            })
            .collect()
    }

    /// Runs `input` in 20 ms frames through the concealer, losing the frames in `lost`.
    fn conceal_run(input: &[i16], lost: &[usize]) -> Vec<i16> {
        let mut plc = Plc::new();
        let mut out = Vec::new();
        for (k, frame) in input.chunks(160).enumerate() {
            let mut f = frame.to_vec();
            if lost.contains(&k) {
                plc.conceal(&mut f);
            } else {
                plc.good(&mut f);
            }
            out.extend_from_slice(&f);
        }
        out
    }

    /// SNR in dB of `out` against `reference` over `range`.
    fn snr(reference: &[i16], out: &[i16], range: std::ops::Range<usize>) -> f64 {
        let (mut sig, mut err) = (0.0, 0.0);
        for i in range {
            sig += f64::from(reference[i]).powi(2);
            err += (f64::from(out[i]) - f64::from(reference[i])).powi(2);
        }
        10.0 * (sig / err.max(1e-9)).log10()
    }

    #[test]
    fn output_is_delayed_by_delay() {
        let input = voiced(200.0, 1600);
        let out = conceal_run(&input, &[]);
        assert_eq!(&out[DELAY..], &input[..input.len() - DELAY]);
        assert!(out[..DELAY].iter().all(|&s| s == 0));
    }

    #[test]
    fn finds_the_pitch_period() {
        for (f0, period) in [(200.0, 40), (100.0, 80), (125.0, 64), (80.0, 100)] {
            let x = voiced(f0, HISTORY);
            let mut h = [0f32; HISTORY];
            for (d, &s) in h.iter_mut().zip(&x) {
                *d = f32::from(s);
            }
            assert_eq!(estimate_pitch(&h), period, "f0 {f0}");
        }
    }

    #[test]
    fn one_lost_frame_is_concealed_far_better_than_zero_fill() {
        for f0 in [200.0, 100.0, 133.0] {
            let input = voiced(f0, 8000);
            let lost = 20;
            let out = conceal_run(&input, &[lost]);
            // Compare with the input delayed by DELAY, over the lost frame and the fade-in.
            let mut reference = vec![0i16; DELAY];
            reference.extend_from_slice(&input[..input.len() - DELAY]);
            let range = lost * 160 + DELAY..(lost + 1) * 160 + DELAY + BLOCK;
            let mut zero = reference.clone();
            zero[lost * 160 + DELAY..(lost + 1) * 160 + DELAY].fill(0);
            let plc_snr = snr(&reference, &out, range.clone());
            let zero_snr = snr(&reference, &zero, range);
            eprintln!("f0 {f0}: PLC SNR {plc_snr:.1} dB, zero-fill {zero_snr:.1} dB");
            // Zero fill scores about 2 dB here (the whole lost frame is error). Measured PLC:
            // 21.3 dB (200 Hz), 20.4 dB (100 Hz), 18.6 dB (133 Hz, a non-integer period that
            // drifts), capped by the Appendix I fade that takes 20% off in the second 10 ms.
            // 12 dB better than zero fill (16x less error energy) keeps margin and still
            // fails a wrong period, a broken loop seam or a missing delay compensation.
            assert!(
                plc_snr > zero_snr + 12.0,
                "f0 {f0}: {plc_snr} vs {zero_snr}"
            );
        }
    }

    #[test]
    fn speech_like_loss_still_beats_zero_fill() {
        // f0 gliding 120 -> 180 Hz with syllable-rate amplitude: repetition is imperfect.
        let input: Vec<i16> = {
            let mut phase = 0.0f64;
            (0..8000)
                .map(|i| {
                    let t = i as f64 / 8000.0;
                    let f0 = 150.0 + 30.0 * (2.0 * PI * 2.0 * t).sin();
                    phase += 2.0 * PI * f0 / 8000.0;
                    let v: f64 = (1..=6).map(|h| (phase * h as f64).sin() / h as f64).sum();
                    let env = 0.6 - 0.4 * (2.0 * PI * 4.0 * t).cos();
                    (v * env * 6000.0) as i16
                })
                .collect()
        };
        let mut total_gain = 0.0;
        let losses = [10, 17, 23, 31, 38, 45];
        for &lost in &losses {
            let out = conceal_run(&input, &[lost]);
            let mut reference = vec![0i16; DELAY];
            reference.extend_from_slice(&input[..input.len() - DELAY]);
            let range = lost * 160 + DELAY..(lost + 1) * 160 + DELAY + BLOCK;
            let mut zero = reference.clone();
            zero[lost * 160 + DELAY..(lost + 1) * 160 + DELAY].fill(0);
            let gain = snr(&reference, &out, range.clone()) - snr(&reference, &zero, range);
            eprintln!("lost frame {lost}: {gain:.1} dB better than zero fill");
            total_gain += gain;
        }
        let mean = total_gain / losses.len() as f64;
        eprintln!("mean improvement {mean:.1} dB");
        // Waveform error is a harsh measure for a gliding pitch: a phase slip of a fraction of
        // a period costs as much as silence. Measured: -1.5 to 12.7 dB per loss, mean 4.1 dB.
        // A mean of 2 dB still rules out zero fill (0 dB) and a wrong period (negative).
        assert!(mean > 2.0, "mean improvement {mean:.1} dB");
    }

    #[test]
    fn long_loss_fades_to_silence() {
        let input = voiced(200.0, 4000);
        // Frames 10..=14 lost: 100 ms.
        let out = conceal_run(&input, &[10, 11, 12, 13, 14]);
        let start = 10 * 160 + DELAY;
        let level = |r: std::ops::Range<usize>| -> f64 {
            let n = r.len() as f64;
            (out[r].iter().map(|&s| f64::from(s).powi(2)).sum::<f64>() / n).sqrt()
        };
        let first = level(start..start + 80);
        let reference = level(start - 400..start);
        assert!(first > 0.8 * reference, "first 10 ms at full level");
        // Each later 10 ms block is quieter than the one before, until silence at 60 ms.
        let mut last = first;
        for b in 1..6 {
            let l = level(start + b * 80..start + (b + 1) * 80);
            assert!(l < last, "block {b}: {l} !< {last}");
            last = l;
        }
        assert!(out[start + 480..start + 800].iter().all(|&s| s == 0));
        // And the signal comes back after the loss.
        assert!(level(start + 800 + 80..start + 960) > 0.8 * reference);
    }

    #[test]
    fn concealing_from_nothing_is_silence() {
        let mut plc = Plc::new();
        let mut f = [123i16; 160];
        plc.conceal(&mut f);
        assert!(f.iter().all(|&s| s == 0));
        assert!(plc.is_concealing());
        let mut g = [100i16; 160];
        plc.good(&mut g);
        assert!(!plc.is_concealing());
        // Odd sizes, empty slices and extremes never panic.
        plc.conceal(&mut []);
        plc.good(&mut [i16::MAX; 7]);
        plc.conceal(&mut [0; 1000]);
        plc.good(&mut [i16::MIN; 3]);
    }

    #[test]
    fn fade_in_spans_short_frames() {
        // After a long loss the synthetic signal is silent; the fade-in from it must not
        // restart at full synthetic level when good frames are shorter than the fade.
        let input = voiced(200.0, 4000);
        let mut plc = Plc::new();
        let mut out = Vec::new();
        for (k, frame) in input.chunks(10).enumerate() {
            let mut f = frame.to_vec();
            if (100..180).contains(&k) {
                plc.conceal(&mut f);
            } else {
                plc.good(&mut f);
            }
            out.extend_from_slice(&f);
        }
        // 800 lost samples: silent from 480 on, then a fade-in from silence.
        let start = 1000 + DELAY;
        assert!(out[start + 480..start + 800].iter().all(|&s| s == 0));
        let peak = input.iter().map(|s| s.unsigned_abs()).max().unwrap();
        let first = out[start + 800..start + 810]
            .iter()
            .map(|s| s.unsigned_abs())
            .max();
        assert!(first.unwrap() < peak / 4, "fade-in starts near silence");
    }
}
