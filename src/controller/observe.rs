//! The prepare and observe phases: what a cycle stands on (limits, the client, each geo's pipeline
//! with its batch's users, a remembered refusal, Microsoft's wait), then the observations each
//! plan asks for — every in-flight batch's gate before anything else.

use kube::runtime::events::EventType;

use super::ControllerError;
use super::batch_record::{Recall, lost_note};
use super::cycle::Context;
use super::memory::TenantMemory;
use super::reconciler::{Reconciler, problem_of};
use crate::api::{EventReason, OneDriveTenant, OneDriveTenantStatus, TenantReason};
use crate::m365::{Geo, M365Error};
use crate::plan::settings::SettingsPolicy;
use crate::plan::tenant::{
    Discovery, GeoTarget, Stand, TenantPlan, TenantPlanner, pipelines, recorded_pipelines,
};
use crate::plan::{Limits, Lookup, Observed, TenantProblem};

/// Observe/plan rounds per cycle at most (the gates, then whom else the plan names, then whom it
/// still needs before it can finish a batch or form the next).
const MAX_ROUNDS: usize = 4;
/// Ready and refused users re-checked in one cycle at most when the tenant is observed through
/// listings (`Limits::recheck_per_cycle` otherwise).
const RECHECKS_WITH_LISTINGS: usize = 20_000;

impl Reconciler {
    /// Prepare: the cycle's context and how the tenant stands — each geo's pipeline resumed from
    /// the status (with its batch's users read back), the client connected, the geos learnt, a
    /// refusal this process remembers, Microsoft's wait as the status recorded it.
    pub(super) async fn prepare<'a>(
        &self,
        tenant: &'a OneDriveTenant,
        memory: &mut Option<TenantMemory>,
    ) -> Result<(Context<'a>, Stand), ControllerError> {
        let now = (self.options.clock)();
        let status = tenant.status.clone().unwrap_or_default();
        let mut stand = Stand {
            throttled_until: status.throttled_until.as_ref().map(|t| t.0).filter(|t| *t > now),
            pipelines: recorded_pipelines(&self.central_admin_url(tenant), &status),
            problem: None,
            discovery: Discovery::NotTried,
            last_batch_id: status.last_batch_id,
        };
        let limits = match Limits::from_spec(&tenant.spec) {
            Ok(mut limits) => {
                if self.connect_and_discover(tenant, &status, &mut stand, memory, now).await {
                    // One listing answers for every user: re-check all who are due at once.
                    limits.recheck_per_cycle = limits.recheck_per_cycle.max(RECHECKS_WITH_LISTINGS);
                }
                limits
            }
            Err(message) => {
                stand.problem =
                    Some(TenantProblem { reason: TenantReason::InvalidSpec, message, stalled: true });
                Limits::default()
            }
        };
        self.resume_batches(tenant, &status, &mut stand).await?;
        let name = tenant.metadata.name.as_deref().unwrap_or_default();
        // Checked with the limits: a policy that cannot be read stopped the tenant (InvalidSpec).
        let settings = SettingsPolicy::from_spec(name, &tenant.spec).unwrap_or_default();
        Ok((Context { tenant, name, status, limits, settings, now }, stand))
    }

    /// The endpoints checked against the policy, the client connected, and the tenant's geos
    /// learnt; anything that stops the tenant goes into the stand. Whether the client observes
    /// through tenant-wide listings.
    async fn connect_and_discover(
        &self,
        tenant: &OneDriveTenant,
        status: &OneDriveTenantStatus,
        stand: &mut Stand,
        memory: &mut Option<TenantMemory>,
        now: jiff::Timestamp,
    ) -> bool {
        // Where requests may go is decided before any Secret is read or request is sent.
        let connected = match self.options.endpoints.check_spec(&tenant.spec) {
            Ok(()) => self.connect(tenant, memory).await,
            Err(e) => Err(e),
        };
        let m = match (connected, memory.as_ref()) {
            (Ok(()), Some(m)) => m,
            (Err(e), _) => {
                stand.problem = Some(problem_of(&e));
                return false;
            }
            (Ok(()), None) => return false,
        };
        if let Some((refusal, _)) = m.refused.clone().filter(|(_, until)| now < *until) {
            stand.problem = Some(refusal);
        }
        if stand.throttled_until.is_none() {
            match m.client.geos().await {
                Ok(geos) => {
                    stand.pipelines = pipelines(&targets(&geos), status);
                    stand.discovery = Discovery::Known;
                }
                Err(M365Error::Throttled { until, .. }) => stand.throttled_until = Some(until),
                // What versions before Multi-Geo did (every user through spec.adminUrl), plus the
                // declared geos; said on the tenant rather than stopping a working tenant.
                Err(e) => {
                    let geos = m.client.known_geos();
                    let hosts: Vec<&str> = geos.iter().map(|g| g.admin_url.as_str()).collect();
                    stand.discovery = Discovery::Failed(format!(
                        "Graph could not list the tenant's geos ({e}); users are enqueued through {} only: in a Multi-Geo tenant, users of any other geo would get no site. Fix: grant Graph Sites.Read.All, or declare every satellite geo in spec.geos",
                        hosts.join(", ")
                    ));
                    stand.pipelines = pipelines(&targets(&geos), status);
                }
            }
        }
        m.client.lists()
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

    /// Observe and plan: plan, look at every in-flight batch's gate and plan again, then at whom
    /// else the plan names, then at whom it still needs. A steady cycle, with nobody to look at,
    /// plans once. Nothing is looked at while the tenant is stopped or Microsoft asked to wait.
    pub(super) async fn observe_and_plan(
        &self,
        cx: &Context<'_>,
        planner: &mut TenantPlanner<'_>,
        stand: &mut Stand,
        memory: &mut Option<TenantMemory>,
    ) -> TenantPlan {
        let mut plan = self.plan(cx, planner, stand, memory);
        let mut rounds = 0;
        for stage in 0.. {
            let wanted = match stage {
                0 => plan.gates(),
                1 => Some(plan.lookups()).filter(|l| !l.is_empty()).unwrap_or_else(|| plan.observe_now()),
                _ => plan.observe_now(),
            };
            let blocked = stand.problem.is_some() || stand.throttled_until.is_some();
            if wanted.is_empty() && stage > 0 || rounds == MAX_ROUNDS || blocked {
                break;
            }
            if wanted.is_empty() {
                continue;
            }
            self.observe(&wanted, stand, memory).await;
            plan = self.plan(cx, planner, stand, memory);
            rounds += 1;
        }
        plan
    }

    /// Looks `wanted` up and remembers what was seen; throttling or a problem goes into the stand.
    async fn observe(&self, wanted: &[Lookup], stand: &mut Stand, memory: &mut Option<TenantMemory>) {
        let Some(m) = memory.as_mut() else { return };
        match m.client.observe_located(wanted).await {
            Ok(seen) => {
                let at = (self.options.clock)();
                for (k, (observation, location)) in seen {
                    let next = Observed::located(m.observations.get(&k), at, observation, location);
                    m.observations.insert(k, next);
                }
            }
            Err(M365Error::Throttled { until, .. }) => stand.throttled_until = Some(until),
            Err(e) => stand.problem = Some(problem_of(&e)),
        }
    }
}

/// The geos as the planner routes to them.
fn targets(geos: &[Geo]) -> Vec<GeoTarget> {
    geos.iter()
        .map(|g| GeoTarget {
            location: g.location.clone(),
            admin_url: g.admin_url.clone(),
            central: g.central,
        })
        .collect()
}
