//! The step-up a sensitive change asks for: run the change; when the server answers
//! `step_up_required`, ask for the passkey (which opens a short window for this session on the
//! server) and run it once more. The server decides; this only saves a second click.

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
