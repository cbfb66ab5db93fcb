//! The interfaces a policy names, resolved on this host: which exist,
//! which device carries the LAN's HTB tree (the trunk under VLAN
//! subinterfaces), and whether jatah can read their packets (Ethernet, or
//! a WAN without a link layer).

use std::path::{Path, PathBuf};

use tracing::info;

use crate::datapath::Attachment;
use crate::policy::Policy;

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
    /// The WAN has no link layer (PPP/PPPoE, WireGuard, tun, raw-IP
    /// modems): its packets start with the IP header.
    pub wan_l3: bool,
}

impl Interfaces {
    pub fn attachment(&self) -> Attachment {
        Attachment {
            lan: self.lan_device.name.clone(),
            wan: self.wan.name.clone(),
            wan_l3: self.wan_l3,
        }
    }
}

/// Link types (`/sys/class/net/*/type`, the kernel's ARPHRD_*) whose
/// packets start with the IP header, as jatah's upload classifier for them
/// reads them: PPP (and PPPoE's ppp devices), raw-IP modems, IP-in-IP and
/// SIT tunnels, point-to-point GRE, and "none" (tun, WireGuard).
const LINK_TYPES_L3: [(u16, &str); 8] = [
    (512, "ppp"),
    (519, "rawip"),
    (768, "ipip"),
    (769, "ip6tnl"),
    (776, "sit"),
    (778, "gre"),
    (823, "ip6gre"),
    (65534, "none (tun, wireguard)"),
];
/// Ethernet (and everything that looks like it: bridges, VLANs, bonds,
/// veth, macvlan).
const LINK_TYPE_ETHER: u16 = 1;

/// An interface's link type, from sysfs.
fn link_type(name: &str) -> Option<u16> {
    std::fs::read_to_string(PathBuf::from("/sys/class/net").join(name).join("type"))
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// Whether jatah can classify `name`'s packets as the `key` interface:
/// Some(true) without a link layer, Some(false) for Ethernet; an error
/// naming the type otherwise (the LAN must be Ethernet-like: OPD networks
/// are).
fn classifiable(file: &str, name: &str, key: &'static str) -> Result<bool, GatewayError> {
    let t = link_type(name).unwrap_or(LINK_TYPE_ETHER);
    if t == LINK_TYPE_ETHER {
        return Ok(false);
    }
    if key == "gateway.wan" && LINK_TYPES_L3.iter().any(|(l3, _)| *l3 == t) {
        return Ok(true);
    }
    Err(GatewayError::LinkType {
        file: file.to_string(),
        name: name.to_string(),
        key,
        link_type: t,
    })
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
    #[error(
        "OPD {opd}: interface {name:?} {reason}; name the LAN device, one of its VLAN \
         subinterfaces, or a port of it (a bridge port) that serves this OPD"
    )]
    Place {
        opd: String,
        name: String,
        reason: String,
    },
    #[error(
        "{file}: interface {name:?} ({key}) has link type {link_type} (see /sys/class/net/{name}/type), \
         which jatah cannot classify: the LAN must be Ethernet-like (a NIC, bridge, VLAN or bond); \
         the WAN Ethernet-like or without a link layer (PPP/PPPoE, WireGuard, tun, raw-IP, \
         IP-in-IP, SIT or point-to-point GRE)"
    )]
    LinkType {
        file: String,
        name: String,
        key: &'static str,
        link_type: u16,
    },
    #[error(transparent)]
    Datapath(#[from] crate::datapath::DatapathError),
    #[error(transparent)]
    Shaper(#[from] crate::shaper::ShaperError),
}

pub(crate) fn ifindex(name: &str) -> Option<u32> {
    crate::sys::interface_index(name)
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

/// Where packets from an OPD bound to `name` come in, as the LAN side sees
/// them, and the port `jatah_ul_mark` must also be on (None for the LAN
/// device and its VLAN subinterfaces, which it is on already): the LAN
/// device itself; a VLAN subinterface of it (the trunk's ifindex and the
/// VLAN id); or a port of it (a bridge port: its own ifindex).
pub fn place_of(
    opd: &str,
    name: &str,
    lan: &Interface,
) -> Result<(jatah_common::Place, Option<String>), GatewayError> {
    use jatah_common::Place;
    let fail = |reason: &str| GatewayError::Place {
        opd: opd.to_string(),
        name: name.to_string(),
        reason: reason.to_string(),
    };
    let index = ifindex(name).ok_or_else(|| fail("does not exist on this host"))?;
    if name == lan.name {
        let place = Place { ifindex: lan.ifindex, ..Place::default() };
        return Ok((place, None));
    }
    if shaping_device(name) == lan.name {
        let vlan = vlan_id(name).ok_or_else(|| fail("is a VLAN subinterface whose id cannot be read"))?;
        let place = Place { ifindex: lan.ifindex, vlan, _pad: 0 };
        return Ok((place, None));
    }
    let master = std::fs::read_link(PathBuf::from("/sys/class/net").join(name).join("master"))
        .ok()
        .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()));
    if master.as_deref() != Some(lan.name.as_str()) {
        return Err(fail(&format!(
            "is not on the LAN device {:?} (neither it, a VLAN of it, nor a port of it)",
            lan.name
        )));
    }
    let place = Place { ifindex: index, ..Place::default() };
    Ok((place, Some(name.to_string())))
}

/// A VLAN subinterface's id, from /proc/net/vlan.
fn vlan_id(name: &str) -> Option<u16> {
    let text = std::fs::read_to_string(format!("/proc/net/vlan/{name}")).ok()?;
    let mut words = text.split_whitespace();
    words.find(|w| *w == "VID:")?;
    words.next()?.parse().ok()
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
    let wan_l3 = classifiable(file, &wan.name, "gateway.wan")?;
    classifiable(file, &lan_device.name, "gateway.lan")?;
    if wan_l3 {
        info!(
            interface = %wan.name,
            "the WAN has no link layer: upload is classified from the IP header on"
        );
    }
    Ok(Interfaces {
        wan,
        lan_device,
        wan_l3,
    })
}

