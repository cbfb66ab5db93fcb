//! Validation: from TOML text to a [`Policy`] or every problem in it.
//!
//! The document is parsed into toml's spanned tree ([`DeTable`]: every key
//! and value is a [`Spanned`]) and walked by hand rather than deserialized
//! with `#[derive(Deserialize)]`: serde stops at the first unknown key, wrong
//! type or missing field, while an admin wants the whole list in one run.
//! Each check records its problem and carries on with what is still usable,
//! so that, say, a bad rate in one OPD does not hide an overlapping subnet in
//! another.

use std::collections::HashMap;
use std::net::IpAddr;
use std::ops::Range;

use ipnet::IpNet;
use toml::Spanned;
use toml::de::{DeArray, DeTable, DeValue};

use super::diagnosis::{
    DIAGNOSIS_KEYS, DiagnosisSettings, UPSTREAM_KEYS, UpstreamTarget, parse_duration,
};
use super::{
    Allocation, DEFAULT_LEAF_LIMIT, DEFAULT_MARK_MASK, DEFAULT_TIMEZONE, Diagnostic, Direction,
    Gateway, Group, LeafQdisc, MAX_GROUPS, MIN_MARK_BITS, Opd, Policy, PolicyError, Rate,
    parse_rate,
};

type Value<'i> = Spanned<DeValue<'i>>;
type Span = Range<usize>;

const TOP_KEYS: &[&str] = &["gateway", "group", "opd", "diagnosis", "schedule"];
const SCHEDULE_KEYS: &[&str] = &["name", "days", "from", "to", "opd"];
const SCHEDULE_OPD_KEYS: &[&str] = &["id", "download", "upload"];
const GATEWAY_KEYS: &[&str] = &[
    "wan",
    "lan",
    "download",
    "upload",
    "timezone",
    "leaf_qdisc",
    "leaf_limit",
    "mark_mask",
];
const OPD_KEYS: &[&str] = &[
    "id", "name", "subnets", "download", "upload", "probe", "group",
];
const GROUP_KEYS: &[&str] = &["id", "name", "download", "upload"];
const ALLOCATION_KEYS: &[&str] = &["guaranteed", "ceiling"];

/// An id is a Prometheus label value and a URL path segment.
const MAX_ID_LEN: usize = 32;
/// IFNAMSIZ (16) minus the terminating NUL.
const MAX_IFNAME_LEN: usize = 15;

pub(super) fn parse(source: &str, file_name: &str) -> Result<Policy, PolicyError> {
    let mut checker = Checker {
        source,
        problems: Vec::new(),
    };
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

/// Walks the document and collects problems as (byte span, message).
struct Checker<'s> {
    source: &'s str,
    problems: Vec<(usize, String)>,
}

/// What survived validation of the `[gateway]` table, with spans for the
/// cross-checks against the OPDs.
struct GatewayDraft {
    /// (capacity, span of its value) per direction, download first.
    capacity: [Option<(Rate, Span)>; 2],
    gateway: Option<Gateway>,
}

/// What survived validation of one `[[opd]]` table.
struct OpdDraft {
    /// The id when valid, with the span of its value.
    id: Option<(String, Span)>,
    /// Whatever string was written as the id, valid or not, to name the OPD
    /// in messages about other problems.
    label: Option<String>,
    subnets: Vec<(IpNet, Span)>,
    /// Per direction, download first.
    allocations: [AllocationDraft; 2],
    /// The group named by the `group` key, with the span of its value.
    group: Option<(String, Span)>,
    opd: Option<Opd>,
}

/// What survived validation of one `[[group]]` table.
struct GroupDraft {
    /// The span of the table, where problems of the group as a whole go.
    header: Span,
    /// The id when valid, with the span of its value.
    id: Option<(String, Span)>,
    /// Whatever string was written as the id, valid or not, so an OPD that
    /// names a group with an invalid id is not also told the group is
    /// unknown.
    label: Option<String>,
    /// Per direction, download first.
    allocations: [AllocationDraft; 2],
    group: Option<Group>,
}

#[derive(Default)]
struct AllocationDraft {
    guaranteed: Option<(Rate, Span)>,
    ceiling: Option<(Rate, Span)>,
}

impl AllocationDraft {
    fn allocation(&self) -> Option<Allocation> {
        Some(Allocation {
            guaranteed: self.guaranteed.as_ref()?.0,
            ceiling: self.ceiling.as_ref()?.0,
        })
    }
}

impl<'s> Checker<'s> {
    fn error(&mut self, span: &Span, message: impl Into<String>) {
        self.problems.push((span.start, message.into()));
    }

    /// 1-based line of a byte offset.
    fn line(&self, offset: usize) -> usize {
        line_column(self.source, offset).0
    }

    /// The source text of a span, for quoting it back.
    fn text(&self, span: &Span) -> &'s str {
        self.source.get(span.clone()).unwrap_or("")
    }

    fn into_error(self, file_name: &str) -> PolicyError {
        let mut problems = self.problems;
        // Stable: problems at the same place keep the order they were found.
        problems.sort_by_key(|(offset, _)| *offset);
        problems.dedup();
        let diagnostics = problems
            .into_iter()
            .map(|(offset, message)| {
                let (line, column) = line_column(self.source, offset);
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

    fn syntax_message(&self, message: &str, span: &Span) -> String {
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

    fn unknown_keys(&mut self, table: &DeTable<'_>, allowed: &[&str], place: &str) {
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

    /// A required key; reports its absence at the table's header.
    fn require<'t, 'i>(
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

    fn string<'v>(&mut self, value: &'v Value<'_>, key: &str, example: &str) -> Option<&'v str> {
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

    fn array<'v, 'i>(
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

    fn rate(&mut self, value: &Value<'_>) -> Option<(Rate, Span)> {
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

    // ---- [gateway] ----------------------------------------------------------

    fn gateway(&mut self, table: &DeTable<'_>, header: &Span) -> GatewayDraft {
        const PLACE: &str = "[gateway]";
        self.unknown_keys(table, GATEWAY_KEYS, "in [gateway]");

        let wan = self
            .require(table, "wan", header, PLACE, "\"eth0\"")
            .and_then(|value| {
                let name = self.string(value, "wan", "\"eth0\"")?;
                self.interface_name(name, &value.span())
                    .then(|| (name.to_string(), value.span()))
            });

        let lan = self
            .require(table, "lan", header, PLACE, "[\"eth1\"]")
            .and_then(|value| self.lan(value, wan.as_ref().map(|(name, _)| name.as_str())));

        let download = self
            .require(table, "download", header, PLACE, "\"300M\"")
            .and_then(|value| self.rate(value));
        let upload = self
            .require(table, "upload", header, PLACE, "\"300M\"")
            .and_then(|value| self.rate(value));

        let timezone = match table.get("timezone") {
            None => Some(DEFAULT_TIMEZONE),
            Some(value) => self
                .string(value, "timezone", "\"Asia/Makassar\"")
                .and_then(|name| self.timezone(name, &value.span())),
        };

        let leaf_qdisc = match table.get("leaf_qdisc") {
            None => Some(LeafQdisc::default()),
            Some(value) => self
                .string(value, "leaf_qdisc", "\"fq_codel\"")
                .and_then(|name| match name.parse::<LeafQdisc>() {
                    Ok(qdisc) => Some(qdisc),
                    Err(message) => {
                        self.error(&value.span(), message);
                        None
                    }
                }),
        };

        let leaf_limit = match table.get("leaf_limit") {
            None => Some(DEFAULT_LEAF_LIMIT),
            Some(value) => self.leaf_limit(value),
        };

        let mark_mask = match table.get("mark_mask") {
            None => Some(DEFAULT_MARK_MASK),
            Some(value) => self.mark_mask(value),
        };

        let gateway = match (wan, lan, &download, &upload) {
            (Some((wan, _)), Some(lan), Some((download, _)), Some((upload, _))) => {
                match (timezone, leaf_qdisc, leaf_limit, mark_mask) {
                    (Some(timezone), Some(leaf_qdisc), Some(leaf_limit), Some(mark_mask)) => {
                        Some(Gateway {
                            wan,
                            lan,
                            download: *download,
                            upload: *upload,
                            timezone,
                            leaf_qdisc,
                            leaf_limit,
                            mark_mask,
                        })
                    }
                    _ => None,
                }
            }
            _ => None,
        };
        GatewayDraft {
            capacity: [download, upload],
            gateway,
        }
    }

    fn lan(&mut self, value: &Value<'_>, wan: Option<&str>) -> Option<Vec<String>> {
        let array = self.array(value, "lan", "[\"eth1\"]")?;
        if array.is_empty() {
            self.error(
                &value.span(),
                "lan is empty; list the interfaces towards the OPDs, e.g. lan = [\"eth1\"]",
            );
            return None;
        }
        let mut names: Vec<String> = Vec::new();
        let mut ok = true;
        for item in array.iter() {
            let span = item.span();
            let Some(name) = self.string(item, "each lan interface", "[\"eth1\"]") else {
                ok = false;
                continue;
            };
            if !self.interface_name(name, &span) {
                ok = false;
            } else if Some(name) == wan {
                self.error(
                    &span,
                    format!(
                        "\"{name}\" is the wan interface; an interface is either wan (towards \
                         the ISP) or lan (towards the OPDs), not both"
                    ),
                );
                ok = false;
            } else if names.iter().any(|n| n == name) {
                self.error(&span, format!("\"{name}\" is listed twice in lan"));
                ok = false;
            } else {
                names.push(name.to_string());
            }
        }
        ok.then_some(names)
    }

    /// Checks what Linux itself would refuse; whether the interface exists
    /// is checked by the daemon at run time, so `jatah check` works anywhere.
    fn interface_name(&mut self, name: &str, span: &Span) -> bool {
        let problem = if name.is_empty() {
            Some("interface name is empty; write a Linux interface name, e.g. \"eth1\" or \"eth1.10\"".to_string())
        } else if name.len() > MAX_IFNAME_LEN {
            Some(format!(
                "interface name \"{name}\" is {} bytes; Linux allows at most {MAX_IFNAME_LEN}",
                name.len()
            ))
        } else if name == "." || name == ".." {
            Some(format!("\"{name}\" is not a valid interface name"))
        } else if name.contains(':') {
            Some(format!(
                "interface name \"{name}\" contains ':'; \"eth0:1\" style aliases are \
                 addresses, not interfaces: write the interface itself, e.g. \"{}\"",
                name.split(':').next().unwrap_or_default()
            ))
        } else if name.contains('/') || name.chars().any(char::is_whitespace) {
            Some(format!(
                "interface name \"{name}\" contains '/' or whitespace, which Linux does not \
                 allow in interface names"
            ))
        } else {
            None
        };
        match problem {
            Some(message) => {
                self.error(span, message);
                false
            }
            None => true,
        }
    }

    fn timezone(&mut self, name: &str, span: &Span) -> Option<chrono_tz::Tz> {
        if let Ok(tz) = name.parse::<chrono_tz::Tz>() {
            return Some(tz);
        }
        // Indonesian admins think in WIB/WITA/WIT; the IANA database does not.
        let suggestion = match name.to_ascii_uppercase().as_str() {
            "WIB" => Some("Asia/Jakarta"),
            "WITA" => Some("Asia/Makassar"),
            "WIT" => Some("Asia/Jayapura"),
            _ => chrono_tz::TZ_VARIANTS
                .iter()
                .map(|tz| tz.name())
                .find(|candidate| candidate.eq_ignore_ascii_case(name)),
        };
        let message = match suggestion {
            Some(suggestion) => {
                format!("\"{name}\" is not an IANA time zone name; write \"{suggestion}\"")
            }
            None => format!(
                "\"{name}\" is not an IANA time zone name; write e.g. \"Asia/Makassar\" (WITA), \
                 \"Asia/Jakarta\" (WIB) or \"Asia/Jayapura\" (WIT)"
            ),
        };
        self.error(span, message);
        None
    }

    fn leaf_limit(&mut self, value: &Value<'_>) -> Option<u32> {
        let span = value.span();
        let DeValue::Integer(integer) = value.get_ref() else {
            self.error(
                &span,
                format!(
                    "leaf_limit is a number of packets, not {}; e.g. leaf_limit = 1000 (no \
                     quotes)",
                    with_article(value.get_ref())
                ),
            );
            return None;
        };
        match i128::from_str_radix(integer.as_str(), integer.radix()) {
            Ok(packets) if packets >= 1 => match u32::try_from(packets) {
                Ok(packets) => Some(packets),
                Err(_) => {
                    self.error(
                        &span,
                        format!("leaf_limit {packets} is too large; the default is 1000 packets"),
                    );
                    None
                }
            },
            _ => {
                self.error(
                    &span,
                    format!(
                        "leaf_limit {} would drop every packet; write at least 1 (the default is \
                         1000 packets)",
                        self.text(&span)
                    ),
                );
                None
            }
        }
    }

    fn mark_mask(&mut self, value: &Value<'_>) -> Option<u32> {
        let span = value.span();
        let parsed = match value.get_ref() {
            // The documented form is a string; a TOML hex integer reads the
            // same to an admin, so accept it too.
            DeValue::Integer(integer) => {
                u32::from_str_radix(integer.as_str(), integer.radix()).ok()
            }
            DeValue::String(text) => {
                let text = text.trim().replace('_', "");
                match text.strip_prefix("0x").or_else(|| text.strip_prefix("0X")) {
                    Some(hex) => u32::from_str_radix(hex, 16).ok(),
                    None => text.parse::<u32>().ok(),
                }
            }
            _ => None,
        };
        let text = self.text(&span);
        let Some(mask) = parsed else {
            self.error(
                &span,
                format!(
                    "mark_mask {text} is not a 32-bit mask; write it in hexadecimal, e.g. \
                     mark_mask = \"0x7fff0000\""
                ),
            );
            return None;
        };
        let bits = mask.count_ones();
        // Shifted down to bit 0, a contiguous run is 2^n - 1.
        let run = mask.checked_shr(mask.trailing_zeros()).unwrap_or(0);
        let contiguous = run != 0 && run & run.wrapping_add(1) == 0;
        if !contiguous {
            self.error(
                &span,
                format!(
                    "mark_mask {mask:#010x} is not one contiguous run of bits; OPD slots are \
                     numbered inside the mask, e.g. \"0x7fff0000\""
                ),
            );
            return None;
        }
        if bits < MIN_MARK_BITS {
            self.error(
                &span,
                format!(
                    "mark_mask {mask:#010x} has {bits} bits; OPD slots need a contiguous run of \
                     at least {MIN_MARK_BITS} bits, e.g. \"0x7fff0000\""
                ),
            );
            return None;
        }
        Some(mask)
    }

    // ---- [[opd]] ------------------------------------------------------------

    fn opd(&mut self, table: &DeTable<'_>, header: &Span) -> OpdDraft {
        const PLACE: &str = "this [[opd]]";
        self.unknown_keys(table, OPD_KEYS, "in [[opd]]");

        let mut label = None;
        let id = self
            .require(table, "id", header, PLACE, "\"diskominfo\"")
            .and_then(|value| {
                let id = self.string(value, "id", "\"diskominfo\"")?;
                label = Some(id.to_string());
                self.id(id, &value.span(), "id")
                    .then(|| (id.to_string(), value.span()))
            });

        let name = self.name(
            table,
            header,
            PLACE,
            "\"Dinas Komunikasi dan Informatika\"",
            "the OPD's name, e.g. \"Dinas Kesehatan\"",
        );

        let (subnets, subnets_ok) =
            match self.require(table, "subnets", header, PLACE, "[\"10.20.1.0/24\"]") {
                Some(value) => self.subnets(value),
                None => (Vec::new(), false),
            };

        let allocations = self.allocations(table, header, PLACE, "OPD");

        let probe = match table.get("probe") {
            None => Some(None),
            Some(value) => self
                .string(value, "probe", "\"10.20.1.1\"")
                .and_then(|text| self.probe(text, &value.span()))
                .map(Some),
        };

        // Whether the group exists is checked once every group is known
        // (see `group_references`).
        let group = match table.get("group") {
            None => Some(None),
            Some(value) => self
                .string(value, "group", "\"kecamatan\"")
                .map(|group| Some((group.to_string(), value.span()))),
        };

        let [download, upload] = &allocations;
        let opd = match (
            &id,
            name,
            subnets_ok,
            download.allocation(),
            upload.allocation(),
            probe,
            &group,
        ) {
            (
                Some((id, _)),
                Some(name),
                true,
                Some(download),
                Some(upload),
                Some(probe),
                Some(group),
            ) => Some(Opd {
                id: id.clone(),
                name,
                subnets: subnets.iter().map(|(net, _)| *net).collect(),
                download,
                upload,
                probe,
                group: group.as_ref().map(|(group, _)| group.clone()),
            }),
            _ => None,
        };
        OpdDraft {
            id,
            label,
            subnets,
            allocations,
            group: group.flatten(),
            opd,
        }
    }

    // ---- [[group]] ----------------------------------------------------------

    fn group(&mut self, table: &DeTable<'_>, header: &Span) -> GroupDraft {
        const PLACE: &str = "this [[group]]";
        self.unknown_keys(table, GROUP_KEYS, "in [[group]]");

        let mut label = None;
        let id = self
            .require(table, "id", header, PLACE, "\"kecamatan\"")
            .and_then(|value| {
                let id = self.string(value, "id", "\"kecamatan\"")?;
                label = Some(id.to_string());
                self.id(id, &value.span(), "group id")
                    .then(|| (id.to_string(), value.span()))
            });
        let name = self.name(
            table,
            header,
            PLACE,
            "\"Kantor Kecamatan\"",
            "the group's name, e.g. \"Kantor Kecamatan\"",
        );
        let allocations = self.allocations(table, header, PLACE, "group");

        let [download, upload] = &allocations;
        let group = match (&id, name, download.allocation(), upload.allocation()) {
            (Some((id, _)), Some(name), Some(download), Some(upload)) => Some(Group {
                id: id.clone(),
                name,
                download,
                upload,
            }),
            _ => None,
        };
        GroupDraft {
            header: header.clone(),
            id,
            label,
            allocations,
            group,
        }
    }

    // ---- shared by [[opd]] and [[group]] --------------------------------------

    /// The required, non-empty `name` of an OPD or group.
    fn name(
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
    fn allocations(
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
    fn id(&mut self, id: &str, span: &Span, what: &str) -> bool {
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

    /// The well-formed subnets, which all take part in the overlap check,
    /// and whether the list as a whole is valid (an OPD is never built from
    /// part of its address space).
    fn subnets(&mut self, value: &Value<'_>) -> (Vec<(IpNet, Span)>, bool) {
        let example = "[\"10.20.1.0/24\"]";
        let Some(array) = self.array(value, "subnets", example) else {
            return (Vec::new(), false);
        };
        if array.is_empty() {
            self.error(
                &value.span(),
                "no subnets; an OPD needs at least one, e.g. subnets = [\"10.20.1.0/24\"]",
            );
            return (Vec::new(), false);
        }
        let mut subnets = Vec::new();
        let mut ok = true;
        for item in array.iter() {
            let span = item.span();
            let Some(text) = self.string(item, "each subnet", example) else {
                ok = false;
                continue;
            };
            match self.subnet(text, &span) {
                Some(net) => subnets.push((net, span)),
                None => ok = false,
            }
        }
        (subnets, ok)
    }

    fn subnet(&mut self, text: &str, span: &Span) -> Option<IpNet> {
        match text.parse::<IpNet>() {
            Ok(net) if net.trunc() != net => {
                self.error(
                    span,
                    format!("{net}: host bits set; did you mean {}?", net.trunc()),
                );
                None
            }
            Ok(net) => Some(net),
            Err(_) => {
                let message = match text.parse::<IpAddr>() {
                    Ok(IpAddr::V4(_)) => format!(
                        "\"{text}\" has no prefix length; write \"{text}/32\" for a single host \
                         or the network, e.g. \"10.20.1.0/24\""
                    ),
                    Ok(IpAddr::V6(_)) => format!(
                        "\"{text}\" has no prefix length; write \"{text}/128\" for a single host \
                         or the network, e.g. \"fd00:20:1::/64\""
                    ),
                    Err(_) => format!(
                        "\"{text}\" is not a subnet; write an address and prefix length, e.g. \
                         \"10.20.1.0/24\" or \"fd00:20:1::/64\""
                    ),
                };
                self.error(span, message);
                None
            }
        }
    }

    fn allocation(&mut self, value: &Value<'_>, key: &str, owner: &str) -> AllocationDraft {
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

    fn probe(&mut self, text: &str, span: &Span) -> Option<IpAddr> {
        if let Ok(address) = text.parse::<IpAddr>() {
            return Some(address);
        }
        let message = match text.parse::<IpNet>() {
            Ok(net) => format!(
                "probe \"{text}\" is a subnet; the probe is one address, the OPD's router: \
                 write \"{}\"",
                net.addr()
            ),
            Err(_) => format!(
                "probe \"{text}\" is not an IP address; write the OPD router's address, e.g. \
                 \"10.20.1.1\""
            ),
        };
        self.error(span, message);
        None
    }

    fn diagnosis(&mut self, table: &DeTable<'_>) -> Option<DiagnosisSettings> {
        self.unknown_keys(table, DIAGNOSIS_KEYS, "in [diagnosis]");
        let mut d = DiagnosisSettings::default();
        let mut ok = true;
        for (key, slot) in [
            ("probe_interval", &mut d.probe_interval),
            ("lan_rtt", &mut d.lan_rtt),
            ("wan_rtt", &mut d.wan_rtt),
            ("silence", &mut d.silence),
        ] {
            let Some(value) = table.get(key) else {
                continue;
            };
            let Some(text) = self.string(value, key, "\"1s\"") else {
                ok = false;
                continue;
            };
            match parse_duration(text) {
                Ok(v) => *slot = v,
                Err(e) => {
                    self.error(&value.span(), format!("{key}: {e}"));
                    ok = false;
                }
            }
        }
        if let Some(value) = table.get("rtt_tracking") {
            match value.get_ref() {
                DeValue::Boolean(b) => d.rtt_tracking = *b,
                other => {
                    self.error(
                        &value.span(),
                        format!("rtt_tracking is true or false, not {}", with_article(other)),
                    );
                    ok = false;
                }
            }
        }
        if let Some(value) = table.get("rtt_sampling") {
            let n = match value.get_ref() {
                DeValue::Integer(i) => i.as_str().parse::<u32>().ok(),
                _ => None,
            };
            match n {
                Some(n) if n.is_power_of_two() && n <= 1 << jatah_common::RTT_SAMPLE_SHIFT_MAX => {
                    d.rtt_sampling = n
                }
                _ => {
                    self.error(
                        &value.span(),
                        "rtt_sampling is how many TCP connections share one timed handshake: \
                         1, 2, 4, 8, 16, 32, 64 or 128 (the default is 8)",
                    );
                    ok = false;
                }
            }
        }
        if let Some(value) = table.get("probe_lost_in_a_row") {
            match value.get_ref() {
                DeValue::Integer(i) => match i.as_str().parse::<u32>() {
                    Ok(n) if (1..=60).contains(&n) => d.probe_lost_in_a_row = n,
                    _ => {
                        self.error(
                            &value.span(),
                            "probe_lost_in_a_row must be between 1 and 60 (the default is 3)",
                        );
                        ok = false;
                    }
                },
                other => {
                    self.error(
                        &value.span(),
                        format!(
                            "probe_lost_in_a_row is a number, not {}; e.g. probe_lost_in_a_row = 3",
                            with_article(other)
                        ),
                    );
                    ok = false;
                }
            }
        }
        if let Some(value) = table.get("upstream") {
            match value.get_ref() {
                DeValue::Array(items) => {
                    for item in items.iter() {
                        let DeValue::Table(t) = item.get_ref() else {
                            self.error(
                                &item.span(),
                                "each upstream target is a [[diagnosis.upstream]] table with \
                                 name and address",
                            );
                            ok = false;
                            continue;
                        };
                        self.unknown_keys(t, UPSTREAM_KEYS, "in [[diagnosis.upstream]]");
                        let name = self
                            .require(t, "name", &item.span(), "[[diagnosis.upstream]]", "\"isp\"")
                            .and_then(|v| self.string(v, "name", "\"isp\"").map(|s| (s, v.span())));
                        let address = self
                            .require(
                                t,
                                "address",
                                &item.span(),
                                "[[diagnosis.upstream]]",
                                "\"203.0.113.1\"",
                            )
                            .and_then(|v| {
                                self.string(v, "address", "\"203.0.113.1\"")
                                    .map(|s| (s, v.span()))
                            });
                        match (name, address) {
                            (Some((name, nspan)), Some((addr, aspan))) => {
                                let good_name = !name.is_empty()
                                    && name.len() <= MAX_ID_LEN
                                    && name.bytes().all(|b| {
                                        b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-'
                                    });
                                if !good_name {
                                    self.error(
                                        &nspan,
                                        format!(
                                            "upstream name \"{name}\" must be 1 to 32 characters \
                                             of a-z, 0-9 and '-' (it is a metric label)"
                                        ),
                                    );
                                    ok = false;
                                } else if d.upstream.iter().any(|u| u.name == name) {
                                    self.error(
                                        &nspan,
                                        format!("upstream name \"{name}\" is used twice"),
                                    );
                                    ok = false;
                                }
                                match addr.parse::<IpAddr>() {
                                    Ok(address) if good_name => d.upstream.push(UpstreamTarget {
                                        name: name.to_string(),
                                        address,
                                    }),
                                    Ok(_) => {}
                                    Err(_) => {
                                        self.error(
                                            &aspan,
                                            format!(
                                                "upstream address \"{addr}\" is not an IP address"
                                            ),
                                        );
                                        ok = false;
                                    }
                                }
                            }
                            _ => ok = false,
                        }
                    }
                }
                other => {
                    self.error(
                        &value.span(),
                        format!(
                            "upstream is a list of [[diagnosis.upstream]] tables, not {}",
                            with_article(other)
                        ),
                    );
                    ok = false;
                }
            }
        }
        ok.then_some(d)
    }

    fn schedule(&mut self, item: &Value<'_>) -> Option<crate::policy::schedule::Schedule> {
        use crate::policy::schedule::{DAYS, Schedule, ScheduledAllocation, Window};
        let DeValue::Table(table) = item.get_ref() else {
            self.error(&item.span(), "each schedule is a [[schedule]] table");
            return None;
        };
        self.unknown_keys(table, SCHEDULE_KEYS, "in [[schedule]]");
        let header = item.span();
        let mut ok = true;
        let name = self
            .require(table, "name", &header, "[[schedule]]", "\"office-hours\"")
            .and_then(|v| {
                self.string(v, "name", "\"office-hours\"")
                    .map(|s| (s.to_string(), v.span()))
            });
        if let Some((n, span)) = &name
            && !self.id(n, span, "schedule name")
        {
            ok = false;
        }
        let mut days = [false; 7];
        if let Some(v) = self.require(
            table,
            "days",
            &header,
            "[[schedule]]",
            "[\"mon\", \"tue\", \"wed\", \"thu\", \"fri\"]",
        ) {
            match self.array(v, "days", "[\"mon\", \"fri\"]") {
                Some(items) if !items.is_empty() => {
                    for d in items.iter() {
                        let DeValue::String(text) = d.get_ref() else {
                            self.error(&d.span(), "each day is a string, e.g. \"mon\"");
                            ok = false;
                            continue;
                        };
                        match DAYS.iter().position(|x| *x == text.as_ref()) {
                            Some(i) => days[i] = true,
                            None => {
                                self.error(
                                    &d.span(),
                                    format!(
                                        "unknown day \"{text}\"; write one of {}",
                                        DAYS.join(", ")
                                    ),
                                );
                                ok = false;
                            }
                        }
                    }
                }
                Some(_) => {
                    self.error(&v.span(), "days must name at least one day");
                    ok = false;
                }
                None => ok = false,
            }
        }
        let mut time = |key: &str, example: &str| -> Option<chrono::NaiveTime> {
            let v = self.require(table, key, &header, "[[schedule]]", example)?;
            let text = self.string(v, key, example)?;
            match chrono::NaiveTime::parse_from_str(text, "%H:%M") {
                Ok(t) => Some(t),
                Err(_) => {
                    self.error(
                        &v.span(),
                        format!("{key} \"{text}\" is not a time of day; write HH:MM in the gateway's timezone, e.g. {example}"),
                    );
                    None
                }
            }
        };
        let from = time("from", "\"07:30\"");
        let to = time("to", "\"16:00\"");
        if let (Some(f), Some(t)) = (from, to)
            && f == t
        {
            self.error(
                &header,
                "from and to are the same time: the window would never close or never open",
            );
            ok = false;
        }
        let mut allocations = Vec::new();
        match table.get("opd") {
            None => {
                self.error(&header, "a schedule changes at least one OPD: add a [[schedule.opd]] table with its id and allocation");
                ok = false;
            }
            Some(v) => {
                match v.get_ref() {
                    DeValue::Array(items) => {
                        for it in items.iter() {
                            let DeValue::Table(t) = it.get_ref() else {
                                self.error(&it.span(), "each [[schedule.opd]] is a table with id, download and/or upload");
                                ok = false;
                                continue;
                            };
                            self.unknown_keys(t, SCHEDULE_OPD_KEYS, "in [[schedule.opd]]");
                            let id = self
                                .require(t, "id", &it.span(), "[[schedule.opd]]", "\"disdukcapil\"")
                                .and_then(|v| {
                                    self.string(v, "id", "\"disdukcapil\"").map(str::to_string)
                                });
                            let download = t.get("download").map(|v| {
                                self.allocation(v, "download", "the schedule").allocation()
                            });
                            let upload = t
                                .get("upload")
                                .map(|v| self.allocation(v, "upload", "the schedule").allocation());
                            if download.is_none() && upload.is_none() {
                                self.error(&it.span(), "give the download and/or upload allocation in force during the window");
                                ok = false;
                            }
                            match (id, download, upload) {
                                (Some(opd), Some(Some(_)) | None, Some(Some(_)) | None) => {
                                    allocations.push(ScheduledAllocation {
                                        opd,
                                        download: download.flatten(),
                                        upload: upload.flatten(),
                                    })
                                }
                                _ => ok = false,
                            }
                        }
                    }
                    _ => {
                        self.error(
                            &v.span(),
                            "write the OPDs a schedule changes as [[schedule.opd]] tables",
                        );
                        ok = false;
                    }
                }
            }
        }
        if !ok {
            return None;
        }
        Some(Schedule {
            name: name?.0,
            window: Window {
                days,
                from: from?,
                to: to?,
            },
            allocations,
        })
    }

    // ---- cross-checks ---------------------------------------------------------

    /// Ids of one kind (`what` is "id" or "group id", of an `owner` "OPD"
    /// or "group") must be unique; each repeat is reported at its value.
    fn duplicate_ids<'d>(
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
    fn group_references(&mut self, opds: &[OpdDraft], groups: &[GroupDraft]) {
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
    /// first earlier subnet it overlaps.
    fn overlapping_subnets(&mut self, opds: &[OpdDraft]) {
        let all: Vec<(usize, &IpNet, &Span)> = opds
            .iter()
            .enumerate()
            .flat_map(|(index, opd)| {
                opd.subnets
                    .iter()
                    .map(move |(net, span)| (index, net, span))
            })
            .collect();
        for (later, &(later_opd, net, span)) in all.iter().enumerate() {
            let Some(&(earlier_opd, other, other_span)) = all[..later]
                .iter()
                .find(|&&(_, other, _)| overlaps(net, other))
            else {
                continue;
            };
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

    /// Allocations against what holds them: a group's against the gateway,
    /// an OPD's against its group, or against the gateway when it has none.
    /// The gateway's capacity holds every group's guarantee and every
    /// ungrouped OPD's; a group's guarantee holds its members'.
    fn capacities(&mut self, gateway: &GatewayDraft, opds: &[OpdDraft], groups: &[GroupDraft]) {
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

/// "a string", "an integer", ... for messages.
fn with_article(value: &DeValue<'_>) -> String {
    let kind = value.type_str();
    let article = if kind.starts_with(['a', 'e', 'i', 'o', 'u']) {
        "an"
    } else {
        "a"
    };
    format!("{article} {kind}")
}

fn overlaps(a: &IpNet, b: &IpNet) -> bool {
    // Two prefixes overlap exactly when one contains the other's network.
    a.contains(&b.network()) || b.contains(&a.network())
}

/// 1-based (line, column) of a byte offset, the column counted in
/// characters so editors and terminals agree with it.
pub(super) fn line_column(source: &str, offset: usize) -> (usize, usize) {
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

/// The allowed key nearest to a misspelt one, if it is close enough to be
/// what the admin meant.
fn closest<'a>(key: &str, allowed: &[&'a str]) -> Option<&'a str> {
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
fn edit_distance(a: &str, b: &str) -> usize {
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
