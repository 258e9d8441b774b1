//! Sign-in with a passkey, and enrollment of the first passkey from an invite link.

use crate::app::browser;
use crate::app::server_fns::{begin_enrollment, begin_login, finish_enrollment, finish_login};
use crate::app::session::use_me;
use leptos::ev::SubmitEvent;
use leptos::prelude::*;
use leptos::task::spawn_local;
use leptos_router::hooks::{use_navigate, use_params_map};

type Flow = std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), String>>>>;

/// Runs a sign-in ceremony: shows it as busy, then goes to the tenant list signed in, or shows
/// the error.
fn sign_in_flow(busy: RwSignal<bool>, error: RwSignal<Option<String>>) -> impl Fn(Flow) + Clone {
    let me = use_me();
    let navigate = use_navigate();
    move |flow: Flow| {
        busy.set(true);
        error.set(None);
        let navigate = navigate.clone();
        spawn_local(async move {
            let outcome = flow.await;
            busy.set(false);
            match outcome {
                Ok(()) => {
                    me.refetch();
                    navigate("/", Default::default());
                }
                Err(message) => error.set(Some(message)),
            }
        });
    }
}

/// `/login`: email, then the passkey.
#[component]
pub fn LoginPage() -> impl IntoView {
    let email = RwSignal::new(String::new());
    let error = RwSignal::new(None::<String>);
    let busy = RwSignal::new(false);
    let sign_in = sign_in_flow(busy, error);
    let submit = move |ev: SubmitEvent| {
        ev.prevent_default();
        let email = email.get_untracked();
        sign_in(Box::pin(async move {
            let options = begin_login(email).await.map_err(|e| e.message)?;
            let credential = browser::get_assertion(options).await?;
            finish_login(credential).await.map(|_| ()).map_err(|e| e.message)
        }));
    };
    view! {
        <section class="card narrow" aria-labelledby="login-title">
            <h1 id="login-title">"Sign in"</h1>
            <p class="purpose">"Use the passkey you enrolled from your invite."</p>
            <form on:submit=submit>
                <label>
                    "Email"
                    <input type="email" name="email" required autocomplete="username webauthn" bind:value=email />
                </label>
                <button type="submit" disabled=move || busy.get()>
                    {move || if busy.get() { "Waiting for your passkey…" } else { "Sign in with passkey" }}
                </button>
            </form>
            {move || error.get().map(|m| view! { <p class="error" role="alert">{m}</p> })}
        </section>
    }
}

/// `/enroll/:token`: name yourself and your passkey, then create it.
#[component]
pub fn EnrollPage() -> impl IntoView {
    let params = use_params_map();
    let display_name = RwSignal::new(String::new());
    let passkey_name = RwSignal::new("My passkey".to_owned());
    let error = RwSignal::new(None::<String>);
    let busy = RwSignal::new(false);
    let sign_in = sign_in_flow(busy, error);
    let submit = move |ev: SubmitEvent| {
        ev.prevent_default();
        let token = params.get_untracked().get("token").unwrap_or_default();
        let (name, key_name) = (display_name.get_untracked(), passkey_name.get_untracked());
        sign_in(Box::pin(async move {
            let options = begin_enrollment(token.clone(), name).await.map_err(|e| e.message)?;
            let credential = browser::create_credential(options).await?;
            finish_enrollment(token, credential, key_name).await.map(|_| ()).map_err(|e| e.message)
        }));
    };
    view! {
        <section class="card narrow" aria-labelledby="enroll-title">
            <h1 id="enroll-title">"Enroll your passkey"</h1>
            <p class="purpose">"This link works once and for 24 hours."</p>
            <form on:submit=submit>
                <label>"Your name" <input name="display_name" required maxlength="100" bind:value=display_name /></label>
                <label>"Name this passkey" <input name="passkey_name" required maxlength="60" bind:value=passkey_name /></label>
                <button type="submit" disabled=move || busy.get()>"Create passkey"</button>
            </form>
            {move || error.get().map(|m| view! { <p class="error" role="alert">{m}</p> })}
        </section>
    }
}
