//! Turning a tenant's `spec.auth` and the Secrets it references into [`Credentials`], with
//! errors that name the Secret, the key and the fix.
//!
//! A Secret is used by a tenant only if the Secret says so (the [`TENANTS_ANNOTATION`] names the
//! tenants allowed to use it) and only if it is of the type the tenant's auth mode uses: a tenant
//! writer cannot have the operator send another tenant's key, or a certificate's private key as a
//! "refresh token". RBAC cannot select Secrets by label or annotation: this check is the operator's.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use super::{Credentials, M365Error, RotationCallback};
use crate::api::{OneDriveTenantSpec, TenantAuthKind};
use crate::jose::{Certificate, private_key_from_pem};

/// Annotation on a credentials Secret: the `OneDriveTenant`s allowed to use it, comma-separated.
pub const TENANTS_ANNOTATION: &str = crate::api::annotations::SECRET_TENANTS;
/// The Secret type of a certificate (`tls.crt`, `tls.key`).
pub const TLS_TYPE: &str = "kubernetes.io/tls";
/// The Secret type of a refresh token.
pub const OPAQUE_TYPE: &str = "Opaque";

/// One Secret as the operator reads it: its type, the tenants it is bound to, its data.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StoredSecret {
    /// `type` (absent reads as `Opaque`, as the API server defaults it).
    pub type_: Option<String>,
    /// The tenants [`TENANTS_ANNOTATION`] names.
    pub tenants: Vec<String>,
    pub data: BTreeMap<String, Vec<u8>>,
}

impl StoredSecret {
    /// A Secret of `type_` bound to `tenants`.
    pub fn new(type_: &str, tenants: &[&str], data: BTreeMap<String, Vec<u8>>) -> StoredSecret {
        StoredSecret {
            type_: Some(type_.into()),
            tenants: tenants.iter().map(|t| t.to_string()).collect(),
            data,
        }
    }

    /// From a Secret's type, annotations and data.
    pub fn from_parts(
        type_: Option<&str>,
        annotation: Option<&str>,
        data: BTreeMap<String, Vec<u8>>,
    ) -> StoredSecret {
        StoredSecret { type_: type_.map(str::to_string), tenants: bound_tenants(annotation), data }
    }

    fn type_name(&self) -> &str {
        self.type_.as_deref().unwrap_or(OPAQUE_TYPE)
    }
}

/// The tenant names a [`TENANTS_ANNOTATION`] value lists.
pub fn bound_tenants(annotation: Option<&str>) -> Vec<String> {
    annotation
        .unwrap_or_default()
        .split(',')
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .map(str::to_string)
        .collect()
}

/// Secrets by name.
pub type SecretStore = BTreeMap<String, StoredSecret>;

/// Where Azure Workload Identity mounts the projected token by default.
pub const DEFAULT_FEDERATED_TOKEN_FILE: &str = "/var/run/secrets/azure/tokens/azure-identity-token";

/// `AZURE_FEDERATED_TOKEN_FILE`, or the default mount path.
pub fn federated_token_file(env: &dyn Fn(&str) -> Option<String>) -> PathBuf {
    env("AZURE_FEDERATED_TOKEN_FILE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(DEFAULT_FEDERATED_TOKEN_FILE))
}

/// Where a tenant's credentials are looked for: the Secrets of `namespace` (the operator's),
/// used only by the tenant named `tenant`.
pub struct SecretScope<'a> {
    pub secrets: &'a SecretStore,
    pub namespace: &'a str,
    pub tenant: &'a str,
}

impl SecretScope<'_> {
    /// The Secret `name`, if it exists, is bound to this tenant and is of the type `kind` uses.
    pub fn usable(&self, name: &str, kind: TenantAuthKind) -> Result<&StoredSecret, M365Error> {
        let (namespace, tenant) = (self.namespace, self.tenant);
        let secret = self.secrets.get(name).ok_or_else(|| {
            M365Error::CredentialsInvalid(format!(
                "Secret {namespace}/{name} does not exist: create it in the operator's namespace (Secrets of a cluster-scoped tenant live there)"
            ))
        })?;
        if !secret.tenants.iter().any(|t| t == tenant) {
            return Err(M365Error::CredentialsInvalid(format!(
                "Secret {namespace}/{name} is not bound to tenant {tenant}, so nothing was sent with it: a Secret is used only by the tenants its annotation {TENANTS_ANNOTATION} names. If this Secret is meant for {tenant}: kubectl annotate secret -n {namespace} {name} {TENANTS_ANNOTATION}={tenant}"
            )));
        }
        let wanted = match kind {
            TenantAuthKind::Certificate => TLS_TYPE,
            _ => OPAQUE_TYPE,
        };
        if secret.type_name() != wanted {
            return Err(M365Error::CredentialsInvalid(format!(
                "Secret {namespace}/{name} is of type {}, but spec.auth.{} needs a Secret of type {wanted}: nothing was sent with it",
                secret.type_name(),
                kind.as_str()
            )));
        }
        Ok(secret)
    }

    fn value(&self, name: &str, kind: TenantAuthKind, key: &str) -> Result<&[u8], M365Error> {
        let secret = self.usable(name, kind)?;
        secret.data.get(key).map(Vec::as_slice).ok_or_else(|| {
            M365Error::CredentialsInvalid(format!(
                "Secret {}/{name} has no key {key:?}: add it",
                self.namespace
            ))
        })
    }
}

/// Credentials for `spec` from the Secrets `scope` allows and the environment.
pub fn credentials_for(
    spec: &OneDriveTenantSpec,
    scope: &SecretScope,
    env: &dyn Fn(&str) -> Option<String>,
    on_rotate: Option<RotationCallback>,
) -> Result<Credentials, M365Error> {
    let auth = &spec.auth;
    let namespace = scope.namespace;
    match auth.kind().map_err(M365Error::CredentialsInvalid)? {
        TenantAuthKind::Certificate => {
            let c = auth.certificate.as_ref().expect("kind says certificate");
            let name = &c.secret_ref.name;
            let kind = TenantAuthKind::Certificate;
            let crt = String::from_utf8_lossy(scope.value(name, kind, "tls.crt")?).into_owned();
            let key = String::from_utf8_lossy(scope.value(name, kind, "tls.key")?).into_owned();
            let certificate = Certificate::from_pem(&crt).map_err(|e| {
                M365Error::CredentialsInvalid(format!("Secret {namespace}/{name} key tls.crt: {e}"))
            })?;
            let key = private_key_from_pem(&key).map_err(|e| {
                M365Error::CredentialsInvalid(format!("Secret {namespace}/{name} key tls.key: {e}"))
            })?;
            if key.to_public_key() != certificate.public_key {
                return Err(M365Error::CredentialsInvalid(format!(
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
        TenantAuthKind::WorkloadIdentity => {
            let w = auth.workload_identity.as_ref().expect("kind says workloadIdentity");
            let client_id = w.client_id.clone().or_else(|| env("AZURE_CLIENT_ID")).ok_or_else(|| {
                M365Error::CredentialsInvalid(
                    "workloadIdentity has no clientId and AZURE_CLIENT_ID is not set: set spec.auth.workloadIdentity.clientId or annotate the operator's ServiceAccount with azure.workload.identity/client-id".into(),
                )
            })?;
            Ok(Credentials::WorkloadIdentity { client_id, token_file: federated_token_file(env) })
        }
        TenantAuthKind::Delegated => {
            let d = auth.delegated.as_ref().expect("kind says delegated");
            let r = &d.refresh_token_secret_ref;
            let token = String::from_utf8_lossy(scope.value(&r.name, TenantAuthKind::Delegated, &r.key)?)
                .trim()
                .to_string();
            if token.is_empty() {
                return Err(M365Error::CredentialsInvalid(format!(
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
