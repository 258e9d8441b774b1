//! Admins: one's own passkeys (add, rename, remove — never the last) for everyone; inviting,
//! revoking invites, role changes and disabling for platform admins (enforced by the server).
//! Each of these changes asks for a passkey confirmation first (a step-up of this session).

use crate::app::browser;
use crate::app::confirm::with_step_up;
use crate::app::pages::credentials::SignInPrompt;
use crate::app::server_fns::{
    begin_add_passkey, change_role, create_invite, disable_admin, finish_add_passkey, list_admins, list_invites,
    remove_passkey, rename_passkey, revoke_invite,
};
use crate::app::session::{may, use_me};
use crate::app::when;
use crate::model::{InviteCreatedView, Permission, Role};
use leptos::prelude::*;
use leptos::task::spawn_local;

/// `/admins`.
#[component]
pub fn AdminsPage() -> impl IntoView {
    let me = use_me();
    view! {
        <h1>"Admins"</h1>
        <p class="purpose">"Who may sign in, with which role and passkeys."</p>
        <Transition fallback=|| view! { <p>"Loading…"</p> }>
            {move || match me.get() {
                Some(Ok(Some(_))) => Some(view! {
                    <MyPasskeys />
                    {move || may(me, Permission::OverseeAdmins).then(|| view! { <ManageAdmins /> })}
                }.into_any()),
                Some(_) => Some(view! { <SignInPrompt /> }.into_any()),
                None => None,
            }}
        </Transition>
    }
}

#[component]
fn MyPasskeys() -> impl IntoView {
    let me = use_me();
    let new_name = RwSignal::new("Backup passkey".to_owned());
    let error = RwSignal::new(None::<String>);
    let run = move |task: std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), String>>>>| {
        spawn_local(async move {
            match task.await {
                Ok(()) => {
                    error.set(None);
                    me.refetch();
                }
                Err(m) => error.set(Some(m)),
            }
        });
    };
    let add = move |_| {
        let name = new_name.get_untracked();
        run(Box::pin(async move {
            let options = with_step_up(begin_add_passkey).await.map_err(|e| e.message)?;
            let credential = browser::create_credential(options).await?;
            finish_add_passkey(credential, name).await.map(|_| ()).map_err(|e| e.message)
        }));
    };
    view! {
        <section class="card" aria-labelledby="passkeys-title">
            <h2 id="passkeys-title">"My passkeys"</h2>
            <ul class="passkeys" data-testid="passkeys">
                {move || me.get().and_then(Result::ok).flatten().map(|admin| admin.passkeys.into_iter().map(|p| {
                    let name = RwSignal::new(p.name.clone());
                    let (rename_id, remove_id) = (p.passkey_id.clone(), p.passkey_id.clone());
                    view! {
                        <li>
                            <input aria-label="Passkey name" bind:value=name />
                            <button type="button" class="secondary" on:click=move |_| {
                                let (id, n) = (rename_id.clone(), name.get_untracked());
                                run(Box::pin(async move {
                                    with_step_up(|| rename_passkey(id.clone(), n.clone())).await.map_err(|e| e.message)
                                }));
                            }>"Rename"</button>
                            <button type="button" class="danger" on:click={
                                let remove_id = remove_id.clone();
                                move |_| {
                                    let id = remove_id.clone();
                                    run(Box::pin(async move {
                                        with_step_up(|| remove_passkey(id.clone(), false)).await.map_err(|e| e.message)
                                    }));
                                }
                            }>"Remove"</button>
                            <button type="button" class="danger" data-testid="remove-lost"
                                title="Also rotates every password you could see while a thief may have held this key"
                                on:click=move |_| {
                                let id = remove_id.clone();
                                run(Box::pin(async move {
                                    with_step_up(|| remove_passkey(id.clone(), true)).await.map_err(|e| e.message)
                                }));
                            }>"Remove as lost"</button>
                            <small>{p.last_used_at.map_or_else(|| "never used".to_owned(), |t| format!("last used {}", when::minutes(t)))}</small>
                        </li>
                    }
                }).collect_view())}
            </ul>
            <p class="inline-form">
                <input aria-label="New passkey name" bind:value=new_name />
                <button type="button" on:click=add>"Add a passkey"</button>
            </p>
            {move || error.get().map(|m| view! { <p class="error" role="alert">{m}</p> })}
        </section>
    }
}

#[component]
fn ManageAdmins() -> impl IntoView {
    let me = use_me();
    let refresh = RwSignal::new(0u32);
    let admins = Resource::new(move || refresh.get(), |_| list_admins());
    let invites = Resource::new(move || refresh.get(), |_| list_invites());
    let email = RwSignal::new(String::new());
    let role = RwSignal::new(Role::SecurityReviewer.as_str().to_owned());
    let invite = RwSignal::new(None::<InviteCreatedView>);
    let error = RwSignal::new(None::<String>);
    let send_invite = move |ev: leptos::ev::SubmitEvent| {
        ev.prevent_default();
        let (mail, chosen) =
            (email.get_untracked(), role.get_untracked().parse::<Role>().unwrap_or(Role::SecurityReviewer));
        spawn_local(async move {
            match with_step_up(|| create_invite(mail.clone(), chosen)).await {
                Ok(created) => {
                    error.set(None);
                    email.set(String::new());
                    invite.set(Some(created));
                    refresh.update(|n| *n += 1);
                }
                Err(e) => error.set(Some(e.message)),
            }
        });
    };
    let act = move |task: std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), crate::model::UiError>>>>| {
        spawn_local(async move {
            match task.await {
                Ok(()) => {
                    error.set(None);
                    refresh.update(|n| *n += 1);
                    me.refetch();
                }
                Err(e) => error.set(Some(e.message)),
            }
        });
    };
    let role_options =
        move || Role::ALL.into_iter().map(|r| view! { <option value=r.as_str()>{r.label()}</option> }).collect_view();
    view! {
        <section class="card" aria-labelledby="invite-title">
            <h2 id="invite-title">"Invite an admin"</h2>
            <form class="inline-form" on:submit=send_invite>
                <input type="email" required placeholder="email" aria-label="Email" bind:value=email />
                <select aria-label="Role" bind:value=role>{role_options}</select>
                <button type="submit">"Create invite link"</button>
            </form>
            {move || invite.get().map(|i| view! {
                <p class="notice" data-testid="invite-link">
                    "One-time link for " {i.email.clone()} " (" {i.role.label()} "), valid until "
                    {format!("{} UTC", when::minutes(i.expires_at))} ": "
                    <code>{i.link.clone()}</code>
                </p>
            })}
            {move || error.get().map(|m| view! { <p class="error" role="alert">{m}</p> })}
            <Transition fallback=|| ()>
                {move || invites.get().and_then(Result::ok).filter(|l| !l.is_empty()).map(|list| view! {
                    <h3>"Open invites"</h3>
                    <ul class="invites" data-testid="invites">
                        {list.into_iter().map(|i| {
                            let id = i.invite_id.clone();
                            view! {
                                <li>
                                    {i.email.clone()} " (" {i.role.label()} "), valid until "
                                    {format!("{} UTC", when::minutes(i.expires_at))} " "
                                    <button type="button" class="danger" on:click=move |_| {
                                        let id = id.clone();
                                        act(Box::pin(async move { with_step_up(|| revoke_invite(id.clone())).await }));
                                    }>"Revoke"</button>
                                </li>
                            }
                        }).collect_view()}
                    </ul>
                })}
            </Transition>
        </section>
        <section class="card" aria-labelledby="admins-title">
            <h2 id="admins-title">"All admins"</h2>
            <Transition fallback=|| view! { <p>"Loading…"</p> }>
                {move || admins.get().map(|answer| match answer {
                    Err(e) => view! { <p class="error">{e.message}</p> }.into_any(),
                    Ok(list) => view! {
                        <table class="table" data-testid="admins">
                            <thead><tr><th>"Email"</th><th>"Name"</th><th>"Role"</th><th>"Status"</th><th></th></tr></thead>
                            <tbody>
                                {list.into_iter().map(|a| {
                                    let (id_role, id_disable) = (a.admin_id.clone(), a.admin_id.clone());
                                    let current = RwSignal::new(a.role.as_str().to_owned());
                                    view! {
                                        <tr>
                                            <td>{a.email.clone()}</td>
                                            <td>{a.display_name.clone()}</td>
                                            <td>
                                                <select aria-label="Role" prop:value=move || current.get() on:change=move |ev| {
                                                    let chosen = event_target_value(&ev);
                                                    current.set(chosen.clone());
                                                    let id = id_role.clone();
                                                    if let Ok(r) = chosen.parse::<Role>() {
                                                        act(Box::pin(async move { with_step_up(|| change_role(id.clone(), r)).await }));
                                                    }
                                                }>{role_options}</select>
                                            </td>
                                            <td>{if a.active { "active" } else { "disabled" }}</td>
                                            <td>{a.active.then(|| view! {
                                                <button type="button" class="danger" on:click=move |_| {
                                                    let id = id_disable.clone();
                                                    act(Box::pin(async move { with_step_up(|| disable_admin(id.clone())).await }));
                                                }>"Disable"</button>
                                            })}</td>
                                        </tr>
                                    }
                                }).collect_view()}
                            </tbody>
                        </table>
                    }.into_any(),
                })}
            </Transition>
        </section>
    }
}
