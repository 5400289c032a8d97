//! CEL validation rules shared by the CRD types.
//!
//! Regular expressions avoid backslashes where they can (POSIX classes instead) so the same text reads the
//! same in Rust, in CEL string literals and in the generated YAML. Every string a rule runs a
//! regex over has a `maxLength`, which keeps the API server's CEL cost estimate within budget.

/// A user principal name or sign-in address: `local@domain.tld`, no whitespace.
pub const UPN: &str = "self.matches('^[^@[:space:]]+@([^@[:space:].]+[.])+[^@[:space:].]+$')";
pub const UPN_MESSAGE: &str = "spec.user must be a user principal name or sign-in email such as alice@contoso.com: one '@', a domain with a dot, no spaces, at most 113 characters";

pub const IMMUTABLE: &str = "self == oldSelf";
pub const USER_IMMUTABLE_MESSAGE: &str = "spec.user is immutable: create a new OneDriveSite for another user (deleting this one never deletes a OneDrive)";

/// `https://host[:port][/path]`, or plain `http://` for loopback hosts only (the simulator).
/// (`[::1]` needs the only escaped brackets: `\\[` in CEL source is `\[` in the regex.)
pub const SERVICE_URL: &str = r"self.matches('^https://[^/?#[:space:]]+(/[^[:space:]]*)?$') || self.matches('^http://(localhost|127[.][0-9]+[.][0-9]+[.][0-9]+|\\[::1\\])(:[0-9]+)?(/[^[:space:]]*)?$')";
pub const SERVICE_URL_MESSAGE: &str = "must be an https:// URL (plain http:// is allowed only for localhost, 127.x.x.x or [::1], e.g. the simulator)";

/// Go-style durations as Kubernetes uses them: `90s`, `15m`, `24h`, `1h30m`.
pub const DURATION: &str = "self.matches('^([0-9]+([.][0-9]+)?(ms|s|m|h))+$')";
pub const DURATION_MESSAGE: &str = "must be a duration such as 60s, 15m, 24h or 1h30m";

pub const BATCH_SIZE: &str = "self >= 1 && self <= 200";
pub const BATCH_SIZE_MESSAGE: &str =
    "spec.batchSize must be between 1 and 200: SharePoint accepts at most 200 users per enqueue request";

pub const ONE_AUTH: &str = "(has(self.certificate) ? 1 : 0) + (has(self.workloadIdentity) ? 1 : 0) + (has(self.delegated) ? 1 : 0) == 1";
pub const ONE_AUTH_MESSAGE: &str =
    "spec.auth must set exactly one of certificate, workloadIdentity or delegated";

/// A tenant id is a GUID or a verified domain (`contoso.onmicrosoft.com`).
pub const TENANT_ID: &str = "self.matches('^[A-Za-z0-9][A-Za-z0-9.-]*$')";
pub const TENANT_ID_MESSAGE: &str = "spec.tenantId must be the directory (tenant) id GUID or a verified domain such as contoso.onmicrosoft.com";

/// Kubernetes object names (DNS-1123 subdomain) for Secret references.
pub const OBJECT_NAME: &str = "self.matches('^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$')";
pub const OBJECT_NAME_MESSAGE: &str =
    "must be a Kubernetes object name: lower-case letters, digits, '-' and '.'";
