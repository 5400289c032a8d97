//! A person signing in: the authorization endpoint (code + PKCE, loopback redirect) and the
//! device authorization endpoint (RFC 8628), as Entra ID serves them to a public client
//! (`reference/m365-protocol.md` §13). No browser runs here: a test hook says who approves.
//!
//! - `GET /entra/{tenant}/oauth2/v2.0/authorize`: with an approver set (`POST /_sim/sign-in`),
//!   a 302 to the loopback `redirect_uri` with `code` and `state` (or `error=access_denied` when the
//!   hook declines); without one, a page saying nobody signs in here.
//! - `POST /entra/{tenant}/oauth2/v2.0/devicecode`: a device code and a user code; `POST
//!   /_sim/device` approves as a user, declines, asks the client to slow down or blocks the sign-in
//!   as Conditional Access would; a code expires after `device_code_lifetime`.
//! - The token endpoint redeems both (`entra.rs`), each code once.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Form, Json, Router};
use serde::Deserialize;
use serde_json::json;
use sha2::Digest;

use super::Sim;

/// Directory role template ids (Entra ID's built-in roles).
pub const SHAREPOINT_ADMINISTRATOR: &str = "f28a1f50-f6e7-4571-818b-6a12f2af6b6c";
pub const GLOBAL_ADMINISTRATOR: &str = "62e90394-69f5-4237-9190-012177145e10";
/// The role template every member user holds ("User"), listed in `wids` beside their roles.
pub const DEFAULT_USER_ROLE: &str = "b79fbf4d-3ef9-4689-8143-76b194e85509";

/// An account that can sign in to the simulated tenant (not one of the users it provisions).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Account {
    pub upn: String,
    /// Role template ids the account holds (`wids`).
    pub roles: Vec<String>,
}

impl Account {
    pub fn sharepoint_admin(upn: impl Into<String>) -> Account {
        Account { upn: upn.into(), roles: vec![SHAREPOINT_ADMINISTRATOR.into()] }
    }

    pub fn without_role(upn: impl Into<String>) -> Account {
        Account { upn: upn.into(), roles: Vec::new() }
    }

    pub fn is_admin(&self) -> bool {
        self.roles.iter().any(|r| r == SHAREPOINT_ADMINISTRATOR || r == GLOBAL_ADMINISTRATOR)
    }
}

/// What the person at the device's verification page does, poll by poll (a test hook scripts
/// it): each poll takes the next step; the last step stands once reached.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DeviceStep {
    Pending,
    /// The client polled too often: `slow_down`.
    SlowDown,
    Approve(String),
    Decline,
    /// Conditional Access blocks this sign-in (AADSTS53003).
    Block,
}

struct DeviceCode {
    client_id: String,
    scope: String,
    user_code: String,
    expires: Instant,
    steps: std::collections::VecDeque<DeviceStep>,
}

/// An authorization code waiting to be redeemed.
struct AuthCode {
    client_id: String,
    redirect_uri: String,
    challenge: String,
    scope: String,
    user: String,
}

/// Who approves the next sign-ins at the authorization endpoint.
#[derive(Clone, Debug)]
enum Approver {
    User(String),
    Decline,
}

/// The sign-in state of one simulator.
#[derive(Default)]
pub(crate) struct SignIns {
    approver: Option<Approver>,
    codes: HashMap<String, AuthCode>,
    devices: HashMap<String, DeviceCode>,
}

impl SignIns {
    pub(crate) fn set_approver(&mut self, user: Option<String>) {
        self.approver = Some(user.map_or(Approver::Decline, Approver::User));
    }
}

pub(super) fn routes() -> Router<Arc<Sim>> {
    Router::new()
        .route("/entra/{tenant}/oauth2/v2.0/authorize", get(authorize))
        .route("/entra/{tenant}/oauth2/v2.0/devicecode", post(devicecode))
        .route("/_sim/sign-in", post(set_approver))
        .route("/_sim/device", post(device_hook))
}

#[derive(Deserialize)]
struct AuthorizeQuery {
    client_id: Option<String>,
    response_type: Option<String>,
    redirect_uri: Option<String>,
    scope: Option<String>,
    state: Option<String>,
    code_challenge: Option<String>,
    code_challenge_method: Option<String>,
}

/// A loopback redirect of a public client (`http://localhost:<port>`, the port ignored as Entra
/// ignores it; `127.0.0.1` too).
fn loopback_redirect(uri: &str) -> bool {
    let Some(rest) = uri.strip_prefix("http://") else { return false };
    let host = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let name = host.rsplit_once(':').map_or(host, |(h, _)| h);
    name == "localhost" || name == "127.0.0.1"
}

async fn authorize(
    State(sim): State<Arc<Sim>>,
    Path(tenant): Path<String>,
    Query(q): Query<AuthorizeQuery>,
) -> Response {
    sim.record("entra.authorize", 200, None, q.client_id.as_deref());
    let Some(redirect) = q.redirect_uri.filter(|r| loopback_redirect(r)) else {
        return page(
            StatusCode::BAD_REQUEST,
            "AADSTS50011: The redirect URI is not a loopback address registered for this public client.",
        );
    };
    let client_id = q.client_id.unwrap_or_default();
    let back = |params: &[(&str, &str)]| {
        let query: String =
            url::form_urlencoded::Serializer::new(String::new()).extend_pairs(params).finish();
        let sep = if redirect.contains('?') { '&' } else { '?' };
        (StatusCode::FOUND, [(header::LOCATION, format!("{redirect}{sep}{query}"))]).into_response()
    };
    let state = q.state.unwrap_or_default();
    let fail = |error: &str, description: &str| {
        back(&[("error", error), ("error_description", description), ("state", &state)])
    };
    if !sim.tenant_is(&tenant) {
        return fail("invalid_request", &format!("AADSTS90002: Tenant '{tenant}' not found."));
    }
    if !sim.is_public_client(&client_id) {
        return fail(
            "unauthorized_client",
            &format!(
                "AADSTS700016: Application with identifier '{client_id}' was not found in the directory."
            ),
        );
    }
    if q.response_type.as_deref() != Some("code") {
        return fail("unsupported_response_type", "AADSTS70005: response_type 'code' is required.");
    }
    let challenge = q.code_challenge.unwrap_or_default();
    if q.code_challenge_method.as_deref() != Some("S256") || challenge.len() < 43 {
        return fail(
            "invalid_request",
            "AADSTS501491: Invalid size of Code_Challenge parameter, or the method is not S256.",
        );
    }
    let scope = q.scope.unwrap_or_default();
    if let Err(description) = sim.one_resource(&scope) {
        return fail("invalid_scope", &description);
    }
    let approver = sim.sign_ins.lock().unwrap().approver.clone();
    match approver {
        None => page(
            StatusCode::OK,
            "Sign in to the Microsoft 365 simulator: nobody approves sign-ins here (test hook: POST /_sim/sign-in {\"user\": \"...\"}).",
        ),
        Some(Approver::Decline) => {
            fail("access_denied", "AADSTS65004: User declined to consent to access the app.")
        }
        Some(Approver::User(user)) => {
            let code = format!("code-{}", crate::jose::guid());
            let issued = AuthCode { client_id, redirect_uri: redirect.clone(), challenge, scope, user };
            sim.sign_ins.lock().unwrap().codes.insert(code.clone(), issued);
            back(&[("code", &code), ("state", &state)])
        }
    }
}

fn page(status: StatusCode, text: &str) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        format!("<!DOCTYPE html><html><body><p>{text}</p></body></html>"),
    )
        .into_response()
}

#[derive(Deserialize)]
struct Approve {
    /// Signs in as this account; absent: declines.
    user: Option<String>,
}

/// Test hook: who approves the next sign-ins at the authorization endpoint.
async fn set_approver(State(sim): State<Arc<Sim>>, Json(a): Json<Approve>) -> Response {
    let approver = match a.user {
        Some(u) if sim.account(&u).is_none() => {
            return (StatusCode::BAD_REQUEST, format!("no account {u} signs in to this tenant\n"))
                .into_response();
        }
        Some(u) => Approver::User(u),
        None => Approver::Decline,
    };
    sim.sign_ins.lock().unwrap().approver = Some(approver);
    StatusCode::NO_CONTENT.into_response()
}

async fn devicecode(
    State(sim): State<Arc<Sim>>,
    Path(tenant): Path<String>,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    let client_id = form.get("client_id").cloned().unwrap_or_default();
    sim.record("entra.devicecode", 200, None, Some(&client_id));
    let scope = form.get("scope").cloned().unwrap_or_default();
    if !sim.tenant_is(&tenant) {
        return super::aadsts::error(
            &sim,
            StatusCode::BAD_REQUEST,
            "invalid_request",
            90002,
            &format!("Tenant '{tenant}' not found."),
        );
    }
    if !sim.is_public_client(&client_id) {
        return super::aadsts::error(
            &sim,
            StatusCode::BAD_REQUEST,
            "unauthorized_client",
            700016,
            &format!("Application with identifier '{client_id}' was not found in the directory."),
        );
    }
    if let Err(description) = sim.one_resource(&scope) {
        return super::aadsts::error(&sim, StatusCode::BAD_REQUEST, "invalid_scope", 70011, &description);
    }
    let device_code = format!("dc-{}", crate::jose::guid());
    let user_code: String = crate::jose::guid().replace('-', "")[..9].to_ascii_uppercase();
    let lifetime = sim.config.device_code_lifetime;
    let interval = sim.config.device_code_interval;
    let verification = format!("{}/entra/device", sim.base);
    sim.sign_ins.lock().unwrap().devices.insert(
        device_code.clone(),
        DeviceCode {
            client_id,
            scope,
            user_code: user_code.clone(),
            expires: Instant::now() + lifetime,
            steps: Default::default(),
        },
    );
    Json(json!({
        "device_code": device_code,
        "user_code": user_code,
        "verification_uri": verification,
        "expires_in": lifetime.as_secs(),
        "interval": interval.as_secs(),
        "message": format!("To sign in, use a web browser to open the page {verification} and enter the code {user_code} to authenticate."),
    }))
    .into_response()
}

#[derive(Deserialize)]
struct DeviceScript {
    user_code: String,
    /// One a poll: `pending`, `slow-down`, `approve` (as `user`), `decline` or `block`.
    steps: Vec<String>,
    user: Option<String>,
}

/// Test hook: what the person at the verification page does with a user code, poll by poll.
async fn device_hook(State(sim): State<Arc<Sim>>, Json(a): Json<DeviceScript>) -> Response {
    let mut steps = Vec::new();
    for s in &a.steps {
        steps.push(match (s.as_str(), &a.user) {
            ("pending", _) => DeviceStep::Pending,
            ("slow-down", _) => DeviceStep::SlowDown,
            ("approve", Some(u)) if sim.account(u).is_some() => DeviceStep::Approve(u.clone()),
            ("decline", _) => DeviceStep::Decline,
            ("block", _) => DeviceStep::Block,
            _ => {
                return (
                    StatusCode::BAD_REQUEST,
                    "steps: pending, slow-down, approve (with a known user), decline, block\n",
                )
                    .into_response();
            }
        });
    }
    if sim.script_device(&a.user_code, steps) {
        StatusCode::NO_CONTENT.into_response()
    } else {
        (StatusCode::NOT_FOUND, "no such user code\n").into_response()
    }
}

/// What redeeming a code gives: the account that signed in and the scope asked for at the start.
pub(super) type Redeemed = Result<(String, String), Response>;

impl Sim {
    /// Scripts what happens at the verification page of `user_code`; `false`: no such code.
    pub(crate) fn script_device(&self, user_code: &str, steps: Vec<DeviceStep>) -> bool {
        let mut sign_ins = self.sign_ins.lock().unwrap();
        match sign_ins.devices.values_mut().find(|d| d.user_code == user_code) {
            Some(d) => {
                d.steps = steps.into();
                true
            }
            None => false,
        }
    }

    pub(crate) fn account(&self, upn: &str) -> Option<&Account> {
        self.config.accounts.iter().find(|a| a.upn.eq_ignore_ascii_case(upn))
    }

    fn tenant_is(&self, tenant: &str) -> bool {
        tenant == self.config.tenant_id || tenant.eq_ignore_ascii_case(&self.config.domain)
    }

    fn is_public_client(&self, client_id: &str) -> bool {
        self.config
            .apps
            .iter()
            .any(|a| matches!(a, super::App::Delegated { client_id: c, .. } if c == client_id))
    }

    /// The grant `authorization_code`: the code once, for the client and redirect it was issued
    /// to, with the PKCE verifier whose S256 digest is its challenge.
    pub(super) fn redeem_code(&self, form: &HashMap<String, String>) -> Redeemed {
        let get = |k: &str| form.get(k).map(String::as_str).unwrap_or_default();
        let issued = self.sign_ins.lock().unwrap().codes.remove(get("code"));
        let grant_error = |code: u32, text: &str| {
            Err(super::aadsts::error(self, StatusCode::BAD_REQUEST, "invalid_grant", code, text))
        };
        let Some(c) = issued else {
            return grant_error(
                70008,
                "The provided authorization code or refresh token has expired due to inactivity.",
            );
        };
        if c.client_id != get("client_id") || c.redirect_uri != get("redirect_uri") {
            return grant_error(
                70002,
                "The authorization code was issued to another client or redirect URI.",
            );
        }
        let digest = crate::jose::b64url(&sha2::Sha256::digest(get("code_verifier").as_bytes()));
        if digest != c.challenge {
            return grant_error(
                501481,
                "The Code_Verifier does not match the code_challenge supplied in the authorization request.",
            );
        }
        Ok((c.user, c.scope))
    }

    /// The grant `device_code`: pending, slow down, declined, expired, blocked — or the account
    /// that approved it (then the code is spent).
    pub(super) fn redeem_device(&self, form: &HashMap<String, String>) -> Redeemed {
        let get = |k: &str| form.get(k).map(String::as_str).unwrap_or_default();
        let mut sign_ins = self.sign_ins.lock().unwrap();
        let answer = |error: &str, code: u32, text: &str| {
            Err(super::aadsts::error(self, StatusCode::BAD_REQUEST, error, code, text))
        };
        let Some(d) = sign_ins.devices.get_mut(get("device_code")) else {
            return answer("invalid_grant", 70000, "The provided value for the 'device_code' is not valid.");
        };
        if d.client_id != get("client_id") {
            return answer("invalid_grant", 70000, "The device code was issued to another client.");
        }
        if Instant::now() >= d.expires {
            return answer("expired_token", 70020, "The provided value for the 'device_code' has expired.");
        }
        let step = if d.steps.len() > 1 { d.steps.pop_front() } else { d.steps.front().cloned() };
        let outcome = match &step {
            None | Some(DeviceStep::Pending) => "pending",
            Some(DeviceStep::SlowDown) => "slow_down",
            Some(DeviceStep::Decline) => "declined",
            Some(DeviceStep::Block) => "blocked",
            Some(DeviceStep::Approve(_)) => "approved",
        };
        self.stats
            .lock()
            .unwrap()
            .requests
            .entry(format!("entra.device.{outcome}"))
            .and_modify(|n| *n += 1)
            .or_insert(1);
        match step.unwrap_or(DeviceStep::Pending) {
            DeviceStep::Pending => answer(
                "authorization_pending",
                70016,
                "OAuth 2.0 device flow error. Authorization is pending. Continue polling.",
            ),
            DeviceStep::SlowDown => answer("slow_down", 70016, "Polling too often: slow down."),
            DeviceStep::Decline => {
                answer("authorization_declined", 70013, "The end user denied the authorization request.")
            }
            DeviceStep::Block => answer(
                "invalid_grant",
                53003,
                "Access has been blocked by Conditional Access policies. The access policy does not allow token issuance.",
            ),
            DeviceStep::Approve(user) => {
                let scope = d.scope.clone();
                sign_ins.devices.remove(get("device_code"));
                Ok((user, scope))
            }
        }
    }
}

/// How long a device code lives and how often a client polls, by default (Entra's are 900 s and
/// 5 s; the simulator's defaults are shorter so a test's sign-in takes seconds).
pub const DEVICE_CODE_LIFETIME: Duration = Duration::from_secs(900);
pub const DEVICE_CODE_INTERVAL: Duration = Duration::from_secs(1);
