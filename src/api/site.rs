//! `OneDriveSite`: "this user has a OneDrive for Business site", one resource per user.

// Each `printcolumn(...)` repeats `type_ = ...`; clippy mistakes them for duplicated attributes.
#![allow(clippy::duplicated_attributes)]

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

/// Desired state: the user who must have a OneDrive.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[kube(
    group = "onedrive-operator.dev",
    version = "v1alpha1",
    kind = "OneDriveSite",
    namespaced,
    status = "OneDriveSiteStatus",
    shortname = "ods",
    category = "onedrive",
    derive = "PartialEq",
    derive = "Default",
    doc = "A user who must have a OneDrive for Business site. Deleting the resource never deletes the OneDrive.",
    printcolumn(name = "User", type_ = "string", json_path = ".spec.user"),
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(
        name = "Reason",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].reason",
        priority = 1
    ),
    printcolumn(name = "Site", type_ = "string", json_path = ".status.siteUrl", priority = 1),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new(crate::api::rules::TENANT_REF_IMMUTABLE).message(crate::api::rules::TENANT_REF_IMMUTABLE_MESSAGE))]
pub struct OneDriveSiteSpec {
    /// The user's principal name or sign-in email, e.g. `alice@contoso.com`. Immutable.
    #[schemars(length(min = 3, max = 113))]
    #[x_kube(
        validation = Rule::new(crate::api::rules::UPN).message(crate::api::rules::UPN_MESSAGE),
        validation = Rule::new(crate::api::rules::IMMUTABLE).message(crate::api::rules::USER_IMMUTABLE_MESSAGE)
    )]
    pub user: String,

    /// The `OneDriveTenant` this user belongs to. Optional when the operator runs with a default
    /// tenant. Immutable: what the operator learnt of the user belongs to that tenant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant_ref: Option<TenantRef>,

    /// Site collection administrators of this OneDrive besides its owner, added to the tenant's
    /// `spec.siteAdmins` (user principal names). Only users the tenant's
    /// `spec.perSite.allowedSiteAdmins` lists take effect; others are refused
    /// (`SettingsNotAllowed`). The operator removes only administrators it added itself.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 20), inner(length(min = 3, max = 113)))]
    #[x_kube(
        validation = Rule::new(crate::api::settings::SITE_ADMINS).message(crate::api::settings::SITE_ADMINS_MESSAGE),
        validation = Rule::new(crate::api::settings::UNIQUE_ADMINS).message(crate::api::settings::UNIQUE_ADMINS_MESSAGE)
    )]
    pub site_admins: Vec<String>,

    /// This OneDrive's storage quota (`1Ti`, `500Gi`; 1Gi to 5Ti, rounded up to whole MiB),
    /// instead of the tenant's `spec.storageQuota`; at most the tenant's
    /// `spec.perSite.maxStorageQuota`. Removing it leaves the quota as it is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 32))]
    #[x_kube(validation = Rule::new(crate::api::settings::STORAGE_QUOTA).message(crate::api::settings::STORAGE_QUOTA_MESSAGE))]
    pub storage_quota: Option<String>,
}

/// A reference to a cluster-scoped `OneDriveTenant`.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct TenantRef {
    /// Name of the `OneDriveTenant`.
    #[schemars(length(min = 1, max = 253))]
    #[x_kube(validation = Rule::new(crate::api::rules::OBJECT_NAME).message(crate::api::rules::OBJECT_NAME_MESSAGE))]
    pub name: String,
}

/// Where the user stands. `Ready` with reason `Provisioned` once the site exists.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Copy, Hash, schemars::JsonSchema)]
pub enum SitePhase {
    /// The user has no site yet and waits for a batch slot (or has not been checked yet).
    Pending,
    /// Enqueued: SharePoint shows the SPSSITEERROR placeholder while its timer job creates the site.
    #[serde(rename = "SPSSITEERROR")]
    SpsSiteError,
    /// The site exists (`status.siteUrl`).
    Ready,
    /// The user cannot get a site without a person fixing something (see the Ready condition).
    Failed,
}

impl SitePhase {
    pub fn as_str(self) -> &'static str {
        match self {
            SitePhase::Pending => "Pending",
            SitePhase::SpsSiteError => "SPSSITEERROR",
            SitePhase::Ready => "Ready",
            SitePhase::Failed => "Failed",
        }
    }
}

impl std::fmt::Display for SitePhase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Observed state, written only by the operator.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct OneDriveSiteStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<SitePhase>,
    /// The personal site, once it exists.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub site_url: Option<String>,
    /// When the user was last sent to SharePoint for provisioning.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enqueued_at: Option<Time>,
    /// The tenant batch the user was last sent in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch: Option<i64>,
    /// The Multi-Geo location whose admin host the user is (or would be) enqueued through: their
    /// preferred data location when the tenant has that geo, else the central geo. Absent in a
    /// single-geo tenant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub geo: Option<String>,
    /// When the site was first seen to exist.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provisioned_at: Option<Time>,
    /// When the user entered the state the `Ready` condition describes (its status and reason):
    /// the date its message gives. It moves only when that state changes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<Time>,
    /// The declared administrators and quota as the operator last applied them, and when.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub settings: Option<super::SiteSettingsStatus>,
    /// The `onedrive-operator.dev/retry` value the operator last acted on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<String>,
    /// `Ready` (the summary), `Reconciling`, `Stalled` and, when settings are declared,
    /// `SiteConfigured`.
    #[serde(default)]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
}
