//! Liveness, readiness and metrics for operators and orchestrators.

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;

use super::AppState;

pub fn router() -> Router<AppState> {
    Router::new().route("/healthz", get(healthz)).route("/readyz", get(readyz)).route("/metrics", get(metrics))
}

async fn healthz() -> impl IntoResponse {
    Json(json!({ "status": "ok" }))
}

/// Ready when the store answers; the bus's state is reported (a degraded bus still serves,
/// by polling the store).
async fn readyz(State(app): State<AppState>) -> impl IntoResponse {
    let ready = app.hub.readiness().await;
    let (store_ok, bus_ok) = (ready.store_ok, ready.bus_ok);
    let status = if store_ok { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    let body = json!({
        "status": if !store_ok { "unavailable" } else if bus_ok { "ready" } else { "degraded" },
        "store": if store_ok { "ok" } else { "unreachable" },
        "bus": { "kind": ready.bus, "state": if bus_ok { "ok" } else { "degraded" } },
        "feed_seq": app.feed.delivered(),
    });
    (status, Json(body))
}

async fn metrics(State(app): State<AppState>) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], app.metrics.render())
}
