//! The running daemon: start-up and shutdown, the state its tasks share,
//! the one-second sampler, policy and tokens reloads and interface keeping.

pub mod adapt;
pub mod hosts;
pub mod instance;
pub mod links;
pub mod notify;
pub mod ops;
pub mod rates;
pub mod reload;
mod run;
pub mod sampler;
pub mod state;
pub mod tokens;

pub use run::*;
