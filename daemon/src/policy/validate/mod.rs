//! Validation: from TOML text to a [`Policy`] or every problem in it.
//!
//! The document is parsed into toml's spanned tree ([`DeTable`]: every key
//! and value is a [`toml::Spanned`]) and walked by hand rather than deserialized
//! with `#[derive(Deserialize)]`: serde stops at the first unknown key, wrong
//! type or missing field, while an admin wants the whole list in one run.
//! Each check records its problem and carries on with what is still usable,
//! so that, say, a bad rate in one OPD does not hide an overlapping subnet in
//! another.
//!
//! One [`Checker`] walks the whole document; its methods are spread over
//! one file per policy section. This file holds the entry point, the walk
//! of the top level and the helpers every section uses; problems are sorted
//! by position at the end, so which file a check lives in never changes the
//! order of the messages.

mod checker;
mod cross_checks;
mod diagnosis;
mod entries;
mod gateway;
mod groups;
mod opds;
mod schedules;
mod shaping;

use toml::de::{DeTable, DeValue};

use super::diagnosis::DiagnosisSettings;
use super::{MAX_GROUPS, Policy, PolicyError};
use checker::{Checker, closest, with_article};
use gateway::GATEWAY_KEYS;
use opds::OPD_KEYS;

const TOP_KEYS: &[&str] = &["gateway", "group", "opd", "diagnosis", "schedule"];

/// Parses and validates `source`; on failure every problem found, sorted
/// by position. `file_name` only labels diagnostics.
pub(super) fn parse(source: &str, file_name: &str) -> Result<Policy, PolicyError> {
    let mut checker = Checker::new(source);
    let policy = checker.document();
    if checker.problems.is_empty()
        && let Some(policy) = policy
    {
        return Ok(policy);
    }
    if checker.problems.is_empty() {
        // Unreachable: every path that drops a part records why. Reported
        // rather than panicking so a checker bug cannot take the daemon down.
        checker.error(&(0..0), "internal error: policy rejected without a reason");
    }
    Err(checker.into_error(file_name))
}

impl Checker<'_> {
    fn document(&mut self) -> Option<Policy> {
        let (root, syntax_errors) = DeTable::parse_recoverable(self.source);
        if !syntax_errors.is_empty() {
            // The tree recovered after a syntax error misses whatever the
            // broken line held, so checking it would add false "missing key"
            // reports. Syntax first; the rest on the next run.
            for error in syntax_errors {
                let span = error.span().unwrap_or(0..0);
                let message = self.syntax_message(error.message(), &span);
                self.error(&span, message);
            }
            return None;
        }
        let root = root.get_ref();

        self.unknown_keys(root, TOP_KEYS, "at the top level");

        let gateway = match root.get("gateway") {
            None => {
                self.error(
                    &(0..0),
                    "missing [gateway] table; start the policy with [gateway] and its wan, lan, \
                     download and upload",
                );
                None
            }
            Some(value) => match value.get_ref() {
                DeValue::Table(table) => Some(self.gateway(table, &value.span())),
                DeValue::Array(_) => {
                    self.error(
                        &value.span(),
                        "write [gateway] with single brackets: a policy has one gateway",
                    );
                    None
                }
                other => {
                    self.error(
                        &value.span(),
                        format!(
                            "gateway must be a [gateway] table, not {}",
                            with_article(other)
                        ),
                    );
                    None
                }
            },
        };

        let mut groups = Vec::new();
        match root.get("group").map(|value| (value, value.get_ref())) {
            None => {}
            Some((_, DeValue::Array(array))) => {
                for item in array.iter() {
                    match item.get_ref() {
                        DeValue::Table(table) => groups.push(self.group(table, &item.span())),
                        other => self.error(
                            &item.span(),
                            format!(
                                "each group must be a [[group]] table, not {}",
                                with_article(other)
                            ),
                        ),
                    }
                }
            }
            Some((value, DeValue::Table(_))) => self.error(
                &value.span(),
                "write [[group]] with double brackets, one per group; [group] defines a single \
                 table",
            ),
            Some((value, other)) => self.error(
                &value.span(),
                format!(
                    "group must be [[group]] tables, one per group, not {}",
                    with_article(other)
                ),
            ),
        }

        let mut opds = Vec::new();
        match root.get("opd") {
            None => self.error(
                &(0..0),
                "no OPDs; add one [[opd]] table (double brackets) per OPD",
            ),
            Some(value) => match value.get_ref() {
                DeValue::Array(array) if array.is_empty() => self.error(
                    &value.span(),
                    "no OPDs; add one [[opd]] table (double brackets) per OPD",
                ),
                DeValue::Array(array) => {
                    for item in array.iter() {
                        match item.get_ref() {
                            DeValue::Table(table) => opds.push(self.opd(table, &item.span())),
                            other => self.error(
                                &item.span(),
                                format!(
                                    "each OPD must be an [[opd]] table, not {}",
                                    with_article(other)
                                ),
                            ),
                        }
                    }
                }
                DeValue::Table(_) => self.error(
                    &value.span(),
                    "write [[opd]] with double brackets, one per OPD; [opd] defines a single \
                     table",
                ),
                other => self.error(
                    &value.span(),
                    format!(
                        "opd must be [[opd]] tables, one per OPD, not {}",
                        with_article(other)
                    ),
                ),
            },
        }

        let diagnosis = match root.get("diagnosis") {
            None => Some(DiagnosisSettings::default()),
            Some(value) => match value.get_ref() {
                DeValue::Table(table) => self.diagnosis(table),
                other => {
                    self.error(
                        &value.span(),
                        format!(
                            "diagnosis must be a [diagnosis] table, not {}",
                            with_article(other)
                        ),
                    );
                    None
                }
            },
        };

        self.duplicate_ids(opds.iter().filter_map(|opd| opd.id.as_ref()), "id", "OPD");
        self.duplicate_ids(
            groups.iter().filter_map(|group| group.id.as_ref()),
            "group id",
            "group",
        );
        if let Some(extra) = groups.get(MAX_GROUPS) {
            self.error(
                &extra.header,
                format!(
                    "more than {MAX_GROUPS} groups; a group is for OPDs that share an \
                     allocation, merge some"
                ),
            );
        }
        self.group_references(&opds, &groups);
        self.overlapping_subnets(&opds);
        self.data_path_limits(&opds);
        if let Some(gateway) = &gateway {
            self.capacities(gateway, &opds, &groups);
        }

        let schedules = match root.get("schedule") {
            None => Some(Vec::new()),
            Some(value) => match value.get_ref() {
                DeValue::Array(items) => {
                    let mut all = Some(Vec::new());
                    for item in items.iter() {
                        match (self.schedule(item), all.as_mut()) {
                            (Some(s), Some(v)) => v.push((s, item.span())),
                            _ => all = None,
                        }
                    }
                    all
                }
                _ => {
                    self.error(
                        &value.span(),
                        "write [[schedule]] with double brackets, one per time window",
                    );
                    None
                }
            },
        };

        let gateway = gateway?.gateway?;
        let opds = opds
            .into_iter()
            .map(|draft| draft.opd)
            .collect::<Option<Vec<_>>>()?;
        let groups = groups
            .into_iter()
            .map(|draft| draft.group)
            .collect::<Option<Vec<_>>>()?;
        let schedules = schedules?;
        let mut policy = Policy {
            gateway,
            opds,
            groups,
            diagnosis: diagnosis?,
            schedules: Vec::new(),
        };
        // Schedules are checked against the policy they change: at every
        // moment of the week the allocations in force must fit.
        let mut failed = false;
        let plain: Vec<_> = schedules.iter().map(|(s, _)| s.clone()).collect();
        for (name, message) in crate::policy::schedule::check(&policy, &plain) {
            let span = schedules
                .iter()
                .find(|(s, _)| name.split('+').next() == Some(s.name.as_str()))
                .map(|(_, span)| span.clone())
                .unwrap_or(0..0);
            self.error(&span, format!("schedule {name}: {message}"));
            failed = true;
        }
        if failed {
            return None;
        }
        policy.schedules = plain;
        Some(policy)
    }

    pub(super) fn unknown_keys(&mut self, table: &DeTable<'_>, allowed: &[&str], place: &str) {
        for (key, _) in table.iter() {
            let name = key.get_ref().as_ref();
            if allowed.contains(&name) {
                continue;
            }
            let mut message = format!("unknown key \"{name}\" {place}");
            if let Some(suggestion) = closest(name, allowed) {
                message.push_str(&format!(" (did you mean \"{suggestion}\"?)"));
            } else if place == "at the top level" {
                // The usual cause: a key written above the first header, or
                // a header forgotten.
                if GATEWAY_KEYS.contains(&name) {
                    message.push_str("; gateway settings go under [gateway]");
                } else if OPD_KEYS.contains(&name) {
                    message.push_str("; OPD settings go under an [[opd]] header");
                }
            }
            message.push_str(&format!("; allowed keys: {}", allowed.join(", ")));
            self.error(&key.span(), message);
        }
    }
}

#[cfg(test)]
pub(super) use checker::line_column;

#[cfg(test)]
mod tests;
