//! The audit trail for security reviewers and platform admins: filters (tenant, event, actor,
//! severity, text, dates), newest-first pages with "older"/"newer", an event's details, the
//! chain's verification state, and the saved filter "who revealed this tenant lately".
//! The server authorizes every call; this page only asks.

use crate::app::server_fns::{audit_chain_state, audit_chart, query_audit};
use crate::app::session::use_me;
use crate::app::when;
use crate::model::{AuditChart, AuditEventView, AuditPage, Permission};
use leptos::prelude::*;
use leptos::task::spawn_local;

/// The filter as submitted.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Filter {
    tenant: String,
    event: String,
    actor: String,
    severity: String,
    text: String,
    since: String,
    until: String,
}

/// Percent-encodes a query-string value (the browser build has no URL crate).
pub(crate) fn encode(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => char::from(b).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The export address for the filter as applied (dates become UTC day bounds).
fn export_url(filter: &Filter, format: &str) -> String {
    let mut params = Vec::new();
    for (key, value) in [
        ("tenant", &filter.tenant),
        ("event", &filter.event),
        ("actor", &filter.actor),
        ("severity", &filter.severity),
        ("q", &filter.text),
    ] {
        if !value.trim().is_empty() {
            params.push(format!("{key}={}", encode(value.trim())));
        }
    }
    let day = when::parse_day;
    if let Some(date) = day(&filter.since) {
        params.push(format!("since={}", encode(&format!("{date}T00:00:00Z"))));
    }
    if let Some(date) = day(&filter.until).and_then(|d| d.succ_opt()) {
        params.push(format!("until={}", encode(&format!("{date}T00:00:00Z"))));
    }
    format!("/api/v1/audit/export.{format}?{}", params.join("&"))
}

/// `/audit`.
#[component]
pub fn AuditPage() -> impl IntoView {
    let me = use_me();
    view! {
        <h1>"Audit"</h1>
        <p class="purpose">"The hash-chained record of every change and every secret read."</p>
        <Transition fallback=|| view! { <p>"Loading…"</p> }>
            {move || match me.get() {
                None => None,
                Some(Ok(None)) | Some(Err(_)) => Some(view! { <super::credentials::SignInPrompt /> }.into_any()),
                // Only roles that may read the trail ask for it (the server refuses the others, and a
                // refused call during server rendering would turn the whole page into that error).
                Some(Ok(Some(admin))) if admin.role.may(Permission::ReadAudit) => {
                    Some(view! { <ChainState /> <Trail /> }.into_any())
                }
                Some(Ok(Some(_))) => Some(view! {
                    <section class="card"><p>"Your role does not read the audit trail; security reviewers and platform admins do."</p></section>
                }.into_any()),
            }}
        </Transition>
    }
}

#[component]
fn ChainState() -> impl IntoView {
    let state = RwSignal::new(None::<Result<crate::model::ChainStateView, String>>);
    let verify = move |_| {
        spawn_local(async move {
            state.set(Some(audit_chain_state().await.map_err(|e| e.message)));
        });
    };
    view! {
        <section class="card" aria-labelledby="chain-title">
            <h2 id="chain-title">"Chain"</h2>
            <button type="button" class="secondary" data-testid="verify-chain" on:click=verify>"Verify the chain"</button>
            {move || state.get().map(|answer| match answer {
                Err(message) => view! { <p class="error" role="alert">{message}</p> }.into_any(),
                Ok(chain) => match chain.broken_seq {
                    None => view! {
                        <p class="notice" data-testid="chain-state">{format!("Intact: {} events, head {}", chain.events, chain.head_hash)}</p>
                    }.into_any(),
                    Some(seq) => view! {
                        <p class="error" data-testid="chain-state">{format!(
                            "BROKEN at event {seq}: {} ({} events before it verified)",
                            chain.reason.unwrap_or_default(), chain.events
                        )}</p>
                    }.into_any(),
                },
            })}
        </section>
    }
    .into_any()
}

#[component]
fn Trail() -> impl IntoView {
    let field = || RwSignal::new(String::new());
    let (tenant, event, actor, severity, text, since, until) =
        (field(), field(), field(), field(), field(), field(), field());
    let applied = RwSignal::new(Filter::default());
    // Cursors of the pages before this one, so "newer" can go back.
    let trail = RwSignal::new(Vec::<String>::new());
    let cursor = RwSignal::new(String::new());
    let selected = RwSignal::new(None::<AuditEventView>);
    let page = Resource::new(
        move || (applied.get(), cursor.get()),
        |(f, c)| query_audit(f.tenant, f.event, f.actor, f.severity, f.text, f.since, f.until, c),
    );
    let chart = Resource::new(
        move || applied.get(),
        |f| audit_chart(f.tenant, f.event, f.actor, f.severity, f.text, f.since, f.until),
    );
    let apply = move |ev: leptos::ev::SubmitEvent| {
        ev.prevent_default();
        trail.set(Vec::new());
        cursor.set(String::new());
        selected.set(None);
        applied.set(Filter {
            tenant: tenant.get_untracked(),
            event: event.get_untracked(),
            actor: actor.get_untracked(),
            severity: severity.get_untracked(),
            text: text.get_untracked(),
            since: since.get_untracked(),
            until: until.get_untracked(),
        });
    };
    let reveals = move |_| {
        // The saved filter: who revealed this tenant in the last 30 days.
        event.set("credential_revealed".into());
        for cleared in [actor, severity, text, since, until] {
            cleared.set(String::new());
        }
        trail.set(Vec::new());
        cursor.set(String::new());
        applied.set(Filter {
            tenant: tenant.get_untracked(),
            event: "credential_revealed".into(),
            // The server counts the days: the browser build has no clock of its own here.
            since: "30d".into(),
            ..Filter::default()
        });
    };
    let older = move |next: String| {
        trail.update(|t| t.push(cursor.get_untracked()));
        cursor.set(next);
        selected.set(None);
    };
    let newer = move |_| {
        let mut previous = trail.get_untracked();
        cursor.set(previous.pop().unwrap_or_default());
        trail.set(previous);
        selected.set(None);
    };
    view! {
        <section class="card" aria-labelledby="trail-title">
            <h2 id="trail-title">"Events"</h2>
            <form class="filters" on:submit=apply data-testid="audit-filters">
                <label>"Tenant" <input bind:value=tenant placeholder="acme" /></label>
                <label>"Event" <input bind:value=event placeholder="credential_revealed" /></label>
                <label>"Actor" <input bind:value=actor placeholder="email, token or job" /></label>
                <label>"Severity"
                    <select bind:value=severity>
                        <option value="">"any"</option>
                        <option value="info">"info"</option>
                        <option value="warning">"warning"</option>
                        <option value="critical">"critical"</option>
                    </select>
                </label>
                <label>"Text in details" <input bind:value=text /></label>
                <label>"From" <input type="date" bind:value=since /></label>
                <label>"To" <input type="date" bind:value=until /></label>
                <button type="submit">"Filter"</button>
                <button type="button" class="secondary" on:click=reveals>"Who revealed this tenant (30 days)"</button>
            </form>
            {move || (applied.with(|f| f.since == "30d")).then(|| view! { <p class="purpose">"Showing the last 30 days."</p> })}
            <Transition fallback=|| ()>
                {move || chart.get().map(|answer| match answer {
                    Err(e) => view! { <p class="error" role="alert">{e.message}</p> }.into_any(),
                    Ok(chart) => view! { <DayChart chart /> }.into_any(),
                })}
            </Transition>
            <p class="inline-form">
                // `download` and `rel="external"` keep the client-side router from taking these links.
                <a class="button secondary" data-testid="export-csv" rel="external" download="audit.csv" href=move || applied.with(|f| export_url(f, "csv"))>"Export CSV"</a>
                <a class="button secondary" rel="external" download="audit.jsonl" href=move || applied.with(|f| export_url(f, "jsonl"))>"Export JSON Lines"</a>
            </p>
            <Transition fallback=|| view! { <p>"Loading…"</p> }>
                {move || page.get().map(|answer| match answer {
                    Err(e) => view! { <p class="error" role="alert">{e.message}</p> }.into_any(),
                    Ok(AuditPage { events, next_cursor }) => view! {
                        <p class="inline-form">
                            <button type="button" class="secondary" disabled=move || trail.with(Vec::is_empty) on:click=newer>"← Newer"</button>
                            {next_cursor.map(|next| view! {
                                <button type="button" class="secondary" data-testid="older" on:click=move |_| older(next.clone())>"Older →"</button>
                            })}
                        </p>
                        {if events.is_empty() {
                            view! { <p data-testid="no-events">"No events match."</p> }.into_any()
                        } else {
                            view! {
                                <table class="table" data-testid="audit-events">
                                    <thead><tr><th>"#"</th><th>"When"</th><th>"Event"</th><th>"Severity"</th><th>"Actor"</th><th>"Tenant"</th></tr></thead>
                                    <tbody>
                                        {events.into_iter().map(|e| {
                                            let chosen = e.clone();
                                            view! {
                                                <tr class=format!("severity-{}", e.severity)>
                                                    <td><button type="button" class="link" on:click=move |_| selected.set(Some(chosen.clone()))>{e.seq}</button></td>
                                                    <td>{when::seconds(e.occurred_at)}</td>
                                                    <td>{e.event.clone()}</td>
                                                    <td>{e.severity.clone()}</td>
                                                    <td>{e.actor.clone()}</td>
                                                    <td>{e.tenant_id.clone().unwrap_or_default()}</td>
                                                </tr>
                                            }
                                        }).collect_view()}
                                    </tbody>
                                </table>
                            }.into_any()
                        }}
                    }.into_any(),
                })}
            </Transition>
            {move || selected.get().map(|e| view! {
                <div class="receipt" data-testid="audit-detail">
                    <h3>{format!("Event {} — {}", e.seq, e.event)}</h3>
                    <dl class="facts">
                        <dt>"When"</dt><dd>{e.occurred_at.to_rfc3339()}</dd>
                        <dt>"Actor"</dt><dd>{format!("{} ({})", e.actor, e.actor_kind)}</dd>
                        <dt>"Client"</dt><dd>{e.client_ip.clone().unwrap_or_default()}</dd>
                        <dt>"Request"</dt><dd>{e.request_id.clone().unwrap_or_default()}</dd>
                        <dt>"Hash"</dt><dd><code>{e.hash.clone()}</code></dd>
                    </dl>
                    <h4>"Details"</h4>
                    <crate::app::details::DetailFields details=e.details.clone() />
                    <dl class="facts">
                        <dt>"Previous hash"</dt><dd><code>{e.prev_hash.clone()}</code></dd>
                    </dl>
                </div>
            })}
        </section>
    }
    .into_any()
}

/// The per-day chart: one stacked bar per UTC day (info, warning, critical), drawn as SVG on
/// the server, no script needed to see it.
#[component]
fn DayChart(chart: AuditChart) -> impl IntoView {
    const WIDTH: f64 = 720.0;
    const HEIGHT: f64 = 140.0;
    const LEFT: f64 = 40.0;
    const BOTTOM: f64 = 18.0;
    let days = chart.days;
    let Some((first, last)) = days.first().zip(days.last()).map(|(f, l)| (f.day.clone(), l.day.clone())) else {
        return view! { <p data-testid="audit-chart-empty">"No days in this range."</p> }.into_any();
    };
    let total: u64 = days.iter().map(crate::model::AuditDayCount::total).sum();
    let peak = days.iter().max_by_key(|d| d.total()).cloned().unwrap_or_default();
    let top = peak.total().max(1) as f64;
    let slot = (WIDTH - LEFT) / days.len() as f64;
    let plot = HEIGHT - BOTTOM;
    let label = if total == 0 {
        format!("No events from {first} to {last}.")
    } else {
        format!("Events per day from {first} to {last}: {total} in all; busiest {} with {}.", peak.day, peak.total())
    };
    let bars = days
        .into_iter()
        .enumerate()
        .map(|(i, day)| {
            let x = LEFT + i as f64 * slot + slot * 0.1;
            let width = (slot * 0.8).max(1.0);
            let mut base = plot;
            let mut parts = Vec::new();
            for (class, n) in [("bar-info", day.info), ("bar-warning", day.warning), ("bar-critical", day.critical)] {
                if n == 0 {
                    continue;
                }
                let h = n as f64 / top * (plot - 4.0);
                base -= h;
                parts.push(view! { <rect class=class x=format!("{x:.1}") y=format!("{base:.1}") width=format!("{width:.1}") height=format!("{h:.1}") /> });
            }
            view! { <g data-day=day.day.clone() data-count=day.total().to_string()>{parts}</g> }
        })
        .collect_view();
    view! {
        <figure class="chart" data-testid="audit-chart">
            <svg viewBox=format!("0 0 {WIDTH} {HEIGHT}") role="img" aria-label=label.clone()>
                <line class="axis" x1=LEFT.to_string() y1=plot.to_string() x2=WIDTH.to_string() y2=plot.to_string() />
                {(peak.total() > 0).then(|| view! {
                    <text class="tick" x=(LEFT - 4.0).to_string() y="12" text-anchor="end">{peak.total().to_string()}</text>
                })}
                <text class="tick" x=(LEFT - 4.0).to_string() y=plot.to_string() text-anchor="end">"0"</text>
                <text class="tick" x=LEFT.to_string() y=(HEIGHT - 4.0).to_string()>{first}</text>
                <text class="tick" x=WIDTH.to_string() y=(HEIGHT - 4.0).to_string() text-anchor="end">{last}</text>
                {bars}
            </svg>
            <figcaption>{label} <span class="legend"><span class="key bar-info"></span>"info "<span class="key bar-warning"></span>"warning "<span class="key bar-critical"></span>"critical"</span></figcaption>
        </figure>
    }
    .into_any()
}
