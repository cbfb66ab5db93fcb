//! HTB shaping over rtnetlink.
//!
//! jatah shapes each direction with one HTB tree on the egress of an
//! interface:
//!
//! ```text
//! htb 1: root (default class 1:2)
//! └── class 1:1               rate = ceil = gateway capacity
//!     ├── class 1:2           unclassified traffic       ── leaf qdisc 2:
//!     ├── class 1:(s+16)      OPD slot s, one per OPD    ── leaf qdisc (s+16):
//!     └── class 1:(0x6000+g)  a group of OPDs (inner class, no leaf)
//!         └── class 1:(s+16)  a member OPD               ── leaf qdisc (s+16):
//! ```
//!
//! The eBPF classifier writes `skb->priority = 1:minor`, which HTB takes as
//! the class directly; everything else falls into the default class. The
//! shaper itself does not know OPDs or groups: it installs whatever tree of
//! classes it is given ([`ClassSpec::parent`] says where each goes) and
//! gives a leaf qdisc to every class without children.
//!
//! **Leaf handles.** The leaf qdisc of class `1:N` has handle `N:` (its
//! major number is the class's minor number), so `tc qdisc show` lists
//! `qdisc pfifo 11: parent 1:11`. This cannot collide: `1:` is the HTB root
//! itself, but minor 1 is the root class, which always has children and so
//! never a leaf; `ffff:` is the ingress/clsact handle and `8000:`-`ffff:` are
//! the handles the kernel allocates on its own, and leaf-bearing minors are
//! limited to `2..=0x7fff` ([`MAX_LEAF_MINOR`]), far above the highest OPD
//! class (`MAX_OPDS + 16` = 0x4010).
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

mod error;
mod netlink;
mod tc;
#[cfg(test)]
mod tests;

use std::cmp::Reverse;
use std::collections::{HashMap, HashSet};
use std::fmt;

use jatah_common::{HTB_MAJOR, MAX_LEAF_MINOR, ROOT_CLASS_MINOR, htb_class_id, htb_leaf_handle};

pub use error::ShaperError;
use netlink::{NLM_F_CREATE, NLM_F_EXCL, NLM_F_REPLACE, NlError, Request};
use tc::{HtbClass, Stats, TC_H_ROOT, TcMsg, TcObject};

/// Handle of jatah's root qdisc, `1:`.
pub const ROOT_HANDLE: u32 = HTB_MAJOR << 16;

/// [`ROOT_CLASS_MINOR`] as the `u16` class minors are written in here (a
/// tc handle's minor is 16 bits): the parent of top-level classes in
/// [`ClassSpec::parent`].
pub const ROOT_CLASS: u16 = ROOT_CLASS_MINOR as u16;

// Every minor jatah numbers, inner classes included, fits a tc minor: an
// inner class becomes a leaf when its last child goes, so all are kept
// within MAX_LEAF_MINOR (see [`leaf_handle`]).
const _: () = assert!(MAX_LEAF_MINOR <= u16::MAX as u32);

/// How many classes deep HTB nests below its root class
/// (`TC_HTB_MAXDEPTH` = 8 levels, the root class being the first).
const MAX_DEPTH: usize = 7;

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

/// The qdisc under each HTB class.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum LeafQdisc {
    /// Plain FIFO with a packet limit; built into every kernel.
    Pfifo,
    /// Flow-queue CoDel (`sch_fq_codel`): fair between flows, low latency.
    FqCodel,
    /// CAKE (`sch_cake`), with its defaults.
    Cake,
}

impl LeafQdisc {
    /// Every kind, in the order "auto" prefers them.
    pub const ALL: [LeafQdisc; 3] = [LeafQdisc::FqCodel, LeafQdisc::Cake, LeafQdisc::Pfifo];

    /// The kernel's name of the qdisc (`TCA_KIND`).
    pub fn kind(self) -> &'static str {
        match self {
            LeafQdisc::Pfifo => "pfifo",
            LeafQdisc::FqCodel => "fq_codel",
            LeafQdisc::Cake => "cake",
        }
    }

    /// The kind with the kernel name `kind`, if jatah knows it.
    pub fn from_kind(kind: &str) -> Option<LeafQdisc> {
        LeafQdisc::ALL.into_iter().find(|l| l.kind() == kind)
    }

    fn index(self) -> usize {
        match self {
            LeafQdisc::Pfifo => 0,
            LeafQdisc::FqCodel => 1,
            LeafQdisc::Cake => 2,
        }
    }
}

impl fmt::Display for LeafQdisc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.kind())
    }
}

/// One HTB class below the root class `1:1`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClassSpec {
    /// Class minor: the class is `1:minor`.
    pub minor: u16,
    /// Minor of the parent class: [`ROOT_CLASS`] (1) for a class right
    /// under the root class, else another class of the same tree. A class
    /// that is some class's parent is an inner class and gets no leaf qdisc.
    pub parent: u16,
    /// Guaranteed rate, bits per second.
    pub rate_bps: u64,
    /// Ceiling (rate when borrowing from the root class), bits per second.
    pub ceil_bps: u64,
}

/// jatah's whole HTB tree for one interface.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HtbTree {
    /// Rate and ceiling of the root class `1:1`, bits per second.
    pub capacity_bps: u64,
    /// The class for unclassified traffic (the qdisc's `default`), `1:2`;
    /// always right under the root class.
    pub default_class: ClassSpec,
    /// The other classes (OPDs and groups), in any order.
    pub classes: Vec<ClassSpec>,
    /// Leaf qdisc kind under every class.
    pub leaf: LeafQdisc,
    /// Leaf queue limit in packets (pfifo and fq_codel; cake sizes its
    /// queue in bytes by itself and ignores it).
    pub leaf_limit: u32,
}

/// Counters of one HTB class.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ClassStats {
    /// Class minor: the class is `1:minor`.
    pub minor: u16,
    /// Bytes sent through the class (dequeued by HTB).
    pub bytes: u64,
    /// Packets sent through the class.
    pub packets: u64,
    /// Packets the class's leaf qdisc dropped.
    pub drops: u64,
    /// Times the class was over its rate when asked to send.
    pub overlimits: u64,
    /// Bytes queued in the leaf now.
    pub backlog_bytes: u32,
    /// Packets queued in the leaf now.
    pub qlen: u32,
}

/// What [`Shaper::apply`] did, for the logs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ApplyReport {
    /// jatah's HTB root was installed (the interface had another root
    /// qdisc, or none yet); everything below it is new.
    pub root_installed: bool,
    /// Classes created.
    pub created: usize,
    /// Classes changed in place.
    pub changed: usize,
    /// Classes that already had the wanted parameters.
    pub unchanged: usize,
    /// Classes deleted (no longer wanted, or in the wrong place).
    pub deleted: usize,
    /// Leaf qdiscs attached (to new classes, or replacing a leaf of
    /// another kind or handle).
    pub leaves_attached: usize,
    /// Leaf qdiscs whose limit was changed in place.
    pub leaves_changed: usize,
}

impl ApplyReport {
    /// Whether the interface already had exactly this tree.
    pub fn is_noop(&self) -> bool {
        !self.root_installed
            && self.created == 0
            && self.changed == 0
            && self.deleted == 0
            && self.leaves_attached == 0
            && self.leaves_changed == 0
    }
}

impl fmt::Display for ApplyReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.root_installed {
            f.write_str("root qdisc installed, ")?;
        }
        write!(
            f,
            "classes: {} created, {} changed, {} unchanged, {} deleted; leaves: {} attached, {} changed",
            self.created,
            self.changed,
            self.unchanged,
            self.deleted,
            self.leaves_attached,
            self.leaves_changed
        )
    }
}

/// Installs, updates and reads jatah's HTB trees through rtnetlink.
///
/// The socket lives in the network namespace of the thread that called
/// [`Shaper::new`]; interface indexes are those of that namespace.
pub struct Shaper {
    sock: netlink::Socket,
    /// Probe results per [`LeafQdisc`] (indexed by `LeafQdisc::index`).
    leaf_support: [Option<bool>; 3],
    /// The tree last put in force per interface by [`Shaper::apply_changed`].
    applied: std::collections::HashMap<u32, HtbTree>,
}

impl fmt::Debug for Shaper {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Shaper")
            .field("leaf_support", &self.leaf_support)
            .finish_non_exhaustive()
    }
}

/// The root qdisc of an interface.
#[derive(Debug)]
struct RootQdisc {
    kind: String,
    handle: u32,
    options: Option<Vec<u8>>,
}

impl RootQdisc {
    fn is_jatah(&self) -> bool {
        self.kind == "htb" && self.handle == ROOT_HANDLE
    }
}

/// A class of htb 1: as the kernel reports it.
#[derive(Debug)]
struct Class {
    minor: u16,
    parent: u32,
    params: Option<HtbClass>,
    stats: Stats,
}

/// A class jatah wants.
#[derive(Debug)]
struct Wanted {
    minor: u16,
    parent: u32,
    params: HtbClass,
    /// No class of the tree sits under it: it gets a leaf qdisc.
    leaf: bool,
}

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

impl Shaper {
    /// Opens the rtnetlink socket in the calling thread's network namespace.
    pub fn new() -> Result<Shaper, ShaperError> {
        let sock = netlink::Socket::open().map_err(ShaperError::Socket)?;
        Ok(Shaper {
            sock,
            leaf_support: [None; 3],
            applied: std::collections::HashMap::new(),
        })
    }

    /// Like [`Shaper::apply`], but skips the kernel entirely when `tree` is
    /// the one this shaper last put in force on `ifindex`: a reload that
    /// changes one direction does not re-read the other's tree. Any error
    /// forgets what was applied, so the next call checks the kernel again.
    pub fn apply_changed(
        &mut self,
        ifindex: u32,
        tree: &HtbTree,
    ) -> Result<ApplyReport, ShaperError> {
        if self.applied.get(&ifindex) == Some(tree) {
            return Ok(ApplyReport::default());
        }
        self.applied.remove(&ifindex);
        let report = self.apply(ifindex, tree)?;
        self.applied.insert(ifindex, tree.clone());
        Ok(report)
    }

    /// Installs jatah's tree on `ifindex`, or brings an installed one to
    /// `tree` without tearing it down: classes that stay are changed in
    /// place (like `tc class change`, so their counters and queued packets
    /// survive), missing ones are created (parents before children) with
    /// a leaf qdisc where they have no children, unwanted ones are deleted
    /// (children before parents). A class stays where it is wanted under
    /// the parent it already has, and that parent stays; one under another
    /// parent is deleted and created anew (HTB cannot move a class), and
    /// with it its subtree. A root qdisc that is not
    /// jatah's (`htb 1:`) — the kernel's default, or anyone else's — is
    /// replaced. Nothing is touched if `tree` is invalid.
    ///
    /// The one teardown: if an `htb 1:` is there with a different default
    /// class, it is reinstalled, because HTB cannot change its default in
    /// place (`tc qdisc change` is not supported by sch_htb).
    ///
    /// If the kernel refuses a step, the steps before it stay done; the
    /// error says which step, and applying again converges.
    pub fn apply(&mut self, ifindex: u32, tree: &HtbTree) -> Result<ApplyReport, ShaperError> {
        let want = plan(ifindex, tree)?;
        // Found out now rather than halfway through, when the first leaf
        // fails to attach.
        if !self.supports_leaf(ifindex, tree.leaf)? {
            return Err(ShaperError::InvalidTree {
                ifindex,
                reason: format!(
                    "this kernel has no {} qdisc for the leaves (resolve_leaf picks one it has)",
                    tree.leaf
                ),
            });
        }
        let mut report = ApplyReport::default();

        let root = self.root_qdisc(ifindex)?;
        let default_ok = root
            .options
            .as_deref()
            .and_then(tc::decode_htb_default)
            .is_some_and(|d| d == u32::from(tree.default_class.minor));
        let existing = if root.is_jatah() && default_ok {
            self.dump_classes(ifindex)?
        } else {
            if root.is_jatah() {
                tracing::warn!(
                    ifindex,
                    "htb 1: has another default class; reinstalling it (HTB cannot change its default in place)"
                );
            }
            self.install_root(ifindex, &root, tree.default_class.minor)?;
            report.root_installed = true;
            Vec::new()
        };

        // Which existing classes stay: wanted, under the wanted parent, and
        // that parent staying too. `want` lists parents first, so one pass
        // decides every parent before its children.
        let by_minor: HashMap<u16, &Class> = existing.iter().map(|c| (c.minor, c)).collect();
        let mut staying: HashSet<u16> = HashSet::new();
        for w in &want {
            let parent_stays =
                w.parent == TC_H_ROOT || staying.contains(&((w.parent & 0xffff) as u16));
            if parent_stays && by_minor.get(&w.minor).is_some_and(|c| c.parent == w.parent) {
                staying.insert(w.minor);
            }
        }
        let stays = |c: &Class| staying.contains(&c.minor);

        // HTB refuses to delete a class that has children, so the deepest
        // go first. A class's leaf qdisc goes with it. Everything below a
        // doomed class is doomed too (its parent does not stay), so this
        // deletes whole subtrees.
        let mut doomed: Vec<&Class> = existing.iter().filter(|c| !stays(c)).collect();
        doomed.sort_by_key(|c| Reverse(depth(c, &by_minor)));
        for c in doomed {
            self.delete_class(ifindex, c.minor)?;
            report.deleted += 1;
        }

        // Leaves as they are now (a deleted class took its leaf along).
        let qdiscs = if report.root_installed {
            Qdiscs::new(Vec::new())
        } else {
            self.dump_qdiscs(ifindex)?
        };

        // Parents before children: `want` starts with the root class.
        for w in &want {
            // Whether it is a leaf is judged by the tree wanted, not by the
            // dump: the deletions above have already made a class whose
            // children all left into a leaf, whose quantum now counts.
            match by_minor.get(&w.minor).filter(|c| stays(c)) {
                Some(c) if c.params.is_some_and(|p| p.same_as(&w.params, w.leaf)) => {
                    report.unchanged += 1;
                }
                Some(_) => {
                    self.put_class(ifindex, w, false)?;
                    report.changed += 1;
                }
                None => {
                    self.put_class(ifindex, w, true)?;
                    report.created += 1;
                }
            }
            // An inner class has no leaf: HTB destroyed it when the first
            // child arrived.
            if w.leaf {
                self.ensure_leaf(ifindex, w.minor, tree, &qdiscs, &mut report)?;
            }
        }
        tracing::debug!(ifindex, %report, "HTB tree applied");
        Ok(report)
    }

    /// Removes jatah's root qdisc (`htb 1:`) and with it every class; the
    /// kernel puts the interface's default qdisc back. Returns `Ok(false)`
    /// if the root is not jatah's (nothing is touched then).
    pub fn remove(&mut self, ifindex: u32) -> Result<bool, ShaperError> {
        let root = self.root_qdisc(ifindex)?;
        if !root.is_jatah() {
            return Ok(false);
        }
        self.delete_root(ifindex, ROOT_HANDLE)?;
        Ok(true)
    }

    /// Counters of every class of jatah's HTB on `ifindex` (the root class
    /// 1:1 included), ordered by minor. Fails with
    /// [`ShaperError::NotInstalled`] if the root qdisc is not jatah's.
    pub fn class_stats(&mut self, ifindex: u32) -> Result<Vec<ClassStats>, ShaperError> {
        if !self.root_qdisc(ifindex)?.is_jatah() {
            return Err(ShaperError::NotInstalled { ifindex });
        }
        let mut stats: Vec<ClassStats> = self
            .dump_classes(ifindex)?
            .into_iter()
            .map(|c| ClassStats {
                minor: c.minor,
                bytes: c.stats.bytes,
                packets: c.stats.packets,
                drops: c.stats.drops,
                overlimits: c.stats.overlimits,
                backlog_bytes: c.stats.backlog,
                qlen: c.stats.qlen,
            })
            .collect();
        stats.sort_by_key(|s| s.minor);
        Ok(stats)
    }

    /// The first kind in `preferred` this kernel can create, else pfifo
    /// (built into every kernel). Each kind is probed once per `Shaper`
    /// (see [`Shaper::supports_leaf`]); a probe that cannot decide is
    /// logged and the kind skipped.
    pub fn resolve_leaf(&mut self, ifindex: u32, preferred: &[LeafQdisc]) -> LeafQdisc {
        for &kind in preferred {
            match self.supports_leaf(ifindex, kind) {
                Ok(true) => return kind,
                Ok(false) => tracing::debug!(%kind, "qdisc kind not available in this kernel"),
                Err(e) => {
                    tracing::warn!(%kind, "cannot tell whether the kernel has this qdisc: {e}")
                }
            }
        }
        LeafQdisc::Pfifo
    }

    /// Whether this kernel can create `kind` (the answer is cached).
    ///
    /// The probe asks for a new root qdisc of that kind on `ifindex` with an
    /// attribute every egress qdisc rejects (`TCA_INGRESS_BLOCK` = 0). The
    /// kernel looks the kind up (loading its module if it can) before it
    /// checks that attribute, so "invalid argument" means the kind exists
    /// and "no such file" that it does not; either way nothing is attached
    /// and the interface is left as it was.
    pub fn supports_leaf(&mut self, ifindex: u32, kind: LeafQdisc) -> Result<bool, ShaperError> {
        if kind == LeafQdisc::Pfifo {
            return Ok(true);
        }
        if let Some(known) = self.leaf_support[kind.index()] {
            return Ok(known);
        }
        let known = self.probe_kind(ifindex, kind.kind())?;
        self.leaf_support[kind.index()] = Some(known);
        Ok(known)
    }

    fn probe_kind(&mut self, ifindex: u32, kind: &'static str) -> Result<bool, ShaperError> {
        let op = Op::Probe(kind);
        // Handle 0 with CREATE|REPLACE|EXCL reaches qdisc_create whatever
        // the current root is (tc_modify_qdisc's "create_n_graft" path).
        let mut req = Request::new(tc::RTM_NEWQDISC, NLM_F_CREATE | NLM_F_REPLACE | NLM_F_EXCL);
        req.push(&TcMsg::new(ifindex, 0, TC_H_ROOT).encode());
        req.attr_str(tc::TCA_KIND, kind);
        req.attr_u32(tc::TCA_INGRESS_BLOCK, 0);
        match self.sock.request(req) {
            Err(NlError::Kernel {
                errno: libc::EINVAL,
                message,
            }) if message.as_deref().is_none_or(|m| m.contains("block")) => Ok(true),
            Err(NlError::Kernel {
                errno: libc::ENOENT,
                message,
            }) if message.as_deref().is_none_or(|m| m.contains("unknown")) => Ok(false),
            Err(e) => Err(op_error(ifindex, op, e)),
            Ok(_) => Err(ShaperError::Transport {
                ifindex,
                op: op.to_string(),
                detail: "the kernel accepted the probe and attached the qdisc; \
                         re-apply the tree"
                    .into(),
            }),
        }
    }

    /// Sends a change and logs the kernel's warning, if it attached one.
    fn change(&mut self, ifindex: u32, op: Op, req: Request) -> Result<(), ShaperError> {
        let reply = self
            .sock
            .request(req)
            .map_err(|e| op_error(ifindex, op, e))?;
        if let Some(warning) = reply.warning {
            tracing::warn!(ifindex, "{op}: kernel warning: {warning}");
        }
        tracing::debug!(ifindex, "{op}");
        Ok(())
    }

    fn root_qdisc(&mut self, ifindex: u32) -> Result<RootQdisc, ShaperError> {
        let mut req = Request::get(tc::RTM_GETQDISC);
        req.push(&TcMsg::new(ifindex, 0, TC_H_ROOT).encode());
        let reply = self
            .sock
            .request(req)
            .map_err(|e| op_error(ifindex, Op::GetRoot, e))?;
        let root = reply
            .messages
            .iter()
            .filter(|m| m.msg_type == tc::RTM_NEWQDISC)
            .find_map(|m| TcObject::decode(&m.payload));
        Ok(match root {
            Some(root) => RootQdisc {
                kind: root.kind,
                handle: root.msg.handle,
                options: root.options,
            },
            // The kernel does not report its built-in qdiscs (noop, on an
            // interface that was never up); like every default, handle 0.
            None => RootQdisc {
                kind: String::new(),
                handle: 0,
                options: None,
            },
        })
    }

    /// Replaces whatever root `ifindex` has with an empty `htb 1:`.
    fn install_root(
        &mut self,
        ifindex: u32,
        current: &RootQdisc,
        default_minor: u16,
    ) -> Result<(), ShaperError> {
        // A root with handle 0 is the kernel's default and is simply
        // replaced. Any other root is deleted first: "replace" with our
        // handle fails when it already holds 1: of another kind, and could
        // graft an existing 1: from inside a foreign tree.
        if current.handle != 0 {
            self.delete_root(ifindex, current.handle)?;
        }
        let mut req = Request::new(tc::RTM_NEWQDISC, NLM_F_CREATE | NLM_F_EXCL);
        req.push(&TcMsg::new(ifindex, ROOT_HANDLE, TC_H_ROOT).encode());
        req.attr_str(tc::TCA_KIND, "htb");
        tc::encode_htb_qdisc(&mut req, default_minor);
        self.change(ifindex, Op::InstallRoot, req)
    }

    fn delete_root(&mut self, ifindex: u32, handle: u32) -> Result<(), ShaperError> {
        let mut req = Request::new(tc::RTM_DELQDISC, 0);
        req.push(&TcMsg::new(ifindex, handle, TC_H_ROOT).encode());
        self.change(ifindex, Op::DeleteRoot(handle), req)
    }

    fn put_class(&mut self, ifindex: u32, w: &Wanted, create: bool) -> Result<(), ShaperError> {
        // Without NLM_F_CREATE the kernel only changes an existing class
        // (and fails rather than create one that vanished meanwhile).
        let (flags, op) = if create {
            (NLM_F_CREATE | NLM_F_EXCL, Op::CreateClass(w.minor))
        } else {
            (0, Op::ChangeClass(w.minor))
        };
        let mut req = Request::new(tc::RTM_NEWTCLASS, flags);
        req.push(&TcMsg::new(ifindex, class_id(w.minor), w.parent).encode());
        req.attr_str(tc::TCA_KIND, "htb");
        w.params.encode(&mut req);
        self.change(ifindex, op, req)
    }

    fn delete_class(&mut self, ifindex: u32, minor: u16) -> Result<(), ShaperError> {
        let mut req = Request::new(tc::RTM_DELTCLASS, 0);
        req.push(&TcMsg::new(ifindex, class_id(minor), 0).encode());
        self.change(ifindex, Op::DeleteClass(minor), req)
    }

    /// Gives class `1:minor` the leaf `minor:` of the tree's kind and limit,
    /// touching it only if it differs. `qdiscs` is the dump taken after
    /// deletions and before any class was created.
    fn ensure_leaf(
        &mut self,
        ifindex: u32,
        minor: u16,
        tree: &HtbTree,
        qdiscs: &Qdiscs,
        report: &mut ApplyReport,
    ) -> Result<(), ShaperError> {
        let handle = leaf_handle(minor);
        let parent = class_id(minor);
        let kind = tree.leaf;
        // The kernel's default leaf (pfifo 0:) is invisible in dumps, so a
        // class without a visible leaf has the default one.
        if let Some(q) = qdiscs.under(parent).filter(|q| q.msg.handle == handle) {
            if q.kind == kind.kind() {
                if leaf_matches(kind, q.options.as_deref(), tree.leaf_limit) {
                    return Ok(());
                }
                let mut req = Request::new(tc::RTM_NEWQDISC, 0);
                req.push(&TcMsg::new(ifindex, handle, parent).encode());
                req.attr_str(tc::TCA_KIND, kind.kind());
                encode_leaf(&mut req, kind, tree.leaf_limit);
                self.change(ifindex, Op::ChangeLeaf(minor, kind), req)?;
                report.leaves_changed += 1;
                return Ok(());
            }
            // Same handle, other kind: the kernel will not replace a qdisc
            // by one of another kind under the same handle. Deleting it
            // makes HTB graft a default pfifo until the new leaf arrives.
            self.delete_qdisc(ifindex, handle, parent)?;
        }
        // The handle is held elsewhere (left over from a foreign setup):
        // free it, or the kernel would refuse (EXCL) to create it here.
        // `qdiscs` may be stale by now (an earlier leaf replacement can
        // have destroyed that qdisc), so look again before deleting.
        let elsewhere = |qs: &Qdiscs| qs.parent_of(handle).filter(|&p| p != parent);
        if elsewhere(qdiscs).is_some()
            && let Some(holder) = elsewhere(&self.dump_qdiscs(ifindex)?)
        {
            self.delete_qdisc(ifindex, handle, holder)?;
        }
        // REPLACE swaps out the current leaf (default or foreign) in one
        // graft; EXCL refuses to reuse an existing qdisc of that handle.
        let mut req = Request::new(tc::RTM_NEWQDISC, NLM_F_CREATE | NLM_F_REPLACE | NLM_F_EXCL);
        req.push(&TcMsg::new(ifindex, handle, parent).encode());
        req.attr_str(tc::TCA_KIND, kind.kind());
        encode_leaf(&mut req, kind, tree.leaf_limit);
        self.change(ifindex, Op::AttachLeaf(minor, kind), req)?;
        report.leaves_attached += 1;
        Ok(())
    }

    fn delete_qdisc(&mut self, ifindex: u32, handle: u32, parent: u32) -> Result<(), ShaperError> {
        let mut req = Request::new(tc::RTM_DELQDISC, 0);
        req.push(&TcMsg::new(ifindex, handle, parent).encode());
        self.change(ifindex, Op::DeleteQdisc(handle), req)
    }

    /// Runs a dump, repeating it if the kernel flags it as inconsistent.
    fn dump(
        &mut self,
        ifindex: u32,
        op: Op,
        msg_type: u16,
        filter: TcMsg,
    ) -> Result<Vec<TcObject>, ShaperError> {
        let mut attempt = 1;
        loop {
            let mut req = Request::dump(msg_type);
            req.push(&filter.encode());
            match self.sock.request(req) {
                Ok(reply) => {
                    return Ok(reply
                        .messages
                        .iter()
                        .filter_map(|m| TcObject::decode(&m.payload))
                        // Not every kernel filters dumps by interface.
                        .filter(|o| o.msg.ifindex == ifindex)
                        .collect());
                }
                Err(NlError::DumpInterrupted) if attempt < DUMP_ATTEMPTS => attempt += 1,
                Err(e) => return Err(op_error(ifindex, op, e)),
            }
        }
    }

    fn dump_qdiscs(&mut self, ifindex: u32) -> Result<Qdiscs, ShaperError> {
        let objects = self.dump(
            ifindex,
            Op::DumpQdiscs,
            tc::RTM_GETQDISC,
            TcMsg::new(ifindex, 0, 0),
        )?;
        Ok(Qdiscs::new(objects))
    }

    /// The classes of htb 1: (the parent field restricts the kernel's walk
    /// to the qdisc with that major).
    fn dump_classes(&mut self, ifindex: u32) -> Result<Vec<Class>, ShaperError> {
        let objects = self.dump(
            ifindex,
            Op::DumpClasses,
            tc::RTM_GETTCLASS,
            TcMsg::new(ifindex, 0, ROOT_HANDLE),
        )?;
        Ok(objects
            .into_iter()
            .filter(|o| o.msg.handle & 0xffff_0000 == ROOT_HANDLE && o.kind == "htb")
            .map(|o| {
                let decoded = o.options.as_deref().and_then(HtbClass::decode);
                Class {
                    minor: (o.msg.handle & 0xffff) as u16,
                    parent: o.msg.parent,
                    params: decoded.map(|(p, _)| p),
                    stats: o.stats.unwrap_or_default(),
                }
            })
            .collect())
    }
}

/// The visible qdiscs of an interface, indexed for the leaf pass (which
/// would otherwise be quadratic with thousands of OPD classes).
struct Qdiscs {
    objects: Vec<TcObject>,
    by_parent: HashMap<u32, usize>,
    by_handle: HashMap<u32, usize>,
}

impl Qdiscs {
    fn new(objects: Vec<TcObject>) -> Qdiscs {
        let index = |key: fn(&TcObject) -> u32| {
            objects
                .iter()
                .enumerate()
                .map(|(i, q)| (key(q), i))
                .collect::<HashMap<u32, usize>>()
        };
        let by_parent = index(|q| q.msg.parent);
        let by_handle = index(|q| q.msg.handle);
        Qdiscs {
            objects,
            by_parent,
            by_handle,
        }
    }

    /// The qdisc attached to class (or parent) `parent`.
    fn under(&self, parent: u32) -> Option<&TcObject> {
        self.by_parent.get(&parent).map(|&i| &self.objects[i])
    }

    /// Where the qdisc with `handle` is attached.
    fn parent_of(&self, handle: u32) -> Option<u32> {
        self.by_handle
            .get(&handle)
            .map(|&i| self.objects[i].msg.parent)
    }
}

/// Distance of a class from the top of the tree (0 for a root class).
fn depth(class: &Class, by_minor: &HashMap<u16, &Class>) -> usize {
    let mut depth = 0;
    let mut parent = class.parent;
    // HTB trees are at most 8 deep; the bound guards against a malformed dump.
    while parent != TC_H_ROOT && depth < 16 {
        match by_minor.get(&((parent & 0xffff) as u16)) {
            Some(p) if parent & 0xffff_0000 == ROOT_HANDLE => parent = p.parent,
            _ => break,
        }
        depth += 1;
    }
    depth
}

fn encode_leaf(req: &mut Request, kind: LeafQdisc, limit: u32) {
    match kind {
        LeafQdisc::Pfifo => tc::encode_pfifo(req, limit),
        LeafQdisc::FqCodel => tc::encode_fq_codel(req, limit),
        // cake's defaults suit a leaf; it has no packet limit.
        LeafQdisc::Cake => {}
    }
}

fn leaf_matches(kind: LeafQdisc, options: Option<&[u8]>, limit: u32) -> bool {
    match kind {
        LeafQdisc::Pfifo => options.and_then(tc::decode_pfifo_limit) == Some(limit),
        LeafQdisc::FqCodel => options.and_then(tc::decode_fq_codel_limit) == Some(limit),
        LeafQdisc::Cake => true,
    }
}

/// Checks `tree` and turns it into the classes to install, parents before
/// children: the root class first, then by depth and, within a depth, by
/// minor (so the default class comes first among the top-level classes).
fn plan(ifindex: u32, tree: &HtbTree) -> Result<Vec<Wanted>, ShaperError> {
    let invalid = |reason: String| ShaperError::InvalidTree { ifindex, reason };
    let bytes = |bps: u64, what: &dyn fmt::Display| {
        if bps < 8 {
            Err(invalid(format!(
                "{what}: {bps} bit/s is below the 1 byte/s HTB can express"
            )))
        } else {
            Ok(bps / 8)
        }
    };
    if tree.leaf_limit == 0 {
        return Err(invalid("leaf queue limit must be at least 1 packet".into()));
    }
    if tree.default_class.parent != ROOT_CLASS {
        return Err(invalid(format!(
            "the default {} must sit right under the root class",
            ClassName(tree.default_class.minor)
        )));
    }
    let capacity = bytes(tree.capacity_bps, &"gateway capacity")?;
    let specs: Vec<&ClassSpec> = std::iter::once(&tree.default_class)
        .chain(&tree.classes)
        .collect();
    let mut by_minor: HashMap<u16, &ClassSpec> = HashMap::new();
    for spec in &specs {
        let name = ClassName(spec.minor);
        if spec.minor <= ROOT_CLASS || u32::from(spec.minor) > MAX_LEAF_MINOR {
            return Err(invalid(format!(
                "{name}: minor must be within 2..={MAX_LEAF_MINOR} (1 is the root class)"
            )));
        }
        if by_minor.insert(spec.minor, spec).is_some() {
            return Err(invalid(format!("{name} is given twice")));
        }
        if spec.ceil_bps < spec.rate_bps {
            return Err(invalid(format!(
                "{name}: ceiling {} bit/s is below its rate {} bit/s",
                spec.ceil_bps, spec.rate_bps
            )));
        }
    }
    // The default class is the qdisc's fallback for every unknown
    // priority, so it must stay a leaf.
    let parent_ok = |spec: &ClassSpec| {
        spec.parent == ROOT_CLASS
            || (spec.parent != tree.default_class.minor && by_minor.contains_key(&spec.parent))
    };
    if let Some(spec) = specs.iter().find(|spec| !parent_ok(spec)) {
        return Err(invalid(format!(
            "{}: its parent {} is neither the root class nor another class of the tree (the \
             default class cannot be a parent)",
            ClassName(spec.minor),
            ClassName(spec.parent)
        )));
    }
    let mut ordered: Vec<(usize, &ClassSpec)> = Vec::with_capacity(specs.len());
    for spec in &specs {
        let name = ClassName(spec.minor);
        // Every parent is a class of the tree (checked above), so walking
        // up ends at the root class within MAX_DEPTH steps, or the parents
        // form a cycle or nest deeper than HTB allows.
        let mut depth = 1;
        let mut parent = spec.parent;
        while parent != ROOT_CLASS {
            depth += 1;
            if depth > MAX_DEPTH {
                return Err(invalid(format!(
                    "{name}: its parents nest deeper than HTB's {MAX_DEPTH} levels below the \
                     root class, or form a cycle"
                )));
            }
            parent = by_minor[&parent].parent;
        }
        ordered.push((depth, spec));
    }
    ordered.sort_by_key(|&(depth, spec)| (depth, spec.minor));
    let parents: HashSet<u16> = specs.iter().map(|spec| spec.parent).collect();
    let mut want = vec![Wanted {
        minor: ROOT_CLASS,
        parent: TC_H_ROOT,
        params: HtbClass::new(capacity, capacity),
        leaf: false,
    }];
    for (_, spec) in ordered {
        let name = ClassName(spec.minor);
        want.push(Wanted {
            minor: spec.minor,
            parent: class_id(spec.parent),
            params: HtbClass::new(bytes(spec.rate_bps, &name)?, bytes(spec.ceil_bps, &name)?),
            leaf: !parents.contains(&spec.minor),
        });
    }
    Ok(want)
}
