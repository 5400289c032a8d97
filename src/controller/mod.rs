//! The only code that knows kube-runtime: the controller, its cycle, metrics, probes and
//! leader election.

mod admission;
mod batch_record;
mod configure;
mod connect;
mod cycle;
pub mod events;
pub mod leader;
mod memory;
pub mod metrics;
mod observe;
mod reconciler;
pub mod refresh_token;
pub mod run;
mod send;
mod set;
mod site_cache;
mod write;

pub use reconciler::{
    CrashPoint, CycleReport, MANAGER, NamespaceStore, Reconciler, ReconcilerOptions, SiteSource,
};
pub use set::{SetReport, WRITES_PER_PASS};
pub use site_cache::{SiteCache, Snapshot};

use crate::api::KubernetesReason;

/// The controller layer's error. `reason()` is the metric label and event reason.
#[derive(Debug, thiserror::Error)]
pub enum ControllerError {
    #[error("Kubernetes API: {0}")]
    Kube(#[source] Box<kube::Error>),
    #[error(
        "this replica's leader lease lapsed before the batch could be sent; it stays recorded and the leader sends it"
    )]
    LeaseLost,
}

impl ControllerError {
    pub fn kube(e: kube::Error) -> ControllerError {
        ControllerError::Kube(Box::new(e))
    }

    pub fn reason(&self) -> KubernetesReason {
        match self {
            ControllerError::Kube(e) => match e.as_ref() {
                kube::Error::Api(s) if s.code == 409 => KubernetesReason::Conflict,
                kube::Error::Api(s) if s.code == 403 => KubernetesReason::Forbidden,
                _ => KubernetesReason::KubernetesApi,
            },
            ControllerError::LeaseLost => KubernetesReason::LeaseLost,
        }
    }
}
