//! The mail adapter against the real stand-in: Mailu API calls and their error mapping, and
//! SMTP AUTH over STARTTLS through Dovecot with a Lua passdb asking the simulator.
#![cfg(feature = "ssr")]
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::mail::{API_TOKEN, MailStandIn};
use secrecy::SecretString;
use smtp_vault::core::mail::{LoginCheck, MailError, MailServer, MailTarget, Mailu};
use std::time::Duration;

fn target(stand_in: &MailStandIn, user: &str, token: &str) -> MailTarget {
    MailTarget {
        username: user.to_owned(),
        smtp_host: "localhost".into(),
        smtp_port: stand_in.smtp_port,
        api_url: stand_in.api_url.clone(),
        api_token: SecretString::from(token.to_owned()),
        tls_name: None,
    }
}

fn pw(s: &str) -> SecretString {
    SecretString::from(s.to_owned())
}

#[tokio::test]
async fn mailu_api_and_smtp_login_work_against_the_stand_in() {
    let stand_in = MailStandIn::start();
    let mailu = Mailu::new(Duration::from_secs(5), Some(stand_in.ca_pem.clone()), common::lab_policy()).unwrap();
    let admin = target(&stand_in, "admin@acme.example", API_TOKEN);

    assert!(!mailu.user_exists(&admin).await.unwrap());
    mailu.create_user(&admin, &pw("First-Pass-1")).await.unwrap();
    assert!(mailu.user_exists(&admin).await.unwrap());
    assert_eq!(mailu.check_login(&admin, &pw("First-Pass-1")).await, LoginCheck::Accepted, "{}", stand_in.log());
    assert_eq!(mailu.check_login(&admin, &pw("wrong")).await, LoginCheck::Rejected);

    mailu.set_password(&admin, &pw("Second-Pass-2")).await.unwrap();
    assert_eq!(mailu.check_login(&admin, &pw("Second-Pass-2")).await, LoginCheck::Accepted);
    assert_eq!(mailu.check_login(&admin, &pw("First-Pass-1")).await, LoginCheck::Rejected);

    // Error mapping.
    assert_eq!(
        mailu.set_password(&target(&stand_in, "admin@acme.example", "wrong-token"), &pw("x")).await,
        Err(MailError::Forbidden)
    );
    assert!(matches!(
        mailu.set_password(&target(&stand_in, "ghost@acme.example", API_TOKEN), &pw("x")).await,
        Err(MailError::NotFound)
    ));
    assert!(matches!(mailu.create_user(&admin, &pw("x")).await, Err(MailError::Conflict)));
    stand_in.fault("429", 1).await;
    assert_eq!(mailu.set_password(&admin, &pw("x")).await, Err(MailError::RateLimited));
    stand_in.fault("500", 1).await;
    assert_eq!(mailu.set_password(&admin, &pw("x")).await, Err(MailError::Server(500)));
    stand_in.fault("down", 1).await;
    assert_eq!(mailu.set_password(&admin, &pw("x")).await, Err(MailError::Server(502)));
    // None of the failed calls changed the password.
    assert_eq!(mailu.check_login(&admin, &pw("Second-Pass-2")).await, LoginCheck::Accepted);
    // An unreachable server is "unknown", never "rejected".
    let closed = MailTarget { smtp_port: 1, ..target(&stand_in, "admin@acme.example", API_TOKEN) };
    assert!(matches!(mailu.check_login(&closed, &pw("Second-Pass-2")).await, LoginCheck::Unknown(_)));
}
