//! A set's `OneDriveSite`s as the API server gets them:
//! - created by a POST of what never changes (user, tenant, owner, the set's label): a name that
//!   exists is never taken over; then, when the template declares anything, applied;
//! - updated by server-side apply (field manager `onedrive-operator`, the site's uid as a
//!   precondition): what the template stops declaring is removed, since the apply owns exactly
//!   the template's fields — the POST owns none of them;
//! - deleted with their uid as precondition (a site recreated meanwhile by someone else stays).
//!
//! A few writes at once, so thousands of them neither flood the API server nor wait on each
//! other. A site the API server refuses (a label it finds invalid, a quota, an admission
//! webhook) is reported with its message and does not stop the others.

use futures::{StreamExt, TryStreamExt};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams, Preconditions};
use kube::{Resource, ResourceExt};
use serde_json::{Value, json};

use super::super::{ControllerError, MANAGER};
use crate::api::annotations::{SET_TEMPLATE, SITE_SET_LABEL};
use crate::api::{OneDriveSite, OneDriveSiteSet};
use crate::plan::site_set::{Member, Removal, SetPlan};

/// Writes in flight at once.
const IN_FLIGHT: usize = 8;
/// The declaration digest of a site created but not yet applied.
const NOT_APPLIED: &str = "not-applied";
/// How much of the API server's refusal a set's status quotes.
const REFUSAL_CHARS: usize = 200;

/// What a pass's writes came to.
#[derive(Debug, Default)]
pub(super) struct Written {
    pub(super) created: usize,
    pub(super) updated: usize,
    pub(super) deleted: usize,
    /// Sites the API server refused: (name, its message).
    pub(super) refused: Vec<(String, String)>,
}

/// One write's outcome.
enum Outcome {
    Done,
    /// Nothing to do any more (gone, replaced, already there).
    Moot,
    Refused(String, String),
}

/// Makes the plan's creations, updates and deletions.
pub(super) async fn write(
    api: &Api<OneDriveSite>,
    set: &OneDriveSiteSet,
    plan: &SetPlan,
    digest: &str,
) -> Result<Written, ControllerError> {
    let mut written = Written::default();
    for outcome in create(api, set, &plan.create, digest).await? {
        count(outcome, &mut written.created, &mut written.refused);
    }
    for outcome in update(api, set, &plan.update, digest).await? {
        count(outcome, &mut written.updated, &mut written.refused);
    }
    for outcome in delete(api, &plan.delete).await? {
        count(outcome, &mut written.deleted, &mut written.refused);
    }
    Ok(written)
}

fn count(outcome: Outcome, done: &mut usize, refused: &mut Vec<(String, String)>) {
    match outcome {
        Outcome::Done => *done += 1,
        Outcome::Moot => {}
        Outcome::Refused(name, message) => refused.push((name, message)),
    }
}

/// A write's error: refused (400, 403, 422: the request, not the moment), moot (404, 409) or a
/// failure of the pass.
fn judged(name: &str, e: kube::Error) -> Result<Outcome, ControllerError> {
    match e {
        kube::Error::Api(s) if matches!(s.code, 404 | 409) => Ok(Outcome::Moot),
        kube::Error::Api(s) if matches!(s.code, 400 | 403 | 422) => {
            Ok(Outcome::Refused(name.to_string(), s.message.chars().take(REFUSAL_CHARS).collect()))
        }
        e => Err(ControllerError::kube(e)),
    }
}

/// What never changes on a set's site: its user and tenant, the set as its controlling owner (a
/// cluster's garbage collector deletes it with the set — never a OneDrive), the label naming the
/// set and the declaration's digest.
fn identity(set: &OneDriveSiteSet, member: &Member, digest: &str) -> Value {
    let owner = set.controller_owner_ref(&()).expect("a set read from the API server has a name and uid");
    let mut spec = json!({ "user": member.user });
    if let Some(tenant) = &set.spec.tenant_ref {
        spec["tenantRef"] = json!({ "name": tenant.name });
    }
    json!({
        "apiVersion": OneDriveSite::api_version(&()),
        "kind": OneDriveSite::kind(&()),
        "metadata": {
            "name": member.name,
            "namespace": set.namespace(),
            "labels": { SITE_SET_LABEL: set.name_any() },
            "annotations": { SET_TEMPLATE: digest },
            "ownerReferences": [owner],
        },
        "spec": spec,
    })
}

/// The whole declaration: the identity and the template's labels, annotations, `siteAdmins` and
/// `storageQuota` (what an apply owns).
fn declaration(set: &OneDriveSiteSet, member: &Member, digest: &str) -> Value {
    let t = &set.spec.template;
    let mut body = identity(set, member, digest);
    for (k, v) in &t.labels {
        body["metadata"]["labels"][k] = json!(v);
    }
    for (k, v) in &t.annotations {
        body["metadata"]["annotations"][k] = json!(v);
    }
    if let Some(uid) = &member.uid {
        body["metadata"]["uid"] = json!(uid);
    }
    if !t.site_admins.is_empty() {
        body["spec"]["siteAdmins"] = json!(t.site_admins);
    }
    if let Some(quota) = &t.storage_quota {
        body["spec"]["storageQuota"] = json!(quota);
    }
    body
}

/// Whether the template declares anything beyond the identity.
fn declares(set: &OneDriveSiteSet) -> bool {
    let t = &set.spec.template;
    !t.labels.is_empty()
        || !t.annotations.is_empty()
        || !t.site_admins.is_empty()
        || t.storage_quota.is_some()
}

async fn create(
    api: &Api<OneDriveSite>,
    set: &OneDriveSiteSet,
    members: &[Member],
    digest: &str,
) -> Result<Vec<Outcome>, ControllerError> {
    let params = PostParams { field_manager: Some(MANAGER.into()), ..PostParams::default() };
    let then_apply = declares(set);
    // Until the apply lands, the site says its declaration is not applied: a pass that stops in
    // between (a refusal, a crash) leaves it to be updated.
    let first = if then_apply { NOT_APPLIED } else { digest };
    let writes: Vec<(String, Value, Value)> = members
        .iter()
        .map(|m| (m.name.clone(), identity(set, m, first), declaration(set, m, digest)))
        .collect();
    in_flight(writes, |(name, identity, declaration): (String, Value, Value)| {
        let (api, params) = (api.clone(), params.clone());
        async move {
            let site: OneDriveSite =
                serde_json::from_value(identity).expect("a declared site is a OneDriveSite");
            if let Err(e) = api.create(&params, &site).await {
                return judged(&name, e);
            }
            if then_apply {
                return apply(&api, &name, &declaration).await;
            }
            Ok(Outcome::Done)
        }
    })
    .await
}

/// Applies a site's declaration; a refusal is the outcome, not a failure of the pass.
async fn apply(api: &Api<OneDriveSite>, name: &str, declaration: &Value) -> Result<Outcome, ControllerError> {
    match api.patch(name, &PatchParams::apply(MANAGER).force(), &Patch::Apply(declaration)).await {
        Ok(_) => Ok(Outcome::Done),
        Err(e) => judged(name, e),
    }
}

async fn update(
    api: &Api<OneDriveSite>,
    set: &OneDriveSiteSet,
    members: &[Member],
    digest: &str,
) -> Result<Vec<Outcome>, ControllerError> {
    let writes: Vec<(String, Value)> =
        members.iter().map(|m| (m.name.clone(), declaration(set, m, digest))).collect();
    in_flight(writes, |(name, declaration): (String, Value)| {
        let api = api.clone();
        async move { apply(&api, &name, &declaration).await }
    })
    .await
}

async fn delete(api: &Api<OneDriveSite>, removals: &[Removal]) -> Result<Vec<Outcome>, ControllerError> {
    in_flight(removals.to_vec(), |r: Removal| {
        let api = api.clone();
        async move {
            let params = DeleteParams {
                preconditions: Some(Preconditions { uid: r.uid, resource_version: None }),
                ..DeleteParams::default()
            };
            match api.delete(&r.name, &params).await {
                Ok(_) => Ok(Outcome::Done),
                Err(e) => judged(&r.name, e),
            }
        }
    })
    .await
}

/// Runs `write` for every item, [`IN_FLIGHT`] at once.
async fn in_flight<T, F, Fut>(items: Vec<T>, write: F) -> Result<Vec<Outcome>, ControllerError>
where
    F: Fn(T) -> Fut,
    Fut: std::future::Future<Output = Result<Outcome, ControllerError>>,
{
    futures::stream::iter(items.into_iter().map(write)).buffer_unordered(IN_FLIGHT).try_collect().await
}
