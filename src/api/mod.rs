//! The HTTP and WebSocket contract (DESIGN.md section 6): one `router()` per resource,
//! assembled here with the layers every request passes (body limit, latency metrics,
//! panic guard, JSON 404).

mod dashboard;
pub mod error;
mod events;
pub mod extract;
mod health;
mod hooks;
mod incidents;
mod network;
mod session;
mod stream;

use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use metrics_exporter_prometheus::PrometheusHandle;

use crate::auth::Authenticator;
use crate::auth::ended::CredentialWatch;
use crate::auth::limiter::{SignInLimiter, TokenLimiter};
use crate::commands::Hub;
use crate::config::Settings;
use crate::feed::Feed;
use crate::telemetry::names;

/// Everything a handler needs, cheap to clone.
#[derive(Clone)]
pub struct AppState(Arc<AppInner>);

pub struct AppInner {
    pub hub: Hub,
    pub auth: Authenticator,
    pub feed: Arc<Feed>,
    /// Credentials that ended, for closing the streams opened with them.
    pub credentials: Arc<CredentialWatch>,
    pub limiter: SignInLimiter,
    /// Requests with invalid bearer tokens, per client address.
    pub token_limiter: TokenLimiter,
    pub settings: Settings,
    pub metrics: PrometheusHandle,
    /// Allowed Origins for cookie-authenticated WebSocket upgrades.
    pub allowed_origins: Vec<String>,
    /// Flips to true when the hub shuts down; long-lived streams close with a reason.
    pub shutdown: tokio::sync::watch::Receiver<bool>,
}

impl AppState {
    pub fn new(inner: AppInner) -> Self {
        AppState(Arc::new(inner))
    }
}

impl std::ops::Deref for AppState {
    type Target = AppInner;
    fn deref(&self) -> &AppInner {
        &self.0
    }
}

pub fn router(state: AppState) -> Router {
    let max_body = state.settings.limits.max_body_bytes;
    let max_headers = state.settings.limits.max_header_bytes;
    Router::new()
        .nest("/api/v1/incidents", incidents::router())
        .merge(events::router())
        .merge(stream::router())
        .merge(session::router())
        .merge(network::router())
        .merge(health::router())
        .merge(hooks::router())
        .merge(dashboard::router())
        .fallback(|| async { error::ApiError::NotFound })
        .layer(DefaultBodyLimit::max(max_body))
        .layer(middleware::from_fn(record_latency))
        .layer(middleware::from_fn(move |request: Request, next: Next| limit_headers(max_headers, request, next)))
        .layer(tower_http::catch_panic::CatchPanicLayer::custom(|_| {
            error::ApiError::Internal(anyhow::anyhow!("handler panicked")).into_response()
        }))
        .with_state(state)
}

/// 431 when the request's headers (names and values) add up to more than `max` bytes.
/// hyper alone would read up to ~400 KB of them, into every handler.
async fn limit_headers(max: usize, request: Request, next: Next) -> Response {
    let size: usize = request.headers().iter().map(|(name, value)| name.as_str().len() + value.len() + 4).sum();
    if size > max {
        return error::ApiError::HeadersTooLarge.into_response();
    }
    next.run(request).await
}

/// Records request latency by route template (never the raw path: ids would explode the
/// label set).
async fn record_latency(request: Request, next: Next) -> Response {
    let route =
        request.extensions().get::<MatchedPath>().map(|m| m.as_str().to_string()).unwrap_or_else(|| "unmatched".into());
    let method = request.method().to_string();
    let start = Instant::now();
    let response = next.run(request).await;
    metrics::histogram!(names::HTTP_LATENCY, "route" => route, "method" => method, "status" => response.status().as_u16().to_string())
        .record(start.elapsed().as_secs_f64());
    response
}
