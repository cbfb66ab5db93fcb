//! Types and constants shared by jatah's eBPF programs (`ebpf/`) and its
//! daemon (`daemon/`). Every map key and value is defined here once, as
//! `#[repr(C)]` with no implicit padding, so both sides agree on the layout.
//!
//! Whenever a map layout here changes, bump [`LAYOUT_VERSION`]: pinned maps
//! live under a directory named after it, so a daemon never misreads maps
//! pinned by an older build.
#![no_std]

/// Version of the pinned map layout; part of the bpffs pin directory name.
pub const LAYOUT_VERSION: u32 = 2;

/// Number of OPD slots. Slot numbers index the counter array and name the
/// OPD's HTB class, so they are stable for as long as the OPD exists.
pub const MAX_OPDS: u32 = 16_384;

/// Counter slot for traffic that matches no OPD (and for packets jatah
/// cannot parse, which are also counted in [`Stat`]).
pub const SLOT_UNCLASSIFIED: u32 = MAX_OPDS;

/// Entries of the per-OPD counter array: every OPD slot plus unclassified.
pub const COUNTER_SLOTS: u32 = MAX_OPDS + 1;

/// "No OPD" as stored in the address cache.
pub const NO_SLOT: u32 = u32::MAX;

/// Index of each direction in [`Counters`]. Directions are seen from the OPD:
/// download = Internet -> OPD, upload = OPD -> Internet.
pub const DOWNLOAD: usize = 0;
pub const UPLOAD: usize = 1;

/// HTB handle major number of jatah's root qdiscs (`1:`).
pub const HTB_MAJOR: u32 = 1;
/// Class `1:1`: the gateway's capacity for a direction.
pub const ROOT_CLASS_MINOR: u32 = 1;
/// Class `1:2`: unclassified and unparseable traffic.
pub const DEFAULT_CLASS_MINOR: u32 = 2;
/// OPD slot `s` is HTB class `1:(s + OPD_CLASS_MINOR_BASE)`.
pub const OPD_CLASS_MINOR_BASE: u32 = 16;

/// HTB class minor number of an OPD slot.
#[inline(always)]
pub const fn opd_class_minor(slot: u32) -> u32 {
    slot + OPD_CLASS_MINOR_BASE
}

/// `skb->priority` value that puts a packet into HTB class `1:minor`.
#[inline(always)]
pub const fn htb_priority(minor: u32) -> u32 {
    (HTB_MAJOR << 16) | minor
}

/// Per-OPD traffic counters, one per CPU in a `PerCpuArray` indexed by slot.
/// Bytes are what the qdisc accounts: the frame length at the classifier,
/// with the headers of every GSO segment counted (like `qdisc_pkt_len`).
#[repr(C)]
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    pub bytes: [u64; 2],
    pub packets: [u64; 2],
}

/// [`Config::flags`] bit: time TCP handshakes (per-OPD LAN/WAN RTT).
pub const FLAG_RTT: u32 = 1;
/// [`Config::flags`] bits 8-10: log2 of the handshake sampling rate. Only
/// one connection in `1 << shift` is timed (chosen by its ports, so every
/// packet of a connection agrees): reading the kernel clock is the dearest
/// part of timing a handshake, and a sample of connections gives the same
/// round-trip distribution.
pub const RTT_SAMPLE_SHIFT_POS: u32 = 8;
/// Largest sampling shift: one handshake in 128.
pub const RTT_SAMPLE_SHIFT_MAX: u32 = 7;

/// The sampling shift held in `flags`.
#[inline(always)]
pub fn rtt_sample_shift(flags: u32) -> u32 {
    (flags >> RTT_SAMPLE_SHIFT_POS) & RTT_SAMPLE_SHIFT_MAX
}

/// Whether the connection between these ports is timed under the sampling
/// shift in `flags`. Ports rather than the whole [`handshake_hash`]: one
/// end's port is ephemeral, so its low bits spread connections evenly, and
/// every packet of a connection agrees.
#[inline(always)]
pub fn handshake_sampled(opd_port: u16, remote_port: u16, flags: u32) -> bool {
    u32::from(opd_port ^ remote_port) & ((1u32 << rtt_sample_shift(flags)) - 1) == 0
}

/// Runtime settings the daemon writes into the config array (index 0).
#[repr(C)]
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct Config {
    /// Bumped by the daemon after every change to the prefix tries, so the
    /// address cache drops entries decided under an older policy.
    pub epoch: u32,
    /// Bits of `skb->mark` that carry the OPD slot from LAN ingress to WAN
    /// egress (upload is attributed before NAT rewrites the source).
    pub mark_mask: u32,
    /// Position of the lowest bit of `mark_mask`.
    pub mark_shift: u32,
    /// `FLAG_*` bits.
    pub flags: u32,
}

/// An IPv6 address, or an IPv4 address mapped as `::ffff:a.b.c.d`, in
/// network byte order.
#[repr(C)]
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct AddrKey {
    pub addr: [u8; 16],
}

/// Cache index of an address: a multiplicative hash of its four words.
#[inline(always)]
pub fn cache_index(a: &AddrKey) -> u32 {
    let w = |i: usize| u32::from_ne_bytes([a.addr[i], a.addr[i + 1], a.addr[i + 2], a.addr[i + 3]]);
    let folded = w(0) ^ w(4) ^ w(8) ^ w(12);
    folded.wrapping_mul(0x9e37_79b1) >> (32 - CACHE_BITS)
}

/// One entry of the per-CPU, direct-mapped address cache: the slot (or
/// [`NO_SLOT`]) decided for `addr` at `epoch`.
#[repr(C)]
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct CacheEntry {
    pub addr: AddrKey,
    pub slot: u32,
    pub epoch: u32,
}

/// The OPD id that owns a slot (ASCII, zero-padded; all zero = free). Kept
/// in a pinned map so a restarted daemon gives every OPD its old slot back,
/// and with it its counters and HTB class.
#[repr(C)]
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct SlotOwner {
    pub id: [u8; 32],
}

/// Sides of a TCP handshake as seen from the gateway: the LAN side (gateway
/// to the OPD host and back) and the WAN side (gateway to the Internet host
/// and back).
pub const SIDE_LAN: u32 = 0;
pub const SIDE_WAN: u32 = 1;

/// Buckets of the RTT histograms: bucket `k` (k < 15) holds round trips
/// shorter than `250 us * 2^k`; the last one everything longer (1 s .. +Inf
/// starts at k = 12).
pub const RTT_BUCKETS: usize = 16;
/// Upper bound of RTT bucket 0, in nanoseconds.
pub const RTT_BUCKET0_NS: u64 = 250_000;

/// Bucket of a round trip of `ns` nanoseconds.
#[inline(always)]
pub fn rtt_bucket(ns: u64) -> usize {
    let q = ns / RTT_BUCKET0_NS;
    let bits = (64 - q.leading_zeros()) as usize;
    if bits >= RTT_BUCKETS {
        RTT_BUCKETS - 1
    } else {
        bits
    }
}

/// Handshake round trips of one OPD on one side (index `slot * 2 + side`).
/// Shared by all CPUs and updated with atomic adds: handshakes are rare
/// next to data packets.
#[repr(C)]
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct RttHistogram {
    pub buckets: [u64; RTT_BUCKETS],
    pub sum_ns: u64,
    pub count: u64,
    /// Handshakes whose leg on this side began (SYN or SYN-ACK sent on).
    pub started: u64,
    /// SYNs or SYN-ACKs seen again for a pending handshake: the first one
    /// went unanswered for a retransmission timeout.
    pub retransmits: u64,
}

impl Default for RttHistogram {
    fn default() -> Self {
        RttHistogram {
            buckets: [0; RTT_BUCKETS],
            sum_ns: 0,
            count: 0,
            started: 0,
            retransmits: 0,
        }
    }
}

/// A TCP handshake in progress, in a direct-mapped table indexed by a hash
/// of the connection. The OPD's end is `opd_*`, the Internet's `remote_*`.
#[repr(C)]
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct Handshake {
    pub opd_addr: AddrKey,
    pub remote_addr: AddrKey,
    pub opd_port: u16,
    pub remote_port: u16,
    pub hash: u32,
    pub slot: u32,
    /// One of the `HS_*` states.
    pub state: u32,
    /// When the SYN passed the gateway.
    pub t_syn: u64,
    /// When the SYN-ACK passed the gateway.
    pub t_synack: u64,
}

/// Handshake table states.
pub const HS_EMPTY: u32 = 0;
/// An OPD host sent a SYN to the Internet.
pub const HS_OUT_SYN: u32 = 1;
/// ... and the Internet's SYN-ACK went on to the OPD host.
pub const HS_OUT_SYNACK: u32 = 2;
/// An Internet host sent a SYN to an OPD host.
pub const HS_IN_SYN: u32 = 3;
/// ... and the OPD host's SYN-ACK went on to the Internet.
pub const HS_IN_SYNACK: u32 = 4;

/// Entries of the handshake table (a power of two).
pub const HANDSHAKE_ENTRIES: u32 = 16_384;
pub const HANDSHAKE_BITS: u32 = 14;

/// Hash of a connection (OPD end, Internet end), for the handshake table.
#[inline(always)]
pub fn handshake_hash(opd: &AddrKey, opd_port: u16, remote: &AddrKey, remote_port: u16) -> u32 {
    let w = |a: &AddrKey, i: usize| {
        u32::from_ne_bytes([a.addr[i], a.addr[i + 1], a.addr[i + 2], a.addr[i + 3]])
    };
    let mut h = ((opd_port as u32) << 16) | remote_port as u32;
    let mut i = 0;
    while i < 16 {
        h = (h ^ w(opd, i)).wrapping_mul(0x9e37_79b1);
        h = (h ^ w(remote, i)).wrapping_mul(0x85eb_ca6b);
        i += 4;
    }
    h ^ (h >> 15)
}

/// Indexes of the per-CPU data path statistics array (`u64` each).
#[repr(u32)]
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Stat {
    /// Download packets the parser could not read (passed unshaped).
    MalformedDownload = 0,
    /// Upload packets the parser could not read (passed unshaped).
    MalformedUpload = 1,
    /// Packets that are not IPv4/IPv6 (ARP, LLDP, ...), both directions.
    NonIp = 2,
}
/// Number of entries in the statistics array.
pub const STAT_COUNT: u32 = 3;

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
}

/// Entries of the address cache, per CPU (a power of two: the index is the
/// top bits of a multiplicative hash of the address).
pub const CACHE_ENTRIES: u32 = 4_096;
/// log2 of [`CACHE_ENTRIES`].
pub const CACHE_BITS: u32 = 12;
/// Capacity of each prefix trie.
pub const MAX_PREFIXES: u32 = 131_072;

const _: () = assert!(core::mem::size_of::<Counters>() == 32);
const _: () = assert!(core::mem::size_of::<Config>() == 16);
const _: () = assert!(core::mem::size_of::<AddrKey>() == 16);
const _: () = assert!(core::mem::size_of::<CacheEntry>() == 24);
const _: () = assert!(CACHE_ENTRIES == 1 << CACHE_BITS);
const _: () = assert!(core::mem::size_of::<SlotOwner>() == 32);
const _: () = assert!(core::mem::size_of::<RttHistogram>() == 160);
const _: () = assert!(core::mem::size_of::<Handshake>() == 64);
const _: () = assert!(HANDSHAKE_ENTRIES == 1 << HANDSHAKE_BITS);

#[cfg(feature = "user")]
mod pod {
    // SAFETY: all types are repr(C), Copy, and have no padding (asserted above).
    unsafe impl aya::Pod for super::Counters {}
    unsafe impl aya::Pod for super::Config {}
    unsafe impl aya::Pod for super::AddrKey {}
    unsafe impl aya::Pod for super::CacheEntry {}
    unsafe impl aya::Pod for super::SlotOwner {}
    unsafe impl aya::Pod for super::RttHistogram {}
    unsafe impl aya::Pod for super::Handshake {}
}
