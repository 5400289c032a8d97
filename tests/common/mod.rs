//! Shared test fixtures: test credentials and a simulator configuration that registers them.
#![allow(dead_code)]

use std::sync::LazyLock;

pub mod fake_cluster;

use jiff::SignedDuration;
use k8s_openapi::api::core::v1::Secret;
use onedrive_operator::api::{
    CertificateAuth, OneDriveSite, OneDriveTenant, OneDriveTenantSpec, SecretRef, TenantAuth,
};
use onedrive_operator::controller::{Reconciler, ReconcilerOptions, SiteSource};
use onedrive_operator::jose::{self, Certificate};
use onedrive_operator::simulator::{App, Clock, Config, SimHandle, UserSpec};
use rsa::PrivateKey;

pub const APP: &str = "11111111-2222-4333-8444-555555555555";
pub const FED_APP: &str = "66666666-7777-4888-9999-000000000000";
pub const SECRET_APP: &str = "secret-app";
pub const CLIENT_SECRET: &str = "s3cret-value-never-logged";
pub const REFRESH_TOKEN: &str = "rt-initial-never-logged";
pub const ISSUER: &str = "https://oidc.example.test/cluster";
pub const SUBJECT: &str = "system:serviceaccount:onedrive-operator:onedrive-operator";

pub static KEY: LazyLock<PrivateKey> = LazyLock::new(jose::generate_key);
pub static CERT: LazyLock<Certificate> =
    LazyLock::new(|| jose::self_signed_certificate(&KEY, "test").unwrap());
pub static ISSUER_KEY: LazyLock<PrivateKey> = LazyLock::new(jose::generate_key);

/// `users` plain users `user{i}@contoso.com`, plus `nolicence@` (unlicensed) and `has@` (has a
/// site); every test app registered; a manual clock; no jitter.
pub fn sim_config(users: usize) -> Config {
    let mut unlicensed = UserSpec::new("nolicence@contoso.com");
    unlicensed.licensed = false;
    let mut has = UserSpec::new("has@contoso.com");
    has.has_site = true;
    let mut all: Vec<UserSpec> = (0..users).map(|i| UserSpec::new(format!("user{i}@contoso.com"))).collect();
    all.extend([unlicensed, has]);
    Config {
        users: all,
        apps: vec![
            App::Certificate { client_id: APP.into(), certificate: CERT.clone() },
            App::Federated {
                client_id: FED_APP.into(),
                issuer: ISSUER.into(),
                subject: SUBJECT.into(),
                issuer_key: ISSUER_KEY.to_public_key(),
            },
            App::Secret { client_id: SECRET_APP.into(), secret: CLIENT_SECRET.into() },
            App::Delegated { client_id: APP.into(), refresh_tokens: vec![REFRESH_TOKEN.into()] },
        ],
        clock: Clock::Manual,
        jitter: 0.0,
        provision_delay: SignedDuration::from_mins(10),
        ..Config::default()
    }
}

/// A `kubernetes.io/tls` Secret `namespace/name` holding `certificate` and `key`, bound to the
/// tenants `tenants` (the operator uses it for those only).
pub fn tls_secret(
    namespace: &str,
    name: &str,
    tenants: &[&str],
    certificate: &Certificate,
    key: &PrivateKey,
) -> k8s_openapi::api::core::v1::Secret {
    use k8s_openapi::ByteString;
    k8s_openapi::api::core::v1::Secret {
        metadata: kube::api::ObjectMeta {
            name: Some(name.into()),
            namespace: Some(namespace.into()),
            annotations: Some(
                [(onedrive_operator::m365::TENANTS_ANNOTATION.to_string(), tenants.join(","))].into(),
            ),
            ..Default::default()
        },
        type_: Some("kubernetes.io/tls".into()),
        data: Some(std::collections::BTreeMap::from([
            ("tls.crt".into(), ByteString(certificate.to_pem().into_bytes())),
            ("tls.key".into(), ByteString(jose::private_key_to_pem(key).into_bytes())),
        ])),
        ..Default::default()
    }
}

/// A federated (workload identity) assertion as the kubelet would project it.
pub fn federated_assertion(subject: &str, now: i64) -> String {
    let claims = serde_json::json!({"aud": "api://AzureADTokenExchange", "iss": ISSUER, "sub": subject, "nbf": now, "exp": now + 3600});
    jose::sign_rsa(jose::Alg::RS256, &ISSUER_KEY, serde_json::json!({"kid": "k1"}), &claims).unwrap()
}

/// The reason of a site's `Ready` condition (empty without one).
pub fn ready_reason(s: &OneDriveSite) -> String {
    s.status
        .as_ref()
        .and_then(|st| {
            onedrive_operator::api::find_condition(
                &st.conditions,
                onedrive_operator::api::condition_type::READY,
            )
        })
        .map(|c| c.reason.clone())
        .unwrap_or_default()
}

/// A child process killed when dropped.
pub struct Child(pub std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `onedrive-operator simulate ARGS --listen 127.0.0.1:0` and returns it with the
/// manifests it printed (read up to the tenant's last field).
pub fn spawn_simulate(args: &[&str]) -> (Child, String) {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};
    let mut child = Command::new(env!("CARGO_BIN_EXE_onedrive-operator"))
        .arg("simulate")
        .args(["--listen", "127.0.0.1:0"])
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("the binary starts");
    let stdout = child.stdout.take().expect("piped");
    let guard = Child(child);
    let mut printed = String::new();
    for line in BufReader::new(stdout).lines() {
        let line = line.expect("utf-8 output");
        printed.push_str(&line);
        printed.push('\n');
        if line.trim_start().starts_with("driftCheckInterval:") {
            break;
        }
    }
    (guard, printed)
}

/// A tenant on `sim` (certificate auth with the `APP` registration, its Secret named `secret`),
/// batches of 200, polled every 60 s.
pub fn sim_tenant_spec(sim: &SimHandle, secret: &str) -> OneDriveTenantSpec {
    OneDriveTenantSpec {
        tenant_id: sim.tenant_id().into(),
        admin_url: sim.admin_url(),
        graph_url: Some(sim.graph_url()),
        authority_host: Some(sim.authority_host()),
        auth: TenantAuth {
            certificate: Some(CertificateAuth {
                client_id: APP.into(),
                secret_ref: SecretRef { name: secret.into() },
                algorithm: Default::default(),
            }),
            ..Default::default()
        },
        batch_size: 200,
        poll_interval: "60s".into(),
        provisioning_timeout: "24h".into(),
        drift_check_interval: "24h".into(),
        ..Default::default()
    }
}

/// The operator's namespace in the controller tests (where tenants' Secrets live).
pub const OPERATOR_NS: &str = "onedrive-operator";

/// A tenant `name` on `sim` (see [`sim_tenant_spec`]).
pub fn sim_tenant(sim: &SimHandle, name: &str, secret: &str) -> OneDriveTenant {
    OneDriveTenant::new(name, sim_tenant_spec(sim, secret))
}

/// The test certificate as the `kubernetes.io/tls` Secret `name` in the operator's namespace,
/// bound to `tenants`.
pub fn cert_secret(name: &str, tenants: &[&str]) -> Secret {
    tls_secret(OPERATOR_NS, name, tenants, &CERT, &KEY)
}

/// An in-memory cluster holding these objects.
pub async fn kube(
    sites: Vec<OneDriveSite>,
    tenants: Vec<OneDriveTenant>,
    secrets: Vec<Secret>,
) -> kube::Client {
    fake_cluster::fake_cluster(sites, tenants, secrets).await.unwrap()
}

/// A reconciler that lists sites each cycle (the in-memory API has no watch), on the wall clock,
/// allowed to reach the simulator on loopback (`--allow-endpoint-overrides`).
pub fn reconciler(client: &kube::Client) -> Reconciler {
    Reconciler::new(client.clone(), options(OPERATOR_NS, SiteSource::List))
}

/// A reconciler on the simulator's clock (sites listed each cycle, endpoint overrides allowed).
pub fn reconciler_on(client: &kube::Client, sim: &SimHandle) -> Reconciler {
    Reconciler::new(
        client.clone(),
        ReconcilerOptions {
            clock: std::sync::Arc::new(sim.clock()),
            ..options(OPERATOR_NS, SiteSource::List)
        },
    )
}

/// The options of a reconciler on the simulator: defaults, with endpoint overrides allowed (the
/// simulator is on loopback, outside any Microsoft cloud).
pub fn options(namespace: &str, sites: SiteSource) -> ReconcilerOptions {
    ReconcilerOptions {
        endpoints: onedrive_operator::m365::EndpointPolicy::overridable(),
        ..ReconcilerOptions::new(namespace, sites)
    }
}

/// The client configuration of a tenant on the simulator (on loopback: endpoint overrides allowed,
/// as `--allow-endpoint-overrides` allows them).
pub fn sim_client_config(spec: &OneDriveTenantSpec) -> onedrive_operator::m365::TenantConfig {
    onedrive_operator::m365::TenantConfig::from_spec(spec)
        .with_policy(onedrive_operator::m365::EndpointPolicy::overridable())
}

/// The tenant the test Secrets below are bound to.
pub const TEST_TENANT: &str = "contoso";

/// The test certificate as a stored `kubernetes.io/tls` Secret bound to [`TEST_TENANT`].
pub fn stored_cert() -> onedrive_operator::m365::StoredSecret {
    onedrive_operator::m365::StoredSecret::new(
        onedrive_operator::m365::TLS_TYPE,
        &[TEST_TENANT],
        std::collections::BTreeMap::from([
            ("tls.crt".into(), CERT.to_pem().into_bytes()),
            ("tls.key".into(), jose::private_key_to_pem(&KEY).into_bytes()),
        ]),
    )
}

/// A stored refresh-token Secret (`refresh_token`) bound to [`TEST_TENANT`].
pub fn stored_token(token: &str) -> onedrive_operator::m365::StoredSecret {
    onedrive_operator::m365::StoredSecret::new(
        onedrive_operator::m365::OPAQUE_TYPE,
        &[TEST_TENANT],
        std::collections::BTreeMap::from([("refresh_token".into(), token.as_bytes().to_vec())]),
    )
}

/// The Secrets of `namespace`, as [`TEST_TENANT`] reads them.
pub fn scope<'a>(
    secrets: &'a onedrive_operator::m365::SecretStore,
    namespace: &'a str,
) -> onedrive_operator::m365::SecretScope<'a> {
    onedrive_operator::m365::SecretScope { secrets, namespace, tenant: TEST_TENANT }
}
