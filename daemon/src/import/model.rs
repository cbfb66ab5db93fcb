//! What both importers produce before it becomes a policy: groups and OPDs
//! with the rates the source gave (some missing), and the rules that fill
//! in the rest so the result passes `jatah check`. Every rate the import
//! had to choose or change is reported as a warning naming the source line.

use ipnet::IpNet;

use crate::policy::{Direction, Rate};

/// The guarantee an OPD gets when its source gives none (`limit-at=0` on
/// MikroTik, a Min of 0 in LibreQoS): HTB needs a rate above zero, and
/// 128 kbit/s leaves the OPD's interactive lane its floor of 64 kbit/s.
pub const DEFAULT_GUARANTEE: Rate = Rate(128_000);

/// One direction's rates as the source wrote them; `None` when the source
/// gave none (0, "unlimited", or a missing field).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Limits {
    pub guaranteed: Option<Rate>,
    pub ceiling: Option<Rate>,
}

/// Both directions, indexed by [`Direction::index`].
pub type BothLimits = [Limits; 2];

/// A place in an input file, for comments and warnings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    pub file: String,
    /// 1-based; 0 when the whole file is meant.
    pub line: usize,
}

impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.line == 0 {
            write!(f, "{}", self.file)
        } else {
            write!(f, "{}:{}", self.file, self.line)
        }
    }
}

#[derive(Debug, Clone)]
pub struct GroupDraft {
    pub id: String,
    pub name: String,
    pub origin: Origin,
    pub limits: BothLimits,
    pub comments: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct OpdDraft {
    pub id: String,
    pub name: String,
    pub origin: Origin,
    pub subnets: Vec<IpNet>,
    pub limits: BothLimits,
    pub group: Option<String>,
    pub comments: Vec<String>,
    /// Carried as a commented-out `[[opd]]`, outside every sum.
    pub disabled: bool,
}

/// What an importer read: the policy to be, and what it said along the way.
#[derive(Debug, Default)]
pub struct Draft {
    /// Which importer, e.g. "mikrotik"; named in the output's first lines.
    pub format: &'static str,
    /// The input files, for the output's first lines.
    pub sources: Vec<String>,
    pub groups: Vec<GroupDraft>,
    pub opds: Vec<OpdDraft>,
    /// A capacity the source implies (LibreQoS: the root nodes' sum), used
    /// when the command line gives none; with where it came from.
    pub source_capacity: [Option<(Rate, String)>; 2],
    /// What was not carried over or was chosen, with where.
    pub warnings: Vec<(Origin, String)>,
    /// `FILE:LINE: message` lines; any makes the import fail.
    pub errors: Vec<String>,
}

impl Draft {
    pub fn warn(&mut self, origin: &Origin, message: impl std::fmt::Display) {
        self.warnings.push((origin.clone(), message.to_string()));
    }

    /// The warnings as `FILE:LINE: warning: ...`, by file and line; those
    /// about a file as a whole after its lines.
    pub fn warning_lines(&self) -> Vec<String> {
        let mut sorted: Vec<&(Origin, String)> = self.warnings.iter().collect();
        sorted.sort_by_key(|(origin, _)| {
            let file = self.sources.iter().position(|s| *s == origin.file);
            (file, origin.line == 0, origin.line)
        });
        sorted
            .into_iter()
            .map(|(origin, message)| format!("{origin}: warning: {message}"))
            .collect()
    }

    pub fn error(&mut self, origin: &Origin, message: impl std::fmt::Display) {
        self.errors.push(format!("{origin}: {message}"));
    }

    /// Makes every OPD id unique by appending -2, -3, ...; each change is
    /// a warning. (Group ids are made unique as the groups are made, with
    /// [`Draft::group_id`], as the members name them.)
    pub fn unique_ids(&mut self) {
        let mut renames = Vec::new();
        let mut seen = std::collections::HashSet::new();
        for opd in &mut self.opds {
            if let Some(new) = unique(&opd.id, &mut seen) {
                renames.push((opd.origin.clone(), "OPD", opd.id.clone(), new.clone()));
                opd.id = new;
            }
        }
        for (origin, what, old, new) in renames {
            self.warn(
                &origin,
                format!("{what} id \"{old}\" is taken by an earlier entry; this one is \"{new}\""),
            );
        }
    }

    /// Fills in every rate the source left open and brings the rest within
    /// the rules of a policy, warning of each choice. Returns the
    /// capacity per direction.
    pub fn settle(&mut self, flags: [Option<Rate>; 2]) -> [Rate; 2] {
        let mut notes: Vec<(Origin, String)> = Vec::new();
        // Guarantees first: they need no capacity.
        for opd in &mut self.opds {
            let missing: Vec<&str> = Direction::all()
                .into_iter()
                .filter(|d| opd.limits[d.index()].guaranteed.is_none())
                .map(|d| d.as_str())
                .collect();
            for direction in Direction::all() {
                let limits = &mut opd.limits[direction.index()];
                if limits.guaranteed.is_none() {
                    let floor = limits.ceiling.map_or(DEFAULT_GUARANTEE, |c| c.min(DEFAULT_GUARANTEE));
                    limits.guaranteed = Some(floor);
                }
            }
            if !missing.is_empty() && !opd.disabled {
                notes.push((
                    opd.origin.clone(),
                    format!(
                        "OPD {}: no guaranteed {} rate in the source; given {DEFAULT_GUARANTEE} \
                         (HTB needs one above zero)",
                        opd.id,
                        missing.join(" or ")
                    ),
                ));
            }
        }
        for group in &mut self.groups {
            for direction in Direction::all() {
                let members: u64 = self
                    .opds
                    .iter()
                    .filter(|o| !o.disabled && o.group.as_deref() == Some(group.id.as_str()))
                    .map(|o| o.limits[direction.index()].guaranteed.map_or(0, |r| r.0))
                    .sum();
                let members = Rate(members.max(1));
                let limits = &mut group.limits[direction.index()];
                match limits.guaranteed {
                    Some(given) if given >= members => {}
                    Some(given) => {
                        notes.push((
                            group.origin.clone(),
                            format!(
                                "group {}: its {direction} guarantee {given} is less than its \
                                 members' {members}; raised to {members}",
                                group.id
                            ),
                        ));
                        limits.guaranteed = Some(members);
                    }
                    None => limits.guaranteed = Some(members),
                }
            }
        }

        let mut capacity = [Rate(0); 2];
        for direction in Direction::all() {
            let i = direction.index();
            capacity[i] = match (flags[i], &self.source_capacity[i]) {
                (Some(rate), _) => rate,
                (None, Some((rate, why))) => {
                    let origin = Origin { file: self.sources[0].clone(), line: 0 };
                    notes.push((
                        origin,
                        format!(
                            "the {direction} capacity is not in the source; {rate} is {why}: \
                             give --capacity-{direction} with the uplink's contracted rate"
                        ),
                    ));
                    *rate
                }
                (None, None) => {
                    let derived = self.derived_capacity(direction);
                    let origin = Origin { file: self.sources[0].clone(), line: 0 };
                    notes.push((
                        origin,
                        format!(
                            "the {direction} capacity is not in the source; {derived} is the \
                             largest ceiling or the guarantees' sum: give --capacity-{direction} \
                             with the uplink's contracted rate"
                        ),
                    ));
                    derived
                }
            };
        }

        for group in &mut self.groups {
            for direction in Direction::all() {
                let cap = capacity[direction.index()];
                let limits = &mut group.limits[direction.index()];
                let guaranteed = limits.guaranteed.unwrap_or(DEFAULT_GUARANTEE);
                let ceiling = match limits.ceiling {
                    None => {
                        notes.push((
                            group.origin.clone(),
                            format!(
                                "group {}: no {direction} ceiling in the source; given the \
                                 capacity {cap}",
                                group.id
                            ),
                        ));
                        cap
                    }
                    Some(c) if c > cap => {
                        notes.push((
                            group.origin.clone(),
                            format!(
                                "group {}: {direction} ceiling {c} is above the capacity; \
                                 lowered to {cap}",
                                group.id
                            ),
                        ));
                        cap
                    }
                    Some(c) => c,
                };
                limits.ceiling = Some(ceiling.max(guaranteed));
            }
        }

        let groups: Vec<(String, [Rate; 2])> = self
            .groups
            .iter()
            .map(|g| {
                let ceil = |i: usize| g.limits[i].ceiling.unwrap_or(Rate(0));
                (g.id.clone(), [ceil(0), ceil(1)])
            })
            .collect();
        for opd in &mut self.opds {
            let group = opd
                .group
                .as_ref()
                .and_then(|id| groups.iter().find(|(g, _)| g == id));
            let mut opd_notes = Vec::new();
            for direction in Direction::all() {
                let i = direction.index();
                let (limit, holder) = match group {
                    Some((id, ceilings)) => (ceilings[i], format!("its group {id}'s ceiling")),
                    None => (capacity[i], "the capacity".to_string()),
                };
                let limits = &mut opd.limits[i];
                let ceiling = match limits.ceiling {
                    None => {
                        opd_notes.push((
                            opd.origin.clone(),
                            format!(
                                "OPD {}: unlimited {direction} in the source; ceiling set to \
                                 {holder} {limit}",
                                opd.id
                            ),
                        ));
                        limit
                    }
                    Some(c) if c > limit => {
                        opd_notes.push((
                            opd.origin.clone(),
                            format!(
                                "OPD {}: {direction} ceiling {c} is above {holder}; lowered to \
                                 {limit}",
                                opd.id
                            ),
                        ));
                        limit
                    }
                    Some(c) => c,
                };
                let guaranteed = limits.guaranteed.unwrap_or(DEFAULT_GUARANTEE);
                if guaranteed > ceiling {
                    opd_notes.push((
                        opd.origin.clone(),
                        format!(
                            "OPD {}: {direction} guarantee {guaranteed} is above its ceiling; \
                             lowered to {ceiling}",
                            opd.id
                        ),
                    ));
                    limits.guaranteed = Some(ceiling);
                }
                limits.ceiling = Some(ceiling);
            }
            if !opd.disabled {
                notes.extend(opd_notes);
            }
        }
        for (origin, note) in notes {
            self.warn(&origin, note);
        }
        capacity
    }

    /// A capacity when neither the command line nor the source gives one:
    /// the largest ceiling written anywhere, or the sum of the guarantees
    /// the gateway holds, whichever is larger.
    fn derived_capacity(&self, direction: Direction) -> Rate {
        let i = direction.index();
        let active = || self.opds.iter().filter(|o| !o.disabled);
        let ceilings = active()
            .map(|o| o.limits[i].ceiling)
            .chain(self.groups.iter().map(|g| g.limits[i].ceiling))
            .flatten()
            .max()
            .unwrap_or(Rate(0));
        let held: u64 = self
            .groups
            .iter()
            .map(|g| g.limits[i].guaranteed.map_or(0, |r| r.0))
            .chain(
                active()
                    .filter(|o| o.group.is_none())
                    .map(|o| o.limits[i].guaranteed.map_or(0, |r| r.0)),
            )
            .sum();
        ceilings.max(Rate(held)).max(DEFAULT_GUARANTEE)
    }
}

impl Draft {
    /// A group id from a name, unique among `seen` (with a warning when
    /// the plain one is taken).
    pub fn group_id(
        &mut self,
        name: &str,
        fallback: &str,
        origin: &Origin,
        seen: &mut std::collections::HashSet<String>,
    ) -> String {
        let id = slug(name, fallback);
        match unique(&id, seen) {
            None => id,
            Some(new) => {
                self.warn(
                    origin,
                    format!("group id \"{id}\" is taken by an earlier group; this one is \"{new}\""),
                );
                new
            }
        }
    }
}

fn unique(id: &str, seen: &mut std::collections::HashSet<String>) -> Option<String> {
    if seen.insert(id.to_string()) {
        return None;
    }
    let mut n = 2;
    loop {
        let suffix = format!("-{n}");
        let mut base = id.to_string();
        base.truncate(32 - suffix.len());
        let candidate = format!("{}{suffix}", base.trim_end_matches('-'));
        if seen.insert(candidate.clone()) {
            return Some(candidate);
        }
        n += 1;
    }
}

/// An id for a policy from a name: a-z, 0-9 and '-', at most 32
/// characters ("Dinas Kesehatan" -> "dinas-kesehatan"); `fallback` when
/// nothing of the name is left.
pub fn slug(name: &str, fallback: &str) -> String {
    let mut id = String::new();
    for c in name.chars() {
        let c = c.to_ascii_lowercase();
        if c.is_ascii_lowercase() || c.is_ascii_digit() {
            id.push(c);
        } else if !id.is_empty() && !id.ends_with('-') {
            id.push('-');
        }
    }
    id.truncate(32);
    let id = id.trim_end_matches('-').to_string();
    if id.is_empty() { fallback.to_string() } else { id }
}

/// An address list entry as a subnet: a bare address is one host (/32 or
/// /128); a subnet with host bits set keeps its network, with a note.
pub fn subnet(text: &str) -> Option<(IpNet, Option<String>)> {
    if let Ok(net) = text.parse::<IpNet>() {
        let trunc = net.trunc();
        let note = (trunc != net).then(|| format!("{net} has host bits set; carried as {trunc}"));
        return Some((trunc, note));
    }
    text.parse::<std::net::IpAddr>()
        .ok()
        .map(|addr| (IpNet::from(addr), None))
}
