//! Alert sinks for tests: `alert-sink` (tools/alert-sink), a real SMTP server that keeps what
//! it receives and a Slack-webhook stand-in, both with "refuse the next N" fault injection.
//! Started per test, killed on drop; it outlives any console restarted during the test.

use secrecy::SecretString;
use serde_json::Value;
use smtp_vault::core::config::Config;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

pub const SECURITY: &str = "security@example.com";

pub struct AlertSink {
    child: Child,
    pub smtp_port: u16,
    pub http_port: u16,
}

impl AlertSink {
    pub fn start() -> Self {
        Self::start_on(0, 0)
    }

    /// On given ports (0: any free one).
    pub fn start_on(smtp_port: u16, http_port: u16) -> Self {
        let mut child = Command::new(super::standin_bin("alert-sink"))
            .args(["--smtp-port", &smtp_port.to_string(), "--http-port", &http_port.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let mut port = |name: &str| {
            let line = lines.next().unwrap().unwrap();
            line.strip_prefix(&format!("{name}=")).unwrap().parse().unwrap()
        };
        let smtp_port = port("smtp_port");
        let http_port = port("http_port");
        AlertSink { child, smtp_port, http_port }
    }

    /// Points a console's alert channels here: security email + Slack.
    pub fn configure(&self, config: &mut Config) {
        configure_ports(config, self.smtp_port, self.http_port);
    }

    pub async fn messages(&self) -> Value {
        let url = format!("http://127.0.0.1:{}/_sink/messages", self.http_port);
        reqwest::get(url).await.unwrap().json().await.unwrap()
    }

    /// Emails whose subject contains `needle`.
    pub async fn emails_about(&self, needle: &str) -> Vec<Value> {
        let all = self.messages().await;
        all["emails"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|m| m["subject"].as_str().unwrap_or_default().contains(needle))
            .cloned()
            .collect()
    }

    /// Slack messages whose text contains `needle`.
    pub async fn slack_about(&self, needle: &str) -> Vec<Value> {
        let all = self.messages().await;
        all["slack"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|m| m["text"].as_str().unwrap_or_default().contains(needle))
            .cloned()
            .collect()
    }

    /// Hook calls received under `name`.
    pub async fn hooks(&self, name: &str) -> Vec<Value> {
        let all = self.messages().await;
        all["hooks"].as_array().unwrap().iter().filter(|h| h["name"] == name).cloned().collect()
    }

    /// What the `provision` hook answers from now on.
    pub async fn set_provision_answer(&self, answer: Value) {
        let url = format!("http://127.0.0.1:{}/_sink/provision-answer", self.http_port);
        assert!(reqwest::Client::new().post(url).json(&answer).send().await.unwrap().status().is_success());
    }

    pub fn hook_url(&self, name: &str) -> String {
        format!("http://127.0.0.1:{}/hooks/{name}", self.http_port)
    }

    /// Refuses the next `count` deliveries on `channel` (`smtp` or `slack`).
    pub async fn refuse(&self, channel: &str, count: u64) {
        let url = format!("http://127.0.0.1:{}/_sink/fault", self.http_port);
        let response = reqwest::Client::new()
            .post(url)
            .json(&serde_json::json!({"channel": channel, "refuse": count}))
            .send()
            .await
            .unwrap();
        assert!(response.status().is_success());
    }
}

impl Drop for AlertSink {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Points a console's alert channels at a sink on these ports (running or not).
pub fn configure_ports(config: &mut Config, smtp_port: u16, http_port: u16) {
    config.alert_smtp_url = Some(SecretString::from(format!("smtp://127.0.0.1:{smtp_port}?tls=none")));
    config.alert_email_to = vec![SECURITY.parse().unwrap()];
    config.alert_email_from = "smtp-vault@console.example".parse().unwrap();
    config.slack_webhook_url = Some(SecretString::from(format!("http://127.0.0.1:{http_port}/slack")));
}

/// A loopback port nothing listens on (yet).
pub fn unused_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}
