//! Multi-Geo in a cycle: one pipeline per geo (its admin host, its batch in flight, how long its
//! batches take), the planner run over each geo's users with that geo's batch, and the geos'
//! plans read as one. A single-geo tenant has one pipeline and plans exactly as before.

use jiff::SignedDuration;

use crate::api::{BatchStatus, GeoStatus, OneDriveTenantStatus, UserCounts};
use crate::plan::{self, DesiredSite, Gathering, Lookup, Plan, PlanInput, Planner, SiteUpdate};
use crate::m365::Geo;

/// One geo's pipeline as a cycle holds it.
#[derive(Clone, Debug, PartialEq)]
pub(super) struct Pipeline {
    pub(super) location: String,
    pub(super) admin_url: String,
    pub(super) central: bool,
    /// Takes no new users: the geo left the tenant's geos while its batch was in flight.
    pub(super) retired: bool,
    pub(super) batch: Option<BatchStatus>,
    pub(super) last_batch_seconds: Option<i64>,
}

impl Pipeline {
    /// The label written into its users' statuses (none for a single-geo tenant's geo).
    fn label(&self) -> Option<&str> {
        (!self.location.is_empty()).then_some(self.location.as_str())
    }

    fn typical_batch(&self) -> Option<SignedDuration> {
        self.last_batch_seconds.map(|s| SignedDuration::from_secs(s.clamp(0, 30 * 24 * 3600)))
    }

    pub(super) fn name(&self) -> &str {
        geo_name(&self.location)
    }
}

/// A geo's name in messages and metric labels: its location, `central` for a single-geo
/// tenant's only geo (whose location is empty).
pub(super) fn geo_name(location: &str) -> &str {
    if location.is_empty() { "central" } else { location }
}

/// The pipelines of a tenant with `geos` (the central geo first), resuming what its status
/// records: each geo's batch (see [`recorded`]). A batch recorded by a version before Multi-Geo
/// (`status.currentBatch`) is the central geo's. A recorded geo that is no longer one of the
/// tenant's keeps its pipeline until its batch ends, so no batch is ever lost.
pub(super) fn pipelines(geos: &[Geo], status: &OneDriveTenantStatus) -> Vec<Pipeline> {
    let mut taken = vec![false; status.geos.len()];
    let mut out: Vec<Pipeline> = geos
        .iter()
        .map(|g| {
            let r = recorded(g, status, &mut taken);
            // After a downgrade and another upgrade both may be there: the newer is in flight.
            let legacy = status.current_batch.clone().filter(|_| g.central);
            let batch = match (r.and_then(|r| r.current_batch.clone()), legacy) {
                (Some(a), Some(b)) => Some(if b.id > a.id { b } else { a }),
                (a, b) => a.or(b),
            };
            let legacy_seconds = if g.central { status.last_batch_seconds } else { None };
            Pipeline {
                location: g.location.clone(),
                admin_url: g.admin_url.clone(),
                central: g.central,
                retired: false,
                batch,
                last_batch_seconds: r.and_then(|r| r.last_batch_seconds).or(legacy_seconds),
            }
        })
        .collect();
    for (r, taken) in status.geos.iter().zip(taken) {
        if let (false, Some(batch)) = (taken, &r.current_batch) {
            out.push(Pipeline {
                location: r.location.clone(),
                admin_url: r.admin_url.clone(),
                central: false,
                retired: true,
                batch: Some(batch.clone()),
                last_batch_seconds: r.last_batch_seconds,
            });
        }
    }
    out
}

/// The recorded line of geo `g`: the one with its admin host, else the one with its location (the
/// host was edited: one geo never has two batches in flight), else the central line for the
/// central geo. Each line serves one geo at most.
fn recorded<'s>(g: &Geo, status: &'s OneDriveTenantStatus, taken: &mut [bool]) -> Option<&'s GeoStatus> {
    let lines = &status.geos;
    let free: Vec<usize> = (0..lines.len()).filter(|&i| !taken[i]).collect();
    let i = free
        .iter()
        .copied()
        .find(|&i| lines[i].admin_url.eq_ignore_ascii_case(&g.admin_url))
        .or_else(|| free.iter().copied().find(|&i| !g.location.is_empty() && lines[i].location == g.location))
        .or_else(|| free.iter().copied().find(|&i| g.central && lines[i].central))?;
    taken[i] = true;
    Some(&lines[i])
}

/// The pipelines as the status records them, for a cycle that could not learn the geos (no
/// client): nothing is sent then, but the status keeps saying what is in flight where.
pub(super) fn recorded_pipelines(central_admin_url: &str, status: &OneDriveTenantStatus) -> Vec<Pipeline> {
    let geos: Vec<Geo> = if status.geos.is_empty() {
        vec![Geo { location: String::new(), admin_url: central_admin_url.to_string(), central: true }]
    } else {
        status
            .geos
            .iter()
            .map(|g| Geo { location: g.location.clone(), admin_url: g.admin_url.clone(), central: g.central })
            .collect()
    };
    pipelines(&geos, status)
}

/// The planner for one cycle over every geo.
pub(super) enum Planners<'a> {
    /// One geo: one planner, its gathering reused across the cycle's rounds.
    One(Planner<'a>),
    /// Several: the sites are partitioned anew for each call, as a lookup may route a user to
    /// another geo.
    Many(&'a [DesiredSite<'a>]),
}

impl<'a> Planners<'a> {
    /// `gathering`: the single geo's users (one is made if it is missing or does not fit).
    pub(super) fn new(
        sites: &'a [DesiredSite<'a>],
        gathering: Option<&'a Gathering>,
        pipelines: &[Pipeline],
    ) -> Planners<'a> {
        match gathering {
            _ if pipelines.len() > 1 => Planners::Many(sites),
            Some(g) => Planners::One(Planner::with(sites, g)),
            None => Planners::One(Planner::new(sites)),
        }
    }

    /// Puts the observations in the order the single geo's passes read them (see
    /// [`Planner::order_observations`]); a Multi-Geo tenant's geos are gathered anew for each
    /// plan, and keep the order the observations came in.
    pub(super) fn order_observations(&self, observed: &mut plan::Observations) {
        if let Planners::One(p) = self {
            p.order_observations(observed);
        }
    }

    /// See [`Planner::share_keys`] (a Multi-Geo tenant's geos keep the keys as they came).
    pub(super) fn share_keys(&self, observed: &mut plan::Observations) {
        if let Planners::One(p) = self {
            p.share_keys(observed);
        }
    }

    /// Every geo's plan, in the order of `pipelines`. Batch ids are unique tenant-wide: each geo
    /// numbers its new batch after the geos before it.
    pub(super) fn plan(&mut self, base: &PlanInput, pipelines: &[Pipeline]) -> TenantPlan {
        match self {
            Planners::One(p) => {
                TenantPlan { geos: vec![p.plan(&geo_input(base, &pipelines[0], base.last_batch_id))] }
            }
            Planners::Many(sites) => {
                let parts = parts(sites, base, pipelines);
                let mut last_batch_id = base.last_batch_id;
                let mut geos = Vec::with_capacity(pipelines.len());
                for (part, p) in parts.iter().zip(pipelines) {
                    let plan = Planner::new(part).plan(&geo_input(base, p, last_batch_id));
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
pub(super) struct TenantPlan {
    pub(super) geos: Vec<Plan>,
}

impl TenantPlan {
    pub(super) fn observe_now(&self) -> Vec<Lookup> {
        self.geos.iter().flat_map(|p| p.observe_now.iter().cloned()).collect()
    }

    /// Whom to observe before acting on this plan, over every geo (see [`Plan::lookups`]).
    pub(super) fn lookups(&self) -> Vec<Lookup> {
        self.geos.iter().flat_map(|p| p.lookups.iter().cloned()).collect()
    }

    pub(super) fn site_updates(&self) -> impl Iterator<Item = &SiteUpdate> {
        self.geos.iter().flat_map(|p| &p.site_updates)
    }

    pub(super) fn site_update_count(&self) -> usize {
        self.geos.iter().map(|p| p.site_updates.len()).sum()
    }

    pub(super) fn users(&self) -> UserCounts {
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

    pub(super) fn reconciling(&self) -> bool {
        self.geos.iter().any(|p| p.reconciling)
    }

    pub(super) fn requeue_after(&self) -> SignedDuration {
        self.geos.iter().map(|p| p.requeue_after).min().unwrap_or(SignedDuration::from_secs(60))
    }

    pub(super) fn last_batch_id(&self) -> i64 {
        self.geos.iter().map(|p| p.last_batch_id).max().unwrap_or(0)
    }

    /// Each geo's line of the tenant status.
    pub(super) fn geo_statuses(&self, pipelines: &[Pipeline]) -> Vec<GeoStatus> {
        pipelines
            .iter()
            .zip(&self.geos)
            .filter(|(p, plan)| !p.retired || plan.batch.is_some())
            .map(|(p, plan)| GeoStatus {
                location: p.location.clone(),
                central: p.central,
                admin_url: p.admin_url.clone(),
                current_batch: plan.batch.clone(),
                last_batch_seconds: plan.batch_duration.map(|d| d.as_secs()).or(p.last_batch_seconds),
                users: plan.users.clone(),
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    fn batch(id: i64, users: &[&str]) -> BatchStatus {
        BatchStatus {
            id,
            users: users.iter().map(|u| u.to_string()).collect(),
            size: users.len() as i32,
            last_user: users.last().unwrap().to_string(),
            enqueued_at: Time(jiff::Timestamp::UNIX_EPOCH),
            sent: true,
            users_record: None,
        }
    }

    fn geo(location: &str, admin_url: &str, central: bool) -> Geo {
        Geo { location: location.into(), admin_url: admin_url.into(), central }
    }

    #[test]
    fn a_batch_recorded_before_multi_geo_is_the_central_geos() {
        let status = OneDriveTenantStatus {
            current_batch: Some(batch(7, &["a@x.com"])),
            last_batch_seconds: Some(900),
            ..Default::default()
        };
        let p =
            pipelines(&[geo("NAM", "https://c-admin", true), geo("EUR", "https://e-admin", false)], &status);
        assert_eq!(p[0].batch.as_ref().map(|b| b.id), Some(7));
        assert_eq!(p[0].last_batch_seconds, Some(900));
        assert_eq!(p[1].batch, None);
        assert_eq!(p[1].last_batch_seconds, None);
    }

    #[test]
    fn an_edited_admin_host_keeps_its_geos_batch_and_the_newer_of_two_central_batches_wins() {
        let status = OneDriveTenantStatus {
            geos: vec![
                GeoStatus {
                    location: "NAM".into(),
                    central: true,
                    admin_url: "https://old-admin".into(),
                    current_batch: Some(batch(3, &["a@x.com"])),
                    ..Default::default()
                },
                GeoStatus {
                    location: "EUR".into(),
                    admin_url: "https://eur-old-admin".into(),
                    current_batch: Some(batch(5, &["b@x.com"])),
                    ..Default::default()
                },
            ],
            current_batch: Some(batch(6, &["c@x.com"])),
            ..Default::default()
        };
        let p = pipelines(
            &[geo("NAM", "https://new-admin", true), geo("EUR", "https://eur-new-admin", false)],
            &status,
        );
        let view: Vec<(&str, bool, Option<i64>)> =
            p.iter().map(|p| (p.admin_url.as_str(), p.retired, p.batch.as_ref().map(|b| b.id))).collect();
        assert_eq!(
            view,
            vec![("https://new-admin", false, Some(6)), ("https://eur-new-admin", false, Some(5))]
        );
    }

    #[test]
    fn each_geo_resumes_its_own_batch_and_a_gone_geo_keeps_its_batch_until_it_ends() {
        let status = OneDriveTenantStatus {
            geos: vec![
                GeoStatus {
                    location: "NAM".into(),
                    central: true,
                    admin_url: "https://c-admin".into(),
                    current_batch: Some(batch(3, &["a@x.com"])),
                    ..Default::default()
                },
                GeoStatus {
                    location: "APC".into(),
                    admin_url: "https://a-admin".into(),
                    current_batch: Some(batch(4, &["b@x.com"])),
                    ..Default::default()
                },
            ],
            ..Default::default()
        };
        let p =
            pipelines(&[geo("NAM", "https://c-admin", true), geo("EUR", "https://e-admin", false)], &status);
        let view: Vec<(&str, bool, Option<i64>)> =
            p.iter().map(|p| (p.location.as_str(), p.retired, p.batch.as_ref().map(|b| b.id))).collect();
        assert_eq!(view, vec![("NAM", false, Some(3)), ("EUR", false, None), ("APC", true, Some(4))]);
    }
}
