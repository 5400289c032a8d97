//! Sending requests the way Microsoft asks, and reading its answers as hostile input.
//!
//! Throttling: honour `Retry-After` and `RateLimit-Reset` (the larger), back off exponentially
//! with jitter when neither is given, never send to a service before the time it asked for, and
//! give up with `Throttled{until}` beyond a waiting budget so the controller requeues instead of
//! sleeping. Persistent 503s mean the app is blocked.
//!
//! Hostile answers: every request passes the endpoint policy before it leaves; no redirect is
//! followed (a 3xx is an error naming where it pointed); every body is read whole under a size
//! cap; one deadline covers a call's network attempts and its body (the waits Microsoft asked
//! for are not counted: they have the throttling budget and give up the work slot).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use reqwest::header::HeaderMap;
use reqwest::{RequestBuilder, Response, StatusCode};
use serde_json::Value;
use tokio::time::Instant;

use super::M365Error;
use super::policy::EndpointPolicy;
pub use super::policy::Service;
use crate::api::Cloud;

/// Consecutive 503 answers after which SharePoint is considered to have blocked the app.
const BLOCKED_AFTER: u32 = 6;
/// Connection failures retried within a call's deadline.
const MAX_NETWORK_RETRIES: u32 = 3;
/// The most of an answer read: far more than any answer the operator asks for.
pub const MAX_BODY: usize = 4 << 20;
/// A listing page (999 users with their licence plans) may be larger.
pub const MAX_PAGE_BODY: usize = 16 << 20;

/// How the client reaches one tenant: where it may go, how long a call may take.
pub struct Reach {
    pub cloud: Cloud,
    pub policy: EndpointPolicy,
    /// One call's deadline: its network attempts and its whole answer.
    pub deadline: Duration,
    /// Longest a single call waits on throttling before returning `Throttled`.
    pub max_wait: Duration,
}

pub struct Http {
    client: reqwest::Client,
    reach: Reach,
    /// No request to a service before this instant.
    gates: Mutex<HashMap<Service, Instant>>,
    unavailable_in_a_row: Mutex<HashMap<Service, u32>>,
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

/// A whole answer: its status, headers and body (read under a cap).
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Vec<u8>,
    /// Where it came from, without user names (see [`endpoint`]).
    pub endpoint: String,
}

impl Answer {
    /// The body as JSON, or a `Protocol` error naming the endpoint.
    pub fn json(&self) -> Result<Value, M365Error> {
        serde_json::from_slice(&self.body).map_err(|e| {
            M365Error::Protocol(format!(
                "{} answered {} with a body that is not JSON ({e}){}",
                self.endpoint,
                self.status,
                html_hint(&self.body)
            ))
        })
    }

    /// The body as JSON, `Null` when it is not (error bodies are read for their codes only).
    pub fn json_or_null(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

fn html_hint(body: &[u8]) -> &'static str {
    let start = String::from_utf8_lossy(&body[..body.len().min(64)]).trim_start().to_ascii_lowercase();
    if start.starts_with("<!doctype html") || start.starts_with("<html") {
        ": an HTML page, e.g. a proxy's or a sign-in page"
    } else {
        ""
    }
}

/// The reqwest client every Microsoft call uses: no redirects, TLS always verified.
pub fn client_builder(user_agent: &str) -> reqwest::ClientBuilder {
    reqwest::Client::builder()
        .user_agent(user_agent)
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(Duration::from_secs(10))
}

impl Http {
    pub fn new(client: reqwest::Client, reach: Reach) -> Http {
        Http {
            client,
            reach,
            gates: Mutex::new(HashMap::new()),
            unavailable_in_a_row: Mutex::new(HashMap::new()),
            counters: Mutex::new(HashMap::new()),
        }
    }

    pub fn client(&self) -> &reqwest::Client {
        &self.client
    }

    /// Whether the endpoint policy lets a request to `url` go to `service`.
    pub fn reach_admits(&self, service: Service, url: &reqwest::Url) -> Result<(), M365Error> {
        self.reach.policy.admits(self.reach.cloud, service, url)
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
    pub async fn wait_for_gate(&self, service: Service, started: Instant) -> Result<(), M365Error> {
        let gate = self.gates.lock().unwrap().get(&service).copied();
        if let Some(gate) = gate
            && gate > Instant::now()
        {
            if gate.duration_since(started) > self.reach.max_wait {
                return Err(throttled(service, gate));
            }
            // Without the cycle's work slot: another tenant works meanwhile.
            crate::slots::sleep_until(gate).await;
        }
        Ok(())
    }

    /// Sends the request `build` makes (called again for each retry) and reads its answer whole,
    /// at most [`MAX_BODY`] bytes.
    pub async fn send(
        &self,
        service: Service,
        build: impl Fn() -> RequestBuilder,
    ) -> Result<Answer, M365Error> {
        self.send_capped(service, MAX_BODY, build).await
    }

    /// [`Http::send`] with an answer of at most `cap` bytes.
    pub async fn send_capped(
        &self,
        service: Service,
        cap: usize,
        build: impl Fn() -> RequestBuilder,
    ) -> Result<Answer, M365Error> {
        let started = Instant::now();
        let mut left = self.reach.deadline;
        let mut attempt: u32 = 0;
        let mut network_failures = 0;
        loop {
            self.wait_for_gate(service, started).await?;
            let request = build().build().map_err(|e| {
                M365Error::InvalidRequest(format!(
                    "{}: cannot build a request ({})",
                    service.name(),
                    describe(&e)
                ))
            })?;
            self.reach.policy.admits(self.reach.cloud, service, request.url())?;
            let label = endpoint(request.url());
            self.count(service, Count::Requests);
            let began = Instant::now();
            let response = match tokio::time::timeout(left, self.client.execute(request)).await {
                Err(_) => return Err(timed_out(service, &label, self.reach.deadline)),
                Ok(Ok(r)) => r,
                Ok(Err(e)) if network_failures < MAX_NETWORK_RETRIES && e.is_connect() => {
                    network_failures += 1;
                    left = left.saturating_sub(began.elapsed());
                    let pause = backoff(network_failures).min(left);
                    tokio::time::sleep(pause).await;
                    left = left.saturating_sub(pause);
                    if left.is_zero() {
                        return Err(timed_out(service, &label, self.reach.deadline));
                    }
                    continue;
                }
                Ok(Err(e)) => {
                    return Err(M365Error::Unreachable(format!("{}: {}", service.name(), describe(&e))));
                }
            };
            let status = response.status();
            if status.is_redirection() {
                return Err(redirected(service, &label, &response));
            }
            if status != StatusCode::TOO_MANY_REQUESTS && status != StatusCode::SERVICE_UNAVAILABLE {
                self.unavailable_in_a_row.lock().unwrap().insert(service, 0);
                let headers = response.headers().clone();
                let remaining = left.saturating_sub(began.elapsed());
                let body = match tokio::time::timeout(remaining, read_capped(response, cap)).await {
                    Err(_) => return Err(timed_out(service, &label, self.reach.deadline)),
                    Ok(Err(Unread::TooLarge)) => {
                        return Err(M365Error::Protocol(format!(
                            "{label} answered more than {} MiB: refused unread (the answers the operator asks for are far smaller)",
                            cap >> 20
                        )));
                    }
                    Ok(Err(Unread::Cut(e))) => {
                        return Err(M365Error::Unreachable(format!(
                            "{label}: the answer was cut off before its end ({})",
                            describe(&e)
                        )));
                    }
                    Ok(Ok(body)) => body,
                };
                return Ok(Answer { status: status.as_u16(), headers, body, endpoint: label });
            }
            left = left.saturating_sub(began.elapsed());
            self.count(service, Count::Throttled);
            attempt += 1;
            if status == StatusCode::SERVICE_UNAVAILABLE {
                let mut in_a_row = self.unavailable_in_a_row.lock().unwrap();
                let n = in_a_row.entry(service).or_default();
                *n += 1;
                if *n >= BLOCKED_AFTER && service == Service::SharePoint {
                    return Err(M365Error::Blocked(format!(
                        "SharePoint answered 503 to {n} requests in a row: Microsoft may have blocked this app for exceeding its limits. Wait, reduce batch size and poll frequency, and contact Microsoft support if it persists"
                    )));
                }
            }
            let wait = retry_delay(response.headers()).unwrap_or_else(|| backoff(attempt));
            self.defer(service, wait);
            let gate = Instant::now() + wait;
            if gate.duration_since(started) > self.reach.max_wait {
                return Err(throttled(service, gate));
            }
        }
    }
}

enum Unread {
    TooLarge,
    Cut(reqwest::Error),
}

/// Reads a body chunk by chunk, refusing it as soon as it passes `cap`.
async fn read_capped(mut response: Response, cap: usize) -> Result<Vec<u8>, Unread> {
    if response.content_length().is_some_and(|n| n > cap as u64) {
        return Err(Unread::TooLarge);
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(Unread::Cut)? {
        if body.len() + chunk.len() > cap {
            return Err(Unread::TooLarge);
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

fn timed_out(service: Service, label: &str, deadline: Duration) -> M365Error {
    M365Error::Unreachable(format!(
        "{}: timed out: {label} gave no complete answer within {}s (network retries included)",
        service.name(),
        deadline.as_secs_f64()
    ))
}

fn redirected(service: Service, label: &str, response: &Response) -> M365Error {
    let to = response
        .headers()
        .get(reqwest::header::LOCATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|l| response.url().join(l).ok())
        .and_then(|u| u.host_str().map(str::to_string))
        .unwrap_or_else(|| "nowhere readable".into());
    M365Error::Protocol(format!(
        "{label} answered {} redirecting to {to}: {} requests follow no redirect (nothing was sent there)",
        response.status().as_u16(),
        service.name()
    ))
}

/// `host/path` of a request, for messages: no query, and a path segment that looks like a user
/// (`…@domain.tld`) reads `{user}` (messages may land on the cluster-scoped tenant).
pub fn endpoint(url: &reqwest::Url) -> String {
    let path: Vec<&str> = url
        .path()
        .split('/')
        .map(|segment| {
            let decoded = segment.replace("%40", "@");
            match decoded.split_once('@') {
                Some((local, domain)) if !local.is_empty() && domain.contains('.') => "{user}",
                _ => segment,
            }
        })
        .collect();
    format!("{}{}", url.host_str().unwrap_or_default(), path.join("/"))
}

fn throttled(service: Service, gate: Instant) -> M365Error {
    let left = gate.saturating_duration_since(Instant::now());
    let until = Timestamp::now() + SignedDuration::try_from(left).unwrap_or(SignedDuration::from_secs(60));
    M365Error::Throttled { service: service.name(), until }
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
    } else if e.is_decode() || e.is_body() {
        "unreadable response"
    } else {
        "request failed"
    };
    match e.url() {
        Some(u) => format!("{what} ({}://{})", u.scheme(), endpoint(u)),
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

    #[test]
    fn endpoints_in_messages_name_no_user() {
        let u = |s: &str| reqwest::Url::parse(s).unwrap();
        assert_eq!(
            endpoint(&u("https://graph.microsoft.com/v1.0/users/o%27neil@contoso.com/drive?$select=id")),
            "graph.microsoft.com/v1.0/users/{user}/drive"
        );
        assert_eq!(
            endpoint(&u(
                "https://c-admin.sharepoint.com/_api/SP.UserProfiles.PeopleManager/GetPropertiesFor(accountName=@v)?@v='a@b.c'"
            )),
            "c-admin.sharepoint.com/_api/SP.UserProfiles.PeopleManager/GetPropertiesFor(accountName=@v)"
        );
    }
}
