//! Prometheus metrics (prometheus-client), labelled by tenant.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::api::{SitePhase, UserCounts};
use crate::tenant::Service;
use crate::tenant::http::Count;

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
pub struct ServiceLabels {
    pub tenant: String,
    pub service: String,
}

pub struct Metrics {
    registry: Mutex<Registry>,
    reconciles: Family<ResultLabels, Counter>,
    durations: Family<TenantLabel, Histogram>,
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
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("onedrive_operator");
        let reconciles = Family::<ResultLabels, Counter>::default();
        let durations = Family::<TenantLabel, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.005, 2.0, 14))
        });
        let errors = Family::<ReasonLabels, Counter>::default();
        let users = Family::<PhaseLabels, Gauge>::default();
        let batches = Family::<TenantLabel, Counter>::default();
        let batch_sizes = Family::<TenantLabel, Histogram>::new_with_constructor(|| {
            Histogram::new([1.0, 10.0, 50.0, 100.0, 150.0, 199.0, 200.0])
        });
        let status_writes = Family::<TenantLabel, Counter>::default();
        let requests = Family::<ServiceLabels, Counter>::default();
        let throttles = Family::<ServiceLabels, Counter>::default();
        let units = Family::<ServiceLabels, Counter>::default();
        let credential_expiry = Family::<TenantLabel, Gauge>::default();
        let refresh_rotation = Family::<TenantLabel, Gauge>::default();
        let refresh_writes = Family::<TenantLabel, Counter>::default();
        let not_persisted = Family::<TenantLabel, Gauge>::default();
        registry.register("reconciles", "Reconcile cycles by result", reconciles.clone());
        registry.register("reconcile_duration_seconds", "Duration of a reconcile cycle", durations.clone());
        registry.register(
            "reconcile_errors",
            "Cycles that failed (Kubernetes API) or found a tenant problem, by reason",
            errors.clone(),
        );
        registry.register("users", "Distinct users by phase", users.clone());
        registry.register("batches_enqueued", "Enqueue requests accepted by SharePoint", batches.clone());
        registry.register("batch_size_users", "Users per enqueue request", batch_sizes.clone());
        registry.register("site_status_writes", "OneDriveSite status patches", status_writes.clone());
        registry.register("tenant_requests", "HTTP requests to Microsoft 365 by service", requests.clone());
        registry.register(
            "tenant_throttled",
            "429/503 answers from Microsoft 365 by service",
            throttles.clone(),
        );
        registry.register(
            "tenant_throttling_units",
            "What Microsoft 365 throttling counts by service (Graph: each $batch item, each listing page at its cost)",
            units.clone(),
        );
        registry.register(
            "credential_expiry_timestamp_seconds",
            "When the tenant's certificate expires (notAfter, Unix seconds)",
            credential_expiry.clone(),
        );
        registry.register(
            "refresh_token_last_rotation_timestamp_seconds",
            "When the delegated refresh token in use was issued (Unix seconds)",
            refresh_rotation.clone(),
        );
        registry.register(
            "refresh_token_writes",
            "Rotated refresh tokens written back to their Secret",
            refresh_writes.clone(),
        );
        registry.register(
            "credentials_not_persisted",
            "1 while a rotated refresh token is held in memory only (its Secret could not be updated)",
            not_persisted.clone(),
        );
        Metrics {
            registry: Mutex::new(registry),
            credential_expiry,
            refresh_rotation,
            refresh_writes,
            not_persisted,
            reconciles,
            durations,
            errors,
            users,
            batches,
            batch_sizes,
            status_writes,
            requests,
            throttles,
            units,
        }
    }

    fn tenant(t: &str) -> TenantLabel {
        TenantLabel { tenant: t.into() }
    }

    pub fn reconciled(&self, tenant: &str, result: &str, took: Duration) {
        self.reconciles.get_or_create(&ResultLabels { tenant: tenant.into(), result: result.into() }).inc();
        self.durations.get_or_create(&Self::tenant(tenant)).observe(took.as_secs_f64());
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
    pub fn credentials(&self, tenant: &str, health: &super::credentials::CredentialHealth) {
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

    /// The OpenMetrics text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry.lock().unwrap())
            .expect("writing to a String cannot fail");
        out
    }
}
