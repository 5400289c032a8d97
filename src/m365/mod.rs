//! Microsoft 365: the only code that knows Microsoft's wire formats on the operator's side.
//!
//! [`TenantClient::observe`] asks Graph (in `$batch`es of 20) whether users have a OneDrive;
//! [`TenantClient::enqueue`] asks SharePoint to create personal sites for at most 200 users,
//! by REST ProfileLoader, CSOM ProfileLoader or CSOM `Tenant.RequestPersonalSites`.

mod auth;
mod credentials;
mod error;
pub(crate) mod escape;
mod geo;
mod graph;
mod groups;
#[cfg(test)]
mod hostile;
pub mod http;
mod listing;
mod lookups;
mod paging;
pub mod permissions;
pub mod policy;
mod profile;
mod sharepoint;
pub mod signin;
mod site_settings;

use std::collections::HashMap;
use std::time::Duration;

pub use auth::{Credentials, RotationCallback, TokenCache};
pub use credentials::{
    OPAQUE_TYPE, SecretScope, SecretStore, StoredSecret, TENANTS_ANNOTATION, TLS_TYPE, bound_tenants,
    credentials_for, federated_token_file,
};
pub use error::M365Error;
pub use geo::{Geo, HostOverrides, RootSite, admin_url_of, resolve as resolve_geos};
pub use groups::{GROUP_PERMISSION, GroupError};
pub use http::Service;
pub use lookups::MAX_PROFILE_READS;
pub use policy::EndpointPolicy;
pub use profile::{ProfileRead, profile_state};
pub use site_settings::{SettingsError, SiteSettings};

use crate::api::{Cloud, EnqueueMethod, GeoSpec, OneDriveTenantSpec};
use crate::plan::{DataLocation, Lookup, Observation, UserKey};

/// SharePoint refuses more than 200 users per enqueue request.
pub const MAX_USERS_PER_ENQUEUE: usize = 200;
/// Graph accepts at most 20 requests per `$batch`.
pub const GRAPH_BATCH_LIMIT: usize = 20;

/// Where the tenant is and how to talk to it.
#[derive(Clone, Debug)]
pub struct TenantConfig {
    pub tenant_id: String,
    pub cloud: Cloud,
    /// The central geo's admin host.
    pub admin_url: String,
    pub graph_url: String,
    pub authority_host: String,
    /// Declared Multi-Geo geos (discovered ones are merged in by [`TenantClient::geos`]).
    pub geos: Vec<GeoSpec>,
    /// Where requests may go: the cloud's hosts, or (the operator's opt-in) anywhere, with
    /// public hosts pointed at a simulator.
    pub policy: EndpointPolicy,
    pub enqueue_method: EnqueueMethod,
    /// Goes into `User-Agent: NONISV|<organization>|onedrive-operator/<version>`.
    pub organization: String,
    /// This replica's name, appended to the User-Agent as `(replica <name>)`.
    pub replica: Option<String>,
    /// One call's deadline, its network retries and its whole answer included (Microsoft's
    /// `Retry-After` waits are not: see `max_throttle_wait`).
    pub call_deadline: Duration,
    /// Longest one call waits on throttling before returning `Throttled`.
    pub max_throttle_wait: Duration,
    /// Extra PEM CA certificates to trust (a corporate proxy). Verification is never disabled.
    pub ca_bundle: Option<Vec<u8>>,
    /// Concurrent Graph `$batch` requests.
    pub graph_concurrency: usize,
    /// Whether tenant-wide listings may replace per-user lookups (`spec.tenantWideListing`).
    pub tenant_wide_listing: bool,
    /// The clock what the client learns expires on (the operator's).
    pub clock: ClientClock,
}

/// A clock (the wall clock; benchmarks share the simulator's).
#[derive(Clone)]
pub struct ClientClock(pub std::sync::Arc<dyn Fn() -> jiff::Timestamp + Send + Sync>);

impl Default for ClientClock {
    fn default() -> Self {
        ClientClock(std::sync::Arc::new(jiff::Timestamp::now))
    }
}

impl std::fmt::Debug for ClientClock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClientClock")
    }
}

impl TenantConfig {
    pub fn from_spec(spec: &OneDriveTenantSpec) -> TenantConfig {
        TenantConfig {
            tenant_id: spec.tenant_id.clone(),
            cloud: spec.cloud,
            admin_url: spec.admin_url.trim_end_matches('/').to_string(),
            graph_url: spec.graph_url().trim_end_matches('/').to_string(),
            authority_host: spec.authority_host().trim_end_matches('/').to_string(),
            geos: spec.geos.clone(),
            policy: EndpointPolicy::Pinned,
            enqueue_method: spec.enqueue_method,
            organization: "onedrive-operator".into(),
            replica: None,
            call_deadline: Duration::from_secs(60),
            max_throttle_wait: Duration::from_secs(120),
            ca_bundle: None,
            graph_concurrency: 4,
            tenant_wide_listing: spec.tenant_wide_listing == crate::api::TenantWideListing::Auto,
            clock: ClientClock::default(),
        }
    }

    /// This configuration under `policy` (its test host overrides applied to the hosts).
    pub fn with_policy(mut self, policy: EndpointPolicy) -> TenantConfig {
        self.admin_url = policy.apply(&self.admin_url);
        self.graph_url = policy.apply(&self.graph_url);
        self.authority_host = policy.apply(&self.authority_host);
        self.policy = policy;
        self
    }

    /// Microsoft's decoration, plus a comment naming the replica (RFC 9110 comment syntax;
    /// characters a header cannot carry are dropped from the name).
    pub fn user_agent(&self) -> String {
        let base = format!("NONISV|{}|onedrive-operator/{}", self.organization, env!("CARGO_PKG_VERSION"));
        let replica: Option<String> = self.replica.as_ref().map(|r| {
            r.chars().filter(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_')).collect()
        });
        match replica {
            Some(r) if !r.is_empty() => format!("{base} (replica {r})"),
            _ => base,
        }
    }
}

/// A client for one tenant.
pub struct TenantClient {
    config: TenantConfig,
    tokens: TokenCache,
    http: std::sync::Arc<http::Http>,
    geos: std::sync::Mutex<geo::Known>,
    listings: std::sync::Mutex<listing::Listings>,
}

impl TenantClient {
    pub fn new(config: TenantConfig, credentials: Credentials) -> Result<TenantClient, M365Error> {
        crate::install_crypto_provider();
        let mut builder = http::client_builder(&config.user_agent());
        if let Some(pem) = &config.ca_bundle {
            let certs = reqwest::Certificate::from_pem_bundle(pem)
                .map_err(|e| M365Error::CredentialsInvalid(format!("the CA bundle is not PEM: {e}")))?;
            for c in certs {
                builder = builder.add_root_certificate(c);
            }
        }
        let client = builder
            .build()
            .map_err(|e| M365Error::Unreachable(format!("cannot build the HTTP client: {e}")))?;
        let reach = http::Reach {
            cloud: config.cloud,
            policy: config.policy.clone(),
            deadline: config.call_deadline,
            max_wait: config.max_throttle_wait,
        };
        let http = std::sync::Arc::new(http::Http::new(client, reach));
        let tokens = TokenCache::new(credentials, &config.authority_host, &config.tenant_id, http.clone())?;
        Ok(TenantClient { config, tokens, http, geos: Default::default(), listings: Default::default() })
    }

    pub fn config(&self) -> &TenantConfig {
        &self.config
    }

    pub fn credentials(&self) -> &Credentials {
        self.tokens.credentials()
    }

    /// Requests and throttles so far, per service (for metrics).
    pub fn counters(&self) -> HashMap<(Service, http::Count), u64> {
        self.http.counters.lock().unwrap().clone()
    }

    /// Gets a token for Graph (used by `doctor`).
    pub async fn graph_token(&self) -> Result<(), M365Error> {
        self.tokens.token(&self.config.graph_url).await.map(|_| ())
    }

    /// The claims of the access token cached for `resource` (decoded, for `doctor`; the token
    /// itself never leaves the client).
    pub fn token_claims(&self, resource: &str) -> Option<serde_json::Value> {
        self.tokens.claims(resource)
    }

    /// Gets a token for one admin host (used by `doctor`): each geo's host is its own audience.
    pub async fn sharepoint_token(&self, admin_url: &str) -> Result<(), M365Error> {
        self.tokens.token(admin_url).await.map(|_| ())
    }

    /// What the tenant says about each user, keyed by [`crate::plan::user_key`]: their drive,
    /// and for users without one their directory entry. A user whose lookup got no answer is
    /// `Unknown`; an error means nothing could be observed.
    pub async fn observe(&self, users: &[String]) -> Result<HashMap<UserKey, Observation>, M365Error> {
        let lookups: Vec<Lookup> = users.iter().map(|u| Lookup::drive(u)).collect();
        self.observe_lookups(&lookups).await
    }

    /// Whether many users are observed through tenant-wide listings now (`spec.tenantWideListing`,
    /// app-only credentials, and no listing refused or caught missing sites lately).
    pub fn lists(&self) -> bool {
        self.config.tenant_wide_listing
            && !matches!(self.credentials(), Credentials::Delegated { .. })
            && self.listings.lock().unwrap().on(self.now())
    }

    fn now(&self) -> jiff::Timestamp {
        (self.config.clock.0)()
    }

    /// [`TenantClient::observe`], reading the user profile of those asked with `profile` who have
    /// no site (at most [`MAX_PROFILE_READS`] a call).
    pub async fn observe_lookups(
        &self,
        lookups: &[Lookup],
    ) -> Result<HashMap<UserKey, Observation>, M365Error> {
        Ok(lookups::observe(self, lookups).await?.into_iter().map(|(k, (o, _))| (k, o)).collect())
    }

    /// [`TenantClient::observe_lookups`] with each user's preferred data location, where the
    /// lookup read their directory entry (Multi-Geo routing).
    pub async fn observe_located(
        &self,
        lookups: &[Lookup],
    ) -> Result<HashMap<UserKey, (Observation, DataLocation)>, M365Error> {
        lookups::observe(self, lookups).await
    }

    /// Asks the central geo's SharePoint to create personal sites (see [`TenantClient::enqueue_at`]).
    pub async fn enqueue(&self, users: &[String]) -> Result<(), M365Error> {
        self.enqueue_at(&self.config.admin_url, users).await
    }

    /// Asks SharePoint at `admin_url` (the users' geo's admin host) to create personal sites.
    /// Refuses more than 200 users or an empty email before sending anything.
    pub async fn enqueue_at(&self, admin_url: &str, users: &[String]) -> Result<(), M365Error> {
        validate_enqueue(users)?;
        match self.config.enqueue_method {
            EnqueueMethod::ProfileLoader => sharepoint::enqueue_rest(self, admin_url, users).await,
            EnqueueMethod::ProfileLoaderCsom => sharepoint::enqueue_csom(self, admin_url, users, false).await,
            EnqueueMethod::RequestPersonalSites => {
                sharepoint::enqueue_csom(self, admin_url, users, true).await
            }
        }
    }

    /// The user's SharePoint profile at `admin_url`, their geo's admin host (`None`: no profile).
    pub async fn profile(&self, admin_url: &str, user: &str) -> Result<Option<ProfileRead>, M365Error> {
        sharepoint::profile(self, admin_url, user).await
    }

    /// `POST /_api/contextinfo` at one admin host: it is reachable and accepts the token.
    pub async fn sharepoint_reachable(&self, admin_url: &str) -> Result<(), M365Error> {
        sharepoint::contextinfo(self, admin_url).await
    }

    /// Some users of the directory (for `doctor`'s probes).
    pub async fn some_users(&self, n: usize) -> Result<Vec<String>, M365Error> {
        graph::some_users(self, n).await
    }
}

/// The seeds' rules, enforced before anything is sent.
pub fn validate_enqueue(users: &[String]) -> Result<(), M365Error> {
    if users.is_empty() {
        return Err(M365Error::InvalidRequest("an enqueue needs at least one user".into()));
    }
    if users.len() > MAX_USERS_PER_ENQUEUE {
        return Err(M365Error::InvalidRequest(format!(
            "{} users in one enqueue: SharePoint accepts at most {MAX_USERS_PER_ENQUEUE}",
            users.len()
        )));
    }
    if let Some(i) = users.iter().position(|u| u.trim().is_empty()) {
        return Err(M365Error::InvalidRequest(format!("user #{} of the enqueue is empty", i + 1)));
    }
    Ok(())
}
