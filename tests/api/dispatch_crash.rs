//! Promise 2 across a crash: the hub is killed with SIGKILL while the outbox is being
//! dispatched to a slow SMS provider; after a restart on the same file every page reaches
//! the provider at least once. Pages in flight at the kill may go twice: the count of
//! duplicates is printed.

use std::collections::HashMap;
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::Value;

use crate::crash::HubProcess;
use crate::dispatch::{MY_L1_PHONE, body, network};
use crate::helpers::*;
use crate::twilio_fake::{ACCOUNT_SID, AUTH_TOKEN, FROM, FakeTwilio};

const INCIDENTS: usize = 12;

fn command(db: &std::path::Path, network: &std::path::Path, twilio: &FakeTwilio) -> Command {
    let mut cmd = crate::crash::command(db);
    cmd.env("FOCALPOINT__NETWORK__FILE", network)
        .env("FOCALPOINT__SMS__GATEWAY", "twilio")
        .env("FOCALPOINT__SMS__BASE_URL", twilio.url())
        .env("FOCALPOINT__SMS__ACCOUNT_SID", ACCOUNT_SID)
        .env("FOCALPOINT__SMS__AUTH_TOKEN", AUTH_TOKEN)
        .env("FOCALPOINT__SMS__FROM", FROM)
        .env("FOCALPOINT__DISPATCH__LEASE_SECONDS", "3")
        .env("FOCALPOINT__DISPATCH__CONCURRENCY", "4")
        .env("FOCALPOINT__DISPATCH__PER_DESTINATION_PER_MINUTE", "1000");
    cmd
}

fn start(cmd: &mut Command) -> HubProcess {
    use std::io::{BufRead, BufReader};
    let mut child = cmd.arg("serve").stdout(Stdio::piped()).stderr(Stdio::inherit()).spawn().expect("hub starts");
    let stdout = child.stdout.take().expect("stdout");
    let mut lines = BufReader::new(stdout).lines();
    let first = lines.next().expect("a first line").expect("readable");
    let base = first.strip_prefix("focalpoint listening on ").expect("the address line").trim().to_string();
    std::thread::spawn(move || for _ in lines.by_ref() {});
    HubProcess { child, base }
}

/// Accepted SMS per incident ref.
fn deliveries(twilio: &FakeTwilio, refs: &[String]) -> HashMap<String, usize> {
    let mut count: HashMap<String, usize> = refs.iter().map(|r| (r.clone(), 0)).collect();
    for r in twilio.accepted_sms() {
        assert_eq!(r.param("To"), Some(MY_L1_PHONE));
        let text = r.param("Body").unwrap_or("");
        if let Some(n) = refs.iter().find(|reference| text.contains(reference.as_str())).and_then(|r| count.get_mut(r))
        {
            *n += 1;
        }
    }
    count
}

#[tokio::test]
async fn pages_in_flight_at_kill_9_are_sent_after_restart() {
    focalpoint::crypto::install();
    let twilio = FakeTwilio::start().await;
    twilio.set_delay(Duration::from_millis(700));
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("dispatch.db");
    let net = dir.path().join("network.toml");
    std::fs::write(&net, network("http://127.0.0.1:9/bot")).expect("network file");

    let out = command(&db, &net, &twilio).args(["token", "issue", "th-duty"]).output().expect("cli runs");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let officer = String::from_utf8_lossy(&out.stdout).lines().last().expect("token").trim().to_string();

    let mut hub = start(&mut command(&db, &net, &twilio));
    let http = reqwest::Client::new();
    let mut refs = Vec::new();
    for i in 0..INCIDENTS {
        let mut raise = body("amber");
        raise["title"] = serde_json::json!(format!("dispatch crash {i}"));
        let r = http.post(format!("{}/api/v1/incidents", hub.base)).bearer_auth(&officer).json(&raise).send();
        let r = r.await.expect("raise sent");
        assert_eq!(r.status(), 201);
        refs.push(r.json::<Value>().await.expect("json")["ref"].as_str().expect("ref").to_string());
    }
    // Kill while the slow provider is still being sent to.
    wait_until(|| async { twilio.sms().len() >= 6 }).await;
    hub.child.kill().expect("SIGKILL");
    hub.child.wait().expect("reaped");
    let before = twilio.accepted_sms().len();
    assert!(before < INCIDENTS, "the kill came while pages were still pending ({before} sent)");

    let _hub = start(&mut command(&db, &net, &twilio));
    twilio.set_delay(Duration::ZERO);
    // Done when nothing is left pending in the store (pages leased by the killed process
    // are sent again once their 3 s lease runs out) and every incident reached the phone.
    let store = focalpoint::store::open(&format!("sqlite://{}", db.display()), false).await.expect("store");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let got = deliveries(&twilio, &refs);
        let (_, pending) = store.outbox_backlog().await.expect("backlog");
        if pending == 0 && got.values().all(|n| *n >= 1) {
            let duplicates: usize = got.values().map(|n| n - 1).sum();
            println!(
                "dispatch kill -9: {INCIDENTS} pages, {} accepted before the kill, {} sent in all, {duplicates} duplicate(s)",
                before,
                got.values().sum::<usize>()
            );
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "pages lost after restart: {got:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
