//! A deterministic random source for the diagnosis tests' generated
//! traffic (no crate, the same sequence on every run).

/// xorshift64: deterministic, no crate.
pub(super) struct Rng(pub(super) u64);

impl Rng {
    pub(super) fn new(seed: u64) -> Self {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    pub(super) fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    /// Uniform in [0, 1).
    pub(super) fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform in [mean·(1−jitter), mean·(1+jitter)].
    pub(super) fn around(&mut self, mean: f64, jitter: f64) -> f64 {
        mean * (1.0 + jitter * (2.0 * self.unit() - 1.0))
    }
}
