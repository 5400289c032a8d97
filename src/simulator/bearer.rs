//! Bearer tokens the simulated Entra ID issued, as Graph and SharePoint check them.

use axum::http::HeaderMap;
use jiff::Timestamp;

use super::Sim;
use crate::jose::Jws;

/// What a verified bearer token says.
#[derive(Clone, Debug)]
pub(crate) struct TokenInfo {
    pub client_id: String,
    /// `app-certificate`, `app-federated`, `app-secret` or `delegated`.
    pub kind: String,
    /// What the token grants: `roles` (app-only) or `scp` (delegated).
    pub permissions: Vec<String>,
    /// A delegated token of a SharePoint or Global Administrator (`wids`).
    pub admin: bool,
}

impl TokenInfo {
    pub fn app_only(&self) -> bool {
        self.kind.starts_with("app-")
    }

    /// Whether the token grants any of `permissions`.
    pub fn grants(&self, permissions: &[&str]) -> bool {
        self.permissions.iter().any(|p| permissions.contains(&p.as_str()))
    }
}

/// Why a bearer token was refused.
#[derive(Debug)]
pub(crate) enum TokenError {
    Missing,
    Invalid,
    Expired,
    WrongAudience,
}

impl Sim {
    pub(crate) fn verify_bearer(&self, headers: &HeaderMap, resource: &str) -> Result<TokenInfo, TokenError> {
        let value = headers.get("authorization").and_then(|v| v.to_str().ok()).ok_or(TokenError::Missing)?;
        let token = value.strip_prefix("Bearer ").ok_or(TokenError::Missing)?;
        let jws = Jws::decode(token).map_err(|_| TokenError::Invalid)?;
        jws.verify_hmac(&self.token_secret).map_err(|_| TokenError::Invalid)?;
        if jws.claims["gen"].as_u64() != Some(self.token_generation.load(std::sync::atomic::Ordering::SeqCst))
        {
            // Revoked ([`super::SimHandle::revoke_tokens`]).
            return Err(TokenError::Invalid);
        }
        let exp = jws.claims["exp"].as_i64().ok_or(TokenError::Invalid)?;
        if exp <= Timestamp::now().as_second() {
            return Err(TokenError::Expired);
        }
        if jws.claims["aud"].as_str() != Some(resource) {
            return Err(TokenError::WrongAudience);
        }
        let roles = jws.claims["roles"].as_array().into_iter().flatten().filter_map(|r| r.as_str());
        let scopes = jws.claims["scp"].as_str().unwrap_or_default().split_whitespace();
        Ok(TokenInfo {
            client_id: jws.claims["appid"].as_str().unwrap_or_default().to_string(),
            kind: jws.claims["kind"].as_str().unwrap_or_default().to_string(),
            permissions: roles.chain(scopes).map(str::to_string).collect(),
            admin: jws.claims["wids"].as_array().into_iter().flatten().any(|w| {
                w == super::authorize::SHAREPOINT_ADMINISTRATOR || w == super::authorize::GLOBAL_ADMINISTRATOR
            }),
        })
    }
}
