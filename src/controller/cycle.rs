//! One reconcile cycle of one tenant, as named phases: gather → admit → prepare → observe and
//! plan → record → send → configure → write sites → write tenant. Each phase is a method with typed inputs
//! and outputs; what is decided is decided by the planner (`plan::tenant`), and the phases only
//! read, ask and write.

use jiff::Timestamp;
use kube::api::Api;

use super::ControllerError;
use super::admission::Admitted;
use super::memory::TenantMemory;
use super::reconciler::{CrashPoint, CycleReport, NOTHING_OBSERVED, Reconciler};
use super::site_cache::Snapshot;
use crate::api::{OneDriveTenant, OneDriveTenantStatus};
use crate::plan::settings::SettingsPolicy;
use crate::plan::tenant::{self, Stand, TenantInput, TenantPlan, TenantPlanner};
use crate::plan::{DesiredSite, Limits};

/// What every phase of one cycle reads: the tenant as this cycle read it, its status, its limits
/// and the cycle's time.
pub(super) struct Context<'a> {
    pub(super) tenant: &'a OneDriveTenant,
    pub(super) name: &'a str,
    pub(super) status: OneDriveTenantStatus,
    pub(super) limits: Limits,
    /// The tenant's site settings (`siteAdmins`, `storageQuota`, `perSite`).
    pub(super) settings: SettingsPolicy,
    pub(super) now: Timestamp,
}

impl Reconciler {
    pub(super) async fn cycle(
        &self,
        name: &str,
        memory: &mut Option<TenantMemory>,
    ) -> Result<CycleReport, ControllerError> {
        // Gather: the tenant and its sites; a tenant that is gone takes what it remembered along.
        let Some((tenant, sites)) = self.gather(name).await? else {
            *memory = None;
            return Ok(CycleReport::default());
        };
        // Admit: the sites its namespace policy serves (the others are told so below).
        let Admitted { sites, refused } = self.admit(&tenant, sites).await?;
        // Prepare: limits, the client, each geo's pipeline with its batch and that batch's users.
        let (cx, mut stand) = self.prepare(&tenant, memory).await?;
        // Observe and plan: the in-flight batches' gates first, then whom else the plan names.
        let tenant_declares = cx.settings.declares();
        let desired: Vec<DesiredSite> = sites
            .iter()
            .map(|s| {
                let site = DesiredSite::from_resource(s);
                DesiredSite { declares_settings: site.declares_settings || tenant_declares, ..site }
            })
            .collect();
        let mut planner = TenantPlanner::new(&desired, &stand.pipelines);
        let plan = self.observe_and_plan(&cx, &mut planner, &mut stand, memory).await;
        let mut report = CycleReport::default();
        let to_send = tenant::record(&plan, &mut stand);
        let mut plan = if to_send.is_empty() {
            plan
        } else {
            // Record: every new batch (its users in the operator's namespace first), fenced.
            self.record(&cx, &mut stand).await?;
            if self.crash_at(CrashPoint::BeforeSend) {
                report.crashed = true;
                return Ok(report);
            }
            // Send: each geo's batch; what it came to is the planner's to read.
            let failure = self.send(&cx, &to_send, &mut stand, memory, &mut report).await?;
            if !report.enqueued.is_empty() && self.crash_at(CrashPoint::AfterEnqueue) {
                report.crashed = true;
                return Ok(report);
            }
            match failure {
                None => tenant::with_sent(plan, &stand),
                Some(f) => self.after_failure(&cx, plan, f, &mut planner, &mut stand, memory).await?,
            }
        };
        // Configure: the declared settings of sites that exist (a bounded number per cycle; the
        // batch gate never waits for it).
        self.configure(&cx, &sites, &mut plan, &stand, memory).await;
        // Write sites. The cache snapshot is let go first: each write's watch event replaces a
        // cached site, and a snapshot held meanwhile kept every old version alive.
        let events = self.site_events(&sites, plan.site_updates());
        drop(planner);
        drop(desired);
        drop(sites);
        report.site_writes += self.write_refused(&refused).await?;
        self.write_sites(&cx, events, &plan, &mut report).await?;
        // Write tenant.
        self.write_tenant(&cx, &plan, &stand, memory, &mut report).await?;
        Ok(report)
    }

    /// Gather: the tenant and its sites (`None`: the tenant is gone).
    async fn gather(&self, name: &str) -> Result<Option<(OneDriveTenant, Snapshot)>, ControllerError> {
        let tenants: Api<OneDriveTenant> = Api::all(self.client.clone());
        let Some(tenant) = tenants.get_opt(name).await.map_err(ControllerError::kube)? else {
            return Ok(None);
        };
        Ok(Some((tenant, self.sites_of(name).await?)))
    }

    /// The plan of every geo, from what the cycle stands on and what the tenant remembers.
    pub(super) fn plan(
        &self,
        cx: &Context,
        planner: &mut TenantPlanner,
        stand: &Stand,
        memory: &Option<TenantMemory>,
    ) -> TenantPlan {
        let observed = memory.as_ref().map_or(&*NOTHING_OBSERVED, |m| &m.observations);
        let input = TenantInput { tenant: cx.name, observed, limits: &cx.limits, now: cx.now };
        planner.plan(&input, stand)
    }

    /// A send failed: the cycle says why (and remembers a refusal), the record says what stays in
    /// flight, and the plan is made again from that, keeping what finished before the send.
    async fn after_failure(
        &self,
        cx: &Context<'_>,
        first: TenantPlan,
        failure: tenant::SendFailure,
        planner: &mut TenantPlanner<'_>,
        stand: &mut Stand,
        memory: &mut Option<TenantMemory>,
    ) -> Result<TenantPlan, ControllerError> {
        let refused_until = tenant::after_failure(stand, failure.clone(), cx.now);
        if let (Some(until), Some(m)) = (refused_until, memory.as_mut()) {
            m.refused = Some((failure.problem, until));
        }
        self.write_recorded(cx, stand, None).await?;
        let again = tenant::with_finished(self.plan(cx, planner, stand, memory), &first);
        tenant::record(&again, stand);
        Ok(again)
    }
}
