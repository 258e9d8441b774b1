//! SIEM export: every audit event, once appended, leaves for the configured sinks in the export
//! format (its sequence number, hash and predecessor's hash), so the SIEM's copy can be proved
//! complete and unaltered offline (`smtp-vault audit verify --export`).
//!
//! - **syslog** (`syslog.rs`): one ordered stream that one console holds (a lease on the sink's
//!   cursor); the cursor moves only after the frames are flushed, and a broken connection
//!   resends from it: at least once, in order.
//! - **webhooks** (`webhook.rs`): the cursor moves in the transaction that queues one delivery
//!   per event in `siem_deliveries`, the outbox drained like the alerts' (leased, retried with
//!   backoff, dead-lettered after `SMTP_VAULT_ALERT_MAX_ATTEMPTS`, a `job_failed` alert).
//!
//! Deliveries are not themselves audited: each would be an event to export, without end.

mod syslog;
mod webhook;

pub use webhook::payload as webhook_payload;

use crate::core::Core;
use crate::core::audit::events_between;
use crate::core::config::Config;
use crate::core::error::{Error, Result};
use crate::core::outbound::OutboundPolicy;
use futures_util::StreamExt;
use std::time::Duration;

/// Events read per pass.
const BATCH: i64 = 500;
/// How long a console holds the syslog stream without renewing its claim.
const STREAM_LEASE_MS: i64 = 120_000;
/// How long a webhook delivery is claimed for while it is sent.
const DELIVERY_LEASE_MS: i64 = 60_000;

/// The configured sinks (none configured: nothing runs).
#[derive(Default)]
pub struct Sinks {
    syslog: Option<syslog::SyslogSink>,
    webhook: Option<webhook::WebhookSink>,
}

impl Sinks {
    /// The sinks the configuration names, checked now so a bad setting stops the start.
    ///
    /// # Errors
    /// [`Error::Config`] naming the variable.
    pub fn from_config(config: &Config, policy: &OutboundPolicy) -> Result<Self> {
        let hostname = config.public_url.host_str().unwrap_or("-").to_owned();
        Ok(Self {
            syslog: config
                .siem_syslog_url
                .as_deref()
                .map(|url| syslog::SyslogSink::new(url, config.siem_syslog_ca_file.as_deref(), policy, &hostname))
                .transpose()?,
            webhook: config
                .siem_webhook_url
                .as_ref()
                .map(|url| webhook::WebhookSink::new(url, config.siem_webhook_secret.as_ref(), policy))
                .transpose()?,
        })
    }

    /// Whether any sink is configured.
    #[must_use]
    pub fn any(&self) -> bool {
        self.syslog.is_some() || self.webhook.is_some()
    }
}

/// What one export pass did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExportPass {
    /// Events written to the syslog stream.
    pub streamed: usize,
    /// Webhook deliveries queued.
    pub queued: usize,
    /// Webhook deliveries that reached the receiver.
    pub delivered: usize,
    /// Webhook deliveries that failed and will be retried.
    pub retrying: usize,
    /// Webhook deliveries that gave up (dead letter).
    pub dead: usize,
}

enum Delivery {
    Delivered,
    Retrying,
    Dead,
}

/// The syslog connection a console keeps between passes. Syslog has no acknowledgement, so
/// whenever a connection is opened — after a break, a restart, or another console taking the
/// stream over — it first sends again what went out in the last [`REPLAY`] or so (the receiver
/// may have died holding it; duplicates are harmless: each event carries its number). Where
/// that window starts is kept in the database (`siem_cursors.replay_seq`), not in memory.
#[derive(Default)]
pub struct SyslogStream {
    connection: Option<syslog::Connection>,
}

/// How far back a new syslog connection replays (at least this, at most twice this).
const REPLAY: Duration = Duration::from_secs(60);

impl Core {
    /// One pass over every sink: the syslog stream's next events, the webhook outbox's new
    /// events queued and its due deliveries sent.
    ///
    /// # Errors
    /// Database errors, and the syslog stream's failure (its connection is dropped; the next
    /// connection replays from the window's start).
    pub async fn export_audit_events(&self, stream: &mut SyslogStream) -> Result<ExportPass> {
        let mut pass = ExportPass::default();
        let mut failure = None;
        if self.siem.syslog.is_some() {
            match self.syslog_pass(stream).await {
                Ok(n) => pass.streamed = n,
                Err(e) => failure = Some(e),
            }
        }
        if self.siem.webhook.is_some() {
            let (queued, delivered, retrying, dead) = self.webhook_pass().await?;
            (pass.queued, pass.delivered, pass.retrying, pass.dead) = (queued, delivered, retrying, dead);
        }
        failure.map_or(Ok(pass), Err)
    }

    /// Exports until the process ends, each sink in a loop of its own (a hung webhook receiver
    /// never holds up the syslog stream or its lease): a pass every `poll`, at once again
    /// while there is a backlog; a failing receiver is retried with backoff (up to a minute)
    /// and raises `job_failed` once a day.
    pub async fn run_siem_export(&self, poll: Duration) {
        let syslog = async {
            if self.siem.syslog.is_none() {
                return;
            }
            let mut stream = SyslogStream::default();
            let mut backoff = poll;
            loop {
                let wait = match self.syslog_pass(&mut stream).await {
                    Ok(n) => {
                        backoff = poll;
                        if n as i64 == BATCH { Duration::ZERO } else { poll }
                    }
                    Err(e) => {
                        self.report_job_failure("siem-export", &e).await;
                        backoff = (backoff * 2).min(Duration::from_secs(60));
                        backoff
                    }
                };
                tokio::time::sleep(wait).await;
            }
        };
        let webhook = async {
            if self.siem.webhook.is_none() {
                return;
            }
            loop {
                let wait = match self.webhook_pass().await {
                    Ok((queued, ..)) if queued as i64 == BATCH => Duration::ZERO,
                    Ok(_) => poll,
                    Err(e) => {
                        self.report_job_failure("siem-export", &e).await;
                        Duration::from_secs(10)
                    }
                };
                tokio::time::sleep(wait).await;
            }
        };
        tokio::join!(syslog, webhook);
    }

    async fn webhook_pass(&self) -> Result<(usize, usize, usize, usize)> {
        let Some(sink) = &self.siem.webhook else { return Ok((0, 0, 0, 0)) };
        let queued = self.queue_webhook_deliveries().await?;
        let (delivered, retrying, dead) = self.deliver_webhooks(sink).await?;
        Ok((queued, delivered, retrying, dead))
    }

    async fn syslog_pass(&self, stream: &mut SyslogStream) -> Result<usize> {
        let Some(sink) = &self.siem.syslog else { return Ok(0) };
        let streamed = self.stream_syslog(sink, stream).await;
        if streamed.is_err() {
            stream.connection = None;
        }
        streamed
    }

    async fn stream_syslog(&self, sink: &syslog::SyslogSink, stream: &mut SyslogStream) -> Result<usize> {
        use tokio::io::AsyncWriteExt as _;
        let now = self.now().timestamp_millis();
        // One console streams (the order of the receiver's copy is the chain's): claim or renew.
        // The lease outlasts the longest pass (connect 10 s, handshake 10 s, write 30 s).
        let claimed = sqlx::query(
            "UPDATE siem_cursors SET holder = $1, lease_until_ms = $2 WHERE sink = 'syslog' \
             AND (holder = $1 OR lease_until_ms IS NULL OR lease_until_ms < $3)",
        )
        .bind(&self.instance_id)
        .bind(now + STREAM_LEASE_MS)
        .bind(now)
        .execute(self.db.pool())
        .await?;
        if claimed.rows_affected() != 1 {
            stream.connection = None;
            return Ok(0);
        }
        if stream.connection.is_none() {
            // A new connection: whatever the last holder (this process before a break or a
            // restart, or another console) sent in the replay window goes again.
            sqlx::query(
                "UPDATE siem_cursors SET seq = replay_seq - 1 WHERE sink = 'syslog' AND holder = $1 \
                 AND replay_seq IS NOT NULL AND seq >= replay_seq",
            )
            .bind(&self.instance_id)
            .execute(self.db.pool())
            .await?;
        }
        let (after,): (i64,) =
            sqlx::query_as("SELECT seq FROM siem_cursors WHERE sink = 'syslog'").fetch_one(self.db.pool()).await?;
        let events = events_between(&self.db, after + 1, after + BATCH).await?;
        let (Some(first), Some(last)) = (events.first().map(|e| e.seq), events.last().map(|e| e.seq)) else {
            return Ok(0);
        };
        if stream.connection.is_none() {
            stream.connection = Some(sink.connect().await.map_err(Error::Siem)?);
        }
        let connection = stream.connection.as_mut().ok_or_else(|| Error::Internal("no syslog connection".into()))?;
        let mut frames = Vec::with_capacity(events.len() * 512);
        for event in &events {
            frames.extend_from_slice(&sink.frame(event));
        }
        let written = async {
            connection.write_all(&frames).await?;
            connection.flush().await
        };
        tokio::time::timeout(Duration::from_secs(30), written)
            .await
            .map_err(|_| Error::Siem(format!("{}: write timed out", sink.describe())))?
            .map_err(|e| Error::Siem(format!("{}: {e}", sink.describe())))?;
        // The window's start moves to this batch once it is older than REPLAY.
        let now = self.now().timestamp_millis();
        let window = i64::try_from(REPLAY.as_millis()).unwrap_or(i64::MAX);
        let moved = sqlx::query(
            "UPDATE siem_cursors SET seq = $1, updated_at_ms = $2, \
             replay_seq = CASE WHEN replay_since_ms IS NULL OR replay_since_ms < $3 THEN $4 ELSE replay_seq END, \
             replay_since_ms = CASE WHEN replay_since_ms IS NULL OR replay_since_ms < $3 THEN $2 ELSE replay_since_ms END \
             WHERE sink = 'syslog' AND holder = $5",
        )
        .bind(last)
        .bind(now)
        .bind(now - window)
        .bind(first)
        .bind(&self.instance_id)
        .execute(self.db.pool())
        .await?;
        if moved.rows_affected() != 1 {
            // Another console took the stream meanwhile: it replays from the window, so nothing
            // is lost; this one stops.
            stream.connection = None;
            return Err(Error::Siem("another console took over the syslog stream".into()));
        }
        Ok(events.len())
    }

    /// Queues a delivery per new event and moves the cursor past them in one transaction (a
    /// second console's pass queues nothing twice: the cursor update is conditional).
    async fn queue_webhook_deliveries(&self) -> Result<usize> {
        let mut tx = self.db.begin_write().await?;
        let (after,): (i64,) =
            sqlx::query_as("SELECT seq FROM siem_cursors WHERE sink = 'webhook'").fetch_one(&mut *tx).await?;
        let new: Vec<(i64,)> = sqlx::query_as("SELECT seq FROM audit_events WHERE seq > $1 ORDER BY seq LIMIT $2")
            .bind(after)
            .bind(BATCH)
            .fetch_all(&mut *tx)
            .await?;
        let Some(&(last,)) = new.last() else { return Ok(0) };
        let now = self.now().timestamp_millis();
        for (seq,) in &new {
            sqlx::query(
                "INSERT INTO siem_deliveries (sink, seq, state, attempts, next_attempt_at_ms, created_at_ms) \
                 VALUES ('webhook', $1, 'pending', 0, $2, $2) ON CONFLICT (sink, seq) DO NOTHING",
            )
            .bind(seq)
            .bind(now)
            .execute(&mut *tx)
            .await?;
        }
        let moved =
            sqlx::query("UPDATE siem_cursors SET seq = $1, updated_at_ms = $2 WHERE sink = 'webhook' AND seq = $3")
                .bind(last)
                .bind(now)
                .bind(after)
                .execute(&mut *tx)
                .await?;
        if moved.rows_affected() != 1 {
            return Ok(0);
        }
        tx.commit().await?;
        Ok(new.len())
    }

    /// Sends the due webhook deliveries, four at a time; returns (delivered, retrying, dead).
    async fn deliver_webhooks(&self, sink: &webhook::WebhookSink) -> Result<(usize, usize, usize)> {
        let now = self.now().timestamp_millis();
        let due: Vec<(i64, i64)> = sqlx::query_as(
            "SELECT seq, attempts FROM siem_deliveries WHERE sink = 'webhook' AND state = 'pending' \
             AND next_attempt_at_ms <= $1 AND (lease_until_ms IS NULL OR lease_until_ms < $1) ORDER BY seq LIMIT 100",
        )
        .bind(now)
        .fetch_all(self.db.pool())
        .await?;
        let outcomes: Vec<Result<Option<Delivery>>> = futures_util::stream::iter(due)
            .map(|(seq, attempts)| async move { self.deliver_webhook(sink, seq, attempts).await })
            .buffer_unordered(4)
            .collect()
            .await;
        let (mut delivered, mut retrying, mut dead) = (0, 0, 0);
        for outcome in outcomes {
            match outcome? {
                Some(Delivery::Delivered) => delivered += 1,
                Some(Delivery::Retrying) => retrying += 1,
                Some(Delivery::Dead) => dead += 1,
                None => {}
            }
        }
        Ok((delivered, retrying, dead))
    }

    /// One delivery: claimed, sent, its outcome recorded; `None` when another console has it.
    async fn deliver_webhook(&self, sink: &webhook::WebhookSink, seq: i64, attempts: i64) -> Result<Option<Delivery>> {
        let now = self.now().timestamp_millis();
        let claimed = sqlx::query(
            "UPDATE siem_deliveries SET lease_until_ms = $1 WHERE sink = 'webhook' AND seq = $2 AND state = 'pending' \
             AND attempts = $3 AND (lease_until_ms IS NULL OR lease_until_ms < $4)",
        )
        .bind(now + DELIVERY_LEASE_MS)
        .bind(seq)
        .bind(attempts)
        .bind(now)
        .execute(self.db.pool())
        .await?;
        if claimed.rows_affected() != 1 {
            return Ok(None);
        }
        let sent = match events_between(&self.db, seq, seq).await?.first() {
            Some(event) => sink.send(event).await,
            None => Err(format!("event {seq} is no longer in the trail")),
        };
        let attempts = attempts + 1;
        let now = self.now().timestamp_millis();
        match sent {
            Ok(()) => {
                // Delivered: the row has done its work (the cursor is past it), so it goes, and
                // the outbox holds only what is still owed (no table growing with the trail).
                sqlx::query("DELETE FROM siem_deliveries WHERE sink = 'webhook' AND seq = $1 AND attempts = $2")
                    .bind(seq)
                    .bind(attempts - 1)
                    .execute(self.db.pool())
                    .await?;
                Ok(Some(Delivery::Delivered))
            }
            Err(problem) => {
                let dead = attempts >= i64::from(self.settings.alert_max_attempts);
                let base = i64::try_from(self.settings.alert_retry_base.as_millis()).unwrap_or(i64::MAX);
                let backoff =
                    base.saturating_mul(1i64 << (attempts - 1).clamp(0, 30)).min(crate::core::alerting::MAX_BACKOFF_MS);
                sqlx::query(
                    "UPDATE siem_deliveries SET state = $1, attempts = $2, next_attempt_at_ms = $3, lease_until_ms = NULL, \
                     last_error = $4 WHERE sink = 'webhook' AND seq = $5",
                )
                .bind(if dead { "dead" } else { "pending" })
                .bind(attempts)
                .bind(if dead { now } else { now.saturating_add(backoff) })
                .bind(&problem)
                .bind(seq)
                .execute(self.db.pool())
                .await?;
                if dead {
                    tracing::error!(seq, attempts, error = %problem, "SIEM webhook delivery gave up (dead letter)");
                    let error = Error::Siem(format!(
                        "the SIEM webhook did not take audit event {seq} after {attempts} attempts ({problem}); \
                         `smtp-vault siem redrive` sends the dead letters again"
                    ));
                    self.report_job_failure("siem-webhook", &error).await;
                    Ok(Some(Delivery::Dead))
                } else {
                    tracing::warn!(seq, attempts, error = %problem, "SIEM webhook delivery failed; will retry");
                    Ok(Some(Delivery::Retrying))
                }
            }
        }
    }

    /// Sends the dead-lettered webhook deliveries again (after the receiver is fixed); returns
    /// how many were re-queued.
    ///
    /// # Errors
    /// Database errors.
    pub async fn redrive_siem_dead_letters(&self) -> Result<u64> {
        let requeued = sqlx::query(
            "UPDATE siem_deliveries SET state = 'pending', attempts = 0, next_attempt_at_ms = $1, lease_until_ms = NULL \
             WHERE state = 'dead'",
        )
        .bind(self.now().timestamp_millis())
        .execute(self.db.pool())
        .await?;
        Ok(requeued.rows_affected())
    }

    /// Where each sink stands: `(sink, last event handed over, events not yet delivered
    /// (behind the head, or queued and owed), deliveries waiting, dead letters)`.
    ///
    /// # Errors
    /// Database errors.
    pub async fn siem_status(&self) -> Result<Vec<(String, i64, i64, i64, i64)>> {
        let (head,): (i64,) =
            sqlx::query_as("SELECT seq FROM audit_head WHERE id = 1").fetch_one(self.db.pool()).await?;
        let mut out = Vec::new();
        for (name, configured) in [("syslog", self.siem.syslog.is_some()), ("webhook", self.siem.webhook.is_some())] {
            if !configured {
                continue;
            }
            let (cursor,): (i64,) = sqlx::query_as("SELECT seq FROM siem_cursors WHERE sink = $1")
                .bind(name)
                .fetch_one(self.db.pool())
                .await?;
            let count = |state: &'static str| {
                let db = self.db.clone();
                async move {
                    let (n,): (i64,) =
                        sqlx::query_as("SELECT COUNT(*) FROM siem_deliveries WHERE sink = $1 AND state = $2")
                            .bind(name)
                            .bind(state)
                            .fetch_one(db.pool())
                            .await?;
                    Ok::<i64, Error>(n)
                }
            };
            let (pending, dead) = (count("pending").await?, count("dead").await?);
            // For webhooks the cursor moves when a delivery is queued: what is still owed is
            // behind too.
            out.push((name.to_owned(), cursor, head - cursor + pending + dead, pending, dead));
        }
        Ok(out)
    }
}
