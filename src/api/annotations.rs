//! The annotations the operator and its tools read and write: part of the contract, as the CRDs.

/// On a credentials Secret: the `OneDriveTenant`s allowed to use it, comma-separated.
pub const SECRET_TENANTS: &str = "onedrive-operator.dev/tenants";
/// On a refresh-token Secret: when the token in it was issued (RFC 3339).
pub const REFRESH_TOKEN_ROTATED_AT: &str = "onedrive-operator.dev/refresh-token-rotated-at";
/// On a `OneDriveSite`: any new value sends a failed user again (or applies failed settings
/// again), once per value; `status.retry` records the value acted on.
pub const RETRY: &str = "onedrive-operator.dev/retry";
