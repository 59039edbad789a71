//! `token issue`, `token revoke` and `passwd`: credentials written straight to the store.

use std::io::{BufRead, IsTerminal};
use std::process::ExitCode;

use crate::auth::{password, secret};
use crate::config::Settings;
use crate::directory::Directory;

fn directory(settings: &Settings) -> anyhow::Result<Directory> {
    Directory::load(&settings.network.file).map_err(|e| anyhow::anyhow!("{}", e.report()))
}

pub async fn issue_token(settings: &Settings, id: &str, label: &str) -> anyhow::Result<ExitCode> {
    let directory = directory(settings)?;
    let Some(fp) = directory.focal_point(id) else {
        anyhow::bail!("no focal point {id:?} in {}", settings.network.file.display());
    };
    if label.len() > 200 {
        anyhow::bail!("--label is longer than 200 characters");
    }
    let store = crate::store::open(&settings.store.url, false).await?;
    let token = secret::generate();
    store.insert_token(&secret::hash(&token), &fp.id, label).await?;
    println!("Token for {} ({}, {}). It is shown once; store it safely:", fp.id, fp.name, fp.party);
    println!("{token}");
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
