//! What the benchmarks on a real API server share: a client, creating sites, the operator process.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use kube::api::{Api, PostParams};
use onedrive_operator::api::OneDriveSite;

use crate::common;
use crate::envtest::{ApiServer, NS, ok};

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

/// `/proc/<pid>` figures of the operator process.
pub struct Proc {
    pub pid: u32,
}

impl Proc {
    fn status_kib(&self, field: &str) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid)).unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix(field))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or(0)
    }

    /// Peak resident memory so far.
    pub fn peak_rss_mib(&self) -> f64 {
        self.status_kib("VmHWM:") as f64 / 1024.0
    }

    pub fn rss_mib(&self) -> f64 {
        self.status_kib("VmRSS:") as f64 / 1024.0
    }

    /// User + system CPU time.
    pub fn cpu(&self) -> Duration {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid)).unwrap_or_default();
        let after = stat.rsplit(')').next().unwrap_or("");
        let fields: Vec<&str> = after.split_whitespace().collect();
        let ticks: u64 = fields.get(11).and_then(|u| u.parse().ok()).unwrap_or(0)
            + fields.get(12).and_then(|s| s.parse().ok()).unwrap_or(0);
        Duration::from_millis(ticks * 10)
    }
}

/// The API server's request counters (`apiserver_request_total`), summed per verb.
pub fn api_requests(server: &ApiServer) -> BTreeMap<String, f64> {
    let text = ok(server.kubectl(&["get", "--raw", "/metrics"]), "apiserver metrics");
    let mut out = BTreeMap::new();
    for line in text.lines().filter(|l| l.starts_with("apiserver_request_total{")) {
        let verb = line.split("verb=\"").nth(1).and_then(|v| v.split('"').next()).unwrap_or("");
        let n: f64 = line.rsplit(' ').next().and_then(|v| v.parse().ok()).unwrap_or(0.0);
        *out.entry(verb.to_string()).or_default() += n;
    }
    out
}

pub fn total(m: &BTreeMap<String, f64>) -> f64 {
    m.values().sum()
}
