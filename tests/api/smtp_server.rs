//! A small real SMTP server for tests: tokio TCP on 127.0.0.1:0, speaks EHLO/HELO,
//! MAIL FROM, RCPT TO, DATA, RSET, NOOP and QUIT, records what it receives and can be
//! scripted to answer a stage with another reply, e.g. the first message with
//! `451 4.3.0 try later` and the next one with the default `250`.
//!
//! ```ignore
//! let smtp = SmtpServer::start().await?;
//! smtp.reply_once(Stage::Message, "451 4.3.0 try later");
//! // … send twice …
//! assert_eq!(smtp.messages().len(), 1);
//! ```

#![allow(dead_code)]

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// Largest command line and message accepted; beyond that the client gets a 5xx.
const MAX_LINE: usize = 8 * 1024;
const MAX_MESSAGE: usize = 10 * 1024 * 1024;

/// A point in the conversation whose reply can be scripted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Stage {
    /// The greeting on connect (default `220`).
    Greeting,
    /// `MAIL FROM` (default `250`).
    Mail,
    /// Each `RCPT TO` (default `250`).
    Rcpt,
    /// The `DATA` command itself (default `354`).
    Data,
    /// The end of the message data, after `.` (default `250`).
    Message,
}

/// One message as the server saw it.
#[derive(Debug, Clone, Default)]
pub struct Received {
    pub helo: String,
    pub mail_from: String,
    pub rcpt_to: Vec<String>,
    /// The raw message (headers and body, dot-unstuffed, CRLF line ends).
    pub data: String,
    /// The reply the server gave to the end of data (`250 …` or the scripted one).
    pub reply: String,
}

impl Received {
    /// True if the reply accepted the message.
    pub fn accepted(&self) -> bool {
        self.reply.starts_with('2')
    }

    /// The value of the first header `name` (case-insensitive), unfolded.
    pub fn header(&self, name: &str) -> Option<String> {
        let head = self.data.split("\r\n\r\n").next()?;
        let mut value: Option<String> = None;
        for line in head.split("\r\n") {
            if let Some(v) = value.as_mut() {
                if line.starts_with([' ', '\t']) {
                    v.push_str(line);
                    continue;
                }
                break;
            }
            if let Some((k, v)) = line.split_once(':')
                && k.eq_ignore_ascii_case(name)
            {
                value = Some(v.trim().to_string());
            }
        }
        value
    }
}

#[derive(Default)]
struct State {
    script: HashMap<Stage, VecDeque<String>>,
    /// Every message that reached the end of DATA, accepted or not, in order.
    received: Vec<Received>,
    connections: usize,
}

/// The running server; stops when dropped.
pub struct SmtpServer {
    addr: SocketAddr,
    state: Arc<Mutex<State>>,
    task: JoinHandle<()>,
}

impl SmtpServer {
    /// Binds 127.0.0.1 on a free port and starts accepting.
    pub async fn start() -> std::io::Result<SmtpServer> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let state = Arc::new(Mutex::new(State::default()));
        let shared = state.clone();
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                lock(&shared).connections += 1;
                tokio::spawn(session(stream, shared.clone()));
            }
        });
        Ok(SmtpServer { addr, state, task })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// The next time `stage` is reached, answer `reply` (e.g. `451 4.3.0 try later`)
    /// instead of the default. Calls queue up: each scripted reply is used once.
    pub fn reply_once(&self, stage: Stage, reply: &str) {
        lock(&self.state).script.entry(stage).or_default().push_back(reply.to_string());
    }

    /// Messages the server accepted (2xx at the end of DATA), in order.
    pub fn messages(&self) -> Vec<Received> {
        lock(&self.state).received.iter().filter(|m| m.accepted()).cloned().collect()
    }

    /// Every message that reached the end of DATA, accepted or refused, in order.
    pub fn attempts(&self) -> Vec<Received> {
        lock(&self.state).received.clone()
    }

    /// TCP connections accepted so far.
    pub fn connections(&self) -> usize {
        lock(&self.state).connections
    }

    /// Waits until at least `n` messages were accepted, or `timeout` passes.
    pub async fn wait_for(&self, n: usize, timeout: Duration) -> Vec<Received> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let got = self.messages();
            if got.len() >= n || tokio::time::Instant::now() >= deadline {
                return got;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for SmtpServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A poisoned lock only means another test task panicked; the data is still usable.
fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    state.lock().unwrap_or_else(|p| p.into_inner())
}

fn reply_for(state: &Mutex<State>, stage: Stage, default: &str) -> String {
    lock(state).script.get_mut(&stage).and_then(VecDeque::pop_front).unwrap_or_else(|| default.to_string())
}

/// The address inside `<…>` of `MAIL FROM:<a@b> BODY=8BITMIME`.
fn path_arg(rest: &str) -> String {
    match (rest.find('<'), rest.find('>')) {
        (Some(a), Some(b)) if a < b => rest[a + 1..b].to_string(),
        _ => rest.split_whitespace().next().unwrap_or("").to_string(),
    }
}

/// Reads one CRLF- (or LF-) terminated line without the terminator; None at EOF or when
/// the line is too long.
async fn read_line(reader: &mut BufReader<tokio::net::tcp::OwnedReadHalf>) -> Option<String> {
    let mut buf = Vec::new();
    let n = (&mut *reader).take(MAX_LINE as u64 + 2).read_until(b'\n', &mut buf).await.ok()?;
    if n == 0 || !buf.ends_with(b"\n") {
        return None;
    }
    while matches!(buf.last(), Some(b'\n' | b'\r')) {
        buf.pop();
    }
    Some(String::from_utf8_lossy(&buf).into_owned())
}

async fn session(stream: TcpStream, state: Arc<Mutex<State>>) {
    let (read, mut write) = stream.into_split();
    let mut reader = BufReader::new(read);
    macro_rules! say {
        ($text:expr) => {
            if write.write_all(format!("{}\r\n", $text).as_bytes()).await.is_err() {
                return;
            }
        };
    }
    let greeting = reply_for(&state, Stage::Greeting, "220 localhost ESMTP focalpoint-test");
    let refused = !greeting.starts_with('2');
    say!(greeting);
    if refused {
        return;
    }
    let mut current = Received::default();
    let mut helo = String::new();
    while let Some(line) = read_line(&mut reader).await {
        let (verb, rest) = line.split_once(' ').unwrap_or((line.as_str(), ""));
        match verb.to_ascii_uppercase().as_str() {
            "EHLO" => {
                helo = rest.trim().to_string();
                say!("250-localhost\r\n250-8BITMIME\r\n250-SMTPUTF8\r\n250 SIZE 10485760");
            }
            "HELO" => {
                helo = rest.trim().to_string();
                say!("250 localhost");
            }
            "MAIL" => {
                let reply = reply_for(&state, Stage::Mail, "250 2.1.0 OK");
                if reply.starts_with('2') {
                    current = Received { helo: helo.clone(), mail_from: path_arg(rest), ..Received::default() };
                }
                say!(reply);
            }
            "RCPT" => {
                let reply = reply_for(&state, Stage::Rcpt, "250 2.1.5 OK");
                if reply.starts_with('2') {
                    current.rcpt_to.push(path_arg(rest));
                }
                say!(reply);
            }
            "DATA" => {
                if current.rcpt_to.is_empty() {
                    say!("503 5.5.1 need RCPT first");
                    continue;
                }
                let reply = reply_for(&state, Stage::Data, "354 end data with <CR><LF>.<CR><LF>");
                let go = reply.starts_with('3');
                say!(reply);
                if !go {
                    continue;
                }
                let mut data = String::new();
                loop {
                    let Some(line) = read_line(&mut reader).await else { return };
                    if line == "." {
                        break;
                    }
                    data.push_str(line.strip_prefix('.').unwrap_or(&line));
                    data.push_str("\r\n");
                    if data.len() > MAX_MESSAGE {
                        say!("552 5.3.4 message too big");
                        return;
                    }
                }
                let mut message = std::mem::take(&mut current);
                message.data = data;
                message.reply = reply_for(&state, Stage::Message, "250 2.0.0 OK queued");
                let reply = message.reply.clone();
                lock(&state).received.push(message);
                say!(reply);
            }
            "RSET" => {
                current = Received::default();
                say!("250 2.0.0 OK");
            }
            "NOOP" => say!("250 2.0.0 OK"),
            "QUIT" => {
                say!("221 2.0.0 bye");
                return;
            }
            _ => say!("502 5.5.2 command not implemented"),
        }
    }
}
