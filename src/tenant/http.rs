//! Sending requests the way Microsoft asks: honour `Retry-After` and `RateLimit-Reset` (the
//! larger), back off exponentially with jitter when neither is given, never send to a service
//! before the time it asked for, and give up with `Throttled{until}` beyond a waiting budget so
//! the controller requeues instead of sleeping. Persistent 503s mean the app is blocked.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use reqwest::{RequestBuilder, Response, StatusCode};
use tokio::time::Instant;

use super::TenantError;

/// Which Microsoft service a request goes to (each has its own throttling gate).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Service {
    Entra,
    Graph,
    SharePoint,
}

impl Service {
    pub fn name(self) -> &'static str {
        match self {
            Service::Entra => "Entra ID",
            Service::Graph => "Microsoft Graph",
            Service::SharePoint => "SharePoint",
        }
    }
}

/// Consecutive 503 answers after which SharePoint is considered to have blocked the app.
const BLOCKED_AFTER: u32 = 6;
const MAX_NETWORK_RETRIES: u32 = 3;

pub struct Http {
    client: reqwest::Client,
    /// No request to a service before this instant.
    gates: Mutex<HashMap<Service, Instant>>,
    unavailable_in_a_row: Mutex<HashMap<Service, u32>>,
    /// Longest a single call waits on throttling before returning `Throttled`.
    max_wait: Duration,
    /// Counts of requests and throttles, for metrics.
    pub counters: Mutex<HashMap<(Service, Count), u64>>,
}

/// What the tenant client counts per service (for metrics).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Count {
    Requests,
    Throttled,
    /// What the service's throttling counts (Graph: each `$batch` item, each listing page at its
    /// cost), which is not the number of HTTP requests.
    Units,
}

impl Http {
    pub fn new(client: reqwest::Client, max_wait: Duration) -> Http {
        Http {
            client,
            gates: Mutex::new(HashMap::new()),
            unavailable_in_a_row: Mutex::new(HashMap::new()),
            max_wait,
            counters: Mutex::new(HashMap::new()),
        }
    }

    pub fn client(&self) -> &reqwest::Client {
        &self.client
    }

    fn count(&self, service: Service, what: Count) {
        self.add(service, what, 1);
    }

    /// Adds `units` of the service's throttling cost.
    pub fn count_units(&self, service: Service, units: u64) {
        self.add(service, Count::Units, units);
    }

    fn add(&self, service: Service, what: Count, n: u64) {
        *self.counters.lock().unwrap().entry((service, what)).or_default() += n;
    }

    /// Holds every request to `service` until `wait` from now (e.g. a `$batch` item's Retry-After).
    pub fn defer(&self, service: Service, wait: Duration) {
        let until = Instant::now() + wait;
        let mut gates = self.gates.lock().unwrap();
        let g = gates.entry(service).or_insert(until);
        *g = (*g).max(until);
    }

    /// Waits for the service's gate, unless that would exceed the budget left.
    pub async fn wait_for_gate(&self, service: Service, started: Instant) -> Result<(), TenantError> {
        let gate = self.gates.lock().unwrap().get(&service).copied();
        if let Some(gate) = gate
            && gate > Instant::now()
        {
            if gate.duration_since(started) > self.max_wait {
                return Err(throttled(service, gate));
            }
            // Without the cycle's work slot: another tenant works meanwhile.
            crate::slots::sleep_until(gate).await;
        }
        Ok(())
    }

    /// Sends the request `build` makes (called again for each retry).
    pub async fn send(
        &self,
        service: Service,
        build: impl Fn() -> RequestBuilder,
    ) -> Result<Response, TenantError> {
        let started = Instant::now();
        let mut attempt: u32 = 0;
        let mut network_failures = 0;
        loop {
            self.wait_for_gate(service, started).await?;
            self.count(service, Count::Requests);
            let response = match build().send().await {
                Ok(r) => r,
                Err(e) if network_failures < MAX_NETWORK_RETRIES && (e.is_connect() || e.is_timeout()) => {
                    network_failures += 1;
                    self.defer(service, backoff(network_failures));
                    continue;
                }
                Err(e) => {
                    return Err(TenantError::Unreachable(format!("{}: {}", service.name(), describe(&e))));
                }
            };
            let status = response.status();
            if status != StatusCode::TOO_MANY_REQUESTS && status != StatusCode::SERVICE_UNAVAILABLE {
                self.unavailable_in_a_row.lock().unwrap().insert(service, 0);
                return Ok(response);
            }
            self.count(service, Count::Throttled);
            attempt += 1;
            if status == StatusCode::SERVICE_UNAVAILABLE {
                let mut in_a_row = self.unavailable_in_a_row.lock().unwrap();
                let n = in_a_row.entry(service).or_default();
                *n += 1;
                if *n >= BLOCKED_AFTER && service == Service::SharePoint {
                    return Err(TenantError::Blocked(format!(
                        "SharePoint answered 503 to {n} requests in a row: Microsoft may have blocked this app for exceeding its limits. Wait, reduce batch size and poll frequency, and contact Microsoft support if it persists"
                    )));
                }
            }
            let wait = retry_delay(response.headers()).unwrap_or_else(|| backoff(attempt));
            self.defer(service, wait);
            let gate = Instant::now() + wait;
            if gate.duration_since(started) > self.max_wait {
                return Err(throttled(service, gate));
            }
        }
    }
}

fn throttled(service: Service, gate: Instant) -> TenantError {
    let left = gate.saturating_duration_since(Instant::now());
    let until = Timestamp::now() + SignedDuration::try_from(left).unwrap_or(SignedDuration::from_secs(60));
    TenantError::Throttled { service: service.name(), until }
}

/// The larger of `Retry-After` (seconds, possibly fractional) and `RateLimit-Reset`.
pub fn retry_delay(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    let secs = |name: &str| -> Option<f64> {
        let v: f64 = headers.get(name)?.to_str().ok()?.trim().parse().ok()?;
        (v.is_finite() && v >= 0.0).then_some(v)
    };
    let wait = match (secs("retry-after"), secs("ratelimit-reset")) {
        (Some(a), Some(b)) => a.max(b),
        (Some(a), None) | (None, Some(a)) => a,
        (None, None) => return None,
    };
    Some(Duration::from_secs_f64(wait.min(3600.0)))
}

/// Exponential backoff with full jitter: 0.5 s, 1 s, 2 s … capped at 60 s, times 0.5–1.5.
pub fn backoff(attempt: u32) -> Duration {
    use rand::Rng;
    let base = 0.5 * 2f64.powi(attempt.saturating_sub(1).min(7) as i32);
    let jitter: f64 = rand::rng().random_range(0.5..1.5);
    Duration::from_secs_f64((base * jitter).min(60.0))
}

/// A network error without the request body (which may hold a credential).
pub fn describe(e: &reqwest::Error) -> String {
    let what = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "cannot connect"
    } else if e.is_decode() {
        "unreadable response"
    } else {
        "request failed"
    };
    match e.url() {
        Some(u) => format!("{what} ({}://{}{})", u.scheme(), u.host_str().unwrap_or(""), u.path()),
        None => what.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_larger_of_retry_after_and_ratelimit_reset_wins() {
        let mut h = reqwest::header::HeaderMap::new();
        assert_eq!(retry_delay(&h), None);
        h.insert("retry-after", "2.128".parse().unwrap());
        assert_eq!(retry_delay(&h), Some(Duration::from_secs_f64(2.128)));
        h.insert("ratelimit-reset", "7".parse().unwrap());
        assert_eq!(retry_delay(&h), Some(Duration::from_secs(7)));
        h.insert("retry-after", "junk".parse().unwrap());
        assert_eq!(retry_delay(&h), Some(Duration::from_secs(7)));
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        assert!(backoff(1) <= Duration::from_secs_f64(0.75));
        assert!(backoff(4) >= Duration::from_secs(2));
        assert!(backoff(40) <= Duration::from_secs(60));
    }
}
