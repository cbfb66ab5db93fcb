//! What a policy change would do: OPDs added, removed, changed (rates,
//! subnets, names, probes), gateway settings, and what needs a restart.
//! Used by `jatah plan` (nothing changes) and by every reload (logged).

use std::collections::BTreeMap;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::policy::{Direction, Policy};

/// The changes to one OPD, as sentences.
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
}

impl Plan {
    pub fn is_empty(&self) -> bool {
        self.added.is_empty()
            && self.removed.is_empty()
            && self.changed.is_empty()
            && self.gateway.is_empty()
            && self.restart_needed.is_empty()
    }

    /// One line for logs: "2 added, 1 removed, 3 changed".
    pub fn summary(&self) -> String {
        if self.is_empty() {
            return "no change".into();
        }
        format!(
            "{} added, {} removed, {} changed, {} gateway change(s)",
            self.added.len(),
            self.removed.len(),
            self.changed.len(),
            self.gateway.len()
        )
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
        out.push_str(&format!("\nPlan: {}.\n", self.summary()));
        out
    }
}

fn allocation_line(policy: &Policy, id: &str) -> String {
    let o = policy.opd(id).expect("present");
    format!(
        "download {}..{}, upload {}..{}, subnets {}",
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
    if old.diagnosis != new.diagnosis {
        plan.gateway.push("diagnosis settings changed".into());
    }

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
        for d in Direction::all() {
            let (a, b) = (before.allocation(d), o.allocation(d));
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
}
