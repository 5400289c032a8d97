//! The SharePoint admin hosts (the central geo's and each satellite's): form digests and the REST
//! and CSOM enqueue calls; the settings calls are `site_admins`', user profiles `profiles`', and
//! what every admin-host endpoint shares is `admin_host`.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use serde_json::{Value, json};

use super::admin_host::{HostGeo, LIBRARY_VERSION, admit, csom_reply, finish, odata_error, verbose};
use super::csom::{self, Action, ObjectPath};
use super::{AppOnlyEnqueue, EnqueueRecord, Sim, TokenInfo};

/// The central admin host at `/sharepoint`, each satellite geo's at `/geos/{geo}/sharepoint`.
pub(super) fn routes() -> Router<Arc<Sim>> {
    let mut router = Router::new();
    for host in ["/sharepoint", "/geos/{geo}/sharepoint"] {
        router = router
            .route(&format!("{host}/_api/contextinfo"), post(contextinfo))
            .route(
                &format!(
                    "{host}/_api/SP.UserProfiles.ProfileLoader.GetProfileLoader/CreatePersonalSiteEnqueueBulk"
                ),
                post(rest_enqueue),
            )
            .route(&format!("{host}/_vti_bin/client.svc/ProcessQuery"), post(process_query))
            .route(
                &format!("{host}/_api/SPO.Tenant/GetSiteAdministrators"),
                post(super::site_admins::administrators),
            );
    }
    router
}

/// SharePoint refuses more than this many users per enqueue call.
pub const MAX_USERS_PER_ENQUEUE: usize = 200;
const ACCESS_DENIED: &str =
    "Access denied. You do not have permission to perform this action or access this resource.";

async fn contextinfo(State(sim): State<Arc<Sim>>, uri: Uri, headers: HeaderMap) -> Response {
    let endpoint = "sharepoint.contextinfo";
    let (token, rate, geo) = match admit(&sim, &headers, &uri, endpoint) {
        Ok(t) => t,
        Err(r) => return r,
    };
    let digest = format!("0x{},{} +0000", crate::jose::guid().replace('-', "").to_uppercase(), sim.now());
    sim.digests.lock().unwrap().insert(digest.clone());
    let info = json!({
        "FormDigestTimeoutSeconds": 1800,
        "FormDigestValue": digest,
        "LibraryVersion": LIBRARY_VERSION,
        "SiteFullUrl": sim.sharepoint_resource_at(geo.as_deref()),
        "WebFullUrl": sim.sharepoint_resource_at(geo.as_deref()),
    });
    let body = if verbose(&headers) { json!({"d": {"GetContextWebInformation": info}}) } else { info };
    finish(&sim, endpoint, &token, rate, Json(body).into_response())
}

/// A digest is optional with OAuth (CLI for Microsoft 365 sends one anyway); if present it
/// must be one this host issued.
fn digest_ok(sim: &Sim, headers: &HeaderMap) -> bool {
    match headers.get("x-requestdigest").and_then(|v| v.to_str().ok()) {
        None => true,
        Some(d) => sim.digests.lock().unwrap().contains(d),
    }
}

/// Why an enqueue is refused before it reaches the tenant model.
fn enqueue_refusal(sim: &Sim, token: &TokenInfo, emails: &[String]) -> Option<(&'static str, String)> {
    if token.app_only() && sim.config.app_only_enqueue == AppOnlyEnqueue::Refuse {
        return Some(("System.UnauthorizedAccessException", ACCESS_DENIED.into()));
    }
    // Only a SharePoint (or Global) Administrator may ask for other people's sites.
    if !token.app_only() && !token.admin {
        return Some(("System.UnauthorizedAccessException", ACCESS_DENIED.into()));
    }
    if emails.is_empty() {
        return Some(("System.ArgumentException", "UserEmails must contain at least one value.".into()));
    }
    if emails.len() > MAX_USERS_PER_ENQUEUE {
        // Choice: the service's error for more than 200 users is undocumented; ours names the limit.
        return Some((
            "System.ArgumentException",
            format!(
                "The number of users ({}) exceeds the maximum of {MAX_USERS_PER_ENQUEUE} per request.",
                emails.len()
            ),
        ));
    }
    if emails.iter().any(|e| e.trim().is_empty()) {
        return Some(("System.ArgumentException", "UserEmails contains an empty value".into()));
    }
    None
}

/// Applies an enqueue accepted at the admin host of `geo`. Each geo's user-profile service knows
/// its own users only. Choice (what an enqueue at the wrong geo's host does is undocumented):
/// the request is accepted and a user of another geo is ignored — their site never appears — so
/// an operator that routes wrongly stalls visibly, and `wrong_geo` counts it.
fn apply_enqueue(sim: &Sim, token: &TokenInfo, emails: &[String], method: &str, geo: &HostGeo) {
    let now = sim.now();
    let here = geo.as_deref().unwrap_or(sim.central_location());
    // The batch rule, checked from the service's side: the previous request to this geo had its
    // last user's site still being created.
    let previous_last = {
        let stats = sim.stats.lock().unwrap();
        stats.enqueues.iter().rev().find(|e| e.geo == here).and_then(|e| e.users.last().cloned())
    };
    let mut tenant = sim.tenant.lock().unwrap();
    let (own, wrong_geo): (Vec<String>, Vec<String>) = emails.iter().cloned().partition(|e| {
        tenant.user(e, now).is_none_or(|u| sim.location_of(&u.spec).eq_ignore_ascii_case(here))
    });
    let while_in_flight = previous_last.is_some_and(|u| tenant.being_created(&u, now));
    let seed = sim.faults.lock().unwrap().config().seed;
    tenant.enqueue(&own, now, seed);
    drop(tenant);
    let at_ms = sim.started.elapsed().as_secs_f64() * 1000.0;
    sim.stats.lock().unwrap().enqueues.push(EnqueueRecord {
        while_in_flight,
        at_ms,
        at: now.to_string(),
        users: emails.to_vec(),
        token_kind: token.kind.clone(),
        method: method.into(),
        geo: here.to_string(),
        wrong_geo,
        replica: super::replica(),
    });
}

async fn rest_enqueue(State(sim): State<Arc<Sim>>, uri: Uri, headers: HeaderMap, body: String) -> Response {
    let endpoint = "sharepoint.enqueue.rest";
    let (token, rate, geo) = match admit(&sim, &headers, &uri, endpoint) {
        Ok(t) => t,
        Err(r) => return r,
    };
    let done = |r: Response| finish(&sim, endpoint, &token, rate.clone(), r);
    if !digest_ok(&sim, &headers) {
        return done(odata_error(
            &headers,
            StatusCode::FORBIDDEN,
            "-2130575252, Microsoft.SharePoint.SPException",
            "The security validation for this page is invalid and might be corrupted. Please use your web browser's Back button to try your operation again.",
        ));
    }
    let emails: Vec<String> = match serde_json::from_str::<Value>(&body) {
        Ok(v) => match v["emailIDs"].as_array() {
            Some(list) if list.iter().all(Value::is_string) => {
                list.iter().map(|e| e.as_str().expect("checked").to_string()).collect()
            }
            _ => {
                return done(odata_error(
                    &headers,
                    StatusCode::BAD_REQUEST,
                    "-1, Microsoft.SharePoint.Client.InvalidClientQueryException",
                    "The parameter emailIDs does not exist in method CreatePersonalSiteEnqueueBulk.",
                ));
            }
        },
        Err(_) => {
            return done(odata_error(
                &headers,
                StatusCode::BAD_REQUEST,
                "-1, Microsoft.SharePoint.Client.InvalidClientQueryException",
                "Invalid JSON. A token was not recognized in the JSON content.",
            ));
        }
    };
    match enqueue_refusal(&sim, &token, &emails) {
        Some(("System.UnauthorizedAccessException", message)) => {
            let mut r = odata_error(
                &headers,
                StatusCode::FORBIDDEN,
                "-2147024891, System.UnauthorizedAccessException",
                &message,
            );
            r.headers_mut().insert(
                "X-MSDAVEXT_Error",
                HeaderValue::from_static("917656; Access+denied.+Before+opening+files+in+this+location%2c+you+must+first+browse+to+the+web+site+and+select+the+option+to+login+automatically."),
            );
            done(r)
        }
        Some((kind, message)) => {
            done(odata_error(&headers, StatusCode::BAD_REQUEST, &format!("-2147024809, {kind}"), &message))
        }
        None => {
            apply_enqueue(&sim, &token, &emails, "ProfileLoader", &geo);
            // The body shape is undocumented; clients must not depend on it.
            let body = if verbose(&headers) {
                json!({"d": {"CreatePersonalSiteEnqueueBulk": null}})
            } else {
                json!({"odata.null": true})
            };
            done(Json(body).into_response())
        }
    }
}

fn spo_operation(sim: &Sim, identity: &str) -> Value {
    json!({
        "_ObjectType_": "Microsoft.Online.SharePoint.TenantAdministration.SpoOperation",
        "_ObjectIdentity_": identity,
        // Choice: enqueueing is synchronous in the model, so the operation is complete at once.
        "IsComplete": sim.operations.lock().unwrap().contains_key(identity),
        "HasTimedout": false,
        "PollingInterval": 15000,
    })
}

async fn process_query(State(sim): State<Arc<Sim>>, uri: Uri, headers: HeaderMap, body: String) -> Response {
    let endpoint = "sharepoint.processquery";
    let (token, rate, geo) = match admit(&sim, &headers, &uri, endpoint) {
        Ok(t) => t,
        Err(r) => return r,
    };
    let done = |r: Response| finish(&sim, endpoint, &token, rate.clone(), r);
    let request = match csom::parse(&body) {
        Ok(r) => r,
        Err(e) => {
            return done(csom_reply(
                &sim,
                Some(("Microsoft.SharePoint.Client.InvalidClientQueryException", &e, -2146233088)),
                vec![],
            ));
        }
    };
    if super::site_admins::is_settings(&request) {
        let (counted, answer) = super::site_admins::answer(&sim, &token, &request, &geo);
        // Counted under its own name too: what configuring sites costs the tenant.
        sim.stats.lock().unwrap().requests.entry(counted.into()).and_modify(|n| *n += 1).or_insert(1);
        return done(answer);
    }
    let mut results = Vec::new();
    let calls = request.calls();
    for (id, target, call) in &calls {
        let method = match (*target, call.name.as_str()) {
            ("ProfileLoader", "CreatePersonalSiteEnqueueBulk") => "ProfileLoaderCsom",
            ("Tenant", "RequestPersonalSites") => "RequestPersonalSites",
            _ => {
                let msg = format!("Method \"{}\" does not exist on {target}.", call.name);
                return done(csom_reply(
                    &sim,
                    Some(("Microsoft.SharePoint.Client.InvalidClientQueryException", &msg, -1)),
                    vec![],
                ));
            }
        };
        if let Some((kind, message)) = enqueue_refusal(&sim, &token, &call.strings) {
            let (message, code) = if kind == "System.UnauthorizedAccessException" {
                ("Attempted to perform an unauthorized operation.".to_string(), -2147024891)
            } else {
                (message, -2147024809)
            };
            return done(csom_reply(&sim, Some((kind, &message, code)), vec![]));
        }
        apply_enqueue(&sim, &token, &call.strings, method, &geo);
        if method == "RequestPersonalSites" {
            let identity = format!("{}|{}", crate::jose::guid(), id);
            sim.operations.lock().unwrap().insert(identity.clone(), sim.now());
            for a in &request.actions {
                if let Action::Query { id: qid, path } = a
                    && path == id
                {
                    results.push(Value::from(qid.parse::<i64>().unwrap_or(0)));
                    results.push(spo_operation(&sim, &identity));
                }
            }
        }
    }
    // Reloading an operation by identity (how PnP polls IsComplete).
    for a in &request.actions {
        if let Action::Query { id, path } = a
            && let Some(ObjectPath::Identity { name }) = request.paths.get(path)
        {
            results.push(Value::from(id.parse::<i64>().unwrap_or(0)));
            results.push(spo_operation(&sim, name));
        }
    }
    done(csom_reply(&sim, None, results))
}
