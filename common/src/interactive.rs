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
}
