"""The chart's CRDs are the repository's crds/, byte for byte in crds-src/ and
object for object once rendered; only the keep annotation may be added."""

from __future__ import annotations

import copy
from typing import Any

import yaml

from tests.unit.test_chart_templates import CHART, EXTERNAL, merged, render

REPO = CHART.parents[1]
SYNC_HINT = "run: cp crds/*.yaml charts/ratline/crds-src/"


def source_crds() -> dict[str, dict[str, Any]]:
    return {
        path.name: yaml.safe_load(path.read_text())
        for path in sorted((REPO / "crds").glob("*.yaml"))
    }


def rendered_crds(values: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {
        d["metadata"]["name"]: d
        for d in render(values)
        if d["kind"] == "CustomResourceDefinition" and d["spec"]["group"] == "ratline.dev"
    }


def test_chart_copy_is_byte_identical_to_crds_dir() -> None:
    source = {p.name: p.read_bytes() for p in (REPO / "crds").glob("*.yaml")}
    copy_ = {p.name: p.read_bytes() for p in (CHART / "crds-src").glob("*.yaml")}
    assert sorted(copy_) == sorted(source), SYNC_HINT
    for name, content in source.items():
        assert copy_[name] == content, f"charts/ratline/crds-src/{name} differs; {SYNC_HINT}"


def test_rendered_crds_equal_the_source_plus_the_keep_annotation() -> None:
    rendered = rendered_crds(EXTERNAL)
    source = {crd["metadata"]["name"]: crd for crd in source_crds().values()}
    assert sorted(rendered) == sorted(source)
    assert len(rendered) == 3
    for name, crd in rendered.items():
        got = copy.deepcopy(crd)
        annotations = got["metadata"].pop("annotations")
        assert annotations == {"helm.sh/resource-policy": "keep"}, name
        assert got == source[name], f"rendered CRD {name} differs from crds/"


def test_crds_keep_false_renders_them_untouched() -> None:
    rendered = rendered_crds(merged(EXTERNAL, {"crds": {"keep": False}}))
    source = {crd["metadata"]["name"]: crd for crd in source_crds().values()}
    assert rendered == source


def test_crds_can_be_left_out() -> None:
    assert rendered_crds(merged(EXTERNAL, {"crds": {"enabled": False}})) == {}


def _field_paths(schema: dict[str, Any], prefix: str = "") -> list[str]:
    paths: list[str] = []
    for name, sub in (schema.get("properties") or {}).items():
        path = f"{prefix}{name}"
        if path in ("apiVersion", "kind", "metadata"):
            continue
        paths.append(path)
        paths += _field_paths(sub, path + ".")
        if sub.get("type") == "array":
            paths += _field_paths(sub.get("items") or {}, path + "[].")
    return paths


def test_docs_reference_every_crd_field() -> None:
    doc = (REPO / "docs" / "crds.md").read_text()
    for name, crd in source_crds().items():
        schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
        paths = _field_paths(schema)
        assert len(paths) > 10, name
        missing = [p for p in paths if f"| `{p}` |" not in doc]
        assert not missing, f"docs/crds.md lacks {name} fields: {missing}"
