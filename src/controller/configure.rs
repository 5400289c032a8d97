//! The configure phase: the declared administrators and quota of sites that exist, applied
//! through the admin host of each site's geo (a few sites at once, each call through the client's
//! throttling and work slots). What to do and what it came to is the planner's
//! (`plan::settings`); this only asks SharePoint and reports an `Attempt` per site.

use std::collections::HashMap;
use std::sync::Arc;

use futures::StreamExt;
use jiff::SignedDuration;

use super::cycle::Context;
use super::reconciler::Reconciler;
use crate::api::{KeptSite, OneDriveSiteStatus};
use crate::m365::{SettingsError, TenantClient};
use crate::plan::SiteUpdate;
use crate::plan::settings::{self, Attempt, Failure, SiteInput, Task};
use crate::plan::tenant::{Stand, TenantPlan};

/// Sites configured at once (each a few calls in a row).
const SITES_IN_FLIGHT: usize = 8;

/// The statuses the provisioning plan writes in this cycle, by site.
type Planned<'a> = HashMap<(&'a str, &'a str), &'a OneDriveSiteStatus>;

impl Reconciler {
    /// Configure: the sites whose settings are due get them applied, and their statuses join
    /// the plan's (on top of what the provisioning plan writes for them in this cycle).
    pub(super) async fn configure(
        &self,
        cx: &Context<'_>,
        sites: &[Arc<KeptSite>],
        plan: &mut TenantPlan,
        stand: &Stand,
        memory: &mut Option<super::memory::TenantMemory>,
    ) {
        // Nothing is asked of a tenant that stopped or is throttled: the plan says why already.
        let Some(m) = memory.as_mut().filter(|_| stand.problem.is_none()) else { return };
        if stand.throttled_until.is_some_and(|t| t > cx.now) {
            return;
        }
        let policy = &cx.settings;
        if !policy.declares() && !sites.iter().any(|s| touches_settings(s)) {
            return; // nothing declared anywhere, nothing applied before: the phase costs nothing
        }
        let planned: Planned =
            plan.site_updates().map(|u| ((&*u.key.namespace, &*u.key.name), &u.status)).collect();
        // The sites are read one by one (no copy of the tenant's sites per cycle).
        let inputs = sites.iter().map(|s| input_of(s, &planned));
        let due = settings::due(policy, inputs, &cx.limits, cx.now, m.settings_pace.allowance(cx.now));
        m.settings_pace.spend(cx.now, due.tasks.len());
        if due.tasks.is_empty() && due.next.is_none() {
            return;
        }
        let mut work = Vec::with_capacity(due.tasks.len());
        for task in &due.tasks {
            work.push(apply(&m.client, admin_url_of(stand, task.geo.as_deref()), task));
        }
        let attempts: Vec<Attempt> = futures::stream::iter(work).buffered(SITES_IN_FLIGHT).collect().await;
        let updates = statuses_after(&due.tasks, &attempts, sites, &planned, cx.now);
        let again = again(&due, &attempts, m.settings_pace.next_minute(cx.now), cx.now);
        drop(planned);
        plan.with_settings(updates, again);
    }
}

/// Whether a site declares settings of its own or had some applied.
fn touches_settings(s: &KeptSite) -> bool {
    !s.site_admins.is_empty()
        || s.storage_quota.is_some()
        || s.status.as_deref().is_some_and(|k| k.configured.is_some())
}

fn input_of<'a>(s: &'a KeptSite, planned: &Planned<'a>) -> SiteInput<'a> {
    SiteInput {
        namespace: &s.namespace,
        name: &s.name,
        generation: s.generation.unwrap_or(1),
        kept: s.status.as_deref(),
        planned: planned.get(&(&*s.namespace, &*s.name)).copied(),
        site_admins: &s.site_admins,
        storage_quota: s.storage_quota.as_deref(),
        retry: s.retry.as_deref(),
    }
}

/// The statuses the attempts come to, where they change.
fn statuses_after(
    tasks: &[Task],
    attempts: &[Attempt],
    sites: &[Arc<KeptSite>],
    planned: &Planned,
    now: jiff::Timestamp,
) -> Vec<SiteUpdate> {
    let by_key: HashMap<(&str, &str), &KeptSite> =
        sites.iter().map(|s| ((&*s.namespace, &*s.name), &**s)).collect();
    tasks
        .iter()
        .zip(attempts)
        .filter_map(|(task, attempt)| {
            let site = input_of(by_key.get(&(&*task.key.namespace, &*task.key.name))?, planned);
            let status = settings::status_after(&site, task, attempt, now);
            let previous = site.kept;
            (!previous.is_some_and(|p| p.is(&status))).then(|| SiteUpdate {
                key: task.key.clone(),
                user: String::new(),
                previous_phase: previous.and_then(|p| p.phase),
                status,
            })
        })
        .collect()
}

/// When to come back: the next minute's allowance (more sites are due), the next site due, or a
/// passing failure's next try.
fn again(
    due: &settings::Due,
    attempts: &[Attempt],
    next_minute: jiff::Timestamp,
    now: jiff::Timestamp,
) -> Option<SignedDuration> {
    let passing = attempts.iter().any(|a| a.failure.as_ref().is_some_and(|f| !f.needs_person));
    [due.more.then_some(next_minute), due.next, passing.then(|| now + settings::TRANSIENT_RETRY)]
        .into_iter()
        .flatten()
        .min()
        .map(|t| t.duration_since(now).max(SignedDuration::from_secs(1)))
}

/// The admin host of a site's geo (`None` or an unknown geo: the central one).
fn admin_url_of<'a>(stand: &'a Stand, geo: Option<&str>) -> &'a str {
    let central = stand.pipelines.iter().find(|p| p.central).or(stand.pipelines.first());
    let own = geo.and_then(|g| stand.pipelines.iter().find(|p| p.location == g));
    own.or(central).map_or("", |p| p.admin_url.as_str())
}

/// Reads the site, adds the declared administrators it lacks, removes the ones the operator
/// added that are no longer declared, and sets the quota when it differs. An administrator
/// SharePoint does not know fails only that administrator (the others are still done; one being
/// removed is no longer there, so no longer the operator's); anything else stops the attempt.
/// What was done before a failure is reported, so it is remembered.
async fn apply(client: &TenantClient, admin_url: &str, task: &Task) -> Attempt {
    let mut attempt = Attempt::default();
    let failure =
        |e: &SettingsError| Some(Failure { needs_person: e.needs_person(), message: e.to_string() });
    let current = match client.site_settings(admin_url, &task.url).await {
        Ok(c) => c,
        Err(e) => {
            attempt.failure = failure(&e);
            return attempt;
        }
    };
    for admin in &task.declared.admins {
        if current.has(admin) {
            continue; // there already: not the operator's to remove, ever
        }
        match client.set_site_admin(admin_url, &task.url, admin, true).await {
            Ok(()) => attempt.added.push(admin.clone()),
            Err(e @ SettingsError::UserNotFound { .. }) => {
                attempt.failure = attempt.failure.take().or(failure(&e));
            }
            Err(e) => {
                attempt.failure = failure(&e);
                return attempt;
            }
        }
    }
    for admin in task.to_remove() {
        if !current.has(admin) {
            // Someone removed it already: it is no longer the operator's to remove.
            attempt.removed.push(admin.clone());
            continue;
        }
        match client.set_site_admin(admin_url, &task.url, admin, false).await {
            // Unknown to the directory now: it cannot be an administrator any more either.
            Ok(()) | Err(SettingsError::UserNotFound { .. }) => attempt.removed.push(admin.clone()),
            Err(e) => {
                attempt.failure = failure(&e);
                return attempt;
            }
        }
    }
    if let Some(mb) = task.declared.quota_mb
        && current.quota_mb != Some(mb)
    {
        match client.set_storage_quota(admin_url, &task.url, mb).await {
            Ok(()) => attempt.quota_set = true,
            Err(e) => attempt.failure = attempt.failure.take().or(failure(&e)),
        }
    }
    attempt
}
