//! Turning a tenant's `spec.auth` and the Secrets it references into [`Credentials`], with
//! errors that name the Secret, the key and the fix.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use super::{Credentials, RotationCallback, TenantError};
use crate::api::OneDriveTenantSpec;
use crate::jose::{Certificate, private_key_from_pem};

/// Secrets by name, each a map of key → bytes (as in `Secret.data`).
pub type SecretStore = BTreeMap<String, BTreeMap<String, Vec<u8>>>;

/// Where Azure Workload Identity mounts the projected token by default.
pub const DEFAULT_FEDERATED_TOKEN_FILE: &str = "/var/run/secrets/azure/tokens/azure-identity-token";

/// `AZURE_FEDERATED_TOKEN_FILE`, or the default mount path.
pub fn federated_token_file(env: &dyn Fn(&str) -> Option<String>) -> PathBuf {
    env("AZURE_FEDERATED_TOKEN_FILE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(DEFAULT_FEDERATED_TOKEN_FILE))
}

fn secret_value<'a>(
    secrets: &'a SecretStore,
    namespace: &str,
    name: &str,
    key: &str,
) -> Result<&'a [u8], TenantError> {
    let secret = secrets.get(name).ok_or_else(|| {
        TenantError::CredentialsInvalid(format!(
            "Secret {namespace}/{name} does not exist: create it in the operator's namespace (Secrets of a cluster-scoped tenant live there)"
        ))
    })?;
    secret.get(key).map(Vec::as_slice).ok_or_else(|| {
        TenantError::CredentialsInvalid(format!("Secret {namespace}/{name} has no key {key:?}: add it"))
    })
}

/// Credentials for `spec` from `secrets` (all in `namespace`, the operator's) and the environment.
pub fn credentials_for(
    spec: &OneDriveTenantSpec,
    secrets: &SecretStore,
    namespace: &str,
    env: &dyn Fn(&str) -> Option<String>,
    on_rotate: Option<RotationCallback>,
) -> Result<Credentials, TenantError> {
    let auth = &spec.auth;
    match auth.kind().map_err(TenantError::CredentialsInvalid)? {
        crate::api::TenantAuthKind::Certificate => {
            let c = auth.certificate.as_ref().expect("kind says certificate");
            let name = &c.secret_ref.name;
            let crt =
                String::from_utf8_lossy(secret_value(secrets, namespace, name, "tls.crt")?).into_owned();
            let key =
                String::from_utf8_lossy(secret_value(secrets, namespace, name, "tls.key")?).into_owned();
            let certificate = Certificate::from_pem(&crt).map_err(|e| {
                TenantError::CredentialsInvalid(format!("Secret {namespace}/{name} key tls.crt: {e}"))
            })?;
            let key = private_key_from_pem(&key).map_err(|e| {
                TenantError::CredentialsInvalid(format!("Secret {namespace}/{name} key tls.key: {e}"))
            })?;
            if key.to_public_key() != certificate.public_key {
                return Err(TenantError::CredentialsInvalid(format!(
                    "Secret {namespace}/{name}: tls.key is not the private key of tls.crt"
                )));
            }
            Ok(Credentials::Certificate {
                client_id: c.client_id.clone(),
                certificate,
                key: Box::new(key),
                algorithm: c.algorithm,
            })
        }
        crate::api::TenantAuthKind::WorkloadIdentity => {
            let w = auth.workload_identity.as_ref().expect("kind says workloadIdentity");
            let client_id = w.client_id.clone().or_else(|| env("AZURE_CLIENT_ID")).ok_or_else(|| {
                TenantError::CredentialsInvalid(
                    "workloadIdentity has no clientId and AZURE_CLIENT_ID is not set: set spec.auth.workloadIdentity.clientId or annotate the operator's ServiceAccount with azure.workload.identity/client-id".into(),
                )
            })?;
            Ok(Credentials::WorkloadIdentity { client_id, token_file: federated_token_file(env) })
        }
        crate::api::TenantAuthKind::Delegated => {
            let d = auth.delegated.as_ref().expect("kind says delegated");
            let r = &d.refresh_token_secret_ref;
            let token = String::from_utf8_lossy(secret_value(secrets, namespace, &r.name, &r.key)?)
                .trim()
                .to_string();
            if token.is_empty() {
                return Err(TenantError::CredentialsInvalid(format!(
                    "Secret {namespace}/{} key {:?} is empty: store a SharePoint administrator's refresh token in it",
                    r.name, r.key
                )));
            }
            Ok(Credentials::Delegated {
                client_id: d.client_id.clone(),
                refresh_token: Arc::new(Mutex::new(token)),
                on_rotate,
            })
        }
    }
}
