//! A cycle's users: a tenant's sites as a [`Gathering`] groups them, and what their statuses say,
//! read by each pass as it decides them ([`User::read_statuses`]).

use std::collections::HashMap;

use jiff::Timestamp;

use super::queue::{Gathering, SitesAt};
use super::{DesiredSite, UserKey, user_key};
use crate::api::{BatchStatus, ConditionStatus, KeptStatus, SitePhase, SiteReason};

/// One distinct user and the sites naming it.
pub(super) struct User<'a> {
    pub(super) sites: SitesOf<'a>,
    pub(super) prior: Prior<'a>,
    /// Whether the tenant's `status.currentBatch` names the user.
    pub(super) in_batch: bool,
    /// The `Ready` message a status of the user carries (reused when it is still right).
    pub(super) ready_message: Option<&'a str>,
}

/// The sites naming one user, oldest first (almost always one: no allocation for it).
pub(super) enum SitesOf<'a> {
    One(&'a DesiredSite<'a>),
    Many(Vec<&'a DesiredSite<'a>>),
}

impl<'a> SitesOf<'a> {
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

/// The distinct users of a tenant's sites in queue order, as a [`Gathering`] groups them; what
/// their statuses say is read by each pass, user by user, as it decides them
/// ([`User::read_statuses`]).
pub(super) struct Users<'a> {
    list: Vec<User<'a>>,
    /// The sites grouped per user, in queue order.
    gathering: Gathering,
    /// The in-flight batch's users that are desired: user key → index in `list`.
    batch_members: HashMap<UserKey, usize>,
}

impl<'a> Users<'a> {
    /// The users of `sites`.
    pub(super) fn new(sites: &'a [DesiredSite<'a>]) -> Users<'a> {
        let gathering = Gathering::new(sites);
        let list = gathering
            .users()
            .map(|at| User {
                sites: match at {
                    SitesAt::One(i) => SitesOf::One(&sites[*i]),
                    SitesAt::Many(all) => SitesOf::Many(all.iter().map(|&i| &sites[i]).collect()),
                },
                in_batch: false,
                prior: Prior::default(),
                ready_message: None,
            })
            .collect();
        Users { list, gathering, batch_members: HashMap::new() }
    }

    /// Marks the users of the tenant's in-flight batch (and only them: a batch is small, the
    /// users many), and gives the users to a pass, with the gathering that names them.
    pub(super) fn marked(&mut self, batch: Option<&BatchStatus>) -> (&mut [User<'a>], &Gathering) {
        for (_, i) in self.batch_members.drain() {
            self.list[i].in_batch = false;
        }
        let g = &self.gathering;
        for user in batch.iter().flat_map(|b| &b.users) {
            let key = user_key(user);
            if let Some(i) = g.position(key.as_str()) {
                self.list[i].in_batch = true;
                self.batch_members.insert(key, i);
            }
        }
        (&mut self.list, g)
    }

    pub(super) fn list(&self) -> &[User<'a>] {
        &self.list
    }

    /// The index of a user of the in-flight batch, if a site names them.
    pub(super) fn in_batch(&self, user: &str) -> Option<usize> {
        self.batch_members.get(&user_key(user)).copied()
    }
}

impl<'a> User<'a> {
    /// The spelling of the user's oldest site (what is sent to SharePoint): read from the site
    /// when needed (a steady pass needs it for no Ready user).
    pub(super) fn upn(&self) -> &'a str {
        let oldest: &'a DesiredSite<'a> = self.sites.all()[0];
        oldest.user.as_ref().trim()
    }

    /// Reads what the user's statuses say.
    pub(super) fn read_statuses(&mut self) {
        self.prior = prior_of(self.sites.all());
        self.ready_message =
            self.sites.all().iter().find_map(|s| s.status.as_deref()?.ready.as_ref()).map(|c| &*c.message);
    }
}

/// Merges the statuses of the sites naming one user. They agree once written; a new site
/// contributes nothing. A status written for an earlier generation still counts: `spec.user`
/// and `spec.tenantRef` are immutable, so a new generation only changes the site's declared
/// settings — never what was learnt of its user (editing `siteAdmins` of a failed site must
/// not send it again; `onedrive-operator.dev/retry` does that).
fn prior_of<'a>(sites: &[&'a DesiredSite<'a>]) -> Prior<'a> {
    let rank = |p: SitePhase| match p {
        SitePhase::Ready => 3,
        SitePhase::SpsSiteError => 2,
        SitePhase::Failed => 1,
        SitePhase::Pending => 0,
    };
    let best = sites
        .iter()
        .filter_map(|s| s.status.as_deref())
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
