//! The controller's cache of `OneDriveSite`s, fed by the site watcher. It keeps each site as a
//! [`KeptSite`] (identity, user, tenant, status with enums for the conditions) rather than the
//! whole object kube's reflector would keep (at 100,000 sites the operator peaked at 208 MiB
//! instead of 317 MiB), and a planning pass reads no condition type or reason string.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, RwLock};

use indexmap::IndexMap;

use kube::runtime::watcher::Event;
use tokio::sync::watch;

use crate::api::{KeptSite, OneDriveSite};
use crate::plan::{DesiredSite, Gathering};

/// Sites by `namespace/name`, in the order they arrived: a cycle reads them in that order, which
/// is (nearly) the order they were allocated in, rather than in hash order, which at 100,000
/// sites made every site a cache miss (`bench engine`: 128 → 75 ms a steady cycle). A new version
/// of a site keeps its place.
type Sites = IndexMap<Box<str>, Arc<KeptSite>>;

/// Sites grouped by `spec.tenantRef` (`None`: no tenant named), so a tenant's cycle takes its own
/// sites without going through every other tenant's.
#[derive(Default)]
struct Groups(HashMap<Option<Box<str>>, Group>);

/// One tenant's sites, and the shape they were last given.
struct Group {
    sites: Sites,
    /// The sites as a cycle takes them, made by the first cycle after any change and shared by
    /// the next ones: a steady cycle then takes its sites without touching each (at 100,000 sites,
    /// counting a reference to each and letting go of it was a tenth of a steady cycle).
    taken: OnceLock<Snapshot>,
    /// Changes whenever a site joins or leaves the group or gets another user or creation time:
    /// whatever a [`Gathering`] depends on. Never 0, never reused (a group that empties and comes
    /// back has a new one).
    shape: u64,
}

impl Default for Group {
    fn default() -> Group {
        Group { sites: Sites::default(), taken: OnceLock::new(), shape: next_shape() }
    }
}

/// A new shape, unique in the process.
fn next_shape() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

impl Groups {
    fn insert(&mut self, site: KeptSite) {
        let key = key_of(&site);
        let own = self.0.get(&site.tenant).and_then(|g| g.sites.get(&key));
        let same_shape = own.is_some_and(|old| old.user == site.user && old.created == site.created);
        if own.is_none() {
            // New, or moved to another tenant: out of its old group first.
            self.remove(&key);
        }
        let group = self.0.entry(site.tenant.clone()).or_default();
        group.sites.insert(key, Arc::new(site));
        group.taken = OnceLock::new();
        if !same_shape {
            group.shape = next_shape();
        }
    }

    fn remove(&mut self, key: &str) {
        for group in self.0.values_mut() {
            // The last site takes its place: O(1), and the order only needs to be mostly kept.
            if group.sites.swap_remove(key).is_some() {
                group.taken = OnceLock::new();
                group.shape = next_shape();
                break;
            }
        }
        self.0.retain(|_, g| !g.sites.is_empty());
    }
}

/// What a tenant's sites are apart from their statuses: which sites, in which order, with which
/// users and creation times. Equal shapes mean a [`Gathering`] made for the one fits the other.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shape([u64; 2]);

/// Sites as a cycle holds them: shared, not copied.
pub type Snapshot = Arc<[Arc<KeptSite>]>;

/// A tenant's sites and their shape.
pub struct TenantSites {
    pub sites: Snapshot,
    pub shape: Shape,
}

/// A tenant's gathering, kept across cycles with the shape of the sites it was made for.
#[derive(Default)]
pub struct KeptGathering(Option<(Shape, Arc<Gathering>)>);

impl KeptGathering {
    /// The gathering for `sites`: the kept one when they still have its `shape`, else one made
    /// now (and kept, when the shape is known: `None` says the sites are not the whole cached
    /// shape, e.g. some were left out).
    pub fn for_sites(&mut self, shape: Option<Shape>, sites: &[DesiredSite]) -> Arc<Gathering> {
        if let (Some((kept, g)), Some(shape)) = (&self.0, shape)
            && *kept == shape
            && g.fits(sites)
        {
            return g.clone();
        }
        let g = Arc::new(Gathering::new(sites));
        self.0 = shape.map(|s| (s, g.clone()));
        g
    }
}

pub struct SiteCache {
    state: RwLock<State>,
    synced: watch::Sender<bool>,
}

#[derive(Default)]
struct State {
    sites: Groups,
    /// A re-list in progress: the sites it brought so far (the old ones stay visible until it ends).
    relisting: Option<Groups>,
}

impl SiteCache {
    pub fn new() -> Arc<SiteCache> {
        Arc::new(SiteCache { state: RwLock::default(), synced: watch::Sender::new(false) })
    }

    /// Applies one watcher event (what kube's reflector does for its store).
    pub fn apply(&self, event: &Event<OneDriveSite>) {
        let mut state = self.state.write().unwrap_or_else(|e| e.into_inner());
        match event {
            Event::Init => state.relisting = Some(Groups::default()),
            Event::InitApply(site) => {
                if let (Some(relisting), Some(kept)) = (state.relisting.as_mut(), KeptSite::new(site)) {
                    relisting.insert(kept);
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
                    state.sites.insert(kept);
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
        let state = self.state.read().unwrap_or_else(|e| e.into_inner());
        state.sites.0.values().flat_map(|g| g.sites.values().cloned()).collect()
    }

    /// The sites naming `tenant`, and those naming none when it is the default tenant.
    pub fn sites_of(&self, tenant: &str, default: bool) -> Vec<Arc<KeptSite>> {
        self.tenant_sites(tenant, default).sites.to_vec()
    }

    /// [`Self::sites_of`], with their shape.
    pub fn tenant_sites(&self, tenant: &str, default: bool) -> TenantSites {
        let state = self.state.read().unwrap_or_else(|e| e.into_inner());
        let named = state.sites.0.get(&Some(tenant.into()));
        let unnamed = state.sites.0.get(&None).filter(|_| default);
        let shape = Shape([named.map_or(0, |g| g.shape), unnamed.map_or(0, |g| g.shape)]);
        let taken = |g: &Group| g.taken.get_or_init(|| g.sites.values().cloned().collect()).clone();
        let sites = match (named, unnamed) {
            (Some(g), None) | (None, Some(g)) => taken(g),
            (None, None) => Snapshot::default(),
            (Some(a), Some(b)) => a.sites.values().chain(b.sites.values()).cloned().collect(),
        };
        TenantSites { sites, shape }
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
    use jiff::Timestamp;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    fn site(name: &str, user: &str) -> OneDriveSite {
        let mut s = OneDriveSite::new(name, OneDriveSiteSpec { user: user.into(), tenant_ref: None });
        s.metadata.namespace = Some("team-a".into());
        s
    }

    fn site_of(tenant: &str, name: &str, user: &str) -> OneDriveSite {
        crate::testing::site("team-a", name, user, tenant)
    }

    fn names(sites: Vec<Arc<KeptSite>>) -> Vec<String> {
        sites.iter().map(|s| s.name.to_string()).collect()
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

    #[test]
    fn a_tenant_takes_its_own_sites_in_the_order_they_came() {
        let cache = SiteCache::new();
        for (tenant, name) in [("contoso", "c1"), ("fabrikam", "f1"), ("contoso", "c2"), ("contoso", "c3")] {
            cache.apply(&Event::Apply(site_of(tenant, name, &format!("{name}@contoso.com"))));
        }
        cache.apply(&Event::Apply(site("n1", "n1@contoso.com")));
        assert_eq!(names(cache.sites_of("contoso", false)), ["c1", "c2", "c3"]);
        assert_eq!(names(cache.sites_of("fabrikam", false)), ["f1"]);
        // Sites naming no tenant belong to the default tenant.
        assert_eq!(names(cache.sites_of("fabrikam", true)), ["f1", "n1"]);
        assert!(cache.sites_of("northwind", false).is_empty());
        // A new version keeps its place; a site moved to another tenant leaves its old one.
        cache.apply(&Event::Apply(site_of("contoso", "c1", "c1-renamed@contoso.com")));
        assert_eq!(names(cache.sites_of("contoso", false)), ["c1", "c2", "c3"]);
        assert_eq!(&*cache.sites_of("contoso", false)[0].user, "c1-renamed@contoso.com");
        cache.apply(&Event::Apply(site_of("fabrikam", "c2", "c2@contoso.com")));
        assert_eq!(names(cache.sites_of("contoso", false)), ["c1", "c3"]);
        assert_eq!(names(cache.sites_of("fabrikam", false)), ["f1", "c2"]);
        cache.apply(&Event::Delete(site_of("fabrikam", "f1", "f1@contoso.com")));
        assert_eq!(names(cache.sites_of("fabrikam", false)), ["c2"]);
        assert_eq!(cache.state().len(), 4);
    }

    /// A tenant's shape (what a kept gathering depends on) changes with the sites it has and their
    /// users and creation times, not with their statuses; its sites are taken as one shared
    /// list until any of them changes.
    #[test]
    fn the_shape_changes_with_the_sites_and_users_not_with_statuses() {
        let cache = SiteCache::new();
        let apply = |s: OneDriveSite| cache.apply(&Event::Apply(s));
        let shape = || cache.tenant_sites("contoso", true).shape;
        apply(site_of("contoso", "c1", "c1@contoso.com"));
        apply(site_of("contoso", "c2", "c2@contoso.com"));
        apply(site("n1", "n1@contoso.com"));
        let first = shape();
        let taken = cache.tenant_sites("contoso", false).sites;
        assert!(Arc::ptr_eq(&taken, &cache.tenant_sites("contoso", false).sites), "shared while unchanged");
        // A new status: same shape, but the shared list is made again.
        let mut written = site_of("contoso", "c1", "c1@contoso.com");
        written.status = Some(crate::api::OneDriveSiteStatus { batch: Some(1), ..Default::default() });
        apply(written);
        assert_eq!(shape(), first);
        let again = cache.tenant_sites("contoso", false).sites;
        assert!(!Arc::ptr_eq(&taken, &again));
        assert_eq!(again[0].status.as_ref().and_then(|s| s.batch), Some(1));
        // Each of these changes it.
        let mut shapes = vec![first];
        let mut changed = |cache: &SiteCache, what: &str| {
            let now = cache.tenant_sites("contoso", true).shape;
            assert!(!shapes.contains(&now), "{what}: the shape must change");
            shapes.push(now);
        };
        apply(site_of("contoso", "c1", "C1@contoso.com"));
        changed(&cache, "another spelling of the user");
        let mut older = site_of("contoso", "c1", "C1@contoso.com");
        older.metadata.creation_timestamp = Some(Time(Timestamp::UNIX_EPOCH));
        apply(older);
        changed(&cache, "another creation time (re-created)");
        apply(site_of("contoso", "c3", "c3@contoso.com"));
        changed(&cache, "a new site");
        cache.apply(&Event::Delete(site_of("contoso", "c2", "c2@contoso.com")));
        changed(&cache, "a site deleted");
        apply(site("n2", "n2@contoso.com"));
        changed(&cache, "a new site naming no tenant, for the default tenant");
        apply(site_of("fabrikam", "c3", "c3@contoso.com"));
        changed(&cache, "a site moved to another tenant");
        cache.apply(&Event::Init);
        cache.apply(&Event::InitApply(site_of("contoso", "c1", "C1@contoso.com")));
        cache.apply(&Event::InitDone);
        changed(&cache, "a re-list");
        // A kept gathering serves while the shape holds, and only then.
        let mut kept = KeptGathering::default();
        let gather = |kept: &mut KeptGathering, shape: Option<Shape>| {
            let sites = cache.sites_of("contoso", true);
            let desired: Vec<DesiredSite> = sites.iter().map(|s| DesiredSite::from_resource(s)).collect();
            kept.for_sites(shape, &desired)
        };
        let g = gather(&mut kept, Some(shape()));
        assert!(Arc::ptr_eq(&g, &gather(&mut kept, Some(shape()))));
        assert!(!Arc::ptr_eq(&g, &gather(&mut kept, None)), "unknown shape: gathered anew");
        let g = gather(&mut kept, Some(shape()));
        apply(site_of("contoso", "c4", "c4@contoso.com"));
        assert!(!Arc::ptr_eq(&g, &gather(&mut kept, Some(shape()))), "new shape: gathered anew");
        // Another tenant's sites are not this tenant's shape.
        let before = shape();
        apply(site_of("fabrikam", "f9", "f9@contoso.com"));
        assert_eq!(shape(), before);
    }
}
