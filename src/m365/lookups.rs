//! Observing users: one classification for the controller and `check`.
//!
//! 1. Who has a site: for many users, the tenant-wide listing of personal sites (a few pages
//!    instead of one drive lookup each, see [`super::listing`]); for few users, for users the
//!    listing cannot place, and for users whose "no site" must be their own answer
//!    ([`Lookup::confirm`]), Graph `$batch`es of drive lookups (20 a request);
//! 2. for users without a site (absent from the listing, a 404, or the "Unable to retrieve
//!    user's mysite URL." quirk), their directory entry — the directory listing for many, else
//!    one lookup each: licence, then `accountEnabled` (and the preferred data location, which
//!    routes the user to a geo);
//! 3. a user absent from the listing whom the directory refuses gets their own drive lookup
//!    before that verdict stands (a renamed user's site keeps their old name's URL);
//! 4. for users asked with `profile` who still have no site, their SharePoint user profile
//!    (bounded per call, stopped by throttling) at their geo's admin host: the only per-user
//!    verdict after an enqueue.

use std::collections::{HashMap, HashSet};

use futures::StreamExt;

use super::graph::{directory, drives, in_chunks, user_entry};
use super::listing::{self, Listed};
use super::{M365Error, TenantClient, sharepoint};
use crate::plan::{DataLocation, Lookup, Observation, UserKey, route, user_key};

/// Profile reads per call at most: they are SharePoint requests, one per user.
pub const MAX_PROFILE_READS: usize = 50;

type Seen = HashMap<UserKey, (Observation, DataLocation)>;

pub(super) async fn observe(client: &TenantClient, lookups: &[Lookup]) -> Result<Seen, M365Error> {
    let wanted = unique(lookups);
    let mut out = Seen::new();
    // 1. Who has a site.
    let Placed { one_by_one, not_listed, to_confirm, listed } =
        sites_listed(client, &wanted, &mut out).await?;
    let mut ask_directory = not_listed.clone();
    ask_directory.extend(own_drives(client, &one_by_one, &mut out).await?);
    // 2. What the directory says of those without one.
    let exact: HashSet<UserKey> = wanted.iter().filter(|l| l.confirm).map(|l| user_key(&l.user)).collect();
    out.extend(directory_of(client, &ask_directory, &exact).await?);
    // A directory listed just now may show that a listed site's name is two users' names.
    let unsure = shared_since(client, &listed);
    let ask = own_drives(client, &unsure, &mut out).await?;
    out.extend(directory_of(client, &ask, &exact).await?);
    // 3. No verdict on the listing's word alone.
    let refused = confirm_refusals(client, &not_listed, &mut out).await?;
    judge_listing(client, to_confirm.iter().chain(&refused), &out);
    // 4. Profiles. Each geo has its own: a profile is read at the user's geo's admin host.
    let geos = client.known_geos();
    let locations: Vec<&str> = geos.iter().map(|g| g.location.as_str()).collect();
    let profiles: Vec<(&String, &str)> = wanted
        .iter()
        .filter(|l| l.profile)
        .filter_map(|l| match out.get(&user_key(&l.user)) {
            Some((Observation::NoSite, location)) => {
                Some((&l.user, geos[route(location.code(), &locations)].admin_url.as_str()))
            }
            _ => None,
        })
        .take(MAX_PROFILE_READS)
        .collect();
    for (k, observation) in read_profiles(client, &profiles).await {
        if let Some(entry) = out.get_mut(&k) {
            entry.0 = observation;
        }
    }
    Ok(out)
}

/// Each user's own drive lookup (their answers go into `out`); returns the users whose directory
/// entry must tell the rest.
async fn own_drives(
    client: &TenantClient,
    users: &[String],
    out: &mut Seen,
) -> Result<Vec<String>, M365Error> {
    let mut ask_directory = Vec::new();
    for r in in_chunks(client, users, |chunk| async move { drives(client, chunk).await }).await {
        let (seen, ask) = r?;
        out.extend(seen.into_iter().map(|(k, o)| (k, (o, DataLocation::Unread))));
        ask_directory.extend(ask);
    }
    Ok(ask_directory)
}

/// Lookups de-duplicated case-insensitively (a user asked for twice wants what either asked).
fn unique(lookups: &[Lookup]) -> Vec<Lookup> {
    let mut out: Vec<Lookup> = Vec::new();
    let mut at: HashMap<UserKey, usize> = HashMap::new();
    for l in lookups {
        match at.get(&user_key(&l.user)) {
            Some(&i) => {
                out[i].profile |= l.profile;
                out[i].confirm |= l.confirm;
            }
            None => {
                at.insert(user_key(&l.user), out.len());
                out.push(Lookup { user: l.user.trim().to_string(), ..l.clone() });
            }
        }
    }
    out
}

/// Where step 1 put each user.
#[derive(Default)]
struct Placed {
    /// To look up one by one (no listing, or one that cannot place them).
    one_by_one: Vec<String>,
    /// Absent from the listing: taken to have no site (their directory entry tells the rest).
    not_listed: Vec<String>,
    /// Absent from the listing, and looked up one by one because their "no site" must be their own.
    to_confirm: Vec<String>,
    /// Given a site by the listing.
    listed: Vec<String>,
}

/// Places users with the site listing when it pays off (those with a site go into `out`).
async fn sites_listed(client: &TenantClient, wanted: &[Lookup], out: &mut Seen) -> Result<Placed, M365Error> {
    let all: Vec<String> = wanted.iter().map(|l| l.user.clone()).collect();
    // Delegated tokens are reported to see no personal sites in listings (an empty one would
    // pass for "nobody has a site"): `lists` is false for them.
    let worth_it = client.listings.lock().unwrap().sites_worth_it(wanted.len());
    if !client.lists() || !worth_it {
        return Ok(Placed { one_by_one: all, ..Placed::default() });
    }
    let Some(index) = listing::sites(client, &all).await? else {
        return Ok(Placed { one_by_one: all, ..Placed::default() });
    };
    // Names two users share — in the directory, as last listed, or among these users — say
    // nothing about whose a site is.
    let mut shared = client.listings.lock().unwrap().shared_names();
    let mut seen_names = HashSet::new();
    for l in wanted {
        let hash = listing::user_name_hash(&l.user);
        if !seen_names.insert(hash) {
            shared.insert(hash);
        }
    }
    let mut placed = Placed::default();
    for l in wanted {
        match index.find(&l.user, &shared) {
            Listed::Site(url) => {
                out.insert(user_key(&l.user), (Observation::HasSite { url }, DataLocation::Unread));
                placed.listed.push(l.user.clone());
            }
            Listed::Absent if !l.confirm => placed.not_listed.push(l.user.clone()),
            Listed::Absent => {
                placed.to_confirm.push(l.user.clone());
                placed.one_by_one.push(l.user.clone());
            }
            Listed::Ambiguous => placed.one_by_one.push(l.user.clone()),
        }
    }
    Ok(placed)
}

/// Users the site listing gave a site whose name the directory shows two users share.
fn shared_since(client: &TenantClient, listed: &[String]) -> Vec<String> {
    let shared = client.listings.lock().unwrap().shared_names();
    if shared.is_empty() {
        return Vec::new();
    }
    listed.iter().filter(|u| shared.contains(&listing::user_name_hash(u))).cloned().collect()
}

/// A listing that missed sites users' own lookups found (more than a tenth of those checked, and
/// more than one) is not used for a while: it lags, or it does not show this app every site.
fn judge_listing<'a>(client: &TenantClient, checked: impl Iterator<Item = &'a String>, out: &Seen) {
    let (mut n, mut missed) = (0usize, 0usize);
    for u in checked {
        n += 1;
        missed += usize::from(matches!(out.get(&user_key(u)), Some((Observation::HasSite { .. }, _))));
    }
    if missed > 1 && missed * 10 > n {
        let why = format!("the site listing missed {missed} of {n} sites that users' own lookups found");
        client.listings.lock().unwrap().turn_off(&why, client.now());
    }
}

/// Directory entries of `users`: from the directory listing when that pays off, else one lookup
/// each. A user the directory allowed a site within the hour is not read again (stragglers are
/// polled every few minutes): only "no site yet" comes of that, never a verdict. Users in
/// `exact` (the batch's gate: a sign-in blocked since hands the gate on) are always read.
async fn directory_of(
    client: &TenantClient,
    users: &[String],
    exact: &HashSet<UserKey>,
) -> Result<Seen, M365Error> {
    let mut remembered = Seen::new();
    let users: Vec<String> = {
        let listings = client.listings.lock().unwrap();
        let now = client.now();
        let mut unread = Vec::new();
        for u in users {
            match listings.allowed_lately(&user_key(u), now).filter(|_| !exact.contains(&user_key(u))) {
                // No site, and the preferred data location read then (Multi-Geo routes the
                // user's profile read by it).
                Some(location) => {
                    remembered.insert(user_key(u), (Observation::NoSite, location.clone()));
                }
                None => unread.push(u.clone()),
            }
        }
        unread
    };
    let mut out = Seen::new();
    let worth_it = client.listings.lock().unwrap().users_worth_it(users.len());
    if worth_it
        && client.lists()
        && let Some(mut entries) = listing::directory(client, &users).await?
    {
        for u in &users {
            // Not in the directory's listing: what a lookup of that user gets (no such user).
            let entry = match entries.remove(&user_key(u)) {
                Some(entry) => entry,
                None => user_entry(Some(&(404, serde_json::Value::Null)))?,
            };
            out.insert(user_key(u), entry);
        }
    } else {
        for r in in_chunks(client, &users, |chunk| async move { directory(client, chunk).await }).await {
            out.extend(r?);
        }
    }
    // Only what was read now: a remembered entry keeps its age.
    let read = out.iter().map(|(k, (o, location))| (k, (*o == Observation::NoSite).then_some(location)));
    client.listings.lock().unwrap().remember_allowed(read, client.now());
    out.extend(remembered);
    Ok(out)
}

/// Users the site listing did not show and the directory refuses (unknown, unlicensed, blocked)
/// get their own drive lookup before that verdict is first given: a site found there wins; no
/// answer leaves them unknown. A verdict confirmed before is not confirmed again while the
/// directory repeats it (refused users are re-checked hourly). Returns the users looked up.
async fn confirm_refusals(
    client: &TenantClient,
    not_listed: &[String],
    out: &mut Seen,
) -> Result<Vec<String>, M365Error> {
    let refused: Vec<String> = {
        let listings = client.listings.lock().unwrap();
        not_listed
            .iter()
            .filter(|u| {
                let refusal = out.get(&user_key(u)).and_then(|(o, _)| o.refusal());
                refusal.is_some() && listings.confirmed_refusal(&user_key(u)) != refusal
            })
            .cloned()
            .collect()
    };
    for r in in_chunks(client, &refused, |chunk| async move { drives(client, chunk).await }).await {
        let (seen, _ask) = r?;
        for (k, o) in seen {
            match o {
                Observation::HasSite { .. } | Observation::Unknown | Observation::LookupFailed { .. } => {
                    if let Some(entry) = out.get_mut(&k) {
                        entry.0 = o;
                    }
                }
                // The drive lookup agrees there is no site (or no user): the directory's verdict stands.
                _ => {}
            }
        }
    }
    let mut listings = client.listings.lock().unwrap();
    for u in &refused {
        if let Some((o, _)) = out.get(&user_key(u)) {
            listings.remember_refusal(user_key(u), o.refusal());
        }
    }
    Ok(refused)
}

/// What the profiles say; a user whose profile could not be read keeps what the drive and
/// directory said (no site). Throttling stops the reads: the rest wait for a later cycle.
async fn read_profiles(client: &TenantClient, users: &[(&String, &str)]) -> Vec<(UserKey, Observation)> {
    let reads: Vec<_> = users
        .iter()
        .map(|&(u, admin_url)| async move { (u.as_str(), sharepoint::profile(client, admin_url, u).await) })
        .collect();
    let mut answers = futures::stream::iter(reads).buffered(client.config.graph_concurrency.max(1));
    let mut out = Vec::new();
    while let Some((user, answer)) = answers.next().await {
        match answer {
            Ok(Some(profile)) => out.push((user_key(user), profile.observation())),
            Ok(None) => {}
            Err(M365Error::Throttled { .. }) => break,
            Err(e) => tracing::debug!(user, error = %e, "user profile not read; the drive lookup stands"),
        }
    }
    out
}
