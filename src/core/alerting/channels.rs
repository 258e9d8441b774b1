//! Alert channels: email over SMTP (lettre; STARTTLS, implicit TLS or, only when asked for,
//! plain) and a Slack incoming webhook (text + blocks). Built once from the configuration and
//! validated at start-up, so a typo in a URL or an address stops the console instead of
//! silently dropping alerts. Secrets (SMTP password, webhook URL) never reach an error string.

use crate::core::error::{Error, Result};
use crate::core::outbound::OutboundPolicy;
use lettre::message::header::ContentType;
use lettre::message::{Mailbox, Message};
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Tokio1Executor};
use secrecy::{ExposeSecret, SecretString};
use std::time::Duration;

/// Something a channel sends: already rendered, no secrets in it.
#[derive(Debug, Clone)]
pub struct Notice {
    /// Stable id, used as the email's Message-ID (a receiving system can drop duplicates).
    pub id: String,
    /// One line.
    pub subject: String,
    /// Plain text.
    pub body: String,
    /// info | warning | critical.
    pub severity: String,
    /// Labelled facts for Slack's fields.
    pub fields: Vec<(String, String)>,
}

/// Email over SMTP.
pub struct EmailChannel {
    host: String,
    port: u16,
    tls: Tls,
    credentials: Option<Credentials>,
    policy: OutboundPolicy,
    from: Mailbox,
}

/// A Slack incoming webhook.
pub struct SlackChannel {
    // SECURITY: the URL is the credential; it is never logged or put in an error message.
    url: SecretString,
    http: reqwest::Client,
}

/// The configured channels and the security recipients.
#[derive(Default)]
pub struct Channels {
    /// Email, when `SMTP_VAULT_ALERT_SMTP_URL` is set.
    pub email: Option<EmailChannel>,
    /// Slack, when `SMTP_VAULT_SLACK_WEBHOOK_URL` is set.
    pub slack: Option<SlackChannel>,
    /// Who gets security alerts by email.
    pub security_recipients: Vec<Mailbox>,
}

impl std::fmt::Debug for Channels {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Channels")
            .field("email", &self.email.is_some())
            .field("slack", &self.slack.is_some())
            .field("security_recipients", &self.security_recipients.len())
            .finish()
    }
}

/// Parses an email address (`a@b` or `Name <a@b>`).
///
/// # Errors
/// [`Error::Config`] naming the address.
pub fn mailbox(text: &str) -> Result<Mailbox> {
    text.trim().parse::<Mailbox>().map_err(|_| Error::Config(format!("`{}` is not an email address", text.trim())))
}

impl Channels {
    /// Builds the channels from their settings.
    ///
    /// # Errors
    /// [`Error::Config`] for a malformed SMTP URL, address or webhook URL.
    pub fn new(
        smtp_url: Option<&SecretString>,
        from: &Mailbox,
        security_to: &[Mailbox],
        slack_url: Option<&SecretString>,
        extra_root_pem: Option<&[u8]>,
        policy: &OutboundPolicy,
    ) -> Result<Self> {
        let security_recipients = security_to.to_vec();
        let email = match smtp_url {
            Some(url) => Some(EmailChannel::new(url, from.clone(), extra_root_pem, policy)?),
            None => None,
        };
        let slack = match slack_url {
            Some(url) => Some(SlackChannel::new(url.clone(), policy)?),
            None => None,
        };
        Ok(Self { email, slack, security_recipients })
    }
}

impl EmailChannel {
    /// `smtp://[user:pass@]host[:port][?tls=required|opportunistic|none]` (STARTTLS required
    /// unless said otherwise; port 587) or `smtps://…` (implicit TLS; port 465).
    fn new(url: &SecretString, from: Mailbox, extra_root_pem: Option<&[u8]>, policy: &OutboundPolicy) -> Result<Self> {
        // SECURITY: the URL may hold a password, so errors describe the problem, not the URL.
        let bad = |what: &str| Error::Config(format!("SMTP_VAULT_ALERT_SMTP_URL: {what}"));
        let parsed = url::Url::parse(url.expose_secret()).map_err(|_| bad("not a URL"))?;
        let host = parsed.host_str().filter(|h| !h.is_empty()).ok_or_else(|| bad("no host"))?.to_owned();
        let tls_mode = parsed.query_pairs().find(|(k, _)| k == "tls").map(|(_, v)| v.into_owned());
        let tls_parameters = || -> Result<TlsParameters> {
            let mut builder = TlsParameters::builder(host.clone());
            for pem in extra_root_pem.map(crate::core::mail::pem_certificates).unwrap_or_default() {
                builder = builder.add_root_certificate(
                    Certificate::from_pem(&pem).map_err(|_| bad("the extra CA file is not PEM"))?,
                );
            }
            builder.build().map_err(|_| bad("TLS settings rejected"))
        };
        let (tls, default_port) = match (parsed.scheme(), tls_mode.as_deref()) {
            ("smtps", None) => (Tls::Wrapper(tls_parameters()?), 465),
            ("smtp", None | Some("required")) => (Tls::Required(tls_parameters()?), 587),
            ("smtp", Some("opportunistic")) => (Tls::Opportunistic(tls_parameters()?), 587),
            ("smtp", Some("none")) => (Tls::None, 25),
            ("smtp" | "smtps", Some(_)) => return Err(bad("tls must be required, opportunistic or none")),
            _ => return Err(bad("the scheme must be smtp or smtps")),
        };
        // The outbound policy: plaintext and an internal literal are refused now; a name is
        // resolved and checked at each send (see `send`).
        if matches!(tls, Tls::None) && !policy.allow_plaintext {
            return Err(bad("tls=none sends alerts unencrypted; set SMTP_VAULT_OUTBOUND_ALLOW_PLAINTEXT to allow it"));
        }
        if let Ok(ip) = host.trim_start_matches('[').trim_end_matches(']').parse::<std::net::IpAddr>()
            && !policy.allows_ip(ip)
        {
            return Err(bad(
                "the host is an internal address; allow its network in SMTP_VAULT_OUTBOUND_ALLOW_NETWORKS",
            ));
        }
        let credentials = if parsed.username().is_empty() {
            None
        } else {
            let decode = |s: &str| percent_decode(s).ok_or_else(|| bad("user or password is not valid UTF-8"));
            Some(Credentials::new(decode(parsed.username())?, decode(parsed.password().unwrap_or_default())?))
        };
        let host = host.trim_start_matches('[').trim_end_matches(']').to_owned();
        let port = parsed.port().unwrap_or(default_port);
        Ok(Self { host, port, tls, credentials, policy: policy.clone(), from })
    }

    /// A transport to the relay's address, resolved now and checked against the outbound
    /// policy (lettre would resolve the name itself, past the policy); TLS still verifies the
    /// certificate against the name.
    async fn transport(&self) -> std::result::Result<AsyncSmtpTransport<Tokio1Executor>, String> {
        let addresses: Vec<std::net::IpAddr> = tokio::net::lookup_host((self.host.as_str(), self.port))
            .await
            .map_err(|_| "smtp: the relay's name does not resolve".to_owned())?
            .map(|a| a.ip())
            .collect();
        // SECURITY: every answer must be allowed, or a name with one public and one internal
        // address would reach the internal one on some attempts.
        if addresses.is_empty() || !addresses.iter().all(|ip| self.policy.allows_ip(*ip)) {
            return Err("smtp: the relay resolves to an internal address the outbound policy refuses \
                        (SMTP_VAULT_OUTBOUND_ALLOW_NETWORKS)"
                .into());
        }
        let mut builder = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(addresses[0].to_string())
            .port(self.port)
            .tls(self.tls.clone())
            .timeout(Some(Duration::from_secs(15)));
        if let Some(credentials) = &self.credentials {
            builder = builder.credentials(credentials.clone());
        }
        Ok(builder.build())
    }

    /// Sends `notice` to `to`.
    ///
    /// # Errors
    /// A message safe to store (the server's answer or the connection problem).
    pub async fn send(&self, to: &[Mailbox], notice: &Notice) -> std::result::Result<(), String> {
        let mut builder = Message::builder()
            .from(self.from.clone())
            .subject(&notice.subject)
            .message_id(Some(format!("<{}@smtp-vault>", notice.id)))
            .header(ContentType::TEXT_PLAIN);
        for recipient in to {
            builder = builder.to(recipient.clone());
        }
        let message = builder.body(notice.body.clone()).map_err(|e| format!("building the message: {e}"))?;
        // lettre's timeout bounds each command; this bounds the whole conversation.
        let transport = self.transport().await?;
        match tokio::time::timeout(Duration::from_secs(30), transport.send(message)).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(format!("smtp: {e}")),
            Err(_) => Err("smtp: timed out".into()),
        }
    }
}

impl SlackChannel {
    fn new(url: SecretString, policy: &OutboundPolicy) -> Result<Self> {
        // SECURITY: the URL is the credential; the refusal names the rule, not the URL.
        policy
            .check_url(url.expose_secret())
            .map_err(|refused| Error::Config(format!("SMTP_VAULT_SLACK_WEBHOOK_URL {refused}")))?;
        let http = policy.http_client(Duration::from_secs(15)).map_err(Error::Config)?;
        Ok(Self { url, http })
    }

    /// Posts `notice` as text (for notifications) and blocks (for the channel).
    ///
    /// # Errors
    /// A message safe to store: the status, or the connection problem without the URL.
    pub async fn send(&self, notice: &Notice) -> std::result::Result<(), String> {
        let icon = match notice.severity.as_str() {
            "critical" => ":rotating_light:",
            "warning" => ":warning:",
            _ => ":information_source:",
        };
        let fields: Vec<serde_json::Value> = notice
            .fields
            .iter()
            .map(
                |(label, value)| serde_json::json!({"type": "mrkdwn", "text": format!("*{label}*\n{}", escape(value))}),
            )
            .collect();
        let mut blocks = vec![
            serde_json::json!({"type": "header", "text": {"type": "plain_text", "text": truncate(&notice.subject, 150)}}),
            serde_json::json!({"type": "section", "text": {"type": "mrkdwn", "text": truncate(&escape(&notice.body), 2900)}}),
        ];
        if !fields.is_empty() {
            blocks.push(
                serde_json::json!({"type": "section", "fields": fields.into_iter().take(10).collect::<Vec<_>>()}),
            );
        }
        blocks.push(serde_json::json!({"type": "context", "elements": [{"type": "mrkdwn", "text": format!("smtp-vault alert `{}`", notice.id)}]}));
        let payload = serde_json::json!({"text": format!("{icon} {}", escape(&notice.subject)), "blocks": blocks});
        let response = self
            .http
            .post(self.url.expose_secret())
            .json(&payload)
            .send()
            .await
            // SECURITY: reqwest puts the URL into its errors; the webhook URL is a secret.
            .map_err(|e| format!("slack: {}", e.without_url()))?;
        let status = response.status();
        if status.is_success() { Ok(()) } else { Err(format!("slack: HTTP {}", status.as_u16())) }
    }
}

/// Slack's control sequences (`<!channel>`, `<url|label>`) start with `<`; escaping the three
/// characters Slack asks for keeps a reason typed by a caller from pinging a channel or
/// disguising a link.
fn escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

fn truncate(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_owned();
    }
    let mut cut: String = text.chars().take(max.saturating_sub(1)).collect();
    cut.push('…');
    cut
}

fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let pair = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(pair, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn smtp_urls_are_checked_without_echoing_them() {
        let lab = OutboundPolicy::new(true, vec!["127.0.0.0/8".parse().unwrap_or_else(|e| panic!("{e}"))]);
        let from = sender();
        let ok = |u: &str| Channels::new(Some(&SecretString::from(u.to_owned())), &from, &[], None, None, &lab);
        assert!(ok("smtp://127.0.0.1:2525?tls=none").is_ok());
        let strict = |u: &str| {
            Channels::new(Some(&SecretString::from(u.to_owned())), &from, &[], None, None, &OutboundPolicy::default())
        };
        assert!(strict("smtp://mail.example?tls=none").is_err());
        assert!(strict("smtp://127.0.0.1:2525").is_err());
        assert!(strict("smtps://mail.example").is_ok());
        assert!(ok("smtp://user:p%40ss@mail.example").is_ok());
        assert!(ok("smtps://mail.example").is_ok());
        for bad in ["http://mail.example", "smtp://mail.example?tls=maybe", "not a url", "smtp://u:hunter2@/x"] {
            let error = ok(bad).err().map(|e| e.to_string()).unwrap_or_default();
            assert!(error.contains("SMTP_VAULT_ALERT_SMTP_URL"), "{bad}: {error}");
            assert!(!error.contains("hunter2"));
        }
    }

    #[test]
    fn webhooks_are_validated() {
        let policy = OutboundPolicy::default();
        let from = sender();
        let hook = |u: &str| Channels::new(None, &from, &[], Some(&SecretString::from(u.to_owned())), None, &policy);
        assert!(hook("https://hooks.slack.com/services/T/B/X").is_ok());
        assert!(hook("ftp://example.com").is_err());
        assert!(hook("http://hooks.slack.com/services/T/B/X").is_err());
        assert!(hook("https://169.254.169.254/latest/meta-data").is_err());
    }

    fn sender() -> Mailbox {
        mailbox("a@b.example").unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn slack_text_cannot_ping_or_link() {
        assert_eq!(escape("<!channel> & <https://x|y>"), "&lt;!channel&gt; &amp; &lt;https://x|y&gt;");
    }

    #[test]
    fn percent_decoding() {
        assert_eq!(percent_decode("p%40ss").as_deref(), Some("p@ss"));
        assert_eq!(percent_decode("plain").as_deref(), Some("plain"));
        assert_eq!(percent_decode("%zz"), None);
    }
}
