//! Names of maps and programs, shared so the daemon finds them (and their
//! pins) by name.

/// Map names, shared so the daemon finds the maps (and their pins) by name.
pub mod map_names {
    pub const PREFIXES_V4: &str = "JATAH_V4";
    pub const PREFIXES_V6: &str = "JATAH_V6";
    pub const CACHE: &str = "JATAH_CACHE";
    pub const COUNTERS: &str = "JATAH_COUNTERS";
    pub const CONFIG: &str = "JATAH_CONFIG";
    pub const STATS: &str = "JATAH_STATS";
    pub const SLOT_OWNERS: &str = "JATAH_OWNERS";
    pub const RTT: &str = "JATAH_RTT";
    pub const HANDSHAKES: &str = "JATAH_HS";
    pub const TCP_LOSS: &str = "JATAH_TCP";
    pub const TCP_FLOWS: &str = "JATAH_FLOWS";
    /// Where recent TCP connections toward OPDs began (their first bytes
    /// ride the interactive lane).
    pub const STARTS: &str = "JATAH_STARTS";
}

/// Program names as they appear in the object file and in `bpftool prog`
/// (kernel object names hold at most 15 characters).
pub mod program_names {
    /// LAN egress: classifies download by destination address.
    pub const DOWNLOAD: &str = "jatah_dl";
    /// LAN ingress: marks upload with the OPD slot before NAT.
    pub const UPLOAD_MARK: &str = "jatah_ul_mark";
    /// WAN egress: classifies upload by mark (or source address).
    pub const UPLOAD: &str = "jatah_ul";
    /// [`UPLOAD`] for a WAN without a link layer (PPP, WireGuard, tun).
    pub const UPLOAD_L3: &str = "jatah_ul_l3";
}
