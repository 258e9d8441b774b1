//! Browser capabilities the UI needs (WebAuthn ceremonies, clipboard) behind plain async
//! functions; on the server they are never called and report that.

#[cfg(feature = "hydrate")]
mod js {
    use wasm_bindgen::prelude::*;

    #[wasm_bindgen(module = "/public/webauthn.js")]
    extern "C" {
        #[wasm_bindgen(catch)]
        pub async fn create_credential(options: String) -> Result<JsValue, JsValue>;
        #[wasm_bindgen(catch)]
        pub async fn get_assertion(options: String) -> Result<JsValue, JsValue>;
        #[wasm_bindgen(catch)]
        pub async fn copy_text(text: String) -> Result<JsValue, JsValue>;
    }

    pub fn message(error: &JsValue) -> String {
        js_sys_message(error).unwrap_or_else(|| "the browser refused the passkey request".into())
    }

    fn js_sys_message(error: &JsValue) -> Option<String> {
        error.as_string().or_else(|| {
            let text = format!("{error:?}");
            (!text.is_empty()).then_some(text)
        })
    }
}

/// Creates a passkey for the given creation options; returns the credential JSON.
///
/// # Errors
/// The browser's refusal (cancelled, no authenticator, not allowed).
pub async fn create_credential(options: String) -> Result<String, String> {
    #[cfg(feature = "hydrate")]
    {
        js::create_credential(options).await.map(|v| v.as_string().unwrap_or_default()).map_err(|e| js::message(&e))
    }
    #[cfg(not(feature = "hydrate"))]
    {
        let _ = options;
        Err("passkeys need the browser".into())
    }
}

/// Answers a WebAuthn request with a passkey; returns the assertion JSON.
///
/// # Errors
/// The browser's refusal.
pub async fn get_assertion(options: String) -> Result<String, String> {
    #[cfg(feature = "hydrate")]
    {
        js::get_assertion(options).await.map(|v| v.as_string().unwrap_or_default()).map_err(|e| js::message(&e))
    }
    #[cfg(not(feature = "hydrate"))]
    {
        let _ = options;
        Err("passkeys need the browser".into())
    }
}

/// Copies text to the clipboard.
///
/// # Errors
/// The browser's refusal.
pub async fn copy_text(text: String) -> Result<(), String> {
    #[cfg(feature = "hydrate")]
    {
        js::copy_text(text).await.map(|_| ()).map_err(|e| js::message(&e))
    }
    #[cfg(not(feature = "hydrate"))]
    {
        let _ = text;
        Err("the clipboard needs the browser".into())
    }
}
