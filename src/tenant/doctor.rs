//! `onedrive-operator doctor` and `check`: the tenant client's checks without Kubernetes.
//! Input is a `OneDriveTenant` manifest, optionally followed by the Secrets it references,
//! exactly as `onedrive-operator simulate` prints them.

use std::collections::BTreeMap;

use base64::Engine;
use serde_json::Value;

use super::{SecretStore, TenantClient, TenantConfig, TenantError, credentials_for};
use crate::api::OneDriveTenant;
use crate::plan::{Limits, Observation, user_key};

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

/// `check`: each user's observed state, one line per user.
pub async fn check_users(
    m: &Manifests,
    users: &[String],
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Vec<String>, TenantError> {
    let client = client_for(m, env)?;
    let seen = client.observe(users).await?;
    let mut lines = Vec::new();
    for u in users {
        let line = match seen.get(&user_key(u)) {
            Some(Observation::HasSite { url }) => format!("{u}: has a OneDrive at {url}"),
            Some(Observation::NoSite) => {
                let state = client.profile_state(u).await.ok().flatten();
                match state {
                    Some(1) => format!(
                        "{u}: no OneDrive yet; enqueued (SharePoint shows SPSSITEERROR while creating it)"
                    ),
                    Some(code) if code != 0 => format!(
                        "{u}: no OneDrive; profile state {code} ({})",
                        crate::plan::profile_state_name(code)
                    ),
                    _ => format!("{u}: no OneDrive yet"),
                }
            }
            Some(Observation::UserNotFound) => format!("{u}: no such user in the directory"),
            Some(Observation::UserNotLicensed) => format!("{u}: has no SharePoint licence"),
            Some(Observation::ProfileState(code)) => {
                format!("{u}: profile state {code} ({})", crate::plan::profile_state_name(*code))
            }
            Some(Observation::Unknown) | None => format!("{u}: unknown (the lookup failed or was throttled)"),
        };
        lines.push(line);
    }
    Ok(lines)
}
