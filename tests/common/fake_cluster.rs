//! An in-memory Kubernetes API holding the operator's resources, for tests, the demo and the
//! benchmarks (kube-fake-client is a dev-dependency, so this cannot live in the library; the
//! examples include this file by path).

use k8s_openapi::api::core::v1::Secret;
use kube::api::Api;
use onedrive_operator::api::{OneDriveSite, OneDriveSiteSet, OneDriveTenant};

/// A fake API server with the CRDs (status subresources on) holding `sites`, `tenants` and
/// `secrets`, behind the shim that keeps tenants cluster-scoped.
pub async fn fake_cluster(
    sites: Vec<OneDriveSite>,
    tenants: Vec<OneDriveTenant>,
    secrets: Vec<Secret>,
) -> Result<kube::Client, Box<dyn std::error::Error>> {
    let client = kube_fake_client::ClientBuilder::new()
        .with_resource::<OneDriveSite>()
        .with_status_subresource::<OneDriveSite>()
        .with_resource::<OneDriveSiteSet>()
        .with_status_subresource::<OneDriveSiteSet>()
        .with_resource::<OneDriveTenant>()
        .with_status_subresource::<OneDriveTenant>()
        .with_objects(secrets)
        .with_objects(sites)
        .build()
        .await?;
    let client = onedrive_operator::testing::cluster_scoped_tenants(client);
    let api: Api<OneDriveTenant> = Api::all(client.clone());
    for t in tenants {
        api.create(&Default::default(), &t).await?;
    }
    Ok(client)
}
