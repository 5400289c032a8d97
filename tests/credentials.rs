//! Credentials that last, over the controller cycle, an in-memory Kubernetes API and the
//! simulator: one token redemption per token lifetime, a refresh-token write-back that loses
//! nothing, certificate expiry warnings and renewal without a restart.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use common::*;
use jiff::SignedDuration;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::client::Body;
use onedrive_operator::api::{OneDriveTenant, condition_type, find_condition};
use onedrive_operator::controller::events::EventSink;
use onedrive_operator::controller::{Reconciler, ReconcilerOptions, SiteSource};
use onedrive_operator::jose;
use onedrive_operator::plan::tenant::{CREDENTIALS_EXPIRING, CREDENTIALS_NOT_PERSISTED};
use onedrive_operator::simulator::manifests::{PrintedAuth, tenant_and_secret};
use onedrive_operator::simulator::{self, App, Config, SimHandle};
use onedrive_operator::testing::site;
use sha2::Digest;

const NS: &str = "onedrive-operator";
const SECRET: &str = "contoso-credentials";

async fn start(c: Config) -> SimHandle {
    simulator::start(c, "127.0.0.1:0".parse().unwrap()).await.unwrap()
}

/// A delegated tenant (refresh token in a Secret) with `users` sites; SharePoint takes a day, so
/// the first batch stays in flight for as many cycles as a test runs.
async fn delegated(
    sim: &SimHandle,
    users: usize,
    wrap: impl FnOnce(kube::Client) -> kube::Client,
) -> (kube::Client, Reconciler) {
    let data = BTreeMap::from([("refresh_token".to_string(), REFRESH_TOKEN.to_string())]);
    let (mut tenant, secret) =
        tenant_and_secret("contoso", NS, &sim.endpoints(), PrintedAuth::Delegated, APP, data);
    tenant.spec.poll_interval = "1s".into();
    let sites = (0..users)
        .map(|i| site("team-a", &format!("u{i}"), &format!("user{i}@contoso.com"), "contoso"))
        .collect();
    let client = wrap(fake_cluster::fake_cluster(sites, vec![tenant], vec![secret]).await.unwrap());
    let r = Reconciler::new(
        client.clone(),
        ReconcilerOptions { clock: Arc::new(sim.clock()), ..common::options(NS, SiteSource::List) },
    );
    (client, r)
}

fn slow_config() -> Config {
    Config { provision_delay: SignedDuration::from_hours(24), ..sim_config(3) }
}

async fn stored_token(client: &kube::Client) -> String {
    let s = Api::<Secret>::namespaced(client.clone(), NS).get(SECRET).await.unwrap();
    String::from_utf8(s.data.unwrap()["refresh_token"].0.clone()).unwrap()
}

fn sha(token: &str) -> String {
    jose::b64url(&sha2::Sha256::digest(token.as_bytes()))
}

async fn tenant_condition(
    client: &kube::Client,
    type_: &str,
) -> k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition {
    let t = Api::<OneDriveTenant>::all(client.clone()).get("contoso").await.unwrap();
    find_condition(&t.status.unwrap().conditions, type_).cloned().unwrap()
}

#[tokio::test]
async fn forty_cycles_with_a_batch_in_flight_redeem_once_per_audience_and_store_every_rotation() {
    let sim = start(slow_config()).await;
    let (client, r) = delegated(&sim, 3, |c| c).await;
    for _ in 0..40 {
        let report = r.reconcile_tenant("contoso").await.unwrap();
        assert!(report.problem.is_none(), "{:?}", report.problem);
        sim.advance(SignedDuration::from_secs(60));
    }
    let stats = sim.stats();
    assert_eq!(stats.enqueues.len(), 1, "the batch stays in flight");
    // The access tokens live an hour: each audience was redeemed once.
    assert_eq!(
        stats.refresh_redemptions.values().copied().collect::<Vec<_>>(),
        vec![1, 1],
        "{:?}",
        stats.refresh_redemptions
    );
    let writes = r.metrics().encode();
    let line = writes
        .lines()
        .find(|l| l.starts_with("onedrive_operator_refresh_token_writes_total{tenant=\"contoso\"}"));
    assert_eq!(
        line.map(|l| l.rsplit(' ').next().unwrap()),
        Some(stats.rotations.to_string().as_str()),
        "{writes}"
    );
    assert_eq!(
        Some(sha(&stored_token(&client).await)),
        stats.newest_refresh_token_sha256,
        "the Secret holds the newest token"
    );
    assert_eq!(tenant_condition(&client, CREDENTIALS_NOT_PERSISTED).await.status, "False");
}

/// What happens to the operator's updates of the credentials Secret.
#[derive(Clone)]
enum OnPut {
    /// Before the first update arrives, another writer changes the Secret (a conflict).
    ConflictOnce,
    /// Every update is refused.
    Refuse,
    /// Updates are refused while the flag is set.
    RefuseWhile(Arc<std::sync::atomic::AtomicBool>),
}

/// A kube client whose updates of the credentials Secret are subjected to `mode`.
fn intercept_secret_puts(inner: kube::Client, mode: OnPut) -> kube::Client {
    let puts = Arc::new(AtomicUsize::new(0));
    let service = tower::service_fn(move |request: http::Request<Body>| {
        let (inner, puts, mode) = (inner.clone(), puts.clone(), mode.clone());
        async move {
            let is_put = request.method() == http::Method::PUT
                && request.uri().path().ends_with(&format!("/secrets/{SECRET}"));
            if is_put {
                let n = puts.fetch_add(1, Ordering::SeqCst);
                match mode {
                    OnPut::ConflictOnce if n == 0 => {
                        let patch = serde_json::json!({"metadata": {"labels": {"owner": "platform-team"}}});
                        Api::<Secret>::namespaced(inner.clone(), NS)
                            .patch(SECRET, &PatchParams::default(), &Patch::Merge(&patch))
                            .await
                            .unwrap();
                    }
                    OnPut::RefuseWhile(ref refuse) if !refuse.load(Ordering::SeqCst) => {}
                    OnPut::Refuse | OnPut::RefuseWhile(_) => {
                        let body = serde_json::json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "message": "refused by the test", "reason": "Forbidden", "code": 403});
                        return Ok(http::Response::builder()
                            .status(403)
                            .body(Body::from(body.to_string().into_bytes()))
                            .unwrap());
                    }
                    _ => {}
                }
            }
            inner.send(request).await
        }
    });
    kube::Client::new(service, "default")
}

#[tokio::test]
async fn a_conflicting_writer_is_read_again_and_no_token_is_lost() {
    let sim = start(slow_config()).await;
    let (client, r) = delegated(&sim, 3, |inner| intercept_secret_puts(inner, OnPut::ConflictOnce)).await;
    for _ in 0..3 {
        r.reconcile_tenant("contoso").await.unwrap();
        sim.advance(SignedDuration::from_secs(60));
    }
    let secret = Api::<Secret>::namespaced(client.clone(), NS).get(SECRET).await.unwrap();
    assert_eq!(secret.metadata.labels.unwrap()["owner"], "platform-team", "the other writer's change stays");
    assert_eq!(Some(sha(&stored_token(&client).await)), sim.stats().newest_refresh_token_sha256);
    assert_eq!(tenant_condition(&client, CREDENTIALS_NOT_PERSISTED).await.status, "False");
}

#[tokio::test]
async fn a_write_back_that_keeps_failing_is_reported_and_the_operator_goes_on() {
    let sim = start(slow_config()).await;
    let (client, r) = delegated(&sim, 3, |inner| intercept_secret_puts(inner, OnPut::Refuse)).await;
    for _ in 0..10 {
        let report = r.reconcile_tenant("contoso").await.unwrap();
        assert!(report.problem.is_none(), "work goes on: {:?}", report.problem);
        sim.advance(SignedDuration::from_secs(60));
    }
    let c = tenant_condition(&client, CREDENTIALS_NOT_PERSISTED).await;
    assert_eq!((c.status.as_str(), c.reason.as_str()), ("True", CREDENTIALS_NOT_PERSISTED));
    assert!(c.message.contains("403") && c.message.contains(SECRET), "{}", c.message);
    assert_eq!(stored_token(&client).await, REFRESH_TOKEN, "nothing was written");
    let stats = sim.stats();
    assert_eq!(stats.enqueues.len(), 1, "the batch was sent");
    // The newest token is used from memory: no client rebuilt from the stale Secret, no redemption per cycle.
    assert_eq!(stats.refresh_redemptions.values().sum::<u64>(), 2, "{:?}", stats.refresh_redemptions);
    let metrics = r.metrics().encode();
    assert!(
        metrics.contains("onedrive_operator_credentials_not_persisted{tenant=\"contoso\"} 1"),
        "{metrics}"
    );
    for text in [&c.message, &metrics] {
        assert!(!text.contains("rt-"), "no refresh token in status or metrics");
    }
}

fn cert_secret(cert: &jose::Certificate, key: &rsa::PrivateKey) -> Secret {
    tls_secret(NS, SECRET, &["contoso"], cert, key)
}

#[tokio::test]
async fn a_certificate_expiring_in_ten_days_warns_and_a_renewed_one_is_picked_up_without_a_restart() {
    let soon = jose::self_signed_certificate_until(
        &KEY,
        "expiring",
        Some(jiff::Timestamp::now() + SignedDuration::from_hours(24 * 10)),
    )
    .unwrap();
    let renewed = jose::self_signed_certificate(&KEY, "renewed").unwrap();
    let mut c = sim_config(2);
    c.apps.push(App::Certificate { client_id: APP.into(), certificate: renewed.clone() });
    c.apps.retain(
        |a| !matches!(a, App::Certificate { certificate, .. } if certificate.x5t_s256() == CERT.x5t_s256()),
    );
    c.apps.push(App::Certificate { client_id: APP.into(), certificate: soon.clone() });
    let sim = start(c).await;
    let (tenant, _) =
        tenant_and_secret("contoso", NS, &sim.endpoints(), PrintedAuth::Certificate, APP, BTreeMap::new());
    let sites = vec![site("team-a", "u0", "user0@contoso.com", "contoso")];
    let client = kube_fake_client::ClientBuilder::new()
        .with_resource::<onedrive_operator::api::OneDriveSite>()
        .with_status_subresource::<onedrive_operator::api::OneDriveSite>()
        .with_resource::<OneDriveTenant>()
        .with_status_subresource::<OneDriveTenant>()
        .with_resource::<Event>()
        .with_objects(vec![cert_secret(&soon, &KEY)])
        .with_objects(sites)
        .build()
        .await
        .unwrap();
    let client = onedrive_operator::testing::cluster_scoped_tenants(client);
    Api::<OneDriveTenant>::all(client.clone()).create(&Default::default(), &tenant).await.unwrap();
    let r = Reconciler::new(
        client.clone(),
        ReconcilerOptions {
            recorder: Some(EventSink::new(client.clone(), "test")),
            ..common::options(NS, SiteSource::List)
        },
    );
    r.reconcile_tenant("contoso").await.unwrap();
    let c = tenant_condition(&client, CREDENTIALS_EXPIRING).await;
    assert_eq!(
        (c.status.as_str(), c.reason.as_str()),
        ("True", "CertificateExpiresIn30Days"),
        "{}",
        c.message
    );
    assert!(c.message.contains("(in 9 days)") || c.message.contains("(in 10 days)"), "{}", c.message);
    assert_eq!(
        tenant_condition(&client, condition_type::READY).await.status,
        "True",
        "a warning, not a stop"
    );
    let expiry = soon.not_after.unwrap().as_second();
    let metrics = r.metrics().encode();
    assert!(
        metrics.contains(&format!(
            "onedrive_operator_credential_expiry_timestamp_seconds{{tenant=\"contoso\"}} {expiry}"
        )),
        "{metrics}"
    );
    let events = Api::<Event>::all(client.clone()).list(&ListParams::default()).await.unwrap().items;
    assert_eq!(
        events.iter().filter(|e| e.reason.as_deref() == Some("CertificateExpiresIn30Days")).count(),
        1,
        "{events:?}"
    );
    r.reconcile_tenant("contoso").await.unwrap();
    let events = Api::<Event>::all(client.clone()).list(&ListParams::default()).await.unwrap().items;
    assert_eq!(
        events.iter().filter(|e| e.reason.as_deref() == Some("CertificateExpiresIn30Days")).count(),
        1,
        "once, on the transition"
    );

    // cert-manager renews: the Secret is replaced; the same process switches over.
    Api::<Secret>::namespaced(client.clone(), NS)
        .replace(SECRET, &Default::default(), &{
            let mut s = Api::<Secret>::namespaced(client.clone(), NS).get(SECRET).await.unwrap();
            s.data = cert_secret(&renewed, &KEY).data;
            s
        })
        .await
        .unwrap();
    sim.advance(SignedDuration::from_secs(3600));
    let report = r.reconcile_tenant("contoso").await.unwrap();
    assert!(report.problem.is_none(), "{:?}", report.problem);
    assert_eq!(tenant_condition(&client, CREDENTIALS_EXPIRING).await.status, "False");
    assert_eq!(report.credentials.expires_at, renewed.not_after);
    let used = sim.stats().certificates_used;
    assert!(used.contains(&soon.x5t_s256()) && used.contains(&renewed.x5t_s256()), "{used:?}");
}

/// While write-back fails, an administrator signs in again and stores a new refresh token: it is
/// adopted, and the rotations still queued are never written over it.
#[tokio::test]
async fn a_token_a_person_stores_wins_over_rotations_not_yet_written() {
    let refuse = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let sim = start(slow_config()).await;
    let mode = OnPut::RefuseWhile(refuse.clone());
    let (client, r) = delegated(&sim, 3, |inner| intercept_secret_puts(inner, mode)).await;
    for _ in 0..3 {
        r.reconcile_tenant("contoso").await.unwrap();
        sim.advance(SignedDuration::from_secs(60));
    }
    assert_eq!(tenant_condition(&client, CREDENTIALS_NOT_PERSISTED).await.status, "True");
    let api = Api::<Secret>::namespaced(client.clone(), NS);
    let mut secret = api.get(SECRET).await.unwrap();
    secret
        .data
        .as_mut()
        .unwrap()
        .insert("refresh_token".into(), k8s_openapi::ByteString(b"rt-from-a-person".to_vec()));
    refuse.store(false, Ordering::SeqCst);
    // The person's own update goes through the same client: let it pass.
    api.replace(SECRET, &Default::default(), &secret).await.unwrap();
    for _ in 0..3 {
        r.reconcile_tenant("contoso").await.unwrap();
        sim.advance(SignedDuration::from_secs(60));
    }
    assert_eq!(stored_token(&client).await, "rt-from-a-person", "nothing older was written over it");
    assert_eq!(tenant_condition(&client, CREDENTIALS_NOT_PERSISTED).await.status, "False");
}
