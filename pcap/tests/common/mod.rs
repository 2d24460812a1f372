//! What the pcap integration tests share.
#![allow(dead_code)]

/// Marsaglia's xorshift64 with a fixed seed: tiny, deterministic (every run tests the same
/// inputs), good enough to pick bytes, lengths and positions.
pub struct XorShift(pub u64);

impl XorShift {
    pub fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    /// A value in `0..n` (0 when `n` is 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}
