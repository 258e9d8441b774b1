//! The hash-chained audit log (ARCHITECTURE §4) and its anchors. Each event carries a MAC
//! (HMAC-SHA256 under a key derived from the keyring, which the database never holds) over its
//! fields and its predecessor's; events from before the chain was keyed keep their SHA-256 and
//! are pinned by the first keyed event. MACed anchors (the head's number and hash) go to the
//! backup target, so cutting the tail or moving the keyed boundary shows too. Appends happen
//! inside the caller's transaction, so an event exists exactly when the change it records does,
//! and a failed append fails the operation (fail closed). Details never hold a secret: callers
//! pass ids, versions and reasons only.

use crate::core::access::authorize;
use crate::core::access::{Actor, ClientInfo};
use crate::core::db::{AuditEventRow, Backend, Db, WriteTx};
use crate::core::error::{Error, Result};
use crate::model::Permission;
use crate::model::TenantId;
use chrono::{DateTime, Utc};
use futures_util::{StreamExt, TryStreamExt};
use hmac::{Hmac, KeyInit, Mac};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

type HmacSha256 = Hmac<Sha256>;

/// The audit chain's keys, derived from the keyring: one MACs events, one MACs anchors.
/// Whoever can write the database but not read the keyring can neither forge an event nor an
/// anchor.
#[derive(Clone)]
pub struct ChainKey {
    events: Zeroizing<[u8; 32]>,
    anchors: Zeroizing<[u8; 32]>,
}

impl std::fmt::Debug for ChainKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ChainKey(..)")
    }
}

impl ChainKey {
    /// The keys of `keyring`.
    #[must_use]
    pub fn from_keyring(keyring: &crate::core::crypto::Keyring) -> Self {
        Self { events: keyring.mac_key("audit-events"), anchors: keyring.mac_key("audit-anchors") }
    }

    fn mac(key: &[u8; 32], bytes: &[u8]) -> String {
        // A 32-byte key is always a valid HMAC key.
        let mut mac = <HmacSha256 as KeyInit>::new_from_slice(key).unwrap_or_else(|_| unreachable!());
        mac.update(bytes);
        hex::encode(mac.finalize().into_bytes())
    }
}

/// Hash the first event links to.
pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// How much an event matters to a reviewer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    /// Routine.
    Info,
    /// Worth a look.
    Warning,
    /// Needs a person now.
    Critical,
}

impl Severity {
    /// Stored name.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::Critical => "critical",
        }
    }
}

/// Every kind of audited event. The names are what reviewers filter on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventType {
    /// A credential was stored through the API.
    CredentialStored,
    /// A plaintext credential was returned to a caller.
    CredentialSecretRead,
    /// A stored ciphertext failed its integrity check.
    CredentialIntegrityFailed,
    /// A secret was re-encrypted under the active key.
    CredentialRewrapped,
    /// A service token was created.
    ServiceTokenCreated,
    /// A service token was revoked.
    ServiceTokenRevoked,
    /// A key was added to the keyring.
    KeyringKeyAdded,
    /// `vault-setup` configured Vault.
    VaultSetupCompleted,
    /// An enrollment invite was created.
    AdminInvited,
    /// An admin enrolled their first passkey.
    AdminEnrolled,
    /// An admin's role changed.
    AdminRoleChanged,
    /// An admin was disabled.
    AdminDisabled,
    /// A passkey was registered.
    PasskeyAdded,
    /// A passkey was renamed.
    PasskeyRenamed,
    /// A passkey was removed.
    PasskeyRemoved,
    /// A passkey login succeeded.
    LoginSucceeded,
    /// A login attempt failed.
    LoginFailed,
    /// An admin signed out.
    LoggedOut,
    /// A step-up re-authentication succeeded.
    ReauthSucceeded,
    /// A step-up re-authentication failed.
    ReauthFailed,
    /// A reveal window was opened.
    RevealGranted,
    /// A reveal was refused (role, or no open window).
    RevealRefused,
    /// A plaintext credential was sent to an admin.
    CredentialRevealed,
    /// A reveal window was closed early.
    RevealRevoked,
    /// A reveal window closed by time.
    RevealExpired,
    /// A rotation began (pending password stored).
    RotationStarted,
    /// A rotation finished: the new password is current.
    CredentialRotated,
    /// A rotation gave up (`needs_reconcile`).
    RotationFailed,
    /// An interrupted rotation was settled by keeping the current password.
    RotationRolledBack,
    /// A rotation was deferred.
    RotationDeferred,
    /// A 7-day rotation notice was queued.
    RotationNoticeQueued,
    /// The heartbeat found the stored password refused.
    HeartbeatDrifted,
    /// A scheduled job ran.
    JobRan,
    /// A tenant's settings changed.
    TenantSettingsChanged,
    /// An emergency reset began: grants revoked, incident opened, security alerted.
    EmergencyReset,
    /// An emergency reset's rotation finished (or failed); the incident records the outcome.
    EmergencyResetFinished,
    /// A second admin acknowledged an incident.
    IncidentAcknowledged,
    /// An acknowledgment was refused (the resetting admin tried to acknowledge their own reset).
    IncidentAckRefused,
    /// An incident stayed unacknowledged past the limit; an alert was raised.
    IncidentOverdue,
    /// An alert reached a channel.
    AlertDelivered,
    /// An alert gave up on a channel after the last attempt (dead letter).
    AlertDeliveryFailed,
    /// A dead-lettered alert was queued again.
    AlertRetried,
    /// An admin acknowledged an alert.
    AlertAcknowledged,
    /// A test alert was sent.
    TestAlertRaised,
    /// A backup was written.
    BackupCreated,
    /// Retention deleted backups.
    BackupsPruned,
    /// A backup was restored into Vault.
    BackupRestored,
    /// A tenant was recovered onto a replacement server.
    CredentialsRecovered,
    /// A disaster-recovery drill ran.
    DrDrillRan,
    /// A tenant's Mailu API URL (where its passwords are sent) changed; committed before the
    /// first byte goes to the new host.
    MailuDestinationChanged,
    /// A recovery onto a replacement server failed (nothing recorded as recovered).
    RecoveryFailed,
    /// An invite was revoked before it was used.
    InviteRevoked,
}

impl EventType {
    /// Stored name.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            EventType::CredentialStored => "credential_stored",
            EventType::CredentialSecretRead => "credential_secret_read",
            EventType::CredentialIntegrityFailed => "credential_integrity_failed",
            EventType::CredentialRewrapped => "credential_rewrapped",
            EventType::ServiceTokenCreated => "service_token_created",
            EventType::ServiceTokenRevoked => "service_token_revoked",
            EventType::KeyringKeyAdded => "keyring_key_added",
            EventType::VaultSetupCompleted => "vault_setup_completed",
            EventType::AdminInvited => "admin_invited",
            EventType::AdminEnrolled => "admin_enrolled",
            EventType::AdminRoleChanged => "admin_role_changed",
            EventType::AdminDisabled => "admin_disabled",
            EventType::PasskeyAdded => "passkey_added",
            EventType::PasskeyRenamed => "passkey_renamed",
            EventType::PasskeyRemoved => "passkey_removed",
            EventType::LoginSucceeded => "login_succeeded",
            EventType::LoginFailed => "login_failed",
            EventType::LoggedOut => "logged_out",
            EventType::ReauthSucceeded => "reauth_succeeded",
            EventType::ReauthFailed => "reauth_failed",
            EventType::RevealGranted => "reveal_granted",
            EventType::RevealRefused => "reveal_refused",
            EventType::CredentialRevealed => "credential_revealed",
            EventType::RevealRevoked => "reveal_revoked",
            EventType::RevealExpired => "reveal_expired",
            EventType::RotationStarted => "rotation_started",
            EventType::CredentialRotated => "credential_rotated",
            EventType::RotationFailed => "rotation_failed",
            EventType::RotationRolledBack => "rotation_rolled_back",
            EventType::RotationDeferred => "rotation_deferred",
            EventType::RotationNoticeQueued => "rotation_notice_queued",
            EventType::HeartbeatDrifted => "heartbeat_drifted",
            EventType::JobRan => "job_ran",
            EventType::TenantSettingsChanged => "tenant_settings_changed",
            EventType::EmergencyReset => "emergency_reset",
            EventType::EmergencyResetFinished => "emergency_reset_finished",
            EventType::IncidentAcknowledged => "incident_acknowledged",
            EventType::IncidentAckRefused => "incident_ack_refused",
            EventType::IncidentOverdue => "incident_overdue",
            EventType::AlertDelivered => "alert_delivered",
            EventType::AlertDeliveryFailed => "alert_delivery_failed",
            EventType::AlertRetried => "alert_retried",
            EventType::AlertAcknowledged => "alert_acknowledged",
            EventType::TestAlertRaised => "test_alert_raised",
            EventType::BackupCreated => "backup_created",
            EventType::BackupsPruned => "backups_pruned",
            EventType::BackupRestored => "backup_restored",
            EventType::CredentialsRecovered => "smtp_credentials_recovered",
            EventType::DrDrillRan => "dr_drill_ran",
            EventType::MailuDestinationChanged => "mailu_destination_changed",
            EventType::RecoveryFailed => "recovery_failed",
            EventType::InviteRevoked => "invite_revoked",
        }
    }
}

/// An event about to be appended.
#[derive(Debug, Clone)]
pub struct NewEvent {
    /// What happened.
    pub event_type: EventType,
    /// How much it matters.
    pub severity: Severity,
    /// The tenant concerned, if any.
    pub tenant: Option<TenantId>,
    /// Non-secret details (ids, versions, reasons).
    pub details: Value,
}

impl NewEvent {
    /// An info event with details.
    #[must_use]
    pub fn info(event_type: EventType, tenant: Option<&TenantId>, details: Value) -> Self {
        Self { event_type, severity: Severity::Info, tenant: tenant.cloned(), details }
    }

    /// Same event with another severity.
    #[must_use]
    pub fn with_severity(mut self, severity: Severity) -> Self {
        self.severity = severity;
        self
    }
}

struct HashInput<'a> {
    seq: i64,
    occurred_at_ms: i64,
    event_type: &'a str,
    severity: &'a str,
    actor_kind: &'a str,
    actor_id: &'a str,
    tenant_id: Option<&'a str>,
    client_ip: Option<&'a str>,
    request_id: Option<&'a str>,
    details: &'a str,
    prev_hash: &'a str,
}

impl HashInput<'_> {
    /// Length-prefixed fields, so no two different events serialise to the same bytes.
    fn encode(&self, version: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(256 + self.details.len());
        let mut put = |bytes: Option<&[u8]>| match bytes {
            None => out.push(0u8),
            Some(b) => {
                out.push(1u8);
                out.extend_from_slice(&(b.len() as u64).to_be_bytes());
                out.extend_from_slice(b);
            }
        };
        put(Some(version));
        put(Some(&self.seq.to_be_bytes()));
        put(Some(&self.occurred_at_ms.to_be_bytes()));
        put(Some(self.event_type.as_bytes()));
        put(Some(self.severity.as_bytes()));
        put(Some(self.actor_kind.as_bytes()));
        put(Some(self.actor_id.as_bytes()));
        put(self.tenant_id.map(str::as_bytes));
        put(self.client_ip.map(str::as_bytes));
        put(self.request_id.map(str::as_bytes));
        put(Some(self.details.as_bytes()));
        put(Some(self.prev_hash.as_bytes()));
        out
    }

    /// The event's chain value: its MAC when keyed, else (events from before the chain was
    /// keyed) its SHA-256.
    fn digest(&self, key: Option<&ChainKey>) -> String {
        match key {
            Some(key) => ChainKey::mac(&key.events, &self.encode(b"smtp-vault-audit-v2")),
            None => hex::encode(Sha256::digest(self.encode(b"smtp-vault-audit-v1"))),
        }
    }

    fn of_row(row: &AuditEventRow) -> HashInput<'_> {
        HashInput {
            seq: row.seq,
            occurred_at_ms: row.occurred_at_ms,
            event_type: &row.event_type,
            severity: &row.severity,
            actor_kind: &row.actor_kind,
            actor_id: &row.actor_id,
            tenant_id: row.tenant_id.as_deref(),
            client_ip: row.client_ip.as_deref(),
            request_id: row.request_id.as_deref(),
            details: &row.details,
            prev_hash: &row.prev_hash,
        }
    }
}

/// The SHA-256 chain value an event from before the chain was keyed must carry, given its
/// fields and its predecessor's hash (the row's own `hash` is ignored): for tools that check an
/// exported trail offline, and fixtures. Keyed events need the keyring (`audit verify`).
#[must_use]
pub fn event_hash(row: &AuditEventRow) -> String {
    HashInput::of_row(row).digest(None)
}

/// Appends one event inside the caller's transaction and returns its sequence number.
///
/// # Errors
/// Any database error; the caller must then roll back (fail closed).
pub async fn append(
    conn: &mut WriteTx,
    actor: &Actor,
    client: &ClientInfo,
    event: NewEvent,
    now: DateTime<Utc>,
) -> Result<i64> {
    // Bumping the head first takes the write lock (SQLite) or the row lock (PostgreSQL), so
    // concurrent appenders queue here instead of both linking to the same predecessor; it
    // returns the new number and the predecessor's hash in the same round trip.
    let (seq, prev_hash, keyed_from): (i64, String, i64) =
        sqlx::query_as("UPDATE audit_head SET seq = seq + 1 WHERE id = 1 RETURNING seq, hash, keyed_from")
            .fetch_optional(&mut **conn)
            .await?
            .ok_or_else(|| Error::AuditChain("the chain head row is missing".into()))?;
    // SECURITY: an event past the boundary is only ever written keyed; without the key the
    // append (and so the operation) fails rather than weaken the chain.
    let key = if seq >= keyed_from { Some(conn.chain_key()?) } else { None };
    let (actor_kind, actor_id) = actor.audit_identity();
    let details = event.details.to_string();
    let client_ip = client.ip.map(|ip| ip.to_string());
    let input = HashInput {
        seq,
        occurred_at_ms: now.timestamp_millis(),
        event_type: event.event_type.as_str(),
        severity: event.severity.as_str(),
        actor_kind,
        actor_id: &actor_id,
        tenant_id: event.tenant.as_ref().map(TenantId::as_str),
        client_ip: client_ip.as_deref(),
        request_id: client.request_id.as_deref(),
        details: &details,
        prev_hash: &prev_hash,
    };
    let hash = input.digest(key);
    sqlx::query(
        "INSERT INTO audit_events (seq, occurred_at_ms, event_type, severity, actor_kind, actor_id, \
         tenant_id, client_ip, request_id, details, prev_hash, hash) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
    )
    .bind(seq)
    .bind(input.occurred_at_ms)
    .bind(input.event_type)
    .bind(input.severity)
    .bind(input.actor_kind)
    .bind(input.actor_id)
    .bind(input.tenant_id)
    .bind(input.client_ip)
    .bind(input.request_id)
    .bind(input.details)
    .bind(input.prev_hash)
    .bind(&hash)
    .execute(&mut **conn)
    .await?;
    sqlx::query("UPDATE audit_head SET hash = $1 WHERE id = 1").bind(&hash).execute(&mut **conn).await?;
    Ok(seq)
}

/// Appends one event in its own transaction (for events with no other DB change).
///
/// # Errors
/// Any database error.
// A debug span (off at the default `info`): the benchmark times the request's parts by it.
#[tracing::instrument(level = "debug", name = "audit_record", skip_all)]
pub async fn record(db: &Db, actor: &Actor, client: &ClientInfo, event: NewEvent, now: DateTime<Utc>) -> Result<i64> {
    let mut tx = db.begin_write().await?;
    let seq = append(&mut tx, actor, client, event, now).await?;
    tx.commit().await?;
    Ok(seq)
}

/// The index of the first row whose content does not match its hash (its MAC from
/// `keyed_from` on), hashing the page in parallel chunks.
fn first_altered(page: &[AuditEventRow], keyed_from: i64, key: Option<&ChainKey>) -> Option<usize> {
    let threads = std::thread::available_parallelism().map_or(1, std::num::NonZero::get).min(8);
    let chunk = page.len().div_ceil(threads).max(1);
    std::thread::scope(|scope| {
        let workers: Vec<_> = page
            .chunks(chunk)
            .enumerate()
            .map(|(n, rows)| {
                scope.spawn(move || {
                    rows.iter()
                        .position(|row| {
                            let key = if row.seq >= keyed_from { key } else { None };
                            HashInput::of_row(row).digest(key) != row.hash
                        })
                        .map(|i| n * chunk + i)
                })
            })
            .collect();
        workers.into_iter().filter_map(|w| w.join().ok().flatten()).min()
    })
}

/// The first place the chain stops being trustworthy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokenLink {
    /// Sequence number of the first event that fails.
    pub seq: i64,
    /// Why it fails: it names a rewrite, a truncation or a moved boundary as such.
    pub reason: String,
}

/// Outcome of [`verify`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainReport {
    /// Events checked.
    pub events: u64,
    /// Hash of the last event checked.
    pub head_hash: String,
    /// The first broken link, if any.
    pub first_broken: Option<BrokenLink>,
    /// The first event sealed with the keyring's MAC (earlier ones are pinned by it).
    pub keyed_from: i64,
    /// The anchor checked against, if any: `(seq, written at)`.
    pub anchor: Option<(i64, DateTime<Utc>)>,
}

/// A checkpoint of the chain kept outside the database: how many events there were, the last
/// one's hash and where keying began, MACed with a key the database never holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Anchor {
    /// Events in the chain when it was written.
    pub seq: i64,
    /// The hash of event `seq`.
    pub hash: String,
    /// The chain's keyed boundary then.
    pub keyed_from: i64,
    /// When it was written (ms).
    pub written_at_ms: i64,
    /// HMAC over the fields above.
    pub mac: String,
}

impl Anchor {
    fn signed_bytes(seq: i64, hash: &str, keyed_from: i64, written_at_ms: i64) -> Vec<u8> {
        format!("smtp-vault-anchor-v1|{seq}|{hash}|{keyed_from}|{written_at_ms}").into_bytes()
    }

    /// An anchor for the given head, MACed.
    #[must_use]
    pub fn new(key: &ChainKey, seq: i64, hash: &str, keyed_from: i64, now: DateTime<Utc>) -> Self {
        let written_at_ms = now.timestamp_millis();
        let mac = ChainKey::mac(&key.anchors, &Self::signed_bytes(seq, hash, keyed_from, written_at_ms));
        Self { seq, hash: hash.to_owned(), keyed_from, written_at_ms, mac }
    }

    /// True when the MAC holds.
    #[must_use]
    pub fn authentic(&self, key: &ChainKey) -> bool {
        let expected =
            ChainKey::mac(&key.anchors, &Self::signed_bytes(self.seq, &self.hash, self.keyed_from, self.written_at_ms));
        subtle::ConstantTimeEq::ct_eq(expected.as_bytes(), self.mac.as_bytes()).into()
    }

    fn written_at(&self) -> DateTime<Utc> {
        DateTime::from_timestamp_millis(self.written_at_ms).unwrap_or_default()
    }
}

/// The events numbered `from..=to`, in order.
async fn chain_page(db: &Db, from: i64, to: i64) -> Result<Vec<AuditEventRow>> {
    if db.backend() == Backend::Postgres {
        return Ok(sqlx::query_as::<_, AuditEventRow>(
            "SELECT seq, occurred_at_ms, event_type, severity, actor_kind, actor_id, tenant_id, client_ip, \
             request_id, details, prev_hash, hash FROM audit_events WHERE seq >= $1 AND seq <= $2 ORDER BY seq",
        )
        .bind(from)
        .bind(to)
        .fetch_all(db.pool())
        .await?);
    }
    // SQLite hands rows to sqlx's `Any` driver one by one, each column converted twice: about
    // 6 µs an event, most of a full verification. The page as one JSON document, built by
    // SQLite and parsed by serde, carries the same values (integers stay integers, text is
    // escaped losslessly) at a fraction of that.
    let (page,): (Option<String>,) = sqlx::query_as(
        "SELECT json_group_array(json_array(seq, occurred_at_ms, event_type, severity, actor_kind, actor_id, \
         tenant_id, client_ip, request_id, details, prev_hash, hash) ORDER BY seq) \
         FROM audit_events WHERE seq >= $1 AND seq <= $2",
    )
    .bind(from)
    .bind(to)
    .fetch_one(db.pool())
    .await?;
    serde_json::from_str(page.as_deref().unwrap_or("[]"))
        .map_err(|e| Error::Internal(format!("audit page {from}..={to} did not read back: {e}")))
}

/// Recomputes every hash (MAC) in order and checks each link, the numbering, the head row and
/// every anchor given (newest first): an anchored event whose hash changed was rewritten, a
/// head behind the newest anchor was cut, a boundary unlike an anchor's was moved to pass
/// rewritten events off as unkeyed ones. Every retained anchor counts, not only the newest: a
/// cut chain that has grown past an old anchor again still differs from it.
///
/// # Errors
/// Database errors, and [`Error::AuditChain`] when keyed events are present but this process
/// has no keyring to check them with; a broken chain is reported in
/// [`ChainReport::first_broken`].
pub async fn verify(db: &Db, anchors: &[Anchor]) -> Result<ChainReport> {
    let anchor = anchors.first();
    // The head first: events appended while this runs are not this run's business (and must
    // not look like a truncated chain). Then pages of seq ranges, several fetched at once on
    // their own connections while earlier ones are hashed on the blocking pool across the
    // cores: links are checked in order, digests (independent per event) in parallel.
    const PAGE: i64 = 5000;
    const IN_FLIGHT: usize = 4;
    let (head_seq, head_hash, keyed_from): (i64, String, i64) =
        sqlx::query_as("SELECT seq, hash, keyed_from FROM audit_head WHERE id = 1").fetch_one(db.pool()).await?;
    let key = db.chain_key().cloned();
    if key.is_none() && head_seq >= keyed_from {
        return Err(Error::AuditChain(
            "the chain's events are MACed with a key from the keyring, which this process has not loaded \
             (SMTP_VAULT_KEYRING)"
                .into(),
        ));
    }
    let anchored = anchor.map(|a| (a.seq, a.written_at()));
    let report = |events: u64, head_hash: &str, first_broken: Option<BrokenLink>| ChainReport {
        events,
        head_hash: head_hash.to_owned(),
        first_broken,
        keyed_from,
        anchor: anchored,
    };
    let broken =
        |seq: i64, reason: String, events: u64, head: &str| report(events, head, Some(BrokenLink { seq, reason }));
    if let Some(moved) = anchors.iter().find(|a| a.keyed_from != keyed_from) {
        let day = moved.written_at().format("%Y-%m-%d %H:%M UTC");
        let reason = format!(
            "rewritten: the chain claims its MACs begin at event {keyed_from}, but the anchor of {day} says {} \
             (events were passed off as written before the chain was keyed)",
            moved.keyed_from
        );
        return Ok(broken(keyed_from.min(moved.keyed_from), reason, 0, GENESIS_HASH));
    }
    if let Some(anchor) = anchor {
        let day = anchor.written_at().format("%Y-%m-%d %H:%M UTC");
        if head_seq < anchor.seq {
            let reason = format!(
                "truncated: the anchor of {day} records {} events, the chain now has {head_seq} (events removed \
                 from the end)",
                anchor.seq
            );
            return Ok(broken(head_seq + 1, reason, 0, GENESIS_HASH));
        }
    }
    let pages = (0..head_seq.div_euclid(PAGE) + 1).map(|n| {
        let db = db.clone();
        tokio::spawn(async move { chain_page(&db, n * PAGE + 1, ((n + 1) * PAGE).min(head_seq)).await })
    });
    let mut pages = futures_util::stream::iter(pages).buffered(IN_FLIGHT);
    let mut expected_prev = GENESIS_HASH.to_owned();
    let mut expected_seq = 1i64;
    let mut events = 0u64;
    while let Some(page) = pages.next().await {
        let page = page.map_err(|e| Error::Internal(format!("audit page: {e}")))??;
        let key = key.clone();
        let (page, altered) = tokio::task::spawn_blocking(move || {
            let altered = first_altered(&page, keyed_from, key.as_ref());
            (page, altered)
        })
        .await
        .map_err(|e| Error::Internal(format!("audit hashing: {e}")))?;
        for (i, row) in page.into_iter().enumerate() {
            if row.seq != expected_seq {
                let reason = format!("event {expected_seq} is missing (next present is {})", row.seq);
                return Ok(broken(expected_seq, reason, events, &expected_prev));
            }
            if row.prev_hash != expected_prev {
                return Ok(broken(
                    row.seq,
                    "does not link to the previous event's hash".into(),
                    events,
                    &expected_prev,
                ));
            }
            if altered == Some(i) {
                let how = if row.seq >= keyed_from {
                    "rewritten: its MAC does not match its content (altered, or written without the keyring)"
                } else {
                    "content does not match its hash (altered)"
                };
                return Ok(broken(row.seq, how.into(), events, &expected_prev));
            }
            if let Some(anchor) = anchors.iter().find(|a| a.seq == row.seq && a.hash != row.hash) {
                let reason = format!(
                    "rewritten: event {} no longer has the hash anchored on {}",
                    anchor.seq,
                    anchor.written_at().format("%Y-%m-%d %H:%M UTC")
                );
                return Ok(broken(row.seq, reason, events, &expected_prev));
            }
            events += 1;
            expected_seq += 1;
            expected_prev = row.hash;
        }
    }
    if expected_seq - 1 != head_seq || expected_prev != head_hash {
        let reason = format!(
            "truncated: the chain head says {head_seq} events but {} are present (events removed from the end)",
            expected_seq - 1
        );
        return Ok(broken(expected_seq, reason, events, &expected_prev));
    }
    Ok(report(events, &expected_prev, None))
}

impl crate::core::Core {
    /// A page of the audit trail, newest first, filtered; `cursor` continues after a page.
    /// Filters combine with AND; the text search looks inside the details.
    ///
    /// # Errors
    /// [`Error::MissingScope`] without `audit:read` (security reviewers and platform admins
    /// have it); [`Error::InvalidInput`] for a bad cursor, severity or tenant.
    pub async fn query_audit(
        &self,
        actor: &Actor,
        query: &crate::model::AuditQuery,
    ) -> Result<crate::model::AuditPage> {
        authorize(actor, Permission::ReadAudit)?;
        let limit = query.limit.unwrap_or(50);
        if !(1..=500).contains(&limit) {
            return Err(Error::InvalidInput("limit is 1 to 500".into()));
        }
        let limit = i64::from(limit);
        let before = match query.cursor.as_deref().filter(|c| !c.is_empty()) {
            None => i64::MAX,
            Some(cursor) => cursor
                .parse::<i64>()
                .ok()
                .filter(|seq| *seq > 0)
                .ok_or_else(|| Error::InvalidInput("the cursor is not one this API gave out".into()))?,
        };
        let filter = AuditSqlFilter::of(query)?;
        let order = self.audit_page_order(&filter).await?;
        let (conditions, params) = filter.clause(3);
        let sql = format!("{AUDIT_SELECT} WHERE seq < $1 AND {conditions} ORDER BY {order} DESC LIMIT $2");
        let rows = bind_all(sqlx::query_as::<_, AuditEventRow>(&sql).bind(before).bind(limit + 1), params)
            .fetch_all(self.db().pool())
            .await?;
        let more = i64::try_from(rows.len()).unwrap_or(i64::MAX) > limit;
        let events: Vec<crate::model::AuditEventView> =
            rows.into_iter().take(usize::try_from(limit).unwrap_or(50)).map(AuditEventRow::view).collect();
        let next_cursor = if more { events.last().map(|e| e.seq.to_string()) } else { None };
        Ok(crate::model::AuditPage { events, next_cursor })
    }
}

impl crate::core::Core {
    /// What a page is ordered by: `seq`, or `seq + 0`, which gives the same rows in the same
    /// order but keeps the database off the `seq` key so that it reads the time index.
    ///
    /// With a time range as the only indexed filter, PostgreSQL assumes the matches are spread
    /// evenly along `seq` and walks the key back from the newest event; for a range that ends
    /// long before the newest event, that walk first crosses every later event (51 ms for three
    /// days in the middle of a million). Reading the range by its index and sorting it is
    /// cheaper when the range holds fewer events than come after it, estimated from the
    /// table's time span (two index probes).
    async fn audit_page_order(&self, filter: &AuditSqlFilter) -> Result<&'static str> {
        let Some(until) = filter.until else { return Ok("seq") };
        if !(filter.tenant.is_empty() && filter.event.is_empty() && filter.severity.is_empty()) {
            return Ok("seq");
        }
        // Two scalar subqueries: SQLite answers a lone MIN or MAX from the index, not both at once.
        let span: (Option<i64>, Option<i64>) = sqlx::query_as(
            "SELECT (SELECT MIN(occurred_at_ms) FROM audit_events), (SELECT MAX(occurred_at_ms) FROM audit_events)",
        )
        .fetch_one(self.db().pool())
        .await?;
        let (Some(first), Some(last)) = span else { return Ok("seq") };
        let inside = until.min(last).saturating_sub(filter.since.unwrap_or(first).max(first));
        let after = last.saturating_sub(until);
        Ok(if inside < after { "seq + 0" } else { "seq" })
    }
}

/// A day in milliseconds: the chart's buckets are UTC days.
const DAY_MS: i64 = 86_400_000;
/// The most bars the chart draws; a longer range shows its last days.
const CHART_MAX_DAYS: i64 = 92;

impl crate::core::Core {
    /// Events per UTC day under the filter (cursor and limit ignored): the given range, or
    /// the last 30 days, at most the last 92 days of it.
    ///
    /// # Errors
    /// [`Error::MissingScope`] without `audit:read`, [`Error::InvalidInput`]; database errors.
    pub async fn audit_per_day(
        &self,
        actor: &Actor,
        query: &crate::model::AuditQuery,
    ) -> Result<crate::model::AuditChart> {
        authorize(actor, Permission::ReadAudit)?;
        let mut filter = AuditSqlFilter::of(query)?;
        let last_day = filter.until.map_or(self.now().timestamp_millis(), |until| until - 1).div_euclid(DAY_MS);
        let first_day =
            filter.since.map_or(last_day - 29, |since| since.div_euclid(DAY_MS)).max(last_day - (CHART_MAX_DAYS - 1));
        if first_day > last_day {
            return Ok(crate::model::AuditChart::default());
        }
        filter.since = Some(filter.since.unwrap_or(i64::MIN).max(first_day * DAY_MS));
        filter.until = Some(filter.until.unwrap_or(i64::MAX).min((last_day + 1) * DAY_MS));
        let (conditions, params) = filter.clause(1);
        let sql = format!(
            "SELECT occurred_at_ms / {DAY_MS} AS day, severity, COUNT(*) FROM audit_events WHERE {conditions} \
             GROUP BY occurred_at_ms / {DAY_MS}, severity"
        );
        let counts: Vec<(i64, String, i64)> =
            bind_all(sqlx::query_as::<_, (i64, String, i64)>(&sql), params).fetch_all(self.db().pool()).await?;
        let mut days: Vec<crate::model::AuditDayCount> = (first_day..=last_day)
            .map(|day| crate::model::AuditDayCount {
                day: DateTime::from_timestamp_millis(day * DAY_MS).unwrap_or_default().format("%Y-%m-%d").to_string(),
                ..Default::default()
            })
            .collect();
        for (day, severity, n) in counts {
            let Some(slot) = usize::try_from(day - first_day).ok().and_then(|i| days.get_mut(i)) else { continue };
            let n = u64::try_from(n).unwrap_or(0);
            match severity.as_str() {
                "critical" => slot.critical += n,
                "warning" => slot.warning += n,
                _ => slot.info += n,
            }
        }
        Ok(crate::model::AuditChart { days })
    }
}

impl crate::core::Core {
    /// The chain's verification state for reviewers (recomputed now).
    ///
    /// # Errors
    /// [`Error::MissingScope`] without `audit:read`; database errors.
    pub async fn audit_chain_state(&self, actor: &Actor) -> Result<crate::model::ChainStateView> {
        authorize(actor, Permission::ReadAudit)?;
        let report = self.verify_audit_chain().await?;
        Ok(crate::model::ChainStateView {
            events: report.events,
            head_hash: report.head_hash,
            broken_seq: report.first_broken.as_ref().map(|b| b.seq),
            reason: report.first_broken.map(|b| b.reason),
        })
    }
}

const AUDIT_SELECT: &str = "SELECT seq, occurred_at_ms, event_type, severity, actor_kind, actor_id, tenant_id, client_ip, \
     request_id, details, prev_hash, hash FROM audit_events";

/// An [`crate::model::AuditQuery`]'s filters, checked and ready to bind.
struct AuditSqlFilter {
    tenant: String,
    event: String,
    severity: String,
    since: Option<i64>,
    until: Option<i64>,
    actor: String,
    text: String,
}

/// A value bound to a filter's placeholder.
enum Param<'a> {
    Text(&'a str),
    Int(i64),
}

impl AuditSqlFilter {
    fn of(query: &crate::model::AuditQuery) -> Result<Self> {
        if query.severity.as_deref().is_some_and(|s| !s.is_empty() && !["info", "warning", "critical"].contains(&s)) {
            return Err(Error::InvalidInput("severity is info, warning or critical".into()));
        }
        if let Some(tenant) = query.tenant.as_deref().filter(|t| !t.is_empty()) {
            TenantId::parse(tenant).map_err(|_| Error::InvalidInput("tenant is not a valid tenant id".into()))?;
        }
        // SECURITY: PostgreSQL refuses NUL in text (an error, not an empty answer), and no
        // recorded value holds control characters; a filter that does is refused as bad input.
        for (name, value) in [("event", &query.event), ("actor", &query.actor), ("q", &query.text)] {
            let value = value.as_deref().unwrap_or_default();
            if value.chars().count() > 200 || value.chars().any(|c| c.is_control() || c == '\u{fffd}') {
                return Err(Error::InvalidInput(format!(
                    "{name} must be at most 200 characters of valid text without control characters"
                )));
            }
        }
        let like = |text: &Option<String>| {
            text.as_deref()
                .filter(|t| !t.is_empty())
                .map(|t| {
                    // SECURITY: the caller's text is data, never pattern syntax.
                    let escaped = t.replace('\\', "\\\\").replace('%', "\\%").replace('_', "\\_");
                    format!("%{escaped}%")
                })
                .unwrap_or_default()
        };
        Ok(Self {
            tenant: query.tenant.clone().unwrap_or_default(),
            event: query.event.clone().unwrap_or_default(),
            severity: query.severity.clone().unwrap_or_default(),
            since: query.since.map(|t| t.timestamp_millis()),
            until: query.until.map(|t| t.timestamp_millis()),
            actor: like(&query.actor),
            text: like(&query.text),
        })
    }

    /// Conditions for the filters in use only, placeholders numbered from `$first`: a filter
    /// left empty must not appear in the SQL (`$2 = '' OR tenant_id = $2` would keep both
    /// databases from using the index on a million rows).
    fn clause<'a>(&'a self, first: usize) -> (String, Vec<Param<'a>>) {
        let mut conditions = vec!["1 = 1".to_owned()];
        let mut params: Vec<Param<'_>> = Vec::new();
        let mut add = |sql: &str, param: Param<'a>| {
            conditions.push(sql.replace('?', &format!("${}", first + params.len())));
            params.push(param);
        };
        for (column, value) in [("tenant_id", &self.tenant), ("event_type", &self.event), ("severity", &self.severity)]
        {
            if !value.is_empty() {
                add(&format!("{column} = ?"), Param::Text(value));
            }
        }
        if let Some(since) = self.since {
            add("occurred_at_ms >= ?", Param::Int(since));
        }
        if let Some(until) = self.until {
            add("occurred_at_ms < ?", Param::Int(until));
        }
        for (column, pattern) in [("actor_id", &self.actor), ("details", &self.text)] {
            if !pattern.is_empty() {
                add(&format!("{column} LIKE ? ESCAPE '\\'"), Param::Text(pattern));
            }
        }
        (conditions.join(" AND "), params)
    }
}

fn bind_all<'q, O>(
    mut query: sqlx::query::QueryAs<'q, sqlx::Any, O, sqlx::any::AnyArguments<'q>>,
    params: Vec<Param<'q>>,
) -> sqlx::query::QueryAs<'q, sqlx::Any, O, sqlx::any::AnyArguments<'q>> {
    for param in params {
        query = match param {
            Param::Text(text) => query.bind(text),
            Param::Int(n) => query.bind(n),
        };
    }
    query
}

impl AuditEventRow {
    fn view(self) -> crate::model::AuditEventView {
        crate::model::AuditEventView {
            seq: self.seq,
            occurred_at: DateTime::from_timestamp_millis(self.occurred_at_ms).unwrap_or_default(),
            details: serde_json::from_str(&self.details).unwrap_or(Value::String(self.details.clone())),
            event: self.event_type,
            severity: self.severity,
            actor_kind: self.actor_kind,
            actor: self.actor_id,
            tenant_id: self.tenant_id,
            client_ip: self.client_ip,
            request_id: self.request_id,
            hash: self.hash,
        }
    }
}

impl crate::core::Core {
    /// Streams every event matching `query` (oldest first; cursor and limit ignored) into
    /// `out`, for exports of any size in constant memory. Stops quietly when the receiver goes.
    ///
    /// # Errors
    /// [`Error::MissingScope`] without `audit:read`, [`Error::InvalidInput`]; database errors.
    pub async fn stream_audit(
        &self,
        actor: &Actor,
        query: &crate::model::AuditQuery,
        out: tokio::sync::mpsc::Sender<crate::model::AuditEventView>,
    ) -> Result<u64> {
        authorize(actor, Permission::ReadAudit)?;
        let filter = AuditSqlFilter::of(query)?;
        let (conditions, params) = filter.clause(1);
        let sql = format!("{AUDIT_SELECT} WHERE {conditions} ORDER BY seq");
        let mut rows = bind_all(sqlx::query_as::<_, AuditEventRow>(&sql), params).fetch(self.db().pool());
        let mut sent = 0;
        while let Some(row) = rows.try_next().await? {
            if out.send(row.view()).await.is_err() {
                break;
            }
            sent += 1;
        }
        Ok(sent)
    }

    /// Checks the actor may read the audit trail (before a stream starts, so the answer's
    /// status is right).
    ///
    /// # Errors
    /// [`Error::MissingScope`], [`Error::InvalidInput`] for a bad filter.
    pub fn check_audit_query(&self, actor: &Actor, query: &crate::model::AuditQuery) -> Result<()> {
        authorize(actor, Permission::ReadAudit)?;
        if query.cursor.is_some() || query.limit.is_some() {
            return Err(Error::InvalidInput(
                "an export takes no cursor or limit: it streams everything the filter selects".into(),
            ));
        }
        AuditSqlFilter::of(query).map(|_| ())
    }
}

/// Where anchors live on the backup target.
const ANCHOR_PREFIX: &str = "audit-anchors";
/// Anchors kept: the newest is the one that counts; a few older ones survive a bad write.
const ANCHORS_KEPT: usize = 24;

impl crate::core::Core {
    /// Writes an anchor of the chain's head to the backup target when the chain grew since the
    /// newest one (every few minutes from the monitor, and after each backup). Returns it.
    ///
    /// # Errors
    /// [`Error::AuditChain`] without the keyring; backup-target and database errors.
    pub async fn write_audit_anchor(&self) -> Result<Option<Anchor>> {
        let target = self.backup_target()?;
        let key = self.db().chain_key().ok_or_else(|| Error::AuditChain("no keyring: cannot sign an anchor".into()))?;
        let (seq, hash, keyed_from): (i64, String, i64) =
            sqlx::query_as("SELECT seq, hash, keyed_from FROM audit_head WHERE id = 1")
                .fetch_one(self.db().pool())
                .await?;
        let names = target.list(ANCHOR_PREFIX).await?;
        if names.last().is_some_and(|newest| newest.ends_with(&format!("/{seq:020}.json"))) {
            return Ok(None);
        }
        // SECURITY: an anchor is only ever written on top of the newest one. A chain that
        // contradicts it (cut, rewritten) is not re-anchored, or the console itself would turn
        // the damage into the new truth; the hourly verification reports it.
        if let Some(newest) = self.authentic_anchors(target, key, &names, 1).await?.first() {
            let at: Option<(String,)> = sqlx::query_as("SELECT hash FROM audit_events WHERE seq = $1")
                .bind(newest.seq)
                .fetch_optional(self.db().pool())
                .await?;
            let continues = newest.seq == 0 || at.is_some_and(|(h,)| h == newest.hash);
            if seq < newest.seq || newest.keyed_from != keyed_from || !continues {
                return Err(Error::AuditChain(format!(
                    "the chain does not continue the anchor of {} events; not anchoring it (run `smtp-vault audit verify`)",
                    newest.seq
                )));
            }
        }
        let anchor = Anchor::new(key, seq, &hash, keyed_from, self.now());
        let bytes = serde_json::to_vec(&anchor).map_err(|e| Error::Internal(e.to_string()))?;
        target.put(&format!("{ANCHOR_PREFIX}/{seq:020}.json"), bytes).await?;
        for old in names.iter().rev().skip(ANCHORS_KEPT - 1) {
            target.delete(old).await?;
        }
        Ok(Some(anchor))
    }

    /// The newest authentic anchor on the backup target.
    ///
    /// # Errors
    /// Backup-target errors.
    pub async fn latest_audit_anchor(&self) -> Result<Option<Anchor>> {
        let (Ok(target), Some(key)) = (self.backup_target(), self.db().chain_key()) else { return Ok(None) };
        let names = target.list(ANCHOR_PREFIX).await?;
        Ok(self.authentic_anchors(target, key, &names, 1).await?.into_iter().next())
    }

    /// Every authentic anchor on the backup target, newest (highest) first. One that does not
    /// authenticate is skipped and logged: someone who can write the bucket but not read the
    /// keyring.
    ///
    /// # Errors
    /// Backup-target errors.
    pub async fn audit_anchors(&self) -> Result<Vec<Anchor>> {
        let (Ok(target), Some(key)) = (self.backup_target(), self.db().chain_key()) else { return Ok(Vec::new()) };
        let names = target.list(ANCHOR_PREFIX).await?;
        self.authentic_anchors(target, key, &names, usize::MAX).await
    }

    /// Up to `limit` authentic anchors among the listed `names` (sorted), newest first; only
    /// as many are read as needed.
    async fn authentic_anchors(
        &self,
        target: &crate::core::backup::BackupTarget,
        key: &ChainKey,
        names: &[String],
        limit: usize,
    ) -> Result<Vec<Anchor>> {
        let mut anchors = Vec::new();
        for name in names.iter().rev() {
            if anchors.len() >= limit {
                break;
            }
            let Some(bytes) = target.get(name).await? else { continue };
            match serde_json::from_slice::<Anchor>(&bytes) {
                Ok(anchor) if anchor.authentic(key) && name.ends_with(&format!("/{:020}.json", anchor.seq)) => {
                    anchors.push(anchor);
                }
                _ => tracing::warn!(anchor = %name, "an audit anchor on the backup target does not authenticate"),
            }
        }
        Ok(anchors)
    }
}
