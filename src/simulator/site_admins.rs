//! A OneDrive's site collection administrators and storage quota at the admin host: CSOM
//! `Tenant.GetSitePropertiesByUrl` (+ `StorageMaximumLevel` and `Update()`), `Tenant.SetSiteAdmin`,
//! and REST `SPO.Tenant/GetSiteAdministrators`, with Microsoft's answer shapes (protocol notes
//! §14): a site that is not there yet is `SpoNoSiteException` "Cannot get site …" (-1); an
//! unknown user "The user does not exist or is not unique." (-2130575276, `SPException`); a
//! delegated user who is not a SharePoint administrator "Attempted to perform an unauthorized
//! operation." (`UnauthorizedAccessException`). Throttling and token checks are `admit`'s, as for
//! every admin-host call.
//!
//! Choices where Microsoft says nothing: each geo's admin host finds the sites of its own geo only
//! ("Cannot get site …" for another geo's: an operator that routes wrongly stalls visibly); the
//! owner is always among the administrators and cannot be removed; a quota is stored as asked (the
//! service rounds values under 1 GB up to 1 GB); a new site is found `admin_lag` after it was made.

use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::Sim;
use super::admin_host::{HostGeo, admit, csom_reply, finish, odata_error};
use super::bearer::TokenInfo;
use super::csom::{Action, ObjectPath, Request};

const NO_SITE: &str = "Microsoft.Online.SharePoint.Common.SpoNoSiteException";
const SP_EXCEPTION: &str = "Microsoft.SharePoint.SPException";
const USER_NOT_FOUND: &str = "The user does not exist or is not unique.";
const UNAUTHORIZED: &str = "System.UnauthorizedAccessException";

/// Whether `request` is one of the settings calls (then [`answer`] answers it).
pub(super) fn is_settings(request: &Request) -> bool {
    request
        .calls()
        .iter()
        .any(|(_, _, c)| matches!(c.name.as_str(), "GetSitePropertiesByUrl" | "SetSiteAdmin"))
}

/// The owner's site id as CSOM spells a `Guid`.
fn site_id(id: &str) -> String {
    format!("/Guid({id})/")
}

/// Answers a settings `ProcessQuery`.
pub(super) fn answer(
    sim: &Sim,
    token: &TokenInfo,
    request: &Request,
    geo: &HostGeo,
) -> (&'static str, Response) {
    let here = geo.as_deref().unwrap_or(sim.central_location()).to_string();
    if !token.app_only() && !token.admin {
        let e = Some((UNAUTHORIZED, "Attempted to perform an unauthorized operation.", -2147024891));
        return ("sharepoint.settings.refused", csom_reply(sim, e, vec![]));
    }
    let now = sim.now();
    let calls = request.calls();
    let mut tenant = sim.tenant.lock().unwrap();
    if let Some((_, _, call)) = calls.iter().find(|(_, _, c)| c.name == "SetSiteAdmin") {
        let [url, user, flag, ..] = call.strings.as_slice() else {
            let e = Some((
                "System.ArgumentException",
                "SetSiteAdmin takes url, loginName, isSiteAdmin.",
                -2147024809,
            ));
            return ("sharepoint.settings.setsiteadmin", csom_reply(sim, e, vec![]));
        };
        // `i:0#.f|membership|alice@contoso.com` or the plain principal name.
        let login = user.rsplit('|').next().unwrap_or(user).trim().to_lowercase();
        let known = tenant.has_user(&login);
        let Some(owner) = tenant
            .site_owner(url, now, sim.config.admin_lag)
            .filter(|o| sim.location_of(&o.spec).eq_ignore_ascii_case(&here))
        else {
            let message = format!("Cannot get site {url}.");
            return (
                "sharepoint.settings.setsiteadmin",
                csom_reply(sim, Some((NO_SITE, &message, -1)), vec![]),
            );
        };
        if !known {
            let e = Some((SP_EXCEPTION, USER_NOT_FOUND, -2130575276));
            return ("sharepoint.settings.setsiteadmin", csom_reply(sim, e, vec![]));
        }
        if login != super::model::key(&owner.spec.upn) {
            if flag == "true" {
                owner.admins.insert(login.clone());
            } else {
                owner.admins.remove(&login);
            }
        }
        let user = json!({"_ObjectType_": "SP.User", "LoginName": format!("i:0#.f|membership|{login}"), "IsSiteAdmin": flag == "true"});
        return ("sharepoint.settings.setsiteadmin", csom_reply(sim, None, vec![user]));
    }
    // GetSitePropertiesByUrl: read, or set the quota and Update().
    let Some((props_id, _, call)) = calls.iter().find(|(_, _, c)| c.name == "GetSitePropertiesByUrl") else {
        return ("sharepoint.settings", csom_reply(sim, None, vec![]));
    };
    let url = call.strings.first().cloned().unwrap_or_default();
    let Some(owner) = tenant
        .site_owner(&url, now, sim.config.admin_lag)
        .filter(|o| sim.location_of(&o.spec).eq_ignore_ascii_case(&here))
    else {
        let message = format!("Cannot get site {url}.");
        return ("sharepoint.settings.read", csom_reply(sim, Some((NO_SITE, &message, -1)), vec![]));
    };
    let quota = calls
        .iter()
        .find(|(_, _, c)| c.name == "set:StorageMaximumLevel")
        .and_then(|(_, _, c)| c.strings.first()?.parse::<i64>().ok());
    let update = request.paths.values().any(
        |p| matches!(p, ObjectPath::Method { parent, call } if parent == props_id && call.name == "Update"),
    );
    if let (Some(mb), true) = (quota, update) {
        owner.quota_mb = mb;
        let mut results = Vec::new();
        for a in &request.actions {
            if let Action::Query { id, path } = a
                && path != props_id
            {
                results.push(Value::from(id.parse::<i64>().unwrap_or(0)));
                results.push(json!({"_ObjectType_": "Microsoft.Online.SharePoint.TenantAdministration.SpoOperation", "IsComplete": true, "PollingInterval": 5000}));
            }
        }
        return ("sharepoint.settings.setquota", csom_reply(sim, None, results));
    }
    let props = json!({
        "_ObjectType_": "Microsoft.Online.SharePoint.TenantAdministration.SiteProperties",
        "Url": url,
        "SiteId": site_id(&owner.id),
        "Owner": owner.spec.upn,
        "StorageMaximumLevel": owner.quota_mb,
    });
    let mut results = Vec::new();
    for a in &request.actions {
        if let Action::Query { id, path } = a
            && path == props_id
        {
            results.push(Value::from(id.parse::<i64>().unwrap_or(0)));
            results.push(props.clone());
        }
    }
    ("sharepoint.settings.read", csom_reply(sim, None, results))
}

#[derive(serde::Deserialize)]
pub(super) struct SiteQuery {
    #[serde(rename = "siteId")]
    site_id: Option<String>,
}

/// `POST …/_api/SPO.Tenant/GetSiteAdministrators?siteId='<guid>'`.
pub(super) async fn administrators(
    State(sim): State<Arc<Sim>>,
    uri: Uri,
    headers: HeaderMap,
    Query(q): Query<SiteQuery>,
) -> Response {
    let endpoint = "sharepoint.settings.admins";
    let (token, rate, geo) = match admit(&sim, &headers, &uri, endpoint) {
        Ok(t) => t,
        Err(r) => return r,
    };
    let done = |r: Response| finish(&sim, endpoint, &token, rate.clone(), r);
    if !token.app_only() && !token.admin {
        return done(odata_error(
            &headers,
            StatusCode::FORBIDDEN,
            "-2147024891, System.UnauthorizedAccessException",
            "Attempted to perform an unauthorized operation.",
        ));
    }
    let id = q.site_id.unwrap_or_default().trim_matches('\'').to_ascii_lowercase();
    let tenant = sim.tenant.lock().unwrap();
    let here = geo.as_deref().unwrap_or(sim.central_location()).to_string();
    let Some(owner) = tenant.by_id(&id).filter(|o| sim.location_of(&o.spec).eq_ignore_ascii_case(&here))
    else {
        return done(odata_error(
            &headers,
            StatusCode::NOT_FOUND,
            "-1, Microsoft.Online.SharePoint.Common.SpoNoSiteException",
            &format!("Cannot get site {id}."),
        ));
    };
    let entry = |upn: &str| json!({"email": upn, "loginName": format!("i:0#.f|membership|{upn}"), "name": super::model::display_name(upn), "userPrincipalName": upn});
    let owner_upn = super::model::key(&owner.spec.upn);
    let value: Vec<Value> =
        std::iter::once(entry(&owner_upn)).chain(owner.admins.iter().map(|a| entry(a))).collect();
    done((StatusCode::OK, axum::Json(json!({"value": value}))).into_response())
}
