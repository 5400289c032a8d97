//! A benchmark (not a test) on a real kube-apiserver + etcd: N `OneDriveSite`s, the release
//! `onedrive-operator run` against the simulator's tenant of N realistic users, and what a
//! platform engineer would see: the time until every site has a status, the status write rate,
//! Kubernetes API requests, status writes and Events per site, and the operator process's peak
//! resident memory and CPU.
//!
//! `scripts/bench-apiserver [N]` runs it (`cargo bench --bench apiserver -- N`, default 10000);
//! it needs `KUBEBUILDER_ASSETS` as the e2e tests do. The operator plans on the wall clock here,
//! so the convergence ratio stays with the in-memory benchmark (`scripts/bench`).

#[path = "../tests/common/mod.rs"]
mod common;
#[path = "../tests/envtest/mod.rs"]
mod envtest;
mod support;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use envtest::{ApiServer, NS, install_crds, ok};
use kube::api::{Api, ListParams};
use onedrive_operator::api::OneDriveSite;
use onedrive_operator::testing::site;

fn main() {
    // `cargo test --all-targets` (CI) builds and runs bench targets too, without `--bench`:
    // only `cargo bench` runs this.
    if !std::env::args().any(|a| a == "--bench") {
        println!("apiserver: a benchmark; run it with scripts/bench-apiserver");
        return;
    }
    let n: usize =
        std::env::args().skip(1).find(|a| !a.starts_with('-')).and_then(|a| a.parse().ok()).unwrap_or(10_000);
    onedrive_operator::install_crypto_provider();
    let server = ApiServer::start();
    install_crds(&server);
    ok(server.kubectl(&["create", "namespace", NS]), "namespace");
    ok(server.kubectl(&["create", "namespace", "team-a"]), "namespace");

    let (_sim, manifests) = support::simulate(n, "contoso", &[]);
    ok(server.apply(&manifests.replace("pollInterval: 10s", "pollInterval: 2s")), "tenant and Secret");
    let users: Vec<String> = (1..=n).map(|i| format!("user{i:04}@contoso.onmicrosoft.com")).collect();

    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    let client = support::admin_client(&server, &rt);
    let sites: Api<OneDriveSite> = Api::namespaced(client.clone(), "team-a");
    let created = Instant::now();
    let wanted =
        users.iter().enumerate().map(|(i, u)| site("team-a", &format!("u{i}"), u, "contoso")).collect();
    support::create_sites(&rt, &sites, wanted);
    let create_secs = created.elapsed().as_secs_f64();
    eprintln!("{n} sites created in {create_secs:.0} s");

    let before = support::api_requests(&server);
    let log = server.dir().join("operator.log");
    let mut operator = support::operator(&server.admin_kubeconfig, &log, "127.0.0.1:0");
    let proc = support::Proc { pid: operator.0.id() };
    let started = Instant::now();

    // Once a second: how many sites have a status, how many are settled. The bench's own list
    // calls are counted and taken off the API server's totals.
    let mut own_requests = 0.0;
    let mut first_status: Option<Duration> = None;
    let mut peak_rate = 0.0f64;
    let mut last = (Instant::now(), 0usize);
    let mut stalled = (Instant::now(), 0usize);
    let (settled_at, settled) = loop {
        std::thread::sleep(Duration::from_secs(1));
        assert!(
            matches!(operator.0.try_wait(), Ok(None)),
            "the operator exited:\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        let list = rt.block_on(sites.list(&ListParams::default())).unwrap();
        own_requests += 1.0;
        let with_status =
            list.items.iter().filter(|s| s.status.as_ref().is_some_and(|st| st.phase.is_some())).count();
        let settled = list
            .items
            .iter()
            .filter(|s| {
                s.status.as_ref().and_then(|st| st.phase).is_some_and(|p| {
                    matches!(
                        p,
                        onedrive_operator::api::SitePhase::Ready | onedrive_operator::api::SitePhase::Failed
                    )
                })
            })
            .count();
        let now = Instant::now();
        // Sites given their first status per second (a lower bound of the write rate).
        peak_rate = peak_rate.max((with_status - last.1) as f64 / (now - last.0).as_secs_f64());
        last = (now, with_status);
        if first_status.is_none() && with_status == n {
            first_status = Some(started.elapsed());
        }
        eprintln!(
            "{:>5.0} s: {with_status} with a status, {settled} settled, RSS {:.0} MiB",
            started.elapsed().as_secs_f64(),
            proc.rss_mib()
        );
        if settled != stalled.1 {
            stalled = (Instant::now(), settled);
        }
        // Settled, or every site has a status and nothing has settled for two minutes (users the
        // population keeps waiting, if any).
        if settled == n || (with_status == n && stalled.0.elapsed() > Duration::from_secs(120)) {
            break (started.elapsed(), settled);
        }
        assert!(started.elapsed() < Duration::from_secs(3600), "not settled after an hour");
    };
    let after = support::api_requests(&server);
    let (peak_rss, cpu) = (proc.peak_rss_mib(), proc.cpu());
    drop(operator);
    let mut by_verb: BTreeMap<String, f64> =
        after.iter().map(|(v, c)| (v.clone(), c - before.get(v).copied().unwrap_or(0.0))).collect();
    // The bench's lists, and the metrics scrapes themselves (GET).
    *by_verb.entry("LIST".into()).or_default() -= own_requests;
    *by_verb.entry("GET".into()).or_default() -= 1.0;
    let operator_requests = support::total(&by_verb);
    // Server-side apply counts as APPLY, merge patches as PATCH; Events are POSTs.
    let verb = |v: &str| by_verb.get(v).copied().unwrap_or(0.0);
    let per_site = |x: f64| x / n as f64;
    println!(
        "| {n} | {create_secs:.0} s | {:.1} s | {peak_rate:.0}/s | {:.0} s ({settled} settled) | {:.2} | {:.2} | {:.2} | {peak_rss:.0} MiB | {:.1} s |",
        first_status.map_or(f64::NAN, |d| d.as_secs_f64()),
        settled_at.as_secs_f64(),
        per_site(operator_requests),
        per_site(verb("APPLY") + verb("PATCH")),
        per_site(verb("POST")),
        cpu.as_secs_f64(),
    );
    eprintln!("operator API requests by verb: {by_verb:?}");
}
