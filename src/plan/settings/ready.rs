//! What `Ready` says of a site that exists while its declared settings are not applied: the
//! one rule both the provisioning planner and the settings planner write by.

use std::borrow::Cow;

use crate::api::{ConditionStatus, KeptStatus, SiteReason};

/// `Ready` of an existing site whose settings are not (yet) applied.
#[derive(Clone, Debug, PartialEq)]
pub struct Overlay<'a> {
    pub reason: SiteReason,
    pub message: Cow<'a, str>,
    /// A person must act (`ConfigurationFailed`, `SettingsNotAllowed`).
    pub stalled: bool,
}

/// `None`: `Ready` says `Provisioned`. Otherwise what `SiteConfigured` says, or — before the
/// settings were first looked at — `Configuring`.
pub fn overlay<'a>(kept: Option<&'a KeptStatus>, declares: bool, url: &str) -> Option<Overlay<'a>> {
    match kept.and_then(|k| k.configured.as_ref()) {
        Some(c) if c.status == ConditionStatus::True => None,
        Some(c) => Some(Overlay {
            reason: c.reason,
            message: Cow::Borrowed(&c.message),
            stalled: c.reason != SiteReason::Configuring,
        }),
        None if declares => Some(Overlay {
            reason: SiteReason::Configuring,
            message: Cow::Owned(not_yet(url)),
            stalled: false,
        }),
        None => None,
    }
}

/// `Ready`'s message for a site that exists: one wording for both planners (the provisioning
/// planner writes it, the settings planner writes it again once a site is configured; a status
/// is rewritten only when they differ, so they must not).
pub struct Provisioned<'a> {
    pub url: &'a str,
    /// When the site was first seen.
    pub since: jiff::Timestamp,
}

impl std::fmt::Display for Provisioned<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "the OneDrive exists at {} (first seen {})", self.url, self.since)
    }
}

/// The message of a site whose settings were not looked at yet.
fn not_yet(url: &str) -> String {
    format!(
        "the OneDrive exists at {url}; its declared site administrators and storage quota are applied next"
    )
}
