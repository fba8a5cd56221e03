//! Read-only HTTP API on `[api] listen`: `GET /status` (JSON), `GET /healthz`
//! and `GET /metrics` (Prometheus). Every handler reads the published
//! snapshot, the readers' own map handles and the latest conntrack scan
//! (see [`super::snapshot`]): none waits for the event loop.
use std::time::Instant;

use axum::{
    extract::State,
    http::{header, HeaderMap, StatusCode},
    response::{IntoResponse, Response},
    routing::get,
    Json, Router,
};

use super::snapshot::Readers;
use super::status::Status;
use crate::metrics::{Format, Scrape};

/// Serves the API until the task is dropped.
pub async fn serve(listener: tokio::net::TcpListener, readers: Readers) -> std::io::Result<()> {
    let app = Router::new()
        .route("/status", get(status))
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .with_state(readers);
    axum::serve(listener, app).await
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
