//! The write phases: each site whose status changes, then the tenant's status, credential upkeep,
//! metrics and the cycle's report.

use futures::{StreamExt, TryStreamExt};
use kube::runtime::events::EventType;

use super::ControllerError;
use super::cycle::Context;
use super::memory::TenantMemory;
use super::reconciler::{CycleReport, Reconciler, SiteEvent};
use crate::api::EventReason;
use crate::plan::SiteUpdate;
use crate::plan::tenant::{Stand, TenantPlan, tenant_problem_reason, tenant_status};

/// Site status patches in flight at once.
const SITE_WRITES_IN_FLIGHT: usize = 16;

impl Reconciler {
    /// Write sites: one status patch per site that changes, a few in flight at once (one at a
    /// time, 10,000 first statuses took a minute on a real API server); then their Events.
    pub(super) async fn write_sites(
        &self,
        cx: &Context<'_>,
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
        self.options.metrics.site_writes(cx.name, plan.site_update_count());
        for (id, outcome) in plan.geos.iter().filter_map(|p| p.finished.as_ref()) {
            let note = format!("batch {id}: {outcome:?}");
            self.event(cx.tenant, EventType::Normal, EventReason::BatchFinished.as_str(), note).await;
        }
        Ok(())
    }

    /// Write tenant: its status (when it changed), credential upkeep, metrics and the report.
    pub(super) async fn write_tenant(
        &self,
        cx: &Context<'_>,
        plan: &TenantPlan,
        stand: &Stand,
        memory: &mut Option<TenantMemory>,
        report: &mut CycleReport,
    ) -> Result<(), ControllerError> {
        let (name, tenant, now) = (cx.name, cx.tenant, cx.now);
        let health = self.credential_health(name, memory.as_ref()).await;
        let problem = stand.problem.as_ref();
        let new_status = tenant_status(tenant, &cx.status, plan, stand, now, &health);
        self.options.metrics.tenant_status(name, &new_status);
        self.credential_events(tenant, &cx.status, &new_status).await;
        if Some(&new_status) != tenant.status.as_ref() {
            if let Some(p) = problem
                && Some(p.reason) != tenant_problem_reason(&cx.status)
            {
                self.event(tenant, EventType::Warning, p.reason.as_str(), p.message.clone()).await;
            }
            self.write_tenant_status(name, &new_status).await?;
            report.tenant_written = true;
        }
        if let Some(m) = memory.as_mut() {
            let counters = m.client.counters();
            self.options.metrics.tenant_http(name, &counters, &m.last_counters);
            m.last_counters = counters;
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
