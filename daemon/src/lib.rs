//! jatah: per-OPD bandwidth allocation, metrics and fault diagnosis for a
//! regional government gateway.
//!
//! Where things happen: a packet is classified in `ebpf/` (kernel side);
//! [`datapath`] loads those programs and keeps their maps; [`shaper`] builds
//! the HTB classes over rtnetlink; [`gateway`] turns a [`policy`] into both;
//! [`daemon`] runs it all and [`server`] answers HTTP.

pub mod api;
pub mod auth;
pub mod bench;
pub mod client;
pub mod daemon;
pub mod datapath;
pub mod diagnosis;
pub mod exposition;
pub mod gateway;
pub mod history;
pub mod instance;
pub mod lab;
pub mod links;
pub mod metrics;
pub mod netns;
pub mod plan;
pub mod policy;
pub mod probe;
pub mod problem;
pub mod rates;
pub mod reference;
pub mod reload;
pub mod schedule;
pub mod server;
pub mod shaper;
pub mod status;
pub mod status_page;
pub mod watch;
