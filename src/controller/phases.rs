//! One reconcile cycle of one tenant, in named phases sharing one [`Stand`]:
//! gather → prepare (limits, client, remembered refusals) → observe/plan rounds → send (at most
//! one enqueue, recorded first; the plan is made again from the send's outcome) → write sites →
//! write tenant.

use std::sync::Arc;

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::Api;
use kube::runtime::events::EventType;

use super::ControllerError;
use super::cycle::{
    CrashPoint, CycleReport, NOTHING_OBSERVED, Reconciler, TenantRuntime, after_secs, problem_of,
    tenant_problem_reason, tenant_status,
};
use crate::api::{
    BatchStatus, EventReason, OneDriveSite, OneDriveTenant, OneDriveTenantStatus, TenantReason,
};
use crate::plan::{self, DesiredSite, Limits, Observed, Plan, PlanInput, Planner, TenantProblem};
use crate::tenant::TenantError;

/// Plan rounds per cycle (observe what the plan asks for, plan again).
const MAX_ROUNDS: usize = 3;

/// How the cycle stands: what stops it, Microsoft's wait, the tenant's batch.
#[derive(Default)]
pub(super) struct Stand {
    pub(super) problem: Option<TenantProblem>,
    pub(super) throttled_until: Option<Timestamp>,
    pub(super) batch: Option<BatchStatus>,
}

impl Stand {
    /// The planner's input as the cycle now stands: `base` with what is remembered about the
    /// users, the tenant's batch, throttling and any tenant problem.
    fn input<'a>(&'a self, base: PlanInput<'a>, runtime: &'a Option<TenantRuntime>) -> PlanInput<'a> {
        PlanInput {
            observed: runtime.as_ref().map_or(&*NOTHING_OBSERVED, |r| &r.memory),
            batch: self.batch.as_ref(),
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
        let Some((tenant, sites)) = self.gather(name).await? else {
            *runtime = None;
            return Ok(CycleReport::default());
        };
        let desired: Vec<DesiredSite> = sites.iter().filter_map(|s| DesiredSite::from_resource(s)).collect();
        let status = tenant.status.clone().unwrap_or_default();
        let now = (self.options.clock)();
        let (limits, mut stand) = self.prepare(&tenant, &status, runtime, now).await;
        let base = base_input(name, &status, &limits, now);
        let mut planner = Planner::new(&desired);
        let plan = self.observe_and_plan(&mut planner, base, runtime, &mut stand).await;
        let mut report = CycleReport::default();
        let Some(plan) =
            self.send(&tenant, plan, &mut planner, base, runtime, &mut stand, &mut report).await?
        else {
            return Ok(report);
        };
        self.write_sites(&tenant, &sites, &plan, &mut report).await?;
        self.write_tenant(&tenant, &status, &plan, &stand, runtime, now, &mut report).await?;
        Ok(report)
    }

    /// Gather: the tenant and its sites (`None`: the tenant is gone).
    async fn gather(
        &self,
        name: &str,
    ) -> Result<Option<(OneDriveTenant, Vec<Arc<OneDriveSite>>)>, ControllerError> {
        let tenants: Api<OneDriveTenant> = Api::all(self.client.clone());
        let Some(tenant) = tenants.get_opt(name).await.map_err(ControllerError::kube)? else {
            return Ok(None);
        };
        let sites = self.all_sites().await?.into_iter().filter(|s| self.tenant_of(s) == Some(name)).collect();
        Ok(Some((tenant, sites)))
    }

    /// Prepare: limits and a tenant client, or the problem that prevents them; a refusal this
    /// process remembers; Microsoft's wait as the status recorded it.
    async fn prepare(
        &self,
        tenant: &OneDriveTenant,
        status: &OneDriveTenantStatus,
        runtime: &mut Option<TenantRuntime>,
        now: Timestamp,
    ) -> (Limits, Stand) {
        let mut stand = Stand {
            throttled_until: status.throttled_until.as_ref().map(|t| t.0).filter(|t| *t > now),
            batch: status.current_batch.clone(),
            problem: None,
        };
        let limits = match Limits::from_spec(&tenant.spec) {
            Ok(l) => l,
            Err(message) => {
                stand.problem =
                    Some(TenantProblem { reason: TenantReason::InvalidSpec, message, stalled: true });
                return (Limits::default(), stand);
            }
        };
        if let Err(e) = self.ensure_client(tenant, runtime).await {
            stand.problem = Some(problem_of(&e));
        } else if let Some((refusal, until)) = runtime.as_ref().and_then(|r| r.refused.clone())
            && now < until
        {
            stand.problem = Some(refusal);
        }
        (limits, stand)
    }

    /// Observe/plan rounds: look up what the plan needs, plan again, a few times at most.
    async fn observe_and_plan(
        &self,
        planner: &mut Planner<'_>,
        base: PlanInput<'_>,
        runtime: &mut Option<TenantRuntime>,
        stand: &mut Stand,
    ) -> Plan {
        let mut wanted = planner.targets(&stand.input(base, runtime));
        let mut round = 0;
        loop {
            if !wanted.is_empty() && stand.problem.is_none() && stand.throttled_until.is_none() {
                let rt = runtime.as_mut().expect("a client exists when there is no problem");
                match rt.client.observe_lookups(&wanted).await {
                    Ok(seen) => {
                        let at = (self.options.clock)();
                        for (k, observation) in seen {
                            let next = Observed::after(rt.memory.get(&k), at, observation);
                            rt.memory.insert(k, next);
                        }
                    }
                    Err(TenantError::Throttled { until, .. }) => stand.throttled_until = Some(until),
                    Err(e) => stand.problem = Some(problem_of(&e)),
                }
            }
            let plan = planner.plan(&stand.input(base, runtime));
            if plan.observe_now.is_empty() || round == MAX_ROUNDS {
                return plan;
            }
            wanted = plan.observe_now.clone();
            round += 1;
        }
    }

    /// Send: at most one enqueue, recorded in the tenant's status before it goes out. `None` when
    /// a test stopped the cycle as a crash would.
    #[allow(clippy::too_many_arguments)]
    async fn send(
        &self,
        tenant: &OneDriveTenant,
        plan: Plan,
        planner: &mut Planner<'_>,
        base: PlanInput<'_>,
        runtime: &mut Option<TenantRuntime>,
        stand: &mut Stand,
        report: &mut CycleReport,
    ) -> Result<Option<Plan>, ControllerError> {
        let Some(enqueue) = plan.enqueue.clone() else { return Ok(Some(plan)) };
        let name = base.tenant;
        let mut recorded = BatchStatus { sent: false, ..enqueue.batch.clone() };
        self.write_tenant_batch(name, Some(&recorded), plan.last_batch_id).await?;
        if self.crash_at(CrashPoint::BeforeSend) {
            report.crashed = true;
            return Ok(None);
        }
        let client = runtime.as_ref().expect("a plan with an enqueue has a client").client.clone();
        let outcome = client.enqueue(&recorded.users).await;
        if outcome.is_ok() {
            recorded.sent = true;
            if enqueue.resend {
                // Its provisioning clock starts now, not when an earlier process recorded it.
                recorded.enqueued_at = Time(plan::whole_second(base.now));
            }
            self.write_tenant_batch(name, Some(&recorded), plan.last_batch_id).await?;
            self.sent(tenant, &recorded).await;
            report.enqueued = Some(recorded.clone());
            if self.crash_at(CrashPoint::AfterEnqueue) {
                report.crashed = true;
                return Ok(None);
            }
            return Ok(Some(Plan { batch: Some(recorded), ..plan }));
        }
        let e = outcome.expect_err("checked");
        let keep = match &e {
            // Recorded, not sent: the next cycle sends it again.
            TenantError::Throttled { until, .. } => {
                stand.throttled_until = Some(*until);
                true
            }
            // It may or may not have arrived (or an earlier process already sent it): keep it
            // unsent and send it again later (idempotent on the service).
            _ if enqueue.resend || matches!(e, TenantError::Unreachable(_)) => {
                stand.problem = Some(problem_of(&e));
                true
            }
            _ => {
                // A definite refusal: nothing was enqueued. Forget the batch (and its id), say
                // why, and do not ask again with the same credentials for a while.
                let refusal = problem_of(&e);
                if let Some(rt) = runtime.as_mut() {
                    rt.refused = Some((refusal.clone(), after_secs(base.now, 600)));
                }
                stand.problem = Some(refusal);
                self.write_tenant_batch(name, None, base.last_batch_id).await?;
                false
            }
        };
        stand.batch = keep.then_some(recorded);
        // Planned again from what happened: the users of an unsent batch say so.
        let again = planner.plan(&stand.input(base, runtime));
        Ok(Some(Plan { finished: plan.finished, batch_duration: plan.batch_duration, ..again }))
    }

    /// What a batch accepted by SharePoint is reported with.
    async fn sent(&self, tenant: &OneDriveTenant, batch: &BatchStatus) {
        let name = tenant.metadata.name.as_deref().unwrap_or_default();
        self.options.metrics.batch(name, batch.users.len());
        let note = format!(
            "batch {} of {} users sent to SharePoint ({:?}); last user {}",
            batch.id,
            batch.users.len(),
            tenant.spec.enqueue_method,
            batch.last_user
        );
        self.event(tenant, EventType::Normal, EventReason::BatchEnqueued.as_str(), note).await;
    }

    /// Write sites: one status patch per site that changes.
    async fn write_sites(
        &self,
        tenant: &OneDriveTenant,
        sites: &[Arc<OneDriveSite>],
        plan: &Plan,
        report: &mut CycleReport,
    ) -> Result<(), ControllerError> {
        for update in &plan.site_updates {
            self.write_site(update).await?;
            report.site_writes += 1;
            self.site_event(sites, update).await;
        }
        let name = tenant.metadata.name.as_deref().unwrap_or_default();
        self.options.metrics.site_writes(name, plan.site_updates.len());
        if let Some((id, outcome)) = &plan.finished {
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
        plan: &Plan,
        stand: &Stand,
        runtime: &mut Option<TenantRuntime>,
        now: Timestamp,
        report: &mut CycleReport,
    ) -> Result<(), ControllerError> {
        let name = tenant.metadata.name.as_deref().unwrap_or_default();
        let health = self.credential_health(name, runtime.as_ref()).await;
        let problem = stand.problem.as_ref();
        let new_status = tenant_status(tenant, status, plan, problem, stand.throttled_until, now, &health);
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
        self.options.metrics.users(name, &plan.users);
        report.users = plan.users.clone();
        report.problem_reason = problem.map(|p| p.reason);
        report.problem = problem.map(|p| format!("{}: {}", p.reason, p.message));
        report.credentials = health;
        report.requeue_after = match stand.throttled_until {
            Some(t) if t > now => t.duration_since(now).unsigned_abs(),
            _ => plan.requeue_after.unsigned_abs(),
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
    PlanInput {
        tenant: name,
        observed: &NOTHING_OBSERVED,
        batch: None,
        last_batch_id: status.last_batch_id,
        throttled_until: None,
        tenant_problem: None,
        now,
        limits,
        typical_batch: status
            .last_batch_seconds
            .map(|s| jiff::SignedDuration::from_secs(s.clamp(0, 30 * 24 * 3600))),
    }
}
