//! `vizflow serve`: a dashboard of a directory of partials in the browser, and the JSON
//! API it stands on.
//!
//! | route | what it answers |
//! |---|---|
//! | `GET /` | the dashboard (with `/app.js`, `/style.css`, `/echarts.min.js`, all embedded in the binary) |
//! | `GET /api/meta` | the partials' layout (group columns, metrics, bins), their dates, the provisional ones |
//! | `GET /api/reduce?dates=&by=&where=&metric=&rebin=&live=` | `{"rows": [...]}`: the rows of `vizflow reduce` with the same flags |
//!
//! Nothing else is served: there is no path from a URL to a file, so no URL reaches
//! a file outside the directory (or inside it). The server binds loopback unless told
//! otherwise and then answers only requests addressed to a loopback name (a page on
//! another site cannot reach it through DNS rebinding). One request's work is bounded:
//! the query's length, the groups it may return, and the reduces running at once; and
//! so are connections: a client has [`ServeOptions::header_timeout`] to send a
//! request's headers (at most [`MAX_HEADER_BYTES`]), and at most [`MAX_CONNECTIONS`] are
//! open at once.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::Router;
use axum::extract::{RawQuery, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::{Value, json};
use tokio::sync::Semaphore;

use crate::calendar;
use crate::partials::{self, Layout};
use crate::reduce::{ReduceError, ReduceOptions, json_rows, reduce};

/// Where and how to serve.
#[derive(Clone, Debug)]
pub struct ServeOptions {
    /// The directory of partials.
    pub dir: PathBuf,
    /// The address to listen on (port 0: any free port).
    pub bind: SocketAddr,
    /// The most groups one `/api/reduce` may return.
    pub max_groups: usize,
    /// The layout of partials written before partials described themselves.
    pub layout: Option<Layout>,
    /// How long a client may take to send a request's headers before its connection
    /// is closed.
    pub header_timeout: Duration,
}

/// The longest query string `/api/reduce` takes, in bytes.
pub const MAX_QUERY_BYTES: usize = 8 * 1024;

/// The default of [`ServeOptions::max_groups`].
pub const DEFAULT_MAX_GROUPS: usize = 200_000;

/// The largest request head (request line and headers) a connection may send, in bytes.
pub const MAX_HEADER_BYTES: usize = 64 * 1024;

/// The most connections open at once; more wait to be accepted.
pub const MAX_CONNECTIONS: usize = 256;

/// Why the server could not run.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The directory is not one.
    #[error("{}: not a directory of partials ({source})", dir.display())]
    Dir {
        /// The directory.
        dir: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The address cannot be bound.
    #[error("cannot listen on {address}: {source}; choose another port with --bind")]
    Bind {
        /// The address.
        address: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The server failed.
    #[error("the server failed: {0}")]
    Io(#[from] std::io::Error),
}

const INDEX: &str = include_str!("../assets/dashboard/index.html");
const APP: &str = include_str!("../assets/dashboard/app.js");
const STYLE: &str = include_str!("../assets/dashboard/style.css");
const ECHARTS: &str = include_str!("../assets/echarts/echarts.min.js");

struct Shared {
    dir: PathBuf,
    title: String,
    max_groups: usize,
    layout: Option<Layout>,
    /// One reduce per core at a time; the others wait their turn.
    reduces: Semaphore,
}

/// Serves `options.dir` until Ctrl-C (or SIGTERM); `ready` is called with the address
/// once the server listens.
pub fn serve(options: &ServeOptions, ready: impl FnOnce(SocketAddr)) -> Result<(), ServeError> {
    serve_until(options, ready, stopped())
}

/// Serves `options.dir` until `stop` completes (for a caller that owns the signals, e.g.
/// Python, which keeps Ctrl-C for itself); `ready` is called with the address once the
/// server listens.
pub fn serve_until(
    options: &ServeOptions,
    ready: impl FnOnce(SocketAddr),
    stop: impl std::future::Future<Output = ()>,
) -> Result<(), ServeError> {
    std::fs::read_dir(&options.dir).map_err(|source| ServeError::Dir {
        dir: options.dir.clone(),
        source,
    })?;
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(cores.min(2))
        .max_blocking_threads(cores)
        .enable_all()
        .build()?;
    let title = options
        .dir
        .canonicalize()
        .ok()
        .and_then(|d| d.file_name().map(|n| n.to_string_lossy().into_owned()))
        .unwrap_or_else(|| "partials".to_owned());
    let shared = Arc::new(Shared {
        dir: options.dir.clone(),
        title,
        max_groups: options.max_groups,
        layout: options.layout.clone(),
        reduces: Semaphore::new(cores),
    });
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(options.bind)
            .await
            .map_err(|source| ServeError::Bind {
                address: options.bind,
                source,
            })?;
        let address = listener.local_addr()?;
        let app = router(shared, address.ip().is_loopback());
        ready(address);
        let connections = Arc::new(Semaphore::new(MAX_CONNECTIONS));
        tokio::pin!(stop);
        loop {
            // A connection slot first: past the limit, clients wait in the backlog.
            let slot = tokio::select! {
                slot = connections.clone().acquire_owned() => slot.expect("never closed"),
                () = &mut stop => return Ok(()),
            };
            let socket = tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok((socket, _)) => socket,
                    // A connection that failed before it was accepted (reset, or out of
                    // file descriptors for a moment): the server goes on, after a pause
                    // so that a lasting error does not spin.
                    Err(error) => {
                        tracing::warn!("accepting a connection: {error}");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                },
                () = &mut stop => return Ok(()),
            };
            let app = app.clone();
            let header_timeout = options.header_timeout;
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |request| {
                    tower_service::Service::call(&mut app.clone(), request)
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .timer(hyper_util::rt::TokioTimer::new())
                    .header_read_timeout(header_timeout)
                    .max_buf_size(MAX_HEADER_BYTES)
                    .serve_connection(hyper_util::rt::TokioIo::new(socket), service)
                    .await;
                drop(slot);
            });
        }
    })
}

fn router(shared: Arc<Shared>, loopback: bool) -> Router {
    let asset = |body: &'static str, kind: &'static str| {
        get(move || async move { ([(header::CONTENT_TYPE, kind)], body) })
    };
    let app = Router::new()
        .route("/", asset(INDEX, "text/html; charset=utf-8"))
        .route("/app.js", asset(APP, "text/javascript; charset=utf-8"))
        .route("/style.css", asset(STYLE, "text/css; charset=utf-8"))
        .route(
            "/echarts.min.js",
            asset(ECHARTS, "text/javascript; charset=utf-8"),
        )
        .route("/api/meta", get(meta))
        .route("/api/reduce", get(reduce_route))
        .fallback(|| async { error(StatusCode::NOT_FOUND, "no such page; the dashboard is at /") })
        .with_state(shared)
        .layer(middleware::from_fn(headers));
    if loopback {
        app.layer(middleware::from_fn(loopback_only))
    } else {
        app
    }
}

/// Headers on every answer: the page may load only from this server (nothing from
/// the network), and types are not sniffed.
async fn headers(request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; \
             img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'",
        ),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// A server on loopback answers only requests addressed to a loopback name.
async fn loopback_only(request: Request, next: Next) -> Response {
    let host = (request.headers().get(header::HOST))
        .and_then(|h| h.to_str().ok())
        .unwrap_or_default();
    let name = match host.rsplit_once(':') {
        Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
        _ => host,
    };
    if matches!(name, "localhost" | "127.0.0.1" | "[::1]") {
        next.run(request).await
    } else {
        error(
            StatusCode::MISDIRECTED_REQUEST,
            "this server answers only at localhost, 127.0.0.1 or [::1]",
        )
    }
}

fn error(status: StatusCode, message: &str) -> Response {
    (status, axum::Json(json!({ "error": message }))).into_response()
}

async fn stopped() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut terminate =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(signal) => signal,
                Err(_) => return std::future::pending().await,
            };
        tokio::select! {
            _ = interrupt => {}
            _ = terminate.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = interrupt.await;
}

/// `/api/meta`: what the dashboard offers to choose from.
async fn meta(State(shared): State<Arc<Shared>>) -> Response {
    let result = tokio::task::spawn_blocking(move || describe(&shared)).await;
    match result {
        Ok(Ok(meta)) => axum::Json(meta).into_response(),
        Ok(Err(message)) => error(StatusCode::INTERNAL_SERVER_ERROR, &message),
        Err(_) => error(StatusCode::INTERNAL_SERVER_ERROR, "the listing failed"),
    }
}

fn describe(shared: &Shared) -> Result<Value, String> {
    let listed = partials::list_with_live(&shared.dir)
        .map_err(|e| format!("cannot list {}: {e}", shared.dir.display()))?;
    let mut dates = Vec::new();
    let mut provisional = Vec::new();
    // A fingerprint of the files: the dashboard polls it to refresh what changed.
    let mut fingerprint = String::new();
    for (date, path) in &listed {
        let date = calendar::format_date(*date);
        let modified = std::fs::metadata(path)
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.duration_since(SystemTime::UNIX_EPOCH).ok())
            .unwrap_or(Duration::ZERO);
        fingerprint.push_str(&format!(
            "{date}:{}:{};",
            partials::is_live(path),
            modified.as_nanos()
        ));
        if partials::is_live(path) {
            let metadata = crate::io::read_parquet_metadata(path).unwrap_or_default();
            let get = |key: &str| {
                (metadata.iter())
                    .find(|(k, _)| k == key)
                    .and_then(|(_, v)| v.parse::<i64>().ok())
            };
            provisional.push(json!({
                "date": date,
                "watermark_ms": get("vizflow.watermark_ms"),
                "rows": get("vizflow.rows"),
            }));
        }
        dates.push(date);
    }
    let layout = match (&shared.layout, listed.last()) {
        (Some(layout), _) => Some(layout.clone()),
        (None, Some((_, path))) => {
            let metadata = crate::io::read_parquet_metadata(path).map_err(|e| e.to_string())?;
            Layout::from_metadata(&metadata).map_err(|e| format!("{}: {e}", path.display()))?
        }
        (None, None) => None,
    };
    let (group_by, metrics, bins) = match &layout {
        Some(layout) => (
            json!(layout.group_by),
            json!(
                layout
                    .metrics
                    .iter()
                    .map(|(name, expr)| json!({"name": name, "expr": expr}))
                    .collect::<Vec<_>>()
            ),
            json!(layout.bins),
        ),
        None if listed.is_empty() => (json!([]), json!([]), json!([])),
        None => {
            return Err(format!(
                "the partials in {} do not describe their columns (written by VizFlow \
                 0.1.0); restart with --pipeline P.toml, the pipeline that made them",
                shared.dir.display()
            ));
        }
    };
    Ok(json!({
        "title": shared.title,
        "dir": shared.dir.display().to_string(),
        "version": env!("CARGO_PKG_VERSION"),
        "group_by": group_by,
        "metrics": metrics,
        "bins": bins,
        "dates": dates,
        "provisional": provisional,
        "fingerprint": fingerprint,
        "max_groups": shared.max_groups,
    }))
}

/// `/api/reduce`: `vizflow reduce` over HTTP.
async fn reduce_route(State(shared): State<Arc<Shared>>, RawQuery(query): RawQuery) -> Response {
    let query = query.unwrap_or_default();
    if query.len() > MAX_QUERY_BYTES {
        return error(
            StatusCode::URI_TOO_LONG,
            &format!(
                "the query is {} bytes; at most {MAX_QUERY_BYTES}",
                query.len()
            ),
        );
    }
    let options = match reduce_options(&query) {
        Ok(options) => options,
        Err(message) => return error(StatusCode::BAD_REQUEST, &message),
    };
    let Ok(_permit) = shared.reduces.acquire().await else {
        return error(StatusCode::SERVICE_UNAVAILABLE, "the server is stopping");
    };
    let work = Arc::clone(&shared);
    let result = tokio::task::spawn_blocking(move || {
        let options = ReduceOptions {
            layout: work.layout.clone(),
            ..options
        };
        let reduced = reduce(&work.dir, &options)?;
        Ok::<_, ReduceError>(reduced)
    })
    .await;
    let reduced = match result {
        Ok(Ok(reduced)) => reduced,
        Ok(Err(ReduceError::Usage { flag, message })) => {
            // The flag as the query's parameter: `--by` is `by`.
            let parameter = flag.trim_start_matches("--");
            return error(StatusCode::BAD_REQUEST, &format!("{parameter}: {message}"));
        }
        Ok(Err(e)) => {
            let status = match e {
                ReduceError::Merge(_) => StatusCode::BAD_REQUEST,
                ReduceError::NoPartials { .. } => StatusCode::NOT_FOUND,
                _ => StatusCode::INTERNAL_SERVER_ERROR,
            };
            return error(status, &e.to_string());
        }
        Err(_) => return error(StatusCode::INTERNAL_SERVER_ERROR, "the reduce failed"),
    };
    let groups = reduced.table.num_rows();
    if groups > shared.max_groups {
        return error(
            StatusCode::PAYLOAD_TOO_LARGE,
            &format!(
                "{groups} groups: more than the {} one request may return; group by fewer \
                 columns, filter with where, or rebin (or restart with a larger --max-groups)",
                shared.max_groups
            ),
        );
    }
    let dates = |dates: &[chrono::NaiveDate]| -> Vec<String> {
        dates.iter().map(|d| calendar::format_date(*d)).collect()
    };
    axum::Json(json!({
        "rows": json_rows(&reduced.table),
        "dates": dates(&reduced.dates),
        "provisional": dates(&reduced.provisional),
    }))
    .into_response()
}

/// The reduce a query asks for: `dates`, `by` (comma-separated; empty for totals),
/// `where`, `metric` and `rebin` (`NAME=VALUE`, repeatable) as the flags of `vizflow
/// reduce`, and `live` (`true` by default: dates still open are merged provisionally).
fn reduce_options(query: &str) -> Result<ReduceOptions, String> {
    let pairs: Vec<(String, String)> = query_pairs(query)?;
    let mut options = ReduceOptions {
        live: true,
        ..ReduceOptions::default()
    };
    let pair = |key: &str, text: &str| {
        text.split_once('=')
            .map(|(name, value)| (name.trim().to_owned(), value.trim().to_owned()))
            .ok_or_else(|| format!("{key}={text}: write NAME=VALUE"))
    };
    for (key, value) in pairs {
        match key.as_str() {
            "dates" => options.dates = Some(value),
            "by" => {
                options.by = Some(
                    (value.split(','))
                        .map(|c| c.trim().to_owned())
                        .filter(|c| !c.is_empty())
                        .collect(),
                );
            }
            "where" => options.filter = Some(value).filter(|v| !v.trim().is_empty()),
            "metric" => options.metrics.push(pair("metric", &value)?),
            "rebin" => {
                let (column, factor) = pair("rebin", &value)?;
                let factor = factor
                    .parse()
                    .map_err(|_| format!("rebin={value}: the factor must be an odd integer"))?;
                options.rebin.push((column, factor));
            }
            "live" => {
                options.live = match value.as_str() {
                    "true" | "1" => true,
                    "false" | "0" => false,
                    _ => return Err(format!("live={value}: write true or false")),
                };
            }
            _ => {
                return Err(format!(
                    "unknown parameter {key}; /api/reduce takes dates, by, where, metric, \
                     rebin and live"
                ));
            }
        }
    }
    Ok(options)
}

/// The `key=value` pairs of a query string, percent-decoded.
fn query_pairs(query: &str) -> Result<Vec<(String, String)>, String> {
    axum::extract::Query::<Vec<(String, String)>>::try_from_uri(
        &format!("/?{query}")
            .parse()
            .map_err(|_| "the query is not a valid URI query".to_owned())?,
    )
    .map(|q| q.0)
    .map_err(|e| format!("the query cannot be read: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_query_reads_as_the_flags_of_reduce() {
        let options = reduce_options(
            "dates=20240102..20240105&by=alpha1_bin,%20orderSide&where=orderSide%20%3D%20%27B%27\
             &metric=hit%3Dsum(is_closed)%20%2F%20count()&rebin=alpha1_bin%3D3&live=false",
        )
        .unwrap();
        assert_eq!(options.dates.as_deref(), Some("20240102..20240105"));
        assert_eq!(
            options.by,
            Some(vec!["alpha1_bin".to_owned(), "orderSide".to_owned()])
        );
        assert_eq!(options.filter.as_deref(), Some("orderSide = 'B'"));
        assert_eq!(
            options.metrics,
            vec![("hit".to_owned(), "sum(is_closed) / count()".to_owned())]
        );
        assert_eq!(options.rebin, vec![("alpha1_bin".to_owned(), 3)]);
        assert!(!options.live);
        assert_eq!(reduce_options("by=").unwrap().by, Some(vec![]));
        assert!(reduce_options("").unwrap().live);
        let unknown = reduce_options("file=../../etc/passwd").unwrap_err();
        assert!(unknown.contains("unknown parameter file"), "{unknown}");
        assert!(
            reduce_options("metric=hit")
                .unwrap_err()
                .contains("NAME=VALUE")
        );
        assert!(
            reduce_options("rebin=a%3D2.5")
                .unwrap_err()
                .contains("odd integer")
        );
    }

    #[test]
    fn the_dashboard_loads_nothing_from_the_network() {
        for page in [INDEX, APP, STYLE] {
            assert!(!page.contains("http://") && !page.contains("https://"));
            assert!(!page.contains("//cdn"));
        }
        assert!(INDEX.contains("src=\"/echarts.min.js\""));
    }
}
