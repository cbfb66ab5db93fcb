//! Every libc call and raw system call of the crate, each behind a small safe
//! function.
//!
//! Keeping them in one place means the rest of jatah is safe code, and each
//! `unsafe` block here states once what makes the call sound: which buffers
//! the kernel may write, for how long pointers must live, who owns a file
//! descriptor. Errors are `errno` turned into [`io::Error`]; nothing here
//! logs or retries (callers decide, e.g. on `EINTR`).

use std::ffi::{CStr, CString};
use std::io;
use std::mem;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aya::maps::{Array, IterableMap, MapData, PerCpuArray};

/// `Ok` for a call that returns 0 on success and -1 with `errno` set.
fn zero_or_errno(rc: libc::c_int) -> io::Result<()> {
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// A byte count for a call that returns one, or -1 with `errno` set.
fn count_or_errno(rc: isize) -> io::Result<usize> {
    usize::try_from(rc).map_err(|_| io::Error::last_os_error())
}

/// Ignores SIGHUP until a handler takes it over: its default action ends
/// the process, and a reload can come at any moment after start.
pub fn ignore_hangup() {
    // SAFETY: installs the predefined SIG_IGN disposition; no handler
    // code runs.
    unsafe { libc::signal(libc::SIGHUP, libc::SIG_IGN) };
}

/// Raises the soft limit on open files to the hard one (systemd and most
/// shells start services at 1024): (soft limit before, soft limit now).
pub(crate) fn raise_open_files_limit() -> io::Result<(u64, u64)> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes only the struct we own.
    zero_or_errno(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) })?;
    let before = lim.rlim_cur;
    if lim.rlim_cur < lim.rlim_max {
        lim.rlim_cur = lim.rlim_max;
        // SAFETY: setrlimit reads only the struct we own.
        zero_or_errno(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) })?;
    }
    Ok((before, lim.rlim_cur))
}

/// The effective user id of the process (0 for root).
pub(crate) fn effective_uid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

/// The index of network interface `name`, or None if there is no such
/// interface (or the name cannot be one: it holds a NUL byte).
pub(crate) fn interface_index(name: &str) -> Option<u32> {
    let c = CString::new(name).ok()?;
    // SAFETY: `c` is a NUL-terminated string that outlives the call.
    let idx = unsafe { libc::if_nametoindex(c.as_ptr()) };
    (idx != 0).then_some(idx)
}

/// Every IPv4 and IPv6 address assigned to an interface of this network
/// namespace, with the interface's name. Empty if the list cannot be read.
pub(crate) fn interface_addresses() -> Vec<(String, IpAddr)> {
    let mut out = Vec::new();
    // SAFETY: getifaddrs/freeifaddrs pair; the list is read before it is
    // freed, and every pointer followed is checked for null first.
    unsafe {
        let mut head: *mut libc::ifaddrs = std::ptr::null_mut();
        if libc::getifaddrs(&mut head) != 0 {
            return out;
        }
        let mut p = head;
        while !p.is_null() {
            let ifa = &*p;
            if !ifa.ifa_addr.is_null() {
                let name = CStr::from_ptr(ifa.ifa_name).to_string_lossy().into_owned();
                match i32::from((*ifa.ifa_addr).sa_family) {
                    libc::AF_INET => {
                        let sa = &*(ifa.ifa_addr as *const libc::sockaddr_in);
                        out.push((
                            name,
                            IpAddr::from(u32::from_be(sa.sin_addr.s_addr).to_be_bytes()),
                        ));
                    }
                    libc::AF_INET6 => {
                        let sa = &*(ifa.ifa_addr as *const libc::sockaddr_in6);
                        out.push((name, IpAddr::from(sa.sin6_addr.s6_addr)));
                    }
                    _ => {}
                }
            }
            p = ifa.ifa_next;
        }
        libc::freeifaddrs(head);
    }
    out
}

/// The magic number of the filesystem `path` lives on (`statfs.f_type`),
/// e.g. to tell a bpffs mount from a plain directory.
pub(crate) fn filesystem_magic(path: &Path) -> io::Result<i64> {
    let c = CString::new(path.as_os_str().as_encoded_bytes())
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    // SAFETY: statfs is plain data; all-zero is a valid value.
    let mut st: libc::statfs = unsafe { mem::zeroed() };
    // SAFETY: a NUL-terminated path and a live statfs to fill in.
    zero_or_errno(unsafe { libc::statfs(c.as_ptr(), &mut st) })?;
    Ok(st.f_type as i64)
}

/// Takes an exclusive `flock` on `file` without waiting: fails with
/// `EWOULDBLOCK` while another open file description holds it. The lock
/// lives as long as the file stays open.
pub(crate) fn lock_exclusive_nonblocking(file: impl AsFd) -> io::Result<()> {
    // SAFETY: flock on a descriptor the borrow keeps open.
    zero_or_errno(unsafe { libc::flock(file.as_fd().as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) })
}

/// Moves the calling thread into the network namespace `ns` (an open
/// `/run/netns/<name>` or `/proc/<pid>/ns/net`). Other threads stay where
/// they are; sockets opened afterwards on this thread live in `ns`.
pub(crate) fn enter_network_namespace(ns: impl AsFd) -> io::Result<()> {
    // SAFETY: setns on a descriptor the borrow keeps open; it affects only
    // this thread's namespace, no memory.
    zero_or_errno(unsafe { libc::setns(ns.as_fd().as_raw_fd(), libc::CLONE_NEWNET) })
}

/// Sends `signal` to process `pid`.
pub(crate) fn send_signal(pid: libc::pid_t, signal: libc::c_int) -> io::Result<()> {
    // SAFETY: kill takes no pointers; a stale pid only yields ESRCH.
    zero_or_errno(unsafe { libc::kill(pid, signal) })
}

/// Hands memory that malloc holds free back to the system (glibc's
/// `malloc_trim(0)`).
pub(crate) fn release_free_heap() {
    // SAFETY: glibc's malloc_trim has no preconditions.
    unsafe { libc::malloc_trim(0) };
}

/// Fills `bytes` from the kernel's random pool without blocking (fails
/// with `EAGAIN` before the pool is initialised). Returns how many bytes
/// were written.
pub(crate) fn fill_random(bytes: &mut [u8]) -> io::Result<usize> {
    // SAFETY: the kernel writes at most `bytes.len()` bytes into `bytes`.
    count_or_errno(unsafe {
        libc::getrandom(bytes.as_mut_ptr().cast(), bytes.len(), libc::GRND_NONBLOCK)
    })
}

/// Opens a socket; `kind` takes `SOCK_*` flags such as `SOCK_CLOEXEC`.
pub(crate) fn socket(
    domain: libc::c_int,
    kind: libc::c_int,
    protocol: libc::c_int,
) -> io::Result<OwnedFd> {
    // SAFETY: plain syscall without pointers; the result is checked.
    let fd = unsafe { libc::socket(domain, kind, protocol) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is a fresh descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// `setsockopt(fd, level, name, value)`, the option value being a `T` as
/// the option expects (an int, a `timeval`, a filter bitmap…).
pub(crate) fn set_socket_option<T: Copy>(
    fd: BorrowedFd<'_>,
    level: libc::c_int,
    name: libc::c_int,
    value: &T,
) -> io::Result<()> {
    // SAFETY: `value` points to a live `T` of the length passed; the kernel
    // only reads it.
    zero_or_errno(unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            level,
            name,
            (value as *const T).cast(),
            mem::size_of::<T>() as libc::socklen_t,
        )
    })
}

/// Binds a netlink socket with port id 0: the kernel assigns one.
pub(crate) fn bind_netlink(fd: BorrowedFd<'_>) -> io::Result<()> {
    let addr = netlink_kernel_address();
    // SAFETY: `addr` is a valid sockaddr_nl of the size passed.
    zero_or_errno(unsafe {
        libc::bind(
            fd.as_raw_fd(),
            (&addr as *const libc::sockaddr_nl).cast(),
            mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t,
        )
    })
}

/// Sends one netlink datagram to the kernel (port id 0). Returns the bytes
/// sent; `EINTR` is the caller's to retry.
pub(crate) fn send_to_kernel(fd: BorrowedFd<'_>, bytes: &[u8]) -> io::Result<usize> {
    let addr = netlink_kernel_address();
    // SAFETY: the buffer and address are valid for the lengths given.
    count_or_errno(unsafe {
        libc::sendto(
            fd.as_raw_fd(),
            bytes.as_ptr().cast(),
            bytes.len(),
            0,
            (&addr as *const libc::sockaddr_nl).cast(),
            mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t,
        )
    })
}

/// An `AF_NETLINK` address with port id 0, the kernel's.
fn netlink_kernel_address() -> libc::sockaddr_nl {
    // SAFETY: sockaddr_nl is plain data; all-zero is a valid value.
    let mut addr: libc::sockaddr_nl = unsafe { mem::zeroed() };
    addr.nl_family = libc::AF_NETLINK as libc::sa_family_t;
    addr
}

/// `recv(fd, buf, flags)`: the length of the datagram read. With
/// `MSG_TRUNC` that is its real length, which may exceed `buf` (only
/// `buf.len()` bytes are written).
pub(crate) fn receive(fd: BorrowedFd<'_>, buf: &mut [u8], flags: libc::c_int) -> io::Result<usize> {
    // SAFETY: the kernel writes at most `buf.len()` bytes into `buf`.
    count_or_errno(unsafe { libc::recv(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), flags) })
}

/// An IP address as a socket address (port 0, what raw sockets take).
fn socket_address(addr: IpAddr) -> (libc::sockaddr_storage, libc::socklen_t) {
    // SAFETY: all-zero is a valid sockaddr_storage.
    let mut storage: libc::sockaddr_storage = unsafe { mem::zeroed() };
    let len = match addr {
        IpAddr::V4(a) => {
            // SAFETY: sockaddr_storage is large and aligned enough for
            // sockaddr_in.
            let sin = unsafe { &mut *(&mut storage as *mut _ as *mut libc::sockaddr_in) };
            sin.sin_family = libc::AF_INET as libc::sa_family_t;
            sin.sin_addr.s_addr = u32::from_ne_bytes(a.octets());
            mem::size_of::<libc::sockaddr_in>()
        }
        IpAddr::V6(a) => {
            // SAFETY: as above, for sockaddr_in6.
            let sin6 = unsafe { &mut *(&mut storage as *mut _ as *mut libc::sockaddr_in6) };
            sin6.sin6_family = libc::AF_INET6 as libc::sa_family_t;
            sin6.sin6_addr.s6_addr = a.octets();
            mem::size_of::<libc::sockaddr_in6>()
        }
    };
    (storage, len as libc::socklen_t)
}

/// The IP address in a socket address the kernel filled in, if it is one.
fn ip_of(storage: &libc::sockaddr_storage) -> Option<IpAddr> {
    match libc::c_int::from(storage.ss_family) {
        libc::AF_INET => {
            // SAFETY: the kernel wrote a sockaddr_in for AF_INET, and
            // sockaddr_storage is large and aligned enough for one.
            let sin = unsafe { &*(storage as *const _ as *const libc::sockaddr_in) };
            Some(IpAddr::V4(Ipv4Addr::from(
                sin.sin_addr.s_addr.to_ne_bytes(),
            )))
        }
        libc::AF_INET6 => {
            // SAFETY: the kernel wrote a sockaddr_in6 for AF_INET6.
            let sin6 = unsafe { &*(storage as *const _ as *const libc::sockaddr_in6) };
            Some(IpAddr::V6(Ipv6Addr::from(sin6.sin6_addr.s6_addr)))
        }
        _ => None,
    }
}

/// Binds a socket to a local IP address (port 0).
#[cfg(test)]
pub(crate) fn bind_address(fd: BorrowedFd<'_>, addr: IpAddr) -> io::Result<()> {
    let (storage, len) = socket_address(addr);
    // SAFETY: `storage` holds a valid address of `len` bytes.
    zero_or_errno(unsafe {
        libc::bind(
            fd.as_raw_fd(),
            (&storage as *const libc::sockaddr_storage).cast(),
            len,
        )
    })
}

/// Sends one datagram to `dest` (port 0, for raw sockets). Returns the
/// bytes sent.
pub(crate) fn send_to(
    fd: BorrowedFd<'_>,
    dest: IpAddr,
    bytes: &[u8],
    flags: libc::c_int,
) -> io::Result<usize> {
    let (storage, len) = socket_address(dest);
    // SAFETY: buffer and address are valid for the lengths passed.
    count_or_errno(unsafe {
        libc::sendto(
            fd.as_raw_fd(),
            bytes.as_ptr().cast(),
            bytes.len(),
            flags,
            (&storage as *const libc::sockaddr_storage).cast(),
            len,
        )
    })
}

/// One datagram read by [`receive_timestamped`].
#[derive(Debug)]
pub(crate) struct Datagram {
    /// Bytes written to the buffer.
    pub len: usize,
    /// The sender's IP address.
    pub from: Option<IpAddr>,
    /// Arrival time stamped by the kernel (with `SO_TIMESTAMPNS` on).
    pub kernel_time: Option<SystemTime>,
}

/// Reads one datagram without blocking (`EWOULDBLOCK` when there is none),
/// with its sender and, if the socket has `SO_TIMESTAMPNS` on, the kernel's
/// receive time.
pub(crate) fn receive_timestamped(fd: BorrowedFd<'_>, buf: &mut [u8]) -> io::Result<Datagram> {
    // SAFETY: all-zero is a valid sockaddr_storage.
    let mut addr: libc::sockaddr_storage = unsafe { mem::zeroed() };
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    // u64 elements keep the control buffer aligned for cmsghdr.
    let mut control = [0u64; 16];
    // SAFETY: all-zero is a valid msghdr.
    let mut msg: libc::msghdr = unsafe { mem::zeroed() };
    msg.msg_name = (&mut addr as *mut libc::sockaddr_storage).cast();
    msg.msg_namelen = mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = mem::size_of_val(&control) as _;
    // SAFETY: every pointer in `msg` refers to a live local of the given size.
    let n = unsafe { libc::recvmsg(fd.as_raw_fd(), &mut msg, libc::MSG_DONTWAIT) };
    let len = count_or_errno(n)?;

    let mut kernel_time = None;
    // SAFETY: the CMSG macros walk the control buffer the kernel filled in,
    // bounded by msg_controllen.
    unsafe {
        let mut cmsg = libc::CMSG_FIRSTHDR(&msg);
        while !cmsg.is_null() {
            if (*cmsg).cmsg_level == libc::SOL_SOCKET && (*cmsg).cmsg_type == libc::SCM_TIMESTAMPNS
            {
                let ts: libc::timespec =
                    std::ptr::read_unaligned(libc::CMSG_DATA(cmsg).cast::<libc::timespec>());
                if let (Ok(secs), Ok(nanos)) = (u64::try_from(ts.tv_sec), u32::try_from(ts.tv_nsec))
                {
                    kernel_time = UNIX_EPOCH.checked_add(Duration::new(secs, nanos));
                }
            }
            cmsg = libc::CMSG_NXTHDR(&msg, cmsg);
        }
    }

    Ok(Datagram {
        len,
        from: ip_of(&addr),
        kernel_time,
    })
}

/// Removes one capability (`CAP_*` number) from the calling thread's
/// effective set; the other threads keep theirs.
#[cfg(test)]
pub(crate) fn drop_effective_capability(cap: u32) -> io::Result<()> {
    #[repr(C)]
    struct CapHeader {
        version: u32,
        pid: libc::c_int,
    }
    #[repr(C)]
    #[derive(Clone, Copy, Default)]
    struct CapData {
        effective: u32,
        permitted: u32,
        inheritable: u32,
    }
    const LINUX_CAPABILITY_VERSION_3: u32 = 0x2008_0522;
    let mut header = CapHeader {
        version: LINUX_CAPABILITY_VERSION_3,
        pid: 0,
    };
    let mut data = [CapData::default(); 2];
    // SAFETY: capget with a v3 header and the two data slots v3 fills in.
    if unsafe { libc::syscall(libc::SYS_capget, &mut header, data.as_mut_ptr()) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let word = (cap / 32) as usize;
    data[word].effective &= !(1 << (cap % 32));
    // SAFETY: capset reads the same header and two data slots.
    if unsafe { libc::syscall(libc::SYS_capset, &header, data.as_ptr()) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// The values of keys `0..n` of an array map, `size_of::<V>()` bytes each,
/// in one `BPF_MAP_LOOKUP_BATCH`.
pub(crate) fn array_lookup_batch<V: aya::Pod>(
    map: &Array<MapData, V>,
    n: u32,
) -> io::Result<Vec<u8>> {
    // aya checked, when it opened the map, that its values are `V`s.
    lookup_batch(map.map(), n, mem::size_of::<V>())
}

/// The values of keys `0..n` of a per-CPU array map in one
/// `BPF_MAP_LOOKUP_BATCH`: for each key, one value per possible CPU, each
/// in an 8-byte aligned stride of `size_of::<V>()` rounded up to 8.
pub(crate) fn per_cpu_array_lookup_batch<V: aya::Pod>(
    map: &PerCpuArray<MapData, V>,
    n: u32,
) -> io::Result<Vec<u8>> {
    let cpus = aya::util::nr_cpus()
        .map_err(|(what, e)| io::Error::new(e.kind(), format!("{what}: {e}")))?;
    // aya checked, when it opened the map, that its values are `V`s; the
    // kernel copies per-CPU values in 8-byte strides, one per possible CPU.
    lookup_batch(map.map(), n, mem::size_of::<V>().next_multiple_of(8) * cpus)
}

/// `bpf(BPF_MAP_LOOKUP_BATCH)` of the first `n` entries of an array map
/// (keys `0..n`): their values, `value_size` bytes each. aya has no batch
/// operations; arrays support them since Linux 5.6.
///
/// Private: `value_size` must be what the kernel copies per entry, which
/// the typed wrappers above guarantee.
fn lookup_batch(map: &MapData, n: u32, value_size: usize) -> io::Result<Vec<u8>> {
    const BPF_MAP_LOOKUP_BATCH: libc::c_long = 24;
    /// The `batch` member of `union bpf_attr`.
    #[repr(C)]
    #[derive(Default)]
    struct BatchAttr {
        in_batch: u64,
        out_batch: u64,
        keys: u64,
        values: u64,
        count: u32,
        map_fd: u32,
        elem_flags: u64,
        flags: u64,
    }
    let mut keys = vec![0u32; n as usize];
    let mut values = vec![0u8; n as usize * value_size];
    let mut out_batch = 0u32;
    let mut attr = BatchAttr {
        out_batch: &mut out_batch as *mut u32 as u64,
        keys: keys.as_mut_ptr() as u64,
        values: values.as_mut_ptr() as u64,
        count: n,
        map_fd: map.fd().as_fd().as_raw_fd() as u32,
        ..Default::default()
    };
    // SAFETY: the attribute points at buffers of `n` keys and `n` values of
    // the size the kernel copies, which outlive the call; the kernel writes
    // at most `count` of each.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_MAP_LOOKUP_BATCH,
            &mut attr as *mut BatchAttr,
            mem::size_of::<BatchAttr>() as u32,
        )
    };
    // ENOENT: the map ended before `n` entries; `count` says how many came.
    if ret < 0 {
        let e = io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::ENOENT) {
            return Err(e);
        }
    }
    if attr.count != n {
        return Err(io::Error::other(format!(
            "asked for {n} entries, got {}",
            attr.count
        )));
    }
    Ok(values)
}
