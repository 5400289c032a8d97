//! Observing users: one classification for the controller and `check`.
//!
//! 1. Graph `$batch` of drive lookups (20 a request);
//! 2. for users without a drive (404, or the "Unable to retrieve user's mysite URL." quirk), one
//!    directory lookup each, batched the same way: licence, then `accountEnabled` (and the
//!    preferred data location, which routes the user to a geo);
//! 3. for users asked with `profile` who still have no site, their SharePoint user profile
//!    (bounded per call, stopped by throttling) at their geo's admin host: the only per-user
//!    verdict after an enqueue.

use std::collections::HashMap;

use futures::StreamExt;

use super::graph::{directory, drives, in_chunks};
use super::{TenantClient, TenantError, sharepoint};
use crate::plan::{DataLocation, Lookup, Observation, UserKey, route, user_key};

/// Profile reads per call at most: they are SharePoint requests, one per user.
pub const MAX_PROFILE_READS: usize = 50;

pub(super) async fn observe(
    client: &TenantClient,
    lookups: &[Lookup],
) -> Result<HashMap<UserKey, (Observation, DataLocation)>, TenantError> {
    let (users, profile_wanted) = unique(lookups);
    let mut out: HashMap<UserKey, (Observation, DataLocation)> = HashMap::new();
    let mut ask_directory = Vec::new();
    for r in in_chunks(client, &users, |chunk| async move { drives(client, chunk).await }).await {
        let (seen, ask) = r?;
        out.extend(seen.into_iter().map(|(k, o)| (k, (o, DataLocation::Unread))));
        ask_directory.extend(ask);
    }
    for r in in_chunks(client, &ask_directory, |chunk| async move { directory(client, chunk).await }).await {
        out.extend(r?);
    }
    // Each geo has its own user profiles: a profile is read at the user's geo's admin host.
    let geos = client.known_geos();
    let locations: Vec<&str> = geos.iter().map(|g| g.location.as_str()).collect();
    let profiles: Vec<(&String, &str)> = users
        .iter()
        .filter(|u| profile_wanted.contains(&user_key(u)))
        .filter_map(|u| match out.get(&user_key(u)) {
            Some((Observation::NoSite, location)) => {
                Some((u, geos[route(location.code(), &locations)].admin_url.as_str()))
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

/// Lookups de-duplicated case-insensitively, and the keys of those whose profile is wanted.
fn unique(lookups: &[Lookup]) -> (Vec<String>, std::collections::HashSet<UserKey>) {
    let mut users = Vec::new();
    let mut seen = std::collections::HashSet::new();
    let mut profile = std::collections::HashSet::new();
    for l in lookups {
        let key = user_key(&l.user);
        if l.profile {
            profile.insert(key.clone());
        }
        if seen.insert(key) {
            users.push(l.user.trim().to_string());
        }
    }
    (users, profile)
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
            Err(TenantError::Throttled { .. }) => break,
            Err(e) => tracing::debug!(user, error = %e, "user profile not read; the drive lookup stands"),
        }
    }
    out
}
