//! The API over the router (no listener, no kernel): plans bounded and off
//! the async workers, events picked by OPD in the history's query, and the
//! gateway as an OPD sees it, naming no other OPD.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use chrono::Utc;
use tower::ServiceExt;

use crate::diagnosis::{OpdSignals, Probe, Tick};
use crate::http::auth::{Access, Tokens};
use crate::http::router;
use crate::runtime::state::{AppState, PolicyView, ReloadStatus};

const POLICY: &str = r#"
[gateway]
wan = "eth0"
lan = ["eth1"]
download = "200M"
upload = "50M"

[[opd]]
id = "dinkes"
name = "Dinas Kesehatan"
subnets = ["10.20.1.0/24"]
download = { guaranteed = "20M", ceiling = "100M" }
upload = { guaranteed = "5M", ceiling = "20M" }

[[opd]]
id = "bappeda"
name = "Badan Perencanaan"
subnets = ["10.20.2.0/24"]
download = { guaranteed = "20M", ceiling = "100M" }
upload = { guaranteed = "5M", ceiling = "20M" }

[[opd]]
id = "disdik"
name = "Dinas Pendidikan"
subnets = ["10.20.3.0/24"]
download = { guaranteed = "20M", ceiling = "100M" }
upload = { guaranteed = "5M", ceiling = "20M" }
"#;

const ADMIN: &str = "admin-secret";
const DINKES: &str = "dinkes-secret";

/// What must never reach dinkes' token: the other OPDs' ids and names.
const OTHERS: [&str; 4] = ["bappeda", "Badan Perencanaan", "disdik", "Dinas Pendidikan"];

fn app_state() -> AppState {
    let policy = crate::policy::parse(POLICY, "api-test.toml").unwrap();
    let mut tokens = Tokens::with_admin(ADMIN);
    tokens.add("d", Access::Opd("dinkes".into()), DINKES);
    let view = PolicyView {
        policy,
        slots: Default::default(),
        retired: Default::default(),
        source: "api-test.toml".into(),
    };
    AppState::builder(view, tokens).build()
}

struct Reply {
    status: StatusCode,
    headers: axum::http::HeaderMap,
    body: String,
}

async fn send(state: &Arc<AppState>, req: Request<Body>) -> Reply {
    let res = router(state.clone()).oneshot(req).await.unwrap();
    let status = res.status();
    let headers = res.headers().clone();
    let bytes = axum::body::to_bytes(res.into_body(), 1 << 24)
        .await
        .unwrap();
    Reply {
        status,
        headers,
        body: String::from_utf8_lossy(&bytes).into_owned(),
    }
}

async fn get(state: &Arc<AppState>, path: &str, token: &str) -> Reply {
    let req = Request::get(path)
        .header(header::AUTHORIZATION, format!("Bearer {token}"))
        .body(Body::empty())
        .unwrap();
    send(state, req).await
}

async fn post_plan(state: Arc<AppState>, body: String) -> Reply {
    let req = Request::post("/api/v1/policy/plan")
        .header(header::AUTHORIZATION, format!("Bearer {ADMIN}"))
        .header(header::CONTENT_TYPE, "application/toml")
        .body(Body::from(body))
        .unwrap();
    send(&state, req).await
}

/// A valid policy of `n` OPDs: a few MiB for the largest plan the body
/// limit lets through.
fn large_policy(n: usize) -> String {
    let mut text = String::from(
        "[gateway]\nwan = \"eth0\"\nlan = [\"eth1\"]\ndownload = \"100G\"\nupload = \"100G\"\n",
    );
    for i in 0..n {
        let net = std::net::Ipv4Addr::from(0x0a00_0000 + 4 * i as u32);
        text.push_str(&format!(
            "\n[[opd]]\nid = \"o{i}\"\nname = \"Kantor {i}\"\nsubnets = [\"{net}/30\"]\n\
             download = {{ guaranteed = \"1M\", ceiling = \"2M\" }}\n\
             upload = {{ guaranteed = \"1M\", ceiling = \"2M\" }}\n"
        ));
    }
    text
}

// On the test's single-threaded runtime a plan parsed on the async worker
// would finish before any other request got a turn.
#[tokio::test]
async fn a_plan_is_computed_off_the_async_workers_which_answer_meanwhile() {
    let st = Arc::new(app_state());
    st.ready.store(true, std::sync::atomic::Ordering::Release);
    let plan = tokio::spawn(post_plan(st.clone(), large_policy(12_000)));
    // The plan's task runs first, up to where it waits for its thread.
    tokio::task::yield_now().await;
    let health = send(&st, Request::get("/healthz").body(Body::empty()).unwrap()).await;
    assert_eq!(health.status, StatusCode::OK, "{}", health.body);
    assert!(
        !plan.is_finished(),
        "the plan finished before /healthz was answered: it ran on the async worker"
    );
    let r = plan.await.unwrap();
    assert_eq!(r.status, StatusCode::OK, "{}", &r.body[..r.body.len().min(500)]);
    let v: serde_json::Value = serde_json::from_str(&r.body).unwrap();
    assert_eq!(v["added"].as_array().map(Vec::len), Some(12_000), "{}", &r.body[..300]);
}

#[tokio::test]
async fn plans_take_turns_and_one_that_waits_too_long_is_503_with_retry_after() {
    let mut state = app_state();
    state.plans.wait = Duration::from_millis(100);
    let st = Arc::new(state);
    // A plan under way holds the only turn.
    let under_way = st.plans.permits.clone().try_acquire_owned().unwrap();
    let r = post_plan(st.clone(), POLICY.to_string()).await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE, "{}", r.body);
    assert_eq!(r.headers[header::RETRY_AFTER], "1");
    assert!(r.body.contains("/problems/busy"), "{}", r.body);
    assert!(r.body.contains("at most 1 at a time"), "{}", r.body);
    // One that waits less than the limit gets its turn.
    let waiting = tokio::spawn(post_plan(st.clone(), POLICY.to_string()));
    tokio::time::sleep(Duration::from_millis(20)).await;
    drop(under_way);
    let r = waiting.await.unwrap();
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    // The turn is given back, also after an invalid policy.
    let r = post_plan(st.clone(), "[gateway]\n".into()).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.body);
    assert_eq!(st.plans.permits.available_permits(), 1);
}

#[tokio::test]
async fn an_invalid_plan_lists_its_first_hundred_problems_and_counts_the_rest() {
    let st = Arc::new(app_state());
    // 300 OPDs, each with a rate in bytes.
    let text = large_policy(300).replace("ceiling = \"2M\" }\nupload", "ceiling = \"2MB\" }\nupload");
    let r = post_plan(st, text).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    let v: serde_json::Value = serde_json::from_str(&r.body).unwrap();
    let detail = v["detail"].as_str().unwrap();
    assert_eq!(detail.lines().filter(|l| l.starts_with("request:")).count(), 100);
    assert!(detail.ends_with("... and 200 more problems (`jatah check FILE` lists them all)"));
}

#[tokio::test]
async fn an_opd_token_gets_its_events_however_many_other_opds_have() {
    let st = Arc::new(app_state());
    let dir = std::env::temp_dir().join(format!(
        "jatah-api-events-{}",
        crate::lab::netns::unique_token()
    ));
    let mut store = crate::history::HistoryStore::open(&dir, chrono_tz::Asia::Makassar).unwrap();
    let t0 = Utc::now() - chrono::Duration::hours(1);
    let event = |ms: i64, opd: Option<&str>, state: &str| crate::history::Event {
        at: t0 + chrono::Duration::milliseconds(ms),
        opd: opd.map(str::to_string),
        state: state.to_string(),
        previous: None,
        evidence: serde_json::json!({}),
        message: String::new(),
    };
    store.record_event(&event(0, Some("dinkes"), "local_fault")).unwrap();
    for i in 0..crate::history::MAX_POINTS as i64 + 10 {
        store.record_event(&event(1 + i, Some("bappeda"), "saturated")).unwrap();
    }
    store.record_event(&event(60_000, None, "upstream_degraded")).unwrap();
    *st.history.store.lock().unwrap() = Some(store);

    let r = get(&st, "/api/v1/events", DINKES).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let v: serde_json::Value = serde_json::from_str(&r.body).unwrap();
    let seen: Vec<(Option<&str>, &str)> = v["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["opd"].as_str(), e["state"].as_str().unwrap()))
        .collect();
    assert_eq!(seen, [(Some("dinkes"), "local_fault"), (None, "upstream_degraded")]);
    // The admin asking for everything is over the limit, and told so.
    let r = get(&st, "/api/v1/events", ADMIN).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.body);
    assert!(r.body.contains("too many points"), "{}", r.body);
    let _ = std::fs::remove_dir_all(&dir);
}

/// xorshift64: the same traffic on every run.
struct Rng(u64);

impl Rng {
    fn unit(&mut self) -> f64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 >> 11) as f64 / (1u64 << 53) as f64
    }

    fn around(&mut self, mean: f64, jitter: f64) -> f64 {
        mean * (1.0 + jitter * (2.0 * self.unit() - 1.0))
    }
}

/// A minute of three offices' independent demand, then the ISP policing
/// the download to 30 Mbit/s, which they share: the gateway's verdict is
/// `upstream_degraded` with a delivered estimate, whose evidence lists
/// the OPDs it held.
fn police_the_uplink(state: &AppState) {
    let mut rng = Rng(0x5eed_1234_abcd_0001);
    let demand = [("dinkes", 15e6, 0.6), ("bappeda", 25e6, 0.35), ("disdik", 30e6, 0.2)];
    let t0 = Utc::now() - chrono::Duration::seconds(200);
    let mut engine = state.diagnosis.engine.lock().unwrap();
    for second in 0..120 {
        let limit = (second >= 60).then_some(30e6);
        let rates: Vec<f64> = match limit {
            None => demand.iter().map(|(_, m, _)| rng.around(*m, 0.2)).collect(),
            Some(total) => {
                let sum = if rng.unit() < 0.15 {
                    total * (0.95 - 0.10 * rng.unit())
                } else {
                    rng.around(total, 0.015)
                };
                let shares: Vec<f64> = demand.iter().map(|(_, m, j)| rng.around(*m, *j)).collect();
                let all: f64 = shares.iter().sum();
                shares.iter().map(|s| sum * s / all).collect()
            }
        };
        let opds = demand
            .iter()
            .zip(rates)
            .map(|((id, _, _), bps)| {
                let bps = bps as u64;
                let signals = OpdSignals {
                    packets: [bps / 12_000 + 10, bps / 240_000 + 5],
                    bps: [bps, bps / 20],
                    ceiling_bps: [100_000_000, 20_000_000],
                    probe_configured: true,
                    probes: vec![Probe::Answered(Duration::from_millis(1))],
                    handshake_rtts: [vec![Duration::from_millis(1)], vec![Duration::from_millis(30)]],
                    ..Default::default()
                };
                (id.to_string(), signals)
            })
            .collect();
        engine.step(&Tick {
            at: t0 + chrono::Duration::seconds(second),
            opds,
            upstream: [("isp".to_string(), vec![Probe::Answered(Duration::from_millis(4))])]
                .into(),
            capacity_bps: [200_000_000, 50_000_000],
            ..Default::default()
        });
    }
}

#[tokio::test]
async fn an_opd_token_reads_the_gateway_without_any_other_opds_id_or_name() {
    let st = Arc::new(app_state());
    police_the_uplink(&st);
    *st.reloads.lock().unwrap() = ReloadStatus {
        successful: false,
        at: Some(Utc::now()),
        error: Some(
            "policy.toml:12:12: 10.20.2.0/25 overlaps 10.20.2.0/24 of OPD \"bappeda\" \
             (Badan Perencanaan, Dinas Pendidikan)"
                .into(),
        ),
        duration_seconds: 0.0,
    };
    // The admin's view names them: the test would prove nothing otherwise.
    let admin = get(&st, "/api/v1/gateway", ADMIN).await;
    assert_eq!(admin.status, StatusCode::OK);
    let v: serde_json::Value = serde_json::from_str(&admin.body).unwrap();
    assert_eq!(v["diagnosis"]["state"], "upstream_degraded", "{}", admin.body);
    let held = &v["download"]["delivered"]["evidence"]["held"];
    assert!(held.as_array().is_some_and(|h| h.len() == 3), "{}", admin.body);
    for other in OTHERS {
        assert!(admin.body.contains(other), "{other} not in the admin's view: {}", admin.body);
    }

    for path in [
        "/api/v1/gateway",
        "/api/v1/opds/dinkes/diagnosis",
        "/api/v1/status",
        "/api/v1/opds",
        "/api/v1/groups",
    ] {
        let r = get(&st, path, DINKES).await;
        assert_eq!(r.status, StatusCode::OK, "{path}: {}", r.body);
        for other in OTHERS {
            assert!(!r.body.contains(other), "{path} names {other:?}: {}", r.body);
        }
    }
    let r = get(&st, "/api/v1/gateway", DINKES).await;
    let v: serde_json::Value = serde_json::from_str(&r.body).unwrap();
    // Still the uplink's figure, its own OPD among those held, and that
    // the reload failed.
    assert_eq!(v["diagnosis"]["state"], "upstream_degraded");
    assert_eq!(v["download"]["delivered"]["evidence"]["held"], serde_json::json!(["dinkes"]));
    assert!(v["download"]["delivered"]["bps"].as_u64().is_some());
    assert_eq!(v["policy"]["last_reload_successful"], false);
    assert!(
        v["policy"]["last_reload_error"]
            .as_str()
            .is_some_and(|e| e.contains("admin token")),
        "{}",
        r.body
    );
}
