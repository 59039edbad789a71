//! Wiring: opens the store and the directory, starts the feed, binds the listener and
//! serves until told to stop. Tests use [`Application`] directly on port 0.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::api::{self, AppInner, AppState};
use crate::auth::Authenticator;
use crate::auth::ended::CredentialWatch;
use crate::auth::limiter::{SignInLimiter, TokenLimiter};
use crate::auth::recent::RecentTokens;
use crate::bus::Bus;
use crate::channels::{Gateways, SecretLookup, webhook};
use crate::clock::{Clock, SystemClock};
use crate::commands::Hub;
use crate::config::Settings;
use crate::directory::{Directory, Role};
use crate::domain::cursor::{self, Cursors};
use crate::engine::dispatch::{DispatchConfig, Dispatcher};
use crate::engine::escalation::EscalationEngine;
use crate::feed::Feed;
use crate::store::Store;
use crate::telemetry;

/// A hub ready to serve: bound, wired, not yet accepting.
pub struct Application {
    listener: TcpListener,
    state: AppState,
    shutdown: watch::Sender<bool>,
}

impl Application {
    pub async fn build(settings: Settings) -> anyhow::Result<Application> {
        crate::crypto::install();
        let directory =
            Arc::new(Directory::load(&settings.network.file).map_err(|e| anyhow::anyhow!("{}", e.report()))?);
        let store = crate::store::open(&settings.store.url, settings.store.sqlite_synchronous == "full").await?;
        Self::build_with(settings, directory, store, Arc::new(SystemClock)).await
    }

    /// Builds from given parts: tests pass their own network and a manual clock.
    pub async fn build_with(
        settings: Settings,
        directory: Arc<Directory>,
        store: Arc<dyn Store>,
        clock: Arc<dyn Clock>,
    ) -> anyhow::Result<Application> {
        crate::crypto::install();
        let addr = settings.listen_addr()?;
        let listener = TcpListener::bind(addr).await.with_context(|| format!("binding {addr}"))?;
        // Redis between replicas when configured; a PostgreSQL store is shared, so
        // without Redis the feed polls it.
        let shared_store = settings.store.url.starts_with("postgres");
        let bus: Arc<dyn Bus> = crate::bus::open(&settings.bus, shared_store, store.head_seq().await?)?;
        // The store announces every commit that appended events: the one place that
        // publishes to the bus.
        let announce = bus.clone();
        store.on_commit(Arc::new(move |seq| announce.publish(seq)));
        let (shutdown, shutdown_rx) = watch::channel(false);
        let cursor_secret = cursor_secret(&store).await?;
        let cursors = Cursors::new(&cursor_secret);
        let feed = Feed::start(
            store.clone(),
            bus.clone(),
            settings.limits.ws_buffer_events,
            cursors.clone(),
            shutdown_rx.clone(),
        )
        .await?;
        let engine = Arc::new(EscalationEngine {
            store: store.clone(),
            directory: directory.clone(),
            bus: bus.clone(),
            clock: clock.clone(),
            owner: engine_owner(),
            gauge_at: Default::default(),
        });
        engine.clone().spawn(shutdown_rx.clone());
        let recent_tokens = RecentTokens::default();
        let credentials = CredentialWatch::start(store.clone(), recent_tokens.clone(), shutdown_rx.clone());
        // Pages leave through the outbox dispatcher (SMS, email, bot webhooks). Built here,
        // inside the runtime: the SMTP pool starts a task.
        let gateways = Gateways::from_settings(
            &settings,
            directory.clone(),
            bot_secrets(&settings, &store, directory.clone()).await?,
        )?;
        let dispatch = DispatchConfig {
            owner: engine.owner.clone(),
            settings: settings.dispatch.clone(),
            public_url: settings.server.public_url.clone(),
            sms_reply_hint: settings.sms.gateway == "twilio",
            page_ids: Cursors::page_ids(&cursor_secret),
        };
        Dispatcher::new(store.clone(), directory.clone(), bus.clone(), clock.clone(), gateways, dispatch)
            .spawn(shutdown_rx.clone());
        let hub = Hub::new(store.clone(), directory.clone(), bus, clock, engine, settings.limits.clone(), cursors);
        let limits = &settings.limits;
        let state = AppState::new(AppInner {
            hub,
            auth: Authenticator::new(store, directory, recent_tokens),
            feed,
            credentials,
            limiter: SignInLimiter::new(limits.signin_failures, Duration::from_secs(limits.signin_window_seconds)),
            token_limiter: TokenLimiter::new(limits.token_failures, Duration::from_secs(limits.signin_window_seconds)),
            allowed_origins: settings.allowed_origins(),
            metrics: telemetry::metrics_handle(),
            settings,
            shutdown: shutdown_rx,
        });
        Ok(Application { listener, state, shutdown })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener.local_addr().unwrap_or_else(|_| SocketAddr::from(([127, 0, 0, 1], 0)))
    }

    /// The store this hub writes to: for the CLI's first-run hint, tests and benchmarks.
    pub fn store(&self) -> Arc<dyn Store> {
        self.state.auth.store.clone()
    }

    pub fn hub(&self) -> Hub {
        self.state.hub.clone()
    }

    /// Serves until `stop` completes, then closes streams with a reason and drains.
    pub async fn run_until(self, stop: impl std::future::Future<Output = ()> + Send + 'static) -> anyhow::Result<()> {
        let Application { listener, state, shutdown } = self;
        let router = api::router(state);
        let shutdown_signal = async move {
            stop.await;
            tracing::info!("shutting down");
            let _ = shutdown.send(true);
        };
        // Small frames (acks, events) must not wait for Nagle's algorithm.
        let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
            let _ = tcp.set_nodelay(true);
        });
        axum::serve(listener, router.into_make_service_with_connect_info::<SocketAddr>())
            .with_graceful_shutdown(shutdown_signal)
            .await
            .context("serving")?;
        Ok(())
    }
}

/// The key bot webhook secrets derive from: `webhook.signing_key`, or else one generated
/// at first start and kept in the store (so every node and the CLI agree).
pub async fn webhook_signing_key(settings: &Settings, store: &Arc<dyn Store>) -> anyhow::Result<String> {
    if !settings.webhook.signing_key.is_empty() {
        return Ok(settings.webhook.signing_key.clone());
    }
    store.instance_secret("webhook.signing_key", &crate::auth::secret::generate()).await
}

/// The key viewers' cursors are sealed with: generated at first start and kept in the
/// store, so every replica seals alike and cursors survive restarts.
pub async fn cursors(store: &Arc<dyn Store>) -> anyhow::Result<Cursors> {
    Ok(Cursors::new(&cursor_secret(store).await?))
}

async fn cursor_secret(store: &Arc<dyn Store>) -> anyhow::Result<String> {
    store.instance_secret(cursor::KEY_NAME, &crate::auth::secret::generate()).await
}

/// Looks up each bot's webhook secret, HMAC-SHA256(signing key, bot id); None for ids
/// that are not bots of the directory.
async fn bot_secrets(
    settings: &Settings,
    store: &Arc<dyn Store>,
    directory: Arc<Directory>,
) -> anyhow::Result<SecretLookup> {
    let key = webhook_signing_key(settings, store).await?;
    Ok(Arc::new(move |id: &str| {
        let is_bot = directory.focal_point(id).is_some_and(|f| f.has_role(Role::Bot));
        is_bot.then(|| webhook::derive_secret(&key, id))
    }))
}

/// A name for this process's engine in leases: host, pid and a random suffix, so two
/// processes (or two hubs in one test process) never share one.
fn engine_owner() -> String {
    let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "node".into());
    format!("{host}-{}-{}", std::process::id(), &crate::auth::secret::generate()[3..11])
}

/// Resolves on SIGINT or SIGTERM.
pub async fn stop_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! { _ = ctrl_c => {}, _ = term => {} }
}
