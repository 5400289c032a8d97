//! What `onedrive-operator simulate` prints: a ready-to-apply Secret and `OneDriveTenant`
//! pointing at the running simulator.

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::api::ObjectMeta;

use crate::api::{
    CertificateAuth, DelegatedAuth, OneDriveTenant, OneDriveTenantSpec, SecretKeyRef, SecretRef, TenantAuth,
};

/// Which credentials the printed tenant uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum PrintedAuth {
    Certificate,
    Delegated,
}

pub struct Endpoints {
    pub tenant_id: String,
    pub admin_url: String,
    pub graph_url: String,
    pub authority_host: String,
}

/// A tenant named `name` and the Secret (in `namespace`, the operator's) it references.
pub fn tenant_and_secret(
    name: &str,
    namespace: &str,
    endpoints: &Endpoints,
    auth: PrintedAuth,
    client_id: &str,
    secret_data: BTreeMap<String, String>,
) -> (OneDriveTenant, Secret) {
    let secret_name = format!("{name}-credentials");
    let (auth_spec, type_) = match auth {
        PrintedAuth::Certificate => (
            TenantAuth {
                certificate: Some(CertificateAuth {
                    client_id: client_id.into(),
                    secret_ref: SecretRef { name: secret_name.clone() },
                    algorithm: Default::default(),
                }),
                ..Default::default()
            },
            crate::m365::TLS_TYPE,
        ),
        PrintedAuth::Delegated => (
            TenantAuth {
                delegated: Some(DelegatedAuth {
                    client_id: client_id.into(),
                    refresh_token_secret_ref: SecretKeyRef {
                        name: secret_name.clone(),
                        key: "refresh_token".into(),
                    },
                }),
                ..Default::default()
            },
            crate::m365::OPAQUE_TYPE,
        ),
    };
    let tenant = OneDriveTenant::new(
        name,
        OneDriveTenantSpec {
            tenant_id: endpoints.tenant_id.clone(),
            admin_url: endpoints.admin_url.clone(),
            cloud: Default::default(),
            graph_url: Some(endpoints.graph_url.clone()),
            authority_host: Some(endpoints.authority_host.clone()),
            geos: Vec::new(),
            auth: auth_spec,
            enqueue_method: Default::default(),
            batch_size: crate::api::MAX_BATCH_SIZE,
            poll_interval: "10s".into(),
            provisioning_timeout: "24h".into(),
            drift_check_interval: "24h".into(),
            tenant_wide_listing: Default::default(),
            allowed_namespaces: None,
            ..Default::default()
        },
    );
    let secret = Secret {
        metadata: ObjectMeta {
            name: Some(secret_name),
            namespace: Some(namespace.into()),
            // Bound to the printed tenant: the operator uses a Secret only for the tenants it names.
            annotations: Some([(crate::m365::TENANTS_ANNOTATION.to_string(), name.to_string())].into()),
            ..Default::default()
        },
        type_: Some(type_.into()),
        data: Some(secret_data.into_iter().map(|(k, v)| (k, ByteString(v.into_bytes()))).collect()),
        ..Default::default()
    };
    (tenant, secret)
}

/// Both as one multi-document YAML stream (Secret first, so `kubectl apply -f` creates it first).
pub fn to_yaml(tenant: &OneDriveTenant, secret: &Secret) -> String {
    let mut secret_value = serde_json::to_value(secret).expect("a Secret serializes");
    secret_value["apiVersion"] = "v1".into();
    secret_value["kind"] = "Secret".into();
    format!(
        "{}---\n{}",
        serde_yaml::to_string(&secret_value).expect("YAML"),
        serde_yaml::to_string(tenant).expect("YAML")
    )
}
