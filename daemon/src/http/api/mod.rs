//! The JSON API under `/api/v1`: OPD allocations, current rates and totals,
//! usage history (JSON and CSV), the gateway. Rates in bits per second
//! (`*_bps`), volumes in bytes. The OpenAPI document is generated from these
//! handlers and types, so it cannot drift from them.

use std::collections::HashMap;
use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use chrono::{DateTime, Duration as ChronoDuration, SecondsFormat, Utc};
use serde::Serialize;
use utoipa::ToSchema;

use crate::history::Step;
use crate::http::auth::Access;
use crate::http::problem::Problem;
use crate::policy::{Direction, Opd};
use crate::runtime::rates::WindowRates;
use crate::runtime::state::AppState;

mod access;
mod body;
pub(crate) mod hosts;
mod plan;
mod redact;
#[cfg(test)]
mod tests;

pub use access::access;
pub(crate) use access::{require_opd, summary_access};
pub use body::*;
pub use redact::Names;

/// The API routes (merged into the server's router).
pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/api/v1/opds", get(list_opds))
        .route("/api/v1/opds/{id}", get(get_opd))
        .route("/api/v1/opds/{id}/usage", get(get_usage))
        .route("/api/v1/opds/{id}/usage.csv", get(get_usage_csv))
        .route("/api/v1/opds/{id}/diagnosis", get(get_diagnosis))
        .route("/api/v1/opds/{id}/hosts", get(hosts::get_hosts))
        .route("/api/v1/groups", get(list_groups))
        .route("/api/v1/groups/{id}", get(get_group))
        .route("/api/v1/events", get(get_events))
        .route("/api/v1/gateway", get(get_gateway))
        .route("/api/v1/policy/reload", post(post_reload))
        .route("/api/v1/policy/plan", post(post_plan))
        .fallback(not_found)
}

async fn not_found() -> Problem {
    Problem::not_found("no such endpoint; see /openapi.json")
}

fn dir_usage(state: &AppState, opd: &Opd, dir: Direction) -> DirectionUsage {
    let d = dir.index();
    let a = opd.allocation(dir);
    let rate = state.traffic.rates(&opd.id, d);
    let counters = state.traffic.totals(&opd.id);
    let ceiling = a.ceiling.bits_per_second();
    DirectionUsage {
        guaranteed_bps: a.guaranteed.bits_per_second(),
        ceiling_bps: ceiling,
        rate,
        ceiling_percent: if ceiling == 0 {
            0.0
        } else {
            (rate.last_10s_bps as f64 * 1000.0 / ceiling as f64).round() / 10.0
        },
        bytes_total: counters.bytes[d],
        packets_total: counters.packets[d],
    }
}

pub(crate) fn summary(state: &AppState, opd: &Opd) -> OpdSummary {
    OpdSummary {
        id: opd.id.clone(),
        name: opd.name.clone(),
        state: state
            .diagnosis
            .engine
            .lock()
            .ok()
            .and_then(|e| e.opd(&opd.id).map(|v| v.state)),
        download: dir_usage(state, opd, Direction::Download),
        upload: dir_usage(state, opd, Direction::Upload),
    }
}

/// List the OPDs this token may see.
#[utoipa::path(get, path = "/api/v1/opds", tag = "opds",
    responses(
        (status = 200, description = "OPDs with allocation, current rates and totals", body = OpdList),
        (status = 401, description = "No or bad token (unless anonymous summary is on)", body = Problem, content_type = "application/problem+json"),
    ),
    security((), ("token" = [])))]
pub(crate) async fn list_opds(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
) -> Result<Json<OpdList>, Problem> {
    let access = summary_access(&state, &headers)?;
    let view = state.view();
    let opds = view
        .policy
        .opds
        .iter()
        .filter(|o| access == Access::Anonymous || access.can_see(&o.id))
        .map(|o| summary(&state, o))
        .collect();
    Ok(Json(OpdList { opds }))
}

/// One OPD: allocation, current rates, totals, today's and this month's volume.
#[utoipa::path(get, path = "/api/v1/opds/{id}", tag = "opds",
    params(("id" = String, Path, description = "OPD id, e.g. dinkes")),
    responses(
        (status = 200, description = "The OPD", body = OpdDetail),
        (status = 401, description = "No or bad token", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such OPD (or not visible to this token)", body = Problem, content_type = "application/problem+json"),
    ),
    security(("token" = [])))]
pub(crate) async fn get_opd(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<OpdDetail>, Problem> {
    let (_, opd) = require_opd(&state, &headers, &id)?;
    Ok(Json(opd_detail(&state, &opd).await))
}

/// One OPD in full (the history is read off the async workers).
pub(crate) async fn opd_detail(state: &Arc<AppState>, opd: &Opd) -> OpdDetail {
    let st = state.clone();
    let oid = opd.id.clone();
    let (today, this_month) = tokio::task::spawn_blocking(move || volumes(&st, &oid))
        .await
        .unwrap_or((None, None));
    OpdDetail {
        summary: summary(state, opd),
        subnets: opd.subnets.iter().map(|s| s.to_string()).collect(),
        probe: opd.probe.map(|p| p.to_string()),
        today,
        this_month,
        history_available: state.history.available(),
    }
}

/// Today's and this month's volume from the history (None when unavailable).
pub fn volumes(state: &AppState, opd: &str) -> (Option<Volume>, Option<Volume>) {
    let Ok(guard) = state.history.store.lock() else {
        return (None, None);
    };
    let Some(store) = guard.as_ref() else {
        return (None, None);
    };
    let now = Utc::now();
    let get = |from| {
        store.totals(opd, from, now).ok().map(|t| Volume {
            download_bytes: t.download_bytes,
            upload_bytes: t.upload_bytes,
        })
    };
    (get(store.day_start(now)), get(store.month_start(now)))
}

/// Runs `f` with the history store, or says why it is unavailable (503):
/// never a wrong or empty answer in its place.
pub(crate) fn with_history<T>(
    state: &AppState,
    f: impl FnOnce(&crate::history::HistoryStore) -> Result<T, Problem>,
) -> Result<T, Problem> {
    let guard = state
        .history
        .store
        .lock()
        .map_err(|_| Problem::internal("history lock poisoned"))?;
    let error = state.history.error.lock().ok().and_then(|e| e.clone());
    match (guard.as_ref(), error) {
        (Some(store), None) => f(store),
        (_, error) => Err(Problem::unavailable(
            "history-unavailable",
            format!(
                "usage history is unavailable ({}); the data path and metrics keep working",
                error.unwrap_or_else(|| "not opened".into())
            ),
        )),
    }
}

/// A history error as the API reports it: the caller's mistake (400,
/// naming `parameter`) or the store's (503).
pub(crate) fn history_problem(e: crate::history::HistoryError, parameter: &str) -> Problem {
    if e.is_client_error() {
        Problem::bad_parameter(parameter, e.to_string())
    } else {
        Problem::unavailable("history-unavailable", format!("usage history failed: {e}"))
    }
}

/// Parses `from`, `to` and `step`; defaults: the last 24 hours by the hour.
pub(crate) fn usage_query(
    q: &HashMap<String, String>,
) -> Result<(DateTime<Utc>, DateTime<Utc>, Step), Problem> {
    let time = |name: &str| -> Result<Option<DateTime<Utc>>, Problem> {
        q.get(name)
            .map(|v| {
                DateTime::parse_from_rfc3339(v)
                    .map(|t| t.with_timezone(&Utc))
                    .map_err(|e| {
                        Problem::bad_parameter(
                            name,
                            format!("{name}={v:?} is not an RFC 3339 time ({e}); e.g. 2026-11-01T00:00:00+08:00"),
                        )
                    })
            })
            .transpose()
    };
    let to = time("to")?.unwrap_or_else(Utc::now);
    let from = time("from")?.unwrap_or(to - ChronoDuration::hours(24));
    if from >= to {
        return Err(Problem::bad_parameter(
            "from",
            format!("from ({from}) must be before to ({to})"),
        ));
    }
    let step = match q.get("step") {
        None => Step::Hour,
        Some(s) => s
            .parse::<Step>()
            .map_err(|e| Problem::bad_parameter("step", e.to_string()))?,
    };
    Ok((from, to, step))
}

pub(crate) async fn usage_points(
    state: Arc<AppState>,
    id: String,
    q: HashMap<String, String>,
) -> Result<Usage, Problem> {
    let (from, to, step) = usage_query(&q)?;
    let tz = state.view().policy.gateway.timezone.to_string();
    tokio::task::spawn_blocking(move || {
        let points = with_history(&state, |store| {
            let parameter = if matches!(step, Step::Minute) {
                "step"
            } else {
                "from"
            };
            store
                .usage(&id, from, to, step)
                .map_err(|e| history_problem(e, parameter))
        })?;
        Ok(Usage {
            opd: id,
            from,
            to,
            step: step.as_str().to_string(),
            timezone: tz,
            points,
        })
    })
    .await
    .map_err(|e| Problem::internal(format!("usage query: {e}")))?
}

/// Usage of an OPD per step over a time range, from the history store.
#[utoipa::path(get, path = "/api/v1/opds/{id}/usage", tag = "opds",
    params(
        ("id" = String, Path, description = "OPD id"),
        ("from" = Option<String>, Query, format = DateTime, description = "RFC 3339 start (default: 24 h before `to`)"),
        ("to" = Option<String>, Query, format = DateTime, description = "RFC 3339 end, exclusive (default: now)"),
        ("step" = Option<String>, Query, pattern = "^(1m|1h|1d)$", description = "1m (kept 35 days), 1h (2 years) or 1d (forever); default 1h"),
    ),
    responses(
        (status = 200, description = "Usage per step", body = Usage),
        (status = 400, description = "Bad from/to/step; the `parameter` field names it", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "No or bad token", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such OPD", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "History store unavailable", body = Problem, content_type = "application/problem+json"),
    ),
    security(("token" = [])))]
pub(crate) async fn get_usage(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Json<Usage>, Problem> {
    require_opd(&state, &headers, &id)?;
    usage_points(state, id, q).await.map(Json)
}

/// The same usage as CSV, for monthly reports.
#[utoipa::path(get, path = "/api/v1/opds/{id}/usage.csv", tag = "opds",
    params(
        ("id" = String, Path, description = "OPD id"),
        ("from" = Option<String>, Query, format = DateTime, description = "RFC 3339 start"),
        ("to" = Option<String>, Query, format = DateTime, description = "RFC 3339 end, exclusive"),
        ("step" = Option<String>, Query, pattern = "^(1m|1h|1d)$", description = "1m, 1h or 1d"),
        ("separator" = Option<String>, Query, pattern = "^(comma|semicolon)$", description = "comma (default) or semicolon (spreadsheets set to Indonesian)"),
    ),
    responses(
        (status = 200, description = "CSV: start,download_bytes,upload_bytes,peak_download_bps,peak_upload_bps; `start` in the gateway's local time with its offset (RFC 3339, e.g. 2026-11-03T00:00:00+08:00)", body = String, content_type = "text/csv"),
        (status = 400, description = "Bad parameter", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "No or bad token", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such OPD", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "History store unavailable", body = Problem, content_type = "application/problem+json"),
    ),
    security(("token" = [])))]
pub(crate) async fn get_usage_csv(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Response, Problem> {
    require_opd(&state, &headers, &id)?;
    let sep = match q.get("separator").map(String::as_str) {
        None | Some("comma") | Some(",") => ',',
        Some("semicolon") | Some(";") => ';',
        Some(other) => {
            return Err(Problem::bad_parameter(
                "separator",
                format!("separator={other:?}: write comma or semicolon"),
            ));
        }
    };
    let tz = state.view().policy.gateway.timezone;
    let usage = usage_points(state, id, q).await?;
    let mut csv = ["start", "download_bytes", "upload_bytes", "peak_download_bps", "peak_upload_bps"]
        .join(&sep.to_string());
    csv.push('\n');
    for p in &usage.points {
        // Local time with its offset: the steps are the gateway's hours
        // and days, e.g. 2026-11-03T00:00:00+08:00.
        let start = p.start.with_timezone(&tz).to_rfc3339_opts(SecondsFormat::Secs, false);
        csv.push_str(&format!(
            "{start}{sep}{}{sep}{}{sep}{}{sep}{}\n",
            p.download_bytes, p.upload_bytes, p.peak_download_bps, p.peak_upload_bps
        ));
    }
    let mut res = (StatusCode::OK, csv).into_response();
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/csv; charset=utf-8"),
    );
    let name = format!(
        "attachment; filename=\"jatah-{}-{}-{}.csv\"",
        usage.opd,
        usage.from.format("%Y%m%dT%H%MZ"),
        usage.to.format("%Y%m%dT%H%MZ")
    );
    if let Ok(v) = HeaderValue::from_str(&name) {
        res.headers_mut().insert(header::CONTENT_DISPOSITION, v);
    }
    Ok(res)
}

/// The gateway: capacity, aggregate rates, unclassified traffic, policy.
/// An `opd:` token reads it naming no other OPD: the OPDs a delivered
/// estimate held are cut to its own, and a failed reload's error (which
/// quotes the policy file) says where the admin reads it instead.
#[utoipa::path(get, path = "/api/v1/gateway", tag = "gateway",
    responses(
        (status = 200, description = "The gateway", body = GatewayStatus),
        (status = 401, description = "No or bad token (unless anonymous summary is on)", body = Problem, content_type = "application/problem+json"),
    ),
    security((), ("token" = [])))]
pub(crate) async fn get_gateway(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
) -> Result<Json<GatewayStatus>, Problem> {
    let access = summary_access(&state, &headers)?;
    let names = Names::of(&access);
    let view = state.view();
    let policy = &view.policy;
    let unclassified = state.traffic.unclassified();
    let delivered: [Option<crate::diagnosis::capacity::Delivered>; 2] = {
        let engine = crate::runtime::state::lock(&state.diagnosis.engine);
        engine.delivered().map(|d| {
            let mut d = d.cloned();
            names.delivered(&mut d);
            d
        })
    };
    let direction = |dir: Direction| {
        let d = dir.index();
        let rate = state
            .traffic
            .sum_rates(policy.opds.iter().map(|o| o.id.as_str()), d);
        GatewayDirection {
            capacity_bps: policy.capacity(dir).bits_per_second(),
            guaranteed_sum_bps: policy.guaranteed_sum(dir).bits_per_second(),
            rate,
            unclassified_bytes_total: unclassified.bytes[d],
            delivered: delivered[d].clone(),
        }
    };
    let reload = state.reloads.lock().map(|r| r.clone()).unwrap_or_default();
    let mut diagnosis = state
        .diagnosis
        .engine
        .lock()
        .ok()
        .and_then(|e| e.gateway().cloned());
    names.verdict(&mut diagnosis);
    Ok(Json(GatewayStatus {
        version: env!("CARGO_PKG_VERSION").into(),
        diagnosis,
        wan: policy.gateway.wan.clone(),
        lan: policy.gateway.lan.clone(),
        timezone: policy.gateway.timezone.to_string(),
        download: direction(Direction::Download),
        upload: direction(Direction::Upload),
        policy: PolicyStatus {
            source: view.source.display().to_string(),
            opds: policy.opds.len(),
            last_reload_successful: reload.successful,
            last_reload_at: reload.at,
            last_reload_error: names.reload_error(reload.error),
        },
        schedules_open: crate::policy::schedule::open_schedules(
            &policy.schedules,
            Utc::now(),
            policy.gateway.timezone,
        ),
        history_available: state.history.available(),
    }))
}

/// Is it the OPD or the network? The OPD's state, its evidence, since when,
/// and a sentence in English and Bahasa Indonesia.
#[utoipa::path(get, path = "/api/v1/opds/{id}/diagnosis", tag = "opds",
    params(("id" = String, Path, description = "OPD id")),
    responses(
        (status = 200, description = "The OPD's and the gateway's verdicts", body = Diagnosis),
        (status = 401, description = "No or bad token", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such OPD", body = Problem, content_type = "application/problem+json"),
    ),
    security(("token" = [])))]
pub(crate) async fn get_diagnosis(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<Diagnosis>, Problem> {
    let (access, opd) = require_opd(&state, &headers, &id)?;
    let engine = state
        .diagnosis
        .engine
        .lock()
        .map_err(|_| Problem::internal("diagnosis lock poisoned"))?;
    let mut gateway = engine.gateway().cloned();
    Names::of(&access).verdict(&mut gateway);
    Ok(Json(Diagnosis {
        opd: opd.id,
        verdict: engine.opd(&id).cloned(),
        gateway,
    }))
}

/// State changes (OPD and gateway) in a time range, oldest first. An
/// `opd:` token sees its own OPD's events and the gateway's.
#[utoipa::path(get, path = "/api/v1/events", tag = "gateway",
    params(
        ("from" = Option<String>, Query, format = DateTime, description = "RFC 3339 start (default: 24 h before `to`)"),
        ("to" = Option<String>, Query, format = DateTime, description = "RFC 3339 end, exclusive (default: now)"),
        ("opd" = Option<String>, Query, description = "Only this OPD's events (and the gateway's)"),
    ),
    responses(
        (status = 200, description = "Events", body = Events),
        (status = 400, description = "Bad parameter", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "No or bad token", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such OPD", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "History store unavailable", body = Problem, content_type = "application/problem+json"),
    ),
    security(("token" = [])))]
pub(crate) async fn get_events(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Json<Events>, Problem> {
    let access = access(&state, &headers)?;
    let filter = match (&access, q.get("opd")) {
        (Access::Anonymous, _) => {
            return Err(Problem::token_required());
        }
        (Access::Opd(own), None) => Some(own.clone()),
        (a, Some(id)) => {
            if !a.can_see(id) || state.view().policy.opd(id).is_none() {
                return Err(Problem::no_such_opd(id));
            }
            Some(id.clone())
        }
        (Access::Admin, None) => None,
    };
    let (from, to, _) = usage_query(&q)?;
    let mut events = events_of(state, from, to, filter).await?;
    let names = Names::of(&access);
    events.iter_mut().for_each(|e| names.event(e));
    Ok(Json(Events { from, to, events }))
}

/// Events in `[from, to)`, oldest first: every OPD's and the gateway's, or
/// (`filter`) one OPD's and the gateway's. The filter is the history
/// query's own, so another OPD's events are never read: however many
/// there are, they cannot push the answer over its limit.
pub(crate) async fn events_of(
    state: Arc<AppState>,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    filter: Option<String>,
) -> Result<Vec<EventBody>, Problem> {
    tokio::task::spawn_blocking(move || {
        let events = with_history(&state, |store| {
            store
                .events(from, to, filter.as_deref())
                .map_err(|e| history_problem(e, "from"))
        })?;
        Ok(events.into_iter().map(EventBody::from).collect())
    })
    .await
    .map_err(|e| Problem::internal(format!("events query: {e}")))?
}

pub(crate) fn require_admin(state: &AppState, headers: &HeaderMap) -> Result<(), Problem> {
    match access(state, headers)? {
        Access::Admin => Ok(()),
        Access::Anonymous => Err(Problem::token_required()),
        Access::Opd(_) => Err(Problem::forbidden("this needs the admin role")),
    }
}

/// Reload the policy file now (as on SIGHUP). An invalid file, or one that
/// changes interfaces, is refused and the policy in force stays.
#[utoipa::path(post, path = "/api/v1/policy/reload", tag = "gateway",
    responses(
        (status = 200, description = "Applied, or nothing to change", body = crate::runtime::reload::ReloadOutcome),
        (status = 401, description = "No or bad token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not an admin token", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Refused (invalid file, or a change needing a restart) or failed and rolled back; the policy in force stays", body = Problem, content_type = "application/problem+json"),
    ),
    security(("token" = [])))]
pub(crate) async fn post_reload(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
) -> Result<Json<crate::runtime::reload::ReloadOutcome>, Problem> {
    require_admin(&state, &headers)?;
    let outcome =
        tokio::task::spawn_blocking(move || crate::runtime::reload::reload(&state, "API"))
            .await
            .map_err(|e| Problem::internal(format!("reload: {e}")))?;
    if outcome.ok() {
        Ok(Json(outcome))
    } else {
        Err(Problem::unprocessable(format!(
            "reload {}: {}",
            outcome.result,
            outcome.error.unwrap_or_default()
        )))
    }
}

/// What a reload of the policy in the request body (TOML) would change
/// against the policy in force. Nothing is changed.
#[utoipa::path(post, path = "/api/v1/policy/plan", tag = "gateway",
    request_body(description = "A policy file (TOML)", content(
        (String = "application/toml"),
        (String = "text/plain"),
    )),
    responses(
        (status = 200, description = "The changes", body = crate::policy::plan::Plan),
        (status = 400, description = "The policy is invalid; detail lists FILE:LINE:COLUMN problems", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "No or bad token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not an admin token", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Other plans are being computed (one at a time) and none finished within 5 s; `Retry-After` says when to ask again", body = Problem, content_type = "application/problem+json"),
    ),
    security(("token" = [])))]
pub(crate) async fn post_plan(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: String,
) -> Result<Json<crate::policy::plan::Plan>, Problem> {
    require_admin(&state, &headers)?;
    plan::plan(state, body).await.map(Json)
}

/// One direction of a group: its allocation, its members' current rate.
#[derive(Debug, Serialize, ToSchema)]
pub struct GroupDirection {
    pub guaranteed_bps: u64,
    pub ceiling_bps: u64,
    /// Sum of the members' rates.
    pub rate: WindowRates,
}

/// A group of OPDs sharing an allocation.
#[derive(Debug, Serialize, ToSchema)]
pub struct GroupBody {
    pub id: String,
    pub name: String,
    /// Members this token may see.
    pub members: Vec<String>,
    pub download: GroupDirection,
    pub upload: GroupDirection,
}

/// Groups this token may see.
#[derive(Debug, Serialize, ToSchema)]
pub struct GroupList {
    pub groups: Vec<GroupBody>,
}

fn group_body(state: &AppState, access: &Access, g: &crate::policy::Group) -> GroupBody {
    let view = state.view();
    let members: Vec<&Opd> = view.policy.members(&g.id).collect();
    let dir = |dir: Direction| {
        let d = dir.index();
        let a = g.allocation(dir);
        let rate = state
            .traffic
            .sum_rates(members.iter().map(|o| o.id.as_str()), d);
        GroupDirection {
            guaranteed_bps: a.guaranteed.bits_per_second(),
            ceiling_bps: a.ceiling.bits_per_second(),
            rate,
        }
    };
    GroupBody {
        id: g.id.clone(),
        name: g.name.clone(),
        members: members
            .iter()
            .filter(|o| access.can_see(&o.id))
            .map(|o| o.id.clone())
            .collect(),
        download: dir(Direction::Download),
        upload: dir(Direction::Upload),
    }
}

/// Whether a token may see a group: the admin sees all, an OPD token the
/// group its OPD belongs to.
fn can_see_group(state: &AppState, access: &Access, group: &str) -> bool {
    match access {
        Access::Admin => true,
        Access::Opd(id) => {
            state.view().policy.opd(id).and_then(|o| o.group.as_deref()) == Some(group)
        }
        Access::Anonymous => false,
    }
}

/// List the groups this token may see.
#[utoipa::path(get, path = "/api/v1/groups", tag = "opds",
    responses(
        (status = 200, description = "Groups with allocation, members and current rate", body = GroupList),
        (status = 401, description = "No or bad token", body = Problem, content_type = "application/problem+json"),
    ),
    security(("token" = [])))]
pub(crate) async fn list_groups(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
) -> Result<Json<GroupList>, Problem> {
    let access = access(&state, &headers)?;
    if access == Access::Anonymous {
        return Err(Problem::token_required());
    }
    let view = state.view();
    let groups = view
        .policy
        .groups
        .iter()
        .filter(|g| can_see_group(&state, &access, &g.id))
        .map(|g| group_body(&state, &access, g))
        .collect();
    Ok(Json(GroupList { groups }))
}

/// One group.
#[utoipa::path(get, path = "/api/v1/groups/{id}", tag = "opds",
    params(("id" = String, Path, description = "Group id, e.g. kecamatan")),
    responses(
        (status = 200, description = "The group", body = GroupBody),
        (status = 401, description = "No or bad token", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such group (or not visible to this token)", body = Problem, content_type = "application/problem+json"),
    ),
    security(("token" = [])))]
pub(crate) async fn get_group(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<GroupBody>, Problem> {
    let access = access(&state, &headers)?;
    if access == Access::Anonymous {
        return Err(Problem::token_required());
    }
    let view = state.view();
    match view.policy.group(&id) {
        Some(g) if can_see_group(&state, &access, &id) => Ok(Json(group_body(&state, &access, g))),
        _ => Err(Problem::not_found(format!("there is no group {id:?}"))),
    }
}
