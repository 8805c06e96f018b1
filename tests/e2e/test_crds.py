"""The CRDs on a real kube-apiserver: they apply, print, and refuse bad objects clearly.

No operator runs here: every check is the API server's own validation
(structural schema, patterns, CEL rules).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.e2e.conftest import Kubectl, run_manifest, unique, workflow_manifest
from tests.tools.health import argo_lua, verdict

pytestmark = pytest.mark.e2e


def test_crds_are_served_with_short_names_category_and_columns(crds: Kubectl) -> None:
    crds.apply(workflow_manifest("hello", "examples.hello.workflow:hello"))
    crds.apply(run_manifest("cols", "hello", {"name": "x"}))
    listing = crds.run("get", "wfr").stdout.splitlines()
    assert listing[0].split() == ["NAME", "PHASE", "PROGRESS", "STEP", "WAITING", "AGE"]
    wide = crds.run("get", "wfr", "-o", "wide").stdout.splitlines()[0].split()
    assert wide[-4:] == ["WORKFLOW", "POD", "RETRIES", "IMAGE"]
    assert "hello" in crds.run("get", "wf").stdout
    by_category = crds.run("get", "ratline").stdout
    assert "workflow.ratline.dev/hello" in by_category
    assert "workflowrun.ratline.dev/cols" in by_category


def test_run_without_workflow_ref_is_refused_naming_the_field(crds: Kubectl) -> None:
    bad = run_manifest(unique("bad"), "x", {"a": 1})
    del bad["spec"]["workflowRef"]
    result = crds.create(bad, check=False)
    assert result.returncode != 0
    assert "spec.workflowRef" in result.stderr


@pytest.mark.parametrize(
    ("field", "value", "named"),
    [
        ("maxDuration", "ten minutes", "spec.maxDuration"),
        ("priority", 5000, "spec.priority"),
        ("cancel", "yes", "spec.cancel"),
        ("input", "not-an-object", "spec.input"),
    ],
)
def test_bad_run_fields_are_refused_naming_the_field(
    crds: Kubectl, field: str, value: object, named: str
) -> None:
    manifest = run_manifest(unique("bad"), "wf", {"a": 1})
    manifest["spec"][field] = value
    result = crds.create(manifest, check=False)
    assert result.returncode != 0
    assert named in result.stderr


def test_bad_workflow_is_refused(crds: Kubectl) -> None:
    no_image = workflow_manifest(unique("wf"), "m:f")
    del no_image["spec"]["image"]
    result = crds.create(no_image, check=False)
    assert result.returncode != 0
    assert "spec.image" in result.stderr
    bad_entry = crds.create(workflow_manifest(unique("wf"), "not valid!"), check=False)
    assert bad_entry.returncode != 0
    assert "spec.entrypoint" in bad_entry.stderr
    negative = crds.create(workflow_manifest(unique("wf"), "m:f", concurrency=-1), check=False)
    assert negative.returncode != 0
    assert "spec.concurrency" in negative.stderr


def test_input_is_immutable(crds: Kubectl) -> None:
    name = unique("immutable")
    crds.create(run_manifest(name, "wf", {"amount": 1, "nested": {"a": [1]}}))
    changed = crds.patch_run(name, {"spec": {"input": {"amount": 2}}}, check=False)
    assert "spec.input is immutable" in changed
    nested = crds.patch_run(name, {"spec": {"input": {"nested": {"a": [2]}}}}, check=False)
    assert "spec.input is immutable" in nested
    removed = crds.patch_run(name, {"spec": {"input": None}}, check=False)
    assert "spec.input is immutable" in removed
    status = crds.get("workflowrun", name)
    assert status is not None
    assert status["spec"]["input"] == {"amount": 1, "nested": {"a": [1]}}
    # everything else stays patchable
    crds.patch_run(name, {"spec": {"signals": {"approval": {"ok": True}}}})


def test_cancel_cannot_be_taken_back(crds: Kubectl) -> None:
    name = unique("cancel")
    crds.create(run_manifest(name, "wf", {}))
    crds.patch_run(name, {"spec": {"cancel": True}})
    undo = crds.patch_run(name, {"spec": {"cancel": False}}, check=False)
    assert "spec.cancel cannot go back to false" in undo


def test_workflow_ref_is_immutable_and_signals_are_bounded(crds: Kubectl) -> None:
    name = unique("ref")
    crds.create(run_manifest(name, "wf", {}))
    moved = crds.patch_run(name, {"spec": {"workflowRef": {"name": "other"}}}, check=False)
    assert "spec.workflowRef is immutable" in moved
    many = {f"s{i}": i for i in range(101)}
    too_many = crds.patch_run(name, {"spec": {"signals": many}}, check=False)
    assert "spec.signals" in too_many


def test_status_rejects_unknown_phase(crds: Kubectl) -> None:
    name = unique("phase")
    crds.create(run_manifest(name, "wf", {}))
    result = crds.run(
        "patch", "workflowrun", name, "--subresource", "status", "--type", "merge",
        "-p", '{"status": {"phase": "Exploded"}}', check=False,
    )  # fmt: skip
    assert result.returncode != 0
    assert "status.phase" in result.stderr


def test_a_run_nobody_handled_yet_reads_in_progress(crds: Kubectl, tmp_path: Path) -> None:
    """Before the operator's first status patch, kstatus and Argo CD must not call it done."""
    name = unique("fresh")
    crds.create(run_manifest(name, "wf", {}))
    obj = crds.get("workflowrun", name)
    assert obj is not None
    assert obj["status"] == {"observedGeneration": 0}
    assert verdict(obj, "kstatus") == "InProgress"
    assert verdict(obj, "argo", str(argo_lua("WorkflowRun", tmp_path))) == "Progressing"
