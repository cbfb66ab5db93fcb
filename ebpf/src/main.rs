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
    maps::{Array, LpmTrie, LruHashMap, PerCpuArray, lpm_trie::Key},
    programs::TcContext,
};
use jatah_common::{
    CACHE_ENTRIES, COUNTER_SLOTS, CacheEntry, Config, ConnectionStart, Counters,
    DEFAULT_CLASS_MINOR, DOWNLOAD, FLAG_FIRST_BYTES, FLAG_LANES, MAX_OPDS, MAX_PREFIXES,
    NO_OPD_TAG, NO_SLOT, Place, SLOT_UNCLASSIFIED, STARTS_ENTRIES, STAT_COUNT, SlotOwner, Stat,
    Traits, UPLOAD, VISIT_ENTRIES, VisitKey, bulk_lane_minor, cache_index, fold_addr, htb_priority,
    in_first_bytes, interactive_lane_minor, is_interactive, opd_class_minor, start_index,
};

mod hosts;
mod parse;
mod tcp;

use hosts::count_host;
use tcp::{TCP_SYN, Way, tcp_tracking, track_tcp};

use parse::{
    Frame, Headers, IPPROTO_TCP, IPPROTO_UDP, Linear, ParseError, header_len, parse, parse_l3,
};

/// Let the next program (or the qdisc) decide; never drop.
const TC_ACT_UNSPEC: i32 = -1;

#[map]
static JATAH_V4: LpmTrie<[u8; 4], u32> = LpmTrie::pinned(MAX_PREFIXES, 0);
#[map]
static JATAH_V6: LpmTrie<[u8; 16], u32> = LpmTrie::pinned(MAX_PREFIXES, 0);
/// Recent addresses and their slots: per CPU and direct-mapped, so a hit
/// costs one inlined array lookup and a compare, no hashing helper and no
/// lock. Each entry also holds its host's counts not yet moved to the
/// per-host table, so it is pinned: the daemon reads them.
#[map]
static JATAH_CACHE: PerCpuArray<CacheEntry> = PerCpuArray::pinned(CACHE_ENTRIES, 0);
#[map]
static JATAH_COUNTERS: PerCpuArray<Counters> = PerCpuArray::pinned(COUNTER_SLOTS, 0);
#[map]
static JATAH_CONFIG: Array<Config> = Array::pinned(1, 0);
#[map]
static JATAH_STATS: PerCpuArray<u64> = PerCpuArray::pinned(STAT_COUNT, 0);
/// Read and written by the daemon only; pinned with the others so slots
/// survive a restart.
#[map]
static JATAH_OWNERS: Array<SlotOwner> = Array::pinned(MAX_OPDS, 0);
/// Where each OPD slot's packets may come in from (all zero: anywhere).
#[map]
static JATAH_PLACES: Array<Place> = Array::pinned(MAX_OPDS, 0);
/// Per slot: packets from its addresses that came in elsewhere.
#[map]
static JATAH_MISPLACED: PerCpuArray<u64> = PerCpuArray::pinned(MAX_OPDS, 0);
/// Where each recent connection to the status page came in from, so the
/// page can tell an office's own visitor from one using its addresses.
#[map]
static JATAH_VISITS: LruHashMap<VisitKey, Place> = LruHashMap::pinned(VISIT_ENTRIES, 0);
/// Where recent TCP connections toward OPDs began, so that their first
/// bytes ride the interactive lane ([`jatah_common::FIRST_BYTES`]).
#[map]
static JATAH_STARTS: Array<ConnectionStart> = Array::pinned(STARTS_ENTRIES, 0);
/// The status listener's port (0: none).
#[map]
static JATAH_SPORT: Array<u32> = Array::pinned(1, 0);

/// OPD slot of an address, or `NO_SLOT`, and the address's entry in the
/// per-CPU cache of recent addresses that sits in front of the tries
/// (where [`count_host`] counts the packet). Entries decided under an
/// older policy (epoch) are looked up again.
#[inline(always)]
fn slot_of(h: &Headers) -> (u32, Option<*mut CacheEntry>) {
    // Read the epoch before the tries: an entry stored with it is re-checked
    // if the daemon changes the tries (and bumps the epoch) meanwhile.
    let epoch = match JATAH_CONFIG.get(0) {
        Some(c) => c.epoch,
        None => 0,
    };
    let entry = JATAH_CACHE.get_ptr_mut(cache_index(&h.addr));
    if let Some(e) = entry {
        // SAFETY: per-CPU entry; only this CPU touches it while we run. The
        // volatile reads keep the compiler from turning the address compare
        // into pointer arithmetic the verifier rejects.
        let (addr, at, slot) = unsafe {
            (
                core::ptr::read_volatile(&(*e).addr),
                core::ptr::read_volatile(&(*e).epoch),
                core::ptr::read_volatile(&(*e).slot),
            )
        };
        if at == epoch && addr == h.addr {
            return (slot, entry);
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
        // SAFETY: as above. What the entry's last host had counted moves
        // to the per-host table before the entry is taken.
        unsafe {
            hosts::flush(&core::ptr::read_volatile(e));
            *e = CacheEntry {
                addr: h.addr,
                slot,
                epoch,
                bytes: [0; 2],
                packets: [0; 2],
            }
        };
    }
    (slot, entry)
}

/// `*p += v`, atomically (other CPUs update the same value).
#[inline(always)]
pub(crate) unsafe fn atomic_add(p: *mut u64, v: u64) {
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

/// The class of a packet of OPD `slot`: the OPD's own class, or with lanes
/// on its interactive or its bulk lane ([`is_interactive`]; toward an OPD,
/// also a TCP connection's first bytes with `FLAG_FIRST_BYTES`).
#[inline(always)]
fn class_of(ctx: &TcContext, h: &Headers, slot: u32, cfg: &Config, toward_opd: bool) -> u32 {
    if cfg.flags & FLAG_LANES == 0 {
        return opd_class_minor(slot);
    }
    let first_bytes = toward_opd && cfg.flags & FLAG_FIRST_BYTES != 0;
    if interactive(ctx, h, first_bytes) {
        interactive_lane_minor(slot)
    } else {
        bulk_lane_minor(slot)
    }
}

/// Reads what [`is_interactive`] judges from the headers. Headers outside
/// the linear data (rare: the parser had to load them) count as bulk. With
/// `first_bytes`, a SYN or SYN-ACK notes where its connection's data
/// begins, and a data segment in its connection's first bytes is
/// interactive.
#[inline(always)]
fn interactive(ctx: &TcContext, h: &Headers, first_bytes: bool) -> bool {
    let f = Linear(ctx);
    let (dscp, ip_len) = (h.dscp, h.ip_len);
    // SAFETY: reading a field of the context.
    let gso_segs = unsafe { (*ctx.skb.skb).gso_segs };
    let mut t = Traits {
        proto: h.l4_proto,
        dscp,
        ip_len,
        tcp_payload: 0,
        ports: [0, 0],
        gso_segs,
    };
    if h.l4_proto == IPPROTO_TCP {
        let Some(tcp) = f.read::<[u8; 14]>(h.l4_off) else {
            return false;
        };
        t.ports = [
            u16::from_be_bytes([tcp[0], tcp[1]]),
            u16::from_be_bytes([tcp[2], tcp[3]]),
        ];
        // Payload from the lengths already read: the IP packet's end less
        // the end of the TCP header. A zero length (BIG TCP) is data.
        let tcp_end = (h.l4_off - h.l3_off) as u32 + u32::from(tcp[12] >> 4) * 4;
        t.tcp_payload = if ip_len == 0 || (!h.is_v4 && ip_len == 40) {
            u32::MAX
        } else {
            ip_len.saturating_sub(tcp_end)
        };
        if first_bytes {
            let fast = is_interactive(&t);
            if tcp[13] & TCP_SYN != 0 {
                note_start(h, &tcp);
            } else if !fast {
                return in_first_bytes_of(h, &tcp, t.tcp_payload);
            }
            return fast;
        }
    } else if h.l4_proto == IPPROTO_UDP {
        let Some(udp) = f.read::<[u8; 4]>(h.l4_off) else {
            return false;
        };
        t.ports = [
            u16::from_be_bytes([udp[0], udp[1]]),
            u16::from_be_bytes([udp[2], udp[3]]),
        ];
    }
    is_interactive(&t)
}

/// The key of a TCP connection toward an OPD in the table of starts: its
/// ports as read, and the OPD host's address folded.
#[inline(always)]
fn start_key(h: &Headers, tcp: &[u8; 14]) -> (u32, u32) {
    (
        u32::from_ne_bytes([tcp[0], tcp[1], tcp[2], tcp[3]]),
        fold_addr(&h.addr),
    )
}

/// Notes where the connection of a SYN or SYN-ACK toward an OPD begins.
#[inline(always)]
fn note_start(h: &Headers, tcp: &[u8; 14]) {
    let (ports, addr) = start_key(h, tcp);
    let seq = u32::from_be_bytes([tcp[4], tcp[5], tcp[6], tcp[7]]);
    if let Some(s) = JATAH_STARTS.get_ptr_mut(start_index(ports, addr)) {
        // SAFETY: a map value; another CPU may write the same entry at
        // once, which at worst leaves a connection's data in bulk.
        unsafe {
            *s = ConnectionStart {
                ports,
                addr,
                first_seq: seq.wrapping_add(1),
            }
        };
    }
}

/// Whether a data segment toward an OPD of `payload` bytes lies within
/// its connection's first bytes.
#[inline(always)]
fn in_first_bytes_of(h: &Headers, tcp: &[u8; 14], payload: u32) -> bool {
    let (ports, addr) = start_key(h, tcp);
    let seq = u32::from_be_bytes([tcp[4], tcp[5], tcp[6], tcp[7]]);
    match JATAH_STARTS.get(start_index(ports, addr)) {
        Some(s) => in_first_bytes(s, ports, addr, seq, payload),
        None => false,
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
    let (slot, entry) = slot_of(&h);
    if slot == NO_SLOT {
        return unclassified(&ctx, DOWNLOAD, bytes);
    }
    count(slot, DOWNLOAD, bytes);
    let cfg = config();
    count_host(entry, DOWNLOAD, bytes, &cfg);
    set_class(&ctx, class_of(&ctx, &h, slot, &cfg, true));
    if tcp_tracking(&cfg) {
        track_tcp(&ctx, &h, slot, Way::ToOpd, cfg.flags);
    }
    TC_ACT_UNSPEC
}

/// Upload, first half: LAN-facing ingress (the LAN device, and the ports
/// OPDs are bound to), by source address before NAT, checked against the
/// OPD's place. Stores slot + 1 in the mark bits the admin gave jatah, or
/// `NO_OPD_TAG` (0 = not looked at). A packet already tagged at an OPD's
/// port keeps its tag at the bridge above it.
#[classifier]
pub fn jatah_ul_mark(ctx: TcContext) -> i32 {
    let cfg = config();
    if cfg.mark_mask == 0 {
        return TC_ACT_UNSPEC;
    }
    // SAFETY: reading a field of the context.
    let mark = unsafe { (*ctx.skb.skb).mark };
    if mark & cfg.mark_mask != 0 {
        return TC_ACT_UNSPEC;
    }
    let tag = match parse(&ctx, true) {
        Ok(h) => {
            let here = arrival(&ctx, &h);
            note_visit(&ctx, &h, here);
            let (slot, entry) = slot_of(&h);
            match slot {
                NO_SLOT => NO_OPD_TAG,
                slot if !at_its_place(slot, here) => {
                    if let Some(n) = JATAH_MISPLACED.get_ptr_mut(slot) {
                        // SAFETY: per-CPU slot, only this CPU writes it.
                        unsafe { *n += 1 };
                    }
                    NO_OPD_TAG
                }
                slot => {
                    // Counted here, where the source is still the host's
                    // own address (NAT rewrites it before WAN egress).
                    count_host(entry, UPLOAD, wire_bytes(&ctx, &h), &cfg);
                    if tcp_tracking(&cfg) {
                        track_tcp(&ctx, &h, slot, Way::FromOpd, cfg.flags);
                    }
                    slot + 1
                }
            }
        }
        Err(_) => 0,
    };
    ctx.set_mark(mark | ((tag << cfg.mark_shift) & cfg.mark_mask));
    TC_ACT_UNSPEC
}

/// Where a packet came in: the interface (`skb->ingress_ifindex`) and its
/// VLAN id, from the skb's metadata (a tag the NIC took off) or the frame.
#[inline(always)]
fn arrival(ctx: &TcContext, h: &Headers) -> Place {
    // SAFETY: reading fields of the context.
    let (ifindex, present, tci) = unsafe {
        let s = ctx.skb.skb;
        ((*s).ingress_ifindex, (*s).vlan_present, (*s).vlan_tci)
    };
    Place {
        ifindex,
        vlan: if present != 0 {
            (tci & 0x0fff) as u16
        } else {
            h.vlan
        },
        _pad: 0,
    }
}

#[inline(always)]
fn at_its_place(slot: u32, here: Place) -> bool {
    match JATAH_PLACES.get(slot) {
        Some(p) => p.allows(here.ifindex, here.vlan),
        None => true,
    }
}

/// Remembers where a connection to the status page (a SYN to its port)
/// came in from.
#[inline(always)]
fn note_visit(ctx: &TcContext, h: &Headers, here: Place) {
    let port = match JATAH_SPORT.get(0) {
        Some(&p) if p != 0 => p,
        _ => return,
    };
    if h.l4_proto != IPPROTO_TCP {
        return;
    }
    let (Ok(sport), Ok(dport), Ok(flags)) = (
        ctx.load::<[u8; 2]>(h.l4_off),
        ctx.load::<[u8; 2]>(h.l4_off + 2),
        ctx.load::<u8>(h.l4_off + 13),
    ) else {
        return;
    };
    // A SYN without ACK (the handshake's first packet).
    if u32::from(u16::from_be_bytes(dport)) != port || flags & 0x12 != TCP_SYN {
        return;
    }
    let key = VisitKey {
        addr: h.addr,
        port: u16::from_be_bytes(sport),
        _pad: 0,
    };
    let _ = JATAH_VISITS.insert(key, here, 0);
}

/// Upload, second half: WAN egress, by the mark set at LAN ingress, else by
/// source address (a gateway that does not masquerade).
#[classifier]
pub fn jatah_ul(ctx: TcContext) -> i32 {
    match parse(&ctx, true) {
        Ok(h) => upload(&ctx, h),
        Err(e) => parse_failed(&ctx, UPLOAD, e),
    }
}

/// [`jatah_ul`] for a WAN without a link layer (PPP/PPPoE, WireGuard,
/// tun, raw-IP modems): its packets start with the IP header.
#[classifier]
pub fn jatah_ul_l3(ctx: TcContext) -> i32 {
    match parse_l3(&ctx, true) {
        Ok(h) => upload(&ctx, h),
        Err(e) => parse_failed(&ctx, UPLOAD, e),
    }
}

#[inline(always)]
fn upload(ctx: &TcContext, h: Headers) -> i32 {
    let bytes = wire_bytes(ctx, &h);
    let cfg = config();
    // SAFETY: reading a field of the context.
    let mark = unsafe { (*ctx.skb.skb).mark };
    let tag = if cfg.mark_mask == 0 {
        0
    } else {
        (mark & cfg.mark_mask) >> cfg.mark_shift
    };
    let (slot, entry) = if tag != 0 && tag <= MAX_OPDS {
        (tag - 1, None)
    } else if tag == NO_OPD_TAG {
        // Decided at LAN ingress: no OPD's (perhaps an OPD's address from
        // the wrong place), whatever its source address says.
        (NO_SLOT, None)
    } else {
        slot_of(&h)
    };
    if slot == NO_SLOT {
        return unclassified(ctx, UPLOAD, bytes);
    }
    count(slot, UPLOAD, bytes);
    if cfg.mark_mask == 0 {
        // No LAN-ingress program: the source here is the host's.
        count_host(entry, UPLOAD, bytes, &cfg);
    }
    set_class(ctx, class_of(ctx, &h, slot, &cfg, false));
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
