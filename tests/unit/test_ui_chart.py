"""The chart's web UI (ui.enabled): off by default, hardened, and its own identity may only
create TokenReviews and SubjectAccessReviews. Rendered by the real `helm template`."""

from __future__ import annotations

from typing import Any

from tests.unit.test_chart_templates import EXTERNAL, merged, one, render

UI = merged(EXTERNAL, {"ui": {"enabled": True, "namespaces": ["team-a", "team-b"]}})


def ui_objects(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        d
        for d in docs
        if (d["metadata"].get("labels") or {}).get("app.kubernetes.io/component") == "ui"
    ]


def test_the_ui_is_off_by_default() -> None:
    assert ui_objects(render(EXTERNAL)) == []


def test_the_ui_deployment_is_hardened_and_runs_ratline_ui() -> None:
    docs = render(UI)
    kinds = sorted(d["kind"] for d in ui_objects(docs))
    assert kinds == [
        "ClusterRole", "ClusterRoleBinding", "Deployment", "Secret", "Service", "ServiceAccount",
    ]  # fmt: skip
    deployment = one(docs, "Deployment", "rl-ratline-ui")
    pod = deployment["spec"]["template"]["spec"]
    (box,) = pod["containers"]
    assert box["command"][:2] == ["ratline", "ui"]
    assert "--namespace=team-a" in box["command"]
    assert "--namespace=team-b" in box["command"]
    assert "--behind-tls" in box["command"]
    assert pod["serviceAccountName"] == "rl-ratline-ui"
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
    sc = box["securityContext"]
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["capabilities"]["drop"] == ["ALL"]
    env = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in box["env"]}
    assert env["RATLINE_DSN"] == {"name": "ratline-db", "key": "dsn"}
    assert env["RATLINE_UI_CSRF_KEY"] == {"name": "rl-ratline-ui", "key": "csrf-key"}
    assert box["readinessProbe"]["httpGet"]["path"] == "/healthz"
    service = one(docs, "Service", "rl-ratline-ui")
    assert service["spec"]["selector"]["app.kubernetes.io/component"] == "ui"


def test_the_ui_identity_may_only_ask_for_reviews() -> None:
    docs = render(UI)
    role = one(docs, "ClusterRole", "rl-ratline-ui")
    rules = sorted(
        (g, r, tuple(rule["verbs"]))
        for rule in role["rules"]
        for g in rule["apiGroups"]
        for r in rule["resources"]
    )
    assert rules == [
        ("authentication.k8s.io", "tokenreviews", ("create",)),
        ("authorization.k8s.io", "subjectaccessreviews", ("create",)),
    ]
    binding = one(docs, "ClusterRoleBinding", "rl-ratline-ui")
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "rl-ratline-ui", "namespace": "ratline-system"}
    ]
