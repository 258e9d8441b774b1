//! Request extractors for the JSON API: the authenticated actor, the validated tenant id from
//! the path, and a JSON body with the size limit, each refusing with the error-body contract.

use crate::core::{Actor, ClientInfo, Core};
use crate::model::TenantId;
use crate::web::AppState;
use crate::web::error::ApiFailure;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{ConnectInfo, FromRequest, FromRequestParts, Path, Request, State};
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::Response;
use std::net::{IpAddr, SocketAddr};
use tower_http::request_id::RequestId;

/// The caller, authenticated by a bearer service token.
pub struct ApiActor(pub Actor);

impl FromRequestParts<AppState> for ApiActor {
    type Rejection = ApiFailure;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let presented = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, token)| token.trim());
        if let Some(token) = presented {
            return Ok(ApiActor(state.core.authenticate_token(token).await?));
        }
        // An admin's browser session works too; the core maps roles to scopes.
        let session = tower_sessions::Session::from_request_parts(parts, state)
            .await
            .map_err(|_| ApiFailure::from(crate::core::Error::Unauthenticated))?;
        let stored = crate::web::session::admin(&session).await.ok_or(crate::core::Error::Unauthenticated)?;
        Ok(ApiActor(state.core.authenticate_session(&stored).await?))
    }
}

/// The client's address as the console believes it: the peer, or what a trusted proxy
/// forwarded (`SMTP_VAULT_TRUSTED_PROXIES`). Set by [`resolve_client`] on every request.
#[derive(Debug, Clone, Copy)]
pub struct ClientAddress(pub IpAddr);

/// Middleware: works out the client address once, before anything reads it.
pub async fn resolve_client(State(core): State<Core>, mut request: Request, next: Next) -> Response {
    if let Some(ConnectInfo(peer)) = request.extensions().get::<ConnectInfo<SocketAddr>>().copied() {
        // A value that is not text counts as garbage (stopping the walk), not as absent: skipping
        // it would let an earlier, client-written entry through.
        let forwarded: Vec<&str> =
            request.headers().get_all(FORWARDED_FOR).iter().map(|v| v.to_str().unwrap_or("")).collect();
        let ip = core.settings().trusted_proxies.client_address(peer.ip(), forwarded);
        request.extensions_mut().insert(ClientAddress(ip));
    }
    next.run(request).await
}

const FORWARDED_FOR: &str = "x-forwarded-for";

/// Client address and request id for the audit log.
pub struct Client(pub ClientInfo);

impl<S: Send + Sync> FromRequestParts<S> for Client {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let ip = parts.extensions.get::<ClientAddress>().map(|c| c.0);
        let request_id =
            parts.extensions.get::<RequestId>().and_then(|r| r.header_value().to_str().ok()).map(str::to_owned);
        Ok(Client(ClientInfo { ip, request_id, session: None }))
    }
}

/// The `{id}` path segment, validated.
pub struct TenantPath(pub TenantId);

impl<S: Send + Sync> FromRequestParts<S> for TenantPath {
    type Rejection = ApiFailure;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let Path(raw) =
            Path::<String>::from_request_parts(parts, state).await.map_err(|_| ApiFailure::invalid_tenant_id())?;
        TenantId::parse(&raw).map(TenantPath).map_err(|_| ApiFailure::invalid_tenant_id())
    }
}

/// A JSON body: `application/json`, within the size limit, syntactically valid. Field checks are
/// the core's (it names the field without echoing the value).
pub struct JsonBody(pub serde_json::Value);

impl<S: Send + Sync> FromRequest<S> for JsonBody {
    type Rejection = ApiFailure;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let is_json = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .is_some_and(|v| v.trim().eq_ignore_ascii_case("application/json"));
        if !is_json {
            return Err(ApiFailure::new(
                crate::model::ErrorCode::UnsupportedMediaType,
                "the body must be JSON (Content-Type: application/json)",
            ));
        }
        let bytes = Bytes::from_request(req, state).await.map_err(|rejection| match rejection {
            BytesRejection::FailedToBufferBody(_) if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE => {
                ApiFailure::new(crate::model::ErrorCode::PayloadTooLarge, "the request body is too large")
            }
            _ => ApiFailure::new(crate::model::ErrorCode::MalformedBody, "the request body could not be read"),
        })?;
        serde_json::from_slice(&bytes)
            .map(JsonBody)
            .map_err(|_| ApiFailure::new(crate::model::ErrorCode::MalformedJson, "the request body is not valid JSON"))
    }
}

/// A query string, parsed: a bad one is refused with the error contract (`invalid_query`), never
/// with axum's plain-text rejection — every API route with parameters takes its query this way.
pub struct ApiQuery<T>(pub T);

impl<T: serde::de::DeserializeOwned, S: Send + Sync> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiFailure;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Query(query)| ApiQuery(query))
            .map_err(|rejection| ApiFailure::new(crate::model::ErrorCode::InvalidQuery, rejection.body_text()))
    }
}
