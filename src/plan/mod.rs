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

mod batch;
mod decide;
mod gather;
mod gathering;
mod routing;
mod limits;
mod namespaces;
mod observation;
mod pass;
mod progress;
mod requeue;
mod state;
mod site_status;
mod targets;

use std::borrow::Cow;

use jiff::{SignedDuration, Timestamp};

use gather::Users;
pub use gathering::Gathering;
pub use routing::{partition, route};
pub use limits::{Limits, format_duration};
pub use namespaces::{Admission, NamespacePolicy};
pub use observation::{
    DataLocation, Lookup, Observation, Observations, Observed, ProfileMeaning, ProfileState, UserHasher,
    UserKey, user_key,
};
pub use progress::progress;
pub use site_status::{tenant_not_allowed_status, tenant_not_found_status};

use crate::api::{
    BatchStatus, KeptSite, KeptStatus, OneDriveSiteStatus, SitePhase, TenantReason, UserCounts,
};
use batch::{NextBatch, gate, next_batch, observed_since};
use pass::{Pass, decide_all, updates};
use targets::Targets;

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
    /// Whom [`targets`] would have the cycle observe first, from this same pass: when non-empty
    /// the cycle observes them and plans again before acting (a steady cycle, with nobody to
    /// look at, plans once).
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

/// The planner of one cycle: a tenant's sites gathered into users once (most of a planning pass's
/// work), then asked whom to observe and what to do as observations come in. Every answer is about
/// exactly the sites it was made with.
pub struct Planner<'a> {
    users: Users<'a>,
}

impl<'a> Planner<'a> {
    /// A planner for `sites`, gathered now.
    pub fn new(sites: &'a [DesiredSite<'a>]) -> Planner<'a> {
        Planner { users: Users::new(sites, None) }
    }

    /// A planner for `sites` grouped by `gathering`, made for sites in the same order with the
    /// same users and creation times (statuses may differ); gathered anew if it does not fit.
    pub fn with(sites: &'a [DesiredSite<'a>], gathering: &'a Gathering) -> Planner<'a> {
        Planner { users: Users::new(sites, Some(gathering)) }
    }

    /// See [`targets`].
    pub fn targets(&mut self, input: &PlanInput) -> Vec<Lookup> {
        targets(input, &mut self.users)
    }

    /// See [`plan`].
    pub fn plan(&mut self, input: &PlanInput) -> Plan {
        plan(input, &mut self.users)
    }

    /// Puts `observed` in the order a pass reads it: these users' queue order, anybody else
    /// after. A pass then reads the observations one after another (at 100,000 users, in the
    /// order they arrived, each was a cache miss).
    pub fn order_observations(&self, observed: &mut Observations) {
        let mut entries: Vec<_> = observed.iter().map(|(k, v)| (self.users.find(k.as_str()), k, v)).collect();
        entries.sort_by_key(|(found, _, _)| found.map_or(usize::MAX, |(at, _)| at));
        // Copied in that order, so that the URLs a pass reads lie one after another in memory too
        // (allocated as the answers came, each was a cache miss at 100,000 users), and keyed by
        // the gathering's own keys, which a pass then matches by address ([`UserKey::is`]).
        let ordered: Observations = entries
            .into_iter()
            .map(|(found, k, v)| (found.map_or(k, |(_, mine)| mine).clone(), v.clone()))
            .collect();
        *observed = ordered;
    }

    /// Keys `observed` by these users' own keys, in place (their order stays): what a cycle that
    /// gathered the users anew does, at the cost of one lookup an observation, where putting them
    /// in order (a sort and a copy of every observation) would double that cycle's cost.
    pub fn share_keys(&self, observed: &mut Observations) {
        use indexmap::map::MutableKeys;
        for (key, _) in observed.iter_mut2() {
            if let Some((_, mine)) = self.users.find(key.as_str()) {
                // The same user: an equal key, so the map's hashes and order hold.
                *key = mine.clone();
            }
        }
    }
}

/// The users one cycle should observe first: the user the in-flight batch waits for (the whole
/// batch once that user is done), users never observed, users still provisioning outside the
/// batch, the next candidates for a batch whose "no site" is stale, and a bounded slice of Ready,
/// Failed and `LookupFailing` users due for a re-check. Enqueued users without a site get their
/// user profile read too: only the profile says whether SharePoint refused or failed them.
/// [`plan`] gives the same list as [`Plan::lookups`], from the same pass.
fn targets(input: &PlanInput, users: &mut Users) -> Vec<Lookup> {
    let input = &PlanInput { now: whole_second(input.now), ..*input };
    if blocked(input) {
        return Vec::new();
    }
    let pass = decide_all(users, false, input);
    targets::wanted(users, &pass, input)
}

/// Decides one cycle. See the module documentation for the rules.
fn plan(input: &PlanInput, users: &mut Users) -> Plan {
    // Kubernetes stores times to the second: plan in whole seconds so that an unchanged world
    // computes byte-identical statuses.
    let input = &PlanInput { now: whole_second(input.now), ..*input };
    let pass = decide_all(users, true, input);
    let users = &*users;
    let list = users.list();
    let lookups = if blocked(input) { Vec::new() } else { targets::wanted(users, &pass, input) };
    let Pass { seen, mut states, mut changed, eligible, mut tally, .. } = pass;
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
                let g = gate(b, users, &states, input);
                if after(b.enqueued_at.0, input.limits.provisioning_timeout) <= input.now {
                    finished = Some((b.id, BatchOutcome::TimedOut));
                } else if let Some(done_at) = g.done_at {
                    for u in &b.users {
                        if !observed_since(input, u, done_at) {
                            observe_now.push(u, true);
                        }
                    }
                    if observe_now.lookups.is_empty() {
                        finished = Some((b.id, BatchOutcome::Completed));
                        batch_duration =
                            Some(done_at.duration_since(b.enqueued_at.0)).filter(|d| d.is_positive());
                    } else {
                        // The next batch's candidates are needed too: ask for both at once.
                        for u in next_batch(list, &seen, &eligible, input).lookups {
                            observe_now.push(u, false);
                        }
                    }
                } else if let (true, Some(g)) = (g.look_now, g.user) {
                    observe_now.push_confirmed(g, true);
                }
                if finished.is_some() {
                    batch = None;
                }
            }
            None => {}
        }
        if batch.is_none() {
            let NextBatch { chosen, lookups } = next_batch(list, &seen, &eligible, input);
            if !lookups.is_empty() {
                for u in lookups {
                    observe_now.push(u, false);
                }
            } else if observe_now.lookups.is_empty() && !chosen.is_empty() {
                last_batch_id += 1;
                let users = chosen.iter().map(|&i| list[i].upn().to_string()).collect();
                let new = site_status::new_batch(last_batch_id, users, input.now);
                for (n, &i) in chosen.iter().enumerate() {
                    let gate = n + 1 == chosen.len();
                    let enqueued = state::provisioning(new.id, input.now, gate, &list[i], input);
                    // A candidate's state is kept (see `pass::decide_all`).
                    if let Some(old) = states.get_mut(i) {
                        tally.replace(old, &enqueued);
                        *old = enqueued;
                    }
                    changed.push(i);
                }
                // In queue order again, each once: statuses are written (and cut off) in that order.
                changed.sort_unstable();
                changed.dedup();
                enqueue = Some(Enqueue { batch: new.clone(), resend: false });
                batch = Some(new);
            }
        }
    }

    let (site_updates, more) = updates(list, &states, &seen, &changed, input);
    let requeue_after = if more {
        // Statuses left for the next cycle: come back at once.
        SignedDuration::from_secs(1)
    } else {
        requeue::requeue(input, &tally, &batch, !observe_now.lookups.is_empty())
    };
    Plan {
        lookups,
        observe_now: observe_now.lookups,
        enqueue,
        batch,
        last_batch_id,
        finished,
        batch_duration,
        site_updates,
        reconciling: tally.reconciling(),
        users: tally.counts,
        requeue_after,
    }
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
mod tests;
