//! Per user: a tenant's sites gathered into users (`gather`, `queue`), each user's state decided
//! from the newest observation (`decide`, `state`), one pass over the users (`pass`), whom to look
//! up (`wish`, `targets`), the in-flight batch's gate and the next batch (`batch`), when to come
//! back (`requeue`, `tally`), and the statuses that say it (`site_status`). [`Planner`] plans one
//! geo's users with that geo's batch; `super::tenant` plans every geo of a tenant.

mod batch;
mod decide;
mod gather;
mod pass;
mod queue;
mod requeue;
mod site_status;
mod state;
mod tally;
mod targets;
#[cfg(test)]
mod tests;
mod wish;

use jiff::SignedDuration;

// The planner's shared vocabulary, for the parts below (`super::X` in each of them).
use super::{
    BatchOutcome, DataLocation, DesiredSite, Enqueue, Limits, Lookup, Observation, Observed, Plan, PlanInput,
    ProfileMeaning, ProfileState, SiteUpdate, UserHasher, UserKey, after, blocked, recheck_at, recheck_due,
    user_key, whole_second,
};
use batch::{NextBatch, gate, next_batch, observed_since};
use gather::Users;
use pass::{Pass, decide_all, updates};
pub(super) use queue::key_of;
pub use site_status::{tenant_not_allowed_status, tenant_not_found_status};
use targets::Targets;

/// The planner of one cycle: a tenant's sites gathered into users once, then asked whom to
/// observe and what to do as observations come in. Every answer is about exactly the sites it was
/// made with.
pub struct Planner<'a> {
    users: Users<'a>,
}

impl<'a> Planner<'a> {
    /// A planner for `sites`, gathered now.
    pub fn new(sites: &'a [DesiredSite<'a>]) -> Planner<'a> {
        Planner { users: Users::new(sites) }
    }

    /// See [`plan`].
    pub fn plan(&mut self, input: &PlanInput) -> Plan {
        plan(input, &mut self.users)
    }
}

/// Decides one cycle. See the module documentation for the rules.
fn plan(input: &PlanInput, users: &mut Users) -> Plan {
    // Kubernetes stores times to the second: plan in whole seconds so that an unchanged world
    // computes byte-identical statuses.
    let input = &PlanInput { now: whole_second(input.now), ..*input };
    let pass = decide_all(users, input);
    let users = &*users;
    let list = users.list();
    let (gates, lookups) =
        if blocked(input) { Default::default() } else { targets::wanted(users, &pass, input) };
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
                    let mut enqueued = state::provisioning(new.id, input.now, gate, &list[i], input);
                    // A candidate's state is kept (see `pass::decide_all`).
                    if let Some(old) = states.get_mut(i) {
                        // A retried user's sites record the value they were sent again for.
                        enqueued.retried = old.retried;
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
        gates,
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
