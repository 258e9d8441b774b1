//! The chain itself: the keyed MAC over each event and its predecessor, the append inside the
//! caller's transaction (fail closed), and verification that names the first broken link.

use super::{Anchor, GENESIS_HASH, NewEvent};
use crate::core::access::{Actor, ClientInfo};
use crate::core::db::{AuditEventRow, Backend, Db, WriteTx};
use crate::core::error::{Error, Result};
use crate::model::TenantId;
use chrono::{DateTime, Utc};
use futures_util::StreamExt;
use hmac::{Hmac, KeyInit, Mac};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

pub(super) type HmacSha256 = Hmac<Sha256>;

/// The audit chain's keys, derived from the keyring: one MACs events, one MACs anchors.
/// Whoever can write the database but not read the keyring can neither forge an event nor an
/// anchor.
#[derive(Clone)]
pub struct ChainKey {
    events: Zeroizing<[u8; 32]>,
    pub(super) anchors: Zeroizing<[u8; 32]>,
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

    pub(super) fn mac(key: &[u8; 32], bytes: &[u8]) -> String {
        // A 32-byte key is always a valid HMAC key.
        let mut mac = <HmacSha256 as KeyInit>::new_from_slice(key).unwrap_or_else(|_| unreachable!());
        mac.update(bytes);
        hex::encode(mac.finalize().into_bytes())
    }
}

pub(super) struct HashInput<'a> {
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
    pub(super) fn encode(&self, version: &[u8]) -> Vec<u8> {
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
    pub(super) fn digest(&self, key: Option<&ChainKey>) -> String {
        match key {
            Some(key) => ChainKey::mac(&key.events, &self.encode(b"smtp-vault-audit-v2")),
            None => hex::encode(Sha256::digest(self.encode(b"smtp-vault-audit-v1"))),
        }
    }

    pub(super) fn of_row(row: &AuditEventRow) -> HashInput<'_> {
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
pub(super) fn first_altered(page: &[AuditEventRow], keyed_from: i64, key: Option<&ChainKey>) -> Option<usize> {
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

/// The events numbered `from..=to`, in order.
pub(super) async fn chain_page(db: &Db, from: i64, to: i64) -> Result<Vec<AuditEventRow>> {
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
    pub(super) const PAGE: i64 = 5000;
    pub(super) const IN_FLIGHT: usize = 4;
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
