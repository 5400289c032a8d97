"""Helm lint (strict) and offline renders of charts/onedrive-operator with default and
non-default values; every rendered manifest must pass kubernetes-validate --strict (1.36).
Exits non-zero on the first problem. With an argument, writes the default rendering there."""

import os
import subprocess
import sys
import tempfile

import helm_python as helm
import yaml

CHART = os.path.join(os.path.dirname(__file__), "..", "charts", "onedrive-operator")
K8S = "1.36.0"
# Kinds from other projects' CRDs: no schema in kubernetes-validate.
FOREIGN = {"ServiceMonitor", "PrometheusRule"}

VARIANTS = {
    "default": {},
    "everything": {
        "replicaCount": 2,
        "watchNamespace": "team-finance",
        "defaultTenant": "contoso",
        "azureWorkloadIdentity": {"enabled": True, "clientId": "11111111-1111-1111-1111-111111111111"},
        "metrics": {"serviceMonitor": {"enabled": True}, "prometheusRule": {"enabled": True}},
        "podDisruptionBudget": {"enabled": True},
        "networkPolicy": {"enabled": True, "apiServerCIDR": "10.0.0.1/32"},
        "grafanaDashboard": {"enabled": True},
        "kubeStateMetrics": {"enabled": True, "serviceAccount": {"name": "kube-state-metrics", "namespace": "monitoring"}},
        "crds": {"enabled": True, "keep": False},
        "extraArgs": ["--organization=contoso"],
        "extraEnv": [{"name": "HTTPS_PROXY", "value": "http://proxy:3128"}],
        "caBundle": {"configMap": "proxy-ca", "key": "ca.crt"},
        "allowEndpointOverrides": True,
        "rbac": {
            "create": True,
            "secretNames": ["contoso-app-cert", "contoso-admin-token"],
            "tenantAdmins": [{"kind": "Group", "name": "m365-platform", "apiGroup": "rbac.authorization.k8s.io"}],
        },
        "imagePullSecrets": [{"name": "registry-credentials"}],
        "nodeSelector": {"kubernetes.io/os": "linux"},
        "tolerations": [{"key": "dedicated", "operator": "Exists"}],
    },
    "no-crds": {"crds": {"enabled": False}, "rbac": {"create": True}, "serviceAccount": {"create": False, "name": "existing"}},
}


def fail(message):
    print(f"chart-check: {message}", file=sys.stderr)
    sys.exit(1)


def render(values):
    chart = helm.Chart.load(CHART)
    manifests = chart.render(values, name="onedrive-operator", namespace="onedrive-operator", is_install=True)
    docs = []
    for path, text in sorted(manifests.items()):
        if path.endswith("NOTES.txt"):
            continue
        for doc in yaml.safe_load_all(text):
            if doc:
                docs.append((path, doc))
    return docs


def main():
    rendered = {}
    for name, values in VARIANTS.items():
        report = helm.lint(CHART, values, strict=True, namespace="onedrive-operator", kube_version="v1.36.0")
        problems = [m for m in report.get("messages", []) if m.get("severity", 0) >= 2] + report.get("errors", [])
        if problems:
            fail(f"helm lint --strict ({name}): {problems}")
        docs = rendered[name] = render(values)
        kinds = sorted({d["kind"] for _, d in docs})
        with tempfile.TemporaryDirectory() as tmp:
            files = []
            for i, (path, doc) in enumerate(docs):
                if doc["kind"] in FOREIGN:
                    continue
                f = os.path.join(tmp, f"{i:02d}.yaml")
                with open(f, "w") as out:
                    yaml.safe_dump(doc, out)
                files.append(f)
            result = subprocess.run(
                [os.path.join(os.path.dirname(sys.executable), "kubernetes-validate"), "--strict", "-k", K8S, "--quiet", *files],
                capture_output=True,
                text=True,
            )
            if result.returncode != 0:
                fail(f"kubernetes-validate --strict ({name}):\n{result.stdout}{result.stderr}")
        print(f"chart-check: {name}: lint clean, {len(docs)} manifests valid for Kubernetes {K8S} ({', '.join(kinds)})")
        if name == "default" and len(sys.argv) > 1:
            with open(sys.argv[1], "w") as out:
                yaml.safe_dump_all([d for _, d in docs], out)
    # The RBAC must stay least-privilege: no wildcards anywhere.
    for _, doc in rendered["everything"] + rendered["default"]:
        for rule in doc.get("rules", []) if doc["kind"] in ("Role", "ClusterRole") else []:
            for field in ("apiGroups", "resources", "verbs"):
                if "*" in rule.get(field, []):
                    fail(f"wildcard in {doc['kind']} {doc['metadata']['name']}: {rule}")
    # Secrets: this namespace only, narrowed to named Secrets when asked.
    def secret_rules(name):
        return [r for _, d in rendered[name] if d["kind"] in ("Role", "ClusterRole") for r in d["rules"] if "secrets" in r["resources"]]
    if any(d["kind"] == "ClusterRole" and any("secrets" in r["resources"] for r in d["rules"]) for _, d in rendered["everything"]):
        fail("a ClusterRole grants Secrets: the operator reads Secrets in its own namespace only")
    def operator_secret_rules(name):
        return [r for _, d in rendered[name] if d["kind"] == "Role" and not d["metadata"]["name"].endswith("-tenant-admin") for r in d["rules"] if "secrets" in r["resources"]]
    if [r.get("resourceNames") for r in operator_secret_rules("everything")] != [["contoso-app-cert", "contoso-admin-token"]]:
        fail(f"rbac.secretNames not applied: {secret_rules('everything')}")
    if [r.get("resourceNames") for r in operator_secret_rules("default")] != [None]:
        fail(f"default Secret rule: {secret_rules('default')}")
    # People's roles: site writers through aggregation (edit/admin write sites, view reads them),
    # never tenants; tenant administrators apart, never aggregated.
    roles = {d["metadata"]["name"]: d for _, d in rendered["default"] if d["kind"] == "ClusterRole"}
    editor, viewer, admin = (roles.get(f"onedrive-operator-{n}") for n in ("site-editor", "site-viewer", "tenant-admin"))
    if not editor or not viewer or not admin:
        fail(f"people's ClusterRoles missing: {sorted(roles)}")
    labels = lambda d: {k for k, v in d["metadata"]["labels"].items() if k.startswith("rbac.authorization.k8s.io/aggregate-to-") and v == "true"}
    if labels(editor) != {"rbac.authorization.k8s.io/aggregate-to-edit", "rbac.authorization.k8s.io/aggregate-to-admin"}:
        fail(f"site-editor aggregation labels: {labels(editor)}")
    if labels(viewer) != {"rbac.authorization.k8s.io/aggregate-to-view"} or labels(admin):
        fail(f"site-viewer / tenant-admin aggregation labels: {labels(viewer)} / {labels(admin)}")
    for d in (editor, viewer):
        if any(r != ["onedrivesites", "onedrivesitesets"] for r in (rule["resources"] for rule in d["rules"])):
            fail(f"{d['metadata']['name']} reaches beyond onedrivesites and onedrivesitesets: {d['rules']}")
    if not any("create" in r["verbs"] for r in editor["rules"]) or any(v not in ("get", "list", "watch") for r in viewer["rules"] for v in r["verbs"]):
        fail(f"site-editor / site-viewer verbs: {editor['rules']} / {viewer['rules']}")
    bound = [d for _, d in rendered["everything"] if d["kind"] in ("ClusterRoleBinding", "RoleBinding") and d["metadata"]["name"].endswith("-tenant-admin")]
    if len(bound) != 2 or any(b["subjects"][0]["name"] != "m365-platform" for b in bound):
        fail(f"rbac.tenantAdmins not bound: {bound}")
    # Two pods must never act at once: without leader election an upgrade replaces the pod.
    for name, expected in (("default", "Recreate"), ("everything", "RollingUpdate")):
        deployment = next(d for _, d in rendered[name] if d["kind"] == "Deployment")
        strategy = deployment["spec"].get("strategy", {}).get("type")
        if strategy != expected:
            fail(f"Deployment strategy ({name}): {strategy}, expected {expected}")
    # A CA bundle ConfigMap is mounted read-only and named by CA_BUNDLE.
    pod = next(d for _, d in rendered["everything"] if d["kind"] == "Deployment")["spec"]["template"]["spec"]
    container = pod["containers"][0]
    env = {e["name"]: e.get("value") for e in container["env"]}
    if env.get("CA_BUNDLE") != "/etc/onedrive-operator/ca/ca.crt" or pod["volumes"][0]["configMap"]["name"] != "proxy-ca":
        fail(f"CA bundle not wired: env {env.get('CA_BUNDLE')}, volumes {pod.get('volumes')}")
    if container["volumeMounts"][0] != {"name": "ca-bundle", "mountPath": "/etc/onedrive-operator/ca", "readOnly": True}:
        fail(f"CA bundle mount: {container['volumeMounts']}")
    # Endpoint overrides: the operator's opt-in, off unless asked for.
    if env.get("ALLOW_ENDPOINT_OVERRIDES") != "1":
        fail(f"allowEndpointOverrides not wired: {env.get('ALLOW_ENDPOINT_OVERRIDES')}")
    default_container = next(d for _, d in rendered["default"] if d["kind"] == "Deployment")["spec"]["template"]["spec"]["containers"][0]
    if any(e["name"] == "ALLOW_ENDPOINT_OVERRIDES" for e in default_container["env"]):
        fail("endpoint overrides allowed by default")

    # The alert rules render only when asked for, with every credential alert.
    if any(d["kind"] == "PrometheusRule" for _, d in rendered["default"]):
        fail("a PrometheusRule rendered without metrics.prometheusRule.enabled")
    rule = next(d for _, d in rendered["everything"] if d["kind"] == "PrometheusRule")
    alerts = {r["alert"] for g in rule["spec"]["groups"] for r in g["rules"]}
    expected = {
        "OneDriveOperatorCertificateExpiresSoon", "OneDriveOperatorRefreshTokenAging", "OneDriveOperatorCredentialsNotPersisted",
        "OneDriveOperatorBatchStalled", "OneDriveOperatorTenantNotReady", "OneDriveOperatorThrottled",
        "OneDriveOperatorBlocked", "OneDriveOperatorFailuresGrowing",
    }
    if not expected <= alerts:
        fail(f"PrometheusRule alerts: {sorted(alerts)}, expected {sorted(expected)}")
    # kube-state-metrics: its configuration as shipped in files/, bound to its ServiceAccount.
    config = next(d for _, d in rendered["everything"] if d["kind"] == "ConfigMap" and d["metadata"]["name"].endswith("-kube-state-metrics"))
    with open(os.path.join(CHART, "files", "kube-state-metrics.yaml")) as f:
        if yaml.safe_load(config["data"]["onedrive-operator.yaml"]) != yaml.safe_load(f):
            fail("the kube-state-metrics ConfigMap differs from files/kube-state-metrics.yaml")
    binding = next(d for _, d in rendered["everything"] if d["kind"] == "ClusterRoleBinding" and d["metadata"]["name"].endswith("-kube-state-metrics"))
    if binding["subjects"] != [{"kind": "ServiceAccount", "name": "kube-state-metrics", "namespace": "monitoring"}]:
        fail(f"kube-state-metrics binding: {binding['subjects']}")
    if any(d["metadata"]["name"].endswith("-kube-state-metrics") for _, d in rendered["default"]):
        fail("kube-state-metrics objects rendered without kubeStateMetrics.enabled")


main()
