//! Per tenant: everything decided about a tenant in one cycle, from plain inputs. Each geo's
//! pipeline (`pipelines`: its admin host and its batch in flight, resumed from the status), which
//! geo each user belongs to (`routing`), every geo's plan (`planner`), what a send's outcomes mean
//! for the pipelines and the cycle (`outcomes`), the tenant's status (`tenant_status`, with
//! `credential_health` and `progress`).
//!
//! A cycle: [`pipelines`] → [`TenantPlanner::plan`] (observing what each plan asks, planning again)
//! → [`record`] (each new batch into its pipeline, unsent) → for each geo to send, [`after_sent`] →
//! [`after_failure`] when a send failed (then plan again) or [`with_sent`] → [`tenant_status`].

mod credential_health;
mod outcomes;
mod pipelines;
mod planner;
mod progress;
mod routing;
mod tenant_status;
#[cfg(test)]
mod tests;

use jiff::Timestamp;

pub use credential_health::{CREDENTIALS_EXPIRING, CREDENTIALS_NOT_PERSISTED, CredentialHealth, expiring};
pub use outcomes::{
    SendFailure, Sent, ToSend, after_failure, after_sent, keeps_sending, record, with_finished, with_sent,
    worse,
};
pub use pipelines::{
    GeoTarget, Pipeline, geo_lines, geo_name, pipelines, recorded_lines, recorded_pipelines,
};
pub use planner::{TenantPlan, TenantPlanner};
pub use progress::progress;
pub use routing::{partition, route};
pub use tenant_status::{GEO_DISCOVERY_FAILED, tenant_problem_reason, tenant_status};

use super::{Limits, Observations, TenantProblem};

/// How a tenant stands in a cycle: what stops it, Microsoft's wait, each geo's pipeline, and what
/// the cycle learnt of the tenant's geos. The one place a cycle keeps each geo's batch.
#[derive(Clone, Debug, PartialEq)]
pub struct Stand {
    pub problem: Option<TenantProblem>,
    pub throttled_until: Option<Timestamp>,
    pub pipelines: Vec<Pipeline>,
    pub discovery: Discovery,
    /// The id of the last batch recorded, in any geo (the tenant's `status.lastBatchId`).
    pub last_batch_id: i64,
}

/// What this cycle learnt of the tenant's geos.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Discovery {
    /// Not asked (no client, or Microsoft asked to wait): what the status says stands.
    NotTried,
    /// Discovered (now or within the hour).
    Known,
    /// Graph could not list them and never could: the central and declared geos are used.
    Failed(String),
}

/// What every geo's planning in one cycle shares.
#[derive(Clone, Copy, Debug)]
pub struct TenantInput<'a> {
    pub tenant: &'a str,
    /// The newest observation of each user.
    pub observed: &'a Observations,
    pub limits: &'a Limits,
    pub now: Timestamp,
}
