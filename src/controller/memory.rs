//! What a tenant remembers between cycles (and a `OneDriveSiteSet` between passes), in one place.
//!
//! Kept:
//! - the Microsoft 365 client, with its token cache (an access token is redeemed once per
//!   lifetime, not once per cycle) and what it learnt of the tenant (its geos, what its listings
//!   cost);
//! - a delegated tenant's refresh-token store (rotated tokens not yet written back);
//! - the newest observation of each user: a steady cycle then looks at nobody, and a user is
//!   looked at again only when due;
//! - a refusal of the enqueue (the same credentials are not asked again for ten minutes);
//! - the request counters last reported to metrics;
//! - how many sites were configured in the current minute (`Pace`: site settings stay within a
//!   share of the admin host's budget, so they never slow the enqueue).
//!
//! Dropped: all of it when the tenant is deleted or the process restarts — it is soft state: the
//! statuses in the API server hold what was decided, and a new process observes the users that
//! are uncertain again. The client and refresh store are replaced when the tenant's spec or its
//! Secrets change (the observations stay: they describe the tenant's users, not the credentials).

use std::collections::HashMap;
use std::sync::Arc;

use jiff::Timestamp;

use super::refresh_token::RefreshTokenStore;
use crate::m365::http::Count;
use crate::m365::{Service, TenantClient};
use crate::plan::{Observations, TenantProblem};

/// What a `OneDriveSiteSet` remembers between passes. Soft state too: a new process reads every
/// group once, and the statuses in the API server hold what was decided.
#[derive(Default)]
pub(super) struct SetMemory {
    /// The set this memory is of: a set deleted and created again under its name starts afresh.
    pub(super) uid: Option<String>,
    /// The source as last read (for a group, its members; for a list, when this generation was
    /// first synced), and when to read a group again.
    pub(super) generation: Option<i64>,
    pub(super) read: Option<SourceRead>,
    pub(super) next_read: Option<Timestamp>,
    /// The source's current problem and since when it is seen (its messages' date).
    pub(super) problem: Option<(crate::api::SetReason, Timestamp)>,
    /// Sites written by recent passes whose write the site cache does not show yet, and when
    /// they were written: they are not planned again meanwhile.
    pub(super) settling: HashMap<String, (Settles, Timestamp)>,
    /// Members whose site the API server refused, its message and when (tried again after a
    /// while, or when the set changes).
    pub(super) refused: std::collections::BTreeMap<String, (String, Timestamp)>,
    /// The uids of sites whose deletion a person confirmed (a deletion spread over passes stays
    /// confirmed).
    pub(super) confirmed: std::collections::HashSet<String>,
}

/// What the cache must show for a written site to be settled.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Settles {
    /// The site exists (created) with this declaration (created or updated).
    Declared(String),
    /// The site is gone (deleted).
    Gone,
}

/// The users of a set's source and when they were read completely, or why there are none.
pub(super) type SourceRead = Result<(Arc<[String]>, Timestamp), crate::plan::site_set::SetProblem>;

pub(super) struct TenantMemory {
    /// What the client was built from (the spec's generation and the Secrets, the refresh token
    /// aside: the operator rewrites it itself).
    pub(super) fingerprint: String,
    pub(super) client: Arc<TenantClient>,
    pub(super) refresh: Option<Arc<RefreshTokenStore>>,
    pub(super) observations: Observations,
    /// SharePoint refused an enqueue with these credentials: not asked again until the tenant or
    /// its Secret changes, or this time passes.
    pub(super) refused: Option<(TenantProblem, Timestamp)>,
    pub(super) last_counters: HashMap<(Service, Count), u64>,
    pub(super) settings_pace: crate::plan::settings::Pace,
}
