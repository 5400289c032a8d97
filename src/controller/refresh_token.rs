//! Credentials that last: a rotated refresh token is written back with optimistic concurrency and
//! never lost when it cannot be; warnings come before a certificate expires or a refresh token
//! ages out. No token, key or assertion is ever logged or written anywhere but the Secret.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use jiff::Timestamp;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::ResourceExt;
use kube::api::Api;
use sha2::{Digest, Sha256};

/// Annotation on the refresh-token Secret: when the token in it was issued (RFC 3339).
pub const ROTATED_AT: &str = crate::api::annotations::REFRESH_TOKEN_ROTATED_AT;

/// Write attempts per cycle (a conflict is re-read and retried).
const WRITE_ATTEMPTS: usize = 5;

fn digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// What became of one write-back.
enum Written {
    Yes,
    /// The Secret holds a token this process never held (a person's): it wins.
    Superseded(String),
    /// The Secret no longer names the tenant (or is no longer a refresh token's type).
    Unbound,
}

/// A delegated tenant's refresh token: where it is stored, and what this process did with it.
pub struct RefreshTokenStore {
    api: Api<Secret>,
    namespace: String,
    /// The tenant whose token this is: the Secret must still be bound to it to be written.
    tenant: String,
    secret: String,
    key: String,
    state: Mutex<StoreState>,
}

#[derive(Default)]
struct StoreState {
    /// Rotated refresh tokens not stored in the Secret yet, oldest first (each rotation is
    /// written, in order, so the Secret always ends with the newest).
    unsaved: std::collections::VecDeque<(String, Timestamp)>,
    /// Digests of every refresh token this process held: finding one of them in the Secret is
    /// its own write or a stale copy, not a new token from a person.
    held: HashSet<[u8; 32]>,
    last_rotation: Option<Timestamp>,
    /// Why the last write-back failed (never a token).
    failure: Option<String>,
}

impl RefreshTokenStore {
    pub fn new(
        api: Api<Secret>,
        namespace: &str,
        tenant: &str,
        secret: &str,
        key: &str,
        token: &str,
        issued: Option<Timestamp>,
    ) -> Arc<RefreshTokenStore> {
        let store = RefreshTokenStore {
            api,
            namespace: namespace.into(),
            tenant: tenant.into(),
            secret: secret.into(),
            key: key.into(),
            state: Mutex::new(StoreState { last_rotation: issued, ..StoreState::default() }),
        };
        store.remember(token);
        Arc::new(store)
    }

    /// The token endpoint issued `token`: keep it until the Secret holds it.
    pub fn rotated(&self, token: String, at: Timestamp) {
        let mut s = self.state.lock().unwrap();
        s.held.insert(digest(&token));
        s.unsaved.push_back((token, at));
        s.last_rotation = Some(at);
    }

    /// Whether this process held `token` (its own write-back, or an older copy).
    pub fn held(&self, token: &str) -> bool {
        self.state.lock().unwrap().held.contains(&digest(token))
    }

    /// A token this store starts from.
    fn remember(&self, token: &str) {
        self.state.lock().unwrap().held.insert(digest(token));
    }

    /// A token a person stored in the Secret (after signing in again): it supersedes every
    /// rotation not written yet, which must not overwrite it.
    pub fn adopt(&self, token: &str) {
        let mut s = self.state.lock().unwrap();
        s.held.insert(digest(token));
        s.unsaved.clear();
        s.failure = None;
    }

    /// Whether this store writes to the Secret `secret`, key `key`.
    pub fn stores_in(&self, secret: &str, key: &str) -> bool {
        self.secret == secret && self.key == key
    }

    /// Stores the rotated tokens the Secret does not hold yet, oldest first: read, set the key
    /// and the rotation annotation, replace with the read's `resourceVersion` as precondition; a
    /// conflict (another writer came in between) is read again and retried. Returns how many
    /// were written.
    pub async fn persist(&self) -> Result<usize, String> {
        let mut written = 0;
        loop {
            let Some((token, at)) = self.state.lock().unwrap().unsaved.front().cloned() else { break };
            match self.write_one(&token, at).await {
                Ok(true) => {
                    let mut s = self.state.lock().unwrap();
                    s.unsaved.pop_front();
                    s.failure = None;
                    written += 1;
                }
                // Superseded by a person's token: the queue was dropped.
                Ok(false) => {}
                Err(e) => {
                    let message = format!("cannot update Secret {}/{}: {e}", self.namespace, self.secret);
                    self.state.lock().unwrap().failure = Some(message.clone());
                    return Err(message);
                }
            }
        }
        Ok(written)
    }

    async fn write_one(&self, token: &str, at: Timestamp) -> Result<bool, String> {
        let mut last = String::new();
        for _ in 0..WRITE_ATTEMPTS {
            match self.write(token, at).await {
                Ok(Written::Yes) => return Ok(true),
                Ok(Written::Superseded(theirs)) => {
                    // A person stored a token this process never held: theirs wins (it is
                    // adopted at the next cycle) and nothing older is written over it.
                    self.adopt(&theirs);
                    return Ok(false);
                }
                Ok(Written::Unbound) => {
                    return Err(format!(
                        "the Secret is no longer bound to tenant {} ({}): nothing is written to it",
                        self.tenant,
                        crate::m365::TENANTS_ANNOTATION
                    ));
                }
                Err(kube::Error::Api(e)) if e.code == 409 => last = "another writer kept changing it".into(),
                Err(e) => return Err(describe(&e)),
            }
        }
        Err(last)
    }

    async fn write(&self, token: &str, at: Timestamp) -> Result<Written, kube::Error> {
        // get + replace: the chart grants `get` and `update` on Secrets, nothing more; the read's
        // resourceVersion makes the replace fail with 409 if anyone wrote in between.
        let mut current = self.api.get(&self.secret).await?;
        let bound = crate::m365::bound_tenants(
            current.annotations().get(crate::m365::TENANTS_ANNOTATION).map(String::as_str),
        );
        let opaque = current.type_.as_deref().is_none_or(|t| t == crate::m365::OPAQUE_TYPE);
        if !bound.contains(&self.tenant) || !opaque {
            return Ok(Written::Unbound);
        }
        let theirs = current
            .data
            .as_ref()
            .and_then(|d| d.get(&self.key))
            .map(|v| String::from_utf8_lossy(&v.0).trim().to_string());
        if let Some(theirs) = theirs.filter(|t| !t.is_empty() && !self.held(t)) {
            return Ok(Written::Superseded(theirs));
        }
        current.data.get_or_insert_with(Default::default).insert(self.key.clone(), ByteString(token.into()));
        current
            .metadata
            .annotations
            .get_or_insert_with(Default::default)
            .insert(ROTATED_AT.into(), at.to_string());
        self.api.replace(&self.secret, &Default::default(), &current).await.map(|_| Written::Yes)
    }

    pub fn health(&self) -> (Option<Timestamp>, Option<String>) {
        let s = self.state.lock().unwrap();
        let pending = (!s.unsaved.is_empty()).then(|| s.failure.clone()).flatten();
        (s.last_rotation, pending)
    }
}

/// A Kubernetes error in words, without a response body (bodies may echo the request).
fn describe(e: &kube::Error) -> String {
    match e {
        kube::Error::Api(s) => {
            format!("{} {} ({})", s.code, s.reason, s.message.chars().take(160).collect::<String>())
        }
        other => other.to_string().chars().take(160).collect(),
    }
}
