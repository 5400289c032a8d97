//! A faithful Microsoft 365 tenant simulator on one loopback listener.
//!
//! Paths tell Microsoft's hosts apart, so a tenant's `authorityHost`, `graphUrl` and `adminUrl`
//! all point at one listener:
//! - `/entra/{tenant}/oauth2/v2.0/token` — the Entra ID token endpoint;
//! - `/graph/v1.0/...` — Microsoft Graph;
//! - `/sharepoint/...` — the SharePoint admin host (REST, CSOM, user profiles); in a Multi-Geo
//!   tenant the central geo's, with each satellite geo's at `/geos/{location}/sharepoint/...`;
//! - `/my/personal/...` — where personal sites "live" (URLs only);
//! - `/_sim/stats` — introspection.
//!
//! It reproduces the wire formats in `reference/m365-protocol.md`; where Microsoft's behaviour
//! is undocumented the choice made is written next to the code that makes it.

// Handlers return finished HTTP responses as their `Err`: they are built once per request.
#![allow(clippy::result_large_err)]

mod aadsts;
mod admin_host;
pub mod authorize;
mod bearer;
pub(crate) mod csom;
mod entra;
pub mod faults;
mod geos;
mod graph;
mod groups;
pub mod manifests;
pub mod model;
mod population;
mod profiles;
pub mod serve;
mod sharepoint;
mod site_admins;
pub mod stats;
pub mod verify;

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use jiff::{SignedDuration, Timestamp};
use rsa::PublicKey;

use crate::jose::Certificate;
pub(crate) use bearer::{TokenError, TokenInfo};
// How the simulator reads what the client writes (the client's round-trip tests).
pub use faults::{Fault, FaultConfig, Service};
#[cfg(test)]
pub(crate) use graph::item_segments;
pub use groups::{GroupMember, GroupSpec};
pub use model::{LookupQuirk, SiteState, UserSpec};
pub use population::{Population, expected_reason, generate_users, realistic_user, spread_over_geos};
#[cfg(test)]
pub(crate) use profiles::{CLAIMS_PREFIX, account_of, string_literal};
pub use stats::{ArrivalRecord, EnqueueRecord, RequestRecord, Stats};

/// Who may enqueue personal sites with an app-only token.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AppOnlyEnqueue {
    Accept,
    /// The field reports: ProfileLoader refuses app-only tokens; only a SharePoint admin's
    /// delegated token works.
    Refuse,
}

/// A registered Entra ID application and how it may authenticate.
#[derive(Clone, Debug)]
pub enum App {
    /// App-only with a certificate (client assertion signed by its key).
    Certificate { client_id: String, certificate: Certificate },
    /// Workload identity federation: assertions from `issuer` signed by `issuer_key`.
    Federated { client_id: String, issuer: String, subject: String, issuer_key: PublicKey },
    /// Client secret: Graph accepts its tokens, SharePoint does not.
    Secret { client_id: String, secret: String },
    /// A public client whose delegated refresh tokens a SharePoint administrator issued.
    Delegated { client_id: String, refresh_tokens: Vec<String> },
}

impl App {
    pub fn client_id(&self) -> &str {
        match self {
            App::Certificate { client_id, .. }
            | App::Federated { client_id, .. }
            | App::Secret { client_id, .. }
            | App::Delegated { client_id, .. } => client_id,
        }
    }
}

/// How simulated time moves.
///
/// Only the tenant model (how long SharePoint takes) runs on this clock. Tokens and client
/// assertions are checked against the wall clock, as the operator's own clock is.
#[derive(Clone, Debug)]
pub enum Clock {
    /// Simulated seconds per real second (1.0 is real time, 60.0 makes minutes take seconds).
    Scaled(f64),
    /// Moves only when a test calls [`SimHandle::advance`].
    Manual,
}

#[derive(Clone, Debug)]
pub struct Config {
    pub tenant_id: String,
    pub domain: String,
    pub users: Vec<UserSpec>,
    /// Entra ID groups, which Graph finds by mail and expands to their users (transitively);
    /// none by default. [`SimHandle::set_group`] and [`SimHandle::delete_group`] change them.
    pub groups: Vec<GroupSpec>,
    pub apps: Vec<App>,
    /// Simulated time from enqueue to site.
    pub provision_delay: SignedDuration,
    /// ± share of the delay, drawn from the seeded generator.
    pub jitter: f64,
    pub clock: Clock,
    pub app_only_enqueue: AppOnlyEnqueue,
    pub faults: FaultConfig,
    pub token_lifetime: SignedDuration,
    /// Permissions the tenant's apps were not granted (e.g. `Sites.FullControl.All`): their tokens
    /// lack them, and the calls that need them are refused as the service refuses them.
    pub withheld_permissions: Vec<String>,
    /// Multi-Geo locations, the central one first (e.g. NAM, EUR, APC); empty for a single-geo
    /// tenant. Each satellite's admin host is served under `/geos/{location}/sharepoint`.
    pub geos: Vec<String>,
    /// How long a new personal site takes to show in the tenant-wide site listing (choice: the
    /// service documents no lag, and none is the default; tests set one to show the operator
    /// does not depend on the listing being current).
    pub listing_lag: SignedDuration,
    /// How long after its creation a personal site is found by the admin host's settings calls
    /// ("Cannot get site …" until then). Choice: the service documents no lag, none is the default;
    /// tests set one to show a site that is not there yet leaves it `Configuring`.
    pub admin_lag: SignedDuration,
    /// The host name its URLs use instead of the address it listens on (e.g. `localhost`, for a
    /// client that must resolve a name); the port stays the listener's.
    pub host_name: Option<String>,
    /// Who can sign in (delegated): by default `admin@<domain>`, a SharePoint Administrator, and
    /// `helpdesk@<domain>`, who holds no role. The delegated refresh tokens of `apps` are the
    /// first account's.
    pub accounts: Vec<authorize::Account>,
    pub device_code_lifetime: std::time::Duration,
    pub device_code_interval: std::time::Duration,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            tenant_id: "8d1e4f12-7c3a-4b5e-9f60-0a1b2c3d4e5f".into(),
            domain: "contoso.onmicrosoft.com".into(),
            users: Vec::new(),
            groups: Vec::new(),
            apps: Vec::new(),
            provision_delay: SignedDuration::from_secs(30),
            jitter: 0.2,
            clock: Clock::Scaled(1.0),
            app_only_enqueue: AppOnlyEnqueue::Accept,
            faults: FaultConfig::default(),
            token_lifetime: SignedDuration::from_secs(3599),
            withheld_permissions: Vec::new(),
            geos: Vec::new(),
            listing_lag: SignedDuration::ZERO,
            admin_lag: SignedDuration::ZERO,
            host_name: None,
            accounts: vec![
                authorize::Account::sharepoint_admin("admin@contoso.onmicrosoft.com"),
                authorize::Account::without_role("helpdesk@contoso.onmicrosoft.com"),
            ],
            device_code_lifetime: authorize::DEVICE_CODE_LIFETIME,
            device_code_interval: authorize::DEVICE_CODE_INTERVAL,
        }
    }
}

/// Shared state behind the listener.
pub(crate) struct Sim {
    config: Config,
    base: String,
    started: Instant,
    started_at: Timestamp,
    manual_now: Mutex<Timestamp>,
    tenant: Mutex<model::Tenant>,
    /// Entra ID groups, live and deleted.
    groups: Mutex<groups::Groups>,
    faults: Mutex<faults::Faults>,
    stats: Mutex<Stats>,
    /// Issued tokens are HMAC-signed with this per-process secret.
    token_secret: [u8; 32],
    /// Tokens carry the generation they were issued in; [`SimHandle::revoke_tokens`] moves it on
    /// and older tokens are refused (401), as after an administrator revokes an app's sessions.
    token_generation: std::sync::atomic::AtomicU64,
    /// Refresh tokens issued, and whose each is.
    refresh_tokens: Mutex<HashMap<String, String>>,
    sign_ins: Mutex<authorize::SignIns>,
    digests: Mutex<HashSet<String>>,
    operations: Mutex<HashMap<String, Timestamp>>,
    /// Per (client, service): no request should arrive before this.
    not_before: Mutex<HashMap<(String, &'static str), Instant>>,
    /// SharePoint requests in the current (simulated) minute, and when it began.
    window: Mutex<(Timestamp, u32)>,
    in_flight: AtomicUsize,
}

impl Sim {
    pub(crate) fn now(&self) -> Timestamp {
        match self.config.clock {
            Clock::Manual => *self.manual_now.lock().unwrap(),
            Clock::Scaled(scale) => {
                let real = self.started.elapsed().as_secs_f64() * scale;
                self.started_at + SignedDuration::from_secs_f64(real)
            }
        }
    }

    fn elapsed_ms(&self) -> f64 {
        self.started.elapsed().as_secs_f64() * 1000.0
    }

    fn stats(&self) -> Stats {
        let mut stats = self.stats.lock().unwrap().clone();
        stats.now_ms = self.elapsed_ms();
        stats
    }

    pub(crate) fn graph_resource(&self) -> String {
        format!("{}/graph", self.base)
    }

    pub(crate) fn sharepoint_resource(&self) -> String {
        format!("{}/sharepoint", self.base)
    }

    /// Counts a request and notes whether it came before a `Retry-After` had elapsed.
    pub(crate) fn record(&self, endpoint: &str, status: u16, fault: Option<Fault>, client: Option<&str>) {
        let service: &'static str = if endpoint.starts_with("graph.") { "graph" } else { "sharepoint" };
        let mut stats = self.stats.lock().unwrap();
        *stats.requests.entry(endpoint.to_string()).or_default() += 1;
        if let Some(client) = client {
            let mut nb = self.not_before.lock().unwrap();
            let k = (client.to_string(), service);
            if nb.get(&k).is_some_and(|t| Instant::now() < *t) {
                stats.early_retries += 1;
            }
            if let Some(f) = fault {
                let until = Instant::now() + Duration::from_secs_f64(f.retry_after);
                let e = nb.entry(k).or_insert(until);
                *e = (*e).max(until);
            }
        }
        if fault.is_some() {
            stats.throttled += 1;
        }
        // When the request arrived (before any added latency), outside a request: now.
        let at_ms = ARRIVAL.try_with(|a| a.at_ms).unwrap_or_else(|_| self.elapsed_ms());
        stats.log.push(RequestRecord {
            at_ms,
            endpoint: endpoint.to_string(),
            status,
            retry_after: fault.map(|f| f.retry_after),
            client: client.map(str::to_string),
            replica: replica(),
        });
    }

    pub(crate) fn draw(&self, service: Service) -> Option<Fault> {
        self.faults.lock().unwrap().draw(service)
    }

    /// SharePoint's quota: `RateLimit-*` headers from 80% of the per-minute budget, 429 beyond.
    /// The minute is the tenant's (simulated) minute: on a manual clock, a run's throttling
    /// depends on what it sends, never on how fast the machine runs it.
    pub(crate) fn sharepoint_budget(&self) -> (Vec<(&'static str, String)>, Option<Fault>) {
        let quota = self.faults.lock().unwrap().config().sharepoint_quota_per_minute.max(1);
        let now = self.now();
        let mut w = self.window.lock().unwrap();
        if now.duration_since(w.0) >= SignedDuration::from_secs(60) {
            *w = (now, 0);
        }
        w.1 += 1;
        let reset = (60 - now.duration_since(w.0).as_secs()).max(1) as u64;
        if w.1 * 10 < quota * 8 {
            return (Vec::new(), None);
        }
        let headers = vec![
            ("RateLimit-Limit", quota.to_string()),
            ("RateLimit-Remaining", quota.saturating_sub(w.1).to_string()),
            ("RateLimit-Reset", reset.to_string()),
        ];
        let over = (w.1 > quota).then_some(Fault { status: 429, retry_after: reset as f64 });
        (headers, over)
    }

    pub(crate) fn correlation(&self) -> String {
        crate::jose::guid()
    }
}

/// A running simulator; stops when dropped or on [`SimHandle::shutdown`].
pub struct SimHandle {
    sim: Arc<Sim>,
    addr: SocketAddr,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl SimHandle {
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT`.
    pub fn base_url(&self) -> &str {
        &self.sim.base
    }
    pub fn authority_host(&self) -> String {
        format!("{}/entra", self.sim.base)
    }
    pub fn graph_url(&self) -> String {
        self.sim.graph_resource()
    }
    pub fn admin_url(&self) -> String {
        self.sim.sharepoint_resource()
    }

    pub fn tenant_id(&self) -> &str {
        &self.sim.config.tenant_id
    }
    /// Where a tenant finds this simulator (what `OneDriveTenant.spec` needs).
    pub fn endpoints(&self) -> manifests::Endpoints {
        manifests::Endpoints {
            tenant_id: self.tenant_id().to_string(),
            admin_url: self.admin_url(),
            graph_url: self.graph_url(),
            authority_host: self.authority_host(),
        }
    }

    /// Test hook: the authorization endpoint signs the next sign-ins in as `user` (`None`:
    /// declines them), as a person at the browser would.
    pub fn approve_sign_ins(&self, user: Option<&str>) {
        self.sim.sign_ins.lock().unwrap().set_approver(user.map(str::to_string));
    }

    /// The accounts that can sign in (delegated).
    pub fn accounts(&self) -> &[authorize::Account] {
        &self.sim.config.accounts
    }

    /// Test hook: what the person at the verification page of `user_code` does, one step a poll
    /// (the last stands); `false` when no device code has this user code.
    pub fn script_device(&self, user_code: &str, steps: Vec<authorize::DeviceStep>) -> bool {
        self.sim.script_device(user_code, steps)
    }

    /// The token endpoint, which is also the `aud` a client assertion must carry.
    pub fn token_endpoint(&self) -> String {
        format!("{}/entra/{}/oauth2/v2.0/token", self.sim.base, self.sim.config.tenant_id)
    }

    pub fn stats(&self) -> Stats {
        self.sim.stats()
    }

    pub fn now(&self) -> Timestamp {
        self.sim.now()
    }

    /// The simulated clock, to share with the operator in benchmarks.
    pub fn clock(&self) -> impl Fn() -> Timestamp + Send + Sync + 'static {
        let sim = self.sim.clone();
        move || sim.now()
    }

    /// Moves a [`Clock::Manual`] clock forward.
    pub fn advance(&self, by: SignedDuration) {
        let mut now = self.sim.manual_now.lock().unwrap();
        *now += by;
    }

    /// The state of a user's personal site, advanced to now.
    pub fn site_state(&self, upn: &str) -> Option<SiteState> {
        let now = self.sim.now();
        self.sim.tenant.lock().unwrap().user(upn, now).map(|u| u.site.clone())
    }

    /// Test hook: sets a user's site state (e.g. `Uninitialized` to simulate a deleted site).
    pub fn set_site_state(&self, upn: &str, state: SiteState) -> bool {
        self.sim.tenant.lock().unwrap().set_site(upn, state)
    }

    /// A OneDrive's site collection administrators besides its owner, and its quota in MB (`None`:
    /// no such user).
    pub fn site_admins(&self, upn: &str) -> Option<(Vec<String>, i64)> {
        let tenant = self.sim.tenant.lock().unwrap();
        tenant.user_ref(upn).map(|u| (u.admins.iter().cloned().collect(), u.quota_mb))
    }

    /// Test hook: someone adds (`true`) or removes an administrator of a user's OneDrive by hand.
    pub fn set_site_admin(&self, upn: &str, admin: &str, on: bool) -> bool {
        let mut tenant = self.sim.tenant.lock().unwrap();
        let Some(u) = tenant.user_mut(upn) else { return false };
        let admin = model::key(admin);
        if on { u.admins.insert(admin) } else { u.admins.remove(&admin) }
    }

    /// Test hook: every access token issued so far is refused from now on (401), as after an
    /// administrator revokes the app's sessions; new ones are good.
    pub fn revoke_tokens(&self) {
        self.sim.token_generation.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }

    /// Test hook: changes how often requests are throttled from now on.
    pub fn set_fault_rate(&self, rate: f64) {
        let mut f = self.sim.faults.lock().unwrap();
        let mut config = f.config().clone();
        config.rate = rate;
        let seed_state = f.rng().clone();
        *f = faults::Faults::new(config);
        *f.rng() = seed_state;
    }

    pub async fn shutdown(mut self) {
        self.stop();
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }

    fn stop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

impl Drop for SimHandle {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Binds `listen` (use port 0 for a free port) and serves until the handle is dropped.
pub async fn start(config: Config, listen: SocketAddr) -> std::io::Result<SimHandle> {
    let listener = tokio::net::TcpListener::bind(listen).await?;
    let addr = listener.local_addr()?;
    let base = match &config.host_name {
        Some(name) => format!("http://{name}:{}", addr.port()),
        None => format!("http://{addr}"),
    };
    let started_at = crate::plan::whole_second(Timestamp::now());
    let faults = faults::Faults::new(config.faults.clone());
    let tenant =
        model::Tenant::new(config.users.clone(), format!("{base}/my"), config.provision_delay, config.jitter);
    let first = config.accounts.first().map(|a| a.upn.clone()).unwrap_or_default();
    let refresh_tokens = config
        .apps
        .iter()
        .filter_map(|a| match a {
            App::Delegated { refresh_tokens, .. } => Some(refresh_tokens.clone()),
            _ => None,
        })
        .flatten()
        .map(|t| (t, first.clone()))
        .collect();
    let mut token_secret = [0u8; 32];
    crate::jose::getrandom_fill(&mut token_secret);
    let sim = Arc::new(Sim {
        base,
        started: Instant::now(),
        started_at,
        manual_now: Mutex::new(started_at),
        tenant: Mutex::new(tenant),
        groups: Mutex::new(groups::Groups::new(config.groups.clone())),
        faults: Mutex::new(faults),
        stats: Mutex::new(Stats::default()),
        token_secret,
        token_generation: std::sync::atomic::AtomicU64::new(0),
        refresh_tokens: Mutex::new(refresh_tokens),
        sign_ins: Mutex::new(authorize::SignIns::default()),
        digests: Mutex::new(HashSet::new()),
        operations: Mutex::new(HashMap::new()),
        not_before: Mutex::new(HashMap::new()),
        window: Mutex::new((started_at, 0)),
        in_flight: AtomicUsize::new(0),
        config,
    });
    let app = router(sim.clone());
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                let _ = rx.await;
            })
            .await;
    });
    Ok(SimHandle { sim, addr, shutdown: Some(tx), task: Some(task) })
}

fn router(sim: Arc<Sim>) -> Router {
    Router::new()
        .merge(entra::routes())
        .merge(authorize::routes())
        .merge(profiles::routes())
        .merge(graph::routes())
        .merge(groups::routes())
        .merge(sharepoint::routes())
        .route("/_sim/stats", axum::routing::get(stats_json))
        .fallback(not_found)
        .layer(axum::middleware::from_fn_with_state(sim.clone(), around_every_request))
        .with_state(sim)
}

/// Concurrency accounting and added latency for every request.
async fn around_every_request(State(sim): State<Arc<Sim>>, req: Request, next: Next) -> Response {
    let now = sim.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
    let replica =
        req.headers().get(axum::http::header::USER_AGENT).and_then(|v| v.to_str().ok()).and_then(replica_of);
    {
        let mut s = sim.stats.lock().unwrap();
        s.peak_concurrency = s.peak_concurrency.max(now);
        if let Some(ua) = req.headers().get(axum::http::header::USER_AGENT).and_then(|v| v.to_str().ok())
            && !req.uri().path().starts_with("/_sim")
        {
            s.user_agents.insert(ua.to_string());
        }
    }
    let arrival = Arrival { replica, at_ms: sim.elapsed_ms() };
    if !req.uri().path().starts_with("/_sim") {
        sim.stats.lock().unwrap().arrivals.push(ArrivalRecord {
            at_ms: arrival.at_ms,
            path: req.uri().path().to_string(),
            replica: arrival.replica.clone(),
        });
    }
    let latency = sim.faults.lock().unwrap().config().latency;
    if !latency.is_zero() && !req.uri().path().starts_with("/_sim") {
        tokio::time::sleep(latency).await;
    }
    let response = ARRIVAL.scope(arrival, next.run(req)).await;
    sim.in_flight.fetch_sub(1, Ordering::SeqCst);
    response
}

async fn stats_json(State(sim): State<Arc<Sim>>) -> Response {
    axum::Json(sim.stats()).into_response()
}

/// The request being served: who sent it and when it arrived.
struct Arrival {
    replica: Option<String>,
    at_ms: f64,
}

tokio::task_local! {
    static ARRIVAL: Arrival;
}

/// The replica that sent the request being served: the operator appends `(replica <name>)` to
/// its User-Agent.
pub(crate) fn replica() -> Option<String> {
    ARRIVAL.try_with(|a| a.replica.clone()).ok().flatten()
}

fn replica_of(user_agent: &str) -> Option<String> {
    let rest = &user_agent[user_agent.find("(replica ")? + "(replica ".len()..];
    Some(rest[..rest.find(')')?].to_string())
}

async fn not_found() -> Response {
    (axum::http::StatusCode::NOT_FOUND, "no such endpoint in the Microsoft 365 simulator\n").into_response()
}

/// Decodes `%XX` escapes (a literal `+` stays a `+`: it is common in email addresses).
pub(crate) fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = (bytes[i] == b'%')
            .then(|| bytes.get(i + 1..i + 3))
            .flatten()
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match hex {
            Some(b) => {
                out.push(b);
                i += 3;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}
