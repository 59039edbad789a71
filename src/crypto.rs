//! Process-wide TLS set-up. Kept apart from `startup` so that channels and the CLI can
//! install it without depending on the wiring that depends on them.

/// Installs the ring provider for rustls once per process; building a TLS client without
/// it panics. Later calls are no-ops.
pub fn install() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}
