//! `GET /api/v1/gateway/delivered`: how many hours of a month the ISP
//! delivered less than 80% of the contract, per direction, with the
//! lowest delivered minute and a breakdown by day, from the history's
//! delivered minutes (`history/delivered.rs` says what a minute holds).
//! Months and days are the gateway's (its timezone).

use std::collections::HashMap;
use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::routing::get;
use chrono::{DateTime, Datelike, Utc};
use serde::Serialize;
use utoipa::ToSchema;

use crate::history::{BELOW_RATIO, DeliveredPeriod, parse_month};
use crate::http::api::{history_problem, summary_access, with_history};
use crate::http::problem::Problem;
use crate::policy::Direction;
use crate::runtime::state::AppState;

/// The route (merged into the full router only; the status listener does
/// not serve it).
pub fn routes() -> Router<Arc<AppState>> {
    Router::new().route("/api/v1/gateway/delivered", get(get_delivered))
}

/// One direction of a month.
#[derive(Debug, Serialize, ToSchema)]
pub struct DeliveredDirection {
    /// The contracted capacity in force now, bits/s. Each second was
    /// compared with the contract in force that second.
    pub contracted_bps: u64,
    #[serde(flatten)]
    pub period: DeliveredPeriod,
}

/// What the uplink delivered in one month.
#[derive(Debug, Serialize, ToSchema)]
pub struct DeliveredMonth {
    /// The month, `YYYY-MM`, in the gateway's timezone.
    pub month: String,
    /// The gateway's timezone (IANA name); days and the month are cut in it.
    pub timezone: String,
    /// The month's first instant (UTC).
    pub from: DateTime<Utc>,
    /// The next month's first instant (UTC), exclusive.
    pub to: DateTime<Utc>,
    /// A second counts as short when the delivered estimate is below this
    /// share of the contract in force (0.8).
    pub below_ratio: f64,
    /// Whether the history was being written: false means the answer may
    /// miss minutes (the store failed meanwhile).
    pub history_available: bool,
    pub download: DeliveredDirection,
    pub upload: DeliveredDirection,
}

/// How many hours this month did the ISP deliver less than 80% of the
/// contract? Per direction: the contract, hours below 80%, minutes with a
/// delivered estimate, the lowest delivered minute and when, and every
/// day of the month (the gateway's timezone).
#[utoipa::path(get, path = "/api/v1/gateway/delivered", tag = "gateway",
    params(
        ("month" = Option<String>, Query, pattern = r"^[0-9]{4}-[0-9]{2}$", description = "The month, YYYY-MM, in the gateway's timezone (default: the current month)"),
    ),
    responses(
        (status = 200, description = "What the uplink delivered in the month", body = DeliveredMonth),
        (status = 400, description = "Bad parameter", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "No or bad token (unless anonymous summary is on)", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "History store unavailable", body = Problem, content_type = "application/problem+json"),
    ),
    security((), ("token" = [])))]
pub async fn get_delivered(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Json<DeliveredMonth>, Problem> {
    summary_access(&state, &headers)?;
    let view = state.view();
    let tz = view.policy.gateway.timezone;
    let (year, month) = month_query(&q, tz)?;
    let contracted = [Direction::Download, Direction::Upload]
        .map(|d| view.policy.capacity(d).bits_per_second());
    let st = state.clone();
    let (from, to, [download, upload]) = tokio::task::spawn_blocking(move || {
        with_history(&st, |store| {
            let (from, to) = store.month_range(year, month).ok_or_else(|| {
                Problem::bad_parameter("month", format!("{year:04}-{month:02} is out of range"))
            })?;
            let periods = store
                .delivered(from, to)
                .map_err(|e| history_problem(e, "month"))?;
            Ok((from, to, periods))
        })
    })
    .await
    .map_err(|e| Problem::internal(format!("delivered query: {e}")))??;
    Ok(Json(DeliveredMonth {
        month: format!("{year:04}-{month:02}"),
        timezone: tz.name().to_string(),
        from,
        to,
        below_ratio: BELOW_RATIO,
        history_available: state.history.available(),
        download: DeliveredDirection {
            contracted_bps: contracted[0],
            period: download,
        },
        upload: DeliveredDirection {
            contracted_bps: contracted[1],
            period: upload,
        },
    }))
}

/// The `month` parameter (`YYYY-MM`) of a monthly endpoint, or this month
/// in the gateway's timezone when it is absent; a 400 naming it otherwise.
pub(crate) fn month_query(
    q: &HashMap<String, String>,
    tz: chrono_tz::Tz,
) -> Result<(i32, u32), Problem> {
    match q.get("month") {
        None => {
            let now = Utc::now().with_timezone(&tz);
            Ok((now.year(), now.month()))
        }
        Some(m) => parse_month(m).ok_or_else(|| {
            Problem::bad_parameter(
                "month",
                format!("{m:?} is not a month: write YYYY-MM, e.g. 2026-11"),
            )
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::parse_month;

    #[test]
    fn months_are_yyyy_mm_and_nothing_else() {
        assert_eq!(parse_month("2026-11"), Some((2026, 11)));
        assert_eq!(parse_month("2026-01"), Some((2026, 1)));
        for bad in [
            "2026-13", "2026-00", "2026-1", "26-11", "2026/11", "2026-11-01", "", "-2026-11",
            "2026-+1", "１２３４-11", "9999-12",
        ] {
            assert_eq!(parse_month(bad), None, "{bad}");
        }
    }
}
