//! End to end on a real kube-apiserver + etcd: CRD validation by the server, and the operator
//! binary running as its ServiceAccount with only the RBAC the Helm chart renders.

mod common;
mod envtest;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use envtest::*;
use serde_json::Value;

#[test]
fn the_api_server_enforces_the_crd_rules_with_their_messages() {
    let server = ApiServer::start();
    install_crds(&server);
    ok(
        server.kubectl(&["apply", "-f", root().join("examples").to_str().unwrap()]),
        "kubectl apply -f examples/",
    );

    let rejected = |yaml: &str| {
        let out = server.apply(yaml);
        assert!(!out.status.success(), "accepted:\n{yaml}");
        String::from_utf8(out.stderr).unwrap()
    };
    let e = rejected(
        "apiVersion: onedrive-operator.dev/v1alpha1\nkind: OneDriveSite\nmetadata: {name: bad, namespace: team-finance}\nspec: {user: not an email}\n",
    );
    assert!(e.contains("spec.user must be a user principal name or sign-in email"), "{e}");
    let tenant = |extra: &str| {
        format!(
            "apiVersion: onedrive-operator.dev/v1alpha1\nkind: OneDriveTenant\nmetadata: {{name: bad}}\nspec:\n  tenantId: contoso.onmicrosoft.com\n  adminUrl: https://contoso-admin.sharepoint.com\n{extra}"
        )
    };
    let e = rejected(&tenant("  batchSize: 201\n  auth: {workloadIdentity: {}}\n"));
    assert!(e.contains("SharePoint accepts at most 200 users per enqueue request"), "{e}");
    let e = rejected(&tenant(
        "  auth:\n    workloadIdentity: {}\n    certificate: {clientId: a, secretRef: {name: c}}\n",
    ));
    assert!(
        e.contains("spec.auth must set exactly one of certificate, workloadIdentity or delegated"),
        "{e}"
    );
    let e = rejected(&tenant(
        "  adminUrl: http://contoso-admin.sharepoint.com\n  auth: {workloadIdentity: {}}\n",
    ));
    assert!(e.contains("must be an https:// URL"), "{e}");
    // A GCC High tenant on a Global host: the real API server names the expected suffix.
    let e = rejected(&tenant("  cloud: USGovGCCHigh\n  auth: {workloadIdentity: {}}\n"));
    assert!(e.contains("with spec.cloud USGovGCCHigh, spec.adminUrl and spec.geos[].adminUrl must be SharePoint admin hosts on *.sharepoint.us"), "{e}");
    let e = rejected(&tenant("  auth: {workloadIdentity: {}}\n  allowedNamespaces: {}\n"));
    assert!(e.contains("spec.allowedNamespaces must set names, selector or both"), "{e}");
    let e = rejected(&tenant(
        "  auth: {workloadIdentity: {}}\n  allowedNamespaces: {selector: {matchExpressions: [{key: team, operator: Near}]}}\n",
    ));
    assert!(e.contains("operator must be In or NotIn (with values) or Exists or DoesNotExist"), "{e}");
    let e = rejected(
        "apiVersion: onedrive-operator.dev/v1alpha1\nkind: OneDriveSite\nmetadata: {name: alice, namespace: team-finance}\nspec: {user: eve@contoso.com, tenantRef: {name: contoso}}\n",
    );
    assert!(e.contains("spec.user is immutable"), "{e}");
    let e = rejected(
        "apiVersion: onedrive-operator.dev/v1alpha1\nkind: OneDriveSite\nmetadata: {name: alice, namespace: team-finance}\nspec: {user: alice@contoso.com, tenantRef: {name: fabrikam}}\n",
    );
    assert!(e.contains("spec.tenantRef is immutable"), "{e}");
    let site = |extra: &str| {
        format!(
            "apiVersion: onedrive-operator.dev/v1alpha1\nkind: OneDriveSite\nmetadata: {{name: quota, namespace: team-finance}}\nspec:\n  user: q@contoso.com\n{extra}"
        )
    };
    let e = rejected(&site("  storageQuota: 6Ti\n"));
    assert!(e.contains("storageQuota must be a quantity from 1Gi to 5Ti"), "{e}");
    let e = rejected(&site("  storageQuota: 500Mi\n"));
    assert!(e.contains("storageQuota must be a quantity from 1Gi to 5Ti"), "{e}");
    let e = rejected(&site("  siteAdmins: [the migration account]\n"));
    assert!(e.contains("siteAdmins must list user principal names"), "{e}");
    let e = rejected(&site("  siteAdmins: [a@contoso.com, A@contoso.com]\n"));
    assert!(e.contains("siteAdmins lists a user twice"), "{e}");
    let e = rejected(&tenant("  auth: {workloadIdentity: {}}\n  storageQuota: 10Ti\n"));
    assert!(e.contains("storageQuota must be a quantity from 1Gi to 5Ti"), "{e}");
    ok(
        server.apply(&site("  storageQuota: 1.5Ti\n  siteAdmins: [helpdesk@contoso.com]\n")),
        "a site with settings",
    );
}

#[test]
fn the_operator_converges_as_its_service_account_survives_a_kill_and_writes_real_ssa() {
    let server = ApiServer::start();
    install_crds(&server);
    ok(server.kubectl(&["create", "namespace", NS]), "namespace");
    ok(server.apply(&chart_rbac()), "the chart's RBAC");

    // A simulated tenant: 450 licensed users, ten simulated minutes per site = one real second.
    let users: Vec<String> = (1..=450).map(|i| format!("user{i:04}@contoso.onmicrosoft.com")).collect();
    let users_file = server.dir().join("users.yaml");
    std::fs::write(&users_file, serde_yaml::to_string(&users).unwrap()).unwrap();
    let (_sim, manifests) = common::spawn_simulate(&[
        "--users",
        users_file.to_str().unwrap(),
        "--provision-delay",
        "600s",
        "--time-scale",
        "600",
        "--namespace",
        NS,
        "--tenant-name",
        "contoso",
    ]);
    let manifests = manifests.replace("pollInterval: 10s", "pollInterval: 2s");
    ok(server.apply(&manifests), "the simulator's tenant and Secret");
    let admin_url = manifests.lines().find_map(|l| l.trim().strip_prefix("adminUrl: ")).unwrap().to_string();
    let base = admin_url.trim_end_matches("/sharepoint").to_string();

    let mut sites = String::new();
    for ns in ["team-a", "team-b"] {
        sites.push_str(&format!("---\napiVersion: v1\nkind: Namespace\nmetadata: {{name: {ns}}}\n"));
    }
    for (i, u) in users.iter().enumerate() {
        let ns = if i % 2 == 0 { "team-a" } else { "team-b" };
        sites.push_str(&format!(
            "---\napiVersion: onedrive-operator.dev/v1alpha1\nkind: OneDriveSite\nmetadata: {{name: u{i}, namespace: {ns}}}\nspec: {{user: {u}, tenantRef: {{name: contoso}}}}\n"
        ));
    }
    ok(server.apply(&sites), "450 OneDriveSites");
    // Another field manager owns a condition and a label before the operator writes anything.
    ok(
        server.kubectl(&["label", "ods", "u0", "-n", "team-a", "owner=platform-team"]),
        "label by another manager",
    );
    let audited = "apiVersion: onedrive-operator.dev/v1alpha1\nkind: OneDriveSite\nmetadata: {name: u0, namespace: team-a}\nstatus:\n  conditions:\n  - {type: Audited, status: \"True\", reason: Checked, message: by the platform team, lastTransitionTime: \"2026-01-01T00:00:00Z\"}\n";
    let path = server.dir().join("audited.yaml");
    std::fs::write(&path, audited).unwrap();
    ok(
        server.kubectl(&[
            "apply",
            "--server-side",
            "--field-manager=platform-team",
            "--subresource=status",
            "-f",
            path.to_str().unwrap(),
        ]),
        "status condition by another manager",
    );

    // The operator runs as its ServiceAccount, with only the chart's RBAC.
    let sa = server.service_account_kubeconfig(NS, "onedrive-operator");
    // Sites it may delete (a set's own, each with its uid as precondition); tenants it may not.
    let denied = server.kubectl_as(&sa, &["auth", "can-i", "delete", "onedrivetenants"]);
    assert_eq!(String::from_utf8_lossy(&denied.stdout).trim(), "no");
    let denied = server.kubectl_as(&sa, &["auth", "can-i", "get", "secrets", "-n", "team-a"]);
    assert_eq!(String::from_utf8_lossy(&denied.stdout).trim(), "no");
    let log = server.dir().join("operator.log");
    let first = Operator::start(&sa, &log);

    // Kill it mid-batch: once the first batch was sent and recorded as sent, before the second.
    // (Killed between SharePoint's accept and that record, a restarted operator sends the
    // recorded batch again by design — the service ignores users already enqueued — and this
    // test's count of enqueues per user would not tell the two apart.)
    let recorded_sent = || {
        let tenant: Value =
            serde_json::from_str(&ok(server.kubectl(&["get", "odt", "contoso", "-o", "json"]), "get odt"))
                .unwrap();
        let batches: Vec<&Value> = tenant["status"]["geos"]
            .as_array()
            .map(|g| g.iter().filter_map(|g| g.get("currentBatch")).collect())
            .unwrap_or_default();
        !batches.is_empty() && batches.iter().all(|b| b["sent"] == true)
    };
    let deadline = Instant::now() + Duration::from_secs(120);
    while sim_stats(&base)["enqueues"].as_array().map_or(0, Vec::len) == 0 || !recorded_sent() {
        assert!(
            Instant::now() < deadline,
            "no batch sent; log:\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    drop(first);
    let _second = Operator::start(&sa, &log);

    let wait = server.kubectl(&["wait", "--for=condition=Ready", "ods", "--all", "-A", "--timeout=240s"]);
    assert!(
        wait.status.success(),
        "kubectl wait: {}\noperator log:\n{}",
        String::from_utf8_lossy(&wait.stderr),
        std::fs::read_to_string(&log).unwrap_or_default()
    );

    // A standby replica reports ready (a rolling update waits for that) yet never acts while the
    // leader holds the Lease.
    let port = free_port();
    let standby_log = server.dir().join("standby.log");
    let standby = Operator::start_as(&sa, &standby_log, "e2e-standby", &format!("127.0.0.1:{port}"));
    let deadline = Instant::now() + Duration::from_secs(30);
    while http_status(&format!("http://127.0.0.1:{port}/readyz")) != Some(200) {
        assert!(
            Instant::now() < deadline,
            "standby never ready; log:\n{}",
            std::fs::read_to_string(&standby_log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    drop(standby);
    let standby_said = std::fs::read_to_string(&standby_log).unwrap_or_default();
    assert!(
        standby_said.contains("waiting to become the leader") && !standby_said.contains("became the leader"),
        "{standby_said}"
    );

    let table = ok(server.kubectl(&["get", "ods", "-n", "team-a"]), "kubectl get ods");
    let header: Vec<&str> = table.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(header, ["NAME", "USER", "PHASE", "AGE"]);
    assert!(table.lines().nth(1).unwrap().contains("Ready"));
    let wide = ok(server.kubectl(&["get", "ods", "-n", "team-a", "-o", "wide"]), "kubectl get ods -o wide");
    assert!(wide.lines().next().unwrap().contains("SITE") && wide.contains("/personal/"));
    let tenants = ok(server.kubectl(&["get", "odt"]), "kubectl get odt");
    assert!(tenants.contains("READY USERS") && tenants.contains("450"), "{tenants}");

    // No batch was lost or repeated across the kill; none exceeded 200 users.
    let stats = sim_stats(&base);
    let mut seen = HashSet::new();
    for e in stats["enqueues"].as_array().unwrap() {
        let users = e["users"].as_array().unwrap();
        assert!(users.len() <= 200);
        for u in users {
            assert!(seen.insert(u.as_str().unwrap().to_string()), "{u} enqueued twice");
        }
    }
    assert_eq!(seen.len(), 450);

    // Real server-side apply: the other manager's condition and label survived the operator's writes.
    let site: Value = serde_json::from_str(&ok(
        server.kubectl(&["get", "ods", "u0", "-n", "team-a", "-o", "json", "--show-managed-fields"]),
        "get u0",
    ))
    .unwrap();
    let types: Vec<&str> = site["status"]["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["type"].as_str().unwrap())
        .collect();
    assert!(types.contains(&"Audited") && types.contains(&"Ready"), "{types:?}");
    assert_eq!(site["metadata"]["labels"]["owner"], "platform-team");
    let managers: Vec<(&str, &str)> = site["metadata"]["managedFields"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| (m["manager"].as_str().unwrap(), m["operation"].as_str().unwrap()))
        .collect();
    assert!(managers.contains(&("onedrive-operator", "Apply")), "{managers:?}");
    assert!(managers.contains(&("platform-team", "Apply")), "{managers:?}");

    // The cluster-scoped tenant and its Events name no user of any namespace: the batches' users
    // were kept in the operator's namespace (and read back there after the kill).
    let tenant_yaml = ok(server.kubectl(&["get", "odt", "-o", "yaml"]), "get odt -o yaml");
    assert!(!tenant_yaml.contains("@contoso"), "a user name on the tenant:\n{tenant_yaml}");
    let events: Value = serde_json::from_str(&ok(
        server.kubectl(&["get", "events.events.k8s.io", "-n", "default", "-o", "json"]),
        "tenant Events",
    ))
    .unwrap();
    let notes: Vec<&str> = events["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["regarding"]["kind"] == "OneDriveTenant")
        .filter_map(|e| e["note"].as_str())
        .collect();
    assert!(notes.iter().any(|n| n.contains("batch") && n.contains("users sent")), "{notes:?}");
    assert!(notes.iter().all(|n| !n.contains('@')), "a user name in a tenant Event: {notes:?}");
    let record: Value = serde_json::from_str(&ok(
        server.kubectl(&["get", "configmap", "contoso.onedrive-batches", "-n", NS, "-o", "json"]),
        "the batch record",
    ))
    .unwrap();
    assert_eq!(record["metadata"]["ownerReferences"][0]["kind"], "OneDriveTenant", "{record}");
}

/// A counter of the connections that reach a loopback port (nothing is answered).
fn capture() -> (u16, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let hits = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = hits.clone();
    std::thread::spawn(move || {
        for connection in listener.incoming() {
            counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            drop(connection);
        }
    });
    (port, hits)
}

/// An operator started without `--allow-endpoint-overrides` refuses a tenant whose
/// `authorityHost`, `graphUrl` or `adminUrl` leaves its cloud (InvalidSpec naming the field) and
/// sends nothing anywhere; started with it, the simulator's tenant works. `doctor` and `check`
/// alike.
#[test]
fn endpoints_outside_the_cloud_are_refused_unless_the_operator_opts_in() {
    let server = ApiServer::start();
    install_crds(&server);
    ok(server.kubectl(&["create", "namespace", NS]), "namespace");
    ok(server.apply(&chart_rbac()), "the chart's RBAC");
    let (_sim, manifests) =
        common::spawn_simulate(&["--generate", "3", "--namespace", NS, "--tenant-name", "sim"]);
    ok(server.apply(&manifests), "the simulator's tenant and Secret");
    let admin_url = manifests.lines().find_map(|l| l.trim().strip_prefix("adminUrl: ")).unwrap().to_string();
    let base = admin_url.trim_end_matches("/sharepoint").to_string();
    let (port, captured) = capture();
    let elsewhere = format!("http://127.0.0.1:{port}");
    let tenant = |name: &str, extra: &str| {
        format!(
            "---\napiVersion: onedrive-operator.dev/v1alpha1\nkind: OneDriveTenant\nmetadata: {{name: {name}}}\nspec:\n  tenantId: contoso.onmicrosoft.com\n  pollInterval: 2s\n  auth: {{certificate: {{clientId: app, secretRef: {{name: sim-credentials}}}}}}\n{extra}"
        )
    };
    let cases = [
        (
            "via-authority",
            "spec.authorityHost",
            format!("  adminUrl: https://contoso-admin.sharepoint.com\n  authorityHost: {elsewhere}/entra\n"),
        ),
        (
            "via-graph",
            "spec.graphUrl",
            format!("  adminUrl: https://contoso-admin.sharepoint.com\n  graphUrl: {elsewhere}/graph\n"),
        ),
        ("via-admin", "spec.adminUrl", format!("  adminUrl: {elsewhere}/sharepoint\n")),
    ];
    let mut objects = String::from("---\napiVersion: v1\nkind: Namespace\nmetadata: {name: team-a}\n");
    for (name, _, extra) in &cases {
        objects.push_str(&tenant(name, extra));
        objects.push_str(&format!(
            "---\napiVersion: onedrive-operator.dev/v1alpha1\nkind: OneDriveSite\nmetadata: {{name: {name}, namespace: team-a}}\nspec: {{user: someone@contoso.com, tenantRef: {{name: {name}}}}}\n"
        ));
    }
    for i in 1..=3 {
        objects.push_str(&format!(
            "---\napiVersion: onedrive-operator.dev/v1alpha1\nkind: OneDriveSite\nmetadata: {{name: sim-{i}, namespace: team-a}}\nspec: {{user: user{i:04}@contoso.onmicrosoft.com, tenantRef: {{name: sim}}}}\n"
        ));
    }
    ok(server.apply(&objects), "tenants pointing elsewhere, and sites");
    let sa = server.service_account_kubeconfig(NS, "onedrive-operator");
    let log = server.dir().join("pinned.log");
    let pinned = Operator::start_pinned(&sa, &log, "e2e-pinned");
    let reason_of = |name: &str| -> (String, String) {
        let t: Value =
            serde_json::from_str(&ok(server.kubectl(&["get", "odt", name, "-o", "json"]), "get odt"))
                .unwrap();
        let ready = t["status"]["conditions"].as_array().into_iter().flatten().find(|c| c["type"] == "Ready");
        ready.map_or((String::new(), String::new()), |c| {
            (c["reason"].as_str().unwrap_or("").into(), c["message"].as_str().unwrap_or("").into())
        })
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    for (name, field) in cases.iter().map(|(n, f, _)| (*n, *f)).chain([("sim", "spec.authorityHost")]) {
        loop {
            let (reason, message) = reason_of(name);
            if reason == "InvalidSpec" {
                assert!(message.starts_with(field), "{name}: {message}");
                assert!(message.contains("--allow-endpoint-overrides"), "{name}: {message}");
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{name}: {reason} {message}\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
    drop(pinned);
    assert_eq!(captured.load(std::sync::atomic::Ordering::SeqCst), 0, "a request reached the capture server");
    assert_eq!(
        sim_stats(&base)["arrivals"].as_array().map_or(0, Vec::len),
        0,
        "a request reached the simulator"
    );

    // doctor and check, without the opt-in: refused before anything is sent.
    let file = server.dir().join("via-graph.yaml");
    let secret = manifests.split("\n---\n").find(|d| d.contains("kind: Secret")).unwrap();
    std::fs::write(&file, format!("{}\n---\n{secret}", tenant("via-graph", &cases[1].2))).unwrap();
    let tool = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_onedrive-operator")).args(args).output().unwrap()
    };
    let doctor = tool(&["doctor", "--tenant", file.to_str().unwrap()]);
    let said = String::from_utf8_lossy(&doctor.stdout);
    assert!(!doctor.status.success() && said.contains("[FAIL] tenant spec: spec.graphUrl"), "{said}");
    let check = tool(&["check", "--tenant", file.to_str().unwrap(), "someone@contoso.com"]);
    let said = String::from_utf8_lossy(&check.stderr);
    assert!(
        !check.status.success() && said.contains("spec.graphUrl") && said.contains("InvalidSpec"),
        "{said}"
    );
    assert_eq!(
        captured.load(std::sync::atomic::Ordering::SeqCst),
        0,
        "doctor or check reached the capture server"
    );
    let sim_file = server.dir().join("sim.yaml");
    std::fs::write(&sim_file, &manifests).unwrap();
    let check = tool(&[
        "check",
        "--allow-endpoint-overrides",
        "--tenant",
        sim_file.to_str().unwrap(),
        "user0001@contoso.onmicrosoft.com",
    ]);
    assert!(check.status.success(), "{}", String::from_utf8_lossy(&check.stderr));

    // Started with the opt-in, the simulator's tenant works.
    ok(
        server.kubectl(&["delete", "odt", "via-authority", "via-graph", "via-admin"]),
        "delete the tenants pointing elsewhere",
    );
    let log = server.dir().join("opted-in.log");
    let _operator = Operator::start_as(&sa, &log, "e2e-opted-in", "127.0.0.1:0");
    let wait = server.kubectl(&[
        "wait",
        "--for=condition=Ready",
        "ods",
        "sim-1",
        "sim-2",
        "sim-3",
        "-n",
        "team-a",
        "--timeout=120s",
    ]);
    assert!(
        wait.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&wait.stderr),
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    assert_eq!(captured.load(std::sync::atomic::Ordering::SeqCst), 0);
}

/// Delegated auth on a real API server, a batch in flight for 30+ cycles, access tokens living
/// 20 s: each audience is redeemed once per token lifetime (not once per cycle), every rotation
/// is written to the Secret once, and the Secret ends with the newest refresh token.
#[test]
fn delegated_tokens_are_redeemed_once_per_lifetime_and_every_rotation_is_stored() {
    use sha2::Digest;
    onedrive_operator::install_crypto_provider();
    let server = ApiServer::start();
    install_crds(&server);
    ok(server.kubectl(&["create", "namespace", NS]), "namespace");
    ok(server.apply(&chart_rbac()), "the chart's RBAC");
    let users: Vec<String> = (1..=5).map(|i| format!("user{i:04}@contoso.onmicrosoft.com")).collect();
    let users_file = server.dir().join("users.yaml");
    std::fs::write(&users_file, serde_yaml::to_string(&users).unwrap()).unwrap();
    let lifetime = 20.0;
    let (_sim, manifests) = common::spawn_simulate(&[
        "--users",
        users_file.to_str().unwrap(),
        "--auth",
        "delegated",
        "--token-lifetime",
        "20s",
        "--provision-delay",
        "24h",
        "--namespace",
        NS,
        "--tenant-name",
        "contoso",
    ]);
    let manifests = manifests.replace("pollInterval: 10s", "pollInterval: 1s");
    ok(server.apply(&manifests), "the simulator's tenant and Secret");
    let admin_url = manifests.lines().find_map(|l| l.trim().strip_prefix("adminUrl: ")).unwrap().to_string();
    let base = admin_url.trim_end_matches("/sharepoint").to_string();
    let mut sites = String::from("---\napiVersion: v1\nkind: Namespace\nmetadata: {name: team-a}\n");
    for (i, u) in users.iter().enumerate() {
        sites.push_str(&format!(
            "---\napiVersion: onedrive-operator.dev/v1alpha1\nkind: OneDriveSite\nmetadata: {{name: u{i}, namespace: team-a}}\nspec: {{user: {u}, tenantRef: {{name: contoso}}}}\n"
        ));
    }
    ok(server.apply(&sites), "five OneDriveSites");
    let sa = server.service_account_kubeconfig(NS, "onedrive-operator");
    let log = server.dir().join("operator.log");
    let port = free_port();
    let started = Instant::now();
    let operator = Operator::start_as(&sa, &log, "e2e-delegated", &format!("127.0.0.1:{port}"));
    let metrics_url = format!("http://127.0.0.1:{port}/metrics");
    let cycles = r#"onedrive_operator_reconciles_total{tenant="contoso",result="ok"}"#;
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let metrics = http_status(&metrics_url).map(|_| http_text(&metrics_url)).unwrap_or_default();
        if sample(&metrics, cycles).unwrap_or(0.0) >= 31.0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "fewer than 31 cycles; log:\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    let metrics = http_text(&metrics_url);
    let elapsed = started.elapsed().as_secs_f64();
    drop(operator);
    let stats = sim_stats(&base);
    assert_eq!(stats["enqueues"].as_array().unwrap().len(), 1, "the batch stayed in flight");
    // The renewal margin is a quarter of a 20 s lifetime: a token is renewed every 15 s at most.
    let bound = (elapsed / (lifetime - lifetime / 4.0)).ceil() as u64 + 1;
    let redemptions = stats["refresh_redemptions"].as_object().unwrap();
    assert_eq!(redemptions.len(), 2, "Graph and SharePoint: {redemptions:?}");
    for (audience, n) in redemptions {
        let n = n.as_u64().unwrap();
        assert!(n <= bound, "{audience}: {n} redemptions in {elapsed:.0} s (at most {bound})");
    }
    let rotations = stats["rotations"].as_u64().unwrap();
    let writes = sample(&metrics, r#"onedrive_operator_refresh_token_writes_total{tenant="contoso"}"#);
    assert_eq!(writes, Some(rotations as f64), "one Secret write per rotation");
    let secret: Value = serde_json::from_str(&ok(
        server.kubectl(&["get", "secret", "contoso-credentials", "-n", NS, "-o", "json"]),
        "get the Secret",
    ))
    .unwrap();
    use base64::Engine;
    let stored = base64::engine::general_purpose::STANDARD
        .decode(secret["data"]["refresh_token"].as_str().unwrap())
        .unwrap();
    let stored = onedrive_operator::jose::b64url(&sha2::Sha256::digest(&stored));
    assert_eq!(
        Some(stored.as_str()),
        stats["newest_refresh_token_sha256"].as_str(),
        "the Secret holds the newest token"
    );
    assert!(secret["metadata"]["annotations"]["onedrive-operator.dev/refresh-token-rotated-at"].is_string());
    println!("{elapsed:.0} s, {redemptions:?} redemptions, {rotations} rotations and Secret writes");
}

/// The chart's roles for people, on a real API server with impersonation: a site writer bound to
/// the site-editing ClusterRole in `team-a` (what aggregation gives the built-in `edit` role; the
/// e2e runs no kube-controller-manager to aggregate) applies OneDriveSites there and nowhere
/// else, and reaches neither tenants nor the operator's Secrets; a tenant administrator does.
#[test]
fn site_writers_and_tenant_administrators_get_what_the_chart_grants_them() {
    let server = ApiServer::start();
    install_crds(&server);
    ok(server.kubectl(&["create", "namespace", NS]), "namespace");
    ok(server.apply(&chart_rbac()), "the chart's RBAC");
    for ns in ["team-a", "team-b"] {
        ok(server.kubectl(&["create", "namespace", ns]), ns);
    }
    ok(
        server.kubectl(&[
            "create",
            "rolebinding",
            "alice-sites",
            "-n",
            "team-a",
            "--clusterrole=onedrive-operator-site-editor",
            "--user=alice",
        ]),
        "bind alice in team-a",
    );
    ok(
        server.kubectl(&[
            "create",
            "clusterrolebinding",
            "bob-tenants",
            "--clusterrole=onedrive-operator-tenant-admin",
            "--user=bob",
        ]),
        "bind bob",
    );
    ok(
        server.kubectl(&[
            "create",
            "rolebinding",
            "bob-secrets",
            "-n",
            NS,
            "--role=onedrive-operator-tenant-admin",
            "--user=bob",
        ]),
        "bind bob's Secrets",
    );
    let site = |ns: &str| {
        format!(
            "apiVersion: onedrive-operator.dev/v1alpha1\nkind: OneDriveSite\nmetadata: {{name: alice, namespace: {ns}}}\nspec: {{user: alice@contoso.com, tenantRef: {{name: contoso}}}}\n"
        )
    };
    let apply_as = |user: &str, yaml: &str| {
        let path = server.dir().join(format!("{user}-{}.yaml", yaml.len()));
        std::fs::write(&path, yaml).unwrap();
        server.kubectl(&["apply", "--as", user, "-f", path.to_str().unwrap()])
    };
    let can = |user: &str, args: &[&str]| {
        let mut all = vec!["auth", "can-i", "--as", user];
        all.extend_from_slice(args);
        String::from_utf8_lossy(&server.kubectl(&all).stdout).trim().to_string()
    };
    assert!(apply_as("alice", &site("team-a")).status.success(), "alice applies a site in team-a");
    let refused = apply_as("alice", &site("team-b"));
    assert!(!refused.status.success(), "alice applied a site in team-b");
    assert!(String::from_utf8_lossy(&refused.stderr).contains("forbidden"));
    assert_eq!(can("alice", &["delete", "onedrivesites", "-n", "team-a"]), "yes");
    assert_eq!(can("alice", &["get", "onedrivetenants"]), "no");
    assert_eq!(can("alice", &["create", "onedrivetenants"]), "no");
    assert_eq!(can("alice", &["get", "secrets", "-n", NS]), "no");
    assert_eq!(can("bob", &["create", "onedrivetenants"]), "yes");
    assert_eq!(can("bob", &["update", "secrets", "-n", NS]), "yes");
    assert_eq!(can("bob", &["get", "secrets", "-n", "team-a"]), "no");
    assert_eq!(can("bob", &["create", "onedrivesites", "-n", "team-a"]), "no");
}

/// `onedrive-operator login` as a tenant administrator (the chart's role), the simulator's hook
/// approving as a SharePoint administrator and this test acting as the browser: the Secret is
/// written and bound, the operator (delegated) brings the sites to Ready, and the Secret ends
/// with the simulator's newest refresh token. No token appears in any output.
#[test]
fn login_writes_the_secret_and_the_delegated_operator_converges() {
    use sha2::Digest;
    onedrive_operator::install_crypto_provider();
    let server = ApiServer::start();
    install_crds(&server);
    ok(server.kubectl(&["create", "namespace", NS]), "namespace");
    ok(server.apply(&chart_rbac()), "the chart's RBAC");
    ok(server.kubectl(&["create", "serviceaccount", "platform", "-n", NS]), "the platform team's account");
    let subject = format!("--serviceaccount={NS}:platform");
    ok(
        server.kubectl(&[
            "create",
            "clusterrolebinding",
            "platform",
            "--clusterrole=onedrive-operator-tenant-admin",
            &subject,
        ]),
        "bind",
    );
    ok(
        server.kubectl(&[
            "create",
            "rolebinding",
            "platform",
            "-n",
            NS,
            "--role=onedrive-operator-tenant-admin",
            &subject,
        ]),
        "bind",
    );
    let (_sim, manifests) = common::spawn_simulate(&[
        "--generate",
        "5",
        "--auth",
        "delegated",
        "--provision-delay",
        "600s",
        "--time-scale",
        "600",
        "--namespace",
        NS,
        "--tenant-name",
        "contoso",
    ]);
    // The tenant only: its Secret is what login writes.
    let tenant = manifests
        .split("\n---\n")
        .find(|d| d.contains("kind: OneDriveTenant"))
        .unwrap()
        .replace("pollInterval: 10s", "pollInterval: 2s");
    ok(server.apply(&tenant), "the tenant");
    let admin_url = manifests.lines().find_map(|l| l.trim().strip_prefix("adminUrl: ")).unwrap().to_string();
    let base = admin_url.trim_end_matches("/sharepoint").to_string();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let hook = reqwest::Client::new()
            .post(format!("{base}/_sim/sign-in"))
            .json(&serde_json::json!({"user": "admin@contoso.onmicrosoft.com"}))
            .send()
            .await
            .unwrap();
        assert!(hook.status().is_success());
    });
    let platform = server.service_account_kubeconfig(NS, "platform");
    let mut login = std::process::Command::new(env!("CARGO_BIN_EXE_onedrive-operator"))
        .args([
            "login",
            "--tenant",
            "contoso",
            "--namespace",
            NS,
            "--no-browser",
            "--allow-endpoint-overrides",
        ])
        .env("KUBECONFIG", &platform)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::BufRead;
    let mut stderr = std::io::BufReader::new(login.stderr.take().unwrap());
    let mut said = String::new();
    let url = loop {
        let mut line = String::new();
        assert!(stderr.read_line(&mut line).unwrap() > 0, "login ended before printing a URL: {said}");
        said.push_str(&line);
        if let Some(url) = line.trim().strip_prefix("http") {
            break format!("http{url}");
        }
    };
    // The browser: the simulator approves and redirects to login's loopback listener.
    rt.block_on(async { reqwest::get(&url).await.unwrap().text().await.unwrap() });
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut stderr, &mut rest).unwrap();
    said.push_str(&rest);
    let out = login.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success(), "login failed:\n{said}\n{stdout}");
    assert!(
        stdout.contains("Stored the refresh token of admin@contoso.onmicrosoft.com in Secret"),
        "{stdout}"
    );
    assert!(said.contains("(SharePoint Administrator)"), "{said}");
    for text in [&said, &stdout] {
        assert!(!text.contains("rt-") && !text.contains("eyJ"), "a token in the output:\n{text}");
    }
    let secret: Value = serde_json::from_str(&ok(
        server.kubectl(&["get", "secret", "contoso-credentials", "-n", NS, "-o", "json"]),
        "the Secret",
    ))
    .unwrap();
    assert_eq!(secret["metadata"]["annotations"]["onedrive-operator.dev/tenants"], "contoso");

    let mut sites = String::from("---\napiVersion: v1\nkind: Namespace\nmetadata: {name: team-a}\n");
    for i in 1..=5 {
        sites.push_str(&format!(
            "---\napiVersion: onedrive-operator.dev/v1alpha1\nkind: OneDriveSite\nmetadata: {{name: u{i}, namespace: team-a}}\nspec: {{user: user{i:04}@contoso.onmicrosoft.com, tenantRef: {{name: contoso}}}}\n"
        ));
    }
    ok(server.apply(&sites), "five sites");
    let sa = server.service_account_kubeconfig(NS, "onedrive-operator");
    let log = server.dir().join("operator.log");
    let operator = Operator::start_as(&sa, &log, "e2e-login", "127.0.0.1:0");
    let wait =
        server.kubectl(&["wait", "--for=condition=Ready", "ods", "--all", "-n", "team-a", "--timeout=120s"]);
    assert!(
        wait.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&wait.stderr),
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    drop(operator);
    let secret: Value = serde_json::from_str(&ok(
        server.kubectl(&["get", "secret", "contoso-credentials", "-n", NS, "-o", "json"]),
        "the Secret",
    ))
    .unwrap();
    use base64::Engine;
    let stored = base64::engine::general_purpose::STANDARD
        .decode(secret["data"]["refresh_token"].as_str().unwrap())
        .unwrap();
    let stored = onedrive_operator::jose::b64url(&sha2::Sha256::digest(&stored));
    assert_eq!(
        Some(stored.as_str()),
        sim_stats(&base)["newest_refresh_token_sha256"].as_str(),
        "the Secret holds the newest token"
    );
}

/// Migration-ready sites on a real API server: a tenant declaring a migration account as
/// `siteAdmins`; every site becomes `Ready` only once the simulator has the account as its
/// administrator (`kubectl wait --for=condition=Ready` means "exists and configured"), and
/// `check` prints it among the site's administrators.
#[test]
fn sites_are_ready_only_once_the_tenants_site_admins_are_applied() {
    let server = ApiServer::start();
    install_crds(&server);
    ok(server.kubectl(&["create", "namespace", NS]), "namespace");
    ok(server.kubectl(&["create", "namespace", "team-a"]), "namespace team-a");
    ok(server.apply(&chart_rbac()), "the chart's RBAC");
    let migration = "migration@contoso.onmicrosoft.com";
    let mut users: Vec<String> = (1..=40).map(|i| format!("user{i:04}@contoso.onmicrosoft.com")).collect();
    users.push(migration.into());
    let users_file = server.dir().join("users.yaml");
    std::fs::write(&users_file, serde_yaml::to_string(&users).unwrap()).unwrap();
    let (_sim, manifests) = common::spawn_simulate(&[
        "--users",
        users_file.to_str().unwrap(),
        "--provision-delay",
        "600s",
        "--time-scale",
        "600",
        "--namespace",
        NS,
        "--tenant-name",
        "contoso",
    ]);
    let manifests = manifests.replace(
        "pollInterval: 10s",
        &format!("pollInterval: 2s\n  siteAdmins:\n  - {migration}\n  storageQuota: 2Ti"),
    );
    assert!(manifests.contains("siteAdmins:"), "{manifests}");
    ok(server.apply(&manifests), "the simulator's tenant (with siteAdmins) and Secret");
    let mut sites = String::new();
    for (i, u) in users[..40].iter().enumerate() {
        sites.push_str(&format!(
            "---\napiVersion: onedrive-operator.dev/v1alpha1\nkind: OneDriveSite\nmetadata: {{name: u{i}, namespace: team-a}}\nspec: {{user: {u}, tenantRef: {{name: contoso}}}}\n"
        ));
    }
    ok(server.apply(&sites), "40 OneDriveSites");
    let sa = server.service_account_kubeconfig(NS, "onedrive-operator");
    let log = server.dir().join("operator.log");
    let _operator = Operator::start(&sa, &log);
    // While converging: no site is Ready without its settings applied.
    let deadline = Instant::now() + Duration::from_secs(240);
    loop {
        let list: Value = serde_json::from_str(&ok(
            server.kubectl(&["get", "ods", "-n", "team-a", "-o", "json"]),
            "get ods",
        ))
        .unwrap();
        let items = list["items"].as_array().unwrap();
        let condition = |s: &Value, t: &str| {
            s["status"]["conditions"].as_array().and_then(|c| c.iter().find(|c| c["type"] == t).cloned())
        };
        let mut ready = 0;
        for s in items {
            if condition(s, "Ready").is_some_and(|c| c["status"] == "True") {
                ready += 1;
                let configured = condition(s, "SiteConfigured").expect("SiteConfigured on a Ready site");
                assert_eq!(configured["status"], "True", "{s}");
                let applied = &s["status"]["settings"];
                assert_eq!(applied["siteAdmins"][0], migration, "{s}");
                assert_eq!(applied["storageQuotaMB"], 2_097_152, "{s}");
            }
        }
        if ready == 40 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{ready} of 40 Ready; log:\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    let wait =
        server.kubectl(&["wait", "--for=condition=Ready", "ods", "--all", "-n", "team-a", "--timeout=10s"]);
    assert!(wait.status.success(), "{}", String::from_utf8_lossy(&wait.stderr));
    // The simulator's own record, through `check`.
    let file = server.dir().join("sim.yaml");
    std::fs::write(&file, &manifests).unwrap();
    let check = std::process::Command::new(env!("CARGO_BIN_EXE_onedrive-operator"))
        .args([
            "check",
            "--allow-endpoint-overrides",
            "--tenant",
            file.to_str().unwrap(),
            &users[0],
            &users[39],
        ])
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&check.stdout);
    assert!(check.status.success(), "{}", String::from_utf8_lossy(&check.stderr));
    for u in [&users[0], &users[39]] {
        let line = said.lines().find(|l| l.starts_with(u.as_str())).unwrap_or_default();
        assert!(line.contains("site administrators:") && line.contains(migration), "{said}");
        assert!(line.contains("storage quota: 2097152 MB"), "{said}");
    }
}
