//! Microsoft Graph v1.0: users, their drives, JSON batching and the tenant-wide site listing.

use std::collections::HashSet;
use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};

use super::model::LookupQuirk;
use super::{Fault, Service, Sim, TokenError, percent_decode};

pub(super) fn routes() -> Router<Arc<Sim>> {
    Router::new()
        .route("/graph/v1.0/users", get(list_users))
        .route("/graph/v1.0/users/{upn}", get(user))
        .route("/graph/v1.0/users/{upn}/drive", get(drive))
        .route("/graph/v1.0/$batch", post(batch))
        .route("/graph/v1.0/sites/getAllSites", get(all_sites))
        .route("/graph/v1.0/sites", get(root_sites))
}

const CONTENT_TYPE: &str =
    "application/json;odata.metadata=minimal;odata.streaming=true;IEEE754Compatible=false;charset=utf-8";

/// One Graph answer, before it becomes an HTTP response or a `$batch` item.
pub(super) struct Answer {
    status: u16,
    body: Value,
    retry_after: Option<String>,
}

impl Answer {
    pub(super) fn ok(body: Value) -> Answer {
        Answer { status: 200, body, retry_after: None }
    }

    fn into_response(self) -> Response {
        let mut r = (
            StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            self.body.to_string(),
        )
            .into_response();
        r.headers_mut().insert(header::CONTENT_TYPE, CONTENT_TYPE.parse().expect("static header"));
        if let Some(ra) = self.retry_after {
            r.headers_mut().insert(header::RETRY_AFTER, ra.parse().expect("digits"));
        }
        r
    }
}

pub(super) fn error(sim: &Sim, status: u16, code: &str, message: &str) -> Answer {
    let id = sim.correlation();
    Answer {
        status,
        body: json!({"error": {"code": code, "message": message, "innerError": {
            "date": sim.now().to_string(), "request-id": id, "client-request-id": id
        }}}),
        retry_after: None,
    }
}

fn throttled(sim: &Sim, fault: Fault) -> Answer {
    Answer {
        retry_after: Some(fault.header()),
        ..error(
            sim,
            429,
            "TooManyRequests",
            "Too many requests. Please retry after the time given in Retry-After.",
        )
    }
}

fn unauthorized(sim: &Sim, e: TokenError) -> Answer {
    let message = match e {
        TokenError::Missing => "Access token is empty.",
        TokenError::Invalid => "IDX14100: JWT is not well formed or its signature is invalid.",
        TokenError::Expired => "Lifetime validation failed, the token is expired.",
        TokenError::WrongAudience => "Access token validation failure. Invalid audience.",
    };
    error(sim, 401, "InvalidAuthenticationToken", message)
}

/// What a Graph call needs the token to grant (any one of them).
const READ_USERS: &[&str] = &["User.Read.All", "User.ReadWrite.All", "Directory.Read.All"];
const READ_SITES: &[&str] =
    &["Sites.Read.All", "Files.Read.All", "Sites.ReadWrite.All", "Sites.FullControl.All"];
/// Listing sites (the geos' root sites) needs a Sites permission: Files.Read.All reads drives only.
const LIST_SITES: &[&str] = &["Sites.Read.All", "Sites.ReadWrite.All", "Sites.FullControl.All"];

/// Graph's answer to a token without the permission a call needs.
fn denied(sim: &Sim) -> Answer {
    error(sim, 403, "Authorization_RequestDenied", "Insufficient privileges to complete the operation.")
}

/// Runs one authenticated, possibly throttled, Graph call and records it.
pub(super) fn call(
    sim: &Sim,
    headers: &HeaderMap,
    endpoint: &str,
    needs: &[&str],
    f: impl FnOnce(&Sim) -> Answer,
) -> Response {
    let token = match sim.verify_bearer(headers, &sim.graph_resource()) {
        Ok(t) => t,
        Err(e) => {
            let a = unauthorized(sim, e);
            sim.record(endpoint, a.status, None, None);
            return a.into_response();
        }
    };
    let fault = sim.draw(Service::Graph);
    let answer = match fault {
        Some(f) => throttled(sim, f),
        None if !token.grants(needs) => denied(sim),
        None => f(sim),
    };
    sim.record(endpoint, answer.status, fault, Some(&token.client_id));
    answer.into_response()
}

/// A query parameter's decoded value.
pub(super) fn param(query: &str, name: &str) -> Option<String> {
    query.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=')?;
        (percent_decode(k) == name).then(|| percent_decode(v))
    })
}

/// `GET /users?$select=…&$top=…`, paged by `@odata.nextLink` (`$skiptoken`).
async fn list_users(State(sim): State<Arc<Sim>>, headers: HeaderMap, RawQuery(query): RawQuery) -> Response {
    let query = query.unwrap_or_default();
    call(&sim, &headers, "graph.users", READ_USERS, |sim| {
        let top: usize = param(&query, "$top").and_then(|t| t.parse().ok()).unwrap_or(100).clamp(1, 999);
        let skip: usize = param(&query, "$skiptoken").and_then(|t| t.parse().ok()).unwrap_or(0);
        let select = param(&query, "$select").unwrap_or_else(|| "id,displayName,userPrincipalName".into());
        let now = sim.now();
        let (page, total) = {
            let mut tenant = sim.tenant.lock().unwrap();
            let page: Vec<String> = tenant.page(skip, top).iter().map(|u| u.spec.upn.clone()).collect();
            // Each user as a lookup of them answers, cut down to the fields asked for.
            let page: Vec<Value> = page
                .iter()
                .filter_map(|upn| tenant.user(upn, now).map(user_json))
                .map(|full| selected(&full, &select))
                .collect();
            (page, tenant.len())
        };
        let mut body =
            json!({"@odata.context": "https://graph.microsoft.com/v1.0/$metadata#users", "value": page});
        if skip + top < total {
            body["@odata.nextLink"] = Value::from(format!(
                "{}/v1.0/users?$select={select}&$top={top}&$skiptoken={}",
                sim.graph_resource(),
                skip + top
            ));
        }
        Answer::ok(body)
    })
}

/// The fields of `full` named in a `$select` list.
fn selected(full: &Value, select: &str) -> Value {
    let fields = select.split(',').map(str::trim).filter(|f| !f.is_empty());
    Value::Object(fields.filter_map(|f| full.get(f).map(|v| (f.to_string(), v.clone()))).collect())
}

async fn user(State(sim): State<Arc<Sim>>, Path(upn): Path<String>, headers: HeaderMap) -> Response {
    call(&sim, &headers, "graph.user", READ_USERS, |sim| get_user(sim, &upn))
}

async fn drive(State(sim): State<Arc<Sim>>, Path(upn): Path<String>, headers: HeaderMap) -> Response {
    call(&sim, &headers, "graph.drive", READ_SITES, |sim| get_drive(sim, &upn))
}

fn no_such_user(sim: &Sim, upn: &str) -> Answer {
    error(
        sim,
        404,
        "Request_ResourceNotFound",
        &format!(
            "Resource '{upn}' does not exist or one of its queried reference-property objects are not present."
        ),
    )
}

fn get_user(sim: &Sim, upn: &str) -> Answer {
    let now = sim.now();
    let mut tenant = sim.tenant.lock().unwrap();
    let Some(u) = tenant.user(upn, now) else { return no_such_user(sim, upn) };
    let mut body = user_json(u);
    body["@odata.context"] = "https://graph.microsoft.com/v1.0/$metadata#users/$entity".into();
    Answer::ok(body)
}

/// A user as Graph shows them.
fn user_json(u: &super::model::SimUser) -> Value {
    json!({
        "id": u.id,
        "userPrincipalName": u.spec.upn,
        "mail": u.spec.upn,
        "displayName": u.spec.upn.split('@').next().unwrap_or_default(),
        "accountEnabled": u.spec.sign_in_allowed,
        "preferredDataLocation": u.spec.preferred_data_location,
        "assignedPlans": [{
            "assignedDateTime": "2026-01-01T00:00:00Z",
            "capabilityStatus": if u.spec.licensed { "Enabled" } else { "Deleted" },
            "service": "SharePoint",
            "servicePlanId": "5dbe027f-2339-4123-9542-606e4d348a72"
        }]
    })
}

fn get_drive(sim: &Sim, upn: &str) -> Answer {
    let now = sim.now();
    let mut tenant = sim.tenant.lock().unwrap();
    let Some(u) = tenant.user(upn, now) else { return no_such_user(sim, upn) };
    match &u.site {
        _ if u.spec.lookup_quirk == LookupQuirk::Broken => general_exception(sim),
        super::SiteState::Created { url } => Answer::ok(json!({
            "@odata.context": "https://graph.microsoft.com/v1.0/$metadata#drives/$entity",
            "id": format!("b!{}", u.id),
            "driveType": "business",
            "name": "OneDrive",
            "webUrl": format!("{url}Documents"),
            "owner": {"user": {"id": u.id, "displayName": u.spec.upn}},
        })),
        // Choice: the reference lists 400 "Unable to retrieve user's mysite URL." as seen for
        // users without a SharePoint licence, for licensed users without a OneDrive yet, and with
        // code `UnknownError` and other statuses; the simulator gives it to unlicensed users and
        // to the users whose quirk says so. A sign-in-blocked user gets the documented 404: only
        // `accountEnabled` reveals them.
        _ if !u.spec.licensed || u.spec.lookup_quirk == LookupQuirk::MysiteBadRequest => {
            error(sim, 400, "BadRequest", MYSITE_UNKNOWN)
        }
        _ if u.spec.lookup_quirk == LookupQuirk::MysiteUnknownError => {
            error(sim, 500, "UnknownError", MYSITE_UNKNOWN)
        }
        _ => error(sim, 404, "ResourceNotFound", "User's mysite not found."),
    }
}

const MYSITE_UNKNOWN: &str = "Unable to retrieve user's mysite URL.";

fn general_exception(sim: &Sim) -> Answer {
    error(sim, 500, "generalException", "An unexpected error occurred.")
}

/// A `$batch` item's path as segments, `users('{upn}')` read as `users`, `{upn}`.
pub(crate) fn item_segments(url: &str) -> Result<Vec<String>, String> {
    let path = url.split('?').next().unwrap_or_default().trim_start_matches('/');
    let mut segments: Vec<String> = path.split('/').map(percent_decode).collect();
    if let Some(key) =
        segments[0].strip_prefix("users(").and_then(|k| k.strip_suffix(')')).map(str::to_string)
    {
        let upn =
            super::profiles::string_literal(&key).map_err(|why| format!("Invalid key '{key}': {why}."))?;
        segments.splice(0..1, ["users".to_string(), upn]);
    }
    Ok(segments)
}

/// `/users/{upn}` or `/users/{upn}/drive` (or the key form `/users('{upn}')…`), as written in a
/// `$batch` item: the path split into segments first, each then percent-decoded, as Graph does.
fn route_item(sim: &Sim, token: &super::TokenInfo, url: &str) -> Answer {
    let path = url.split('?').next().unwrap_or_default().trim_start_matches('/');
    let segments = match item_segments(url) {
        Ok(s) => s,
        Err(why) => return error(sim, 400, "BadRequest", &why),
    };
    let parts: Vec<&str> = segments.iter().map(String::as_str).collect();
    match parts.as_slice() {
        ["users", _] if !token.grants(READ_USERS) => denied(sim),
        ["users", _, "drive"] if !token.grants(READ_SITES) => denied(sim),
        ["users", upn] => get_user(sim, upn),
        ["users", upn, "drive"] => get_drive(sim, upn),
        _ => error(sim, 400, "BadRequest", &format!("Resource not found for the segment '{path}'.")),
    }
}

async fn batch(State(sim): State<Arc<Sim>>, headers: HeaderMap, body: String) -> Response {
    let endpoint = "graph.batch";
    let token = match sim.verify_bearer(&headers, &sim.graph_resource()) {
        Ok(t) => t,
        Err(e) => {
            let a = unauthorized(&sim, e);
            sim.record(endpoint, a.status, None, None);
            return a.into_response();
        }
    };
    let reject = |message: &str| {
        let a = error(&sim, 400, "BadRequest", message);
        sim.record(endpoint, 400, None, Some(&token.client_id));
        a.into_response()
    };
    let Ok(parsed) = serde_json::from_str::<Value>(&body) else {
        return reject("Unable to read JSON request payload.");
    };
    let Some(requests) = parsed["requests"].as_array() else {
        return reject("Write request id : null does not contain a 'requests' array.");
    };
    if requests.len() > 20 {
        return reject("The number of requests in the batch exceeds the limit of 20.");
    }
    let mut ids = HashSet::new();
    for r in requests {
        let id = r["id"].as_str().unwrap_or_default();
        if id.is_empty() || !ids.insert(id.to_string()) {
            return reject("Request id must be unique and not empty.");
        }
    }
    let mut worst: Option<Fault> = None;
    let mut responses: Vec<Value> = requests
        .iter()
        .map(|r| {
            let id = r["id"].as_str().unwrap_or_default();
            let answer = if r["method"].as_str().unwrap_or("GET") != "GET" {
                error(&sim, 405, "BadRequest", "The simulator answers GET items only.")
            } else if let Some(f) = sim.draw(Service::Graph) {
                worst = Some(match worst {
                    Some(w) if w.retry_after >= f.retry_after => w,
                    _ => f,
                });
                throttled(&sim, f)
            } else {
                route_item(&sim, &token, r["url"].as_str().unwrap_or_default())
            };
            let mut headers = json!({"Content-Type": CONTENT_TYPE});
            if let Some(ra) = &answer.retry_after {
                headers["Retry-After"] = Value::from(ra.clone());
            }
            json!({"id": id, "status": answer.status, "headers": headers, "body": answer.body})
        })
        .collect();
    sim.faults.lock().unwrap().shuffle(&mut responses);
    {
        let mut stats = sim.stats.lock().unwrap();
        *stats.requests.entry("graph.batch.items".into()).or_default() += requests.len() as u64;
        // …and by kind, to see where a client's lookups go.
        for r in requests {
            let path = r["url"].as_str().unwrap_or_default().split('?').next().unwrap_or_default();
            let kind =
                if path.ends_with("/drive") { "graph.batch.items.drive" } else { "graph.batch.items.user" };
            *stats.requests.entry(kind.into()).or_default() += 1;
        }
    }
    sim.record(endpoint, 200, worst, Some(&token.client_id));
    Answer::ok(json!({"responses": responses})).into_response()
}

/// `GET /sites/getAllSites?$filter=isPersonalSite eq true`, paged by `@odata.nextLink`
/// (`$skiptoken`: an offset, so a site created between two pages can shift another past the
/// reader, as a listing of a changing tenant may). Personal sites show to app-only tokens only
/// (reported: delegated callers get none), new ones after `Config::listing_lag`.
async fn all_sites(State(sim): State<Arc<Sim>>, headers: HeaderMap, RawQuery(query): RawQuery) -> Response {
    let query = query.unwrap_or_default();
    let token = sim.verify_bearer(&headers, &sim.graph_resource()).ok();
    let app_only = token.as_ref().is_some_and(|t| t.app_only());
    call(&sim, &headers, "graph.sites", LIST_SITES, |sim| {
        if param(&query, "$filter").is_some_and(|f| f.replace([' ', '+'], "") != "isPersonalSiteeqtrue") {
            return error(
                sim,
                400,
                "BadRequest",
                "The simulator supports only $filter=isPersonalSite eq true.",
            );
        }
        let top: usize = param(&query, "$top").and_then(|t| t.parse().ok()).unwrap_or(200).clamp(1, 999);
        let skip: usize = param(&query, "$skiptoken").and_then(|t| t.parse().ok()).unwrap_or(0);
        let now = sim.now();
        let sites =
            if app_only { sim.tenant.lock().unwrap().sites(now, sim.config.listing_lag) } else { Vec::new() };
        let page: Vec<Value> = sites
            .iter()
            .skip(skip)
            .take(top)
            .map(|(name, url)| {
                let url = url.trim_end_matches('/');
                json!({"id": format!("site-{}", url.rsplit('/').next().unwrap_or_default()), "webUrl": url, "isPersonalSite": true, "name": name})
            })
            .collect();
        let mut body =
            json!({"@odata.context": "https://graph.microsoft.com/v1.0/$metadata#sites", "value": page});
        if skip + top < sites.len() {
            body["@odata.nextLink"] = Value::from(format!(
                "{}/v1.0/sites/getAllSites?$filter=isPersonalSite%20eq%20true&$top={top}&$skiptoken={}",
                sim.graph_resource(),
                skip + top
            ));
        }
        Answer::ok(body)
    })
}

/// `GET /sites?$filter=siteCollection/root ne null`: one root site per geo, with its
/// `dataLocationCode` (empty in a single-geo tenant), as Multi-Geo discovery reads it.
async fn root_sites(State(sim): State<Arc<Sim>>, headers: HeaderMap, RawQuery(query): RawQuery) -> Response {
    let query = query.unwrap_or_default();
    call(&sim, &headers, "graph.sites.roots", LIST_SITES, |sim| {
        let filter = param(&query, "$filter");
        if filter.is_none_or(|f| f.replace([' ', '+'], "") != "siteCollection/rootnenull") {
            return error(
                sim,
                400,
                "BadRequest",
                "The simulator lists sites only with $filter=siteCollection/root ne null.",
            );
        }
        let value: Vec<Value> = sim
            .root_sites()
            .into_iter()
            .map(|(location, web_url)| {
                json!({"id": format!("{}-root", location.to_lowercase()), "webUrl": web_url,
                       "siteCollection": {"hostname": web_url.trim_start_matches("https://"),
                                          "dataLocationCode": location, "root": {}}})
            })
            .collect();
        Answer::ok(
            json!({"@odata.context": "https://graph.microsoft.com/v1.0/$metadata#sites", "value": value}),
        )
    })
}
