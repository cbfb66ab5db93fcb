//! Sockets from a chosen source address (a host using an address of its
//! own choosing), with std and libc only.

use std::io;
use std::net::{Ipv4Addr, SocketAddrV4, TcpStream, UdpSocket};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

fn sockaddr(addr: SocketAddrV4) -> libc::sockaddr_in {
    libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: addr.port().to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from(*addr.ip()).to_be(),
        },
        sin_zero: [0; 8],
    }
}

const LEN: libc::socklen_t = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;

/// A socket of `kind` (SOCK_STREAM, SOCK_DGRAM) bound to `from`, port
/// chosen by the kernel.
fn bound(kind: libc::c_int, from: Ipv4Addr) -> io::Result<OwnedFd> {
    // SAFETY: a fresh socket we own from here on; bind reads only the
    // address we pass.
    unsafe {
        let fd = libc::socket(libc::AF_INET, kind | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        let owned = OwnedFd::from_raw_fd(fd);
        let src = sockaddr(SocketAddrV4::new(from, 0));
        if libc::bind(fd, (&src as *const libc::sockaddr_in).cast(), LEN) != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(owned)
    }
}

/// A UDP socket sending from `from`.
pub fn udp_from(from: Ipv4Addr) -> io::Result<UdpSocket> {
    Ok(UdpSocket::from(bound(libc::SOCK_DGRAM, from)?))
}

/// A TCP connection from `from` to `to`.
pub fn connect_from(from: Ipv4Addr, to: SocketAddrV4) -> io::Result<TcpStream> {
    let fd = bound(libc::SOCK_STREAM, from)?;
    let dst = sockaddr(to);
    // SAFETY: connect reads only the address we pass.
    let rc = unsafe {
        libc::connect(
            fd.as_raw_fd(),
            (&dst as *const libc::sockaddr_in).cast(),
            LEN,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(TcpStream::from(fd))
}
