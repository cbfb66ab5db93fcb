//! Telling an upstream capacity drop apart from a fault at one OPD: the
//! verdict engine, the verdicts and their sentences, the estimate of what
//! the uplink delivers, the signals it is fed each second, the ICMP prober
//! and the reference codes that name a verdict.

pub mod baseline;
pub mod capacity;
mod engine;
pub mod probe;
pub mod reference;
pub mod signals;
#[cfg(test)]
mod test_rng;
mod verdict;

pub use engine::*;
pub use verdict::*;
