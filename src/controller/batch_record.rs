//! Where the users of the batches in flight are kept: a ConfigMap in the operator's namespace,
//! one per tenant (`<tenant>.onedrive-batches`, owned by the tenant so it goes with it), one entry
//! per batch (`batch-<id>-<digest>` → its users, one a line, in the order sent).
//!
//! The tenant is cluster-scoped: whoever may read tenants must not read the user names of every
//! namespace. So its status records a batch's id, size, times and the key of its entry, and the
//! entry is written *before* the tenant's fenced record: whenever a tenant says a batch is in
//! flight, its users can be read back, by this process after a crash or by the next leader. The
//! key carries a digest of the users, so an entry written by a process whose record lost the race
//! is never read as the winner's.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, ObjectMeta, Patch, PatchParams, PostParams};
use kube::{Resource, ResourceExt};
use serde_json::json;
use sha2::{Digest, Sha256};

use super::ControllerError;
use super::reconciler::Reconciler;
use crate::api::{BatchStatus, OneDriveTenant};
use crate::plan::tenant::Pipeline;

/// The name of the tenant's record (a DNS subdomain; a long tenant name is shortened by a hash).
pub(super) fn record_name(tenant: &str) -> String {
    let name = format!("{tenant}.onedrive-batches");
    if name.len() <= 253 {
        return name;
    }
    format!("{}-{}.onedrive-batches", tenant[..200].trim_end_matches(['.', '-']), hex(tenant, 8))
}

/// The first `bytes` bytes of `text`'s SHA-256, in hex.
fn hex(text: &str, bytes: usize) -> String {
    Sha256::digest(text.as_bytes())[..bytes].iter().map(|b| format!("{b:02x}")).collect()
}

/// `batch-<id>-<digest of the users>`.
fn key(id: i64, users: &[String]) -> String {
    format!("batch-{id}-{}", hex(&users.join("\n"), 8))
}

/// What became of a recorded batch whose users were looked for.
#[derive(Debug, PartialEq)]
pub(super) enum Recall {
    /// Every batch in flight has its users.
    Complete,
    /// These batches' users could not be read back (their record was deleted or altered): each
    /// is dropped, and its users are planned again.
    Lost(Vec<i64>),
}

impl Reconciler {
    fn records(&self) -> Api<ConfigMap> {
        Api::namespaced(self.client.clone(), &self.options.namespace)
    }

    /// Reads back the users of every batch in flight that the tenant recorded without them.
    pub(super) async fn recall_batches(
        &self,
        tenant: &str,
        pipelines: &mut [Pipeline],
    ) -> Result<Recall, ControllerError> {
        let wanted = |b: &BatchStatus| b.users.is_empty() && b.size > 0;
        if !pipelines.iter().any(|p| p.batch.as_ref().is_some_and(wanted)) {
            return Ok(Recall::Complete);
        }
        let data = self
            .records()
            .get_opt(&record_name(tenant))
            .await
            .map_err(ControllerError::kube)?
            .and_then(|c| c.data)
            .unwrap_or_default();
        let mut lost = Vec::new();
        for p in pipelines.iter_mut() {
            let Some(b) = p.batch.as_mut().filter(|b| wanted(b)) else { continue };
            let users: Option<Vec<String>> = b
                .users_record
                .as_ref()
                .and_then(|k| Some((k, data.get(k)?)))
                .map(|(k, text)| (k, text.lines().map(str::to_string).collect::<Vec<_>>()))
                .filter(|(k, users)| **k == key(b.id, users) && !users.is_empty())
                .map(|(_, users)| users);
            match users {
                Some(users) => {
                    b.last_user = users.last().cloned().unwrap_or_default();
                    b.size = users.len() as i32;
                    b.users = users;
                }
                None => {
                    lost.push(b.id);
                    p.batch = None;
                }
            }
        }
        Ok(if lost.is_empty() { Recall::Complete } else { Recall::Lost(lost) })
    }

    /// Records the users of every batch in `pipelines` that holds users but no record yet (a new
    /// batch, or one a version before 0.2 recorded on the tenant), and forgets the entries of
    /// batches no longer in flight. Must come before any write of the tenant's status.
    pub(super) async fn record_batches(
        &self,
        tenant: &OneDriveTenant,
        pipelines: &mut [Pipeline],
        last_batch_id: i64,
    ) -> Result<(), ControllerError> {
        let mut new: BTreeMap<String, String> = BTreeMap::new();
        for b in pipelines.iter_mut().filter_map(|p| p.batch.as_mut()) {
            if b.users_record.is_none() && !b.users.is_empty() {
                let k = key(b.id, &b.users);
                new.insert(k.clone(), b.users.join("\n"));
                b.users_record = Some(k);
            }
        }
        if new.is_empty() {
            return Ok(());
        }
        let in_flight: Vec<&str> =
            pipelines.iter().filter_map(|p| p.batch.as_ref()?.users_record.as_deref()).collect();
        let name = record_name(&tenant.name_any());
        let api = self.records();
        let current = api.get_opt(&name).await.map_err(ControllerError::kube)?;
        let Some(current) = current else {
            let record = ConfigMap {
                metadata: ObjectMeta {
                    name: Some(name.clone()),
                    namespace: Some(self.options.namespace.clone()),
                    owner_references: owner(tenant).map(|o| vec![o]),
                    labels: Some(
                        [("app.kubernetes.io/managed-by".to_string(), super::MANAGER.to_string())].into(),
                    ),
                    ..ObjectMeta::default()
                },
                data: Some(new.clone()),
                ..ConfigMap::default()
            };
            match api.create(&PostParams::default(), &record).await {
                Ok(_) => return Ok(()),
                // Another process created it meanwhile: add to it below.
                Err(kube::Error::Api(e)) if e.code == 409 => {}
                Err(e) => return Err(ControllerError::kube(e)),
            }
            return self.merge_entries(&name, &new, &[]).await;
        };
        // Entries of batches that ended (or whose record lost the race): ids this tenant has
        // numbered already, not in flight. A newer id may be another process's, about to be recorded.
        let stale: Vec<String> = current
            .data
            .unwrap_or_default()
            .into_keys()
            .filter(|k| !in_flight.contains(&k.as_str()) && entry_id(k).is_some_and(|id| id <= last_batch_id))
            .collect();
        self.merge_entries(&name, &new, &stale).await
    }

    /// Adds `new` and removes `stale` with one JSON merge patch (other entries stay as they are).
    async fn merge_entries(
        &self,
        name: &str,
        new: &BTreeMap<String, String>,
        stale: &[String],
    ) -> Result<(), ControllerError> {
        let mut data = serde_json::Map::new();
        for k in stale {
            data.insert(k.clone(), serde_json::Value::Null);
        }
        for (k, v) in new {
            data.insert(k.clone(), json!(v));
        }
        self.records()
            .patch(name, &PatchParams::default(), &Patch::Merge(&json!({ "data": data })))
            .await
            .map_err(ControllerError::kube)?;
        Ok(())
    }
}

/// The batch id of an entry's key.
fn entry_id(key: &str) -> Option<i64> {
    key.strip_prefix("batch-")?.split('-').next()?.parse().ok()
}

/// A note for the tenant's Event when batches could not be read back.
pub(super) fn lost_note(tenant: &OneDriveTenant, namespace: &str, ids: &[i64]) -> String {
    format!(
        "the users of batch {ids:?} could not be read from ConfigMap {namespace}/{} (deleted or altered): the batch is dropped and its users are planned again (sending a user twice is harmless)",
        record_name(&tenant.name_any())
    )
}

/// The tenant as the record's owner: the garbage collector deletes the record with the tenant.
fn owner(tenant: &OneDriveTenant) -> Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference> {
    // Not a controller reference: nothing reconciles the record as a child.
    let mut o = tenant.controller_owner_ref(&())?;
    o.controller = None;
    o.block_owner_deletion = None;
    Some(o)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_names_are_valid_whatever_the_tenant_name() {
        assert_eq!(record_name("contoso"), "contoso.onedrive-batches");
        let long = "a".repeat(253);
        let name = record_name(&long);
        assert!(name.len() <= 253, "{}", name.len());
        assert_ne!(name, record_name(&"a".repeat(252)));
    }

    #[test]
    fn keys_name_the_batch_and_its_users() {
        let users = vec!["a@x.com".to_string(), "b@x.com".to_string()];
        let k = key(7, &users);
        assert!(k.starts_with("batch-7-"), "{k}");
        assert_eq!(entry_id(&k), Some(7));
        assert_ne!(k, key(7, &users[..1]));
    }
}
