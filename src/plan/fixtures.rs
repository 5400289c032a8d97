//! What the planner's tests share: sites, observations, inputs, and a fresh planner's plan.

use jiff::Timestamp;

use super::*;
use crate::api::{BatchStatus, OneDriveSiteStatus, condition_type, find_condition};

/// A user's key as text (the model and the assertions compare text).
pub(crate) fn key(user: &str) -> String {
    super::user_key(user).to_string()
}

pub(crate) fn t(secs: i64) -> Timestamp {
    Timestamp::from_second(1_800_000_000 + secs).unwrap()
}

pub(crate) fn site(ns: &str, name: &str, user: &str, created: i64) -> DesiredSite<'static> {
    DesiredSite {
        key: SiteKey { namespace: ns.to_string().into(), name: name.to_string().into() },
        user: user.to_string().into(),
        created: t(created),
        generation: 1,
        status: None,
        declares_settings: false,
        retry: None,
    }
}

pub(crate) fn seen(at: i64, o: Observation) -> Observed {
    Observed::new(t(at), o)
}

pub(crate) fn url(user: &str) -> String {
    format!("https://contoso-my.sharepoint.com/personal/{}/", key(user).as_str().replace(['@', '.'], "_"))
}

/// A planning input with the sites it is about (the planner gathers them; see `plan`).
#[derive(Clone, Copy)]
pub(crate) struct Case<'a> {
    pub(crate) sites: &'a [DesiredSite<'a>],
    pub(crate) input: PlanInput<'a>,
}

impl<'a> std::ops::Deref for Case<'a> {
    type Target = PlanInput<'a>;
    fn deref(&self) -> &PlanInput<'a> {
        &self.input
    }
}

impl std::ops::DerefMut for Case<'_> {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.input
    }
}

/// A fresh planner's plan for the case.
pub(crate) fn plan(c: &Case) -> Plan {
    Planner::new(c.sites).plan(&c.input)
}

/// Whom a fresh planner's plan has the cycle observe first: the gates, then the rest.
pub(crate) fn targets(c: &Case) -> Vec<Lookup> {
    let p = plan(c);
    [p.gates, p.lookups].concat()
}

pub(crate) fn input<'a>(
    sites: &'a [DesiredSite],
    observed: &'a Observations,
    batch: Option<&'a BatchStatus>,
    now: i64,
    limits: &'a Limits,
) -> Case<'a> {
    Case { sites, input: plan_input(observed, batch, now, limits) }
}

pub(crate) fn plan_input<'a>(
    observed: &'a Observations,
    batch: Option<&'a BatchStatus>,
    now: i64,
    limits: &'a Limits,
) -> PlanInput<'a> {
    PlanInput {
        batch,
        last_batch_id: batch.map_or(0, |b| b.id),
        ..PlanInput::new("contoso", observed, limits, t(now))
    }
}

pub(crate) fn ready_of(s: &OneDriveSiteStatus) -> &k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition {
    find_condition(&s.conditions, condition_type::READY).expect("Ready is always written")
}

/// A site's status as the planner kept it, whole again.
pub(crate) fn status_of(s: &DesiredSite) -> OneDriveSiteStatus {
    s.status.as_deref().expect("every site gets a status").to_status()
}

pub(crate) fn apply(sites: &mut [DesiredSite], plan: &Plan) {
    for u in &plan.site_updates {
        let s = sites.iter_mut().find(|s| s.key == u.key).unwrap();
        s.status = Some(u.status.clone().into());
    }
}

pub(crate) fn users(n: usize) -> Vec<DesiredSite<'static>> {
    (0..n).map(|i| site("ns", &format!("u{i}"), &format!("u{i}@contoso.com"), i as i64)).collect()
}

pub(crate) fn all_no_site(sites: &[DesiredSite], at: i64) -> Observations {
    sites.iter().map(|s| (user_key(&s.user), seen(at, Observation::NoSite))).collect()
}
