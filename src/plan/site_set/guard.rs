//! The removal guard: a source that suddenly lists far fewer users (a permission glitch, a wrong
//! group, an emptied group) must not delete thousands of sites. Deletions of one sync beyond
//! both limits wait for a person, who confirms exactly these deletions (by their token) or fixes
//! the source.

use crate::api::{KeptSite, RemovalGuard};
use crate::plan::user_key;

/// What the guard decided about one sync's deletions.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Guard {
    /// Sites that would be deleted, of `of`.
    pub count: usize,
    pub of: usize,
    /// Names these deletions: the confirmation annotation must carry it.
    pub token: String,
    /// Held back (beyond both limits and not confirmed).
    pub held: bool,
}

/// Judges deleting `leavers` of a set's `total` sites.
pub fn judge(leavers: &[&KeptSite], total: usize, limits: &RemovalGuard, confirmed: Option<&str>) -> Guard {
    let count = leavers.len();
    let mut users: Vec<String> = leavers.iter().map(|c| user_key(&c.user).to_string()).collect();
    users.sort_unstable();
    let token = super::digest(users.iter().map(String::as_str))[..12].to_string();
    let max_count = usize::try_from(limits.max_count).unwrap_or(0);
    let max_percent = usize::try_from(limits.max_percent).unwrap_or(0);
    // Both limits: a small set may lose a few sites freely, a large one a small share.
    let beyond = count > max_count && count * 100 > max_percent * total;
    let held = beyond && confirmed.is_none_or(|c| c.trim() != token);
    Guard { count, of: total, token, held }
}
