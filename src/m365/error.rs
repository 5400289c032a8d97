//! The tenant layer's one error type. `reason()` is reused as the tenant's condition reason,
//! the event reason and the metric label, so each kind names what a person should do.

use jiff::Timestamp;

use crate::api::TenantReason;

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum TenantError {
    /// The credentials could not be loaded or Entra ID refused them.
    #[error("{0}")]
    CredentialsInvalid(String),
    /// SharePoint refused this kind of token for the call (app-only vs delegated, client secret).
    #[error("{0}")]
    TokenKindRefused(String),
    /// The token is fine but lacks a permission (consent, admin role).
    #[error("{0}")]
    PermissionMissing(String),
    /// The service asked us to wait until `until`; the caller should requeue, not sleep.
    #[error("throttled by {service} until {until}")]
    Throttled { service: &'static str, until: Timestamp },
    /// Persistent 503s: Microsoft has blocked the app for ignoring throttling.
    #[error("{0}")]
    Blocked(String),
    /// Network errors, timeouts, 5xx.
    #[error("{0}")]
    Unreachable(String),
    /// Refused on the client before anything was sent (more than 200 users, an empty email).
    #[error("{0}")]
    InvalidRequest(String),
    /// An answer the client does not understand (or refuses to read: too large, a redirect).
    #[error("{0}")]
    Protocol(String),
    /// The tenant's spec asks for something the operator will not do (an endpoint outside the
    /// tenant's cloud, a malformed field): nothing was sent.
    #[error("{0}")]
    InvalidSpec(String),
}

impl TenantError {
    /// The condition/event reason and metric label for this kind.
    pub fn reason(&self) -> TenantReason {
        match self {
            TenantError::CredentialsInvalid(_) => TenantReason::CredentialsInvalid,
            TenantError::TokenKindRefused(_) => TenantReason::TokenKindRefused,
            TenantError::PermissionMissing(_) => TenantReason::PermissionMissing,
            TenantError::Throttled { .. } => TenantReason::Throttled,
            TenantError::Blocked(_) => TenantReason::Blocked,
            TenantError::Unreachable(_) => TenantReason::Unreachable,
            TenantError::InvalidRequest(_) => TenantReason::InvalidRequest,
            TenantError::Protocol(_) => TenantReason::ProtocolError,
            TenantError::InvalidSpec(_) => TenantReason::InvalidSpec,
        }
    }

    /// Whether a person must act (kstatus `Stalled`) rather than wait.
    pub fn needs_person(&self) -> bool {
        matches!(
            self,
            TenantError::CredentialsInvalid(_)
                | TenantError::TokenKindRefused(_)
                | TenantError::PermissionMissing(_)
                | TenantError::Blocked(_)
                | TenantError::InvalidSpec(_)
        )
    }
}
