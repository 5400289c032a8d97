//! Entra ID's error body (`error`, `error_description` with its AADSTS code, `error_codes`, …),
//! as the token, authorization and device endpoints answer it.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use jiff::Timestamp;
use serde_json::json;

use super::Sim;

pub(super) fn error(sim: &Sim, status: StatusCode, error: &str, code: u32, description: &str) -> Response {
    let correlation = sim.correlation();
    let body = json!({
        "error": error,
        "error_description": format!("AADSTS{code}: {description} Trace ID: {correlation} Correlation ID: {correlation} Timestamp: {}", Timestamp::now()),
        "error_codes": [code],
        "timestamp": Timestamp::now().to_string(),
        "trace_id": correlation,
        "correlation_id": correlation,
        "error_uri": format!("https://login.microsoftonline.com/error?code={code}"),
    });
    (status, Json(body)).into_response()
}
