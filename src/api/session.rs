//! `/api/v1/session`: sign in with a password for a session cookie; see and end the session.

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;

use super::AppState;
use super::error::{ApiError, ApiResult};
use super::extract::{Caller, JsonBody};
use crate::auth::{SESSION_COOKIE, password};
use crate::telemetry::names;

pub fn router() -> Router<AppState> {
    Router::new().route("/api/v1/session", post(sign_in).get(current).delete(sign_out))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SignIn {
    id: String,
    password: String,
}

/// The client address for rate limiting. Behind a reverse proxy every request shares the
/// proxy's address; the per-account limit still holds.
pub fn client_address(connect: &ConnectInfo<SocketAddr>) -> String {
    connect.0.ip().to_string()
}

async fn sign_in(
    State(app): State<AppState>,
    connect: ConnectInfo<SocketAddr>,
    body: JsonBody<SignIn>,
) -> ApiResult<Response> {
    let SignIn { id, password: given } = body.value;
    let address = client_address(&connect);
    if id.len() > 64 || given.len() > password::MAX_LENGTH {
        return Err(ApiError::Unauthorized);
    }
    if let Some(wait) = app.limiter.retry_after(&id, &address) {
        metrics::counter!(names::SIGNIN_FAILURES, "reason" => "rate_limited").increment(1);
        tracing::warn!(account = %id, %address, "sign-in rate-limited");
        return Err(ApiError::TooManyRequests(wait.as_secs().max(1)));
    }
    let Some(me) = app.auth.check_password(&id, given).await? else {
        app.limiter.record_failure(&id, &address);
        metrics::counter!(names::SIGNIN_FAILURES, "reason" => "bad_credentials").increment(1);
        tracing::info!(account = %id, %address, "sign-in failed");
        return Err(ApiError::Unauthorized);
    };
    app.limiter.record_success(&id);
    let hours = i64::from(app.settings.server.session_hours.max(1));
    let session = app.auth.open_session(&me, hours).await?;
    tracing::info!(account = %me.id, %address, "signed in");
    let secure = if app.settings.server.secure_cookies { "; Secure" } else { "" };
    let cookie =
        format!("{SESSION_COOKIE}={session}; Path=/; HttpOnly; SameSite=Strict; Max-Age={}{secure}", hours * 3600);
    let mut response = Json(json!({ "me": me })).into_response();
    response.headers_mut().insert(header::SET_COOKIE, HeaderValue::from_str(&cookie).map_err(anyhow::Error::from)?);
    Ok(response)
}

async fn current(Caller(me, _): Caller) -> impl IntoResponse {
    Json(json!({ "me": me }))
}

async fn sign_out(State(app): State<AppState>, headers: HeaderMap) -> ApiResult<Response> {
    if let Some(session) = super::extract::session_cookie_in(&headers) {
        app.auth.close_session(session).await?;
        // This node's streams at once; the other replicas' within a second.
        app.credentials.announce(crate::auth::secret::hash(session));
    }
    let mut response = Json(json!({ "signed_out": true })).into_response();
    response.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_static("focalpoint_session=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0"),
    );
    Ok(response)
}
