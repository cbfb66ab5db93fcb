//! `/metrics` over the router (no listener, no kernel): gzip when the
//! scraper accepts it, the same exposition either way, and the process
//! and operational metrics after the per-OPD series.

use std::io::Read;
use std::sync::Arc;

use axum::body::Body;
use axum::http::{HeaderMap, Request, StatusCode, header};
use tower::ServiceExt;

use super::accepts_gzip;
use crate::http::auth::Tokens;
use crate::http::router;
use crate::runtime::state::{AppState, PolicyView};

const POLICY: &str = "[gateway]\nwan = \"eth0\"\nlan = [\"eth1\"]\ndownload = \"200M\"\n\
    upload = \"50M\"\n\n[[opd]]\nid = \"dinkes\"\nname = \"Dinas Kesehatan\"\n\
    subnets = [\"10.20.1.0/24\"]\ndownload = { guaranteed = \"20M\", ceiling = \"100M\" }\n\
    upload = { guaranteed = \"5M\", ceiling = \"20M\" }\n";

fn state() -> Arc<AppState> {
    let policy = crate::policy::parse(POLICY, "metrics-test.toml").unwrap();
    let view = PolicyView {
        policy,
        slots: [("dinkes".to_string(), 0)].into(),
        retired: Default::default(),
        source: "metrics-test.toml".into(),
    };
    Arc::new(AppState::builder(view, Tokens::default()).build())
}

async fn scrape(state: &Arc<AppState>, accept: Option<&str>) -> (StatusCode, HeaderMap, Vec<u8>) {
    let mut req = Request::get("/metrics");
    if let Some(a) = accept {
        req = req.header(header::ACCEPT_ENCODING, a);
    }
    let res = router(state.clone())
        .oneshot(req.body(Body::empty()).unwrap())
        .await
        .unwrap();
    let status = res.status();
    let headers = res.headers().clone();
    let body = axum::body::to_bytes(res.into_body(), 1 << 26)
        .await
        .unwrap();
    (status, headers, body.to_vec())
}

/// The exposition less what changes from one scrape to the next (the
/// process's CPU time and memory, the scrape durations).
fn stable(text: &str) -> String {
    text.lines()
        .filter(|l| !l.contains("process_") && !l.contains("jatah_scrape_duration_seconds"))
        .collect::<Vec<_>>()
        .join("\n")
}

#[tokio::test]
async fn gzip_when_accepted_and_the_same_exposition_either_way() {
    let state = state();
    let (status, plain_headers, plain) = scrape(&state, None).await;
    assert_eq!(status, StatusCode::OK);
    assert!(plain_headers.get(header::CONTENT_ENCODING).is_none());
    let plain = String::from_utf8(plain).unwrap();
    assert!(plain.contains("jatah_opd_info{"), "{plain}");

    let (status, headers, gz) = scrape(&state, Some("gzip")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers[header::CONTENT_ENCODING], "gzip");
    assert_eq!(headers[header::VARY], "accept-encoding");
    assert_eq!(&gz[..2], &[0x1f, 0x8b], "a gzip member");
    assert!(gz.len() < plain.len() / 3, "{} of {}", gz.len(), plain.len());
    let mut text = String::new();
    flate2::read::GzDecoder::new(&gz[..])
        .read_to_string(&mut text)
        .unwrap();
    assert_eq!(stable(&text), stable(&plain));

    // Refused with q=0, or another coding only: plain.
    for accept in ["gzip;q=0", "br, deflate", "identity"] {
        let (_, headers, body) = scrape(&state, Some(accept)).await;
        assert!(headers.get(header::CONTENT_ENCODING).is_none(), "{accept}");
        assert!(String::from_utf8(body).unwrap().contains("jatah_opd_info{"));
    }
}

#[tokio::test]
async fn process_and_operational_metrics_follow_the_per_opd_series() {
    let state = state();
    state.kernel.count_error("attach", "eth1");
    let (_, _, body) = scrape(&state, None).await;
    let (_, _, body2) = scrape(&state, None).await;
    let text = String::from_utf8(body2).unwrap();
    assert!(!body.is_empty());
    for (name, kind) in [
        ("process_cpu_seconds_total", "counter"),
        ("process_resident_memory_bytes", "gauge"),
        ("process_open_fds", "gauge"),
        ("process_start_time_seconds", "gauge"),
        ("jatah_kernel_errors_total", "counter"),
        ("jatah_policy_last_reload_successful", "gauge"),
        ("jatah_build_info", "gauge"),
        ("jatah_scrape_duration_seconds", "histogram"),
    ] {
        assert!(
            text.contains(&format!("# TYPE {name} {kind}\n")),
            "{name} {kind} missing:\n{text}"
        );
    }
    assert!(
        text.contains("jatah_kernel_errors_total{interface=\"eth1\",operation=\"attach\"} 1\n"),
        "{text}"
    );
    // The first scrape's duration is in the second.
    assert!(text.contains("jatah_scrape_duration_seconds_count 1\n"), "{text}");
    // Each family once.
    let mut seen = std::collections::BTreeSet::new();
    for l in text.lines().filter(|l| l.starts_with("# TYPE ")) {
        assert!(seen.insert(l.to_string()), "twice: {l}");
    }
    let resident: f64 = text
        .lines()
        .find_map(|l| l.strip_prefix("process_resident_memory_bytes "))
        .unwrap()
        .parse()
        .unwrap();
    assert!(resident > 1e6, "{resident}");
}

#[test]
fn accept_encoding_is_read_as_rfc_9110_says() {
    let h = |v: &str| {
        let mut m = HeaderMap::new();
        m.insert(header::ACCEPT_ENCODING, v.parse().unwrap());
        accepts_gzip(&m)
    };
    assert!(h("gzip"));
    assert!(h("deflate, GZIP;q=0.5"));
    assert!(h("*"));
    assert!(!h("gzip;q=0"));
    assert!(!h("gzip; q=0.0"));
    assert!(!h("identity"));
    assert!(!accepts_gzip(&HeaderMap::new()));
}
