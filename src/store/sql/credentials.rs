//! Tokens, passwords and sessions (hashes only), inbound message ids and the hub's own
//! secrets.

use chrono::{DateTime, Utc};

use super::Conn;
use crate::store::{Result, TokenInfo};

/// How long an ended session's row is kept.
const PURGE_AFTER_MS: i64 = 24 * 3600 * 1000;

fn now_ms() -> i64 {
    Utc::now().timestamp_millis()
}

pub async fn insert_token(
    c: &mut dyn Conn,
    hash: &[u8],
    focal_point: &str,
    label: &str,
    expires_at: Option<DateTime<Utc>>,
) -> Result<()> {
    c.execute(
        "INSERT INTO api_tokens (hash, focal_point, label, created_at, expires_at) VALUES ($1, $2, $3, $4, $5)",
        &[
            hash.into(),
            focal_point.into(),
            label.into(),
            now_ms().into(),
            expires_at.map(|t| t.timestamp_millis()).into(),
        ],
    )
    .await?;
    Ok(())
}

pub async fn token_owner(c: &mut dyn Conn, hash: &[u8], now: DateTime<Utc>) -> Result<Option<String>> {
    let row = c
        .query_opt(
            "SELECT focal_point FROM api_tokens
             WHERE hash = $1 AND revoked_at IS NULL AND (expires_at IS NULL OR expires_at > $2)",
            &[hash.into(), now.timestamp_millis().into()],
        )
        .await?;
    row.map(|r| r.text("focal_point")).transpose()
}

pub async fn touch_token(c: &mut dyn Conn, hash: &[u8], at: DateTime<Utc>) -> Result<()> {
    c.execute("UPDATE api_tokens SET last_used_at = $1 WHERE hash = $2", &[at.timestamp_millis().into(), hash.into()])
        .await?;
    Ok(())
}

pub async fn tokens_of(c: &mut dyn Conn, focal_point: &str) -> Result<Vec<TokenInfo>> {
    let rows = c
        .query(
            "SELECT hash, label, created_at, last_used_at, expires_at, revoked_at FROM api_tokens
             WHERE focal_point = $1 ORDER BY created_at, hash",
            &[focal_point.into()],
        )
        .await?;
    let time = |ms: Option<i64>| ms.and_then(DateTime::from_timestamp_millis);
    rows.iter()
        .map(|r| {
            let hash = r.blob("hash")?;
            Ok(TokenInfo {
                fingerprint: hex::encode(&hash[..hash.len().min(4)]),
                label: r.text("label")?,
                created_at: time(Some(r.i64("created_at")?)).unwrap_or_default(),
                last_used_at: time(r.opt_i64("last_used_at")?),
                expires_at: time(r.opt_i64("expires_at")?),
                revoked_at: time(r.opt_i64("revoked_at")?),
            })
        })
        .collect()
}

pub async fn revoke_tokens(c: &mut dyn Conn, focal_point: &str) -> Result<u64> {
    c.execute(
        "UPDATE api_tokens SET revoked_at = $1 WHERE focal_point = $2 AND revoked_at IS NULL",
        &[now_ms().into(), focal_point.into()],
    )
    .await
}

pub async fn set_password(c: &mut dyn Conn, focal_point: &str, phc: &str) -> Result<()> {
    c.execute(
        "INSERT INTO passwords (focal_point, phc, updated_at) VALUES ($1, $2, $3)
         ON CONFLICT (focal_point) DO UPDATE SET phc = excluded.phc, updated_at = excluded.updated_at",
        &[focal_point.into(), phc.into(), now_ms().into()],
    )
    .await?;
    // A new password ends every session signed in with the old one (ended, not deleted:
    // see `delete_session`).
    c.execute(
        "UPDATE sessions SET ended_at = $1 WHERE focal_point = $2 AND ended_at IS NULL",
        &[now_ms().into(), focal_point.into()],
    )
    .await?;
    Ok(())
}

pub async fn password_hash(c: &mut dyn Conn, focal_point: &str) -> Result<Option<String>> {
    let row = c.query_opt("SELECT phc FROM passwords WHERE focal_point = $1", &[focal_point.into()]).await?;
    row.map(|r| r.text("phc")).transpose()
}

pub async fn insert_session(c: &mut dyn Conn, hash: &[u8], focal_point: &str, expires_at: DateTime<Utc>) -> Result<()> {
    let now = now_ms();
    // Ended sessions stay a day, long after every replica's stream watch has seen them.
    c.execute("DELETE FROM sessions WHERE expires_at < $1 OR ended_at < $1", &[(now - PURGE_AFTER_MS).into()]).await?;
    c.execute(
        "INSERT INTO sessions (hash, focal_point, created_at, expires_at) VALUES ($1, $2, $3, $4)",
        &[hash.into(), focal_point.into(), now.into(), expires_at.timestamp_millis().into()],
    )
    .await?;
    Ok(())
}

pub async fn session_owner(c: &mut dyn Conn, hash: &[u8], now: DateTime<Utc>) -> Result<Option<String>> {
    let row = c
        .query_opt(
            "SELECT focal_point FROM sessions WHERE hash = $1 AND expires_at > $2 AND ended_at IS NULL",
            &[hash.into(), now.timestamp_millis().into()],
        )
        .await?;
    row.map(|r| r.text("focal_point")).transpose()
}

/// Ends a session now. The row stays (until purged a day later) so that every replica's
/// stream watch sees the session end ([`ended`]).
pub async fn delete_session(c: &mut dyn Conn, hash: &[u8]) -> Result<()> {
    c.execute(
        "UPDATE sessions SET ended_at = $1 WHERE hash = $2 AND ended_at IS NULL",
        &[now_ms().into(), hash.into()],
    )
    .await?;
    Ok(())
}

pub async fn ended(c: &mut dyn Conn, since: DateTime<Utc>, now: DateTime<Utc>) -> Result<Vec<Vec<u8>>> {
    let (since, now) = (since.timestamp_millis(), now.timestamp_millis());
    let params = [since.into(), now.into()];
    let mut hashes = Vec::new();
    for sql in [
        "SELECT hash FROM api_tokens WHERE (revoked_at > $1 AND revoked_at <= $2)
            OR (revoked_at IS NULL AND expires_at > $1 AND expires_at <= $2)",
        "SELECT hash FROM sessions WHERE (ended_at > $1 AND ended_at <= $2)
            OR (ended_at IS NULL AND expires_at > $1 AND expires_at <= $2)",
    ] {
        for row in c.query(sql, &params).await? {
            hashes.push(row.blob("hash")?);
        }
    }
    Ok(hashes)
}

pub async fn count(c: &mut dyn Conn) -> Result<u64> {
    let row = c
        .query_one(
            "SELECT (SELECT COUNT(*) FROM api_tokens WHERE revoked_at IS NULL) + (SELECT COUNT(*) FROM passwords) AS n",
            &[],
        )
        .await?;
    Ok(row.i64("n")? as u64)
}

/// True the first time `sid` is recorded.
pub async fn first_inbound(c: &mut dyn Conn, sid: &str, now: DateTime<Utc>) -> Result<bool> {
    let n = c
        .execute(
            "INSERT INTO inbound_messages (sid, received_at) VALUES ($1, $2) ON CONFLICT DO NOTHING",
            &[sid.into(), now.timestamp_millis().into()],
        )
        .await?;
    Ok(n == 1)
}

/// The stored secret `name`, storing `proposed` if there is none yet.
pub async fn instance_secret(c: &mut dyn Conn, name: &str, proposed: &str) -> Result<String> {
    c.execute(
        "INSERT INTO instance_secrets (name, value, created_at) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
        &[name.into(), proposed.into(), now_ms().into()],
    )
    .await?;
    c.query_one("SELECT value FROM instance_secrets WHERE name = $1", &[name.into()]).await?.text("value")
}
