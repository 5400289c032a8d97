//! Hostile answers: a server on loopback answers each Microsoft endpoint the tenant client calls
//! with what an attacker (or a broken proxy) could send — a redirect to another host, a huge body,
//! a body that stalls, headers that never come, a `nextLink` to itself or elsewhere, garbage JSON,
//! an HTML page, a body cut off — and the client answers each with a typed error, in bounded time
//! and memory, sending nothing to any other host (a second server, the capture, counts what
//! reaches it).

mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::{Request, StatusCode, header};
use axum::response::{IntoResponse, Response};
use common::*;
use onedrive_operator::api::{
    CertificateAuth, EnqueueMethod, OneDriveTenantSpec, SecretRef, TenantAuth, TenantWideListing,
};
use onedrive_operator::m365::{Credentials, M365Error, TenantClient};

/// How the hostile server answers an endpoint.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Mode {
    /// A well-formed answer.
    Normal,
    /// 307 to the capture server.
    Redirect,
    /// 400 MB, chunked (no length said).
    Huge,
    /// `Content-Length` of 400 MB, then as much as the reader takes.
    HugeDeclared,
    /// Headers and a first chunk, then nothing, ever.
    SlowBody,
    /// Nothing at all, ever.
    NoHeaders,
    /// A page whose `@odata.nextLink` is itself.
    SelfLink,
    /// A page whose `@odata.nextLink` is the capture server.
    ForeignLink,
    /// 200 with a body that is not JSON.
    Garbage,
    /// 500 with a proxy's HTML page.
    Html,
    /// 200 with a JSON object that holds no `value` list.
    NoValue,
    /// A page that announces more members (`@odata.count`) than it lists.
    ShortCount,
}

struct Hostile {
    modes: Mutex<HashMap<&'static str, Mode>>,
    hits: Mutex<HashMap<&'static str, usize>>,
    base: Mutex<String>,
    capture: String,
}

/// The endpoint a path belongs to.
fn endpoint(path: &str) -> &'static str {
    match path {
        p if p.contains("/oauth2/v2.0/token") => "token",
        p if p.ends_with("/$batch") => "batch",
        p if p.ends_with("/sites/getAllSites") => "site-listing",
        p if p.ends_with("/v1.0/sites") => "geos",
        p if p.ends_with("/v1.0/users") => "users",
        p if p.ends_with("/_api/contextinfo") => "contextinfo",
        p if p.ends_with("CreatePersonalSiteEnqueueBulk") => "enqueue",
        p if p.ends_with("ProcessQuery") => "csom",
        p if p.contains("PeopleManager") => "profile",
        p if p.contains("/transitiveMembers/") => "members",
        _ => "other",
    }
}

fn normal(endpoint: &str, body: &str) -> Response {
    let json = match endpoint {
        "token" => serde_json::json!({"access_token": "header.claims.signature", "expires_in": 3600}),
        "batch" => {
            let requests: serde_json::Value = serde_json::from_str(body).unwrap_or_default();
            let responses: Vec<serde_json::Value> = requests["requests"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|r| serde_json::json!({"id": r["id"], "status": 404, "body": {"error": {"code": "Request_ResourceNotFound"}}}))
                .collect();
            serde_json::json!({ "responses": responses })
        }
        "csom" => serde_json::json!([{"SchemaVersion": "15.0.0.0", "ErrorInfo": null}]),
        "profile" => serde_json::json!({"odata.null": true}),
        _ => serde_json::json!({"value": []}),
    };
    axum::Json(json).into_response()
}

async fn answer(State(h): State<Arc<Hostile>>, request: Request<Body>) -> Response {
    let path = request.uri().path().to_string();
    let query = request.uri().query().map(|q| format!("?{q}")).unwrap_or_default();
    let which = endpoint(&path);
    *h.hits.lock().unwrap().entry(which).or_default() += 1;
    let mode = h.modes.lock().unwrap().get(which).copied().unwrap_or(Mode::Normal);
    let body = axum::body::to_bytes(request.into_body(), 1 << 20).await.unwrap_or_default();
    let body = String::from_utf8_lossy(&body).into_owned();
    let chunks = |n: usize, size: usize| {
        futures::stream::iter((0..n).map(move |_| Ok::<_, std::io::Error>(vec![b' '; size])))
    };
    match mode {
        Mode::Normal => normal(which, &body),
        Mode::Redirect => {
            (StatusCode::TEMPORARY_REDIRECT, [(header::LOCATION, format!("{}/steal", h.capture))])
                .into_response()
        }
        Mode::Huge => Body::from_stream(chunks(400_000_000 / (64 << 10), 64 << 10)).into_response(),
        Mode::HugeDeclared => Response::builder()
            .header(header::CONTENT_LENGTH, 400_000_000u64)
            .body(Body::from_stream(chunks(400_000_000 / (64 << 10), 64 << 10)))
            .unwrap(),
        Mode::SlowBody => {
            let first =
                futures::stream::once(async { Ok::<_, std::io::Error>(b"{\"responses\": [".to_vec()) });
            Body::from_stream(first.chain(futures::stream::pending())).into_response()
        }
        Mode::NoHeaders => futures::future::pending().await,
        Mode::SelfLink => {
            let me = format!("{}{path}{query}", h.base.lock().unwrap());
            axum::Json(serde_json::json!({"value": [], "@odata.nextLink": me})).into_response()
        }
        Mode::ForeignLink => {
            let away = format!("{}/graph/v1.0/sites?page=2", h.capture);
            axum::Json(serde_json::json!({"value": [], "@odata.nextLink": away})).into_response()
        }
        Mode::Garbage => (StatusCode::OK, "{\"responses\": [ not json at all").into_response(),
        Mode::NoValue => axum::Json(serde_json::json!({"@odata.context": "x"})).into_response(),
        Mode::ShortCount => axum::Json(serde_json::json!({
            "@odata.count": 5,
            "value": [{"id": "1", "userPrincipalName": "alice@contoso.com"}],
        }))
        .into_response(),
        Mode::Html => (
            StatusCode::INTERNAL_SERVER_ERROR,
            [(header::CONTENT_TYPE, "text/html")],
            "<!DOCTYPE html><html><body><h1>502 Bad Gateway</h1></body></html>",
        )
            .into_response(),
    }
}

use futures::StreamExt;

/// A server on loopback; returns its base URL and the task serving it.
async fn serve(router: Router) -> (String, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    });
    (base, task)
}

/// The hostile server and the capture server beside it.
struct Servers {
    hostile: Arc<Hostile>,
    base: String,
    captured: Arc<AtomicUsize>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for Servers {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

impl Servers {
    async fn start() -> Servers {
        let captured = Arc::new(AtomicUsize::new(0));
        let counter = captured.clone();
        let capture_router = Router::new().fallback(move || {
            counter.fetch_add(1, Ordering::SeqCst);
            async { "captured" }
        });
        let (capture, capture_task) = serve(capture_router).await;
        let hostile = Arc::new(Hostile {
            modes: Mutex::new(HashMap::new()),
            hits: Mutex::new(HashMap::new()),
            base: Mutex::new(String::new()),
            capture,
        });
        let (base, task) = serve(Router::new().fallback(answer).with_state(hostile.clone())).await;
        *hostile.base.lock().unwrap() = base.clone();
        Servers { hostile, base, captured, tasks: vec![capture_task, task] }
    }

    fn set(&self, endpoint: &'static str, mode: Mode) {
        self.hostile.modes.lock().unwrap().insert(endpoint, mode);
    }

    fn hits(&self, endpoint: &str) -> usize {
        self.hostile.hits.lock().unwrap().get(endpoint).copied().unwrap_or(0)
    }

    fn client(&self, method: EnqueueMethod) -> TenantClient {
        tenant_client(&self.base, method)
    }
}

/// A client of a tenant on the hostile server at `base`, its calls' deadline one second.
fn tenant_client(base: &str, method: EnqueueMethod) -> TenantClient {
    tenant_client_at(base, base, method)
}

/// A client whose sign-in is at `authority` and whose Graph and SharePoint are at `services`.
fn tenant_client_at(authority: &str, services: &str, method: EnqueueMethod) -> TenantClient {
    {
        let spec = OneDriveTenantSpec {
            tenant_id: "contoso.onmicrosoft.com".into(),
            admin_url: format!("{services}/sharepoint"),
            graph_url: Some(format!("{services}/graph")),
            authority_host: Some(format!("{authority}/entra")),
            auth: TenantAuth {
                certificate: Some(CertificateAuth {
                    client_id: APP.into(),
                    secret_ref: SecretRef { name: "app-cert".into() },
                    algorithm: Default::default(),
                }),
                ..Default::default()
            },
            enqueue_method: method,
            tenant_wide_listing: TenantWideListing::Auto,
            batch_size: 200,
            poll_interval: "60s".into(),
            provisioning_timeout: "24h".into(),
            drift_check_interval: "24h".into(),
            ..Default::default()
        };
        let mut config = sim_client_config(&spec);
        config.call_deadline = Duration::from_secs(1);
        config.max_throttle_wait = Duration::from_secs(1);
        let credentials = Credentials::Certificate {
            client_id: APP.into(),
            certificate: CERT.clone(),
            key: Box::new(KEY.clone()),
            algorithm: Default::default(),
        };
        TenantClient::new(config, credentials).unwrap()
    }
}

/// `call`'s error, and how long it took.
async fn failing<T: std::fmt::Debug>(
    call: impl std::future::Future<Output = Result<T, M365Error>>,
) -> (M365Error, Duration) {
    let started = Instant::now();
    let e = call.await.expect_err("a hostile answer is an error");
    (e, started.elapsed())
}

fn users(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("user{i}@contoso.com")).collect()
}

#[tokio::test]
async fn a_redirect_is_never_followed_and_sends_nothing_elsewhere() {
    let s = Servers::start().await;
    // The token endpoint: following a 307 would re-POST the client assertion to another host.
    s.set("token", Mode::Redirect);
    let (e, _) = failing(s.client(EnqueueMethod::ProfileLoader).graph_token()).await;
    assert_eq!(e.reason().as_str(), "ProtocolError", "{e}");
    assert!(e.to_string().contains("307") && e.to_string().contains("follow no redirect"), "{e}");
    // Graph $batch and every SharePoint call.
    s.set("token", Mode::Normal);
    for (endpoint, method) in [
        ("batch", EnqueueMethod::ProfileLoader),
        ("enqueue", EnqueueMethod::ProfileLoader),
        ("csom", EnqueueMethod::ProfileLoaderCsom),
        ("profile", EnqueueMethod::ProfileLoader),
    ] {
        s.set(endpoint, Mode::Redirect);
        let c = s.client(method);
        let (e, _) = match endpoint {
            "batch" => failing(c.observe(&users(1))).await,
            "profile" => failing(c.profile(&format!("{}/sharepoint", s.base), "o'neil@contoso.com")).await,
            _ => failing(c.enqueue(&users(2))).await,
        };
        assert_eq!(e.reason().as_str(), "ProtocolError", "{endpoint}: {e}");
        assert!(!e.to_string().contains("contoso.com"), "no user name in the message: {e}");
        s.set(endpoint, Mode::Normal);
    }
    assert_eq!(s.captured.load(Ordering::SeqCst), 0, "a request reached the other host");
}

#[tokio::test]
async fn a_huge_answer_is_refused_at_the_cap() {
    let s = Servers::start().await;
    for (endpoint, mode) in
        [("batch", Mode::Huge), ("batch", Mode::HugeDeclared), ("token", Mode::HugeDeclared)]
    {
        s.set(endpoint, mode);
        let (e, took) = failing(s.client(EnqueueMethod::ProfileLoader).observe(&users(1))).await;
        assert_eq!(e.reason().as_str(), "ProtocolError", "{endpoint} {mode:?}: {e}");
        assert!(e.to_string().contains("more than 4 MiB"), "{e}");
        assert!(took < Duration::from_secs(5), "{endpoint} {mode:?} took {took:?}");
        s.set(endpoint, Mode::Normal);
    }
}

#[tokio::test]
async fn a_silent_or_stalled_answer_ends_at_the_deadline_as_a_timeout() {
    let s = Servers::start().await;
    for (endpoint, mode) in [
        ("batch", Mode::SlowBody),
        ("batch", Mode::NoHeaders),
        ("token", Mode::NoHeaders),
        ("enqueue", Mode::SlowBody),
    ] {
        s.set(endpoint, mode);
        let c = s.client(EnqueueMethod::ProfileLoader);
        let (e, took) = if endpoint == "enqueue" {
            failing(c.enqueue(&users(2))).await
        } else {
            failing(c.observe(&users(1))).await
        };
        assert_eq!(e.reason().as_str(), "Unreachable", "{endpoint} {mode:?}: {e}");
        assert!(e.to_string().contains("timed out"), "reported as a timeout: {e}");
        // One deadline of 1 s for the call, its retries included (a slack for a loaded machine).
        assert!(took < Duration::from_secs(4), "{endpoint} {mode:?} took {took:?}");
        s.set(endpoint, Mode::Normal);
    }
}

#[tokio::test]
async fn next_links_stay_on_graph_and_end_after_the_page_cap() {
    let s = Servers::start().await;
    s.set("geos", Mode::SelfLink);
    let (e, took) = failing(s.client(EnqueueMethod::ProfileLoader).geos()).await;
    assert_eq!(e.reason().as_str(), "ProtocolError", "{e}");
    assert!(e.to_string().contains("more than 20 pages"), "{e}");
    assert_eq!(s.hits("geos"), 20, "the page cap");
    assert!(took < Duration::from_secs(10), "{took:?}");
    s.set("geos", Mode::ForeignLink);
    let (e, _) = failing(s.client(EnqueueMethod::ProfileLoader).geos()).await;
    assert!(e.to_string().contains("pointing away from Microsoft Graph"), "{e}");
    // The site listing (many users, app-only): a foreign link breaks it off and users are looked
    // up one by one instead; the token never goes to the other host.
    s.set("site-listing", Mode::ForeignLink);
    let seen = s.client(EnqueueMethod::ProfileLoader).observe(&users(150)).await.unwrap();
    assert_eq!(seen.len(), 150);
    assert!(s.hits("site-listing") >= 1 && s.hits("batch") >= 8, "listed, then looked up");
    assert_eq!(s.captured.load(Ordering::SeqCst), 0, "a request reached the other host");
}

/// A group's member list read short would look like people leaving: every broken answer is an
/// error of the set's source, never a shorter list.
#[tokio::test]
async fn a_broken_member_listing_is_an_error_never_a_shorter_list() {
    let s = Servers::start().await;
    let group = onedrive_operator::api::GroupRef {
        id: Some("0f5a2c1e-8b7d-4c3a-9e21-5d6f7a8b9c0d".into()),
        mail: None,
    };
    let client = s.client(EnqueueMethod::ProfileLoader);
    for mode in [
        Mode::NoValue,
        Mode::ShortCount,
        Mode::SelfLink,
        Mode::ForeignLink,
        Mode::Garbage,
        Mode::Html,
        Mode::Redirect,
    ] {
        s.set("members", mode);
        let e = client.group_members(&group).await.expect_err(&format!("{mode:?} must fail"));
        assert_eq!(e.reason(), onedrive_operator::api::SetReason::SourceUnavailable, "{mode:?}: {e}");
    }
    s.set("members", Mode::Normal);
    assert_eq!(client.group_members(&group).await.unwrap(), Vec::<String>::new());
    assert_eq!(s.captured.load(Ordering::SeqCst), 0, "nothing reached another host");
}

#[tokio::test]
async fn garbage_and_html_answers_are_typed_errors() {
    let s = Servers::start().await;
    let cases = [
        ("batch", Mode::Garbage, "ProtocolError", "not JSON"),
        ("batch", Mode::Html, "Unreachable", "500"),
        ("token", Mode::Garbage, "ProtocolError", "not JSON"),
        ("token", Mode::Html, "CredentialsInvalid", "500"),
        ("geos", Mode::Garbage, "ProtocolError", "not a page"),
        ("geos", Mode::Html, "Unreachable", "500"),
    ];
    for (endpoint, mode, reason, words) in cases {
        s.set(endpoint, mode);
        let c = s.client(EnqueueMethod::ProfileLoader);
        let (e, _) =
            if endpoint == "geos" { failing(c.geos()).await } else { failing(c.observe(&users(1))).await };
        assert_eq!(e.reason().as_str(), reason, "{endpoint} {mode:?}: {e}");
        assert!(e.to_string().contains(words), "{endpoint} {mode:?}: {e}");
        s.set(endpoint, Mode::Normal);
    }
    // SharePoint's answers: an HTML page to a CSOM call, garbage to a profile read.
    s.set("csom", Mode::Html);
    let (e, _) = failing(s.client(EnqueueMethod::ProfileLoaderCsom).enqueue(&users(2))).await;
    assert_eq!(e.reason().as_str(), "Unreachable", "{e}");
    s.set("profile", Mode::Garbage);
    let (e, _) = failing(
        s.client(EnqueueMethod::ProfileLoader).profile(&format!("{}/sharepoint", s.base), "a@contoso.com"),
    )
    .await;
    assert_eq!(e.reason().as_str(), "ProtocolError", "{e}");
}

/// A server that answers every request with a 200 whose body stops after 15 of the 1,000 bytes
/// its `Content-Length` promised, then closes the connection.
async fn truncating() -> (String, tokio::task::JoinHandle<()>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let task = tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            tokio::spawn(async move {
                // The request head and its body (form or JSON: a Content-Length).
                let mut request = Vec::new();
                let mut buf = [0u8; 4096];
                let head_end = loop {
                    let n = socket.read(&mut buf).await.unwrap_or(0);
                    if n == 0 {
                        return;
                    }
                    request.extend_from_slice(&buf[..n]);
                    if let Some(i) = request.windows(4).position(|w| w == b"\r\n\r\n") {
                        break i + 4;
                    }
                };
                let head = String::from_utf8_lossy(&request[..head_end]).to_ascii_lowercase();
                let length: usize = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .and_then(|v| v.trim().parse().ok())
                    .unwrap_or(0);
                while request.len() < head_end + length {
                    let n = socket.read(&mut buf).await.unwrap_or(0);
                    if n == 0 {
                        break;
                    }
                    request.extend_from_slice(&buf[..n]);
                }
                let answer = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 1000\r\n\r\n{\"responses\": [";
                let _ = socket.write_all(answer).await;
                let _ = socket.shutdown().await;
            });
        }
    });
    (base, task)
}

#[tokio::test]
async fn a_body_cut_off_before_its_end_is_an_error_not_a_short_answer() {
    let s = Servers::start().await;
    let (cut, _task) = truncating().await;
    // Graph's answer cut off (the sign-in works).
    let (e, took) =
        failing(tenant_client_at(&s.base, &cut, EnqueueMethod::ProfileLoader).observe(&users(1))).await;
    assert_eq!(e.reason().as_str(), "Unreachable", "{e}");
    assert!(e.to_string().contains("cut off before its end"), "{e}");
    assert!(took < Duration::from_secs(4), "{took:?}");
    // The token endpoint's.
    let (e, _) = failing(tenant_client_at(&cut, &s.base, EnqueueMethod::ProfileLoader).graph_token()).await;
    assert_eq!(e.reason().as_str(), "Unreachable", "{e}");
    assert!(e.to_string().contains("cut off before its end"), "{e}");
}

/// The child half of [`a_400_mb_answer_leaves_the_reader_small`]: reads the answer, then prints
/// its own peak resident size.
#[tokio::test]
#[ignore = "run by a_400_mb_answer_leaves_the_reader_small in a process of its own"]
async fn huge_answer_child() {
    let Ok(base) = std::env::var("HOSTILE_BASE") else { return };
    let e = tenant_client(&base, EnqueueMethod::ProfileLoader).observe(&users(1)).await.unwrap_err();
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let hwm = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
    println!("error: {e}");
    println!("{hwm}");
}

/// A 400 MB answer (declared, and one streamed without a length) costs the process that reads it
/// far less than the 256 MiB a pod gets: measured as the peak resident size (VmHWM) of a child
/// process that does nothing else.
#[tokio::test]
async fn a_400_mb_answer_leaves_the_reader_small() {
    let s = Servers::start().await;
    for mode in [Mode::HugeDeclared, Mode::Huge] {
        s.set("batch", mode);
        let base = s.base.clone();
        let out = tokio::task::spawn_blocking(move || {
            std::process::Command::new(std::env::current_exe().unwrap())
                .args(["huge_answer_child", "--exact", "--ignored", "--nocapture", "--test-threads=1"])
                .env("HOSTILE_BASE", base)
                .output()
                .unwrap()
        })
        .await
        .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        let kb: u64 = stdout
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or_else(|| {
                panic!("no VmHWM from the child:\n{stdout}\n{}", String::from_utf8_lossy(&out.stderr))
            });
        assert!(stdout.contains("more than 4 MiB"), "{stdout}");
        println!("{mode:?}: the reader's peak RSS {} MiB", kb / 1024);
        assert!(kb < 100 * 1024, "{mode:?}: peak RSS {kb} kB");
    }
}
