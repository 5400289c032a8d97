//! The tenant client against the simulator over loopback HTTP (no mocks of the client's HTTP).

mod common;

use std::io::Write;
use std::sync::{Arc, Mutex};

use common::*;
use onedrive_operator::api::{
    AssertionAlgorithm, CertificateAuth, DelegatedAuth, EnqueueMethod, OneDriveTenantSpec, SecretKeyRef,
    SecretRef, TenantAuth, TenantWideListing, WorkloadIdentityAuth,
};
use onedrive_operator::jose;
use onedrive_operator::m365::{
    Credentials, M365Error, SecretStore, TenantClient, TenantConfig, credentials_for,
};
use onedrive_operator::plan::{Observation, user_key};
use onedrive_operator::simulator::{
    self, AppOnlyEnqueue, Config, FaultConfig, LookupQuirk, SimHandle, SiteState, UserSpec,
};

async fn start(c: Config) -> SimHandle {
    simulator::start(c, "127.0.0.1:0".parse().unwrap()).await.unwrap()
}

fn spec(sim: &SimHandle, auth: TenantAuth, method: EnqueueMethod) -> OneDriveTenantSpec {
    OneDriveTenantSpec {
        tenant_id: sim.tenant_id().into(),
        admin_url: sim.admin_url(),
        cloud: Default::default(),
        graph_url: Some(sim.graph_url()),
        authority_host: Some(sim.authority_host()),
        geos: Vec::new(),
        auth,
        enqueue_method: method,
        batch_size: 200,
        poll_interval: "10s".into(),
        provisioning_timeout: "24h".into(),
        drift_check_interval: "24h".into(),
        tenant_wide_listing: Default::default(),
        allowed_namespaces: None,
        ..Default::default()
    }
}

fn cert_auth(algorithm: AssertionAlgorithm) -> TenantAuth {
    TenantAuth {
        certificate: Some(CertificateAuth {
            client_id: APP.into(),
            secret_ref: SecretRef { name: "app-cert".into() },
            algorithm,
        }),
        ..Default::default()
    }
}

fn secrets() -> SecretStore {
    let mut s = SecretStore::new();
    s.insert("app-cert".into(), stored_cert());
    s.insert("admin-token".into(), stored_token(REFRESH_TOKEN));
    s
}

fn client(spec: &OneDriveTenantSpec, env: &dyn Fn(&str) -> Option<String>) -> TenantClient {
    client_with(spec, env, |_| {})
}

fn client_with(
    spec: &OneDriveTenantSpec,
    env: &dyn Fn(&str) -> Option<String>,
    tune: impl FnOnce(&mut TenantConfig),
) -> TenantClient {
    let creds = credentials_for(spec, &scope(&secrets(), "onedrive-operator"), env, None).unwrap();
    let mut config = sim_client_config(spec);
    tune(&mut config);
    TenantClient::new(config, creds).unwrap()
}

fn no_env(_: &str) -> Option<String> {
    None
}

fn users(range: std::ops::Range<usize>) -> Vec<String> {
    range.map(|i| format!("user{i}@contoso.com")).collect()
}

#[tokio::test]
async fn certificate_auth_calls_graph_and_sharepoint_with_both_algorithms() {
    let sim = start(sim_config(3)).await;
    for alg in [AssertionAlgorithm::PS256, AssertionAlgorithm::RS256] {
        let c = client(&spec(&sim, cert_auth(alg), EnqueueMethod::ProfileLoader), &no_env);
        let seen = c.observe(&["has@contoso.com".into(), "user0@contoso.com".into()]).await.unwrap();
        assert!(matches!(seen["has@contoso.com"], Observation::HasSite { .. }));
        assert_eq!(seen["user0@contoso.com"], Observation::NoSite);
        c.sharepoint_reachable(&sim.admin_url()).await.unwrap();
        c.enqueue(&["user0@contoso.com".into()]).await.unwrap();
    }
    let stats = sim.stats();
    assert_eq!(stats.count("entra.token"), 4, "one token per resource per client: cached");
    assert!(stats.enqueues.iter().all(|e| e.token_kind == "app-certificate"));
    let expected = format!("NONISV|onedrive-operator|onedrive-operator/{}", env!("CARGO_PKG_VERSION"));
    assert_eq!(stats.user_agents.iter().collect::<Vec<_>>(), vec![&expected], "every request is decorated");
}

#[tokio::test]
async fn a_revoked_token_is_replaced_once_and_the_graph_request_sent_again() {
    let sim = start(sim_config(3)).await;
    let c = client(&spec(&sim, cert_auth(AssertionAlgorithm::PS256), EnqueueMethod::ProfileLoader), &no_env);
    assert!(!c.some_users(2).await.unwrap().is_empty());
    // An administrator revokes the app's sessions: the cached token is refused (401) and a fresh
    // one is fetched, for the directory listing `doctor` makes as for the lookups' `$batch`.
    sim.revoke_tokens();
    assert!(!c.some_users(2).await.unwrap().is_empty(), "sent again with a fresh token");
    sim.revoke_tokens();
    let seen = c.observe(&["has@contoso.com".into()]).await.unwrap();
    assert!(matches!(seen["has@contoso.com"], Observation::HasSite { .. }));
    assert_eq!(sim.stats().count("entra.token"), 3, "one token, then one after each revocation");
}

#[tokio::test]
async fn workload_identity_rereads_the_rotated_token_file() {
    let sim = start(sim_config(1)).await;
    let dir = std::env::temp_dir().join(format!("odo-wi-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("azure-identity-token");
    let now = sim.now().as_second();
    // First the kubelet projected a token for the wrong subject; then it rotated the file.
    std::fs::write(&file, federated_assertion("system:serviceaccount:other:sa", now)).unwrap();
    let env_file = file.display().to_string();
    let env = move |k: &str| match k {
        "AZURE_FEDERATED_TOKEN_FILE" => Some(env_file.clone()),
        "AZURE_CLIENT_ID" => Some(FED_APP.to_string()),
        _ => None,
    };
    let auth = TenantAuth {
        workload_identity: Some(WorkloadIdentityAuth { client_id: None }),
        ..Default::default()
    };
    let c = client(&spec(&sim, auth, EnqueueMethod::RequestPersonalSites), &env);
    let err = c.observe(&["user0@contoso.com".into()]).await.unwrap_err();
    assert_eq!(err.reason().as_str(), "CredentialsInvalid");
    assert!(
        err.to_string().contains("AADSTS70021") && err.to_string().contains("federated credential"),
        "{err}"
    );
    std::fs::write(&file, federated_assertion(SUBJECT, now)).unwrap();
    let seen = c.observe(&["user0@contoso.com".into()]).await.unwrap();
    assert_eq!(seen["user0@contoso.com"], Observation::NoSite);
    c.enqueue(&["user0@contoso.com".into()]).await.unwrap();
    assert_eq!(sim.stats().enqueues[0].token_kind, "app-federated");
    assert_eq!(sim.stats().enqueues[0].method, "RequestPersonalSites");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test]
async fn delegated_auth_hands_rotated_refresh_tokens_to_the_callback() {
    let mut c = sim_config(1);
    c.app_only_enqueue = AppOnlyEnqueue::Refuse;
    let sim = start(c).await;
    let auth = TenantAuth {
        delegated: Some(DelegatedAuth {
            client_id: APP.into(),
            refresh_token_secret_ref: SecretKeyRef {
                name: "admin-token".into(),
                key: "refresh_token".into(),
            },
        }),
        ..Default::default()
    };
    let s = spec(&sim, auth, EnqueueMethod::ProfileLoaderCsom);
    let rotated = Arc::new(Mutex::new(Vec::<String>::new()));
    let sink = rotated.clone();
    let creds = credentials_for(
        &s,
        &scope(&secrets(), "ns"),
        &no_env,
        Some(Arc::new(move |t| sink.lock().unwrap().push(t))),
    )
    .unwrap();
    let client = TenantClient::new(sim_client_config(&s), creds).unwrap();
    client.observe(&["user0@contoso.com".into()]).await.unwrap();
    client.enqueue(&["user0@contoso.com".into()]).await.unwrap();
    let got = rotated.lock().unwrap().clone();
    assert_eq!(got.len(), 2, "one rotation per resource token");
    assert!(got.iter().all(|t| t != REFRESH_TOKEN));
    assert_eq!(sim.stats().enqueues[0].token_kind, "delegated");
    assert_eq!(sim.site_state("user0@contoso.com").unwrap().code(), 1);
}

#[tokio::test]
async fn a_refused_token_kind_is_token_kind_refused_with_its_fix_for_every_method() {
    let mut c = sim_config(2);
    c.app_only_enqueue = AppOnlyEnqueue::Refuse;
    let sim = start(c).await;
    for method in
        [EnqueueMethod::ProfileLoader, EnqueueMethod::ProfileLoaderCsom, EnqueueMethod::RequestPersonalSites]
    {
        let c = client(&spec(&sim, cert_auth(AssertionAlgorithm::PS256), method), &no_env);
        let err = c.enqueue(&["user0@contoso.com".into()]).await.unwrap_err();
        assert_eq!(err.reason().as_str(), "TokenKindRefused", "{method:?}: {err}");
        assert!(err.to_string().contains("switch spec.auth to delegated"), "{err}");
        assert!(err.needs_person());
    }
    assert!(sim.stats().enqueues.is_empty());
    assert_eq!(sim.site_state("user0@contoso.com"), Some(SiteState::Uninitialized));
}

/// Every documented drive-lookup answer, classified: a drive; 404 `ResourceNotFound` and the
/// "Unable to retrieve user's mysite URL." quirk (400 `BadRequest`, 500 `UnknownError`) send the
/// user to the directory (licence, then sign-in); 404 `Request_ResourceNotFound` is no such user;
/// anything else is named (status and code). One drive lookup per user, one directory lookup per
/// user without a drive, 20 to a `$batch` (listings off: `tests/listing.rs` has them on).
#[tokio::test]
async fn observing_1000_users_classifies_every_answer_at_one_lookup_per_user_and_one_per_missing_drive() {
    let mut c = sim_config(0);
    let kind = |i: usize| match i {
        _ if i.is_multiple_of(3) => "site",
        _ if i % 40 == 7 => "unlicensed",
        _ if i % 50 == 11 => "blocked",
        _ if i % 40 == 13 => "quirk400",
        _ if i % 40 == 17 => "quirk500",
        _ if i % 100 == 99 => "broken",
        _ => "none",
    };
    c.users = (0..1000)
        .map(|i| {
            let mut u = UserSpec::new(format!("user{i}@contoso.com"));
            u.has_site = kind(i) == "site";
            u.licensed = kind(i) != "unlicensed";
            u.sign_in_allowed = kind(i) != "blocked";
            u.lookup_quirk = match kind(i) {
                "quirk400" => LookupQuirk::MysiteBadRequest,
                "quirk500" => LookupQuirk::MysiteUnknownError,
                "broken" => LookupQuirk::Broken,
                _ => LookupQuirk::None,
            };
            u
        })
        .collect();
    let sim = start(c).await;
    let per_user = OneDriveTenantSpec {
        tenant_wide_listing: TenantWideListing::Never,
        ..spec(&sim, cert_auth(AssertionAlgorithm::PS256), EnqueueMethod::ProfileLoader)
    };
    let c = client(&per_user, &no_env);
    let mut asked = users(0..990);
    asked.extend((0..10).map(|i| format!("ghost{i}@contoso.com")));
    let seen = c.observe(&asked).await.unwrap();
    assert_eq!(seen.len(), 1000);
    let without_drive = (0..990).filter(|i| !matches!(kind(*i), "site" | "broken")).count();
    let stats = sim.stats();
    let graph_requests = stats.graph_requests();
    println!("observing 1000 users ({without_drive} without a drive): {graph_requests} Graph HTTP requests");
    assert_eq!(stats.count("graph.batch.items") as usize, 1000 + without_drive);
    assert!(
        graph_requests as usize <= 50 + without_drive.div_ceil(20) + 1,
        "{graph_requests} Graph requests"
    );
    for i in 0..990 {
        let o = &seen[&user_key(&format!("user{i}@contoso.com"))];
        match (kind(i), o) {
            ("site", Observation::HasSite { url }) => {
                assert!(url.ends_with(&format!("/personal/user{i}_contoso_com/")))
            }
            ("unlicensed", Observation::UserNotLicensed)
            | ("blocked", Observation::SignInBlocked)
            | ("quirk400" | "quirk500" | "none", Observation::NoSite) => {}
            ("broken", Observation::LookupFailed { status: 500, code }) if code == "generalException" => {}
            (expected, _) => panic!("user{i}: expected {expected}, got {o:?}"),
        }
    }
    for i in 0..10 {
        assert_eq!(seen[format!("ghost{i}@contoso.com").as_str()], Observation::UserNotFound);
    }
}

#[tokio::test]
async fn with_30_percent_throttling_everything_completes_and_no_retry_is_early() {
    let mut c = sim_config(120);
    c.faults = FaultConfig { rate: 0.3, seed: 11, max_retry_after: 0.6, ..FaultConfig::default() };
    let sim = start(c).await;
    // One request at a time, so "early" can only mean the client ignored a Retry-After it had
    // received (concurrent requests already on the wire would be counted too).
    // Lookups one by one: the throttling under test is of `$batch` items.
    let c = client_with(
        &spec(&sim, cert_auth(AssertionAlgorithm::PS256), EnqueueMethod::ProfileLoader),
        &no_env,
        |cfg| {
            cfg.graph_concurrency = 1;
            cfg.tenant_wide_listing = false;
        },
    );
    let all = users(0..120);
    let seen = c.observe(&all).await.unwrap();
    assert_eq!(seen.len(), 120);
    assert!(seen.values().all(|o| *o == Observation::NoSite), "every lookup completed: {seen:?}");
    for chunk in all.chunks(60) {
        c.enqueue(chunk).await.unwrap();
    }
    let stats = sim.stats();
    assert!(stats.throttled > 5, "faults were injected: {}", stats.throttled);
    assert_eq!(stats.early_retries, 0, "a request came before its Retry-After had elapsed");
    assert_eq!(stats.enqueues.len(), 2);
    for e in &stats.enqueues {
        assert!(e.users.len() <= 200 && e.users.iter().all(|u| !u.trim().is_empty()));
    }
    for u in &all {
        assert_eq!(sim.site_state(u).unwrap().code(), 1);
    }
    let counters = c.counters();
    assert!(counters.values().sum::<u64>() > 0);
}

#[tokio::test]
async fn oversized_or_empty_enqueues_are_refused_before_sending() {
    let sim = start(sim_config(1)).await;
    let c = client(&spec(&sim, cert_auth(AssertionAlgorithm::PS256), EnqueueMethod::ProfileLoader), &no_env);
    let err = c.enqueue(&users(0..201)).await.unwrap_err();
    assert_eq!(err.reason().as_str(), "InvalidRequest");
    assert!(err.to_string().contains("at most 200"));
    let err = c.enqueue(&["user0@contoso.com".into(), "  ".into()]).await.unwrap_err();
    assert_eq!(err.reason().as_str(), "InvalidRequest");
    assert!(c.enqueue(&[]).await.is_err());
    assert_eq!(sim.stats().sharepoint_requests(), 0, "nothing was sent");
}

#[tokio::test]
async fn a_blocked_app_and_throttling_beyond_the_budget_are_reported_not_slept_through() {
    let mut c = sim_config(1);
    c.faults = FaultConfig { blocked: true, ..FaultConfig::default() };
    let sim = start(c).await;
    let c = client(&spec(&sim, cert_auth(AssertionAlgorithm::PS256), EnqueueMethod::ProfileLoader), &no_env);
    let err = c.enqueue(&["user0@contoso.com".into()]).await.unwrap_err();
    // The simulator's blocked mode answers 503 with Retry-After 120 s: beyond the budget.
    assert!(matches!(err, M365Error::Throttled { .. } | M365Error::Blocked(_)), "{err:?}");
    let mut c2 = sim_config(1);
    c2.faults = FaultConfig { rate: 1.0, max_retry_after: 1.0, ..FaultConfig::default() };
    let sim2 = start(c2).await;
    let s = spec(&sim2, cert_auth(AssertionAlgorithm::PS256), EnqueueMethod::ProfileLoader);
    let c = client_with(&s, &no_env, |cfg| cfg.max_throttle_wait = std::time::Duration::from_secs(2));
    let err = c.enqueue(&["user0@contoso.com".into()]).await.unwrap_err();
    assert!(matches!(err, M365Error::Throttled { .. } | M365Error::Blocked(_)), "{err:?}");
}

#[tokio::test]
async fn credential_problems_name_the_secret_and_the_fix() {
    let sim = start(sim_config(1)).await;
    let s = spec(&sim, cert_auth(AssertionAlgorithm::PS256), EnqueueMethod::ProfileLoader);
    let err = credentials_for(&s, &scope(&SecretStore::new(), "ops"), &no_env, None).unwrap_err();
    assert!(err.to_string().contains("Secret ops/app-cert does not exist"), "{err}");
    let mut broken = secrets();
    broken
        .get_mut("app-cert")
        .unwrap()
        .data
        .insert("tls.key".into(), jose::private_key_to_pem(&ISSUER_KEY).into_bytes());
    let err = credentials_for(&s, &scope(&broken, "ops"), &no_env, None).unwrap_err();
    assert!(err.to_string().contains("not the private key of tls.crt"), "{err}");
    // A certificate Entra does not know.
    let other_key = jose::generate_key();
    let other = jose::self_signed_certificate(&other_key, "other").unwrap();
    let creds = Credentials::Certificate {
        client_id: APP.into(),
        certificate: other,
        key: Box::new(other_key),
        algorithm: AssertionAlgorithm::PS256,
    };
    let c = TenantClient::new(sim_client_config(&s), creds).unwrap();
    let err = c.observe(&["user0@contoso.com".into()]).await.unwrap_err();
    assert_eq!(err.reason().as_str(), "CredentialsInvalid");
    assert!(
        err.to_string().contains("AADSTS700027") && err.to_string().contains("upload this certificate"),
        "{err}"
    );
}

/// A `tracing` writer that keeps everything in memory.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn no_secret_reaches_a_log_line_or_an_error_message() {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(move || writer.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);
    let mut c = sim_config(30);
    c.app_only_enqueue = AppOnlyEnqueue::Refuse;
    c.faults = FaultConfig { rate: 0.2, seed: 5, max_retry_after: 0.3, ..FaultConfig::default() };
    let sim = start(c).await;
    let mut messages = Vec::new();
    let cert =
        client(&spec(&sim, cert_auth(AssertionAlgorithm::PS256), EnqueueMethod::ProfileLoader), &no_env);
    cert.observe(&users(0..30)).await.unwrap();
    messages.push(cert.enqueue(&users(0..5)).await.unwrap_err().to_string());
    let auth = TenantAuth {
        delegated: Some(DelegatedAuth {
            client_id: APP.into(),
            refresh_token_secret_ref: SecretKeyRef {
                name: "admin-token".into(),
                key: "refresh_token".into(),
            },
        }),
        ..Default::default()
    };
    let delegated = client(&spec(&sim, auth.clone(), EnqueueMethod::ProfileLoader), &no_env);
    delegated.enqueue(&users(0..5)).await.unwrap();
    let mut bad = secrets();
    bad.insert("admin-token".into(), stored_token("rt-revoked-never-logged"));
    let s = spec(&sim, auth, EnqueueMethod::ProfileLoader);
    let revoked = TenantClient::new(
        sim_client_config(&s),
        credentials_for(&s, &scope(&bad, "ns"), &no_env, None).unwrap(),
    )
    .unwrap();
    messages.push(revoked.enqueue(&users(0..1)).await.unwrap_err().to_string());
    messages.push(format!("{:?}", revoked.credentials()));
    drop(_guard);
    let logs = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    assert!(!logs.is_empty(), "TRACE output was captured");
    let key_pem = jose::private_key_to_pem(&KEY);
    let key_line = key_pem.lines().nth(1).unwrap();
    for text in std::iter::once(&logs).chain(messages.iter()) {
        for secret in
            [REFRESH_TOKEN, "rt-revoked-never-logged", CLIENT_SECRET, "PRIVATE KEY", key_line, "eyJ"]
        {
            assert!(!text.contains(secret), "{secret:?} leaked into: {}", &text[..text.len().min(2000)]);
        }
    }
    assert!(messages[1].contains("sign in again as a SharePoint administrator"), "{}", messages[1]);
}

fn doctor(manifests: &str, name: &str) -> (bool, String) {
    let path = std::env::temp_dir().join(format!("odo-doctor-{}-{name}.yaml", std::process::id()));
    std::fs::write(&path, manifests).unwrap();
    // A Multi-Geo simulator prints the overrides that point its geos' public hosts at itself.
    let overrides = manifests
        .lines()
        .find_map(|l| l.trim_start_matches(['#', ' ']).strip_prefix("ONEDRIVE_OPERATOR_TEST_HOST_OVERRIDES="))
        .unwrap_or_default();
    // The simulator is on loopback: the opt-in it prints is needed.
    assert!(manifests.contains("--allow-endpoint-overrides"), "simulate says how to reach it");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_onedrive-operator"))
        .args(["doctor", "--allow-endpoint-overrides", "--tenant"])
        .arg(&path)
        .env("ONEDRIVE_OPERATOR_TEST_HOST_OVERRIDES", overrides)
        .output()
        .unwrap();
    std::fs::remove_file(&path).unwrap();
    (out.status.success(), String::from_utf8(out.stdout).unwrap())
}

#[test]
fn doctor_passes_against_the_simulator_and_names_the_fix_when_enqueue_is_refused() {
    let (_sim, manifests) = spawn_simulate(&["--generate", "300"]);
    let (ok, out) = doctor(&manifests, "accept");
    assert!(ok, "{out}");
    assert!(out.contains("All checks passed."), "{out}");
    assert_eq!(out.matches("[ok]").count(), 12, "{out}");
    assert!(
        out.contains(
            "[ok]   Graph token may read group members (OneDriveSiteSet group sources): GroupMember.Read.All"
        ),
        "{out}"
    );
    assert!(out.contains("[ok]   cloud and hosts: Global cloud: sign-in http://127.0.0.1"), "{out}");
    assert!(out.contains("[ok]   Multi-Geo: the tenant's geos: single-geo tenant"), "{out}");
    assert!(!out.contains("PRIVATE KEY") && !out.contains("eyJ"));

    let (_sim, manifests) = spawn_simulate(&["--generate", "300", "--app-only-enqueue", "refuse"]);
    let (ok, out) = doctor(&manifests, "refuse");
    assert!(!ok, "{out}");
    assert!(out.contains("[FAIL] enqueue"), "{out}");
    assert!(out.contains("switch spec.auth to delegated"), "{out}");

    // The same refusing tenant, with the delegated credentials it also printed: passes.
    let (_sim, manifests) =
        spawn_simulate(&["--generate", "300", "--app-only-enqueue", "refuse", "--auth", "delegated"]);
    let (ok, out) = doctor(&manifests, "delegated");
    assert!(ok, "{out}");
}

/// In a Multi-Geo tenant every geo's admin host is its own token audience and endpoint: doctor
/// checks and reports each.
#[test]
fn doctor_checks_every_geos_admin_host() {
    let (_sim, manifests) = spawn_simulate(&["--generate", "300", "--geos", "NAM,EUR,APC"]);
    let (ok, out) = doctor(&manifests, "geos");
    assert!(ok, "{out}");
    assert!(out.contains("3 geos: NAM (central) http://127.0.0.1"), "{out}");
    for geo in ["NAM (central)", "APC", "EUR"] {
        for check in
            ["[ok]   Entra ID token for the SharePoint admin host of", "[ok]   SharePoint admin host of"]
        {
            assert!(out.contains(&format!("{check} {geo}")), "{check} {geo}:\n{out}");
        }
        assert!(
            out.contains(&format!(
                "[ok]   SharePoint token grants what the operator needs (SharePoint admin host of {geo})"
            )),
            "{geo}:\n{out}"
        );
    }
    assert!(out.contains("/geos/EUR/sharepoint"), "{out}");
    assert_eq!(out.matches("[ok]").count(), 18, "{out}");
}

/// The permission is named from the token's claims, with the step that needs it; the tenant
/// refuses the calls that need it as the service does (Graph 403, SharePoint access denied).
#[test]
fn doctor_names_a_missing_permission_and_the_step_that_needs_it() {
    let (_sim, manifests) =
        spawn_simulate(&["--generate", "300", "--withhold-permission", "Sites.FullControl.All"]);
    let (ok, out) = doctor(&manifests, "withheld");
    assert!(!ok, "{out}");
    let line = out.lines().find(|l| l.contains("SharePoint token grants")).unwrap_or_default();
    assert!(line.contains("[FAIL]"), "{out}");
    assert!(
        line.contains("lacks Sites.FullControl.All (application), needed to enqueue personal sites"),
        "{out}"
    );
    assert!(out.contains("[ok]   Graph token grants what the operator needs"), "{out}");
    for secret in ["eyJ", "PRIVATE KEY", "rt-", "client_assertion"] {
        assert!(!out.contains(secret), "{secret} in the output:\n{out}");
    }
    let (_sim, manifests) = spawn_simulate(&["--generate", "300", "--withhold-permission", "User.Read.All"]);
    let (ok, out) = doctor(&manifests, "withheld-graph");
    assert!(!ok, "{out}");
    assert!(out.contains("lacks User.Read.All (application), needed to look users up"), "{out}");
    assert!(out.contains("User.Read.All"), "the Graph lookup failure names the permission too:\n{out}");

    // Without any permission that lists group members: a warning while no namespace may read a
    // group (spec.groupSources empty), naming the permission.
    let (_sim, manifests) = spawn_simulate(&[
        "--generate",
        "300",
        "--withhold-permission",
        "GroupMember.Read.All",
        "--withhold-permission",
        "Group.Read.All",
    ]);
    let (ok, out) = doctor(&manifests, "withheld-groups");
    assert!(ok, "a warning does not fail doctor:\n{out}");
    let line = out.lines().find(|l| l.contains("may read group members")).unwrap_or_default();
    assert!(line.contains("[warn]") && line.contains("lacks GroupMember.Read.All (application)"), "{out}");
}

/// `check`'s words for every kind of user, read through the controller's own classification:
/// each line leads with the reason a `OneDriveSite` would show; profiles are read only for users
/// without a site whose directory entry allows one.
#[tokio::test]
async fn check_names_each_user_with_the_reason_the_controller_writes() {
    use onedrive_operator::cli::check::describe;
    use onedrive_operator::plan::Lookup;
    let mut c = sim_config(2);
    let user = |name: &str, f: &dyn Fn(&mut UserSpec)| {
        let mut u = UserSpec::new(format!("{name}@contoso.com"));
        f(&mut u);
        u
    };
    c.users.extend([
        user("blocked", &|u| u.sign_in_allowed = false),
        user("disabled", &|u| u.profile_outcome = Some(4099)),
        user("partial", &|u| u.profile_outcome = Some(8195)),
        user("stuck", &|u| u.profile_outcome = Some(1)),
        user("quirk", &|u| u.lookup_quirk = LookupQuirk::MysiteBadRequest),
        user("broken", &|u| u.lookup_quirk = LookupQuirk::Broken),
    ]);
    let sim = start(c).await;
    let c = client(&spec(&sim, cert_auth(AssertionAlgorithm::PS256), EnqueueMethod::ProfileLoader), &no_env);
    let sent: Vec<String> =
        ["disabled", "partial", "stuck", "user1"].iter().map(|n| format!("{n}@contoso.com")).collect();
    c.enqueue(&sent).await.unwrap();
    sim.advance(jiff::SignedDuration::from_hours(48));
    let expected = [
        ("has", "Provisioned: has a OneDrive at"),
        ("user1", "Provisioned: has a OneDrive at"),
        ("user0", "Pending: no OneDrive; the user profile shows Uninitialized (0)"),
        ("quirk", "Pending: no OneDrive; the user profile shows Uninitialized (0)"),
        ("blocked", "SignInBlocked: the account may not sign in"),
        ("nolicence", "UserNotLicensed: no enabled SharePoint plan"),
        ("ghost", "UserNotFound: no such user"),
        (
            "disabled",
            "SiteCreationNotPermitted: the user profile shows SelfServiceSiteCreationDisabled (4099)",
        ),
        ("partial", "ProvisioningFailed: the user profile shows PartialCreate (8195)"),
        ("stuck", "SPSSITEERROR: no OneDrive yet; the user profile shows Enqueued (1)"),
        ("broken", "unknown: the tenant answered HTTP 500 (generalException)"),
    ];
    let lookups: Vec<Lookup> =
        expected.iter().map(|(n, _)| Lookup::exact(&format!("{n}@contoso.com"))).collect();
    let seen = c.observe_lookups(&lookups).await.unwrap();
    for (name, words) in expected {
        let line = describe(seen.get(format!("{name}@contoso.com").as_str()));
        assert!(line.starts_with(words), "{name}: {line}");
    }
    // Profiles of the five users without a site the directory allows one; none of the others.
    assert_eq!(sim.stats().count("sharepoint.profile"), 5);
}

/// doctor fails a certificate outside its validity with its dates, before anything is sent.
#[tokio::test]
async fn doctor_fails_an_expired_certificate_naming_its_not_after() {
    let sim = start(sim_config(1)).await;
    let expired =
        jose::self_signed_certificate_until(&KEY, "expired", Some("2020-06-01T00:00:00Z".parse().unwrap()))
            .unwrap();
    let data = std::collections::BTreeMap::from([
        ("tls.crt".to_string(), expired.to_pem()),
        ("tls.key".to_string(), jose::private_key_to_pem(&KEY)),
    ]);
    let (tenant, secret) = onedrive_operator::simulator::manifests::tenant_and_secret(
        "expired",
        "onedrive-operator",
        &sim.endpoints(),
        onedrive_operator::simulator::manifests::PrintedAuth::Certificate,
        APP,
        data,
    );
    let path = std::env::temp_dir().join(format!("odo-doctor-{}-expired.yaml", std::process::id()));
    std::fs::write(&path, onedrive_operator::simulator::manifests::to_yaml(&tenant, &secret)).unwrap();
    let file = path.clone();
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_onedrive-operator"))
            .args(["doctor", "--allow-endpoint-overrides", "--tenant"])
            .arg(&file)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    std::fs::remove_file(&path).unwrap();
    let said = String::from_utf8(out.stdout).unwrap();
    assert!(!out.status.success(), "{said}");
    assert!(
        said.contains("[FAIL] credentials: the certificate expired: notAfter 2020-06-01T00:00:00Z"),
        "{said}"
    );
    assert_eq!(sim.stats().arrivals.len(), 0, "nothing was sent with an expired certificate");
}

/// The settings calls against the simulator's answer shapes: a site's administrators and quota
/// read, an administrator added and removed one at a time (someone else's untouched), a quota set,
/// and each refusal named: an unknown user, a site that is not there.
#[tokio::test]
async fn site_administrators_and_quota_are_read_and_set_one_user_at_a_time() {
    use onedrive_operator::m365::SettingsError;
    let mut c = sim_config(1);
    c.users.push(UserSpec::new("migration@contoso.com"));
    c.users.push(UserSpec::new("auditor@contoso.com"));
    let sim = start(c).await;
    let cl = client(&spec(&sim, cert_auth(AssertionAlgorithm::PS256), EnqueueMethod::ProfileLoader), &no_env);
    let seen = cl.observe(&["has@contoso.com".to_string()]).await.unwrap();
    let Some(Observation::HasSite { url }) = seen.values().next().cloned() else { panic!("{seen:?}") };
    let admin = sim.admin_url();
    assert!(sim.set_site_admin("has@contoso.com", "auditor@contoso.com", true));
    let before = cl.site_settings(&admin, &url).await.unwrap();
    assert_eq!(before.names(), vec!["has@contoso.com", "auditor@contoso.com"], "the owner, then the others");
    assert!(before.has("auditor@contoso.com") && !before.has("migration@contoso.com"));
    assert_eq!(before.quota_mb, Some(simulator::model::DEFAULT_QUOTA_MB));
    cl.set_site_admin(&admin, &url, "migration@contoso.com", true).await.unwrap();
    cl.set_storage_quota(&admin, &url, 2_097_152).await.unwrap();
    let (admins, quota) = sim.site_admins("has@contoso.com").unwrap();
    assert_eq!(admins, vec!["auditor@contoso.com", "migration@contoso.com"]);
    assert_eq!(quota, 2_097_152);
    cl.set_site_admin(&admin, &url, "migration@contoso.com", false).await.unwrap();
    assert_eq!(sim.site_admins("has@contoso.com").unwrap().0, vec!["auditor@contoso.com"]);
    let unknown = cl.set_site_admin(&admin, &url, "ghost@contoso.com", true).await.unwrap_err();
    assert!(
        matches!(&unknown, SettingsError::UserNotFound { user, .. } if user == "ghost@contoso.com"),
        "{unknown:?}"
    );
    assert!(
        unknown.needs_person() && unknown.to_string().contains("does not exist or is not unique"),
        "{unknown}"
    );
    let missing = format!("{}/personal/nobody_contoso_com/", url.split("/personal/").next().unwrap());
    let gone = cl.site_settings(&admin, &missing).await.unwrap_err();
    assert!(matches!(gone, SettingsError::SiteNotFound { .. }) && !gone.needs_person(), "{gone:?}");
    // Every call above was counted under its own name.
    let stats = sim.stats();
    assert_eq!(stats.count("sharepoint.settings.read"), 2);
    assert_eq!(stats.count("sharepoint.settings.admins"), 1);
    assert_eq!(stats.count("sharepoint.settings.setsiteadmin"), 3);
    assert_eq!(stats.count("sharepoint.settings.setquota"), 1);
}
