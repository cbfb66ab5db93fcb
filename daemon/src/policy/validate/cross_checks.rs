//! Checks across sections, run once every table has been read: unique
//! ids, group references, overlapping subnets, the data path's limits and
//! whether allocations fit the capacity that holds them.

use std::collections::HashMap;

use ipnet::IpNet;
use jatah_common::{MAX_OPDS, MAX_PREFIXES};

use super::checker::{Checker, Span, closest};
use super::gateway::GatewayDraft;
use super::groups::GroupDraft;
use super::opds::OpdDraft;
use crate::policy::{Direction, Rate};

impl Checker<'_> {
    /// Ids of one kind (`what` is "id" or "group id", of an `owner` "OPD"
    /// or "group") must be unique; each repeat is reported at its value.
    pub(super) fn duplicate_ids<'d>(
        &mut self,
        ids: impl Iterator<Item = &'d (String, Span)>,
        what: &str,
        owner: &str,
    ) {
        let mut seen: HashMap<&str, &Span> = HashMap::new();
        for (id, span) in ids {
            if let Some(first) = seen.get(id.as_str()) {
                let first_line = self.line(first.start);
                self.error(
                    span,
                    format!(
                        "duplicate {what} \"{id}\": the {owner} at line {first_line} already uses \
                         it; every {owner} needs its own id"
                    ),
                );
            } else {
                seen.insert(id, span);
            }
        }
    }

    /// Every `group = "..."` of an OPD must name a `[[group]]`.
    pub(super) fn group_references(&mut self, opds: &[OpdDraft], groups: &[GroupDraft]) {
        let ids: Vec<&str> = groups
            .iter()
            .filter_map(|group| group.id.as_ref().map(|(id, _)| id.as_str()))
            .collect();
        for (name, span) in opds.iter().filter_map(|opd| opd.group.as_ref()) {
            // A group whose own id is invalid is reported there, once.
            let written = groups
                .iter()
                .any(|group| group.label.as_deref() == Some(name.as_str()));
            if ids.contains(&name.as_str()) || written {
                continue;
            }
            let mut message = format!("unknown group \"{name}\"");
            if let Some(suggestion) = closest(name, &ids) {
                message.push_str(&format!(" (did you mean \"{suggestion}\"?)"));
            }
            if ids.is_empty() {
                message.push_str(
                    "; define it in a [[group]] table with its id, name, download and upload",
                );
            } else {
                message.push_str(&format!("; the groups are: {}", ids.join(", ")));
            }
            self.error(span, message);
        }
    }

    /// Every address must map to one OPD, or the classifier's choice would
    /// depend on lookup order. Each subnet is reported once, against the
    /// first earlier subnet it overlaps (see [`first_overlaps`]).
    pub(super) fn overlapping_subnets(&mut self, opds: &[OpdDraft]) {
        let all: Vec<(usize, &IpNet, &Span)> = opds
            .iter()
            .enumerate()
            .flat_map(|(index, opd)| {
                opd.subnets
                    .iter()
                    .map(move |(net, span)| (index, net, span))
            })
            .collect();
        let nets: Vec<IpNet> = all.iter().map(|&(_, net, _)| *net).collect();
        for (later, earlier) in first_overlaps(&nets).into_iter().enumerate() {
            let Some(earlier) = earlier else {
                continue;
            };
            let (later_opd, net, span) = all[later];
            let (earlier_opd, other, other_span) = all[earlier];
            let other_line = self.line(other_span.start);
            let message = if earlier_opd == later_opd {
                if net == other {
                    format!("{net} is listed twice in this OPD (also on line {other_line})")
                } else {
                    format!(
                        "{net} overlaps {other} listed earlier in this OPD (line {other_line}); \
                         list each address range once"
                    )
                }
            } else {
                let owner = match &opds[earlier_opd].label {
                    Some(label) => format!("of OPD \"{label}\""),
                    None => "of another OPD".to_string(),
                };
                format!(
                    "{net} overlaps {other} {owner} (line {other_line}); an address can belong \
                     to only one OPD"
                )
            };
            self.error(span, message);
        }
    }

    /// What the data path has room for: [`MAX_OPDS`] OPD slots and
    /// [`MAX_PREFIXES`] prefixes in each family's table. `jatah check`, a
    /// reload and `POST /api/v1/policy/plan` read a policy through this same
    /// check as `jatah run`, so a policy one accepts the others accept.
    pub(super) fn data_path_limits(&mut self, opds: &[OpdDraft]) {
        if let Some(extra) = opds.get(MAX_OPDS as usize) {
            let over = opds.len() - MAX_OPDS as usize;
            self.error(
                &extra.header,
                format!(
                    "{} OPDs, more than the {MAX_OPDS} jatah's data path has slots for; \
                     remove {over} (this is the first beyond the limit) or merge OPDs that \
                     share an allocation",
                    opds.len()
                ),
            );
        }
        for (family, v6) in [("IPv4", false), ("IPv6", true)] {
            let mut subnets = opds
                .iter()
                .flat_map(|opd| &opd.subnets)
                .filter(|(net, _)| matches!(net, IpNet::V6(_)) == v6);
            let count = subnets.clone().count();
            if let Some((_, span)) = subnets.nth(MAX_PREFIXES as usize) {
                self.error(
                    span,
                    format!(
                        "{count} {family} subnets in all OPDs, more than the {MAX_PREFIXES} \
                         jatah's {family} prefix table holds; this is the first beyond the \
                         limit: merge adjacent subnets into wider prefixes"
                    ),
                );
            }
        }
    }

    /// Allocations against what holds them: a group's against the gateway,
    /// an OPD's against its group, or against the gateway when it has none.
    /// The gateway's capacity holds every group's guarantee and every
    /// ungrouped OPD's; a group's guarantee holds its members'.
    pub(super) fn capacities(
        &mut self,
        gateway: &GatewayDraft,
        opds: &[OpdDraft],
        groups: &[GroupDraft],
    ) {
        // The group of each OPD, as an index into `groups`, found by the id
        // as written (a group with an invalid id still holds its members);
        // the first of duplicate ids wins (the duplicate is reported on its
        // own). An OPD naming no known group (reported as unknown) takes
        // part in no sum: where its guarantee belongs is not known.
        let mut index_of: HashMap<&str, usize> = HashMap::new();
        for (index, group) in groups.iter().enumerate() {
            if let Some(label) = &group.label {
                index_of.entry(label.as_str()).or_insert(index);
            }
        }
        let member_of: Vec<Membership> = opds
            .iter()
            .map(|opd| match &opd.group {
                None => Membership::Ungrouped,
                Some((id, _)) => index_of
                    .get(id.as_str())
                    .map_or(Membership::Unknown, |&g| Membership::Member(g)),
            })
            .collect();
        let as_rate = |bits: u128| Rate(u64::try_from(bits).unwrap_or(u64::MAX));

        for (index, direction) in Direction::all().into_iter().enumerate() {
            let Some((capacity, capacity_span)) = &gateway.capacity[index] else {
                continue;
            };
            let capacity_line = self.line(capacity_span.start);
            let over_capacity = |ceiling: &Rate| {
                format!(
                    "ceiling {ceiling} exceeds the gateway's {direction} capacity {capacity} \
                     (line {capacity_line}); write at most \"{capacity}\""
                )
            };
            // What the capacity holds: (sum, groups counted, OPDs counted).
            let mut sum: u128 = 0;
            let mut group_count = 0usize;
            let mut opd_count = 0usize;
            for group in groups {
                let allocation = &group.allocations[index];
                if let Some((ceiling, span)) = &allocation.ceiling
                    && ceiling > capacity
                {
                    self.error(span, over_capacity(ceiling));
                }
                if let Some((guaranteed, _)) = &allocation.guaranteed {
                    sum += u128::from(guaranteed.0);
                    group_count += 1;
                }
            }
            // What each group's guarantee holds: (sum, members counted).
            let mut member_sums = vec![(0u128, 0usize); groups.len()];
            for (opd, member_of) in opds.iter().zip(&member_of) {
                let allocation = &opd.allocations[index];
                let group = match member_of {
                    Membership::Member(g) => Some(&groups[*g]),
                    _ => None,
                };
                if let Some((ceiling, span)) = &allocation.ceiling {
                    // The tighter limit is reported: the group's ceiling
                    // unless that one is itself above the capacity.
                    let group_ceiling = group.and_then(|group| {
                        let (group_ceiling, group_span) =
                            group.allocations[index].ceiling.as_ref()?;
                        let id = group.label.as_ref()?;
                        (group_ceiling <= capacity).then_some((group_ceiling, group_span, id))
                    });
                    match group_ceiling {
                        Some((group_ceiling, group_span, id)) if ceiling > group_ceiling => {
                            let group_line = self.line(group_span.start);
                            self.error(
                                span,
                                format!(
                                    "ceiling {ceiling} exceeds the {direction} ceiling \
                                     {group_ceiling} of group \"{id}\" (line {group_line}); an \
                                     OPD cannot borrow beyond its group: write at most \
                                     \"{group_ceiling}\""
                                ),
                            );
                        }
                        _ if ceiling > capacity => self.error(span, over_capacity(ceiling)),
                        _ => {}
                    }
                }
                if let Some((guaranteed, _)) = &allocation.guaranteed {
                    match member_of {
                        Membership::Member(g) => {
                            member_sums[*g].0 += u128::from(guaranteed.0);
                            member_sums[*g].1 += 1;
                        }
                        Membership::Ungrouped => {
                            sum += u128::from(guaranteed.0);
                            opd_count += 1;
                        }
                        Membership::Unknown => {}
                    }
                }
            }
            for (group, (members_sum, members)) in groups.iter().zip(member_sums) {
                let (Some((guaranteed, span)), Some(id)) =
                    (&group.allocations[index].guaranteed, &group.label)
                else {
                    continue;
                };
                if members_sum > u128::from(guaranteed.0) {
                    self.error(
                        span,
                        format!(
                            "the {direction} guarantees of the {} in group \"{id}\" sum to {}, \
                             more than the group's guaranteed {guaranteed} by {}; lower some of \
                             theirs or raise the group's",
                            counted(members, "OPD"),
                            as_rate(members_sum),
                            as_rate(members_sum - u128::from(guaranteed.0))
                        ),
                    );
                }
            }
            if sum > u128::from(capacity.0) {
                let over = sum - u128::from(capacity.0);
                let what = match (group_count, opd_count) {
                    (0, opds) => format!("{opds} OPDs"),
                    (groups, 0) => counted(groups, "group"),
                    (groups, opds) => format!(
                        "{} and {} outside groups",
                        counted(groups, "group"),
                        counted(opds, "OPD")
                    ),
                };
                self.error(
                    capacity_span,
                    format!(
                        "the {direction} guarantees of {what} sum to {}, more than the \
                         {direction} capacity {capacity} by {}; lower some guarantees or raise \
                         the capacity",
                        as_rate(sum),
                        as_rate(over)
                    ),
                );
            }
        }
    }
}

/// Where an OPD's allocation comes from, for the capacity checks.
enum Membership {
    /// No `group` key: straight from the gateway's capacity.
    Ungrouped,
    /// From the group with this index.
    Member(usize),
    /// It names a group that does not exist.
    Unknown,
}

/// "1 OPD", "3 OPDs", "2 groups".
fn counted(count: usize, noun: &str) -> String {
    format!("{count} {noun}{}", if count == 1 { "" } else { "s" })
}

/// For each prefix of `nets`, the index of the first earlier one (lowest
/// index) it overlaps, if any: the answer of comparing every pair, in
/// O(n log n), so that a policy of thousands of OPDs validates at once.
///
/// Two prefixes overlap exactly when one contains the other, so the
/// prefixes of one family form a forest under containment. Sorted by
/// (network address, prefix length, index), the prefixes a prefix contains
/// follow it in one run (up to the first network beyond its last address)
/// and the ones containing it are the chain still open before it. One
/// forward pass gives each prefix the lowest index among those containing
/// it, one backward pass the lowest among those it contains; the smaller
/// of the two, when below its own index, is its first earlier overlap.
pub(super) fn first_overlaps(nets: &[IpNet]) -> Vec<Option<usize>> {
    let mut first = vec![None; nets.len()];
    for v6 in [false, true] {
        // (first address, last address, prefix length, index)
        let mut family: Vec<(u128, u128, u8, usize)> = nets
            .iter()
            .enumerate()
            .filter(|(_, net)| matches!(net, IpNet::V6(_)) == v6)
            .map(|(index, net)| {
                let net = net.trunc();
                (
                    address(net.network()),
                    address(net.broadcast()),
                    net.prefix_len(),
                    index,
                )
            })
            .collect();
        family.sort_unstable_by_key(|&(start, _, len, index)| (start, len, index));
        // Forward: the chain of prefixes containing this one, each with
        // the lowest index from the chain's root down to it.
        let mut containing = vec![usize::MAX; family.len()];
        let mut chain: Vec<(u128, usize)> = Vec::new();
        for (at, &(start, end, _, index)) in family.iter().enumerate() {
            while chain.last().is_some_and(|&(chain_end, _)| chain_end < start) {
                chain.pop();
            }
            let lowest = chain.last().map_or(usize::MAX, |&(_, lowest)| lowest);
            containing[at] = lowest;
            chain.push((end, lowest.min(index)));
        }
        // Backward: the trees after this prefix, each with its lowest
        // index; those starting within it are the ones it contains.
        let mut trees: Vec<(u128, usize)> = Vec::new();
        for (at, &(start, end, _, index)) in family.iter().enumerate().rev() {
            let mut contained = usize::MAX;
            while let Some(&(tree_start, lowest)) = trees.last() {
                if tree_start > end {
                    break;
                }
                contained = contained.min(lowest);
                trees.pop();
            }
            trees.push((start, contained.min(index)));
            let earliest = containing[at].min(contained);
            if earliest < index {
                first[index] = Some(earliest);
            }
        }
    }
    first
}

/// An address as a number, IPv4 and IPv6 alike (families never meet).
fn address(ip: std::net::IpAddr) -> u128 {
    match ip {
        std::net::IpAddr::V4(a) => u128::from(u32::from(a)),
        std::net::IpAddr::V6(a) => u128::from(a),
    }
}
