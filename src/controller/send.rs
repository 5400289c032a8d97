//! The send phase: at most one enqueue per geo, each to that geo's admin host. Every new batch is
//! recorded in the tenant's status (`sent: false`) before any request goes out, so a crash
//! between the two resends exactly what was recorded and never forms a batch twice; the record is
//! conditional on the tenant's resourceVersion, so of two processes only one ever records — and
//! sends — a batch.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::runtime::events::EventType;

use super::ControllerError;
use super::cycle::{CrashPoint, CycleReport, Reconciler, TenantRuntime, after_secs, problem_of};
use super::phases::Stand;
use super::pipelines::{Pipeline, Planners, TenantPlan};
use crate::api::{BatchStatus, EventReason, OneDriveTenant};
use crate::plan::{self, PlanInput};
use crate::m365::TenantError;

/// The failure the cycle reports: one that concerns every geo (throttling, a refusal) over an
/// unreachable host.
fn worse(so_far: Option<TenantError>, e: TenantError) -> Option<TenantError> {
    match so_far {
        Some(f) if !matches!(f, TenantError::Unreachable(_)) => Some(f),
        _ => Some(e),
    }
}

/// How sending a geo's batch ended.
enum Sent {
    Accepted,
    /// Not sent, or not known to have arrived: stays recorded and unsent, sent again later
    /// (enqueueing is idempotent on the service).
    Kept(TenantError),
    /// SharePoint definitely refused it: nothing was enqueued.
    Refused(TenantError),
}

impl Reconciler {
    /// Send: every geo's enqueue, recorded first. `None` when a test stopped the cycle as a
    /// crash would. After a failure the plans are made again from what happened.
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn send(
        &self,
        tenant: &OneDriveTenant,
        plan: TenantPlan,
        planners: &mut Planners<'_>,
        base: PlanInput<'_>,
        runtime: &mut Option<TenantRuntime>,
        stand: &mut Stand,
        report: &mut CycleReport,
    ) -> Result<Option<TenantPlan>, ControllerError> {
        let enqueues: Vec<(usize, bool)> = plan
            .geos
            .iter()
            .enumerate()
            .filter_map(|(g, p)| p.enqueue.as_ref().map(|e| (g, e.resend)))
            .collect();
        if enqueues.is_empty() {
            return Ok(Some(plan));
        }
        let name = base.tenant;
        // The status written before sending says what this plan says of every geo: a batch that
        // just finished is gone (and its duration learnt), a new one is recorded unsent.
        for (pipeline, p) in stand.pipelines.iter_mut().zip(&plan.geos) {
            pipeline.batch = p.batch.clone();
            if let Some(d) = p.batch_duration {
                pipeline.last_batch_seconds = Some(d.as_secs());
            }
        }
        for &(g, _) in &enqueues {
            let e = plan.geos[g].enqueue.as_ref().expect("listed above");
            stand.pipelines[g].batch = Some(BatchStatus { sent: false, ..e.batch.clone() });
        }
        let last_batch_id = plan.last_batch_id().max(base.last_batch_id);
        let previous = tenant.status.as_ref().map_or(&[][..], |s| s.geos.as_slice());
        // The users go to the operator's namespace first: the tenant records only their number.
        self.record_batches(tenant, &mut stand.pipelines, base.last_batch_id).await?;
        // Recorded only if nobody wrote the tenant since this cycle read it (a Conflict ends the
        // cycle before anything is sent).
        let read_as = tenant.metadata.resource_version.as_deref();
        self.write_tenant_batches(name, &stand.pipelines, previous, last_batch_id, read_as).await?;
        if self.crash_at(CrashPoint::BeforeSend) {
            report.crashed = true;
            return Ok(None);
        }
        let client = runtime.as_ref().expect("a plan with an enqueue has a client").client.clone();
        let mut failure = None;
        let mut accepted = Vec::new();
        for &(g, resend) in &enqueues {
            if failure.as_ref().is_some_and(|e| !matches!(e, TenantError::Unreachable(_))) {
                // Throttling and a refused token concern every geo (one app, one set of limits).
                break;
            }
            let pipeline = &mut stand.pipelines[g];
            let recorded = pipeline.batch.as_mut().expect("recorded above");
            // The one irreversible step: only while this replica surely leads. Otherwise the
            // batch stays recorded unsent, for the leader to send.
            if self.options.fence.as_ref().is_some_and(|f| !f.holds()) {
                return Err(ControllerError::LeaseLost);
            }
            let outcome = match client.enqueue_at(&pipeline.admin_url, &recorded.users).await {
                Ok(()) => Sent::Accepted,
                Err(e)
                    if matches!(e, TenantError::Throttled { .. } | TenantError::Unreachable(_)) || resend =>
                {
                    Sent::Kept(e)
                }
                Err(e) => Sent::Refused(e),
            };
            match outcome {
                Sent::Accepted => {
                    recorded.sent = true;
                    if resend {
                        // Its provisioning clock starts now, not when an earlier process recorded it.
                        recorded.enqueued_at = Time(plan::whole_second(base.now));
                    }
                    let batch = recorded.clone();
                    accepted.push((pipeline.clone(), batch));
                    // Marked sent at once: a crash after this point never sends it again.
                    self.write_tenant_batches(name, &stand.pipelines, previous, last_batch_id, None).await?;
                }
                // An unreachable admin host holds up its own geo only: the others are still sent.
                Sent::Kept(e) => failure = worse(failure, e),
                Sent::Refused(e) => {
                    pipeline.batch = None;
                    failure = worse(failure, e);
                }
            }
        }
        if failure.is_some() {
            self.write_tenant_batches(name, &stand.pipelines, previous, last_batch_id, None).await?;
        }
        for (pipeline, batch) in accepted {
            self.sent(tenant, &pipeline, &batch).await;
            report.enqueued.push(batch);
        }
        if !report.enqueued.is_empty() && self.crash_at(CrashPoint::AfterEnqueue) {
            report.crashed = true;
            return Ok(None);
        }
        let Some(e) = failure else {
            let mut plan = plan;
            for (p, pipeline) in plan.geos.iter_mut().zip(&stand.pipelines) {
                if p.enqueue.is_some() {
                    p.batch = pipeline.batch.clone();
                }
            }
            return Ok(Some(plan));
        };
        match &e {
            // Recorded, not sent: the next cycle sends it again.
            TenantError::Throttled { until, .. } => stand.throttled_until = Some(*until),
            TenantError::Unreachable(_) => stand.problem = Some(problem_of(&e)),
            _ => {
                // A refusal: say why, and do not ask again with the same credentials for a while.
                let refusal = problem_of(&e);
                if let Some(rt) = runtime.as_mut() {
                    rt.refused = Some((refusal.clone(), after_secs(base.now, 600)));
                }
                stand.problem = Some(refusal);
            }
        }
        // Planned again from what happened: the users of an unsent batch say so. What finished
        // before the send stays finished.
        let mut again = planners.plan(&stand.input(base, runtime), &stand.pipelines);
        for (a, p) in again.geos.iter_mut().zip(&plan.geos) {
            a.finished = a.finished.clone().or(p.finished.clone());
            a.batch_duration = a.batch_duration.or(p.batch_duration);
        }
        Ok(Some(again))
    }

    /// What a batch accepted by SharePoint is reported with.
    async fn sent(&self, tenant: &OneDriveTenant, pipeline: &Pipeline, batch: &BatchStatus) {
        let name = tenant.metadata.name.as_deref().unwrap_or_default();
        self.options.metrics.batch(name, batch.users.len());
        let geo = if pipeline.location.is_empty() {
            String::new()
        } else {
            format!(" in geo {} ({})", pipeline.location, pipeline.admin_url)
        };
        // Counts only: tenant Events are readable beyond the users' namespaces. The last user's
        // own site says that the next batch waits for it.
        let note = format!(
            "batch {} of {} users sent to SharePoint{geo} ({:?})",
            batch.id,
            batch.users.len(),
            tenant.spec.enqueue_method,
        );
        self.event(tenant, EventType::Normal, EventReason::BatchEnqueued.as_str(), note).await;
    }
}
