//! Where an OPD's packets may come in from: identity by place as well as
//! by address. A host on one office's network that takes another office's
//! addresses still comes in on its own office's port or VLAN.

use crate::{AddrKey, MAX_OPDS};

/// The place an OPD is bound to: the ifindex a packet came in on at LAN
/// ingress (a bridge port, or the LAN trunk) and, on a trunk, its VLAN id.
/// All zero: anywhere (the OPD names no interface).
#[repr(C)]
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct Place {
    pub ifindex: u32,
    /// 0: untagged or any VLAN on that ifindex.
    pub vlan: u16,
    pub _pad: u16,
}

impl Place {
    /// Whether a packet that came in on `ifindex` with VLAN id `vlan` (0:
    /// untagged) is at this place.
    #[inline(always)]
    pub fn allows(&self, ifindex: u32, vlan: u16) -> bool {
        self.ifindex == 0 || (self.ifindex == ifindex && (self.vlan == 0 || self.vlan == vlan))
    }
}

/// A connection to the status page, as its SYN came in at LAN ingress:
/// the visitor's address and source port.
#[repr(C)]
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct VisitKey {
    pub addr: AddrKey,
    pub port: u16,
    pub _pad: u16,
}

/// Status-page connections remembered (least recently used go first).
pub const VISIT_ENTRIES: u32 = 4_096;

/// The mark tag of upload already decided at LAN ingress to be no OPD's
/// (from no OPD's address, or from an OPD's address at the wrong place):
/// the WAN side does not look at its source address again, and a second
/// LAN-side program (the bridge above a port) keeps it.
pub const NO_OPD_TAG: u32 = MAX_OPDS + 1;

pub mod place_maps {
    /// `Place` per OPD slot.
    pub const PLACES: &str = "JATAH_PLACES";
    /// Per slot: packets from its addresses that came in elsewhere.
    pub const MISPLACED: &str = "JATAH_MISPLACED";
    /// `VisitKey` -> `Place` of status-page SYNs.
    pub const VISITS: &str = "JATAH_VISITS";
    /// The status listener's TCP port (0: none), one u32.
    pub const STATUS_PORT: &str = "JATAH_SPORT";
}

const _: () = assert!(core::mem::size_of::<Place>() == 8);
const _: () = assert!(core::mem::size_of::<VisitKey>() == 20);

#[cfg(feature = "user")]
mod pod {
    // SAFETY: repr(C), Copy, no padding (asserted above).
    unsafe impl aya::Pod for super::Place {}
    unsafe impl aya::Pod for super::VisitKey {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_place_allows_its_interface_and_vlan_and_anywhere_allows_all() {
        let anywhere = Place::default();
        assert!(anywhere.allows(7, 0) && anywhere.allows(9, 20));
        let port = Place {
            ifindex: 7,
            ..Place::default()
        };
        assert!(port.allows(7, 0) && port.allows(7, 20));
        assert!(!port.allows(8, 0));
        let vlan = Place {
            ifindex: 3,
            vlan: 20,
            _pad: 0,
        };
        assert!(vlan.allows(3, 20));
        assert!(!vlan.allows(3, 30) && !vlan.allows(3, 0) && !vlan.allows(4, 20));
    }
}
