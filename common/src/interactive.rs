//! Which packets ride an OPD's interactive lane: a judgement on header
//! fields the classifier has already read, kept here so the host tests it.

/// DSCP code points served in the interactive lane, as a bitmap indexed by
/// code point: EF (46), VOICE-ADMIT (44), CS5 (40), AF41/42/43 (34/36/38),
/// the marks of calls and video conferences.
pub const INTERACTIVE_DSCP: u64 =
    (1 << 46) | (1 << 44) | (1 << 40) | (1 << 34) | (1 << 36) | (1 << 38);
/// Largest UDP datagram (IP bytes) served in the interactive lane: a voice
/// frame (a 20 ms G.711 frame is 214 bytes, Opus less) but no video.
pub const INTERACTIVE_UDP_MAX: u32 = 256;

pub const IPPROTO_ICMP: u8 = 1;
pub const IPPROTO_ICMPV6: u8 = 58;

/// What [`is_interactive`] looks at, all from headers the classifier
/// has already read.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct Traits {
    /// Transport protocol (IPv6: the first next header).
    pub proto: u8,
    /// DSCP (the top six bits of TOS / traffic class).
    pub dscp: u8,
    /// Bytes of the IP packet (of one segment for GSO).
    pub ip_len: u32,
    /// TCP payload bytes of the whole skb (0 for a pure ACK, SYN, FIN, RST).
    pub tcp_payload: u32,
    /// Source and destination ports (TCP, UDP); 0 otherwise.
    pub ports: [u16; 2],
    /// GSO segments (0 or 1 for a single packet).
    pub gso_segs: u32,
}

/// Whether a packet rides its OPD's interactive lane: what a person waits
/// on and what keeps a transfer moving, all small. ICMP; TCP segments
/// without payload (ACK, SYN, FIN, RST: an upload's ACKs must not queue
/// behind the office's own download, nor the other way round); DNS (53)
/// and NTP (123); DSCP EF, VOICE-ADMIT, CS5, AF4x; UDP up to
/// [`INTERACTIVE_UDP_MAX`] bytes. The lane shares its OPD's ceiling, so
/// marking everything interactive gains an office nothing over another.
#[inline(always)]
pub fn is_interactive(t: &Traits) -> bool {
    let service = |p: u16| p == 53 || p == 123;
    let by_kind = match t.proto {
        IPPROTO_ICMP | IPPROTO_ICMPV6 => true,
        // Without payload (ACK, SYN, FIN, RST), or DNS.
        6 => (t.tcp_payload == 0 && t.gso_segs <= 1) || t.ports[0] == 53 || t.ports[1] == 53,
        17 => t.ip_len <= INTERACTIVE_UDP_MAX || service(t.ports[0]) || service(t.ports[1]),
        _ => false,
    };
    by_kind || (t.dscp < 64 && INTERACTIVE_DSCP & (1u64 << t.dscp) != 0)
}

/// Config flag: the first [`FIRST_BYTES`] of each TCP connection toward an
/// OPD ride its interactive lane (`boost_new_connections`).
pub const FLAG_FIRST_BYTES: u32 = 32;
/// Bytes of a new TCP connection toward an OPD that ride its interactive
/// lane: a small web object (a page's script, image or API answer) comes
/// whole ahead of the office's own long downloads, as a new flow does under
/// fq_codel; a long download's first 32 KiB do too, and the rest waits in
/// the bulk lane. Both lanes are inside the OPD's class: an office gains
/// nothing over another by it.
pub const FIRST_BYTES: u32 = 32 * 1024;
/// Entries of the table of connection starts (a power of two).
pub const STARTS_BITS: u32 = 13;
pub const STARTS_ENTRIES: u32 = 1 << STARTS_BITS;

/// Where a TCP connection toward an OPD began: written when its SYN or
/// SYN-ACK passes, read by its data segments. Direct-mapped and shared
/// between CPUs; a later connection at the same index takes the entry,
/// and the earlier one's data is then bulk, as without the table.
#[repr(C)]
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct ConnectionStart {
    /// The TCP header's first word (source and destination port) as read.
    pub ports: u32,
    /// The OPD host's address, its four words folded ([`fold_addr`]).
    pub addr: u32,
    /// The sequence number of the connection's first byte of data.
    pub first_seq: u32,
}

/// An address's four 32-bit words folded into one by XOR.
#[inline(always)]
pub fn fold_addr(a: &crate::AddrKey) -> u32 {
    let w = |i: usize| u32::from_ne_bytes([a.addr[i], a.addr[i + 1], a.addr[i + 2], a.addr[i + 3]]);
    w(0) ^ w(4) ^ w(8) ^ w(12)
}

/// Index of a connection in the table of starts.
#[inline(always)]
pub fn start_index(ports: u32, addr: u32) -> u32 {
    (ports ^ addr.rotate_left(16)).wrapping_mul(0x9e37_79b1) >> (32 - STARTS_BITS)
}

/// Whether a data segment of `payload` bytes starting at `seq` lies
/// within the first [`FIRST_BYTES`] of the connection whose start `s`
/// holds. A GSO packet that reaches past them is bulk whole; so is one of
/// unknown length (`u32::MAX`, BIG TCP).
#[inline(always)]
pub fn in_first_bytes(s: &ConnectionStart, ports: u32, addr: u32, seq: u32, payload: u32) -> bool {
    s.ports == ports
        && s.addr == addr
        && payload <= FIRST_BYTES
        && seq.wrapping_sub(s.first_seq) <= FIRST_BYTES - payload
}

const _: () = assert!(core::mem::size_of::<ConnectionStart>() == 12);
const _: () = assert!(STARTS_ENTRIES == 1 << STARTS_BITS);

#[cfg(feature = "user")]
mod pod {
    // SAFETY: repr(C), Copy, no padding (asserted above).
    unsafe impl aya::Pod for super::ConnectionStart {}
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tcp(payload: u32, gso_segs: u32) -> Traits {
        Traits {
            proto: 6,
            ip_len: 40 + payload,
            tcp_payload: payload,
            ports: [443, 50_000],
            gso_segs,
            ..Traits::default()
        }
    }

    #[test]
    fn small_and_urgent_packets_are_interactive_and_bulk_is_not() {
        let icmp = Traits {
            proto: IPPROTO_ICMP,
            ip_len: 84,
            ..Traits::default()
        };
        let icmp6 = Traits {
            proto: IPPROTO_ICMPV6,
            ip_len: 104,
            ..Traits::default()
        };
        assert!(is_interactive(&icmp) && is_interactive(&icmp6));
        assert!(is_interactive(&tcp(0, 1)), "pure ACK / SYN / FIN / RST");
        assert!(is_interactive(&tcp(0, 0)));
        assert!(!is_interactive(&tcp(1, 1)), "one byte of data is data");
        assert!(!is_interactive(&tcp(1448, 1)));
        assert!(!is_interactive(&tcp(64_000, 44)), "GSO data");
        let dns_tcp = Traits {
            ports: [50_000, 53],
            ..tcp(1200, 1)
        };
        assert!(is_interactive(&dns_tcp));
        let udp = |len: u32, ports: [u16; 2], dscp: u8| Traits {
            proto: 17,
            ip_len: len,
            ports,
            dscp,
            ..Traits::default()
        };
        assert!(is_interactive(&udp(214, [5004, 5004], 0)), "a voice frame");
        assert!(is_interactive(&udp(256, [5004, 5004], 0)));
        assert!(!is_interactive(&udp(257, [5004, 5004], 0)));
        assert!(!is_interactive(&udp(1200, [443, 50_000], 0)), "QUIC data");
        assert!(
            is_interactive(&udp(1200, [50_000, 53], 0)),
            "a large DNS answer"
        );
        assert!(is_interactive(&udp(1200, [123, 123], 0)), "NTP");
        for dscp in [46, 44, 40, 34, 36, 38] {
            assert!(
                is_interactive(&udp(1200, [5004, 5004], dscp)),
                "DSCP {dscp}"
            );
            assert!(
                is_interactive(&Traits {
                    dscp,
                    ..tcp(1448, 1)
                }),
                "DSCP {dscp}"
            );
        }
        for dscp in [0, 8, 10, 18, 26, 32, 48, 56, 63] {
            assert!(
                !is_interactive(&udp(1200, [5004, 5004], dscp)),
                "DSCP {dscp}"
            );
        }
        let gre = Traits {
            proto: 47,
            ip_len: 100,
            ..Traits::default()
        };
        assert!(!is_interactive(&gre), "other protocols are bulk");
    }

    #[test]
    fn a_connections_first_bytes_are_known_by_its_start_and_no_others() {
        let mut a = crate::AddrKey::default();
        a.addr[10] = 0xff;
        a.addr[11] = 0xff;
        a.addr[12..].copy_from_slice(&[10, 1, 0, 7]);
        let addr = fold_addr(&a);
        let ports = u32::from_ne_bytes([0x01, 0xbb, 0xc3, 0x50]);
        let isn = u32::MAX - 1000; // the first bytes wrap around zero
        let s = ConnectionStart {
            ports,
            addr,
            first_seq: isn.wrapping_add(1),
        };
        let seq = |offset: u32| isn.wrapping_add(1).wrapping_add(offset);
        assert!(in_first_bytes(&s, ports, addr, seq(0), 1448));
        assert!(in_first_bytes(
            &s,
            ports,
            addr,
            seq(FIRST_BYTES - 1448),
            1448
        ));
        assert!(!in_first_bytes(
            &s,
            ports,
            addr,
            seq(FIRST_BYTES - 1447),
            1448
        ));
        assert!(
            in_first_bytes(&s, ports, addr, seq(0), 20_000),
            "a 20 KB object in one GSO packet"
        );
        assert!(
            !in_first_bytes(&s, ports, addr, seq(0), 65_000),
            "a GSO packet reaching past them"
        );
        assert!(
            !in_first_bytes(&s, ports, addr, seq(0), u32::MAX),
            "unknown length"
        );
        assert!(
            !in_first_bytes(&s, ports, addr, seq(10 << 20), 1448),
            "a long download"
        );
        assert!(
            !in_first_bytes(&s, ports, addr, isn, 1448),
            "before the first byte"
        );
        assert!(
            !in_first_bytes(&s, ports ^ 1, addr, seq(0), 1448),
            "another connection"
        );
        assert!(
            !in_first_bytes(&s, ports, addr ^ 1, seq(0), 1448),
            "another host"
        );
        assert!(
            !in_first_bytes(&ConnectionStart::default(), ports, addr, 0, 1448),
            "an empty entry"
        );
        // Indices spread: 4,096 connections of one host to one server
        // (ports differ only in the client's) take most of the 8,192 entries.
        let mut seen = [false; STARTS_ENTRIES as usize];
        for p in 0..4096u32 {
            let ports = u32::from_ne_bytes([0x01, 0xbb, (p >> 8) as u8, p as u8]);
            let i = start_index(ports, addr);
            assert!(i < STARTS_ENTRIES);
            seen[i as usize] = true;
        }
        let used = seen.iter().filter(|&&b| b).count();
        assert!(
            used > 3000,
            "{used} of 4096 connections have their own entry"
        );
    }
}
