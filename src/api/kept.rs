//! A `OneDriveSite` as the operator keeps it in memory: its identity, its user and tenant, and
//! its status with the conditions' types, statuses and reasons as enums. A whole `OneDriveSite`
//! holds about twenty heap strings (metadata, three conditions of four strings each); this keeps
//! about 0.9 KiB a site (the allocator's count in `bench engine`), and reading it touches no
//! condition type, status or reason string. A condition of the operator's own that a kept status
//! cannot say exactly (a reason this version does not know) marks it `foreign`, so the operator
//! rewrites it rather than mistaking it for its own; other writers' conditions are left to them.

use jiff::Timestamp;
use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::Resource;

use super::{ConditionStatus, OneDriveSite, OneDriveSiteStatus, SitePhase, SiteReason, condition_type};

/// The fields of a `OneDriveSite` the operator reads.
#[derive(Clone, Debug, PartialEq)]
pub struct KeptSite {
    pub namespace: Box<str>,
    pub name: Box<str>,
    pub uid: Option<Box<str>>,
    pub generation: Option<i64>,
    pub created: Option<Timestamp>,
    pub user: Box<str>,
    /// `spec.tenantRef.name`.
    pub tenant: Option<Box<str>>,
    /// `spec.siteAdmins` (usually none: an empty box allocates nothing).
    pub site_admins: Box<[Box<str>]>,
    /// `spec.storageQuota`.
    pub storage_quota: Option<Box<str>>,
    /// The `onedrive-operator.dev/retry` annotation's value.
    pub retry: Option<Box<str>>,
    /// The uid of the `OneDriveSiteSet` controlling the site (its controller owner reference),
    /// and what the set last declared for it (`onedrive-operator.dev/set-template`).
    pub owner: Option<Box<SetOwner>>,
    /// Boxed: a new site has none, and the cache stays one small allocation per site until then.
    pub status: Option<Box<KeptStatus>>,
}

/// The `OneDriveSiteSet` a site belongs to (boxed in [`KeptSite`]: most sites have none).
#[derive(Clone, Debug, PartialEq)]
pub struct SetOwner {
    pub uid: Box<str>,
    /// The digest of the declaration the set applied (absent: not applied by a set).
    pub template: Option<Box<str>>,
}

impl SetOwner {
    fn of(site: &OneDriveSite) -> Option<SetOwner> {
        let meta = &site.metadata;
        let owner = meta.owner_references.as_ref()?.iter().find(|o| {
            o.controller == Some(true)
                && o.kind == super::OneDriveSiteSet::kind(&())
                && o.api_version == super::OneDriveSiteSet::api_version(&())
        })?;
        let template = meta.annotations.as_ref().and_then(|a| a.get(super::annotations::SET_TEMPLATE));
        Some(SetOwner { uid: owner.uid.as_str().into(), template: template.map(|t| Box::from(t.as_str())) })
    }
}

/// A site's status as kept: what the planner reads and compares.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct KeptStatus {
    pub observed_generation: Option<i64>,
    pub phase: Option<SitePhase>,
    pub site_url: Option<Box<str>>,
    pub geo: Option<Box<str>>,
    pub enqueued_at: Option<Timestamp>,
    pub batch: Option<i64>,
    pub provisioned_at: Option<Timestamp>,
    pub since: Option<Timestamp>,
    pub ready: Option<KeptCondition>,
    pub reconciling: Option<KeptCondition>,
    pub stalled: Option<KeptCondition>,
    /// `SiteConfigured`, on a site whose settings the operator applies.
    pub configured: Option<KeptCondition>,
    /// `status.settings`: what was applied (boxed: most sites declare nothing).
    pub settings: Option<Box<super::SiteSettingsStatus>>,
    /// `status.retry`.
    pub retry: Option<Box<str>>,
    /// One of the operator's conditions holds something the fields above cannot say (a second
    /// condition of its type, a status or reason this version does not know). Conditions of
    /// other types are other writers' (server-side apply keeps them): not kept, not foreign.
    pub foreign: bool,
}

/// One of the conditions the operator writes on a site.
#[derive(Clone, Debug, PartialEq)]
pub struct KeptCondition {
    pub status: ConditionStatus,
    pub reason: SiteReason,
    pub message: Box<str>,
    pub observed_generation: Option<i64>,
    pub last_transition_time: Timestamp,
}

impl KeptSite {
    /// `None` without a namespace or a name (the API server always sets both).
    pub fn new(site: &OneDriveSite) -> Option<KeptSite> {
        let meta = &site.metadata;
        Some(KeptSite {
            namespace: meta.namespace.as_deref()?.into(),
            name: meta.name.as_deref()?.into(),
            uid: meta.uid.as_deref().map(Box::from),
            generation: meta.generation,
            created: meta.creation_timestamp.as_ref().map(|t| t.0),
            user: site.spec.user.as_str().into(),
            tenant: site.spec.tenant_ref.as_ref().map(|r| r.name.as_str().into()),
            site_admins: site.spec.site_admins.iter().map(|a| Box::from(a.as_str())).collect(),
            storage_quota: site.spec.storage_quota.as_deref().map(Box::from),
            retry: meta
                .annotations
                .as_ref()
                .and_then(|a| a.get(super::annotations::RETRY))
                .map(|v| Box::from(v.as_str())),
            owner: SetOwner::of(site).map(Box::new),
            status: site.status.as_ref().map(|s| Box::new(KeptStatus::from(s))),
        })
    }

    /// What Events about the site point at.
    pub fn object_ref(&self) -> ObjectReference {
        ObjectReference {
            api_version: Some(OneDriveSite::api_version(&()).into_owned()),
            kind: Some(OneDriveSite::kind(&()).into_owned()),
            namespace: Some(self.namespace.to_string()),
            name: Some(self.name.to_string()),
            uid: self.uid.as_deref().map(String::from),
            ..ObjectReference::default()
        }
    }
}

impl KeptStatus {
    /// Whether `status` is exactly what this kept status says.
    pub fn is(&self, status: &OneDriveSiteStatus) -> bool {
        !self.foreign && *self == KeptStatus::from(status)
    }

    pub fn condition(&self, type_: &str) -> Option<&KeptCondition> {
        match type_ {
            condition_type::READY => self.ready.as_ref(),
            condition_type::RECONCILING => self.reconciling.as_ref(),
            condition_type::STALLED => self.stalled.as_ref(),
            condition_type::SITE_CONFIGURED => self.configured.as_ref(),
            _ => None,
        }
    }

    /// The whole status again, as far as it was kept (a foreign part is lost).
    pub fn to_status(&self) -> OneDriveSiteStatus {
        let time = |t: Option<Timestamp>| t.map(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time);
        let conditions = [
            (condition_type::READY, &self.ready),
            (condition_type::RECONCILING, &self.reconciling),
            (condition_type::STALLED, &self.stalled),
            (condition_type::SITE_CONFIGURED, &self.configured),
        ]
        .into_iter()
        .filter_map(|(type_, c)| Some(c.as_ref()?.to_condition(type_)))
        .collect();
        OneDriveSiteStatus {
            observed_generation: self.observed_generation,
            phase: self.phase,
            site_url: self.site_url.as_deref().map(String::from),
            enqueued_at: time(self.enqueued_at),
            batch: self.batch,
            geo: self.geo.as_deref().map(String::from),
            provisioned_at: time(self.provisioned_at),
            since: time(self.since),
            settings: self.settings.as_deref().cloned(),
            retry: self.retry.as_deref().map(String::from),
            conditions,
        }
    }
}

impl From<&OneDriveSiteStatus> for KeptStatus {
    fn from(s: &OneDriveSiteStatus) -> KeptStatus {
        let mut kept = KeptStatus {
            observed_generation: s.observed_generation,
            phase: s.phase,
            site_url: s.site_url.as_deref().map(Box::from),
            geo: s.geo.as_deref().map(Box::from),
            enqueued_at: s.enqueued_at.as_ref().map(|t| t.0),
            batch: s.batch,
            provisioned_at: s.provisioned_at.as_ref().map(|t| t.0),
            since: s.since.as_ref().map(|t| t.0),
            settings: s.settings.clone().map(Box::new),
            retry: s.retry.as_deref().map(Box::from),
            ..KeptStatus::default()
        };
        for c in &s.conditions {
            let slot = match c.type_.as_str() {
                condition_type::READY => &mut kept.ready,
                condition_type::RECONCILING => &mut kept.reconciling,
                condition_type::STALLED => &mut kept.stalled,
                condition_type::SITE_CONFIGURED => &mut kept.configured,
                _ => continue,
            };
            match (slot.is_none(), KeptCondition::new(c)) {
                (true, Some(k)) => *slot = Some(k),
                _ => kept.foreign = true,
            }
        }
        kept
    }
}

impl KeptCondition {
    fn new(c: &Condition) -> Option<KeptCondition> {
        Some(KeptCondition {
            status: ConditionStatus::parse(&c.status)?,
            reason: SiteReason::parse(&c.reason)?,
            message: c.message.as_str().into(),
            observed_generation: c.observed_generation,
            last_transition_time: c.last_transition_time.0,
        })
    }

    pub(super) fn to_condition(&self, type_: &str) -> Condition {
        super::condition(
            type_,
            self.status,
            self.reason.as_str(),
            &*self.message,
            self.observed_generation,
            k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(self.last_transition_time),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{ConditionSet, OneDriveSiteSpec};

    fn status(extra: Option<Condition>) -> OneDriveSiteStatus {
        let now = Timestamp::from_second(1_800_000_000).unwrap();
        let mut conditions = ConditionSet::new(&[], Some(2), now)
            .set(condition_type::READY, ConditionStatus::True, "Provisioned", "the OneDrive exists")
            .set(condition_type::RECONCILING, ConditionStatus::False, "Provisioned", "")
            .set(condition_type::STALLED, ConditionStatus::False, "Provisioned", "")
            .build();
        conditions.extend(extra);
        OneDriveSiteStatus {
            observed_generation: Some(2),
            phase: Some(SitePhase::Ready),
            site_url: Some("https://contoso-my.sharepoint.com/personal/a_contoso_com/".into()),
            since: Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(now)),
            conditions,
            ..OneDriveSiteStatus::default()
        }
    }

    #[test]
    fn an_operator_status_is_kept_exactly() {
        let full = status(None);
        let kept = KeptStatus::from(&full);
        assert!(!kept.foreign);
        assert!(kept.is(&full));
        assert_eq!(kept.to_status(), full);
        assert_eq!(kept.condition(condition_type::READY).map(|c| c.reason), Some(SiteReason::Provisioned));
    }

    #[test]
    fn what_cannot_be_kept_exactly_marks_the_status_foreign() {
        let mut other = status(None).conditions[0].clone();
        other.type_ = "Audited".into();
        let with_other = status(Some(other));
        assert!(KeptStatus::from(&with_other).is(&status(None)), "another writer's condition is theirs");
        let mut unknown = status(None);
        unknown.conditions[0].reason = "SomethingNew".into();
        let kept = KeptStatus::from(&unknown);
        assert!(kept.foreign && kept.ready.is_none(), "an unknown reason");
        assert!(!kept.is(&unknown), "a foreign status is never taken for the operator's own");
        let twice = status(Some(status(None).conditions[0].clone()));
        assert!(KeptStatus::from(&twice).foreign, "a second Ready condition");
    }

    #[test]
    fn a_site_without_name_or_namespace_is_not_kept() {
        let mut site =
            OneDriveSite::new("a", OneDriveSiteSpec { user: "a@contoso.com".into(), ..Default::default() });
        assert_eq!(KeptSite::new(&site), None, "no namespace");
        site.metadata.namespace = Some("team-a".into());
        let kept = KeptSite::new(&site).expect("kept");
        assert_eq!((&*kept.namespace, &*kept.name, &*kept.user), ("team-a", "a", "a@contoso.com"));
        let reference = kept.object_ref();
        assert_eq!(reference.kind.as_deref(), Some("OneDriveSite"));
        assert_eq!(reference.name.as_deref(), Some("a"));
    }
}
