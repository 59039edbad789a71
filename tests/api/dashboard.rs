//! The dashboard in a real browser: starts the hub binary, sets passwords with the CLI,
//! and runs `tests/browser/dashboard.test.mjs` (playwright-core driving Debian's
//! chromium). The script asks for a hub restart through a command file; this harness
//! kills the hub with SIGKILL, restarts it on the same address and store, raises a new
//! incident while the browsers are reconnecting, and lets the script check that they
//! catch up with no missed event.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::crash::{HubProcess, issue_token, set_password, start, start_on};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Fails clearly when the browser or playwright-core is missing (tests/run installs them).
fn prerequisites() -> String {
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    assert!(
        Path::new(&chromium).exists(),
        "the dashboard test needs Chromium at {chromium}: run tests/run, or `apt-get install chromium`"
    );
    assert!(
        repo().join("tests/browser/node_modules/playwright-core").exists(),
        "the dashboard test needs playwright-core: run tests/run, or `cd tests/browser && npm ci`"
    );
    chromium
}

async fn raise_for_restart(base: &str, token: &str) -> String {
    let body = json!({
        "title": "Second consignment after restart", "description": "Raised while the dashboards reconnect",
        "field": "drug-trafficking", "severity": "moderate", "parties": ["MY", "SG"], "tlp": "amber",
    });
    let r = crate::helpers::http()
        .post(format!("{base}/api/v1/incidents"))
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .expect("raise after restart");
    assert_eq!(r.status(), 201);
    r.json::<Value>().await.expect("json")["ref"].as_str().expect("ref").to_string()
}

#[tokio::test]
async fn two_parties_see_a_raise_live_ack_it_and_survive_a_restart() {
    let chromium = prerequisites();
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("dashboard.db");
    let passwords =
        [("th-duty", "PW_TH_DUTY"), ("my-drugs", "PW_MY_FP"), ("sg-drugs", "PW_SG_FP"), ("vn-drugs", "PW_VN_FP")];
    for (id, _) in &passwords {
        set_password(&db, id, &format!("{id} long test password"));
    }
    let officer = issue_token(&db, "th-duty");
    let mut hub: HubProcess = start(&db);
    let listen = hub.base.trim_start_matches("http://").to_string();
    let restart_file = dir.path().join("restart.cmd");
    let ref_file = dir.path().join("raised.ref");

    let mut node = Command::new("node");
    node.arg(repo().join("tests/browser/dashboard.test.mjs"))
        .env("HUB_URL", &hub.base)
        .env("CHROMIUM", &chromium)
        .env("RESTART_CMD_FILE", &restart_file)
        .env("RAISED_REF_FILE", &ref_file)
        .env("FAIL_SCREENSHOT_DIR", dir.path().join("failures"));
    for (id, var) in &passwords {
        node.env(var, format!("{id} long test password"));
    }
    if std::env::var("SCREENSHOTS").is_ok() {
        node.env("SCREENSHOTS", "1");
    }
    let mut child = node.spawn().expect("node runs (install Node.js 20)");

    // Serve the script's restart request, then wait for it to finish.
    let deadline = Instant::now() + Duration::from_secs(240);
    let mut restarted = false;
    let status = loop {
        if let Some(status) = child.try_wait().expect("node status") {
            break status;
        }
        assert!(Instant::now() < deadline, "the browser test did not finish in time");
        if !restarted && std::fs::read_to_string(&restart_file).is_ok_and(|s| s.trim() == "restart") {
            hub.child.kill().expect("SIGKILL");
            hub.child.wait().expect("reaped");
            hub = start_on(&db, &listen);
            let reference = raise_for_restart(&hub.base, &officer).await;
            std::fs::write(&ref_file, &reference).expect("ref written");
            std::fs::remove_file(&restart_file).expect("command file removed");
            restarted = true;
        }
        // The script's protocol is a file it writes; check it every 50 ms.
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(status.success(), "the dashboard browser test failed (see its output above)");
    assert!(restarted, "the script asked for a restart");
}
