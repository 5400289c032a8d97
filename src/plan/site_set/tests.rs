//! Examples of the set planner's rules.

use std::collections::{BTreeMap, HashSet};

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;

use super::*;
use crate::api::{
    KeptSite, OneDriveSiteSetStatus, OneDriveSiteStatus, RemovalGuard, RemovalPolicy, SetReason, SitePhase,
    annotations, condition_type, find_condition,
};

const SET_UID: &str = "set-uid";
const DECLARED: &str = "d1";

fn now() -> Timestamp {
    "2026-12-06T08:00:00Z".parse().unwrap()
}

fn users(range: std::ops::Range<usize>) -> Vec<String> {
    range.map(|i| format!("user{i}@contoso.com")).collect()
}

/// The set's site of `user`, as the set applied it with `template`, in `phase`.
fn child(user: &str, template: &str, phase: Option<SitePhase>) -> KeptSite {
    let mut s = crate::testing::site("hr", &child_name(user), user, "contoso");
    s.metadata.uid = Some(format!("uid-{user}"));
    s.metadata.owner_references = Some(vec![OwnerReference {
        api_version: "onedrive-operator.dev/v1alpha1".into(),
        kind: "OneDriveSiteSet".into(),
        name: "staff".into(),
        uid: SET_UID.into(),
        controller: Some(true),
        ..Default::default()
    }]);
    s.metadata.annotations = Some([(annotations::SET_TEMPLATE.to_string(), template.to_string())].into());
    s.status = phase.map(|p| OneDriveSiteStatus { phase: Some(p), ..Default::default() });
    KeptSite::new(&s).unwrap()
}

struct Case {
    listed: Vec<String>,
    children: Vec<KeptSite>,
    taken: Vec<String>,
    policy: RemovalPolicy,
    guard: RemovalGuard,
    confirmed: Option<String>,
    confirmed_uids: Option<HashSet<String>>,
    settling: HashSet<String>,
    refused: BTreeMap<String, String>,
    budget: usize,
    previous: OneDriveSiteSetStatus,
}

impl Case {
    fn new(listed: Vec<String>, children: Vec<KeptSite>) -> Case {
        Case {
            listed,
            children,
            taken: Vec::new(),
            policy: RemovalPolicy::Delete,
            guard: RemovalGuard::default(),
            confirmed: None,
            confirmed_uids: None,
            settling: HashSet::new(),
            refused: BTreeMap::new(),
            budget: 10_000,
            previous: OneDriveSiteSetStatus::default(),
        }
    }

    fn run(&self) -> SetPlan {
        self.run_with(Source::Listed { users: &self.listed, at: now() })
    }

    fn run_with(&self, source: Source) -> SetPlan {
        let children: Vec<&KeptSite> = self.children.iter().collect();
        let taken: HashSet<&str> = self.taken.iter().map(String::as_str).collect();
        plan(&SetInput {
            generation: Some(1),
            previous: &self.previous,
            source,
            children: &children,
            taken: &taken,
            declared: DECLARED,
            policy: self.policy,
            guard: &self.guard,
            confirmed: Confirmed { token: self.confirmed.as_deref(), uids: self.confirmed_uids.as_ref() },
            settling: &self.settling,
            refused: &self.refused,
            problem_since: now(),
            budget: self.budget,
            eta: None,
            now: now(),
        })
    }
}

fn ready_of(plan: &SetPlan) -> (String, String, String) {
    let c = find_condition(&plan.status.conditions, condition_type::READY).unwrap();
    (c.status.clone(), c.reason.clone(), c.message.clone())
}

fn stalled(plan: &SetPlan) -> bool {
    find_condition(&plan.status.conditions, condition_type::STALLED).unwrap().status == "True"
}

#[test]
fn every_member_gets_one_site_and_a_settled_set_is_ready() {
    let listed = users(0..3);
    let plan = Case::new(listed.clone(), vec![]).run();
    let created: Vec<&str> = plan.create.iter().map(|m| m.user.as_str()).collect();
    assert_eq!(created, ["user0@contoso.com", "user1@contoso.com", "user2@contoso.com"]);
    assert_eq!(plan.create[0].name, child_name("user0@contoso.com"));
    assert_eq!(ready_of(&plan).1, "Syncing");
    // Once they exist, one Ready and one Failed (a person's matter): settled, Ready True.
    let children = vec![
        child("user0@contoso.com", DECLARED, Some(SitePhase::Ready)),
        child("user1@contoso.com", DECLARED, Some(SitePhase::Failed)),
        child("user2@contoso.com", DECLARED, Some(SitePhase::Ready)),
    ];
    let plan = Case::new(listed, children).run();
    assert!(plan.create.is_empty() && plan.update.is_empty() && plan.delete.is_empty());
    let (status, reason, message) = ready_of(&plan);
    assert_eq!((status.as_str(), reason.as_str()), ("True", "Settled"));
    assert!(
        message.contains("2 of 3 sites Ready, 1 Failed") && message.contains("2026-12-06T08:00:00Z"),
        "{message}"
    );
    assert_eq!((plan.status.children.ready, plan.status.children.failed), (2, 1));
    assert_eq!(plan.status.members, Some(3));
}

#[test]
fn a_site_in_progress_keeps_the_set_reconciling() {
    let children = vec![child("user0@contoso.com", DECLARED, Some(SitePhase::SpsSiteError))];
    let plan = Case::new(users(0..1), children).run();
    assert_eq!(ready_of(&plan).1, "Syncing");
    assert_eq!(plan.status.children.provisioning, 1);
}

#[test]
fn a_changed_template_updates_sites_and_the_budget_bounds_each_pass() {
    let children = vec![child("user0@contoso.com", "old", Some(SitePhase::Ready))];
    let mut case = Case::new(users(0..5), children);
    case.budget = 2;
    let plan = case.run();
    assert_eq!(plan.create.len(), 2, "creations first");
    assert!(plan.update.is_empty());
    assert!(plan.more);
    assert_eq!((plan.to_create, plan.to_update), (4, 1));
    case.budget = 5;
    let plan = case.run();
    assert_eq!((plan.create.len(), plan.update.len(), plan.more), (4, 1, false));
    assert_eq!(plan.update[0].user, "user0@contoso.com");
}

#[test]
fn taken_names_and_refused_users_are_reported_and_stop_no_one_else() {
    let mut listed = users(0..2);
    listed.push("not a user".into());
    listed.push(format!("{}@contoso.com", "x".repeat(120)));
    listed.push("USER0@contoso.com".into());
    let mut case = Case::new(listed, vec![]);
    case.taken = vec![child_name("user1@contoso.com")];
    let plan = case.run();
    let created: Vec<&str> = plan.create.iter().map(|m| m.user.as_str()).collect();
    assert_eq!(created, ["user0@contoso.com"], "the duplicate spelling is one user");
    assert_eq!((plan.status.invalid_members, plan.status.conflicts), (2, 1));
    let message = ready_of(&plan).2;
    assert!(message.contains("\"not a user\"") && message.contains("113"), "{message}");
    assert!(message.contains("never adopted") && message.contains("user1@contoso.com"), "{message}");
    assert_eq!(plan.status.members, Some(4));
}

#[test]
fn leavers_lose_their_site_within_the_guard_and_never_under_keep() {
    let children: Vec<KeptSite> =
        (0..100).map(|i| child(&format!("user{i}@contoso.com"), DECLARED, Some(SitePhase::Ready))).collect();
    let mut case = Case::new(users(0..95), children);
    let plan = case.run();
    assert_eq!(plan.delete.len(), 5);
    assert_eq!(plan.delete[0].uid.as_deref(), Some("uid-user95@contoso.com"));
    assert!(!plan.guard.as_ref().unwrap().held);
    case.policy = RemovalPolicy::Keep;
    let plan = case.run();
    assert!(plan.delete.is_empty() && plan.guard.is_none());
    assert_eq!(plan.status.children.left, 5);
    assert_eq!(ready_of(&plan).0, "True");
}

#[test]
fn the_guard_holds_a_mass_removal_until_confirmed_or_the_source_recovers() {
    let children: Vec<KeptSite> =
        (0..1000).map(|i| child(&format!("user{i}@contoso.com"), DECLARED, Some(SitePhase::Ready))).collect();
    // The group emptied: 1,000 of 1,000 would go.
    let mut case = Case::new(vec![], children);
    let plan = case.run();
    assert!(plan.delete.is_empty());
    let held = plan.status.held_removals.clone().unwrap();
    assert_eq!(held.count, 1000);
    assert!(stalled(&plan));
    let (_, reason, message) = ready_of(&plan);
    assert_eq!(reason, SetReason::RemovalHeld.as_str());
    assert!(message.contains("1000 of the set's 1000") && message.contains(&held.token), "{message}");
    // A token for other deletions confirms nothing.
    case.confirmed = Some("000000000000".into());
    assert!(case.run().delete.is_empty());
    case.confirmed = Some(held.token.clone());
    let confirmed = case.run();
    assert_eq!(confirmed.delete.len(), 1000);
    assert!(!stalled(&confirmed));
    // The source recovering: nothing to delete, nothing held.
    case.confirmed = None;
    case.listed = users(0..1000);
    let recovered = case.run();
    assert!(recovered.delete.is_empty() && recovered.status.held_removals.is_none());
    assert_eq!(ready_of(&recovered).0, "True");
}

#[test]
fn the_guard_needs_both_limits() {
    let children = |n: usize| -> Vec<KeptSite> {
        (0..n).map(|i| child(&format!("user{i}@contoso.com"), DECLARED, Some(SitePhase::Ready))).collect()
    };
    // 50 of 1,000: not more than 50.
    assert_eq!(Case::new(users(0..950), children(1000)).run().delete.len(), 50);
    // 51 of 1,000: more than 50 but not more than 10 %.
    assert_eq!(Case::new(users(0..949), children(1000)).run().delete.len(), 51);
    // 101 of 1,000: beyond both.
    assert!(Case::new(users(0..899), children(1000)).run().delete.is_empty());
    // A small set may lose most of its sites (not more than 50).
    assert_eq!(Case::new(users(0..2), children(40)).run().delete.len(), 38);
    // Configurable.
    let mut strict = Case::new(users(0..990), children(1000));
    strict.guard = RemovalGuard { max_percent: 0, max_count: 5 };
    assert!(strict.run().delete.is_empty());
}

#[test]
fn a_renamed_member_is_one_deletion_and_one_creation() {
    let children = vec![
        child("user0@contoso.com", DECLARED, Some(SitePhase::Ready)),
        child("old.name@contoso.com", DECLARED, Some(SitePhase::Ready)),
    ];
    let plan = Case::new(vec!["user0@contoso.com".into(), "new.name@contoso.com".into()], children).run();
    assert_eq!(plan.create.len(), 1);
    assert_eq!(plan.create[0].user, "new.name@contoso.com");
    assert_eq!(plan.delete.len(), 1);
    assert_eq!(plan.guard.unwrap().count, 1, "the guard counts it");
}

#[test]
fn a_source_that_fails_changes_no_site() {
    let children = vec![child("user0@contoso.com", DECLARED, Some(SitePhase::Ready))];
    let mut case = Case::new(vec![], children);
    case.previous.members = Some(1);
    let problem = SetProblem::new(
        SetReason::MembersUnreadable,
        "3 members were listed without a user principal name",
        true,
    );
    let plan = case.run_with(Source::Failed(problem));
    assert!(plan.create.is_empty() && plan.delete.is_empty() && plan.update.is_empty());
    assert!(stalled(&plan));
    let (status, reason, message) = ready_of(&plan);
    assert_eq!((status.as_str(), reason.as_str()), ("False", "MembersUnreadable"));
    assert!(
        message.contains("no site was created or deleted") && message.contains("2026-12-06"),
        "{message}"
    );
    assert_eq!(plan.status.members, Some(1), "the last sync's count stays");
    let throttled = case.run_with(Source::Failed(SetProblem::new(SetReason::Throttled, "throttled", false)));
    assert!(!stalled(&throttled));
}

#[test]
fn an_unchanged_world_plans_the_same_status() {
    let children = vec![child("user0@contoso.com", DECLARED, Some(SitePhase::Ready))];
    let mut case = Case::new(users(0..1), children);
    let first = case.run();
    case.previous = first.status.clone();
    assert_eq!(case.run().status, first.status);
}

#[test]
fn a_confirmation_left_on_the_set_does_not_let_a_later_glitch_through() {
    let sites = |uid_suffix: &str| -> Vec<KeptSite> {
        (0..100)
            .map(|i| {
                let mut c = child(&format!("user{i}@contoso.com"), DECLARED, Some(SitePhase::Ready));
                c.uid = Some(format!("uid-{i}-{uid_suffix}").into());
                c
            })
            .collect()
    };
    let mut case = Case::new(vec![], sites("first"));
    let token = case.run().guard.unwrap().token;
    case.confirmed = Some(token.clone());
    assert_eq!(case.run().delete.len(), 100);
    // The group restored, the sites recreated (new uids), then emptied by the same glitch: the
    // annotation still on the set confirms nothing.
    case.children = sites("again");
    let plan = case.run();
    assert!(plan.delete.is_empty() && plan.guard.as_ref().unwrap().held);
    assert_ne!(plan.guard.unwrap().token, token);
}

#[test]
fn what_is_left_of_confirmed_deletions_stays_confirmed() {
    let children: Vec<KeptSite> =
        (0..1000).map(|i| child(&format!("user{i}@contoso.com"), DECLARED, Some(SitePhase::Ready))).collect();
    let mut case = Case::new(vec![], children);
    case.budget = 200;
    case.confirmed = Some(case.run().guard.unwrap().token);
    let first = case.run();
    assert_eq!(
        (first.delete.len(), first.to_delete, first.more),
        (200, 1000, true),
        "deletions count in the budget"
    );
    let uids: HashSet<String> = first.guard.unwrap().confirmed.unwrap().into_iter().collect();
    // Those 200 gone: the 800 left have another token, yet were confirmed.
    case.children.drain(..200);
    case.confirmed_uids = Some(uids);
    let next = case.run();
    assert_eq!(next.delete.len(), 200);
    assert!(!next.guard.unwrap().held);
}

#[test]
fn settling_sites_are_not_written_again_and_refused_ones_are_reported() {
    let mut case = Case::new(users(0..4), vec![child("user9@contoso.com", DECLARED, Some(SitePhase::Ready))]);
    case.settling = [child_name("user0@contoso.com"), child_name("user9@contoso.com")].into();
    case.refused = [(child_name("user1@contoso.com"), "metadata.labels: Invalid value".to_string())].into();
    let plan = case.run();
    let created: Vec<&str> = plan.create.iter().map(|m| m.user.as_str()).collect();
    assert_eq!(created, ["user2@contoso.com", "user3@contoso.com"]);
    assert!(plan.delete.is_empty(), "a settling site is not a leaver");
    assert_eq!(plan.status.invalid_members, 1);
    let (_, reason, message) = ready_of(&plan);
    assert_eq!(reason, "Syncing");
    assert!(message.contains("refused") && message.contains("metadata.labels: Invalid value"), "{message}");
}

#[test]
fn a_failing_source_is_dated_when_first_seen() {
    let mut case = Case::new(vec![], vec![]);
    let problem = || SetProblem::new(SetReason::GroupNotAllowed, "not allowed", true);
    let since: Timestamp = "2026-12-06T07:00:00Z".parse().unwrap();
    let children: Vec<&KeptSite> = Vec::new();
    let taken = HashSet::new();
    let input = |previous: &'_ OneDriveSiteSetStatus, now: Timestamp| -> OneDriveSiteSetStatus {
        plan(&SetInput {
            generation: Some(1),
            previous,
            source: Source::Failed(problem()),
            children: &children,
            taken: &taken,
            declared: DECLARED,
            policy: case.policy,
            guard: &case.guard,
            confirmed: Confirmed::default(),
            settling: &case.settling,
            refused: &case.refused,
            problem_since: since,
            budget: 10,
            eta: None,
            now,
        })
        .status
    };
    let first = input(&OneDriveSiteSetStatus::default(), now());
    let later = input(&first, now() + jiff::SignedDuration::from_mins(30));
    assert_eq!(first, later, "an unchanged failure writes nothing");
    assert!(
        ready_of(&SetPlan { status: first, ..SetPlan::default() }).2.contains("since 2026-12-06T07:00:00Z")
    );
    case.previous = OneDriveSiteSetStatus::default();
}
