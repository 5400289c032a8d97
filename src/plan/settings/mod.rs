//! Settings: what the operator makes true on a OneDrive once it exists — the site collection
//! administrators and the storage quota its tenant and its `OneDriveSite` declare. Pure, like
//! the rest of the planner: [`SettingsPolicy`] reads the tenant's declaration once a cycle,
//! [`due`] says which sites to look at now (bounded per cycle), the controller asks SharePoint and
//! reports an [`Attempt`] per site, and [`status_after`] writes what it came to — the
//! `SiteConfigured` condition, `status.settings`, and `Ready` ([`overlay`]).
//!
//! Rules:
//! - only what is declared is added; only what the operator added (`status.settings.addedAdmins`)
//!   is ever removed, when it is no longer declared; an administrator that was there before is
//!   never counted as added, and the owner is never touched;
//! - a site's own administrators take effect only if the tenant's `spec.perSite.allowedSiteAdmins`
//!   names them, its quota only within `spec.perSite.maxStorageQuota`; the rest is refused
//!   (`SettingsNotAllowed`), the allowed part still applied;
//! - a site is looked at when its declaration differs from what was applied, when its drift check
//!   is due (`driftCheckInterval`), a failure's re-check is due (`failedRecheckInterval`, so an
//!   unknown administrator costs two calls an hour, not a storm), or a new retry value asks;
//! - configuration never holds up a batch: the batch gate waits for sites to exist.

mod declared;
mod ready;
#[cfg(test)]
mod tests;

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

pub use declared::{Declared, SettingsPolicy};
pub use ready::{Overlay, Provisioned, overlay};

use super::{Limits, SiteKey, after, whole_second};
use crate::api::{
    ConditionSet, ConditionStatus, KeptStatus, OneDriveSiteStatus, SitePhase, SiteReason, SiteSettingsStatus,
    condition_type,
};

/// Sites configured per minute at most. A site costs the admin host two reads and one call per
/// change (four for a new site with an administrator and a quota): at most about 200 calls a
/// minute, a third of what SharePoint tolerates from one app before throttling it (the simulator
/// models 600), so the enqueue and the profile reads are never throttled for configuration's
/// sake. A rollout provisions 200 sites in ~10 minutes: 50 a minute keeps up with 2.5× to spare.
pub const SITES_PER_MINUTE: usize = 50;
/// A site whose settings could not be applied for a passing reason (throttled, the site not
/// listed by the admin host yet) is tried again after this.
pub const TRANSIENT_RETRY: SignedDuration = SignedDuration::from_secs(60);

/// One site as the settings planner reads it.
#[derive(Clone, Copy, Debug)]
pub struct SiteInput<'a> {
    pub namespace: &'a str,
    pub name: &'a str,
    pub generation: i64,
    /// The status before this cycle.
    pub kept: Option<&'a KeptStatus>,
    /// The status the provisioning plan writes in this cycle, if it writes one.
    pub planned: Option<&'a OneDriveSiteStatus>,
    pub site_admins: &'a [Box<str>],
    pub storage_quota: Option<&'a str>,
    /// The `onedrive-operator.dev/retry` annotation.
    pub retry: Option<&'a str>,
}

impl<'a> SiteInput<'a> {
    pub fn key(&self) -> SiteKey<'a> {
        SiteKey { namespace: self.namespace.into(), name: self.name.into() }
    }

    /// The site's URL once it exists (as this cycle leaves it).
    fn url(&self) -> Option<&str> {
        match self.planned {
            Some(p) => (p.phase == Some(SitePhase::Ready)).then_some(p.site_url.as_deref()).flatten(),
            None => {
                self.kept.filter(|k| k.phase == Some(SitePhase::Ready)).and_then(|k| k.site_url.as_deref())
            }
        }
    }

    fn geo(&self) -> Option<&str> {
        match self.planned {
            Some(p) => p.geo.as_deref(),
            None => self.kept.and_then(|k| k.geo.as_deref()),
        }
    }

    fn applied(&self) -> Option<&SiteSettingsStatus> {
        self.kept.and_then(|k| k.settings.as_deref())
    }

    /// A retry value not acted on yet.
    fn new_retry(&self) -> Option<&str> {
        self.retry.filter(|v| self.kept.and_then(|k| k.retry.as_deref()) != Some(*v))
    }
}

/// What to do on one site.
#[derive(Clone, Debug, PartialEq)]
pub struct Task {
    pub key: SiteKey<'static>,
    pub url: String,
    /// The geo whose admin host configures the site (`None`: the central one).
    pub geo: Option<String>,
    pub declared: Declared,
    /// Administrators the operator added and may remove when they are no longer declared.
    pub added: Vec<String>,
}

impl Task {
    /// Added before and no longer declared: to remove.
    pub fn to_remove(&self) -> impl Iterator<Item = &String> {
        self.added.iter().filter(|a| !self.declared.admins.contains(a))
    }
}

/// What the controller did on a site, and how it ended.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Attempt {
    /// Administrators the operator made administrators now.
    pub added: Vec<String>,
    /// Administrators the operator removed now.
    pub removed: Vec<String>,
    pub quota_set: bool,
    pub failure: Option<Failure>,
}

/// Why an attempt stopped.
#[derive(Clone, Debug, PartialEq)]
pub struct Failure {
    /// A person must act (an unknown administrator, refused credentials); otherwise it passes.
    pub needs_person: bool,
    /// What failed, naming the call and the administrator (never a secret).
    pub message: String,
}

/// How many sites were configured in the current minute.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Pace {
    minute_from: Option<Timestamp>,
    sites: usize,
}

impl Pace {
    /// Sites that may still be configured in the minute `now` is in.
    pub fn allowance(&self, now: Timestamp) -> usize {
        match self.minute_from {
            Some(from) if now < after(from, SignedDuration::from_mins(1)) => {
                SITES_PER_MINUTE.saturating_sub(self.sites)
            }
            _ => SITES_PER_MINUTE,
        }
    }

    /// `n` sites configured at `now`.
    pub fn spend(&mut self, now: Timestamp, n: usize) {
        match self.minute_from {
            Some(from) if now < after(from, SignedDuration::from_mins(1)) => self.sites += n,
            _ => *self = Pace { minute_from: Some(now), sites: n },
        }
    }

    /// When the next minute's allowance starts.
    pub fn next_minute(&self, now: Timestamp) -> Timestamp {
        self.minute_from.map_or(now, |from| after(from, SignedDuration::from_mins(1)))
    }
}

/// Sites to configure now (at most `allowance`, in the order given), whether more are due, and
/// when the next one falls due.
#[derive(Debug, Default)]
pub struct Due {
    pub tasks: Vec<Task>,
    pub more: bool,
    pub next: Option<Timestamp>,
}

/// Which of `sites` to configure now.
pub fn due<'a>(
    policy: &SettingsPolicy,
    sites: impl IntoIterator<Item = SiteInput<'a>>,
    limits: &Limits,
    now: Timestamp,
    allowance: usize,
) -> Due {
    let mut out = Due::default();
    // Most sites declare nothing of their own: their declaration is the tenant's, worked out once.
    let tenant_wide = policy.declared(&[], None);
    for site in sites {
        let Some(url) = site.url() else { continue };
        let own;
        let declared = if site.site_admins.is_empty() && site.storage_quota.is_none() {
            &tenant_wide
        } else {
            own = policy.declared(site.site_admins, site.storage_quota);
            &own
        };
        let at = match due_at(&site, declared, limits) {
            Some(at) => at,
            None => continue,
        };
        if at > now {
            out.next = Some(out.next.map_or(at, |n| n.min(at)));
            continue;
        }
        if out.tasks.len() == allowance {
            out.more = true;
            continue;
        }
        out.tasks.push(Task {
            key: site.key().to_owned_key(),
            url: url.to_string(),
            geo: site.geo().map(String::from),
            added: site.applied().map(|a| a.added_admins.clone()).unwrap_or_default(),
            declared: declared.clone(),
        });
    }
    out
}

/// When the site is next looked at (`None`: never — nothing declared, nothing of ours on it).
fn due_at(site: &SiteInput, declared: &Declared, limits: &Limits) -> Option<Timestamp> {
    let applied = site.applied();
    let condition = site.kept.and_then(|k| k.configured.as_ref());
    // Nothing declared and nothing of the operator's on the site: nothing to check, once the
    // condition says so.
    let nothing_recorded = applied.is_none_or(|a| {
        a.added_admins.is_empty() && a.site_admins.is_empty() && a.storage_quota_mb.is_none()
    });
    if declared.is_empty() && nothing_recorded && condition.is_none_or(|c| c.status == ConditionStatus::True)
    {
        return None;
    }
    let Some(condition) = condition else { return Some(Timestamp::UNIX_EPOCH) };
    let Some(applied) = applied else { return Some(Timestamp::UNIX_EPOCH) };
    // A changed declaration (the site's spec, or the tenant's) is applied at once; so is one
    // whose removals are still to do — unless the last attempt failed: then the backoff holds
    // (an unknown administrator in the declaration must not be retried every cycle).
    let changed = applied.site_admins != declared.admins
        || applied.storage_quota_mb != declared.quota_mb
        || condition.observed_generation != Some(site.generation);
    let removals = applied.added_admins.iter().any(|a| !declared.admins.contains(a));
    let failed = condition.status != ConditionStatus::True;
    if changed || (removals && !failed) || (failed && site.new_retry().is_some()) {
        return Some(Timestamp::UNIX_EPOCH);
    }
    let checked = applied.checked_at.as_ref().map_or(Timestamp::UNIX_EPOCH, |t| t.0);
    let wait = match condition.reason {
        SiteReason::Configuring => TRANSIENT_RETRY,
        SiteReason::ConfigurationFailed | SiteReason::SettingsNotAllowed => limits.failed_recheck_interval,
        _ => limits.drift_check_interval,
    };
    Some(after(checked, wait))
}

/// The site's status after an attempt: `SiteConfigured`, `status.settings`, the retry value acted
/// on, and `Ready` with what the settings say — on top of the status the provisioning plan
/// writes in this cycle (or the one the site has). A passing failure writes too (`checkedAt`
/// moves, so the site waits `TRANSIENT_RETRY` before its next try).
pub fn status_after(site: &SiteInput, task: &Task, attempt: &Attempt, now: Timestamp) -> OneDriveSiteStatus {
    let now = whole_second(now);
    let base =
        site.planned.cloned().unwrap_or_else(|| site.kept.map(KeptStatus::to_status).unwrap_or_default());
    let previous = site.applied();
    let declared = &task.declared;
    // Ours: what we added before and still declare, plus what we added now; less what we removed.
    let mut added: Vec<String> = task
        .added
        .iter()
        .chain(&attempt.added)
        .filter(|a| !attempt.removed.contains(a))
        .filter(|a| declared.admins.contains(a) || attempt.failure.is_some())
        .cloned()
        .collect();
    added.sort();
    added.dedup();
    let changed = !attempt.added.is_empty() || !attempt.removed.is_empty() || attempt.quota_set;
    let settings = SiteSettingsStatus {
        site_admins: declared.admins.clone(),
        added_admins: added,
        storage_quota_mb: declared.quota_mb,
        applied_at: if changed { Some(Time(now)) } else { previous.and_then(|p| p.applied_at.clone()) },
        checked_at: Some(Time(now)),
    };
    let (configured, reason, message) = verdict(task, attempt, &settings, now);
    // A retry value is acted on (and recorded) only by an attempt on a site whose settings failed.
    let was_failed = site
        .kept
        .and_then(|k| k.configured.as_ref())
        .is_some_and(|c| c.status != ConditionStatus::True && c.reason != SiteReason::Configuring);
    let retry = if was_failed {
        site.new_retry().map(String::from).or(base.retry.clone())
    } else {
        base.retry.clone()
    };
    let mut status = OneDriveSiteStatus { settings: Some(settings), retry, ..base };
    let overlay = (configured != ConditionStatus::True).then(|| Overlay {
        reason,
        message: message.as_str().into(),
        stalled: reason != SiteReason::Configuring,
    });
    // The date the provisioning planner's `Provisioned` message gives: the state's own while it
    // holds (`status.since`), else when the site was first seen.
    let provisioned_now = site
        .kept
        .and_then(|k| k.ready.as_ref())
        .is_some_and(|c| c.reason == SiteReason::Provisioned && c.status == ConditionStatus::True)
        && site.planned.is_none();
    let provisioned = if provisioned_now { status.since.as_ref() } else { status.provisioned_at.as_ref() }
        .or(status.since.as_ref())
        .map_or(Timestamp::UNIX_EPOCH, |t| t.0);
    status.conditions = with_ready(
        ConditionSet::after_kept(site.kept, Some(site.generation), now),
        overlay,
        &task.url,
        provisioned,
    )
    .set(condition_type::SITE_CONFIGURED, configured, reason.as_str(), message)
    .build();
    status
}

/// `Ready`, `Reconciling` and `Stalled` of a site that exists: `Provisioned` (its message as the
/// provisioning planner words it), or what its settings say.
fn with_ready<'a>(
    set: ConditionSet<'a>,
    overlay: Option<Overlay>,
    url: &str,
    provisioned: Timestamp,
) -> ConditionSet<'a> {
    let (ready, reason, message, reconciling, stalled) = match overlay {
        Some(o) => (ConditionStatus::False, o.reason, o.message.into_owned(), !o.stalled, o.stalled),
        None => (
            ConditionStatus::True,
            SiteReason::Provisioned,
            Provisioned { url, since: provisioned }.to_string(),
            false,
            false,
        ),
    };
    set.set(condition_type::READY, ready, reason.as_str(), message)
        .set(condition_type::RECONCILING, ConditionStatus::of(reconciling), reason.as_str(), "")
        .set(condition_type::STALLED, ConditionStatus::of(stalled), reason.as_str(), "")
}

/// `SiteConfigured` after an attempt: its status, reason and message.
fn verdict(
    task: &Task,
    attempt: &Attempt,
    settings: &SiteSettingsStatus,
    now: Timestamp,
) -> (ConditionStatus, SiteReason, String) {
    if let Some(f) = &attempt.failure {
        let reason = if f.needs_person { SiteReason::ConfigurationFailed } else { SiteReason::Configuring };
        let next = if f.needs_person {
            "fix it; it is tried again hourly, or at once when the declaration or onedrive-operator.dev/retry changes"
        } else {
            "tried again shortly"
        };
        return (
            ConditionStatus::False,
            reason,
            format!("applying the declared settings failed at {now}: {}; {next}", f.message),
        );
    }
    if !task.declared.refused.is_empty() {
        return (
            ConditionStatus::False,
            SiteReason::SettingsNotAllowed,
            format!("{} (seen {now}); what the tenant allows is applied", task.declared.refused.join("; ")),
        );
    }
    let admins =
        if settings.site_admins.is_empty() { "none".to_string() } else { settings.site_admins.join(", ") };
    let quota = settings.storage_quota_mb.map_or("not managed".to_string(), |mb| format!("{mb} MB"));
    (
        ConditionStatus::True,
        SiteReason::Configured,
        format!("site administrators besides the owner: {admins}; storage quota: {quota} (as of {now})"),
    )
}
