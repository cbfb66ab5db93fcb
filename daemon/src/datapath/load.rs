//! Loading jatah's programs, keeping their maps in step with the policy
//! (OPD slots, prefix tries) and attaching them to the interfaces.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

use aya::maps::lpm_trie::{Key, LpmTrie};
use aya::maps::{Array, MapData, PerCpuArray, PerCpuValues};
use aya::programs::links::{FdLink, PinnedLink};
use aya::programs::tc::{self, SchedClassifierLink, TcAttachOptions};
use aya::programs::{LinkOrder, SchedClassifier, TcAttachType};
use aya::util::KernelVersion;
use aya::{Ebpf, EbpfLoader};
use jatah_common::{
    Config, Counters, FLAG_LANES, FLAG_RTT, FLAG_TCP_LOSS, LAYOUT_VERSION, MAX_OPDS, RTT_SAMPLE_SHIFT_MAX,
    RTT_SAMPLE_SHIFT_POS, SlotOwner, TcpLoss, map_names,
    program_names,
};
use tracing::{debug, info, warn};

use super::maps::owner_id;
use super::{
    Attachment, DatapathError, OpdPrefixes, PROGRAM_OBJECT, Prefix, ensure_bpffs,
    io_err, map_err, pin_dir, prog_err,
};

/// jatah's loaded programs and maps.
pub struct Datapath {
    pub(super) ebpf: Ebpf,
    pub(super) bpffs: PathBuf,
    slots: BTreeMap<String, u32>,
    /// Slots of removed OPDs, kept from reuse until their last counters
    /// have been scraped ([`Datapath::release`]).
    retired: BTreeMap<String, u32>,
    /// What the prefix tries hold, as this process last wrote them (read
    /// from the kernel once): a reload diffs against it without walking
    /// the tries.
    installed: Option<(Prefixes<4>, Prefixes<16>)>,
    /// The gateway's own addresses: never an OPD's, even inside its
    /// subnets (each is a /32 or /128 of no OPD in the tries).
    own: BTreeSet<std::net::IpAddr>,
    /// Places written to the places map, by slot.
    places: BTreeMap<u32, jatah_common::Place>,
    /// Interfaces (other than the LAN device) `jatah_ul_mark` is on, with
    /// the ifindex it was put on.
    ports: BTreeMap<String, u32>,
    #[cfg(any(test, feature = "testkit"))]
    pub(super) reader: super::CounterReader,
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
            own: BTreeSet::new(),
            places: BTreeMap::new(),
            ports: BTreeMap::new(),
            #[cfg(any(test, feature = "testkit"))]
            reader: super::CounterReader::open(bpffs)?,
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
            program_names::UPLOAD_L3,
            "jatah_empty",
        ] {
            self.classifier_mut(name)?
                .load()
                .map_err(prog_err(format!("verifying program {name}")))?;
        }
        Ok(())
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
        self.set_flag(FLAG_RTT, on)
    }

    /// Turns retransmission counting in the sampled TCP connections (per
    /// OPD, side and direction) on or off.
    pub fn set_tcp_loss_tracking(&mut self, on: bool) -> Result<(), DatapathError> {
        self.set_flag(FLAG_TCP_LOSS, on)
    }

    /// Counts bytes and packets per host address inside each OPD (`on`).
    pub fn set_host_counting(&mut self, on: bool) -> Result<(), DatapathError> {
        self.set_flag(jatah_common::FLAG_HOSTS, on)
    }

    /// Sends each OPD's packets to its bulk or interactive lane (`on`), or
    /// to the OPD's own class.
    pub fn set_lanes(&mut self, on: bool) -> Result<(), DatapathError> {
        self.set_flag(FLAG_LANES, on)
    }

    /// Sends the first [`jatah_common::FIRST_BYTES`] of each TCP connection
    /// toward an OPD to its interactive lane (`on`; with lanes on).
    pub fn set_first_bytes(&mut self, on: bool) -> Result<(), DatapathError> {
        self.set_flag(jatah_common::FLAG_FIRST_BYTES, on)
    }

    /// Sets or clears one `FLAG_*` bit of the datapath's config.
    fn set_flag(&mut self, flag: u32, on: bool) -> Result<(), DatapathError> {
        let mut cfg = self.config()?;
        cfg.flags = if on { cfg.flags | flag } else { cfg.flags & !flag };
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
        // The gateway's own addresses inside OPD subnets are no OPD's.
        for a in &self.own {
            match a {
                std::net::IpAddr::V4(v4) => {
                    want4.insert((v4.octets(), 32), jatah_common::NO_SLOT);
                }
                std::net::IpAddr::V6(v6) => {
                    want6.insert((v6.octets(), 128), jatah_common::NO_SLOT);
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

    /// Sets the gateway's own addresses (loopback excluded), which the
    /// next [`Datapath::sync_opds`] keeps out of every OPD. Whether they
    /// changed.
    pub fn set_own_addresses(&mut self, addrs: impl IntoIterator<Item = std::net::IpAddr>) -> bool {
        let own: BTreeSet<std::net::IpAddr> = addrs
            .into_iter()
            .map(|a| a.to_canonical())
            .filter(|a| !a.is_loopback() && !a.is_unspecified())
            .collect();
        let changed = own != self.own;
        self.own = own;
        changed
    }

    /// Where each slot's packets may come in from (slots not named:
    /// anywhere). Only changes are written.
    pub fn set_places(
        &mut self,
        places: &BTreeMap<u32, jatah_common::Place>,
    ) -> Result<(), DatapathError> {
        use jatah_common::{Place, place_maps};
        let before = std::mem::take(&mut self.places);
        let mut arr: Array<&mut MapData, Place> =
            Array::try_from(self.map_mut(place_maps::PLACES)?).map_err(map_err("places"))?;
        for (slot, old) in &before {
            if !places.contains_key(slot) && *old != Place::default() {
                arr.set(*slot, Place::default(), 0)
                    .map_err(map_err(format!("clearing the place of slot {slot}")))?;
            }
        }
        for (slot, place) in places {
            if before.get(slot) != Some(place) {
                arr.set(*slot, *place, 0)
                    .map_err(map_err(format!("writing the place of slot {slot}")))?;
            }
        }
        self.places = places.clone();
        Ok(())
    }

    /// The status listener's TCP port, whose SYNs the LAN side notes with
    /// where they came in (0: none).
    pub fn set_status_port(&mut self, port: u16) -> Result<(), DatapathError> {
        let mut arr: Array<&mut MapData, u32> =
            Array::try_from(self.map_mut(jatah_common::place_maps::STATUS_PORT)?)
                .map_err(map_err("status port"))?;
        arr.set(0, u32::from(port), 0)
            .map_err(map_err("writing the status port"))
    }

    /// Puts `jatah_ul_mark` on the ingress of each of `ports` (interfaces
    /// OPDs are bound to, beside the LAN device, with their ifindex) not
    /// yet holding it, or holding it on an older interface of that name,
    /// so upload is judged where it came in. Ports no longer named keep
    /// it: there it only decides earlier what the LAN device would decide.
    pub fn attach_ports(&mut self, ports: &[(String, u32)]) -> Result<(), DatapathError> {
        for (port, ifindex) in ports {
            if self.ports.get(port) == Some(ifindex) {
                continue;
            }
            self.attach_one(program_names::UPLOAD_MARK, port, TcAttachType::Ingress)?;
            self.ports.insert(port.clone(), *ifindex);
        }
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
            .map_err(map_err(format!("zeroing counters of slot {slot}")))?;
        let zero = PerCpuValues::try_from(vec![TcpLoss::default(); ncpu])
            .map_err(io_err("per-CPU values"))?;
        let mut arr: PerCpuArray<&mut MapData, TcpLoss> =
            PerCpuArray::try_from(self.map_mut(map_names::TCP_LOSS)?)
                .map_err(map_err("TCP retransmissions"))?;
        arr.set(slot, zero, 0)
            .map_err(map_err(format!("zeroing TCP retransmissions of slot {slot}")))
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
        for (prog, iface, kind) in at.programs() {
            if only.is_some_and(|o| o != iface) {
                continue;
            }
            self.attach_one(prog, iface, kind)?;
        }
        Ok(())
    }

    /// Attaches one classifier: a pinned TCX link (kernel >= 6.6), else
    /// netlink clsact (not pinnable).
    fn attach_one(&mut self, prog: &str, iface: &str, kind: TcAttachType) -> Result<(), DatapathError> {
        let tcx = has_tcx();
        if tcx {
            self.attach_tcx(prog, iface, kind)?;
        } else {
            if let Err(e) = tc::qdisc_add_clsact(iface)
                && !matches!(&e, tc::TcError::AlreadyAttached)
            {
                debug!(%iface, error = %e, "clsact not added (may already exist)");
            }
            self.classifier_mut(prog)?
                .attach(iface, kind)
                .map_err(prog_err(format!("attaching {prog} to {iface}")))?;
        }
        info!(program = prog, interface = %iface, direction = ?kind, tcx, "classifier attached");
        Ok(())
    }

    /// jatah's classifiers that belong on `iface` and are not attached
    /// there now (a link detached or its pin removed behind jatah's back).
    /// Only with TCX (kernel >= 6.6), where attachments can be queried;
    /// empty on older kernels.
    pub fn detached_on(&mut self, at: &Attachment, iface: &str) -> Result<Vec<&'static str>, DatapathError> {
        let mut gone = Vec::new();
        if !has_tcx() {
            return Ok(gone);
        }
        for (prog, on, kind) in at.programs() {
            if on != iface {
                continue;
            }
            let ours = self
                .classifier_mut(prog)?
                .info()
                .map_err(prog_err(format!("program {prog}")))?
                .id();
            let (_, attached) = SchedClassifier::query_tcx(iface, kind)
                .map_err(prog_err(format!("querying the classifiers on {iface}")))?;
            if !attached.iter().any(|p| p.id() == ours) {
                gone.push(prog);
            }
        }
        Ok(gone)
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
}

/// Whether this kernel has TCX (6.6 and later): pinnable, queryable
/// classifier links.
fn has_tcx() -> bool {
    KernelVersion::current().is_ok_and(|v| v >= KernelVersion::new(6, 6, 0))
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
