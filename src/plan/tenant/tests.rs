//! The tenant-level planner: Multi-Geo batches, what a send's outcomes mean, a finished batch,
//! the progress figures in the tenant's status.

use jiff::SignedDuration;

use super::*;
use crate::api::{OneDriveTenant, OneDriveTenantSpec, OneDriveTenantStatus, TenantReason, condition_type};
use crate::plan::fixtures::*;
use crate::plan::{DataLocation, DesiredSite, Limits, Observation, Observations, Observed, user_key};

fn geo(location: &str, central: bool) -> GeoTarget {
    GeoTarget { location: location.into(), admin_url: format!("https://{location}-admin"), central }
}

fn stand(geos: &[GeoTarget]) -> Stand {
    Stand {
        problem: None,
        throttled_until: None,
        pipelines: pipelines(geos, &OneDriveTenantStatus::default()),
        discovery: Discovery::Known,
        last_batch_id: 0,
    }
}

/// Everyone read with no site, in the geo given for them.
fn no_site_in(
    sites: &[DesiredSite],
    at: i64,
    location: impl Fn(usize) -> Option<&'static str>,
) -> Observations {
    sites
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let mut o = Observed::new(t(at), Observation::NoSite);
            o.location = location(i).map_or(DataLocation::Unset, |l| DataLocation::Preferred(l.into()));
            (user_key(&s.user), o)
        })
        .collect()
}

fn input<'a>(observed: &'a Observations, limits: &'a Limits, now: i64) -> TenantInput<'a> {
    TenantInput { tenant: "contoso", observed, limits, now: t(now) }
}

fn failure(reason: TenantReason, throttled_until: Option<i64>, unreachable: bool) -> SendFailure {
    SendFailure {
        problem: TenantProblem { reason, message: "refused".into(), stalled: false },
        throttled_until: throttled_until.map(t),
        unreachable,
    }
}

fn batch_users(s: &Stand, g: usize) -> Vec<String> {
    s.pipelines[g].batch.as_ref().map(|b| b.users.clone()).unwrap_or_default()
}

#[test]
fn each_geo_gets_its_own_batch_of_its_own_users_with_ids_unique_tenant_wide() {
    let sites = users(6);
    let observed = no_site_in(&sites, 0, |i| (i % 2 == 1).then_some("EUR"));
    let limits = Limits::default();
    let mut stand = stand(&[geo("NAM", true), geo("EUR", false)]);
    let mut planner = TenantPlanner::new(&sites, &stand.pipelines);
    let plan = planner.plan(&input(&observed, &limits, 10), &stand);

    let to_send = record(&plan, &mut stand);
    assert_eq!(to_send, vec![ToSend { geo: 0, resend: false }, ToSend { geo: 1, resend: false }]);
    assert_eq!(batch_users(&stand, 0), ["u0@contoso.com", "u2@contoso.com", "u4@contoso.com"].map(key));
    assert_eq!(batch_users(&stand, 1), ["u1@contoso.com", "u3@contoso.com", "u5@contoso.com"].map(key));
    let ids: Vec<i64> = stand.pipelines.iter().map(|p| p.batch.as_ref().unwrap().id).collect();
    assert_eq!(ids, vec![1, 2]);
    assert_eq!(stand.last_batch_id, 2);
    assert!(stand.pipelines.iter().all(|p| !p.batch.as_ref().unwrap().sent), "recorded unsent first");
}

#[test]
fn a_user_whose_geo_the_tenant_lacks_goes_to_the_central_geo() {
    let sites = users(2);
    let observed = no_site_in(&sites, 0, |i| Some(if i == 0 { "APC" } else { "EUR" }));
    let limits = Limits::default();
    let mut stand = stand(&[geo("NAM", true), geo("EUR", false)]);
    let plan = TenantPlanner::new(&sites, &stand.pipelines).plan(&input(&observed, &limits, 10), &stand);
    record(&plan, &mut stand);
    assert_eq!(batch_users(&stand, 0), vec![key("u0@contoso.com")]);
    assert_eq!(batch_users(&stand, 1), vec![key("u1@contoso.com")]);
}

#[test]
fn an_accepted_batch_is_sent_and_a_resent_one_starts_its_clock_when_accepted() {
    let sites = users(2);
    let observed = all_no_site(&sites, 0);
    let limits = Limits::default();
    let mut stand =
        stand(&[GeoTarget { location: String::new(), admin_url: "https://c-admin".into(), central: true }]);
    let plan = TenantPlanner::new(&sites, &stand.pipelines).plan(&input(&observed, &limits, 10), &stand);
    let to = record(&plan, &mut stand)[0];
    after_sent(&mut stand, to, &Sent::Accepted, t(20));
    let b = stand.pipelines[0].batch.clone().unwrap();
    assert!(b.sent);
    assert_eq!(b.enqueued_at.0, t(10), "a batch sent in the cycle that formed it keeps its time");
    assert_eq!(with_sent(plan, &stand).geos[0].batch, Some(b.clone()));

    // An earlier process recorded it and may not have sent it: its clock starts now.
    let mut unsent = stand.clone();
    unsent.pipelines[0].batch = Some(crate::api::BatchStatus { sent: false, ..b });
    after_sent(&mut unsent, ToSend { geo: 0, resend: true }, &Sent::Accepted, t(500));
    assert_eq!(unsent.pipelines[0].batch.as_ref().unwrap().enqueued_at.0, t(500));
}

#[test]
fn a_batch_not_known_to_have_arrived_stays_recorded_and_a_refused_one_is_gone() {
    let sites = users(2);
    let observed = all_no_site(&sites, 0);
    let limits = Limits::default();
    let mut kept = stand(&[geo("NAM", true)]);
    let plan = TenantPlanner::new(&sites, &kept.pipelines).plan(&input(&observed, &limits, 10), &kept);
    let to = record(&plan, &mut kept)[0];
    let mut refused = kept.clone();

    after_sent(&mut kept, to, &Sent::Kept(failure(TenantReason::Unreachable, None, false)), t(11));
    let b = kept.pipelines[0].batch.as_ref().expect("kept");
    assert!(!b.sent);
    // The next cycle sends the same batch again, and forms nothing new.
    let again = TenantPlanner::new(&sites, &kept.pipelines).plan(&input(&observed, &limits, 70), &kept);
    let e = again.geos[0].enqueue.as_ref().expect("sent again");
    assert_eq!((e.batch.id, e.resend), (b.id, true));

    after_sent(&mut refused, to, &Sent::Refused(failure(TenantReason::InvalidRequest, None, false)), t(11));
    assert_eq!(refused.pipelines[0].batch, None);
    assert_eq!(refused.last_batch_id, 1, "a refused batch's id is not given again");
}

#[test]
fn throttling_and_refusals_stop_every_geo_and_an_unreachable_host_only_its_own() {
    let throttled = failure(TenantReason::Throttled, Some(120), false);
    let refused = failure(TenantReason::CredentialsInvalid, None, false);
    let unreachable = failure(TenantReason::Unreachable, None, true);
    assert!(keeps_sending(None));
    assert!(keeps_sending(Some(&unreachable)));
    assert!(!keeps_sending(Some(&throttled)));
    assert!(!keeps_sending(Some(&refused)));
    // What the cycle reports: a failure that concerns every geo wins over an unreachable host.
    assert_eq!(worse(Some(refused.clone()), unreachable.clone()), Some(refused.clone()));
    assert_eq!(worse(Some(unreachable.clone()), refused.clone()), Some(refused.clone()));
    assert_eq!(worse(None, unreachable.clone()), Some(unreachable.clone()));

    let mut s = stand(&[geo("NAM", true)]);
    assert_eq!(after_failure(&mut s, throttled, t(0)), None);
    assert_eq!((s.throttled_until, s.problem.is_none()), (Some(t(120)), true));

    let mut s = stand(&[geo("NAM", true)]);
    assert_eq!(after_failure(&mut s, unreachable, t(0)), None, "an outage is asked again next cycle");
    assert_eq!(s.problem.as_ref().map(|p| p.reason), Some(TenantReason::Unreachable));

    let mut s = stand(&[geo("NAM", true)]);
    let remembered = after_failure(&mut s, refused, t(0));
    assert_eq!(
        remembered,
        Some(t(0) + SignedDuration::from_mins(10)),
        "the same credentials wait ten minutes"
    );
    assert_eq!(s.problem.as_ref().map(|p| p.reason), Some(TenantReason::CredentialsInvalid));
}

#[test]
fn a_plan_made_again_after_a_failed_send_keeps_the_batch_that_finished_before_it() {
    let sites = users(2);
    let mut observed = all_no_site(&sites, 0);
    let limits = Limits::default();
    let mut s = stand(&[geo("NAM", true)]);
    let first = TenantPlanner::new(&sites, &s.pipelines).plan(&input(&observed, &limits, 10), &s);
    record(&first, &mut s);
    after_sent(&mut s, ToSend { geo: 0, resend: false }, &Sent::Accepted, t(10));

    // An hour later both have sites: the batch finishes, nothing else is left to send.
    for site in &sites {
        observed.insert(
            user_key(&site.user),
            Observed::new(t(3600), Observation::HasSite { url: url(&site.user) }),
        );
    }
    let done = TenantPlanner::new(&sites, &s.pipelines).plan(&input(&observed, &limits, 3600), &s);
    assert_eq!(done.geos[0].finished.as_ref().map(|f| f.0), Some(1));
    let took = done.geos[0].batch_duration.expect("the duration is learnt");
    assert_eq!(took, SignedDuration::from_secs(3590));
    record(&done, &mut s);
    assert_eq!(s.pipelines[0].batch, None);
    assert_eq!(s.pipelines[0].last_batch_seconds, Some(3590));

    // A plan made again (after another geo's send failed) no longer sees the batch: it keeps
    // what the first plan finished.
    let again = TenantPlanner::new(&sites, &s.pipelines).plan(&input(&observed, &limits, 3600), &s);
    assert_eq!(again.geos[0].finished, None);
    let kept = with_finished(again, &done);
    assert_eq!(kept.geos[0].finished, done.geos[0].finished);
    assert_eq!(kept.geos[0].batch_duration, Some(took));
}

#[test]
fn the_tenant_status_counts_every_geo_and_estimates_when_the_last_batch_ends() {
    let sites = users(5);
    let observed = no_site_in(&sites, 0, |i| (i >= 3).then_some("EUR"));
    let limits = Limits { batch_size: 2, ..Limits::default() };
    let mut s = stand(&[geo("NAM", true), geo("EUR", false)]);
    s.pipelines[0].last_batch_seconds = Some(600);
    s.pipelines[1].last_batch_seconds = Some(300);
    let plan = TenantPlanner::new(&sites, &s.pipelines).plan(&input(&observed, &limits, 0), &s);
    record(&plan, &mut s);
    for g in 0..2 {
        after_sent(&mut s, ToSend { geo: g, resend: false }, &Sent::Accepted, t(0));
    }
    let plan = with_sent(plan, &s);
    let tenant = OneDriveTenant::new("contoso", OneDriveTenantSpec { batch_size: 2, ..Default::default() });
    let status = tenant_status(&tenant, &Default::default(), &plan, &s, t(0), &CredentialHealth::default());

    assert_eq!(status.users.desired, 5);
    let geos: Vec<(&str, i32, i32)> = status
        .geos
        .iter()
        .map(|g| (g.location.as_str(), g.users.desired, g.current_batch.as_ref().unwrap().size))
        .collect();
    assert_eq!(geos, vec![("NAM", 3, 2), ("EUR", 2, 2)]);
    // NAM: 2 in flight, 1 queued → two batches of 600 s; EUR: its one batch of 300 s.
    let p = status.progress.expect("work is left");
    assert_eq!((p.users_left, p.batches_left), (5, 3));
    assert_eq!(p.estimated_completion.map(|c| c.0), Some(t(1200)));
    let ready = status.conditions.iter().find(|c| c.type_ == condition_type::READY).unwrap();
    assert_eq!(ready.reason, TenantReason::Ready.as_str());
    assert!(
        ready.message.contains("geos: NAM (central) 0 ready of 3, EUR 0 ready of 2"),
        "{}",
        ready.message
    );
    assert_eq!(status.last_batch_id, 2);
}
