//! Per-host usage inside each OPD ([`jatah_common::HostCount`]). A packet
//! is counted in its host's entry of the per-CPU address cache, which the
//! classifier has just read (two plain adds); every
//! [`HOST_FLUSH_PACKETS`] packets, and when another address takes the
//! entry, the counts move to the shared LRU table `JATAH_HOSTS` (one hash
//! lookup and atomic adds). A host seen for the first time is entered
//! there and counted in `JATAH_HOSTS_ADDED`.

use aya_ebpf::{
    macros::map,
    maps::{LruHashMap, PerCpuArray},
};
use jatah_common::{
    AddrKey, CacheEntry, Config, FLAG_HOSTS, HOST_ENTRIES, HOST_FLUSH_PACKETS, HostCount, MAX_OPDS,
};

use crate::atomic_add;

#[map]
static JATAH_HOSTS: LruHashMap<AddrKey, HostCount> = LruHashMap::pinned(HOST_ENTRIES, 0);
#[map]
static JATAH_HOSTS_ADDED: PerCpuArray<u64> = PerCpuArray::pinned(1, 0);

/// Only if the entry does not exist yet (`BPF_NOEXIST`).
const BPF_NOEXIST: u64 = 1;

/// Counts a packet of `bytes` in direction `dir` for the host whose cache
/// entry `entry` is (as `slot_of` left it), when per-host counting is on.
#[inline(always)]
pub(crate) fn count_host(entry: Option<*mut CacheEntry>, dir: usize, bytes: u64, cfg: &Config) {
    if cfg.flags & FLAG_HOSTS == 0 || dir > 1 {
        return;
    }
    let Some(e) = entry else {
        return;
    };
    // SAFETY: a per-CPU map value, only this CPU touches it while we run.
    unsafe {
        (*e).bytes[dir] += bytes;
        (*e).packets[dir] += 1;
        if (*e).packets[0] + (*e).packets[1] >= HOST_FLUSH_PACKETS {
            flush(&core::ptr::read_volatile(e));
            (*e).bytes = [0; 2];
            (*e).packets = [0; 2];
        }
    }
}

/// Adds what a cache entry counted to its host's entry in the per-host
/// table (entering the host if it is not there).
#[inline(always)]
pub(crate) fn flush(c: &CacheEntry) {
    if c.packets[0] | c.packets[1] == 0 || c.slot >= MAX_OPDS {
        return;
    }
    if add(c) {
        return;
    }
    let h = HostCount {
        bytes: c.bytes,
        packets: c.packets,
        slot: c.slot,
        _pad: 0,
    };
    if JATAH_HOSTS.insert(c.addr, h, BPF_NOEXIST).is_ok() {
        if let Some(n) = JATAH_HOSTS_ADDED.get_ptr_mut(0) {
            // SAFETY: per-CPU slot, only this CPU writes it while we run.
            unsafe { *n += 1 };
        }
    } else {
        // Another CPU entered it meanwhile.
        add(c);
    }
}

/// Adds to the host's existing entry; false if it has none.
#[inline(always)]
fn add(c: &CacheEntry) -> bool {
    let Some(v) = JATAH_HOSTS.get_ptr_mut(c.addr) else {
        return false;
    };
    // SAFETY: the map value lives while the program runs; other CPUs add
    // to it too, hence atomic adds. The slot is a plain store: a host
    // moved to another OPD by a policy change is counted for it from then.
    unsafe {
        for d in 0..2 {
            atomic_add(&mut (*v).bytes[d], c.bytes[d]);
            atomic_add(&mut (*v).packets[d], c.packets[d]);
        }
        if (*v).slot != c.slot {
            (*v).slot = c.slot;
        }
    }
    true
}
