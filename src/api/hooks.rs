//! Acknowledgement from outside the dashboard: Twilio's inbound-SMS and delivery-status
//! webhooks, and the single-use email ack link.
//!
//! Twilio requests are authenticated by `X-Twilio-Signature`, computed over
//! `server.public_url` + the request's path and query plus the sorted form parameters —
//! never over the Host header, which the caller chooses. Forged or unsigned requests get
//! 403 and change nothing. A `MessageSid` is processed once, whatever its body.
//!
//! The email link: `GET /ack/{token}` only shows what would be acknowledged (mail
//! scanners follow links), its form's `POST` acknowledges, once. Pages carry a pointer
//! only (ref, severity, party), strict security headers and no script or style.

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{HeaderMap, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};

use super::AppState;
use super::error::ApiError;
use crate::channels::compose::escape_html;
use crate::channels::twilio;
use crate::commands::{AckLink, CommandError, LinkAck, SmsReply};
use crate::telemetry::names;

/// Twilio's form posts are small; nothing larger is read.
const MAX_HOOK_BODY: usize = 16 * 1024;
const MAX_PARAMS: usize = 64;
/// An SMS body longer than this is not an ack (10 concatenated segments).
const MAX_SMS_BODY: usize = 1_600;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/hooks/twilio/sms", post(inbound_sms))
        .route("/hooks/twilio/status", post(status_callback))
        .route("/ack/{token}", get(ack_form).post(ack_submit))
        .layer(DefaultBodyLimit::max(MAX_HOOK_BODY))
}

/// Decodes an `application/x-www-form-urlencoded` body; None if it is not one.
fn parse_form(body: &[u8]) -> Option<Vec<(String, String)>> {
    let text = std::str::from_utf8(body).ok()?;
    let mut params = Vec::new();
    for pair in text.split('&').filter(|p| !p.is_empty()) {
        if params.len() >= MAX_PARAMS {
            return None;
        }
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        params.push((percent_decode(k)?, percent_decode(v)?));
    }
    Some(params)
}

fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).ok()
}

fn param<'a>(params: &'a [(String, String)], name: &str) -> Option<&'a str> {
    params.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
}

/// Checks the Twilio signature and returns the form parameters; 403 when it does not match.
fn signed_form(app: &AppState, uri: &Uri, headers: &HeaderMap, body: &[u8]) -> Result<Vec<(String, String)>, ApiError> {
    let forged = || ApiError::Forbidden("missing or invalid X-Twilio-Signature".into());
    let signature = headers.get("x-twilio-signature").and_then(|v| v.to_str().ok()).ok_or_else(forged)?;
    let params = parse_form(body).ok_or_else(|| ApiError::bad_request("bad_form", "the body is not a form"))?;
    let path = uri.path_and_query().map(|p| p.as_str()).unwrap_or(uri.path());
    let url = format!("{}{path}", app.settings.server.public_url.trim_end_matches('/'));
    if !twilio::signature_valid(&app.settings.sms.auth_token, &url, &params, signature) {
        tracing::warn!(path = uri.path(), "rejected a Twilio hook with a bad signature");
        return Err(forged());
    }
    Ok(params)
}

/// A Twilio message SID: short and alphanumeric (`SM` + 32 hex digits in practice).
fn message_sid(params: &[(String, String)]) -> Result<&str, ApiError> {
    param(params, "MessageSid")
        .filter(|s| !s.is_empty() && s.len() <= 64 && s.bytes().all(|b| b.is_ascii_alphanumeric()))
        .ok_or_else(|| ApiError::bad_request("bad_message_sid", "MessageSid is missing or malformed"))
}

fn twiml(body: String) -> Response {
    ([(header::CONTENT_TYPE, "text/xml; charset=utf-8")], body).into_response()
}

async fn inbound_sms(State(app): State<AppState>, uri: Uri, headers: HeaderMap, body: Bytes) -> Response {
    match handle_sms(&app, &uri, &headers, &body).await {
        Ok(Some(reply)) => twiml(twilio::reply_twiml(&reply)),
        Ok(None) => twiml(twilio::empty_twiml()),
        Err(e) => e.into_response(),
    }
}

/// The reply text for an inbound SMS, or None to answer nothing (a replay).
async fn handle_sms(app: &AppState, uri: &Uri, headers: &HeaderMap, body: &[u8]) -> Result<Option<String>, ApiError> {
    let params = signed_form(app, uri, headers, body)?;
    let sid = message_sid(&params)?;
    let from = param(&params, "From").filter(|f| f.len() <= 32).unwrap_or("");
    let text = param(&params, "Body").unwrap_or("");
    let reference = if text.chars().count() <= MAX_SMS_BODY { twilio::parse_reply(text) } else { None };
    let wanted = reference.clone().unwrap_or_default();
    let reply = match app.hub.sms_reply(sid, from, reference).await {
        Ok(reply) => reply,
        Err(CommandError::Internal(e)) => {
            tracing::error!(error = %e, reference = %wanted, "SMS acknowledgement failed");
            return Ok(Some(format!("Sorry, {wanted} could not be acknowledged just now. Please try again.")));
        }
        Err(e) => return Err(e.into()),
    };
    Ok(match reply {
        SmsReply::Replayed => None,
        SmsReply::Unregistered => Some("This number is not registered with focalpoint.".into()),
        SmsReply::NotAnAck => Some("To acknowledge, reply ACK followed by the incident ref, e.g. ACK K7Q9.".into()),
        SmsReply::NotPaged { reference } => Some(format!("No open incident {reference} was paged to you.")),
        SmsReply::Acknowledged { reference, party, .. } => {
            metrics::counter!(names::INBOUND_ACKS, "channel" => "sms").increment(1);
            Some(format!("Acknowledged {reference} for {party}. Thank you."))
        }
        SmsReply::AlreadyAcknowledged { reference, party } => {
            Some(format!("{reference} was already acknowledged for {party}."))
        }
        SmsReply::Closed { reference } => Some(format!("{reference} is closed; nothing to acknowledge.")),
        SmsReply::Forbidden { reference, reason } => Some(format!("You cannot acknowledge {reference}: {reason}.")),
    })
}

async fn status_callback(
    State(app): State<AppState>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Result<StatusCode, ApiError> {
    let params = signed_form(&app, &uri, &headers, &body)?;
    let sid = message_sid(&params)?;
    let status = param(&params, "MessageStatus")
        .filter(|s| !s.is_empty() && s.len() <= 20 && s.bytes().all(|b| b.is_ascii_lowercase()))
        .ok_or_else(|| ApiError::bad_request("bad_message_status", "MessageStatus is missing or malformed"))?;
    app.hub.delivery_status(sid, status).await?;
    Ok(StatusCode::OK)
}

/// A small HTML page with strict headers: no script, no style, no framing, no referrer
/// (the URL holds the token), never cached.
fn html(status: StatusCode, title: &str, body: &str) -> Response {
    let page = format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" \
         content=\"width=device-width\"><title>{t}</title></head><body><h1>{t}</h1>{body}</body></html>",
        t = escape_html(title)
    );
    (
        status,
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'none'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
            ),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::X_FRAME_OPTIONS, "DENY"),
            (header::REFERRER_POLICY, "no-referrer"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        page,
    )
        .into_response()
}

fn invalid_link() -> Response {
    html(StatusCode::NOT_FOUND, "Link not valid", "<p>This acknowledgement link is not valid.</p>")
}

/// What the link is about: a pointer only, whatever the TLP label.
fn pointer(link: &AckLink) -> String {
    format!(
        "<p>Incident <strong>{}</strong>, severity {}, for party {}.</p>",
        escape_html(&link.reference),
        escape_html(&link.severity.to_string().to_uppercase()),
        escape_html(&link.party)
    )
}

async fn ack_form(State(app): State<AppState>, Path(token): Path<String>) -> Response {
    let link = match app.hub.ack_link(&token).await {
        Ok(Some(link)) => link,
        Ok(None) => return invalid_link(),
        Err(e) => return ApiError::from(e).into_response(),
    };
    let what = pointer(&link);
    if link.used {
        return html(StatusCode::OK, "Link already used", &format!("{what}<p>This link was already used.</p>"));
    }
    if !link.state.is_active() {
        return html(StatusCode::OK, "Incident closed", &format!("{what}<p>It is {}.</p>", link.state));
    }
    if link.acknowledged {
        return html(StatusCode::OK, "Already acknowledged", &format!("{what}<p>It is already acknowledged.</p>"));
    }
    html(
        StatusCode::OK,
        "Acknowledge incident",
        &format!(
            "{what}<form method=\"post\"><button type=\"submit\">Acknowledge for {}</button></form>",
            escape_html(&link.party)
        ),
    )
}

async fn ack_submit(State(app): State<AppState>, Path(token): Path<String>) -> Response {
    let outcome = match app.hub.ack_by_link(&token).await {
        Ok(Some(outcome)) => outcome,
        Ok(None) => return invalid_link(),
        Err(e) => return ApiError::from(e).into_response(),
    };
    match outcome {
        LinkAck::Acknowledged(link) => {
            metrics::counter!(names::INBOUND_ACKS, "channel" => "email").increment(1);
            html(StatusCode::OK, "Acknowledged", &format!("{}<p>Acknowledged. Thank you.</p>", pointer(&link)))
        }
        LinkAck::AlreadyAcknowledged(link) => html(
            StatusCode::OK,
            "Already acknowledged",
            &format!("{}<p>It was already acknowledged.</p>", pointer(&link)),
        ),
        LinkAck::Used(link) => html(
            StatusCode::CONFLICT,
            "Link already used",
            &format!("{}<p>This link was already used.</p>", pointer(&link)),
        ),
        LinkAck::Closed(link) => html(
            StatusCode::CONFLICT,
            "Incident closed",
            &format!("{}<p>It is {}; nothing to acknowledge.</p>", pointer(&link), link.state),
        ),
        LinkAck::Forbidden => {
            html(StatusCode::FORBIDDEN, "Not allowed", "<p>You may not acknowledge this incident.</p>")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forms_decode() {
        let p = parse_form(b"MessageSid=SM1&From=%2B6625550101&Body=ACK+K7Q9&Empty=").expect("form");
        assert_eq!(param(&p, "From"), Some("+6625550101"));
        assert_eq!(param(&p, "Body"), Some("ACK K7Q9"));
        assert_eq!(param(&p, "Empty"), Some(""));
        assert!(parse_form(b"a=%zz").is_none());
        assert!(parse_form(b"a=%f").is_none());
        assert!(parse_form(b"a=%ff").is_none(), "not UTF-8");
        assert!(parse_form("x=1&".repeat(MAX_PARAMS + 1).as_bytes()).is_none());
    }
}
