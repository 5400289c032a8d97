//! What a tenant's credentials are worth: the certificate's and the refresh token's expiry
//! warnings and whether a rotated refresh token is stored, as the tenant's conditions say them.

use jiff::{SignedDuration, Timestamp};

use crate::api::{ConditionSet, ConditionStatus, TenantReason};

/// Condition type on the tenant: a credential expires soon (abnormal-true, like `Stalled`).
pub const CREDENTIALS_EXPIRING: &str = "CredentialsExpiring";
/// Condition type on the tenant: a rotated refresh token could not be stored in its Secret.
pub const CREDENTIALS_NOT_PERSISTED: &str = TenantReason::CredentialsNotPersisted.as_str();

/// What the tenant's status and metrics say about its credentials.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct CredentialHealth {
    /// The certificate's `notAfter`.
    pub expires_at: Option<Timestamp>,
    /// When the refresh token in use was issued (delegated).
    pub last_rotation: Option<Timestamp>,
    /// A rotated refresh token is held in memory only: why it could not be stored.
    pub not_persisted: Option<String>,
    /// Whether the tenant uses a refresh token at all.
    pub delegated: bool,
}

/// How long before `notAfter` a certificate is warned about, and the reason at each threshold.
const CERTIFICATE_WARNINGS: [(i64, TenantReason); 2] =
    [(7, TenantReason::CertificateExpiresIn7Days), (30, TenantReason::CertificateExpiresIn30Days)];
/// Entra ID expires refresh tokens unused for 90 days: warn at 60.
const REFRESH_TOKEN_WARNING_DAYS: i64 = 60;

/// The `CredentialsExpiring` and `CredentialsNotPersisted` conditions for `health`.
pub(super) fn conditions<'a>(
    set: ConditionSet<'a>,
    health: &CredentialHealth,
    now: Timestamp,
) -> ConditionSet<'a> {
    let set = match expiring(health, now) {
        Some((reason, message)) => {
            set.set(CREDENTIALS_EXPIRING, ConditionStatus::True, reason.as_str(), message)
        }
        None => {
            set.set(CREDENTIALS_EXPIRING, ConditionStatus::False, TenantReason::CredentialsValid.as_str(), "")
        }
    };
    if !health.delegated {
        return set;
    }
    match &health.not_persisted {
        Some(why) => set.set(
            CREDENTIALS_NOT_PERSISTED,
            ConditionStatus::True,
            CREDENTIALS_NOT_PERSISTED,
            format!(
                "a rotated refresh token is held in memory only ({why}); the operator keeps using it and retries every cycle: grant it update on the Secret, or the token is lost with the pod"
            ),
        ),
        None => set.set(CREDENTIALS_NOT_PERSISTED, ConditionStatus::False, TenantReason::Persisted.as_str(), ""),
    }
}

/// The expiry warning, if one is due: (reason, message).
pub fn expiring(health: &CredentialHealth, now: Timestamp) -> Option<(TenantReason, String)> {
    if let Some(at) = health.expires_at {
        let left = at.duration_since(now);
        if let Some((_, reason)) =
            CERTIFICATE_WARNINGS.iter().find(|(days, _)| left <= SignedDuration::from_hours(24 * days))
        {
            let days = left.as_hours().div_euclid(24);
            return Some((
                *reason,
                format!(
                    "the certificate in the tenant's Secret expires at {at} (in {days} days): upload a renewed certificate to the app registration and store it in the Secret (it is picked up without a restart)"
                ),
            ));
        }
    }
    let since = health.last_rotation?;
    let age = now.duration_since(since);
    (age >= SignedDuration::from_hours(24 * REFRESH_TOKEN_WARNING_DAYS)).then(|| {
        (
            TenantReason::RefreshTokenAging,
            format!(
                "the refresh token was last rotated at {since} ({} days ago); Entra ID expires refresh tokens unused for 90 days: sign in again as a SharePoint administrator and store the new token in the Secret",
                age.as_hours() / 24
            ),
        )
    })
}
