//! `GET /api/v1/opds/{id}/hosts`: who in the office uses its allocation.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use serde::Serialize;
use utoipa::ToSchema;

use super::access::require_opd;
use crate::http::problem::Problem;
use crate::runtime::hosts::{self, HostUse};
use crate::runtime::state::AppState;

/// Hosts listed at most.
const MAX_LIMIT: usize = 100;

/// One host's use of the office's allocation over the window.
#[derive(Debug, Serialize, ToSchema)]
pub struct Host {
    /// The host's address (IPv6 hosts per address).
    pub address: String,
    /// Its name from the policy (`[[opd.host]]`), if it has one.
    pub name: Option<String>,
    pub download: HostDirection,
    pub upload: HostDirection,
}

/// One direction of a host's use.
#[derive(Debug, Serialize, ToSchema)]
pub struct HostDirection {
    pub bytes: u64,
    /// Mean rate over the window, bit/s.
    pub rate_bps: u64,
    /// Share of the office's bytes in this direction (all its hosts), 0..1.
    pub share: f64,
}

/// The top hosts of an OPD over a recent window.
#[derive(Debug, Serialize, ToSchema)]
pub struct Hosts {
    pub opd: String,
    /// The window asked for: 1m, 5m or 1h.
    pub window: String,
    /// How long the window measured really was, seconds (snapshots are
    /// 15 s apart for minutes, 5 minutes apart for the hour; shorter
    /// while jatah has run less than the window).
    pub window_seconds: f64,
    /// Hosts of the office that moved any byte in the window.
    pub active_hosts: usize,
    /// The office's bytes over the window, download and upload (all hosts).
    pub download_bytes: u64,
    pub upload_bytes: u64,
    /// Most bytes first (download and upload together), at most `limit`.
    pub hosts: Vec<Host>,
    /// Hosts the gateway's per-host table holds now (all offices), and how
    /// many it has evicted since it started (least recently seen first): a
    /// host evicted in the window is missing from it.
    pub tracked_hosts: usize,
    pub evicted_hosts: u64,
}

/// Who in the office uses its allocation: its hosts by bytes over the
/// last minute, 5 minutes or hour, with their rate and share of the
/// office's traffic. Per-host figures are in this API only, never in
/// /metrics.
#[utoipa::path(get, path = "/api/v1/opds/{id}/hosts", tag = "opds",
    params(
        ("id" = String, Path, description = "OPD id"),
        ("window" = Option<String>, Query, pattern = "^(1m|5m|1h)$", description = "1m, 5m (default) or 1h"),
        ("limit" = Option<u32>, Query, minimum = 1, maximum = 100, description = "Hosts listed at most (default 10)"),
    ),
    responses(
        (status = 200, description = "The OPD's top hosts", body = Hosts),
        (status = 400, description = "Bad parameter", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "No or bad token", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such OPD", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Per-host counting unavailable (no data path)", body = Problem, content_type = "application/problem+json"),
    ),
    security(("token" = [])))]
pub(crate) async fn get_hosts(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Json<Hosts>, Problem> {
    let (_, opd) = require_opd(&state, &headers, &id)?;
    let (window, label) = match q.get("window").map(String::as_str) {
        None | Some("5m") => (Duration::from_secs(300), "5m"),
        Some("1m") => (Duration::from_secs(60), "1m"),
        Some("1h") => (Duration::from_secs(3600), "1h"),
        Some(other) => {
            return Err(Problem::bad_parameter(
                "window",
                format!("window \"{other}\" is not 1m, 5m or 1h"),
            ));
        }
    };
    let limit = match q.get("limit") {
        None => 10,
        Some(v) => match v.parse::<usize>() {
            Ok(n) if (1..=MAX_LIMIT).contains(&n) => n,
            _ => {
                return Err(Problem::bad_parameter(
                    "limit",
                    format!("limit \"{v}\" is not a whole number from 1 to {MAX_LIMIT}"),
                ));
            }
        },
    };
    let Some(slot) = state.view().slots.get(&opd.id).copied() else {
        return Err(Problem::unavailable(
            "hosts",
            "this OPD has no slot in the data path yet",
        ));
    };
    if state.counters.is_none() {
        return Err(Problem::unavailable(
            "hosts",
            "per-host counting needs the data path",
        ));
    }
    // Walking the kernel's table is a few thousand system calls: off the
    // async workers, and one walk at a time.
    let wait = Duration::from_secs(5);
    let permit = match tokio::time::timeout(wait, state.hosts.walks.clone().acquire_owned()).await {
        Ok(Ok(permit)) => permit,
        _ => {
            return Err(Problem::busy(
                "other host lists are being read and none finished within 5 s; ask again",
                wait,
            ));
        }
    };
    let st = state.clone();
    let (now, base) = tokio::task::spawn_blocking(move || {
        let _permit = permit;
        let now = st
            .counters
            .as_ref()
            .and_then(|reader| hosts::snapshot_now(reader, &st.hosts));
        let base = st.hosts.base(Instant::now(), window);
        (now, base)
    })
    .await
    .map_err(|e| Problem::internal(e.to_string()))?;
    let (Some(now), Some((age, base))) = (now, base) else {
        return Err(Problem::unavailable("hosts", "no per-host counts yet"));
    };
    let used = hosts::Window::of(&base, &now, slot);
    let seconds = age.as_secs_f64();
    let direction = |h: &HostUse, d: usize| HostDirection {
        bytes: h.bytes[d],
        rate_bps: if seconds > 0.0 {
            (h.bytes[d] as f64 * 8.0 / seconds) as u64
        } else {
            0
        },
        share: used.share(h, d),
    };
    let (tracked, evicted) = state.hosts.held_and_evicted();
    Ok(Json(Hosts {
        opd: opd.id.clone(),
        window: label.to_string(),
        window_seconds: (seconds * 10.0).round() / 10.0,
        active_hosts: used.hosts.len(),
        download_bytes: used.total[0],
        upload_bytes: used.total[1],
        hosts: used
            .hosts
            .iter()
            .take(limit)
            .map(|h| Host {
                address: h.address.to_string(),
                name: opd.host_name(h.address).map(str::to_string),
                download: direction(h, 0),
                upload: direction(h, 1),
            })
            .collect(),
        tracked_hosts: tracked,
        evicted_hosts: evicted,
    }))
}
