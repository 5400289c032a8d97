//! What the benchmarks on a real API server share: a client, creating sites, the operator process.

use std::path::Path;

use futures::{StreamExt, TryStreamExt};
use kube::api::{Api, PostParams};
use onedrive_operator::api::OneDriveSite;

use crate::common;
use crate::envtest::{ApiServer, NS};

/// `onedrive-operator simulate` with the field-like population of `users`, a site taking 30
/// simulated s at 60× speed, printing a tenant `name` (and its Secret) for the operator's
/// namespace; `extra` arguments are added.
pub fn simulate(users: usize, name: &str, extra: &[&str]) -> (common::Child, String) {
    let users = users.to_string();
    let mut args = vec![
        "--generate",
        &users,
        "--provision-delay",
        "30s",
        "--time-scale",
        "60",
        "--namespace",
        NS,
        "--tenant-name",
        name,
    ];
    args.extend_from_slice(extra);
    common::spawn_simulate(&args)
}

/// A client with the API server's admin kubeconfig.
pub fn admin_client(server: &ApiServer, rt: &tokio::runtime::Runtime) -> kube::Client {
    rt.block_on(async {
        let kubeconfig = kube::config::Kubeconfig::read_from(&server.admin_kubeconfig).unwrap();
        let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default()).await.unwrap();
        kube::Client::try_from(config).unwrap()
    })
}

/// Creates `sites` through `api`, 32 at a time.
pub fn create_sites(rt: &tokio::runtime::Runtime, api: &Api<OneDriveSite>, sites: Vec<OneDriveSite>) {
    rt.block_on(async {
        futures::stream::iter(sites)
            .map(|s| {
                let api = api.clone();
                async move { api.create(&PostParams::default(), &s).await }
            })
            .buffer_unordered(32)
            .try_collect::<Vec<_>>()
            .await
            .unwrap();
    });
}

/// The release `onedrive-operator run` (one replica, no leader election) serving `/metrics` at
/// `metrics_addr`, its log in `log`; killed when dropped.
pub fn operator(kubeconfig: &Path, log: &Path, metrics_addr: &str) -> common::Child {
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_onedrive-operator"))
        .args(["run", "--allow-endpoint-overrides", "--namespace", NS, "--metrics-addr", metrics_addr])
        .env("KUBECONFIG", kubeconfig)
        .env("RUST_LOG", "warn")
        // As the image sets it (Dockerfile).
        .env("MALLOC_ARENA_MAX", "1")
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .unwrap();
    common::Child(child)
}
