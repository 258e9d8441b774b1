//! Browser sessions: tower-sessions over a SQL store on the console's own database (so sessions
//! survive a restart), the cookie policy, and what a session holds: the signed-in admin, the
//! login time (for the 12-hour absolute limit, checked by the core) and the per-session secret
//! that WebAuthn ceremonies are bound to.

use crate::core::access::passkeys::SessionBinding;
use crate::core::admins::AdminSession;
use crate::core::config::Config;
use async_trait::async_trait;
use chrono::DateTime;
use tower_sessions::cookie::SameSite;
use tower_sessions::session::{Id, Record};
use tower_sessions::session_store::{self, ExpiredDeletion};
use tower_sessions::{Expiry, Session, SessionManagerLayer, SessionStore};
use tower_sessions_sqlx_store::{PostgresStore, SqliteStore};

/// Name of the session cookie.
pub const COOKIE_NAME: &str = "smtpv_session";
const ADMIN_KEY: &str = "admin_id";
const LOGIN_AT_KEY: &str = "login_at_ms";
const BINDING_KEY: &str = "ceremony_binding";

/// The session store on whichever database the console uses.
#[derive(Debug, Clone)]
pub enum SqlSessionStore {
    /// SQLite.
    Sqlite(SqliteStore),
    /// PostgreSQL.
    Postgres(PostgresStore),
}

#[async_trait]
impl SessionStore for SqlSessionStore {
    async fn create(&self, record: &mut Record) -> session_store::Result<()> {
        match self {
            SqlSessionStore::Sqlite(s) => s.create(record).await,
            SqlSessionStore::Postgres(s) => s.create(record).await,
        }
    }
    async fn save(&self, record: &Record) -> session_store::Result<()> {
        match self {
            SqlSessionStore::Sqlite(s) => s.save(record).await,
            SqlSessionStore::Postgres(s) => s.save(record).await,
        }
    }
    async fn load(&self, id: &Id) -> session_store::Result<Option<Record>> {
        match self {
            SqlSessionStore::Sqlite(s) => s.load(id).await,
            SqlSessionStore::Postgres(s) => s.load(id).await,
        }
    }
    async fn delete(&self, id: &Id) -> session_store::Result<()> {
        match self {
            SqlSessionStore::Sqlite(s) => s.delete(id).await,
            SqlSessionStore::Postgres(s) => s.delete(id).await,
        }
    }
}

impl SqlSessionStore {
    /// Connects to the database of `config`, creates the session table if needed and starts a
    /// background task that deletes expired sessions.
    ///
    /// # Errors
    /// When the database cannot be reached or migrated.
    pub async fn connect(config: &Config) -> Result<Self, sqlx::Error> {
        let url = &config.database_url;
        let store = if url.starts_with("postgres") {
            let store = PostgresStore::new(sqlx::PgPool::connect(url).await?);
            store.migrate().await?;
            tokio::spawn(store.clone().continuously_delete_expired(std::time::Duration::from_secs(300)));
            SqlSessionStore::Postgres(store)
        } else {
            let path = url.trim_start_matches("sqlite://").trim_start_matches("sqlite:");
            let options = sqlx::sqlite::SqliteConnectOptions::new()
                .filename(path.split('?').next().unwrap_or(path))
                .create_if_missing(true)
                .journal_mode(sqlx::sqlite::SqliteJournalMode::Wal)
                .busy_timeout(std::time::Duration::from_secs(15));
            let store = SqliteStore::new(sqlx::SqlitePool::connect_with(options).await?);
            store.migrate().await?;
            tokio::spawn(store.clone().continuously_delete_expired(std::time::Duration::from_secs(300)));
            SqlSessionStore::Sqlite(store)
        };
        Ok(store)
    }
}

/// The session layer with the console's cookie policy: HttpOnly, SameSite=Strict, Secure when
/// the console is served over https, 30 minutes idle expiry.
#[must_use]
pub fn layer(store: SqlSessionStore, config: &Config) -> SessionManagerLayer<SqlSessionStore> {
    SessionManagerLayer::new(store)
        .with_name(COOKIE_NAME)
        .with_http_only(true)
        .with_same_site(SameSite::Strict)
        .with_secure(config.public_url.scheme() == "https")
        .with_path("/")
        .with_expiry(Expiry::OnInactivity(tower_sessions::cookie::time::Duration::minutes(30)))
}

/// The signed-in admin stored in the session, if any.
pub async fn admin(session: &Session) -> Option<AdminSession> {
    let admin_id: String = session.get(ADMIN_KEY).await.ok().flatten()?;
    let login_at_ms: i64 = session.get(LOGIN_AT_KEY).await.ok().flatten()?;
    Some(AdminSession { admin_id, login_at: DateTime::from_timestamp_millis(login_at_ms)? })
}

/// The session's ceremony binding, if it has one (never created here).
pub async fn existing_binding(session: &Session) -> Option<SessionBinding> {
    session.get::<String>(BINDING_KEY).await.ok().flatten().map(SessionBinding)
}

/// Stores `binding` as the session's ceremony binding unless it has one.
///
/// # Errors
/// When the session store fails.
pub async fn keep_binding(session: &Session, binding: &SessionBinding) -> Result<(), crate::core::Error> {
    if existing_binding(session).await.is_some() {
        return Ok(());
    }
    session
        .insert(BINDING_KEY, &binding.0)
        .await
        .map_err(|e| crate::core::Error::Internal(format!("session store: {e}")))
}

/// Signs an admin in: a new session id (against fixation), a new ceremony binding.
///
/// # Errors
/// When the session store fails.
pub async fn sign_in(session: &Session, admin_id: &str, now_ms: i64) -> Result<(), crate::core::Error> {
    let store_error = |e: tower_sessions::session::Error| crate::core::Error::Internal(format!("session store: {e}"));
    session.cycle_id().await.map_err(store_error)?;
    let fresh = SessionBinding::generate()?;
    session.insert(BINDING_KEY, &fresh.0).await.map_err(store_error)?;
    session.insert(ADMIN_KEY, admin_id).await.map_err(store_error)?;
    session.insert(LOGIN_AT_KEY, now_ms).await.map_err(store_error)?;
    Ok(())
}

/// Ends the session entirely (cookie and stored record).
pub async fn sign_out(session: &Session) {
    let _ = session.flush().await;
}
