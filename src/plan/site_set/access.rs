//! Who may read which group: a set's group source is honoured only where the tenant's
//! `spec.groupSources` lets the set's namespace read that group. Decided before anything is
//! read, from the names as the set and the tenant spell them (no lookup of the group first: a
//! refused set must cause no Graph read at all).

use super::SetProblem;
use crate::api::{GroupRef, GroupSourceGrant, SetReason};

/// `Ok` when `tenant`'s grants let `namespace` read `group`; otherwise the refusal.
pub fn may_read(
    grants: &[GroupSourceGrant],
    tenant: &str,
    namespace: &str,
    group: &GroupRef,
) -> Result<(), SetProblem> {
    // The name the group will be read by: its id when the set gives one (the CRD allows only
    // one of the two; this stays right if it did not).
    let read_by = group.id.as_deref().or(group.mail.as_deref()).unwrap_or_default();
    let granted = grants.iter().filter(|g| g.namespaces.iter().any(|n| n.trim() == namespace)).any(|g| {
        g.groups.iter().map(|a| a.trim()).any(|allowed| {
            allowed == GroupSourceGrant::ALL_GROUPS
                || (!read_by.is_empty() && read_by.eq_ignore_ascii_case(allowed))
        })
    });
    if granted {
        return Ok(());
    }
    Err(SetProblem::new(
        SetReason::GroupNotAllowed,
        format!(
            "the OneDriveTenant {tenant} does not let namespace {namespace} read the members of {}: \
             a cluster administrator lists it (or \"*\") for this namespace in the tenant's spec.groupSources; \
             no member was read",
            group.describe()
        ),
        true,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grant(namespaces: &[&str], groups: &[&str]) -> GroupSourceGrant {
        GroupSourceGrant {
            namespaces: namespaces.iter().map(|s| s.to_string()).collect(),
            groups: groups.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn only_granted_namespaces_read_granted_groups() {
        let id = "0f5a2c1e-8b7d-4c3a-9e21-5d6f7a8b9c0d";
        let by_id = GroupRef { id: Some(id.into()), mail: None };
        let by_mail = GroupRef { id: None, mail: Some("Wave3@contoso.com".into()) };
        let grants = [grant(&["hr"], &[id, "wave3@contoso.com"]), grant(&["it"], &["*"])];
        assert!(may_read(&grants, "contoso", "hr", &by_id).is_ok());
        assert!(may_read(&grants, "contoso", "hr", &by_mail).is_ok(), "mail compared without case");
        assert!(may_read(&grants, "contoso", "it", &by_id).is_ok(), "the wildcard");
        let refused = may_read(&grants, "contoso", "sales", &by_id).unwrap_err();
        assert_eq!(refused.reason, SetReason::GroupNotAllowed);
        assert!(refused.stalled);
        assert!(refused.message.contains("spec.groupSources") && refused.message.contains("sales"));
        assert!(may_read(&[], "contoso", "hr", &by_id).is_err(), "no grant: nobody");
        let other = GroupRef { id: Some("11111111-2222-4333-8444-555555555555".into()), mail: None };
        assert!(may_read(&grants, "contoso", "hr", &other).is_err());
    }
}
