//! Puts a policy into force on this gateway: resolves the interfaces it
//! names, gives every OPD its slot in the data path, and builds the HTB trees
//! (one per direction) that enforce the allocations.
//!
//! **Group classes.** A `[[group]]` is an inner HTB class between the root
//! class and its members' classes. OPD classes are `1:(slot + 16)`, at most
//! `1:0x400f`; groups take minors from `0x6000..=0x7fff` ([`group_minors`]),
//! clear of every OPD class and within the minors that may carry a leaf
//! qdisc (a group without members is a leaf). A group's minor is a hash of
//! its id, not its place in the file, so reordering, adding or removing
//! other groups leaves its class (and its members' classes, and all their
//! counters) alone, across reloads and restarts alike, with nothing to
//! persist. Two ids may hash to the same minor (about one chance in 8192
//! per pair); the id that sorts first keeps it and the other takes the next
//! free one. The only way a group's minor then moves is a newly added group
//! whose id takes its place, and `jatah plan` says so before it happens.

use std::collections::{BTreeMap, BTreeSet};

use jatah_common::{
    DEFAULT_CLASS_MINOR, GROUP_MINOR_BASE, GROUP_MINORS, bulk_lane_minor, interactive_lane_minor,
    opd_class_minor,
};
use tracing::info;

use crate::datapath::{Datapath, OpdPrefixes, prefixes_of};
use crate::policy::{Direction, LeafQdisc as PolicyLeaf, MAX_GROUPS, Policy, Shaping};
use crate::shaper::{ClassSpec, ClassStats, HtbTree, Leaf, LeafQdisc, ROOT_CLASS, Shaper};

// There is a group class for every group a policy may have (that they
// clear the OPD classes and fit the leaf minors is asserted in common).
const _: () = assert!(MAX_GROUPS <= GROUP_MINORS as usize);

mod interfaces;

pub use interfaces::*;

/// The OPDs as the data path sees them.
pub fn opd_prefixes(policy: &Policy) -> Vec<OpdPrefixes> {
    policy
        .opds
        .iter()
        .map(|o| OpdPrefixes {
            id: o.id.clone(),
            prefixes: prefixes_of(&o.subnets),
        })
        .collect()
}

/// FNV-1a, 32 bits: a hash that never changes between builds or Rust
/// versions (unlike std's), so a group's minor survives an upgrade.
fn fnv1a(bytes: &[u8]) -> u32 {
    bytes.iter().fold(0x811c_9dc5, |hash, &b| {
        (hash ^ u32::from(b)).wrapping_mul(0x0100_0193)
    })
}

/// The HTB class minor of every group of `policy`, the same on both
/// interfaces: `GROUP_MINOR_BASE` plus the FNV-1a hash of the id modulo
/// [`GROUP_MINORS`], or the next free minor after it when an id that sorts
/// earlier already has that one (see the module documentation). A pure
/// function of the group ids, so anything holding the policy in force (the
/// metrics, the API, `jatah plan`) finds a group's class without asking
/// the shaper.
pub fn group_minors(policy: &Policy) -> BTreeMap<String, u16> {
    let ids: BTreeSet<&str> = policy.groups.iter().map(|g| g.id.as_str()).collect();
    let mut taken = BTreeSet::new();
    let mut minors = BTreeMap::new();
    for id in ids {
        let home = fnv1a(id.as_bytes()) % GROUP_MINORS;
        // A validated policy has at most MAX_GROUPS groups, so a free
        // offset always exists.
        let free = (0..GROUP_MINORS)
            .map(|step| (home + step) % GROUP_MINORS)
            .find(|offset| !taken.contains(offset));
        if let Some(offset) = free {
            taken.insert(offset);
            // Group minors end at MAX_LEAF_MINOR (asserted in common), so
            // they fit the shaper's 16-bit minors.
            minors.insert(id.to_string(), (GROUP_MINOR_BASE + offset) as u16);
        }
    }
    minors
}

/// Each group's class among the statistics [`Shaper::class_stats`] read
/// from one interface, by group id. A group whose class is missing (the
/// tree is being changed) is left out.
pub fn group_class_stats(policy: &Policy, stats: &[ClassStats]) -> BTreeMap<String, ClassStats> {
    let by_minor: BTreeMap<u16, &ClassStats> = stats.iter().map(|s| (s.minor, s)).collect();
    group_minors(policy)
        .into_iter()
        .filter_map(|(id, minor)| by_minor.get(&minor).map(|&&stats| (id, stats)))
        .collect()
}

/// The HTB tree of one direction for the OPD slots the data path holds
/// (see [`tree_for_slots`]).
pub fn htb_tree(policy: &Policy, datapath: &Datapath, dir: Direction, leaf: LeafQdisc) -> HtbTree {
    tree_for_slots(policy, datapath.slots(), dir, leaf)
}

/// The HTB tree of one direction: root = gateway capacity; one class per
/// group ([`group_minors`]; rate = guaranteed, ceil = ceiling) under it;
/// one class per OPD with a slot (`1:(slot + 16)`) under its group or,
/// outside groups, under the root class; and the default class, which is
/// guaranteed what the top level leaves over (at least 1% of capacity) and
/// may borrow up to the capacity.
pub fn tree_for_slots(
    policy: &Policy,
    slots: &BTreeMap<String, u32>,
    dir: Direction,
    leaf: LeafQdisc,
) -> HtbTree {
    let capacity = policy.capacity(dir).bits_per_second();
    let group_minors = group_minors(policy);
    let mut classes = Vec::with_capacity(policy.groups.len() + policy.opds.len());
    // What the root class's children are guaranteed, the default class aside.
    let mut guaranteed_sum = 0u64;
    for group in &policy.groups {
        let Some(&minor) = group_minors.get(&group.id) else {
            continue;
        };
        let a = group.allocation(dir);
        guaranteed_sum = guaranteed_sum.saturating_add(a.guaranteed.bits_per_second());
        classes.push(ClassSpec {
            minor,
            parent: ROOT_CLASS,
            rate_bps: a.guaranteed.bits_per_second(),
            ceil_bps: a.ceiling.bits_per_second(),
            prio: 0,
            leaf: None,
            burst_bytes: 0,
        });
    }
    let shaping = policy.gateway.shaping;
    for opd in &policy.opds {
        let Some(&slot) = slots.get(&opd.id) else {
            continue;
        };
        let a = opd.allocation(dir);
        let group = opd
            .group
            .as_ref()
            .and_then(|id| group_minors.get(id).copied());
        let (rate, ceil) = (a.guaranteed.bits_per_second(), a.ceiling.bits_per_second());
        if group.is_none() {
            guaranteed_sum = guaranteed_sum.saturating_add(rate);
        }
        let minor = opd_class_minor(slot) as u16;
        let bulk_leaf = bulk_queue(&shaping, leaf, ceil);
        if !shaping.interactive {
            classes.push(ClassSpec {
                minor,
                parent: group.unwrap_or(ROOT_CLASS),
                rate_bps: rate,
                ceil_bps: ceil,
                prio: 0,
                leaf: bulk_leaf,
                burst_bytes: 0,
            });
            continue;
        }
        classes.push(ClassSpec {
            minor,
            parent: group.unwrap_or(ROOT_CLASS),
            rate_bps: rate,
            ceil_bps: ceil,
            prio: 0,
            leaf: None,
            burst_bytes: 0,
        });
        let (interactive, bulk) = lane_rates(&shaping, rate);
        // New connections' first bytes ride the download lanes only.
        let boost = shaping.boost_new_connections && dir == Direction::Download;
        classes.push(ClassSpec {
            minor: interactive_lane_minor(slot) as u16,
            parent: minor,
            rate_bps: interactive,
            ceil_bps: ceil,
            prio: 0,
            leaf: Some(Leaf {
                kind: LeafQdisc::Pfifo,
                limit: INTERACTIVE_QUEUE_PACKETS,
            }),
            burst_bytes: if boost {
                INTERACTIVE_BURST_BYTES
            } else {
                0
            },
        });
        classes.push(ClassSpec {
            minor: bulk_lane_minor(slot) as u16,
            parent: minor,
            rate_bps: bulk,
            ceil_bps: ceil,
            prio: 1,
            leaf: bulk_leaf,
            burst_bytes: 0,
        });
    }
    let leftover = capacity
        .saturating_sub(guaranteed_sum)
        .max(capacity / 100)
        .max(8_000);
    HtbTree {
        capacity_bps: capacity,
        default_class: ClassSpec {
            minor: DEFAULT_CLASS_MINOR as u16,
            parent: ROOT_CLASS,
            rate_bps: leftover.min(capacity),
            ceil_bps: capacity,
            prio: 0,
            leaf: None,
            burst_bytes: 0,
        },
        classes,
        leaf,
        leaf_limit: policy.gateway.leaf_limit,
    }
}

/// Packets the interactive lane's FIFO holds. It is served first, so it
/// rarely holds more than a few, but a page opening a dozen connections
/// at once puts each one's first bytes ([`jatah_common::FIRST_BYTES`])
/// there within a round trip: room for about 8 of them in full-size
/// packets, so the pings and DNS answers beside them are not dropped.
pub const INTERACTIVE_QUEUE_PACKETS: u32 = 192;
/// What a download interactive lane may send at once after a quiet spell
/// (with `boost_new_connections`), at its ceiling and ahead of the bulk:
/// two new connections' first bytes
/// ([`jatah_common::FIRST_BYTES`]). HTB serves a lane within its own rate
/// before any lane that borrows, so with the one-tick burst of its small
/// rate a web object's first bytes went at the rate left over by the bulk
/// lane, and pings waited behind them (p95 +63 ms in the lab, 8 flows at a
/// 10 Mbit/s ceiling).
pub const INTERACTIVE_BURST_BYTES: u32 = 2 * jatah_common::FIRST_BYTES;
/// The least rate an interactive lane is guaranteed, bits per second
/// (a call and its ACKs), unless that is over half the OPD's guarantee.
pub const MIN_INTERACTIVE_BPS: u64 = 64_000;

/// An OPD's guarantee split between its interactive lane and its bulk:
/// `interactive_percent` of it, at least [`MIN_INTERACTIVE_BPS`] and at
/// most half; the bulk gets the rest. HTB does not bound a class's own
/// rate by its parent's, so the two must add up to the OPD's guarantee
/// and no more (each lane's ceiling is the OPD's, which does bound them).
pub fn lane_rates(shaping: &Shaping, guaranteed_bps: u64) -> (u64, u64) {
    let share = guaranteed_bps / 100 * u64::from(shaping.interactive_percent);
    let interactive = share
        .max(MIN_INTERACTIVE_BPS)
        .min(guaranteed_bps / 2)
        .max(8);
    (
        interactive,
        guaranteed_bps.saturating_sub(interactive).max(8),
    )
}

/// The leaf of an OPD's bulk traffic: where the leaf kind has no AQM of
/// its own (pfifo), a byte FIFO that holds at most `queue_target` at the
/// ceiling, but never less than `queue_floor`; fq_codel and cake keep
/// their own queues short, and `queue_target = "off"` asks for the
/// packet limit (`None`: the tree's leaf).
pub fn bulk_queue(shaping: &Shaping, leaf: LeafQdisc, ceil_bps: u64) -> Option<Leaf> {
    (leaf == LeafQdisc::Pfifo && shaping.queue_target_ms > 0).then(|| {
        let bytes = ceil_bps / 8 * u64::from(shaping.queue_target_ms) / 1000;
        Leaf {
            kind: LeafQdisc::Bfifo,
            limit: bytes
                .max(u64::from(shaping.queue_floor_bytes))
                .min(u64::from(u32::MAX)) as u32,
        }
    })
}

pub(crate) fn leaf_preference(p: PolicyLeaf) -> Vec<LeafQdisc> {
    match p {
        PolicyLeaf::Auto => vec![LeafQdisc::FqCodel, LeafQdisc::Cake, LeafQdisc::Pfifo],
        PolicyLeaf::FqCodel => vec![LeafQdisc::FqCodel, LeafQdisc::Pfifo],
        PolicyLeaf::Cake => vec![LeafQdisc::Cake, LeafQdisc::Pfifo],
        PolicyLeaf::Pfifo => vec![LeafQdisc::Pfifo],
    }
}

/// Brings the data path and both HTB trees in line with `policy`, at the
/// contracted capacity ([`apply_scaled`] with no adaptation).
pub fn apply(
    policy: &Policy,
    ifaces: &Interfaces,
    datapath: &mut Datapath,
    shaper: &mut Shaper,
) -> Result<(), GatewayError> {
    apply_scaled(policy, ifaces, datapath, shaper, [None, None])
}

/// Brings the data path and both HTB trees in line with `policy`, each
/// direction at its `effective` capacity where one is given
/// ([`scale_tree`]). Maps are synced first: a packet pointed at a class
/// HTB does not have yet falls into the default class for that moment
/// (never dropped), and a removed OPD's prefixes are gone before its
/// class is deleted.
pub fn apply_scaled(
    policy: &Policy,
    ifaces: &Interfaces,
    datapath: &mut Datapath,
    shaper: &mut Shaper,
    effective: [Option<u64>; 2],
) -> Result<(), GatewayError> {
    datapath.set_mark_mask(policy.gateway.mark_mask)?;
    datapath.set_rtt_tracking(policy.diagnosis.rtt_tracking)?;
    // The same sampled connections, followed for retransmissions.
    datapath.set_tcp_loss_tracking(policy.diagnosis.rtt_tracking)?;
    datapath.set_rtt_sampling(policy.diagnosis.rtt_sampling.trailing_zeros())?;
    datapath.set_host_counting(true)?;
    datapath.set_own_addresses(crate::sys::interface_addresses().into_iter().map(|(_, a)| a));
    datapath.sync_opds(&opd_prefixes(policy))?;
    put_places(policy, ifaces, datapath)?;
    shape(policy, ifaces, datapath, shaper, effective)?;
    // Packets go to the lanes once both trees have them (and to the OPD
    // classes once the lanes are gone): the moments between are a
    // netlink round trip per OPD, in the default class.
    let shaping = policy.gateway.shaping;
    datapath.set_first_bytes(shaping.interactive && shaping.boost_new_connections)?;
    datapath.set_lanes(shaping.interactive)?;
    Ok(())
}

/// Where each bound OPD's upload may come in from, as the interfaces are
/// now: the ports' classifiers first (again on a port deleted and created
/// since), so no packet of theirs is judged at the bridge meanwhile, then
/// the places. Cheap when nothing changed.
pub fn put_places(
    policy: &Policy,
    ifaces: &Interfaces,
    datapath: &mut Datapath,
) -> Result<(), GatewayError> {
    let mut places = BTreeMap::new();
    let mut ports = Vec::new();
    for opd in &policy.opds {
        let (Some(name), Some(&slot)) = (&opd.interface, datapath.slots().get(&opd.id)) else {
            continue;
        };
        let (place, port) = place_of(&opd.id, name, &ifaces.lan_device)?;
        places.insert(slot, place);
        ports.extend(port.map(|p| (p, place.ifindex)));
    }
    datapath.attach_ports(&ports)?;
    datapath.set_places(&places)?;
    Ok(())
}

/// Puts both HTB trees in force for the OPD slots the data path holds,
/// each direction at its `effective` capacity where one is given.
pub fn shape(
    policy: &Policy,
    ifaces: &Interfaces,
    datapath: &Datapath,
    shaper: &mut Shaper,
    effective: [Option<u64>; 2],
) -> Result<(), GatewayError> {
    let pref = leaf_preference(policy.gateway.leaf_qdisc);
    for (dir, iface) in [
        (Direction::Download, &ifaces.lan_device),
        (Direction::Upload, &ifaces.wan),
    ] {
        let leaf = shaper.resolve_leaf(iface.ifindex, &pref);
        let mut tree = htb_tree(policy, datapath, dir, leaf);
        if let Some(cap) = effective[dir.index()] {
            scale_tree(&mut tree, cap, &policy.gateway.shaping);
        }
        let report = shaper.apply_changed(iface.ifindex, &tree)?;
        info!(
            direction = dir.as_str(),
            interface = %iface.name,
            classes = tree.classes.len(),
            capacity_bps = tree.capacity_bps,
            leaf = ?leaf,
            report = ?report,
            "HTB tree in force"
        );
    }
    Ok(())
}

/// Shapes `tree` to `capacity_bps` below its own: the root class to that
/// rate, every class's rate scaled by the same factor (so the rates under
/// each class still add up to at most its own, as HTB needs: it does not
/// bound a child's rate by its parent's) and every ceiling to at most the
/// capacity; byte queues follow their new ceilings. A capacity at or
/// above the tree's changes nothing.
pub fn scale_tree(tree: &mut HtbTree, capacity_bps: u64, shaping: &Shaping) {
    if capacity_bps >= tree.capacity_bps || capacity_bps == 0 {
        return;
    }
    let top: u64 = std::iter::once(&tree.default_class)
        .chain(tree.classes.iter().filter(|c| c.parent == ROOT_CLASS))
        .map(|c| c.rate_bps)
        .sum();
    let f = capacity_bps as f64 / top.max(tree.capacity_bps) as f64;
    tree.capacity_bps = capacity_bps;
    for c in std::iter::once(&mut tree.default_class).chain(tree.classes.iter_mut()) {
        c.rate_bps = ((c.rate_bps as f64 * f) as u64).max(8);
        c.ceil_bps = c.ceil_bps.min(capacity_bps).max(c.rate_bps);
        if let Some(l) = c.leaf
            && l.kind == LeafQdisc::Bfifo
        {
            c.leaf = bulk_queue(shaping, LeafQdisc::Pfifo, c.ceil_bps).or(Some(l));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jatah_common::{MAX_LEAF_MINOR, MAX_OPDS};

    /// A policy with the OPDs and groups given as TOML tables.
    fn policy(tables: &str) -> Policy {
        let source = format!(
            "[gateway]\nwan = \"eth0\"\nlan = [\"eth1\"]\n\
             download = \"100M\"\nupload = \"50M\"\n{tables}"
        );
        crate::policy::parse(&source, "t.toml").unwrap_or_else(|e| panic!("{e}"))
    }

    fn group(id: &str) -> String {
        format!(
            "\n[[group]]\nid = \"{id}\"\nname = \"{id}\"\n\
             download = {{ guaranteed = \"30M\", ceiling = \"50M\" }}\n\
             upload = {{ guaranteed = \"10M\", ceiling = \"20M\" }}\n"
        )
    }

    fn opd(id: &str, net: u8, group: Option<&str>) -> String {
        let group = group
            .map(|g| format!("group = \"{g}\"\n"))
            .unwrap_or_default();
        format!(
            "\n[[opd]]\nid = \"{id}\"\nname = \"{id}\"\nsubnets = [\"10.20.{net}.0/24\"]\n\
             download = {{ guaranteed = \"10M\", ceiling = \"40M\" }}\n\
             upload = {{ guaranteed = \"5M\", ceiling = \"10M\" }}\n{group}"
        )
    }

    #[test]
    fn group_minors_are_hashes_of_the_ids_clear_of_opd_classes() {
        let p = policy(&(group("kecamatan") + &group("kesehatan") + &opd("a", 1, None)));
        let minors = group_minors(&p);
        // FNV-1a("kecamatan") % 0x2000 = 0x1aba; ("kesehatan") = 0xc1d.
        assert_eq!(minors["kecamatan"], 0x7aba);
        assert_eq!(minors["kesehatan"], 0x6c1d);
        for minor in minors.values() {
            assert!((GROUP_MINOR_BASE..=MAX_LEAF_MINOR).contains(&u32::from(*minor)));
            assert!(u32::from(*minor) > opd_class_minor(MAX_OPDS - 1));
        }
        // The order in the file and the other groups do not matter.
        let reordered = policy(&(group("kesehatan") + &opd("a", 1, None) + &group("kecamatan")));
        assert_eq!(group_minors(&reordered), minors);
        let alone = policy(&(group("kecamatan") + &opd("a", 1, None)));
        assert_eq!(group_minors(&alone)["kecamatan"], 0x7aba);
        assert!(group_minors(&policy(&opd("a", 1, None))).is_empty());
    }

    #[test]
    fn colliding_ids_take_the_next_free_minor_in_id_order() {
        // "grup-19" and "grup-356" share the hash 0x1382.
        assert_eq!(fnv1a(b"grup-19") % 0x2000, 0x1382);
        assert_eq!(fnv1a(b"grup-356") % 0x2000, 0x1382);
        let alone = policy(&(group("grup-356") + &opd("a", 1, None)));
        assert_eq!(group_minors(&alone)["grup-356"], 0x7382);
        let both = policy(&(group("grup-356") + &group("grup-19") + &opd("a", 1, None)));
        let minors = group_minors(&both);
        assert_eq!(minors["grup-19"], 0x7382);
        assert_eq!(minors["grup-356"], 0x7383);
    }

    #[test]
    fn group_statistics_are_found_by_minor() {
        let p = policy(&(group("kecamatan") + &group("kesehatan") + &opd("a", 1, None)));
        let stats = [1, 2, 16, 0x7aba].map(|minor| ClassStats {
            minor,
            bytes: u64::from(minor) * 10,
            ..Default::default()
        });
        let found = group_class_stats(&p, &stats);
        assert_eq!(found.len(), 1, "kesehatan's class is not in the dump");
        assert_eq!(found["kecamatan"].bytes, 0x7aba * 10);
    }

    #[test]
    fn lanes_split_the_guarantee_and_share_the_ceiling() {
        let mut p = policy(&(opd("a", 1, None) + &opd("b", 2, None)));
        p.gateway.shaping.queue_target_ms = 10;
        let slots: BTreeMap<String, u32> =
            [("a".to_string(), 0), ("b".to_string(), 1)].into();
        let t = tree_for_slots(&p, &slots, Direction::Download, LeafQdisc::Pfifo);
        let find = |m: u32| *t.classes.iter().find(|c| u32::from(c.minor) == m).unwrap();
        for slot in [0, 1] {
            let (o, i, b) = (
                find(opd_class_minor(slot)),
                find(interactive_lane_minor(slot)),
                find(bulk_lane_minor(slot)),
            );
            assert_eq!((o.leaf, i.parent, b.parent), (None, o.minor, o.minor));
            assert_eq!(i.rate_bps + b.rate_bps, o.rate_bps, "HTB does not cap a child's rate");
            assert_eq!((i.ceil_bps, b.ceil_bps), (o.ceil_bps, o.ceil_bps));
            assert_eq!(i.rate_bps, o.rate_bps / 20, "5% of 10M");
            assert_eq!((i.prio, b.prio), (0, 1), "interactive first");
            assert_eq!((i.burst_bytes, b.burst_bytes), (INTERACTIVE_BURST_BYTES, 0));
            assert_eq!(i.leaf.unwrap().kind, LeafQdisc::Pfifo);
            // 10 ms at 40M is 50,000 bytes, under the 64 KiB floor.
            assert_eq!(
                b.leaf,
                Some(Leaf {
                    kind: LeafQdisc::Bfifo,
                    limit: 65_536
                })
            );
        }
        assert_eq!(t.classes.len(), 6);
        // fq_codel and cake keep their own queues: the tree's leaf.
        let t = tree_for_slots(&p, &slots, Direction::Download, LeafQdisc::FqCodel);
        let bulk = t.classes.iter().find(|c| u32::from(c.minor) == bulk_lane_minor(0));
        assert_eq!(bulk.unwrap().leaf, None);
        // The interactive lane's burst: download with the boost only.
        let burst = |p: &Policy, dir| {
            let t = tree_for_slots(p, &slots, dir, LeafQdisc::Pfifo);
            let lane = t.classes.iter().find(|c| u32::from(c.minor) == interactive_lane_minor(0));
            lane.unwrap().burst_bytes
        };
        assert_eq!(burst(&p, Direction::Download), INTERACTIVE_BURST_BYTES);
        assert_eq!(burst(&p, Direction::Upload), 0, "no burst into the modem's queue");
        p.gateway.shaping.boost_new_connections = false;
        assert_eq!(burst(&p, Direction::Download), 0, "without the boost, as before");
    }

    #[test]
    fn a_scaled_tree_keeps_every_guarantee_in_proportion_within_its_parent() {
        let p = policy(
            &(group("kecamatan")
                + &opd("kec-waru", 1, Some("kecamatan"))
                + &opd("dinkes", 2, None)
                + &opd("bappeda", 3, None)),
        );
        let slots: BTreeMap<String, u32> = [("kec-waru", 0), ("dinkes", 1), ("bappeda", 2)]
            .into_iter()
            .map(|(id, slot)| (id.to_string(), slot))
            .collect();
        let full = tree_for_slots(&p, &slots, Direction::Download, LeafQdisc::Pfifo);
        let mut t = full.clone();
        scale_tree(&mut t, 40_000_000, &p.gateway.shaping);
        assert_eq!(t.capacity_bps, 40_000_000);
        let all = |t: &HtbTree| -> Vec<ClassSpec> {
            std::iter::once(t.default_class).chain(t.classes.iter().copied()).collect()
        };
        // Under every parent (the root class included) the children's
        // rates fit the parent's rate, and no ceiling is above capacity.
        let rate_of = |m: u16| {
            if m == ROOT_CLASS {
                t.capacity_bps
            } else {
                all(&t).iter().find(|c| c.minor == m).unwrap().rate_bps
            }
        };
        for parent in all(&t).iter().map(|c| c.parent).collect::<BTreeSet<_>>() {
            let sum: u64 = all(&t).iter().filter(|c| c.parent == parent).map(|c| c.rate_bps).sum();
            assert!(sum <= rate_of(parent), "under {parent}: {sum} > {}", rate_of(parent));
        }
        for (a, b) in all(&full).iter().zip(all(&t).iter()) {
            assert_eq!(a.minor, b.minor);
            assert!(b.ceil_bps <= 40_000_000 && b.ceil_bps >= b.rate_bps);
            // Each guarantee keeps its share: 40/100 of what it was.
            let want = a.rate_bps as f64 * 0.4;
            assert!((b.rate_bps as f64 - want).abs() <= 1.0 + want * 1e-9, "{a:?} {b:?}");
        }
        // At or above the contract nothing changes.
        let mut same = full.clone();
        scale_tree(&mut same, 100_000_000, &p.gateway.shaping);
        assert_eq!(same, full);
    }

    #[test]
    fn lane_rates_and_queue_sizes_follow_their_bounds() {
        assert_eq!(bulk_queue(&Shaping::default(), LeafQdisc::Pfifo, 10_000_000), None, "off by default");
        let s = Shaping {
            queue_target_ms: 10,
            ..Shaping::default()
        };
        assert_eq!(lane_rates(&s, 100_000_000), (5_000_000, 95_000_000));
        assert_eq!(lane_rates(&s, 1_000_000), (64_000, 936_000), "a floor of 64 kbit/s");
        assert_eq!(lane_rates(&s, 100_000), (50_000, 50_000), "at most half");
        let q = |ceil| bulk_queue(&s, LeafQdisc::Pfifo, ceil).unwrap().limit;
        assert_eq!(q(10_000_000), 65_536, "the floor");
        assert_eq!(q(1_000_000_000), 1_250_000, "10 ms at 1 Gbit/s");
        let s = Shaping {
            queue_target_ms: 50,
            queue_floor_bytes: 3000,
            ..Shaping::default()
        };
        assert_eq!(bulk_queue(&s, LeafQdisc::Pfifo, 10_000_000).unwrap().limit, 62_500);
        assert_eq!(bulk_queue(&s, LeafQdisc::Cake, 10_000_000), None);
        let off = Shaping {
            queue_target_ms: 0,
            ..s
        };
        assert_eq!(bulk_queue(&off, LeafQdisc::Pfifo, 10_000_000), None);
    }

    #[test]
    fn without_lanes_the_opd_class_is_the_leaf() {
        let mut p = policy(&opd("a", 1, None));
        p.gateway.shaping.interactive = false;
        p.gateway.shaping.queue_target_ms = 10;
        let slots: BTreeMap<String, u32> = [("a".to_string(), 0)].into();
        let t = tree_for_slots(&p, &slots, Direction::Download, LeafQdisc::Pfifo);
        assert_eq!(t.classes.len(), 1);
        assert_eq!(t.classes[0].leaf.unwrap().kind, LeafQdisc::Bfifo);
    }

    #[test]
    fn the_tree_nests_members_under_their_group() {
        let p = policy(
            &(group("kecamatan")
                + &opd("kec-waru", 1, Some("kecamatan"))
                + &opd("dinkes", 2, None)
                + &opd("kec-sepaku", 3, Some("kecamatan"))
                + &opd("no-slot", 4, None)),
        );
        let slots: BTreeMap<String, u32> = [("kec-waru", 0), ("dinkes", 1), ("kec-sepaku", 2)]
            .into_iter()
            .map(|(id, slot)| (id.to_string(), slot))
            .collect();
        let t = tree_for_slots(&p, &slots, Direction::Download, LeafQdisc::Pfifo);
        let g = 0x7aba;
        let outer: Vec<ClassSpec> = t.classes.iter().filter(|c| c.minor < 0x8000).copied().collect();
        assert_eq!(
            outer,
            [
                ClassSpec {
                    minor: g,
                    parent: ROOT_CLASS,
                    rate_bps: 30_000_000,
                    ceil_bps: 50_000_000,
                    prio: 0,
                    leaf: None,
                    burst_bytes: 0,
                },
                ClassSpec {
                    minor: 16,
                    parent: g,
                    rate_bps: 10_000_000,
                    ceil_bps: 40_000_000,
                    prio: 0,
                    leaf: None,
                    burst_bytes: 0,
                },
                ClassSpec {
                    minor: 17,
                    parent: ROOT_CLASS,
                    rate_bps: 10_000_000,
                    ceil_bps: 40_000_000,
                    prio: 0,
                    leaf: None,
                    burst_bytes: 0,
                },
                ClassSpec {
                    minor: 18,
                    parent: g,
                    rate_bps: 10_000_000,
                    ceil_bps: 40_000_000,
                    prio: 0,
                    leaf: None,
                    burst_bytes: 0,
                },
            ]
        );
        // The default class gets what the top level leaves: 100M less the
        // group's 30M and dinkes' 10M (no-slot has no class yet).
        assert_eq!(t.default_class.rate_bps, 60_000_000);
        assert_eq!(t.default_class.parent, ROOT_CLASS);
        assert_eq!(t.capacity_bps, 100_000_000);
        let up = tree_for_slots(&p, &slots, Direction::Upload, LeafQdisc::Pfifo);
        assert_eq!(
            (up.classes[0].rate_bps, up.classes[0].ceil_bps),
            (10_000_000, 20_000_000)
        );
        assert_eq!(up.default_class.rate_bps, 35_000_000);
    }
}
