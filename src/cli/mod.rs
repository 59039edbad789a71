//! The `focalpoint` command line: `serve`, `network check`, credentials, and the officer's
//! client commands (`raise`, `watch`, `ack`).

mod bench;
mod bot;
mod client;
mod credentials;
mod watch;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

use crate::config::Settings;

#[derive(Parser)]
#[command(name = "focalpoint", version, about = "Alerting hub of the ASEAN–China emergency focal-point network")]
pub struct Cli {
    /// Hub configuration file.
    #[arg(long, global = true, default_value = "config/focalpoint.toml", env = "FOCALPOINT_CONFIG")]
    config: PathBuf,
    /// Network file (parties, fields, focal points, policies); overrides `network.file`.
    #[arg(long, global = true, env = "FOCALPOINT_NETWORK")]
    network: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the hub.
    Serve,
    /// Work with network files.
    Network {
        #[command(subcommand)]
        command: NetworkCommand,
    },
    /// Issue or revoke API tokens.
    Token {
        #[command(subcommand)]
        command: TokenCommand,
    },
    /// Bot principals: print a bot's webhook secret.
    Bot {
        #[command(subcommand)]
        command: BotCommand,
    },
    /// Set a focal point's dashboard password (read from standard input).
    Passwd { id: String },
    /// Raise an incident on a running hub.
    Raise(client::RaiseArgs),
    /// Tail a hub's live stream in the terminal.
    Watch(watch::WatchArgs),
    /// Acknowledge an incident for your party.
    Ack(client::AckArgs),
    /// Load-test a running hub: fan-out latency, acks, raise throughput.
    Bench(bench::BenchArgs),
}

#[derive(Subcommand)]
enum NetworkCommand {
    /// Validate a network file and print every problem with its line.
    Check { file: Option<PathBuf> },
}

#[derive(Subcommand)]
enum TokenCommand {
    /// Print a new token for a focal point (the token is the last line of output).
    Issue {
        id: String,
        /// A note stored with the token, e.g. where it is used.
        #[arg(long, default_value = "cli")]
        label: String,
        /// How long the token is valid: days or hours, e.g. `90d`, `12h`. Without it the
        /// token is valid until revoked.
        #[arg(long)]
        expires: Option<String>,
    },
    /// List a focal point's tokens: label, created, last used, expiry, state (never the token).
    List { id: String },
    /// Revoke every token of a focal point.
    Revoke { id: String },
}

#[derive(Subcommand)]
enum BotCommand {
    /// Print the secret a bot verifies its webhook calls with (the last line of output).
    Secret { id: String },
}

/// Where the client commands find the hub.
#[derive(Args, Clone)]
pub struct Remote {
    /// The hub's URL.
    #[arg(long, env = "FOCALPOINT_URL", default_value = "http://127.0.0.1:8080")]
    url: String,
    /// An API token from `focalpoint token issue`.
    #[arg(long, env = "FOCALPOINT_TOKEN", hide_env_values = true)]
    token: String,
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn settings(cli: &Cli) -> anyhow::Result<Settings> {
    let explicit = std::env::args().any(|a| a == "--config" || a.starts_with("--config="));
    Settings::load(&cli.config, explicit, cli.network.as_deref())
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    crate::crypto::install();
    match &cli.command {
        Command::Serve => serve(settings(&cli)?).await,
        Command::Network { command: NetworkCommand::Check { file } } => {
            let file = match file {
                Some(f) => f.clone(),
                None => settings(&cli)?.network.file,
            };
            match crate::directory::check_file(&file) {
                Ok(summary) => {
                    println!("{summary}");
                    Ok(ExitCode::SUCCESS)
                }
                Err(e) => {
                    eprintln!("{}", e.report());
                    Ok(ExitCode::FAILURE)
                }
            }
        }
        Command::Token { command: TokenCommand::Issue { id, label, expires } } => {
            credentials::issue_token(&settings(&cli)?, id, label, expires.as_deref()).await
        }
        Command::Token { command: TokenCommand::Revoke { id } } => credentials::revoke(&settings(&cli)?, id).await,
        Command::Token { command: TokenCommand::List { id } } => credentials::list(&settings(&cli)?, id).await,
        Command::Bot { command: BotCommand::Secret { id } } => bot::secret(&settings(&cli)?, id).await,
        Command::Passwd { id } => credentials::passwd(&settings(&cli)?, id).await,
        Command::Raise(args) => client::raise(args).await,
        Command::Watch(args) => watch::watch(args).await,
        Command::Ack(args) => client::ack(args).await,
        Command::Bench(args) => bench::bench(args).await,
    }
}

async fn serve(settings: Settings) -> anyhow::Result<ExitCode> {
    crate::telemetry::init_logging(&settings.log);
    let app = crate::startup::Application::build(settings.clone()).await?;
    let addr = app.local_addr();
    let hub = app.hub();
    // The first line on stdout names the address, so scripts and tests can find a port-0 hub.
    println!("focalpoint listening on http://{addr}");
    tracing::info!(%addr, store = %settings.store.url, network = %settings.network.file.display(),
        parties = hub.directory().parties().len(), focal_points = hub.directory().focal_points().len(), "hub started");
    if settings.server.metrics_token.is_empty() {
        tracing::info!("/metrics is off: set server.metrics_token (FOCALPOINT__SERVER__METRICS_TOKEN) to scrape it");
    }
    if app.store().credential_count().await? == 0 {
        println!(
            "No credentials yet. Give people and scripts access with, for example:\n  \
             focalpoint token issue th-duty      # prints an API token for Thailand's duty officer\n  \
             focalpoint passwd th-drugs          # sets a dashboard password (read from standard input)\n\
             then open http://{addr}/ or see the README's five-minute tour."
        );
    }
    app.run_until(crate::startup::stop_signal()).await?;
    Ok(ExitCode::SUCCESS)
}
