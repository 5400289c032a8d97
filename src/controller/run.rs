//! `onedrive-operator run`: the controller, its probes and metrics, and leader election.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::Namespace;
use kube::api::Api;
use kube::core::PartialObjectMeta;
use kube::runtime::controller::{self, Action, Controller};
use kube::runtime::reflector::{self, ObjectRef};
use kube::runtime::{WatchStreamExt, watcher};

use super::events::EventSink;
use super::leader::{Elector, Fence, LeaseSettings};
use super::metrics::Metrics;
use super::{ControllerError, Reconciler, ReconcilerOptions, SiteCache, SiteSource};
use crate::api::annotations::SITE_SET_LABEL;
use crate::api::{OneDriveSite, OneDriveSiteSet, OneDriveTenant};
use crate::slots::Slots;

/// How the operator runs (flags and environment of `onedrive-operator run`).
#[derive(Clone, Debug)]
pub struct RunOptions {
    /// The operator's own namespace: Secrets referenced by tenants, and the leader Lease.
    pub namespace: String,
    /// Watch `OneDriveSite`s in this namespace only (all namespaces when `None`).
    pub watch_namespace: Option<String>,
    pub default_tenant: Option<String>,
    /// Tenant cycles that work at once (one cycle per tenant at a time; a cycle waiting on
    /// Microsoft's `Retry-After` gives its slot to another tenant meanwhile).
    pub concurrency: u16,
    pub metrics_addr: SocketAddr,
    pub leader_election: bool,
    pub lease_name: String,
    pub lease_duration: Duration,
    pub identity: String,
    pub organization: String,
    pub ca_bundle: Option<Vec<u8>>,
    /// Where tenants' requests may go (`--allow-endpoint-overrides` opens it, for the simulator,
    /// tests and demos).
    pub endpoints: crate::m365::EndpointPolicy,
}

/// Health as the probes report it.
#[derive(Default)]
struct Health {
    ready: AtomicBool,
}

pub async fn run(options: RunOptions) -> Result<(), String> {
    let client = kube::Client::try_default()
        .await
        .map_err(|e| format!("cannot reach the Kubernetes API (in cluster or KUBECONFIG): {e}"))?;
    let metrics = Arc::new(Metrics::new());
    let health = Arc::new(Health::default());
    let server = tokio::spawn(serve(options.metrics_addr, metrics.clone(), health.clone()));

    if options.leader_election {
        lead(client, options, metrics, health).await?;
    } else {
        run_controller(client, options, metrics, health, None).await;
    }
    server.abort();
    Ok(())
}

/// Leader election: act only while holding the Lease; step down (cancelling every cycle in
/// flight) when it cannot be renewed in time, and campaign again without exiting.
async fn lead(
    client: kube::Client,
    options: RunOptions,
    metrics: Arc<Metrics>,
    health: Arc<Health>,
) -> Result<(), String> {
    let elector = Elector::new(
        client.clone(),
        LeaseSettings {
            namespace: options.namespace.clone(),
            name: options.lease_name.clone(),
            identity: options.identity.clone(),
            duration: options.lease_duration.max(Duration::from_secs(3)),
        },
    );
    let fence = elector.fence();
    let (mut leading, campaign) = elector.spawn();
    loop {
        // A standby is healthy and must count as ready, or a rolling update (the new pod waits
        // for the lease the old one holds) and `helm install --wait` never finish. The leader
        // reports ready again once its cache has synced.
        health.ready.store(true, Ordering::SeqCst);
        tracing::info!(lease = %options.lease_name, identity = %options.identity, "waiting to become the leader");
        let became = tokio::select! {
            r = leading.wait_for(|l| *l) => r.is_ok(),
            _ = shutdown_signal() => false,
        };
        if !became {
            break;
        }
        tracing::info!("became the leader");
        health.ready.store(false, Ordering::SeqCst);
        let controller = run_controller(
            client.clone(),
            options.clone(),
            metrics.clone(),
            health.clone(),
            Some(fence.clone()),
        );
        tokio::select! {
            () = controller => break,
            _ = leading.wait_for(|l| !*l) => {
                // Dropping the controller cancelled every cycle in flight, and their requests.
                tracing::warn!("stepped down: every cycle in flight was cancelled; campaigning again");
            }
        }
    }
    campaign.release().await;
    Ok(())
}

async fn run_controller(
    client: kube::Client,
    options: RunOptions,
    metrics: Arc<Metrics>,
    health: Arc<Health>,
    fence: Option<Fence>,
) {
    let store = SiteCache::new();
    let site_events = site_events(&client, &options, store.clone());
    let (namespace_store, namespace_events) = namespace_events(&client, &options);
    let reconciler = Arc::new(reconciler(&client, &options, store.clone(), namespace_store, metrics, fence));

    // Aborted when this future ends or is dropped (a leader stepping down).
    let _sweeper = AbortOnDrop(spawn_sweeper(reconciler.clone(), store.clone()));
    let _readiness = AbortOnDrop(spawn_readiness(store, health));

    let mapper = tenant_of(options.default_tenant.clone());
    // Debounced: `kubectl apply` of thousands of sites becomes a handful of cycles. Every tenant's
    // cycle may start (kube-runtime still runs one cycle per tenant at a time); the reconciler's
    // work slots bound how many work at once, and a cycle waiting on Microsoft gives its slot up.
    let config = controller::Config::default().debounce(Duration::from_secs(2));
    let controller = Controller::new(
        Api::<OneDriveTenant>::all(client.clone()),
        watcher::Config::default().any_semantic(),
    );
    let tenant_store = controller.store();
    // A namespace changed: every tenant with a namespace policy decides again.
    let with_policy = move |_: PartialObjectMeta<Namespace>| {
        tenant_store
            .state()
            .iter()
            .filter(|t| t.spec.allowed_namespaces.is_some())
            .map(|t| ObjectRef::from_obj(t.as_ref()))
            .collect::<Vec<_>>()
    };
    let tenants = controller
        .with_config(config)
        .watches_stream(site_events, mapper)
        .watches_stream(namespace_events, with_policy)
        .shutdown_on_signal()
        .run(reconcile, error_policy, reconciler.clone())
        .for_each(|result| async move {
            match result {
                Ok((tenant, _)) => tracing::debug!(tenant = %tenant.name, "reconciled"),
                Err(e) => tracing::warn!(error = %e, "reconcile failed"),
            }
        });
    tokio::join!(tenants, run_sets(&client, &options, reconciler));
    tracing::info!("controller stopped");
}

/// The `OneDriveSiteSet` controller: its own concern (a set's sites), beside the tenants'. Its
/// sites reach the tenant cycles through the site watch, as any others.
async fn run_sets(client: &kube::Client, options: &RunOptions, reconciler: Arc<Reconciler>) {
    let sets: Api<OneDriveSiteSet> = match &options.watch_namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    };
    // The sets' own sites (labelled with their set's name), metadata only: a site's change — its
    // phase, a hand deletion — wakes its set through the owner reference.
    let sites: Api<PartialObjectMeta<OneDriveSite>> = match &options.watch_namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    };
    let own_sites = watcher(sites, watcher::Config::default().labels(SITE_SET_LABEL).any_semantic())
        .default_backoff()
        .touched_objects();
    let controller = Controller::new(sets, watcher::Config::default().any_semantic());
    let _sweeper = AbortOnDrop(spawn_set_sweeper(reconciler.clone(), controller.store()));
    controller
        // A few sets at once: each writes at most 8 sites at a time.
        .with_config(controller::Config::default().debounce(Duration::from_millis(250)).concurrency(4))
        .owns_stream(own_sites)
        .shutdown_on_signal()
        .run(reconcile_set, set_error_policy, reconciler)
        .for_each(|result| async move {
            match result {
                Ok((set, _)) => tracing::debug!(set = %set, "set reconciled"),
                Err(e) => tracing::warn!(error = %e, "set reconcile failed"),
            }
        })
        .await;
}

/// Forgets what deleted sets remembered (the controller never visits a set that is gone).
fn spawn_set_sweeper(
    reconciler: Arc<Reconciler>,
    store: reflector::Store<OneDriveSiteSet>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_secs(300)).await;
            let live: std::collections::HashSet<String> = store
                .state()
                .iter()
                .map(|s| {
                    format!(
                        "{}/{}",
                        s.metadata.namespace.as_deref().unwrap_or_default(),
                        s.metadata.name.as_deref().unwrap_or_default()
                    )
                })
                .collect();
            reconciler.forget_sets(|key| live.contains(key));
        }
    })
}

async fn reconcile_set(set: Arc<OneDriveSiteSet>, ctx: Arc<Reconciler>) -> Result<Action, ControllerError> {
    use kube::ResourceExt;
    let (namespace, name) = (set.namespace().unwrap_or_default(), set.name_any());
    let report = ctx.reconcile_set(&namespace, &name).await?;
    if report.wrote() || report.refused > 0 {
        tracing::info!(set = %format!("{namespace}/{name}"), created = report.created, updated = report.updated, deleted = report.deleted, refused = report.refused, "set's sites written");
    }
    Ok(Action::requeue(report.requeue_after))
}

fn set_error_policy(set: Arc<OneDriveSiteSet>, error: &ControllerError, _ctx: Arc<Reconciler>) -> Action {
    tracing::warn!(set = ?set.metadata.name, error = %error, reason = error.reason().as_str(), "set pass failed; retrying");
    Action::requeue(Duration::from_secs(15))
}

/// The reconciler this replica runs: its tenant-facing options from the command line.
fn reconciler(
    client: &kube::Client,
    options: &RunOptions,
    store: Arc<SiteCache>,
    namespaces: reflector::Store<PartialObjectMeta<Namespace>>,
    metrics: Arc<Metrics>,
    fence: Option<Fence>,
) -> Reconciler {
    Reconciler::new(
        client.clone(),
        ReconcilerOptions {
            default_tenant: options.default_tenant.clone(),
            organization: options.organization.clone(),
            metrics,
            recorder: Some(EventSink::new(client.clone(), options.identity.clone())),
            ca_bundle: options.ca_bundle.clone(),
            endpoints: options.endpoints.clone(),
            fence,
            replica: Some(options.identity.clone()),
            namespaces,
            slots: Some(Slots::new(options.concurrency.into())),
            ..ReconcilerOptions::new(options.namespace.clone(), SiteSource::Store(store))
        },
    )
}

/// A site's tenant: its `tenantRef`, else the operator's default tenant (none: no tenant to wake).
fn tenant_of(default_tenant: Option<String>) -> impl Fn(OneDriveSite) -> Option<ObjectRef<OneDriveTenant>> {
    move |site: OneDriveSite| {
        site.spec
            .tenant_ref
            .as_ref()
            .map(|r| r.name.clone())
            .or_else(|| default_tenant.clone())
            .map(|name| ObjectRef::<OneDriveTenant>::new(&name))
    }
}

/// The watched `OneDriveSite`s, each event applied to the site cache as it passes.
fn site_events(
    client: &kube::Client,
    options: &RunOptions,
    cache: Arc<SiteCache>,
) -> impl futures::Stream<Item = Result<OneDriveSite, watcher::Error>> + use<> {
    let sites: Api<OneDriveSite> = match &options.watch_namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    };
    watcher(sites, watcher::Config::default().any_semantic())
        .default_backoff()
        .inspect_ok(move |event| cache.apply(event))
        .touched_objects()
}

/// Namespaces' labels, for tenants that allow namespaces by label: a relabel takes effect at once.
/// Metadata only: `Api<PartialObjectMeta<_>>` asks the API server for nothing more.
fn namespace_events(
    client: &kube::Client,
    options: &RunOptions,
) -> (
    reflector::Store<PartialObjectMeta<Namespace>>,
    impl futures::Stream<Item = Result<PartialObjectMeta<Namespace>, watcher::Error>> + use<>,
) {
    let namespaces: Api<PartialObjectMeta<Namespace>> = Api::all(client.clone());
    let config = match &options.watch_namespace {
        Some(ns) => watcher::Config::default().fields(&format!("metadata.name={ns}")),
        None => watcher::Config::default(),
    };
    let (store, writer) = reflector::store();
    let events =
        watcher(namespaces, config.any_semantic()).default_backoff().reflect(writer).touched_objects();
    (store, events)
}

/// A background task that ends with its owner.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Sites whose tenant does not exist are never visited by a tenant cycle: sweep them.
fn spawn_sweeper(reconciler: Arc<Reconciler>, store: Arc<SiteCache>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        store.wait_until_synced().await;
        loop {
            if let Err(e) = reconciler.reconcile_orphans().await {
                tracing::warn!(error = %e, "could not update sites without a tenant");
            }
            tokio::time::sleep(Duration::from_secs(30)).await;
        }
    })
}

/// Ready once the site cache has synced.
fn spawn_readiness(store: Arc<SiteCache>, health: Arc<Health>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        store.wait_until_synced().await;
        health.ready.store(true, Ordering::SeqCst);
        tracing::info!("OneDriveSite cache synced; ready");
    })
}

async fn reconcile(tenant: Arc<OneDriveTenant>, ctx: Arc<Reconciler>) -> Result<Action, ControllerError> {
    let name = tenant.metadata.name.clone().unwrap_or_default();
    let report = ctx.reconcile_tenant(&name).await?;
    for batch in &report.enqueued {
        tracing::info!(tenant = %name, batch = batch.id, users = batch.users.len(), last_user = %batch.last_user, "batch enqueued");
    }
    if let Some(problem) = &report.problem {
        tracing::warn!(tenant = %name, problem = %problem, "tenant not ready");
    }
    tracing::debug!(tenant = %name, writes = report.site_writes, requeue = ?report.requeue_after, "cycle done");
    Ok(Action::requeue(report.requeue_after.max(Duration::from_secs(1))))
}

fn error_policy(tenant: Arc<OneDriveTenant>, error: &ControllerError, _ctx: Arc<Reconciler>) -> Action {
    tracing::warn!(tenant = ?tenant.metadata.name, error = %error, reason = error.reason().as_str(), "cycle failed; retrying");
    Action::requeue(Duration::from_secs(15))
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("SIGTERM handler");
        tokio::select! { _ = ctrl_c => {}, _ = term.recv() => {} }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

/// `/metrics`, `/livez`, `/readyz`.
async fn serve(addr: SocketAddr, metrics: Arc<Metrics>, health: Arc<Health>) {
    use axum::http::StatusCode;
    use axum::routing::get;
    let app = axum::Router::new()
        .route(
            "/metrics",
            get(move || {
                let metrics = metrics.clone();
                async move {
                    (
                        [(
                            axum::http::header::CONTENT_TYPE,
                            "application/openmetrics-text; version=1.0.0; charset=utf-8",
                        )],
                        metrics.encode(),
                    )
                }
            }),
        )
        .route("/livez", get(|| async { "ok" }))
        .route(
            "/readyz",
            get(move || {
                let health = health.clone();
                async move {
                    if health.ready.load(Ordering::SeqCst) {
                        (StatusCode::OK, "ready")
                    } else {
                        (StatusCode::SERVICE_UNAVAILABLE, "waiting for the OneDriveSite cache")
                    }
                }
            }),
        );
    match tokio::net::TcpListener::bind(addr).await {
        Ok(listener) => {
            let addr = listener.local_addr().unwrap_or(addr);
            tracing::info!(%addr, "serving /metrics, /livez and /readyz");
            if let Err(e) = axum::serve(listener, app).await {
                tracing::error!(error = %e, "metrics server stopped");
            }
        }
        Err(e) => tracing::error!(%addr, error = %e, "cannot listen for metrics and probes"),
    }
}
