//! Keys shared by `[[opd]]` and `[[group]]` entries: id, name and the
//! download and upload allocations (also the id rule for schedule names).

use toml::de::{DeTable, DeValue};

use super::checker::{Checker, Span, Value};
use crate::policy::{Allocation, Direction, Rate};

const ALLOCATION_KEYS: &[&str] = &["guaranteed", "ceiling"];

/// An id is a Prometheus label value and a URL path segment.
pub(super) const MAX_ID_LEN: usize = 32;

#[derive(Default)]
pub(super) struct AllocationDraft {
    pub(super) guaranteed: Option<(Rate, Span)>,
    pub(super) ceiling: Option<(Rate, Span)>,
}

impl AllocationDraft {
    /// The allocation, when both rates are valid.
    pub(super) fn allocation(&self) -> Option<Allocation> {
        Some(Allocation {
            guaranteed: self.guaranteed.as_ref()?.0,
            ceiling: self.ceiling.as_ref()?.0,
        })
    }
}

impl Checker<'_> {
    /// The required, non-empty `name` of an OPD or group.
    pub(super) fn name(
        &mut self,
        table: &DeTable<'_>,
        header: &Span,
        place: &str,
        example: &str,
        what_to_write: &str,
    ) -> Option<String> {
        let value = self.require(table, "name", header, place, example)?;
        let name = self.string(value, "name", example)?;
        if name.trim().is_empty() {
            self.error(
                &value.span(),
                format!("name is empty; write {what_to_write}"),
            );
            return None;
        }
        Some(name.to_string())
    }

    /// The required `download` and `upload` allocations of an `owner`
    /// ("OPD" or "group").
    pub(super) fn allocations(
        &mut self,
        table: &DeTable<'_>,
        header: &Span,
        place: &str,
        owner: &str,
    ) -> [AllocationDraft; 2] {
        let mut allocations: [AllocationDraft; 2] = Default::default();
        for (direction, slot) in Direction::all().into_iter().zip(allocations.iter_mut()) {
            let key = direction.as_str();
            if let Some(value) = self.require(
                table,
                key,
                header,
                place,
                "{ guaranteed = \"10M\", ceiling = \"50M\" }",
            ) {
                *slot = self.allocation(value, key, owner);
            }
        }
        allocations
    }

    /// Checks an OPD or group id; `what` is "id" or "group id".
    pub(super) fn id(&mut self, id: &str, span: &Span, what: &str) -> bool {
        let valid = !id.is_empty()
            && id.len() <= MAX_ID_LEN
            && id
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if !valid {
            let mut suggestion: String = id
                .trim()
                .chars()
                .map(|c| match c.to_ascii_lowercase() {
                    c @ ('a'..='z' | '0'..='9' | '-') => c,
                    _ => '-',
                })
                .collect();
            suggestion.truncate(MAX_ID_LEN);
            let mut message = format!(
                "invalid {what} \"{id}\": an id is 1 to {MAX_ID_LEN} characters of a-z, 0-9 and \
                 '-' (it appears in metric labels and URLs)"
            );
            if !suggestion.is_empty() && suggestion != id {
                message.push_str(&format!("; e.g. \"{suggestion}\""));
            }
            self.error(span, message);
        }
        valid
    }

    /// One `download` or `upload` table of an `owner` ("OPD" or "group"):
    /// both rates, and a ceiling no lower than the guarantee.
    pub(super) fn allocation(
        &mut self,
        value: &Value<'_>,
        key: &str,
        owner: &str,
    ) -> AllocationDraft {
        let DeValue::Table(table) = value.get_ref() else {
            self.error(
                &value.span(),
                format!(
                    "{key} must be a table with a guaranteed rate and a ceiling, e.g. {key} = \
                     {{ guaranteed = \"10M\", ceiling = \"50M\" }}"
                ),
            );
            return AllocationDraft::default();
        };
        let span = value.span();
        self.unknown_keys(table, ALLOCATION_KEYS, &format!("in {key}"));
        let place = format!("{key} of this {owner}");
        let guaranteed = self
            .require(table, "guaranteed", &span, &place, "\"10M\"")
            .and_then(|value| self.rate(value));
        let ceiling = self
            .require(table, "ceiling", &span, &place, "\"50M\"")
            .and_then(|value| self.rate(value));
        if let (Some((guaranteed, _)), Some((ceiling, ceiling_span))) = (&guaranteed, &ceiling)
            && ceiling < guaranteed
        {
            self.error(
                ceiling_span,
                format!(
                    "ceiling {ceiling} is below guaranteed {guaranteed}; the ceiling is the most \
                     the {owner} may use and must be at least its guarantee: write at least \
                     \"{guaranteed}\""
                ),
            );
        }
        AllocationDraft {
            guaranteed,
            ceiling,
        }
    }
}
