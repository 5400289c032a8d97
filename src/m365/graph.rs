//! Observing users through Microsoft Graph `$batch` (20 lookups per HTTP request).

use std::collections::HashMap;
use std::time::Duration;

use futures::StreamExt;
use serde_json::{Value, json};

use super::http::{Answer, MAX_BODY, Service};
use super::{GRAPH_BATCH_LIMIT, M365Error, TenantClient};
use crate::plan::{DataLocation, Observation, UserKey, user_key};

/// Rounds of retrying throttled `$batch` items before they are reported `Unknown`.
const ITEM_ROUNDS: usize = 8;

/// Runs `f` over chunks of 20 users with bounded concurrency.
pub(super) async fn in_chunks<F, Fut, T>(client: &TenantClient, users: &[String], f: F) -> Vec<T>
where
    F: Fn(Vec<String>) -> Fut,
    Fut: std::future::Future<Output = T>,
{
    // Built up front: a lazily mapped iterator held across awaits trips up `Send` inference.
    let pending: Vec<Fut> = users.chunks(GRAPH_BATCH_LIMIT).map(|c| f(c.to_vec())).collect();
    futures::stream::iter(pending).buffer_unordered(client.config.graph_concurrency.max(1)).collect().await
}

pub(super) type Seen = HashMap<UserKey, Observation>;

/// What one drive lookup says: a verdict, or that only the user's directory entry can tell.
#[derive(Debug, PartialEq)]
pub(super) enum DriveAnswer {
    Is(Observation),
    /// No drive, or "Unable to retrieve user's mysite URL." (a well-known answer for users whose
    /// OneDrive does not exist yet, for unlicensed users, and after a sign-in domain change):
    /// whether the user may get a site is in the directory.
    AskDirectory,
}

/// Classifies a `GET /users/{upn}/drive` answer (`None`: not answered, e.g. throttled).
pub(super) fn classify_drive(answer: Option<&(u16, Value)>) -> Result<DriveAnswer, M365Error> {
    let Some((status, body)) = answer else { return Ok(DriveAnswer::Is(Observation::Unknown)) };
    let code = body["error"]["code"].as_str().unwrap_or("");
    let mysite_unknown =
        body["error"]["message"].as_str().is_some_and(|m| m.contains("Unable to retrieve user's mysite URL"));
    Ok(match (*status, code) {
        (200, _) => match body["webUrl"].as_str() {
            Some(url) => DriveAnswer::Is(Observation::HasSite { url: site_url(url) }),
            None => DriveAnswer::Is(Observation::LookupFailed { status: 200, code: "no webUrl".into() }),
        },
        _ if mysite_unknown => DriveAnswer::AskDirectory,
        (404, "Request_ResourceNotFound") => DriveAnswer::Is(Observation::UserNotFound),
        (404, "ResourceNotFound" | "itemNotFound") => DriveAnswer::AskDirectory,
        (403, _) => {
            return Err(M365Error::PermissionMissing(
                "Microsoft Graph refused a drive lookup (403): grant the app Sites.Read.All (or Files.Read.All) with admin consent (delegated: the same scope); doctor names what the token holds".into(),
            ));
        }
        (status, code) => DriveAnswer::Is(failed(status, code)),
    })
}

/// Classifies a `GET /users/{upn}?$select=accountEnabled,assignedPlans,preferredDataLocation` answer for a user without
/// a drive: licence first (the documented cause), then sign-in.
pub(super) fn classify_user(answer: Option<&(u16, Value)>) -> Result<Observation, M365Error> {
    let Some((status, body)) = answer else { return Ok(Observation::Unknown) };
    Ok(match *status {
        200 if !has_sharepoint_plan(body) => Observation::UserNotLicensed,
        200 if body["accountEnabled"] == Value::Bool(false) => Observation::SignInBlocked,
        200 => Observation::NoSite,
        404 => Observation::UserNotFound,
        403 => {
            return Err(M365Error::PermissionMissing(
                "Microsoft Graph refused a user lookup (403): grant the app User.Read.All with admin consent (delegated: the same scope); doctor names what the token holds".into(),
            ));
        }
        status => failed(status, body["error"]["code"].as_str().unwrap_or("")),
    })
}

fn failed(status: u16, code: &str) -> Observation {
    let code = if code.is_empty() { "no error code" } else { code };
    Observation::LookupFailed { status, code: code.chars().take(60).collect() }
}

/// Drive lookups for a chunk: what they tell, and the users whose directory entry must tell.
pub(super) async fn drives(
    client: &TenantClient,
    chunk: Vec<String>,
) -> Result<(Seen, Vec<String>), M365Error> {
    let answers = run_batch(client, &chunk, |u| format!("{}/drive", user_path(u))).await?;
    let mut out = HashMap::new();
    let mut ask = Vec::new();
    for user in chunk {
        match classify_drive(answers.get(&user))? {
            DriveAnswer::Is(obs) => {
                out.insert(user_key(&user), obs);
            }
            DriveAnswer::AskDirectory => ask.push(user),
        }
    }
    Ok((out, ask))
}

/// Directory lookups for users without a drive: what they say, and each user's preferred data
/// location (Multi-Geo routing reads it from this same lookup: no extra request).
pub(super) async fn directory(
    client: &TenantClient,
    chunk: Vec<String>,
) -> Result<HashMap<UserKey, (Observation, DataLocation)>, M365Error> {
    let answers = run_batch(client, &chunk, |u| {
        format!("{}?$select=id,accountEnabled,assignedPlans,preferredDataLocation", user_path(u))
    })
    .await?;
    chunk.iter().map(|user| Ok((user_key(user), user_entry(answers.get(user))?))).collect()
}

/// What a user's directory entry (a lookup's answer, or their item of the directory listing)
/// says, and their preferred data location when it was read.
pub(super) fn user_entry(answer: Option<&(u16, Value)>) -> Result<(Observation, DataLocation), M365Error> {
    let location = match answer {
        Some((200, body)) => DataLocation::from_directory(body["preferredDataLocation"].as_str()),
        _ => DataLocation::Unread,
    };
    Ok((classify_user(answer)?, location))
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

fn graph_permission_missing() -> M365Error {
    M365Error::PermissionMissing(
        "Microsoft Graph refused the lookup (403): grant the app Sites.Read.All (or Files.Read.All) and User.Read.All application permissions with admin consent".into(),
    )
}

/// `/users/{upn}`, the UPN percent-encoded for a path segment (`#EXT#` → `%23EXT%23`, `'` →
/// `%27`, non-ASCII as UTF-8). A UPN starting with `$` would read as a system segment: Graph's
/// documented form for it is the key literal, `/users('$…')`.
pub(crate) fn user_path(upn: &str) -> String {
    if upn.starts_with('$') {
        format!("/users({})", encode(&super::escape::odata_literal(upn)))
    } else {
        format!("/users/{}", encode(upn))
    }
}

/// Percent-encodes a path segment (letters, digits, `@ . _ - +` stay).
fn encode(segment: &str) -> String {
    segment
        .bytes()
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
) -> Result<HashMap<String, (u16, Value)>, M365Error> {
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
        // Graph throttles each item as if it had come alone (1 unit for a drive or a user).
        client.http.count_units(Service::Graph, requests.len() as u64);
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

async fn send_batch(client: &TenantClient, body: &Value) -> Result<Value, M365Error> {
    let url = format!("{}/v1.0/$batch", client.config.graph_url);
    let answer =
        with_token(client, MAX_BODY, |token| client.http.client().post(&url).bearer_auth(token).json(body))
            .await?;
    match answer.status {
        200 => {
            let body = answer.json()?;
            if !body["responses"].is_array() {
                return Err(M365Error::Protocol(format!(
                    "{} answered 200 without a responses array",
                    answer.endpoint
                )));
            }
            Ok(body)
        }
        401 => Err(M365Error::CredentialsInvalid(
            "Microsoft Graph refused the token (401): check the app registration and its consent".into(),
        )),
        403 => Err(graph_permission_missing()),
        status => {
            // Only the status and error code: bodies carry dates and request ids, which would
            // change every status message on every cycle.
            let code = error_code(&answer.json_or_null());
            Err(M365Error::Unreachable(format!("Microsoft Graph $batch answered {status} ({code})")))
        }
    }
}

/// An answer's Graph error code, short and printable (it goes into status messages).
fn error_code(body: &Value) -> String {
    let code: String = body["error"]["code"]
        .as_str()
        .unwrap_or("no error code")
        .chars()
        .filter(|c| c.is_ascii_graphic())
        .take(60)
        .collect();
    if code.is_empty() { "no error code".into() } else { code }
}

/// Sends the Graph request `build` makes with a token, reading at most `cap` bytes; a 401 is sent
/// again once with a fresh token (a cached token may have been revoked). The answer is the
/// caller's to read.
pub(super) async fn with_token(
    client: &TenantClient,
    cap: usize,
    build: impl Fn(&str) -> reqwest::RequestBuilder,
) -> Result<Answer, M365Error> {
    let mut attempt = 0;
    loop {
        let token = client.tokens.token(&client.config.graph_url).await?;
        let answer = client.http.send_capped(Service::Graph, cap, || build(&token)).await?;
        if answer.status != 401 || attempt == 1 {
            return Ok(answer);
        }
        client.tokens.invalidate(&client.config.graph_url);
        attempt += 1;
    }
}

/// The first `n` users of the directory.
pub(super) async fn some_users(client: &TenantClient, n: usize) -> Result<Vec<String>, M365Error> {
    let url = format!("{}/v1.0/users?$select=userPrincipalName&$top={n}", client.config.graph_url);
    let answer =
        with_token(client, MAX_BODY, |token| client.http.client().get(&url).bearer_auth(token)).await?;
    match answer.status {
        200 => {
            let body = answer.json()?;
            Ok(body["value"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|u| u["userPrincipalName"].as_str().map(str::to_string))
                .collect())
        }
        401 | 403 => Err(graph_permission_missing()),
        s => Err(M365Error::Unreachable(format!(
            "Graph /users answered {s} ({})",
            error_code(&answer.json_or_null())
        ))),
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
        assert_eq!(user_path("o'neil+x@contoso.com"), "/users/o%27neil+x@contoso.com");
        assert_eq!(user_path("a#b?c/d@x.y"), "/users/a%23b%3Fc%2Fd@x.y");
        assert_eq!(user_path("$adele@x.y"), "/users(%27%24adele@x.y%27)");
        assert_eq!(user_path("é@x.y"), "/users/%C3%A9@x.y");
    }
}
