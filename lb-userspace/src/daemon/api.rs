//! Read-only HTTP API on `[api] listen`: `GET /` (the status page, see
//! [`crate::page`]), `GET /status` (JSON), `GET /healthz` and `GET /metrics`
//! (Prometheus). Every handler reads the published
//! snapshot, the readers' own map handles and the latest conntrack scan
//! (see [`super::snapshot`]): none waits for the event loop.
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::{
    extract::State,
    http::{header, HeaderMap, StatusCode},
    response::{IntoResponse, Response},
    routing::get,
    Json, Router,
};

use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::sync::Semaphore;
use tracing::warn;

use super::snapshot::Readers;
use super::status::Status;
use crate::metrics::{Format, Scrape};

/// Most API connections served at once. More wait in the kernel's accept
/// queue, holding none of the daemon's descriptors: health checks always
/// have descriptors left, however many clients connect.
const MAX_CONNECTIONS: usize = 64;

/// A client has this long to send a request's headers.
const HEADER_TIMEOUT: Duration = Duration::from_secs(2);

/// Longest a connection is kept, idle or not (a scrape takes milliseconds;
/// keep-alive clients reconnect).
const CONNECTION_LIFETIME: Duration = Duration::from_secs(30);

/// Pause after a failed `accept` (e.g. EMFILE): the loop must not spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// Serves the API until the task is dropped.
pub async fn serve(listener: tokio::net::TcpListener, readers: Readers) -> std::io::Result<()> {
    let app = Router::new()
        .route("/status", get(status))
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .with_state(readers.clone())
        .merge(crate::page::router(readers));
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let Ok(permit) = slots.clone().acquire_owned().await else {
            return Ok(());
        };
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                warn!(error = %e, "HTTP API: accept failed; backing off");
                tokio::time::sleep(ACCEPT_BACKOFF).await;
                continue;
            }
        };
        let service = TowerToHyperService::new(app.clone());
        tokio::spawn(async move {
            let mut http = http1::Builder::new();
            http.timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT);
            let conn = http.serve_connection(TokioIo::new(stream), service);
            let _ = tokio::time::timeout(CONNECTION_LIFETIME, conn).await;
            drop(permit);
        });
    }
}

async fn status(State(r): State<Readers>) -> Result<Json<Status>, (StatusCode, String)> {
    Status::collect(&r.snapshot(), &r.maps, &r.flows())
        .map(Json)
        .map_err(|e| (StatusCode::INTERNAL_SERVER_ERROR, format!("{e:#}")))
}

/// 200 when attached to every configured interface and every listener has
/// a serving backend (failing open counts); 503 with the reason otherwise.
async fn healthz(State(r): State<Readers>) -> (StatusCode, String) {
    match r.snapshot().healthz() {
        Ok(()) => (StatusCode::OK, "ok\n".into()),
        Err(why) => (StatusCode::SERVICE_UNAVAILABLE, format!("{why}\n")),
    }
}

/// Prometheus metrics: OpenMetrics when the client asks for it (Prometheus
/// does), else the classic text format.
async fn metrics(State(r): State<Readers>, headers: HeaderMap) -> Response {
    let accept = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok());
    let format = Format::negotiate(accept);
    let view = r.snapshot().view();
    let scan = r.flows().served_at(Instant::now());
    let rendered = Scrape::take(view, &r.maps, scan)
        .and_then(|scrape| scrape.render(&r.metrics, format))
        .map_err(|e| format!("{:#}", anyhow::Error::from(e)));
    match rendered {
        Ok(body) => ([(header::CONTENT_TYPE, format.content_type())], body).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")).into_response(),
    }
}
