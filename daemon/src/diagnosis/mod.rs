//! Telling an upstream capacity drop apart from a fault at one OPD: the
//! verdict engine, the signals it is fed each second, the ICMP prober and
//! the reference codes that name a verdict.

mod engine;
pub mod probe;
pub mod reference;
pub mod signals;
mod verdict;

pub use engine::*;
pub use verdict::*;
