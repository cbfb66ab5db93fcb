//! The checker's plumbing: where each problem is, how a value is read
//! and what is said when it is wrong. The sections' checks (one file
//! each) build on it.

use std::ops::Range;

use toml::Spanned;
use toml::de::{DeArray, DeTable, DeValue};

use crate::policy::{Diagnostic, PolicyError, Rate, parse_rate};

pub(super) type Value<'i> = Spanned<DeValue<'i>>;
pub(super) type Span = Range<usize>;

/// Walks the document and collects problems as (byte span, message).
pub(super) struct Checker<'s> {
    pub(super) source: &'s str,
    pub(super) problems: Vec<(usize, String)>,
    /// Where each line starts, so a line number costs a binary search
    /// however many problems name one (thousands of overlapping subnets
    /// in a 4 MiB plan request must not cost a scan of the text each).
    line_starts: Vec<usize>,
}

impl<'s> Checker<'s> {
    pub(super) fn new(source: &'s str) -> Self {
        let line_starts = std::iter::once(0)
            .chain(source.match_indices('\n').map(|(i, _)| i + 1))
            .collect();
        Checker {
            source,
            problems: Vec::new(),
            line_starts,
        }
    }

    pub(super) fn error(&mut self, span: &Span, message: impl Into<String>) {
        self.problems.push((span.start, message.into()));
    }

    /// 1-based line of a byte offset.
    pub(super) fn line(&self, offset: usize) -> usize {
        self.line_starts
            .partition_point(|&start| start <= offset.min(self.source.len()))
    }

    /// The source text of a span, for quoting it back.
    pub(super) fn text(&self, span: &Span) -> &'s str {
        self.source.get(span.clone()).unwrap_or("")
    }

    pub(super) fn into_error(self, file_name: &str) -> PolicyError {
        let mut problems = self.problems;
        // Stable: problems at the same place keep the order they were found.
        problems.sort_by_key(|(offset, _)| *offset);
        problems.dedup();
        // Sorted, so one walk through the text places them all.
        let mut walk = Walk::default();
        let diagnostics = problems
            .into_iter()
            .map(|(offset, message)| {
                let (line, column) = walk.to(self.source, offset);
                Diagnostic {
                    file: file_name.to_string(),
                    line,
                    column,
                    message,
                }
            })
            .collect();
        PolicyError { diagnostics }
    }

    pub(super) fn syntax_message(&self, message: &str, span: &Span) -> String {
        let message = message.trim().replace('\n', "; ");
        if message == "duplicate key" {
            let key = self.text(span);
            if !key.is_empty() {
                return format!(
                    "duplicate key {key}; a key (or table) may appear only once in a table"
                );
            }
        }
        format!("TOML syntax error: {message}")
    }

    // ---- generic helpers ----------------------------------------------------

    /// A required key; reports its absence at the table's header.
    pub(super) fn require<'t, 'i>(
        &mut self,
        table: &'t DeTable<'i>,
        key: &str,
        header: &Span,
        place: &str,
        example: &str,
    ) -> Option<&'t Value<'i>> {
        let value = table.get(key);
        if value.is_none() {
            self.error(
                header,
                format!("missing required key \"{key}\" in {place}; e.g. {key} = {example}"),
            );
        }
        value
    }

    pub(super) fn string<'v>(
        &mut self,
        value: &'v Value<'_>,
        key: &str,
        example: &str,
    ) -> Option<&'v str> {
        match value.get_ref() {
            DeValue::String(text) => Some(text.as_ref()),
            other => {
                self.error(
                    &value.span(),
                    format!(
                        "{key} must be a string, not {}; e.g. {key} = {example}",
                        with_article(other)
                    ),
                );
                None
            }
        }
    }

    /// `key` of `table` as a boolean into `target`, if given; false (and an
    /// error naming it, then `why`) when it is not a boolean.
    pub(super) fn boolean(
        &mut self,
        table: &DeTable<'_>,
        key: &str,
        target: &mut bool,
        why: &str,
    ) -> bool {
        let Some(value) = table.get(key) else {
            return true;
        };
        match value.get_ref() {
            DeValue::Boolean(b) => {
                *target = *b;
                true
            }
            other => {
                self.error(
                    &value.span(),
                    format!("{key} is true or false, not {}{why}", with_article(other)),
                );
                false
            }
        }
    }

    pub(super) fn array<'v, 'i>(
        &mut self,
        value: &'v Value<'i>,
        key: &str,
        example: &str,
    ) -> Option<&'v DeArray<'i>> {
        match value.get_ref() {
            DeValue::Array(array) => Some(array),
            other => {
                self.error(
                    &value.span(),
                    format!(
                        "{key} must be a list, not {}; e.g. {key} = {example}",
                        with_article(other)
                    ),
                );
                None
            }
        }
    }

    pub(super) fn rate(&mut self, value: &Value<'_>) -> Option<(Rate, Span)> {
        let span = value.span();
        match value.get_ref() {
            DeValue::String(text) => match parse_rate(text) {
                Ok(rate) => Some((rate, span)),
                Err(error) => {
                    self.error(&span, error.to_string());
                    None
                }
            },
            DeValue::Integer(_) | DeValue::Float(_) => {
                // A bare 300 could mean 300 bit/s or 300 Mbit/s; make the
                // admin say which.
                let text = self.text(&span);
                self.error(
                    &span,
                    format!(
                        "{text} is a bare number; write rates as strings with a unit, e.g. \
                         \"300M\""
                    ),
                );
                None
            }
            other => {
                self.error(
                    &span,
                    format!(
                        "a rate must be a string such as \"300M\", not {}",
                        with_article(other)
                    ),
                );
                None
            }
        }
    }
}

/// "a string", "an integer", ... for messages.
pub(super) fn with_article(value: &DeValue<'_>) -> String {
    let kind = value.type_str();
    let article = if kind.starts_with(['a', 'e', 'i', 'o', 'u']) {
        "an"
    } else {
        "a"
    };
    format!("{article} {kind}")
}

/// 1-based (line, column) of a byte offset, the column counted in
/// characters so editors and terminals agree with it. The checker uses
/// [`Walk`], which gives the same for many offsets in one pass.
#[cfg(test)]
pub(in crate::policy) fn line_column(source: &str, offset: usize) -> (usize, usize) {
    let mut offset = offset.min(source.len());
    while !source.is_char_boundary(offset) {
        offset -= 1;
    }
    let before = &source[..offset];
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let line = before.matches('\n').count() + 1;
    let column = before[line_start..].chars().count() + 1;
    (line, column)
}

/// 1-based (line, column) of byte offsets asked in increasing order, the
/// column counted in characters so editors and terminals agree with it:
/// one pass over the text for all of them.
#[derive(Debug)]
pub(super) struct Walk {
    /// Byte offset reached, always on a character boundary.
    offset: usize,
    line: usize,
    column: usize,
}

impl Default for Walk {
    fn default() -> Self {
        Walk {
            offset: 0,
            line: 1,
            column: 1,
        }
    }
}

impl Walk {
    /// The line and column of `offset`, no earlier than the last asked.
    pub(super) fn to(&mut self, source: &str, offset: usize) -> (usize, usize) {
        let mut offset = offset.min(source.len());
        while !source.is_char_boundary(offset) {
            offset -= 1;
        }
        if offset > self.offset {
            for c in source[self.offset..offset].chars() {
                if c == '\n' {
                    self.line += 1;
                    self.column = 1;
                } else {
                    self.column += 1;
                }
            }
            self.offset = offset;
        }
        (self.line, self.column)
    }
}

/// The allowed key nearest to a misspelt one, if it is close enough to be
/// what the admin meant.
pub(super) fn closest<'a>(key: &str, allowed: &[&'a str]) -> Option<&'a str> {
    let key = key.to_ascii_lowercase();
    allowed
        .iter()
        .map(|candidate| (edit_distance(&key, candidate), *candidate))
        .filter(|(distance, candidate)| {
            *distance <= 2.min(candidate.len() / 3 + 1)
                // "ceil" for "ceiling", "subnet" for "subnets".
                || (key.len() >= 3 && (candidate.starts_with(&key) || key.starts_with(candidate)))
        })
        .min_by_key(|(distance, _)| *distance)
        .map(|(_, candidate)| candidate)
}

/// Levenshtein distance, in characters.
pub(super) fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut previous: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut current = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let substitution = previous[j] + usize::from(ca != *cb);
            current.push(substitution.min(previous[j + 1] + 1).min(current[j] + 1));
        }
        previous = current;
    }
    previous[b.len()]
}
