//! The planner over every geo of a tenant: each geo's users planned with that geo's batch, and
//! the geos' plans read as one. A single-geo tenant has one geo and one planner.

use jiff::SignedDuration;

use super::pipelines::Pipeline;
use super::{Stand, TenantInput};
use crate::api::{BatchStatus, GeoStatus, UserCounts};
use crate::plan::{self, DesiredSite, Lookup, Plan, PlanInput, Planner, SiteUpdate};

/// The planner for one cycle over every geo.
pub enum TenantPlanner<'a> {
    /// One geo: one planner, its users gathered once for the cycle's rounds.
    One(Planner<'a>),
    /// Several: the sites are partitioned anew for each call, as a lookup may route a user to
    /// another geo.
    Many(&'a [DesiredSite<'a>]),
}

impl<'a> TenantPlanner<'a> {
    pub fn new(sites: &'a [DesiredSite<'a>], pipelines: &[Pipeline]) -> TenantPlanner<'a> {
        if pipelines.len() > 1 { TenantPlanner::Many(sites) } else { TenantPlanner::One(Planner::new(sites)) }
    }

    /// Every geo's plan, in the order of the stand's pipelines. Batch ids are unique tenant-wide:
    /// each geo numbers its new batch after the geos before it.
    pub fn plan(&mut self, input: &TenantInput, stand: &Stand) -> TenantPlan {
        let base = PlanInput {
            last_batch_id: stand.last_batch_id,
            throttled_until: stand.throttled_until,
            tenant_problem: stand.problem.as_ref(),
            ..PlanInput::new(input.tenant, input.observed, input.limits, input.now)
        };
        let pipelines = &stand.pipelines;
        match self {
            TenantPlanner::One(p) => {
                TenantPlan { geos: vec![p.plan(&geo_input(&base, &pipelines[0], base.last_batch_id))] }
            }
            TenantPlanner::Many(sites) => {
                let parts = parts(sites, &base, pipelines);
                let mut last_batch_id = base.last_batch_id;
                let mut geos = Vec::with_capacity(pipelines.len());
                for (part, p) in parts.iter().zip(pipelines) {
                    let plan = Planner::new(part).plan(&geo_input(&base, p, last_batch_id));
                    last_batch_id = last_batch_id.max(plan.last_batch_id);
                    geos.push(plan);
                }
                TenantPlan { geos }
            }
        }
    }
}

fn geo_input<'a>(base: &PlanInput<'a>, p: &'a Pipeline, last_batch_id: i64) -> PlanInput<'a> {
    PlanInput {
        batch: p.batch.as_ref(),
        typical_batch: p.typical_batch(),
        geo: p.label(),
        last_batch_id: last_batch_id.max(p.batch.as_ref().map_or(0, |b| b.id)),
        ..*base
    }
}

/// The sites of each geo (cheap copies: statuses stay borrowed from the cache).
fn parts<'a>(
    sites: &[DesiredSite<'a>],
    base: &PlanInput,
    pipelines: &[Pipeline],
) -> Vec<Vec<DesiredSite<'a>>> {
    let batches: Vec<Option<&BatchStatus>> = pipelines.iter().map(|p| p.batch.as_ref()).collect();
    let locations: Vec<&str> =
        pipelines.iter().map(|p| if p.retired { "" } else { p.location.as_str() }).collect();
    let route = plan::partition(sites, base.observed, &batches, &locations);
    let mut parts: Vec<Vec<DesiredSite>> = vec![Vec::new(); pipelines.len()];
    for (site, g) in sites.iter().zip(route) {
        parts[g].push(site.clone());
    }
    parts
}

/// The plans of every geo of one cycle.
#[derive(Clone, Debug, PartialEq)]
pub struct TenantPlan {
    /// Each geo's plan, in the order of the pipelines.
    pub geos: Vec<Plan>,
}

impl TenantPlan {
    pub fn observe_now(&self) -> Vec<Lookup> {
        self.geos.iter().flat_map(|p| p.observe_now.iter().cloned()).collect()
    }

    /// Whom to observe before anything else: every geo's in-flight batch's gate (see
    /// [`Plan::gates`]).
    pub fn gates(&self) -> Vec<Lookup> {
        self.geos.iter().flat_map(|p| p.gates.iter().cloned()).collect()
    }

    /// Whom else to observe before acting on this plan, over every geo (see [`Plan::lookups`]).
    pub fn lookups(&self) -> Vec<Lookup> {
        self.geos.iter().flat_map(|p| p.lookups.iter().cloned()).collect()
    }

    pub fn site_updates(&self) -> impl Iterator<Item = &SiteUpdate> {
        self.geos.iter().flat_map(|p| &p.site_updates)
    }

    pub fn site_update_count(&self) -> usize {
        self.geos.iter().map(|p| p.site_updates.len()).sum()
    }

    pub fn users(&self) -> UserCounts {
        let mut u = UserCounts::default();
        for p in &self.geos {
            u.desired += p.users.desired;
            u.ready += p.users.ready;
            u.pending += p.users.pending;
            u.provisioning += p.users.provisioning;
            u.failed += p.users.failed;
        }
        u
    }

    pub fn reconciling(&self) -> bool {
        self.geos.iter().any(|p| p.reconciling)
    }

    pub fn requeue_after(&self) -> SignedDuration {
        self.geos.iter().map(|p| p.requeue_after).min().unwrap_or(SignedDuration::from_secs(60))
    }

    /// The statuses the settings phase writes: each replaces the provisioning plan's status of
    /// the same site (it was built on it) or is added; `again`, when more settings work is due,
    /// brings the next cycle forward.
    pub fn with_settings(&mut self, updates: Vec<SiteUpdate>, again: Option<SignedDuration>) {
        for update in updates {
            let existing =
                self.geos.iter_mut().flat_map(|p| p.site_updates.iter_mut()).find(|u| u.key == update.key);
            match existing {
                Some(u) => *u = update,
                None => {
                    if let Some(p) = self.geos.first_mut() {
                        p.site_updates.push(update);
                    }
                }
            }
        }
        if let Some(again) = again {
            for p in &mut self.geos {
                p.requeue_after = p.requeue_after.min(again);
            }
        }
    }

    pub fn last_batch_id(&self) -> i64 {
        self.geos.iter().map(|p| p.last_batch_id).max().unwrap_or(0)
    }

    /// Each geo's line of the tenant status: its batch as the pipelines hold it, its users and
    /// batch duration as this plan says.
    pub fn geo_statuses(&self, pipelines: &[Pipeline]) -> Vec<GeoStatus> {
        super::pipelines::geo_lines(pipelines, |g, p| {
            let plan = &self.geos[g];
            (plan.users.clone(), plan.batch_duration.map(|d| d.as_secs()).or(p.last_batch_seconds))
        })
    }
}
