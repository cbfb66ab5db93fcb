//! Per-host usage inside each OPD: bytes and packets each way per host
//! address, in a bounded map the kernel keeps least-recently-used.
//!
//! The key is the host's address as an [`crate::AddrKey`] (IPv4 mapped
//! into IPv6). An IPv6 host is counted per address, not per /64: an
//! office's LAN is usually one /64, so a /64 would be the whole office;
//! the cost is that a host using temporary (privacy) addresses shows as a
//! few addresses over a day.

/// Config flag: count per-host usage.
pub const FLAG_HOSTS: u32 = 16;

/// Hosts the map holds; beyond this the least recently seen is evicted
/// (a regency's gateway has a few thousand hosts).
pub const HOST_ENTRIES: u32 = 32_768;

/// A host's packets are counted first in its entry of the per-CPU address
/// cache (plain adds into memory the classifier reads anyway) and moved
/// into the shared LRU table every this many packets, or when another
/// address takes the cache entry: one hash lookup per 64 packets instead
/// of one per packet. The daemon reads both, so nothing waits to be seen.
pub const HOST_FLUSH_PACKETS: u64 = 64;

/// One host's counters since it entered the map. Shared between CPUs:
/// updated with atomic adds.
#[repr(C)]
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct HostCount {
    /// Download first (`DOWNLOAD`, `UPLOAD` index these).
    pub bytes: [u64; 2],
    pub packets: [u64; 2],
    /// The OPD slot the host's last packet was counted for.
    pub slot: u32,
    pub _pad: u32,
}

/// Names of the per-host maps.
pub mod host_maps {
    /// Host address -> [`super::HostCount`] (LRU hash).
    pub const HOSTS: &str = "JATAH_HOSTS";
    /// Per CPU, one entry: hosts entered into [`HOSTS`]. The daemon never
    /// deletes from it, so entries made less entries held is the number
    /// the kernel evicted.
    pub const HOSTS_ADDED: &str = "JATAH_HOSTS_ADDED";
}

const _: () = assert!(core::mem::size_of::<HostCount>() == 40);

#[cfg(feature = "user")]
mod pod {
    // SAFETY: repr(C), Copy, no padding (asserted above).
    unsafe impl aya::Pod for super::HostCount {}
}
