//! `TenantId`: the one validated form of a tenant id, used for Vault paths and AAD alike.

use serde::{Deserialize, Serialize};
use std::fmt;

/// A tenant id matching `^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$` (a DNS label in lower case).
///
/// SECURITY: the id becomes part of a Vault path and of the AEAD associated data, so only this
/// constructor may make one; `..`, `/`, upper case and non-ASCII never get through.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct TenantId(String);

/// The reason a tenant id was refused; deliberately does not echo the input back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("tenant id must be 1-63 characters of a-z, 0-9 and '-', starting and ending with a letter or digit")]
pub struct InvalidTenantId;

impl TenantId {
    /// Longest accepted id (a DNS label).
    pub const MAX_LEN: usize = 63;

    /// Validates and wraps a tenant id.
    ///
    /// # Errors
    /// [`InvalidTenantId`] unless the text matches the pattern above.
    pub fn parse(text: &str) -> Result<Self, InvalidTenantId> {
        let bytes = text.as_bytes();
        let edge_ok = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
        let inner_ok = |b: u8| edge_ok(b) || b == b'-';
        let valid = !bytes.is_empty()
            && bytes.len() <= Self::MAX_LEN
            && bytes.first().copied().is_some_and(edge_ok)
            && bytes.last().copied().is_some_and(edge_ok)
            && bytes.iter().copied().all(inner_ok);
        if valid { Ok(Self(text.to_owned())) } else { Err(InvalidTenantId) }
    }

    /// The id as text.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for TenantId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for TenantId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TenantId({})", self.0)
    }
}

impl<'de> Deserialize<'de> for TenantId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        Self::parse(&text).map_err(serde::de::Error::custom)
    }
}

#[cfg(feature = "ssr")]
impl utoipa::PartialSchema for TenantId {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::Type::String)
            .min_length(Some(1))
            .max_length(Some(Self::MAX_LEN))
            .pattern(Some("^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$"))
            .description(Some("A tenant id: a DNS label in lower case."))
            .examples(["acme"])
            .into()
    }
}

#[cfg(feature = "ssr")]
impl utoipa::ToSchema for TenantId {}

impl std::str::FromStr for TenantId {
    type Err = InvalidTenantId;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_dns_labels() {
        for ok in ["a", "0", "acme", "globex-eu-1", &"a".repeat(63), "a-b", "9z"] {
            assert!(TenantId::parse(ok).is_ok(), "{ok} should be valid");
        }
    }

    #[test]
    fn refuses_everything_else() {
        let long = "a".repeat(64);
        for bad in [
            "", "A", "a_b", "../x", "-a", "a-", "a.b", "a/b", "é", "acme ", " acme", "ac me", &long, "a\0", "ACME",
            "a\n",
        ] {
            assert_eq!(TenantId::parse(bad), Err(InvalidTenantId), "{bad:?} should be refused");
        }
    }
}
