//! jatah's HTTP server: what the handlers share, and the router.

pub mod api;
pub mod auth;
pub mod exposition;
pub mod metrics;
pub mod problem;
pub mod status_page;

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use chrono::{DateTime, Utc};
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::timeout::TimeoutLayer;

use crate::datapath::CounterReader;
use crate::diagnosis::Engine;
use crate::diagnosis::probe::Prober;
use crate::gateway::Interfaces;
use crate::history::HistoryStore;
use crate::http::auth::Tokens;
use crate::policy::Policy;
use crate::runtime::rates::RateTable;

/// The policy in force and the slot each of its OPDs holds, swapped as one
/// on every (re)load so handlers never see a half-applied policy.
#[derive(Debug, Clone)]
pub struct PolicyView {
    pub policy: Policy,
    pub slots: BTreeMap<String, u32>,
    /// Removed OPDs whose final counters have not been scraped yet.
    pub retired: BTreeMap<String, u32>,
    pub source: PathBuf,
}

impl PolicyView {
    /// One more than the highest slot in use (retired slots included):
    /// how far to read the per-slot maps.
    pub fn slot_count(&self) -> u32 {
        self.slots
            .values()
            .chain(self.retired.values())
            .max()
            .map_or(0, |m| m + 1)
    }
}

/// Outcome of the last policy (re)load.
#[derive(Debug, Clone, Default)]
pub struct ReloadStatus {
    pub successful: bool,
    pub at: Option<DateTime<Utc>>,
    pub error: Option<String>,
    pub duration_seconds: f64,
}

/// The history store, or why it is unavailable. The data path and metrics
/// never wait for it.
#[derive(Default)]
pub struct History {
    pub store: Mutex<Option<HistoryStore>>,
    pub error: Mutex<Option<String>>,
    /// Where the store lives, to open it again when opening failed at start
    /// (a full disk, a damaged file since moved aside).
    pub location: Mutex<Option<(PathBuf, chrono_tz::Tz)>>,
}

impl History {
    pub fn available(&self) -> bool {
        self.error.lock().map(|e| e.is_none()).unwrap_or(false)
            && self.store.lock().map(|s| s.is_some()).unwrap_or(false)
    }
}

/// What the handlers share.
pub struct AppState {
    /// Set once the data path is attached and the HTB trees are in force.
    pub ready: AtomicBool,
    pub tokens: Tokens,
    pub view: RwLock<Arc<PolicyView>>,
    pub counters: Option<CounterReader>,
    pub rates: Mutex<RateTable>,
    pub history: History,
    /// Interfaces whose HTB class statistics give the drop counters (their
    /// ifindexes change when an interface is recreated).
    pub shaping: RwLock<Option<Interfaces>>,
    /// Netlink and BPF operations that failed, by (operation, interface).
    pub kernel_errors: Mutex<BTreeMap<(String, String), u64>>,
    /// Whether jatah's programs and HTB tree are on each shaped interface.
    pub interfaces_attached: Mutex<BTreeMap<String, bool>>,
    pub reload: Mutex<ReloadStatus>,
    pub drops: Mutex<crate::http::metrics::Monotonic>,
    /// Keeps group class counters monotonic across class recreation.
    pub group_counters: Mutex<crate::http::metrics::Monotonic>,
    /// Verdicts per OPD and for the gateway.
    pub engine: Mutex<Engine>,
    /// ICMP probes of OPD routers and upstream targets (None without
    /// permission to send them, or in tests).
    pub prober: Option<Prober>,
    /// The kernel state, for reloads (None until attached, and in tests).
    pub controller: Mutex<Option<crate::runtime::reload::Controller>>,
    /// Retired slots whose final counters a scrape has exported.
    pub scraped_retired: Mutex<BTreeSet<u32>>,
}

impl AppState {
    pub fn new(view: PolicyView, tokens: Tokens, counters: Option<CounterReader>) -> Self {
        let view_policy = view.policy.clone();
        AppState {
            ready: AtomicBool::new(false),
            tokens,
            view: RwLock::new(Arc::new(view)),
            counters,
            rates: Mutex::new(RateTable::default()),
            history: History::default(),
            shaping: RwLock::new(None),
            kernel_errors: Mutex::new(BTreeMap::new()),
            interfaces_attached: Mutex::new(BTreeMap::new()),
            reload: Mutex::new(ReloadStatus::default()),
            drops: Mutex::new(Default::default()),
            group_counters: Mutex::new(Default::default()),
            engine: Mutex::new(Engine::new(crate::diagnosis::signals::thresholds(
                &view_policy,
            ))),
            prober: None,
            controller: Mutex::new(None),
            scraped_retired: Mutex::new(BTreeSet::new()),
        }
    }

    /// The policy view in force.
    pub fn view(&self) -> Arc<PolicyView> {
        self.view
            .read()
            .map(|v| v.clone())
            .unwrap_or_else(|p| p.into_inner().clone())
    }

    /// The interfaces jatah shapes on now.
    pub fn shaping(&self) -> Option<Interfaces> {
        self.shaping
            .read()
            .map(|s| s.clone())
            .unwrap_or_else(|p| p.into_inner().clone())
    }

    /// Counts a failed netlink or BPF operation on an interface
    /// (`jatah_kernel_errors_total`). The caller logs it.
    pub fn count_kernel_error(&self, operation: &str, interface: &str) {
        *self
            .kernel_errors
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry((operation.to_string(), interface.to_string()))
            .or_default() += 1;
    }

    /// Called after a scrape exported these retired OPDs' final counters:
    /// they leave the view and their slots may be reused.
    pub fn retired_scraped(&self, slots: &BTreeSet<u32>) {
        let mut view = self.view.write().unwrap_or_else(|p| p.into_inner());
        let mut next = (**view).clone();
        next.retired.retain(|_, s| !slots.contains(s));
        *view = Arc::new(next);
        drop(view);
        self.scraped_retired
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend(slots.iter().copied());
    }
}

/// Largest request body accepted: room for a policy file of every OPD
/// slot (`POST /api/v1/policy/plan`), nothing more.
const MAX_BODY: usize = 4 * 1024 * 1024;
/// A request (including a slow client) gets this long.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);

/// The router, built apart from the listener so tests can call it directly.
/// It serves everything: health, metrics, the API and the status page.
pub fn router(state: Arc<AppState>) -> Router {
    limited(
        Router::new()
            .route("/healthz", get(healthz))
            .route("/metrics", get(crate::http::metrics::serve))
            .merge(crate::http::api::routes())
            .merge(crate::http::status_page::routes()),
    )
    .with_state(state)
}

/// The router of `--status-listen`, the address OPD LANs (and token links
/// from outside) reach: the status page and the endpoints it calls, and
/// nothing else, so /metrics and the summary API never reach the OPDs.
pub fn status_router(state: Arc<AppState>) -> Router {
    limited(crate::http::status_page::routes().fallback(|| async {
        crate::http::problem::Problem::not_found("no such page; the status page is /status")
    }))
    .with_state(state)
}

/// Longest path and query string answered (the longest real one, a usage
/// query with two RFC 3339 times, is under 200 bytes); longer is 414.
pub const MAX_URI: usize = 8 * 1024;

async fn limit_uri(
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let len = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str().len())
        .unwrap_or(0);
    if len > MAX_URI {
        return crate::http::problem::Problem::uri_too_long(MAX_URI).into_response();
    }
    next.run(req).await
}

fn limited(router: Router<Arc<AppState>>) -> Router<Arc<AppState>> {
    router
        .layer(axum::middleware::from_fn(limit_uri))
        .layer(RequestBodyLimitLayer::new(MAX_BODY))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            REQUEST_TIMEOUT,
        ))
}

/// A client gets this long to send a request's headers; slower ones
/// (slowloris) are disconnected. Bodies are bounded by [`REQUEST_TIMEOUT`].
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a graceful shutdown waits for requests in flight.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// Serves `app` on `listener` until `shutdown` fires, then lets requests in
/// flight finish (at most [`DRAIN_TIMEOUT`]). Like `axum::serve`, plus a
/// deadline for request headers, and every request carries the client's
/// address (`ConnectInfo<SocketAddr>`).
pub async fn serve(
    listener: tokio::net::TcpListener,
    app: Router,
    shutdown: tokio_util::sync::CancellationToken,
) {
    use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
    use tower::ServiceExt as _;

    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT);
    loop {
        let (stream, peer) = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and the like: wait, go on.
                    tracing::warn!(error = %e, "accepting an HTTP connection failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let app = app.clone();
        let service =
            hyper::service::service_fn(move |mut req: hyper::Request<hyper::body::Incoming>| {
                req.extensions_mut()
                    .insert(axum::extract::ConnectInfo(peer));
                app.clone().oneshot(req.map(axum::body::Body::new))
            });
        let conn = builder
            .serve_connection_with_upgrades(TokioIo::new(stream), service)
            .into_owned();
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(client = %peer, error = %e, "HTTP connection ended");
            }
        });
    }
    drop(listener);
    tokio::select! {
        _ = graceful.shutdown() => {}
        _ = tokio::time::sleep(DRAIN_TIMEOUT) => {
            tracing::warn!("HTTP requests still in flight after {DRAIN_TIMEOUT:?}; closing them");
        }
    }
}

async fn healthz(State(state): State<Arc<AppState>>) -> (StatusCode, &'static str) {
    if state.ready.load(Ordering::Acquire) {
        (StatusCode::OK, "ok\n")
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "starting: data path not attached yet\n",
        )
    }
}
