//! `/api/v1/incidents`: raise, list, get, and the per-incident actions.

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;
use uuid::Uuid;

use super::AppState;
use super::error::{ApiError, ApiResult};
use super::extract::{Caller, Credential, JsonBody, parse_json};
use crate::commands::ListRequest;
use crate::domain::incident::State as IncidentState;
use crate::domain::raise::RaiseRequest;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/", post(raise).get(list))
        .route("/{id}", get(get_one))
        .route("/{id}/ack", post(ack))
        .route("/{id}/notes", post(note))
        .route("/{id}/resolve", post(resolve))
        .route("/{id}/cancel", post(cancel))
        .route("/{id}/escalate", post(escalate))
}

fn incident_id(raw: &str) -> ApiResult<Uuid> {
    // A malformed id cannot name a visible incident: 404, like any other absent one.
    Uuid::parse_str(raw).map_err(|_| ApiError::NotFound)
}

async fn raise(
    State(app): State<AppState>,
    Caller(me, _): Caller,
    headers: HeaderMap,
    body: JsonBody<RaiseRequest>,
) -> ApiResult<Response> {
    let key = match headers.get("idempotency-key") {
        None => None,
        Some(v) => Some(v.to_str().map_err(|_| ApiError::invalid("Idempotency-Key", "Idempotency-Key must be ASCII"))?),
    };
    let raised = app.hub.raise(&me, &body.value, key, &body.raw).await?;
    let status = if raised.created { StatusCode::CREATED } else { StatusCode::OK };
    let mut response = (status, Json(&raised.incident)).into_response();
    if let Ok(location) = HeaderValue::from_str(&format!("/api/v1/incidents/{}", raised.incident.id)) {
        response.headers_mut().insert("location", location);
    }
    if raised.replayed {
        response.headers_mut().insert("idempotent-replayed", HeaderValue::from_static("true"));
    }
    Ok(response)
}

async fn list(
    State(app): State<AppState>,
    Caller(me, _): Caller,
    query: Result<Query<ListRequest>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Response> {
    let Query(q) = query.map_err(|e| ApiError::invalid("query", e.body_text()))?;
    // Read the head before the list: a client that streams `after` this cursor misses
    // nothing.
    let head = app.hub.head_seq().await?;
    let page = app.hub.list(&me, &q).await?;
    let cursors = app.hub.cursors();
    Ok(Json(json!({
        "cursor": cursors.seal(head),
        "incidents": page.incidents,
        "total": page.total,
        "next_cursor": page.next_cursor.map(|c| cursors.seal(c)),
    }))
    .into_response())
}

async fn get_one(State(app): State<AppState>, Caller(me, _): Caller, Path(id): Path<String>) -> ApiResult<Response> {
    let (incident, timeline) = app.hub.incident(&me, incident_id(&id)?).await?;
    let mut body = serde_json::to_value(&incident).map_err(anyhow::Error::from)?;
    let timeline: Vec<_> = timeline.iter().map(|e| e.shown(app.hub.cursors())).collect();
    body["timeline"] = serde_json::to_value(timeline).map_err(anyhow::Error::from)?;
    Ok(Json(body).into_response())
}

/// Optional JSON body of the actions; an empty body is allowed.
fn optional_body<T: for<'de> Deserialize<'de> + Default>(raw: &[u8]) -> ApiResult<T> {
    if raw.iter().all(u8::is_ascii_whitespace) { Ok(T::default()) } else { parse_json(raw) }
}

async fn ack(
    State(app): State<AppState>,
    Caller(me, credential): Caller,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> ApiResult<Response> {
    let id = incident_id(&id)?;
    let _: EmptyBody = optional_body(&body)?;
    let via = if credential == Credential::Cookie { "web" } else { "api" };
    let result = app.hub.acknowledge(&me, id, via).await?;
    let mut response = Json(&result.incident).into_response();
    response.headers_mut().insert(
        "ack-result",
        HeaderValue::from_static(if result.newly_acknowledged { "acknowledged" } else { "already_acknowledged" }),
    );
    Ok(response)
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct EmptyBody {}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct NoteBody {
    text: Option<String>,
}

async fn note(
    State(app): State<AppState>,
    Caller(me, _): Caller,
    Path(id): Path<String>,
    body: JsonBody<NoteBody>,
) -> ApiResult<Response> {
    let id = incident_id(&id)?;
    let text = body.value.text.ok_or_else(|| ApiError::invalid("text", "`text` is required"))?;
    Ok(Json(app.hub.add_note(&me, id, &text).await?).into_response())
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct CloseBody {
    reason: Option<String>,
}

async fn resolve(
    State(app): State<AppState>,
    Caller(me, _): Caller,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> ApiResult<Response> {
    close(app, me, &id, &body, IncidentState::Resolved).await
}

async fn cancel(
    State(app): State<AppState>,
    Caller(me, _): Caller,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> ApiResult<Response> {
    close(app, me, &id, &body, IncidentState::Cancelled).await
}

async fn close(
    app: AppState,
    me: crate::domain::principal::Principal,
    id: &str,
    body: &[u8],
    state: IncidentState,
) -> ApiResult<Response> {
    let id = incident_id(id)?;
    let body: CloseBody = optional_body(body)?;
    Ok(Json(app.hub.close(&me, id, state, body.reason.as_deref()).await?).into_response())
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct EscalateBody {
    party: Option<String>,
}

async fn escalate(
    State(app): State<AppState>,
    Caller(me, _): Caller,
    Path(id): Path<String>,
    body: JsonBody<EscalateBody>,
) -> ApiResult<Response> {
    let id = incident_id(&id)?;
    let party = body
        .value
        .party
        .ok_or_else(|| ApiError::invalid("party", "`party` is required: the party to move to its next step"))?;
    Ok(Json(app.hub.escalate(&me, id, &party).await?).into_response())
}
