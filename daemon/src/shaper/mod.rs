//! HTB shaping over rtnetlink.
//!
//! jatah shapes each direction with one HTB tree on the egress of an
//! interface:
//!
//! ```text
//! htb 1: root (default class 1:2)
//! └── class 1:1               rate = ceil = gateway capacity
//!     ├── class 1:2           unclassified traffic       ── leaf qdisc 2:
//!     ├── class 1:(s+16)      OPD slot s, one per OPD
//!     │   ├── class 1:(0xc000+s)  its interactive lane   ── leaf qdisc (0xc000+s):
//!     │   └── class 1:(0x8000+s)  its bulk lane          ── leaf qdisc (0x8000+s):
//!     └── class 1:(0x6000+g)  a group of OPDs (inner class, no leaf)
//!         └── class 1:(s+16)  a member OPD, with its lanes as above
//! ```
//!
//! The eBPF classifier writes `skb->priority = 1:minor`, which HTB takes as
//! the class directly; everything else falls into the default class. The
//! shaper itself does not know OPDs or groups: it installs whatever tree of
//! classes it is given ([`ClassSpec::parent`] says where each goes) and
//! gives a leaf qdisc to every class without children.
//!
//! **Lanes.** With lanes on (see `gateway`), an OPD's class has two
//! children, its interactive lane `1:(0xc000+s)` (prio 0) and its bulk
//! lane `1:(0x8000+s)` (prio 1), each with its own leaf; the shaper sees
//! them as any other classes, with the priority and leaf each is given
//! ([`ClassSpec::prio`], [`ClassSpec::leaf`]).
//!
//! **Leaf handles.** The leaf qdisc of class `1:N` has handle `N:` (its
//! major number is the class's minor number), so `tc qdisc show` lists
//! `qdisc pfifo 11: parent 1:11`. This cannot collide: `1:` is the HTB root
//! itself, but minor 1 is the root class, which always has children and so
//! never a leaf; `ffff:` is the ingress/clsact handle, and minors end at
//! [`MAX_CLASS_MINOR`] (0xffdf, below tc's special minors). `8000:` and up
//! are also where the kernel picks a handle for a qdisc added without one,
//! but it skips handles in use, and every qdisc under `htb 1:` is jatah's.
//!
//! **Updates never tear down.** [`Shaper::apply`] reconciles: classes that
//! stay are changed in place (their counters and queues survive), missing
//! ones are created with their leaf, unwanted ones are deleted. HTB cannot
//! move a class to another parent, so a class whose parent changes (an OPD
//! joining or leaving a group) is deleted and created again under the new
//! one, and so is everything below it; nothing else is touched. Only when
//! the interface's root is not jatah's HTB is it replaced.
//!
//! Everything is spoken over a raw `NETLINK_ROUTE` socket; no `tc` process
//! is ever spawned.

//!
//! Layout: `tree.rs` describes a tree and checks and orders it for
//! installation, `apply.rs` holds the [`Shaper`] that diffs it against the
//! kernel and applies it, `tc.rs` the tc message encodings and `netlink.rs`
//! the socket; this file holds the numbering and the names used in logs
//! and errors.

mod apply;
mod error;
mod netlink;
mod tc;
#[cfg(test)]
mod tests;
mod tree;

use std::fmt;

use jatah_common::{HTB_MAJOR, ROOT_CLASS_MINOR, htb_class_id, htb_leaf_handle};

pub use apply::{Missing, Shaper};
pub use error::ShaperError;
use netlink::NlError;
#[cfg(any(test, feature = "testkit"))]
pub use tree::ApplyReport;
pub use tree::{ClassSpec, ClassStats, HtbTree, Leaf, LeafQdisc};

/// Handle of jatah's root qdisc, `1:`.
pub const ROOT_HANDLE: u32 = HTB_MAJOR << 16;

/// [`ROOT_CLASS_MINOR`] as the `u16` class minors are written in here (a
/// tc handle's minor is 16 bits): the parent of top-level classes in
/// [`ClassSpec::parent`].
pub const ROOT_CLASS: u16 = ROOT_CLASS_MINOR as u16;

/// The highest class minor the shaper installs: from 0xffe0 up minors are
/// tc's special values, and `ffff:` is the clsact qdisc's handle.
pub const MAX_CLASS_MINOR: u16 = 0xffdf;
const _: () = assert!(jatah_common::interactive_lane_minor(jatah_common::MAX_OPDS - 1) <= MAX_CLASS_MINOR as u32);

/// Class id `1:minor` ([`htb_class_id`] for a 16-bit minor).
pub const fn class_id(minor: u16) -> u32 {
    htb_class_id(minor as u32)
}

/// Handle `minor:` of the leaf qdisc under class `1:minor`
/// ([`htb_leaf_handle`] for a 16-bit minor).
pub const fn leaf_handle(minor: u16) -> u32 {
    htb_leaf_handle(minor as u32)
}

/// How many times a dump is repeated when the kernel flags it as
/// inconsistent (the tree changed while it was being read).
const DUMP_ATTEMPTS: usize = 5;

/// What an operation was, for error messages and logs.
#[derive(Clone, Copy, Debug)]
enum Op {
    GetRoot,
    InstallRoot,
    DeleteRoot(u32),
    DumpQdiscs,
    DumpClasses,
    CreateClass(u16),
    ChangeClass(u16),
    DeleteClass(u16),
    AttachLeaf(u16, LeafQdisc),
    ChangeLeaf(u16, LeafQdisc),
    DeleteQdisc(u32),
    Probe(&'static str),
}

/// A class in tc's notation (hex), with the decimal minor where it differs.
struct ClassName(u16);

impl fmt::Display for ClassName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0 < 10 {
            write!(f, "class {HTB_MAJOR:x}:{:x}", self.0)
        } else {
            write!(f, "class {HTB_MAJOR:x}:{:x} (minor {})", self.0, self.0)
        }
    }
}

/// A qdisc handle in tc's notation: `1:`, `11:`, or `8001:2`.
struct Handle(u32);

impl fmt::Display for Handle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (major, minor) = (self.0 >> 16, self.0 & 0xffff);
        if minor == 0 {
            write!(f, "{major:x}:")
        } else {
            write!(f, "{major:x}:{minor:x}")
        }
    }
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Op::GetRoot => f.write_str("read the root qdisc"),
            Op::InstallRoot => write!(f, "install root qdisc htb {}", Handle(ROOT_HANDLE)),
            Op::DeleteRoot(h) => write!(f, "delete root qdisc {}", Handle(h)),
            Op::DumpQdiscs => f.write_str("dump qdiscs"),
            Op::DumpClasses => write!(f, "dump classes of htb {}", Handle(ROOT_HANDLE)),
            Op::CreateClass(m) => write!(f, "create {}", ClassName(m)),
            Op::ChangeClass(m) => write!(f, "change {}", ClassName(m)),
            Op::DeleteClass(m) => write!(f, "delete {}", ClassName(m)),
            Op::AttachLeaf(m, kind) => write!(
                f,
                "attach {kind} leaf qdisc {} to {}",
                Handle(leaf_handle(m)),
                ClassName(m)
            ),
            Op::ChangeLeaf(m, kind) => write!(
                f,
                "change {kind} leaf qdisc {} of {}",
                Handle(leaf_handle(m)),
                ClassName(m)
            ),
            Op::DeleteQdisc(h) => write!(f, "delete qdisc {}", Handle(h)),
            Op::Probe(kind) => write!(f, "probe for qdisc kind {kind}"),
        }
    }
}

fn op_error(ifindex: u32, op: Op, err: NlError) -> ShaperError {
    match err {
        NlError::Kernel { errno, message } => ShaperError::Kernel {
            ifindex,
            op: op.to_string(),
            errno,
            message,
        },
        NlError::Io(e) => ShaperError::Transport {
            ifindex,
            op: op.to_string(),
            detail: e.to_string(),
        },
        NlError::Malformed(detail) => ShaperError::Transport {
            ifindex,
            op: op.to_string(),
            detail: format!("malformed reply: {detail}"),
        },
        NlError::DumpInterrupted => ShaperError::Transport {
            ifindex,
            op: op.to_string(),
            detail: format!("the dump was interrupted by concurrent changes {DUMP_ATTEMPTS} times"),
        },
    }
}
