//! A set's `OneDriveSite`s as the API server gets them: created (a POST: a name that exists is
//! never taken over), updated by server-side apply (only sites the set controls, their uid as
//! precondition), deleted with their uid as precondition (a site recreated meanwhile by someone
//! else stays). A few writes at once, so thousands of them neither flood the API server nor wait
//! on each other.

use futures::{StreamExt, TryStreamExt};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams, Preconditions};
use kube::{Resource, ResourceExt};
use serde_json::{Value, json};

use super::super::{ControllerError, MANAGER};
use crate::api::annotations::{SET_TEMPLATE, SITE_SET_LABEL};
use crate::api::{OneDriveSite, OneDriveSiteSet};
use crate::plan::site_set::{Member, Removal};

/// Writes in flight at once.
const IN_FLIGHT: usize = 8;

/// The site the set declares for `member`: its user, the set's tenant and template, the label
/// naming the set, the digest of the declaration, and the set as its controlling owner (a
/// cluster's garbage collector deletes it with the set — never a OneDrive).
fn declared(set: &OneDriveSiteSet, member: &Member, digest: &str) -> Value {
    let t = &set.spec.template;
    let mut labels = t.labels.clone();
    labels.insert(SITE_SET_LABEL.into(), set.name_any());
    let mut annotations = t.annotations.clone();
    annotations.insert(SET_TEMPLATE.into(), digest.into());
    let owner = set.controller_owner_ref(&()).expect("a set read from the API server has a name and uid");
    let mut spec = json!({ "user": member.user });
    if let Some(tenant) = &set.spec.tenant_ref {
        spec["tenantRef"] = json!({ "name": tenant.name });
    }
    if !t.site_admins.is_empty() {
        spec["siteAdmins"] = json!(t.site_admins);
    }
    if let Some(quota) = &t.storage_quota {
        spec["storageQuota"] = json!(quota);
    }
    let mut metadata = json!({
        "name": member.name,
        "namespace": set.namespace(),
        "labels": labels,
        "annotations": annotations,
        "ownerReferences": [owner],
    });
    if let Some(uid) = &member.uid {
        metadata["uid"] = json!(uid);
    }
    json!({
        "apiVersion": OneDriveSite::api_version(&()),
        "kind": OneDriveSite::kind(&()),
        "metadata": metadata,
        "spec": spec,
    })
}

/// Creates the sites of `members`; one whose name exists meanwhile is left alone (the next pass
/// sees whose it is).
pub(super) async fn create(
    api: &Api<OneDriveSite>,
    set: &OneDriveSiteSet,
    members: &[Member],
    digest: &str,
) -> Result<usize, ControllerError> {
    let params = PostParams { field_manager: Some(MANAGER.into()), ..PostParams::default() };
    let sites: Vec<OneDriveSite> = members
        .iter()
        .map(|m| serde_json::from_value(declared(set, m, digest)).expect("a declared site is a OneDriveSite"))
        .collect();
    in_flight(sites, |site: OneDriveSite| {
        let (api, params) = (api.clone(), params.clone());
        async move {
            match api.create(&params, &site).await {
                Ok(_) => Ok(1),
                Err(kube::Error::Api(e)) if e.code == 409 => Ok(0),
                Err(e) => Err(ControllerError::kube(e)),
            }
        }
    })
    .await
}

/// Applies the set's declaration to sites it controls, each as the uid it was seen with.
pub(super) async fn update(
    api: &Api<OneDriveSite>,
    set: &OneDriveSiteSet,
    members: &[Member],
    digest: &str,
) -> Result<usize, ControllerError> {
    let bodies: Vec<(String, Value)> =
        members.iter().map(|m| (m.name.clone(), declared(set, m, digest))).collect();
    in_flight(bodies, |(name, body): (String, Value)| {
        let api = api.clone();
        async move {
            match api.patch(&name, &PatchParams::apply(MANAGER).force(), &Patch::Apply(&body)).await {
                Ok(_) => Ok(1),
                // Gone or replaced since the cache saw it.
                Err(kube::Error::Api(e)) if matches!(e.code, 404 | 409 | 422) => Ok(0),
                Err(e) => Err(ControllerError::kube(e)),
            }
        }
    })
    .await
}

/// Deletes the sites of users who left (the OneDrives stay).
pub(super) async fn delete(api: &Api<OneDriveSite>, removals: &[Removal]) -> Result<usize, ControllerError> {
    in_flight(removals.to_vec(), |r: Removal| {
        let api = api.clone();
        async move {
            let params = DeleteParams {
                preconditions: Some(Preconditions { uid: r.uid, resource_version: None }),
                ..DeleteParams::default()
            };
            match api.delete(&r.name, &params).await {
                Ok(_) => Ok(1),
                Err(kube::Error::Api(e)) if matches!(e.code, 404 | 409) => Ok(0),
                Err(e) => Err(ControllerError::kube(e)),
            }
        }
    })
    .await
}

/// Runs `write` for every item, [`IN_FLIGHT`] at once; the number that wrote something.
async fn in_flight<T, F, Fut>(items: Vec<T>, write: F) -> Result<usize, ControllerError>
where
    F: Fn(T) -> Fut,
    Fut: std::future::Future<Output = Result<usize, ControllerError>>,
{
    futures::stream::iter(items.into_iter().map(write))
        .buffer_unordered(IN_FLIGHT)
        .try_fold(0, |n, one| async move { Ok(n + one) })
        .await
}
