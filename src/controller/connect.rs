//! Connecting to a tenant: the client's lifecycle: built from the tenant's spec and Secrets, and kept — with its
//! token cache — unless the credentials really change. The refresh token the operator wrote back
//! itself, or an older copy of it, is no change; a token a person stored is adopted in place.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::Secret;
use kube::ResourceExt;
use kube::api::Api;
use kube::runtime::events::EventType;

use super::memory::TenantMemory;
use super::reconciler::Reconciler;
use super::refresh_token::RefreshTokenStore;
use crate::api::{ConditionStatus, OneDriveTenant, OneDriveTenantStatus, TenantAuthKind};
use crate::m365::{
    M365Error, RotationCallback, SecretScope, SecretStore, StoredSecret, TENANTS_ANNOTATION, TenantClient,
    TenantConfig, credentials_for,
};
use crate::plan::tenant::{CREDENTIALS_EXPIRING, CREDENTIALS_NOT_PERSISTED, CredentialHealth};

/// The longest one call of a cycle waits on Microsoft's `Retry-After` before the cycle gives up,
/// records `Throttled` and is requeued for when Microsoft said. A longer wait (the command-line
/// tools wait up to two minutes) would hold one of the `--concurrency` slots that every other
/// tenant's cycles share.
const CYCLE_THROTTLE_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// The Secrets a tenant references, and when its refresh token was issued (the Secret's rotation
/// annotation, or its creation).
struct FoundSecrets {
    store: SecretStore,
    issued: Option<Timestamp>,
}

impl Reconciler {
    /// Connects: builds (or keeps) the tenant's client for its current spec and Secrets.
    pub(super) async fn connect(
        &self,
        tenant: &OneDriveTenant,
        memory: &mut Option<TenantMemory>,
    ) -> Result<(), M365Error> {
        let found = self.secrets_for(tenant).await?;
        let refresh_key = refresh_token_ref(tenant);
        let generation = tenant.metadata.generation.unwrap_or(0);
        let fingerprint = fingerprint(generation, &found.store, refresh_key.as_ref());
        if let Some(m) = memory.as_mut()
            && m.fingerprint == fingerprint
        {
            adopt_refresh_token(m, &found.store, refresh_key.as_ref());
            return Ok(());
        }
        let stored = refresh_key.as_ref().and_then(|(name, key)| secret_text(&found.store, name, key));
        // The newest refresh token this process holds wins over an older copy in the same Secret.
        // (What is remembered is replaced only once the new client exists: a failed rebuild loses
        // nothing.)
        let carried = memory.as_ref().and_then(|p| {
            let store = p.refresh.clone()?;
            let newest = p.client.credentials().refresh_token()?;
            let same_place = refresh_key.as_ref().is_some_and(|(n, k)| store.stores_in(n, k));
            (same_place && stored.as_deref().is_none_or(|s| store.held(s))).then_some((store, newest))
        });
        let refresh = match (&refresh_key, stored.as_deref(), &carried) {
            (_, _, Some((store, _))) => Some(store.clone()),
            (Some((name, key)), Some(token), None) => {
                Some(self.refresh_store(tenant, name, key, token, found.issued))
            }
            _ => None,
        };
        let on_rotate = refresh.clone().map(|store| {
            let clock = self.options.clock.clone();
            Arc::new(move |token: String| store.rotated(token, clock())) as RotationCallback
        });
        let env = |k: &str| std::env::var(k).ok();
        let tenant_name = tenant.metadata.name.as_deref().unwrap_or_default();
        let scope =
            SecretScope { secrets: &found.store, namespace: &self.options.namespace, tenant: tenant_name };
        let credentials = credentials_for(&tenant.spec, &scope, &env, on_rotate)?;
        if let Some((_, newest)) = carried {
            credentials.adopt_refresh_token(newest);
        }
        let client = Arc::new(TenantClient::new(self.client_config(tenant), credentials)?);
        // The observations describe the tenant's users and stay; the client does not.
        let observations = memory.take().map(|m| m.observations).unwrap_or_default();
        *memory = Some(TenantMemory {
            fingerprint,
            refused: None,
            client,
            refresh,
            observations,
            last_counters: HashMap::new(),
            settings_pace: Default::default(),
        });
        Ok(())
    }

    /// Where a delegated tenant's rotated refresh tokens are written back.
    fn refresh_store(
        &self,
        tenant: &OneDriveTenant,
        secret: &str,
        key: &str,
        token: &str,
        issued: Option<Timestamp>,
    ) -> Arc<RefreshTokenStore> {
        let namespace = &self.options.namespace;
        let name = tenant.metadata.name.as_deref().unwrap_or_default();
        RefreshTokenStore::new(
            Api::namespaced(self.client.clone(), namespace),
            namespace,
            name,
            secret,
            key,
            token,
            issued,
        )
    }

    /// The client's configuration: the tenant's spec under the operator's endpoint policy, with
    /// the operator's identity, CAs and clock.
    fn client_config(&self, tenant: &OneDriveTenant) -> TenantConfig {
        let mut config = TenantConfig::from_spec(&tenant.spec).with_policy(self.options.endpoints.clone());
        config.organization = self.options.organization.clone();
        config.replica = self.options.replica.clone();
        config.max_throttle_wait = CYCLE_THROTTLE_WAIT;
        config.ca_bundle = self.options.ca_bundle.clone();
        config.clock = crate::m365::ClientClock(self.options.clock.clone());
        config
    }

    /// The Secrets the tenant references, and when its refresh token was issued.
    async fn secrets_for(&self, tenant: &OneDriveTenant) -> Result<FoundSecrets, M365Error> {
        let auth = &tenant.spec.auth;
        let name = match auth.kind().map_err(M365Error::CredentialsInvalid)? {
            TenantAuthKind::Certificate => auth.certificate.as_ref().map(|c| c.secret_ref.name.clone()),
            TenantAuthKind::Delegated => {
                auth.delegated.as_ref().map(|d| d.refresh_token_secret_ref.name.clone())
            }
            TenantAuthKind::WorkloadIdentity => None,
        };
        let mut found = FoundSecrets { store: SecretStore::new(), issued: None };
        let Some(name) = name else { return Ok(found) };
        let api: Api<Secret> = Api::namespaced(self.client.clone(), &self.options.namespace);
        match api.get_opt(&name).await {
            Ok(Some(secret)) => {
                let annotated =
                    secret.annotations().get(super::refresh_token::ROTATED_AT).and_then(|t| t.parse().ok());
                found.issued = annotated.or(secret.metadata.creation_timestamp.as_ref().map(|t| t.0));
                let bound = secret.annotations().get(TENANTS_ANNOTATION).cloned();
                let data: BTreeMap<String, Vec<u8>> =
                    secret.data.unwrap_or_default().into_iter().map(|(k, v)| (k, v.0)).collect();
                found
                    .store
                    .insert(name, StoredSecret::from_parts(secret.type_.as_deref(), bound.as_deref(), data));
                Ok(found)
            }
            Ok(None) => Ok(found),
            Err(e) => Err(M365Error::Unreachable(format!(
                "cannot read Secret {}/{name}: {e}",
                self.options.namespace
            ))),
        }
    }

    /// Stores a rotated refresh token (retried every cycle until it is), and says how the
    /// tenant's credentials stand.
    pub(super) async fn credential_health(
        &self,
        name: &str,
        memory: Option<&TenantMemory>,
    ) -> CredentialHealth {
        let Some(rt) = memory else { return CredentialHealth::default() };
        let mut health = CredentialHealth {
            expires_at: rt.client.credentials().expires_at(),
            ..CredentialHealth::default()
        };
        if let Some(store) = &rt.refresh {
            self.store_rotations(name, store).await;
            let (last_rotation, not_persisted) = store.health();
            health = CredentialHealth { last_rotation, not_persisted, delegated: true, ..health };
        }
        self.options.metrics.credentials(name, &health);
        health
    }

    /// Writes the rotated refresh tokens the Secret does not hold yet, and counts them.
    pub(super) async fn store_rotations(&self, name: &str, store: &RefreshTokenStore) {
        match store.persist().await {
            Ok(written) => self.options.metrics.refresh_tokens_written(name, written),
            Err(e) => {
                tracing::warn!(tenant = name, error = %e, "the rotated refresh token is kept in memory only")
            }
        }
    }

    /// A Warning Event when a credential condition turns True (or changes its reason while True).
    pub(super) async fn credential_events(
        &self,
        tenant: &OneDriveTenant,
        before: &OneDriveTenantStatus,
        after: &OneDriveTenantStatus,
    ) {
        for type_ in [CREDENTIALS_EXPIRING, CREDENTIALS_NOT_PERSISTED] {
            let old = crate::api::find_condition(&before.conditions, type_);
            let Some(new) = crate::api::find_condition(&after.conditions, type_) else { continue };
            let changed = old.is_none_or(|o| o.status != new.status || o.reason != new.reason);
            if ConditionStatus::True.is(&new.status) && changed {
                self.event(tenant, EventType::Warning, &new.reason, new.message.clone()).await;
            }
        }
    }
}

/// The delegated refresh token's Secret and key, if the tenant uses one.
fn refresh_token_ref(tenant: &OneDriveTenant) -> Option<(String, String)> {
    let d = tenant.spec.auth.delegated.as_ref()?;
    Some((d.refresh_token_secret_ref.name.clone(), d.refresh_token_secret_ref.key.clone()))
}

fn secret_text(store: &SecretStore, name: &str, key: &str) -> Option<String> {
    let value = String::from_utf8_lossy(store.get(name)?.data.get(key)?).trim().to_string();
    (!value.is_empty()).then_some(value)
}

/// What makes the tenant client: the spec's generation and the Secrets' content, without the
/// refresh token (which the operator rewrites itself; see [`adopt_refresh_token`]). A digest, so
/// no key material is kept twice.
fn fingerprint(generation: i64, store: &SecretStore, refresh: Option<&(String, String)>) -> String {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    h.update(generation.to_le_bytes());
    for (name, secret) in store {
        // A binding or type change is a change: the Secret may no longer be usable.
        let head = format!("{}|{}", secret.type_.as_deref().unwrap_or_default(), secret.tenants.join(","));
        for part in [name.as_bytes(), head.as_bytes()] {
            h.update((part.len() as u64).to_le_bytes());
            h.update(part);
        }
        for (key, value) in &secret.data {
            if refresh.is_some_and(|(n, k)| n == name && k == key) {
                continue;
            }
            for part in [name.as_bytes(), key.as_bytes(), value.as_slice()] {
                h.update((part.len() as u64).to_le_bytes());
                h.update(part);
            }
        }
    }
    crate::jose::b64url(&h.finalize())
}

/// A refresh token in the Secret that this process never held was put there by a person (after
/// signing in again): it is used from now on. The operator's own write-back, or an older copy, is
/// not news.
fn adopt_refresh_token(rt: &TenantMemory, store: &SecretStore, refresh: Option<&(String, String)>) {
    let (Some((name, key)), Some(tokens)) = (refresh, rt.refresh.as_ref()) else { return };
    let Some(stored) = secret_text(store, name, key) else { return };
    if !tokens.held(&stored) {
        tokens.adopt(&stored);
        rt.client.credentials().adopt_refresh_token(stored);
    }
}
