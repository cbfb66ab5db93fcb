//! Reading jatah's verdicts in a lab through its own API, as the
//! diagnosis tests do: states, events, and bounded waits for them.

use std::time::{Duration, Instant};

use jatah::lab::{LAB_ADMIN_TOKEN, Lab};
use serde_json::Value;

/// GET `path` as the lab's admin; panics unless 200 with JSON.
pub fn get(lab: &Lab, path: &str) -> Value {
    let (status, body) = lab.http_get_as(path, Some(LAB_ADMIN_TOKEN)).unwrap();
    assert_eq!(status, 200, "{path}: {body}");
    serde_json::from_str(&body).unwrap()
}

/// An OPD's diagnosis state (None in the first seconds).
pub fn state(lab: &Lab, opd: &str) -> Option<String> {
    get(lab, &format!("/api/v1/opds/{opd}/diagnosis"))["verdict"]["state"]
        .as_str()
        .map(str::to_string)
}

/// The gateway's diagnosis state (None in the first seconds).
pub fn gateway_state(lab: &Lab) -> Option<String> {
    get(lab, "/api/v1/gateway")["diagnosis"]["state"]
        .as_str()
        .map(str::to_string)
}

/// Polls every 250 ms until `check` holds: the seconds it took, or None
/// after `limit` (or after as many checks as fit in it).
pub fn poll(limit: Duration, mut check: impl FnMut() -> bool) -> Option<f64> {
    let start = Instant::now();
    let tries = limit.as_millis() / 250 + 2;
    for _ in 0..tries {
        if check() {
            return Some(start.elapsed().as_secs_f64());
        }
        if start.elapsed() >= limit {
            break;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    None
}

/// Polls every 250 ms until `check` holds; returns the seconds it took.
/// Panics after `limit` (or after as many checks as fit in it).
pub fn within(limit: Duration, what: &str, check: impl FnMut() -> bool) -> f64 {
    poll(limit, check).unwrap_or_else(|| panic!("{what}: not within {limit:?}"))
}

/// Waits until the state at `field` of `path`'s answer is `want`; on
/// timeout the panic shows the last one read, so a failure explains itself.
fn until(lab: &Lab, path: &str, field: &str, who: &str, want: &str, limit: Duration) -> f64 {
    let mut last = Value::Null;
    poll(limit, || {
        last = get(lab, path)[field].clone();
        last["state"].as_str() == Some(want)
    })
    .unwrap_or_else(|| {
        panic!(
            "{who} {want}: not within {limit:?}; last {field}: {}",
            serde_json::to_string_pretty(&last).unwrap_or_default()
        )
    })
}

/// Waits until `opd`'s state is `want` (see [`until`]).
pub fn until_state(lab: &Lab, opd: &str, want: &str, limit: Duration) -> f64 {
    let path = format!("/api/v1/opds/{opd}/diagnosis");
    until(lab, &path, "verdict", opd, want, limit)
}

/// Waits until the gateway's state is `want` (see [`until`]).
pub fn until_gateway(lab: &Lab, want: &str, limit: Duration) -> f64 {
    until(lab, "/api/v1/gateway", "diagnosis", "gateway", want, limit)
}

/// Every OPD in `which` and the gateway are healthy.
pub fn all_healthy(lab: &Lab, which: &[&str]) -> bool {
    which
        .iter()
        .all(|o| state(lab, o).as_deref() == Some("healthy"))
        && gateway_state(lab).as_deref() == Some("healthy")
}

/// Events since `since` (RFC 3339), from the API.
pub fn events_since(lab: &Lab, since: &str) -> Vec<Value> {
    let v = get(
        lab,
        &format!("/api/v1/events?from={}", jatah::lab::url_encode(since)),
    );
    v["events"].as_array().cloned().unwrap_or_default()
}

pub fn now_rfc3339() -> String {
    chrono::Utc::now().to_rfc3339()
}

/// No OPD's state reached local_fault or local_degraded since `since`.
pub fn no_local_blame(lab: &Lab, since: &str) {
    for e in events_since(lab, since) {
        let s = e["state"].as_str().unwrap_or("");
        assert!(
            s != "local_fault" && s != "local_degraded",
            "an OPD was blamed for the uplink: {e}"
        );
    }
}

/// No `upstream_*` event (the gateway's or an OPD's) since `since`.
pub fn no_upstream_verdict(lab: &Lab, since: &str) {
    for e in events_since(lab, since) {
        let s = e["state"].as_str().unwrap_or("");
        assert!(!s.starts_with("upstream_"), "an upstream verdict: {e}");
    }
}
