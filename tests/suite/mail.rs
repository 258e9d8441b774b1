//! The mail adapter against the real stand-in: Mailu API calls and their error mapping, and
//! SMTP AUTH over STARTTLS through Dovecot with a Lua passdb asking the simulator.

use crate::common;

use crate::common::mail::{API_TOKEN, MailStandIn};
use secrecy::SecretString;
use smtp_vault::core::mail::{LoginCheck, MailError, MailServer, MailTarget, Mailu};
use std::time::Duration;

fn target(stand_in: &MailStandIn, user: &str, token: &str) -> MailTarget {
    MailTarget {
        username: user.to_owned(),
        smtp_host: "localhost".into(),
        smtp_port: stand_in.smtp_port,
        smtp_tls: smtp_vault::model::SmtpTls::Starttls,
        api_url: stand_in.api_url.clone(),
        api_token: SecretString::from(token.to_owned()),
        tls_name: None,
        api_address: None,
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

/// Mailu's answers that are not a password problem: the API switched off (Mailu's default) or a
/// URL that is not its base, a 400, and a duplicate user on 2024.06 (409) and 2.0 (a 500).
#[tokio::test]
async fn api_off_invalid_input_and_duplicate_users_get_clear_answers_on_both_mailu_flavors() {
    let stand_in = MailStandIn::start();
    let mailu = Mailu::new(Duration::from_secs(5), Some(stand_in.ca_pem.clone()), common::lab_policy()).unwrap();
    let admin = target(&stand_in, "admin@acme.example", API_TOKEN);
    mailu.create_user(&admin, &pw("First-Pass-1")).await.unwrap();
    // A user that exists already: created again means its password is set (a retried
    // provisioning whose first answer was lost), on 2024.06 (409) and on 2.0 (500).
    for (flavor, password) in [("2024.06", "Again-Pass-2"), ("2.0", "Again-Pass-3")] {
        stand_in.config(true, flavor).await;
        mailu.create_user(&admin, &pw(password)).await.unwrap_or_else(|e| panic!("{flavor}: {e}"));
        assert_eq!(mailu.check_login(&admin, &pw(password)).await, LoginCheck::Accepted, "{flavor}");
    }
    // API=false: a 302 to the web UI, told as such and not retried as if Mailu were down.
    stand_in.config(false, "2024.06").await;
    let off = mailu.set_password(&admin, &pw("Never-Set-4")).await;
    assert_eq!(off, Err(MailError::Malformed));
    let message = off.unwrap_err();
    assert!(!message.is_transient() && message.to_string().contains("API=true"), "{message}");
    // A URL that is not the API's base: the same answer, from the same cause.
    stand_in.config(true, "2024.06").await;
    let wrong_base = MailTarget {
        api_url: format!("{}/nested", stand_in.api_url),
        ..target(&stand_in, "admin@acme.example", API_TOKEN)
    };
    assert_eq!(mailu.set_password(&wrong_base, &pw("Never-Set-5")).await, Err(MailError::Malformed));
    // A 400 (an invalid email) is invalid input, not a password to change.
    let invalid = target(&stand_in, "not-an-email", API_TOKEN);
    let refused = mailu.create_user(&invalid, &pw("Never-Set-6")).await;
    assert_eq!(refused, Err(MailError::Rejected));
    assert!(!MailError::Rejected.is_transient());
    assert_eq!(mailu.check_login(&admin, &pw("Again-Pass-3")).await, LoginCheck::Accepted, "nothing else changed");
}
