//! Statuses: the only part of the planner that builds Kubernetes conditions.

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use super::DesiredSite;
use super::state::UserState;
use crate::api::{
    BatchStatus, ConditionSet, ConditionStatus, KeptCondition, KeptStatus, OneDriveSiteStatus, SitePhase,
    SiteReason, condition_type,
};
use crate::plan::settings::{Overlay, overlay};

/// `Ready`, `Reconciling` and `Stalled` as a site says them: the user's state, or — for a site
/// that exists — what its settings say ([`overlay`]).
struct Summary<'s> {
    ready: ConditionStatus,
    reason: SiteReason,
    message: &'s str,
    reconciling: bool,
    stalled: bool,
}

fn summary<'s>(s: &'s UserState, overlay: &'s Option<Overlay<'s>>) -> Summary<'s> {
    match overlay {
        Some(o) => Summary {
            ready: ConditionStatus::False,
            reason: o.reason,
            message: &o.message,
            reconciling: !o.stalled,
            stalled: o.stalled,
        },
        None => Summary {
            ready: s.ready,
            reason: s.reason,
            message: &s.message,
            reconciling: s.reconciling(),
            stalled: s.stalled,
        },
    }
}

fn overlay_of<'s>(site: &'s DesiredSite, s: &UserState) -> Option<Overlay<'s>> {
    match (s.phase, s.site_url) {
        (SitePhase::Ready, Some(url)) => overlay(site.status.as_deref(), site.declares_settings, url),
        _ => None,
    }
}

/// The retry value a status records: the site's annotation once the user was sent again for it.
fn retry_of<'s>(site: &'s DesiredSite, s: &UserState) -> Option<&'s str> {
    if s.retried { site.retry.as_deref() } else { site.status.as_deref().and_then(|k| k.retry.as_deref()) }
}

/// Whether the site's status is exactly what [`site_status`] would build for `s` (so nothing is
/// written).
pub(super) fn already(site: &DesiredSite, s: &UserState, geo: Option<&str>) -> bool {
    let Some(st) = site.status.as_deref() else { return false };
    let generation = site.generation;
    let overlay = overlay_of(site, s);
    let sum = summary(s, &overlay);
    let is = |c: &Option<KeptCondition>, status: ConditionStatus, message: &str| {
        c.as_ref().is_some_and(|c| {
            c.status == status
                && c.reason == sum.reason
                && same_text(&c.message, message)
                && c.observed_generation == Some(generation)
        })
    };
    !st.foreign
        && st.retry.as_deref() == retry_of(site, s)
        && st.observed_generation == Some(generation)
        && st.phase == Some(s.phase)
        && st.site_url.as_deref() == s.site_url
        && st.geo.as_deref() == geo
        && st.enqueued_at == s.enqueued_at
        && st.batch == s.batch
        && st.provisioned_at == s.provisioned_at
        && st.since == Some(s.since)
        && is(&st.ready, sum.ready, sum.message)
        && is(&st.reconciling, ConditionStatus::of(sum.reconciling), "")
        && is(&st.stalled, ConditionStatus::of(sum.stalled), "")
}

/// String equality, at once when both are the same string (an unchanged message is the
/// status's own, borrowed: comparing it byte by byte was a tenth of a steady cycle).
fn same_text(a: &str, b: &str) -> bool {
    std::ptr::eq(a, b) || a == b
}

pub(super) fn site_status(
    site: &DesiredSite,
    s: &UserState,
    geo: Option<&str>,
    now: Timestamp,
) -> OneDriveSiteStatus {
    let g = Some(site.generation);
    let overlay = overlay_of(site, s);
    let sum = summary(s, &overlay);
    let reconciling = ConditionStatus::of(sum.reconciling);
    let stalled = ConditionStatus::of(sum.stalled);
    let kept = site.status.as_deref();
    OneDriveSiteStatus {
        observed_generation: g,
        phase: Some(s.phase),
        site_url: s.site_url.map(String::from),
        geo: geo.map(String::from),
        enqueued_at: s.enqueued_at.map(Time),
        batch: s.batch,
        provisioned_at: s.provisioned_at.map(Time),
        since: Some(Time(s.since)),
        settings: kept.and_then(|k| k.settings.as_deref().cloned()),
        retry: retry_of(site, s).map(String::from),
        conditions: ConditionSet::after_kept(kept, g, now)
            .set(condition_type::READY, sum.ready, sum.reason.as_str(), sum.message.to_string())
            .set(condition_type::RECONCILING, reconciling, sum.reason.as_str(), "")
            .set(condition_type::STALLED, stalled, sum.reason.as_str(), "")
            .keep(condition_type::SITE_CONFIGURED)
            .build(),
    }
}

/// A batch as the tenant's status records it before it is sent: `users` in order (the last one
/// is the one the next batch waits for), not sent yet.
pub(super) fn new_batch(id: i64, users: Vec<String>, now: Timestamp) -> BatchStatus {
    BatchStatus {
        id,
        size: users.len() as i32,
        last_user: users.last().cloned().unwrap_or_default(),
        users,
        enqueued_at: Time(now),
        sent: false,
        users_record: None,
    }
}

/// The status of a site whose `spec.tenantRef` names no existing tenant.
pub fn tenant_not_found_status(site: &DesiredSite, tenant: &str, now: Timestamp) -> OneDriveSiteStatus {
    stopped_by_tenant(site, SiteReason::TenantNotFound, now, "the tenant must be created", |since| {
        format!(
            "OneDriveTenant {tenant:?} does not exist (since {since}): create it, or point spec.tenantRef at an existing tenant"
        )
    })
}

/// The status of a site whose namespace the tenant's `spec.allowedNamespaces` leaves out.
pub fn tenant_not_allowed_status(site: &DesiredSite, tenant: &str, now: Timestamp) -> OneDriveSiteStatus {
    let namespace = &site.key.namespace;
    stopped_by_tenant(
        site,
        SiteReason::TenantNotAllowed,
        now,
        "the tenant's owner must allow this namespace",
        |since| {
            format!(
                "OneDriveTenant {tenant:?} does not allow OneDriveSites from namespace {namespace:?} (since {since}); this user is not looked up nor enqueued. Fix: the tenant's owner adds the namespace to spec.allowedNamespaces (names, or a label the selector matches), or point spec.tenantRef at a tenant this namespace may use"
            )
        },
    )
}

/// A site the tenant stops before any work: `reason` on every condition, Stalled, its phase
/// and what it learnt kept; the message (built from the date the state began) names the fix.
fn stopped_by_tenant(
    site: &DesiredSite,
    reason: SiteReason,
    now: Timestamp,
    stalled_note: &str,
    message: impl FnOnce(Timestamp) -> String,
) -> OneDriveSiteStatus {
    let kept = site.status.as_deref();
    let prior = kept.map(KeptStatus::to_status).unwrap_or_default();
    let already = kept.and_then(|k| k.ready.as_ref()).is_some_and(|c| c.reason == reason);
    let reason = reason.as_str();
    let since = prior
        .since
        .clone()
        .filter(|_| already)
        .unwrap_or(Time(Timestamp::from_second(now.as_second()).unwrap_or(now)));
    let message = message(since.0);
    OneDriveSiteStatus {
        observed_generation: Some(site.generation),
        since: Some(since),
        phase: Some(prior.phase.unwrap_or(SitePhase::Pending)),
        conditions: ConditionSet::after_kept(kept, Some(site.generation), now)
            .set(condition_type::READY, ConditionStatus::False, reason, message)
            .set(condition_type::RECONCILING, ConditionStatus::False, reason, "")
            .set(condition_type::STALLED, ConditionStatus::True, reason, stalled_note)
            .keep(condition_type::SITE_CONFIGURED)
            .build(),
        ..prior
    }
}
