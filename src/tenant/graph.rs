//! Observing users through Microsoft Graph `$batch` (20 lookups per HTTP request).

use std::collections::HashMap;
use std::time::Duration;

use futures::StreamExt;
use serde_json::{Value, json};

use super::http::Service;
use super::{GRAPH_BATCH_LIMIT, TenantClient, TenantError};
use crate::plan::{Observation, user_key};

/// Rounds of retrying throttled `$batch` items before they are reported `Unknown`.
const ITEM_ROUNDS: usize = 8;

pub(super) async fn observe(
    client: &TenantClient,
    users: &[String],
) -> Result<HashMap<String, Observation>, TenantError> {
    let mut unique: Vec<String> = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for u in users {
        if seen.insert(user_key(u)) {
            unique.push(u.trim().to_string());
        }
    }
    // First every drive, then one licence lookup for all users whose drive lookup was
    // ambiguous (batched across chunks, so a few unlicensed users cost a request, not one each).
    let mut out = HashMap::new();
    let mut ambiguous = Vec::new();
    for r in in_chunks(client, &unique, |chunk| async move { drives(client, chunk).await }).await {
        let (seen, unclear) = r?;
        out.extend(seen);
        ambiguous.extend(unclear);
    }
    for r in in_chunks(client, &ambiguous, |chunk| async move { licences(client, chunk).await }).await {
        out.extend(r?);
    }
    Ok(out)
}

/// Runs `f` over chunks of 20 users with bounded concurrency.
async fn in_chunks<F, Fut, T>(client: &TenantClient, users: &[String], f: F) -> Vec<T>
where
    F: Fn(Vec<String>) -> Fut,
    Fut: std::future::Future<Output = T>,
{
    // Built up front: a lazily mapped iterator held across awaits trips up `Send` inference.
    let pending: Vec<Fut> = users.chunks(GRAPH_BATCH_LIMIT).map(|c| f(c.to_vec())).collect();
    futures::stream::iter(pending).buffer_unordered(client.config.graph_concurrency.max(1)).collect().await
}

type Seen = HashMap<String, Observation>;

async fn drives(client: &TenantClient, chunk: Vec<String>) -> Result<(Seen, Vec<String>), TenantError> {
    let answers = run_batch(client, &chunk, |u| format!("/users/{}/drive", encode(u))).await?;
    let mut out = HashMap::new();
    let mut unclear = Vec::new();
    for user in chunk {
        let obs = match answers.get(&user) {
            Some((200, body)) => match body["webUrl"].as_str() {
                Some(url) => Observation::HasSite { url: site_url(url) },
                None => Observation::Unknown,
            },
            Some((404, body)) if body["error"]["code"] == "Request_ResourceNotFound" => {
                Observation::UserNotFound
            }
            Some((404, body)) if body["error"]["code"] == "ResourceNotFound" => Observation::NoSite,
            // "Unable to retrieve user's mysite URL.": look at the user's licences.
            Some((400, _)) => {
                unclear.push(user);
                continue;
            }
            Some((403, _)) => return Err(graph_permission_missing()),
            _ => Observation::Unknown,
        };
        out.insert(user_key(&user), obs);
    }
    Ok((out, unclear))
}

async fn licences(client: &TenantClient, chunk: Vec<String>) -> Result<Seen, TenantError> {
    let answers = run_batch(client, &chunk, |u| {
        format!("/users/{}?$select=id,accountEnabled,assignedPlans", encode(u))
    })
    .await?;
    Ok(chunk
        .iter()
        .map(|user| {
            let obs = match answers.get(user) {
                Some((200, body)) if !has_sharepoint_plan(body) => Observation::UserNotLicensed,
                Some((404, _)) => Observation::UserNotFound,
                _ => Observation::Unknown,
            };
            (user_key(user), obs)
        })
        .collect())
}

fn has_sharepoint_plan(user: &Value) -> bool {
    user["assignedPlans"].as_array().is_some_and(|plans| {
        plans.iter().any(|p| p["service"] == "SharePoint" && p["capabilityStatus"] == "Enabled")
    })
}

/// `…/personal/alice_contoso_com/Documents` → `…/personal/alice_contoso_com/`.
fn site_url(drive_web_url: &str) -> String {
    let trimmed = drive_web_url.trim_end_matches('/');
    match trimmed.rsplit_once('/') {
        Some((site, _library)) if site.contains("/personal/") => format!("{site}/"),
        _ => format!("{trimmed}/"),
    }
}

fn graph_permission_missing() -> TenantError {
    TenantError::PermissionMissing(
        "Microsoft Graph refused the lookup (403): grant the app Sites.Read.All (or Files.Read.All) and User.Read.All application permissions with admin consent".into(),
    )
}

/// Percent-encodes a UPN for a Graph path segment.
fn encode(user: &str) -> String {
    user.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'@' | b'.' | b'_' | b'-' | b'+' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Runs one `$batch` of GET requests (≤ 20), retrying throttled items after their own
/// `Retry-After`. Returns (status, body) per user.
async fn run_batch(
    client: &TenantClient,
    users: &[String],
    url: impl Fn(&str) -> String,
) -> Result<HashMap<String, (u16, Value)>, TenantError> {
    let mut answers = HashMap::new();
    let mut pending: Vec<&String> = users.iter().collect();
    let started = tokio::time::Instant::now();
    for _ in 0..ITEM_ROUNDS {
        if pending.is_empty() {
            break;
        }
        if let Err(e) = client.http.wait_for_gate(Service::Graph, started).await {
            // Out of waiting budget: what is left stays unknown this cycle.
            tracing::debug!(error = %e, users = pending.len(), "graph lookups left for the next cycle");
            break;
        }
        let requests: Vec<Value> = pending
            .iter()
            .enumerate()
            .map(|(i, u)| json!({"id": i.to_string(), "method": "GET", "url": url(u)}))
            .collect();
        let body = json!({ "requests": requests });
        let response = send_batch(client, &body).await?;
        let mut throttled = Vec::new();
        let mut longest = Duration::ZERO;
        for item in response["responses"].as_array().into_iter().flatten() {
            let Some(i) = item["id"].as_str().and_then(|id| id.parse::<usize>().ok()) else { continue };
            let Some(user) = pending.get(i) else { continue };
            let status = item["status"].as_u64().unwrap_or(0) as u16;
            if status == 429 || status == 503 {
                let wait = item["headers"]["Retry-After"]
                    .as_str()
                    .or(item["headers"]["retry-after"].as_str())
                    .and_then(|s| s.trim().parse::<f64>().ok())
                    .filter(|s| s.is_finite() && *s >= 0.0)
                    .map(|s| Duration::from_secs_f64(s.min(3600.0)))
                    .unwrap_or_else(|| super::http::backoff(1));
                longest = longest.max(wait);
                throttled.push(*user);
            } else {
                answers.insert((*user).clone(), (status, item["body"].clone()));
            }
        }
        if !throttled.is_empty() {
            client.http.defer(Service::Graph, longest);
        }
        pending = throttled;
    }
    Ok(answers)
}

async fn send_batch(client: &TenantClient, body: &Value) -> Result<Value, TenantError> {
    let url = format!("{}/v1.0/$batch", client.config.graph_url);
    for attempt in 0..2 {
        let token = client.tokens.token(&client.config.graph_url).await?;
        let response = client
            .http
            .send(Service::Graph, || client.http.client().post(&url).bearer_auth(&token).json(body))
            .await?;
        match response.status().as_u16() {
            200 => {
                return response
                    .json()
                    .await
                    .map_err(|e| TenantError::Protocol(format!("Graph $batch answer is not JSON: {e}")));
            }
            401 if attempt == 0 => client.tokens.invalidate(&client.config.graph_url),
            401 => {
                return Err(TenantError::CredentialsInvalid(
                    "Microsoft Graph refused the token (401): check the app registration and its consent"
                        .into(),
                ));
            }
            403 => return Err(graph_permission_missing()),
            status => {
                // Only the status and error code: bodies carry dates and request ids, which would
                // change every status message on every cycle.
                let body: serde_json::Value = response.json().await.unwrap_or_default();
                let code = body["error"]["code"].as_str().unwrap_or("no error code");
                return Err(TenantError::Unreachable(format!(
                    "Microsoft Graph $batch answered {status} ({code})"
                )));
            }
        }
    }
    unreachable!("the loop returns")
}

/// The first `n` users of the directory.
pub(super) async fn some_users(client: &TenantClient, n: usize) -> Result<Vec<String>, TenantError> {
    let token = client.tokens.token(&client.config.graph_url).await?;
    let url = format!("{}/v1.0/users?$select=userPrincipalName&$top={n}", client.config.graph_url);
    let response =
        client.http.send(Service::Graph, || client.http.client().get(&url).bearer_auth(&token)).await?;
    match response.status().as_u16() {
        200 => {
            let body: Value = response.json().await.map_err(|e| TenantError::Protocol(e.to_string()))?;
            Ok(body["value"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|u| u["userPrincipalName"].as_str().map(str::to_string))
                .collect())
        }
        401 | 403 => Err(graph_permission_missing()),
        s => Err(TenantError::Unreachable(format!("Graph /users answered {s}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drive_urls_become_site_urls_and_upns_are_encoded() {
        assert_eq!(
            site_url("https://contoso-my.sharepoint.com/personal/alice_contoso_com/Documents"),
            "https://contoso-my.sharepoint.com/personal/alice_contoso_com/"
        );
        assert_eq!(encode("o'neil+x@contoso.com"), "o%27neil+x@contoso.com");
        assert_eq!(encode("a#b?c/d@x.y"), "a%23b%3Fc%2Fd@x.y");
    }
}
