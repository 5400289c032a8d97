//! Support for running the real controller against an in-memory Kubernetes API (the demo,
//! tests and benchmarks). Not used by `onedrive-operator run`.

use kube::client::Body;

/// kube-fake-client 0.3 registers every custom resource as namespaced, so a cluster-scoped
/// `OneDriveTenant` cannot be stored. This wraps such a client and files tenants under the
/// `default` namespace on the way in, which is invisible to callers using `Api::all`.
pub fn cluster_scoped_tenants(inner: kube::Client) -> kube::Client {
    let service = tower::service_fn(move |mut request: http::Request<Body>| {
        let inner = inner.clone();
        async move {
            let path = request.uri().path();
            let prefix = "/apis/onedrive-operator.dev/v1alpha1/onedrivetenants";
            if let Some(rest) = path.strip_prefix(prefix) {
                let query = request.uri().query().map(|q| format!("?{q}")).unwrap_or_default();
                let rewritten = format!(
                    "/apis/onedrive-operator.dev/v1alpha1/namespaces/default/onedrivetenants{rest}{query}"
                );
                *request.uri_mut() = rewritten.parse().expect("a valid path");
            }
            inner.send(request).await
        }
    });
    kube::Client::new(service, "default")
}

/// A `OneDriveSite` `namespace/name` for `user`, served by the tenant `tenant`.
pub fn site(namespace: &str, name: &str, user: &str, tenant: &str) -> crate::api::OneDriveSite {
    let mut s = crate::api::OneDriveSite::new(
        name,
        crate::api::OneDriveSiteSpec {
            user: user.into(),
            tenant_ref: Some(crate::api::TenantRef { name: tenant.into() }),
            ..Default::default()
        },
    );
    s.metadata.namespace = Some(namespace.into());
    s
}
