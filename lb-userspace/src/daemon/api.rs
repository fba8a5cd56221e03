//! Read-only HTTP API on `[api] listen`: `GET /status` (JSON) and `GET /healthz`.
use std::sync::{Arc, Mutex};

use axum::{extract::State, http::StatusCode, routing::get, Json, Router};

use super::{status::Status, Shared};

/// Serves the API until the task is dropped.
pub async fn serve(
    listener: tokio::net::TcpListener,
    shared: Arc<Mutex<Shared>>,
) -> std::io::Result<()> {
    let app = Router::new()
        .route("/status", get(status))
        .route("/healthz", get(healthz))
        .with_state(shared);
    axum::serve(listener, app).await
}

async fn status(
    State(shared): State<Arc<Mutex<Shared>>>,
) -> Result<Json<Status>, (StatusCode, String)> {
    let s = shared.lock().unwrap_or_else(|e| e.into_inner());
    Status::collect(&s.model, &s.dataplane, s.attached)
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
    for (i, l) in s.model.config.listeners.iter().enumerate() {
        let any_up = s.model.reals[i]
            .iter()
            .any(|r| s.model.health(r) == crate::health::Health::Up);
        if !any_up && !s.model.failing_open[i] {
            return (
                StatusCode::SERVICE_UNAVAILABLE,
                format!("listener {} has no healthy backend\n", l.name),
            );
        }
    }
    (StatusCode::OK, "ok\n".into())
}
