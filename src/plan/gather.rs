//! Gathering: a tenant's sites grouped per user (case-insensitively), oldest first; each pass
//! reads what their statuses say as it decides them ([`User::read_statuses`]).

use std::borrow::Cow;
use std::collections::HashMap;

use jiff::Timestamp;

use super::{DesiredSite, UserHasher, UserKey, user_key};
use crate::api::{BatchStatus, ConditionStatus, KeptStatus, SitePhase, SiteReason};

/// One distinct user and the sites naming it.
pub(super) struct User<'a> {
    pub(super) key: Cow<'a, str>,
    /// The spelling of the oldest site (what is sent to SharePoint).
    pub(super) upn: &'a str,
    pub(super) sites: SitesOf<'a>,
    pub(super) prior: Prior<'a>,
    /// Whether the tenant's `status.currentBatch` names the user.
    pub(super) in_batch: bool,
    /// Whether this pass words the messages of the user's states ([`super::targets`] reads
    /// none, and formatting them was a fifth of its cost).
    pub(super) worded: bool,
    /// The `Ready` message a status of the user carries (reused when it is still right).
    pub(super) ready_message: Option<&'a str>,
}

/// The sites naming one user, oldest first (almost always one: no allocation for it).
pub(super) enum SitesOf<'a> {
    One(&'a DesiredSite<'a>),
    Many(Vec<&'a DesiredSite<'a>>),
}

impl<'a> SitesOf<'a> {
    fn push(&mut self, site: &'a DesiredSite<'a>) {
        match self {
            SitesOf::One(first) => *self = SitesOf::Many(vec![*first, site]),
            SitesOf::Many(all) => all.push(site),
        }
    }

    pub(super) fn all(&self) -> &[&'a DesiredSite<'a>] {
        match self {
            SitesOf::One(site) => std::slice::from_ref(site),
            SitesOf::Many(all) => all,
        }
    }
}

/// What the persisted statuses say about a user: a view of the most advanced status among their
/// sites' (a user is 104 bytes rather than 224 with these fields copied out, and a pass reads
/// each user several times).
#[derive(Clone, Copy, Default)]
pub(super) struct Prior<'a> {
    status: Option<&'a KeptStatus>,
    /// Whether the status carries knowledge beyond its state ([`prior_of`]).
    known: bool,
}

impl<'a> Prior<'a> {
    fn known(&self) -> Option<&'a KeptStatus> {
        self.status.filter(|_| self.known)
    }

    pub(super) fn phase(&self) -> Option<SitePhase> {
        self.known()?.phase
    }

    pub(super) fn reason(&self) -> Option<SiteReason> {
        Some(self.known()?.ready.as_ref()?.reason)
    }

    pub(super) fn site_url(&self) -> Option<&'a str> {
        self.known()?.site_url.as_deref()
    }

    pub(super) fn enqueued_at(&self) -> Option<Timestamp> {
        self.known()?.enqueued_at
    }

    pub(super) fn batch(&self) -> Option<i64> {
        self.known()?.batch
    }

    pub(super) fn provisioned_at(&self) -> Option<Timestamp> {
        self.known()?.provisioned_at
    }

    /// When the user failed: Stalled flips to True exactly then (Ready may have been False before).
    pub(super) fn failed_since(&self) -> Option<Timestamp> {
        let st = self.known().filter(|st| st.phase == Some(SitePhase::Failed))?;
        st.stalled.as_ref().filter(|c| c.status == ConditionStatus::True).map(|c| c.last_transition_time)
    }

    /// The state the `Ready` condition describes (its reason and status) and since when
    /// (`status.since`): a message keeps its date while the state holds.
    pub(super) fn state(&self) -> Option<(SiteReason, ConditionStatus, Timestamp)> {
        let st = self.status?;
        st.ready.as_ref().zip(st.since).map(|(c, t)| (c.reason, c.status, t))
    }
}

/// The distinct users of a tenant's sites, oldest first. Grouping depends only on the sites, so
/// a cycle gathers once (see [`super::Planner`]); what the statuses say is read by each pass, user
/// by user, while it decides them ([`User::read_statuses`]): at 100,000 users a pass of its own
/// over every status cost as much as the deciding pass's.
pub(super) struct Users<'a> {
    list: Vec<User<'a>>,
    /// User key → index in `list`.
    index: HashMap<Cow<'a, str>, usize, UserHasher>,
    /// The in-flight batch's users that are desired: user key → index in `list`.
    batch_members: HashMap<UserKey, usize>,
}

impl<'a> Users<'a> {
    pub(super) fn new(sites: &'a [DesiredSite<'a>]) -> Users<'a> {
        // Grouped in input order (not hash order): the sites are then read in the order they
        // sit in memory, which matters at 100k sites.
        let mut index: HashMap<Cow<'a, str>, usize, UserHasher> =
            HashMap::with_capacity_and_hasher(sites.len(), UserHasher::default());
        let mut groups: Vec<(Cow<'a, str>, SitesOf<'a>)> = Vec::with_capacity(sites.len());
        for site in sites {
            let key = key_of(&site.user);
            match index.get(key.as_ref()) {
                Some(&i) => groups[i].1.push(site),
                None => {
                    index.insert(key.clone(), groups.len());
                    groups.push((key, SitesOf::One(site)));
                }
            }
        }
        for (_, sites) in &mut groups {
            if let SitesOf::Many(sites) = sites {
                sites.sort_by(|a, b| a.created.cmp(&b.created).then_with(|| a.key.cmp(&b.key)));
            }
        }
        // Queue order: oldest first, then by key. Sorted as small entries (the users are large,
        // and at 100,000 moving them was most of the sort), ties broken by the key's first bytes
        // before the whole key is read (sites applied together share their creation second).
        let mut order: Vec<(Timestamp, u128, u32)> = groups
            .iter()
            .enumerate()
            .map(|(i, (key, sites))| (sites.all()[0].created, prefix(key), i as u32))
            .collect();
        order.sort_unstable_by(|a, b| {
            (a.0, a.1).cmp(&(b.0, b.1)).then_with(|| groups[a.2 as usize].0.cmp(&groups[b.2 as usize].0))
        });
        let mut position = vec![0; groups.len()];
        for (at, &(_, _, i)) in order.iter().enumerate() {
            position[i as usize] = at;
        }
        index.values_mut().for_each(|i| *i = position[*i]);
        let mut groups: Vec<Option<(Cow<'a, str>, SitesOf<'a>)>> = groups.into_iter().map(Some).collect();
        let list = order
            .into_iter()
            .filter_map(|(_, _, i)| groups[i as usize].take())
            .map(|(key, sites)| User {
                upn: sites.all()[0].user.trim(),
                in_batch: false,
                worded: true,
                key,
                sites,
                prior: Prior::default(),
                ready_message: None,
            })
            .collect();
        Users { list, index, batch_members: HashMap::new() }
    }

    /// Marks the users of the tenant's in-flight batch (and only them: a batch is small, the
    /// users many), and gives the users to a pass.
    pub(super) fn marked(&mut self, batch: Option<&BatchStatus>) -> &mut [User<'a>] {
        for (_, i) in self.batch_members.drain() {
            self.list[i].in_batch = false;
        }
        for user in batch.iter().flat_map(|b| &b.users) {
            let key = user_key(user);
            if let Some(&i) = self.index.get(key.as_str()) {
                self.list[i].in_batch = true;
                self.batch_members.insert(key, i);
            }
        }
        &mut self.list
    }

    pub(super) fn list(&self) -> &[User<'a>] {
        &self.list
    }

    /// Where a user (by key) stands in the queue.
    pub(super) fn position(&self, key: &str) -> Option<usize> {
        self.index.get(key).copied()
    }

    /// The index of a user of the in-flight batch, if a site names them.
    pub(super) fn in_batch(&self, user: &str) -> Option<usize> {
        self.batch_members.get(&user_key(user)).copied()
    }
}

impl<'a> User<'a> {
    /// Reads what the user's statuses say, for a pass that `worded` its states or not.
    pub(super) fn read_statuses(&mut self, worded: bool) {
        self.worded = worded;
        self.prior = prior_of(self.sites.all());
        self.ready_message =
            self.sites.all().iter().find_map(|s| s.status.as_deref()?.ready.as_ref()).map(|c| &*c.message);
    }
}

/// Merges the statuses of the sites naming one user. They agree once written; a site that
/// is new or was written for another generation contributes nothing.
fn prior_of<'a>(sites: &[&'a DesiredSite<'a>]) -> Prior<'a> {
    let rank = |p: SitePhase| match p {
        SitePhase::Ready => 3,
        SitePhase::SpsSiteError => 2,
        SitePhase::Failed => 1,
        SitePhase::Pending => 0,
    };
    let best = sites
        .iter()
        .filter_map(|s| {
            let st = s.status.as_deref()?;
            (st.observed_generation == Some(s.generation)).then_some(st)
        })
        .filter(|st| st.phase.is_some())
        .max_by_key(|st| st.phase.map(rank));
    let Some(st) = best else { return Prior::default() };
    // A Pending site that was never checked (or could not be, for a tenant problem) carries
    // no knowledge but its state: the user is observed again (its message keeps its date
    // meanwhile).
    let unchecked = st.phase == Some(SitePhase::Pending)
        && st.ready.as_ref().is_some_and(|c| {
            c.status == ConditionStatus::Unknown
                || matches!(
                    c.reason,
                    SiteReason::TenantNotReady | SiteReason::TenantNotFound | SiteReason::TenantNotAllowed
                )
        });
    Prior { status: Some(st), known: !unchecked }
}

/// The first 16 bytes of a key as a number that orders as the bytes do (shorter keys padded
/// with zeros, which sort first, as a shorter prefix does).
fn prefix(key: &str) -> u128 {
    let mut bytes = [0u8; 16];
    let n = key.len().min(16);
    bytes[..n].copy_from_slice(&key.as_bytes()[..n]);
    u128::from_be_bytes(bytes)
}

/// [`user_key`], without a copy for the usual already-lowercase address.
pub(super) fn key_of(user: &str) -> Cow<'_, str> {
    let trimmed = user.trim();
    if trimmed.bytes().all(|b| b.is_ascii() && !b.is_ascii_uppercase()) {
        Cow::Borrowed(trimmed)
    } else {
        Cow::Owned(trimmed.to_lowercase())
    }
}
