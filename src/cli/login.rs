//! `onedrive-operator login`: a SharePoint administrator signs in once — in a browser
//! (authorization code with PKCE on a loopback redirect) or with `--device-code` — and the refresh
//! token is stored where the tenant says (`spec.auth.delegated.refreshTokenSecretRef`), bound to the
//! tenant, or printed as a Secret manifest (`-o yaml`) for SOPS or sealed-secrets. The token is
//! never printed otherwise. Before anything is stored, the sign-in is checked: the user's admin
//! role (from the token's `wids`; none listed means unknown, not "not an admin") and the scopes the
//! operator needs of SharePoint and of Graph.

use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::api::rbac::v1::Role;
use kube::ResourceExt;
use kube::api::{Api, ListParams, ObjectMeta, PostParams};
use serde_json::Value;

use crate::api::annotations::REFRESH_TOKEN_ROTATED_AT as ROTATED_AT;
use crate::api::{DelegatedAuth, OneDriveTenant};
use crate::cli::manifests::{Manifests, check_manifest};
use crate::m365::permissions::{self, Role as AdminRole};
use crate::m365::signin::{DeviceAuthorization, Flow, Pkce, Poll, SignIn, Tokens, sign_in_scope};
use crate::m365::{EndpointPolicy, M365Error, OPAQUE_TYPE, TENANTS_ANNOTATION, TenantConfig, bound_tenants};

/// What `login` was asked to do.
pub struct Login {
    /// The tenant, as the cluster (or a file) holds it.
    pub tenant: OneDriveTenant,
    /// The operator's namespace: where the Secret goes.
    pub namespace: String,
    pub flow: Flow,
    /// Print the URL only (no attempt to open a browser).
    pub no_browser: bool,
    /// The loopback port of the redirect (0: any free one).
    pub port: u16,
    /// How long the person has to sign in.
    pub timeout: Duration,
    pub policy: EndpointPolicy,
}

/// Why `login` stopped; the CLI prints it and exits non-zero. No variant carries a token.
#[derive(Debug, thiserror::Error)]
pub enum LoginError {
    #[error("{0}")]
    Usage(String),
    #[error("{0} ({reason})", reason = .0.reason())]
    Microsoft(#[from] M365Error),
    #[error(
        "signed in as {user}, who is neither a SharePoint Administrator nor a Global Administrator: SharePoint enqueues only an administrator's requests, so nothing was stored. Sign in again as one"
    )]
    NotAdmin { user: String },
    #[error("{0}")]
    Kubernetes(String),
    #[error(
        "Secret {0} holds a refresh token the operator rotated at {1}, after this sign-in began: storing this one would replace a newer token. Run login again, or pass --force"
    )]
    Newer(String, Timestamp),
}

/// A finished sign-in: the newest refresh token, who signed in and what to tell them.
pub struct SignedIn {
    pub refresh_token: String,
    pub user: String,
    pub started: Timestamp,
    /// Checks that passed or only warn, one line each.
    pub notes: Vec<String>,
}

impl std::fmt::Debug for SignedIn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SignedIn").field("user", &self.user).field("notes", &self.notes).finish()
    }
}

fn delegated(tenant: &OneDriveTenant) -> Result<&DelegatedAuth, LoginError> {
    tenant.spec.auth.delegated.as_ref().ok_or_else(|| {
        LoginError::Usage(format!(
            "OneDriveTenant {} does not use delegated sign-in (spec.auth.delegated): login stores a SharePoint administrator's refresh token for tenants that do",
            tenant.name_any()
        ))
    })
}

/// The tenant as a file gives it (a manifest, Secrets after it ignored).
pub fn tenant_from_file(text: &str) -> Result<OneDriveTenant, LoginError> {
    crate::cli::manifests::parse_manifests(text).map(|m| m.tenant).map_err(LoginError::Usage)
}

/// Signs in, checks the sign-in, and returns the refresh token to store. `say` gets what the
/// person must see (the URL, the device code) and the checks' warnings; never a token.
pub async fn sign_in(login: &Login, say: &(dyn Fn(&str) + Sync)) -> Result<SignedIn, LoginError> {
    let tenant = &login.tenant;
    let m =
        Manifests { tenant: tenant.clone(), secrets: Default::default(), namespace: login.namespace.clone() };
    check_manifest(&m, &login.policy)?;
    let d = delegated(tenant)?;
    let config = TenantConfig::from_spec(&tenant.spec).with_policy(login.policy.clone());
    let client = SignIn::new(&config, &d.client_id)?;
    let scope = sign_in_scope(&config.admin_url);
    let started = Timestamp::now();
    let tokens = match login.flow {
        Flow::Browser => browser(&client, &scope, login, say).await?,
        Flow::DeviceCode => device(&client, &scope, login.timeout, say).await?,
    };
    if tokens.refresh_token.is_empty() {
        return Err(M365Error::Protocol(
            "Entra ID gave no refresh token (was offline_access refused?)".into(),
        )
        .into());
    }
    let claims = tokens.claims();
    let user = permissions::signed_in_user(&claims).to_string();
    let mut notes = Vec::new();
    match permissions::role(&claims) {
        AdminRole::Admin(role) => notes.push(format!("signed in as {user} ({role})")),
        AdminRole::NotAdmin => return Err(LoginError::NotAdmin { user }),
        AdminRole::Unknown => notes.push(format!(
            "signed in as {user}; the token does not list the user's roles, so whether they are a SharePoint Administrator is unknown: `onedrive-operator doctor` and the first enqueue will tell"
        )),
    }
    notes.extend(missing_scopes(
        &claims,
        permissions::Audience::SharePoint,
        &config.admin_url,
        &config.tenant_id,
    ));
    // Graph with the same refresh token (one resource per request): observing needs it.
    let graph = client.redeem(&tokens.refresh_token, &config.graph_url).await?;
    notes.extend(missing_scopes(
        &graph.claims(),
        permissions::Audience::Graph,
        &config.graph_url,
        &config.tenant_id,
    ));
    Ok(SignedIn { refresh_token: graph.refresh_token, user, started, notes })
}

/// What the token lacks for the operator's calls, and how to grant it (a warning each).
fn missing_scopes(
    claims: &Value,
    audience: permissions::Audience,
    resource: &str,
    tenant_id: &str,
) -> Vec<String> {
    match permissions::check(claims, audience, resource, tenant_id) {
        Ok(g) => vec![format!("{audience:?} scopes: {}", g.permissions.join(", "))],
        Err(problems) => problems
            .into_iter()
            .filter(|p| !p.contains("is neither a SharePoint Administrator"))
            .map(|p| {
                format!("warning: {p} (app registration → API permissions → add the delegated permission → Grant admin consent)")
            })
            .collect(),
    }
}

async fn browser(
    client: &SignIn,
    scope: &str,
    login: &Login,
    say: &(dyn Fn(&str) + Sync),
) -> Result<Tokens, LoginError> {
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", login.port)).await.map_err(|e| {
        LoginError::Usage(format!(
            "cannot listen on 127.0.0.1:{} for the sign-in's redirect: {e}",
            login.port
        ))
    })?;
    let port = listener.local_addr().map_err(|e| LoginError::Usage(e.to_string()))?.port();
    // `localhost`: Entra ID ignores a localhost redirect's port when matching the registration.
    let redirect = format!("http://localhost:{port}");
    let pkce = Pkce::new();
    let mut state_bytes = [0u8; 16];
    crate::jose::getrandom_fill(&mut state_bytes);
    let state = crate::jose::b64url(&state_bytes);
    let url = client.authorize_url(scope, &redirect, &state, &pkce)?;
    say(&format!("Sign in as a SharePoint administrator of the tenant: open this URL in a browser\n  {url}"));
    if !login.no_browser {
        open_browser(&url);
    }
    let query = tokio::time::timeout(login.timeout, redirected(&listener)).await.map_err(|_| {
        LoginError::Usage(format!("nobody signed in within {} s: run login again", login.timeout.as_secs()))
    })??;
    let param = |k: &str| {
        url::form_urlencoded::parse(query.as_bytes()).find(|(name, _)| name == k).map(|(_, v)| v.into_owned())
    };
    if param("state").as_deref() != Some(state.as_str()) {
        return Err(LoginError::Usage(
            "the redirect's state does not match this sign-in's: ignored (was another sign-in running?)"
                .into(),
        ));
    }
    if let Some(error) = param("error") {
        let description: String = param("error_description")
            .unwrap_or_default()
            .lines()
            .next()
            .unwrap_or("")
            .chars()
            .take(300)
            .collect();
        let code = description
            .strip_prefix("AADSTS")
            .and_then(|d| d.split(':').next())
            .and_then(|c| c.parse::<i64>().ok())
            .unwrap_or(0);
        let body =
            serde_json::json!({"error": error, "error_description": description, "error_codes": [code]});
        return Err(crate::m365::signin::refusal(400, &body, Flow::Browser).into());
    }
    let code = param("code").ok_or_else(|| LoginError::Usage("the redirect carried no code".into()))?;
    Ok(client.redeem_code(&code, &redirect, scope, &pkce).await?)
}

/// Waits for the browser's redirect to the loopback listener; answers it with a page and returns
/// its query. Requests without a query (a favicon) are answered and ignored.
async fn redirected(listener: &tokio::net::TcpListener) -> Result<String, LoginError> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    loop {
        let (mut socket, _) = listener.accept().await.map_err(|e| LoginError::Usage(e.to_string()))?;
        let mut head = Vec::new();
        let mut buf = [0u8; 2048];
        while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 16 << 10 {
            let n = socket.read(&mut buf).await.unwrap_or(0);
            if n == 0 {
                break;
            }
            head.extend_from_slice(&buf[..n]);
        }
        let line = String::from_utf8_lossy(&head).lines().next().unwrap_or_default().to_string();
        let target = line.split_whitespace().nth(1).unwrap_or_default();
        let query = target.split_once('?').map(|(_, q)| q.to_string());
        let page = if query.is_some() {
            "Sign-in received: you can close this window and return to the terminal."
        } else {
            "Waiting for the sign-in."
        };
        let body = format!("<!DOCTYPE html><html><body><p>{page}</p></body></html>");
        let answer = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: text/html; charset=utf-8\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        );
        let _ = socket.write_all(answer.as_bytes()).await;
        let _ = socket.shutdown().await;
        if let Some(q) = query {
            return Ok(q);
        }
    }
}

/// Best effort: the desktop's browser (the URL is printed either way).
fn open_browser(url: &str) {
    let opener = if cfg!(target_os = "macos") { "open" } else { "xdg-open" };
    let _ = std::process::Command::new(opener)
        .arg(url)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn();
}

async fn device(
    client: &SignIn,
    scope: &str,
    timeout: Duration,
    say: &(dyn Fn(&str) + Sync),
) -> Result<Tokens, LoginError> {
    let device: DeviceAuthorization = client.start_device(scope).await?;
    say(&if device.message.is_empty() {
        format!("To sign in, open {} and enter the code {}", device.verification_uri, device.user_code)
    } else {
        device.message.clone()
    });
    let waiting = device.expires_in.min(timeout);
    let mut interval = device.interval;
    // Entra ID says `expired_token` once the code is gone; two more intervals of grace for clocks.
    let give_up = tokio::time::Instant::now() + waiting + 2 * interval;
    loop {
        tokio::time::sleep(interval).await;
        match client.poll_device(&device).await? {
            Poll::Signed(tokens) => return Ok(tokens),
            Poll::Pending => {}
            Poll::SlowDown => interval += Duration::from_secs(5),
        }
        if tokio::time::Instant::now() >= give_up {
            return Err(LoginError::Usage(format!(
                "nobody signed in within {} s: the code expired; run login again",
                waiting.as_secs()
            )));
        }
    }
}

/// The Secret `login` writes: the refresh token under the tenant's key, bound to the tenant, with
/// the time it was issued (the rotation annotation the operator keeps).
pub fn secret_manifest(
    tenant: &OneDriveTenant,
    namespace: &str,
    refresh_token: &str,
    issued: Timestamp,
) -> Result<Secret, LoginError> {
    let d = delegated(tenant)?;
    let r = &d.refresh_token_secret_ref;
    Ok(Secret {
        metadata: ObjectMeta {
            name: Some(r.name.clone()),
            namespace: Some(namespace.into()),
            annotations: Some(
                [
                    (TENANTS_ANNOTATION.to_string(), tenant.name_any()),
                    (ROTATED_AT.to_string(), issued.to_string()),
                ]
                .into(),
            ),
            ..ObjectMeta::default()
        },
        type_: Some(OPAQUE_TYPE.into()),
        data: Some([(r.key.clone(), ByteString(refresh_token.as_bytes().to_vec()))].into()),
        ..Secret::default()
    })
}

/// Stores the refresh token in the tenant's Secret through `client` (the person's kubeconfig):
/// created, or updated with the read's `resourceVersion` as precondition. Refuses to replace a
/// token the operator rotated after `signed.started` unless `force`; keeps the Secret's other
/// keys and bindings. Returns warnings (e.g. the operator's Role cannot read this Secret).
pub async fn store(
    client: kube::Client,
    tenant: &OneDriveTenant,
    namespace: &str,
    signed: &SignedIn,
    force: bool,
) -> Result<Vec<String>, LoginError> {
    let fresh = secret_manifest(tenant, namespace, &signed.refresh_token, Timestamp::now())?;
    let name = fresh.name_any();
    let key = delegated(tenant)?.refresh_token_secret_ref.key.clone();
    let api: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let kube_error = |what: &str, e: kube::Error| {
        LoginError::Kubernetes(format!("cannot {what} Secret {namespace}/{name}: {}", describe(&e)))
    };
    match api.get_opt(&name).await.map_err(|e| kube_error("read", e))? {
        None => {
            api.create(&PostParams::default(), &fresh).await.map_err(|e| kube_error("create", e))?;
        }
        Some(mut current) => {
            if current.type_.as_deref().is_some_and(|t| t != OPAQUE_TYPE) {
                return Err(LoginError::Usage(format!(
                    "Secret {namespace}/{name} is of type {}, not Opaque: it is not a refresh token's Secret; name another in spec.auth.delegated.refreshTokenSecretRef",
                    current.type_.as_deref().unwrap_or_default()
                )));
            }
            let rotated: Option<Timestamp> =
                current.annotations().get(ROTATED_AT).and_then(|t| t.parse().ok());
            if let Some(at) = rotated.filter(|at| *at > signed.started && !force) {
                return Err(LoginError::Newer(format!("{namespace}/{name}"), at));
            }
            let mut tenants =
                bound_tenants(current.annotations().get(TENANTS_ANNOTATION).map(String::as_str));
            if !tenants.contains(&tenant.name_any()) {
                tenants.push(tenant.name_any());
            }
            let annotations = current.metadata.annotations.get_or_insert_with(Default::default);
            annotations.insert(TENANTS_ANNOTATION.into(), tenants.join(","));
            annotations.insert(ROTATED_AT.into(), Timestamp::now().to_string());
            current
                .data
                .get_or_insert_with(Default::default)
                .insert(key, ByteString(signed.refresh_token.as_bytes().to_vec()));
            api.replace(&name, &PostParams::default(), &current)
                .await
                .map_err(|e| kube_error("update", e))?;
        }
    }
    Ok(readable_by_operator(client, namespace, &name).await)
}

/// A warning when a Role of the namespace restricts Secrets to names that leave this one out
/// (the chart's `rbac.secretNames`). Roles the person may not read are not guessed at.
async fn readable_by_operator(client: kube::Client, namespace: &str, name: &str) -> Vec<String> {
    let Ok(roles) = Api::<Role>::namespaced(client, namespace).list(&ListParams::default()).await else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for role in roles.items {
        for rule in role.rules.iter().flatten() {
            let secrets = rule.resources.iter().flatten().any(|r| r == "secrets");
            let named = rule.resource_names.as_ref().filter(|n| !n.is_empty());
            if let Some(names) = named.filter(|n| secrets && !n.iter().any(|n| n == name)) {
                out.push(format!(
                    "warning: Role {namespace}/{} lets its subjects read only the Secrets {names:?}: if it is the operator's, add {name} to the chart's rbac.secretNames, or the operator cannot read this token",
                    role.name_any()
                ));
            }
        }
    }
    out
}

fn describe(e: &kube::Error) -> String {
    match e {
        kube::Error::Api(s) => {
            format!("{} {} ({})", s.code, s.reason, s.message.chars().take(200).collect::<String>())
        }
        other => other.to_string().chars().take(200).collect(),
    }
}

/// The Secret as a YAML manifest (`-o yaml`): for SOPS, sealed-secrets or a GitOps repository.
pub fn secret_yaml(secret: &Secret) -> String {
    let mut value = serde_json::to_value(secret).expect("a Secret serializes");
    value["apiVersion"] = "v1".into();
    value["kind"] = "Secret".into();
    serde_yaml::to_string(&value).expect("YAML")
}
