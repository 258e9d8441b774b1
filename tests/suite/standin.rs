//! The mail stand-in itself (mailu-sim + Dovecot) reproduces what the console meets on a real
//! Mailu (../shared/reference/mail-standin.md): the API over HTTPS with a certificate naming
//! hosts, Mailu 2.0's temporary failure for a rate-limited login where 2024.06 says 535, and
//! the benchmark's realistic mode. Each with the console's reaction where it has one.

use crate::common;

use crate::common::mail::{API_TOKEN, MailStandIn};
use lettre::transport::smtp::authentication::{Credentials, Mechanism};
use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, Tokio1Executor};
use secrecy::SecretString;
use smtp_vault::core::mail::{LoginCheck, MailServer, MailTarget, Mailu, RATE_LIMITED};
use smtp_vault::core::outbound::OutboundPolicy;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

const HOST: &str = "mail.standin.example";
const LOOPBACK: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

fn mailu(mail: &MailStandIn, policy: OutboundPolicy) -> Mailu {
    Mailu::new(Duration::from_secs(10), Some(mail.ca_pem.clone()), policy).unwrap()
}

/// A client that reaches `name` at the stand-in's HTTPS port, trusting `ca` if given.
fn pinned_client(mail: &MailStandIn, name: &str, ca: Option<&[u8]>) -> reqwest::Client {
    let mut builder = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .resolve(name, SocketAddr::new(LOOPBACK, mail.api_https_port));
    if let Some(ca) = ca {
        builder = builder.add_root_certificate(reqwest::Certificate::from_pem(ca).unwrap());
    }
    builder.build().unwrap()
}

/// The SMTP reply itself, below the console's interpretation: one STARTTLS login.
async fn smtp_login(mail: &MailStandIn, user: &str, password: &str) -> Result<bool, lettre::transport::smtp::Error> {
    let tls = TlsParameters::builder("localhost".into())
        .add_root_certificate(Certificate::from_pem(&mail.ca_pem).unwrap())
        .build_rustls()
        .unwrap();
    let transport: AsyncSmtpTransport<Tokio1Executor> =
        AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous("127.0.0.1")
            .port(mail.smtp_port)
            .tls(Tls::Required(tls))
            .credentials(Credentials::new(user.into(), password.into()))
            .authentication(vec![Mechanism::Plain])
            .build();
    // lettre's own timeout does not bound reads (mail-standin.md).
    tokio::time::timeout(Duration::from_secs(20), transport.test_connection()).await.expect("SMTP login timed out")
}

/// What the issue measured on a real Mailu: it restarts (forgetting the console's exemption),
/// then six calls with a bad API token come from the console's address.
async fn limit_the_console(mail: &MailStandIn, mailu: &Mailu, user: &str) {
    mail.restart_limiter().await;
    let bad_token = MailTarget { api_token: SecretString::from("not-the-token".to_owned()), ..mail.target(user) };
    for _ in 0..6 {
        let _ = mailu.user_exists(&bad_token).await;
    }
}

#[tokio::test]
async fn the_api_over_https_verifies_against_a_pinned_host_name_and_shares_the_state() {
    let mail = MailStandIn::start();
    assert_eq!(mail.api_https_url, format!("https://localhost:{}/api/v1", mail.api_https_port));
    let base = format!("https://{HOST}:{}/api/v1", mail.api_https_port);

    // With the stand-in's CA, the name the leaf carries, reached at an address DNS never gives.
    let trusted = pinned_client(&mail, HOST, Some(&mail.ca_pem));
    let created = trusted
        .post(format!("{base}/domain"))
        .bearer_auth(API_TOKEN)
        .json(&serde_json::json!({"name": "acme.example"}))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 200);
    // The http port is the same Mailu: the domain is there.
    let again = reqwest::Client::new()
        .post(format!("{}/domain", mail.api_url))
        .bearer_auth(API_TOKEN)
        .json(&serde_json::json!({"name": "acme.example"}))
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 409);
    let over_localhost = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&mail.ca_pem).unwrap())
        .build()
        .unwrap()
        .get(format!("{}/user/nobody@acme.example", mail.api_https_url))
        .bearer_auth(API_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(over_localhost.status(), 404);

    // Without the CA the certificate is refused; with it, a name the leaf lacks is refused.
    let untrusted = pinned_client(&mail, HOST, None).get(format!("{base}/user/nobody@acme.example")).send().await;
    assert!(untrusted.is_err_and(|e| e.is_connect()));
    let other = "other.standin.example";
    let wrong_name = pinned_client(&mail, other, Some(&mail.ca_pem))
        .get(format!("https://{other}:{}/api/v1/user/nobody@acme.example", mail.api_https_port))
        .send()
        .await;
    assert!(wrong_name.is_err_and(|e| e.is_connect()));

    // The console, refusing plaintext as in production, reaches it only pinned to the address.
    let console = mailu(&mail, OutboundPolicy::new(false, vec!["127.0.0.0/8".parse().unwrap()]));
    let target = MailTarget { api_url: base.clone(), ..mail.target("admin@acme.example") };
    assert!(console.user_exists(&target).await.is_err(), "{HOST} resolves nowhere");
    let pinned = MailTarget { api_address: Some(LOOPBACK), ..target };
    console.create_user(&pinned, &SecretString::from("Acme-Admin-Pass".to_owned())).await.unwrap();
    assert_eq!(console.user_exists(&pinned).await, Ok(true));

    // Tests run the fast stand-in: no hashing cost, no failure delay.
    let stats = mail.stats().await;
    assert_eq!((stats["realistic"].as_bool(), stats["slow_hashes"].as_u64()), (Some(false), Some(0)));
    assert!(mail.file("dovecot.conf").contains("auth_failure_delay = 0\n"));
}

/// A stand-in of `flavor` with the console's address rate-limited, and its admin user.
async fn limited_stand_in(flavor: &str) -> (MailStandIn, Mailu, &'static str, SecretString) {
    let mail = MailStandIn::start();
    mail.config(true, flavor).await;
    let console = mailu(&mail, common::lab_policy());
    let user = "admin@acme.example";
    let right = SecretString::from("Acme-Admin-Pass".to_owned());
    console.create_user(&mail.target(user), &right).await.unwrap();
    limit_the_console(&mail, &console, user).await;
    (mail, console, user, right)
}

#[tokio::test]
async fn a_rate_limited_login_on_mailu_2_0_is_a_temporary_failure() {
    let (mail, console, user, right) = limited_stand_in("2.0").await;

    // 2.0's nginx front hands the client the admin's 451; Dovecot's nearest is 454. Either way
    // a 4xx: a temporary failure, not a refusal of the password.
    let reply = smtp_login(&mail, user, "Acme-Admin-Pass").await.unwrap_err();
    assert!(reply.is_transient(), "{reply}; {}", mail.log());
    assert_eq!(reply.status().map(u16::from), Some(454));
    let check = console.check_login(&mail.target(user), &right).await;
    assert!(matches!(check, LoginCheck::Unknown(_)), "{check:?}");

    // The password was right all along.
    mail.restart_limiter().await;
    assert_eq!(console.check_login(&mail.target(user), &right).await, LoginCheck::Accepted);
}

#[tokio::test]
async fn a_rate_limited_login_on_mailu_2024_06_is_535_and_the_console_asks_the_api() {
    let (mail, console, user, right) = limited_stand_in("2024.06").await;

    // 2024.06's Dovecot front turns every status but OK into a mismatch: 535 for the right
    // password.
    let reply = smtp_login(&mail, user, "Acme-Admin-Pass").await.unwrap_err();
    assert!(reply.is_permanent(), "{reply}");
    assert_eq!(reply.status().map(u16::from), Some(535));
    // The console does not take that 535 for a wrong password: the API's 429 says why.
    let check = console.check_login(&mail.target(user), &right).await;
    assert_eq!(check, LoginCheck::Unknown(RATE_LIMITED.into()));

    mail.restart_limiter().await;
    assert_eq!(console.check_login(&mail.target(user), &right).await, LoginCheck::Accepted);
}

/// Realistic mode cannot be told by timing in a test; what it does can: passwords are hashed
/// the slow way when set and when a login finds nothing current in Mailu's credential cache,
/// and logins still come out right.
#[tokio::test]
async fn realistic_mode_hashes_as_mailu_does_and_still_logs_in() {
    let mail = MailStandIn::start_realistic();
    assert!(mail.file("dovecot.conf").contains("auth_failure_delay = 2 s\n"), "Dovecot's default");
    let slow_hashes = || async { mail.stats().await["slow_hashes"].as_u64().unwrap() };
    assert_eq!(mail.stats().await["realistic"], true);
    let console = mailu(&mail, common::lab_policy());
    let user = "admin@acme.example";
    let right = SecretString::from("Acme-Admin-Pass".to_owned());
    console.create_user(&mail.target(user), &right).await.unwrap();
    assert_eq!(slow_hashes().await, 1, "setting a password hashes it");

    assert_eq!(console.check_login(&mail.target(user), &right).await, LoginCheck::Accepted);
    assert_eq!(slow_hashes().await, 2, "a first login verifies the slow way");
    assert_eq!(console.check_login(&mail.target(user), &right).await, LoginCheck::Accepted);
    assert_eq!(slow_hashes().await, 2, "then the credential cache answers");
    let wrong = SecretString::from("Not-The-Pass".to_owned());
    assert_eq!(console.check_login(&mail.target(user), &wrong).await, LoginCheck::Rejected);
    assert_eq!(slow_hashes().await, 2, "a wrong password too, while the cache is current");
}
