//! What a tenant declares for its sites, what it lets a site declare for itself, and so what one
//! site's declaration comes to.

use std::collections::BTreeSet;

use crate::api::{OneDriveTenantSpec, storage_quota_mb};

/// The tenant's settings, read from its spec once a cycle.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SettingsPolicy {
    tenant: String,
    /// `spec.siteAdmins`, lower-case.
    admins: Vec<String>,
    /// `spec.storageQuota`, in MB.
    quota_mb: Option<i64>,
    /// `spec.perSite.allowedSiteAdmins`, lower-case.
    allowed: BTreeSet<String>,
    /// `spec.perSite.maxStorageQuota`, in MB, and as written.
    max_quota: Option<(i64, String)>,
}

/// One site's declaration under its tenant's policy.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Declared {
    /// The administrators to have (the tenant's and the site's allowed ones), lower-case, sorted.
    pub admins: Vec<String>,
    pub quota_mb: Option<i64>,
    /// What the tenant does not allow this site, each naming the tenant field that would.
    pub refused: Vec<String>,
}

impl Declared {
    pub fn is_empty(&self) -> bool {
        self.admins.is_empty() && self.quota_mb.is_none() && self.refused.is_empty()
    }
}

fn lower(s: &str) -> String {
    s.trim().to_lowercase()
}

impl SettingsPolicy {
    /// The policy of tenant `name`; a message naming the field when a value is unusable (the CRD
    /// refuses them first).
    pub fn from_spec(name: &str, spec: &OneDriveTenantSpec) -> Result<SettingsPolicy, String> {
        let per_site = spec.per_site.clone().unwrap_or_default();
        let max_quota = match &per_site.max_storage_quota {
            Some(q) => Some((storage_quota_mb("spec.perSite.maxStorageQuota", q)?, q.clone())),
            None => None,
        };
        let mut admins: Vec<String> = spec.site_admins.iter().map(|a| lower(a)).collect();
        admins.sort();
        admins.dedup();
        Ok(SettingsPolicy {
            tenant: name.to_string(),
            admins,
            quota_mb: spec
                .storage_quota
                .as_deref()
                .map(|q| storage_quota_mb("spec.storageQuota", q))
                .transpose()?,
            allowed: per_site.allowed_site_admins.iter().map(|a| lower(a)).collect(),
            max_quota,
        })
    }

    /// Whether the tenant declares anything for every site.
    pub fn declares(&self) -> bool {
        !self.admins.is_empty() || self.quota_mb.is_some()
    }

    /// A site's declaration: the tenant's, plus the site's own where the tenant allows it.
    pub fn declared(&self, site_admins: &[Box<str>], site_quota: Option<&str>) -> Declared {
        let mut admins = self.admins.clone();
        let mut refused = Vec::new();
        for a in site_admins.iter().map(|a| lower(a)) {
            if self.allowed.contains(&a) {
                admins.push(a);
            } else {
                refused.push(format!(
                    "spec.siteAdmins names {a}, whom OneDriveTenant {:?} does not allow per site: its owner may add them to spec.perSite.allowedSiteAdmins",
                    self.tenant
                ));
            }
        }
        admins.sort();
        admins.dedup();
        let mut quota_mb = self.quota_mb;
        if let Some(q) = site_quota {
            match (storage_quota_mb("spec.storageQuota", q), &self.max_quota) {
                (Err(e), _) => refused.push(e),
                (Ok(mb), Some((max, _))) if mb <= *max => quota_mb = Some(mb),
                (Ok(_), Some((_, max))) => refused.push(format!(
                    "spec.storageQuota {q} is more than OneDriveTenant {:?} allows per site (spec.perSite.maxStorageQuota {max})",
                    self.tenant
                )),
                (Ok(_), None) => refused.push(format!(
                    "spec.storageQuota {q} is not allowed: OneDriveTenant {:?} sets no spec.perSite.maxStorageQuota",
                    self.tenant
                )),
            }
        }
        Declared { admins, quota_mb, refused }
    }
}
