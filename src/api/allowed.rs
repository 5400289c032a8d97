//! `OneDriveTenant.spec.allowedNamespaces`: which namespaces' sites may use a tenant.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::KubeSchema;
use serde::{Deserialize, Serialize};

/// Namespaces allowed by name, by label, or both (a namespace matching either is allowed).
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new(crate::api::rules::ALLOWED_NAMESPACES).message(crate::api::rules::ALLOWED_NAMESPACES_MESSAGE),
    validation = Rule::new(crate::api::rules::SELECTOR_OPERATORS).message(crate::api::rules::SELECTOR_OPERATORS_MESSAGE),
)]
pub struct AllowedNamespaces {
    /// Namespace names.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 256))]
    pub names: Option<Vec<String>>,
    /// A label selector over namespaces (`matchLabels`, `matchExpressions`); `{}` selects all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<LabelSelector>,
}

/// `OneDriveTenant.spec.groupSources[]`: the namespaces whose `OneDriveSiteSet`s may read these
/// groups' members through the tenant's credentials. A namespace writer could otherwise list any
/// group's members (names of people they need not know) just by naming it.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct GroupSourceGrant {
    /// Namespace names.
    #[schemars(length(min = 1, max = 256), inner(length(min = 1, max = 63)))]
    pub namespaces: Vec<String>,
    /// Groups, each as a set names it: its object id or its mail address (compared without
    /// regard to case), or `*` for every group of the tenant.
    #[schemars(length(min = 1, max = 256), inner(length(min = 1, max = 256)))]
    pub groups: Vec<String>,
}

impl GroupSourceGrant {
    /// The wildcard that grants every group.
    pub const ALL_GROUPS: &'static str = "*";
}
