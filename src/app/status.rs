//! Console status for the UI: whether the page is interactive (hydrated) and whether the
//! database and Vault answer, fetched through a server function.

use leptos::prelude::*;
use serde::{Deserialize, Serialize};

/// What the status card shows; no tenant data.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReadinessView {
    /// The database answers.
    pub database: bool,
    /// Vault's health name.
    pub vault: String,
    /// Both are usable.
    pub ready: bool,
}

/// Database and Vault readiness (same facts as `/readyz`).
#[server(prefix = "/_app", endpoint = "readiness")]
pub async fn readiness() -> Result<ReadinessView, crate::model::UiError> {
    let core: crate::core::Core = expect_context();
    let r = core.shared_readiness().await;
    Ok(ReadinessView { database: r.database, vault: r.vault.as_str().to_owned(), ready: r.ready() })
}

/// Says "server-rendered" until the browser has hydrated the page, then "interactive": the
/// end-to-end journeys' signal that the page answers clicks. Hidden from people.
#[component]
pub fn HydrationBadge() -> impl IntoView {
    let hydrated = RwSignal::new(false);
    // Effects run only in the browser, so this flips exactly when hydration has happened.
    Effect::new(move |_| hydrated.set(true));
    view! {
        // A test hook, not for people: present in the page (the journeys wait on it), never seen
        // or read out.
        <span class="visually-hidden" aria-hidden="true" data-testid="hydration" data-hydrated=move || hydrated.get().to_string()>
            {move || if hydrated.get() { "interactive" } else { "server-rendered" }}
        </span>
    }
}

/// A card with the dependencies' state and a button that asks again.
#[component]
pub fn ReadinessCard() -> impl IntoView {
    let checks = RwSignal::new(0u32);
    let status = Resource::new(move || checks.get(), |_| readiness());
    view! {
        <section class="card" aria-labelledby="readiness-title">
            <h2 id="readiness-title">"Console status"</h2>
            <Transition fallback=|| view! { <p>"Checking…"</p> }>
                {move || {
                    status
                        .get()
                        .map(|answer| match answer {
                            Ok(r) => {
                                view! {
                                    <dl class="facts" data-testid="readiness" data-checks=move || checks.get().to_string()>
                                        <dt>"Database"</dt>
                                        <dd>{if r.database { "reachable" } else { "unreachable" }}</dd>
                                        <dt>"Vault"</dt>
                                        <dd>{r.vault.clone()}</dd>
                                        <dt>"Ready"</dt>
                                        <dd>{if r.ready { "yes" } else { "no" }}</dd>
                                    </dl>
                                }
                                    .into_any()
                            }
                            Err(_) => view! { <p class="error">"Status unavailable."</p> }.into_any(),
                        })
                }}
            </Transition>
            <button type="button" data-testid="recheck" on:click=move |_| checks.update(|n| *n += 1)>
                "Check again"
            </button>
        </section>
    }
}
