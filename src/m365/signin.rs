//! A SharePoint administrator signing in to a public client (`reference/m365-protocol.md` §13):
//! the authorization code flow with PKCE on a loopback redirect, and the device authorization
//! flow (RFC 8628). One resource per token request, as Entra ID requires (AADSTS70011): the admin
//! host's `/.default` with `offline_access` at sign-in, Graph redeemed afterwards with the same
//! refresh token. Every request goes through the client's endpoint policy, caps and deadline.

use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use sha2::{Digest, Sha256};

use super::auth::{token_answer, token_error};
use super::http::{Http, Reach, Service, client_builder};
use super::{Credentials, M365Error, TenantConfig};

/// Which way the person signs in (a Conditional Access refusal names the other).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flow {
    Browser,
    DeviceCode,
}

/// What a sign-in (or a redemption) gave. Never printed: `Debug` shows no token.
pub struct Tokens {
    pub access_token: String,
    pub refresh_token: String,
}

impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Tokens")
    }
}

impl Tokens {
    /// The access token's claims (decoded, not verified: for naming the user, role and scopes).
    pub fn claims(&self) -> Value {
        crate::jose::Jws::decode(&self.access_token).map(|j| j.claims).unwrap_or(Value::Null)
    }
}

/// A PKCE pair: the verifier kept here, its S256 challenge sent.
pub struct Pkce {
    pub verifier: String,
    pub challenge: String,
}

impl Pkce {
    pub fn new() -> Pkce {
        let mut bytes = [0u8; 32];
        crate::jose::getrandom_fill(&mut bytes);
        let verifier = crate::jose::b64url(&bytes);
        let challenge = crate::jose::b64url(&Sha256::digest(verifier.as_bytes()));
        Pkce { verifier, challenge }
    }
}

impl Default for Pkce {
    fn default() -> Self {
        Pkce::new()
    }
}

/// What the device authorization endpoint said: the code to poll with and what to tell the person.
#[derive(Clone)]
pub struct DeviceAuthorization {
    device_code: String,
    pub user_code: String,
    pub verification_uri: String,
    pub message: String,
    pub expires_in: Duration,
    pub interval: Duration,
}

impl std::fmt::Debug for DeviceAuthorization {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeviceAuthorization").field("verification_uri", &self.verification_uri).finish()
    }
}

/// One poll of a device code.
#[derive(Debug)]
pub enum Poll {
    /// Nobody has signed in yet: poll again after the interval.
    Pending,
    /// Poll less often: 5 s more, from now on (RFC 8628 §3.5).
    SlowDown,
    Signed(Tokens),
}

/// A public client of one tenant's authority.
pub struct SignIn {
    http: Arc<Http>,
    authority: String,
    tenant_id: String,
    client_id: String,
}

impl SignIn {
    pub fn new(config: &TenantConfig, client_id: &str) -> Result<SignIn, M365Error> {
        crate::install_crypto_provider();
        let mut builder = client_builder(&config.user_agent());
        if let Some(pem) = &config.ca_bundle {
            for c in reqwest::Certificate::from_pem_bundle(pem)
                .map_err(|e| M365Error::CredentialsInvalid(format!("the CA bundle is not PEM: {e}")))?
            {
                builder = builder.add_root_certificate(c);
            }
        }
        let client = builder
            .build()
            .map_err(|e| M365Error::Unreachable(format!("cannot build the HTTP client: {e}")))?;
        let reach = Reach {
            cloud: config.cloud,
            policy: config.policy.clone(),
            deadline: config.call_deadline,
            max_wait: config.max_throttle_wait,
        };
        Ok(SignIn {
            http: Arc::new(Http::new(client, reach)),
            authority: config.authority_host.clone(),
            tenant_id: config.tenant_id.clone(),
            client_id: client_id.to_string(),
        })
    }

    fn endpoint(&self, last: &str) -> Result<String, M365Error> {
        Ok(super::auth::token_endpoint(&self.authority, &self.tenant_id)?
            .replace("/token", &format!("/{last}")))
    }

    /// The URL the person opens: authorization code with PKCE, answered at `redirect_uri`.
    pub fn authorize_url(
        &self,
        scope: &str,
        redirect_uri: &str,
        state: &str,
        pkce: &Pkce,
    ) -> Result<String, M365Error> {
        let mut url = reqwest::Url::parse(&self.endpoint("authorize")?)
            .map_err(|e| M365Error::InvalidSpec(format!("the authorization endpoint is not a URL ({e})")))?;
        url.query_pairs_mut()
            .append_pair("client_id", &self.client_id)
            .append_pair("response_type", "code")
            .append_pair("redirect_uri", redirect_uri)
            .append_pair("response_mode", "query")
            .append_pair("scope", scope)
            .append_pair("state", state)
            .append_pair("code_challenge", &pkce.challenge)
            .append_pair("code_challenge_method", "S256")
            .append_pair("prompt", "select_account");
        // Checked as every request is: the person's browser must be sent to the cloud's authority.
        self.http.reach_admits(Service::Entra, &url)?;
        Ok(url.to_string())
    }

    /// Redeems the code the loopback redirect brought.
    pub async fn redeem_code(
        &self,
        code: &str,
        redirect_uri: &str,
        scope: &str,
        pkce: &Pkce,
    ) -> Result<Tokens, M365Error> {
        let form = [
            ("client_id", self.client_id.as_str()),
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", redirect_uri),
            ("code_verifier", pkce.verifier.as_str()),
            ("scope", scope),
        ];
        let answer = self.token_request(&form).await?;
        if !(200..300).contains(&answer.0) {
            return Err(refusal(answer.0, &answer.1, Flow::Browser));
        }
        tokens(&answer.1)
    }

    /// Starts a device sign-in.
    pub async fn start_device(&self, scope: &str) -> Result<DeviceAuthorization, M365Error> {
        let url = self.endpoint("devicecode")?;
        let form = [("client_id", self.client_id.as_str()), ("scope", scope)];
        let answer = self.http.send(Service::Entra, || self.http.client().post(&url).form(&form)).await?;
        let body = answer.json_or_null();
        if !(200..300).contains(&answer.status) {
            return Err(refusal(answer.status, &body, Flow::DeviceCode));
        }
        let text = |k: &str| body[k].as_str().map(|s| s.chars().take(500).collect::<String>());
        let secs = |k: &str, default: u64| {
            body[k].as_u64().or_else(|| body[k].as_str()?.parse().ok()).unwrap_or(default).clamp(1, 3600)
        };
        let missing =
            || M365Error::Protocol("the device authorization endpoint answered without a device code".into());
        Ok(DeviceAuthorization {
            device_code: text("device_code").ok_or_else(missing)?,
            user_code: text("user_code").ok_or_else(missing)?,
            verification_uri: text("verification_uri").ok_or_else(missing)?,
            message: text("message").unwrap_or_default(),
            expires_in: Duration::from_secs(secs("expires_in", 900)),
            interval: Duration::from_secs(secs("interval", 5)),
        })
    }

    /// One poll of a device code.
    pub async fn poll_device(&self, device: &DeviceAuthorization) -> Result<Poll, M365Error> {
        let form = [
            ("client_id", self.client_id.as_str()),
            ("grant_type", "urn:ietf:params:oauth:grant-type:device_code"),
            ("device_code", device.device_code.as_str()),
        ];
        let (status, body) = self.token_request(&form).await?;
        if (200..300).contains(&status) {
            return tokens(&body).map(Poll::Signed);
        }
        match body["error"].as_str() {
            Some("authorization_pending") => Ok(Poll::Pending),
            Some("slow_down") => Ok(Poll::SlowDown),
            _ => Err(refusal(status, &body, Flow::DeviceCode)),
        }
    }

    /// Redeems `refresh_token` for `resource` (e.g. Graph, after signing in for SharePoint).
    pub async fn redeem(&self, refresh_token: &str, resource: &str) -> Result<Tokens, M365Error> {
        let scope = format!("{}/.default offline_access", resource.trim_end_matches('/'));
        let form = [
            ("client_id", self.client_id.as_str()),
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh_token),
            ("scope", scope.as_str()),
        ];
        let (status, body) = self.token_request(&form).await?;
        if !(200..300).contains(&status) {
            return Err(refusal(status, &body, Flow::Browser));
        }
        let mut t = tokens(&body)?;
        if t.refresh_token.is_empty() {
            t.refresh_token = refresh_token.to_string();
        }
        Ok(t)
    }

    async fn token_request(&self, form: &[(&str, &str)]) -> Result<(u16, Value), M365Error> {
        let url = super::auth::token_endpoint(&self.authority, &self.tenant_id)?;
        let answer = self.http.send(Service::Entra, || self.http.client().post(&url).form(form)).await?;
        Ok((answer.status, answer.json_or_null()))
    }
}

/// The scope a sign-in asks for: one resource (the admin host) and a refresh token.
pub fn sign_in_scope(admin_url: &str) -> String {
    format!("{}/.default offline_access", admin_url.trim_end_matches('/'))
}

fn tokens(body: &Value) -> Result<Tokens, M365Error> {
    let (access_token, _, refresh) = token_answer(body)?;
    Ok(Tokens { access_token, refresh_token: refresh.unwrap_or_default() })
}

/// Entra ID's refusal of a sign-in, named for the person at the keyboard.
pub fn refusal(status: u16, body: &Value, flow: Flow) -> M365Error {
    let error = body["error"].as_str().unwrap_or("");
    let code = body["error_codes"][0].as_i64().unwrap_or(0);
    let other = match flow {
        Flow::Browser => "the device code flow (onedrive-operator login --device-code)",
        Flow::DeviceCode => "the browser sign-in (onedrive-operator login without --device-code)",
    };
    let said = |what: String| M365Error::CredentialsInvalid(what);
    match (error, code) {
        ("authorization_declined" | "access_denied", _) => {
            said("the sign-in was declined at the verification page: nothing was stored; run login again to retry".into())
        }
        ("expired_token", _) | (_, 70020) => {
            said("the code expired before anyone signed in with it: nothing was stored; run login again and sign in within its lifetime".into())
        }
        ("bad_verification_code", _) => said("Entra ID does not know this device code: run login again".into()),
        (_, 53000..=53099) => said(format!(
            "Conditional Access blocked this sign-in (AADSTS{code}): try {other}, or ask your Entra ID administrator which sign-ins the policy allows"
        )),
        (_, 50076 | 50079) => said(format!(
            "Entra ID requires multi-factor authentication for this sign-in (AADSTS{code}): complete it in the browser, or try {other}"
        )),
        (_, 65001) => said(
            "the app has no consent for these permissions (AADSTS65001): an administrator grants admin consent to the app registration (API permissions → Grant admin consent)".into(),
        ),
        (_, 70011) => said(
            "Entra ID refused the scope (AADSTS70011): a sign-in asks for one resource at a time; check spec.adminUrl".into(),
        ),
        (_, 7000218) => said(
            "the app registration is not a public client (AADSTS7000218): set Authentication → Advanced settings → Allow public client flows to Yes".into(),
        ),
        _ => {
            let delegated = Credentials::Delegated {
                client_id: String::new(),
                refresh_token: Default::default(),
                on_rotate: None,
            };
            token_error(status, body, &delegated)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn pkce_challenges_are_the_s256_of_their_verifier() {
        let p = Pkce::new();
        assert!(p.verifier.len() >= 43);
        assert_eq!(p.challenge, crate::jose::b64url(&Sha256::digest(p.verifier.as_bytes())));
        assert_ne!(Pkce::new().verifier, p.verifier);
    }

    #[test]
    fn a_conditional_access_refusal_names_the_other_flow() {
        let body = json!({"error": "invalid_grant", "error_codes": [53003]});
        let e = refusal(400, &body, Flow::DeviceCode).to_string();
        assert!(e.contains("AADSTS53003") && e.contains("without --device-code"), "{e}");
        let e = refusal(400, &body, Flow::Browser).to_string();
        assert!(e.contains("login --device-code"), "{e}");
        let e = refusal(400, &json!({"error": "authorization_declined"}), Flow::DeviceCode).to_string();
        assert!(e.contains("declined"), "{e}");
        let e = refusal(400, &json!({"error": "expired_token"}), Flow::DeviceCode).to_string();
        assert!(e.contains("expired"), "{e}");
    }
}
