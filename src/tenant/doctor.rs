//! `onedrive-operator doctor` and `check`: the tenant client's checks without Kubernetes.
//! Input is a `OneDriveTenant` manifest, optionally followed by the Secrets it references,
//! exactly as `onedrive-operator simulate` prints them.

use std::collections::BTreeMap;

use base64::Engine;
use serde_json::Value;

use super::permissions::{self, Audience};
use super::{SecretStore, TenantClient, TenantConfig, TenantError, credentials_for};
use crate::api::OneDriveTenant;
use crate::plan::{Limits, Lookup, Observation, ProfileMeaning, reason, user_key};

/// A tenant manifest and the Secrets that came with it.
pub struct Manifests {
    pub tenant: OneDriveTenant,
    pub secrets: SecretStore,
    pub namespace: String,
}

/// Parses a multi-document YAML file: one `OneDriveTenant`, any number of `Secret`s.
pub fn parse_manifests(text: &str) -> Result<Manifests, String> {
    let mut tenant = None;
    let mut secrets = SecretStore::new();
    let mut namespace = None;
    for (i, doc) in serde_yaml::Deserializer::from_str(text).enumerate() {
        let value: Value = match serde::Deserialize::deserialize(doc) {
            Ok(v) => v,
            Err(e) => return Err(format!("document {}: {e}", i + 1)),
        };
        match value["kind"].as_str() {
            Some("OneDriveTenant") => {
                if tenant.is_some() {
                    return Err("more than one OneDriveTenant: give one tenant per file".into());
                }
                tenant = Some(
                    serde_json::from_value::<OneDriveTenant>(value.clone())
                        .map_err(|e| format!("document {}: not a valid OneDriveTenant: {e}", i + 1))?,
                );
            }
            Some("Secret") => {
                let name =
                    value["metadata"]["name"].as_str().ok_or("a Secret without metadata.name")?.to_string();
                namespace = namespace.or(value["metadata"]["namespace"].as_str().map(str::to_string));
                let mut data = BTreeMap::new();
                for (k, v) in value["data"].as_object().into_iter().flatten() {
                    let bytes = base64::engine::general_purpose::STANDARD
                        .decode(v.as_str().unwrap_or_default().trim())
                        .map_err(|e| format!("Secret {name} data.{k} is not base64: {e}"))?;
                    data.insert(k.clone(), bytes);
                }
                for (k, v) in value["stringData"].as_object().into_iter().flatten() {
                    data.insert(k.clone(), v.as_str().unwrap_or_default().as_bytes().to_vec());
                }
                secrets.insert(name, data);
            }
            _ => {}
        }
    }
    let tenant = tenant.ok_or("no OneDriveTenant in the file")?;
    Ok(Manifests { tenant, secrets, namespace: namespace.unwrap_or_else(|| "onedrive-operator".into()) })
}

/// One line of the checklist.
pub struct Check {
    pub name: String,
    pub outcome: Outcome,
}

pub enum Outcome {
    Passed(String),
    /// Could not be checked (not a failure).
    Skipped(String),
    Failed(String),
}

fn client_for(m: &Manifests, env: &dyn Fn(&str) -> Option<String>) -> Result<TenantClient, TenantError> {
    let credentials = credentials_for(&m.tenant.spec, &m.secrets, &m.namespace, env, None)?;
    TenantClient::new(TenantConfig::from_spec(&m.tenant.spec), credentials)
}

/// Runs every check in order; later checks are skipped once one they depend on failed.
pub async fn doctor(m: &Manifests, env: &dyn Fn(&str) -> Option<String>) -> Vec<Check> {
    let mut checks = Vec::new();
    let mut push = |name: &str, outcome: Outcome| checks.push(Check { name: name.into(), outcome });
    match Limits::from_spec(&m.tenant.spec).and_then(|l| m.tenant.spec.auth.kind().map(|k| (l, k))) {
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
    let client = match client_for(m, env) {
        Ok(c) => {
            push(
                "credentials",
                Outcome::Passed(format!(
                    "{} credentials for client {}",
                    c.credentials().kind(),
                    c.credentials().client_id()
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
    let sharepoint_ok = match client.sharepoint_token().await {
        Ok(()) => {
            push("Entra ID token for SharePoint", Outcome::Passed(client.config().admin_url.clone()));
            true
        }
        Err(e) => {
            push("Entra ID token for SharePoint", Outcome::Failed(e.to_string()));
            false
        }
    };
    for (ok, audience, resource) in [
        (graph_ok, Audience::Graph, client.config().graph_url.clone()),
        (sharepoint_ok, Audience::SharePoint, client.config().admin_url.clone()),
    ] {
        if ok {
            let (name, outcome) = permission_check(&client, audience, &resource, &m.tenant.spec.tenant_id);
            push(&name, outcome);
        }
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
        match client.sharepoint_reachable().await {
            Ok(()) => push(
                "SharePoint admin host accepts the token",
                Outcome::Passed("POST /_api/contextinfo".into()),
            ),
            Err(e) => push("SharePoint admin host accepts the token", Outcome::Failed(e.to_string())),
        }
        let name = format!(
            "enqueue ({:?}) accepts this token kind ({})",
            m.tenant.spec.enqueue_method,
            client.credentials().kind()
        );
        match probe_user {
            // Enqueueing a user who already has a site is a no-op on the service.
            Some(user) => match client.enqueue(std::slice::from_ref(&user)).await {
                Ok(()) => push(
                    &name,
                    Outcome::Passed(format!("probed with {user}, who already has a OneDrive (a no-op)")),
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

/// `check`: each user's observed state, one line per user, named with the reason the
/// controller would write (both read the same observation: one classification).
pub async fn check_users(
    m: &Manifests,
    users: &[String],
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Vec<String>, TenantError> {
    let client = client_for(m, env)?;
    let lookups: Vec<Lookup> = users.iter().map(|u| Lookup { user: u.clone(), profile: true }).collect();
    let seen = client.observe_lookups(&lookups).await?;
    Ok(users.iter().map(|u| format!("{u}: {}", describe(seen.get(&user_key(u))))).collect())
}

/// One observation in words, led by the reason a `OneDriveSite` would show.
pub fn describe(o: Option<&Observation>) -> String {
    let Some(o) = o else { return "unknown: not looked up".into() };
    if let Some(reason) = o.refusal() {
        let detail = match o {
            Observation::Profile(p) => format!("the user profile shows {} ({})", p.name, p.code),
            Observation::UserNotFound => "no such user in the directory".into(),
            Observation::UserNotLicensed => "no enabled SharePoint plan in the directory".into(),
            _ => {
                "the account may not sign in (accountEnabled is false), so SharePoint never creates its site"
                    .into()
            }
        };
        return format!("{reason}: {detail}");
    }
    match o {
        Observation::HasSite { url } => format!("{}: has a OneDrive at {url}", reason::PROVISIONED),
        Observation::NoSite => format!(
            "{}: no OneDrive yet; licensed and allowed to sign in, so it can be enqueued",
            reason::PENDING
        ),
        Observation::Profile(p) if p.meaning == ProfileMeaning::Working => format!(
            "{}: no OneDrive yet; the user profile shows {} ({}): SharePoint is creating it",
            reason::SPSSITEERROR,
            p.name,
            p.code
        ),
        Observation::Profile(p) => {
            format!("{}: no OneDrive; the user profile shows {} ({})", reason::PENDING, p.name, p.code)
        }
        Observation::LookupFailed { status, code } => format!(
            "unknown: the tenant answered HTTP {status} ({code}), which says nothing about the OneDrive ({} when it repeats)",
            reason::LOOKUP_FAILING
        ),
        _ => "unknown: the lookup got no answer (throttled or unavailable)".into(),
    }
}
