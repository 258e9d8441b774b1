//! Mail stand-in for tests: `scripts/mail-standin.sh` starts mailu-sim (Mailu API v1 + auth
//! callback + relay sink) and a real Dovecot from Debian on loopback whose Lua passdb asks the
//! simulator, with TLS from a throw-away CA. Started per test, stopped on drop.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Command;

pub const API_TOKEN: &str = "sim-token-1234";

pub struct MailStandIn {
    dir: tempfile::TempDir,
    pub api_url: String,
    pub api_port: u16,
    /// The same API over HTTPS, with the stand-in's leaf (localhost, 127.0.0.1 and the
    /// unresolvable mail.standin.example).
    pub api_https_port: u16,
    /// `https://localhost:<api_https_port>/api/v1`.
    pub api_https_url: String,
    /// STARTTLS submission port.
    pub smtp_port: u16,
    /// Implicit-TLS submission port (SMTPS; not 465, so its mode cannot be guessed from it).
    pub smtps_port: u16,
    pub ca_pem: Vec<u8>,
}

fn script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("scripts/mail-standin.sh")
}

impl MailStandIn {
    /// Where the console reaches `username`'s account on this stand-in.
    pub fn target(&self, username: &str) -> smtp_vault::core::mail::MailTarget {
        smtp_vault::core::mail::MailTarget {
            username: username.to_owned(),
            smtp_host: "localhost".into(),
            smtp_port: self.smtp_port,
            smtp_tls: smtp_vault::model::SmtpTls::Starttls,
            api_url: self.api_url.clone(),
            api_token: secrecy::SecretString::from(API_TOKEN.to_owned()),
            tls_name: None,
            api_address: None,
        }
    }

    pub fn start() -> Self {
        Self::launch(false)
    }

    /// As the benchmark runs it (`MAILU_REALISTIC=1`): Mailu's hashing cost and Dovecot's 2 s
    /// failure delay.
    pub fn start_realistic() -> Self {
        Self::launch(true)
    }

    fn launch(realistic: bool) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut command = Command::new(script());
        command.arg("start").arg(dir.path());
        if realistic {
            command.env("MAILU_REALISTIC", "1");
        } else {
            command.env_remove("MAILU_REALISTIC");
        }
        let out = command
            .env("MAILU_SIM", super::standin_bin("mailu-sim"))
            .env("MAILU_TOKEN", API_TOKEN)
            .output()
            .expect("mail stand-in: run scripts/ensure-tools.sh test (dovecot, openssl)");
        assert!(out.status.success(), "mail stand-in: {}", String::from_utf8_lossy(&out.stderr));
        let env: HashMap<String, String> = std::fs::read_to_string(dir.path().join("standin.env"))
            .unwrap()
            .lines()
            .filter_map(|l| l.split_once('=').map(|(k, v)| (k.to_owned(), v.to_owned())))
            .collect();
        let ca_pem = std::fs::read(&env["CA_FILE"]).unwrap();
        MailStandIn {
            api_url: env["API_URL"].clone(),
            api_port: env["API_PORT"].parse().unwrap(),
            api_https_port: env["API_HTTPS_PORT"].parse().unwrap(),
            api_https_url: env["API_HTTPS_URL"].clone(),
            smtp_port: env["SMTP_PORT"].parse().unwrap(),
            smtps_port: env["SMTPS_PORT"].parse().unwrap(),
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

    /// Switches the simulated deployment: `api` false is Mailu with `API=false`; `flavor` is
    /// `2024.06` or `2.0`.
    pub async fn config(&self, api: bool, flavor: &str) {
        let url = format!("http://127.0.0.1:{}/_sim/config", self.api_port);
        let body = serde_json::json!({"api": api, "flavor": flavor});
        let answer = reqwest::Client::new().post(url).json(&body).send().await.unwrap();
        assert!(answer.status().is_success());
    }

    /// What a Mailu restart does to its in-memory limiter: forgets every count and exemption.
    pub async fn restart_limiter(&self) {
        let url = format!("http://127.0.0.1:{}/_sim/config", self.api_port);
        let answer = reqwest::Client::new().post(url).json(&serde_json::json!({"restart": true})).send().await.unwrap();
        assert!(answer.status().is_success());
    }

    /// What the simulator counts (`GET /_sim/stats`): users, password_sets, realistic,
    /// slow_hashes, fault.
    pub async fn stats(&self) -> serde_json::Value {
        let url = format!("http://127.0.0.1:{}/_sim/stats", self.api_port);
        reqwest::get(url).await.unwrap().json().await.unwrap()
    }

    /// A file of the instance's directory (`dovecot.conf`, `passdb.lua`, …).
    pub fn file(&self, name: &str) -> String {
        std::fs::read_to_string(self.dir.path().join(name)).unwrap()
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("dovecot.log")).unwrap_or_default()
    }
}

impl Drop for MailStandIn {
    fn drop(&mut self) {
        let _ = Command::new(script()).arg("stop").arg(self.dir.path()).status();
    }
}
