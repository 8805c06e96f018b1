"""TTL after finished and store retention on the real control plane.

A finished run's WorkflowRun goes after its TTL (the run's own, else the
Workflow's default) while its history stays in Postgres; a restarted operator
re-arms pending deletions; `--retention` then prunes the history itself.
"""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg
import pytest

from tests.e2e.conftest import (
    Kubectl,
    OperatorProcess,
    run_manifest,
    unique,
    wait_for,
    workflow_manifest,
)

pytestmark = pytest.mark.e2e

HELLO = "examples.hello.workflow:hello"
INPUT = {"name": "ttl", "times": 1}


def store_row(dsn: str, uid: str) -> dict[str, Any] | None:
    async def fetch() -> dict[str, Any] | None:
        conn = await asyncpg.connect(dsn)
        try:
            row = await conn.fetchrow("SELECT status, history_length FROM runs WHERE id = $1", uid)
            return None if row is None else dict(row)
        finally:
            await conn.close()

    return asyncio.run(fetch())


def uid_of(kubectl: Kubectl, name: str) -> str:
    run = kubectl.get("workflowrun", name)
    assert run is not None, name
    return str(run["metadata"]["uid"])


def gone(kubectl: Kubectl, name: str) -> Any:
    return lambda: kubectl.get("workflowrun", name) is None


def test_ttl_deletes_the_cr_and_keeps_the_history(
    operator: OperatorProcess, kubectl: Kubectl
) -> None:
    kubectl.apply(
        workflow_manifest("hello-ttl", HELLO, defaults={"ttlSecondsAfterFinished": 2}),
        workflow_manifest("hello", HELLO),
    )
    refused = kubectl.create(
        run_manifest(unique("neg"), "hello", INPUT, ttlSecondsAfterFinished=-1), check=False
    )
    assert refused.returncode != 0
    assert "spec.ttlSecondsAfterFinished" in refused.stderr

    # The run's own TTL wins over the Workflow's default...
    kept = unique("kept")
    kubectl.apply(run_manifest(kept, "hello-ttl", INPUT, ttlSecondsAfterFinished=3600))
    kubectl.wait_phase(kept, "Succeeded", timeout=90)
    # ... and without one, the default applies.
    default = unique("default")
    kubectl.apply(run_manifest(default, "hello-ttl", INPUT))
    kubectl.wait_phase(default, "Succeeded", timeout=90)
    default_uid = uid_of(kubectl, default)
    wait_for("the defaulted run to be deleted", gone(kubectl, default), timeout=60)
    assert kubectl.get("workflowrun", kept) is not None  # finished longer ago, kept
    row = store_row(operator.dsn, default_uid)
    assert row is not None
    assert row["status"] == "succeeded"
    assert row["history_length"] > 0

    # ttl 0 on a Workflow without a default: gone as soon as it finished.
    now = unique("now")
    kubectl.apply(run_manifest(now, "hello", INPUT, ttlSecondsAfterFinished=0))
    now_uid = wait_for("the run to exist", lambda: kubectl.get("workflowrun", now), 30)
    wait_for("the ttl-0 run to be deleted", gone(kubectl, now), timeout=90)
    assert store_row(operator.dsn, now_uid["metadata"]["uid"]) is not None

    # A deletion pending across an operator restart is re-armed from the listing.
    later = unique("later")
    kubectl.apply(run_manifest(later, "hello", INPUT, ttlSecondsAfterFinished=6))
    kubectl.wait_phase(later, "Succeeded", timeout=90)
    operator.restart(kill=True)
    wait_for("the run to be deleted after the restart", gone(kubectl, later), timeout=60)


def test_retention_prunes_finished_histories(operator: OperatorProcess, kubectl: Kubectl) -> None:
    operator.extra_args = ["--retention", "3s", "--retention-interval", "0.5"]
    operator.restart(kill=False)
    kubectl.apply(workflow_manifest("hello", HELLO))
    live = unique("live")
    kubectl.apply(
        workflow_manifest("gate", "tests.e2e.workflows.flows:gate"),
        run_manifest(live, "gate", {"key": live}),
    )
    done = unique("done")
    kubectl.apply(run_manifest(done, "hello", INPUT, ttlSecondsAfterFinished=0))
    uid = wait_for("the run to exist", lambda: kubectl.get("workflowrun", done), 30)
    uid = uid["metadata"]["uid"]
    wait_for("the finished run's CR to go", gone(kubectl, done), timeout=90)
    wait_for("its history to be pruned", lambda: store_row(operator.dsn, uid) is None, 60)
    kubectl.wait_phase(live, "Suspended", timeout=90)
    live_uid = uid_of(kubectl, live)
    row = store_row(operator.dsn, live_uid)
    assert row is not None  # an unfinished run is never pruned, however old
    assert row["status"] == "suspended"
