//! The set planner: from the users a source listed and the `OneDriveSite`s a set has, which sites
//! to create, update and delete, whether the removal guard holds the deletions, and the set's
//! status. Pure: no I/O, `now` is an input.
//!
//! The rules:
//! - one site per user, named by [`child_name`]; a member whose name is taken by a site the set
//!   does not own is a conflict (never adopted, never overwritten), a member the CRD would refuse
//!   is reported (`invalidMembers`): neither stops the others;
//! - creations, updates and deletions are bounded per pass (`budget`): a big source is worked
//!   through over several passes, neither flooding the API server nor holding thousands of writes
//!   at once; a site whose last write the cache does not show yet (`settling`) is left alone;
//! - a member whose site the API server refused (`refused`) is reported, not written again until
//!   the set changes;
//! - a user who left the source loses their site only under `removalPolicy: Delete`, and only
//!   when the deletions of one sync stay within the removal guard (or a person confirmed exactly
//!   these: [`guard`]);
//! - a source that could not be read changes no site: an error is never a removal.

mod access;
mod guard;
mod names;
mod status;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, HashMap, HashSet};

use jiff::Timestamp;

pub use access::may_read;
pub use guard::Guard;
pub use names::{child_name, digest, invalid_user};

use crate::api::{KeptSite, OneDriveSiteSetStatus, RemovalGuard, RemovalPolicy, SetReason};
use crate::plan::{UserKey, user_key};

/// Why the source gave no list this pass.
#[derive(Clone, Debug, PartialEq)]
pub struct SetProblem {
    pub reason: SetReason,
    pub message: String,
    /// A person must act (kstatus `Stalled`) rather than wait.
    pub stalled: bool,
}

/// What the source gave.
#[derive(Clone, Debug)]
pub enum Source<'a> {
    /// Every user it lists, read completely at `at`.
    Listed { users: &'a [String], at: Timestamp },
    /// Nothing usable: no site is created or deleted.
    Failed(SetProblem),
}

/// What one pass of a set plans from.
pub struct SetInput<'a> {
    pub generation: Option<i64>,
    pub previous: &'a OneDriveSiteSetStatus,
    pub source: Source<'a>,
    /// The set's own sites (controlled by the set's uid).
    pub children: &'a [&'a KeptSite],
    /// Names of the other `OneDriveSite`s of the namespace (hand-written, or another set's).
    pub taken: &'a HashSet<&'a str>,
    /// The digest of what the set declares for each site ([`digest`] of tenant and template).
    pub declared: &'a str,
    pub policy: RemovalPolicy,
    pub guard: &'a RemovalGuard,
    /// What a person confirmed of held deletions.
    pub confirmed: Confirmed<'a>,
    /// Names written by an earlier pass whose write the cache does not show yet: neither created,
    /// updated nor deleted again, nor counted as leaving.
    pub settling: &'a HashSet<String>,
    /// Names of members whose site the API server refused, with its message.
    pub refused: &'a BTreeMap<String, String>,
    /// Since when the source's current problem has been seen (its messages' date).
    pub problem_since: Timestamp,
    /// Writes (creations, updates, deletions) this pass.
    pub budget: usize,
    /// The tenant's estimate of when its queue is done.
    pub eta: Option<Timestamp>,
    pub now: Timestamp,
}

/// What a person confirmed of the deletions the guard held.
#[derive(Clone, Copy, Debug, Default)]
pub struct Confirmed<'a> {
    /// The `onedrive-operator.dev/confirm-removals` annotation's value.
    pub token: Option<&'a str>,
    /// The uids of sites whose deletion an earlier pass saw confirmed (what is left of them
    /// after a partial pass is still confirmed).
    pub uids: Option<&'a HashSet<String>>,
}

/// A site the set declares.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Member {
    pub name: String,
    pub user: String,
    /// The uid of the site to update (`None`: a site to create).
    pub uid: Option<String>,
}

/// A site to delete: its name and the uid it must still have (a site recreated meanwhile by
/// someone else is not deleted).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Removal {
    pub name: String,
    pub uid: Option<String>,
}

/// What one pass does.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SetPlan {
    pub create: Vec<Member>,
    pub update: Vec<Member>,
    pub delete: Vec<Removal>,
    /// Work beyond this pass's budget: come back soon.
    pub more: bool,
    /// Creations, updates and deletions the sync found (this pass makes at most its budget of
    /// them).
    pub to_create: usize,
    pub to_update: usize,
    pub to_delete: usize,
    pub status: OneDriveSiteSetStatus,
    /// The guard's decision, when there were deletions to judge.
    pub guard: Option<Guard>,
}

/// The members as the source listed them, each once (the first spelling of a user wins), and
/// those the CRD would refuse.
struct Members<'a> {
    valid: Vec<(&'a str, UserKey)>,
    invalid: Vec<(&'a str, &'static str)>,
}

fn members(users: &[String]) -> Members<'_> {
    let mut seen = HashSet::with_capacity(users.len());
    let mut m = Members { valid: Vec::with_capacity(users.len()), invalid: Vec::new() };
    for user in users.iter().map(|u| u.trim()) {
        let key = user_key(user);
        if !seen.insert(key.clone()) {
            continue;
        }
        match invalid_user(user) {
            Some(why) => m.invalid.push((user, why)),
            None => m.valid.push((user, key)),
        }
    }
    m
}

/// One pass of a set.
pub fn plan(input: &SetInput) -> SetPlan {
    let (users, at) = match &input.source {
        Source::Listed { users, at } => (*users, *at),
        Source::Failed(problem) => return status::without_source(input, problem),
    };
    let members = members(users);
    let own: HashMap<&str, &KeptSite> = input.children.iter().map(|c| (&*c.name, *c)).collect();
    let listed: HashSet<&UserKey> = members.valid.iter().map(|(_, k)| k).collect();
    let mut plan = SetPlan::default();
    let mut conflicts = Vec::new();
    let mut refused = Vec::new();
    for (user, key) in &members.valid {
        let name = child_name(user);
        if input.settling.contains(&name) {
            continue;
        }
        if let Some(message) = input.refused.get(&name) {
            refused.push((*user, message.as_str()));
            continue;
        }
        match own.get(name.as_str()) {
            Some(child) if user_key(&child.user) != *key => conflicts.push((name, *user)),
            Some(child) => {
                let applied = child.owner.as_ref().and_then(|o| o.template.as_deref());
                if applied != Some(input.declared) {
                    plan.update.push(Member {
                        name,
                        user: child.user.to_string(),
                        uid: child.uid.as_deref().map(String::from),
                    });
                }
            }
            None if input.taken.contains(name.as_str()) => conflicts.push((name, *user)),
            None => plan.create.push(Member { name, user: user.to_string(), uid: None }),
        }
    }
    let leavers: Vec<&KeptSite> = input
        .children
        .iter()
        .copied()
        .filter(|c| !listed.contains(&user_key(&c.user)) && !input.settling.contains(&*c.name))
        .collect();
    if input.policy == RemovalPolicy::Delete && !leavers.is_empty() {
        let decision = guard::judge(&leavers, input.children.len(), input.guard, input.confirmed);
        if !decision.held {
            plan.delete = leavers
                .iter()
                .map(|c| Removal { name: c.name.to_string(), uid: c.uid.as_deref().map(String::from) })
                .collect();
        }
        plan.guard = Some(decision);
    }
    // Creations first (a new member waits for no update), then updates, then deletions, all
    // within the budget.
    (plan.to_create, plan.to_update, plan.to_delete) =
        (plan.create.len(), plan.update.len(), plan.delete.len());
    let mut left = input.budget;
    plan.create.truncate(left);
    left -= plan.create.len();
    plan.update.truncate(left);
    left -= plan.update.len();
    plan.delete.truncate(left);
    plan.more = plan.to_create + plan.to_update + plan.to_delete > input.budget;
    let found = status::Found { at, members, conflicts, refused, leavers: leavers.len() };
    plan.status = status::after_sync(input, &plan, &found);
    plan
}
