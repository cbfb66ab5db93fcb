//! The Grafana dashboards and Prometheus rules under dashboards/.
//!
//! Without root: every dashboard is well-formed, names only metrics jatah
//! exports or the rules record, shows bits per second and follows the
//! multi-gateway conventions; promtool accepts the rules and their unit tests
//! pass, covering every alert firing and not firing.
//!
//! In the lab (root): jatah and a real Prometheus loaded with the rules, one
//! OPD downloading at its ceiling (which is also the uplink's capacity),
//! another uploading, one cable pulled, one OPD idle. Every panel and variable
//! query of every dashboard returns data, the cable pull is marked as an
//! annotation, the OPD alert fires for the pulled OPD only, and JatahDown
//! fires once jatah stops. The panels of what the uplink delivers, which
//! have data only while it delivers less than asked, are evaluated in a
//! second lab whose uplink is policed to 30% of its contract.

mod support;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use jatah::lab::netns::require_root;
use jatah::lab::{Lab, LabOpd, LabSpec, wait_iperf};
use jatah::policy::Direction;
use serde_json::Value;
use support::fixtures::diagnosis_lab;
use support::verdicts::{gateway_state, get, within};
use support::{Children, jatah, metrics, one_lab_at_a_time};

/// Prometheus' own scrape-health series for the jatah job (JatahDown and the
/// "jatah" panel of Gateway health).
const PROMETHEUS_OWN: &[&str] = &["up"];

/// Range windows a dashboard may use: Grafana's own, the 30-day review, the
/// one-minute window of state-change annotations, and the time range in
/// one-minute steps (hours the uplink delivered too little).
const WINDOWS: &[&str] = &["$__rate_interval", "$__range", "30d", "1m", "$__range:1m"];

/// Grafana units for byte rates: the dashboards show bits per second.
const BYTE_RATE_UNITS: &[&str] = &[
    "Bps", "binBps", "decBps", "KBs", "MBs", "GBs", "TBs", "KiBs", "MiBs", "GiBs",
];

fn dashboards_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../dashboards")
}

fn files_in(dir: &Path, suffix: &str) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().ends_with(suffix))
        .collect();
    files.sort();
    files
}

fn rule_files() -> Vec<PathBuf> {
    let files = files_in(&dashboards_dir().join("rules"), ".rules.yml");
    assert_eq!(files.len(), 2, "recording and alerting rules: {files:?}");
    files
}

fn rules_test_file() -> PathBuf {
    dashboards_dir().join("rules/tests/jatah.rules.test.yml")
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// A dashboard file, parsed.
struct Dashboard {
    file: String,
    json: Value,
}

fn dashboards() -> Vec<Dashboard> {
    let files = files_in(&dashboards_dir().join("grafana"), ".json");
    assert_eq!(files.len(), 3, "three dashboards: {files:?}");
    files
        .iter()
        .map(|path| Dashboard {
            file: path.file_name().unwrap().to_string_lossy().into_owned(),
            json: serde_json::from_str(&read(path))
                .unwrap_or_else(|e| panic!("{}: not valid JSON: {e}", path.display())),
        })
        .collect()
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum QueryKind {
    Panel,
    Annotation,
    Variable,
}

/// One PromQL query of a dashboard, as Grafana would send it (variables
/// unexpanded); variable queries are turned into the PromQL they run.
#[derive(Debug, Clone)]
struct Query {
    kind: QueryKind,
    /// "file / panel title / refId", for messages.
    place: String,
    expr: String,
}

fn all_panels(panels: &Value) -> Vec<&Value> {
    let mut out = Vec::new();
    for p in panels.as_array().into_iter().flatten() {
        out.push(p);
        out.extend(all_panels(&p["panels"]));
    }
    out
}

/// `label_values(EXPR, LABEL)` and `query_result(EXPR)`: the PromQL behind a
/// Grafana variable.
fn variable_promql(query: &str) -> String {
    let q = query.trim();
    if let Some(args) = q
        .strip_prefix("label_values(")
        .and_then(|s| s.strip_suffix(')'))
    {
        let (expr, _label) = args.rsplit_once(',').expect("label_values(expr, label)");
        expr.trim().to_string()
    } else if let Some(expr) = q
        .strip_prefix("query_result(")
        .and_then(|s| s.strip_suffix(')'))
    {
        expr.trim().to_string()
    } else {
        q.to_string()
    }
}

fn queries(d: &Dashboard) -> Vec<Query> {
    let mut out = Vec::new();
    for p in all_panels(&d.json["panels"]) {
        for t in p["targets"].as_array().into_iter().flatten() {
            out.push(Query {
                kind: QueryKind::Panel,
                place: format!("{} / {} / {}", d.file, p["title"], t["refId"]),
                expr: t["expr"].as_str().expect("every target has an expr").into(),
            });
        }
    }
    for a in d.json["annotations"]["list"]
        .as_array()
        .into_iter()
        .flatten()
    {
        if let Some(expr) = a["expr"].as_str() {
            out.push(Query {
                kind: QueryKind::Annotation,
                place: format!("{} / annotation {}", d.file, a["name"]),
                expr: expr.into(),
            });
        }
    }
    for v in d.json["templating"]["list"]
        .as_array()
        .into_iter()
        .flatten()
    {
        if v["type"] == "query" {
            let q = v["query"]["query"]
                .as_str()
                .or(v["query"].as_str())
                .unwrap();
            out.push(Query {
                kind: QueryKind::Variable,
                place: format!("{} / variable {}", d.file, v["name"]),
                expr: variable_promql(q),
            });
        }
    }
    out
}

/// Index just past the bracket that closes the one at `i`, skipping quoted
/// strings.
fn skip_bracketed(s: &[char], mut i: usize, open: char, close: char) -> usize {
    let mut depth = 0;
    while i < s.len() {
        match s[i] {
            '"' | '\'' | '`' => i = skip_quoted(s, i) - 1,
            c if c == open => depth += 1,
            c if c == close => {
                depth -= 1;
                if depth == 0 {
                    return i + 1;
                }
            }
            _ => {}
        }
        i += 1;
    }
    s.len()
}

fn skip_quoted(s: &[char], i: usize) -> usize {
    let q = s[i];
    let mut j = i + 1;
    while j < s.len() && s[j] != q {
        j += if s[j] == '\\' { 2 } else { 1 };
    }
    j + 1
}

fn is_ident(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == ':'
}

/// The metric names a PromQL expression selects: identifiers that are not
/// functions, keywords, label names of a grouping, numbers, durations,
/// strings, label matchers or Grafana variables.
fn metric_names(expr: &str) -> BTreeSet<String> {
    const GROUPING: &[&str] = &[
        "by",
        "without",
        "on",
        "ignoring",
        "group_left",
        "group_right",
    ];
    // Aggregations may put `by (...)` between their name and their argument.
    const KEYWORDS: &[&str] = &[
        "bool",
        "and",
        "or",
        "unless",
        "offset",
        "inf",
        "nan",
        "sum",
        "min",
        "max",
        "avg",
        "group",
        "stddev",
        "stdvar",
        "count",
        "count_values",
        "bottomk",
        "topk",
        "quantile",
    ];
    let s: Vec<char> = expr.chars().collect();
    let mut names = BTreeSet::new();
    let mut i = 0;
    while i < s.len() {
        let c = s[i];
        if matches!(c, '"' | '\'' | '`') {
            i = skip_quoted(&s, i);
        } else if c == '{' {
            i = skip_bracketed(&s, i, '{', '}');
        } else if c == '[' {
            i = skip_bracketed(&s, i, '[', ']');
        } else if c == '$' {
            i += 1;
            if s.get(i) == Some(&'{') {
                i = skip_bracketed(&s, i, '{', '}');
            } else {
                while i < s.len() && is_ident(s[i]) {
                    i += 1;
                }
            }
        } else if c.is_ascii_digit() || c == '.' {
            while i < s.len() && (is_ident(s[i]) || s[i] == '.') {
                i += 1;
            }
        } else if c.is_ascii_alphabetic() || c == '_' || c == ':' {
            let start = i;
            while i < s.len() && is_ident(s[i]) {
                i += 1;
            }
            let ident: String = s[start..i].iter().collect();
            let mut j = i;
            while j < s.len() && s[j].is_whitespace() {
                j += 1;
            }
            let call = s.get(j) == Some(&'(');
            if GROUPING.contains(&ident.as_str()) {
                if call {
                    i = skip_bracketed(&s, j, '(', ')');
                }
            } else if !call && !KEYWORDS.contains(&ident.as_str()) {
                names.insert(ident);
            }
        } else {
            i += 1;
        }
    }
    names
}

/// The contents of every `[...]` range window of an expression.
fn windows(expr: &str) -> Vec<String> {
    expr.split('[')
        .skip(1)
        .map(|rest| rest.split(']').next().unwrap_or_default().to_string())
        .collect()
}

fn indent(line: &str) -> usize {
    line.len() - line.trim_start().len()
}

/// Values of `- KEY: value` lines of a YAML file.
fn yaml_items(text: &str, key: &str) -> Vec<String> {
    let prefix = format!("- {key}:");
    text.lines()
        .filter_map(|l| l.trim().strip_prefix(prefix.as_str()))
        .map(|v| v.trim().to_string())
        .collect()
}

/// Every `expr:` of a rules file, inline or as a block scalar.
fn rule_exprs(text: &str) -> Vec<String> {
    let lines: Vec<&str> = text.lines().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let line = lines[i];
        i += 1;
        let Some(value) = line.trim_start().strip_prefix("expr:") else {
            continue;
        };
        let value = value.trim();
        if value.starts_with('|') || value.starts_with('>') {
            let mut block = String::new();
            while i < lines.len() && (lines[i].trim().is_empty() || indent(lines[i]) > indent(line))
            {
                block.push_str(lines[i].trim());
                block.push('\n');
                i += 1;
            }
            out.push(block);
        } else {
            out.push(value.to_string());
        }
    }
    out
}

/// Names the recording rules record.
fn recorded() -> BTreeSet<String> {
    rule_files()
        .iter()
        .flat_map(|f| yaml_items(&read(f), "record"))
        .collect()
}

fn alert_names() -> Vec<String> {
    rule_files()
        .iter()
        .flat_map(|f| yaml_items(&read(f), "alert"))
        .collect()
}

fn unknown_metrics(expr: &str, recorded: &BTreeSet<String>) -> Vec<String> {
    metric_names(expr)
        .into_iter()
        .filter(|m| {
            !metrics::exported().any(|e| e == m)
                && !PROMETHEUS_OWN.contains(&m.as_str())
                && !recorded.contains(m)
        })
        .collect()
}

#[test]
fn the_metric_name_scanner_sees_metrics_only() {
    let names = metric_names(
        "topk(10, sum by (opd, le) (increase(jatah_opd_download_bytes_total{gateway=\"$gateway\", \
         opd=~\"a|b\"}[$__range]))) / on (gateway) group_left (name) max without (x) \
         (opd:jatah_opd_state:code offset 1d) * 8e0 > bool 0.5 or label_replace(up, \"a\", \"b\", \"\", \"\")",
    );
    assert_eq!(
        names.into_iter().collect::<Vec<_>>(),
        [
            "jatah_opd_download_bytes_total",
            "opd:jatah_opd_state:code",
            "up"
        ]
    );
}

#[test]
fn dashboards_are_valid_and_use_only_jatah_metrics() {
    let recorded = recorded();
    let datasource_file = read(&dashboards_dir().join("provisioning/datasources/jatah.yaml"));
    let datasource_uid = datasource_file
        .lines()
        .find_map(|l| l.trim().strip_prefix("uid:"))
        .expect("the datasource has a fixed uid")
        .trim()
        .to_string();
    let provider = read(&dashboards_dir().join("provisioning/dashboards/jatah.yaml"));
    assert!(provider.contains("type: file") && provider.contains("path:"));

    let mut uids = BTreeSet::new();
    let mut problems = Vec::new();
    for d in dashboards() {
        let j = &d.json;
        let uid = j["uid"].as_str().unwrap_or_default();
        assert!(
            uid.starts_with("jatah-"),
            "{}: fixed uid, got {uid:?}",
            d.file
        );
        assert!(
            uids.insert(uid.to_string()),
            "{}: uid {uid} is used twice",
            d.file
        );
        assert!(j["title"].as_str().is_some_and(|t| !t.is_empty()));

        let vars = j["templating"]["list"].as_array().expect("templating");
        let var = |name: &str| {
            vars.iter()
                .find(|v| v["name"] == name)
                .unwrap_or_else(|| panic!("{}: no ${name} variable", d.file))
        };
        assert_eq!(
            var("datasource")["current"]["value"],
            datasource_uid.as_str()
        );
        assert_eq!(
            var("gateway")["query"]["query"],
            "label_values(jatah_build_info, gateway)",
            "{}",
            d.file
        );
        assert_eq!(
            var("opd")["multi"],
            true,
            "{}: $opd is multi-select",
            d.file
        );
        assert!(
            var("opd")["query"]["query"]
                .as_str()
                .unwrap()
                .contains("jatah_opd_info"),
            "{}: $opd comes from jatah_opd_info",
            d.file
        );

        let (mut ids, mut titles) = (BTreeSet::new(), BTreeSet::new());
        for p in all_panels(&j["panels"]) {
            let title = p["title"].as_str().unwrap_or_default();
            let id = p["id"]
                .as_u64()
                .unwrap_or_else(|| panic!("{}: panel {title:?} has no id", d.file));
            if !ids.insert(id) {
                problems.push(format!("{}: panel id {id} is used twice", d.file));
            }
            if p["type"] == "row" {
                continue;
            }
            if !titles.insert(title) {
                problems.push(format!("{}: two panels are titled {title:?}", d.file));
            }
            if title.is_empty() || p["description"].as_str().is_none_or(str::is_empty) {
                problems.push(format!(
                    "{}: panel {id} needs a title and a description",
                    d.file
                ));
            }
            if p["datasource"]["uid"] != "${datasource}" {
                problems.push(format!(
                    "{}: {title}: datasource is not $datasource",
                    d.file
                ));
            }
            let mut units = vec![&p["fieldConfig"]["defaults"]["unit"]];
            for o in p["fieldConfig"]["overrides"]
                .as_array()
                .into_iter()
                .flatten()
            {
                for prop in o["properties"].as_array().into_iter().flatten() {
                    if prop["id"] == "unit" {
                        units.push(&prop["value"]);
                    }
                }
            }
            for unit in units.iter().filter_map(|u| u.as_str()) {
                if BYTE_RATE_UNITS.contains(&unit) {
                    problems.push(format!("{}: {title}: unit {unit}, not bits", d.file));
                }
            }
            if p["type"] != "table" && p["fieldConfig"]["defaults"]["unit"] == "bps" {
                for t in p["targets"].as_array().into_iter().flatten() {
                    let expr = t["expr"].as_str().unwrap_or_default();
                    if !expr.trim_end().ends_with("* 8") {
                        problems.push(format!("{}: {title}: bits are bytes * 8: {expr}", d.file));
                    }
                }
            }
        }

        for q in queries(&d) {
            for m in unknown_metrics(&q.expr, &recorded) {
                problems.push(format!("{}: {m} is neither exported nor recorded", q.place));
            }
            // Every query but the one listing the gateways.
            if q.kind != QueryKind::Variable && !q.expr.contains("$gateway") {
                problems.push(format!("{}: not filtered by $gateway: {}", q.place, q.expr));
            }
            for w in windows(&q.expr) {
                if !WINDOWS.contains(&w.as_str()) {
                    problems.push(format!("{}: range [{w}] (use $__rate_interval)", q.place));
                }
            }
        }
    }
    assert!(problems.is_empty(), "\n{}", problems.join("\n"));
}

fn promtool(args: &[&str], files: &[PathBuf]) -> (bool, String) {
    let out = Command::new("promtool")
        .args(args)
        .args(files)
        .output()
        .expect("promtool (Debian's prometheus package)");
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[test]
fn promtool_accepts_the_rules_and_their_unit_tests_pass() {
    let (ok, report) = promtool(&["check", "rules"], &rule_files());
    assert!(ok, "promtool check rules:\n{report}");
    let (ok, report) = promtool(&["test", "rules"], &[rules_test_file()]);
    assert!(ok, "promtool test rules:\n{report}");
}

#[test]
fn rules_use_only_jatah_metrics_and_every_rule_is_unit_tested() {
    let recorded = recorded();
    for f in rule_files() {
        for expr in rule_exprs(&read(&f)) {
            let unknown = unknown_metrics(&expr, &recorded);
            assert!(unknown.is_empty(), "{}: {unknown:?} in {expr}", f.display());
        }
    }

    let tests = read(&rules_test_file());
    let lines: Vec<&str> = tests.lines().collect();
    let (mut firing, mut quiet) = (BTreeSet::new(), BTreeSet::new());
    for (i, line) in lines.iter().enumerate() {
        let Some(name) = line.trim().strip_prefix("- alertname:") else {
            continue;
        };
        let expected = lines[i + 1..]
            .iter()
            .find_map(|l| l.trim().strip_prefix("exp_alerts:"))
            .expect("exp_alerts after alertname");
        if expected.trim() == "[]" {
            quiet.insert(name.trim().to_string());
        } else {
            firing.insert(name.trim().to_string());
        }
    }
    let alerts = alert_names();
    assert!(alerts.len() >= 6, "{alerts:?}");
    for alert in &alerts {
        assert!(firing.contains(alert), "no unit test where {alert} fires");
        assert!(
            quiet.contains(alert),
            "no unit test where {alert} stays quiet"
        );
    }
    for name in &recorded {
        assert!(
            tests.contains(&format!("expr: {name}\n")),
            "no unit test of the recording rule {name}"
        );
    }
}

// ---------------------------------------------------------------- the lab

/// Grafana's variables as the lab gives them: gateway "lab", every OPD
/// selected, a 10 s rate window (scrape interval 1 s) and a 10 min range.
fn concrete(expr: &str, opds: &str) -> String {
    let e = expr
        .replace("$__rate_interval", "10s")
        .replace("$__interval", "2s")
        .replace("$__range_s", "600")
        .replace("$__range_ms", "600000")
        .replace("$__range", "10m")
        .replace("${gateway}", "lab")
        .replace("$gateway", "lab")
        .replace("${opd}", opds)
        .replace("$opd", opds);
    assert!(!e.contains('$'), "a variable left in {e}");
    e
}

fn alerts(lab: &Lab, selector: &str) -> Vec<Value> {
    lab.prom_query(&format!("ALERTS{{{selector}}}"))
        .expect("querying ALERTS")
}

/// Polls until `selector` matches a firing alert or `timeout` passes.
fn wait_firing(lab: &Lab, selector: &str, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if !alerts(lab, &format!("{selector}, alertstate=\"firing\"")).is_empty() {
            return true;
        }
        std::thread::sleep(Duration::from_secs(1));
    }
    false
}

#[test]
fn in_the_lab_every_panel_query_returns_data_and_the_alerts_fire() {
    require_root();
    let _one = one_lab_at_a_time();
    let mut lab = Lab::build(LabSpec {
        prefix: "jt-dash".into(),
        download: "30M".into(),
        upload: "20M".into(),
        nat: true,
        mtu: 1500,
        opds: vec![
            // dinkes may borrow the whole download uplink.
            LabOpd::new("dinkes", "Dinas Kesehatan", ("10M", "30M"), ("5M", "10M")),
            LabOpd::new("bappeda", "Bappeda", ("5M", "10M"), ("5M", "10M")),
            LabOpd::new(
                "kec-sepaku",
                "Kecamatan Sepaku",
                ("5M", "10M"),
                ("5M", "10M"),
            ),
            LabOpd::new("inspektorat", "Inspektorat", ("5M", "10M"), ("2M", "5M")),
        ],
    })
    .expect("building the lab");
    lab.start_daemon(jatah()).expect("starting jatah");
    let all_opds = lab
        .spec
        .opds
        .iter()
        .map(|o| o.id.clone())
        .collect::<Vec<_>>()
        .join("|");
    let mut failures = Vec::new();

    lab.start_prometheus(&rule_files())
        .expect("starting Prometheus with jatah's rules");
    let started = Instant::now();
    // dinkes downloads as fast as it can: at its ceiling, which is also the
    // uplink's capacity; bappeda uploads; inspektorat is idle.
    let download = lab.spawn_iperf(0, Direction::Download, 45, 4).unwrap();
    let upload = lab.spawn_iperf(1, Direction::Upload, 45, 2).unwrap();
    std::thread::sleep(Duration::from_secs(3));
    // kec-sepaku's cable is pulled.
    lab.set_opd_link(2, false).unwrap();
    let pulled = Instant::now();

    // Evaluate while the traffic still flows.
    std::thread::sleep(Duration::from_secs(30).saturating_sub(started.elapsed()));
    let dashboards = dashboards();
    let mut annotations = Vec::new();
    for d in &dashboards {
        // What the uplink delivers has data only while it delivers too
        // little: the policed lab below evaluates those.
        for q in queries(d).into_iter().filter(|q| !is_delivered(q)) {
            let expr = concrete(&q.expr, &all_opds);
            let result = lab.prom_query(&expr);
            if q.kind == QueryKind::Annotation {
                annotations.push((q, expr));
                continue;
            }
            match result {
                Ok(r) if r.is_empty() => {
                    eprintln!("EMPTY  {}: {expr}", q.place);
                    failures.push(format!("{}: no data: {expr}", q.place));
                }
                Ok(r) => eprintln!("ok {:>2}  {}", r.len(), q.place),
                Err(e) => {
                    eprintln!("ERROR  {}: {e}", q.place);
                    failures.push(format!("{}: {e}", q.place));
                }
            }
        }
    }

    // Nothing is down yet.
    if !alerts(&lab, "alertname=\"JatahDown\"").is_empty() {
        failures.push("JatahDown while jatah runs".into());
    }
    wait_iperf(download).expect("iperf3 download");
    wait_iperf(upload).expect("iperf3 upload");

    // The pulled cable: kec-sepaku turns local_fault, the change is marked on
    // the dashboards, and JatahOpdLocalFault fires for it and no other OPD.
    let local_fault = "jatah_opd_state{opd=\"kec-sepaku\", state=\"local_fault\"} == 1";
    let deadline = pulled + Duration::from_secs(60);
    let mut diagnosed = false;
    while Instant::now() < deadline && !diagnosed {
        diagnosed = !lab.prom_query(local_fault).unwrap().is_empty();
        if !diagnosed {
            std::thread::sleep(Duration::from_secs(1));
        }
    }
    let mut marked = false;
    for (q, expr) in &annotations {
        match lab.prom_query(expr) {
            Ok(r) => {
                eprintln!("annotation, {} series  {}", r.len(), q.place);
                marked |= r.iter().any(|s| {
                    s["metric"]["opd"] == "kec-sepaku" && s["metric"]["state"] == "local_fault"
                });
            }
            Err(e) => failures.push(format!("{}: {e}", q.place)),
        }
    }
    if !diagnosed {
        failures.push(format!(
            "kec-sepaku's pulled cable: no `{local_fault}` within 60 s"
        ));
    } else {
        if !marked {
            failures.push("the cable pull is not marked by a diagnosis annotation".into());
        }
        let fault = "alertname=\"JatahOpdLocalFault\", opd=\"kec-sepaku\", gateway=\"lab\"";
        if !wait_firing(&lab, fault, Duration::from_secs(90)) {
            failures.push("JatahOpdLocalFault did not fire for kec-sepaku".into());
        }
        let others = alerts(
            &lab,
            "alertname=\"JatahOpdLocalFault\", opd!=\"kec-sepaku\"",
        );
        if !others.is_empty() {
            failures.push(format!(
                "JatahOpdLocalFault for an OPD with a cable: {others:?}"
            ));
        }
    }

    // jatah stops: JatahDown fires after its minute.
    lab.stop_daemon().expect("stopping jatah");
    if !wait_firing(
        &lab,
        "alertname=\"JatahDown\", gateway=\"lab\"",
        Duration::from_secs(90),
    ) {
        failures.push("JatahDown did not fire after jatah stopped".into());
    }

    assert!(
        failures.is_empty(),
        "{} problem(s):\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// A query about what the uplink delivers.
fn is_delivered(q: &Query) -> bool {
    q.expr.contains("_delivered_bytes_per_second")
}

/// The single value of an instant query's result.
fn value(series: &Value) -> f64 {
    series["value"][1]
        .as_str()
        .and_then(|v| v.parse().ok())
        .unwrap_or(f64::NAN)
}

/// The uplink policed to 12 of its 40 Mbit/s while four OPDs ask for about
/// 32 (the demand of tests/capacity.rs): "Contracted vs delivered" shows
/// the contract and the figure, and "Hours this month the ISP delivered <
/// 80% of contract" counts the policed minutes, evaluated by a real
/// Prometheus scraping jatah.
#[test]
fn in_the_lab_a_policed_uplink_shows_in_the_delivered_panels() {
    require_root();
    let _one = one_lab_at_a_time();
    let mut lab = Lab::build(diagnosis_lab("jt-dashd")).expect("building the lab");
    lab.start_daemon(jatah()).expect("starting jatah");
    lab.start_prometheus(&rule_files())
        .expect("starting Prometheus with jatah's rules");
    let up = Instant::now();
    let seconds = 170;
    let bulk = |i: usize, flows: &str| {
        lab.spawn_iperf_args(i, Direction::Download, seconds, 0, &["-P", flows], false)
            .expect("starting iperf3")
    };
    let _clients = Children(vec![
        bulk(0, "1"),
        bulk(1, "4"),
        bulk(2, "8"),
        lab.spawn_iperf_paced(3, Direction::Download, seconds, "2M")
            .expect("starting iperf3"),
    ]);
    // Clean time first: jatah learns its round-trip baselines.
    std::thread::sleep(Duration::from_secs(35).saturating_sub(up.elapsed()));
    lab.police_uplink("12mbit").unwrap();
    let policed = Instant::now();
    within(Duration::from_secs(40), "gateway upstream_degraded", || {
        gateway_state(&lab).as_deref() == Some("upstream_degraded")
    });
    // The verdict can come first (from the retransmissions); the figure
    // follows once the plateau is judged, and then a scrape.
    within(
        Duration::from_secs(40),
        "a delivered figure in the API",
        || {
            get(&lab, "/api/v1/gateway")["diagnosis"]["evidence"]["download_delivered_bps"]
                .is_number()
        },
    );
    within(
        Duration::from_secs(30),
        "the delivered figure in Prometheus",
        || {
            lab.prom_query("jatah_gateway_download_delivered_bytes_per_second")
                .is_ok_and(|r| !r.is_empty())
        },
    );

    let review = dashboards()
        .into_iter()
        .find(|d| d.file == "capacity-review.json")
        .expect("the capacity review");
    let panel = |title: &str| -> Vec<Query> {
        let qs: Vec<Query> = queries(&review)
            .into_iter()
            .filter(|q| q.place.contains(&format!("/ \"{title}\" /")))
            .collect();
        assert!(!qs.is_empty(), "no panel {title:?} in the capacity review");
        qs
    };
    let opds = support::fixtures::DIAGNOSIS_OPDS.join("|");
    let mut failures = Vec::new();

    // Contracted vs delivered: both contracts, and the download figure near
    // what the policer lets through. No upload estimate: upload was never
    // short, so its delivered query may be empty.
    let mut seen_figure = false;
    for q in panel("Contracted vs delivered") {
        let expr = concrete(&q.expr, &opds);
        let r = lab
            .prom_query(&expr)
            .unwrap_or_else(|e| panic!("{expr}: {e}"));
        let v = r.first().map(value);
        eprintln!("{} series, {v:?}  {}", r.len(), q.place);
        if q.expr.contains("download_delivered") {
            match v {
                Some(v) if (v - 12e6).abs() <= 0.15 * 12e6 => seen_figure = true,
                other => failures.push(format!("{}: {other:?} is not about 12 Mbit/s", q.place)),
            }
        } else if q.expr.contains("download_capacity") {
            if v != Some(40e6) {
                failures.push(format!("{}: {v:?}, not the 40M contract", q.place));
            }
        } else if q.expr.contains("upload_capacity") && v != Some(20e6) {
            failures.push(format!("{}: {v:?}, not the 20M contract", q.place));
        }
    }
    assert!(seen_figure, "{}", failures.join("\n"));

    // The hours stat: once a minute mark passed while policed, download
    // counts one minute or more; upload, never short, answers zero.
    let stat = panel("Hours this month the ISP delivered < 80% of contract");
    let hours = |dir: &str| -> f64 {
        let q = stat
            .iter()
            .find(|q| q.expr.contains(&format!("{dir}_delivered")))
            .unwrap_or_else(|| panic!("no {dir} query in the stat"));
        let expr = concrete(&q.expr, &opds);
        let r = lab
            .prom_query(&expr)
            .unwrap_or_else(|e| panic!("{expr}: {e}"));
        assert_eq!(r.len(), 1, "{}: one value, got {r:?}", q.place);
        value(&r[0])
    };
    let took = within(
        Duration::from_secs(75),
        "a policed minute in the stat",
        || hours("download") > 0.0,
    );
    let down = hours("download");
    let policed_min = policed.elapsed().as_secs_f64() / 60.0;
    eprintln!(
        "hours below 80%: download {down:.3} after {took:.0} s; policed {policed_min:.2} min"
    );
    if down > (policed_min + 1.0) / 60.0 + 1e-9 {
        failures.push(format!(
            "download: {down} h counted, more than the {policed_min:.2} policed minutes"
        ));
    }
    let upload = hours("upload");
    if upload != 0.0 {
        failures.push(format!("upload was never short, yet {upload} h"));
    }
    lab.restore_uplink().unwrap();
    assert!(
        failures.is_empty(),
        "{} problem(s):\n{}",
        failures.len(),
        failures.join("\n")
    );
}
