//! `GET /api/v1/network`: the parties, fields and focal points (without contact details).

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{Value, json};

use super::AppState;
use super::error::ApiResult;
use super::extract::Caller;

pub fn router() -> Router<AppState> {
    Router::new().route("/api/v1/network", get(network))
}

async fn network(State(app): State<AppState>, Caller(me, _): Caller) -> ApiResult<Json<Value>> {
    let d = app.hub.directory();
    let parties: Vec<Value> = d
        .parties()
        .iter()
        .map(|p| json!({ "code": p.code, "name": p.name, "timezone": p.timezone.name(), "languages": p.languages }))
        .collect();
    let fields: Vec<Value> = d.fields().iter().map(|f| json!({ "id": f.id, "name": f.name })).collect();
    // Phone numbers and addresses stay in the hub: they leave only as pages.
    let focal_points: Vec<Value> = d
        .focal_points()
        .iter()
        .map(|f| json!({ "id": f.id, "name": f.name, "party": f.party, "roles": f.roles, "fields": f.fields, "level": f.level }))
        .collect();
    Ok(Json(json!({ "parties": parties, "fields": fields, "focal_points": focal_points, "me": me })))
}
