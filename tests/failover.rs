//! Safe to share and safe to fail over: namespaces a tenant allows, two processes on one tenant, a
//! blocked app. The
//! controller cycle against an in-memory Kubernetes API and the simulator over loopback.

mod common;

use common::*;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::api::Api;
use kube::core::PartialObjectMeta;
use kube::runtime::{reflector, watcher};
use onedrive_operator::api::{
    AllowedNamespaces, OneDriveSite, OneDriveTenant, SitePhase, TenantReason, condition_type, find_condition,
};
use onedrive_operator::controller::leader::{Elector, Fence, LeaseSettings};
use onedrive_operator::controller::{Reconciler, ReconcilerOptions, SiteSource};
use onedrive_operator::simulator::{self, Config, FaultConfig, SimHandle};
use onedrive_operator::testing::site;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

async fn start(c: Config) -> SimHandle {
    simulator::start(c, "127.0.0.1:0".parse().unwrap()).await.unwrap()
}

fn sites(tenant: &str, n: usize) -> Vec<OneDriveSite> {
    (0..n).map(|i| site(tenant, &format!("u{i}"), &format!("user{i}@contoso.com"), tenant)).collect()
}

/// Two processes reconciling one tenant at once (a leader that lost its Lease and the new one,
/// say): the batch is recorded with the tenant's resourceVersion as precondition, so exactly one
/// of them records it and only that one sends it.
#[tokio::test]
async fn two_reconcilers_racing_on_one_tenant_record_and_send_one_batch() {
    for round in 0..3 {
        let sim = start(sim_config(300)).await;
        let client = kube(
            sites("contoso", 300),
            vec![sim_tenant(&sim, "contoso", "app-cert")],
            vec![cert_secret("app-cert", &["contoso"])],
        )
        .await;
        let (a, b) = (reconciler(&client), reconciler(&client));
        let (ra, rb) = tokio::join!(a.reconcile_tenant("contoso"), b.reconcile_tenant("contoso"));
        let sent: usize = [&ra, &rb].iter().filter_map(|r| r.as_ref().ok()).map(|r| r.enqueued.len()).sum();
        let stats = sim.stats();
        assert_eq!(stats.enqueues.len(), 1, "round {round}: one batch reached SharePoint");
        assert_eq!(sent, 1, "round {round}: {ra:?} / {rb:?}");
        // The loser either saw the winner's batch or lost the race to record one: a Conflict.
        if let Some(Err(e)) = [&ra, &rb].into_iter().find(|r| r.is_err()) {
            assert_eq!(e.reason().as_str(), "Conflict", "round {round}: {e}");
        }
        let status = Api::<OneDriveTenant>::all(client.clone()).get("contoso").await.unwrap().status.unwrap();
        assert_eq!(status.batches().len(), 1);
        assert!(status.batches()[0].users.is_empty(), "no user name on the cluster-scoped tenant");
        assert_eq!(recorded_users(&client, status.batches()[0]).await, stats.enqueues[0].users);
        assert_eq!(status.last_batch_id, 1);
    }
}

/// A blocked app (SharePoint answers every request 503): the tenant says `Blocked`, not
/// `Throttled`; the operator stops calling that tenant for the backoff; another tenant keeps going.
#[tokio::test]
async fn a_blocked_app_is_reported_blocked_and_left_alone_while_other_tenants_go_on() {
    let mut c = sim_config(5);
    c.faults = FaultConfig { blocked: true, blocked_retry_after: 0.2, ..FaultConfig::default() };
    let blocked = start(c).await;
    let healthy = start(sim_config(5)).await;
    let mut all = sites("blocked", 5);
    all.extend(sites("contoso", 5));
    let client = kube(
        all,
        vec![sim_tenant(&blocked, "blocked", "app-cert"), sim_tenant(&healthy, "contoso", "app-cert")],
        vec![cert_secret("app-cert", &["contoso", "blocked"])],
    )
    .await;
    let r = reconciler(&client);
    let report = r.reconcile_tenant("blocked").await.unwrap();
    assert_eq!(report.problem_reason, Some(TenantReason::Blocked), "{:?}", report.problem);
    let requests = |s: &SimHandle| s.stats().graph_requests() + s.stats().sharepoint_requests();
    let before = requests(&blocked);
    for _ in 0..3 {
        let report = r.reconcile_tenant("blocked").await.unwrap();
        assert_eq!(report.problem_reason, Some(TenantReason::Blocked));
        assert!(report.enqueued.is_empty());
    }
    assert_eq!(requests(&blocked), before, "no request to a blocked tenant during the backoff");
    let status = Api::<OneDriveTenant>::all(client.clone()).get("blocked").await.unwrap().status.unwrap();
    let ready = find_condition(&status.conditions, condition_type::READY).unwrap();
    assert_eq!((ready.status.as_str(), ready.reason.as_str()), ("False", "Blocked"), "{}", ready.message);
    assert!(ready.message.contains("503"), "{}", ready.message);
    // The other tenant is not held up.
    for _ in 0..40 {
        r.reconcile_tenant("contoso").await.unwrap();
        healthy.advance(jiff::SignedDuration::from_secs(60));
        let sites = Api::<OneDriveSite>::namespaced(client.clone(), "contoso")
            .list(&Default::default())
            .await
            .unwrap();
        if sites.items.iter().all(|s| s.status.as_ref().and_then(|st| st.phase) == Some(SitePhase::Ready)) {
            return;
        }
    }
    panic!("the healthy tenant did not converge");
}

/// A namespace as the controller's metadata cache holds it.
fn namespace(name: &str, labels: &[(&str, &str)]) -> PartialObjectMeta<Namespace> {
    let mut ns = PartialObjectMeta::<Namespace>::default();
    ns.metadata.name = Some(name.into());
    ns.metadata.labels = Some(labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect());
    ns
}

/// A tenant that allows namespaces by label: a site from another namespace is never enqueued
/// and says `TenantNotAllowed` (even when an allowed site names the same user, which is sent
/// once, for the allowed site); labelling the namespace lets its sites proceed.
#[tokio::test]
async fn sites_from_a_namespace_the_tenant_does_not_allow_are_refused_until_it_is_labelled() {
    let sim = start(sim_config(10)).await;
    let mut tenant = sim_tenant(&sim, "contoso", "app-cert");
    tenant.spec.allowed_namespaces = Some(AllowedNamespaces {
        names: None,
        selector: Some(LabelSelector {
            match_labels: Some([("onedrive".to_string(), "allowed".to_string())].into()),
            ..Default::default()
        }),
    });
    let mut all: Vec<OneDriveSite> = (0..5)
        .map(|i| site("allowed", &format!("u{i}"), &format!("user{i}@contoso.com"), "contoso"))
        .collect();
    all.extend((5..10).map(|i| site("other", &format!("u{i}"), &format!("user{i}@contoso.com"), "contoso")));
    // The same user as an allowed site: refused here, sent once for the allowed one.
    all.push(site("other", "shared", "USER0@contoso.com", "contoso"));
    let client = kube(all, vec![tenant], vec![cert_secret("app-cert", &["contoso"])]).await;
    // The namespace cache, fed as the controller's watch would feed it.
    let (namespaces, mut cache) = reflector::store();
    for ns in [namespace("allowed", &[("onedrive", "allowed")]), namespace("other", &[])] {
        cache.apply_watcher_event(&watcher::Event::Apply(ns));
    }
    let r = Reconciler::new(
        client.clone(),
        ReconcilerOptions { namespaces, ..common::options(OPERATOR_NS, SiteSource::List) },
    );
    let in_ns = |ns: &'static str| {
        let client = client.clone();
        async move { Api::<OneDriveSite>::namespaced(client, ns).list(&Default::default()).await.unwrap().items }
    };
    for _ in 0..5 {
        r.reconcile_tenant("contoso").await.unwrap();
        sim.advance(jiff::SignedDuration::from_secs(600));
    }
    let phase = |s: &OneDriveSite| s.status.as_ref().and_then(|st| st.phase);
    assert!(in_ns("allowed").await.iter().all(|s| phase(s) == Some(SitePhase::Ready)));
    for s in in_ns("other").await {
        assert_eq!(ready_reason(&s), "TenantNotAllowed", "{:?}", s.status);
        let ready = find_condition(&s.status.as_ref().unwrap().conditions, condition_type::READY).unwrap();
        assert!(ready.message.contains("\"other\"") && ready.message.contains("spec.allowedNamespaces"));
        let stalled =
            find_condition(&s.status.as_ref().unwrap().conditions, condition_type::STALLED).unwrap();
        assert_eq!(stalled.status, "True");
    }
    let enqueued: Vec<String> = sim.stats().enqueues.iter().flat_map(|e| e.users.clone()).collect();
    assert_eq!(enqueued.len(), 5, "{enqueued:?}");
    assert!(
        enqueued
            .iter()
            .all(|u| ["user0", "user1", "user2", "user3", "user4"].iter().any(|p| u.starts_with(p)))
    );

    // Labelled in: its sites proceed (no restart, nothing else changed).
    cache.apply_watcher_event(&watcher::Event::Apply(namespace("other", &[("onedrive", "allowed")])));
    for _ in 0..5 {
        r.reconcile_tenant("contoso").await.unwrap();
        sim.advance(jiff::SignedDuration::from_secs(600));
    }
    for s in in_ns("other").await {
        assert_eq!(phase(&s), Some(SitePhase::Ready), "{:?}", s.status);
    }
    let enqueued: Vec<String> = sim.stats().enqueues.iter().flat_map(|e| e.users.clone()).collect();
    assert_eq!(enqueued.len(), 10, "user0 is not sent again: {enqueued:?}");
}

/// A client whose requests hang forever once `cut` is set (a network partition).
fn cuttable(inner: kube::Client, cut: Arc<AtomicBool>) -> kube::Client {
    let service = tower::service_fn(move |request: http::Request<kube::client::Body>| {
        let (inner, cut) = (inner.clone(), cut.clone());
        async move {
            if cut.load(Ordering::SeqCst) {
                std::future::pending::<()>().await;
            }
            inner.send(request).await
        }
    });
    kube::Client::new(service, "default")
}

fn lease(identity: &str) -> LeaseSettings {
    LeaseSettings {
        namespace: OPERATOR_NS.into(),
        name: "leader".into(),
        identity: identity.into(),
        duration: Duration::from_secs(3),
    }
}

/// A leader cut off from the API server steps down (its fence lapses) before a standby, which
/// can still reach the server, takes the Lease over; while the leader renews, the standby waits.
#[tokio::test]
async fn a_cut_off_leader_steps_down_before_the_standby_takes_over() {
    let client = kube(vec![], vec![], vec![]).await;
    let cut = Arc::new(AtomicBool::new(false));
    let leader = Elector::new(cuttable(client.clone(), cut.clone()), lease("a"));
    let fence = leader.fence();
    let (mut a, campaign_a) = leader.spawn();
    tokio::time::timeout(Duration::from_secs(10), a.wait_for(|l| *l)).await.unwrap().unwrap();
    assert!(fence.holds());
    let (mut b, campaign_b) = Elector::new(client.clone(), lease("b")).spawn();
    // Longer than the lease duration: the standby sees renewals and stays a standby.
    let standby = tokio::time::timeout(Duration::from_secs(4), b.wait_for(|l| *l)).await.map(|r| r.is_ok());
    assert!(standby.is_err(), "the standby took over a lease being renewed");

    cut.store(true, Ordering::SeqCst);
    let cut_at = Instant::now();
    tokio::time::timeout(Duration::from_secs(10), a.wait_for(|l| !*l)).await.unwrap().unwrap();
    let stepped_down = Instant::now();
    assert!(!fence.holds(), "no send after stepping down");
    tokio::time::timeout(Duration::from_secs(10), b.wait_for(|l| *l)).await.unwrap().unwrap();
    let took_over = Instant::now();
    assert!(stepped_down < took_over, "the old leader stepped down first");
    println!("cut → stepped down {:?}, → standby leads {:?}", stepped_down - cut_at, took_over - cut_at);
    drop(campaign_a);
    campaign_b.release().await;
    let held = Api::<Lease>::namespaced(client, OPERATOR_NS).get("leader").await.unwrap();
    assert_eq!(held.spec.unwrap().holder_identity, None, "released on shutdown");
}

/// A replica whose lease has lapsed records nothing it then sends: the cycle ends with
/// `LeaseLost` before the request, and the leader sends the recorded batch exactly once.
#[tokio::test]
async fn a_lapsed_fence_stops_the_send_and_the_leader_sends_the_recorded_batch() {
    let sim = start(sim_config(5)).await;
    let client = kube(
        sites("contoso", 5),
        vec![sim_tenant(&sim, "contoso", "app-cert")],
        vec![cert_secret("app-cert", &["contoso"])],
    )
    .await;
    let fenced = Reconciler::new(
        client.clone(),
        ReconcilerOptions { fence: Some(Fence::default()), ..common::options(OPERATOR_NS, SiteSource::List) },
    );
    let e = fenced.reconcile_tenant("contoso").await.unwrap_err();
    assert_eq!(e.reason().as_str(), "LeaseLost", "{e}");
    assert!(sim.stats().enqueues.is_empty(), "nothing sent without the lease");
    let status = Api::<OneDriveTenant>::all(client.clone()).get("contoso").await.unwrap().status.unwrap();
    assert_eq!(status.batches().len(), 1);
    assert!(!status.batches()[0].sent);
    let report = reconciler(&client).reconcile_tenant("contoso").await.unwrap();
    assert_eq!(report.enqueued.len(), 1);
    assert_eq!(sim.stats().enqueues.len(), 1);
    assert_eq!(sim.stats().enqueues[0].users, recorded_users(&client, status.batches()[0]).await);
}

/// The users a batch recorded on the tenant was recorded with, in the operator's namespace.
async fn recorded_users(client: &kube::Client, batch: &onedrive_operator::api::BatchStatus) -> Vec<String> {
    let records: Api<k8s_openapi::api::core::v1::ConfigMap> = Api::namespaced(client.clone(), OPERATOR_NS);
    let record = records.get("contoso.onedrive-batches").await.unwrap();
    let key = batch.users_record.as_deref().expect("the batch names its record");
    record.data.unwrap()[key].lines().map(str::to_string).collect()
}

/// Microsoft asks a tenant to wait longer than a cycle may: the cycle gives up at once, records
/// the wait and is requeued for it, instead of holding one of the slots every tenant shares.
#[tokio::test]
async fn a_tenant_throttled_for_longer_than_a_cycle_may_wait_yields_and_is_requeued() {
    let mut c = sim_config(5);
    c.faults = FaultConfig { rate: 1.0, max_retry_after: 100.0, seed: 7, ..FaultConfig::default() };
    let throttled = start(c).await;
    let client = kube(
        sites("slow", 5),
        vec![sim_tenant(&throttled, "slow", "app-cert")],
        vec![cert_secret("app-cert", &["slow"])],
    )
    .await;
    let r = reconciler(&client);
    // Waiting out every Retry-After (up to 100 s each, every request refused) would take minutes.
    let report = tokio::time::timeout(Duration::from_secs(60), r.reconcile_tenant("slow"))
        .await
        .expect("the cycle yields instead of waiting")
        .unwrap();
    assert!(report.requeue_after > Duration::from_secs(10), "requeued for Microsoft's wait: {report:?}");
    let status = Api::<OneDriveTenant>::all(client).get("slow").await.unwrap().status.unwrap();
    assert!(status.throttled_until.is_some(), "{status:?}");
    assert_eq!(throttled.stats().early_retries, 0, "no request before Microsoft's time");
    assert!(throttled.stats().enqueues.is_empty());
}
