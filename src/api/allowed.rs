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
