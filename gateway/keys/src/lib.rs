//! Where every secret the gateway puts on the wire comes from: SDES-SRTP master keys, ICE
//! passwords and ufrags, and any nonce.
//!
//! A [`KeySource`] can only be built from the operating system's CSPRNG ([`KeySource::os`]).
//! It is deliberately not built from a seed, does not implement `SeedableRng`, and is not a
//! `rand` generator at all, so a seeded `StdRng` (which `rand` also marks `CryptoRng`) cannot
//! be passed where a key is drawn. Key-generating APIs take `&mut KeySource`; the seeded
//! generators of the engines keep the identifiers that replay needs fixed (tags, branches,
//! Call-IDs, tokens) and never reach key material.
//!
//! Every draw is a `getrandom(2)` call: there is no user-space pool to leak, fork or
//! snapshot. Draws happen a few times per call set-up, never per packet.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

use std::fmt;

/// The OS CSPRNG, the only source of secret material. Zero-sized; cloning it clones nothing.
#[derive(Clone)]
pub struct KeySource {
    _os: (),
}

impl fmt::Debug for KeySource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("KeySource(os)")
    }
}

impl KeySource {
    /// The operating system's generator.
    pub fn os() -> KeySource {
        KeySource { _os: () }
    }

    /// Fills `dst` with fresh secret bytes.
    ///
    /// # Panics
    /// When the OS generator fails, which on Linux (`getrandom(2)`, blocking until the pool
    /// is initialised, interrupted calls retried) does not happen on a working kernel. No
    /// key is better than a weak one: the process stops rather than emit predictable keys.
    pub fn fill(&mut self, dst: &mut [u8]) {
        if let Err(e) = getrandom::fill(dst) {
            panic!("the OS random generator failed ({e}); refusing to generate key material");
        }
    }

    /// A fresh secret `u64` (e.g. a tie-breaker that must not be guessable).
    pub fn u64(&mut self) -> u64 {
        let mut b = [0u8; 8];
        self.fill(&mut b);
        u64::from_le_bytes(b)
    }

    /// `len` symbols drawn uniformly from a 64-symbol alphabet: six random bits each, so no
    /// modulo bias (ICE's ice-chars, RFC 8839 §5.4, are exactly 64).
    pub fn token64(&mut self, alphabet: &[u8; 64], len: usize) -> String {
        let mut out = String::with_capacity(len);
        let mut buf = [0u8; 64];
        let mut left = len;
        while left > 0 {
            let n = left.min(buf.len());
            self.fill(&mut buf[..n]);
            out.extend(buf[..n].iter().map(|b| char::from(alphabet[usize::from(b & 63)])));
            left -= n;
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

    #[test]
    fn draws_differ_and_fill_every_byte() {
        let mut k = KeySource::os();
        let (mut a, mut b) = ([0u8; 32], [0u8; 32]);
        k.fill(&mut a);
        k.fill(&mut b);
        assert_ne!(a, b);
        assert_ne!(k.u64(), k.u64());
        // Every byte position takes more than one value over a few hundred draws: no byte
        // is left at its initial zero.
        let mut seen = [[false; 256]; 32];
        for _ in 0..200 {
            k.fill(&mut a);
            for (i, &x) in a.iter().enumerate() {
                seen[i][usize::from(x)] = true;
            }
        }
        assert!(seen.iter().all(|s| s.iter().filter(|&&v| v).count() > 50));
    }

    #[test]
    fn tokens_have_the_length_asked_and_use_the_whole_alphabet() {
        let mut k = KeySource::os();
        for len in [0, 1, 8, 24, 64, 65, 200] {
            let t = k.token64(ALPHABET, len);
            assert_eq!(t.len(), len);
            assert!(t.bytes().all(|c| ALPHABET.contains(&c)));
        }
        let long = k.token64(ALPHABET, 64 * 200);
        for c in ALPHABET {
            assert!(long.as_bytes().contains(c), "{} never drawn", char::from(*c));
        }
        assert_ne!(k.token64(ALPHABET, 24), k.token64(ALPHABET, 24));
    }

    #[test]
    fn debug_shows_no_state() {
        assert_eq!(format!("{:?}", KeySource::os()), "KeySource(os)");
    }
}
