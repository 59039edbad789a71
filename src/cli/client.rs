//! `raise` and `ack`: an officer's and a focal point's command-line way to the API.

use std::process::ExitCode;

use clap::Args;
use serde_json::{Value, json};

use super::Remote;

#[derive(Args)]
pub struct RaiseArgs {
    #[command(flatten)]
    remote: Remote,
    #[arg(long)]
    title: String,
    #[arg(long)]
    description: String,
    /// Field of crime id, e.g. drug-trafficking.
    #[arg(long)]
    field: String,
    /// extreme, severe, moderate, minor or unknown.
    #[arg(long)]
    severity: String,
    /// Addressed parties, comma-separated, e.g. MY,SG.
    #[arg(long, value_delimiter = ',', required = true)]
    parties: Vec<String>,
    /// clear, green, amber, amber+strict or red.
    #[arg(long, default_value = "amber")]
    tlp: String,
    #[arg(long)]
    urgency: Option<String>,
    #[arg(long)]
    certainty: Option<String>,
    /// actual, exercise or test.
    #[arg(long)]
    status: Option<String>,
    /// Named recipients (focal point ids), required for red.
    #[arg(long, value_delimiter = ',')]
    recipients: Vec<String>,
    #[arg(long)]
    area: Option<String>,
    #[arg(long)]
    dedup_key: Option<String>,
}

#[derive(Args)]
pub struct AckArgs {
    #[command(flatten)]
    remote: Remote,
    /// The incident's id, or its ref (e.g. K7Q2) while it is open.
    incident: String,
}

fn client() -> anyhow::Result<reqwest::Client> {
    Ok(reqwest::Client::builder().timeout(std::time::Duration::from_secs(30)).build()?)
}

/// Sends a request and returns the JSON body, or explains the API's error.
async fn call(request: reqwest::RequestBuilder) -> anyhow::Result<(u16, Value)> {
    let response = request.send().await?;
    let status = response.status().as_u16();
    let body: Value = response.json().await.unwrap_or(Value::Null);
    if status >= 400 {
        let message = body["error"]["message"].as_str().unwrap_or("no details");
        anyhow::bail!("the hub answered {status}: {message}");
    }
    Ok((status, body))
}

pub async fn raise(args: &RaiseArgs) -> anyhow::Result<ExitCode> {
    let mut body = json!({
        "title": args.title, "description": args.description, "field": args.field,
        "severity": args.severity, "parties": args.parties, "tlp": args.tlp,
    });
    for (key, value) in [
        ("urgency", &args.urgency),
        ("certainty", &args.certainty),
        ("status", &args.status),
        ("dedup_key", &args.dedup_key),
    ] {
        if let Some(v) = value {
            body[key] = json!(v);
        }
    }
    if !args.recipients.is_empty() {
        body["recipients"] = json!(args.recipients);
    }
    if let Some(area) = &args.area {
        body["area"] = json!({ "text": area });
    }
    let url = format!("{}/api/v1/incidents", args.remote.url.trim_end_matches('/'));
    let (status, incident) = call(client()?.post(url).bearer_auth(&args.remote.token).json(&body)).await?;
    let what = if status == 201 { "raised" } else { "already open (dedup key)" };
    println!(
        "{what}: {} {} — {}",
        incident["ref"].as_str().unwrap_or("?"),
        incident["id"].as_str().unwrap_or("?"),
        incident["title"].as_str().unwrap_or("")
    );
    Ok(ExitCode::SUCCESS)
}

pub async fn ack(args: &AckArgs) -> anyhow::Result<ExitCode> {
    let base = args.remote.url.trim_end_matches('/').to_string();
    let http = client()?;
    let id = if uuid::Uuid::parse_str(&args.incident).is_ok() {
        args.incident.clone()
    } else {
        let Some(wanted) = crate::domain::reference::normalise(&args.incident) else {
            anyhow::bail!("{:?} is neither an incident id nor a ref", args.incident);
        };
        let (_, page) =
            call(http.get(format!("{base}/api/v1/incidents?state=active&limit=500")).bearer_auth(&args.remote.token))
                .await?;
        let found = page["incidents"].as_array().and_then(|list| list.iter().find(|i| i["ref"] == wanted.as_str()));
        match found.and_then(|i| i["id"].as_str()) {
            Some(id) => id.to_string(),
            None => anyhow::bail!("no open incident {wanted} that you may see"),
        }
    };
    let response = http
        .post(format!("{base}/api/v1/incidents/{id}/ack"))
        .bearer_auth(&args.remote.token)
        .json(&json!({}))
        .send()
        .await?;
    let already = response.headers().get("ack-result").is_some_and(|v| v == "already_acknowledged");
    let status = response.status().as_u16();
    let body: Value = response.json().await.unwrap_or(Value::Null);
    if status >= 400 {
        anyhow::bail!("the hub answered {status}: {}", body["error"]["message"].as_str().unwrap_or("no details"));
    }
    let r = body["ref"].as_str().unwrap_or("?");
    if already {
        println!("{r} was already acknowledged for your party; nothing changed");
    } else {
        println!("{r} acknowledged; incident is now {}", body["state"].as_str().unwrap_or("?"));
    }
    Ok(ExitCode::SUCCESS)
}
