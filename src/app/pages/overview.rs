//! `/`: the overview a signed-in admin lands on — tenants per state, what is due, the stalest
//! heartbeat, open incidents and alerts, the last backup and drill, Vault and the database —
//! each figure a link to the list or page behind it.

use super::credentials::SignInPrompt;
use crate::app::server_fns::overview;
use crate::app::session::use_me;
use crate::app::status::ReadinessCard;
use crate::app::when;
use crate::model::{OverviewView, TenantFilter};
use chrono::{DateTime, Utc};
use leptos::prelude::*;

/// How long ago, for people ("3 h", "2 d").
fn age(now: DateTime<Utc>, then: DateTime<Utc>) -> String {
    let minutes = (now - then).num_minutes().max(0);
    match minutes {
        0..=59 => format!("{minutes} min ago"),
        60..=2879 => format!("{} h ago", minutes / 60),
        _ => format!("{} d ago", minutes / 1440),
    }
}

/// One figure with its link.
#[component]
fn Tile(label: String, value: String, href: String, #[prop(optional)] alarm: bool) -> impl IntoView {
    view! {
        <a class=if alarm { "tile tile-alarm" } else { "tile" } href=href>
            <span class="tile-value">{value}</span>
            <span class="tile-label">{label}</span>
        </a>
    }
}

fn tiles(o: OverviewView) -> impl IntoView {
    let now = o.at;
    let states = TenantFilter::ALL
        .into_iter()
        .map(|f| {
            let n = o.counts.of(f);
            let alarm = n > 0 && !matches!(f, TenantFilter::Active | TenantFilter::Rotating);
            view! { <Tile label=f.label().to_owned() value=n.to_string() href=format!("/tenants?state={}", f.as_str()) alarm /> }
        })
        .collect_view();
    let heartbeat = match &o.stalest_heartbeat {
        Some(h) => format!("{} ({})", age(now, h.at), h.tenant_id),
        None => "none yet".to_owned(),
    };
    let heartbeat_href =
        o.stalest_heartbeat.as_ref().map_or_else(|| "/tenants".to_owned(), |h| format!("/tenants/{}", h.tenant_id));
    let backup = o.last_backup_at.map_or_else(|| "never".to_owned(), |at| age(now, at));
    let backup_stale = o.last_backup_at.is_none_or(|at| now - at > chrono::Duration::hours(26));
    let drill = o.last_drill.as_ref().map_or_else(
        || "never".to_owned(),
        |d| {
            let rpo = d.rpo_ms.map_or_else(|| "—".to_owned(), |ms| format!("{} s", ms / 1000));
            format!("RTO {} s, RPO {rpo}, {}{}", d.rto_ms / 1000, age(now, d.at), if d.ok { "" } else { ", failed" })
        },
    );
    let drill_failed = o.last_drill.as_ref().is_some_and(|d| !d.ok);
    view! {
        <section class="card" aria-labelledby="tenants-title" data-testid="overview">
            <h2 id="tenants-title">{format!("Tenants ({})", o.counts.total)}</h2>
            <div class="tiles" data-testid="overview-states">{states}</div>
        </section>
        <section class="card" aria-labelledby="attention-title">
            <h2 id="attention-title">"Needs a look"</h2>
            <div class="tiles" data-testid="overview-attention">
                <Tile label="due within 7 days".to_owned() value=o.due_within_7_days.to_string() href="/tenants?due=7".to_owned() />
                <Tile label="oldest successful heartbeat".to_owned() value=heartbeat href=heartbeat_href />
                <Tile label="never logged in by the heartbeat".to_owned() value=o.never_heartbeat.to_string()
                      href="/tenants".to_owned() />
                <Tile label="open incidents".to_owned() value=o.open_incidents.to_string() href="/incidents".to_owned()
                      alarm={o.open_incidents > 0} />
                <Tile label="unacknowledged alerts".to_owned() value=o.unacknowledged_alerts.to_string()
                      href="/alerts".to_owned() alarm={o.unacknowledged_alerts > 0} />
                <Tile label="last backup".to_owned() value=backup href="/backups".to_owned() alarm=backup_stale />
                <Tile label="last DR drill".to_owned() value=drill href="/backups".to_owned() alarm=drill_failed />
            </div>
            <p class="muted">{format!("Counted {} UTC.", when::seconds(now))}</p>
        </section>
    }
}

/// `/`: the overview.
#[component]
pub fn OverviewPage() -> impl IntoView {
    let me = use_me();
    let figures = Resource::new(
        || (),
        move |()| async move { if matches!(me.await, Ok(Some(_))) { overview().await.map(Some) } else { Ok(None) } },
    );
    view! {
        <h1>"Overview"</h1>
        <p class="purpose">"The whole fleet at a glance: each figure opens the list behind it."</p>
        <Transition fallback=|| view! { <p>"Loading…"</p> }>
            {move || match (me.get(), figures.get()) {
                (None, _) | (_, None) => None,
                (Some(Ok(None)) | Some(Err(_)), _) => Some(view! { <SignInPrompt /> }.into_any()),
                (_, Some(Err(e))) => Some(view! { <p class="error">{e.message}</p> }.into_any()),
                (_, Some(Ok(None))) => None,
                (Some(Ok(Some(_))), Some(Ok(Some(o)))) => Some(tiles(o).into_any()),
            }}
        </Transition>
        <ReadinessCard />
    }
}
