//! G.711 µ-law and A-law, bit-exact with the ITU-T G.191 reference (`g711.c` in the Software
//! Tool Library), and the direct µ-law ⇄ A-law transcoding of G.711 Tables 3 and 4.
//!
//! # Sample format
//!
//! Linear samples are 16-bit two's complement. G.711 itself is defined on 13-bit (A-law) and
//! 14-bit (µ-law) linear values, so, as in G.191, the encoders look only at the top bits of
//! each sample: A-law at the 13 MSBs (sign + 12-bit magnitude), µ-law at the 14 MSBs (sign +
//! 13-bit magnitude). The decoders return the interval midpoint of the code, left-justified in
//! 16 bits (A-law ±8 ..= ±32256, µ-law 0 ..= ±32124).
//!
//! # Two G.191 details that decide bit-exactness
//!
//! - **Negative samples are folded with one's complement** (`!x`, i.e. `-x - 1`), not negated.
//!   The decision thresholds are therefore mirrored about -½ rather than 0: -1 encodes like 0
//!   (to the smallest negative code), -16 like 15. Implementations that negate (the widespread
//!   Sun `g711.c`) differ from G.191 on many negative inputs.
//! - **µ-law adds a bias of 33 in 14-bit units** (0x84 = 132 in 16-bit units) before finding the
//!   segment, so that the segment boundaries become powers of two, and it clips the biased
//!   magnitude to 0x1FFF. Every 14-bit magnitude from 7903 up to the 8159-unit overload point
//!   and beyond therefore maps to the top code (decoded as 8031 units = 32124).
//!
//! # Codes that do not round-trip
//!
//! `encode(decode(c)) == c` holds for all 256 A-law codes and for 255 µ-law codes. The
//! exception is µ-law 0x7F, "negative zero": it decodes to 0, and 0 encodes to 0xFF (positive
//! zero). Both decode to the same sample, so no audio is lost.

/// A G.711 companding law.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Law {
    /// µ-law (PCMU), used in North America and Japan.
    Mu,
    /// A-law (PCMA), used in Europe and most IMS networks.
    A,
}

impl Law {
    /// The static RTP payload type of this law (RFC 3551 §6: PCMU = 0, PCMA = 8).
    pub const fn payload_type(self) -> u8 {
        match self {
            Law::Mu => 0,
            Law::A => 8,
        }
    }

    /// The code of the quietest positive level, used to fill gaps with silence.
    pub const fn silence(self) -> u8 {
        match self {
            Law::Mu => 0xFF,
            Law::A => 0xD5,
        }
    }

    /// Encodes `pcm` into `out` with this law; returns the number of samples converted,
    /// `min(pcm.len(), out.len())`.
    pub fn encode(self, pcm: &[i16], out: &mut [u8]) -> usize {
        match self {
            Law::Mu => encode_ulaw(pcm, out),
            Law::A => encode_alaw(pcm, out),
        }
    }

    /// Decodes `codes` into `pcm` with this law; returns the number of samples converted,
    /// `min(codes.len(), pcm.len())`.
    pub fn decode(self, codes: &[u8], pcm: &mut [i16]) -> usize {
        match self {
            Law::Mu => decode_ulaw(codes, pcm),
            Law::A => decode_alaw(codes, pcm),
        }
    }
}

/// Encodes one 16-bit linear sample to µ-law (G.711 §3, G.191 `ulaw_compress`).
pub const fn linear_to_ulaw(sample: i16) -> u8 {
    // Sign bit set means positive; the magnitude is the 14-bit value, one's-complement folded.
    let (sign, magnitude) = if sample >= 0 {
        (0x80, (sample >> 2) as u16)
    } else {
        (0x00, ((!sample) >> 2) as u16)
    };
    // The bias moves the segment edges (31, 95, 223, ... in G.711 Table 2) to powers of two:
    // segment s covers biased values [2^(s+5), 2^(s+6)).
    let mut biased = magnitude + 33;
    if biased > 0x1FFF {
        biased = 0x1FFF;
    }
    // biased is in 33..=8191, so its bit length is 6..=13 and segment is 0..=7.
    let segment = (16 - biased.leading_zeros()) - 6;
    let step = (biased >> (segment + 1)) & 0x0F;
    // µ-law transmits the segment and step inverted (G.711 Table 2, note on character signals).
    let code = ((segment << 4) as u16 | step) ^ 0x7F;
    code as u8 | sign
}

/// Encodes one 16-bit linear sample to A-law (G.711 §2, G.191 `alaw_compress`).
pub const fn linear_to_alaw(sample: i16) -> u8 {
    let (sign, magnitude) = if sample >= 0 {
        (0x80, (sample >> 4) as u16)
    } else {
        (0x00, ((!sample) >> 4) as u16)
    };
    // magnitude is 12 bits. Segments 0 and 1 share one step size, so below 32 the code is the
    // magnitude itself; above, segment s (2..=7) covers [2^(s+3), 2^(s+4)).
    let code = if magnitude < 32 {
        magnitude
    } else {
        let segment = 12 - magnitude.leading_zeros();
        (segment << 4) as u16 | ((magnitude >> (segment - 1)) & 0x0F)
    };
    // G.711 §2: the even bits are inverted on the line.
    (code as u8 | sign) ^ 0x55
}

/// Decodes one µ-law code to a 16-bit linear sample (G.191 `ulaw_expand`).
pub fn ulaw_to_linear(code: u8) -> i16 {
    ULAW_TO_LINEAR[usize::from(code)]
}

/// Decodes one A-law code to a 16-bit linear sample (G.191 `alaw_expand`).
pub fn alaw_to_linear(code: u8) -> i16 {
    ALAW_TO_LINEAR[usize::from(code)]
}

/// Converts one µ-law code to A-law per G.711 Table 3 (µ-law → A-law).
pub fn ulaw_to_alaw_code(code: u8) -> u8 {
    ULAW_TO_ALAW[usize::from(code)]
}

/// Converts one A-law code to µ-law per G.711 Table 4 (A-law → µ-law).
pub fn alaw_to_ulaw_code(code: u8) -> u8 {
    ALAW_TO_ULAW[usize::from(code)]
}

/// Encodes linear samples to µ-law; returns the number converted, `min(pcm.len(), out.len())`.
pub fn encode_ulaw(pcm: &[i16], out: &mut [u8]) -> usize {
    let mut n = 0;
    for (o, &s) in out.iter_mut().zip(pcm) {
        *o = linear_to_ulaw(s);
        n += 1;
    }
    n
}

/// Decodes µ-law to linear samples; returns the number converted, `min(codes.len(), pcm.len())`.
pub fn decode_ulaw(codes: &[u8], pcm: &mut [i16]) -> usize {
    let mut n = 0;
    for (p, &c) in pcm.iter_mut().zip(codes) {
        *p = ulaw_to_linear(c);
        n += 1;
    }
    n
}

/// Encodes linear samples to A-law; returns the number converted, `min(pcm.len(), out.len())`.
pub fn encode_alaw(pcm: &[i16], out: &mut [u8]) -> usize {
    let mut n = 0;
    for (o, &s) in out.iter_mut().zip(pcm) {
        *o = linear_to_alaw(s);
        n += 1;
    }
    n
}

/// Decodes A-law to linear samples; returns the number converted, `min(codes.len(), pcm.len())`.
pub fn decode_alaw(codes: &[u8], pcm: &mut [i16]) -> usize {
    let mut n = 0;
    for (p, &c) in pcm.iter_mut().zip(codes) {
        *p = alaw_to_linear(c);
        n += 1;
    }
    n
}

/// Transcodes µ-law to A-law without going through linear (G.711 Table 3); returns the number
/// of codes converted, `min(ulaw.len(), alaw.len())`.
pub fn ulaw_to_alaw(ulaw: &[u8], alaw: &mut [u8]) -> usize {
    let mut n = 0;
    for (a, &u) in alaw.iter_mut().zip(ulaw) {
        *a = ulaw_to_alaw_code(u);
        n += 1;
    }
    n
}

/// Transcodes A-law to µ-law without going through linear (G.711 Table 4); returns the number
/// of codes converted, `min(alaw.len(), ulaw.len())`.
pub fn alaw_to_ulaw(alaw: &[u8], ulaw: &mut [u8]) -> usize {
    let mut n = 0;
    for (u, &a) in ulaw.iter_mut().zip(alaw) {
        *u = alaw_to_ulaw_code(a);
        n += 1;
    }
    n
}

// ---------------------------------------------------------------------------------------------
// Tables, all built at compile time.
//
// Both laws are handled through a "magnitude index" 0..=127 (0 = quietest level), which is the
// G.711 character number for µ-law and the character number minus one for A-law:
//   µ-law code = (0x7F - index) | sign,   A-law code = (index | sign) ^ 0x55,
// with sign = 0x80 for positive levels.

static ULAW_TO_LINEAR: [i16; 256] = build_ulaw_decode_table();
static ALAW_TO_LINEAR: [i16; 256] = build_alaw_decode_table();
static ULAW_TO_ALAW: [u8; 256] = build_ulaw_to_alaw_table();
static ALAW_TO_ULAW: [u8; 256] = build_alaw_to_ulaw_table();

/// Decoded magnitude (16-bit scale) of µ-law magnitude index 0..=127.
const fn ulaw_magnitude(index: u8) -> i32 {
    let segment = (index >> 4) as i32;
    let step = (index & 0x0F) as i32;
    // G.191: (128 << e) + step_size * m + step_size / 2 - 132 with step_size = 8 << e, which
    // factors to ((8m + 132) << e) - 132: the bias is added, shifted, and taken back.
    ((step * 8 + 0x84) << segment) - 0x84
}

/// Decoded magnitude (16-bit scale) of A-law magnitude index 0..=127.
const fn alaw_magnitude(index: u8) -> i32 {
    let segment = (index >> 4) as i32;
    let step = (index & 0x0F) as i32;
    if segment == 0 {
        step * 16 + 8
    } else {
        // Segments above 0 have an implicit leading one above the four step bits.
        ((step + 16) * 16 + 8) << (segment - 1)
    }
}

const fn ulaw_index(code: u8) -> u8 {
    !code & 0x7F
}

const fn alaw_index(code: u8) -> u8 {
    (code ^ 0x55) & 0x7F
}

const fn build_ulaw_decode_table() -> [i16; 256] {
    let mut table = [0i16; 256];
    let mut code = 0usize;
    while code < 256 {
        let magnitude = ulaw_magnitude(ulaw_index(code as u8));
        let value = if code & 0x80 != 0 {
            magnitude
        } else {
            -magnitude
        };
        table[code] = value as i16;
        code += 1;
    }
    table
}

const fn build_alaw_decode_table() -> [i16; 256] {
    let mut table = [0i16; 256];
    let mut code = 0usize;
    while code < 256 {
        let magnitude = alaw_magnitude(alaw_index(code as u8));
        let value = if code & 0x80 != 0 {
            magnitude
        } else {
            -magnitude
        };
        table[code] = value as i16;
        code += 1;
    }
    table
}

/// How far apart µ-law index `u` and A-law index `a` decode, with both laws scaled to their
/// overload points: µ-law 8159 units of 4, A-law 4096 units of 8 (16-bit scale). In units of
/// the overload point, µ/(4·8159) against A/(8·4096); both times 8·4096·8159, that is µ·8192
/// against A·8159.
const fn overload_scaled_distance(u: u8, a: u8) -> i64 {
    let d = ulaw_magnitude(u) as i64 * 8192 - alaw_magnitude(a) as i64 * 8159;
    if d < 0 {
        -d
    } else {
        d
    }
}

/// G.711 Table 3 as magnitude indices. Each µ-law level goes to the A-law level that decodes
/// closest once both laws are scaled to their overload points; this reproduces the table
/// except for µ-law characters 48 and 49, which are near ties (the two candidates differ by
/// under 0.05 A-law units) that the table resolves upward. Those two entries are set from it.
const fn ulaw_to_alaw_indices() -> [u8; 128] {
    let mut map = [0u8; 128];
    let mut u = 0u8;
    while u < 128 {
        let mut best = 0u8;
        let mut a = 1u8;
        while a < 128 {
            if overload_scaled_distance(u, a) < overload_scaled_distance(u, best) {
                best = a;
            }
            a += 1;
        }
        map[u as usize] = best;
        u += 1;
    }
    map[48] = 45;
    map[49] = 47;
    map
}

/// G.711 Table 4 as magnitude indices: each A-law level goes to the µ-law level that decodes
/// closest once both laws are scaled to their overload points. This reproduces every entry.
const fn alaw_to_ulaw_indices() -> [u8; 128] {
    let mut map = [0u8; 128];
    let mut a = 0u8;
    while a < 128 {
        let mut best = 0u8;
        let mut u = 1u8;
        while u < 128 {
            if overload_scaled_distance(u, a) < overload_scaled_distance(best, a) {
                best = u;
            }
            u += 1;
        }
        map[a as usize] = best;
        a += 1;
    }
    map
}

const fn build_ulaw_to_alaw_table() -> [u8; 256] {
    let map = ulaw_to_alaw_indices();
    let mut table = [0u8; 256];
    let mut code = 0usize;
    while code < 256 {
        let sign = code as u8 & 0x80;
        table[code] = (map[ulaw_index(code as u8) as usize] | sign) ^ 0x55;
        code += 1;
    }
    table
}

const fn build_alaw_to_ulaw_table() -> [u8; 256] {
    let map = alaw_to_ulaw_indices();
    let mut table = [0u8; 256];
    let mut code = 0usize;
    while code < 256 {
        let sign = code as u8 & 0x80;
        table[code] = (0x7F - map[alaw_index(code as u8) as usize]) | sign;
        code += 1;
    }
    table
}

#[cfg(test)]
mod tests {
    use super::*;

    // ---- Independent reference, written from G.711 Tables 1 and 2 ----------------------------
    //
    // The tables give, per segment, the first decision value and the step between levels, in
    // each law's own units (A-law: 4096 units to overload, µ-law: 8159). One A-law unit is 8 in
    // 16-bit terms, one µ-law unit is 4.

    /// A-law segment (1..=8 in G.711 numbering, 0..=7 here): first decision value and step.
    const A_SEGMENTS: [(i32, i32); 8] = [
        (0, 2),
        (32, 2),
        (64, 4),
        (128, 8),
        (256, 16),
        (512, 32),
        (1024, 64),
        (2048, 128),
    ];
    /// µ-law segments: first decision value and step. Segment 0's first level is the single
    /// value 0 (interval 0..1); its other 15 levels start at 1 with step 2.
    const MU_SEGMENTS: [(i32, i32); 8] = [
        (-1, 2),
        (31, 4),
        (95, 8),
        (223, 16),
        (479, 32),
        (991, 64),
        (2015, 128),
        (4063, 256),
    ];

    /// Lower decision value (16-bit scale) of A-law level n (0 = quietest).
    fn a_lower(n: usize) -> i32 {
        let (start, step) = A_SEGMENTS[n / 16];
        (start + step * (n % 16) as i32) * 8
    }
    fn a_output(n: usize) -> i32 {
        let (_, step) = A_SEGMENTS[n / 16];
        a_lower(n) + step * 4
    }
    fn mu_lower(n: usize) -> i32 {
        if n == 0 {
            return 0;
        }
        let (start, step) = MU_SEGMENTS[n / 16];
        (start + step * (n % 16) as i32) * 4
    }
    fn mu_output(n: usize) -> i32 {
        if n == 0 {
            return 0;
        }
        let (_, step) = MU_SEGMENTS[n / 16];
        mu_lower(n) + step * 2
    }
    fn mu_step(n: usize) -> i32 {
        MU_SEGMENTS[n / 16].1 * 4
    }
    fn a_step(n: usize) -> i32 {
        A_SEGMENTS[n / 16].1 * 8
    }

    fn mu_code(level: usize, positive: bool) -> u8 {
        (0x7F - level as u8) | if positive { 0x80 } else { 0 }
    }
    fn a_code(level: usize, positive: bool) -> u8 {
        (level as u8 | if positive { 0x80 } else { 0 }) ^ 0x55
    }

    /// Reference encoder: find the decision interval that holds the (one's-complement folded)
    /// magnitude, by search over the lower decision values.
    fn reference_encode(x: i16, lower: fn(usize) -> i32, code: fn(usize, bool) -> u8) -> u8 {
        let positive = x >= 0;
        let magnitude = if positive {
            i32::from(x)
        } else {
            i32::from(!x)
        };
        let level = (0..128).rev().find(|&n| lower(n) <= magnitude).unwrap_or(0);
        code(level, positive)
    }

    // ---- Decoding -------------------------------------------------------------------------

    #[test]
    fn ulaw_decode_table_matches_g711_table_2() {
        for level in 0..128 {
            let out = mu_output(level);
            assert_eq!(
                i32::from(ulaw_to_linear(mu_code(level, true))),
                out,
                "level {level}"
            );
            assert_eq!(
                i32::from(ulaw_to_linear(mu_code(level, false))),
                -out,
                "level {level}"
            );
        }
    }

    #[test]
    fn alaw_decode_table_matches_g711_table_1() {
        for level in 0..128 {
            let out = a_output(level);
            assert_eq!(
                i32::from(alaw_to_linear(a_code(level, true))),
                out,
                "level {level}"
            );
            assert_eq!(
                i32::from(alaw_to_linear(a_code(level, false))),
                -out,
                "level {level}"
            );
        }
    }

    #[test]
    fn well_known_decode_values() {
        // µ-law: 0xFF/0x7F are the two zeros, 0x80/0x00 the extremes (8031 units × 4).
        assert_eq!(ulaw_to_linear(0xFF), 0);
        assert_eq!(ulaw_to_linear(0x7F), 0);
        assert_eq!(ulaw_to_linear(0x00), -32124);
        assert_eq!(ulaw_to_linear(0x80), 32124);
        // 0xF0: inverted 0x0F = segment 0, step 15: 1 + 2·14 + 1 = 30 units → 120.
        assert_eq!(ulaw_to_linear(0xF0), 120);
        assert_eq!(ulaw_to_linear(0x70), -120);
        // 0xEF: inverted 0x10 = segment 1, step 0: 31 + 4/2 = 33 units → 132.
        assert_eq!(ulaw_to_linear(0xEF), 132);
        // A-law: 0xD5/0x55 are the smallest levels (1 unit × 8), 0xAA/0x2A the largest.
        assert_eq!(alaw_to_linear(0xD5), 8);
        assert_eq!(alaw_to_linear(0x55), -8);
        assert_eq!(alaw_to_linear(0xAA), 32256);
        assert_eq!(alaw_to_linear(0x2A), -32256);
        // 0x80: 0x80 ^ 0x55 = 0xD5, sign set, index 0x55 = segment 5, step 5:
        // (512 + 32·5 + 32/2) units = 688 → 5504.
        assert_eq!(alaw_to_linear(0x80), 5504);
    }

    // ---- Encoding -------------------------------------------------------------------------

    #[test]
    fn ulaw_encode_every_sample_matches_decision_intervals() {
        for x in i16::MIN..=i16::MAX {
            assert_eq!(
                linear_to_ulaw(x),
                reference_encode(x, mu_lower, mu_code),
                "x = {x}"
            );
        }
    }

    #[test]
    fn alaw_encode_every_sample_matches_decision_intervals() {
        for x in i16::MIN..=i16::MAX {
            assert_eq!(
                linear_to_alaw(x),
                reference_encode(x, a_lower, a_code),
                "x = {x}"
            );
        }
    }

    #[test]
    fn encode_is_monotonic() {
        let mut last_mu = i16::MIN;
        let mut last_a = i16::MIN;
        for x in i16::MIN..=i16::MAX {
            let mu = ulaw_to_linear(linear_to_ulaw(x));
            let a = alaw_to_linear(linear_to_alaw(x));
            assert!(mu >= last_mu, "µ-law not monotonic at {x}");
            assert!(a >= last_a, "A-law not monotonic at {x}");
            last_mu = mu;
            last_a = a;
        }
    }

    #[test]
    fn quantization_error_is_at_most_half_a_step() {
        for x in i16::MIN..=i16::MAX {
            // The fold maps x < 0 to -x - 1, so compare on the folded magnitude.
            let folded = if x >= 0 { i32::from(x) } else { i32::from(!x) };

            let code = linear_to_alaw(x);
            let level = usize::from(alaw_index(code));
            let out = i32::from(alaw_to_linear(code)).abs();
            // A-law's last interval reaches 32768, so there is no overload region in 16 bits.
            assert!((folded - out).abs() <= a_step(level) / 2, "A-law x = {x}");

            let code = linear_to_ulaw(x);
            let level = usize::from(ulaw_index(code));
            let out = i32::from(ulaw_to_linear(code)).abs();
            if folded < 8159 * 4 {
                assert!((folded - out).abs() <= mu_step(level) / 2, "µ-law x = {x}");
            } else {
                // Beyond the overload point µ-law saturates at its top level.
                assert_eq!(level, 127, "µ-law x = {x}");
            }
        }
    }

    #[test]
    fn encode_of_decode_is_identity_except_ulaw_negative_zero() {
        for code in 0..=255u8 {
            assert_eq!(
                linear_to_alaw(alaw_to_linear(code)),
                code,
                "A-law {code:#04x}"
            );
            let expect = if code == 0x7F { 0xFF } else { code };
            assert_eq!(
                linear_to_ulaw(ulaw_to_linear(code)),
                expect,
                "µ-law {code:#04x}"
            );
        }
    }

    #[test]
    fn g191_one_complement_fold_on_negative_samples() {
        // -1 folds to magnitude 0: the smallest negative level, not the next one up.
        assert_eq!(linear_to_ulaw(-1), 0x7F);
        assert_eq!(linear_to_ulaw(-4), 0x7F);
        assert_eq!(linear_to_ulaw(-5), 0x7E);
        assert_eq!(linear_to_alaw(-1), 0x55);
        assert_eq!(linear_to_alaw(-16), 0x55);
        assert_eq!(linear_to_alaw(-17), 0x54);
        assert_eq!(linear_to_ulaw(i16::MIN), 0x00);
        assert_eq!(linear_to_ulaw(i16::MAX), 0x80);
        assert_eq!(linear_to_alaw(i16::MIN), 0x2A);
        assert_eq!(linear_to_alaw(i16::MAX), 0xAA);
    }

    // ---- Transcoding ----------------------------------------------------------------------

    /// G.711 Table 3 (µ-law → A-law), in the standard's character numbers: entry n is the
    /// A-law character (1..=128) for µ-law character n (0..=127).
    const TABLE_3: [u8; 128] = [
        1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7, 8, 8, //
        9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, //
        25, 27, 29, 31, 33, 34, 35, 36, 37, 38, 39, 40, 41, 42, 43, 44, //
        46, 48, 49, 50, 51, 52, 53, 54, 55, 56, 57, 58, 59, 60, 61, 62, //
        64, 65, 66, 67, 68, 69, 70, 71, 72, 73, 74, 75, 76, 77, 78, 79, //
        80, 82, 83, 84, 85, 86, 87, 88, 89, 90, 91, 92, 93, 94, 95, 96, //
        97, 98, 99, 100, 101, 102, 103, 104, 105, 106, 107, 108, 109, 110, 111, 112, //
        113, 114, 115, 116, 117, 118, 119, 120, 121, 122, 123, 124, 125, 126, 127, 128,
    ];

    /// G.711 Table 4 (A-law → µ-law): entry n-1 is the µ-law character for A-law character n.
    const TABLE_4: [u8; 128] = [
        1, 3, 5, 7, 9, 11, 13, 15, 16, 17, 18, 19, 20, 21, 22, 23, //
        24, 25, 26, 27, 28, 29, 30, 31, 32, 32, 33, 33, 34, 34, 35, 35, //
        36, 37, 38, 39, 40, 41, 42, 43, 44, 45, 46, 47, 48, 48, 49, 49, //
        50, 51, 52, 53, 54, 55, 56, 57, 58, 59, 60, 61, 62, 63, 64, 64, //
        65, 66, 67, 68, 69, 70, 71, 72, 73, 74, 75, 76, 77, 78, 79, 80, //
        80, 81, 82, 83, 84, 85, 86, 87, 88, 89, 90, 91, 92, 93, 94, 95, //
        96, 97, 98, 99, 100, 101, 102, 103, 104, 105, 106, 107, 108, 109, 110, 111, //
        112, 113, 114, 115, 116, 117, 118, 119, 120, 121, 122, 123, 124, 125, 126, 127,
    ];

    #[test]
    fn ulaw_to_alaw_matches_g711_table_3() {
        for (mu_char, &a_char) in TABLE_3.iter().enumerate() {
            for positive in [true, false] {
                let mu = mu_code(mu_char, positive);
                let a = a_code(usize::from(a_char) - 1, positive);
                assert_eq!(ulaw_to_alaw_code(mu), a, "µ-law character {mu_char}");
            }
        }
    }

    #[test]
    fn alaw_to_ulaw_matches_g711_table_4() {
        for (a_index, &mu_char) in TABLE_4.iter().enumerate() {
            for positive in [true, false] {
                let a = a_code(a_index, positive);
                let mu = mu_code(usize::from(mu_char), positive);
                assert_eq!(alaw_to_ulaw_code(a), mu, "A-law character {}", a_index + 1);
            }
        }
    }

    #[test]
    fn well_known_transcodings() {
        // Silence maps to silence both ways; the extremes map to the extremes.
        assert_eq!(ulaw_to_alaw_code(0xFF), 0xD5);
        assert_eq!(ulaw_to_alaw_code(0x7F), 0x55);
        assert_eq!(alaw_to_ulaw_code(0xD5), 0xFE);
        assert_eq!(ulaw_to_alaw_code(0x80), 0xAA);
        assert_eq!(alaw_to_ulaw_code(0xAA), 0x80);
        assert_eq!(alaw_to_ulaw_code(0x2A), 0x00);
    }

    #[test]
    fn slice_apis_convert_the_common_length() {
        let pcm = [0i16, 1000, -1000, i16::MAX, i16::MIN];
        let mut codes = [0u8; 3];
        assert_eq!(encode_ulaw(&pcm, &mut codes), 3);
        assert_eq!(codes, [0xFF, linear_to_ulaw(1000), linear_to_ulaw(-1000)]);
        let mut back = [7i16; 5];
        assert_eq!(decode_ulaw(&codes, &mut back), 3);
        assert_eq!(back[3..], [7, 7]);
        let mut a = [0u8; 5];
        assert_eq!(encode_alaw(&pcm, &mut a), 5);
        let mut u = [0u8; 5];
        assert_eq!(alaw_to_ulaw(&a, &mut u), 5);
        let mut a2 = [0u8; 4];
        assert_eq!(ulaw_to_alaw(&u, &mut a2), 4);
        assert_eq!(decode_alaw(&a2, &mut back), 4);
        assert_eq!(Law::A.payload_type(), 8);
        assert_eq!(Law::Mu.payload_type(), 0);
        assert_eq!(Law::A.decode(&[Law::A.silence()], &mut back), 1);
        assert_eq!(back[0], 8);
        assert_eq!(Law::Mu.encode(&[0], &mut a), 1);
        assert_eq!(a[0], Law::Mu.silence());
    }
}
