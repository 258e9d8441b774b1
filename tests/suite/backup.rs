//! Backups against real parts: OpenBao (the source and an empty replacement), the database, a
//! file target and an S3 server (s3s-fs). 10,000 tenants backed up and restored into an empty
//! Vault with every one verified; tampered, truncated and wrongly keyed backups rejected with
//! nothing written; retention over 400 simulated days; the journal replaying a change made
//! after the last backup; the S3 path through the real CLI.

use crate::common;

use crate::common::{ManualClock, OpenBao, TestEnv, bao_binary, credential_body};
use futures_util::StreamExt;
use secrecy::{ExposeSecret, SecretString};
use smtp_vault::core::backup::RestoreOptions;
use smtp_vault::core::config::Config;
use smtp_vault::core::crypto::{Keyring, SecretField};
use smtp_vault::core::vault::{CredentialDocument, RoleSettings, Vault, VaultAuth, VaultSettings};
use smtp_vault::core::{Actor, ClientInfo, Core, Error, Needs};
use smtp_vault::model::{StoreCredentialRequest, TenantId};
use std::time::Duration;

/// A console with a backup key (kept in its own directory) and a file target.
struct Backups {
    env: TestEnv,
    core: Core,
    keys: tempfile::TempDir,
}

async fn with_backups(clock: Option<smtp_vault::core::clock::SharedClock>) -> Backups {
    let keys = tempfile::tempdir().unwrap();
    let env = TestEnv::builder().maybe_clock(clock.clone()).start().await;
    smtp_vault::core::generate_backup_key(&env.config).unwrap();
    let core = Core::connect(&env.config, Needs::ALL, clock).await.unwrap();
    Backups { env, core, keys }
}

impl Backups {
    fn config(&self) -> Config {
        self.env.config.clone()
    }

    /// A console on an empty replacement Vault (set up as `vault-setup` would), same database,
    /// keyring, backup key and target.
    async fn replacement(&self, bao: &OpenBao) -> Core {
        let mut config = self.config();
        config.vault_addrs = smtp_vault::core::config::vault_addrs(&bao.addr).unwrap();
        config.vault_token = Some(bao.root_token.clone());
        let core = Core::connect(&config, Needs::ALL, None).await.unwrap();
        core.setup_vault(&Actor::operator(), &RoleSettings::default()).await.unwrap();
        core
    }
}

async fn store(core: &Core, tenant: &str, password: &str) {
    let request = StoreCredentialRequest::from_json(credential_body(password, "tok")).unwrap();
    core.store_credential(&Actor::operator(), &ClientInfo::local(), &TenantId::parse(tenant).unwrap(), request)
        .await
        .unwrap();
}

async fn password_of(core: &Core, tenant: &str) -> String {
    let secret = core
        .read_credential_secret(&Actor::operator(), &ClientInfo::local(), &TenantId::parse(tenant).unwrap())
        .await
        .unwrap();
    secret.password.expose_secret().to_owned()
}

fn root_vault_settings(bao: &OpenBao) -> VaultSettings {
    VaultSettings {
        addrs: vec![bao.addr.clone()],
        mount: "smtp".into(),
        approle_mount: "approle".into(),
        auth: VaultAuth::Token(bao.root_token.clone()),
        timeout: Duration::from_secs(10),
    }
}

fn no_progress() -> impl FnMut(usize, usize) + Send {
    |_, _| {}
}

#[tokio::test]
async fn ten_thousand_tenants_back_up_and_restore_into_an_empty_vault_and_all_verify() {
    const N: usize = 10_000;
    let b = with_backups(None).await;
    // Seed Vault directly (as 10,000 provisionings would leave it), a few at a time.
    let vault = Vault::connect(root_vault_settings(&b.env.bao)).await.unwrap();
    let ring = Keyring::load(&b.env.config.keyring_path).unwrap();
    let seeded = std::time::Instant::now();
    futures_util::stream::iter(0..N)
        .map(|i| {
            let (vault, ring) = (&vault, &ring);
            async move {
                let tenant = TenantId::parse(&format!("t{i:05}")).unwrap();
                let password = SecretString::from(format!("pw-{i}"));
                let document = CredentialDocument {
                    username: format!("admin@t{i}.example"),
                    password: ring.seal(&tenant, SecretField::Password, &password).unwrap(),
                    smtp_host: "mail.example".into(),
                    smtp_port: 587,
                    smtp_tls: None,
                    webmail_url: "https://mail.example/".into(),
                    mailu_api_url: "https://mail.example/api/v1".into(),
                    mailu_api_token: ring
                        .seal(&tenant, SecretField::MailuApiToken, &SecretString::from("tok"))
                        .unwrap(),
                };
                vault.write_credential(&tenant, &document, 0).await.unwrap();
            }
        })
        .buffer_unordered(32)
        .collect::<Vec<_>>()
        .await;
    println!("seeded {N} tenants in {:?}", seeded.elapsed());

    let mut seen = Vec::new();
    let report = b.core.run_backup(&Actor::operator(), &mut |done, total| seen.push((done, total))).await.unwrap();
    assert_eq!(report.manifest.tenants, N);
    assert_eq!(seen.last(), Some(&(N, N)), "progress reaches the end");
    println!("backup: export {} ms, total {} ms, {} bytes", report.export_ms, report.total_ms, report.manifest.size);

    // Vault is lost: an empty one takes its place.
    let replacement_bao = OpenBao::start().await;
    let replacement = b.replacement(&replacement_bao).await;
    let restored = replacement
        .restore_backup(&Actor::operator(), &report.manifest.id, &RestoreOptions::default(), &mut no_progress())
        .await
        .unwrap();
    println!(
        "restore: fetch {} ms, write+verify {} ms, total {} ms",
        restored.fetch_ms, restored.write_ms, restored.total_ms
    );
    assert_eq!((restored.tenants, restored.written, restored.verified), (N, N, N));
    assert!(restored.failed.is_empty() && restored.skipped.is_empty());
    let check = Vault::connect(root_vault_settings(&replacement_bao)).await.unwrap();
    assert_eq!(check.list_tenants().await.unwrap().len(), N);
    for i in [0, 4_321, N - 1] {
        let tenant = TenantId::parse(&format!("t{i:05}")).unwrap();
        let document = check.read_credential(&tenant).await.unwrap().unwrap().document;
        let password = ring.open(&document.password, &tenant, SecretField::Password).unwrap();
        assert_eq!(password.expose_secret(), format!("pw-{i}"));
    }
    // Restoring again changes nothing and says so.
    let again = replacement
        .restore_backup(&Actor::operator(), &report.manifest.id, &RestoreOptions::default(), &mut no_progress())
        .await
        .unwrap();
    assert_eq!((again.written, again.unchanged, again.verified), (0, N, N));
}

#[tokio::test]
async fn tampered_truncated_and_wrongly_keyed_backups_are_rejected_and_nothing_is_written() {
    let b = with_backups(None).await;
    for tenant in ["acme", "globex", "initech"] {
        store(&b.core, tenant, &format!("Backup-{tenant}-Pass")).await;
    }
    let report = b.core.run_backup(&Actor::operator(), &mut no_progress()).await.unwrap();
    let file = b.env.dir.path().join(format!("backups/backups/{}/vault-snapshot.enc", report.manifest.id));
    let original = std::fs::read(&file).unwrap();
    let replacement_bao = OpenBao::start().await;
    let replacement = b.replacement(&replacement_bao).await;
    let empty = Vault::connect(root_vault_settings(&replacement_bao)).await.unwrap();

    let mut flipped = original.clone();
    let last = flipped.len() - 20;
    flipped[last] ^= 0x01;
    let mut manifest_edit = String::from_utf8_lossy(&original).into_owned().into_bytes();
    let at = manifest_edit.windows(11).position(|w| w == b"\"tenants\":3").unwrap();
    manifest_edit[at + 10] = b'2';
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("a flipped byte", flipped),
        ("truncated", original[..original.len() / 2].to_vec()),
        ("cut inside the header", original[..10].to_vec()),
        ("not a backup", b"hello".to_vec()),
    ];
    for (what, bytes) in cases {
        std::fs::write(&file, &bytes).unwrap();
        let outcome = replacement
            .restore_backup(&Actor::operator(), &report.manifest.id, &RestoreOptions::default(), &mut no_progress())
            .await;
        assert!(matches!(outcome, Err(Error::BackupInvalid(_))), "{what}: {outcome:?}");
        assert!(empty.list_tenants().await.unwrap().is_empty(), "{what}: nothing written");
    }
    // An edited manifest (tenant count) is not the manifest the file was sealed with. The
    // edit changes the JSON's length only if the digit count changes; here it does not.
    if manifest_edit.len() == original.len() {
        std::fs::write(&file, &manifest_edit).unwrap();
        let outcome = replacement
            .restore_backup(&Actor::operator(), &report.manifest.id, &RestoreOptions::default(), &mut no_progress())
            .await;
        assert!(matches!(outcome, Err(Error::BackupInvalid(_))), "edited manifest: {outcome:?}");
    }

    // The right file with another backup key.
    std::fs::write(&file, &original).unwrap();
    let mut other = b.config();
    other.vault_addrs = smtp_vault::core::config::vault_addrs(&replacement_bao.addr).unwrap();
    other.vault_token = Some(replacement_bao.root_token.clone());
    other.backup_key_path = b.keys.path().join("other.key");
    smtp_vault::core::generate_backup_key(&other).unwrap();
    let wrong_key = Core::connect(&other, Needs::ALL, None).await.unwrap();
    let outcome = wrong_key
        .restore_backup(&Actor::operator(), &report.manifest.id, &RestoreOptions::default(), &mut no_progress())
        .await;
    let message = outcome.as_ref().err().map(ToString::to_string).unwrap_or_default();
    assert!(matches!(outcome, Err(Error::BackupInvalid(_))), "{outcome:?}");
    assert!(message.contains("wrong backup key"), "{message}");
    assert!(empty.list_tenants().await.unwrap().is_empty());

    // And the untouched file restores.
    let fine = replacement
        .restore_backup(&Actor::operator(), &report.manifest.id, &RestoreOptions::default(), &mut no_progress())
        .await
        .unwrap();
    assert_eq!((fine.written, fine.verified), (3, 3));
    assert_eq!(password_of(&replacement, "globex").await, "Backup-globex-Pass");

    // Unknown ids and non-dates are clear errors.
    let missing = replacement
        .restore_backup(&Actor::operator(), "2001-01-01", &RestoreOptions::default(), &mut no_progress())
        .await;
    assert!(matches!(missing, Err(Error::NotFound(_))));
    let silly =
        replacement.restore_backup(&Actor::operator(), "../etc", &RestoreOptions::default(), &mut no_progress()).await;
    assert!(matches!(silly, Err(Error::InvalidInput(_))));
}

#[tokio::test]
async fn a_restore_never_silently_overwrites_a_differing_secret() {
    let b = with_backups(None).await;
    store(&b.core, "acme", "Before-Backup-Pass").await;
    store(&b.core, "globex", "Globex-Pass").await;
    let report = b.core.run_backup(&Actor::operator(), &mut no_progress()).await.unwrap();
    store(&b.core, "acme", "Newer-Than-Backup").await;
    let options = RestoreOptions { skip_journal: true, ..RestoreOptions::default() };
    let dry = b
        .core
        .restore_backup(
            &Actor::operator(),
            &report.manifest.id,
            &RestoreOptions { dry_run: true, ..options.clone() },
            &mut no_progress(),
        )
        .await
        .unwrap();
    assert!(dry.dry_run);
    assert_eq!(dry.skipped.len(), 1);
    let kept =
        b.core.restore_backup(&Actor::operator(), &report.manifest.id, &options, &mut no_progress()).await.unwrap();
    assert_eq!(kept.skipped.iter().map(|(t, _)| t.as_str()).collect::<Vec<_>>(), ["acme"]);
    assert_eq!(kept.unchanged, 1);
    assert_eq!(password_of(&b.core, "acme").await, "Newer-Than-Backup", "reported and skipped");
    let forced = b
        .core
        .restore_backup(
            &Actor::operator(),
            &report.manifest.id,
            &RestoreOptions { force: true, ..options },
            &mut no_progress(),
        )
        .await
        .unwrap();
    assert_eq!(forced.written, 1);
    assert_eq!(password_of(&b.core, "acme").await, "Before-Backup-Pass", "--force overwrites");
    let (restores,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM audit_events WHERE event_type = 'backup_restored'")
        .fetch_one(b.core.db().pool())
        .await
        .unwrap();
    assert_eq!(restores, 2, "each real restore audited, the dry run not");
}

#[tokio::test]
async fn the_journal_replays_a_change_made_after_the_last_backup() {
    let clock = ManualClock::new();
    let b = with_backups(Some(clock.clone())).await;
    store(&b.core, "acme", "In-The-Backup").await;
    let report = b.core.run_backup(&Actor::operator(), &mut no_progress()).await.unwrap();
    clock.advance(chrono::Duration::hours(3));
    store(&b.core, "acme", "After-The-Backup").await;
    let after_change = smtp_vault::core::clock::Clock::now(&*clock);
    clock.advance(chrono::Duration::hours(1));
    store(&b.core, "globex", "Only-In-The-Journal").await;

    // Vault is lost after those changes.
    let bao = OpenBao::start().await;
    let replacement = b.replacement(&bao).await;
    let restored = replacement
        .restore_backup(&Actor::operator(), &report.manifest.id, &RestoreOptions::default(), &mut no_progress())
        .await
        .unwrap();
    assert_eq!(restored.journal_records, 2);
    assert_eq!((restored.tenants, restored.verified), (2, 2));
    assert_eq!(password_of(&replacement, "acme").await, "After-The-Backup");
    assert_eq!(password_of(&replacement, "globex").await, "Only-In-The-Journal");

    // --until stops the replay at a point in time.
    let bao2 = OpenBao::start().await;
    let earlier = b.replacement(&bao2).await;
    let options = RestoreOptions { until: Some(after_change), ..RestoreOptions::default() };
    let partial =
        earlier.restore_backup(&Actor::operator(), &report.manifest.id, &options, &mut no_progress()).await.unwrap();
    assert_eq!((partial.journal_records, partial.tenants), (1, 1));
    assert_eq!(password_of(&earlier, "acme").await, "After-The-Backup");
}

#[tokio::test]
async fn four_hundred_days_of_daily_backups_keep_exactly_30_daily_and_12_monthly() {
    let clock = ManualClock::new();
    let b = with_backups(Some(clock.clone())).await;
    store(&b.core, "acme", "Retention-Pass").await;
    for _ in 0..400 {
        b.core.run_backup(&Actor::System { job: "test" }, &mut no_progress()).await.unwrap();
        clock.advance(chrono::Duration::days(1));
    }
    let kept: Vec<chrono::NaiveDate> = b
        .core
        .list_backups(&Actor::operator())
        .await
        .unwrap()
        .into_iter()
        .map(|e| chrono::NaiveDate::parse_from_str(&e.id, "%Y-%m-%d").unwrap())
        .collect();
    assert_eq!(kept.len(), 42, "{kept:?}");
    let newest = kept[0];
    let daily = &kept[..30];
    assert!(daily.iter().enumerate().all(|(i, d)| *d == newest - chrono::Duration::days(i64::try_from(i).unwrap())));
    let monthly = &kept[30..];
    let months: std::collections::BTreeSet<_> = monthly
        .iter()
        .map(|d| chrono::Datelike::month(d) + 100 * u32::try_from(chrono::Datelike::year(d)).unwrap())
        .collect();
    assert_eq!(months.len(), 12);
    for d in monthly {
        let next = *d + chrono::Duration::days(1);
        assert!(
            chrono::Datelike::month(&next) != chrono::Datelike::month(d) || daily.contains(&next),
            "{d} is its month's last"
        );
    }
    // Every kept backup is still whole.
    let oldest = kept.last().unwrap().format("%Y-%m-%d").to_string();
    let options = RestoreOptions { dry_run: true, ..RestoreOptions::default() };
    let check = b.core.restore_backup(&Actor::operator(), &oldest, &options, &mut no_progress()).await.unwrap();
    assert_eq!(check.tenants, 1);
}

#[tokio::test]
async fn the_backup_key_must_live_apart_from_a_local_target() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config::defaults();
    config.outbound_allow_plaintext = true;
    config.outbound_allow_networks = vec!["127.0.0.0/8".parse().unwrap(), "::1/128".parse().unwrap()];
    config.backup_target = smtp_vault::core::backup::BackupLocation::Dir(dir.path().join("backups"));
    config.backup_key_path = dir.path().join("backups/keys/backup.key");
    std::fs::create_dir_all(dir.path().join("backups/keys")).unwrap();
    smtp_vault::core::generate_backup_key(&config).unwrap();
    let target = smtp_vault::core::backup::BackupTarget::open(&config.backup_target).unwrap();
    let refused = target.check_key_apart(&config.backup_key_path);
    assert!(matches!(refused, Err(Error::Config(_))), "{refused:?}");
    assert!(target.check_key_apart(&dir.path().join("elsewhere.key")).is_ok());
}

/// An s3s-fs server on a free port, killed on drop.
struct S3 {
    child: std::process::Child,
    port: u16,
    _data: tempfile::TempDir,
}

impl Drop for S3 {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn start_s3() -> S3 {
    let data = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(data.path().join("dr-backups")).unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let binary = bao_binary().with_file_name("s3s-fs");
    let child = std::process::Command::new(&binary)
        .args(["--host", "127.0.0.1", "--port", &port.to_string(), "--access-key", "AKTEST", "--secret-key", "SKTEST"])
        .arg(data.path())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("s3s-fs: run scripts/ensure-tools.sh test");
    common::wait_until("s3s-fs to listen", Duration::from_secs(20), || async move {
        tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_ok()
    })
    .await;
    S3 { child, port, _data: data }
}

#[tokio::test]
async fn backups_go_to_s3_and_restore_from_it_through_the_cli() {
    let b = with_backups(None).await;
    store(&b.core, "acme", "S3-Acme-Pass").await;
    store(&b.core, "globex", "S3-Globex-Pass").await;
    let s3 = start_s3().await;
    let replacement_bao = OpenBao::start().await;
    let c = b.config();
    let cli = |args: &[&str], vault_addr: &str, token: &str| {
        let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_smtp-vault"));
        command
            .args(args)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("DATABASE_URL", &c.database_url)
            .env("SMTP_VAULT_OUTBOUND_ALLOW_PLAINTEXT", "true")
            .env("SMTP_VAULT_OUTBOUND_ALLOW_NETWORKS", "127.0.0.0/8,::1/128")
            .env("VAULT_ADDR", vault_addr)
            .env("VAULT_TOKEN", token)
            .env("SMTP_VAULT_KEYRING", &c.keyring_path)
            .env("SMTP_VAULT_BACKUP_KEY", &c.backup_key_path)
            .env("SMTP_VAULT_BACKUP_TARGET", "s3://dr-backups/console-1")
            .env("AWS_ACCESS_KEY_ID", "AKTEST")
            .env("AWS_SECRET_ACCESS_KEY", "SKTEST")
            .env("AWS_REGION", "us-east-1")
            .env("AWS_ENDPOINT", format!("http://127.0.0.1:{}", s3.port))
            .env("AWS_ALLOW_HTTP", "true");
        command
    };
    let root = b.env.bao.root_token.expose_secret().to_owned();
    let out = cli(&["backup", "run"], &b.env.bao.addr, &root).output().await.unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("2 tenants"), "{stdout}");
    assert!(stdout.contains("s3://dr-backups/console-1/backups/"), "{stdout}");
    let id = chrono::Utc::now().format("%Y-%m-%d").to_string();
    let on_disk = s3._data.path().join(format!("dr-backups/console-1/backups/{id}/vault-snapshot.enc"));
    assert!(on_disk.exists(), "the object is in the bucket");
    assert!(!String::from_utf8_lossy(&std::fs::read(&on_disk).unwrap()).contains("S3-Acme-Pass"));

    let out = cli(&["backup", "list"], &b.env.bao.addr, &root).output().await.unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains(&id));

    // Restore into an empty Vault: set it up, then restore.
    let new_root = replacement_bao.root_token.expose_secret().to_owned();
    let out = cli(&["vault-setup"], &replacement_bao.addr, &new_root).output().await.unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let out = cli(&["backup", "restore", &id, "--vault-addr", &replacement_bao.addr], &b.env.bao.addr, &new_root)
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("2 written") && stdout.contains("2 verified"), "{stdout}");
    let replacement = b.replacement(&replacement_bao).await;
    assert_eq!(password_of(&replacement, "acme").await, "S3-Acme-Pass");
}

#[tokio::test]
async fn a_platform_admin_restores_from_the_console_with_a_step_up_and_watches_progress() {
    let b = with_backups(None).await;
    store(&b.core, "acme", "Console-Restore-Pass").await;
    let report = b.core.run_backup(&Actor::operator(), &mut no_progress()).await.unwrap();
    let client = ClientInfo::local();
    let mut admin =
        common::passkeys::TestAdmin::enroll(&b.core, "plat@example.com", smtp_vault::model::Role::PlatformAdmin).await;
    let reviewer =
        common::passkeys::TestAdmin::enroll(&b.core, "rev@example.com", smtp_vault::model::Role::SecurityReviewer)
            .await;
    assert_eq!(b.core.list_backups(&reviewer.actor).await.unwrap().len(), 1, "reviewers see backups");
    // Pruning deletes backups: the scheduler's and the host's, never an admin's.
    for who in [&reviewer.actor, &admin.actor] {
        assert!(matches!(b.core.prune_backups(who).await, Err(Error::Forbidden(_))), "{who:?} pruned");
    }
    let refused = b.core.begin_restore(&reviewer.actor, &reviewer.session, &report.manifest.id, false, false).await;
    assert!(matches!(refused, Err(Error::Forbidden(_))));
    let direct =
        b.core.restore_backup(&admin.actor, &report.manifest.id, &RestoreOptions::default(), &mut no_progress()).await;
    assert!(matches!(direct, Err(Error::Forbidden(_))), "no restore without the step-up");
    let unknown = b.core.begin_restore(&admin.actor, &admin.session, "2001-01-01", false, false).await;
    assert!(matches!(unknown, Err(Error::NotFound(_))));
    let malformed = b.core.finish_restore(&admin.actor, &admin.session, &client, "{}").await;
    assert!(matches!(malformed, Err(Error::InvalidInput(_))), "not a WebAuthn answer: bad input");
    let no_step_up =
        b.core.finish_restore(&admin.actor, &admin.session, &client, common::matrix::FOREIGN_ASSERTION).await;
    assert!(matches!(no_step_up, Err(Error::Unauthenticated)));

    store(&b.core, "acme", "Changed-After").await;
    let options = b.core.begin_restore(&admin.actor, &admin.session, &report.manifest.id, false, true).await.unwrap();
    let assertion = admin.assert(&options);
    let started = b.core.finish_restore(&admin.actor, &admin.session, &client, &assertion).await.unwrap();
    assert!(started.running);
    let core = b.core.clone();
    let actor = admin.actor.clone();
    common::wait_until("the restore to finish", Duration::from_secs(30), || {
        let (core, actor) = (core.clone(), actor.clone());
        async move { core.restore_status(&actor).unwrap().is_some_and(|s| !s.running) }
    })
    .await;
    let status = b.core.restore_status(&admin.actor).unwrap().unwrap();
    assert!(status.error.is_none(), "{status:?}");
    let done = status.report.unwrap();
    assert_eq!((status.done, status.total), (1, 1));
    // The journal replays the later change, so --force rewrites nothing: identical.
    assert_eq!((done.unchanged, done.verified), (1, 1));
    assert_eq!(password_of(&b.core, "acme").await, "Changed-After");
}

/// A single-node raft OpenBao, initialised and unsealed; killed on drop.
struct RaftBao {
    child: std::process::Child,
    addr: String,
    root: SecretString,
    _dir: tempfile::TempDir,
}

impl Drop for RaftBao {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn start_raft() -> RaftBao {
    let dir = tempfile::tempdir().unwrap();
    let free = || std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let (api, cluster) = (free(), free());
    std::fs::create_dir_all(dir.path().join("raft")).unwrap();
    let config = format!(
        "ui = false\nstorage \"raft\" {{\n  path = \"{}\"\n  node_id = \"node1\"\n  performance_multiplier = 1\n}}\n\
         listener \"tcp\" {{\n  address = \"127.0.0.1:{api}\"\n  cluster_address = \"127.0.0.1:{cluster}\"\n  tls_disable = true\n}}\n\
         api_addr = \"http://127.0.0.1:{api}\"\ncluster_addr = \"http://127.0.0.1:{cluster}\"\n",
        dir.path().join("raft").display()
    );
    std::fs::write(dir.path().join("bao.hcl"), config).unwrap();
    let child = std::process::Command::new(bao_binary())
        .arg("server")
        .arg(format!("-config={}", dir.path().join("bao.hcl").display()))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let addr = format!("http://127.0.0.1:{api}");
    let http = reqwest::Client::new();
    let health = format!("{addr}/v1/sys/health");
    common::wait_until("raft OpenBao to listen", Duration::from_secs(30), || {
        let request = http.get(&health).send();
        async move { request.await.is_ok() }
    })
    .await;
    let (key, root) = common::raft_init(&http, &addr).await;
    http.post(format!("{addr}/v1/sys/unseal")).json(&serde_json::json!({"key": key})).send().await.unwrap();
    common::wait_until("raft OpenBao to become active", Duration::from_secs(30), || {
        let request = http.get(&health).send();
        async move { request.await.is_ok_and(|r| r.status() == 200) }
    })
    .await;
    RaftBao { child, addr, root: SecretString::from(root), _dir: dir }
}

#[tokio::test]
async fn on_raft_storage_the_raft_snapshot_is_sealed_beside_the_backup() {
    let b = with_backups(None).await;
    let raft = start_raft().await;
    let mut config = b.config();
    config.vault_addrs = smtp_vault::core::config::vault_addrs(&raft.addr).unwrap();
    config.vault_token = Some(raft.root.clone());
    let core = Core::connect(&config, Needs::ALL, None).await.unwrap();
    core.setup_vault(&Actor::operator(), &RoleSettings::default()).await.unwrap();
    store(&core, "acme", "Raft-Acme-Pass").await;
    let report = core.run_backup(&Actor::operator(), &mut no_progress()).await.unwrap();
    let bytes = core.save_raft_snapshot(&Actor::operator(), &report.manifest.id, None).await.unwrap();
    assert!(bytes > 0);
    let sealed =
        std::fs::read(b.env.dir.path().join(format!("backups/backups/{}/raft.snap.enc", report.manifest.id))).unwrap();
    let opened = core.export_raft_snapshot(&Actor::operator(), &report.manifest.id).await.unwrap();
    assert!(!sealed.windows(64).any(|w| w == &opened[..64]), "sealed, not the raw snapshot");
    assert_eq!(opened.len(), bytes);
    assert_eq!(&opened[..2], &[0x1f, 0x8b], "a gzip'd tar, as `bao operator raft snapshot restore` takes");
    // The console's own AppRole token may not take snapshots: a clear refusal.
    let console = Core::connect(&b.config(), Needs::ALL, None).await.unwrap();
    let refused = console.save_raft_snapshot(&Actor::operator(), &report.manifest.id, None).await;
    let message = refused.err().map(|e| e.to_string()).unwrap_or_default();
    assert!(message.contains("raft snapshot"), "{message}");
}

/// Rewrites the header of a sealed file (backup or journal record) with `edit`.
fn edit_header(path: &std::path::Path, edit: impl FnOnce(&mut serde_json::Value)) {
    let bytes = std::fs::read(path).unwrap();
    let rest = bytes.strip_prefix(b"SVBK1\n".as_slice()).unwrap();
    let len = u32::from_be_bytes(rest[..4].try_into().unwrap()) as usize;
    let mut header: serde_json::Value = serde_json::from_slice(&rest[4..4 + len]).unwrap();
    edit(&mut header);
    let header = serde_json::to_vec(&header).unwrap();
    let out = [b"SVBK1\n".as_slice(), &u32::try_from(header.len()).unwrap().to_be_bytes(), &header, &rest[4 + len..]]
        .concat();
    std::fs::write(path, out).unwrap();
}

#[tokio::test]
async fn attack_a_bucket_writer_reorders_the_journal_to_bring_back_an_old_password() {
    let clock = ManualClock::new();
    let b = with_backups(Some(clock.clone())).await;
    store(&b.core, "acme", "In-The-Backup").await;
    let report = b.core.run_backup(&Actor::operator(), &mut no_progress()).await.unwrap();
    clock.advance(chrono::Duration::hours(1));
    store(&b.core, "acme", "Old-And-Leaked").await;
    clock.advance(chrono::Duration::hours(1));
    store(&b.core, "acme", "Current-One").await;
    // The older record is re-dated past the newer one, so a replay would end on it.
    let day = b.env.dir.path().join("backups/journal");
    let mut records: Vec<_> = walk(&day).into_iter().filter(|p| p.to_string_lossy().contains("-acme-admin-")).collect();
    records.sort();
    let older = &records[records.len() - 2];
    edit_header(older, |h| {
        let later =
            chrono::DateTime::parse_from_rfc3339(h["at"].as_str().unwrap()).unwrap() + chrono::Duration::hours(5);
        h["at"] = later.to_rfc3339().into();
    });
    let bao = OpenBao::start().await;
    let replacement = b.replacement(&bao).await;
    let outcome = replacement
        .restore_backup(&Actor::operator(), &report.manifest.id, &RestoreOptions::default(), &mut no_progress())
        .await;
    assert!(matches!(outcome, Err(Error::BackupInvalid(_))), "{outcome:?}");
    let empty = Vault::connect(root_vault_settings(&bao)).await.unwrap();
    assert!(empty.list_tenants().await.unwrap().is_empty(), "nothing written");
}

#[tokio::test]
async fn attack_a_bucket_writer_passes_an_old_backup_off_as_a_newer_one() {
    let clock = ManualClock::new();
    let b = with_backups(Some(clock.clone())).await;
    store(&b.core, "acme", "Old-And-Leaked").await;
    let old = b.core.run_backup(&Actor::operator(), &mut no_progress()).await.unwrap();
    clock.advance(chrono::Duration::days(1));
    store(&b.core, "acme", "Current-One").await;
    let new = b.core.run_backup(&Actor::operator(), &mut no_progress()).await.unwrap();
    // The old file is copied over the newer day's.
    let root = b.env.dir.path().join("backups/backups");
    std::fs::copy(
        root.join(&old.manifest.id).join("vault-snapshot.enc"),
        root.join(&new.manifest.id).join("vault-snapshot.enc"),
    )
    .unwrap();
    let bao = OpenBao::start().await;
    let replacement = b.replacement(&bao).await;
    let options = RestoreOptions { skip_journal: true, ..RestoreOptions::default() };
    let outcome = replacement.restore_backup(&Actor::operator(), &new.manifest.id, &options, &mut no_progress()).await;
    assert!(matches!(outcome, Err(Error::BackupInvalid(_))), "{outcome:?}");
    let empty = Vault::connect(root_vault_settings(&bao)).await.unwrap();
    assert!(empty.list_tenants().await.unwrap().is_empty(), "nothing written");
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() { out.extend(walk(&path)) } else { out.push(path) }
    }
    out
}
