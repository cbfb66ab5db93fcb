//! The command line's client side: talking to a running jatah over HTTP and
//! printing what it says.

pub mod client;
pub mod status;
