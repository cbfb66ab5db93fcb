//! MikroTik RouterOS `/queue simple export` into a [`Draft`].
//!
//! The export is a script: a section header (`/queue simple`), then one
//! `add key=value ...` per queue. Long lines are wrapped with a `\` at the
//! line's end and the rest on the next line, indented; values with spaces
//! are quoted, with `\"` and `\\` escapes inside.
//!
//! Directions: RouterOS writes `max-limit`, `limit-at` (and `burst-*`) as
//! `UPLOAD/DOWNLOAD`, seen from the target: upload is traffic from the
//! target's addresses, download traffic to them (RouterOS manual, "Simple
//! Queue": `max-limit=10M/50M` caps upload at 10M and download at 50M).
//! That is the OPD's point of view, as in a jatah policy. `0` means no
//! limit (no ceiling, or no guarantee).

use std::collections::{HashMap, HashSet};

use super::model::{BothLimits, Draft, GroupDraft, OpdDraft, Origin, slug, subnet};
use crate::policy::{Direction, Rate, parse_rate};

/// One `add` of the `/queue simple` section, as written.
#[derive(Debug, Default)]
struct Queue {
    line: usize,
    name: String,
    /// Addresses and subnets of `target`.
    subnets: Vec<ipnet::IpNet>,
    /// Whether `target` named anything that is not an address.
    interfaces: Vec<String>,
    limits: BothLimits,
    parent: Option<String>,
    disabled: bool,
    comment: Option<String>,
}

/// Reads an export. Problems that stop the import go to `errors`, the rest
/// to `warnings`, each with its line.
pub fn read(text: &str, file: &str) -> Draft {
    let mut draft = Draft {
        format: "mikrotik",
        sources: vec![file.to_string()],
        ..Draft::default()
    };
    let at = |line| Origin {
        file: file.to_string(),
        line,
    };
    let mut queues = Vec::new();
    // An export of /queue simple alone starts with its header; without
    // one, `add` lines are taken as simple queues.
    let mut section = Some(String::from("queue simple"));
    for (line, logical) in logical_lines(text) {
        let trimmed = logical.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        let words = match words(trimmed) {
            Ok(words) => words,
            Err(message) => {
                draft.error(&at(line), message);
                continue;
            }
        };
        let mut rest = &words[..];
        if trimmed.starts_with('/') {
            let path_len = rest
                .iter()
                .position(|w| COMMANDS.contains(&w.as_str()) || w.contains('='))
                .unwrap_or(rest.len());
            let path = rest[..path_len]
                .join(" ")
                .replace('/', " ")
                .split_whitespace()
                .collect::<Vec<_>>()
                .join(" ");
            rest = &rest[path_len..];
            if path == "queue simple" {
                section = Some(path);
            } else {
                draft.warn(
                    &at(line),
                    format!("section /{path} ignored: only /queue simple is read"),
                );
                section = None;
            }
        }
        let Some((command, args)) = rest.split_first() else {
            continue;
        };
        if section.is_none() {
            continue;
        }
        if command != "add" {
            draft.warn(
                &at(line),
                format!("`{command}` ignored: only `add` lines are read"),
            );
            continue;
        }
        if let Some(queue) = queue(args, line, &mut draft, file) {
            queues.push(queue);
        }
    }
    build(queues, &mut draft, file);
    draft
}

/// RouterOS commands that can follow a section path on one line.
const COMMANDS: &[&str] = &[
    "add", "set", "remove", "print", "export", "enable", "disable", "move", "unset", "edit",
    "comment", "find", "reset-counters", "reset-counters-all",
];

/// The logical lines of an export, each with the number of its first
/// physical line: a line ending in an odd number of `\` continues on the
/// next, whose leading indentation is dropped.
fn logical_lines(text: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    let mut current: Option<(usize, String)> = None;
    for (i, raw) in text.lines().enumerate() {
        let raw = raw.strip_suffix('\r').unwrap_or(raw);
        let piece = match &current {
            Some(_) => raw.trim_start(),
            None => raw,
        };
        let trailing = piece.len() - piece.trim_end_matches('\\').len();
        let continues = trailing % 2 == 1;
        let piece = if continues {
            &piece[..piece.len() - 1]
        } else {
            piece
        };
        match &mut current {
            Some((_, text)) => text.push_str(piece),
            None => current = Some((i + 1, piece.to_string())),
        }
        if !continues && let Some(done) = current.take() {
            out.push(done);
        }
    }
    out.extend(current);
    out
}

/// Splits a logical line into words, unquoting `"..."` parts (with
/// RouterOS's escapes) wherever they are in a word (`name="a b"`). Text
/// that is not ASCII is exported as hex escapes of its UTF-8 bytes
/// (`\C3\A9` for é).
fn words(line: &str) -> Result<Vec<String>, String> {
    const OPEN: &str = "a quoted value is not closed (missing \")";
    let mut words = Vec::new();
    let mut word: Vec<u8> = Vec::new();
    let mut in_word = false;
    let mut chars = line.chars().peekable();
    let push = |word: &mut Vec<u8>, c: char| {
        word.extend_from_slice(c.encode_utf8(&mut [0; 4]).as_bytes());
    };
    while let Some(c) = chars.next() {
        match c {
            '"' => {
                in_word = true;
                loop {
                    match chars.next() {
                        None => return Err(OPEN.into()),
                        Some('"') => break,
                        Some('\\') => match chars.next() {
                            None => return Err(OPEN.into()),
                            Some('n') => word.push(b'\n'),
                            Some('r') => word.push(b'\r'),
                            Some('t') => word.push(b'\t'),
                            Some('_') => word.push(b' '),
                            Some(h) if h.is_ascii_hexdigit()
                                && chars.peek().is_some_and(|d| d.is_ascii_hexdigit()) =>
                            {
                                let l = chars.next().unwrap_or('0');
                                let digit = |d: char| d.to_digit(16).unwrap_or(0) as u8;
                                word.push(digit(h) * 16 + digit(l));
                            }
                            Some(other) => push(&mut word, other),
                        },
                        Some(other) => push(&mut word, other),
                    }
                }
            }
            c if c.is_whitespace() => {
                if in_word {
                    words.push(String::from_utf8_lossy(&std::mem::take(&mut word)).into_owned());
                    in_word = false;
                }
            }
            c => {
                in_word = true;
                push(&mut word, c);
            }
        }
    }
    if in_word {
        words.push(String::from_utf8_lossy(&word).into_owned());
    }
    Ok(words)
}

/// One `add`'s arguments.
fn queue(args: &[String], line: usize, draft: &mut Draft, file: &str) -> Option<Queue> {
    let origin = Origin {
        file: file.to_string(),
        line,
    };
    let mut queue = Queue {
        line,
        ..Queue::default()
    };
    let mut ok = true;
    let mut name = None;
    for arg in args {
        let Some((key, value)) = arg.split_once('=') else {
            draft.error(&origin, format!("\"{arg}\" is not key=value"));
            ok = false;
            continue;
        };
        match key {
            "name" => name = Some(value.to_string()),
            "target" | "target-addresses" => {
                for item in value.split(',').map(str::trim).filter(|s| !s.is_empty()) {
                    match target(item) {
                        Target::Net(net, note) => {
                            if let Some(note) = note {
                                draft.warn(&origin, note);
                            }
                            if !queue.subnets.contains(&net) {
                                queue.subnets.push(net);
                            }
                        }
                        Target::Interface => queue.interfaces.push(item.to_string()),
                        Target::Bad => {
                            draft.error(
                                &origin,
                                format!(
                                    "target \"{item}\" is not an address, a subnet or an interface"
                                ),
                            );
                            ok = false;
                        }
                    }
                }
            }
            "max-limit" | "limit-at" => match pair(value) {
                Ok([up, down]) => {
                    for (direction, rate) in [(Direction::Upload, up), (Direction::Download, down)] {
                        let limits = &mut queue.limits[direction.index()];
                        if key == "max-limit" {
                            limits.ceiling = rate;
                        } else {
                            limits.guaranteed = rate;
                        }
                    }
                }
                Err(message) => {
                    draft.error(&origin, format!("{key}={value}: {message}"));
                    ok = false;
                }
            },
            "parent" => queue.parent = (value != "none" && !value.is_empty()).then(|| value.to_string()),
            "disabled" => queue.disabled = matches!(value, "yes" | "true"),
            "comment" => queue.comment = (!value.trim().is_empty()).then(|| value.to_string()),
            _ => {
                let why = match key {
                    "priority" => "jatah has no priorities between OPDs; each OPD's small \
                                   packets (ACKs, DNS, calls) go first in its own interactive lane",
                    "burst-limit" | "burst-threshold" | "burst-time" => {
                        "jatah has no bursts; an OPD borrows up to its ceiling whenever others \
                         leave capacity idle"
                    }
                    "queue" => "jatah picks each OPD's queue ([gateway] leaf_qdisc)",
                    "time" => "write a [[schedule]] for allocations that change with the time",
                    "dst" => "jatah shapes all of an OPD's Internet traffic",
                    "bucket-size" => "jatah sizes HTB's buckets itself",
                    _ => "jatah has no such setting",
                };
                draft.warn(&origin, format!("{key}={value} not carried over: {why}"));
            }
        }
    }
    match name {
        Some(name) if !name.trim().is_empty() => queue.name = name,
        _ => {
            draft.error(&origin, "this queue has no name=");
            ok = false;
        }
    }
    ok.then_some(queue)
}

enum Target {
    Net(ipnet::IpNet, Option<String>),
    Interface,
    Bad,
}

fn target(item: &str) -> Target {
    if let Some((net, note)) = subnet(item) {
        return Target::Net(net, note);
    }
    // Something that starts like an address and does not parse is a typo,
    // not an interface.
    let addressy = item.starts_with(|c: char| c.is_ascii_digit()) || item.contains(':');
    if addressy {
        Target::Bad
    } else {
        Target::Interface
    }
}

/// `UPLOAD/DOWNLOAD` rates; `None` for 0 (no limit).
fn pair(value: &str) -> Result<[Option<Rate>; 2], String> {
    let Some((up, down)) = value.split_once('/') else {
        return Err("expected UPLOAD/DOWNLOAD, e.g. 10M/20M".into());
    };
    let one = |text: &str| -> Result<Option<Rate>, String> {
        if text.trim().chars().all(|c| c == '0') && !text.trim().is_empty() {
            return Ok(None);
        }
        parse_rate(text).map(Some).map_err(|e| e.to_string())
    };
    Ok([one(up)?, one(down)?])
}

/// Turns the queues into groups and OPDs: a queue that another (enabled)
/// queue names as its parent is a group, every other queue with an address
/// target an OPD.
fn build(queues: Vec<Queue>, draft: &mut Draft, file: &str) {
    let at = |line| Origin {
        file: file.to_string(),
        line,
    };
    let mut first_by_name: HashMap<&str, usize> = HashMap::new();
    for (i, q) in queues.iter().enumerate() {
        if let Some(&earlier) = first_by_name.get(q.name.as_str()) {
            draft.warn(
                &at(q.line),
                format!(
                    "name \"{}\" is also on line {}; parents named so mean the earlier one",
                    q.name, queues[earlier].line
                ),
            );
        } else {
            first_by_name.insert(&q.name, i);
        }
    }
    let parents: HashSet<usize> = queues
        .iter()
        .filter(|q| !q.disabled)
        .filter_map(|q| q.parent.as_deref())
        .filter_map(|p| first_by_name.get(p).copied())
        .filter(|&i| !queues[i].disabled)
        .collect();
    let mut group_ids: HashMap<usize, String> = HashMap::new();
    let mut seen = HashSet::new();
    for (i, q) in queues.iter().enumerate() {
        if !parents.contains(&i) {
            continue;
        }
        let id = draft.group_id(&q.name, &format!("group-{}", q.line), &at(q.line), &mut seen);
        group_ids.insert(i, id.clone());
        if !q.subnets.is_empty() || !q.interfaces.is_empty() {
            draft.warn(
                &at(q.line),
                format!(
                    "parent queue \"{}\" becomes group {id}; its own target is not carried \
                     over: a group's traffic is its members' (their targets)",
                    q.name
                ),
            );
        }
        if let Some(parent) = &q.parent {
            draft.warn(
                &at(q.line),
                format!(
                    "parent={parent} of group {id} not carried over: jatah has one level of \
                     groups, so {id} is a group directly under the gateway"
                ),
            );
        }
        draft.groups.push(GroupDraft {
            id,
            name: q.name.clone(),
            origin: at(q.line),
            limits: q.limits,
            comments: q.comment.iter().cloned().collect(),
        });
    }
    for (i, q) in queues.iter().enumerate() {
        if parents.contains(&i) {
            continue;
        }
        for interface in &q.interfaces {
            draft.warn(
                &at(q.line),
                format!(
                    "target {interface} (an interface) not carried over: jatah knows OPDs by \
                     their addresses"
                ),
            );
        }
        if q.subnets.is_empty() {
            draft.warn(
                &at(q.line),
                format!("queue \"{}\" has no address target; not carried over", q.name),
            );
            continue;
        }
        let group = match q.parent.as_deref() {
            None => None,
            Some(parent) => match first_by_name.get(parent).and_then(|p| group_ids.get(p)) {
                Some(id) => Some(id.clone()),
                None => {
                    if !q.disabled {
                        let why = if first_by_name.contains_key(parent) {
                            "is disabled"
                        } else {
                            "is not in the file"
                        };
                        draft.warn(
                            &at(q.line),
                            format!("parent={parent} {why}; \"{}\" is in no group", q.name),
                        );
                    }
                    None
                }
            },
        };
        if q.disabled {
            draft.warn(
                &at(q.line),
                format!(
                    "queue \"{}\" is disabled; carried commented out, not in force",
                    q.name
                ),
            );
        }
        draft.opds.push(OpdDraft {
            id: slug(&q.name, &format!("opd-{}", q.line)),
            name: q.name.clone(),
            origin: at(q.line),
            subnets: q.subnets.clone(),
            limits: q.limits,
            group,
            comments: q.comment.iter().cloned().collect(),
            disabled: q.disabled,
        });
    }
}

#[cfg(test)]
mod tests;
