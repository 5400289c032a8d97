//! Prometheus metrics (prometheus-client), labelled by tenant.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::api::{
    ConditionStatus, OneDriveTenantStatus, SitePhase, UserCounts, condition_type, find_condition,
};
use crate::m365::Service;
use crate::m365::http::Count;
use crate::slots::SlotUse;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TenantLabel {
    pub tenant: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    pub tenant: String,
    pub result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    pub tenant: String,
    pub reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PhaseLabels {
    pub tenant: String,
    pub phase: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct GeoLabels {
    pub tenant: String,
    /// The geo's location, `central` for a single-geo tenant's.
    pub geo: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ServiceLabels {
    pub tenant: String,
    pub service: String,
}

pub struct Metrics {
    registry: Mutex<Registry>,
    reconciles: Family<ResultLabels, Counter>,
    durations: Family<TenantLabel, Histogram>,
    slot_held: Family<TenantLabel, Counter<f64, AtomicU64>>,
    slot_waits: Histogram,
    errors: Family<ReasonLabels, Counter>,
    users: Family<PhaseLabels, Gauge>,
    batches: Family<TenantLabel, Counter>,
    batch_sizes: Family<TenantLabel, Histogram>,
    status_writes: Family<TenantLabel, Counter>,
    requests: Family<ServiceLabels, Counter>,
    throttles: Family<ServiceLabels, Counter>,
    units: Family<ServiceLabels, Counter>,
    credential_expiry: Family<TenantLabel, Gauge>,
    refresh_rotation: Family<TenantLabel, Gauge>,
    refresh_writes: Family<TenantLabel, Counter>,
    not_persisted: Family<TenantLabel, Gauge>,
    tenant_ready: Family<TenantLabel, Gauge>,
    batch_enqueued: Family<GeoLabels, Gauge>,
    last_batch: Family<GeoLabels, Gauge>,
    completion: Family<TenantLabel, Gauge>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let metrics = Metrics {
            registry: Mutex::new(Registry::with_prefix("onedrive_operator")),
            reconciles: Family::<ResultLabels, Counter>::default(),
            durations: Family::<TenantLabel, Histogram>::new_with_constructor(|| {
                Histogram::new(exponential_buckets(0.005, 2.0, 14))
            }),
            slot_held: Family::<TenantLabel, Counter<f64, AtomicU64>>::default(),
            slot_waits: Histogram::new(exponential_buckets(0.01, 2.0, 14)),
            errors: Family::<ReasonLabels, Counter>::default(),
            users: Family::<PhaseLabels, Gauge>::default(),
            batches: Family::<TenantLabel, Counter>::default(),
            batch_sizes: Family::<TenantLabel, Histogram>::new_with_constructor(|| {
                Histogram::new([1.0, 10.0, 50.0, 100.0, 150.0, 199.0, 200.0])
            }),
            status_writes: Family::<TenantLabel, Counter>::default(),
            requests: Family::<ServiceLabels, Counter>::default(),
            throttles: Family::<ServiceLabels, Counter>::default(),
            units: Family::<ServiceLabels, Counter>::default(),
            credential_expiry: Family::<TenantLabel, Gauge>::default(),
            refresh_rotation: Family::<TenantLabel, Gauge>::default(),
            refresh_writes: Family::<TenantLabel, Counter>::default(),
            not_persisted: Family::<TenantLabel, Gauge>::default(),
            tenant_ready: Family::<TenantLabel, Gauge>::default(),
            batch_enqueued: Family::<GeoLabels, Gauge>::default(),
            last_batch: Family::<GeoLabels, Gauge>::default(),
            completion: Family::<TenantLabel, Gauge>::default(),
        };
        {
            let mut registry = metrics.registry.lock().expect("metrics registry lock");
            metrics.register_cycles(&mut registry);
            metrics.register_tenants(&mut registry);
        }
        metrics
    }

    /// What cycles do and what they cost: results, durations, slots, writes, requests.
    fn register_cycles(&self, registry: &mut Registry) {
        registry.register("reconciles", "Reconcile cycles by result", self.reconciles.clone());
        registry.register(
            "reconcile_duration_seconds",
            "Duration of a reconcile cycle",
            self.durations.clone(),
        );
        registry.register("cycle_slot_seconds",
            "Time a tenant's cycles held one of the --concurrency work slots (waits on Microsoft's Retry-After excluded)",
            self.slot_held.clone());
        registry.register("cycle_slot_wait_seconds",
            "Time a cycle waited for a work slot, before it began and after each wait on Microsoft (raise --concurrency when it grows)",
            self.slot_waits.clone());
        registry.register(
            "reconcile_errors",
            "Cycles that failed (Kubernetes API) or found a tenant problem, by reason",
            self.errors.clone(),
        );
        registry.register("users", "Distinct users by phase", self.users.clone());
        registry.register(
            "batches_enqueued",
            "Enqueue requests accepted by SharePoint",
            self.batches.clone(),
        );
        registry.register("batch_size_users", "Users per enqueue request", self.batch_sizes.clone());
        registry.register("site_status_writes", "OneDriveSite status patches", self.status_writes.clone());
        registry.register(
            "tenant_requests",
            "HTTP requests to Microsoft 365 by service",
            self.requests.clone(),
        );
        registry.register(
            "tenant_throttled",
            "429/503 answers from Microsoft 365 by service",
            self.throttles.clone(),
        );
        registry.register("tenant_throttling_units",
            "What Microsoft 365 throttling counts by service (Graph: each $batch item, each listing page at its cost)",
            self.units.clone());
    }

    /// How each tenant stands: credentials, readiness, batches, the estimate.
    fn register_tenants(&self, registry: &mut Registry) {
        registry.register(
            "credential_expiry_timestamp_seconds",
            "When the tenant's certificate expires (notAfter, Unix seconds)",
            self.credential_expiry.clone(),
        );
        registry.register(
            "refresh_token_last_rotation_timestamp_seconds",
            "When the delegated refresh token in use was issued (Unix seconds)",
            self.refresh_rotation.clone(),
        );
        registry.register(
            "refresh_token_writes",
            "Rotated refresh tokens written back to their Secret",
            self.refresh_writes.clone(),
        );
        registry.register(
            "credentials_not_persisted",
            "1 while a rotated refresh token is held in memory only (its Secret could not be updated)",
            self.not_persisted.clone(),
        );
        registry.register(
            "tenant_ready",
            "1 while the tenant's Ready condition is True (its reason says why not)",
            self.tenant_ready.clone(),
        );
        registry.register(
            "batch_enqueued_timestamp_seconds",
            "When the batch in flight in a geo was sent (Unix seconds; no series without one)",
            self.batch_enqueued.clone(),
        );
        registry.register(
            "last_batch_duration_seconds",
            "How long a geo's last completed batch took, enqueue to its last user's site",
            self.last_batch.clone(),
        );
        registry.register(
            "estimated_completion_timestamp_seconds",
            "When the tenant's last batch should be done (status.progress; no series without an estimate)",
            self.completion.clone(),
        );
    }

    fn tenant(t: &str) -> TenantLabel {
        TenantLabel { tenant: t.into() }
    }

    pub fn reconciled(&self, tenant: &str, result: &str, took: Duration) {
        self.reconciles.get_or_create(&ResultLabels { tenant: tenant.into(), result: result.into() }).inc();
        self.durations.get_or_create(&Self::tenant(tenant)).observe(took.as_secs_f64());
    }

    /// How one cycle used its work slot.
    pub fn slot_used(&self, tenant: &str, used: SlotUse) {
        self.slot_held.get_or_create(&Self::tenant(tenant)).inc_by(used.held.as_secs_f64());
        self.slot_waits.observe(used.waited.as_secs_f64());
    }

    pub fn error(&self, tenant: &str, reason: &str) {
        self.errors.get_or_create(&ReasonLabels { tenant: tenant.into(), reason: reason.into() }).inc();
    }

    pub fn users(&self, tenant: &str, u: &UserCounts) {
        for (phase, n) in [
            (SitePhase::Ready, u.ready),
            (SitePhase::Pending, u.pending),
            (SitePhase::SpsSiteError, u.provisioning),
            (SitePhase::Failed, u.failed),
        ] {
            self.users
                .get_or_create(&PhaseLabels { tenant: tenant.into(), phase: phase.as_str().into() })
                .set(n as i64);
        }
    }

    pub fn batch(&self, tenant: &str, size: usize) {
        self.batches.get_or_create(&Self::tenant(tenant)).inc();
        self.batch_sizes.get_or_create(&Self::tenant(tenant)).observe(size as f64);
    }

    pub fn site_writes(&self, tenant: &str, n: usize) {
        self.status_writes.get_or_create(&Self::tenant(tenant)).inc_by(n as u64);
    }

    /// Adds what the tenant client counted since the last cycle.
    pub fn tenant_http(
        &self,
        tenant: &str,
        now: &HashMap<(Service, Count), u64>,
        before: &HashMap<(Service, Count), u64>,
    ) {
        for ((service, what), n) in now {
            let delta = n.saturating_sub(before.get(&(*service, *what)).copied().unwrap_or(0));
            let labels = ServiceLabels { tenant: tenant.into(), service: service.name().into() };
            let family = match what {
                Count::Requests => &self.requests,
                Count::Throttled => &self.throttles,
                Count::Units => &self.units,
            };
            family.get_or_create(&labels).inc_by(delta);
        }
    }

    pub fn refresh_tokens_written(&self, tenant: &str, n: usize) {
        self.refresh_writes.get_or_create(&Self::tenant(tenant)).inc_by(n as u64);
    }

    /// The credential gauges (set only for the credentials the tenant has).
    pub fn credentials(&self, tenant: &str, health: &crate::plan::tenant::CredentialHealth) {
        if let Some(at) = health.expires_at {
            self.credential_expiry.get_or_create(&Self::tenant(tenant)).set(at.as_second());
        }
        if let Some(at) = health.last_rotation {
            self.refresh_rotation.get_or_create(&Self::tenant(tenant)).set(at.as_second());
        }
        if health.delegated {
            self.not_persisted
                .get_or_create(&Self::tenant(tenant))
                .set(i64::from(health.not_persisted.is_some()));
        }
    }

    /// The gauges read from the tenant's status as written this cycle.
    pub fn tenant_status(&self, tenant: &str, status: &OneDriveTenantStatus) {
        let ready = find_condition(&status.conditions, condition_type::READY)
            .is_some_and(|c| ConditionStatus::True.is(&c.status));
        self.tenant_ready.get_or_create(&Self::tenant(tenant)).set(i64::from(ready));
        for g in &status.geos {
            let labels =
                GeoLabels { tenant: tenant.into(), geo: crate::plan::tenant::geo_name(&g.location).into() };
            match g.current_batch.as_ref().filter(|b| b.sent) {
                Some(b) => {
                    self.batch_enqueued.get_or_create(&labels).set(b.enqueued_at.0.as_second());
                }
                None => {
                    self.batch_enqueued.remove(&labels);
                }
            }
            if let Some(secs) = g.last_batch_seconds {
                self.last_batch.get_or_create(&labels).set(secs);
            }
        }
        match status.progress.as_ref().and_then(|p| p.estimated_completion.as_ref()) {
            Some(t) => {
                self.completion.get_or_create(&Self::tenant(tenant)).set(t.0.as_second());
            }
            None => {
                self.completion.remove(&Self::tenant(tenant));
            }
        }
    }

    /// The OpenMetrics text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry.lock().unwrap())
            .expect("writing to a String cannot fail");
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every `onedrive_operator_…` name in `text`.
    fn metric_names(text: &str) -> Vec<String> {
        text.match_indices("onedrive_operator_")
            .map(|(at, _)| {
                text[at..].chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect::<String>()
            })
            .collect()
    }

    /// Whether a query's `name` is a sample of a family the registry exports (counters end in
    /// `_total`, histograms in `_bucket`, `_sum`, `_count`).
    fn exported(families: &[(String, String)], name: &str) -> bool {
        families.iter().any(|(family, kind)| match kind.as_str() {
            "counter" => name == format!("{family}_total"),
            "histogram" => ["_bucket", "_sum", "_count"].iter().any(|s| name == format!("{family}{s}")),
            _ => name == family,
        })
    }

    /// The registry with a sample in every family (an empty family is not written out).
    fn every_family() -> Metrics {
        let m = Metrics::new();
        m.reconciled("t", "ok", Duration::from_millis(5));
        m.error("t", "Blocked");
        m.users("t", &UserCounts::default());
        m.batch("t", 200);
        m.site_writes("t", 1);
        let counts: HashMap<(Service, Count), u64> = [Count::Requests, Count::Throttled, Count::Units]
            .into_iter()
            .map(|c| ((Service::Graph, c), 1))
            .collect();
        m.tenant_http("t", &counts, &HashMap::new());
        m.refresh_tokens_written("t", 1);
        let now = jiff::Timestamp::now();
        m.credentials(
            "t",
            &crate::plan::tenant::CredentialHealth {
                expires_at: Some(now),
                last_rotation: Some(now),
                not_persisted: None,
                delegated: true,
            },
        );
        m.tenant_status("t", &tenant_in_flight());
        m
    }

    /// A tenant with a batch in flight, a last batch duration and an estimate.
    fn tenant_in_flight() -> OneDriveTenantStatus {
        use crate::api::{BatchStatus, GeoStatus, TenantProgress};
        use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
        let at = jiff::Timestamp::from_second(1_800_000_000).unwrap();
        let batch = BatchStatus {
            id: 1,
            users: vec!["a@contoso.com".into()],
            size: 1,
            last_user: "a@contoso.com".into(),
            enqueued_at: Time(at),
            sent: true,
            users_record: None,
        };
        OneDriveTenantStatus {
            geos: vec![GeoStatus {
                current_batch: Some(batch),
                last_batch_seconds: Some(600),
                ..GeoStatus::default()
            }],
            progress: Some(TenantProgress {
                users_left: 1,
                batches_left: 1,
                estimated_completion: Some(Time(at)),
            }),
            ..OneDriveTenantStatus::default()
        }
    }

    #[test]
    fn the_dashboard_and_the_alert_rules_query_only_metrics_the_operator_exports() {
        let families: Vec<(String, String)> = every_family()
            .encode()
            .lines()
            .filter_map(|l| l.strip_prefix("# TYPE "))
            .filter_map(|l| {
                let (name, kind) = l.split_once(' ')?;
                Some((name.to_string(), kind.to_string()))
            })
            .collect();
        let chart = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("charts/onedrive-operator");
        let mut checked = 0;
        for file in ["dashboards/onedrive-operator.json", "templates/prometheusrule.yaml"] {
            let text = std::fs::read_to_string(chart.join(file)).unwrap();
            let names = metric_names(&text);
            assert!(!names.is_empty(), "{file} queries the operator's metrics");
            for name in names {
                assert!(
                    exported(&families, &name),
                    "{file} queries {name}, which the operator does not export"
                );
                checked += 1;
            }
        }
        // The alert rules cover the rollout, not only the credentials.
        let rules = std::fs::read_to_string(chart.join("templates/prometheusrule.yaml")).unwrap();
        for alert in [
            "OneDriveOperatorBatchStalled",
            "OneDriveOperatorTenantNotReady",
            "OneDriveOperatorThrottled",
            "OneDriveOperatorBlocked",
            "OneDriveOperatorFailuresGrowing",
        ] {
            assert!(rules.contains(&format!("alert: {alert}")), "{alert}");
        }
        assert!(checked > 10, "{checked} queries checked");
    }

    #[test]
    fn the_tenant_gauges_follow_its_status() {
        let mut status = tenant_in_flight();
        let m = Metrics::new();
        m.tenant_status("contoso", &status);
        let text = m.encode();
        for line in [
            r#"onedrive_operator_batch_enqueued_timestamp_seconds{tenant="contoso",geo="central"} 1800000000"#,
            r#"onedrive_operator_last_batch_duration_seconds{tenant="contoso",geo="central"} 600"#,
            r#"onedrive_operator_estimated_completion_timestamp_seconds{tenant="contoso"} 1800000000"#,
            r#"onedrive_operator_tenant_ready{tenant="contoso"} 0"#,
        ] {
            assert!(text.contains(line), "{line} in\n{text}");
        }
        // Done: no batch, no estimate; the series go (an alert on a batch's age must not fire).
        status.geos[0].current_batch = None;
        status.progress = None;
        m.tenant_status("contoso", &status);
        let text = m.encode();
        assert!(!text.contains("onedrive_operator_batch_enqueued_timestamp_seconds{"), "{text}");
        assert!(!text.contains("onedrive_operator_estimated_completion_timestamp_seconds{"), "{text}");
    }
}
