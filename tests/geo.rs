//! Multi-Geo and sovereign clouds: the controller against a simulated Multi-Geo tenant (each geo
//! its own admin host and user profiles) over loopback, with an in-memory Kubernetes API.

mod common;

use std::collections::{BTreeMap, HashMap, HashSet};

use common::*;
use jiff::SignedDuration;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, ListParams, Patch, PatchParams};
use onedrive_operator::api::{
    BatchStatus, Cloud, OneDriveSite, OneDriveTenant, OneDriveTenantSpec, SitePhase,
};
#[cfg(feature = "test-hooks")]
use onedrive_operator::controller::CrashPoint;
use onedrive_operator::controller::{Reconciler, ReconcilerOptions, SiteSource};
use onedrive_operator::m365::{EndpointPolicy, HostOverrides};
use onedrive_operator::simulator::{self, Config, SimHandle, UserSpec};
use onedrive_operator::testing::site;

const NS: &str = "onedrive-operator";
const GEOS: [&str; 3] = ["NAM", "EUR", "APC"];
const DELAY: SignedDuration = SignedDuration::from_mins(10);

/// 400 users per geo. Of the central geo's, a third set no preferred location and a third one the
/// tenant does not have (JPN): Microsoft puts both in the central geo.
fn multi_geo_config() -> Config {
    let mut c = sim_config(0);
    c.users = (0..1200)
        .map(|i| {
            let mut u = UserSpec::new(format!("user{i}@contoso.com"));
            u.preferred_data_location = match (i % 3, i % 9) {
                (0, 0) => None,
                (0, 3) => Some("JPN".into()),
                (g, _) => Some(GEOS[g].into()),
            };
            u
        })
        .collect();
    c.geos = GEOS.iter().map(|g| g.to_string()).collect();
    c
}

/// The geo each user's site must be made in.
fn expected_geo(upn: &str) -> &'static str {
    let i: usize = upn.trim_start_matches("user").split('@').next().unwrap().parse().unwrap();
    GEOS[i % 3]
}

fn tenant_spec(sim: &SimHandle) -> OneDriveTenantSpec {
    sim_tenant_spec(sim, "app-cert")
}

async fn cluster(spec: OneDriveTenantSpec, users: usize) -> kube::Client {
    let sites: Vec<OneDriveSite> = (0..users)
        .map(|i| site("team-a", &format!("u{i}"), &format!("user{i}@contoso.com"), "contoso"))
        .collect();
    fake_cluster::fake_cluster(
        sites,
        vec![OneDriveTenant::new("contoso", spec)],
        vec![tls_secret(NS, "app-cert", &["contoso"], &CERT, &KEY)],
    )
    .await
    .unwrap()
}

/// A reconciler on the simulator's clock, with the simulator's hosts for the public ones.
fn reconciler(client: &kube::Client, sim: &SimHandle, overrides: &[String]) -> Reconciler {
    Reconciler::new(
        client.clone(),
        ReconcilerOptions {
            endpoints: EndpointPolicy::Overridable(HostOverrides::parse(overrides).unwrap()),
            clock: std::sync::Arc::new(sim.clock()),
            ..ReconcilerOptions::new(NS, SiteSource::List)
        },
    )
}

async fn sites_of(client: &kube::Client) -> Vec<OneDriveSite> {
    Api::<OneDriveSite>::all(client.clone()).list(&ListParams::default()).await.unwrap().items
}

async fn tenant_of(client: &kube::Client) -> OneDriveTenant {
    Api::<OneDriveTenant>::all(client.clone()).get("contoso").await.unwrap()
}

fn all_ready(sites: &[OneDriveSite]) -> bool {
    sites.iter().all(|s| s.status.as_ref().and_then(|st| st.phase) == Some(SitePhase::Ready))
}

/// One cycle, then the simulated clock moves by the poll interval.
async fn step(r: &Reconciler, sim: &SimHandle) -> onedrive_operator::controller::CycleReport {
    let report = r.reconcile_tenant("contoso").await.unwrap();
    assert!(report.problem.is_none(), "{:?}", report.problem);
    sim.advance(SignedDuration::from_secs(60));
    report
}

async fn converge(r: &Reconciler, sim: &SimHandle, client: &kube::Client, max: usize) {
    for _ in 0..max {
        let report = step(r, sim).await;
        if report.enqueued.is_empty() && all_ready(&sites_of(client).await) {
            return;
        }
    }
    panic!("not converged after {max} cycles");
}

/// Every enqueue went to the admin host of each of its users' geo, with at most 200 users; no
/// user was sent twice; each geo's batch was sent only once its previous batch's last user had
/// a site (no jitter: a site appears exactly `DELAY` after its enqueue).
fn assert_each_geo_followed_the_rules(sim: &SimHandle) -> BTreeMap<String, usize> {
    let stats = sim.stats();
    let mut seen = HashSet::new();
    let mut last_at: HashMap<String, jiff::Timestamp> = HashMap::new();
    let mut per_geo: BTreeMap<String, usize> = BTreeMap::new();
    for e in &stats.enqueues {
        assert!(e.wrong_geo.is_empty(), "sent to {} but of another geo: {:?}", e.geo, e.wrong_geo);
        assert!(!e.users.is_empty() && e.users.len() <= 200, "batch of {}", e.users.len());
        for u in &e.users {
            assert_eq!(expected_geo(u), e.geo, "{u} sent to {}", e.geo);
            assert!(seen.insert(u.to_lowercase()), "{u} enqueued twice");
        }
        let at: jiff::Timestamp = e.at.parse().unwrap();
        if let Some(previous) = last_at.get(&e.geo) {
            assert!(at >= *previous + DELAY, "{} batch at {at} before its last user's site", e.geo);
        }
        last_at.insert(e.geo.clone(), at);
        *per_geo.entry(e.geo.clone()).or_default() += 1;
    }
    assert_eq!(seen.len(), 1200, "every user was sent exactly once");
    per_geo
}

async fn three_geos(crash: bool) {
    let sim = simulator::start(multi_geo_config(), "127.0.0.1:0".parse().unwrap()).await.unwrap();
    let client = cluster(tenant_spec(&sim), 1200).await;
    let overrides = sim.host_overrides();
    let mut r = reconciler(&client, &sim, &overrides);
    if crash {
        crash_mid_run(&mut r, &sim, &client, &overrides).await;
    }
    converge(&r, &sim, &client, 400).await;
    let per_geo = assert_each_geo_followed_the_rules(&sim);
    assert_eq!(per_geo, BTreeMap::from([("APC".into(), 2), ("EUR".into(), 2), ("NAM".into(), 2)]));
    // The geos ran in parallel: each geo's first batch went out in the same cycle.
    let firsts: HashSet<String> = sim.stats().enqueues.iter().take(3).map(|e| e.at.clone()).collect();
    assert_eq!(firsts.len(), 1, "first batches of the three geos sent together");

    let sites = sites_of(&client).await;
    for s in &sites {
        let st = s.status.as_ref().unwrap();
        assert_eq!(st.geo.as_deref(), Some(expected_geo(&s.spec.user)), "{}", s.spec.user);
    }
    let status = tenant_of(&client).await.status.unwrap();
    let geos: Vec<(&str, bool, i32, bool)> = status
        .geos
        .iter()
        .map(|g| (g.location.as_str(), g.central, g.users.ready, g.current_batch.is_none()))
        .collect();
    assert_eq!(geos, vec![("NAM", true, 400, true), ("APC", false, 400, true), ("EUR", false, 400, true)]);
    assert!(status.geos.iter().all(|g| g.last_batch_seconds == Some(DELAY.as_secs())), "{:?}", status.geos);
    assert_eq!(status.geos[1].admin_url, sim.admin_url_at(Some("APC")));
    assert_eq!(status.users.ready, 1200);
}

/// Runs until every geo has a batch in flight, then stops a cycle after it recorded its next
/// batches and before it sent them; a new process (empty memory) takes over.
#[cfg(feature = "test-hooks")]
async fn crash_mid_run(r: &mut Reconciler, sim: &SimHandle, client: &kube::Client, overrides: &[String]) {
    while sim.stats().enqueues.len() < 3 {
        step(r, sim).await;
    }
    r.crash_next_cycle_at(CrashPoint::BeforeSend);
    loop {
        let report = r.reconcile_tenant("contoso").await.unwrap();
        if report.crashed {
            break;
        }
        sim.advance(SignedDuration::from_secs(60));
    }
    let recorded = tenant_of(client).await.status.unwrap();
    let unsent: Vec<&BatchStatus> = recorded.batches().into_iter().filter(|b| !b.sent).collect();
    assert_eq!(unsent.len(), 3, "each geo recorded its next batch before the crash");
    *r = reconciler(client, sim, overrides);
}

#[cfg(not(feature = "test-hooks"))]
async fn crash_mid_run(_: &mut Reconciler, _: &SimHandle, _: &kube::Client, _: &[String]) {
    unreachable!("crash tests need the test-hooks feature")
}

#[tokio::test]
async fn three_geos_of_400_users_are_each_enqueued_through_their_own_admin_host() {
    three_geos(false).await;
}

#[cfg(feature = "test-hooks")]
#[tokio::test]
async fn a_restart_mid_run_resumes_each_geos_batch_and_sends_nobody_twice() {
    three_geos(true).await;
}

/// A tenant whose status was written before Multi-Geo (one `currentBatch`): the batch is the
/// central geo's, waited for and never sent again.
#[tokio::test]
async fn a_batch_recorded_before_the_upgrade_is_resumed_as_the_central_geos() {
    let mut c = sim_config(300);
    c.geos = GEOS.iter().map(|g| g.to_string()).collect();
    let sim = simulator::start(c, "127.0.0.1:0".parse().unwrap()).await.unwrap();
    let client = cluster(tenant_spec(&sim), 300).await;
    let overrides = sim.host_overrides();
    // The previous version sent users 0..200 (all central: no preferred location) and recorded it.
    let users: Vec<String> = (0..200).map(|i| format!("user{i}@contoso.com")).collect();
    let old = onedrive_operator::m365::TenantClient::new(
        onedrive_operator::m365::TenantConfig::from_spec(&tenant_spec(&sim))
            .with_policy(EndpointPolicy::overridable()),
        cert_credentials(&sim),
    )
    .unwrap();
    old.enqueue(&users).await.unwrap();
    // As that version wrote it: the users on the tenant (this version never writes them there).
    let legacy = serde_json::json!({
        "id": 4,
        "size": 200,
        "lastUser": users[199],
        "users": users,
        "enqueuedAt": Time(sim.now()),
        "sent": true,
    });
    Api::<OneDriveTenant>::all(client.clone())
        .patch_status(
            "contoso",
            &PatchParams::default(),
            &Patch::Merge(&serde_json::json!({"status": {"currentBatch": legacy, "lastBatchId": 4, "lastBatchSeconds": 600}})),
        )
        .await
        .unwrap();
    let r = reconciler(&client, &sim, &overrides);
    step(&r, &sim).await;
    let status = tenant_of(&client).await.status.unwrap();
    assert!(status.current_batch.is_none(), "the old field is carried over and removed");
    assert_eq!(status.geos[0].current_batch.as_ref().map(|b| b.id), Some(4));
    assert!(status.geos[0].central);
    let written =
        serde_json::to_string(&Api::<OneDriveTenant>::all(client.clone()).get("contoso").await.unwrap())
            .unwrap();
    assert!(!written.contains("@contoso.com"), "the upgrade moved the users off the tenant: {written}");
    converge(&r, &sim, &client, 100).await;
    let stats = sim.stats();
    let mut seen = HashSet::new();
    for e in &stats.enqueues {
        for u in &e.users {
            assert!(seen.insert(u.clone()), "{u} sent twice");
        }
    }
    assert_eq!(stats.enqueues.len(), 2, "the old batch, then the other 100 users after its last user");
    let second: jiff::Timestamp = stats.enqueues[1].at.parse().unwrap();
    let first: jiff::Timestamp = stats.enqueues[0].at.parse().unwrap();
    assert!(second >= first + DELAY, "the next batch waited for the old batch's last user");
    assert_eq!(tenant_of(&client).await.status.unwrap().last_batch_id, 5);
}

fn cert_credentials(sim: &SimHandle) -> onedrive_operator::m365::Credentials {
    let secrets = onedrive_operator::m365::SecretStore::from([(
        "app-cert".to_string(),
        onedrive_operator::m365::StoredSecret::new(
            onedrive_operator::m365::TLS_TYPE,
            &["contoso"],
            BTreeMap::from([
                ("tls.crt".to_string(), CERT.to_pem().into_bytes()),
                ("tls.key".to_string(), onedrive_operator::jose::private_key_to_pem(&KEY).into_bytes()),
            ]),
        ),
    )]);
    let scope = onedrive_operator::m365::SecretScope { secrets: &secrets, namespace: NS, tenant: "contoso" };
    onedrive_operator::m365::credentials_for(&tenant_spec(sim), &scope, &|_: &str| None, None).unwrap()
}

/// A GCC High tenant names no host but its cloud: sign-in and Graph go to the cloud's preset
/// hosts (pointed at the simulator here), and its users get sites.
#[tokio::test]
async fn a_gcc_high_tenant_reaches_its_clouds_preset_hosts() {
    let sim = simulator::start(sim_config(30), "127.0.0.1:0".parse().unwrap()).await.unwrap();
    let spec = OneDriveTenantSpec {
        cloud: Cloud::USGovGCCHigh,
        graph_url: None,
        authority_host: None,
        ..tenant_spec(&sim)
    };
    let client = cluster(spec, 30).await;
    let overrides = vec![
        format!("{}={}", Cloud::USGovGCCHigh.authority_host(), sim.authority_host()),
        format!("{}={}", Cloud::USGovGCCHigh.graph_url(), sim.graph_url()),
    ];
    let r = reconciler(&client, &sim, &overrides);
    converge(&r, &sim, &client, 60).await;
    assert_eq!(sim.stats().enqueues.iter().map(|e| e.users.len()).sum::<usize>(), 30);
    // Without the preset hosts pointed here, nothing answers: the Global hosts are never asked.
    let global = vec![
        format!("{}={}", Cloud::Global.authority_host(), sim.authority_host()),
        format!("{}={}", Cloud::Global.graph_url(), sim.graph_url()),
    ];
    let config = onedrive_operator::m365::TenantConfig::from_spec(&OneDriveTenantSpec {
        cloud: Cloud::USGovGCCHigh,
        graph_url: None,
        authority_host: None,
        ..tenant_spec(&sim)
    })
    .with_policy(EndpointPolicy::Overridable(HostOverrides::parse(&global).unwrap()));
    assert_eq!(config.graph_url, "https://graph.microsoft.us");
    assert_eq!(config.authority_host, "https://login.microsoftonline.us");
}

/// An app consented with Files.Read.All but not Sites.Read.All cannot list the geos: the tenant
/// keeps working as before Multi-Geo (every user through spec.adminUrl) and says why on its
/// `GeoDiscoveryFailed` condition.
#[tokio::test]
async fn a_tenant_whose_geos_cannot_be_listed_keeps_working_and_says_so() {
    let mut c = sim_config(20);
    c.withheld_permissions = vec!["Sites.Read.All".into()];
    let sim = simulator::start(c, "127.0.0.1:0".parse().unwrap()).await.unwrap();
    let client = cluster(tenant_spec(&sim), 20).await;
    let r = reconciler(&client, &sim, &[]);
    converge(&r, &sim, &client, 60).await;
    let status = tenant_of(&client).await.status.unwrap();
    let c = onedrive_operator::api::find_condition(&status.conditions, "GeoDiscoveryFailed").unwrap();
    assert_eq!((c.status.as_str(), c.reason.as_str()), ("True", "GeoDiscoveryFailed"));
    assert!(c.message.contains("Sites.Read.All") && c.message.contains(&sim.admin_url()), "{}", c.message);
    let ready = onedrive_operator::api::find_condition(&status.conditions, "Ready").unwrap();
    assert_eq!(ready.status, "True");
}

/// Each site is configured at its own geo's admin host (the simulator's geos each find only their
/// own sites): with a migration account declared on a three-geo tenant, every site ends Ready with
/// the account as administrator, and no settings call went to the wrong geo's host.
#[tokio::test]
async fn each_site_is_configured_at_its_own_geos_admin_host() {
    let sim = simulator::start(multi_geo_config(), "127.0.0.1:0".parse().unwrap()).await.unwrap();
    let mut spec = tenant_spec(&sim);
    spec.site_admins = vec!["user1199@contoso.com".into()];
    let client = cluster(spec, 300).await;
    let overrides = sim.host_overrides();
    let r = reconciler(&client, &sim, &overrides);
    let configured = |sites: &[OneDriveSite]| {
        sites.iter().all(|s| {
            s.status
                .as_ref()
                .and_then(|st| onedrive_operator::api::find_condition(&st.conditions, "Ready"))
                .is_some_and(|c| c.status == "True")
        })
    };
    let mut done = false;
    for _ in 0..60 {
        let report = step(&r, &sim).await;
        if report.enqueued.is_empty() && configured(&sites_of(&client).await) {
            done = true;
            break;
        }
    }
    assert!(done, "not every site became Ready (configured)");
    for i in 0..300 {
        let upn = format!("user{i}@contoso.com");
        let (admins, _) = sim.site_admins(&upn).unwrap();
        assert_eq!(admins, vec!["user1199@contoso.com"], "{upn}");
    }
    // A call at another geo's host would have been answered "Cannot get site" and retried.
    let stats = sim.stats();
    assert_eq!(stats.count("sharepoint.settings.read"), 300, "one read per site, each at its own geo");
}
