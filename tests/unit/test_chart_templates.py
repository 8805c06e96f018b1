"""The Helm chart rendered by the real `helm template`: what each choice of values
produces, and that bad values fail with a message that says what to change."""

from __future__ import annotations

import base64
import json
import re
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.cluster.binaries import require

CHART = Path(__file__).resolve().parents[2] / "charts" / "ratline"
EXTERNAL = {"database": {"existingSecret": "ratline-db"}}
RELEASE, NAMESPACE = "rl", "ratline-system"


def helm(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(require("helm")["helm"]), *args], capture_output=True, text=True, timeout=60
    )


def render_raw(values: dict[str, Any]) -> subprocess.CompletedProcess[str]:
    with tempfile.NamedTemporaryFile("w", suffix=".yaml") as file:
        yaml.safe_dump(values, file)
        file.flush()
        return helm("template", RELEASE, str(CHART), "--namespace", NAMESPACE, "-f", file.name)


def render(values: dict[str, Any]) -> list[dict[str, Any]]:
    """Every rendered object (hooks included), or the test fails with helm's stderr."""
    proc = render_raw(values)
    assert proc.returncode == 0, proc.stderr
    return [doc for doc in yaml.safe_load_all(proc.stdout) if doc]


def merged(*parts: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for part in parts:
        for key, value in part.items():
            if isinstance(value, dict) and isinstance(out.get(key), dict):
                out[key] = merged(out[key], value)
            else:
                out[key] = value
    return out


def one(docs: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    found = [d for d in docs if d["kind"] == kind and name in (None, d["metadata"]["name"])]
    assert len(found) == 1, f"{len(found)} {kind} {name or ''}"
    return found[0]


def kinds(docs: list[dict[str, Any]]) -> list[str]:
    return sorted(d["kind"] for d in docs)


def container(docs: list[dict[str, Any]]) -> dict[str, Any]:
    deployment = one(docs, "Deployment")
    (operator,) = deployment["spec"]["template"]["spec"]["containers"]
    result: dict[str, Any] = operator
    return result


# -- the operator Deployment -------------------------------------------------------------------


def test_operator_deployment_defaults() -> None:
    docs = render(EXTERNAL)
    deployment = one(docs, "Deployment", f"{RELEASE}-ratline")
    spec = deployment["spec"]
    assert spec["replicas"] == 1
    assert spec["strategy"] == {"type": "Recreate"}
    pod = spec["template"]["spec"]
    assert pod["serviceAccountName"] == f"{RELEASE}-ratline"
    c = container(docs)
    assert c["command"][:3] == ["python", "-m", "ratline.controller"]
    assert "--all-namespaces" in c["command"]
    assert "--standalone" in c["command"]
    assert "--worker-dsn-secret=ratline-db" in c["command"]
    assert "--metrics-port=8080" in c["command"]
    assert "--liveness=http://0.0.0.0:8081/healthz" in c["command"]
    (dsn,) = [e for e in c["env"] if e["name"] == "RATLINE_DSN"]
    assert dsn["valueFrom"]["secretKeyRef"] == {"name": "ratline-db", "key": "dsn"}
    assert c["image"] == "ghcr.io/ratline/operator:0.1.0"
    assert c["resources"]["requests"]["memory"]
    assert c["resources"]["limits"]["memory"]


def test_operator_runs_hardened() -> None:
    docs = render(EXTERNAL)
    pod = one(docs, "Deployment")["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == 65532
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    sc = container(docs)["securityContext"]
    assert sc["runAsNonRoot"] is True
    assert sc["runAsUser"] == 65532
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"] == {"drop": ["ALL"]}
    assert sc["seccompProfile"] == {"type": "RuntimeDefault"}


def test_probes_use_the_metrics_and_health_ports() -> None:
    c = container(render(EXTERNAL))
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert ports == {"metrics": 8080, "health": 8081}
    assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "health"}
    assert c["readinessProbe"]["httpGet"] == {"path": "/metrics", "port": "metrics"}


def test_without_ports_the_probes_exec_python() -> None:
    c = container(
        render(merged(EXTERNAL, {"metrics": {"enabled": False}, "health": {"enabled": False}}))
    )
    assert "ports" not in c
    assert "--metrics-port=0" in c["command"]
    assert not any(arg.startswith("--liveness") for arg in c["command"])
    for probe in ("livenessProbe", "readinessProbe"):
        assert c[probe]["exec"]["command"][0] == "python"


def test_image_digest_wins_over_tag() -> None:
    digest = "sha256:" + "a" * 64
    c = container(render(merged(EXTERNAL, {"image": {"tag": "9.9.9", "digest": digest}})))
    assert c["image"] == f"ghcr.io/ratline/operator@{digest}"


def test_operator_values_become_flags() -> None:
    values = merged(
        EXTERNAL,
        {
            "operator": {
                "statusInterval": 0.5,
                "idleThreshold": 5,
                "maxRetries": 3,
                "deleteFinishedPods": True,
                "verbose": True,
                "extraArgs": ["--wake-poll=2"],
            },
            "database": {"workerSecret": {"name": "wdb", "key": "url"}},
        },
    )
    command = container(render(values))["command"]
    for flag in (
        "--status-interval=0.5",
        "--idle-threshold=5",
        "--max-retries=3",
        "--delete-finished-pods",
        "--verbose",
        "--worker-dsn-secret=wdb",
        "--worker-dsn-key=url",
    ):
        assert flag in command
    assert command[-1] == "--wake-poll=2"


def test_args_checksum_restarts_the_operator_when_flags_change() -> None:
    def checksum(values: dict[str, Any]) -> str:
        pod = one(render(values), "Deployment")["spec"]["template"]
        value: str = pod["metadata"]["annotations"]["checksum/args"]
        return value

    assert checksum(EXTERNAL) != checksum(merged(EXTERNAL, {"operator": {"maxRetries": 4}}))


# -- RBAC -------------------------------------------------------------------------------------


def rules_of(role: dict[str, Any]) -> dict[tuple[str, str], set[str]]:
    out: dict[tuple[str, str], set[str]] = {}
    for rule in role["rules"]:
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                out.setdefault((group, resource), set()).update(rule["verbs"])
    return out


OPERATOR_RULES = {
    ("ratline.dev", "workflowruns"): {"get", "list", "watch", "patch", "create", "delete"},
    ("ratline.dev", "workflowruns/status"): {"get", "patch"},
    ("ratline.dev", "workflowruns/finalizers"): {"update"},
    ("ratline.dev", "workflows"): {"get", "list", "watch"},
    ("ratline.dev", "workflows/status"): {"get", "patch"},
    ("ratline.dev", "workflowschedules"): {"get", "list", "watch", "patch"},
    ("ratline.dev", "workflowschedules/status"): {"get", "patch"},
    ("", "pods"): {"get", "list", "watch", "create", "delete"},
    ("", "events"): {"create", "patch"},
}


def test_cluster_rbac_is_least_privilege() -> None:
    docs = render(EXTERNAL)
    rules = rules_of(one(docs, "ClusterRole"))
    assert rules == {
        **OPERATOR_RULES,
        ("apiextensions.k8s.io", "customresourcedefinitions"): {"list", "watch"},
        ("", "namespaces"): {"list", "watch"},
    }
    assert not any("*" in verbs for verbs in rules.values())
    assert ("", "secrets") not in rules
    binding = one(docs, "ClusterRoleBinding")
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": f"{RELEASE}-ratline", "namespace": NAMESPACE}
    ]
    assert "Role" not in kinds(docs)


def test_namespace_scope_gives_a_role_per_watched_namespace() -> None:
    values = merged(
        EXTERNAL, {"rbac": {"scope": "namespace"}, "operator": {"watchNamespaces": ["a", "b"]}}
    )
    docs = render(values)
    assert "ClusterRole" not in kinds(docs)
    roles = [d for d in docs if d["kind"] == "Role"]
    assert sorted(r["metadata"]["namespace"] for r in roles) == ["a", "b"]
    assert all(rules_of(r) == OPERATOR_RULES for r in roles)
    bindings = [d for d in docs if d["kind"] == "RoleBinding"]
    assert {b["subjects"][0]["namespace"] for b in bindings} == {NAMESPACE}
    command = container(docs)["command"]
    assert "--namespace=a" in command
    assert "--namespace=b" in command
    assert "--all-namespaces" not in command


def test_namespace_scope_defaults_to_the_release_namespace() -> None:
    docs = render(merged(EXTERNAL, {"rbac": {"scope": "namespace"}}))
    (role,) = [d for d in docs if d["kind"] == "Role"]
    assert role["metadata"]["namespace"] == NAMESPACE
    assert f"--namespace={NAMESPACE}" in container(docs)["command"]


def test_worker_service_account_mounts_no_token() -> None:
    sa = one(render(EXTERNAL), "ServiceAccount", "ratline-worker")
    assert sa["automountServiceAccountToken"] is False
    assert sa["metadata"]["namespace"] == NAMESPACE


# -- database -------------------------------------------------------------------------------


def test_external_database_migrates_before_install_and_upgrade() -> None:
    docs = render(EXTERNAL)
    job = one(docs, "Job")
    assert job["metadata"]["annotations"]["helm.sh/hook"] == "pre-install,pre-upgrade"
    assert "hook-succeeded" in job["metadata"]["annotations"]["helm.sh/hook-delete-policy"]
    pod = job["spec"]["template"]["spec"]
    assert pod["restartPolicy"] == "Never"
    assert pod["automountServiceAccountToken"] is False
    (c,) = pod["containers"]
    assert c["command"][:2] == ["python", "-c"]
    script = c["command"][2]
    compile(script, "migrate", "exec")  # the inline script is valid Python
    assert "open_store" in script
    assert "store.migrate()" in script
    assert c["env"][0]["valueFrom"]["secretKeyRef"] == {"name": "ratline-db", "key": "dsn"}
    assert c["securityContext"]["readOnlyRootFilesystem"] is True
    assert "StatefulSet" not in kinds(docs)
    assert "Secret" not in kinds(docs)  # the user's Secret, never ours


def test_bundled_postgres_is_a_statefulset_with_a_pvc() -> None:
    docs = render({"postgresql": {"enabled": True, "auth": {"password": "s3cr/t"}}})
    sts = one(docs, "StatefulSet", f"{RELEASE}-ratline-postgresql")
    assert sts["spec"]["replicas"] == 1
    (claim,) = sts["spec"]["volumeClaimTemplates"]
    assert claim["spec"]["resources"]["requests"]["storage"] == "8Gi"
    service = one(docs, "Service", f"{RELEASE}-ratline-postgresql")
    assert service["spec"]["ports"][0]["port"] == 5432
    db = one(docs, "Secret", f"{RELEASE}-ratline-db")
    dsn = base64.b64decode(db["data"]["dsn"]).decode()
    host = f"{RELEASE}-ratline-postgresql.{NAMESPACE}.svc"
    assert dsn == f"postgresql://ratline:s3cr%2Ft@{host}:5432/ratline"
    worker = one(docs, "Secret", "ratline-db")
    assert base64.b64decode(worker["data"]["dsn"]).decode() == dsn
    env = {e["name"]: e for e in container(docs)["env"]}
    assert env["RATLINE_DSN"]["valueFrom"]["secretKeyRef"]["name"] == f"{RELEASE}-ratline-db"
    job = one(docs, "Job")
    assert job["metadata"]["annotations"]["helm.sh/hook"] == "post-install,pre-upgrade"


def test_bundled_postgres_generates_a_password() -> None:
    docs = render({"postgresql": {"enabled": True}})
    password = base64.b64decode(one(docs, "Secret", f"{RELEASE}-ratline-db")["data"]["password"])
    assert len(password) == 32


def test_worker_namespaces_get_the_dsn_secret_and_service_account() -> None:
    docs = render({"postgresql": {"enabled": True}, "database": {"workerNamespaces": ["team-a"]}})
    secrets = [d for d in docs if d["kind"] == "Secret" and d["metadata"]["name"] == "ratline-db"]
    assert sorted(s["metadata"]["namespace"] for s in secrets) == [NAMESPACE, "team-a"]
    accounts = [d for d in docs if d["metadata"]["name"] == "ratline-worker"]
    assert sorted(a["metadata"]["namespace"] for a in accounts) == [NAMESPACE, "team-a"]


# -- optional pieces ------------------------------------------------------------------------


def test_service_monitor_is_optional() -> None:
    assert "ServiceMonitor" not in kinds(render(EXTERNAL))
    docs = render(
        merged(
            EXTERNAL,
            {"metrics": {"serviceMonitor": {"enabled": True, "labels": {"release": "prom"}}}},
        )
    )
    monitor = one(docs, "ServiceMonitor")
    assert monitor["metadata"]["labels"]["release"] == "prom"
    assert monitor["spec"]["endpoints"][0]["port"] == "metrics"
    service = one(docs, "Service")
    selector = monitor["spec"]["selector"]["matchLabels"]
    assert selector.items() <= service["metadata"]["labels"].items()


def test_peering_installs_kopf_resources_and_allows_replicas() -> None:
    docs = render(merged(EXTERNAL, {"operator": {"replicas": 2, "peering": {"enabled": True}}}))
    assert one(docs, "Deployment")["spec"]["replicas"] == 2
    command = container(docs)["command"]
    assert "--peering=ratline" in command
    assert "--standalone" not in command
    crds = {d["metadata"]["name"] for d in docs if d["kind"] == "CustomResourceDefinition"}
    assert {"clusterkopfpeerings.kopf.dev", "kopfpeerings.kopf.dev"} <= crds
    peering = one(docs, "ClusterKopfPeering")
    assert "post-install" in peering["metadata"]["annotations"]["helm.sh/hook"]
    rules = rules_of(one(docs, "ClusterRole"))
    assert rules[("kopf.dev", "clusterkopfpeerings")] == {"get", "list", "watch", "patch"}


def test_long_release_names_stay_within_63_characters() -> None:
    proc = helm(
        "template", "r" * 53, str(CHART), "-f", str(CHART / "ci" / "bundled-db-values.yaml")
    )
    assert proc.returncode == 0, proc.stderr
    names = [d["metadata"]["name"] for d in yaml.safe_load_all(proc.stdout) if d]
    assert names
    assert all(len(n) <= 63 and not n.endswith("-") for n in names)


# -- bad values fail clearly --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({}, "no database configured. Set database.existingSecret"),
        (
            merged(EXTERNAL, {"postgresql": {"enabled": True}}),
            "both postgresql.enabled and database.existingSecret",
        ),
        (merged(EXTERNAL, {"operator": {"replicas": 2}}), "needs operator.peering.enabled"),
        (merged(EXTERNAL, {"operator": {"maxRetries": -1}}), "/operator/maxRetries"),
        (merged(EXTERNAL, {"operator": {"statusInterval": 0}}), "/operator/statusInterval"),
        (merged(EXTERNAL, {"operator": {"idleThreshold": -2}}), "/operator/idleThreshold"),
        (merged(EXTERNAL, {"rbac": {"scope": "everywhere"}}), "/rbac/scope"),
        (merged(EXTERNAL, {"operatr": {}}), "additional properties 'operatr'"),
        (
            merged(EXTERNAL, {"database": {"workerNamespaces": ["x"]}}),
            "database.workerNamespaces needs postgresql.enabled",
        ),
        (merged(EXTERNAL, {"health": {"port": 8080}}), "metrics.port and health.port are both"),
        (
            merged(EXTERNAL, {"operator": {"backoffInitial": 10, "backoffMax": 5}}),
            "backoffMax must be >= operator.backoffInitial",
        ),
    ],
)
def test_bad_values_fail_with_a_clear_message(values: dict[str, Any], message: str) -> None:
    proc = render_raw(values)
    assert proc.returncode != 0
    assert message in proc.stderr


# -- the chart's own hygiene ---------------------------------------------------------------------


@pytest.mark.parametrize("ci_values", sorted(p.name for p in (CHART / "ci").glob("*.yaml")))
def test_helm_lint_is_clean(ci_values: str) -> None:
    proc = helm("lint", str(CHART), "--strict", "-f", str(CHART / "ci" / ci_values))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "[WARNING]" not in proc.stdout
    assert "[ERROR]" not in proc.stdout


def test_chart_metadata() -> None:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert chart["apiVersion"] == "v2"
    assert chart["version"] == "0.1.0"
    assert chart["appVersion"] == "0.1.0"


def _declared_paths(schema: dict[str, Any], prefix: str = "") -> set[str]:
    paths: set[str] = set()
    for key, sub in (schema.get("properties") or {}).items():
        path = f"{prefix}{key}"
        paths.add(path)
        paths |= _declared_paths(sub, path + ".")
    return paths


def _values_paths(lines: list[str]) -> dict[str, int]:
    """Dotted path of every `key:` line of values.yaml -> its line index."""
    stack: list[tuple[int, str]] = []
    found: dict[str, int] = {}
    for index, line in enumerate(lines):
        match = re.match(r"^( *)([A-Za-z][A-Za-z0-9_]*):", line)
        if not match:
            continue
        indent = len(match[1])
        while stack and stack[-1][0] >= indent:
            stack.pop()
        stack.append((indent, match[2]))
        found[".".join(k for _, k in stack)] = index
    return found


def test_every_value_is_commented_and_typed() -> None:
    schema = json.loads((CHART / "values.schema.json").read_text())
    declared = _declared_paths(schema) - {"global"}
    lines = (CHART / "values.yaml").read_text().splitlines()
    paths = _values_paths(lines)
    missing_in_values = declared - set(paths)
    assert not missing_in_values, f"in the schema but not in values.yaml: {missing_in_values}"
    uncommented = [
        path
        for path, index in paths.items()
        if path in declared and not lines[index - 1].lstrip().startswith("#")
    ]
    assert not uncommented, f"values without a comment right above: {uncommented}"
