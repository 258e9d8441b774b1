//! CSRF defence for every state-changing request (API and server functions alike): a browser
//! request must come from the console's own origin. Browsers send `Sec-Fetch-Site` and
//! `Origin` on cross-site requests and cannot forge them; clients that send neither (the
//! provisioning backend with a bearer token) carry no ambient cookie to abuse.

use crate::web::error::ApiFailure;
use axum::extract::{Request, State};
use axum::http::{Method, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use std::sync::Arc;

/// The console's origin, e.g. `http://localhost:3000`.
#[derive(Debug, Clone)]
pub struct Origin(pub Arc<str>);

impl Origin {
    /// The origin part of a public URL (scheme, host, port).
    #[must_use]
    pub fn of(public_url: &url::Url) -> Self {
        Origin(public_url.origin().ascii_serialization().into())
    }
}

/// Refuses cross-site state-changing requests with 403 `csrf_rejected`.
pub async fn reject_cross_site(State(origin): State<Origin>, request: Request, next: Next) -> Response {
    let safe = matches!(*request.method(), Method::GET | Method::HEAD | Method::OPTIONS);
    if !safe {
        let headers = request.headers();
        let site_ok = headers
            .get("sec-fetch-site")
            .and_then(|v| v.to_str().ok())
            .is_none_or(|site| matches!(site, "same-origin" | "none"));
        let origin_ok = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()).is_none_or(|o| o == &*origin.0);
        if !(site_ok && origin_ok) {
            // SECURITY: no detail on which check failed.
            return ApiFailure::new(crate::model::ErrorCode::CsrfRejected, "cross-site request refused")
                .into_response();
        }
    }
    next.run(request).await
}
