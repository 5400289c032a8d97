//! `OneDriveSiteSet`: every member of an Entra ID group, or every user of a list, gets a
//! `OneDriveSite` the operator creates, keeps and deletes — never a OneDrive.

// Each `printcolumn(...)` repeats `type_ = ...`; clippy mistakes them for duplicated attributes.
#![allow(clippy::duplicated_attributes)]

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use super::TenantRef;

/// Desired state: where the users come from and what each of their `OneDriveSite`s declares.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "onedrive-operator.dev",
    version = "v1alpha1",
    kind = "OneDriveSiteSet",
    namespaced,
    status = "OneDriveSiteSetStatus",
    shortname = "odss",
    category = "onedrive",
    derive = "PartialEq",
    derive = "Default",
    doc = "Users who must each have a OneDrive: the members of an Entra ID group or a list. The operator keeps one OneDriveSite per user; deleting either never deletes a OneDrive.",
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(name = "Members", type_ = "integer", json_path = ".status.members"),
    printcolumn(name = "Ready sites", type_ = "integer", json_path = ".status.children.ready"),
    printcolumn(name = "Failed", type_ = "integer", json_path = ".status.children.failed"),
    printcolumn(
        name = "Reason",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].reason",
        priority = 1
    ),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new(crate::api::rules::TENANT_REF_IMMUTABLE).message(crate::api::rules::SET_TENANT_REF_IMMUTABLE_MESSAGE))]
pub struct OneDriveSiteSetSpec {
    /// The `OneDriveTenant` of every user of the set. Optional when the operator runs with a
    /// default tenant. Immutable (its sites' `tenantRef` is).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant_ref: Option<TenantRef>,

    /// Where the users come from: exactly one of `group` and `users`.
    pub source: SetSource,

    /// What every `OneDriveSite` of the set carries.
    #[serde(default)]
    pub template: SiteTemplate,

    /// How often a group's members are read again (a `users` list is read on every change):
    /// from 1m to 168h.
    #[serde(default = "default_resync_interval")]
    #[schemars(length(max = 32))]
    #[x_kube(
        validation = Rule::new(crate::api::rules::DURATION).message(Message::Message(format!("spec.resyncInterval {}", crate::api::rules::DURATION_MESSAGE))),
        validation = Rule::new(crate::api::rules::RESYNC_INTERVAL).message(crate::api::rules::RESYNC_INTERVAL_MESSAGE)
    )]
    pub resync_interval: String,

    /// What happens to the `OneDriveSite` of a user who leaves the source: `Delete` it (the
    /// OneDrive stays) or `Keep` it.
    #[serde(default)]
    pub removal_policy: RemovalPolicy,

    /// How many deletions one sync may make before a person must confirm them.
    #[serde(default)]
    pub removal_guard: RemovalGuard,
}

fn default_resync_interval() -> String {
    "15m".to_string()
}

/// The defaults a manifest gets from the API server (a resync every 15 minutes).
impl Default for OneDriveSiteSetSpec {
    fn default() -> Self {
        OneDriveSiteSetSpec {
            tenant_ref: None,
            source: SetSource::default(),
            template: SiteTemplate::default(),
            resync_interval: default_resync_interval(),
            removal_policy: RemovalPolicy::default(),
            removal_guard: RemovalGuard::default(),
        }
    }
}

/// Exactly one of a group or a list.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new(crate::api::rules::ONE_SOURCE).message(crate::api::rules::ONE_SOURCE_MESSAGE))]
pub struct SetSource {
    /// An Entra ID group: its transitive members who are users. The tenant's
    /// `spec.groupSources` must allow this namespace to read it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<GroupRef>,
    /// User principal names (at most 5,000 per set; split a longer list over several sets). A
    /// list of 5,000 addresses of 40 characters is about 200 kB, well under etcd's 1.5 MB object
    /// limit; `kubectl apply` copies it into an annotation limited to 256 kB (use
    /// `--server-side` for long lists).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 5000), inner(length(max = 256)))]
    pub users: Option<Vec<String>>,
}

/// An Entra ID group by object id or by mail address (exactly one).
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new(crate::api::rules::ONE_GROUP_REF).message(crate::api::rules::ONE_GROUP_REF_MESSAGE))]
pub struct GroupRef {
    /// The group's object id (a GUID).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 36))]
    #[x_kube(validation = Rule::new(crate::api::rules::GUID).message(crate::api::rules::GUID_MESSAGE))]
    pub id: Option<String>,
    /// The group's mail address, e.g. `wave3@contoso.com`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 3, max = 256))]
    #[x_kube(validation = Rule::new(crate::api::rules::UPN).message(crate::api::rules::GROUP_MAIL_MESSAGE))]
    pub mail: Option<String>,
}

impl GroupRef {
    /// How the group is named, for messages: `group 0f5a…` or `group wave3@contoso.com`.
    pub fn describe(&self) -> String {
        match (&self.id, &self.mail) {
            (Some(id), _) => format!("group {id}"),
            (None, Some(mail)) => format!("group {mail}"),
            (None, None) => "a group named neither by id nor by mail".into(),
        }
    }
}

/// What every `OneDriveSite` of a set carries besides its user.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct SiteTemplate {
    /// Labels of every site (the operator adds `onedrive-operator.dev/site-set`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Annotations of every site.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    /// `siteAdmins` of every site: the tenant's `spec.perSite.allowedSiteAdmins` applies, as for
    /// a hand-written site.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 20), inner(length(min = 3, max = 113)))]
    #[x_kube(
        validation = Rule::new(crate::api::settings::SITE_ADMINS).message(crate::api::settings::SITE_ADMINS_MESSAGE),
        validation = Rule::new(crate::api::settings::UNIQUE_ADMINS).message(crate::api::settings::UNIQUE_ADMINS_MESSAGE)
    )]
    pub site_admins: Vec<String>,
    /// `storageQuota` of every site: at most the tenant's `spec.perSite.maxStorageQuota`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 32))]
    #[x_kube(validation = Rule::new(crate::api::settings::STORAGE_QUOTA).message(crate::api::settings::STORAGE_QUOTA_MESSAGE))]
    pub storage_quota: Option<String>,
}

/// What becomes of a leaver's `OneDriveSite`.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, schemars::JsonSchema)]
pub enum RemovalPolicy {
    /// Delete the `OneDriveSite` (never the OneDrive).
    #[default]
    Delete,
    /// Keep it, owned by the set (deleted with the set).
    Keep,
}

/// Deletions beyond both limits in one sync wait for a person.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct RemovalGuard {
    /// More than this share of the set's sites (percent)...
    #[serde(default = "default_max_percent")]
    #[schemars(range(min = 0, max = 100))]
    pub max_percent: i32,
    /// ...and more than this many sites.
    #[serde(default = "default_max_count")]
    #[schemars(range(min = 0))]
    pub max_count: i32,
}

impl Default for RemovalGuard {
    fn default() -> Self {
        RemovalGuard { max_percent: default_max_percent(), max_count: default_max_count() }
    }
}

fn default_max_percent() -> i32 {
    10
}
fn default_max_count() -> i32 {
    50
}

/// Observed state, written only by the operator.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct OneDriveSiteSetStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Users the source listed at the last sync.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub members: Option<i32>,
    /// When the source was last read completely.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_sync: Option<Time>,
    /// The set's `OneDriveSite`s by phase.
    #[serde(default)]
    pub children: ChildCounts,
    /// Members without a site of the set: names the CRD would refuse, names a hand-written
    /// `OneDriveSite` (or another set's) already uses. The first few are named in the message.
    #[serde(default)]
    pub invalid_members: i32,
    #[serde(default)]
    pub conflicts: i32,
    /// Deletions the removal guard holds back, and the value of the
    /// `onedrive-operator.dev/confirm-removals` annotation that lets them go.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub held_removals: Option<HeldRemovals>,
    /// The tenant's estimate of when its queue — this set's users with it — is provisioned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub estimated_completion: Option<Time>,
    /// `Ready`, `Reconciling`, `Stalled`.
    #[serde(default)]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
}

/// The set's `OneDriveSite`s, by phase (`waiting`: no status yet).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ChildCounts {
    pub total: i32,
    pub ready: i32,
    pub pending: i32,
    /// SPSSITEERROR: enqueued, being created.
    pub provisioning: i32,
    pub failed: i32,
    pub waiting: i32,
    /// Sites of users who left the source, kept by `removalPolicy: Keep` or held by the guard.
    pub left: i32,
}

/// Deletions held back by the removal guard.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HeldRemovals {
    pub count: i32,
    /// Annotate the set `onedrive-operator.dev/confirm-removals=<token>` to delete exactly these.
    pub token: String,
}
