//! CEL validation rules shared by the CRD types.
//!
//! Regular expressions avoid backslashes where they can (POSIX classes instead) so the same text reads the
//! same in Rust, in CEL string literals and in the generated YAML. Every string a rule runs a
//! regex over has a `maxLength`, which keeps the API server's CEL cost estimate within budget.

/// A regular expression the CRD checks with CEL (`NAME`) and `doctor`/`check` check in Rust
/// (`NAME_PATTERN`): one text, read the same by both (POSIX classes, no backslashes).
macro_rules! pattern {
    ($(#[$doc:meta])* $pattern:ident, $cel:ident, $re:literal) => {
        $(#[$doc])*
        pub const $pattern: &str = $re;
        $(#[$doc])*
        pub const $cel: &str = concat!("self.matches('", $re, "')");
    };
}

pattern!(
    /// A user principal name or sign-in address: `local@domain.tld`, no whitespace.
    UPN_PATTERN,
    UPN,
    "^[^@[:space:]]+@([^@[:space:].]+[.])+[^@[:space:].]+$"
);
pub const UPN_MESSAGE: &str = "spec.user must be a user principal name or sign-in email such as alice@contoso.com: one '@', a domain with a dot, no spaces, at most 113 characters";

pub const IMMUTABLE: &str = "self == oldSelf";
pub const USER_IMMUTABLE_MESSAGE: &str = "spec.user is immutable: create a new OneDriveSite for another user (deleting this one never deletes a OneDrive)";

/// `https://host[:port][/path]`, or plain `http://` for loopback hosts only (the simulator).
/// (`[::1]` needs the only escaped brackets: `\\[` in CEL source is `\[` in the regex.)
pub const SERVICE_URL: &str = r"self.matches('^https://[^/?#[:space:]]+(/[^[:space:]]*)?$') || self.matches('^http://(localhost|127[.][0-9]+[.][0-9]+[.][0-9]+|\\[::1\\])(:[0-9]+)?(/[^[:space:]]*)?$')";
pub const SERVICE_URL_MESSAGE: &str = "must be an https:// URL (plain http:// is allowed only for localhost, 127.x.x.x or [::1], e.g. the simulator)";

/// `spec.tenantRef` neither changes, appears nor goes away after creation (a transition rule on
/// the spec: a rule on the optional field itself would not see it added or removed).
pub const TENANT_REF_IMMUTABLE: &str = "has(self.tenantRef) == has(oldSelf.tenantRef) && (!has(self.tenantRef) || self.tenantRef.name == oldSelf.tenantRef.name)";
pub const TENANT_REF_IMMUTABLE_MESSAGE: &str = "spec.tenantRef is immutable: to move a user to another tenant, create a new OneDriveSite (deleting this one never deletes a OneDrive)";

pattern!(
    /// Go-style durations as Kubernetes uses them: `90s`, `15m`, `24h`, `1h30m`.
    DURATION_PATTERN,
    DURATION,
    "^([0-9]+([.][0-9]+)?(ms|s|m|h))+$"
);
pub const DURATION_MESSAGE: &str = "must be a duration such as 60s, 15m, 24h or 1h30m";

pub const BATCH_SIZE: &str = "self >= 1 && self <= 200";
pub const BATCH_SIZE_MESSAGE: &str =
    "spec.batchSize must be between 1 and 200: SharePoint accepts at most 200 users per enqueue request";

pub const ONE_AUTH: &str = "(has(self.certificate) ? 1 : 0) + (has(self.workloadIdentity) ? 1 : 0) + (has(self.delegated) ? 1 : 0) == 1";
pub const ONE_AUTH_MESSAGE: &str =
    "spec.auth must set exactly one of certificate, workloadIdentity or delegated";

pattern!(
    /// A tenant id is a GUID or a verified domain (`contoso.onmicrosoft.com`).
    TENANT_ID_PATTERN,
    TENANT_ID,
    "^[A-Za-z0-9][A-Za-z0-9.-]*$"
);
pub const TENANT_ID_MESSAGE: &str = "spec.tenantId must be the directory (tenant) id GUID or a verified domain such as contoso.onmicrosoft.com";

/// `allowedNamespaces` says something: leaving it out is how every namespace is allowed.
pub const ALLOWED_NAMESPACES: &str = "has(self.names) || has(self.selector)";
pub const ALLOWED_NAMESPACES_MESSAGE: &str = "spec.allowedNamespaces must set names, selector or both (leave spec.allowedNamespaces out to allow every namespace)";

/// The operators a label selector knows, with values exactly where they take them.
pub const SELECTOR_OPERATORS: &str = "!has(self.selector) || !has(self.selector.matchExpressions) || self.selector.matchExpressions.all(e, (e.operator in ['In', 'NotIn'] && has(e.values) && size(e.values) > 0) || (e.operator in ['Exists', 'DoesNotExist'] && (!has(e.values) || size(e.values) == 0)))";
pub const SELECTOR_OPERATORS_MESSAGE: &str = "spec.allowedNamespaces.selector.matchExpressions: operator must be In or NotIn (with values) or Exists or DoesNotExist (without values)";

pattern!(
    /// Kubernetes object names (DNS-1123 subdomain) for Secret references.
    OBJECT_NAME_PATTERN,
    OBJECT_NAME,
    "^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$"
);
pub const OBJECT_NAME_MESSAGE: &str =
    "must be a Kubernetes object name: lower-case letters, digits, '-' and '.'";

/// A loopback `http://` URL: the simulator, tests and the demo (exempt from the cloud's suffix).
const LOOPBACK_URL: &str =
    r"'^http://(localhost|127[.][0-9]+[.][0-9]+[.][0-9]+|\\[::1\\])(:[0-9]+)?(/[^[:space:]]*)?$'";

/// The cloud a spec names (`Global` when absent, as the schema's default makes it).
const SPEC_CLOUD: &str = "(has(self.cloud) ? self.cloud : 'Global')";

/// `url` (a CEL expression) is on one of `cloud`'s SharePoint hosts, or on loopback.
fn on_cloud(url: &str, cloud: super::Cloud) -> String {
    let suffix = cloud.sharepoint_suffix().replace('.', "[.]");
    // Host names only (letters, digits, dots, hyphens): nothing that could end the host early.
    format!(
        "{url}.matches({LOOPBACK_URL}) || {url}.matches('^https://[[:alnum:].-]+{suffix}(:[0-9]+)?(/[^[:space:]]*)?$')"
    )
}

/// With `cloud`, `spec.adminUrl` and every `spec.geos[].adminUrl` are that cloud's SharePoint hosts.
pub fn admin_urls_in(cloud: super::Cloud) -> String {
    format!(
        "{SPEC_CLOUD} != '{c}' || (({admin}) && (!has(self.geos) || self.geos.all(g, {geo})))",
        c = cloud.as_str(),
        admin = on_cloud("self.adminUrl", cloud),
        geo = on_cloud("g.adminUrl", cloud),
    )
}

pub fn admin_urls_in_message(cloud: super::Cloud) -> String {
    format!(
        "with spec.cloud {c}, spec.adminUrl and spec.geos[].adminUrl must be SharePoint admin hosts on *{s} (e.g. https://contoso-admin{s}); set spec.cloud to the tenant's cloud",
        c = cloud.as_str(),
        s = cloud.sharepoint_suffix()
    )
}

/// Another cloud's preset is not an explicit `graphUrl`/`authorityHost`: API servers wrote the
/// Global defaults into tenants created before `spec.cloud` existed.
pub fn not_global_preset(field: &str, global: &str) -> String {
    format!("{SPEC_CLOUD} == 'Global' || !has(self.{field}) || self.{field} != '{global}'")
}

pub fn not_global_preset_message(field: &str) -> String {
    format!(
        "spec.{field} is the Global cloud's host but spec.cloud is not Global: remove spec.{field} to use the cloud's preset"
    )
}

pattern!(
    /// A Multi-Geo location code such as NAM, EUR or APC.
    GEO_LOCATION_PATTERN,
    GEO_LOCATION,
    "^[A-Z]{3}$"
);
pub const GEO_LOCATION_MESSAGE: &str =
    "spec.geos[].location must be a Multi-Geo location code of three capital letters, e.g. NAM, EUR or APC";

pub const UNIQUE_GEOS: &str =
    "!has(self.geos) || self.geos.all(g, self.geos.exists_one(h, h.location == g.location))";
pub const UNIQUE_GEOS_MESSAGE: &str = "spec.geos lists a location twice: declare each geo once";

pub const SET_TENANT_REF_IMMUTABLE_MESSAGE: &str = "spec.tenantRef is immutable: its OneDriveSites' tenantRef is; create another OneDriveSiteSet for another tenant";

/// A group is read again at least every week and at most every minute (a shorter interval would
/// spend the tenant's shared Graph budget on one set).
pub const RESYNC_INTERVAL: &str = "!self.matches('^([0-9]+([.][0-9]+)?(ms|s|m|h))+$') || (duration(self) >= duration('1m') && duration(self) <= duration('168h'))";
pub const RESYNC_INTERVAL_MESSAGE: &str = "spec.resyncInterval must be from 1m to 168h";

pub const ONE_SOURCE: &str = "(has(self.group) ? 1 : 0) + (has(self.users) ? 1 : 0) == 1";
pub const ONE_SOURCE_MESSAGE: &str =
    "spec.source must set exactly one of group (an Entra ID group) or users (a list of user principal names)";

pub const ONE_GROUP_REF: &str = "(has(self.id) ? 1 : 0) + (has(self.mail) ? 1 : 0) == 1";
pub const ONE_GROUP_REF_MESSAGE: &str =
    "spec.source.group must set exactly one of id (the group's object id) or mail";

pattern!(
    /// An Entra ID object id.
    GUID_PATTERN,
    GUID,
    "^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"
);
pub const GUID_MESSAGE: &str =
    "spec.source.group.id must be the group's object id, a GUID such as 0f5a2c1e-8b7d-4c3a-9e21-5d6f7a8b9c0d";
pub const GROUP_MAIL_MESSAGE: &str =
    "spec.source.group.mail must be a mail address such as wave3@contoso.com";
