//! Liveness, readiness and metrics for operators and orchestrators.

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;

use super::AppState;
use super::error::ApiError;
use super::extract::bearer_in;
use crate::auth::secret;

pub fn router() -> Router<AppState> {
    Router::new().route("/healthz", get(healthz)).route("/readyz", get(readyz)).route("/metrics", get(metrics))
}

async fn healthz() -> impl IntoResponse {
    Json(json!({ "status": "ok" }))
}

/// Ready when the store answers; the bus's state is reported (a degraded bus still serves,
/// by polling the store). Nothing about activity: anyone may call this.
async fn readyz(State(app): State<AppState>) -> impl IntoResponse {
    let ready = app.hub.readiness().await;
    let (store_ok, bus_ok) = (ready.store_ok, ready.bus_ok);
    let status = if store_ok { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    let body = json!({
        "status": if !store_ok { "unavailable" } else if bus_ok { "ready" } else { "degraded" },
        "store": if store_ok { "ok" } else { "unreachable" },
        "bus": { "kind": ready.bus, "state": if bus_ok { "ok" } else { "degraded" } },
    });
    (status, Json(body))
}

/// Prometheus text, for the holder of `server.metrics_token` only: counts of incidents and
/// acks are activity no party should be able to watch. 404 when no token is configured.
async fn metrics(State(app): State<AppState>, headers: HeaderMap) -> Result<impl IntoResponse, ApiError> {
    let expected = &app.settings.server.metrics_token;
    if expected.is_empty() {
        return Err(ApiError::NotFound);
    }
    let given = bearer_in(&headers);
    // Compared as hashes: equal-length digests, so the time taken says nothing about
    // how much of a guess was right.
    let matches = given.is_some_and(|g| secret::hash(g) == secret::hash(expected));
    if !matches {
        return Err(ApiError::Unauthorized);
    }
    Ok(([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], app.metrics.render()))
}
