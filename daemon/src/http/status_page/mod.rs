//! The status page for OPD operators: "is it my cable or the network?"
//!
//! `/status` shows the visitor's OPD: the verdict as a traffic light with
//! one sentence, current rates against the allocation, today's and this
//! month's volume, the last 24 hours, recent events, and the checklist the
//! training teaches for that verdict with a reference code to read out to
//! Diskominfo. `/status/admin` shows every OPD as a grid of lights.
//!
//! Which OPD: a bearer token (`opd:<id>`, sent by the page from the link's
//! fragment `/status#token=...`, so it never reaches a request line or an
//! access log), else the visitor's source address, which lies inside one
//! OPD's subnets. A visitor never sees another OPD's data: an address in no
//! OPD's subnets gets a page that says so, and another OPD's id is a 404.
//!
//! The page is one HTML, one CSS and one JS file (`daemon/web/`), compiled
//! into the binary: nothing to build or install on the gateway. It polls
//! `GET /api/v1/status` every few seconds.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, LazyLock};

use axum::extract::connect_info::ConnectInfo;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use axum::{Extension, Json, Router};
use chrono::{DateTime, Duration as ChronoDuration, Utc};
use serde::Serialize;
use utoipa::ToSchema;

use crate::diagnosis::{State as DiagnosisState, Verdict};
use crate::http::api::{EventBody, Names, OpdDetail, OpdSummary, Usage};
use crate::http::auth::Access;
use crate::http::problem::Problem;
use crate::policy::Opd;
use crate::runtime::state::AppState;

const HTML: &str = include_str!("../../../web/status.html");
const CSS: &str = include_str!("../../../web/status.css");
const JS: &str = include_str!("../../../web/status.js");

/// What the page allows itself: its own scripts, styles and API, nothing
/// inline, no frames, no other origin.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                   connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// Recent events the page lists.
const RECENT_EVENTS: usize = 10;

/// The status page's routes (merged into both routers).
pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/", get(|| async { Redirect::to("/status") }))
        .route("/status", get(page))
        .route("/status/admin", get(page))
        .route("/status/assets/status.css", get(css))
        .route("/status/assets/status.js", get(js))
        .route("/api/v1/status", get(get_status))
        .route("/api/v1/status/overview", get(get_overview))
        .route("/api/v1/references/{code}", get(get_reference))
}

/// An embedded file with its content type and a strong ETag: browsers
/// revalidate (`no-cache`) and get a 304 until jatah is upgraded.
struct Asset {
    body: &'static str,
    content_type: &'static str,
    etag: String,
}

impl Asset {
    fn new(body: &'static str, content_type: &'static str) -> Asset {
        use sha2::Digest;
        let hash = sha2::Sha256::digest(body.as_bytes());
        Asset {
            body,
            content_type,
            etag: format!("\"{}\"", hex::encode(&hash[..8])),
        }
    }

    fn serve(&self, headers: &HeaderMap) -> Response {
        let fresh = headers
            .get(header::IF_NONE_MATCH)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| {
                v.split(',')
                    .any(|t| t.trim() == self.etag || t.trim() == "*")
            });
        let mut res = if fresh {
            StatusCode::NOT_MODIFIED.into_response()
        } else {
            (StatusCode::OK, self.body).into_response()
        };
        let h = res.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static(self.content_type),
        );
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
        if let Ok(v) = HeaderValue::from_str(&self.etag) {
            h.insert(header::ETAG, v);
        }
        h.insert(
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        );
        h.insert(
            header::REFERRER_POLICY,
            HeaderValue::from_static("no-referrer"),
        );
        res
    }
}

static PAGE: LazyLock<Asset> = LazyLock::new(|| Asset::new(HTML, "text/html; charset=utf-8"));
static STYLE: LazyLock<Asset> = LazyLock::new(|| Asset::new(CSS, "text/css; charset=utf-8"));
static SCRIPT: LazyLock<Asset> = LazyLock::new(|| Asset::new(JS, "text/javascript; charset=utf-8"));

async fn page(headers: HeaderMap) -> Response {
    let mut res = PAGE.serve(&headers);
    let h = res.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    res
}

async fn css(headers: HeaderMap) -> Response {
    STYLE.serve(&headers)
}

async fn js(headers: HeaderMap) -> Response {
    SCRIPT.serve(&headers)
}

/// The colour of the traffic light (the page always shows the state in
/// words and a symbol as well).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Light {
    /// Nothing wrong.
    Green,
    /// Slower or fuller than it should be.
    Yellow,
    /// Not working.
    Red,
    /// No verdict yet (the first seconds after start).
    Grey,
}

impl Light {
    pub fn of(state: Option<DiagnosisState>) -> Light {
        match state {
            None => Light::Grey,
            Some(DiagnosisState::Healthy | DiagnosisState::Idle) => Light::Green,
            Some(
                DiagnosisState::Saturated
                | DiagnosisState::LocalDegraded
                | DiagnosisState::UpstreamDegraded,
            ) => Light::Yellow,
            Some(DiagnosisState::LocalFault | DiagnosisState::UpstreamDown) => Light::Red,
        }
    }
}

/// Which of the training's checklists the verdict calls for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Checklist {
    /// Nothing to do.
    Normal,
    /// No verdict yet: wait a few seconds.
    Starting,
    /// At the office: power cable, connector, router lights, then call
    /// Diskominfo with the reference code.
    LocalFault,
    /// At the office, slow or lossy: router, cabling, then call.
    LocalDegraded,
    /// The office's own use fills its allocation: find the heavy use, or
    /// ask Diskominfo for more.
    Saturated,
    /// Diskominfo's side (the uplink): nothing to fix at the office.
    Upstream,
}

impl Checklist {
    pub fn of(state: Option<DiagnosisState>) -> Checklist {
        match state {
            None => Checklist::Starting,
            Some(DiagnosisState::Healthy | DiagnosisState::Idle) => Checklist::Normal,
            Some(DiagnosisState::LocalFault) => Checklist::LocalFault,
            Some(DiagnosisState::LocalDegraded) => Checklist::LocalDegraded,
            Some(DiagnosisState::Saturated) => Checklist::Saturated,
            Some(DiagnosisState::UpstreamDegraded | DiagnosisState::UpstreamDown) => {
                Checklist::Upstream
            }
        }
    }
}

/// How the page knew which OPD to show.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum IdentifiedBy {
    /// The visitor's address is inside the OPD's subnets.
    Address,
    /// A bearer token (`opd:<id>`, or admin naming the OPD).
    Token,
}

/// A direction jatah shapes below its contract because the uplink
/// delivers less: every office's guarantee is scaled by `percent`.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ScaledCapacity {
    /// "download" or "upload".
    pub direction: String,
    /// The capacity the gateway holds between probes, bit/s.
    pub effective_bps: u64,
    pub contract_bps: u64,
    /// `effective_bps` as a share of `contract_bps`, in whole percent.
    pub percent: u64,
    /// A probe tries a step up for a few seconds now (the capacity in
    /// force is then higher than `effective_bps`; the metric
    /// `jatah_gateway_{direction}_effective_capacity_bytes_per_second`
    /// shows it).
    pub probing: bool,
}

/// The directions shaped below their contract now.
pub fn capacity_scaled(state: &AppState) -> Vec<ScaledCapacity> {
    let policy = &state.view().policy;
    let a = crate::runtime::state::lock(&state.adaptive);
    crate::policy::Direction::all()
        .into_iter()
        .filter(|d| a.controllers[d.index()].adapted())
        .map(|d| {
            let contract = policy.capacity(d).bits_per_second();
            let c = &a.controllers[d.index()];
            let settled = c.settled(contract);
            ScaledCapacity {
                direction: d.as_str().to_string(),
                effective_bps: settled,
                contract_bps: contract,
                percent: (settled * 100).checked_div(contract).unwrap_or(100),
                probing: c.probing(),
            }
        })
        .collect()
}

/// Everything the status page shows for one OPD.
#[derive(Debug, Serialize, ToSchema)]
pub struct StatusPage {
    pub identified_by: IdentifiedBy,
    /// The visitor's address, when it decided the OPD.
    pub visitor_address: Option<String>,
    pub opd: OpdDetail,
    /// The OPD's verdict; null during the first seconds after start.
    pub verdict: Option<Verdict>,
    /// The uplink's verdict.
    pub gateway: Option<Verdict>,
    pub light: Light,
    /// The sentence for the operator, with since when (gateway's local time).
    pub sentence_en: String,
    pub sentence_id: String,
    /// When the state began, in the gateway's timezone, e.g. "10:02 WITA".
    pub since_local: Option<String>,
    /// The verdict's reference code (`XXXX-XXXX`), for Diskominfo.
    pub reference: Option<String>,
    pub checklist: Checklist,
    /// The gateway's timezone (IANA name) and its abbreviation now.
    pub timezone: String,
    pub timezone_abbreviation: String,
    /// The last 24 hours by the hour; null when the history is unavailable.
    pub usage_24h: Option<Usage>,
    /// Directions shaped below the contract (the uplink delivers less),
    /// with how much every guarantee is scaled.
    pub capacity_scaled: Vec<ScaledCapacity>,
    /// The OPD's and the gateway's latest state changes, newest first.
    pub recent_events: Vec<EventBody>,
    /// Who in the office used its allocation over about the last five
    /// minutes; null until jatah has two snapshots of its per-host counts.
    pub top_hosts: Option<hosts::TopHosts>,
    pub generated_at: DateTime<Utc>,
}

/// One OPD in the admin overview.
#[derive(Debug, Serialize, ToSchema)]
pub struct OverviewOpd {
    #[serde(flatten)]
    pub summary: OpdSummary,
    pub light: Light,
    pub since: Option<DateTime<Utc>>,
    pub since_local: Option<String>,
    pub reference: Option<String>,
    /// What the ISP delivers, while the OPD is under an uplink verdict
    /// (`upstream_*`) and the gateway has the figure, e.g. "ISP delivers
    /// 12 of 40 Mbit/s download since 10:02 WITA"; null otherwise.
    pub uplink_figure_en: Option<String>,
    pub uplink_figure_id: Option<String>,
}

/// Every OPD's light and rates, and the uplink's.
#[derive(Debug, Serialize, ToSchema)]
pub struct StatusOverview {
    pub gateway: Option<Verdict>,
    pub gateway_light: Light,
    /// The uplink's sentence with since when (gateway's local time) and,
    /// while the ISP delivers less, the figure; null before a verdict.
    pub gateway_sentence_en: Option<String>,
    pub gateway_sentence_id: Option<String>,
    pub timezone: String,
    pub timezone_abbreviation: String,
    /// Directions shaped below the contract (the uplink delivers less).
    pub capacity_scaled: Vec<ScaledCapacity>,
    pub opds: Vec<OverviewOpd>,
    pub generated_at: DateTime<Utc>,
}

/// An event a reference code names.
#[derive(Debug, Serialize, ToSchema)]
pub struct ReferenceMatch {
    #[serde(flatten)]
    pub event: EventBody,
    /// The OPD's name; null for the gateway.
    pub opd_name: Option<String>,
    /// Whether this verdict is still in force.
    pub current: bool,
    /// The verdict's sentence, as the operator read it.
    pub explanation_en: String,
    pub explanation_id: String,
}

/// What a reference code names.
#[derive(Debug, Serialize, ToSchema)]
pub struct ReferenceLookup {
    /// The code as jatah writes it.
    pub code: String,
    /// The minute (UTC) the code's state began in.
    pub minute: DateTime<Utc>,
    pub matches: Vec<ReferenceMatch>,
}

/// An OPD's sentence; under an `upstream_*` verdict it says what the ISP
/// delivers when the gateway has that figure (the office is never blamed).
fn upstream_aware_sentence(
    opd: &str,
    v: &Verdict,
    gateway: Option<&Verdict>,
    since_local: Option<&str>,
) -> (String, String) {
    let evidence = match gateway {
        Some(g) => crate::diagnosis::with_uplink_figures(v.state, &v.evidence, &g.evidence),
        None => v.evidence.clone(),
    };
    crate::diagnosis::explain_since(Some(opd), v.state, &evidence, since_local)
}

/// A time in the gateway's timezone, as an operator reads it: "10:02 WITA"
/// today, "03-03 10:02 WITA" on another day.
pub fn local_time(t: DateTime<Utc>, now: DateTime<Utc>, tz: chrono_tz::Tz) -> String {
    let local = t.with_timezone(&tz);
    if local.date_naive() == now.with_timezone(&tz).date_naive() {
        local.format("%H:%M %Z").to_string()
    } else {
        local.format("%d-%m %H:%M %Z").to_string()
    }
}

/// The abbreviation of the gateway's timezone now (WITA for Asia/Makassar).
pub fn timezone_abbreviation(tz: chrono_tz::Tz, now: DateTime<Utc>) -> String {
    now.with_timezone(&tz).format("%Z").to_string()
}

/// The OPD this visitor may see, and how that was decided. An admin names
/// it (`?opd=`); an `opd:` token is its OPD; without a token the source
/// address decides. Asking for another OPD is a 404, as in the API.
pub fn visitor_opd(
    state: &AppState,
    headers: &HeaderMap,
    peer: Option<SocketAddr>,
    wanted: Option<&str>,
) -> Result<(Opd, IdentifiedBy), Problem> {
    let access = crate::http::api::access(state, headers)?;
    let view = state.view();
    let policy = &view.policy;
    let (opd, by) = match access {
        Access::Admin => {
            let id = wanted.ok_or_else(|| {
                Problem::bad_parameter(
                    "opd",
                    "an admin token names the OPD to show (?opd=<id>); every OPD at once is /api/v1/status/overview",
                )
            })?;
            (policy.opd(id), IdentifiedBy::Token)
        }
        Access::Opd(own) => (policy.opd(&own), IdentifiedBy::Token),
        Access::Anonymous => {
            let opd = peer
                .and_then(|p| opd_by_address(state, policy, p))
                .ok_or_else(|| Problem::unknown_visitor(peer.map(|p| p.ip())))?;
            (Some(opd), IdentifiedBy::Address)
        }
    };
    match (opd, wanted) {
        (Some(o), Some(w)) if o.id != w => Err(Problem::no_such_opd(w)),
        (Some(o), _) => Ok((o.clone(), by)),
        (None, w) => Err(Problem::no_such_opd(w.unwrap_or("(this token's)"))),
    }
}

/// The OPD a visitor without a token is, by its source address. None when
/// recognising by address is off (`--status-by-address=false`), for the
/// gateway's own addresses, and for an OPD bound to an `interface` unless
/// the connection came in there (as the LAN side noted its SYN): a host
/// that takes another office's address does not get that office's page.
fn opd_by_address<'p>(
    state: &AppState,
    policy: &'p crate::policy::Policy,
    peer: SocketAddr,
) -> Option<&'p Opd> {
    use std::sync::atomic::Ordering;
    if !state.by_address.load(Ordering::Acquire) {
        return None;
    }
    let ip = peer.ip().to_canonical();
    if crate::sys::interface_addresses()
        .iter()
        .any(|(_, a)| a.to_canonical() == ip)
    {
        return None;
    }
    let opd = policy.opd_for_address(ip)?;
    let Some(name) = &opd.interface else {
        return Some(opd);
    };
    let lan = state.kernel.shaping()?.lan_device;
    let (bound, _) = crate::gateway::place_of(&opd.id, name, &lan).ok()?;
    let came = state.counters.as_ref()?.visit_place(peer)?;
    if bound.allows(came.ifindex, came.vlan) {
        Some(opd)
    } else {
        tracing::debug!(
            visitor = %peer.ip(),
            opd = %opd.id,
            came_in_on = came.ifindex,
            vlan = came.vlan,
            "a visitor with an OPD's address came in elsewhere than the OPD: not shown its page"
        );
        None
    }
}

fn no_store(mut res: Response) -> Response {
    res.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    res
}

/// The status page's data for the visitor's OPD.
#[utoipa::path(get, path = "/api/v1/status", tag = "status",
    params(("opd" = Option<String>, Query, description = "The OPD to show: needed with an admin token; with any other caller it must be the caller's own OPD")),
    responses(
        (status = 200, description = "The visitor's OPD: verdict, sentence, checklist, rates, volumes, 24 h usage, recent events", body = StatusPage),
        (status = 400, description = "An admin token without ?opd=", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "A bad token, or no token from an address in no OPD's subnets (type /problems/unknown-visitor)", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "Another OPD than the caller's, or no such OPD", body = Problem, content_type = "application/problem+json"),
    ),
    security((), ("token" = [])))]
pub async fn get_status(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    peer: Option<Extension<ConnectInfo<SocketAddr>>>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Response, Problem> {
    let peer = peer.map(|Extension(ConnectInfo(a))| a);
    let (opd, by) = visitor_opd(&state, &headers, peer, q.get("opd").map(String::as_str))?;
    let page = status_of(&state, &opd, by, peer.map(|p| p.ip())).await;
    Ok(no_store(Json(page).into_response()))
}

/// Builds the page's data for one OPD.
pub async fn status_of(
    state: &Arc<AppState>,
    opd: &Opd,
    by: IdentifiedBy,
    visitor: Option<IpAddr>,
) -> StatusPage {
    let now = Utc::now();
    let tz = state.view().policy.gateway.timezone;
    let detail = crate::http::api::opd_detail(state, opd).await;
    let (verdict, mut gateway) = state
        .diagnosis
        .engine
        .lock()
        .map(|e| (e.opd(&opd.id).cloned(), e.gateway().cloned()))
        .unwrap_or((None, None));
    // The page is one OPD's, whoever looks at it: other OPDs go unnamed.
    let names = Names::Only(&opd.id);
    names.verdict(&mut gateway);
    let since_local = verdict.as_ref().map(|v| local_time(v.since, now, tz));
    let (sentence_en, sentence_id) = match &verdict {
        Some(v) => upstream_aware_sentence(&opd.id, v, gateway.as_ref(), since_local.as_deref()),
        None => (
            "jatah is still gathering the first seconds of signals; the verdict follows shortly."
                .into(),
            "jatah masih mengumpulkan data beberapa detik pertama; hasil diagnosis segera tampil."
                .into(),
        ),
    };
    let state_now = verdict.as_ref().map(|v| v.state);
    let usage_24h = crate::http::api::usage_points(
        state.clone(),
        opd.id.clone(),
        HashMap::from([("step".to_string(), "1h".to_string())]),
    )
    .await
    .ok();
    let mut recent_events = crate::http::api::events_of(
        state.clone(),
        now - ChronoDuration::hours(24),
        now + ChronoDuration::seconds(1),
        Some(opd.id.clone()),
    )
    .await
    .unwrap_or_default();
    recent_events.reverse();
    recent_events.truncate(RECENT_EVENTS);
    recent_events.iter_mut().for_each(|e| names.event(e));
    StatusPage {
        identified_by: by,
        visitor_address: (by == IdentifiedBy::Address)
            .then(|| visitor.map(|a| a.to_canonical().to_string()))
            .flatten(),
        opd: detail,
        reference: verdict
            .as_ref()
            .map(|v| crate::diagnosis::reference::code(Some(&opd.id), v.state.as_str(), v.since)),
        verdict,
        gateway,
        light: Light::of(state_now),
        sentence_en,
        sentence_id,
        since_local,
        checklist: Checklist::of(state_now),
        timezone: tz.name().to_string(),
        timezone_abbreviation: timezone_abbreviation(tz, now),
        usage_24h,
        capacity_scaled: capacity_scaled(state),
        recent_events,
        top_hosts: hosts::top_hosts(state, opd),
        generated_at: now,
    }
}

/// Every OPD as a traffic light with its rates, for Diskominfo (admin).
#[utoipa::path(get, path = "/api/v1/status/overview", tag = "status",
    responses(
        (status = 200, description = "Every OPD's light, rates and reference code, and the uplink's", body = StatusOverview),
        (status = 401, description = "No or bad token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not an admin token", body = Problem, content_type = "application/problem+json"),
    ),
    security(("token" = [])))]
pub async fn get_overview(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
) -> Result<Response, Problem> {
    crate::http::api::require_admin(&state, &headers)?;
    let now = Utc::now();
    let view = state.view();
    let tz = view.policy.gateway.timezone;
    let (verdicts, gateway): (HashMap<String, Verdict>, Option<Verdict>) = state
        .diagnosis
        .engine
        .lock()
        .map(|e| {
            (
                e.verdicts()
                    .map(|(id, v)| (id.to_string(), v.clone()))
                    .collect(),
                e.gateway().cloned(),
            )
        })
        .unwrap_or_default();
    let (gateway_sentence_en, gateway_sentence_id) = gateway
        .as_ref()
        .map(|g| {
            let since = local_time(g.since, now, tz);
            let (en, id) = crate::diagnosis::explain_since(None, g.state, &g.evidence, Some(&since));
            (Some(en), Some(id))
        })
        .unwrap_or_default();
    let opds = view
        .policy
        .opds
        .iter()
        .map(|o| {
            let v = verdicts.get(&o.id);
            let upstream = v
                .filter(|v| {
                    matches!(
                        v.state,
                        DiagnosisState::UpstreamDegraded | DiagnosisState::UpstreamDown
                    )
                })
                .zip(gateway.as_ref())
                .and_then(|(v, g)| {
                    let since = local_time(v.since, now, tz);
                    crate::diagnosis::uplink_figure(&g.evidence, Some(&since))
                });
            let (uplink_figure_en, uplink_figure_id) = upstream.unzip();
            OverviewOpd {
                uplink_figure_en,
                uplink_figure_id,
                summary: crate::http::api::summary(&state, o),
                light: Light::of(v.map(|v| v.state)),
                since: v.map(|v| v.since),
                since_local: v.map(|v| local_time(v.since, now, tz)),
                reference: v.map(|v| {
                    crate::diagnosis::reference::code(Some(&o.id), v.state.as_str(), v.since)
                }),
            }
        })
        .collect();
    Ok(no_store(
        Json(StatusOverview {
            gateway_light: Light::of(gateway.as_ref().map(|g| g.state)),
            gateway_sentence_en,
            gateway_sentence_id,
            gateway,
            timezone: tz.name().to_string(),
            timezone_abbreviation: timezone_abbreviation(tz, now),
            capacity_scaled: capacity_scaled(&state),
            opds,
            generated_at: now,
        })
        .into_response(),
    ))
}

/// What a reference code names: the state change (OPD or gateway) it was
/// made from, and whether that state is still in force.
#[utoipa::path(get, path = "/api/v1/references/{code}", tag = "status",
    params(("code" = String, Path, description = "A reference code from the status page, e.g. 0K3M-7QZD (case, hyphens and O/I/L are forgiven)")),
    responses(
        (status = 200, description = "The event(s) with this code", body = ReferenceLookup),
        (status = 400, description = "Not a reference code", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "No or bad token", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No event with this code (or not visible to this token)", body = Problem, content_type = "application/problem+json"),
    ),
    security(("token" = [])))]
pub async fn get_reference(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(code): Path<String>,
) -> Result<Json<ReferenceLookup>, Problem> {
    let access = crate::http::api::access(&state, &headers)?;
    if access == Access::Anonymous {
        return Err(Problem::token_required());
    }
    let now = Utc::now();
    let decoded = crate::diagnosis::reference::decode(&code, now)
        .map_err(|e| Problem::bad_parameter("code", e))?;
    let visible = |opd: &Option<String>| opd.as_deref().is_none_or(|o| access.can_see(o));
    // Verdicts in force first (they answer even when the history is down),
    // then the history of that minute.
    let (current, gateway): (Vec<(String, Verdict)>, Option<Verdict>) = state
        .diagnosis
        .engine
        .lock()
        .map(|e| {
            (
                e.verdicts()
                    .map(|(id, v)| (id.to_string(), v.clone()))
                    .collect(),
                e.gateway().cloned(),
            )
        })
        .unwrap_or_default();
    let in_force: Vec<(Option<String>, Verdict)> = current
        .into_iter()
        .map(|(id, v)| (Some(id), v))
        .chain(gateway.map(|g| (None, g)))
        .collect();
    let is_current = |opd: &Option<String>, st: &str, at: DateTime<Utc>| {
        in_force.iter().any(|(o, v)| {
            o == opd
                && v.state.as_str() == st
                && v.since.timestamp_millis() == at.timestamp_millis()
        })
    };
    let from = decoded.minute;
    let history =
        crate::http::api::events_of(state.clone(), from, from + ChronoDuration::minutes(1), None)
            .await
            .unwrap_or_default();
    let mut events: Vec<EventBody> = history
        .into_iter()
        .filter(|e| decoded.matches(e.opd.as_deref(), &e.state, e.at))
        .collect();
    for (opd, v) in &in_force {
        let st = v.state.as_str();
        if decoded.matches(opd.as_deref(), st, v.since)
            && !events.iter().any(|e| {
                &e.opd == opd
                    && e.state == st
                    && e.at.timestamp_millis() == v.since.timestamp_millis()
            })
        {
            events.push(EventBody {
                at: v.since,
                opd: opd.clone(),
                state: st.to_string(),
                previous: None,
                evidence: v.evidence.clone(),
                message: v.explanation_en.clone(),
                reference: crate::diagnosis::reference::code(opd.as_deref(), st, v.since),
            });
        }
    }
    let view = state.view();
    let names = Names::of(&access);
    let matches: Vec<ReferenceMatch> = events
        .into_iter()
        .filter(|e| visible(&e.opd))
        .map(|mut e| {
            names.event(&mut e);
            let (explanation_en, explanation_id) = serde_json::from_value::<DiagnosisState>(
                serde_json::Value::String(e.state.clone()),
            )
            .map(|s| crate::diagnosis::explain(e.opd.as_deref(), s, &e.evidence))
            .unwrap_or_else(|_| (e.message.clone(), e.message.clone()));
            ReferenceMatch {
                opd_name: e
                    .opd
                    .as_deref()
                    .and_then(|o| view.policy.opd(o))
                    .map(|o| o.name.clone()),
                current: is_current(&e.opd, &e.state, e.at),
                explanation_en,
                explanation_id,
                event: e,
            }
        })
        .collect();
    if matches.is_empty() {
        return Err(Problem::not_found(format!(
            "no state change has the reference code {code:?} (it began in the minute from {})",
            from.to_rfc3339()
        )));
    }
    Ok(Json(ReferenceLookup {
        code: matches[0].event.reference.clone(),
        minute: from,
        matches,
    }))
}

pub mod hosts;
#[cfg(test)]
mod tests;
