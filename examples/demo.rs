//! The whole operator, on your laptop, in under a minute: the real controller cycle against an
//! in-memory Kubernetes API and the Microsoft 365 simulator on loopback.
//!
//!     cargo run --example demo [-- --users 1000] [-- --group]
//!
//! With `--group` the users are the members of an Entra ID group ("All staff", half of them
//! through a nested group) and one `OneDriveSiteSet` declares them all: the operator creates a
//! `OneDriveSite` per member, then provisions them as it would hand-written ones.
//!
//! 1,000 `OneDriveSite`s in two namespaces, one `OneDriveTenant` (certificate auth), SharePoint
//! taking ten simulated minutes per batch (one real second), and a tenant as the field has them:
//! users already provisioned, unlicensed, sign-in blocked, answering lookups with quirks, and
//! users whose profile ends in an error. Watch batches of 200 go out, each only after the previous
//! batch's last user who can get a site has one, users move Pending → SPSSITEERROR → Ready, and
//! the others end with the reason that needs a person. The tenant declares a migration account
//! as every OneDrive's administrator and a 2 TiB quota: a site is `Ready` only once the simulator
//! has both (migration-ready).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};
use jiff::SignedDuration;
use kube::api::{Api, ListParams};
use onedrive_operator::api::{
    GroupRef, GroupSourceGrant, OneDriveSite, OneDriveSiteSet, OneDriveSiteSetSpec, OneDriveTenant,
    SetSource, SitePhase, TenantRef, condition_type, find_condition,
};
use onedrive_operator::controller::{Reconciler, ReconcilerOptions, SiteSource};
use onedrive_operator::simulator::manifests::{PrintedAuth, tenant_and_secret};
use onedrive_operator::simulator::{
    self, App, Clock, Config, GroupMember, GroupSpec, Population, generate_users,
};
use onedrive_operator::testing::site;

#[path = "../tests/common/fake_cluster.rs"]
mod fake_cluster;
use fake_cluster::fake_cluster;

const NAMESPACE: &str = "onedrive-operator";
/// The demo's group (`--group`) and the namespace its set lives in.
const STAFF: &str = "5e7a0c2b-3d4f-4a6b-8c9d-1e2f3a4b5c6d";
const NESTED: &str = "6f8b1d3c-4e5a-4b7c-9d0e-2f3a4b5c6d7e";
const SET_NAMESPACE: &str = "team-all";

/// "All staff": the first half of `users` directly, the rest through a nested group.
fn staff(users: usize) -> Vec<GroupSpec> {
    let upn = |i: usize| format!("user{i:04}@contoso.onmicrosoft.com");
    let mut direct: Vec<GroupMember> = (1..=users / 2).map(|i| GroupMember::User(upn(i))).collect();
    direct.push(GroupMember::Group(NESTED.into()));
    let nested = (users / 2 + 1..=users).map(|i| GroupMember::User(upn(i))).collect();
    let mut all = GroupSpec::new(STAFF, "All staff", direct);
    all.mail = Some("staff@contoso.onmicrosoft.com".into());
    vec![all, GroupSpec::new(NESTED, "New joiners", nested)]
}

/// One set declaring every member of "All staff".
fn staff_set() -> OneDriveSiteSet {
    let mut set = OneDriveSiteSet::new(
        "all-staff",
        OneDriveSiteSetSpec {
            tenant_ref: Some(TenantRef { name: "contoso".into() }),
            source: SetSource {
                group: Some(GroupRef { id: None, mail: Some("staff@contoso.onmicrosoft.com".into()) }),
                users: None,
            },
            ..Default::default()
        },
    );
    set.metadata.namespace = Some(SET_NAMESPACE.into());
    set
}

/// Sites that exist whose settings are not applied yet (a person-needing failure counts as settled).
async fn configuring(kube: &kube::Client) -> Result<usize, kube::Error> {
    let sites = Api::<OneDriveSite>::all(kube.clone()).list(&ListParams::default()).await?.items;
    Ok(sites
        .iter()
        .filter(|s| {
            let st = s.status.as_ref();
            st.and_then(|st| st.phase) == Some(SitePhase::Ready)
                && !st
                    .and_then(|st| find_condition(&st.conditions, condition_type::SITE_CONFIGURED))
                    .is_some_and(|c| c.status == "True" || c.reason != "Configuring")
        })
        .count())
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let users: usize =
        std::env::args().skip_while(|a| a != "--users").nth(1).and_then(|n| n.parse().ok()).unwrap_or(1000);
    let from_group = std::env::args().any(|a| a == "--group");
    onedrive_operator::install_crypto_provider();
    println!("onedrive-operator demo: {users} users, batches of at most 200\n");

    // A simulated Microsoft 365 tenant: ten simulated minutes per site, 600x faster than real time.
    let key = onedrive_operator::jose::generate_key();
    let certificate = onedrive_operator::jose::self_signed_certificate(&key, "demo")?;
    let client_id = "d3m0d3m0-0000-4000-8000-000000000001";
    let mut population = generate_users(users, "contoso.onmicrosoft.com");
    println!("Population: {}\n", Population::of(&population));
    // The migration tool's account: a directory user, never a OneDriveSite of its own here.
    let migration = "migration@contoso.onmicrosoft.com";
    population.push(onedrive_operator::simulator::UserSpec::new(migration));
    let mut config = Config {
        users: population,
        apps: vec![App::Certificate { client_id: client_id.into(), certificate: certificate.clone() }],
        provision_delay: SignedDuration::from_mins(10),
        clock: Clock::Scaled(600.0),
        groups: if from_group { staff(users) } else { Vec::new() },
        ..Config::default()
    };
    config.jitter = 0.2;
    let sim = simulator::start(config, "127.0.0.1:0".parse()?).await?;
    println!("Microsoft 365 simulator on {} (stats: {}/_sim/stats)", sim.addr(), sim.base_url());

    // An in-memory Kubernetes API holding the manifests a platform team would commit.
    let data = BTreeMap::from([
        ("tls.crt".to_string(), certificate.to_pem()),
        ("tls.key".to_string(), onedrive_operator::jose::private_key_to_pem(&key)),
    ]);
    let (mut tenant, secret) =
        tenant_and_secret("contoso", NAMESPACE, &sim.endpoints(), PrintedAuth::Certificate, client_id, data);
    tenant.spec.poll_interval = "60s".into();
    tenant.spec.site_admins = vec![migration.into()];
    tenant.spec.storage_quota = Some("2Ti".into());
    println!("The tenant declares siteAdmins [{migration}] and storageQuota 2Ti for every OneDrive.\n");
    let sites: Vec<OneDriveSite> = if from_group {
        // The platform team lets `team-all` read this one group, by the mail the set names it with.
        tenant.spec.group_sources = vec![GroupSourceGrant {
            namespaces: vec![SET_NAMESPACE.into()],
            groups: vec!["staff@contoso.onmicrosoft.com".into()],
        }];
        println!(
            "One OneDriveSiteSet in {SET_NAMESPACE}: every member of the group staff@contoso.onmicrosoft.com (half of them through a nested group).\n"
        );
        Vec::new()
    } else {
        (1..=users)
            .map(|i| {
                let namespace = if i % 2 == 0 { "team-finance" } else { "team-sales" };
                site(
                    namespace,
                    &format!("user{i:04}"),
                    &format!("user{i:04}@contoso.onmicrosoft.com"),
                    "contoso",
                )
            })
            .collect()
    };
    let kube = fake_cluster(sites, vec![tenant], vec![secret]).await?;
    if from_group {
        Api::<OneDriveSiteSet>::namespaced(kube.clone(), SET_NAMESPACE)
            .create(&Default::default(), &staff_set())
            .await?;
    }

    // The real reconcile cycle, scheduled the way the controller schedules it.
    // The simulator is on loopback, outside any Microsoft cloud: the demo opts in, as
    // `--allow-endpoint-overrides` does for the operator.
    // The controller keeps the tenant's time (the simulator's, 600x real time): its poll interval,
    // its pace of configuring sites and the ETA are the tenant's, as they would be in production.
    let options = ReconcilerOptions {
        endpoints: onedrive_operator::m365::EndpointPolicy::overridable(),
        clock: std::sync::Arc::new(sim.clock()),
        ..ReconcilerOptions::new(NAMESPACE, SiteSource::List)
    };
    let reconciler = Reconciler::new(kube.clone(), options);
    let bar = ProgressBar::new(users as u64);
    bar.set_style(
        ProgressStyle::with_template("{elapsed_precise} [{bar:40}] {pos}/{len} Ready  {msg}")?
            .progress_chars("=> "),
    );
    let started = Instant::now();
    let mut writes = 0;
    loop {
        if from_group {
            // The set's controller: its passes until it has written every site it declares.
            let mut created = 0;
            loop {
                let pass = reconciler.reconcile_set(SET_NAMESPACE, "all-staff").await?;
                created += pass.created;
                if pass.created + pass.updated + pass.deleted == 0 {
                    break;
                }
            }
            if created > 0 {
                let line = format!(
                    "{:>6.1}s  the set created {created} OneDriveSites from the group's members",
                    started.elapsed().as_secs_f64()
                );
                bar.suspend(|| println!("{line}"));
            }
        }
        let report = reconciler.reconcile_tenant("contoso").await?;
        writes += report.site_writes;
        let u = &report.users;
        for batch in &report.enqueued {
            let line = format!(
                "{:>6.1}s  batch {} sent: {} users ({} … {}), last user {}",
                started.elapsed().as_secs_f64(),
                batch.id,
                batch.users.len(),
                batch.users.first().map(String::as_str).unwrap_or(""),
                batch.users.last().map(String::as_str).unwrap_or(""),
                batch.last_user
            );
            // Printed even when the progress bar is hidden (output not a terminal).
            bar.suspend(|| println!("{line}"));
        }
        if !report.enqueued.is_empty() {
            let line = progress_line(&kube, sim.now()).await?;
            bar.suspend(|| println!("{line}"));
        }
        bar.set_position(u.ready as u64);
        bar.set_message(format!(
            "{} SPSSITEERROR, {} Pending, {} Failed",
            u.provisioning, u.pending, u.failed
        ));
        if let Some(p) = &report.problem {
            bar.suspend(|| println!("tenant not ready: {p}"));
        }
        // Done when every user is settled (Ready, or Failed with a reason a person must act on)
        // and every site that exists is migration-ready.
        if u.desired > 0
            && u.pending == 0
            && u.provisioning == 0
            && report.enqueued.is_empty()
            && configuring(&kube).await? == 0
        {
            break;
        }
        if started.elapsed() > Duration::from_secs(110) {
            bar.suspend(|| println!("stopping: the demo has a two-minute budget"));
            break;
        }
        // The requeue interval is in the tenant's time, 600x faster than real time.
        tokio::time::sleep(report.requeue_after.div_f64(600.0).min(Duration::from_millis(500))).await;
    }
    bar.finish();
    let stats = sim.stats();
    let sites = Api::<OneDriveSite>::all(kube.clone()).list(&ListParams::default()).await?.items;
    let count =
        |p: SitePhase| sites.iter().filter(|s| s.status.as_ref().and_then(|st| st.phase) == Some(p)).count();
    println!("\nDone in {:.1}s:", started.elapsed().as_secs_f64());
    let mut by_reason: BTreeMap<String, usize> = BTreeMap::new();
    for s in &sites {
        let reason = s
            .status
            .as_ref()
            .and_then(|st| find_condition(&st.conditions, condition_type::READY))
            .map(|c| c.reason.clone())
            .unwrap_or_else(|| "(no status)".into());
        *by_reason.entry(reason).or_default() += 1;
    }
    println!(
        "  {} Ready, {} Failed, {} Pending, {} SPSSITEERROR; by reason: {}",
        count(SitePhase::Ready),
        count(SitePhase::Failed),
        count(SitePhase::Pending),
        count(SitePhase::SpsSiteError),
        by_reason.iter().map(|(r, n)| format!("{r} {n}")).collect::<Vec<_>>().join(", ")
    );
    let configured = sites
        .iter()
        .filter(|s| {
            s.status
                .as_ref()
                .and_then(|st| find_condition(&st.conditions, condition_type::SITE_CONFIGURED))
                .is_some_and(|c| c.status == "True")
        })
        .count();
    let on_site = sites
        .iter()
        .filter(|s| {
            sim.site_admins(&s.spec.user)
                .is_some_and(|(a, q)| a.iter().any(|x| x == migration) && q == 2 * 1_048_576)
        })
        .count();
    println!(
        "  migration-ready: {configured} sites SiteConfigured; the simulator has {migration} as administrator and a 2 TiB quota on {on_site} OneDrives"
    );
    println!(
        "  {} enqueue requests (largest {} users), {} Graph requests, {} status writes for {} sites",
        stats.enqueues.len(),
        stats.enqueues.iter().map(|e| e.users.len()).max().unwrap_or(0),
        stats.graph_requests(),
        writes,
        sites.len()
    );
    if from_group {
        // One more pass: the set counts its sites' final phases.
        reconciler.reconcile_set(SET_NAMESPACE, "all-staff").await?;
        let set = Api::<OneDriveSiteSet>::namespaced(kube.clone(), SET_NAMESPACE).get("all-staff").await?;
        let status = set.status.unwrap_or_default();
        let ready = find_condition(&status.conditions, condition_type::READY);
        println!("\n$ kubectl get odss all-staff -n {SET_NAMESPACE}   (its Ready condition)");
        println!(
            "members {}, sites {} ({} Ready, {} Failed); Ready {} {}: {}",
            status.members.unwrap_or(0),
            status.children.total,
            status.children.ready,
            status.children.failed,
            ready.map_or("", |c| c.status.as_str()),
            ready.map_or("", |c| c.reason.as_str()),
            ready.map_or("", |c| c.message.as_str())
        );
    }
    if let Some(s) = sites.iter().find(|s| s.status.as_ref().and_then(|st| st.settings.as_ref()).is_some()) {
        let st = s.status.as_ref().unwrap();
        let c = find_condition(&st.conditions, condition_type::SITE_CONFIGURED).unwrap();
        println!(
            "\n$ kubectl get ods {} -o jsonpath='{{.status.settings}}'   (and its SiteConfigured condition)",
            s.metadata.name.as_deref().unwrap_or("")
        );
        println!("{}", serde_json::to_string(st.settings.as_ref().unwrap())?);
        println!("SiteConfigured {} {}: {}", c.status, c.reason, c.message);
    }
    println!("\n$ kubectl get ods -A -o wide   (the first 8, then one of each reason)");
    println!("{:<14} {:<10} {:<36} {:<13} {:<25} SITE", "NAMESPACE", "NAME", "USER", "PHASE", "REASON");
    let reason_of = |s: &OneDriveSite| {
        s.status
            .as_ref()
            .and_then(|st| find_condition(&st.conditions, condition_type::READY))
            .map(|c| c.reason.clone())
    };
    let mut shown: Vec<&OneDriveSite> = sites.iter().take(8).collect();
    for reason in by_reason.keys() {
        if let Some(s) = sites.iter().skip(8).find(|s| reason_of(s).as_ref() == Some(reason)) {
            shown.push(s);
        }
    }
    for s in shown {
        let st = s.status.clone().unwrap_or_default();
        let reason = find_condition(&st.conditions, condition_type::READY)
            .map(|c| c.reason.clone())
            .unwrap_or_default();
        println!(
            "{:<14} {:<10} {:<36} {:<13} {:<25} {}",
            s.metadata.namespace.as_deref().unwrap_or(""),
            s.metadata.name.as_deref().unwrap_or(""),
            s.spec.user,
            st.phase.map(|p| p.to_string()).unwrap_or_default(),
            reason,
            st.site_url.unwrap_or_default()
        );
    }
    println!("\nWhy the others need a person (one message per reason):");
    for reason in by_reason.keys() {
        let failed = sites.iter().find(|s| {
            reason_of(s).as_ref() == Some(reason)
                && s.status.as_ref().and_then(|st| st.phase) == Some(SitePhase::Failed)
        });
        if let Some(s) = failed {
            let message = s
                .status
                .as_ref()
                .and_then(|st| find_condition(&st.conditions, condition_type::READY))
                .map(|c| c.message.clone())
                .unwrap_or_default();
            println!("  {reason}: {message}");
        }
    }
    sim.shutdown().await;
    Ok(())
}

/// `kubectl get odt`'s view of the rollout: users and batches left, and the estimated end.
async fn progress_line(
    kube: &kube::Client,
    now: jiff::Timestamp,
) -> Result<String, Box<dyn std::error::Error>> {
    let tenant = Api::<OneDriveTenant>::all(kube.clone()).get("contoso").await?;
    let Some(p) = tenant.status.and_then(|s| s.progress) else { return Ok("         nothing left".into()) };
    let eta = match &p.estimated_completion {
        Some(t) => {
            let left = t.0.duration_since(now).as_secs_f64().max(0.0) / 60.0;
            format!("ETA {} (in {left:.0} minutes of the tenant's time)", t.0)
        }
        None => "ETA once a batch has completed".into(),
    };
    Ok(format!("         {} users and {} batches left, {eta}", p.users_left, p.batches_left))
}
