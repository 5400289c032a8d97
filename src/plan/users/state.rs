//! A user's state as the planner decides it, and one constructor per kind of state. Each message
//! says what was observed and since when; the date is the one the state was entered at and is kept
//! while the state holds, so a message changes only when the state does.

use std::borrow::Cow;

use jiff::Timestamp;

use super::gather::User;
use super::{PlanInput, ProfileState, whole_second};
use crate::api::{ConditionStatus, SitePhase, SiteReason};
use crate::plan::limits::SpecDuration;
use crate::plan::settings::Provisioned;

#[derive(Clone, Debug, PartialEq)]
pub(super) struct UserState<'a> {
    pub(super) phase: SitePhase,
    pub(super) reason: SiteReason,
    pub(super) ready: ConditionStatus,
    pub(super) message: Cow<'a, str>,
    pub(super) site_url: Option<&'a str>,
    pub(super) enqueued_at: Option<Timestamp>,
    pub(super) batch: Option<i64>,
    pub(super) provisioned_at: Option<Timestamp>,
    /// When the state (`reason` and `ready`) was entered.
    pub(super) since: Timestamp,
    /// A person must act (kstatus `Stalled`).
    pub(super) stalled: bool,
    /// Sent again for a new `onedrive-operator.dev/retry` value: each site records its value.
    pub(super) retried: bool,
}

impl UserState<'_> {
    pub(super) fn reconciling(&self) -> bool {
        matches!(self.phase, SitePhase::Pending | SitePhase::SpsSiteError)
            || self.reason == SiteReason::ProvisioningTimedOut
            || (self.reason == SiteReason::TenantNotReady && !self.stalled)
    }

    /// A verdict no batch can change as things stand (the directory or the profile refused).
    pub(super) fn refused(&self) -> bool {
        self.phase == SitePhase::Failed && self.reason != SiteReason::ProvisioningTimedOut
    }
}

/// When the user entered the state (`reason`, `ready`): the status's date while that state
/// holds, `entered` (to the second, as Kubernetes stores it) when it is new.
pub(super) fn since(u: &User, reason: SiteReason, ready: ConditionStatus, entered: Timestamp) -> Timestamp {
    match u.prior.state() {
        Some((r, s, t)) if r == reason && s == ready => t,
        _ => whole_second(entered),
    }
}

/// `args` as text: the user's current `Ready` message when it already reads so (most cycles
/// change nothing, and then nothing is allocated), a new string otherwise.
pub(super) fn text<'a>(u: &User<'a>, args: std::fmt::Arguments) -> Cow<'a, str> {
    thread_local! {
        /// Where a message is worded before it is known to be new (reused: no allocation).
        static WORDING: std::cell::RefCell<String> = const { std::cell::RefCell::new(String::new()) };
    }
    WORDING.with_borrow_mut(|wording| {
        wording.clear();
        // Writing into a String cannot fail.
        let _ = std::fmt::Write::write_fmt(wording, args);
        match u.ready_message {
            Some(current) if current == wording.as_str() => Cow::Borrowed(current),
            _ => Cow::Owned(wording.clone()),
        }
    })
}

/// The site exists.
pub(super) fn ready<'a>(
    u: &User<'a>,
    url: &'a str,
    seen: Timestamp,
    provisioning: Option<(Timestamp, i64)>,
) -> UserState<'a> {
    let provisioned_at = match u.prior.phase() {
        Some(SitePhase::Ready) => u.prior.provisioned_at(),
        _ => None,
    }
    .unwrap_or(whole_second(seen));
    let since = since(u, SiteReason::Provisioned, ConditionStatus::True, provisioned_at);
    UserState {
        phase: SitePhase::Ready,
        reason: SiteReason::Provisioned,
        ready: ConditionStatus::True,
        message: text(u, format_args!("{}", Provisioned { url, since })),
        site_url: Some(url),
        enqueued_at: provisioning.map(|p| p.0).or(u.prior.enqueued_at()),
        batch: provisioning.map(|p| p.1).or(u.prior.batch()),
        provisioned_at: Some(provisioned_at),
        since,
        stalled: false,
        retried: false,
    }
}

/// No site yet: waits for a batch slot.
pub(super) fn pending<'a>(u: &User<'a>, seen: Timestamp) -> UserState<'a> {
    let since = since(u, SiteReason::Pending, ConditionStatus::False, seen);
    let message = if u.prior.phase() == Some(SitePhase::Ready) {
        text(
            u,
            format_args!(
                "the OneDrive that existed at {} was gone at {since}: {} waits for a batch slot to get a new one",
                u.prior.site_url().unwrap_or("(unknown)"),
                u.upn()
            ),
        )
    } else {
        text(
            u,
            format_args!("no OneDrive for {} (none seen since {since}); it waits for a batch slot", u.upn()),
        )
    };
    without_site(u, SitePhase::Pending, SiteReason::Pending, message, since)
}

/// A state of a user without a site: what the status said of their last enqueue is kept; a
/// person must act when it is a failure.
fn without_site<'a>(
    u: &User<'a>,
    phase: SitePhase,
    reason: SiteReason,
    message: Cow<'a, str>,
    since: Timestamp,
) -> UserState<'a> {
    UserState {
        phase,
        reason,
        ready: ConditionStatus::False,
        message,
        site_url: None,
        enqueued_at: u.prior.enqueued_at(),
        batch: u.prior.batch(),
        provisioned_at: None,
        since,
        stalled: phase == SitePhase::Failed,
        retried: false,
    }
}

/// Nothing is known yet: never looked up, or no lookup has been answered.
pub(super) fn unknown<'a>(u: &User<'a>, tried: Option<Timestamp>, now: Timestamp) -> UserState<'a> {
    let since = since(u, SiteReason::Pending, ConditionStatus::Unknown, tried.unwrap_or(now));
    let message = match tried {
        None => text(u, format_args!("{} has not been checked against the tenant yet", u.upn())),
        Some(_) => text(
            u,
            format_args!(
                "the tenant has not answered a lookup of {} since {since} (throttled or unavailable); it is asked again",
                u.upn()
            ),
        ),
    };
    UserState { ready: ConditionStatus::Unknown, message, since, ..pending(u, now) }
}

/// The tenant keeps answering the user's lookups with something nobody documents.
pub(super) fn lookup_failing<'a>(
    u: &User<'a>,
    status: u16,
    code: &str,
    seen: Timestamp,
    input: &PlanInput,
) -> UserState<'a> {
    let since = since(u, SiteReason::LookupFailing, ConditionStatus::False, seen);
    let message = text(
        u,
        format_args!(
            "the tenant answered {} lookups of {} in a row with HTTP {status} ({code}) by {since}, which says nothing about the OneDrive: {} is not sent and is checked again every {}; if it persists, check the user in the Microsoft 365 admin centre",
            input.limits.lookup_failing_after,
            u.upn(),
            u.upn(),
            SpecDuration(input.limits.failed_recheck_interval)
        ),
    );
    UserState { reason: SiteReason::LookupFailing, message, since, ..pending(u, seen) }
}

/// In a batch recorded but not accepted by SharePoint yet (throttled, unreachable): not enqueued.
pub(super) fn queued<'a>(batch: i64, recorded: Timestamp, u: &User<'a>) -> UserState<'a> {
    let since = since(u, SiteReason::Pending, ConditionStatus::False, recorded);
    let message = text(
        u,
        format_args!(
            "in batch {batch}, recorded at {recorded}; SharePoint has not accepted it yet (throttled or unreachable): the same batch is sent again"
        ),
    );
    without_site(u, SitePhase::Pending, SiteReason::Pending, message, since)
}

pub(super) fn provisioning<'a>(
    batch: i64,
    since: Timestamp,
    gate: bool,
    u: &User<'a>,
    input: &PlanInput,
) -> UserState<'a> {
    let last = if gate { " as its last user: the next batch waits for this site" } else { "" };
    UserState {
        phase: SitePhase::SpsSiteError,
        reason: SiteReason::SpsSiteError,
        ready: ConditionStatus::False,
        message: text(
            u,
            format_args!(
                "enqueued in batch {batch} at {since}{last}; SharePoint shows SPSSITEERROR while its timer job creates the site (timeout {})",
                SpecDuration(input.limits.provisioning_timeout)
            ),
        ),
        site_url: None,
        enqueued_at: Some(since),
        batch: Some(batch),
        provisioned_at: None,
        since: whole_second(since),
        stalled: false,
        retried: false,
    }
}

pub(super) fn timed_out<'a>(
    enqueued: Timestamp,
    batch: i64,
    u: &User<'a>,
    input: &PlanInput,
) -> UserState<'a> {
    let since = since(u, SiteReason::ProvisioningTimedOut, ConditionStatus::False, input.now);
    UserState {
        phase: SitePhase::Failed,
        reason: SiteReason::ProvisioningTimedOut,
        ready: ConditionStatus::False,
        message: text(
            u,
            format_args!(
                "enqueued in batch {batch} at {enqueued} but no site after {} (as of {since}): it is sent again in the next batch; if this repeats, check the user can sign in and holds a SharePoint licence",
                SpecDuration(input.limits.provisioning_timeout)
            ),
        ),
        site_url: None,
        enqueued_at: Some(enqueued),
        batch: Some(batch),
        provisioned_at: None,
        since,
        stalled: true,
        retried: false,
    }
}

/// The directory or the user profile says SharePoint will not create the site.
pub(super) fn refused<'a>(
    u: &User<'a>,
    reason: SiteReason,
    profile: Option<ProfileState>,
    seen: Timestamp,
    input: &PlanInput,
) -> UserState<'a> {
    let since = since(u, reason, ConditionStatus::False, seen);
    let recheck = SpecDuration(input.limits.failed_recheck_interval);
    let upn = u.upn();
    let state = profile.map(|p| format!("{} ({})", p.name, p.code)).unwrap_or_default();
    let message = match reason {
        SiteReason::UserNotFound => text(
            u,
            format_args!(
                "{upn} does not exist in the tenant's directory (seen {since}): fix spec.user or create the user (checked again every {recheck})"
            ),
        ),
        SiteReason::UserNotLicensed if profile.is_some() => text(
            u,
            format_args!(
                "{upn} has no SharePoint licence: the user profile shows {state} since {since}; assign a licence that includes SharePoint Online (checked again every {recheck})"
            ),
        ),
        SiteReason::UserNotLicensed => text(
            u,
            format_args!(
                "{upn} has no enabled SharePoint plan in the directory (seen {since}): assign a licence that includes SharePoint Online (checked again every {recheck})"
            ),
        ),
        SiteReason::SignInBlocked => text(
            u,
            format_args!(
                "{upn} may not sign in (accountEnabled is false, seen {since}): SharePoint never creates a site for a blocked account, so it is not sent; allow sign-in to have it sent (checked again every {recheck})"
            ),
        ),
        SiteReason::SiteCreationNotPermitted => text(
            u,
            format_args!(
                "SharePoint may not create a personal site for {upn}: the user profile shows {state} since {since}. Fix the tenant's personal-site settings, then set the annotation onedrive-operator.dev/retry to a new value to send the user again (checked again every {recheck})"
            ),
        ),
        _ => text(
            u,
            format_args!(
                "SharePoint failed to create the personal site of {upn}: the user profile shows {state} since {since}. See the SharePoint admin centre; set the annotation onedrive-operator.dev/retry to a new value to send the user once more (checked again every {recheck})"
            ),
        ),
    };
    without_site(u, SitePhase::Failed, reason, message, since)
}

/// A new `onedrive-operator.dev/retry` value on a site of a user SharePoint refused or failed:
/// sent again in the next batch, as if this resource had never sent them (so a profile verdict
/// read before the new enqueue no longer counts).
pub(super) fn retried<'a>(u: &User<'a>, now: Timestamp) -> UserState<'a> {
    let since = since(u, SiteReason::Pending, ConditionStatus::False, now);
    let upn = u.upn();
    // The value is not in the message: sites of one user in several namespaces share it (each
    // records its own value in `status.retry`, and its Event names it).
    let message = text(
        u,
        format_args!(
            "sent again for a new onedrive-operator.dev/retry value (seen {since}): {upn} waits for a batch slot"
        ),
    );
    UserState {
        phase: SitePhase::Pending,
        reason: SiteReason::Pending,
        ready: ConditionStatus::False,
        message,
        site_url: None,
        enqueued_at: None,
        batch: None,
        provisioned_at: None,
        since,
        stalled: false,
        retried: true,
    }
}

/// Whether a site of a refused or failed user asks for a retry value it has not had yet.
pub(super) fn retry_requested(u: &User) -> bool {
    let failed = u.prior.phase() == Some(SitePhase::Failed)
        && matches!(
            u.prior.reason(),
            Some(SiteReason::ProvisioningFailed | SiteReason::SiteCreationNotPermitted)
        );
    failed
        && u.sites.all().iter().any(|site| {
            let acted = site.status.as_deref().and_then(|k| k.retry.as_deref());
            site.retry.as_deref().is_some_and(|value| acted != Some(value))
        })
}

/// A guest account: never looked up nor sent.
pub(super) fn guest<'a>(u: &User<'a>, now: Timestamp) -> UserState<'a> {
    let reason = SiteReason::GuestAccount;
    let since = since(u, reason, ConditionStatus::False, now);
    let upn = u.upn();
    let message = text(
        u,
        format_args!(
            "{upn} is a guest account (#EXT#, seen {since}): a guest cannot hold a OneDrive in this tenant, so it is never sent; name the person's own account of this tenant, or create the site in their home tenant"
        ),
    );
    without_site(u, SitePhase::Failed, reason, message, since)
}

/// Rebuilds the state a status describes (nothing new was observed).
pub(super) fn prior_state<'a>(u: &User<'a>, input: &PlanInput) -> UserState<'a> {
    let kept = [
        SiteReason::Provisioned,
        SiteReason::UserNotFound,
        SiteReason::UserNotLicensed,
        SiteReason::SignInBlocked,
        SiteReason::SiteCreationNotPermitted,
        SiteReason::ProvisioningFailed,
        SiteReason::LookupFailing,
        SiteReason::GuestAccount,
    ];
    let reason = match u.prior.reason() {
        Some(SiteReason::ProvisioningTimedOut) => {
            return timed_out(
                u.prior.enqueued_at().unwrap_or(input.now),
                u.prior.batch().unwrap_or(0),
                u,
                input,
            );
        }
        Some(r) => kept.into_iter().find(|k| *k == r).unwrap_or(SiteReason::Pending),
        None => SiteReason::Pending,
    };
    let phase = u.prior.phase().unwrap_or(SitePhase::Pending);
    if phase == SitePhase::Ready
        && let Some(url) = u.prior.site_url()
    {
        return ready(u, url, u.prior.provisioned_at().unwrap_or(input.now), None);
    }
    if phase == SitePhase::Pending && reason == SiteReason::Pending {
        return pending(u, input.now);
    }
    let ready_status = if phase == SitePhase::Ready { ConditionStatus::True } else { ConditionStatus::False };
    // The status's own message is kept (its reason is this one; a message written with a tenant
    // problem is replaced once the problem is gone).
    let message = match u.ready_message.filter(|_| u.prior.reason() == Some(reason)) {
        Some(m) => Cow::Borrowed(m),
        None => Cow::Owned(format!("{}: {reason}, as observed before; checked again", u.upn())),
    };
    UserState {
        phase,
        reason,
        ready: ready_status,
        message,
        site_url: None,
        enqueued_at: u.prior.enqueued_at(),
        batch: u.prior.batch(),
        provisioned_at: None,
        since: since(u, reason, ready_status, input.now),
        stalled: phase == SitePhase::Failed,
        retried: false,
    }
}

/// A timed-out user is sent again only once its `ProvisioningTimedOut` status was written, so
/// the timeout is always visible on the resource.
pub(super) fn eligible(u: &User, s: &UserState) -> bool {
    s.reason == SiteReason::Pending
        || (s.reason == SiteReason::ProvisioningTimedOut
            && u.prior.reason() == Some(SiteReason::ProvisioningTimedOut))
}
