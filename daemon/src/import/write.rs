//! Writes an imported [`Draft`] as a policy file: the `[gateway]`, then
//! the groups and the OPDs in source order, each headed by a comment naming
//! its source line. Only what a policy needs, written as an admin would.

use super::model::{Draft, Limits, Origin};
use crate::policy::{Direction, Rate};

/// The interfaces of the `[gateway]`, which neither source knows.
pub struct Interfaces<'a> {
    pub wan: &'a str,
    pub lan: &'a [String],
    /// Whether they were given on the command line (else a comment says
    /// to check them).
    pub given: bool,
}

/// The policy text, and where each entry starts in it (1-based line) with
/// its source, so a problem `jatah check` finds can be traced back.
pub fn policy(draft: &Draft, capacity: [Rate; 2], interfaces: &Interfaces) -> (String, Vec<(usize, Origin)>) {
    let mut out = Text::default();
    out.line(&format!(
        "# Imported by `jatah import {}` from {}.",
        draft.format,
        draft.sources.join(" and ")
    ));
    out.line("# Each entry names its source line; `jatah import` printed on stderr");
    out.line("# everything it could not carry over. Check before use:");
    out.line("#   jatah check THIS-FILE");
    out.line("");
    out.line("[gateway]");
    let note = if interfaces.given { "" } else { "  # not in the source: check" };
    out.line(&format!("wan = {}{note}", string(interfaces.wan)));
    let lan: Vec<String> = interfaces.lan.iter().map(|l| string(l)).collect();
    out.line(&format!("lan = [{}]{note}", lan.join(", ")));
    for direction in Direction::all() {
        out.line(&format!(
            "{direction} = {}",
            string(&capacity[direction.index()].to_string())
        ));
    }

    let mut starts = Vec::new();
    for group in &draft.groups {
        out.line("");
        starts.push((out.lines + 1, group.origin.clone()));
        out.line("[[group]]");
        out.line(&format!("# from {}", group.origin));
        comments(&mut out, &group.comments);
        out.line(&format!("id = {}", string(&group.id)));
        out.line(&format!("name = {}", string(&group.name)));
        allocations(&mut out, &group.limits, "");
    }
    for opd in &draft.opds {
        out.line("");
        let prefix = if opd.disabled { "# " } else { "" };
        if opd.disabled {
            // Every line that is TOML when enabled starts with "# ", and
            // nothing else does: removing those two characters enables it.
            out.line(&format!("# from {}", opd.origin));
            comments(&mut out, &opd.comments);
            out.line("# Disabled in the source, so not in force here. To carry it over,");
            out.line("# remove the \"# \" in front of [[opd]] and of each line after it.");
            out.line(&format!("{prefix}[[opd]]"));
        } else {
            starts.push((out.lines + 1, opd.origin.clone()));
            out.line("[[opd]]");
            out.line(&format!("# from {}", opd.origin));
            comments(&mut out, &opd.comments);
        }
        out.line(&format!("{prefix}id = {}", string(&opd.id)));
        out.line(&format!("{prefix}name = {}", string(&opd.name)));
        let subnets: Vec<String> = opd.subnets.iter().map(|n| string(&n.to_string())).collect();
        out.line(&format!("{prefix}subnets = [{}]", subnets.join(", ")));
        allocations(&mut out, &opd.limits, prefix);
        if let Some(group) = &opd.group {
            out.line(&format!("{prefix}group = {}", string(group)));
        }
    }
    (out.text, starts)
}

#[derive(Default)]
struct Text {
    text: String,
    lines: usize,
}

impl Text {
    fn line(&mut self, line: &str) {
        self.text.push_str(line);
        self.text.push('\n');
        self.lines += 1;
    }
}

fn comments(out: &mut Text, comments: &[String]) {
    for comment in comments {
        // A comment ends at the line's end: a line break in the source's
        // text would turn the rest into TOML.
        let flat: String = comment
            .chars()
            .map(|c| if c.is_control() { ' ' } else { c })
            .collect();
        out.line(&format!("# {}", flat.trim()));
    }
}

fn allocations(out: &mut Text, limits: &[Limits; 2], prefix: &str) {
    for direction in Direction::all() {
        let l = limits[direction.index()];
        let rate = |r: Option<Rate>| string(&r.unwrap_or(Rate(0)).to_string());
        out.line(&format!(
            "{prefix}{direction} = {{ guaranteed = {}, ceiling = {} }}",
            rate(l.guaranteed),
            rate(l.ceiling)
        ));
    }
}

/// A TOML basic string: quotes, backslashes and control characters escaped.
pub fn string(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if c.is_control() => out.push_str(&format!("\\u{:04X}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::string;

    #[test]
    fn strings_are_escaped_so_toml_reads_them_back() {
        let text = "Dinas \"Kominfo\" \\ A\nB\u{7}";
        let doc = format!("x = {}", string(text));
        let value: toml::Table = toml::from_str(&doc).unwrap();
        assert_eq!(value["x"].as_str(), Some(text));
    }
}
