//! Tenant-wide listings against the simulator: many users are observed through a few pages of
//! Graph's site and directory listings, users whose answer must be their own are still looked up
//! one by one, and a listing that is refused, lags or shows nothing falls back to lookups.

mod common;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use common::*;
use jiff::SignedDuration;
use kube::api::Api;
use onedrive_operator::api::{
    CertificateAuth, DelegatedAuth, OneDriveSite, OneDriveTenantSpec, SecretKeyRef, SecretRef, TenantAuth,
    TenantWideListing,
};
use onedrive_operator::controller::{Reconciler, ReconcilerOptions, SiteSource};
use onedrive_operator::m365::{ClientClock, SecretStore, TenantClient, TenantConfig, credentials_for};
use onedrive_operator::plan::{Lookup, Observation, user_key};
use onedrive_operator::simulator::{
    self, Clock, Config, Population, SimHandle, UserSpec, expected_reason, generate_users,
};

const DOMAIN: &str = "contoso.com";

async fn start(c: Config) -> SimHandle {
    simulator::start(c, "127.0.0.1:0".parse().unwrap()).await.unwrap()
}

fn certificate() -> TenantAuth {
    TenantAuth {
        certificate: Some(CertificateAuth {
            client_id: APP.into(),
            secret_ref: SecretRef { name: "app-cert".into() },
            algorithm: Default::default(),
        }),
        ..Default::default()
    }
}

fn client(sim: &SimHandle, auth: TenantAuth, listing: TenantWideListing) -> TenantClient {
    client_tuned(sim, auth, listing, |_| {})
}

fn client_tuned(
    sim: &SimHandle,
    auth: TenantAuth,
    listing: TenantWideListing,
    tune: impl FnOnce(&mut TenantConfig),
) -> TenantClient {
    let spec = OneDriveTenantSpec { auth, tenant_wide_listing: listing, ..sim_tenant_spec(sim, "app-cert") };
    let mut secrets = SecretStore::new();
    secrets.insert("app-cert".into(), stored_cert());
    secrets.insert("delegated".into(), stored_token(REFRESH_TOKEN));
    let creds = credentials_for(&spec, &scope(&secrets, OPERATOR_NS), &|_| None, None).unwrap();
    let mut config = sim_client_config(&spec);
    tune(&mut config);
    TenantClient::new(config, creds).unwrap()
}

fn config(users: Vec<UserSpec>) -> Config {
    Config { users, ..sim_config(0) }
}

/// A realistic population of 1,000 (and 10 unknown users): two listings place everyone, and only
/// the users the directory refuses are looked up on their own before that verdict stands.
#[tokio::test]
async fn many_users_are_observed_through_two_listings_and_refusals_are_confirmed_one_by_one() {
    let population = generate_users(1000, DOMAIN);
    let truth = Population::of(&population);
    let sim = start(config(population.clone())).await;
    let c = client(&sim, certificate(), TenantWideListing::Auto);
    let mut asked: Vec<String> = population.iter().map(|u| u.upn.clone()).collect();
    asked.extend((0..10).map(|i| format!("ghost{i}@{DOMAIN}")));
    let seen = c.observe(&asked).await.unwrap();
    assert_eq!(seen.len(), asked.len());
    for u in &population {
        let o = &seen[&user_key(&u.upn)];
        match o {
            Observation::HasSite { url } => {
                assert!(u.has_site && u.renamed_from.is_none(), "{}: {o:?}", u.upn);
                assert!(url.ends_with(&format!("/personal/{}/", u.upn.replace(['@', '.'], "_"))), "{url}");
            }
            // A renamed user's site carries their former name: the listing cannot place it, and the
            // directory allows a site, so they look like anyone without one (an enqueue of them is
            // ignored by SharePoint, and their profile then shows the site).
            Observation::NoSite => assert!(!u.has_site || u.renamed_from.is_some(), "{}: {o:?}", u.upn),
            Observation::UserNotLicensed => assert!(!u.licensed, "{}", u.upn),
            Observation::SignInBlocked => assert!(!u.sign_in_allowed, "{}", u.upn),
            other => panic!("{}: {other:?}", u.upn),
        }
    }
    for i in 0..10 {
        assert_eq!(seen[format!("ghost{i}@{DOMAIN}").as_str()], Observation::UserNotFound);
    }
    // Cost as Graph counts it: 1 page of sites (2 units), 2 pages of users (1 each), and one drive
    // lookup per refused user (unlicensed, blocked, unknown) — against ≈ 1,900 lookups one by one.
    let stats = sim.stats();
    let refused = (truth.unlicensed + truth.sign_in_blocked + 10) as u64;
    assert_eq!(stats.count("graph.sites"), 1);
    assert_eq!(stats.count("graph.users"), 2);
    assert_eq!(stats.count("graph.batch.items"), refused);
    assert_eq!(stats.graph_units(), 2 + 2 + refused);
    println!("{truth}: {} Graph units", stats.graph_units());
}

/// Below 100 users, or with `tenantWideListing: Never`, every user is looked up on their own.
#[tokio::test]
async fn few_users_or_listing_never_are_looked_up_one_by_one() {
    let population = generate_users(150, DOMAIN);
    let sim = start(config(population.clone())).await;
    let upns: Vec<String> = population.iter().map(|u| u.upn.clone()).collect();
    client(&sim, certificate(), TenantWideListing::Auto).observe(&upns[..99]).await.unwrap();
    client(&sim, certificate(), TenantWideListing::Never).observe(&upns).await.unwrap();
    let stats = sim.stats();
    assert_eq!((stats.count("graph.sites"), stats.count("graph.users")), (0, 0));
    assert!(stats.count("graph.batch.items") >= 99 + 150);
}

/// A listing that lags: sites created within the lag are missing. A user whose "no site" would end
/// something (`confirm`) is looked up on their own and found; once the listing has missed more
/// than a tenth of such users, listings are left alone and everyone is looked up.
#[tokio::test]
async fn a_lagging_listing_is_checked_by_users_own_lookups_and_then_left_alone() {
    let users: Vec<UserSpec> = (0..150).map(|i| UserSpec::new(format!("u{i:03}@{DOMAIN}"))).collect();
    let upns: Vec<String> = users.iter().map(|u| u.upn.clone()).collect();
    let sim =
        start(Config { clock: Clock::Manual, listing_lag: SignedDuration::from_hours(1), ..config(users) })
            .await;
    let c = client(&sim, certificate(), TenantWideListing::Auto);
    c.enqueue(&upns[..100]).await.unwrap();
    c.enqueue(&upns[100..]).await.unwrap();
    sim.advance(SignedDuration::from_mins(15));
    let lookups = |confirmed: usize| -> Vec<Lookup> {
        upns.iter().enumerate().map(|(i, u)| Lookup { confirm: i < confirmed, ..Lookup::drive(u) }).collect()
    };
    let seen = c.observe_lookups(&lookups(1)).await.unwrap();
    assert!(
        matches!(seen[&user_key(&upns[0])], Observation::HasSite { .. }),
        "confirmed by its own lookup: {:?}",
        seen[&user_key(&upns[0])]
    );
    assert_eq!(seen[&user_key(&upns[1])], Observation::NoSite, "the listing's word: not there yet");
    assert_eq!(sim.stats().count("graph.sites"), 1);
    // 20 confirmed users, all missed by the listing: it is not used again for now.
    let seen = c.observe_lookups(&lookups(20)).await.unwrap();
    assert!((0..20).all(|i| matches!(seen[&user_key(&upns[i])], Observation::HasSite { .. })));
    let seen = c.observe_lookups(&lookups(0)).await.unwrap();
    assert_eq!(sim.stats().count("graph.sites"), 2, "no third listing");
    assert!(upns.iter().all(|u| matches!(seen[&user_key(u)], Observation::HasSite { .. })));
}

/// Graph refuses the listing to an app without `Sites.Read.All` (drives need only
/// `Files.Read.All`): users are looked up one by one, and the listing is not asked again.
#[tokio::test]
async fn a_refused_listing_falls_back_to_lookups() {
    let population = generate_users(200, DOMAIN);
    let mut c = config(population.clone());
    c.withheld_permissions = vec!["Sites.Read.All".into()];
    let sim = start(c).await;
    let client = client(&sim, certificate(), TenantWideListing::Auto);
    let upns: Vec<String> = population.iter().map(|u| u.upn.clone()).collect();
    let first = client.observe(&upns).await.unwrap();
    let second = client.observe(&upns).await.unwrap();
    assert_eq!(first, second);
    for u in &population {
        assert_eq!(matches!(first[&user_key(&u.upn)], Observation::HasSite { .. }), u.has_site, "{}", u.upn);
    }
    assert_eq!(sim.stats().count("graph.sites"), 1, "refused once, then left alone");
}

/// Delegated tokens are reported to see no personal sites in listings (the simulator shows them
/// none): a delegated client never lists, so an empty listing never passes for "nobody has a site".
#[tokio::test]
async fn delegated_credentials_never_use_the_listing() {
    let population = generate_users(200, DOMAIN);
    let sim = start(config(population.clone())).await;
    let delegated = TenantAuth {
        delegated: Some(DelegatedAuth {
            client_id: APP.into(),
            refresh_token_secret_ref: SecretKeyRef { name: "delegated".into(), key: "refresh_token".into() },
        }),
        ..Default::default()
    };
    let c = client(&sim, delegated, TenantWideListing::Auto);
    let upns: Vec<String> = population.iter().map(|u| u.upn.clone()).collect();
    let seen = c.observe(&upns).await.unwrap();
    assert_eq!(sim.stats().count("graph.sites"), 0);
    assert_eq!(seen.values().filter(|o| matches!(o, Observation::HasSite { .. })).count(), 20);
}

/// The controller over a realistic population of 600, with a site listing that lags 15
/// minutes behind new sites: every user ends with the reason their kind calls for, no refused
/// user is sent, nobody twice, and the tenant is observed mostly through listings.
#[tokio::test]
async fn the_controller_converges_through_a_lagging_listing_with_every_outcome_right() {
    let population = generate_users(600, DOMAIN);
    let sim = start(Config {
        clock: Clock::Manual,
        listing_lag: SignedDuration::from_mins(15),
        ..config(population.clone())
    })
    .await;
    let sites: Vec<_> = population
        .iter()
        .enumerate()
        .map(|(i, u)| onedrive_operator::testing::site("team-a", &format!("u{i}"), &u.upn, "contoso"))
        .collect();
    let client = kube(
        sites,
        vec![sim_tenant(&sim, "contoso", "app-cert")],
        vec![cert_secret("app-cert", &["contoso"])],
    )
    .await;
    let r = Reconciler::new(
        client.clone(),
        ReconcilerOptions { clock: Arc::new(sim.clock()), ..common::options(OPERATOR_NS, SiteSource::List) },
    );
    let mut settled = false;
    for _ in 0..2000 {
        let report = r.reconcile_tenant("contoso").await.unwrap();
        if report.users.pending == 0 && report.users.provisioning == 0 && report.enqueued.is_empty() {
            settled = true;
            break;
        }
        sim.advance(
            SignedDuration::try_from(report.requeue_after).unwrap().max(SignedDuration::from_secs(1)),
        );
    }
    assert!(settled, "not settled");
    let by_upn: HashMap<&str, &UserSpec> = population.iter().map(|u| (u.upn.as_str(), u)).collect();
    for s in Api::<OneDriveSite>::all(client.clone()).list(&Default::default()).await.unwrap().items {
        assert_eq!(ready_reason(&s), expected_reason(by_upn[s.spec.user.as_str()]), "{}", s.spec.user);
    }
    let stats = sim.stats();
    let mut sent = HashSet::new();
    for u in stats.enqueues.iter().flat_map(|e| &e.users) {
        assert!(sent.insert(u.to_lowercase()), "{u} sent twice");
        let spec = by_upn[u.as_str()];
        assert!(spec.licensed && spec.sign_in_allowed, "{u} is refused by the directory and was sent");
    }
    let provisioned = Population::of(&population).can_get_site as f64;
    println!(
        "{} Graph units ({:.3} per provisioned user), {} site listing pages, {} directory pages",
        stats.graph_units(),
        stats.graph_units() as f64 / provisioned,
        stats.count("graph.sites"),
        stats.count("graph.users")
    );
    assert!(
        stats.count("graph.sites") > 0 && stats.graph_units() < stats.count("graph.batch.items") * 2 + 200
    );
}

/// A user the directory allowed a site is not read again within the hour (stragglers are polled
/// every few minutes), unless their answer must be their own (the batch's gate: a sign-in blocked
/// since hands the gate on).
#[tokio::test]
async fn the_directory_is_read_once_an_hour_for_users_it_allowed_a_site() {
    let users = vec![UserSpec::new(format!("a@{DOMAIN}")), UserSpec::new(format!("gate@{DOMAIN}"))];
    let sim = start(Config { clock: Clock::Manual, ..config(users) }).await;
    let c = client_tuned(&sim, certificate(), TenantWideListing::Auto, |c| {
        c.clock = ClientClock(Arc::new(sim.clock()))
    });
    let gate = Lookup { confirm: true, ..Lookup::drive(&format!("gate@{DOMAIN}")) };
    let lookups = [Lookup::drive(&format!("a@{DOMAIN}")), gate];
    let directory_reads = || sim.stats().count("graph.batch.items.user");
    let seen = c.observe_lookups(&lookups).await.unwrap();
    assert!(seen.values().all(|o| *o == Observation::NoSite) && directory_reads() == 2);
    sim.advance(SignedDuration::from_mins(10));
    let seen = c.observe_lookups(&lookups).await.unwrap();
    assert!(seen.values().all(|o| *o == Observation::NoSite));
    assert_eq!(directory_reads(), 3, "only the gate's entry is read again");
    sim.advance(SignedDuration::from_mins(55));
    c.observe_lookups(&lookups).await.unwrap();
    assert_eq!(directory_reads(), 5, "an hour on, both are read");
}

/// `a.b@` and `a_b@` make the same personal-site name: a site so named says nothing about which
/// of them it belongs to, so each is looked up on their own — also before the directory was
/// ever listed, and when only one of them is asked about.
#[tokio::test]
async fn a_site_name_two_users_share_is_never_given_to_either_by_the_listing() {
    let mut dotted = UserSpec::new(format!("a.b@{DOMAIN}"));
    dotted.has_site = true;
    let mut users: Vec<UserSpec> = (0..150).map(|i| UserSpec::new(format!("u{i:03}@{DOMAIN}"))).collect();
    users.extend([dotted, UserSpec::new(format!("a_b@{DOMAIN}"))]);
    let sim = start(config(users.clone())).await;
    let c = client(&sim, certificate(), TenantWideListing::Auto);
    let mut asked: Vec<String> = users[..150].iter().map(|u| u.upn.clone()).collect();
    asked.push(format!("a_b@{DOMAIN}"));
    for round in 0..2 {
        let seen = c.observe(&asked).await.unwrap();
        assert_eq!(seen[format!("a_b@{DOMAIN}").as_str()], Observation::NoSite, "round {round}");
    }
    assert_eq!(sim.stats().count("graph.sites"), 2, "the listing was used both times");
}
