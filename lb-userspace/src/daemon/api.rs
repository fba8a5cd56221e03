//! Read-only HTTP API on `[api] listen`: `GET /status` (JSON), `GET /healthz`
//! and `GET /metrics` (Prometheus).
use std::sync::{Arc, Mutex};

use axum::{
    extract::State,
    http::{header, HeaderMap, StatusCode},
    response::{IntoResponse, Response},
    routing::get,
    Json, Router,
};

use super::{status::Status, Shared};
use crate::metrics::{Format, Scrape};

/// Serves the API until the task is dropped.
pub async fn serve(
    listener: tokio::net::TcpListener,
    shared: Arc<Mutex<Shared>>,
) -> std::io::Result<()> {
    let app = Router::new()
        .route("/status", get(status))
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .with_state(shared);
    axum::serve(listener, app).await
}

async fn status(
    State(shared): State<Arc<Mutex<Shared>>>,
) -> Result<Json<Status>, (StatusCode, String)> {
    let s = shared.lock().unwrap_or_else(|e| e.into_inner());
    s.status()
        .map(Json)
        .map_err(|e| (StatusCode::INTERNAL_SERVER_ERROR, format!("{e:#}")))
}

/// 200 when attached and every listener has a serving backend (or fails
/// open); 503 with a short reason otherwise.
async fn healthz(State(shared): State<Arc<Mutex<Shared>>>) -> (StatusCode, String) {
    let s = shared.lock().unwrap_or_else(|e| e.into_inner());
    if !s.attached {
        return (StatusCode::SERVICE_UNAVAILABLE, "not attached\n".into());
    }
    for l in s.model().listeners.iter().filter(|l| !l.retired) {
        let any_up = l
            .reals
            .iter()
            .any(|r| r.drain.is_none() && s.model().health(r) == crate::health::Health::Up);
        if !any_up && !l.failing_open {
            return (
                StatusCode::SERVICE_UNAVAILABLE,
                format!("listener {} has no healthy backend\n", l.name),
            );
        }
    }
    (StatusCode::OK, "ok\n".into())
}

/// Prometheus metrics: OpenMetrics when the client asks for it (Prometheus
/// does), else the classic text format. The model and counters are read
/// under the lock; the conntrack scan and encoding run without it, on a
/// blocking thread.
async fn metrics(State(shared): State<Arc<Mutex<Shared>>>, headers: HeaderMap) -> Response {
    let accept = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok());
    let format = Format::negotiate(accept);
    let taken = {
        let s = shared.lock().unwrap_or_else(|e| e.into_inner());
        Scrape::take(s.model(), s.dataplane(), s.attached).map(|scrape| (scrape, s.metrics.clone()))
    };
    let rendered = match taken {
        Ok((scrape, metrics)) => {
            match tokio::task::spawn_blocking(move || scrape.render(&metrics, format)).await {
                Ok(r) => r.map_err(|e| format!("{:#}", anyhow::Error::from(e))),
                Err(e) => Err(format!("metrics task failed: {e}")),
            }
        }
        Err(e) => Err(format!("{:#}", anyhow::Error::from(e))),
    };
    match rendered {
        Ok(body) => ([(header::CONTENT_TYPE, format.content_type())], body).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")).into_response(),
    }
}
