//! Batches: when the in-flight one is done, who the next one takes, and who is looked at first.

use jiff::{SignedDuration, Timestamp};

use super::gather::{User, Users};
use super::state::UserState;
use super::tally::States;
use super::{Observation, Observed, PlanInput, after, user_key};
use crate::api::{BatchStatus, SitePhase, SiteReason};

/// Whether a straggler (enqueued, its batch over, still no site) is due for a look. The longer
/// it has waited, the less often it is looked at — a tenth of the wait, between the poll
/// interval and an hour — so a user whose site never comes (sign-in blocked) costs a few dozen
/// lookups before `provisioningTimeout` instead of one a minute. Nothing waits on stragglers:
/// the next batch waits only for its own last user.
pub(super) fn straggler_due(s: &UserState, obs: Option<&Observed>, input: &PlanInput) -> bool {
    let Some(o) = obs else { return true };
    let waited = o.at.duration_since(s.enqueued_at.unwrap_or(o.at));
    let every = (waited / 10)
        .clamp(input.limits.poll_interval, SignedDuration::from_hours(1).max(input.limits.poll_interval));
    after(o.at, every) <= input.now
}

/// Where an in-flight batch stands.
pub(super) struct Gate<'b> {
    /// The user the batch waits for: its last user who may still get a site (`None` when the
    /// tenant refused every user of the batch).
    pub(super) user: Option<&'b str>,
    /// When the batch was seen done: its gate with a site (or, with no gate left, the last refusal).
    pub(super) done_at: Option<Timestamp>,
    /// The gate took over from a user refused since the gate was last looked at: look now, not at
    /// the next poll.
    pub(super) look_now: bool,
}

/// The seeds' rule waits for the batch's last user; a last user the tenant refused since (a
/// profile 4xxx/8xxx state, sign-in blocked after the enqueue) will never have a site, so the
/// batch is judged by the user before them instead of waiting for `provisioningTimeout`.
pub(super) fn gate<'b>(b: &'b BatchStatus, users: &Users, states: &States, input: &PlanInput) -> Gate<'b> {
    let mut refused_at: Option<Timestamp> = None;
    for upn in b.users.iter().rev() {
        let obs = input.observed.get(&user_key(upn));
        let state = users.in_batch(upn).and_then(|i| states.get(i));
        let refused = match state {
            Some(s) => s.refused(),
            None => obs.is_some_and(|o| o.observation.refusal().is_some()),
        };
        if refused {
            refused_at = refused_at.max(obs.map(|o| o.at));
            continue;
        }
        let done_at = match (obs, state) {
            (Some(o), _) if matches!(o.observation, Observation::HasSite { .. }) => Some(o.at),
            // After a restart the memory is empty, but the status may already say Ready.
            (_, Some(s)) if s.phase == SitePhase::Ready => s.provisioned_at.or(Some(b.enqueued_at.0)),
            _ => None,
        };
        let look_now = done_at.is_none() && refused_at.is_some_and(|r| obs.is_none_or(|o| o.at < r));
        return Gate { user: Some(upn), done_at, look_now };
    }
    // Everyone was refused: the batch is done as of its enqueue. Each user was looked at since
    // (that is how they were refused), so the batch-wide check ends at once instead of chasing
    // ever newer looks.
    Gate { user: None, done_at: Some(b.enqueued_at.0), look_now: false }
}

pub(super) fn observed_since(input: &PlanInput, user: &str, since: Timestamp) -> bool {
    input.observed.get(&user_key(user)).is_some_and(|o| o.at >= since)
}

/// Users who may join the next batch, oldest first: they exist, have no site, and are neither
/// provisioning nor refused by the directory.
fn candidates(
    users: &[User],
    seen: &[Option<&Observed>],
    eligible: &[usize],
    input: &PlanInput,
) -> Vec<usize> {
    eligible
        .iter()
        .copied()
        .filter(|&i| {
            let fresh = fresh_since(&users[i], input);
            seen[i].is_some_and(|o| o.observation.is_no_site() && o.at >= fresh)
        })
        .collect()
}

/// The oldest observation that still counts as "no site" for an enqueue. A timed-out user's
/// site may appear any moment, so it must be seen without one after the timeout was written.
fn fresh_since(u: &User, input: &PlanInput) -> Timestamp {
    let recent = after(input.now, -input.limits.enqueue_recheck_after);
    match (u.prior.reason(), u.prior.failed_since()) {
        (Some(SiteReason::ProvisioningTimedOut), Some(since)) => {
            recent.max(after(since, SignedDuration::from_secs(1)))
        }
        _ => recent,
    }
}

/// Whether a user last seen as `seen` was looked up within the poll interval.
fn seen_lately(seen: Option<&Observed>, input: &PlanInput) -> bool {
    let since = after(input.now, -input.limits.poll_interval);
    seen.is_some_and(|o| o.at >= since)
}

/// The next batch as it would be formed now, and what must be looked up before it may be sent.
pub(super) struct NextBatch<'a> {
    /// The oldest `batch_size` candidates (indexes into the users).
    pub(super) chosen: Vec<usize>,
    /// Candidates whose "no site" is missing or stale, and the would-be last user unless seen
    /// within the poll interval: the next batch waits for that user's site, so they must lack
    /// one now, not when the queue was first read hours ago. Asked for together with whatever
    /// else the cycle observes, to save a round; nothing is sent while this is non-empty.
    pub(super) lookups: Vec<&'a str>,
}

/// `seen`: each user's observation, as the pass found it; `eligible`: the users who may join a
/// batch, in queue order.
pub(super) fn next_batch<'a>(
    users: &'a [User],
    seen: &[Option<&Observed>],
    eligible: &[usize],
    input: &PlanInput,
) -> NextBatch<'a> {
    let mut lookups = unverified_candidates(users, seen, eligible, input);
    let mut chosen = candidates(users, seen, eligible, input);
    chosen.truncate(input.limits.batch_size());
    if let Some(&last) = chosen.last().filter(|&&i| !seen_lately(seen[i], input)) {
        lookups.push(users[last].upn());
    }
    NextBatch { chosen, lookups }
}

/// The oldest `batch_size` eligible users whose "no site" is missing or stale.
fn unverified_candidates<'a>(
    users: &'a [User],
    seen: &[Option<&Observed>],
    eligible: &[usize],
    input: &PlanInput,
) -> Vec<&'a str> {
    eligible
        .iter()
        .copied()
        .take(input.limits.batch_size())
        .filter(|&i| {
            let fresh = fresh_since(&users[i], input);
            // A lookup that failed within the last poll interval counts as tried: the user waits
            // for a later batch instead of holding this one up.
            let retry_unknown = after(input.now, -input.limits.poll_interval);
            // Anything else (no answer at all, a stale verdict of a re-created resource) is asked again.
            !seen[i].is_some_and(|o| {
                if o.observation.is_failed_lookup() {
                    o.at >= retry_unknown.max(fresh)
                } else {
                    o.observation.is_no_site() && o.at >= fresh
                }
            })
        })
        .map(|i| users[i].upn())
        .collect()
}
