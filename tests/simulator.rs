//! The Microsoft 365 simulator over real loopback HTTP: every endpoint, each error shape, the
//! provisioning scenario, reproducible faults and the `simulate` command.

use std::collections::HashMap;
use std::net::SocketAddr;

use jiff::SignedDuration;
use onedrive_operator::jose::{self, Alg};
use onedrive_operator::simulator::{
    self, AppOnlyEnqueue, Config, FaultConfig, LookupQuirk, SimHandle, SiteState, UserSpec,
};
use reqwest::StatusCode;
use serde_json::{Value, json};

mod common;
use common::*;

fn loopback() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

fn config(users: usize) -> Config {
    common::sim_config(users)
}

async fn start(c: Config) -> SimHandle {
    simulator::start(c, loopback()).await.unwrap()
}

fn http() -> reqwest::Client {
    onedrive_operator::install_crypto_provider();
    reqwest::Client::new()
}

fn assertion(sim: &SimHandle, alg: Alg, aud: Option<&str>, lifetime: i64) -> String {
    let now = sim.now().as_second();
    let header = match alg {
        Alg::RS256 => json!({"x5t": CERT.x5t()}),
        _ => json!({"x5t#S256": CERT.x5t_s256()}),
    };
    let claims = json!({
        "aud": aud.map(String::from).unwrap_or_else(|| sim.token_endpoint()),
        "iss": APP, "sub": APP, "jti": jose::guid(),
        "nbf": now, "iat": now, "exp": now + lifetime,
    });
    jose::sign_rsa(alg, &KEY, header, &claims).unwrap()
}

async fn token_request(sim: &SimHandle, form: &[(&str, &str)]) -> (StatusCode, Value) {
    let r = http().post(sim.token_endpoint()).form(form).send().await.unwrap();
    (r.status(), r.json().await.unwrap())
}

async fn cert_token(sim: &SimHandle, resource: &str) -> String {
    let a = assertion(sim, Alg::PS256, None, 600);
    let scope = format!("{resource}/.default");
    let (status, body) = token_request(
        sim,
        &[
            ("grant_type", "client_credentials"),
            ("client_id", APP),
            ("scope", &scope),
            ("client_assertion_type", "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"),
            ("client_assertion", &a),
        ],
    )
    .await;
    assert_eq!(status, 200, "{body}");
    body["access_token"].as_str().unwrap().to_string()
}

async fn delegated_token(sim: &SimHandle, resource: &str) -> String {
    let scope = format!("{resource}/.default offline_access");
    let (status, body) = token_request(
        sim,
        &[
            ("grant_type", "refresh_token"),
            ("client_id", APP),
            ("scope", &scope),
            ("refresh_token", REFRESH_TOKEN),
        ],
    )
    .await;
    assert_eq!(status, 200, "{body}");
    body["access_token"].as_str().unwrap().to_string()
}

fn cert_form<'a>(assertion: &'a str, scope: &'a str) -> Vec<(&'static str, &'a str)> {
    vec![
        ("grant_type", "client_credentials"),
        ("client_id", APP),
        ("scope", scope),
        ("client_assertion_type", "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"),
        ("client_assertion", assertion),
    ]
}

#[tokio::test]
async fn certificate_assertions_are_verified_like_entra_does() {
    let sim = start(config(1)).await;
    let scope = format!("{}/.default", sim.graph_url());
    for alg in [Alg::PS256, Alg::RS256] {
        let a = assertion(&sim, alg, None, 600);
        let (status, body) = token_request(&sim, &cert_form(&a, &scope)).await;
        assert_eq!(status, 200, "{alg:?}: {body}");
        assert_eq!(body["token_type"], "Bearer");
        assert!(body["expires_in"].as_i64().unwrap() > 3000);
    }
    // Tampered signature: claims changed after signing.
    let good = assertion(&sim, Alg::PS256, None, 600);
    let mut parts: Vec<String> = good.split('.').map(String::from).collect();
    let now = sim.now().as_second();
    parts[1] = jose::b64url(
        json!({"aud": sim.token_endpoint(), "iss": APP, "sub": APP, "nbf": now, "exp": now + 9999})
            .to_string()
            .as_bytes(),
    );
    let tampered = parts.join(".");
    let cases = [
        (tampered, 700027, "signature"),
        (assertion(&sim, Alg::PS256, Some("https://login.example/other/token"), 600), 700027, "audience"),
        (assertion(&sim, Alg::PS256, None, -60), 700024, "valid time range"),
    ];
    for (a, code, words) in cases {
        let (status, body) = token_request(&sim, &cert_form(&a, &scope)).await;
        assert_eq!(status, 401, "{body}");
        assert_eq!(body["error"], "invalid_client");
        assert_eq!(body["error_codes"][0], code, "{body}");
        assert!(body["error_description"].as_str().unwrap().contains(words), "{body}");
        for field in ["timestamp", "trace_id", "correlation_id", "error_uri"] {
            assert!(body[field].is_string(), "{field} in {body}");
        }
    }
    let (status, body) = token_request(&sim, &cert_form(&good, "https://elsewhere.example/.default")).await;
    assert_eq!((status, body["error"].as_str()), (StatusCode::BAD_REQUEST, Some("invalid_resource")));
}

#[tokio::test]
async fn federated_assertions_need_a_matching_federated_record() {
    let sim = start(config(1)).await;
    let scope = format!("{}/.default", sim.admin_url());
    let now = sim.now().as_second();
    let make = |sub: &str| federated_assertion(sub, now);
    let form = |a: &str| {
        vec![
            ("grant_type".to_string(), "client_credentials".to_string()),
            ("client_id".into(), FED_APP.into()),
            ("scope".into(), scope.clone()),
            ("client_assertion_type".into(), "urn:ietf:params:oauth:client-assertion-type:jwt-bearer".into()),
            ("client_assertion".into(), a.to_string()),
        ]
    };
    let r = http().post(sim.token_endpoint()).form(&form(&make(SUBJECT))).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let r = http()
        .post(sim.token_endpoint())
        .form(&form(&make("system:serviceaccount:x:y")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error_codes"][0], 70021);
}

#[tokio::test]
async fn refresh_tokens_rotate_and_bad_ones_are_invalid_grant() {
    let sim = start(config(1)).await;
    let scope = format!("{}/.default offline_access", sim.admin_url());
    let (status, body) = token_request(
        &sim,
        &[
            ("grant_type", "refresh_token"),
            ("client_id", APP),
            ("scope", &scope),
            ("refresh_token", REFRESH_TOKEN),
        ],
    )
    .await;
    assert_eq!(status, 200);
    let rotated = body["refresh_token"].as_str().unwrap().to_string();
    assert_ne!(rotated, REFRESH_TOKEN);
    let (status, _) = token_request(
        &sim,
        &[
            ("grant_type", "refresh_token"),
            ("client_id", APP),
            ("scope", &scope),
            ("refresh_token", &rotated),
        ],
    )
    .await;
    assert_eq!(status, 200, "the rotated token works");
    let (status, body) = token_request(
        &sim,
        &[
            ("grant_type", "refresh_token"),
            ("client_id", APP),
            ("scope", &scope),
            ("refresh_token", "rt-stolen"),
        ],
    )
    .await;
    assert_eq!(status, 400);
    assert_eq!(body["error"], "invalid_grant");
    assert_eq!(body["error_codes"][0], 700082);
    // Scopes of two resources in one request are refused, as Entra ID refuses them (AADSTS70011).
    let both = format!("{}/.default {}/.default offline_access", sim.admin_url(), sim.graph_url());
    let (status, body) = token_request(
        &sim,
        &[("grant_type", "refresh_token"), ("client_id", APP), ("scope", &both), ("refresh_token", &rotated)],
    )
    .await;
    assert_eq!(status, 400);
    assert_eq!(body["error"], "invalid_scope");
    assert_eq!(body["error_codes"][0], 70011);
}

#[tokio::test]
async fn client_secrets_work_for_graph_but_sharepoint_refuses_them() {
    let sim = start(config(1)).await;
    let get_token = |resource: String| {
        let sim = &sim;
        async move {
            let scope = format!("{resource}/.default");
            token_request(
                sim,
                &[
                    ("grant_type", "client_credentials"),
                    ("client_id", SECRET_APP),
                    ("client_secret", CLIENT_SECRET),
                    ("scope", &scope),
                ],
            )
            .await
        }
    };
    let (status, body) = get_token(sim.graph_url()).await;
    assert_eq!(status, 200);
    let graph = body["access_token"].as_str().unwrap().to_string();
    let r = http()
        .get(format!("{}/v1.0/users/user0@contoso.com", sim.graph_url()))
        .bearer_auth(&graph)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let (_, body) = get_token(sim.admin_url()).await;
    let sp = body["access_token"].as_str().unwrap().to_string();
    let r =
        http().post(format!("{}/_api/contextinfo", sim.admin_url())).bearer_auth(&sp).send().await.unwrap();
    assert_eq!(r.status(), 401);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error_description"], "Unsupported app only token.");
    let (status, body) = token_request(
        &sim,
        &[
            ("grant_type", "client_credentials"),
            ("client_id", SECRET_APP),
            ("client_secret", "wrong"),
            ("scope", &format!("{}/.default", sim.graph_url())),
        ],
    )
    .await;
    assert_eq!((status, body["error_codes"][0].as_i64()), (StatusCode::UNAUTHORIZED, Some(7000215)));
}

#[tokio::test]
async fn graph_users_drives_and_errors() {
    let sim = start(config(2)).await;
    let token = cert_token(&sim, &sim.graph_url()).await;
    let g = |path: String| {
        let token = token.clone();
        let url = format!("{}/v1.0{path}", sim.graph_url());
        async move {
            let r = http().get(url).bearer_auth(token).send().await.unwrap();
            let ct = r.headers()["content-type"].to_str().unwrap().to_string();
            (r.status(), ct, r.json::<Value>().await.unwrap())
        }
    };
    let (s, ct, body) = g("/users/user0@contoso.com".into()).await;
    assert_eq!(s, 200);
    assert!(ct.starts_with("application/json;odata.metadata=minimal"));
    assert_eq!(body["userPrincipalName"], "user0@contoso.com");
    let (s, _, body) = g("/users/ghost@contoso.com".into()).await;
    assert_eq!(
        (s, body["error"]["code"].as_str()),
        (StatusCode::NOT_FOUND, Some("Request_ResourceNotFound"))
    );
    assert!(body["error"]["innerError"]["request-id"].is_string());
    let (s, _, body) = g("/users/user0@contoso.com/drive".into()).await;
    assert_eq!((s, body["error"]["code"].as_str()), (StatusCode::NOT_FOUND, Some("ResourceNotFound")));
    assert_eq!(body["error"]["message"], "User's mysite not found.");
    let (s, _, body) = g("/users/ghost@contoso.com/drive".into()).await;
    assert_eq!(
        (s, body["error"]["code"].as_str()),
        (StatusCode::NOT_FOUND, Some("Request_ResourceNotFound"))
    );
    let (s, _, body) = g("/users/has@contoso.com/drive".into()).await;
    assert_eq!(s, 200);
    assert!(body["webUrl"].as_str().unwrap().ends_with("/my/personal/has_contoso_com/Documents"));
    let (s, _, body) = g("/users/nolicence@contoso.com/drive".into()).await;
    assert_eq!((s, body["error"]["code"].as_str()), (StatusCode::BAD_REQUEST, Some("BadRequest")));
    // No token, a token for SharePoint, garbage.
    let r = http().get(format!("{}/v1.0/users/user0@contoso.com", sim.graph_url())).send().await.unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(r.json::<Value>().await.unwrap()["error"]["code"], "InvalidAuthenticationToken");
    let sp = cert_token(&sim, &sim.admin_url()).await;
    let r = http()
        .get(format!("{}/v1.0/users/user0@contoso.com", sim.graph_url()))
        .bearer_auth(sp)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let r = http()
        .get(format!("{}/v1.0/users/user0@contoso.com", sim.graph_url()))
        .bearer_auth("x.y.z")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
}

#[tokio::test]
async fn graph_batch_limits_ids_and_answers_in_any_order() {
    let sim = start(config(30)).await;
    let token = cert_token(&sim, &sim.graph_url()).await;
    let post = |body: Value| {
        let token = token.clone();
        let url = format!("{}/v1.0/$batch", sim.graph_url());
        async move {
            let r = http().post(url).bearer_auth(token).json(&body).send().await.unwrap();
            (r.status(), r.json::<Value>().await.unwrap())
        }
    };
    let items = |n: usize| -> Vec<Value> {
        (0..n).map(|i| json!({"id": i.to_string(), "method": "GET", "url": format!("/users/user{i}@contoso.com/drive")})).collect()
    };
    let (s, body) = post(json!({"requests": items(21)})).await;
    assert_eq!((s, body["error"]["code"].as_str()), (StatusCode::BAD_REQUEST, Some("BadRequest")));
    let mut dup = items(2);
    dup[1]["id"] = json!("0");
    let (s, _) = post(json!({"requests": dup})).await;
    assert_eq!(s, 400);
    let mut twenty = items(19);
    twenty.push(json!({"id": "has", "method": "GET", "url": "/users/has%40contoso.com/drive"}));
    let (s, body) = post(json!({"requests": twenty})).await;
    assert_eq!(s, 200);
    let responses = body["responses"].as_array().unwrap();
    assert_eq!(responses.len(), 20);
    let ids: Vec<&str> = responses.iter().map(|r| r["id"].as_str().unwrap()).collect();
    let mut sorted = ids.clone();
    sorted.sort_by_key(|i| i.parse::<usize>().unwrap_or(99));
    assert_ne!(ids, sorted, "responses come back shuffled");
    let by_id: HashMap<&str, &Value> = responses.iter().map(|r| (r["id"].as_str().unwrap(), r)).collect();
    assert_eq!(by_id["has"]["status"], 200);
    assert_eq!(by_id["3"]["status"], 404);
    assert_eq!(by_id["3"]["body"]["error"]["code"], "ResourceNotFound");
    let stats = sim.stats();
    assert_eq!(stats.count("graph.batch"), 3);
    assert_eq!(stats.count("graph.batch.items"), 20);
}

#[tokio::test]
async fn throttled_batch_items_carry_their_own_retry_after() {
    let mut c = config(20);
    c.faults = FaultConfig { rate: 0.5, seed: 3, ..FaultConfig::default() };
    let sim = start(c).await;
    let token = cert_token(&sim, &sim.graph_url()).await;
    let items: Vec<Value> = (0..20)
        .map(|i| json!({"id": i.to_string(), "method": "GET", "url": format!("/users/user{i}@contoso.com")}))
        .collect();
    let r = http()
        .post(format!("{}/v1.0/$batch", sim.graph_url()))
        .bearer_auth(token)
        .json(&json!({"requests": items}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "the envelope succeeds");
    let body: Value = r.json().await.unwrap();
    let throttled: Vec<&Value> =
        body["responses"].as_array().unwrap().iter().filter(|r| r["status"] == 429).collect();
    assert!(!throttled.is_empty() && throttled.len() < 20);
    for t in throttled {
        let ra: f64 = t["headers"]["Retry-After"].as_str().unwrap().parse().unwrap();
        assert!(ra > 0.0 && ra <= 2.0);
        assert_eq!(t["body"]["error"]["code"], "TooManyRequests");
    }
}

#[tokio::test]
async fn all_personal_sites_are_listed_page_by_page() {
    let mut c = config(0);
    c.users = (0..7)
        .map(|i| {
            let mut u = UserSpec::new(format!("s{i}@contoso.com"));
            u.has_site = true;
            u
        })
        .collect();
    let sim = start(c).await;
    let token = cert_token(&sim, &sim.graph_url()).await;
    let mut url = format!(
        "{}/v1.0/sites/getAllSites?$filter=isPersonalSite%20eq%20true&$select=webUrl&$top=3",
        sim.graph_url()
    );
    let mut seen = Vec::new();
    loop {
        let body: Value = http().get(&url).bearer_auth(&token).send().await.unwrap().json().await.unwrap();
        for s in body["value"].as_array().unwrap() {
            seen.push(s["webUrl"].as_str().unwrap().to_string());
        }
        match body["@odata.nextLink"].as_str() {
            Some(next) => url = next.to_string(),
            None => break,
        }
    }
    assert_eq!(seen.len(), 7);
    assert!(seen[0].contains("/my/personal/s0_contoso_com"));
}

fn csom_body(kind: &str, emails: &[&str]) -> String {
    let objects: String = emails
        .iter()
        .map(|e| format!("<Object Type=\"String\">{}</Object>", quick_xml::escape::escape(*e)))
        .collect();
    let params = format!("<Parameters><Parameter Type=\"Array\">{objects}</Parameter></Parameters>");
    let head = r#"<Request xmlns="http://schemas.microsoft.com/sharepoint/clientquery/2009" SchemaVersion="15.0.0.0" LibraryVersion="16.0.0.0" ApplicationName="test">"#;
    match kind {
        "ProfileLoader" => format!(
            "{head}<Actions><ObjectPath Id=\"2\" ObjectPathId=\"1\" /><Method Name=\"CreatePersonalSiteEnqueueBulk\" Id=\"3\" ObjectPathId=\"1\">{params}</Method></Actions><ObjectPaths><StaticMethod Id=\"1\" Name=\"GetProfileLoader\" TypeId=\"{{9c42543a-91b3-4902-b2fe-14ccdefb6e2b}}\" /></ObjectPaths></Request>"
        ),
        _ => format!(
            "{head}<Actions><ObjectPath Id=\"2\" ObjectPathId=\"1\" /><ObjectPath Id=\"4\" ObjectPathId=\"3\" /><Query Id=\"5\" ObjectPathId=\"3\"><Query SelectAllProperties=\"true\"><Properties /></Query></Query></Actions><ObjectPaths><Constructor Id=\"1\" TypeId=\"{{268004ae-ef6b-4e9b-8425-127220d84719}}\" /><Method Id=\"3\" ParentId=\"1\" Name=\"RequestPersonalSites\">{params}</Method></ObjectPaths></Request>"
        ),
    }
}

async fn process_query(sim: &SimHandle, token: &str, body: String) -> Value {
    let r = http()
        .post(format!("{}/_vti_bin/client.svc/ProcessQuery", sim.admin_url()))
        .bearer_auth(token)
        .header("content-type", "text/xml")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "CSOM answers 200 even on failure");
    r.json().await.unwrap()
}

async fn rest_enqueue(
    sim: &SimHandle,
    token: &str,
    emails: &[String],
    digest: Option<&str>,
) -> reqwest::Response {
    let mut req = http()
        .post(format!(
            "{}/_api/SP.UserProfiles.ProfileLoader.GetProfileLoader/CreatePersonalSiteEnqueueBulk",
            sim.admin_url()
        ))
        .bearer_auth(token)
        .header("accept", "application/json;odata=verbose")
        .json(&json!({"emailIDs": emails}));
    if let Some(d) = digest {
        req = req.header("X-RequestDigest", d);
    }
    req.send().await.unwrap()
}

async fn profile(sim: &SimHandle, token: &str, upn: &str) -> Value {
    let account = format!("'i:0#.f|membership|{upn}'");
    let r = http()
        .get(format!(
            "{}/_api/SP.UserProfiles.PeopleManager/GetPropertiesFor(accountName=@v)",
            sim.admin_url()
        ))
        .query(&[("@v", account)])
        .bearer_auth(token)
        .header("accept", "application/json;odata=nometadata")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    r.json().await.unwrap()
}

fn profile_property(p: &Value, key: &str) -> String {
    p["UserProfileProperties"].as_array().unwrap().iter().find(|x| x["Key"] == key).unwrap()["Value"]
        .as_str()
        .unwrap()
        .to_string()
}

#[tokio::test]
async fn provisioning_scenario_200_users_spssiteerror_then_sites() {
    let sim = start(config(250)).await;
    let sp = cert_token(&sim, &sim.admin_url()).await;
    let graph = cert_token(&sim, &sim.graph_url()).await;
    let users: Vec<String> = (0..200).map(|i| format!("user{i}@contoso.com")).collect();
    // contextinfo, then enqueue with the digest.
    let ctx: Value = http()
        .post(format!("{}/_api/contextinfo", sim.admin_url()))
        .bearer_auth(&sp)
        .header("accept", "application/json;odata=verbose")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let digest = ctx["d"]["GetContextWebInformation"]["FormDigestValue"].as_str().unwrap().to_string();
    let r = rest_enqueue(&sim, &sp, &users, Some(&digest)).await;
    assert_eq!(r.status(), 200);
    let p = profile(&sim, &sp, "user199@contoso.com").await;
    assert_eq!(profile_property(&p, "SPS-PersonalSiteInstantiationState"), "1");
    assert_eq!(profile_property(&p, "PersonalSpace"), "SPSSITEERROR");
    let drive = |upn: &str| {
        let url = format!("{}/v1.0/users/{upn}/drive", sim.graph_url());
        let graph = graph.clone();
        async move { http().get(url).bearer_auth(graph).send().await.unwrap() }
    };
    assert_eq!(drive("user199@contoso.com").await.status(), 404);
    sim.advance(SignedDuration::from_mins(10));
    let r = drive("user199@contoso.com").await;
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    assert!(body["webUrl"].as_str().unwrap().contains("/personal/user199_contoso_com/"));
    let p = profile(&sim, &sp, "user0@contoso.com").await;
    assert_eq!(profile_property(&p, "SPS-PersonalSiteInstantiationState"), "2");
    assert_eq!(profile_property(&p, "PersonalSpace"), "/personal/user0_contoso_com/");
    // 201 users: refused, nothing changes.
    let too_many: Vec<String> = (0..201).map(|i| format!("user{i}@contoso.com")).collect();
    let r = rest_enqueue(&sim, &sp, &too_many, None).await;
    assert_eq!(r.status(), 400);
    let body: Value = r.json().await.unwrap();
    assert!(body["error"]["message"]["value"].as_str().unwrap().contains("maximum of 200"));
    assert_eq!(sim.site_state("user200@contoso.com"), Some(SiteState::Uninitialized));
    let r = rest_enqueue(&sim, &sp, &["user200@contoso.com".to_string(), " ".to_string()], None).await;
    assert_eq!(r.status(), 400, "an empty email is refused");
    // Re-enqueueing provisioned users changes nothing.
    let before = sim.site_state("user5@contoso.com");
    let reply =
        process_query(&sim, &sp, csom_body("ProfileLoader", &["user5@contoso.com", "user7@contoso.com"]))
            .await;
    assert!(reply[0]["ErrorInfo"].is_null(), "{reply}");
    assert_eq!(sim.site_state("user5@contoso.com"), before);
    // CSOM over 200: ErrorInfo inside HTTP 200.
    let many: Vec<&str> = too_many.iter().map(String::as_str).collect();
    let reply = process_query(&sim, &sp, csom_body("RequestPersonalSites", &many)).await;
    assert_eq!(reply[0]["ErrorInfo"]["ErrorTypeName"], "System.ArgumentException");
    // RequestPersonalSites returns a complete SpoOperation.
    let reply = process_query(
        &sim,
        &sp,
        csom_body("RequestPersonalSites", &["user201@contoso.com", "o'neil&co@contoso.com"]),
    )
    .await;
    assert!(reply[0]["ErrorInfo"].is_null(), "{reply}");
    assert_eq!(reply[1], 5);
    assert_eq!(reply[2]["_ObjectType_"], "Microsoft.Online.SharePoint.TenantAdministration.SpoOperation");
    assert_eq!(reply[2]["IsComplete"], true);
    assert!(reply[2]["PollingInterval"].as_i64().unwrap() > 0);
    assert_eq!(sim.site_state("user201@contoso.com").unwrap().code(), 1);
    let stats = sim.stats();
    let methods: Vec<&str> = stats.enqueues.iter().map(|e| e.method.as_str()).collect();
    assert_eq!(methods, ["ProfileLoader", "ProfileLoaderCsom", "RequestPersonalSites"]);
    assert!(stats.enqueues.iter().all(|e| e.users.len() <= 200 && e.token_kind == "app-certificate"));
    assert_eq!(stats.enqueues[2].users[1], "o'neil&co@contoso.com", "CSOM strings are unescaped");
    // Unknown account: empty profile.
    let p = profile(&sim, &sp, "ghost@contoso.com").await;
    assert_eq!(p["odata.null"], true);
}

/// The field's answers: the "mysite URL" quirk for licensed users without a site (400
/// `BadRequest`, 500 `UnknownError`), a broken user (500 on every drive lookup), a sign-in-blocked
/// user (the documented 404, `accountEnabled: false`, an enqueue accepted and its profile Enqueued
/// forever), and timer jobs that end in a profile error instead of a site.
#[tokio::test]
async fn field_quirks_blocked_users_and_profile_errors() {
    let mut c = config(0);
    let user = |name: &str, f: &dyn Fn(&mut UserSpec)| {
        let mut u = UserSpec::new(format!("{name}@contoso.com"));
        f(&mut u);
        u
    };
    c.users = vec![
        user("quirk400", &|u| u.lookup_quirk = LookupQuirk::MysiteBadRequest),
        user("quirk500", &|u| u.lookup_quirk = LookupQuirk::MysiteUnknownError),
        user("broken", &|u| {
            u.lookup_quirk = LookupQuirk::Broken;
            u.has_site = true
        }),
        user("blocked", &|u| u.sign_in_allowed = false),
        user("disabled", &|u| u.profile_outcome = Some(4099)),
        user("partial", &|u| u.profile_outcome = Some(8195)),
        user("stuck", &|u| u.profile_outcome = Some(1)),
    ];
    let sim = start(c).await;
    let graph = cert_token(&sim, &sim.graph_url()).await;
    let sp = cert_token(&sim, &sim.admin_url()).await;
    let get = |path: String| {
        let (graph, url) = (graph.clone(), format!("{}/v1.0{path}", sim.graph_url()));
        async move {
            let r = http().get(url).bearer_auth(graph).send().await.unwrap();
            (r.status().as_u16(), r.json::<Value>().await.unwrap())
        }
    };
    let drive = |name: &str| get(format!("/users/{name}@contoso.com/drive"));
    let (s, body) = drive("quirk400").await;
    assert_eq!((s, body["error"]["code"].as_str()), (400, Some("BadRequest")));
    assert_eq!(body["error"]["message"], "Unable to retrieve user's mysite URL.");
    let (s, body) = drive("quirk500").await;
    assert_eq!((s, body["error"]["code"].as_str()), (500, Some("UnknownError")));
    assert_eq!(body["error"]["message"], "Unable to retrieve user's mysite URL.");
    let (s, body) = drive("broken").await;
    assert_eq!((s, body["error"]["code"].as_str()), (500, Some("generalException")), "even with a site");
    let (s, body) = drive("blocked").await;
    assert_eq!((s, body["error"]["code"].as_str()), (404, Some("ResourceNotFound")));
    let (s, body) = get("/users/blocked@contoso.com?$select=accountEnabled,assignedPlans".into()).await;
    assert_eq!((s, body["accountEnabled"].as_bool()), (200, Some(false)));
    assert_eq!(body["assignedPlans"][0]["capabilityStatus"], "Enabled");
    let all: Vec<String> = ["quirk400", "quirk500", "blocked", "disabled", "partial", "stuck"]
        .iter()
        .map(|n| format!("{n}@contoso.com"))
        .collect();
    assert_eq!(rest_enqueue(&sim, &sp, &all, None).await.status(), 200);
    sim.advance(SignedDuration::from_hours(48));
    let state = |p: &Value| profile_property(p, "SPS-PersonalSiteInstantiationState");
    for (name, expected) in [("blocked", "1"), ("stuck", "1"), ("disabled", "4099"), ("partial", "8195")] {
        let p = profile(&sim, &sp, &format!("{name}@contoso.com")).await;
        assert_eq!(state(&p), expected, "{name}");
        assert_eq!(drive(name).await.0, 404, "{name} has no site");
    }
    for name in ["quirk400", "quirk500"] {
        let (s, body) = drive(name).await;
        assert_eq!(s, 200, "{name} got a site, and the quirk is gone with it");
        assert!(body["webUrl"].as_str().unwrap().contains(&format!("/personal/{name}_contoso_com/")));
    }
}

#[tokio::test]
async fn app_only_enqueue_can_be_refused_while_delegated_works() {
    let mut c = config(3);
    c.app_only_enqueue = AppOnlyEnqueue::Refuse;
    let sim = start(c).await;
    let app = cert_token(&sim, &sim.admin_url()).await;
    let users = vec!["user0@contoso.com".to_string()];
    let r = rest_enqueue(&sim, &app, &users, None).await;
    assert_eq!(r.status(), 403);
    assert!(r.headers()["x-msdavext_error"].to_str().unwrap().starts_with("917656"));
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "-2147024891, System.UnauthorizedAccessException");
    let reply = process_query(&sim, &app, csom_body("ProfileLoader", &["user0@contoso.com"])).await;
    assert_eq!(reply[0]["ErrorInfo"]["ErrorMessage"], "Attempted to perform an unauthorized operation.");
    assert_eq!(reply[0]["ErrorInfo"]["ErrorTypeName"], "System.UnauthorizedAccessException");
    assert_eq!(sim.site_state("user0@contoso.com"), Some(SiteState::Uninitialized));
    // The profile read still works with the app token; the enqueue works delegated.
    profile(&sim, &app, "user0@contoso.com").await;
    let delegated = delegated_token(&sim, &sim.admin_url()).await;
    let r = rest_enqueue(&sim, &delegated, &users, None).await;
    assert_eq!(r.status(), 200);
    assert_eq!(sim.stats().enqueues[0].token_kind, "delegated");
}

#[tokio::test]
async fn sharepoint_rejects_a_graph_token_with_the_audience_diagnostic() {
    let sim = start(config(1)).await;
    let graph = cert_token(&sim, &sim.graph_url()).await;
    let r =
        http().post(format!("{}/_api/contextinfo", sim.admin_url())).bearer_auth(graph).send().await.unwrap();
    assert_eq!(r.status(), 401);
    assert!(
        r.headers()["www-authenticate"]
            .to_str()
            .unwrap()
            .contains("client_id=\"00000003-0000-0ff1-ce00-000000000000\"")
    );
    assert!(r.headers()["x-ms-diagnostics"].to_str().unwrap().contains("Invalid audience Uri"));
    assert!(r.text().await.unwrap().is_empty());
    // A digest this host never issued is refused.
    let sp = cert_token(&sim, &sim.admin_url()).await;
    let r = rest_enqueue(&sim, &sp, &["user0@contoso.com".into()], Some("0xFORGED")).await;
    assert_eq!(r.status(), 403);
}

async fn statuses(seed: u64) -> Vec<u16> {
    let mut c = config(5);
    c.faults = FaultConfig { rate: 0.3, seed, ..FaultConfig::default() };
    let sim = start(c).await;
    let graph = cert_token(&sim, &sim.graph_url()).await;
    let sp = cert_token(&sim, &sim.admin_url()).await;
    let mut out = Vec::new();
    for i in 0..40 {
        let r = if i % 2 == 0 {
            http()
                .get(format!("{}/v1.0/users/user0@contoso.com", sim.graph_url()))
                .bearer_auth(&graph)
                .send()
                .await
                .unwrap()
        } else {
            http()
                .post(format!("{}/_api/contextinfo", sim.admin_url()))
                .bearer_auth(&sp)
                .send()
                .await
                .unwrap()
        };
        if r.status() != 200 {
            let ra = r.headers()["retry-after"].to_str().unwrap().to_string();
            if i % 2 == 1 {
                assert!(!ra.contains('.'), "SharePoint gives whole seconds: {ra}");
            }
        }
        out.push(r.status().as_u16());
    }
    out
}

#[tokio::test]
async fn the_same_seed_gives_the_same_fault_sequence() {
    let a = statuses(7).await;
    assert_eq!(a, statuses(7).await);
    assert!(a.contains(&429) && a.contains(&200), "{a:?}");
    assert_ne!(a, statuses(8).await);
}

#[tokio::test]
async fn quota_headers_and_a_blocked_app() {
    let mut c = config(1);
    c.faults = FaultConfig { sharepoint_quota_per_minute: 5, ..FaultConfig::default() };
    let sim = start(c).await;
    let sp = cert_token(&sim, &sim.admin_url()).await;
    let mut seen = Vec::new();
    for _ in 0..7 {
        let r = http()
            .post(format!("{}/_api/contextinfo", sim.admin_url()))
            .bearer_auth(&sp)
            .send()
            .await
            .unwrap();
        seen.push((
            r.status().as_u16(),
            r.headers().get("ratelimit-remaining").is_some(),
            r.headers().get("retry-after").is_some(),
        ));
    }
    assert_eq!(seen[0], (200, false, false));
    assert_eq!(seen[4], (200, true, false), "headers from 80% of the quota");
    assert_eq!(seen[6], (429, true, true), "beyond the quota");

    let mut c = config(1);
    c.faults = FaultConfig { blocked: true, ..FaultConfig::default() };
    let sim = start(c).await;
    let sp = cert_token(&sim, &sim.admin_url()).await;
    for _ in 0..3 {
        let r = http()
            .post(format!("{}/_api/contextinfo", sim.admin_url()))
            .bearer_auth(&sp)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 503);
        assert!(r.headers().contains_key("retry-after"));
    }
}

#[tokio::test]
async fn stats_are_served_as_json_and_count_everything() {
    let sim = start(config(1)).await;
    let token = cert_token(&sim, &sim.graph_url()).await;
    http()
        .get(format!("{}/v1.0/users/user0@contoso.com", sim.graph_url()))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    let stats: Value =
        http().get(format!("{}/_sim/stats", sim.base_url())).send().await.unwrap().json().await.unwrap();
    assert_eq!(stats["requests"]["entra.token"], 1);
    assert_eq!(stats["requests"]["graph.user"], 1);
    assert!(stats["peak_concurrency"].as_u64().unwrap() >= 1);
    assert_eq!(stats["log"].as_array().unwrap().len(), 2);
}

#[test]
fn the_simulate_command_serves_stats_and_refuses_anonymous_graph_calls() {
    let (_child, printed) = spawn_simulate(&["--generate", "300"]);
    let docs: Vec<Value> =
        printed.split("\n---\n").map(|d| serde_yaml::from_str::<Value>(d).unwrap()).collect();
    assert_eq!(docs[0]["kind"], "Secret");
    assert_eq!(docs[0]["type"], "kubernetes.io/tls");
    let tenant: onedrive_operator::api::OneDriveTenant = serde_json::from_value(docs[1].clone()).unwrap();
    let graph = tenant.spec.graph_url().to_string();
    let base = graph.trim_end_matches("/graph").to_string();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let stats: Value =
            http().get(format!("{base}/_sim/stats")).send().await.unwrap().json().await.unwrap();
        assert!(stats["requests"].is_object());
        let r = http()
            .get(format!("{graph}/v1.0/users/user0001@contoso.onmicrosoft.com/drive"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401);
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["error"]["code"], "InvalidAuthenticationToken");
    });
}

/// A Multi-Geo tenant: Graph lists one root site per geo; each geo's admin host is its own token
/// audience and user-profile service; an enqueue at the wrong geo's host is accepted and its
/// users of other geos are ignored (the simulator's documented choice), so no site appears.
#[tokio::test]
async fn a_multi_geo_tenant_keeps_each_geos_users_to_its_own_admin_host() {
    let mut c = sim_config(0);
    let mut eur = UserSpec::new("eva@contoso.com");
    eur.preferred_data_location = Some("EUR".into());
    let mut jpn = UserSpec::new("jun@contoso.com");
    jpn.preferred_data_location = Some("JPN".into());
    c.users = vec![eur, jpn];
    c.geos = vec!["NAM".into(), "EUR".into()];
    let sim = start(c).await;
    let graph = cert_token(&sim, &sim.graph_url()).await;
    let graph_url = sim.graph_url();
    let get = |path: String| {
        let (graph, url) = (graph.clone(), format!("{graph_url}/v1.0{path}"));
        async move { http().get(url).bearer_auth(graph).send().await.unwrap().json::<Value>().await.unwrap() }
    };
    let roots =
        get("/sites?$filter=siteCollection/root%20ne%20null&$select=webUrl,siteCollection".into()).await;
    let listed: Vec<(&str, &str)> = roots["value"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (s["siteCollection"]["dataLocationCode"].as_str().unwrap(), s["webUrl"].as_str().unwrap()))
        .collect();
    assert_eq!(
        listed,
        vec![("NAM", "https://contoso.sharepoint.com"), ("EUR", "https://contosoeur.sharepoint.com")]
    );
    let user = get("/users/eva@contoso.com?$select=preferredDataLocation".into()).await;
    assert_eq!(user["preferredDataLocation"], "EUR");

    let eur_host = sim.admin_url_at(Some("EUR"));
    let central = cert_token(&sim, &sim.admin_url()).await;
    let enqueue = |host: String, token: String, users: Value| async move {
        http()
            .post(format!(
                "{host}/_api/SP.UserProfiles.ProfileLoader.GetProfileLoader/CreatePersonalSiteEnqueueBulk"
            ))
            .bearer_auth(token)
            .json(&json!({"emailIDs": users}))
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    };
    // The central host's token is not the EUR host's.
    assert_eq!(enqueue(eur_host.clone(), central.clone(), json!(["eva@contoso.com"])).await, 401);
    // Eva at the central host (wrong geo): accepted, ignored. Jun (JPN, a geo the tenant does not
    // have) belongs to the central geo.
    assert_eq!(
        enqueue(sim.admin_url(), central.clone(), json!(["eva@contoso.com", "jun@contoso.com"])).await,
        200
    );
    assert_eq!(sim.site_state("eva@contoso.com"), Some(SiteState::Uninitialized));
    assert_eq!(sim.site_state("jun@contoso.com").map(|s| s.code()), Some(1));
    let eur_token = cert_token(&sim, &eur_host).await;
    assert_eq!(enqueue(eur_host.clone(), eur_token.clone(), json!(["eva@contoso.com"])).await, 200);
    assert_eq!(sim.site_state("eva@contoso.com").map(|s| s.code()), Some(1));
    let stats = sim.stats();
    let records: Vec<(&str, Vec<String>)> =
        stats.enqueues.iter().map(|e| (e.geo.as_str(), e.wrong_geo.clone())).collect();
    assert_eq!(records, vec![("NAM", vec!["eva@contoso.com".to_string()]), ("EUR", vec![])]);
    // Each geo's profile service knows its own users only.
    let profile = |host: String, token: String| async move {
        http()
            .get(format!("{host}/_api/SP.UserProfiles.PeopleManager/GetPropertiesFor(accountName=@v)"))
            .query(&[("@v", "'i:0#.f|membership|eva@contoso.com'")])
            .bearer_auth(token)
            .header("accept", "application/json;odata=nometadata")
            .send()
            .await
            .unwrap()
            .json::<Value>()
            .await
            .unwrap()
    };
    assert_eq!(profile(sim.admin_url(), central).await["odata.null"], true);
    assert_eq!(profile(eur_host, eur_token).await["AccountName"], "i:0#.f|membership|eva@contoso.com");
    // A geo the tenant does not have is no host.
    let r =
        http().post(format!("{}/geos/APC/sharepoint/_api/contextinfo", sim.base_url())).send().await.unwrap();
    assert_eq!(r.status(), 404);
}

/// The simulator says which replica sent each request (from `(replica NAME)` in the
/// User-Agent) and flags an enqueue that arrives while the previous one's last user is still
/// waiting for a site.
#[tokio::test]
async fn enqueues_are_attributed_to_replicas_and_flagged_when_sent_in_flight() {
    let sim = start(config(3)).await;
    let sp = cert_token(&sim, &sim.admin_url()).await;
    let send = |replica: &'static str, user: &'static str| {
        let (url, sp) = (sim.admin_url(), sp.clone());
        async move {
            let agent = onedrive_operator::m365::TenantConfig {
                replica: Some(replica.into()),
                ..onedrive_operator::m365::TenantConfig::from_spec(&Default::default())
            }
            .user_agent();
            http()
                .post(format!(
                    "{url}/_api/SP.UserProfiles.ProfileLoader.GetProfileLoader/CreatePersonalSiteEnqueueBulk"
                ))
                .bearer_auth(sp)
                .header("user-agent", agent)
                .header("accept", "application/json;odata=verbose")
                .json(&json!({"emailIDs": [user]}))
                .send()
                .await
                .unwrap()
                .status()
        }
    };
    assert_eq!(send("pod-a", "user0@contoso.com").await, 200);
    assert_eq!(send("pod-b", "user1@contoso.com").await, 200);
    sim.advance(SignedDuration::from_mins(10));
    assert_eq!(send("pod-b", "user2@contoso.com").await, 200);
    let stats = sim.stats();
    let seen: Vec<(Option<&str>, bool)> =
        stats.enqueues.iter().map(|e| (e.replica.as_deref(), e.while_in_flight)).collect();
    assert_eq!(seen, [(Some("pod-a"), false), (Some("pod-b"), true), (Some("pod-b"), false)]);
    let logged = stats.log.iter().filter(|r| r.endpoint == "sharepoint.enqueue.rest").count();
    assert_eq!(logged, 3);
    assert!(
        stats.log.iter().filter(|r| r.endpoint == "sharepoint.enqueue.rest").all(|r| r.replica.is_some())
    );
    assert!(stats.now_ms >= stats.log.last().unwrap().at_ms);
}
