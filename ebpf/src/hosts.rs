//! Per-host usage inside each OPD ([`jatah_common::HostCount`]): one LRU
//! hash lookup per packet of an OPD, with atomic adds on a hit; a host
//! seen for the first time is entered (and counted in `JATAH_HOSTS_ADDED`).

use aya_ebpf::{
    macros::map,
    maps::{LruHashMap, PerCpuArray},
};
use jatah_common::{AddrKey, Config, FLAG_HOSTS, HOST_ENTRIES, HostCount};

use crate::atomic_add;

#[map]
static JATAH_HOSTS: LruHashMap<AddrKey, HostCount> = LruHashMap::pinned(HOST_ENTRIES, 0);
#[map]
static JATAH_HOSTS_ADDED: PerCpuArray<u64> = PerCpuArray::pinned(1, 0);

/// Only if the entry does not exist yet (`BPF_NOEXIST`): a host another
/// CPU entered meanwhile keeps its counts.
const BPF_NOEXIST: u64 = 1;

/// Counts a packet of `bytes` for host `addr` of OPD `slot`, direction
/// `dir`, when per-host counting is on.
#[inline(always)]
pub(crate) fn count_host(addr: &AddrKey, slot: u32, dir: usize, bytes: u64, cfg: &Config) {
    if cfg.flags & FLAG_HOSTS == 0 || dir > 1 {
        return;
    }
    if let Some(v) = JATAH_HOSTS.get_ptr_mut(addr) {
        // SAFETY: the map value lives while the program runs; other CPUs
        // add to it too, hence atomic adds. The slot is a plain store: a
        // host moved between OPDs by a policy change is counted for the
        // new one from its next packet.
        unsafe {
            atomic_add(&mut (*v).bytes[dir], bytes);
            atomic_add(&mut (*v).packets[dir], 1);
            if (*v).slot != slot {
                (*v).slot = slot;
            }
        }
        return;
    }
    let mut c = HostCount {
        slot,
        ..HostCount::default()
    };
    c.bytes[dir] = bytes;
    c.packets[dir] = 1;
    if JATAH_HOSTS.insert(addr, c, BPF_NOEXIST).is_ok()
        && let Some(n) = JATAH_HOSTS_ADDED.get_ptr_mut(0)
    {
        // SAFETY: per-CPU slot, only this CPU writes it while we run.
        unsafe { *n += 1 };
    }
}
