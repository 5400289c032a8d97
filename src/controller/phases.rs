//! One reconcile cycle of one tenant, in named phases sharing one [`Stand`]:
//! gather (with admission: `spec.allowedNamespaces`) → prepare (limits, client, geos, remembered refusals) → observe/plan rounds (each geo's
//! users planned with that geo's batch) → send (at most one enqueue per geo, recorded first; see
//! `send`) → write sites → write tenant.

use std::sync::{Arc, Weak};

use jiff::Timestamp;
use kube::api::Api;
use kube::runtime::events::EventType;

use super::ControllerError;
use super::admission::Admitted;
use super::batch_record::{Recall, lost_note};
use super::cycle::{CycleReport, NOTHING_OBSERVED, Reconciler, SiteEvent, TenantRuntime, problem_of};
use super::pipelines::{Pipeline, Planners, TenantPlan, pipelines, recorded_pipelines};
use super::site_cache::{Shape, Snapshot};
use super::tenant_status::{tenant_problem_reason, tenant_status};
use crate::api::{EventReason, OneDriveTenant, OneDriveTenantStatus, TenantReason};
use crate::plan::{DesiredSite, Gathering, Limits, Observed, PlanInput, SiteUpdate, TenantProblem};
use crate::m365::TenantError;
use futures::{StreamExt, TryStreamExt};

/// Plan rounds per cycle (observe what the plan asks for, plan again).
const MAX_ROUNDS: usize = 3;
/// Ready and refused users re-checked in one cycle at most when the tenant is observed through
/// listings (`Limits::recheck_per_cycle` otherwise).
const RECHECKS_WITH_LISTINGS: usize = 20_000;

/// Site status patches in flight at once.
const SITE_WRITES_IN_FLIGHT: usize = 16;

/// How the cycle stands: what stops it, Microsoft's wait, each geo's pipeline.
pub(super) struct Stand {
    pub(super) problem: Option<TenantProblem>,
    pub(super) throttled_until: Option<Timestamp>,
    pub(super) pipelines: Vec<Pipeline>,
    pub(super) discovery: Discovery,
}

/// What this cycle learnt of the tenant's geos.
pub(super) enum Discovery {
    /// Not asked (no client, or Microsoft asked to wait): what the status says stands.
    NotTried,
    /// Discovered (now or within the hour).
    Known,
    /// Graph could not list them and never could: the central and declared geos are used.
    Failed(String),
}

impl Stand {
    /// The planner's input as the cycle now stands: `base` with what is remembered about the
    /// users, throttling and any tenant problem (each geo adds its own batch).
    pub(super) fn input<'a>(
        &'a self,
        base: PlanInput<'a>,
        runtime: &'a Option<TenantRuntime>,
    ) -> PlanInput<'a> {
        PlanInput {
            observed: runtime.as_ref().map_or(&*NOTHING_OBSERVED, |r| &r.memory),
            throttled_until: self.throttled_until,
            tenant_problem: self.problem.as_ref(),
            ..base
        }
    }
}

impl Reconciler {
    pub(super) async fn cycle(
        &self,
        name: &str,
        runtime: &mut Option<TenantRuntime>,
    ) -> Result<CycleReport, ControllerError> {
        let Some((tenant, (sites, shape))) = self.gather(name).await? else {
            *runtime = None;
            return Ok(CycleReport::default());
        };
        let Admitted { sites, refused, all } = self.admit(&tenant, sites).await?;
        let desired: Vec<DesiredSite> = sites.iter().map(|s| DesiredSite::from_resource(s)).collect();
        let status = tenant.status.clone().unwrap_or_default();
        let now = (self.options.clock)();
        let (limits, mut stand) = self.prepare(&tenant, &status, runtime, now).await;
        self.resume_batches(&tenant, &status, &mut stand).await?;
        let base = base_input(name, &status, &limits, now);
        // One geo: its users as last gathered, while the sites keep their shape.
        let gathering = runtime
            .as_mut()
            .filter(|_| stand.pipelines.len() == 1)
            .map(|rt| rt.gathering.for_sites(shape.filter(|_| all), &desired));
        let mut planners = Planners::new(&desired, gathering.as_deref(), &stand.pipelines);
        let plan = self.observe_and_plan(&mut planners, base, runtime, &mut stand).await;
        if let Some(rt) = runtime.as_mut() {
            keep_in_order(rt, &planners, gathering.as_ref());
        }
        let mut report = CycleReport::default();
        let Some(plan) =
            self.send(&tenant, plan, &mut planners, base, runtime, &mut stand, &mut report).await?
        else {
            return Ok(report);
        };
        let events = self.site_events(&sites, plan.site_updates());
        // The cache snapshot is let go before the writes: each write's watch event replaces a
        // cached site, and a snapshot held meanwhile kept every old version alive (at 30,000
        // sites, the first statuses held two copies of the cache).
        drop(planners);
        drop(desired);
        drop(sites);
        report.site_writes += self.write_refused(&refused).await?;
        self.write_sites(&tenant, events, &plan, &mut report).await?;
        self.write_tenant(&tenant, &status, &plan, &stand, runtime, now, &mut report).await?;
        Ok(report)
    }

    /// Gather: the tenant and its sites (`None`: the tenant is gone).
    async fn gather(
        &self,
        name: &str,
    ) -> Result<Option<(OneDriveTenant, (Snapshot, Option<Shape>))>, ControllerError> {
        let tenants: Api<OneDriveTenant> = Api::all(self.client.clone());
        let Some(tenant) = tenants.get_opt(name).await.map_err(ControllerError::kube)? else {
            return Ok(None);
        };
        Ok(Some((tenant, self.sites_of(name).await?)))
    }

    /// Prepare: limits, a tenant client and the tenant's geos, or the problem that prevents them;
    /// a refusal this process remembers; Microsoft's wait as the status recorded it; each geo's
    /// pipeline resumed from the status.
    async fn prepare(
        &self,
        tenant: &OneDriveTenant,
        status: &OneDriveTenantStatus,
        runtime: &mut Option<TenantRuntime>,
        now: Timestamp,
    ) -> (Limits, Stand) {
        let mut stand = Stand {
            throttled_until: status.throttled_until.as_ref().map(|t| t.0).filter(|t| *t > now),
            pipelines: recorded_pipelines(&self.central_admin_url(tenant), status),
            problem: None,
            discovery: Discovery::NotTried,
        };
        let mut limits = match Limits::from_spec(&tenant.spec) {
            Ok(l) => l,
            Err(message) => {
                stand.problem =
                    Some(TenantProblem { reason: TenantReason::InvalidSpec, message, stalled: true });
                return (Limits::default(), stand);
            }
        };
        // Where requests may go is decided before any Secret is read or request is sent.
        let ready = match self.options.endpoints.check_spec(&tenant.spec) {
            Ok(()) => self.ensure_client(tenant, runtime).await,
            Err(e) => Err(e),
        };
        if let Err(e) = ready {
            stand.problem = Some(problem_of(&e));
            return (limits, stand);
        }
        let client = &runtime.as_ref().expect("ensured above").client;
        if client.lists() {
            // One listing answers for every user: re-check all who are due at once rather than
            // paying for a listing per hundred.
            limits.recheck_per_cycle = limits.recheck_per_cycle.max(RECHECKS_WITH_LISTINGS);
        }
        if let Some((refusal, until)) = runtime.as_ref().and_then(|r| r.refused.clone())
            && now < until
        {
            stand.problem = Some(refusal);
        }
        if stand.throttled_until.is_none() {
            let client = &runtime.as_ref().expect("ensured above").client;
            match client.geos().await {
                Ok(geos) => {
                    stand.pipelines = pipelines(&geos, status);
                    stand.discovery = Discovery::Known;
                }
                Err(TenantError::Throttled { until, .. }) => stand.throttled_until = Some(until),
                // What versions before Multi-Geo did (every user through spec.adminUrl), plus the
                // declared geos; said on the tenant rather than stopping a working tenant.
                Err(e) => {
                    let geos = client.known_geos();
                    stand.discovery = Discovery::Failed(format!(
                        "Graph could not list the tenant's geos ({e}); users are enqueued through {} only: in a Multi-Geo tenant, users of any other geo would get no site. Fix: grant Graph Sites.Read.All, or declare every satellite geo in spec.geos",
                        geos.iter().map(|g| g.admin_url.as_str()).collect::<Vec<_>>().join(", ")
                    ));
                    stand.pipelines = pipelines(&geos, status);
                }
            }
        }
        (limits, stand)
    }

    /// The users of each batch in flight, read back from the operator's namespace; a batch
    /// recorded with its users on the tenant (by a version before 0.2) is recorded there now, so
    /// the tenant's next write drops them.
    async fn resume_batches(
        &self,
        tenant: &OneDriveTenant,
        status: &OneDriveTenantStatus,
        stand: &mut Stand,
    ) -> Result<(), ControllerError> {
        let name = tenant.metadata.name.as_deref().unwrap_or_default();
        if let Recall::Lost(ids) = self.recall_batches(name, &mut stand.pipelines).await? {
            let note = lost_note(tenant, &self.options.namespace, &ids);
            tracing::warn!(tenant = name, batches = ?ids, "batch records lost");
            self.event(tenant, EventType::Warning, EventReason::BatchRecordLost.as_str(), note).await;
        }
        self.record_batches(tenant, &mut stand.pipelines, status.last_batch_id).await
    }

    /// Plan, then observe/plan rounds: look up whom the plan names, plan again, a few times at
    /// most. A steady cycle, with nobody to look at, plans once.
    async fn observe_and_plan(
        &self,
        planners: &mut Planners<'_>,
        base: PlanInput<'_>,
        runtime: &mut Option<TenantRuntime>,
        stand: &mut Stand,
    ) -> TenantPlan {
        let mut plan = planners.plan(&stand.input(base, runtime), &stand.pipelines);
        let mut wanted = match plan.lookups() {
            first if first.is_empty() => plan.observe_now(),
            first => first,
        };
        let mut round = 0;
        while !wanted.is_empty() && round <= MAX_ROUNDS {
            if stand.problem.is_some() || stand.throttled_until.is_some() {
                // Nobody can be looked at: the plan stands as made.
                break;
            }
            let rt = runtime.as_mut().expect("a client exists when there is no problem");
            match rt.client.observe_located(&wanted).await {
                Ok(seen) => {
                    let at = (self.options.clock)();
                    for (k, (observation, location)) in seen {
                        let next = Observed::located(rt.memory.get(&k), at, observation, location);
                        rt.memory.insert(k, next);
                    }
                }
                Err(TenantError::Throttled { until, .. }) => stand.throttled_until = Some(until),
                Err(e) => stand.problem = Some(problem_of(&e)),
            }
            plan = planners.plan(&stand.input(base, runtime), &stand.pipelines);
            wanted = plan.observe_now();
            round += 1;
        }
        plan
    }

    /// Write sites: one status patch per site that changes, a few in flight at once (one at a
    /// time, 10,000 first statuses took a minute on a real API server); then their Events.
    async fn write_sites(
        &self,
        tenant: &OneDriveTenant,
        events: Vec<SiteEvent>,
        plan: &TenantPlan,
        report: &mut CycleReport,
    ) -> Result<(), ControllerError> {
        let updates: Vec<&SiteUpdate> = plan.site_updates().collect();
        // A loop, not a closure: a closure over these borrows is not `Send` for every lifetime
        // the controller's future needs.
        let mut writes = Vec::with_capacity(updates.len());
        for update in &updates {
            writes.push(self.write_site(update));
        }
        futures::stream::iter(writes)
            .buffer_unordered(SITE_WRITES_IN_FLIGHT)
            .try_collect::<Vec<()>>()
            .await?;
        report.site_writes += updates.len();
        self.publish_site_events(events).await;
        let name = tenant.metadata.name.as_deref().unwrap_or_default();
        self.options.metrics.site_writes(name, plan.site_update_count());
        for (id, outcome) in plan.geos.iter().filter_map(|p| p.finished.as_ref()) {
            let note = format!("batch {id}: {outcome:?}");
            self.event(tenant, EventType::Normal, EventReason::BatchFinished.as_str(), note).await;
        }
        Ok(())
    }

    /// Write tenant: its status (when it changed), credential upkeep, metrics and the report.
    #[allow(clippy::too_many_arguments)]
    async fn write_tenant(
        &self,
        tenant: &OneDriveTenant,
        status: &OneDriveTenantStatus,
        plan: &TenantPlan,
        stand: &Stand,
        runtime: &mut Option<TenantRuntime>,
        now: Timestamp,
        report: &mut CycleReport,
    ) -> Result<(), ControllerError> {
        let name = tenant.metadata.name.as_deref().unwrap_or_default();
        let health = self.credential_health(name, runtime.as_ref()).await;
        let problem = stand.problem.as_ref();
        let new_status = tenant_status(tenant, status, plan, stand, now, &health);
        self.options.metrics.tenant_status(name, &new_status);
        self.credential_events(tenant, status, &new_status).await;
        if Some(&new_status) != tenant.status.as_ref() {
            if let Some(p) = problem
                && Some(p.reason) != tenant_problem_reason(status)
            {
                self.event(tenant, EventType::Warning, p.reason.as_str(), p.message.clone()).await;
            }
            self.write_tenant_status(name, &new_status).await?;
            report.tenant_written = true;
        }
        if let Some(rt) = runtime.as_mut() {
            let counters = rt.client.counters();
            self.options.metrics.tenant_http(name, &counters, &rt.last_counters);
            rt.last_counters = counters;
        }
        report.users = plan.users();
        self.options.metrics.users(name, &report.users);
        report.problem_reason = problem.map(|p| p.reason);
        report.problem = problem.map(|p| format!("{}: {}", p.reason, p.message));
        report.credentials = health;
        report.requeue_after = match stand.throttled_until {
            Some(t) if t > now => t.duration_since(now).unsigned_abs(),
            _ => plan.requeue_after().unsigned_abs(),
        };
        Ok(())
    }
}

/// What every planning call of the cycle shares; each call fills in what may have changed.
fn base_input<'a>(
    name: &'a str,
    status: &OneDriveTenantStatus,
    limits: &'a Limits,
    now: Timestamp,
) -> PlanInput<'a> {
    PlanInput { last_batch_id: status.last_batch_id, ..PlanInput::new(name, &NOTHING_OBSERVED, limits, now) }
}

/// Puts the tenant's observations in the order its next cycles' passes read them, keyed by the
/// gathering's own keys ([`plan::Planner::order_observations`]), when they have grown by a tenth
/// since (new users are appended); after the users were gathered anew (a site added or removed),
/// gives them the new gathering's keys ([`plan::Planner::share_keys`]), or each would be read
/// again as a string every pass.
fn keep_in_order(rt: &mut TenantRuntime, planners: &Planners, gathering: Option<&Arc<Gathering>>) {
    let regathered = gathering.is_some_and(|g| !std::ptr::eq(rt.ordered_by.as_ptr(), Arc::as_ptr(g)));
    if rt.memory.len() > rt.ordered + rt.ordered / 10 {
        planners.order_observations(&mut rt.memory);
        rt.ordered = rt.memory.len();
    } else if regathered {
        planners.share_keys(&mut rt.memory);
    }
    rt.ordered_by = gathering.map_or_else(Weak::new, Arc::downgrade);
}
