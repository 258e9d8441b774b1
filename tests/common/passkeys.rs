//! Admin helpers for tests: enrollment from an invite and assertions with a software
//! authenticator (webauthn-authenticator-rs `SoftPasskey`), driven through the core.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use smtp_vault::core::passkeys::SessionBinding;
use smtp_vault::core::{Actor, ClientInfo, Core};
use smtp_vault::model::Role;
use webauthn_authenticator_rs::WebauthnAuthenticator;
use webauthn_authenticator_rs::softpasskey::SoftPasskey;
use webauthn_rs::prelude::{CreationChallengeResponse, RequestChallengeResponse, Url};

pub const ORIGIN: &str = "http://localhost:3000";

/// An enrolled admin with their authenticator and browser session.
pub struct TestAdmin {
    pub actor: Actor,
    pub email: String,
    pub authenticator: SoftPasskey,
    pub session: SessionBinding,
}

impl TestAdmin {
    pub async fn enroll(core: &Core, email: &str, role: Role) -> Self {
        let invite = core.create_invite(&Actor::operator(), &ClientInfo::local(), email, role).await.unwrap();
        let token = invite.link.rsplit_once('/').unwrap().1.to_owned();
        let session = SessionBinding::generate().unwrap();
        let options = core.begin_enrollment(&session, &token, "Test Admin").await.unwrap();
        let mut authenticator = SoftPasskey::new(true);
        let credential = register(&mut authenticator, &options);
        let actor =
            core.finish_enrollment(&session, &ClientInfo::local(), &token, &credential, "soft key").await.unwrap();
        TestAdmin { actor, email: email.to_owned(), authenticator, session }
    }

    /// Answers a request-options JSON with this admin's authenticator.
    pub fn assert(&mut self, options_json: &str) -> String {
        let options: RequestChallengeResponse = serde_json::from_str(options_json).unwrap();
        let credential = self.authenticator.do_authentication(Url::parse(ORIGIN).unwrap(), options).unwrap();
        serde_json::to_string(&credential).unwrap()
    }
}

/// Registers a credential for creation-options JSON.
pub fn register(authenticator: &mut SoftPasskey, options_json: &str) -> String {
    let options: CreationChallengeResponse = serde_json::from_str(options_json).unwrap();
    let credential = authenticator.do_registration(Url::parse(ORIGIN).unwrap(), options).unwrap();
    serde_json::to_string(&credential).unwrap()
}
