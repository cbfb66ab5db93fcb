//! jatah's kernel side: TC classifiers that attribute each packet to an OPD,
//! count it, and put it into the OPD's HTB class.
//!
//! - `jatah_dl` (LAN egress): download, classified by destination address.
//! - `jatah_ul_mark` (LAN ingress): upload, classified by source address
//!   before NAT; the OPD slot travels to the WAN side in `skb->mark`.
//! - `jatah_ul` (WAN egress): upload, classified by that mark (or by source
//!   address when the gateway does not masquerade).
//!
//! A packet the parser cannot read is never dropped: it goes unshaped into
//! the default class and is counted. Every program returns `TC_ACT_UNSPEC`
//! so that other TCX programs on the interface still run.
#![cfg_attr(target_arch = "bpf", no_std)]
#![cfg_attr(target_arch = "bpf", no_main)]
// Atomic adds on shared map values: core's AtomicU64 has no fetch_add on
// the BPF target (it lacks compare-and-swap), the intrinsic lowers to the
// BPF atomic add instruction.
#![cfg_attr(target_arch = "bpf", feature(core_intrinsics))]
#![cfg_attr(target_arch = "bpf", allow(internal_features))]

use aya_ebpf::{
    macros::{classifier, map},
    maps::{Array, LpmTrie, PerCpuArray, lpm_trie::Key},
    programs::TcContext,
};
use jatah_common::{
    AddrKey, CACHE_ENTRIES, COUNTER_SLOTS, CacheEntry, Config, Counters, DEFAULT_CLASS_MINOR,
    DOWNLOAD, FLAG_RTT, FLAG_TCP_LOSS, HANDSHAKE_BITS, HANDSHAKE_ENTRIES, HS_EMPTY, HS_IN_SYN,
    HS_IN_SYNACK, HS_OUT_SYN, HS_OUT_SYNACK, Handshake, MAX_OPDS, MAX_PREFIXES, NO_IP_ID, NO_SLOT,
    RttHistogram, SIDE_LAN, SIDE_WAN, SIDES, SLOT_UNCLASSIFIED, STAT_COUNT, Segment, SeqState,
    SlotOwner, Stat, TCP_FLOW_BITS, TCP_FLOW_ENTRIES, TcpFlow, TcpLoss, UPLOAD, cache_index,
    handshake_hash, handshake_sampled, htb_priority, judge_segment, loss_side, opd_class_minor,
    rtt_bucket, rtt_index, seq_start,
};

/// Let the next program (or the qdisc) decide; never drop.
const TC_ACT_UNSPEC: i32 = -1;

const ETH_HLEN: usize = 14;
const ETH_P_IP: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86dd;
const ETH_P_8021Q: u16 = 0x8100;
const ETH_P_8021AD: u16 = 0x88a8;
const IPPROTO_TCP: u8 = 6;
const IPPROTO_UDP: u8 = 17;

#[map]
static JATAH_V4: LpmTrie<[u8; 4], u32> = LpmTrie::pinned(MAX_PREFIXES, 0);
#[map]
static JATAH_V6: LpmTrie<[u8; 16], u32> = LpmTrie::pinned(MAX_PREFIXES, 0);
/// Recent addresses and their slots: per CPU and direct-mapped, so a hit
/// costs one inlined array lookup and a compare, no hashing helper and no
/// lock. Not pinned: it is rebuilt from the tries in microseconds.
#[map]
static JATAH_CACHE: PerCpuArray<CacheEntry> = PerCpuArray::with_max_entries(CACHE_ENTRIES, 0);
#[map]
static JATAH_COUNTERS: PerCpuArray<Counters> = PerCpuArray::pinned(COUNTER_SLOTS, 0);
#[map]
static JATAH_CONFIG: Array<Config> = Array::pinned(1, 0);
#[map]
static JATAH_STATS: PerCpuArray<u64> = PerCpuArray::pinned(STAT_COUNT, 0);
/// Handshake round trips per OPD and side (index `rtt_index(slot, side)`).
#[map]
static JATAH_RTT: Array<RttHistogram> = Array::pinned(MAX_OPDS * SIDES, 0);
/// Handshakes in progress: direct-mapped, a new handshake takes the entry
/// of an older one that hashes alike (bounded memory, like a 1-way LRU).
#[map]
static JATAH_HS: Array<Handshake> = Array::with_max_entries(HANDSHAKE_ENTRIES, 0);
/// Retransmissions in the sampled TCP connections, per OPD slot.
#[map]
static JATAH_TCP: PerCpuArray<TcpLoss> = PerCpuArray::pinned(MAX_OPDS, 0);
/// The sampled TCP connections being followed: direct-mapped, a new
/// connection takes the entry of an older one that hashes alike.
#[map]
static JATAH_FLOWS: Array<TcpFlow> = Array::with_max_entries(TCP_FLOW_ENTRIES, 0);
/// Read and written by the daemon only; pinned with the others so slots
/// survive a restart.
#[map]
static JATAH_OWNERS: Array<SlotOwner> = Array::pinned(MAX_OPDS, 0);

enum ParseError {
    /// Not IPv4/IPv6 (ARP, LLDP, ...).
    NonIp,
    /// Truncated or inconsistent headers.
    Malformed,
}

/// What the classifiers need from a packet's headers.
struct Headers {
    /// The address that decides the OPD (destination or source), IPv4 mapped.
    addr: AddrKey,
    /// The address at the other end (the Internet host).
    other: AddrKey,
    is_v4: bool,
    l4_proto: u8,
    /// Offset of the IP header from the start of the frame.
    l3_off: usize,
    /// Offset of the transport header from the start of the frame.
    l4_off: usize,
}

/// Reading header fields: straight from the linear packet data (cheap,
/// bounds-checked for the verifier), or through `bpf_skb_load_bytes` when
/// the headers are not all in the linear part.
trait Frame {
    fn read<T: Copy>(&self, off: usize) -> Option<T>;
}

struct Linear<'a>(&'a TcContext);
struct Loaded<'a>(&'a TcContext);

impl Frame for Linear<'_> {
    #[inline(always)]
    fn read<T: Copy>(&self, off: usize) -> Option<T> {
        let start = self.0.data();
        if start + off + core::mem::size_of::<T>() > self.0.data_end() {
            return None;
        }
        // SAFETY: bounds checked against data_end just above.
        Some(unsafe { core::ptr::read_unaligned((start + off) as *const T) })
    }
}

impl Frame for Loaded<'_> {
    #[inline(always)]
    fn read<T: Copy>(&self, off: usize) -> Option<T> {
        self.0.load::<T>(off).ok()
    }
}

#[inline(always)]
fn be16<F: Frame>(f: &F, off: usize) -> Result<u16, ParseError> {
    f.read::<u16>(off)
        .map(u16::from_be)
        .ok_or(ParseError::Malformed)
}

#[inline(always)]
fn byte<F: Frame>(f: &F, off: usize) -> Result<u8, ParseError> {
    f.read::<u8>(off).ok_or(ParseError::Malformed)
}

#[inline(always)]
fn parse_with<F: Frame>(f: &F, by_source: bool) -> Result<Headers, ParseError> {
    let mut ethertype = be16(f, 12)?;
    let mut off = ETH_HLEN;
    // Up to two in-band tags (802.1ad outer + 802.1Q inner). A tag the NIC
    // already stripped into skb metadata is simply not in the payload.
    if ethertype == ETH_P_8021AD || ethertype == ETH_P_8021Q {
        ethertype = be16(f, off + 2)?;
        off += 4;
        if ethertype == ETH_P_8021AD || ethertype == ETH_P_8021Q {
            ethertype = be16(f, off + 2)?;
            off += 4;
        }
    }
    let mut addr = AddrKey::default();
    match ethertype {
        ETH_P_IP => {
            let ver_ihl = byte(f, off)?;
            let ihl = ((ver_ihl & 0x0f) as usize) * 4;
            if ver_ihl >> 4 != 4 || ihl < 20 {
                return Err(ParseError::Malformed);
            }
            // Fixed-offset fields first, then the end of the options: in
            // this order the compiler cannot fold one bounds check into
            // another in a way the verifier could not follow.
            let l4_proto = byte(f, off + 9)?;
            let a: [u8; 4] = f
                .read(off + if by_source { 12 } else { 16 })
                .ok_or(ParseError::Malformed)?;
            let b: [u8; 4] = f
                .read(off + if by_source { 16 } else { 12 })
                .ok_or(ParseError::Malformed)?;
            // The whole IPv4 header (with options) must be present.
            byte(f, off + ihl - 1)?;
            let mut other = AddrKey::default();
            for k in [&mut addr, &mut other] {
                k.addr[10] = 0xff;
                k.addr[11] = 0xff;
            }
            addr.addr[12..16].copy_from_slice(&a);
            other.addr[12..16].copy_from_slice(&b);
            Ok(Headers {
                addr,
                other,
                is_v4: true,
                l4_proto,
                l3_off: off,
                l4_off: off + ihl,
            })
        }
        ETH_P_IPV6 => {
            if byte(f, off)? >> 4 != 6 {
                return Err(ParseError::Malformed);
            }
            addr.addr = f
                .read(off + if by_source { 8 } else { 24 })
                .ok_or(ParseError::Malformed)?;
            let other = AddrKey {
                addr: f
                    .read(off + if by_source { 24 } else { 8 })
                    .ok_or(ParseError::Malformed)?,
            };
            // Extension headers are not walked: they only make the GSO
            // header estimate smaller, and hide a handshake from the RTT
            // tracker, never make the attribution wrong.
            Ok(Headers {
                addr,
                other,
                is_v4: false,
                l4_proto: byte(f, off + 6)?,
                l3_off: off,
                l4_off: off + 40,
            })
        }
        _ => Err(ParseError::NonIp),
    }
}

#[inline(always)]
fn parse(ctx: &TcContext, by_source: bool) -> Result<Headers, ParseError> {
    match parse_with(&Linear(ctx), by_source) {
        Ok(h) => Ok(h),
        // Headers beyond the linear part: read them the slow way.
        Err(ParseError::Malformed) if (ctx.len() as usize) > ctx.data_end() - ctx.data() => {
            parse_with(&Loaded(ctx), by_source)
        }
        Err(e) => Err(e),
    }
}

/// Bytes from the start of the frame to the end of the transport header:
/// repeated once per GSO segment on the wire.
#[inline(always)]
fn header_len(ctx: &TcContext, h: &Headers) -> u64 {
    let end = match h.l4_proto {
        IPPROTO_TCP => match ctx.load::<u8>(h.l4_off + 12) {
            Ok(doff) => h.l4_off + ((doff >> 4) as usize) * 4,
            Err(_) => h.l4_off,
        },
        IPPROTO_UDP => h.l4_off + 8,
        _ => h.l4_off,
    };
    end as u64
}

/// OPD slot of an address, or `NO_SLOT`. A per-CPU cache of recent
/// addresses sits in front of the tries; entries decided under an older
/// policy (epoch) are looked up again.
#[inline(always)]
fn slot_of(h: &Headers) -> u32 {
    // Read the epoch before the tries: an entry stored with it is re-checked
    // if the daemon changes the tries (and bumps the epoch) meanwhile.
    let epoch = match JATAH_CONFIG.get(0) {
        Some(c) => c.epoch,
        None => 0,
    };
    let entry = JATAH_CACHE.get_ptr_mut(cache_index(&h.addr));
    if let Some(e) = entry {
        // SAFETY: per-CPU entry; only this CPU touches it while we run. The
        // volatile read keeps the compiler from turning the address compare
        // into pointer arithmetic the verifier rejects.
        let e = unsafe { core::ptr::read_volatile(e) };
        if e.epoch == epoch && e.addr == h.addr {
            return e.slot;
        }
    }
    let found = if h.is_v4 {
        let a = [
            h.addr.addr[12],
            h.addr.addr[13],
            h.addr.addr[14],
            h.addr.addr[15],
        ];
        JATAH_V4.get(Key::new(32, a)).copied()
    } else {
        JATAH_V6.get(Key::new(128, h.addr.addr)).copied()
    };
    let slot = match found {
        Some(s) if s < MAX_OPDS => s,
        _ => NO_SLOT,
    };
    if let Some(e) = entry {
        // SAFETY: as above.
        unsafe {
            *e = CacheEntry {
                addr: h.addr,
                slot,
                epoch,
            }
        };
    }
    slot
}

const TCP_SYN: u8 = 0x02;
const TCP_RST: u8 = 0x04;
const TCP_ACK: u8 = 0x10;

/// Which way a packet crosses the LAN-facing interface.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Way {
    /// From the OPD (LAN ingress): `Headers::addr` is the source.
    FromOpd,
    /// To the OPD (LAN egress): `Headers::addr` is the destination.
    ToOpd,
}

impl Way {
    #[inline(always)]
    fn reverse(self) -> Way {
        match self {
            Way::FromOpd => Way::ToOpd,
            Way::ToOpd => Way::FromOpd,
        }
    }
}

/// `*p += v`, atomically (other CPUs update the same value).
#[inline(always)]
unsafe fn atomic_add(p: *mut u64, v: u64) {
    #[cfg(target_arch = "bpf")]
    // SAFETY: p points into a map value, valid while the program runs.
    unsafe {
        core::intrinsics::atomic_xadd::<u64, u64, { core::intrinsics::AtomicOrdering::Relaxed }>(
            p, v,
        );
    }
    // The host build only type-checks this crate (clippy).
    #[cfg(not(target_arch = "bpf"))]
    // SAFETY: as above.
    unsafe {
        *p += v
    };
}

/// Adds one round trip to an OPD's histogram of a side.
#[inline(always)]
fn record_rtt(slot: u32, side: u32, ns: u64) {
    if let Some(h) = JATAH_RTT.get_ptr_mut(rtt_index(slot, side)) {
        // SAFETY: the map value lives as long as the program; shared
        // between CPUs, hence atomic adds.
        unsafe {
            let b = rtt_bucket(ns);
            atomic_add(&mut (*h).buckets[b], 1);
            atomic_add(&mut (*h).sum_ns, ns);
            atomic_add(&mut (*h).count, 1);
        }
    }
}

#[inline(always)]
fn bump_side(slot: u32, side: u32, retransmit: bool) {
    if let Some(h) = JATAH_RTT.get_ptr_mut(rtt_index(slot, side)) {
        // SAFETY: as in record_rtt.
        unsafe {
            let field = if retransmit {
                &mut (*h).retransmits
            } else {
                &mut (*h).started
            };
            atomic_add(field, 1);
        }
    }
}

/// Follows the TCP connections in the sample at the LAN-facing interface:
/// times their handshakes (`FLAG_RTT`) and judges their data segments
/// (`FLAG_TCP_LOSS`). A packet of a connection outside the sample costs
/// one header read and a port test.
#[inline(always)]
fn track_tcp(ctx: &TcContext, h: &Headers, slot: u32, way: Way, cfg_flags: u32) {
    if h.l4_proto != IPPROTO_TCP {
        return;
    }
    let f = Linear(ctx);
    // Ports to flags in one read: two reads whose bounds checks the compiler
    // merges leave it free to use a register for the ports that the
    // verifier sees unset.
    let Some(tcp) = f.read::<[u8; 14]>(h.l4_off) else {
        return;
    };
    let flags = tcp[13];
    if flags & TCP_RST != 0 {
        return;
    }
    let (src_port, dst_port) = (
        u16::from_be_bytes([tcp[0], tcp[1]]),
        u16::from_be_bytes([tcp[2], tcp[3]]),
    );
    let (opd_port, remote_port) = match way {
        Way::FromOpd => (src_port, dst_port),
        Way::ToOpd => (dst_port, src_port),
    };
    if !handshake_sampled(opd_port, remote_port, cfg_flags) {
        // A connection outside the sample: no table entry, no clock read.
        return;
    }
    let hash = handshake_hash(&h.addr, opd_port, &h.other, remote_port);
    if cfg_flags & FLAG_TCP_LOSS != 0 {
        track_segments(ctx, h, slot, way, &tcp, opd_port, remote_port, hash);
    }
    if cfg_flags & FLAG_RTT != 0 {
        track_handshake(h, slot, way, flags, opd_port, remote_port, hash);
    }
}

/// Payload bytes of a TCP packet, from the end of the TCP header to the
/// end of the IP packet (not of the frame, which may be padded), and its
/// IPv4 identification (`NO_IP_ID` for IPv6).
#[inline(always)]
fn tcp_payload(ctx: &TcContext, h: &Headers, data_off: u8) -> (u32, u32) {
    let f = Linear(ctx);
    // IPv4: total length, identification; IPv6: payload length, next
    // header, hop limit.
    let (field, fixed) = if h.is_v4 { (2, 0) } else { (4, 40) };
    let Some(ip) = f.read::<[u8; 4]>(h.l3_off + field) else {
        return (0, NO_IP_ID);
    };
    let ip_id = if h.is_v4 {
        u32::from(u16::from_be_bytes([ip[2], ip[3]]))
    } else {
        NO_IP_ID
    };
    let ip_len = u16::from_be_bytes([ip[0], ip[1]]) as usize;
    let frame_len = ctx.len() as usize;
    let ip_end = h.l3_off + fixed + ip_len;
    // A zero length (IPv6 jumbograms, BIG TCP) means "up to the end".
    let ip_end = if ip_len == 0 || ip_end > frame_len {
        frame_len
    } else {
        ip_end
    };
    let payload = ip_end.saturating_sub(h.l4_off + ((data_off >> 4) as usize) * 4) as u32;
    (payload, ip_id)
}

/// Judges a data segment of a sampled connection against what the gateway
/// forwarded before ([`judge_segment`]) and counts it, with its loss side,
/// for the OPD.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn track_segments(
    ctx: &TcContext,
    h: &Headers,
    slot: u32,
    way: Way,
    tcp: &[u8; 14],
    opd_port: u16,
    remote_port: u16,
    hash: u32,
) {
    let syn = tcp[13] & TCP_SYN != 0;
    let (payload, ip_id) = tcp_payload(ctx, h, tcp[12]);
    if payload == 0 && !syn {
        // Pure ACKs: the common case of the other direction.
        return;
    }
    let Some(e) = JATAH_FLOWS.get_ptr_mut(hash >> (32 - TCP_FLOW_BITS)) else {
        return;
    };
    // SAFETY: map value; races between CPUs can at worst spoil one
    // connection's state.
    let e = unsafe { &mut *e };
    let same = e.opd_port == opd_port
        && e.remote_port == remote_port
        && e.opd_addr == h.addr
        && e.remote_addr == h.other;
    if !same {
        *e = TcpFlow {
            opd_addr: h.addr,
            remote_addr: h.other,
            opd_port,
            remote_port,
            dir: [SeqState::default(); 2],
        };
    }
    let dir = match way {
        Way::ToOpd => DOWNLOAD,
        Way::FromOpd => UPLOAD,
    };
    let seq = u32::from_be_bytes([tcp[4], tcp[5], tcp[6], tcp[7]]);
    if syn {
        e.dir[dir] = seq_start(seq, payload);
        return;
    }
    // SAFETY: reading a field of the context.
    let segs = match unsafe { (*ctx.skb.skb).gso_segs } {
        0 => 1,
        n => n,
    };
    let judged = judge_segment(&mut e.dir[dir], seq, payload, payload / segs, ip_id);
    if judged == Segment::Skipped {
        return;
    }
    if let Some(c) = JATAH_TCP.get_ptr_mut(slot) {
        let segs = u64::from(segs);
        // SAFETY: per-CPU slot, only this CPU writes it while we run.
        unsafe {
            (*c).segments[dir] += segs;
            if let Some(side) = loss_side(judged, dir) {
                (*c).retransmitted[(side & 1) as usize][dir] += segs;
            }
        }
    }
}

/// Times TCP handshakes at the LAN-facing interface. For a connection an
/// OPD host opens: SYN (from OPD) -> SYN-ACK (to OPD) is the WAN round trip,
/// SYN-ACK -> ACK (from OPD) the LAN round trip; the other way round for a
/// connection opened from the Internet. Costs one table lookup per packet
/// of a sampled connection; everything else only on handshake packets.
#[inline(always)]
fn track_handshake(
    h: &Headers,
    slot: u32,
    way: Way,
    flags: u8,
    opd_port: u16,
    remote_port: u16,
    hash: u32,
) {
    let Some(e) = JATAH_HS.get_ptr_mut(hash >> (32 - HANDSHAKE_BITS)) else {
        return;
    };
    // SAFETY: map value; races between CPUs can at worst spoil one sample.
    let e = unsafe { &mut *e };
    let same = e.state != HS_EMPTY
        && e.hash == hash
        && e.opd_port == opd_port
        && e.remote_port == remote_port
        && e.opd_addr == h.addr
        && e.remote_addr == h.other;
    let syn = flags & TCP_SYN != 0;
    let ack = flags & TCP_ACK != 0;
    if !(syn || same && ack) {
        // The common case: a data packet or an ACK of no pending handshake.
        return;
    }
    // The handshake this packet belongs to was opened in the direction a
    // SYN-ACK travels against, and any other packet with.
    let opening = if syn && ack { way.reverse() } else { way };
    // An OPD host's handshake crosses the WAN first, an Internet host's the
    // LAN first.
    let (first, second, opened, answered) = match opening {
        Way::FromOpd => (SIDE_WAN, SIDE_LAN, HS_OUT_SYN, HS_OUT_SYNACK),
        Way::ToOpd => (SIDE_LAN, SIDE_WAN, HS_IN_SYN, HS_IN_SYNACK),
    };
    match (syn, ack) {
        // A SYN: a new handshake, or the same one sent again.
        (true, false) => {
            let now = clock();
            bump_side(slot, first, same && e.state == opened);
            *e = Handshake {
                opd_addr: h.addr,
                remote_addr: h.other,
                opd_port,
                remote_port,
                hash,
                slot,
                state: opened,
                t_syn: now,
                t_synack: 0,
            };
        }
        // The answer: the first leg is done, the second starts.
        (true, true) if same && e.state == opened => {
            let now = clock();
            record_rtt(slot, first, now.saturating_sub(e.t_syn));
            bump_side(slot, second, false);
            e.state = answered;
            e.t_synack = now;
        }
        (true, true) if same && e.state == answered => {
            bump_side(slot, second, true);
            e.t_synack = clock();
        }
        // The opener's ACK completes it (`same` holds: see above).
        (false, true) if e.state == answered => {
            record_rtt(slot, second, clock().saturating_sub(e.t_synack));
            e.state = HS_EMPTY;
        }
        _ => {}
    }
}

/// The kernel's monotonic clock: the dearest helper the classifier calls
/// (about 30 ns here), so only where a handshake is actually timed.
#[inline(always)]
fn clock() -> u64 {
    // SAFETY: a helper without arguments.
    unsafe { aya_ebpf::helpers::bpf_ktime_get_ns() }
}

/// Whether anything follows TCP connections: handshake timing or
/// retransmission counting.
#[inline(always)]
fn tcp_tracking(cfg: &Config) -> bool {
    cfg.flags & (FLAG_RTT | FLAG_TCP_LOSS) != 0
}

#[inline(always)]
fn count(slot: u32, dir: usize, bytes: u64) {
    if let Some(c) = JATAH_COUNTERS.get_ptr_mut(slot) {
        // SAFETY: per-CPU slot, only this CPU writes it while we run.
        unsafe {
            (*c).bytes[dir] += bytes;
            (*c).packets[dir] += 1;
        }
    }
}

#[inline(always)]
fn bump(stat: Stat) {
    if let Some(v) = JATAH_STATS.get_ptr_mut(stat as u32) {
        // SAFETY: per-CPU slot.
        unsafe { *v += 1 };
    }
}

/// Bytes as the qdisc accounts them: a GSO packet carries the headers of
/// every segment it will become on the wire.
#[inline(always)]
fn wire_bytes(ctx: &TcContext, h: &Headers) -> u64 {
    let len = ctx.len() as u64;
    // SAFETY: reading a field of the context the kernel handed us.
    let segs = unsafe { (*ctx.skb.skb).gso_segs } as u64;
    if segs > 1 {
        len + (segs - 1) * header_len(ctx, h)
    } else {
        len
    }
}

/// Whether the packet was sent by the gateway itself: forwarded packets
/// carry the interface they arrived on, locally sent ones none.
#[inline(always)]
fn from_gateway(ctx: &TcContext) -> bool {
    // SAFETY: reading a field of the context.
    unsafe { (*ctx.skb.skb).ingress_ifindex == 0 }
}

#[inline(always)]
fn set_class(ctx: &TcContext, minor: u32) {
    // SAFETY: skb->priority is writable for TC programs.
    unsafe { (*ctx.skb.skb).priority = htb_priority(minor) };
}

#[inline(always)]
fn config() -> Config {
    match JATAH_CONFIG.get(0) {
        Some(c) => *c,
        None => Config::default(),
    }
}

/// Counts a packet that belongs to no OPD and sends it to the default class.
#[inline(always)]
fn unclassified(ctx: &TcContext, dir: usize, bytes: u64) -> i32 {
    count(SLOT_UNCLASSIFIED, dir, bytes);
    set_class(ctx, DEFAULT_CLASS_MINOR);
    TC_ACT_UNSPEC
}

#[inline(always)]
fn parse_failed(ctx: &TcContext, dir: usize, err: ParseError) -> i32 {
    bump(match err {
        ParseError::NonIp => Stat::NonIp,
        ParseError::Malformed if dir == DOWNLOAD => Stat::MalformedDownload,
        ParseError::Malformed => Stat::MalformedUpload,
    });
    unclassified(ctx, dir, ctx.len() as u64)
}

/// Download: LAN-facing egress, by destination address.
#[classifier]
pub fn jatah_dl(ctx: TcContext) -> i32 {
    // What the gateway itself sends an OPD (its probes, its own services)
    // is not that OPD's Internet use: unshaped, counted as unclassified.
    if from_gateway(&ctx) {
        return unclassified(&ctx, DOWNLOAD, ctx.len() as u64);
    }
    let h = match parse(&ctx, false) {
        Ok(h) => h,
        Err(e) => return parse_failed(&ctx, DOWNLOAD, e),
    };
    let bytes = wire_bytes(&ctx, &h);
    let slot = slot_of(&h);
    if slot == NO_SLOT {
        return unclassified(&ctx, DOWNLOAD, bytes);
    }
    count(slot, DOWNLOAD, bytes);
    set_class(&ctx, opd_class_minor(slot));
    let cfg = config();
    if tcp_tracking(&cfg) {
        track_tcp(&ctx, &h, slot, Way::ToOpd, cfg.flags);
    }
    TC_ACT_UNSPEC
}

/// Upload, first half: LAN-facing ingress, by source address before NAT.
/// Stores slot + 1 in the mark bits the admin gave jatah (0 = no OPD).
#[classifier]
pub fn jatah_ul_mark(ctx: TcContext) -> i32 {
    let cfg = config();
    if cfg.mark_mask == 0 {
        return TC_ACT_UNSPEC;
    }
    // SAFETY: reading a field of the context.
    let mark = unsafe { (*ctx.skb.skb).mark } & !cfg.mark_mask;
    let tag = match parse(&ctx, true) {
        Ok(h) => match slot_of(&h) {
            NO_SLOT => 0,
            slot => {
                if tcp_tracking(&cfg) {
                    track_tcp(&ctx, &h, slot, Way::FromOpd, cfg.flags);
                }
                ((slot + 1) << cfg.mark_shift) & cfg.mark_mask
            }
        },
        Err(_) => 0,
    };
    ctx.set_mark(mark | tag);
    TC_ACT_UNSPEC
}

/// Upload, second half: WAN egress, by the mark set at LAN ingress, else by
/// source address (a gateway that does not masquerade).
#[classifier]
pub fn jatah_ul(ctx: TcContext) -> i32 {
    let h = match parse(&ctx, true) {
        Ok(h) => h,
        Err(e) => return parse_failed(&ctx, UPLOAD, e),
    };
    let bytes = wire_bytes(&ctx, &h);
    let cfg = config();
    // SAFETY: reading a field of the context.
    let mark = unsafe { (*ctx.skb.skb).mark };
    let tag = if cfg.mark_mask == 0 {
        0
    } else {
        (mark & cfg.mark_mask) >> cfg.mark_shift
    };
    let slot = if tag != 0 && tag <= MAX_OPDS {
        tag - 1
    } else {
        slot_of(&h)
    };
    if slot == NO_SLOT {
        return unclassified(&ctx, UPLOAD, bytes);
    }
    count(slot, UPLOAD, bytes);
    set_class(&ctx, opd_class_minor(slot));
    TC_ACT_UNSPEC
}

/// An empty classifier, loaded only by the benchmark as its baseline.
#[classifier]
pub fn jatah_empty(_ctx: TcContext) -> i32 {
    TC_ACT_UNSPEC
}

#[cfg(target_arch = "bpf")]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

/// On the host this crate is only type-checked (clippy); it runs in the kernel.
#[cfg(not(target_arch = "bpf"))]
fn main() {}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
