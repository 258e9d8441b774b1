//! Credentials: the tenant list (search, state badges, rotation dates) and a tenant's page with
//! its metadata, the masked password and the reveal flow (reason → passkey step-up → a window
//! with countdown and copy; hidden again when the window ends). Reveal controls show only for
//! platform admins, but the server enforces it.

use crate::app::browser;
use crate::app::confirm::{with_ceremony, with_step_up};
use crate::app::pages::audit::encode;
use crate::app::server_fns::{
    begin_recovery, begin_reveal, begin_revert, begin_rotation, credential_metadata, defer_rotation, finish_recovery,
    finish_reveal, finish_revert, finish_rotation, fleet_counts, list_grants, list_mailu_admins, list_reveal_requests,
    list_tenants, reveal_credential, revoke_grant, rotation_status, tenant_settings, trust_mailu_admin,
    update_tenant_settings,
};
use crate::app::session::{may, signed_in, use_me};
use crate::app::when;
use crate::model::{
    CredentialState, Permission, RevealRequestStatus, RevealRequestView, RevealStep, RevealedCredentialView,
    TenantFilter,
};
use chrono::{DateTime, Utc};
use leptos::prelude::*;
use leptos::task::spawn_local;
use leptos_router::hooks::{use_params_map, use_query_map};
use secrecy::ExposeSecret;

fn date(t: Option<DateTime<Utc>>) -> String {
    t.map_or_else(|| "—".to_owned(), |t| format!("{} UTC", when::minutes(t)))
}

/// A coloured state label.
#[component]
fn StateBadge(state: CredentialState) -> impl IntoView {
    let label = state.as_str().replace('_', " ");
    view! { <span class=format!("state state-{}", state.as_str())>{label}</span> }
}

/// Shown instead of data to anonymous visitors.
#[component]
pub fn SignInPrompt() -> impl IntoView {
    view! {
        <section class="card">
            <p>"Sign in with your passkey to see tenants' credentials."</p>
            <a class="button" href="/login">"Sign in"</a>
        </section>
    }
}

/// The list's filters as they stand in the address (`/tenants?state=…&due=…&q=…&cursor=…`), so
/// a link from the overview or a bookmark opens the same slice.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct ListFilters {
    state: String,
    due: String,
    q: String,
    cursor: String,
}

impl ListFilters {
    /// The address of this slice at `cursor` (empty: its first page).
    fn href(&self, cursor: &str) -> String {
        let mut params = Vec::new();
        for (key, value) in [("state", &self.state), ("due", &self.due), ("q", &self.q)] {
            if !value.trim().is_empty() {
                params.push(format!("{key}={}", encode(value.trim())));
            }
        }
        if !cursor.is_empty() {
            params.push(format!("cursor={}", encode(cursor)));
        }
        if params.is_empty() { "/tenants".to_owned() } else { format!("/tenants?{}", params.join("&")) }
    }

    /// The same slice narrowed to `state` (empty: every state), from its first page.
    fn with_state(&self, state: &str) -> String {
        ListFilters { state: state.to_owned(), cursor: String::new(), ..self.clone() }.href("")
    }
}

/// `/tenants`: the tenant list, a page at a time, with counts per state as filters.
#[component]
pub fn CredentialsPage() -> impl IntoView {
    let me = use_me();
    let query = use_query_map();
    let filters = Memo::new(move |_| {
        let q = query.get();
        let get = |key: &str| q.get(key).unwrap_or_default();
        ListFilters { state: get("state"), due: get("due"), q: get("q"), cursor: get("cursor") }
    });
    // Only asked for once someone is signed in: anonymous visitors get the sign-in prompt. The
    // session is awaited inside the fetcher (not read in the source), so the server never
    // renders with one answer and streams another: no hydration mismatch.
    let page = Resource::new(
        move || filters.get(),
        move |f| async move {
            if matches!(me.await, Ok(Some(_))) {
                list_tenants(f.state, f.due, f.q, f.cursor).await.map(Some)
            } else {
                Ok(None)
            }
        },
    );
    let counts = Resource::new(
        || (),
        move |()| async move { if matches!(me.await, Ok(Some(_))) { fleet_counts().await.map(Some) } else { Ok(None) } },
    );
    view! {
        <h1>"Credentials"</h1>
        <p class="purpose">"Tenants' Mailu admin SMTP credentials, encrypted in Vault."</p>
        <Transition fallback=|| view! { <p>"Loading…"</p> }>
            {move || match me.get() {
                None => None,
                Some(Ok(None)) | Some(Err(_)) => Some(view! { <SignInPrompt /> }.into_any()),
                Some(Ok(Some(_))) => Some(
                    view! {
                        <section class="card">
                            <nav class="filters" aria-label="States" data-testid="state-filters">
                                {move || {
                                    let f = filters.get();
                                    let all = counts.get().and_then(|c| c.ok().flatten());
                                    let chip = |name: &str, label: &str, n: Option<u64>| {
                                        let current = f.state == name;
                                        let text = n.map_or_else(|| label.to_owned(), |n| format!("{label} ({n})"));
                                        view! {
                                            <a class=if current { "chip chip-current" } else { "chip" }
                                               aria-current=current.then_some("true")
                                               href=f.with_state(name)>{text}</a>
                                        }
                                    };
                                    let mut chips = vec![chip("", "All", all.as_ref().map(|c| c.total))];
                                    for filter in TenantFilter::ALL {
                                        chips.push(chip(filter.as_str(), filter.label(), all.as_ref().map(|c| c.of(filter))));
                                    }
                                    chips.collect_view()
                                }}
                            </nav>
                            <form class="search" method="get" action="/tenants">
                                <input type="hidden" name="state" value=move || filters.get().state />
                                <label>
                                    "Search tenants"
                                    <input type="search" name="q" placeholder="tenant id" value=move || filters.get().q />
                                </label>
                                <label>
                                    "Next rotation"
                                    <select name="due">
                                        {move || {
                                            let due = filters.get().due;
                                            [("", "any time"), ("1", "within a day"), ("7", "within 7 days"), ("30", "within 30 days")]
                                                .into_iter()
                                                .map(|(value, label)| view! { <option value=value selected=due == value>{label}</option> })
                                                .collect_view()
                                        }}
                                    </select>
                                </label>
                                <button type="submit">"Show"</button>
                            </form>
                            <Transition fallback=|| view! { <p>"Loading…"</p> }>
                                {move || page.get().map(|answer| match answer {
                                    Err(e) => view! { <p class="error">{e.message}</p> }.into_any(),
                                    Ok(None) => ().into_any(),
                                    Ok(Some(page)) if page.tenants.is_empty() => {
                                        let f = filters.get();
                                        view! {
                                            <p>"No tenants match."</p>
                                            {(!f.cursor.is_empty()).then(|| view! { <a href=f.href("")>"First page"</a> })}
                                        }.into_any()
                                    }
                                    Ok(Some(page)) => {
                                        let f = filters.get();
                                        let shown = page.tenants.len();
                                        view! {
                                            <p class="muted" data-testid="tenant-total">
                                                {format!("{shown} shown of {} matching", page.total)}
                                            </p>
                                            <table class="table" data-testid="tenant-list">
                                                <thead><tr>
                                                    <th>"Tenant"</th><th>"State"</th><th>"Version"</th>
                                                    <th>"Last rotation"</th><th>"Next rotation"</th>
                                                </tr></thead>
                                                <tbody>
                                                    {page.tenants.into_iter().map(|t| view! {
                                                        <tr>
                                                            <td><a href=format!("/tenants/{}", t.tenant_id)>{t.tenant_id.to_string()}</a></td>
                                                            <td><StateBadge state=t.state /></td>
                                                            <td>{t.version}</td>
                                                            <td>{date(t.rotated_at)}</td>
                                                            <td>{date(t.next_rotation_at)}</td>
                                                        </tr>
                                                    }).collect_view()}
                                                </tbody>
                                            </table>
                                            <nav class="pager" aria-label="Pages">
                                                {page.prev_cursor.map(|c| view! { <a href=f.href(&c) rel="prev">"← Previous"</a> })}
                                                {(!f.cursor.is_empty()).then(|| view! { <a href=f.href("")>"First page"</a> })}
                                                {page.next_cursor.map(|c| view! { <a href=f.href(&c) rel="next">"Next →"</a> })}
                                            </nav>
                                        }.into_any()
                                    }
                                })}
                            </Transition>
                        </section>
                    }
                    .into_any(),
                ),
            }}
        </Transition>
    }
}

/// `/tenants/:id`: metadata, masked password, reveal and open windows.
#[component]
pub fn TenantPage() -> impl IntoView {
    let me = use_me();
    let params = use_params_map();
    let tenant_id = move || params.get().get("id").unwrap_or_default();
    let metadata = Resource::new(tenant_id, move |id| async move {
        if matches!(me.await, Ok(Some(_))) { credential_metadata(id).await.map(Some) } else { Ok(None) }
    });
    view! {
        <p><a href="/tenants">"← All tenants"</a></p>
        <Transition fallback=|| view! { <p>"Loading…"</p> }>
            {move || match (me.get(), metadata.get()) {
                (Some(Ok(None)) | Some(Err(_)), _) => Some(view! { <SignInPrompt /> }.into_any()),
                (_, Some(Err(e))) => Some(view! { <p class="error">{e.message}</p> }.into_any()),
                (Some(Ok(Some(_))), Some(Ok(Some(m)))) => Some(view! {
                    <h1>{m.tenant_id.to_string()}</h1>
                    <section class="card">
                        <h2>"SMTP credential"</h2>
                        <dl class="facts" data-testid="metadata">
                            <dt>"State"</dt><dd><StateBadge state=m.state /></dd>
                            <dt>"Username"</dt><dd>{m.username.clone()}</dd>
                            <dt>"Server"</dt><dd>{format!("{}:{} ({})", m.smtp_host, m.smtp_port, m.smtp_tls.label())}</dd>
                            <dt>"Webmail"</dt><dd>{m.webmail_url.clone()}</dd>
                            <dt>"Version"</dt><dd>{m.version}</dd>
                            <dt>"Stored"</dt><dd>{date(Some(m.stored_at))}</dd>
                            <dt>"Last rotation"</dt><dd>{date(m.rotated_at)}</dd>
                            <dt>"Next rotation"</dt><dd>{date(m.next_rotation_at)}</dd>
                        </dl>
                        <RevealPanel tenant_id=m.tenant_id.to_string() />
                    </section>
                    <RotationPanel tenant_id=m.tenant_id.to_string() />
                    <MailuAdminsPanel tenant_id=m.tenant_id.to_string() />
                    <SettingsPanel tenant_id=m.tenant_id.to_string() />
                    <RecoveryPanel tenant_id=m.tenant_id.to_string() />
                }.into_any()),
                _ => None,
            }}
        </Transition>
    }
}

fn clock(seconds: i64) -> String {
    format!("{:02}:{:02}", seconds.max(0) / 60, seconds.max(0) % 60)
}

/// The password row: masked, or revealed inside a window with a countdown; the reveal form
/// for platform admins; the open windows for this tenant with their revoke buttons.
#[component]
fn RevealPanel(tenant_id: String) -> impl IntoView {
    let me = use_me();
    let reason = RwSignal::new(String::new());
    let category = RwSignal::new("other".to_owned());
    let revealed = RwSignal::new(None::<RevealedCredentialView>);
    let remaining = RwSignal::new(0i64);
    let error = RwSignal::new(None::<String>);
    let notice = RwSignal::new(None::<String>);
    let busy = RwSignal::new(false);
    let ticker = StoredValue::new(None::<IntervalHandle>);
    let refresh = RwSignal::new(0u32);
    let tenant = StoredValue::new(tenant_id);
    let grants = Resource::new(move || refresh.get(), move |_| list_grants(Some(tenant.get_value())));
    // A four-eyes request waiting for a second admin: the open windows are re-read until the
    // requester's own appears (approval) or the request's time is up.
    let four_eyes = Resource::new(
        || (),
        move |_| async move { tenant_settings(tenant.get_value()).await.map(|s| s.reveal_approval).unwrap_or(false) },
    );
    let awaiting = RwSignal::new(None::<RevealRequestView>);
    let poll = StoredValue::new(None::<IntervalHandle>);
    let stop_polling = move || {
        if let Some(handle) = poll.get_value() {
            handle.clear();
        }
        poll.set_value(None);
    };

    let hide = move || {
        revealed.set(None);
        remaining.set(0);
        if let Some(handle) = ticker.get_value() {
            handle.clear();
        }
        ticker.set_value(None);
    };
    let show = move |view: RevealedCredentialView| {
        remaining.set(view.expires_in_secs);
        revealed.set(Some(view));
        if let Some(handle) = ticker.get_value() {
            handle.clear();
        }
        // The countdown is cosmetic; the server refuses once the window has closed.
        let handle = set_interval_with_handle(
            move || {
                remaining.update(|r| *r -= 1);
                if remaining.get_untracked() <= 0 {
                    hide();
                    refresh.update(|n| *n += 1);
                }
            },
            std::time::Duration::from_secs(1),
        )
        .ok();
        ticker.set_value(handle);
    };
    let fetch_secret = move || {
        spawn_local(async move {
            match reveal_credential(tenant.get_value()).await {
                Ok(view) => show(view),
                Err(e) => error.set(Some(e.message)),
            }
        });
    };
    let start_reveal = move |ev: leptos::ev::SubmitEvent| {
        ev.prevent_default();
        busy.set(true);
        error.set(None);
        let (why, kind) = (reason.get_untracked(), category.get_untracked());
        spawn_local(async move {
            let outcome = async {
                match with_ceremony(begin_reveal(tenant.get_value(), why, kind), |a| {
                    finish_reveal(tenant.get_value(), a)
                })
                .await?
                {
                    RevealStep::Granted(_) => {
                        reveal_credential(tenant.get_value()).await.map(Some).map_err(|e| e.message)
                    }
                    RevealStep::AwaitingApproval(request) => {
                        awaiting.set(Some(request));
                        stop_polling();
                        let handle = set_interval_with_handle(
                            move || refresh.update(|n| *n += 1),
                            std::time::Duration::from_secs(5),
                        )
                        .ok();
                        poll.set_value(handle);
                        Ok(None)
                    }
                }
            }
            .await;
            busy.set(false);
            match outcome {
                Ok(Some(view)) => {
                    reason.set(String::new());
                    show(view);
                    refresh.update(|n| *n += 1);
                }
                Ok(None) => reason.set(String::new()),
                Err(message) => error.set(Some(message)),
            }
        });
    };
    let copy = move |_| {
        if let Some(view) = revealed.get_untracked() {
            let text = view.password.expose_secret().to_owned();
            spawn_local(async move {
                match browser::copy_text(text).await {
                    Ok(()) => notice.set(Some("Copied to the clipboard.".into())),
                    Err(message) => error.set(Some(message)),
                }
            });
        }
    };
    let revoke = move |grant_id: String| {
        spawn_local(async move {
            match revoke_grant(grant_id.clone()).await {
                Ok(()) => {
                    if revealed.get_untracked().is_some_and(|v| v.grant_id == grant_id) {
                        hide();
                    }
                    refresh.update(|n| *n += 1);
                }
                Err(e) => error.set(Some(e.message)),
            }
        });
    };
    let my_email = move || signed_in(me).map(|a| a.email).unwrap_or_default();
    // While a request waits: its status, re-read every few seconds.
    let requests = Resource::new(
        move || (refresh.get(), awaiting.with(Option::is_some)),
        |(_, waiting)| async move { if waiting { list_reveal_requests(false).await.ok() } else { None } },
    );
    Effect::new(move |_| {
        // Both read (tracked) before any early return: an effect re-runs only on what it read.
        let answer = requests.get();
        let Some(request) = awaiting.get() else { return };
        let Some(Some(list)) = answer else { return };
        let Some(now) = list.into_iter().find(|r| r.request_id == request.request_id) else { return };
        let decided_by = now.decided_by_email.clone().unwrap_or_default();
        let outcome = match now.status {
            RevealRequestStatus::Pending => return,
            RevealRequestStatus::Approved => {
                Ok(format!("Approved by {decided_by}: your reveal window is open. Press Show."))
            }
            RevealRequestStatus::Denied => Err(format!("Your request was denied by {decided_by}.")),
            RevealRequestStatus::Expired => Err("Your request lapsed: nobody decided within 30 minutes.".to_owned()),
            RevealRequestStatus::Withdrawn => {
                Err("Your request was withdrawn (session, passkey or role ended, or a reset).".to_owned())
            }
        };
        awaiting.set(None);
        stop_polling();
        match outcome {
            Ok(message) => {
                notice.set(Some(message));
                refresh.update(|n| *n += 1);
            }
            Err(message) => error.set(Some(message)),
        }
    });

    view! {
        <div class="reveal">
            <h3>"Password"</h3>
            {move || match revealed.get() {
                Some(view) => view! {
                    <p class="secret-row">
                        <code data-testid="password">{view.password.expose_secret().to_owned()}</code>
                        <span class="countdown" data-testid="countdown" aria-live="polite">
                            {move || format!("hides in {}", clock(remaining.get()))}
                        </span>
                        <button type="button" data-testid="copy" on:click=copy>"Copy"</button>
                        <button type="button" class="secondary" on:click=move |_| hide()>"Hide"</button>
                    </p>
                }.into_any(),
                None => view! { <p class="secret-row"><code data-testid="masked">"••••••••••••"</code></p> }.into_any(),
            }}
            {move || (may(me, Permission::Reveal) && revealed.get().is_none()).then(|| view! {
                <form class="reveal-form" on:submit=start_reveal>
                    <Transition fallback=|| ()>
                        {move || four_eyes.get().filter(|on| *on).map(|_| view! {
                            <p class="notice" data-testid="four-eyes-notice">
                                "Four eyes: another platform admin approves each reveal of this tenant."
                            </p>
                        })}
                    </Transition>
                    <label>
                        "Reason for revealing (recorded)"
                        <textarea name="reason" required minlength="3" maxlength="500" bind:value=reason></textarea>
                    </label>
                    <label>
                        "Category (a tenant that asked to be told of reveals reads it)"
                        <select name="category" data-testid="reveal-category" bind:value=category>
                            <option value="support">"support request"</option>
                            <option value="incident">"incident investigation"</option>
                            <option value="migration">"server migration or rebuild"</option>
                            <option value="audit">"configuration or compliance check"</option>
                            <option value="other">"other"</option>
                        </select>
                    </label>
                    <button type="submit" data-testid="reveal" disabled=move || busy.get()>
                        {move || if busy.get() { "Confirm with your passkey…" } else { "Reveal with passkey" }}
                    </button>
                </form>
            })}
            {move || awaiting.get().map(|r| view! {
                <p class="notice" role="status" data-testid="awaiting-approval">
                    {format!(
                        "Request sent: this tenant needs a second platform admin. Another platform admin approves \
                         it on the Approvals page by {} UTC; your window opens here then.",
                        when::clock(r.expires_at),
                    )}
                </p>
            })}
            {move || error.get().map(|m| view! { <p class="error" role="alert">{m}</p> })}
            {move || notice.get().map(|m| view! { <p class="notice" role="status">{m}</p> })}
            <h3>"Open reveal windows"</h3>
            <Transition fallback=|| ()>
                {move || grants.get().map(|answer| match answer {
                    Err(_) => view! { <p>"—"</p> }.into_any(),
                    Ok(list) if list.is_empty() => view! { <p data-testid="no-grants">"None."</p> }.into_any(),
                    Ok(list) => view! {
                        <ul class="grants" data-testid="grants">
                            {list.into_iter().map(|g| {
                                let id = g.grant_id.clone();
                                let mine = g.admin_email == my_email();
                                view! {
                                    <li>
                                        <span>{format!("{} — “{}” — until {} UTC", g.admin_email, g.reason, when::clock(g.expires_at))}</span>
                                        {(mine && revealed.get_untracked().is_none()).then(|| view! {
                                            <button type="button" class="secondary" on:click=move |_| fetch_secret()>"Show"</button>
                                        })}
                                        <button type="button" class="danger" data-testid="revoke" on:click=move |_| revoke(id.clone())>"Revoke"</button>
                                    </li>
                                }
                            }).collect_view()}
                        </ul>
                    }.into_any(),
                })}
            </Transition>
        </div>
    }
}

/// Rotation: state, heartbeat, queued notices, history, "Rotate now" and "Revert to the
/// previous password" (platform admins, each with a passkey step-up).
#[component]
fn RotationPanel(tenant_id: String) -> impl IntoView {
    let me = use_me();
    let refresh = RwSignal::new(0u32);
    let tenant = StoredValue::new(tenant_id);
    let status = Resource::new(move || refresh.get(), move |_| rotation_status(tenant.get_value()));
    let error = RwSignal::new(None::<String>);
    let notice = RwSignal::new(None::<String>);
    let busy = RwSignal::new(false);
    let rotate = move |_| {
        busy.set(true);
        error.set(None);
        notice.set(None);
        spawn_local(async move {
            let outcome =
                with_ceremony(begin_rotation(tenant.get_value()), |a| finish_rotation(tenant.get_value(), a)).await;
            busy.set(false);
            match outcome {
                Ok(done) => notice.set(Some(format!("Rotated: version {}.", done.version))),
                Err(message) => error.set(Some(message)),
            }
            refresh.update(|n| *n += 1);
        });
    };
    let revert_reason = RwSignal::new(String::new());
    let revert = move |ev: leptos::ev::SubmitEvent| {
        ev.prevent_default();
        busy.set(true);
        error.set(None);
        notice.set(None);
        let reason = revert_reason.get_untracked();
        spawn_local(async move {
            let outcome =
                with_ceremony(begin_revert(tenant.get_value(), reason), |a| finish_revert(tenant.get_value(), a)).await;
            busy.set(false);
            match outcome {
                Ok(done) => {
                    revert_reason.set(String::new());
                    notice.set(Some(format!(
                        "Reverted: version {} holds the password of version {} again.",
                        done.version, done.reverted_to
                    )));
                }
                Err(message) => error.set(Some(message)),
            }
            refresh.update(|n| *n += 1);
        });
    };
    view! {
        <section class="card" aria-labelledby="rotation-title">
            <h2 id="rotation-title">"Rotation"</h2>
            <Transition fallback=|| view! { <p>"Loading…"</p> }>
                {move || status.get().map(|answer| match answer {
                    Err(e) => view! { <p class="error">{e.message}</p> }.into_any(),
                    Ok(r) => view! {
                        {r.rate_limited.then(|| view! {
                            <p class="warning" role="status" data-testid="rate-limited">
                                <strong>"Rate-limited: "</strong>
                                "this tenant's Mailu refuses the console's logins for now, so the heartbeat and rotations prove nothing and wait. "
                                "Add the console's address to AUTH_RATELIMIT_EXEMPTION in mailu.env (then restart Mailu's admin)."
                            </p>
                        })}
                        <dl class="facts" data-testid="rotation">
                            <dt>"State"</dt><dd><StateBadge state=r.state /></dd>
                            <dt>"Heartbeat"</dt>
                            <dd>{match (r.heartbeat_ok, r.heartbeat_at) {
                                (Some(true), at) => format!("logs in ({})", date(at)),
                                (Some(false), at) => format!("REFUSED ({})", date(at)),
                                (None, Some(at)) => format!("could not check ({})", date(Some(at))),
                                (None, None) => "not checked yet".to_owned(),
                            }}</dd>
                            <dt>"Deferred to"</dt><dd>{date(r.deferred_until)}</dd>
                            <dt>"Last error"</dt><dd>{r.last_error.clone().unwrap_or_else(|| "—".into())}</dd>
                        </dl>
                        {(!r.notices.is_empty()).then(|| view! {
                            <h3>"Pending notices"</h3>
                            <ul>{r.notices.iter().map(|n| view! { <li>{n.clone()}</li> }).collect_view()}</ul>
                        })}
                        <h3>"History"</h3>
                        <table class="table" data-testid="rotation-history">
                            <thead><tr><th>"When"</th><th>"Event"</th><th>"By"</th><th>"Details"</th></tr></thead>
                            <tbody>
                                {r.history.iter().map(|e| view! {
                                    <tr>
                                        <td>{date(Some(e.at))}</td>
                                        <td>{e.event.replace('_', " ")}</td>
                                        <td>{e.actor.clone()}</td>
                                        <td><crate::app::details::DetailFields details=serde_json::from_str(&e.details).unwrap_or_else(|_| serde_json::Value::String(e.details.clone())) /></td>
                                    </tr>
                                }).collect_view()}
                            </tbody>
                        </table>
                    }.into_any(),
                })}
            </Transition>
            {move || may(me, Permission::Rotate).then(|| view! {
                <button type="button" data-testid="rotate-now" on:click=rotate disabled=move || busy.get()>
                    {move || if busy.get() { "Confirm with your passkey…" } else { "Rotate now" }}
                </button>
            })}
            {move || may(me, Permission::Revert).then(|| view! {
                <form class="inline-form" on:submit=revert data-testid="revert-form">
                    <input required minlength="3" maxlength="1000" aria-label="Why revert (recorded, sent to security)"
                        placeholder="why the last rotation was bad" bind:value=revert_reason />
                    <button type="submit" class="secondary" data-testid="revert" disabled=move || busy.get()>
                        "Revert to the previous password"
                    </button>
                </form>
            })}
            {move || error.get().map(|m| view! { <p class="error" role="alert">{m}</p> })}
            {move || notice.get().map(|m| view! { <p class="notice" role="status">{m}</p> })}
        </section>
    }
}

/// The tenant's Mailu global admins as the daily inventory found them; an unknown one can be
/// vouched for with a note (platform admins, confirmed session).
#[component]
fn MailuAdminsPanel(tenant_id: String) -> impl IntoView {
    let me = use_me();
    let refresh = RwSignal::new(0u32);
    let tenant = StoredValue::new(tenant_id);
    let admins = Resource::new(move || refresh.get(), move |_| list_mailu_admins(tenant.get_value()));
    let error = RwSignal::new(None::<String>);
    view! {
        <section class="card" aria-labelledby="mailu-admins-title">
            <h2 id="mailu-admins-title">"Mailu global admins"</h2>
            <p class="purpose">"Checked daily on the tenant's Mailu. An account the console did not create raises mailu_unknown_admin: rotating does not remove it."</p>
            <Transition fallback=|| view! { <p>"Loading…"</p> }>
                {move || admins.get().map(|answer| match answer {
                    Err(e) => view! { <p class="error">{e.message}</p> }.into_any(),
                    Ok(list) if list.is_empty() => view! { <p>"Not inventoried yet (the daily cycle does it)."</p> }.into_any(),
                    Ok(list) => view! {
                        <ul class="mailu-admins" data-testid="mailu-admins">
                            {list.into_iter().map(|a| {
                                let note = RwSignal::new(String::new());
                                let email = StoredValue::new(a.email.clone());
                                let trust = move |ev: leptos::ev::SubmitEvent| {
                                    ev.prevent_default();
                                    let text = note.get_untracked();
                                    spawn_local(async move {
                                        let outcome = with_step_up(|| trust_mailu_admin(tenant.get_value(), email.get_value(), text.clone())).await;
                                        match outcome {
                                            Ok(_) => refresh.update(|n| *n += 1),
                                            Err(e) => error.set(Some(e.message)),
                                        }
                                    });
                                };
                                let unknown = a.status == "unknown" && a.gone_at.is_none();
                                view! {
                                    <li data-testid="mailu-admin" data-status=a.status.clone()>
                                        <strong>{a.email.clone()}</strong>
                                        " "<span class=format!("state state-mailu-{}", a.status)>{match a.status.as_str() {
                                            "console" => "the console's account".to_owned(),
                                            "known" => format!("known ({})", a.note.clone().unwrap_or_default()),
                                            _ => "UNKNOWN".to_owned(),
                                        }}</span>
                                        {a.gone_at.map(|t| view! { " "<small>{format!("gone since {}", date(Some(t)))}</small> })}
                                        {(unknown && may(me, Permission::TrustMailuAdmins)).then(|| view! {
                                            <form class="inline-form" on:submit=trust>
                                                <input required minlength="3" maxlength="500" aria-label="Why this account is legitimate" placeholder="why it is legitimate" bind:value=note />
                                                <button type="submit" class="secondary" data-testid="trust-admin">"Mark as known"</button>
                                            </form>
                                        })}
                                    </li>
                                }
                            }).collect_view()}
                        </ul>
                    }.into_any(),
                })}
            </Transition>
            {move || error.get().map(|m| view! { <p class="error" role="alert">{m}</p> })}
        </section>
    }
}

/// Settings: rotation period, contact for notices, Mailu API URL and token, rotate after
/// reveal; and a one-time deferral of the next rotation. Editable by platform admins.
#[component]
fn SettingsPanel(tenant_id: String) -> impl IntoView {
    let me = use_me();
    let tenant = StoredValue::new(tenant_id);
    let refresh = RwSignal::new(0u32);
    let settings = Resource::new(move || refresh.get(), move |_| tenant_settings(tenant.get_value()));
    let (period, contact, url, token, after) = (
        RwSignal::new(String::new()),
        RwSignal::new(String::new()),
        RwSignal::new(String::new()),
        RwSignal::new(String::new()),
        RwSignal::new(false),
    );
    let four_eyes = RwSignal::new(false);
    let reveal_notice = RwSignal::new("off".to_owned());
    let (length, alphabet) = (RwSignal::new(String::new()), RwSignal::new(String::new()));
    let (days, why) = (RwSignal::new("7".to_owned()), RwSignal::new(String::new()));
    let error = RwSignal::new(None::<String>);
    let notice = RwSignal::new(None::<String>);
    // The form appears only once the stored values are in its fields: otherwise whatever a
    // person typed before the load finished would be overwritten by them, and saved blank.
    let loaded = RwSignal::new(false);
    let load_error = RwSignal::new(None::<String>);
    Effect::new(move |_| match settings.get() {
        Some(Ok(s)) => {
            period.set(s.rotation_period_days.to_string());
            contact.set(s.contact_email.clone().unwrap_or_default());
            url.set(s.mailu_api_url.clone());
            after.set(s.rotate_after_reveal);
            four_eyes.set(s.reveal_approval);
            reveal_notice.set(s.reveal_notice.as_str().to_owned());
            length.set(s.password_policy.length.to_string());
            alphabet.set(s.password_policy.alphabet.as_str().to_owned());
            load_error.set(None);
            loaded.set(true);
        }
        Some(Err(e)) => load_error.set(Some(e.message)),
        None => {}
    });
    let save = move |ev: leptos::ev::SubmitEvent| {
        ev.prevent_default();
        let days_value = period.get_untracked().trim().parse::<u32>().unwrap_or(0);
        let (c, u, t, a) = (contact.get_untracked(), url.get_untracked(), token.get_untracked(), after.get_untracked());
        let f = four_eyes.get_untracked();
        let told = reveal_notice.get_untracked();
        // An unreadable length is sent as 0, which the server refuses naming the allowed range.
        let (n, abc) = (length.get_untracked().trim().parse::<u16>().unwrap_or(0), alphabet.get_untracked());
        spawn_local(async move {
            let save = || {
                update_tenant_settings(
                    tenant.get_value(),
                    days_value,
                    c.clone(),
                    u.clone(),
                    t.clone(),
                    a,
                    f,
                    n,
                    abc.clone(),
                    told.clone(),
                )
            };
            // A new Mailu API URL (where the passwords go), or switching four eyes, asks for
            // the passkey first.
            match with_step_up(save).await {
                Ok(_) => {
                    token.set(String::new());
                    error.set(None);
                    notice.set(Some("Settings saved.".into()));
                    refresh.update(|n| *n += 1);
                }
                Err(e) => error.set(Some(e.message)),
            }
        });
    };
    let defer = move |ev: leptos::ev::SubmitEvent| {
        ev.prevent_default();
        let (d, r) = (days.get_untracked().parse::<u32>().unwrap_or(0), why.get_untracked());
        spawn_local(async move {
            match defer_rotation(tenant.get_value(), d, r).await {
                Ok(()) => {
                    error.set(None);
                    notice.set(Some("Next rotation deferred.".into()));
                }
                Err(e) => error.set(Some(e.message)),
            }
        });
    };
    view! {
        // A load that failed says so, instead of leaving the panel out without a word.
        {move || load_error.get().filter(|_| may(me, Permission::ConfigureTenants)).map(|m| view! {
            <p class="error" role="alert">"Settings could not be loaded: " {m}</p>
        })}
        {move || (may(me, Permission::ConfigureTenants) && loaded.get()).then(|| view! {
            <section class="card" aria-labelledby="settings-title">
                <h2 id="settings-title">"Settings"</h2>
                <form on:submit=save data-testid="settings">
                    <label>"Rotation period (days)" <input type="number" min="1" max="365" bind:value=period /></label>
                    <label>"Contact email for notices" <input type="email" bind:value=contact /></label>
                    <label>"Mailu API URL" <input type="url" required bind:value=url /></label>
                    <label>"New Mailu API token (leave empty to keep)" <input type="password" autocomplete="off" bind:value=token /></label>
                    <label class="check"><input type="checkbox" bind:checked=after />" Rotate as soon as a reveal window closes"</label>
                    <label class="check"><input type="checkbox" data-testid="four-eyes" bind:checked=four_eyes />
                        " Four eyes: a reveal needs a second platform admin's approval"</label>
                    <label>"Tell the tenant's contact when its password is revealed"
                        <select data-testid="reveal-notice" bind:value=reveal_notice>
                            <option value="off">"no"</option>
                            <option value="category">"yes: when, the role and the reason's category"</option>
                            <option value="reason">"yes, with the reason as written"</option>
                        </select>
                    </label>
                    <label>"Generated password length (20–128)"
                        <input type="number" min="20" max="128" data-testid="password-length" bind:value=length /></label>
                    <label>"Generated password characters"
                        <select data-testid="password-alphabet" bind:value=alphabet>
                            <option value="alphanumeric">"letters and digits (safe everywhere)"</option>
                            <option value="alphanumeric_symbols">"letters, digits and -_.~!*+="</option>
                        </select>
                    </label>
                    <button type="submit">"Save settings"</button>
                </form>
                <h3>"Defer the next rotation (once)"</h3>
                <form class="inline-form" on:submit=defer>
                    <input type="number" min="1" max="7" aria-label="Days" bind:value=days />
                    <input required minlength="3" placeholder="reason" aria-label="Reason" bind:value=why />
                    <button type="submit" class="secondary">"Defer"</button>
                </form>
                {move || error.get().map(|m| view! { <p class="error" role="alert">{m}</p> })}
                {move || notice.get().map(|m| view! { <p class="notice" role="status">{m}</p> })}
            </section>
        })}
    }
}

/// VPS failure: recover the tenant onto a replacement server (platform admins and incident
/// responders, with a passkey step-up).
#[component]
fn RecoveryPanel(tenant_id: String) -> impl IntoView {
    let me = use_me();
    let tenant = StoredValue::new(tenant_id);
    let (ip, url, port, token) = (
        RwSignal::new(String::new()),
        RwSignal::new(String::new()),
        RwSignal::new(String::new()),
        RwSignal::new(String::new()),
    );
    let busy = RwSignal::new(false);
    let error = RwSignal::new(None::<String>);
    let notice = RwSignal::new(None::<String>);
    let recover = move |ev: leptos::ev::SubmitEvent| {
        ev.prevent_default();
        busy.set(true);
        error.set(None);
        notice.set(None);
        let (i, u, t) = (ip.get_untracked(), url.get_untracked(), token.get_untracked());
        let p = port.get_untracked().trim().parse::<u16>().ok();
        spawn_local(async move {
            let outcome = with_ceremony(begin_recovery(tenant.get_value(), i, u, p), |a| {
                finish_recovery(tenant.get_value(), a, t)
            })
            .await;
            busy.set(false);
            match outcome {
                Ok(done) => {
                    token.set(String::new());
                    notice.set(Some(format!(
                        "Recovered onto {} (user {}); version {}; DNS hook {}; {} ms.",
                        done.new_address,
                        if done.created_user { "created" } else { "updated" },
                        done.version,
                        done.dns_hook,
                        done.duration_ms
                    )));
                }
                Err(message) => error.set(Some(message)),
            }
        });
    };
    view! {
        {move || may(me, Permission::RecoverTenant).then(|| view! {
            <section class="card" aria-labelledby="recover-title">
                <h2 id="recover-title">"Recover onto a replacement server"</h2>
                <p>"When the tenant's mail server is lost: sets the stored password on the new Mailu (creating the admin user if needed), proves an SMTP login there and tells DNS."</p>
                <form class="stack" on:submit=recover data-testid="recover-form">
                    <label>"New server address" <input required placeholder="203.0.113.7" bind:value=ip /></label>
                    <label>"New Mailu API URL" <input type="url" required bind:value=url /></label>
                    <label>"SMTP port (empty: unchanged)" <input type="number" min="1" max="65535" bind:value=port /></label>
                    <label>"New Mailu API token (empty: unchanged)" <input type="password" autocomplete="off" bind:value=token /></label>
                    <button type="submit" class="danger" disabled=move || busy.get()>
                        {move || if busy.get() { "Confirm with your passkey…" } else { "Recover with passkey" }}
                    </button>
                </form>
                {move || error.get().map(|m| view! { <p class="error" role="alert">{m}</p> })}
                {move || notice.get().map(|m| view! { <p class="notice" role="status">{m}</p> })}
            </section>
        })}
    }
}
