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
pub struct OneDriveSiteSpec {
    /// The user's principal name or sign-in email, e.g. `alice@contoso.com`. Immutable.
    #[schemars(length(min = 3, max = 113))]
    #[x_kube(
        validation = Rule::new(crate::api::rules::UPN).message(crate::api::rules::UPN_MESSAGE),
        validation = Rule::new(crate::api::rules::IMMUTABLE).message(crate::api::rules::USER_IMMUTABLE_MESSAGE)
    )]
    pub user: String,

    /// The `OneDriveTenant` this user belongs to. Optional when the operator runs with a default tenant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant_ref: Option<TenantRef>,
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
    /// `Ready` (the summary), `Reconciling` and `Stalled`.
    #[serde(default)]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
}
