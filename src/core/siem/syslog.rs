//! The syslog sink: each audit event as an RFC 5424 message, octet-counted (RFC 6587 §3.4.1)
//! over TCP, TLS optional (RFC 5425). One ordered stream: the receiver's copy follows the chain.

use crate::core::error::{Error, Result};
use crate::core::outbound::OutboundPolicy;
use crate::model::AuditEventView;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncWrite;
use tokio_rustls::rustls;

/// A connection to the receiver, plain or TLS.
pub(super) type Connection = Box<dyn AsyncWrite + Send + Unpin>;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Where the stream goes.
pub(super) struct SyslogSink {
    host: String,
    port: u16,
    tls: Option<(tokio_rustls::TlsConnector, rustls::pki_types::ServerName<'static>)>,
    policy: OutboundPolicy,
    /// HOSTNAME of every message: the console's public host.
    hostname: String,
}

impl SyslogSink {
    /// The sink of `SMTP_VAULT_SIEM_SYSLOG_URL`.
    ///
    /// # Errors
    /// [`Error::Config`] naming the variable: not `tcp://` or `tls://` with a host and port,
    /// plaintext the policy does not allow, an unreadable CA file.
    pub(super) fn new(
        url: &str,
        ca_file: Option<&std::path::Path>,
        policy: &OutboundPolicy,
        hostname: &str,
    ) -> Result<Self> {
        let bad = |why: &str| Error::Config(format!("SMTP_VAULT_SIEM_SYSLOG_URL {why}"));
        let (tls, rest) = match url.trim().split_once("://") {
            Some(("tls", rest)) => (true, rest),
            Some(("tcp", rest)) => (false, rest),
            _ => return Err(bad("must be tls://host:port or tcp://host:port")),
        };
        if !tls && !policy.allow_plaintext {
            return Err(bad(
                "is plaintext (tcp://): use tls://, or allow plaintext with SMTP_VAULT_OUTBOUND_ALLOW_PLAINTEXT",
            ));
        }
        let (host, port) = rest
            .trim_end_matches('/')
            .rsplit_once(':')
            .and_then(|(h, p)| {
                Some((h.trim_start_matches('[').trim_end_matches(']').to_owned(), p.parse::<u16>().ok()?))
            })
            .filter(|(h, p)| !h.is_empty() && *p > 0)
            .ok_or_else(|| bad("must name a host and a port"))?;
        let tls = if tls {
            // A private CA given: only it may vouch for the receiver (any public CA could
            // otherwise issue a certificate for its name). None given: the public roots.
            let mut roots = rustls::RootCertStore::empty();
            if ca_file.is_none() {
                roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
            }
            if let Some(path) = ca_file {
                use rustls::pki_types::pem::PemObject as _;
                let certs = rustls::pki_types::CertificateDer::pem_file_iter(path)
                    .map_err(|e| Error::Config(format!("SMTP_VAULT_SIEM_SYSLOG_CA_FILE {}: {e}", path.display())))?;
                for cert in certs {
                    let cert = cert.map_err(|e| Error::Config(format!("SMTP_VAULT_SIEM_SYSLOG_CA_FILE: {e}")))?;
                    roots.add(cert).map_err(|e| Error::Config(format!("SMTP_VAULT_SIEM_SYSLOG_CA_FILE: {e}")))?;
                }
            }
            let config =
                rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::aws_lc_rs::default_provider()))
                    .with_safe_default_protocol_versions()
                    .map_err(|e| Error::Config(format!("syslog TLS: {e}")))?
                    .with_root_certificates(roots)
                    .with_no_client_auth();
            let name =
                rustls::pki_types::ServerName::try_from(host.clone()).map_err(|_| bad("has no valid host name"))?;
            Some((tokio_rustls::TlsConnector::from(Arc::new(config)), name))
        } else {
            None
        };
        Ok(Self { host, port, tls, policy: policy.clone(), hostname: hostname.to_owned() })
    }

    /// `host:port`, for logs (the URL holds no secret).
    pub(super) fn describe(&self) -> String {
        format!("{}://{}:{}", if self.tls.is_some() { "tls" } else { "tcp" }, self.host, self.port)
    }

    /// Opens the stream: an address the outbound policy allows, then the TLS handshake with
    /// the receiver's certificate checked against its host name.
    ///
    /// # Errors
    /// What failed, without secrets.
    pub(super) async fn connect(&self) -> std::result::Result<Connection, String> {
        let addresses =
            self.policy.resolve(&self.host, self.port).await.map_err(|e| format!("{}: {e}", self.describe()))?;
        let stream = tokio::time::timeout(CONNECT_TIMEOUT, tokio::net::TcpStream::connect(&addresses[..]))
            .await
            .map_err(|_| format!("{}: connection timed out", self.describe()))?
            .map_err(|e| format!("{}: {e}", self.describe()))?;
        let _ = stream.set_nodelay(true);
        match &self.tls {
            None => Ok(Box::new(stream)),
            Some((connector, name)) => {
                let tls = tokio::time::timeout(CONNECT_TIMEOUT, connector.connect(name.clone(), stream))
                    .await
                    .map_err(|_| format!("{}: TLS handshake timed out", self.describe()))?
                    .map_err(|e| format!("{}: TLS: {e}", self.describe()))?;
                Ok(Box::new(tls))
            }
        }
    }

    /// One event as an octet-counted RFC 5424 frame.
    pub(super) fn frame(&self, event: &AuditEventView) -> Vec<u8> {
        frame(event, &self.hostname)
    }
}

/// `LEN SP <PRI>1 TIMESTAMP HOSTNAME smtp-vault - MSGID [smtp-vault@32473 seq="N"] JSON`: the
/// facility is 13 (log audit); the message is the event in the export format (with its hashes),
/// which `audit verify --export` reads back.
pub(super) fn frame(event: &AuditEventView, hostname: &str) -> Vec<u8> {
    let severity = match event.severity.as_str() {
        "critical" => 2,
        "warning" => 4,
        _ => 6,
    };
    // RFC 5424 §6.2: printable US-ASCII, at most 255 (host) and 32 (MSGID) characters.
    let printable = |text: &str, max: usize| -> String {
        let kept: String = text.chars().filter(|c| c.is_ascii_graphic()).take(max).collect();
        if kept.is_empty() { "-".into() } else { kept }
    };
    let json = serde_json::to_string(event).unwrap_or_default();
    let message = format!(
        "<{}>1 {} {} smtp-vault - {} [smtp-vault@32473 seq=\"{}\"] {json}",
        13 * 8 + severity,
        event.occurred_at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        printable(hostname, 255),
        printable(&event.event, 32),
        event.seq,
    );
    format!("{} {message}", message.len()).into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_frame_counts_its_octets_and_carries_the_event_in_the_export_format() {
        let event: AuditEventView = serde_json::from_value(serde_json::json!({
            "seq": 7, "occurred_at": "2026-12-07T10:00:00.123Z", "event": "credential_revealed", "severity": "warning",
            "actor_kind": "admin", "actor": "a1 ada@example.com", "tenant_id": "acme", "client_ip": null,
            "request_id": null, "details": {"reason": "ünïcode"}, "hash": "ab", "prev_hash": "cd"
        }))
        .unwrap_or_else(|e| panic!("{e}"));
        let framed = String::from_utf8(frame(&event, "console.example")).unwrap_or_default();
        let (length, message) = framed.split_once(' ').unwrap_or_default();
        assert_eq!(length.parse::<usize>().ok(), Some(message.len()), "octets, not characters");
        assert!(message.starts_with(
            "<108>1 2026-12-07T10:00:00.123Z console.example smtp-vault - credential_revealed [smtp-vault@32473 seq=\"7\"] {"
        ));
        let json = &message[message.find('{').unwrap_or_default()..];
        let back: AuditEventView = serde_json::from_str(json).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(back, event);
    }
}
