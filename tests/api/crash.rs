//! Promise 1: an incident answered with 201 survives kill -9. Real processes: the hub
//! binary is started, fed raises, killed with SIGKILL right after the last 201, and
//! restarted on the same file.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

use serde_json::Value;

use crate::helpers::*;

pub struct HubProcess {
    pub child: Child,
    pub base: String,
}

pub fn command(db: &std::path::Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_focalpoint"));
    cmd.env("FOCALPOINT__STORE__URL", format!("sqlite://{}", db.display()))
        .env("FOCALPOINT__SERVER__LISTEN", "127.0.0.1:0")
        .env("FOCALPOINT__NETWORK__FILE", network_file())
        .env("FOCALPOINT__LOG__FILTER", "warn")
        .env("FOCALPOINT_CONFIG", "/nonexistent/focalpoint.toml");
    cmd
}

/// Sets a dashboard password with the CLI (read from standard input).
pub fn set_password(db: &std::path::Path, id: &str, password: &str) {
    use std::io::Write;
    let mut child =
        command(db).args(["passwd", id]).stdin(Stdio::piped()).stdout(Stdio::null()).spawn().expect("cli runs");
    child.stdin.take().expect("stdin").write_all(format!("{password}\n").as_bytes()).expect("written");
    assert!(child.wait().expect("cli ends").success(), "passwd {id} failed");
}

/// Issues a token with the CLI; the token is the last line of its output.
pub fn issue_token(db: &std::path::Path, id: &str) -> String {
    let out = command(db).args(["token", "issue", id]).output().expect("cli runs");
    assert!(out.status.success(), "token issue failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).lines().last().expect("a token line").trim().to_string()
}

/// Starts `focalpoint serve` and waits for the line naming its address.
pub fn start(db: &std::path::Path) -> HubProcess {
    start_on(db, "127.0.0.1:0")
}

/// Starts the hub on a given address (a restart reuses the address it had).
pub fn start_on(db: &std::path::Path, listen: &str) -> HubProcess {
    start_with(db, |c| {
        c.env("FOCALPOINT__SERVER__LISTEN", listen);
    })
}

/// Starts the hub with extra settings applied to its command.
pub fn start_with(db: &std::path::Path, adjust: impl FnOnce(&mut Command)) -> HubProcess {
    let mut cmd = command(db);
    adjust(&mut cmd);
    let mut child = cmd.arg("serve").stdout(Stdio::piped()).stderr(Stdio::inherit()).spawn().expect("hub starts");
    let stdout = child.stdout.take().expect("stdout");
    let mut lines = BufReader::new(stdout).lines();
    let first = lines.next().expect("a first line").expect("readable");
    let base = first.strip_prefix("focalpoint listening on ").expect("the address line").trim().to_string();
    // Keep draining stdout so the hub never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines.by_ref() {});
    HubProcess { child, base }
}

impl Drop for HubProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test]
async fn answered_incidents_survive_kill_9_with_the_chain_intact() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("crash.db");
    let officer = issue_token(&db, "th-duty");
    let auditor = issue_token(&db, "asean-audit");
    let mut hub = start(&db);
    let http = crate::helpers::http();

    // Concurrent raises; record every one answered 201, then kill at once.
    let mut tasks = Vec::new();
    for i in 0..40 {
        let (http, base, officer) = (http.clone(), hub.base.clone(), officer.clone());
        tasks.push(tokio::spawn(async move {
            let mut body = incident("amber");
            body["title"] = serde_json::json!(format!("crash test {i}"));
            let r = http.post(format!("{base}/api/v1/incidents")).bearer_auth(officer).json(&body).send().await.ok()?;
            (r.status() == 201).then_some(())?;
            r.json::<Value>().await.ok()?["id"].as_str().map(String::from)
        }));
    }
    let mut answered = Vec::new();
    for t in tasks {
        if let Some(id) = t.await.expect("task") {
            answered.push(id);
        }
    }
    hub.child.kill().expect("SIGKILL"); // std's kill() is SIGKILL on Unix
    hub.child.wait().expect("reaped");
    assert_eq!(answered.len(), 40);

    let hub = start(&db);
    for id in &answered {
        let r =
            http.get(format!("{}/api/v1/incidents/{id}", hub.base)).bearer_auth(&officer).send().await.expect("sent");
        assert_eq!(r.status(), 200, "incident {id} answered 201 before the kill is there after it");
    }
    let report: Value = http
        .get(format!("{}/api/v1/audit/verify", hub.base))
        .bearer_auth(&auditor)
        .send()
        .await
        .expect("sent")
        .json()
        .await
        .expect("json");
    assert_eq!(report["intact"], true, "{report}");
    // Each raise appended its `incident.raised` and the step-0 `page` events.
    assert!(report["report"]["events"].as_u64() >= Some(answered.len() as u64 * 2), "{report}");
}
