//! One planning pass over a tenant's users: each user's observation looked up and decided on,
//! their statuses compared with the decision, and the statuses that change — one visit per user.

use super::gather::{User, Users};
use super::requeue::recheck_of;
use super::state::{UserState, eligible};
use super::tally::{States, Tally};
use super::wish::{Wish, wish};
use super::{DataLocation, Observed, PlanInput, SiteUpdate, decide::decide, site_status as status};

/// One pass over the users: each one's newest observation and state, and what the later steps
/// of a cycle need of them, worked out in the same visit.
pub(super) struct Pass<'a> {
    pub(super) seen: Vec<Option<&'a Observed>>,
    pub(super) states: States<'a>,
    /// The users whose sites do not all say their state yet, in queue order.
    pub(super) changed: Vec<usize>,
    /// The users to look up (index, why), in queue order.
    pub(super) wishes: Vec<(usize, Wish)>,
    /// The users who may join a batch, in queue order ([`super::batch::eligible`]).
    pub(super) eligible: Vec<usize>,
    pub(super) tally: Tally,
}

/// The pass: each user's statuses read, their observation looked up, decided on and compared with
/// their statuses, and what later steps need of them noted.
pub(super) fn decide_all<'p, 'u: 'p, 'a: 'p>(users: &mut Users<'u>, input: &PlanInput<'a>) -> Pass<'p> {
    let input: &PlanInput<'p> = input;
    let (list, gathering) = users.marked(input.batch);
    let mut pass = Pass {
        seen: Vec::with_capacity(list.len()),
        states: States::default(),
        changed: Vec::new(),
        wishes: Vec::new(),
        eligible: Vec::new(),
        tally: Tally::default(),
    };
    for (i, u) in list.iter_mut().enumerate() {
        u.read_statuses();
        let u: &User<'p> = u;
        let obs = gathering.key(i).and_then(|k| input.observed.get(k.as_str()));
        let state = decide(u, obs, input);
        let looked = obs.map(|o| o.at);
        let changed = !unchanged(u, &state, obs, input);
        if changed {
            pass.changed.push(i);
        }
        if let Some(w) = wish(u, &state, obs, looked, input) {
            pass.wishes.push((i, w));
        }
        let eligible = eligible(u, &state);
        if eligible {
            pass.eligible.push(i);
        }
        if let Some(due) = recheck_of(looked, &state, input.limits) {
            pass.tally.next_recheck = Some(pass.tally.next_recheck.map_or(due, |t| t.min(due)));
        }
        pass.tally.count(&state, 1);
        pass.seen.push(obs);
        if changed || eligible || u.in_batch {
            pass.states.push(i, state);
        }
    }
    pass
}

/// Whether every site of the user already has the status `s` calls for.
fn unchanged(u: &User, s: &UserState, obs: Option<&Observed>, input: &PlanInput) -> bool {
    let geo = input.geo.filter(|_| geo_known(u, obs));
    u.sites.all().iter().all(|site| status::already(site, s, geo))
}

/// The statuses of the `changed` users (queue order) that change, at most
/// `site_updates_per_cycle`, and whether statuses were left for the next cycle.
pub(super) fn updates(
    list: &[User],
    states: &States,
    seen: &[Option<&Observed>],
    changed: &[usize],
    input: &PlanInput,
) -> (Vec<SiteUpdate>, bool) {
    let mut more = false;
    let mut site_updates = Vec::new();
    for &i in changed {
        // A changed user's state is kept (see `decide_all`).
        let (u, Some(s)) = (&list[i], states.get(i)) else { continue };
        let geo = input.geo.filter(|_| geo_known(u, seen[i]));
        for site in u.sites.all() {
            // Most sites of a changed user may be unchanged: check that without building a status.
            if status::already(site, s, geo) {
                continue;
            }
            if site_updates.len() == input.limits.site_updates_per_cycle {
                more = true;
                continue;
            }
            site_updates.extend(SiteUpdate::replacing(site, status::site_status(site, s, geo, input.now)));
        }
    }
    (site_updates, more)
}

/// Whether the user's geo rests on something seen ([`partition`]'s rules 1 to 3: their batch,
/// their preferred location as read, or a status that named it); a user routed to the central geo
/// only for lack of knowledge gets no `status.geo` rather than a guess.
fn geo_known(u: &User, obs: Option<&Observed>) -> bool {
    u.in_batch
        || obs.is_some_and(|o| o.location != DataLocation::Unread)
        || u.sites.all().iter().any(|s| s.status.as_deref().is_some_and(|st| st.geo.is_some()))
}
