//! The annotations the operator and its tools read and write: part of the contract, as the CRDs.

/// On a credentials Secret: the `OneDriveTenant`s allowed to use it, comma-separated.
pub const SECRET_TENANTS: &str = "onedrive-operator.dev/tenants";
/// On a refresh-token Secret: when the token in it was issued (RFC 3339).
pub const REFRESH_TOKEN_ROTATED_AT: &str = "onedrive-operator.dev/refresh-token-rotated-at";
/// On a `OneDriveSite`: any new value sends a failed user again (or applies failed settings
/// again), once per value; `status.retry` records the value acted on.
pub const RETRY: &str = "onedrive-operator.dev/retry";
/// On a `OneDriveSiteSet`: the token of the deletions its removal guard holds
/// (`status.heldRemovals.token`) lets exactly those go.
pub const CONFIRM_REMOVALS: &str = "onedrive-operator.dev/confirm-removals";
/// On a set's `OneDriveSite`: a digest of what the set declared for its sites (tenant and
/// template), so a changed template is applied again and an unchanged one costs no write.
pub const SET_TEMPLATE: &str = "onedrive-operator.dev/set-template";
/// The label on a set's `OneDriveSite`s naming their `OneDriveSiteSet`.
pub const SITE_SET_LABEL: &str = "onedrive-operator.dev/site-set";
