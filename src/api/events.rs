//! `GET /api/v1/events?after=CURSOR`: visible events after a cursor, for clients that poll.

use axum::extract::{Query, State};
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};

use super::AppState;
use super::error::{ApiError, ApiResult};
use super::extract::Caller;

pub fn router() -> Router<AppState> {
    Router::new().route("/api/v1/events", get(events)).route("/api/v1/audit/verify", get(verify))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EventsQuery {
    after: Option<String>,
    limit: Option<u32>,
}

async fn events(
    State(app): State<AppState>,
    Caller(me, _): Caller,
    query: Result<Query<EventsQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Json<Value>> {
    let Query(q) = query.map_err(|e| ApiError::invalid("query", e.body_text()))?;
    let after = match &q.after {
        Some(cursor) => app.hub.open_cursor("after", cursor)?,
        None => 0,
    };
    let events = app.hub.events_after(&me, after, q.limit).await?;
    let cursors = app.hub.cursors();
    let last = events.last().map(|e| e.seq).unwrap_or(after);
    let shown: Vec<_> = events.iter().map(|e| e.shown(cursors)).collect();
    // `cursor`: where the next page starts, also when this one is empty.
    Ok(Json(json!({ "events": shown, "cursor": cursors.seal(last) })))
}

/// For auditors and admins: walks the hash chain and reports whether it is intact,
/// without showing any incident content.
async fn verify(State(app): State<AppState>, Caller(me, _): Caller) -> ApiResult<Json<Value>> {
    let report = app.hub.verify_chain(&me).await?;
    Ok(Json(json!({ "intact": report.broken_at.is_none(), "report": report })))
}
