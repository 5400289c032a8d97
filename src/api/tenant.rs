//! `OneDriveTenant`: one Microsoft 365 tenant, its credentials and its batching limits.

// Each `printcolumn(...)` repeats `type_ = ...`; clippy mistakes them for duplicated attributes.
#![allow(clippy::duplicated_attributes)]

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use super::Cloud;

/// How to reach and authenticate to one Microsoft 365 tenant.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[kube(
    group = "onedrive-operator.dev",
    version = "v1alpha1",
    kind = "OneDriveTenant",
    status = "OneDriveTenantStatus",
    shortname = "odt",
    category = "onedrive",
    derive = "PartialEq",
    derive = "Default",
    doc = "A Microsoft 365 tenant whose users get OneDrive sites, at most 200 per SharePoint request.",
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(name = "Desired", type_ = "integer", json_path = ".status.users.desired"),
    printcolumn(name = "Ready users", type_ = "integer", json_path = ".status.users.ready"),
    printcolumn(name = "Pending", type_ = "integer", json_path = ".status.users.pending"),
    printcolumn(name = "Provisioning", type_ = "integer", json_path = ".status.users.provisioning"),
    printcolumn(name = "Failed", type_ = "integer", json_path = ".status.users.failed"),
    // A string, not a date: kubectl prints a future date as `<invalid>`.
    printcolumn(name = "ETA", type_ = "string", json_path = ".status.progress.estimatedCompletion"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new(crate::api::rules::admin_urls_in(Cloud::Global)).message(Message::Message(crate::api::rules::admin_urls_in_message(Cloud::Global))),
    validation = Rule::new(crate::api::rules::admin_urls_in(Cloud::USGovGCCHigh)).message(Message::Message(crate::api::rules::admin_urls_in_message(Cloud::USGovGCCHigh))),
    validation = Rule::new(crate::api::rules::admin_urls_in(Cloud::USGovDoD)).message(Message::Message(crate::api::rules::admin_urls_in_message(Cloud::USGovDoD))),
    validation = Rule::new(crate::api::rules::admin_urls_in(Cloud::China)).message(Message::Message(crate::api::rules::admin_urls_in_message(Cloud::China))),
    validation = Rule::new(crate::api::rules::not_global_preset("graphUrl", Cloud::Global.graph_url())).message(Message::Message(crate::api::rules::not_global_preset_message("graphUrl"))),
    validation = Rule::new(crate::api::rules::not_global_preset("authorityHost", Cloud::Global.authority_host())).message(Message::Message(crate::api::rules::not_global_preset_message("authorityHost"))),
    validation = Rule::new(crate::api::rules::UNIQUE_GEOS).message(crate::api::rules::UNIQUE_GEOS_MESSAGE),
)]
pub struct OneDriveTenantSpec {
    /// Directory (tenant) id: a GUID, or a verified domain such as `contoso.onmicrosoft.com`.
    #[schemars(length(min = 1, max = 253))]
    #[x_kube(validation = Rule::new(crate::api::rules::TENANT_ID).message(crate::api::rules::TENANT_ID_MESSAGE))]
    pub tenant_id: String,

    /// The Microsoft 365 cloud: sets the sign-in and Graph hosts and which SharePoint hosts are
    /// valid. Explicit `authorityHost`/`graphUrl` still win.
    #[serde(default)]
    pub cloud: Cloud,

    /// The SharePoint admin host, e.g. `https://contoso-admin.sharepoint.com`; in a Multi-Geo
    /// tenant, the central geo's.
    #[schemars(length(max = 2048))]
    #[x_kube(validation = Rule::new(crate::api::rules::SERVICE_URL).message(Message::Message(format!("spec.adminUrl {}", crate::api::rules::SERVICE_URL_MESSAGE))))]
    pub admin_url: String,

    /// Microsoft Graph root; default: the cloud's (`https://graph.microsoft.com` for Global).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 2048))]
    #[x_kube(validation = Rule::new(crate::api::rules::SERVICE_URL).message(Message::Message(format!("spec.graphUrl {}", crate::api::rules::SERVICE_URL_MESSAGE))))]
    pub graph_url: Option<String>,

    /// Entra ID authority; default: the cloud's (`https://login.microsoftonline.com` for Global).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 2048))]
    #[x_kube(validation = Rule::new(crate::api::rules::SERVICE_URL).message(Message::Message(format!("spec.authorityHost {}", crate::api::rules::SERVICE_URL_MESSAGE))))]
    pub authority_host: Option<String>,

    /// Multi-Geo satellite geos, declared. Geos are also discovered from Graph (each geo's root
    /// site); a declared geo wins over a discovered one with the same location.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    pub geos: Vec<GeoSpec>,

    /// Exactly one way to get tokens.
    pub auth: TenantAuth,

    /// Which SharePoint call asks for personal sites.
    #[serde(default)]
    pub enqueue_method: EnqueueMethod,

    /// Users per enqueue request, 1 to 200.
    #[serde(default = "default_batch_size")]
    #[schemars(range(min = 1, max = 200))]
    #[x_kube(validation = Rule::new(crate::api::rules::BATCH_SIZE).message(crate::api::rules::BATCH_SIZE_MESSAGE))]
    pub batch_size: i32,

    /// How often to check the last user of an in-flight batch.
    #[serde(default = "default_poll_interval")]
    #[schemars(length(max = 32))]
    #[x_kube(validation = Rule::new(crate::api::rules::DURATION).message(Message::Message(format!("spec.pollInterval {}", crate::api::rules::DURATION_MESSAGE))))]
    pub poll_interval: String,

    /// How long an enqueued user may stay without a site before it is reported `ProvisioningTimedOut`.
    #[serde(default = "default_provisioning_timeout")]
    #[schemars(length(max = 32))]
    #[x_kube(validation = Rule::new(crate::api::rules::DURATION).message(Message::Message(format!("spec.provisioningTimeout {}", crate::api::rules::DURATION_MESSAGE))))]
    pub provisioning_timeout: String,

    /// How often a Ready user's site is verified again (drift detection).
    #[serde(default = "default_drift_check_interval")]
    #[schemars(length(max = 32))]
    #[x_kube(validation = Rule::new(crate::api::rules::DURATION).message(Message::Message(format!("spec.driftCheckInterval {}", crate::api::rules::DURATION_MESSAGE))))]
    pub drift_check_interval: String,

    /// How many users are observed at once: `Auto` reads Graph's tenant-wide listings (personal
    /// sites, then the directory, 999 a page) when that costs Graph less than one lookup per user
    /// (100 users or more at once, app-only credentials); `Never` looks every user up on their own.
    #[serde(default)]
    pub tenant_wide_listing: TenantWideListing,

    /// The namespaces whose `OneDriveSite`s may use this tenant. Unset: every namespace. Set it
    /// in clusters shared by several teams (or customers): a site from any other namespace is
    /// never looked up nor enqueued, and reports `TenantNotAllowed`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allowed_namespaces: Option<super::AllowedNamespaces>,

    /// Which namespaces' `OneDriveSiteSet`s may read which groups' members (`spec.source.group`).
    /// Empty (the default): none may; a set naming a group is refused (`GroupNotAllowed`) before
    /// anything is read.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 256))]
    pub group_sources: Vec<super::GroupSourceGrant>,

    /// Site collection administrators of every OneDrive of this tenant besides its owner (user
    /// principal names, e.g. a migration account). Applied once a site exists, checked again with
    /// the drift check; the operator removes only administrators it added itself.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 20), inner(length(min = 3, max = 113)))]
    #[x_kube(
        validation = Rule::new(crate::api::settings::SITE_ADMINS).message(crate::api::settings::SITE_ADMINS_MESSAGE),
        validation = Rule::new(crate::api::settings::UNIQUE_ADMINS).message(crate::api::settings::UNIQUE_ADMINS_MESSAGE)
    )]
    pub site_admins: Vec<String>,

    /// The storage quota of every OneDrive of this tenant (`1Ti`, `5Ti`; 1Gi to 5Ti, rounded up
    /// to whole MiB). Unset: the operator leaves quotas alone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 32))]
    #[x_kube(validation = Rule::new(crate::api::settings::STORAGE_QUOTA).message(crate::api::settings::STORAGE_QUOTA_MESSAGE))]
    pub storage_quota: Option<String>,

    /// What a `OneDriveSite` may declare for itself: nothing by default (a site writer must not
    /// be able to make anyone administrator of a OneDrive).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub per_site: Option<super::PerSiteSettings>,
}

impl OneDriveTenantSpec {
    /// The Graph root: `graphUrl`, else the cloud's.
    pub fn graph_url(&self) -> &str {
        self.graph_url.as_deref().unwrap_or(self.cloud.graph_url())
    }

    /// The Entra ID authority: `authorityHost`, else the cloud's.
    pub fn authority_host(&self) -> &str {
        self.authority_host.as_deref().unwrap_or(self.cloud.authority_host())
    }
}

/// One Multi-Geo geo: its location code and its SharePoint admin host.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct GeoSpec {
    /// The geo's location code (`dataLocationCode`), e.g. EUR.
    #[schemars(length(min = 3, max = 3))]
    #[x_kube(validation = Rule::new(crate::api::rules::GEO_LOCATION).message(crate::api::rules::GEO_LOCATION_MESSAGE))]
    pub location: String,
    /// The geo's SharePoint admin host, e.g. `https://contosoeur-admin.sharepoint.com`.
    #[schemars(length(max = 2048))]
    #[x_kube(validation = Rule::new(crate::api::rules::SERVICE_URL).message(Message::Message(format!("spec.geos[].adminUrl {}", crate::api::rules::SERVICE_URL_MESSAGE))))]
    pub admin_url: String,
}
fn default_batch_size() -> i32 {
    super::MAX_BATCH_SIZE
}
fn default_poll_interval() -> String {
    "60s".to_string()
}
fn default_provisioning_timeout() -> String {
    "24h".to_string()
}
fn default_drift_check_interval() -> String {
    "24h".to_string()
}

/// Exactly one of the three token sources.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new(crate::api::rules::ONE_AUTH).message(crate::api::rules::ONE_AUTH_MESSAGE))]
pub struct TenantAuth {
    /// Entra ID app-only with a certificate (the only app-only form SharePoint accepts).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificate: Option<CertificateAuth>,
    /// Azure Workload Identity federation: no secret in the cluster.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workload_identity: Option<WorkloadIdentityAuth>,
    /// A SharePoint administrator's refresh token (for tenants that refuse app-only enqueue).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delegated: Option<DelegatedAuth>,
}

/// Which auth mode a tenant uses, once validated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TenantAuthKind {
    Certificate,
    WorkloadIdentity,
    Delegated,
}

impl TenantAuthKind {
    pub fn as_str(self) -> &'static str {
        match self {
            TenantAuthKind::Certificate => "certificate",
            TenantAuthKind::WorkloadIdentity => "workloadIdentity",
            TenantAuthKind::Delegated => "delegated",
        }
    }
}

impl TenantAuth {
    /// The single configured mode, or a message naming the problem (the CRD rejects this too;
    /// the check is repeated for manifests that never passed through an API server).
    pub fn kind(&self) -> Result<TenantAuthKind, String> {
        let set: Vec<TenantAuthKind> = [
            self.certificate.as_ref().map(|_| TenantAuthKind::Certificate),
            self.workload_identity.as_ref().map(|_| TenantAuthKind::WorkloadIdentity),
            self.delegated.as_ref().map(|_| TenantAuthKind::Delegated),
        ]
        .into_iter()
        .flatten()
        .collect();
        match set.as_slice() {
            [one] => Ok(*one),
            _ => Err(super::rules::ONE_AUTH_MESSAGE.to_string()),
        }
    }
}

/// Client-assertion signing algorithm.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, schemars::JsonSchema)]
pub enum AssertionAlgorithm {
    /// RSA-PSS SHA-256 with an `x5t#S256` thumbprint (Microsoft's current guidance).
    #[default]
    PS256,
    /// RSA PKCS#1 SHA-256 with a SHA-1 `x5t` thumbprint (older guidance).
    RS256,
}

#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct CertificateAuth {
    /// Application (client) id of the Entra ID app registration.
    #[schemars(length(min = 1, max = 64))]
    pub client_id: String,
    /// A `kubernetes.io/tls` Secret (keys `tls.crt`, `tls.key`) in the operator's namespace.
    pub secret_ref: SecretRef,
    #[serde(default)]
    pub algorithm: AssertionAlgorithm,
}

#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct WorkloadIdentityAuth {
    /// Application (client) id; defaults to `AZURE_CLIENT_ID` injected by Azure Workload Identity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 64))]
    pub client_id: Option<String>,
}

#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct DelegatedAuth {
    /// Application (client) id the refresh token was issued to.
    #[schemars(length(min = 1, max = 64))]
    pub client_id: String,
    /// Secret (in the operator's namespace) holding the refresh token; rotated tokens are written back.
    pub refresh_token_secret_ref: SecretKeyRef,
}

#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct SecretRef {
    #[schemars(length(min = 1, max = 253))]
    #[x_kube(validation = Rule::new(crate::api::rules::OBJECT_NAME).message(crate::api::rules::OBJECT_NAME_MESSAGE))]
    pub name: String,
}

#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct SecretKeyRef {
    #[schemars(length(min = 1, max = 253))]
    #[x_kube(validation = Rule::new(crate::api::rules::OBJECT_NAME).message(crate::api::rules::OBJECT_NAME_MESSAGE))]
    pub name: String,
    /// Key inside the Secret; default `refresh_token`.
    #[serde(default = "default_refresh_token_key")]
    #[schemars(length(min = 1, max = 253))]
    pub key: String,
}

fn default_refresh_token_key() -> String {
    "refresh_token".to_string()
}

/// The SharePoint call used to ask for personal sites.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, schemars::JsonSchema)]
pub enum EnqueueMethod {
    /// REST `ProfileLoader.CreatePersonalSiteEnqueueBulk` (the seeds' way).
    #[default]
    ProfileLoader,
    /// The same call through CSOM `ProcessQuery`.
    ProfileLoaderCsom,
    /// CSOM `Tenant.RequestPersonalSites` (what `Request-SPOPersonalSite` uses today).
    RequestPersonalSites,
}

/// Whether Graph's tenant-wide listings may replace per-user lookups.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, schemars::JsonSchema)]
pub enum TenantWideListing {
    /// When cheaper, with per-user lookups wherever an answer must be the user's own.
    #[default]
    Auto,
    /// Always one lookup per user.
    Never,
}

/// The tenant's health, its users by phase, and the batch in flight.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct OneDriveTenantStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    #[serde(default)]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
    #[serde(default)]
    pub users: UserCounts,
    /// Each geo's pipeline: the central geo first (a single-geo tenant has only it).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub geos: Vec<GeoStatus>,
    /// Written by versions before Multi-Geo: read once as the central geo's batch, then removed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_batch: Option<BatchStatus>,
    /// Id of the last batch recorded, in any geo (ids grow by one per batch).
    #[serde(default)]
    pub last_batch_id: i64,
    /// Written by versions before Multi-Geo: read once as the central geo's, then removed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_batch_seconds: Option<i64>,
    /// No request is sent to the tenant before this time (the service asked us to back off).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub throttled_until: Option<Time>,
    /// The work left and when it should be done.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress: Option<TenantProgress>,
}

/// Where a rollout stands: the users and batches left, and an estimate of when the last of
/// them has its site.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TenantProgress {
    /// Users waiting for a batch or being provisioned.
    pub users_left: i32,
    /// Batches still to complete, the ones in flight included (in every geo).
    pub batches_left: i32,
    /// When the last batch should be done, from each geo's last batch duration
    /// (`geos[].lastBatchSeconds`) and its queue; absent until a batch has completed, and once
    /// nothing is left. An estimate, not a promise: provisioning times vary.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub estimated_completion: Option<Time>,
}

impl OneDriveTenantStatus {
    /// Every batch recorded in flight, in any geo (and one recorded before Multi-Geo).
    pub fn batches(&self) -> Vec<&BatchStatus> {
        self.geos.iter().filter_map(|g| g.current_batch.as_ref()).chain(self.current_batch.as_ref()).collect()
    }
}

/// One geo's pipeline: where its users are enqueued, the batch in flight there, how long its
/// batches take and its users.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GeoStatus {
    /// The location code (NAM, EUR, ...); empty for a single-geo tenant's only geo.
    #[serde(default)]
    pub location: String,
    /// Whether this is the central geo (`spec.adminUrl`): users without a preferred data
    /// location, or with one the tenant does not have, are enqueued here.
    #[serde(default)]
    pub central: bool,
    /// The admin host this geo's users are enqueued through.
    pub admin_url: String,
    /// The enqueue request in flight here. Recorded before it is sent, so a restart resumes it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_batch: Option<BatchStatus>,
    /// Seconds the last completed batch of this geo took, enqueue to its last user's site: the
    /// first poll of its next batch waits for most of it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_batch_seconds: Option<i64>,
    /// The users routed to this geo.
    #[serde(default)]
    pub users: UserCounts,
}

/// Distinct users (two sites naming one user count once).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, schemars::JsonSchema)]
pub struct UserCounts {
    pub desired: i32,
    pub ready: i32,
    pub pending: i32,
    pub provisioning: i32,
    pub failed: i32,
}

/// A batch in flight. The tenant is cluster-scoped and its readers need not see any namespace's
/// users: the users themselves are recorded in the operator's namespace (`usersRecord`), the
/// tenant only says how many there are.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BatchStatus {
    pub id: i64,
    /// Every user in the request, in the order sent (held in memory; never written here).
    /// Versions before 0.2 wrote it: read once, then moved to the operator's namespace.
    #[serde(default, skip_serializing)]
    pub users: Vec<String>,
    pub size: i32,
    /// The user whose site marks the batch as done (the seeds' rule): the last of `users`.
    /// Written by versions before 0.2 only.
    #[serde(default, skip_serializing)]
    pub last_user: String,
    /// When the batch was recorded (just before the request was sent).
    pub enqueued_at: Time,
    /// Whether SharePoint accepted the request. A batch recorded but not yet confirmed is re-sent
    /// after a restart: enqueueing is idempotent on the service.
    #[serde(default)]
    pub sent: bool,
    /// Where the users are recorded: the key of this batch's entry in the ConfigMap
    /// `<tenant>.onedrive-batches` of the operator's namespace (`batch-<id>-<digest>`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub users_record: Option<String>,
}

/// Parses a Kubernetes/Go duration (`60s`, `1h30m`), rejecting negative and zero values.
pub fn parse_duration(field: &str, text: &str) -> Result<jiff::SignedDuration, String> {
    // A number of more than 7 digits is refused before parsing: the parser's arithmetic would
    // overflow (a panic), and a time that far ahead is past the last date a timestamp can hold.
    // Seven digits of hours are 1,141 years; a 32-character field holds at most four such terms.
    if text.split(|c: char| !c.is_ascii_digit()).any(|digits| digits.len() > 7) {
        return Err(format!("{field}: {text:?} is too large"));
    }
    let parsed: kube::core::Duration = text
        .parse()
        .map_err(|e| format!("{field}: {text:?} is not a duration ({e}); use e.g. 60s, 15m or 24h"))?;
    if parsed.is_negative() {
        return Err(format!("{field}: {text:?} is negative"));
    }
    let std: std::time::Duration = parsed.into();
    if std.is_zero() {
        return Err(format!("{field}: {text:?} must be greater than zero"));
    }
    jiff::SignedDuration::try_from(std).map_err(|e| format!("{field}: {text:?} is too large ({e})"))
}
