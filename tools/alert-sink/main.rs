//! alert-sink: the receiving end of the console's alerts and hooks for tests and the demo. An
//! SMTP server (plain, no auth) that keeps every message it accepts, an HTTP endpoint standing
//! in for a Slack incoming webhook, both with fault injection (refuse the next N deliveries),
//! `/hooks/{name}` for other webhooks (DNS update; `provision` answers what
//! `/_sink/provision-answer` set), and `GET /_sink/messages` to read what arrived. In memory.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{Value, json};
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;

#[derive(Default)]
struct Sink {
    emails: Vec<Value>,
    slack: Vec<Value>,
    refuse_smtp: u64,
    refuse_slack: u64,
    refused_smtp: u64,
    refused_slack: u64,
    refuse_hook: u64,
    refused_hook: u64,
    hooks: Vec<Value>,
    provision_answer: Option<Value>,
}

type Shared = Arc<Mutex<Sink>>;

/// A header's value, unfolded (long headers continue on lines that start with white space).
fn header(data: &str, name: &str) -> Option<String> {
    let prefix = format!("{}:", name.to_ascii_lowercase());
    let mut lines =
        data.lines().take_while(|l| !l.is_empty()).skip_while(|l| !l.to_ascii_lowercase().starts_with(&prefix));
    let mut value = lines.next()?[prefix.len()..].trim().to_owned();
    for continuation in lines.take_while(|l| l.starts_with([' ', '\t'])) {
        value.push(' ');
        value.push_str(continuation.trim());
    }
    Some(value)
}

/// One SMTP session: EHLO, MAIL, RCPT, DATA, QUIT (and RSET/NOOP); a refusal answers 451 at MAIL.
async fn smtp_session(sink: Shared, stream: tokio::net::TcpStream) {
    let (read, mut write) = stream.into_split();
    let mut lines = BufReader::new(read).lines();
    let _ = write.write_all(b"220 alert-sink ESMTP\r\n").await;
    let (mut from, mut to, mut data, mut in_data) = (String::new(), Vec::<String>::new(), String::new(), false);
    while let Ok(Some(line)) = lines.next_line().await {
        if in_data {
            if line == "." {
                in_data = false;
                let message = json!({
                    "from": from, "to": to, "subject": header(&data, "Subject"),
                    "message_id": header(&data, "Message-ID"), "data": data,
                });
                if let Ok(mut s) = sink.lock() {
                    s.emails.push(message);
                }
                (from, to, data) = (String::new(), Vec::new(), String::new());
                let _ = write.write_all(b"250 2.0.0 stored\r\n").await;
            } else {
                data.push_str(line.strip_prefix('.').unwrap_or(&line));
                data.push('\n');
            }
            continue;
        }
        let verb = line.get(..4).map(str::to_ascii_uppercase).unwrap_or_default();
        let reply: &[u8] = match verb.as_str() {
            "EHLO" => b"250-alert-sink\r\n250-8BITMIME\r\n250 SMTPUTF8\r\n",
            "HELO" => b"250 alert-sink\r\n",
            "MAIL" => {
                let refuse = sink.lock().map(|mut s| {
                    if s.refuse_smtp > 0 {
                        s.refuse_smtp -= 1;
                        s.refused_smtp += 1;
                        true
                    } else {
                        false
                    }
                });
                if refuse.unwrap_or(true) {
                    b"451 4.3.0 refused by fault injection\r\n"
                } else {
                    from = line[5..].trim().to_owned();
                    b"250 2.1.0 ok\r\n"
                }
            }
            "RCPT" => {
                to.push(line[5..].trim().to_owned());
                b"250 2.1.5 ok\r\n"
            }
            "DATA" => {
                in_data = true;
                b"354 end with .\r\n"
            }
            "RSET" => {
                (from, to, data) = (String::new(), Vec::new(), String::new());
                b"250 ok\r\n"
            }
            "QUIT" => {
                let _ = write.write_all(b"221 bye\r\n").await;
                return;
            }
            _ => b"250 ok\r\n",
        };
        if write.write_all(reply).await.is_err() {
            return;
        }
    }
}

async fn slack(State(sink): State<Shared>, body: String) -> Response {
    let Ok(mut s) = sink.lock() else { return StatusCode::INTERNAL_SERVER_ERROR.into_response() };
    if s.refuse_slack > 0 {
        s.refuse_slack -= 1;
        s.refused_slack += 1;
        return (StatusCode::INTERNAL_SERVER_ERROR, "refused by fault injection").into_response();
    }
    match serde_json::from_str::<Value>(&body) {
        Ok(payload) => {
            s.slack.push(payload);
            "ok".into_response()
        }
        Err(_) => (StatusCode::BAD_REQUEST, "invalid_payload").into_response(),
    }
}

/// Any other webhook (a DNS-update hook, say): kept with its name and bearer token.
async fn hook(
    State(sink): State<Shared>,
    axum::extract::Path(name): axum::extract::Path<String>,
    headers: axum::http::HeaderMap,
    body: String,
) -> Response {
    let Ok(mut s) = sink.lock() else { return StatusCode::INTERNAL_SERVER_ERROR.into_response() };
    if s.refuse_hook > 0 {
        s.refuse_hook -= 1;
        s.refused_hook += 1;
        return (StatusCode::SERVICE_UNAVAILABLE, "refused by fault injection").into_response();
    }
    let text = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
    let auth = text("authorization");
    // The Standard Webhooks headers and the body as received, so a test can check signatures.
    let webhook = json!({"id": text("webhook-id"), "timestamp": text("webhook-timestamp"), "signature": text("webhook-signature")});
    let payload: Value = serde_json::from_str(&body).unwrap_or(Value::String(body.clone()));
    s.hooks.push(json!({"name": name, "authorization": auth, "body": payload, "raw": body, "webhook": webhook}));
    if name == "provision" {
        return match &s.provision_answer {
            Some(answer) => Json(answer.clone()).into_response(),
            None => (StatusCode::SERVICE_UNAVAILABLE, "no replacement server configured").into_response(),
        };
    }
    "ok".into_response()
}

async fn set_provision_answer(State(sink): State<Shared>, Json(body): Json<Value>) -> Response {
    let Ok(mut s) = sink.lock() else { return StatusCode::INTERNAL_SERVER_ERROR.into_response() };
    s.provision_answer = Some(body);
    "ok".into_response()
}

async fn messages(State(sink): State<Shared>) -> Response {
    let Ok(s) = sink.lock() else { return StatusCode::INTERNAL_SERVER_ERROR.into_response() };
    Json(json!({
        "emails": s.emails, "slack": s.slack, "hooks": s.hooks,
        "refused": {"smtp": s.refused_smtp, "slack": s.refused_slack, "hook": s.refused_hook},
    }))
    .into_response()
}

async fn fault(State(sink): State<Shared>, Json(body): Json<Value>) -> Response {
    let Ok(mut s) = sink.lock() else { return StatusCode::INTERNAL_SERVER_ERROR.into_response() };
    let count = body["refuse"].as_u64().unwrap_or(0);
    match body["channel"].as_str() {
        Some("smtp") => s.refuse_smtp = count,
        Some("slack") => s.refuse_slack = count,
        Some("hook") => s.refuse_hook = count,
        _ => return (StatusCode::BAD_REQUEST, "channel must be smtp, slack or hook").into_response(),
    }
    "ok".into_response()
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let arg = |name: &str| args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).cloned();
    let sink: Shared = Arc::new(Mutex::new(Sink::default()));
    let smtp = TcpListener::bind(format!("127.0.0.1:{}", arg("--smtp-port").unwrap_or_else(|| "0".into()))).await?;
    let http = TcpListener::bind(format!("127.0.0.1:{}", arg("--http-port").unwrap_or_else(|| "0".into()))).await?;
    // Harnesses read these two lines to learn the ports.
    println!("smtp_port={}", smtp.local_addr()?.port());
    println!("http_port={}", http.local_addr()?.port());
    let smtp_sink = sink.clone();
    tokio::spawn(async move {
        loop {
            if let Ok((stream, _)) = smtp.accept().await {
                tokio::spawn(smtp_session(smtp_sink.clone(), stream));
            }
        }
    });
    let app = Router::new()
        .route("/slack", post(slack))
        .route("/_sink/messages", get(messages))
        .route("/_sink/fault", post(fault))
        .route("/_sink/provision-answer", post(set_provision_answer))
        .route("/hooks/{name}", post(hook))
        .with_state(sink);
    axum::serve(http, app).await
}
