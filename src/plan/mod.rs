//! The batch planner: a pure function from what the operator knows to what it should do.
//!
//! No I/O and no clock (`now` is an input), so every rule of the mission is unit- and
//! property-tested here:
//! - at most `batch_size` (≤ 200) users per enqueue, at most one enqueue per cycle;
//! - no new batch while the previous one is in flight, i.e. until its **last user** has a site
//!   (the seeds' rule) or the batch timed out; a last user the tenant refused after the enqueue
//!   hands that role to the user before them ([`batch::gate`]);
//! - never enqueue a user who has a site, who is already provisioning, whom the directory refuses
//!   (unknown, unlicensed, sign-in blocked), or who was not observed without a site recently
//!   (`Limits::enqueue_recheck_after`; the batch's last user, whose site the next batch waits for,
//!   within the poll interval);
//! - Pending users are enqueued oldest first (by the oldest `OneDriveSite` naming them);
//! - statuses change only when the world does, so an unchanged world writes nothing.
//!
//! A cycle calls [`plan`], which also says whom to observe first ([`Plan::lookups`], what
//! [`targets`] gives); when there is anyone, it observes them and plans again, until
//! [`Plan::observe_now`] is empty (the plan may need a few more users observed before it can
//! finish a batch or form the next one: the whole finished batch once, the next candidates).
//! A steady cycle, with nobody to look at, plans once.
//!
//! Parts: `gather` (sites → users), `decide` (a user's state from an observation), `state` (the
//! states and their messages), `batch` (the in-flight batch's gate, the next batch), `requeue`,
//! and `status` (the only part that builds Kubernetes conditions).

mod limits;
mod namespaces;
mod observation;
pub mod settings;
pub mod site_set;
pub mod tenant;
mod users;

use std::borrow::Cow;

use jiff::{SignedDuration, Timestamp};

pub use limits::{Limits, format_duration};
pub use namespaces::{Admission, NamespacePolicy};
pub use observation::{
    DataLocation, Lookup, Observation, Observations, Observed, ProfileMeaning, ProfileState, UserHasher,
    UserKey, user_key,
};
pub use tenant::{partition, progress, route};
pub use users::Planner;
pub use users::{tenant_not_allowed_status, tenant_not_found_status};

use crate::api::{
    BatchStatus, KeptSite, KeptStatus, OneDriveSiteStatus, SitePhase, TenantReason, UserCounts,
};

pub use crate::api::{SiteReason, reason};

/// Identifies one `OneDriveSite`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SiteKey<'a> {
    pub namespace: Cow<'a, str>,
    pub name: Cow<'a, str>,
}

impl SiteKey<'_> {
    /// The key with its own copy of the names (the planner's keys borrow them from the cache).
    pub fn to_owned_key(&self) -> SiteKey<'static> {
        SiteKey { namespace: Cow::Owned(self.namespace.to_string()), name: Cow::Owned(self.name.to_string()) }
    }
}

impl std::fmt::Display for SiteKey<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// One `OneDriveSite` of the tenant, as the cache holds it. The status is borrowed from the
/// cache (copying every status each cycle was most of a steady-state cycle's cost).
#[derive(Clone, Debug, PartialEq)]
pub struct DesiredSite<'a> {
    pub key: SiteKey<'a>,
    pub user: Cow<'a, str>,
    pub created: Timestamp,
    pub generation: i64,
    pub status: Option<SiteStatus<'a>>,
    /// The tenant or the site declares administrators or a quota for it: once the site exists,
    /// `Ready` waits for them (`settings::overlay`).
    pub declares_settings: bool,
    /// The `onedrive-operator.dev/retry` annotation's value.
    pub retry: Option<Cow<'a, str>>,
}

/// A site's status as the cache keeps it ([`KeptStatus`]), borrowed from the cache (the
/// controller) or owned (tests, tools). Two words wide, so the per-cycle `DesiredSite` list
/// stays small.
#[derive(Clone, Debug)]
pub enum SiteStatus<'a> {
    Cached(&'a KeptStatus),
    Owned(Box<KeptStatus>),
}

impl std::ops::Deref for SiteStatus<'_> {
    type Target = KeptStatus;
    fn deref(&self) -> &KeptStatus {
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
        SiteStatus::Owned(Box::new(KeptStatus::from(&s)))
    }
}

impl<'a> DesiredSite<'a> {
    /// The planner's view of a cached site.
    pub fn from_resource(site: &'a KeptSite) -> DesiredSite<'a> {
        DesiredSite {
            key: SiteKey { namespace: Cow::Borrowed(&site.namespace), name: Cow::Borrowed(&site.name) },
            user: Cow::Borrowed(&site.user),
            created: site.created.unwrap_or(Timestamp::UNIX_EPOCH),
            generation: site.generation.unwrap_or(1),
            status: site.status.as_deref().map(SiteStatus::Cached),
            declares_settings: !site.site_admins.is_empty() || site.storage_quota.is_some(),
            retry: site.retry.as_deref().map(Cow::Borrowed),
        }
    }
}

/// A tenant-level problem that stops all work (missing Secret, refused token kind, ...).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TenantProblem {
    pub reason: TenantReason,
    pub message: String,
    /// Whether a person must act (credentials) rather than wait (throttling, outage).
    pub stalled: bool,
}

/// Everything the planner needs for one tenant.
#[derive(Clone, Copy, Debug)]
pub struct PlanInput<'a> {
    pub tenant: &'a str,
    /// Newest observation per user key ([`user_key`]).
    pub observed: &'a Observations,
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
    /// The Multi-Geo location these sites' users are routed to (written into their statuses);
    /// `None` in a single-geo tenant. A Multi-Geo tenant plans each geo's users on their own,
    /// with that geo's batch ([`partition`]).
    pub geo: Option<&'a str>,
}

impl<'a> PlanInput<'a> {
    /// A single-geo tenant's input with nothing in flight, nothing stopping work and no batch
    /// duration learnt yet; callers fill in what they know (`PlanInput { batch, ..new(..) }`).
    pub fn new(
        tenant: &'a str,
        observed: &'a Observations,
        limits: &'a Limits,
        now: Timestamp,
    ) -> PlanInput<'a> {
        PlanInput {
            tenant,
            observed,
            batch: None,
            last_batch_id: 0,
            throttled_until: None,
            tenant_problem: None,
            now,
            limits,
            typical_batch: None,
            geo: None,
        }
    }
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
    pub key: SiteKey<'static>,
    pub user: String,
    pub previous_phase: Option<SitePhase>,
    pub status: OneDriveSiteStatus,
}

impl SiteUpdate {
    /// The update that gives `site` `status`, or `None` when its status already is that.
    pub fn replacing(site: &DesiredSite, status: OneDriveSiteStatus) -> Option<SiteUpdate> {
        let previous = site.status.as_deref();
        (!previous.is_some_and(|p| p.is(&status))).then(|| SiteUpdate {
            key: site.key.to_owned_key(),
            user: site.user.to_string(),
            previous_phase: previous.and_then(|s| s.phase),
            status,
        })
    }
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
    /// Whom the cycle observes before anything else: the in-flight batch's gate (the user it
    /// waits for; once that user is done, the whole batch once).
    pub gates: Vec<Lookup>,
    /// Whom else the cycle observes before acting: when this or `gates` is non-empty the cycle
    /// observes them and plans again (a steady cycle, with nobody to look at, plans once).
    pub lookups: Vec<Lookup>,
    /// Users to observe before this plan is final; when non-empty nothing is enqueued.
    pub observe_now: Vec<Lookup>,
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

/// Re-checks fall due when a period boundary (a multiple of `every` since the Unix epoch) has
/// passed since the last look — at most `every` after it. Users looked at over a whole period
/// fall due together, so one tenant-wide listing answers for all of them instead of a listing
/// (or a lookup each) for every handful.
fn recheck_due(last: Timestamp, every: SignedDuration, now: Timestamp) -> bool {
    recheck_at(last, every) <= now
}

/// When a re-check after a look at `last` falls due: the next multiple of `every` since the epoch.
fn recheck_at(last: Timestamp, every: SignedDuration) -> Timestamp {
    let period = every.as_secs().max(1);
    let next = last.as_second().div_euclid(period).saturating_add(1).saturating_mul(period);
    Timestamp::from_second(next).unwrap_or(Timestamp::MAX)
}

/// `t + d`, saturating: times read from statuses are not trusted to be sane.
fn after(t: Timestamp, d: SignedDuration) -> Timestamp {
    t.checked_add(d).unwrap_or(if d.is_negative() { Timestamp::MIN } else { Timestamp::MAX })
}

/// `t` without its fraction of a second (what a `metav1.Time` keeps).
pub fn whole_second(t: Timestamp) -> Timestamp {
    Timestamp::from_second(t.as_second()).unwrap_or(t)
}

fn blocked(input: &PlanInput) -> bool {
    input.tenant_problem.is_some() || input.throttled_until.is_some_and(|t| t > input.now)
}

#[cfg(test)]
mod fixtures;
#[cfg(test)]
mod properties;
