//! `token issue`, `token list`, `token revoke` and `passwd`: credentials written straight
//! to the store.

use std::io::{BufRead, IsTerminal};
use std::process::ExitCode;

use chrono::{DateTime, TimeDelta, Utc};

use crate::auth::{password, secret};
use crate::config::Settings;
use crate::directory::Directory;

fn directory(settings: &Settings) -> anyhow::Result<Directory> {
    Directory::load(&settings.network.file).map_err(|e| anyhow::anyhow!("{}", e.report()))
}

/// Longest validity `--expires` accepts.
const MAX_VALIDITY_DAYS: i64 = 3650;

/// `90d` or `12h` → the duration.
pub fn parse_validity(s: &str) -> anyhow::Result<TimeDelta> {
    let usage = || anyhow::anyhow!("--expires takes days or hours, e.g. 90d or 12h (got {s:?})");
    let s = s.trim();
    let unit = s.chars().last().ok_or_else(usage)?;
    let n: i64 = s[..s.len() - unit.len_utf8()].parse().map_err(|_| usage())?;
    let validity = match unit {
        'd' => TimeDelta::try_days(n),
        'h' => TimeDelta::try_hours(n),
        _ => None,
    }
    .ok_or_else(usage)?;
    if validity <= TimeDelta::zero() || validity > TimeDelta::days(MAX_VALIDITY_DAYS) {
        anyhow::bail!("--expires must be more than zero and at most {MAX_VALIDITY_DAYS} days");
    }
    Ok(validity)
}

pub async fn issue_token(
    settings: &Settings,
    id: &str,
    label: &str,
    expires: Option<&str>,
) -> anyhow::Result<ExitCode> {
    let directory = directory(settings)?;
    let Some(fp) = directory.focal_point(id) else {
        anyhow::bail!("no focal point {id:?} in {}", settings.network.file.display());
    };
    if label.len() > 200 {
        anyhow::bail!("--label is longer than 200 characters");
    }
    let expires_at = expires.map(parse_validity).transpose()?.map(|v| Utc::now() + v);
    let store = crate::store::open(&settings.store.url, false).await?;
    let token = secret::generate();
    store.insert_token(&secret::hash(&token), &fp.id, label, expires_at).await?;
    let until = expires_at.map_or("until revoked".to_string(), |t| format!("until {}", t.format("%Y-%m-%d %H:%M UTC")));
    println!("Token for {} ({}, {}), valid {until}. It is shown once; store it safely:", fp.id, fp.name, fp.party);
    println!("{token}");
    Ok(ExitCode::SUCCESS)
}

pub async fn list(settings: &Settings, id: &str) -> anyhow::Result<ExitCode> {
    let store = crate::store::open(&settings.store.url, false).await?;
    let tokens = store.tokens_of(id).await?;
    if tokens.is_empty() {
        println!("no tokens for {id}");
        return Ok(ExitCode::SUCCESS);
    }
    let when = |t: Option<DateTime<Utc>>| t.map_or("-".to_string(), |t| t.format("%Y-%m-%d %H:%M").to_string());
    let now = Utc::now();
    println!("{:<10} {:<8} {:<17} {:<17} {:<17} label", "token", "state", "created (UTC)", "last used", "expires");
    for t in tokens {
        let state = if t.revoked_at.is_some() {
            "revoked"
        } else if t.expires_at.is_some_and(|e| e <= now) {
            "expired"
        } else {
            "active"
        };
        println!(
            "{:<10} {:<8} {:<17} {:<17} {:<17} {}",
            t.fingerprint,
            state,
            when(Some(t.created_at)),
            when(t.last_used_at),
            when(t.expires_at),
            t.label
        );
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn revoke(settings: &Settings, id: &str) -> anyhow::Result<ExitCode> {
    let store = crate::store::open(&settings.store.url, false).await?;
    let n = store.revoke_tokens(id).await?;
    println!("revoked {n} token(s) of {id}");
    Ok(ExitCode::SUCCESS)
}

/// Turns terminal echo off while a password is typed (no-op when not a terminal).
struct NoEcho(bool);

impl NoEcho {
    fn new() -> NoEcho {
        let tty = std::io::stdin().is_terminal();
        if tty {
            let _ = std::process::Command::new("stty").arg("-echo").status();
        }
        NoEcho(tty)
    }
}

impl Drop for NoEcho {
    fn drop(&mut self) {
        if self.0 {
            let _ = std::process::Command::new("stty").arg("echo").status();
            eprintln!();
        }
    }
}

pub async fn passwd(settings: &Settings, id: &str) -> anyhow::Result<ExitCode> {
    let directory = directory(settings)?;
    if directory.focal_point(id).is_none() {
        anyhow::bail!("no focal point {id:?} in {}", settings.network.file.display());
    }
    eprint!("New password for {id} (at least {} characters): ", password::MIN_LENGTH);
    let mut line = String::new();
    {
        let _echo = NoEcho::new();
        std::io::stdin().lock().read_line(&mut line)?;
    }
    let pw = line.trim_end_matches(['\n', '\r']);
    if let Err(e) = password::check_new(pw) {
        anyhow::bail!(e);
    }
    let phc = password::hash(pw)?;
    let store = crate::store::open(&settings.store.url, false).await?;
    store.set_password(id, &phc).await?;
    println!("password set for {id}");
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validity_in_days_or_hours() {
        assert_eq!(parse_validity("90d").ok(), Some(TimeDelta::days(90)));
        assert_eq!(parse_validity("12h").ok(), Some(TimeDelta::hours(12)));
        for bad in ["", "d", "90", "0d", "-1d", "1w", "99999d", "1.5d", "9223372036854775807d", "9é"] {
            assert!(parse_validity(bad).is_err(), "{bad:?}");
        }
    }
}
