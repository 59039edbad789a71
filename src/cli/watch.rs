//! `watch`: tails the live stream in the terminal, one readable line per event, and
//! reconnects from the last cursor it saw.

use std::process::ExitCode;
use std::time::Duration;

use clap::Args;
use futures_util::StreamExt;
use serde_json::Value;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

use super::Remote;

#[derive(Args)]
pub struct WatchArgs {
    #[command(flatten)]
    remote: Remote,
    /// Replay events after this cursor first (`0`: from the start; default: only new
    /// events). Cursors are in `--json` output, `/events` and incident lists.
    #[arg(long, value_parser = cursor_arg)]
    after: Option<String>,
    /// Print raw JSON instead of readable lines.
    #[arg(long)]
    json: bool,
}

fn cursor_arg(s: &str) -> Result<String, String> {
    if crate::domain::cursor::looks_like(s) {
        Ok(s.to_string())
    } else {
        Err("not a cursor: use the `cursor` of an event or list, or 0 for the start".into())
    }
}

fn list(v: &Value) -> String {
    v.as_array().map(|a| a.iter().filter_map(Value::as_str).collect::<Vec<_>>().join(", ")).unwrap_or_default()
}

/// One readable line for an event.
pub fn describe(e: &Value) -> String {
    let at = e["at"]
        .as_str()
        .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
        .map(|t| t.with_timezone(&chrono::Local).format("%Y-%m-%d %H:%M:%S").to_string())
        .unwrap_or_default();
    let kind = e["type"].as_str().unwrap_or("?");
    let inc = &e["data"]["incident"];
    let r = inc["ref"].as_str().unwrap_or("");
    let detail = match kind {
        "incident.raised" => format!(
            "{r} {} {} {} → {} [{}] {}",
            inc["severity"].as_str().unwrap_or(""),
            inc["field"].as_str().unwrap_or(""),
            inc["originator"]["party"].as_str().unwrap_or(""),
            inc["parties"]
                .as_array()
                .map(|p| p.iter().filter_map(Value::as_str).collect::<Vec<_>>().join(","))
                .unwrap_or_default(),
            inc["tlp"].as_str().unwrap_or(""),
            inc["title"].as_str().unwrap_or(""),
        ),
        "incident.acknowledged" => format!(
            "{r} acknowledged by {} for {} (now {})",
            e["data"]["by"].as_str().unwrap_or(""),
            e["data"]["party"].as_str().unwrap_or(""),
            inc["state"].as_str().unwrap_or("")
        ),
        "incident.note" => {
            format!("note by {}: {}", e["data"]["by"].as_str().unwrap_or(""), e["data"]["text"].as_str().unwrap_or(""))
        }
        "incident.resolved" | "incident.cancelled" => {
            format!("{r} by {}", e["data"]["by"].as_str().unwrap_or(""))
        }
        "incident.escalated" => format!(
            "{r} {} to step {} (loop {}): {}",
            e["data"]["party"].as_str().unwrap_or(""),
            e["data"]["step"],
            e["data"]["loop"],
            list(&e["data"]["targets"])
        ),
        "incident.unanswered" => {
            format!(
                "{r} {} did not answer; alarm to {}",
                e["data"]["party"].as_str().unwrap_or(""),
                list(&e["data"]["alarmed"])
            )
        }
        "page" => format!(
            "{} paged for {} ({} {}, step {})",
            e["data"]["ref"].as_str().unwrap_or(""),
            e["data"]["focal_point"].as_str().unwrap_or(""),
            e["data"]["severity"].as_str().unwrap_or(""),
            e["data"]["reason"].as_str().unwrap_or(""),
            e["data"]["step"]
        ),
        k if k.starts_with("notification.") => format!(
            "{} page to {} (step {}){}",
            e["data"]["channel"].as_str().unwrap_or(""),
            e["data"]["focal_point"].as_str().unwrap_or(""),
            e["data"]["step"],
            e["data"]["reason"].as_str().map(|r| format!(": {r}")).unwrap_or_default()
        ),
        _ => e["data"].to_string(),
    };
    format!("{at}  {kind:<22} {detail}")
}

pub async fn watch(args: &WatchArgs) -> anyhow::Result<ExitCode> {
    let base = args.remote.url.trim_end_matches('/').replacen("http", "ws", 1);
    let mut after = args.after.clone();
    let mut backoff = Duration::from_millis(500);
    loop {
        let url = match &after {
            Some(a) => format!("{base}/api/v1/stream?after={a}"),
            None => format!("{base}/api/v1/stream"),
        };
        let mut request = url.into_client_request()?;
        request.headers_mut().insert("authorization", format!("Bearer {}", args.remote.token).parse()?);
        match tokio_tungstenite::connect_async(request).await {
            Err(tokio_tungstenite::tungstenite::Error::Http(r)) if r.status() == 401 => {
                anyhow::bail!("the hub refused the token (401)");
            }
            Err(e) => eprintln!("-- cannot connect ({e}); retrying in {:.1}s", backoff.as_secs_f32()),
            Ok((mut ws, _)) => {
                backoff = Duration::from_millis(500);
                while let Some(message) = ws.next().await {
                    match message {
                        Ok(Message::Text(text)) => {
                            let Ok(event) = serde_json::from_str::<Value>(text.as_str()) else {
                                continue;
                            };
                            if let Some(cursor) = event["cursor"].as_str() {
                                after = Some(cursor.to_string());
                            }
                            if event["type"] == "stream.live" {
                                eprintln!("-- live");
                                continue;
                            }
                            if args.json { println!("{text}") } else { println!("{}", describe(&event)) }
                        }
                        Ok(Message::Close(frame)) => {
                            eprintln!("-- closed: {}", frame.map(|f| f.reason.to_string()).unwrap_or_default());
                            break;
                        }
                        Ok(_) => {}
                        Err(e) => {
                            eprintln!("-- connection lost: {e}");
                            break;
                        }
                    }
                }
            }
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(10));
    }
}
