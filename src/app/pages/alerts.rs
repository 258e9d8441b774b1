//! Alerts: what the console raised (suspicious activity, failed jobs, Vault trouble,
//! incidents), each with its delivery per channel and its acknowledgment, and the table of
//! every alert kind with the thresholds in effect. Any admin acknowledges; platform admins
//! send a test alert and retry dead letters. The server decides.

use crate::app::server_fns::{acknowledge_alert, alert_rules, list_alerts, retry_alert, send_test_alert};
use crate::app::session::{may, use_me};
use crate::app::when;
use crate::model::{AlertView, Permission};
use chrono::{DateTime, Utc};
use leptos::prelude::*;
use leptos::task::spawn_local;

fn date(t: Option<DateTime<Utc>>) -> String {
    t.map_or_else(|| "—".to_owned(), |t| format!("{} UTC", when::seconds(t)))
}

/// `/alerts`.
#[component]
pub fn AlertsPage() -> impl IntoView {
    let me = use_me();
    let refresh = RwSignal::new(0u32);
    view! {
        <h1>"Alerts"</h1>
        <p class="purpose">"What the console noticed, who was told, and who has looked."</p>
        <Transition fallback=|| view! { <p>"Loading…"</p> }>
            {move || match me.get() {
                None => None,
                Some(Ok(None)) | Some(Err(_)) => Some(view! { <super::credentials::SignInPrompt /> }.into_any()),
                Some(Ok(Some(_))) => Some(view! {
                    <AlertList refresh />
                    <RuleTable />
                }.into_any()),
            }}
        </Transition>
    }
}

/// Every alert kind with its condition and thresholds.
#[component]
fn RuleTable() -> impl IntoView {
    let rules = Resource::new(|| (), |()| alert_rules());
    view! {
        <section class="card" aria-labelledby="rules-title">
            <h2 id="rules-title">"Rules"</h2>
            <p class="purpose">"Thresholds are set with the SMTP_VAULT_RULE_* settings; docs/monitoring.md says what to do for each."</p>
            <Transition fallback=|| view! { <p>"Loading…"</p> }>
                {move || rules.get().map(|answer| match answer {
                    Err(e) => view! { <p class="error">{e.message}</p> }.into_any(),
                    Ok(list) => view! {
                        <table class="table" data-testid="alert-rules">
                            <thead><tr><th>"Kind"</th><th>"Severity"</th><th>"Fires when"</th><th>"To"</th><th>"On"</th></tr></thead>
                            <tbody>
                                {list.into_iter().map(|r| view! {
                                    <tr data-kind=r.kind.clone() class=format!("severity-{}", r.severity)>
                                        <td><code>{r.kind.clone()}</code></td>
                                        <td>{r.severity.clone()}</td>
                                        <td>{r.condition.clone()}</td>
                                        <td>{r.audience.clone()}</td>
                                        <td>{if r.enabled { "yes" } else { "off" }}</td>
                                    </tr>
                                }).collect_view()}
                            </tbody>
                        </table>
                    }.into_any(),
                })}
            </Transition>
        </section>
    }
}

/// Alerts with their delivery per channel; test and retry for platform admins.
#[component]
fn AlertList(refresh: RwSignal<u32>) -> impl IntoView {
    let me = use_me();
    let alerts = Resource::new(move || refresh.get(), |_| list_alerts());
    let error = RwSignal::new(None::<String>);
    let notice = RwSignal::new(None::<String>);
    let test = move |_| {
        error.set(None);
        spawn_local(async move {
            match send_test_alert().await {
                Ok(_) => notice.set(Some("Test alert queued.".into())),
                Err(e) => error.set(Some(e.message)),
            }
            refresh.update(|n| *n += 1);
        });
    };
    let retry = move |alert_id: String| {
        spawn_local(async move {
            match retry_alert(alert_id).await {
                Ok(()) => notice.set(Some("Queued again.".into())),
                Err(e) => error.set(Some(e.message)),
            }
            refresh.update(|n| *n += 1);
        });
    };
    let acknowledge = move |alert_id: String| {
        spawn_local(async move {
            if let Err(e) = acknowledge_alert(alert_id).await {
                error.set(Some(e.message));
            }
            refresh.update(|n| *n += 1);
        });
    };
    let admin = move || may(me, Permission::ManageAlerts);
    view! {
        <section class="card" aria-labelledby="alerts-title">
            <h2 id="alerts-title">"Alerts"</h2>
            <p class="inline-form">
                <button type="button" class="secondary" on:click=move |_| refresh.update(|n| *n += 1)>"Refresh"</button>
                {move || admin().then(|| view! {
                    <button type="button" class="secondary" data-testid="test-alert" on:click=test>"Send test alert"</button>
                })}
            </p>
            {move || error.get().map(|m| view! { <p class="error" role="alert">{m}</p> })}
            {move || notice.get().map(|m| view! { <p class="notice" role="status">{m}</p> })}
            <Transition fallback=|| view! { <p>"Loading…"</p> }>
                {move || alerts.get().map(|answer| match answer {
                    Err(e) => view! { <p class="error">{e.message}</p> }.into_any(),
                    Ok(list) if list.is_empty() => view! { <p>"No alerts."</p> }.into_any(),
                    Ok(list) => view! {
                        <table class="table" data-testid="alerts">
                            <thead><tr><th>"When"</th><th>"Severity"</th><th>"Kind"</th><th>"Tenant"</th><th>"Message"</th><th>"Delivery"</th><th>"Seen"</th></tr></thead>
                            <tbody>
                                {list.into_iter().map(|a| view! { <AlertRow alert=a admin=admin() retry acknowledge /> }).collect_view()}
                            </tbody>
                        </table>
                    }.into_any(),
                })}
            </Transition>
        </section>
    }
}

#[component]
fn AlertRow(
    alert: AlertView,
    admin: bool,
    retry: impl Fn(String) + Copy + Send + Sync + 'static,
    acknowledge: impl Fn(String) + Copy + Send + Sync + 'static,
) -> impl IntoView {
    let id = alert.alert_id.clone();
    let ack_id = alert.alert_id.clone();
    let dead = alert.state == "dead";
    view! {
        <tr data-kind=alert.kind.clone() data-state=alert.state.clone()>
            <td>{date(Some(alert.created_at))}</td>
            <td>{alert.severity.clone()}</td>
            <td>{alert.kind.replace('_', " ")}</td>
            <td>{alert.tenant_id.clone().unwrap_or_default()}</td>
            <td>{alert.message.clone()}</td>
            <td>
                {if alert.deliveries.is_empty() {
                    view! { <span>{alert.state.replace('_', " ")}</span> }.into_any()
                } else {
                    view! {
                        <ul class="deliveries">
                            {alert.deliveries.iter().map(|d| {
                                let tip = d.last_error.clone().unwrap_or_default();
                                view! {
                                    <li title=tip>{format!("{} ({}): {}, {} attempt(s)", d.channel, d.recipient, d.state, d.attempts)}</li>
                                }
                            }).collect_view()}
                        </ul>
                    }.into_any()
                }}
                {(admin && dead).then(|| view! {
                    <button type="button" class="secondary" on:click=move |_| retry(id.clone())>"Retry"</button>
                })}
            </td>
            <td>
                {match (alert.acknowledged_by.clone(), alert.acknowledged_at) {
                    (Some(by), at) => view! {
                        <span data-testid="alert-acknowledged">{format!("by {by} {}", date(at))}</span>
                    }.into_any(),
                    _ => view! {
                        <button type="button" class="secondary" data-testid="acknowledge-alert" on:click=move |_| acknowledge(ack_id.clone())>"Acknowledge"</button>
                    }.into_any(),
                }}
            </td>
        </tr>
    }
}
