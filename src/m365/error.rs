//! The Microsoft client's one error type. `reason()` is reused as the tenant's condition reason,
//! the event reason and the metric label, so each kind names what a person should do.
//!
//! The chain, in one place: the client fails with an [`M365Error`]; the controller turns it into
//! the planner's [`crate::plan::TenantProblem`] (its [`TenantReason`], a message with no user
//! name in it, and whether a person must act — `controller::reconciler::problem_of`); the planner
//! writes that reason on the tenant's conditions and, for waiting sites, says why in their
//! messages. The controller's own failures (the Kubernetes API) are `ControllerError`, whose
//! `reason()` labels its metric.

use jiff::Timestamp;

use crate::api::TenantReason;

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum M365Error {
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

impl M365Error {
    /// The condition/event reason and metric label for this kind.
    pub fn reason(&self) -> TenantReason {
        match self {
            M365Error::CredentialsInvalid(_) => TenantReason::CredentialsInvalid,
            M365Error::TokenKindRefused(_) => TenantReason::TokenKindRefused,
            M365Error::PermissionMissing(_) => TenantReason::PermissionMissing,
            M365Error::Throttled { .. } => TenantReason::Throttled,
            M365Error::Blocked(_) => TenantReason::Blocked,
            M365Error::Unreachable(_) => TenantReason::Unreachable,
            M365Error::InvalidRequest(_) => TenantReason::InvalidRequest,
            M365Error::Protocol(_) => TenantReason::ProtocolError,
            M365Error::InvalidSpec(_) => TenantReason::InvalidSpec,
        }
    }

    /// Whether a person must act (kstatus `Stalled`) rather than wait.
    pub fn needs_person(&self) -> bool {
        matches!(
            self,
            M365Error::CredentialsInvalid(_)
                | M365Error::TokenKindRefused(_)
                | M365Error::PermissionMissing(_)
                | M365Error::Blocked(_)
                | M365Error::InvalidSpec(_)
        )
    }
}
