//! What every admin-host endpoint shares: which geo's host a request reached, authentication,
//! blocking, the per-minute quota and injected throttling (`admit`), counting (`finish`), and the
//! error shapes (OData, CSOM `ErrorInfo`). The enqueue (`sharepoint`), the settings calls
//! (`site_admins`) and the profiles (`profiles`) build on it.

use axum::Json;
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::{Fault, Service, Sim, TokenError, TokenInfo};

/// The geo whose admin host a request reached (`None`: the central one's).
pub(super) type HostGeo = Option<String>;

pub(super) fn host_geo(sim: &Sim, uri: &Uri) -> Result<HostGeo, Response> {
    sim.host_geo(uri.path())
        .map(|g| g.map(str::to_string))
        .map_err(|()| (StatusCode::NOT_FOUND, "no such geo in the Microsoft 365 simulator\n").into_response())
}

const SCHEMA_VERSION: &str = "15.0.0.0";
pub(super) const LIBRARY_VERSION: &str = "16.0.26000.12000";

pub(super) fn verbose(headers: &HeaderMap) -> bool {
    headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()).is_some_and(|a| a.contains("odata=verbose"))
}

/// An OData error in the shape the request asked for (verbose `error`, else `odata.error`).
pub(super) fn odata_error(headers: &HeaderMap, status: StatusCode, code: &str, message: &str) -> Response {
    let inner = json!({"code": code, "message": {"lang": "en-US", "value": message}});
    let body = if verbose(headers) { json!({"error": inner}) } else { json!({"odata.error": inner}) };
    (status, Json(body)).into_response()
}

fn with_retry_after(mut r: Response, fault: Fault) -> Response {
    r.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_str(&fault.header()).expect("digits"));
    r
}

/// Authenticates, applies blocking, quota and injected throttling. `Err` is the finished response.
/// `RateLimit-*` headers to add to a response.
type RateHeaders = Vec<(&'static str, String)>;

pub(super) fn admit(
    sim: &Sim,
    headers: &HeaderMap,
    uri: &Uri,
    endpoint: &str,
) -> Result<(TokenInfo, RateHeaders, HostGeo), Response> {
    let geo = host_geo(sim, uri)?;
    // A token is for one admin host: another geo's is refused like any wrong audience.
    let token = match sim.verify_bearer(headers, &sim.sharepoint_resource_at(geo.as_deref())) {
        Ok(t) => t,
        Err(e) => {
            let (code, reason) = match e {
                TokenError::Missing => ("3000008", "Invalid JWT token. No token in the request."),
                TokenError::Invalid => ("3000006", "Token contains invalid signature."),
                TokenError::Expired => ("3000007", "Token expired."),
                TokenError::WrongAudience => ("3000003", "Invalid audience Uri"),
            };
            let mut r = (StatusCode::UNAUTHORIZED, "").into_response();
            let h = r.headers_mut();
            h.insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_str(&format!(
                    "Bearer realm=\"{}\",client_id=\"00000003-0000-0ff1-ce00-000000000000\"",
                    sim.config.tenant_id
                ))
                .expect("ascii"),
            );
            h.insert(
                "x-ms-diagnostics",
                HeaderValue::from_str(&format!("{code};reason=\"{reason}\";category=\"invalid_client\""))
                    .expect("ascii"),
            );
            sim.record(endpoint, 401, None, None);
            return Err(r);
        }
    };
    if token.kind == "app-secret" {
        // SharePoint accepts app-only tokens only when the app authenticated with a certificate.
        let mut r =
            (StatusCode::UNAUTHORIZED, Json(json!({"error_description": "Unsupported app only token."})))
                .into_response();
        r.headers_mut().insert(
            "x-ms-diagnostics",
            HeaderValue::from_static(
                "3001000;reason=\"There has been an error authenticating the request.\";category=\"invalid_client\"",
            ),
        );
        sim.record(endpoint, 401, None, Some(&token.client_id));
        return Err(r);
    }
    // Every admin-host call here needs full control of the tenant's sites (the app's
    // `Sites.FullControl.All`, or a SharePoint administrator's `AllSites.FullControl`).
    if !token.grants(&["Sites.FullControl.All", "AllSites.FullControl"]) {
        sim.record(endpoint, 403, None, Some(&token.client_id));
        return Err(odata_error(
            headers,
            StatusCode::FORBIDDEN,
            "-2147024891, System.UnauthorizedAccessException",
            "Access denied. You do not have permission to perform this action or access this resource.",
        ));
    }
    let blocked = sim.faults.lock().unwrap().config().clone();
    if blocked.blocked {
        let fault = Fault { status: 503, retry_after: blocked.blocked_retry_after };
        sim.record(endpoint, 503, Some(fault), Some(&token.client_id));
        let r = odata_error(
            headers,
            StatusCode::SERVICE_UNAVAILABLE,
            "-2147024891, Microsoft.SharePoint.SPQueryThrottledException",
            "The request has been blocked: the app exceeded its usage limits repeatedly.",
        );
        return Err(with_retry_after(r, fault));
    }
    let (rate_headers, over_quota) = sim.sharepoint_budget();
    if let Some(fault) = over_quota.or_else(|| sim.draw(Service::SharePoint)) {
        sim.record(endpoint, fault.status, Some(fault), Some(&token.client_id));
        let status = StatusCode::from_u16(fault.status).expect("429 or 503");
        let text = if fault.status == 429 { "Too many requests." } else { "Server too busy." };
        let mut r = with_retry_after(
            odata_error(headers, status, "-2147024860, Microsoft.SharePoint.SPQueryThrottledException", text),
            fault,
        );
        for (k, v) in rate_headers {
            r.headers_mut().insert(k, HeaderValue::from_str(&v).expect("digits"));
        }
        return Err(r);
    }
    Ok((token, rate_headers, geo))
}

pub(super) fn finish(
    sim: &Sim,
    endpoint: &str,
    token: &TokenInfo,
    rate: RateHeaders,
    mut r: Response,
) -> Response {
    for (k, v) in rate {
        r.headers_mut().insert(k, HeaderValue::from_str(&v).expect("digits"));
    }
    sim.record(endpoint, r.status().as_u16(), None, Some(&token.client_id));
    r
}

pub(super) fn csom_reply(sim: &Sim, error: Option<(&str, &str, i64)>, results: Vec<Value>) -> Response {
    let error_info = error.map(|(kind, message, code)| {
        json!({"ErrorMessage": message, "ErrorValue": null, "TraceCorrelationId": sim.correlation(),
               "ErrorCode": code, "ErrorTypeName": kind})
    });
    let mut out = vec![json!({
        "SchemaVersion": SCHEMA_VERSION, "LibraryVersion": LIBRARY_VERSION,
        "ErrorInfo": error_info, "TraceCorrelationId": sim.correlation()
    })];
    out.extend(results);
    // CSOM answers HTTP 200 even when the call failed: ErrorInfo carries the failure.
    Json(Value::Array(out)).into_response()
}
