//! The API over the router (no listener, no kernel): events picked by OPD
//! in the history's query.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use chrono::Utc;
use tower::ServiceExt;

use crate::http::auth::{Access, Tokens};
use crate::http::router;
use crate::runtime::state::{AppState, PolicyView};

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
    body: String,
}

async fn send(state: &Arc<AppState>, req: Request<Body>) -> Reply {
    let res = router(state.clone()).oneshot(req).await.unwrap();
    let status = res.status();
    let bytes = axum::body::to_bytes(res.into_body(), 1 << 24)
        .await
        .unwrap();
    Reply {
        status,
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

