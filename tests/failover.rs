//! Safe to share and safe to fail over: two processes on one tenant, a blocked app. The
//! controller cycle against an in-memory Kubernetes API and the simulator over loopback.

mod common;

use common::*;
use kube::api::Api;
use onedrive_operator::api::{
    OneDriveSite, OneDriveTenant, SitePhase, TenantReason, condition_type, find_condition,
};
use onedrive_operator::simulator::{self, Config, FaultConfig, SimHandle};
use onedrive_operator::testing::site;

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
            vec![cert_secret("app-cert")],
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
        assert_eq!(status.batches()[0].users, stats.enqueues[0].users);
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
        vec![cert_secret("app-cert")],
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
