//! Tenant credentials: store (encrypt, write to Vault with check-and-set, record), read the
//! plaintext (audited before it is returned), metadata and the tenant list, and `keys rewrap`.
//!
//! Invariant: the DB row and its audit event commit only if the Vault write succeeded, and the
//! audit event of a secret read commits before the plaintext leaves this module.

pub mod approval;
mod notices;
pub mod provisioning;
pub(crate) mod records;
pub mod reveal;
pub mod tenants;

mod handout;

use crate::core::rotation::state::{self, Transition};

use crate::core::Core;
use crate::core::access::authorize;
use crate::core::access::{Actor, ClientInfo};
use crate::core::audit::{self, EventType, NewEvent, Severity};
use crate::core::crypto::{CryptoError, Keyring, SecretField};
use crate::core::db::{Backend, TenantRow};
use crate::core::error::{Error, Result};
use crate::core::vault::CredentialDocument;
use crate::model::{
    CredentialMetadataView, CredentialSecretView, CredentialState, Permission, SmtpTls, StoreCredentialRequest,
    StoredCredentialView, TenantId,
};
use chrono::{DateTime, Utc};
use serde_json::json;

const TENANT_COLUMNS: &str = "tenant_id, state, version, username, smtp_host, smtp_port, smtp_tls, webmail_url, \
     mailu_api_url, stored_at_ms, rotated_at_ms, next_rotation_at_ms";

/// A secret read's event, committed while Vault answered: the state and version the database
/// recorded, and the event's place in the chain.
struct EarlyRead {
    state: CredentialState,
    version: u64,
    seq: i64,
}

fn ms(t: Option<i64>) -> Option<DateTime<Utc>> {
    t.and_then(DateTime::from_timestamp_millis)
}

fn metadata_view(row: TenantRow) -> Result<CredentialMetadataView> {
    let broken = |what: &str| Error::Internal(format!("tenants row for `{}` has an invalid {what}", row.tenant_id));
    Ok(CredentialMetadataView {
        tenant_id: TenantId::parse(&row.tenant_id).map_err(|_| broken("tenant id"))?,
        state: CredentialState::from_name(&row.state).ok_or_else(|| broken("state"))?,
        version: u64::try_from(row.version).map_err(|_| broken("version"))?,
        smtp_port: u16::try_from(row.smtp_port).map_err(|_| broken("port"))?,
        smtp_tls: SmtpTls::from_name(&row.smtp_tls).ok_or_else(|| broken("TLS mode"))?,
        stored_at: ms(Some(row.stored_at_ms)).ok_or_else(|| broken("time"))?,
        rotated_at: ms(row.rotated_at_ms),
        next_rotation_at: ms(row.next_rotation_at_ms),
        username: row.username,
        smtp_host: row.smtp_host,
        webmail_url: row.webmail_url,
        mailu_api_url: row.mailu_api_url,
    })
}

/// The KV version the next check-and-set write must name: the metadata's, which also counts
/// deleted and destroyed versions. One call (reading the data first cost a second one for
/// every new tenant).
async fn current_version(core: &Core, tenant: &TenantId) -> Result<u64> {
    core.vault()?.metadata_version(tenant).await
}

impl Core {
    /// Encrypts and stores a credential handed over during Mailu setup, replacing any earlier
    /// one (which stays in Vault's version history).
    ///
    /// # Errors
    /// [`Error::MissingScope`], [`Error::Conflict`] when a writer outside the console won a
    /// race, Vault and database errors. On any error nothing is recorded.
    #[tracing::instrument(skip_all, fields(tenant = %tenant))]
    pub async fn store_credential(
        &self,
        actor: &Actor,
        client: &ClientInfo,
        tenant: &TenantId,
        request: StoreCredentialRequest,
    ) -> Result<StoredCredentialView> {
        let now = self.now();
        authorize(actor, Permission::WriteCredentials)?;
        self.settings
            .outbound
            .check_url(&request.mailu_api_url)
            .map_err(|refused| crate::model::FieldError::new("mailu_api_url", refused.to_string()))?;
        let keyring = self.keyring()?;
        let document = CredentialDocument {
            password: keyring.seal(tenant, SecretField::Password, &request.password)?,
            mailu_api_token: keyring.seal(tenant, SecretField::MailuApiToken, &request.mailu_api_token)?,
            username: request.username,
            smtp_host: request.smtp_host,
            smtp_port: request.smtp_port,
            smtp_tls: Some(request.smtp_tls),
            webmail_url: request.webmail_url,
            mailu_api_url: request.mailu_api_url,
        };
        // The check-and-set version comes first from the database's record, read under the
        // lock that also queues console writers of the tenant (SQLite's write lock, PostgreSQL's
        // row lock): one Vault call instead of two. If Vault moved on without the database (a
        // commit that failed after its Vault write, a write from outside the console), that
        // write conflicts and the attempt is redone once with Vault's own count.
        let mut trust_db = true;
        loop {
            let mut tx = self.db.begin_write().await?;
            let lock = if self.db.backend() == Backend::Postgres { " FOR UPDATE" } else { "" };
            let recorded: Option<(i64, String, String)> = sqlx::query_as(&format!(
                "SELECT version, mailu_api_url, state FROM tenants WHERE tenant_id = $1{lock}"
            ))
            .bind(tenant.as_str())
            .fetch_optional(&mut *tx)
            .await?;
            // SECURITY: storing over an existing tenant with another Mailu API URL re-points
            // where every later password goes: the rule of a recovery onto a new URL applies.
            // Read in the same locked read as the version (one round trip less than apart).
            let redirected_from = recorded
                .as_ref()
                .map(|(_, url, _)| url.clone())
                .filter(|url| !crate::core::recovery::same_destination(url, &document.mailu_api_url));
            // A store settles the tenant (`active`): a rotation's pending record left behind
            // would be one the database no longer knows of, so it goes once the store is in.
            let unsettled = recorded.as_ref().is_some_and(|(_, _, state)| {
                CredentialState::from_name(state).is_none_or(crate::core::rotation::state::may_have_pending)
            });
            if redirected_from.is_some() {
                authorize(actor, Permission::RedirectTenant)?;
            }
            let previous = if trust_db {
                recorded.map_or(0, |(v, _, _)| u64::try_from(v).unwrap_or_default())
            } else {
                current_version(self, tenant).await?
            };
            // KV v2 numbers versions one by one, so a check-and-set write on `previous` creates
            // exactly `previous + 1`: the row and audit event can be written before the Vault
            // call, and roll back if it fails.
            let version = previous + 1;
            let next_rotation = now + self.settings.rotation_period;
            let version_db = i64::try_from(version).map_err(|_| Error::Internal("version overflow".into()))?;
            // One upsert, so a new tenant and a re-stored one take the same transition.
            let stored_state = state::sql(Transition::Stored.target());
            let upsert = format!(
                "INSERT INTO tenants (tenant_id, state, version, username, smtp_host, smtp_port, webmail_url, \
                 mailu_api_url, stored_at_ms, rotated_at_ms, next_rotation_at_ms, created_at_ms, updated_at_ms, smtp_tls, \
                 secret_since_ms) \
                 VALUES ($1, {stored_state}, $2, $3, $4, $5, $6, $7, $8, NULL, $9, $8, $8, $10, $8) \
                 ON CONFLICT (tenant_id) DO UPDATE SET state = {stored_state}, version = $2, username = $3, \
                 smtp_host = $4, smtp_port = $5, webmail_url = $6, mailu_api_url = $7, stored_at_ms = $8, \
                 next_rotation_at_ms = $9, updated_at_ms = $8, smtp_tls = $10, heartbeat_refused_at_ms = NULL, \
                 secret_since_ms = $8"
            );
            sqlx::query(&upsert)
                .bind(tenant.as_str())
                .bind(version_db)
                .bind(&document.username)
                .bind(&document.smtp_host)
                .bind(i64::from(document.smtp_port))
                .bind(&document.webmail_url)
                .bind(&document.mailu_api_url)
                .bind(now.timestamp_millis())
                .bind(next_rotation.timestamp_millis())
                .bind(document.tls().as_str())
                .execute(&mut *tx)
                .await?;
            let details = json!({
                "version": version, "previous_version": previous, "username": document.username,
                "smtp_host": document.smtp_host, "key_id": keyring.active_key_id(),
            });
            let event = NewEvent::info(EventType::CredentialStored, Some(tenant), details);
            audit::append(&mut tx, actor, client, event, now).await?;
            if let Some(from) = &redirected_from {
                let change = (from.as_str(), document.mailu_api_url.as_str());
                self.record_destination_change(&mut tx, actor, client, tenant, change, "store", now).await?;
            }
            let written = match self.vault()?.write_credential(tenant, &document, previous).await {
                Err(Error::Conflict) if trust_db => {
                    // Rolled back now, not on drop: SQLite's write lock must be free for the retry.
                    tx.rollback().await?;
                    trust_db = false;
                    continue;
                }
                other => other?,
            };
            if written != version {
                // Cannot happen with check-and-set; refuse rather than record a wrong version.
                return Err(Error::Internal(format!("vault wrote version {written}, expected {version}")));
            }
            // The backup journal's record of the write (best effort, it never undoes one) goes
            // out while the transaction commits: neither needs the other.
            let (_, committed) =
                futures_util::future::join(self.journal(tenant, "admin", version, &document), tx.commit()).await;
            if let Err(e) = committed {
                tracing::error!(tenant = %tenant, version, "vault holds a new version that the database could not record; the next reconcile will pick it up");
                return Err(e.into());
            }
            if unsettled && let Err(e) = self.vault()?.delete_pending(tenant).await {
                // The reconciliation finds it (`unrecorded_pending`) and settles it.
                tracing::warn!(tenant = %tenant, error = %e, "could not drop the pending record a store replaced");
            }
            return Ok(StoredCredentialView { tenant_id: tenant.clone(), version, stored_at: now });
        }
    }

    /// Metadata of a tenant's credential (no secrets).
    ///
    /// # Errors
    /// [`Error::MissingScope`], [`Error::NotFound`], database errors.
    pub async fn credential_metadata(&self, actor: &Actor, tenant: &TenantId) -> Result<CredentialMetadataView> {
        authorize(actor, Permission::ReadCredentials)?;
        let row: Option<TenantRow> =
            sqlx::query_as(&format!("SELECT {TENANT_COLUMNS} FROM tenants WHERE tenant_id = $1"))
                .bind(tenant.as_str())
                .fetch_optional(self.db.pool())
                .await?;
        metadata_view(row.ok_or(Error::NotFound("credential"))?)
    }

    /// The plaintext credential for a machine consumer. The read is audited (committed) before
    /// the plaintext is returned; if the audit write fails, nothing is returned.
    ///
    /// The audit append does not wait for Vault: it runs while Vault answers, naming the version
    /// the database recorded (the one Vault answers unless a write is under way). When Vault
    /// answers another version, a second event naming it (and the one it corrects) is committed
    /// before the answer; when the database has no row, the read is recorded after Vault
    /// answers, as before. An event may thus stand for a read Vault then failed to serve: the
    /// trail over-counts a read, never under-counts one.
    ///
    /// # Errors
    /// [`Error::MissingScope`], [`Error::NotFound`], [`Error::Crypto`] when the stored ciphertext
    /// fails its integrity check (also audited, critical), Vault and database errors.
    #[tracing::instrument(skip_all, fields(tenant = %tenant))]
    pub async fn read_credential_secret(
        &self,
        actor: &Actor,
        client: &ClientInfo,
        tenant: &TenantId,
    ) -> Result<CredentialSecretView> {
        let now = self.now();
        authorize(actor, Permission::ReadSecret)?;
        let vault = self.vault()?;
        let (stored, audited) =
            futures_util::future::join(vault.read_credential(tenant), self.audit_secret_read(actor, client, tenant))
                .await;
        let audited = audited?;
        let answer = async {
            let mut stored = stored?.ok_or(Error::NotFound("credential"))?;
            // Vault answered before a rotation promoted its password and the database after it
            // recorded the result: read again (see `read_to_hand_out`).
            if let Some(early) = &audited
                && early.version > stored.version
            {
                stored = vault.read_credential(tenant).await?.ok_or(Error::NotFound("credential"))?;
            }
            let state = audited.as_ref().map(|early| early.state);
            let password = self.password_to_hand_out(actor, client, tenant, &mut stored, state, now).await?;
            let recorded = audited.as_ref().map(|early| early.version);
            if recorded != Some(stored.version) {
                // SECURITY: the version handed out is on the trail before the answer leaves.
                let details = json!({
                    "version": stored.version, "field": SecretField::Password.as_str(), "corrects_version": recorded,
                });
                let event = NewEvent::info(EventType::CredentialSecretRead, Some(tenant), details);
                audit::record(&self.db, actor, client, event, self.now()).await?;
            }
            Ok::<_, Error>((stored, password))
        }
        .await;
        let (stored, password) = match (answer, audited) {
            (Ok(answer), _) => answer,
            (Err(error), Some(early)) => {
                // The read recorded while Vault answered was not answered after all: said so
                // (best effort: the error goes back either way, and a read too many on the
                // trail is the safe side).
                let details = json!({"voids_seq": early.seq, "version": early.version, "error": error.code().as_str()});
                let event = NewEvent::info(EventType::CredentialSecretReadVoided, Some(tenant), details);
                if let Err(e) = audit::record(&self.db, actor, client, event, self.now()).await {
                    tracing::error!(tenant = %tenant, error = %e, "could not record that a secret read was not answered");
                }
                return Err(error);
            }
            (Err(error), None) => return Err(error),
        };
        let smtp_tls = stored.document.tls();
        Ok(CredentialSecretView {
            tenant_id: tenant.clone(),
            username: stored.document.username,
            password,
            smtp_host: stored.document.smtp_host,
            smtp_port: stored.document.smtp_port,
            smtp_tls,
            version: stored.version,
        })
    }

    /// Commits the `credential_secret_read` event of the version the database recorded, and
    /// returns what it recorded; `None` (nothing recorded) without a row.
    // A debug span (off at the default `info`): the benchmark times the request's parts by it.
    #[tracing::instrument(level = "debug", name = "audit_record", skip_all)]
    async fn audit_secret_read(
        &self,
        actor: &Actor,
        client: &ClientInfo,
        tenant: &TenantId,
    ) -> Result<Option<EarlyRead>> {
        let mut tx = self.db.begin_write().await?;
        // Stamped once the write lock is held: a rotation that started before it cannot be
        // later than the read on the trail (sweeps compare the two).
        let now = self.now();
        let row: Option<(String, i64)> = sqlx::query_as("SELECT state, version FROM tenants WHERE tenant_id = $1")
            .bind(tenant.as_str())
            .fetch_optional(&mut *tx)
            .await?;
        let Some((state, version)) = row else { return Ok(None) };
        // A state this build does not know is read as one that may have a pending password.
        let state = CredentialState::from_name(&state).unwrap_or(CredentialState::NeedsReconcile);
        let version = u64::try_from(version).unwrap_or_default();
        let details = json!({"version": version, "field": SecretField::Password.as_str()});
        let event = NewEvent::info(EventType::CredentialSecretRead, Some(tenant), details);
        let seq = audit::append(&mut tx, actor, client, event, now).await?;
        tx.commit().await?;
        Ok(Some(EarlyRead { state, version, seq }))
    }

    /// Names the cause of a failed decryption as precisely as possible, records it (critical)
    /// and returns the error to hand back.
    pub(crate) async fn integrity_failure(
        &self,
        actor: &Actor,
        client: &ClientInfo,
        tenant: &TenantId,
        envelope: &str,
        error: CryptoError,
        now: DateTime<Utc>,
    ) -> Error {
        let error = match (error, self.keyring()) {
            (CryptoError::NotAuthentic { field, .. }, Ok(keyring)) => {
                let known: Vec<(String,)> =
                    sqlx::query_as("SELECT tenant_id FROM tenants").fetch_all(self.db.pool()).await.unwrap_or_default();
                let candidates: Vec<TenantId> = known.iter().filter_map(|(t,)| TenantId::parse(t).ok()).collect();
                keyring.diagnose(envelope, tenant, field, &candidates)
            }
            (other, _) => other,
        };
        tracing::error!(tenant = %tenant, error = %error, "stored credential failed its integrity check");
        let event =
            NewEvent::info(EventType::CredentialIntegrityFailed, Some(tenant), json!({"cause": error.to_string()}))
                .with_severity(Severity::Critical);
        if let Err(audit_error) = audit::record(&self.db, actor, client, event, now).await {
            return audit_error;
        }
        Error::Crypto(error)
    }

    /// Re-encrypts every stored secret that is not under the active key. `progress` is called
    /// with (done, total) after each tenant.
    ///
    /// # Errors
    /// The first failure stops the run; tenants done so far stay rewrapped (each is its own
    /// check-and-set write and audit event).
    pub async fn rewrap_keys(&self, actor: &Actor, progress: &mut dyn FnMut(usize, usize)) -> Result<RewrapReport> {
        authorize(actor, Permission::HostMaintenance)?;
        let keyring = self.keyring()?;
        let vault = self.vault()?;
        let tenants = vault.list_tenants().await?;
        let mut report = RewrapReport { tenants: tenants.len(), ..RewrapReport::default() };
        for (done, tenant) in tenants.iter().enumerate() {
            if let Some(stored) = vault.read_credential(tenant).await? {
                let mut document = stored.document.clone();
                let mut from_keys = Vec::new();
                for field in SecretField::ALL {
                    let slot = match field {
                        SecretField::Password => &mut document.password,
                        SecretField::MailuApiToken => &mut document.mailu_api_token,
                    };
                    let key_id = Keyring::envelope_key_id(slot)?;
                    if key_id != keyring.active_key_id() {
                        from_keys.push(key_id.to_owned());
                        let plain = keyring.open(slot, tenant, field)?;
                        *slot = keyring.seal(tenant, field, &plain)?;
                    }
                }
                if from_keys.is_empty() {
                    report.already_current += 1;
                } else {
                    self.record_rewrap(actor, tenant, &document, stored.version, &from_keys, keyring).await?;
                    report.rewrapped += 1;
                }
            }
            progress(done + 1, tenants.len());
        }
        Ok(report)
    }

    async fn record_rewrap(
        &self,
        actor: &Actor,
        tenant: &TenantId,
        document: &CredentialDocument,
        version: u64,
        from_keys: &[String],
        keyring: &Keyring,
    ) -> Result<()> {
        let now = self.now();
        let new_version = version + 1;
        let mut tx = self.db.begin_write().await?;
        sqlx::query("UPDATE tenants SET version = $1, updated_at_ms = $2 WHERE tenant_id = $3")
            .bind(i64::try_from(new_version).map_err(|_| Error::Internal("version overflow".into()))?)
            .bind(now.timestamp_millis())
            .bind(tenant.as_str())
            .execute(&mut *tx)
            .await?;
        let details = json!({"version": new_version, "from_keys": from_keys, "to_key": keyring.active_key_id()});
        audit::append(
            &mut tx,
            actor,
            &ClientInfo::local(),
            NewEvent::info(EventType::CredentialRewrapped, Some(tenant), details),
            now,
        )
        .await?;
        self.write_credential_journaled(tenant, document, version).await?;
        tx.commit().await?;
        Ok(())
    }
}

/// Outcome of `keys rewrap`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RewrapReport {
    /// Tenants found in Vault.
    pub tenants: usize,
    /// Rewrapped now.
    pub rewrapped: usize,
    /// Already under the active key.
    pub already_current: usize,
}
