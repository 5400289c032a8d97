//! A tenant's `spec.allowedNamespaces`: which namespaces' sites it serves. Decided before users
//! are grouped, so a refused site never shares a user's phase or queue place with an allowed one.

use std::collections::{BTreeMap, BTreeSet};

use kube::core::{Selector, SelectorExt};

use crate::api::OneDriveTenantSpec;

/// What a tenant allows. `None` from [`NamespacePolicy::from_spec`]: every namespace.
#[derive(Clone, Debug)]
pub struct NamespacePolicy {
    names: BTreeSet<String>,
    selector: Option<Selector>,
}

/// Whether a tenant serves a site's namespace.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Admission {
    Allowed,
    Refused,
    /// The namespace's labels are not known yet (a cache that has not seen it): neither served
    /// nor marked this cycle; the namespace's arrival in the cache triggers another.
    Unknown,
}

impl NamespacePolicy {
    /// The policy a tenant sets, or a message naming the field (the CRD rejects the same; the
    /// check is repeated for manifests that never passed through an API server).
    pub fn from_spec(spec: &OneDriveTenantSpec) -> Result<Option<NamespacePolicy>, String> {
        let Some(allowed) = &spec.allowed_namespaces else { return Ok(None) };
        if allowed.names.is_none() && allowed.selector.is_none() {
            return Err(crate::api::rules::ALLOWED_NAMESPACES_MESSAGE.to_string());
        }
        let selector = match &allowed.selector {
            Some(s) => Some(Selector::try_from(s.clone()).map_err(|e| {
                format!("spec.allowedNamespaces.selector is not a valid label selector: {e}")
            })?),
            None => None,
        };
        let names = allowed.names.iter().flatten().cloned().collect();
        Ok(Some(NamespacePolicy { names, selector }))
    }

    /// Whether deciding needs namespaces' labels at all.
    pub fn needs_labels(&self) -> bool {
        self.selector.is_some()
    }

    /// Whether `namespace` (with `labels`, `None` when unknown) is allowed.
    pub fn admits(&self, namespace: &str, labels: Option<&BTreeMap<String, String>>) -> Admission {
        if self.names.contains(namespace) {
            return Admission::Allowed;
        }
        match (&self.selector, labels) {
            (None, _) => Admission::Refused,
            (Some(_), None) => Admission::Unknown,
            (Some(s), Some(labels)) if s.matches(labels) => Admission::Allowed,
            (Some(_), Some(_)) => Admission::Refused,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::AllowedNamespaces;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, LabelSelectorRequirement};

    fn spec(allowed: Option<AllowedNamespaces>) -> OneDriveTenantSpec {
        OneDriveTenantSpec { allowed_namespaces: allowed, ..OneDriveTenantSpec::default() }
    }

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn unset_allows_every_namespace_and_empty_is_refused_with_the_fix() {
        assert!(NamespacePolicy::from_spec(&spec(None)).unwrap().is_none());
        let e = NamespacePolicy::from_spec(&spec(Some(AllowedNamespaces::default()))).unwrap_err();
        assert!(e.contains("leave spec.allowedNamespaces out to allow every namespace"), "{e}");
    }

    #[test]
    fn names_or_labels_allow_and_unknown_labels_defer() {
        let policy = NamespacePolicy::from_spec(&spec(Some(AllowedNamespaces {
            names: Some(vec!["finance".into()]),
            selector: Some(LabelSelector {
                match_labels: Some(labels(&[("onedrive", "allowed")])),
                ..LabelSelector::default()
            }),
        })))
        .unwrap()
        .unwrap();
        assert!(policy.needs_labels());
        assert_eq!(policy.admits("finance", None), Admission::Allowed);
        assert_eq!(policy.admits("sales", Some(&labels(&[("onedrive", "allowed")]))), Admission::Allowed);
        assert_eq!(policy.admits("sales", Some(&labels(&[("onedrive", "no")]))), Admission::Refused);
        assert_eq!(policy.admits("sales", Some(&BTreeMap::new())), Admission::Refused);
        assert_eq!(policy.admits("sales", None), Admission::Unknown);
    }

    #[test]
    fn names_alone_need_no_labels_and_refuse_the_rest() {
        let policy = NamespacePolicy::from_spec(&spec(Some(AllowedNamespaces {
            names: Some(vec!["finance".into()]),
            selector: None,
        })))
        .unwrap()
        .unwrap();
        assert!(!policy.needs_labels());
        assert_eq!(policy.admits("finance", None), Admission::Allowed);
        assert_eq!(policy.admits("other", None), Admission::Refused);
    }

    #[test]
    fn expressions_work_and_a_bad_operator_is_named() {
        let with = |operator: &str, values: Option<Vec<String>>| {
            NamespacePolicy::from_spec(&spec(Some(AllowedNamespaces {
                names: None,
                selector: Some(LabelSelector {
                    match_expressions: Some(vec![LabelSelectorRequirement {
                        key: "team".into(),
                        operator: operator.into(),
                        values,
                    }]),
                    ..LabelSelector::default()
                }),
            })))
        };
        let policy = with("In", Some(vec!["a".into(), "b".into()])).unwrap().unwrap();
        assert_eq!(policy.admits("x", Some(&labels(&[("team", "b")]))), Admission::Allowed);
        assert_eq!(policy.admits("x", Some(&labels(&[("team", "c")]))), Admission::Refused);
        let policy = with("DoesNotExist", None).unwrap().unwrap();
        assert_eq!(policy.admits("x", Some(&BTreeMap::new())), Admission::Allowed);
        let e = with("Near", None).unwrap_err();
        assert!(e.contains("spec.allowedNamespaces.selector"), "{e}");
    }
}
