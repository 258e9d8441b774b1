//! Incidents: the emergency-reset form (tenant, incident id, reason, passkey step-up; platform
//! admins and incident responders) with its receipt, the exposure sweep (list first, then
//! sweep with a passkey; its progress shows on its incident), and the incidents with their
//! second-person review and history. Controls are shown by role; the server decides.

use crate::app::confirm::with_ceremony;
use crate::app::server_fns::{
    acknowledge_incident, begin_emergency_reset, begin_sweep, finish_emergency_reset, finish_sweep, list_incidents,
    plan_sweep,
};
use crate::app::session::{may, use_me};
use crate::app::when;
use crate::model::{EmergencyResetReceipt, IncidentView, Permission, SweepView};
use chrono::{DateTime, Utc};
use leptos::prelude::*;
use leptos::task::spawn_local;

fn date(t: Option<DateTime<Utc>>) -> String {
    t.map_or_else(|| "—".to_owned(), |t| format!("{} UTC", when::seconds(t)))
}

/// `/incidents`.
#[component]
pub fn IncidentsPage() -> impl IntoView {
    let me = use_me();
    let refresh = RwSignal::new(0u32);
    view! {
        <h1>"Incidents"</h1>
        <p class="purpose">"Emergency resets, exposure sweeps and their second-person review."</p>
        <Transition fallback=|| view! { <p>"Loading…"</p> }>
            {move || match me.get() {
                None => None,
                Some(Ok(None)) | Some(Err(_)) => Some(view! { <super::credentials::SignInPrompt /> }.into_any()),
                Some(Ok(Some(_))) => Some(view! {
                    {move || may(me, Permission::EmergencyReset)
                        .then(|| view! { <ResetForm refresh /> <SweepForm refresh /> })}
                    <IncidentList refresh />
                    <p><a href="/alerts">"Alerts and their delivery →"</a></p>
                }.into_any()),
            }}
        </Transition>
    }
}

/// The emergency reset: one form, one passkey touch.
#[component]
fn ResetForm(refresh: RwSignal<u32>) -> impl IntoView {
    let (tenant, incident, reason) =
        (RwSignal::new(String::new()), RwSignal::new(String::new()), RwSignal::new(String::new()));
    let busy = RwSignal::new(false);
    let error = RwSignal::new(None::<String>);
    let receipt = RwSignal::new(None::<EmergencyResetReceipt>);
    let submit = move |ev: leptos::ev::SubmitEvent| {
        ev.prevent_default();
        busy.set(true);
        error.set(None);
        receipt.set(None);
        let (t, i, r) = (tenant.get_untracked().trim().to_owned(), incident.get_untracked(), reason.get_untracked());
        spawn_local(async move {
            let outcome = with_ceremony(begin_emergency_reset(t.clone(), i, r), |a| finish_emergency_reset(t, a)).await;
            busy.set(false);
            match outcome {
                Ok(done) => {
                    reason.set(String::new());
                    receipt.set(Some(done));
                }
                Err(message) => error.set(Some(message)),
            }
            refresh.update(|n| *n += 1);
        });
    };
    view! {
        <section class="card danger-zone" aria-labelledby="reset-title">
            <h2 id="reset-title">"Emergency reset"</h2>
            <p>"For a suspected compromise: rotates the tenant's admin password now, closes every reveal window for it, alerts security by email and Slack, notifies the tenant and opens an incident for a second admin to review."</p>
            <form class="stack" on:submit=submit data-testid="reset-form">
                <label>"Tenant" <input name="tenant" required pattern="[a-z0-9]([a-z0-9\\-]{0,61}[a-z0-9])?" bind:value=tenant /></label>
                <label>"Incident id" <input name="incident" required maxlength="64" placeholder="INC-2041" bind:value=incident /></label>
                <label>"Reason (sent to security, never to the tenant)"
                    <textarea name="reason" required minlength="3" maxlength="1000" bind:value=reason></textarea>
                </label>
                <button type="submit" class="danger" data-testid="reset" disabled=move || busy.get()>
                    {move || if busy.get() { "Confirm with your passkey…" } else { "Reset now with passkey" }}
                </button>
            </form>
            {move || error.get().map(|m| view! { <p class="error" role="alert">{m}</p> })}
            {move || receipt.get().map(|r| view! {
                <div class="receipt" data-testid="reset-receipt" role="status">
                    <h3>"Reset done"</h3>
                    <dl class="facts">
                        <dt>"Tenant"</dt><dd>{r.tenant_id.to_string()}</dd>
                        <dt>"Incident"</dt><dd>{format!("{} (record {})", r.incident_id, r.incident)}</dd>
                        <dt>"New version"</dt><dd data-testid="receipt-version">{r.new_version}</dd>
                        <dt>"Reveal windows closed"</dt><dd>{r.grants_revoked}</dd>
                        <dt>"Took"</dt><dd>{format!("{} ms (contain {} ms, rotate {} ms)", r.timings.total_ms, r.timings.contain_ms, r.timings.rotation_ms)}</dd>
                    </dl>
                    <ul>
                        {r.notified.into_iter().map(|d| view! {
                            <li>{format!("{} to {}: {}", d.channel, d.recipient, d.state)}</li>
                        }).collect_view()}
                    </ul>
                </div>
            })}
        </section>
    }
}

/// The exposure sweep: list what an admin or a revoked token saw, then rotate it all.
#[component]
fn SweepForm(refresh: RwSignal<u32>) -> impl IntoView {
    let kind = RwSignal::new("admin".to_owned());
    let (subject, since) = (RwSignal::new(String::new()), RwSignal::new(String::new()));
    let (incident, reason) = (RwSignal::new(String::new()), RwSignal::new(String::new()));
    let busy = RwSignal::new(false);
    let error = RwSignal::new(None::<String>);
    let answer = RwSignal::new(None::<SweepView>);
    let list = move |_| {
        busy.set(true);
        error.set(None);
        let (k, who, from) = (kind.get_untracked(), subject.get_untracked(), since.get_untracked());
        spawn_local(async move {
            let outcome = plan_sweep(k, who, from).await;
            busy.set(false);
            match outcome {
                Ok(view) => answer.set(Some(view)),
                Err(e) => error.set(Some(e.message)),
            }
        });
    };
    let sweep = move |ev: leptos::ev::SubmitEvent| {
        ev.prevent_default();
        busy.set(true);
        error.set(None);
        let (k, who, from) = (kind.get_untracked(), subject.get_untracked(), since.get_untracked());
        let (i, r) = (incident.get_untracked(), reason.get_untracked());
        spawn_local(async move {
            let outcome = with_ceremony(begin_sweep(k, who, from, i, r), finish_sweep).await;
            busy.set(false);
            match outcome {
                Ok(view) => answer.set(Some(view)),
                Err(message) => error.set(Some(message)),
            }
            refresh.update(|n| *n += 1);
        });
    };
    view! {
        <section class="card danger-zone" aria-labelledby="sweep-title">
            <h2 id="sweep-title">"Exposure sweep"</h2>
            <p>"Rotate what they saw: every tenant whose current password this admin could reveal (or this revoked token read) is rotated under one incident, and security is alerted. Disabling or demoting an admin, or removing a passkey as lost, sweeps by itself."</p>
            <form class="stack" on:submit=sweep data-testid="sweep-form">
                <label>"Whose exposure"
                    <select name="subject_kind" bind:value=kind>
                        <option value="admin">"an admin (login email)"</option>
                        <option value="token">"a service token (id)"</option>
                    </select>
                </label>
                <label>"Admin email or token id" <input name="subject" required bind:value=subject /></label>
                <label>"Since (optional: 2026-12-01 or an RFC 3339 time)" <input name="since" bind:value=since /></label>
                <label>"Incident id (optional)" <input name="incident" maxlength="64" placeholder="INC-2041" bind:value=incident /></label>
                <label>"Reason (sent to security)" <textarea name="reason" maxlength="1000" bind:value=reason></textarea></label>
                <p class="inline-form">
                    <button type="button" class="secondary" data-testid="sweep-list" on:click=list disabled=move || busy.get()>"List exposed tenants"</button>
                    <button type="submit" class="danger" data-testid="sweep" disabled=move || busy.get()>
                        {move || if busy.get() { "Working…" } else { "Sweep with passkey" }}
                    </button>
                </p>
            </form>
            {move || error.get().map(|m| view! { <p class="error" role="alert">{m}</p> })}
            {move || answer.get().map(|v| view! {
                <div class="receipt" data-testid="sweep-answer" role="status">
                    <p>{match (&v.incident, v.dry_run) {
                        (_, true) => format!("{}: {} tenant(s) would be rotated. Nothing changed.", v.subject, v.tenants.len()),
                        (None, false) => format!("{}: nothing exposed since the last rotations; nothing to do.", v.subject),
                        (Some(record), false) => format!("{}: sweeping {} tenant(s) under incident record {record}; progress below.", v.subject, v.tenants.len()),
                    }}</p>
                    <ul>
                        {v.tenants.into_iter().map(|t| view! {
                            <li data-testid="sweep-tenant">{format!("{} — exposed {} — {}", t.tenant_id, date(Some(t.exposed_at)), t.outcome)}</li>
                        }).collect_view()}
                    </ul>
                </div>
            })}
        </section>
    }
}

/// Incidents, newest first, each with its acknowledgment form while open.
#[component]
fn IncidentList(refresh: RwSignal<u32>) -> impl IntoView {
    let incidents = Resource::new(move || refresh.get(), |_| list_incidents());
    // A sweep rotates in the background: look again every two seconds while one runs.
    Effect::new(move |_| {
        let running = incidents
            .get()
            .and_then(Result::ok)
            .is_some_and(|list| list.iter().any(|i| i.kind == "exposure_sweep" && i.outcome == "rotating"));
        if running {
            set_timeout(move || refresh.update(|n| *n += 1), std::time::Duration::from_secs(2));
        }
    });
    view! {
        <section class="card" aria-labelledby="incidents-title">
            <h2 id="incidents-title">"Incidents"</h2>
            <Transition fallback=|| view! { <p>"Loading…"</p> }>
                {move || incidents.get().map(|answer| match answer {
                    Err(e) => view! { <p class="error">{e.message}</p> }.into_any(),
                    Ok(list) if list.is_empty() => view! { <p>"No incidents."</p> }.into_any(),
                    Ok(list) => view! {
                        <div class="incidents" data-testid="incidents">
                            {list.into_iter().map(|i| view! { <IncidentCard incident=i refresh /> }).collect_view()}
                        </div>
                    }.into_any(),
                })}
            </Transition>
        </section>
    }
}

#[component]
fn IncidentCard(incident: IncidentView, refresh: RwSignal<u32>) -> impl IntoView {
    let note = RwSignal::new(String::new());
    let error = RwSignal::new(None::<String>);
    let id = StoredValue::new(incident.incident.clone());
    let acknowledge = move |ev: leptos::ev::SubmitEvent| {
        ev.prevent_default();
        let text = note.get_untracked();
        spawn_local(async move {
            match acknowledge_incident(id.get_value(), text).await {
                Ok(_) => refresh.update(|n| *n += 1),
                Err(e) => error.set(Some(e.message)),
            }
        });
    };
    let state_class = format!("state state-incident-{}", incident.state);
    let open = incident.state == "open";
    let mine = incident.opened_by_caller;
    view! {
        <article class="incident" data-testid="incident" data-state=incident.state.clone() data-incident=incident.incident.clone()>
            <header>
                <strong>{format!("{} — {}", incident.incident_id, incident.subject.clone().map_or_else(|| incident.tenant_id.clone(), |s| format!("exposure sweep of {s}")))}</strong>
                <span class=state_class>{incident.state.clone()}</span>
                {incident.overdue.then(|| view! { <span class="state state-needs_reconcile">"overdue"</span> })}
            </header>
            <dl class="facts">
                <dt>"Opened"</dt><dd>{format!("{} by {}", date(Some(incident.opened_at)), incident.opened_by)}</dd>
                <dt>"Reason"</dt><dd>{incident.reason.clone()}</dd>
                <dt>"Outcome"</dt><dd data-testid="incident-outcome">{format!("{}{}", incident.outcome.replace('_', " "), incident.new_version.map(|v| format!(", version {v}")).unwrap_or_default())}</dd>
                <dt>"Reveal windows closed"</dt><dd>{incident.grants_revoked}</dd>
                {(incident.kind == "exposure_sweep").then(|| {
                    let done = incident.sweep.iter().filter(|t| t.outcome != "pending").count();
                    view! {
                        <dt>"Tenants"</dt>
                        <dd data-testid="sweep-progress">{format!("{done} of {} done", incident.sweep.len())}
                            <ul>
                                {incident.sweep.iter().map(|t| view! {
                                    <li data-testid="swept-tenant">{format!("{}: {}{}", t.tenant_id, t.outcome, t.error.clone().map(|e| format!(" ({e})")).unwrap_or_default())}</li>
                                }).collect_view()}
                            </ul>
                        </dd>
                    }
                })}
                <dt>"Finished"</dt><dd>{date(incident.finished_at)}</dd>
                {incident.acknowledged_by.clone().map(|by| view! {
                    <dt>"Acknowledged"</dt><dd>{format!("{} by {}: “{}”", date(incident.acknowledged_at), by, incident.ack_note.clone().unwrap_or_default())}</dd>
                })}
            </dl>
            <details>
                <summary>"History"</summary>
                <ul>
                    {incident.history.iter().map(|e| view! {
                        <li>{format!("{} {} ({}) by {}", date(Some(e.at)), e.event.replace('_', " "), e.severity, e.actor)}</li>
                    }).collect_view()}
                </ul>
            </details>
            {(open && mine).then(|| view! { <p class="purpose">"Another admin must acknowledge your reset."</p> })}
            {(open && !mine).then(|| view! {
                <form class="inline-form" on:submit=acknowledge>
                    <input required minlength="3" maxlength="1000" placeholder="review note" aria-label="Review note" bind:value=note />
                    <button type="submit" data-testid="acknowledge">"Acknowledge"</button>
                </form>
            })}
            {move || error.get().map(|m| view! { <p class="error" role="alert">{m}</p> })}
        </article>
    }
}
