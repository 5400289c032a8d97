//! A set's status: its sites by phase, and the conditions `Ready`, `Reconciling` and `Stalled`
//! (kstatus), each message saying what was observed and when.

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use super::{Members, SetInput, SetPlan, SetProblem};
use crate::api::annotations::CONFIRM_REMOVALS;
use crate::api::{
    ChildCounts, ConditionSet, ConditionStatus, HeldRemovals, KeptSite, OneDriveSiteSetStatus, SetReason,
    SitePhase, condition_type,
};

/// How many names a message lists before "and N more".
const NAMED: usize = 5;

/// What a sync found besides the plan.
pub(super) struct Found<'a> {
    pub at: Timestamp,
    pub members: Members<'a>,
    /// Members whose name a site the set does not own has: (name, user).
    pub conflicts: Vec<(String, &'a str)>,
    /// Members whose site the API server refused: (user, its message).
    pub refused: Vec<(&'a str, &'a str)>,
    /// Sites of users no longer listed.
    pub leavers: usize,
}

/// The sites by phase.
fn counts(children: &[&KeptSite], left: usize) -> ChildCounts {
    let mut c = ChildCounts { total: children.len() as i32, left: left as i32, ..ChildCounts::default() };
    for child in children {
        match child.status.as_ref().and_then(|s| s.phase) {
            Some(SitePhase::Ready) => c.ready += 1,
            Some(SitePhase::Pending) => c.pending += 1,
            Some(SitePhase::SpsSiteError) => c.provisioning += 1,
            Some(SitePhase::Failed) => c.failed += 1,
            None => c.waiting += 1,
        }
    }
    c
}

fn settled(c: &ChildCounts) -> bool {
    c.ready + c.failed == c.total
}

fn date(t: Timestamp) -> String {
    Timestamp::from_second(t.as_second()).unwrap_or(t).to_string()
}

/// "a, b, c and 2 more".
fn named<T>(items: &[T], show: impl Fn(&T) -> String) -> String {
    let mut text: Vec<String> = items.iter().take(NAMED).map(show).collect();
    if items.len() > NAMED {
        text.push(format!("and {} more", items.len() - NAMED));
    }
    text.join(", ")
}

/// The sites' phases in words.
fn phases(c: &ChildCounts) -> String {
    format!(
        "{} of {} sites Ready, {} being created (SPSSITEERROR), {} waiting for a batch, {} not checked yet, {} Failed",
        c.ready, c.total, c.provisioning, c.pending, c.waiting, c.failed
    )
}

/// A pass whose source gave no list: the sites stay as they are and are counted.
pub(super) fn without_source(input: &SetInput, problem: &SetProblem) -> SetPlan {
    let previous = input.previous;
    let children = counts(input.children, usize::try_from(previous.children.left).unwrap_or(0));
    let message = format!(
        "{} (since {}); no site was created or deleted; {}",
        problem.message,
        date(input.problem_since),
        phases(&children)
    );
    let status = OneDriveSiteSetStatus {
        children,
        conditions: stopped(input, problem.reason, problem.stalled, &message),
        held_removals: None,
        ..base(
            input,
            previous.members,
            previous.last_sync.clone(),
            previous.invalid_members,
            previous.conflicts,
        )
    };
    SetPlan { status, ..SetPlan::default() }
}

/// After a sync that read the source.
pub(super) fn after_sync(input: &SetInput, plan: &SetPlan, found: &Found) -> OneDriveSiteSetStatus {
    let listed = found.members.valid.len() + found.members.invalid.len();
    let children = counts(input.children, found.leavers);
    let mut notes = Vec::new();
    if !found.members.invalid.is_empty() {
        let names = named(&found.members.invalid, |(u, why)| format!("{u:?} ({why})"));
        notes.push(format!(
            "{} listed users cannot have a OneDriveSite: {names}",
            found.members.invalid.len()
        ));
    }
    if !found.refused.is_empty() {
        let names = named(&found.refused, |(u, why)| format!("{u} ({why})"));
        notes.push(format!(
            "the API server refused the OneDriveSites of {} users: {names}",
            found.refused.len()
        ));
    }
    if !found.conflicts.is_empty() {
        let names = named(&found.conflicts, |(name, user)| format!("{name} ({user})"));
        notes.push(format!(
            "{} users' site names are taken by OneDriveSites this set does not own (never adopted): {names}",
            found.conflicts.len()
        ));
    }
    let notes = if notes.is_empty() { String::new() } else { format!("; {}", notes.join("; ")) };
    let synced = format!("the source listed {listed} users at {}", date(found.at));
    let held = plan.guard.as_ref().filter(|g| g.held);
    let conditions = if let Some(g) = held {
        let message = format!(
            "{synced}: {} of the set's {} sites would be deleted in one sync, more than the removal guard allows \
             ({}% and {}); nothing was deleted. If that is intended, annotate the set {CONFIRM_REMOVALS}={}; \
             otherwise fix the source: the set resumes when it lists those users again{notes}",
            g.count, g.of, input.guard.max_percent, input.guard.max_count, g.token
        );
        stopped(input, SetReason::RemovalHeld, true, &message)
    } else if !plan.create.is_empty()
        || !plan.update.is_empty()
        || !plan.delete.is_empty()
        || plan.more
        || !input.settling.is_empty()
        || !settled(&children)
    {
        let message = format!(
            "{synced}: {} sites to create, {} to update, {} to delete; {}{notes}",
            plan.to_create,
            plan.to_update,
            plan.to_delete,
            phases(&children)
        );
        ConditionSet::new(&input.previous.conditions, input.generation, input.now)
            .set(condition_type::READY, ConditionStatus::False, SetReason::Syncing.as_str(), &message)
            .set(condition_type::RECONCILING, ConditionStatus::True, SetReason::Syncing.as_str(), &message)
            .set(condition_type::STALLED, ConditionStatus::False, SetReason::Syncing.as_str(), "")
            .build()
    } else {
        let failed = if children.failed > 0 {
            format!(", {} Failed (each needs a person: see its Ready condition)", children.failed)
        } else {
            String::new()
        };
        let message =
            format!("{synced}: {} of {} sites Ready{failed}{notes}", children.ready, children.total);
        ConditionSet::new(&input.previous.conditions, input.generation, input.now)
            .set(condition_type::READY, ConditionStatus::True, SetReason::Settled.as_str(), &message)
            .set(condition_type::RECONCILING, ConditionStatus::False, SetReason::Settled.as_str(), "")
            .set(condition_type::STALLED, ConditionStatus::False, SetReason::Settled.as_str(), "")
            .build()
    };
    OneDriveSiteSetStatus {
        children,
        conditions,
        held_removals: held.map(|g| HeldRemovals { count: g.count as i32, token: g.token.clone() }),
        ..base(
            input,
            Some(listed as i32),
            Some(Time(Timestamp::from_second(found.at.as_second()).unwrap_or(found.at))),
            (found.members.invalid.len() + found.refused.len()) as i32,
            found.conflicts.len() as i32,
        )
    }
}

/// The fields every status has.
fn base(
    input: &SetInput,
    members: Option<i32>,
    last_sync: Option<Time>,
    invalid_members: i32,
    conflicts: i32,
) -> OneDriveSiteSetStatus {
    let unsettled = input.children.iter().any(|c| {
        !matches!(c.status.as_ref().and_then(|s| s.phase), Some(SitePhase::Ready | SitePhase::Failed))
    });
    OneDriveSiteSetStatus {
        observed_generation: input.generation,
        members,
        last_sync,
        invalid_members,
        conflicts,
        estimated_completion: input.eta.filter(|_| unsettled).map(Time),
        ..OneDriveSiteSetStatus::default()
    }
}

/// Ready False with `reason`; `Stalled` when a person must act, else `Reconciling`.
fn stopped(
    input: &SetInput,
    reason: SetReason,
    stalled: bool,
    message: &str,
) -> Vec<k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition> {
    let r = reason.as_str();
    ConditionSet::new(&input.previous.conditions, input.generation, input.now)
        .set(condition_type::READY, ConditionStatus::False, r, message)
        .set(
            condition_type::RECONCILING,
            ConditionStatus::of(!stalled),
            r,
            if stalled { "" } else { message },
        )
        .set(condition_type::STALLED, ConditionStatus::of(stalled), r, if stalled { message } else { "" })
        .build()
}

impl SetProblem {
    pub fn new(reason: SetReason, message: impl Into<String>, stalled: bool) -> SetProblem {
        SetProblem { reason, message: message.into(), stalled }
    }
}
