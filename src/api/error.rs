//! The API's one error type. Every failure becomes `{"error":{"code","message"}}` with the
//! right status; internal details go to the log, never to the caller.

use axum::Json;
use axum::http::header::RETRY_AFTER;
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::commands::CommandError;

#[derive(Debug)]
pub enum ApiError {
    BadRequest {
        code: &'static str,
        message: String,
    },
    Unauthorized,
    Forbidden(String),
    NotFound,
    Conflict {
        code: &'static str,
        message: String,
    },
    Unprocessable {
        field: Option<&'static str>,
        message: String,
    },
    PayloadTooLarge,
    UnsupportedMediaType,
    /// With the seconds to wait (Retry-After).
    TooManyRequests(u64),
    /// The request's headers are larger than `limits.max_header_bytes`.
    HeadersTooLarge,
    Internal(anyhow::Error),
}

impl ApiError {
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        ApiError::BadRequest { code, message: message.into() }
    }

    pub fn invalid(field: &'static str, message: impl Into<String>) -> Self {
        ApiError::Unprocessable { field: Some(field), message: message.into() }
    }
}

impl From<CommandError> for ApiError {
    fn from(e: CommandError) -> Self {
        match e {
            CommandError::NotFound => ApiError::NotFound,
            CommandError::Forbidden(m) => ApiError::Forbidden(m),
            CommandError::Invalid { field, message } => ApiError::Unprocessable { field, message },
            CommandError::Conflict { code, message } => ApiError::Conflict { code, message },
            CommandError::Internal(e) => ApiError::Internal(e),
        }
    }
}

impl From<anyhow::Error> for ApiError {
    fn from(e: anyhow::Error) -> Self {
        ApiError::Internal(e)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code, message, field) = match self {
            ApiError::BadRequest { code, message } => (StatusCode::BAD_REQUEST, code, message, None),
            ApiError::Unauthorized => {
                (StatusCode::UNAUTHORIZED, "unauthorized", "valid credentials are required".to_string(), None)
            }
            ApiError::Forbidden(m) => (StatusCode::FORBIDDEN, "forbidden", m, None),
            ApiError::NotFound => (StatusCode::NOT_FOUND, "not_found", "not found".to_string(), None),
            ApiError::Conflict { code, message } => (StatusCode::CONFLICT, code, message, None),
            ApiError::Unprocessable { field, message } => (StatusCode::UNPROCESSABLE_ENTITY, "invalid", message, field),
            ApiError::PayloadTooLarge => {
                (StatusCode::PAYLOAD_TOO_LARGE, "too_large", "the request body is too large".to_string(), None)
            }
            ApiError::UnsupportedMediaType => (
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "send JSON with Content-Type: application/json".to_string(),
                None,
            ),
            ApiError::TooManyRequests(seconds) => {
                let body = json!({ "error": {
                    "code": "rate_limited",
                    "message": format!("too many failed attempts from here; try again in {seconds} s"),
                }});
                let mut response = (StatusCode::TOO_MANY_REQUESTS, Json(body)).into_response();
                response.headers_mut().insert(RETRY_AFTER, HeaderValue::from(seconds));
                return response;
            }
            ApiError::HeadersTooLarge => (
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                "headers_too_large",
                "the request headers are too large".to_string(),
                None,
            ),
            ApiError::Internal(e) => {
                tracing::error!(error = ?e, "internal error");
                (StatusCode::INTERNAL_SERVER_ERROR, "internal", "internal error; it has been logged".to_string(), None)
            }
        };
        let mut error = json!({ "code": code, "message": message });
        if let Some(field) = field {
            error["field"] = json!(field);
        }
        (status, Json(json!({ "error": error }))).into_response()
    }
}

pub type ApiResult<T> = Result<T, ApiError>;
