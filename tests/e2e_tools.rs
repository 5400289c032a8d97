//! The tools platform teams run beside the operator, checked on a real kube-apiserver + etcd
//! against a small mixed tenant (four users who get a site, one unlicensed, one whose profile
//! ends in an error; batches of two), the same six users declared again by a `OneDriveSiteSet` in
//! another namespace (its sites share their users' queue places): Argo CD's health check (the chart's Lua, run on Lua 5.1 as
//! Argo CD runs it) on the objects as the run leaves them, kube-state-metrics with the chart's
//! custom-resource-state configuration, the Events the run records, and the operator's probes
//! and metrics. And the walk-through (docs/walkthrough.md), on `scripts/dev-cluster`.

mod common;
mod envtest;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use envtest::*;
use mlua::LuaSerdeExt;
use serde_json::Value;

const USERS: &str = "
- ok1@contoso.onmicrosoft.com
- ok2@contoso.onmicrosoft.com
- ok3@contoso.onmicrosoft.com
- ok4@contoso.onmicrosoft.com
- {upn: nolicence@contoso.onmicrosoft.com, licensed: false}
- {upn: broken@contoso.onmicrosoft.com, profileOutcome: 8192}
";

/// What Argo CD shows for `obj`: the chart's health script run as Argo CD runs it (Lua 5.1, the
/// object as the global `obj`, absent fields nil).
fn argo_health(obj: &Value) -> (String, String) {
    let script =
        std::fs::read_to_string(root().join("charts/onedrive-operator/files/argocd-health.lua")).unwrap();
    let lua = mlua::Lua::new();
    let options =
        mlua::serde::SerializeOptions::new().serialize_none_to_null(false).serialize_unit_to_null(false);
    lua.globals().set("obj", lua.to_value_with(obj, options).unwrap()).unwrap();
    let hs: mlua::Table = lua.load(&script).eval().unwrap();
    (hs.get("status").unwrap(), hs.get("message").unwrap())
}

fn sites(server: &ApiServer) -> Vec<Value> {
    let list: Value =
        serde_json::from_str(&ok(server.kubectl(&["get", "ods", "-n", "team-a", "-o", "json"]), "get ods"))
            .unwrap();
    list["items"].as_array().unwrap().clone()
}

fn phase(site: &Value) -> &str {
    site["status"]["phase"].as_str().unwrap_or("")
}

fn named<'v>(sites: &'v [Value], name: &str) -> &'v Value {
    sites.iter().find(|s| s["metadata"]["name"] == name).unwrap()
}

/// Polls the sites until `done` says so (the operator works on its own clock).
fn wait_for(
    server: &ApiServer,
    log: &std::path::Path,
    what: &str,
    done: impl Fn(&[Value]) -> bool,
) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        let now = sites(server);
        if done(&now) {
            return now;
        }
        assert!(
            Instant::now() < deadline,
            "{what} not reached: {:?}\noperator log:\n{}",
            now.iter().map(|s| (s["metadata"]["name"].clone(), phase(s).to_string())).collect::<Vec<_>>(),
            std::fs::read_to_string(log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// kube-state-metrics (built by `scripts/kube-state-metrics-assets`) on `port`, with the chart's
/// custom-resource-state configuration, as the cluster's admin.
fn kube_state_metrics(server: &ApiServer, port: u16) -> common::Child {
    let binary = std::env::var_os("KSM_BINARY").expect(
        "KSM_BINARY is not set: run the suite with `bash scripts/test`, or export KSM_BINARY=$(scripts/kube-state-metrics-assets)",
    );
    let telemetry = free_port();
    let config = root().join("charts/onedrive-operator/files/kube-state-metrics.yaml");
    let log = std::fs::File::create(server.dir().join("kube-state-metrics.log")).unwrap();
    let child = std::process::Command::new(binary)
        .arg("--kubeconfig")
        .arg(&server.admin_kubeconfig)
        .arg("--custom-resource-state-only=true")
        .arg("--custom-resource-state-config-file")
        .arg(config)
        .args(["--host", "127.0.0.1", "--port", &port.to_string()])
        .args(["--telemetry-host", "127.0.0.1", "--telemetry-port", &telemetry.to_string()])
        .stdout(std::process::Stdio::null())
        .stderr(log)
        .spawn()
        .expect("kube-state-metrics starts");
    common::Child(child)
}

/// The value of the series `name` whose labels include `labels`, in a Prometheus text exposition.
fn series(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    text.lines().filter(|l| l.starts_with(&format!("{name}{{"))).find_map(|l| {
        let (head, value) = l.rsplit_once(' ')?;
        labels.iter().all(|(k, v)| head.contains(&format!("{k}=\"{v}\""))).then(|| value.parse().ok())?
    })
}

/// Scrapes kube-state-metrics until `ready` holds (it discovers the CRDs, then lists).
fn wait_for_series(port: u16, ready: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let text = if http_status(&format!("http://127.0.0.1:{port}/metrics")) == Some(200) {
            http_text(&format!("http://127.0.0.1:{port}/metrics"))
        } else {
            String::new()
        };
        if ready(&text) {
            return text;
        }
        assert!(Instant::now() < deadline, "kube-state-metrics did not serve the expected series:\n{text}");
        std::thread::sleep(Duration::from_millis(500));
    }
}

#[test]
fn argo_cd_health_events_and_probes_tell_what_the_run_did() {
    onedrive_operator::install_crypto_provider();
    let server = ApiServer::start();
    install_crds(&server);
    ok(server.kubectl(&["create", "namespace", NS]), "namespace");
    ok(server.kubectl(&["create", "namespace", "team-a"]), "namespace");
    ok(server.kubectl(&["create", "namespace", "team-b"]), "namespace");
    ok(server.apply(&chart_rbac()), "the chart's RBAC");
    let users_file = server.dir().join("users.yaml");
    std::fs::write(&users_file, USERS).unwrap();
    // Five simulated minutes per site at 30× speed: ten real seconds a batch.
    let (_sim, manifests) = common::spawn_simulate(&[
        "--users",
        users_file.to_str().unwrap(),
        "--provision-delay",
        "300s",
        "--time-scale",
        "30",
        "--namespace",
        NS,
        "--tenant-name",
        "contoso",
    ]);
    assert!(manifests.contains("batchSize: 200"), "{manifests}");
    let manifests =
        manifests.replace("pollInterval: 10s", "pollInterval: 1s").replace("batchSize: 200", "batchSize: 2");
    ok(server.apply(&manifests), "the simulator's tenant and Secret");
    let admin_url = manifests.lines().find_map(|l| l.trim().strip_prefix("adminUrl: ")).unwrap().to_string();
    let base = admin_url.trim_end_matches("/sharepoint").to_string();
    let mut yaml = String::new();
    for (i, upn) in ["ok1", "ok2", "ok3", "ok4", "nolicence", "broken"].iter().enumerate() {
        yaml.push_str(&format!(
            "---\napiVersion: onedrive-operator.dev/v1alpha1\nkind: OneDriveSite\nmetadata: {{name: s{i}-{upn}, namespace: team-a}}\nspec: {{user: {upn}@contoso.onmicrosoft.com, tenantRef: {{name: contoso}}}}\n"
        ));
    }
    ok(server.apply(&yaml), "six OneDriveSites");
    let listed: Vec<String> = ["ok1", "ok2", "ok3", "ok4", "nolicence", "broken"]
        .iter()
        .map(|u| format!("{u}@contoso.onmicrosoft.com"))
        .collect();
    ok(
        server.apply(&format!(
            "apiVersion: onedrive-operator.dev/v1alpha1\nkind: OneDriveSiteSet\nmetadata: {{name: everyone, namespace: team-b}}\nspec: {{tenantRef: {{name: contoso}}, source: {{users: {listed:?}}}}}\n"
        )),
        "a OneDriveSiteSet of the same six users",
    );
    let set = || -> Value {
        serde_json::from_str(&ok(
            server.kubectl(&["get", "odss", "everyone", "-n", "team-b", "-o", "json"]),
            "get odss",
        ))
        .unwrap()
    };
    assert_eq!(argo_health(&set()).0, "Progressing");

    // Before the operator runs: no status, which Argo CD shows as Progressing.
    let (status, message) = argo_health(&sites(&server)[0]);
    assert_eq!(
        (status.as_str(), message.as_str()),
        ("Progressing", "waiting for onedrive-operator to write a status")
    );

    let port = free_port();
    let sa = server.service_account_kubeconfig(NS, "onedrive-operator");
    let log = server.dir().join("operator.log");
    let operator = Operator::start_as(&sa, &log, "e2e", &format!("127.0.0.1:{port}"));
    // kube-state-metrics with the chart's configuration, watching along.
    let ksm_port = free_port();
    let _ksm = kube_state_metrics(&server, ksm_port);

    // The first batch in flight: its users SPSSITEERROR, the others waiting for a slot.
    let mid = wait_for(&server, &log, "a batch in flight with users waiting", |s| {
        s.iter().any(|s| phase(s) == "SPSSITEERROR") && s.iter().any(|s| phase(s) == "Pending")
    });
    for s in mid.iter().filter(|s| matches!(phase(s), "SPSSITEERROR" | "Pending")) {
        let (status, message) = argo_health(s);
        assert_eq!(status, "Progressing", "{}: {message}", phase(s));
        assert!(message.starts_with(phase(s)), "the message names the reason: {message}");
    }

    let end = wait_for(&server, &log, "every site settled", |s| {
        s.len() == 6 && s.iter().all(|s| matches!(phase(s), "Ready" | "Failed"))
    });
    for name in ["s0-ok1", "s1-ok2", "s2-ok3", "s3-ok4"] {
        let (status, message) = argo_health(named(&end, name));
        assert_eq!(status, "Healthy", "{name}: {message}");
        assert!(message.starts_with("Provisioned: the OneDrive exists at"), "{message}");
    }
    for (name, reason) in [("s4-nolicence", "UserNotLicensed"), ("s5-broken", "ProvisioningFailed")] {
        let (status, message) = argo_health(named(&end, name));
        assert_eq!(status, "Degraded", "{name}: {message}");
        assert!(message.starts_with(reason), "{name}: {message}");
    }
    let tenant: Value =
        serde_json::from_str(&ok(server.kubectl(&["get", "odt", "contoso", "-o", "json"]), "get odt"))
            .unwrap();
    assert_eq!(argo_health(&tenant).0, "Healthy", "{}", argo_health(&tenant).1);
    // The set settles with its sites (two of them Failed for a person's reason): Healthy.
    let deadline = Instant::now() + Duration::from_secs(120);
    while argo_health(&set()).0 != "Healthy" {
        assert!(Instant::now() < deadline, "the set never became Healthy: {:?}", argo_health(&set()));
        std::thread::sleep(Duration::from_millis(500));
    }
    let (_, message) = argo_health(&set());
    assert!(
        message.starts_with("Settled: ") && message.contains("4 of 6 sites Ready, 2 Failed"),
        "{message}"
    );

    // kube-state-metrics serves each site's phase and Ready reason, and the tenant's counts.
    let ksm = wait_for_series(ksm_port, |text| {
        series(text, "kube_onedrivesite_status_phase", &[("onedrivesite", "s5-broken"), ("phase", "Failed")])
            == Some(1.0)
            && series(text, "kube_onedrivetenant_users", &[("onedrivetenant", "contoso"), ("phase", "Ready")])
                == Some(4.0)
            && series(
                text,
                "kube_onedrivesiteset_sites",
                &[("onedrivesiteset", "everyone"), ("phase", "Failed")],
            ) == Some(2.0)
    });
    for (p, n) in [("Ready", 4.0), ("Failed", 2.0), ("Pending", 0.0), ("SPSSITEERROR", 0.0), ("Left", 0.0)] {
        let labels =
            [("onedrivesiteset", "everyone"), ("namespace", "team-b"), ("tenant", "contoso"), ("phase", p)];
        assert_eq!(series(&ksm, "kube_onedrivesiteset_sites", &labels), Some(n), "set {p}:\n{ksm}");
    }
    assert_eq!(series(&ksm, "kube_onedrivesiteset_members", &[("onedrivesiteset", "everyone")]), Some(6.0));
    assert_eq!(
        series(
            &ksm,
            "kube_onedrivesiteset_status_condition",
            &[("onedrivesiteset", "everyone"), ("type", "Ready"), ("reason", "Settled")]
        ),
        Some(1.0)
    );
    for site in &end {
        let name = site["metadata"]["name"].as_str().unwrap();
        let ready =
            site["status"]["conditions"].as_array().unwrap().iter().find(|c| c["type"] == "Ready").unwrap();
        for p in ["Pending", "SPSSITEERROR", "Ready", "Failed"] {
            let expected = if p == phase(site) { 1.0 } else { 0.0 };
            let got = series(
                &ksm,
                "kube_onedrivesite_status_phase",
                &[("onedrivesite", name), ("phase", p), ("namespace", "team-a"), ("tenant", "contoso")],
            );
            assert_eq!(got, Some(expected), "{name} {p}:\n{ksm}");
        }
        let reason = ready["reason"].as_str().unwrap();
        let value = if ready["status"] == "True" { 1.0 } else { 0.0 };
        let got = series(
            &ksm,
            "kube_onedrivesite_status_condition",
            &[("onedrivesite", name), ("type", "Ready"), ("reason", reason)],
        );
        assert_eq!(got, Some(value), "{name} Ready {reason}:\n{ksm}");
    }
    for (p, n) in [("Desired", 6.0), ("Ready", 4.0), ("Failed", 2.0), ("Pending", 0.0), ("SPSSITEERROR", 0.0)]
    {
        assert_eq!(
            series(&ksm, "kube_onedrivetenant_users", &[("onedrivetenant", "contoso"), ("phase", p)]),
            Some(n),
            "{p}"
        );
    }

    // Events: one per transition, none repeated (counted per object and reason).
    let enqueues = sim_stats(&base)["enqueues"].as_array().unwrap().len();
    assert_eq!(enqueues, 3, "five users who may get a site, batches of two");
    let events: Value = serde_json::from_str(&ok(
        server.kubectl(&["get", "events.events.k8s.io", "-A", "-o", "json"]),
        "get events",
    ))
    .unwrap();
    let mut counted: BTreeMap<(String, String, String), usize> = BTreeMap::new();
    for e in events["items"].as_array().unwrap() {
        if e["reportingController"] != "onedrive-operator" {
            continue;
        }
        let key = (
            e["regarding"]["name"].as_str().unwrap_or_default().to_string(),
            e["reason"].as_str().unwrap_or_default().to_string(),
            e["type"].as_str().unwrap_or_default().to_string(),
        );
        *counted.entry(key).or_default() += 1;
    }
    let mut expected: BTreeMap<(String, String, String), usize> = [
        ("s0-ok1", "Provisioned", "Normal", 1),
        ("s1-ok2", "Provisioned", "Normal", 1),
        ("s2-ok3", "Provisioned", "Normal", 1),
        ("s3-ok4", "Provisioned", "Normal", 1),
        ("s4-nolicence", "UserNotLicensed", "Warning", 1),
        ("s5-broken", "ProvisioningFailed", "Warning", 1),
        ("contoso", "BatchEnqueued", "Normal", enqueues),
        ("contoso", "BatchFinished", "Normal", enqueues),
    ]
    .into_iter()
    .map(|(n, r, t, c)| ((n.to_string(), r.to_string(), t.to_string()), c))
    .collect();
    // The set's sites share their users' phases, and each has its own Event (the set, settled,
    // has none: only a problem is an Event).
    for (user, reason, type_) in [
        ("ok1", "Provisioned", "Normal"),
        ("ok2", "Provisioned", "Normal"),
        ("ok3", "Provisioned", "Normal"),
        ("ok4", "Provisioned", "Normal"),
        ("nolicence", "UserNotLicensed", "Warning"),
        ("broken", "ProvisioningFailed", "Warning"),
    ] {
        let name = onedrive_operator::plan::site_set::child_name(&format!("{user}@contoso.onmicrosoft.com"));
        expected.insert((name, reason.to_string(), type_.to_string()), 1);
    }
    assert_eq!(counted, expected, "the Events of the run");

    // The probes and the metrics endpoint, as the kubelet and Prometheus request them.
    assert_eq!(http_status(&format!("http://127.0.0.1:{port}/livez")), Some(200));
    assert_eq!(http_status(&format!("http://127.0.0.1:{port}/readyz")), Some(200));
    let metrics = http_text(&format!("http://127.0.0.1:{port}/metrics"));
    assert_eq!(
        sample(&metrics, r#"onedrive_operator_users{tenant="contoso",phase="Ready"}"#),
        Some(4.0),
        "{metrics}"
    );
    assert_eq!(sample(&metrics, r#"onedrive_operator_users{tenant="contoso",phase="Failed"}"#), Some(2.0));
    assert!(metrics.trim_end().ends_with("# EOF"), "OpenMetrics text");

    // A spec changed while the operator is away: the status describes an older generation.
    drop(operator);
    ok(
        server.kubectl(&[
            "patch",
            "ods",
            "s0-ok1",
            "-n",
            "team-a",
            "--type=merge",
            "-p",
            r#"{"spec":{"storageQuota":"1Ti"}}"#,
        ]),
        "change a spec",
    );
    let stale = named(&sites(&server), "s0-ok1").clone();
    assert_eq!(stale["metadata"]["generation"], 2);
    let (status, message) = argo_health(&stale);
    assert_eq!(
        (status.as_str(), message.as_str()),
        ("Progressing", "waiting for onedrive-operator to observe generation 2")
    );
}

/// docs/walkthrough.md's block, split into its two terminals.
fn walk_through() -> (String, String) {
    let readme = std::fs::read_to_string(root().join("docs/walkthrough.md")).unwrap();
    let section = readme.split("## Try it without Microsoft 365").nth(1).expect("the section");
    let block = section.split("```sh\n").nth(1).and_then(|b| b.split("\n```").next()).expect("its sh block");
    let (first, second) = block.split_once("# Terminal 2").expect("two terminals");
    let first: Vec<&str> = first.lines().filter(|l| !l.trim().is_empty() && !l.starts_with('#')).collect();
    assert_eq!(first.len(), 1, "terminal 1 runs the simulator: {first:?}");
    (first[0].to_string(), format!("# Terminal 2{second}\n"))
}

/// Kills a process group (the walk-through's shell and what it started in the background).
struct Group(std::process::Child);

impl Drop for Group {
    fn drop(&mut self) {
        let _ =
            std::process::Command::new("kill").args(["-TERM", "--", &format!("-{}", self.0.id())]).status();
        let _ = self.0.wait();
    }
}

#[test]
fn the_readme_walk_through_runs_on_the_dev_cluster() {
    use std::os::unix::process::CommandExt;
    use std::process::{Command, Stdio};
    let (simulator, commands) = walk_through();
    // A checkout of its own (the walk-through writes simulator-tenant.yaml where it runs), and the
    // dev cluster on a free port with its data there too, so a developer's own is left alone.
    let dir = std::env::temp_dir().join(format!("odo-walk-through-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for linked in ["scripts", "crds"] {
        let _ = std::fs::remove_file(dir.join(linked));
        std::os::unix::fs::symlink(root().join(linked), dir.join(linked)).unwrap();
    }
    let port = free_port();
    let binary = std::path::Path::new(env!("CARGO_BIN_EXE_onedrive-operator"));
    let path =
        format!("{}:{}", binary.parent().unwrap().display(), std::env::var("PATH").unwrap_or_default());
    let shell = |script: &str| {
        let mut c = Command::new("bash");
        c.args(["-c", script])
            .current_dir(&dir)
            .env("PATH", &path)
            .env("DEV_CLUSTER_DIR", dir.join("dev-cluster"))
            .env("DEV_CLUSTER_PORT", port.to_string())
            .env_remove("KUBECONFIG")
            .process_group(0);
        c
    };
    let _simulator = Group(shell(&simulator).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap());
    // The simulator writes the manifests before it serves: wait for their last line.
    let deadline = Instant::now() + Duration::from_secs(60);
    while !std::fs::read_to_string(dir.join("simulator-tenant.yaml"))
        .unwrap_or_default()
        .contains("driftCheckInterval")
    {
        assert!(Instant::now() < deadline, "the simulator printed no manifests");
        std::thread::sleep(Duration::from_millis(100));
    }
    // Terminal 2 as one script that stops at the first failing command. Its output goes to files:
    // a background command it leaves running would hold a pipe open.
    let script = format!("set -euo pipefail\n{commands}");
    let (stdout_file, stderr_file) = (dir.join("stdout"), dir.join("stderr"));
    let mut run = Group(
        shell(&script)
            .stdout(std::fs::File::create(&stdout_file).unwrap())
            .stderr(std::fs::File::create(&stderr_file).unwrap())
            .spawn()
            .unwrap(),
    );
    let status = run.0.wait().unwrap();
    // What it left running in the background (the operator) stops before its cluster does.
    drop(run);
    let stdout = std::fs::read_to_string(&stdout_file).unwrap_or_default();
    let stderr = std::fs::read_to_string(&stderr_file).unwrap_or_default();
    let _ = Command::new("bash")
        .arg(root().join("scripts/dev-cluster"))
        .arg("down")
        .env("DEV_CLUSTER_DIR", dir.join("dev-cluster"))
        .status();
    let _ = std::fs::remove_dir_all(&dir);
    assert!(status.success(), "the walk-through failed:\n{stdout}\n{stderr}");
    for site in ["user0001", "user0002"] {
        assert!(
            stdout.contains(&format!("onedrivesite.onedrive-operator.dev/{site} condition met")),
            "{site} Ready:\n{stdout}"
        );
    }
    assert!(stdout.contains("ETA"), "kubectl get odt shows the ETA column:\n{stdout}");
}
