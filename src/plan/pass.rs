//! One planning pass over a tenant's users: each user's observation looked up and decided on,
//! their statuses compared with the decision while still in the CPU's cache, and the statuses
//! that change.

use jiff::Timestamp;

use super::batch::eligible;
use super::gather::{User, Users};
use super::requeue::recheck_of;
use super::state::UserState;
use super::targets::{Wish, wish};
use super::{DataLocation, Observations, Observed, PlanInput, SiteUpdate, UserKey, decide::decide, site_status as status};
use crate::api::{SitePhase, UserCounts};

/// One pass over the users: each one's newest observation and state, and what the later steps
/// of a cycle need of them, worked out while each user is in the CPU's cache (at 100,000 users the
/// four passes that did this afterwards, each over every state, were a tenth of a steady cycle).
pub(super) struct Pass<'a> {
    pub(super) seen: Vec<Option<&'a Observed>>,
    pub(super) states: States<'a>,
    /// The users whose sites do not all say their state yet, in queue order (worded passes only).
    pub(super) changed: Vec<usize>,
    /// The users to look up (index, why), in queue order.
    pub(super) wishes: Vec<(usize, Wish)>,
    /// The users who may join a batch, in queue order ([`super::batch::eligible`]).
    pub(super) eligible: Vec<usize>,
    pub(super) tally: Tally,
}

/// The states the later steps of a cycle read, by user index: of the users whose statuses change,
/// who may join a batch, or who are in the batch in flight. The others' states are counted and
/// dropped: at 100,000 users, keeping every state was most of what a steady pass wrote.
#[derive(Default)]
pub(super) struct States<'a>(Vec<(usize, UserState<'a>)>);

impl<'a> States<'a> {
    pub(super) fn get(&self, i: usize) -> Option<&UserState<'a>> {
        self.0.binary_search_by_key(&i, |(at, _)| *at).ok().map(|at| &self.0[at].1)
    }

    pub(super) fn get_mut(&mut self, i: usize) -> Option<&mut UserState<'a>> {
        self.0.binary_search_by_key(&i, |(at, _)| *at).ok().map(|at| &mut self.0[at].1)
    }
}

/// What the users' states add up to: the tenant's counts, how many users are still reconciling,
/// and the earliest re-check due.
#[derive(Default)]
pub(super) struct Tally {
    pub(super) counts: UserCounts,
    reconciling: i64,
    pub(super) next_recheck: Option<Timestamp>,
}

impl Tally {
    fn count(&mut self, s: &UserState, by: i32) {
        let c = &mut self.counts;
        c.desired += by;
        *match s.phase {
            SitePhase::Ready => &mut c.ready,
            SitePhase::Pending => &mut c.pending,
            SitePhase::SpsSiteError => &mut c.provisioning,
            SitePhase::Failed => &mut c.failed,
        } += by;
        if s.reconciling() {
            self.reconciling += i64::from(by);
        }
    }

    /// A user's state replaced after the pass (enqueued): counted as the new one. Its re-check
    /// no longer matters: a cycle that enqueues comes back at the poll interval.
    pub(super) fn replace(&mut self, old: &UserState, new: &UserState) {
        self.count(old, -1);
        self.count(new, 1);
    }

    pub(super) fn reconciling(&self) -> bool {
        self.reconciling > 0
    }
}

/// The pass, its states `worded` or not. A user's statuses are read, their observation looked up,
/// decided on and compared with their statuses at once, while all of it is still in the CPU's
/// cache (at 100,000 users a second visit to the map, or to the statuses, was as dear as the
/// first).
pub(super) fn decide_all<'p, 'u: 'p, 'a: 'p>(
    users: &mut Users<'u>,
    worded: bool,
    input: &PlanInput<'a>,
) -> Pass<'p> {
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
    let mut next = 0;
    for (i, u) in list.iter_mut().enumerate() {
        u.read_statuses(worded);
        let u: &User<'p> = u;
        let obs = observation(input.observed, &mut next, gathering.key(i));
        let state = decide(u, obs, input);
        let looked = obs.map(|o| o.at);
        let changed = u.worded && !unchanged(u, &state, obs, input);
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
            pass.states.0.push((i, state));
        }
    }
    pass
}

/// The user's observation: the one after the previous user's when the observations are in
/// queue order ([`super::Planner::order_observations`]), which is then neither hashed nor looked
/// up in the map's table (a tenth of a steady cycle at 100,000 users); else by key.
fn observation<'o>(
    observed: &'o Observations,
    next: &mut usize,
    key: Option<&UserKey>,
) -> Option<&'o Observed> {
    let key = key?.as_str();
    // Ordered observations share the gathering's keys: matched by address, no string read.
    if let Some((_, obs)) = observed.get_index(*next).filter(|(k, _)| k.is(key)) {
        *next += 1;
        return Some(obs);
    }
    let (at, _, obs) = observed.get_full(key)?;
    *next = at + 1;
    Some(obs)
}

/// Whether every site of the user already has the status `s` calls for.
fn unchanged(u: &User, s: &UserState, obs: Option<&Observed>, input: &PlanInput) -> bool {
    let geo = input.geo.filter(|_| geo_known(u, obs));
    u.sites
        .all()
        .iter()
        .all(|site| site.status.as_deref().is_some_and(|st| status::already(st, site.generation, s, geo)))
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
            if site.status.as_deref().is_some_and(|st| status::already(st, site.generation, s, geo)) {
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
