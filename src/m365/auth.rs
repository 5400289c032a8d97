//! Tokens from Entra ID: certificate client assertions, workload identity federation and a
//! SharePoint administrator's refresh token. A cache per resource refreshes before expiry with
//! one refresh in flight at a time. Tokens, assertions and keys never reach a log or an error.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use jiff::{SignedDuration, Timestamp};
use rsa::PrivateKey;
use serde_json::{Value, json};

use super::M365Error;
use super::http::{Http, Service};
use crate::api::AssertionAlgorithm;
use crate::jose::{self, Alg, Certificate};

/// Called with a rotated refresh token so it can be stored (the controller writes its Secret).
pub type RotationCallback = Arc<dyn Fn(String) + Send + Sync>;

/// How this tenant gets tokens.
#[derive(Clone)]
pub enum Credentials {
    Certificate {
        client_id: String,
        certificate: Certificate,
        key: Box<PrivateKey>,
        algorithm: AssertionAlgorithm,
    },
    /// Azure Workload Identity: the file is re-read on every token request (the kubelet rotates it).
    WorkloadIdentity {
        client_id: String,
        token_file: PathBuf,
    },
    Delegated {
        client_id: String,
        refresh_token: Arc<Mutex<String>>,
        on_rotate: Option<RotationCallback>,
    },
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print key material or tokens.
        f.write_str(match self {
            Credentials::Certificate { .. } => "Credentials::Certificate",
            Credentials::WorkloadIdentity { .. } => "Credentials::WorkloadIdentity",
            Credentials::Delegated { .. } => "Credentials::Delegated",
        })
    }
}

impl Credentials {
    /// `app-certificate`, `app-federated` or `delegated`: what SharePoint will see.
    pub fn kind(&self) -> &'static str {
        match self {
            Credentials::Certificate { .. } => "app-certificate",
            Credentials::WorkloadIdentity { .. } => "app-federated",
            Credentials::Delegated { .. } => "delegated",
        }
    }

    pub fn app_only(&self) -> bool {
        !matches!(self, Credentials::Delegated { .. })
    }

    pub fn client_id(&self) -> &str {
        match self {
            Credentials::Certificate { client_id, .. }
            | Credentials::WorkloadIdentity { client_id, .. }
            | Credentials::Delegated { client_id, .. } => client_id,
        }
    }

    /// The refresh token held now (delegated credentials only): the newest one issued.
    pub fn refresh_token(&self) -> Option<String> {
        match self {
            Credentials::Delegated { refresh_token, .. } => Some(refresh_token.lock().unwrap().clone()),
            _ => None,
        }
    }

    /// Uses `token` from now on (a person stored a new refresh token in the Secret). Cached access
    /// tokens stay valid, so nothing is redeemed because of it.
    pub fn adopt_refresh_token(&self, token: String) {
        if let Credentials::Delegated { refresh_token, .. } = self {
            *refresh_token.lock().unwrap() = token;
        }
    }

    /// The certificate's `notAfter` (certificate credentials only).
    pub fn expires_at(&self) -> Option<Timestamp> {
        match self {
            Credentials::Certificate { certificate, .. } => certificate.not_after,
            _ => None,
        }
    }
}

#[derive(Clone)]
struct Cached {
    token: String,
    /// When a new token is fetched instead: shortly before this one expires.
    renew_at: Timestamp,
}

/// Per-resource token cache.
pub struct TokenCache {
    credentials: Credentials,
    token_endpoint: String,
    http: Arc<Http>,
    entries: Mutex<HashMap<String, Cached>>,
    /// One refresh in flight per resource.
    locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

/// Tokens are renewed this long before they expire, or a quarter of their lifetime before when
/// that is shorter (short-lived tokens would otherwise never be reused).
const RENEW_BEFORE: SignedDuration = SignedDuration::from_mins(5);

/// When a token that lives `lifetime` seconds from `now` is renewed.
fn renew_at(now: Timestamp, lifetime: i64) -> Timestamp {
    let lifetime = SignedDuration::from_secs(lifetime);
    now + lifetime - RENEW_BEFORE.min(lifetime / 4)
}

impl TokenCache {
    pub fn new(
        credentials: Credentials,
        authority_host: &str,
        tenant_id: &str,
        http: Arc<Http>,
    ) -> Result<TokenCache, M365Error> {
        Ok(TokenCache {
            credentials,
            token_endpoint: token_endpoint(authority_host, tenant_id)?,
            http,
            entries: Mutex::new(HashMap::new()),
            locks: Mutex::new(HashMap::new()),
        })
    }

    pub fn credentials(&self) -> &Credentials {
        &self.credentials
    }

    /// A bearer token for `resource` (e.g. `https://graph.microsoft.com`).
    pub async fn token(&self, resource: &str) -> Result<String, M365Error> {
        if let Some(t) = self.fresh(resource) {
            return Ok(t);
        }
        let lock = self.locks.lock().unwrap().entry(resource.to_string()).or_default().clone();
        let _guard = lock.lock().await;
        if let Some(t) = self.fresh(resource) {
            return Ok(t); // another task refreshed it while we waited
        }
        let (token, lifetime) = self.request(resource).await?;
        // Whatever the service says, a token is trusted for 10 seconds to 1 day.
        let renew_at = renew_at(Timestamp::now(), lifetime.clamp(10, 86_400));
        self.entries.lock().unwrap().insert(resource.to_string(), Cached { token: token.clone(), renew_at });
        Ok(token)
    }

    /// Forgets a token the service refused (it may have been revoked).
    pub fn invalidate(&self, resource: &str) {
        self.entries.lock().unwrap().remove(resource);
    }

    fn fresh(&self, resource: &str) -> Option<String> {
        let entries = self.entries.lock().unwrap();
        let c = entries.get(resource)?;
        (c.renew_at > Timestamp::now()).then(|| c.token.clone())
    }

    /// The claims of the access token cached for `resource` (decoded, not verified: for naming
    /// what the token grants; the token itself is never shown).
    pub fn claims(&self, resource: &str) -> Option<Value> {
        let token = self.entries.lock().unwrap().get(resource)?.token.clone();
        jose::Jws::decode(&token).ok().map(|jws| jws.claims)
    }

    async fn request(&self, resource: &str) -> Result<(String, i64), M365Error> {
        let scope = format!("{}/.default", resource.trim_end_matches('/'));
        let mut form: Vec<(&str, String)> = vec![("client_id", self.credentials.client_id().to_string())];
        match &self.credentials {
            Credentials::Certificate { client_id, certificate, key, algorithm } => {
                form.push(("grant_type", "client_credentials".into()));
                form.push(("scope", scope));
                form.push(("client_assertion_type", JWT_BEARER.into()));
                form.push(("client_assertion", self.assertion(client_id, certificate, key, *algorithm)?));
            }
            Credentials::WorkloadIdentity { token_file, .. } => {
                let assertion = std::fs::read_to_string(token_file).map_err(|e| {
                    M365Error::CredentialsInvalid(format!(
                        "cannot read the federated token file {} ({e}): is the pod labelled azure.workload.identity/use=true and its ServiceAccount annotated with azure.workload.identity/client-id?",
                        token_file.display()
                    ))
                })?;
                form.push(("grant_type", "client_credentials".into()));
                form.push(("scope", scope));
                form.push(("client_assertion_type", JWT_BEARER.into()));
                form.push(("client_assertion", assertion.trim().to_string()));
            }
            Credentials::Delegated { refresh_token, .. } => {
                let current = refresh_token.lock().unwrap().clone();
                form.push(("grant_type", "refresh_token".into()));
                form.push(("scope", format!("{scope} offline_access")));
                form.push(("refresh_token", current));
            }
        }
        let answer = self
            .http
            .send(Service::Entra, || self.http.client().post(&self.token_endpoint).form(&form))
            .await?;
        if !(200..300).contains(&answer.status) {
            return Err(token_error(answer.status, &answer.json_or_null(), &self.credentials));
        }
        let (token, lifetime, rotated) = token_answer(&answer.json()?)?;
        if let (Credentials::Delegated { refresh_token, on_rotate, .. }, Some(new)) =
            (&self.credentials, rotated.as_deref())
        {
            let changed = {
                let mut rt = refresh_token.lock().unwrap();
                let changed = *rt != new;
                *rt = new.to_string();
                changed
            };
            if changed && let Some(cb) = on_rotate {
                cb(new.to_string());
            }
        }
        Ok((token, lifetime))
    }

    fn assertion(
        &self,
        client_id: &str,
        certificate: &Certificate,
        key: &PrivateKey,
        algorithm: AssertionAlgorithm,
    ) -> Result<String, M365Error> {
        let now = Timestamp::now().as_second();
        let (alg, header) = match algorithm {
            AssertionAlgorithm::PS256 => (Alg::PS256, json!({"x5t#S256": certificate.x5t_s256()})),
            AssertionAlgorithm::RS256 => (Alg::RS256, json!({"x5t": certificate.x5t()})),
        };
        let claims = json!({
            "aud": self.token_endpoint,
            "iss": client_id,
            "sub": client_id,
            "jti": jose::guid(),
            "nbf": now,
            "iat": now,
            "exp": now + 600,
        });
        jose::sign_rsa(alg, key, header, &claims)
            .map_err(|e| M365Error::CredentialsInvalid(format!("cannot sign the client assertion: {e}")))
    }
}

/// A token endpoint's success: the access token, its lifetime in seconds and a new refresh token
/// if one came. Tokens are opaque, but must be what a header and a Secret can carry: visible
/// ASCII, at most 32 KiB (Entra ID's are a few KiB).
pub(super) fn token_answer(body: &Value) -> Result<(String, i64, Option<String>), M365Error> {
    let is_token = |t: &&str| !t.is_empty() && t.len() <= 32 << 10 && t.bytes().all(|b| b.is_ascii_graphic());
    let token = body["access_token"].as_str().filter(is_token).ok_or_else(|| {
        M365Error::Protocol("the token endpoint answered without a usable access_token".into())
    })?;
    let lifetime = body["expires_in"]
        .as_i64()
        .or_else(|| body["expires_in"].as_str()?.trim().parse().ok())
        .unwrap_or(3599);
    let refresh = match body.get("refresh_token") {
        None | Some(Value::Null) => None,
        Some(v) => Some(v.as_str().filter(is_token).map(str::to_string).ok_or_else(|| {
            M365Error::Protocol("the token endpoint answered a refresh_token that is no token".into())
        })?),
    };
    Ok((token.to_string(), lifetime, refresh))
}

/// `{authority}/{tenant}/oauth2/v2.0/token`, the tenant id a single path segment whatever it holds.
pub fn token_endpoint(authority_host: &str, tenant_id: &str) -> Result<String, M365Error> {
    let mut url = reqwest::Url::parse(authority_host.trim_end_matches('/'))
        .map_err(|e| M365Error::InvalidSpec(format!("spec.authorityHost is not a URL ({e})")))?;
    url.path_segments_mut()
        .map_err(|()| M365Error::InvalidSpec("spec.authorityHost cannot take a path".into()))?
        .pop_if_empty()
        .extend([tenant_id, "oauth2", "v2.0", "token"]);
    Ok(url.to_string())
}

const JWT_BEARER: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

/// Entra's error body, turned into a message that names the fix. Only `error`, the AADSTS code
/// and its description are used: none of them carries a credential.
pub(super) fn token_error(status: u16, body: &Value, credentials: &Credentials) -> M365Error {
    // Bounded: the text comes from the network and lands in a status message.
    let error: String = body["error"]
        .as_str()
        .unwrap_or("unknown_error")
        .chars()
        .filter(|c| c.is_ascii_graphic())
        .take(60)
        .collect();
    let code = body["error_codes"][0].as_i64().unwrap_or(0);
    let description: String = body["error_description"]
        .as_str()
        .unwrap_or("")
        .lines()
        .next()
        .unwrap_or("")
        .chars()
        .take(300)
        .collect();
    let fix = match (code, credentials) {
        (700027, _) => {
            "upload this certificate to the app registration (Certificates & secrets) or put the registered one in the Secret"
        }
        (700024, _) => "check the clock of the node running the operator",
        (70021, _) => {
            "add a federated credential to the app for this cluster's issuer and the operator's ServiceAccount"
        }
        (7000215 | 7000218, _) => "SharePoint refuses client secrets anyway: use a certificate",
        (700016, _) => "check spec.auth.*.clientId and that the app exists in this tenant",
        (90002, _) => "check spec.tenantId",
        (700082 | 70000 | 50173 | 50076, Credentials::Delegated { .. }) => {
            "sign in again as a SharePoint administrator and store the new refresh token in the Secret"
        }
        (500011, _) => "check spec.adminUrl and spec.graphUrl belong to this tenant",
        _ => "see the AADSTS code in Microsoft's error reference",
    };
    let message = format!(
        "Entra ID refused the {} token request ({status} {error}, AADSTS{code}: {description}); fix: {fix}",
        credentials.kind()
    );
    M365Error::CredentialsInvalid(message)
}
