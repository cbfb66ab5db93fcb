//! The kernel data path: loads jatah's TC programs, keeps their maps in step
//! with the policy (OPD slots, prefix tries), attaches the programs with TCX
//! and pins everything under the bpffs so the next start adopts it.
//!
//! Pin layout under `<bpffs>/jatah/v<LAYOUT_VERSION>/`:
//! - one file per map, named as in [`jatah_common::map_names`];
//! - `links/<program>@<interface>`: the TCX links (kernel >= 6.6).

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use aya::maps::lpm_trie::{Key, LpmTrie};
use aya::maps::{Array, MapData, PerCpuArray, PerCpuValues};
use aya::programs::links::{FdLink, PinnedLink};
use aya::programs::tc::{self, SchedClassifierLink, TcAttachOptions};
use aya::programs::{LinkOrder, SchedClassifier, TcAttachType};
use aya::util::KernelVersion;
use aya::{Ebpf, EbpfLoader};
use ipnet::IpNet;
use jatah_common::{
    COUNTER_SLOTS, Config, Counters, FLAG_RTT, LAYOUT_VERSION, MAX_OPDS, RTT_SAMPLE_SHIFT_MAX,
    RTT_SAMPLE_SHIFT_POS, RttHistogram, SLOT_UNCLASSIFIED, STAT_COUNT, SlotOwner, map_names,
    program_names,
};
use tracing::{debug, info, warn};

/// The compiled eBPF object (built by build.rs from ebpf/).
pub static PROGRAM_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/jatah"));

/// bpffs superblock magic (`statfs.f_type`).
const BPF_FS_MAGIC: i64 = 0xcafe_4a11;

/// Errors of the data path, each naming what jatah was doing.
#[derive(Debug, thiserror::Error)]
pub enum DatapathError {
    #[error(
        "{0} is not a bpffs mount; mount one with `mount -t bpf bpf {0}` \
         (or pass --bpffs DIR naming a bpffs mount)"
    )]
    NotBpffs(PathBuf),
    #[error("loading jatah's eBPF programs: {0}")]
    Load(#[from] aya::EbpfError),
    #[error("{what}: {source}")]
    Program {
        what: String,
        #[source]
        source: aya::programs::ProgramError,
    },
    #[error("{what}: {source}")]
    Map {
        what: String,
        #[source]
        source: aya::maps::MapError,
    },
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: io::Error,
    },
    #[error("all {MAX_OPDS} OPD slots are in use")]
    SlotsExhausted,
    #[error("{0}")]
    Other(String),
}

fn io_err(what: impl Into<String>) -> impl FnOnce(io::Error) -> DatapathError {
    let what = what.into();
    move |source| DatapathError::Io { what, source }
}

fn map_err(what: impl Into<String>) -> impl FnOnce(aya::maps::MapError) -> DatapathError {
    let what = what.into();
    move |source| DatapathError::Map { what, source }
}

fn prog_err(what: impl Into<String>) -> impl FnOnce(aya::programs::ProgramError) -> DatapathError {
    let what = what.into();
    move |source| DatapathError::Program { what, source }
}

/// Directory under a bpffs mount where this layout version pins its objects.
pub fn pin_dir(bpffs: &Path) -> PathBuf {
    bpffs.join("jatah").join(format!("v{LAYOUT_VERSION}"))
}

/// Fails with a clear message unless `dir` is a bpffs mount.
pub fn ensure_bpffs(dir: &Path) -> Result<(), DatapathError> {
    if crate::sys::filesystem_magic(dir).ok() != Some(BPF_FS_MAGIC) {
        return Err(DatapathError::NotBpffs(dir.to_path_buf()));
    }
    Ok(())
}

/// One prefix of an OPD, as the tries hold it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Prefix {
    V4([u8; 4], u32),
    V6([u8; 16], u32),
}

impl From<&IpNet> for Prefix {
    fn from(net: &IpNet) -> Self {
        match net.trunc() {
            IpNet::V4(n) => Prefix::V4(n.addr().octets(), n.prefix_len() as u32),
            IpNet::V6(n) => Prefix::V6(n.addr().octets(), n.prefix_len() as u32),
        }
    }
}

/// What the data path is told about one OPD: its id and its prefixes.
#[derive(Debug, Clone)]
pub struct OpdPrefixes {
    pub id: String,
    pub prefixes: Vec<Prefix>,
}

/// Where the programs go.
#[derive(Debug, Clone)]
pub struct Attachment {
    /// LAN-facing shaping device (download HTB; `jatah_dl` on egress,
    /// `jatah_ul_mark` on ingress). For VLAN subinterfaces, their trunk.
    pub lan: String,
    /// WAN interface (upload HTB; `jatah_ul` on egress).
    pub wan: String,
}

/// jatah's loaded programs and maps.
pub struct Datapath {
    ebpf: Ebpf,
    bpffs: PathBuf,
    slots: BTreeMap<String, u32>,
    /// Slots of removed OPDs, kept from reuse until their last counters
    /// have been scraped ([`Datapath::release`]).
    retired: BTreeMap<String, u32>,
    /// What the prefix tries hold, as this process last wrote them (read
    /// from the kernel once): a reload diffs against it without walking
    /// the tries.
    installed: Option<(Prefixes<4>, Prefixes<16>)>,
    reader: CounterReader,
}

impl Datapath {
    /// Loads the programs, re-using maps pinned under `bpffs` by an earlier
    /// run (same slots, counters continue) and pinning new ones there.
    pub fn load_pinned(bpffs: &Path) -> Result<Self, DatapathError> {
        ensure_bpffs(bpffs)?;
        replace_other_layouts(bpffs)?;
        let dir = pin_dir(bpffs);
        fs::create_dir_all(dir.join("links"))
            .map_err(io_err(format!("creating {}", dir.display())))?;
        let ebpf = EbpfLoader::new()
            .default_map_pin_directory(&dir)
            .load(PROGRAM_OBJECT)?;
        let mut dp = Datapath {
            ebpf,
            bpffs: bpffs.to_path_buf(),
            slots: BTreeMap::new(),
            retired: BTreeMap::new(),
            installed: None,
            reader: CounterReader::open(bpffs)?,
        };
        dp.slots = dp.read_owners()?;
        dp.load_programs()?;
        Ok(dp)
    }

    fn load_programs(&mut self) -> Result<(), DatapathError> {
        for name in [
            program_names::DOWNLOAD,
            program_names::UPLOAD_MARK,
            program_names::UPLOAD,
            "jatah_empty",
        ] {
            self.classifier_mut(name)?
                .load()
                .map_err(prog_err(format!("verifying program {name}")))?;
        }
        Ok(())
    }

    /// A loaded classifier by name (tests run them with BPF_PROG_TEST_RUN).
    pub fn classifier(&self, name: &str) -> Result<&SchedClassifier, DatapathError> {
        self.ebpf
            .program(name)
            .ok_or_else(|| DatapathError::Other(format!("program {name} missing from object")))?
            .try_into()
            .map_err(prog_err(format!("program {name}")))
    }

    fn classifier_mut(&mut self, name: &str) -> Result<&mut SchedClassifier, DatapathError> {
        self.ebpf
            .program_mut(name)
            .ok_or_else(|| DatapathError::Other(format!("program {name} missing from object")))?
            .try_into()
            .map_err(prog_err(format!("program {name}")))
    }

    fn map_mut(&mut self, name: &str) -> Result<&mut aya::maps::Map, DatapathError> {
        self.ebpf
            .map_mut(name)
            .ok_or_else(|| DatapathError::Other(format!("map {name} missing from object")))
    }

    fn map(&self, name: &str) -> Result<&aya::maps::Map, DatapathError> {
        self.ebpf
            .map(name)
            .ok_or_else(|| DatapathError::Other(format!("map {name} missing from object")))
    }

    fn read_owners(&self) -> Result<BTreeMap<String, u32>, DatapathError> {
        let owners: Array<&MapData, SlotOwner> =
            Array::try_from(self.map(map_names::SLOT_OWNERS)?).map_err(map_err("slot owners"))?;
        let mut slots = BTreeMap::new();
        for (slot, owner) in owners.iter().enumerate() {
            let owner = owner.map_err(map_err("reading slot owners"))?;
            if let Some(id) = owner_id(&owner) {
                slots.insert(id, slot as u32);
            }
        }
        Ok(slots)
    }

    /// Slots of removed OPDs not yet released, by the OPD's old id.
    pub fn retired(&self) -> &BTreeMap<String, u32> {
        &self.retired
    }

    /// Frees retired slots (their final counters were scraped) for reuse.
    pub fn release(&mut self, slots: &BTreeSet<u32>) {
        self.retired.retain(|_, s| !slots.contains(s));
    }

    /// The slot of every OPD the data path knows, by id.
    pub fn slots(&self) -> &BTreeMap<String, u32> {
        &self.slots
    }

    /// Turns TCP handshake timing (per-OPD LAN/WAN RTT) on or off.
    pub fn set_rtt_tracking(&mut self, on: bool) -> Result<(), DatapathError> {
        let mut cfg = self.config()?;
        cfg.flags = if on {
            cfg.flags | FLAG_RTT
        } else {
            cfg.flags & !FLAG_RTT
        };
        self.write_config(cfg)
    }

    /// Times one TCP connection in `1 << shift` (shift at most
    /// [`RTT_SAMPLE_SHIFT_MAX`]); 0 times every connection.
    pub fn set_rtt_sampling(&mut self, shift: u32) -> Result<(), DatapathError> {
        let mut cfg = self.config()?;
        let field = RTT_SAMPLE_SHIFT_MAX << RTT_SAMPLE_SHIFT_POS;
        cfg.flags =
            (cfg.flags & !field) | ((shift.min(RTT_SAMPLE_SHIFT_MAX)) << RTT_SAMPLE_SHIFT_POS);
        self.write_config(cfg)
    }

    /// Handshake round trips of a slot on a side.
    pub fn rtt(&self, slot: u32, side: u32) -> Result<RttHistogram, DatapathError> {
        self.reader.rtt(slot, side)
    }

    /// Writes the runtime settings (mark bits for upload attribution) and
    /// bumps the cache epoch.
    pub fn set_mark_mask(&mut self, mark_mask: u32) -> Result<(), DatapathError> {
        let mut cfg = self.config()?;
        cfg.mark_mask = mark_mask;
        cfg.mark_shift = if mark_mask == 0 {
            0
        } else {
            mark_mask.trailing_zeros()
        };
        cfg.epoch = cfg.epoch.wrapping_add(1);
        self.write_config(cfg)
    }

    fn config(&self) -> Result<Config, DatapathError> {
        let arr: Array<&MapData, Config> =
            Array::try_from(self.map(map_names::CONFIG)?).map_err(map_err("config map"))?;
        arr.get(&0, 0).map_err(map_err("reading config"))
    }

    fn write_config(&mut self, cfg: Config) -> Result<(), DatapathError> {
        let mut arr: Array<&mut MapData, Config> =
            Array::try_from(self.map_mut(map_names::CONFIG)?).map_err(map_err("config map"))?;
        arr.set(0, cfg, 0).map_err(map_err("writing config"))
    }

    /// Makes the maps hold exactly these OPDs: an OPD already known keeps its
    /// slot and counters; a new one gets a free slot with zeroed counters;
    /// a removed one's slot is freed. Prefix tries are updated in place
    /// (entries added, changed, removed; nothing flushed), then the cache
    /// epoch is bumped so no packet keeps an outdated answer.
    pub fn sync_opds(&mut self, opds: &[OpdPrefixes]) -> Result<(), DatapathError> {
        let wanted: BTreeSet<&str> = opds.iter().map(|o| o.id.as_str()).collect();
        let removed: Vec<(String, u32)> = self
            .slots
            .iter()
            .filter(|(id, _)| !wanted.contains(id.as_str()))
            .map(|(id, s)| (id.clone(), *s))
            .collect();
        // Removed OPDs' slots stay taken (retired) until released.
        let mut used: BTreeSet<u32> = self
            .slots
            .values()
            .chain(self.retired.values())
            .copied()
            .collect();
        let mut new_slots = self.slots.clone();
        for (id, _) in &removed {
            new_slots.remove(id);
        }
        let mut fresh = Vec::new();
        let mut next = 0u32;
        for opd in opds {
            if new_slots.contains_key(&opd.id) {
                continue;
            }
            // An OPD removed and added back before its slot was released
            // takes it back: its counters simply continue.
            if let Some(slot) = self.retired.remove(&opd.id) {
                new_slots.insert(opd.id.clone(), slot);
                self.write_owner(slot, &opd.id)?;
                continue;
            }
            while used.contains(&next) {
                next += 1;
            }
            if next >= MAX_OPDS {
                return Err(DatapathError::SlotsExhausted);
            }
            used.insert(next);
            new_slots.insert(opd.id.clone(), next);
            fresh.push((opd.id.clone(), next));
        }

        // Claim slots first (counters zeroed), then point prefixes at them.
        for (id, slot) in &fresh {
            self.reset_counters(*slot)?;
            self.write_owner(*slot, id)?;
            debug!(opd = %id, slot, "OPD slot assigned");
        }
        let mut want4: Prefixes<4> = BTreeMap::new();
        let mut want6: Prefixes<16> = BTreeMap::new();
        for opd in opds {
            let slot = new_slots[&opd.id];
            for p in &opd.prefixes {
                match *p {
                    Prefix::V4(a, l) => {
                        want4.insert((a, l), slot);
                    }
                    Prefix::V6(a, l) => {
                        want6.insert((a, l), slot);
                    }
                }
            }
        }
        let installed = self.installed.take();
        let (have4, have6) = match installed {
            Some(h) => h,
            None => (
                read_trie(self.map_mut(map_names::PREFIXES_V4)?, "IPv4 prefixes")?,
                read_trie(self.map_mut(map_names::PREFIXES_V6)?, "IPv6 prefixes")?,
            ),
        };
        // On an error the cache stays empty: the next sync reads the tries.
        sync_trie(
            self.map_mut(map_names::PREFIXES_V4)?,
            &have4,
            &want4,
            "IPv4 prefixes",
        )?;
        sync_trie(
            self.map_mut(map_names::PREFIXES_V6)?,
            &have6,
            &want6,
            "IPv6 prefixes",
        )?;
        self.installed = Some((want4.clone(), want6.clone()));
        for (id, slot) in &removed {
            self.write_owner(*slot, "")?;
            self.retired.insert(id.clone(), *slot);
            debug!(opd = %id, slot, "OPD removed; slot retired until its counters are scraped");
        }
        let mut cfg = self.config()?;
        cfg.epoch = cfg.epoch.wrapping_add(1);
        self.write_config(cfg)?;
        self.slots = new_slots;
        Ok(())
    }

    fn write_owner(&mut self, slot: u32, id: &str) -> Result<(), DatapathError> {
        let mut owner = SlotOwner::default();
        let n = id.len().min(owner.id.len());
        owner.id[..n].copy_from_slice(&id.as_bytes()[..n]);
        let mut arr: Array<&mut MapData, SlotOwner> =
            Array::try_from(self.map_mut(map_names::SLOT_OWNERS)?)
                .map_err(map_err("slot owners"))?;
        arr.set(slot, owner, 0)
            .map_err(map_err(format!("writing owner of slot {slot}")))
    }

    fn reset_counters(&mut self, slot: u32) -> Result<(), DatapathError> {
        let ncpu = aya::util::nr_cpus().map_err(|(what, e)| DatapathError::Io {
            what: what.to_string(),
            source: e,
        })?;
        let zero = PerCpuValues::try_from(vec![Counters::default(); ncpu])
            .map_err(io_err("per-CPU values"))?;
        let mut arr: PerCpuArray<&mut MapData, Counters> =
            PerCpuArray::try_from(self.map_mut(map_names::COUNTERS)?)
                .map_err(map_err("counters"))?;
        arr.set(slot, zero, 0)
            .map_err(map_err(format!("zeroing counters of slot {slot}")))
    }

    /// Counters of one slot, summed over CPUs.
    pub fn counters(&self, slot: u32) -> Result<Counters, DatapathError> {
        self.reader.read(slot)
    }

    /// Counters of traffic that matched no OPD.
    pub fn unclassified(&self) -> Result<Counters, DatapathError> {
        self.reader.read(SLOT_UNCLASSIFIED)
    }

    /// Data path statistics ([`jatah_common::Stat`] order), summed over CPUs.
    pub fn stats(&self) -> Result<[u64; STAT_COUNT as usize], DatapathError> {
        self.reader.stats()
    }

    /// The bpffs this data path pins under.
    pub fn bpffs(&self) -> &Path {
        &self.bpffs
    }

    /// Attaches the three classifiers. With TCX (kernel >= 6.6) each link is
    /// pinned; a link pinned by an earlier run is atomically switched to the
    /// new program, so no packet passes unclassified during a restart.
    pub fn attach(&mut self, at: &Attachment) -> Result<(), DatapathError> {
        self.attach_on(at, None)
    }

    /// Attaches the programs that belong on interface `only` (all of them
    /// when None). An interface that was deleted and created again has a
    /// new ifindex: its old links died with it, so their pins are dropped
    /// and new links made.
    pub fn attach_on(&mut self, at: &Attachment, only: Option<&str>) -> Result<(), DatapathError> {
        let tcx = KernelVersion::current().is_ok_and(|v| v >= KernelVersion::new(6, 6, 0));
        for (prog, iface, kind) in [
            (program_names::DOWNLOAD, &at.lan, TcAttachType::Egress),
            (program_names::UPLOAD_MARK, &at.lan, TcAttachType::Ingress),
            (program_names::UPLOAD, &at.wan, TcAttachType::Egress),
        ] {
            if only.is_some_and(|o| o != iface.as_str()) {
                continue;
            }
            if tcx {
                self.attach_tcx(prog, iface, kind)?;
            } else {
                // Older kernels: netlink clsact, not pinnable.
                if let Err(e) = tc::qdisc_add_clsact(iface)
                    && !matches!(&e, tc::TcError::AlreadyAttached)
                {
                    debug!(%iface, error = %e, "clsact not added (may already exist)");
                }
                let p = self.classifier_mut(prog)?;
                p.attach(iface, kind)
                    .map_err(prog_err(format!("attaching {prog} to {iface}")))?;
            }
            info!(program = prog, interface = %iface, direction = ?kind, tcx, "classifier attached");
        }
        Ok(())
    }

    fn link_pin(&self, prog: &str, iface: &str) -> PathBuf {
        pin_dir(&self.bpffs)
            .join("links")
            .join(format!("{prog}@{iface}"))
    }

    fn attach_tcx(
        &mut self,
        prog: &str,
        iface: &str,
        kind: TcAttachType,
    ) -> Result<(), DatapathError> {
        let pin = self.link_pin(prog, iface);
        let what = format!("attaching {prog} to {iface} ({kind:?})");
        let existing = pin.exists().then(|| PinnedLink::from_pin(&pin));
        let program = self.classifier_mut(prog)?;
        // Switch the pinned link to this program in place (no moment
        // without a classifier). A link whose interface is gone (deleted and
        // created again since) cannot be switched: attach anew.
        let switched = match existing {
            Some(Ok(old)) => SchedClassifierLink::try_from(FdLink::from(old))
                .map_err(|e| e.to_string())
                .and_then(|link| program.attach_to_link(link).map_err(|e| e.to_string()))
                .map_err(|e| {
                    warn!(
                        program = prog,
                        interface = iface,
                        error = %e,
                        "pinned link is defunct (its interface was recreated?); attaching anew"
                    )
                })
                .ok(),
            _ => None,
        };
        if switched.is_none() && pin.exists() {
            fs::remove_file(&pin)
                .map_err(|e| DatapathError::Other(format!("removing {}: {e}", pin.display())))?;
        }
        let link_id = match switched {
            Some(id) => id,
            None => program
                .attach_with_options(iface, kind, TcAttachOptions::TcxOrder(LinkOrder::default()))
                .map_err(prog_err(&what))?,
        };
        let link = program.take_link(link_id).map_err(prog_err(&what))?;
        let fd: FdLink = link
            .try_into()
            .map_err(|e: aya::programs::links::LinkError| {
                DatapathError::Other(format!("{what}: {e}"))
            })?;
        // A link switched in place is already pinned.
        if !pin.exists() {
            fd.pin(&pin)
                .map_err(|e| DatapathError::Other(format!("pinning {}: {e}", pin.display())))?;
        }
        Ok(())
    }

    /// Runs a classifier once on a crafted frame with BPF_PROG_TEST_RUN.
    /// Returns the program's return value and the `__sk_buff` it left.
    pub fn test_run(
        &self,
        prog: &str,
        frame: &[u8],
        ctx: &SkbContext,
        repeat: u32,
    ) -> Result<(i32, SkbContext, std::time::Duration), DatapathError> {
        use aya::programs::{TestRun, TestRunOptions};
        let p = self.classifier(prog)?;
        let ctx_in = ctx.to_bytes();
        let mut ctx_out = [0u8; SKB_CTX_LEN];
        let mut data_out = vec![0u8; frame.len() + 256];
        let mut opts = TestRunOptions::new();
        opts.data_in = Some(frame);
        opts.data_out = Some(&mut data_out);
        opts.ctx_in = Some(&ctx_in);
        opts.ctx_out = Some(&mut ctx_out);
        opts.repeat = repeat.max(1);
        let r = p
            .test_run(opts)
            .map_err(prog_err(format!("BPF_PROG_TEST_RUN of {prog}")))?;
        Ok((
            r.return_value as i32,
            SkbContext::from_bytes(&ctx_out),
            r.duration,
        ))
    }
}

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
    pub fn unclassified(&self) -> Result<Counters, DatapathError> {
        self.reader.read(SLOT_UNCLASSIFIED)
    }
}

/// Reads counters from the pinned maps by slot, for the metrics collector
/// and the rate sampler (which run beside the loader, not through it).
pub struct CounterReader {
    counters: PerCpuArray<MapData, Counters>,
    stats: PerCpuArray<MapData, u64>,
    rtt: Array<MapData, RttHistogram>,
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
        })
    }

    /// Counters of a slot (or [`SLOT_UNCLASSIFIED`]), summed over CPUs.
    pub fn read(&self, slot: u32) -> Result<Counters, DatapathError> {
        let v = self
            .counters
            .get(&slot, 0)
            .map_err(map_err(format!("reading counters of slot {slot}")))?;
        Ok(sum_counters(v.iter()))
    }

    /// Handshake round trips of a slot on a side (`SIDE_LAN`/`SIDE_WAN`).
    pub fn rtt(&self, slot: u32, side: u32) -> Result<RttHistogram, DatapathError> {
        self.rtt
            .get(&(slot * 2 + side), 0)
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
    /// `slot * 2 + side`), in one system call.
    pub fn rtt_first(&self, n: u32) -> Result<Vec<RttHistogram>, DatapathError> {
        let size = std::mem::size_of::<RttHistogram>();
        let raw = crate::sys::array_lookup_batch(&self.rtt, n * 2)
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

/// Pins of another map layout (an older or newer jatah) are never read as
/// if they were this one's: they are removed, which also detaches the
/// programs their links held, and the log says so. Their counters are
/// lost; slots are assigned anew.
fn replace_other_layouts(bpffs: &Path) -> Result<(), DatapathError> {
    let root = bpffs.join("jatah");
    let Ok(entries) = fs::read_dir(&root) else {
        return Ok(());
    };
    let current = format!("v{LAYOUT_VERSION}");
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if name == current || !name.starts_with('v') {
            continue;
        }
        let path = e.path();
        fs::remove_dir_all(&path).map_err(io_err(format!("removing {}", path.display())))?;
        tracing::warn!(
            found = %name,
            expected = %current,
            path = %path.display(),
            "replaced pins of another map layout: its programs are detached and its counters \
             restart under this version"
        );
    }
    Ok(())
}

/// Removes everything jatah pinned under `bpffs` (links first, which
/// detaches the programs). Returns whether anything was there.
pub fn unpin_all(bpffs: &Path) -> Result<bool, DatapathError> {
    let dir = bpffs.join("jatah");
    if !dir.exists() {
        return Ok(false);
    }
    fs::remove_dir_all(&dir).map_err(io_err(format!("removing {}", dir.display())))?;
    Ok(true)
}

/// The OPD id stored in a slot, or None for a free slot.
fn owner_id(owner: &SlotOwner) -> Option<String> {
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
/// for round trips: index `slot * 2 + side`), read in one batch; entry by
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
            r.rtt(i / 2, i % 2)
        })
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

    /// The entry at `index` (a slot; `slot * 2 + side` for round trips).
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

/// Prefix -> slot, as a trie holds them.
type Prefixes<const N: usize> = BTreeMap<([u8; N], u32), u32>;

fn read_trie<const N: usize>(
    map: &mut aya::maps::Map,
    what: &str,
) -> Result<Prefixes<N>, DatapathError>
where
    [u8; N]: aya::Pod,
{
    let trie: LpmTrie<&mut MapData, [u8; N], u32> =
        LpmTrie::try_from(map).map_err(map_err(what))?;
    let mut have = Prefixes::new();
    for item in trie.iter() {
        let (k, v) = item.map_err(map_err(format!("reading {what}")))?;
        have.insert((k.data(), k.prefix_len()), v);
    }
    Ok(have)
}

/// Brings a trie from `have` to `want`: entries added or changed first,
/// then the ones no longer wanted removed.
fn sync_trie<const N: usize>(
    map: &mut aya::maps::Map,
    have: &Prefixes<N>,
    want: &Prefixes<N>,
    what: &str,
) -> Result<(), DatapathError>
where
    [u8; N]: aya::Pod,
{
    let mut trie: LpmTrie<&mut MapData, [u8; N], u32> =
        LpmTrie::try_from(map).map_err(map_err(what))?;
    for (&(addr, len), &slot) in want {
        if have.get(&(addr, len)) != Some(&slot) {
            trie.insert(&Key::new(len, addr), slot, 0)
                .map_err(map_err(format!("inserting into {what}")))?;
        }
    }
    for &(addr, len) in have.keys() {
        if !want.contains_key(&(addr, len)) {
            trie.remove(&Key::new(len, addr))
                .map_err(map_err(format!("removing from {what}")))?;
        }
    }
    Ok(())
}

/// The `__sk_buff` fields jatah's tests set and read back.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SkbContext {
    pub mark: u32,
    pub priority: u32,
    /// The interface a packet arrived on; 0 for one the host itself sent.
    pub ingress_ifindex: u32,
    pub ifindex: u32,
    pub gso_segs: u32,
    pub gso_size: u32,
}

/// sizeof(struct __sk_buff) on this kernel ABI.
const SKB_CTX_LEN: usize = std::mem::size_of::<aya_sk_buff::SkBuff>();

mod aya_sk_buff {
    /// Mirror of the UAPI `struct __sk_buff` (stable ABI), for
    /// BPF_PROG_TEST_RUN's ctx_in/ctx_out.
    #[repr(C)]
    #[derive(Default, Clone, Copy)]
    pub struct SkBuff {
        pub len: u32,
        pub pkt_type: u32,
        pub mark: u32,
        pub queue_mapping: u32,
        pub protocol: u32,
        pub vlan_present: u32,
        pub vlan_tci: u32,
        pub vlan_proto: u32,
        pub priority: u32,
        pub ingress_ifindex: u32,
        pub ifindex: u32,
        pub tc_index: u32,
        pub cb: [u32; 5],
        pub hash: u32,
        pub tc_classid: u32,
        pub data: u32,
        pub data_end: u32,
        pub napi_id: u32,
        pub family: u32,
        pub remote_ip4: u32,
        pub local_ip4: u32,
        pub remote_ip6: [u32; 4],
        pub local_ip6: [u32; 4],
        pub remote_port: u32,
        pub local_port: u32,
        pub data_meta: u32,
        pub flow_keys: u64,
        pub tstamp: u64,
        pub wire_len: u32,
        pub gso_segs: u32,
        pub sk: u64,
        pub gso_size: u32,
        pub tstamp_type: u8,
        pub _pad: [u8; 3],
        pub hwtstamp: u64,
    }
}

impl SkbContext {
    /// A packet that arrived on an interface (ingress ifindex 1), as every
    /// packet the gateway forwards is.
    pub fn forwarded() -> Self {
        SkbContext {
            ingress_ifindex: 1,
            ..Default::default()
        }
    }

    fn to_bytes(self) -> [u8; SKB_CTX_LEN] {
        let skb = aya_sk_buff::SkBuff {
            mark: self.mark,
            priority: self.priority,
            ingress_ifindex: self.ingress_ifindex,
            ifindex: self.ifindex,
            gso_segs: self.gso_segs,
            gso_size: self.gso_size,
            ..Default::default()
        };
        // SAFETY: SkBuff is repr(C) plain data of exactly SKB_CTX_LEN bytes.
        unsafe { std::mem::transmute::<aya_sk_buff::SkBuff, [u8; SKB_CTX_LEN]>(skb) }
    }

    fn from_bytes(b: &[u8; SKB_CTX_LEN]) -> Self {
        // SAFETY: any bit pattern is a valid SkBuff (integers only).
        let skb: aya_sk_buff::SkBuff = unsafe { std::ptr::read_unaligned(b.as_ptr().cast()) };
        SkbContext {
            mark: skb.mark,
            priority: skb.priority,
            ingress_ifindex: skb.ingress_ifindex,
            ifindex: skb.ifindex,
            gso_segs: skb.gso_segs,
            gso_size: skb.gso_size,
        }
    }
}

/// Turns an OPD's subnets into trie prefixes.
pub fn prefixes_of(subnets: &[IpNet]) -> Vec<Prefix> {
    subnets.iter().map(Prefix::from).collect()
}

const _: () = assert!(COUNTER_SLOTS == MAX_OPDS + 1);
