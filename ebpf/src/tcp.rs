//! Following the sampled TCP connections at the LAN-facing interface:
//! handshake round trips on each side of the gateway (`FLAG_RTT`) and
//! retransmissions judged against what the gateway forwarded before
//! (`FLAG_TCP_LOSS`), and how much of their upload the Internet's end
//! acknowledged, per OPD.

use aya_ebpf::{
    macros::map,
    maps::{Array, PerCpuArray},
    programs::TcContext,
};
use jatah_common::{
    Config, DOWNLOAD, FLAG_RTT, FLAG_TCP_LOSS, HANDSHAKE_BITS, HANDSHAKE_ENTRIES, HS_EMPTY,
    HS_IN_SYN, HS_IN_SYNACK, HS_OUT_SYN, HS_OUT_SYNACK, Handshake, MAX_OPDS, NO_IP_ID,
    RttHistogram, SIDE_LAN, SIDE_WAN, SIDES, Segment, SeqState, TCP_FLOW_BITS, TCP_FLOW_ENTRIES,
    TcpFlow, TcpLoss, UPLOAD, ack_advance, handshake_hash, handshake_sampled, judge_segment,
    loss_side, rtt_bucket, rtt_index, seq_start,
};

use crate::atomic_add;
use crate::parse::{Frame, Headers, IPPROTO_TCP, Linear};

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

pub(crate) const TCP_SYN: u8 = 0x02;
const TCP_RST: u8 = 0x04;
const TCP_ACK: u8 = 0x10;

/// Which way a packet crosses the LAN-facing interface.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Way {
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
pub(crate) fn track_tcp(ctx: &TcContext, h: &Headers, slot: u32, way: Way, cfg_flags: u32) {
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
    // The Internet's end acknowledging upload: what reached it.
    let acks_upload = way == Way::ToOpd && tcp[13] & TCP_ACK != 0;
    if payload == 0 && !syn && !acks_upload {
        // An office's pure ACKs: the common case of a download.
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
            ack: 0,
            ack_known: 0,
        };
    }
    if acks_upload {
        let acked = ack_advance(e, u32::from_be_bytes([tcp[8], tcp[9], tcp[10], tcp[11]]));
        if acked > 0
            && let Some(c) = JATAH_TCP.get_ptr_mut(slot)
        {
            // SAFETY: per-CPU slot, only this CPU writes it while we run.
            unsafe { (*c).acked_bytes[UPLOAD] += u64::from(acked) };
        }
        if payload == 0 && !syn {
            return;
        }
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
            (*c).payload_bytes[dir] += u64::from(payload);
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
pub(crate) fn tcp_tracking(cfg: &Config) -> bool {
    cfg.flags & (FLAG_RTT | FLAG_TCP_LOSS) != 0
}
