//! jatah: per-OPD bandwidth allocation, metrics and fault diagnosis for a
//! regional government gateway.
//!
//! Where things happen: a packet is classified in `ebpf/` (kernel side);
//! [`datapath`] loads those programs and keeps their maps; [`shaper`] builds
//! the HTB classes over rtnetlink; [`gateway`] turns a [`policy`] into both;
//! [`daemon`] runs it all and [`server`] answers HTTP.

#[cfg(feature = "testkit")]
pub mod bench;
pub mod cli;
pub mod datapath;
pub mod diagnosis;
pub mod gateway;
pub mod history;
pub mod http;
pub mod lab;
pub mod policy;
pub mod runtime;
pub mod shaper;
pub(crate) mod sys;
