//! The operator binary on an envtest API server: its RBAC as the chart renders it, the CRDs, a
//! process per replica, and the simulator's statistics.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde_json::Value;

use super::ApiServer;

pub const NS: &str = "onedrive-operator";

pub fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

pub fn ok(out: std::process::Output, what: &str) -> String {
    assert!(
        out.status.success(),
        "{what} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

pub fn install_crds(server: &ApiServer) {
    ok(server.kubectl(&["apply", "-f", root().join("crds").to_str().unwrap()]), "apply crds/");
    ok(
        server.kubectl(&["wait", "--for=condition=Established", "crd", "--all", "--timeout=60s"]),
        "CRDs established",
    );
}

/// The chart's RBAC (and ServiceAccount) as rendered by `scripts/chart-check`.
pub fn chart_rbac() -> String {
    let path = std::env::var_os("CHART_RENDERED")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("target/chart-rendered.yaml"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!("{}: {e}; run the suite with `bash scripts/test` (it renders the chart first)", path.display())
    });
    let mut out = String::new();
    for doc in serde_yaml::Deserializer::from_str(&text) {
        let v: Value = serde::Deserialize::deserialize(doc).unwrap();
        if matches!(
            v["kind"].as_str(),
            Some("ServiceAccount" | "ClusterRole" | "ClusterRoleBinding" | "Role" | "RoleBinding")
        ) {
            out.push_str("---\n");
            out.push_str(&serde_yaml::to_string(&v).unwrap());
        }
    }
    assert!(out.contains("kind: ClusterRole"), "the rendering holds the chart's RBAC");
    out
}

/// The operator's `--lease-duration` in these tests.
pub const LEASE_SECONDS: u64 = 5;

/// An operator process (`run --leader-election`), killed (SIGKILL) when dropped.
pub struct Operator(std::process::Child);

impl Operator {
    pub fn start(kubeconfig: &Path, log: &Path) -> Operator {
        Operator::start_as(kubeconfig, log, "e2e", "127.0.0.1:0")
    }

    /// An operator allowed to reach the simulator (`--allow-endpoint-overrides`: it is on
    /// loopback, outside any Microsoft cloud).
    pub fn start_as(kubeconfig: &Path, log: &Path, identity: &str, metrics_addr: &str) -> Operator {
        Operator::spawn(kubeconfig, log, identity, metrics_addr, true)
    }

    /// An operator as production runs it: every tenant endpoint pinned to its cloud.
    pub fn start_pinned(kubeconfig: &Path, log: &Path, identity: &str) -> Operator {
        Operator::spawn(kubeconfig, log, identity, "127.0.0.1:0", false)
    }

    fn spawn(kubeconfig: &Path, log: &Path, identity: &str, metrics_addr: &str, allow: bool) -> Operator {
        let child = Command::new(env!("CARGO_BIN_EXE_onedrive-operator"))
            .arg("run")
            .arg(format!("--allow-endpoint-overrides={allow}"))
            .args([
                "--namespace",
                NS,
                "--metrics-addr",
                metrics_addr,
                "--leader-election",
                "--lease-duration",
            ])
            .arg(LEASE_SECONDS.to_string())
            .args(["--identity", identity])
            .env("KUBECONFIG", kubeconfig)
            // `E2E_OPERATOR_LOG=debug` (any `RUST_LOG` value) to see more of a failing run.
            .env("RUST_LOG", std::env::var("E2E_OPERATOR_LOG").unwrap_or_else(|_| "info".into()))
            .stdout(Stdio::null())
            .stderr(std::fs::OpenOptions::new().create(true).append(true).open(log).unwrap())
            .spawn()
            .unwrap();
        Operator(child)
    }

    /// The process id (for its `/proc` figures).
    pub fn pid(&self) -> u32 {
        self.0.id()
    }

    /// Whether the process is still running (it has not exited or crashed).
    pub fn alive(&mut self) -> bool {
        matches!(self.0.try_wait(), Ok(None))
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The HTTP status of a GET, or `None` while nothing answers.
pub fn http_status(url: &str) -> Option<u16> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async { reqwest::get(url).await.ok().map(|r| r.status().as_u16()) })
}

pub fn sim_stats(base: &str) -> Value {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        onedrive_operator::install_crypto_provider();
        reqwest::get(format!("{base}/_sim/stats")).await.unwrap().json().await.unwrap()
    })
}

pub fn http_text(url: &str) -> String {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async { reqwest::get(url).await.unwrap().text().await.unwrap() })
}

/// The value of one sample in a Prometheus text exposition.
pub fn sample(metrics: &str, name: &str) -> Option<f64> {
    metrics.lines().find(|l| l.starts_with(name)).and_then(|l| l.rsplit(' ').next()?.parse().ok())
}
