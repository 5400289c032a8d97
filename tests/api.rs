//! The API contract: generated CRDs match `crds/`, examples parse, and the CRDs' own CEL rules
//! reject bad manifests with their messages (evaluated client-side with kube's `cel` feature;
//! the real API server does the same in the end-to-end tests).

use std::path::Path;

use kube::CustomResourceExt;
use kube::core::cel::Validator;
use onedrive_operator::api::{self, OneDriveSite, OneDriveSiteSet, OneDriveTenant};
use serde_json::{Value, json};

fn crd_file(name: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("crds").join(format!("{name}.yaml")).display().to_string()
}

#[test]
fn crds_directory_matches_the_types() {
    for crd in api::crds() {
        let name = crd.spec.names.plural.clone();
        let path = crd_file(&name);
        let on_disk = std::fs::read_to_string(&path).unwrap_or_default();
        let chart_copy = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("charts/onedrive-operator/files/crds")
            .join(format!("{name}.yaml"));
        if std::env::var_os("UPDATE_CRDS").is_some() {
            std::fs::write(&path, api::crd_yaml(&crd)).unwrap();
            std::fs::write(&chart_copy, api::crd_yaml(&crd)).unwrap();
            continue;
        }
        assert_eq!(
            std::fs::read_to_string(&chart_copy).unwrap_or_default(),
            api::crd_yaml(&crd),
            "{} differs from crds/: run `UPDATE_CRDS=1 cargo test --test api`",
            chart_copy.display()
        );
        assert_eq!(
            on_disk,
            api::crd_yaml(&crd),
            "{path} is out of date: run `UPDATE_CRDS=1 cargo test --test api` (or `onedrive-operator crd`)"
        );
    }
}

#[test]
fn crd_command_prints_every_definition() {
    let out =
        std::process::Command::new(env!("CARGO_BIN_EXE_onedrive-operator")).arg("crd").output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    let docs: Vec<Value> = serde_yaml::Deserializer::from_str(&text)
        .map(|d| serde::Deserialize::deserialize(d).unwrap())
        .collect();
    assert_eq!(docs.len(), 3);
    for (doc, plural) in docs.iter().zip(["onedrivesites", "onedrivesitesets", "onedrivetenants"]) {
        assert_eq!(doc["kind"], "CustomResourceDefinition");
        assert_eq!(doc["spec"]["names"]["plural"], plural);
        assert_eq!(doc["spec"]["names"]["categories"][0], "onedrive");
        assert!(doc["spec"]["versions"][0]["subresources"]["status"].is_object());
    }
    assert_eq!(docs[0]["spec"]["scope"], "Namespaced");
    assert_eq!(docs[0]["spec"]["names"]["shortNames"][0], "ods");
    assert_eq!(docs[1]["spec"]["scope"], "Namespaced");
    assert_eq!(docs[1]["spec"]["names"]["shortNames"][0], "odss");
    assert_eq!(docs[2]["spec"]["scope"], "Cluster");
    assert_eq!(docs[2]["spec"]["names"]["shortNames"][0], "odt");
    let columns = |doc: &Value| -> Vec<String> {
        doc["spec"]["versions"][0]["additionalPrinterColumns"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["name"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(columns(&docs[0]), ["User", "Phase", "Reason", "Site", "Age"]);
    assert_eq!(columns(&docs[1]), ["Ready", "Members", "Ready sites", "Failed", "Reason", "Age"]);
    assert_eq!(
        columns(&docs[2]),
        ["Ready", "Desired", "Ready users", "Pending", "Provisioning", "Failed", "ETA", "Age"]
    );
}

fn schema_of<K: CustomResourceExt>() -> Value {
    let crd = K::crd();
    serde_json::to_value(crd.spec.versions[0].schema.as_ref().unwrap().open_api_v3_schema.as_ref().unwrap())
        .unwrap()
}

/// The messages of every rule the object breaks.
fn violations<K: CustomResourceExt>(object: &Value, old: Option<&Value>) -> Vec<String> {
    match Validator::new().validate(&schema_of::<K>(), object, old) {
        Ok(()) => Vec::new(),
        Err(errors) => errors.iter().map(|e| e.message.clone()).collect(),
    }
}

fn site(user: &str) -> Value {
    json!({
        "apiVersion": "onedrive-operator.dev/v1alpha1", "kind": "OneDriveSite",
        "metadata": {"name": "a", "namespace": "ns"},
        "spec": {"user": user, "tenantRef": {"name": "contoso"}}
    })
}

fn tenant(patch: Value) -> Value {
    let mut spec = json!({
        "tenantId": "00000000-0000-0000-0000-000000000000",
        "adminUrl": "https://contoso-admin.sharepoint.com",
        "auth": {"certificate": {"clientId": "app", "secretRef": {"name": "contoso-app-cert"}}}
    });
    for (k, v) in patch.as_object().unwrap() {
        spec[k] = v.clone();
    }
    json!({
        "apiVersion": "onedrive-operator.dev/v1alpha1", "kind": "OneDriveTenant",
        "metadata": {"name": "contoso"}, "spec": spec
    })
}

#[test]
fn valid_manifests_pass_every_rule() {
    assert_eq!(violations::<OneDriveSite>(&site("alice@contoso.com"), None), Vec::<String>::new());
    assert!(violations::<OneDriveSite>(&site("first.last+tag@sub.contoso.co.uk"), None).is_empty());
    assert!(violations::<OneDriveTenant>(&tenant(json!({})), None).is_empty());
    let simulator = tenant(json!({
        "adminUrl": "http://127.0.0.1:18080", "graphUrl": "http://localhost:18080/graph",
        "authorityHost": "http://[::1]:18080", "batchSize": 1, "pollInterval": "1h30m",
        "provisioningTimeout": "90s"
    }));
    assert_eq!(violations::<OneDriveTenant>(&simulator, None), Vec::<String>::new());
}

#[test]
fn a_site_whose_user_is_not_an_email_is_rejected_with_its_message() {
    for bad in
        ["not an email", "alice", "alice@contoso", "al ice@contoso.com", "a@b@contoso.com", "alice@.com"]
    {
        let v = violations::<OneDriveSite>(&site(bad), None);
        assert_eq!(v.len(), 1, "{bad:?}: {v:?}");
        assert!(v[0].contains("spec.user must be a user principal name"), "{v:?}");
    }
}

#[test]
fn changing_a_sites_user_is_rejected() {
    let v = violations::<OneDriveSite>(&site("bob@contoso.com"), Some(&site("alice@contoso.com")));
    assert_eq!(v.len(), 1, "{v:?}");
    assert!(v[0].contains("spec.user is immutable"));
    assert!(
        violations::<OneDriveSite>(&site("alice@contoso.com"), Some(&site("alice@contoso.com"))).is_empty()
    );
}

fn set(spec: Value) -> Value {
    json!({"apiVersion": "onedrive-operator.dev/v1alpha1", "kind": "OneDriveSiteSet",
           "metadata": {"name": "staff", "namespace": "hr"}, "spec": spec})
}

#[test]
fn a_set_takes_exactly_one_source_and_one_way_to_name_its_group() {
    let id = "0f5a2c1e-8b7d-4c3a-9e21-5d6f7a8b9c0d";
    let ok = [
        set(json!({"source": {"group": {"id": id}}})),
        set(json!({"source": {"group": {"mail": "wave3@contoso.com"}}, "resyncInterval": "1h"})),
        set(json!({"source": {"users": ["alice@contoso.com"]}, "template": {"storageQuota": "2Ti"}})),
    ];
    for good in &ok {
        assert_eq!(violations::<OneDriveSiteSet>(good, None), Vec::<String>::new(), "{good}");
    }
    let cases = [
        (set(json!({"source": {}})), "exactly one of group"),
        (set(json!({"source": {"group": {"id": id}, "users": ["a@b.c"]}})), "exactly one of group"),
        (set(json!({"source": {"group": {"id": id, "mail": "a@b.c"}}})), "exactly one of id"),
        (set(json!({"source": {"group": {"id": "staff"}}})), "GUID"),
        (set(json!({"source": {"group": {"mail": "staff"}}})), "mail address"),
        (set(json!({"source": {"users": ["a@b.c"]}, "resyncInterval": "soon"})), "spec.resyncInterval"),
        (set(json!({"source": {"users": ["a@b.c"]}, "resyncInterval": "30s"})), "from 1m to 168h"),
        (set(json!({"source": {"users": ["a@b.c"]}, "resyncInterval": "200h"})), "from 1m to 168h"),
        (set(json!({"source": {"users": ["a@b.c"]}, "template": {"storageQuota": "6Ti"}})), "storageQuota"),
    ];
    for (bad, expected) in cases {
        let v = violations::<OneDriveSiteSet>(&bad, None);
        assert!(v.iter().any(|m| m.contains(expected)), "{bad}: {v:?}");
    }
    // The list's bound is the schema's own (the API server checks maxItems; these tests' CEL
    // validator does not).
    let users =
        &schema_of::<OneDriveSiteSet>()["properties"]["spec"]["properties"]["source"]["properties"]["users"];
    assert_eq!(users["maxItems"], 5000);
    let moved = set(json!({"source": {"users": ["a@b.c"]}, "tenantRef": {"name": "fabrikam"}}));
    let was = set(json!({"source": {"users": ["a@b.c"]}, "tenantRef": {"name": "contoso"}}));
    let v = violations::<OneDriveSiteSet>(&moved, Some(&was));
    assert!(v.iter().any(|m| m.contains("spec.tenantRef is immutable")), "{v:?}");
}

#[test]
fn a_batch_size_over_200_is_rejected_with_its_message() {
    for bad in [0, 201, 5000] {
        let v = violations::<OneDriveTenant>(&tenant(json!({"batchSize": bad})), None);
        assert_eq!(v.len(), 1, "{bad}: {v:?}");
        assert!(v[0].contains("at most 200 users per enqueue request"), "{v:?}");
    }
}

#[test]
fn two_auth_methods_or_none_are_rejected_with_its_message() {
    let two = tenant(json!({"auth": {
        "certificate": {"clientId": "app", "secretRef": {"name": "cert"}},
        "workloadIdentity": {}
    }}));
    let none = tenant(json!({"auth": {}}));
    for bad in [two, none] {
        let v = violations::<OneDriveTenant>(&bad, None);
        assert_eq!(v, vec!["spec.auth must set exactly one of certificate, workloadIdentity or delegated"]);
    }
}

#[test]
fn plain_http_is_only_for_loopback_and_durations_must_parse() {
    let v = violations::<OneDriveTenant>(
        &tenant(json!({"adminUrl": "http://contoso-admin.sharepoint.com"})),
        None,
    );
    // Not https, and so not a Global SharePoint host either: both rules say so.
    assert!(v.iter().any(|m| m.starts_with("spec.adminUrl must be an https:// URL")), "{v:?}");
    let v = violations::<OneDriveTenant>(&tenant(json!({"graphUrl": "ftp://graph"})), None);
    assert!(v[0].starts_with("spec.graphUrl"), "{v:?}");
    let v = violations::<OneDriveTenant>(&tenant(json!({"pollInterval": "one minute"})), None);
    assert_eq!(v, vec!["spec.pollInterval must be a duration such as 60s, 15m, 24h or 1h30m"]);
    let v = violations::<OneDriveTenant>(&tenant(json!({"tenantId": "con toso"})), None);
    assert!(v[0].starts_with("spec.tenantId"), "{v:?}");
}

#[test]
fn an_admin_url_of_another_cloud_is_rejected_with_the_expected_suffix() {
    let v = violations::<OneDriveTenant>(&tenant(json!({"cloud": "USGovGCCHigh"})), None);
    assert_eq!(
        v,
        vec![
            "with spec.cloud USGovGCCHigh, spec.adminUrl and spec.geos[].adminUrl must be SharePoint admin hosts on *.sharepoint.us (e.g. https://contoso-admin.sharepoint.us); set spec.cloud to the tenant's cloud"
        ]
    );
    let ok = [
        json!({"cloud": "USGovGCCHigh", "adminUrl": "https://contoso-admin.sharepoint.us"}),
        json!({"cloud": "USGovDoD", "adminUrl": "https://contoso-admin.sharepoint-mil.us"}),
        json!({"cloud": "China", "adminUrl": "https://contoso-admin.sharepoint.cn"}),
        // Loopback (the simulator) is exempt, as the URL rule makes it.
        json!({"cloud": "USGovGCCHigh", "adminUrl": "http://127.0.0.1:18080/sharepoint"}),
    ];
    for t in ok {
        assert_eq!(violations::<OneDriveTenant>(&tenant(t.clone()), None), Vec::<String>::new(), "{t}");
    }
    // Global is the default: a GCC High host without spec.cloud is named too.
    let v = violations::<OneDriveTenant>(
        &tenant(json!({"adminUrl": "https://contoso-admin.sharepoint.us"})),
        None,
    );
    assert_eq!(v.len(), 1, "{v:?}");
    assert!(v[0].contains("with spec.cloud Global") && v[0].contains("*.sharepoint.com"), "{v:?}");
    // A host merely containing the suffix is not on it.
    for host in ["https://contoso-admin.sharepoint.com.example.org", r"https://evil.example\.sharepoint.com"]
    {
        let v = violations::<OneDriveTenant>(&tenant(json!({ "adminUrl": host })), None);
        assert_eq!(v.len(), 1, "{host}: {v:?}");
        assert!(v[0].contains("*.sharepoint.com"), "{v:?}");
    }
}

#[test]
fn geos_are_checked_for_their_cloud_code_and_uniqueness() {
    let geo = |l: &str, u: &str| json!({"location": l, "adminUrl": u});
    let good = tenant(json!({"geos": [geo("EUR", "https://contosoeur-admin.sharepoint.com"),
                                       geo("APC", "https://contosoapc-admin.sharepoint.com")]}));
    assert_eq!(violations::<OneDriveTenant>(&good, None), Vec::<String>::new());
    let wrong_cloud = tenant(json!({"cloud": "China", "adminUrl": "https://contoso-admin.sharepoint.cn",
                      "geos": [geo("EUR", "https://contosoeur-admin.sharepoint.com")]}));
    let v = violations::<OneDriveTenant>(&wrong_cloud, None);
    assert_eq!(v.len(), 1, "{v:?}");
    assert!(v[0].contains("*.sharepoint.cn"), "{v:?}");
    let twice = tenant(json!({"geos": [geo("EUR", "https://a-admin.sharepoint.com"),
                                        geo("EUR", "https://b-admin.sharepoint.com")]}));
    assert_eq!(
        violations::<OneDriveTenant>(&twice, None),
        vec!["spec.geos lists a location twice: declare each geo once"]
    );
    let v = violations::<OneDriveTenant>(
        &tenant(json!({"geos": [geo("eu", "https://a-admin.sharepoint.com")]})),
        None,
    );
    assert!(v.iter().any(|m| m.starts_with("spec.geos[].location must be")), "{v:?}");
}

#[test]
fn the_global_defaults_written_by_older_api_servers_are_refused_for_another_cloud() {
    let v = violations::<OneDriveTenant>(
        &tenant(json!({"cloud": "China", "adminUrl": "https://contoso-admin.sharepoint.cn",
                       "graphUrl": "https://graph.microsoft.com",
                       "authorityHost": "https://login.microsoftonline.com"})),
        None,
    );
    assert_eq!(
        v,
        vec![
            "spec.graphUrl is the Global cloud's host but spec.cloud is not Global: remove spec.graphUrl to use the cloud's preset",
            "spec.authorityHost is the Global cloud's host but spec.cloud is not Global: remove spec.authorityHost to use the cloud's preset",
        ]
    );
    // An explicit host that is not Global's still wins (a proxy, the simulator).
    let t = tenant(json!({"cloud": "China", "adminUrl": "https://contoso-admin.sharepoint.cn",
                          "graphUrl": "https://graph.proxy.example.cn"}));
    assert_eq!(violations::<OneDriveTenant>(&t, None), Vec::<String>::new());
}

#[test]
fn every_example_parses_into_the_types_and_passes_the_rules() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
    let mut seen = (0, 0, 0);
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "yaml") {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        for doc in serde_yaml::Deserializer::from_str(&text) {
            let value: Value = serde::Deserialize::deserialize(doc).unwrap();
            let at = format!("{}", path.display());
            match value["kind"].as_str() {
                Some("OneDriveSite") => {
                    serde_json::from_value::<OneDriveSite>(value.clone())
                        .unwrap_or_else(|e| panic!("{at}: {e}"));
                    assert_eq!(violations::<OneDriveSite>(&value, None), Vec::<String>::new(), "{at}");
                    seen.0 += 1;
                }
                Some("OneDriveSiteSet") => {
                    serde_json::from_value::<OneDriveSiteSet>(value.clone())
                        .unwrap_or_else(|e| panic!("{at}: {e}"));
                    assert_eq!(violations::<OneDriveSiteSet>(&value, None), Vec::<String>::new(), "{at}");
                    seen.2 += 1;
                }
                Some("OneDriveTenant") => {
                    let t: OneDriveTenant =
                        serde_json::from_value(value.clone()).unwrap_or_else(|e| panic!("{at}: {e}"));
                    assert_eq!(violations::<OneDriveTenant>(&value, None), Vec::<String>::new(), "{at}");
                    t.spec.auth.kind().unwrap();
                    onedrive_operator::plan::Limits::from_spec(&t.spec).unwrap();
                    seen.1 += 1;
                }
                _ => {}
            }
        }
    }
    assert!(
        seen.0 >= 3 && seen.1 >= 3 && seen.2 >= 2,
        "examples hold {} sites, {} tenants and {} sets",
        seen.0,
        seen.1,
        seen.2
    );
}

/// The reasons in the first column of the table after `heading` in docs/reference.md.
fn documented_reasons(heading: &str) -> Vec<String> {
    let reference =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/reference.md")).unwrap();
    let table =
        reference.split(heading).nth(1).unwrap_or_else(|| panic!("docs/reference.md has {heading:?}"));
    table
        .lines()
        .skip_while(|l| !l.starts_with('|'))
        .take_while(|l| l.starts_with('|'))
        .skip(2)
        .filter_map(|l| Some(l.split('|').nth(1)?.trim().strip_prefix('`')?.strip_suffix('`')?.to_string()))
        .collect()
}

/// The reference's table of `OneDriveSite` reasons lists exactly the reasons the vocabulary
/// defines, in its order (a new reason must be documented with its fix).
#[test]
fn the_reference_documents_exactly_the_site_reasons() {
    let vocabulary: Vec<&str> = onedrive_operator::api::SiteReason::ALL.iter().map(|r| r.as_str()).collect();
    assert_eq!(documented_reasons("On `OneDriveSite` (the `Ready` condition's reason"), vocabulary);
}

/// The same for `OneDriveSiteSet` reasons.
#[test]
fn the_reference_documents_exactly_the_set_reasons() {
    let vocabulary: Vec<&str> = onedrive_operator::api::SetReason::ALL.iter().map(|r| r.as_str()).collect();
    assert_eq!(documented_reasons("On `OneDriveSiteSet` (the `Ready` condition's reason"), vocabulary);
}
