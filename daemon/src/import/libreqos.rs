//! LibreQoS's `ShapedDevices.csv` (and `network.json`) into a [`Draft`].
//!
//! ShapedDevices.csv has one row per device; rows with the same Circuit ID
//! are one circuit, shaped together: here one OPD with every address of
//! its devices. Rates are Mbps, decimals allowed ("0.5" is 500 kbit/s).
//! The header names the columns (LibreQoS's example: Circuit ID, Circuit
//! Name, Device ID, Device Name, Parent Node, MAC, IPv4, IPv6, Download
//! Min Mbps, Upload Min Mbps, Download Max Mbps, Upload Max Mbps, Comment,
//! and since v1.5 sqm); lines starting with `#` are comments.
//!
//! network.json is a tree of nodes (sites, APs), each with
//! `downloadBandwidthMbps` and `uploadBandwidthMbps` and its `children`.
//! A circuit's Parent Node becomes its group, with the node's bandwidth as
//! the group's ceiling. jatah has one level of groups, so nodes above a
//! circuit's own node are not carried over (each is warned of). The
//! capacity, when not given, is the sum of the root nodes' bandwidths:
//! all the tree lets through at once.

use std::collections::HashMap;

use ipnet::IpNet;

use super::model::{BothLimits, Draft, GroupDraft, Limits, OpdDraft, Origin, slug, subnet};
use crate::policy::{Direction, Rate, parse_rate};

/// The columns read, by header name.
const CIRCUIT_ID: &str = "Circuit ID";
const CIRCUIT_NAME: &str = "Circuit Name";
const DEVICE_NAME: &str = "Device Name";
const PARENT_NODE: &str = "Parent Node";
const MAC: &str = "MAC";
const IPV4: &str = "IPv4";
const IPV6: &str = "IPv6";
const DOWNLOAD_MIN: &str = "Download Min Mbps";
const UPLOAD_MIN: &str = "Upload Min Mbps";
const DOWNLOAD_MAX: &str = "Download Max Mbps";
const UPLOAD_MAX: &str = "Upload Max Mbps";
const COMMENT: &str = "Comment";
const SQM: &str = "sqm";
const REQUIRED: &[&str] = &[
    CIRCUIT_ID,
    CIRCUIT_NAME,
    PARENT_NODE,
    IPV4,
    IPV6,
    DOWNLOAD_MIN,
    UPLOAD_MIN,
    DOWNLOAD_MAX,
    UPLOAD_MAX,
];

/// One circuit, from its first row on.
struct Circuit {
    line: usize,
    id: String,
    name: String,
    parent: String,
    subnets: Vec<IpNet>,
    limits: BothLimits,
    comments: Vec<String>,
    devices: Vec<String>,
}

/// A node of network.json.
struct Node {
    limits: BothLimits,
    /// The names of the nodes above it, root first.
    ancestors: Vec<String>,
    line: usize,
}

/// Reads ShapedDevices.csv and, if given, network.json `(text, file name)`.
pub fn read(csv: &str, file: &str, network: Option<(&str, &str)>) -> Draft {
    let mut draft = Draft {
        format: "libreqos",
        sources: std::iter::once(file.to_string())
            .chain(network.map(|(_, name)| name.to_string()))
            .collect(),
        ..Draft::default()
    };
    let at = |line| Origin {
        file: file.to_string(),
        line,
    };
    let records = match records(csv) {
        Ok(records) => records,
        Err((line, message)) => {
            draft.error(&at(line), message);
            return draft;
        }
    };
    let mut records = records.into_iter();
    let Some((header_line, header)) = records.next() else {
        draft.error(&at(0), "no header line (Circuit ID,Circuit Name,...)");
        return draft;
    };
    let columns: HashMap<String, usize> = header
        .iter()
        .enumerate()
        .map(|(i, name)| (name.trim().to_ascii_lowercase(), i))
        .collect();
    let missing: Vec<&str> = REQUIRED
        .iter()
        .copied()
        .filter(|c| !columns.contains_key(&c.to_ascii_lowercase()))
        .collect();
    if !missing.is_empty() {
        draft.error(
            &at(header_line),
            format!(
                "the header has no column {}; expected LibreQoS's header (Circuit ID,Circuit \
                 Name,Device ID,Device Name,Parent Node,MAC,IPv4,IPv6,Download Min Mbps,...)",
                missing.join(", ")
            ),
        );
        return draft;
    }
    let column = |row: &[String], name: &str| -> String {
        columns
            .get(&name.to_ascii_lowercase())
            .and_then(|&i| row.get(i))
            .map(|s| s.trim().to_string())
            .unwrap_or_default()
    };

    let mut circuits: Vec<Circuit> = Vec::new();
    let mut index: HashMap<String, usize> = HashMap::new();
    let mut mac_warned = false;
    for (line, row) in records {
        let origin = at(line);
        if row.len() != header.len() {
            draft.error(
                &origin,
                format!(
                    "{} fields, the header has {} (a comma inside a field needs the field \
                     quoted: \"a, b\")",
                    row.len(),
                    header.len()
                ),
            );
            continue;
        }
        let id = column(&row, CIRCUIT_ID);
        if id.is_empty() {
            draft.error(&origin, "no Circuit ID");
            continue;
        }
        let mut limits = BothLimits::default();
        let mut ok = true;
        for (direction, min, max) in [
            (Direction::Download, DOWNLOAD_MIN, DOWNLOAD_MAX),
            (Direction::Upload, UPLOAD_MIN, UPLOAD_MAX),
        ] {
            for (key, slot) in [(min, 0), (max, 1)] {
                match mbps(&column(&row, key)) {
                    Ok(rate) => {
                        let l = &mut limits[direction.index()];
                        *(if slot == 0 { &mut l.guaranteed } else { &mut l.ceiling }) = rate;
                    }
                    Err(message) => {
                        draft.error(&origin, format!("{key}: {message}"));
                        ok = false;
                    }
                }
            }
        }
        let mut subnets = Vec::new();
        for key in [IPV4, IPV6] {
            for item in column(&row, key)
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
            {
                match subnet(item) {
                    Some((net, note)) => {
                        if let Some(note) = note {
                            draft.warn(&origin, note);
                        }
                        subnets.push(net);
                    }
                    None => {
                        draft.error(&origin, format!("{key}: \"{item}\" is not an address or subnet"));
                        ok = false;
                    }
                }
            }
        }
        if !ok {
            continue;
        }
        if !mac_warned && !column(&row, MAC).is_empty() {
            mac_warned = true;
            draft.warn(
                &origin,
                "MAC not carried over (this row and every other): jatah knows OPDs by their addresses",
            );
        }
        let sqm = column(&row, SQM);
        if !sqm.is_empty() {
            draft.warn(
                &origin,
                format!(
                    "sqm={sqm} not carried over: jatah picks one queue for every OPD ([gateway] \
                     leaf_qdisc)"
                ),
            );
        }
        let parent = column(&row, PARENT_NODE);
        let comment = column(&row, COMMENT);
        let device = column(&row, DEVICE_NAME);
        match index.get(&id) {
            Some(&i) => {
                let circuit = &mut circuits[i];
                if circuit.limits != limits {
                    draft.warn(
                        &origin,
                        format!(
                            "circuit {id}'s rates differ from its row on line {}; that row's are kept",
                            circuit.line
                        ),
                    );
                }
                if circuit.parent != parent {
                    draft.warn(
                        &origin,
                        format!(
                            "circuit {id}'s Parent Node differs from its row on line {}; that \
                             row's is kept",
                            circuit.line
                        ),
                    );
                }
                for net in subnets {
                    if !circuit.subnets.contains(&net) {
                        circuit.subnets.push(net);
                    }
                }
                if !comment.is_empty() && !circuit.comments.contains(&comment) {
                    circuit.comments.push(comment);
                }
                if !device.is_empty() {
                    circuit.devices.push(device);
                }
            }
            None => {
                index.insert(id.clone(), circuits.len());
                let name = column(&row, CIRCUIT_NAME);
                circuits.push(Circuit {
                    line,
                    name: if name.is_empty() { id.clone() } else { name },
                    id,
                    parent,
                    subnets: subnets.into_iter().fold(Vec::new(), |mut v, n| {
                        if !v.contains(&n) {
                            v.push(n);
                        }
                        v
                    }),
                    limits,
                    comments: (!comment.is_empty()).then_some(comment).into_iter().collect(),
                    devices: (!device.is_empty()).then_some(device).into_iter().collect(),
                });
            }
        }
    }

    let nodes = match network {
        Some((text, name)) => match nodes(text) {
            Ok(nodes) => Some((nodes, name)),
            Err((line, message)) => {
                let origin = Origin {
                    file: name.to_string(),
                    line,
                };
                draft.error(&origin, message);
                return draft;
            }
        },
        None => None,
    };
    if let Some((nodes, _)) = &nodes {
        for direction in Direction::all() {
            let sum: u64 = nodes
                .iter()
                .filter(|(_, n)| n.ancestors.is_empty())
                .filter_map(|(_, n)| n.limits[direction.index()].ceiling)
                .map(|r| r.0)
                .sum();
            if sum > 0 {
                draft.source_capacity[direction.index()] = Some((
                    Rate(sum),
                    "the sum of network.json's root nodes".to_string(),
                ));
            }
        }
    }
    let group_ids = groups(&circuits, nodes.as_ref().map(|(n, f)| (n, *f)), &mut draft, file);
    for c in circuits {
        if c.subnets.is_empty() {
            draft.warn(
                &at(c.line),
                format!("circuit {} has no IPv4 or IPv6 address; not carried over", c.id),
            );
            continue;
        }
        let mut comments = c.comments;
        if !c.devices.is_empty() {
            comments.push(format!("devices: {}", c.devices.join(", ")));
        }
        comments.insert(0, format!("circuit {}", c.id));
        draft.opds.push(OpdDraft {
            id: slug(&c.name, &format!("circuit-{}", slug(&c.id, "x"))),
            name: c.name,
            origin: at(c.line),
            subnets: c.subnets,
            limits: c.limits,
            group: group_ids.get(&c.parent).cloned(),
            comments,
            disabled: false,
        });
    }
    draft
}

/// One group per Parent Node that a circuit names, in order of first use;
/// returns each node's group id.
fn groups(
    circuits: &[Circuit],
    nodes: Option<(&Vec<(String, Node)>, &str)>,
    draft: &mut Draft,
    file: &str,
) -> HashMap<String, String> {
    let mut ids = HashMap::new();
    let mut seen = std::collections::HashSet::new();
    for c in circuits {
        if c.parent.is_empty() || ids.contains_key(&c.parent) || c.subnets.is_empty() {
            continue;
        }
        let csv_origin = Origin {
            file: file.to_string(),
            line: c.line,
        };
        let id = draft.group_id(&c.parent, "node", &csv_origin, &mut seen);
        ids.insert(c.parent.clone(), id.clone());
        let found = nodes.and_then(|(nodes, name)| {
            nodes
                .iter()
                .find(|(n, _)| *n == c.parent)
                .map(|(_, node)| (node, name))
        });
        let (limits, origin) = match (found, nodes) {
            (Some((node, name)), _) => {
                let origin = Origin {
                    file: name.to_string(),
                    line: node.line,
                };
                if !node.ancestors.is_empty() {
                    draft.warn(
                        &origin,
                        format!(
                            "node {} is inside {}: jatah has one level of groups, so group {id} \
                             is directly under the gateway and the limits of {} are not carried \
                             over",
                            c.parent,
                            node.ancestors.join(" > "),
                            node.ancestors.join(", ")
                        ),
                    );
                }
                (node.limits, origin)
            }
            (None, Some((_, name))) => {
                draft.warn(
                    &csv_origin,
                    format!(
                        "Parent Node {} is not in {name}; group {id} gets no limits of its own",
                        c.parent
                    ),
                );
                (BothLimits::default(), csv_origin)
            }
            (None, None) => {
                draft.warn(
                    &csv_origin,
                    format!(
                        "Parent Node {}: no network.json given, so group {id} gets no limits of \
                         its own",
                        c.parent
                    ),
                );
                (BothLimits::default(), csv_origin)
            }
        };
        draft.groups.push(GroupDraft {
            id,
            name: c.parent.clone(),
            origin,
            limits,
            comments: Vec::new(),
        });
    }
    ids
}

/// A rate in Mbps; `None` for an empty field or 0.
fn mbps(text: &str) -> Result<Option<Rate>, String> {
    let text = text.trim();
    if text.chars().all(|c| c == '0' || c == '.') {
        return Ok(None);
    }
    if !text.chars().all(|c| c.is_ascii_digit() || c == '.') {
        return Err(format!("\"{text}\" is not a number of Mbps, e.g. 20 or 2.5"));
    }
    parse_rate(&format!("{text}M"))
        .map(Some)
        .map_err(|_| format!("\"{text}\" is not a number of Mbps, e.g. 20 or 2.5"))
}

/// A CSV record: the line it starts on, and its fields.
type Record = (usize, Vec<String>);

/// The CSV's records with their first line, comment and blank lines left
/// out. Fields may be quoted ("a, b"), with "" for a quote inside.
fn records(text: &str) -> Result<Vec<Record>, (usize, String)> {
    let mut out = Vec::new();
    let mut lines = text.lines().enumerate().peekable();
    while let Some((i, line)) = lines.next() {
        let line = line.strip_suffix('\r').unwrap_or(line);
        if line.trim().is_empty() || line.trim_start().starts_with('#') {
            continue;
        }
        let start = i + 1;
        let mut fields = Vec::new();
        let mut field = String::new();
        let mut quoted = false;
        let mut current = line.to_string();
        loop {
            let mut chars = current.chars().peekable();
            while let Some(c) = chars.next() {
                match (quoted, c) {
                    (true, '"') if chars.peek() == Some(&'"') => {
                        chars.next();
                        field.push('"');
                    }
                    (true, '"') => quoted = false,
                    (true, c) => field.push(c),
                    (false, '"') if field.trim().is_empty() => {
                        field.clear();
                        quoted = true;
                    }
                    (false, ',') => fields.push(std::mem::take(&mut field)),
                    (false, c) => field.push(c),
                }
            }
            if !quoted {
                break;
            }
            // A quoted field may hold a line break.
            match lines.next() {
                Some((_, next)) => {
                    field.push('\n');
                    current = next.strip_suffix('\r').unwrap_or(next).to_string();
                }
                None => return Err((start, "a quoted field is not closed (missing \")".into())),
            }
        }
        fields.push(field);
        out.push((start, fields));
    }
    Ok(out)
}

/// network.json's nodes, depth first, with their ancestors.
/// A problem is returned with its line (0: the file as a whole).
fn nodes(text: &str) -> Result<Vec<(String, Node)>, (usize, String)> {
    let value: serde_json::Value =
        serde_json::from_str(text).map_err(|e| (e.line(), format!("not JSON: {e}")))?;
    let serde_json::Value::Object(top) = value else {
        return Err((
            0,
            "the top level must be an object of nodes, e.g. {\"Site_1\": {...}}".into(),
        ));
    };
    let mut out = Vec::new();
    walk(&top, &mut Vec::new(), text, &mut out).map_err(|e| (0, e))?;
    Ok(out)
}

fn walk(
    map: &serde_json::Map<String, serde_json::Value>,
    ancestors: &mut Vec<String>,
    text: &str,
    out: &mut Vec<(String, Node)>,
) -> Result<(), String> {
    for (name, value) in map {
        let serde_json::Value::Object(node) = value else {
            return Err(format!("node {name} is not an object"));
        };
        let mut limits = BothLimits::default();
        for (direction, key) in [
            (Direction::Download, "downloadBandwidthMbps"),
            (Direction::Upload, "uploadBandwidthMbps"),
        ] {
            let rate = match node.get(key) {
                None => None,
                Some(serde_json::Value::Number(n)) => mbps(&n.to_string())
                    .map_err(|e| format!("node {name}: {key}: {e}"))?,
                Some(other) => {
                    return Err(format!("node {name}: {key} is {other}, not a number of Mbps"));
                }
            };
            limits[direction.index()] = Limits {
                guaranteed: None,
                ceiling: rate,
            };
        }
        // serde_json keeps no positions; the node's key is found in the
        // text for the warnings' line numbers.
        let needle = format!("\"{name}\"");
        let line = text
            .find(&needle)
            .map_or(0, |at| text[..at].matches('\n').count() + 1);
        out.push((
            name.clone(),
            Node {
                limits,
                ancestors: ancestors.clone(),
                line,
            },
        ));
        match node.get("children") {
            None | Some(serde_json::Value::Null) => {}
            Some(serde_json::Value::Object(children)) => {
                ancestors.push(name.clone());
                walk(children, ancestors, text, out)?;
                ancestors.pop();
            }
            Some(_) => return Err(format!("node {name}: children is not an object")),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
