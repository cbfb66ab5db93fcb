//! The status page over the router (no listener): who sees which OPD,
//! what an unknown visitor gets, the assets and their headers, the admin
//! overview and reference codes.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::connect_info::ConnectInfo;
use axum::http::{Request, StatusCode, header};
use chrono::{TimeZone, Utc};
use serde_json::{Value, json};
use tower::ServiceExt;

use super::*;
use crate::diagnosis::{OpdSignals, Tick};
use crate::http::auth::Tokens;
use crate::http::{router, status_router};
use crate::runtime::state::PolicyView;

const POLICY: &str = r#"
[gateway]
wan = "eth0"
lan = ["eth1"]
download = "100M"
upload = "50M"

[[opd]]
id = "dinkes"
name = "Dinas Kesehatan"
subnets = ["10.20.1.0/24", "fd00:20:1::/64"]
download = { guaranteed = "20M", ceiling = "40M" }
upload = { guaranteed = "5M", ceiling = "10M" }
probe = "10.20.1.2"

[[opd]]
id = "bappeda"
name = "Badan Perencanaan"
subnets = ["10.20.2.0/24"]
download = { guaranteed = "10M", ceiling = "20M" }
upload = { guaranteed = "5M", ceiling = "10M" }
"#;

const ADMIN: &str = "admin-secret";
const DINKES: &str = "dinkes-secret";
const BAPPEDA: &str = "bappeda-secret";

fn state() -> Arc<AppState> {
    let policy = crate::policy::parse(POLICY, "status-test.toml").unwrap();
    let mut tokens = Tokens::with_admin(ADMIN);
    tokens.add("d", Access::Opd("dinkes".into()), DINKES);
    tokens.add("b", Access::Opd("bappeda".into()), BAPPEDA);
    let view = PolicyView {
        policy,
        slots: Default::default(),
        retired: Default::default(),
        source: "status-test.toml".into(),
    };
    Arc::new(AppState::builder(view, tokens).build())
}

struct Reply {
    status: StatusCode,
    headers: axum::http::HeaderMap,
    body: String,
}

impl Reply {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{e}: {}", self.body))
    }
}

async fn call(
    app: axum::Router,
    path: &str,
    from: Option<&str>,
    token: Option<&str>,
    etag: Option<&str>,
) -> Reply {
    let mut req = Request::get(path);
    if let Some(t) = token {
        req = req.header(header::AUTHORIZATION, format!("Bearer {t}"));
    }
    if let Some(e) = etag {
        req = req.header(header::IF_NONE_MATCH, e);
    }
    let mut req = req.body(Body::empty()).unwrap();
    if let Some(addr) = from {
        let ip: std::net::IpAddr = addr.parse().unwrap();
        req.extensions_mut()
            .insert(ConnectInfo(SocketAddr::new(ip, 51515)));
    }
    let res = app.oneshot(req).await.unwrap();
    let status = res.status();
    let headers = res.headers().clone();
    let bytes = axum::body::to_bytes(res.into_body(), 1 << 22)
        .await
        .unwrap();
    Reply {
        status,
        headers,
        body: String::from_utf8_lossy(&bytes).into_owned(),
    }
}

async fn get(path: &str, from: Option<&str>, token: Option<&str>) -> Reply {
    call(router(state()), path, from, token, None).await
}

fn no_trace_of_dinkes(body: &str) {
    for leak in ["dinkes", "Dinas Kesehatan", "10.20.1."] {
        assert!(!body.contains(leak), "{leak:?} leaked: {body}");
    }
}

#[tokio::test]
async fn the_source_address_picks_the_visitors_opd() {
    let r = get("/api/v1/status", Some("10.20.2.9"), None).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let v = r.json();
    assert_eq!(v["opd"]["id"], "bappeda");
    assert_eq!(v["opd"]["name"], "Badan Perencanaan");
    assert_eq!(v["identified_by"], "address");
    assert_eq!(v["visitor_address"], "10.20.2.9");
    assert_eq!(
        r.headers[header::CACHE_CONTROL],
        "no-store",
        "one OPD's data is never cached on the way"
    );
    no_trace_of_dinkes(&r.body);
    // IPv6, and IPv4 as a dual-stack socket reports it.
    let v = get("/api/v1/status", Some("fd00:20:1::7"), None)
        .await
        .json();
    assert_eq!(v["opd"]["id"], "dinkes");
    let v = get("/api/v1/status", Some("::ffff:10.20.1.50"), None)
        .await
        .json();
    assert_eq!(v["opd"]["id"], "dinkes");
    assert_eq!(v["visitor_address"], "10.20.1.50");
}

#[tokio::test]
async fn an_unknown_address_gets_no_opds_data() {
    for from in [
        Some("198.51.100.1"),
        Some("10.20.3.4"),
        Some("127.0.0.1"),
        None,
    ] {
        let r = get("/api/v1/status", from, None).await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{from:?}");
        assert_eq!(r.headers[header::CONTENT_TYPE], "application/problem+json");
        let v = r.json();
        assert_eq!(v["type"], "/problems/unknown-visitor");
        no_trace_of_dinkes(&r.body);
        assert!(!r.body.contains("bappeda") && !r.body.contains("Badan"));
    }
    // Naming an OPD does not help.
    let r = get("/api/v1/status?opd=dinkes", Some("198.51.100.1"), None).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    no_trace_of_dinkes(&r.body);
}

#[tokio::test]
async fn a_bad_token_is_401_even_from_an_opds_address() {
    for auth in ["Bearer wrong", "Basic abc", "Bearer "] {
        let req = Request::get("/api/v1/status")
            .header(header::AUTHORIZATION, auth)
            .body(Body::empty())
            .unwrap();
        let mut req = req;
        req.extensions_mut()
            .insert(ConnectInfo(SocketAddr::from(([10, 20, 1, 9], 1))));
        let res = router(state()).oneshot(req).await.unwrap();
        assert_eq!(res.status(), StatusCode::UNAUTHORIZED, "{auth}");
        assert_eq!(
            res.headers()[header::CONTENT_TYPE],
            "application/problem+json"
        );
    }
}

#[tokio::test]
async fn an_opd_token_sees_only_its_own_opd_wherever_it_is_used() {
    // From outside (mobile data) and from another OPD's LAN alike.
    for from in [Some("198.51.100.1"), Some("10.20.2.9"), None] {
        let r = get("/api/v1/status", from, Some(DINKES)).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
        let v = r.json();
        assert_eq!(v["opd"]["id"], "dinkes");
        assert_eq!(v["identified_by"], "token");
        assert!(v["visitor_address"].is_null(), "not shown for a token");
        assert!(!r.body.contains("bappeda") && !r.body.contains("Badan"));
    }
    let r = get("/api/v1/status?opd=bappeda", None, Some(DINKES)).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    // An address cannot ask for its neighbour either.
    let r = get("/api/v1/status?opd=dinkes", Some("10.20.2.9"), None).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    // The same answer as for an OPD that does not exist (only the asked id is echoed).
    assert_eq!(r.json()["type"], "/problems/no-such-opd");
    assert!(!r.body.contains("Dinas Kesehatan") && !r.body.contains("10.20.1."));
    // The admin names the OPD.
    let r = get("/api/v1/status?opd=bappeda", None, Some(ADMIN)).await;
    assert_eq!(r.json()["opd"]["id"], "bappeda");
    let r = get("/api/v1/status", None, Some(ADMIN)).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(r.json()["parameter"], "opd");
    let r = get("/api/v1/status?opd=nope", None, Some(ADMIN)).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn the_page_and_its_assets_have_their_types_and_cache_headers() {
    for (path, ctype) in [
        ("/status", "text/html; charset=utf-8"),
        ("/status/admin", "text/html; charset=utf-8"),
        ("/status/assets/status.css", "text/css; charset=utf-8"),
        ("/status/assets/status.js", "text/javascript; charset=utf-8"),
    ] {
        for app in [router(state()), status_router(state())] {
            let r = call(app, path, Some("198.51.100.1"), None, None).await;
            assert_eq!(r.status, StatusCode::OK, "{path}");
            assert_eq!(r.headers[header::CONTENT_TYPE], ctype, "{path}");
            assert_eq!(r.headers[header::CACHE_CONTROL], "no-cache", "{path}");
            assert_eq!(r.headers[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
            let etag = r.headers[header::ETAG].to_str().unwrap().to_string();
            assert!(etag.starts_with('"') && etag.len() > 10, "{etag}");
            // Revalidation: unchanged is a 304 without a body.
            let again = call(router(state()), path, None, None, Some(&etag)).await;
            assert_eq!(again.status, StatusCode::NOT_MODIFIED, "{path}");
            assert!(again.body.is_empty());
            if ctype.starts_with("text/html") {
                let csp = r.headers[header::CONTENT_SECURITY_POLICY].to_str().unwrap();
                assert!(csp.contains("script-src 'self'") && !csp.contains("unsafe"));
                assert!(r.body.contains("<html lang=\"id\">"));
                assert!(r.body.contains("/status/assets/status.js"));
            }
        }
    }
    // No build step and no outside origin: every reference is local.
    let html = get("/status", None, None).await.body;
    let css = get("/status/assets/status.css", None, None).await.body;
    let js = get("/status/assets/status.js", None, None).await.body;
    for text in [&html, &css] {
        assert!(!text.contains("http:") && !text.contains("https:") && !text.contains("//cdn"));
    }
    assert!(!css.contains("@import") && !css.contains("@font-face"));
    // The script's one URL is the SVG namespace.
    assert_eq!(
        js.matches("http").count(),
        js.matches("http://www.w3.org/2000/svg").count()
    );
    let root = get("/", None, None).await;
    assert_eq!(root.status, StatusCode::SEE_OTHER);
    assert_eq!(root.headers[header::LOCATION], "/status");
}

#[tokio::test]
async fn the_status_listener_serves_the_page_and_nothing_else() {
    for path in [
        "/metrics",
        "/api/v1/opds",
        "/api/v1/gateway",
        "/openapi.json",
        "/healthz",
    ] {
        let r = call(
            status_router(state()),
            path,
            Some("10.20.1.9"),
            Some(ADMIN),
            None,
        )
        .await;
        assert_eq!(r.status, StatusCode::NOT_FOUND, "{path}: {}", r.body);
        assert_eq!(r.headers[header::CONTENT_TYPE], "application/problem+json");
    }
    let r = call(
        status_router(state()),
        "/api/v1/status",
        Some("10.20.1.9"),
        None,
        None,
    )
    .await;
    assert_eq!(r.json()["opd"]["id"], "dinkes");
}

/// Ten seconds of a cut cable for dinkes and traffic for bappeda, so both
/// have verdicts.
fn fault_dinkes(state: &AppState) -> DateTime<Utc> {
    let t0 = Utc::now() - chrono::Duration::seconds(30);
    let mut engine = state.diagnosis.engine.lock().unwrap();
    for s in 0..12 {
        let cut = OpdSignals {
            probe_configured: true,
            link_up: Some(false),
            ..Default::default()
        };
        let busy = OpdSignals {
            packets: [300, 300],
            bps: [2_000_000, 200_000],
            ceiling_bps: [20_000_000, 10_000_000],
            ..Default::default()
        };
        engine.step(&Tick {
            at: t0 + chrono::Duration::seconds(s),
            opds: [("dinkes".to_string(), cut), ("bappeda".to_string(), busy)].into(),
            upstream: Default::default(),
            capacity_bps: [100_000_000, 50_000_000],
            effective_bps: [0, 0],
            basis_bps: [0, 0],
            carried_bps: [0, 0],
            probed_bps: [0, 0],
            unclassified_bps: [0, 0],
        });
    }
    engine.opd("dinkes").unwrap().since
}

#[tokio::test]
async fn a_local_fault_says_since_when_and_brings_the_cable_checklist() {
    let st = state();
    let since = fault_dinkes(&st);
    let r = call(
        router(st.clone()),
        "/api/v1/status",
        Some("10.20.1.5"),
        None,
        None,
    )
    .await;
    let v = r.json();
    assert_eq!(v["verdict"]["state"], "local_fault");
    assert_eq!(v["light"], "red");
    assert_eq!(v["checklist"], "local_fault");
    let at = since
        .with_timezone(&chrono_tz::Asia::Makassar)
        .format("%H:%M")
        .to_string();
    assert_eq!(v["since_local"], format!("{at} WITA"));
    assert_eq!(v["timezone_abbreviation"], "WITA");
    let sentence = v["sentence_id"].as_str().unwrap();
    assert!(
        sentence.starts_with("Jaringan Diskominfo normal; sambungan ke kantor Anda terputus sejak")
            && sentence.contains(&format!("{at} WITA")),
        "{sentence}"
    );
    let code = v["reference"].as_str().unwrap();
    assert_eq!(
        code,
        crate::diagnosis::reference::code(Some("dinkes"), "local_fault", since)
    );
    // Without a history store the page still answers, with no volumes.
    assert!(v["usage_24h"].is_null());
    assert!(v["opd"]["today"].is_null());
    // bappeda, busy, is green with nothing to do.
    let v = call(
        router(st.clone()),
        "/api/v1/status",
        Some("10.20.2.5"),
        None,
        None,
    )
    .await
    .json();
    assert_eq!(v["light"], "green");
    assert_eq!(v["checklist"], "normal");
}

#[tokio::test]
async fn the_overview_is_the_admins_alone() {
    let st = state();
    fault_dinkes(&st);
    let r = call(
        router(st.clone()),
        "/api/v1/status/overview",
        None,
        Some(ADMIN),
        None,
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    let v = r.json();
    let opds = v["opds"].as_array().unwrap();
    assert_eq!(opds.len(), 2);
    assert_eq!(opds[0]["id"], "dinkes");
    assert_eq!(opds[0]["light"], "red");
    assert!(opds[0]["reference"].is_string());
    assert!(opds[0]["download"]["ceiling_bps"].is_u64());
    assert_eq!(opds[1]["light"], "green");
    for (token, want) in [(None, 401), (Some(DINKES), 403), (Some("nope"), 401)] {
        let r = call(
            router(st.clone()),
            "/api/v1/status/overview",
            Some("10.20.1.5"),
            token,
            None,
        )
        .await;
        assert_eq!(r.status.as_u16(), want, "{token:?}");
    }
}

#[tokio::test]
async fn a_reference_code_finds_its_event_for_those_who_may_see_it() {
    let st = state();
    let dir = std::env::temp_dir().join(format!(
        "jatah-status-{}",
        crate::lab::netns::unique_token()
    ));
    let mut store = crate::history::HistoryStore::open(&dir, chrono_tz::Asia::Makassar).unwrap();
    let at = Utc
        .timestamp_millis_opt(Utc::now().timestamp_millis() - 3_600_000)
        .unwrap();
    store
        .record_event(&crate::history::Event {
            at,
            opd: Some("dinkes".into()),
            state: "local_fault".into(),
            previous: Some("healthy".into()),
            evidence: json!({"reason": "router_not_answering", "probe_lost_in_a_row": 3}),
            message: "OPD dinkes: the office router does not answer".into(),
        })
        .unwrap();
    *st.history.store.lock().unwrap() = Some(store);
    let code = crate::diagnosis::reference::code(Some("dinkes"), "local_fault", at);
    let path = format!("/api/v1/references/{code}");
    for token in [ADMIN, DINKES] {
        let r = call(router(st.clone()), &path, None, Some(token), None).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
        let v = r.json();
        assert_eq!(v["code"], code);
        let m = &v["matches"][0];
        assert_eq!(m["opd"], "dinkes");
        assert_eq!(m["opd_name"], "Dinas Kesehatan");
        assert_eq!(m["state"], "local_fault");
        assert_eq!(m["previous"], "healthy");
        assert_eq!(m["current"], false);
        assert_eq!(m["evidence"]["probe_lost_in_a_row"], 3);
        assert!(
            m["explanation_id"]
                .as_str()
                .unwrap()
                .contains("perangkat di kantor Anda tidak merespons"),
            "{m}"
        );
    }
    // Read out on the phone: lower case, no hyphen, O for 0.
    let sloppy = code.to_lowercase().replace('-', "").replace('0', "o");
    let r = call(
        router(st.clone()),
        &format!("/api/v1/references/{sloppy}"),
        None,
        Some(ADMIN),
        None,
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    // The event list carries the same code.
    let r = call(
        router(st.clone()),
        "/api/v1/events",
        None,
        Some(ADMIN),
        None,
    )
    .await;
    assert_eq!(r.json()["events"][0]["reference"], code);
    // Another OPD's token, no token, a wrong code, a malformed one.
    let r = call(router(st.clone()), &path, None, Some(BAPPEDA), None).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    no_trace_of_dinkes(&r.body);
    let r = call(router(st.clone()), &path, Some("10.20.1.5"), None, None).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    let other = crate::diagnosis::reference::code(Some("dinkes"), "healthy", at);
    let r = call(
        router(st.clone()),
        &format!("/api/v1/references/{other}"),
        None,
        Some(ADMIN),
        None,
    )
    .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    let r = call(
        router(st.clone()),
        "/api/v1/references/U!%20x",
        None,
        Some(ADMIN),
        None,
    )
    .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(r.json()["parameter"], "code");
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn a_verdict_in_force_is_found_by_its_code_without_history() {
    let st = state();
    let since = fault_dinkes(&st);
    let code = crate::diagnosis::reference::code(Some("dinkes"), "local_fault", since);
    let r = call(
        router(st),
        &format!("/api/v1/references/{code}"),
        None,
        Some(ADMIN),
        None,
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.json()["matches"][0]["current"], true);
}

#[test]
fn lights_and_checklists_follow_the_verdict() {
    use DiagnosisState::*;
    assert_eq!(Light::of(None), Light::Grey);
    assert_eq!(Checklist::of(None), Checklist::Starting);
    for (s, light, list) in [
        (Healthy, Light::Green, Checklist::Normal),
        (Idle, Light::Green, Checklist::Normal),
        (Saturated, Light::Yellow, Checklist::Saturated),
        (LocalDegraded, Light::Yellow, Checklist::LocalDegraded),
        (LocalFault, Light::Red, Checklist::LocalFault),
        (UpstreamDegraded, Light::Yellow, Checklist::Upstream),
        (UpstreamDown, Light::Red, Checklist::Upstream),
    ] {
        assert_eq!(Light::of(Some(s)), light, "{s:?}");
        assert_eq!(Checklist::of(Some(s)), list, "{s:?}");
    }
}

#[test]
fn times_read_in_the_gateways_timezone_with_its_abbreviation() {
    let tz = chrono_tz::Asia::Makassar;
    let now = Utc.with_ymd_and_hms(2026, 3, 2, 4, 0, 0).unwrap();
    let t = Utc.with_ymd_and_hms(2026, 3, 2, 2, 2, 0).unwrap();
    assert_eq!(local_time(t, now, tz), "10:02 WITA");
    let yesterday = Utc.with_ymd_and_hms(2026, 3, 1, 2, 2, 0).unwrap();
    assert_eq!(local_time(yesterday, now, tz), "01-03 10:02 WITA");
    assert_eq!(timezone_abbreviation(chrono_tz::Asia::Jakarta, now), "WIB");
    assert_eq!(timezone_abbreviation(chrono_tz::Asia::Jayapura, now), "WIT");
}
