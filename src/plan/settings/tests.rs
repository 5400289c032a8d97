use std::borrow::Cow;

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use super::*;
use crate::api::{KeptStatus, OneDriveTenantSpec, PerSiteSettings, find_condition};

fn t(s: i64) -> Timestamp {
    Timestamp::from_second(1_800_000_000 + s).unwrap()
}

fn policy(admins: &[&str], quota: Option<&str>, allowed: &[&str], max: Option<&str>) -> SettingsPolicy {
    let spec = OneDriveTenantSpec {
        site_admins: admins.iter().map(|a| a.to_string()).collect(),
        storage_quota: quota.map(String::from),
        per_site: Some(PerSiteSettings {
            allowed_site_admins: allowed.iter().map(|a| a.to_string()).collect(),
            max_storage_quota: max.map(String::from),
        }),
        ..Default::default()
    };
    SettingsPolicy::from_spec("contoso", &spec).unwrap()
}

/// A Ready site's status, as the provisioning planner writes it.
fn ready_status() -> OneDriveSiteStatus {
    OneDriveSiteStatus {
        observed_generation: Some(1),
        phase: Some(SitePhase::Ready),
        site_url: Some("https://contoso-my.sharepoint.com/personal/a_contoso_com/".into()),
        provisioned_at: Some(Time(t(0))),
        since: Some(Time(t(0))),
        ..Default::default()
    }
}

struct Site {
    key: SiteKey<'static>,
    kept: KeptStatus,
    admins: Vec<Box<str>>,
    quota: Option<&'static str>,
    retry: Option<&'static str>,
}

impl Site {
    fn new(status: OneDriveSiteStatus) -> Site {
        Site {
            key: SiteKey { namespace: Cow::Borrowed("team-a"), name: Cow::Borrowed("a") },
            kept: KeptStatus::from(&status),
            admins: Vec::new(),
            quota: None,
            retry: None,
        }
    }

    fn input(&self) -> SiteInput<'_> {
        SiteInput {
            namespace: &self.key.namespace,
            name: &self.key.name,
            generation: 1,
            kept: Some(&self.kept),
            planned: None,
            site_admins: &self.admins,
            storage_quota: self.quota,
            retry: self.retry,
        }
    }

    /// One cycle at `now`: the site's task, if due, done with `attempt`; its status kept.
    fn cycle(
        &mut self,
        p: &SettingsPolicy,
        now: Timestamp,
        attempt: impl FnOnce(&Task) -> Attempt,
    ) -> Option<Task> {
        let due = due(p, [self.input()], &Limits::default(), now, SITES_PER_MINUTE);
        let task = due.tasks.into_iter().next()?;
        let status = status_after(&self.input(), &task, &attempt(&task), now);
        self.kept = KeptStatus::from(&status);
        Some(task)
    }

    fn condition(&self, type_: &str) -> (ConditionStatus, SiteReason, String) {
        let c = self.kept.condition(type_).unwrap();
        (c.status, c.reason, c.message.to_string())
    }
}

fn all_added(task: &Task) -> Attempt {
    Attempt {
        added: task.declared.admins.clone(),
        quota_set: task.declared.quota_mb.is_some(),
        ..Default::default()
    }
}

#[test]
fn a_site_may_name_only_the_admins_and_quota_its_tenant_allows() {
    let p = policy(&["Migration@contoso.com"], Some("2Ti"), &["helpdesk@contoso.com"], Some("3Ti"));
    let d = p.declared(&["helpdesk@contoso.com".into(), "mallory@contoso.com".into()], Some("3Ti"));
    assert_eq!(d.admins, vec!["helpdesk@contoso.com", "migration@contoso.com"]);
    assert_eq!(d.quota_mb, Some(3 * 1_048_576));
    assert_eq!(d.refused.len(), 1);
    assert!(
        d.refused[0].contains("mallory@contoso.com")
            && d.refused[0].contains("spec.perSite.allowedSiteAdmins")
    );
    let over = p.declared(&[], Some("4Ti"));
    assert_eq!(over.quota_mb, Some(2 * 1_048_576), "the tenant's quota stays");
    assert!(over.refused[0].contains("spec.perSite.maxStorageQuota 3Ti"));
    let none = policy(&[], None, &[], None).declared(&["me@contoso.com".into()], Some("1Ti"));
    assert!(none.admins.is_empty() && none.quota_mb.is_none());
    assert_eq!(none.refused.len(), 2, "by default a site may declare nothing: {:?}", none.refused);
}

#[test]
fn a_new_site_is_configured_then_checked_again_with_the_drift_check() {
    let p = policy(&["migration@contoso.com"], Some("2Ti"), &[], None);
    let mut site = Site::new(ready_status());
    let task = site.cycle(&p, t(10), all_added).expect("due at once");
    assert_eq!(task.declared.admins, vec!["migration@contoso.com"]);
    let (status, reason, message) = site.condition(condition_type::SITE_CONFIGURED);
    assert_eq!((status, reason), (ConditionStatus::True, SiteReason::Configured));
    assert!(message.contains("migration@contoso.com") && message.contains("2097152 MB"), "{message}");
    assert_eq!(site.condition(condition_type::READY).1, SiteReason::Provisioned);
    let applied = site.kept.settings.as_deref().unwrap();
    assert_eq!(applied.added_admins, vec!["migration@contoso.com"]);
    assert_eq!(applied.applied_at, Some(Time(t(10))));
    assert!(site.cycle(&p, t(20), all_added).is_none(), "nothing due until the drift check");
    let drift = t(10) + SignedDuration::from_hours(24);
    assert!(site.cycle(&p, drift, |_| Attempt::default()).is_some(), "the drift check is due");
}

#[test]
fn an_admin_someone_else_added_is_never_taken_for_the_operators_and_only_its_own_are_removed() {
    let p = policy(&["migration@contoso.com", "audit@contoso.com"], None, &[], None);
    let mut site = Site::new(ready_status());
    // audit@ was there already: not added.
    site.cycle(&p, t(10), |_| Attempt { added: vec!["migration@contoso.com".into()], ..Default::default() });
    assert_eq!(site.kept.settings.as_deref().unwrap().added_admins, vec!["migration@contoso.com"]);
    // Both leave the declaration: only migration@ is the operator's to remove.
    let none = policy(&[], None, &[], None);
    let task = site.cycle(&none, t(20), |task| Attempt {
        removed: task.to_remove().cloned().collect(),
        ..Default::default()
    });
    let task = task.expect("due: the declaration changed");
    assert_eq!(task.to_remove().collect::<Vec<_>>(), vec!["migration@contoso.com"]);
    assert!(site.kept.settings.as_deref().unwrap().added_admins.is_empty());
    assert!(
        site.cycle(&none, t(30) + SignedDuration::from_hours(48), |_| Attempt::default()).is_none(),
        "nothing of ours is left: never due again"
    );
}

#[test]
fn an_unknown_admin_fails_once_an_hour_and_a_fixed_spec_or_a_retry_applies_at_once() {
    let p = policy(&["ghost@contoso.com"], None, &[], None);
    let mut site = Site::new(ready_status());
    let fail = |_: &Task| Attempt {
        failure: Some(Failure {
            needs_person: true,
            message: "SetSiteAdmin: SharePoint does not know the user ghost@contoso.com".into(),
        }),
        ..Default::default()
    };
    site.cycle(&p, t(10), fail).unwrap();
    let (status, reason, message) = site.condition(condition_type::SITE_CONFIGURED);
    assert_eq!((status, reason), (ConditionStatus::False, SiteReason::ConfigurationFailed));
    assert!(message.contains("ghost@contoso.com"), "{message}");
    let ready = site.condition(condition_type::READY);
    assert_eq!((ready.0, ready.1), (ConditionStatus::False, SiteReason::ConfigurationFailed));
    assert_eq!(site.condition(condition_type::STALLED).0, ConditionStatus::True);
    // Bounded: not again within the hour, whatever the number of cycles.
    for minute in 1..60 {
        assert!(site.cycle(&p, t(10 + minute * 60), fail).is_none(), "minute {minute}");
    }
    assert!(site.cycle(&p, t(10) + SignedDuration::from_hours(1), fail).is_some());
    // A new retry value asks at once, once.
    site.retry = Some("1");
    assert!(site.cycle(&p, t(3700), fail).is_some());
    assert_eq!(site.kept.retry.as_deref(), Some("1"));
    assert!(site.cycle(&p, t(3760), fail).is_none(), "the same value is not acted on twice");
    // The fixed declaration applies at once, and Ready follows.
    let fixed = policy(&["real@contoso.com"], None, &[], None);
    site.cycle(&fixed, t(3800), all_added).unwrap();
    assert_eq!(site.condition(condition_type::READY).1, SiteReason::Provisioned);
    assert_eq!(site.condition(condition_type::STALLED).0, ConditionStatus::False);
}

#[test]
fn throttling_leaves_a_site_configuring_and_tried_again_shortly() {
    let p = policy(&["migration@contoso.com"], None, &[], None);
    let mut site = Site::new(ready_status());
    site.cycle(&p, t(10), |_| Attempt {
        failure: Some(Failure { needs_person: false, message: "GetSitePropertiesByUrl: throttled".into() }),
        ..Default::default()
    });
    let ready = site.condition(condition_type::READY);
    assert_eq!((ready.0, ready.1), (ConditionStatus::False, SiteReason::Configuring));
    assert_eq!(site.condition(condition_type::STALLED).0, ConditionStatus::False);
    assert!(site.cycle(&p, t(30), all_added).is_none());
    // Throttled again: tried once a minute, not every cycle.
    let throttled = |_: &Task| Attempt {
        failure: Some(Failure { needs_person: false, message: "throttled".into() }),
        ..Default::default()
    };
    assert!(site.cycle(&p, t(70), throttled).is_some());
    assert!(site.cycle(&p, t(100), throttled).is_none());
    assert!(site.cycle(&p, t(130), all_added).is_some());
    assert_eq!(site.condition(condition_type::SITE_CONFIGURED).1, SiteReason::Configured);
}

#[test]
fn only_sites_that_exist_are_configured_a_bounded_number_per_cycle() {
    let p = policy(&["migration@contoso.com"], None, &[], None);
    let pending = Site::new(OneDriveSiteStatus { phase: Some(SitePhase::Pending), ..Default::default() });
    assert!(due(&p, [pending.input()], &Limits::default(), t(0), SITES_PER_MINUTE).tasks.is_empty());
    let ready: Vec<Site> = (0..SITES_PER_MINUTE + 5).map(|_| Site::new(ready_status())).collect();
    let mut pace = Pace::default();
    let d = due(&p, ready.iter().map(Site::input), &Limits::default(), t(0), pace.allowance(t(0)));
    assert_eq!(d.tasks.len(), SITES_PER_MINUTE);
    assert!(d.more);
    pace.spend(t(0), d.tasks.len());
    assert_eq!(pace.allowance(t(30)), 0, "the minute's sites are spent");
    assert_eq!(pace.next_minute(t(30)), t(60));
    assert_eq!(pace.allowance(t(60)), SITES_PER_MINUTE);
    let nothing = policy(&[], None, &[], None);
    assert!(
        due(&nothing, ready.iter().map(Site::input), &Limits::default(), t(0), SITES_PER_MINUTE)
            .tasks
            .is_empty(),
        "nothing declared, nothing to do"
    );
}

#[test]
fn ready_waits_for_declared_settings() {
    let kept = KeptStatus::from(&ready_status());
    let o = overlay(Some(&kept), true, "https://x/personal/a/").expect("configuring");
    assert_eq!(o.reason, SiteReason::Configuring);
    assert!(!o.stalled);
    assert_eq!(overlay(Some(&kept), false, "https://x/"), None, "nothing declared: Provisioned");
    let p = policy(&["m@contoso.com"], None, &[], None);
    let mut site = Site::new(ready_status());
    site.cycle(&p, t(1), all_added);
    assert_eq!(overlay(Some(&site.kept), true, "https://x/"), None, "configured: Provisioned");
    let status = site.kept.to_status();
    assert!(find_condition(&status.conditions, condition_type::SITE_CONFIGURED).is_some());
}

#[test]
fn a_swapped_admin_that_fails_waits_for_the_backoff_with_its_removal() {
    // The tenant swaps migration account A for a misspelled B: adding B fails; removing A is done
    // in the same attempt, and nothing is tried again before the hour.
    let a = policy(&["a@contoso.com"], None, &[], None);
    let mut site = Site::new(ready_status());
    site.cycle(&a, t(10), all_added).unwrap();
    let b = policy(&["b@contoso.com"], None, &[], None);
    let task = site
        .cycle(&b, t(20), |task| Attempt {
            removed: task.to_remove().cloned().collect(),
            failure: Some(Failure {
                needs_person: true,
                message: "SetSiteAdmin: unknown b@contoso.com".into(),
            }),
            ..Default::default()
        })
        .unwrap();
    assert_eq!(task.to_remove().collect::<Vec<_>>(), vec!["a@contoso.com"]);
    assert!(site.kept.settings.as_deref().unwrap().added_admins.is_empty(), "a was removed");
    for minute in 1..60 {
        assert!(site.cycle(&b, t(20 + minute * 60), all_added).is_none(), "minute {minute}");
    }
    // A removal that failed too stays the operator's, and waits the same hour.
    let mut site = Site::new(ready_status());
    site.cycle(&a, t(10), all_added).unwrap();
    site.cycle(&b, t(20), |_| Attempt {
        failure: Some(Failure { needs_person: true, message: "SetSiteAdmin: unknown b@contoso.com".into() }),
        ..Default::default()
    });
    assert_eq!(site.kept.settings.as_deref().unwrap().added_admins, vec!["a@contoso.com"]);
    assert!(site.cycle(&b, t(80), all_added).is_none(), "not every cycle");
    assert!(
        site.cycle(&b, t(20) + SignedDuration::from_hours(1), |t| Attempt {
            added: t.declared.admins.clone(),
            removed: t.to_remove().cloned().collect(),
            ..Default::default()
        })
        .is_some()
    );
    assert!(site.kept.settings.as_deref().unwrap().added_admins == vec!["b@contoso.com"]);
}
