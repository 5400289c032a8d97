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

/// Tests and the demo point public hosts at the simulator with this variable: `FROM=TO` pairs,
/// comma-separated, loopback targets only.
pub const HOST_OVERRIDES_ENV: &str = "ONEDRIVE_OPERATOR_TEST_HOST_OVERRIDES";

/// The test-only host overrides `env` holds (none when unset).
pub fn host_overrides(env: &dyn Fn(&str) -> Option<String>) -> Result<super::HostOverrides, TenantError> {
    let pairs: Vec<String> = env(HOST_OVERRIDES_ENV)
        .unwrap_or_default()
        .split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(str::to_string)
        .collect();
    super::HostOverrides::parse(&pairs)
        .map_err(|e| TenantError::InvalidRequest(format!("{HOST_OVERRIDES_ENV}: {e}")))
}

fn client_for(m: &Manifests, env: &dyn Fn(&str) -> Option<String>) -> Result<TenantClient, TenantError> {
    let credentials = credentials_for(&m.tenant.spec, &m.secrets, &m.namespace, env, None)?;
    let config = TenantConfig::from_spec(&m.tenant.spec).with_host_overrides(host_overrides(env)?);
    TenantClient::new(config, credentials)
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

fn describe_geos(geos: &[super::Geo]) -> String {
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
    geo: &super::Geo,
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
    // Profiles are read at each user's geo's admin host: learn the geos first.
    if let Err(e) = client.geos().await {
        tracing::warn!(error = %e, "the tenant's geos are unknown; profiles are read at the central admin host");
    }
    let lookups: Vec<Lookup> = users.iter().map(|u| Lookup::exact(u)).collect();
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
