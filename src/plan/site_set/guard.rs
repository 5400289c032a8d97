//! The removal guard: a source that suddenly lists far fewer users (a permission glitch, a wrong
//! group, an emptied group) must not delete thousands of sites. Deletions of one sync beyond
//! both limits wait for a person, who confirms exactly these deletions (by their token) or fixes
//! the source.
//!
//! The token is a digest of the sites' uids: sites recreated after a confirmed deletion have new
//! uids, so a confirmation left on the set never lets a later glitch through.

use super::Confirmed;
use crate::api::{KeptSite, RemovalGuard};

/// What the guard decided about one sync's deletions.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Guard {
    /// Sites that would be deleted, of `of`.
    pub count: usize,
    pub of: usize,
    /// Names these deletions: the confirmation annotation must carry it.
    pub token: String,
    /// Beyond both limits and not confirmed: nothing is deleted.
    pub held: bool,
    /// Beyond both limits, and a person confirmed them: the uids confirmed.
    pub confirmed: Option<Vec<String>>,
}

/// Judges deleting `leavers` of a set's `total` sites.
pub fn judge(leavers: &[&KeptSite], total: usize, limits: &RemovalGuard, confirmed: Confirmed) -> Guard {
    let count = leavers.len();
    let mut uids: Vec<String> = leavers
        .iter()
        .map(|c| c.uid.as_deref().map_or_else(|| format!("name:{}", c.name), String::from))
        .collect();
    uids.sort_unstable();
    let token = super::digest(uids.iter().map(String::as_str))[..12].to_string();
    let max_count = usize::try_from(limits.max_count).unwrap_or(0);
    let max_percent = usize::try_from(limits.max_percent).unwrap_or(0);
    // Both limits: a small set may lose a few sites freely, a large one a small share.
    let beyond = count > max_count && count.saturating_mul(100) > max_percent.saturating_mul(total);
    let by_token = confirmed.token.is_some_and(|t| t.trim() == token);
    let by_earlier = confirmed.uids.is_some_and(|known| uids.iter().all(|u| known.contains(u)));
    let ok = by_token || by_earlier;
    Guard { count, of: total, token, held: beyond && !ok, confirmed: (beyond && ok).then_some(uids) }
}
