//! The HTTP API over real BPF maps (a private bpffs, packets pushed through
//! the classifier with BPF_PROG_TEST_RUN) and a real history store: every
//! endpoint, every error case, token scoping, problem+json, OpenAPI.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use chrono::{TimeZone, Utc};
use jatah::datapath::{CounterReader, Datapath, SkbContext};
use jatah::gateway::opd_prefixes;
use jatah::history::{CounterReading, HistoryStore};
use jatah::http::auth::{Access, Tokens};
use jatah::http::router;
use jatah::lab::netns::{BpffsMount, require_root};
use jatah::runtime::state::{AppState, PolicyView};
use jatah_common::program_names;
use serde_json::Value;
use tower::ServiceExt;

const POLICY: &str = r#"
[gateway]
wan = "eth0"
lan = ["eth1"]
download = "100M"
upload = "50M"

[[opd]]
id = "dinkes"
name = "Dinas Kesehatan"
subnets = ["10.20.1.0/24"]
download = { guaranteed = "20M", ceiling = "40M" }
upload = { guaranteed = "5M", ceiling = "10M" }
probe = "10.20.1.2"

[[opd]]
id = "bappeda"
name = "Bappeda"
subnets = ["10.20.2.0/24"]
download = { guaranteed = "10M", ceiling = "20M" }
upload = { guaranteed = "5M", ceiling = "10M" }
"#;

const ADMIN: &str = "admin-secret";
const DINKES: &str = "dinkes-secret";

struct Fixture {
    state: Arc<AppState>,
    _dp: Datapath,
    _bpffs: BpffsMount,
    data_dir: PathBuf,
    /// Bytes of the frames pushed through the classifier for dinkes.
    dinkes_bytes: u64,
}

impl Drop for Fixture {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.data_dir);
    }
}

fn frame_to(dst: [u8; 4], payload: usize) -> Vec<u8> {
    let mut f = vec![2, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 2, 0x08, 0x00];
    let total = 20 + 8 + payload;
    f.extend_from_slice(&[
        0x45,
        0,
        (total >> 8) as u8,
        total as u8,
        0,
        0,
        0,
        0,
        64,
        17,
        0,
        0,
    ]);
    f.extend_from_slice(&[198, 51, 100, 1]);
    f.extend_from_slice(&dst);
    f.extend_from_slice(&[0x30, 0x39, 0x00, 0x35, 0, (8 + payload) as u8, 0, 0]);
    f.extend(std::iter::repeat_n(0u8, payload));
    f
}

fn fixture(anonymous_summary: bool, with_history: bool) -> Fixture {
    require_root();
    let policy = jatah::policy::parse(POLICY, "api-test.toml").unwrap();
    let bpffs = BpffsMount::new("jt-api").unwrap();
    let mut dp = Datapath::load_pinned(bpffs.path()).unwrap();
    dp.sync_opds(&opd_prefixes(&policy)).unwrap();
    let f = frame_to([10, 20, 1, 7], 100);
    dp.test_run(program_names::DOWNLOAD, &f, &SkbContext::forwarded(), 3)
        .unwrap();
    let mut tokens = Tokens::with_admin(ADMIN);
    tokens.add("dinkes-op", Access::Opd("dinkes".into()), DINKES);
    tokens.anonymous_summary = anonymous_summary;
    let view = PolicyView {
        policy: policy.clone(),
        slots: dp.slots().clone(),
        retired: Default::default(),
        source: "api-test.toml".into(),
    };
    let state = AppState::builder(view, tokens)
        .counters(CounterReader::open(bpffs.path()).unwrap())
        .build();
    // The API answers from the sampler's readings, as in the daemon: take one.
    jatah::runtime::sampler::sample_once(&state, &mut Default::default(), Utc::now(), None);
    let data_dir =
        std::env::temp_dir().join(format!("jatah-api-{}", jatah::lab::netns::unique_token()));
    if with_history {
        let mut store = HistoryStore::open(&data_dir, policy.gateway.timezone).unwrap();
        // Two minutes of dinkes usage, an hour ago (first reading sets the cursor).
        let t0 = Utc::now() - chrono::Duration::hours(1);
        let t0 = Utc.timestamp_opt(t0.timestamp() / 60 * 60, 0).unwrap();
        for (i, total) in [0u64, 6_000_000, 9_000_000].into_iter().enumerate() {
            store
                .record_minute(
                    t0 + chrono::Duration::minutes(i as i64),
                    &[CounterReading {
                        opd: "dinkes".into(),
                        download_bytes_total: total,
                        upload_bytes_total: total / 10,
                        peak_download_bps: 900_000,
                        peak_upload_bps: 90_000,
                    }],
                )
                .unwrap();
        }
        *state.history.store.lock().unwrap() = Some(store);
    } else {
        *state.history.error.lock().unwrap() = Some("disk full".into());
    }
    Fixture {
        state: Arc::new(state),
        _dp: dp,
        _bpffs: bpffs,
        data_dir,
        dinkes_bytes: 3 * f.len() as u64,
    }
}

async fn get(fx: &Fixture, path: &str, token: Option<&str>) -> (StatusCode, String, Vec<u8>) {
    let mut req = Request::get(path);
    if let Some(t) = token {
        req = req.header(header::AUTHORIZATION, format!("Bearer {t}"));
    }
    let res = router(fx.state.clone())
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
    (status, ctype, body.to_vec())
}

async fn json(fx: &Fixture, path: &str, token: Option<&str>) -> (StatusCode, Value) {
    let (status, ctype, body) = get(fx, path, token).await;
    if status.is_success() {
        assert!(ctype.starts_with("application/json"), "{path}: {ctype}");
    } else {
        assert_eq!(
            ctype, "application/problem+json",
            "{path}: errors are problem+json"
        );
    }
    let v: Value = serde_json::from_slice(&body).unwrap();
    if !status.is_success() {
        assert_eq!(v["status"], status.as_u16(), "problem status field");
        assert!(v["title"].is_string() && v["detail"].is_string() && v["type"].is_string());
    }
    (status, v)
}

#[tokio::test]
async fn admin_sees_every_opd_with_allocation_and_kernel_counters() {
    let fx = fixture(false, true);
    let (s, v) = json(&fx, "/api/v1/opds", Some(ADMIN)).await;
    assert_eq!(s, StatusCode::OK);
    let opds = v["opds"].as_array().unwrap();
    assert_eq!(opds.len(), 2);
    let dinkes = opds.iter().find(|o| o["id"] == "dinkes").unwrap();
    assert_eq!(dinkes["download"]["guaranteed_bps"], 20_000_000);
    assert_eq!(dinkes["download"]["ceiling_bps"], 40_000_000);
    assert_eq!(dinkes["download"]["bytes_total"], fx.dinkes_bytes);
    assert_eq!(dinkes["download"]["packets_total"], 3);
    assert_eq!(dinkes["upload"]["bytes_total"], 0);
}

#[tokio::test]
async fn current_rates_and_percent_of_ceiling_come_from_the_daemons_samples() {
    let fx = fixture(false, true);
    {
        let t0 = Instant::now();
        for s in 0..=10u64 {
            // 2.5 MB/s = 20 Mbit/s = half of dinkes' 40M ceiling.
            let read = [(
                "dinkes".to_string(),
                jatah_common::Counters {
                    bytes: [s * 2_500_000, 0],
                    packets: [0, 0],
                },
            )]
            .into_iter()
            .collect();
            fx.state.traffic.record(
                t0 + Duration::from_secs(s),
                &read,
                None,
                &fx.state.view().slots,
            );
        }
    }
    let (_, v) = json(&fx, "/api/v1/opds/dinkes", Some(ADMIN)).await;
    assert_eq!(v["download"]["rate"]["last_1s_bps"], 20_000_000);
    assert_eq!(v["download"]["rate"]["last_10s_bps"], 20_000_000);
    assert_eq!(v["download"]["ceiling_percent"], 50.0);
    let (_, g) = json(&fx, "/api/v1/gateway", Some(ADMIN)).await;
    assert_eq!(g["download"]["rate"]["last_10s_bps"], 20_000_000);
    assert_eq!(g["download"]["capacity_bps"], 100_000_000);
    assert_eq!(g["upload"]["guaranteed_sum_bps"], 10_000_000);
}

#[tokio::test]
async fn an_opd_token_sees_only_its_own_opd_and_others_look_nonexistent() {
    let fx = fixture(false, true);
    let (s, v) = json(&fx, "/api/v1/opds", Some(DINKES)).await;
    assert_eq!(s, StatusCode::OK);
    let ids: Vec<&str> = v["opds"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["dinkes"]);
    assert_eq!(
        json(&fx, "/api/v1/opds/dinkes", Some(DINKES)).await.0,
        StatusCode::OK
    );
    let (s_other, other) = json(&fx, "/api/v1/opds/bappeda", Some(DINKES)).await;
    let (s_none, none) = json(&fx, "/api/v1/opds/nosuch", Some(DINKES)).await;
    assert_eq!(s_other, StatusCode::NOT_FOUND);
    assert_eq!(s_none, StatusCode::NOT_FOUND);
    assert_eq!(
        other["type"], none["type"],
        "another OPD's data is indistinguishable from none"
    );
    for path in [
        "/api/v1/opds/bappeda/usage",
        "/api/v1/opds/bappeda/usage.csv",
    ] {
        assert_eq!(
            json(&fx, path, Some(DINKES)).await.0,
            StatusCode::NOT_FOUND,
            "{path}"
        );
    }
    // The admin sees bappeda.
    assert_eq!(
        json(&fx, "/api/v1/opds/bappeda", Some(ADMIN)).await.0,
        StatusCode::OK
    );
}

#[tokio::test]
async fn no_token_is_401_unless_the_summary_is_open_and_usage_always_needs_one() {
    let closed = fixture(false, true);
    for path in [
        "/api/v1/opds",
        "/api/v1/gateway",
        "/api/v1/gateway/delivered",
        "/api/v1/opds/dinkes",
        "/api/v1/opds/dinkes/usage",
    ] {
        assert_eq!(
            json(&closed, path, None).await.0,
            StatusCode::UNAUTHORIZED,
            "{path}"
        );
        assert_eq!(
            json(&closed, path, Some("wrong")).await.0,
            StatusCode::UNAUTHORIZED,
            "{path}"
        );
    }
    let open = fixture(true, true);
    assert_eq!(json(&open, "/api/v1/opds", None).await.0, StatusCode::OK);
    assert_eq!(json(&open, "/api/v1/gateway", None).await.0, StatusCode::OK);
    assert_eq!(
        json(&open, "/api/v1/gateway/delivered", None).await.0,
        StatusCode::OK,
        "the same access as GET /api/v1/gateway"
    );
    assert_eq!(
        json(&open, "/api/v1/opds/dinkes", None).await.0,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        json(&open, "/api/v1/opds/dinkes/usage", None).await.0,
        StatusCode::UNAUTHORIZED
    );
    // A bad token is refused even where anonymous reads are allowed.
    assert_eq!(
        json(&open, "/api/v1/opds", Some("wrong")).await.0,
        StatusCode::UNAUTHORIZED
    );
    // Open endpoints.
    assert_eq!(get(&closed, "/metrics", None).await.0, StatusCode::OK);
    assert_eq!(get(&closed, "/openapi.json", None).await.0, StatusCode::OK);
}

#[tokio::test]
async fn usage_answers_from_history_as_json_and_csv() {
    let fx = fixture(false, true);
    let from = (Utc::now() - chrono::Duration::hours(2)).to_rfc3339();
    let to = Utc::now().to_rfc3339();
    let q = format!("from={}&to={}&step=1h", urlenc(&from), urlenc(&to));
    let (s, v) = json(&fx, &format!("/api/v1/opds/dinkes/usage?{q}"), Some(DINKES)).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let points = v["points"].as_array().unwrap();
    let down: u64 = points
        .iter()
        .map(|p| p["download_bytes"].as_u64().unwrap())
        .sum();
    let up: u64 = points
        .iter()
        .map(|p| p["upload_bytes"].as_u64().unwrap())
        .sum();
    assert_eq!(down, 9_000_000);
    assert_eq!(up, 900_000);
    assert_eq!(v["step"], "1h");
    assert_eq!(v["timezone"], "Asia/Makassar");

    let (s, ctype, body) = get(
        &fx,
        &format!("/api/v1/opds/dinkes/usage.csv?{q}"),
        Some(DINKES),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    assert!(ctype.starts_with("text/csv"), "{ctype}");
    let csv = String::from_utf8(body).unwrap();
    let mut lines = csv.lines();
    assert_eq!(
        lines.next().unwrap(),
        "start,download_bytes,upload_bytes,peak_download_bps,peak_upload_bps"
    );
    let rows: Vec<&str> = lines.collect();
    let csv_down: u64 = rows
        .iter()
        .map(|l| l.split(',').nth(1).unwrap().parse::<u64>().unwrap())
        .sum();
    assert_eq!(csv_down, 9_000_000, "CSV carries the same numbers as JSON");
    // Starts are the gateway's local hours, with their offset (WITA).
    for (row, point) in rows.iter().zip(points) {
        let start = row.split(',').next().unwrap();
        assert!(start.ends_with("+08:00"), "{row}");
        let local = chrono::DateTime::parse_from_rfc3339(start).unwrap();
        assert_eq!(local.to_rfc3339(), start, "{row}");
        let json_start =
            chrono::DateTime::parse_from_rfc3339(point["start"].as_str().unwrap()).unwrap();
        assert_eq!(
            local, json_start,
            "the same instant as the JSON's UTC start"
        );
    }
    // Spreadsheets set to Indonesian read `;`.
    let (s, _, body) = get(
        &fx,
        &format!("/api/v1/opds/dinkes/usage.csv?{q}&separator=semicolon"),
        Some(DINKES),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    let semi = String::from_utf8(body).unwrap();
    assert_eq!(csv.replace(',', ";"), semi);
    let (s, v) = json(
        &fx,
        &format!("/api/v1/opds/dinkes/usage.csv?{q}&separator=tab"),
        Some(DINKES),
    )
    .await;
    assert_eq!(
        (s, v["parameter"].as_str()),
        (StatusCode::BAD_REQUEST, Some("separator"))
    );

    // Today's volume on the OPD itself.
    let (_, d) = json(&fx, "/api/v1/opds/dinkes", Some(ADMIN)).await;
    assert!(d["history_available"].as_bool().unwrap());
}

#[tokio::test]
async fn bad_time_ranges_and_steps_are_400_naming_the_parameter() {
    let fx = fixture(false, true);
    for (query, parameter) in [
        ("from=yesterday", "from"),
        ("to=2026-13-01T00:00:00Z", "to"),
        ("step=5m", "step"),
        ("from=2026-11-02T00:00:00Z&to=2026-11-01T00:00:00Z", "from"),
        (
            "from=2020-01-01T00:00:00Z&to=2026-11-01T00:00:00Z&step=1m",
            "step",
        ),
    ] {
        let (s, v) = json(
            &fx,
            &format!("/api/v1/opds/dinkes/usage?{query}"),
            Some(ADMIN),
        )
        .await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{query}: {v}");
        assert_eq!(v["parameter"], parameter, "{query}: {v}");
    }
}

#[tokio::test]
async fn history_unavailable_is_503_and_never_wrong_numbers() {
    let fx = fixture(false, false);
    let (s, v) = json(&fx, "/api/v1/opds/dinkes/usage", Some(ADMIN)).await;
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE);
    assert!(v["detail"].as_str().unwrap().contains("disk full"), "{v}");
    let (s, d) = json(&fx, "/api/v1/opds/dinkes", Some(ADMIN)).await;
    assert_eq!(s, StatusCode::OK, "the OPD itself still answers");
    assert_eq!(d["history_available"], false);
    assert!(d["today"].is_null());
    assert_eq!(
        d["download"]["bytes_total"], fx.dinkes_bytes,
        "live counters still there"
    );
}

#[tokio::test]
async fn unknown_endpoints_are_problem_json_404() {
    let fx = fixture(false, true);
    let (s, _) = json(&fx, "/api/v1/nope", Some(ADMIN)).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
}

fn urlenc(s: &str) -> String {
    jatah::lab::url_encode(s)
}

/// Every `$ref` in the document points at a schema that exists.
fn refs(v: &Value, out: &mut BTreeSet<String>) {
    match v {
        Value::Object(m) => {
            for (k, x) in m {
                if k == "$ref" {
                    out.insert(x.as_str().unwrap().to_string());
                }
                refs(x, out);
            }
        }
        Value::Array(a) => a.iter().for_each(|x| refs(x, out)),
        _ => {}
    }
}

#[tokio::test]
async fn the_openapi_document_covers_every_endpoint_and_resolves() {
    let fx = fixture(false, true);
    let (s, doc) = json(&fx, "/openapi.json", None).await;
    assert_eq!(s, StatusCode::OK);
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    for p in [
        "/api/v1/opds",
        "/api/v1/opds/{id}",
        "/api/v1/opds/{id}/usage",
        "/api/v1/opds/{id}/usage.csv",
        "/api/v1/gateway",
        "/api/v1/gateway/delivered",
        "/api/v1/reports/monthly",
        "/api/v1/status",
        "/api/v1/status/overview",
        "/api/v1/references/{code}",
    ] {
        assert!(
            doc["paths"][p]["get"].is_object(),
            "{p} missing from /openapi.json"
        );
    }
    let mut all = BTreeSet::new();
    refs(&doc, &mut all);
    assert!(!all.is_empty());
    for r in all {
        let name = r.strip_prefix("#/components/schemas/").unwrap();
        assert!(
            doc["components"]["schemas"][name].is_object(),
            "dangling $ref {r}"
        );
    }
    // The documented response shape matches what the handler returns.
    let summary = &doc["components"]["schemas"]["OpdSummary"]["properties"];
    let (_, v) = json(&fx, "/api/v1/opds", Some(ADMIN)).await;
    for key in v["opds"][0].as_object().unwrap().keys() {
        assert!(summary[key].is_object(), "OpdSummary.{key} is undocumented");
    }
    // The status page's data, and the events it lists.
    let page = &doc["components"]["schemas"]["StatusPage"]["properties"];
    let (_, v) = json(&fx, "/api/v1/status", Some(DINKES)).await;
    for key in v.as_object().unwrap().keys() {
        assert!(page[key].is_object(), "StatusPage.{key} is undocumented");
    }
    assert!(
        doc["components"]["schemas"]["EventBody"]["properties"]["reference"].is_object(),
        "EventBody.reference is undocumented"
    );
    // What the uplink delivered in a month.
    let month = &doc["components"]["schemas"]["DeliveredMonth"]["properties"];
    let (_, v) = json(&fx, "/api/v1/gateway/delivered", Some(ADMIN)).await;
    for key in v.as_object().unwrap().keys() {
        assert!(
            month[key].is_object(),
            "DeliveredMonth.{key} is undocumented"
        );
    }
}

#[tokio::test]
async fn the_real_server_answers_on_a_port_and_shuts_down_gracefully() {
    let fx = fixture(false, true);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let token = tokio_util::sync::CancellationToken::new();
    let stop = token.clone();
    let server = tokio::spawn(jatah::http::serve(
        "api",
        listener,
        router(fx.state.clone()),
        stop,
    ));
    let (status, body) = tokio::task::spawn_blocking(move || {
        jatah::cli::client::get(addr, "/api/v1/opds", Some(ADMIN))
    })
    .await
    .unwrap()
    .unwrap();
    assert_eq!(status, 200);
    assert!(body.contains("\"dinkes\""));
    token.cancel();
    tokio::time::timeout(Duration::from_secs(5), server)
        .await
        .expect("server stops after the signal")
        .unwrap();
}

/// Reads from `stream` until the server closes it or `limit` passes;
/// returns what was read and when the connection closed (None: still open).
fn read_until_closed(
    stream: &mut std::net::TcpStream,
    limit: Duration,
) -> (String, Option<Duration>) {
    use std::io::Read;
    let t0 = Instant::now();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    stream
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    while t0.elapsed() < limit {
        match stream.read(&mut buf) {
            Ok(0) => return (String::from_utf8_lossy(&got).into(), Some(t0.elapsed())),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => return (String::from_utf8_lossy(&got).into(), Some(t0.elapsed())),
        }
    }
    (String::from_utf8_lossy(&got).into(), None)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_clients_time_out_and_never_hold_up_others() {
    use std::io::Write;
    let fx = fixture(false, true);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let token = tokio_util::sync::CancellationToken::new();
    let server = tokio::spawn(jatah::http::serve(
        "api",
        listener,
        router(fx.state.clone()),
        token.clone(),
    ));
    let (headers, body, other) = tokio::task::spawn_blocking(move || {
        // Slowloris: headers begun, never finished.
        let mut slow_headers = std::net::TcpStream::connect(addr).unwrap();
        slow_headers
            .write_all(b"GET /api/v1/opds HTTP/1.1\r\nHost: jatah\r\nX-Slow: 1")
            .unwrap();
        // A body announced and never sent.
        let mut slow_body = std::net::TcpStream::connect(addr).unwrap();
        slow_body
            .write_all(
                format!(
                    "POST /api/v1/policy/plan HTTP/1.1\r\nHost: jatah\r\n\
                     Authorization: Bearer {ADMIN}\r\nContent-Length: 1000\r\n\r\n[gateway]\n"
                )
                .as_bytes(),
            )
            .unwrap();
        // Meanwhile everyone else is served.
        let other = jatah::cli::client::get(addr, "/api/v1/opds", Some(ADMIN)).unwrap();
        let body_thread =
            std::thread::spawn(move || read_until_closed(&mut slow_body, Duration::from_secs(30)));
        let headers = read_until_closed(&mut slow_headers, Duration::from_secs(30));
        (headers, body_thread.join().unwrap(), other)
    })
    .await
    .unwrap();
    assert_eq!(other.0, 200, "another client is served at once");
    let (_, closed) = headers;
    eprintln!("unfinished headers: closed after {closed:?}");
    assert!(
        closed.is_some_and(|d| d >= Duration::from_secs(5) && d <= Duration::from_secs(20)),
        "unfinished headers are cut off after {:?}: {closed:?}",
        jatah::http::HEADER_READ_TIMEOUT
    );
    let (answer, closed) = body;
    eprintln!(
        "unfinished body: {:?} after {closed:?}",
        answer.lines().next()
    );
    assert!(
        answer.starts_with("HTTP/1.1 408"),
        "an unfinished body gets 408 Request Timeout: {answer:?}"
    );
    token.cancel();
    tokio::time::timeout(Duration::from_secs(15), server)
        .await
        .expect("server stops after the signal")
        .unwrap();
}

#[tokio::test]
async fn every_endpoint_answers_every_kind_of_caller_as_expected() {
    let fx = fixture(false, true);
    const OTHER: &str = "bappeda-secret";
    let mut tokens_fx = fx;
    {
        // An opd:bappeda token as well.
        let state = Arc::get_mut(&mut tokens_fx.state).expect("sole owner");
        state
            .tokens
            .add("bappeda-op", Access::Opd("bappeda".into()), OTHER);
    }
    let fx = tokens_fx;
    // (path, none, bad, other OPD's token, own (dinkes) token, admin)
    let matrix: &[(&str, [u16; 5])] = &[
        ("/healthz", [503, 503, 503, 503, 503]),
        ("/metrics", [200, 200, 200, 200, 200]),
        ("/openapi.json", [200, 200, 200, 200, 200]),
        ("/api/v1/opds", [401, 401, 200, 200, 200]),
        ("/api/v1/gateway", [401, 401, 200, 200, 200]),
        ("/api/v1/gateway/delivered", [401, 401, 200, 200, 200]),
        ("/api/v1/reports/monthly", [401, 401, 200, 200, 200]),
        ("/api/v1/opds/dinkes", [401, 401, 404, 200, 200]),
        ("/api/v1/opds/dinkes/usage", [401, 401, 404, 200, 200]),
        ("/api/v1/opds/dinkes/usage.csv", [401, 401, 404, 200, 200]),
        ("/api/v1/opds/dinkes/diagnosis", [401, 401, 404, 200, 200]),
        ("/api/v1/events", [401, 401, 200, 200, 200]),
        ("/api/v1/events?opd=dinkes", [401, 401, 404, 200, 200]),
        // No peer address here (as behind no listener): no token is an
        // unknown visitor; an admin must name the OPD.
        ("/api/v1/status", [401, 401, 200, 200, 400]),
        ("/api/v1/status?opd=dinkes", [401, 401, 404, 200, 200]),
        ("/api/v1/status/overview", [401, 401, 403, 403, 200]),
        ("/api/v1/references/0000-0000", [401, 401, 404, 404, 404]),
        ("/api/v1/references/UUUU-UUUU", [401, 401, 400, 400, 400]),
    ];
    for (path, want) in matrix {
        for (k, token) in [None, Some("wrong"), Some(OTHER), Some(DINKES), Some(ADMIN)]
            .into_iter()
            .enumerate()
        {
            let (status, _, _) = get(&fx, path, token).await;
            assert_eq!(status.as_u16(), want[k], "{path} with caller #{k}");
        }
    }
    // Admin-only actions.
    for (k, token) in [None, Some("wrong"), Some(OTHER), Some(DINKES)]
        .into_iter()
        .enumerate()
    {
        let mut req = Request::post("/api/v1/policy/reload");
        if let Some(t) = token {
            req = req.header(header::AUTHORIZATION, format!("Bearer {t}"));
        }
        let res = router(fx.state.clone())
            .oneshot(req.body(Body::empty()).unwrap())
            .await
            .unwrap();
        let want = if k < 2 { 401 } else { 403 };
        assert_eq!(res.status().as_u16(), want, "reload with caller #{k}");
    }
}

#[tokio::test]
async fn oversized_query_strings_are_refused_with_414() {
    let fx = fixture(false, true);
    let long = format!("/api/v1/events?opd={}", "x".repeat(jatah::http::MAX_URI));
    let (s, v) = json(&fx, &long, Some(ADMIN)).await;
    assert_eq!(s, StatusCode::URI_TOO_LONG, "{v}");
    assert_eq!(v["type"], "/problems/uri-too-long");
    // Just under the limit is answered (404: no such OPD).
    let fits = format!(
        "/api/v1/events?opd={}",
        "x".repeat(jatah::http::MAX_URI - "/api/v1/events?opd=".len())
    );
    let (s, _) = json(&fx, &fits, Some(ADMIN)).await;
    assert_ne!(s, StatusCode::URI_TOO_LONG);
}

#[tokio::test]
async fn oversized_bodies_are_refused() {
    let fx = fixture(false, true);
    let body = "x".repeat(5 * 1024 * 1024);
    let req = Request::post("/api/v1/policy/plan")
        .header(header::AUTHORIZATION, format!("Bearer {ADMIN}"))
        .header(header::CONTENT_LENGTH, body.len())
        .body(Body::from(body))
        .unwrap();
    let res = router(fx.state.clone()).oneshot(req).await.unwrap();
    assert_eq!(res.status(), StatusCode::PAYLOAD_TOO_LARGE);
}

/// Notes `n` seconds of one direction's delivered estimate from `from`,
/// then records each minute, as the sampler does.
fn short_minutes(
    fx: &Fixture,
    from: chrono::DateTime<Utc>,
    minutes: i64,
    seconds: [Option<jatah::history::DeliveredSecond>; 2],
) {
    let mut guard = fx.state.history.store.lock().unwrap();
    let store = guard.as_mut().unwrap();
    for m in 0..minutes {
        let minute = from + chrono::Duration::minutes(m);
        for s in 0..60 {
            store.note_delivered(minute + chrono::Duration::seconds(s), seconds);
        }
        store.record_minute(minute, &[]).unwrap();
    }
}

#[tokio::test]
async fn delivered_answers_the_hours_a_month_the_isp_delivered_under_80_percent() {
    use jatah::history::DeliveredSecond;
    let fx = fixture(false, true);
    // 5 October 2026, 10:00 WITA: the ISP delivers 30 of the 100 Mbit/s
    // download for 45 minutes, then 90 (not short) for 15; upload is fine.
    let start = Utc.with_ymd_and_hms(2026, 10, 5, 2, 0, 0).unwrap();
    let down = |bps| {
        [
            Some(DeliveredSecond {
                bps,
                contracted_bps: 100_000_000,
                since: None,
            }),
            None,
        ]
    };
    short_minutes(&fx, start, 45, down(30_000_000));
    short_minutes(
        &fx,
        start + chrono::Duration::minutes(45),
        15,
        down(90_000_000),
    );
    // A short minute on 1 November, 00:30 WITA: another month.
    short_minutes(
        &fx,
        Utc.with_ymd_and_hms(2026, 10, 31, 16, 30, 0).unwrap(),
        1,
        down(1),
    );

    let (s, v) = json(&fx, "/api/v1/gateway/delivered?month=2026-10", Some(DINKES)).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["month"], "2026-10");
    assert_eq!(v["timezone"], "Asia/Makassar");
    assert_eq!(v["from"], "2026-09-30T16:00:00Z");
    assert_eq!(v["to"], "2026-10-31T16:00:00Z");
    let d = &v["download"];
    assert_eq!(d["contracted_bps"], 100_000_000u64);
    assert_eq!(d["hours_below_80_percent"], 0.75);
    assert_eq!(d["seconds_below_80_percent"], 45 * 60);
    assert_eq!(d["minutes_with_estimate"], 60);
    assert_eq!(d["lowest"]["delivered_bps"], 30_000_000u64);
    assert_eq!(d["lowest"]["contracted_bps"], 100_000_000u64);
    assert_eq!(d["lowest"]["minute"], "2026-10-05T02:00:00Z");
    let days = d["days"].as_array().unwrap();
    assert_eq!(days.len(), 31, "every day of October");
    assert_eq!(days[4]["date"], "2026-10-05");
    assert_eq!(days[4]["hours_below_80_percent"], 0.75);
    assert_eq!(days[4]["minutes_with_estimate"], 60);
    assert_eq!(days[0]["hours_below_80_percent"], 0.0);
    assert!(days[0]["lowest"].is_null());
    let u = &v["upload"];
    assert_eq!(u["contracted_bps"], 50_000_000u64);
    assert_eq!(u["hours_below_80_percent"], 0.0);
    assert_eq!(u["minutes_with_estimate"], 0);
    assert!(u["lowest"].is_null());

    let (_, nov) = json(&fx, "/api/v1/gateway/delivered?month=2026-11", Some(ADMIN)).await;
    assert_eq!(nov["download"]["minutes_with_estimate"], 1);
    assert_eq!(nov["download"]["days"].as_array().unwrap().len(), 30);

    // Without a month: the current one, in the gateway's timezone.
    let (s, v) = json(&fx, "/api/v1/gateway/delivered", Some(ADMIN)).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let now = Utc::now().with_timezone(&chrono_tz::Asia::Makassar);
    assert_eq!(v["month"], now.format("%Y-%m").to_string());

    for bad in ["2026-13", "2026-1", "oktober", "2026-10-01", "0000-01"] {
        let (s, v) = json(
            &fx,
            &format!("/api/v1/gateway/delivered?month={bad}"),
            Some(ADMIN),
        )
        .await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{bad}: {v}");
        assert_eq!(v["parameter"], "month", "{bad}: {v}");
    }

    let down = fixture(false, false);
    let (s, v) = json(&down, "/api/v1/gateway/delivered", Some(ADMIN)).await;
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE, "{v}");
}

#[tokio::test]
async fn a_visitor_is_recognised_by_address_unless_that_is_switched_off() {
    use axum::extract::ConnectInfo;
    use std::sync::atomic::Ordering;
    let fx = fixture(false, false);
    let status = |fx: &Fixture| {
        let req = Request::get("/api/v1/status")
            .extension(ConnectInfo(std::net::SocketAddr::from((
                [10, 20, 1, 7],
                5000,
            ))))
            .body(Body::empty())
            .unwrap();
        router(fx.state.clone()).oneshot(req)
    };
    let res = status(&fx).await.unwrap();
    assert_eq!(res.status(), StatusCode::OK, "a host in dinkes's subnet");
    fx.state.by_address.store(false, Ordering::Release);
    let res = status(&fx).await.unwrap();
    assert_eq!(
        res.status(),
        StatusCode::UNAUTHORIZED,
        "--status-by-address=false: token links only"
    );
}
