//! Read-only HTTP API on `[api] listen`: `GET /` (the status page, see
//! [`crate::page`]), `GET /status` (JSON), `GET /healthz` and `GET /metrics`
//! (Prometheus). Every handler reads the published
//! snapshot, the readers' own map handles and the latest conntrack scan
//! (see [`super::snapshot`]): none waits for the event loop.
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
use tower::ServiceExt;
use tracing::warn;

use super::api_slots::{InFlight, Slots};
use super::snapshot::Readers;
use super::status::Status;
use crate::metrics::{Format, Scrape};

/// Most API connections open at once: health checks always have
/// descriptors left, however many clients connect. When all are taken, the
/// oldest connection with no request in flight makes room (see
/// [`super::api_slots`]), so idle clients cannot starve `lb healthz`.
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
    let slots = Slots::new(MAX_CONNECTIONS);
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                warn!(error = %e, "HTTP API: accept failed; backing off");
                tokio::time::sleep(ACCEPT_BACKOFF).await;
                continue;
            }
        };
        // Every slot serving a request: refuse this one (closing it).
        let Some(slot) = slots.admit() else {
            continue;
        };
        let app = app.clone();
        let (id, counter) = (slot.id(), slot.counter());
        let service = hyper::service::service_fn(move |req| {
            let busy = InFlight::enter(&counter);
            let app = app.clone();
            async move {
                let response = app.oneshot(req).await;
                drop(busy);
                response
            }
        });
        let task = tokio::spawn(async move {
            let mut http = http1::Builder::new();
            http.timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT);
            let conn = http.serve_connection(TokioIo::new(stream), service);
            let _ = tokio::time::timeout(CONNECTION_LIFETIME, conn).await;
            drop(slot);
        });
        // The task holds the slot; the table needs the way to close it.
        slots.set_abort(id, task.abort_handle());
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
