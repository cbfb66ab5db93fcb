//! Monthly reports: a month written through the daemon's own history
//! write path, read back exactly by `jatah report` (Markdown and CSV,
//! read-only beside a writer) and by `GET /api/v1/reports/monthly` (JSON
//! and CSV, token scoping, 400s, 503); and, in a lab with real iperf3
//! traffic through a running jatah, the current month's report.

mod support;

use std::path::Path;
use std::process::{Command, Output};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use chrono::{DateTime, Datelike, TimeDelta, Utc};
use chrono_tz::Asia;
use jatah::history::{CounterReading, DeliveredSecond, Event, HistoryStore};
use jatah::http::auth::{Access, Tokens};
use jatah::http::router;
use jatah::lab::netns::require_root;
use jatah::lab::{LAB_ADMIN_TOKEN, Lab, lab_opd_token};
use jatah::policy::Direction;
use jatah::runtime::state::{AppState, PolicyView};
use serde_json::Value;
use support::fixtures::dinsos_and_bpbd_lab;
use support::{Scratch, jatah, one_lab_at_a_time};
use tower::ServiceExt;

const POLICY: &str = r#"
[gateway]
wan = "eth0"
lan = ["eth1"]
download = "100M"
upload = "50M"
timezone = "Asia/Makassar"

[[opd]]
id = "dinkes"
name = "Dinas Kesehatan"
subnets = ["10.20.1.0/24"]
download = { guaranteed = "20M", ceiling = "40M" }
upload = { guaranteed = "5M", ceiling = "10M" }

[[opd]]
id = "bappeda"
name = "Bappeda"
subnets = ["10.20.2.0/24"]
download = { guaranteed = "10M", ceiling = "20M" }
upload = { guaranteed = "5M", ceiling = "10M" }
"#;

const ADMIN: &str = "admin-secret";
const DINKES: &str = "dinkes-secret";

/// A minute two days ago whose next 101 minutes lie in the same WITA
/// month (so within the minute retention whatever today is).
fn base_minute() -> DateTime<Utc> {
    let t = Utc::now() - TimeDelta::days(2);
    let mut b = DateTime::from_timestamp(t.timestamp() / 60 * 60, 0).unwrap();
    let month = |t: DateTime<Utc>| t.with_timezone(&Asia::Makassar).month();
    while month(b) != month(b + TimeDelta::minutes(101)) {
        b -= TimeDelta::hours(2);
    }
    b
}

fn month_of(t: DateTime<Utc>) -> String {
    let l = t.with_timezone(&Asia::Makassar);
    format!("{:04}-{:02}", l.year(), l.month())
}

/// Writes a known month with the daemon's own calls: minute `i` (1..=100)
/// after `b` carries `i` Mbit/s down and 9.5 Mbit/s up for dinkes; dinkes
/// saturated 30 minutes; the gateway's uplink down 6 minutes; the
/// uplink delivered 30 then 90 of 100 Mbit/s for a minute each.
fn write_known_month(dir: &Path, b: DateTime<Utc>) {
    let mut store = HistoryStore::open(dir, Asia::Makassar).unwrap();
    let (mut down, mut up) = (0u64, 0u64);
    for i in 0..=100i64 {
        let at = b + TimeDelta::minutes(i);
        if i > 0 {
            down += i as u64 * 7_500_000;
            up += 71_250_000;
        }
        let bps = match i {
            5 => Some(30_000_000),
            6 => Some(90_000_000),
            _ => None,
        };
        if let Some(bps) = bps {
            for s in 0..60 {
                let second = DeliveredSecond {
                    bps,
                    contracted_bps: 100_000_000,
                    since: None,
                };
                store.note_delivered(at + TimeDelta::seconds(s), [Some(second), None]);
            }
        }
        store
            .record_minute(
                at,
                &[CounterReading {
                    opd: "dinkes".into(),
                    download_bytes_total: down,
                    upload_bytes_total: up,
                    peak_download_bps: i as u64 * 1_100_000,
                    peak_upload_bps: 12_000_000,
                }],
            )
            .unwrap();
    }
    for (minutes, opd, state) in [
        (10, Some("dinkes"), "saturated"),
        (40, Some("dinkes"), "healthy"),
        (0, None, "upstream_down"),
        (6, None, "healthy"),
    ] {
        store
            .record_event(&Event {
                at: b + TimeDelta::minutes(minutes),
                opd: opd.map(str::to_string),
                state: state.into(),
                previous: None,
                evidence: serde_json::json!({}),
                message: state.into(),
            })
            .unwrap();
    }
}

fn run_report(args: &[&str]) -> Output {
    Command::new(jatah())
        .arg("report")
        .args(args)
        .env_remove("JATAH_POLICY")
        .env_remove("JATAH_DATA_DIR")
        .output()
        .unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn jatah_report_prints_a_known_month_exactly_while_the_store_is_open_for_writing() {
    let dir = Scratch::new("reports-cli");
    let data = dir.join("data");
    let b = base_minute();
    write_known_month(&data, b);
    let policy = dir.join("policy.toml");
    std::fs::write(&policy, POLICY).unwrap();
    // The daemon's own connection stays open meanwhile.
    let _writer = HistoryStore::open(&data, Asia::Makassar).unwrap();
    let month = month_of(b);
    let (d, p) = (data.to_str().unwrap(), policy.to_str().unwrap());

    let out = run_report(&[
        "--month",
        &month,
        "--data-dir",
        d,
        "--policy",
        p,
        "--format",
        "csv",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let csv = text(&out.stdout);
    let lines: Vec<&str> = csv.lines().collect();
    assert!(lines[0].starts_with("month,timezone,resolution,kind,id,download_bytes,"));
    assert_eq!(
        lines[1],
        format!(
            "{month},Asia/Makassar,minute,opd,dinkes,37875000000,7125000000,110000000,12000000,\
             95000000,9500000,1.05,1.67,0.50,0.00,0.00,0.00,0.00,,,,,"
        )
    );
    assert_eq!(
        lines[2],
        format!(
            "{month},Asia/Makassar,minute,opd,bappeda,0,0,0,0,,,,,0.00,0.00,0.00,0.00,0.00,,,,,"
        )
    );
    assert_eq!(
        lines[3],
        format!(
            "{month},Asia/Makassar,minute,uplink,download,,,,,,,,,,,,0.00,0.10,100000000,0.02,2,60000000,30000000"
        )
    );
    assert_eq!(lines.len(), 5);

    let out = run_report(&[
        "--month",
        &month,
        "--data-dir",
        d,
        "--policy",
        p,
        "--format",
        "csv",
        "--separator",
        ";",
    ]);
    assert!(
        text(&out.stdout)
            .lines()
            .nth(1)
            .unwrap()
            .contains(";9500000;1,05;1,67;0,50;")
    );

    let out = run_report(&["--month", &month, "--data-dir", d, "--policy", p]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let md = text(&out.stdout);
    println!("{md}");
    for want in [
        "| dinkes | 37.88 GB | 7.12 GB | 37875000000 | 7125000000 | 110.0 Mbit/s | 12.0 Mbit/s | 95.0 Mbit/s | 9.5 Mbit/s | 1.05 | 1.67 |",
        "| bappeda | 0 B | 0 B | 0 | 0 | 0 bit/s | 0 bit/s | - | - | - | - |",
        "| dinkes | 0.50 | 0.00 | 0.00 | 0.00 | 0.00 |",
        "| download | 100.0 Mbit/s | 0.02 | 2 | 60.0 Mbit/s | 30.0 Mbit/s |",
        "0.00 h upstream_degraded, 0.10 h upstream_down",
        "Rates from per-minute samples.",
    ] {
        assert!(md.contains(want), "missing {want:?} in\n{md}");
    }

    // A month without data says so; bad input is exit 1 with a reason.
    let out = run_report(&["--month", "1999-01", "--data-dir", d, "--policy", p]);
    assert!(out.status.success());
    assert!(
        text(&out.stdout).contains("**No data**"),
        "{}",
        text(&out.stdout)
    );
    assert!(text(&out.stderr).contains("no usage recorded for 1999-01"));
    let out = run_report(&["--month", "2026-13", "--data-dir", d]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("--month \"2026-13\" is not a month: write YYYY-MM"),
        "{}",
        text(&out.stderr)
    );
    let missing = dir.join("nowhere");
    let out = run_report(&["--month", &month, "--data-dir", missing.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("there is no usage history at"),
        "{}",
        text(&out.stderr)
    );
    assert!(!missing.exists(), "a report creates nothing");
}

fn app_state(with_history: Option<&Path>) -> Arc<AppState> {
    let policy = jatah::policy::parse(POLICY, "reports-test.toml").unwrap();
    let mut tokens = Tokens::with_admin(ADMIN);
    tokens.add("dinkes-op", Access::Opd("dinkes".into()), DINKES);
    let view = PolicyView {
        policy,
        slots: Default::default(),
        retired: Default::default(),
        source: "reports-test.toml".into(),
    };
    let state = AppState::builder(view, tokens).build();
    match with_history {
        Some(dir) => {
            *state.history.store.lock().unwrap() =
                Some(HistoryStore::open(dir, Asia::Makassar).unwrap())
        }
        None => *state.history.error.lock().unwrap() = Some("disk full".into()),
    }
    Arc::new(state)
}

async fn get(
    state: &Arc<AppState>,
    path: &str,
    token: Option<&str>,
) -> (StatusCode, String, String) {
    let mut req = Request::get(path);
    if let Some(t) = token {
        req = req.header(header::AUTHORIZATION, format!("Bearer {t}"));
    }
    let res = router(state.clone())
        .oneshot(req.body(Body::empty()).unwrap())
        .await
        .unwrap();
    let status = res.status();
    let ctype = res
        .headers()
        .get(header::CONTENT_TYPE)
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    let body = axum::body::to_bytes(res.into_body(), 1 << 24)
        .await
        .unwrap();
    (status, ctype, String::from_utf8(body.to_vec()).unwrap())
}

#[tokio::test]
async fn the_api_serves_the_same_month_as_json_and_csv_scoped_to_the_token() {
    let dir = Scratch::new("reports-api");
    let b = base_minute();
    write_known_month(dir.path(), b);
    let month = month_of(b);
    let state = app_state(Some(dir.path()));
    let path = format!("/api/v1/reports/monthly?month={month}");

    let (s, ctype, body) = get(&state, &path, Some(ADMIN)).await;
    assert_eq!(s, StatusCode::OK, "{body}");
    assert!(ctype.starts_with("application/json"));
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["month"], month.as_str());
    assert_eq!(v["timezone"], "Asia/Makassar");
    assert_eq!(v["resolution"], "minute");
    assert_eq!(v["has_data"], true);
    let ids: Vec<&str> = v["opds"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["opd"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["dinkes", "bappeda"]);
    let d = &v["opds"][0];
    assert_eq!(d["download"]["bytes"], 37_875_000_000u64);
    assert_eq!(d["download"]["peak_bps"], 110_000_000);
    assert_eq!(d["download"]["p95_bps"], 95_000_000);
    assert_eq!(d["download"]["hours_at_ceiling"], 1.05);
    assert_eq!(d["upload"]["bytes"], 7_125_000_000u64);
    assert_eq!(d["upload"]["hours_at_ceiling"], 1.67);
    assert_eq!(d["state_hours"]["saturated"], 0.5);
    assert_eq!(v["opds"][1]["download"]["bytes"], 0);
    assert_eq!(v["opds"][1]["download"]["p95_bps"], Value::Null);
    let u = &v["uplink"];
    assert_eq!(u["download"]["contracted_bps"], 100_000_000);
    assert_eq!(u["download"]["hours_below_80_percent"], 0.02);
    assert_eq!(u["download"]["mean_delivered_bps"], 60_000_000);
    assert_eq!(u["download"]["lowest_delivered_bps"], 30_000_000);
    assert_eq!(u["upload"]["contracted_bps"], 50_000_000);
    assert_eq!(u["hours_upstream_down"], 0.1);

    // An OPD's token: its own row only, the uplink as well.
    let (s, _, body) = get(&state, &path, Some(DINKES)).await;
    assert_eq!(s, StatusCode::OK);
    let o: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(o["opds"].as_array().unwrap().len(), 1);
    assert_eq!(o["opds"][0], v["opds"][0]);
    assert!(!body.contains("bappeda"), "{body}");
    assert_eq!(o["uplink"], v["uplink"]);

    // CSV, with the separator spreadsheets set to Indonesian read.
    let (s, ctype, csv) = get(
        &state,
        &format!("{path}&format=csv&separator=semicolon"),
        Some(DINKES),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    assert!(ctype.starts_with("text/csv"), "{ctype}");
    let lines: Vec<&str> = csv.lines().collect();
    assert!(lines[0].starts_with("month;timezone;resolution;kind;id;"));
    assert_eq!(
        lines[1],
        format!(
            "{month};Asia/Makassar;minute;opd;dinkes;37875000000;7125000000;110000000;12000000;\
             95000000;9500000;1,05;1,67;0,50;0,00;0,00;0,00;0,00;;;;;"
        )
    );
    assert_eq!(lines.len(), 4, "dinkes and the two uplink rows: {csv}");

    // Bad parameters are 400 naming them; no token is 401.
    for (query, parameter) in [
        ("month=2026-13", "month"),
        ("month=november", "month"),
        ("format=xml", "format"),
        ("format=csv&separator=tab", "separator"),
    ] {
        let (s, ctype, body) = get(
            &state,
            &format!("/api/v1/reports/monthly?{query}"),
            Some(ADMIN),
        )
        .await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{query}: {body}");
        assert_eq!(ctype, "application/problem+json");
        let p: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(p["parameter"], parameter, "{query}: {body}");
    }
    let (s, _, _) = get(&state, &path, None).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);

    // The current month by default, empty here.
    let (s, _, body) = get(&state, "/api/v1/reports/monthly?month=1999-01", Some(ADMIN)).await;
    assert_eq!(s, StatusCode::OK);
    let e: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(e["has_data"], false);

    // Documented in the OpenAPI document, every field of the answer.
    let (_, _, doc) = get(&state, "/openapi.json", None).await;
    let doc: Value = serde_json::from_str(&doc).unwrap();
    assert!(doc["paths"]["/api/v1/reports/monthly"]["get"].is_object());
    let schema = &doc["components"]["schemas"]["MonthlyReport"]["properties"];
    for key in v.as_object().unwrap().keys() {
        assert!(
            schema[key].is_object(),
            "MonthlyReport.{key} is undocumented"
        );
    }
}

#[tokio::test]
async fn without_history_the_report_is_503() {
    let state = app_state(None);
    let (s, _, body) = get(&state, "/api/v1/reports/monthly?month=2026-11", Some(ADMIN)).await;
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert!(body.contains("disk full"), "{body}");
}

fn json_of(lab: &Lab, path: &str, token: &str) -> (u16, Value) {
    let (s, body) = lab.http_get_as(path, Some(token)).unwrap();
    (s, serde_json::from_str(&body).unwrap_or(Value::Null))
}

fn opd_bytes(v: &Value, id: &str) -> Option<(u64, u64)> {
    v["opds"]
        .as_array()?
        .iter()
        .find(|o| o["opd"] == id)
        .map(|o| {
            (
                o["download"]["bytes"].as_u64().unwrap(),
                o["upload"]["bytes"].as_u64().unwrap(),
            )
        })
}

/// The report of a running jatah after real traffic: the office that
/// had traffic shows it, the one that had none shows zero.
#[test]
fn a_running_jatah_reports_the_traffic_of_this_month() {
    require_root();
    let _one = one_lab_at_a_time();
    let mut lab = Lab::build(dinsos_and_bpbd_lab("jt-rep", true)).unwrap();
    // Cursors at zero for both offices, as a store that had seen them
    // would hold: the daemon's first minute then counts from its start
    // instead of only setting the cursors.
    let data = lab.dir().join("data");
    {
        let mut store = HistoryStore::open(&data, Asia::Makassar).unwrap();
        let now = Utc::now();
        let before = DateTime::from_timestamp(now.timestamp() / 60 * 60 - 60, 0).unwrap();
        let zero = |opd: &str| CounterReading {
            opd: opd.into(),
            ..Default::default()
        };
        store
            .record_minute(before, &[zero("dinsos"), zero("bpbd")])
            .unwrap();
    }
    lab.start_daemon(jatah()).unwrap();
    let child = lab
        .spawn_iperf(lab.opd_index("dinsos").unwrap(), Direction::Download, 3, 2)
        .unwrap();
    let got = jatah::lab::wait_iperf(child).unwrap();
    assert!(got.bytes > 1_000_000, "iperf3 moved {} bytes", got.bytes);

    // The daemon writes a minute at the next minute's first second.
    let path = "/api/v1/reports/monthly";
    let deadline = Instant::now() + Duration::from_secs(90);
    let report = loop {
        let (s, v) = json_of(&lab, path, LAB_ADMIN_TOKEN);
        assert_eq!(s, 200, "{v}");
        if opd_bytes(&v, "dinsos").is_some_and(|(d, _)| d > 0) {
            break v;
        }
        assert!(
            Instant::now() < deadline,
            "no minute recorded: {v}\n{}",
            lab.daemon_log()
        );
        std::thread::sleep(Duration::from_millis(500));
    };
    let (down, up) = opd_bytes(&report, "dinsos").unwrap();
    assert!(
        down >= got.bytes,
        "{down} bytes counted, iperf3 received {}",
        got.bytes
    );
    assert!(up > 0, "the ACKs went up");
    assert_eq!(
        opd_bytes(&report, "bpbd"),
        Some((0, 0)),
        "no traffic, no volume"
    );
    assert_eq!(report["month"], month_of(Utc::now()).as_str());
    assert!(report["opds"][0]["download"]["peak_bps"].as_u64().unwrap() > 0);

    // Each OPD's token sees its own row only.
    for (own, other) in [("dinsos", "bpbd"), ("bpbd", "dinsos")] {
        let (s, v) = json_of(&lab, path, &lab_opd_token(own));
        assert_eq!(s, 200);
        assert!(opd_bytes(&v, own).is_some());
        assert!(opd_bytes(&v, other).is_none(), "{own} sees {other}: {v}");
    }
    let (s, v) = json_of(&lab, &format!("{path}?month=2026-13"), LAB_ADMIN_TOKEN);
    assert_eq!((s, v["parameter"].as_str()), (400, Some("month")), "{v}");

    // `jatah report` reads the same store beside the running daemon.
    let policy = lab.policy_path.to_str().unwrap().to_string();
    let out = run_report(&[
        "--data-dir",
        data.to_str().unwrap(),
        "--policy",
        &policy,
        "--format",
        "csv",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let csv = text(&out.stdout);
    let row = |id: &str| -> Vec<String> {
        csv.lines()
            .find(|l| l.contains(&format!(",opd,{id},")))
            .unwrap_or_else(|| panic!("no {id} row in {csv}"))
            .split(',')
            .map(str::to_string)
            .collect()
    };
    assert!(row("dinsos")[5].parse::<u64>().unwrap() >= down, "{csv}");
    assert_eq!(row("bpbd")[5..7], ["0", "0"], "{csv}");
    let out = run_report(&["--data-dir", data.to_str().unwrap(), "--policy", &policy]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    println!("{}", text(&out.stdout));
    assert!(lab.daemon_running(), "the daemon kept running");
}
