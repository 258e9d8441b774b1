//! SIEM export against its real peers: Debian's rsyslog receiving RFC 5424 over TLS (octet
//! counting) into a file, and a webhook receiver that checks Standard Webhooks signatures. The
//! received copies verify offline (`audit verify --export`), a receiver that was down gets
//! everything once back, an untrusted certificate gets nothing, dead letters are alerted and
//! re-driven, and no secret is in any exported byte.

use crate::common::alerts::AlertSink;
use crate::common::{TestEnv, credential_body, free_port};
use base64::Engine as _;
use hmac::{KeyInit, Mac};
use smtp_vault::core::siem::SyslogStream;
use smtp_vault::core::{Actor, ClientInfo};
use smtp_vault::model::{StoreCredentialRequest, TenantId};
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

const CANARY: &str = "Canary-Siem-Password-7f3a";
const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

/// A throw-away CA and a leaf for `localhost`, made with openssl.
fn make_pki(dir: &Path, name: &str) -> (PathBuf, PathBuf, PathBuf) {
    let p = |f: &str| dir.join(format!("{name}-{f}"));
    let run = |args: &[&str]| {
        let out = Command::new("openssl").args(args).output().unwrap();
        assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    };
    let s = |p: &PathBuf| p.to_str().unwrap().to_owned();
    run(&[
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-days",
        "2",
        "-subj",
        "/CN=siem test CA",
        "-keyout",
        &s(&p("ca.key")),
        "-out",
        &s(&p("ca.pem")),
    ]);
    run(&[
        "req",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-subj",
        "/CN=localhost",
        "-keyout",
        &s(&p("leaf.key")),
        "-out",
        &s(&p("leaf.csr")),
    ]);
    std::fs::write(p("ext"), "subjectAltName=DNS:localhost\nextendedKeyUsage=serverAuth\n").unwrap();
    run(&[
        "x509",
        "-req",
        "-in",
        &s(&p("leaf.csr")),
        "-CA",
        &s(&p("ca.pem")),
        "-CAkey",
        &s(&p("ca.key")),
        "-CAcreateserial",
        "-days",
        "2",
        "-extfile",
        &s(&p("ext")),
        "-out",
        &s(&p("leaf.pem")),
    ]);
    (p("ca.pem"), p("leaf.pem"), p("leaf.key"))
}

/// rsyslogd in the foreground: TLS (gtls) on `port`, every message's MSG part to `file`.
struct Rsyslog {
    child: Child,
}

impl Rsyslog {
    fn start(dir: &Path, port: u16, (ca, cert, key): &(PathBuf, PathBuf, PathBuf), file: &Path) -> Self {
        let tls = format!(
            r#"global(DefaultNetstreamDriver="gtls" DefaultNetstreamDriverCAFile="{ca}"
       DefaultNetstreamDriverCertFile="{cert}" DefaultNetstreamDriverKeyFile="{key}")
module(load="imtcp" StreamDriver.Name="gtls" StreamDriver.Mode="1" StreamDriver.AuthMode="anon")
"#,
            ca = ca.display(),
            cert = cert.display(),
            key = key.display(),
        );
        Self::launch(dir, port, &tls, file)
    }

    /// Plain TCP (octet-counted framing, no TLS).
    fn start_plain(dir: &Path, port: u16, file: &Path) -> Self {
        Self::launch(dir, port, "module(load=\"imtcp\")\n", file)
    }

    fn launch(dir: &Path, port: u16, transport: &str, file: &Path) -> Self {
        let work = dir.join(format!("rsyslog-{port}"));
        std::fs::create_dir_all(&work).unwrap();
        let conf = work.join("rsyslog.conf");
        std::fs::write(
            &conf,
            format!(
                r#"global(workDirectory="{work}" maxMessageSize="64k")
{transport}input(type="imtcp" port="{port}")
template(name="message" type="string" string="%msg%\n")
action(type="omfile" file="{file}" template="message")
"#,
                work = work.display(),
                file = file.display(),
            ),
        )
        .unwrap();
        let child = Command::new("rsyslogd")
            .args(["-n", "-f", conf.to_str().unwrap(), "-i", work.join("pid").to_str().unwrap()])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "rsyslogd did not listen on {port}");
            std::thread::sleep(Duration::from_millis(50));
        }
        Self { child }
    }
}

impl Drop for Rsyslog {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn store(env: &TestEnv, tenant: &str) {
    let request = StoreCredentialRequest::from_json(credential_body(CANARY, "mailu-token-canary")).unwrap();
    let tenant = TenantId::parse(tenant).unwrap();
    env.core.store_credential(&Actor::operator(), &ClientInfo::local(), &tenant, request).await.unwrap();
    // A read of the secret: audited, and its plaintext must never reach the SIEM.
    env.core.read_credential_secret(&Actor::operator(), &ClientInfo::local(), &tenant).await.unwrap();
}

async fn head(env: &TestEnv) -> i64 {
    let (seq,): (i64,) =
        sqlx::query_as("SELECT seq FROM audit_head WHERE id = 1").fetch_one(env.core.db().pool()).await.unwrap();
    seq
}

/// Export passes until `file` holds event `until` (rsyslog writes asynchronously).
async fn export_until(env: &TestEnv, stream: &mut SyslogStream, file: &Path, until: i64) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        env.core.export_audit_events(stream).await.unwrap();
        let text = std::fs::read_to_string(file).unwrap_or_default();
        if text.contains(&format!("\"seq\":{until},")) {
            return text;
        }
        assert!(Instant::now() < deadline, "rsyslog never received event {until}:\n{text}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn keyed_from_one(env: &TestEnv, file: &Path) -> smtp_vault::core::audit::ExportCheck {
    smtp_vault::core::audit::verify_export_file(file, &env.config.keyring_path, 1).unwrap()
}

#[tokio::test]
async fn the_trail_streams_to_rsyslog_over_tls_and_rsyslog_s_copy_verifies_after_an_outage() {
    let dir = tempfile::tempdir().unwrap();
    let pki = make_pki(dir.path(), "good");
    let port = free_port();
    let file = dir.path().join("siem.log");
    let rsyslog = Rsyslog::start(dir.path(), port, &pki, &file);
    let env = TestEnv::builder()
        .config(move |c| {
            c.siem_syslog_url = Some(format!("tls://localhost:{port}"));
            c.siem_syslog_ca_file = Some(pki.0.clone());
        })
        .start()
        .await;
    for tenant in ["acme", "globex"] {
        store(&env, tenant).await;
    }
    let mut stream = SyslogStream::default();
    let before = head(&env).await;
    let text = export_until(&env, &mut stream, &file, before).await;
    assert!(!text.contains(CANARY) && !text.contains("mailu-token-canary"), "a secret reached the SIEM");
    let check = keyed_from_one(&env, &file);
    assert_eq!((check.first_broken, check.range), (None, Some((1, before))), "{text}");

    // The receiver goes away: the pass fails, nothing is lost; once it is back, everything
    // since arrives and the copy still verifies from the first event to the head.
    drop(rsyslog);
    let mut failed = false;
    for tenant in ["initech", "hooli", "soylent"] {
        store(&env, tenant).await;
        failed |= env.core.export_audit_events(&mut stream).await.is_err();
    }
    assert!(failed, "writing to a closed receiver must fail");
    let _back = Rsyslog::start(dir.path(), port, &make_pki_reuse(dir.path()), &file);
    store(&env, "umbrella").await;
    let after = head(&env).await;
    export_until(&env, &mut stream, &file, after).await;
    let check = keyed_from_one(&env, &file);
    assert_eq!((check.first_broken, check.range), (None, Some((1, after))));
    let (cursor, behind) = env.core.siem_status().await.unwrap().first().map(|s| (s.1, s.2)).unwrap();
    assert_eq!((cursor, behind), (after, 0));
}

/// The "good" PKI made earlier in `dir` (a restarted receiver keeps its certificate).
fn make_pki_reuse(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let p = |f: &str| dir.join(format!("good-{f}"));
    (p("ca.pem"), p("leaf.pem"), p("leaf.key"))
}

#[tokio::test]
async fn a_receiver_whose_certificate_the_console_does_not_trust_gets_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let pki = make_pki(dir.path(), "rogue");
    let trusted = make_pki(dir.path(), "other");
    let port = free_port();
    let file = dir.path().join("siem.log");
    let _rsyslog = Rsyslog::start(dir.path(), port, &pki, &file);
    let env = TestEnv::builder()
        .config(move |c| {
            c.siem_syslog_url = Some(format!("tls://localhost:{port}"));
            c.siem_syslog_ca_file = Some(trusted.0.clone());
        })
        .start()
        .await;
    store(&env, "acme").await;
    let mut stream = SyslogStream::default();
    let refused = env.core.export_audit_events(&mut stream).await.unwrap_err().to_string();
    assert!(refused.contains("TLS"), "{refused}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(std::fs::read_to_string(&file).unwrap_or_default().is_empty(), "an untrusted receiver got events");
    assert_eq!(env.core.siem_status().await.unwrap()[0].1, 0, "the cursor must not move");

    // Plaintext is refused unless the outbound policy allows it.
    let mut config = env.config.clone();
    config.outbound_allow_plaintext = false;
    config.siem_syslog_url = Some(format!("tcp://localhost:{port}"));
    let policy = smtp_vault::core::outbound::OutboundPolicy::new(false, vec![]);
    let error = smtp_vault::core::siem::Sinks::from_config(&config, &policy).err().unwrap().to_string();
    assert!(error.contains("SMTP_VAULT_SIEM_SYSLOG_URL"), "{error}");
}

fn verify_signature(hook: &serde_json::Value) -> bool {
    let key = base64::engine::general_purpose::STANDARD.decode(SECRET.trim_start_matches("whsec_")).unwrap();
    let signed = format!(
        "{}.{}.{}",
        hook["webhook"]["id"].as_str().unwrap(),
        hook["webhook"]["timestamp"].as_str().unwrap(),
        hook["raw"].as_str().unwrap()
    );
    let mut mac = <hmac::Hmac<sha2::Sha256> as KeyInit>::new_from_slice(&key).unwrap();
    mac.update(signed.as_bytes());
    let expected = format!("v1,{}", base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes()));
    hook["webhook"]["signature"].as_str().unwrap().split(' ').any(|s| s == expected)
}

#[tokio::test]
async fn signed_webhooks_carry_every_event_through_retries_and_dead_letters() {
    let sink = AlertSink::start();
    let url = sink.hook_url("siem");
    let env = TestEnv::builder()
        .config(move |c| {
            c.siem_webhook_url = Some(url.clone().into());
            c.siem_webhook_secret = Some(SECRET.to_owned().into());
            c.alert_max_attempts = 3;
            c.alert_retry_ms = 10;
        })
        .start()
        .await;
    store(&env, "acme").await;
    // The receiver refuses the first two attempts: retried with backoff, then delivered.
    sink.refuse("hook", 2).await;
    let mut stream = SyslogStream::default();
    let until = head(&env).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        env.core.export_audit_events(&mut stream).await.unwrap();
        if sink.hooks("siem").await.len() as i64 >= until {
            break;
        }
        assert!(Instant::now() < deadline, "webhooks never arrived");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let hooks = sink.hooks("siem").await;
    assert!(hooks.iter().all(verify_signature), "every delivery is signed with the shared secret");
    // What was delivered leaves the outbox.
    let (owed,): (i64,) =
        sqlx::query_as("SELECT COUNT(*) FROM siem_deliveries").fetch_one(env.core.db().pool()).await.unwrap();
    assert_eq!(owed, 0, "delivered rows stay in the outbox");
    for hook in &hooks {
        let raw = hook["raw"].as_str().unwrap();
        assert!(!raw.contains(CANARY) && !raw.contains("mailu-token-canary"), "a secret reached the SIEM");
        let seq = hook["body"]["data"]["seq"].as_i64().unwrap();
        assert!(hook["webhook"]["id"].as_str().unwrap().starts_with(&format!("audit-{seq}-")));
        assert_eq!(hook["body"]["type"], "audit.event");
    }
    // Saved one per line, the payloads verify offline.
    let saved = env.dir.path().join("webhooks.jsonl");
    std::fs::write(&saved, hooks.iter().map(|h| h["raw"].as_str().unwrap()).collect::<Vec<_>>().join("\n")).unwrap();
    let check = keyed_from_one(&env, &saved);
    assert_eq!((check.first_broken, check.range), (None, Some((1, until))));

    // A receiver that keeps refusing: the deliveries dead-letter after 3 attempts, security is
    // alerted, and a redrive sends them once it is back.
    sink.refuse("hook", 1000).await;
    store(&env, "globex").await;
    let target = head(&env).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        env.core.export_audit_events(&mut stream).await.unwrap();
        let status = env.core.siem_status().await.unwrap();
        if status[0].4 > 0 && status[0].3 == 0 {
            break;
        }
        assert!(Instant::now() < deadline, "deliveries never dead-lettered: {status:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (alerts,): (i64,) =
        sqlx::query_as("SELECT COUNT(*) FROM alerts WHERE kind = 'job_failed' AND message LIKE '%siem-webhook%'")
            .fetch_one(env.core.db().pool())
            .await
            .unwrap();
    assert_eq!(alerts, 1, "one alert for the dead letters");
    sink.refuse("hook", 0).await;
    assert!(env.core.redrive_siem_dead_letters().await.unwrap() > 0);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        env.core.export_audit_events(&mut stream).await.unwrap();
        let seen: std::collections::BTreeSet<i64> =
            sink.hooks("siem").await.iter().map(|h| h["body"]["data"]["seq"].as_i64().unwrap()).collect();
        if (1..=target).all(|s| seen.contains(&s)) {
            break;
        }
        assert!(Instant::now() < deadline, "redriven deliveries never arrived");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn plain_tcp_syslog_where_plaintext_is_allowed_delivers_a_verifiable_copy() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let file = dir.path().join("siem.log");
    let _rsyslog = Rsyslog::start_plain(dir.path(), port, &file);
    // The test console allows plaintext to loopback (SMTP_VAULT_OUTBOUND_ALLOW_PLAINTEXT).
    let env =
        TestEnv::builder().config(move |c| c.siem_syslog_url = Some(format!("tcp://127.0.0.1:{port}"))).start().await;
    store(&env, "acme").await;
    let until = head(&env).await;
    let text = export_until(&env, &mut SyslogStream::default(), &file, until).await;
    assert!(!text.contains(CANARY));
    let check = keyed_from_one(&env, &file);
    assert_eq!((check.first_broken, check.range), (None, Some((1, until))));
}

#[tokio::test]
async fn a_console_that_takes_over_the_stream_replays_what_the_receiver_may_have_lost() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let file = dir.path().join("siem.log");
    let _rsyslog = Rsyslog::start_plain(dir.path(), port, &file);
    let env =
        TestEnv::builder().config(move |c| c.siem_syslog_url = Some(format!("tcp://127.0.0.1:{port}"))).start().await;
    store(&env, "acme").await;
    let until = head(&env).await;
    export_until(&env, &mut SyslogStream::default(), &file, until).await;
    // The receiver loses what it held (a crash before it reached the disk), and this console
    // goes away; another takes the stream over once the lease lapses.
    std::fs::write(&file, "").unwrap();
    sqlx::query("UPDATE siem_cursors SET lease_until_ms = 0 WHERE sink = 'syslog'")
        .execute(env.core.db().pool())
        .await
        .unwrap();
    let other = smtp_vault::core::Core::connect(&env.config, smtp_vault::core::Needs::DB, None).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut stream = SyslogStream::default();
    loop {
        other.export_audit_events(&mut stream).await.unwrap();
        if std::fs::read_to_string(&file).unwrap_or_default().contains(&format!("\"seq\":{until},")) {
            break;
        }
        assert!(Instant::now() < deadline, "the new holder never replayed");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let check = keyed_from_one(&env, &file);
    assert_eq!((check.first_broken, check.range), (None, Some((1, until))), "the replay covers the lost batch");
}
