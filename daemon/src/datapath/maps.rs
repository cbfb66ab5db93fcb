//! Reading the pinned maps: counters, statistics and round-trip histograms
//! by slot, one entry at a time or every slot in one batch.

use std::collections::BTreeMap;
use std::path::Path;

use aya::maps::{Array, MapData, PerCpuArray};
use jatah_common::{
    Counters, RttHistogram, SIDES, STAT_COUNT, SlotOwner, TcpLoss, map_names, rtt_index,
};
use tracing::{debug, warn};

use super::{DatapathError, map_err, pin_dir};

/// Read-only view of the counters a running jatah pinned under a bpffs, for
/// tools outside the daemon (the lab, tests).
pub struct PinnedCounters {
    reader: CounterReader,
    owners: Array<MapData, SlotOwner>,
}

/// Opens a map jatah pinned under `bpffs`.
fn open_pinned(bpffs: &Path, name: &str) -> Result<MapData, DatapathError> {
    let path = pin_dir(bpffs).join(name);
    MapData::from_pin(&path).map_err(map_err(format!("opening pinned map {}", path.display())))
}

impl PinnedCounters {
    pub fn open(bpffs: &Path) -> Result<Self, DatapathError> {
        let owners = Array::try_from(aya::maps::Map::Array(open_pinned(
            bpffs,
            map_names::SLOT_OWNERS,
        )?))
        .map_err(map_err("slot owners"))?;
        Ok(PinnedCounters {
            reader: CounterReader::open(bpffs)?,
            owners,
        })
    }

    /// The slot of every OPD, by id.
    pub fn slots(&self) -> Result<BTreeMap<String, u32>, DatapathError> {
        let mut out = BTreeMap::new();
        for (slot, owner) in self.owners.iter().enumerate() {
            if let Some(id) = owner_id(&owner.map_err(map_err("reading slot owners"))?) {
                out.insert(id, slot as u32);
            }
        }
        Ok(out)
    }

    /// Counters of every OPD with a slot, by id, summed over CPUs.
    pub fn by_opd(&self) -> Result<BTreeMap<String, Counters>, DatapathError> {
        self.slots()?
            .into_iter()
            .map(|(id, slot)| Ok((id, self.reader.read(slot)?)))
            .collect()
    }

    /// Counters of traffic that matched no OPD.
    #[cfg(any(test, feature = "testkit"))]
    pub fn unclassified(&self) -> Result<Counters, DatapathError> {
        self.reader.read(jatah_common::SLOT_UNCLASSIFIED)
    }
}

/// Reads counters from the pinned maps by slot, for the metrics collector
/// and the rate sampler (which run beside the loader, not through it).
pub struct CounterReader {
    counters: PerCpuArray<MapData, Counters>,
    stats: PerCpuArray<MapData, u64>,
    rtt: Array<MapData, RttHistogram>,
    tcp: PerCpuArray<MapData, TcpLoss>,
    misplaced: PerCpuArray<MapData, u64>,
    visits: aya::maps::HashMap<MapData, jatah_common::VisitKey, jatah_common::Place>,
    hosts: aya::maps::HashMap<MapData, jatah_common::AddrKey, jatah_common::HostCount>,
    hosts_added: PerCpuArray<MapData, u64>,
    cache: PerCpuArray<MapData, jatah_common::CacheEntry>,
}

impl CounterReader {
    pub fn open(bpffs: &Path) -> Result<Self, DatapathError> {
        use aya::maps::Map;
        Ok(CounterReader {
            counters: PerCpuArray::try_from(Map::PerCpuArray(open_pinned(
                bpffs,
                map_names::COUNTERS,
            )?))
            .map_err(map_err("counters"))?,
            stats: PerCpuArray::try_from(Map::PerCpuArray(open_pinned(bpffs, map_names::STATS)?))
                .map_err(map_err("stats"))?,
            rtt: Array::try_from(Map::Array(open_pinned(bpffs, map_names::RTT)?))
                .map_err(map_err("rtt"))?,
            tcp: PerCpuArray::try_from(Map::PerCpuArray(open_pinned(
                bpffs,
                map_names::TCP_LOSS,
            )?))
            .map_err(map_err("TCP retransmissions"))?,
            misplaced: PerCpuArray::try_from(Map::PerCpuArray(open_pinned(
                bpffs,
                jatah_common::place_maps::MISPLACED,
            )?))
            .map_err(map_err("misplaced packets"))?,
            visits: aya::maps::HashMap::try_from(Map::LruHashMap(open_pinned(
                bpffs,
                jatah_common::place_maps::VISITS,
            )?))
            .map_err(map_err("status page visits"))?,
            hosts: aya::maps::HashMap::try_from(Map::LruHashMap(open_pinned(
                bpffs,
                jatah_common::host_maps::HOSTS,
            )?))
            .map_err(map_err("per-host counters"))?,
            hosts_added: PerCpuArray::try_from(Map::PerCpuArray(open_pinned(
                bpffs,
                jatah_common::host_maps::HOSTS_ADDED,
            )?))
            .map_err(map_err("hosts entered"))?,
            cache: PerCpuArray::try_from(Map::PerCpuArray(open_pinned(bpffs, map_names::CACHE)?))
                .map_err(map_err("address cache"))?,
        })
    }

    /// Every host's counters: its entry in the per-host table plus what
    /// each CPU's address cache counted for it and has not moved there
    /// yet (at most `HOST_FLUSH_PACKETS` packets per CPU); and how many
    /// hosts the table itself holds. A host the kernel evicts while the
    /// table is walked may be missed; one whose counts move between the
    /// two reads is short by them until the next read.
    pub fn hosts(&self) -> (Vec<(jatah_common::AddrKey, jatah_common::HostCount)>, usize) {
        let mut all: std::collections::HashMap<jatah_common::AddrKey, jatah_common::HostCount> =
            self.hosts.iter().filter_map(Result::ok).collect();
        let held = all.len();
        for i in 0..jatah_common::CACHE_ENTRIES {
            let Ok(per_cpu) = self.cache.get(&i, 0) else {
                continue;
            };
            for e in per_cpu.iter() {
                if e.packets == [0, 0] || e.slot >= jatah_common::MAX_OPDS {
                    continue;
                }
                let h = all.entry(e.addr).or_insert(jatah_common::HostCount {
                    slot: e.slot,
                    ..Default::default()
                });
                for d in 0..2 {
                    h.bytes[d] += e.bytes[d];
                    h.packets[d] += e.packets[d];
                }
            }
        }
        (all.into_iter().collect(), held)
    }

    /// Hosts ever entered into the per-host map, summed over CPUs.
    pub fn hosts_added(&self) -> Result<u64, DatapathError> {
        let v = self
            .hosts_added
            .get(&0, 0)
            .map_err(map_err("reading hosts entered"))?;
        Ok(v.iter().sum())
    }

    /// Packets from slot's addresses that came in where it is not bound,
    /// summed over CPUs.
    pub fn misplaced(&self, slot: u32) -> Result<u64, DatapathError> {
        let v = self
            .misplaced
            .get(&slot, 0)
            .map_err(map_err(format!("reading misplaced packets of slot {slot}")))?;
        Ok(v.iter().sum())
    }

    /// Where the connection to the status page from `peer` came in (its
    /// SYN as the LAN side noted it), if it is still remembered.
    pub fn visit_place(&self, peer: std::net::SocketAddr) -> Option<jatah_common::Place> {
        let key = jatah_common::VisitKey {
            addr: crate::datapath::addr_key(peer.ip()),
            port: peer.port(),
            _pad: 0,
        };
        self.visits.get(&key, 0).ok()
    }

    /// Counters of a slot (or [`SLOT_UNCLASSIFIED`]), summed over CPUs.
    pub fn read(&self, slot: u32) -> Result<Counters, DatapathError> {
        let v = self
            .counters
            .get(&slot, 0)
            .map_err(map_err(format!("reading counters of slot {slot}")))?;
        Ok(sum_counters(v.iter()))
    }

    /// Retransmissions in the sampled TCP connections of a slot, summed
    /// over CPUs.
    pub fn tcp_loss(&self, slot: u32) -> Result<TcpLoss, DatapathError> {
        let v = self
            .tcp
            .get(&slot, 0)
            .map_err(map_err(format!("reading TCP retransmissions of slot {slot}")))?;
        Ok(sum_tcp_loss(v.iter().copied()))
    }

    /// Retransmission counters of slots `0..n`, summed over CPUs, in one
    /// system call.
    pub fn tcp_loss_first(&self, n: u32) -> Result<Vec<TcpLoss>, DatapathError> {
        let cpus = aya::util::nr_cpus()
            .map_err(|(what, e)| DatapathError::Other(format!("{what}: {e}")))?;
        let stride = std::mem::size_of::<TcpLoss>().next_multiple_of(8);
        let raw = crate::sys::per_cpu_array_lookup_batch(&self.tcp, n).map_err(|e| {
            DatapathError::Other(format!("reading TCP retransmissions of slots 0..{n}: {e}"))
        })?;
        Ok(raw
            .chunks_exact(stride * cpus)
            .map(|per_cpu| {
                sum_tcp_loss(per_cpu.chunks_exact(stride).map(|c| {
                    // SAFETY: TcpLoss is plain old data of `size_of` bytes
                    // at the start of each 8-byte aligned stride;
                    // read_unaligned copes with the Vec's alignment.
                    unsafe { std::ptr::read_unaligned(c.as_ptr() as *const TcpLoss) }
                }))
            })
            .collect())
    }

    /// Handshake round trips of a slot on a side (`SIDE_LAN`/`SIDE_WAN`).
    pub fn rtt(&self, slot: u32, side: u32) -> Result<RttHistogram, DatapathError> {
        self.rtt
            .get(&rtt_index(slot, side), 0)
            .map_err(map_err(format!("reading RTT histogram of slot {slot}")))
    }

    /// Counters of slots `0..n`, summed over CPUs, in one system call
    /// (a scrape of 1,000 OPDs otherwise makes 1,000).
    pub fn read_first(&self, n: u32) -> Result<Vec<Counters>, DatapathError> {
        let cpus = aya::util::nr_cpus()
            .map_err(|(what, e)| DatapathError::Other(format!("{what}: {e}")))?;
        let stride = std::mem::size_of::<Counters>().next_multiple_of(8);
        let raw = crate::sys::per_cpu_array_lookup_batch(&self.counters, n)
            .map_err(|e| DatapathError::Other(format!("reading counters of slots 0..{n}: {e}")))?;
        Ok(raw
            .chunks_exact(stride * cpus)
            .map(|per_cpu| {
                sum_counters(per_cpu.chunks_exact(stride).map(|c| {
                    // SAFETY: Counters is plain old data of `size_of` bytes
                    // at the start of each 8-byte aligned stride.
                    unsafe { &*(c.as_ptr() as *const Counters) }
                }))
            })
            .collect())
    }

    /// Round-trip histograms of slots `0..n` (both sides: index
    /// [`rtt_index`]), in one system call.
    pub fn rtt_first(&self, n: u32) -> Result<Vec<RttHistogram>, DatapathError> {
        let size = std::mem::size_of::<RttHistogram>();
        let raw = crate::sys::array_lookup_batch(&self.rtt, rtt_index(n, 0))
            .map_err(|e| DatapathError::Other(format!("reading RTT histograms: {e}")))?;
        Ok(raw
            .chunks_exact(size)
            // SAFETY: RttHistogram is plain old data; read_unaligned copes
            // with the Vec's alignment.
            .map(|c| unsafe { std::ptr::read_unaligned(c.as_ptr() as *const RttHistogram) })
            .collect())
    }

    /// Data path statistics ([`jatah_common::Stat`] order).
    pub fn stats(&self) -> Result<[u64; STAT_COUNT as usize], DatapathError> {
        let mut out = [0u64; STAT_COUNT as usize];
        for (i, o) in out.iter_mut().enumerate() {
            let v = self
                .stats
                .get(&(i as u32), 0)
                .map_err(map_err("reading stats"))?;
            *o = v.iter().sum();
        }
        Ok(out)
    }
}

/// The OPD id stored in a slot, or None for a free slot.
pub(super) fn owner_id(owner: &SlotOwner) -> Option<String> {
    if owner.id[0] == 0 {
        return None;
    }
    let len = owner
        .id
        .iter()
        .position(|&b| b == 0)
        .unwrap_or(owner.id.len());
    Some(String::from_utf8_lossy(&owner.id[..len]).into_owned())
}

/// One map's entries for the slots below a count (both sides' histograms
/// for round trips: index [`rtt_index`]), read in one batch; entry by
/// entry where the kernel has no batch reads. A failed read leaves the
/// entry out, logged. What a scrape and the per-second sampling read.
pub struct SlotTable<'a, T> {
    reader: Option<&'a CounterReader>,
    batch: Option<Vec<T>>,
    one: fn(&CounterReader, u32) -> Result<T, DatapathError>,
}

impl<'a> SlotTable<'a, Counters> {
    /// Every slot's counters below `slots`, summed over CPUs.
    pub fn counters(reader: Option<&'a CounterReader>, slots: u32) -> Self {
        Self::read(
            reader,
            slots,
            CounterReader::read_first,
            CounterReader::read,
        )
    }
}

impl<'a> SlotTable<'a, RttHistogram> {
    /// Every slot's round-trip histograms below `slots` (both sides).
    pub fn round_trips(reader: Option<&'a CounterReader>, slots: u32) -> Self {
        Self::read(reader, slots, CounterReader::rtt_first, |r, i| {
            r.rtt(i / SIDES, i % SIDES)
        })
    }
}

impl<'a> SlotTable<'a, TcpLoss> {
    /// Every slot's TCP retransmission counters below `slots`.
    pub fn tcp_loss(reader: Option<&'a CounterReader>, slots: u32) -> Self {
        Self::read(
            reader,
            slots,
            CounterReader::tcp_loss_first,
            CounterReader::tcp_loss,
        )
    }
}

impl<'a, T: Clone> SlotTable<'a, T> {
    fn read(
        reader: Option<&'a CounterReader>,
        slots: u32,
        batch: fn(&CounterReader, u32) -> Result<Vec<T>, DatapathError>,
        one: fn(&CounterReader, u32) -> Result<T, DatapathError>,
    ) -> Self {
        let batch = reader
            .filter(|_| slots > 0)
            .and_then(|r| match batch(r, slots) {
                Ok(v) => Some(v),
                Err(e) => {
                    debug!(error = %e, "batch map read unavailable; reading entry by entry");
                    None
                }
            });
        SlotTable { reader, batch, one }
    }

    /// The entry at `index` (a slot; [`rtt_index`] for round trips).
    pub fn get(&self, index: u32) -> Option<T> {
        if let Some(b) = &self.batch {
            return b.get(index as usize).cloned();
        }
        match (self.one)(self.reader?, index) {
            Ok(v) => Some(v),
            Err(e) => {
                warn!(index, error = %e, "reading a BPF map entry");
                None
            }
        }
    }
}

fn sum_tcp_loss(per_cpu: impl Iterator<Item = TcpLoss>) -> TcpLoss {
    let mut total = TcpLoss::default();
    for c in per_cpu {
        for d in 0..2 {
            total.segments[d] += c.segments[d];
            total.payload_bytes[d] += c.payload_bytes[d];
            total.acked_bytes[d] += c.acked_bytes[d];
            for side in 0..2 {
                total.retransmitted[side][d] += c.retransmitted[side][d];
            }
        }
    }
    total
}

fn sum_counters<'a>(per_cpu: impl Iterator<Item = &'a Counters>) -> Counters {
    let mut total = Counters::default();
    for c in per_cpu {
        for d in 0..2 {
            total.bytes[d] += c.bytes[d];
            total.packets[d] += c.packets[d];
        }
    }
    total
}
