//! The UI's two step-ups, each written once. An action that needs its own passkey ceremony
//! (reveal, rotate, reset, recover, restore) runs through [`with_ceremony`]; a sensitive change
//! runs through [`with_step_up`], which asks for the passkey only when the server answers
//! `step_up_required` (opening a short window for this session) and runs the change once more.
//! The server decides both; these only drive the prompts.

use crate::app::browser;
use crate::app::server_fns::{begin_confirm, finish_confirm};
use crate::model::UiError;
use std::future::Future;

/// Runs `change`, confirming with a passkey first when the server asks for it.
///
/// # Errors
/// The change's error, or why the confirmation failed.
pub async fn with_step_up<T, F, Fut>(change: F) -> Result<T, UiError>
where
    F: Fn() -> Fut,
    Fut: Future<Output = Result<T, UiError>>,
{
    match change().await {
        Err(e) if e.code == crate::model::ErrorCode::StepUpRequired => {
            let options = begin_confirm().await?;
            let credential = browser::get_assertion(options)
                .await
                .map_err(|m| UiError::new(crate::model::ErrorCode::StepUpFailed, m))?;
            finish_confirm(credential).await?;
            change().await
        }
        other => other,
    }
}

/// Runs an action confirmed by its own passkey ceremony: `begin` on the server returns the
/// challenge (bound to this session and to what is confirmed), the browser asks for the passkey,
/// and `finish` on the server runs the action as confirmed.
///
/// # Errors
/// A message to show: the server's refusal, or why the passkey prompt failed.
pub async fn with_ceremony<T, B, F, Fut>(begin: B, finish: F) -> Result<T, String>
where
    B: Future<Output = Result<String, UiError>>,
    F: FnOnce(String) -> Fut,
    Fut: Future<Output = Result<T, UiError>>,
{
    let options = begin.await.map_err(|e| e.message)?;
    let assertion = browser::get_assertion(options).await?;
    finish(assertion).await.map_err(|e| e.message)
}
