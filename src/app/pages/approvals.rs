//! `/approvals`: reveal requests of four-eyes tenants — who asks, for which tenant, why, and
//! until when — with Approve and Deny for the other platform admins, each behind the
//! approver's own passkey. The requester sees their request without the buttons; the core
//! refuses them anyway.

use crate::app::confirm::with_ceremony;
use crate::app::server_fns::{begin_decide_reveal, finish_decide_reveal, list_reveal_requests};
use crate::app::session::{may, signed_in, use_me};
use crate::app::when;
use crate::model::{Permission, RevealRequestStatus, RevealRequestView};
use leptos::prelude::*;
use leptos::task::spawn_local;

fn status_text(status: RevealRequestStatus) -> &'static str {
    match status {
        RevealRequestStatus::Pending => "waiting",
        RevealRequestStatus::Approved => "approved",
        RevealRequestStatus::Denied => "denied",
        RevealRequestStatus::Expired => "lapsed",
        RevealRequestStatus::Withdrawn => "withdrawn",
    }
}

/// `/approvals`.
#[component]
pub fn ApprovalsPage() -> impl IntoView {
    let me = use_me();
    view! {
        <h1>"Reveal approvals"</h1>
        <p class="purpose">
            "Tenants marked four-eyes need a second platform admin before a password is shown. \
             Decide with your own passkey; the requester's 15-minute window opens on approval."
        </p>
        <Transition fallback=|| view! { <p>"Loading…"</p> }>
            {move || match me.get() {
                None => None,
                Some(Ok(None)) | Some(Err(_)) => Some(view! { <super::credentials::SignInPrompt /> }.into_any()),
                // Only roles that may see the requests ask for them (a refused call during server
                // rendering would turn the whole page into that error).
                Some(Ok(Some(admin))) if admin.role.may(Permission::ReadAudit) => {
                    Some(view! { <RequestList /> }.into_any())
                }
                Some(Ok(Some(_))) => Some(view! {
                    <section class="card"><p>"Reveal requests are for platform admins (who decide them) and security reviewers."</p></section>
                }.into_any()),
            }}
        </Transition>
    }
}

#[component]
fn RequestList() -> impl IntoView {
    let me = use_me();
    let refresh = RwSignal::new(0u32);
    let requests = Resource::new(move || refresh.get(), |_| list_reveal_requests(false));
    let error = RwSignal::new(None::<String>);
    let notice = RwSignal::new(None::<String>);
    let busy = RwSignal::new(None::<String>);
    let decide = move |request_id: String, approve: bool| {
        busy.set(Some(request_id.clone()));
        error.set(None);
        notice.set(None);
        spawn_local(async move {
            let id = request_id.clone();
            let outcome =
                with_ceremony(begin_decide_reveal(request_id.clone(), approve), |a| finish_decide_reveal(id, a)).await;
            busy.set(None);
            match outcome {
                Ok(view) => {
                    let done = if approve { "Approved" } else { "Denied" };
                    notice.set(Some(format!("{done}: {} for {}.", view.requester_email, view.tenant_id)));
                    refresh.update(|n| *n += 1);
                }
                Err(message) => {
                    error.set(Some(message));
                    refresh.update(|n| *n += 1);
                }
            }
        });
    };
    let my_email = move || signed_in(me).map(|a| a.email).unwrap_or_default();
    let row = move |r: RevealRequestView| {
        let pending = r.status == RevealRequestStatus::Pending;
        let own = r.requester_email == my_email();
        let can_decide = pending && !own && may(me, Permission::ApproveReveal);
        let (approve_id, deny_id, busy_id) = (r.request_id.clone(), r.request_id.clone(), r.request_id.clone());
        let decided = r.decided_by_email.clone().map(|who| {
            let at = r.decided_at.map(when::clock).unwrap_or_default();
            format!("{} by {who} at {at} UTC", status_text(r.status))
        });
        view! {
            <tr data-testid="reveal-request" data-status=status_text(r.status)>
                <td><a href=format!("/tenants/{}", r.tenant_id)>{r.tenant_id.to_string()}</a></td>
                <td>{r.requester_email.clone()}</td>
                <td class="reason">{r.reason.clone()}</td>
                <td>{format!("{} UTC", when::clock(r.created_at))}</td>
                <td>
                    {if pending {
                        format!("waiting until {} UTC", when::clock(r.expires_at))
                    } else {
                        decided.unwrap_or_else(|| status_text(r.status).to_owned())
                    }}
                </td>
                <td>
                    {can_decide.then(|| view! {
                        <button type="button" data-testid="approve"
                            disabled=move || busy.get().is_some_and(|b| b == busy_id)
                            on:click=move |_| decide(approve_id.clone(), true)>"Approve with passkey"</button>
                        <button type="button" class="danger" data-testid="deny"
                            on:click=move |_| decide(deny_id.clone(), false)>"Deny"</button>
                    })}
                    {(pending && own).then(|| view! { <span>"yours: another platform admin decides"</span> })}
                </td>
            </tr>
        }
    };
    view! {
        {move || error.get().map(|m| view! { <p class="error" role="alert">{m}</p> })}
        {move || notice.get().map(|m| view! { <p class="notice" role="status">{m}</p> })}
        <Transition fallback=|| view! { <p>"Loading…"</p> }>
            {move || requests.get().map(|answer| match answer {
                Err(e) => view! { <p class="error" role="alert">{e.message}</p> }.into_any(),
                Ok(list) if list.is_empty() => view! { <p data-testid="no-requests">"No reveal requests."</p> }.into_any(),
                Ok(list) => view! {
                    <table class="requests">
                        <thead><tr><th>"Tenant"</th><th>"Asked by"</th><th>"Reason"</th><th>"Asked"</th><th>"Status"</th><th></th></tr></thead>
                        <tbody>{list.into_iter().map(row).collect_view()}</tbody>
                    </table>
                }.into_any(),
            })}
        </Transition>
        <button type="button" class="secondary" on:click=move |_| refresh.update(|n| *n += 1)>"Refresh"</button>
    }
}
