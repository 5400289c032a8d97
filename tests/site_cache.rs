//! The controller fed by its site cache, as `run` feeds it (the in-memory API has no watch: the
//! test brings each change into the cache itself), while sites are added, deleted and given other
//! users between cycles.

mod common;

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use common::*;
use jiff::SignedDuration;
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use kube::runtime::watcher::Event;
use onedrive_operator::api::{OneDriveSite, SitePhase};
use onedrive_operator::controller::{Reconciler, ReconcilerOptions, SiteCache, SiteSource};
use onedrive_operator::simulator::{self, SimHandle};
use onedrive_operator::testing::site;

async fn sites_of(client: &kube::Client) -> Vec<OneDriveSite> {
    Api::<OneDriveSite>::all(client.clone()).list(&ListParams::default()).await.unwrap().items
}

/// What a watch would bring: every site as it is now (a new version of each), and the deletion of
/// those gone.
async fn sync(cache: &SiteCache, client: &kube::Client) {
    let now = sites_of(client).await;
    let names: HashSet<String> = now.iter().filter_map(|s| s.metadata.name.clone()).collect();
    for gone in cache.tenant_sites("contoso", false).iter().filter(|s| !names.contains(&*s.name)) {
        cache.apply(&Event::Delete(site(&gone.namespace, &gone.name, &gone.user, "contoso")));
    }
    for s in now {
        cache.apply(&Event::Apply(s));
    }
}

fn user_of(i: usize) -> String {
    format!("user{i}@contoso.com")
}

#[tokio::test]
async fn the_cycle_follows_sites_added_deleted_and_renamed_between_cycles() {
    let sim: SimHandle = simulator::start(sim_config(400), "127.0.0.1:0".parse().unwrap()).await.unwrap();
    let first: Vec<OneDriveSite> =
        (0..250).map(|i| site("team-a", &format!("s{i}"), &user_of(i), "contoso")).collect();
    let client = kube(
        first,
        vec![sim_tenant(&sim, "contoso", "app-cert")],
        vec![cert_secret("app-cert", &["contoso"])],
    )
    .await;
    let cache = SiteCache::new();
    cache.apply(&Event::Init);
    cache.apply(&Event::InitDone);
    let r = Reconciler::new(
        client.clone(),
        ReconcilerOptions {
            clock: Arc::new(sim.clock()),
            ..common::options(OPERATOR_NS, SiteSource::Store(cache.clone()))
        },
    );
    let api: Api<OneDriveSite> = Api::namespaced(client.clone(), "team-a");
    for cycle in 0..120 {
        sync(&cache, &client).await;
        let report = r.reconcile_tenant("contoso").await.unwrap();
        assert!(report.problem.is_none(), "{:?}", report.problem);
        match cycle {
            // Mid-batch: more sites, two deleted, two replaced by sites of other users under the
            // same names (not yet enqueued ones).
            3 => {
                for i in 250..330 {
                    let s = site("team-a", &format!("s{i}"), &user_of(i), "contoso");
                    api.create(&PostParams::default(), &s).await.unwrap();
                }
                for name in ["s5", "s240"] {
                    api.delete(name, &DeleteParams::default()).await.unwrap();
                }
                // `spec.user` is immutable (the API server refuses a change): a site gets another
                // user by being deleted and created again under its name (no status, a new uid).
                for (name, user) in [("s241", user_of(390)), ("s242", user_of(391))] {
                    api.delete(name, &DeleteParams::default()).await.unwrap();
                    api.create(&PostParams::default(), &site("team-a", name, &user, "contoso"))
                        .await
                        .unwrap();
                }
            }
            // Later, one more site and one deleted in the same cycle: the count stays the same.
            12 => {
                api.create(&PostParams::default(), &site("team-a", "s330", &user_of(330), "contoso"))
                    .await
                    .unwrap();
                api.delete("s7", &DeleteParams::default()).await.unwrap();
            }
            _ => {}
        }
        let sites = sites_of(&client).await;
        let settled =
            sites.iter().all(|s| s.status.as_ref().and_then(|st| st.phase) == Some(SitePhase::Ready));
        if cycle > 12 && settled && report.enqueued.is_empty() {
            break;
        }
        sim.advance(SignedDuration::from_secs(60));
    }
    sync(&cache, &client).await;
    let sites = sites_of(&client).await;
    assert_eq!(sites.len(), 250 + 80 - 2 + 1 - 1);
    // Every site is Ready with its own user's OneDrive (the URL is made from the user's name).
    let mut users = BTreeMap::new();
    for s in &sites {
        let st = s.status.as_ref().unwrap_or_else(|| panic!("{:?} has no status", s.metadata.name));
        assert_eq!(st.phase, Some(SitePhase::Ready), "{:?}: {st:?}", s.metadata.name);
        let own = s.spec.user.replace(['@', '.'], "_");
        assert!(
            st.site_url.as_deref().is_some_and(|u| u.contains(&own)),
            "{:?}: {:?}",
            s.spec.user,
            st.site_url
        );
        users.insert(s.spec.user.to_lowercase(), s.metadata.name.clone());
    }
    assert_eq!(users.len(), sites.len(), "one site per user");
    // No user sent twice.
    let mut sent = HashSet::new();
    for e in &sim.stats().enqueues {
        assert!(e.users.len() <= 200);
        for u in &e.users {
            assert!(sent.insert(u.to_lowercase()), "{u} enqueued twice");
        }
    }
    for user in users.keys() {
        assert!(sent.contains(user), "{user} never enqueued");
    }
}
