//! The CRD's shape rules, checked again in Rust for manifests that never passed an API server
//! (`doctor` and `check` read files). The patterns are the ones the CEL rules use
//! ([`super::rules`]); lengths and ranges are the schema's. Where a host may point is not a
//! shape: the endpoint policy decides that (`tenant::policy`).

use regex::Regex;

use super::rules;
use super::{OneDriveTenant, OneDriveTenantSpec, parse_duration};

fn matches(pattern: &str, value: &str) -> bool {
    Regex::new(pattern).expect("the CRD's patterns are valid regular expressions").is_match(value)
}

/// A string field: its length within `min..=max` and, with a pattern, matching it.
fn field(
    problems: &mut Vec<String>,
    name: &str,
    value: &str,
    (min, max): (usize, usize),
    rule: Option<(&str, &str)>,
) {
    let n = value.chars().count();
    if n < min || n > max {
        problems.push(format!("{name} must be {min} to {max} characters long (it has {n})"));
    } else if let Some((pattern, message)) = rule
        && !matches(pattern, value)
    {
        problems.push(format!("{name} {value:?}: {message}"));
    }
}

/// `spec.user` of a `OneDriveSite` (what `check` is asked about).
pub fn user(upn: &str) -> Result<(), String> {
    let mut problems = Vec::new();
    field(&mut problems, "spec.user", upn, (3, 113), Some((rules::UPN_PATTERN, rules::UPN_MESSAGE)));
    problems.pop().map_or(Ok(()), Err)
}

/// Every shape rule of the `OneDriveTenant` CRD: the problems, each naming its field.
pub fn tenant(t: &OneDriveTenant) -> Result<(), Vec<String>> {
    let mut problems = Vec::new();
    let name = t.metadata.name.as_deref().unwrap_or_default();
    field(
        &mut problems,
        "metadata.name",
        name,
        (1, 253),
        Some((rules::OBJECT_NAME_PATTERN, rules::OBJECT_NAME_MESSAGE)),
    );
    spec(&mut problems, &t.spec);
    if problems.is_empty() { Ok(()) } else { Err(problems) }
}

fn spec(problems: &mut Vec<String>, s: &OneDriveTenantSpec) {
    field(
        problems,
        "spec.tenantId",
        &s.tenant_id,
        (1, 253),
        Some((rules::TENANT_ID_PATTERN, rules::TENANT_ID_MESSAGE)),
    );
    field(problems, "spec.adminUrl", &s.admin_url, (1, 2048), None);
    for (f, v) in [("spec.graphUrl", &s.graph_url), ("spec.authorityHost", &s.authority_host)] {
        if let Some(v) = v {
            field(problems, f, v, (1, 2048), None);
        }
    }
    if s.geos.len() > 64 {
        problems.push(format!("spec.geos lists {} geos: at most 64", s.geos.len()));
    }
    for (i, g) in s.geos.iter().enumerate() {
        let f = format!("spec.geos[{i}].location");
        field(
            problems,
            &f,
            &g.location,
            (3, 3),
            Some((rules::GEO_LOCATION_PATTERN, rules::GEO_LOCATION_MESSAGE)),
        );
        field(problems, &format!("spec.geos[{i}].adminUrl"), &g.admin_url, (1, 2048), None);
        if s.geos.iter().filter(|h| h.location == g.location).count() > 1 {
            problems.push(rules::UNIQUE_GEOS_MESSAGE.to_string());
        }
    }
    if !(1..=super::MAX_BATCH_SIZE).contains(&s.batch_size) {
        problems.push(rules::BATCH_SIZE_MESSAGE.to_string());
    }
    for (f, v) in [
        ("spec.pollInterval", &s.poll_interval),
        ("spec.provisioningTimeout", &s.provisioning_timeout),
        ("spec.driftCheckInterval", &s.drift_check_interval),
    ] {
        let before = problems.len();
        field(problems, f, v, (1, 32), Some((rules::DURATION_PATTERN, rules::DURATION_MESSAGE)));
        if problems.len() == before
            && let Err(e) = parse_duration(f, v)
        {
            problems.push(e);
        }
    }
    auth(problems, &s.auth);
    if let Some(a) = &s.allowed_namespaces
        && a.names.is_none()
        && a.selector.is_none()
    {
        problems.push(rules::ALLOWED_NAMESPACES_MESSAGE.to_string());
    }
    problems.dedup();
}

fn auth(problems: &mut Vec<String>, a: &super::TenantAuth) {
    if let Err(e) = a.kind() {
        problems.push(e);
        return;
    }
    let secret = |problems: &mut Vec<String>, f: &str, name: &str| {
        field(problems, f, name, (1, 253), Some((rules::OBJECT_NAME_PATTERN, rules::OBJECT_NAME_MESSAGE)));
    };
    if let Some(c) = &a.certificate {
        field(problems, "spec.auth.certificate.clientId", &c.client_id, (1, 64), None);
        secret(problems, "spec.auth.certificate.secretRef.name", &c.secret_ref.name);
    }
    if let Some(w) = &a.workload_identity
        && let Some(id) = &w.client_id
    {
        field(problems, "spec.auth.workloadIdentity.clientId", id, (1, 64), None);
    }
    if let Some(d) = &a.delegated {
        field(problems, "spec.auth.delegated.clientId", &d.client_id, (1, 64), None);
        secret(problems, "spec.auth.delegated.refreshTokenSecretRef.name", &d.refresh_token_secret_ref.name);
        field(
            problems,
            "spec.auth.delegated.refreshTokenSecretRef.key",
            &d.refresh_token_secret_ref.key,
            (1, 253),
            None,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{CertificateAuth, SecretRef, TenantAuth};

    fn tenant_with(tenant_id: &str) -> OneDriveTenant {
        OneDriveTenant::new(
            "contoso",
            OneDriveTenantSpec {
                tenant_id: tenant_id.into(),
                admin_url: "https://contoso-admin.sharepoint.com".into(),
                auth: TenantAuth {
                    certificate: Some(CertificateAuth {
                        client_id: "app".into(),
                        secret_ref: SecretRef { name: "contoso-cert".into() },
                        algorithm: Default::default(),
                    }),
                    ..Default::default()
                },
                batch_size: 200,
                poll_interval: "60s".into(),
                provisioning_timeout: "24h".into(),
                drift_check_interval: "24h".into(),
                ..Default::default()
            },
        )
    }

    #[test]
    fn a_tenant_id_that_is_no_id_is_refused_as_the_api_server_would() {
        assert_eq!(tenant(&tenant_with("contoso.onmicrosoft.com")), Ok(()));
        let problems = tenant(&tenant_with("../../steal?x=")).unwrap_err();
        assert!(problems[0].starts_with("spec.tenantId"), "{problems:?}");
        let mut t = tenant_with("8d1e4f12-7c3a-4b5e-9f60-0a1b2c3d4e5f");
        t.spec.batch_size = 500;
        t.spec.poll_interval = "soon".into();
        t.spec.auth.certificate.as_mut().unwrap().secret_ref.name = "Not_A_Name".into();
        let problems = tenant(&t).unwrap_err();
        assert_eq!(problems.len(), 3, "{problems:?}");
    }

    #[test]
    fn users_are_checked_with_the_crds_pattern() {
        assert!(user("o'neil@contoso.com").is_ok());
        assert!(user("alice_fabrikam.com#EXT#@contoso.onmicrosoft.com").is_ok());
        assert!(user("no-at-sign").is_err());
        assert!(user("a b@contoso.com").is_err());
        assert!(user(&format!("{}@contoso.com", "a".repeat(120))).is_err());
    }
}
