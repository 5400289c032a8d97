//! Tenant-wide listings, 999 a page: the tenant's personal sites (`sites/getAllSites`) and its
//! users (`/users`), read instead of one lookup per user when that costs Graph less.
//!
//! Graph's throttling counts what a request costs, not how many requests were sent: a `$batch`
//! item costs what the same request alone would (1 unit for a drive or a user), a page of the
//! site listing 2 (a multi-item SharePoint query), a page of `/users` with `$select` 1 (a base of
//! 2, less 1 for `$select`). So a listing of 10,000 sites (11 pages, 22 units) replaces 10,000
//! drive lookups, but never pays off for a handful of users.

use std::collections::{HashMap, HashSet};

use jiff::{SignedDuration, Timestamp};

use super::paging::{PageError, each_page};
use super::{M365Error, TenantClient};
use crate::plan::{DataLocation, SiteReason, UserKey, user_key};

/// Items per page (Graph's most for both listings).
const PAGE: usize = 999;
/// Graph's cost of one page, in its throttling units.
pub(super) const SITE_PAGE_UNITS: u64 = 2;
pub(super) const USER_PAGE_UNITS: u64 = 1;
/// Fewer users than this in one observation are looked up one by one while the tenant's size is
/// unknown (no listing read yet): a listing pays off only for many users, and a user's own lookup
/// has no listing lag.
const LISTING_MIN_USERS: usize = 100;
/// Once a listing's size is known, it is read whenever it costs less than one lookup per user,
/// for a `$batch` worth of users or more.
const LISTING_MIN_USERS_KNOWN: usize = 20;
/// Pages one listing reads at most (a million users): a `nextLink` loop ends here.
const MAX_PAGES: u64 = 1000;
/// How long listings are left alone after one was refused or found to miss sites.
const LISTING_OFF_FOR: SignedDuration = SignedDuration::from_hours(1);
/// How long a directory entry that allows a site is taken as read (refused users are re-checked
/// hourly too, so either change shows within the hour).
const DIRECTORY_FRESH_FOR: SignedDuration = SignedDuration::from_hours(1);

/// What one client learnt of its tenant across calls: what its listings cost and whether they are
/// trusted, site names two users share, refusals confirmed, directory entries read lately.
#[derive(Debug, Default)]
pub(super) struct Listings {
    /// Pages the newest listing of each kind took (what the next one will likely cost).
    site_pages: Option<u64>,
    user_pages: Option<u64>,
    /// Listings are not used until then (refused, or caught missing sites).
    off_until: Option<Timestamp>,
    /// Personal-site names that two users of the directory share (`a.b@x` and `a_b@x` both make
    /// `a_b_x`): the site listing cannot tell whose such a site is.
    /// Kept as hashes: a directory of 100,000 names costs 800 kB while it is listed, and a
    /// collision only makes a user looked up on their own.
    shared_names: HashSet<u64>,
    /// Refusals a user's own lookup confirmed (only refused users are kept).
    confirmed: HashMap<UserKey, SiteReason>,
    /// When the directory last allowed each user a site (exists, licensed, may sign in), and
    /// their preferred data location then; entries older than [`DIRECTORY_FRESH_FOR`] are dropped.
    allowed: HashMap<UserKey, (Timestamp, DataLocation)>,
}

impl Listings {
    pub(super) fn on(&self, now: Timestamp) -> bool {
        self.off_until.is_none_or(|t| now >= t)
    }

    /// Whether listing the tenant's sites is cheaper than `users` drive lookups.
    pub(super) fn sites_worth_it(&self, users: usize) -> bool {
        worth_listing(users, self.site_pages, SITE_PAGE_UNITS)
    }

    /// Whether listing the directory is cheaper than `users` directory lookups.
    pub(super) fn users_worth_it(&self, users: usize) -> bool {
        worth_listing(users, self.user_pages, USER_PAGE_UNITS)
    }

    /// The refusal `user`'s own lookup last confirmed, if any.
    pub(super) fn confirmed_refusal(&self, user: &UserKey) -> Option<SiteReason> {
        self.confirmed.get(user).copied()
    }

    /// What `user`'s own lookup confirmed (`None`: no refusal, e.g. a site was found).
    pub(super) fn remember_refusal(&mut self, user: UserKey, refusal: Option<SiteReason>) {
        match refusal {
            Some(r) => self.confirmed.insert(user, r),
            None => self.confirmed.remove(&user),
        };
    }

    /// Where `user` was to be routed, if the directory allowed them a site within
    /// [`DIRECTORY_FRESH_FOR`].
    pub(super) fn allowed_lately(&self, user: &UserKey, now: Timestamp) -> Option<&DataLocation> {
        let (at, location) = self.allowed.get(user)?;
        (now.duration_since(*at) < DIRECTORY_FRESH_FOR).then_some(location)
    }

    /// Notes which users the directory allowed a site (with their location) or not, read at `now`.
    pub(super) fn remember_allowed<'a>(
        &mut self,
        read: impl Iterator<Item = (&'a UserKey, Option<&'a DataLocation>)>,
        now: Timestamp,
    ) {
        self.allowed.retain(|_, (at, _)| now.duration_since(*at) < DIRECTORY_FRESH_FOR);
        for (user, allowed) in read {
            match allowed {
                Some(location) => {
                    self.allowed.insert(user.clone(), (now, location.clone()));
                }
                None => {
                    self.allowed.remove(user);
                }
            }
        }
    }

    /// Site names two users of the directory share (learnt from the newest directory listing).
    pub(super) fn shared_names(&self) -> HashSet<u64> {
        self.shared_names.clone()
    }

    /// Listings are left alone for a while (`why` is logged once, here).
    pub(super) fn turn_off(&mut self, why: &str, now: Timestamp) {
        if self.on(now) {
            tracing::warn!(
                reason = why,
                "tenant-wide listings off for an hour: users are looked up one by one"
            );
        }
        self.off_until = Some(now + LISTING_OFF_FOR);
    }
}

/// A listing pays off when its pages (as many as last time) cost less than one unit per user,
/// for at least [`LISTING_MIN_USERS_KNOWN`] users; of unknown size, for [`LISTING_MIN_USERS`].
pub(super) fn worth_listing(users: usize, known_pages: Option<u64>, page_units: u64) -> bool {
    match known_pages {
        Some(p) => users >= LISTING_MIN_USERS_KNOWN && p.saturating_mul(page_units) < users as u64,
        None => users >= LISTING_MIN_USERS,
    }
}

/// `alice.smith@contoso.com` → `alice_smith_contoso_com`: the name SharePoint derives a personal
/// site's URL from (`…/personal/alice_smith_contoso_com`), compared lowercased.
pub(super) fn personal_name(upn: &str) -> String {
    upn.trim().to_lowercase().chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '_' }).collect()
}

/// A personal-site name's hash (the same for the whole process).
pub(super) fn name_hash(name: &str) -> u64 {
    use std::hash::{BuildHasher, BuildHasherDefault};
    BuildHasherDefault::<std::collections::hash_map::DefaultHasher>::default().hash_one(name)
}

/// The hash of the personal-site name `upn` makes.
pub(super) fn user_name_hash(upn: &str) -> u64 {
    name_hash(&personal_name(upn))
}

/// The personal-site name in a site URL (`None` for a URL that is not a personal site).
fn name_in_url(url: &str) -> Option<String> {
    let (_, rest) = url.split_once("/personal/")?;
    let name = rest.split('/').next().filter(|n| !n.is_empty())?;
    Some(personal_name(name))
}

/// Where a user stands in the site listing.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Listed {
    /// A site whose URL carries the user's name.
    Site(String),
    /// No site carries it (no site yet, a renamed user's site under their old name, or a
    /// listing that lags).
    Absent,
    /// Another user's site could carry the same name: only the user's own lookup can tell.
    Ambiguous,
}

/// The tenant's personal sites by name (only the names of the users asked about are kept).
#[derive(Debug, Default)]
pub(super) struct SiteIndex {
    urls: HashMap<String, String>,
}

impl SiteIndex {
    pub(super) fn find(&self, upn: &str, shared: &HashSet<u64>) -> Listed {
        let name = personal_name(upn);
        if shared.contains(&name_hash(&name)) {
            return Listed::Ambiguous;
        }
        match self.urls.get(&name) {
            Some(url) => Listed::Site(url.clone()),
            None => Listed::Absent,
        }
    }
}

/// Lists the tenant's personal sites, keeping those named like one of `users`. `Ok(None)`: the
/// listing was refused or broke off, and `users` are looked up one by one instead.
pub(super) async fn sites(client: &TenantClient, users: &[String]) -> Result<Option<SiteIndex>, M365Error> {
    let wanted: HashSet<String> = users.iter().map(|u| personal_name(u)).collect();
    let mut index = SiteIndex::default();
    let url = format!(
        "{}/v1.0/sites/getAllSites?$filter=isPersonalSite%20eq%20true&$select=id,webUrl&$top={PAGE}",
        client.config.graph_url
    );
    let pages = each_page(client, url, MAX_PAGES, SITE_PAGE_UNITS, |site| {
        let Some(web_url) = site["webUrl"].as_str() else { return };
        if let Some(name) = name_in_url(web_url).filter(|n| wanted.contains(n)) {
            index.urls.insert(name, format!("{}/", web_url.trim_end_matches('/')));
        }
    })
    .await;
    Ok(match listed(client, pages, "sites/getAllSites")? {
        Some(n) => {
            client.listings.lock().unwrap().site_pages = Some(n);
            Some(index)
        }
        None => None,
    })
}

/// What a user's directory entry says, and their preferred data location.
pub(super) type DirectoryEntry = (crate::plan::Observation, DataLocation);

/// Lists the directory, keeping the entries of `users` (by principal name). Also learns which
/// personal-site names two users share. `Ok(None)`: refused or broke off.
pub(super) async fn directory(
    client: &TenantClient,
    users: &[String],
) -> Result<Option<HashMap<UserKey, DirectoryEntry>>, M365Error> {
    let wanted: HashSet<UserKey> = users.iter().map(|u| user_key(u)).collect();
    let mut entries = HashMap::new();
    let mut names: HashMap<u64, bool> = HashMap::new();
    let url = format!(
        "{}/v1.0/users?$select=id,userPrincipalName,accountEnabled,assignedPlans,preferredDataLocation&$top={PAGE}",
        client.config.graph_url
    );
    let pages = each_page(client, url, MAX_PAGES, USER_PAGE_UNITS, |mut user| {
        let Some(upn) = user["userPrincipalName"].as_str() else { return };
        names.entry(user_name_hash(upn)).and_modify(|shared| *shared = true).or_insert(false);
        let key = user_key(upn);
        // Classified at once: the entries (with their licence plans) are not kept.
        if wanted.contains(&key)
            && let Ok(entry) = super::graph::user_entry(Some(&(200, user.take())))
        {
            entries.insert(key, entry);
        }
    })
    .await;
    Ok(match listed(client, pages, "users")? {
        Some(n) => {
            let mut l = client.listings.lock().unwrap();
            l.user_pages = Some(n);
            l.shared_names = names.into_iter().filter_map(|(name, shared)| shared.then_some(name)).collect();
            Some(entries)
        }
        None => None,
    })
}

/// Throttling ends the observation (as it does for lookups); a listing Graph refuses turns
/// listings off for a while; anything else broken falls back to lookups this time.
fn listed(
    client: &TenantClient,
    result: Result<u64, PageError>,
    what: &str,
) -> Result<Option<u64>, M365Error> {
    match result {
        Ok(n) => Ok(Some(n)),
        Err(PageError::Tenant(e @ M365Error::Throttled { .. })) => Err(e),
        // 400/403/404: the listing (or its filter) is not available to this app.
        Err(PageError::Status { status: status @ (400 | 401 | 403 | 404), .. }) => {
            client
                .listings
                .lock()
                .unwrap()
                .turn_off(&format!("Graph refused the {what} listing ({status})"), client.now());
            Ok(None)
        }
        Err(e) => {
            tracing::info!(listing = what, error = %e, "listing broke off: users are looked up one by one this time");
            Ok(None)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_listing_pays_off_for_many_users_only() {
        assert!(!worth_listing(99, None, SITE_PAGE_UNITS), "few users: one by one");
        assert!(worth_listing(100, None, SITE_PAGE_UNITS), "unknown size: try once");
        // 10,000 sites are 11 pages, 22 units: worth it for 23 users and more.
        assert!(
            worth_listing(23, Some(11), SITE_PAGE_UNITS) && !worth_listing(22, Some(11), SITE_PAGE_UNITS)
        );
        assert!(!worth_listing(19, Some(1), SITE_PAGE_UNITS), "fewer than a $batch: one by one");
        // 100,000 sites are 101 pages, 202 units: not for a batch of 200.
        assert!(!worth_listing(200, Some(101), SITE_PAGE_UNITS));
        assert!(
            worth_listing(200, Some(101), USER_PAGE_UNITS) && !worth_listing(101, Some(101), USER_PAGE_UNITS)
        );
    }

    #[test]
    fn sites_are_matched_to_users_by_the_name_in_their_url() {
        let mut index = SiteIndex::default();
        let url = "https://contoso-my.sharepoint.com/personal/alice_smith_contoso_com";
        index.urls.insert(name_in_url(url).unwrap(), format!("{url}/"));
        let none = HashSet::new();
        assert_eq!(index.find("Alice.Smith@Contoso.com", &none), Listed::Site(format!("{url}/")));
        assert_eq!(index.find("bob@contoso.com", &none), Listed::Absent);
        let shared = HashSet::from([name_hash("alice_smith_contoso_com")]);
        assert_eq!(index.find("alice_smith@contoso.com", &shared), Listed::Ambiguous);
        assert_eq!(name_in_url("https://contoso.sharepoint.com/sites/team"), None);
        assert_eq!(
            name_in_url("https://x-my.sharepoint.com/personal/o_neil_x_com/"),
            Some("o_neil_x_com".into())
        );
        assert_eq!(personal_name("o'neil-x@x.com"), "o_neil_x_x_com");
    }
}
