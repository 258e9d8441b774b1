//! The database: one `sqlx::AnyPool` over SQLite (default) or PostgreSQL, the embedded
//! migrations for each dialect, and the row types. Queries elsewhere in the core are written
//! once in the common subset (`$n` placeholders, `BIGINT`/`INTEGER` epoch milliseconds, `TEXT`),
//! so every query runs on both.

use crate::core::audit::ChainKey;
use crate::core::error::{Error, Result};
use sqlx::any::{AnyPoolOptions, install_default_drivers};
use sqlx::{AnyConnection, AnyPool, Executor};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// Which database engine a pool talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// SQLite (a file).
    Sqlite,
    /// PostgreSQL.
    Postgres,
}

/// A connection pool, its dialect, and the audit chain's key (kept outside the database, from
/// the keyring) that every write transaction carries so its events are sealed.
#[derive(Debug, Clone)]
pub struct Db {
    pool: AnyPool,
    backend: Backend,
    chain_key: Result<Arc<ChainKey>, Arc<str>>,
}

/// A write transaction. Derefs to the connection, so queries run on it as on a plain
/// transaction; audit appends take it whole, for the chain key it carries.
pub struct WriteTx {
    tx: sqlx::Transaction<'static, sqlx::Any>,
    chain_key: Result<Arc<ChainKey>, Arc<str>>,
}

impl std::ops::Deref for WriteTx {
    type Target = AnyConnection;
    fn deref(&self) -> &AnyConnection {
        &self.tx
    }
}

impl std::ops::DerefMut for WriteTx {
    fn deref_mut(&mut self) -> &mut AnyConnection {
        &mut self.tx
    }
}

impl WriteTx {
    /// Commits.
    ///
    /// # Errors
    /// Database errors.
    pub async fn commit(self) -> std::result::Result<(), sqlx::Error> {
        self.tx.commit().await
    }

    /// Rolls back.
    ///
    /// # Errors
    /// Database errors.
    pub async fn rollback(self) -> std::result::Result<(), sqlx::Error> {
        self.tx.rollback().await
    }

    /// The audit chain's key, or why this process has none.
    ///
    /// # Errors
    /// [`Error::AuditChain`] naming what is missing.
    pub fn chain_key(&self) -> Result<&ChainKey> {
        self.chain_key.as_deref().map_err(|why| Error::AuditChain(why.to_string()))
    }
}

/// How long a pooled connection may sit unused before it is pinged on its way out.
const IDLE_BEFORE_PING: Duration = Duration::from_secs(1);

static SQLITE_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("migrations/sqlite");
static POSTGRES_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("migrations/postgres");

impl Db {
    /// Opens a pool for `url` (`sqlite://path`, `sqlite:path` or `postgres://…`). A SQLite file
    /// and its directory are created when missing.
    ///
    /// # Errors
    /// [`Error::Config`] for an unsupported URL, [`Error::Database`] when it cannot connect.
    pub async fn connect(url: &str) -> Result<Self> {
        install_default_drivers();
        let (backend, url) = if let Some(path) = url.strip_prefix("sqlite://").or_else(|| url.strip_prefix("sqlite:")) {
            let file = path.split('?').next().unwrap_or_default();
            if let Some(dir) = Path::new(file).parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir).map_err(|e| Error::io(format!("creating {}", dir.display()), e))?;
            }
            let url = if path.contains("mode=") {
                format!("sqlite://{path}")
            } else if path.contains('?') {
                format!("sqlite://{path}&mode=rwc")
            } else {
                format!("sqlite://{path}?mode=rwc")
            };
            (Backend::Sqlite, url)
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            (Backend::Postgres, url.to_owned())
        } else {
            return Err(Error::Config("DATABASE_URL must start with sqlite:// or postgres://".into()));
        };
        let options = AnyPoolOptions::new()
            .max_connections(if backend == Backend::Sqlite { 8 } else { 16 })
            .acquire_timeout(Duration::from_secs(15))
            // sqlx pings every connection it hands out: one more round trip before each
            // transaction or query, a fifth of an audited read's database time. A connection used
            // within the last second is as good as the query it just ran; an older one may have
            // been cut (a database restart or failover, a proxy's idle timeout) and is pinged,
            // and replaced when the ping fails, so no caller gets a dead one after a quiet spell.
            .test_before_acquire(false)
            .before_acquire(|conn, meta| {
                Box::pin(async move {
                    if meta.idle_for < IDLE_BEFORE_PING {
                        return Ok(true);
                    }
                    Ok(sqlx::Connection::ping(conn).await.is_ok())
                })
            });
        let options = if backend == Backend::Sqlite {
            options.after_connect(|conn, _| {
                Box::pin(async move {
                    // WAL lets readers run beside the single writer; NORMAL sync is durable in
                    // WAL mode except for the last commits on power loss, not on a crash.
                    conn.execute(
                        "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; \
                         PRAGMA foreign_keys = ON; PRAGMA busy_timeout = 15000;",
                    )
                    .await?;
                    Ok(())
                })
            })
        } else {
            options
        };
        let pool = options.connect(&url).await?;
        let chain_key = Err(Arc::from("the audit chain's key was not loaded (it comes from the keyring)"));
        Ok(Self { pool, backend, chain_key })
    }

    /// Sets the audit chain's key, or why it is unavailable (said when an event needs it).
    #[must_use]
    pub fn with_chain_key(mut self, key: std::result::Result<ChainKey, String>) -> Self {
        self.chain_key = key.map(Arc::new).map_err(Arc::from);
        self
    }

    /// The audit chain's key, if this process holds it.
    #[must_use]
    pub fn chain_key(&self) -> Option<&ChainKey> {
        self.chain_key.as_deref().ok()
    }

    /// Applies every pending migration of this dialect.
    ///
    /// # Errors
    /// [`Error::Migration`].
    pub async fn migrate(&self) -> Result<()> {
        let migrator = match self.backend {
            Backend::Sqlite => &SQLITE_MIGRATIONS,
            Backend::Postgres => &POSTGRES_MIGRATIONS,
        };
        migrator.run(&self.pool).await?;
        Ok(())
    }

    /// Migrations this build carries that the database has not applied (the doctor's check;
    /// `serve` and `migrate` apply them).
    ///
    /// # Errors
    /// Database errors other than a missing migrations table (a new database: all pending).
    pub async fn pending_migrations(&self) -> Result<Vec<i64>> {
        let migrator = match self.backend {
            Backend::Sqlite => &SQLITE_MIGRATIONS,
            Backend::Postgres => &POSTGRES_MIGRATIONS,
        };
        let applied: Vec<(i64,)> = sqlx::query_as("SELECT version FROM _sqlx_migrations WHERE success")
            .fetch_all(&self.pool)
            .await
            .unwrap_or_default();
        Ok(migrator.iter().map(|m| m.version).filter(|v| !applied.iter().any(|(a,)| a == v)).collect())
    }

    /// The pool.
    #[must_use]
    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    /// The dialect.
    #[must_use]
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Starts a write transaction. On SQLite it takes the write lock at once (`BEGIN
    /// IMMEDIATE`): a deferred transaction that reads first and writes later can fail with
    /// `SQLITE_BUSY` when another writer commits in between, without waiting.
    ///
    /// # Errors
    /// Database errors.
    pub async fn begin_write(&self) -> Result<WriteTx> {
        let statement = match self.backend {
            Backend::Sqlite => "BEGIN IMMEDIATE",
            Backend::Postgres => "BEGIN",
        };
        Ok(WriteTx { tx: self.pool.begin_with(statement).await?, chain_key: self.chain_key.clone() })
    }

    /// True when a trivial query answers.
    pub async fn ping(&self) -> bool {
        sqlx::query("SELECT 1").execute(&self.pool).await.is_ok()
    }
}

/// A row of `tenants`.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct TenantRow {
    /// Tenant id.
    pub tenant_id: String,
    /// Life-cycle state name.
    pub state: String,
    /// KV v2 version.
    pub version: i64,
    /// SMTP login.
    pub username: String,
    /// SMTP host.
    pub smtp_host: String,
    /// SMTP port.
    pub smtp_port: i64,
    /// SMTP TLS mode name.
    pub smtp_tls: String,
    /// Webmail URL.
    pub webmail_url: String,
    /// Mailu API URL.
    pub mailu_api_url: String,
    /// Stored at (ms).
    pub stored_at_ms: i64,
    /// Rotated at (ms).
    pub rotated_at_ms: Option<i64>,
    /// Next rotation (ms).
    pub next_rotation_at_ms: Option<i64>,
}

/// A row of `service_tokens`.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ServiceTokenRow {
    /// Public id (the part of the token before the secret).
    pub token_id: String,
    /// Human name.
    pub name: String,
    /// Hex SHA-256 of the secret part.
    pub secret_hash: String,
    /// Space-separated scope names.
    pub scopes: String,
    /// Who created it.
    pub created_by: String,
    /// Created (ms).
    pub created_at_ms: i64,
    /// Expires (ms).
    pub expires_at_ms: Option<i64>,
    /// Revoked (ms).
    pub revoked_at_ms: Option<i64>,
    /// Last use (ms).
    pub last_used_at_ms: Option<i64>,
}

/// A row of `audit_events`. It also reads from a JSON array of its fields in this order (the
/// SQLite chain pages of [`crate::core::audit::verify`]).
#[derive(Debug, Clone, sqlx::FromRow, serde::Deserialize)]
pub struct AuditEventRow {
    /// Position in the chain, from 1.
    pub seq: i64,
    /// When (ms).
    pub occurred_at_ms: i64,
    /// Event name.
    pub event_type: String,
    /// info | warning | critical.
    pub severity: String,
    /// Actor kind.
    pub actor_kind: String,
    /// Actor id.
    pub actor_id: String,
    /// Tenant, if any.
    pub tenant_id: Option<String>,
    /// Client IP, if any.
    pub client_ip: Option<String>,
    /// Request id, if any.
    pub request_id: Option<String>,
    /// JSON details.
    pub details: String,
    /// Hash of the previous event.
    pub prev_hash: String,
    /// Hash of this event.
    pub hash: String,
}

/// Which domain writes each table (docs/architecture.md, "Who owns the data"). Reads may cross
/// (the monitor's rules and gauges read the trail, alerts and reveal windows); writes do not,
/// so a change to who may alter a row is found in one folder.
pub const TABLE_OWNERS: &[(&str, &[&str])] = &[
    ("admins", &["admins"]),
    ("invites", &["admins"]),
    ("passkeys", &["admins"]),
    ("step_ups", &["access"]),
    ("ceremonies", &["access"]),
    ("service_tokens", &["access"]),
    ("tenants", &["credentials", "rotation"]),
    ("reveal_grants", &["credentials"]),
    ("reveal_requests", &["credentials"]),
    ("incidents", &["emergency"]),
    ("sweep_tenants", &["emergency"]),
    ("job_leases", &["rotation"]),
    ("dr_drills", &["recovery"]),
    ("alerts", &["alerting"]),
    ("alert_deliveries", &["alerting"]),
    ("audit_events", &["audit"]),
    ("audit_head", &["audit"]),
    ("monitor_cursor", &["monitor"]),
    ("monitor_episodes", &["monitor"]),
    ("monitor_seen", &["monitor"]),
    ("mailu_admins", &["monitor"]),
    ("fleet_cursors", &["fleet"]),
    ("siem_cursors", &["siem"]),
    ("siem_deliveries", &["siem"]),
];

#[cfg(test)]
mod tests {
    use super::TABLE_OWNERS;
    use std::path::{Path, PathBuf};

    fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                sources(&path, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(path);
            }
        }
    }

    #[test]
    fn every_table_is_written_only_by_the_domain_that_owns_it() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let migrations = std::fs::read_dir(root.join("migrations/sqlite"))
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| std::fs::read_to_string(e.path()).ok())
            .collect::<String>()
            .to_lowercase();
        let mut files = Vec::new();
        sources(&root.join("src"), &mut files);
        assert!(files.len() > 50, "the sources were not found");
        let mut wrong = Vec::new();
        for file in &files {
            let text = std::fs::read_to_string(file).unwrap_or_default();
            let relative = file.strip_prefix(root.join("src/core")).ok();
            let domain = relative.and_then(|r| r.components().next()).map(|c| c.as_os_str().to_string_lossy());
            for (table, owners) in TABLE_OWNERS {
                assert!(migrations.contains(&format!("create table {table} ")), "{table} is not a table");
                let writes = ["INSERT INTO", "UPDATE", "DELETE FROM"].iter().any(|verb| {
                    text.contains(&format!("{verb} {table} ")) || text.contains(&format!("{verb} {table}\n"))
                });
                let owned = domain.as_deref().is_some_and(|d| owners.contains(&d));
                if writes && !owned {
                    wrong.push(format!("{} writes {table} (owned by {owners:?})", file.display()));
                }
            }
        }
        assert!(wrong.is_empty(), "{wrong:#?}");
    }
}
