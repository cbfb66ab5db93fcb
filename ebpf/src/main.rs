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

use aya_ebpf::{
    macros::{classifier, map},
    maps::{Array, LpmTrie, LruHashMap, PerCpuArray, lpm_trie::Key},
    programs::TcContext,
};
use jatah_common::{
    AddrKey, CACHE_ENTRIES, COUNTER_SLOTS, CacheEntry, Config, Counters, DEFAULT_CLASS_MINOR,
    DOWNLOAD, MAX_OPDS, MAX_PREFIXES, NO_SLOT, SLOT_UNCLASSIFIED, STAT_COUNT, SlotOwner, Stat,
    UPLOAD, htb_priority, opd_class_minor,
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
/// BPF_F_NO_COMMON_LRU: per-CPU LRU lists, so CPUs do not contend on one lock.
const BPF_F_NO_COMMON_LRU: u32 = 1 << 1;

#[map]
static JATAH_V4: LpmTrie<[u8; 4], u32> = LpmTrie::pinned(MAX_PREFIXES, 0);
#[map]
static JATAH_V6: LpmTrie<[u8; 16], u32> = LpmTrie::pinned(MAX_PREFIXES, 0);
#[map]
static JATAH_CACHE: LruHashMap<AddrKey, CacheEntry> =
    LruHashMap::pinned(CACHE_ENTRIES, BPF_F_NO_COMMON_LRU);
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
    is_v4: bool,
    /// Bytes from the start of the frame to the end of the transport header:
    /// repeated once per GSO segment on the wire.
    header_len: u32,
}

#[inline(always)]
fn load_u8(ctx: &TcContext, off: usize) -> Result<u8, ParseError> {
    ctx.load::<u8>(off).map_err(|_| ParseError::Malformed)
}

#[inline(always)]
fn load_be16(ctx: &TcContext, off: usize) -> Result<u16, ParseError> {
    ctx.load::<u16>(off)
        .map(u16::from_be)
        .map_err(|_| ParseError::Malformed)
}

#[inline(always)]
fn parse(ctx: &TcContext, by_source: bool) -> Result<Headers, ParseError> {
    let mut ethertype = load_be16(ctx, 12)?;
    let mut off = ETH_HLEN;
    // Up to two in-band tags (802.1ad outer + 802.1Q inner). A tag the NIC
    // already stripped into skb metadata is simply not in the payload.
    if ethertype == ETH_P_8021AD || ethertype == ETH_P_8021Q {
        ethertype = load_be16(ctx, off + 2)?;
        off += 4;
        if ethertype == ETH_P_8021AD || ethertype == ETH_P_8021Q {
            ethertype = load_be16(ctx, off + 2)?;
            off += 4;
        }
    }
    let mut addr = AddrKey::default();
    let (l4_proto, l4_off, is_v4) = match ethertype {
        ETH_P_IP => {
            let ver_ihl = load_u8(ctx, off)?;
            let ihl = ((ver_ihl & 0x0f) as usize) * 4;
            if ver_ihl >> 4 != 4 || ihl < 20 {
                return Err(ParseError::Malformed);
            }
            // The whole IPv4 header (with options) must be present.
            load_u8(ctx, off + ihl - 1)?;
            let a: [u8; 4] = ctx
                .load(off + if by_source { 12 } else { 16 })
                .map_err(|_| ParseError::Malformed)?;
            addr.addr[10] = 0xff;
            addr.addr[11] = 0xff;
            addr.addr[12..16].copy_from_slice(&a);
            (load_u8(ctx, off + 9)?, off + ihl, true)
        }
        ETH_P_IPV6 => {
            if load_u8(ctx, off)? >> 4 != 6 {
                return Err(ParseError::Malformed);
            }
            addr.addr = ctx
                .load(off + if by_source { 8 } else { 24 })
                .map_err(|_| ParseError::Malformed)?;
            // Extension headers are not walked: they only make the GSO
            // header estimate below smaller, never the attribution wrong.
            (load_u8(ctx, off + 6)?, off + 40, false)
        }
        _ => return Err(ParseError::NonIp),
    };
    let header_len = match l4_proto {
        IPPROTO_TCP => match ctx.load::<u8>(l4_off + 12) {
            Ok(doff) => l4_off + ((doff >> 4) as usize) * 4,
            Err(_) => l4_off,
        },
        IPPROTO_UDP => l4_off + 8,
        _ => l4_off,
    };
    Ok(Headers {
        addr,
        is_v4,
        header_len: header_len as u32,
    })
}

/// OPD slot of an address, or `NO_SLOT`. A cache of recent addresses sits in
/// front of the tries; entries decided under an older policy (epoch) are
/// looked up again.
#[inline(always)]
fn slot_of(h: &Headers) -> u32 {
    // Read the epoch before the tries: an entry stored with it is re-checked
    // if the daemon changes the tries (and bumps the epoch) meanwhile.
    let epoch = match JATAH_CONFIG.get(0) {
        Some(c) => c.epoch,
        None => 0,
    };
    // SAFETY: the value is copied out at once; a concurrent update can only
    // make it stale, which the epoch check catches.
    if let Some(hit) = unsafe { JATAH_CACHE.get(h.addr) }
        && hit.epoch == epoch
    {
        return hit.slot;
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
    let _ = JATAH_CACHE.insert(h.addr, CacheEntry { slot, epoch }, 0);
    slot
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
fn wire_bytes(ctx: &TcContext, header_len: u32) -> u64 {
    let len = ctx.len() as u64;
    // SAFETY: reading a field of the context the kernel handed us.
    let segs = unsafe { (*ctx.skb.skb).gso_segs } as u64;
    if segs > 1 {
        len + (segs - 1) * header_len as u64
    } else {
        len
    }
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
    let h = match parse(&ctx, false) {
        Ok(h) => h,
        Err(e) => return parse_failed(&ctx, DOWNLOAD, e),
    };
    let bytes = wire_bytes(&ctx, h.header_len);
    let slot = slot_of(&h);
    if slot == NO_SLOT {
        return unclassified(&ctx, DOWNLOAD, bytes);
    }
    count(slot, DOWNLOAD, bytes);
    set_class(&ctx, opd_class_minor(slot));
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
            slot => ((slot + 1) << cfg.mark_shift) & cfg.mark_mask,
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
    let bytes = wire_bytes(&ctx, h.header_len);
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
