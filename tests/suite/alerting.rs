//! Alert delivery through the durable outbox to real sinks (an SMTP server and a Slack-webhook
//! stand-in): retries with backoff that survive a console restart and deliver exactly once, a
//! dead letter after the attempt limit that can be queued again, the test alert, and what the
//! Incidents page lists.

use crate::common;

use crate::common::alerts::{AlertSink, SECURITY, configure_ports, unused_port};
use crate::common::{ManualClock, TestEnv};
use smtp_vault::core::{Actor, ClientInfo, Core, Error, Needs};

async fn states(core: &Core, alert_id: &str) -> Vec<(String, String, i64)> {
    core.list_alerts(&Actor::operator(), 100)
        .await
        .unwrap()
        .into_iter()
        .find(|a| a.alert_id == alert_id)
        .unwrap()
        .deliveries
        .into_iter()
        .map(|d| (d.channel, d.state, d.attempts))
        .collect()
}

#[tokio::test]
async fn a_refusing_sink_gets_every_alert_exactly_once_even_across_a_restart() {
    let sink = AlertSink::start();
    let clock = ManualClock::new();
    let env = TestEnv::builder()
        .clock(clock.clone())
        .config(|c| {
            sink.configure(c);
            c.alert_retry_ms = 1000;
            c.alert_max_attempts = 8;
        })
        .start()
        .await;
    sink.refuse("slack", 3).await;
    sink.refuse("smtp", 1).await;
    let operator = Actor::operator();
    let first = env.core.send_test_alert(&operator, &ClientInfo::local()).await.unwrap();
    let second = env.core.send_test_alert(&operator, &ClientInfo::local()).await.unwrap();
    assert_eq!(first.deliveries.len(), 2);
    assert!(first.deliveries.iter().all(|d| d.state == "pending"));

    // Pass 1: Slack refuses both, SMTP refuses one and takes the other.
    let pass = env.core.deliver_due_alerts().await.unwrap();
    assert_eq!((pass.delivered, pass.retrying, pass.dead), (1, 3, 0));
    // Nothing is due before the backoff has passed.
    assert_eq!(env.core.deliver_due_alerts().await.unwrap().delivered, 0);
    clock.advance(chrono::Duration::seconds(2));
    // Pass 2: Slack refuses its third time; the email left over goes through.
    let pass = env.core.deliver_due_alerts().await.unwrap();
    assert_eq!((pass.delivered, pass.retrying), (2, 1));

    // A restart: a new console on the same database picks up where the old one stopped.
    let config = env.config.clone();
    let restarted = Core::connect(&config, Needs::ALL, Some(clock.clone())).await.unwrap();
    clock.advance(chrono::Duration::seconds(4));
    let pass = restarted.deliver_due_alerts().await.unwrap();
    assert_eq!((pass.delivered, pass.retrying), (1, 0));
    assert_eq!(restarted.deliver_due_alerts().await.unwrap(), Default::default(), "nothing left");

    let messages = sink.messages().await;
    assert_eq!(messages["refused"]["slack"], 3);
    assert_eq!(messages["refused"]["smtp"], 1);
    let about = |list: &serde_json::Value, id: &str| -> Vec<serde_json::Value> {
        list.as_array().unwrap().iter().filter(|m| m.to_string().contains(id)).cloned().collect()
    };
    for alert in [&first, &second] {
        assert_eq!(about(&messages["slack"], &alert.alert_id).len(), 1, "one Slack message per alert");
        let emails = about(&messages["emails"], &alert.alert_id);
        assert_eq!(emails.len(), 1, "one email per alert");
        assert!(emails[0]["to"].to_string().contains(SECURITY));
        assert_eq!(emails[0]["message_id"].as_str().unwrap(), format!("<{}.email@smtp-vault>", alert.alert_id));
    }
    let slack = &about(&messages["slack"], &first.alert_id)[0];
    assert!(slack["blocks"].as_array().unwrap().len() >= 3, "text and blocks");
    let first_states = states(&restarted, &first.alert_id).await;
    assert!(first_states.iter().all(|(_, state, _)| state == "delivered"), "{first_states:?}");
    let attempts: i64 = first_states.iter().chain(states(&restarted, &second.alert_id).await.iter()).map(|s| s.2).sum();
    assert_eq!(attempts, 5 + 3, "Slack: 3 refusals + 2 deliveries; email: 1 refusal + 2 deliveries");
    let (delivered,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM audit_events WHERE event_type = 'alert_delivered'")
        .fetch_one(env.core.db().pool())
        .await
        .unwrap();
    assert_eq!(delivered, 4, "each delivery audited once");
}

#[tokio::test]
async fn a_delivery_is_dead_lettered_after_the_limit_and_can_be_queued_again() {
    let sink = AlertSink::start();
    let clock = ManualClock::new();
    let env = TestEnv::builder()
        .clock(clock.clone())
        .config(|c| {
            sink.configure(c);
            c.slack_webhook_url = None;
            c.alert_retry_ms = 1000;
            c.alert_max_attempts = 3;
        })
        .start()
        .await;
    sink.refuse("smtp", 100).await;
    let alert = env.core.send_test_alert(&Actor::operator(), &ClientInfo::local()).await.unwrap();
    for _ in 0..3 {
        env.core.deliver_due_alerts().await.unwrap();
        clock.advance(chrono::Duration::hours(2));
    }
    assert_eq!(states(&env.core, &alert.alert_id).await, [("email".to_owned(), "dead".to_owned(), 3)]);
    let listed = env.core.list_alerts(&Actor::operator(), 10).await.unwrap();
    assert_eq!(listed[0].state, "dead");
    assert!(listed[0].deliveries[0].last_error.as_deref().unwrap().contains("451"));
    assert_eq!(env.core.deliver_due_alerts().await.unwrap(), Default::default(), "a dead letter is not retried");

    let reviewer = Actor::Admin {
        admin_id: "r".into(),
        email: "r@example.com".into(),
        role: smtp_vault::model::Role::SecurityReviewer,
    };
    assert!(matches!(
        env.core.retry_alert(&reviewer, &ClientInfo::local(), &alert.alert_id).await,
        Err(Error::Forbidden(_))
    ));
    assert!(matches!(
        env.core.retry_alert(&Actor::operator(), &ClientInfo::local(), "nope").await,
        Err(Error::NotFound(_))
    ));
    sink.refuse("smtp", 0).await;
    env.core.retry_alert(&Actor::operator(), &ClientInfo::local(), &alert.alert_id).await.unwrap();
    assert_eq!(env.core.deliver_due_alerts().await.unwrap().delivered, 1);
    assert_eq!(sink.emails_about(&alert.message).await.len(), 1);
    assert_eq!(states(&env.core, &alert.alert_id).await, [("email".to_owned(), "delivered".to_owned(), 1)]);
    let (dead_events,): (i64,) = sqlx::query_as(
        "SELECT COUNT(*) FROM audit_events WHERE event_type IN ('alert_delivery_failed', 'alert_retried')",
    )
    .fetch_one(env.core.db().pool())
    .await
    .unwrap();
    assert_eq!(dead_events, 2);
}

#[tokio::test]
async fn without_channels_a_test_alert_is_refused_and_alerts_say_no_recipient() {
    let env = TestEnv::start().await;
    let refused = env.core.send_test_alert(&Actor::operator(), &ClientInfo::local()).await;
    assert!(matches!(refused, Err(Error::InvalidInput(_))), "{refused:?}");
    let reviewer = Actor::Admin {
        admin_id: "r".into(),
        email: "r@example.com".into(),
        role: smtp_vault::model::Role::SecurityReviewer,
    };
    assert!(matches!(env.core.send_test_alert(&reviewer, &ClientInfo::local()).await, Err(Error::Forbidden(_))));
    assert!(matches!(env.core.list_alerts(&Actor::Anonymous, 10).await, Err(Error::Unauthenticated)));
}

#[tokio::test]
async fn an_alert_is_acknowledged_once_by_an_admin_and_stays_listed() {
    let sink = AlertSink::start();
    let env = TestEnv::builder().alerts(&sink).start().await;
    let alert = env.core.send_test_alert(&Actor::operator(), &ClientInfo::local()).await.unwrap();
    assert!(alert.acknowledged_by.is_none());
    let reviewer = Actor::Admin {
        admin_id: "r".into(),
        email: "r@example.com".into(),
        role: smtp_vault::model::Role::SecurityReviewer,
    };
    assert!(matches!(
        env.core.acknowledge_alert(&Actor::operator(), &ClientInfo::local(), &alert.alert_id).await,
        Err(Error::Forbidden(_))
    ));
    assert!(matches!(
        env.core.acknowledge_alert(&reviewer, &ClientInfo::local(), "nope").await,
        Err(Error::NotFound(_))
    ));
    env.core.acknowledge_alert(&reviewer, &ClientInfo::local(), &alert.alert_id).await.unwrap();
    let again = env.core.acknowledge_alert(&reviewer, &ClientInfo::local(), &alert.alert_id).await;
    assert!(matches!(again, Err(Error::InvalidInput(_))));
    let listed = env.core.list_alerts(&Actor::operator(), 10).await.unwrap();
    assert_eq!(listed.len(), 1, "still listed");
    assert_eq!(listed[0].acknowledged_by.as_deref(), Some("r (r@example.com)"));
    assert!(listed[0].acknowledged_at.is_some());
    let (events,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM audit_events WHERE event_type = 'alert_acknowledged'")
        .fetch_one(env.core.db().pool())
        .await
        .unwrap();
    assert_eq!(events, 1);
}

#[tokio::test]
async fn sinks_that_are_down_for_a_while_get_everything_later_exactly_once() {
    let (smtp_port, http_port) = (unused_port(), unused_port());
    let clock = ManualClock::new();
    let env = TestEnv::builder()
        .clock(clock.clone())
        .config(|c| {
            configure_ports(c, smtp_port, http_port);
            c.alert_retry_ms = 1000;
        })
        .start()
        .await;
    let operator = Actor::operator();
    let mut alerts = Vec::new();
    for _ in 0..3 {
        alerts.push(env.core.send_test_alert(&operator, &ClientInfo::local()).await.unwrap());
    }
    // Nobody listens: every attempt fails with a connection error and is kept for later.
    for _ in 0..3 {
        let pass = env.core.deliver_due_alerts().await.unwrap();
        assert_eq!((pass.delivered, pass.retrying, pass.dead), (0, 6, 0));
        clock.advance(chrono::Duration::minutes(10));
    }
    let listed = env.core.list_alerts(&operator, 10).await.unwrap();
    assert!(listed.iter().all(|a| a.state == "pending" && a.deliveries.iter().all(|d| d.last_error.is_some())));
    assert!(
        listed.iter().flat_map(|a| &a.deliveries).all(|d| !d.last_error.as_deref().unwrap().contains("/slack")),
        "the webhook URL is never in an error"
    );

    // The sinks come up on those ports: one pass delivers everything, once.
    let sink = AlertSink::start_on(smtp_port, http_port);
    let pass = env.core.deliver_due_alerts().await.unwrap();
    assert_eq!((pass.delivered, pass.retrying), (6, 0));
    assert_eq!(env.core.deliver_due_alerts().await.unwrap(), Default::default());
    let messages = sink.messages().await;
    assert_eq!(messages["emails"].as_array().unwrap().len(), 3);
    assert_eq!(messages["slack"].as_array().unwrap().len(), 3);
    for alert in &alerts {
        assert_eq!(
            messages["slack"].as_array().unwrap().iter().filter(|m| m.to_string().contains(&alert.alert_id)).count(),
            1
        );
    }
}

#[tokio::test]
async fn a_rotation_notice_reaches_the_tenants_contact_and_no_one_else() {
    let sink = AlertSink::start();
    let clock = ManualClock::new();
    let env = TestEnv::builder().clock(clock.clone()).alerts(&sink).start().await;
    let operator = Actor::operator();
    for tenant in ["acme", "globex"] {
        let request =
            smtp_vault::model::StoreCredentialRequest::from_json(common::credential_body("Notice-Pass", "tok"))
                .unwrap();
        let id = smtp_vault::model::TenantId::parse(tenant).unwrap();
        env.core.store_credential(&operator, &ClientInfo::local(), &id, request).await.unwrap();
    }
    let settings = smtp_vault::model::TenantSettingsInput {
        rotation_period_days: 90,
        contact_email: Some("ops@acme.example".into()),
        mailu_api_url: "https://mail.acme.example/api/v1".into(),
        mailu_api_token: None,
        rotate_after_reveal: false,
        reveal_approval: None,
        password_policy: None,
        reveal_notice: None,
    };
    let acme = smtp_vault::model::TenantId::parse("acme").unwrap();
    env.core.update_tenant_settings(&operator, &ClientInfo::local(), &acme, settings).await.unwrap();
    // 85 days on: both are due within 7 days; only acme has a contact.
    clock.advance(chrono::Duration::days(85));
    let report = env.core.run_daily_cycle("test", 1).await.unwrap();
    assert_eq!(report.noticed.len(), 2);
    env.core.deliver_due_alerts().await.unwrap();
    let letters = sink.emails_about("will be rotated on").await;
    assert_eq!(letters.len(), 1);
    assert!(letters[0]["to"].to_string().contains("ops@acme.example"));
    assert!(letters[0]["data"].as_str().unwrap().contains("(acme)"));
    assert!(sink.slack_about("will be rotated").await.is_empty(), "notices are the tenant's, not the channel's");
    let listed = env.core.list_alerts(&operator, 20).await.unwrap();
    let globex =
        listed.iter().find(|a| a.kind == "rotation_notice" && a.tenant_id.as_deref() == Some("globex")).unwrap();
    assert_eq!(globex.state, "no_recipient", "visible as undeliverable, not silently dropped");
}
