//! The batch planner: a pure function from what the operator knows to what it should do.
//!
//! No I/O and no clock (`now` is an input), so every rule of the mission is unit- and
//! property-tested here:
//! - at most `batch_size` (≤ 200) users per enqueue, at most one enqueue per cycle;
//! - no new batch while the previous one is in flight, i.e. until its **last user** has a site
//!   (the seeds' rule) or the batch timed out;
//! - never enqueue a user who has a site, who is already provisioning, or who was not observed
//!   without a site recently (`Limits::enqueue_recheck_after`; the batch's last user, whose site
//!   the next batch waits for, within the poll interval);
//! - Pending users are enqueued oldest first (by the oldest `OneDriveSite` naming them);
//! - statuses change only when the world does, so an unchanged world writes nothing.
//!
//! A cycle calls [`targets`] to learn whom to observe, observes them, then calls [`plan`]
//! until [`Plan::observe_now`] is empty (the plan may need a few more users observed before it
//! can finish a batch or form the next one: the whole finished batch once, the next candidates).

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use crate::api::{
    BatchStatus, ConditionSet, MAX_BATCH_SIZE, OneDriveSite, OneDriveSiteStatus, OneDriveTenantSpec,
    SitePhase, UserCounts, condition_type, find_condition, parse_duration,
};

/// Condition reasons written on `OneDriveSite`s (README documents each with its fix).
pub mod reason {
    pub const PENDING: &str = "Pending";
    pub const SPSSITEERROR: &str = "SPSSITEERROR";
    pub const PROVISIONED: &str = "Provisioned";
    pub const USER_NOT_FOUND: &str = "UserNotFound";
    pub const USER_NOT_LICENSED: &str = "UserNotLicensed";
    pub const SITE_CREATION_NOT_PERMITTED: &str = "SiteCreationNotPermitted";
    pub const PROVISIONING_FAILED: &str = "ProvisioningFailed";
    pub const PROVISIONING_TIMED_OUT: &str = "ProvisioningTimedOut";
    pub const TENANT_NOT_READY: &str = "TenantNotReady";
    pub const TENANT_NOT_FOUND: &str = "TenantNotFound";
}

/// Tunables, mostly from the tenant's spec.
#[derive(Clone, Debug, PartialEq)]
pub struct Limits {
    /// Users per enqueue; always within 1..=200.
    pub batch_size: usize,
    /// How often an in-flight batch's last user (and any straggler) is checked.
    pub poll_interval: SignedDuration,
    /// How long a user may stay enqueued without a site.
    pub provisioning_timeout: SignedDuration,
    /// How often a Ready user's site is verified again.
    pub drift_check_interval: SignedDuration,
    /// How many Ready or Failed users are re-checked per cycle at most.
    pub recheck_per_cycle: usize,
    /// How often a user the directory refused (not found, not licensed) is checked again.
    pub failed_recheck_interval: SignedDuration,
    /// An observation "no site" older than this is repeated before the user is enqueued.
    pub enqueue_recheck_after: SignedDuration,
    /// Requeue interval when there is nothing to do.
    pub resync_interval: SignedDuration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            batch_size: MAX_BATCH_SIZE as usize,
            poll_interval: SignedDuration::from_secs(60),
            provisioning_timeout: SignedDuration::from_hours(24),
            drift_check_interval: SignedDuration::from_hours(24),
            recheck_per_cycle: 100,
            failed_recheck_interval: SignedDuration::from_hours(1),
            // Re-enqueueing a user who got a site meanwhile is harmless (SharePoint ignores
            // them) but wastes a slot: a day-old "no site" is checked again, and the batch's last
            // user always is (see `plan`). Checking everyone hourly cost ~0.05 requests a user.
            enqueue_recheck_after: SignedDuration::from_hours(24),
            resync_interval: SignedDuration::from_mins(10),
        }
    }
}

impl Limits {
    /// Limits from a tenant spec; a message naming the field when a value is unusable.
    pub fn from_spec(spec: &OneDriveTenantSpec) -> Result<Limits, String> {
        if spec.batch_size < 1 || spec.batch_size > MAX_BATCH_SIZE {
            return Err(format!(
                "spec.batchSize: {} is outside 1..=200 (SharePoint accepts at most 200 users per request)",
                spec.batch_size
            ));
        }
        Ok(Limits {
            batch_size: spec.batch_size as usize,
            poll_interval: parse_duration("spec.pollInterval", &spec.poll_interval)?,
            provisioning_timeout: parse_duration("spec.provisioningTimeout", &spec.provisioning_timeout)?,
            drift_check_interval: parse_duration("spec.driftCheckInterval", &spec.drift_check_interval)?,
            ..Limits::default()
        })
    }

    fn batch_size(&self) -> usize {
        self.batch_size.clamp(1, MAX_BATCH_SIZE as usize)
    }
}

/// Identifies one `OneDriveSite`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SiteKey {
    pub namespace: String,
    pub name: String,
}

impl std::fmt::Display for SiteKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// One `OneDriveSite` of the tenant, as the cache holds it. The status is borrowed from the
/// cache (copying every status each cycle was most of a steady-state cycle's cost).
#[derive(Clone, Debug, PartialEq)]
pub struct DesiredSite<'a> {
    pub key: SiteKey,
    pub user: Cow<'a, str>,
    pub created: Timestamp,
    pub generation: i64,
    pub status: Option<SiteStatus<'a>>,
}

/// A site's status, borrowed from the cache (the controller) or owned (tests, tools). Two
/// words wide, so the per-cycle `DesiredSite` list stays small.
#[derive(Clone, Debug)]
pub enum SiteStatus<'a> {
    Cached(&'a OneDriveSiteStatus),
    Owned(Box<OneDriveSiteStatus>),
}

impl std::ops::Deref for SiteStatus<'_> {
    type Target = OneDriveSiteStatus;
    fn deref(&self) -> &OneDriveSiteStatus {
        match self {
            SiteStatus::Cached(s) => s,
            SiteStatus::Owned(s) => s,
        }
    }
}

/// Equal when the statuses are, however each is held.
impl PartialEq for SiteStatus<'_> {
    fn eq(&self, other: &Self) -> bool {
        **self == **other
    }
}

impl From<OneDriveSiteStatus> for SiteStatus<'_> {
    fn from(s: OneDriveSiteStatus) -> Self {
        SiteStatus::Owned(Box::new(s))
    }
}

impl<'a> DesiredSite<'a> {
    /// The planner's view of a cached resource (`None` without a namespace or name).
    pub fn from_resource(site: &'a OneDriveSite) -> Option<DesiredSite<'a>> {
        Some(DesiredSite {
            key: SiteKey { namespace: site.metadata.namespace.clone()?, name: site.metadata.name.clone()? },
            user: Cow::Borrowed(&site.spec.user),
            created: site.metadata.creation_timestamp.as_ref().map(|t| t.0).unwrap_or(Timestamp::UNIX_EPOCH),
            generation: site.metadata.generation.unwrap_or(1),
            status: site.status.as_ref().map(SiteStatus::Cached),
        })
    }
}

/// What the tenant said about one user.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Observation {
    /// The personal site exists.
    HasSite { url: String },
    /// The user exists but has no site (Graph: "User's mysite not found.").
    NoSite,
    /// `SPS-PersonalSiteInstantiationState` from the user profile, when no drive was found.
    ProfileState(i64),
    /// The directory has no such user.
    UserNotFound,
    /// The user has no SharePoint licence.
    UserNotLicensed,
    /// The observation failed (throttled, timed out): nothing is concluded.
    Unknown,
}

impl Observation {
    /// Observations that mean "exists, has no site, may be enqueued".
    fn is_no_site(&self) -> bool {
        matches!(self, Observation::NoSite | Observation::ProfileState(0 | 3))
    }
}

/// An observation and when it was made. The controller keeps the newest per user in memory
/// (soft state: after a restart everything uncertain is simply observed again).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Observed {
    pub at: Timestamp,
    pub observation: Observation,
}

/// A tenant-level problem that stops all work (missing Secret, refused token kind, ...).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TenantProblem {
    pub reason: String,
    pub message: String,
    /// Whether a person must act (credentials) rather than wait (throttling, outage).
    pub stalled: bool,
}

/// Everything the planner needs for one tenant.
#[derive(Clone, Copy, Debug)]
pub struct PlanInput<'a> {
    pub tenant: &'a str,
    pub sites: &'a [DesiredSite<'a>],
    /// Newest observation per user key ([`user_key`]).
    pub observed: &'a HashMap<String, Observed>,
    /// The tenant's `status.currentBatch`.
    pub batch: Option<&'a BatchStatus>,
    /// The tenant's `status.lastBatchId`.
    pub last_batch_id: i64,
    pub throttled_until: Option<Timestamp>,
    pub tenant_problem: Option<&'a TenantProblem>,
    pub now: Timestamp,
    pub limits: &'a Limits,
    /// How long the previous batch took (enqueue to its last user's site), if known: the first
    /// poll of an in-flight batch waits for most of it instead of polling every interval.
    pub typical_batch: Option<SignedDuration>,
}

/// What to send to SharePoint in this cycle.
#[derive(Clone, Debug, PartialEq)]
pub struct Enqueue {
    /// The batch, recorded in the tenant's status with `sent: false` before the request goes out.
    pub batch: BatchStatus,
    /// The batch was recorded by an earlier process that may have stopped before sending it.
    pub resend: bool,
}

/// A status to write to one `OneDriveSite`.
#[derive(Clone, Debug, PartialEq)]
pub struct SiteUpdate {
    pub key: SiteKey,
    pub user: String,
    pub previous_phase: Option<SitePhase>,
    pub status: OneDriveSiteStatus,
}

/// How an in-flight batch ended in this cycle.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BatchOutcome {
    /// Its last user has a site (or can never get one), and every user was checked once.
    Completed,
    /// `provisioningTimeout` passed before its last user had a site.
    TimedOut,
}

/// The decisions of one cycle.
#[derive(Clone, Debug, PartialEq)]
pub struct Plan {
    /// Users to observe before this plan is final; when non-empty nothing is enqueued.
    pub observe_now: Vec<String>,
    pub enqueue: Option<Enqueue>,
    /// The tenant's `status.currentBatch` after this cycle.
    pub batch: Option<BatchStatus>,
    /// The tenant's `status.lastBatchId` after this cycle.
    pub last_batch_id: i64,
    pub finished: Option<(i64, BatchOutcome)>,
    /// How long the batch that completed in this cycle took (for `typical_batch` next time).
    pub batch_duration: Option<SignedDuration>,
    /// Only sites whose status changes.
    pub site_updates: Vec<SiteUpdate>,
    pub users: UserCounts,
    /// Whether any user still has work ahead (drives the tenant's `Reconciling`).
    pub reconciling: bool,
    pub requeue_after: SignedDuration,
}

/// Users are compared case-insensitively: sign-in names are.
pub fn user_key(user: &str) -> String {
    user.trim().to_lowercase()
}

/// The users one cycle should observe first: the last user of the in-flight batch (the whole
/// batch once that user is done), users never observed, users still provisioning outside the
/// batch, the next candidates for a batch whose "no site" is stale, and a bounded slice of Ready
/// and Failed users due for a re-check.
pub fn targets(input: &PlanInput) -> Vec<String> {
    targets_of(input, &mut Users::new(input.sites))
}

/// [`targets`] with the users gathered once per cycle (see [`Users`]).
pub fn targets_of(input: &PlanInput, users: &mut Users) -> Vec<String> {
    if !users.gathered_from(input.sites) {
        return targets(input);
    }
    let input = &PlanInput { now: whole_second(input.now), ..*input };
    if blocked(input) {
        return Vec::new();
    }
    let users = users.marked(input.batch);
    let states: Vec<UserState> = users.iter().map(|u| decide(u, input)).collect();
    let mut out = Targets::default();
    let mut batch_ending = input.batch.is_none();
    if let Some(b) = input.batch.filter(|b| b.sent) {
        out.push(&b.last_user);
        if let Some(done_at) = last_user_done_at(b, users, &states, input) {
            batch_ending = true;
            for u in &b.users {
                if !observed_since(input, u, done_at) {
                    out.push(u);
                }
            }
        }
    }
    let mut rechecks: Vec<(Timestamp, &str)> = Vec::new();
    for (u, s) in users.iter().zip(&states) {
        let obs = input.observed.get(u.key.as_ref());
        match s.phase {
            _ if obs.is_none() && u.prior.phase.is_none() => out.push(u.upn),
            SitePhase::SpsSiteError if !u.in_batch && straggler_due(s, obs, input) => out.push(u.upn),
            // A straggler timing out now: one more look first, so that a site that came since
            // the last (backed-off) look is not reported as a timeout.
            SitePhase::Failed
                if s.reason == reason::PROVISIONING_TIMED_OUT
                    && !u.in_batch
                    && u.prior.phase == Some(SitePhase::SpsSiteError)
                    && obs.is_none_or(|o| {
                        s.enqueued_at.is_some_and(|e| o.at < after(e, input.limits.provisioning_timeout))
                    }) =>
            {
                out.push(u.upn)
            }
            SitePhase::Ready => {
                let last = obs.map(|o| o.at).or(u.prior.provisioned_at).unwrap_or(Timestamp::MIN);
                if after(last, input.limits.drift_check_interval) <= input.now {
                    rechecks.push((last, u.upn));
                }
            }
            SitePhase::Failed if s.reason != reason::PROVISIONING_TIMED_OUT => {
                let last = obs.map(|o| o.at).or(u.prior.failed_since).unwrap_or(Timestamp::MIN);
                if after(last, input.limits.failed_recheck_interval) <= input.now {
                    rechecks.push((last, u.upn));
                }
            }
            _ => {}
        }
    }
    rechecks.sort();
    for (_, upn) in rechecks.into_iter().take(input.limits.recheck_per_cycle) {
        out.push(upn);
    }
    if batch_ending {
        for u in next_batch(users, &states, input).lookups {
            out.push(u);
        }
    }
    out.users
}

/// Decides one cycle. See the module documentation for the rules.
pub fn plan(input: &PlanInput) -> Plan {
    plan_of(input, &mut Users::new(input.sites))
}

/// [`plan`] with the users gathered once per cycle (see [`Users`]).
pub fn plan_of(input: &PlanInput, users: &mut Users) -> Plan {
    if !users.gathered_from(input.sites) {
        return plan(input);
    }
    // Kubernetes stores times to the second: plan in whole seconds so that an unchanged world
    // computes byte-identical statuses.
    let input = &PlanInput { now: whole_second(input.now), ..*input };
    let users = users.marked(input.batch);
    let mut states: Vec<UserState> = users.iter().map(|u| decide(u, input)).collect();
    let mut observe_now = Targets::default();
    let mut batch = input.batch.cloned();
    let mut finished = None;
    let mut batch_duration = None;
    let mut enqueue = None;
    let mut last_batch_id = input.last_batch_id.max(batch.as_ref().map_or(0, |b| b.id));

    if !blocked(input) {
        match &batch {
            Some(b) if !b.sent => {
                // Sent again exactly as recorded, without re-checking its last user: an earlier
                // process may have sent it already, and re-forming it could enqueue users twice.
                enqueue = Some(Enqueue { batch: b.clone(), resend: true });
            }
            Some(b) => {
                if after(b.enqueued_at.0, input.limits.provisioning_timeout) <= input.now {
                    finished = Some((b.id, BatchOutcome::TimedOut));
                } else if let Some(done_at) = last_user_done_at(b, users, &states, input) {
                    for u in &b.users {
                        if !observed_since(input, u, done_at) {
                            observe_now.push(u);
                        }
                    }
                    if observe_now.users.is_empty() {
                        finished = Some((b.id, BatchOutcome::Completed));
                        batch_duration =
                            Some(done_at.duration_since(b.enqueued_at.0)).filter(|d| d.is_positive());
                    } else {
                        // The next batch's candidates are needed too: ask for both at once.
                        for u in next_batch(users, &states, input).lookups {
                            observe_now.push(u);
                        }
                    }
                }
                if finished.is_some() {
                    batch = None;
                }
            }
            None => {}
        }
        if batch.is_none() {
            let NextBatch { chosen, lookups } = next_batch(users, &states, input);
            if !lookups.is_empty() {
                for u in lookups {
                    observe_now.push(u);
                }
            } else if observe_now.users.is_empty() && !chosen.is_empty() {
                last_batch_id += 1;
                let new = BatchStatus {
                    id: last_batch_id,
                    users: chosen.iter().map(|&i| users[i].upn.to_string()).collect(),
                    size: chosen.len() as i32,
                    last_user: users[*chosen.last().expect("non-empty")].upn.to_string(),
                    enqueued_at: Time(input.now),
                    sent: false,
                };
                for &i in &chosen {
                    states[i] = provisioning(new.id, input.now, &users[i], input);
                }
                enqueue = Some(Enqueue { batch: new.clone(), resend: false });
                batch = Some(new);
            }
        }
    }

    let mut site_updates = Vec::new();
    let mut counts = UserCounts::default();
    let mut reconciling = false;
    for (u, s) in users.iter().zip(&states) {
        counts.desired += 1;
        match s.phase {
            SitePhase::Ready => counts.ready += 1,
            SitePhase::Pending => counts.pending += 1,
            SitePhase::SpsSiteError => counts.provisioning += 1,
            SitePhase::Failed => counts.failed += 1,
        }
        reconciling |= s.reconciling();
        for site in u.sites.all() {
            // Most sites are unchanged in most cycles: check that without building a status.
            if site.status.as_deref().is_some_and(|st| already(st, site.generation, s)) {
                continue;
            }
            let status = site_status(site, s, input.now);
            if site.status.as_deref() != Some(&status) {
                site_updates.push(SiteUpdate {
                    key: site.key.clone(),
                    user: site.user.to_string(),
                    previous_phase: site.status.as_deref().and_then(|s| s.phase),
                    status,
                });
            }
        }
    }

    let requeue_after = requeue(input, users, &states, &batch, !observe_now.users.is_empty());
    Plan {
        observe_now: observe_now.users,
        enqueue,
        batch,
        last_batch_id,
        finished,
        batch_duration,
        site_updates,
        users: counts,
        reconciling,
        requeue_after,
    }
}

/// The status of a site whose `spec.tenantRef` names no existing tenant.
pub fn tenant_not_found_status(site: &DesiredSite, tenant: &str, now: Timestamp) -> OneDriveSiteStatus {
    let prior = site.status.as_deref().cloned().unwrap_or_default();
    let message = format!(
        "OneDriveTenant {tenant:?} does not exist: create it, or point spec.tenantRef at an existing tenant"
    );
    OneDriveSiteStatus {
        observed_generation: Some(site.generation),
        phase: Some(prior.phase.unwrap_or(SitePhase::Pending)),
        conditions: ConditionSet::new(&prior.conditions, Some(site.generation), now)
            .set(condition_type::READY, "False", reason::TENANT_NOT_FOUND, message)
            .set(condition_type::RECONCILING, "False", reason::TENANT_NOT_FOUND, "")
            .set(condition_type::STALLED, "True", reason::TENANT_NOT_FOUND, "the tenant must be created")
            .build(),
        ..prior
    }
}

/// `t + d`, saturating: times read from statuses are not trusted to be sane.
fn after(t: Timestamp, d: SignedDuration) -> Timestamp {
    t.checked_add(d).unwrap_or(if d.is_negative() { Timestamp::MIN } else { Timestamp::MAX })
}

/// `t` without its fraction of a second (what a `metav1.Time` keeps).
pub fn whole_second(t: Timestamp) -> Timestamp {
    Timestamp::from_second(t.as_second()).unwrap_or(t)
}

// ---------------------------------------------------------------------------------------------
// Gathering: sites grouped per user, with what their statuses already say.

/// One distinct user and the sites naming it.
struct User<'a> {
    key: Cow<'a, str>,
    /// The spelling of the oldest site (what is sent to SharePoint).
    upn: &'a str,
    /// Creation of the oldest site naming the user: the queue order.
    since: Timestamp,
    sites: SitesOf<'a>,
    prior: Prior<'a>,
    /// Whether the tenant's `status.currentBatch` names the user.
    in_batch: bool,
    /// The `Ready` message a status of the user carries (reused when it is still right).
    ready_message: Option<&'a str>,
}

/// The sites naming one user, oldest first (almost always one: no allocation for it).
enum SitesOf<'a> {
    One(&'a DesiredSite<'a>),
    Many(Vec<&'a DesiredSite<'a>>),
}

impl<'a> SitesOf<'a> {
    fn push(&mut self, site: &'a DesiredSite<'a>) {
        match self {
            SitesOf::One(first) => *self = SitesOf::Many(vec![*first, site]),
            SitesOf::Many(all) => all.push(site),
        }
    }

    fn all(&self) -> &[&'a DesiredSite<'a>] {
        match self {
            SitesOf::One(site) => std::slice::from_ref(site),
            SitesOf::Many(all) => all,
        }
    }
}

/// What the persisted statuses say about a user.
#[derive(Default)]
struct Prior<'a> {
    phase: Option<SitePhase>,
    reason: Option<&'a str>,
    site_url: Option<&'a str>,
    enqueued_at: Option<Timestamp>,
    batch: Option<i64>,
    provisioned_at: Option<Timestamp>,
    failed_since: Option<Timestamp>,
}

/// The distinct users of a tenant's sites, oldest first, with what their statuses say. Grouping
/// is most of a planning pass's work and depends only on the sites, so a cycle gathers once
/// and passes the result to [`targets_of`] and every [`plan_of`].
pub struct Users<'a> {
    sites: &'a [DesiredSite<'a>],
    list: Vec<User<'a>>,
}

impl<'a> Users<'a> {
    pub fn new(sites: &'a [DesiredSite<'a>]) -> Users<'a> {
        // Grouped in input order (not hash order): the statuses are then read in the order
        // they sit in memory, which matters at 100k sites.
        let mut index: HashMap<Cow<'a, str>, usize> = HashMap::with_capacity(sites.len());
        let mut groups: Vec<(Cow<'a, str>, SitesOf<'a>)> = Vec::with_capacity(sites.len());
        for site in sites {
            let key = key_of(&site.user);
            match index.get(key.as_ref()) {
                Some(&i) => groups[i].1.push(site),
                None => {
                    index.insert(key.clone(), groups.len());
                    groups.push((key, SitesOf::One(site)));
                }
            }
        }
        drop(index);
        let mut list: Vec<User> = groups
            .into_iter()
            .map(|(key, mut sites)| {
                if let SitesOf::Many(sites) = &mut sites {
                    sites.sort_by(|a, b| a.created.cmp(&b.created).then_with(|| a.key.cmp(&b.key)));
                }
                let prior = prior_of(sites.all());
                let ready_message = sites
                    .all()
                    .iter()
                    .find_map(|s| find_condition(&s.status.as_deref()?.conditions, condition_type::READY))
                    .map(|c| c.message.as_str());
                let oldest = sites.all()[0];
                User {
                    upn: oldest.user.trim(),
                    since: oldest.created,
                    in_batch: false,
                    key,
                    sites,
                    prior,
                    ready_message,
                }
            })
            .collect();
        list.sort_by(|a, b| a.since.cmp(&b.since).then_with(|| a.key.cmp(&b.key)));
        Users { sites, list }
    }

    /// Whether these are the users of exactly `sites` (otherwise a planning call gathers anew).
    fn gathered_from(&self, sites: &[DesiredSite]) -> bool {
        std::ptr::eq(self.sites, sites)
    }

    /// The users, marked against the tenant's in-flight batch.
    fn marked(&mut self, batch: Option<&BatchStatus>) -> &[User<'a>] {
        let batch: HashSet<String> =
            batch.map(|b| b.users.iter().map(|u| user_key(u)).collect()).unwrap_or_default();
        for u in &mut self.list {
            u.in_batch = !batch.is_empty() && batch.contains(u.key.as_ref());
        }
        &self.list
    }
}

/// Merges the statuses of the sites naming one user. They agree once written; a site that
/// is new or was written for another generation contributes nothing.
fn prior_of<'a>(sites: &[&'a DesiredSite<'a>]) -> Prior<'a> {
    let rank = |p: SitePhase| match p {
        SitePhase::Ready => 3,
        SitePhase::SpsSiteError => 2,
        SitePhase::Failed => 1,
        SitePhase::Pending => 0,
    };
    let best = sites
        .iter()
        .filter_map(|s| {
            let st = s.status.as_deref()?;
            (st.observed_generation == Some(s.generation)).then_some(st)
        })
        .filter(|st| st.phase.is_some())
        .max_by_key(|st| st.phase.map(rank));
    let Some(st) = best else { return Prior::default() };
    let ready = find_condition(&st.conditions, condition_type::READY);
    let reason = ready.map(|c| c.reason.as_str());
    // A Pending site that was never checked (or could not be, for a tenant problem) carries
    // no knowledge: the user is observed again.
    if st.phase == Some(SitePhase::Pending)
        && ready.is_some_and(|c| {
            c.status == "Unknown"
                || c.reason == reason::TENANT_NOT_READY
                || c.reason == reason::TENANT_NOT_FOUND
        })
    {
        return Prior::default();
    }
    Prior {
        phase: st.phase,
        // Stalled flips to True exactly when a user fails (Ready may have been False before).
        failed_since: (st.phase == Some(SitePhase::Failed))
            .then(|| find_condition(&st.conditions, condition_type::STALLED))
            .flatten()
            .filter(|c| c.status == "True")
            .map(|c| c.last_transition_time.0),
        reason,
        site_url: st.site_url.as_deref(),
        enqueued_at: st.enqueued_at.as_ref().map(|t| t.0),
        batch: st.batch,
        provisioned_at: st.provisioned_at.as_ref().map(|t| t.0),
    }
}

// ---------------------------------------------------------------------------------------------
// Deciding: one user's new state.

#[derive(Clone, Debug, PartialEq)]
struct UserState<'a> {
    phase: SitePhase,
    reason: &'static str,
    ready: &'static str,
    message: Cow<'a, str>,
    site_url: Option<&'a str>,
    enqueued_at: Option<Timestamp>,
    batch: Option<i64>,
    provisioned_at: Option<Timestamp>,
    /// A person must act (kstatus `Stalled`).
    stalled: bool,
}

impl UserState<'_> {
    fn reconciling(&self) -> bool {
        matches!(self.phase, SitePhase::Pending | SitePhase::SpsSiteError)
            || self.reason == reason::PROVISIONING_TIMED_OUT
            || (self.reason == reason::TENANT_NOT_READY && !self.stalled)
    }
}

fn blocked(input: &PlanInput) -> bool {
    input.tenant_problem.is_some() || input.throttled_until.is_some_and(|t| t > input.now)
}

/// [`user_key`], without a copy for the usual already-lowercase address.
fn key_of(user: &str) -> Cow<'_, str> {
    let trimmed = user.trim();
    if trimmed.bytes().all(|b| b.is_ascii() && !b.is_ascii_uppercase()) {
        Cow::Borrowed(trimmed)
    } else {
        Cow::Owned(trimmed.to_lowercase())
    }
}

/// `args` as text: the user's current `Ready` message when it already reads so (most cycles
/// change nothing, and then nothing is allocated), a new string otherwise.
fn text<'a>(u: &User<'a>, args: std::fmt::Arguments) -> Cow<'a, str> {
    struct Matches<'s>(&'s str);
    impl std::fmt::Write for Matches<'_> {
        fn write_str(&mut self, s: &str) -> std::fmt::Result {
            self.0 = self.0.strip_prefix(s).ok_or(std::fmt::Error)?;
            Ok(())
        }
    }
    if let Some(current) = u.ready_message {
        let mut m = Matches(current);
        if std::fmt::write(&mut m, args).is_ok() && m.0.is_empty() {
            return Cow::Borrowed(current);
        }
    }
    Cow::Owned(std::fmt::format(args))
}

fn decide<'a>(u: &User<'a>, input: &PlanInput<'a>) -> UserState<'a> {
    let state = decide_from_tenant(u, input);
    match input.tenant_problem {
        // Users waiting for a batch say why they cannot progress. What is already known stays:
        // a Ready site is still there, an enqueued one is still being made, a failure still
        // needs its own fix.
        Some(p) if state.phase == SitePhase::Pending => UserState {
            reason: reason::TENANT_NOT_READY,
            ready: "False",
            message: text(
                u,
                format_args!("OneDriveTenant {} is not ready ({}): {}", input.tenant, p.reason, p.message),
            ),
            stalled: p.stalled,
            ..state
        },
        _ => state,
    }
}

fn decide_from_tenant<'a>(u: &User<'a>, input: &PlanInput<'a>) -> UserState<'a> {
    let limits = input.limits;
    let obs = input.observed.get(u.key.as_ref());
    // Provisioning since when, and in which batch: the in-flight batch (which survives a crash
    // between recording it and writing the sites) or the site's own status.
    // A batch recorded but not yet accepted by SharePoint cannot time out: its clock starts
    // when it is sent (the controller restamps `enqueuedAt` then).
    let unsent = u.in_batch && input.batch.is_some_and(|b| !b.sent);
    let provisioning_since = match input.batch {
        Some(b) if u.in_batch => Some((b.enqueued_at.0, b.id)),
        _ if u.prior.phase == Some(SitePhase::SpsSiteError) => {
            u.prior.enqueued_at.map(|t| (t, u.prior.batch.unwrap_or(0)))
        }
        _ => None,
    };
    let still_provisioning = |since: Timestamp, batch: i64| {
        if !unsent && after(since, limits.provisioning_timeout) <= input.now {
            timed_out(since, batch, u, input)
        } else {
            provisioning(batch, since, u, input)
        }
    };
    let fail = |reason: &'static str, message: Cow<'a, str>| UserState {
        phase: SitePhase::Failed,
        reason,
        ready: "False",
        message,
        site_url: None,
        enqueued_at: u.prior.enqueued_at,
        batch: u.prior.batch,
        provisioned_at: None,
        stalled: true,
    };
    let recheck = SpecDuration(limits.failed_recheck_interval);
    match obs.map(|o| &o.observation) {
        Some(Observation::HasSite { url }) => {
            let provisioned_at = match u.prior.phase {
                Some(SitePhase::Ready) => u.prior.provisioned_at,
                _ => None,
            }
            .or(obs.map(|o| whole_second(o.at)));
            UserState {
                phase: SitePhase::Ready,
                reason: reason::PROVISIONED,
                ready: "True",
                message: text(u, format_args!("the OneDrive exists at {url}")),
                site_url: Some(url.as_str()),
                enqueued_at: provisioning_since.map(|p| p.0).or(u.prior.enqueued_at),
                batch: provisioning_since.map(|p| p.1).or(u.prior.batch),
                provisioned_at,
                stalled: false,
            }
        }
        Some(Observation::UserNotFound) => fail(
            reason::USER_NOT_FOUND,
            text(
                u,
                format_args!(
                    "{} does not exist in the tenant's directory: fix spec.user or create the user (checked again every {recheck})",
                    u.upn
                ),
            ),
        ),
        Some(Observation::UserNotLicensed | Observation::ProfileState(4098)) => fail(
            reason::USER_NOT_LICENSED,
            text(
                u,
                format_args!(
                    "{} has no SharePoint licence (profile state 4098): assign a licence that includes SharePoint Online (checked again every {recheck})",
                    u.upn
                ),
            ),
        ),
        Some(Observation::ProfileState(code @ (4096..=4102))) => fail(
            reason::SITE_CREATION_NOT_PERMITTED,
            text(
                u,
                format_args!(
                    "SharePoint may not create a personal site for {} (profile state {code}, {}): fix the tenant's personal-site settings (checked again every {recheck})",
                    u.upn,
                    profile_state_name(*code)
                ),
            ),
        ),
        Some(Observation::ProfileState(code @ (8192..=8195 | 8197..=8198))) => fail(
            reason::PROVISIONING_FAILED,
            text(
                u,
                format_args!(
                    "SharePoint failed to create the personal site of {} (profile state {code}, {}): see the SharePoint admin centre (checked again every {recheck})",
                    u.upn,
                    profile_state_name(*code)
                ),
            ),
        ),
        // Enqueued by someone, created without a URL yet, or "already exists": still being made.
        Some(Observation::ProfileState(1 | 2 | 8196)) => {
            let (since, batch) = provisioning_since.unwrap_or((obs.expect("matched").at, 0));
            still_provisioning(since, batch)
        }
        Some(o) if o.is_no_site() => {
            let at = obs.expect("matched").at;
            if let Some((since, batch)) = provisioning_since {
                still_provisioning(since, batch)
            } else if u.prior.phase == Some(SitePhase::Ready)
                && u.prior.provisioned_at.is_some_and(|p| p >= at)
            {
                prior_state(u, input)
            } else if u.prior.phase == Some(SitePhase::Ready) {
                pending(
                    text(
                        u,
                        format_args!(
                            "the OneDrive that existed at {} is gone: {} waits for a batch slot to get a new one",
                            u.prior.site_url.unwrap_or("(unknown)"),
                            u.upn
                        ),
                    ),
                    u,
                )
            } else if u.prior.reason == Some(reason::PROVISIONING_TIMED_OUT) {
                timed_out(u.prior.enqueued_at.unwrap_or(at), u.prior.batch.unwrap_or(0), u, input)
            } else {
                pending(text(u, format_args!("{} has no OneDrive yet and waits for a batch slot", u.upn)), u)
            }
        }
        // Nothing (new) is known: keep what the status says, advanced by the clock.
        _ => match (provisioning_since, u.prior.phase) {
            // What a status already settled is not undone by being in a batch.
            (_, Some(SitePhase::Ready)) => prior_state(u, input),
            (_, Some(SitePhase::Failed)) if u.prior.reason != Some(reason::PROVISIONING_TIMED_OUT) => {
                prior_state(u, input)
            }
            (Some((since, batch)), _) => still_provisioning(since, batch),
            (None, None) => UserState {
                ready: "Unknown",
                ..pending(text(u, format_args!("{} has not been checked against the tenant yet", u.upn)), u)
            },
            (None, Some(_)) => prior_state(u, input),
        },
    }
}

fn pending<'a>(message: Cow<'a, str>, u: &User<'a>) -> UserState<'a> {
    UserState {
        phase: SitePhase::Pending,
        reason: reason::PENDING,
        ready: "False",
        message,
        site_url: None,
        enqueued_at: u.prior.enqueued_at,
        batch: u.prior.batch,
        provisioned_at: None,
        stalled: false,
    }
}

fn provisioning<'a>(batch: i64, since: Timestamp, u: &User<'a>, input: &PlanInput) -> UserState<'a> {
    UserState {
        phase: SitePhase::SpsSiteError,
        reason: reason::SPSSITEERROR,
        ready: "False",
        message: text(
            u,
            format_args!(
                "enqueued in batch {batch} at {since}; SharePoint shows SPSSITEERROR while its timer job creates the site (timeout {})",
                SpecDuration(input.limits.provisioning_timeout)
            ),
        ),
        site_url: None,
        enqueued_at: Some(since),
        batch: Some(batch),
        provisioned_at: None,
        stalled: false,
    }
}

fn timed_out<'a>(since: Timestamp, batch: i64, u: &User<'a>, input: &PlanInput) -> UserState<'a> {
    UserState {
        phase: SitePhase::Failed,
        reason: reason::PROVISIONING_TIMED_OUT,
        ready: "False",
        message: text(
            u,
            format_args!(
                "enqueued in batch {batch} at {since} but no site after {}: it is sent again in the next batch; if this repeats, check the user can sign in and holds a SharePoint licence",
                SpecDuration(input.limits.provisioning_timeout)
            ),
        ),
        site_url: None,
        enqueued_at: Some(since),
        batch: Some(batch),
        provisioned_at: None,
        stalled: true,
    }
}

/// Rebuilds the state a status describes (nothing new was observed).
fn prior_state<'a>(u: &User<'a>, input: &PlanInput) -> UserState<'a> {
    let current = u
        .sites
        .all()
        .iter()
        .filter_map(|s| s.status.as_deref())
        .find(|st| st.phase == u.prior.phase)
        .and_then(|st| find_condition(&st.conditions, condition_type::READY));
    let reason = match u.prior.reason {
        Some(reason::PROVISIONED) => reason::PROVISIONED,
        Some(reason::USER_NOT_FOUND) => reason::USER_NOT_FOUND,
        Some(reason::USER_NOT_LICENSED) => reason::USER_NOT_LICENSED,
        Some(reason::SITE_CREATION_NOT_PERMITTED) => reason::SITE_CREATION_NOT_PERMITTED,
        Some(reason::PROVISIONING_FAILED) => reason::PROVISIONING_FAILED,
        Some(reason::PROVISIONING_TIMED_OUT) => {
            return timed_out(u.prior.enqueued_at.unwrap_or(input.now), u.prior.batch.unwrap_or(0), u, input);
        }
        _ => reason::PENDING,
    };
    let phase = u.prior.phase.unwrap_or(SitePhase::Pending);
    let fallback = || -> Cow<'a, str> {
        match phase {
            SitePhase::Ready => {
                format!("the OneDrive exists at {}", u.prior.site_url.unwrap_or("(unknown)")).into()
            }
            _ => format!("{} has no OneDrive yet and waits for a batch slot", u.upn).into(),
        }
    };
    // A message written with a tenant problem is replaced once the problem is gone.
    let message = current
        .filter(|c| c.reason == reason)
        .map(|c| Cow::Borrowed(c.message.as_str()))
        .unwrap_or_else(fallback);
    UserState {
        phase,
        reason,
        ready: if phase == SitePhase::Ready { "True" } else { "False" },
        message,
        site_url: u.prior.site_url.filter(|_| phase == SitePhase::Ready),
        enqueued_at: u.prior.enqueued_at,
        batch: u.prior.batch,
        provisioned_at: u.prior.provisioned_at.filter(|_| phase == SitePhase::Ready),
        stalled: phase == SitePhase::Failed,
    }
}

/// Whether a straggler (enqueued, its batch over, still no site) is due for a look. The longer
/// it has waited, the less often it is looked at — a tenth of the wait, between the poll
/// interval and an hour — so a user whose site never comes (sign-in blocked) costs a few dozen
/// lookups before `provisioningTimeout` instead of one a minute. Nothing waits on stragglers:
/// the next batch waits only for its own last user.
fn straggler_due(s: &UserState, obs: Option<&Observed>, input: &PlanInput) -> bool {
    let Some(o) = obs else { return true };
    let waited = o.at.duration_since(s.enqueued_at.unwrap_or(o.at));
    let every = (waited / 10)
        .clamp(input.limits.poll_interval, SignedDuration::from_hours(1).max(input.limits.poll_interval));
    after(o.at, every) <= input.now
}

/// When the batch's last user was seen done (site, or a permanent refusal), if it was.
fn last_user_done_at(
    b: &BatchStatus,
    users: &[User],
    states: &[UserState],
    input: &PlanInput,
) -> Option<Timestamp> {
    let key = user_key(&b.last_user);
    let obs = input.observed.get(&key);
    let state = users.iter().position(|u| u.key == key).map(|i| &states[i]);
    let done_by_obs = obs.filter(|o| match &o.observation {
        Observation::HasSite { .. } | Observation::UserNotFound | Observation::UserNotLicensed => true,
        Observation::ProfileState(code) => *code >= 4096,
        _ => false,
    });
    if let Some(o) = done_by_obs {
        return Some(o.at);
    }
    // After a restart the memory is empty, but the status may already say Ready.
    match state {
        Some(s) if s.phase == SitePhase::Ready => s.provisioned_at.or(Some(b.enqueued_at.0)),
        _ => None,
    }
}

fn observed_since(input: &PlanInput, user: &str, since: Timestamp) -> bool {
    input.observed.get(&user_key(user)).is_some_and(|o| o.at >= since)
}

/// Users who may join the next batch, oldest first: they exist, have no site, and are neither
/// provisioning nor refused by the directory.
fn candidates(users: &[User], states: &[UserState], input: &PlanInput) -> Vec<usize> {
    (0..users.len())
        .filter(|&i| eligible(&users[i], &states[i]))
        .filter(|&i| {
            let fresh = fresh_since(&users[i], input);
            input
                .observed
                .get(users[i].key.as_ref())
                .is_some_and(|o| o.observation.is_no_site() && o.at >= fresh)
        })
        .collect()
}

/// The oldest observation that still counts as "no site" for an enqueue. A timed-out user's
/// site may appear any moment, so it must be seen without one after the timeout was written.
fn fresh_since(u: &User, input: &PlanInput) -> Timestamp {
    let recent = after(input.now, -input.limits.enqueue_recheck_after);
    match (u.prior.reason, u.prior.failed_since) {
        (Some(reason::PROVISIONING_TIMED_OUT), Some(since)) => {
            recent.max(after(since, SignedDuration::from_secs(1)))
        }
        _ => recent,
    }
}

/// A timed-out user is sent again only once its `ProvisioningTimedOut` status was written, so
/// the timeout is always visible on the resource.
fn eligible(u: &User, s: &UserState) -> bool {
    s.reason == reason::PENDING
        || (s.reason == reason::PROVISIONING_TIMED_OUT
            && u.prior.reason == Some(reason::PROVISIONING_TIMED_OUT))
}

/// Whether `u` was looked up within the poll interval.
fn seen_lately(u: &User, input: &PlanInput) -> bool {
    let since = after(input.now, -input.limits.poll_interval);
    input.observed.get(u.key.as_ref()).is_some_and(|o| o.at >= since)
}

/// The next batch as it would be formed now, and what must be looked up before it may be sent.
struct NextBatch<'a> {
    /// The oldest `batch_size` candidates (indexes into the users).
    chosen: Vec<usize>,
    /// Candidates whose "no site" is missing or stale, and the would-be last user unless seen
    /// within the poll interval: the next batch waits for that user's site, so they must lack
    /// one now, not when the queue was first read hours ago. Asked for together with whatever
    /// else the cycle observes, to save a round; nothing is sent while this is non-empty.
    lookups: Vec<&'a str>,
}

fn next_batch<'a>(users: &'a [User], states: &[UserState], input: &PlanInput) -> NextBatch<'a> {
    let mut lookups = unverified_candidates(users, states, input);
    let mut chosen = candidates(users, states, input);
    chosen.truncate(input.limits.batch_size());
    if let Some(&last) = chosen.last().filter(|&&i| !seen_lately(&users[i], input)) {
        lookups.push(users[last].upn);
    }
    NextBatch { chosen, lookups }
}

/// The oldest `batch_size` eligible users whose "no site" is missing or stale.
fn unverified_candidates<'a>(users: &'a [User], states: &[UserState], input: &PlanInput) -> Vec<&'a str> {
    (0..users.len())
        .filter(|&i| eligible(&users[i], &states[i]))
        .take(input.limits.batch_size())
        .filter(|&i| {
            let fresh = fresh_since(&users[i], input);
            // A lookup that failed within the last poll interval counts as tried: the user waits
            // for a later batch instead of holding this one up.
            let retry_unknown = after(input.now, -input.limits.poll_interval);
            !input.observed.get(users[i].key.as_ref()).is_some_and(|o| match o.observation {
                Observation::Unknown => o.at >= retry_unknown.max(fresh),
                _ => o.at >= fresh,
            })
        })
        .map(|i| users[i].upn)
        .collect()
}

fn requeue(
    input: &PlanInput,
    users: &[User],
    states: &[UserState],
    batch: &Option<BatchStatus>,
    must_observe: bool,
) -> SignedDuration {
    let limits = input.limits;
    if let Some(until) = input.throttled_until.filter(|t| *t > input.now) {
        return until.duration_since(input.now);
    }
    if let (Some(b), Some(typical)) = (batch.as_ref().filter(|b| b.sent), input.typical_batch) {
        // The last user will not have a site much before the previous batch's duration: wait
        // for most of it before the first poll, then poll every interval.
        let wait = typical.checked_mul(9).map(|d| d / 10).unwrap_or(limits.provisioning_timeout);
        let first_poll = after(b.enqueued_at.0, wait.min(limits.provisioning_timeout));
        if first_poll > input.now {
            return first_poll.duration_since(input.now).max(limits.poll_interval);
        }
    }
    if input.tenant_problem.is_some() || batch.is_some() {
        return limits.poll_interval;
    }
    if must_observe {
        return limits.poll_interval.min(SignedDuration::from_secs(5));
    }
    if states.iter().any(|s| s.phase == SitePhase::SpsSiteError) {
        return limits.poll_interval;
    }
    // Idle: wake for the next re-check, at most a resync interval away.
    let mut next = after(input.now, limits.resync_interval);
    for (u, s) in users.iter().zip(states) {
        let last = input.observed.get(u.key.as_ref()).map(|o| o.at);
        let due = match s.phase {
            SitePhase::Ready => last.or(s.provisioned_at).map(|t| after(t, limits.drift_check_interval)),
            SitePhase::Failed => last.map(|t| after(t, limits.failed_recheck_interval)),
            _ => None,
        };
        if let Some(due) = due {
            next = next.min(due);
        }
    }
    next.duration_since(input.now).max(SignedDuration::from_secs(1))
}

/// Whether `st` is exactly what [`site_status`] would build for `s` (so nothing is written).
fn already(st: &OneDriveSiteStatus, generation: i64, s: &UserState) -> bool {
    let flag = |b: bool| if b { "True" } else { "False" };
    let is = |type_: &str, status: &str, message: &str| {
        find_condition(&st.conditions, type_).is_some_and(|c| {
            c.status == status
                && c.reason == s.reason
                && c.message == message
                && c.observed_generation == Some(generation)
        })
    };
    st.conditions.len() == 3
        && st.observed_generation == Some(generation)
        && st.phase == Some(s.phase)
        && st.site_url.as_deref() == s.site_url
        && st.enqueued_at.as_ref().map(|t| t.0) == s.enqueued_at
        && st.batch == s.batch
        && st.provisioned_at.as_ref().map(|t| t.0) == s.provisioned_at
        && is(condition_type::READY, s.ready, &s.message)
        && is(condition_type::RECONCILING, flag(s.reconciling()), "")
        && is(condition_type::STALLED, flag(s.stalled), "")
}

fn site_status(site: &DesiredSite, s: &UserState, now: Timestamp) -> OneDriveSiteStatus {
    let previous = site.status.as_deref().map(|st| st.conditions.as_slice()).unwrap_or(&[]);
    let g = Some(site.generation);
    let reconciling = if s.reconciling() { "True" } else { "False" };
    let stalled = if s.stalled { "True" } else { "False" };
    OneDriveSiteStatus {
        observed_generation: g,
        phase: Some(s.phase),
        site_url: s.site_url.map(String::from),
        enqueued_at: s.enqueued_at.map(Time),
        batch: s.batch,
        provisioned_at: s.provisioned_at.map(Time),
        conditions: ConditionSet::new(previous, g, now)
            .set(condition_type::READY, s.ready, s.reason, s.message.to_string())
            .set(condition_type::RECONCILING, reconciling, s.reason, "")
            .set(condition_type::STALLED, stalled, s.reason, "")
            .build(),
    }
}

/// Ordered, de-duplicated (case-insensitively) list of users.
#[derive(Default)]
struct Targets {
    seen: HashSet<String>,
    users: Vec<String>,
}

impl Targets {
    fn push(&mut self, user: &str) {
        if self.seen.insert(user_key(user)) {
            self.users.push(user.trim().to_string());
        }
    }
}

/// `90s`, `15m`, `24h`, `1h30m`: the notation the spec uses.
pub fn format_duration(d: SignedDuration) -> String {
    SpecDuration(d).to_string()
}

/// Displays a duration in the spec's notation (see [`format_duration`]).
struct SpecDuration(SignedDuration);

impl std::fmt::Display for SpecDuration {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let secs = self.0.as_secs();
        let (h, m, s) = (secs / 3600, (secs % 3600) / 60, secs % 60);
        if h > 0 {
            write!(f, "{h}h")?;
        }
        if m > 0 {
            write!(f, "{m}m")?;
        }
        if s > 0 || (h == 0 && m == 0) {
            write!(f, "{s}s")?;
        }
        Ok(())
    }
}

/// Names of `SPS-PersonalSiteInstantiationState` failure codes.
pub fn profile_state_name(code: i64) -> &'static str {
    match code {
        0 => "Uninitialized",
        1 => "Enqueued",
        2 => "Created",
        3 => "Deleted",
        4096 => "PermissionsGeneral",
        4097 => "UPANotGranted",
        4098 => "UserNotLicensed",
        4099 => "SelfServiceSiteCreationDisabled",
        4100 => "NoMySitesInPeopleLight",
        4101 => "EmptyHostUrl",
        4102 => "HostFailedToInitializePersonalSiteContext",
        8192 => "ErrorGeneral",
        8193 => "ManagedPathDoesNotExist",
        8194 => "LanguageNotInstalled",
        8195 => "PartialCreate",
        8196 => "PersonalSiteAlreadyExists",
        8197 => "RootSiteNotPresent",
        8198 => "SelfServiceSiteCreateCallFailed",
        _ => "unknown state",
    }
}

#[cfg(test)]
mod tests;
