//! Puts a policy into force on this gateway: resolves the interfaces it
//! names, gives every OPD its slot in the data path, and builds the HTB trees
//! (one per direction) that enforce the allocations.

use std::path::{Path, PathBuf};

use jatah_common::{DEFAULT_CLASS_MINOR, opd_class_minor};
use tracing::info;

use crate::datapath::{Attachment, Datapath, OpdPrefixes, prefixes_of};
use crate::policy::{Direction, LeafQdisc as PolicyLeaf, Policy};
use crate::shaper::{ClassSpec, HtbTree, LeafQdisc, Shaper};

/// An interface jatah works on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Interface {
    pub name: String,
    pub ifindex: u32,
}

/// The interfaces a policy names, resolved on this host.
#[derive(Debug, Clone)]
pub struct Interfaces {
    pub wan: Interface,
    /// Where download is shaped and the LAN programs attach: the LAN
    /// interface itself, or the trunk under its VLAN subinterfaces.
    pub lan_device: Interface,
}

impl Interfaces {
    pub fn attachment(&self) -> Attachment {
        Attachment {
            lan: self.lan_device.name.clone(),
            wan: self.wan.name.clone(),
        }
    }
}

/// Errors that stop jatah from putting a policy into force.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    #[error("{file}: interface {name:?} ({key}) does not exist on this host")]
    NoSuchInterface {
        file: String,
        name: String,
        key: &'static str,
    },
    #[error(
        "{file}: gateway.lan names interfaces on different devices ({0}); jatah shapes all OPDs \
         of a direction in one HTB tree, so the LAN interfaces must be VLAN subinterfaces of \
         one trunk (or one interface, e.g. a bridge)",
        devices.join(", ")
    )]
    SeveralLanDevices { file: String, devices: Vec<String> },
    #[error(transparent)]
    Datapath(#[from] crate::datapath::DatapathError),
    #[error(transparent)]
    Shaper(#[from] crate::shaper::ShaperError),
}

fn ifindex(name: &str) -> Option<u32> {
    let c = std::ffi::CString::new(name).ok()?;
    // SAFETY: NUL-terminated string.
    let idx = unsafe { libc::if_nametoindex(c.as_ptr()) };
    (idx != 0).then_some(idx)
}

/// The device under a VLAN subinterface (its `lower_*` link in sysfs), or
/// the interface itself.
fn shaping_device(name: &str) -> String {
    let dir = PathBuf::from("/sys/class/net").join(name);
    let is_vlan = Path::new(&format!("/proc/net/vlan/{name}")).exists()
        || std::fs::read_to_string(dir.join("uevent"))
            .map(|u| u.lines().any(|l| l == "DEVTYPE=vlan"))
            .unwrap_or(false);
    if is_vlan && let Ok(entries) = std::fs::read_dir(&dir) {
        for e in entries.flatten() {
            let n = e.file_name().to_string_lossy().into_owned();
            if let Some(lower) = n.strip_prefix("lower_") {
                return shaping_device(lower);
            }
        }
    }
    name.to_string()
}

/// Resolves the policy's interfaces on this host (the check `jatah check`
/// cannot do).
pub fn resolve_interfaces(policy: &Policy, file: &str) -> Result<Interfaces, GatewayError> {
    let wan_name = &policy.gateway.wan;
    let wan = Interface {
        name: wan_name.clone(),
        ifindex: ifindex(wan_name).ok_or_else(|| GatewayError::NoSuchInterface {
            file: file.to_string(),
            name: wan_name.clone(),
            key: "gateway.wan",
        })?,
    };
    let mut devices: Vec<String> = Vec::new();
    for lan in &policy.gateway.lan {
        if ifindex(lan).is_none() {
            return Err(GatewayError::NoSuchInterface {
                file: file.to_string(),
                name: lan.clone(),
                key: "gateway.lan",
            });
        }
        let dev = shaping_device(lan);
        if !devices.contains(&dev) {
            devices.push(dev);
        }
    }
    if devices.len() != 1 {
        return Err(GatewayError::SeveralLanDevices {
            file: file.to_string(),
            devices,
        });
    }
    let name = devices.remove(0);
    let lan_device = Interface {
        ifindex: ifindex(&name).ok_or_else(|| GatewayError::NoSuchInterface {
            file: file.to_string(),
            name: name.clone(),
            key: "gateway.lan (trunk)",
        })?,
        name,
    };
    Ok(Interfaces { wan, lan_device })
}

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

/// The HTB tree of one direction: root = gateway capacity, one class per
/// OPD (rate = guaranteed, ceil = ceiling), and the default class, which is
/// guaranteed what the OPDs leave over (at least 1% of capacity) and may
/// borrow up to the capacity.
pub fn htb_tree(policy: &Policy, datapath: &Datapath, dir: Direction, leaf: LeafQdisc) -> HtbTree {
    let capacity = policy.capacity(dir).bits_per_second();
    let mut classes = Vec::with_capacity(policy.opds.len());
    let mut guaranteed_sum = 0u64;
    for opd in &policy.opds {
        let Some(&slot) = datapath.slots().get(&opd.id) else {
            continue;
        };
        let a = opd.allocation(dir);
        guaranteed_sum += a.guaranteed.bits_per_second();
        classes.push(ClassSpec {
            minor: opd_class_minor(slot) as u16,
            rate_bps: a.guaranteed.bits_per_second(),
            ceil_bps: a.ceiling.bits_per_second(),
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
            rate_bps: leftover.min(capacity),
            ceil_bps: capacity,
        },
        classes,
        leaf,
        leaf_limit: policy.gateway.leaf_limit,
    }
}

fn leaf_preference(p: PolicyLeaf) -> Vec<LeafQdisc> {
    match p {
        PolicyLeaf::Auto => vec![LeafQdisc::FqCodel, LeafQdisc::Cake, LeafQdisc::Pfifo],
        PolicyLeaf::FqCodel => vec![LeafQdisc::FqCodel, LeafQdisc::Pfifo],
        PolicyLeaf::Cake => vec![LeafQdisc::Cake, LeafQdisc::Pfifo],
        PolicyLeaf::Pfifo => vec![LeafQdisc::Pfifo],
    }
}

/// Brings the data path and both HTB trees in line with `policy`.
/// Maps are synced first: a packet pointed at a class HTB does not have yet
/// falls into the default class for that moment (never dropped), and a
/// removed OPD's prefixes are gone before its class is deleted.
pub fn apply(
    policy: &Policy,
    ifaces: &Interfaces,
    datapath: &mut Datapath,
    shaper: &mut Shaper,
) -> Result<(), GatewayError> {
    datapath.set_mark_mask(policy.gateway.mark_mask)?;
    datapath.set_rtt_tracking(policy.diagnosis.rtt_tracking)?;
    datapath.sync_opds(&opd_prefixes(policy))?;
    let pref = leaf_preference(policy.gateway.leaf_qdisc);
    for (dir, iface) in [
        (Direction::Download, &ifaces.lan_device),
        (Direction::Upload, &ifaces.wan),
    ] {
        let leaf = shaper.resolve_leaf(iface.ifindex, &pref);
        let tree = htb_tree(policy, datapath, dir, leaf);
        let report = shaper.apply(iface.ifindex, &tree)?;
        info!(
            direction = dir.as_str(),
            interface = %iface.name,
            classes = tree.classes.len(),
            leaf = ?leaf,
            report = ?report,
            "HTB tree in force"
        );
    }
    Ok(())
}
