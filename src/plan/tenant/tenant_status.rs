//! The tenant's status after a cycle: its conditions (kstatus), user counts and each geo's line.

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use super::credential_health::{self, CredentialHealth};
use super::pipelines::Pipeline;
use super::{Discovery, Stand, TenantPlan};
use crate::api::{
    ConditionSet, ConditionStatus, OneDriveTenant, OneDriveTenantStatus, TenantReason, condition_type,
};

/// The tenant condition (abnormal-true) saying the geos could not be discovered.
pub const GEO_DISCOVERY_FAILED: &str = TenantReason::GeoDiscoveryFailed.as_str();

/// The reason of the problem the status reports (its `Ready` condition False), if any.
pub fn tenant_problem_reason(status: &OneDriveTenantStatus) -> Option<TenantReason> {
    crate::api::find_condition(&status.conditions, condition_type::READY)
        .filter(|c| ConditionStatus::False.is(&c.status))
        .and_then(|c| TenantReason::parse(&c.reason))
}

/// The tenant's status after this cycle.
pub fn tenant_status(
    tenant: &OneDriveTenant,
    previous: &OneDriveTenantStatus,
    plan: &TenantPlan,
    stand: &Stand,
    now: Timestamp,
    health: &CredentialHealth,
) -> OneDriveTenantStatus {
    let (problem, throttled_until) = (stand.problem.as_ref(), stand.throttled_until);
    let g = tenant.metadata.generation;
    let u = &plan.users();
    let summary = format!(
        "{} users: {} ready, {} provisioning, {} pending, {} failed",
        u.desired, u.ready, u.provisioning, u.pending, u.failed
    );
    let (ready, reason, message, reconciling, stalled) = match (problem, throttled_until) {
        (Some(p), _) => (false, p.reason, p.message.clone(), !p.stalled, p.stalled),
        (None, Some(until)) => (
            true,
            TenantReason::Throttled,
            format!("Microsoft asked to wait until {until}; {summary}"),
            true,
            false,
        ),
        (None, None) => {
            let reconciling = plan.reconciling();
            let reason = if reconciling { TenantReason::Provisioning } else { TenantReason::Ready };
            (
                true,
                reason,
                format!("credentials accepted; {summary}{}", geo_summary(plan, &stand.pipelines)),
                reconciling,
                false,
            )
        }
    };
    // `Ready` says Ready while the tenant works; the other two carry why it is busy or stuck.
    let ready_reason =
        if ready && problem.is_none() && throttled_until.is_none() { TenantReason::Ready } else { reason };
    let conditions = ConditionSet::new(&previous.conditions, g, now)
        .set(condition_type::READY, ConditionStatus::of(ready), ready_reason.as_str(), message)
        .set(condition_type::RECONCILING, ConditionStatus::of(reconciling), reason.as_str(), "")
        .set(condition_type::STALLED, ConditionStatus::of(stalled), reason.as_str(), "");
    let conditions = match &stand.discovery {
        Discovery::NotTried => conditions.keep(GEO_DISCOVERY_FAILED),
        Discovery::Known => conditions.set(
            GEO_DISCOVERY_FAILED,
            ConditionStatus::False,
            TenantReason::GeosDiscovered.as_str(),
            "",
        ),
        Discovery::Failed(why) => {
            conditions.set(GEO_DISCOVERY_FAILED, ConditionStatus::True, GEO_DISCOVERY_FAILED, why.clone())
        }
    };
    let geos = plan.geo_statuses(&stand.pipelines);
    OneDriveTenantStatus {
        observed_generation: g,
        conditions: credential_health::conditions(conditions, health, now).build(),
        users: u.clone(),
        progress: super::progress(&geos, tenant.spec.batch_size, now),
        geos,
        current_batch: None,
        last_batch_id: plan.last_batch_id().max(previous.last_batch_id),
        last_batch_seconds: None,
        throttled_until: throttled_until.map(|t| Time(crate::plan::whole_second(t))),
    }
}

/// `; geos: NAM (central) 120 ready, EUR 80 ready` for a Multi-Geo tenant; nothing otherwise.
fn geo_summary(plan: &TenantPlan, pipelines: &[Pipeline]) -> String {
    if pipelines.len() < 2 {
        return String::new();
    }
    let each: Vec<String> = pipelines
        .iter()
        .zip(&plan.geos)
        .map(|(p, g)| {
            let central = if p.central { " (central)" } else { "" };
            format!("{}{central} {} ready of {}", p.name(), g.users.ready, g.users.desired)
        })
        .collect();
    format!("; geos: {}", each.join(", "))
}
