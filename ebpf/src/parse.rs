//! Reading a frame's headers: Ethernet (with up to two VLAN tags), IPv4
//! or IPv6, and where the transport header starts. Straight from the
//! linear data when it holds them, through `bpf_skb_load_bytes` when not.

use aya_ebpf::programs::TcContext;
use jatah_common::AddrKey;

pub(crate) const ETH_HLEN: usize = 14;
pub(crate) const ETH_P_IP: u16 = 0x0800;
pub(crate) const ETH_P_IPV6: u16 = 0x86dd;
pub(crate) const ETH_P_8021Q: u16 = 0x8100;
pub(crate) const ETH_P_8021AD: u16 = 0x88a8;
pub(crate) const IPPROTO_TCP: u8 = 6;
pub(crate) const IPPROTO_UDP: u8 = 17;
/// [`Headers::l4_proto`] of an IPv4 fragment after the first: it carries
/// no transport header, so nothing may read ports or TCP fields from it
/// (its first bytes are the middle of someone's payload). 255 is reserved
/// by IANA and never a real protocol.
pub(crate) const LATER_FRAGMENT: u8 = 255;

pub(crate) enum ParseError {
    /// Not IPv4/IPv6 (ARP, LLDP, ...).
    NonIp,
    /// Truncated or inconsistent headers.
    Malformed,
}

/// What the classifiers need from a packet's headers.
pub(crate) struct Headers {
    /// The address that decides the OPD (destination or source), IPv4 mapped.
    pub(crate) addr: AddrKey,
    /// The address at the other end (the Internet host).
    pub(crate) other: AddrKey,
    pub(crate) is_v4: bool,
    pub(crate) l4_proto: u8,
    /// Offset of the IP header from the start of the frame.
    pub(crate) l3_off: usize,
    /// Offset of the transport header from the start of the frame.
    pub(crate) l4_off: usize,
    /// The VLAN id of the innermost tag in the frame (0: none).
    pub(crate) vlan: u16,
    /// The DSCP of the IP header.
    pub(crate) dscp: u8,
    /// The IP packet's length: IPv4's total length, or 40 + IPv6's payload
    /// length (0 or 40: unknown, a jumbogram or BIG TCP).
    pub(crate) ip_len: u32,
}

/// Reading header fields: straight from the linear packet data (cheap,
/// bounds-checked for the verifier), or through `bpf_skb_load_bytes` when
/// the headers are not all in the linear part.
pub(crate) trait Frame {
    fn read<T: Copy>(&self, off: usize) -> Option<T>;
}

pub(crate) struct Linear<'a>(pub(crate) &'a TcContext);
pub(crate) struct Loaded<'a>(pub(crate) &'a TcContext);

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

/// `L2`: the frame starts with an Ethernet header (else with the IP
/// header: PPP, WireGuard, tun and other interfaces without a link layer).
#[inline(always)]
fn parse_with<F: Frame, const L2: bool>(f: &F, by_source: bool) -> Result<Headers, ParseError> {
    let (mut ethertype, mut off) = if L2 {
        (be16(f, 12)?, ETH_HLEN)
    } else {
        // No link layer: the IP version says which header this is. Every
        // IP packet holds 20 bytes; reading them at once also proves them
        // to the verifier (a one-byte read at offset 0 compiles to a bounds
        // check it cannot use).
        let first: [u8; 20] = f.read(0).ok_or(ParseError::Malformed)?;
        match first[0] >> 4 {
            4 => (ETH_P_IP, 0),
            6 => (ETH_P_IPV6, 0),
            _ => return Err(ParseError::NonIp),
        }
    };
    // Up to two in-band tags (802.1ad outer + 802.1Q inner). A tag the NIC
    // already stripped into skb metadata is simply not in the payload.
    let mut vlan = 0;
    if L2 && (ethertype == ETH_P_8021AD || ethertype == ETH_P_8021Q) {
        vlan = be16(f, off)? & 0x0fff;
        ethertype = be16(f, off + 2)?;
        off += 4;
        if ethertype == ETH_P_8021AD || ethertype == ETH_P_8021Q {
            vlan = be16(f, off)? & 0x0fff;
            ethertype = be16(f, off + 2)?;
            off += 4;
        }
    }
    let mut addr = AddrKey::default();
    match ethertype {
        ETH_P_IP => {
            // Version to protocol in one read: version and header length,
            // TOS, total length, fragment offset, protocol.
            let w: [u8; 10] = f.read(off).ok_or(ParseError::Malformed)?;
            let ver_ihl = w[0];
            let ihl = ((ver_ihl & 0x0f) as usize) * 4;
            if ver_ihl >> 4 != 4 || ihl < 20 {
                return Err(ParseError::Malformed);
            }
            // Fixed-offset fields first, then the end of the options: in
            // this order the compiler cannot fold one bounds check into
            // another in a way the verifier could not follow.
            // A later fragment's payload starts where its first one left
            // off: no transport header here.
            let l4_proto = if u16::from_be_bytes([w[6], w[7]]) & 0x1fff != 0 {
                LATER_FRAGMENT
            } else {
                w[9]
            };
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
                vlan,
                dscp: w[1] >> 2,
                ip_len: u32::from(u16::from_be_bytes([w[2], w[3]])),
            })
        }
        ETH_P_IPV6 => {
            // Version, traffic class, payload length, next header.
            let w: [u8; 8] = f.read(off).ok_or(ParseError::Malformed)?;
            if w[0] >> 4 != 6 {
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
                l4_proto: w[6],
                l3_off: off,
                l4_off: off + 40,
                vlan,
                dscp: ((w[0] & 0x0f) << 2) | (w[1] >> 6),
                ip_len: 40 + u32::from(u16::from_be_bytes([w[4], w[5]])),
            })
        }
        _ => Err(ParseError::NonIp),
    }
}

/// The headers of an Ethernet frame.
#[inline(always)]
pub(crate) fn parse(ctx: &TcContext, by_source: bool) -> Result<Headers, ParseError> {
    parse_at::<true>(ctx, by_source)
}

/// The headers of a packet on an interface without a link layer (it
/// starts with its IP header).
#[inline(always)]
pub(crate) fn parse_l3(ctx: &TcContext, by_source: bool) -> Result<Headers, ParseError> {
    parse_at::<false>(ctx, by_source)
}

#[inline(always)]
fn parse_at<const L2: bool>(ctx: &TcContext, by_source: bool) -> Result<Headers, ParseError> {
    match parse_with::<_, L2>(&Linear(ctx), by_source) {
        Ok(h) => Ok(h),
        // Headers beyond the linear part: read them the slow way.
        Err(ParseError::Malformed) if (ctx.len() as usize) > ctx.data_end() - ctx.data() => {
            parse_with::<_, L2>(&Loaded(ctx), by_source)
        }
        Err(e) => Err(e),
    }
}

/// Bytes from the start of the frame to the end of the transport header:
/// repeated once per GSO segment on the wire.
#[inline(always)]
pub(crate) fn header_len(ctx: &TcContext, h: &Headers) -> u64 {
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
