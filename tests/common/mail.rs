//! Mail stand-in for tests: `mailu-sim` (Mailu API v1 + auth callback + relay sink) and a real
//! Dovecot from Debian on loopback whose Lua passdb asks the simulator, with TLS from a
//! throw-away CA. Started per test, stopped on drop.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const API_TOKEN: &str = "sim-token-1234";

pub struct MailStandIn {
    sim: Child,
    dovecot: Child,
    dir: tempfile::TempDir,
    pub api_url: String,
    pub api_port: u16,
    /// STARTTLS submission port.
    pub smtp_port: u16,
    pub ca_pem: Vec<u8>,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn openssl(dir: &Path, args: &[&str]) {
    let status = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success(), "openssl {args:?}");
}

fn make_certs(dir: &Path) {
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-days",
            "2",
            "-subj",
            "/CN=smtp-vault test CA",
        ],
    );
    std::fs::write(
        dir.join("leaf.ext"),
        "basicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\nsubjectAltName=DNS:localhost,IP:127.0.0.1\n",
    )
    .unwrap();
    openssl(
        dir,
        &[
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            "key.pem",
            "-out",
            "leaf.csr",
            "-subj",
            "/CN=localhost",
        ],
    );
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "leaf.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "cert.pem",
            "-days",
            "2",
            "-extfile",
            "leaf.ext",
        ],
    );
}

const LUA: &str = r#"
local http_client
function script_init()
  http_client = dovecot.http.client({timeout = 2000; max_attempts = 1})
  return 0
end
function script_deinit()
end
local function enc(s)
  return (string.gsub(s or "", "[^%w%-_%.~]", function(c) return string.format("%%%02X", string.byte(c)) end))
end
function auth_password_verify(req, pass)
  local r = http_client:request({url = "http://127.0.0.1:API_PORT/internal/auth/email"})
  r:add_header("Auth-User", enc(req.user))
  r:add_header("Auth-Pass", enc(pass))
  r:add_header("Auth-Protocol", req.service or "")
  r:add_header("Auth-Port", tostring(req.local_port))
  r:add_header("Client-Ip", enc(req.remote_ip))
  local res = r:submit()
  if res:status() == 200 then
    if res:header("Auth-Status") == "OK" then
      return dovecot.auth.PASSDB_RESULT_OK, ""
    end
    return dovecot.auth.PASSDB_RESULT_PASSWORD_MISMATCH, ""
  end
  return dovecot.auth.PASSDB_RESULT_INTERNAL_FAILURE, ""
end
function auth_passdb_lookup(req)
  return dovecot.auth.PASSDB_RESULT_USER_UNKNOWN, ""
end
"#;

fn dovecot_conf(dir: &Path, smtp_port: u16, tls_port: u16, imap_port: u16, relay_port: u16) -> String {
    let d = dir.display();
    format!(
        r#"instance_name = smtpv-{smtp_port}
base_dir = {d}/run
state_dir = {d}/state
log_path = {d}/dovecot.log
protocols = submission
listen = 127.0.0.1
ssl = yes
ssl_cert = <{d}/cert.pem
ssl_key = <{d}/key.pem
ssl_min_protocol = TLSv1.2
disable_plaintext_auth = no
auth_mechanisms = plain login
auth_cache_size = 0
auth_failure_delay = 0
default_internal_user = nobody
default_internal_group = nogroup
default_login_user = nobody
mail_uid = nobody
mail_gid = nogroup
service anvil {{
  chroot =
  unix_listener anvil-auth-penalty {{
    mode = 0
  }}
}}
passdb {{
  driver = lua
  args = file={d}/passdb.lua blocking=yes
}}
userdb {{
  driver = static
  args = home={d}/home/%d/%n
}}
mail_location = maildir:~/Maildir
submission_relay_host = 127.0.0.1
submission_relay_port = {relay_port}
submission_relay_trusted = yes
submission_relay_ssl = no
service submission-login {{
  chroot =
  inet_listener submission {{
    port = {smtp_port}
  }}
  inet_listener submissions {{
    port = {tls_port}
    ssl = yes
  }}
}}
service imap-login {{
  chroot =
  inet_listener imap {{
    port = {imap_port}
  }}
}}
"#
    )
}

impl MailStandIn {
    pub fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        // Dovecot's unprivileged processes must reach the files.
        let mut perms = std::fs::metadata(dir.path()).unwrap().permissions();
        std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o755);
        std::fs::set_permissions(dir.path(), perms).unwrap();
        let mut sim = Command::new(env!("CARGO_BIN_EXE_mailu-sim"))
            .args(["--token", API_TOKEN])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(sim.stdout.take().unwrap()).lines();
        let mut port_of = |key: &str| -> u16 {
            let line = lines.next().unwrap().unwrap();
            line.strip_prefix(&format!("{key}=")).unwrap().parse().unwrap()
        };
        let (api_port, relay_port) = (port_of("api_port"), port_of("relay_port"));
        make_certs(dir.path());
        std::fs::write(dir.path().join("passdb.lua"), LUA.replace("API_PORT", &api_port.to_string())).unwrap();
        let (smtp_port, tls_port, imap_port) = (free_port(), free_port(), free_port());
        let conf = dir.path().join("dovecot.conf");
        std::fs::write(&conf, dovecot_conf(dir.path(), smtp_port, tls_port, imap_port, relay_port)).unwrap();
        let dovecot = Command::new("dovecot")
            .args(["-F", "-c"])
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("dovecot: run scripts/ensure-tools.sh test");
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", smtp_port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "dovecot did not start: {}",
                std::fs::read_to_string(dir.path().join("dovecot.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(25));
        }
        let ca_pem = std::fs::read(dir.path().join("ca.pem")).unwrap();
        MailStandIn {
            sim,
            dovecot,
            api_url: format!("http://127.0.0.1:{api_port}/api/v1"),
            api_port,
            smtp_port,
            ca_pem,
            dir,
        }
    }

    pub fn ca_path(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    /// Arms a fault in the simulator: mode `down|500|429|slow|ignore_password`, for `count` calls.
    pub async fn fault(&self, mode: &str, count: u64) {
        let url = format!("http://127.0.0.1:{}/_sim/fault", self.api_port);
        reqwest::Client::new().post(url).json(&serde_json::json!({"mode": mode, "count": count})).send().await.unwrap();
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("dovecot.log")).unwrap_or_default()
    }
}

impl Drop for MailStandIn {
    fn drop(&mut self) {
        let _ = self.dovecot.kill();
        let _ = self.dovecot.wait();
        let _ = self.sim.kill();
        let _ = self.sim.wait();
    }
}
