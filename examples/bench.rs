//! Benchmarks and resilience figures (not pass/fail tests): `scripts/bench` runs this in release
//! mode and writes `docs/benchmarks.md`.
//!
//! Everything runs in one process: the real controller cycle against an in-memory Kubernetes
//! API and the simulator on loopback, on the simulator's manual clock (simulated time moves by
//! the controller's requeue interval between cycles), beside a naive baseline that follows the
//! seeds literally (enqueue 200, poll every user of the batch each interval, then the next batch).
//!
//! The operator runs against a realistic population (`simulator::realistic_user`: already
//! provisioned, unlicensed, sign-in blocked, Graph's "mysite URL" quirks, profile errors), with
//! profile errors placed where batches end, so that a batch's last user is one who never gets a
//! site. The naive baseline needs a clean population: on a realistic one it waits for users who
//! never get a site.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::core::v1::Secret;
use kube::api::Api;
use kube::runtime::watcher::Event;
use onedrive_operator::api::{KeptSite, OneDriveSite, OneDriveTenant};
use onedrive_operator::controller::{Reconciler, ReconcilerOptions, SiteCache, SiteSource};
use onedrive_operator::m365::{Credentials, EndpointPolicy, HostOverrides, TenantClient, TenantConfig};
use onedrive_operator::plan::{self, DesiredSite, Limits, Observation, Observed, PlanInput, SiteKey};
use onedrive_operator::simulator::manifests::{PrintedAuth, tenant_and_secret};
use onedrive_operator::simulator::{
    self, App, Clock, Config, FaultConfig, Population, SimHandle, UserSpec, expected_reason,
};
use onedrive_operator::testing::site;
use rand::SeedableRng;
use rand::seq::SliceRandom;

#[path = "../tests/common/fake_cluster.rs"]
mod fake_cluster;
use fake_cluster::fake_cluster;

const NS: &str = "onedrive-operator";
const CLIENT: &str = "bench-0000-4000-8000-000000000001";
const DELAY_MIN: i64 = 10;
const POLL_SECS: i64 = 60;

struct Creds {
    key: rsa::PrivateKey,
    cert: onedrive_operator::jose::Certificate,
}

fn creds() -> Creds {
    let key = onedrive_operator::jose::generate_key();
    let cert = onedrive_operator::jose::self_signed_certificate(&key, "bench").unwrap();
    Creds { key, cert }
}

fn upn(i: usize) -> String {
    format!("user{i:06}@contoso.com")
}

/// `n` users as the field has them, with a profile error at the end of every other batch.
fn realistic(n: usize) -> Vec<UserSpec> {
    let mut users: Vec<UserSpec> = (0..n).map(|i| simulator::realistic_user(i + 1, upn(i))).collect();
    let sendable: Vec<usize> =
        (0..n).filter(|&i| !users[i].has_site && users[i].licensed && users[i].sign_in_allowed).collect();
    for (k, &i) in sendable.iter().skip(199).step_by(400).enumerate() {
        users[i].profile_outcome = Some(if k % 2 == 0 { 4099 } else { 8195 });
    }
    users
}

/// `n` users who can all get a site (what the naive baseline can finish).
fn clean(n: usize) -> Vec<UserSpec> {
    (0..n).map(|i| UserSpec::new(upn(i))).collect()
}

async fn simulator(c: &Creds, users: Vec<UserSpec>, faults: FaultConfig) -> SimHandle {
    simulator_in(c, users, faults, &[]).await
}

/// [`simulator`] for a Multi-Geo tenant with `geos` (the central one first).
async fn simulator_in(c: &Creds, users: Vec<UserSpec>, faults: FaultConfig, geos: &[&str]) -> SimHandle {
    let config = Config {
        users,
        geos: geos.iter().map(|g| g.to_string()).collect(),
        apps: vec![App::Certificate { client_id: CLIENT.into(), certificate: c.cert.clone() }],
        provision_delay: SignedDuration::from_mins(DELAY_MIN),
        jitter: 0.0,
        clock: Clock::Manual,
        faults,
        ..Config::default()
    };
    let sim = simulator::start(config, "127.0.0.1:0".parse().unwrap()).await.unwrap();
    // Every run starts at 00:00:30 UTC, simulated. Re-checks fall due on period boundaries (on
    // the hour, at midnight), so the start decides which of them a run meets: aligned, runs are
    // comparable whenever they are made (a 7h20m rollout meets seven hourly re-checks of the
    // refused users and no daily drift check of the Ready ones).
    to_next_midnight(&sim);
    sim
}

/// Moves the simulated clock on to 00:00:30 UTC of the next day.
fn to_next_midnight(sim: &SimHandle) {
    let now = sim.now().as_second();
    sim.advance(SignedDuration::from_secs((now.div_euclid(86_400) + 1) * 86_400 + 30 - now));
}

/// The tenant (certificate auth) and its Secret, as `onedrive-operator simulate` prints them.
fn tenant_and_cert(c: &Creds, sim: &SimHandle) -> (OneDriveTenant, Secret) {
    let data = BTreeMap::from([
        ("tls.crt".to_string(), c.cert.to_pem()),
        ("tls.key".to_string(), onedrive_operator::jose::private_key_to_pem(&c.key)),
    ]);
    let (mut tenant, secret) =
        tenant_and_secret("contoso", NS, &sim.endpoints(), PrintedAuth::Certificate, CLIENT, data);
    tenant.spec.poll_interval = format!("{POLL_SECS}s");
    // `BENCH_LISTING=Never`: one lookup per user, for comparison.
    if std::env::var("BENCH_LISTING").as_deref() == Ok("Never") {
        tenant.spec.tenant_wide_listing = onedrive_operator::api::TenantWideListing::Never;
    }
    (tenant, secret)
}

async fn kube(c: &Creds, sim: &SimHandle, users: usize) -> kube::Client {
    kube_with(c, sim, users, false).await
}

/// The migration account the configured run declares on the tenant.
const MIGRATION: &str = "migration@contoso.com";

/// [`kube`], the tenant declaring the migration account as every site's administrator and a
/// 2 TiB quota when `configured`.
async fn kube_with(c: &Creds, sim: &SimHandle, users: usize, configured: bool) -> kube::Client {
    let (mut tenant, secret) = tenant_and_cert(c, sim);
    if configured {
        tenant.spec.site_admins = vec![MIGRATION.into()];
        tenant.spec.storage_quota = Some("2Ti".into());
    }
    // Created a second apart: the queue order is the users' order.
    let base = Timestamp::from_second(1_800_000_000).unwrap();
    let sites: Vec<OneDriveSite> = (0..users)
        .map(|i| {
            let namespace = if i % 2 == 0 { "team-a" } else { "team-b" };
            let mut s = site(namespace, &format!("u{i}"), &upn(i), "contoso");
            s.metadata.creation_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                base + SignedDuration::from_secs(i as i64),
            ));
            s
        })
        .collect();
    fake_cluster(sites, vec![tenant], vec![secret]).await.unwrap()
}

/// The controller on the simulator's clock, so batch durations are measured in simulated time,
/// with the simulator's hosts for the public ones its geos' discovery names.
fn on_sim_clock(client: &kube::Client, sim: &SimHandle) -> Reconciler {
    let clock = sim.clock();
    Reconciler::new(
        client.clone(),
        ReconcilerOptions {
            clock: Arc::new(clock),
            endpoints: EndpointPolicy::Overridable(HostOverrides::parse(&sim.host_overrides()).unwrap()),
            ..ReconcilerOptions::new(NS, SiteSource::List)
        },
    )
}

fn tenant_requests(sim: &SimHandle) -> u64 {
    let s = sim.stats();
    s.graph_requests() + s.sharepoint_requests() + s.count("entra.token")
}

struct Run {
    simulated: SignedDuration,
    wall: Duration,
    requests: u64,
    /// Graph's cost as its throttling counts it (each `$batch` item, each listing page at its cost).
    graph_units: u64,
    writes: usize,
    idle_writes: usize,
    /// The next daily drift check after the rollout ([`drift_check`]; none for the baseline).
    drift: (u64, String),
    batches: usize,
    /// Users provisioned by this run (the denominator of the per-user figures).
    provisioned: usize,
    /// Users who did not end with the reason their population kind calls for.
    wrong: usize,
    /// Users enqueued at another geo's admin host than their own.
    wrong_geo: usize,
    /// Requests per simulator endpoint (where the tenant cost went).
    endpoints: std::collections::BTreeMap<String, u64>,
    /// When each batch was sent (simulated time).
    enqueued_at: Vec<String>,
}

/// Sites whose Ready reason is not what their user's kind calls for.
async fn wrong_outcomes(client: &kube::Client, users: &[UserSpec]) -> usize {
    let by_upn: HashMap<&str, &UserSpec> = users.iter().map(|u| (u.upn.as_str(), u)).collect();
    let sites = Api::<OneDriveSite>::all(client.clone()).list(&Default::default()).await.unwrap().items;
    sites
        .iter()
        .filter(|s| {
            let reason = s
                .status
                .as_ref()
                .and_then(|st| onedrive_operator::api::find_condition(&st.conditions, "Ready"))
                .map(|c| c.reason.as_str());
            reason != Some(expected_reason(by_upn[s.spec.user.as_str()]))
        })
        .count()
}

/// Whether every user is settled: nothing pending or provisioning, no batch sent this cycle.
fn settled(report: &onedrive_operator::controller::CycleReport) -> bool {
    report.users.desired > 0
        && report.users.pending == 0
        && report.users.provisioning == 0
        && report.enqueued.is_empty()
}

/// The next daily drift check of a converged tenant: the simulated clock moved to the next
/// midnight (when every Ready user's re-check falls due, and the refused users' hourly one), the
/// cycles of the 50 minutes after, and what they cost the tenant: Graph units, and requests by
/// endpoint.
async fn drift_check(r: &Reconciler, sim: &SimHandle) -> (u64, String) {
    let before = sim.stats();
    to_next_midnight(sim);
    let end = sim.now() + SignedDuration::from_mins(50);
    let mut cycles = 0;
    while sim.now() < end {
        let report = r.reconcile_tenant("contoso").await.unwrap();
        cycles += 1;
        sim.advance(SignedDuration::try_from(report.requeue_after).unwrap());
    }
    let after = sim.stats();
    let delta: BTreeMap<&String, u64> = after
        .requests
        .iter()
        .map(|(k, v)| (k, v - before.requests.get(k).copied().unwrap_or(0)))
        .filter(|(_, v)| *v > 0)
        .collect();
    let units = after.graph_units() - before.graph_units();
    (units, format!("{cycles} cycles, {units} Graph units, requests by endpoint: {delta:?}"))
}

/// The operator: cycles on the simulated clock until every user is settled.
async fn ours(c: &Creds, users: Vec<UserSpec>) -> Run {
    ours_in(c, users, &[]).await
}

/// [`ours`] in a Multi-Geo tenant with `geos`.
async fn ours_in(c: &Creds, users: Vec<UserSpec>, geos: &[&str]) -> Run {
    let n = users.len();
    let sim = simulator_in(c, users.clone(), FaultConfig::default(), geos).await;
    let client = kube(c, &sim, n).await;
    let r = on_sim_clock(&client, &sim);
    let (start, wall) = (sim.now(), Instant::now());
    let mut writes = 0;
    loop {
        let report = r.reconcile_tenant("contoso").await.unwrap();
        writes += report.site_writes;
        if settled(&report) {
            break;
        }
        sim.advance(SignedDuration::try_from(report.requeue_after).unwrap());
    }
    let simulated = sim.now().duration_since(start);
    let mut idle_writes = 0;
    for _ in 0..3 {
        sim.advance(SignedDuration::from_secs(POLL_SECS));
        idle_writes += r.reconcile_tenant("contoso").await.unwrap().site_writes;
    }
    // Measured apart: what the rollout cost is counted before it.
    let (stats, requests, wall) = (sim.stats(), tenant_requests(&sim), wall.elapsed());
    let drift = drift_check(&r, &sim).await;
    Run {
        simulated,
        wall,
        requests,
        graph_units: stats.graph_units(),
        writes,
        idle_writes,
        drift,
        batches: stats.enqueues.len(),
        provisioned: Population::of(&users).can_get_site,
        wrong: wrong_outcomes(&client, &users).await,
        wrong_geo: stats.enqueues.iter().map(|e| e.wrong_geo.len()).sum(),
        endpoints: stats.requests.clone(),
        enqueued_at: std::iter::once(start.to_string())
            .chain(stats.enqueues.iter().map(|e| e.at.clone()))
            .collect(),
    }
}

/// What configuring cost: the rollout with the tenant declaring site administrators and a quota.
struct Configured {
    /// Until every user was settled (the batches' pace: configuration must not slow it).
    provisioned_in: SignedDuration,
    /// Until every site that exists was configured too.
    configured_in: SignedDuration,
    provisioned: usize,
    configured: usize,
    batches: usize,
    /// Admin-host calls the configuration made (reads, administrators added, quotas set).
    settings_calls: u64,
    writes: usize,
    sites: usize,
    wall: Duration,
}

/// The operator with configuration on: cycles until every user is settled, then until every site
/// that exists is `Ready` (configured) or needs a person.
async fn configured(c: &Creds, mut users: Vec<UserSpec>) -> Configured {
    let n = users.len();
    let provisioned = Population::of(&users).can_get_site;
    users.push(UserSpec::new(MIGRATION));
    let sim = simulator(c, users, FaultConfig::default()).await;
    let client = kube_with(c, &sim, n, true).await;
    let r = on_sim_clock(&client, &sim);
    let (start, wall) = (sim.now(), Instant::now());
    let mut writes = 0;
    let mut provisioned_in = None;
    loop {
        let report = r.reconcile_tenant("contoso").await.unwrap();
        writes += report.site_writes;
        if provisioned_in.is_none() && settled(&report) {
            provisioned_in = Some(sim.now().duration_since(start));
        }
        if let Some(provisioned_in) = provisioned_in {
            let sites =
                Api::<OneDriveSite>::all(client.clone()).list(&Default::default()).await.unwrap().items;
            let waiting = sites.iter().any(|s| {
                let st = s.status.as_ref();
                st.and_then(|st| st.phase) == Some(onedrive_operator::api::SitePhase::Ready)
                    && !st
                        .and_then(|st| {
                            onedrive_operator::api::find_condition(&st.conditions, "SiteConfigured")
                        })
                        .is_some_and(|c| c.status == "True" || c.reason == "ConfigurationFailed")
            });
            if !waiting {
                let configured = sites
                    .iter()
                    .filter(|s| s.status.as_ref().and_then(|st| st.settings.as_ref()).is_some())
                    .count();
                let stats = sim.stats();
                let settings_calls = stats
                    .requests
                    .iter()
                    .filter(|(k, _)| k.starts_with("sharepoint.settings"))
                    .map(|(_, v)| v)
                    .sum();
                return Configured {
                    provisioned_in,
                    configured_in: sim.now().duration_since(start),
                    provisioned,
                    configured,
                    batches: stats.enqueues.len(),
                    settings_calls,
                    writes,
                    sites: n,
                    wall: wall.elapsed(),
                };
            }
        }
        sim.advance(SignedDuration::try_from(report.requeue_after).unwrap());
    }
}

/// The seeds, literally: enqueue 200, poll every user of the batch each interval, next batch.
async fn naive(c: &Creds, users: usize) -> Run {
    let sim = simulator(c, clean(users), FaultConfig::default()).await;
    let creds = Credentials::Certificate {
        client_id: CLIENT.into(),
        certificate: c.cert.clone(),
        key: Box::new(c.key.clone()),
        algorithm: Default::default(),
    };
    // The seeds look every user up: no tenant-wide listing.
    let config = TenantConfig {
        tenant_wide_listing: false,
        ..TenantConfig::from_spec(&tenant_and_cert(c, &sim).0.spec).with_policy(EndpointPolicy::overridable())
    };
    let client = TenantClient::new(config, creds).unwrap();
    let all: Vec<String> = (0..users).map(|i| format!("user{i:06}@contoso.com")).collect();
    let (start, wall) = (sim.now(), Instant::now());
    for batch in all.chunks(200) {
        client.enqueue(batch).await.unwrap();
        loop {
            sim.advance(SignedDuration::from_secs(POLL_SECS));
            let seen = client.observe(batch).await.unwrap();
            if seen.values().all(|o| matches!(o, Observation::HasSite { .. })) {
                break;
            }
        }
    }
    Run {
        simulated: sim.now().duration_since(start),
        wall: wall.elapsed(),
        requests: tenant_requests(&sim),
        graph_units: sim.stats().graph_units(),
        writes: 0,
        idle_writes: 0,
        drift: (0, String::new()),
        batches: sim.stats().enqueues.len(),
        provisioned: users,
        wrong: 0,
        wrong_geo: 0,
        endpoints: sim.stats().requests,
        enqueued_at: Vec::new(),
    }
}

/// The Multi-Geo section: a realistic population spread evenly over three geos, converged with
/// one pipeline per geo, against the per-geo minimum max over geos of ⌈Nᵍ/200⌉×D, beside the same
/// population in a single-geo tenant (one pipeline, minimum ⌈N/200⌉×D).
async fn multi_geo(c: &Creds, n: usize) -> String {
    const GEOS: [&str; 3] = ["NAM", "EUR", "APC"];
    let mut users = realistic(n);
    let names: Vec<String> = GEOS.iter().map(|g| g.to_string()).collect();
    simulator::spread_over_geos(&mut users, &names);
    let per_geo: Vec<usize> = GEOS
        .iter()
        .map(|g| {
            let mine: Vec<UserSpec> =
                users.iter().filter(|u| u.preferred_data_location.as_deref() == Some(*g)).cloned().collect();
            Population::of(&mine).can_get_site
        })
        .collect();
    let minimum = |batches: usize| SignedDuration::from_mins(DELAY_MIN * batches as i64);
    let geo_minimum = minimum(per_geo.iter().map(|n| n.div_ceil(200)).max().unwrap_or(0));
    let total = Population::of(&users).can_get_site;
    let single_minimum = minimum(total.div_ceil(200));
    let mut out = format!(
        "\n## Multi-Geo (3 geos, D = {DELAY_MIN} min, poll interval {POLL_SECS} s, simulated time)\n\nThe realistic population below, spread evenly over NAM (central), EUR and APC by `preferredDataLocation`; Nᵍ users per geo can get a site ({}). Each geo has its own admin host and its own batch pipeline; the per-geo minimum is max over geos of ⌈Nᵍ/200⌉×D = {}. The same population in a single-geo tenant has one pipeline, minimum ⌈N/200⌉×D = {}.\n\n- {}\n\n| tenant | simulated time | ÷ per-geo minimum | ÷ single-pipeline minimum | batches | users enqueued at another geo's host | users with a wrong outcome | wall time |\n|---|---|---|---|---|---|---|---|\n",
        GEOS.iter().zip(&per_geo).map(|(g, n)| format!("{g} {n}")).collect::<Vec<_>>().join(", "),
        fmt(geo_minimum),
        fmt(single_minimum),
        Population::of(&users),
    );
    for (who, geos) in [("3 geos, one pipeline each", &GEOS[..]), ("single geo, one pipeline", &[][..])] {
        let run = ours_in(c, users.clone(), geos).await;
        out.push_str(&format!(
            "| {who} | {} | {:.3} | {:.3} | {} | {} | {} | {:.1} s |\n",
            fmt(run.simulated),
            run.simulated.as_secs_f64() / geo_minimum.as_secs_f64(),
            run.simulated.as_secs_f64() / single_minimum.as_secs_f64(),
            run.batches,
            run.wrong_geo,
            run.wrong,
            run.wall.as_secs_f64()
        ));
        println!("{}", out.lines().last().unwrap());
    }
    out
}

/// A tenant of `n` Ready sites as a steady cycle finds it: the sites in the site cache (filled as
/// the watcher fills it: listed, then each again with the status the first plan wrote), the
/// observations of them, and the users the controller gathered last.
struct EngineTenant {
    cache: Arc<SiteCache>,
    observed: plan::Observations,
    limits: Limits,
    now: Timestamp,
    /// The heap the cached sites take.
    cache_mib: f64,
}

impl EngineTenant {
    fn new(n: usize) -> EngineTenant {
        let now = Timestamp::now();
        let resources: Vec<OneDriveSite> = (0..n)
            .map(|i| {
                let mut s = site("team-a", &format!("u{i}"), &format!("user{i:06}@contoso.com"), "contoso");
                s.metadata.generation = Some(1);
                s.metadata.creation_timestamp =
                    Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(now));
                s.metadata.uid = Some(format!("{:08x}-0000-4000-8000-{i:012x}", i));
                s
            })
            .collect();
        let cache = SiteCache::new();
        cache.apply(&Event::Init);
        for s in &resources {
            cache.apply(&Event::InitApply(s.clone()));
        }
        cache.apply(&Event::InitDone);
        // Converge them once through the planner so each carries a real Ready status.
        let snapshot = cache.state();
        let sites: Vec<DesiredSite> = snapshot.iter().map(|s| DesiredSite::from_resource(s)).collect();
        // The observations come in the order the tenant's listing gives them: not the sites' order.
        let mut arrived: Vec<(plan::UserKey, Observed)> = sites
            .iter()
            .map(|s| {
                let url = format!(
                    "https://contoso-my.sharepoint.com/personal/{}/",
                    s.user.replace(['@', '.'], "_")
                );
                (plan::user_key(&s.user), Observed::new(now, Observation::HasSite { url }))
            })
            .collect();
        arrived.shuffle(&mut rand_chacha::ChaCha8Rng::seed_from_u64(17));
        let observed: plan::Observations = arrived.into_iter().collect();
        let limits = Limits::default();
        // Every status at once (a running operator writes them over a few cycles).
        let all_at_once = Limits { site_updates_per_cycle: usize::MAX, ..Limits::default() };
        let first = plan::Planner::new(&sites).plan(&steady(&observed, &all_at_once, now));
        drop(sites);
        drop(snapshot);
        let mut statuses: HashMap<SiteKey<'static>, _> =
            first.site_updates.into_iter().map(|u| (u.key, u.status)).collect();
        // Each write comes back through the watch as a new version of the site.
        for mut s in resources {
            let key = SiteKey {
                namespace: s.metadata.namespace.clone().unwrap_or_default().into(),
                name: s.metadata.name.clone().unwrap_or_default().into(),
            };
            s.status = statuses.remove(&key);
            cache.apply(&Event::Apply(s));
        }
        // The cache's own size: a copy of it, counted by the allocator (resident memory would also
        // count what the setup freed).
        let before = heap_in_use();
        let copy: Vec<Arc<KeptSite>> = cache.state().iter().map(|c| Arc::new((**c).clone())).collect();
        let cache_mib = (heap_in_use() - before) as f64 / (1024.0 * 1024.0);
        drop(copy);
        EngineTenant { cache, observed, limits, now, cache_mib }
    }

    /// One steady cycle's CPU work: the tenant's sites from the cache → the planner's view (the
    /// sites gathered into users) → the plan, which names nobody to look at first.
    fn cycle(&mut self) {
        let mine = self.cache.tenant_sites("contoso", false);
        let sites: Vec<DesiredSite> = mine.iter().map(|s| DesiredSite::from_resource(s)).collect();
        let p = plan::Planner::new(&sites).plan(&steady(&self.observed, &self.limits, self.now));
        let nothing = p.gates.is_empty() && p.lookups.is_empty();
        assert!(nothing && p.site_updates.is_empty() && p.enqueue.is_none(), "steady state");
    }
}

/// What one size's cycles cost.
struct EngineCost {
    /// A steady cycle, run back to back with the one before (what it read is still in the CPU's
    /// caches as far as they hold it).
    warm: Duration,
    /// A steady cycle after the CPU's caches were filled with other data, as between a running
    /// operator's cycles (seconds apart, with the watch, HTTP and other tenants in between).
    cold: Duration,
    cache_mib: f64,
}

/// The cost of one cycle at each size, and the heap each size's cached sites take. The sizes are
/// measured in turns, several cycles each, so that all see the same machine: on a shared VM the
/// speed of one build drifts by a third within minutes, which, measuring one size after the
/// other, made their ratio a lottery.
fn engine(sizes: &[usize]) -> Vec<EngineCost> {
    let mut tenants: Vec<EngineTenant> = sizes.iter().map(|&n| EngineTenant::new(n)).collect();
    let mut cpu = vec![[Duration::ZERO; 2]; sizes.len()];
    // Twice the last-level cache of any machine this runs on, read between cold cycles.
    let mut other = vec![1u8; 128 << 20];
    const TURNS: u32 = 10;
    // About 100 ms of cycles a size per turn; the first turn warms up and is not counted.
    let runs: Vec<u32> = sizes.iter().map(|&n| (4_000_000 / n).clamp(3, 100) as u32).collect();
    for turn in 0..=TURNS {
        for ((t, c), &runs) in tenants.iter_mut().zip(&mut cpu).zip(&runs) {
            for (slot, cold) in [(0, false), (1, true)] {
                for _ in 0..runs {
                    if cold {
                        evict(&mut other);
                    }
                    let start = thread_cpu_time();
                    t.cycle();
                    if turn > 0 {
                        c[slot] += thread_cpu_time() - start;
                    }
                }
            }
        }
    }
    tenants
        .iter()
        .zip(cpu)
        .zip(runs)
        .map(|((t, [warm, cold]), runs)| {
            let per = |d: Duration| d / (runs * TURNS);
            EngineCost { warm: per(warm), cold: per(cold), cache_mib: t.cache_mib }
        })
        .collect()
}

/// Fills the CPU's caches with other data (every cache line of `other`, written).
fn evict(other: &mut [u8]) {
    for line in other.chunks_mut(64) {
        line[0] = line[0].wrapping_add(1);
    }
    std::hint::black_box(&other);
}

/// CPU time of this thread, to the nanosecond (`CLOCK_THREAD_CPUTIME_ID`).
fn thread_cpu_time() -> Duration {
    #[repr(C)]
    struct Timespec {
        tv_sec: i64,
        tv_nsec: i64,
    }
    unsafe extern "C" {
        fn clock_gettime(clock: i32, ts: *mut Timespec) -> i32;
    }
    const CLOCK_THREAD_CPUTIME_ID: i32 = 3;
    let mut ts = Timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes one timespec into the struct it is given.
    let ok = unsafe { clock_gettime(CLOCK_THREAD_CPUTIME_ID, &mut ts) } == 0;
    if ok { Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32) } else { Duration::ZERO }
}

fn steady<'a>(observed: &'a plan::Observations, limits: &'a Limits, now: Timestamp) -> PlanInput<'a> {
    PlanInput::new("contoso", observed, limits, now)
}

/// Bytes the allocator has handed out and not had back (glibc's `mallinfo2`).
fn heap_in_use() -> usize {
    #[repr(C)]
    struct MallInfo2 {
        arena: usize,
        ordblks: usize,
        smblks: usize,
        hblks: usize,
        hblkhd: usize,
        usmblks: usize,
        fsmblks: usize,
        uordblks: usize,
        fordblks: usize,
        keepcost: usize,
    }
    unsafe extern "C" {
        fn mallinfo2() -> MallInfo2;
    }
    // SAFETY: mallinfo2 takes nothing and returns a plain struct of counters.
    let info = unsafe { mallinfo2() };
    info.uordblks + info.hblkhd
}

/// What the soak measured.
struct Soak {
    ready: usize,
    /// Users who did not end with the reason their kind calls for (lost, or told wrongly).
    wrong: usize,
    oversized: usize,
    duplicates: usize,
    /// Enqueues of users the directory refuses (unlicensed, sign-in blocked).
    refused_sent: usize,
    restarts: usize,
    throttled: u64,
    simulated: SignedDuration,
    wall: Duration,
}

/// 5,000 users of the realistic population, 20% injected 429/503 and added latency, the
/// controller replaced by a fresh one (nothing in memory) every two batches.
async fn soak(c: &Creds) -> Soak {
    let users = realistic(5000);
    let faults = FaultConfig {
        rate: 0.2,
        seed: 7,
        max_retry_after: 0.5,
        latency: Duration::from_millis(2),
        ..FaultConfig::default()
    };
    let sim = simulator(c, users.clone(), faults).await;
    let client = kube(c, &sim, users.len()).await;
    let (start, wall) = (sim.now(), Instant::now());
    let mut r = on_sim_clock(&client, &sim);
    let mut restarts = 0;
    let mut last_batches = 0;
    let ready = loop {
        let report = r.reconcile_tenant("contoso").await.unwrap();
        if settled(&report) || wall.elapsed() > Duration::from_secs(900) {
            break report.users.ready as usize;
        }
        let batches = sim.stats().enqueues.len();
        if batches >= last_batches + 2 {
            last_batches = batches;
            restarts += 1;
            r = on_sim_clock(&client, &sim);
        }
        sim.advance(
            SignedDuration::try_from(report.requeue_after).unwrap().max(SignedDuration::from_secs(1)),
        );
    };
    let stats = sim.stats();
    let mut seen = HashSet::new();
    let mut duplicates = 0;
    for e in &stats.enqueues {
        for u in &e.users {
            if !seen.insert(u.clone()) {
                duplicates += 1;
            }
        }
    }
    let refused: HashSet<&str> =
        users.iter().filter(|u| !u.licensed || !u.sign_in_allowed).map(|u| u.upn.as_str()).collect();
    Soak {
        ready,
        wrong: wrong_outcomes(&client, &users).await,
        oversized: stats.enqueues.iter().filter(|e| e.users.len() > 200).count(),
        duplicates,
        refused_sent: seen.iter().filter(|u| refused.contains(u.as_str())).count(),
        restarts,
        throttled: stats.throttled,
        simulated: sim.now().duration_since(start),
        wall: wall.elapsed(),
    }
}

fn fmt(d: SignedDuration) -> String {
    plan::format_duration(d)
}

#[tokio::main]
async fn main() {
    // As the operator's `main` does: the engine section measures its cycles.
    onedrive_operator::tune_allocator();
    onedrive_operator::install_crypto_provider();
    let c = creds();
    let engine_only = std::env::args().nth(1).as_deref() == Some("engine");
    if std::env::args().nth(1).as_deref() == Some("geo") {
        println!("{}", multi_geo(&c, 6000).await);
        return;
    }
    // `configured 10000`: the rollout with site administrators and a quota declared.
    if std::env::args().nth(1).as_deref() == Some("configured") {
        let n: usize = std::env::args().nth(2).and_then(|n| n.parse().ok()).unwrap_or(10_000);
        let run = configured(&c, realistic(n)).await;
        let minimum = SignedDuration::from_mins(DELAY_MIN * run.provisioned.div_ceil(200) as i64);
        println!(
            "{n} users, configured: provisioned in {} ({:.3} × the tenant minimum, {} batches), every existing site configured {} after the start; {} sites configured, {} admin-host settings calls ({:.2} per configured site, {:.2} per provisioned user), {:.2} status writes per site, {:.1} s",
            fmt(run.provisioned_in),
            run.provisioned_in.as_secs_f64() / minimum.as_secs_f64(),
            run.batches,
            fmt(run.configured_in),
            run.configured,
            run.settings_calls,
            run.settings_calls as f64 / run.configured as f64,
            run.settings_calls as f64 / run.provisioned as f64,
            run.writes as f64 / run.sites as f64,
            run.wall.as_secs_f64()
        );
        // The row scripts/bench puts into docs/benchmarks.md.
        println!(
            "| {n} | {} | {:.3} | {} | {} | {:.2} | {:.2} | {:.2} |",
            fmt(run.provisioned_in),
            run.provisioned_in.as_secs_f64() / minimum.as_secs_f64(),
            fmt(run.configured_in),
            run.configured,
            run.settings_calls as f64 / run.configured as f64,
            run.settings_calls as f64 / run.provisioned as f64,
            run.writes as f64 / run.sites as f64,
        );
        return;
    }
    // `converge 10000`: only the operator's convergence rows (for iterating on tenant cost).
    if std::env::args().nth(1).as_deref() == Some("converge") {
        let n: usize = std::env::args().nth(2).and_then(|n| n.parse().ok()).unwrap_or(10_000);
        let run = ours(&c, realistic(n)).await;
        let minimum = SignedDuration::from_mins(DELAY_MIN * run.provisioned.div_ceil(200) as i64);
        println!(
            "{}\n{n} users: {} simulated ({:.3} × the tenant minimum, {} batches), {} tenant requests, {:.3} Graph units per provisioned user, {:.2} writes per site, {} wrong outcomes, {:.1} s",
            Population::of(&realistic(n)),
            fmt(run.simulated),
            run.simulated.as_secs_f64() / minimum.as_secs_f64(),
            run.batches,
            run.requests,
            run.graph_units as f64 / run.provisioned as f64,
            run.writes as f64 / n as f64,
            run.wrong,
            run.wall.as_secs_f64()
        );
        println!("requests by endpoint: {:?}", run.endpoints);
        println!("the next daily drift check: {}", run.drift.1);
        let at: Vec<Timestamp> = run.enqueued_at.iter().filter_map(|t| t.parse().ok()).collect();
        let gaps: Vec<i64> = at.windows(2).map(|w| w[1].duration_since(w[0]).as_secs() / 60).collect();
        println!("minutes from start, then between batches: {gaps:?}");
        return;
    }
    let sizes: Vec<usize> = std::env::args()
        .nth(1)
        .filter(|_| !engine_only)
        .map(|s| s.split(',').filter_map(|n| n.parse().ok()).collect())
        .unwrap_or(vec![1000, 10000]);
    let mut out = String::new();
    // First, on a fresh heap, so resident memory growth is the cache's own.
    out.push_str("## Engine cost (the CPU work of one steady-state cycle: the tenant's sites from the site cache, filled as the watcher fills it → the planner's view → the plan, which names nobody to look at first; release build)\n\nA cycle gathers the tenant's sites into users every time. Measured on this thread's CPU clock, the sizes in turns so both see the same machine. *Warm*: cycles back to back, so what one read is still in the CPU's caches as far as they hold it (a 10,000-site working set fits this machine's 32 MiB last-level cache, a 100,000-site one does not). *Cold*: the caches filled with other data before each cycle, as between a running operator's cycles (seconds apart, with the watch, HTTP and other tenants in between).\n\n| sites in cache | CPU per steady cycle, warm | CPU per steady cycle, cold | heap the cached sites take |\n|---|---|---|---|\n");
    let engine_sizes = [10_000, 100_000];
    let costs = engine(&engine_sizes);
    for (n, c) in engine_sizes.iter().zip(&costs) {
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        out.push_str(&format!(
            "| {n} | {:.1} ms | {:.1} ms | {:.1} MiB |\n",
            ms(c.warm),
            ms(c.cold),
            c.cache_mib
        ));
        println!("{}", out.lines().last().unwrap());
    }
    let growth = |d: fn(&EngineCost) -> Duration| d(&costs[1]).as_secs_f64() / d(&costs[0]).as_secs_f64();
    let per_site = |c: &EngineCost, n: usize| c.warm.as_secs_f64() * 1e6 / n as f64;
    out.push_str(&format!(
        "\nGrowth for 10× the sites: CPU ×{:.1} warm ({:.2} → {:.2} µs a site), ×{:.1} cold; memory ×{:.1} ({:.1} → {:.1} KiB a site).\n",
        growth(|c| c.warm),
        per_site(&costs[0], engine_sizes[0]),
        per_site(&costs[1], engine_sizes[1]),
        growth(|c| c.cold),
        costs[1].cache_mib / costs[0].cache_mib,
        costs[0].cache_mib * 1024.0 / engine_sizes[0] as f64,
        costs[1].cache_mib * 1024.0 / engine_sizes[1] as f64,
    ));
    println!("{}", out.lines().last().unwrap());
    out.push('\n');
    if engine_only {
        return;
    }
    out.push_str(&format!(
        "## Convergence and tenant cost (per-batch provisioning delay D = {DELAY_MIN} min, poll interval {POLL_SECS} s, simulated time)\n\n"
    ));
    out.push_str("The operator runs against the realistic population below; N is the number of users who can get a site and have none, and the tenant minimum is ⌈N/200⌉×D. Users whose profile ends in an error take a batch slot too (nothing tells them apart before the enqueue), and one of them stands at the end of every other batch. The naive baseline runs on a clean population of the same size (every user can get a site): on a realistic one it waits for users who never get a site. After the rollout, the clock moves on to the next midnight, when every Ready user's daily drift check falls due (and the refused users' hourly re-check): the cycles of the 50 minutes after cost the Graph units shown (the tenant-wide listings, and a drive lookup of each Ready user the listing does not show, e.g. renamed).\n\n");
    for &n in &sizes {
        out.push_str(&format!("- {}\n", Population::of(&realistic(n))));
    }
    out.push_str("\n| users | who | simulated time | ÷ tenant minimum ⌈N/200⌉×D | batches | tenant HTTP requests | per provisioned user | Graph throttling units per provisioned user | Graph units of the next daily drift check | status writes per site | writes when idle | users with a wrong outcome | wall time |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|\n");
    for &n in &sizes {
        let population = Population::of(&realistic(n));
        for (who, run) in [
            ("onedrive-operator", ours(&c, realistic(n)).await),
            ("naive baseline (clean population)", naive(&c, n).await),
        ] {
            let baseline = who.starts_with("naive");
            let provisioned = run.provisioned;
            let minimum = SignedDuration::from_mins(DELAY_MIN * provisioned.div_ceil(200) as i64);
            let writes =
                if baseline { "—".to_string() } else { format!("{:.2}", run.writes as f64 / n as f64) };
            let idle = if baseline { "—".to_string() } else { run.idle_writes.to_string() };
            let drift = if baseline { "—".to_string() } else { run.drift.0.to_string() };
            out.push_str(&format!(
                "| {n} | {who} | {} | {:.3} | {} | {} | {:.3} | {:.3} | {drift} | {writes} | {idle} | {} | {:.1} s |\n",
                fmt(run.simulated),
                run.simulated.as_secs_f64() / minimum.as_secs_f64(),
                run.batches,
                run.requests,
                run.requests as f64 / provisioned as f64,
                run.graph_units as f64 / provisioned as f64,
                run.wrong,
                run.wall.as_secs_f64()
            ));
            if !baseline {
                assert_eq!(provisioned, population.can_get_site);
            }
            println!("{}", out.lines().last().unwrap());
        }
    }
    out.push_str(&multi_geo(&c, 6000).await);
    let s = soak(&c).await;
    out.push_str(&format!(
        "\n## Soak (the realistic population of 5,000 users, 20% injected 429/503, 2 ms added latency, a fresh controller every 2 batches)\n\n- {}\n\n| users Ready | users with a wrong outcome | refused users sent | batches > 200 | duplicate enqueues | restarts | throttled answers | simulated time to converge | wall time |\n|---|---|---|---|---|---|---|---|---|\n| {} | {} | {} | {} | {} | {} | {} | {} | {:.1} s |\n",
        Population::of(&realistic(5000)),
        s.ready,
        s.wrong,
        s.refused_sent,
        s.oversized,
        s.duplicates,
        s.restarts,
        s.throttled,
        fmt(s.simulated),
        s.wall.as_secs_f64()
    ));
    println!("{}", out.lines().last().unwrap());
    if let Some(path) = std::env::var_os("BENCH_OUT") {
        std::fs::write(path, out).unwrap();
    }
}
