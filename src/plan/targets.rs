//! Whom a cycle observes before it acts: the lookups [`super::targets`] returns and every plan
//! carries ([`super::Plan::lookups`]), worked out from the users' states of one pass.

use std::collections::HashMap;

use jiff::Timestamp;

use super::batch::{Gate, gate, next_batch, observed_since, straggler_due};
use super::gather::{User, Users};
use super::pass::Pass;
use super::state::UserState;
use super::{Lookup, Observed, PlanInput, UserKey, after, recheck_due, user_key};
use crate::api::{SitePhase, SiteReason};

/// See [`super::targets`]; `pass` holds what each user asked to be looked up ([`wish`]), the
/// batch members' states and the batch candidates.
pub(super) fn wanted(users: &Users, pass: &Pass, input: &PlanInput) -> Vec<Lookup> {
    let Pass { states, seen, wishes, eligible, .. } = pass;
    let list = users.list();
    let mut out = Targets::default();
    let mut batch_ending = input.batch.is_none();
    if let Some(b) = input.batch.filter(|b| b.sent) {
        let Gate { user, done_at, .. } = gate(b, users, states, input);
        if let Some(g) = user {
            out.push_confirmed(g, true);
        }
        if let Some(done_at) = done_at {
            batch_ending = true;
            for u in &b.users {
                if !observed_since(input, u, done_at) {
                    out.push(u, true);
                }
            }
        }
    }
    // (last look, user, profile wanted, absence confirmed user by user)
    let mut rechecks: Vec<(Timestamp, &str, bool, bool)> = Vec::new();
    for &(i, Wish { recheck, profile, confirm }) in wishes {
        let upn = list[i].upn();
        match recheck {
            None => out.add(upn, profile, confirm),
            Some(last) => rechecks.push((last, upn, profile, confirm)),
        }
    }
    rechecks.sort();
    for (_, upn, profile, confirm) in rechecks.into_iter().take(input.limits.recheck_per_cycle) {
        out.add(upn, profile, confirm);
    }
    if batch_ending {
        for u in next_batch(list, seen, eligible, input).lookups {
            out.push(u, false);
        }
    }
    out.lookups
}

/// What a user's state asks to be looked up: now, or as a re-check due since `recheck` (the
/// last look; the longest-waiting are taken first, a bounded number a cycle).
#[derive(Clone, Copy)]
pub(super) struct Wish {
    recheck: Option<Timestamp>,
    profile: bool,
    confirm: bool,
}

/// Whether user `u`, in state `s` and last seen as `obs` (at `looked`), is to be looked up. Asked
/// by the deciding pass while the user is in the CPU's cache: a pass of its own over every state
/// was a sixteenth of a steady cycle at 100,000 users.
pub(super) fn wish(
    u: &User,
    s: &UserState,
    obs: Option<&Observed>,
    looked: Option<Timestamp>,
    input: &PlanInput,
) -> Option<Wish> {
    let now = |profile, confirm| Some(Wish { recheck: None, profile, confirm });
    match s.phase {
        // A guest's verdict is the name's own: nothing to ask the tenant.
        _ if s.reason == SiteReason::GuestAccount => None,
        _ if obs.is_none() && u.prior.phase().is_none() => now(false, false),
        SitePhase::SpsSiteError if !u.in_batch && straggler_due(s, obs, input) => now(true, false),
        // A straggler timing out now: one more look first, so that a site that came since
        // the last (backed-off) look is not reported as a timeout.
        SitePhase::Failed
            if s.reason == SiteReason::ProvisioningTimedOut
                && !u.in_batch
                && u.prior.phase() == Some(SitePhase::SpsSiteError)
                && obs.is_none_or(|o| {
                    s.enqueued_at.is_some_and(|e| o.at < after(e, input.limits.provisioning_timeout))
                }) =>
        {
            now(true, true)
        }
        SitePhase::Ready => {
            let last = looked.or_else(|| u.prior.provisioned_at()).unwrap_or(Timestamp::MIN);
            // A Ready user missing from a listing is looked up before "the site is gone".
            recheck_due(last, input.limits.drift_check_interval, input.now).then_some(Wish {
                recheck: Some(last),
                profile: false,
                confirm: true,
            })
        }
        SitePhase::Failed | SitePhase::Pending if s.refused() || s.reason == SiteReason::LookupFailing => {
            let last = looked.or_else(|| u.prior.failed_since()).unwrap_or(Timestamp::MIN);
            // A profile verdict is re-read from the profile: nothing else can see it.
            let profile =
                matches!(s.reason, SiteReason::SiteCreationNotPermitted | SiteReason::ProvisioningFailed);
            recheck_due(last, input.limits.failed_recheck_interval, input.now).then_some(Wish {
                recheck: Some(last),
                profile,
                confirm: false,
            })
        }
        _ => None,
    }
}

/// Ordered, de-duplicated (case-insensitively) list of lookups; a user asked for twice gets
/// their profile read, or their absence confirmed, if either asked for it.
#[derive(Default)]
pub(super) struct Targets {
    seen: HashMap<UserKey, usize>,
    pub(super) lookups: Vec<Lookup>,
}

impl Targets {
    pub(super) fn push(&mut self, user: &str, profile: bool) {
        self.add(user, profile, false);
    }

    /// A user whose "no site" would end something (see [`Lookup::confirm`]).
    pub(super) fn push_confirmed(&mut self, user: &str, profile: bool) {
        self.add(user, profile, true);
    }

    pub(super) fn add(&mut self, user: &str, profile: bool, confirm: bool) {
        match self.seen.get(&user_key(user)) {
            Some(&i) => {
                self.lookups[i].profile |= profile;
                self.lookups[i].confirm |= confirm;
            }
            None => {
                self.seen.insert(user_key(user), self.lookups.len());
                self.lookups.push(Lookup { user: user.trim().to_string(), profile, confirm });
            }
        }
    }
}
