//! Admin helpers for tests: enrollment from an invite and assertions with a software
//! authenticator (webauthn-authenticator-rs `SoftPasskey`), driven through the core.

use smtp_vault::core::access::passkeys::SessionBinding;
use smtp_vault::core::{Actor, ClientInfo, Core};
use smtp_vault::model::Role;
use webauthn_authenticator_rs::WebauthnAuthenticator;
use webauthn_authenticator_rs::softpasskey::SoftPasskey;
use webauthn_rs::prelude::{CreationChallengeResponse, RequestChallengeResponse, Url};

pub const ORIGIN: &str = "http://localhost:3000";

/// An enrolled admin with their authenticator and browser session.
pub struct TestAdmin {
    pub actor: Actor,
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
        TestAdmin { actor, authenticator, session }
    }

    /// The client facts of this admin's browser session (reveal and step-up windows are bound
    /// to it).
    pub fn client(&self) -> ClientInfo {
        ClientInfo { session: Some(self.session.clone()), ..ClientInfo::default() }
    }

    /// Confirms a passkey in this session: sensitive changes go through for a few minutes.
    pub async fn step_up(&mut self, core: &Core) {
        let options = core.begin_confirm(&self.actor, &self.session).await.unwrap();
        let credential = self.assert(&options);
        core.finish_confirm(&self.actor, &self.session, &self.client(), &credential).await.unwrap();
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

/// Calls a server function over HTTP (form-encoded, as the browser does).
pub async fn server_fn(client: &reqwest::Client, base: &str, name: &str, form: &[(&str, &str)]) -> (u16, String) {
    let response = client.post(format!("{base}/_app/{name}")).form(form).send().await.unwrap();
    (response.status().as_u16(), response.text().await.unwrap())
}

/// Enrolls an admin over HTTP (server functions + software authenticator); returns a client
/// whose cookie jar holds the signed-in session, and the authenticator.
pub async fn http_admin(env: &super::TestEnv, base: &str, email: &str, role: Role) -> (reqwest::Client, SoftPasskey) {
    let client = reqwest::Client::builder().cookie_store(true).build().unwrap();
    let invite = env.core.create_invite(&Actor::operator(), &ClientInfo::local(), email, role).await.unwrap();
    let token = invite.link.rsplit_once('/').unwrap().1.to_owned();
    let (status, body) =
        server_fn(&client, base, "begin_enrollment", &[("token", &token), ("display_name", "M")]).await;
    assert_eq!(status, 200, "{body}");
    let options: String = serde_json::from_str(&body).unwrap();
    let mut key = SoftPasskey::new(true);
    let credential = register(&mut key, &options);
    let form = [("token", token.as_str()), ("credential", credential.as_str()), ("passkey_name", "k")];
    let (status, body) = server_fn(&client, base, "finish_enrollment", &form).await;
    assert_eq!(status, 200, "{body}");
    (client, key)
}

/// Answers request-options JSON (as returned by a server function) with `key`.
pub fn answer(key: &mut SoftPasskey, options_body: &str) -> String {
    let options: String = serde_json::from_str(options_body).unwrap();
    let request: RequestChallengeResponse = serde_json::from_str(&options).unwrap();
    let credential = key.do_authentication(Url::parse(ORIGIN).unwrap(), request).unwrap();
    serde_json::to_string(&credential).unwrap()
}

/// Signs an enrolled admin in over HTTP in a new browser (a second session of the same admin);
/// returns its client and the status of `finish_login`.
pub async fn http_login(
    _env: &super::TestEnv,
    base: &str,
    email: &str,
    key: &mut SoftPasskey,
) -> (reqwest::Client, u16) {
    let client = reqwest::Client::builder().cookie_store(true).build().unwrap();
    let (status, body) = server_fn(&client, base, "begin_login", &[("email", email)]).await;
    assert_eq!(status, 200, "{body}");
    let credential = answer(key, &body);
    let (status, body) = server_fn(&client, base, "finish_login", &[("credential", &credential)]).await;
    assert_eq!(status, 200, "{body}");
    (client, status)
}
