//! Safe to share and safe to fail over, end to end on a real kube-apiserver + etcd with the
//! operator binary as its ServiceAccount: namespaces a tenant allows, a killed leader, a leader
//! cut off from the API server, and an API server outage. The simulator attributes every
//! request to the replica that sent it (`(replica NAME)` in the User-Agent).

mod common;
mod envtest;

use std::collections::HashSet;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use envtest::*;
use serde_json::Value;

/// A cluster with the CRDs and the chart's RBAC, a simulated tenant `contoso` (one simulated
/// site creation = two real seconds, polled every 2 s) and its users.
struct Run {
    server: ApiServer,
    _sim: common::Child,
    /// The simulator's root URL.
    base: String,
    /// The operator's ServiceAccount kubeconfig.
    sa: PathBuf,
    users: Vec<String>,
}

fn setup(users: usize, tenant_extra: &str, sim_extra: &[&str]) -> Run {
    let server = ApiServer::start();
    install_crds(&server);
    ok(server.kubectl(&["create", "namespace", NS]), "namespace");
    ok(server.apply(&chart_rbac()), "the chart's RBAC");
    let users: Vec<String> = (0..users).map(|i| format!("user{i:04}@contoso.onmicrosoft.com")).collect();
    let users_file = server.dir().join("users.yaml");
    std::fs::write(&users_file, serde_yaml::to_string(&users).unwrap()).unwrap();
    let mut args = vec![
        "--users",
        users_file.to_str().unwrap(),
        "--provision-delay",
        "1200s",
        "--time-scale",
        "600",
        "--namespace",
        NS,
        "--tenant-name",
        "contoso",
    ];
    args.extend(sim_extra);
    let (sim, manifests) = common::spawn_simulate(&args);
    let manifests = manifests
        .replace("pollInterval: 10s", "pollInterval: 2s")
        .replace("  driftCheckInterval: 24h", &format!("  driftCheckInterval: 24h\n{tenant_extra}"));
    ok(server.apply(&manifests), "the simulator's tenant and Secret");
    let admin_url = manifests.lines().find_map(|l| l.trim().strip_prefix("adminUrl: ")).unwrap();
    let base = admin_url.trim_end_matches("/sharepoint").to_string();
    let sa = server.service_account_kubeconfig(NS, "onedrive-operator");
    Run { server, _sim: sim, base, sa, users }
}

impl Run {
    /// `OneDriveSite`s `u{i}` for `users` in `namespace` (created with it).
    fn sites(&self, namespace: &str, labels: &str, users: &[String], prefix: &str) {
        let mut yaml = format!(
            "---\napiVersion: v1\nkind: Namespace\nmetadata: {{name: {namespace}, labels: {{{labels}}}}}\n"
        );
        for (i, u) in users.iter().enumerate() {
            yaml.push_str(&format!(
                "---\napiVersion: onedrive-operator.dev/v1alpha1\nkind: OneDriveSite\nmetadata: {{name: {prefix}{i}, namespace: {namespace}}}\nspec: {{user: {u}, tenantRef: {{name: contoso}}}}\n"
            ));
        }
        ok(self.server.apply(&yaml), "sites");
    }

    fn log(&self, name: &str) -> PathBuf {
        self.server.dir().join(format!("{name}.log"))
    }

    fn lease_holder(&self) -> String {
        let out = self.server.kubectl(&[
            "get",
            "lease",
            "onedrive-operator-leader",
            "-n",
            NS,
            "-o",
            "jsonpath={.spec.holderIdentity}",
        ]);
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// Whether a batch is in flight: recorded and confirmed sent in the tenant's status.
    fn batch_in_flight(&self) -> bool {
        let out = self.server.kubectl(&["get", "odt", "contoso", "-o", "json"]);
        let Ok(tenant) = serde_json::from_slice::<Value>(&out.stdout) else { return false };
        tenant["status"]["geos"]
            .as_array()
            .is_some_and(|geos| geos.iter().any(|g| g["currentBatch"]["sent"] == Value::Bool(true)))
    }

    fn stats(&self) -> Value {
        sim_stats(&self.base)
    }

    /// `kubectl wait` for every site of `namespace` (all namespaces: `-A`) to be Ready.
    fn wait_ready(&self, namespace: &str, logs: &[&PathBuf]) {
        let scope = if namespace == "-A" { vec!["-A"] } else { vec!["-n", namespace] };
        let mut args = vec!["wait", "--for=condition=Ready", "ods", "--all", "--timeout=240s"];
        args.extend(scope);
        let wait = self.server.kubectl(&args);
        assert!(
            wait.status.success(),
            "kubectl wait: {}\n{}",
            String::from_utf8_lossy(&wait.stderr),
            read_logs(logs)
        );
    }
}

fn read_logs(logs: &[&PathBuf]) -> String {
    logs.iter()
        .map(|l| format!("--- {}\n{}", l.display(), std::fs::read_to_string(l).unwrap_or_default()))
        .collect()
}

/// Polls `done` (every 100 ms) until it holds; fails with the logs after `secs`.
fn wait_until(what: &str, secs: u64, logs: &[&PathBuf], mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !done() {
        assert!(Instant::now() < deadline, "{what}: not after {secs} s\n{}", read_logs(logs));
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Every enqueued user, checking that none was sent twice and no batch went out while the
/// previous one was in flight (the simulator's own view of the batch rule).
fn enqueued_once(stats: &Value) -> HashSet<String> {
    let mut seen = HashSet::new();
    for e in stats["enqueues"].as_array().unwrap() {
        assert_eq!(e["while_in_flight"], Value::Bool(false), "a batch sent while another was in flight: {e}");
        for u in e["users"].as_array().unwrap() {
            assert!(seen.insert(u.as_str().unwrap().to_lowercase()), "{u} enqueued twice");
        }
    }
    seen
}

fn replica_of(record: &Value) -> &str {
    record["replica"].as_str().unwrap_or("")
}

#[test]
fn a_tenant_serves_only_the_namespaces_it_allows_and_a_relabel_takes_effect_at_once() {
    let run = setup(
        40,
        "  allowedNamespaces: {selector: {matchLabels: {onedrive-operator.dev/tenant: contoso}}}",
        &[],
    );
    let (allowed, other) = run.users.split_at(20);
    run.sites("allowed", "onedrive-operator.dev/tenant: contoso", allowed, "u");
    // `shared` names an allowed site's user from the other namespace.
    let mut refused = other.to_vec();
    refused.push(allowed[0].to_uppercase());
    run.sites("other", "", &refused, "u");
    let log = run.log("operator");
    let _operator = Operator::start_as(&run.sa, &log, "e2e-namespaces", "127.0.0.1:0");
    run.wait_ready("allowed", &[&log]);
    wait_until("sites in `other` say TenantNotAllowed", 60, &[&log], || {
        let out = run.server.kubectl(&["get", "ods", "-n", "other", "-o", "json"]);
        let Ok(list) = serde_json::from_slice::<Value>(&out.stdout) else { return false };
        let items = list["items"].as_array().cloned().unwrap_or_default();
        items.len() == 21
            && items.iter().all(|s| {
                s["status"]["conditions"].as_array().is_some_and(|cs| {
                    cs.iter().any(|c| c["type"] == "Ready" && c["reason"] == "TenantNotAllowed")
                })
            })
    });
    let events = ok(
        run.server.kubectl(&["get", "events", "-n", "other", "--field-selector", "reason=TenantNotAllowed"]),
        "events",
    );
    assert!(events.contains("TenantNotAllowed") && events.contains("spec.allowedNamespaces"), "{events}");
    let sent = enqueued_once(&run.stats());
    let expected: HashSet<String> = allowed.iter().map(|u| u.to_lowercase()).collect();
    assert_eq!(sent, expected, "only the allowed namespace's users were enqueued");

    ok(
        run.server.kubectl(&["label", "namespace", "other", "onedrive-operator.dev/tenant=contoso"]),
        "relabel",
    );
    run.wait_ready("other", &[&log]);
    let sent = enqueued_once(&run.stats());
    assert_eq!(sent.len(), 40, "each user once, the shared one included");
}

#[test]
fn a_standby_takes_over_from_a_killed_leader_and_finishes_the_run() {
    let run = setup(600, "", &[]);
    run.sites("team-a", "", &run.users, "u");
    let (log_a, log_b) = (run.log("replica-a"), run.log("replica-b"));
    let logs = [&log_a, &log_b];
    let a = Operator::start_as(&run.sa, &log_a, "replica-a", "127.0.0.1:0");
    wait_until("replica-a leads", 60, &logs, || run.lease_holder() == "replica-a");
    let _b = Operator::start_as(&run.sa, &log_b, "replica-b", "127.0.0.1:0");
    wait_until("a batch in flight", 120, &logs, || run.batch_in_flight());

    drop(a); // SIGKILL
    let killed = Instant::now();
    let killed_ms = run.stats()["now_ms"].as_f64().unwrap();
    wait_until("replica-b leads", 60, &logs, || run.lease_holder() == "replica-b");
    let takeover = killed.elapsed();
    run.wait_ready("team-a", &logs);

    let stats = run.stats();
    assert_eq!(enqueued_once(&stats).len(), 600);
    let enqueues = stats["enqueues"].as_array().unwrap();
    for e in enqueues {
        let at = e["at_ms"].as_f64().unwrap();
        match replica_of(e) {
            "replica-a" => assert!(at <= killed_ms, "replica-a sent after its death"),
            "replica-b" => assert!(at > killed_ms, "replica-b sent while a standby"),
            other => panic!("an enqueue from {other:?}"),
        }
    }
    assert!(enqueues.iter().any(|e| replica_of(e) == "replica-b"), "the standby finished the run");
    // Lease duration + renew period, plus what polling the Lease with kubectl adds.
    let bound = Duration::from_secs(LEASE_SECONDS) + Duration::from_secs(LEASE_SECONDS) / 5;
    println!(
        "takeover {takeover:?} after SIGKILL (lease {LEASE_SECONDS} s + renew {:?})",
        bound - Duration::from_secs(LEASE_SECONDS)
    );
    assert!(takeover <= bound + Duration::from_secs(3), "takeover took {takeover:?}");
}

#[test]
fn a_leader_cut_off_from_the_api_server_sends_nothing_once_its_lease_could_have_expired() {
    // Each answer takes two seconds: a cycle's requests to the tenant outlast a lease.
    let run = setup(600, "", &["--latency", "2s"]);
    run.sites("team-a", "", &run.users, "u");
    let proxy = Proxy::start(run.server.port);
    let through_proxy = run.server.service_account_kubeconfig_via(NS, "onedrive-operator", proxy.port);
    let (log_a, log_b) = (run.log("replica-a"), run.log("replica-b"));
    let logs = [&log_a, &log_b];
    let mut a = Operator::start_as(&through_proxy, &log_a, "replica-a", "127.0.0.1:0");
    wait_until("replica-a leads", 60, &logs, || run.lease_holder() == "replica-a");
    let _b = Operator::start_as(&run.sa, &log_b, "replica-b", "127.0.0.1:0");
    // Cut as replica-a's first cycle starts talking to the tenant (its token is answered): the
    // rest of that cycle's requests would go on for longer than the lease.
    wait_until("replica-a talks to the tenant", 60, &logs, || {
        run.stats()["arrivals"].as_array().unwrap().iter().any(|r| replica_of(r) == "replica-a")
    });
    proxy.cut();
    let cut_ms = run.stats()["now_ms"].as_f64().unwrap();
    wait_until("replica-b leads", 60, &logs, || run.lease_holder() == "replica-b");
    // The partition lasts until the new leader has sent a batch, then heals: the old leader
    // must not have acted meanwhile (one that never noticed would have gone on with its cycle),
    // nor act after.
    wait_until("replica-b sends a batch", 120, &logs, || {
        run.stats()["enqueues"].as_array().unwrap().iter().any(|e| replica_of(e) == "replica-b")
    });
    proxy.heal();
    run.wait_ready("team-a", &logs);

    let stats = run.stats();
    assert_eq!(enqueued_once(&stats).len(), 600);
    // As they arrived, answered or not: what a real service would have received.
    let from_a: Vec<f64> = stats["arrivals"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| replica_of(r) == "replica-a")
        .map(|r| r["at_ms"].as_f64().unwrap())
        .collect();
    assert!(!from_a.is_empty(), "replica-a worked before the cut");
    // Its last renewal was before the cut: its Lease could expire at most a duration later.
    let expiry_ms = cut_ms + (LEASE_SECONDS * 1000) as f64;
    let last = from_a.iter().cloned().fold(f64::MIN, f64::max);
    println!(
        "replica-a's last request {:.0} ms after the cut (its lease expired by {} ms)",
        last - cut_ms,
        LEASE_SECONDS * 1000
    );
    assert!(last <= expiry_ms, "replica-a sent a request {:.0} ms after the cut", last - cut_ms);
    assert!(a.alive(), "the cut-off replica steps down and campaigns again, without exiting");
    let said = std::fs::read_to_string(&log_a).unwrap();
    assert!(said.contains("stepping down before it can expire"), "{said}");
}

#[test]
fn an_api_server_outage_mid_batch_neither_crashes_the_operator_nor_repeats_a_batch() {
    let mut run = setup(600, "", &[]);
    run.sites("team-a", "", &run.users, "u");
    let log = run.log("operator");
    let mut operator = Operator::start_as(&run.sa, &log, "e2e-outage", "127.0.0.1:0");
    wait_until("a batch in flight", 120, &[&log], || run.batch_in_flight());

    run.server.stop_apiserver();
    let stopped_ms = run.stats()["now_ms"].as_f64().unwrap();
    // The outage itself: the API server stays down this long.
    std::thread::sleep(Duration::from_secs(30));
    assert!(operator.alive(), "the operator survives the outage\n{}", read_logs(&[&log]));
    let restarting_ms = run.stats()["now_ms"].as_f64().unwrap();
    run.server.restart_apiserver();
    run.wait_ready("team-a", &[&log]);
    assert!(operator.alive());

    let stats = run.stats();
    assert_eq!(enqueued_once(&stats).len(), 600);
    // Without the API server nothing is recorded, so (once the leader has stepped down) nothing
    // is sent or even asked.
    let quiet_from = stopped_ms + (LEASE_SECONDS * 1000) as f64;
    let during: Vec<&Value> = stats["arrivals"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| (quiet_from..restarting_ms).contains(&r["at_ms"].as_f64().unwrap()))
        .collect();
    assert!(during.is_empty(), "requests during the outage: {during:?}");
    let tenant: Value =
        serde_json::from_str(&ok(run.server.kubectl(&["get", "odt", "contoso", "-o", "json"]), "tenant"))
            .unwrap();
    assert_eq!(
        tenant["status"]["lastBatchId"].as_u64(),
        Some(stats["enqueues"].as_array().unwrap().len() as u64),
        "every batch recorded was sent once"
    );
    let said = std::fs::read_to_string(&log).unwrap();
    assert!(said.contains("stepping down before it can expire"), "{said}");
    assert!(said.matches("acquired the leader lease").count() >= 2, "{said}");
}
