//! The Entra ID v2.0 token endpoint: certificate and federated client assertions, client
//! secrets and delegated refresh tokens. Errors use Entra's body shape and AADSTS codes.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{Form, Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use jiff::Timestamp;
use serde_json::{Value, json};

use super::aadsts::error;
use super::{App, Sim};
use sha2::Digest;

use super::verify::{Assertion, thumbprint_sha256};
use crate::jose::Certificate;

pub(super) fn routes() -> Router<Arc<Sim>> {
    Router::new().route("/entra/{tenant}/oauth2/v2.0/token", post(token))
}

impl Sim {
    /// The scopes of one request name one resource (`offline_access`, `openid`, `profile` and
    /// `email` aside): Entra refuses two (AADSTS70011).
    pub(crate) fn one_resource(&self, scope: &str) -> Result<(), String> {
        let mut resources: Vec<&str> = scope
            .split_whitespace()
            .filter(|s| !matches!(*s, "offline_access" | "openid" | "profile" | "email"))
            .map(|s| s.rsplit_once('/').map_or(s, |(r, _)| r))
            .collect();
        resources.sort_unstable();
        resources.dedup();
        match resources.len() {
            1 => Ok(()),
            0 => Err(format!(
                "AADSTS70011: The provided value for the input parameter 'scope' is not valid. The scope '{scope}' names no resource."
            )),
            _ => Err(format!(
                "AADSTS70011: The provided value for the input parameter 'scope' is not valid. The scope '{scope}' asks for more than one resource ({})",
                resources.join(", ")
            )),
        }
    }

    /// A new refresh token of `user`, counted as the newest rotation.
    pub(crate) fn new_refresh_token(&self, user: &str) -> String {
        let token = format!("rt-{}", crate::jose::guid());
        self.refresh_tokens.lock().unwrap().insert(token.clone(), user.to_string());
        let mut stats = self.stats.lock().unwrap();
        stats.rotations += 1;
        stats.newest_refresh_token_sha256 =
            Some(crate::jose::b64url(&sha2::Sha256::digest(token.as_bytes())));
        token
    }
}

const JWT_BEARER: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";
/// The audience Azure Workload Identity projects service-account tokens for.
pub const FEDERATION_AUDIENCE: &str = "api://AzureADTokenExchange";

async fn token(
    State(sim): State<Arc<Sim>>,
    Path(tenant): Path<String>,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    let response = issue(&sim, &tenant, &form);
    let client = form.get("client_id").map(String::as_str);
    sim.record("entra.token", response.status().as_u16(), None, client);
    response
}

fn issue(sim: &Sim, tenant: &str, form: &HashMap<String, String>) -> Response {
    if tenant != sim.config.tenant_id && !tenant.eq_ignore_ascii_case(&sim.config.domain) {
        return error(
            sim,
            StatusCode::BAD_REQUEST,
            "invalid_request",
            90002,
            &format!("Tenant '{tenant}' not found."),
        );
    }
    let get = |k: &str| form.get(k).map(String::as_str).unwrap_or_default();
    let client_id = get("client_id");
    match get("grant_type") {
        "client_credentials" => {
            let resource = match resource_of(sim, get("scope")) {
                Ok(r) => r,
                Err(r) => return r,
            };
            if !get("client_assertion").is_empty() {
                if get("client_assertion_type") != JWT_BEARER {
                    return error(
                        sim,
                        StatusCode::BAD_REQUEST,
                        "invalid_request",
                        900023,
                        "Specified client_assertion_type is not supported.",
                    );
                }
                match verify_assertion(sim, client_id, get("client_assertion")) {
                    Ok(kind) => grant(sim, client_id, kind, &resource, None, None),
                    Err(r) => r,
                }
            } else if !get("client_secret").is_empty() {
                let ok = sim.config.apps.iter().any(|a| {
                    matches!(a, App::Secret { client_id: c, secret } if c == client_id && secret == get("client_secret"))
                });
                if ok {
                    grant(sim, client_id, "app-secret", &resource, None, None)
                } else {
                    error(
                        sim,
                        StatusCode::UNAUTHORIZED,
                        "invalid_client",
                        7000215,
                        "Invalid client secret provided. Ensure the secret being sent in the request is the client secret value, not the client secret ID, for a secret added to app.",
                    )
                }
            } else {
                error(
                    sim,
                    StatusCode::BAD_REQUEST,
                    "invalid_client",
                    7000218,
                    "The request body must contain the following parameter: 'client_assertion' or 'client_secret'.",
                )
            }
        }
        "refresh_token" => {
            let resource = match resource_of(sim, get("scope")) {
                Ok(r) => r,
                Err(r) => return r,
            };
            let known_app = sim
                .config
                .apps
                .iter()
                .any(|a| matches!(a, App::Delegated { client_id: c, .. } if c == client_id));
            if !known_app {
                return error(
                    sim,
                    StatusCode::BAD_REQUEST,
                    "unauthorized_client",
                    700016,
                    &format!("Application with identifier '{client_id}' was not found in the directory."),
                );
            }
            let presented = get("refresh_token");
            let tokens = sim.refresh_tokens.lock().unwrap();
            let Some(user) = tokens.get(presented).cloned() else {
                return error(
                    sim,
                    StatusCode::BAD_REQUEST,
                    "invalid_grant",
                    700082,
                    "The refresh token has expired due to inactivity.",
                );
            };
            // Entra rotates refresh tokens on use. Choice: like the real service, the old one
            // stays valid too, so an operator that stops before saving the new one is not locked out.
            drop(tokens);
            *sim.stats.lock().unwrap().refresh_redemptions.entry(resource.clone()).or_default() += 1;
            let rotated = sim.new_refresh_token(&user);
            grant(sim, client_id, "delegated", &resource, Some(rotated), sim.account(&user))
        }
        grant_type @ ("authorization_code" | "urn:ietf:params:oauth:grant-type:device_code") => {
            let redeemed = if grant_type == "authorization_code" {
                sim.redeem_code(form)
            } else {
                sim.redeem_device(form)
            };
            let (user, scope) = match redeemed {
                Ok(r) => r,
                Err(response) => return response,
            };
            let resource = match resource_of(sim, &scope) {
                Ok(r) => r,
                Err(r) => return r,
            };
            // A refresh token only with offline_access, as Entra gives it.
            let refresh =
                scope.split_whitespace().any(|s| s == "offline_access").then(|| sim.new_refresh_token(&user));
            grant(sim, client_id, "delegated", &resource, refresh, sim.account(&user))
        }
        "" => error(
            sim,
            StatusCode::BAD_REQUEST,
            "invalid_request",
            900144,
            "The request body must contain the following parameter: 'grant_type'.",
        ),
        other => error(
            sim,
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            70003,
            &format!("The app requested an unsupported grant type '{other}'."),
        ),
    }
}

/// `https://graph.microsoft.com/.default` → the resource, which must be one the tenant has; the
/// scopes of one request name one resource (AADSTS70011 otherwise).
fn resource_of(sim: &Sim, scope: &str) -> Result<String, Response> {
    if let Err(description) = sim.one_resource(scope) {
        return Err(error(sim, StatusCode::BAD_REQUEST, "invalid_scope", 70011, &description));
    }
    let resource = scope.split_whitespace().find_map(|s| s.strip_suffix("/.default")).unwrap_or_default();
    // Every geo's admin host is a resource of its own (tokens are per host).
    if resource == sim.graph_resource() || sim.sharepoint_resources().iter().any(|r| r == resource) {
        Ok(resource.to_string())
    } else if resource.is_empty() {
        Err(error(
            sim,
            StatusCode::BAD_REQUEST,
            "invalid_scope",
            1002012,
            &format!(
                "The provided value for scope {scope} is not valid. Client credential flows must have a scope value with /.default suffixed to the resource identifier (application ID URI)."
            ),
        ))
    } else {
        Err(error(
            sim,
            StatusCode::BAD_REQUEST,
            "invalid_resource",
            500011,
            &format!(
                "The resource principal named {resource} was not found in the tenant named {}.",
                sim.config.tenant_id
            ),
        ))
    }
}

/// What an app registration holds for each resource, as Entra puts it in a token: application
/// permissions (`roles`) for app-only tokens, delegated scopes (`scp`) for a user's.
fn permissions(sim: &Sim, resource: &str, delegated: bool) -> Vec<&'static str> {
    let all: &[&str] = match (resource == sim.graph_resource(), delegated) {
        (true, _) => {
            &["User.Read.All", "Sites.Read.All", "Files.Read.All", "GroupMember.Read.All", "Group.Read.All"]
        }
        (false, false) => &["Sites.FullControl.All", "User.ReadWrite.All"],
        (false, true) => &["AllSites.FullControl", "User.ReadWrite.All"],
    };
    all.iter().copied().filter(|p| !sim.config.withheld_permissions.iter().any(|w| w == p)).collect()
}

fn grant(
    sim: &Sim,
    client_id: &str,
    kind: &str,
    resource: &str,
    refresh: Option<String>,
    account: Option<&super::authorize::Account>,
) -> Response {
    let now = Timestamp::now().as_second();
    let lifetime = sim.config.token_lifetime.as_secs();
    let delegated = kind == "delegated";
    let granted = permissions(sim, resource, delegated);
    let mut claims = json!({
        "aud": resource,
        "iss": format!("{}/entra/{}/v2.0", sim.base, sim.config.tenant_id),
        "tid": sim.config.tenant_id,
        "appid": client_id,
        "idtyp": if delegated { "user" } else { "app" },
        "kind": kind,
        "iat": now, "nbf": now, "exp": now + lifetime,
        "gen": sim.token_generation.load(std::sync::atomic::Ordering::SeqCst),
    });
    if delegated {
        claims["scp"] = Value::from(granted.join(" "));
        if let Some(a) = account {
            claims["upn"] = Value::from(a.upn.clone());
            // Choice: Entra puts `wids` in a token only as the resource configures it; the
            // simulator always does, with the default user role every member holds (as Graph's
            // tokens show it) and the account's roles.
            let mut wids = vec![super::authorize::DEFAULT_USER_ROLE.to_string()];
            wids.extend(a.roles.iter().cloned());
            claims["wids"] = Value::from(wids);
        }
    } else {
        claims["roles"] = Value::from(granted);
    }
    let mut body = json!({
        "token_type": "Bearer",
        "expires_in": lifetime,
        "ext_expires_in": lifetime,
        "access_token": crate::jose::sign_hmac(&sim.token_secret, &claims),
    });
    if let Some(rt) = refresh {
        body["refresh_token"] = Value::from(rt);
        body["scope"] = Value::from(format!("{resource}/.default"));
    }
    (StatusCode::OK, Json(body)).into_response()
}

/// Verifies a client assertion; returns the token kind it earns.
fn verify_assertion(sim: &Sim, client_id: &str, assertion: &str) -> Result<&'static str, Response> {
    let invalid =
        |code: u32, text: &str| Err(error(sim, StatusCode::UNAUTHORIZED, "invalid_client", code, text));
    let Some(jws) = Assertion::parse(assertion) else {
        return invalid(50027, "JWT token is invalid or malformed.");
    };
    let apps: Vec<&App> = sim.config.apps.iter().filter(|a| a.client_id() == client_id).collect();
    if apps.is_empty() {
        return Err(error(
            sim,
            StatusCode::BAD_REQUEST,
            "unauthorized_client",
            700016,
            &format!("Application with identifier '{client_id}' was not found in the directory."),
        ));
    }
    let now = Timestamp::now().as_second();
    let claim_i64 = |k: &str| jws.claims[k].as_i64();
    let in_time =
        claim_i64("exp").is_some_and(|e| e > now) && claim_i64("nbf").is_none_or(|n| n <= now + 300);
    let has_thumbprint = jws.header.get("x5t#S256").is_some() || jws.header.get("x5t").is_some();
    if has_thumbprint {
        let certificates: Vec<&Certificate> = apps
            .iter()
            .filter_map(|a| match a {
                App::Certificate { certificate, .. } => Some(certificate),
                _ => None,
            })
            .collect();
        if certificates.is_empty() {
            return invalid(
                700027,
                "Client assertion contains an invalid signature. [Reason - The key was not found.]",
            );
        }
        // The thumbprint must name a registered certificate (an app may hold several while one
        // is renewed): x5t#S256 (SHA-256) or legacy x5t (SHA-1).
        let named = certificates.iter().find(|c| jws.names_certificate(&c.der));
        let Some(certificate) = named.copied() else {
            return invalid(
                700027,
                "Client assertion contains an invalid signature. [Reason - The key was not found., Thumbprint of key used by client does not match any registered certificate.]",
            );
        };
        if !jws.signed_by(&certificate.public_key) {
            return invalid(700027, "Client assertion failed signature validation.");
        }
        sim.stats.lock().unwrap().certificates_used.insert(thumbprint_sha256(&certificate.der));
        if jws.claims["aud"].as_str()
            != Some(format!("{}/entra/{}/oauth2/v2.0/token", sim.base, sim.config.tenant_id).as_str())
        {
            // Choice: Entra's exact code for a wrong `aud` is not documented; 700027 with the reason.
            return invalid(700027, "Client assertion audience claim does not match Realm issuer.");
        }
        if jws.claims["iss"].as_str() != Some(client_id) || jws.claims["sub"].as_str() != Some(client_id) {
            return invalid(700023, "Client assertion issuer and subject must both be the client id.");
        }
        if !in_time {
            return invalid(700024, "Client assertion is not within its valid time range.");
        }
        return Ok("app-certificate");
    }
    let Some(App::Federated { issuer, subject, issuer_key, .. }) =
        apps.iter().find(|a| matches!(a, App::Federated { .. })).copied()
    else {
        return invalid(
            700027,
            "Client assertion contains an invalid signature. [Reason - The key was not found.]",
        );
    };
    if !jws.signed_by(issuer_key) {
        return invalid(700027, "Client assertion failed signature validation.");
    }
    let matches_record = jws.claims["iss"].as_str() == Some(issuer.as_str())
        && jws.claims["sub"].as_str() == Some(subject.as_str())
        && jws.claims["aud"].as_str() == Some(FEDERATION_AUDIENCE);
    if !matches_record {
        return invalid(70021, "No matching federated identity record found for presented assertion.");
    }
    if !in_time {
        return invalid(700024, "Client assertion is not within its valid time range.");
    }
    Ok("app-federated")
}
