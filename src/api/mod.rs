//! The API contract: the `OneDriveSite`, `OneDriveSiteSet` and `OneDriveTenant` custom resources.
//!
//! Validation lives in the CRD schema itself (CEL rules with messages a person understands),
//! so `kubectl apply` refuses bad manifests before the operator ever sees them.

mod allowed;
pub mod annotations;
mod cloud;
mod conditions;
mod kept;
pub(crate) mod rules;
mod settings;
mod site;
mod site_set;
mod tenant;
pub mod validate;
mod vocabulary;

pub use allowed::{AllowedNamespaces, GroupSourceGrant};
pub use cloud::Cloud;
pub use conditions::{ConditionSet, condition, find_condition};
pub use kept::{KeptCondition, KeptSite, KeptStatus, SetOwner};
pub use settings::{MAX_STORAGE_QUOTA_MB, PerSiteSettings, SiteSettingsStatus, storage_quota_mb};
pub use site::{OneDriveSite, OneDriveSiteSpec, OneDriveSiteStatus, SitePhase, TenantRef};
pub use site_set::{
    ChildCounts, GroupRef, HeldRemovals, OneDriveSiteSet, OneDriveSiteSetSpec, OneDriveSiteSetStatus,
    RemovalGuard, RemovalPolicy, SetSource, SiteTemplate,
};
pub use tenant::{
    AssertionAlgorithm, BatchStatus, CertificateAuth, DelegatedAuth, EnqueueMethod, GeoSpec, GeoStatus,
    OneDriveTenant, OneDriveTenantSpec, OneDriveTenantStatus, SecretKeyRef, SecretRef, TenantAuth,
    TenantAuthKind, TenantProgress, TenantWideListing, UserCounts, WorkloadIdentityAuth, parse_duration,
};
pub use vocabulary::{
    ConditionStatus, CycleResult, EventReason, KubernetesReason, SetReason, SiteReason, TenantReason, reason,
};

/// API group of the resources.
pub const GROUP: &str = "onedrive-operator.dev";
/// The only served version.
pub const VERSION: &str = "v1alpha1";
/// SharePoint refuses more than 200 users in one enqueue request.
pub const MAX_BATCH_SIZE: i32 = 200;

/// Condition types written on both resources (kstatus conventions, so Flux reads them).
pub mod condition_type {
    pub const READY: &str = "Ready";
    pub const RECONCILING: &str = "Reconciling";
    pub const STALLED: &str = "Stalled";
    /// A site's declared administrators and quota are applied (sites only).
    pub const SITE_CONFIGURED: &str = "SiteConfigured";
}

/// The CRDs, in the order they are printed and stored in `crds/`.
pub fn crds()
-> Vec<k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition> {
    use kube::CustomResourceExt;
    vec![OneDriveSite::crd(), OneDriveSiteSet::crd(), OneDriveTenant::crd()]
}

/// The CRDs as one multi-document YAML stream (what `onedrive-operator crd` prints).
pub fn crds_yaml() -> String {
    crds().iter().map(crd_yaml).collect::<Vec<_>>().join("---\n")
}

/// One CRD as YAML (the content of its file in `crds/`).
pub fn crd_yaml(
    crd: &k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
) -> String {
    serde_yaml::to_string(crd).expect("a CustomResourceDefinition always serializes to YAML")
}
