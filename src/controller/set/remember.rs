//! What a set's passes note between them (`SetMemory`): whose set it is, since when its source
//! fails, which writes the site cache does not show yet, what the API server refused and which
//! deletions a person confirmed.

use std::sync::Arc;

use jiff::{SignedDuration, Timestamp};

use super::super::memory::{SetMemory, Settles, SourceRead};
use crate::api::{KeptSite, SetReason};
use crate::plan::site_set::SetPlan;

/// A write the cache does not show after this long is planned again (its watch event was lost,
/// or the write did not happen).
const SETTLE_WITHIN: SignedDuration = SignedDuration::from_secs(60);
/// A site the API server refused is tried again after this long (a quota freed, a webhook fixed)
/// or as soon as the set changes.
const REFUSED_FOR: SignedDuration = SignedDuration::from_mins(10);

impl SetMemory {
    /// Starts afresh for another set of the same name (deleted and created again), and forgets
    /// refusals when the set changed.
    pub(super) fn adopt(&mut self, uid: Option<String>, generation: Option<i64>) {
        if self.uid != uid {
            *self = SetMemory { uid, ..SetMemory::default() };
        }
        if self.generation != generation {
            self.refused.clear();
        }
    }

    /// Since when the source's current problem is seen (`now` for a new one).
    pub(super) fn problem_since(&mut self, source: &SourceRead, now: Timestamp) -> Timestamp {
        let reason: Option<SetReason> = source.as_ref().err().map(|p| p.reason);
        match (reason, self.problem) {
            (Some(r), Some((seen, since))) if r == seen => since,
            (Some(r), _) => {
                self.problem = Some((r, now));
                now
            }
            (None, _) => {
                self.problem = None;
                now
            }
        }
    }

    /// Drops the writes the cache now shows (or that are too old to wait for), and refusals old
    /// enough to try again.
    pub(super) fn settle(&mut self, sites: &[Arc<KeptSite>], now: Timestamp) {
        let by_name: std::collections::HashMap<&str, &KeptSite> =
            sites.iter().map(|s| (&*s.name, &**s)).collect();
        self.settling.retain(|name, (settles, at)| {
            let shown = match (settles, by_name.get(name.as_str())) {
                (Settles::Gone, site) => site.is_none(),
                (Settles::Declared(digest), Some(site)) => {
                    site.owner.as_ref().and_then(|o| o.template.as_deref()) == Some(digest.as_str())
                }
                (Settles::Declared(_), None) => false,
            };
            !shown && now.duration_since(*at) < SETTLE_WITHIN
        });
        self.refused.retain(|_, (_, at)| now.duration_since(*at) < REFUSED_FOR);
    }

    /// Notes a pass's writes: what the cache must show next, what was refused, what a person
    /// confirmed.
    pub(super) fn wrote(
        &mut self,
        plan: &SetPlan,
        digest: &str,
        refused: Vec<(String, String)>,
        now: Timestamp,
    ) {
        for m in plan.create.iter().chain(&plan.update) {
            self.settling.insert(m.name.clone(), (Settles::Declared(digest.to_string()), now));
        }
        for r in &plan.delete {
            self.settling.insert(r.name.clone(), (Settles::Gone, now));
        }
        for (name, message) in refused {
            self.settling.remove(&name);
            self.refused.insert(name, (message, now));
        }
        match plan.guard.as_ref().and_then(|g| g.confirmed.as_ref()) {
            Some(uids) => self.confirmed.extend(uids.iter().cloned()),
            None => self.confirmed.clear(),
        }
    }
}
