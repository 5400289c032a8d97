//! One planning pass over a tenant's users: each user's observation looked up and decided on,
//! their statuses compared with the decision while still in the CPU's cache, and the statuses
//! that change.

use jiff::Timestamp;

use super::gather::{User, Users};
use super::state::UserState;
use super::{DataLocation, Observed, PlanInput, SiteUpdate, decide::decide, status};
use crate::api::{SitePhase, UserCounts};

/// One pass over the users: each one's newest observation, state, and whether every site of
/// theirs already says that state (worded passes only).
pub(super) struct Pass<'a> {
    pub(super) seen: Vec<Option<&'a Observed>>,
    /// When each observation was made (`seen`'s `at`), read while the observation is in the
    /// CPU's cache: the passes after this one read the time of every user's last look, and
    /// each reached into the map for it (a tenth of a steady cycle at 100,000 users).
    pub(super) looked: Vec<Option<Timestamp>>,
    pub(super) states: Vec<UserState<'a>>,
    pub(super) unchanged: Vec<bool>,
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
    let list = users.marked(input.batch);
    let mut pass = Pass {
        seen: Vec::with_capacity(list.len()),
        looked: Vec::with_capacity(list.len()),
        states: Vec::with_capacity(list.len()),
        unchanged: Vec::with_capacity(list.len()),
    };
    for u in list.iter_mut() {
        u.read_statuses(worded);
        let u: &User<'p> = u;
        let obs = input.observed.get(u.key.as_ref());
        let state = decide(u, obs, input);
        pass.unchanged.push(u.worded && unchanged(u, &state, obs, input));
        pass.seen.push(obs);
        pass.looked.push(obs.map(|o| o.at));
        pass.states.push(state);
    }
    pass
}

/// Whether every site of the user already has the status `s` calls for.
fn unchanged(u: &User, s: &UserState, obs: Option<&Observed>, input: &PlanInput) -> bool {
    let geo = input.geo.filter(|_| geo_known(u, obs));
    u.sites
        .all()
        .iter()
        .all(|site| site.status.as_deref().is_some_and(|st| status::already(st, site.generation, s, geo)))
}

/// The statuses that change (at most `site_updates_per_cycle`, in queue order), the counts,
/// whether any user has work ahead, and whether statuses were left for the next cycle.
pub(super) fn updates(
    list: &[User],
    states: &[UserState],
    seen: &[Option<&Observed>],
    unchanged: &[bool],
    input: &PlanInput,
) -> (Vec<SiteUpdate>, UserCounts, bool, bool) {
    let mut more = false;
    let now = input.now;
    let mut site_updates = Vec::new();
    let mut counts = UserCounts::default();
    let mut reconciling = false;
    for (((u, s), obs), &unchanged) in list.iter().zip(states).zip(seen).zip(unchanged) {
        counts.desired += 1;
        match s.phase {
            SitePhase::Ready => counts.ready += 1,
            SitePhase::Pending => counts.pending += 1,
            SitePhase::SpsSiteError => counts.provisioning += 1,
            SitePhase::Failed => counts.failed += 1,
        }
        reconciling |= s.reconciling();
        if unchanged {
            continue;
        }
        let geo = input.geo.filter(|_| geo_known(u, *obs));
        for site in u.sites.all() {
            // Most sites are unchanged in most cycles: check that without building a status.
            if site.status.as_deref().is_some_and(|st| status::already(st, site.generation, s, geo)) {
                continue;
            }
            if site_updates.len() == input.limits.site_updates_per_cycle {
                more = true;
                continue;
            }
            site_updates.extend(SiteUpdate::replacing(site, status::site_status(site, s, geo, now)));
        }
    }
    (site_updates, counts, reconciling, more)
}

/// Whether the user's geo rests on something seen ([`partition`]'s rules 1 to 3: their batch,
/// their preferred location as read, or a status that named it); a user routed to the central geo
/// only for lack of knowledge gets no `status.geo` rather than a guess.
fn geo_known(u: &User, obs: Option<&Observed>) -> bool {
    u.in_batch
        || obs.is_some_and(|o| o.location != DataLocation::Unread)
        || u.sites.all().iter().any(|s| s.status.as_deref().is_some_and(|st| st.geo.is_some()))
}
