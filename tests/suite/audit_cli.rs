//! The audit chain and the CLI, end to end: `audit verify` passes on a clean chain and names the
//! first broken event after a row is altered, deleted or the tail is cut; `--help` works on every
//! command; `keys generate` never overwrites; `token create` prints the token once.

use crate::common;

use crate::common::{TestEnv, credential_body, token_secret};
use secrecy::ExposeSecret;
use smtp_vault::core::{Actor, ClientInfo};
use smtp_vault::model::{Scope, StoreCredentialRequest, TenantId};

fn cli(env: &TestEnv, args: &[&str]) -> (i32, String, String) {
    let out = common::console_command(env).args(args).output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

async fn store(env: &TestEnv, tenant: &str, password: &str) {
    let request = StoreCredentialRequest::from_json(credential_body(password, "tok")).unwrap();
    let tenant = TenantId::parse(tenant).unwrap();
    env.core.store_credential(&Actor::operator(), &ClientInfo::local(), &tenant, request).await.unwrap();
}

#[tokio::test]
async fn audit_verify_names_the_first_broken_event() {
    let env = TestEnv::start().await;
    for (i, tenant) in ["acme", "globex", "initech", "umbrella"].iter().enumerate() {
        store(&env, tenant, &format!("Password-{i}-xyz")).await;
    }
    let (code, out, err) = cli(&env, &["audit", "verify"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("audit chain intact"), "{out}");

    let pool = env.core.db().pool();
    let (seq,): (i64,) =
        sqlx::query_as("SELECT seq FROM audit_events WHERE tenant_id = 'globex'").fetch_one(pool).await.unwrap();
    // Someone edits one event's details in place.
    sqlx::query("UPDATE audit_events SET details = '{\"version\":99}' WHERE seq = $1")
        .bind(seq)
        .execute(pool)
        .await
        .unwrap();
    let (code, out, _) = cli(&env, &["audit", "verify"]);
    assert_eq!(code, 2);
    assert!(out.contains(&format!("BROKEN at event {seq}")), "{out}");
    let report = env.core.verify_audit_chain().await.unwrap();
    assert_eq!(report.first_broken.map(|b| b.seq), Some(seq));
}

#[tokio::test]
async fn audit_verify_detects_deleted_and_truncated_events() {
    let env = TestEnv::start().await;
    for tenant in ["acme", "globex", "initech"] {
        store(&env, tenant, "Password-abc-1").await;
    }
    let pool = env.core.db().pool();
    let (last,): (i64,) = sqlx::query_as("SELECT MAX(seq) FROM audit_events").fetch_one(pool).await.unwrap();
    // Cutting the newest event is caught by the head row.
    sqlx::query("DELETE FROM audit_events WHERE seq = $1").bind(last).execute(pool).await.unwrap();
    assert_eq!(env.core.verify_audit_chain().await.unwrap().first_broken.map(|b| b.seq), Some(last));
    // Removing one from the middle names the gap.
    sqlx::query("DELETE FROM audit_events WHERE seq = 2").execute(pool).await.unwrap();
    assert_eq!(env.core.verify_audit_chain().await.unwrap().first_broken.map(|b| b.seq), Some(2));
}

#[tokio::test]
async fn concurrent_writers_keep_one_unbroken_chain() {
    let env = TestEnv::start().await;
    let tasks: Vec<_> = (0..12)
        .map(|i| {
            let core = env.core.clone();
            tokio::spawn(async move {
                let request =
                    StoreCredentialRequest::from_json(credential_body(&format!("Concurrent-{i}-pw"), "tok")).unwrap();
                let tenant = TenantId::parse(&format!("tenant-{i}")).unwrap();
                core.store_credential(&Actor::operator(), &ClientInfo::local(), &tenant, request).await
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap().unwrap();
    }
    let report = env.core.verify_audit_chain().await.unwrap();
    assert_eq!(report.first_broken, None);
    assert!(report.events >= 12);
}

#[tokio::test]
async fn cli_commands_have_help_keys_are_never_overwritten_and_tokens_show_once() {
    let env = TestEnv::start().await;
    for args in [
        vec!["--help"],
        vec!["serve", "--help"],
        vec!["migrate", "--help"],
        vec!["vault-setup", "--help"],
        vec!["keys", "--help"],
        vec!["keys", "generate", "--help"],
        vec!["keys", "rewrap", "--help"],
        vec!["token", "--help"],
        vec!["token", "create", "--help"],
        vec!["token", "list", "--help"],
        vec!["token", "revoke", "--help"],
        vec!["audit", "--help"],
        vec!["audit", "verify", "--help"],
    ] {
        let (code, out, err) = cli(&env, &args);
        assert_eq!(code, 0, "{args:?}: {err}");
        assert!(out.contains("Usage:"), "{args:?}: {out}");
    }

    let before = std::fs::read(&env.config.keyring_path).unwrap();
    let (code, _, err) = cli(&env, &["keys", "generate"]);
    // A keyring that exists is a configuration matter (README, "Exit status").
    assert_eq!(code, 78, "{err}");
    assert!(err.starts_with("error: ") && err.contains("never overwritten"), "{err}");
    assert_eq!(std::fs::read(&env.config.keyring_path).unwrap(), before, "the keyring is untouched");

    let (code, out, err) =
        cli(&env, &["token", "create", "--name", "provisioner", "--scope", "credentials:write", "--expires-in", "30d"]);
    assert_eq!(code, 0, "{err}");
    let token = out.trim();
    assert!(token.starts_with("svt_"), "{out}");
    assert!(!err.contains(token));
    let (code, out, _) = cli(&env, &["token", "list"]);
    assert_eq!(code, 0);
    assert!(out.contains("provisioner") && !out.contains(token_secret(token)));
    let (code, _, err) = cli(&env, &["token", "create", "--name", "x", "--scope", "credentials:everything"]);
    assert_ne!(code, 0);
    assert!(err.contains("unknown scope"), "{err}");

    // Rotating the master key and rewrapping keeps every credential readable.
    store(&env, "acme", "Rewrap-Me-123").await;
    let (code, _, err) = cli(&env, &["keys", "generate", "--add"]);
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = cli(&env, &["keys", "rewrap"]);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("1 rewrapped"), "{err}");
    let (_, raw) = env.vault_root(reqwest::Method::GET, "smtp/data/acme/admin", None).await;
    let new_ring = smtp_vault::core::crypto::Keyring::load(&env.config.keyring_path).unwrap();
    let envelope = raw["data"]["data"]["password"].as_str().unwrap();
    assert_eq!(smtp_vault::core::crypto::Keyring::envelope_key_id(envelope).unwrap(), new_ring.active_key_id());
    let fresh = smtp_vault::core::Core::connect(&env.config, smtp_vault::core::Needs::ALL, None).await.unwrap();
    let secret = fresh
        .read_credential_secret(&Actor::operator(), &ClientInfo::local(), &TenantId::parse("acme").unwrap())
        .await
        .unwrap();
    assert_eq!(secret.password.expose_secret(), "Rewrap-Me-123");
    let _ = Scope::ALL;
}

#[tokio::test]
async fn audit_export_writes_the_filtered_events_as_json_lines() {
    let env = TestEnv::start().await;
    store(&env, "acme", "Export-Acme-1").await;
    store(&env, "globex", "Export-Globex-1").await;
    store(&env, "acme", "Export-Acme-2").await;
    let (code, out, err) = cli(&env, &["audit", "export", "--tenant", "acme", "--event", "credential_stored"]);
    assert_eq!(code, 0, "{err}");
    let events: Vec<serde_json::Value> = out.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(events.len(), 2);
    assert!(events.iter().all(|e| e["tenant_id"] == "acme" && e["event"] == "credential_stored"));
    assert!(events[0]["seq"].as_i64() < events[1]["seq"].as_i64(), "oldest first");
    assert!(err.contains("2 events"));
    assert!(!out.contains("Export-Acme"), "no secret in the trail");
    let (code, _, err) = cli(&env, &["audit", "export", "--severity", "loud"]);
    assert_ne!(code, 0);
    assert!(err.contains("severity"), "{err}");
    let (code, _, err) = cli(&env, &["audit", "export", "--since", "yesterday"]);
    assert_ne!(code, 0);
    assert!(err.contains("RFC 3339"), "{err}");
}

#[tokio::test]
async fn a_chain_from_before_keying_upgrades_and_stays_pinned_by_the_first_keyed_event() {
    let env = TestEnv::start().await;
    for tenant in ["acme", "globex", "initech"] {
        store(&env, tenant, "Password-abc-1").await;
    }
    // The state migration 0010 leaves an existing console in: SHA-256 events, keying from the next.
    common::rewrite_chain_unkeyed(&env.core, 1, None).await;
    let pool = env.core.db().pool();
    sqlx::query("UPDATE audit_head SET keyed_from = seq + 1 WHERE id = 1").execute(pool).await.unwrap();
    let (boundary,): (i64,) = sqlx::query_as("SELECT keyed_from FROM audit_head").fetch_one(pool).await.unwrap();
    store(&env, "umbrella", "Password-abc-2").await;
    let report = env.core.verify_audit_chain().await.unwrap();
    assert_eq!(report.first_broken, None);
    assert_eq!(report.keyed_from, boundary);
    let (code, out, err) = cli(&env, &["audit", "verify"]);
    assert_eq!(code, 0, "{out}{err}");
    // An old event edited and its successors re-hashed: the first keyed event still links to
    // the old hash, and its MAC cannot be redone without the keyring.
    common::rewrite_chain_unkeyed(&env.core, 2, Some((2, "{}"))).await;
    let broken = env.core.verify_audit_chain().await.unwrap().first_broken.unwrap();
    assert!(broken.seq <= boundary, "{broken:?}");
    let (code, out, _) = cli(&env, &["audit", "verify"]);
    assert_eq!(code, 2, "{out}");
}

#[tokio::test]
async fn an_exported_trail_is_verified_offline_and_every_alteration_gap_and_relink_is_named() {
    use smtp_vault::core::audit::verify_export;
    let env = TestEnv::start().await;
    for (i, tenant) in ["acme", "globex", "initech", "umbrella"].iter().enumerate() {
        store(&env, tenant, &format!("Password-{i}-xyz")).await;
    }
    let base = env.serve().await;
    let token = env.token(&[Scope::AuditRead]).await;
    let http = reqwest::Client::new();
    let get = |path: &'static str| {
        let (http, token, base) = (http.clone(), token.clone(), base.clone());
        async move { http.get(format!("{base}{path}")).bearer_auth(token).send().await.unwrap().text().await.unwrap() }
    };
    let (jsonl, csv) = (get("/api/v1/audit/export.jsonl").await, get("/api/v1/audit/export.csv").await);
    let (keyed_from,): (i64,) =
        sqlx::query_as("SELECT keyed_from FROM audit_head WHERE id = 1").fetch_one(env.core.db().pool()).await.unwrap();
    let (events,): (i64,) =
        sqlx::query_as("SELECT COUNT(*) FROM audit_events").fetch_one(env.core.db().pool()).await.unwrap();

    // Both exports verify from the command line, with only the keyring.
    for (name, text) in [("trail.jsonl", &jsonl), ("trail.csv", &csv)] {
        let file = env.dir.path().join(name);
        std::fs::write(&file, text).unwrap();
        let (code, out, err) = cli(
            &env,
            &["audit", "verify", "--export", file.to_str().unwrap(), "--keyed-from", &keyed_from.to_string()],
        );
        assert_eq!(code, 0, "{name}: {out}{err}");
        assert!(out.contains(&format!("export intact: events 1–{events} ({events} events)")), "{name}: {out}");
    }

    let key = smtp_vault::core::audit::ChainKey::from_keyring(
        &smtp_vault::core::crypto::Keyring::load(&env.config.keyring_path).unwrap(),
    );
    let check = |text: &str| verify_export(std::io::Cursor::new(text.to_owned()), &key, keyed_from).unwrap();
    let lines: Vec<&str> = jsonl.lines().collect();
    let broken = |text: &str| check(text).first_broken.map(|b| (b.seq, b.reason.split(':').next().unwrap().to_owned()));

    // A syslog file: each event behind the receiver's own prefix, among other messages; shuffled,
    // one delivered twice (at-least-once): still intact.
    let mut syslog: Vec<String> =
        lines.iter().map(|l| format!("2026-12-07T10:00:00+00:00 console smtp-vault[42]: {l}")).collect();
    syslog.reverse();
    syslog.push(syslog[1].clone());
    syslog.push("2026-12-07T10:00:01+00:00 console sshd[7]: session opened".into());
    let intact = check(&syslog.join("\n"));
    assert_eq!(
        (intact.first_broken, intact.events, intact.duplicates, intact.skipped_lines),
        (None, events as u64, 1, 1)
    );

    // One event's details edited.
    let altered: Vec<String> = lines
        .iter()
        .map(|l| if l.contains("\"seq\":3,") { l.replace("\"version\":1", "\"version\":7") } else { (*l).to_owned() })
        .collect();
    assert_eq!(broken(&altered.join("\n")), Some((3, "altered".into())));
    // One event left out.
    let gap: Vec<&str> = lines.iter().copied().filter(|l| !l.contains("\"seq\":2,")).collect();
    assert_eq!(broken(&gap.join("\n")), Some((2, "missing".into())));
    // An event whose link is pointed elsewhere.
    let relinked: Vec<String> = lines
        .iter()
        .map(|l| {
            let mut v: smtp_vault::model::AuditEventView = serde_json::from_str(l).unwrap();
            if v.seq == 4 {
                v.prev_hash = "0".repeat(64);
            }
            serde_json::to_string(&v).unwrap()
        })
        .collect();
    assert_eq!(broken(&relinked.join("\n")), Some((4, "relinked".into())));
    // A line that says two things (a repeated key: a SIEM may show the first, a parser keep the
    // last) or carries an extra field is refused, not verified.
    let third = lines.iter().find(|l| l.contains("\"seq\":3,")).unwrap();
    for forged in [third.replacen("{", "{\"actor\":\"mallory\",", 1), third.replacen("{", "{\"note\":\"x\",", 1)] {
        let text = lines
            .iter()
            .map(|l| if l == third { forged.clone() } else { (*l).to_owned() })
            .collect::<Vec<_>>()
            .join("\n");
        let refused = verify_export(std::io::Cursor::new(text), &key, keyed_from).err().map(|e| e.to_string());
        assert!(refused.is_some_and(|e| e.contains("not in the form")), "{forged}");
    }
    // A repeat that differs from the first copy (its severity lowered) is a conflict.
    let lowered = third.replacen("\"severity\":\"info\"", "\"severity\":\"debug\"", 1);
    assert_ne!(&lowered, third);
    assert_eq!(broken(&format!("{jsonl}\n{lowered}")).map(|b| b.0), Some(3));
    // Two different events with one number.
    let twice = format!("{jsonl}\n{}", altered.iter().find(|l| l.contains("\"seq\":3,")).unwrap());
    assert_eq!(broken(&twice).map(|b| b.0), Some(3));
    // The CSV, one cell edited.
    let edited = csv.replacen("credential_stored", "credential_revealed", 1);
    assert!(check(&edited).first_broken.is_some(), "an edited CSV must not verify");
    // A cell the console never writes (a guard quote where no guard belongs) is refused.
    let guarded = csv.replacen(",credential_stored,", ",'credential_stored,", 1);
    assert!(verify_export(std::io::Cursor::new(guarded), &key, keyed_from).is_err());
    // Every event of this trail is sealed with the keyring's MAC.
    let counted = check(&jsonl);
    assert_eq!((counted.mac_checked, counted.hash_only), (events as u64, 0));
    // Another keyring cannot vouch for the trail.
    let other = env.dir.path().join("other-keyring.json");
    let mut config = env.config.clone();
    config.keyring_path = other.clone();
    smtp_vault::core::generate_keyring(&config).unwrap();
    let wrong = smtp_vault::core::audit::verify_export_file(&env.dir.path().join("trail.jsonl"), &other, keyed_from)
        .unwrap()
        .first_broken
        .map(|b| b.seq);
    assert_eq!(wrong, Some(keyed_from.max(1)));
}
