//! Observing users: one classification for the controller and `check`.
//!
//! 1. Graph `$batch` of drive lookups (20 a request);
//! 2. for users without a drive (404, or the "Unable to retrieve user's mysite URL." quirk), one
//!    directory lookup each, batched the same way: licence, then `accountEnabled`;
//! 3. for users asked with `profile` who still have no site, their SharePoint user profile
//!    (bounded per call, stopped by throttling): the only per-user verdict after an enqueue.

use std::collections::HashMap;

use futures::StreamExt;

use super::graph::{directory, drives, in_chunks};
use super::{TenantClient, TenantError, sharepoint};
use crate::plan::{Lookup, Observation, UserKey, user_key};

/// Profile reads per call at most: they are SharePoint requests, one per user.
pub const MAX_PROFILE_READS: usize = 50;

pub(super) async fn observe(
    client: &TenantClient,
    lookups: &[Lookup],
) -> Result<HashMap<UserKey, Observation>, TenantError> {
    let (users, profile_wanted) = unique(lookups);
    let mut out = HashMap::new();
    let mut ask_directory = Vec::new();
    for r in in_chunks(client, &users, |chunk| async move { drives(client, chunk).await }).await {
        let (seen, ask) = r?;
        out.extend(seen);
        ask_directory.extend(ask);
    }
    for r in in_chunks(client, &ask_directory, |chunk| async move { directory(client, chunk).await }).await {
        out.extend(r?);
    }
    let profiles: Vec<&String> = users
        .iter()
        .filter(|u| profile_wanted.contains(&user_key(u)))
        .filter(|u| out.get(&user_key(u)) == Some(&Observation::NoSite))
        .take(MAX_PROFILE_READS)
        .collect();
    out.extend(read_profiles(client, &profiles).await);
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
async fn read_profiles(client: &TenantClient, users: &[&String]) -> Vec<(UserKey, Observation)> {
    let reads: Vec<_> =
        users.iter().map(|u| async move { (u.as_str(), sharepoint::profile(client, u).await) }).collect();
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
