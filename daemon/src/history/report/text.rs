//! A monthly report as text: a Markdown table for people, CSV for
//! spreadsheets (the same numbers; the API serves the CSV too).
//!
//! CSV with `;` as the separator also writes decimals with a comma
//! (`1,25`), as spreadsheets set to Indonesian (and most of continental
//! Europe) read them; with `,` decimals keep the point.

use std::fmt::Write as _;

use chrono::SecondsFormat;

use super::{MonthlyReport, Resolution};

/// The CSV field separator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Separator {
    /// `,` with decimal points.
    #[default]
    Comma,
    /// `;` with decimal commas (spreadsheets set to Indonesian).
    Semicolon,
}

impl Separator {
    /// `,`/`comma` or `;`/`semicolon`.
    pub fn parse(s: &str) -> Option<Separator> {
        match s {
            "," | "comma" => Some(Separator::Comma),
            ";" | "semicolon" => Some(Separator::Semicolon),
            _ => None,
        }
    }

    /// The character.
    pub fn char(self) -> char {
        match self {
            Separator::Comma => ',',
            Separator::Semicolon => ';',
        }
    }

    /// Hours (or another decimal) to two places, with this separator's
    /// decimal mark.
    pub fn decimal(self, v: f64) -> String {
        let s = format!("{v:.2}");
        match self {
            Separator::Comma => s,
            Separator::Semicolon => s.replace('.', ","),
        }
    }
}

/// The CSV header (see [`csv`]).
pub(crate) const CSV_COLUMNS: &[&str] = &[
    "month",
    "timezone",
    "resolution",
    "kind",
    "id",
    "download_bytes",
    "upload_bytes",
    "peak_download_bps",
    "peak_upload_bps",
    "p95_download_bps",
    "p95_upload_bps",
    "hours_at_ceiling_download",
    "hours_at_ceiling_upload",
    "hours_saturated",
    "hours_local_fault",
    "hours_local_degraded",
    "hours_upstream_degraded",
    "hours_upstream_down",
    "contracted_bps",
    "hours_below_80_percent",
    "minutes_with_estimate",
    "mean_delivered_bps",
    "lowest_delivered_bps",
];

/// The report as CSV: a header, one row per OPD (`kind` = `opd`, `id` =
/// the OPD), then one per uplink direction (`kind` = `uplink`, `id` =
/// `download` or `upload`). Columns that do not apply to a row, and
/// figures the data cannot give, are empty.
pub fn csv(r: &MonthlyReport, sep: Separator) -> String {
    let c = sep.char();
    let mut out = CSV_COLUMNS.join(&c.to_string());
    out.push('\n');
    let n = |v: Option<u64>| v.map(|v| v.to_string()).unwrap_or_default();
    let h = |v: Option<f64>| v.map(|v| sep.decimal(v)).unwrap_or_default();
    let head = [r.month.clone(), r.timezone.clone(), r.resolution.as_str().into()];
    for o in &r.opds {
        let s = &o.state_hours;
        let mut row: Vec<String> = head.to_vec();
        row.extend([
            "opd".into(),
            o.opd.clone(),
            o.download.bytes.to_string(),
            o.upload.bytes.to_string(),
            o.download.peak_bps.to_string(),
            o.upload.peak_bps.to_string(),
            n(o.download.p95_bps),
            n(o.upload.p95_bps),
            h(o.download.hours_at_ceiling),
            h(o.upload.hours_at_ceiling),
        ]);
        row.extend(s.fields().iter().map(|(_, v)| sep.decimal(*v)));
        row.extend(std::iter::repeat_n(String::new(), 5));
        push_row(&mut out, &row, c);
    }
    let u = &r.uplink;
    for (dir, d) in [("download", &u.download), ("upload", &u.upload)] {
        let mut row: Vec<String> = head.to_vec();
        row.extend(["uplink".into(), dir.into()]);
        row.extend(std::iter::repeat_n(String::new(), 11));
        row.extend([
            sep.decimal(u.hours_upstream_degraded),
            sep.decimal(u.hours_upstream_down),
            n(d.contracted_bps),
            sep.decimal(d.hours_below_80_percent),
            d.minutes_with_estimate.to_string(),
            n(d.mean_delivered_bps),
            n(d.lowest_delivered_bps),
        ]);
        push_row(&mut out, &row, c);
    }
    out
}

/// One CSV row; a field holding the separator, a quote or a line break
/// is quoted (OPD ids never do, but the file must parse whatever they are).
fn push_row(out: &mut String, fields: &[String], sep: char) {
    for (i, f) in fields.iter().enumerate() {
        if i > 0 {
            out.push(sep);
        }
        if f.contains([sep, '"', '\n', '\r']) {
            out.push('"');
            out.push_str(&f.replace('"', "\"\""));
            out.push('"');
        } else {
            out.push_str(f);
        }
    }
    out.push('\n');
}

/// Bytes in decimal units: `1.23 GB`.
pub(crate) fn human_bytes(b: u64) -> String {
    const UNITS: [&str; 5] = ["kB", "MB", "GB", "TB", "PB"];
    if b < 1000 {
        return format!("{b} B");
    }
    let mut v = b as f64;
    let mut unit = "B";
    for u in UNITS {
        if v < 1000.0 {
            break;
        }
        v /= 1000.0;
        unit = u;
    }
    format!("{v:.2} {unit}")
}

/// A rate: `38.2 Mbit/s`.
pub(crate) fn human_rate(bps: u64) -> String {
    let v = bps as f64;
    if bps >= 1_000_000_000 {
        format!("{:.2} Gbit/s", v / 1e9)
    } else if bps >= 1_000_000 {
        format!("{:.1} Mbit/s", v / 1e6)
    } else if bps >= 1_000 {
        format!("{:.1} kbit/s", v / 1e3)
    } else {
        format!("{bps} bit/s")
    }
}

/// The report as Markdown: what it covers, the OPDs' volumes and rates,
/// their hours in each state, and the uplink.
pub fn markdown(r: &MonthlyReport) -> String {
    let mut s = String::new();
    let local = |t: chrono::DateTime<chrono::Utc>| match r.timezone.parse::<chrono_tz::Tz>() {
        Ok(tz) => t.with_timezone(&tz).to_rfc3339_opts(SecondsFormat::Secs, false),
        Err(_) => t.to_rfc3339_opts(SecondsFormat::Secs, true),
    };
    let _ = writeln!(s, "# Monthly report {} ({})\n", r.month, r.timezone);
    let _ = writeln!(
        s,
        "From {} to {} (exclusive). {}\n",
        local(r.from),
        local(r.to),
        match r.resolution {
            Resolution::Minute => "Rates from per-minute samples.",
            Resolution::Hour =>
                "Rates from hourly samples (per-minute samples are kept 35 days only).",
            Resolution::Day =>
                "Daily totals only (hourly samples are kept 2 years): no p95 or hours at the ceiling.",
        }
    );
    if !r.has_data {
        let _ = writeln!(
            s,
            "**No data**: the history holds no usage for {}. Was jatah running then, with this --data-dir?",
            r.month
        );
        return s;
    }
    let opt_rate = |v: Option<u64>| v.map(human_rate).unwrap_or_else(|| "-".into());
    let opt_h = |v: Option<f64>| v.map(|h| format!("{h:.2}")).unwrap_or_else(|| "-".into());
    let _ = writeln!(s, "## OPDs: volume and rates\n");
    let _ = writeln!(
        s,
        "| OPD | download | upload | download bytes | upload bytes | peak down | peak up | p95 down | p95 up | h at ceiling down | h at ceiling up |"
    );
    let _ = writeln!(s, "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for o in &r.opds {
        let (d, u) = (&o.download, &o.upload);
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            o.opd,
            human_bytes(d.bytes),
            human_bytes(u.bytes),
            d.bytes,
            u.bytes,
            human_rate(d.peak_bps),
            human_rate(u.peak_bps),
            opt_rate(d.p95_bps),
            opt_rate(u.p95_bps),
            opt_h(d.hours_at_ceiling),
            opt_h(u.hours_at_ceiling),
        );
    }
    let _ = writeln!(s, "\n## OPDs: hours in each diagnosis state\n");
    let _ = writeln!(
        s,
        "| OPD | saturated | local_fault | local_degraded | upstream_degraded | upstream_down |"
    );
    let _ = writeln!(s, "|---|---:|---:|---:|---:|---:|");
    for o in &r.opds {
        let _ = write!(s, "| {} |", o.opd);
        for (_, h) in o.state_hours.fields() {
            let _ = write!(s, " {h:.2} |");
        }
        s.push('\n');
    }
    let u = &r.uplink;
    let _ = writeln!(s, "\n## Uplink: delivered against the contract\n");
    let _ = writeln!(
        s,
        "| direction | contract | h under 80% | minutes with an estimate | mean delivered | lowest minute |"
    );
    let _ = writeln!(s, "|---|---:|---:|---:|---:|---:|");
    for (dir, d) in [("download", &u.download), ("upload", &u.upload)] {
        let _ = writeln!(
            s,
            "| {dir} | {} | {:.2} | {} | {} | {} |",
            opt_rate(d.contracted_bps),
            d.hours_below_80_percent,
            d.minutes_with_estimate,
            opt_rate(d.mean_delivered_bps),
            opt_rate(d.lowest_delivered_bps),
        );
    }
    let _ = writeln!(
        s,
        "\nThe gateway's verdict: {:.2} h upstream_degraded, {:.2} h upstream_down.",
        u.hours_upstream_degraded, u.hours_upstream_down
    );
    s
}
