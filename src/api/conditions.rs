//! Helpers for `metav1.Condition` lists: a condition's `lastTransitionTime` moves only when its
//! status flips, so recomputing an unchanged world yields byte-identical statuses.

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

use super::{ConditionStatus, KeptStatus};

pub fn find_condition<'a>(conditions: &'a [Condition], type_: &str) -> Option<&'a Condition> {
    conditions.iter().find(|c| c.type_ == type_)
}

/// Builds a new condition list against the previous one.
pub struct ConditionSet<'a> {
    previous: Previous<'a>,
    generation: Option<i64>,
    now: Timestamp,
    conditions: Vec<Condition>,
}

impl<'a> ConditionSet<'a> {
    pub fn new(previous: &'a [Condition], generation: Option<i64>, now: Timestamp) -> Self {
        // metav1.Time keeps whole seconds; so do we, or every write would differ from the read.
        let now = Timestamp::from_second(now.as_second()).unwrap_or(now);
        ConditionSet {
            previous: Previous::Full(previous),
            generation,
            now,
            conditions: Vec::with_capacity(3),
        }
    }

    /// Against a site's status as the cache keeps it.
    pub fn after_kept(previous: Option<&'a KeptStatus>, generation: Option<i64>, now: Timestamp) -> Self {
        ConditionSet { previous: Previous::Kept(previous), ..ConditionSet::new(&[], generation, now) }
    }

    /// Adds a condition.
    pub fn set(
        mut self,
        type_: &str,
        status: ConditionStatus,
        reason: &str,
        message: impl Into<String>,
    ) -> Self {
        let since = self.previous.since(type_, status).unwrap_or(Time(self.now));
        self.conditions.push(condition(type_, status, reason, message, self.generation, since));
        self
    }

    /// Keeps the previous condition of this type as it was (nothing new was learnt about it).
    pub fn keep(mut self, type_: &str) -> Self {
        if let Some(old) = self.previous.condition(type_) {
            self.conditions.push(old);
        }
        self
    }

    pub fn build(self) -> Vec<Condition> {
        self.conditions
    }
}

/// The conditions a new set is built against.
enum Previous<'a> {
    Full(&'a [Condition]),
    Kept(Option<&'a KeptStatus>),
}

impl Previous<'_> {
    /// When the condition of this type entered `status`, if it has it already.
    fn since(&self, type_: &str, status: ConditionStatus) -> Option<Time> {
        match self {
            Previous::Full(all) => find_condition(all, type_)
                .filter(|old| status.is(&old.status))
                .map(|old| old.last_transition_time.clone()),
            Previous::Kept(kept) => kept
                .and_then(|k| k.condition(type_))
                .filter(|old| old.status == status)
                .map(|old| Time(old.last_transition_time)),
        }
    }

    fn condition(&self, type_: &str) -> Option<Condition> {
        match self {
            Previous::Full(all) => find_condition(all, type_).cloned(),
            Previous::Kept(kept) => kept.and_then(|k| k.condition(type_)).map(|c| c.to_condition(type_)),
        }
    }
}

pub fn condition(
    type_: &str,
    status: ConditionStatus,
    reason: &str,
    message: impl Into<String>,
    generation: Option<i64>,
    since: Time,
) -> Condition {
    Condition {
        type_: type_.to_string(),
        status: status.as_str().to_string(),
        reason: reason.to_string(),
        message: message.into(),
        observed_generation: generation,
        last_transition_time: since,
    }
}
