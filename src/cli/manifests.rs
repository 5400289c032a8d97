//! What the command-line tools read: a `OneDriveTenant` manifest, optionally followed by the
//! Secrets it references, exactly as `onedrive-operator simulate` prints them; and the client they
//! make of it, under the same rules the operator applies.

use std::collections::BTreeMap;

use base64::Engine;
use serde_json::Value;

use crate::api::OneDriveTenant;
use crate::m365::{
    EndpointPolicy, M365Error, SecretScope, SecretStore, StoredSecret, TENANTS_ANNOTATION, TenantClient,
    TenantConfig, credentials_for,
};

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
                let bound = value["metadata"]["annotations"][TENANTS_ANNOTATION].as_str();
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
                secrets.insert(name, StoredSecret::from_parts(value["type"].as_str(), bound, data));
            }
            _ => {}
        }
    }
    let tenant = tenant.ok_or("no OneDriveTenant in the file")?;
    Ok(Manifests { tenant, secrets, namespace: namespace.unwrap_or_else(|| "onedrive-operator".into()) })
}

pub fn client_for(
    m: &Manifests,
    env: &dyn Fn(&str) -> Option<String>,
    policy: &EndpointPolicy,
) -> Result<TenantClient, M365Error> {
    let tenant = m.tenant.metadata.name.as_deref().unwrap_or_default();
    let scope = SecretScope { secrets: &m.secrets, namespace: &m.namespace, tenant };
    let credentials = credentials_for(&m.tenant.spec, &scope, env, None)?;
    let config = TenantConfig::from_spec(&m.tenant.spec).with_policy(policy.clone());
    TenantClient::new(config, credentials)
}

/// The manifest as the API server and the operator would take it: every shape rule of the CRD,
/// then the endpoint policy. Nothing is sent for a manifest that fails.
pub fn check_manifest(m: &Manifests, policy: &EndpointPolicy) -> Result<(), M365Error> {
    crate::api::validate::tenant(&m.tenant)
        .map_err(|problems| M365Error::InvalidSpec(problems.join("; ")))?;
    policy.check_spec(&m.tenant.spec)
}
