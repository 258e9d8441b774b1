//! Backups: the encrypted backups in the target, a restore (platform admins, passkey step-up)
//! with its progress and report, and the history of disaster-recovery drills. Controls are
//! shown by role; the server decides.

use crate::app::confirm::with_ceremony;
use crate::app::server_fns::{begin_restore, finish_restore, list_backups, list_drills, restore_status};
use crate::app::session::{may, use_me};
use crate::app::when;
use crate::model::{Permission, RestoreStatusView};
use chrono::{DateTime, Utc};
use leptos::prelude::*;
use leptos::task::spawn_local;

fn date(t: Option<DateTime<Utc>>) -> String {
    t.map_or_else(|| "—".to_owned(), |t| format!("{} UTC", when::seconds(t)))
}

/// `/backups`.
#[component]
pub fn BackupsPage() -> impl IntoView {
    let me = use_me();
    view! {
        <h1>"Backups"</h1>
        <p class="purpose">"Encrypted backups, verified restores and disaster-recovery drills."</p>
        <Transition fallback=|| view! { <p>"Loading…"</p> }>
            {move || match me.get() {
                None => None,
                Some(Ok(None)) | Some(Err(_)) => Some(view! { <super::credentials::SignInPrompt /> }.into_any()),
                Some(Ok(Some(_))) => Some(view! {
                    <BackupList />
                    <DrillList />
                }.into_any()),
            }}
        </Transition>
    }
}

#[component]
fn BackupList() -> impl IntoView {
    let me = use_me();
    let backups = Resource::new(|| (), |()| list_backups());
    let chosen = RwSignal::new(String::new());
    let dry_run = RwSignal::new(true);
    let force = RwSignal::new(false);
    let error = RwSignal::new(None::<String>);
    let status = RwSignal::new(None::<RestoreStatusView>);
    let ticker = StoredValue::new(None::<IntervalHandle>);
    let poll = move || {
        spawn_local(async move {
            match restore_status().await {
                Ok(now) => {
                    let finished = now.as_ref().is_none_or(|s| !s.running);
                    status.set(now);
                    if finished && let Some(handle) = ticker.get_value() {
                        handle.clear();
                        ticker.set_value(None);
                    }
                }
                Err(e) => error.set(Some(e.message)),
            }
        });
    };
    let restore = move |ev: leptos::ev::SubmitEvent| {
        ev.prevent_default();
        error.set(None);
        let (id, dry, forced) = (chosen.get_untracked(), dry_run.get_untracked(), force.get_untracked());
        spawn_local(async move {
            let outcome = with_ceremony(begin_restore(id, dry, forced), finish_restore).await;
            match outcome {
                Ok(started) => {
                    status.set(Some(started));
                    // The server reports progress; the page asks twice a second until done.
                    let handle = set_interval_with_handle(poll, std::time::Duration::from_millis(500)).ok();
                    ticker.set_value(handle);
                }
                Err(message) => error.set(Some(message)),
            }
        });
    };
    view! {
        <section class="card" aria-labelledby="backups-title">
            <h2 id="backups-title">"Backups"</h2>
            <p>"Daily at 02:00 UTC and with " <code>"smtp-vault backup run"</code> "; 30 daily and 12 monthly are kept. Each is sealed with the backup key, which is kept apart."</p>
            <Transition fallback=|| view! { <p>"Loading…"</p> }>
                {move || backups.get().map(|answer| match answer {
                    Err(e) => view! { <p class="error">{e.message}</p> }.into_any(),
                    Ok(list) if list.is_empty() => view! { <p>"No backups yet."</p> }.into_any(),
                    Ok(list) => view! {
                        <table class="table" data-testid="backups">
                            <thead><tr><th>"Backup"</th><th>"Made"</th><th>"Tenants"</th><th>"Bytes"</th><th>"Key"</th></tr></thead>
                            <tbody>
                                {list.into_iter().map(|b| view! {
                                    <tr>
                                        <td>{b.id.clone()}</td>
                                        <td>{date(b.created_at)}</td>
                                        <td>{b.tenants.map(|n| n.to_string()).unwrap_or_default()}</td>
                                        <td>{b.size.map(|n| n.to_string()).unwrap_or_default()}</td>
                                        <td><code>{b.key_id.unwrap_or_default()}</code></td>
                                    </tr>
                                }).collect_view()}
                            </tbody>
                        </table>
                    }.into_any(),
                })}
            </Transition>
            {move || may(me, Permission::RestoreBackup).then(|| view! {
                <h3>"Restore"</h3>
                <form class="inline-form" on:submit=restore data-testid="restore-form">
                    <input required placeholder="YYYY-MM-DD" aria-label="Backup" bind:value=chosen />
                    <label class="check"><input type="checkbox" bind:checked=dry_run />" Dry run (check only)"</label>
                    <label class="check"><input type="checkbox" bind:checked=force />" Overwrite differing secrets"</label>
                    <button type="submit" class="danger" data-testid="restore">"Restore with passkey"</button>
                </form>
            })}
            {move || error.get().map(|m| view! { <p class="error" role="alert">{m}</p> })}
            {move || status.get().map(|s| view! { <RestoreProgress status=s /> })}
        </section>
    }
    .into_any()
}

#[component]
fn RestoreProgress(status: RestoreStatusView) -> impl IntoView {
    let total = status.total.max(1);
    view! {
        <div class="receipt" data-testid="restore-status" data-running=status.running.to_string()>
            <p>{format!("Backup {} — started {} by {}", status.backup_id, date(status.started_at), status.started_by)}</p>
            <progress max=total.to_string() value=status.done.to_string()></progress>
            <span>{format!(" {}/{} tenants", status.done, status.total)}</span>
            {status.error.clone().map(|e| view! { <p class="error" role="alert">{e}</p> })}
            {status.report.clone().map(|r| view! {
                <dl class="facts">
                    <dt>"Result"</dt>
                    <dd data-testid="restore-result">{format!(
                        "{}{} written, {} unchanged, {} skipped, {} failed; {} verified",
                        if r.dry_run { "dry run: " } else { "" }, r.written, r.unchanged, r.skipped.len(), r.failed.len(), r.verified
                    )}</dd>
                    <dt>"Journal"</dt><dd>{format!("{} record(s), up to {}", r.journal_records, date(r.restored_up_to))}</dd>
                    <dt>"Took"</dt><dd>{format!("{} ms (fetch {} ms, write and verify {} ms)", r.total_ms, r.fetch_ms, r.write_ms)}</dd>
                </dl>
                <ul>
                    {r.skipped.iter().map(|(t, why)| view! { <li>{format!("skipped {t}: {why}")}</li> }).collect_view()}
                    {r.failed.iter().map(|(t, why)| view! { <li class="error">{format!("FAILED {t}: {why}")}</li> }).collect_view()}
                </ul>
            })}
        </div>
    }
    .into_any()
}

#[component]
fn DrillList() -> impl IntoView {
    let drills = Resource::new(|| (), |()| list_drills());
    view! {
        <section class="card" aria-labelledby="drills-title">
            <h2 id="drills-title">"Disaster-recovery drills"</h2>
            <p>"Monthly, and with " <code>"smtp-vault dr drill"</code> ": the newest backup plus the journal restored into a scratch OpenBao, every tenant verified, RTO and RPO measured."</p>
            <Transition fallback=|| view! { <p>"Loading…"</p> }>
                {move || drills.get().map(|answer| match answer {
                    Err(e) => view! { <p class="error">{e.message}</p> }.into_any(),
                    Ok(list) if list.is_empty() => view! { <p>"No drills yet."</p> }.into_any(),
                    Ok(list) => view! {
                        <table class="table" data-testid="drills">
                            <thead><tr><th>"When"</th><th>"Backup"</th><th>"Verified"</th><th>"RTO"</th><th>"RPO"</th><th>"Result"</th></tr></thead>
                            <tbody>
                                {list.into_iter().map(|d| view! {
                                    <tr>
                                        <td>{date(Some(d.started_at))}</td>
                                        <td>{format!("{} + {} journal", d.backup_id.clone().unwrap_or_default(), d.journal_records)}</td>
                                        <td>{format!("{}/{}", d.verified, d.tenants)}</td>
                                        <td>{format!("{} ms", d.rto_ms)}</td>
                                        <td>{d.rpo_ms.map_or_else(|| "—".to_owned(), |r| format!("{r} ms ({} lost)", d.lost_changes))}</td>
                                        <td>{if d.ok { "passed".to_owned() } else { format!("FAILED: {}", d.problems.join("; ")) }}</td>
                                    </tr>
                                }).collect_view()}
                            </tbody>
                        </table>
                    }.into_any(),
                })}
            </Transition>
        </section>
    }
    .into_any()
}
