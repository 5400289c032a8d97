//! A benchmark (not a test) on a real kube-apiserver + etcd: one `OneDriveSiteSet` listing N users
//! (default 5,000, the most one set may list), the release `onedrive-operator run` against the
//! simulator's realistic N-user tenant, and what a platform engineer would see: how fast the set's
//! `OneDriveSite`s are created (sites per second), when every one has a status, when the set is
//! Ready (the tenant converged), the Kubernetes API requests per site, and the operator's peak
//! resident memory and CPU.
//!
//! `scripts/bench-sets [N]` runs it (`cargo bench --bench site_sets -- N`); it needs
//! `KUBEBUILDER_ASSETS` as the e2e tests do.

#[path = "../tests/common/mod.rs"]
mod common;
#[path = "../tests/envtest/mod.rs"]
mod envtest;
mod support;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use envtest::{ApiServer, NS, install_crds, ok};
use kube::api::{Api, ListParams, PostParams};
use onedrive_operator::api::{
    OneDriveSite, OneDriveSiteSet, OneDriveSiteSetSpec, SetSource, SitePhase, TenantRef, condition_type,
    find_condition,
};

const SET_NS: &str = "team-a";

fn main() {
    // `cargo test --all-targets` (CI) builds and runs bench targets too, without `--bench`:
    // only `cargo bench` runs this.
    if !std::env::args().any(|a| a == "--bench") {
        println!("site_sets: a benchmark; run it with scripts/bench-sets");
        return;
    }
    let n: usize =
        std::env::args().skip(1).find(|a| !a.starts_with('-')).and_then(|a| a.parse().ok()).unwrap_or(5000);
    onedrive_operator::install_crypto_provider();
    let server = ApiServer::start();
    install_crds(&server);
    ok(server.kubectl(&["create", "namespace", NS]), "namespace");
    ok(server.kubectl(&["create", "namespace", SET_NS]), "namespace");
    let (_sim, manifests) = support::simulate(n, "contoso", &[]);
    ok(server.apply(&manifests.replace("pollInterval: 10s", "pollInterval: 2s")), "tenant and Secret");

    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    let client = support::admin_client(&server, &rt);
    let mut set = OneDriveSiteSet::new(
        "all",
        OneDriveSiteSetSpec {
            tenant_ref: Some(TenantRef { name: "contoso".into() }),
            source: SetSource {
                group: None,
                users: Some((1..=n).map(|i| format!("user{i:04}@contoso.onmicrosoft.com")).collect()),
            },
            ..Default::default()
        },
    );
    set.metadata.namespace = Some(SET_NS.into());
    let sets: Api<OneDriveSiteSet> = Api::namespaced(client.clone(), SET_NS);
    rt.block_on(sets.create(&PostParams::default(), &set)).unwrap();
    let sites: Api<OneDriveSite> = Api::namespaced(client.clone(), SET_NS);

    let before = support::api_requests(&server);
    let log = server.dir().join("operator.log");
    let mut operator = support::operator(&server.admin_kubeconfig, &log, "127.0.0.1:0");
    let proc = support::Proc { pid: operator.0.id() };
    let started = Instant::now();
    // Four times a second: the set's sites, with a status, settled; the set's Ready. The bench's
    // own requests are counted and taken off the API server's totals.
    let mut own = (0.0, 0.0);
    let (mut created_at, mut status_at) = (None, None);
    let ready_at = loop {
        std::thread::sleep(Duration::from_millis(250));
        assert!(
            matches!(operator.0.try_wait(), Ok(None)),
            "the operator exited:\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        let list = rt.block_on(sites.list(&ListParams::default())).unwrap().items;
        let set = rt.block_on(sets.get("all")).unwrap();
        own = (own.0 + 1.0, own.1 + 1.0);
        let with_status =
            list.iter().filter(|s| s.status.as_ref().is_some_and(|st| st.phase.is_some())).count();
        let settled = list
            .iter()
            .filter(|s| {
                matches!(
                    s.status.as_ref().and_then(|st| st.phase),
                    Some(SitePhase::Ready | SitePhase::Failed)
                )
            })
            .count();
        if created_at.is_none() && list.len() == n {
            created_at = Some(started.elapsed());
        }
        if status_at.is_none() && with_status == n {
            status_at = Some(started.elapsed());
        }
        let ready = set.status.as_ref().and_then(|s| find_condition(&s.conditions, condition_type::READY));
        if ready.is_some_and(|c| c.status == "True") && list.len() == n {
            break started.elapsed();
        }
        if started.elapsed().as_millis() % 5000 < 250 {
            eprintln!(
                "{:>5.0} s: {} sites, {with_status} with a status, {settled} settled, RSS {:.0} MiB",
                started.elapsed().as_secs_f64(),
                list.len(),
                proc.rss_mib()
            );
        }
        assert!(started.elapsed() < Duration::from_secs(3600), "not Ready after an hour");
    };
    let after = support::api_requests(&server);
    let (peak_rss, cpu) = (proc.peak_rss_mib(), proc.cpu());
    drop(operator);
    let mut by_verb: BTreeMap<String, f64> =
        after.iter().map(|(v, c)| (v.clone(), c - before.get(v).copied().unwrap_or(0.0))).collect();
    *by_verb.entry("LIST".into()).or_default() -= own.0;
    // The bench's gets of the set, and the metrics scrape itself.
    *by_verb.entry("GET".into()).or_default() -= own.1 + 1.0;
    let created = created_at.expect("every site existed before the set was Ready");
    let per_site = |x: f64| x / n as f64;
    let verb = |v: &str| by_verb.get(v).copied().unwrap_or(0.0);
    println!(
        "| {n} | {:.1} s | {:.0}/s | {:.1} s | {:.0} s | {:.2} | {:.2} | {peak_rss:.0} MiB | {:.1} s |",
        created.as_secs_f64(),
        n as f64 / created.as_secs_f64(),
        status_at.map_or(f64::NAN, |d| d.as_secs_f64()),
        ready_at.as_secs_f64(),
        per_site(support::total(&by_verb)),
        per_site(verb("POST")),
        cpu.as_secs_f64(),
    );
    eprintln!("operator API requests by verb: {by_verb:?}");
}
