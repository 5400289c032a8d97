//! When to come back.

use jiff::{SignedDuration, Timestamp};

use super::state::UserState;
use super::tally::Tally;
use super::{Limits, PlanInput, after, recheck_at};
use crate::api::{BatchStatus, SitePhase, SiteReason};

/// The requeue interval after a plan: Microsoft's wait when throttled; most of the previous
/// batch's duration before a new batch's first poll; the poll interval while anything is in
/// flight; otherwise the next re-check (`tally`'s, worked out by the pass), at most a resync
/// interval away.
pub(super) fn requeue(
    input: &PlanInput,
    tally: &Tally,
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
    if tally.counts.provisioning > 0 {
        return limits.poll_interval;
    }
    // Idle: wake for the next re-check, at most a resync interval away.
    let next = after(input.now, limits.resync_interval).min(tally.next_recheck.unwrap_or(Timestamp::MAX));
    next.duration_since(input.now).max(SignedDuration::from_secs(1))
}

/// When a user in state `s`, last looked at `last`, is due for a re-check, if ever.
pub(super) fn recheck_of(last: Option<Timestamp>, s: &UserState, limits: &Limits) -> Option<Timestamp> {
    match s.phase {
        SitePhase::Ready => last.or(s.provisioned_at).map(|t| recheck_at(t, limits.drift_check_interval)),
        SitePhase::Failed => last.map(|t| recheck_at(t, limits.failed_recheck_interval)),
        SitePhase::Pending if s.reason == SiteReason::LookupFailing => {
            last.map(|t| recheck_at(t, limits.failed_recheck_interval))
        }
        _ => None,
    }
}
