//! `onedrive-operator login` against the simulator: the browser flow (the test is the browser,
//! the simulator's hook approves), the device code flow's answers (pending, slow_down, declined,
//! expired, blocked by Conditional Access), a sign-in by someone who is no administrator, and
//! storing the Secret (created, updated, never over a newer token without --force).

mod common;

use std::sync::Mutex;
use std::time::Duration;

use common::*;
use jiff::Timestamp;
use k8s_openapi::api::core::v1::Secret;
use kube::api::Api;
use onedrive_operator::api::{DelegatedAuth, OneDriveTenant, SecretKeyRef, TenantAuth};
use onedrive_operator::cli::login::{self, Login, LoginError, SignedIn};
use onedrive_operator::m365::EndpointPolicy;
use onedrive_operator::m365::signin::Flow;
use onedrive_operator::simulator::authorize::DeviceStep;
use onedrive_operator::simulator::{self, SimHandle};
use sha2::Digest;

const ADMIN: &str = "admin@contoso.onmicrosoft.com";
const HELPDESK: &str = "helpdesk@contoso.onmicrosoft.com";

async fn start(device_lifetime: Duration) -> SimHandle {
    let mut c = sim_config(3);
    c.device_code_lifetime = device_lifetime;
    c.device_code_interval = Duration::from_secs(1);
    simulator::start(c, "127.0.0.1:0".parse().unwrap()).await.unwrap()
}

fn tenant(sim: &SimHandle) -> OneDriveTenant {
    let mut t = sim_tenant(sim, "contoso", "unused");
    t.spec.auth = TenantAuth {
        delegated: Some(DelegatedAuth {
            client_id: APP.into(),
            refresh_token_secret_ref: SecretKeyRef {
                name: "contoso-admin".into(),
                key: "refresh_token".into(),
            },
        }),
        ..Default::default()
    };
    t
}

fn request(sim: &SimHandle, flow: Flow) -> Login {
    Login {
        tenant: tenant(sim),
        namespace: OPERATOR_NS.into(),
        flow,
        no_browser: true,
        port: 0,
        timeout: Duration::from_secs(60),
        policy: EndpointPolicy::overridable(),
    }
}

/// What `login` told the person.
#[derive(Default)]
struct Said(Mutex<Vec<String>>);

impl Said {
    fn all(&self) -> String {
        self.0.lock().unwrap().join("\n")
    }
}

/// A device sign-in whose verification page does `steps`, scripted as soon as the code is shown.
async fn device(sim: &SimHandle, steps: Vec<DeviceStep>) -> (Result<SignedIn, LoginError>, String) {
    let said = Said::default();
    let say = |line: &str| {
        said.0.lock().unwrap().push(line.to_string());
        let code = line
            .split_once("enter the code ")
            .and_then(|(_, r)| r.split_whitespace().next())
            .unwrap_or_default();
        assert!(sim.script_device(code, steps.clone()), "the message names the user code: {line}");
    };
    let result = login::sign_in(&request(sim, Flow::DeviceCode), &say).await;
    (result, said.all())
}

fn newest_is(sim: &SimHandle, token: &str) -> bool {
    let digest = onedrive_operator::jose::b64url(&sha2::Sha256::digest(token.as_bytes()));
    sim.stats().newest_refresh_token_sha256.as_deref() == Some(digest.as_str())
}

#[tokio::test]
async fn the_browser_flow_signs_an_administrator_in_with_pkce_on_a_loopback_redirect() {
    let sim = start(Duration::from_secs(60)).await;
    sim.approve_sign_ins(Some(ADMIN));
    let (url_tx, url_rx) = tokio::sync::oneshot::channel::<String>();
    let url_tx = Mutex::new(Some(url_tx));
    let say = |line: &str| {
        if let Some(url) = line.lines().find_map(|l| l.trim().strip_prefix("http"))
            && let Some(tx) = url_tx.lock().unwrap().take()
        {
            let _ = tx.send(format!("http{url}"));
        }
    };
    let browser = async {
        let url = url_rx.await.unwrap();
        assert!(
            url.contains("code_challenge_method=S256")
                && url.contains("redirect_uri=http%3A%2F%2Flocalhost%3A"),
            "{url}"
        );
        assert!(url.contains("offline_access") && !url.contains("graph"), "one resource at sign-in: {url}");
        // The browser follows the simulator's redirect to the loopback listener.
        let page = reqwest::get(&url).await.unwrap().text().await.unwrap();
        assert!(page.contains("Sign-in received"), "{page}");
    };
    let asked = request(&sim, Flow::Browser);
    let (signed, ()) = tokio::join!(login::sign_in(&asked, &say), browser);
    let signed = signed.unwrap();
    assert_eq!(signed.user, ADMIN);
    assert!(signed.notes.iter().any(|n| n.contains("(SharePoint Administrator)")), "{:?}", signed.notes);
    assert!(
        newest_is(&sim, &signed.refresh_token),
        "the token to store is the newest (after the Graph redemption)"
    );
    let redemptions = sim.stats().refresh_redemptions;
    assert!(
        redemptions.contains_key(&sim.graph_url()),
        "Graph redeemed with the same refresh token: {redemptions:?}"
    );
}

#[tokio::test]
async fn a_declined_browser_sign_in_stores_nothing() {
    let sim = start(Duration::from_secs(60)).await;
    sim.approve_sign_ins(None);
    let (url_tx, url_rx) = tokio::sync::oneshot::channel::<String>();
    let url_tx = Mutex::new(Some(url_tx));
    let say = |line: &str| {
        if let (Some(url), Some(tx)) =
            (line.lines().find_map(|l| l.trim().strip_prefix("http")), url_tx.lock().unwrap().take())
        {
            let _ = tx.send(format!("http{url}"));
        }
    };
    let browser = async {
        let _ = reqwest::get(url_rx.await.unwrap()).await.unwrap();
    };
    let asked = request(&sim, Flow::Browser);
    let (result, ()) = tokio::join!(login::sign_in(&asked, &say), browser);
    let e = result.unwrap_err().to_string();
    assert!(e.contains("declined"), "{e}");
}

#[tokio::test]
async fn device_code_pending_then_slow_down_then_approved() {
    let sim = start(Duration::from_secs(60)).await;
    let steps = vec![
        DeviceStep::Pending,
        DeviceStep::SlowDown,
        DeviceStep::Pending,
        DeviceStep::Approve(ADMIN.into()),
    ];
    let (result, said) = device(&sim, steps).await;
    let signed = result.unwrap();
    assert!(said.contains("enter the code"), "{said}");
    assert_eq!(signed.user, ADMIN);
    let stats = sim.stats();
    assert_eq!(stats.count("entra.device.pending"), 2, "kept polling while pending");
    assert_eq!(stats.count("entra.device.slow_down"), 1);
    assert_eq!(stats.count("entra.device.approved"), 1);
    assert!(!said.contains(&signed.refresh_token));
}

#[tokio::test]
async fn device_code_declined_expired_and_blocked_each_say_so() {
    let sim = start(Duration::from_secs(60)).await;
    let (result, _) = device(&sim, vec![DeviceStep::Pending, DeviceStep::Decline]).await;
    let e = result.unwrap_err().to_string();
    assert!(e.contains("declined at the verification page"), "{e}");
    let (result, _) = device(&sim, vec![DeviceStep::Block]).await;
    let e = result.unwrap_err().to_string();
    assert!(
        e.contains("Conditional Access") && e.contains("without --device-code"),
        "the other flow is named: {e}"
    );
    let short = start(Duration::from_secs(2)).await;
    let (result, _) = device(&short, vec![DeviceStep::Pending]).await;
    let e = result.unwrap_err().to_string();
    assert!(e.contains("expired"), "{e}");
}

#[tokio::test]
async fn someone_who_is_no_administrator_is_named_and_nothing_is_returned() {
    let sim = start(Duration::from_secs(60)).await;
    let (result, said) = device(&sim, vec![DeviceStep::Approve(HELPDESK.into())]).await;
    let e = result.unwrap_err();
    assert!(matches!(e, LoginError::NotAdmin { .. }), "{e}");
    assert!(e.to_string().contains(HELPDESK) && e.to_string().contains("nothing was stored"), "{e}");
    assert!(!said.contains("rt-"), "{said}");
}

#[tokio::test]
async fn endpoints_outside_the_cloud_are_refused_before_anyone_signs_in() {
    let sim = start(Duration::from_secs(60)).await;
    let pinned = Login { policy: EndpointPolicy::Pinned, ..request(&sim, Flow::DeviceCode) };
    let e = login::sign_in(&pinned, &|_: &str| {}).await.unwrap_err().to_string();
    assert!(e.contains("spec.authorityHost") && e.contains("InvalidSpec"), "{e}");
    assert!(sim.stats().arrivals.is_empty(), "nothing was sent");
}

fn signed(token: &str, started: Timestamp) -> SignedIn {
    SignedIn { refresh_token: token.into(), user: ADMIN.into(), started, notes: Vec::new() }
}

#[tokio::test]
async fn the_secret_is_created_bound_updated_and_never_written_over_a_newer_token() {
    let sim = start(Duration::from_secs(60)).await;
    let t = tenant(&sim);
    let client = kube(Vec::new(), vec![t.clone()], Vec::new()).await;
    let secrets: Api<Secret> = Api::namespaced(client.clone(), OPERATOR_NS);
    let before = Timestamp::now() - jiff::SignedDuration::from_secs(1);
    login::store(client.clone(), &t, OPERATOR_NS, &signed("rt-first", before), false).await.unwrap();
    let s = secrets.get("contoso-admin").await.unwrap();
    assert_eq!(s.type_.as_deref(), Some("Opaque"));
    assert_eq!(s.data.as_ref().unwrap()["refresh_token"].0, b"rt-first");
    let annotations = s.metadata.annotations.clone().unwrap();
    assert_eq!(annotations["onedrive-operator.dev/tenants"], "contoso");
    assert!(annotations.contains_key("onedrive-operator.dev/refresh-token-rotated-at"));
    // A sign-in that began before the Secret's token was rotated (by the operator, say) must not
    // replace it; --force does.
    let e =
        login::store(client.clone(), &t, OPERATOR_NS, &signed("rt-stale", before), false).await.unwrap_err();
    assert!(matches!(e, LoginError::Newer(..)), "{e}");
    assert!(!e.to_string().contains("rt-"), "{e}");
    login::store(client.clone(), &t, OPERATOR_NS, &signed("rt-forced", before), true).await.unwrap();
    assert_eq!(secrets.get("contoso-admin").await.unwrap().data.unwrap()["refresh_token"].0, b"rt-forced");
    // A later sign-in updates it, keeping the other tenants it is bound to.
    let mut s = secrets.get("contoso-admin").await.unwrap();
    s.metadata
        .annotations
        .as_mut()
        .unwrap()
        .insert("onedrive-operator.dev/tenants".into(), "fabrikam".into());
    secrets.replace("contoso-admin", &Default::default(), &s).await.unwrap();
    login::store(
        client.clone(),
        &t,
        OPERATOR_NS,
        &signed("rt-later", Timestamp::now() + jiff::SignedDuration::from_secs(5)),
        false,
    )
    .await
    .unwrap();
    let s = secrets.get("contoso-admin").await.unwrap();
    assert_eq!(s.data.unwrap()["refresh_token"].0, b"rt-later");
    assert_eq!(s.metadata.annotations.unwrap()["onedrive-operator.dev/tenants"], "fabrikam,contoso");
}

#[tokio::test]
async fn a_role_that_would_not_let_the_operator_read_the_secret_is_warned_about() {
    use k8s_openapi::api::rbac::v1::{PolicyRule, Role};
    let sim = start(Duration::from_secs(60)).await;
    let t = tenant(&sim);
    let client = kube(Vec::new(), vec![t.clone()], Vec::new()).await;
    let role = Role {
        metadata: kube::api::ObjectMeta {
            name: Some("onedrive-operator".into()),
            namespace: Some(OPERATOR_NS.into()),
            ..Default::default()
        },
        rules: Some(vec![PolicyRule {
            api_groups: Some(vec![String::new()]),
            resources: Some(vec!["secrets".into()]),
            resource_names: Some(vec!["contoso-app-cert".into()]),
            verbs: vec!["get".into(), "update".into()],
            ..Default::default()
        }]),
    };
    Api::<Role>::namespaced(client.clone(), OPERATOR_NS).create(&Default::default(), &role).await.unwrap();
    let warnings =
        login::store(client, &t, OPERATOR_NS, &signed("rt-x", Timestamp::now()), false).await.unwrap();
    assert!(
        warnings.iter().any(|w| w.contains("add contoso-admin to the chart's rbac.secretNames")),
        "{warnings:?}"
    );
}
