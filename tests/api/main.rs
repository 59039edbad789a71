//! The integration test suite: one binary, so the crate links once. Each test starts its
//! own hub on port 0 on a fresh database (`TestApp::builder()`, SQLite unless a backend is
//! given) and drives it over real HTTP and WebSocket. `store::` holds the store's contract
//! suites; they, the scenario, dispatch and hooks tests run on SQLite and on PostgreSQL.

#[macro_use]
mod helpers;

mod auth;
mod channels;
mod cluster;
mod crash;
mod dashboard;
mod dispatch;
mod dispatch_crash;
mod hooks;
mod incidents;
mod restart;
mod scenario;
mod security;
mod servers;
mod smtp_server;
mod store;
mod stream;
mod stream_credentials;
mod twilio_fake;
mod validation;
mod visibility;
