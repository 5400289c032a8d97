//! Examples of each rule of the per-user planner.

use std::borrow::Cow;
use std::collections::HashMap;

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use super::gather::Users;
use super::state::text;
use crate::api::{
    BatchStatus, OneDriveSiteStatus, OneDriveTenantSpec, SitePhase, condition_type, find_condition,
};
use crate::m365::profile_state;
use crate::plan::fixtures::*;
use crate::plan::*;

#[test]
fn first_visit_writes_ready_unknown_and_observes_everyone() {
    let sites = users(3);
    let obs = Observations::default();
    let limits = Limits::default();
    let i = input(&sites, &obs, None, 100, &limits);
    assert_eq!(targets(&i), vec!["u0@contoso.com", "u1@contoso.com", "u2@contoso.com"]);
    let p = plan(&i);
    assert_eq!(p.site_updates.len(), 3);
    let st = &p.site_updates[0].status;
    assert_eq!(st.phase, Some(SitePhase::Pending));
    assert_eq!(ready_of(st).status, "Unknown");
    assert_eq!(st.observed_generation, Some(1));
    // The unobserved oldest candidates are needed before anything is enqueued.
    assert!(p.enqueue.is_none());
    assert_eq!(p.observe_now.len(), 3);
}

#[test]
fn batch_is_capped_at_200_and_takes_the_oldest_first() {
    let mut sites = users(450);
    sites.reverse(); // input order must not matter
    let obs = all_no_site(&sites, 100);
    let limits = Limits { batch_size: 500, ..Limits::default() };
    let p = plan(&input(&sites, &obs, None, 100, &limits));
    let e = p.enqueue.expect("a batch");
    assert_eq!(e.batch.users.len(), 200);
    assert_eq!(e.batch.size, 200);
    assert_eq!(e.batch.users[0], "u0@contoso.com");
    assert_eq!(e.batch.last_user, "u199@contoso.com");
    assert!(!e.batch.sent && !e.resend);
    assert_eq!(e.batch.id, 1);
    assert_eq!(p.users.provisioning, 200);
    assert_eq!(p.users.pending, 250);
}

#[test]
fn users_with_a_site_are_never_enqueued() {
    let sites = users(4);
    let mut obs = all_no_site(&sites, 100);
    obs.insert("u1@contoso.com".into(), seen(100, Observation::HasSite { url: url("u1@contoso.com") }));
    let limits = Limits::default();
    let p = plan(&input(&sites, &obs, None, 100, &limits));
    let batch = p.enqueue.unwrap().batch;
    assert_eq!(batch.users, vec!["u0@contoso.com", "u2@contoso.com", "u3@contoso.com"]);
    let u1 = p.site_updates.iter().find(|u| u.user == "u1@contoso.com").unwrap();
    assert_eq!(u1.status.phase, Some(SitePhase::Ready));
    assert_eq!(u1.status.site_url.as_deref(), Some(url("u1@contoso.com").as_str()));
    assert_eq!(ready_of(&u1.status).reason, reason::PROVISIONED);
}

#[test]
fn a_stale_no_site_is_checked_again_before_enqueue() {
    let sites = users(2);
    let obs = all_no_site(&sites, 0);
    let limits = Limits { enqueue_recheck_after: SignedDuration::from_mins(10), ..Limits::default() };
    let p = plan(&input(&sites, &obs, None, 3600, &limits));
    assert!(p.enqueue.is_none());
    assert_eq!(p.observe_now, vec!["u0@contoso.com", "u1@contoso.com"]);
}

#[test]
fn the_last_user_of_a_new_batch_is_checked_within_the_poll_interval() {
    let sites = users(3);
    let mut obs = all_no_site(&sites, 0);
    let limits = Limits::default();
    // An hour-old "no site" is fresh enough for the others, not for the last user.
    let p = plan(&input(&sites, &obs, None, 3600, &limits));
    assert!(p.enqueue.is_none());
    assert_eq!(p.observe_now, vec!["u2@contoso.com"]);
    // It got a site meanwhile (signed in to OneDrive): the batch ends one user earlier, and
    // that user is the one checked now.
    obs.insert("u2@contoso.com".into(), seen(3600, Observation::HasSite { url: url("u2@contoso.com") }));
    let p = plan(&input(&sites, &obs, None, 3600, &limits));
    assert!(p.enqueue.is_none());
    assert_eq!(p.observe_now, vec!["u1@contoso.com"]);
    obs.insert("u1@contoso.com".into(), seen(3600, Observation::NoSite));
    let p = plan(&input(&sites, &obs, None, 3600, &limits));
    let batch = p.enqueue.expect("sent once the last user is known to lack a site").batch;
    assert_eq!(batch.users, vec!["u0@contoso.com", "u1@contoso.com"]);
    assert_eq!(batch.last_user, "u1@contoso.com");
}

#[test]
fn a_last_user_whose_lookup_fails_waits_and_the_batch_ends_before_them() {
    let sites = users(3);
    let mut obs = all_no_site(&sites, 0);
    obs.insert("u2@contoso.com".into(), seen(3600, Observation::Unknown));
    obs.insert("u1@contoso.com".into(), seen(3600, Observation::NoSite));
    let limits = Limits::default();
    let p = plan(&input(&sites, &obs, None, 3600, &limits));
    let batch = p.enqueue.expect("the others go").batch;
    assert_eq!(batch.last_user, "u1@contoso.com");
    assert_eq!(batch.users.len(), 2);
}

#[test]
fn the_would_be_last_user_is_asked_for_with_the_cycles_first_lookups() {
    let sites = users(3);
    let obs = all_no_site(&sites, 0);
    let limits = Limits::default();
    let i = input(&sites, &obs, None, 3600, &limits);
    assert_eq!(targets(&i), vec!["u2@contoso.com"]);
    // While a batch is in flight only its last user is polled.
    let b = in_flight(&["u0@contoso.com"], 1, 3000);
    assert_eq!(targets(&input(&sites, &obs, Some(&b), 3600, &limits)), vec!["u0@contoso.com"]);
}

fn in_flight(users: &[&str], id: i64, at: i64) -> BatchStatus {
    BatchStatus {
        id,
        users: users.iter().map(|u| u.to_string()).collect(),
        size: users.len() as i32,
        last_user: users.last().unwrap().to_string(),
        enqueued_at: Time(t(at)),
        sent: true,
        users_record: None,
    }
}

#[test]
fn while_a_batch_is_in_flight_only_its_last_user_is_observed_and_nothing_is_enqueued() {
    let sites = users(5);
    let b = in_flight(&["u0@contoso.com", "u1@contoso.com"], 3, 100);
    let mut obs = all_no_site(&sites, 150);
    obs.insert("u0@contoso.com".into(), seen(150, Observation::HasSite { url: url("u0") }));
    let limits = Limits::default();
    let i = input(&sites, &obs, Some(&b), 200, &limits);
    assert_eq!(targets(&i), vec!["u1@contoso.com"]);
    let p = plan(&i);
    assert!(p.enqueue.is_none());
    assert_eq!(p.batch.as_ref(), Some(&b));
    assert!(p.finished.is_none());
    assert_eq!(p.requeue_after, limits.poll_interval);
    let u1 = p.site_updates.iter().find(|u| u.user == "u1@contoso.com").unwrap();
    assert_eq!(u1.status.phase, Some(SitePhase::SpsSiteError));
    assert_eq!(ready_of(&u1.status).reason, reason::SPSSITEERROR);
    assert_eq!(u1.status.batch, Some(3));
    assert_eq!(u1.status.enqueued_at, Some(Time(t(100))));
}

#[test]
fn once_the_last_user_has_a_site_the_whole_batch_is_observed_once_then_the_next_batch_goes() {
    let sites = users(4);
    let b = in_flight(&["u0@contoso.com", "u1@contoso.com"], 1, 100);
    let limits = Limits::default();
    // Round 1: the last user has a site; u0 was last seen before that.
    let mut obs = all_no_site(&sites, 90);
    obs.insert("u1@contoso.com".into(), seen(200, Observation::HasSite { url: url("u1") }));
    let p = plan(&input(&sites, &obs, Some(&b), 200, &limits));
    assert!(p.enqueue.is_none() && p.finished.is_none());
    // u2 and u3 were seen without a site recently enough to be enqueued; u0 needs a look, and
    // so does u3, the next batch's last user, last seen more than a poll interval ago.
    assert_eq!(p.observe_now, vec!["u0@contoso.com", "u3@contoso.com"]);
    // Round 2: observed.
    obs.insert("u0@contoso.com".into(), seen(200, Observation::HasSite { url: url("u0") }));
    obs.insert("u2@contoso.com".into(), seen(200, Observation::NoSite));
    obs.insert("u3@contoso.com".into(), seen(200, Observation::NoSite));
    let p = plan(&input(&sites, &obs, Some(&b), 200, &limits));
    assert_eq!(p.finished, Some((1, BatchOutcome::Completed)));
    let next = p.enqueue.unwrap().batch;
    assert_eq!(next.id, 2);
    assert_eq!(next.users, vec!["u2@contoso.com", "u3@contoso.com"]);
    assert_eq!(p.users.ready, 2);
}

#[test]
fn a_recorded_but_unsent_batch_is_sent_again_and_nothing_new_is_formed() {
    let sites = users(3);
    let mut b = in_flight(&["u0@contoso.com"], 4, 100);
    b.sent = false;
    let obs = all_no_site(&sites, 100);
    let limits = Limits::default();
    let p = plan(&input(&sites, &obs, Some(&b), 120, &limits));
    let e = p.enqueue.unwrap();
    assert!(e.resend);
    assert_eq!(e.batch, b);
    assert_eq!(p.last_batch_id, 4);
}

#[test]
fn two_resources_naming_one_user_share_one_enqueue_and_one_phase() {
    let sites = vec![
        site("a", "alice", "Alice@Contoso.com", 5),
        site("b", "alice-again", "alice@contoso.com", 1),
        site("a", "bob", "bob@contoso.com", 3),
    ];
    let obs: Observations = [
        ("alice@contoso.com".into(), seen(10, Observation::NoSite)),
        ("bob@contoso.com".into(), seen(10, Observation::NoSite)),
    ]
    .into_iter()
    .collect();
    let limits = Limits::default();
    let p = plan(&input(&sites, &obs, None, 10, &limits));
    // alice's oldest resource is older than bob's: she goes first, with that resource's spelling.
    assert_eq!(p.enqueue.unwrap().batch.users, vec!["alice@contoso.com", "bob@contoso.com"]);
    assert_eq!(p.users.desired, 2);
    let phases: Vec<_> = p
        .site_updates
        .iter()
        .filter(|u| key(&u.user) == "alice@contoso.com")
        .map(|u| u.status.clone())
        .collect();
    assert_eq!(phases.len(), 2);
    assert_eq!(phases[0], phases[1]);
}

#[test]
fn an_unchanged_world_writes_nothing_and_keeps_transition_times() {
    let mut sites = users(3);
    let mut obs = all_no_site(&sites, 10);
    obs.insert("u2@contoso.com".into(), seen(10, Observation::HasSite { url: url("u2") }));
    let limits = Limits { batch_size: 1, ..Limits::default() };
    let b = in_flight(&["u0@contoso.com"], 1, 10);
    let p = plan(&input(&sites, &obs, Some(&b), 10, &limits));
    apply(&mut sites, &p);
    let before = sites.clone();
    let p = plan(&input(&sites, &obs, Some(&b), 500, &limits));
    assert!(p.site_updates.is_empty(), "{:?}", p.site_updates);
    assert!(p.enqueue.is_none());
    assert_eq!(sites, before);
}

#[test]
fn last_transition_time_moves_only_when_the_status_flips() {
    let mut sites = users(1);
    let limits = Limits::default();
    let obs = Observations::default();
    let p = plan(&input(&sites, &obs, None, 10, &limits));
    apply(&mut sites, &p);
    let first = ready_of(&status_of(&sites[0])).last_transition_time.clone();
    assert_eq!(first, Time(t(10)));
    // Observed without a site: Unknown -> False moves it; the Stalled condition stays False.
    let obs = all_no_site(&sites, 20);
    let mut b = in_flight(&["u0@contoso.com"], 1, 30);
    b.sent = true;
    let p = plan(&input(&sites, &obs, None, 20, &limits));
    apply(&mut sites, &p);
    let st = &status_of(&sites[0]);
    assert_eq!(ready_of(st).last_transition_time, Time(t(20)));
    let stalled = find_condition(&st.conditions, condition_type::STALLED).unwrap();
    assert_eq!(stalled.last_transition_time, Time(t(10)));
    // Enqueued: False -> False (reason changes) keeps the time.
    assert_eq!(st.phase, Some(SitePhase::SpsSiteError));
    let p = plan(&input(&sites, &obs, Some(&b), 40, &limits));
    apply(&mut sites, &p);
    assert_eq!(ready_of(&status_of(&sites[0])).last_transition_time, Time(t(20)));
}

#[test]
fn directory_refusals_fail_with_their_reason_and_stall_without_touching_others() {
    let sites = users(3);
    let mut obs = all_no_site(&sites, 10);
    obs.insert("u0@contoso.com".into(), seen(10, Observation::UserNotFound));
    obs.insert("u1@contoso.com".into(), seen(10, Observation::UserNotLicensed));
    let limits = Limits::default();
    let p = plan(&input(&sites, &obs, None, 10, &limits));
    let by_user: HashMap<_, _> = p.site_updates.iter().map(|u| (u.user.as_str(), &u.status)).collect();
    assert_eq!(ready_of(by_user["u0@contoso.com"]).reason, reason::USER_NOT_FOUND);
    assert_eq!(ready_of(by_user["u1@contoso.com"]).reason, reason::USER_NOT_LICENSED);
    for s in [by_user["u0@contoso.com"], by_user["u1@contoso.com"]] {
        assert_eq!(s.phase, Some(SitePhase::Failed));
        assert_eq!(find_condition(&s.conditions, condition_type::STALLED).unwrap().status, "True");
        assert_eq!(find_condition(&s.conditions, condition_type::RECONCILING).unwrap().status, "False");
    }
    assert_eq!(p.enqueue.unwrap().batch.users, vec!["u2@contoso.com"]);
    assert_eq!(p.users.failed, 2);
}

#[test]
fn a_batch_times_out_into_provisioning_timed_out_and_is_retried_in_a_later_batch() {
    let mut sites = users(2);
    let limits = Limits { provisioning_timeout: SignedDuration::from_hours(1), ..Limits::default() };
    let b = in_flight(&["u0@contoso.com", "u1@contoso.com"], 1, 0);
    let obs = all_no_site(&sites, 3500);
    let p = plan(&input(&sites, &obs, Some(&b), 3600, &limits));
    assert_eq!(p.finished, Some((1, BatchOutcome::TimedOut)));
    assert!(p.enqueue.is_none(), "a timeout is shown before the retry");
    for u in &p.site_updates {
        assert_eq!(u.status.phase, Some(SitePhase::Failed));
        assert_eq!(ready_of(&u.status).reason, reason::PROVISIONING_TIMED_OUT);
    }
    apply(&mut sites, &p);
    let obs = all_no_site(&sites, 3700);
    let mut i = input(&sites, &obs, None, 3700, &limits);
    i.last_batch_id = p.last_batch_id;
    let p = plan(&i);
    let e = p.enqueue.expect("retried");
    assert_eq!(e.batch.id, 2);
    assert_eq!(e.batch.users.len(), 2);
}

#[test]
fn a_ready_user_whose_site_vanished_goes_back_to_pending() {
    let mut sites = users(1);
    let limits = Limits::default();
    let obs: Observations =
        [("u0@contoso.com".into(), seen(10, Observation::HasSite { url: url("u0") }))].into_iter().collect();
    let p = plan(&input(&sites, &obs, None, 10, &limits));
    apply(&mut sites, &p);
    // Not due for a drift re-check yet.
    let empty = Observations::default();
    assert!(targets(&input(&sites, &empty, None, 100, &limits)).is_empty());
    let day = 24 * 3600 + 10;
    let drift = targets(&input(&sites, &empty, None, day, &limits));
    assert_eq!(drift, vec!["u0@contoso.com"]);
    assert!(drift[0].confirm, "absent from a listing is not enough to call a site gone");
    let obs = all_no_site(&sites, day);
    let p = plan(&input(&sites, &obs, None, day, &limits));
    let st = &p.site_updates[0].status;
    assert_eq!(st.phase, Some(SitePhase::SpsSiteError), "vanished, then enqueued again");
    assert!(p.enqueue.is_some());
}

/// A cycle writes at most `site_updates_per_cycle` statuses, in queue order, and comes back a
/// second later for the rest; nothing is lost or written twice.
#[test]
fn statuses_beyond_a_cycles_share_are_written_by_the_next_cycles() {
    let mut sites = users(5);
    let limits = Limits { site_updates_per_cycle: 2, ..Limits::default() };
    let obs: Observations = sites
        .iter()
        .map(|s| (user_key(&s.user), seen(10, Observation::HasSite { url: url(&s.user) })))
        .collect();
    let mut written = Vec::new();
    for left in [5, 3, 1] {
        let p = plan(&input(&sites, &obs, None, 10, &limits));
        assert_eq!(p.site_updates.len(), left.min(2));
        assert_eq!(
            p.requeue_after == SignedDuration::from_secs(1),
            left > 2,
            "back at once while more are left"
        );
        written.extend(p.site_updates.iter().map(|u| u.user.clone()));
        apply(&mut sites, &p);
    }
    assert_eq!(written, ["u0", "u1", "u2", "u3", "u4"].map(|u| format!("{u}@contoso.com")));
    let p = plan(&input(&sites, &obs, None, 10, &limits));
    assert!(p.site_updates.is_empty() && p.requeue_after > SignedDuration::from_secs(1));
}

/// Users refused at different times in one hour are re-checked together at the next hour, so
/// one tenant-wide listing answers for all of them; none waits more than an hour.
#[test]
fn refused_users_fall_due_for_a_recheck_together() {
    let mut sites = users(3);
    let limits = Limits::default();
    let obs: Observations = [
        ("u0@contoso.com".into(), seen(3_610, Observation::UserNotLicensed)),
        ("u1@contoso.com".into(), seen(5_000, Observation::SignInBlocked)),
        ("u2@contoso.com".into(), seen(7_190, Observation::UserNotFound)),
    ]
    .into_iter()
    .collect();
    let p = plan(&input(&sites, &obs, None, 7_190, &limits));
    apply(&mut sites, &p);
    assert!(targets(&input(&sites, &obs, None, 7_199, &limits)).is_empty(), "not before the hour");
    let due = targets(&input(&sites, &obs, None, 7_200, &limits));
    assert_eq!(due, vec!["u0@contoso.com", "u1@contoso.com", "u2@contoso.com"], "oldest first, together");
}

#[test]
fn tenant_problems_stop_all_work_and_explain_themselves_on_waiting_sites() {
    let sites = users(2);
    let mut obs = all_no_site(&sites, 10);
    obs.insert("u1@contoso.com".into(), seen(10, Observation::HasSite { url: url("u1") }));
    let limits = Limits::default();
    let problem = TenantProblem {
        reason: crate::api::TenantReason::CredentialsInvalid,
        message: "Secret contoso-app-cert has no tls.key".into(),
        stalled: true,
    };
    let mut i = input(&sites, &obs, None, 10, &limits);
    i.tenant_problem = Some(&problem);
    assert!(targets(&i).is_empty());
    let p = plan(&i);
    assert!(p.enqueue.is_none());
    let by_user: HashMap<_, _> = p.site_updates.iter().map(|u| (u.user.as_str(), &u.status)).collect();
    let waiting = ready_of(by_user["u0@contoso.com"]);
    assert_eq!(waiting.reason, reason::TENANT_NOT_READY);
    assert!(waiting.message.contains("CredentialsInvalid") && waiting.message.contains("tls.key"));
    assert_eq!(ready_of(by_user["u1@contoso.com"]).reason, reason::PROVISIONED);
}

#[test]
fn throttling_defers_everything_until_the_service_allows() {
    let sites = users(2);
    let obs = all_no_site(&sites, 10);
    let limits = Limits::default();
    let mut i = input(&sites, &obs, None, 10, &limits);
    i.throttled_until = Some(t(70));
    assert!(targets(&i).is_empty());
    let p = plan(&i);
    assert!(p.enqueue.is_none());
    assert_eq!(p.requeue_after, SignedDuration::from_secs(60));
}

#[test]
fn stragglers_of_a_finished_batch_are_polled_until_ready() {
    let mut sites = users(2);
    let limits = Limits::default();
    let b = in_flight(&["u0@contoso.com", "u1@contoso.com"], 1, 0);
    let obs: Observations = [
        ("u0@contoso.com".into(), seen(100, Observation::NoSite)),
        ("u1@contoso.com".into(), seen(100, Observation::HasSite { url: url("u1") })),
    ]
    .into_iter()
    .collect();
    let p = plan(&input(&sites, &obs, Some(&b), 100, &limits));
    assert_eq!(p.finished, Some((1, BatchOutcome::Completed)));
    assert!(p.enqueue.is_none(), "u0 is still provisioning, not a candidate");
    apply(&mut sites, &p);
    assert_eq!(status_of(&sites[0]).phase, Some(SitePhase::SpsSiteError));
    let i = input(&sites, &obs, None, 200, &limits);
    assert_eq!(targets(&i), vec!["u0@contoso.com"]);
    assert_eq!(plan(&i).requeue_after, limits.poll_interval);
}

#[test]
fn stragglers_are_looked_at_less_often_the_longer_they_wait() {
    let mut sites = users(1);
    let limits = Limits::default();
    let b = in_flight(&["u0@contoso.com"], 1, 0);
    let obs = Observations::from_iter([("u0@contoso.com".into(), seen(10, Observation::NoSite))]);
    // Provisioning since second 0, as the batch recorded it.
    let p = plan(&input(&sites, &obs, Some(&b), 10, &limits));
    apply(&mut sites, &p);
    let due = |obs_at: i64, now: i64| {
        let obs = Observations::from_iter([("u0@contoso.com".into(), seen(obs_at, Observation::NoSite))]);
        targets(&input(&sites, &obs, None, now, &limits)) == vec!["u0@contoso.com"]
    };
    // Early on, every poll interval.
    assert!(!due(300, 359) && due(300, 360));
    // Two hours in, every 12 minutes.
    assert!(!due(7200, 7200 + 719) && due(7200, 7200 + 720));
    // Twenty hours in, hourly at most.
    assert!(!due(72_000, 72_000 + 3599) && due(72_000, 72_000 + 3600));
    // Straggler polls may come from a listing; the look before a timeout is the user's own.
    let poll = targets(&input(
        &sites,
        &Observations::from_iter([("u0@contoso.com".into(), seen(300, Observation::NoSite))]),
        None,
        360,
        &limits,
    ));
    assert_eq!(poll, vec![lookup("u0@contoso.com", true)]);
    // When the timeout arrives it is looked at before being reported timed out, and a site
    // found then is Ready, not a timeout.
    assert!(due(86_000, 86_400));
    let last = Observations::from_iter([("u0@contoso.com".into(), seen(86_000, Observation::NoSite))]);
    assert_eq!(targets(&input(&sites, &last, None, 86_400, &limits)), vec![Lookup::exact("u0@contoso.com")]);
    let found = Observations::from_iter([(
        "u0@contoso.com".into(),
        seen(86_400, Observation::HasSite { url: url("u0@contoso.com") }),
    )]);
    let p = plan(&input(&sites, &found, None, 86_400, &limits));
    assert_eq!(p.site_updates[0].status.phase, Some(SitePhase::Ready));
    // After a restart nothing is remembered: looked at once at once.
    assert_eq!(
        targets(&input(&sites, &Observations::default(), None, 72_001, &limits)),
        vec!["u0@contoso.com"]
    );
}

#[test]
fn a_crash_between_recording_and_writing_sites_still_reports_the_batch() {
    // The batch is in the tenant status; the sites were never written (no status at all).
    let sites = users(2);
    let b = in_flight(&["u0@contoso.com", "u1@contoso.com"], 1, 50);
    let memory = Observations::default();
    let limits = Limits::default();
    let i = input(&sites, &memory, Some(&b), 60, &limits);
    let p = plan(&i);
    assert!(p.enqueue.is_none());
    for u in &p.site_updates {
        assert_eq!(u.status.phase, Some(SitePhase::SpsSiteError));
    }
}

#[test]
fn a_missing_tenant_is_named_on_the_site() {
    let s = site("ns", "a", "a@contoso.com", 0);
    let st = tenant_not_found_status(&s, "fabrikam", t(5));
    let ready = ready_of(&st);
    assert_eq!(ready.reason, reason::TENANT_NOT_FOUND);
    assert!(ready.message.contains("fabrikam"));
    assert_eq!(st.observed_generation, Some(1));
}

#[test]
fn limits_come_from_the_spec_with_errors_that_name_the_field() {
    let mut spec: OneDriveTenantSpec = serde_yaml::from_str(
        "tenantId: contoso.onmicrosoft.com\nadminUrl: https://contoso-admin.sharepoint.com\nauth: {workloadIdentity: {}}\n",
    )
    .unwrap();
    let l = Limits::from_spec(&spec).unwrap();
    assert_eq!(l.batch_size, 200);
    assert_eq!(l.poll_interval, SignedDuration::from_secs(60));
    assert_eq!(l.provisioning_timeout, SignedDuration::from_hours(24));
    spec.poll_interval = "soon".into();
    assert!(Limits::from_spec(&spec).unwrap_err().contains("spec.pollInterval"));
    spec.poll_interval = "0s".into();
    assert!(Limits::from_spec(&spec).unwrap_err().contains("greater than zero"));
    spec.poll_interval = "1m30s".into();
    spec.batch_size = 201;
    assert!(Limits::from_spec(&spec).unwrap_err().contains("spec.batchSize"));
}

#[test]
fn absurd_times_in_statuses_do_not_panic() {
    let mut sites = users(1);
    sites[0].status = Some(SiteStatus::from(OneDriveSiteStatus {
        observed_generation: Some(1),
        phase: Some(SitePhase::SpsSiteError),
        enqueued_at: Some(Time(Timestamp::MAX)),
        ..Default::default()
    }));
    let obs = Observations::default();
    let limits = Limits::default();
    let i = input(&sites, &obs, None, 0, &limits);
    let _ = targets(&i);
    let p = plan(&i);
    assert_eq!(p.users.provisioning, 1);
}

#[test]
fn a_planner_asked_again_decides_what_a_fresh_one_decides() {
    let sites = users(3);
    let obs = all_no_site(&sites, 0);
    let limits = Limits::default();
    let mut planner = Planner::new(&sites);
    let i = input(&sites, &obs, None, 0, &limits);
    let b = in_flight(&["u0@contoso.com"], 1, 0);
    let _ = planner.plan(&plan_input(&obs, Some(&b), 0, &limits));
    let p = planner.plan(&i);
    assert_eq!(p, plan(&i));
    assert_eq!(p.enqueue.as_ref().map(|e| e.batch.users.len()), Some(3));
}

#[test]
fn unchanged_messages_are_reused_and_changed_ones_rebuilt() {
    let mut sites = users(2);
    let limits = Limits::default();
    let obs: Observations = sites
        .iter()
        .map(|s| (user_key(&s.user), seen(0, Observation::HasSite { url: url(&s.user) })))
        .collect();
    let p = plan(&input(&sites, &obs, None, 0, &limits));
    apply(&mut sites, &p);
    assert!(plan(&input(&sites, &obs, None, 10, &limits)).site_updates.is_empty());
    // The site moved: same reason, new message.
    let mut moved = obs.clone();
    moved.insert(
        user_key(&sites[0].user),
        seen(20, Observation::HasSite { url: "https://contoso-my.sharepoint.com/personal/moved/".into() }),
    );
    let p = plan(&input(&sites, &moved, None, 20, &limits));
    assert_eq!(p.site_updates.len(), 1);
    let ready = ready_of(&p.site_updates[0].status);
    assert_eq!(
        ready.message,
        format!(
            "the OneDrive exists at https://contoso-my.sharepoint.com/personal/moved/ (first seen {})",
            t(0)
        )
    );
}

#[test]
fn a_message_is_reused_only_when_it_reads_exactly_the_same() {
    let mut sites = users(1);
    let obs = Observations::from_iter([(
        user_key(&sites[0].user),
        seen(0, Observation::HasSite { url: "https://x/a".into() }),
    )]);
    let limits = Limits::default();
    let p = plan(&input(&sites, &obs, None, 0, &limits));
    apply(&mut sites, &p);
    let mut users = Users::new(&sites);
    let u = &mut users.marked(None).0[0];
    u.read_statuses();
    let first = t(0);
    let same = text(u, format_args!("the OneDrive exists at {} (first seen {first})", "https://x/a"));
    assert!(matches!(same, Cow::Borrowed(_)));
    for other in ["https://x/a/", "https://x/", "https://x/b", ""] {
        let t = text(u, format_args!("the OneDrive exists at {other} (first seen {first})"));
        assert!(matches!(t, Cow::Owned(_)), "{other}");
        assert_eq!(t, format!("the OneDrive exists at {other} (first seen {first})"));
    }
}

#[test]
fn durations_print_the_way_the_spec_writes_them() {
    assert_eq!(format_duration(SignedDuration::from_secs(90)), "1m30s");
    assert_eq!(format_duration(SignedDuration::from_hours(24)), "24h");
    assert_eq!(format_duration(SignedDuration::ZERO), "0s");
}

#[test]
fn the_first_poll_of_a_batch_waits_for_most_of_the_previous_batch_duration() {
    let sites = users(3);
    let b = in_flight(&["u0@contoso.com"], 2, 100);
    let obs = all_no_site(&sites, 100);
    let limits = Limits::default();
    let mut i = input(&sites, &obs, Some(&b), 100, &limits);
    assert_eq!(plan(&i).requeue_after, limits.poll_interval, "unknown duration: poll every interval");
    i.typical_batch = Some(SignedDuration::from_mins(20));
    assert_eq!(plan(&i).requeue_after, SignedDuration::from_mins(18));
    i.now = t(100 + 18 * 60);
    assert_eq!(plan(&i).requeue_after, limits.poll_interval, "then every interval");
    // A completed batch reports how long it took.
    let mut obs = obs.clone();
    obs.insert("u0@contoso.com".into(), seen(1300, Observation::HasSite { url: url("u0") }));
    let p = plan(&input(&sites, &obs, Some(&b), 1300, &limits));
    assert_eq!(p.batch_duration, Some(SignedDuration::from_secs(1200)));
}

#[test]
fn a_recorded_but_unsent_batch_never_times_out() {
    let sites = users(2);
    let mut b = in_flight(&["u0@contoso.com", "u1@contoso.com"], 1, 0);
    b.sent = false;
    let obs = all_no_site(&sites, 100);
    let limits = Limits { provisioning_timeout: SignedDuration::from_mins(15), ..Limits::default() };
    let p = plan(&input(&sites, &obs, Some(&b), 7200, &limits));
    assert!(p.enqueue.as_ref().is_some_and(|e| e.resend));
    assert!(p.finished.is_none());
    assert!(p.site_updates.iter().all(|u| u.status.phase == Some(SitePhase::SpsSiteError)));
}

#[test]
fn a_settled_status_is_not_undone_by_its_batch_when_nothing_new_is_known() {
    let mut sites = users(2);
    let obs: Observations =
        [("u1@contoso.com".into(), seen(10, Observation::HasSite { url: url("u1") }))].into_iter().collect();
    let limits = Limits::default();
    let b = in_flight(&["u0@contoso.com", "u1@contoso.com"], 1, 0);
    let p = plan(&input(&sites, &obs, Some(&b), 10, &limits));
    apply(&mut sites, &p);
    assert_eq!(status_of(&sites[1]).phase, Some(SitePhase::Ready));
    // A restart: nothing in memory, the batch still in flight.
    let empty = Observations::default();
    let p = plan(&input(&sites, &empty, Some(&b), 20, &limits));
    assert!(p.site_updates.iter().all(|u| u.user != "u1@contoso.com"), "u1 stays Ready");
}

#[test]
fn a_user_whose_lookup_keeps_failing_does_not_hold_up_the_batch() {
    let sites = users(3);
    let mut obs = all_no_site(&sites, 100);
    obs.insert("u0@contoso.com".into(), seen(100, Observation::Unknown));
    let limits = Limits::default();
    let p = plan(&input(&sites, &obs, None, 100, &limits));
    assert!(p.observe_now.is_empty(), "{:?}", p.observe_now);
    assert_eq!(p.enqueue.unwrap().batch.users, vec!["u1@contoso.com", "u2@contoso.com"]);
    // After a poll interval it is tried again (with the would-be last user, now stale too).
    let p = plan(&input(&sites, &obs, None, 100 + 61, &limits));
    assert_eq!(p.observe_now, vec!["u0@contoso.com", "u2@contoso.com"]);
}

// ---------------------------------------------------------------------------------------------
// Truthful outcomes: refusals, the batch gate, profile verdicts, failing lookups, dated messages.

fn profile(code: i64) -> Observation {
    Observation::Profile(profile_state(code))
}

fn lookup(user: &str, profile: bool) -> Lookup {
    Lookup { user: user.into(), profile, confirm: false }
}

#[test]
fn sign_in_blocked_users_are_never_sent_and_stall_with_their_reason() {
    let mut sites = users(3);
    let mut obs = all_no_site(&sites, 10);
    obs.insert("u2@contoso.com".into(), seen(10, Observation::SignInBlocked));
    let limits = Limits::default();
    let p = plan(&input(&sites, &obs, None, 10, &limits));
    assert_eq!(p.enqueue.as_ref().unwrap().batch.users, vec!["u0@contoso.com", "u1@contoso.com"]);
    let blocked = p.site_updates.iter().find(|u| u.user == "u2@contoso.com").unwrap();
    assert_eq!(blocked.status.phase, Some(SitePhase::Failed));
    let ready = ready_of(&blocked.status);
    assert_eq!(ready.reason, reason::SIGN_IN_BLOCKED);
    assert!(ready.message.contains("accountEnabled is false"), "{}", ready.message);
    assert!(ready.message.contains(&t(10).to_string()), "dated: {}", ready.message);
    apply(&mut sites, &p);
    // Re-checked on the slow schedule: not within the hour, then once.
    let later = |now: i64| targets(&input(&sites, &obs, p.batch.as_ref(), now, &limits));
    assert!(!later(1000).iter().any(|l| l.user == "u2@contoso.com"));
    assert!(later(3610).iter().any(|l| l.user == "u2@contoso.com"));
}

#[test]
fn a_refused_last_user_hands_the_gate_to_the_user_before_them() {
    let sites = users(4);
    let b = in_flight(&["u0@contoso.com", "u1@contoso.com", "u2@contoso.com"], 1, 100);
    let limits = Limits::default();
    let mut obs = all_no_site(&sites, 90);
    // The last user's profile shows a refusal; u1 was last seen before it.
    obs.insert("u2@contoso.com".into(), seen(700, profile(4099)));
    let i = input(&sites, &obs, Some(&b), 700, &limits);
    assert_eq!(targets(&i)[0], Lookup::exact("u1@contoso.com"), "the gate is polled with its profile");
    let p = plan(&i);
    assert!(p.finished.is_none() && p.enqueue.is_none());
    assert_eq!(p.observe_now[0], Lookup::exact("u1@contoso.com"), "the new gate is looked at at once");
    let u2 = p.site_updates.iter().find(|u| u.user == "u2@contoso.com").unwrap();
    assert_eq!(ready_of(&u2.status).reason, reason::SITE_CREATION_NOT_PERMITTED);
    assert!(ready_of(&u2.status).message.contains("SelfServiceSiteCreationDisabled (4099)"));
    // The new gate has its site: the batch is done (once everyone was looked at).
    obs.insert("u1@contoso.com".into(), seen(700, Observation::HasSite { url: url("u1") }));
    obs.insert("u0@contoso.com".into(), seen(700, Observation::HasSite { url: url("u0") }));
    obs.insert("u3@contoso.com".into(), seen(700, Observation::NoSite));
    let p = plan(&input(&sites, &obs, Some(&b), 700, &limits));
    assert_eq!(p.finished, Some((1, BatchOutcome::Completed)));
    assert_eq!(p.enqueue.unwrap().batch.users, vec!["u3@contoso.com"]);
}

#[test]
fn a_batch_whose_users_were_all_refused_is_done() {
    let sites = users(3);
    let b = in_flight(&["u0@contoso.com", "u1@contoso.com"], 1, 100);
    let limits = Limits::default();
    let mut obs = all_no_site(&sites, 700);
    // Refused at different times: the batch is done at once, not looked at again and again.
    obs.insert("u0@contoso.com".into(), seen(600, profile(8195)));
    obs.insert("u1@contoso.com".into(), seen(700, Observation::SignInBlocked));
    let p = plan(&input(&sites, &obs, Some(&b), 700, &limits));
    assert!(p.observe_now.is_empty(), "{:?}", p.observe_now);
    assert_eq!(p.finished, Some((1, BatchOutcome::Completed)));
    assert_eq!(p.enqueue.unwrap().batch.users, vec!["u2@contoso.com"]);
    let reasons: HashMap<&str, String> =
        p.site_updates.iter().map(|u| (u.user.as_str(), ready_of(&u.status).reason.clone())).collect();
    assert_eq!(reasons["u0@contoso.com"], reason::PROVISIONING_FAILED);
    assert_eq!(reasons["u1@contoso.com"], reason::SIGN_IN_BLOCKED);
}

#[test]
fn profile_verdicts_count_only_for_users_this_resource_sent() {
    // Remembered from before the resource was re-created (to try again): not a verdict now.
    let sites = users(1);
    let obs = Observations::from_iter([("u0@contoso.com".into(), seen(10, profile(4099)))]);
    let limits = Limits::default();
    let i = input(&sites, &obs, None, 20, &limits);
    let p = plan(&i);
    assert_eq!(p.site_updates[0].status.phase, Some(SitePhase::Pending));
    assert_eq!(p.observe_now, vec!["u0@contoso.com"], "looked at again before it may be sent");
}

#[test]
fn a_profile_verdict_is_not_undone_by_a_lookup_that_cannot_see_it() {
    let mut sites = users(1);
    let b = in_flight(&["u0@contoso.com"], 1, 100);
    let limits = Limits::default();
    let mut obs = Observations::from_iter([("u0@contoso.com".into(), seen(700, profile(4099)))]);
    let p = plan(&input(&sites, &obs, Some(&b), 700, &limits));
    apply(&mut sites, &p);
    assert_eq!(status_of(&sites[0]).phase, Some(SitePhase::Failed));
    // An hour on it is re-checked with its profile.
    let i = input(&sites, &obs, None, 4400, &limits);
    assert_eq!(targets(&i), vec![lookup("u0@contoso.com", true)]);
    // The profile was not read this time (a bounded cycle): no site, nothing else known.
    obs.insert("u0@contoso.com".into(), seen(4400, Observation::NoSite));
    let p = plan(&input(&sites, &obs, None, 4400, &limits));
    assert!(p.site_updates.is_empty() && p.enqueue.is_none(), "{:?}", p.site_updates);
    // The same verdict again: nothing changes either.
    obs.insert("u0@contoso.com".into(), seen(8000, profile(4099)));
    assert!(plan(&input(&sites, &obs, None, 8000, &limits)).site_updates.is_empty());
    // The profile changed (reset by an administrator): the user waits for a batch again.
    obs.insert("u0@contoso.com".into(), seen(9000, profile(0)));
    let p = plan(&input(&sites, &obs, None, 9000, &limits));
    assert_eq!(p.enqueue.unwrap().batch.users, vec!["u0@contoso.com"]);
}

#[test]
fn enqueued_users_without_a_site_are_looked_up_with_their_profile() {
    let mut sites = users(2);
    let limits = Limits::default();
    let b = in_flight(&["u0@contoso.com", "u1@contoso.com"], 1, 0);
    let obs: Observations = [
        ("u0@contoso.com".into(), seen(50, Observation::NoSite)),
        ("u1@contoso.com".into(), seen(100, Observation::HasSite { url: url("u1") })),
    ]
    .into_iter()
    .collect();
    // The batch's gate has a site: the rest of the batch is looked at once, profiles included.
    let p = plan(&input(&sites, &obs, Some(&b), 100, &limits));
    assert_eq!(p.observe_now, vec![lookup("u0@contoso.com", true)]);
    let obs: Observations = [
        ("u0@contoso.com".into(), seen(100, profile(1))),
        ("u1@contoso.com".into(), seen(100, Observation::HasSite { url: url("u1") })),
    ]
    .into_iter()
    .collect();
    let p = plan(&input(&sites, &obs, Some(&b), 100, &limits));
    assert_eq!(p.finished, Some((1, BatchOutcome::Completed)));
    apply(&mut sites, &p);
    assert_eq!(status_of(&sites[0]).phase, Some(SitePhase::SpsSiteError));
    // A straggler is polled with its profile.
    assert_eq!(targets(&input(&sites, &obs, None, 200, &limits)), vec![lookup("u0@contoso.com", true)]);
}

#[test]
fn lookups_that_keep_failing_become_lookup_failing_naming_the_answer() {
    let mut sites = users(1);
    let limits = Limits::default();
    let failed = |at: i64, times: u32| {
        let o = Observation::LookupFailed { status: 500, code: "generalException".into() };
        Observations::from_iter([(
            "u0@contoso.com".into(),
            Observed { at: t(at), observation: o, times, location: Default::default() },
        )])
    };
    let p = plan(&input(&sites, &failed(10, 2), None, 10, &limits));
    apply(&mut sites, &p);
    let st = &status_of(&sites[0]);
    assert_eq!(ready_of(st).status, "Unknown");
    assert!(ready_of(st).message.contains("has not answered"), "{}", ready_of(st).message);
    // Retried within a poll interval.
    assert!(
        targets(&input(&sites, &failed(10, 2), None, 71, &limits)).contains(&lookup("u0@contoso.com", false))
    );
    let p = plan(&input(&sites, &failed(71, 3), None, 71, &limits));
    apply(&mut sites, &p);
    let st = &status_of(&sites[0]);
    assert_eq!(st.phase, Some(SitePhase::Pending));
    let ready = ready_of(st);
    assert_eq!(ready.reason, reason::LOOKUP_FAILING);
    assert!(ready.message.contains("HTTP 500 (generalException)"), "{}", ready.message);
    assert!(p.enqueue.is_none());
    // Checked again hourly, not every poll; the status stays as it is meanwhile.
    assert!(targets(&input(&sites, &failed(71, 3), None, 600, &limits)).is_empty());
    assert_eq!(targets(&input(&sites, &failed(71, 3), None, 3671, &limits)), vec!["u0@contoso.com"]);
    assert!(plan(&input(&sites, &failed(3670, 4), None, 3670, &limits)).site_updates.is_empty());
    assert!(
        plan(&input(&sites, &Observations::default(), None, 3700, &limits)).site_updates.is_empty(),
        "after a restart"
    );
    // A usable answer ends it.
    let fine = Observations::from_iter([("u0@contoso.com".into(), seen(3700, Observation::NoSite))]);
    assert_eq!(
        plan(&input(&sites, &fine, None, 3700, &limits)).enqueue.unwrap().batch.users,
        vec!["u0@contoso.com"]
    );
}

#[test]
fn a_pending_message_keeps_the_date_the_state_was_first_observed() {
    let mut sites = users(2);
    let limits = Limits { batch_size: 1, ..Limits::default() };
    let b = in_flight(&["u0@contoso.com"], 1, 0);
    let p = plan(&input(&sites, &all_no_site(&sites, 10), Some(&b), 10, &limits));
    apply(&mut sites, &p);
    let message = ready_of(&status_of(&sites[1])).message.clone();
    assert!(message.contains(&t(10).to_string()), "{message}");
    // Seen again without a site a day later, and after a restart: nothing is written.
    let untouched = |p: Plan| p.site_updates.iter().all(|u| u.user != "u1@contoso.com");
    assert!(untouched(plan(&input(&sites, &all_no_site(&sites, 80_000), Some(&b), 80_000, &limits))));
    assert!(untouched(plan(&input(&sites, &Observations::default(), Some(&b), 80_000, &limits))));
}

#[test]
fn not_checked_yet_is_said_only_before_the_first_lookup() {
    let mut sites = users(1);
    let limits = Limits::default();
    let p = plan(&input(&sites, &Observations::default(), None, 0, &limits));
    apply(&mut sites, &p);
    assert!(ready_of(&status_of(&sites[0])).message.contains("has not been checked"));
    let throttled = Observations::from_iter([("u0@contoso.com".into(), seen(5, Observation::Unknown))]);
    let p = plan(&input(&sites, &throttled, None, 5, &limits));
    let message = &ready_of(&p.site_updates[0].status).message;
    assert!(!message.contains("has not been checked") && message.contains("has not answered"), "{message}");
}

#[test]
fn users_of_a_batch_that_could_not_be_sent_say_so() {
    let sites = users(3);
    let mut b = in_flight(&["u0@contoso.com", "u1@contoso.com"], 2, 100);
    b.sent = false;
    let obs = all_no_site(&sites, 100);
    let limits = Limits::default();
    let mut i = input(&sites, &obs, Some(&b), 120, &limits);
    i.throttled_until = Some(t(300));
    let p = plan(&i);
    assert!(p.enqueue.is_none());
    assert_eq!(p.batch.as_ref(), Some(&b), "kept, to be sent as recorded");
    for u in p.site_updates.iter().filter(|u| u.user != "u2@contoso.com") {
        assert_eq!(u.status.phase, Some(SitePhase::Pending), "{}", u.user);
        assert!(
            ready_of(&u.status).message.contains("not accepted it yet"),
            "{}",
            ready_of(&u.status).message
        );
    }
    // Once the throttling is over, the plan sends it again and says they are enqueued.
    let mut i = input(&sites, &obs, Some(&b), 400, &limits);
    i.throttled_until = None;
    let p = plan(&i);
    assert!(p.enqueue.as_ref().is_some_and(|e| e.resend));
    assert!(
        p.site_updates
            .iter()
            .filter(|u| u.user != "u2@contoso.com")
            .all(|u| u.status.phase == Some(SitePhase::SpsSiteError))
    );
}

#[test]
fn a_profile_verdict_in_the_batch_holds_when_its_profile_is_not_read_again() {
    let mut sites = users(3);
    let b = in_flight(&["u0@contoso.com", "u1@contoso.com"], 1, 100);
    let limits = Limits::default();
    let mut obs = all_no_site(&sites, 90);
    obs.insert("u1@contoso.com".into(), seen(700, profile(4099)));
    let p = plan(&input(&sites, &obs, Some(&b), 700, &limits));
    apply(&mut sites, &p);
    assert_eq!(ready_of(&status_of(&sites[1])).reason, reason::SITE_CREATION_NOT_PERMITTED);
    // A later look whose profile read ran out says only "no site": the verdict holds, and the
    // batch still waits for u0, not for u1.
    obs.insert("u1@contoso.com".into(), seen(760, Observation::NoSite));
    let i = input(&sites, &obs, Some(&b), 760, &limits);
    let p = plan(&i);
    assert!(p.site_updates.iter().all(|u| u.user != "u1@contoso.com"), "{:?}", p.site_updates);
    assert_eq!(targets(&i)[0], Lookup::exact("u0@contoso.com"));
}

/// In a Multi-Geo tenant a user's status names their geo only when it rests on something seen
/// (their preferred location as read): one routed to the central geo for lack of a directory
/// read (a site found by the drive lookup) gets none rather than a guess.
#[test]
fn a_users_geo_is_written_only_when_it_was_seen() {
    let sites = users(2);
    let limits = Limits::default();
    let mut obs = Observations::default();
    obs.insert(
        UserKey::new("u0@contoso.com"),
        Observed::located(None, t(90), Observation::NoSite, DataLocation::Preferred("NAM".into())),
    );
    obs.insert(UserKey::new("u1@contoso.com"), seen(90, Observation::HasSite { url: url("u1@contoso.com") }));
    let mut i = input(&sites, &obs, None, 100, &limits);
    i.input.geo = Some("NAM");
    let p = plan(&i);
    let geo_of = |user: &str| p.site_updates.iter().find(|u| u.user == user).unwrap().status.geo.clone();
    assert_eq!(geo_of("u0@contoso.com").as_deref(), Some("NAM"));
    assert_eq!(geo_of("u1@contoso.com"), None);
    // A single-geo tenant writes no geo at all.
    i.input.geo = None;
    assert!(plan(&i).site_updates.iter().all(|u| u.status.geo.is_none()));
}

/// A user failed by their profile, as the planner leaves them.
fn failed_by_profile(limits: &Limits) -> (Vec<DesiredSite<'static>>, Observations) {
    let mut sites = users(1);
    let b = in_flight(&["u0@contoso.com"], 1, 100);
    let obs = Observations::from_iter([("u0@contoso.com".into(), seen(700, profile(8195)))]);
    let p = plan(&input(&sites, &obs, Some(&b), 700, limits));
    apply(&mut sites, &p);
    assert_eq!(ready_of(&status_of(&sites[0])).reason, reason::PROVISIONING_FAILED);
    (sites, obs)
}

#[test]
fn a_new_retry_value_sends_a_failed_user_once_and_the_old_verdict_no_longer_counts() {
    let limits = Limits::default();
    let (mut sites, mut obs) = failed_by_profile(&limits);
    sites[0].retry = Some("1".into());
    // Looked at again (the verdict read before the retry does not count), then sent.
    let p = plan(&input(&sites, &obs, None, 800, &limits));
    apply(&mut sites, &p);
    let st = status_of(&sites[0]);
    assert_eq!((st.phase, st.retry.as_deref()), (Some(SitePhase::Pending), Some("1")));
    assert!(
        !ready_of(&st).message.contains("\"1\""),
        "the value is the site's own, not in the shared message"
    );
    // Looked at again before it may be sent (as a re-created resource is).
    obs.insert("u0@contoso.com".into(), seen(800, Observation::NoSite));
    let p = plan(&input(&sites, &obs, None, 800, &limits));
    let sent = p.enqueue.clone().expect("sent again").batch;
    assert_eq!(sent.users, vec!["u0@contoso.com"]);
    apply(&mut sites, &p);
    // In flight, the profile read before the new enqueue says nothing: SPSSITEERROR.
    let p = plan(&input(&sites, &obs, Some(&sent), 900, &limits));
    apply(&mut sites, &p);
    assert_eq!(status_of(&sites[0]).phase, Some(SitePhase::SpsSiteError));
    // A verdict read after it counts again; the same value never sends again.
    obs.insert("u0@contoso.com".into(), seen(1500, profile(8195)));
    let p = plan(&input(&sites, &obs, Some(&sent), 1500, &limits));
    apply(&mut sites, &p);
    assert_eq!(ready_of(&status_of(&sites[0])).reason, reason::PROVISIONING_FAILED);
    let p = plan(&input(&sites, &obs, None, 9000, &limits));
    assert!(p.enqueue.is_none(), "the value was acted on");
}

#[test]
fn a_retry_is_not_honoured_for_a_user_already_in_flight() {
    // Sent for the value, but the sites' statuses were not written (a crash after the enqueue):
    // the batch in flight names the user, who is not sent a second time.
    let limits = Limits::default();
    let (mut sites, obs) = failed_by_profile(&limits);
    sites[0].retry = Some("1".into());
    let b = in_flight(&["u0@contoso.com"], 2, 800);
    let p = plan(&input(&sites, &obs, Some(&b), 850, &limits));
    assert!(p.enqueue.is_none());
    let st = p.site_updates.iter().find(|u| u.user == "u0@contoso.com").map(|u| u.status.clone()).unwrap();
    assert_eq!(
        (st.phase, st.retry.as_deref()),
        (Some(SitePhase::SpsSiteError), Some("1")),
        "in flight, the value recorded"
    );
}

#[test]
fn a_site_that_declares_settings_is_ready_only_once_they_are_applied() {
    let limits = Limits::default();
    let mut sites = users(1);
    sites[0].declares_settings = true;
    let obs = Observations::from_iter([(
        "u0@contoso.com".into(),
        seen(10, Observation::HasSite { url: url("u0") }),
    )]);
    let p = plan(&input(&sites, &obs, None, 10, &limits));
    apply(&mut sites, &p);
    let st = status_of(&sites[0]);
    assert_eq!(st.phase, Some(SitePhase::Ready), "the site exists");
    let ready = ready_of(&st);
    assert_eq!((ready.status.as_str(), ready.reason.as_str()), ("False", reason::CONFIGURING));
    // Nothing changes: nothing is written again.
    assert!(plan(&input(&sites, &obs, None, 20, &limits)).site_updates.is_empty());
}
