//! The passkey ceremony every step-up runs: begun for a purpose (and tenant) in this session,
//! finished once, audited either way.

use super::parse_json;
use crate::core::Core;
use crate::core::access::{Actor, ClientInfo};
use crate::core::audit::{self, EventType, NewEvent, Severity};
use crate::core::error::{Error, Result};
use crate::core::passkeys::{Binding, Purpose, SessionBinding};
use serde_json::{Value, json};
use webauthn_rs::prelude::{PasskeyAuthentication, PublicKeyCredential};

impl Core {
    /// Starts a step-up re-authentication for `purpose`, bound to this session (and tenant).
    /// Returns the WebAuthn request options (JSON).
    pub(crate) async fn begin_reauth(
        &self,
        actor: &Actor,
        session: &SessionBinding,
        purpose: Purpose,
        tenant_id: Option<&str>,
        context: Value,
    ) -> Result<String> {
        let Actor::Admin { admin_id, .. } = actor else {
            return Err(Error::Unauthenticated);
        };
        self.rate_limited(&[(&self.limits.reauth, admin_id)])?;
        let passkeys = self.passkeys_of(admin_id).await?;
        let rp = self.relying_party()?;
        let (challenge, state) = rp
            .webauthn()
            .start_passkey_authentication(&passkeys.into_iter().map(|(_, p)| p).collect::<Vec<_>>())
            .map_err(|e| Error::Internal(format!("webauthn: {e}")))?;
        let binding = Binding { session, purpose, admin_id: Some(admin_id), tenant_id };
        rp.store(&self.db, binding, context, &state, self.now()).await?;
        serde_json::to_string(&challenge).map_err(|e| Error::Internal(e.to_string()))
    }

    /// Finishes a step-up: takes the ceremony for this session, purpose and tenant and checks
    /// the assertion. `Ok(Err(reason))` is a refusal the caller audits.
    pub(crate) async fn finish_reauth(
        &self,
        actor: &Actor,
        session: &SessionBinding,
        purpose: Purpose,
        tenant_id: Option<&str>,
        credential_json: &str,
    ) -> Result<std::result::Result<(String, Value), &'static str>> {
        let Actor::Admin { admin_id, .. } = actor else {
            return Err(Error::Unauthenticated);
        };
        let credential: PublicKeyCredential = parse_json(credential_json)?;
        let rp = self.relying_party()?;
        let binding = Binding { session, purpose, admin_id: Some(admin_id), tenant_id };
        let Some(taken) = rp.take::<PasskeyAuthentication>(&self.db, binding, self.now()).await? else {
            return Ok(Err("no_challenge_in_progress"));
        };
        if taken.expired {
            return Ok(Err("challenge_expired"));
        }
        let verified = self.verify_assertion(admin_id, &taken.state, &credential).await;
        if let Ok(passkey_id) = &verified {
            self.flag_new_passkey(actor, passkey_id).await?;
        }
        Ok(verified.map(|id| (id, taken.context)))
    }

    /// Finishes a step-up and records it either way: a refusal is audited `reauth_failed`
    /// (warning, with the cause) and answered [`Error::Unauthenticated`]; a success is audited
    /// `reauth_succeeded` with the passkey used. Returns the passkey id and the ceremony's
    /// context (what the admin confirmed).
    ///
    /// # Errors
    /// [`Error::Unauthenticated`]; database errors.
    pub(crate) async fn finish_step_up(
        &self,
        actor: &Actor,
        session: &SessionBinding,
        client: &ClientInfo,
        purpose: Purpose,
        tenant: Option<&crate::model::TenantId>,
        credential_json: &str,
    ) -> Result<(String, Value)> {
        let outcome = self
            .finish_reauth(actor, session, purpose, tenant.map(crate::model::TenantId::as_str), credential_json)
            .await?;
        let (event, found) = match outcome {
            Ok((passkey_id, context)) => (
                NewEvent::info(
                    EventType::ReauthSucceeded,
                    tenant,
                    json!({"purpose": purpose.as_str(), "passkey_id": passkey_id}),
                ),
                Some((passkey_id, context)),
            ),
            Err(cause) => (
                NewEvent::info(EventType::ReauthFailed, tenant, json!({"purpose": purpose.as_str(), "reason": cause}))
                    .with_severity(Severity::Warning),
                None,
            ),
        };
        audit::record(&self.db, actor, client, event, self.now()).await?;
        found.ok_or(Error::Unauthenticated)
    }
}
