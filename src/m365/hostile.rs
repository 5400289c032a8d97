//! Every classifier of Microsoft's answers fed arbitrary bytes and arbitrary JSON — shaped like
//! the answers it reads, with any value where a value goes: none panics, and each gives a verdict
//! or a typed error. (The network side of hostile answers is in `tests/hostile.rs`.)

use std::sync::{Arc, Mutex};

use proptest::prelude::*;
use serde_json::{Map, Value};

use super::Credentials;

/// The keys Microsoft's answers carry, so that generated objects reach past the first lookup.
const KEYS: &[&str] = &[
    "error",
    "code",
    "message",
    "value",
    "odata.error",
    "error_codes",
    "error_description",
    "access_token",
    "refresh_token",
    "expires_in",
    "responses",
    "id",
    "status",
    "headers",
    "body",
    "Retry-After",
    "webUrl",
    "accountEnabled",
    "assignedPlans",
    "service",
    "capabilityStatus",
    "preferredDataLocation",
    "d",
    "results",
    "UserProfileProperties",
    "Key",
    "Value",
    "PersonalUrl",
    "PersonalSpace",
    "SPS-PersonalSiteInstantiationState",
    "ErrorInfo",
    "ErrorTypeName",
    "ErrorMessage",
    "ErrorCode",
    "IsComplete",
    "PollingInterval",
    "_ObjectType_",
    "@odata.nextLink",
    "siteCollection",
    "dataLocationCode",
    "userPrincipalName",
    "lang",
];

fn leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        prop_oneof![
            Just("SharePoint".to_string()),
            Just("Enabled".to_string()),
            Just("2".to_string()),
            Just("/personal/a_b_c/".to_string()),
            Just("https://x-my.sharepoint.com/personal/a_b_c/Documents".to_string()),
            Just("Unable to retrieve user's mysite URL.".to_string()),
            Just("Request_ResourceNotFound".to_string()),
            Just("System.UnauthorizedAccessException".to_string()),
            ".{0,40}",
        ]
        .prop_map(Value::String),
    ]
}

/// Arbitrary JSON whose object keys are mostly Microsoft's.
fn json() -> impl Strategy<Value = Value> {
    leaf().prop_recursive(4, 48, 6, |inner| {
        let key = prop_oneof![4 => proptest::sample::select(KEYS).prop_map(str::to_string), 1 => ".{0,8}"];
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
            proptest::collection::vec((key, inner), 0..6)
                .prop_map(|kv| Value::Object(kv.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

fn delegated() -> Credentials {
    Credentials::Delegated {
        client_id: "app".into(),
        refresh_token: Arc::new(Mutex::new("rt".into())),
        on_rotate: None,
    }
}

/// Every classifier on one answer body.
fn classify_everything(status: u16, body: &Value) {
    let answer = (status, body.clone());
    let _ = super::graph::classify_drive(Some(&answer));
    let _ = super::graph::classify_user(Some(&answer));
    let _ = super::graph::user_entry(Some(&answer));
    if let Some(read) = super::ProfileRead::from_body(body) {
        let _ = read.observation();
    }
    let _ = super::sharepoint::csom_result(status, body, &delegated());
    let _ = super::sharepoint::odata_message(body);
    let _ = super::auth::token_answer(body);
    let _ = super::auth::token_error(status, body, &delegated());
    for text in
        [body.as_str(), body["webUrl"].as_str(), body["@odata.nextLink"].as_str()].into_iter().flatten()
    {
        let _ = super::geo::admin_url_of(text);
        let _ = super::listing::personal_name(text);
        let _ = super::paging::stays_on(text, "https://graph.microsoft.com");
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn no_json_answer_makes_a_classifier_panic(status in prop_oneof![Just(200u16), Just(400u16), Just(404u16), 100u16..600], body in json()) {
        classify_everything(status, &body);
        // Wrapped as a `$batch` item and as a page, as the client reads them.
        classify_everything(status, &serde_json::json!({"responses": [{"id": "0", "status": status, "body": body.clone()}]}));
        classify_everything(status, &serde_json::json!({"d": body}));
    }

    #[test]
    fn no_bytes_make_an_answer_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512), status in 100u16..600) {
        let answer = super::http::Answer {
            status,
            headers: Default::default(),
            body: bytes,
            endpoint: "graph.microsoft.com/v1.0/$batch".into(),
        };
        let _ = answer.json();
        let _ = answer.text();
        classify_everything(status, &answer.json_or_null());
    }

    /// What the client writes into an OData literal reads back as the same text, with
    /// SharePoint's rules (the simulator's strict parser).
    #[test]
    fn odata_literals_read_back(s in ".{0,40}") {
        let literal = super::escape::odata_literal(&s);
        prop_assert_eq!(crate::simulator::string_literal(&literal), Ok(s));
    }
}

/// A `spec.user` the CRD admits: a local part with apostrophes, `&`, `<`, `+`, `#`, `$`, `%`,
/// `/`, `?` and non-ASCII letters (sometimes a `#EXT#` guest's), `@`, a dotted domain.
fn upn() -> impl Strategy<Value = String> {
    let local = "[a-zA-Z0-9'&<>+#$%/?._~éüß-]{1,30}";
    let guest = prop_oneof![3 => Just(String::new()), 1 => Just("#EXT#".to_string())];
    (local, guest, "[a-z0-9-]{1,12}", "[a-z]{2,6}")
        .prop_map(|(l, g, d, t)| format!("{l}{g}@{d}.{t}"))
        .prop_filter("the CRD's pattern", |u| crate::api::validate::user(u).is_ok())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 500, ..ProptestConfig::default() })]

    /// Each request that carries a user name, as the client builds it, read by the simulator as
    /// SharePoint and Graph read it (strictly): the same name comes out.
    #[test]
    fn user_names_round_trip_through_every_request(user in upn()) {
        // The profile read's `@v` alias, in the query reqwest writes.
        crate::install_crypto_provider();
        let request = reqwest::Client::new()
            .get("http://127.0.0.1/sharepoint/_api/SP.UserProfiles.PeopleManager/GetPropertiesFor(accountName=@v)")
            .query(&[("@v", super::sharepoint::profile_account(&user))])
            .build()
            .unwrap();
        let account = crate::simulator::account_of(request.url().query().unwrap_or_default());
        prop_assert_eq!(account, Ok(format!("{}{user}", crate::simulator::CLAIMS_PREFIX)));
        // Graph `$batch` items.
        let drive = format!("{}/drive", super::graph::user_path(&user));
        prop_assert_eq!(crate::simulator::item_segments(&drive), Ok(vec!["users".to_string(), user.clone(), "drive".to_string()]));
        let entry = format!("{}?$select=id,accountEnabled", super::graph::user_path(&user));
        prop_assert_eq!(crate::simulator::item_segments(&entry), Ok(vec!["users".to_string(), user.clone()]));
        // CSOM's XML, both enqueue calls.
        for tenant_method in [false, true] {
            let xml = super::sharepoint::csom_request(std::slice::from_ref(&user), tenant_method);
            let parsed = crate::simulator::csom::parse(&xml).map_err(TestCaseError::fail)?;
            let strings: Vec<Vec<String>> = parsed.calls().into_iter().map(|(_, _, c)| c.strings).collect();
            prop_assert_eq!(strings, vec![vec![user.clone()]]);
        }
        // REST: JSON.
        let body = serde_json::to_string(&serde_json::json!({"emailIDs": [user.clone()]})).unwrap();
        let read: Value = serde_json::from_str(&body).unwrap();
        prop_assert_eq!(read["emailIDs"][0].as_str(), Some(user.as_str()));
    }
}
