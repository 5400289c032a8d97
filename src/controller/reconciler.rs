//! What a reconcile cycle works with: the `Reconciler` and its options, one cycle per tenant at a
//! time (in a work slot, with its metrics), and the writes and Events every phase shares. The
//! cycle itself is in `cycle`; what a tenant remembers between cycles, in `memory`.
//!
//! Usable with any `kube::Client` (a real API server or an in-memory one): the sites come from
//! the controller's site cache when it runs, or from a list call in tests and the demo.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::events::{EventSink, EventType};
use jiff::Timestamp;
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::{Resource, ResourceExt};
use serde_json::json;

use k8s_openapi::api::core::v1::Namespace;
use kube::core::PartialObjectMeta;
use kube::runtime::reflector::Store;

use super::ControllerError;
use super::leader::Fence;
use super::memory::TenantMemory;
use super::metrics::Metrics;
use super::site_cache::{SiteCache, Snapshot};
use crate::api::{
    BatchStatus, CycleResult, GeoStatus, KeptSite, OneDriveSite, OneDriveTenant, OneDriveTenantStatus,
    SitePhase, TenantReason, condition_type,
};
use crate::m365::{EndpointPolicy, M365Error};
use crate::plan::tenant::CredentialHealth;
use crate::plan::{self, DesiredSite, TenantProblem};
use crate::slots::Slots;

/// Namespaces' metadata as the controller's reflector caches it (tests fill one by hand).
pub type NamespaceStore = Store<PartialObjectMeta<Namespace>>;

/// The field manager of every write.
pub const MANAGER: &str = "onedrive-operator";

/// An Event about a site, made before the cache snapshot is let go and published after the writes.
pub(super) struct SiteEvent {
    regarding: k8s_openapi::api::core::v1::ObjectReference,
    type_: EventType,
    reason: String,
    note: String,
}

/// Where the cycle reads `OneDriveSite`s from.
#[derive(Clone)]
pub enum SiteSource {
    /// The controller's cache, fed by its watch.
    Store(Arc<SiteCache>),
    /// A list call per cycle (in-memory API servers without watches).
    List,
}

/// A place a test can stop the cycle, as a crash would.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CrashPoint {
    /// After the batch was recorded in the tenant status, before the request was sent.
    BeforeSend,
    /// After SharePoint accepted the batch, before any site status was written.
    AfterEnqueue,
}

/// What one cycle did (for tests, the demo and logs).
#[derive(Clone, Debug, Default)]
pub struct CycleReport {
    /// The batches SharePoint accepted in this cycle (at most one per geo).
    pub enqueued: Vec<BatchStatus>,
    pub site_writes: usize,
    pub tenant_written: bool,
    pub users: crate::api::UserCounts,
    pub requeue_after: Duration,
    /// `reason: message` of the tenant problem that stopped work, if any.
    pub problem: Option<String>,
    /// That problem's reason alone (the tenant condition's reason).
    pub problem_reason: Option<TenantReason>,
    pub crashed: bool,
    /// The tenant's credentials as this cycle saw them.
    pub credentials: CredentialHealth,
}

/// Whether an update may bring an Event (a phase reached, a retry value, a settings verdict).
fn notable(u: &plan::SiteUpdate) -> bool {
    (u.status.phase != u.previous_phase
        && matches!(u.status.phase, Some(SitePhase::Ready | SitePhase::Failed)))
        || u.status.retry.is_some()
        || u.status.settings.is_some()
}

fn ready_note(u: &plan::SiteUpdate) -> String {
    crate::api::find_condition(&u.status.conditions, condition_type::READY)
        .map(|c| c.message.clone())
        .unwrap_or_default()
}

/// Everything a cycle needs; one per operator process. Built from [`ReconcilerOptions`].
pub struct Reconciler {
    pub(super) client: kube::Client,
    pub(super) options: ReconcilerOptions,
    /// Test hook: stop the next cycle at this point, as a crash would.
    #[cfg(feature = "test-hooks")]
    crash: Mutex<Option<CrashPoint>>,
    pub(super) memories: Mutex<HashMap<String, Arc<tokio::sync::Mutex<Option<TenantMemory>>>>>,
    /// Each `OneDriveSiteSet`'s memory (`namespace/name`): one pass per set at a time.
    pub(super) sets: Mutex<HashMap<String, Arc<tokio::sync::Mutex<super::memory::SetMemory>>>>,
}

/// How a [`Reconciler`] is set up: everything but the Kubernetes client.
pub struct ReconcilerOptions {
    /// The operator's namespace: Secrets referenced by tenants live here.
    pub namespace: String,
    /// Tenant for sites without `spec.tenantRef`.
    pub default_tenant: Option<String>,
    /// For `User-Agent: NONISV|<organization>|onedrive-operator/<version>`.
    pub organization: String,
    pub sites: SiteSource,
    /// Namespaces' labels, for tenants that allow namespaces by label (default: an empty cache,
    /// so such a tenant serves no site; the controller passes its reflector's).
    pub namespaces: NamespaceStore,
    pub metrics: Arc<Metrics>,
    pub recorder: Option<EventSink>,
    /// Extra CA certificates for the tenant's hosts.
    pub ca_bundle: Option<Vec<u8>>,
    /// The operator's clock (the wall clock; benchmarks share the simulator's).
    pub clock: Arc<dyn Fn() -> Timestamp + Send + Sync>,
    /// Where tenants' requests may go: their cloud's hosts, unless the operator process was
    /// started with `--allow-endpoint-overrides` (the simulator, tests, demos).
    pub endpoints: EndpointPolicy,
    /// This replica's name, told to Microsoft in the User-Agent (which replica sent what).
    pub replica: Option<String>,
    /// With leader election: checked immediately before every enqueue.
    pub fence: Option<Fence>,
    /// The `--concurrency` work slots a cycle runs in (`run` gives them; `None`: no bound, as
    /// for tools and tests that call cycles themselves).
    pub slots: Option<Slots>,
}

impl ReconcilerOptions {
    /// Defaults: no default tenant, organization `onedrive-operator`, fresh metrics, no Events,
    /// the system's CAs only, the wall clock, endpoints pinned to each tenant's cloud.
    pub fn new(namespace: impl Into<String>, sites: SiteSource) -> ReconcilerOptions {
        ReconcilerOptions {
            namespace: namespace.into(),
            default_tenant: None,
            organization: "onedrive-operator".into(),
            sites,
            namespaces: kube::runtime::reflector::store().0,
            metrics: Arc::new(Metrics::new()),
            recorder: None,
            ca_bundle: None,
            clock: Arc::new(Timestamp::now),
            endpoints: EndpointPolicy::Pinned,
            replica: None,
            fence: None,
            slots: None,
        }
    }
}

impl Reconciler {
    pub fn new(client: kube::Client, options: ReconcilerOptions) -> Self {
        Reconciler {
            client,
            options,
            #[cfg(feature = "test-hooks")]
            crash: Mutex::new(None),
            memories: Mutex::new(HashMap::new()),
            sets: Mutex::new(HashMap::new()),
        }
    }

    pub fn metrics(&self) -> &Metrics {
        &self.options.metrics
    }

    /// Test hook: the next cycle stops at `point`, as a crash would.
    #[cfg(feature = "test-hooks")]
    pub fn crash_next_cycle_at(&self, point: CrashPoint) {
        *self.crash.lock().unwrap() = Some(point);
    }

    /// The tenant a site belongs to.
    pub fn tenant_of<'s>(&'s self, site: &'s KeptSite) -> Option<&'s str> {
        site.tenant.as_deref().or(self.options.default_tenant.as_deref())
    }

    /// The sites of the tenant `name` (those naming it, and those naming none if it is the
    /// default tenant).
    pub(super) async fn sites_of(&self, name: &str) -> Result<Snapshot, ControllerError> {
        match &self.options.sites {
            SiteSource::Store(store) => {
                Ok(store.tenant_sites(name, self.options.default_tenant.as_deref() == Some(name)))
            }
            SiteSource::List => {
                let sites = self.all_sites().await?;
                Ok(sites.into_iter().filter(|s| self.tenant_of(s) == Some(name)).collect())
            }
        }
    }

    pub(super) async fn all_sites(&self) -> Result<Vec<Arc<KeptSite>>, ControllerError> {
        match &self.options.sites {
            SiteSource::Store(store) => Ok(store.state()),
            SiteSource::List => listed(Api::all(self.client.clone())).await,
        }
    }

    /// One cycle for the tenant `name`. One cycle per tenant runs at a time.
    pub async fn reconcile_tenant(&self, name: &str) -> Result<CycleReport, ControllerError> {
        let kept = self.memories.lock().unwrap().entry(name.to_string()).or_default().clone();
        let mut memory = kept.lock().await;
        let started = std::time::Instant::now();
        let result = match &self.options.slots {
            Some(slots) => {
                let (result, used) = slots.run(self.cycle_keeping_tokens(name, &mut memory)).await;
                self.options.metrics.slot_used(name, used);
                result
            }
            None => self.cycle_keeping_tokens(name, &mut memory).await,
        };
        let outcome = match &result {
            Ok(r) if r.problem.is_some() => CycleResult::TenantNotReady,
            Ok(_) => CycleResult::Ok,
            Err(_) => CycleResult::Error,
        };
        self.options.metrics.reconciled(name, outcome.as_str(), started.elapsed());
        match &result {
            Err(e) => self.options.metrics.error(name, e.reason().as_str()),
            // The reasons are the tenant condition's (a small fixed set): alertable per cause.
            Ok(CycleReport { problem_reason: Some(reason), .. }) => {
                self.options.metrics.error(name, reason.as_str())
            }
            Ok(_) => {}
        }
        result
    }

    /// One cycle; one that failed before its last phase still stores rotated refresh tokens.
    async fn cycle_keeping_tokens(
        &self,
        name: &str,
        memory: &mut Option<TenantMemory>,
    ) -> Result<CycleReport, ControllerError> {
        let result = self.cycle(name, memory).await;
        if result.is_err()
            && let Some(store) = memory.as_ref().and_then(|m| m.refresh.as_ref())
        {
            self.store_rotations(name, store).await;
        }
        result
    }

    #[cfg(not(feature = "test-hooks"))]
    pub(super) fn crash_at(&self, _: CrashPoint) -> bool {
        false
    }

    #[cfg(feature = "test-hooks")]
    pub(super) fn crash_at(&self, point: CrashPoint) -> bool {
        let mut crash = self.crash.lock().unwrap();
        if *crash == Some(point) {
            *crash = None;
            true
        } else {
            false
        }
    }

    pub(super) async fn write_site(&self, update: &plan::SiteUpdate) -> Result<(), ControllerError> {
        let api: Api<OneDriveSite> = Api::namespaced(self.client.clone(), &update.key.namespace);
        let patch = json!({
            "apiVersion": OneDriveSite::api_version(&()),
            "kind": OneDriveSite::kind(&()),
            "status": update.status,
        });
        match api
            .patch_status(&update.key.name, &PatchParams::apply(MANAGER).force(), &Patch::Apply(&patch))
            .await
        {
            Ok(_) => Ok(()),
            // Deleted since the cache saw it: nothing to report on.
            Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
            Err(e) => Err(ControllerError::kube(e)),
        }
    }

    /// The central geo's admin host as requests reach it.
    pub(super) fn central_admin_url(&self, tenant: &OneDriveTenant) -> String {
        self.options.endpoints.apply(&tenant.spec.admin_url)
    }

    /// Records every geo's in-flight batch (and the geos' other fields as they stand). A JSON
    /// merge patch: the list is replaced whole, and the pre-Multi-Geo `currentBatch` is removed
    /// in the same write that carries it over. With `precondition` (the tenant's resourceVersion
    /// as this cycle read it) the write fails with a Conflict if anyone wrote the tenant since:
    /// two processes can never both record a batch, so never both send one.
    pub(super) async fn write_tenant_batches(
        &self,
        name: &str,
        geos: &[GeoStatus],
        last_batch_id: i64,
        precondition: Option<&str>,
    ) -> Result<(), ControllerError> {
        let api: Api<OneDriveTenant> = Api::all(self.client.clone());
        let mut patch = json!({"status": {"geos": geos, "currentBatch": null, "lastBatchId": last_batch_id}});
        if let Some(rv) = precondition {
            patch["metadata"] = json!({ "resourceVersion": rv });
        }
        api.patch_status(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .map_err(ControllerError::kube)?;
        Ok(())
    }

    pub(super) async fn write_tenant_status(
        &self,
        name: &str,
        status: &OneDriveTenantStatus,
    ) -> Result<(), ControllerError> {
        let api: Api<OneDriveTenant> = Api::all(self.client.clone());
        let mut value = serde_json::to_value(status).expect("status serializes");
        // Absent optional fields must be removed, not left as they were.
        for field in ["currentBatch", "lastBatchSeconds", "throttledUntil", "progress"] {
            if value.get(field).is_none() {
                value[field] = serde_json::Value::Null;
            }
        }
        api.patch_status(name, &PatchParams::default(), &Patch::Merge(&json!({ "status": value })))
            .await
            .map_err(ControllerError::kube)?;
        Ok(())
    }

    pub(super) async fn event(&self, tenant: &OneDriveTenant, type_: EventType, reason: &str, note: String) {
        self.publish(type_, reason, &note, tenant.object_ref(&())).await;
    }

    /// An Event, when Events are recorded (a failure to record one is logged, not fatal).
    pub(super) async fn publish(
        &self,
        type_: EventType,
        reason: &str,
        note: &str,
        regarding: k8s_openapi::api::core::v1::ObjectReference,
    ) {
        let Some(recorder) = &self.options.recorder else { return };
        if let Err(e) = recorder.publish(type_, reason, note, regarding).await {
            tracing::debug!(error = %e, "event not recorded");
        }
    }

    /// The Events of the site transitions among `updates` (Ready, each failure, a retry acted on,
    /// settings that failed; nothing else is an Event), to publish once the statuses are written.
    pub(super) fn site_events<'u>(
        &self,
        sites: &[Arc<KeptSite>],
        updates: impl Iterator<Item = &'u plan::SiteUpdate>,
    ) -> Vec<SiteEvent> {
        if self.options.recorder.is_none() {
            return Vec::new();
        }
        let notable: Vec<&plan::SiteUpdate> = updates.filter(|u| notable(u)).collect();
        if notable.is_empty() {
            return Vec::new();
        }
        // Indexed once: a cycle can bring thousands of sites to Ready.
        let by_key: HashMap<(&str, &str), &Arc<KeptSite>> =
            sites.iter().map(|s| ((&*s.namespace, &*s.name), s)).collect();
        let mut events = Vec::new();
        for update in notable {
            let Some(site) = by_key.get(&(&*update.key.namespace, &*update.key.name)) else { continue };
            let kept = site.status.as_deref();
            if let Some(value) = update.status.retry.as_deref()
                && kept.and_then(|k| k.retry.as_deref()) != Some(value)
            {
                let note =
                    format!("acted on {} {value:?}: {}", crate::api::annotations::RETRY, ready_note(update));
                events.push(SiteEvent {
                    regarding: site.object_ref(),
                    type_: EventType::Normal,
                    reason: crate::api::EventReason::Retried.as_str().into(),
                    note,
                });
            }
            let configured =
                crate::api::find_condition(&update.status.conditions, condition_type::SITE_CONFIGURED);
            if let Some(c) = configured
                && c.status == "False"
                && c.reason != crate::api::reason::CONFIGURING
                && kept.and_then(|k| k.configured.as_ref()).is_none_or(|k| k.reason.as_str() != c.reason)
            {
                let (reason, note) = (c.reason.clone(), c.message.clone());
                events.push(SiteEvent {
                    regarding: site.object_ref(),
                    type_: EventType::Warning,
                    reason,
                    note,
                });
            }
            if update.status.phase != update.previous_phase
                && matches!(update.status.phase, Some(SitePhase::Ready | SitePhase::Failed))
            {
                let ready = crate::api::find_condition(&update.status.conditions, condition_type::READY);
                let (reason, note) = ready.map(|c| (c.reason.clone(), c.message.clone())).unwrap_or_default();
                let ready_now = update.status.phase == Some(SitePhase::Ready);
                let type_ = if ready_now { EventType::Normal } else { EventType::Warning };
                events.push(SiteEvent { regarding: site.object_ref(), type_, reason, note });
            }
        }
        events
    }

    pub(super) async fn publish_site_events(&self, events: Vec<SiteEvent>) {
        for e in events {
            self.publish(e.type_, &e.reason, &e.note, e.regarding).await;
        }
    }

    /// Sites whose tenant does not exist get `TenantNotFound`. Returns the number written.
    pub async fn reconcile_orphans(&self) -> Result<usize, ControllerError> {
        let tenants: Api<OneDriveTenant> = Api::all(self.client.clone());
        let existing: std::collections::HashSet<String> = tenants
            .list(&ListParams::default())
            .await
            .map_err(ControllerError::kube)?
            .items
            .iter()
            .map(|t| t.name_any())
            .collect();
        let now = (self.options.clock)();
        let mut written = 0;
        for site in self.all_sites().await? {
            let tenant = self.tenant_of(&site);
            if tenant.is_some_and(|t| existing.contains(t)) {
                continue;
            }
            let desired = DesiredSite::from_resource(&site);
            let name =
                tenant.unwrap_or("(none: set spec.tenantRef or run the operator with --default-tenant)");
            let status = plan::tenant_not_found_status(&desired, name, now);
            if let Some(update) = plan::SiteUpdate::replacing(&desired, status) {
                self.write_site(&update).await?;
                written += 1;
            }
        }
        Ok(written)
    }
}

/// The sites a list call of `api` gives (in-memory API servers without watches).
pub(super) async fn listed(api: Api<OneDriveSite>) -> Result<Vec<Arc<KeptSite>>, ControllerError> {
    let list = api.list(&ListParams::default()).await.map_err(ControllerError::kube)?;
    Ok(list.items.iter().filter_map(|s| Some(Arc::new(KeptSite::new(s)?))).collect())
}

/// Observations of a tenant without a client yet.
pub(super) static NOTHING_OBSERVED: std::sync::LazyLock<plan::Observations> =
    std::sync::LazyLock::new(plan::Observations::default);

/// The tenant's problem for `e`. Its message goes on the cluster-scoped tenant (and its Events),
/// so a user name Microsoft's answer may echo (`…@contoso.com`) is replaced by `{user}`.
pub(super) fn problem_of(e: &M365Error) -> TenantProblem {
    TenantProblem { reason: e.reason(), message: without_users(&e.to_string()), stalled: e.needs_person() }
}

/// `text` with every word that reads like an address (`local@domain.tld`) replaced by `{user}`.
pub(super) fn without_users(text: &str) -> String {
    let is_user = |w: &str| {
        let w = w.trim_matches(|c: char| !c.is_alphanumeric());
        w.split_once('@').is_some_and(|(local, domain)| !local.is_empty() && domain.contains('.'))
    };
    let mut out = String::with_capacity(text.len());
    for (i, word) in text.split(' ').enumerate() {
        if i > 0 {
            out.push(' ');
        }
        out.push_str(if is_user(word) { "{user}" } else { word });
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn tenant_messages_name_no_user() {
        assert_eq!(
            super::without_users("SharePoint refused the enqueue: 'o'neil@contoso.com' is not valid"),
            "SharePoint refused the enqueue: {user} is not valid"
        );
        assert_eq!(super::without_users("(ceo@contoso.com)."), "{user}");
        assert_eq!(
            super::without_users("GetPropertiesFor(accountName=@v) failed"),
            "GetPropertiesFor(accountName=@v) failed"
        );
    }
}
