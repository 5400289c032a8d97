//! Introspection: what the simulator was asked, when, and what it answered.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

/// One request as the simulator saw it.
#[derive(Clone, Debug, Serialize)]
pub struct RequestRecord {
    /// Milliseconds since the simulator started (real time) when it arrived.
    pub at_ms: f64,
    pub endpoint: String,
    pub status: u16,
    /// The `Retry-After` given with a 429/503, in seconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry_after: Option<f64>,
    /// Who sent it (the token's client id), when authenticated.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client: Option<String>,
    /// The operator replica that sent it (from its User-Agent), if it named itself.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub replica: Option<String>,
}

/// One request as it arrived (before any added latency, and whether or not its sender waited
/// for the answer): what a real service would have received.
#[derive(Clone, Debug, Serialize)]
pub struct ArrivalRecord {
    /// Milliseconds since the simulator started (real time).
    pub at_ms: f64,
    pub path: String,
    /// The operator replica that sent it (from its User-Agent), if it named itself.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub replica: Option<String>,
}

/// One enqueue that reached the tenant model.
#[derive(Clone, Debug, Serialize)]
pub struct EnqueueRecord {
    pub at_ms: f64,
    /// Simulated time.
    pub at: String,
    pub users: Vec<String>,
    pub token_kind: String,
    pub method: String,
    /// The geo whose admin host received it (empty in a single-geo tenant).
    pub geo: String,
    /// Users of the request whose OneDrive belongs to another geo: ignored, as no site can be
    /// made for them here (the simulator's choice for an undocumented case).
    pub wrong_geo: Vec<String>,
    /// The operator replica that sent it (from its User-Agent), if it named itself.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub replica: Option<String>,
    /// The previous request to the same geo still had its last user's site being created: a
    /// batch sent while another was in flight (or the same batch sent again).
    pub while_in_flight: bool,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct Stats {
    /// Milliseconds since the simulator started (real time) when these stats were taken: the
    /// clock `at_ms` is on.
    pub now_ms: f64,
    /// Requests per endpoint (`$batch` counts once; its items are counted under `graph.batch.items`,
    /// and by kind under `graph.batch.items.drive` and `graph.batch.items.user`).
    pub requests: BTreeMap<String, u64>,
    pub enqueues: Vec<EnqueueRecord>,
    pub log: Vec<RequestRecord>,
    /// Every request as it arrived.
    pub arrivals: Vec<ArrivalRecord>,
    pub peak_concurrency: usize,
    pub throttled: u64,
    /// Requests that arrived before an earlier `Retry-After` given to the same client for the same
    /// service had elapsed.
    pub early_retries: u64,
    /// Every distinct `User-Agent` seen (Microsoft asks for `NONISV|<Company>|<App>/<version>`).
    pub user_agents: BTreeSet<String>,
    /// Refresh-token redemptions per resource (audience) asked for.
    pub refresh_redemptions: BTreeMap<String, u64>,
    /// Refresh tokens issued in exchange (each redemption rotates the token).
    pub rotations: u64,
    /// SHA-256 (base64url) of the newest refresh token issued: tests compare what a Secret holds
    /// without the simulator ever showing a token.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub newest_refresh_token_sha256: Option<String>,
    /// `x5t#S256` of every certificate a client assertion was signed with.
    pub certificates_used: BTreeSet<String>,
}

impl Stats {
    pub fn count(&self, endpoint: &str) -> u64 {
        self.requests.get(endpoint).copied().unwrap_or(0)
    }

    /// Requests to Graph (`$batch` once, plus direct calls).
    pub fn graph_requests(&self) -> u64 {
        self.requests
            .iter()
            .filter(|(k, _)| k.starts_with("graph.") && !k.starts_with("graph.batch.items"))
            .map(|(_, v)| v)
            .sum()
    }

    /// What Graph's throttling counts: each `$batch` item and direct lookup 1 unit, a page of
    /// the site listings 2 (a multi-item SharePoint query), a page of `/users` with `$select` 1
    /// (base 2, less 1 for `$select`).
    pub fn graph_units(&self) -> u64 {
        self.count("graph.batch.items")
            + self.count("graph.user")
            + self.count("graph.drive")
            + self.count("graph.users")
            + 2 * (self.count("graph.sites") + self.count("graph.sites.roots"))
    }

    pub fn sharepoint_requests(&self) -> u64 {
        self.requests.iter().filter(|(k, _)| k.starts_with("sharepoint.")).map(|(_, v)| v).sum()
    }
}
