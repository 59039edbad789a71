//! `GET /api/v1/stream?after=CURSOR`: the live feed over WebSocket.
//!
//! Gap-free resume (promise 4): the client subscribes to the node's feed *before* reading
//! its backlog from the store, so every event committed after the backlog query is in
//! the subscription; events seen twice (in both) are skipped by seq. The client only
//! ever holds cursors (sealed seqs, see `domain::cursor`): inside the hub, positions are
//! seqs.
//!
//! A slow client is never silently dropped from the feed: when it falls more than the
//! feed's buffer behind, or a write stalls, it is closed with code 4008 and a reason
//! naming the cursor to resume after.

use std::sync::{Arc, OnceLock};
use std::task::Poll;
use std::time::Duration;

use axum::Router;
use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::http::header::{HOST, ORIGIN};
use axum::response::Response;
use axum::routing::get;
use futures_util::stream::SplitSink;
use futures_util::{SinkExt, StreamExt};
use serde::Deserialize;
use serde_json::json;
use tokio::runtime::{Handle, Runtime};
use tokio::sync::broadcast;
use tokio::sync::broadcast::error::{RecvError, TryRecvError};
use tokio::time::{Instant, MissedTickBehavior, timeout};

use super::AppState;
use super::error::{ApiError, ApiResult};
use super::extract::{Caller, Credential, credential_hash};
use crate::auth::ended::CLOSE_CREDENTIAL;
use crate::domain::principal::Principal;
use crate::domain::visibility::{self, may_see};
use crate::feed::FeedItem;
use crate::telemetry;

/// Close code for a client whose buffer overflowed (4000–4999 are the application's).
pub const CLOSE_SLOW: u16 = 4008;
/// Close code when the hub shuts down (1012: service restart).
pub const CLOSE_RESTART: u16 = 1012;
/// A write that takes longer than this means the client is not reading.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
const BACKLOG_BATCH: u32 = 500;

pub fn router() -> Router<AppState> {
    Router::new().route("/api/v1/stream", get(upgrade))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StreamQuery {
    after: Option<String>,
}

async fn upgrade(
    State(app): State<AppState>,
    Caller(me, credential): Caller,
    headers: HeaderMap,
    query: Result<Query<StreamQuery>, axum::extract::rejection::QueryRejection>,
    ws: WebSocketUpgrade,
) -> ApiResult<Response> {
    let Query(q) = query.map_err(|e| ApiError::invalid("after", e.body_text()))?;
    let after = q.after.as_deref().map(|c| app.hub.open_cursor("after", c)).transpose()?;
    // A cookie rides along with any page's request: only our own pages may use it to
    // open the stream (cross-site WebSocket hijacking).
    if credential == Credential::Cookie {
        let origin = headers.get(ORIGIN).and_then(|o| o.to_str().ok()).unwrap_or("");
        let host = headers.get(HOST).and_then(|h| h.to_str().ok()).unwrap_or("");
        // Same-origin (the page came from this hub, under whatever address it was reached
        // at) or one of the configured origins.
        let same_origin = !host.is_empty() && origin.split_once("://").is_some_and(|(_, h)| h == host);
        if !same_origin && !app.allowed_origins.iter().any(|o| o == origin) {
            return Err(ApiError::Forbidden("this Origin may not open the stream with a session cookie".into()));
        }
    }
    let limit = app.settings.limits.ws_max_message_bytes;
    Ok(ws
        .max_message_size(limit)
        .max_frame_size(limit)
        .read_buffer_size(4 * 1024)
        // Frames collect in the buffer until a flush (see `write_batch`), or until it
        // holds this much: a few events per syscall instead of one, while the buffer
        // each connection keeps stays small. Every write path flushes.
        .write_buffer_size(4 * 1024)
        .max_write_buffer_size(1024 * 1024)
        .on_upgrade(move |socket| async move {
            let credential = credential_hash(&headers, credential);
            // Commands a client sends (acks) run where requests do; the client's own
            // task runs on the stream runtime.
            let commands = Handle::current();
            let client = async move {
                let clients = &telemetry::stream_metrics().clients;
                clients.increment(1.0);
                serve(socket, app, me, credential, after, commands).await;
                clients.decrement(1.0);
            };
            match stream_runtime() {
                Some(runtime) => drop(runtime.spawn(client)),
                None => client.await,
            }
        }))
}

/// The runtime every stream client's task runs on, apart from the one that serves
/// requests, runs commands and follows the log.
///
/// Why: each event wakes every client. On one runtime, 10,000 client tasks per event
/// fill the run queues, and each step of a raise (every SQLite statement completes with
/// a wake-up) waits behind all of them: raises crawled, and so did the events they
/// produce. On their own runtime, the clients queue only behind each other; the request
/// runtime stays idle enough that the operating system runs its threads as soon as they
/// wake. Sockets stay registered with the request runtime's I/O driver, which wakes
/// client tasks across runtimes. One per process (hubs in tests share it); never shut
/// down, like the process's own runtime. None if it could not start: clients then run
/// on the request runtime, as they would anyway.
fn stream_runtime() -> Option<&'static Handle> {
    static RUNTIME: OnceLock<Option<Runtime>> = OnceLock::new();
    RUNTIME
        .get_or_init(|| {
            tokio::runtime::Builder::new_multi_thread()
                .thread_name("focalpoint-stream")
                .enable_all()
                .build()
                .inspect_err(
                    |e| tracing::warn!(error = %e, "cannot start the stream runtime; sharing the request runtime"),
                )
                .ok()
        })
        .as_ref()
        .map(Runtime::handle)
}

type Sink = SplitSink<WebSocket, Message>;

/// Sends one message, failing if the client does not take it in time.
async fn send(sink: &mut Sink, message: Message) -> Result<(), ()> {
    in_time(sink.send(message)).await
}

/// Runs a write, failing if it takes longer than [`WRITE_TIMEOUT`]. Nearly every write
/// completes at once (the socket has room): the timer is armed only when it does not.
async fn in_time<E>(write: impl Future<Output = Result<(), E>>) -> Result<(), ()> {
    let mut write = std::pin::pin!(write);
    if let Poll::Ready(outcome) = std::future::poll_fn(|cx| Poll::Ready(write.as_mut().poll(cx))).await {
        return outcome.map_err(|_| ());
    }
    match timeout(WRITE_TIMEOUT, write).await {
        Ok(Ok(())) => Ok(()),
        _ => Err(()),
    }
}

/// Sends a close frame with a reason. A slow client may have a full socket: give it time
/// to read what is queued so that it still learns where to resume.
async fn close(sink: &mut Sink, code: u16, reason: String) {
    let frame = CloseFrame { code, reason: Utf8Bytes::from(reason) };
    let _ = timeout(Duration::from_secs(30), sink.send(Message::Close(Some(frame)))).await;
}

/// Most events one write carries; the rest wait for the next turn of the client's loop.
const MAX_BATCH: usize = 64;

/// Collects into `batch` the events this client sees, starting with `first` and
/// continuing with whatever the feed already holds (without waiting), up to
/// [`MAX_BATCH`]. `last` advances over every event handled, seen or not. Returns the
/// error that ended the drain, if any: events before it are still in `batch`.
fn drain(
    feed: &mut broadcast::Receiver<Arc<FeedItem>>,
    first: Result<Arc<FeedItem>, RecvError>,
    last: &mut i64,
    batch: &mut Vec<Arc<FeedItem>>,
    keys: &[String],
    me: &Principal,
) -> Option<RecvError> {
    let mut next = first;
    loop {
        match next {
            Ok(item) => {
                if item.seq > *last {
                    *last = item.seq;
                    if may_see(keys, &item.audience, item.only_for.as_deref(), &me.id) {
                        batch.push(item);
                    }
                }
            }
            Err(e) => return Some(e),
        }
        if batch.len() >= MAX_BATCH {
            return None;
        }
        next = match feed.try_recv() {
            Ok(item) => Ok(item),
            Err(TryRecvError::Empty) => return None,
            Err(TryRecvError::Lagged(missed)) => Err(RecvError::Lagged(missed)),
            Err(TryRecvError::Closed) => Err(RecvError::Closed),
        };
    }
}

/// Writes a batch of events (emptying it) and flushes once, failing if the client does
/// not take them in time.
async fn write_batch(sink: &mut Sink, batch: &mut Vec<Arc<FeedItem>>) -> Result<(), ()> {
    let write = async {
        for item in batch.drain(..) {
            // Utf8Bytes is a shared buffer: the clone is a reference count, not a copy.
            sink.feed(Message::Text(item.json.clone())).await?;
        }
        sink.flush().await
    };
    let outcome = in_time(write).await;
    batch.clear();
    outcome
}

async fn serve(
    socket: WebSocket,
    app: AppState,
    me: Principal,
    credential: Option<Vec<u8>>,
    after: Option<i64>,
    commands: Handle,
) {
    let keys = visibility::viewer_keys(&me);
    let metrics = telemetry::stream_metrics();
    // Close reasons name where to resume, as the client knows it.
    let resume = |seq: i64| format!("resume after {}", app.hub.cursors().seal(seq));
    // Subscribe first: see the module docs.
    let mut feed = app.feed.subscribe();
    let mut ended = app.credentials.subscribe();
    let (mut sink, mut incoming) = socket.split();

    // `last` is the highest seq handled (sent or skipped); `sent` the last one sent.
    let mut last = match after {
        Some(a) => a,
        None => match app.hub.head_seq().await {
            Ok(head) => head,
            Err(e) => {
                tracing::warn!(error = %e, "stream could not read the head");
                close(&mut sink, 1011, "store unavailable; retry".into()).await;
                return;
            }
        },
    };
    if after.is_some() {
        loop {
            let batch = match app.hub.events_after(&me, last, Some(BACKLOG_BATCH)).await {
                Ok(batch) => batch,
                Err(e) => {
                    tracing::warn!(error = %e, "stream could not read the backlog");
                    close(&mut sink, 1011, format!("store unavailable; {}", resume(last))).await;
                    return;
                }
            };
            let n = batch.len();
            for event in batch {
                let Ok(text) = serde_json::to_string(&event.shown(app.hub.cursors())) else {
                    continue;
                };
                if send(&mut sink, Message::Text(text.into())).await.is_err() {
                    return;
                }
                metrics.events_streamed.increment(1);
                last = event.seq;
            }
            if n < BACKLOG_BATCH as usize {
                break;
            }
        }
    }
    let mut sent = last;
    let live = json!({ "type": "stream.live", "cursor": app.hub.cursors().seal(sent) }).to_string();
    if send(&mut sink, Message::Text(live.into())).await.is_err() {
        return;
    }

    let ping_every = Duration::from_secs(app.settings.limits.ws_ping_seconds);
    let mut ping = tokio::time::interval_at(Instant::now() + ping_every, ping_every);
    ping.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut last_heard = Instant::now();
    let mut shutdown = app.shutdown.clone();

    let mut batch: Vec<Arc<FeedItem>> = Vec::new();
    loop {
        tokio::select! {
            // Feed first: it is what a client is woken for nearly every time, and taking
            // it without polling the other branches keeps the wake-up cheap. Nothing
            // starves: the batch drains the feed, so the next turn polls the rest.
            biased;
            item = feed.recv() => {
                // Take every event already waiting, then write them with one flush (one
                // syscall): when the hub falls behind, batches grow and each client
                // costs less per event instead of more.
                let end = drain(&mut feed, item, &mut last, &mut batch, &keys, &me);
                if let Some(&seq) = batch.last().map(|i| &i.seq) {
                    let n = batch.len() as u64;
                    if write_batch(&mut sink, &mut batch).await.is_err() {
                        metrics.slow_clients.increment(1);
                        tracing::info!(client = %me.id, sent, "stream write stalled; dropping client");
                        return;
                    }
                    metrics.events_streamed.increment(n);
                    sent = seq;
                }
                match end {
                    None => {}
                    Some(RecvError::Lagged(missed)) => {
                        metrics.slow_clients.increment(1);
                        tracing::info!(client = %me.id, sent, missed, "stream client too slow; closing");
                        close(&mut sink, CLOSE_SLOW, format!("slow consumer; {}", resume(sent))).await;
                        return;
                    }
                    Some(RecvError::Closed) => {
                        close(&mut sink, CLOSE_RESTART, format!("hub stopping; {}", resume(sent))).await;
                        return;
                    }
                }
            },
            message = incoming.next() => {
                last_heard = Instant::now();
                match message {
                    None | Some(Err(_)) | Some(Ok(Message::Close(_))) => return,
                    Some(Ok(Message::Text(text))) => {
                        // The command runs where requests do, and answers from there: the
                        // socket goes with it and comes back. Answered from this task, the
                        // reply waited behind every other client's fan-out on the stream
                        // runtime (the acker's p99 was the last client's).
                        let (app, me) = (app.clone(), me.clone());
                        let command = commands.spawn(async move {
                            let reply = client_message(&app, &me, text.as_str()).await;
                            let sent = send(&mut sink, Message::Text(reply.to_string().into())).await;
                            (sink, sent)
                        });
                        let Ok((back, sent)) = command.await else {
                            return; // the request runtime is shutting down
                        };
                        sink = back;
                        if sent.is_err() {
                            return;
                        }
                    }
                    Some(Ok(Message::Binary(_))) => {
                        let reply = json!({"type": "error", "code": "binary_unsupported", "message": "send JSON text frames"});
                        if send(&mut sink, Message::Text(reply.to_string().into())).await.is_err() {
                            return;
                        }
                    }
                    Some(Ok(_)) => {} // ping (answered by the library) or pong
                }
            }
            _ = ping.tick() => {
                if last_heard.elapsed() > ping_every * 3 {
                    tracing::info!(client = %me.id, "stream client silent; closing");
                    close(&mut sink, 1001, format!("no answer to pings; {}", resume(sent))).await;
                    return;
                }
                if send(&mut sink, Message::Ping(Default::default())).await.is_err() {
                    return;
                }
            }
            batch = ended.recv() => {
                let mine = match &batch {
                    Ok(hashes) => credential.as_ref().is_some_and(|c| hashes.contains(c)),
                    // Missed some: maybe ours. Err on the side of closing; the client
                    // reconnects at once if its credential is still good.
                    Err(RecvError::Lagged(_)) => true,
                    Err(RecvError::Closed) => false,
                };
                if mine {
                    tracing::info!(client = %me.id, "stream credential ended; closing");
                    let reason = format!("credentials revoked, expired or signed out; sign in again, {}", resume(sent));
                    close(&mut sink, CLOSE_CREDENTIAL, reason).await;
                    return;
                }
            }
            _ = shutdown.changed() => {
                close(&mut sink, CLOSE_RESTART, format!("hub restarting; {}", resume(sent))).await;
                return;
            }
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ClientMessage {
    #[serde(rename = "type")]
    kind: String,
    incident: Option<String>,
}

/// Handles one message from the client and returns the reply.
async fn client_message(app: &AppState, me: &Principal, text: &str) -> serde_json::Value {
    let error = |code: &str, message: &str| json!({ "type": "error", "code": code, "message": message });
    let Ok(message) = serde_json::from_str::<ClientMessage>(text) else {
        return error("bad_message", r#"expected {"type":"ack","incident":"<id>"}"#);
    };
    if message.kind != "ack" {
        return error("unknown_type", "the only message a client sends is {\"type\":\"ack\",…}");
    }
    let Some(id) = message.incident.as_deref().and_then(|i| uuid::Uuid::parse_str(i).ok()) else {
        return error("not_found", "no such incident");
    };
    match app.hub.acknowledge(me, id, "stream").await {
        Ok(result) => json!({
            "type": "ack.result",
            "incident": id,
            "result": if result.newly_acknowledged { "acknowledged" } else { "already_acknowledged" },
        }),
        Err(e) => {
            let api: ApiError = e.into();
            let (code, message) = match api {
                ApiError::NotFound => ("not_found", "no such incident".to_string()),
                ApiError::Forbidden(m) => ("forbidden", m),
                ApiError::Conflict { code, message } => (code, message),
                ApiError::Internal(e) => {
                    tracing::error!(error = ?e, "stream ack failed");
                    ("internal", "internal error; it has been logged".to_string())
                }
                _ => ("invalid", "the ack could not be recorded".to_string()),
            };
            json!({ "type": "error", "code": code, "message": message, "incident": id })
        }
    }
}
