//! `onedrive-operator doctor`: a tenant's credentials, permissions, hosts and whether its enqueue
//! call accepts this token kind, as a checklist that names each fix.

use crate::cli::manifests::{Manifests, check_manifest, client_for};
use crate::m365::permissions::{self, Audience};
use crate::m365::{Credentials, EndpointPolicy, Geo, TenantClient};
use crate::plan::{Limits, Observation, user_key};

/// One line of the checklist.
pub struct Check {
    pub name: String,
    pub outcome: Outcome,
}

pub enum Outcome {
    Passed(String),
    /// Passed, but something needs attention soon (not a failure).
    Warned(String),
    /// Could not be checked (not a failure).
    Skipped(String),
    Failed(String),
}

/// Runs every check in order; later checks are skipped once one they depend on failed.
pub async fn doctor(
    m: &Manifests,
    env: &dyn Fn(&str) -> Option<String>,
    policy: &EndpointPolicy,
) -> Vec<Check> {
    let mut checks = Vec::new();
    let mut push = |name: &str, outcome: Outcome| checks.push(Check { name: name.into(), outcome });
    let spec = check_manifest(m, policy)
        .map_err(|e| e.to_string())
        .and_then(|()| Limits::from_spec(&m.tenant.spec))
        .and_then(|l| m.tenant.spec.auth.kind().map(|k| (l, k)));
    match spec {
        Ok((l, k)) => push(
            "tenant spec",
            Outcome::Passed(format!(
                "{} auth, batches of {}, poll every {}",
                k.as_str(),
                l.batch_size,
                crate::plan::format_duration(l.poll_interval)
            )),
        ),
        Err(e) => {
            push("tenant spec", Outcome::Failed(e));
            return checks;
        }
    }
    let client = match client_for(m, env, policy) {
        Ok(c) => {
            let outcome = credential_dates(
                Outcome::Passed(format!(
                    "{} credentials for client {}",
                    c.credentials().kind(),
                    c.credentials().client_id()
                )),
                c.credentials(),
                jiff::Timestamp::now(),
            );
            let usable = !matches!(outcome, Outcome::Failed(_));
            push("credentials", outcome);
            if !usable {
                return checks;
            }
            let cfg = c.config();
            push(
                "cloud and hosts",
                Outcome::Passed(format!(
                    "{} cloud: sign-in {}, Graph {}, central admin host {}",
                    cfg.cloud, cfg.authority_host, cfg.graph_url, cfg.admin_url
                )),
            );
            c
        }
        Err(e) => {
            push("credentials", Outcome::Failed(e.to_string()));
            return checks;
        }
    };
    let graph_ok = match client.graph_token().await {
        Ok(()) => {
            push("Entra ID token for Microsoft Graph", Outcome::Passed(client.config().graph_url.clone()));
            true
        }
        Err(e) => {
            push("Entra ID token for Microsoft Graph", Outcome::Failed(e.to_string()));
            false
        }
    };
    if graph_ok {
        let graph = client.config().graph_url.clone();
        let (name, outcome) = permission_check(&client, Audience::Graph, &graph, &m.tenant.spec.tenant_id);
        push(&name, outcome);
        push(
            "Graph token may read group members (OneDriveSiteSet group sources)",
            group_check(&client, &graph, &m.tenant.spec),
        );
    }
    let geos = if graph_ok {
        match client.geos().await {
            Ok(geos) => {
                push("Multi-Geo: the tenant's geos", Outcome::Passed(describe_geos(&geos)));
                geos
            }
            Err(e) => {
                push("Multi-Geo: the tenant's geos", Outcome::Failed(e.to_string()));
                client.known_geos()
            }
        }
    } else {
        client.known_geos()
    };
    // Every geo's admin host is its own token audience and its own endpoint: each is checked.
    let mut sharepoint_ok = true;
    for geo in &geos {
        sharepoint_ok &= check_admin_host(&client, geo, &m.tenant.spec.tenant_id, &mut push).await;
    }
    let mut probe_user = None;
    if graph_ok {
        let users = client.some_users(20).await;
        match users {
            Ok(users) if users.is_empty() => push(
                "Graph: read users and their OneDrives",
                Outcome::Skipped("the directory returned no users".into()),
            ),
            Ok(users) => match client.observe(&users).await {
                Ok(seen) => {
                    probe_user = users
                        .iter()
                        .find(|u| matches!(seen.get(&user_key(u)), Some(Observation::HasSite { .. })))
                        .cloned();
                    let with_site =
                        seen.values().filter(|o| matches!(o, Observation::HasSite { .. })).count();
                    push(
                        "Graph: read users and their OneDrives",
                        Outcome::Passed(format!(
                            "{} users looked up, {with_site} with a OneDrive",
                            seen.len()
                        )),
                    );
                }
                Err(e) => push("Graph: read users and their OneDrives", Outcome::Failed(e.to_string())),
            },
            Err(e) => push("Graph: read users and their OneDrives", Outcome::Failed(e.to_string())),
        }
    }
    if sharepoint_ok {
        let name = format!(
            "enqueue ({:?}) accepts this token kind ({})",
            m.tenant.spec.enqueue_method,
            client.credentials().kind()
        );
        match probe_user {
            // Enqueueing a user who already has a site is a no-op on the service.
            // Sent to the central geo: a user who has a site is ignored by every geo's host.
            Some(user) => match client.enqueue(std::slice::from_ref(&user)).await {
                Ok(()) => push(
                    &name,
                    Outcome::Passed(format!(
                        "probed at {} with {user}, who already has a OneDrive (a no-op)",
                        client.config().admin_url
                    )),
                ),
                Err(e) => push(&name, Outcome::Failed(e.to_string())),
            },
            None => {
                push(&name, Outcome::Skipped("no user with a OneDrive found to probe with safely".into()))
            }
        }
    }
    checks
}

/// A certificate outside its validity fails with its dates; one expiring within 30 days warns.
fn credential_dates(passed: Outcome, credentials: &Credentials, now: jiff::Timestamp) -> Outcome {
    let Credentials::Certificate { certificate, .. } = credentials else { return passed };
    let Outcome::Passed(detail) = passed else { return passed };
    let dates = |t: Option<jiff::Timestamp>| t.map_or("unknown".to_string(), |t| t.to_string());
    let (from, until) = (dates(certificate.not_before), dates(certificate.not_after));
    if certificate.not_before.is_some_and(|t| now < t) {
        return Outcome::Failed(format!(
            "the certificate is not valid yet: notBefore {from} (notAfter {until}); Entra ID refuses assertions signed with it until then"
        ));
    }
    match certificate.not_after {
        Some(t) if t <= now => Outcome::Failed(format!(
            "the certificate expired: notAfter {until} (notBefore {from}); upload a renewed certificate to the app registration and store it in the Secret"
        )),
        Some(t) if t.duration_since(now) <= jiff::SignedDuration::from_hours(24 * 30) => {
            Outcome::Warned(format!(
                "{detail}; the certificate expires soon: notAfter {until}, renew it and upload it to the app registration"
            ))
        }
        _ => Outcome::Passed(format!("{detail}; certificate valid until {until}")),
    }
}

fn describe_geos(geos: &[Geo]) -> String {
    if geos.len() == 1 && geos[0].location.is_empty() {
        return format!("single-geo tenant; admin host {}", geos[0].admin_url);
    }
    let each: Vec<String> = geos
        .iter()
        .map(|g| {
            let name = if g.location.is_empty() { "(unnamed)" } else { &g.location };
            format!("{name}{} {}", if g.central { " (central)" } else { "" }, g.admin_url)
        })
        .collect();
    format!("{} geos: {}", geos.len(), each.join(", "))
}

/// One geo's admin host: a token for it, what the token grants, and `contextinfo` accepting it.
async fn check_admin_host(
    client: &TenantClient,
    geo: &Geo,
    tenant_id: &str,
    push: &mut impl FnMut(&str, Outcome),
) -> bool {
    let label = match (geo.location.as_str(), geo.central) {
        ("", _) => "SharePoint admin host".to_string(),
        (l, true) => format!("SharePoint admin host of {l} (central)"),
        (l, false) => format!("SharePoint admin host of {l}"),
    };
    if let Err(e) = client.sharepoint_token(&geo.admin_url).await {
        push(&format!("Entra ID token for the {label}"), Outcome::Failed(e.to_string()));
        return false;
    }
    push(&format!("Entra ID token for the {label}"), Outcome::Passed(geo.admin_url.clone()));
    let (name, outcome) = permission_check(client, Audience::SharePoint, &geo.admin_url, tenant_id);
    let granted = !matches!(outcome, Outcome::Failed(_));
    push(&format!("{name} ({label})"), outcome);
    match client.sharepoint_reachable(&geo.admin_url).await {
        Ok(()) => {
            push(&format!("{label} accepts the token"), Outcome::Passed("POST /_api/contextinfo".into()));
            granted
        }
        Err(e) => {
            push(&format!("{label} accepts the token"), Outcome::Failed(e.to_string()));
            false
        }
    }
}

/// Whether the Graph token may list groups' members: a failure when the tenant lets any
/// namespace read a group (`spec.groupSources`), a warning otherwise (nothing needs it yet).
fn group_check(client: &TenantClient, graph: &str, spec: &crate::api::OneDriveTenantSpec) -> Outcome {
    let Some(claims) = client.token_claims(graph) else {
        return Outcome::Skipped("the token's claims could not be read".into());
    };
    match (permissions::group_members(&claims), spec.group_sources.is_empty()) {
        (Ok(granted), _) => Outcome::Passed(granted),
        (Err(missing), true) => {
            Outcome::Warned(format!("{missing} (spec.groupSources is empty: nothing needs it yet)"))
        }
        (Err(missing), false) => {
            Outcome::Failed(format!("{missing}: spec.groupSources lets namespaces read groups"))
        }
    }
}

/// What the access token for `resource` grants, from its claims (the token is never shown).
fn permission_check(
    client: &TenantClient,
    audience: Audience,
    resource: &str,
    tenant_id: &str,
) -> (String, Outcome) {
    let name = format!("{audience:?} token grants what the operator needs");
    let Some(claims) = client.token_claims(resource) else {
        return (name, Outcome::Skipped("the token's claims could not be read".into()));
    };
    match permissions::check(&claims, audience, resource, tenant_id) {
        Ok(g) => (name, Outcome::Passed(format!("{} token: {}", g.identity, g.permissions.join(", ")))),
        Err(problems) => (name, Outcome::Failed(problems.join("; "))),
    }
}

/// Prints the checklist; returns whether everything passed (skips do not fail).
pub fn print_checks(tenant: &str, checks: &[Check]) -> bool {
    println!("onedrive-operator doctor: OneDriveTenant {tenant}");
    let mut ok = true;
    for c in checks {
        match &c.outcome {
            Outcome::Passed(d) => println!("  [ok]   {}: {d}", c.name),
            Outcome::Warned(d) => println!("  [warn] {}: {d}", c.name),
            Outcome::Skipped(d) => println!("  [skip] {}: {d}", c.name),
            Outcome::Failed(d) => {
                ok = false;
                println!("  [FAIL] {}: {d}", c.name);
            }
        }
    }
    println!(
        "{}",
        if ok {
            "All checks passed."
        } else {
            "Some checks failed: apply the fixes above and run doctor again."
        }
    );
    ok
}

#[cfg(test)]
mod tests {
    use super::*;

    fn certificate_until(until: jiff::Timestamp) -> Credentials {
        let key = crate::jose::generate_key();
        let certificate = crate::jose::self_signed_certificate_until(&key, "t", Some(until)).unwrap();
        Credentials::Certificate {
            client_id: "app".into(),
            certificate,
            key: Box::new(key),
            algorithm: Default::default(),
        }
    }

    #[test]
    fn a_certificate_is_judged_by_its_dates() {
        let now: jiff::Timestamp = "2026-12-05T00:00:00Z".parse().unwrap();
        let passed = || Outcome::Passed("ok".into());
        let at = |s: &str| s.parse::<jiff::Timestamp>().unwrap();
        match credential_dates(passed(), &certificate_until(at("2020-06-01T00:00:00Z")), now) {
            Outcome::Failed(m) => assert!(m.contains("expired: notAfter 2020-06-01T00:00:00Z"), "{m}"),
            _ => panic!("an expired certificate passed"),
        }
        match credential_dates(passed(), &certificate_until(at("2026-12-20T00:00:00Z")), now) {
            Outcome::Warned(m) => assert!(m.contains("notAfter 2026-12-20"), "{m}"),
            _ => panic!("a certificate expiring in 15 days did not warn"),
        }
        assert!(matches!(
            credential_dates(passed(), &certificate_until(at("2028-01-01T00:00:00Z")), now),
            Outcome::Passed(_)
        ));
    }
}
