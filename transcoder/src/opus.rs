//! A thin safe wrapper over libopus (through the `opus` crate) shaped for G.711 interworking.
//!
//! # Why 8 kHz
//!
//! libopus encodes from and decodes to 8, 12, 16, 24 or 48 kHz internally. Encoding straight
//! from G.711's 8 kHz is the cheapest correct path towards the browser: libopus codes
//! narrowband and needs no resampler. Decoding straight to 8 kHz is also possible and
//! cheapest, but not perfectly band-limited: for the hybrid and SILK wideband streams
//! browsers send, libopus's own 16 → 8 kHz step lets a 4.5 kHz tone through at about
//! -39 dB (folded to 3.5 kHz). [`crate::pipeline::OpusToG711`] therefore decodes at 16 kHz
//! by default and band-limits with [`crate::resample`]; 8 kHz remains a configuration.
//!
//! # Channels
//!
//! Decoders are mono. A browser may send stereo Opus (RFC 7587 `stereo=1`); a mono libopus
//! decoder downmixes such packets itself, so the gateway never has to look at the channel
//! count.
//!
//! # Loss
//!
//! [`OpusDecoder::conceal`] runs libopus packet loss concealment for a known duration;
//! [`OpusDecoder::decode_fec`] recovers a lost packet from the in-band FEC (LBRR) data carried
//! by the packet that followed it. libopus wants the exact missing duration in both cases, or
//! it is left out of step for the next packet, so both take a sample count.
//!
//! # Errors
//!
//! Nothing here panics on input: malformed packets, wrong frame sizes and short buffers are
//! [`OpusError`]s. Buffers are the caller's; nothing allocates after construction.

use std::fmt;

use ::opus::{Application, Bitrate, Channels, ErrorCode};

/// Sample rates libopus accepts for PCM in and out (RFC 6716 §2).
pub const SAMPLE_RATES: [u32; 5] = [8000, 12000, 16000, 24000, 48000];

/// The RTP clock rate of Opus, whatever the PCM rate (RFC 7587 §4.1).
pub const RTP_CLOCK: u32 = 48_000;

/// The longest Opus packet, 120 ms (RFC 6716 §3.2.5), in 48 kHz samples.
pub const MAX_PACKET_SAMPLES_48K: usize = 5760;

/// Largest encoded packet we produce. RFC 6716 §3.4 bounds a packet at 1275 bytes per frame;
/// at VoIP bitrates a 60 ms frame is well under 1500.
pub const MAX_ENCODED_BYTES: usize = 1500;

/// Why an Opus call failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpusError {
    /// The sample rate is not one of [`SAMPLE_RATES`].
    UnsupportedRate(u32),
    /// The PCM length is not a legal Opus frame (2.5, 5, 10, 20, 40 or 60 ms).
    UnsupportedFrame(usize),
    /// The packet is empty, truncated or otherwise not valid Opus (RFC 6716 §3.4).
    Malformed,
    /// The output buffer cannot hold the result.
    BufferTooSmall,
    /// Any other libopus failure, with the libopus function that reported it.
    Codec(&'static str),
}

impl fmt::Display for OpusError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OpusError::UnsupportedRate(r) => write!(f, "unsupported Opus sample rate {r} Hz"),
            OpusError::UnsupportedFrame(n) => write!(f, "{n} samples is not an Opus frame size"),
            OpusError::Malformed => f.write_str("malformed Opus packet"),
            OpusError::BufferTooSmall => f.write_str("output buffer too small"),
            OpusError::Codec(func) => write!(f, "libopus error in {func}"),
        }
    }
}

impl std::error::Error for OpusError {}

impl From<::opus::Error> for OpusError {
    fn from(e: ::opus::Error) -> Self {
        match e.code() {
            ErrorCode::InvalidPacket => OpusError::Malformed,
            ErrorCode::BufferTooSmall => OpusError::BufferTooSmall,
            _ => OpusError::Codec(e.function()),
        }
    }
}

/// Encoder settings. The defaults are tuned for a voice leg towards a browser.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OpusConfig {
    /// libopus complexity 0..=10. Default 5: about half the CPU of 10 for a barely audible
    /// loss at narrowband, which matters when one core runs hundreds of channels.
    pub complexity: u8,
    /// Target bitrate in bits/s, `None` for libopus's automatic choice. Default 24 kbit/s.
    /// Why not lower: libopus codes LBRR only when its loss- and complexity-discounted
    /// "equivalent rate" clears a per-bandwidth threshold (`decide_fec` in libopus 1.6:
    /// narrowband 13 kbit/s × (125 − loss%)/100). With a 5% loss hint at complexity 5 that
    /// needs about 19 kbit/s; the automatic 11 kbit/s, or 16 kbit/s, silently send no FEC.
    pub bitrate: Option<u32>,
    /// In-band FEC (LBRR, RFC 6716 §2.1.7). Default on: browsers decode it and it costs
    /// only bits when the loss hint below is non-zero.
    pub inband_fec: bool,
    /// Expected packet loss in percent (0..=100), the hint that makes libopus spend bits on
    /// FEC. Default 5.
    pub packet_loss_percent: u8,
    /// Discontinuous transmission: during silence libopus emits a 1–2 byte packet every
    /// 400 ms instead of one per frame. Default off, because the IMS leg has no CN to map it
    /// to and a steady 20 ms stream keeps NATs and jitter buffers simple.
    pub dtx: bool,
}

impl Default for OpusConfig {
    fn default() -> Self {
        OpusConfig {
            complexity: 5,
            bitrate: Some(24_000),
            inband_fec: true,
            packet_loss_percent: 5,
            dtx: false,
        }
    }
}

/// A mono Opus encoder (VOIP application) taking 16-bit PCM at a fixed rate.
pub struct OpusEncoder {
    inner: ::opus::Encoder,
    sample_rate: u32,
}

impl fmt::Debug for OpusEncoder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OpusEncoder")
            .field("sample_rate", &self.sample_rate)
            .finish()
    }
}

impl OpusEncoder {
    /// Creates an encoder for mono PCM at `sample_rate` (one of [`SAMPLE_RATES`]).
    pub fn new(sample_rate: u32, config: &OpusConfig) -> Result<Self, OpusError> {
        if !SAMPLE_RATES.contains(&sample_rate) {
            return Err(OpusError::UnsupportedRate(sample_rate));
        }
        let mut inner = ::opus::Encoder::new(sample_rate, Channels::Mono, Application::Voip)?;
        inner.set_complexity(i32::from(config.complexity.min(10)))?;
        let bitrate = match config.bitrate {
            // libopus clamps to 500..=512000 itself; saturate so a huge value cannot wrap.
            Some(b) => Bitrate::Bits(i32::try_from(b).unwrap_or(i32::MAX)),
            None => Bitrate::Auto,
        };
        inner.set_bitrate(bitrate)?;
        inner.set_inband_fec(config.inband_fec)?;
        inner.set_packet_loss_perc(i32::from(config.packet_loss_percent.min(100)))?;
        inner.set_dtx(config.dtx)?;
        Ok(OpusEncoder { inner, sample_rate })
    }

    /// The PCM sample rate this encoder was created for.
    pub fn sample_rate(&self) -> u32 {
        self.sample_rate
    }

    /// Encodes one frame of `pcm` (2.5, 5, 10, 20, 40 or 60 ms at [`Self::sample_rate`]) into
    /// `out`; returns the packet length. A 1–2 byte result is a DTX packet.
    pub fn encode(&mut self, pcm: &[i16], out: &mut [u8]) -> Result<usize, OpusError> {
        if !is_frame_size(pcm.len(), self.sample_rate) {
            return Err(OpusError::UnsupportedFrame(pcm.len()));
        }
        Ok(self.inner.encode(pcm, out)?)
    }

    /// Whether the last frame encoded was a DTX (silence) frame.
    pub fn in_dtx(&mut self) -> bool {
        self.inner.get_in_dtx().unwrap_or(false)
    }

    /// Returns the encoder to its freshly created state, keeping the settings.
    pub fn reset(&mut self) -> Result<(), OpusError> {
        Ok(self.inner.reset_state()?)
    }

    /// The encoder's look-ahead in samples at [`Self::sample_rate`]: how far its output lags
    /// its input.
    pub fn lookahead(&mut self) -> Result<usize, OpusError> {
        Ok(usize::try_from(self.inner.get_lookahead()?).unwrap_or(0))
    }
}

/// A mono Opus decoder producing 16-bit PCM at a fixed rate; stereo packets are downmixed.
pub struct OpusDecoder {
    inner: ::opus::Decoder,
    sample_rate: u32,
}

impl fmt::Debug for OpusDecoder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OpusDecoder")
            .field("sample_rate", &self.sample_rate)
            .finish()
    }
}

impl OpusDecoder {
    /// Creates a mono decoder producing PCM at `sample_rate` (one of [`SAMPLE_RATES`]).
    pub fn new(sample_rate: u32) -> Result<Self, OpusError> {
        if !SAMPLE_RATES.contains(&sample_rate) {
            return Err(OpusError::UnsupportedRate(sample_rate));
        }
        let inner = ::opus::Decoder::new(sample_rate, Channels::Mono)?;
        Ok(OpusDecoder { inner, sample_rate })
    }

    /// The PCM sample rate this decoder produces.
    pub fn sample_rate(&self) -> u32 {
        self.sample_rate
    }

    /// How many samples (at [`Self::sample_rate`]) `packet` decodes to, from its TOC byte and
    /// frame count alone (RFC 6716 §3.1). Fails on empty or malformed packets and on packets
    /// longer than 120 ms.
    pub fn packet_samples(&self, packet: &[u8]) -> Result<usize, OpusError> {
        packet_samples(packet, self.sample_rate)
    }

    /// Decodes `packet` into `out`; returns the number of samples written. `out` must hold
    /// [`Self::packet_samples`]; a larger buffer is fine.
    pub fn decode(&mut self, packet: &[u8], out: &mut [i16]) -> Result<usize, OpusError> {
        let n = self.packet_samples(packet)?;
        if out.len() < n {
            return Err(OpusError::BufferTooSmall);
        }
        // An empty slice would mean "packet lost" to libopus; packet_samples refused it.
        Ok(self.inner.decode(packet, &mut out[..n], false)?)
    }

    /// Runs packet loss concealment for `samples` missing samples (a multiple of 2.5 ms, at
    /// most 120 ms) into `out[..samples]`. During a DTX gap this yields libopus's comfort
    /// noise continuation, fading towards silence.
    pub fn conceal(&mut self, samples: usize, out: &mut [i16]) -> Result<usize, OpusError> {
        self.check_gap(samples, out.len())?;
        Ok(self.inner.decode(&[], &mut out[..samples], false)?)
    }

    /// Recovers `samples` missing samples from the in-band FEC of `next`, the packet that
    /// followed the loss. When `next` carries no FEC, libopus falls back to concealment, so
    /// the output is always usable; [`has_fec`] tells the two apart beforehand. `next` itself
    /// must still be decoded afterwards with [`Self::decode`].
    pub fn decode_fec(
        &mut self,
        next: &[u8],
        samples: usize,
        out: &mut [i16],
    ) -> Result<usize, OpusError> {
        self.check_gap(samples, out.len())?;
        if next.is_empty() {
            return Err(OpusError::Malformed);
        }
        packet_samples(next, self.sample_rate)?;
        Ok(self.inner.decode(next, &mut out[..samples], true)?)
    }

    /// Returns the decoder to its freshly created state (a new stream or codec change).
    pub fn reset(&mut self) -> Result<(), OpusError> {
        Ok(self.inner.reset_state()?)
    }

    fn check_gap(&self, samples: usize, out_len: usize) -> Result<(), OpusError> {
        // libopus conceals in whole 2.5 ms steps, up to one maximal packet.
        let step = self.sample_rate as usize / 400;
        let max = MAX_PACKET_SAMPLES_48K * self.sample_rate as usize / 48_000;
        if samples == 0 || !divides(step, samples) || samples > max {
            return Err(OpusError::UnsupportedFrame(samples));
        }
        if out_len < samples {
            return Err(OpusError::BufferTooSmall);
        }
        Ok(())
    }
}

/// How many samples at `sample_rate` an Opus packet holds (RFC 6716 §3.1, §3.2.5), refusing
/// empty packets and anything over 120 ms.
pub fn packet_samples(packet: &[u8], sample_rate: u32) -> Result<usize, OpusError> {
    if packet.is_empty() {
        return Err(OpusError::Malformed);
    }
    if !SAMPLE_RATES.contains(&sample_rate) {
        return Err(OpusError::UnsupportedRate(sample_rate));
    }
    let n = ::opus::packet::get_nb_samples(packet, sample_rate).map_err(OpusError::from)?;
    let max = MAX_PACKET_SAMPLES_48K * sample_rate as usize / 48_000;
    if n == 0 || n > max {
        return Err(OpusError::Malformed);
    }
    Ok(n)
}

/// Whether `packet` carries in-band FEC (LBRR) data for the packet before it. Only SILK and
/// hybrid frames can (RFC 6716 §2.1.7); the LBRR flag is the second bit of the first SILK
/// frame's header, which libopus exposes only by decoding, so this checks the mode from the
/// TOC and leaves the rest to [`OpusDecoder::decode_fec`].
pub fn has_fec(packet: &[u8]) -> bool {
    // TOC config 0..=15 is SILK-only, 12..=15 hybrid; 16..=31 is CELT-only (RFC 6716 §3.1).
    matches!(packet.first(), Some(toc) if toc >> 3 < 16)
}

/// Whether `n` samples at `rate` is a legal Opus frame: 2.5, 5, 10, 20, 40 or 60 ms.
pub fn is_frame_size(n: usize, rate: u32) -> bool {
    let per_2_5ms = rate as usize / 400;
    per_2_5ms != 0 && divides(per_2_5ms, n) && matches!(n / per_2_5ms, 1 | 2 | 4 | 8 | 16 | 24)
}

/// `d` divides `n` (`d` > 0). Written out because `is_multiple_of` needs Rust 1.87 and the
/// workspace's rust-version is 1.85.
fn divides(d: usize, n: usize) -> bool {
    n / d * d == n
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tone(freq: f64, rate: u32, n: usize, amp: f64) -> Vec<i16> {
        (0..n)
            .map(|i| {
                let t = i as f64 / f64::from(rate);
                (amp * (2.0 * std::f64::consts::PI * freq * t).sin()) as i16
            })
            .collect()
    }

    fn rms(x: &[i16]) -> f64 {
        (x.iter().map(|&s| f64::from(s).powi(2)).sum::<f64>() / x.len() as f64).sqrt()
    }

    #[test]
    fn frame_sizes() {
        for n in [20, 40, 80, 160, 320, 480] {
            assert!(is_frame_size(n, 8000), "{n}");
        }
        for n in [0, 1, 60, 100, 240, 640, 960] {
            assert!(!is_frame_size(n, 8000), "{n}");
        }
        assert!(is_frame_size(960, 48000));
        assert!(is_frame_size(2880, 48000));
        assert!(!is_frame_size(3840, 48000));
    }

    #[test]
    fn rejects_bad_rates_and_frames() {
        assert_eq!(
            OpusDecoder::new(44100).unwrap_err(),
            OpusError::UnsupportedRate(44100)
        );
        assert!(OpusEncoder::new(11025, &OpusConfig::default()).is_err());
        let mut enc = OpusEncoder::new(8000, &OpusConfig::default()).unwrap();
        let mut out = [0u8; 400];
        assert_eq!(
            enc.encode(&[0; 100], &mut out),
            Err(OpusError::UnsupportedFrame(100))
        );
    }

    #[test]
    fn tone_round_trip_at_8k() {
        let mut enc = OpusEncoder::new(8000, &OpusConfig::default()).unwrap();
        let mut dec = OpusDecoder::new(8000).unwrap();
        let input = tone(1000.0, 8000, 8000, 8000.0);
        let mut packet = [0u8; MAX_ENCODED_BYTES];
        let mut out = Vec::new();
        let mut pcm = [0i16; 960];
        for frame in input.chunks(160) {
            let len = enc.encode(frame, &mut packet).unwrap();
            assert_eq!(dec.packet_samples(&packet[..len]).unwrap(), 160);
            let n = dec.decode(&packet[..len], &mut pcm).unwrap();
            assert_eq!(n, 160);
            out.extend_from_slice(&pcm[..n]);
        }
        // After the codec settles, the level holds within 1 dB.
        let ratio = rms(&out[4000..]) / rms(&input[4000..]);
        assert!(
            (0.89..1.12).contains(&ratio),
            "level ratio {ratio} (in {} out {})",
            rms(&input[4000..]),
            rms(&out[4000..])
        );
    }

    #[test]
    fn decodes_every_frame_duration() {
        let mut dec = OpusDecoder::new(8000).unwrap();
        let mut pcm = [0i16; 960];
        for ms in [10usize, 20, 40, 60] {
            let mut enc = OpusEncoder::new(48000, &OpusConfig::default()).unwrap();
            let input = tone(440.0, 48000, 48 * ms, 5000.0);
            let mut packet = [0u8; MAX_ENCODED_BYTES];
            let len = enc.encode(&input, &mut packet).unwrap();
            assert_eq!(packet_samples(&packet[..len], 48000).unwrap(), 48 * ms);
            assert_eq!(dec.decode(&packet[..len], &mut pcm).unwrap(), 8 * ms);
        }
    }

    #[test]
    fn stereo_packets_downmix_to_mono() {
        let mut enc =
            ::opus::Encoder::new(48000, Channels::Stereo, Application::Audio).expect("encoder");
        let mut dec = OpusDecoder::new(8000).unwrap();
        let left = tone(500.0, 48000, 48000, 6000.0);
        let mut interleaved = vec![0i16; 2 * 960];
        let mut packet = [0u8; MAX_ENCODED_BYTES];
        let mut pcm = [0i16; 960];
        let mut out = Vec::new();
        for frame in left.chunks(960) {
            // Same tone on both channels: a correct downmix keeps its level.
            for (i, &s) in frame.iter().enumerate() {
                interleaved[2 * i] = s;
                interleaved[2 * i + 1] = s;
            }
            let len = enc.encode(&interleaved, &mut packet).unwrap();
            assert_eq!(
                ::opus::packet::get_nb_channels(&packet[..len]).unwrap(),
                Channels::Stereo
            );
            let n = dec.decode(&packet[..len], &mut pcm).unwrap();
            assert_eq!(n, 160);
            out.extend_from_slice(&pcm[..n]);
        }
        let ratio = rms(&out[4000..]) / rms(&left[24000..]);
        assert!((0.8..1.25).contains(&ratio), "downmix level ratio {ratio}");
    }

    #[test]
    fn malformed_packets_are_errors() {
        let mut dec = OpusDecoder::new(8000).unwrap();
        let mut pcm = [0i16; 960];
        assert_eq!(dec.decode(&[], &mut pcm), Err(OpusError::Malformed));
        // Code 3 (arbitrary frame count) with a count byte of 0 frames is invalid.
        assert_eq!(
            dec.decode(&[0x03, 0x00], &mut pcm),
            Err(OpusError::Malformed)
        );
        // Code 3 claiming 48 frames of 20 ms = 960 ms > 120 ms.
        assert!(dec.decode(&[0x0B, 0x30], &mut pcm).is_err());
        // A valid 20 ms TOC but a buffer too short for it.
        assert_eq!(
            dec.decode(&[0x08, 0x00], &mut pcm[..80]),
            Err(OpusError::BufferTooSmall)
        );
        // Concealment durations must be whole 2.5 ms steps.
        assert!(dec.conceal(7, &mut pcm).is_err());
        assert!(dec.conceal(0, &mut pcm).is_err());
        assert_eq!(dec.conceal(160, &mut pcm), Ok(160));
        // Random garbage never panics.
        let mut x = 0x1234_5678u32;
        for len in 1..200 {
            let mut p = vec![0u8; len];
            for b in &mut p {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                *b = x as u8;
            }
            let _ = dec.decode(&p, &mut pcm);
            let _ = dec.decode_fec(&p, 160, &mut pcm);
        }
    }

    #[test]
    fn fec_recovers_a_lost_packet_better_than_plc() {
        let config = OpusConfig {
            packet_loss_percent: 20,
            ..OpusConfig::default()
        };
        let mut enc = OpusEncoder::new(8000, &config).unwrap();
        // A voiced signal: SILK mode, where LBRR lives.
        // A voiced, syllable-modulated signal: SILK's VAD must call it speech, or it codes
        // no LBRR (a steady tone soon counts as background noise).
        let input: Vec<i16> = (0..16000)
            .map(|i| {
                let t = f64::from(i) / 8000.0;
                let f0 = 140.0 + 20.0 * (2.0 * std::f64::consts::PI * 3.0 * t).sin();
                let v: f64 = (1..=8)
                    .map(|h| {
                        (2.0 * std::f64::consts::PI * f0 * f64::from(h) * t).sin() / f64::from(h)
                    })
                    .sum();
                let syllable = 0.55 - 0.45 * (2.0 * std::f64::consts::PI * 4.0 * t).cos();
                (v * syllable * 6000.0) as i16
            })
            .collect();
        let mut packets = Vec::new();
        let mut buf = [0u8; MAX_ENCODED_BYTES];
        for frame in input.chunks(160) {
            let len = enc.encode(frame, &mut buf).unwrap();
            packets.push(buf[..len].to_vec());
        }
        let lost = 60;
        assert!(has_fec(&packets[lost + 1]));
        let run = |use_fec: bool| -> Vec<i16> {
            let mut dec = OpusDecoder::new(8000).unwrap();
            let mut out = Vec::new();
            let mut pcm = [0i16; 960];
            for (i, p) in packets.iter().enumerate() {
                let n = if i == lost {
                    if use_fec {
                        dec.decode_fec(&packets[i + 1], 160, &mut pcm).unwrap()
                    } else {
                        dec.conceal(160, &mut pcm).unwrap()
                    }
                } else {
                    dec.decode(p, &mut pcm).unwrap()
                };
                out.extend_from_slice(&pcm[..n]);
            }
            out
        };
        let clean: Vec<i16> = {
            let mut dec = OpusDecoder::new(8000).unwrap();
            let mut out = Vec::new();
            let mut pcm = [0i16; 960];
            for p in &packets {
                let n = dec.decode(p, &mut pcm).unwrap();
                out.extend_from_slice(&pcm[..n]);
            }
            out
        };
        let err = |x: &[i16]| -> f64 {
            let r = lost * 160..(lost + 2) * 160;
            x[r.clone()]
                .iter()
                .zip(&clean[r])
                .map(|(&a, &b)| (f64::from(a) - f64::from(b)).powi(2))
                .sum()
        };
        let (e_fec, e_plc) = (err(&run(true)), err(&run(false)));
        // Measured: FEC leaves 10-30x less error than PLC over the lost frame and the one
        // after it (packets 20..70); 4x keeps margin while still failing if no LBRR is sent.
        assert!(
            e_fec * 4.0 < e_plc,
            "FEC error {e_fec:.3e} vs PLC error {e_plc:.3e}"
        );
    }
}
