//! Gathering: a tenant's sites grouped per user (case-insensitively, oldest site first) and the
//! users put in queue order (oldest first, then by key).

use std::borrow::Cow;

use indexmap::IndexMap;
use jiff::Timestamp;

use super::{DesiredSite, UserHasher, UserKey};

/// A tenant's users in queue order: each one's key and sites (as indexes into the sites it was
/// gathered from).
#[derive(Clone)]
pub struct Gathering {
    /// The users' keys in queue order (a user's place in the queue is its index here), each with
    /// that place and its sites (oldest first).
    users: IndexMap<UserKey, (usize, SitesAt), UserHasher>,
}

/// The indexes of one user's sites (almost always one: no allocation for it).
#[derive(Clone)]
pub(super) enum SitesAt {
    One(usize),
    Many(Vec<usize>),
}

impl SitesAt {
    fn push(&mut self, at: usize) {
        match self {
            SitesAt::One(first) => *self = SitesAt::Many(vec![*first, at]),
            SitesAt::Many(all) => all.push(at),
        }
    }

    fn first(&self) -> usize {
        match self {
            SitesAt::One(at) => *at,
            SitesAt::Many(all) => all[0],
        }
    }
}

impl Gathering {
    /// Groups `sites` (see the module documentation).
    pub fn new(sites: &[DesiredSite]) -> Gathering {
        // Grouped in input order (not hash order), so the result never depends on a hash seed.
        // Each user: (place in the queue, sites).
        let mut users: IndexMap<UserKey, (usize, SitesAt), UserHasher> =
            IndexMap::with_capacity_and_hasher(sites.len(), UserHasher::default());
        for (at, site) in sites.iter().enumerate() {
            let key = key_of(&site.user);
            match users.get_mut(key.as_ref()) {
                Some((_, mine)) => mine.push(at),
                None => {
                    users.insert(UserKey::normalized(&key), (0, SitesAt::One(at)));
                }
            }
        }
        let by_age = |&a: &usize, &b: &usize| {
            sites[a].created.cmp(&sites[b].created).then_with(|| sites[a].key.cmp(&sites[b].key))
        };
        for (_, (_, mine)) in users.iter_mut() {
            if let SitesAt::Many(all) = mine {
                all.sort_by(by_age);
            }
        }
        // Queue order: oldest first, then by key. Sorted as small entries, ties broken by the
        // key's first bytes before the whole key is read (sites applied together share their
        // creation second); then the users are put in that order (by their place, a number).
        let mut order: Vec<(Timestamp, u128, usize)> = users
            .iter()
            .enumerate()
            .map(|(i, (key, (_, mine)))| (sites[mine.first()].created, prefix(key.as_str()), i))
            .collect();
        order.sort_unstable_by(|a, b| {
            let key = |i: usize| users.get_index(i).map(|(k, _)| k);
            (a.0, a.1).cmp(&(b.0, b.1)).then_with(|| key(a.2).cmp(&key(b.2)))
        });
        for (place, &(_, _, i)) in order.iter().enumerate() {
            if let Some((_, (at, _))) = users.get_index_mut(i) {
                *at = place;
            }
        }
        users.sort_unstable_by_key(|_, (place, _)| *place);
        Gathering { users }
    }

    /// The users' sites, in queue order.
    pub(super) fn users(&self) -> impl Iterator<Item = &SitesAt> {
        self.users.values().map(|(_, sites)| sites)
    }

    /// The key of the user at `position` in the queue.
    pub(super) fn key(&self, position: usize) -> Option<&UserKey> {
        self.users.get_index(position).map(|(k, _)| k)
    }

    /// Where a user (by key) stands in the queue.
    pub(super) fn position(&self, key: &str) -> Option<usize> {
        self.users.get_index_of(key)
    }
}

/// The first 16 bytes of a key as a number that orders as the bytes do (shorter keys padded
/// with zeros, which sort first, as a shorter prefix does).
fn prefix(key: &str) -> u128 {
    let mut bytes = [0u8; 16];
    let n = key.len().min(16);
    bytes[..n].copy_from_slice(&key.as_bytes()[..n]);
    u128::from_be_bytes(bytes)
}

/// [`super::user_key`], without a copy for the usual already-lowercase address.
pub(in crate::plan) fn key_of(user: &str) -> Cow<'_, str> {
    let trimmed = user.trim();
    if trimmed.bytes().all(|b| b.is_ascii() && !b.is_ascii_uppercase()) {
        Cow::Borrowed(trimmed)
    } else {
        Cow::Owned(trimmed.to_lowercase())
    }
}
