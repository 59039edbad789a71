//! Tokens, passwords and sessions on PostgreSQL — stored as hashes only.

use chrono::{DateTime, Utc};
use sqlx::PgPool;

use crate::store::Result;

pub async fn insert_token(pool: &PgPool, hash: &[u8], focal_point: &str, label: &str) -> Result<()> {
    sqlx::query("INSERT INTO api_tokens (hash, focal_point, label, created_at) VALUES ($1, $2, $3, $4)")
        .bind(hash)
        .bind(focal_point)
        .bind(label)
        .bind(Utc::now().timestamp_millis())
        .execute(pool)
        .await?;
    Ok(())
}

pub async fn token_owner(pool: &PgPool, hash: &[u8]) -> Result<Option<String>> {
    Ok(sqlx::query_scalar("SELECT focal_point FROM api_tokens WHERE hash = $1 AND revoked_at IS NULL")
        .bind(hash)
        .fetch_optional(pool)
        .await?)
}

pub async fn revoke_tokens(pool: &PgPool, focal_point: &str) -> Result<u64> {
    let done = sqlx::query("UPDATE api_tokens SET revoked_at = $1 WHERE focal_point = $2 AND revoked_at IS NULL")
        .bind(Utc::now().timestamp_millis())
        .bind(focal_point)
        .execute(pool)
        .await?;
    Ok(done.rows_affected())
}

pub async fn set_password(pool: &PgPool, focal_point: &str, phc: &str) -> Result<()> {
    sqlx::query(
        "INSERT INTO passwords (focal_point, phc, updated_at) VALUES ($1, $2, $3)
         ON CONFLICT (focal_point) DO UPDATE SET phc = excluded.phc, updated_at = excluded.updated_at",
    )
    .bind(focal_point)
    .bind(phc)
    .bind(Utc::now().timestamp_millis())
    .execute(pool)
    .await?;
    // A new password ends every session signed in with the old one.
    sqlx::query("DELETE FROM sessions WHERE focal_point = $1").bind(focal_point).execute(pool).await?;
    Ok(())
}

pub async fn password_hash(pool: &PgPool, focal_point: &str) -> Result<Option<String>> {
    Ok(sqlx::query_scalar("SELECT phc FROM passwords WHERE focal_point = $1")
        .bind(focal_point)
        .fetch_optional(pool)
        .await?)
}

pub async fn insert_session(pool: &PgPool, hash: &[u8], focal_point: &str, expires_at: DateTime<Utc>) -> Result<()> {
    let now = Utc::now().timestamp_millis();
    sqlx::query("DELETE FROM sessions WHERE expires_at < $1").bind(now).execute(pool).await?;
    sqlx::query("INSERT INTO sessions (hash, focal_point, created_at, expires_at) VALUES ($1, $2, $3, $4)")
        .bind(hash)
        .bind(focal_point)
        .bind(now)
        .bind(expires_at.timestamp_millis())
        .execute(pool)
        .await?;
    Ok(())
}

pub async fn session_owner(pool: &PgPool, hash: &[u8], now: DateTime<Utc>) -> Result<Option<String>> {
    Ok(sqlx::query_scalar("SELECT focal_point FROM sessions WHERE hash = $1 AND expires_at > $2")
        .bind(hash)
        .bind(now.timestamp_millis())
        .fetch_optional(pool)
        .await?)
}

pub async fn delete_session(pool: &PgPool, hash: &[u8]) -> Result<()> {
    sqlx::query("DELETE FROM sessions WHERE hash = $1").bind(hash).execute(pool).await?;
    Ok(())
}

pub async fn count(pool: &PgPool) -> Result<u64> {
    let n: i64 = sqlx::query_scalar(
        "SELECT (SELECT COUNT(*) FROM api_tokens WHERE revoked_at IS NULL) + (SELECT COUNT(*) FROM passwords)",
    )
    .fetch_one(pool)
    .await?;
    Ok(n as u64)
}
