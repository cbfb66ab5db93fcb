//! Types and constants shared by jatah's eBPF programs (`ebpf/`) and its
//! daemon (`daemon/`). Every map key and value is defined here once, as
//! `#[repr(C)]` with no implicit padding, so both sides agree on the layout.
//!
//! Whenever a map layout here changes, bump [`LAYOUT_VERSION`]: pinned maps
//! live under a directory named after it, so a daemon never misreads maps
//! pinned by an older build.
#![no_std]

mod hosts;
mod interactive;
mod names;
mod place;
pub use hosts::{FLAG_HOSTS, HOST_ENTRIES, HOST_FLUSH_PACKETS, HostCount, host_maps};
pub use interactive::{
    ConnectionStart, FIRST_BYTES, FLAG_FIRST_BYTES, INTERACTIVE_DSCP, INTERACTIVE_UDP_MAX,
    IPPROTO_ICMP, IPPROTO_ICMPV6, STARTS_BITS, STARTS_ENTRIES, Traits, fold_addr, in_first_bytes,
    is_interactive, start_index,
};
pub use names::{map_names, program_names};
pub use place::{NO_OPD_TAG, Place, VISIT_ENTRIES, VisitKey, place_maps};
/// Version of the pinned map layout; part of the bpffs pin directory name.
pub const LAYOUT_VERSION: u32 = 4;

/// Number of OPD slots. Slot numbers index the counter array and name the
/// OPD's HTB classes, so they are stable for as long as the OPD exists.
/// Each slot numbers three classes (the OPD and its two lanes) in the
/// 16-bit minor space; the interactive lanes must end below `0xffe0`.
pub const MAX_OPDS: u32 = 16_000;

/// Counter slot for traffic of no OPD (and unparsed packets, also in [`Stat`]).
pub const SLOT_UNCLASSIFIED: u32 = MAX_OPDS;

/// Entries of the per-OPD counter array: every OPD slot plus unclassified.
pub const COUNTER_SLOTS: u32 = MAX_OPDS + 1;

/// "No OPD" as stored in the address cache.
pub const NO_SLOT: u32 = u32::MAX;

/// Index of each direction in [`Counters`] and in every per-direction array
/// on both sides. Directions are seen from the OPD: download = Internet ->
/// OPD, upload = OPD -> Internet.
pub const DOWNLOAD: usize = 0;
pub const UPLOAD: usize = 1;
/// Number of directions: the length of every per-direction array.
pub const DIRECTIONS: usize = 2;

/// HTB handle major number of jatah's root qdiscs (`1:`).
pub const HTB_MAJOR: u32 = 1;
/// Class `1:1`: the gateway's capacity for a direction.
pub const ROOT_CLASS_MINOR: u32 = 1;
/// Class `1:2`: unclassified and unparseable traffic.
pub const DEFAULT_CLASS_MINOR: u32 = 2;
/// OPD slot `s` is HTB class `1:(s + OPD_CLASS_MINOR_BASE)`.
pub const OPD_CLASS_MINOR_BASE: u32 = 16;

/// Group classes take minors `GROUP_MINOR_BASE .. GROUP_MINOR_BASE +
/// GROUP_MINORS`, above every OPD class.
pub const GROUP_MINOR_BASE: u32 = 0x6000;
/// How many minors are set aside for groups.
pub const GROUP_MINORS: u32 = 0x2000;
/// Largest minor of a class jatah numbers itself (OPDs, groups, default)
/// that may carry a leaf qdisc: the leaf qdisc under class `1:minor` has
/// handle `minor:`. The lanes below take the minors from 0x8000 up.
pub const MAX_LEAF_MINOR: u32 = 0x7fff;

/// With lanes on, OPD slot `s`'s class `1:(s + 16)` is an inner class with
/// two children: its bulk lane `1:(BULK_LANE_MINOR_BASE + s)` and its
/// interactive lane `1:(INTERACTIVE_LANE_MINOR_BASE + s)`, each with the
/// leaf qdisc of the same number. Qdisc handles from `8000:` up are also
/// where the kernel picks a handle for a qdisc added without one, but it
/// skips those in use, and every qdisc under jatah's root is jatah's.
pub const BULK_LANE_MINOR_BASE: u32 = 0x8000;
/// See [`BULK_LANE_MINOR_BASE`].
pub const INTERACTIVE_LANE_MINOR_BASE: u32 = 0xc000;

/// HTB class minor number of an OPD slot.
#[inline(always)]
pub const fn opd_class_minor(slot: u32) -> u32 {
    slot + OPD_CLASS_MINOR_BASE
}

/// HTB class minor of an OPD slot's bulk lane.
#[inline(always)]
pub const fn bulk_lane_minor(slot: u32) -> u32 {
    slot + BULK_LANE_MINOR_BASE
}

/// HTB class minor of an OPD slot's interactive lane.
#[inline(always)]
pub const fn interactive_lane_minor(slot: u32) -> u32 {
    slot + INTERACTIVE_LANE_MINOR_BASE
}

/// HTB class id `1:minor`.
#[inline(always)]
pub const fn htb_class_id(minor: u32) -> u32 {
    (HTB_MAJOR << 16) | minor
}

/// Handle `minor:` of the leaf qdisc under class `1:minor`.
#[inline(always)]
pub const fn htb_leaf_handle(minor: u32) -> u32 {
    minor << 16
}

/// The OPD class a lane's minor belongs to; any other minor as it is.
#[inline(always)]
pub const fn lane_owner(minor: u32) -> u32 {
    if minor >= INTERACTIVE_LANE_MINOR_BASE {
        opd_class_minor(minor - INTERACTIVE_LANE_MINOR_BASE)
    } else if minor >= BULK_LANE_MINOR_BASE {
        opd_class_minor(minor - BULK_LANE_MINOR_BASE)
    } else {
        minor
    }
}

const _: () = assert!(opd_class_minor(MAX_OPDS - 1) < GROUP_MINOR_BASE);
const _: () = assert!(GROUP_MINOR_BASE + GROUP_MINORS - 1 <= MAX_LEAF_MINOR);
const _: () = assert!(MAX_LEAF_MINOR < BULK_LANE_MINOR_BASE);
const _: () = assert!(bulk_lane_minor(MAX_OPDS - 1) < INTERACTIVE_LANE_MINOR_BASE);
// Minors from 0xffe0 are tc's special values, and `ffff:` is clsact's.
const _: () = assert!(interactive_lane_minor(MAX_OPDS - 1) < 0xffe0);

/// `skb->priority` value that puts a packet into HTB class `1:minor` (the
/// class id itself).
#[inline(always)]
pub const fn htb_priority(minor: u32) -> u32 {
    htb_class_id(minor)
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
/// network byte order. Aligned to 4 so that the classifier reads, compares
/// and hashes it a word at a time: the BPF code generator splits a load it
/// cannot prove aligned into byte loads.
#[repr(C, align(4))]
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
    /// The host's bytes and packets (download, upload) not yet added to
    /// its per-host entry (`host_maps::HOSTS`): moved there every
    /// [`HOST_FLUSH_PACKETS`] packets and when another address takes
    /// this entry.
    pub bytes: [u64; 2],
    pub packets: [u64; 2],
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
/// Number of sides.
pub const SIDES: u32 = 2;

/// Index of an OPD slot's histogram for one side in the RTT array.
#[inline(always)]
pub const fn rtt_index(slot: u32, side: u32) -> u32 {
    slot * SIDES + side
}

/// Buckets of the RTT histograms: bucket `k` (k < 15) holds round trips
/// shorter than `250 us * 2^k`; the last one everything longer (1 s .. +Inf
/// starts at k = 12).
pub const RTT_BUCKETS: usize = 16;
/// Upper bound of RTT bucket 0, in nanoseconds.
pub const RTT_BUCKET0_NS: u64 = 250_000;

/// Upper bound of RTT bucket `k` in nanoseconds (`k < RTT_BUCKETS - 1`;
/// the last bucket has no bound).
#[inline(always)]
pub const fn rtt_bucket_bound_ns(k: usize) -> u64 {
    RTT_BUCKET0_NS << k
}

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

/// Handshake round trips of one OPD on one side (index [`rtt_index`]).
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

/// [`Config::flags`] bit: the OPD classes have lanes ([`BULK_LANE_MINOR_BASE`]);
/// the classifiers send each packet to its OPD's bulk or interactive lane
/// ([`is_interactive`]) instead of to the OPD's class.
pub const FLAG_LANES: u32 = 4;

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

/// [`Config::flags`] bit: follow the sequence numbers of the sampled TCP
/// connections (the same sample as handshake timing) and count their
/// retransmissions per OPD, side and direction ([`TcpLoss`]).
pub const FLAG_TCP_LOSS: u32 = 2;

/// Retransmissions seen in the sampled TCP connections of one OPD, one per
/// CPU in a `PerCpuArray` indexed by slot. Counted in segments: a GSO
/// packet counts as its `gso_segs` segments.
#[repr(C)]
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct TcpLoss {
    /// Data segments judged (in order, out of order or retransmitted), per
    /// direction: the denominator of the loss ratios.
    pub segments: [u64; DIRECTIONS],
    /// Retransmitted segments by the side the original was lost on
    /// (`[SIDE_LAN]`, `[SIDE_WAN]`), per direction.
    pub retransmitted: [[u64; DIRECTIONS]; SIDES as usize],
    /// Payload bytes of those segments, per direction: what the gateway
    /// forwarded, first copies and copies sent again alike.
    pub payload_bytes: [u64; DIRECTIONS],
    /// How far the other end's ACK number moved on, per direction of the
    /// data it acknowledges: the bytes that reached it. Followed for
    /// upload only (`[DOWNLOAD]` stays 0): upload is counted where it
    /// enters the gateway, so this, against `payload_bytes`, is the share
    /// the ISP carried.
    pub acked_bytes: [u64; DIRECTIONS],
}

/// Where one direction of a followed connection stands. Sequence numbers
/// are compared with serial-number arithmetic (RFC 1982), so they wrap.
#[repr(C)]
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct SeqState {
    /// One past the highest sequence number the gateway forwarded.
    pub next: u32,
    /// The hole left by segments that never reached the gateway,
    /// `[hole_start, hole_end)`; empty when the two are equal. Holes opened
    /// while one is recorded merge into it (see [`judge_segment`]).
    pub hole_start: u32,
    pub hole_end: u32,
    /// 0 until the first segment (or SYN) set `next`.
    pub known: u16,
    /// IPv4 identification of the segment that last moved `next` on.
    pub last_id: u16,
}

/// A followed TCP connection, in a direct-mapped table indexed by its
/// [`handshake_hash`]: the OPD's end, the Internet's end, and where each
/// direction (`[DOWNLOAD]`, `[UPLOAD]`) stands.
#[repr(C)]
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct TcpFlow {
    pub opd_addr: AddrKey,
    pub remote_addr: AddrKey,
    pub opd_port: u16,
    pub remote_port: u16,
    pub dir: [SeqState; DIRECTIONS],
    /// The highest ACK number the Internet's end sent for the upload
    /// data (see [`ack_advance`]); `ack_known` 0 until the first.
    pub ack: u32,
    pub ack_known: u32,
}

/// Entries of the followed-connection table (a power of two).
pub const TCP_FLOW_ENTRIES: u32 = 16_384;
pub const TCP_FLOW_BITS: u32 = 14;

/// Without an IPv4 identification to go by (IPv6, or a sender that leaves
/// it 0), a fill that comes back with fewer than this many segments
/// forwarded after it is taken for reordering, not a retransmission: TCP
/// waits for three duplicate ACKs before it retransmits (RACK may send
/// sooner; such a retransmission is missed).
pub const REORDER_SEGMENTS: u32 = 3;
/// [`judge_segment`]'s `ip_id` for a packet without one (IPv6).
pub const NO_IP_ID: u32 = u32::MAX;
/// A jump forward or back of more than this many bytes is no loss but a
/// connection the table lost track of (a reused port pair, an entry taken
/// over by another connection): the state starts again from it.
pub const SEQ_RESYNC_BYTES: u32 = 1 << 24;
/// A recorded hole whose start is this far behind the new one is dropped
/// instead of merged: its retransmissions are long past.
pub const HOLE_SPAN_MAX: u32 = 1 << 22;

/// What a data segment says about a connection's direction.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Segment {
    /// Not judged: no payload, a keep-alive or window probe, or the first
    /// segment after the state was (re)started.
    Skipped,
    /// The next bytes expected.
    InOrder,
    /// Beyond the next bytes expected: the ones in between never reached
    /// the gateway (now recorded as the hole).
    Ahead,
    /// Inside the recorded hole and sent after the segments forwarded
    /// since (a later IPv4 identification; without one, at least
    /// [`REORDER_SEGMENTS`] segments forwarded after it): a
    /// retransmission of a segment lost before the gateway.
    Filled,
    /// Inside the recorded hole but sent before segments the gateway
    /// already forwarded: the original, reordered on the way.
    Reordered,
    /// Before the next bytes expected and outside the hole: the gateway
    /// already forwarded these bytes, so the first copy was lost after the
    /// gateway.
    Duplicate,
}

#[inline(always)]
fn seq_after(a: u32, b: u32) -> bool {
    (a.wrapping_sub(b) as i32) > 0
}

/// Judges a data segment `[seq, seq + len)` of one direction of a followed
/// connection and moves the state on. `seg_len` is the size of one segment
/// (the packet's payload over its GSO segments), the unit of the reorder
/// allowance; `ip_id` the packet's IPv4 identification or [`NO_IP_ID`].
/// Called by the classifier for every segment of a sampled connection,
/// and by the tests.
///
/// Reordering and a retransmission both fill a hole; what tells them apart
/// is when the segment was sent. Senders number IPv4 packets in the order
/// they send them (Linux per connection, Windows per host), and a
/// retransmission is sent after everything the gateway forwarded since
/// the hole opened, a reordered original before.
#[inline(always)]
pub fn judge_segment(s: &mut SeqState, seq: u32, len: u32, seg_len: u32, ip_id: u32) -> Segment {
    if len == 0 {
        return Segment::Skipped;
    }
    let end = seq.wrapping_add(len);
    let ahead = seq.wrapping_sub(s.next);
    let behind = s.next.wrapping_sub(seq);
    if s.known == 0 || (ahead > SEQ_RESYNC_BYTES && behind > SEQ_RESYNC_BYTES) {
        *s = SeqState {
            next: end,
            hole_start: end,
            hole_end: end,
            known: 1,
            last_id: ip_id as u16,
        };
        return Segment::Skipped;
    }
    if ahead == 0 {
        s.next = end;
        s.last_id = ip_id as u16;
        return Segment::InOrder;
    }
    if ahead <= SEQ_RESYNC_BYTES {
        // A hole [next, seq) opens; it joins the recorded one unless that
        // one is empty or long past.
        if s.hole_start == s.hole_end || seq.wrapping_sub(s.hole_start) > HOLE_SPAN_MAX {
            s.hole_start = s.next;
        }
        s.hole_end = seq;
        s.next = end;
        s.last_id = ip_id as u16;
        return Segment::Ahead;
    }
    // Before `next`.
    if len == 1 && end == s.next {
        // A keep-alive or a zero-window probe: one byte sent again.
        return Segment::Skipped;
    }
    // Bytes forwarded after this segment (none if it reaches past `next`).
    let after = if seq_after(end, s.next) {
        s.next = end;
        0
    } else {
        s.next.wrapping_sub(end)
    };
    let hole_len = s.hole_end.wrapping_sub(s.hole_start);
    if seq.wrapping_sub(s.hole_start) < hole_len {
        if seq == s.hole_start {
            // Filled from its start: the hole shrinks (or closes).
            s.hole_start = if seq_after(end, s.hole_end) {
                s.hole_end
            } else {
                end
            };
        }
        let id = ip_id as u16;
        let sent_before = if ip_id != NO_IP_ID && (id | s.last_id) != 0 {
            (id.wrapping_sub(s.last_id) as i16) < 0
        } else {
            after < REORDER_SEGMENTS.saturating_mul(seg_len)
        };
        if sent_before {
            Segment::Reordered
        } else {
            Segment::Filled
        }
    } else {
        Segment::Duplicate
    }
}

/// A connection's direction starts at a SYN (or SYN-ACK) with sequence
/// number `isn`: the first data byte is `isn + 1`.
#[inline(always)]
pub fn seq_start(isn: u32, syn_payload: u32) -> SeqState {
    let next = isn.wrapping_add(1).wrapping_add(syn_payload);
    SeqState {
        next,
        hole_start: next,
        hole_end: next,
        known: 1,
        last_id: 0,
    }
}

/// Moves a followed connection's upload ACK on to `ack` (the ACK number
/// of a packet from the Internet's end) and returns how many bytes it
/// acknowledges that no earlier ACK did. The first ACK seen, an older one
/// (reordered, or a duplicate ACK) and a jump beyond [`SEQ_RESYNC_BYTES`]
/// either way count nothing; the jump is taken as the new start.
#[inline(always)]
pub fn ack_advance(flow: &mut TcpFlow, ack: u32) -> u32 {
    let ahead = ack.wrapping_sub(flow.ack);
    if flow.ack_known == 0
        || (ahead > SEQ_RESYNC_BYTES && flow.ack.wrapping_sub(ack) > SEQ_RESYNC_BYTES)
    {
        flow.ack = ack;
        flow.ack_known = 1;
        return 0;
    }
    if ahead == 0 || ahead > SEQ_RESYNC_BYTES {
        return 0;
    }
    flow.ack = ack;
    ahead
}

/// The side a retransmitted segment's first copy was lost on, for a
/// segment of `direction` judged [`Segment::Filled`] (lost before the
/// gateway) or [`Segment::Duplicate`] (lost after it). Download comes
/// from the WAN, upload from the LAN.
#[inline(always)]
pub fn loss_side(judged: Segment, direction: usize) -> Option<u32> {
    let before_gateway = match judged {
        Segment::Filled => true,
        Segment::Duplicate => false,
        _ => return None,
    };
    Some(if before_gateway == (direction == DOWNLOAD) {
        SIDE_WAN
    } else {
        SIDE_LAN
    })
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
const _: () = assert!(core::mem::size_of::<CacheEntry>() == 56);
const _: () = assert!(CACHE_ENTRIES == 1 << CACHE_BITS);
const _: () = assert!(core::mem::size_of::<SlotOwner>() == 32);
const _: () = assert!(core::mem::size_of::<RttHistogram>() == 160);
const _: () = assert!(core::mem::size_of::<Handshake>() == 64);
const _: () = assert!(HANDSHAKE_ENTRIES == 1 << HANDSHAKE_BITS);
const _: () = assert!(core::mem::size_of::<TcpLoss>() == 80);
const _: () = assert!(core::mem::size_of::<SeqState>() == 16);
const _: () = assert!(core::mem::size_of::<TcpFlow>() == 76);
const _: () = assert!(TCP_FLOW_ENTRIES == 1 << TCP_FLOW_BITS);

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
    unsafe impl aya::Pod for super::TcpLoss {}
    unsafe impl aya::Pod for super::TcpFlow {}
}

#[cfg(test)]
mod tests;
