//! The Prometheus text exposition format (version 0.0.4), written straight
//! into one buffer. A scrape of 1,000 OPDs is some 40,000 series; building
//! them as the `prometheus` crate's protobuf structures (a struct and two
//! strings per label, per series) and encoding those took longer than
//! reading every counter from the kernel, so jatah keeps a series as its
//! labels and value and writes the text itself.

use std::fmt::Write as _;

/// What a family's series are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
        }
    }
}

/// A series' value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Number(f64),
    /// Cumulative counts per upper bound (the `+Inf` bucket is `count`).
    Histogram {
        buckets: Vec<(f64, u64)>,
        count: u64,
        sum: f64,
    },
}

/// One series: its labels (names are literals) and value.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub labels: Vec<(&'static str, String)>,
    pub value: Value,
}

/// A metric family: name, help, type and series.
#[derive(Debug, Clone, PartialEq)]
pub struct Family {
    pub name: String,
    pub help: String,
    pub kind: Kind,
    pub samples: Vec<Sample>,
}

/// Writes `families` in the text format. Families without series are left
/// out, as Prometheus expects.
pub fn encode(families: &[Family], out: &mut String) {
    for f in families.iter().filter(|f| !f.samples.is_empty()) {
        out.push_str("# HELP ");
        out.push_str(&f.name);
        out.push(' ');
        escape_help(&f.help, out);
        out.push_str("\n# TYPE ");
        out.push_str(&f.name);
        out.push(' ');
        out.push_str(f.kind.as_str());
        out.push('\n');
        for s in &f.samples {
            match &s.value {
                Value::Number(v) => line(out, &f.name, "", &s.labels, None, *v),
                Value::Histogram {
                    buckets,
                    count,
                    sum,
                } => {
                    let mut le = String::new();
                    for (upper, cumulative) in buckets {
                        le.clear();
                        number(&mut le, *upper);
                        line(
                            out,
                            &f.name,
                            "_bucket",
                            &s.labels,
                            Some(&le),
                            *cumulative as f64,
                        );
                    }
                    line(
                        out,
                        &f.name,
                        "_bucket",
                        &s.labels,
                        Some("+Inf"),
                        *count as f64,
                    );
                    line(out, &f.name, "_sum", &s.labels, None, *sum);
                    line(out, &f.name, "_count", &s.labels, None, *count as f64);
                }
            }
        }
    }
}

fn line(
    out: &mut String,
    name: &str,
    suffix: &str,
    labels: &[(&'static str, String)],
    le: Option<&str>,
    value: f64,
) {
    out.push_str(name);
    out.push_str(suffix);
    if !labels.is_empty() || le.is_some() {
        out.push('{');
        let mut first = true;
        for (k, v) in labels
            .iter()
            .map(|(k, v)| (*k, v.as_str()))
            .chain(le.map(|le| ("le", le)))
        {
            if !first {
                out.push(',');
            }
            first = false;
            out.push_str(k);
            out.push_str("=\"");
            escape_label(v, out);
            out.push('"');
        }
        out.push('}');
    }
    out.push(' ');
    number(out, value);
    out.push('\n');
}

/// A value as Prometheus reads it: whole numbers without a fraction,
/// `+Inf`, `-Inf` and `NaN` by name.
fn number(out: &mut String, v: f64) {
    if v.is_nan() {
        out.push_str("NaN");
    } else if v.is_infinite() {
        out.push_str(if v > 0.0 { "+Inf" } else { "-Inf" });
    } else if v.fract() == 0.0 && v.abs() < 9.007_199_254_740_992e15 {
        out.push_str(itoa::Buffer::new().format(v as i64));
    } else {
        let _ = write!(out, "{v}");
    }
}

fn escape_help(s: &str, out: &mut String) {
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

fn escape_label(s: &str, out: &mut String) {
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '"' => out.push_str("\\\""),
            c => out.push(c),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(labels: &[(&'static str, &str)], value: Value) -> Sample {
        Sample {
            labels: labels.iter().map(|(k, v)| (*k, v.to_string())).collect(),
            value,
        }
    }

    #[test]
    fn writes_the_text_format_with_escapes_and_histograms() {
        let families = [
            Family {
                name: "jatah_opd_info".into(),
                help: "OPDs, with \\ and\na newline.".into(),
                kind: Kind::Gauge,
                samples: vec![sample(
                    &[("name", "Dinas \"Kesehatan\"\\"), ("opd", "dinkes")],
                    Value::Number(1.0),
                )],
            },
            Family {
                name: "jatah_empty".into(),
                help: "Left out.".into(),
                kind: Kind::Counter,
                samples: vec![],
            },
            Family {
                name: "jatah_x_total".into(),
                help: "Numbers.".into(),
                kind: Kind::Counter,
                samples: vec![
                    sample(&[], Value::Number(12345678901.0)),
                    sample(&[("a", "b")], Value::Number(0.25)),
                    sample(&[("a", "c")], Value::Number(f64::INFINITY)),
                ],
            },
            Family {
                name: "jatah_rtt_seconds".into(),
                help: "Round trips.".into(),
                kind: Kind::Histogram,
                samples: vec![sample(
                    &[("opd", "dinkes"), ("side", "lan")],
                    Value::Histogram {
                        buckets: vec![(0.0005, 3), (0.002, 5)],
                        count: 6,
                        sum: 0.0125,
                    },
                )],
            },
        ];
        let mut out = String::new();
        encode(&families, &mut out);
        assert_eq!(
            out,
            "# HELP jatah_opd_info OPDs, with \\\\ and\\na newline.\n\
             # TYPE jatah_opd_info gauge\n\
             jatah_opd_info{name=\"Dinas \\\"Kesehatan\\\"\\\\\",opd=\"dinkes\"} 1\n\
             # HELP jatah_x_total Numbers.\n\
             # TYPE jatah_x_total counter\n\
             jatah_x_total 12345678901\n\
             jatah_x_total{a=\"b\"} 0.25\n\
             jatah_x_total{a=\"c\"} +Inf\n\
             # HELP jatah_rtt_seconds Round trips.\n\
             # TYPE jatah_rtt_seconds histogram\n\
             jatah_rtt_seconds_bucket{opd=\"dinkes\",side=\"lan\",le=\"0.0005\"} 3\n\
             jatah_rtt_seconds_bucket{opd=\"dinkes\",side=\"lan\",le=\"0.002\"} 5\n\
             jatah_rtt_seconds_bucket{opd=\"dinkes\",side=\"lan\",le=\"+Inf\"} 6\n\
             jatah_rtt_seconds_sum{opd=\"dinkes\",side=\"lan\"} 0.0125\n\
             jatah_rtt_seconds_count{opd=\"dinkes\",side=\"lan\"} 6\n"
        );
    }
}
