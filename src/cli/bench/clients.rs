//! The WebSocket side of `focalpoint bench`: N focal-point clients on the live stream.
//!
//! Every receipt is folded into per-incident atomics (first and last receipt, count), so
//! 10,000 clients record without locks or per-message allocation beyond the parse. Times
//! are nanoseconds since the bench's `origin` instant (monotonic, one process), stored
//! `+1` so that 0 can mean "not yet".

use std::borrow::Cow;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde::Deserialize;
use tokio::sync::{Semaphore, watch};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

/// No acker assigned to an incident.
pub const NO_ACKER: u32 = u32::MAX;

/// What the bench knows about one planned incident.
pub struct Slot {
    /// When the raise was sent (origin nanos + 1; 0 = not sent).
    pub sent: AtomicU64,
    pub first: AtomicU64,
    pub last: AtomicU64,
    pub count: AtomicU32,
    /// Index of the client that acks this incident when it sees it.
    pub acker: AtomicU32,
    pub ack_sent: AtomicU64,
    pub ack_first: AtomicU64,
    pub ack_last: AtomicU64,
    pub ack_count: AtomicU32,
    /// When the acker got its `ack.result` (0 = not yet).
    pub ack_result: AtomicU64,
}

impl Slot {
    fn new() -> Slot {
        Slot {
            sent: AtomicU64::new(0),
            first: AtomicU64::new(u64::MAX),
            last: AtomicU64::new(0),
            count: AtomicU32::new(0),
            acker: AtomicU32::new(NO_ACKER),
            ack_sent: AtomicU64::new(0),
            ack_first: AtomicU64::new(u64::MAX),
            ack_last: AtomicU64::new(0),
            ack_count: AtomicU32::new(0),
            ack_result: AtomicU64::new(0),
        }
    }
}

/// State shared by the orchestrator and every client task.
pub struct Shared {
    pub origin: Instant,
    /// `"title":"<marker> #`, as it appears in the JSON of the stream; every title this
    /// run raises starts with `<marker> #<index> `.
    needle: String,
    pub slots: Vec<Slot>,
    pub live: AtomicUsize,
    /// Live clients that should see the bench's incidents.
    pub visible_live: AtomicUsize,
    pub connect_errors: AtomicUsize,
    /// Sockets closed or failed after going live, before the bench stopped them.
    pub closed: AtomicUsize,
    pub ack_errors: AtomicUsize,
    pub messages: AtomicU64,
    /// The first few reasons for connect errors and closes, for the report.
    pub reasons: Mutex<Vec<String>>,
    /// `--reconnect`: clients that lost the hub and came back live (resumed by cursor).
    pub reconnected: AtomicUsize,
    /// `--reconnect`: first disconnect and last return to live (`now()` units, 0 = never).
    pub first_down: AtomicU64,
    pub last_back: AtomicU64,
    /// `--reconnect`: the longest single client's outage, in nanoseconds.
    pub longest_outage: AtomicU64,
}

impl Shared {
    pub fn new(marker: String, incidents: usize) -> Shared {
        Shared {
            origin: Instant::now(),
            needle: format!("\"title\":\"{marker} #"),
            slots: (0..incidents).map(|_| Slot::new()).collect(),
            live: AtomicUsize::new(0),
            visible_live: AtomicUsize::new(0),
            connect_errors: AtomicUsize::new(0),
            closed: AtomicUsize::new(0),
            ack_errors: AtomicUsize::new(0),
            messages: AtomicU64::new(0),
            reasons: Mutex::new(Vec::new()),
            reconnected: AtomicUsize::new(0),
            first_down: AtomicU64::new(u64::MAX),
            last_back: AtomicU64::new(0),
            longest_outage: AtomicU64::new(0),
        }
    }

    /// Nanoseconds since `origin`, plus one (0 means "never").
    pub fn now(&self) -> u64 {
        self.origin.elapsed().as_nanos() as u64 + 1
    }

    fn reason(&self, what: String) {
        if let Ok(mut r) = self.reasons.lock()
            && r.len() < 10
        {
            r.push(what);
        }
    }

    /// The incident index in a message about an incident this run raised, if it is one:
    /// the digits after `"title":"<marker> #`.
    fn index_in(&self, text: &str) -> Option<usize> {
        let at = text.find(self.needle.as_str())? + self.needle.len();
        let digits = text[at..].split(|c: char| !c.is_ascii_digit()).next()?;
        digits.parse().ok().filter(|i: &usize| *i < self.slots.len())
    }
}

/// The top-level `type` of a stream message: the first `"type":"…"` in it, since
/// events put `cursor`, `at` and `type` before `data` and control messages start with it.
fn kind_of(text: &str) -> Option<&str> {
    const KEY: &str = "\"type\":\"";
    let start = text.find(KEY)? + KEY.len();
    let len = text[start..].find('"')?;
    Some(&text[start..start + len])
}

/// The part of an `ack.result` the acker reads.
#[derive(Deserialize)]
struct AckResult<'a> {
    #[serde(borrow)]
    incident: Cow<'a, str>,
}

/// The part of an `incident.raised` event the acker reads.
#[derive(Deserialize)]
struct WithIncident<'a> {
    #[serde(borrow)]
    data: Data<'a>,
}

#[derive(Deserialize)]
struct Data<'a> {
    #[serde(borrow)]
    incident: IncidentPart<'a>,
}

#[derive(Deserialize)]
struct IncidentPart<'a> {
    #[serde(borrow)]
    id: Cow<'a, str>,
}

/// One client's identity and where to connect.
pub struct ClientSpec {
    pub index: u32,
    pub url: String,
    pub token: String,
    /// Whether this client's principal may see the incidents the bench raises.
    pub visible: bool,
    /// Reconnect after losing the hub, resuming with `?after=<last cursor>`.
    pub reconnect: bool,
}

/// The cursor of an event or `stream.live`, read without a JSON parse: both start
/// `{"cursor":"…"` (events by their field order, control messages by sorted keys). A
/// cursor is base64url: anything else is not one.
fn cursor_of(text: &str) -> Option<&str> {
    let rest = text.strip_prefix("{\"cursor\":\"")?;
    let cursor = &rest[..rest.find('"')?];
    crate::domain::cursor::looks_like(cursor).then_some(cursor)
}

/// Runs one client until `stop` flips: connect (holding a `handshakes` permit so the
/// hub's accept queue is not flooded), wait for `stream.live`, then record receipts.
pub async fn run(spec: ClientSpec, shared: Arc<Shared>, handshakes: Arc<Semaphore>, mut stop: watch::Receiver<bool>) {
    let config = WebSocketConfig::default().read_buffer_size(8 * 1024).write_buffer_size(0);
    let mut permit = match handshakes.acquire_owned().await {
        Ok(p) => Some(p),
        Err(_) => return, // the semaphore is closed only when the bench gives up
    };
    // `--reconnect`: where to resume, and since when the hub has been lost.
    let mut last_cursor: Option<String> = None;
    let mut down_since: Option<u64> = None;
    let give_up = Duration::from_secs(60);
    'connection: loop {
        let url = match (spec.reconnect, &last_cursor) {
            (true, Some(cursor)) => format!("{}?after={cursor}", spec.url),
            _ => spec.url.clone(),
        };
        let request = match url.as_str().into_client_request() {
            Ok(mut r) => match format!("Bearer {}", spec.token).parse() {
                Ok(v) => {
                    r.headers_mut().insert("authorization", v);
                    r
                }
                Err(_) => {
                    shared.connect_errors.fetch_add(1, Relaxed);
                    shared.reason("a client token is not a valid header value".into());
                    return;
                }
            },
            Err(e) => {
                shared.connect_errors.fetch_add(1, Relaxed);
                shared.reason(format!("bad stream URL: {e}"));
                return;
            }
        };
        let connected = tokio::time::timeout(
            Duration::from_secs(30),
            tokio_tungstenite::connect_async_with_config(request, Some(config), true),
        )
        .await;
        let mut ws = match connected {
            Ok(Ok((ws, _))) => ws,
            Err(_) | Ok(Err(_)) if down_since.is_some_and(|d| shared.now() - d < give_up.as_nanos() as u64) => {
                // The hub is restarting: try again shortly.
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue 'connection;
            }
            Ok(Err(e)) => {
                shared.connect_errors.fetch_add(1, Relaxed);
                shared.reason(format!("connect: {e}"));
                return;
            }
            Err(_) => {
                shared.connect_errors.fetch_add(1, Relaxed);
                shared.reason("connect: timed out after 30 s".into());
                return;
            }
        };
        let mut live = false;
        // Acks this client sent and awaits the `ack.result` of: (incident id, slot).
        let mut awaiting: Vec<(String, usize)> = Vec::new();
        loop {
            let message = tokio::select! {
                m = ws.next() => m,
                _ = stop.changed() => {
                    let _ = tokio::time::timeout(Duration::from_secs(1), ws.close(None)).await;
                    return;
                }
            };
            let at = shared.now();
            let lost = matches!(message, Some(Ok(Message::Close(_))) | Some(Err(_)) | None);
            if lost && spec.reconnect && live && !*stop.borrow() {
                down_since = Some(at);
                shared.first_down.fetch_min(at, Relaxed);
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue 'connection;
            }
            let text = match message {
                Some(Ok(Message::Text(text))) => text,
                Some(Ok(Message::Close(frame))) => {
                    if !*stop.borrow() {
                        shared.closed.fetch_add(1, Relaxed);
                        shared.reason(format!(
                            "closed by the hub: {}",
                            frame.map(|f| format!("{} {}", f.code, f.reason)).unwrap_or_default()
                        ));
                    }
                    return;
                }
                Some(Ok(_)) => continue, // ping/pong: tungstenite answers pings itself
                Some(Err(e)) => {
                    if !*stop.borrow() {
                        shared.closed.fetch_add(1, Relaxed);
                        shared.reason(format!("socket error: {e}"));
                    }
                    return;
                }
                None => {
                    if !*stop.borrow() {
                        shared.closed.fetch_add(1, Relaxed);
                        shared.reason("socket closed without a close frame".into());
                    }
                    return;
                }
            };
            shared.messages.fetch_add(1, Relaxed);
            // Messages come from the network: anything not understood is skipped. Most
            // messages are read without a JSON parse (10,000 clients × the event rate would
            // otherwise make the bench, not the hub, the bottleneck): serde_json writes the
            // top-level `type` before `data`, and only this run's titles carry the marker.
            let text = text.as_str();
            if spec.reconnect
                && let Some(cursor) = cursor_of(text)
            {
                last_cursor = Some(cursor.to_string());
            }
            let Some(kind) = kind_of(text) else { continue };
            match kind {
                "stream.live" if down_since.is_some() => {
                    live = true;
                    if let Some(since) = down_since.take() {
                        shared.reconnected.fetch_add(1, Relaxed);
                        shared.last_back.fetch_max(at, Relaxed);
                        shared.longest_outage.fetch_max(at.saturating_sub(since), Relaxed);
                    }
                }
                "stream.live" if !live => {
                    live = true;
                    if spec.visible {
                        shared.visible_live.fetch_add(1, Relaxed);
                    }
                    shared.live.fetch_add(1, Relaxed);
                    // Let the next client handshake only once this one is fully set up.
                    drop(permit.take());
                }
                "incident.raised" | "incident.acknowledged" => {
                    let Some(i) = shared.index_in(text) else { continue };
                    let slot = &shared.slots[i];
                    if kind == "incident.raised" {
                        slot.first.fetch_min(at, Relaxed);
                        slot.last.fetch_max(at, Relaxed);
                        slot.count.fetch_add(1, Relaxed);
                        if slot.acker.load(Relaxed) == spec.index {
                            // The acker alone parses the message, for the incident's id.
                            let Ok(parsed) = serde_json::from_str::<WithIncident>(text) else {
                                shared.ack_errors.fetch_add(1, Relaxed);
                                continue;
                            };
                            let ack =
                                serde_json::json!({ "type": "ack", "incident": parsed.data.incident.id }).to_string();
                            awaiting.push((parsed.data.incident.id.into_owned(), i));
                            slot.ack_sent.store(shared.now(), Relaxed);
                            if ws.send(Message::Text(ack.into())).await.is_err() {
                                shared.ack_errors.fetch_add(1, Relaxed);
                            }
                        }
                    } else {
                        slot.ack_first.fetch_min(at, Relaxed);
                        slot.ack_last.fetch_max(at, Relaxed);
                        slot.ack_count.fetch_add(1, Relaxed);
                    }
                }
                "error" => {
                    shared.ack_errors.fetch_add(1, Relaxed);
                    shared.reason(format!("hub answered an ack with: {}", text.chars().take(200).collect::<String>()));
                }
                "ack.result" => {
                    // Only ackers get these, a few a second: a full parse is fine.
                    let Ok(result) = serde_json::from_str::<AckResult>(text) else { continue };
                    if let Some(k) = awaiting.iter().position(|(id, _)| *id == result.incident) {
                        let (_, i) = awaiting.swap_remove(k);
                        shared.slots[i].ack_result.store(at, Relaxed);
                    }
                }
                _ => {} // pages, escalations, other runs' incidents
            }
        }
    }
}
