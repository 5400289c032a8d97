//! What a planning pass keeps of the users it decided: the states later steps read, and what all
//! the states add up to.

use jiff::Timestamp;

use super::state::UserState;
use crate::api::{SitePhase, UserCounts};

/// The states the later steps of a cycle read, by user index: of the users whose statuses change,
/// who may join a batch, or who are in the batch in flight. The others' states are counted and
/// dropped, so a steady pass holds little beyond the counts.
#[derive(Default)]
pub(super) struct States<'a>(Vec<(usize, UserState<'a>)>);

impl<'a> States<'a> {
    /// Keeps user `i`'s state (users come in index order).
    pub(super) fn push(&mut self, i: usize, state: UserState<'a>) {
        self.0.push((i, state));
    }

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
    pub(super) fn count(&mut self, s: &UserState, by: i32) {
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
