//! Extractors: the authenticated principal, and JSON bodies whose rejections speak the
//! API's error format.

use axum::body::Bytes;
use std::net::SocketAddr;

use axum::extract::{ConnectInfo, FromRef, FromRequest, FromRequestParts, Request};
use axum::http::HeaderMap;
use axum::http::header::{AUTHORIZATION, CONTENT_TYPE, COOKIE};
use axum::http::request::Parts;
use serde::de::DeserializeOwned;

use super::AppState;
use super::error::ApiError;
use crate::auth::SESSION_COOKIE;
use crate::domain::principal::Principal;
use crate::telemetry::names;

/// How the caller authenticated: cookie sessions need an allowed Origin on WebSocket
/// upgrades; bearer tokens do not.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Credential {
    Bearer,
    Cookie,
}

/// The authenticated caller. Rejects with 401 when credentials are missing or invalid.
pub struct Caller(pub Principal, pub Credential);

pub fn bearer(parts: &Parts) -> Option<&str> {
    bearer_in(&parts.headers)
}

pub fn bearer_in(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// The stored hash of the credential a request authenticated with (the stream keeps it,
/// to close when that credential ends).
pub fn credential_hash(headers: &HeaderMap, kind: Credential) -> Option<Vec<u8>> {
    let secret = match kind {
        Credential::Bearer => bearer_in(headers)?,
        Credential::Cookie => session_cookie_in(headers)?,
    };
    Some(crate::auth::secret::hash(secret))
}

pub fn session_cookie(parts: &Parts) -> Option<&str> {
    session_cookie_in(&parts.headers)
}

pub fn session_cookie_in(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().split_once('='))
        .find(|(name, _)| *name == SESSION_COOKIE)
        .map(|(_, value)| value)
}

impl<S> FromRequestParts<S> for Caller
where
    AppState: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let app = AppState::from_ref(state);
        if let Some(token) = bearer(parts) {
            let address = parts
                .extensions
                .get::<ConnectInfo<SocketAddr>>()
                .map(super::session::client_address)
                .unwrap_or_else(|| "unknown".into());
            if let Some(wait) = app.token_limiter.retry_after(&address) {
                metrics::counter!(names::TOKEN_FAILURES, "reason" => "rate_limited").increment(1);
                tracing::warn!(%address, "bearer token refused: too many invalid tokens from this address");
                return Err(ApiError::TooManyRequests(wait.as_secs().max(1)));
            }
            return match app.auth.by_token(token).await? {
                Some(p) => Ok(Caller(p, Credential::Bearer)),
                None => {
                    app.token_limiter.record_failure(&address);
                    metrics::counter!(names::TOKEN_FAILURES, "reason" => "invalid").increment(1);
                    // Never the token itself: a near-miss of a real one is still a secret.
                    tracing::info!(%address, "bearer token refused: invalid, revoked or expired");
                    Err(ApiError::Unauthorized)
                }
            };
        }
        if let Some(session) = session_cookie(parts)
            && let Some(p) = app.auth.by_session(session).await?
        {
            return Ok(Caller(p, Credential::Cookie));
        }
        Err(ApiError::Unauthorized)
    }
}

/// A JSON body: 415 without a JSON content type, 413 over the limit, 400 when it is not
/// JSON, 422 when it does not match the expected shape, with serde's explanation.
pub struct JsonBody<T> {
    pub value: T,
    pub raw: Bytes,
}

impl<S, T> FromRequest<S> for JsonBody<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let json = req
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(|v| {
                let mime = v.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
                mime == "application/json" || mime.ends_with("+json")
            })
            .unwrap_or(false);
        if !json {
            return Err(ApiError::UnsupportedMediaType);
        }
        let raw = Bytes::from_request(req, state).await.map_err(|e| {
            if e.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::PayloadTooLarge
            } else {
                ApiError::bad_request("bad_body", "the request body could not be read")
            }
        })?;
        let value = parse_json(&raw)?;
        Ok(JsonBody { value, raw })
    }
}

pub fn parse_json<T: DeserializeOwned>(raw: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(raw).map_err(|e| {
        use serde_json::error::Category;
        match e.classify() {
            Category::Syntax | Category::Eof | Category::Io => {
                ApiError::bad_request("malformed_json", format!("the body is not valid JSON: {e}"))
            }
            Category::Data => ApiError::Unprocessable { field: None, message: format!("the body does not fit: {e}") },
        }
    })
}
