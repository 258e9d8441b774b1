//! What a server function needs from its request: the core, the actor (from the session,
//! re-checked on every call), the client facts and the session itself; and the conversion of
//! core errors into the UI's error type with the matching HTTP status.

use crate::core::{Actor, ClientInfo, Core, Error};
use crate::model::{TenantId, UiError};
use crate::web::error::ApiFailure;
use crate::web::extract::Client;
use crate::web::session;
use axum::http::{HeaderValue, header};
use leptos::prelude::use_context;
use leptos_axum::ResponseOptions;
use tower_sessions::Session;

/// The request context of a server function.
pub struct UiContext {
    /// The core.
    pub core: Core,
    /// Who is calling (`Anonymous` without a valid session).
    pub actor: Actor,
    /// Peer facts for the audit log.
    pub client: ClientInfo,
    /// The browser session.
    pub session: Session,
}

/// Converts an error to the UI form and sets the response status to match.
pub fn fail(error: impl Into<ApiFailure>) -> UiError {
    let failure: ApiFailure = error.into();
    if let Some(response) = use_context::<ResponseOptions>() {
        response.set_status(failure.status());
    }
    UiError::new(failure.code(), failure.message())
}

impl UiContext {
    /// Loads the context; a session whose admin is gone, disabled or past 12 hours is ended.
    ///
    /// # Errors
    /// When the request lacks the session layer or the core (a wiring bug).
    pub async fn load() -> Result<Self, UiError> {
        let core = use_context::<Core>().ok_or_else(|| fail(Error::Internal("core missing from context".into())))?;
        let (session, Client(mut client)) = leptos_axum::extract::<(Session, Client)>()
            .await
            .map_err(|_| fail(Error::Internal("session layer missing".into())))?;
        // Step-up and reveal windows belong to the session they were earned in.
        client.session = session::existing_binding(&session).await;
        let actor = match session::admin(&session).await {
            None => Actor::Anonymous,
            Some(stored) => match core.authenticate_session(&stored).await {
                Ok(actor) => actor,
                Err(Error::Unauthenticated) => {
                    session::sign_out(&session).await;
                    Actor::Anonymous
                }
                Err(e) => return Err(fail(e)),
            },
        };
        Ok(Self { core, actor, client, session })
    }

    /// The session's ceremony binding, or a fresh one that is not stored yet: anonymous calls
    /// (a login for a made-up email, an unknown invite, any call without a session) must write
    /// no session row. A signed-in session always has one (set at sign-in); a ceremony that
    /// starts a session stores its own with [`UiContext::keep_binding`] once the core accepts.
    ///
    /// # Errors
    /// When randomness is unavailable.
    pub async fn binding(&self) -> Result<crate::core::access::passkeys::SessionBinding, UiError> {
        match session::existing_binding(&self.session).await {
            Some(existing) => Ok(existing),
            None => crate::core::access::passkeys::SessionBinding::generate().map_err(fail),
        }
    }

    /// Stores `binding` in the session unless it is already there.
    ///
    /// # Errors
    /// Session store failures.
    pub async fn keep_binding(&self, binding: &crate::core::access::passkeys::SessionBinding) -> Result<(), UiError> {
        session::keep_binding(&self.session, binding).await.map_err(fail)
    }

    /// Signs the actor in on this session (new session id).
    ///
    /// # Errors
    /// Session store failures.
    pub async fn sign_in(&self, actor: &Actor) -> Result<(), UiError> {
        let Actor::Admin { admin_id, .. } = actor else { return Err(fail(Error::Unauthenticated)) };
        session::sign_in(&self.session, admin_id, chrono::Utc::now().timestamp_millis()).await.map_err(fail)
    }

    /// Ends the session.
    pub async fn sign_out(&self) {
        session::sign_out(&self.session).await;
    }
}

/// Validates a tenant id from the UI.
///
/// # Errors
/// 400 `invalid_tenant_id`.
pub fn tenant(id: &str) -> Result<TenantId, UiError> {
    TenantId::parse(id).map_err(|_| fail(ApiFailure::invalid_tenant_id()))
}

/// Marks the response as not cacheable (it carries a secret).
pub fn no_store() {
    if let Some(response) = use_context::<ResponseOptions>() {
        response.insert_header(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
}
