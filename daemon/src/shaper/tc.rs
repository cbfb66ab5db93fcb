//! Traffic-control wire formats: `struct tcmsg`, HTB's qdisc and class
//! options, leaf qdisc options and the statistics the kernel dumps.
//! Values and layouts are those of `linux/rtnetlink.h` and
//! `linux/pkt_sched.h`; all integers are in host byte order.

use super::netlink::{Request, attrs, c_string};

pub(super) const RTM_NEWQDISC: u16 = 36;
pub(super) const RTM_DELQDISC: u16 = 37;
pub(super) const RTM_GETQDISC: u16 = 38;
pub(super) const RTM_NEWTCLASS: u16 = 40;
pub(super) const RTM_DELTCLASS: u16 = 41;
pub(super) const RTM_GETTCLASS: u16 = 42;

/// Parent of a root qdisc, and of a root class.
pub(super) const TC_H_ROOT: u32 = 0xffff_ffff;

// enum TCA_*
pub(super) const TCA_KIND: u16 = 1;
pub(super) const TCA_OPTIONS: u16 = 2;
const TCA_STATS2: u16 = 7;
pub(super) const TCA_INGRESS_BLOCK: u16 = 13;

// enum TCA_STATS_*
const TCA_STATS_BASIC: u16 = 1;
const TCA_STATS_QUEUE: u16 = 3;
const TCA_STATS_PKT64: u16 = 8;

// enum TCA_HTB_*
const TCA_HTB_PARMS: u16 = 1;
const TCA_HTB_INIT: u16 = 2;
const TCA_HTB_RATE64: u16 = 6;
const TCA_HTB_CEIL64: u16 = 7;
const TC_HTB_PROTOVER: u32 = 3;

// enum TCA_FQ_CODEL_*
const TCA_FQ_CODEL_LIMIT: u16 = 2;

/// With this link layer the kernel computes transmit times itself and needs
/// no rate table (`htb_change_class` only reads TCA_HTB_RTAB/CTAB for
/// `TC_LINKLAYER_UNAWARE`).
const TC_LINKLAYER_ETHERNET: u8 = 1;

/// Packet scheduler clock: one psched tick is 2^6 ns (`PSCHED_SHIFT`).
const PSCHED_TICK_NS: u128 = 64;
/// Burst sizing as tc's q_htb documents it: one timer tick's worth of
/// bytes at the class rate plus one MTU, with HZ = 1000. (Current tc reads
/// "HZ" as 10^9 from /proc/net/psched and so ends up with about one MTU,
/// which is too small to keep a fast class at its rate when the qdisc
/// watchdog fires late.)
const BURST_HZ: u64 = 1000;
const BURST_MTU: u64 = 1600;
/// Bounds of the DRR quantum (bytes). Below an MTU a class needs several
/// rounds per packet; above 200000 the kernel warns and fairness suffers.
const QUANTUM_MIN: u64 = 1600;
const QUANTUM_MAX: u64 = 200_000;
/// `rate2quantum` of the qdisc, only used for classes without an explicit
/// quantum (jatah always sets one).
const RATE2QUANTUM: u32 = 10;

/// `struct tcmsg` (20 bytes).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct TcMsg {
    pub(super) ifindex: u32,
    pub(super) handle: u32,
    pub(super) parent: u32,
    /// Qdisc messages: the refcount. Class messages: the leaf qdisc's handle.
    pub(super) info: u32,
}

const TCMSG_LEN: usize = 20;

impl TcMsg {
    pub(super) fn new(ifindex: u32, handle: u32, parent: u32) -> TcMsg {
        TcMsg {
            ifindex,
            handle,
            parent,
            info: 0,
        }
    }

    pub(super) fn encode(&self) -> [u8; TCMSG_LEN] {
        let mut b = [0u8; TCMSG_LEN];
        // tcm_family = AF_UNSPEC and the two pad fields stay zero.
        b[4..8].copy_from_slice(&self.ifindex.to_ne_bytes());
        b[8..12].copy_from_slice(&self.handle.to_ne_bytes());
        b[12..16].copy_from_slice(&self.parent.to_ne_bytes());
        b[16..20].copy_from_slice(&self.info.to_ne_bytes());
        b
    }

    fn decode(payload: &[u8]) -> Option<TcMsg> {
        let b = payload.get(..TCMSG_LEN)?;
        Some(TcMsg {
            ifindex: u32_at(b, 4)?,
            handle: u32_at(b, 8)?,
            parent: u32_at(b, 12)?,
            info: u32_at(b, 16)?,
        })
    }
}

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_ne_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

fn u64_at(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_ne_bytes(b.get(at..at + 8)?.try_into().ok()?))
}

/// A qdisc or class message from a dump, split into its parts.
#[derive(Debug)]
pub(super) struct TcObject {
    pub(super) msg: TcMsg,
    pub(super) kind: String,
    pub(super) options: Option<Vec<u8>>,
    pub(super) stats: Option<Stats>,
}

impl TcObject {
    pub(super) fn decode(payload: &[u8]) -> Option<TcObject> {
        let msg = TcMsg::decode(payload)?;
        let mut obj = TcObject {
            msg,
            kind: String::new(),
            options: None,
            stats: None,
        };
        for (attr_type, value) in attrs(&payload[TCMSG_LEN..]) {
            match attr_type {
                TCA_KIND => obj.kind = c_string(value),
                TCA_OPTIONS => obj.options = Some(value.to_vec()),
                TCA_STATS2 => obj.stats = Some(Stats::decode(value)),
                _ => {}
            }
        }
        Some(obj)
    }
}

/// The counters of `TCA_STATS2`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct Stats {
    pub(super) bytes: u64,
    pub(super) packets: u64,
    pub(super) drops: u64,
    pub(super) overlimits: u64,
    pub(super) backlog: u32,
    pub(super) qlen: u32,
}

impl Stats {
    fn decode(nested: &[u8]) -> Stats {
        let mut s = Stats::default();
        let mut packets64 = None;
        for (attr_type, v) in attrs(nested) {
            match attr_type {
                // struct gnet_stats_basic { __u64 bytes; __u32 packets; }
                TCA_STATS_BASIC => {
                    s.bytes = u64_at(v, 0).unwrap_or(0);
                    s.packets = u32_at(v, 8).map_or(0, u64::from);
                }
                // Sent in addition to BASIC once packets exceed u32.
                TCA_STATS_PKT64 => packets64 = u64_at(v, 0),
                // struct gnet_stats_queue { qlen, backlog, drops, requeues, overlimits }
                TCA_STATS_QUEUE => {
                    s.qlen = u32_at(v, 0).unwrap_or(0);
                    s.backlog = u32_at(v, 4).unwrap_or(0);
                    s.drops = u32_at(v, 8).map_or(0, u64::from);
                    s.overlimits = u32_at(v, 16).map_or(0, u64::from);
                }
                _ => {}
            }
        }
        if let Some(p) = packets64 {
            s.packets = p;
        }
        s
    }
}

/// `TCA_OPTIONS` of jatah's HTB qdisc: `struct tc_htb_glob`.
pub(super) fn encode_htb_qdisc(req: &mut Request, default_minor: u16) {
    let mut glob = [0u8; 20];
    glob[0..4].copy_from_slice(&TC_HTB_PROTOVER.to_ne_bytes());
    glob[4..8].copy_from_slice(&RATE2QUANTUM.to_ne_bytes());
    glob[8..12].copy_from_slice(&u32::from(default_minor).to_ne_bytes());
    // debug and direct_pkts stay zero.
    let nest = req.begin_nest(TCA_OPTIONS);
    req.attr(TCA_HTB_INIT, &glob);
    req.end_nest(nest);
}

/// The default class (`defcls`) of an HTB qdisc, from its options.
pub(super) fn decode_htb_default(options: &[u8]) -> Option<u32> {
    let (_, glob) = attrs(options).find(|&(t, _)| t == TCA_HTB_INIT)?;
    u32_at(glob, 8)
}

/// The parameters of an HTB class that jatah sets (and compares, to leave
/// a class that already has them alone).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct HtbClass {
    /// Bytes per second.
    pub(super) rate: u64,
    pub(super) ceil: u64,
    /// Bucket depths in psched ticks.
    pub(super) buffer: u32,
    pub(super) cbuffer: u32,
    pub(super) quantum: u32,
    pub(super) prio: u32,
    pub(super) rate_linklayer: u8,
    pub(super) ceil_linklayer: u8,
    pub(super) overhead: u16,
    pub(super) mpu: u16,
}

/// `struct tc_ratespec` (12 bytes) + `struct tc_ratespec` + 5 x u32.
const HTB_OPT_LEN: usize = 44;

impl HtbClass {
    /// The class for a guaranteed rate and a ceiling in bytes per second.
    pub(super) fn new(rate: u64, ceil: u64) -> HtbClass {
        HtbClass {
            rate,
            ceil,
            buffer: burst_ticks(rate),
            cbuffer: burst_ticks(ceil),
            quantum: quantum(rate),
            prio: 0,
            rate_linklayer: TC_LINKLAYER_ETHERNET,
            ceil_linklayer: TC_LINKLAYER_ETHERNET,
            overhead: 0,
            mpu: 0,
        }
    }

    /// Whether `self` (from the kernel) already shapes like `want`.
    /// quantum and prio only exist for leaves: the kernel ignores them when
    /// an inner class is changed and dumps whatever it had as a leaf.
    pub(super) fn same_as(&self, want: &HtbClass, is_leaf: bool) -> bool {
        let shaping = |c: &HtbClass| {
            (
                c.rate,
                c.ceil,
                c.buffer,
                c.cbuffer,
                c.rate_linklayer,
                c.ceil_linklayer,
                c.overhead,
                c.mpu,
            )
        };
        shaping(self) == shaping(want)
            && (!is_leaf || (self.quantum, self.prio) == (want.quantum, want.prio))
    }

    /// Appends `TCA_OPTIONS { TCA_HTB_PARMS, [TCA_HTB_RATE64], [TCA_HTB_CEIL64] }`.
    pub(super) fn encode(&self, req: &mut Request) {
        let mut opt = [0u8; HTB_OPT_LEN];
        encode_ratespec(&mut opt[0..12], self.rate, self.rate_linklayer, self);
        encode_ratespec(&mut opt[12..24], self.ceil, self.ceil_linklayer, self);
        opt[24..28].copy_from_slice(&self.buffer.to_ne_bytes());
        opt[28..32].copy_from_slice(&self.cbuffer.to_ne_bytes());
        opt[32..36].copy_from_slice(&self.quantum.to_ne_bytes());
        // level (36..40) is output only.
        opt[40..44].copy_from_slice(&self.prio.to_ne_bytes());
        let nest = req.begin_nest(TCA_OPTIONS);
        req.attr(TCA_HTB_PARMS, &opt);
        // The 32-bit ratespec saturates at ~34 Gbit/s; beyond, the kernel
        // takes the 64-bit attributes (and still wants a non-zero u32).
        if self.rate > u64::from(u32::MAX) {
            req.attr_u64(TCA_HTB_RATE64, self.rate);
        }
        if self.ceil > u64::from(u32::MAX) {
            req.attr_u64(TCA_HTB_CEIL64, self.ceil);
        }
        req.end_nest(nest);
    }

    /// Decodes a class's `TCA_OPTIONS`; also returns its level (0 = leaf).
    pub(super) fn decode(options: &[u8]) -> Option<(HtbClass, u32)> {
        let mut parms = None;
        let mut rate64 = None;
        let mut ceil64 = None;
        for (attr_type, v) in attrs(options) {
            match attr_type {
                TCA_HTB_PARMS => parms = Some(v),
                TCA_HTB_RATE64 => rate64 = u64_at(v, 0),
                TCA_HTB_CEIL64 => ceil64 = u64_at(v, 0),
                _ => {}
            }
        }
        let p = parms?;
        if p.len() < HTB_OPT_LEN {
            return None;
        }
        let class = HtbClass {
            rate: rate64.unwrap_or(u64::from(u32_at(p, 8)?)),
            ceil: ceil64.unwrap_or(u64::from(u32_at(p, 20)?)),
            buffer: u32_at(p, 24)?,
            cbuffer: u32_at(p, 28)?,
            quantum: u32_at(p, 32)?,
            prio: u32_at(p, 40)?,
            rate_linklayer: p[1],
            ceil_linklayer: p[13],
            overhead: u16_at(p, 2)?,
            mpu: u16_at(p, 6)?,
        };
        Some((class, u32_at(p, 36)?))
    }
}

/// `struct tc_ratespec { cell_log, linklayer, overhead, cell_align, mpu, rate }`.
fn encode_ratespec(out: &mut [u8], rate: u64, linklayer: u8, class: &HtbClass) {
    out[0] = 0; // cell_log: only used with rate tables
    out[1] = linklayer;
    out[2..4].copy_from_slice(&class.overhead.to_ne_bytes());
    out[4..6].copy_from_slice(&0i16.to_ne_bytes()); // cell_align
    out[6..8].copy_from_slice(&class.mpu.to_ne_bytes());
    let rate32 = u32::try_from(rate).unwrap_or(u32::MAX);
    out[8..12].copy_from_slice(&rate32.to_ne_bytes());
}

/// Bucket depth for `rate` bytes/s, as the time it takes to send
/// `rate / HZ + MTU` bytes at that rate, in psched ticks.
pub(super) fn burst_ticks(rate: u64) -> u32 {
    let rate = rate.max(1);
    let bytes = u128::from(rate / BURST_HZ + BURST_MTU);
    let ns = bytes * 1_000_000_000 / u128::from(rate);
    u32::try_from(ns / PSCHED_TICK_NS).unwrap_or(u32::MAX)
}

/// Bucket depth that holds `bytes` at `rate` bytes/s, in psched ticks.
pub(super) fn ticks_for(rate: u64, bytes: u64) -> u32 {
    let ns = u128::from(bytes) * 1_000_000_000 / u128::from(rate.max(1));
    u32::try_from(ns / PSCHED_TICK_NS).unwrap_or(u32::MAX)
}

/// The bucket depth in bytes that `ticks` hold at `rate` (what tc prints
/// as "burst").
#[cfg(test)]
pub(super) fn burst_bytes(rate: u64, ticks: u32) -> u64 {
    (u128::from(rate) * u128::from(ticks) * PSCHED_TICK_NS / 1_000_000_000) as u64
}

/// DRR quantum for a class of `rate` bytes/s: a tenth of a second's worth,
/// within [`QUANTUM_MIN`, `QUANTUM_MAX`]. Setting it explicitly keeps the
/// kernel from computing rate/r2q and warning that it is too small or big.
pub(super) fn quantum(rate: u64) -> u32 {
    (rate / 10).clamp(QUANTUM_MIN, QUANTUM_MAX) as u32
}

/// `TCA_OPTIONS` of a pfifo: `struct tc_fifo_qopt { __u32 limit; }`, not
/// nested.
pub(super) fn encode_pfifo(req: &mut Request, limit: u32) {
    req.attr_u32(TCA_OPTIONS, limit);
}

pub(super) fn decode_pfifo_limit(options: &[u8]) -> Option<u32> {
    u32_at(options, 0)
}

/// `TCA_OPTIONS` of an fq_codel: only the packet limit, the rest defaults.
pub(super) fn encode_fq_codel(req: &mut Request, limit: u32) {
    let nest = req.begin_nest(TCA_OPTIONS);
    req.attr_u32(TCA_FQ_CODEL_LIMIT, limit);
    req.end_nest(nest);
}

pub(super) fn decode_fq_codel_limit(options: &[u8]) -> Option<u32> {
    let (_, v) = attrs(options).find(|&(t, _)| t == TCA_FQ_CODEL_LIMIT)?;
    u32_at(v, 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burst_is_one_tick_of_rate_plus_an_mtu() {
        // 10 Mbit/s = 1_250_000 B/s: 1250 + 1600 = 2850 bytes = 2.28 ms.
        let ticks = burst_ticks(1_250_000);
        assert_eq!(ticks, 2_280_000 / 64);
        assert_eq!(burst_bytes(1_250_000, ticks), 2850);
        // 64 kbit/s = 8000 B/s: 8 + 1600 bytes = 201 ms, still fits in u32.
        assert_eq!(burst_ticks(8000), 201_000_000 / 64);
        // Absurdly slow rates saturate instead of wrapping.
        assert_eq!(burst_ticks(1), u32::MAX);
    }

    #[test]
    fn quantum_is_clamped() {
        assert_eq!(quantum(8000), 1600);
        assert_eq!(quantum(1_250_000), 125_000);
        assert_eq!(quantum(37_500_000), 200_000);
    }

    #[test]
    fn htb_class_round_trips_including_64_bit_rates() {
        let want = HtbClass::new(1_250_000, 12_500_000_000);
        let mut req = Request::new(RTM_NEWTCLASS, 0);
        want.encode(&mut req);
        let bytes = req.bytes();
        let (t, options) = attrs(&bytes[16..]).next().unwrap();
        assert_eq!(t, TCA_OPTIONS);
        let inner: Vec<_> = attrs(options).collect();
        assert_eq!(inner[0].0, TCA_HTB_PARMS);
        assert_eq!(inner[0].1.len(), HTB_OPT_LEN);
        // ceil does not fit in u32: saturated in the struct, exact in CEIL64.
        assert_eq!(u32_at(inner[0].1, 20), Some(u32::MAX));
        assert_eq!(inner[1].0, TCA_HTB_CEIL64);
        assert_eq!(inner.len(), 2);
        let (got, level) = HtbClass::decode(options).unwrap();
        assert_eq!(got, want);
        assert_eq!(level, 0);
        assert!(got.same_as(&want, true));
        let other = HtbClass::new(1_250_001, 12_500_000_000);
        assert!(!got.same_as(&other, true));
    }

    #[test]
    fn stats_prefer_64_bit_packet_count() {
        let mut req = Request::new(0, 0);
        let mut basic = [0u8; 16];
        basic[0..8].copy_from_slice(&5_000_000_000u64.to_ne_bytes());
        basic[8..12].copy_from_slice(&u32::MAX.to_ne_bytes());
        req.attr(TCA_STATS_BASIC, &basic);
        req.attr_u64(TCA_STATS_PKT64, 6_000_000_000);
        let mut queue = [0u8; 20];
        queue[0..4].copy_from_slice(&3u32.to_ne_bytes());
        queue[4..8].copy_from_slice(&4500u32.to_ne_bytes());
        queue[8..12].copy_from_slice(&17u32.to_ne_bytes());
        queue[16..20].copy_from_slice(&99u32.to_ne_bytes());
        req.attr(TCA_STATS_QUEUE, &queue);
        let s = Stats::decode(&req.bytes()[16..]);
        assert_eq!(
            s,
            Stats {
                bytes: 5_000_000_000,
                packets: 6_000_000_000,
                drops: 17,
                overlimits: 99,
                backlog: 4500,
                qlen: 3,
            }
        );
    }
}
