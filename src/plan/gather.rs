//! Gathering: a tenant's sites grouped per user (case-insensitively), oldest first, with what their
//! statuses already say.

use std::borrow::Cow;
use std::collections::HashMap;

use jiff::Timestamp;

use super::{DesiredSite, UserKey, user_key};
use crate::api::{BatchStatus, ConditionStatus, SitePhase, SiteReason};

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

/// What the persisted statuses say about a user.
#[derive(Default)]
pub(super) struct Prior<'a> {
    pub(super) phase: Option<SitePhase>,
    pub(super) reason: Option<SiteReason>,
    pub(super) site_url: Option<&'a str>,
    pub(super) enqueued_at: Option<Timestamp>,
    pub(super) batch: Option<i64>,
    pub(super) provisioned_at: Option<Timestamp>,
    pub(super) failed_since: Option<Timestamp>,
    /// The state the `Ready` condition describes (its reason and status) and since when
    /// (`status.since`): a message keeps its date while the state holds.
    pub(super) state: Option<(SiteReason, ConditionStatus, Timestamp)>,
}

/// The distinct users of a tenant's sites, oldest first, with what their statuses say. Grouping
/// is most of a planning pass's work and depends only on the sites, so a cycle gathers once (see
/// [`super::Planner`]).
pub(super) struct Users<'a> {
    list: Vec<User<'a>>,
    /// The in-flight batch's users that are desired: user key → index in `list`.
    batch_members: HashMap<UserKey, usize>,
}

impl<'a> Users<'a> {
    pub(super) fn new(sites: &'a [DesiredSite<'a>]) -> Users<'a> {
        // Grouped in input order (not hash order): the statuses are then read in the order
        // they sit in memory, which matters at 100k sites.
        let mut index: HashMap<Cow<'a, str>, usize> = HashMap::with_capacity(sites.len());
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
        drop(index);
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
        let mut groups: Vec<Option<(Cow<'a, str>, SitesOf<'a>)>> = groups.into_iter().map(Some).collect();
        let list = order
            .into_iter()
            .filter_map(|(_, _, i)| groups[i as usize].take())
            .map(|(key, sites)| {
                let prior = prior_of(sites.all());
                let ready_message =
                    sites.all().iter().find_map(|s| s.status.as_deref()?.ready.as_ref()).map(|c| &*c.message);
                let oldest = sites.all()[0];
                User {
                    upn: oldest.user.trim(),
                    in_batch: false,
                    worded: true,
                    key,
                    sites,
                    prior,
                    ready_message,
                }
            })
            .collect();
        Users { list, batch_members: HashMap::new() }
    }

    /// The users, marked against the tenant's in-flight batch, their states worded or not.
    pub(super) fn marked(&mut self, batch: Option<&BatchStatus>, worded: bool) -> &Self {
        let batch: HashMap<UserKey, usize> =
            batch.map(|b| b.users.iter().map(|u| (user_key(u), usize::MAX)).collect()).unwrap_or_default();
        self.batch_members = batch;
        for (i, u) in self.list.iter_mut().enumerate() {
            u.in_batch = false;
            u.worded = worded;
            if !self.batch_members.is_empty()
                && let Some(slot) = self.batch_members.get_mut(u.key.as_ref())
            {
                *slot = i;
                u.in_batch = true;
            }
        }
        self.batch_members.retain(|_, i| *i != usize::MAX);
        self
    }

    pub(super) fn list(&self) -> &[User<'a>] {
        &self.list
    }

    /// The index of a user of the in-flight batch, if a site names them.
    pub(super) fn in_batch(&self, user: &str) -> Option<usize> {
        self.batch_members.get(&user_key(user)).copied()
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
    let ready = st.ready.as_ref();
    let state = ready.zip(st.since).map(|(c, t)| (c.reason, c.status, t));
    // A Pending site that was never checked (or could not be, for a tenant problem) carries
    // no knowledge: the user is observed again (its message keeps its date meanwhile).
    if st.phase == Some(SitePhase::Pending)
        && ready.is_some_and(|c| {
            c.status == ConditionStatus::Unknown
                || matches!(
                    c.reason,
                    SiteReason::TenantNotReady | SiteReason::TenantNotFound | SiteReason::TenantNotAllowed
                )
        })
    {
        return Prior { state, ..Prior::default() };
    }
    Prior {
        state,
        phase: st.phase,
        // Stalled flips to True exactly when a user fails (Ready may have been False before).
        failed_since: (st.phase == Some(SitePhase::Failed))
            .then_some(st.stalled.as_ref())
            .flatten()
            .filter(|c| c.status == ConditionStatus::True)
            .map(|c| c.last_transition_time),
        reason: ready.map(|c| c.reason),
        site_url: st.site_url.as_deref(),
        enqueued_at: st.enqueued_at,
        batch: st.batch,
        provisioned_at: st.provisioned_at,
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

/// [`user_key`], without a copy for the usual already-lowercase address.
pub(super) fn key_of(user: &str) -> Cow<'_, str> {
    let trimmed = user.trim();
    if trimmed.bytes().all(|b| b.is_ascii() && !b.is_ascii_uppercase()) {
        Cow::Borrowed(trimmed)
    } else {
        Cow::Owned(trimmed.to_lowercase())
    }
}
