"""`kubectl ratline list` on the real control plane and store.

Lists runs whose WorkflowRun was deleted by its TTL next to live ones, filters
and pages them, and shows a user only the namespaces their kubeconfig may list
WorkflowRuns in (a ServiceAccount token bound to one namespace's Role).
"""

from __future__ import annotations

import asyncio
import json
import uuid
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import yaml

from tests.e2e.conftest import (
    E2E_LOG_ENV,
    Kubectl,
    OperatorProcess,
    run_manifest,
    unique,
    wait_for,
    workflow_manifest,
)
from tests.e2e.test_cli import plugin
from tests.e2e.test_ui import RUNS_READ, user_token

pytestmark = pytest.mark.e2e

HELLO = "examples.hello.workflow:hello"
GATE = "tests.e2e.workflows.flows:gate"


def listed(kubectl: Kubectl, dsn: str, *args: str, check: bool = True) -> Any:
    done = plugin(kubectl, "list", "--dsn", dsn, "-o", "json", *args, check=check)
    return json.loads(done.stdout) if check else done


def by_name(data: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {item["name"]: item for item in data["items"]}


def insert_foreign_run(dsn: str, namespace: str) -> None:
    async def insert() -> None:
        conn = await asyncpg.connect(dsn)
        try:
            await conn.execute(
                "INSERT INTO runs (id, namespace, name, workflow, status) "
                "VALUES ($1, $2, 'secret-run', 'hello', 'succeeded')",
                str(uuid.uuid4()),
                namespace,
            )
        finally:
            await conn.close()

    asyncio.run(insert())


def token_kubeconfig(admin: Path, token: str, path: Path) -> Path:
    config = yaml.safe_load(admin.read_text())
    context = config["contexts"][0]
    config["users"] = [{"name": "restricted", "user": {"token": token}}]
    context["context"]["user"] = "restricted"
    config["contexts"] = [context]
    config["current-context"] = context["name"]
    path.write_text(yaml.safe_dump(config))
    return path


def test_list_shows_deleted_runs_filters_pages_and_isolates_namespaces(
    operator: OperatorProcess, kubectl: Kubectl, effects_log: str, tmp_path: Path
) -> None:
    dsn = operator.dsn
    kubectl.apply(
        workflow_manifest("hello", HELLO),
        workflow_manifest("gate", GATE, env={E2E_LOG_ENV: effects_log}),
    )
    gone, kept, live = unique("gone"), unique("kept"), unique("live")
    kubectl.apply(run_manifest(gone, "hello", {"name": "g", "times": 1}, ttlSecondsAfterFinished=0))
    wait_for("the ttl run to exist", lambda: kubectl.get("workflowrun", gone), 30)
    wait_for("the ttl run to be deleted", lambda: kubectl.get("workflowrun", gone) is None, 90)
    kept_run = run_manifest(kept, "hello", {"name": "k", "times": 1})
    kept_run["metadata"]["labels"] = {"team": "blue"}
    kubectl.apply(kept_run)
    kubectl.wait_phase(kept, "Succeeded", timeout=90)
    kubectl.apply(run_manifest(live, "gate", {"key": live}))
    kubectl.wait_phase(live, "Suspended", timeout=90)

    data = listed(kubectl, dsn)
    rows = by_name(data)
    assert data["namespaces"] == [kubectl.namespace]
    assert [i["name"] for i in data["items"]] == [live, kept, gone]  # newest first
    assert rows[gone]["workflowRun"] == "gone"
    assert rows[gone]["phase"] == "Succeeded"
    assert rows[gone]["progress"] == "3/3"
    assert rows[kept]["workflowRun"] == "present"
    assert rows[live]["phase"] == "Suspended"

    assert set(by_name(listed(kubectl, dsn, "--phase", "Succeeded"))) == {gone, kept}
    assert set(by_name(listed(kubectl, dsn, "--workflow", "gate"))) == {live}
    assert set(by_name(listed(kubectl, dsn, "--since", "1h"))) == {gone, kept, live}
    assert set(by_name(listed(kubectl, dsn, "-l", "team=blue"))) == {kept}
    assert listed(kubectl, dsn, "--until", "2000-01-01T00:00:00Z")["items"] == []

    first = listed(kubectl, dsn, "--limit", "2")
    assert [i["name"] for i in first["items"]] == [live, kept]
    assert first["next"]
    second = listed(kubectl, dsn, "--limit", "2", "--after", first["next"])
    assert [i["name"] for i in second["items"]] == [gone]
    assert second["next"] is None

    wide = plugin(kubectl, "list", "--dsn", dsn, "-o", "wide").stdout
    assert "gone" in wide.splitlines()[-1]
    assert wide.splitlines()[0].split()[-1] == "CR"
    as_yaml = yaml.safe_load(plugin(kubectl, "list", "--dsn", dsn, "-o", "yaml").stdout)
    assert len(as_yaml["items"]) == 3

    # history and describe fall back to the store for a run whose WorkflowRun is gone.
    history = json.loads(plugin(kubectl, "history", gone, "--dsn", dsn, "-o", "json").stdout)
    assert history[0]["type"] == "RunStarted"
    assert history[-1]["type"] == "RunCompleted"
    described = json.loads(plugin(kubectl, "describe", gone, "--dsn", dsn, "-o", "json").stdout)
    assert described["uid"] == rows[gone]["uid"]
    assert described["phase"] == "Succeeded"
    assert described["store"]["status"] == "succeeded"
    assert [c["type"] for c in described["conditions"]] == ["WorkflowRunDeleted"]
    missing = plugin(kubectl, "history", unique("never"), "--dsn", dsn, check=False)
    assert missing.returncode == 1
    assert "not found" in missing.stderr

    # Another namespace's run in the same store: the admin sees it with -A ...
    other = unique("other-ns")
    insert_foreign_run(dsn, other)
    everything = listed(kubectl, dsn, "-A")
    assert other in everything["namespaces"]
    assert "secret-run" in by_name(everything)
    # ... a user who may list WorkflowRuns only in the test's namespace does not.
    token = user_token(kubectl, unique("lister"), [RUNS_READ])
    restricted = Kubectl(
        token_kubeconfig(kubectl.kubeconfig, token, tmp_path / "kc"), kubectl.namespace
    )
    mine = listed(restricted, dsn, "-A")
    assert mine["namespaces"] == [kubectl.namespace]
    assert "secret-run" not in by_name(mine)
    assert set(by_name(mine)) == {gone, kept, live}
    refused = listed(restricted, dsn, "-n", other, check=False)
    assert refused.returncode == 1
    assert f"may not list workflowruns in namespace {other!r}" in refused.stderr
