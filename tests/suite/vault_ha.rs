//! Vault high availability: a 3-node OpenBao raft cluster on loopback, the console given every
//! node in `VAULT_ADDR`. The leader is killed in the middle of a 30-tenant rotation batch; the
//! console fails over to the new leader, the batch finishes with every tenant rotated, no
//! credential is lost (each stored password logs in over real SMTP AUTH on the stand-in, each
//! old one no longer does), nothing is left pending and the audit chain verifies.

use crate::common;

use crate::common::mail::{API_TOKEN, MailStandIn};
use crate::common::{TestDb, bao_binary, credential_body, vault_call, wait_until};
use secrecy::{ExposeSecret, SecretString};
use smtp_vault::core::config::Config;
use smtp_vault::core::mail::{LoginCheck, MailServer, Mailu};
use smtp_vault::core::rotation::RotationResult;
use smtp_vault::core::vault::RoleSettings;
use smtp_vault::core::{Actor, ClientInfo, Core, Needs};
use smtp_vault::model::{StoreCredentialRequest, TenantId};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const TENANTS: usize = 30;

/// One OpenBao raft node, killed by its PID on drop.
struct RaftNode {
    child: Option<Child>,
    addr: String,
    config: PathBuf,
    log: PathBuf,
}

impl RaftNode {
    fn start(dir: &Path, n: usize) -> Self {
        let free = || std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let (api, cluster) = (free(), free());
        let data = dir.join(format!("node{n}"));
        std::fs::create_dir_all(&data).unwrap();
        // performance_multiplier = 1: elections in ~2 s instead of ~10 s (openbao.md); short
        // autopilot intervals so joined nodes become voters within seconds.
        let config = format!(
            "ui = false\nstorage \"raft\" {{\n  path = \"{}\"\n  node_id = \"node{n}\"\n  performance_multiplier = 1\n  \
             autopilot_reconcile_interval = \"1s\"\n  autopilot_update_interval = \"500ms\"\n}}\n\
             listener \"tcp\" {{\n  address = \"127.0.0.1:{api}\"\n  cluster_address = \"127.0.0.1:{cluster}\"\n  tls_disable = true\n}}\n\
             api_addr = \"http://127.0.0.1:{api}\"\ncluster_addr = \"http://127.0.0.1:{cluster}\"\n",
            data.display()
        );
        let file = dir.join(format!("node{n}.hcl"));
        std::fs::write(&file, config).unwrap();
        let mut node = RaftNode {
            child: None,
            addr: format!("http://127.0.0.1:{api}"),
            config: file,
            log: dir.join(format!("node{n}.log")),
        };
        node.spawn();
        node
    }

    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&self.log).unwrap();
        let child = Command::new(bao_binary())
            .arg("server")
            .arg(format!("-config={}", self.config.display()))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start OpenBao: run scripts/ensure-tools.sh first");
        self.child = Some(child);
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for RaftNode {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Raft nodes on loopback: node 1 initialised and unsealed, the others joined and unsealed
/// with node 1's key, all of them voters.
struct RaftCluster {
    nodes: Vec<RaftNode>,
    root: SecretString,
    key: String,
    http: reqwest::Client,
    /// Holds each node's data and log until drop.
    _dir: tempfile::TempDir,
}

async fn health(http: &reqwest::Client, addr: &str) -> Option<u16> {
    http.get(format!("{addr}/v1/sys/health")).send().await.ok().map(|r| r.status().as_u16())
}

impl RaftCluster {
    async fn start(size: usize) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let nodes: Vec<RaftNode> = (1..=size).map(|n| RaftNode::start(dir.path(), n)).collect();
        let http = reqwest::Client::builder().timeout(Duration::from_secs(30)).build().unwrap();
        let http_ref = &http;
        for node in &nodes {
            let addr = node.addr.as_str();
            wait_until("raft nodes to listen", Duration::from_secs(30), move || async move {
                health(http_ref, addr).await.is_some()
            })
            .await;
        }
        let leader = nodes[0].addr.as_str();
        let (key, root) = common::raft_init(&http, leader).await;
        let mut cluster =
            RaftCluster { nodes: Vec::new(), root: SecretString::from(root), key, http: http.clone(), _dir: dir };
        cluster.unseal(leader, 200).await;
        let root = cluster.root.expose_secret();
        // Promote joined nodes to voters one second after they are healthy (default 10 s).
        let (status, _) = vault_call(
            leader,
            root,
            reqwest::Method::POST,
            "sys/storage/raft/autopilot/configuration",
            Some(serde_json::json!({"server_stabilization_time": "1s"})),
        )
        .await;
        assert!(status < 300, "autopilot configuration: {status}");
        for node in &nodes[1..] {
            let joined: serde_json::Value = http
                .post(format!("{}/v1/sys/storage/raft/join", node.addr))
                .json(&serde_json::json!({"leader_api_addr": leader}))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            assert_eq!(joined["joined"], true, "{joined}");
            cluster.unseal(&node.addr, 429).await;
        }
        // Losing the leader only leaves a quorum once every node votes (autopilot promotes a
        // node once it is stable; on a loaded machine that takes longer than a minute).
        wait_until("every raft node a voter", Duration::from_secs(120), move || async move {
            let (status, body) =
                vault_call(leader, root, reqwest::Method::GET, "sys/storage/raft/configuration", None).await;
            let servers = body["data"]["config"]["servers"].as_array().cloned().unwrap_or_default();
            status == 200 && servers.len() == size && servers.iter().all(|s| s["voter"] == true)
        })
        .await;
        cluster.nodes = nodes;
        cluster
    }

    /// Unseals a node with the cluster's key and waits for its health to say `status`.
    async fn unseal(&self, addr: &str, status: u16) {
        let answer = self
            .http
            .post(format!("{addr}/v1/sys/unseal"))
            .json(&serde_json::json!({"key": self.key}))
            .send()
            .await
            .unwrap();
        assert!(answer.status().is_success(), "unseal {addr}: {}", answer.status());
        let http = &self.http;
        wait_until("an unsealed node", Duration::from_secs(60), move || async move {
            health(http, addr).await == Some(status)
        })
        .await;
    }

    fn addrs(&self) -> String {
        self.nodes.iter().map(|n| n.addr.as_str()).collect::<Vec<_>>().join(",")
    }

    /// The node that says it is the active one, by `sys/leader`.
    async fn leader(&self) -> Option<usize> {
        for (i, node) in self.nodes.iter().enumerate() {
            if node.child.is_none() {
                continue;
            }
            let Ok(answer) = self.http.get(format!("{}/v1/sys/leader", node.addr)).send().await else { continue };
            let body: serde_json::Value = answer.json().await.unwrap_or_default();
            if body["is_self"] == true {
                return Some(i);
            }
        }
        None
    }
}

/// The console on a cluster, with tenants provisioned on the mail stand-in, all due.
struct Setup {
    mail: MailStandIn,
    mailu: Mailu,
    _db: TestDb,
    config: Config,
    core: Core,
    /// (tenant, SMTP login, password before the batch)
    tenants: Vec<(TenantId, String, SecretString)>,
    _dir: tempfile::TempDir,
}

async fn setup(cluster: &RaftCluster, count: usize) -> Setup {
    let mail = MailStandIn::start();
    let dir = tempfile::tempdir().unwrap();
    let db = TestDb::create(dir.path()).await;
    // vault-setup with the root token, as an operator would, then the console on AppRole; both
    // given every node.
    let mut config = Config::defaults();
    config.outbound_allow_plaintext = true;
    config.outbound_allow_networks = vec!["127.0.0.0/8".parse().unwrap(), "::1/128".parse().unwrap()];
    config.database_url = db.url.clone();
    config.vault_addrs = smtp_vault::core::config::vault_addrs(&cluster.addrs()).unwrap();
    config.vault_token = Some(cluster.root.clone());
    config.keyring_path = dir.path().join("keyring.json");
    config.backup_target = smtp_vault::core::backup::BackupLocation::Dir(dir.path().join("backups"));
    config.backup_key_path = dir.path().join("backup.key");
    config.smtp_ca_file = Some(mail.ca_path());
    config.rotation_retry_ms = 10;
    smtp_vault::core::generate_keyring(&config).unwrap();
    let admin = Core::connect(&config, Needs { vault: true, keyring: false }, None).await.unwrap();
    let report = admin.setup_vault(&Actor::operator(), &RoleSettings::default()).await.unwrap();
    config.vault_token = None;
    config.vault_role_id = Some(report.role_id.clone());
    config.vault_secret_id = Some(report.secret_id.clone());
    let core = Core::connect(&config, Needs::ALL, None).await.unwrap();
    assert_eq!(core.db().backend() == smtp_vault::core::db::Backend::Postgres, db.is_postgres());

    let mailu = Mailu::new(Duration::from_secs(5), Some(mail.ca_pem.clone()), common::lab_policy()).unwrap();
    let mut tenants = Vec::new();
    for i in 0..count {
        let name = format!("t{i:02}");
        let email = format!("admin@{name}.example");
        let password = format!("Initial-{name}-Pass");
        mailu.create_user(&mail.target(&email), &SecretString::from(password.clone())).await.unwrap();
        let mut body = credential_body(&password, API_TOKEN);
        body["username"] = email.clone().into();
        body["smtp_host"] = "localhost".into();
        body["smtp_port"] = mail.smtp_port.into();
        body["mailu_api_url"] = mail.api_url.clone().into();
        let tenant = TenantId::parse(&name).unwrap();
        let request = StoreCredentialRequest::from_json(body).unwrap();
        core.store_credential(&Actor::operator(), &ClientInfo::local(), &tenant, request).await.unwrap();
        tenants.push((tenant, email, SecretString::from(password)));
    }
    let due = chrono::Utc::now() - chrono::Duration::hours(1);
    sqlx::query("UPDATE tenants SET next_rotation_at_ms = $1")
        .bind(due.timestamp_millis())
        .execute(core.db().pool())
        .await
        .unwrap();
    Setup { mail, mailu, _db: db, config, core, tenants, _dir: dir }
}

/// Starts the batch as the daily cycle runs it; returns once a few rotations are done.
async fn start_batch(s: &Setup) -> tokio::task::JoinHandle<RotateDueOutcome> {
    let batch = tokio::spawn({
        let core = s.core.clone();
        async move { core.rotate_due(&Actor::System { job: "test" }, 4).await }
    });
    let core = &s.core;
    wait_until("a few rotations", Duration::from_secs(120), move || async move { count_rotated(core).await >= 3 })
        .await;
    batch
}

type RotateDueOutcome =
    smtp_vault::core::error::Result<Vec<(TenantId, smtp_vault::core::error::Result<RotationResult>)>>;

/// Waits for the batch and checks that nothing was lost: every tenant rotated; read through
/// `reader`, each stored password logs in over SMTP AUTH and the old one does not; no pending
/// record (checked on `vault_addr`), every tenant `active`, the audit chain intact.
async fn assert_batch_lost_nothing(
    s: &Setup,
    batch: tokio::task::JoinHandle<RotateDueOutcome>,
    reader: &Core,
    vault_addr: &str,
    root: &SecretString,
) {
    let outcomes = tokio::time::timeout(Duration::from_secs(240), batch).await.expect("the batch finishes");
    let outcomes = outcomes.unwrap().unwrap();
    assert_eq!(outcomes.len(), s.tenants.len());
    let failed: Vec<String> = outcomes
        .iter()
        .filter(|(_, outcome)| !matches!(outcome, Ok(RotationResult::Rotated { .. })))
        .map(|(tenant, outcome)| format!("{tenant}: {outcome:?}"))
        .collect();
    assert!(failed.is_empty(), "every tenant rotated: {failed:?}");
    for (tenant, email, old) in &s.tenants {
        let stored = reader.read_credential_secret(&Actor::operator(), &ClientInfo::local(), tenant).await.unwrap();
        assert_ne!(stored.password.expose_secret(), old.expose_secret(), "{tenant} rotated");
        let login = |password: SecretString| {
            let target = s.mail.target(email);
            async move { s.mailu.check_login(&target, &password).await }
        };
        assert_eq!(login(stored.password.clone()).await, LoginCheck::Accepted, "{tenant}: the stored password logs in");
        assert_eq!(login(old.clone()).await, LoginCheck::Rejected, "{tenant}: the old password is gone");
        let path = format!("smtp/data/{tenant}/pending");
        let (status, _) = vault_call(vault_addr, root.expose_secret(), reqwest::Method::GET, &path, None).await;
        assert_eq!(status, 404, "{tenant}: no pending rotation left");
        let meta = reader.credential_metadata(&Actor::operator(), tenant).await.unwrap();
        assert_eq!((meta.state.as_str(), meta.version), ("active", 2), "{tenant}");
    }
    let (unsettled,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM tenants WHERE state <> 'active'")
        .fetch_one(s.core.db().pool())
        .await
        .unwrap();
    assert_eq!(unsettled, 0, "no tenant rotating or needs_reconcile");
    assert_eq!(count_rotated(&s.core).await, s.tenants.len() as i64, "one credential_rotated per tenant");
    let chain = s.core.verify_audit_chain().await.unwrap();
    assert!(chain.first_broken.is_none(), "the audit chain verifies: {:?}", chain.first_broken);
}

async fn count_rotated(core: &Core) -> i64 {
    let (n,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM audit_events WHERE event_type = 'credential_rotated'")
        .fetch_one(core.db().pool())
        .await
        .unwrap();
    n
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn killing_the_leader_mid_batch_loses_nothing_and_the_console_finishes_on_the_new_leader() {
    let started = Instant::now();
    let mut cluster = RaftCluster::start(3).await;
    println!("cluster of 3 voters ready in {:.1} s", started.elapsed().as_secs_f64());
    let s = setup(&cluster, TENANTS).await;
    let first_leader = cluster.leader().await.expect("a leader");
    assert_eq!(s.core.vault_node().as_deref(), Some(cluster.nodes[first_leader].addr.as_str()), "starts on the leader");

    let batch_started = Instant::now();
    let batch = start_batch(&s).await;
    let leader = cluster.leader().await.expect("a leader");
    let killed = cluster.nodes[leader].addr.clone();
    cluster.nodes[leader].kill();
    let killed_at = Instant::now();
    let done_before_kill = count_rotated(&s.core).await;
    println!("killed the leader ({killed}) after {done_before_kill} of {TENANTS} rotations");
    assert!(done_before_kill < TENANTS as i64, "the leader must die mid-batch");

    // Failover timings: a new leader, then the first rotation completed through it.
    let survivors: Vec<&str> = cluster.nodes.iter().filter(|n| n.child.is_some()).map(|n| n.addr.as_str()).collect();
    let (http, survivors) = (&cluster.http, &survivors);
    wait_until("a new leader", Duration::from_secs(60), move || async move {
        for addr in survivors {
            if health(http, addr).await == Some(200) {
                return true;
            }
        }
        false
    })
    .await;
    let elected = killed_at.elapsed();
    let core = &s.core;
    wait_until("a rotation after the failover", Duration::from_secs(60), move || async move {
        count_rotated(core).await > done_before_kill
    })
    .await;
    let resumed = killed_at.elapsed();
    let running = &batch;
    wait_until("the batch to finish", Duration::from_secs(240), move || async move { running.is_finished() }).await;
    println!(
        "new leader after {:.2} s; first rotation after the kill at {:.2} s; batch of {TENANTS} in {:.1} s",
        elected.as_secs_f64(),
        resumed.as_secs_f64(),
        batch_started.elapsed().as_secs_f64()
    );

    // The console follows the new leader; a console started now (its VAULT_ADDR still names
    // the dead node) reads every credential through the surviving cluster.
    let new_leader = cluster.leader().await.expect("a new leader");
    let new_leader = cluster.nodes[new_leader].addr.clone();
    assert_ne!(new_leader, killed);
    let fresh = Core::connect(&s.config, Needs::ALL, None).await.unwrap();
    assert_batch_lost_nothing(&s, batch, &fresh, &new_leader, &cluster.root).await;
    assert_eq!(s.core.vault_node().as_deref(), Some(new_leader.as_str()), "the console is on the new leader");
    assert_eq!(s.core.readiness().await.vault.as_str(), "active");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_batch_waits_out_a_vault_restart_and_resumes_each_tenant_from_its_pending_record() {
    // One node, so no failover: the batch itself must ride out the outage.
    let mut cluster = RaftCluster::start(1).await;
    let s = setup(&cluster, 12).await;
    let batch = start_batch(&s).await;
    cluster.nodes[0].kill();
    let done_before_kill = count_rotated(&s.core).await;
    assert!(done_before_kill < 12, "Vault must go away mid-batch");
    // The outage under test: Vault stays down two seconds while the batch keeps running. A
    // rotation whose Vault work was done before the kill may still commit its audit event just
    // after it, so the count is taken one second in, and must not move in the second.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let settled = count_rotated(&s.core).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(!batch.is_finished(), "the batch waits for Vault instead of failing its tenants");
    assert_eq!(count_rotated(&s.core).await, settled, "nothing rotates without Vault");
    cluster.nodes[0].spawn();
    let addr = cluster.nodes[0].addr.clone();
    let http = &cluster.http;
    wait_until("the restarted node to listen", Duration::from_secs(30), || {
        let addr = addr.clone();
        async move { health(http, &addr).await == Some(503) }
    })
    .await;
    cluster.unseal(&addr, 200).await;
    assert_batch_lost_nothing(&s, batch, &s.core, &addr, &cluster.root).await;
}
