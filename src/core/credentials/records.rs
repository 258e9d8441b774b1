//! The `tenants` row's destination columns (where the credential is used: Mailu API URL, SMTP
//! host, port and TLS mode, server address), read and written here for every domain that moves
//! a credential (restore, recovery) so that who may change where a credential goes is visible
//! in one place. The `state` column belongs to `rotation::state`.

use crate::core::db::WriteTx;
use crate::core::error::Result;
use crate::model::{SmtpTls, TenantId};
use chrono::{DateTime, Utc};

/// Where a stored credential is used, as the database records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Destination {
    /// Mailu admin API base URL.
    pub mailu_api_url: String,
    /// SMTP host name.
    pub smtp_host: String,
    /// SMTP port.
    pub smtp_port: i64,
}

/// The recorded destination of `tenant`; `None` when no row exists.
pub(crate) async fn destination(tx: &mut WriteTx, tenant: &str) -> Result<Option<Destination>> {
    let row: Option<(String, String, i64)> =
        sqlx::query_as("SELECT mailu_api_url, smtp_host, smtp_port FROM tenants WHERE tenant_id = $1")
            .bind(tenant)
            .fetch_optional(&mut **tx)
            .await?;
    Ok(row.map(|(mailu_api_url, smtp_host, smtp_port)| Destination { mailu_api_url, smtp_host, smtp_port }))
}

/// Records what a restore wrote back to Vault: the document's version and destination.
pub(crate) async fn record_restored(
    tx: &mut WriteTx,
    tenant: &str,
    version: u64,
    destination: &Destination,
    tls: SmtpTls,
    now: DateTime<Utc>,
) -> Result<()> {
    sqlx::query(
        // A backup may bring back an older password, seen whenever: from now on every exposure counts.
        "UPDATE tenants SET version = $1, mailu_api_url = $2, smtp_host = $3, smtp_port = $4, updated_at_ms = $5, \
         smtp_tls = $7, secret_since_ms = NULL WHERE tenant_id = $6",
    )
    .bind(i64::try_from(version).unwrap_or(i64::MAX))
    .bind(&destination.mailu_api_url)
    .bind(&destination.smtp_host)
    .bind(destination.smtp_port)
    .bind(now.timestamp_millis())
    .bind(tenant)
    .bind(tls.as_str())
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// The replacement server a recovery moved `tenant` onto.
pub(crate) struct Recovered<'a> {
    /// Its address.
    pub server_ip: &'a str,
    /// Its Mailu admin API.
    pub mailu_api_url: &'a str,
    /// Its SMTP port.
    pub smtp_port: u16,
    /// How to speak TLS to it.
    pub smtp_tls: SmtpTls,
    /// The Vault version that names it.
    pub version: u64,
}

/// Records a recovery onto a replacement server; returns the address it replaced. The last
/// error is cleared: it was about the old server.
pub(crate) async fn record_recovered(
    tx: &mut WriteTx,
    tenant: &TenantId,
    to: &Recovered<'_>,
    now: DateTime<Utc>,
) -> Result<Option<String>> {
    let old: Option<(Option<String>,)> = sqlx::query_as("SELECT server_ip FROM tenants WHERE tenant_id = $1")
        .bind(tenant.as_str())
        .fetch_optional(&mut **tx)
        .await?;
    sqlx::query(
        "UPDATE tenants SET server_ip = $1, mailu_api_url = $2, smtp_port = $3, version = $4, last_error = NULL, \
         updated_at_ms = $5, smtp_tls = $7 WHERE tenant_id = $6",
    )
    .bind(to.server_ip)
    .bind(to.mailu_api_url)
    .bind(i64::from(to.smtp_port))
    .bind(i64::try_from(to.version).unwrap_or(i64::MAX))
    .bind(now.timestamp_millis())
    .bind(tenant.as_str())
    .bind(to.smtp_tls.as_str())
    .execute(&mut **tx)
    .await?;
    Ok(old.and_then(|(ip,)| ip))
}
