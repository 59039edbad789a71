//! `bot secret <id>`: prints the secret a bot verifies its webhook calls with.

use std::process::ExitCode;

use crate::channels::webhook;
use crate::config::Settings;
use crate::directory::{Directory, Role};

/// Prints the bot's webhook secret (HMAC-SHA256 of the hub's signing key and the bot id)
/// as the last line, so scripts can take it. The hub must use the same store (or the same
/// `webhook.signing_key`) for the secret to match.
pub async fn secret(settings: &Settings, id: &str) -> anyhow::Result<ExitCode> {
    let directory = Directory::load(&settings.network.file).map_err(|e| anyhow::anyhow!("{}", e.report()))?;
    let Some(fp) = directory.focal_point(id) else {
        anyhow::bail!("no focal point {id:?} in {}", settings.network.file.display());
    };
    if !fp.has_role(Role::Bot) {
        anyhow::bail!("{id} is not a bot (role `bot`); only bots get webhook secrets");
    }
    let store = crate::store::open(&settings.store.url, false).await?;
    let key = crate::startup::webhook_signing_key(settings, &store).await?;
    println!(
        "Webhook secret for {} ({}). Verify `{}` = v1=HMAC-SHA256(secret, \"{{{}}}.{{body}}\"):",
        fp.id,
        fp.webhook_url.as_deref().unwrap_or("no webhook_url"),
        webhook::SIGNATURE_HEADER,
        webhook::TIMESTAMP_HEADER
    );
    println!("{}", webhook::derive_secret(&key, &fp.id));
    Ok(ExitCode::SUCCESS)
}
