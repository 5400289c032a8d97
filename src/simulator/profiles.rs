//! User profiles on each admin host: `GetPropertiesFor` with `SPS-PersonalSiteInstantiationState`
//! and the `SPSSITEERROR` placeholder. Each geo's profile service knows its own users only.

use std::sync::Arc;

use axum::Json;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::admin_host::{admit, finish, odata_error, verbose};
use super::{Sim, SiteState, percent_decode};

/// Every admin host's `PeopleManager`: the central geo's and each satellite's.
pub(super) fn routes() -> axum::Router<Arc<Sim>> {
    let mut router = axum::Router::new();
    for host in ["/sharepoint", "/geos/{geo}/sharepoint"] {
        router = router.route(
            &format!("{host}/_api/SP.UserProfiles.PeopleManager/{{*call}}"),
            axum::routing::get(profile),
        );
    }
    router
}

/// How a user's account name is claims-encoded.
pub(crate) const CLAIMS_PREFIX: &str = "i:0#.f|membership|";

/// The account a profile read's query names: its `@v` alias, percent-decoded, parsed as SharePoint
/// parses it (an OData string literal, quotes inside doubled). The error gives the alias and why.
pub(crate) fn account_of(query: &str) -> Result<String, (String, &'static str)> {
    let alias = query
        .split('&')
        .find_map(|kv| {
            kv.split_once('=').filter(|(k, _)| percent_decode(k) == "@v").map(|(_, v)| percent_decode(v))
        })
        .unwrap_or_default();
    string_literal(&alias).map_err(|why| (alias, why))
}

/// The text of an OData string literal (`'o''neil'` → `o'neil`): quoted, and a quote inside is
/// doubled; anything else (an unescaped quote) is refused.
pub(crate) fn string_literal(s: &str) -> Result<String, &'static str> {
    let inner = s
        .strip_prefix('\'')
        .and_then(|r| r.strip_suffix('\''))
        .filter(|_| s.len() >= 2)
        .ok_or("a string literal is quoted with '")?;
    let mut out = String::with_capacity(inner.len());
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        if c == '\'' && chars.next() != Some('\'') {
            return Err("a quote inside a string literal must be doubled");
        }
        out.push(c);
    }
    Ok(out)
}

async fn profile(
    State(sim): State<Arc<Sim>>,
    uri: Uri,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response {
    let endpoint = "sharepoint.profile";
    let (token, rate, geo) = match admit(&sim, &headers, &uri, endpoint) {
        Ok(t) => t,
        Err(r) => return r,
    };
    let done = |r: Response| finish(&sim, endpoint, &token, rate.clone(), r);
    let call = uri.path().split_once("/SP.UserProfiles.PeopleManager/").map_or("", |(_, c)| c);
    if !call.starts_with("GetPropertiesFor(accountName=@v)") {
        return done(odata_error(
            &headers,
            StatusCode::BAD_REQUEST,
            "-1, Microsoft.SharePoint.Client.InvalidClientQueryException",
            "The simulator answers GetPropertiesFor(accountName=@v) only.",
        ));
    }
    let account = match account_of(&query.unwrap_or_default()) {
        Ok(a) => a,
        Err((alias, why)) => {
            // Counted on its own too: tests assert the client never sends one.
            sim.record("sharepoint.profile.bad-literal", 400, None, None);
            return done(odata_error(
                &headers,
                StatusCode::BAD_REQUEST,
                "-1, Microsoft.SharePoint.Client.InvalidClientQueryException",
                &format!("The expression \"{alias}\" is not valid: {why}."),
            ));
        }
    };
    let upn = account.strip_prefix(CLAIMS_PREFIX).unwrap_or_default().to_string();
    // (The claims prefix is what the client puts before the name.)
    let now = sim.now();
    let mut tenant = sim.tenant.lock().unwrap();
    let my_base = tenant.my_base().to_string();
    let here = geo.as_deref().unwrap_or(sim.central_location()).to_string();
    // Each geo has its own user-profile service: another geo's user has no profile here.
    let Some(u) =
        tenant.user(&upn, now).filter(|u| sim.location_of(&u.spec).eq_ignore_ascii_case(&here)).cloned()
    else {
        drop(tenant);
        // Choice: an unknown account gives an empty (null) profile, not an error.
        let body = if verbose(&headers) { json!({"d": null}) } else { json!({"odata.null": true}) };
        return done(Json(body).into_response());
    };
    drop(tenant);
    let (personal_url, personal_space) = match &u.site {
        SiteState::Created { url } => {
            (url.clone(), format!("/personal/{}/", super::model::personal_space_name(u.spec.site_name())))
        }
        // While the timer job works, the profile shows the SPSSITEERROR placeholder instead of
        // the personal site (choice: in PersonalSpace; PersonalUrl is the profile page).
        SiteState::Enqueued { .. } => {
            (format!("{my_base}/Person.aspx?accountname={account}"), "SPSSITEERROR".into())
        }
        _ => (format!("{my_base}/Person.aspx?accountname={account}"), String::new()),
    };
    let property = |k: &str, v: String| json!({"Key": k, "Value": v, "ValueType": "Edm.String"});
    let properties = vec![
        property("AccountName", account.clone()),
        property("PersonalSpace", personal_space),
        property("SPS-PersonalSiteInstantiationState", u.site.code().to_string()),
        property(
            "SPS-PersonalSiteCapabilities",
            if matches!(u.site, SiteState::Created { .. }) { "36" } else { "0" }.into(),
        ),
    ];
    let profile = |props: Value| {
        json!({"AccountName": account, "DisplayName": u.spec.upn, "Email": u.spec.upn,
               "PersonalUrl": personal_url, "UserProfileProperties": props})
    };
    let body = if verbose(&headers) {
        json!({"d": profile(json!({"results": properties}))})
    } else {
        profile(Value::Array(properties))
    };
    done(Json(body).into_response())
}
