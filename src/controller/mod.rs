//! The only code that knows kube-runtime: the controller, its cycle, metrics, probes and
//! leader election.

pub mod credentials;
mod cycle;
pub mod metrics;
mod phases;
mod pipelines;
pub mod run;
mod send;
mod tenant_client;
mod tenant_status;

pub use cycle::{CrashPoint, CycleReport, MANAGER, Reconciler, ReconcilerOptions, SiteSource};

use crate::api::KubernetesReason;

/// The controller layer's error. `reason()` is the metric label and event reason.
#[derive(Debug, thiserror::Error)]
pub enum ControllerError {
    #[error("Kubernetes API: {0}")]
    Kube(#[source] Box<kube::Error>),
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
        }
    }
}
