//! Whom a cycle observes before it acts, worked out from the users' states of one pass: first the
//! in-flight batch's gate ([`super::Plan::gates`]), then everyone else ([`super::Plan::lookups`]).

use std::collections::HashMap;

use jiff::Timestamp;

use super::batch::{Gate, gate, next_batch, observed_since};
use super::gather::Users;
use super::pass::Pass;
use super::wish::Wish;
use super::{Lookup, PlanInput, UserKey, user_key};

/// Whom to observe: the gate's lookups (the user the in-flight batch waits for, and once that
/// user is done the whole batch), then the rest (users never seen, stragglers, the next batch's
/// candidates, a bounded number of re-checks). The gate is looked at before anything else, so no
/// budget the others use (profile reads, listings) holds it up; and while a new batch may go out
/// (no batch in flight, or this one ending, with users waiting for a batch), re-checks wait for
/// the next cycle, so that nothing the cycle asks of SharePoint holds the send up.
/// `pass` holds what each user asked to be looked up ([`super::wish`]), the batch members'
/// states and the batch candidates.
pub(super) fn wanted(users: &Users, pass: &Pass, input: &PlanInput) -> (Vec<Lookup>, Vec<Lookup>) {
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
    let gates = out.lookups.len();
    let sending = batch_ending && !eligible.is_empty();
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
    let due = if sending { 0 } else { input.limits.recheck_per_cycle };
    for (_, upn, profile, confirm) in rechecks.into_iter().take(due) {
        out.add(upn, profile, confirm);
    }
    if batch_ending {
        for u in next_batch(list, seen, eligible, input).lookups {
            out.push(u, false);
        }
    }
    let rest = out.lookups.split_off(gates);
    (out.lookups, rest)
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
