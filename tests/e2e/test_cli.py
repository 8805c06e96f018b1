"""`kubectl ratline ...` on the real control plane: the plugin is found on PATH, reads
runs from the API and history from the store (DSN from the namespace's Secret), and
steers runs through the API the operator acts on.

`flaky` below is also a worker entrypoint (`tests.e2e.test_cli:flaky`): it fails at
`charge` while a flag file exists, so `retry` has something to fix.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from ratline import NonRetryableError, WorkflowContext, workflow
from tests.e2e.conftest import (
    E2E_LOG_ENV,
    Kubectl,
    OperatorProcess,
    run_manifest,
    unique,
    wait_for,
    workflow_manifest,
)
from tests.e2e.workflows.flows import effect, read_effects

pytestmark = pytest.mark.e2e

GATE = "tests.e2e.workflows.flows:gate"
STEPS = "tests.e2e.workflows.flows:steps"
FLAKY = "tests.e2e.test_cli:flaky"
VENV_BIN = Path(sys.executable).parent


def charge(key: str, flag: str) -> str:
    effect(key, "charge")
    if os.path.exists(flag):
        raise NonRetryableError("card declined")
    return "paid"


@workflow(name="e2e-cli-flaky")
async def flaky(ctx: WorkflowContext, inp: dict[str, str]) -> dict[str, str]:
    """reserve -> charge (fails while inp['flag'] exists) -> ship."""
    await ctx.run("reserve", effect, inp["key"], "reserve")
    paid = await ctx.run("charge", charge, inp["key"], inp["flag"])
    await ctx.run("ship", effect, inp["key"], "ship")
    return {"charge": str(paid)}


def plugin(kubectl: Kubectl, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """`kubectl ratline ARGS -n NS`, with kubectl-ratline found on PATH (the venv's bin)."""
    env = {k: v for k, v in os.environ.items() if k != "RATLINE_DSN"}
    env["KUBECONFIG"] = str(kubectl.kubeconfig)
    env["PATH"] = os.pathsep.join([str(VENV_BIN), env.get("PATH", "")])
    argv = [kubectl.binary, "ratline", *args, "-n", kubectl.namespace]
    done = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=60, check=False)
    if check:
        assert done.returncode == 0, f"kubectl ratline {' '.join(args)}: {done.stderr}"
    return done


def test_kubectl_finds_the_plugin(operator: OperatorProcess, kubectl: Kubectl) -> None:
    env = dict(os.environ, PATH=os.pathsep.join([str(VENV_BIN), os.environ.get("PATH", "")]))
    listed = subprocess.run(
        [kubectl.binary, "plugin", "list"], capture_output=True, text=True, env=env, timeout=30
    )
    assert str(VENV_BIN / "kubectl-ratline") in listed.stdout
    done = plugin(kubectl, "history", "--help")
    assert "the run's recorded events" in done.stdout


def test_history_and_describe_show_a_finished_run(
    operator: OperatorProcess, kubectl: Kubectl
) -> None:
    kubectl.apply(workflow_manifest("hello", "examples.hello.workflow:hello"))
    kubectl.apply(run_manifest("hello-cli", "hello", {"name": "cli"}))
    kubectl.wait_phase("hello-cli", "Succeeded", timeout=60)

    table = plugin(kubectl, "history", "hello-cli").stdout.splitlines()
    assert table[0].split() == ["SEQ", "TIME", "EVENT", "CMD", "NAME", "DETAILS"]
    events = [line.split()[2] for line in table[1:]]
    assert events[0] == "RunStarted"
    assert events[-1] == "RunCompleted"
    assert events.count("StepCompleted") == 3

    history = json.loads(plugin(kubectl, "history", "hello-cli", "-o", "json").stdout)
    uid = kubectl.get("workflowrun", "hello-cli")["metadata"]["uid"]  # type: ignore[index]
    assert {e["run_id"] for e in history} == {uid}
    assert [e["seq"] for e in history] == list(range(1, len(history) + 1))

    text = plugin(kubectl, "describe", "hello-cli").stdout
    assert "Phase:       Succeeded (3/3)" in text
    timeline = text.split("Timeline:")[1]
    assert timeline.index("shout") < timeline.index("compose") < timeline.index("count")
    described = json.loads(plugin(kubectl, "describe", "hello-cli", "-o", "json").stdout)
    assert described["store"]["status"] == "succeeded"
    steps = [t for t in described["timeline"] if t["kind"] == "step"]
    assert [(s["name"], s["state"]) for s in steps] == [
        ("shout", "Completed"),
        ("compose", "Completed"),
        ("count", "Completed"),
    ]


def test_unknown_run_is_a_clear_error(operator: OperatorProcess, kubectl: Kubectl) -> None:
    done = plugin(kubectl, "describe", "no-such-run", check=False)
    assert done.returncode == 1
    assert f"workflowrun 'no-such-run' not found in namespace '{kubectl.namespace}'" in done.stderr


def _gate(kubectl: Kubectl, effects_log: str) -> tuple[str, str]:
    kubectl.apply(workflow_manifest("gate", GATE, env={E2E_LOG_ENV: effects_log}))
    name, key = unique("gate"), unique("k")
    kubectl.apply(run_manifest(name, "gate", {"key": key}))
    kubectl.wait_phase(name, "Suspended", timeout=60)
    return name, key


def test_signal_resolves_the_promise(
    operator: OperatorProcess, kubectl: Kubectl, effects_log: str
) -> None:
    name, _ = _gate(kubectl, effects_log)
    out = plugin(kubectl, "signal", name, "go", "--data", '{"approved": true}').stdout
    assert out.strip() == f"workflowrun/{name} signalled (go)"
    status = kubectl.wait_phase(name, "Succeeded", timeout=60)
    assert json.loads(status["result"]) == {"outcome": "signalled", "value": {"approved": True}}
    again = plugin(kubectl, "signal", name, "go", "--data", '{"approved": false}', check=False)
    assert again.returncode == 1
    assert "already signalled" in again.stderr


def test_reject_fails_the_wait_and_compensation_runs(
    operator: OperatorProcess, kubectl: Kubectl, effects_log: str
) -> None:
    name, key = _gate(kubectl, effects_log)
    plugin(kubectl, "reject", name, "go", "--error", "manager said no")
    status = kubectl.wait_phase(name, "Failed", timeout=60)
    assert "manager said no" in status["error"]
    wait_for(
        "the reservation to be released",
        lambda: [e["op"] for e in read_effects(effects_log, key)] == ["reserve", "release"],
        timeout=30,
    )


def test_cancel_ends_the_run_cancelled(
    operator: OperatorProcess, kubectl: Kubectl, effects_log: str
) -> None:
    kubectl.apply(workflow_manifest("slow", STEPS, env={E2E_LOG_ENV: effects_log}))
    name, key = unique("slow"), unique("k")
    kubectl.apply(run_manifest(name, "slow", {"key": key, "steps": 20, "step_seconds": 1}))
    wait_for("the first step", lambda: read_effects(effects_log, key), timeout=60)
    assert "cancel requested" in plugin(kubectl, "cancel", name).stdout
    status = kubectl.wait_phase(name, "Cancelled", timeout=60)
    assert "cancel" in status["delivered"]
    spec: dict[str, Any] = kubectl.get("workflowrun", name)["spec"]  # type: ignore[index]
    assert spec["cancel"] is True
    ended = [e for e in read_effects(effects_log, key) if e["op"] == "end"]
    assert len(ended) < 20


def test_retry_from_the_failed_step_keeps_the_steps_before(
    operator: OperatorProcess, kubectl: Kubectl, effects_log: str, tmp_path: Path
) -> None:
    flag = tmp_path / "declined"
    flag.write_text("1")
    kubectl.apply(workflow_manifest("flaky", FLAKY, env={E2E_LOG_ENV: effects_log}))
    name, key = unique("order"), unique("k")
    kubectl.apply(run_manifest(name, "flaky", {"key": key, "flag": str(flag)}))
    status = kubectl.wait_phase(name, "Failed", timeout=60)
    assert "card declined" in status["error"]

    refused = plugin(kubectl, "retry", name, "--from-step", "pack", check=False)
    assert refused.returncode == 1
    assert "no step 'pack'; its steps: reserve, charge" in refused.stderr

    flag.unlink()  # the card works now
    out = plugin(kubectl, "retry", name).stdout
    assert f"workflowrun/{name}-retry-1 created" in out
    assert "from step 'charge' (kept steps: reserve)" in out
    status = kubectl.wait_phase(f"{name}-retry-1", "Succeeded", timeout=60)
    assert json.loads(status["result"]) == {"charge": "paid"}
    ops = [e["op"] for e in read_effects(effects_log, key)]
    assert ops == ["reserve", "charge", "charge", "ship"]  # reserve never ran again

    new = kubectl.get("workflowrun", f"{name}-retry-1")
    assert new is not None
    assert new["metadata"]["labels"]["ratline.dev/retry-of"] == name
    assert new["metadata"]["annotations"]["ratline.dev/retry-from-step"] == "charge"
    history = json.loads(plugin(kubectl, "history", f"{name}-retry-1", "-o", "json").stdout)
    old = kubectl.get("workflowrun", name)
    assert old is not None
    assert history[0]["payload"]["retry_of"] == old["metadata"]["uid"]
