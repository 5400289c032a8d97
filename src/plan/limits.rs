//! The planner's tunables and the duration notation the spec uses.

use jiff::SignedDuration;

use crate::api::{MAX_BATCH_SIZE, OneDriveTenantSpec, parse_duration};

/// Tunables, mostly from the tenant's spec.
#[derive(Clone, Debug, PartialEq)]
pub struct Limits {
    /// Users per enqueue; always within 1..=200.
    pub batch_size: usize,
    /// How often an in-flight batch's last user (and any straggler) is checked.
    pub poll_interval: SignedDuration,
    /// How long a user may stay enqueued without a site.
    pub provisioning_timeout: SignedDuration,
    /// How often a Ready user's site is verified again.
    pub drift_check_interval: SignedDuration,
    /// How many Ready or Failed users are re-checked per cycle at most.
    pub recheck_per_cycle: usize,
    /// Site statuses one cycle writes at most; the rest are written by the next cycle, a second
    /// later (10,000 first statuses built at once were most of the operator's peak memory).
    pub site_updates_per_cycle: usize,
    /// How often a user the tenant refused (not found, not licensed, sign-in blocked, a profile
    /// verdict) or whose lookup keeps failing is checked again.
    pub failed_recheck_interval: SignedDuration,
    /// An observation "no site" older than this is repeated before the user is enqueued.
    pub enqueue_recheck_after: SignedDuration,
    /// Requeue interval when there is nothing to do.
    pub resync_interval: SignedDuration,
    /// Unclassifiable answers in a row before a user is reported `LookupFailing`.
    pub lookup_failing_after: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            batch_size: MAX_BATCH_SIZE as usize,
            poll_interval: SignedDuration::from_secs(60),
            provisioning_timeout: SignedDuration::from_hours(24),
            drift_check_interval: SignedDuration::from_hours(24),
            recheck_per_cycle: 100,
            site_updates_per_cycle: 2_000,
            failed_recheck_interval: SignedDuration::from_hours(1),
            // Re-enqueueing a user who got a site meanwhile is harmless (SharePoint ignores
            // them) but wastes a slot: a day-old "no site" is checked again, and the batch's last
            // user always is (see `plan`). Checking everyone hourly cost ~0.05 requests a user.
            enqueue_recheck_after: SignedDuration::from_hours(24),
            resync_interval: SignedDuration::from_mins(10),
            // One odd answer is noise; three in a row (minutes apart) is a pattern worth showing.
            lookup_failing_after: 3,
        }
    }
}

impl Limits {
    /// Limits from a tenant spec; a message naming the field when a value is unusable.
    pub fn from_spec(spec: &OneDriveTenantSpec) -> Result<Limits, String> {
        if spec.batch_size < 1 || spec.batch_size > MAX_BATCH_SIZE {
            return Err(format!(
                "spec.batchSize: {} is outside 1..=200 (SharePoint accepts at most 200 users per request)",
                spec.batch_size
            ));
        }
        // Checked here so that a bad policy stops the tenant (InvalidSpec) like any bad field.
        super::NamespacePolicy::from_spec(spec)?;
        super::settings::SettingsPolicy::from_spec("", spec)?;
        Ok(Limits {
            batch_size: spec.batch_size as usize,
            poll_interval: parse_duration("spec.pollInterval", &spec.poll_interval)?,
            provisioning_timeout: parse_duration("spec.provisioningTimeout", &spec.provisioning_timeout)?,
            drift_check_interval: parse_duration("spec.driftCheckInterval", &spec.drift_check_interval)?,
            ..Limits::default()
        })
    }

    pub(super) fn batch_size(&self) -> usize {
        self.batch_size.clamp(1, MAX_BATCH_SIZE as usize)
    }
}

/// `90s`, `15m`, `24h`, `1h30m`: the notation the spec uses.
pub fn format_duration(d: SignedDuration) -> String {
    SpecDuration(d).to_string()
}

/// Displays a duration in the spec's notation (see [`format_duration`]).
pub(super) struct SpecDuration(pub(super) SignedDuration);

impl std::fmt::Display for SpecDuration {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let secs = self.0.as_secs();
        let (h, m, s) = (secs / 3600, (secs % 3600) / 60, secs % 60);
        if h > 0 {
            write!(f, "{h}h")?;
        }
        if m > 0 {
            write!(f, "{m}m")?;
        }
        if s > 0 || (h == 0 && m == 0) {
            write!(f, "{s}s")?;
        }
        Ok(())
    }
}
