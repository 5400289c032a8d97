//! Deciding one user's new state from the newest observation and what the statuses say.

use jiff::Timestamp;

use super::gather::User;
use super::state::{self, UserState, since, text};
use super::{Observation, Observed, PlanInput, ProfileMeaning, after};
use crate::api::{ConditionStatus, SitePhase, SiteReason};

/// `obs`: the user's newest observation (`input.observed`, looked up once per pass).
pub(super) fn decide<'a>(u: &User<'a>, obs: Option<&'a Observed>, input: &PlanInput<'a>) -> UserState<'a> {
    if is_guest(u.upn()) {
        // Nothing the tenant says changes this: a guest is neither looked up nor sent.
        return state::guest(u, input.now);
    }
    // A retry asks for a new enqueue. A user already in flight for it (sent, but its sites'
    // statuses not written: a crash after the enqueue) is not sent twice: the value is recorded
    // with the batch they are in.
    if state::retry_requested(u) && !obs.is_some_and(|o| matches!(o.observation, Observation::HasSite { .. }))
    {
        return match provisioning_since(u, input) {
            Some((since, batch)) => UserState { retried: true, ..still_provisioning(u, since, batch, input) },
            None => state::retried(u, input.now),
        };
    }
    let state = decide_from_tenant(u, obs, input);
    match input.tenant_problem {
        // Users waiting for a batch say why they cannot progress. What is already known stays:
        // a Ready site is still there, an enqueued one is still being made, a failure still
        // needs its own fix.
        Some(p) if state.phase == SitePhase::Pending => {
            let since = since(u, SiteReason::TenantNotReady, ConditionStatus::False, input.now);
            UserState {
                reason: SiteReason::TenantNotReady,
                ready: ConditionStatus::False,
                message: text(
                    u,
                    format_args!(
                        "OneDriveTenant {} is not ready ({}) since {since}: {}",
                        input.tenant, p.reason, p.message
                    ),
                ),
                since,
                stalled: p.stalled,
                ..state
            }
        }
        _ => state,
    }
}

/// A B2B guest's account in this tenant (`alice_fabrikam.com#EXT#@contoso.onmicrosoft.com`): a
/// guest's OneDrive, if any, is in their home tenant.
pub(super) fn is_guest(upn: &str) -> bool {
    upn.to_ascii_uppercase().contains("#EXT#")
}

/// Provisioning since when, and in which batch: the in-flight batch (which survives a crash
/// between recording it and writing the sites) or the site's own status.
fn provisioning_since(u: &User, input: &PlanInput) -> Option<(Timestamp, i64)> {
    match input.batch {
        Some(b) if u.in_batch => Some((b.enqueued_at.0, b.id)),
        _ if u.prior.phase() == Some(SitePhase::SpsSiteError) => {
            u.prior.enqueued_at().map(|t| (t, u.prior.batch().unwrap_or(0)))
        }
        _ => None,
    }
}

fn decide_from_tenant<'a>(u: &User<'a>, obs: Option<&'a Observed>, input: &PlanInput<'a>) -> UserState<'a> {
    let provisioning = provisioning_since(u, input);
    // A profile verdict speaks of an enqueue: one for a user this resource never sent (it was
    // re-created, or retried, to try again) is stale until the user is sent again, and one read
    // before the enqueue in flight speaks of an earlier one.
    let sent = provisioning.is_some() || u.prior.enqueued_at().is_some();
    let current = |o: &Observed| provisioning.is_none_or(|(since, _)| o.at >= since);
    let refusal = obs
        .filter(|o| (sent && current(o)) || !matches!(o.observation, Observation::Profile(_)))
        .and_then(|o| Some((o.observation.refusal()?, o)));
    if let Some((reason, o)) = refusal {
        let profile = match o.observation {
            Observation::Profile(p) => Some(p),
            _ => None,
        };
        return state::refused(u, reason, profile, o.at, input);
    }
    match obs.map(|o| (&o.observation, o)) {
        Some((Observation::HasSite { url }, o)) => state::ready(u, url, o.at, provisioning),
        // Enqueued by someone, created without a personal space yet, or "already exists": still
        // being made.
        Some((Observation::Profile(p), o)) if p.meaning == ProfileMeaning::Working && sent => {
            let (since, batch) = provisioning.unwrap_or((o.at, 0));
            still_provisioning(u, since, batch, input)
        }
        Some((observation, o)) if observation.is_no_site() => no_site(u, observation, o, provisioning, input),
        Some((Observation::LookupFailed { status, code }, o))
            if o.times >= input.limits.lookup_failing_after && provisioning.is_none() && !settled(u) =>
        {
            state::lookup_failing(u, *status, code, o.at, input)
        }
        // Nothing (new) is known: keep what the status says, advanced by the clock.
        _ => match (provisioning, u.prior.phase()) {
            (_, Some(_)) if settled(u) => state::prior_state(u, input),
            (Some((since, batch)), _) => still_provisioning(u, since, batch, input),
            (None, None) => state::unknown(u, obs.map(|o| o.at), input.now),
            (None, Some(_)) => state::prior_state(u, input),
        },
    }
}

/// What a status already settled is not undone by being in a batch or by a failed lookup: a
/// Ready site, and a verdict (the timeout excepted, which the next batch retries).
fn settled(u: &User) -> bool {
    match u.prior.phase() {
        Some(SitePhase::Ready) => true,
        Some(SitePhase::Failed) => u.prior.reason() != Some(SiteReason::ProvisioningTimedOut),
        _ => false,
    }
}

fn still_provisioning<'a>(u: &User<'a>, since: Timestamp, batch: i64, input: &PlanInput) -> UserState<'a> {
    // A batch recorded but not yet accepted by SharePoint cannot time out: its clock starts
    // when it is sent (the controller restamps `enqueuedAt` then).
    let unsent = u.in_batch && input.batch.is_some_and(|b| !b.sent);
    if unsent && super::blocked(input) {
        // Nothing can be sent this cycle: the batch is not SharePoint's yet, and the user says so.
        return state::queued(batch, since, u);
    }
    if !unsent && after(since, input.limits.provisioning_timeout) <= input.now {
        state::timed_out(since, batch, u, input)
    } else {
        // The batch's last user is the one the next batch waits for: their own site says so
        // (the tenant, readable cluster-wide, names no user).
        let gate = u.in_batch
            && input
                .batch
                .is_some_and(|b| super::user_key(&b.last_user).as_str() == super::user_key(u.upn()).as_str());
        state::provisioning(batch, since, gate, u, input)
    }
}

/// The user exists, may get a site, and has none.
fn no_site<'a>(
    u: &User<'a>,
    observation: &Observation,
    o: &Observed,
    provisioning: Option<(Timestamp, i64)>,
    input: &PlanInput,
) -> UserState<'a> {
    let profile_verdict = matches!(
        u.prior.reason(),
        Some(SiteReason::SiteCreationNotPermitted | SiteReason::ProvisioningFailed)
    );
    if profile_verdict && *observation == Observation::NoSite {
        // Only the profile can undo its own verdict: a drive and directory lookup cannot see it
        // (nor a cycle whose profile reads ran out), and would otherwise flip the user Failed →
        // Pending or SPSSITEERROR → Failed — in its batch too, where the gate would wait on them.
        state::prior_state(u, input)
    } else if let Some((since, batch)) = provisioning {
        still_provisioning(u, since, batch, input)
    } else if u.prior.phase() == Some(SitePhase::Ready) && u.prior.provisioned_at().is_some_and(|p| p >= o.at)
    {
        state::prior_state(u, input)
    } else if u.prior.reason() == Some(SiteReason::ProvisioningTimedOut) {
        state::timed_out(u.prior.enqueued_at().unwrap_or(o.at), u.prior.batch().unwrap_or(0), u, input)
    } else {
        state::pending(u, o.at)
    }
}
