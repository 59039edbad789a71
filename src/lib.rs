//! focalpoint — the alerting hub of the ASEAN–China emergency focal-point network.
//!
//! A duty officer raises an incident; the hub stores it, fans it out to the focal points of
//! every addressed party, tracks per-party acknowledgement and escalates on timers. The
//! design (domain, promises, public contract) is `DESIGN.md` in the shared folder; the
//! README is for users and operators.
//!
//! # Map of the crate
//!
//! Dependencies point inward: `api`, `cli` → `commands` → `domain`; only `store` speaks
//! SQL and only `bus` and `store` talk to servers.
//!
//! | module | responsibility |
//! | --- | --- |
//! | [`config`] | layered configuration: `config/focalpoint.toml` + `FOCALPOINT__SECTION__KEY` |
//! | [`telemetry`] | tracing subscriber and the Prometheus recorder |
//! | [`directory`] | the network file: parties, fields, focal points, escalation policies |
//! | [`domain`] | incidents, events, principals, the one visibility function (TLP), admission rules and the pure escalation planner |
//! | [`commands`] | what a principal may do: raise, acknowledge, note, resolve, cancel, escalate |
//! | [`clock`] | the engine's notion of now: system clock, or a manual one in scenario tests |
//! | [`engine`] | the escalation engine (persisted timers, steps, unanswered alarms) and the outbox dispatcher |
//! | [`store`] | traits by concern (event log, timers, outbox, ack links, credentials, secrets, inbound ids), one SQL core, SQLite (embedded, one writer thread) and PostgreSQL (cluster) backends |
//! | [`bus`] | "new events up to seq N" between the store and the live feeds: in-process or Redis |
//! | [`channels`] | gateways that send pages (SMS, email, bot webhooks), their text per language and TLP, inbound-hook helpers |
//! | [`feed`] | per-node fan-out of new events to WebSocket clients, filtered per viewer |
//! | [`auth`] | tokens, passwords, sessions, sign-in rate limiting |
//! | [`api`] | the HTTP/WebSocket contract (`/api/v1/…`, health, metrics, dashboard) |
//! | [`cli`] | the `focalpoint` subcommands |
//! | [`crypto`] | the process-wide TLS provider, installed once |
//! | [`startup`] | wiring: opens the store, starts the background tasks, serves |

pub mod api;
pub mod auth;
pub mod bus;
pub mod channels;
pub mod cli;
pub mod clock;
pub mod commands;
pub mod config;
pub mod crypto;
pub mod directory;
pub mod domain;
pub mod engine;
pub mod feed;
pub mod startup;
pub mod store;
pub mod telemetry;
