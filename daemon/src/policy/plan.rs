//! What a policy change would do: OPDs added, removed, changed (rates,
//! subnets, names, probes, groups), groups added, removed and changed,
//! gateway settings, and what needs a restart. Used by `jatah plan`
//! (nothing changes) and by every reload (logged).
//!
//! Everything a reload changes, it changes in place, with one exception
//! the plan names: HTB cannot move a class to another parent, so an OPD
//! that joins, leaves or changes groups has its HTB classes deleted and
//! created again (listed in [`Plan::recreated`]). HTB's statistics for
//! those classes restart and the packets queued in them at that instant
//! are dropped (TCP sends them again); jatah's own counters never restart,
//! and no other class is touched.

use std::collections::{BTreeMap, BTreeSet};

use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::gateway::group_minors;
use crate::policy::{Direction, Policy};

/// The changes to one OPD or group, as sentences.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct OpdChange {
    pub id: String,
    pub changes: Vec<String>,
}

/// The difference between the policy in force and a new one.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Plan {
    pub added: Vec<OpdChange>,
    pub removed: Vec<String>,
    pub changed: Vec<OpdChange>,
    /// Gateway-wide changes applied in place (capacity, leaf, diagnosis).
    pub gateway: Vec<String>,
    /// Changes a reload cannot make (interfaces): they need a restart.
    pub restart_needed: Vec<String>,
    /// Groups added, with their allocation.
    #[serde(default)]
    pub groups_added: Vec<OpdChange>,
    /// Ids of the groups removed.
    #[serde(default)]
    pub groups_removed: Vec<String>,
    /// Groups whose name or allocation changes (in place).
    #[serde(default)]
    pub groups_changed: Vec<OpdChange>,
    /// OPDs whose HTB classes are deleted and created again because their
    /// parent class changes (they join, leave or change groups): HTB cannot
    /// move a class. Everything not listed here keeps its classes.
    #[serde(default)]
    pub recreated: Vec<String>,
}

impl Plan {
    pub fn is_empty(&self) -> bool {
        self.added.is_empty()
            && self.removed.is_empty()
            && self.changed.is_empty()
            && self.gateway.is_empty()
            && self.restart_needed.is_empty()
            && self.groups_added.is_empty()
            && self.groups_removed.is_empty()
            && self.groups_changed.is_empty()
            && self.recreated.is_empty()
    }

    /// One line for logs: "2 added, 1 removed, 3 changed, 0 gateway
    /// change(s)", followed by the groups' changes and the classes
    /// recreated when there are any.
    pub fn summary(&self) -> String {
        if self.is_empty() {
            return "no change".into();
        }
        let mut line = format!(
            "{} added, {} removed, {} changed, {} gateway change(s)",
            self.added.len(),
            self.removed.len(),
            self.changed.len(),
            self.gateway.len()
        );
        if !(self.groups_added.is_empty()
            && self.groups_removed.is_empty()
            && self.groups_changed.is_empty())
        {
            line.push_str(&format!(
                "; groups: {} added, {} removed, {} changed",
                self.groups_added.len(),
                self.groups_removed.len(),
                self.groups_changed.len()
            ));
        }
        if !self.recreated.is_empty() {
            line.push_str(&format!(
                "; classes of {} OPD(s) recreated",
                self.recreated.len()
            ));
        }
        line
    }

    /// A readable table, like `terraform plan`.
    pub fn render(&self) -> String {
        if self.is_empty() {
            return "No changes: the policy in force already matches.\n".into();
        }
        let mut out = String::new();
        for line in &self.restart_needed {
            out.push_str(&format!(
                "! {line} (needs a restart of jatah; a reload refuses it)\n"
            ));
        }
        for g in &self.gateway {
            out.push_str(&format!("~ gateway: {g}\n"));
        }
        for a in &self.groups_added {
            out.push_str(&format!("+ group {}: {}\n", a.id, a.changes.join("; ")));
        }
        for r in &self.groups_removed {
            out.push_str(&format!(
                "- group {r}: removed (its OPDs, unless they join another group, go under the \
                 gateway's root class)\n"
            ));
        }
        for c in &self.groups_changed {
            out.push_str(&format!("~ group {}:\n", c.id));
            for ch in &c.changes {
                out.push_str(&format!("    {ch}\n"));
            }
        }
        for a in &self.added {
            out.push_str(&format!("+ {}: {}\n", a.id, a.changes.join("; ")));
        }
        for r in &self.removed {
            out.push_str(&format!(
                "- {r}: removed (its counters are scraped once more, then its slot is freed)\n"
            ));
        }
        for c in &self.changed {
            out.push_str(&format!("~ {}:\n", c.id));
            for ch in &c.changes {
                out.push_str(&format!("    {ch}\n"));
            }
        }
        if !self.recreated.is_empty() {
            out.push_str(&format!(
                "\nRecreated: {}. HTB cannot move a class to another parent, so these OPDs' \
                 classes are deleted and created again under their new parent: HTB's statistics \
                 for them restart and what is queued in them at that instant is dropped; \
                 jatah's counters continue. Every other class is changed in place or left \
                 alone.\n",
                self.recreated.join(", ")
            ));
        }
        out.push_str(&format!("\nPlan: {}.\n", self.summary()));
        out
    }
}

/// "none" or the group's id, for sentences.
fn group_name(group: Option<&str>) -> &str {
    group.unwrap_or("none")
}

/// One group's allocation, for the added line.
fn group_line(policy: &Policy, id: &str) -> String {
    let g = policy.group(id).expect("present");
    format!(
        "download {}..{}, upload {}..{}",
        g.download.guaranteed, g.download.ceiling, g.upload.guaranteed, g.upload.ceiling
    )
}

/// Rate changes between two allocations of an OPD or group, as sentences.
fn allocation_changes(
    before: impl Fn(Direction) -> crate::policy::Allocation,
    after: impl Fn(Direction) -> crate::policy::Allocation,
) -> Vec<String> {
    let mut ch = Vec::new();
    for d in Direction::all() {
        let (a, b) = (before(d), after(d));
        if a.guaranteed != b.guaranteed {
            ch.push(format!(
                "{} guaranteed {} -> {}",
                d.as_str(),
                a.guaranteed,
                b.guaranteed
            ));
        }
        if a.ceiling != b.ceiling {
            ch.push(format!(
                "{} ceiling {} -> {}",
                d.as_str(),
                a.ceiling,
                b.ceiling
            ));
        }
    }
    ch
}

/// Groups added, removed and changed; returns the groups whose HTB class
/// moves to another minor (see `gateway::group_minors`), whose members'
/// classes are therefore created again too.
fn diff_groups(old: &Policy, new: &Policy, plan: &mut Plan) -> BTreeSet<String> {
    let (old_minors, new_minors) = (group_minors(old), group_minors(new));
    let mut moved = BTreeSet::new();
    for g in &new.groups {
        let Some(before) = old.group(&g.id) else {
            plan.groups_added.push(OpdChange {
                id: g.id.clone(),
                changes: vec![group_line(new, &g.id)],
            });
            continue;
        };
        let mut ch = Vec::new();
        if before.name != g.name {
            ch.push(format!("name {:?} -> {:?}", before.name, g.name));
        }
        ch.extend(allocation_changes(
            |d| *before.allocation(d),
            |d| *g.allocation(d),
        ));
        if let (Some(&from), Some(&to)) = (old_minors.get(&g.id), new_minors.get(&g.id))
            && from != to
        {
            let taker = new_minors
                .iter()
                .find(|&(_, &minor)| minor == from)
                .map(|(id, _)| id.as_str())
                .unwrap_or("another group");
            ch.push(format!(
                "its HTB class moves from 1:{from:x} to 1:{to:x} (group {taker}'s id takes \
                 1:{from:x}): the class and its OPDs' classes are created again"
            ));
            moved.insert(g.id.clone());
        }
        if !ch.is_empty() {
            plan.groups_changed.push(OpdChange {
                id: g.id.clone(),
                changes: ch,
            });
        }
    }
    for g in &old.groups {
        if new.group(&g.id).is_none() {
            plan.groups_removed.push(g.id.clone());
        }
    }
    moved
}

fn allocation_line(policy: &Policy, id: &str) -> String {
    let o = policy.opd(id).expect("present");
    let group = o
        .group
        .as_ref()
        .map(|g| format!(", in group {g}"))
        .unwrap_or_default();
    format!(
        "download {}..{}, upload {}..{}, subnets {}{group}",
        o.download.guaranteed,
        o.download.ceiling,
        o.upload.guaranteed,
        o.upload.ceiling,
        o.subnets
            .iter()
            .map(|s| s.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    )
}

/// What applying `new` over `old` changes.
pub fn diff(old: &Policy, new: &Policy) -> Plan {
    let mut plan = Plan::default();
    let (og, ng) = (&old.gateway, &new.gateway);
    if og.wan != ng.wan {
        plan.restart_needed
            .push(format!("wan {} -> {}", og.wan, ng.wan));
    }
    if og.lan != ng.lan {
        plan.restart_needed
            .push(format!("lan {:?} -> {:?}", og.lan, ng.lan));
    }
    for d in Direction::all() {
        if og.capacity(d) != ng.capacity(d) {
            plan.gateway.push(format!(
                "{} capacity {} -> {}",
                d.as_str(),
                og.capacity(d),
                ng.capacity(d)
            ));
        }
    }
    if og.leaf_qdisc != ng.leaf_qdisc {
        plan.gateway.push(format!(
            "leaf_qdisc {} -> {}",
            og.leaf_qdisc.as_str(),
            ng.leaf_qdisc.as_str()
        ));
    }
    if og.leaf_limit != ng.leaf_limit {
        plan.gateway
            .push(format!("leaf_limit {} -> {}", og.leaf_limit, ng.leaf_limit));
    }
    if og.mark_mask != ng.mark_mask {
        plan.gateway.push(format!(
            "mark_mask {:#x} -> {:#x}",
            og.mark_mask, ng.mark_mask
        ));
    }
    if og.timezone != ng.timezone {
        plan.gateway
            .push(format!("timezone {} -> {}", og.timezone, ng.timezone));
    }
    let (os, ns) = (og.shaping, ng.shaping);
    let changes = [
        ("interactive", os.interactive.to_string(), ns.interactive.to_string()),
        (
            "interactive_percent",
            os.interactive_percent.to_string(),
            ns.interactive_percent.to_string(),
        ),
        (
            "boost_new_connections",
            os.boost_new_connections.to_string(),
            ns.boost_new_connections.to_string(),
        ),
        ("queue_target", ms_or_off(os.queue_target_ms), ms_or_off(ns.queue_target_ms)),
        (
            "queue_floor",
            os.queue_floor_bytes.to_string(),
            ns.queue_floor_bytes.to_string(),
        ),
        ("adapt", os.adapt.to_string(), ns.adapt.to_string()),
    ];
    for (key, was, now) in changes {
        if was != now {
            plan.gateway.push(format!("{key} {was} -> {now}"));
        }
    }
    if old.diagnosis != new.diagnosis {
        plan.gateway.push("diagnosis settings changed".into());
    }
    if old.schedules != new.schedules {
        plan.gateway.push("schedules changed".into());
    }
    let moved_groups = diff_groups(old, new, &mut plan);

    // Where every subnet lived before, to say "moved from X".
    let owner: BTreeMap<IpNet, &str> = old
        .opds
        .iter()
        .flat_map(|o| o.subnets.iter().map(move |s| (*s, o.id.as_str())))
        .collect();
    for o in &new.opds {
        let Some(before) = old.opd(&o.id) else {
            plan.added.push(OpdChange {
                id: o.id.clone(),
                changes: vec![allocation_line(new, &o.id)],
            });
            continue;
        };
        let mut ch = Vec::new();
        if before.name != o.name {
            ch.push(format!("name {:?} -> {:?}", before.name, o.name));
        }
        ch.extend(allocation_changes(
            |d| *before.allocation(d),
            |d| *o.allocation(d),
        ));
        if before.group != o.group {
            ch.push(format!(
                "group {} -> {}: its HTB classes are created again under the new parent (HTB \
                 cannot move a class)",
                group_name(before.group.as_deref()),
                group_name(o.group.as_deref())
            ));
            plan.recreated.push(o.id.clone());
        } else if let Some(group) = o.group.as_ref().filter(|g| moved_groups.contains(*g)) {
            ch.push(format!(
                "its HTB classes are created again: the class of group {group} moves"
            ));
            plan.recreated.push(o.id.clone());
        }
        for s in &o.subnets {
            if !before.subnets.contains(s) {
                match owner.get(s) {
                    Some(from) if *from != o.id => ch.push(format!("subnet {s} moved from {from}")),
                    _ => ch.push(format!("subnet {s} added")),
                }
            }
        }
        for s in &before.subnets {
            if !o.subnets.contains(s) {
                let to = new
                    .opds
                    .iter()
                    .find(|x| x.id != o.id && x.subnets.contains(s));
                match to {
                    Some(t) => ch.push(format!("subnet {s} moved to {}", t.id)),
                    None => ch.push(format!("subnet {s} removed")),
                }
            }
        }
        if before.probe != o.probe {
            ch.push(format!(
                "probe {} -> {}",
                before
                    .probe
                    .map(|p| p.to_string())
                    .unwrap_or_else(|| "none".into()),
                o.probe
                    .map(|p| p.to_string())
                    .unwrap_or_else(|| "none".into())
            ));
        }
        if before.interface != o.interface {
            let name = |i: &Option<String>| i.clone().unwrap_or_else(|| "anywhere".into());
            ch.push(format!(
                "interface {} -> {}",
                name(&before.interface),
                name(&o.interface)
            ));
        }
        if !ch.is_empty() {
            plan.changed.push(OpdChange {
                id: o.id.clone(),
                changes: ch,
            });
        }
    }
    for o in &old.opds {
        if new.opd(&o.id).is_none() {
            plan.removed.push(o.id.clone());
        }
    }
    plan
}

/// A queue target as the policy writes it.
fn ms_or_off(ms: u32) -> String {
    if ms == 0 {
        "\"off\"".into()
    } else {
        format!("\"{ms}ms\"")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = r#"
[gateway]
wan = "eth0"
lan = ["eth1"]
download = "100M"
upload = "50M"

[[opd]]
id = "dinkes"
name = "Dinas Kesehatan"
subnets = ["10.20.1.0/24", "10.20.9.0/24"]
download = { guaranteed = "20M", ceiling = "40M" }
upload = { guaranteed = "5M", ceiling = "10M" }

[[opd]]
id = "bappeda"
name = "Bappeda"
subnets = ["10.20.2.0/24"]
download = { guaranteed = "10M", ceiling = "20M" }
upload = { guaranteed = "5M", ceiling = "10M" }
"#;

    fn p(s: &str) -> Policy {
        crate::policy::parse(s, "t.toml").unwrap()
    }

    #[test]
    fn the_same_policy_plans_nothing() {
        let plan = diff(&p(BASE), &p(BASE));
        assert!(plan.is_empty());
        assert!(plan.render().contains("No changes"));
    }

    #[test]
    fn shaping_settings_are_changes_a_reload_applies() {
        let new = BASE.replace(
            "upload = \"50M\"\n",
            "upload = \"50M\"\ninteractive = false\nboost_new_connections = false\n\
             queue_target = \"25ms\"\nadapt = false\n",
        );
        let plan = diff(&p(BASE), &p(&new));
        assert!(!plan.is_empty());
        assert_eq!(
            plan.gateway,
            [
                "interactive true -> false",
                "boost_new_connections true -> false",
                "queue_target \"off\" -> \"25ms\"",
                "adapt true -> false"
            ]
        );
    }

    #[test]
    fn binding_an_opd_to_an_interface_is_named() {
        let new = BASE.replace(
            "id = \"bappeda\"\n",
            "id = \"bappeda\"\ninterface = \"eth1.20\"\n",
        );
        let plan = diff(&p(BASE), &p(&new));
        let bappeda = plan.changed.iter().find(|c| c.id == "bappeda").unwrap();
        assert_eq!(bappeda.changes, vec!["interface anywhere -> eth1.20".to_string()]);
    }

    #[test]
    fn every_kind_of_change_is_named() {
        let new = BASE
            .replace("ceiling = \"40M\"", "ceiling = \"60M\"")
            .replace("\"10.20.1.0/24\", \"10.20.9.0/24\"", "\"10.20.1.0/24\"")
            .replace(
                "subnets = [\"10.20.2.0/24\"]",
                "subnets = [\"10.20.2.0/24\", \"10.20.9.0/24\"]",
            )
            .replace("name = \"Bappeda\"", "name = \"Bapperida\"")
            .replace("download = \"100M\"", "download = \"200M\"")
            + "\n[[opd]]\nid = \"bpkad\"\nname = \"BPKAD\"\nsubnets = [\"10.20.3.0/24\"]\n\
               download = { guaranteed = \"5M\", ceiling = \"10M\" }\nupload = { guaranteed = \"1M\", ceiling = \"5M\" }\n";
        let plan = diff(&p(BASE), &p(&new));
        assert_eq!(plan.added.len(), 1);
        assert_eq!(plan.added[0].id, "bpkad");
        assert!(plan.removed.is_empty());
        let dinkes = plan.changed.iter().find(|c| c.id == "dinkes").unwrap();
        assert!(
            dinkes
                .changes
                .contains(&"download ceiling 40M -> 60M".to_string()),
            "{dinkes:?}"
        );
        assert!(
            dinkes
                .changes
                .contains(&"subnet 10.20.9.0/24 moved to bappeda".to_string())
        );
        let bappeda = plan.changed.iter().find(|c| c.id == "bappeda").unwrap();
        assert!(
            bappeda
                .changes
                .contains(&"subnet 10.20.9.0/24 moved from dinkes".to_string())
        );
        assert!(bappeda.changes.iter().any(|c| c.starts_with("name")));
        assert_eq!(
            plan.gateway,
            vec!["download capacity 100M -> 200M".to_string()]
        );
        let text = plan.render();
        assert!(
            text.contains("+ bpkad")
                && text.contains("~ dinkes:")
                && text.contains("Plan: 1 added")
        );
    }

    #[test]
    fn removals_and_interface_changes_are_reported() {
        let without = BASE
            .split("[[opd]]\nid = \"bappeda\"")
            .next()
            .unwrap()
            .replace("lan = [\"eth1\"]", "lan = [\"eth2\"]");
        let plan = diff(&p(BASE), &p(&without));
        assert_eq!(plan.removed, vec!["bappeda".to_string()]);
        assert_eq!(plan.restart_needed.len(), 1);
        assert!(plan.render().contains("needs a restart"));
    }

    /// BASE with a group holding dinkes (and bappeda too when `both`).
    fn grouped(id: &str, download_ceiling: &str, both: bool) -> String {
        let mut text = BASE.replace(
            "subnets = [\"10.20.1.0/24\", \"10.20.9.0/24\"]",
            &format!("subnets = [\"10.20.1.0/24\", \"10.20.9.0/24\"]\ngroup = \"{id}\""),
        );
        if both {
            text = text.replace(
                "subnets = [\"10.20.2.0/24\"]",
                &format!("subnets = [\"10.20.2.0/24\"]\ngroup = \"{id}\""),
            );
        }
        text + &format!(
            "\n[[group]]\nid = \"{id}\"\nname = \"Klaster\"\n\
             download = {{ guaranteed = \"30M\", ceiling = \"{download_ceiling}\" }}\n\
             upload = {{ guaranteed = \"10M\", ceiling = \"10M\" }}\n"
        )
    }

    #[test]
    fn joining_a_new_group_recreates_only_the_members_classes() {
        let plan = diff(&p(BASE), &p(&grouped("kesehatan", "50M", false)));
        assert_eq!(plan.groups_added.len(), 1);
        assert_eq!(plan.groups_added[0].id, "kesehatan");
        assert_eq!(
            plan.groups_added[0].changes,
            ["download 30M..50M, upload 10M..10M"]
        );
        let dinkes = plan.changed.iter().find(|c| c.id == "dinkes").unwrap();
        assert_eq!(
            dinkes.changes,
            [
                "group none -> kesehatan: its HTB classes are created again under the new parent \
              (HTB cannot move a class)"
            ]
        );
        assert!(plan.changed.iter().all(|c| c.id != "bappeda"));
        assert_eq!(plan.recreated, ["dinkes"]);
        assert_eq!(
            plan.summary(),
            "0 added, 0 removed, 1 changed, 0 gateway change(s); groups: 1 added, 0 removed, 0 \
             changed; classes of 1 OPD(s) recreated"
        );
        let text = plan.render();
        assert!(
            text.contains("+ group kesehatan: download 30M..50M"),
            "{text}"
        );
        assert!(text.contains("Recreated: dinkes."), "{text}");

        // An OPD added straight into a group is created there: nothing moves.
        let added = grouped("kesehatan", "50M", false).replace("id = \"dinkes\"", "id = \"rsud\"");
        let plan = diff(&p(BASE), &p(&added));
        assert!(plan.recreated.is_empty(), "{plan:?}");
        assert!(plan.added[0].changes[0].ends_with(", in group kesehatan"));
    }

    #[test]
    fn a_group_rate_changes_in_place() {
        let plan = diff(
            &p(&grouped("kesehatan", "50M", true)),
            &p(&grouped("kesehatan", "60M", true)),
        );
        assert!(!plan.is_empty(), "a reload must apply it");
        assert_eq!(plan.groups_changed.len(), 1);
        assert_eq!(
            plan.groups_changed[0].changes,
            ["download ceiling 50M -> 60M"]
        );
        assert!(
            plan.changed.is_empty() && plan.recreated.is_empty(),
            "{plan:?}"
        );
        assert!(
            plan.render()
                .contains("~ group kesehatan:\n    download ceiling 50M -> 60M\n")
        );
    }

    #[test]
    fn removing_a_group_moves_its_members_to_the_top() {
        let plan = diff(&p(&grouped("kesehatan", "50M", true)), &p(BASE));
        assert_eq!(plan.groups_removed, ["kesehatan"]);
        assert_eq!(plan.recreated, ["dinkes", "bappeda"]);
        assert!(plan.render().contains("- group kesehatan: removed"));
        // Renaming the group moves its members too: a group is its id.
        let plan = diff(
            &p(&grouped("kesehatan", "50M", false)),
            &p(&grouped("klaster", "50M", false)),
        );
        assert_eq!((plan.groups_added.len(), plan.groups_removed.len()), (1, 1));
        assert_eq!(plan.recreated, ["dinkes"]);
    }

    #[test]
    fn a_group_displaced_by_a_colliding_id_is_named() {
        // "grup-19" hashes to the minor "grup-356" had (see gateway.rs).
        let old = grouped("grup-356", "50M", true);
        let new = old.clone()
            + "\n[[group]]\nid = \"grup-19\"\nname = \"Lain\"\n\
               download = { guaranteed = \"1M\", ceiling = \"2M\" }\n\
               upload = { guaranteed = \"1M\", ceiling = \"2M\" }\n";
        let plan = diff(&p(&old), &p(&new));
        assert_eq!(plan.groups_added[0].id, "grup-19");
        assert_eq!(
            plan.groups_changed[0].changes,
            [
                "its HTB class moves from 1:7382 to 1:7383 (group grup-19's id takes 1:7382): the \
              class and its OPDs' classes are created again"
            ]
        );
        assert_eq!(plan.recreated, ["dinkes", "bappeda"]);
        let dinkes = plan.changed.iter().find(|c| c.id == "dinkes").unwrap();
        assert_eq!(
            dinkes.changes,
            ["its HTB classes are created again: the class of group grup-356 moves"]
        );
    }

    #[test]
    fn plans_from_older_daemons_without_group_fields_still_read() {
        let old = r#"{"added":[],"removed":["x"],"changed":[],"gateway":[],"restart_needed":[]}"#;
        let plan: Plan = serde_json::from_str(old).unwrap();
        assert_eq!(plan.removed, ["x"]);
        assert!(plan.groups_added.is_empty() && plan.recreated.is_empty());
    }
}
