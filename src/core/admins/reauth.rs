//! The passkey ceremony every step-up runs: begun for a purpose (and tenant) in this session,
//! finished once, audited either way.

use super::parse_json;
use crate::core::Core;
use crate::core::access::authorize_ceremony;
use crate::core::access::passkeys::{Binding, Purpose, SessionBinding};
use crate::core::access::stepup::Intent;
use crate::core::access::{Actor, ClientInfo};
use crate::core::audit::{self, EventType, NewEvent, Severity};
use crate::core::error::{Error, Result};
use crate::model::TenantId;
use serde_json::json;
use webauthn_rs::prelude::{PasskeyAuthentication, PublicKeyCredential};

impl Core {
    /// The one begin of every step-up: the table must send this admin through a ceremony for
    /// the intent's action; the ceremony is bound to this session (and tenant) and stores the
    /// intent. Returns the WebAuthn request options (JSON).
    ///
    /// # Errors
    /// Refusals of [`crate::core::access::authorize_ceremony`]; rate limits.
    pub(crate) async fn begin_step_up(
        &self,
        actor: &Actor,
        session: &SessionBinding,
        tenant: Option<&TenantId>,
        intent: &Intent,
    ) -> Result<String> {
        let Actor::Admin { admin_id, .. } = actor else {
            return Err(Error::Unauthenticated);
        };
        if let Some(permission) = intent.permission() {
            authorize_ceremony(actor, permission)?;
        }
        let (purpose, tenant_id) = (intent.purpose(), tenant.map(TenantId::as_str));
        let context = serde_json::to_value(intent).map_err(|e| Error::Internal(format!("step-up intent: {e}")))?;
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

    /// Finishes a step-up: takes the ceremony for this session, purpose and tenant, checks the
    /// assertion and reads back the intent it stored. `Ok(Err(reason))` is a refusal the caller
    /// audits.
    pub(crate) async fn finish_reauth(
        &self,
        actor: &Actor,
        session: &SessionBinding,
        purpose: Purpose,
        tenant_id: Option<&str>,
        credential_json: &str,
    ) -> Result<std::result::Result<(String, Intent), &'static str>> {
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
        // A ceremony stored by another build (or for another purpose) is never acted on.
        let Some(intent) =
            serde_json::from_value::<Intent>(taken.context).ok().filter(|intent| intent.purpose() == purpose)
        else {
            return Ok(Err("challenge_unreadable"));
        };
        let verified = self.verify_assertion(admin_id, &taken.state, &credential).await;
        if let Ok(passkey_id) = &verified {
            self.flag_new_passkey(actor, passkey_id).await?;
        }
        Ok(verified.map(|id| (id, intent)))
    }

    /// Finishes a step-up and records it either way: a refusal is audited `reauth_failed`
    /// (warning, with the cause) and answered [`Error::Unauthenticated`]; a success is audited
    /// `reauth_succeeded` with the passkey used. Returns the passkey id and the intent the admin
    /// confirmed.
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
    ) -> Result<(String, Intent)> {
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
