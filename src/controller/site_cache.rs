//! The controller's cache of `OneDriveSite`s, fed by the site watcher. It keeps each site as a
//! [`KeptSite`] (identity, user, tenant, status with enums for the conditions) rather than the
//! whole object kube's reflector would keep (at 100,000 sites the operator peaked at 208 MiB
//! instead of 317 MiB), and a planning pass reads no condition type or reason string.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use kube::runtime::watcher::Event;
use tokio::sync::watch;

use crate::api::{KeptSite, OneDriveSite};

/// Sites by `namespace/name`.
type Sites = HashMap<Box<str>, Arc<KeptSite>>;

pub struct SiteCache {
    state: RwLock<State>,
    synced: watch::Sender<bool>,
}

#[derive(Default)]
struct State {
    sites: Sites,
    /// A re-list in progress: the sites it brought so far (the old ones stay visible until it ends).
    relisting: Option<Sites>,
}

impl SiteCache {
    pub fn new() -> Arc<SiteCache> {
        Arc::new(SiteCache { state: RwLock::default(), synced: watch::Sender::new(false) })
    }

    /// Applies one watcher event (what kube's reflector does for its store).
    pub fn apply(&self, event: &Event<OneDriveSite>) {
        let mut state = self.state.write().unwrap_or_else(|e| e.into_inner());
        match event {
            Event::Init => state.relisting = Some(Sites::new()),
            Event::InitApply(site) => {
                if let (Some(relisting), Some(kept)) = (state.relisting.as_mut(), KeptSite::new(site)) {
                    relisting.insert(key_of(&kept), Arc::new(kept));
                }
            }
            Event::InitDone => {
                if let Some(sites) = state.relisting.take() {
                    state.sites = sites;
                }
                self.synced.send_replace(true);
            }
            Event::Apply(site) => {
                if let Some(kept) = KeptSite::new(site) {
                    state.sites.insert(key_of(&kept), Arc::new(kept));
                }
            }
            Event::Delete(site) => {
                if let Some(kept) = KeptSite::new(site) {
                    state.sites.remove(&key_of(&kept));
                }
            }
        }
    }

    /// Every cached site (cheap: the sites are shared, not copied).
    pub fn state(&self) -> Vec<Arc<KeptSite>> {
        self.state.read().unwrap_or_else(|e| e.into_inner()).sites.values().cloned().collect()
    }

    /// Waits for the first complete listing.
    pub async fn wait_until_synced(&self) {
        let mut synced = self.synced.subscribe();
        // The sender lives as long as `self`: waiting cannot fail while we are borrowed.
        let _ = synced.wait_for(|s| *s).await;
    }
}

fn key_of(site: &KeptSite) -> Box<str> {
    format!("{}/{}", site.namespace, site.name).into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::OneDriveSiteSpec;

    fn site(name: &str, user: &str) -> OneDriveSite {
        let mut s = OneDriveSite::new(name, OneDriveSiteSpec { user: user.into(), tenant_ref: None });
        s.metadata.namespace = Some("team-a".into());
        s
    }

    fn users(cache: &SiteCache) -> Vec<String> {
        let mut users: Vec<String> = cache.state().iter().map(|s| s.user.to_string()).collect();
        users.sort();
        users
    }

    #[tokio::test]
    async fn follows_the_watch_and_swaps_in_a_relist_whole() {
        let cache = SiteCache::new();
        cache.apply(&Event::Init);
        cache.apply(&Event::InitApply(site("a", "a@contoso.com")));
        assert!(cache.state().is_empty(), "a listing shows once complete");
        cache.apply(&Event::InitApply(site("b", "b@contoso.com")));
        cache.apply(&Event::InitDone);
        cache.wait_until_synced().await;
        assert_eq!(users(&cache), ["a@contoso.com", "b@contoso.com"]);
        cache.apply(&Event::Apply(site("a", "a2@contoso.com")));
        cache.apply(&Event::Delete(site("b", "b@contoso.com")));
        assert_eq!(users(&cache), ["a2@contoso.com"]);
        // A re-list after a lost watch: sites deleted meanwhile disappear when it completes.
        cache.apply(&Event::Init);
        cache.apply(&Event::InitApply(site("c", "c@contoso.com")));
        assert_eq!(users(&cache), ["a2@contoso.com"], "the old sites stay until the re-list ends");
        cache.apply(&Event::InitDone);
        assert_eq!(users(&cache), ["c@contoso.com"]);
    }
}
