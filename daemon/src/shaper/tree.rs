//! What the shaper is asked to install: the tree of classes for one
//! interface, the leaf qdisc kinds, and what applying reports back; and
//! [`plan`], which checks a tree and orders its classes for installation.

use std::collections::{HashMap, HashSet};
use std::fmt;

use super::tc::{HtbClass, TC_H_ROOT};
use super::{ClassName, MAX_CLASS_MINOR, ROOT_CLASS, ShaperError, class_id};
use crate::policy::Rate;

/// How many classes deep HTB nests below its root class
/// (`TC_HTB_MAXDEPTH` = 8 levels, the root class being the first).
const MAX_DEPTH: usize = 7;

/// The qdisc under each HTB class.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum LeafQdisc {
    /// Plain FIFO with a packet limit; built into every kernel.
    Pfifo,
    /// Flow-queue CoDel (`sch_fq_codel`): fair between flows, low latency.
    FqCodel,
    /// CAKE (`sch_cake`), with its defaults.
    Cake,
    /// Plain FIFO with a byte limit; built into every kernel. What a
    /// queue sized in time is made of where no AQM qdisc exists.
    Bfifo,
}

impl LeafQdisc {
    /// Every kind, in the order "auto" prefers them.
    #[cfg(any(test, feature = "testkit"))]
    pub const ALL: [LeafQdisc; 3] = [LeafQdisc::FqCodel, LeafQdisc::Cake, LeafQdisc::Pfifo];

    /// The kernel's name of the qdisc (`TCA_KIND`).
    pub fn kind(self) -> &'static str {
        match self {
            LeafQdisc::Pfifo => "pfifo",
            LeafQdisc::FqCodel => "fq_codel",
            LeafQdisc::Cake => "cake",
            LeafQdisc::Bfifo => "bfifo",
        }
    }

    /// The kind with the kernel name `kind`, if jatah knows it.
    #[cfg(any(test, feature = "testkit"))]
    pub fn from_kind(kind: &str) -> Option<LeafQdisc> {
        LeafQdisc::ALL
            .into_iter()
            .chain([LeafQdisc::Bfifo])
            .find(|l| l.kind() == kind)
    }

    /// Position in per-kind tables such as the shaper's probe cache.
    pub(super) fn index(self) -> usize {
        match self {
            LeafQdisc::Pfifo => 0,
            LeafQdisc::FqCodel => 1,
            LeafQdisc::Cake => 2,
            LeafQdisc::Bfifo => 3,
        }
    }
}

impl fmt::Display for LeafQdisc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.kind())
    }
}

/// A leaf qdisc: its kind and limit (packets for pfifo and fq_codel,
/// bytes for bfifo; cake ignores it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Leaf {
    pub kind: LeafQdisc,
    pub limit: u32,
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
    /// Guaranteed rate, bits per second (HTB gets bytes, rounded up as by
    /// `Rate::bytes_per_second`).
    pub rate_bps: u64,
    /// Ceiling (rate when borrowing from the root class), bits per second.
    pub ceil_bps: u64,
    /// HTB priority among siblings (0 first): who borrows spare rate
    /// first, and is served first when both may send.
    pub prio: u32,
    /// Bytes the class may send at once above its rate after a quiet
    /// spell (HTB's burst, still within its ceiling); 0: one timer tick
    /// of its rate plus an MTU, as tc would pick.
    pub burst_bytes: u32,
    /// Its leaf qdisc when it has no children; `None`: the tree's
    /// [`HtbTree::leaf`] and [`HtbTree::leaf_limit`].
    pub leaf: Option<Leaf>,
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

/// What [`Shaper::apply`](super::Shaper::apply) did, for the logs.
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
    #[cfg(any(test, feature = "testkit"))]
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

/// A class jatah wants.
#[derive(Debug)]
pub(super) struct Wanted {
    pub(super) minor: u16,
    pub(super) parent: u32,
    pub(super) params: HtbClass,
    /// No class of the tree sits under it: it gets this leaf qdisc.
    pub(super) leaf: Option<Leaf>,
}

/// Checks `tree` and turns it into the classes to install, parents before
/// children: the root class first, then by depth and, within a depth, by
/// minor (so the default class comes first among the top-level classes).
pub(super) fn plan(ifindex: u32, tree: &HtbTree) -> Result<Vec<Wanted>, ShaperError> {
    let invalid = |reason: String| ShaperError::InvalidTree { ifindex, reason };
    // HTB takes bytes per second; the conversion is the policy's, so the
    // class never grants less than the policy says (see
    // `Rate::bytes_per_second`).
    let bytes = |bps: u64, what: &dyn fmt::Display| {
        if bps < 8 {
            Err(invalid(format!(
                "{what}: {bps} bit/s is below the 1 byte/s HTB can express"
            )))
        } else {
            Ok(Rate(bps).bytes_per_second())
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
        if spec.minor <= ROOT_CLASS || spec.minor > MAX_CLASS_MINOR {
            return Err(invalid(format!(
                "{name}: minor must be within 2..={MAX_CLASS_MINOR} (1 is the root class)"
            )));
        }
        if let Some(l) = spec.leaf
            && l.limit == 0
            && l.kind != LeafQdisc::Cake
        {
            return Err(invalid(format!("{name}: its leaf's limit must be at least 1")));
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
        leaf: None,
    }];
    let tree_leaf = Leaf {
        kind: tree.leaf,
        limit: tree.leaf_limit,
    };
    for (_, spec) in ordered {
        let name = ClassName(spec.minor);
        let class = HtbClass::new(bytes(spec.rate_bps, &name)?, bytes(spec.ceil_bps, &name)?);
        want.push(Wanted {
            minor: spec.minor,
            parent: class_id(spec.parent),
            params: HtbClass {
                prio: spec.prio,
                buffer: class
                    .buffer
                    .max(super::tc::ticks_for(class.rate, u64::from(spec.burst_bytes))),
                ..class
            },
            leaf: (!parents.contains(&spec.minor)).then(|| spec.leaf.unwrap_or(tree_leaf)),
        });
    }
    Ok(want)
}
