//! The benchmark (`scripts/bench.sh`): starts its own OpenBao (with a file audit device, as
//! production runs), mail stand-in and console, and measures side by side what issue 8 asks —
//! bare KV v2 against the console's API, a 1,000-tenant rotation batch, backup and restore of
//! 10,000 tenants into an empty raft OpenBao, emergency reset → alert, the audit dashboard and
//! chain verification on a million events (SQLite and PostgreSQL), idle memory and the wasm
//! bundle — or, with `--load`, 200 signed-in admins revealing for a minute. Prints a Markdown
//! table and writes it with a JSON copy under `target/bench/`. Timings never decide a test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::cast_precision_loss, reason = "a measuring program")]

use clap::Parser;
use secrecy::ExposeSecret;
use serde_json::{Value, json};
use smtp_vault::core::audit::event_hash;
use smtp_vault::core::config::Config;
use smtp_vault::core::db::AuditEventRow;
use smtp_vault::core::mail::MailServer as _;
use smtp_vault::core::vault::RoleSettings;
use smtp_vault::core::{Actor, ClientInfo, Core, Needs};
use smtp_vault::model::{AuditQuery, ProvisionCredentialRequest, Role, Scope, StoreCredentialRequest, TenantId};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};
use webauthn_authenticator_rs::WebauthnAuthenticator;
use webauthn_authenticator_rs::softpasskey::SoftPasskey;

type Fallible<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

/// Wall time of every span closed while switched on, by span name: the console's request
/// span (`http`), its core call and the debug spans on its parts. Off, it only loads a flag.
#[derive(Default)]
struct SpanClock {
    on: std::sync::atomic::AtomicBool,
    samples: std::sync::Mutex<HashMap<&'static str, Vec<Duration>>>,
}

/// When a span was created (kept in the span's extensions).
struct Opened(Instant);

/// The `tracing` layer that feeds a [`SpanClock`].
struct SpanTimer(Arc<SpanClock>);

impl<S> tracing_subscriber::Layer<S> for SpanTimer
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    // Nothing else is enabled, and spans only while switched on: an all-enabled subscriber
    // would have every library build its debug events (sqlx logs each statement) and skew
    // every other row.
    fn register_callsite(&self, _: &'static tracing::Metadata<'static>) -> tracing::subscriber::Interest {
        tracing::subscriber::Interest::sometimes()
    }

    fn enabled(&self, metadata: &tracing::Metadata<'_>, _: tracing_subscriber::layer::Context<'_, S>) -> bool {
        metadata.is_span() && self.0.on.load(std::sync::atomic::Ordering::Relaxed)
    }

    fn on_new_span(
        &self,
        _: &tracing::span::Attributes<'_>,
        id: &tracing::span::Id,
        ctx: tracing_subscriber::layer::Context<'_, S>,
    ) {
        if let Some(span) = ctx.span(id) {
            span.extensions_mut().insert(Opened(Instant::now()));
        }
    }

    fn on_close(&self, id: tracing::span::Id, ctx: tracing_subscriber::layer::Context<'_, S>) {
        let Some(span) = ctx.span(&id) else { return };
        let Some(elapsed) = span.extensions().get::<Opened>().map(|o| o.0.elapsed()) else { return };
        if let Ok(mut samples) = self.0.samples.lock() {
            samples.entry(span.name()).or_default().push(elapsed);
        }
    }
}

impl SpanClock {
    /// Installs the clock as the process's `tracing` subscriber, switched off.
    fn install() -> Arc<Self> {
        use tracing_subscriber::layer::SubscriberExt as _;
        let clock = Arc::new(Self::default());
        let subscriber = tracing_subscriber::registry().with(SpanTimer(clock.clone()));
        if tracing::subscriber::set_global_default(subscriber).is_err() {
            eprintln!("bench: a tracing subscriber was already set; the read profile will be empty");
        }
        clock
    }

    /// Records spans while `run` runs; returns each span's p50 in milliseconds.
    async fn record<F: Future<Output = Fallible<()>>>(&self, run: F) -> Fallible<HashMap<&'static str, f64>> {
        self.samples.lock().map_err(|_| "span clock poisoned")?.clear();
        self.on.store(true, std::sync::atomic::Ordering::Relaxed);
        let outcome = run.await;
        self.on.store(false, std::sync::atomic::Ordering::Relaxed);
        outcome?;
        let mut samples = self.samples.lock().map_err(|_| "span clock poisoned")?;
        Ok(samples.iter_mut().map(|(name, times)| (*name, latency(times).p50)).collect())
    }
}

#[derive(Parser, Debug)]
#[command(about = "smtp-vault benchmark: every row of docs/performance.md in one run")]
struct Args {
    /// Rows to run (comma-separated): kv, rotation, backup, reset, audit, memory. Default: all.
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
    /// Run the load test instead: admins revealing at once for `--load-secs`.
    #[arg(long)]
    load: bool,
    /// Concurrent admin sessions of the load test.
    #[arg(long, default_value_t = 200)]
    load_sessions: usize,
    /// Length of the load test, in seconds.
    #[arg(long, default_value_t = 60)]
    load_secs: u64,
    /// Operations per KV / API latency row.
    #[arg(long, default_value_t = 1000)]
    ops: usize,
    /// Tenants rotated in one batch.
    #[arg(long, default_value_t = 1000)]
    rotation_tenants: usize,
    /// Tenants backed up and restored.
    #[arg(long, default_value_t = 10_000)]
    backup_tenants: usize,
    /// Audit events of the dashboard rows.
    #[arg(long, default_value_t = 1_000_000)]
    audit_events: i64,
    /// A PostgreSQL server URL (a database is created per run); without it the PostgreSQL
    /// audit row is skipped.
    #[arg(long, env = "BENCH_PG_URL")]
    pg_url: Option<String>,
    /// Where the JSON and Markdown results go.
    #[arg(long, default_value = "target/bench")]
    out: PathBuf,
    /// Run the scale rows instead, with this many tenants (issue 18: 100000).
    #[arg(long)]
    scale: Option<usize>,
}

/// One line of the result table.
#[derive(Debug, Clone, serde::Serialize)]
struct Measure {
    row: String,
    result: String,
    target: String,
    holds: Option<bool>,
}

#[derive(Default)]
struct Report(Vec<Measure>);

impl Report {
    fn add(
        &mut self,
        row: impl Into<String>,
        result: impl Into<String>,
        target: impl Into<String>,
        holds: Option<bool>,
    ) {
        let m = Measure { row: row.into(), result: result.into(), target: target.into(), holds };
        println!("| {} | {} | {} | {} |", m.row, m.result, m.target, verdict(m.holds));
        self.0.push(m);
    }
}

fn verdict(holds: Option<bool>) -> &'static str {
    match holds {
        Some(true) => "holds",
        Some(false) => "**misses**",
        None => "—",
    }
}

/// Latency percentiles in milliseconds.
#[derive(Debug, Clone, Copy)]
struct Latency {
    p50: f64,
    p95: f64,
    p99: f64,
}

fn latency(samples: &mut [Duration]) -> Latency {
    samples.sort();
    let at = |q: f64| {
        let i = ((samples.len() as f64 - 1.0) * q).round() as usize;
        samples[i].as_secs_f64() * 1000.0
    };
    Latency { p50: at(0.50), p95: at(0.95), p99: at(0.99) }
}

fn tools_bin(name: &str) -> PathBuf {
    let root = std::env::var("SMTP_VAULT_TOOLS").unwrap_or_else(|_| "/opt/smtp-vault-tools".into());
    let candidate = PathBuf::from(root).join("bin").join(name);
    if candidate.exists() { candidate } else { PathBuf::from(name) }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A child process killed when dropped.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn wait_for(what: &str, deadline: Duration, mut check: impl AsyncFnMut() -> bool) -> Fallible<()> {
    let end = Instant::now() + deadline;
    while Instant::now() < end {
        if check().await {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    Err(format!("{what} did not happen within {deadline:?}").into())
}

/// An OpenBao dev server with a file audit device (OpenBao takes audit devices from its
/// configuration only, not from the API).
async fn start_dev_bao(dir: &Path, http: &reqwest::Client) -> Fallible<(Proc, String, String)> {
    let port = free_port();
    let token = format!("bench-{}", std::process::id());
    let config = dir.join("audit.hcl");
    std::fs::write(
        &config,
        format!(
            "audit \"file\" \"file\" {{\n  options {{\n    file_path = \"{}\"\n  }}\n}}\n",
            dir.join("vault-audit.log").display()
        ),
    )?;
    let child = Command::new(tools_bin("bao"))
        .args([
            "server",
            "-dev",
            &format!("-config={}", config.display()),
            &format!("-dev-root-token-id={token}"),
            "-dev-no-store-token",
            &format!("-dev-listen-address=127.0.0.1:{port}"),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    let addr = format!("http://127.0.0.1:{port}");
    let proc = Proc(child);
    wait_for("OpenBao dev server", Duration::from_secs(30), async || {
        http.get(format!("{addr}/v1/sys/health")).send().await.is_ok_and(|r| r.status() == 200)
    })
    .await?;
    let audit: Value =
        http.get(format!("{addr}/v1/sys/audit")).header("X-Vault-Token", &token).send().await?.json().await?;
    if audit["data"]["file/"]["type"] != "file" {
        return Err(format!("the file audit device is not enabled: {audit}").into());
    }
    Ok((proc, addr, token))
}

/// A single-node raft OpenBao, initialised and unsealed; returns its root token.
async fn start_raft_bao(dir: &Path, http: &reqwest::Client) -> Fallible<(Proc, String, String)> {
    let (port, cluster) = (free_port(), free_port());
    let data = dir.join("raft");
    std::fs::create_dir_all(&data)?;
    let config = dir.join("raft.hcl");
    std::fs::write(
        &config,
        format!(
            "ui = false\nstorage \"raft\" {{\n  path = \"{}\"\n  node_id = \"node1\"\n  performance_multiplier = 1\n}}\n\
             listener \"tcp\" {{\n  address = \"127.0.0.1:{port}\"\n  cluster_address = \"127.0.0.1:{cluster}\"\n  tls_disable = true\n}}\n\
             api_addr = \"http://127.0.0.1:{port}\"\ncluster_addr = \"http://127.0.0.1:{cluster}\"\n",
            data.display()
        ),
    )?;
    let child = Command::new(tools_bin("bao"))
        .args(["server", &format!("-config={}", config.display())])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    let proc = Proc(child);
    let addr = format!("http://127.0.0.1:{port}");
    wait_for("raft OpenBao to listen", Duration::from_secs(30), async || {
        http.get(format!("{addr}/v1/sys/health")).send().await.is_ok()
    })
    .await?;
    let init: Value = http
        .post(format!("{addr}/v1/sys/init"))
        .json(&json!({"secret_shares": 1, "secret_threshold": 1}))
        .send()
        .await?
        .json()
        .await?;
    let key = init["keys_base64"][0].as_str().ok_or("no unseal key")?.to_owned();
    let root = init["root_token"].as_str().ok_or("no root token")?.to_owned();
    http.post(format!("{addr}/v1/sys/unseal")).json(&json!({"key": key})).send().await?;
    wait_for("raft OpenBao to become active", Duration::from_secs(30), async || {
        http.get(format!("{addr}/v1/sys/health")).send().await.is_ok_and(|r| r.status() == 200)
    })
    .await?;
    Ok((proc, addr, root))
}

/// The mail stand-in (Dovecot + mailu-sim) from scripts/mail-standin.sh.
struct MailStandIn {
    dir: PathBuf,
    env: HashMap<String, String>,
}

impl MailStandIn {
    fn start(dir: &Path) -> Fallible<Self> {
        let sim = std::env::var("MAILU_SIM").unwrap_or_else(|_| "target/release/mailu-sim".into());
        let status = Command::new("scripts/mail-standin.sh")
            .args(["start", &dir.display().to_string()])
            .env("MAILU_SIM", sim)
            .env("MAILU_TOKEN", "bench-token-1234")
            .stdout(Stdio::null())
            .status()?;
        if !status.success() {
            return Err("the mail stand-in did not start".into());
        }
        let env = std::fs::read_to_string(dir.join("standin.env"))?
            .lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_owned(), v.trim_matches('"').to_owned()))
            .collect();
        Ok(Self { dir: dir.to_owned(), env })
    }
}

impl Drop for MailStandIn {
    fn drop(&mut self) {
        let _ = Command::new("scripts/mail-standin.sh").args(["stop", &self.dir.display().to_string()]).status();
    }
}

/// The console under test: core, router on a port, a token with every scope.
struct Console {
    config: Config,
    core: Core,
    base: String,
    token: String,
    role_id: String,
    secret_id: String,
}

async fn start_console(dir: &Path, vault_addr: &str, root: &str, ca: Option<PathBuf>) -> Fallible<Console> {
    let mut config = Config::defaults();
    config.database_url = format!("sqlite://{}/console.db", dir.display());
    config.vault_addrs = smtp_vault::core::config::vault_addrs(vault_addr)?;
    config.vault_token = Some(root.to_owned().into());
    config.keyring_path = dir.join("keyring.json");
    config.backup_key_path = dir.join("keys/backup.key");
    config.backup_target = smtp_vault::core::backup::BackupLocation::Dir(dir.join("backups"));
    config.smtp_ca_file = ca;
    config.rotation_retry_ms = 50;
    // The stand-in answers on loopback over plain http.
    config.outbound_allow_plaintext = true;
    config.outbound_allow_networks = vec!["127.0.0.0/8".parse()?];
    let port = free_port();
    config.site_addr = format!("127.0.0.1:{port}").parse()?;
    config.public_url = format!("http://localhost:{port}").parse()?;
    std::fs::create_dir_all(dir.join("keys"))?;
    smtp_vault::core::generate_keyring(&config)?;
    smtp_vault::core::generate_backup_key(&config)?;
    let admin = Core::connect(&config, Needs { vault: true, keyring: false }, None).await?;
    let setup = admin.setup_vault(&Actor::operator(), &RoleSettings::default()).await?;
    config.vault_token = None;
    config.vault_role_id = Some(setup.role_id.clone());
    config.vault_secret_id = Some(setup.secret_id.clone());
    let core = Core::connect(&config, Needs::ALL, None).await?;
    let options = leptos::config::LeptosOptions::builder().output_name("smtp-vault").site_root("target/site").build();
    let sessions = smtp_vault::web::session::SqlSessionStore::connect(&config).await?;
    let app = smtp_vault::web::router(core.clone(), &config, options, sessions);
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
    tokio::spawn(async move {
        let _ = axum::serve(listener, app.into_make_service_with_connect_info::<std::net::SocketAddr>()).await;
    });
    let scopes = [
        Scope::CredentialsRead,
        Scope::CredentialsWrite,
        Scope::CredentialsReadSecret,
        Scope::CredentialsRotate,
        Scope::CredentialsReset,
        Scope::AuditRead,
    ];
    let token = core.create_token(&Actor::operator(), "bench", &scopes, None).await?.token.expose_secret().to_owned();
    Ok(Console {
        config,
        core,
        base: format!("http://localhost:{port}"),
        token,
        role_id: setup.role_id,
        secret_id: setup.secret_id.expose_secret().to_owned(),
    })
}

fn credential_body(i: usize) -> Value {
    json!({
        "username": format!("admin@t{i}.example"),
        "password": format!("Bench-Password-{i:06}-xxxxxxxxxxxxxxxx"),
        "smtp_host": format!("mail.t{i}.example"),
        "smtp_port": 587,
        "webmail_url": format!("https://mail.t{i}.example/webmail"),
        "mailu_api_url": format!("https://mail.t{i}.example/api/v1"),
        "mailu_api_token": "bench-api-token",
    })
}

async fn timed_each<F, Fut>(n: usize, mut call: F) -> Fallible<Vec<Duration>>
where
    F: FnMut(usize) -> Fut,
    Fut: std::future::Future<Output = Fallible<()>>,
{
    let mut samples = Vec::with_capacity(n);
    for i in 0..n {
        let started = Instant::now();
        call(i).await?;
        samples.push(started.elapsed());
    }
    Ok(samples)
}

/// Times `n` calls of each side, interleaved (the order within a pair alternating), so that the
/// machine's drift between two blocks of calls — this kind of machine has CPU steal that comes
/// and goes — lands on both sides alike instead of on whichever ran in the worse minute.
async fn timed_pairs<A, AF, B, BF>(n: usize, mut bare: A, mut ours: B) -> Fallible<(Vec<Duration>, Vec<Duration>)>
where
    A: FnMut(usize) -> AF,
    AF: std::future::Future<Output = Fallible<()>>,
    B: FnMut(usize) -> BF,
    BF: std::future::Future<Output = Fallible<()>>,
{
    let (mut first, mut second) = (Vec::with_capacity(n), Vec::with_capacity(n));
    for i in 0..n {
        for side in if i % 2 == 0 { [0, 1] } else { [1, 0] } {
            let started = Instant::now();
            if side == 0 {
                bare(i).await?;
                first.push(started.elapsed());
            } else {
                ours(i).await?;
                second.push(started.elapsed());
            }
        }
    }
    Ok((first, second))
}

async fn expect_ok(response: reqwest::Response) -> Fallible<()> {
    let status = response.status();
    if status.is_success() {
        let _ = response.bytes().await?;
        Ok(())
    } else {
        Err(format!("HTTP {status}: {}", response.text().await.unwrap_or_default()).into())
    }
}

/// Bare KV v2 against the console's store and secret-read, same Vault, same client.
async fn bench_kv(
    report: &mut Report,
    clock: &SpanClock,
    console: &Console,
    vault: (&str, &str),
    http: &reqwest::Client,
    ops: usize,
) -> Fallible<f64> {
    let (addr, root) = vault;
    // The bare side gets a policy-bound token like the console's AppRole one (a root token
    // skips the policy check and would flatter Vault), and writes the dev server's own KV v2
    // mount (`secret/`), so the console's mount holds only console documents.
    expect_ok(
        http.put(format!("{addr}/v1/sys/policies/acl/bench-bare"))
            .header("X-Vault-Token", root)
            .json(&json!({"policy": "path \"secret/*\" { capabilities = [\"create\", \"read\", \"update\"] }"}))
            .send()
            .await?,
    )
    .await?;
    let created: Value = http
        .post(format!("{addr}/v1/auth/token/create"))
        .header("X-Vault-Token", root)
        .json(&json!({"policies": ["bench-bare"], "ttl": "2h", "no_default_policy": false}))
        .send()
        .await?
        .json()
        .await?;
    let bare_token = created["auth"]["client_token"].as_str().ok_or("no bare token")?.to_owned();
    let root = bare_token.as_str();
    let doc = |i: usize| json!({"data": credential_body(i)});
    // Warm-up of both paths.
    for i in 0..20 {
        expect_ok(
            http.post(format!("{addr}/v1/secret/data/warm-{i}/admin"))
                .header("X-Vault-Token", root)
                .json(&doc(i))
                .send()
                .await?,
        )
        .await?;
        expect_ok(
            http.put(format!("{}/api/v1/tenants/warm-{i}/smtp-credentials", console.base))
                .bearer_auth(&console.token)
                .json(&credential_body(i))
                .send()
                .await?,
        )
        .await?;
    }
    let bare_write = |i: usize| {
        let request = http
            .post(format!("{addr}/v1/secret/data/bare-{i}/admin"))
            .header("X-Vault-Token", root)
            .json(&doc(i))
            .send();
        async move { expect_ok(request.await?).await }
    };
    // The console's store and secret read of tenant `{prefix}{i}`, as the API's callers send them.
    let store = |prefix: &'static str, i: usize| {
        let request = http
            .put(format!("{}/api/v1/tenants/{prefix}{i}/smtp-credentials", console.base))
            .bearer_auth(&console.token)
            .json(&credential_body(i))
            .send();
        async move { expect_ok(request.await?).await }
    };
    let read = |i: usize| {
        let request = http
            .get(format!("{}/api/v1/tenants/kv-{i}/smtp-credentials/secret", console.base))
            .bearer_auth(&console.token)
            .send();
        async move { expect_ok(request.await?).await }
    };
    let bare_read = |i: usize| {
        let request = http.get(format!("{addr}/v1/secret/data/bare-{i}/admin")).header("X-Vault-Token", root).send();
        async move { expect_ok(request.await?).await }
    };
    let (mut bare_write, mut console_write) = timed_pairs(ops, bare_write, |i| store("kv-", i)).await?;
    let (mut bare_read, mut console_read) = timed_pairs(ops, bare_read, read).await?;
    let (bw, cw, br, cr) =
        (latency(&mut bare_write), latency(&mut console_write), latency(&mut bare_read), latency(&mut console_read));
    for (name, bare, ours) in [("read", br, cr), ("write", bw, cw)] {
        let (r50, r99) = (ours.p50 / bare.p50, ours.p99 / bare.p99);
        report.add(
            format!("KV {name}: bare Vault vs console API ({ops} ops, p50 / p99)"),
            format!(
                "bare {:.2} / {:.2} ms; console {:.2} / {:.2} ms; ratio {r50:.2}× / {r99:.2}×",
                bare.p50, bare.p99, ours.p50, ours.p99
            ),
            "≤ 1.5×",
            Some(r50 <= 1.5 && r99 <= 1.5),
        );
    }
    // Where a console read's time goes: the same reads again with the span clock on, each part
    // timed inside the real request (the HTTP request span, the token check, the core call and,
    // within it, the Vault read, the rotation-state check with the decryption, the audit append).
    let mut client = Vec::new();
    let profiled = clock
        .record(async {
            client = timed_each(ops, read).await?;
            Ok(())
        })
        .await?;
    let client_p50 = latency(&mut client).p50;
    let part = |name: &str| profiled.get(name).copied().unwrap_or(f64::NAN);
    let (request, core_call) = (part("http"), part("read_credential_secret"));
    let (token, vault, state, audit) =
        (part("authenticate_token"), part("vault_read"), part("effective_password"), part("audit_record"));
    report.add(
        "Console read profile: spans inside the request (p50)",
        format!(
            "client-side {:.2} ms = client + hyper {:.2} + server request {request:.2} ms; request = token check \
             {token:.2} + core call {core_call:.2} + edge rest {:.2}; core call = Vault read {vault:.2} (the audit \
             append, committed, {audit:.2}, runs alongside it) + rotation state and decryption {state:.2} + rest {:.2}",
            client_p50,
            client_p50 - request,
            request - token - core_call,
            core_call - vault.max(audit) - state,
        ),
        "",
        None,
    );
    // The same for a store: new tenants, as in the write row.
    let profiled = clock
        .record(async {
            client = timed_each(ops, |i| store("kv-profile-", i)).await?;
            Ok(())
        })
        .await?;
    let client_p50 = latency(&mut client).p50;
    // A part that did not run (the metadata call, unless the database's version was stale) is 0.
    let part = |name: &str| profiled.get(name).copied().unwrap_or(0.0);
    let (request, core_call, token) = (part("http"), part("store_credential"), part("authenticate_token"));
    let (version, write, journal) = (part("vault_metadata"), part("vault_write"), part("journal_write"));
    report.add(
        "Console store profile: spans inside the request (p50)",
        format!(
            "client-side {:.2} ms = client + hyper {:.2} + server request {request:.2} ms; request = token check \
             {token:.2} + core call {core_call:.2} + edge rest {:.2}; core call = Vault metadata read {version:.2} \
             (the version comes from the database's record) + Vault check-and-set write {write:.2} + database transaction \
             (row, audit append, commit) and encryption {:.2}, with the backup journal record ({journal:.2}) \
             written alongside the commit",
            client_p50,
            client_p50 - request,
            request - token - core_call,
            core_call - version - write,
        ),
        "",
        None,
    );
    // The bare write rate at the rotation batch's concurrency, for the rotation ratio.
    let concurrency = 8;
    let started = Instant::now();
    let mut workers = Vec::new();
    for w in 0..concurrency {
        let (http, addr, root) = (http.clone(), addr.to_owned(), root.to_owned());
        workers.push(tokio::spawn(async move {
            for i in 0..ops / concurrency {
                let body = json!({"data": credential_body(i)});
                let r = http
                    .post(format!("{addr}/v1/secret/data/rate-{w}-{i}/admin"))
                    .header("X-Vault-Token", &root)
                    .json(&body)
                    .send()
                    .await;
                assert!(r.is_ok_and(|r| r.status().is_success()));
            }
        }));
    }
    for w in workers {
        w.await?;
    }
    Ok((ops / concurrency * concurrency) as f64 / started.elapsed().as_secs_f64())
}

async fn bench_rotation(
    report: &mut Report,
    console: &Console,
    mail: &MailStandIn,
    tenants: usize,
    bare_write_rate: Option<f64>,
) -> Fallible<()> {
    let core = &console.core;
    let client = ClientInfo::local();
    let api_url = mail.env["API_URL"].clone();
    // Implicit TLS, as Mailu 2024.06 serves submission (465; 587 ships closed).
    let smtp_port: u16 = mail.env["SMTPS_PORT"].parse()?;
    let provision = |i: usize| ProvisionCredentialRequest {
        username: format!("admin@rot{i}.example"),
        smtp_host: "localhost".into(),
        smtp_port,
        smtp_tls: smtp_vault::model::SmtpTls::Implicit,
        webmail_url: format!("https://mail.rot{i}.example/"),
        mailu_api_url: api_url.clone(),
        mailu_api_token: "bench-token-1234".to_owned().into(),
        password_policy: None,
        contact_email: None,
        reveal_notice: None,
    };
    for chunk in (0..tenants).collect::<Vec<_>>().chunks(16) {
        let mut set = tokio::task::JoinSet::new();
        for &i in chunk {
            let (core, request, client) = (core.clone(), provision(i), client.clone());
            set.spawn(async move {
                core.provision_credential(
                    &Actor::operator(),
                    &client,
                    &TenantId::parse(&format!("rot-{i}")).unwrap(),
                    request,
                )
                .await
            });
        }
        while let Some(done) = set.join_next().await {
            done??;
        }
    }
    sqlx::query("UPDATE tenants SET next_rotation_at_ms = 0 WHERE tenant_id LIKE 'rot-%'")
        .execute(core.db().pool())
        .await?;
    let started = Instant::now();
    let results = core.rotate_due(&Actor::operator(), 8).await?;
    let elapsed = started.elapsed().as_secs_f64();
    let rotated = results
        .iter()
        .filter(|(_, r)| matches!(r, Ok(smtp_vault::core::rotation::RotationResult::Rotated { .. })))
        .count();
    let rate = rotated as f64 / elapsed;
    let (ratio, holds) = match bare_write_rate {
        Some(bare) => (
            format!("; {:.2}× the bare write rate ({bare:.0}/s at 8)", rate / bare),
            Some(rate / bare >= 0.3 && rotated == tenants),
        ),
        None => (String::new(), None),
    };
    // Where a rotation's time goes: its mail-server steps, timed alone against the same stand-in.
    let mail_server = smtp_vault::core::mail::Mailu::new(
        Duration::from_secs(10),
        Some(std::fs::read(&mail.env["CA_FILE"])?),
        smtp_vault::core::outbound::OutboundPolicy::new(true, vec!["127.0.0.0/8".parse()?]),
    )?;
    let make_target = || smtp_vault::core::mail::MailTarget {
        username: "admin@profile.example".into(),
        smtp_host: "localhost".into(),
        smtp_port,
        smtp_tls: smtp_vault::model::SmtpTls::Implicit,
        api_url: api_url.clone(),
        api_token: "bench-token-1234".to_owned().into(),
        tls_name: None,
        api_address: None,
    };
    let target = make_target();
    let password: secrecy::SecretString = "Profile-Password-0123456789abcdef".to_owned().into();
    mail_server.create_user(&target, &password).await.map_err(|e| e.to_string())?;
    let mut set = Vec::new();
    let mut login = Vec::new();
    for _ in 0..50 {
        let started = Instant::now();
        mail_server.set_password(&target, &password).await.map_err(|e| e.to_string())?;
        set.push(started.elapsed());
        let started = Instant::now();
        let check = mail_server.check_login(&target, &password).await;
        login.push(started.elapsed());
        if check != smtp_vault::core::mail::LoginCheck::Accepted {
            return Err(format!("the stand-in refused the profile login: {check:?}").into());
        }
    }
    let (set, login) = (latency(&mut set), latency(&mut login));
    // The stand-in's login ceiling: 8 logins at once, as many as the batch runs.
    let mail_server = Arc::new(mail_server);
    let started = Instant::now();
    let mut logins = tokio::task::JoinSet::new();
    for _ in 0..8 {
        let (mail_server, target, password) = (mail_server.clone(), make_target(), password.clone());
        logins.spawn(async move {
            for _ in 0..25 {
                let _ = mail_server.check_login(&target, &password).await;
            }
        });
    }
    while logins.join_next().await.is_some() {}
    let login_rate = 200.0 / started.elapsed().as_secs_f64();
    report.add(
        "Rotation profile: one tenant's mail-server steps, alone (p50)",
        format!(
            "Mailu API password change {:.1} ms; SMTP AUTH check (implicit TLS + login) {:.1} ms; the mail server takes {login_rate:.0} logins/s with 8 at once",
            set.p50, login.p50
        ),
        "",
        None,
    );
    report.add(
        format!("Rotation of {tenants} tenants (8 at once)"),
        format!("{rotated} rotated in {elapsed:.1} s: {rate:.1} tenants/s{ratio}"),
        "≥ 0.3× bare KV write rate",
        holds,
    );
    Ok(())
}

/// Restores `backup_id` into a new, empty raft OpenBao (set up as `vault-setup` would), with a
/// console on `database` (the bench console's own when `None`); returns the raft server (kept
/// alive by the caller), the report and the restore's seconds.
async fn restore_into_raft(
    console: &Console,
    dir: &Path,
    database: Option<String>,
    http: &reqwest::Client,
    backup_id: &str,
) -> Fallible<(Proc, smtp_vault::model::RestoreReport, f64)> {
    let (raft, raft_addr, raft_root) = start_raft_bao(dir, http).await?;
    let mut config = console.config.clone();
    config.vault_addrs = smtp_vault::core::config::vault_addrs(&raft_addr)?;
    config.vault_token = Some(raft_root.into());
    config.vault_role_id = None;
    config.vault_secret_id = None;
    let admin = Core::connect(&config, Needs { vault: true, keyring: false }, None).await?;
    let setup = admin.setup_vault(&Actor::operator(), &RoleSettings::default()).await?;
    config.vault_token = None;
    config.vault_role_id = Some(setup.role_id);
    config.vault_secret_id = Some(setup.secret_id);
    if let Some(database) = database {
        config.database_url = database;
    }
    let replacement = Core::connect(&config, Needs::ALL, None).await?;
    let started = Instant::now();
    let options = smtp_vault::core::backup::RestoreOptions::default();
    let restored = replacement.restore_backup(&Actor::operator(), backup_id, &options, &mut |_, _| {}).await?;
    Ok((raft, restored, started.elapsed().as_secs_f64()))
}

async fn bench_backup(
    report: &mut Report,
    console: &Console,
    dir: &Path,
    http: &reqwest::Client,
    tenants: usize,
) -> Fallible<()> {
    let core = &console.core;
    for chunk in (0..tenants).collect::<Vec<_>>().chunks(32) {
        let mut set = tokio::task::JoinSet::new();
        for &i in chunk {
            let core = core.clone();
            set.spawn(async move {
                let request = StoreCredentialRequest::from_json(credential_body(i)).unwrap();
                core.store_credential(
                    &Actor::operator(),
                    &ClientInfo::local(),
                    &TenantId::parse(&format!("bk-{i}")).unwrap(),
                    request,
                )
                .await
            });
        }
        while let Some(done) = set.join_next().await {
            done??;
        }
    }
    let started = Instant::now();
    let backup = core.run_backup(&Actor::operator(), &mut |_, _| {}).await?;
    let backup_s = started.elapsed().as_secs_f64();
    let (_raft, restored, restore_s) =
        restore_into_raft(console, &dir.join("raft-target"), None, http, &backup.manifest.id).await?;
    let total = backup_s + restore_s;
    report.add(
        format!("Backup + verified restore into an empty raft OpenBao ({} tenants)", backup.manifest.tenants),
        format!(
            "backup {backup_s:.1} s, restore {restore_s:.1} s ({} written, {} verified, {} failed): {total:.1} s",
            restored.written,
            restored.verified,
            restored.failed.len()
        ),
        "≤ 30 s",
        Some(total <= 30.0 && restored.failed.is_empty()),
    );
    Ok(())
}

async fn bench_reset(report: &mut Report, console: &Console, http: &reqwest::Client, resets: usize) -> Fallible<()> {
    let mut samples = Vec::with_capacity(resets);
    for i in 0..resets {
        let tenant = format!("rot-{i}");
        let sent = chrono::Utc::now().timestamp_millis();
        let response = http
            .post(format!("{}/api/v1/tenants/{tenant}/smtp-credentials/emergency-reset", console.base))
            .bearer_auth(&console.token)
            .json(&json!({"incident_id": format!("INC-BENCH-{i}"), "reason": "benchmark: time to alert"}))
            .send()
            .await?;
        expect_ok(response).await?;
        let (raised,): (i64,) =
            sqlx::query_as("SELECT MIN(created_at_ms) FROM alerts WHERE kind = 'emergency_reset' AND tenant_id = $1")
                .bind(&tenant)
                .fetch_one(console.core.db().pool())
                .await?;
        samples.push(Duration::from_millis(u64::try_from((raised - sent).max(0))?));
    }
    let l = latency(&mut samples);
    report.add(
        format!("Emergency reset request → alert in the outbox ({resets} resets)"),
        format!("p50 {:.0} ms, p99 {:.0} ms", l.p50, l.p99),
        "p99 ≤ 1 s",
        Some(l.p99 <= 1000.0),
    );
    Ok(())
}

/// A million-event trail with a valid chain, written in batches.
async fn fill_audit(core: &Core, events: i64) -> Fallible<()> {
    const EVENTS: [&str; 6] = [
        "login_succeeded",
        "credential_revealed",
        "reveal_granted",
        "credential_rotated",
        "credential_stored",
        "backup_created",
    ];
    let pool = core.db().pool();
    let start = chrono::Utc::now().timestamp_millis() - events * 30_000;
    let mut prev = smtp_vault::core::audit::GENESIS_HASH.to_owned();
    let mut seq = 0i64;
    while seq < events {
        let batch = (events - seq).min(1000);
        let mut rows = Vec::with_capacity(usize::try_from(batch)?);
        for _ in 0..batch {
            seq += 1;
            let mut row = AuditEventRow {
                seq,
                occurred_at_ms: start + seq * 30_000,
                event_type: EVENTS[usize::try_from(seq % 6)?].into(),
                severity: if seq % 97 == 0 {
                    "critical"
                } else if seq % 11 == 0 {
                    "warning"
                } else {
                    "info"
                }
                .into(),
                actor_kind: "admin".into(),
                actor_id: format!("adm{0} (admin{0}@example.com)", seq % 23),
                tenant_id: (seq % 10 != 0).then(|| format!("t{}", seq % 50)),
                client_ip: Some("10.0.0.1".into()),
                request_id: None,
                details: format!("{{\"n\":{seq}}}"),
                prev_hash: prev.clone(),
                hash: String::new(),
            };
            row.hash = event_hash(&row);
            prev = row.hash.clone();
            rows.push(row);
        }
        let mut sql = String::from(
            "INSERT INTO audit_events (seq, occurred_at_ms, event_type, severity, actor_kind, actor_id, tenant_id, \
             client_ip, request_id, details, prev_hash, hash) VALUES ",
        );
        for (r, _) in rows.iter().enumerate() {
            let b = r * 12;
            if r > 0 {
                sql.push(',');
            }
            sql.push_str(&format!(
                "(${},${},${},${},${},${},${},${},${},${},${},${})",
                b + 1,
                b + 2,
                b + 3,
                b + 4,
                b + 5,
                b + 6,
                b + 7,
                b + 8,
                b + 9,
                b + 10,
                b + 11,
                b + 12
            ));
        }
        let mut query = sqlx::query(&sql);
        for row in &rows {
            query = query
                .bind(row.seq)
                .bind(row.occurred_at_ms)
                .bind(&row.event_type)
                .bind(&row.severity)
                .bind(&row.actor_kind)
                .bind(&row.actor_id)
                .bind(&row.tenant_id)
                .bind(&row.client_ip)
                .bind(&row.request_id)
                .bind(&row.details)
                .bind(&row.prev_hash)
                .bind(&row.hash);
        }
        query.execute(pool).await?;
    }
    // The fixture is a chain from before keying (bare SHA-256, as `event_hash` computes): the head
    // says the keyed part starts after it, as migration 0010 does for an upgraded chain, so
    // verifying needs no keyring and hashes every event as before.
    sqlx::query("UPDATE audit_head SET seq = $1, hash = $2, keyed_from = $1 + 1 WHERE id = 1")
        .bind(seq)
        .bind(&prev)
        .execute(pool)
        .await?;
    // Planner statistics, as autovacuum (PostgreSQL) or `PRAGMA optimize` (SQLite) keep them
    // in production; a freshly bulk-loaded table has none.
    sqlx::query("ANALYZE audit_events").execute(pool).await?;
    Ok(())
}

async fn bench_audit(report: &mut Report, label: &str, url: &str, events: i64) -> Fallible<()> {
    let mut config = Config::defaults();
    config.database_url = url.to_owned();
    let core = Core::connect(&config, Needs::DB, None).await?;
    let started = Instant::now();
    fill_audit(&core, events).await?;
    let fill_s = started.elapsed().as_secs_f64();
    let now = chrono::Utc::now();
    let middle = now - chrono::Duration::seconds(events * 15);
    let q = |f: &dyn Fn(&mut AuditQuery)| {
        let mut query = AuditQuery::default();
        f(&mut query);
        query
    };
    let queries = [
        q(&|_| {}),
        q(&|x| x.tenant = Some("t7".into())),
        q(&|x| x.event = Some("credential_revealed".into())),
        q(&|x| {
            x.tenant = Some("t7".into());
            x.event = Some("credential_revealed".into());
        }),
        q(&|x| x.severity = Some("critical".into())),
        q(&|x| x.actor = Some("admin13@".into())),
        q(&|x| {
            x.since = Some(middle);
            x.until = Some(middle + chrono::Duration::days(3));
        }),
        q(&|x| {
            x.tenant = Some("t3".into());
            x.event = Some("credential_revealed".into());
            x.since = Some(now - chrono::Duration::days(30));
        }),
        q(&|x| x.cursor = Some((events / 2).to_string())),
        q(&|x| {
            x.tenant = Some("t9".into());
            x.severity = Some("warning".into());
        }),
    ];
    let mut samples = Vec::new();
    let mut per_query = vec![Vec::new(); queries.len()];
    for _ in 0..10 {
        for (n, query) in queries.iter().enumerate() {
            let started = Instant::now();
            let page = core.query_audit(&Actor::operator(), query).await?;
            samples.push(started.elapsed());
            per_query[n].push(started.elapsed());
            assert!(!page.events.is_empty(), "{query:?} found nothing");
        }
    }
    let l = latency(&mut samples);
    let (slowest, worst) = per_query
        .iter_mut()
        .enumerate()
        .map(|(n, s)| (n, latency(s).p50))
        .max_by(|a, b| a.1.total_cmp(&b.1))
        .unwrap_or((0, 0.0));
    report.add(
        format!("Audit dashboard query, {events} events, {label} (10 filters × 10)"),
        format!(
            "p50 {:.1} ms, p95 {:.1} ms; slowest filter #{slowest} at p50 {worst:.1} ms (fixture written in {fill_s:.0} s)",
            l.p50, l.p95
        ),
        "p95 ≤ 50 ms",
        Some(l.p95 <= 50.0),
    );
    let started = Instant::now();
    let chain = core.verify_audit_chain().await?;
    let verify_s = started.elapsed().as_secs_f64();
    assert!(chain.first_broken.is_none(), "the fixture's chain must verify");
    report.add(
        format!("Audit chain verify, {} events, {label}", chain.events),
        format!("{verify_s:.2} s"),
        "≤ 3 s",
        Some(verify_s <= 3.0),
    );
    Ok(())
}

const SERVE_BINARY: &str = "target/release/smtp-vault";

/// Starts the release `serve` on `database`, the bench console's Vault (its AppRole) and keys,
/// backing up to `backups` under `dir`; waits until it is ready. Returns it, its pid and port.
async fn start_serve(
    console: &Console,
    dir: &Path,
    database: &str,
    backups: &str,
    env: &[(&str, &str)],
) -> Fallible<(Proc, u32, u16)> {
    let port = free_port();
    let child = Command::new(SERVE_BINARY)
        .arg("serve")
        .env("DATABASE_URL", database)
        .env("VAULT_ADDR", console.config.vault_addr_text())
        .env("VAULT_ROLE_ID", &console.role_id)
        .env("VAULT_SECRET_ID", &console.secret_id)
        .env("SMTP_VAULT_KEYRING", &console.config.keyring_path)
        .env("SMTP_VAULT_BACKUP_KEY", &console.config.backup_key_path)
        .env("SMTP_VAULT_BACKUP_TARGET", format!("file://{}/{backups}", dir.display()))
        .env("LEPTOS_SITE_ADDR", format!("127.0.0.1:{port}"))
        .env("SMTP_VAULT_PUBLIC_URL", format!("http://localhost:{port}"))
        .envs(env.iter().copied())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    let pid = child.id();
    let serve = Proc(child);
    let http = reqwest::Client::new();
    wait_for("serve to be ready", Duration::from_secs(120), async || {
        http.get(format!("http://127.0.0.1:{port}/readyz")).send().await.is_ok_and(|r| r.status() == 200)
    })
    .await?;
    Ok((serve, pid, port))
}

/// A `/proc/…/status` field in MB (`VmRSS:`, `VmHWM:`).
fn status_mb(path: &str, field: &str) -> Option<f64> {
    std::fs::read_to_string(path).ok().and_then(|s| {
        s.lines()
            .find_map(|l| l.strip_prefix(field))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
            .map(|kb| kb / 1024.0)
    })
}

async fn bench_memory(report: &mut Report, console: &Console, dir: &Path, http: &reqwest::Client) -> Fallible<()> {
    if PathBuf::from(SERVE_BINARY).exists() {
        let database = format!("sqlite://{}/idle.db", dir.display());
        let (_serve, pid, port) = start_serve(console, dir, &database, "idle-backups", &[]).await?;
        // One page and one API call, then idle: what a quiet console holds.
        let _ = http.get(format!("http://127.0.0.1:{port}/login")).send().await?.bytes().await;
        tokio::time::sleep(Duration::from_secs(5)).await;
        let mb = status_mb(&format!("/proc/{pid}/status"), "VmRSS:").ok_or("no VmRSS")?;
        report.add("Idle RSS of `serve` (release)", format!("{mb:.1} MB"), "≤ 60 MB", Some(mb <= 60.0));
    } else {
        report.add(
            "Idle RSS of `serve` (release)",
            "not measured: build with scripts/build.sh release",
            "≤ 60 MB",
            None,
        );
    }
    let wasm = PathBuf::from("target/site/pkg/smtp-vault.wasm");
    match std::fs::read(&wasm) {
        Ok(bytes) => {
            use std::io::Write;
            let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
            gz.write_all(&bytes)?;
            let kb = gz.finish()?.len() as f64 / 1024.0;
            report.add(
                "wasm bundle, gzip -9",
                format!("{kb:.0} KB ({:.0} KB raw)", bytes.len() as f64 / 1024.0),
                "≤ 600 KB",
                Some(kb <= 600.0),
            );
        }
        Err(_) => report.add("wasm bundle, gzip -9", "not built: scripts/build.sh release", "≤ 600 KB", None),
    }
    Ok(())
}

/// Signs an admin in over HTTP (invite → enrollment with a software passkey) and opens a
/// reveal window for `tenant`; returns the signed-in client.
async fn admin_with_window(console: &Console, i: usize, tenant: &str) -> Fallible<reqwest::Client> {
    let origin = console.config.public_url.clone();
    let client = reqwest::Client::builder().cookie_store(true).build()?;
    let invite = console
        .core
        .create_invite(&Actor::operator(), &ClientInfo::local(), &format!("load{i}@example.com"), Role::PlatformAdmin)
        .await?;
    let token = invite.link.rsplit_once('/').ok_or("invite link")?.1.to_owned();
    let call = async |name: &str, form: &[(&str, &str)]| -> Fallible<String> {
        let r = client.post(format!("{}/_app/{name}", console.base)).form(form).send().await?;
        let status = r.status();
        let body = r.text().await?;
        if !status.is_success() {
            return Err(format!("{name}: HTTP {status}: {body}").into());
        }
        Ok(body)
    };
    let options: String =
        serde_json::from_str(&call("begin_enrollment", &[("token", &token), ("display_name", "Load")]).await?)?;
    let mut key = SoftPasskey::new(true);
    let created = key.do_registration(origin.clone(), serde_json::from_str(&options)?)?;
    let credential = serde_json::to_string(&created)?;
    call("finish_enrollment", &[("token", &token), ("credential", &credential), ("passkey_name", "k")]).await?;
    let options: String = serde_json::from_str(
        &call("begin_reveal", &[("tenant_id", tenant), ("reason", "load test: reveal under load")]).await?,
    )?;
    let assertion = key.do_authentication(origin, serde_json::from_str(&options)?)?;
    let credential = serde_json::to_string(&assertion)?;
    call("finish_reveal", &[("tenant_id", tenant), ("credential", &credential)]).await?;
    Ok(client)
}

async fn run_load(report: &mut Report, console: &Console, sessions: usize, secs: u64) -> Fallible<()> {
    for i in 0..50 {
        let request = StoreCredentialRequest::from_json(credential_body(i))?;
        console
            .core
            .store_credential(
                &Actor::operator(),
                &ClientInfo::local(),
                &TenantId::parse(&format!("load-{i}"))?,
                request,
            )
            .await?;
    }
    let mut clients = Vec::with_capacity(sessions);
    for i in 0..sessions {
        clients.push((admin_with_window(console, i, &format!("load-{}", i % 50)).await?, format!("load-{}", i % 50)));
    }
    let deadline = Instant::now() + Duration::from_secs(secs);
    let errors = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut set = tokio::task::JoinSet::new();
    for (client, tenant) in clients {
        let (base, errors) = (console.base.clone(), errors.clone());
        set.spawn(async move {
            let mut samples = Vec::new();
            while Instant::now() < deadline {
                let started = Instant::now();
                let ok = match client
                    .post(format!("{base}/_app/reveal_credential"))
                    .form(&[("tenant_id", tenant.as_str())])
                    .send()
                    .await
                {
                    Ok(r) => r.status().is_success() && r.bytes().await.is_ok(),
                    Err(_) => false,
                };
                if ok {
                    samples.push(started.elapsed());
                } else {
                    errors.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
            }
            samples
        });
    }
    let mut all = Vec::new();
    while let Some(done) = set.join_next().await {
        all.extend(done?);
    }
    let errors = errors.load(std::sync::atomic::Ordering::Relaxed);
    let l = latency(&mut all);
    report.add(
        format!("Load: {sessions} signed-in admins revealing for {secs} s"),
        format!(
            "{} reveals ({:.0}/s), {errors} errors; p50 {:.1} ms, p99 {:.1} ms",
            all.len(),
            all.len() as f64 / secs as f64,
            l.p50,
            l.p99
        ),
        "0 errors",
        Some(errors == 0),
    );
    Ok(())
}

/// `tenant_id, state, version, next_rotation_at_ms, heartbeat_ok_at_ms`, copied to PostgreSQL.
type ScaleRow = (String, String, i64, Option<i64>, Option<i64>);

/// Requests OpenBao's file audit device has logged so far (one `request` line per call).
fn vault_requests(dir: &Path) -> usize {
    std::fs::read_to_string(dir.join("vault-audit.log"))
        .map(|log| log.lines().filter(|l| l.contains("\"type\":\"request\"")).count())
        .unwrap_or(0)
}

/// Times `n` calls of `call` (after 5 warm-up calls).
async fn timed<F, Fut>(n: usize, mut call: F) -> Fallible<Latency>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Fallible<()>>,
{
    for _ in 0..5 {
        call().await?;
    }
    let mut samples = Vec::with_capacity(n);
    for _ in 0..n {
        let started = Instant::now();
        call().await?;
        samples.push(started.elapsed());
    }
    Ok(latency(&mut samples))
}

/// The list page and the overview on one database holding `n` tenants, in-process.
async fn scale_queries(report: &mut Report, label: &str, core: &Core, n: usize) -> Fallible<()> {
    use smtp_vault::model::{TenantFilter, TenantQuery};
    let middle = format!("n.sc-{:06}", n / 2);
    let cases = [
        ("first page", TenantQuery::default()),
        ("middle page", TenantQuery { cursor: Some(middle), ..TenantQuery::default() }),
        ("filtered (drifted)", TenantQuery { state: Some(TenantFilter::Drifted), ..TenantQuery::default() }),
        ("search (\"-0421\")", TenantQuery { search: Some("-0421".into()), ..TenantQuery::default() }),
    ];
    for (what, query) in cases {
        let page = core.tenant_page(&Actor::operator(), &query).await?;
        let body = serde_json::to_vec(&page)?.len();
        let l = timed(200, || {
            let query = query.clone();
            async move { core.tenant_page(&Actor::operator(), &query).await.map(|_| ()).map_err(Into::into) }
        })
        .await?;
        report.add(
            format!("Tenant list page, {n} tenants, {label}: {what} (in-process, 200 calls)"),
            format!(
                "p50 {:.2} ms, p95 {:.2} ms; {} of {} shown, body {:.1} KB",
                l.p50,
                l.p95,
                page.tenants.len(),
                page.total,
                body as f64 / 1024.0
            ),
            "p95 ≤ 50 ms, body ≤ 100 KB",
            Some(l.p95 <= 50.0 && body <= 100 * 1024),
        );
    }
    let l = timed(200, || async { core.overview(&Actor::operator()).await.map(|_| ()).map_err(Into::into) }).await?;
    report.add(
        format!("Overview, {n} tenants, {label} (in-process, 200 calls)"),
        format!("p50 {:.2} ms, p95 {:.2} ms", l.p50, l.p95),
        "p95 ≤ 100 ms",
        Some(l.p95 <= 100.0),
    );
    Ok(())
}

/// Issue 18's rows at `n` tenants: store rate, list pages (SQLite over HTTP and in-process,
/// PostgreSQL in-process on a copy of the rows), the overview, start-up with the Vault calls
/// it makes, the daily cycle (the due share rotated on the realistic stand-in, the
/// reconciliation's slice) and a heartbeat pass, backup + verified restore, RSS.
#[expect(clippy::too_many_arguments, reason = "the harness's pieces, each used")]
async fn run_scale(
    report: &mut Report,
    console: &Console,
    mail: &MailStandIn,
    work: &Path,
    http: &reqwest::Client,
    (addr, root): (&str, &str),
    n: usize,
    pg_url: Option<&str>,
) -> Fallible<()> {
    let core = &console.core;
    // Store rate: every tenant through the core (32 at once), beside bare KV writes of the same
    // document size on a 2,000-write sample at the same concurrency.
    let started = Instant::now();
    let mut done = 0;
    for chunk in (0..n).collect::<Vec<_>>().chunks(32) {
        let mut set = tokio::task::JoinSet::new();
        for &i in chunk {
            let core = core.clone();
            set.spawn(async move {
                let request = StoreCredentialRequest::from_json(credential_body(i)).unwrap();
                let tenant = TenantId::parse(&format!("sc-{i:06}")).unwrap();
                core.store_credential(&Actor::operator(), &ClientInfo::local(), &tenant, request).await
            });
        }
        while let Some(stored) = set.join_next().await {
            stored??;
        }
        done += chunk.len();
        if done % 10_000 < 32 {
            eprintln!("stored {done} of {n}");
        }
    }
    let store_rate = n as f64 / started.elapsed().as_secs_f64();
    let sample = 2000;
    let started = Instant::now();
    for chunk in (0..sample).collect::<Vec<_>>().chunks(32) {
        let mut set = tokio::task::JoinSet::new();
        for &i in chunk {
            let (http, url, root) =
                (http.clone(), format!("{addr}/v1/secret/data/scale-bare-{i}/admin"), root.to_owned());
            set.spawn(async move {
                let body = json!({"data": credential_body(i), "options": {"cas": 0}});
                expect_ok(http.post(url).header("X-Vault-Token", root).json(&body).send().await?).await
            });
        }
        while let Some(written) = set.join_next().await {
            written??;
        }
    }
    let bare_rate = sample as f64 / started.elapsed().as_secs_f64();
    report.add(
        format!("Store {n} tenants (32 at once) vs bare KV write ({sample}, 32 at once)"),
        format!("{store_rate:.0}/s vs bare {bare_rate:.0}/s ({:.2}×)", store_rate / bare_rate),
        "",
        None,
    );
    // 1% drifted, for the filtered rows.
    sqlx::query("UPDATE tenants SET state = 'drifted' WHERE tenant_id LIKE 'sc-%' AND tenant_id LIKE '%00'")
        .execute(core.db().pool())
        .await?;
    // The list over HTTP, as a provisioning backend asks it.
    let middle = format!("n.sc-{:06}", n / 2);
    for (what, query) in [
        ("first page", String::new()),
        ("middle page", format!("?cursor={middle}")),
        ("filtered (drifted)", "?state=drifted".to_owned()),
    ] {
        let url = format!("{}/api/v1/tenants{query}", console.base);
        let body = http.get(&url).bearer_auth(&console.token).send().await?.bytes().await?.len();
        let l = timed(200, || {
            let (http, url, token) = (http.clone(), url.clone(), console.token.clone());
            async move { expect_ok(http.get(url).bearer_auth(token).send().await?).await }
        })
        .await?;
        report.add(
            format!("GET /api/v1/tenants, {n} tenants, SQLite: {what} (200 requests)"),
            format!("p50 {:.2} ms, p95 {:.2} ms, body {:.1} KB", l.p50, l.p95, body as f64 / 1024.0),
            "p95 ≤ 50 ms, body ≤ 100 KB",
            Some(l.p95 <= 50.0 && body <= 100 * 1024),
        );
    }
    scale_queries(report, "SQLite", core, n).await?;
    if let Some(pg) = pg_url {
        let name = format!("scale_{}", std::process::id());
        let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(pg).await?;
        sqlx::Executor::execute(&mut conn, format!("CREATE DATABASE {name}").as_str()).await?;
        let base = pg.rsplit_once('/').map_or(pg, |(b, _)| b);
        let mut config = console.config.clone();
        config.database_url = format!("{base}/{name}");
        let pg_core = Core::connect(&config, Needs::DB, None).await?;
        // The same rows, copied (PostgreSQL has no Vault of its own here: only the queries are timed).
        let rows: Vec<ScaleRow> = sqlx::query_as(
            "SELECT tenant_id, state, version, next_rotation_at_ms, heartbeat_ok_at_ms FROM tenants WHERE tenant_id LIKE 'sc-%'",
        )
        .fetch_all(core.db().pool())
        .await?;
        for chunk in rows.chunks(1000) {
            let mut tx = pg_core.db().pool().begin().await?;
            for (id, state, version, next, beat) in chunk {
                sqlx::query(
                    "INSERT INTO tenants (tenant_id, state, version, username, smtp_host, smtp_port, webmail_url, \
                     mailu_api_url, stored_at_ms, next_rotation_at_ms, created_at_ms, updated_at_ms, heartbeat_ok_at_ms) \
                     VALUES ($1, $2, $3, 'admin@example.com', 'mail.example.com', 587, 'https://mail.example.com', \
                     'https://mail.example.com/api', 0, $4, 0, 0, $5)",
                )
                .bind(id)
                .bind(state)
                .bind(version)
                .bind(next)
                .bind(beat)
                .execute(&mut *tx)
                .await?;
            }
            tx.commit().await?;
        }
        sqlx::query("ANALYZE tenants").execute(pg_core.db().pool()).await?;
        scale_queries(report, "PostgreSQL", &pg_core, n).await?;
    } else {
        report.add("Scale rows on PostgreSQL", "skipped: no --pg-url", "", None);
    }
    // Start-up: connect (AppRole login) to ready, then the repair of interrupted rotations.
    let before = vault_requests(work);
    let started = Instant::now();
    let restarted = Core::connect(&console.config, Needs::ALL, None).await?;
    let ready = started.elapsed().as_secs_f64() * 1000.0;
    let repaired = restarted.repair_interrupted_rotations().await?;
    let repair_done = started.elapsed().as_secs_f64() * 1000.0;
    let calls = vault_requests(work) - before;
    report.add(
        format!("Start-up with {n} tenants, nothing interrupted"),
        format!("ready in {ready:.0} ms, repair done at {repair_done:.0} ms ({repaired} repaired); {calls} Vault calls in all"),
        "Vault calls O(1), not O(tenants)",
        Some(calls < 20),
    );
    // The daily cycle: the due share (1/90 of the tenants, at the default 90-day period) lives
    // on the realistic stand-in and is rotated; the reconciliation compares its seventh.
    let due = (n / 90).max(1);
    let api_url = mail.env["API_URL"].clone();
    let smtp_port: u16 = mail.env["SMTPS_PORT"].parse()?;
    for chunk in (0..due).collect::<Vec<_>>().chunks(16) {
        let mut set = tokio::task::JoinSet::new();
        for &i in chunk {
            let core = core.clone();
            let request = ProvisionCredentialRequest {
                username: format!("admin@due{i}.example"),
                smtp_host: "localhost".into(),
                smtp_port,
                smtp_tls: smtp_vault::model::SmtpTls::Implicit,
                webmail_url: format!("https://mail.due{i}.example/"),
                mailu_api_url: api_url.clone(),
                mailu_api_token: "bench-token-1234".to_owned().into(),
                password_policy: None,
                contact_email: None,
                reveal_notice: None,
            };
            set.spawn(async move {
                let tenant = TenantId::parse(&format!("due-{i:05}")).unwrap();
                core.provision_credential(&Actor::operator(), &ClientInfo::local(), &tenant, request).await
            });
        }
        while let Some(provisioned) = set.join_next().await {
            provisioned??;
        }
    }
    sqlx::query("UPDATE tenants SET next_rotation_at_ms = 0 WHERE tenant_id LIKE 'due-%'")
        .execute(core.db().pool())
        .await?;
    let before = vault_requests(work);
    let started = Instant::now();
    let cycle = core.run_daily_cycle("bench", 8).await;
    let cycle_s = started.elapsed().as_secs_f64();
    let calls = vault_requests(work) - before;
    let (rotated, failed, differences) = match &cycle {
        Ok(c) => (c.rotated.len(), c.failed.len(), c.differences.len()),
        Err(e) => {
            eprintln!("daily cycle: {e}");
            (0, 0, 0)
        }
    };
    report.add(
        format!("Daily cycle, {} tenants, {due} due on the realistic stand-in (8 at once)", n + due),
        format!("{cycle_s:.1} s: {rotated} rotated, {failed} failed, reconciliation slice of a seventh ({differences} differences); {calls} Vault calls"),
        "",
        None,
    );
    // A heartbeat pass: the due tenants' times are made now (a minute's share at 100,000 is 70).
    sqlx::query("UPDATE tenants SET heartbeat_due_at_ms = 0 WHERE tenant_id LIKE 'due-%'")
        .execute(core.db().pool())
        .await?;
    let started = Instant::now();
    let beat = core.heartbeat_due().await?;
    report.add(
        format!(
            "Heartbeat pass of {} tenants on one Mailu (2 logins at once per server)",
            beat.checked.len() + beat.failed.len()
        ),
        format!(
            "{:.1} s; {} drifted, {} could not be checked; a day's share per minute at {n} tenants: {}",
            started.elapsed().as_secs_f64(),
            beat.drifted.len(),
            beat.failed.len(),
            n.div_ceil(1440)
        ),
        "",
        None,
    );
    // Backup + verified restore into an empty raft OpenBao, then RSS.
    let started = Instant::now();
    let backup = core.run_backup(&Actor::operator(), &mut |_, _| {}).await?;
    let backup_s = started.elapsed().as_secs_f64();
    let database = format!("sqlite://{}/scale-restore.db", work.display());
    let (_raft, restored, restore_s) =
        restore_into_raft(console, &work.join("scale-raft"), Some(database), http, &backup.manifest.id).await?;
    report.add(
        format!("Backup + verified restore into an empty raft OpenBao ({} tenants)", backup.manifest.tenants),
        format!(
            "backup {backup_s:.1} s, restore {restore_s:.1} s ({} verified, {} failed): {:.1} s",
            restored.verified,
            restored.failed.len(),
            backup_s + restore_s
        ),
        "≤ 5 min",
        Some(backup_s + restore_s <= 300.0 && restored.failed.is_empty()),
    );
    // RSS of the release `serve` on the same database and Vault: it lists every tenant (the
    // API, 500 a page), then its scheduler runs the day's backup (fired every 15 s here; the
    // day's claim lets one run).
    if PathBuf::from(SERVE_BINARY).exists() {
        let backups = "scale-serve-backups";
        let (_serve, pid, port) = start_serve(
            console,
            work,
            &console.config.database_url,
            backups,
            &[("SMTP_VAULT_BACKUP_CRON", "*/15 * * * * *")],
        )
        .await?;
        let status = format!("/proc/{pid}/status");
        let ready_mb = status_mb(&status, "VmRSS:").unwrap_or(0.0);
        let (mut seen, mut cursor) = (0usize, None::<String>);
        loop {
            let mut url = format!("http://127.0.0.1:{port}/api/v1/tenants?limit=500");
            if let Some(c) = &cursor {
                url.push_str(&format!("&cursor={c}"));
            }
            let page: Value =
                http.get(&url).bearer_auth(&console.token).send().await?.error_for_status()?.json().await?;
            seen += page["tenants"].as_array().map_or(0, Vec::len);
            match page["next_cursor"].as_str() {
                Some(next) => cursor = Some(next.to_owned()),
                None => break,
            }
        }
        let listed_mb = status_mb(&status, "VmRSS:").unwrap_or(0.0);
        let day = work.join(backups).join("backups");
        wait_for("serve's scheduled backup", Duration::from_secs(900), async || {
            std::fs::read_dir(&day)
                .map(|mut days| days.any(|d| d.is_ok_and(|d| d.path().join("manifest.json").exists())))
                .unwrap_or(false)
        })
        .await?;
        let rss = status_mb(&status, "VmRSS:").ok_or("no VmRSS")?;
        let peak = status_mb(&status, "VmHWM:").unwrap_or(0.0);
        report.add(
            format!("RSS of `serve` (release) after listing all {seen} tenants and its scheduled backup of them"),
            format!("{rss:.0} MB (ready {ready_mb:.0} MB, after listing {listed_mb:.0} MB, peak {peak:.0} MB)"),
            "≤ 150 MB",
            Some(rss <= 150.0),
        );
    } else {
        report.add("RSS of `serve` at scale", "not measured: build with scripts/build.sh release", "≤ 150 MB", None);
    }
    Ok(())
}

#[tokio::main]
async fn main() -> Fallible<()> {
    let args = Args::parse();
    let clock = SpanClock::install();
    let wants = |row: &str| args.only.is_empty() || args.only.iter().any(|o| o == row);
    let work = tempfile::tempdir()?;
    let http = reqwest::Client::new();
    let mut report = Report::default();
    println!("| row | result | target | verdict |\n|---|---|---|---|");
    let (_bao, addr, root) = start_dev_bao(work.path(), &http).await?;
    let mail_dir = work.path().join("mail");
    std::fs::create_dir_all(&mail_dir)?;
    let mail = MailStandIn::start(&mail_dir)?;
    let console_dir = work.path().join("console");
    std::fs::create_dir_all(&console_dir)?;
    let console = start_console(&console_dir, &addr, &root, Some(PathBuf::from(&mail.env["CA_FILE"]))).await?;
    if let Some(n) = args.scale {
        // The KV rows first (the read and store ratios issue 18 sets), on the empty console.
        bench_kv(&mut report, &clock, &console, (&addr, &root), &http, args.ops).await?;
        let bao = (addr.as_str(), root.as_str());
        run_scale(&mut report, &console, &mail, work.path(), &http, bao, n, args.pg_url.as_deref()).await?;
    } else if args.load {
        run_load(&mut report, &console, args.load_sessions, args.load_secs).await?;
    } else {
        let bare_rate = if wants("kv") {
            Some(bench_kv(&mut report, &clock, &console, (&addr, &root), &http, args.ops).await?)
        } else {
            None
        };
        if wants("rotation") || wants("reset") {
            bench_rotation(&mut report, &console, &mail, args.rotation_tenants.max(50), bare_rate).await?;
        }
        if wants("reset") {
            bench_reset(&mut report, &console, &http, 50).await?;
        }
        if wants("backup") {
            bench_backup(&mut report, &console, work.path(), &http, args.backup_tenants).await?;
        }
        if wants("audit") {
            let sqlite = format!("sqlite://{}/audit.db", work.path().display());
            bench_audit(&mut report, "SQLite", &sqlite, args.audit_events).await?;
            if let Some(pg) = &args.pg_url {
                let name = format!("bench_{}", std::process::id());
                let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(pg).await?;
                sqlx::Executor::execute(&mut conn, format!("CREATE DATABASE {name}").as_str()).await?;
                let base = pg.rsplit_once('/').map_or(pg.as_str(), |(b, _)| b);
                bench_audit(&mut report, "PostgreSQL", &format!("{base}/{name}"), args.audit_events).await?;
            } else {
                report.add("Audit rows on PostgreSQL", "skipped: no --pg-url", "", None);
            }
        }
        if wants("memory") {
            bench_memory(&mut report, &console, work.path(), &http).await?;
        }
    }
    std::fs::create_dir_all(&args.out)?;
    let machine = machine();
    let name = if args.scale.is_some() {
        "scale"
    } else if args.load {
        "load"
    } else {
        "bench"
    };
    std::fs::write(
        args.out.join(format!("{name}.json")),
        serde_json::to_vec_pretty(&json!({"machine": machine, "rows": report.0}))?,
    )?;
    let mut md = format!("Machine: {machine}\n\n| row | result | target | verdict |\n|---|---|---|---|\n");
    for m in &report.0 {
        md.push_str(&format!("| {} | {} | {} | {} |\n", m.row, m.result, m.target, verdict(m.holds)));
    }
    std::fs::write(args.out.join(format!("{name}.md")), md)?;
    println!("\nwritten: {}/{name}.json and {name}.md", args.out.display());
    Ok(())
}

fn machine() -> String {
    let cpus = std::thread::available_parallelism().map_or(0, std::num::NonZero::get);
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find_map(|l| l.strip_prefix("model name").map(|v| v.trim_start_matches([' ', '\t', ':']).to_owned()))
        })
        .unwrap_or_default();
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| m.lines().next().map(|l| l.trim_start_matches("MemTotal:").trim().to_owned()))
        .unwrap_or_default();
    format!("{cpus} CPUs ({cpu}), {mem} RAM, {}", chrono::Utc::now().format("%Y-%m-%d"))
}
