//! jatah's HTTP side: the routers, their limits and the accept loop; the
//! handlers live in the submodules and share the daemon's
//! [`AppState`](crate::runtime::state::AppState).

pub mod api;
pub mod auth;
pub mod conn;
pub mod delivered;
pub mod exposition;
pub mod host;
pub mod metrics;
pub mod openapi;
pub mod problem;
pub mod reports;
pub mod status_page;
pub mod tls;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::timeout::TimeoutLayer;

use crate::runtime::state::AppState;

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
            .route("/openapi.json", get(crate::http::openapi::serve))
            .merge(crate::http::api::routes())
            .merge(crate::http::delivered::routes())
            .merge(crate::http::reports::routes())
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

/// `router` answering only requests whose `Host` is one of `names` or an
/// IP address (see [`host`]): what the daemon's listeners serve.
pub fn for_names(router: Router, names: &host::ServerNames) -> Router {
    let names = std::sync::Arc::new(names.clone());
    router.layer(axum::middleware::from_fn(move |req, next| {
        host::check(names.clone(), req, next)
    }))
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
/// deadline for request headers, the connection caps and idle deadline of
/// [`conn`], and every request carries the client's address
/// (`ConnectInfo<SocketAddr>`). `name` names the listener in logs.
#[cfg_attr(not(feature = "testkit"), allow(dead_code))]
pub async fn serve(
    name: &'static str,
    listener: tokio::net::TcpListener,
    app: Router,
    shutdown: tokio_util::sync::CancellationToken,
) {
    serve_tls(name, listener, app, shutdown, None).await
}

/// A connection's byte stream, plain or TLS.
trait Stream: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send> Stream for T {}

/// [`serve`], over TLS when `tls` is given (see [`tls`]): each
/// connection's handshake runs in its place under the caps, counts as its
/// activity and gets [`tls::HANDSHAKE_TIMEOUT`]; a failed one closes it.
pub async fn serve_tls(
    name: &'static str,
    listener: tokio::net::TcpListener,
    app: Router,
    shutdown: tokio_util::sync::CancellationToken,
    tls: Option<Arc<rustls::ServerConfig>>,
) {
    use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
    use tower::ServiceExt as _;

    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT);
    let builder = Arc::new(builder);
    let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
    let handshakes = Arc::new(tls::Failures::new(name));
    let caps = conn::Caps::new(conn::MAX_CONNECTIONS, conn::MAX_PER_SOURCE);
    let refusals = std::sync::Arc::new(conn::RefusalLog::new(Duration::from_secs(10)));
    loop {
        let (stream, peer) = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and the like: wait, go on.
                    tracing::warn!(listener = name, error = %e, "accepting an HTTP connection failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let slot = match caps.admit(peer.ip()) {
            Ok(slot) => slot,
            Err(why) => {
                // Closed at once: the descriptor comes straight back.
                drop(stream);
                if let Some(n) = refusals.note(std::time::Instant::now()) {
                    let (limit, what) = match why {
                        conn::Refused::Full => (conn::MAX_CONNECTIONS, "the listener's limit"),
                        conn::Refused::Source => (conn::MAX_PER_SOURCE, "the limit per source"),
                    };
                    tracing::warn!(
                        listener = name,
                        client = %peer.ip(),
                        refused = n,
                        open = caps.open(),
                        "closing new HTTP connections: {limit} open ({what}); \
                         {n} refused since the last such line"
                    );
                }
                continue;
            }
        };
        let activity = conn::Activity::new();
        let app = app.clone();
        let tracked = activity.clone();
        let service =
            hyper::service::service_fn(move |mut req: hyper::Request<hyper::body::Incoming>| {
                req.extensions_mut()
                    .insert(axum::extract::ConnectInfo(peer));
                let answering = tracked.request();
                let app = app.clone();
                async move {
                    let response = app.oneshot(req.map(axum::body::Body::new)).await;
                    drop(answering);
                    response
                }
            });
        let watched = conn::Watched::new(stream, activity.clone());
        // Taken now, so a shutdown waits for a connection still in its
        // handshake (which ends early when shutdown fires).
        let watcher = graceful.watcher();
        let (builder, acceptor, handshakes) =
            (builder.clone(), acceptor.clone(), handshakes.clone());
        let stop = shutdown.clone();
        tokio::spawn(async move {
            let _slot = slot;
            let io: Box<dyn Stream> = match acceptor {
                None => Box::new(watched),
                Some(acceptor) => match tls::accept(&acceptor, watched, &stop).await {
                    Ok(tls) => Box::new(tls),
                    Err(why) => {
                        handshakes.note(peer, &why);
                        return;
                    }
                },
            };
            let conn = builder
                .serve_connection_with_upgrades(TokioIo::new(io), service)
                .into_owned();
            let conn = watcher.watch(conn);
            tokio::pin!(conn);
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            loop {
                tokio::select! {
                    ended = conn.as_mut() => {
                        if let Err(e) = ended {
                            tracing::debug!(client = %peer, error = %e, "HTTP connection ended");
                        }
                        break;
                    }
                    _ = tick.tick() => {
                        if activity.idle_for() >= conn::IDLE_TIMEOUT {
                            // Dropping the connection closes it.
                            tracing::debug!(client = %peer, "closing an idle HTTP connection");
                            break;
                        }
                    }
                }
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
