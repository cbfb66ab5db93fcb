//! The command line's client side: talking to a running jatah over HTTP and
//! printing what it says, keeping the tokens file (`jatah token`), and the
//! man pages and shell completions generated from the command line.

pub mod client;
pub mod report;
pub mod docs;
pub mod status;
pub mod tokens;
