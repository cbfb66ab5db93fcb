//! [`Shaper`]: brings an interface's HTB tree to the one wanted by
//! diffing it against the kernel's dump, and reads the class counters.

use std::cmp::Reverse;
use std::collections::{HashMap, HashSet};
use std::fmt;

use super::netlink::{self, NLM_F_CREATE, NLM_F_EXCL, NLM_F_REPLACE, NlError, Request};
use super::tc::{self, HtbClass, Stats, TC_H_ROOT, TcMsg, TcObject};
use super::tree::{ApplyReport, ClassStats, HtbTree, Leaf, LeafQdisc, Wanted, plan};
use super::{
    DUMP_ATTEMPTS, Op, ROOT_CLASS, ROOT_HANDLE, ShaperError, class_id, leaf_handle, op_error,
};

/// Installs, updates and reads jatah's HTB trees through rtnetlink.
///
/// The socket lives in the network namespace of the thread that called
/// [`Shaper::new`]; interface indexes are those of that namespace.
pub struct Shaper {
    sock: netlink::Socket,
    /// Probe results per [`LeafQdisc`] (indexed by `LeafQdisc::index`);
    /// visible to the shaper's tests, which check the cache.
    pub(super) leaf_support: [Option<bool>; 4],
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

/// What is gone of an applied tree (see [`Shaper::missing`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Missing {
    /// The root qdisc is not jatah's `htb 1:` any more: all of it.
    Root,
    /// This many of its classes.
    Classes(usize),
}

/// A class of htb 1: as the kernel reports it.
#[derive(Debug)]
struct Class {
    minor: u16,
    parent: u32,
    params: Option<HtbClass>,
    stats: Stats,
}

impl Shaper {
    /// Opens the rtnetlink socket in the calling thread's network namespace.
    pub fn new() -> Result<Shaper, ShaperError> {
        let sock = netlink::Socket::open().map_err(ShaperError::Socket)?;
        Ok(Shaper {
            sock,
            leaf_support: [None; 4],
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

    /// What is gone of the tree this shaper last put in force on `ifindex`
    /// (someone replaced the root qdisc or deleted classes): None when all
    /// of it is there, or when nothing was applied there. One dump of the
    /// classes; nothing is changed.
    pub fn missing(&mut self, ifindex: u32) -> Result<Option<Missing>, ShaperError> {
        let Some(tree) = self.applied.get(&ifindex) else {
            return Ok(None);
        };
        let wanted: Vec<u16> = std::iter::once(tree.default_class.minor)
            .chain(tree.classes.iter().map(|c| c.minor))
            .collect();
        if !self.root_qdisc(ifindex)?.is_jatah() {
            return Ok(Some(Missing::Root));
        }
        let have: HashSet<u16> = self.dump_classes(ifindex)?.iter().map(|c| c.minor).collect();
        let gone = wanted.iter().filter(|m| !have.contains(m)).count()
            + usize::from(!have.contains(&ROOT_CLASS));
        Ok((gone > 0).then_some(Missing::Classes(gone)))
    }

    /// Forgets the tree applied on `ifindex`, so the next
    /// [`Shaper::apply_changed`] compares with the kernel again.
    pub fn forget(&mut self, ifindex: u32) {
        self.applied.remove(&ifindex);
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
                Some(c) if c.params.is_some_and(|p| p.same_as(&w.params, w.leaf.is_some())) => {
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
            if let Some(leaf) = w.leaf {
                self.ensure_leaf(ifindex, w.minor, leaf, &qdiscs, &mut report)?;
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
        if matches!(kind, LeafQdisc::Pfifo | LeafQdisc::Bfifo) {
            return Ok(true);
        }
        if let Some(known) = self.leaf_support[kind.index()] {
            return Ok(known);
        }
        let known = self.probe_kind(ifindex, kind.kind())?;
        self.leaf_support[kind.index()] = Some(known);
        Ok(known)
    }

    /// Asks the kernel for `kind` without caching the answer (see
    /// [`Shaper::supports_leaf`]; the tests probe directly).
    pub(super) fn probe_kind(
        &mut self,
        ifindex: u32,
        kind: &'static str,
    ) -> Result<bool, ShaperError> {
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

    /// Deletes class `1:minor` and its leaf (the tests use it too, to
    /// break a tree on purpose).
    pub(super) fn delete_class(&mut self, ifindex: u32, minor: u16) -> Result<(), ShaperError> {
        let mut req = Request::new(tc::RTM_DELTCLASS, 0);
        req.push(&TcMsg::new(ifindex, class_id(minor), 0).encode());
        self.change(ifindex, Op::DeleteClass(minor), req)
    }

    /// Gives class `1:minor` the leaf `minor:` of the kind and limit wanted,
    /// touching it only if it differs. `qdiscs` is the dump taken after
    /// deletions and before any class was created.
    fn ensure_leaf(
        &mut self,
        ifindex: u32,
        minor: u16,
        leaf: Leaf,
        qdiscs: &Qdiscs,
        report: &mut ApplyReport,
    ) -> Result<(), ShaperError> {
        let handle = leaf_handle(minor);
        let parent = class_id(minor);
        let kind = leaf.kind;
        // The kernel's default leaf (pfifo 0:) is invisible in dumps, so a
        // class without a visible leaf has the default one.
        if let Some(q) = qdiscs.under(parent).filter(|q| q.msg.handle == handle) {
            if q.kind == kind.kind() {
                if leaf_matches(kind, q.options.as_deref(), leaf.limit) {
                    return Ok(());
                }
                let mut req = Request::new(tc::RTM_NEWQDISC, 0);
                req.push(&TcMsg::new(ifindex, handle, parent).encode());
                req.attr_str(tc::TCA_KIND, kind.kind());
                encode_leaf(&mut req, kind, leaf.limit);
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
        encode_leaf(&mut req, kind, leaf.limit);
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
        // pfifo and bfifo share `struct tc_fifo_qopt` (packets, bytes).
        LeafQdisc::Pfifo | LeafQdisc::Bfifo => tc::encode_pfifo(req, limit),
        LeafQdisc::FqCodel => tc::encode_fq_codel(req, limit),
        // cake's defaults suit a leaf; it has no packet limit.
        LeafQdisc::Cake => {}
    }
}

fn leaf_matches(kind: LeafQdisc, options: Option<&[u8]>, limit: u32) -> bool {
    match kind {
        LeafQdisc::Pfifo | LeafQdisc::Bfifo => {
            options.and_then(tc::decode_pfifo_limit) == Some(limit)
        }
        LeafQdisc::FqCodel => options.and_then(tc::decode_fq_codel_limit) == Some(limit),
        LeafQdisc::Cake => true,
    }
}
