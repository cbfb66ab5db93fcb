//! A minimal rtnetlink transport: one `NETLINK_ROUTE` socket, requests built
//! byte by byte, every change acknowledged and every dump read to
//! `NLMSG_DONE`.
//!
//! Only what the shaper needs is here; constants come from the kernel's
//! uapi headers (`linux/netlink.h`) and are spelled out so that the code does
//! not depend on which of them a given `libc` release exports.

use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::time::Duration;

const NLMSG_HDRLEN: usize = 16;

/// `nlmsghdr.nlmsg_flags` for requests.
pub(super) const NLM_F_REQUEST: u16 = 0x01;
pub(super) const NLM_F_ACK: u16 = 0x04;
const NLM_F_ECHO: u16 = 0x08;
/// Modifiers of NEW requests (they share bits with the GET modifiers).
pub(super) const NLM_F_REPLACE: u16 = 0x100;
pub(super) const NLM_F_EXCL: u16 = 0x200;
pub(super) const NLM_F_CREATE: u16 = 0x400;
/// Modifiers of GET requests: `NLM_F_ROOT | NLM_F_MATCH`.
const NLM_F_DUMP: u16 = 0x300;
/// Set on messages of a dump whose consistency the kernel could not keep
/// (the table changed while it was being dumped).
const NLM_F_DUMP_INTR: u16 = 0x10;
/// Flags of an `NLMSG_ERROR` reply.
const NLM_F_CAPPED: u16 = 0x100;
const NLM_F_ACK_TLVS: u16 = 0x200;

const NLMSG_NOOP: u16 = 1;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const NLMSG_OVERRUN: u16 = 4;

/// `enum nlmsgerr_attrs`: the extended-ack message.
const NLMSGERR_ATTR_MSG: u16 = 1;

/// Attribute types carry two flag bits (nested, network byte order).
const NLA_TYPE_MASK: u16 = 0x3fff;

const NETLINK_CAP_ACK: libc::c_int = 10;
const NETLINK_EXT_ACK: libc::c_int = 11;

/// A dump skb is at most 32 KiB (`netlink_dump` caps its allocation), so
/// twice that always holds one datagram; truncation is still detected.
const RX_BUFFER: usize = 64 * 1024;

/// How long to wait for the kernel before giving up on a reply. Replies
/// come within microseconds; this only guards against a hang on a bug.
const REPLY_TIMEOUT: Duration = Duration::from_secs(10);

const fn align4(len: usize) -> usize {
    (len + 3) & !3
}

/// What went wrong talking to the kernel, before the caller adds which
/// operation on which interface it was.
#[derive(Debug)]
pub(super) enum NlError {
    /// send/recv failed or timed out.
    Io(io::Error),
    /// The kernel answered with an error (positive errno) and maybe an
    /// extended-ack message.
    Kernel { errno: i32, message: Option<String> },
    /// The reply did not parse.
    Malformed(String),
    /// The kernel flagged the dump as inconsistent; it should be repeated.
    DumpInterrupted,
}

/// A request under construction: header, family header, attributes.
pub(super) struct Request {
    buf: Vec<u8>,
    dump: bool,
}

impl Request {
    /// A request that changes something; the kernel acknowledges it.
    pub(super) fn new(msg_type: u16, flags: u16) -> Request {
        Request::with_flags(msg_type, NLM_F_REQUEST | NLM_F_ACK | flags, false)
    }

    /// A GET of one object: the object, then the acknowledgement.
    /// `NLM_F_ECHO` is needed: without it tc_get_qdisc sends the object
    /// only to the RTNLGRP_TC multicast group and the requester gets a bare
    /// acknowledgement (seen on 6.18).
    pub(super) fn get(msg_type: u16) -> Request {
        Request::with_flags(msg_type, NLM_F_REQUEST | NLM_F_ACK | NLM_F_ECHO, false)
    }

    /// A dump: any number of multipart messages up to `NLMSG_DONE`.
    pub(super) fn dump(msg_type: u16) -> Request {
        Request::with_flags(msg_type, NLM_F_REQUEST | NLM_F_DUMP, true)
    }

    fn with_flags(msg_type: u16, flags: u16, dump: bool) -> Request {
        let mut buf = vec![0u8; NLMSG_HDRLEN];
        buf[4..6].copy_from_slice(&msg_type.to_ne_bytes());
        buf[6..8].copy_from_slice(&flags.to_ne_bytes());
        Request { buf, dump }
    }

    /// Appends a fixed header (e.g. `struct tcmsg`), padded to 4 bytes.
    pub(super) fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
        self.pad();
    }

    /// Appends one attribute.
    pub(super) fn attr(&mut self, attr_type: u16, payload: &[u8]) {
        let len = u16::try_from(4 + payload.len()).expect("netlink attribute too long");
        self.buf.extend_from_slice(&len.to_ne_bytes());
        self.buf.extend_from_slice(&attr_type.to_ne_bytes());
        self.buf.extend_from_slice(payload);
        self.pad();
    }

    pub(super) fn attr_u32(&mut self, attr_type: u16, value: u32) {
        self.attr(attr_type, &value.to_ne_bytes());
    }

    pub(super) fn attr_u64(&mut self, attr_type: u16, value: u64) {
        self.attr(attr_type, &value.to_ne_bytes());
    }

    /// A NUL-terminated string attribute (`NLA_STRING` as iproute2 sends it).
    pub(super) fn attr_str(&mut self, attr_type: u16, value: &str) {
        let mut bytes = Vec::with_capacity(value.len() + 1);
        bytes.extend_from_slice(value.as_bytes());
        bytes.push(0);
        self.attr(attr_type, &bytes);
    }

    /// Opens a nested attribute; close it with [`Request::end_nest`].
    /// `NLA_F_NESTED` is not set: `TCA_OPTIONS` is parsed with the
    /// "deprecated" (flag-agnostic) parsers, and pfifo's options are not
    /// even nested, so tc never sets it either.
    pub(super) fn begin_nest(&mut self, attr_type: u16) -> usize {
        let start = self.buf.len();
        self.buf.extend_from_slice(&0u16.to_ne_bytes());
        self.buf.extend_from_slice(&attr_type.to_ne_bytes());
        start
    }

    pub(super) fn end_nest(&mut self, start: usize) {
        let len = u16::try_from(self.buf.len() - start).expect("nested attribute too long");
        self.buf[start..start + 2].copy_from_slice(&len.to_ne_bytes());
    }

    fn pad(&mut self) {
        self.buf.resize(align4(self.buf.len()), 0);
    }

    fn finish(&mut self, seq: u32) -> &[u8] {
        let len = u32::try_from(self.buf.len()).expect("netlink message too long");
        self.buf[0..4].copy_from_slice(&len.to_ne_bytes());
        self.buf[8..12].copy_from_slice(&seq.to_ne_bytes());
        &self.buf
    }

    #[cfg(test)]
    pub(super) fn bytes(&self) -> &[u8] {
        &self.buf
    }
}

/// One message of a reply (not the acknowledgement).
#[derive(Debug)]
pub(super) struct Message {
    pub(super) msg_type: u16,
    pub(super) payload: Vec<u8>,
}

/// Everything the kernel answered to one request.
#[derive(Debug, Default)]
pub(super) struct Reply {
    pub(super) messages: Vec<Message>,
    /// An extended-ack message attached to a successful acknowledgement:
    /// the kernel's way of warning (e.g. sch_htb's "quantum is big").
    pub(super) warning: Option<String>,
}

/// A `NETLINK_ROUTE` socket bound in the namespace of the thread that
/// opened it.
pub(super) struct Socket {
    fd: OwnedFd,
    seq: u32,
    rx: Vec<u8>,
}

impl Socket {
    /// Opens and configures the socket: extended acks on (the kernel's
    /// explanation of an error), capped acks (errors do not echo the whole
    /// request back), a receive timeout.
    pub(super) fn open() -> io::Result<Socket> {
        let fd = crate::sys::socket(
            libc::AF_NETLINK,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC,
            libc::NETLINK_ROUTE,
        )?;
        crate::sys::set_socket_option(
            fd.as_fd(),
            libc::SOL_NETLINK,
            NETLINK_EXT_ACK,
            &1 as &libc::c_int,
        )?;
        crate::sys::set_socket_option(
            fd.as_fd(),
            libc::SOL_NETLINK,
            NETLINK_CAP_ACK,
            &1 as &libc::c_int,
        )?;
        let timeout = libc::timeval {
            tv_sec: REPLY_TIMEOUT.as_secs() as libc::time_t,
            tv_usec: 0,
        };
        crate::sys::set_socket_option(fd.as_fd(), libc::SOL_SOCKET, libc::SO_RCVTIMEO, &timeout)?;
        crate::sys::bind_netlink(fd.as_fd())?;
        Ok(Socket {
            fd,
            seq: 0,
            rx: vec![0u8; RX_BUFFER],
        })
    }

    /// Sends one request and collects the reply: up to the acknowledgement
    /// for a change or a GET, up to `NLMSG_DONE` for a dump.
    pub(super) fn request(&mut self, mut req: Request) -> Result<Reply, NlError> {
        self.seq = self.seq.wrapping_add(1);
        let seq = self.seq;
        let dump = req.dump;
        self.send(req.finish(seq)).map_err(NlError::Io)?;

        let mut reply = Reply::default();
        let mut interrupted = false;
        loop {
            let len = self.recv().map_err(NlError::Io)?;
            let mut off = 0;
            while off + NLMSG_HDRLEN <= len {
                let hdr = &self.rx[off..off + NLMSG_HDRLEN];
                let msg_len = u32::from_ne_bytes(hdr[0..4].try_into().unwrap()) as usize;
                let msg_type = u16::from_ne_bytes(hdr[4..6].try_into().unwrap());
                let flags = u16::from_ne_bytes(hdr[6..8].try_into().unwrap());
                let msg_seq = u32::from_ne_bytes(hdr[8..12].try_into().unwrap());
                if msg_len < NLMSG_HDRLEN || off + msg_len > len {
                    return Err(NlError::Malformed(format!(
                        "netlink message of length {msg_len} at offset {off} in a {len}-byte datagram"
                    )));
                }
                let payload = &self.rx[off + NLMSG_HDRLEN..off + msg_len];
                off += align4(msg_len);
                if msg_seq != seq {
                    // A late answer to an earlier request that timed out.
                    continue;
                }
                if flags & NLM_F_DUMP_INTR != 0 {
                    interrupted = true;
                }
                match msg_type {
                    NLMSG_NOOP => {}
                    NLMSG_ERROR => {
                        let (errno, message) = parse_error(payload, flags)?;
                        if errno != 0 {
                            return Err(NlError::Kernel { errno, message });
                        }
                        reply.warning = message;
                        if !dump {
                            return Ok(reply);
                        }
                    }
                    NLMSG_DONE if dump => {
                        // Since 4.x the DONE message carries the dump's
                        // status, negative on failure, plus extack TLVs.
                        let status = payload
                            .get(0..4)
                            .map_or(0, |b| i32::from_ne_bytes(b.try_into().unwrap()));
                        if status < 0 {
                            let message = if flags & NLM_F_ACK_TLVS != 0 {
                                ext_ack_message(&payload[4..])
                            } else {
                                None
                            };
                            return Err(NlError::Kernel {
                                errno: -status,
                                message,
                            });
                        }
                        if interrupted {
                            return Err(NlError::DumpInterrupted);
                        }
                        return Ok(reply);
                    }
                    NLMSG_OVERRUN => {
                        return Err(NlError::Malformed("netlink overrun".into()));
                    }
                    _ => reply.messages.push(Message {
                        msg_type,
                        payload: payload.to_vec(),
                    }),
                }
            }
        }
    }

    fn send(&self, bytes: &[u8]) -> io::Result<()> {
        loop {
            let err = match crate::sys::send_to_kernel(self.fd.as_fd(), bytes) {
                Ok(_) => return Ok(()),
                Err(err) => err,
            };
            if err.kind() != io::ErrorKind::Interrupted {
                return Err(err);
            }
        }
    }

    fn recv(&mut self) -> io::Result<usize> {
        loop {
            // MSG_TRUNC makes netlink return the datagram's real length, so
            // truncation is visible.
            let err = match crate::sys::receive(self.fd.as_fd(), &mut self.rx, libc::MSG_TRUNC) {
                Ok(len) if len > self.rx.len() => {
                    return Err(io::Error::other(format!(
                        "netlink datagram of {len} bytes exceeds the {}-byte buffer",
                        self.rx.len()
                    )));
                }
                Ok(len) => return Ok(len),
                Err(err) => err,
            };
            match err.kind() {
                io::ErrorKind::Interrupted => continue,
                io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => {
                    return Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        format!("no reply from the kernel within {REPLY_TIMEOUT:?}"),
                    ));
                }
                _ => return Err(err),
            }
        }
    }
}

/// Decodes `struct nlmsgerr` (+ TLVs): a positive errno (0 for an ack) and
/// the extended-ack message if the kernel attached one.
fn parse_error(payload: &[u8], flags: u16) -> Result<(i32, Option<String>), NlError> {
    let Some(code) = payload.get(0..4) else {
        return Err(NlError::Malformed("short NLMSG_ERROR".into()));
    };
    let errno = -i32::from_ne_bytes(code.try_into().unwrap());
    if flags & NLM_F_ACK_TLVS == 0 {
        return Ok((errno, None));
    }
    // The request's header is echoed after the code; with NETLINK_CAP_ACK
    // (NLM_F_CAPPED) only the header, otherwise the whole request.
    let echoed = if flags & NLM_F_CAPPED != 0 {
        NLMSG_HDRLEN
    } else {
        payload.get(4..8).map_or(NLMSG_HDRLEN, |b| {
            u32::from_ne_bytes(b.try_into().unwrap()) as usize
        })
    };
    let tlvs = payload.get(4 + align4(echoed)..).unwrap_or(&[]);
    Ok((errno, ext_ack_message(tlvs)))
}

fn ext_ack_message(tlvs: &[u8]) -> Option<String> {
    attrs(tlvs)
        .find(|&(t, _)| t == NLMSGERR_ATTR_MSG)
        .map(|(_, v)| c_string(v))
        .filter(|s| !s.is_empty())
}

/// Text of a NUL-terminated string attribute.
pub(super) fn c_string(bytes: &[u8]) -> String {
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    String::from_utf8_lossy(&bytes[..end]).into_owned()
}

/// Iterates over the attributes in `data` as (type without flag bits,
/// payload). A malformed length ends the iteration.
pub(super) fn attrs(data: &[u8]) -> Attrs<'_> {
    Attrs { data }
}

pub(super) struct Attrs<'a> {
    data: &'a [u8],
}

impl<'a> Iterator for Attrs<'a> {
    type Item = (u16, &'a [u8]);

    fn next(&mut self) -> Option<Self::Item> {
        if self.data.len() < 4 {
            return None;
        }
        let len = u16::from_ne_bytes([self.data[0], self.data[1]]) as usize;
        let attr_type = u16::from_ne_bytes([self.data[2], self.data[3]]) & NLA_TYPE_MASK;
        if len < 4 || len > self.data.len() {
            self.data = &[];
            return None;
        }
        let payload = &self.data[4..len];
        self.data = self.data.get(align4(len)..).unwrap_or(&[]);
        Some((attr_type, payload))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attributes_are_padded_and_nests_sized() {
        let mut req = Request::new(36, NLM_F_CREATE);
        req.push(&[1, 2, 3]);
        req.attr_str(1, "htb");
        let nest = req.begin_nest(2);
        req.attr_u32(2, 7);
        req.end_nest(nest);
        let bytes = req.bytes();
        assert_eq!(bytes.len() % 4, 0);
        // header 16 + family header padded 4 + "htb\0" attr 8 + nest 4 + u32 attr 8
        assert_eq!(bytes.len(), 16 + 4 + 8 + 12);
        let parsed: Vec<_> = attrs(&bytes[20..]).collect();
        assert_eq!(parsed.len(), 2);
        assert_eq!(parsed[0], (1, &b"htb\0"[..]));
        assert_eq!(parsed[1].0, 2);
        let inner: Vec<_> = attrs(parsed[1].1).collect();
        assert_eq!(inner, vec![(2, &7u32.to_ne_bytes()[..])]);
        let flags = u16::from_ne_bytes([bytes[6], bytes[7]]);
        assert_eq!(flags, NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE);
    }

    #[test]
    fn error_reply_yields_errno_and_extack_message() {
        // struct nlmsgerr with a capped echo, then NLMSGERR_ATTR_MSG.
        let mut payload = Vec::new();
        payload.extend_from_slice(&(-22i32).to_ne_bytes());
        payload.extend_from_slice(&[0u8; NLMSG_HDRLEN]);
        let msg = b"Invalid qdisc name\0";
        payload.extend_from_slice(&((4 + msg.len()) as u16).to_ne_bytes());
        payload.extend_from_slice(&NLMSGERR_ATTR_MSG.to_ne_bytes());
        payload.extend_from_slice(msg);
        let (errno, message) = parse_error(&payload, NLM_F_CAPPED | NLM_F_ACK_TLVS).unwrap();
        assert_eq!(errno, 22);
        assert_eq!(message.as_deref(), Some("Invalid qdisc name"));
        let (errno, message) = parse_error(&payload[..4], 0).unwrap();
        assert_eq!((errno, message), (22, None));
    }
}
