//! Admission: which of a tenant's sites its `spec.allowedNamespaces` serves. Runs in the gather
//! phase, before users are grouped; refused sites are marked `TenantNotAllowed` in the write
//! phase and are otherwise invisible to the cycle (never looked up, never enqueued).

use std::sync::Arc;

use super::events::EventType;
use k8s_openapi::api::core::v1::Namespace;
use kube::ResourceExt;
use kube::core::PartialObjectMeta;
use kube::runtime::reflector::ObjectRef;

use super::ControllerError;
use super::reconciler::Reconciler;
use super::site_cache::Snapshot;
use crate::api::{KeptSite, OneDriveTenant, SiteReason, condition_type, find_condition};
use crate::plan::{self, Admission, DesiredSite, NamespacePolicy};

/// A tenant's sites, split by its namespace policy.
pub(super) struct Admitted {
    pub(super) sites: Snapshot,
    /// Refused sites whose status does not say so yet, with that status.
    pub(super) refused: Vec<(Arc<KeptSite>, plan::SiteUpdate)>,
}

impl Reconciler {
    /// Splits `sites` by the tenant's policy. A policy that does not parse admits every site:
    /// the tenant is `InvalidSpec` then, which stops all work anyway.
    pub(super) async fn admit(
        &self,
        tenant: &OneDriveTenant,
        sites: Snapshot,
    ) -> Result<Admitted, ControllerError> {
        let Ok(Some(policy)) = NamespacePolicy::from_spec(&tenant.spec) else {
            return Ok(Admitted { sites, refused: Vec::new() });
        };
        let name = tenant.name_any();
        let now = (self.options.clock)();
        let mut admitted = Vec::with_capacity(sites.len());
        let mut refused = Vec::new();
        for site in sites.iter() {
            let namespace = &*site.namespace;
            // Looked up in the cache only when the policy has a selector (names need no labels).
            let cached = policy.needs_labels().then(|| self.cached_namespace(namespace)).flatten();
            match policy.admits(namespace, cached.as_ref().map(|ns| ns.labels())) {
                Admission::Allowed => admitted.push(site.clone()),
                Admission::Unknown => {}
                Admission::Refused => {
                    let desired = DesiredSite::from_resource(site);
                    let status = plan::tenant_not_allowed_status(&desired, &name, now);
                    if let Some(update) = plan::SiteUpdate::replacing(&desired, status) {
                        refused.push((site.clone(), update));
                    }
                }
            }
        }
        Ok(Admitted { sites: admitted.into(), refused })
    }

    /// A namespace as cached (not cached yet: its sites are `Unknown` this cycle).
    fn cached_namespace(&self, name: &str) -> Option<Arc<PartialObjectMeta<Namespace>>> {
        self.options.namespaces.get(&ObjectRef::new(name))
    }

    /// Writes the refused sites' statuses, with a Warning Event on each newly refused site.
    pub(super) async fn write_refused(
        &self,
        refused: &[(Arc<KeptSite>, plan::SiteUpdate)],
    ) -> Result<usize, ControllerError> {
        for (site, update) in refused {
            self.write_site(update).await?;
            let reason = SiteReason::TenantNotAllowed.as_str();
            let was_refused = site
                .status
                .as_ref()
                .and_then(|s| s.ready.as_ref())
                .is_some_and(|c| c.reason == SiteReason::TenantNotAllowed);
            if !was_refused {
                let note = find_condition(&update.status.conditions, condition_type::READY)
                    .map_or("", |c| c.message.as_str());
                self.publish(EventType::Warning, reason, note, site.object_ref()).await;
            }
        }
        Ok(refused.len())
    }
}
