//! onedrive-operator: makes "this user has a OneDrive for Business site" a declarative fact.
//!
//! Data flows one way: kube cache → gather → observe (tenant) → plan (pure) → act (tenant) →
//! write status (kube). [`plan`] holds the rules and knows neither Kubernetes nor Microsoft.

pub mod api;
pub mod controller;
pub mod jose;
pub mod plan;
pub mod simulator;
pub mod tenant;
pub mod testing;

/// Selects rustls' `ring` crypto provider for the process (kube and reqwest share it). Call
/// once before any TLS connection; later calls are harmless.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}
