//! One pass of a `OneDriveSiteSet`, as named phases: gather (the set, its tenant, the
//! namespace's sites) → read the source → plan (`plan::site_set`) → write the sites (create,
//! update, delete) → write the set's status. The set's own concern only: provisioning its users
//! is the tenant cycle's, which sees the set's sites as any others.

mod children;
mod remember;
mod source;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::events::EventType;
use kube::{Resource, ResourceExt};
use serde_json::json;

use super::ControllerError;
use super::memory::{SetMemory, SourceRead};
use super::reconciler::{Reconciler, SiteSource, listed};
use crate::api::annotations::CONFIRM_REMOVALS;
use crate::api::{
    KeptSite, OneDriveSite, OneDriveSiteSet, OneDriveSiteSetStatus, OneDriveTenant, SetReason,
    condition_type, find_condition,
};
use crate::m365::{M365Error, TenantClient};
use crate::plan::site_set::{self, Confirmed, SetInput, SetPlan, SetProblem, Source};

/// Writes (creations, updates, deletions) of one pass, 8 in flight. The next pass comes when the
/// writes show in the site watch, or a second later: the API server's speed sets the pace, and
/// no set has more than 8 writes in flight.
pub const WRITES_PER_PASS: usize = 200;
/// How soon a set that wrote is looked at again.
const WHILE_WRITING: Duration = Duration::from_secs(1);
/// How soon a set is looked at again while its sites are being provisioned or its source fails
/// (its sites' changes wake it too).
const WHILE_UNSETTLED: Duration = Duration::from_secs(60);
/// A label value (the set's name on its sites) is at most 63 characters.
const MAX_SET_NAME: usize = 63;

/// What one pass did (for tests, the benchmarks and logs).
#[derive(Clone, Debug, Default)]
pub struct SetReport {
    pub created: usize,
    pub updated: usize,
    pub deleted: usize,
    /// Sites the API server refused.
    pub refused: usize,
    /// The set's Ready reason after the pass.
    pub reason: Option<String>,
    pub status_written: bool,
    pub requeue_after: Duration,
}

impl SetReport {
    /// Whether the pass wrote any site.
    pub fn wrote(&self) -> bool {
        self.created + self.updated + self.deleted > 0
    }
}

/// The set, its tenant (if it exists) and the namespace's sites.
struct Gathered {
    set: OneDriveSiteSet,
    tenant: Result<OneDriveTenant, SetProblem>,
    sites: Vec<Arc<KeptSite>>,
}

impl Reconciler {
    /// One pass of the set `namespace/name` (nothing when it is gone).
    pub async fn reconcile_set(&self, namespace: &str, name: &str) -> Result<SetReport, ControllerError> {
        let key = format!("{namespace}/{name}");
        let kept = self.sets.lock().unwrap().entry(key.clone()).or_default().clone();
        let mut memory = kept.lock().await;
        // Gather.
        let Some(g) = self.gather_set(namespace, name).await? else {
            self.sets.lock().unwrap().remove(&key);
            return Ok(SetReport::default());
        };
        let now = (self.options.clock)();
        memory.adopt(g.set.uid(), g.set.metadata.generation);
        // Read the source.
        let source = match (&g.tenant, name.len() > MAX_SET_NAME) {
            (_, true) => Err(SetProblem::new(
                SetReason::InvalidSpec,
                format!(
                    "the set's name has {} characters; its sites' label value takes at most {MAX_SET_NAME}: create the set under a shorter name",
                    name.len()
                ),
                true,
            )),
            (Err(problem), _) => Err(problem.clone()),
            (Ok(tenant), _) => self.read_source(&g.set, tenant, &mut memory, now).await,
        };
        // Plan.
        let digest = template_digest(&g.set);
        memory.settle(&g.sites, now);
        let problem_since = memory.problem_since(&source, now);
        let plan = plan_pass(&g, &source, &memory, &digest, problem_since, now);
        // Write the sites; a refusal is planned again at once, to be reported.
        let mut report = SetReport::default();
        let plan = if plan.create.is_empty() && plan.update.is_empty() && plan.delete.is_empty() {
            plan
        } else {
            let api: Api<OneDriveSite> = Api::namespaced(self.client.clone(), namespace);
            let written = children::write(&api, &g.set, &plan, &digest).await?;
            (report.created, report.updated, report.deleted) =
                (written.created, written.updated, written.deleted);
            report.refused = written.refused.len();
            memory.wrote(&plan, &digest, written.refused, now);
            if report.refused > 0 {
                plan_pass(&g, &source, &memory, &digest, problem_since, now)
            } else {
                plan
            }
        };
        // Write the set's status.
        report.status_written = self.write_set_status(&g.set, &plan.status).await?;
        report.reason =
            find_condition(&plan.status.conditions, condition_type::READY).map(|c| c.reason.clone());
        report.requeue_after = requeue(&report, &plan, &g.set, &memory, now);
        Ok(report)
    }

    /// Forgets the memory of every set `keep` does not name (`namespace/name`).
    pub fn forget_sets(&self, keep: impl Fn(&str) -> bool) {
        self.sets.lock().unwrap().retain(|key, _| keep(key));
    }

    /// Gather: the set, its tenant, and the namespace's sites (the set's and the others').
    async fn gather_set(&self, namespace: &str, name: &str) -> Result<Option<Gathered>, ControllerError> {
        let sets: Api<OneDriveSiteSet> = Api::namespaced(self.client.clone(), namespace);
        let Some(set) = sets.get_opt(name).await.map_err(ControllerError::kube)? else { return Ok(None) };
        let tenant_name =
            set.spec.tenant_ref.as_ref().map(|r| r.name.clone()).or(self.options.default_tenant.clone());
        let tenant = match tenant_name {
            None => Err(SetProblem::new(
                SetReason::TenantNotFound,
                "the set names no tenant: set spec.tenantRef or run the operator with --default-tenant",
                true,
            )),
            Some(t) => Api::<OneDriveTenant>::all(self.client.clone())
                .get_opt(&t)
                .await
                .map_err(ControllerError::kube)?
                .ok_or_else(|| {
                    SetProblem::new(
                        SetReason::TenantNotFound,
                        format!("the OneDriveTenant {t} does not exist"),
                        true,
                    )
                }),
        };
        let sites = match &self.options.sites {
            SiteSource::Store(cache) => {
                // Before the cache is whole, the set's own sites would look missing.
                cache.wait_until_synced().await;
                cache.namespace_sites(namespace)
            }
            SiteSource::List => listed(Api::namespaced(self.client.clone(), namespace)).await?,
        };
        Ok(Some(Gathered { set, tenant, sites }))
    }

    /// The tenant's client (built, or kept from its cycles, with its token cache and throttling).
    pub(super) async fn tenant_client(
        &self,
        tenant: &OneDriveTenant,
    ) -> Result<Arc<TenantClient>, M365Error> {
        let kept = self.memories.lock().unwrap().entry(tenant.name_any()).or_default().clone();
        let mut memory = kept.lock().await;
        self.connect(tenant, &mut memory).await?;
        Ok(memory.as_ref().expect("connected").client.clone())
    }

    /// Writes the set's status when it changed; an Event when its Ready reason turns to a problem.
    async fn write_set_status(
        &self,
        set: &OneDriveSiteSet,
        status: &OneDriveSiteSetStatus,
    ) -> Result<bool, ControllerError> {
        let previous = set.status.clone().unwrap_or_default();
        if previous == *status {
            return Ok(false);
        }
        let api: Api<OneDriveSiteSet> =
            Api::namespaced(self.client.clone(), &set.namespace().unwrap_or_default());
        let mut value = serde_json::to_value(status).expect("status serializes");
        for field in ["members", "lastSync", "heldRemovals", "estimatedCompletion"] {
            if value.get(field).is_none() {
                value[field] = serde_json::Value::Null;
            }
        }
        api.patch_status(
            &set.name_any(),
            &PatchParams::default(),
            &Patch::Merge(&json!({ "status": value })),
        )
        .await
        .map_err(ControllerError::kube)?;
        let reason_of = |s: &OneDriveSiteSetStatus| {
            find_condition(&s.conditions, condition_type::READY)
                .map(|c| (c.reason.clone(), c.message.clone()))
        };
        if let Some((reason, message)) = reason_of(status)
            && reason_of(&previous).map(|p| p.0) != Some(reason.clone())
            && !matches!(SetReason::parse(&reason), Some(SetReason::Settled | SetReason::Syncing))
        {
            self.publish(EventType::Warning, &reason, &message, set.object_ref(&())).await;
        }
        Ok(true)
    }
}

/// Plan: the set's own sites and the names it must not take, against what the source gave and
/// what the set remembers of its recent writes.
fn plan_pass(
    g: &Gathered,
    source: &SourceRead,
    memory: &SetMemory,
    digest: &str,
    problem_since: Timestamp,
    now: Timestamp,
) -> SetPlan {
    let uid = g.set.uid().unwrap_or_default();
    let (own, others): (Vec<&KeptSite>, Vec<&KeptSite>) =
        g.sites.iter().map(|s| &**s).partition(|s| s.owner.as_ref().is_some_and(|o| *o.uid == *uid));
    let taken: HashSet<&str> = others.iter().map(|s| &*s.name).collect();
    let previous = g.set.status.clone().unwrap_or_default();
    let eta = g
        .tenant
        .as_ref()
        .ok()
        .and_then(|t| t.status.as_ref()?.progress.as_ref()?.estimated_completion.as_ref())
        .map(|t| t.0);
    let source = match source {
        Ok((users, at)) => Source::Listed { users, at: *at },
        Err(problem) => Source::Failed(problem.clone()),
    };
    let settling: HashSet<String> = memory.settling.keys().cloned().collect();
    let refused = memory.refused.iter().map(|(name, (message, _))| (name.clone(), message.clone())).collect();
    site_set::plan(&SetInput {
        generation: g.set.metadata.generation,
        previous: &previous,
        source,
        children: &own,
        taken: &taken,
        declared: digest,
        policy: g.set.spec.removal_policy,
        guard: &g.set.spec.removal_guard,
        confirmed: Confirmed {
            token: g.set.annotations().get(CONFIRM_REMOVALS).map(String::as_str),
            uids: Some(&memory.confirmed),
        },
        settling: &settling,
        refused: &refused,
        problem_since,
        budget: WRITES_PER_PASS,
        eta,
        now,
    })
}

/// Bumped when what a set declares for a site changes shape, so every site is declared again.
const DECLARATION_FORMAT: &str = "1";

/// The digest of what the set declares for each site: its tenant and template.
fn template_digest(set: &OneDriveSiteSet) -> String {
    let spec =
        serde_json::to_string(&(&set.spec.tenant_ref, &set.spec.template)).expect("the template serializes");
    site_set::digest([DECLARATION_FORMAT, spec.as_str()])
}

/// When to look again: a second after a pass that wrote, soon while sites settle or the source
/// fails, else when the group is due to be read again (a list: an hour; its changes wake it).
fn requeue(
    report: &SetReport,
    plan: &SetPlan,
    set: &OneDriveSiteSet,
    memory: &SetMemory,
    now: Timestamp,
) -> Duration {
    if report.wrote() || plan.more {
        return WHILE_WRITING;
    }
    let settled =
        find_condition(&plan.status.conditions, condition_type::READY).is_some_and(|c| c.status == "True");
    let next_read = match (&set.spec.source.group, memory.next_read) {
        (Some(_), Some(at)) => Duration::try_from(at.duration_since(now)).unwrap_or_default(),
        _ => Duration::from_secs(3600),
    };
    if settled { next_read.max(WHILE_WRITING) } else { next_read.clamp(WHILE_WRITING, WHILE_UNSETTLED) }
}
