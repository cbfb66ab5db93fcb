//! `GET /api/v1/reports/monthly`: the monthly report `jatah report`
//! prints, as JSON or CSV (`history/report.rs` defines every figure).
//! An admin token gets every OPD, an `opd:` token its own row only; the
//! uplink's figures name no OPD, so both get them.

use std::collections::HashMap;
use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use chrono::Utc;

use crate::cli::report::report_policy;
use crate::history::report_text::{self, Separator};
use crate::history::MonthlyReport;
use crate::http::api::{access, history_problem, with_history};
use crate::http::auth::Access;
use crate::http::problem::Problem;
use crate::runtime::state::{AppState, lock};

/// The route (merged into the full router only).
pub fn routes() -> Router<Arc<AppState>> {
    Router::new().route("/api/v1/reports/monthly", get(get_monthly))
}

/// A month's report: per OPD the volume, peak and 95th-percentile rates,
/// hours at >= 95% of the ceiling and hours in each diagnosis state; the
/// uplink's hours under 80% of the contract and mean delivered rate.
/// Months and days are the gateway's (its timezone).
#[utoipa::path(get, path = "/api/v1/reports/monthly", tag = "opds",
    params(
        ("month" = Option<String>, Query, pattern = r"^[0-9]{4}-[0-9]{2}$", description = "The month, YYYY-MM, in the gateway's timezone (default: the current month)"),
        ("format" = Option<String>, Query, pattern = "^(json|csv)$", description = "json (default) or csv"),
        ("separator" = Option<String>, Query, pattern = "^(comma|semicolon)$", description = "CSV separator: comma (default) or semicolon, which also writes decimals with a comma (spreadsheets set to Indonesian)"),
    ),
    responses(
        (status = 200, description = "The report (an `opd:` token gets its own OPD only); with format=csv the same as text/csv", body = MonthlyReport,
            content(
                (MonthlyReport = "application/json"),
                (String = "text/csv"),
            )),
        (status = 400, description = "Bad month, format or separator; the `parameter` field names it", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "No or bad token", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "History store unavailable", body = Problem, content_type = "application/problem+json"),
    ),
    security(("token" = [])))]
pub async fn get_monthly(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Response, Problem> {
    let access = access(&state, &headers)?;
    if access == Access::Anonymous {
        return Err(Problem::token_required());
    }
    let tz = state.view().policy.gateway.timezone;
    let (year, month) = crate::http::delivered::month_query(&q, tz)?;
    let csv = match q.get("format").map(String::as_str) {
        None | Some("json") => false,
        Some("csv") => true,
        Some(other) => {
            return Err(Problem::bad_parameter(
                "format",
                format!("format={other:?}: write json or csv"),
            ));
        }
    };
    let sep = match q.get("separator") {
        None => Separator::Comma,
        Some(s) => Separator::parse(s).ok_or_else(|| {
            Problem::bad_parameter(
                "separator",
                format!("separator={s:?}: write comma or semicolon"),
            )
        })?,
    };
    let st = state.clone();
    let mut report = tokio::task::spawn_blocking(move || {
        // The policy file as read (before schedules): the ceilings of
        // every minute follow its schedules.
        let base = lock(&st.control)
            .as_ref()
            .map(|c| c.base.clone())
            .unwrap_or_else(|| st.view().policy.clone());
        // A connection of its own, read-only: a month of minutes takes a
        // while to sum, and the daemon's writes must not wait for it.
        let reader = with_history(&st, |store| {
            store.reader().map_err(|e| history_problem(e, "month"))
        })?;
        let policy = report_policy(&base);
        reader
            .monthly_report(year, month, Some(&policy), Utc::now())
            .map_err(|e| history_problem(e, "month"))
    })
    .await
    .map_err(|e| Problem::internal(format!("report: {e}")))??;
    if let Access::Opd(own) = &access {
        report.opds.retain(|o| &o.opd == own);
    }
    if !csv {
        return Ok(Json(report).into_response());
    }
    let mut res = (StatusCode::OK, report_text::csv(&report, sep)).into_response();
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/csv; charset=utf-8"),
    );
    let name = format!("attachment; filename=\"jatah-report-{}.csv\"", report.month);
    if let Ok(v) = HeaderValue::from_str(&name) {
        res.headers_mut().insert(header::CONTENT_DISPOSITION, v);
    }
    Ok(res)
}
