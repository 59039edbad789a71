//! A scripted Twilio-style Messages API for tests: an axum server on 127.0.0.1:0 that
//! records every request (on arrival) and answers from a script (default `201` with a fresh `SM…`
//! sid). Also records posts to `/bot/{id}` (bot webhooks, always answered 204).

#![allow(dead_code)]

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;

pub const ACCOUNT_SID: &str = "AC0123456789abcdef";
pub const AUTH_TOKEN: &str = "twilio-test-auth-token";
pub const FROM: &str = "+15005550006";

/// One scripted answer.
#[derive(Clone)]
pub struct Answer {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Answer {
    pub fn status(status: u16) -> Answer {
        Answer { status, headers: Vec::new(), body: format!("{{\"status\":{status},\"message\":\"scripted\"}}") }
    }

    pub fn header(mut self, name: &str, value: &str) -> Answer {
        self.headers.push((name.into(), value.into()));
        self
    }

    pub fn body(mut self, body: &str) -> Answer {
        self.body = body.into();
        self
    }
}

/// A request the fake received, with what it answered.
#[derive(Debug, Clone)]
pub struct Request {
    pub path: String,
    pub form: Vec<(String, String)>,
    pub headers: HeaderMap,
    pub raw: Bytes,
    pub status: u16,
    pub sid: Option<String>,
}

impl Request {
    pub fn param(&self, name: &str) -> Option<&str> {
        self.form.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }

    pub fn accepted(&self) -> bool {
        (200..300).contains(&self.status)
    }
}

#[derive(Default)]
struct Inner {
    script: VecDeque<Answer>,
    received: Vec<Request>,
    delay: Duration,
    next_sid: u64,
}

#[derive(Clone)]
pub struct FakeTwilio {
    pub addr: SocketAddr,
    inner: Arc<Mutex<Inner>>,
}

fn lock(inner: &Mutex<Inner>) -> MutexGuard<'_, Inner> {
    inner.lock().unwrap_or_else(|p| p.into_inner())
}

impl FakeTwilio {
    pub async fn start() -> FakeTwilio {
        let inner = Arc::new(Mutex::new(Inner::default()));
        let app = Router::new()
            .route("/2010-04-01/Accounts/{sid}/Messages.json", post(message))
            .route("/bot/{id}", post(bot))
            .with_state(inner.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind fake");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        FakeTwilio { addr, inner }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The next requests get these answers, in order; then the default 201.
    pub fn script(&self, answers: impl IntoIterator<Item = Answer>) {
        lock(&self.inner).script.extend(answers);
    }

    /// Every answer waits this long first (a slow provider).
    pub fn set_delay(&self, delay: Duration) {
        lock(&self.inner).delay = delay;
    }

    pub fn requests(&self) -> Vec<Request> {
        lock(&self.inner).received.clone()
    }

    /// SMS requests (not bot calls).
    pub fn sms(&self) -> Vec<Request> {
        self.requests().into_iter().filter(|r| r.path.contains("/Messages.json")).collect()
    }

    pub fn accepted_sms(&self) -> Vec<Request> {
        self.sms().into_iter().filter(Request::accepted).collect()
    }
}

async fn message(
    State(inner): State<Arc<Mutex<Inner>>>,
    uri: axum::http::Uri,
    headers: HeaderMap,
    raw: Bytes,
) -> Response {
    let form = decode_form(&raw);
    // Recorded on arrival: like a real provider, a request it received may be sent even
    // if the caller dies before reading the answer.
    let (delay, status, extra, body) = {
        let mut state = lock(&inner);
        let (status, extra, body, sid) = match state.script.pop_front() {
            Some(a) => (a.status, a.headers, a.body, None),
            None => {
                state.next_sid += 1;
                let sid = format!("SM{:032x}", state.next_sid);
                (201, Vec::new(), format!("{{\"sid\":\"{sid}\",\"status\":\"queued\"}}"), Some(sid))
            }
        };
        state.received.push(Request { path: uri.path().to_string(), form, headers, raw, status, sid });
        (state.delay, status, extra, body)
    };
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    let mut response = (StatusCode::from_u16(status).unwrap_or(StatusCode::OK), body).into_response();
    for (k, v) in extra {
        if let (Ok(k), Ok(v)) = (k.parse::<axum::http::HeaderName>(), v.parse()) {
            response.headers_mut().insert(k, v);
        }
    }
    response.headers_mut().insert("content-type", "application/json".parse().expect("header"));
    response
}

/// A bot webhook: recorded, answered 204 (the script is for SMS only).
async fn bot(
    State(inner): State<Arc<Mutex<Inner>>>,
    uri: axum::http::Uri,
    headers: HeaderMap,
    raw: Bytes,
) -> StatusCode {
    let request = Request { path: uri.path().to_string(), form: Vec::new(), headers, raw, status: 204, sid: None };
    lock(&inner).received.push(request);
    StatusCode::NO_CONTENT
}

/// `application/x-www-form-urlencoded` decoding (tests only; lossy on bad input).
pub fn decode_form(raw: &[u8]) -> Vec<(String, String)> {
    let text = String::from_utf8_lossy(raw);
    text.split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (decode(k), decode(v))
        })
        .collect()
}

fn decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("3F");
                out.push(u8::from_str_radix(hex, 16).unwrap_or(b'?'));
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `application/x-www-form-urlencoded` encoding of one value.
pub fn encode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'*' => out.push(b as char),
            b' ' => out.push('+'),
            b => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}
