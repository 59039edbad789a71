//! Layered configuration: built-in defaults, then `config/focalpoint.toml` (or the file
//! given with `--config`), then environment variables `FOCALPOINT__SECTION__KEY`.
//!
//! Every key has a sensible default so the embedded set-up (SQLite, in-process bus, `log`
//! gateways) runs with no file at all.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct Settings {
    pub server: ServerSettings,
    pub store: StoreSettings,
    pub bus: BusSettings,
    pub network: NetworkSettings,
    pub sms: SmsSettings,
    pub email: EmailSettings,
    pub webhook: WebhookSettings,
    pub dispatch: DispatchSettings,
    pub limits: Limits,
    pub log: LogSettings,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerSettings {
    /// Address to listen on; port 0 picks a free port (printed at start-up).
    pub listen: String,
    /// The URL people and gateways reach the hub at (links in email, Twilio signatures).
    pub public_url: String,
    /// Origins allowed to open the WebSocket with a session cookie. The public URL's
    /// origin is always allowed.
    pub allowed_origins: Vec<String>,
    /// Mark session cookies `Secure` (set when the hub is served over HTTPS).
    pub secure_cookies: bool,
    /// Lifetime of a dashboard session, in hours.
    pub session_hours: u32,
    /// `GET /metrics` answers only with `Authorization: Bearer <this>`; empty turns
    /// metrics off (they show how much is happening, so nobody else may read them).
    pub metrics_token: String,
}

impl Default for ServerSettings {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:8080".into(),
            public_url: "http://127.0.0.1:8080".into(),
            allowed_origins: Vec::new(),
            secure_cookies: false,
            session_hours: 12,
            metrics_token: String::new(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreSettings {
    /// `sqlite://data/focalpoint.db` (embedded default) or `postgres://…`.
    pub url: String,
    /// SQLite only: `normal` survives a killed process (WAL); `full` also survives power loss.
    pub sqlite_synchronous: String,
}

impl Default for StoreSettings {
    fn default() -> Self {
        Self { url: "sqlite://data/focalpoint.db".into(), sqlite_synchronous: "normal".into() }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BusSettings {
    /// Redis URL for fan-out between replicas; empty means in-process only.
    pub redis_url: String,
    /// Prefix of the Redis keys and channels (`{prefix}:events`), so several hub
    /// clusters (or test runs) can share one Redis.
    pub key_prefix: String,
}

impl Default for BusSettings {
    fn default() -> Self {
        Self { redis_url: String::new(), key_prefix: "focalpoint".into() }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NetworkSettings {
    /// The network file (parties, fields, focal points, policies).
    pub file: PathBuf,
}

impl Default for NetworkSettings {
    fn default() -> Self {
        Self { file: PathBuf::from("config/network.toml") }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SmsSettings {
    /// `log` (prints each page) or `twilio`.
    pub gateway: String,
    pub base_url: String,
    pub account_sid: String,
    pub auth_token: String,
    pub from: String,
}

impl Default for SmsSettings {
    fn default() -> Self {
        Self {
            gateway: "log".into(),
            base_url: "https://api.twilio.com".into(),
            account_sid: String::new(),
            auth_token: String::new(),
            from: String::new(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EmailSettings {
    /// `log` (prints each page) or `smtp`.
    pub gateway: String,
    pub host: String,
    pub port: u16,
    /// `none`, `starttls` or `tls`.
    pub tls: String,
    pub username: String,
    pub password: String,
    pub from: String,
}

impl Default for EmailSettings {
    fn default() -> Self {
        Self {
            gateway: "log".into(),
            host: "localhost".into(),
            port: 25,
            tls: "starttls".into(),
            username: String::new(),
            password: String::new(),
            from: "focalpoint@example.org".into(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct WebhookSettings {
    /// Key from which each bot's webhook secret is derived (HMAC-SHA256(key, bot id);
    /// `focalpoint bot secret <id>` prints it). Empty: the hub generates one at first start
    /// and keeps it in the store, so every node of a cluster signs alike.
    pub signing_key: String,
}

/// The outbox dispatcher: how pages leave the hub.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DispatchSettings {
    /// How long a claimed page is held by one worker; a worker that dies mid-send loses
    /// it after this and another sends it again. Longer than the slowest send (SMTP: 60 s).
    pub lease_seconds: u64,
    /// Pages sent at once by one node.
    pub concurrency: u32,
    /// At most this many pages per minute to one phone number, email address or bot URL;
    /// more are delayed, never dropped.
    pub per_destination_per_minute: u32,
}

impl Default for DispatchSettings {
    fn default() -> Self {
        Self { lease_seconds: 90, concurrency: 8, per_destination_per_minute: 6 }
    }
}

/// Size and rate limits on everything that comes from outside.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Largest accepted HTTP request body.
    pub max_body_bytes: usize,
    /// Largest accepted WebSocket message (and frame) from a client.
    pub ws_max_message_bytes: usize,
    /// Events buffered per WebSocket client before it is closed as too slow.
    pub ws_buffer_events: usize,
    /// Seconds between server pings on the WebSocket.
    pub ws_ping_seconds: u64,
    /// Failed sign-ins allowed per account, and per client address, per window.
    pub signin_failures: u32,
    /// The sign-in (and bearer-token) rate-limit window, in seconds.
    pub signin_window_seconds: u64,
    /// Requests with an invalid bearer token allowed per client address per window.
    pub token_failures: u32,
    /// Largest total size of a request's headers (names and values); more is 431.
    pub max_header_bytes: usize,
    /// Largest page of incidents or events one request returns.
    pub max_page: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_body_bytes: 64 * 1024,
            ws_max_message_bytes: 16 * 1024,
            ws_buffer_events: 1024,
            ws_ping_seconds: 20,
            signin_failures: 5,
            signin_window_seconds: 900,
            token_failures: 20,
            max_header_bytes: 16 * 1024,
            max_page: 500,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogSettings {
    /// `text` for people, `json` for log shippers.
    pub format: String,
    /// A tracing filter, e.g. `info,focalpoint=debug`; `RUST_LOG` wins when set.
    pub filter: String,
}

impl Default for LogSettings {
    fn default() -> Self {
        Self { format: "text".into(), filter: "info".into() }
    }
}

/// Keys whose environment values are always text, never parsed as numbers or booleans.
const TEXT_KEYS: &[&str] =
    &["sms.from", "sms.account_sid", "sms.auth_token", "email.username", "email.password", "webhook.signing_key"];

impl Settings {
    /// Loads defaults, then `file` if it exists (it must exist when `required`), then the
    /// environment. `network` overrides `network.file` when given.
    pub fn load(file: &Path, required: bool, network: Option<&Path>) -> anyhow::Result<Settings> {
        if required && !file.exists() {
            anyhow::bail!("configuration file {} does not exist", file.display());
        }
        let mut figment = Figment::from(Serialized::defaults(Settings::default()));
        if file.exists() {
            figment = figment.merge(Toml::file(file));
        }
        figment = figment.merge(Env::prefixed("FOCALPOINT__").split("__"));
        // Figment reads `FOCALPOINT__SMS__FROM=+15005550006` as a number; phone numbers,
        // SIDs and secrets are text, taken verbatim.
        for key in TEXT_KEYS {
            if let Ok(value) = std::env::var(format!("FOCALPOINT__{}", key.replace('.', "__").to_uppercase())) {
                figment = figment.merge(Serialized::default(key, value));
            }
        }
        let mut settings: Settings = figment.extract().map_err(|e| anyhow::anyhow!("configuration: {e}"))?;
        if let Some(network) = network {
            settings.network.file = network.to_path_buf();
        }
        settings.validate()?;
        Ok(settings)
    }

    fn validate(&self) -> anyhow::Result<()> {
        self.listen_addr()?;
        if !(self.store.url.starts_with("sqlite:") || self.store.url.starts_with("postgres")) {
            anyhow::bail!("store.url must start with sqlite:// or postgres://, got {:?}", self.store.url);
        }
        if !self.bus.redis_url.is_empty() && !self.bus.redis_url.starts_with("redis") {
            anyhow::bail!("bus.redis_url must start with redis:// or rediss://, got {:?}", self.bus.redis_url);
        }
        if self.bus.key_prefix.is_empty() || self.bus.key_prefix.contains(char::is_whitespace) {
            anyhow::bail!("bus.key_prefix must be a non-empty word");
        }
        if !matches!(self.store.sqlite_synchronous.as_str(), "normal" | "full") {
            anyhow::bail!("store.sqlite_synchronous must be `normal` or `full`");
        }
        if !matches!(self.sms.gateway.as_str(), "log" | "twilio") {
            anyhow::bail!("sms.gateway must be `log` or `twilio`");
        }
        if !matches!(self.email.gateway.as_str(), "log" | "smtp") {
            anyhow::bail!("email.gateway must be `log` or `smtp`");
        }
        if !matches!(self.email.tls.as_str(), "none" | "starttls" | "tls") {
            anyhow::bail!("email.tls must be `none`, `starttls` or `tls`");
        }
        if !matches!(self.log.format.as_str(), "text" | "json") {
            anyhow::bail!("log.format must be `text` or `json`");
        }
        let d = &self.dispatch;
        if d.lease_seconds == 0 || d.concurrency == 0 || d.concurrency > 256 || d.per_destination_per_minute == 0 {
            anyhow::bail!(
                "dispatch.lease_seconds, concurrency (at most 256) and per_destination_per_minute must be > 0"
            );
        }
        let token = &self.server.metrics_token;
        if !token.is_empty() && (token.len() < 16 || token.len() > 256 || !token.bytes().all(|b| b.is_ascii_graphic()))
        {
            anyhow::bail!("server.metrics_token must be 16 to 256 visible ASCII characters (or empty: no metrics)");
        }
        let l = &self.limits;
        if l.max_body_bytes < 1024 || l.ws_max_message_bytes < 256 || l.ws_buffer_events < 16 {
            anyhow::bail!("limits are too small to be useful");
        }
        if l.max_page == 0 || l.ws_ping_seconds == 0 || l.signin_failures == 0 || l.token_failures == 0 {
            anyhow::bail!("limits.max_page, ws_ping_seconds, signin_failures and token_failures must be > 0");
        }
        if l.max_header_bytes < 4096 {
            anyhow::bail!("limits.max_header_bytes must be at least 4096");
        }
        Ok(())
    }

    pub fn listen_addr(&self) -> anyhow::Result<SocketAddr> {
        self.server.listen.parse().map_err(|_| {
            anyhow::anyhow!("server.listen {:?} is not an address like 127.0.0.1:8080", self.server.listen)
        })
    }

    /// The origins allowed to open a cookie-authenticated WebSocket.
    pub fn allowed_origins(&self) -> Vec<String> {
        let mut origins: Vec<String> =
            self.server.allowed_origins.iter().map(|o| o.trim_end_matches('/').to_string()).collect();
        if let Some(origin) = origin_of(&self.server.public_url) {
            origins.push(origin);
        }
        origins
    }
}

/// `scheme://host[:port]` of a URL, or None if it is not one.
pub fn origin_of(url: &str) -> Option<String> {
    let (scheme, rest) = url.split_once("://")?;
    let host = rest.split('/').next()?;
    if host.is_empty() {
        return None;
    }
    Some(format!("{scheme}://{host}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origin_of_strips_path() {
        assert_eq!(origin_of("https://hub.example.org/x/y").as_deref(), Some("https://hub.example.org"));
        assert_eq!(origin_of("nonsense"), None);
    }

    #[test]
    fn defaults_validate() {
        Settings::default().validate().expect("defaults are valid");
    }
}
