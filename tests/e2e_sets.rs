//! End to end on a real kube-apiserver + etcd: a `OneDriveSiteSet` of 5,000 listed users, the
//! operator binary as its ServiceAccount with the chart's RBAC, the simulator's tenant. Its sites
//! are created by the operator (owned by the set, labelled with its name), the tenant converges,
//! and an edit of the list deletes exactly the sites of the users it dropped. There is no
//! kube-controller-manager here: deleting the set itself (ownerReferences, a cluster's garbage
//! collector) is not exercised; the deletions tested are the operator's own.
//!
//! How fast the sites are created is measured by `scripts/bench-sets`; here only a generous
//! bound is asserted, so a slow machine does not fail the suite.

mod common;
mod envtest;

use std::time::{Duration, Instant};

use envtest::*;
use serde_json::Value;

const SET_NS: &str = "wave";
const USERS: usize = 5000;
/// Users dropped from the list: 2 %, within the removal guard.
const DROPPED: usize = USERS / 50;

fn children(server: &ApiServer) -> usize {
    let out = ok(
        server.kubectl(&[
            "get",
            "ods",
            "-n",
            SET_NS,
            "-l",
            "onedrive-operator.dev/site-set=all",
            "-o",
            "name",
        ]),
        "list the set's sites",
    );
    out.lines().count()
}

/// A set of `users`, with the template label `labels` (`key: value`, or none when empty).
fn set_manifest(name: &str, labels: &str, users: &[String]) -> String {
    let template = if labels.is_empty() { "{}".to_string() } else { format!("{{labels: {{{labels}}}}}") };
    let mut yaml = format!(
        "apiVersion: onedrive-operator.dev/v1alpha1\nkind: OneDriveSiteSet\nmetadata: {{name: {name}, namespace: {SET_NS}}}\nspec:\n  tenantRef: {{name: contoso}}\n  template: {template}\n  source:\n    users:\n"
    );
    for u in users {
        yaml.push_str(&format!("      - {u}\n"));
    }
    yaml
}

/// `kubectl apply --server-side` (a list this long is past what client-side apply's
/// last-applied annotation should carry).
fn apply_server_side(server: &ApiServer, yaml: &str) {
    let path = server.dir().join("set.yaml");
    std::fs::write(&path, yaml).unwrap();
    ok(
        server.kubectl(&[
            "apply",
            "--server-side",
            "--field-manager",
            "platform-team",
            "-f",
            path.to_str().unwrap(),
        ]),
        "apply the set",
    );
}

fn wait_for(what: &str, limit: Duration, log: &std::path::Path, mut done: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    while !done() {
        assert!(
            start.elapsed() < limit,
            "{what}: not within {limit:?}; operator log:\n{}",
            std::fs::read_to_string(log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    start.elapsed()
}

#[test]
fn a_set_of_5000_listed_users_gets_its_sites_and_the_tenant_converges() {
    let server = ApiServer::start();
    install_crds(&server);
    ok(server.kubectl(&["create", "namespace", NS]), "namespace");
    ok(server.kubectl(&["create", "namespace", SET_NS]), "the set's namespace");
    ok(server.apply(&chart_rbac()), "the chart's RBAC");

    let users: Vec<String> = (1..=USERS).map(|i| format!("user{i:05}@contoso.onmicrosoft.com")).collect();
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
    ok(server.apply(&manifests.replace("pollInterval: 10s", "pollInterval: 2s")), "the simulator's tenant");
    apply_server_side(&server, &set_manifest("all", "wave: \"1\"", &users));

    let sa = server.service_account_kubeconfig(NS, "onedrive-operator");
    for verb in ["create", "delete"] {
        let can = server.kubectl_as(&sa, &["auth", "can-i", verb, "onedrivesites", "-n", SET_NS]);
        assert_eq!(String::from_utf8_lossy(&can.stdout).trim(), "yes", "the chart lets it {verb} sites");
    }
    let log = server.dir().join("operator.log");
    let _operator = Operator::start(&sa, &log);

    let created = wait_for("5,000 sites", Duration::from_secs(600), &log, || children(&server) == USERS);
    eprintln!("{USERS} sites created in {:.1} s", created.as_secs_f64());
    let wait = server.kubectl(&["wait", "--for=condition=Ready", "odss/all", "-n", SET_NS, "--timeout=600s"]);
    assert!(
        wait.status.success(),
        "kubectl wait: {}\noperator log:\n{}",
        String::from_utf8_lossy(&wait.stderr),
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    let set: Value = serde_json::from_str(&ok(
        server.kubectl(&["get", "odss", "all", "-n", SET_NS, "-o", "json"]),
        "get odss",
    ))
    .unwrap();
    assert_eq!(set["status"]["members"], USERS);
    assert_eq!(set["status"]["children"]["ready"], USERS, "every listed user is licensed here");
    let table = ok(server.kubectl(&["get", "odss", "-n", SET_NS]), "kubectl get odss");
    let header: Vec<&str> = table.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(header, ["NAME", "READY", "MEMBERS", "READY", "SITES", "FAILED", "AGE"]);
    assert!(table.lines().nth(1).unwrap().contains(&USERS.to_string()), "{table}");
    let site: Value = serde_json::from_str(&ok(
        server.kubectl(&[
            "get",
            "ods",
            "-n",
            SET_NS,
            "-l",
            "onedrive-operator.dev/site-set=all",
            "-o",
            "json",
        ]),
        "the set's sites",
    ))
    .unwrap();
    let first = &site["items"][0];
    assert_eq!(first["metadata"]["labels"]["wave"], "1");
    assert_eq!(first["metadata"]["ownerReferences"][0]["kind"], "OneDriveSiteSet");
    assert_eq!(first["metadata"]["ownerReferences"][0]["controller"], true);
    assert_eq!(first["status"]["phase"], "Ready");

    // The list edited: the last users dropped (2 %, within the removal guard), their sites go;
    // the template's label dropped too: server-side apply removes it from every site.
    apply_server_side(&server, &set_manifest("all", "", &users[..USERS - DROPPED]));
    wait_for("the dropped users' sites deleted", Duration::from_secs(120), &log, || {
        children(&server) == USERS - DROPPED
    });
    let left = ok(server.kubectl(&["get", "ods", "-n", SET_NS, "-o", "json"]), "the sites left");
    assert!(!left.contains(&users[USERS - 1]) && left.contains(&users[USERS - DROPPED - 1]));
    wait_for("the label removed from every site", Duration::from_secs(120), &log, || {
        let labelled =
            ok(server.kubectl(&["get", "ods", "-n", SET_NS, "-l", "wave", "-o", "name"]), "labelled");
        labelled.lines().count() == 0
    });

    // A template the API server refuses for every site (a label value over 63 characters): each
    // is reported on the set, the set says so, and nothing else stops.
    let long = "x".repeat(70);
    // (Users of their own: the first set's sites already hold its users' names.)
    let others: Vec<String> = (1..=3).map(|i| format!("other{i}@contoso.onmicrosoft.com")).collect();
    apply_server_side(&server, &set_manifest("refused", &format!("team: {long}"), &others));
    wait_for("the refusals reported", Duration::from_secs(60), &log, || {
        let set = ok(server.kubectl(&["get", "odss", "refused", "-n", SET_NS, "-o", "json"]), "get odss");
        let set: Value = serde_json::from_str(&set).unwrap();
        set["status"]["invalidMembers"] == 3
    });
    let set: Value = serde_json::from_str(&ok(
        server.kubectl(&["get", "odss", "refused", "-n", SET_NS, "-o", "json"]),
        "get odss",
    ))
    .unwrap();
    let message = set["status"]["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "Ready")
        .unwrap()["message"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(message.contains("the API server refused the OneDriveSites of 3 users"), "{message}");
}
