//! The webhook sink: each audit event POSTed as a Standard Webhooks message, signed
//! (`webhook-id`, `webhook-timestamp`, `webhook-signature: v1,<HMAC-SHA256>`); the id is the
//! event's (stable across retries), so a receiver drops repeated deliveries.

use crate::core::error::{Error, Result};
use crate::core::outbound::OutboundPolicy;
use crate::model::AuditEventView;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use hmac::{KeyInit, Mac};
use secrecy::{ExposeSecret, SecretString};
use std::time::Duration;
use zeroize::Zeroizing;

/// Where the events go, and the key they are signed with.
pub(super) struct WebhookSink {
    url: SecretString,
    key: Zeroizing<Vec<u8>>,
    http: reqwest::Client,
}

impl WebhookSink {
    /// The sink of `SMTP_VAULT_SIEM_WEBHOOK_URL` and `SMTP_VAULT_SIEM_WEBHOOK_SECRET`.
    ///
    /// # Errors
    /// [`Error::Config`] naming the variable (never echoing the URL or the secret).
    pub(super) fn new(url: &SecretString, secret: Option<&SecretString>, policy: &OutboundPolicy) -> Result<Self> {
        policy
            .check_url(url.expose_secret())
            .map_err(|refused| Error::Config(format!("SMTP_VAULT_SIEM_WEBHOOK_URL {refused}")))?;
        let secret = secret.ok_or_else(|| {
            Error::Config("SMTP_VAULT_SIEM_WEBHOOK_SECRET is required with SMTP_VAULT_SIEM_WEBHOOK_URL".into())
        })?;
        let key = signing_key(secret.expose_secret()).ok_or_else(|| {
            Error::Config("SMTP_VAULT_SIEM_WEBHOOK_SECRET must be whsec_ followed by base64 of 24 to 64 bytes".into())
        })?;
        let http = policy.http_client(Duration::from_secs(15)).map_err(Error::Config)?;
        Ok(Self { url: url.clone(), key, http })
    }

    /// Sends one event; `Ok` on a 2xx answer.
    ///
    /// # Errors
    /// A message safe to store: the status, or the connection problem without the URL.
    pub(super) async fn send(&self, event: &AuditEventView) -> std::result::Result<(), String> {
        let id = message_id(event);
        let body = payload(event).map_err(|e| e.to_string())?;
        let timestamp = chrono::Utc::now().timestamp();
        let signature = sign(&self.key, &id, timestamp, &body);
        let answer = self
            .http
            .post(self.url.expose_secret())
            .header("content-type", "application/json")
            .header("webhook-id", &id)
            .header("webhook-timestamp", timestamp.to_string())
            .header("webhook-signature", signature)
            .body(body)
            .send()
            .await
            // SECURITY: reqwest's error names the URL, which may carry a token.
            .map_err(|e| format!("webhook: {}", if e.is_timeout() { "timed out" } else { "connection failed" }))?;
        if answer.status().is_success() { Ok(()) } else { Err(format!("webhook: HTTP {}", answer.status().as_u16())) }
    }
}

/// The body of one delivery: `{"data": event, "timestamp": …, "type": "audit.event"}` (keys in
/// this order; `audit verify --export` reads saved payloads back and expects exactly this).
///
/// # Errors
/// Serialization errors.
pub fn payload(event: &AuditEventView) -> serde_json::Result<String> {
    serde_json::to_string(&serde_json::json!({
        "type": "audit.event",
        "timestamp": event.occurred_at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        "data": event,
    }))
}

/// The message id: the event's number and the start of its hash (a restored database that
/// reuses a number for another event gets another id).
pub(super) fn message_id(event: &AuditEventView) -> String {
    format!("audit-{}-{}", event.seq, event.hash.get(..16).unwrap_or(&event.hash))
}

/// `whsec_<base64>` → the key bytes (24 to 64 of them).
pub(super) fn signing_key(secret: &str) -> Option<Zeroizing<Vec<u8>>> {
    let key = Zeroizing::new(STANDARD.decode(secret.strip_prefix("whsec_")?).ok()?);
    (24..=64).contains(&key.len()).then_some(key)
}

/// `v1,` + base64(HMAC-SHA256(key, "{id}.{timestamp}.{body}")).
pub(super) fn sign(key: &[u8], id: &str, timestamp: i64, body: &str) -> String {
    let mut mac = <hmac::Hmac<sha2::Sha256> as KeyInit>::new_from_slice(key).unwrap_or_else(|_| unreachable!());
    mac.update(format!("{id}.{timestamp}.{body}").as_bytes());
    format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_follow_the_standard_webhooks_example() {
        // The example of the Standard Webhooks specification (spec/standard-webhooks.md).
        let key = signing_key("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap_or_default();
        let body = r#"{"test": 2432232314}"#;
        assert_eq!(
            sign(&key, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1_614_265_330, body),
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        );
        assert!(signing_key("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").is_none(), "the prefix is required");
        assert!(signing_key("whsec_c2hvcnQ=").is_none(), "too short a key");
    }
}
