//! ICMP on raw sockets: opening them, building echo requests, recognising
//! replies.

use std::io;
use std::net::IpAddr;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use tracing::{debug, warn};

use super::types::{Family, ProbeError};
use crate::sys;

pub(super) const ICMP_ECHO_REPLY: u8 = 0;
pub(super) const ICMP_ECHO_REQUEST: u8 = 8;
pub(super) const ICMPV6_ECHO_REQUEST: u8 = 128;
pub(super) const ICMPV6_ECHO_REPLY: u8 = 129;

/// `ICMP_FILTER` from linux/icmp.h (level `SOL_RAW`): a bitmask of ICMP types
/// the kernel drops before queueing them on the socket.
const ICMP_FILTER: libc::c_int = 1;
/// `ICMP6_FILTER` from linux/icmpv6.h (level `IPPROTO_ICMPV6`): 256 bits, a
/// set bit blocks that ICMPv6 type.
const ICMPV6_FILTER: libc::c_int = 1;

/// Echo payload: 8 bytes of nonce, 8 bytes of probe serial.
const PAYLOAD_LEN: usize = 16;
/// ICMP header (8 bytes) plus payload.
pub(super) const ECHO_LEN: usize = 8 + PAYLOAD_LEN;
/// Receive buffer asked for: a round of 1000 replies arriving together must
/// not overflow the default buffer (each queued skb costs ~1 KiB).
const RECV_BUFFER: libc::c_int = 2 << 20;

pub(super) fn open_family(family: Family) -> Result<Option<OwnedFd>, ProbeError> {
    match open_socket(family) {
        Ok(fd) => Ok(Some(fd)),
        Err(e) => match e.raw_os_error() {
            Some(libc::EPERM | libc::EACCES) => Err(ProbeError::PermissionDenied {
                family: family.name(),
                source: e,
            }),
            Some(libc::EAFNOSUPPORT | libc::EPROTONOSUPPORT) => {
                warn!(
                    family = family.name(),
                    "no ICMP support; targets of this family will count as lost"
                );
                Ok(None)
            }
            _ => Err(ProbeError::Socket {
                family: family.name(),
                source: e,
            }),
        },
    }
}

pub(super) fn open_socket(family: Family) -> io::Result<OwnedFd> {
    let (domain, protocol) = match family {
        Family::V4 => (libc::AF_INET, libc::IPPROTO_ICMP),
        Family::V6 => (libc::AF_INET6, libc::IPPROTO_ICMPV6),
    };
    let fd = sys::socket(
        domain,
        libc::SOCK_RAW | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
        protocol,
    )?;

    // Let only echo replies reach the socket: a raw socket otherwise gets a
    // copy of every ICMP packet, including our own requests on loopback.
    // Best effort: the parser checks the type anyway.
    let filtered = match family {
        Family::V4 => {
            let blocked: u32 = !(1u32 << ICMP_ECHO_REPLY);
            sys::set_socket_option(fd.as_fd(), libc::SOL_RAW, ICMP_FILTER, &blocked)
        }
        Family::V6 => {
            let mut blocked = [u32::MAX; 8];
            let t = usize::from(ICMPV6_ECHO_REPLY);
            blocked[t >> 5] &= !(1u32 << (t & 31));
            sys::set_socket_option(fd.as_fd(), libc::IPPROTO_ICMPV6, ICMPV6_FILTER, &blocked)
        }
    };
    if let Err(e) = filtered {
        debug!(family = family.name(), error = %e, "ICMP type filter not installed");
    }
    // SO_RCVBUFFORCE goes past net.core.rmem_max (we are privileged anyway).
    if sys::set_socket_option(
        fd.as_fd(),
        libc::SOL_SOCKET,
        libc::SO_RCVBUFFORCE,
        &RECV_BUFFER,
    )
    .is_err()
    {
        let _ = sys::set_socket_option(fd.as_fd(), libc::SOL_SOCKET, libc::SO_RCVBUF, &RECV_BUFFER);
    }
    let on: libc::c_int = 1;
    if let Err(e) = sys::set_socket_option(fd.as_fd(), libc::SOL_SOCKET, libc::SO_TIMESTAMPNS, &on)
    {
        debug!(family = family.name(), error = %e, "no kernel receive timestamps; RTTs include scheduling delay");
    }
    Ok(fd)
}

/// Builds an echo request. The IPv4 checksum is ours to compute; on raw
/// ICMPv6 sockets the kernel fills it in (it covers the pseudo-header).
pub(super) fn echo_request(
    family: Family,
    ident: u16,
    seq: u16,
    nonce: u64,
    serial: u64,
) -> [u8; ECHO_LEN] {
    let mut p = [0u8; ECHO_LEN];
    p[0] = match family {
        Family::V4 => ICMP_ECHO_REQUEST,
        Family::V6 => ICMPV6_ECHO_REQUEST,
    };
    p[4..6].copy_from_slice(&ident.to_be_bytes());
    p[6..8].copy_from_slice(&seq.to_be_bytes());
    p[8..16].copy_from_slice(&nonce.to_be_bytes());
    p[16..24].copy_from_slice(&serial.to_be_bytes());
    if family == Family::V4 {
        let sum = checksum(&p);
        p[2..4].copy_from_slice(&sum.to_be_bytes());
    }
    p
}

/// The Internet checksum (RFC 1071). Over data that includes a correct
/// checksum field it yields 0.
pub(super) fn checksum(data: &[u8]) -> u16 {
    let mut sum: u32 = 0;
    for chunk in data.chunks(2) {
        let word = u16::from_be_bytes([chunk[0], chunk.get(1).copied().unwrap_or(0)]);
        sum += u32::from(word);
    }
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// The fields of an echo reply that identify the probe it answers.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct EchoReply {
    pub(super) ident: u16,
    pub(super) seq: u16,
    pub(super) nonce: u64,
    pub(super) serial: u64,
}

/// Parses what a raw socket returned: for IPv4 the IP header comes first,
/// for IPv6 the data starts at the ICMPv6 header (whose checksum the kernel
/// has already verified).
pub(super) fn parse_reply(family: Family, packet: &[u8]) -> Option<EchoReply> {
    let icmp = match family {
        Family::V4 => {
            let first = *packet.first()?;
            let header_len = usize::from(first & 0x0f) * 4;
            if first >> 4 != 4
                || header_len < 20
                || packet.len() < header_len
                || packet[9] != libc::IPPROTO_ICMP as u8
            {
                return None;
            }
            let icmp = &packet[header_len..];
            if icmp.len() < ECHO_LEN || icmp[0] != ICMP_ECHO_REPLY || checksum(icmp) != 0 {
                return None;
            }
            icmp
        }
        Family::V6 => {
            if packet.len() < ECHO_LEN || packet[0] != ICMPV6_ECHO_REPLY {
                return None;
            }
            packet
        }
    };
    if icmp[1] != 0 {
        return None;
    }
    let u64_at = |i: usize| {
        let mut b = [0u8; 8];
        b.copy_from_slice(&icmp[i..i + 8]);
        u64::from_be_bytes(b)
    };
    Some(EchoReply {
        ident: u16::from_be_bytes([icmp[4], icmp[5]]),
        seq: u16::from_be_bytes([icmp[6], icmp[7]]),
        nonce: u64_at(8),
        serial: u64_at(16),
    })
}

pub(super) fn send_echo(fd: BorrowedFd<'_>, dest: IpAddr, packet: &[u8]) -> io::Result<()> {
    sys::send_to(fd, dest, packet, libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL).map(drop)
}

/// Randomness for the identifier and nonce; falls back to time, pid and a
/// counter mixed together if getrandom(2) is unavailable.
pub(super) fn random_u64() -> u64 {
    let mut bytes = [0u8; 8];
    if sys::fill_random(&mut bytes).is_ok_and(|n| n == 8) {
        return u64::from_ne_bytes(bytes);
    }
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos() as u64;
    let mut x = nanos
        ^ (u64::from(std::process::id()) << 32)
        ^ COUNTER.fetch_add(0x9e37_79b9_7f4a_7c15, Ordering::Relaxed);
    // splitmix64 finaliser
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}
