//! The status page at `GET /` on `[api] listen`: a server-rendered HTML
//! view of the daemon (readiness, interfaces, last reload, listeners,
//! backends with health, reasons, rates, a chart of new flows and a health
//! timeline), refreshing itself, with no external asset.
//!
//! Rates and charts come from a bounded [`History`] filled by a sampler task
//! every [`SAMPLE_EVERY_MS`]: it reads what every HTTP reader reads (the
//! published snapshot and its own map handles), never the event loop.
pub mod history;
pub mod html;
pub mod svg;

#[cfg(test)]
mod tests;

use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::{
    extract::State,
    http::{header, StatusCode},
    response::{IntoResponse, Response},
    routing::get,
    Router,
};

use crate::daemon::snapshot::Readers;
use crate::daemon::status::Status;
pub use history::{History, SAMPLE_EVERY_MS};
pub use html::{escape, render, Build};

/// What the page handler holds.
#[derive(Clone)]
struct PageState {
    readers: Readers,
    history: Arc<Mutex<History>>,
}

/// Unix time in milliseconds.
fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// The `GET /` route, and the sampler task that feeds its history (it ends
/// by itself once the router and every connection holding it are gone).
pub fn router(readers: Readers) -> Router {
    let history = Arc::new(Mutex::new(History::new()));
    tokio::spawn(sample(readers.clone(), Arc::downgrade(&history)));
    Router::new()
        .route("/", get(page))
        .with_state(PageState { readers, history })
}

/// Records every backend's counters every [`SAMPLE_EVERY_MS`] while the
/// history is still wanted.
async fn sample(readers: Readers, history: Weak<Mutex<History>>) {
    let mut every = tokio::time::interval(Duration::from_millis(SAMPLE_EVERY_MS));
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        let Some(history) = history.upgrade() else {
            return;
        };
        // A failed read (a map lookup) only loses one sample.
        if let Ok(status) = Status::collect(&readers.snapshot(), &readers.maps, &readers.flows()) {
            let counts = history::counts_of(&status, unix_ms());
            history
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .record(counts);
        }
    }
}

async fn page(State(p): State<PageState>) -> Response {
    let r = &p.readers;
    match Status::collect(&r.snapshot(), &r.maps, &r.flows()) {
        Ok(status) => {
            let body = {
                let history = p.history.lock().unwrap_or_else(|e| e.into_inner());
                render(&status, &history, &Build::current(), unix_ms())
            };
            (
                [
                    (header::CONTENT_TYPE, "text/html; charset=utf-8"),
                    (header::CACHE_CONTROL, "no-store"),
                    (
                        header::CONTENT_SECURITY_POLICY,
                        "default-src 'none'; style-src 'unsafe-inline'",
                    ),
                ],
                body,
            )
                .into_response()
        }
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, format!("{e:#}\n")).into_response(),
    }
}
