"""The process kubelet's pure rules: `$(VAR)` expansion, the downward API, command resolution,
pod phase and which pods it schedules. No processes, no API."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.cluster.kubelet import schedulable
from tests.cluster.kubelet_pod import ConfigError, expand, field_ref, pod_phase, resolve_argv

VENV_PYTHON = Path("/venv/bin/python")


def make_pod(**spec: Any) -> dict[str, Any]:
    return {
        "metadata": {
            "name": "p1",
            "namespace": "ns1",
            "uid": "u-1",
            "labels": {"app": "web"},
            "annotations": {"note": "hi"},
        },
        "spec": {"containers": [{"name": "c"}], **spec},
        "status": {},
    }


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("$(A)-$(B)", "1-2"),
        ("$(MISSING)", "$(MISSING)"),
        ("$$(A)", "$(A)"),
        ("cost $$5", "cost $5"),
        ("plain", "plain"),
    ],
)
def test_expand_follows_kubernetes_rules(value: str, expected: str) -> None:
    assert expand(value, {"A": "1", "B": "2"}) == expected


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("metadata.name", "p1"),
        ("metadata.namespace", "ns1"),
        ("metadata.uid", "u-1"),
        ("spec.nodeName", "node-a"),
        ("status.podIP", "127.0.0.1"),
        ("metadata.labels['app']", "web"),
        ("metadata.annotations['note']", "hi"),
        ("metadata.labels['absent']", ""),
    ],
)
def test_field_ref_reads_the_downward_api(path: str, expected: str) -> None:
    assert field_ref(make_pod(nodeName="node-a"), path) == expected


def test_field_ref_rejects_unknown_paths() -> None:
    with pytest.raises(ConfigError, match="unsupported fieldRef"):
        field_ref(make_pod(), "spec.hostname")


@pytest.mark.parametrize("interpreter", ["python", "python3", "python3.11", "/usr/bin/python3"])
def test_python_commands_use_the_virtualenv(interpreter: str) -> None:
    container = {"command": [interpreter, "-m"], "args": ["ratline.worker", "--run-id=$(RUN)"]}
    argv = resolve_argv(container, {"RUN": "r1"}, VENV_PYTHON)
    assert argv == [str(VENV_PYTHON), "-m", "ratline.worker", "--run-id=r1"]


def test_other_commands_are_kept_and_a_missing_command_is_none() -> None:
    assert resolve_argv({"command": ["sh", "-c", "true"]}, {}, VENV_PYTHON) == ["sh", "-c", "true"]
    assert resolve_argv({"args": ["--flag"]}, {}, VENV_PYTHON) is None


@pytest.mark.parametrize(
    ("policy", "init", "main", "phase"),
    [
        ("Never", [], [(False, None)], "Pending"),
        ("Never", [(True, None)], [(False, None)], "Pending"),
        ("Never", [(False, 1)], [(False, None)], "Failed"),
        ("OnFailure", [(False, 1)], [(False, None)], "Pending"),
        ("Never", [(False, 0)], [(True, None)], "Running"),
        ("Never", [], [(False, 0), (True, None)], "Running"),
        ("Never", [], [(False, 0), (False, 0)], "Succeeded"),
        ("Never", [], [(False, 0), (False, 3)], "Failed"),
        ("OnFailure", [], [(False, 3)], "Running"),
        ("OnFailure", [], [(False, 0)], "Succeeded"),
        ("Always", [], [(False, 0)], "Running"),
    ],
)
def test_pod_phase_matches_the_kubelet(
    policy: str,
    init: list[tuple[bool, int | None]],
    main: list[tuple[bool, int | None]],
    phase: str,
) -> None:
    assert pod_phase(policy, init, main) == phase


def test_schedulable_binds_default_scheduler_pods_that_fit() -> None:
    labels = {"kubernetes.io/os": "linux"}
    assert schedulable(make_pod(), labels) is True
    assert schedulable(make_pod(nodeSelector={"kubernetes.io/os": "linux"}), labels) is True
    assert schedulable(make_pod(nodeSelector={"disk": "ssd"}), labels) is False


@pytest.mark.parametrize(
    "spec",
    [
        {"nodeName": "elsewhere"},
        {"schedulerName": "custom"},
        {"schedulingGates": [{"name": "wait"}]},
    ],
)
def test_schedulable_leaves_other_pods_alone(spec: dict[str, Any]) -> None:
    assert schedulable(make_pod(**spec), {}) is None


def test_schedulable_ignores_deleting_and_finished_pods() -> None:
    deleting = make_pod()
    deleting["metadata"]["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    finished = make_pod()
    finished["status"]["phase"] = "Succeeded"
    assert schedulable(deleting, {}) is None
    assert schedulable(finished, {}) is None
