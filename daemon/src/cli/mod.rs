//! The command line's client side: talking to a running jatah over HTTP and
//! printing what it says, and keeping the tokens file (`jatah token`).

pub mod client;
pub mod report;
pub mod status;
pub mod tokens;
