//! What a user's state asks of the next observation: to be looked up now, or as a re-check that
//! falls due with the others of its period.

use jiff::Timestamp;

use super::batch::straggler_due;
use super::gather::User;
use super::state::UserState;
use super::{Observed, PlanInput, after, recheck_due};
use crate::api::{SitePhase, SiteReason};

/// What a user's state asks to be looked up: now, or as a re-check due since `recheck` (the
/// last look; the longest-waiting are taken first, a bounded number a cycle).
#[derive(Clone, Copy)]
pub(super) struct Wish {
    pub(super) recheck: Option<Timestamp>,
    pub(super) profile: bool,
    pub(super) confirm: bool,
}

/// Whether user `u`, in state `s` and last seen as `obs` (at `looked`), is to be looked up. Asked
/// by the deciding pass, in the same visit as the decision.
pub(super) fn wish(
    u: &User,
    s: &UserState,
    obs: Option<&Observed>,
    looked: Option<Timestamp>,
    input: &PlanInput,
) -> Option<Wish> {
    let now = |profile, confirm| Some(Wish { recheck: None, profile, confirm });
    match s.phase {
        // A guest's verdict is the name's own: nothing to ask the tenant.
        _ if s.reason == SiteReason::GuestAccount => None,
        _ if obs.is_none() && u.prior.phase().is_none() => now(false, false),
        SitePhase::SpsSiteError if !u.in_batch && straggler_due(s, obs, input) => now(true, false),
        // A straggler timing out now: one more look first, so that a site that came since
        // the last (backed-off) look is not reported as a timeout.
        SitePhase::Failed
            if s.reason == SiteReason::ProvisioningTimedOut
                && !u.in_batch
                && u.prior.phase() == Some(SitePhase::SpsSiteError)
                && obs.is_none_or(|o| {
                    s.enqueued_at.is_some_and(|e| o.at < after(e, input.limits.provisioning_timeout))
                }) =>
        {
            now(true, true)
        }
        SitePhase::Ready => {
            let last = looked.or_else(|| u.prior.provisioned_at()).unwrap_or(Timestamp::MIN);
            // A Ready user missing from a listing is looked up before "the site is gone".
            recheck_due(last, input.limits.drift_check_interval, input.now).then_some(Wish {
                recheck: Some(last),
                profile: false,
                confirm: true,
            })
        }
        SitePhase::Failed | SitePhase::Pending if s.refused() || s.reason == SiteReason::LookupFailing => {
            let last = looked.or_else(|| u.prior.failed_since()).unwrap_or(Timestamp::MIN);
            // A profile verdict is re-read from the profile: nothing else can see it.
            let profile =
                matches!(s.reason, SiteReason::SiteCreationNotPermitted | SiteReason::ProvisioningFailed);
            recheck_due(last, input.limits.failed_recheck_interval, input.now).then_some(Wish {
                recheck: Some(last),
                profile,
                confirm: false,
            })
        }
        _ => None,
    }
}
